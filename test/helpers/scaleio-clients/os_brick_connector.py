# Drives os-brick's ScaleIO connector (the host side of an attach: what nova and cinder run
# on a compute node), unchanged, against a meshblock MDM's REST API, step by step
# (harness.py prints one JSON line per step).
#
# Input (stdin, JSON): host, port, certPath, user, password, workDir, sdcGuid (the GUID of
# the SDC the volumes map to), sdcId, nbdAddress (that SDC's NBD server), volumeName and
# volumeId (a volume created with a plain name), cinderName (a name as cinder makes them,
# base64 with '+', '/' and '='; this script creates that volume through the REST API).
#
# Left out, because it needs the scini kernel driver: the SDC's GUID ioctl (_get_guid:
# replaced by the GUID of meshblock's SDC) and the wait for /dev/disk/by-id/emc-vol-*
# (_find_volume_path: replaced by a wait for the SDC's NBD export of the volume, meshblock's
# equivalent of the device appearing). Everything the connector sends to the MDM is its own.

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from oslo_concurrency import lockutils  # noqa: E402
from oslo_config import cfg  # noqa: E402

import os_brick  # noqa: E402
from os_brick.initiator.connectors import scaleio  # noqa: E402


def main():
    harness.setup_logging()
    target = harness.read_target()
    cfg.CONF([], project="os-brick", default_config_files=[])
    os_brick.setup(cfg.CONF)
    lockutils.set_defaults(target["workDir"])
    cfg.CONF.set_override("lock_path", target["workDir"], group="os_brick")

    connector = scaleio.ScaleIOConnector(root_helper="sudo",
                                         device_scan_attempts=1)

    def sdc_guid():
        return target["sdcGuid"]

    def find_volume_path():
        # The SDC exports a mapped volume over NBD under its name: wait for that export.
        uri = "nbd://%s" % target["nbdAddress"]
        deadline = time.time() + 30
        while True:
            listed = subprocess.run(["nbdinfo", "--list", "--json", uri],
                                    capture_output=True, text=True)
            exports = [export.get("export-name") for export in
                       json.loads(listed.stdout or "{}").get("exports", [])]
            if connector.volume_name in exports:
                return "%s/%s" % (uri, connector.volume_name)
            if time.time() > deadline:
                raise RuntimeError("the SDC never exported %s (exports: %s)"
                                   % (connector.volume_name, exports))
            time.sleep(0.2)

    connector._get_guid = sdc_guid
    connector._find_volume_path = find_volume_path

    def properties(name, volume_id=None, iops=None, bandwidth=None):
        # As cinder's PowerFlex driver builds them (driver.py _initialize_connection): QoS
        # limits are strings; with verify_certificate the certificate path is used.
        return {
            "scaleIO_volname": name,
            "scaleIO_volume_id": volume_id,
            "hostIP": None,
            "serverIP": target["host"],
            "serverPort": target["port"],
            "serverUsername": target["user"],
            "serverPassword": target["password"],
            "serverToken": None,
            "iopsLimit": iops,
            "bandwidthLimit": bandwidth,
            "verify_certificate": True,
            "certificate_path": target["certPath"],
            "config_group": "powerflex",
            "failed_over": False,
        }

    def lookup(name):
        def step():
            connector.get_config(properties(name))
            return connector._get_volume_id()
        return step

    def create_cinder_named():
        # Setup, not the connector: what cinder's create_volume sends (rest_client.py).
        connector.get_config(properties(target["cinderName"]))
        base = "https://%s:%d/api" % (target["host"], target["port"])
        body = {"storagePoolId": target["storagePoolId"],
                "name": target["cinderName"],
                "volumeType": "ThinProvisioned",
                "volumeSizeInKb": str(8 * 1024 * 1024)}
        request = base + "/types/Volume/instances"
        reply = connector._check_response(
            scaleio.requests.post(request, data=json.dumps(body),
                                  headers={"content-type": "application/json"},
                                  auth=(target["user"], connector.server_token),
                                  verify=target["certPath"]),
            request, False, body)
        if reply.status_code != 200:
            raise RuntimeError("creating %s: %s %s" % (target["cinderName"],
                                                       reply.status_code,
                                                       reply.text))
        return reply.json()["id"]

    def mapping():
        connector.get_config(properties(target["volumeName"]))
        base = "https://%s:%d/api" % (target["host"], target["port"])
        request = base + "/instances/Volume::%s" % target["volumeId"]
        reply = connector._check_response(
            scaleio.requests.get(request,
                                 auth=(target["user"], connector.server_token),
                                 verify=target["certPath"]), request)
        return reply.json().get("mappedSdcInfo")

    def connect(iops=None, bandwidth=None):
        def step():
            props = properties(target["volumeName"], target["volumeId"], iops,
                               bandwidth)
            device = connector.connect_volume(props)
            # connect_volume only logs a failed setMappedSdcLimits: check its reply here.
            for exchange in harness.exchanges():
                if (exchange["url"].endswith("/action/setMappedSdcLimits") and
                        exchange.get("status") != 200):
                    raise RuntimeError("setMappedSdcLimits answered %s %s" % (
                        exchange.get("status"), json.dumps(exchange.get("reply"))))
            return {"device": device, "mappedSdcInfo": mapping()}
        return step

    def disconnect():
        props = properties(target["volumeName"], target["volumeId"])
        connector.disconnect_volume(props, None)
        return {"mappedSdcInfo": mapping()}

    steps = harness.Steps()
    steps.run("volume id by name (plain name)", lookup(target["volumeName"]))
    steps.run("create a volume named as cinder names them (REST, setup)",
              create_cinder_named)
    steps.run("volume id by name (cinder's base64 name, encoded twice)",
              lookup(target["cinderName"]),
              needs=["create a volume named as cinder names them (REST, setup)"])
    steps.run("connect_volume: map by guid", connect())
    steps.run("connect_volume again: already mapped is accepted", connect(),
              needs=["connect_volume: map by guid"])
    steps.run("connect_volume with QoS limits: setMappedSdcLimits by guid",
              connect(iops="1000", bandwidth="2048"),
              needs=["connect_volume: map by guid"])
    steps.run("disconnect_volume: unmap by guid", disconnect,
              needs=["connect_volume: map by guid"])
    steps.run("disconnect_volume again: not mapped is accepted", disconnect,
              needs=["disconnect_volume: unmap by guid"])
    sys.stdout.write(json.dumps({"done": True}) + "\n")


if __name__ == "__main__":
    main()
