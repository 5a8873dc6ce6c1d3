// Proves the rebuild source's cursor rules against a real chunk store and a real cursor
// file, with the target SDS played by a recording stand-in (its Put, Trim and Flush are
// logged, Flush takes a while so checkpoints overlap the copying):
// - every cursor saved covers only chunks whose Put completed before a target Flush that
//   itself completed before the save (so a cursor never claims what the target could
//   still lose to a power cut), and the target is flushed before the job reports done;
// - when the target fails part way, the cursor on disk stays within what was flushed;
// - a resumed job copies the chunks after its cursor plus those recorded as changed at or
//   before it (a write whose mirror failed), and nothing else.

import { pino } from 'pino';
import t from 'tap';
import { ChunkStore, keyName, type ChunkKey } from '../../src/sds/chunk-store.js';
import { RangeLocks } from '../../src/sds/range-locks.js';
import { RebuildSource, type RebuildHost } from '../../src/sds/rebuild.js';
import { RebuildCursors } from '../../src/sds/rebuild-cursors.js';
import type { RebuildDone } from '../../src/wire/mdm-ops.js';
import type { WirePeer } from '../../src/wire/peer.js';
import type { PlacementMap } from '../../src/wire/placement.js';
import { SdsOp, SdsStatus, decodeIo, encodeListedChunks, type RebuildArgs } from '../../src/wire/sds-ops.js';
import { sparseFile } from '../helpers/files.js';

const KiB = 1024;
const chunkBytes = 64 * KiB;
const poolId = '00000000000000a1';
const vtreeId = '7777000011112222';
const sourceSdsId = '0a0b0c0d0e0f1011';
const targetSdsId = '00000000000000c3';
const chunkCount = 200;
const jobKey = `${poolId}/0/${targetSdsId}`;
const log = pino({ level: 'silent' });

const map: PlacementMap = {
  epoch: 5,
  sds: { [sourceSdsId]: { address: '127.0.0.1:1' }, [targetSdsId]: { address: '127.0.0.1:2' } },
  pools: { [poolId]: { chunkBytes, groups: [{ primary: sourceSdsId, secondary: targetSdsId }] } },
};
const order: RebuildArgs = { poolId, pgIndex: 0, targetSdsId, bytesPerSecondMax: 0, chunksInflightMax: 4, mode: 'full', epoch: 5 };
const keyOf = (chunkIndex: number): ChunkKey => ({ poolId, vtreeId, chunkIndex, generation: 0 });

/** The part of tap's Test the helpers here use. */
interface Host {
  testdir(): string;
  teardown(fn: () => unknown): void;
  ok(value: unknown, message: string): void;
}

type Event = { kind: 'put'; chunkIndex: number } | { kind: 'flush-start' } | { kind: 'flush-done' } | { kind: 'cursor'; chunkIndex: number };

interface Rig {
  source: RebuildSource;
  cursors: RebuildCursors;
  events: Event[];
  /** Resolves with the job's report, rejects with its error. */
  finished: () => Promise<RebuildDone>;
}

async function rig(t: Host, options: { failPutAt?: number } = {}): Promise<Rig> {
  const dir = t.testdir();
  const store = await ChunkStore.open([sparseFile(dir, 'device.img', 32 * 1024 * KiB)], {
    owner: { clusterId: 'c0ffee00c0ffee00', sdsId: sourceSdsId, sdsName: 'sds-a' },
    chunkBytes,
    force: false,
    log,
  });
  t.teardown(() => store.close());
  for (let chunkIndex = 0; chunkIndex < chunkCount; chunkIndex++) await store.write(keyOf(chunkIndex), 0, Buffer.alloc(chunkBytes, chunkIndex), { fua: false });
  const cursors = await RebuildCursors.open(dir, {}, log);
  const events: Event[] = [];
  const set = cursors.set.bind(cursors);
  cursors.set = (key: string, chunkName: string): Promise<void> => {
    events.push({ kind: 'cursor', chunkIndex: Number(chunkName.split(':')[1]) });
    return set(key, chunkName);
  };
  let report: ((done: RebuildDone) => void) | null = null;
  const reported = new Promise<RebuildDone>((resolve) => (report = resolve));
  const targetPeer = {
    request: async (): Promise<{ status: number; payload: Buffer }> => ({ status: SdsStatus.Ok, payload: encodeListedChunks([]) }),
  } as unknown as WirePeer;
  let targetDown = false;
  const host: RebuildHost = {
    sdsId: sourceSdsId,
    store,
    locks: new RangeLocks(),
    cursors: Promise.resolve(cursors),
    log,
    map: () => map,
    isClosing: () => false,
    isClientBusy: () => false,
    forward: async (_sdsId, op, payload) => {
      if (targetDown) throw new Error('target unreachable');
      if (op === SdsOp.Flush) {
        events.push({ kind: 'flush-start' });
        await new Promise((resolve) => setTimeout(resolve, 15));
        if (targetDown) throw new Error('target unreachable');
        events.push({ kind: 'flush-done' });
        return;
      }
      const { args } = decodeIo(payload);
      await new Promise((resolve) => setImmediate(resolve));
      if (args.chunkIndex === options.failPutAt) {
        // Once a cursor is saved, so that there is one to keep.
        while (!events.some((event) => event.kind === 'cursor')) await new Promise((resolve) => setTimeout(resolve, 5));
        targetDown = true;
        throw new Error('target unreachable');
      }
      if (op === SdsOp.Put) events.push({ kind: 'put', chunkIndex: args.chunkIndex });
    },
    peerFor: async () => targetPeer,
    track: (work) => work,
    onRebuildDone: (done) => report?.(done),
  };
  const source = new RebuildSource(host);
  const finished = async (): Promise<RebuildDone> => {
    for (;;) {
      const job = source.progress()[0];
      if (job?.state === 'failed') throw new Error(job.error ?? 'failed');
      if (job?.state === 'done') return reported;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  };
  return { source, cursors, events, finished };
}

/**
 * Every cursor event is preceded by a completed flush that began after the Puts of all
 * chunks up to it (but those `alreadyThere`, copied and flushed in an earlier life).
 */
function checkCursorOrder(t: Host, events: Event[], alreadyThere: ReadonlySet<number> = new Set()): void {
  const cursorEvents = events.flatMap((event, at) => (event.kind === 'cursor' ? [{ at, chunkIndex: event.chunkIndex }] : []));
  for (const cursor of cursorEvents) {
    const flushDoneAt = events.slice(0, cursor.at).map((event) => event.kind).lastIndexOf('flush-done');
    const flushStartAt = events.slice(0, flushDoneAt).map((event) => event.kind).lastIndexOf('flush-start');
    const putBeforeFlush = new Set(events.slice(0, Math.max(0, flushStartAt)).flatMap((event) => (event.kind === 'put' ? [event.chunkIndex] : [])));
    const missing = Array.from({ length: cursor.chunkIndex + 1 }, (_, chunkIndex) => chunkIndex).filter((chunkIndex) => !putBeforeFlush.has(chunkIndex) && !alreadyThere.has(chunkIndex));
    t.ok(flushDoneAt > 0 && missing.length === 0, `cursor at chunk ${cursor.chunkIndex}: chunks 0..${cursor.chunkIndex} were put before a flush that completed before it (missing: ${missing.slice(0, 5).join(',')})`);
  }
}

t.test('a cursor is saved only after the chunks before it are flushed on the target', async (t) => {
  const { source, cursors, events, finished } = await rig(t);
  source.onRebuild(Buffer.from(JSON.stringify(order)));
  const done = await finished();
  t.equal(done.chunksDone, chunkCount, 'every chunk copied');
  t.equal(done.bytesDone, chunkCount * chunkBytes, 'every byte counted');
  const cursorCount = events.filter((event) => event.kind === 'cursor').length;
  t.ok(cursorCount >= 2, `cursors were saved on the way (${cursorCount})`);
  checkCursorOrder(t, events);
  const lastPutAt = events.map((event) => event.kind).lastIndexOf('put');
  t.ok(events.slice(lastPutAt).some((event) => event.kind === 'flush-done'), 'the target was flushed after the last Put, before the job reported done');
  await cursors.settled();
  t.equal(cursors.get(jobKey), undefined, 'the finished job forgot its cursor');
});

t.test('a target lost part way leaves a cursor within what it had flushed', async (t) => {
  const { source, cursors, events, finished } = await rig(t, { failPutAt: 150 });
  source.onRebuild(Buffer.from(JSON.stringify(order)));
  await t.rejects(finished(), 'the job fails with its target');
  checkCursorOrder(t, events);
  const saved = cursors.get(jobKey);
  t.ok(saved !== undefined && Number(saved.split(':')[1]) < 150, `a cursor before the failed chunk was kept (${saved})`);
  t.ok(events.some((event) => event.kind === 'put' && event.chunkIndex > Number(saved?.split(':')[1])), 'chunks were put after the cursor that no flush covered: the cursor did not claim them');
});

t.test('a resumed job copies the chunks after its cursor and those changed before it', async (t) => {
  const { source, cursors, events, finished } = await rig(t);
  await cursors.set(jobKey, keyName(keyOf(120)));
  events.length = 0;
  // Chunks 7 and 130 changed here while their mirror write failed (chunk 130 is copied anyway).
  source.noteChange(poolId, 0, keyName(keyOf(7)));
  source.noteChange(poolId, 0, keyName(keyOf(130)));
  source.onRebuild(Buffer.from(JSON.stringify(order)));
  const done = await finished();
  const put = events.flatMap((event) => (event.kind === 'put' ? [event.chunkIndex] : [])).sort((a, b) => a - b);
  const expected = [7, ...Array.from({ length: chunkCount - 121 }, (_, index) => 121 + index)];
  t.same(put, expected, 'chunk 7 and chunks 121.. were copied, nothing else');
  t.equal(done.bytesDone, expected.length * chunkBytes, 'and counted');
  const cursorsSaved = events.filter((event) => event.kind === 'cursor').length;
  t.ok(cursorsSaved >= 1, `the resumed job saved cursors (${cursorsSaved})`);
  // Chunks up to the old cursor were there, but for chunk 7: each new cursor needs it put too.
  checkCursorOrder(t, events, new Set(Array.from({ length: 121 }, (_, chunkIndex) => chunkIndex).filter((chunkIndex) => chunkIndex !== 7)));
});
