// The chunk store's checksums at rest, in process, on a sparse file: what a read verifies
// (whole blocks, also under a part-block read or write), what a trim leaves, how a repair
// and the scrub's calls see and mend rot, that a clean close leaves no slot open and an
// unclean stop's open slots are verified at open, and that the benchmark switch really
// turns the checksums off.

import * as fs from 'node:fs';
import pino from 'pino';
import t from 'tap';
import { benchWithoutFromEnv } from '../../src/cli/sds-start.js';
import { ChecksumError, ChunkStore, type ChunkKey } from '../../src/sds/chunk-store.js';
import { sparseFile } from '../helpers/files.js';

const log = pino({ level: 'silent' });
const chunkBytes = 64 * 1024;
const block = 4096;
const owner = { clusterId: 'c0ffee00c0ffee00', sdsId: '0a0b0c0d0e0f1011', sdsName: 'sds-a' };
const key = (chunkIndex: number): ChunkKey => ({ poolId: '00000000000000a1', vtreeId: '00000000000000b2', chunkIndex, generation: 0 });

function open(file: string, benchWithout?: { checksums?: boolean }): Promise<ChunkStore> {
  // No zeroed pool: the tests find a chunk in the lowest free slot.
  return ChunkStore.open([file], { owner, chunkBytes, force: false, log, zeroedSlotsReady: 0, ...(benchWithout !== undefined ? { benchWithout } : {}) });
}

function flip(file: string, positionBytes: number): void {
  const fd = fs.openSync(file, 'r+');
  const byte = Buffer.alloc(1);
  fs.readSync(fd, byte, 0, 1, positionBytes);
  byte[0] = (byte[0] as number) ^ 0xff;
  fs.writeSync(fd, byte, 0, 1, positionBytes);
  fs.closeSync(fd);
}

function content(seed: number): Buffer {
  const bytes = Buffer.alloc(chunkBytes);
  for (let offset = 0; offset < chunkBytes; offset += 4) bytes.writeUInt32BE((seed * 7919 + offset) >>> 0, offset);
  return bytes;
}

t.test('reads verify whole blocks; rot is refused, never returned, and repaired', async (t) => {
  const file = sparseFile(t.testdir(), 'device.img', 16 * 1024 * 1024);
  const store = await open(file);
  t.teardown(() => store.close());
  await store.write(key(0), 0, content(1), { fua: true });
  const slotStart = store.devices[0]?.slotOffsetBytes(0) ?? 0;

  flip(file, slotStart + 3 * block + 17);
  await t.rejects(store.read(key(0), 3 * block + 512, Buffer.alloc(512)), { code: 'MB_ERR_CHECKSUM', offsetBytes: 3 * block, lengthBytes: block }, 'a 512-byte read of a rotted block fails, naming the whole block');
  const whole = Buffer.alloc(chunkBytes);
  const error = await store.read(key(0), 0, whole).then(
    () => null,
    (err: unknown) => err,
  );
  t.ok(error instanceof ChecksumError && error.offsetBytes === 3 * block, 'a whole-chunk read fails on the same block');
  t.ok((await store.read(key(0), 4 * block, Buffer.alloc(block)).then(() => true)) === true, 'the next block reads');
  await t.rejects(store.write(key(0), 3 * block + 1024, Buffer.alloc(512, 9), { fua: false }), { code: 'MB_ERR_CHECKSUM' }, 'a partial write cannot merge with a rotted block');
  t.equal(store.integrity.checksumErrors, 1, 'one bad block found three times is counted once');

  const scrub = await store.scrubChunk(key(0));
  t.same(scrub.badRanges, [{ offsetBytes: 3 * block, lengthBytes: block }], 'the scrub finds the same range');
  await store.repair(key(0), 3 * block, content(1).subarray(3 * block, 4 * block));
  await store.read(key(0), 0, whole);
  t.ok(whole.equals(content(1)), 'after the repair the chunk reads as written');
  t.equal(store.integrity.repairedBlocks, 1);
  t.same((await store.scrubChunk(key(0))).badRanges, [], 'and scrubs clean');

  store.markUnrepairable(key(0), 5 * block, block);
  store.markUnrepairable(key(0), 5 * block, block);
  t.equal(store.unrepairable.length, 1, 'an unrepairable range is remembered once');
  t.equal(store.integrity.unrepairableBlocks, 1);
  await store.write(key(0), 5 * block + 512, Buffer.alloc(512), { fua: false });
  t.equal(store.unrepairable.length, 1, 'a write over part of it leaves it reported');
  await store.write(key(0), 4 * block, Buffer.alloc(2 * block), { fua: false });
  t.same(store.unrepairable, [], 'a write over all of it ends the report (the counter stays, as history)');
  t.equal(store.integrity.unrepairableBlocks, 1);

  flip(file, slotStart + 9 * block);
  const twice = Buffer.alloc(block);
  await t.rejects(store.read(key(0), 9 * block, twice));
  await store.scrubChunk(key(0));
  t.equal(store.integrity.checksumErrors, 2, 'a bad block found by a read and then by the scrub is counted once');
});

t.test('part-block writes and trims keep every block verifiable', async (t) => {
  const file = sparseFile(t.testdir(), 'device.img', 16 * 1024 * 1024);
  const store = await open(file);
  const expected = Buffer.alloc(chunkBytes);
  await store.write(key(1), 1024, Buffer.alloc(512, 1), { fua: false });
  Buffer.alloc(512, 1).copy(expected, 1024);
  await store.write(key(1), 4096 - 512, Buffer.alloc(1024, 2), { fua: false });
  Buffer.alloc(1024, 2).copy(expected, 4096 - 512);
  await store.trim(key(1), 512, 1024, { fua: false });
  expected.fill(0, 512, 1536);
  await store.trim(key(1), 8 * block, 2 * block, { fua: false });
  await store.write(key(1), 9 * block + 512, Buffer.alloc(512, 3), { fua: false });
  Buffer.alloc(512, 3).copy(expected, 9 * block + 512);
  const read = Buffer.alloc(chunkBytes);
  await store.read(key(1), 0, read);
  t.ok(read.equals(expected), 'the chunk reads as the writes and trims left it');
  t.same((await store.scrubChunk(key(1))).badRanges, [], 'every block verifies');
  await store.close();
  const again = await open(file);
  t.teardown(() => again.close());
  await again.read(key(1), 0, read);
  t.ok(read.equals(expected), 'and after reopening, from the checksums on the device');
});

t.test('a clean close leaves no slot open; an unclean stop leaves them to be verified at open', async (t) => {
  const file = sparseFile(t.testdir(), 'device.img', 16 * 1024 * 1024);
  const store = await open(file);
  await store.write(key(2), 0, content(2), { fua: false });
  await store.write(key(3), 0, content(3), { fua: false });
  await store.flush();
  const openFlag = (slot: number): number => {
    const entry = Buffer.alloc(64);
    const fd = fs.openSync(file, 'r');
    fs.readSync(fd, entry, 0, 64, store.devices[0]?.entryOffsetBytes(slot) ?? 0);
    fs.closeSync(fd);
    return entry.readUInt8(5);
  };
  t.equal(openFlag(0), 1, 'a new slot is open');
  // An unclean stop with a write that landed without its checksum (a torn write).
  await store.write(key(2), 0, content(4).subarray(0, block), { fua: false });
  const slotStart = store.devices[0]?.slotOffsetBytes(0) ?? 0;
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, content(5).subarray(0, 512), 0, 512, slotStart + block);
  fs.closeSync(fd);
  fs.closeSync(store.devices[0]?.opened.fd ?? -1);
  fs.closeSync(store.devices[0]?.opened.directFd ?? -1);
  const reopened = await open(file);
  // Block 0's write was never flushed, so its new checksum was never written either.
  t.equal(reopened.integrity.tornBlocksAccepted, 2, 'the blocks of an open slot that fail are taken as torn, not rot: the unflushed write and the torn one');
  const read = Buffer.alloc(chunkBytes);
  await reopened.read(key(2), 0, read);
  t.ok(read.subarray(block, block + 512).equals(content(5).subarray(0, 512)), 'and reads as it is');
  await reopened.close();
  t.equal(openFlag(0), 0, 'a clean close closes every slot');
  t.equal(openFlag(1), 0);
  const clean = await open(file);
  t.equal(clean.integrity.tornBlocksAccepted, 0, 'and the next open has nothing to verify');
  // Rot in a closed slot stays rot across an open.
  await clean.close();
  flip(file, slotStart + 2 * block);
  const rotten = await open(file);
  t.teardown(() => rotten.close());
  t.equal(rotten.integrity.tornBlocksAccepted, 0, 'rot in a closed slot is not taken for a torn write');
  await t.rejects(rotten.read(key(2), 2 * block, Buffer.alloc(block)), { code: 'MB_ERR_CHECKSUM' }, 'it fails its read');
});

t.test('the scrub mends a rotted slot-table entry from memory', async (t) => {
  const file = sparseFile(t.testdir(), 'device.img', 16 * 1024 * 1024);
  const store = await open(file);
  t.teardown(() => store.close());
  await store.write(key(4), 0, content(4), { fua: true });
  const device = store.devices[0];
  if (device === undefined) throw new Error('no device');
  flip(file, device.entryOffsetBytes(0) + 30);
  t.equal(await store.scrubSlotTable(device), 1, 'one entry rewritten');
  t.equal(await store.scrubSlotTable(device), 0, 'and then none');
  t.equal(store.integrity.damagedEntries, 1);
});

t.test('the benchmark switch runs without checksums, and its variable is checked', async (t) => {
  const file = sparseFile(t.testdir(), 'device.img', 16 * 1024 * 1024);
  const store = await open(file, { checksums: true });
  t.teardown(() => store.close());
  await store.write(key(5), 0, content(6), { fua: true });
  flip(file, (store.devices[0]?.slotOffsetBytes(0) ?? 0) + 10);
  const read = Buffer.alloc(block);
  await store.read(key(5), 0, read);
  t.not(read.readUInt8(10), content(6).readUInt8(10), 'without checksums a rotted byte is returned: what the checksums prevent');
  t.same(benchWithoutFromEnv('checksums, safe-allocation'), { checksums: true, safeAllocation: true });
  t.equal(benchWithoutFromEnv(''), undefined);
  t.throws(() => benchWithoutFromEnv('crc'), { code: 'MB_ERR_INVALID_ARGUMENT' });
});
