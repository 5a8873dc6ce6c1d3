// A REST client that records a history, for the MDM cluster's partition tests: it sends a
// steady stream of uniquely named changes (one new protection domain each) to the MDMs'
// REST APIs, round robin over its targets, and prints one JSON line per change on stdout:
//
//   { "kind": "change", "name": "h-r-17", "target": "mdm1", "startMs": 1234.5, "endMs": 1240.1,
//     "status": 200, "mdm": "mdm2", "term": "57", "code": null, "error": null, "sent": true }
//
// status 0 means no HTTP answer (`error` says why: a timeout, a refused connection; `sent`
// false: the login before it failed, so nothing was sent); `mdm` and
// `term` are the x-meshblock-mdm and x-meshblock-term headers of the answer; `code` is the
// body's meshblock error code. Times are CLOCK_MONOTONIC in milliseconds
// (process.hrtime), which every process on the machine shares, whatever its namespace:
// the test compares them with its own.
//
// It runs as its own process so that it can run inside a simulated host's network
// namespace (`ip netns exec NS node rest-history-client.mjs CONFIG`), as a client on the
// same side of a partition as that host's MDM; one in the test's namespace sees the rest.
//
//   node rest-history-client.mjs '{"targets":[{"name":"mdm1","url":"https://10.231.7.2:8443"}],
//     "caPath":"...","password":"...","prefix":"r","intervalMs":100,"requestTimeoutMs":8000,
//     "inflightMax":4,"durationMsMax":120000}'
//
// A new change starts every intervalMs on the next target, unless that target already has
// inflightMax changes unanswered (a hung target must not pile up connections; the skip is
// counted). A target's token comes from GET /api/login (forwarded to the Master like every
// request); a 401 drops it and the next change logs in again. On SIGTERM, or after
// durationMsMax, it starts nothing more, waits for what is in flight (each bounded by
// requestTimeoutMs), prints { "kind": "done", "skipped": N, "logins": N } and exits 0.

import * as fs from 'node:fs';
import * as https from 'node:https';

const config = JSON.parse(process.argv[2] ?? '{}');
const ca = fs.readFileSync(config.caPath);
const basic = `Basic ${Buffer.from(`admin:${config.password}`).toString('base64')}`;

const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

/** One HTTPS request with a whole-request deadline; resolves with { status, headers, body } or { status: 0, error }. */
function request(url, method, path, headers, payload) {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (result) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    // A connection per request: a connection kept alive to an MDM that was cut off would
    // only hide what a new client sees.
    const req = https.request(`${url}${path}`, { method, ca, agent: false, headers: { ...headers, ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}) } }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body;
        try {
          body = text === '' ? undefined : JSON.parse(text);
        } catch {
          body = undefined;
        }
        finish({ status: res.statusCode ?? 0, headers: res.headers, body, error: null });
      });
      res.on('error', (err) => finish({ status: 0, headers: {}, body: undefined, error: err.message }));
    });
    const timer = setTimeout(() => {
      req.destroy(new Error(`no answer within ${config.requestTimeoutMs} ms`));
    }, config.requestTimeoutMs);
    req.on('error', (err) => finish({ status: 0, headers: {}, body: undefined, error: err.message }));
    req.end(payload);
  });
}

const targets = config.targets.map((target) => ({ ...target, token: null, login: null, inflight: 0 }));
let logins = 0;
let skipped = 0;
let sequence = 0;
let stopping = false;
const inflight = new Set();

function emit(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

async function token(target) {
  if (target.token !== null) return target.token;
  if (target.login === null) {
    target.login = (async () => {
      logins += 1;
      const answer = await request(target.url, 'GET', '/api/login', { authorization: basic });
      return answer.status === 200 && typeof answer.body === 'string' ? answer.body : null;
    })().finally(() => {
      target.login = null;
    });
  }
  const got = await target.login;
  if (got !== null) target.token = got;
  return got;
}

async function change(target, name) {
  const loginMs = nowMs();
  const used = await token(target);
  if (used === null) {
    // No login: nothing was sent that could change anything.
    emit({ kind: 'change', name, target: target.name, startMs: loginMs, endMs: nowMs(), status: 0, mdm: null, term: null, code: null, error: 'login failed', sent: false });
    return;
  }
  // The interval the change can have happened in starts here, not at the login.
  const startMs = nowMs();
  const payload = Buffer.from(JSON.stringify({ name }));
  const answer = await request(target.url, 'POST', '/api/types/ProtectionDomain/instances', { authorization: `Basic ${Buffer.from(`admin:${used}`).toString('base64')}` }, payload);
  const endMs = nowMs();
  if (answer.status === 401 && target.token === used) target.token = null;
  const header = (key) => {
    const value = answer.headers[key];
    return typeof value === 'string' ? value : null;
  };
  // meshblock's own code (MB_ERR_...), not ScaleIO's numeric errorCode.
  const code = typeof answer.body?.code === 'string' ? answer.body.code : null;
  emit({ kind: 'change', name, target: target.name, startMs, endMs, status: answer.status, mdm: header('x-meshblock-mdm'), term: header('x-meshblock-term'), code, error: answer.error, sent: true });
}

const startedMs = nowMs();
let next = 0;
const timer = setInterval(() => {
  if (stopping) return;
  if (nowMs() - startedMs > config.durationMsMax) {
    stop();
    return;
  }
  const target = targets[next % targets.length];
  next += 1;
  if (target.inflight >= config.inflightMax) {
    skipped += 1;
    return;
  }
  sequence += 1;
  const name = `h-${config.prefix}-${sequence}`;
  target.inflight += 1;
  const running = change(target, name)
    .catch((err) => emit({ kind: 'change', name, target: target.name, startMs: nowMs(), endMs: nowMs(), status: 0, mdm: null, term: null, code: null, error: `client bug: ${err.message}`, sent: true }))
    .finally(() => {
      target.inflight -= 1;
      inflight.delete(running);
    });
  inflight.add(running);
}, config.intervalMs);

function stop() {
  if (stopping) return;
  stopping = true;
  clearInterval(timer);
  void Promise.allSettled([...inflight]).then(() => {
    emit({ kind: 'done', skipped, logins });
    process.exitCode = 0;
  });
}

process.on('SIGTERM', stop);
process.on('SIGINT', stop);
