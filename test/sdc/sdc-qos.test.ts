// Proves the SDC's side of QoS (docs/qos.md): a real Sdc, in process, registered over real
// sockets with a stand-in MDM (it answers RegisterSdc with a view, records heartbeats, and
// pushes SdcOp.Update when told) and a stand-in SDS that takes every read and write.
// - An update that changes only a volume's limits keeps its export, backend and limiter,
//   and the new limit holds at once for a write already waiting: removing it lets the write
//   go within milliseconds instead of the seconds its debt had left.
// - An export replaced by a resize shares the volume's limiter with the old one, which open
//   connections keep (one limit per volume per SDC, whatever the connections).
// - Unmapping releases waiting requests; mapping again reuses the limiter.
// - Limits the SDC cannot apply (a negative IOPS from a broken MDM) are refused and logged;
//   the previous ones stay and the rest of the view applies.
// - The heartbeat carries every mapped volume's limits and counters.
// - Two SDCs mapping one volume have a limiter each: one in debt does not hold the other.

import { pino } from 'pino';
import t, { type Test } from 'tap';
import { Sdc, type VolumeExport } from '../../src/sdc/sdc.js';
import { MdmOp, SdcOp, type SdcHeartbeat, type SdcView, type SdcVolume } from '../../src/wire/mdm-ops.js';
import type { WirePeer } from '../../src/wire/peer.js';
import type { PlacementMap } from '../../src/wire/placement.js';
import { SdsOp, SdsStatus, decodeIo } from '../../src/wire/sds-ops.js';
import { MiB, listenWire, makeMap, testClusterId, testPoolId, testSecret } from '../helpers/sds.js';

const log = pino({ level: process.env['TEST_LOG_LEVEL'] ?? 'silent' });
const sdsId = '5d50000000000001';
const volume: SdcVolume = { id: '00000000000000b1', name: 'vol1', vtreeId: '00000000000000c1', generation: 0, poolId: testPoolId, sizeBytes: 8 * MiB, chunkBytes: MiB, accessMode: 'ReadWrite', exclusive: false, iopsLimit: 0, bandwidthLimitKbps: 0 };


interface World {
  sdc: Sdc;
  mdm: { map: PlacementMap; volumes: SdcVolume[]; heartbeats: SdcHeartbeat[]; peers: WirePeer[] };
  /** Sends every SDC its view now, as the MDM does when it changes. */
  push(): Promise<void>;
  /** Another SDC registered with the same MDM. */
  anotherSdc(): Promise<Sdc>;
}

function exportOf(sdc: Sdc, name: string): VolumeExport {
  const entry = sdc.find(name);
  if (entry === undefined) throw new Error(`no export ${name}`);
  return entry as VolumeExport;
}

async function world(t: Test, volumes: SdcVolume[]): Promise<World> {
  const sdsAddress = await listenWire(t, 'sds', () => undefined, (op, _epoch, payload) => {
    if (op !== SdsOp.Read) return { status: SdsStatus.Ok };
    return { status: SdsStatus.Ok, payload: Buffer.alloc(decodeIo(payload).args.lengthBytes) };
  });
  const mdm: World['mdm'] = { map: makeMap(1, [{ sdsId, address: sdsAddress }], { pgCount: 4, mirrored: false }), volumes, heartbeats: [], peers: [] };
  const view = (): SdcView => ({ sdcId: '5dc0000000000001', name: 'sdc1', map: mdm.map, volumes: mdm.volumes });
  const mdmAddress = await listenWire(
    t,
    'mdm',
    (peer) => mdm.peers.push(peer),
    (op, _epoch, payload) => {
      if (op === MdmOp.RegisterSdc) return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify(view())) };
      if (op === MdmOp.GetMap) return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify(mdm.map)) };
      if (op === MdmOp.Heartbeat) mdm.heartbeats.push(JSON.parse(payload.toString()) as SdcHeartbeat);
      return { status: SdsStatus.Ok };
    },
  );
  let sdcCount = 0;
  const startSdc = async (): Promise<Sdc> => {
    sdcCount += 1;
    const sdc = new Sdc({ clusterId: testClusterId, secret: Buffer.from(testSecret), guid: `0123456789abcde${sdcCount}`, name: `sdc${sdcCount}`, mdmAddresses: [mdmAddress], log });
    t.teardown(() => sdc.close());
    sdc.start();
    await sdc.ready;
    return sdc;
  };
  const sdc = await startSdc();
  return {
    sdc,
    mdm,
    push: async () => {
      for (const peer of mdm.peers) {
        const response = await peer.request(SdcOp.Update, Buffer.from(JSON.stringify(view())));
        if (response.status !== SdsStatus.Ok) throw new Error(`the SDC refused its view: ${response.payload.toString()}`);
      }
    },
    anotherSdc: startSdc,
  };
}

/** Resolves to how long `promise` took, in ms. */
async function timed(promise: Promise<void>): Promise<number> {
  const startedMs = performance.now();
  await promise;
  return performance.now() - startedMs;
}

t.test('a limit-only update keeps the export and sets the limiter live: a waiting write goes when the limit is removed', async (t) => {
  const w = await world(t, [volume]);
  const before = exportOf(w.sdc, 'vol1');
  t.same(before.backend.limiter.limits.iopsLimit, 0, 'mapped without limits');

  w.mdm.volumes = [{ ...volume, bandwidthLimitKbps: 1024 }];
  await w.push();
  const after = exportOf(w.sdc, 'vol1');
  t.equal(after.backend, before.backend, 'the export keeps its QoS backend');
  t.equal(after.volumeBackend, before.volumeBackend, 'and its volume backend: open connections go on');
  t.equal(after.volume.bandwidthLimitKbps, 1024, 'the export describes the new limit');
  t.equal(after.backend.limiter.limits.bandwidthLimitKbps, 1024, 'which the limiter applies');

  // 2 MiB against 1 MiB/s: goes at once (the debt rule); the next write owes ~2 s.
  const firstMs = await timed(after.backend.write(0, Buffer.alloc(2 * MiB), { fua: false }));
  t.ok(firstMs < 1000, `the large write is not held (${firstMs.toFixed(0)} ms)`);
  const waiting = timed(after.backend.write(0, Buffer.alloc(4096), { fua: false }));
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.equal(w.sdc.qosStats()[0]?.waiting, 1, 'the next write waits');
  w.mdm.volumes = [{ ...volume, bandwidthLimitKbps: 0 }];
  const pushedAtMs = performance.now();
  await w.push();
  const waitedMs = await waiting;
  t.ok(waitedMs < 1500, `removing the limit let it go (${waitedMs.toFixed(0)} ms in all, ${(performance.now() - pushedAtMs).toFixed(0)} ms after the update)`);
  t.equal(exportOf(w.sdc, 'vol1').backend, before.backend, 'still the same export');
  const stats = w.sdc.qosStats();
  t.equal(stats.length, 1, 'one mapped volume in the stats');
  t.match(stats[0], { volumeId: volume.id, iopsLimit: 0, bandwidthLimitKbps: 0, requests: 2, bytes: 2 * MiB + 4096, throttledRequests: 1, waiting: 0 }, 'which counted both writes and the one throttled');
  t.ok((stats[0]?.throttledMs ?? 0) >= 150, `and its wait (${stats[0]?.throttledMs} ms)`);
  // Client latency for the MDM (userDataSdc*Latency): the metrics' own counters, below QoS.
  t.match(stats[0], { readsDone: 0, readLatencyUsSum: 0, writesDone: 2 }, 'the heartbeat\'s latency counts: both writes, no reads');
  t.ok((stats[0]?.writeLatencyUsSum ?? 0) > 0, `and their latencies summed (${stats[0]?.writeLatencyUsSum} µs)`);
});

t.test('a resized export shares the limiter with the one open connections keep; unmapping releases waiters; mapping again reuses the limiter', async (t) => {
  const w = await world(t, [{ ...volume, bandwidthLimitKbps: 1024 }]);
  const opened = exportOf(w.sdc, 'vol1');
  w.sdc.attached(opened);
  w.mdm.volumes = [{ ...volume, bandwidthLimitKbps: 1024, sizeBytes: 16 * MiB }];
  await w.push();
  const resized = exportOf(w.sdc, 'vol1');
  t.not(resized.backend, opened.backend, 'the resize made a new export');
  t.equal(resized.backend.limiter, opened.backend.limiter, 'over the same limiter: one limit for the volume on this SDC');

  await opened.backend.write(0, Buffer.alloc(2 * MiB), { fua: false }); // the open connection runs into debt
  const waiting = timed(resized.backend.write(0, Buffer.alloc(4096), { fua: false }));
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.equal(resized.backend.limiter.stats().waiting, 1, "a new connection's write waits for the old connection's debt");
  w.mdm.volumes = [];
  await w.push();
  t.ok((await waiting) < 1500, 'unmapping let it go');
  t.equal(w.sdc.find('vol1'), undefined, 'the export is gone');
  t.same(w.sdc.qosStats(), [], 'and no longer reported');

  w.mdm.volumes = [{ ...volume, iopsLimit: 500 }];
  await w.push();
  const again = exportOf(w.sdc, 'vol1');
  t.equal(again.backend.limiter, opened.backend.limiter, 'mapped again while a connection is open: the same limiter');
  t.equal(opened.backend.limiter.limits.iopsLimit, 500, 'with the new limit, for the open connection too');
  w.sdc.detached(opened);
});

t.test('limits the SDC cannot apply are logged and the previous ones stay; the heartbeat carries every mapped volume', async (t) => {
  const other: SdcVolume = { ...volume, id: '00000000000000b2', name: 'vol2', vtreeId: '00000000000000c2' };
  const w = await world(t, [{ ...volume, iopsLimit: 100 }, other]);
  w.mdm.volumes = [{ ...volume, iopsLimit: -5 }, { ...other, iopsLimit: 200, iopsBurst: 400, burstSeconds: 10 }];
  await w.push();
  t.equal(exportOf(w.sdc, 'vol1').backend.limiter.limits.iopsLimit, 100, 'vol1 keeps its limit');
  t.same(exportOf(w.sdc, 'vol2').backend.limiter.limits, { iopsLimit: 200, bandwidthLimitKbps: 0, iopsBurst: 400, bandwidthBurstKbps: 0, burstSeconds: 10 }, 'vol2 takes its new limits, burst included');

  const heartbeatsBefore = w.mdm.heartbeats.length;
  await exportOf(w.sdc, 'vol2').backend.read(0, Buffer.alloc(8192));
  const deadlineMs = Date.now() + 5000;
  while (w.mdm.heartbeats.length <= heartbeatsBefore + 1 && Date.now() < deadlineMs) await new Promise((resolve) => setTimeout(resolve, 100));
  const heartbeat = w.mdm.heartbeats.at(-1);
  t.ok(heartbeat !== undefined && Array.isArray(heartbeat.qos), 'a heartbeat came, with qos');
  const byVolume = new Map((heartbeat?.qos ?? []).map((entry) => [entry.volumeId, entry]));
  t.match(byVolume.get(volume.id), { iopsLimit: 100, bandwidthLimitKbps: 0, requests: 0, throttledRequests: 0, waiting: 0 }, 'vol1: its limit, nothing counted');
  t.match(byVolume.get(other.id), { iopsLimit: 200, requests: 1, bytes: 8192, throttledRequests: 0, throttledMs: 0, waiting: 0 }, 'vol2: its limit and the read');
});

t.test('two SDCs mapping one volume have a limiter each', async (t) => {
  const w = await world(t, [{ ...volume, bandwidthLimitKbps: 1024 }]);
  const second = await w.anotherSdc();
  await exportOf(w.sdc, 'vol1').backend.write(0, Buffer.alloc(4 * MiB), { fua: false }); // the first SDC owes ~4 s
  const elapsedMs = await timed(exportOf(second, 'vol1').backend.write(0, Buffer.alloc(4096), { fua: false }));
  t.ok(elapsedMs < 1000, `the second SDC's write is not held by the first's debt (${elapsedMs.toFixed(0)} ms)`);
  t.equal(exportOf(w.sdc, 'vol1').backend.limiter.stats().requests, 1, 'each counts its own requests');
  t.equal(exportOf(second, 'vol1').backend.limiter.stats().requests, 1, 'each counts its own requests');
  const held = exportOf(w.sdc, 'vol1').backend.write(0, Buffer.alloc(4096), { fua: false });
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.equal(exportOf(w.sdc, 'vol1').backend.limiter.stats().waiting, 1, 'while the first SDC still holds its own');
  w.sdc.close(); // closing releases what waits
  await t.resolves(held, 'and closing the SDC lets it go');
});
