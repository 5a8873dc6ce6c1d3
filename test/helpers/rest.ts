// The REST API in-process for tests: a real StateMachine behind a small MdmController (no
// journal, no SDS connections), a real AdminAuth password file, a real self-signed
// certificate made by openssl, and a real HTTPS server on 127.0.0.1. What stands in for the
// SDSs: addDevice takes any device at a fixed capacity, except `formattedDevicePath`, which
// it refuses the way an SDS refuses a device holding a filesystem; `sdsStats` returns what
// the test put in `stats`, and `sdcQosStats` what it put in `qos` (an SDC's last heartbeat).

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import { pino, type Logger } from 'pino';
import { AdminAuth } from '../../src/mdm/auth.js';
import { idleRebuildStatus, type AddDeviceRequest, type MdmController, type RebuildStatus, type SnapshotRequest, type SnapshotResult } from '../../src/mdm/controller.js';
import type { Id } from '../../src/mdm/model.js';
import { RestApi } from '../../src/mdm/rest-api.js';
import { ensureSelfSignedCertificate } from '../../src/mdm/tls.js';
import { MdmError, StateMachine, type Applied, type Command } from '../../src/mdm/state-machine.js';
import type { VolumeQosStats } from '../../src/wire/mdm-ops.js';
import type { SdsStats } from '../../src/wire/sds-ops.js';
import type { TeardownHost } from './processes.js';

export const testClusterId = '0123456789abcdef';
export const testPassword = 'correct horse battery staple';
export const formattedDevicePath = '/dev/formatted';
export const GiB = 1024 * 1024 * 1024;
export const MiB = 1024 * 1024;
/** What the stand-in SDS reports for every device it takes. */
export const testDeviceCapacityBytes = GiB;

export class TestController implements MdmController {
  readonly state = StateMachine.create(testClusterId, 'testsys');
  readonly stats = new Map<Id, SdsStats>();
  readonly qos = new Map<Id, VolumeQosStats[]>();
  /** Every addDevice request, in order, as the SDS would have seen it. */
  readonly deviceRequests: AddDeviceRequest[] = [];
  nowMs = 1_700_000_000_000;

  async execute(command: Command): Promise<Applied> {
    return this.state.apply(command);
  }

  async addDevice(request: AddDeviceRequest): Promise<Applied> {
    this.deviceRequests.push(request);
    if (request.path === formattedDevicePath && !request.force) {
      throw new MdmError('MB_ERR_DEVICE_FORMATTED', `${request.path} holds an ext4 filesystem; add it with forceDeviceTakeover to format it anyway`, 409);
    }
    return this.state.apply({
      type: 'addDevice',
      deviceId: randomBytes(8).toString('hex'),
      sdsId: request.sdsId,
      storagePoolId: request.storagePoolId,
      path: request.path,
      name: request.name,
      capacityBytes: testDeviceCapacityBytes,
    });
  }

  /**
   * The barrier without SDSs: begun and committed at once (no SDS to wait for). Unnamed
   * snapshots get '<volume>-snap-<n>' as the service names them.
   */
  async snapshotVolumes(requests: SnapshotRequest[]): Promise<SnapshotResult> {
    const taken = new Set(Object.values(this.state.model.volumes).map((volume) => volume.name));
    const defs = requests.map((request) => {
      let name = request.name;
      const base = this.state.model.volumes[request.volumeId]?.name ?? 'missing';
      for (let n = 1; name === null || (request.name === null && taken.has(name)); n++) name = `${base.slice(0, 31 - `-snap-${n}`.length)}-snap-${n}`;
      taken.add(name);
      return { volumeId: request.volumeId, name, readOnly: request.readOnly };
    });
    const groupId = this.state.apply({ type: 'beginSnapshot', defs, nowMs: this.nowMs }).id as Id;
    const committed = this.state.apply({ type: 'commitSnapshot', groupId, nowMs: this.nowMs });
    return { snapshotGroupId: groupId, volumeIds: committed.ids ?? [] };
  }

  async overwriteVolumeContent(volumeId: Id, sourceVolumeId: Id): Promise<void> {
    this.state.apply({ type: 'overwriteVolumeContent', volumeId, sourceVolumeId });
  }

  sdsStats(sdsId: Id): SdsStats | null {
    return this.stats.get(sdsId) ?? null;
  }

  sdcQosStats(sdcId: Id): readonly VolumeQosStats[] {
    return this.qos.get(sdcId) ?? [];
  }

  rebuildStatus(): RebuildStatus {
    return idleRebuildStatus(Object.values(this.state.model.storagePools).reduce((sum, pool) => sum + pool.groups.length, 0));
  }

  /** An SDS that started and registered itself, as `sds start --mdm` will do. */
  registerSds(name: string, port: number): Id {
    const sdsId = randomBytes(8).toString('hex');
    this.state.apply({ type: 'registerSds', sdsId, name, address: `127.0.0.1:${port}`, nowMs: this.nowMs });
    return sdsId;
  }

  registerSdc(guid: string, name: string): Id {
    return this.state.apply({ type: 'registerSdc', guid, name, nowMs: this.nowMs }).id as Id;
  }
}

export interface TestApi {
  api: RestApi;
  controller: TestController;
  auth: AdminAuth;
  port: number;
  url: string;
  ca: Buffer;
  certPath: string;
  dir: string;
  passwordFile: string;
}

/** Starts the API over HTTPS on 127.0.0.1 with a fresh model; closed at teardown. */
export async function startTestApi(t: TeardownHost & { testdir(): string }, options: { controller?: TestController; log?: Logger } = {}): Promise<TestApi> {
  const controller = options.controller ?? new TestController();
  const dir = t.testdir();
  // scrypt's cost is lowered only to keep the suite quick; the format is the same.
  const auth = await AdminAuth.initialize(dir, testPassword, { scryptCost: 1024 });
  const certificate = ensureSelfSignedCertificate(dir);
  const log = options.log ?? pino({ level: process.env['TEST_LOG_LEVEL'] ?? 'silent' });
  const api = new RestApi({ controller, log, auth, tls: { cert: certificate.cert, key: certificate.key }, nowMs: () => controller.nowMs });
  const address = await api.listen('127.0.0.1', 0);
  t.teardown(() => api.close());
  const passwordFile = path.join(dir, 'password.txt');
  fs.writeFileSync(passwordFile, `${testPassword}\n`, { mode: 0o600 });
  return { api, controller, auth, port: address.port, url: `https://127.0.0.1:${address.port}`, ca: certificate.cert, certPath: certificate.certPath, dir, passwordFile };
}

export interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** The parsed JSON body (undefined if the body is empty or not JSON). */
  body: unknown;
}

export interface CallOptions {
  /** JSON-encoded unless `raw` is given. */
  body?: unknown;
  raw?: string | Buffer;
  /** Authorization: a token (sent as Basic admin:TOKEN), or a full header value. */
  token?: string;
  authorization?: string;
  headers?: Record<string, string>;
  /** Fails the call (rejects) when no whole answer came within this long. Default: no bound. */
  timeoutMs?: number;
}

/** One HTTPS request, trusting only the test's certificate. */
export function call(api: Pick<TestApi, 'url' | 'ca'>, method: string, urlPath: string, options: CallOptions = {}): Promise<Response> {
  const payload = options.raw !== undefined ? Buffer.from(options.raw) : options.body !== undefined ? Buffer.from(JSON.stringify(options.body)) : undefined;
  const authorization = options.authorization ?? (options.token !== undefined ? basic('admin', options.token) : undefined);
  return new Promise((resolve, reject) => {
    const req = https.request(
      `${api.url}${urlPath}`,
      {
        method,
        ca: api.ca,
        // A connection per request: Node's global agent keeps connections alive, and a test
        // that closes the API would otherwise see a reused socket reset instead of a refusal.
        agent: false,
        headers: {
          ...(authorization !== undefined ? { authorization } : {}),
          ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
          ...options.headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown;
          try {
            body = text === '' ? undefined : JSON.parse(text);
          } catch {
            body = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (options.timeoutMs !== undefined) {
      const timer = setTimeout(() => req.destroy(new Error(`${method} ${urlPath}: no answer within ${options.timeoutMs} ms`)), options.timeoutMs);
      req.on('close', () => clearTimeout(timer));
    }
    req.end(payload);
  });
}

export function basic(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
}

export async function login(api: TestApi, password = testPassword): Promise<string> {
  const reply = await call(api, 'GET', '/api/login', { authorization: basic('admin', password) });
  if (reply.status !== 200 || typeof reply.body !== 'string') throw new Error(`login failed: ${reply.status} ${reply.text}`);
  return reply.body;
}

/** Creates an instance of `type` through the REST API; its id. */
export async function createInstance(api: TestApi, token: string, type: string, body: unknown): Promise<string> {
  const reply = await call(api, 'POST', `/api/types/${type}/instances`, { token, body });
  if (reply.status !== 200) throw new Error(`create ${type}: ${reply.status} ${reply.text}`);
  return (reply.body as { id: string }).id;
}

export interface PopulatedApi {
  api: TestApi;
  token: string;
  pd: string;
  pool: string;
  sds: string[];
  devices: string[];
}

/** A test API with protection domain pd1 and pool pool1 (64 MiB granularity) over three SDSs of one 1 GiB device each, made through the REST API. */
export async function populatedApi(t: TeardownHost & { testdir(): string }): Promise<PopulatedApi> {
  const api = await startTestApi(t);
  const token = await login(api);
  const pd = await createInstance(api, token, 'ProtectionDomain', { name: 'pd1' });
  const pool = await createInstance(api, token, 'StoragePool', { protectionDomainId: pd, name: 'pool1', volumeGranularityInMb: 64 });
  const sds = ['sds1', 'sds2', 'sds3'].map((name, index) => api.controller.registerSds(name, 7072 + index));
  for (const sdsId of sds) await createInstance(api, token, 'Sds', { sdsId, protectionDomainId: pd });
  const devices: string[] = [];
  for (const sdsId of sds) devices.push(await createInstance(api, token, 'Device', { sdsId, storagePoolId: pool, deviceCurrentPathName: '/dev/sdb' }));
  return { api, token, pd, pool, sds, devices };
}
