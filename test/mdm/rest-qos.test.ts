// Proves the MDM's half of QoS (docs/qos.md) through the REST API of a real MdmService with
// its journal, on real sockets: a wire client registered as an SDC receives the views the
// MDM pushes and sends heartbeats, as `sdc start` does. Checked: setMappedSdcLimits takes the
// limits and the burst (strings or numbers, as ScaleIO clients send them), a field left out
// keeps its value, a limit removed takes its burst along; bad input (5 IOPS, 1000 KB/s,
// negative or non-numeric values, unknown fields, an SDC not mapped) is refused naming the
// field, with nothing changed; the SDC's view carries the new limits at once; the SDC's
// heartbeat statistics (bad entries dropped) show in mappedSdcInfo, the Sdc and Volume
// Statistics and the dashboard; the limits survive an MDM restart (journal replay), and a
// journal written before bursts (a setMappedSdcLimits without them) replays as no burst.

import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { GiB } from '../../src/common/units.js';
import { AdminAuth } from '../../src/mdm/auth.js';
import type { JournalRecord } from '../../src/mdm/command-log.js';
import { Journal } from '../../src/mdm/journal.js';
import { emptyModel, type Id, type SystemModel } from '../../src/mdm/model.js';
import { RestApi } from '../../src/mdm/rest-api.js';
import type { RestDashboard, RestSdcStatistics, RestVolume, RestVolumeStatistics } from '../../src/mdm/rest-objects.js';
import { MdmService } from '../../src/mdm/service.js';
import { ensureSelfSignedCertificate } from '../../src/mdm/tls.js';
import { MdmOp, SdcOp, type SdcView, type VolumeQosStats } from '../../src/wire/mdm-ops.js';
import { WirePeer } from '../../src/wire/peer.js';
import { SdsStatus } from '../../src/wire/sds-ops.js';
import { basic, call, testPassword } from '../helpers/rest.js';

const clusterId = '0123456789abcdef';
const secret = Buffer.from('a test cluster secret, long enough');
const log = pino({ level: process.env['TEST_LOG_LEVEL'] ?? 'silent' });

interface Mdm {
  service: MdmService;
  wirePort: number;
  api: { url: string; ca: Buffer };
  token: string;
  /** Stops the API and the service (as a restart does); also registered as teardown. */
  stop(): Promise<void>;
}

/** A real MdmService on `dataDir` and a real REST API over it, logged in. */
async function startMdm(t: Test, dataDir: string, authDir: string): Promise<Mdm> {
  fs.mkdirSync(authDir, { recursive: true });
  const service = await MdmService.open({ dataDir, clusterId, systemName: 'test', secret, log });
  const wire = await service.listen('127.0.0.1', 0);
  const auth = AdminAuth.isInitialized(authDir) ? AdminAuth.loadFromDataDir(authDir, { scryptCost: 1024 }) : await AdminAuth.initialize(authDir, testPassword, { scryptCost: 1024 });
  const certificate = ensureSelfSignedCertificate(authDir);
  const rest = new RestApi({ controller: service, log, auth, tls: { cert: certificate.cert, key: certificate.key } });
  const address = await rest.listen('127.0.0.1', 0);
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await rest.close();
    await service.close();
  };
  t.teardown(stop);
  const api = { url: `https://127.0.0.1:${address.port}`, ca: certificate.cert };
  const login = await call(api, 'GET', '/api/login', { authorization: basic('admin', testPassword) });
  if (login.status !== 200) throw new Error(`login failed: ${login.text}`);
  return { service, wirePort: wire.port, api, token: login.body as string, stop };
}

/** A wire client registered as an SDC: it keeps every view the MDM sends it. */
async function fakeSdc(t: Test, port: number): Promise<{ id: Id; views: SdcView[]; beat: (qos: unknown) => Promise<void> }> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const views: SdcView[] = [];
  const peer = await WirePeer.connect(socket, {
    clusterId,
    secret,
    role: 'sdc',
    name: 'test-sdc',
    log,
    onRequest: async (request) => {
      if (request.op === SdcOp.Update) views.push(JSON.parse(request.payload.toString()) as SdcView);
      return { status: SdsStatus.Ok };
    },
  });
  t.teardown(() => peer.destroy());
  const registered = await peer.request(MdmOp.RegisterSdc, Buffer.from(JSON.stringify({ guid: '0123abcd-0000-1111', name: 'host1' })));
  if (registered.status !== SdsStatus.Ok) throw new Error(`registration refused: ${registered.payload.toString()}`);
  const first = JSON.parse(registered.payload.toString()) as SdcView;
  views.push(first);
  const beat = async (qos: unknown): Promise<void> => {
    const reply = await peer.request(MdmOp.Heartbeat, Buffer.from(JSON.stringify({ openVolumes: [], qos })));
    if (reply.status !== SdsStatus.Ok) throw new Error('heartbeat refused');
  };
  return { id: first.sdcId, views, beat };
}

async function until(what: string, probe: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A pool on three registered SDSs (no SDS process: the limits never reach one) and volume vol1. */
async function populate(service: MdmService): Promise<Id> {
  const pd = (await service.execute({ type: 'addProtectionDomain', name: 'pd1' })).id as Id;
  const pool = (await service.execute({ type: 'addStoragePool', protectionDomainId: pd, name: 'sp1', volumeGranularityBytes: GiB, pgCount: 16 })).id as Id;
  for (let index = 0; index < 3; index++) {
    const sdsId = (0x5d5000000000 + index).toString(16).padStart(16, '0');
    await service.execute({ type: 'registerSds', sdsId, name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, nowMs: Date.now() });
    await service.execute({ type: 'addSds', sdsId, protectionDomainId: pd, faultSetId: null });
    await service.execute({ type: 'addDevice', deviceId: (0xde7000000000 + index).toString(16).padStart(16, '0'), sdsId, storagePoolId: pool, path: '/dev/sdb', name: null, capacityBytes: 100 * GiB });
  }
  return (await service.execute({ type: 'addVolume', storagePoolId: pool, name: 'vol1', sizeBytes: GiB, volumeType: 'ThinProvisioned', nowMs: Date.now() })).id as Id;
}

async function get<T>(mdm: Mdm, urlPath: string): Promise<T> {
  const reply = await call(mdm.api, 'GET', urlPath, { token: mdm.token });
  if (reply.status !== 200) throw new Error(`GET ${urlPath}: ${reply.status} ${reply.text}`);
  return reply.body as T;
}

function limits(mdm: Mdm, volume: Id, body: unknown): ReturnType<typeof call> {
  return call(mdm.api, 'POST', `/api/instances/Volume::${volume}/action/setMappedSdcLimits`, { token: mdm.token, body });
}

t.test('limits and bursts through REST: kept when left out, refused naming the field, pushed to the SDC at once', async (t) => {
  const dir = t.testdir();
  const mdm = await startMdm(t, path.join(dir, 'mdm'), path.join(dir, 'auth'));
  const volume = await populate(mdm.service);
  const sdc = await fakeSdc(t, mdm.wirePort);
  const otherSdc = (await mdm.service.execute({ type: 'registerSdc', guid: 'guid-2222-3333', name: 'host2', nowMs: Date.now() })).id as Id;
  t.equal((await call(mdm.api, 'POST', `/api/instances/Volume::${volume}/action/addMappedSdc`, { token: mdm.token, body: { sdcId: sdc.id } })).status, 200);

  t.equal((await limits(mdm, volume, { sdcId: sdc.id, iopsLimit: '2000', bandwidthLimitInKbps: 10240, iopsBurst: 8000, bandwidthBurstInKbps: '40960', burstSeconds: 30 })).status, 200, 'limits and burst, strings or numbers');
  const info = async (): Promise<NonNullable<RestVolume['mappedSdcInfo']>[number] | undefined> => (await get<RestVolume>(mdm, `/api/instances/Volume::${volume}`)).mappedSdcInfo?.[0];
  t.match(await info(), { sdcId: sdc.id, sdcName: 'host1', limitIops: 2000, limitBwInMbps: 10, limitBwInKbps: 10240, limitIopsBurst: 8000, limitBwBurstInKbps: 40960, limitBurstSeconds: 30, qosRequests: 0, qosThrottledRequests: 0, qosThrottledMs: 0, qosWaiting: 0 });
  await until('the SDC to get its new view', () => sdc.views.at(-1)?.volumes[0]?.iopsBurst === 8000);
  t.match(sdc.views.at(-1)?.volumes[0], { id: volume, iopsLimit: 2000, bandwidthLimitKbps: 10240, iopsBurst: 8000, bandwidthBurstKbps: 40960, burstSeconds: 30 }, 'the view carries limits and burst');

  t.equal((await limits(mdm, volume, { sdcId: sdc.id, iopsLimit: 3000 })).status, 200);
  t.match(await info(), { limitIops: 3000, limitBwInKbps: 10240, limitIopsBurst: 8000, limitBwBurstInKbps: 40960, limitBurstSeconds: 30 }, 'fields left out keep their values');
  t.equal((await limits(mdm, volume, { sdcId: sdc.id, iopsLimit: 0 })).status, 200);
  t.match(await info(), { limitIops: 0, limitIopsBurst: 0, limitBwInKbps: 10240, limitBwBurstInKbps: 40960 }, 'a limit removed takes its burst along');
  t.equal((await limits(mdm, volume, { sdcId: sdc.id, bandwidthLimitInKbps: 0, bandwidthBurstInKbps: 0 })).status, 200);
  t.match(await info(), { limitBwInKbps: 0, limitBwBurstInKbps: 0 });
  await until('the SDC to see every limit removed', () => sdc.views.at(-1)?.volumes[0]?.bandwidthLimitKbps === 0 && sdc.views.at(-1)?.volumes[0]?.iopsLimit === 0);
  t.equal((await limits(mdm, volume, { sdcId: sdc.id, iopsLimit: 100, iopsBurst: 400 })).status, 200);
  await until('the SDC to get the burst', () => sdc.views.at(-1)?.volumes[0]?.iopsBurst === 400);

  const before = JSON.stringify(mdm.service.state.model);
  const viewsBefore = sdc.views.length;
  const cases: Array<{ what: string; body: unknown; status: number; code: string; message: RegExp }> = [
    { what: '5 IOPS', body: { sdcId: sdc.id, iopsLimit: 5 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^iopsLimit: must be 0 \(unlimited\) or at least 11/ },
    { what: '1000 KB/s', body: { sdcId: sdc.id, bandwidthLimitInKbps: 1000 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^bandwidthLimitInKbps: must be a multiple of 1024/ },
    { what: 'negative IOPS', body: { sdcId: sdc.id, iopsLimit: -100 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^iopsLimit: / },
    { what: 'non-numeric bandwidth', body: { sdcId: sdc.id, bandwidthLimitInKbps: '10MB' }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^bandwidthLimitInKbps: must be a whole number/ },
    { what: 'fractional IOPS', body: { sdcId: sdc.id, iopsLimit: 100.5 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^iopsLimit: / },
    { what: 'negative IOPS burst', body: { sdcId: sdc.id, iopsBurst: -1 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^iopsBurst: / },
    { what: 'non-numeric seconds', body: { sdcId: sdc.id, burstSeconds: 'ten' }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^burstSeconds: must be a whole number/ },
    { what: 'an IOPS burst below the limit', body: { sdcId: sdc.id, iopsBurst: 50 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^iopsBurst: must be 0 \(no burst\) or at least the IOPS limit, 100/ },
    { what: 'a limit raised above the burst kept', body: { sdcId: sdc.id, iopsLimit: 500 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^iopsBurst: .*at least the IOPS limit, 500; got 400/ },
    { what: 'a bandwidth burst without a bandwidth limit', body: { sdcId: sdc.id, bandwidthBurstInKbps: 4096 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^bandwidthBurstInKbps: needs a bandwidth limit/ },
    { what: 'a bandwidth burst not in whole MiB/s', body: { sdcId: sdc.id, bandwidthLimitInKbps: 1024, bandwidthBurstInKbps: 2000 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^bandwidthBurstInKbps: must be a multiple of 1024/ },
    { what: 'a burst of two hours', body: { sdcId: sdc.id, burstSeconds: 7200 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^burstSeconds: must be from 0 to 3600/ },
    { what: 'an unknown field', body: { sdcId: sdc.id, iopsLimit: 100, iopsBurstSeconds: 3 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^iopsBurstSeconds: unknown field/ },
    { what: 'no limit at all', body: { sdcId: sdc.id }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^iopsLimit: give iopsLimit, bandwidthLimitInKbps or both/ },
    { what: 'an SDC the volume is not mapped to', body: { sdcId: otherSdc, iopsLimit: 100 }, status: 404, code: 'MB_ERR_NOT_FOUND', message: /volume 'vol1' is not mapped to SDC/ },
  ];
  for (const entry of cases) {
    const reply = await limits(mdm, volume, entry.body);
    t.equal(reply.status, entry.status, `${entry.what}: HTTP ${entry.status}`);
    t.match(reply.body, { code: entry.code, message: entry.message }, `${entry.what}: ${entry.code}, naming the field`);
  }
  t.equal(JSON.stringify(mdm.service.state.model), before, 'nothing changed on any refusal');
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.equal(sdc.views.length, viewsBefore, 'and the SDC was sent nothing');
});

t.test("the SDC's heartbeat statistics in mappedSdcInfo, Sdc and Volume Statistics and the dashboard; bad entries dropped", async (t) => {
  const dir = t.testdir();
  const mdm = await startMdm(t, path.join(dir, 'mdm'), path.join(dir, 'auth'));
  const volume = await populate(mdm.service);
  const unlimited = (await mdm.service.execute({ type: 'addVolume', storagePoolId: mdm.service.state.model.volumes[volume]?.storagePoolId as Id, name: 'vol2', sizeBytes: GiB, volumeType: 'ThinProvisioned', nowMs: Date.now() })).id as Id;
  const sdc = await fakeSdc(t, mdm.wirePort);
  for (const id of [volume, unlimited]) await mdm.service.execute({ type: 'addMappedSdc', volumeId: id, sdcId: sdc.id, accessMode: 'ReadWrite', allowMultipleMappings: false });
  t.equal((await limits(mdm, volume, { sdcId: sdc.id, iopsLimit: 2000, bandwidthLimitInKbps: 10240 })).status, 200);

  t.match(await get<RestSdcStatistics>(mdm, `/api/instances/Sdc::${sdc.id}/relationships/Statistics`), { sdcId: sdc.id, statisticsAvailable: false, numOfMappedVolumes: 2, volumes: [] }, 'before a heartbeat: nothing known');
  const stats: VolumeQosStats = { volumeId: volume, iopsLimit: 2000, bandwidthLimitKbps: 10240, requests: 120000, bytes: 120000 * 4096, throttledRequests: 4500, throttledMs: 81234.6, waiting: 3 };
  await sdc.beat([
    stats,
    { ...stats, requests: 1 },
    { volumeId: unlimited, iopsLimit: 0, bandwidthLimitKbps: 0, requests: 50, bytes: 50 * 65536, throttledRequests: 0, throttledMs: 0, waiting: 0 },
    { volumeId: 'ffffffffffffffff', iopsLimit: 0, bandwidthLimitKbps: 0, requests: 1, bytes: 1, throttledRequests: 0, throttledMs: 0, waiting: 0 },
    { volumeId: volume, requests: 'many' },
    null,
    'garbage',
  ]);

  const volumeInfo = (await get<RestVolume>(mdm, `/api/instances/Volume::${volume}`)).mappedSdcInfo?.[0];
  t.match(volumeInfo, { limitIops: 2000, qosRequests: 120000, qosThrottledRequests: 4500, qosThrottledMs: 81235, qosWaiting: 3 }, 'mappedSdcInfo: the first entry of a volume counts, throttledMs rounded');
  const listed = await get<RestVolume[]>(mdm, '/api/types/Volume/instances');
  t.match(listed.find((entry) => entry.id === unlimited)?.mappedSdcInfo?.[0], { limitIops: 0, qosRequests: 50, qosThrottledRequests: 0 }, 'the listing too');

  const sdcStats = await get<RestSdcStatistics>(mdm, `/api/instances/Sdc::${sdc.id}/relationships/Statistics`);
  t.equal(sdcStats.statisticsAvailable, true);
  t.same(
    sdcStats.volumes.map((entry) => [entry.volumeName, entry.requests, entry.throttledRequests]),
    [
      ['vol1', 120000, 4500],
      ['vol2', 50, 0],
    ],
    'Sdc Statistics: per mapped volume, with its name; unknown volumes and malformed entries dropped',
  );
  const volumeStats = await get<RestVolumeStatistics>(mdm, `/api/instances/Volume::${volume}/relationships/Statistics`);
  t.match(volumeStats, { volumeId: volume, numOfMappedSdcs: 1, qosRequests: 120000, qosInKb: 480000, qosThrottledRequests: 4500, qosThrottledMs: 81235, qosWaiting: 3, sdcs: [{ sdcId: sdc.id, sdcName: 'host1', statisticsAvailable: true, limitIops: 2000, limitBwInKbps: 10240 }] }, 'Volume Statistics: totals over SDCs and each SDC');
  const links = (await get<RestVolume>(mdm, `/api/instances/Volume::${volume}`)).links;
  t.ok(links.some((link) => link.href === `/api/instances/Volume::${volume}/relationships/Statistics`), 'a volume links to its Statistics');

  const dashboard = await get<RestDashboard>(mdm, '/api/dashboard');
  t.match(dashboard.qos, [{ volumeId: volume, volumeName: 'vol1', sdcName: 'host1', limitIops: 2000, limitBwInKbps: 10240, qosThrottledRequests: 4500, qosThrottledMs: 81235 }], 'the dashboard lists every limited mapping, and only those');
  t.equal(dashboard.qos.length, 1);

  await sdc.beat('not a list');
  t.match((await get<RestVolume>(mdm, `/api/instances/Volume::${volume}`)).mappedSdcInfo?.[0], { qosRequests: 0, qosThrottledRequests: 0 }, 'a heartbeat without statistics (an older SDC): 0s');
});

t.test('limits survive an MDM restart (journal replay); a journal from before bursts replays as no burst', async (t) => {
  const dir = t.testdir();
  const dataDir = path.join(dir, 'mdm');
  const authDir = path.join(dir, 'auth');
  const first = await startMdm(t, dataDir, authDir);
  const volume = await populate(first.service);
  const sdcId = (await first.service.execute({ type: 'registerSdc', guid: 'guid-0000-1111', name: 'host1', nowMs: Date.now() })).id as Id;
  await first.service.execute({ type: 'addMappedSdc', volumeId: volume, sdcId, accessMode: 'ReadWrite', allowMultipleMappings: false });
  t.equal((await limits(first, volume, { sdcId, iopsLimit: 2000, bandwidthLimitInKbps: 10240, iopsBurst: 8000, bandwidthBurstInKbps: 40960, burstSeconds: 30 })).status, 200);
  await first.stop();

  const second = await startMdm(t, dataDir, authDir);
  t.match((await get<RestVolume>(second, `/api/instances/Volume::${volume}`)).mappedSdcInfo?.[0], { limitIops: 2000, limitBwInKbps: 10240, limitIopsBurst: 8000, limitBwBurstInKbps: 40960, limitBurstSeconds: 30 }, 'replayed from the journal');
  t.match(second.service.sdcView(sdcId).volumes[0], { iopsLimit: 2000, iopsBurst: 8000, bandwidthBurstKbps: 40960, burstSeconds: 30 }, 'and sent to the SDC when it calls');
  await second.stop();

  // What an MDM from before bursts journaled: a setMappedSdcLimits with the two limits only.
  {
    const { journal } = await Journal.open<JournalRecord, SystemModel>(dataDir, { log, initialSnapshot: emptyModel(clusterId, 'test') });
    await journal.append({ command: { type: 'setMappedSdcLimits', volumeId: volume, sdcId, iopsLimit: 500, bandwidthLimitKbps: 2048 } });
    await journal.close();
  }
  const third = await startMdm(t, dataDir, authDir);
  t.match((await get<RestVolume>(third, `/api/instances/Volume::${volume}`)).mappedSdcInfo?.[0], { limitIops: 500, limitBwInKbps: 2048, limitIopsBurst: 0, limitBwBurstInKbps: 0, limitBurstSeconds: 0 }, 'the old command replays as no burst');
});
