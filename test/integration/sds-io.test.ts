// Proves the SDS data path on real processes: `meshblock sds start` on sparse files and on
// a loop (block) device, page cache and direct IO (`--io direct` on a loop device with
// 4096-byte sectors and the loop driver's direct IO on: unaligned client IO is merged into
// whole sectors by the SDS), driven over the wire by a test client with an explicit placement
// map. Written data reads back; never-written ranges read as zeros and take no space
// (thin); TRIM frees whole chunks and zeroes parts; IO with a stale epoch or bad arguments
// is refused with its status; a restart keeps data and map; writes are mirrored to the
// secondary (checked by swapping the roles and reading the other copy) and fail when the
// secondary is gone.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import t, { type Test } from 'tap';
import { SdsOp, SdsStatus, encodeIo, encodeReserve, type IoArgs } from '../../src/wire/sds-ops.js';
import { placementGroupOf } from '../../src/wire/placement.js';
import { loopDevice, sparseFile } from '../helpers/files.js';
import { loopDevices, loopDevicesUnavailable, type LoopDevice } from '../helpers/loop-devices.js';
import { run, runMeshblock } from '../helpers/processes.js';
import { MiB, SdsReplyError, TestVolumeClient, connectWire, getStats, makeMap, setMap, startSds, testPoolId, type SdsHandle, type SdsIoMode } from '../helpers/sds.js';

const vtreeId = '1111222233334444';

function allocatedBytes(file: string): number {
  return fs.statSync(file).blocks * 512;
}

t.test('one SDS on a file: write, read, zeros, trim, refusals, restart', async (t) => {
  const dir = t.testdir();
  const device = sparseFile(dir, 'dev0.img', 256 * MiB);
  let sds = await startSds(t, { dir, name: 'sds-a', devices: [device] });
  let peer = await connectWire(t, sds.address);

  const unmapped = await peer.request(SdsOp.Read, encodeIo({ poolId: testPoolId, vtreeId, pgIndex: 0, chunkIndex: 0, generation: 0, offsetBytes: 0, lengthBytes: 512, flags: 0 }), { epoch: 1 });
  t.equal(unmapped.status, SdsStatus.StaleEpoch, 'no map yet: every epoch is stale');

  const map = makeMap(1, [sds]);
  t.equal((await setMap(peer, map)).status, SdsStatus.Ok);
  const volume = new TestVolumeClient(map, new Map([[sds.sdsId, peer]]), vtreeId);
  const baseline = allocatedBytes(device);

  // Writes that cross chunk boundaries, at 512-byte granularity.
  const first = randomBytes(3 * MiB + 512);
  await volume.write(MiB - 1024, first);
  const second = randomBytes(4096);
  await volume.write(10 * MiB + 512, second);
  t.ok((await volume.read(MiB - 1024, first.length)).equals(first), 'data across 5 chunks reads back');
  t.ok((await volume.read(10 * MiB + 512, 4096)).equals(second), 'a small write inside a chunk reads back');
  t.ok((await volume.read(10 * MiB, 512)).equals(Buffer.alloc(512)), 'the unwritten start of a written chunk reads as zeros');
  t.ok((await volume.read(50 * MiB, MiB)).equals(Buffer.alloc(MiB)), 'a never-written chunk reads as zeros');

  let stats = await getStats(peer);
  t.equal(stats.devices[0]?.usedBytes, 5 * MiB, 'thin: exactly the 5 chunks written hold slots');
  t.ok(allocatedBytes(device) - baseline <= 5 * MiB + 64 * 1024, 'and the device file grew by no more than that');
  t.ok(stats.devices[0]?.writes === 5 && (stats.devices[0]?.reads ?? 0) >= 5, 'IO counters count per chunk piece');

  // TRIM: a whole chunk gives its slot back; a part reads as zeros afterwards.
  await volume.trim(2 * MiB, MiB);
  await volume.trim(10 * MiB + 1024, 1024);
  stats = await getStats(peer);
  t.equal(stats.devices[0]?.usedBytes, 4 * MiB, 'a trimmed whole chunk is freed');
  t.ok((await volume.read(2 * MiB, MiB)).equals(Buffer.alloc(MiB)), 'and reads as zeros');
  const afterPartial = await volume.read(10 * MiB + 512, 4096);
  t.ok(afterPartial.subarray(0, 512).equals(second.subarray(0, 512)), 'bytes before a partial trim are kept');
  t.ok(afterPartial.subarray(512, 1536).equals(Buffer.alloc(1024)), 'the trimmed part reads as zeros');
  t.ok(afterPartial.subarray(1536).equals(second.subarray(1536)), 'bytes after it are kept');

  // Refusals, each with its status; the connection carries on after every one.
  const args = volume.pieces(0, 512)[0]?.args as IoArgs;
  const stale = await peer.request(SdsOp.Read, encodeIo(args), { epoch: 7 });
  t.equal(stale.status, SdsStatus.StaleEpoch, 'another epoch is refused');
  t.equal(stale.payload.readBigUInt64BE(0), 1n, 'and the reply names the SDS epoch');
  const misaligned = await peer.request(SdsOp.Read, Buffer.concat([encodeIo({ ...args, lengthBytes: 100 })]), { epoch: 1 });
  t.equal(misaligned.status, SdsStatus.InvalidArgument, 'a length that is not a multiple of 512 is refused');
  const pastChunk = await peer.request(SdsOp.Read, encodeIo({ ...args, offsetBytes: MiB - 512, lengthBytes: 1024 }), { epoch: 1 });
  t.equal(pastChunk.status, SdsStatus.InvalidArgument, 'a range past the chunk is refused');
  const wrongGroup = await peer.request(SdsOp.Read, encodeIo({ ...args, pgIndex: (args.pgIndex + 1) % 64 }), { epoch: 1 });
  t.equal(wrongGroup.status, SdsStatus.InvalidArgument, 'a chunk sent with the wrong placement group is refused');
  const shortWrite = await peer.request(SdsOp.Write, encodeIo({ ...args, lengthBytes: 4096 }, Buffer.alloc(512)), { epoch: 1 });
  t.equal(shortWrite.status, SdsStatus.InvalidArgument, 'a write whose data is shorter than its length is refused');
  const again = await setMap(peer, map);
  t.equal(again.status, SdsStatus.Ok, 'the same epoch again is accepted (idempotent)');
  const sdcMap = await (await connectWire(t, sds.address, { role: 'sdc' })).request(SdsOp.SetMap, Buffer.from(JSON.stringify(map)));
  t.equal(sdcMap.status, SdsStatus.InvalidArgument, 'an SDC may not install maps');
  const badMap = await peer.request(SdsOp.SetMap, Buffer.from(JSON.stringify({ ...map, epoch: 2, pools: { [testPoolId]: { chunkBytes: 2 * MiB, groups: map.pools[testPoolId]?.groups } } })));
  t.equal(badMap.status, SdsStatus.InvalidArgument, 'a map with another chunk size than the SDS is refused');
  t.match(badMap.payload.toString(), /chunkBytes/, 'naming the field');

  // Thick reservations hold slots back from thin writes.
  const reserve = await peer.request(SdsOp.Reserve, encodeReserve({ vtreeId: 'ffff000000000000', chunkCount: 240 }));
  t.equal(reserve.status, SdsStatus.Ok, 'a reservation that fits is taken');
  t.equal((await getStats(peer)).reservedBytes, 240 * MiB);
  const tooBig = await peer.request(SdsOp.Reserve, encodeReserve({ vtreeId: 'eeee000000000000', chunkCount: 100 }));
  t.equal(tooBig.status, SdsStatus.NoSpace, 'one that does not fit beside it is refused');
  const thin = new TestVolumeClient(map, new Map([[sds.sdsId, peer]]), 'dddd000000000000');
  const thinWrites = Array.from({ length: 20 }, (_, index) => thin.write(index * MiB, Buffer.alloc(512, 1)).then(() => 'ok', (err: SdsReplyError) => err.status));
  const outcomes = await Promise.all(thinWrites);
  const slotCount = (stats.devices[0]?.totalBytes ?? 0) / MiB;
  t.equal(outcomes.filter((outcome) => outcome === 'ok').length, slotCount - 4 - 240, 'thin writes take only the unreserved free slots');
  t.ok(outcomes.includes(SdsStatus.NoSpace), 'and the rest fail with NoSpace');
  const thick = new TestVolumeClient(map, new Map([[sds.sdsId, peer]]), 'ffff000000000000');
  await thick.write(0, randomBytes(4096));
  t.pass('the thick volume tree still writes into its reservation');

  const duplicate = await runMeshblock(['sds', 'start', '--name', 'sds-a', '--device', device, '--data-dir', sds.dataDir, '--secret-file', `${dir}/cluster.secret`, '--listen', '127.0.0.1:0']);
  t.equal(duplicate.code, 1, 'a second SDS on the same data directory is refused');
  t.match(duplicate.stderr, /is in use by process \d+/);

  // A restart (SIGTERM) keeps data, map and reservations.
  t.equal(await sds.stop(), 0, 'SIGTERM exits cleanly');
  sds = await startSds(t, { dir, name: 'sds-a', devices: [device] });
  peer = await connectWire(t, sds.address);
  const restarted = new TestVolumeClient(map, new Map([[sds.sdsId, peer]]), vtreeId);
  t.ok((await restarted.read(MiB - 1024, MiB)).equals(first.subarray(0, MiB)), 'data survives a restart, served from the remembered map');
  t.ok((await restarted.read(2 * MiB, MiB)).equals(Buffer.alloc(MiB)), 'a freed chunk stays free');
  t.equal((await getStats(peer)).reservedBytes, 239 * MiB, 'the reservation is remembered (one slot of it now used)');
});

t.test('an SDS on a loop block device', async (t) => {
  const dir = t.testdir();
  const loop = await loopDevice(t, sparseFile(dir, 'loop.img', 128 * MiB));
  if ('unavailable' in loop) {
    t.skip(loop.unavailable, () => undefined);
    return;
  }
  await blockDeviceCase(t, dir, loop.device);
});

t.test('an SDS on a loop block device with direct IO (4096-byte sectors)', async (t) => {
  const unavailable = loopDevicesUnavailable();
  if (unavailable !== null) {
    t.skip(unavailable, () => undefined);
    return;
  }
  const dir = t.testdir();
  const [loop] = await loopDevices(t, dir, { count: 1, sizeBytes: 128 * MiB, sectorBytes: [4096] });
  await blockDeviceCase(t, dir, (loop as LoopDevice).device, 'direct');
});

/** Unaligned writes and reads, zeros, trim and capacity on a block device (run with `--io io` when given). */
async function blockDeviceCase(t: Test, dir: string, device: string, io?: SdsIoMode): Promise<void> {
  const sds = await startSds(t, { dir, name: 'sds-blk', devices: [device], ...(io !== undefined ? { io } : {}) });
  const peer = await connectWire(t, sds.address);
  if (io !== undefined) t.equal((await getStats(peer)).devices[0]?.io, io, `the device runs in ${io} IO`);
  const map = makeMap(1, [sds]);
  await setMap(peer, map);
  const volume = new TestVolumeClient(map, new Map([[sds.sdsId, peer]]), vtreeId);
  const data = randomBytes(2 * MiB);
  await volume.write(512, data);
  await volume.flush();
  t.ok((await volume.read(512, data.length)).equals(data), 'data reads back from the block device');
  t.ok((await volume.read(0, 512)).equals(Buffer.alloc(512)), 'the unwritten head of a zeroed slot reads as zeros');
  await volume.trim(MiB, MiB);
  t.ok((await volume.read(MiB, MiB)).equals(Buffer.alloc(MiB)), 'a trimmed chunk reads as zeros');
  // Part of a chunk, at odd sectors (7 sectors from sector 3): zeroed in place, neighbours kept.
  await volume.trim(3 * 512, 7 * 512);
  data.fill(0, MiB - 512, 2 * MiB - 512);
  data.fill(0, 3 * 512 - 512, 10 * 512 - 512);
  t.ok((await volume.read(512, data.length)).equals(data), 'a trimmed part of a chunk at odd sectors reads as zeros, the rest as written');
  const stats = await getStats(peer);
  t.equal(stats.devices[0]?.state, 'normal', 'the device is still healthy');
  t.equal(stats.devices[0]?.totalBytes, 127 * MiB, 'capacity is the slots after the metadata area');
}

t.test('two SDSs mirror every write; a lost secondary fails the write', async (t) => {
  const dir = t.testdir();
  const a = await startSds(t, { dir, name: 'sds-a', devices: [sparseFile(dir, 'a.img', 128 * MiB)] });
  const b = await startSds(t, { dir, name: 'sds-b', devices: [sparseFile(dir, 'b.img', 128 * MiB)] });
  const peerA = await connectWire(t, a.address);
  const peerB = await connectWire(t, b.address);
  const map = makeMap(1, [a, b], { pgCount: 16 });
  for (const peer of [peerA, peerB]) t.equal((await setMap(peer, map)).status, SdsStatus.Ok);
  const volume = new TestVolumeClient(map, new Map([[a.sdsId, peerA], [b.sdsId, peerB]]), vtreeId);
  const data = randomBytes(16 * MiB);
  await volume.write(0, data);
  await Promise.all([volume.write(MiB, Buffer.alloc(4096, 7)), volume.write(MiB + 8192, Buffer.alloc(4096, 9))]);
  data.fill(7, MiB, MiB + 4096);
  data.fill(9, MiB + 8192, MiB + 12288);
  await volume.trim(5 * MiB, MiB);
  data.fill(0, 5 * MiB, 6 * MiB);
  await volume.flush();
  t.ok((await volume.read(0, data.length)).equals(data), 'reads from the primaries match');
  const usedA = (await getStats(peerA)).devices[0]?.usedBytes ?? 0;
  const usedB = (await getStats(peerB)).devices[0]?.usedBytes ?? 0;
  t.equal(usedA + usedB, 2 * 15 * MiB, 'every written chunk (15 after the trim) is held twice');

  // Swap the roles: the former secondaries serve the reads now.
  const swapped = makeMap(2, [b, a], { pgCount: 16 });
  for (const peer of [peerA, peerB]) t.equal((await setMap(peer, swapped)).status, SdsStatus.Ok);
  const other = new TestVolumeClient(swapped, volume.peers, vtreeId);
  t.ok((await other.read(0, data.length)).equals(data), 'the mirror copies hold the same bytes');
  const piece = volume.pieces(0, 512)[0];
  const old = await peerA.request(SdsOp.Read, encodeIo(piece?.args as IoArgs), { epoch: 1 });
  t.equal(old.status, SdsStatus.StaleEpoch, 'IO with the old epoch is refused after the change');

  // The secondary dies: a write to one of its groups fails rather than being half-done silently.
  await b.kill();
  const chunkIndex = Array.from({ length: 64 }, (_, index) => index).find((index) => swapped.pools[testPoolId]?.groups[placementGroupOf(vtreeId, index, 16)]?.secondary === b.sdsId) as number;
  const orphan = new TestVolumeClient(swapped, new Map([[a.sdsId, peerA]]), vtreeId);
  const failure = await orphan.write(chunkIndex * MiB, Buffer.alloc(4096, 1)).then(() => null, (err: unknown) => err);
  t.equal((failure as SdsReplyError | null)?.status, SdsStatus.MirrorFailed, 'a write whose mirror is gone fails with MirrorFailed');
  t.match(a.stderr(), /mirror|wire/i, 'and the primary logged why');
});

t.test('devices added at run time (the MDM\'s AddDevice order) are refused when formatted, kept across restarts', async (t) => {
  const dir = t.testdir();
  const sds = await startSds(t, { dir, name: 'sds-add', devices: [sparseFile(dir, 'first.img', 64 * MiB)] });
  const peer = await connectWire(t, sds.address);
  const formatted = sparseFile(dir, 'ext4.img', 64 * MiB);
  t.equal((await run('mkfs.ext4', ['-q', '-F', formatted])).code, 0, 'mkfs.ext4 made a filesystem');
  const order = (path: string, force: boolean): Buffer => Buffer.from(JSON.stringify({ path, force }));
  const refused = await peer.request(SdsOp.AddDevice, order(formatted, false));
  t.equal(refused.status, SdsStatus.DeviceRefused, 'a device holding ext4 is refused');
  const refusal = JSON.parse(refused.payload.toString()) as { code: string; message: string };
  t.equal(refusal.code, 'MB_ERR_DEVICE_FORMATTED', 'with the stable code');
  t.match(refusal.message, /an ext4 filesystem.*previous formatting must be removed first/, 'and what was found');
  const missing = await peer.request(SdsOp.AddDevice, order(`${dir}/nope.img`, false));
  t.equal(missing.status, SdsStatus.DeviceRefused, 'a missing device is refused too');
  t.match((JSON.parse(missing.payload.toString()) as { message: string }).message, /no such file/);
  const bad = await peer.request(SdsOp.AddDevice, Buffer.from('{"path": "relative.img", "force": false}'));
  t.equal(bad.status, SdsStatus.InvalidArgument, 'a relative path is a bad argument');
  const fromSdc = await (await connectWire(t, sds.address, { role: 'sdc' })).request(SdsOp.AddDevice, order(formatted, true));
  t.equal(fromSdc.status, SdsStatus.InvalidArgument, 'an SDC may not add devices');

  const added = await peer.request(SdsOp.AddDevice, order(formatted, true));
  t.equal(added.status, SdsStatus.Ok, 'forced, it is taken');
  const device = JSON.parse(added.payload.toString()) as { deviceId: string; path: string; capacityBytes: number };
  t.equal(device.capacityBytes, 63 * MiB, 'and reported with its capacity');
  t.equal((await peer.request(SdsOp.AddDevice, order(formatted, false))).status, SdsStatus.Ok, 'adding it again is a no-op (it is ours now)');
  t.equal((await getStats(peer)).devices.length, 2);

  t.equal(await sds.stop(), 0);
  const again = await startSds(t, { dir, name: 'sds-add', devices: [`${dir}/first.img`] });
  const stats = await getStats(await connectWire(t, again.address));
  t.same(stats.devices.map((entry) => entry.deviceId).sort(), [stats.devices.find((entry) => entry.path.endsWith('first.img'))?.deviceId, device.deviceId].sort(), 'the added device is opened again at restart');
});

t.test('usage errors give one line and exit 2', async (t) => {
  const dir = t.testdir();
  const cases: Array<[string[], RegExp]> = [
    [['sds', 'start', '--device', 'x'], /name/],
    [['sds', 'start', '--name', 'bad name!', '--device', 'x'], /--name/],
    [['sds', 'start', '--name', 'a', '--device', 'x', '--chunk-size', '3MiB'], /--chunk-size/],
    [['sds', 'start', '--name', 'a', '--device', 'x', '--mdm', 'nowhere'], /--mdm: expected HOST:PORT/],
    [['sds', 'start', '--name', 'a'], /--device: name at least one device \(or register with an MDM: --mdm\)/],
    [['sds', 'start', '--name', 'a', '--device', 'x', '--listen', 'nope'], /--listen/],
    [['sds', 'start', '--name', 'a', '--device', 'x', '--io', 'sideways'], /\bio\b.*sideways.*auto.*direct.*buffered/],
  ];
  for (const [args, message] of cases) {
    const result = await runMeshblock(args);
    t.equal(result.code, 2, args.join(' '));
    t.match(result.stderr, message);
    t.equal(result.stderr.trim().split('\n').length, 1, 'one line');
  }
  const noCluster = await runMeshblock(['sds', 'start', '--name', 'a', '--device', sparseFile(dir, 'd.img', 64 * MiB), '--data-dir', `${dir}/data`, '--secret-file', `${dir}/missing`]);
  t.equal(noCluster.code, 2);
  t.match(noCluster.stderr, /--secret-file: cannot read/);
  fs.writeFileSync(`${dir}/short.secret`, 'short');
  const shortSecret = await runMeshblock(['sds', 'start', '--name', 'a', '--device', `${dir}/d.img`, '--data-dir', `${dir}/data`, '--secret-file', `${dir}/short.secret`]);
  t.match(shortSecret.stderr, /shorter than 16 bytes/);
});

export type { SdsHandle };
