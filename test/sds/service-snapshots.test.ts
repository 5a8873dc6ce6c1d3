// Proves the SDS's snapshot behaviour (docs/snapshots.md, "On the SDS") on real SDS services
// (SdsService over real chunk stores on sparse files, real sockets, the real wire), driven
// by a test client with explicit placement maps, as the MDM and the SDC will drive them:
// - reads go through the generation path; writes and trims must name a head (StaleEpoch
//   otherwise); copy on write, partial and whole trims of shared chunks, whole writes and
//   Allocation give what the design says; the secondary ends up with the same keys and
//   bytes (checked by swapping the roles and reading every generation from the other copy);
// - a copy on write whose secondary lacks the ancestor (a copy being rebuilt) still leaves
//   the right bytes there: the primary sends the whole resulting chunk;
// - a map that freezes a tree is answered only after the write in flight to it completed
//   (its mirror held back by a stand-in secondary), writes are refused with Frozen while
//   reads and other trees go on, and the freeze holds until a map lifts it (never by itself);
// - a mirror write from the epoch before is taken when the group is placed alike, unless its
//   generation is no longer a head;
// - after a map drops a snapshot, the keys no head reaches are freed on both copies, and the
//   stats count what only snapshots reach as snapshotBytes; a trim of such a key that the
//   secondary refused (it was a map behind) is sent again once it can take it.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import { staleCollectDelayMs } from '../../src/common/limits.js';
import { SdsControl, type ControlHost } from '../../src/sds/control-ops.js';
import { ChunkStore } from '../../src/sds/chunk-store.js';
import { SdsService } from '../../src/sds/service.js';
import type { SdsState } from '../../src/sds/state.js';
import { WirePeer, type WireReply, type WireRequest } from '../../src/wire/peer.js';
import { placementGroupOf, type PlacementMap, type VTreeMap } from '../../src/wire/placement.js';
import { IoFlag, SdsOp, SdsStatus, encodeAllocation, encodeIo, type SdsStats } from '../../src/wire/sds-ops.js';
import { sparseFile } from '../helpers/files.js';
import { connectWire, testClusterId, testPoolId, testSecret } from '../helpers/sds.js';

const KiB = 1024;
const chunkBytes = 64 * KiB;
const pgCount = 8;
const vtreeId = '1111222233334444';
const otherVtreeId = '5555666677778888';
const log = pino({ level: 'silent' });

interface Node {
  sdsId: string;
  address: string;
  peer: WirePeer;
}

interface Host {
  testdir(): string;
  teardown(fn: () => unknown): void;
}

async function startNode(t: Host, dir: string, name: string): Promise<Node> {
  const sdsId = randomBytes(8).toString('hex');
  const store = await ChunkStore.open([sparseFile(dir, `${name}.img`, 32 * 1024 * KiB)], { owner: { clusterId: testClusterId, sdsId, sdsName: name }, chunkBytes, force: false, log });
  const dataDir = path.join(dir, `${name}-data`);
  fs.mkdirSync(dataDir);
  const state: SdsState = { clusterId: testClusterId, sdsId, name, chunkBytes, map: null, reservations: {}, devicePaths: [] };
  const service = new SdsService({ identity: { clusterId: testClusterId, sdsId, name }, secret: Buffer.from(testSecret), store, state, dataDir, log, payloadChecksums: false });
  const bound = await service.listen('127.0.0.1', 0);
  t.teardown(async () => {
    await service.close();
    await store.close();
  });
  const address = `127.0.0.1:${bound.port}`;
  return { sdsId, address, peer: await connectWire(t, address) };
}

/** Every group has the same primary and secondary (null: unmirrored). */
function mapOf(epoch: number, sds: Array<Pick<Node, 'sdsId' | 'address'>>, primary: string, secondary: string | null, vtrees?: Record<string, VTreeMap>): PlacementMap {
  return {
    epoch,
    sds: Object.fromEntries(sds.map((node) => [node.sdsId, { address: node.address }])),
    pools: { [testPoolId]: { chunkBytes, groups: Array.from({ length: pgCount }, () => ({ primary, secondary })) } },
    ...(vtrees !== undefined ? { vtrees } : {}),
  };
}

/** Volume at head 1, a snapshot at head 2, both children of the frozen generation 0. */
const snapshotTree: VTreeMap = { generations: { '0': null, '1': 0, '2': 0 }, heads: [{ generation: 1, snapshot: false }, { generation: 2, snapshot: true }] };

async function setMaps(nodes: Node[], map: PlacementMap): Promise<void> {
  for (const node of nodes) {
    const reply = await node.peer.request(SdsOp.SetMap, Buffer.from(JSON.stringify(map)));
    if (reply.status !== SdsStatus.Ok) throw new Error(`SetMap ${map.epoch} refused: ${reply.payload.toString()}`);
  }
}

interface Io {
  chunkIndex: number;
  generation: number;
  offsetBytes?: number;
  lengthBytes?: number;
  flags?: number;
  vtree?: string;
}

function args(io: Io, lengthBytes: number): Parameters<typeof encodeIo>[0] {
  const vtree = io.vtree ?? vtreeId;
  return { poolId: testPoolId, vtreeId: vtree, pgIndex: placementGroupOf(vtree, io.chunkIndex, pgCount), chunkIndex: io.chunkIndex, generation: io.generation, offsetBytes: io.offsetBytes ?? 0, lengthBytes, flags: io.flags ?? 0 };
}

async function write(node: Node, epoch: number, io: Io, data: Buffer): Promise<number> {
  return (await node.peer.request(SdsOp.Write, encodeIo(args(io, data.length), data), { epoch })).status;
}

async function trim(node: Node, epoch: number, io: Io): Promise<number> {
  return (await node.peer.request(SdsOp.Trim, encodeIo(args(io, io.lengthBytes ?? chunkBytes)), { epoch })).status;
}

async function read(node: Node, epoch: number, io: Io): Promise<Buffer> {
  const reply = await node.peer.request(SdsOp.Read, encodeIo(args(io, io.lengthBytes ?? chunkBytes)), { epoch });
  if (reply.status !== SdsStatus.Ok) throw new Error(`read of ${io.chunkIndex}:${io.generation} failed with ${reply.status}: ${reply.payload.toString()}`);
  return Buffer.from(reply.payload);
}

async function stats(node: Node): Promise<SdsStats> {
  return JSON.parse((await node.peer.request(SdsOp.Stats, Buffer.alloc(0))).payload.toString()) as SdsStats;
}

/** Stats once `accept` takes them (snapshot bytes are counted in the background), or the last after 10 s. */
async function statsWhen(node: Node, accept: (stats: SdsStats) => boolean): Promise<SdsStats> {
  const deadlineMs = Date.now() + 10_000;
  for (;;) {
    const current = await stats(node);
    if (accept(current) || Date.now() > deadlineMs) return current;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const fill = (byte: number): Buffer => Buffer.alloc(chunkBytes, byte);
function patched(base: Buffer, offsetBytes: number, data: Buffer): Buffer {
  const copy = Buffer.from(base);
  data.copy(copy, offsetBytes);
  return copy;
}

t.test('generations on two copies: copy on write, trims, whole writes, Allocation', async (t) => {
  const dir = t.testdir();
  const a = await startNode(t, dir, 'sds-a');
  const b = await startNode(t, dir, 'sds-b');
  await setMaps([a, b], mapOf(1, [a, b], a.sdsId, b.sdsId));
  for (let chunkIndex = 0; chunkIndex < 4; chunkIndex++) t.equal(await write(a, 1, { chunkIndex, generation: 0 }, fill(0x10 + chunkIndex)), SdsStatus.Ok, `chunk ${chunkIndex} written before the snapshot`);

  await setMaps([a, b], mapOf(2, [a, b], a.sdsId, b.sdsId, { [vtreeId]: snapshotTree }));
  t.equal(await write(a, 2, { chunkIndex: 0, generation: 0 }, fill(1)), SdsStatus.StaleEpoch, 'a write to the frozen generation is refused with StaleEpoch');
  t.equal(await trim(a, 2, { chunkIndex: 0, generation: 0 }), SdsStatus.StaleEpoch, 'and a trim');
  t.equal(await write(a, 2, { chunkIndex: 0, generation: 9 }, fill(1)), SdsStatus.StaleEpoch, 'a generation the tree does not have is refused');
  t.equal((await a.peer.request(SdsOp.Read, encodeIo(args({ chunkIndex: 0, generation: 9 }, 4096)), { epoch: 2 })).status, SdsStatus.StaleEpoch, 'and read of it');
  t.ok((await read(a, 2, { chunkIndex: 0, generation: 0 })).equals(fill(0x10)), 'the frozen generation still reads');

  const small = randomBytes(4096);
  t.equal(await write(a, 2, { chunkIndex: 0, generation: 1, offsetBytes: 8192 }, small), SdsStatus.Ok, 'a partial write to a shared chunk (copy on write)');
  t.equal(await trim(a, 2, { chunkIndex: 1, generation: 1, offsetBytes: 4096, lengthBytes: 8192 }), SdsStatus.Ok, 'a partial trim of a shared chunk');
  t.equal(await trim(a, 2, { chunkIndex: 2, generation: 1 }), SdsStatus.Ok, 'a whole trim of a shared chunk');
  const whole = randomBytes(chunkBytes);
  t.equal(await write(a, 2, { chunkIndex: 3, generation: 2 }, whole), SdsStatus.Ok, 'a whole write to a shared chunk, from the snapshot');
  t.equal(await write(a, 2, { chunkIndex: 9, generation: 1, offsetBytes: 512 }, small), SdsStatus.Ok, 'a partial write to a chunk nobody holds');
  t.equal(await write(a, 2, { chunkIndex: 0, generation: 1, offsetBytes: 0 }, small), SdsStatus.Ok, 'a second write to the copied chunk');

  const expected: Record<string, Buffer> = {
    '0:1': patched(patched(fill(0x10), 8192, small), 0, small),
    '0:2': fill(0x10),
    '1:1': patched(fill(0x11), 4096, Buffer.alloc(8192)),
    '1:2': fill(0x11),
    '2:1': Buffer.alloc(chunkBytes),
    '2:2': fill(0x12),
    '3:1': fill(0x13),
    '3:2': whole,
    '9:1': patched(Buffer.alloc(chunkBytes), 512, small),
    '9:2': Buffer.alloc(chunkBytes),
  };
  const checkAll = async (node: Node, epoch: number, copy: string): Promise<void> => {
    for (const [name, bytes] of Object.entries(expected)) {
      const [chunkIndex, generation] = name.split(':').map(Number) as [number, number];
      t.ok((await read(node, epoch, { chunkIndex, generation })).equals(bytes), `${copy}: chunk ${chunkIndex} of generation ${generation} reads as expected`);
    }
  };
  await checkAll(a, 2, 'primary');

  const allocation = await a.peer.request(SdsOp.Allocation, encodeAllocation({ poolId: testPoolId, vtreeId, generation: 1, chunkIndexFirst: 0, chunkCount: 11 }));
  t.same([...allocation.payload], [1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0], 'Allocation of the volume counts its own and its ancestors\u2019 chunks');
  const snapAllocation = await a.peer.request(SdsOp.Allocation, encodeAllocation({ poolId: testPoolId, vtreeId, generation: 2, chunkIndexFirst: 0, chunkCount: 11 }));
  t.same([...snapAllocation.payload], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0], 'and of the snapshot, its own');
  const staleAllocation = await a.peer.request(SdsOp.Allocation, encodeAllocation({ poolId: testPoolId, vtreeId, generation: 5, chunkIndexFirst: 0, chunkCount: 1 }));
  t.equal(staleAllocation.status, SdsStatus.StaleEpoch, 'Allocation of a generation the tree lacks is refused');

  // Keys: 4 of generation 0, copies 0:1 1:1 2:1 (zeroed) 3:2 9:1.
  const statsA = await statsWhen(a, (current) => current.devices[0]?.snapshotBytes === 4 * chunkBytes);
  t.equal(statsA.devices[0]?.usedBytes, 9 * chunkBytes, 'the primary holds the 9 keys');
  t.equal(statsA.devices[0]?.snapshotBytes, 4 * chunkBytes, 'of which 4 only the snapshot reaches (0:0, 1:0, 2:0 and 3:2)');
  t.equal((await stats(b)).devices[0]?.usedBytes, 9 * chunkBytes, 'the secondary holds as many');

  await setMaps([a, b], mapOf(3, [a, b], b.sdsId, a.sdsId, { [vtreeId]: snapshotTree }));
  await checkAll(b, 3, 'secondary, promoted');

  t.equal(await trim(b, 3, { chunkIndex: 9, generation: 1 }), SdsStatus.Ok, 'a whole trim of a chunk only the head holds');
  t.equal(await trim(b, 3, { chunkIndex: 3, generation: 1 }), SdsStatus.Ok, 'and of one the ancestor holds');
  t.same([(await stats(a)).devices[0]?.usedBytes, (await stats(b)).devices[0]?.usedBytes], [9 * chunkBytes, 9 * chunkBytes], 'the first key is freed, the second kept zeroed, on both copies');
  t.ok((await read(b, 3, { chunkIndex: 3, generation: 1 })).equals(Buffer.alloc(chunkBytes)), 'the trimmed chunk reads zeros');
  t.ok((await read(b, 3, { chunkIndex: 3, generation: 2 })).equals(whole), 'the snapshot keeps its own');
});

t.test('a copy on write reaches a secondary that lacks the ancestor as the whole chunk', async (t) => {
  const dir = t.testdir();
  const a = await startNode(t, dir, 'sds-a');
  const c = await startNode(t, dir, 'sds-c');
  await setMaps([a, c], mapOf(1, [a, c], a.sdsId, null));
  t.equal(await write(a, 1, { chunkIndex: 0, generation: 0 }, fill(0x40)), SdsStatus.Ok, 'written while unmirrored: only the primary holds it');
  // The copy on c is new (a rebuild would bring chunk 0:0 later); the snapshot is taken meanwhile.
  await setMaps([a, c], mapOf(2, [a, c], a.sdsId, c.sdsId, { [vtreeId]: snapshotTree }));
  const small = randomBytes(4096);
  t.equal(await write(a, 2, { chunkIndex: 0, generation: 1, offsetBytes: 4096 }, small), SdsStatus.Ok, 'copy on write with the mirror');
  await setMaps([a, c], mapOf(3, [a, c], c.sdsId, a.sdsId, { [vtreeId]: snapshotTree }));
  t.ok((await read(c, 3, { chunkIndex: 0, generation: 1 })).equals(patched(fill(0x40), 4096, small)), 'the new copy holds the ancestor\u2019s bytes merged with the write');
});

/** A secondary that holds back every mirror write until `open()`: a slow mirror, for the freeze. */
async function heldSecondary(t: Host): Promise<{ sdsId: string; address: string; open: () => void; received: () => number }> {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let count = 0;
  const server = net.createServer((socket) => {
    WirePeer.accept(socket, {
      clusterId: testClusterId,
      secret: Buffer.from(testSecret),
      role: 'sds',
      name: 'held',
      log,
      onRequest: async (request: WireRequest): Promise<WireReply> => {
        if (request.op === SdsOp.Write) {
          count += 1;
          await gate;
        }
        return { status: SdsStatus.Ok, payload: Buffer.alloc(0) };
      },
    }).catch(() => socket.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    release();
    server.close();
  });
  const port = (server.address() as net.AddressInfo).port;
  return { sdsId: randomBytes(8).toString('hex'), address: `127.0.0.1:${port}`, open: release, received: () => count };
}

t.test('a freeze waits for the writes in flight, refuses new ones with Frozen, and holds until a map lifts it', async (t) => {
  const dir = t.testdir();
  const a = await startNode(t, dir, 'sds-a');
  const held = await heldSecondary(t);
  const nodes = [a, held];
  await setMaps([a], mapOf(1, nodes, a.sdsId, held.sdsId));
  const events: string[] = [];
  const inflight = write(a, 1, { chunkIndex: 0, generation: 0 }, fill(0x55)).then((status) => {
    events.push('write');
    return status;
  });
  while (held.received() === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  const frozen: Record<string, VTreeMap> = { [vtreeId]: { generations: { '0': null }, heads: [{ generation: 0, snapshot: false }], frozen: true } };
  const frozenAtMs = Date.now();
  const setMap = a.peer.request(SdsOp.SetMap, Buffer.from(JSON.stringify(mapOf(2, nodes, a.sdsId, held.sdsId, frozen)))).then((reply) => {
    events.push('setMap');
    return reply.status;
  });
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.same(events, [], 'the freezing map is not answered while the write is in flight');
  t.equal(await write(a, 2, { chunkIndex: 1, generation: 0 }, fill(1)), SdsStatus.Frozen, 'a new write to the frozen tree is refused with Frozen');
  t.equal(await trim(a, 2, { chunkIndex: 1, generation: 0 }), SdsStatus.Frozen, 'and a trim');
  // (Not of chunk 0: a read waits for the write in flight to its range.)
  t.equal((await a.peer.request(SdsOp.Read, encodeIo(args({ chunkIndex: 2, generation: 0 }, 4096)), { epoch: 2 })).status, SdsStatus.Ok, 'reads go on');
  events.push('mirror released');
  held.open();
  t.equal(await inflight, SdsStatus.Ok, 'the write in flight completes');
  t.equal(await setMap, SdsStatus.Ok, 'and the map is answered');
  // The two replies travel on one connection in either order; what counts is that the map
  // waited for the write's mirror.
  t.equal(events[0], 'mirror released', 'only once the write was on both copies');
  t.equal(await write(a, 2, { chunkIndex: 1, generation: 0, vtree: otherVtreeId }, fill(2)), SdsStatus.Ok, 'another tree is written meanwhile');

  // Only the Master knows whether the group was committed: the SDS never decides alone.
  const heldMs = Date.now() - frozenAtMs;
  t.equal(await write(a, 2, { chunkIndex: 1, generation: 0 }, fill(3)), SdsStatus.Frozen, `still frozen after ${heldMs} ms`);
  await setMaps([a], mapOf(3, nodes, a.sdsId, held.sdsId));
  t.equal(await write(a, 3, { chunkIndex: 1, generation: 0 }, fill(3)), SdsStatus.Ok, 'a map that lifts the freeze lets writes in');
});

t.test('a mirror write from the epoch before is taken only for a head', async (t) => {
  const dir = t.testdir();
  const a = await startNode(t, dir, 'sds-a');
  const b = await startNode(t, dir, 'sds-b');
  const frozen: Record<string, VTreeMap> = { [vtreeId]: { generations: { '0': null }, heads: [{ generation: 0, snapshot: false }], frozen: true } };
  await setMaps([b], mapOf(1, [a, b], a.sdsId, b.sdsId));
  await setMaps([b], mapOf(2, [a, b], a.sdsId, b.sdsId, frozen));
  t.equal(await write(b, 1, { chunkIndex: 0, generation: 0, flags: IoFlag.Replica }, fill(7)), SdsStatus.Ok, 'placed alike, generation still a head: taken');
  await setMaps([b], mapOf(3, [a, b], a.sdsId, b.sdsId, { [vtreeId]: snapshotTree }));
  t.equal(await write(b, 2, { chunkIndex: 0, generation: 0, flags: IoFlag.Replica }, fill(8)), SdsStatus.StaleEpoch, 'into a generation a snapshot now shares: refused');
  t.equal(await write(b, 1, { chunkIndex: 0, generation: 1, flags: IoFlag.Replica }, fill(8)), SdsStatus.StaleEpoch, 'two epochs back: refused');
  await setMaps([b], mapOf(4, [a, b], b.sdsId, a.sdsId, { [vtreeId]: snapshotTree }));
  t.equal(await write(b, 3, { chunkIndex: 0, generation: 1, flags: IoFlag.Replica }, fill(8)), SdsStatus.StaleEpoch, 'the group moved: refused');
});

t.test('keys no head reaches are freed on both copies after the map drops a snapshot', async (t) => {
  const dir = t.testdir();
  const a = await startNode(t, dir, 'sds-a');
  const b = await startNode(t, dir, 'sds-b');
  await setMaps([a, b], mapOf(1, [a, b], a.sdsId, b.sdsId));
  t.equal(await write(a, 1, { chunkIndex: 0, generation: 0 }, fill(0x60)), SdsStatus.Ok);
  t.equal(await write(a, 1, { chunkIndex: 1, generation: 0 }, fill(0x61)), SdsStatus.Ok);
  await setMaps([a, b], mapOf(2, [a, b], a.sdsId, b.sdsId, { [vtreeId]: snapshotTree }));
  t.equal(await write(a, 2, { chunkIndex: 0, generation: 1 }, fill(0x70)), SdsStatus.Ok, 'the volume rewrites chunk 0');
  t.equal(await write(a, 2, { chunkIndex: 1, generation: 2, offsetBytes: 0 }, Buffer.alloc(4096, 0x71)), SdsStatus.Ok, 'the snapshot writes chunk 1');
  t.equal((await stats(a)).devices[0]?.usedBytes, 4 * chunkBytes, 'four keys before');
  // The snapshot is removed: generation 2 goes; 0:0 is now shadowed for the one head left.
  const pruned: VTreeMap = { generations: { '0': null, '1': 0 }, heads: [{ generation: 1, snapshot: false }] };
  await setMaps([a, b], mapOf(3, [a, b], a.sdsId, b.sdsId, { [vtreeId]: pruned }));
  const deadlineMs = Date.now() + staleCollectDelayMs + 10_000;
  let used: Array<number | undefined> = [];
  while (Date.now() < deadlineMs) {
    used = [(await stats(a)).devices[0]?.usedBytes, (await stats(b)).devices[0]?.usedBytes];
    if (used[0] === 2 * chunkBytes && used[1] === 2 * chunkBytes) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  t.same(used, [2 * chunkBytes, 2 * chunkBytes], 'both copies keep 1:0 and 0:1 only');
  t.equal((await statsWhen(a, (current) => current.devices[0]?.snapshotBytes === 0)).devices[0]?.snapshotBytes, 0, 'nothing is a snapshot\u2019s alone any more');
  t.ok((await read(a, 3, { chunkIndex: 0, generation: 1 })).equals(fill(0x70)), 'the volume reads its chunk 0');
  t.ok((await read(a, 3, { chunkIndex: 1, generation: 1 })).equals(fill(0x61)), 'and chunk 1 through generation 0');
  await setMaps([a, b], mapOf(4, [a, b], b.sdsId, a.sdsId, { [vtreeId]: pruned }));
  t.ok((await read(b, 4, { chunkIndex: 0, generation: 1 })).equals(fill(0x70)), 'the other copy too');
  t.ok((await read(b, 4, { chunkIndex: 1, generation: 1 })).equals(fill(0x61)), 'both chunks');
});

t.test('a shadowed key whose trim the secondary refused (a map behind) is trimmed there once it has the map', async (t) => {
  const dir = t.testdir();
  const a = await startNode(t, dir, 'sds-a');
  const b = await startNode(t, dir, 'sds-b');
  await setMaps([a, b], mapOf(1, [a, b], a.sdsId, b.sdsId));
  t.equal(await write(a, 1, { chunkIndex: 0, generation: 0 }, fill(0x60)), SdsStatus.Ok);
  await setMaps([a, b], mapOf(2, [a, b], a.sdsId, b.sdsId, { [vtreeId]: snapshotTree }));
  t.equal(await write(a, 2, { chunkIndex: 0, generation: 1 }, fill(0x70)), SdsStatus.Ok, 'the volume rewrites chunk 0');
  const pruned: VTreeMap = { generations: { '0': null, '1': 0 }, heads: [{ generation: 1, snapshot: false }] };
  // Only the primary has the map that drops the snapshot: its collector frees 0:0 and sends
  // the trim at epoch 3, which the secondary (still at 2) refuses.
  await setMaps([a], mapOf(3, [a, b], a.sdsId, b.sdsId, { [vtreeId]: pruned }));
  const refusedBy = Date.now() + staleCollectDelayMs + 10_000;
  while (Date.now() < refusedBy && (await stats(a)).devices[0]?.usedBytes !== chunkBytes) await new Promise((resolve) => setTimeout(resolve, 100));
  t.equal((await stats(a)).devices[0]?.usedBytes, chunkBytes, 'the primary freed 0:0 and keeps 0:1');
  t.equal((await stats(b)).devices[0]?.usedBytes, 2 * chunkBytes, 'the secondary, a map behind, still holds both');
  await setMaps([b], mapOf(3, [a, b], a.sdsId, b.sdsId, { [vtreeId]: pruned }));
  const deadlineMs = Date.now() + 2 * staleCollectDelayMs + 10_000;
  let used: number | undefined;
  while (Date.now() < deadlineMs) {
    used = (await stats(b)).devices[0]?.usedBytes;
    if (used === chunkBytes) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  t.equal(used, chunkBytes, 'the trim is sent again and the secondary frees 0:0');
  await setMaps([a, b], mapOf(4, [a, b], b.sdsId, a.sdsId, { [vtreeId]: pruned }));
  t.ok((await read(b, 4, { chunkIndex: 0, generation: 1 })).equals(fill(0x70)), 'the secondary still reads the volume’s chunk 0');
});

t.test('a rebuild carries every generation, and copies on write during it land right', async (t) => {
  const dir = t.testdir();
  const a = await startNode(t, dir, 'sds-a');
  const c = await startNode(t, dir, 'sds-c');
  const chunkCount = 24;
  await setMaps([a, c], mapOf(1, [a, c], a.sdsId, null));
  for (let chunkIndex = 0; chunkIndex < chunkCount; chunkIndex++) t.equal(await write(a, 1, { chunkIndex, generation: 0 }, fill(chunkIndex)), SdsStatus.Ok);
  await setMaps([a, c], mapOf(2, [a, c], a.sdsId, null, { [vtreeId]: snapshotTree }));
  const expected = new Map<string, Buffer>();
  for (let chunkIndex = 0; chunkIndex < chunkCount; chunkIndex++) {
    expected.set(`${chunkIndex}:1`, fill(chunkIndex));
    expected.set(`${chunkIndex}:2`, fill(chunkIndex));
  }
  // Before the rebuild: the volume copies every third chunk, the snapshot every fourth.
  const change = async (epoch: number, chunkIndex: number, generation: number): Promise<void> => {
    const data = randomBytes(4096);
    t.equal(await write(a, epoch, { chunkIndex, generation, offsetBytes: 4096 * (chunkIndex % 8) }, data), SdsStatus.Ok);
    const name = `${chunkIndex}:${generation}`;
    expected.set(name, patched(expected.get(name) as Buffer, 4096 * (chunkIndex % 8), data));
  };
  for (let chunkIndex = 0; chunkIndex < chunkCount; chunkIndex += 3) await change(2, chunkIndex, 1);
  for (let chunkIndex = 0; chunkIndex < chunkCount; chunkIndex += 4) await change(2, chunkIndex, 2);

  // c becomes every group's secondary and is filled from a; copies on write go on meanwhile.
  await setMaps([a, c], mapOf(3, [a, c], a.sdsId, c.sdsId, { [vtreeId]: snapshotTree }));
  for (let pgIndex = 0; pgIndex < pgCount; pgIndex++) {
    const order = { poolId: testPoolId, pgIndex, targetSdsId: c.sdsId, bytesPerSecondMax: 0, chunksInflightMax: 2, mode: 'full', epoch: 3 };
    const reply = await a.peer.request(SdsOp.Rebuild, Buffer.from(JSON.stringify(order)));
    t.equal(reply.status, SdsStatus.Ok, `rebuild of group ${pgIndex} ordered`);
  }
  for (let chunkIndex = 1; chunkIndex < chunkCount; chunkIndex += 2) await change(3, chunkIndex, 1);
  const deadlineMs = Date.now() + 30_000;
  let jobs: SdsStats['rebuilds'] = [];
  while (Date.now() < deadlineMs) {
    jobs = (await stats(a)).rebuilds;
    if (jobs.length === pgCount && jobs.every((job) => job.state === 'done' || job.state === 'failed')) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  t.ok(jobs.length === pgCount && jobs.every((job) => job.state === 'done'), `every rebuild job is done (${jobs.map((job) => job.state).join(',')})`);
  t.equal((await stats(c)).devices[0]?.usedBytes, (await stats(a)).devices[0]?.usedBytes, 'the new copy holds as many keys as the source');

  await setMaps([a, c], mapOf(4, [a, c], c.sdsId, a.sdsId, { [vtreeId]: snapshotTree }));
  let wrong = 0;
  for (const [name, bytes] of expected) {
    const [chunkIndex, generation] = name.split(':').map(Number) as [number, number];
    if (!(await read(c, 4, { chunkIndex, generation })).equals(bytes)) wrong += 1;
  }
  t.equal(wrong, 0, `the rebuilt copy, promoted, reads every chunk of both heads as the source had it (${expected.size} checked)`);
});

t.test('a freeze never lapses by itself, and one in the map kept across a restart holds too', async (t) => {
  const frozenMap = { epoch: 7, sds: {}, pools: {}, vtrees: { [vtreeId]: { generations: { '0': null }, heads: [{ generation: 0, snapshot: false }], frozen: true as const } } };
  const warnings: string[] = [];
  const host = { state: { map: frozenMap }, log: { warn: (_fields: unknown, message: string) => warnings.push(message), info: () => undefined } } as unknown as ControlHost;
  const control = new SdsControl(host);
  t.ok(control.isFrozen(vtreeId), 'frozen from the map kept on disk');
  t.ok(control.isFrozen(vtreeId, Date.now() + 24 * 3600 * 1000), 'still frozen a day later: only a map lifts it');
  t.equal(warnings.length, 1, 'a long freeze is logged once');
  t.notOk(control.isFrozen(otherVtreeId), 'another tree is not');
});
