// Rebuild, source side: a primary copies a placement group to the SDS the map names as its
// new (filling) secondary, on the MDM's order. The target side is no more than the wire
// ops Put (a whole chunk) and replica Trim, served by service.ts like any mirror write.
//
//   MDM ──Rebuild{pool, pg, target, epoch, mode}──▶ source (this SDS, the group's primary)
//   source ──ListGroup──▶ target        chunks the target holds from an earlier life
//   source ──Put|Trim──▶ target         each chunk, under the chunk's range lock, paced
//   source ──Flush──▶ target            before a cursor is saved, and before "done"
//   source ──RebuildDone──▶ MDM         (through the MDM link)
//
// Two modes. A full job copies every chunk the source holds in the group, in key order, and
// keeps a cursor (rebuild-cursors.ts) so that a stopped job resumes where it was. A delta
// job copies only the chunks changed here while the target was away (the change records
// below), for a copy that returns within the MDM's window.
//
// Snapshots: a key is (pool, V-Tree, chunk index, generation), and the group of a key does
// not depend on its generation, so one job carries every generation of its chunks, in key
// order (all generations of a chunk index side by side). Each key is copied as it is here
// (Put of the exact key; Trim of a key no longer held, or of a generation the map dropped);
// the target applies both to the exact key and never copies between generations itself.
// A chunk's first change under a head after the listing is sent to the target whole by the
// primary (service.ts), so the target never needs an ancestor that has not arrived yet.
//
// Client IO keeps priority: every job of this SDS shares one pace (the order's bytes/s,
// lower while clients are busy here) and one limit of chunk copies in flight. A pool with an
// IO priority policy (docs/rebuild-policy.md) has a budget of its own per kind of fill
// (rebuild, rebalance), its numbers already multiplied by this SDS's devices in the pool.
// The MDM sends a running job's order again when the policy changes: the job takes the new
// numbers at once (the pace and the limit are read again for every chunk, and waiting
// copies look again), without starting over.
//
// A chunk that cannot be copied is logged at error level and named (chunk, side, code). One
// unreadable here is skipped: the job copies the rest of the group, then fails (the cursor
// never passes a skipped chunk). One the target fails (or a target not reached) stops the
// job at once: the next would most likely fail alike. Either way the job's stats carry the
// first failure (RebuildFailure) to the MDM, which orders the group again after a backoff
// and shows it (docs/rebuild-policy.md, "A rebuild that fails").

import { parseJsonObject } from '../wire/json-payload.js';
import { listGroupTimeoutMs, rebuildChunkFailuresMax, rebuildCursorSaveChunks, rebuildCursorSaveIntervalMs, rebuildPaceRecheckMs, sdsRebuildChunksInflightMax, sdsRebuildsKeptMax, sdsRebuildsRunningMax } from '../common/limits.js';
import * as crypto from 'node:crypto';
import type { Logger } from 'pino';
import { InvalidArgumentError, MeshblockError } from '../common/errors.js';
import type { RebuildDone, RebuildFailure } from '../wire/mdm-ops.js';
import type { WirePeer } from '../wire/peer.js';
import { generationPath, idPattern, placementGroupOf, vtreeOf, type PlacementMap } from '../wire/placement.js';
import { SdsOp, SdsStatus, IoFlag, encodeIo, encodeListGroup, decodeListedChunks, encodeEpoch, type IoArgs, type RebuildArgs, type RebuildProgress } from '../wire/sds-ops.js';
import { ChecksumError, keyName, compareKeys, type ChunkKey, type ChunkStore } from './chunk-store.js';
import type { RangeLocks } from './range-locks.js';
import type { RebuildCursors } from './rebuild-cursors.js';
import { ReplyError } from './reply-error.js';


/** What the rebuild source needs of the SDS it runs in. */
export interface RebuildHost {
  readonly sdsId: string;
  readonly store: ChunkStore;
  /** The chunk range locks client writes take: a copy holds the whole chunk's. */
  readonly locks: RangeLocks;
  readonly cursors: Promise<RebuildCursors>;
  readonly log: Logger;
  /** The placement map in force (null before the first one). */
  map(): PlacementMap | null;
  isClosing(): boolean;
  /** Client IO is in flight here, or was a moment ago: rebuilds take their under-load rate. */
  isClientBusy(): boolean;
  /** Sends to another SDS; a failure or refusal there rejects. */
  forward(sdsId: string, op: number, payload: Buffer, epoch: number): Promise<void>;
  peerFor(sdsId: string): Promise<WirePeer>;
  /** Registers background work, so that a clean stop waits for it. */
  track<T>(work: Promise<T>): Promise<T>;
  onRebuildDone?: (done: RebuildDone) => void;
}

/** A job's stats entry: the wire's, and why it failed when a chunk could not be copied. */
export type RebuildJob = RebuildProgress & { failure?: RebuildFailure };

/** One chunk could not be copied (MB_ERR_REBUILD_COPY); `failure` says which, where and why. */
export class RebuildCopyError extends MeshblockError {
  constructor(
    readonly failure: RebuildFailure,
    options?: { cause?: unknown },
  ) {
    super('MB_ERR_REBUILD_COPY', `rebuild copy of chunk ${failure.chunk} failed on the ${failure.side} side (${failure.code}): ${failure.message}`, options);
  }
}

export class RebuildSource {
  private readonly jobs = new Map<string, RebuildJob>();
  /** Rebuild job ids: this process's life, then a count. */
  private readonly lifeId = crypto.randomBytes(4).toString('hex');
  private jobsStarted = 0;
  private jobsRunning = 0;
  /**
   * Jobs waiting for a turn: one per order accepted, so one per copy of a group this SDS
   * is primary of, and again per epoch while one waits (a job whose epoch has passed ends
   * at once when its turn comes).
   */
  private readonly jobWaiters: Array<() => void> = [];
  /**
   * Chunks changed, per group this SDS is primary of, while a copy of the group did not get
   * the change (no secondary, or the mirror failed): what a returning copy lacks, so a
   * delta rebuild copies only these. Kept in memory: a group degraded when this process
   * started has an unknown history (`changesUnknown`), and is rebuilt in full.
   */
  private readonly changes = new Map<string, Set<string>>();
  private readonly changesUnknown = new Set<string>();
  /**
   * The budgets jobs draw on, by budgetKeyOf(): '' for every job whose order names no pool
   * policy (the order's bytes/s is the SDS's budget), else one per pool and kind of fill.
   * At most 1 + 2 x the pools of the map; kept, like the pools, for the process's life.
   */
  private readonly budgets = new Map<string, FillBudget>();
  /** The arguments of each job by job key, whose throttle a repeated order updates. */
  private readonly jobArgs = new Map<string, RebuildArgs>();

  constructor(private readonly host: RebuildHost) {
    for (const [poolId, pool] of Object.entries(host.map()?.pools ?? {})) {
      pool.groups.forEach((group, pgIndex) => {
        if (group.primary === host.sdsId && group.secondary === null) this.changesUnknown.add(groupKeyOf(poolId, pgIndex));
      });
    }
  }

  private get epoch(): number {
    return this.host.map()?.epoch ?? 0;
  }

  /** Every job, running and finished (the newest `sdsRebuildsKeptMax`), for Stats. */
  progress(): RebuildProgress[] {
    return [...this.jobs.values()];
  }

  /** Records a chunk changed here that the group's other copy may lack. */
  noteChange(poolId: string, pgIndex: number, chunkName: string): void {
    this.noteGroupChange(groupKeyOf(poolId, pgIndex), chunkName);
  }

  private noteGroupChange(groupKey: string, chunkName: string): void {
    let changed = this.changes.get(groupKey);
    if (changed === undefined) this.changes.set(groupKey, (changed = new Set()));
    changed.add(chunkName);
  }

  // --- orders ----------------------------------------------------------------------------

  /** A Rebuild order (the caller checked the sender's role). Starts the job in the background. */
  onRebuild(payload: Buffer): void {
    const args = parseRebuildArgs(payload);
    const epoch = args.epoch ?? this.epoch;
    const jobKey = `${args.poolId}/${args.pgIndex}/${args.targetSdsId}`;
    const current = this.jobs.get(jobKey);
    // The same order again (the MDM repeats orders it has no answer for, and gives them
    // again when the pool's policy changes): the job goes on, with the order's throttle.
    if ((current?.state === 'running' || current?.state === 'waiting') && current.epoch === epoch) {
      this.retune(jobKey, args);
      return;
    }
    if (current?.state === 'done' && current.epoch === epoch && epoch === this.epoch) {
      // Done at this epoch, and mirrored to since: the copy is in sync. Say so again.
      this.host.onRebuildDone?.(rebuildDone(current, 0));
      return;
    }
    if (epoch !== this.epoch) throw new ReplyError(SdsStatus.StaleEpoch, `rebuild ordered at epoch ${epoch}, SDS epoch ${this.epoch}`, encodeEpoch(this.epoch));
    const group = this.host.map()?.pools[args.poolId]?.groups[args.pgIndex];
    if (group === undefined || group.primary !== this.host.sdsId || group.secondary !== args.targetSdsId) {
      throw new InvalidArgumentError('rebuild', `at epoch ${this.epoch} this SDS is not the primary of group ${args.pgIndex} with secondary ${args.targetSdsId}`);
    }
    const progress: RebuildJob = { jobId: `${this.lifeId}.${++this.jobsStarted}`, ...args, mode: args.mode ?? 'full', epoch, state: 'waiting', chunksDone: 0, chunksTotal: 0, bytesDone: 0, error: null };
    this.jobs.delete(jobKey);
    this.jobs.set(jobKey, progress);
    this.jobArgs.set(jobKey, args);
    // Finished jobs stay visible in Stats for a while; the oldest go first.
    for (const [key, entry] of this.jobs) {
      if (this.jobs.size <= sdsRebuildsKeptMax) break;
      if (entry.state === 'done' || entry.state === 'failed') {
        this.jobs.delete(key);
        this.jobArgs.delete(key);
      }
    }
    void this.host.track(this.run(args, jobKey, progress)).catch((err: unknown) => {
      progress.state = 'failed';
      progress.error = err instanceof Error ? err.message : String(err);
      if (err instanceof RebuildCopyError) {
        // What the MDM acts on (and shows): each failed chunk was logged as it failed.
        progress.failure = err.failure;
        this.host.log.error({ rebuild: jobKey, ...err.failure, targetSdsId: args.targetSdsId }, 'rebuild failed: chunks could not be copied; the MDM orders it again');
      } else {
        this.host.log.warn({ err, jobKey }, 'rebuild stopped');
      }
    });
  }

  private async run(args: RebuildArgs, jobKey: string, progress: RebuildJob): Promise<void> {
    // Adding a device re-places thousands of groups at once: run a few at a time, or the
    // targets drown in listings and every job times out.
    while (this.jobsRunning >= sdsRebuildsRunningMax) await new Promise<void>((resolve) => this.jobWaiters.push(resolve));
    this.jobsRunning += 1;
    try {
      if (this.epoch !== progress.epoch) throw new Error(`placement map changed (epoch ${progress.epoch} → ${this.epoch}) before the rebuild began`);
      progress.state = 'running';
      const log = this.host.log.child({ rebuild: jobKey });
      const groupKey = groupKeyOf(args.poolId, args.pgIndex);
      if (progress.mode === 'delta' && (this.changesUnknown.has(groupKey) || this.host.isClosing())) {
        log.info('no record of what changed while the copy was away: copying everything');
        progress.mode = 'full';
      }
      await (progress.mode === 'delta' ? this.runDelta(args, progress, log) : this.runFull(args, jobKey, progress, log));
      // Put writes are not durable on their own: the MDM counts the copy in sync on this report.
      await this.flushTarget(args, progress.epoch);
      progress.state = 'done';
      log.debug({ chunks: progress.chunksDone, bytes: progress.bytesDone }, 'rebuild done');
      this.host.onRebuildDone?.(rebuildDone(progress, progress.bytesDone));
    } finally {
      this.jobsRunning -= 1;
      this.jobWaiters.shift()?.();
    }
  }

  private async runDelta(args: RebuildArgs, progress: RebuildProgress, log: Logger): Promise<void> {
    const groupKey = groupKeyOf(args.poolId, args.pgIndex);
    const recorded = this.changes.get(groupKey);
    // Only what changed here while the target was away; anything that changes meanwhile
    // is mirrored to it (or recorded again, and copied before the job reports done).
    let pass = 0;
    while ((recorded?.size ?? 0) > 0) {
      const keys = [...(recorded as Set<string>)].map(parseKeyName).sort(compareKeys);
      recorded?.clear();
      progress.chunksTotal += keys.length;
      if (pass++ === 0) log.debug({ chunks: keys.length }, 'delta rebuild started');
      try {
        await this.copyAll(keys, args, progress);
      } catch (err) {
        for (const key of keys) this.noteGroupChange(groupKey, keyName(key));
        throw err;
      }
    }
    this.changes.delete(groupKey);
  }

  /**
   * Copies the whole group, from after the job's cursor where it has one. What a cursor
   * promises: every chunk of the group up to it is on the target and durable there (the
   * target is flushed before a cursor is saved), and every later change to those chunks was
   * mirrored to the target or recorded here. So a resumed job copies the chunks after the
   * cursor and the recorded ones before it; a group whose history here is unknown (this
   * process started with it degraded) ignores its cursor.
   */
  private async runFull(args: RebuildArgs, jobKey: string, progress: RebuildProgress, log: Logger): Promise<void> {
    const epoch = progress.epoch;
    const groupKey = groupKeyOf(args.poolId, args.pgIndex);
    const cursors = await this.host.cursors;
    const keys = this.groupKeys(args.poolId, args.pgIndex);
    const cursorName = this.changesUnknown.has(groupKey) ? undefined : cursors.get(jobKey);
    const cursor = cursorName === undefined ? undefined : parseKeyName(cursorName);
    const recorded = this.changes.get(groupKey) ?? new Set<string>();
    const remaining = cursor === undefined ? keys : keys.filter((key) => compareKeys(key, cursor) > 0 || recorded.has(keyName(key)));
    // Recorded chunks at or before the cursor sort first in `remaining`: until the copied
    // prefix passes the cursor, a new cursor would say less than the one saved.
    const recordedBeforeCursor = cursor === undefined ? [] : remaining.filter((key) => compareKeys(key, cursor) <= 0);
    progress.chunksTotal = keys.length;
    progress.chunksDone = keys.length - remaining.length;
    // Thousands of jobs start at once after a failure: only a resumed one is worth a line.
    (progress.chunksDone > 0 ? log.info : log.debug).call(log, { chunks: keys.length, resumedAfter: progress.chunksDone }, 'rebuild started');
    // Changes recorded from here on are covered by this copy (or mirrored to the target).
    this.changes.delete(groupKey);
    this.changesUnknown.delete(groupKey);

    const checkpoints = new CursorCheckpoints(
      () => this.flushTarget(args, epoch),
      // A job replaced by a newer order for the same copy leaves the cursor to that one.
      async (key) => {
        if (this.jobs.get(jobKey) === progress) await cursors.set(jobKey, keyName(key));
      },
      log,
    );
    let prefixDone = 0;
    let offeredDone = 0;
    let offeredAtMs = Date.now();
    try {
      // The target may hold copies from an earlier life that are gone here: trim them.
      const targetPeer = await this.host.peerFor(args.targetSdsId);
      const listed = await targetPeer.request(SdsOp.ListGroup, encodeListGroup({ poolId: args.poolId, pgIndex: args.pgIndex }), { timeoutMs: listGroupTimeoutMs });
      if (listed.status !== SdsStatus.Ok) throw new Error(`target refused to list its chunks: ${listed.payload.toString()}`);
      for (const chunk of decodeListedChunks(listed.payload)) {
        const key: ChunkKey = { poolId: args.poolId, ...chunk };
        await this.copyChunk(key, args, epoch, true);
      }
      await this.copyAll(remaining, args, progress, (done) => {
        prefixDone = done;
        if (done <= recordedBeforeCursor.length) return;
        if (done - offeredDone < rebuildCursorSaveChunks && Date.now() - offeredAtMs < rebuildCursorSaveIntervalMs) return;
        checkpoints.offer(remaining[done - 1] as ChunkKey);
        offeredDone = done;
        offeredAtMs = Date.now();
      });
    } catch (err) {
      // Stopped part way: keep what was done, and what is still owed before the cursor.
      if (prefixDone > Math.max(offeredDone, recordedBeforeCursor.length)) checkpoints.offer(remaining[prefixDone - 1] as ChunkKey);
      if (prefixDone < recordedBeforeCursor.length) for (const key of recordedBeforeCursor) this.noteGroupChange(groupKey, keyName(key));
      await checkpoints.settled();
      throw err;
    }
    await checkpoints.settled();
    // Done: the cursor has nothing more to say. Losing this deletion to a crash is safe
    // too: the copy is in sync, and later changes reach it by mirror or by record.
    if (cursors.get(jobKey) !== undefined && this.jobs.get(jobKey) === progress) {
      void this.host.track(cursors.delete(jobKey)).catch((err: unknown) => log.warn({ err }, 'finished rebuild cursor not forgotten'));
    }
  }

  private async flushTarget(args: RebuildArgs, epoch: number): Promise<void> {
    await this.host.forward(args.targetSdsId, SdsOp.Flush, Buffer.alloc(0), epoch);
  }

  private groupKeys(poolId: string, pgIndex: number): ChunkKey[] {
    return groupKeysOf(this.host.store, this.host.map(), poolId, pgIndex);
  }

  /**
   * Copies `keys` to the target, a few chunks in flight, paced to the SDS's rebuild budget;
   * `onPrefixDone(n)` is told whenever the first n keys are all copied (for the cursor).
   */
  private async copyAll(keys: ChunkKey[], args: RebuildArgs, progress: RebuildProgress, onPrefixDone?: (done: number) => void): Promise<void> {
    const chunkBytes = this.host.store.chunkBytes;
    let nextIndex = 0;
    const completed = new Set<number>();
    let contiguousDone = 0;
    // As many workers as a job may ever have in flight: the budget's limit, which a policy
    // change may raise while the job runs, decides how many copy at once.
    const workerCount = Math.min(sdsRebuildChunksInflightMax, keys.length);
    // Chunks that could not be copied (skipped), and what stops every worker.
    const failures: RebuildCopyError[] = [];
    let stopped: Error | null = null;
    const stopIfStale = (): void => {
      if (stopped !== null) throw stopped;
      if (this.host.isClosing()) throw new Error('SDS is shutting down; the rebuild resumes from its cursor');
      if (this.epoch !== progress.epoch) throw new Error(`placement map changed (epoch ${progress.epoch} → ${this.epoch}); the MDM orders again`);
    };
    const worker = async (): Promise<void> => {
      while (nextIndex < keys.length) {
        stopIfStale();
        // ScaleIO's "concurrent rebuild IOs" policy: a limit for the budget (the whole SDS,
        // or the pool's kind of fill), not per job. The budget is looked up for every chunk:
        // a repeated order may move the job to another.
        const budget = this.budgetOf(args);
        await budget.slot(() => inflightMaxOf(args));
        try {
          // Paced inside the slot: only copies about to go wait for the pace, so a new
          // rate applies to the next chunk, not after a queue of reservations.
          stopIfStale();
          await budget.pace(chunkBytes, () => this.rate(args), stopIfStale);
          if (nextIndex >= keys.length) return;
          const index = nextIndex++;
          let copiedBytes: number;
          try {
            copiedBytes = await this.copyChunk(keys[index] as ChunkKey, args, progress.epoch, false);
          } catch (err) {
            // A chunk unreadable here is skipped (the cursor stops before it); a target that
            // fails a copy, or too many bad chunks, stops the job.
            if (!(err instanceof RebuildCopyError) || err.failure.side !== 'source' || failures.length + 1 >= rebuildChunkFailuresMax) {
              if (err instanceof RebuildCopyError) failures.push(err);
              throw err;
            }
            failures.push(err);
            continue;
          }
          // Not `bytesDone += await ...`: that reads bytesDone before the await, and the
          // other workers' additions made meanwhile would be lost.
          progress.bytesDone += copiedBytes;
          progress.chunksDone += 1;
          completed.add(index);
        } finally {
          budget.release();
        }
        // The cursor only moves over a prefix that is entirely done.
        const before = contiguousDone;
        while (completed.has(contiguousDone)) completed.delete(contiguousDone++);
        if (contiguousDone > before) onPrefixDone?.(contiguousDone);
      }
    };
    // Every worker ends before the job does: none copies on for a job already reported failed.
    const results = await Promise.allSettled(
      Array.from({ length: workerCount }, () =>
        worker().catch((err: unknown) => {
          stopped ??= err instanceof Error ? err : new Error(String(err));
          throw err;
        }),
      ),
    );
    const first = failures[0];
    if (first !== undefined) throw new RebuildCopyError({ ...first.failure, chunksFailed: failures.length }, { cause: first });
    const rejected = results.find((result) => result.status === 'rejected');
    if (rejected !== undefined) throw (rejected as PromiseRejectedResult).reason;
  }

  /**
   * Copies one chunk to the rebuild target under the chunk's lock, so no client write slips
   * between the read here and the copy there. A chunk no longer held here is trimmed there.
   */
  private async copyChunk(key: ChunkKey, args: RebuildArgs, epoch: number, onlyIfAbsent: boolean): Promise<number> {
    const store = this.host.store;
    const chunkBytes = store.chunkBytes;
    const release = await this.host.locks.acquire(keyName(key), 0, chunkBytes, true);
    try {
      // A generation the map no longer has is garbage here (generation-gc.ts frees it): the
      // target gets a Trim for it, not a copy it would keep until its next collection.
      const map = this.host.map();
      const held = store.has(key) && (map === null || generationPath(vtreeOf(map, key.vtreeId), key.generation).length > 0);
      if (onlyIfAbsent && held) return 0;
      const ioArgs: IoArgs = {
        poolId: key.poolId,
        vtreeId: key.vtreeId,
        pgIndex: args.pgIndex,
        chunkIndex: key.chunkIndex,
        generation: key.generation,
        offsetBytes: 0,
        lengthBytes: chunkBytes,
        flags: IoFlag.Replica,
      };
      if (!held) {
        await this.sendToTarget(key, args, SdsOp.Trim, encodeIo(ioArgs), epoch);
        return 0;
      }
      const payload = encodeIo(ioArgs, Buffer.alloc(0));
      const withData = Buffer.allocUnsafe(payload.length + chunkBytes);
      payload.copy(withData);
      try {
        await store.read(key, 0, withData.subarray(payload.length));
      } catch (err) {
        // The copy being rebuilt from is the only one, and bad there: the range is reported
        // (EIO to clients, the MDM names it) and the chunk fails until the range is rewritten;
        // copying it would make the bad bytes verify on the target.
        if (err instanceof ChecksumError) store.markUnrepairable(err.key, err.offsetBytes, err.lengthBytes);
        const code = (err as { code?: unknown }).code;
        const failure: RebuildFailure = {
          chunk: keyName(key),
          side: 'source',
          code: typeof code === 'string' ? code : 'UNKNOWN',
          deviceId: store.deviceOf(key)?.deviceId ?? null,
          message: err instanceof Error ? err.message : String(err),
          chunksFailed: 1,
        };
        this.host.log.error({ err, ...failure, targetSdsId: args.targetSdsId, pgIndex: args.pgIndex }, 'rebuild: reading the source copy of a chunk failed; chunk skipped');
        throw new RebuildCopyError(failure, { cause: err });
      }
      await this.sendToTarget(key, args, SdsOp.Put, withData, epoch);
      return chunkBytes;
    } finally {
      release();
    }
  }

  /**
   * Sends a chunk's Put or Trim to the rebuild target. A target that fails it (answers with
   * an error, or is not reached: the message says which) fails the chunk on the 'target'
   * side, which stops the job: the next chunks would most likely fail alike. A stale epoch
   * is no fault of the chunk: the job stops and the MDM orders again.
   */
  private async sendToTarget(key: ChunkKey, args: RebuildArgs, op: number, payload: Buffer, epoch: number): Promise<void> {
    try {
      await this.host.forward(args.targetSdsId, op, payload, epoch);
    } catch (err) {
      if (err instanceof ReplyError && err.status === SdsStatus.StaleEpoch) throw err;
      const status = err instanceof ReplyError ? Object.entries(SdsStatus).find(([, value]) => value === err.status)?.[0] : undefined;
      const code = (err as { code?: unknown }).code;
      const failure: RebuildFailure = {
        chunk: keyName(key),
        side: 'target',
        code: status ?? (typeof code === 'string' ? code : 'UNKNOWN'),
        deviceId: null,
        message: err instanceof Error ? err.message : String(err),
        chunksFailed: 1,
      };
      this.host.log.error({ err, ...failure, targetSdsId: args.targetSdsId, pgIndex: args.pgIndex }, 'rebuild: the target failed the copy of a chunk');
      throw new RebuildCopyError(failure, { cause: err });
    }
  }

  /**
   * ScaleIO's "favor application IO": while clients are doing IO here (now or in the last
   * moment), rebuilds get the lower under-load budget; on a quiet SDS, the full one.
   */
  private rate(args: RebuildArgs): number {
    const underLoad = args.bytesPerSecondUnderLoad ?? 0;
    if (!this.host.isClientBusy() || underLoad <= 0) return args.bytesPerSecondMax;
    return args.bytesPerSecondMax > 0 ? Math.min(args.bytesPerSecondMax, underLoad) : underLoad;
  }

  private budgetOf(args: RebuildArgs): FillBudget {
    const key = budgetKeyOf(args);
    let budget = this.budgets.get(key);
    if (budget === undefined) this.budgets.set(key, (budget = new FillBudget()));
    return budget;
  }

  /**
   * A repeated order for a job still waiting or running: its throttle becomes the order's.
   * The budget it draws on is told too, so that a raised limit lets waiting copies go and
   * a raised (or removed) rate does not keep the pace the old one set.
   */
  private retune(jobKey: string, order: RebuildArgs): void {
    const args = this.jobArgs.get(jobKey);
    if (args === undefined) return;
    const before = `${budgetKeyOf(args)} ${args.bytesPerSecondMax} ${args.bytesPerSecondUnderLoad ?? 0} ${args.chunksInflightMax}`;
    args.bytesPerSecondMax = order.bytesPerSecondMax;
    args.chunksInflightMax = order.chunksInflightMax;
    for (const field of ['bytesPerSecondUnderLoad', 'policy', 'kind'] as const) {
      if (order[field] === undefined) delete args[field];
      else (args as unknown as Record<string, unknown>)[field] = order[field];
    }
    const after = `${budgetKeyOf(args)} ${args.bytesPerSecondMax} ${args.bytesPerSecondUnderLoad ?? 0} ${args.chunksInflightMax}`;
    if (before === after) return;
    this.host.log.info({ rebuild: jobKey, policy: args.policy ?? null, bytesPerSecondMax: args.bytesPerSecondMax, bytesPerSecondUnderLoad: args.bytesPerSecondUnderLoad ?? 0, chunksInflightMax: args.chunksInflightMax }, 'rebuild throttle changed');
    this.budgetOf(args).retune(this.host.store.chunkBytes, this.rate(args));
  }
}


/**
 * One rebuild budget: a pace in bytes per second and a limit of chunk copies in flight,
 * shared by every job that draws on it. Both are asked of the job at each chunk, so a
 * change (a repeated order, clients starting or stopping) applies to the next copy.
 */
class FillBudget {
  /** When the next chunk may go; at most one chunk's time of credit is kept while idle. */
  private pacedUntilMs = 0;
  /** Chunk copies in flight, and the workers waiting for one (FIFO; bounded by the jobs' workers). */
  private slotsUsed = 0;
  private readonly slotWaiters: Array<() => void> = [];

  async slot(limit: () => number): Promise<void> {
    while (this.slotsUsed >= limit()) await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    this.slotsUsed += 1;
  }

  release(): void {
    this.slotsUsed -= 1;
    this.slotWaiters.shift()?.();
  }

  /** Waits until a chunk may go at `rate()` bytes/s (0: at once), looking again every rebuildPaceRecheckMs. */
  async pace(chunkBytes: number, rate: () => number, stopIfStale: () => void): Promise<void> {
    for (;;) {
      const bytesPerSecond = rate();
      if (bytesPerSecond <= 0) return;
      const chunkMs = (chunkBytes * 1000) / bytesPerSecond;
      const nowMs = Date.now();
      if (this.pacedUntilMs <= nowMs) {
        // A timer that fired late is made up for, up to one chunk: the long-run rate holds.
        this.pacedUntilMs = Math.max(this.pacedUntilMs, nowMs - chunkMs) + chunkMs;
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(this.pacedUntilMs - nowMs, rebuildPaceRecheckMs)));
      stopIfStale();
    }
  }

  /** The throttle changed: waiting copies look again, and the pace is no further off than one chunk at the new rate. */
  retune(chunkBytes: number, bytesPerSecond: number): void {
    this.pacedUntilMs = bytesPerSecond <= 0 ? 0 : Math.min(this.pacedUntilMs, Date.now() + (chunkBytes * 1000) / bytesPerSecond);
    for (const wake of this.slotWaiters.splice(0)) wake();
  }
}

/** Which budget a job draws on: the SDS's own, or its pool's for its kind of fill. */
function budgetKeyOf(args: RebuildArgs): string {
  return args.policy === undefined ? '' : `${args.poolId}/${args.kind ?? 'rebuild'}`;
}

/** Chunk copies in flight the order allows, within what this SDS allows any job. */
function inflightMaxOf(args: RebuildArgs): number {
  return Math.max(1, Math.min(args.chunksInflightMax, sdsRebuildChunksInflightMax));
}

/**
 * The cursor of one full job, moved in the background so copying never waits for it:
 * flush the target (every chunk up to the cursor becomes durable there), then save the
 * cursor. One checkpoint runs at a time; a cursor offered meanwhile replaces any other
 * still waiting, so there is never more than one running and one waiting.
 */
class CursorCheckpoints {
  private waiting: ChunkKey | null = null;
  private running: Promise<void> | null = null;

  constructor(
    private readonly flushTarget: () => Promise<void>,
    private readonly save: (key: ChunkKey) => Promise<void>,
    private readonly log: Logger,
  ) {}

  offer(key: ChunkKey): void {
    this.waiting = key;
    // drain() always awaits before it can finish, so `running` is set before it is cleared.
    this.running ??= this.drain();
  }

  async settled(): Promise<void> {
    while (this.running !== null) await this.running;
  }

  /** Never rejects: a cursor not saved only means a resumed job copies a little more. */
  private async drain(): Promise<void> {
    try {
      while (this.waiting !== null) {
        const key = this.waiting;
        this.waiting = null;
        await this.flushTarget();
        await this.save(key);
      }
    } catch (err) {
      this.waiting = null;
      this.log.warn({ err }, 'rebuild cursor not saved; a resumed job starts from an earlier one');
    } finally {
      this.running = null;
    }
  }
}

/** A group's chunks held here, in key order (stable, so a walk can resume). */
export function groupKeysOf(store: ChunkStore, map: PlacementMap | null, poolId: string, pgIndex: number): ChunkKey[] {
  const pool = map?.pools[poolId];
  if (pool === undefined) return [];
  const pgCount = pool.groups.length;
  return store.keys((key) => key.poolId === poolId && placementGroupOf(key.vtreeId, key.chunkIndex, pgCount) === pgIndex);
}

/** The key of a placement group in the change records. */
function groupKeyOf(poolId: string, pgIndex: number): string {
  return `${poolId}/${pgIndex}`;
}

function parseKeyName(name: string): ChunkKey {
  const [ids = '', chunkIndex = '0', generation = '0'] = name.split(':');
  return { poolId: ids.slice(0, 16), vtreeId: ids.slice(16, 32), chunkIndex: Number(chunkIndex), generation: Number(generation) };
}

function parseRebuildArgs(payload: Buffer): RebuildArgs {
  const args = parseJsonObject<RebuildArgs>(payload, 'rebuild');
  if (typeof args.poolId !== 'string' || !idPattern.test(args.poolId)) throw new InvalidArgumentError('rebuild.poolId', 'must be 16 hex digits');
  if (typeof args.targetSdsId !== 'string' || !idPattern.test(args.targetSdsId)) throw new InvalidArgumentError('rebuild.targetSdsId', 'must be 16 hex digits');
  if (args.mode !== undefined && args.mode !== 'full' && args.mode !== 'delta') throw new InvalidArgumentError('rebuild.mode', "must be 'full' or 'delta'");
  if (args.epoch !== undefined && (!Number.isSafeInteger(args.epoch) || args.epoch < 0)) throw new InvalidArgumentError('rebuild.epoch', 'must be a non-negative integer');
  if (args.bytesPerSecondUnderLoad !== undefined && (!Number.isSafeInteger(args.bytesPerSecondUnderLoad) || args.bytesPerSecondUnderLoad < 0)) {
    throw new InvalidArgumentError('rebuild.bytesPerSecondUnderLoad', 'must be a non-negative integer');
  }
  if (args.policy !== undefined && !['unlimited', 'limitNumOfConcurrentIos', 'favorAppIos', 'limitBandwidth'].includes(args.policy)) {
    throw new InvalidArgumentError('rebuild.policy', "must be 'unlimited', 'limitNumOfConcurrentIos', 'favorAppIos' or 'limitBandwidth'");
  }
  if (args.kind !== undefined && args.kind !== 'rebuild' && args.kind !== 'rebalance') throw new InvalidArgumentError('rebuild.kind', "must be 'rebuild' or 'rebalance'");
  for (const field of ['pgIndex', 'bytesPerSecondMax', 'chunksInflightMax'] as const) {
    if (!Number.isSafeInteger(args[field]) || (args[field] as number) < 0) throw new InvalidArgumentError(`rebuild.${field}`, 'must be a non-negative integer');
  }
  return args as RebuildArgs;
}

/** The report of a finished job; `bytesDone` 0 when it repeats a report already made. */
function rebuildDone(job: RebuildProgress, bytesDone: number): RebuildDone {
  return { jobId: job.jobId, poolId: job.poolId, pgIndex: job.pgIndex, targetSdsId: job.targetSdsId, epoch: job.epoch, mode: job.mode, chunksDone: job.chunksDone, bytesDone };
}
