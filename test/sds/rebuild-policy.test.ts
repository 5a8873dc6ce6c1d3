// Proves that a running rebuild job follows its pool's IO priority policy live: the MDM
// gives the same order again with new throttle numbers (docs/rebuild-policy.md), and the
// job, without starting over, copies at the new rate within about a second. A real chunk
// store and cursor file; the target SDS is a stand-in that takes each Put after a fixed
// delay, so that what limits the copy is the throttle. Rates are measured as bytes copied
// over a window of wall time, with generous bounds (the machine runs other work).
//
// - limitBandwidth: 1 MiB/s, then 4 MiB/s, then back down;
// - limitNumOfConcurrentIos: 1 copy in flight, then 4 (each Put takes 40 ms);
// - favorAppIos: the bandwidth holds only while clients do IO on the SDS;
// - a job of a pool with a policy and one without draw on separate budgets;
// - a repeated order with a bad policy name is refused and changes nothing.

import { pino } from 'pino';
import t from 'tap';
import { ChunkStore, type ChunkKey } from '../../src/sds/chunk-store.js';
import { RangeLocks } from '../../src/sds/range-locks.js';
import { RebuildSource, type RebuildHost } from '../../src/sds/rebuild.js';
import { RebuildCursors } from '../../src/sds/rebuild-cursors.js';
import type { WirePeer } from '../../src/wire/peer.js';
import type { PlacementMap } from '../../src/wire/placement.js';
import { SdsOp, SdsStatus, decodeIo, encodeListedChunks, type RebuildArgs } from '../../src/wire/sds-ops.js';
import { sparseFile } from '../helpers/files.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const chunkBytes = 64 * KiB;
const poolId = '00000000000000a1';
const otherPoolId = '00000000000000a2';
const vtreeId = '7777000011112222';
const sourceSdsId = '0a0b0c0d0e0f1011';
const targetSdsId = '00000000000000c3';
const chunkCount = 600;
const log = pino({ level: 'silent' });

const map: PlacementMap = {
  epoch: 5,
  sds: { [sourceSdsId]: { address: '127.0.0.1:1' }, [targetSdsId]: { address: '127.0.0.1:2' } },
  pools: {
    [poolId]: { chunkBytes, groups: [{ primary: sourceSdsId, secondary: targetSdsId }] },
    [otherPoolId]: { chunkBytes, groups: [{ primary: sourceSdsId, secondary: targetSdsId }] },
  },
};

interface Host {
  testdir(): string;
  teardown(fn: () => unknown): void;
}

interface Rig {
  source: RebuildSource;
  /** Bytes Put on the target, per pool. */
  putBytes: Map<string, number>;
  /** Most Puts in flight at once on the target since the last reset. */
  inflight: { now: number; max: number };
  clientBusy: { value: boolean };
  stop: () => void;
}

async function rig(t: Host, options: { putDelayMs: number; pools?: string[] }): Promise<Rig> {
  const dir = t.testdir();
  const store = await ChunkStore.open([sparseFile(dir, 'device.img', 128 * MiB)], {
    owner: { clusterId: 'c0ffee00c0ffee00', sdsId: sourceSdsId, sdsName: 'sds-a' },
    chunkBytes,
    force: false,
    log,
  });
  t.teardown(() => store.close());
  for (const pool of options.pools ?? [poolId]) {
    for (let chunkIndex = 0; chunkIndex < chunkCount; chunkIndex++) await store.write({ poolId: pool, vtreeId, chunkIndex, generation: 0 } satisfies ChunkKey, 0, Buffer.alloc(chunkBytes, chunkIndex), { fua: false });
  }
  const cursors = await RebuildCursors.open(dir, {}, log);
  const targetPeer = { request: async () => ({ status: SdsStatus.Ok, payload: encodeListedChunks([]) }) } as unknown as WirePeer;
  const putBytes = new Map<string, number>();
  const inflight = { now: 0, max: 0 };
  const clientBusy = { value: false };
  let closing = false;
  const host: RebuildHost = {
    sdsId: sourceSdsId,
    store,
    locks: new RangeLocks(),
    cursors: Promise.resolve(cursors),
    log,
    map: () => map,
    // The jobs are stopped at the end of each test this way (they resume from a cursor in real life).
    isClosing: () => closing,
    isClientBusy: () => clientBusy.value,
    forward: async (_sdsId, op, payload) => {
      if (op !== SdsOp.Put) return;
      inflight.now += 1;
      inflight.max = Math.max(inflight.max, inflight.now);
      try {
        await new Promise((resolve) => setTimeout(resolve, options.putDelayMs));
        const { args } = decodeIo(payload);
        putBytes.set(args.poolId, (putBytes.get(args.poolId) ?? 0) + chunkBytes);
      } finally {
        inflight.now -= 1;
      }
    },
    peerFor: async () => targetPeer,
    // A job stopped by `closing` fails (RebuildSource marks it failed): that is the end of it here.
    track: (work) => work,
  };
  const source = new RebuildSource(host);
  const stop = (): void => {
    closing = true;
  };
  t.teardown(async () => {
    stop();
    const deadlineMs = Date.now() + 5000;
    while (source.progress().some((job) => job.state === 'running' || job.state === 'waiting') && Date.now() < deadlineMs) await new Promise((resolve) => setTimeout(resolve, 20));
  });
  return { source, putBytes, inflight, clientBusy, stop };
}

function order(throttle: Partial<RebuildArgs>, pool = poolId): Buffer {
  const args: RebuildArgs = { poolId: pool, pgIndex: 0, targetSdsId, bytesPerSecondMax: 0, chunksInflightMax: 1, mode: 'full', epoch: 5, ...throttle };
  return Buffer.from(JSON.stringify(args));
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Bytes/s copied for `pool` over `windowMs`, after `settleMs` for a change to take hold. */
async function measure(rig: Rig, windowMs: number, pool = poolId, settleMs = 300): Promise<number> {
  await sleep(settleMs);
  const before = rig.putBytes.get(pool) ?? 0;
  const startMs = performance.now();
  await sleep(windowMs);
  return (((rig.putBytes.get(pool) ?? 0) - before) * 1000) / (performance.now() - startMs);
}

const mibps = (bytesPerSecond: number): string => `${(bytesPerSecond / MiB).toFixed(2)} MiB/s`;

t.test('limitBandwidth: a running job takes a raised and a lowered rate at once', async (t) => {
  const r = await rig(t, { putDelayMs: 2 });
  const throttle = (bytesPerSecondMax: number): Partial<RebuildArgs> => ({ bytesPerSecondMax, chunksInflightMax: 4, policy: 'limitBandwidth', kind: 'rebuild' });
  r.source.onRebuild(order(throttle(1 * MiB)));
  const slow = await measure(r, 1500);
  t.ok(slow > 0.6 * MiB && slow < 1.5 * MiB, `at 1 MiB/s: ${mibps(slow)}`);
  const jobId = r.source.progress()[0]?.jobId;
  r.source.onRebuild(order(throttle(4 * MiB)));
  const fast = await measure(r, 1500);
  t.ok(fast > 2.8 * MiB && fast < 5 * MiB, `raised to 4 MiB/s: ${mibps(fast)}`);
  r.source.onRebuild(order(throttle(1 * MiB)));
  const slowAgain = await measure(r, 1500);
  t.ok(slowAgain > 0.6 * MiB && slowAgain < 1.5 * MiB, `lowered to 1 MiB/s again: ${mibps(slowAgain)}`);
  const jobs = r.source.progress();
  t.equal(jobs.length, 1, 'one job all along');
  t.equal(jobs[0]?.jobId, jobId, 'the same job: it was not started over');
  t.equal(jobs[0]?.state, 'running', 'still running');
});

t.test('limitNumOfConcurrentIos: raising the copies in flight speeds a running job up', async (t) => {
  const r = await rig(t, { putDelayMs: 40 });
  const throttle = (chunksInflightMax: number): Partial<RebuildArgs> => ({ bytesPerSecondMax: 0, chunksInflightMax, policy: 'limitNumOfConcurrentIos', kind: 'rebalance' });
  r.source.onRebuild(order(throttle(1)));
  const one = await measure(r, 1200);
  t.equal(r.inflight.max, 1, 'one copy in flight at most');
  r.source.onRebuild(order(throttle(4)));
  const four = await measure(r, 1200);
  t.ok(r.inflight.max >= 3 && r.inflight.max <= 4, `up to 4 in flight after the change (most seen: ${r.inflight.max})`);
  t.ok(four > 2.5 * one, `4 in flight copy faster than 1: ${mibps(four)} vs ${mibps(one)}`);
  r.inflight.max = 0;
  r.source.onRebuild(order(throttle(2)));
  await measure(r, 300);
  r.inflight.max = 0;
  await measure(r, 600, poolId, 0);
  t.ok(r.inflight.max <= 2, `lowered to 2: at most 2 in flight (most seen: ${r.inflight.max})`);
});

t.test('favorAppIos: the bandwidth holds while clients are busy, not on a quiet SDS', async (t) => {
  // 2 in flight of 10 ms each: at most ~12 MiB/s once quiet, so the chunks last the test.
  const r = await rig(t, { putDelayMs: 10 });
  r.clientBusy.value = true;
  r.source.onRebuild(order({ bytesPerSecondMax: 0, bytesPerSecondUnderLoad: 1 * MiB, chunksInflightMax: 2, policy: 'favorAppIos', kind: 'rebuild' }));
  const busy = await measure(r, 1500);
  t.ok(busy > 0.6 * MiB && busy < 1.5 * MiB, `clients busy: ${mibps(busy)} (1 MiB/s)`);
  r.clientBusy.value = false;
  const quiet = await measure(r, 800);
  t.ok(quiet > 3 * MiB, `clients quiet: ${mibps(quiet)}, well above 1 MiB/s`);
});

t.test("a pool's policy is its own budget: a job without a policy is not slowed by it", async (t) => {
  const r = await rig(t, { putDelayMs: 2, pools: [poolId, otherPoolId] });
  r.source.onRebuild(order({ bytesPerSecondMax: 1 * MiB, chunksInflightMax: 2, policy: 'limitBandwidth', kind: 'rebuild' }));
  r.source.onRebuild(order({ bytesPerSecondMax: 3 * MiB, chunksInflightMax: 2 }, otherPoolId));
  await sleep(300);
  const before = { limited: r.putBytes.get(poolId) ?? 0, other: r.putBytes.get(otherPoolId) ?? 0 };
  await sleep(1500);
  const limited = (((r.putBytes.get(poolId) ?? 0) - before.limited) * 1000) / 1500;
  const other = (((r.putBytes.get(otherPoolId) ?? 0) - before.other) * 1000) / 1500;
  t.ok(limited > 0.6 * MiB && limited < 1.5 * MiB, `the pool with limitBandwidth 1 MiB/s: ${mibps(limited)}`);
  t.ok(other > 2 * MiB && other < 4 * MiB, `the pool without a policy, 3 MiB/s of the SDS's budget: ${mibps(other)}`);
});

t.test('a repeated order with a bad policy is refused and the job keeps its throttle', async (t) => {
  const r = await rig(t, { putDelayMs: 2 });
  r.source.onRebuild(order({ bytesPerSecondMax: 1 * MiB, chunksInflightMax: 2, policy: 'limitBandwidth', kind: 'rebuild' }));
  t.throws(() => r.source.onRebuild(order({ bytesPerSecondMax: 8 * MiB, chunksInflightMax: 2, policy: 'fast' as NonNullable<RebuildArgs['policy']> })), { code: 'MB_ERR_INVALID_ARGUMENT' }, 'an unknown policy is refused');
  t.throws(() => r.source.onRebuild(order({ bytesPerSecondMax: 8 * MiB, chunksInflightMax: 2, policy: 'limitBandwidth', kind: 'resilver' as NonNullable<RebuildArgs['kind']> })), { code: 'MB_ERR_INVALID_ARGUMENT' }, 'an unknown kind is refused');
  const rate = await measure(r, 1200);
  t.ok(rate < 1.5 * MiB, `still 1 MiB/s: ${mibps(rate)}`);
});
