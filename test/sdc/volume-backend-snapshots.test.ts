// The SDC's volume backend with snapshots (docs/snapshots.md, "On the SDC"), in process,
// against one wire peer that plays the SDS and records every request it gets:
// - every Read, Write, Trim and Allocation names the volume's head generation;
// - a write refused with Frozen is sent again after sdcFrozenRetryMs, without asking the
//   MDM for anything, and succeeds once the freeze lifts; one that stays frozen fails with
//   EIO at the piece's deadline, not before;
// - a write refused with StaleEpoch because its head moved (a snapshot) is sent again
//   naming the new head, which the router's refresh made the backend follow;
// - a volume that becomes read-only refuses writes on a connection opened read-write;
// - what the backend knew of holes survives a snapshot (the new head starts as the old)
//   and is forgotten after a restore (the new head descends from another generation).

import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { sdcFrozenRetryMs, sdcPieceTimeoutMs } from '../../src/common/limits.js';
import { VolumeBackend, type VolumeRouter } from '../../src/sdc/volume-backend.js';
import type { SdcVolume } from '../../src/wire/mdm-ops.js';
import { WirePeer, type WireReply } from '../../src/wire/peer.js';
import type { PlacementMap } from '../../src/wire/placement.js';
import { SdsOp, SdsStatus, decodeAllocation, decodeIo, encodeEpoch } from '../../src/wire/sds-ops.js';
import { MiB, makeMap, testClusterId, testPoolId, testSecret } from '../helpers/sds.js';

const log = pino({ level: 'silent' });
const sdsId = '5d50000000000001';
const vtreeId = '00000000000000c1';

/** One request as the SDS saw it. */
interface Seen {
  op: number;
  epoch: number;
  generation: number;
  chunkIndex: number;
  atMs: number;
}

interface Rig {
  backend: VolumeBackend;
  seen: Seen[];
  /** How often the backend asked its router for a fresh view. */
  refreshes: () => number;
  /** The map the router gives; a test replaces it to play the MDM. */
  setMap(map: PlacementMap): void;
}

const baseVolume: SdcVolume = { id: '00000000000000b1', name: 'vol1', vtreeId, generation: 0, poolId: testPoolId, sizeBytes: 4 * MiB, chunkBytes: MiB, accessMode: 'ReadWrite', exclusive: false, iopsLimit: 0, bandwidthLimitKbps: 0 };

/**
 * A backend for `volume` (4 MiB of 1 MiB chunks) whose one SDS answers with `serve`.
 * `onRefresh` plays the SDC's refreshView (the MDM's answer).
 */
async function rig(t: Test, volume: SdcVolume, serve: (seen: Seen) => WireReply | Promise<WireReply>, onRefresh: (rig: Rig) => void = () => undefined): Promise<Rig> {
  const seen: Seen[] = [];
  const server = net.createServer((socket) => {
    WirePeer.accept(socket, {
      clusterId: testClusterId,
      secret: Buffer.from(testSecret),
      role: 'sds',
      name: 'sds1',
      log,
      onRequest: async (request) => {
        const entry: Seen =
          request.op === SdsOp.Allocation
            ? { op: request.op, epoch: request.epoch, generation: decodeAllocation(request.payload).generation, chunkIndex: -1, atMs: Date.now() }
            : request.op === SdsOp.Flush
              ? { op: request.op, epoch: request.epoch, generation: -1, chunkIndex: -1, atMs: Date.now() }
              : { op: request.op, epoch: request.epoch, generation: decodeIo(request.payload).args.generation, chunkIndex: decodeIo(request.payload).args.chunkIndex, atMs: Date.now() };
        seen.push(entry);
        return serve(entry);
      },
    }).catch(() => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  const peer = await WirePeer.connect(socket, { clusterId: testClusterId, secret: Buffer.from(testSecret), role: 'sdc', name: 'sdc1', log });
  t.teardown(() => peer.destroy());
  let map = makeMap(5, [{ sdsId, address: '127.0.0.1:1' }], { pgCount: 1, mirrored: false });
  let refreshCount = 0;
  const result: Rig = {
    backend: undefined as unknown as VolumeBackend,
    seen,
    refreshes: () => refreshCount,
    setMap: (next) => (map = next),
  };
  const router: VolumeRouter = {
    map: () => map,
    refreshView: async () => {
      refreshCount += 1;
      onRefresh(result);
    },
    peer: async () => peer,
  };
  result.backend = await VolumeBackend.open(volume, router, log);
  return result;
}

const ok: WireReply = { status: SdsStatus.Ok };
const frozen: WireReply = { status: SdsStatus.Frozen, payload: Buffer.from(`V-Tree ${vtreeId} is frozen`) };

/** A map at `epoch` whose V-Tree has the generations given (child → parent) and these heads. */
function mapWithTree(epoch: number, generations: Record<string, number | null>, heads: number[]): PlacementMap {
  const map = makeMap(epoch, [{ sdsId, address: '127.0.0.1:1' }], { pgCount: 1, mirrored: false });
  map.vtrees = { [vtreeId]: { generations, heads: heads.map((generation) => ({ generation, snapshot: generation !== heads[0] })) } };
  return map;
}

t.test('every Read, Write, Trim and Allocation names the head generation', async (t) => {
  const { backend, seen } = await rig(t, { ...baseVolume, generation: 7, exclusive: true }, (entry) => (entry.op === SdsOp.Allocation ? { status: SdsStatus.Ok, payload: Buffer.alloc(4) } : entry.op === SdsOp.Read ? { status: SdsStatus.Ok, payload: Buffer.alloc(4096) } : ok));
  await backend.write(0, randomBytes(4096), { fua: false });
  await backend.read(0, Buffer.alloc(4096));
  await backend.trim(0, 4096, { fua: false });
  const ops = [SdsOp.Allocation, SdsOp.Write, SdsOp.Read, SdsOp.Trim];
  t.same(
    seen.map((entry) => entry.op),
    ops,
    'the SDS saw the allocation query at opening, then the write, the read and the trim',
  );
  t.same(
    seen.map((entry) => entry.generation),
    ops.map(() => 7),
    'each named generation 7, the head',
  );
});

t.test('a write refused with Frozen is sent again shortly, without a refresh, and succeeds once the freeze lifts', async (t) => {
  let frozenLeft = 4;
  const { backend, seen, refreshes } = await rig(t, baseVolume, (entry) => {
    if (entry.op !== SdsOp.Write || frozenLeft === 0) return ok;
    frozenLeft -= 1;
    return frozen;
  });
  const startMs = Date.now();
  await t.resolves(backend.write(0, randomBytes(4096), { fua: false }), 'the write succeeds');
  const writes = seen.filter((entry) => entry.op === SdsOp.Write);
  t.equal(writes.length, 5, 'after four Frozen answers, sent a fifth time');
  t.equal(refreshes(), 0, 'Frozen asks nothing of the MDM');
  t.ok(writes.every((entry) => entry.epoch === 5), 'every send on the same map');
  const gaps = writes.slice(1).map((entry, index) => entry.atMs - (writes[index] as Seen).atMs);
  t.ok(
    gaps.every((gapMs) => gapMs >= sdcFrozenRetryMs - 1),
    `each resend waited at least sdcFrozenRetryMs (${sdcFrozenRetryMs} ms): gaps ${gaps.join(', ')} ms`,
  );
  t.ok(Date.now() - startMs < 1000, `and the whole write took ${Date.now() - startMs} ms, not a retry backoff`);
});

t.test('a write whose V-Tree stays frozen fails with EIO at the piece deadline, not before', async (t) => {
  const { backend, seen } = await rig(t, baseVolume, (entry) => (entry.op === SdsOp.Write ? frozen : ok));
  const startMs = Date.now();
  await t.rejects(backend.write(0, randomBytes(4096), { fua: false }), { code: 'EIO', message: /frozen/ }, 'the write fails, saying the tree stayed frozen');
  const tookMs = Date.now() - startMs;
  t.ok(tookMs >= sdcPieceTimeoutMs - 200 && tookMs < sdcPieceTimeoutMs + 2000, `after about sdcPieceTimeoutMs (${sdcPieceTimeoutMs} ms): took ${tookMs} ms`);
  const writes = seen.filter((entry) => entry.op === SdsOp.Write).length;
  t.ok(writes > 50, `having sent it again and again (${writes} sends)`);
});

t.test('a write refused because its head moved is sent again naming the new head', async (t) => {
  // Before: generation 3 is the head. The snapshot: 3 gets children 8 (the volume) and 9
  // (the snapshot), at epoch 6. The SDS has the new map; the backend learns it on refresh.
  const { backend, seen, refreshes } = await rig(
    t,
    { ...baseVolume, generation: 3 },
    (entry) => (entry.epoch === 6 && entry.generation === 8 ? ok : { status: SdsStatus.StaleEpoch, payload: encodeEpoch(6) }),
    (self) => {
      self.setMap(mapWithTree(6, { '3': null, '8': 3, '9': 3 }, [8, 9]));
      self.backend.follow({ ...baseVolume, generation: 8 });
    },
  );
  await t.resolves(backend.write(0, randomBytes(2 * MiB), { fua: false }), 'the write succeeds');
  t.ok(refreshes() >= 1 && refreshes() <= 2, `after a refresh per piece at most (${refreshes()})`);
  const writes = seen.filter((entry) => entry.op === SdsOp.Write);
  t.same(
    writes.map((entry) => entry.generation).sort(),
    [3, 3, 8, 8],
    'each piece went to the old head, was refused, and went to the new head',
  );
  t.equal(backend.volume.generation, 8, 'the backend now names head 8');
  await backend.read(0, Buffer.alloc(4096));
  t.equal(seen[seen.length - 1]?.generation, 8, 'and so do its reads');
});

t.test('a volume made read-only refuses writes and trims on a backend opened read-write; reads go on', async (t) => {
  const { backend, seen } = await rig(t, baseVolume, (entry) => (entry.op === SdsOp.Read ? { status: SdsStatus.Ok, payload: Buffer.alloc(4096) } : ok));
  await t.resolves(backend.write(0, randomBytes(4096), { fua: false }), 'a write while read-write');
  backend.follow({ ...baseVolume, accessMode: 'ReadOnly' });
  const before = seen.length;
  await t.rejects(backend.write(0, randomBytes(4096), { fua: false }), { code: 'EROFS' }, 'a write once read-only is refused');
  await t.rejects(backend.trim(0, 4096, { fua: false }), { code: 'EROFS' }, 'and a trim');
  await t.rejects(backend.zero(0, 4096, { fua: false, mayTrim: true, fastOnly: false }), { code: 'EROFS' }, 'and a zero');
  t.equal(seen.length, before, 'none of them reached the SDS');
  await t.resolves(backend.read(0, Buffer.alloc(4096)), 'a read still works');
});

t.test('what the backend knows of holes survives a snapshot and is forgotten after a restore', async (t) => {
  // Exclusive: the SDS says at opening that chunk 0 holds data and chunks 1..3 none.
  const { backend, seen, ...control } = await rig(t, { ...baseVolume, generation: 3, exclusive: true }, (entry) => {
    if (entry.op === SdsOp.Allocation) return { status: SdsStatus.Ok, payload: Buffer.from([1, 0, 0, 0]) };
    if (entry.op === SdsOp.Read) return { status: SdsStatus.Ok, payload: Buffer.alloc(4096, 0x11) };
    return ok;
  });
  const readsOf = (): number => seen.filter((entry) => entry.op === SdsOp.Read).length;
  const target = Buffer.alloc(4096, 0xff);
  await backend.read(MiB, target);
  t.equal(readsOf(), 0, 'a known hole is read without asking');
  t.ok(target.every((byte) => byte === 0), 'as zeros');

  // A snapshot: the volume's new head 8 is a child of 3, so it starts with 3's content.
  control.setMap(mapWithTree(6, { '3': null, '8': 3, '9': 3 }, [8, 9]));
  backend.follow({ ...baseVolume, generation: 8, exclusive: true });
  await backend.read(MiB, target);
  t.equal(readsOf(), 0, 'after a snapshot, the hole is still known');

  // A restore from the snapshot whose head was 9: the volume's new head 11 is a child of
  // 9, which may hold anything since.
  control.setMap(mapWithTree(7, { '3': null, '9': 3, '10': 9, '11': 9 }, [11, 10]));
  backend.follow({ ...baseVolume, generation: 11, exclusive: true });
  await backend.read(MiB, target);
  t.equal(readsOf(), 1, 'after a restore, the SDS is asked');
  t.ok(target.every((byte) => byte === 0x11), 'and its bytes are returned');
  t.equal(seen[seen.length - 1]?.generation, 11, 'from the new head');
  const extents = await backend.extents(0, 4 * MiB, 16);
  t.ok(extents.every((extent) => !extent.hole), 'BLOCK_STATUS reports no hole it no longer knows');
});

t.test('a piece refused by an SDS with a newer map goes again at once when the SDC has that map, after a pause when it has not', async (t) => {
  // The SDS's epoch moves three times under the write (a freeze, a commit, ...); each refresh
  // gives the SDC the SDS's map.
  let sdsEpoch = 6;
  let refusalsLeft = 3;
  const caughtUp = await rig(
    t,
    baseVolume,
    (entry) => {
      if (entry.op !== SdsOp.Write) return ok;
      if (refusalsLeft === 0 && entry.epoch === sdsEpoch) return ok;
      refusalsLeft = Math.max(0, refusalsLeft - 1);
      return { status: SdsStatus.StaleEpoch, payload: encodeEpoch(sdsEpoch) };
    },
    (self) => {
      self.setMap(makeMap(sdsEpoch, [{ sdsId, address: '127.0.0.1:1' }], { pgCount: 1, mirrored: false }));
      if (refusalsLeft > 0) sdsEpoch += 1;
    },
  );
  let startMs = Date.now();
  await t.resolves(caughtUp.backend.write(0, randomBytes(4096), { fua: false }), 'the write succeeds');
  const quickMs = Date.now() - startMs;
  t.equal(caughtUp.seen.filter((entry) => entry.op === SdsOp.Write).length, 4, 'on its fourth send');
  t.ok(quickMs < 150, `without the retry pauses (200 ms, then 400 ms): took ${quickMs} ms`);

  // The MDM lags: the SDC's refreshes bring nothing newer, so it pauses between attempts.
  let lagging = 3;
  const stale = await rig(
    t,
    baseVolume,
    (entry) => (entry.op === SdsOp.Write && entry.epoch < 6 ? { status: SdsStatus.StaleEpoch, payload: encodeEpoch(6) } : ok),
    (self) => {
      if (--lagging === 0) self.setMap(makeMap(6, [{ sdsId, address: '127.0.0.1:1' }], { pgCount: 1, mirrored: false }));
    },
  );
  startMs = Date.now();
  await t.resolves(stale.backend.write(0, randomBytes(4096), { fua: false }), 'the write succeeds');
  const slowMs = Date.now() - startMs;
  t.ok(slowMs >= 190, `after the usual pause while the SDC's map lagged: took ${slowMs} ms`);
});
