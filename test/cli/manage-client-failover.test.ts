// Proves that the management CLI's REST client follows the Master among several API
// addresses (`--api URL[,URL...]`), against small real HTTP servers in this process that
// play MDMs: a Master (logins, sessions by token), a Slave or a cut-off MDM (503
// MB_ERR_MDM_NOT_MASTER / MB_ERR_NO_QUORUM), a crashed one (the connection reset), a closed
// port (connection refused), a stopped process with a full accept queue (the connect hangs).
//   - it moves to the next address on a refused connection, one that cannot be made (no
//     route, or no answer within apiConnectTimeoutMs), a reset and those 503s; on
//     anything else (a 409) it stops where it is;
//   - each address is tried at most once per call, and a call that every address failed
//     fails with the last error, naming every address tried;
//   - the next call starts with the MDM that answered last;
//   - a session that the MDM answering now does not know (401) is logged in again, once;
//   - the address list is checked (entries, duplicates, one scheme, at most five), and a
//     lab record with apiAddresses gives the list.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { labConnectionDefaults, labFileName, labFormatVersion } from '../../src/cli/lab-state.js';
import { ApiClient, ApiConnectionError, ApiError, parseApiUrls } from '../../src/cli/manage-client.js';
import { apiConnectTimeoutMs, mdmAddressesMax } from '../../src/common/limits.js';

const password = 'pw';
const io = { stdout: { write: () => true }, stderr: { write: () => true }, env: { MESHBLOCK_PASSWORD: password } };

type Mode = 'master' | 'not-master' | 'no-quorum' | 'reset' | 'conflict';

/** An MDM's REST API as the client sees it, in the role `mode`. */
class FakeApi {
  /** `METHOD PATH` of every request that reached it. */
  readonly requests: string[] = [];
  private readonly tokens = new Set<string>();
  /** A broken MDM: every session is forgotten before each call but a login. */
  forgetsAtEveryCall = false;
  private issued = 0;

  private constructor(
    readonly url: string,
    public mode: Mode,
  ) {}

  static async start(t: Test, mode: Mode): Promise<FakeApi> {
    // The server's port names the fake, so the fake is made once it listens.
    let onRequest: http.RequestListener = (_req, res) => void res.writeHead(500).end();
    const server = http.createServer((req, res) => onRequest(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.teardown(() => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    });
    const api = new FakeApi(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, mode);
    onRequest = (req, res) => api.onRequest(req, res);
    return api;
  }

  /** As after a restart: every session is forgotten. */
  forgetSessions(): void {
    this.tokens.clear();
  }

  count(what: string): number {
    return this.requests.filter((request) => request === what).length;
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    req.resume();
    this.requests.push(`${req.method} ${req.url}`);
    const answer = (status: number, body: unknown): void => void res.writeHead(status, { 'content-type': 'application/json' }).end(body === undefined ? '' : JSON.stringify(body));
    const refuse = (status: number, code: string, message: string): void => answer(status, { message, httpStatusCode: status, errorCode: 0, code });
    switch (this.mode) {
      case 'reset':
        req.socket.destroy();
        return;
      case 'not-master':
        return refuse(503, 'MB_ERR_MDM_NOT_MASTER', 'this MDM is a Slave');
      case 'no-quorum':
        return refuse(503, 'MB_ERR_NO_QUORUM', 'the cluster store has no quorum');
      case 'conflict':
        return refuse(409, 'MB_ERR_NAME_TAKEN', 'taken');
      case 'master':
        break;
    }
    const credentials = Buffer.from((req.headers.authorization ?? '').replace(/^Basic /, ''), 'base64').toString();
    const user = credentials.slice(0, credentials.indexOf(':'));
    const secret = credentials.slice(credentials.indexOf(':') + 1);
    if (req.url === '/api/login') {
      if (user !== 'admin' || secret !== password) return refuse(401, 'MB_ERR_UNAUTHORIZED', 'wrong password');
      const token = `${this.url}#${++this.issued}`;
      this.tokens.add(token);
      return answer(200, token);
    }
    if (this.forgetsAtEveryCall) this.forgetSessions();
    if (!this.tokens.has(secret)) return refuse(401, 'MB_ERR_UNAUTHORIZED', 'no such session');
    if (req.url === '/api/logout') {
      this.tokens.delete(secret);
      return answer(200, undefined);
    }
    return answer(200, { servedBy: this.url });
  }
}

async function closedUrl(): Promise<string> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(probe.address() as net.AddressInfo).port}`;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return url;
}

async function connect(t: Test, api: string): Promise<ApiClient> {
  const client = await ApiClient.connect({ api, dir: undefined, username: 'admin', 'password-file': undefined, 'ca-cert': undefined, insecure: false }, io);
  t.teardown(() => client.close());
  return client;
}

const served = (client: ApiClient): Promise<{ servedBy: string }> => client.get<{ servedBy: string }>('/api/types/System/instances');

t.test('a refused connection moves to the next address', async (t) => {
  const down = await closedUrl();
  const master = await FakeApi.start(t, 'master');
  const client = await connect(t, `${down},${master.url}`);
  t.equal(client.origin, master.url, 'logged in with the second');
  t.same(await served(client), { servedBy: master.url });
});

t.test('an address that cannot be reached moves to the next, within the connect timeout', async (t) => {
  // 192.0.2.1 (TEST-NET-1) leads nowhere: depending on the host's routes the connect fails
  // at once (ENETUNREACH, EHOSTUNREACH) or never completes (apiConnectTimeoutMs). Either
  // way the call must go on to the next address, and not wait out the request timeout.
  const master = await FakeApi.start(t, 'master');
  const startedAt = Date.now();
  const client = await connect(t, `http://192.0.2.1:8443,${master.url}`);
  const elapsedMs = Date.now() - startedAt;
  t.equal(client.origin, master.url, 'logged in with the second');
  t.ok(elapsedMs < apiConnectTimeoutMs + 2000, `in ${elapsedMs} ms`);
});

/**
 * An address whose connects never complete: a real process listening with a backlog of 1,
 * stopped (SIGSTOP) so it accepts nothing, its queue filled; the kernel then drops new SYNs.
 */
async function hangingUrl(t: Test): Promise<string> {
  const child = spawn(process.execPath, ['-e', "require('net').createServer().listen({ port: 0, host: '127.0.0.1', backlog: 1 }, function () { console.log(this.address().port) })"], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  const [line] = (await once(child.stdout, 'data')) as [Buffer];
  const port = Number(line.toString().trim());
  child.kill('SIGSTOP');
  const fillers: net.Socket[] = [];
  t.teardown(() => fillers.forEach((socket) => socket.destroy()));
  for (let index = 0; index < 16; index += 1) {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    fillers.push(socket);
    const connected = await Promise.race([once(socket, 'connect').then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 300))]);
    if (!connected) return `http://127.0.0.1:${port}`;
  }
  throw new Error('the stopped listener kept completing connections');
}

t.test('an address whose connect hangs is left after apiConnectTimeoutMs', async (t) => {
  const hanging = await hangingUrl(t);
  const master = await FakeApi.start(t, 'master');
  const startedAt = Date.now();
  const client = await connect(t, `${hanging},${master.url}`);
  const elapsedMs = Date.now() - startedAt;
  t.equal(client.origin, master.url, 'logged in with the second');
  t.ok(elapsedMs >= apiConnectTimeoutMs - 50 && elapsedMs < apiConnectTimeoutMs + 2000, `after ${elapsedMs} ms: the connect timeout (${apiConnectTimeoutMs} ms), not the request timeout`);
});

t.test('503 not-Master and no-quorum move to the next address; the next call starts where the last was answered', async (t) => {
  const slave = await FakeApi.start(t, 'not-master');
  const cutOff = await FakeApi.start(t, 'no-quorum');
  const master = await FakeApi.start(t, 'master');
  const client = await connect(t, `${slave.url},${cutOff.url},${master.url}`);
  t.same(await served(client), { servedBy: master.url });
  t.same(await served(client), { servedBy: master.url });
  t.same(slave.requests, ['GET /api/login'], 'the Slave was asked once, at login');
  t.same(cutOff.requests, ['GET /api/login'], 'so was the MDM without quorum');
  t.equal(master.count('GET /api/types/System/instances'), 2);
});

t.test('a reset connection moves to the next address', async (t) => {
  const master = await FakeApi.start(t, 'master');
  const crashing = await FakeApi.start(t, 'master');
  const client = await connect(t, `${crashing.url},${master.url}`);
  t.equal(client.origin, crashing.url, 'logged in with the first');
  crashing.mode = 'reset';
  t.same(await served(client), { servedBy: master.url }, 'the call went on to the second');
  t.equal(crashing.count('GET /api/types/System/instances'), 1, 'the first was tried once');
  t.equal(master.count('GET /api/types/System/instances'), 2, 'the second answered 401 (a session of the first), then after a login');
  t.equal(master.count('GET /api/login'), 1, 'logged in again, on the second');
});

t.test('other refusals stop at the MDM that answered', async (t) => {
  const answering = await FakeApi.start(t, 'master');
  const other = await FakeApi.start(t, 'master');
  const client = await connect(t, `${answering.url},${other.url}`);
  answering.mode = 'conflict';
  await t.rejects(client.post('/api/types/Volume/instances', { name: 'v' }), { constructor: ApiError, code: 'MB_ERR_NAME_TAKEN', httpStatus: 409, message: 'taken' });
  t.same(other.requests, [], 'the other MDM was never asked');
});

t.test('every address failed: the last error, naming every address tried', async (t) => {
  const down = await closedUrl();
  const slave = await FakeApi.start(t, 'not-master');
  const connectTo = (api: string): Promise<ApiClient> =>
    ApiClient.connect({ api, dir: undefined, username: 'admin', 'password-file': undefined, 'ca-cert': undefined, insecure: false }, io);

  const notMaster = await connectTo(`${down},${slave.url}`).then(
    () => null,
    (err: unknown) => err,
  );
  t.ok(notMaster instanceof ApiError, 'the last answer was the Slave’s');
  t.match(notMaster, { code: 'MB_ERR_MDM_NOT_MASTER', httpStatus: 503 });
  t.equal((notMaster as Error).message, `this MDM is a Slave (tried ${down}, ${slave.url})`);
  t.equal(slave.count('GET /api/login'), 1, 'each address once');

  // An MDM's own answer says more than another's silence: it is the one reported, wherever it came.
  const answered = await connectTo(`${slave.url},${down}`).then(
    () => null,
    (err: unknown) => err,
  );
  t.ok(answered instanceof ApiError, "the Slave's answer is reported over the refused connection after it");
  t.equal((answered as Error).message, `this MDM is a Slave (tried ${slave.url}, ${down})`);
  t.equal(slave.count('GET /api/login'), 2);

  const one = await connectTo(down).then(
    () => null,
    (err: unknown) => err,
  );
  t.match(one, { code: 'MB_ERR_API_UNREACHABLE', message: /is the MDM running\? see --api\)$/ }, 'one address: the message as before');

  const alsoDown = await closedUrl();
  const unreachable = await connectTo(`${down},${alsoDown}`).then(
    () => null,
    (err: unknown) => err,
  );
  t.ok(unreachable instanceof ApiConnectionError, 'nobody answered: the last refused connection');
  t.match((unreachable as Error).message, new RegExp(`^cannot reach the MDM at ${alsoDown}: .*ECONNREFUSED.* \\(tried ${down}, ${alsoDown}\\)$`));
});

t.test('a 401 logs in again, once', async (t) => {
  const master = await FakeApi.start(t, 'master');
  const client = await connect(t, master.url);
  master.forgetSessions();
  t.same(await served(client), { servedBy: master.url }, 'after a restart of the MDM, the call goes through');
  t.equal(master.count('GET /api/login'), 2, 'with one more login');

  // A session that the MDM forgets at every call: one login again, then the 401 stands.
  const forgetful = await FakeApi.start(t, 'master');
  const second = await connect(t, forgetful.url);
  forgetful.forgetsAtEveryCall = true;
  await t.rejects(served(second), { constructor: ApiError, httpStatus: 401, code: 'MB_ERR_UNAUTHORIZED' });
  t.equal(forgetful.count('GET /api/login'), 2, 'logged in again only once');
  t.equal(forgetful.count('GET /api/types/System/instances'), 2, 'the call was repeated once');
});

t.test('the address list is checked', async (t) => {
  t.same(
    parseApiUrls('https://10.0.0.1:8443, https://10.0.0.2:8443').map((url) => url.origin),
    ['https://10.0.0.1:8443', 'https://10.0.0.2:8443'],
  );
  t.throws(() => parseApiUrls('https://a:1,nonsense'), { code: 'MB_ERR_INVALID_ARGUMENT', message: "--api: not a URL: 'nonsense' (entry 2) (example: https://127.0.0.1:8443)" });
  t.throws(() => parseApiUrls('https://a:1,https://a:1/'), { message: "--api: entry 2 ('https://a:1/') is given twice (https://a:1)" });
  t.throws(() => parseApiUrls('https://a:1,http://b:1'), { message: "--api: entry 2 ('http://b:1'): every address must be https:// as the first is" });
  t.throws(() => parseApiUrls('https://a:1,https://b:1/api'), { message: "--api: must be https://HOST:PORT or http://HOST:PORT, got 'https://b:1/api' (entry 2)" });
  t.throws(() => parseApiUrls('ftp://a:1'), { message: "--api: must be https://HOST:PORT or http://HOST:PORT, got 'ftp://a:1'" }, 'one address: as before');
  const many = Array.from({ length: mdmAddressesMax + 1 }, (_, index) => `https://h${index}:1`).join(',');
  t.throws(() => parseApiUrls(many), { message: `--api: at most ${mdmAddressesMax} addresses, got ${mdmAddressesMax + 1}` });
});

t.test("a lab record's apiAddresses is the list", async (t) => {
  const record = { formatVersion: labFormatVersion, clusterId: null, apiUrl: 'https://127.0.0.1:1', caCert: '/c', passwordFile: '/p', secretFile: '/s', deviceSizeBytes: 1, volumes: [], processes: [] };
  const dir = t.testdir({
    one: { [labFileName]: JSON.stringify(record) },
    cluster: { [labFileName]: JSON.stringify({ ...record, apiAddresses: ['https://127.0.0.1:1', 'https://127.0.0.1:2'] }) },
    odd: { [labFileName]: JSON.stringify({ ...record, apiAddresses: [5] }) },
  });
  t.equal(labConnectionDefaults(path.join(dir, 'one'))?.api, 'https://127.0.0.1:1', 'one MDM: apiUrl');
  t.equal(labConnectionDefaults(path.join(dir, 'cluster'))?.api, 'https://127.0.0.1:1,https://127.0.0.1:2', 'a cluster: every address');
  t.equal(labConnectionDefaults(path.join(dir, 'odd'))?.api, 'https://127.0.0.1:1', 'a list that is not of strings: apiUrl');
});
