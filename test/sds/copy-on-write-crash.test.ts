// Proves that copy on write survives a crash: a real SDS (`meshblock sds start` on a sparse
// file) holds a volume's chunks in generation 0; a snapshot map makes generation 1 the
// volume's head and 2 the snapshot's; a storm of 4 KiB writes (some FUA) to generation 1,
// most of them a chunk's first write under the new head (a copy of the whole chunk), runs
// until the SDS is killed with SIGKILL at a random moment. After a restart the store must
// open cleanly, the snapshot must read the old bytes everywhere, and every block of the
// volume must hold its last acknowledged write, one in flight at the kill, or (never
// written) the old bytes: never zeros or another block's bytes where the copy had not
// landed. The seed is printed; SEED=n replays it.

import t from 'tap';
import { mulberry32 } from '../../src/common/seeded-random.js';
import { placementGroupOf, type PlacementMap } from '../../src/wire/placement.js';
import { IoFlag, SdsOp, SdsStatus, encodeIo } from '../../src/wire/sds-ops.js';
import type { WirePeer } from '../../src/wire/peer.js';
import { sparseFile } from '../helpers/files.js';
import { MiB, connectWire, makeMap, setMap, startSds, testPoolId } from '../helpers/sds.js';

const blockBytes = 4096;
const chunkCount = 96;
const blocksPerChunk = MiB / blockBytes;
const pgCount = 32;
const vtreeId = '00000000c0a5c0a6';
const inflightMax = 16;

function baseBlock(chunkIndex: number, block: number): Buffer {
  const content = Buffer.alloc(blockBytes, (chunkIndex * 31 + block) & 0xff);
  content.writeUInt32BE(0xba5e0000 + chunkIndex, 0);
  content.writeUInt32BE(block, 4);
  return content;
}

function newBlock(chunkIndex: number, block: number, version: number): Buffer {
  const content = Buffer.alloc(blockBytes, (version * 13 + block) & 0xff);
  content.writeUInt32BE(chunkIndex, 0);
  content.writeUInt32BE(block, 4);
  content.writeUInt32BE(version, 8);
  return content;
}

async function io(peer: WirePeer, op: number, epoch: number, chunkIndex: number, generation: number, offsetBytes: number, lengthBytes: number, data?: Buffer, flags = 0): Promise<Buffer> {
  const args = { poolId: testPoolId, vtreeId, pgIndex: placementGroupOf(vtreeId, chunkIndex, pgCount), chunkIndex, generation, offsetBytes, lengthBytes, flags };
  const reply = await peer.request(op, encodeIo(args, data), { epoch });
  if (reply.status !== SdsStatus.Ok) throw new Error(`op ${op} of ${chunkIndex}:${generation} failed with ${reply.status}: ${reply.payload.toString()}`);
  return reply.payload;
}

t.test('kill -9 during copies on write loses nothing and never shows half a copy', async (t) => {
  const dir = t.testdir();
  const device = sparseFile(dir, 'cow.img', 512 * MiB);
  const seed = process.env['SEED'] !== undefined ? Number(process.env['SEED']) : Math.floor(Math.random() * 2 ** 31);
  t.comment(`seed ${seed}`);
  const random = mulberry32(seed);

  let sds = await startSds(t, { dir, name: 'sds-cow', devices: [device] });
  let peer = await connectWire(t, sds.address);
  await setMap(peer, makeMap(1, [sds], { pgCount }));
  for (let chunkIndex = 0; chunkIndex < chunkCount; chunkIndex++) {
    const chunk = Buffer.concat(Array.from({ length: blocksPerChunk }, (_, block) => baseBlock(chunkIndex, block)));
    await io(peer, SdsOp.Write, 1, chunkIndex, 0, 0, MiB, chunk);
  }
  const snapshotMap: PlacementMap = {
    ...makeMap(2, [sds], { pgCount }),
    vtrees: { [vtreeId]: { generations: { '0': null, '1': 0, '2': 0 }, heads: [{ generation: 1, snapshot: false }, { generation: 2, snapshot: true }] } },
  };
  t.equal((await setMap(peer, snapshotMap)).status, SdsStatus.Ok, 'the snapshot map is installed');

  const blockTotal = chunkCount * blocksPerChunk;
  const acked = new Array<number>(blockTotal).fill(0);
  const inflight = Array.from({ length: blockTotal }, () => new Set<number>());
  const busy = new Set<number>();
  let version = 0;
  let stopped = false;
  // Counted from the first acknowledged write: copies are slow to start (a whole chunk each).
  const killAfterMs = 50 + Math.floor(random() * 700);
  let firstAck!: () => void;
  const killer = new Promise<void>((resolve) => (firstAck = resolve))
    .then(() => new Promise<void>((resolve) => setTimeout(resolve, killAfterMs)))
    .then(() => sds.kill());
  const worker = async (): Promise<void> => {
    while (!stopped) {
      const chunkIndex = Math.floor(random() * chunkCount);
      const block = Math.floor(random() * blocksPerChunk);
      const at = chunkIndex * blocksPerChunk + block;
      if (busy.has(at)) continue;
      const mine = ++version;
      busy.add(at);
      inflight[at]?.add(mine);
      await io(peer, SdsOp.Write, 2, chunkIndex, 1, block * blockBytes, blockBytes, newBlock(chunkIndex, block, mine), random() < 0.2 ? IoFlag.Fua : 0);
      acked[at] = mine;
      firstAck();
      inflight[at]?.delete(mine);
      busy.delete(at);
    }
  };
  await Promise.allSettled(Array.from({ length: inflightMax }, () => worker().catch((err: unknown) => {
    stopped = true;
    throw err;
  })));
  await killer;
  const ackedCount = acked.filter((value) => value > 0).length;
  t.comment(`killed ${killAfterMs} ms after the first acknowledgement: ${version} writes issued, ${ackedCount} blocks acknowledged`);
  t.ok(ackedCount > 0, 'writes were acknowledged before the kill');

  sds = await startSds(t, { dir, name: 'sds-cow', devices: [device] });
  peer = await connectWire(t, sds.address);
  t.notMatch(sds.stderr(), /damaged slot-table entry|two slots held one chunk/, 'the store opened cleanly');
  let wrongVolume = 0;
  let wrongSnapshot = 0;
  for (let chunkIndex = 0; chunkIndex < chunkCount; chunkIndex++) {
    const volume = await io(peer, SdsOp.Read, 2, chunkIndex, 1, 0, MiB);
    const snapshot = await io(peer, SdsOp.Read, 2, chunkIndex, 2, 0, MiB);
    for (let block = 0; block < blocksPerChunk; block++) {
      const at = chunkIndex * blocksPerChunk + block;
      const bytes = volume.subarray(block * blockBytes, (block + 1) * blockBytes);
      const base = baseBlock(chunkIndex, block);
      const found = bytes.equals(base) ? 0 : bytes.readUInt32BE(8);
      const fine = (found === 0 ? bytes.equals(base) : bytes.equals(newBlock(chunkIndex, block, found))) && (found === (acked[at] as number) || inflight[at]?.has(found) === true);
      if (!fine && wrongVolume++ < 5) t.fail(`volume chunk ${chunkIndex} block ${block}: acknowledged ${acked[at]}, in flight [${[...(inflight[at] ?? [])].join(',')}], found ${found === 0 && !bytes.equals(base) ? 'foreign bytes' : found}`);
      if (!snapshot.subarray(block * blockBytes, (block + 1) * blockBytes).equals(base) && wrongSnapshot++ < 5) t.fail(`snapshot chunk ${chunkIndex} block ${block} changed`);
    }
  }
  t.equal(wrongVolume, 0, 'every block of the volume holds its last acknowledged write, one in flight, or the old bytes');
  t.equal(wrongSnapshot, 0, 'the snapshot reads the old bytes everywhere');
  t.equal(await sds.stop(), 0, 'and the SDS stops cleanly');
});
