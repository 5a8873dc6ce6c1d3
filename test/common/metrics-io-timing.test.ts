// Proves the per-device latency counting and what `--metrics off` takes off the data paths
// (docs/metrics.md): a real chunk store on a sparse file counts every call on its device
// (data, metadata, fdatasync) with its latency in the device's IoCounters, and its metrics
// family renders valid Prometheus text (Debian's `promtool check metrics`); with IO timing
// off (setIoTiming(false), what `sds start`/`sdc start --metrics off` do) the same IO through
// the chunk store, through an SDS service (real socket, real wire) and through the SDC's
// volume backend (against one wire peer playing the SDS) is still counted, its histograms
// stay empty, and no clock read is made for it: performance.now is wrapped to record which
// source file called it, and must see no call from the counting code (metrics.ts,
// chunk-store.ts, service.ts, volume-backend.ts) with timing off,
// and some with it on (so the wrapper can see them); the SDS's rebuild throttle still tells
// busy from quiet without the requests' end times. The buffered file IO's own clock reads
// (positional-io.ts, its stall detection) are not the metrics' and are left out.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { sdsClientQuietMs } from '../../src/common/limits.js';
import { MetricsRegistry, ioTiming, setIoTiming } from '../../src/common/metrics.js';
import { ChunkStore, type ChunkKey } from '../../src/sds/chunk-store.js';
import { SdsService } from '../../src/sds/service.js';
import type { SdsState } from '../../src/sds/state.js';
import { VolumeBackend } from '../../src/sdc/volume-backend.js';
import type { SdcVolume } from '../../src/wire/mdm-ops.js';
import { placementGroupOf, type PlacementMap } from '../../src/wire/placement.js';
import { SdsOp, SdsStatus, encodeIo } from '../../src/wire/sds-ops.js';
import { sparseFile } from '../helpers/files.js';
import { run } from '../helpers/processes.js';
import { connectWire, listenWire, makeMap, testClusterId, testPoolId, testSecret } from '../helpers/sds.js';

const MiB = 1024 * 1024;
const log = pino({ level: 'silent' });
const promtool = '/usr/bin/promtool';
const key: ChunkKey = { poolId: testPoolId, vtreeId: '7777000011112222', chunkIndex: 0, generation: 0 };
/** Files whose clock reads are the metrics' (the counting code), by the end of their path. */
const countingFiles = ['/common/metrics.ts', '/sds/chunk-store.ts', '/sdc/volume-backend.ts', '/sds/service.ts'];

/** Wraps performance.now for the test: `reads()` tells how many calls came from the counting code since the last look. */
function watchClock(t: Test): { reads: () => number } {
  const original = performance.now.bind(performance);
  let counted = 0;
  performance.now = (): number => {
    // Frame 0 is "Error", 1 this wrapper, 2 the caller.
    const caller = (new Error().stack ?? '').split('\n')[2] ?? '';
    if (countingFiles.some((file) => caller.includes(file))) counted += 1;
    return original();
  };
  t.teardown(() => {
    performance.now = original;
  });
  return {
    reads: () => {
      const value = counted;
      counted = 0;
      return value;
    },
  };
}

function timingRestored(t: Test): void {
  const before = ioTiming.on;
  t.teardown(() => setIoTiming(before));
}

async function openStore(t: Test): Promise<ChunkStore> {
  const store = await ChunkStore.open([sparseFile(t.testdir(), 'device.img', 64 * MiB)], {
    owner: { clusterId: testClusterId, sdsId: '0a0b0c0d0e0f1011', sdsName: 'sds-1' },
    chunkBytes: MiB,
    force: false,
    log,
    // No background zeroing: every call on the device is one this test made.
    zeroedSlotsReady: 0,
  });
  t.teardown(() => store.close());
  return store;
}

t.test('the chunk store counts each device call with its latency', async (t) => {
  timingRestored(t);
  setIoTiming(true);
  const store = await openStore(t);
  const device = store.devices[0];
  if (device === undefined) throw new Error('no device');
  const before = { write: device.calls.op('write').count, sync: device.calls.op('fdatasync').count };
  await store.write(key, 0, Buffer.alloc(64 * 1024, 1), { fua: true });
  await store.read(key, 0, Buffer.alloc(64 * 1024));
  const write = device.calls.op('write');
  const read = device.calls.op('read');
  const sync = device.calls.op('fdatasync');
  t.ok(write.count > before.write, `device writes counted (${write.count})`);
  t.ok(write.bytes >= 64 * 1024, 'with their bytes: the data at least');
  t.ok(sync.count > before.sync, 'a FUA write made an fdatasync, counted');
  t.equal(sync.bytes, 0, 'a sync moves no bytes');
  t.ok(read.count >= 1 && read.bytes >= 64 * 1024, 'the read of the data');
  for (const [op, counter] of device.calls.byOp) {
    t.equal(counter.timedCount, counter.count, `${op}: every call timed`);
    t.equal(counter.cumulativeBuckets().at(-1), counter.count, `${op}: +Inf holds every call`);
  }
  t.ok(write.sumSeconds > 0, 'time was summed');

  const metrics = new MetricsRegistry('sds', { sds: 'unit' });
  metrics.ioFamilies('meshblock_sds_device_io', 'test device calls', ['device_id', 'path'], () => store.devices.map((each) => ({ labels: { device_id: each.deviceId, path: each.path }, stats: each.calls })));
  const text = await metrics.metrics();
  t.match(text, new RegExp(`^meshblock_sds_device_io_request_duration_seconds_count\\{device_id="${device.deviceId}",path="[^"]+",op="fdatasync"\\} ${sync.count}$`, 'm'), 'the fdatasync histogram');
  t.match(text, /^meshblock_sds_device_io_requests_total\{device_id="[0-9a-f]+",path="[^"]+",op="write"\} [1-9]\d*$/m, 'the write counter');
  await t.test('promtool check metrics', { skip: fs.existsSync(promtool) ? false : `needs ${promtool}` }, async (t) => {
    const checked = await run(promtool, ['check', 'metrics'], { input: text });
    t.equal(checked.code, 0, `promtool check metrics: ${checked.stdout}${checked.stderr}`);
  });
});

t.test('timing off: the chunk store counts without reading the clock', async (t) => {
  timingRestored(t);
  setIoTiming(true);
  const store = await openStore(t);
  const device = store.devices[0];
  if (device === undefined) throw new Error('no device');
  const clock = watchClock(t);
  await store.write(key, 0, Buffer.alloc(4096, 2), { fua: true });
  t.ok(clock.reads() > 0, 'with timing on, the counting reads the clock (the wrapper sees it)');

  setIoTiming(false);
  const write = device.calls.op('write');
  const before = { count: write.count, timed: write.timedCount, sum: write.sumSeconds, syncs: device.calls.op('fdatasync').count };
  await store.write(key, 4096, Buffer.alloc(4096, 3), { fua: true });
  await store.read(key, 0, Buffer.alloc(8192));
  await store.flush();
  t.equal(clock.reads(), 0, 'no clock read by the counting code');
  t.ok(write.count > before.count, 'the writes are still counted');
  t.ok(device.calls.op('fdatasync').count > before.syncs, 'and the syncs');
  t.equal(write.timedCount, before.timed, 'not in the histogram');
  t.equal(write.sumSeconds, before.sum, 'no time summed');
  t.equal(write.cumulativeBuckets().at(-1), before.timed, '+Inf is the timed count');
});

t.test('timing off: the SDC volume backend counts without reading the clock', async (t) => {
  timingRestored(t);
  setIoTiming(true);
  const sdsId = '5d50000000000001';
  // A stand-in SDS on a real socket, and the SDC's wire peer to it.
  const address = await listenWire(t, 'sds', () => undefined, (op) => ({ status: SdsStatus.Ok, payload: op === SdsOp.Read ? Buffer.alloc(4096, 7) : Buffer.alloc(0) }));
  const peer = await connectWire(t, address, { role: 'sdc' });
  const map = makeMap(5, [{ sdsId, address: '127.0.0.1:1' }], { pgCount: 1, mirrored: false });
  const volume: SdcVolume = { id: '00000000000000b1', name: 'vol1', vtreeId: '00000000000000c1', generation: 0, poolId: testPoolId, sizeBytes: 4 * MiB, chunkBytes: MiB, accessMode: 'ReadWrite', exclusive: false, iopsLimit: 0, bandwidthLimitKbps: 0 };
  const backend = await VolumeBackend.open(volume, { map: () => map, refreshView: async () => undefined, peer: async () => peer }, log);
  const clock = watchClock(t);
  await backend.write(0, Buffer.alloc(4096, 1), { fua: false });
  await backend.read(0, Buffer.alloc(4096));
  t.ok(clock.reads() >= 4, 'with timing on, two clock reads per request');
  const write = backend.io.op('write');
  const read = backend.io.op('read');
  t.equal(write.timedCount, 1);
  t.equal(read.timedCount, 1);

  setIoTiming(false);
  await backend.write(4096, Buffer.alloc(4096, 1), { fua: false });
  await backend.read(4096, Buffer.alloc(4096));
  t.equal(clock.reads(), 0, 'no clock read by the counting code');
  t.same([write.count, write.bytes, read.count, read.bytes], [2, 8192, 2, 8192], 'still counted, with their bytes');
  t.same([write.timedCount, read.timedCount], [1, 1], 'the histograms only hold the timed ones');
});

t.test('timing off: the SDS service counts client IO without reading the clock', async (t) => {
  timingRestored(t);
  setIoTiming(true);
  const dir = t.testdir();
  const sdsId = randomBytes(8).toString('hex');
  const chunkBytes = MiB;
  const store = await ChunkStore.open([sparseFile(dir, 'sds.img', 32 * MiB)], { owner: { clusterId: testClusterId, sdsId, sdsName: 'sds1' }, chunkBytes, force: false, log, zeroedSlotsReady: 0 });
  const dataDir = path.join(dir, 'sds-data');
  fs.mkdirSync(dataDir);
  const state: SdsState = { clusterId: testClusterId, sdsId, name: 'sds1', chunkBytes, map: null, reservations: {}, devicePaths: [] };
  const service = new SdsService({ identity: { clusterId: testClusterId, sdsId, name: 'sds1' }, secret: Buffer.from(testSecret), store, state, dataDir, log, payloadChecksums: false });
  const bound = await service.listen('127.0.0.1', 0);
  t.teardown(async () => {
    await service.close();
    await store.close();
  });
  const address = `127.0.0.1:${bound.port}`;
  const peer = await connectWire(t, address);
  const pgCount = 4;
  const map: PlacementMap = { epoch: 1, sds: { [sdsId]: { address } }, pools: { [testPoolId]: { chunkBytes, groups: Array.from({ length: pgCount }, () => ({ primary: sdsId, secondary: null })) } } };
  const setMap = await peer.request(SdsOp.SetMap, Buffer.from(JSON.stringify(map)));
  t.equal(setMap.status, SdsStatus.Ok, 'the map is taken');
  const vtreeId = '1111222233334444';
  const ioArgs = (chunkIndex: number, lengthBytes: number): Parameters<typeof encodeIo>[0] => ({ poolId: testPoolId, vtreeId, pgIndex: placementGroupOf(vtreeId, chunkIndex, pgCount), chunkIndex, generation: 0, offsetBytes: 0, lengthBytes, flags: 0 });
  const writeAndRead = async (chunkIndex: number): Promise<void> => {
    const wrote = await peer.request(SdsOp.Write, encodeIo(ioArgs(chunkIndex, 4096), Buffer.alloc(4096, 5)), { epoch: 1 });
    t.equal(wrote.status, SdsStatus.Ok, `write to chunk ${chunkIndex}`);
    const read = await peer.request(SdsOp.Read, encodeIo(ioArgs(chunkIndex, 4096)), { epoch: 1 });
    t.equal(read.status, SdsStatus.Ok, `read of chunk ${chunkIndex}`);
  };
  const clock = watchClock(t);
  await writeAndRead(0);
  t.ok(clock.reads() >= 4, 'with timing on, the SDS reads the clock for its counting');
  const write = service.io.op('write');
  const read = service.io.op('read');
  t.same([write.timedCount, read.timedCount], [1, 1]);

  setIoTiming(false);
  await writeAndRead(1);
  t.equal(clock.reads(), 0, 'no clock read by the counting code');
  t.same([write.count, write.bytes, read.count, read.bytes], [2, 8192, 2, 8192], 'still counted, with their bytes');
  t.same([write.timedCount, read.timedCount], [1, 1], 'the histograms only hold the timed ones');

  // The rebuild throttle's "clients busy" without end times: the first look after IO ended
  // counts as its end; quiet once sdsClientQuietMs has passed without more IO. (Reached
  // through the rebuild source's host: the service gives it nothing else to look with.)
  const host = (service as unknown as { rebuilds: { host: { isClientBusy(): boolean } } }).rebuilds.host;
  await sleep(sdsClientQuietMs + 50);
  await writeAndRead(2);
  t.equal(host.isClientBusy(), true, 'busy at the first look after client IO, without its end time');
  await sleep(sdsClientQuietMs + 50);
  t.equal(host.isClientBusy(), false, `quiet ${sdsClientQuietMs} ms after that look`);
  setIoTiming(true);
  await writeAndRead(3);
  t.equal(host.isClientBusy(), true, 'with timing: busy after client IO');
  await sleep(sdsClientQuietMs + 50);
  t.equal(host.isClientBusy(), false, 'and quiet after');
});
