// Checksums at rest between two real SDS processes (`meshblock sds start` on sparse files),
// with bytes flipped in their device files as a rotting disk would: a read never returns
// a bad block (the primary repairs its copy from the secondary's and answers with the right
// bytes); a block bad on both copies answers Corrupt, is reported with its range, and
// nothing else is affected; a damaged slot-table entry loses the chunk on that copy only
// until it is fetched again; the scrub finds rot on the secondary, and a secondary copy
// that differs though it verifies, and replaces it from the primary.

import t from 'tap';
import type { ChunkKey } from '../../src/sds/chunk-store.js';
import { SdsStatus, SdsOp, encodeIo, type SdsStats } from '../../src/wire/sds-ops.js';
import type { PlacementMap } from '../../src/wire/placement.js';
import type { WirePeer } from '../../src/wire/peer.js';
import { sparseFile } from '../helpers/files.js';
import { flipByte, forgeBlock, locateChunk, readBytes as readFile, type SlotPlace } from '../helpers/integrity.js';
import { MiB, connectWire, getStats, makeMap, setMap, startSds, testPoolId, type SdsHandle } from '../helpers/sds.js';

const vtreeId = '00000000beefcafe';
const block = 4096;

function pattern(chunkIndex: number): Buffer {
  const data = Buffer.alloc(MiB);
  for (let offset = 0; offset < MiB; offset += 512) data.writeUInt32BE(chunkIndex * 0x10000 + offset / 512, offset);
  return data;
}

/** Where chunk `chunkIndex` (generation 0) of the test tree lives in a device file. */
function locate(file: string, chunkIndex: number): SlotPlace {
  return locateChunk(file, { vtreeId, chunkIndex });
}

async function waitFor<T>(what: string, probe: () => Promise<T | null>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

t.test('rot on one copy is repaired, on both is EIO for that range only, a damaged entry costs one copy, the scrub repairs and compares', async (t) => {
  // Processes and connections started in a subtest live until the end of the whole test.
  const top = t;
  const dir = t.testdir();
  const devices = { a: sparseFile(dir, 'a.img', 64 * MiB), b: sparseFile(dir, 'b.img', 64 * MiB) };
  let sdsA: SdsHandle = await startSds(t, { dir, name: 'sds-a', devices: [devices.a] });
  const sdsB = await startSds(t, { dir, name: 'sds-b', devices: [devices.b] });
  // One group: sds-a is the primary of every chunk, sds-b the secondary. The scrub is off
  // until the last part, so that only reads find the first damages.
  const mapAt = (epoch: number, scrub: 'off' | 'dataComparison'): PlacementMap => {
    const map = makeMap(epoch, [sdsA, sdsB], { pgCount: 1 });
    (map.pools[testPoolId] as PlacementMap['pools'][string]).scrub = { mode: scrub, rateKBps: 1024 * 1024 };
    return map;
  };
  let a: WirePeer = await connectWire(t, sdsA.address);
  const b = await connectWire(t, sdsB.address);
  let epoch = 1;
  t.equal((await setMap(a, mapAt(epoch, 'off'))).status, SdsStatus.Ok);
  t.equal((await setMap(b, mapAt(epoch, 'off'))).status, SdsStatus.Ok);

  const io = async (peer: WirePeer, op: number, chunkIndex: number, offsetBytes: number, lengthBytes: number, data?: Buffer): Promise<{ status: number; payload: Buffer }> =>
    peer.request(op, encodeIo({ poolId: testPoolId, vtreeId, pgIndex: 0, chunkIndex, generation: 0, offsetBytes, lengthBytes, flags: 0 }, data), { epoch });
  for (const chunkIndex of [0, 1, 2, 3]) t.equal((await io(a, SdsOp.Write, chunkIndex, 0, MiB, pattern(chunkIndex))).status, SdsStatus.Ok, `chunk ${chunkIndex} written`);
  t.equal((await a.request(SdsOp.Flush, Buffer.alloc(0))).status, SdsStatus.Ok);

  await t.test('one copy rotted: the read returns the right bytes and the copy is repaired', async (t) => {
    const at = locate(devices.a, 0);
    flipByte(devices.a, at.dataBytes + 2 * block + 100);
    const reply = await io(a, SdsOp.Read, 0, 2 * block, block);
    t.equal(reply.status, SdsStatus.Ok, 'the read succeeds');
    t.ok(reply.payload.equals(pattern(0).subarray(2 * block, 3 * block)), 'with the written bytes, not the rotten ones');
    t.ok(readFile(devices.a, at.dataBytes + 2 * block, block).equals(pattern(0).subarray(2 * block, 3 * block)), "the primary's copy on its device is rewritten");
    const stats = await getStats(a);
    t.equal(stats.integrity?.checksumErrors, 1, 'one bad block counted');
    t.equal(stats.integrity?.repairedBlocks, 1, 'one block repaired');
    t.equal(stats.devices[0]?.checksumErrors, 1, 'on its device');
    t.match(sdsA.stderr(), /failed their checksums/, 'and logged');
    // A 512-byte read inside a block verifies the whole block.
    flipByte(devices.a, at.dataBytes + 7 * block + 4000);
    const small = await io(a, SdsOp.Read, 0, 7 * block, 512);
    t.ok(small.status === SdsStatus.Ok && small.payload.equals(pattern(0).subarray(7 * block, 7 * block + 512)), 'a read of part of a bad block is repaired too');
  });

  await t.test('both copies rotted: Corrupt for that range, reported; everything else served', async (t) => {
    const atA = locate(devices.a, 1);
    const atB = locate(devices.b, 1);
    flipByte(devices.a, atA.dataBytes + 5 * block + 9);
    flipByte(devices.b, atB.dataBytes + 5 * block + 10);
    const reply = await io(a, SdsOp.Read, 1, 4 * block, 3 * block);
    t.equal(reply.status, SdsStatus.Corrupt, 'a read over the bad block fails with Corrupt (EIO at the SDC)');
    const neighbour = await io(a, SdsOp.Read, 1, 6 * block, block);
    t.ok(neighbour.status === SdsStatus.Ok && neighbour.payload.equals(pattern(1).subarray(6 * block, 7 * block)), 'the next block of the same chunk reads');
    const stats = await getStats(a);
    t.match(stats.unrepairable, [{ poolId: testPoolId, vtreeId, generation: 0, chunkIndex: 1, offsetBytes: 5 * block, lengthBytes: block }], 'the range is reported precisely');
    t.equal(stats.integrity?.unrepairableBlocks, 1);
    // A partial write into the bad block cannot be merged: refused, nothing changed.
    t.not((await io(a, SdsOp.Write, 1, 5 * block, 512, Buffer.alloc(512, 1))).status, SdsStatus.Ok, 'a partial write into it is refused');
    // A whole-block write replaces it on both copies.
    t.equal((await io(a, SdsOp.Write, 1, 5 * block, block, Buffer.alloc(block, 0x33))).status, SdsStatus.Ok, 'a whole-block write is taken');
    const after = await io(a, SdsOp.Read, 1, 5 * block, block);
    t.ok(after.status === SdsStatus.Ok && after.payload.equals(Buffer.alloc(block, 0x33)), 'and the block reads again');
  });

  await t.test('a damaged slot-table entry: the chunk is lost on that copy and fetched again whole', async (t) => {
    const at = locate(devices.a, 2);
    await sdsA.stop();
    flipByte(devices.a, at.entryBytes + 20);
    sdsA = await startSds(top, { dir, name: 'sds-a', devices: [devices.a] });
    a = await connectWire(top, sdsA.address);
    epoch += 1;
    t.equal((await setMap(a, mapAt(epoch, 'off'))).status, SdsStatus.Ok);
    t.equal((await setMap(b, mapAt(epoch, 'off'))).status, SdsStatus.Ok);
    t.match(sdsA.stderr(), /damaged slot-table entry/, 'the damage is logged at open');
    t.equal((await getStats(a)).integrity?.damagedEntries, 1, 'and counted');
    const reply = await io(a, SdsOp.Read, 2, 0, MiB);
    t.ok(reply.status === SdsStatus.Ok && reply.payload.equals(pattern(2)), 'the chunk reads whole, fetched from the secondary');
    const again = await io(a, SdsOp.Read, 3, 0, MiB);
    t.ok(again.status === SdsStatus.Ok && again.payload.equals(pattern(3)), 'the other chunks were never affected');
  });

  await t.test('the scrub repairs rot on the secondary and a secondary copy that differs', async (t) => {
    const atB = locate(devices.b, 3);
    flipByte(devices.b, atB.dataBytes + 9 * block + 1);
    // A block that differs and still verifies: new bytes with their checksum written beside them.
    const forged = Buffer.alloc(block, 0x77);
    const key: ChunkKey = { poolId: testPoolId, vtreeId, chunkIndex: 3, generation: 0 };
    forgeBlock(devices.b, atB, key, 12, forged);
    // sds-b caches its checksums: the forged one counts once it reloads them (a restart).
    // Here the forged block verifies against nothing but what is on disk, so it is found by
    // the comparison either way: the digests differ or the secondary reports the block bad.
    epoch += 1;
    t.equal((await setMap(a, mapAt(epoch, 'dataComparison'))).status, SdsStatus.Ok);
    t.equal((await setMap(b, mapAt(epoch, 'dataComparison'))).status, SdsStatus.Ok);
    const fixed = await waitFor('the scrub to repair the secondary', async () => {
      const copy = readFile(devices.b, atB.dataBytes, MiB);
      return copy.equals(pattern(3)) ? copy : null;
    });
    t.ok(fixed.equals(pattern(3)), "the secondary's copy is the primary's again, both blocks");
    const [statsA, statsB] = await Promise.all([getStats(a), getStats(b)]);
    const found = (stats: SdsStats): number => (stats.integrity?.checksumErrors ?? 0) + (stats.integrity?.mismatchedBlocks ?? 0);
    t.ok(found(statsA) + found(statsB) >= 1, 'the findings are counted');
    const scrubbed = await waitFor('a completed scrub pass', async () => {
      const stats = await getStats(a);
      return (stats.scrub?.passesCompleted ?? 0) >= 1 ? stats : null;
    });
    t.equal(scrubbed.scrub?.mode, 'dataComparison', 'the pool policy reached the SDS');
    t.ok((scrubbed.devices[0]?.scrubbedBytes ?? 0) >= 4 * MiB, 'every chunk copy was read');
  });
});
