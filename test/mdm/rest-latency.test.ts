// Proves the MDM's half of client latency (docs/rest-statistics.md: userDataSdcReadLatency,
// userDataSdcWriteLatency): a real MdmService and its REST API on real sockets, and a wire
// client registered as an SDC sending heartbeats with cumulative read/write counts and latency
// sums, as `sdc start` does (src/sdc/sdc.ts, qosStats). Checked: before two heartbeats the
// counters are ScaleIO's idle Bwc (numSeconds 0); after, System, Volume and Sdc answer a Bwc
// whose totalWeightInKb / numOccured is the mean latency in µs of the IO between the two
// heartbeats, and querySelectedStatistics picks them; entries without latency (an older SDC)
// or with bad values are dropped without refusing the heartbeat; counters that went back (the
// SDC restarted) give no window rather than a negative one; a disconnected SDC is forgotten.
// Also the pure part (src/mdm/sdc-latency.ts) on its own, with time given.

import * as fs from 'node:fs';
import * as net from 'node:net';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { GiB } from '../../src/common/units.js';
import { AdminAuth } from '../../src/mdm/auth.js';
import type { Id } from '../../src/mdm/model.js';
import { RestApi } from '../../src/mdm/rest-api.js';
import { SdcLatencyWindows, latencyWindow } from '../../src/mdm/sdc-latency.js';
import { MdmService } from '../../src/mdm/service.js';
import { ensureSelfSignedCertificate } from '../../src/mdm/tls.js';
import { MdmOp, type SdcView, type VolumeQosStats } from '../../src/wire/mdm-ops.js';
import { WirePeer } from '../../src/wire/peer.js';
import { SdsStatus } from '../../src/wire/sds-ops.js';
import { basic, call, testPassword } from '../helpers/rest.js';

const clusterId = '0123456789abcdef';
const secret = Buffer.from('a test cluster secret, long enough');
const log = pino({ level: process.env['TEST_LOG_LEVEL'] ?? 'silent' });

interface Bwc {
  numSeconds: number;
  totalWeightInKb: number;
  numOccured: number;
}

function stats(volumeId: string, latency: Partial<VolumeQosStats>): VolumeQosStats {
  return { volumeId, iopsLimit: 0, bandwidthLimitKbps: 0, requests: 0, bytes: 0, throttledRequests: 0, throttledMs: 0, waiting: 0, ...latency };
}

t.test('latency windows from cumulative samples, time given', async (t) => {
  const windows = new SdcLatencyWindows();
  windows.onHeartbeat('sdc1', 10_000, [stats('v1', { readsDone: 1000, readLatencyUsSum: 250_000, writesDone: 10, writeLatencyUsSum: 5_000 })]);
  t.equal(windows.window('sdc1', 'v1'), undefined, 'one heartbeat: no window yet');
  windows.onHeartbeat('sdc1', 12_000, [stats('v1', { readsDone: 1400, readLatencyUsSum: 370_000, writesDone: 10, writeLatencyUsSum: 5_000 })]);
  t.same(windows.window('sdc1', 'v1'), { seconds: 2, reads: 400, readLatencyUsSum: 120_000, writes: 0, writeLatencyUsSum: 0 }, 'the difference of the last two, over their 2 s');
  windows.onHeartbeat('sdc1', 13_000, [stats('v1', { readsDone: 5, readLatencyUsSum: 900, writesDone: 0, writeLatencyUsSum: 0 })]);
  t.equal(windows.window('sdc1', 'v1'), undefined, 'counters that went back (the SDC restarted): no window, never a negative one');
  windows.onHeartbeat('sdc1', 14_000, [stats('v1', { readsDone: 15, readLatencyUsSum: 1900, writesDone: 0, writeLatencyUsSum: 0 })]);
  t.same(windows.window('sdc1', 'v1'), { seconds: 1, reads: 10, readLatencyUsSum: 1000, writes: 0, writeLatencyUsSum: 0 }, 'and one from the new counters on');
  windows.onHeartbeat('sdc1', 15_000, [stats('v1', {})]);
  t.equal(windows.window('sdc1', 'v1'), undefined, 'an entry without latency (an SDC not timing IO) drops the volume');
  windows.onHeartbeat('sdc1', 16_000, [stats('v1', { readsDone: 20, readLatencyUsSum: 2000, writesDone: 0, writeLatencyUsSum: 0 })]);
  windows.onHeartbeat('sdc1', 17_000, [stats('v1', { readsDone: 30, readLatencyUsSum: 3000, writesDone: 0, writeLatencyUsSum: 0 })]);
  t.ok(windows.window('sdc1', 'v1'), 'two samples again: a window');
  windows.forget('sdc1');
  t.equal(windows.window('sdc1', 'v1'), undefined, 'a forgotten SDC starts over');
  const sample = { atMs: 1000, readsDone: 1, readLatencyUsSum: 1, writesDone: 1, writeLatencyUsSum: 1 };
  t.equal(latencyWindow(sample, sample), null, 'no time passed: no window');
});

/** A real MdmService and REST API, logged in; a pool on three registered SDSs and volume vol1. */
async function startMdm(t: Test): Promise<{ service: MdmService; wirePort: number; api: { url: string; ca: Buffer }; token: string; volume: Id }> {
  const dir = t.testdir();
  fs.mkdirSync(`${dir}/auth`, { recursive: true });
  const service = await MdmService.open({ dataDir: `${dir}/mdm`, clusterId, systemName: 'test', secret, log });
  const wire = await service.listen('127.0.0.1', 0);
  const auth = await AdminAuth.initialize(`${dir}/auth`, testPassword, { scryptCost: 1024 });
  const certificate = ensureSelfSignedCertificate(`${dir}/auth`);
  const rest = new RestApi({ controller: service, log, auth, tls: { cert: certificate.cert, key: certificate.key } });
  const address = await rest.listen('127.0.0.1', 0);
  t.teardown(async () => {
    await rest.close();
    await service.close();
  });
  const api = { url: `https://127.0.0.1:${address.port}`, ca: certificate.cert };
  const login = await call(api, 'GET', '/api/login', { authorization: basic('admin', testPassword) });
  if (login.status !== 200) throw new Error(`login failed: ${login.text}`);
  const pd = (await service.execute({ type: 'addProtectionDomain', name: 'pd1' })).id as Id;
  const pool = (await service.execute({ type: 'addStoragePool', protectionDomainId: pd, name: 'sp1', volumeGranularityBytes: GiB, pgCount: 16 })).id as Id;
  for (let index = 0; index < 3; index++) {
    const sdsId = (0x5d5000000000 + index).toString(16).padStart(16, '0');
    await service.execute({ type: 'registerSds', sdsId, name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, nowMs: Date.now() });
    await service.execute({ type: 'addSds', sdsId, protectionDomainId: pd, faultSetId: null });
    await service.execute({ type: 'addDevice', deviceId: (0xde7000000000 + index).toString(16).padStart(16, '0'), sdsId, storagePoolId: pool, path: '/dev/sdb', name: null, capacityBytes: 100 * GiB });
  }
  const volume = (await service.execute({ type: 'addVolume', storagePoolId: pool, name: 'vol1', sizeBytes: GiB, volumeType: 'ThinProvisioned', nowMs: Date.now() })).id as Id;
  return { service, wirePort: wire.port, api, token: login.body as string, volume };
}

/** A wire client registered as an SDC, sending heartbeats with what it is given. */
async function fakeSdc(t: Test, port: number): Promise<{ id: Id; beat: (qos: unknown) => Promise<void>; peer: WirePeer }> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const peer = await WirePeer.connect(socket, { clusterId, secret, role: 'sdc', name: 'test-sdc', log, onRequest: async () => ({ status: SdsStatus.Ok }) });
  t.teardown(() => peer.destroy());
  const registered = await peer.request(MdmOp.RegisterSdc, Buffer.from(JSON.stringify({ guid: '0123abcd-0000-1111', name: 'host1' })));
  if (registered.status !== SdsStatus.Ok) throw new Error(`registration refused: ${registered.payload.toString()}`);
  const beat = async (qos: unknown): Promise<void> => {
    const reply = await peer.request(MdmOp.Heartbeat, Buffer.from(JSON.stringify({ openVolumes: [], qos })));
    if (reply.status !== SdsStatus.Ok) throw new Error('heartbeat refused');
  };
  return { id: (JSON.parse(registered.payload.toString()) as SdcView).sdcId, beat, peer };
}

t.test('the SDC heartbeats\' latency in System, Volume and Sdc statistics, ScaleIO\'s shape', async (t) => {
  const mdm = await startMdm(t);
  const sdc = await fakeSdc(t, mdm.wirePort);
  t.equal((await call(mdm.api, 'POST', `/api/instances/Volume::${mdm.volume}/action/addMappedSdc`, { token: mdm.token, body: { sdcId: sdc.id } })).status, 200);
  const statistics = async (path: string): Promise<Record<string, Bwc>> => {
    const reply = await call(mdm.api, 'GET', `${path}/relationships/Statistics`, { token: mdm.token });
    if (reply.status !== 200) throw new Error(`${path}: ${reply.status} ${reply.text}`);
    return reply.body as Record<string, Bwc>;
  };
  const idle = { numSeconds: 0, totalWeightInKb: 0, numOccured: 0 };
  t.match(await statistics(`/api/instances/System::${clusterId}`), { userDataSdcReadLatency: idle, userDataSdcWriteLatency: idle }, 'no heartbeat yet: idle counters (numSeconds 0), not a refusal');

  const latency = (readsDone: number, readLatencyUsSum: number, writesDone: number, writeLatencyUsSum: number): Partial<VolumeQosStats> => ({ readsDone, readLatencyUsSum, writesDone, writeLatencyUsSum });
  await sdc.beat([stats(mdm.volume, latency(1_000, 300_000, 500, 1_000_000))]);
  t.match(await statistics(`/api/instances/Volume::${mdm.volume}`), { userDataSdcReadLatency: idle }, 'one heartbeat: no window yet');
  await new Promise((resolve) => setTimeout(resolve, 200));
  // Between the two: 10,000 reads at 250 µs, 5,000 writes at 2 ms. The rate depends on the
  // time between the heartbeats (the MDM's clock); the mean does not.
  await sdc.beat([stats(mdm.volume, latency(11_000, 2_800_000, 5_500, 11_000_000))]);
  for (const path of [`/api/instances/System::${clusterId}`, `/api/instances/Volume::${mdm.volume}`, `/api/instances/Sdc::${sdc.id}`]) {
    const reply = await statistics(path);
    const read = reply['userDataSdcReadLatency'] as Bwc;
    const write = reply['userDataSdcWriteLatency'] as Bwc;
    t.equal(read.numSeconds, 1, `${path}: one second of the rate, as the other Bwcs`);
    t.ok(read.numOccured > 0 && write.numOccured > 0, `${path}: IO counted (${read.numOccured} reads/s, ${write.numOccured} writes/s)`);
    t.ok(Math.abs(read.totalWeightInKb / read.numOccured - 250) < 2, `${path}: mean read latency 250 µs (${(read.totalWeightInKb / read.numOccured).toFixed(2)})`);
    t.ok(Math.abs(write.totalWeightInKb / write.numOccured - 2000) < 2, `${path}: mean write latency 2000 µs (${(write.totalWeightInKb / write.numOccured).toFixed(2)})`);
    t.ok(Math.abs(read.numOccured / write.numOccured - 2) < 0.01, `${path}: twice as many reads as writes in the window`);
  }
  const selected = await call(mdm.api, 'POST', '/api/instances/System/action/querySelectedStatistics', { token: mdm.token, body: { properties: ['userDataSdcReadLatency', 'userDataSdcWriteLatency'] } });
  t.equal(selected.status, 200, 'querySelectedStatistics takes them (the dashboard probes with it)');
  t.same(Object.keys(selected.body as object).sort(), ['userDataSdcReadLatency', 'userDataSdcWriteLatency']);

  // Bad or missing latency: the entry's QoS is kept, its latency is not; the heartbeat is not refused.
  await sdc.beat([stats(mdm.volume, { readsDone: -1, readLatencyUsSum: 5, writesDone: 1.5, writeLatencyUsSum: 'x' as unknown as number })]);
  t.match(await statistics(`/api/instances/Volume::${mdm.volume}`), { userDataSdcReadLatency: idle, qosRequests: 0 }, 'bad latency values: dropped, the rest of the entry kept');
  await sdc.beat([stats(mdm.volume, latency(100, 10_000, 0, 0))]);
  await sdc.beat([stats(mdm.volume, latency(50, 9_000, 0, 0))]);
  t.match(await statistics(`/api/instances/Volume::${mdm.volume}`), { userDataSdcReadLatency: idle }, 'counters that went back: no window');

  sdc.peer.destroy();
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.match(await statistics(`/api/instances/System::${clusterId}`), { userDataSdcReadLatency: idle, userDataSdcWriteLatency: idle }, 'a disconnected SDC is forgotten');
});
