# The harness the ScaleIO client drivers share (cinder_driver.py, os_brick_connector.py): it reads the
# target from stdin, records every HTTP exchange the real client makes, and runs named
# steps, printing one JSON line per step on stdout:
#
#   {"step": "create thin volume", "ok": true, "result": ..., "error": null,
#    "exchanges": [{"method": "POST", "url": "...", "body": {...}, "status": 200, "reply": ...}]}
#
# The tap tests (test/integration/cinder.test.ts, os-brick.test.ts) assert on these lines.
# The clients' code is used unchanged; only what needs the scini kernel driver (the SDC's
# GUID ioctl, rescans, /dev/disk/by-id) is replaced, in os_brick_connector.py, and said so there.
# Logs (the clients' own, at DEBUG) go to stderr.

import json
import logging
import sys
import traceback

import requests

_exchanges = []


def _recording_request(original):
    def request(self, method, url, *args, **kwargs):
        body = kwargs.get("data")
        if isinstance(body, (str, bytes)):
            try:
                body = json.loads(body)
            except ValueError:
                body = body.decode() if isinstance(body, bytes) else body
        entry = {"method": method.upper(), "url": url, "body": body}
        _exchanges.append(entry)
        try:
            response = original(self, method, url, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - recorded, then raised again
            entry["error"] = repr(err)
            raise
        entry["status"] = response.status_code
        try:
            entry["reply"] = response.json()
        except ValueError:
            entry["reply"] = response.text
        return response
    return request


requests.sessions.Session.request = _recording_request(
    requests.sessions.Session.request)


def exchanges():
    """The HTTP exchanges of the step running now."""
    return list(_exchanges)


def read_target():
    """{"host", "port", "certPath", "user", "password", ...} from stdin."""
    return json.load(sys.stdin)


def setup_logging():
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("urllib3", "oslo_concurrency", "stevedore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


class Steps(object):
    """Runs steps in order; a step whose prerequisite failed is reported, not run."""

    def __init__(self):
        self.failed = set()

    def run(self, name, function, needs=()):
        del _exchanges[:]
        missing = [need for need in needs if need in self.failed]
        line = {"step": name, "ok": False, "result": None, "error": None,
                "exchanges": []}
        if missing:
            line["error"] = "not run: needs %s" % ", ".join(missing)
            self.failed.add(name)
        else:
            try:
                line["result"] = _jsonable(function())
                line["ok"] = True
            except BaseException as err:  # noqa: BLE001 - every failure reported
                line["error"] = "%s: %s" % (type(err).__name__, err)
                line["traceback"] = traceback.format_exc()
                self.failed.add(name)
        line["exchanges"] = list(_exchanges)
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        return line["result"] if line["ok"] else None
