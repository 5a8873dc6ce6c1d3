// Proves the chunk store's generation calls on a real store over a sparse file:
// - a read through a generation path takes the nearest generation holding the chunk, zeros
//   when none does, and fails (never reads past it) when the nearest copy is lost;
// - a shadowing write of a key not held yet puts the slot's content on the device and
//   fdatasyncs it before the slot-table entry is written (the order that keeps a power cut
//   from letting a head read zeros where its ancestor's acknowledged data was), while a plain
//   partial first write keeps zero, entry, data; an existing key is rewritten in place;
// - the keys and their generations survive closing and opening the store again;
// - freeGarbage refuses a key a read is resolving to at that moment, and frees it after.

import { pino } from 'pino';
import t from 'tap';
import { ChunkStore, type ChunkKey } from '../../src/sds/chunk-store.js';
import { sparseFile } from '../helpers/files.js';

const KiB = 1024;
const chunkBytes = 64 * KiB;
const poolId = '00000000000000a1';
const vtreeId = '7777000011112222';
const log = pino({ level: 'silent' });
const keyOf = (chunkIndex: number, generation: number): ChunkKey => ({ poolId, vtreeId, chunkIndex, generation });

async function openStore(file: string, zeroedSlotsReady = 0): Promise<ChunkStore> {
  // No zeroed pool unless asked: its background zeroing would interleave with the orders recorded below.
  return ChunkStore.open([file], { owner: { clusterId: 'c0ffee00c0ffee00', sdsId: '0a0b0c0d0e0f1011', sdsName: 'sds-a' }, chunkBytes, force: false, log, zeroedSlotsReady });
}

async function readVia(store: ChunkStore, chunkIndex: number, path: number[], offsetBytes = 0, lengthBytes = chunkBytes): Promise<Buffer> {
  const target = Buffer.alloc(lengthBytes, 0xee);
  await store.readResolved(keyOf(chunkIndex, path[0] ?? 0), path, offsetBytes, target);
  return target;
}

t.test('reads resolve along the path; writes to exact keys never touch the ancestor', async (t) => {
  const dir = t.testdir();
  const file = sparseFile(dir, 'device.img', 16 * 1024 * KiB);
  let store = await openStore(file);
  t.teardown(() => store.close());
  await store.write(keyOf(0, 0), 0, Buffer.alloc(chunkBytes, 0x10), { fua: false });
  await store.write(keyOf(1, 0), 0, Buffer.alloc(chunkBytes, 0x11), { fua: false });
  // Generation 0 frozen with children 1 (the volume) and 2 (a snapshot).
  t.ok((await readVia(store, 0, [2, 0])).equals(Buffer.alloc(chunkBytes, 0x10)), 'a child reads its ancestor');
  t.ok((await readVia(store, 5, [2, 0])).equals(Buffer.alloc(chunkBytes)), 'a chunk nobody holds reads zeros');
  t.ok((await readVia(store, 0, [2])).equals(Buffer.alloc(chunkBytes)), 'a path without the holder reads zeros');
  t.equal(store.resolve(keyOf(0, 1), [1, 0]), 0, 'resolve names the holder');
  t.equal(store.resolve(keyOf(3, 1), [1, 0]), null, 'or null');

  const merged = Buffer.alloc(chunkBytes, 0x10);
  merged.fill(0x21, 4096, 8192);
  await store.writeShadowing(keyOf(0, 1), merged, { fua: false });
  t.ok((await readVia(store, 0, [1, 0])).equals(merged), 'the head reads its own copy');
  t.ok((await readVia(store, 0, [2, 0])).equals(Buffer.alloc(chunkBytes, 0x10)), 'the snapshot still reads the ancestor');
  t.ok(store.holdsOtherGeneration(keyOf(0, 2)), 'other generations of chunk 0 are known');
  t.notOk(store.holdsOtherGeneration(keyOf(2, 0)), 'and none of a chunk not held');

  await store.writeShadowing(keyOf(1, 2), 'zeros', { fua: true });
  t.ok((await readVia(store, 1, [2, 0])).equals(Buffer.alloc(chunkBytes)), 'a zeroed key hides its ancestor');
  t.ok((await readVia(store, 1, [1, 0])).equals(Buffer.alloc(chunkBytes, 0x11)), 'for its own head only');

  await store.close();
  store = await openStore(file);
  t.ok((await readVia(store, 0, [1, 0])).equals(merged), 'after reopening, the head copy is there');
  t.ok((await readVia(store, 0, [2, 0])).equals(Buffer.alloc(chunkBytes, 0x10)), 'and the ancestor');
  t.ok((await readVia(store, 1, [2, 0])).equals(Buffer.alloc(chunkBytes)), 'and the zeroed key');
  t.same([...[...store.heldChunks()].map((chunk) => [chunk.chunkIndex, [...chunk.generations].sort()])].sort(), [[0, [0, 1]], [1, [0, 2]]], 'the generations index is rebuilt from the slot table');
});

/** Records the store's device calls in order: data, checksums, entry, zero, sync. */
function recordCalls(store: ChunkStore): string[] {
  const device = store.devices[0];
  if (device === undefined) throw new Error('no device');
  const dataStart = device.slotOffsetBytes(0);
  const checksumStart = device.checksumAreaOffsetBytes(0);
  const events: string[] = [];
  const io = device.io;
  const write = io.write.bind(io);
  io.write = (data: Buffer, positionBytes: number) => {
    events.push(positionBytes >= dataStart ? 'data' : positionBytes >= checksumStart ? 'checksums' : 'entry');
    return write(data, positionBytes);
  };
  const internals = store as unknown as { syncDevice: (device: unknown) => Promise<void>; zeroRange: (device: unknown, positionBytes: number, lengthBytes: number) => Promise<void> };
  const sync = internals.syncDevice.bind(store);
  internals.syncDevice = async (synced) => {
    events.push('sync');
    return sync(synced);
  };
  const zero = internals.zeroRange.bind(store);
  internals.zeroRange = async (zeroed, positionBytes, lengthBytes) => {
    events.push('zero');
    return zero(zeroed, positionBytes, lengthBytes);
  };
  return events;
}

t.test('a new slot gets its content, checksums and an fdatasync before its entry; a closed one is opened first', async (t) => {
  const dir = t.testdir();
  const file = sparseFile(dir, 'device.img', 16 * 1024 * KiB);
  const store = await openStore(file);
  let events = recordCalls(store);

  await store.writeShadowing(keyOf(0, 1), Buffer.alloc(chunkBytes, 7), { fua: false });
  t.same(events, ['data', 'checksums', 'sync', 'entry'], 'copy on write: content, checksums, fdatasync, entry');
  events.length = 0;
  await store.writeShadowing(keyOf(1, 1), 'zeros', { fua: false });
  t.same(events, ['zero', 'checksums', 'sync', 'entry'], 'a zeroed shadow: zeros, checksums, fdatasync, entry');
  events.length = 0;
  await store.writeShadowing(keyOf(0, 1), Buffer.alloc(chunkBytes, 8), { fua: false });
  t.same(events, ['data'], 'a key already held (its slot open) is rewritten in place; its checksums change in memory');
  events.length = 0;
  await store.flush();
  t.same(events, ['sync', 'checksums'], 'and go to the device with the next sync, before its fdatasync (recorded as the sync begins)');
  events.length = 0;
  await store.write(keyOf(2, 0), 4096, Buffer.alloc(4096, 9), { fua: false });
  t.same(events, ['zero', 'data', 'checksums', 'sync', 'entry'], 'a plain partial first write: the slot zeroed around it, all durable before the entry');
  await store.close();

  const reopened = await openStore(file);
  t.teardown(() => reopened.close());
  events = recordCalls(reopened);
  await reopened.write(keyOf(2, 0), 8192, Buffer.alloc(4096, 10), { fua: false });
  t.same(events, ['entry', 'sync', 'data'], 'a slot closed by a clean close is opened (entry, fdatasync) before the data');
  events.length = 0;
  await reopened.write(keyOf(2, 0), 512, Buffer.alloc(512, 11), { fua: true });
  t.same(events, ['data', 'sync', 'checksums'], 'an open slot takes a partial block in place (read, merged, checksummed, written whole); FUA writes the checksums before its fdatasync');
  const block = Buffer.alloc(4096);
  await reopened.read(keyOf(2, 0), 0, block);
  t.ok(block.subarray(512, 1024).equals(Buffer.alloc(512, 11)) && block.subarray(0, 512).equals(Buffer.alloc(512)), 'the merged block reads back');
});

t.test('a plain first write takes a slot from the zeroed pool: no fdatasync of its own; a copy on write still syncs', async (t) => {
  const store = await openStore(sparseFile(t.testdir(), 'device.img', 16 * 1024 * KiB), 4);
  t.teardown(() => store.close());
  const device = store.devices[0];
  if (device === undefined) throw new Error('no device');
  for (let waited = 0; device.zeroedSlots.length < 4 && waited < 100; waited++) await new Promise((resolve) => setTimeout(resolve, 10));
  t.equal(device.zeroedSlots.length, 4, 'the pool is filled in the background');
  const events = recordCalls(store);
  await store.write(keyOf(3, 0), 4096, Buffer.alloc(4096, 12), { fua: false });
  t.same(events.slice(0, 2), ['data', 'entry'], 'content and entry, no zeroing and no sync first (the checksums go with the next sync)');
  events.length = 0;
  await store.flush();
  t.same(events, ['sync', 'checksums'], 'the next sync writes the checksums before its fdatasync');
  events.length = 0;
  await store.writeShadowing(keyOf(3, 1), Buffer.alloc(chunkBytes, 13), { fua: false });
  t.same(events.filter((event) => event !== 'zero').slice(0, 4), ['data', 'checksums', 'sync', 'entry'], 'a copy on write keeps its sync before the entry');
  const read = Buffer.alloc(chunkBytes);
  await store.read(keyOf(3, 0), 0, read);
  t.ok(read.subarray(4096, 8192).equals(Buffer.alloc(4096, 12)) && read.subarray(0, 4096).equals(Buffer.alloc(4096)), 'the first write reads back, zeros around it');
});

t.test('a key being read through another generation is not freed', async (t) => {
  const dir = t.testdir();
  const store = await openStore(sparseFile(dir, 'device.img', 16 * 1024 * KiB));
  t.teardown(() => store.close());
  await store.write(keyOf(0, 0), 0, Buffer.alloc(chunkBytes, 3), { fua: false });
  const target = Buffer.alloc(chunkBytes);
  const reading = store.readResolved(keyOf(0, 1), [1, 0], 0, target);
  t.equal(await store.freeGarbage(keyOf(0, 0)), false, 'pinned by the read in flight: kept');
  await reading;
  t.ok(target.equals(Buffer.alloc(chunkBytes, 3)), 'the read got the bytes');
  t.equal(await store.freeGarbage(keyOf(0, 0)), true, 'once the read is done it is freed');
  t.notOk(store.has(keyOf(0, 0)), 'and gone');
  t.equal(store.resolve(keyOf(0, 1), [1, 0]), null, 'the path resolves to nothing now');
  t.equal(store.devices[0]?.usedSlotCount, 0, 'its slot is free');
});

t.test('a lost nearest copy fails the read instead of reading an older generation', async (t) => {
  const dir = t.testdir();
  const store = await openStore(sparseFile(dir, 'device.img', 16 * 1024 * KiB));
  t.teardown(() => store.close());
  await store.write(keyOf(0, 0), 0, Buffer.alloc(chunkBytes, 1), { fua: false });
  await store.write(keyOf(0, 1), 0, Buffer.alloc(chunkBytes, 2), { fua: false });
  // Chunk 0 of generation 1 is marked lost the way the store does when its device fails
  // and a partial write then lands on another slot.
  const internals = store as unknown as { lostKeys: Map<string, { key: ChunkKey; reason: 'device' | 'entry' }>; touched: (key: ChunkKey) => void };
  internals.lostKeys.set(`${poolId}${vtreeId}:0:1`, { key: keyOf(0, 1), reason: 'device' });
  internals.touched(keyOf(0, 1));
  await t.rejects(readVia(store, 0, [1, 0]), { code: 'MB_ERR_DEVICE_FAILED' }, 'the read fails loudly');
});

t.test('a key being allocated hides its ancestor from reads, not from garbage collection', async (t) => {
  const dir = t.testdir();
  const store = await openStore(sparseFile(dir, 'device.img', 16 * 1024 * KiB));
  t.teardown(() => store.close());
  await store.write(keyOf(0, 0), 0, Buffer.alloc(chunkBytes, 5), { fua: false });
  const copying = store.writeShadowing(keyOf(0, 1), Buffer.alloc(chunkBytes, 6), { fua: false });
  // Microtask turns only: the allocation registers at once, its device IO needs the event loop.
  for (let turn = 0; turn < 100 && store.resolve(keyOf(0, 1), [1, 0]) !== 1; turn++) await Promise.resolve();
  t.equal(store.resolve(keyOf(0, 1), [1, 0]), 1, 'reads wait for the allocation (it resolves to the head)');
  t.equal(store.resolveCommitted(keyOf(0, 1), [1, 0]), 0, 'while the collector still sees the ancestor as reached');
  await copying;
  t.equal(store.resolveCommitted(keyOf(0, 1), [1, 0]), 1, 'until the allocation is done');
});
