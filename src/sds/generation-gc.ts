// Garbage of snapshots, and what snapshots cost (docs/snapshots.md, "Space").
//
// A chunk key (i, g) is garbage when no head of its V-Tree resolves to it: either g is no
// longer a generation of the tree (its volumes were removed and the MDM pruned it), or every
// head whose path passes g finds chunk i in a nearer generation first (g is shadowed). The
// collector runs after each map (control-ops.ts schedules it, once the map has stood for
// staleCollectDelayMs) and every generationCollectIntervalMs besides, and frees such keys:
//
//   g not in the tree        each copy frees it on its own: the map says so to both, and a
//                            generation number is never used again
//   g shadowed               only the primary decides, from its own keys, and frees it on
//                            the secondary too (a whole Replica Trim of the exact key, under
//                            the key's lock); a secondary being rebuilt may lack the keys
//                            that shadow g, or still hold ones from an earlier life, so its
//                            own view could free a key a head still needs. A trim that does
//                            not reach the secondary (it is a map ahead or behind, or away)
//                            is kept and sent again at the next pass, at that pass's epoch,
//                            while this SDS is still the group's primary, the secondary the
//                            same and the key still shadowed here; it is also recorded as a
//                            change (rebuild.ts). Without the resend, the primary no longer
//                            holds the key, never looks at it again, and the secondary keeps
//                            it for ever.
//
// Only trees the map lists are looked at: a tree the map does not list has its implicit
// single generation 0, and a key of another generation there means the map is not what this
// code expects; keeping it costs space, freeing it could cost data.
//
// Every free takes the key's whole range lock (no write to the key is in flight), checks
// again that the map is the same and the key still garbage, and frees it through
// ChunkStore.freeGarbage, which skips a key pinned by a read through another generation.

import type { Logger } from 'pino';
import { generationPath, placementGroupOf, type PlacementMap, type VTreeMap } from '../wire/placement.js';
import { IoFlag, SdsOp, encodeIo } from '../wire/sds-ops.js';
import { generationCollectIntervalMs, snapshotBytesRefreshMs, staleCollectDelayMs } from '../common/limits.js';
import { keyName, type ChunkKey, type ChunkStore, type HeldChunk } from './chunk-store.js';
import type { RangeLocks } from './range-locks.js';

/**
 * Chunks looked at between two turns of the event loop in a walk: a tree of a 1 TiB volume
 * has a million chunk indexes, and client IO must not wait for the whole walk.
 */
export const walkChunksPerTurn = 4096;
export interface CollectorHost {
  readonly sdsId: string;
  readonly store: ChunkStore;
  readonly locks: RangeLocks;
  readonly log: Logger;
  map(): PlacementMap | null;
  epoch(): number;
  isClosing(): boolean;
  /** Registers background work, so that a clean stop waits for it. */
  track<T>(work: Promise<T>): Promise<T>;
  /** Sends to another SDS; a failure or refusal there rejects. */
  forward(sdsId: string, op: number, payload: Buffer, epoch: number): Promise<void>;
  /** Records a chunk changed here that the group's other copy may lack. */
  noteChange(poolId: string, pgIndex: number, chunkName: string): void;
}

/** A listed tree with each head's path, worked out once per pass. */
interface TreeView {
  tree: VTreeMap;
  heads: Array<{ snapshot: boolean; path: number[] }>;
}

export class GenerationCollector {
  private snapshotBytes = new Map<string, number>();
  private snapshotBytesAtMs = -Infinity;
  private snapshotBytesEpoch = -1;
  private counting: Promise<void> | null = null;
  private collecting: Promise<void> | null = null;
  private readonly timer: NodeJS.Timeout;
  /** Shadowed keys freed here whose Replica Trim the secondary did not take, by key name. */
  private readonly unsentTrims = new Map<string, UnsentTrim>();
  private resendTimer: NodeJS.Timeout | null = null;

  constructor(private readonly host: CollectorHost) {
    this.timer = setInterval(() => {
      if (this.collecting !== null || host.isClosing()) return;
      void host.track(this.collect(host.epoch())).catch((err: unknown) => host.log.error({ err }, 'freeing unreachable chunk generations failed'));
    }, generationCollectIntervalMs);
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
    if (this.resendTimer !== null) clearTimeout(this.resendTimer);
  }

  /** Shadowed keys freed here that the secondary still holds, as far as this SDS knows. */
  unsentTrimCount(): number {
    return this.unsentTrims.size;
  }

  /** Frees every garbage key this SDS may free at `epoch`; stops when the map moves on. One pass at a time. */
  async collect(epoch: number): Promise<void> {
    while (this.collecting !== null) await this.collecting;
    const pass = this.collectOnce(epoch);
    this.collecting = pass.catch(() => undefined).finally(() => (this.collecting = null));
    return pass;
  }

  private async collectOnce(epoch: number): Promise<void> {
    const map = this.host.map();
    if (map === null || map.epoch !== epoch) return;
    const views = treeViews(map);
    await this.resendTrims(map, views, epoch);
    if (views.size === 0) return;
    const { store, locks, sdsId } = this.host;
    const candidates: Array<{ key: ChunkKey; pgIndex: number; secondary: string | null; live: boolean }> = [];
    let walked = 0;
    for (const chunk of await chunksOf(store, views)) {
      if (++walked % walkChunksPerTurn === 0) {
        await nextTurn();
        if (this.host.epoch() !== epoch || this.host.isClosing()) return;
      }
      const view = views.get(chunk.vtreeId);
      const pool = map.pools[chunk.poolId];
      if (view === undefined || pool === undefined || chunk.generations.size === 0) continue;
      const pgIndex = placementGroupOf(chunk.vtreeId, chunk.chunkIndex, pool.groups.length);
      const group = pool.groups[pgIndex];
      if (group === undefined) continue;
      const primary = group.primary === sdsId;
      if (!primary && group.secondary !== sdsId) continue; // a group no longer held: collectStale's
      const reached = reachedGenerations(view, chunk.generations);
      for (const generation of chunk.generations) {
        if (reached.has(generation)) continue;
        const live = view.tree.generations[String(generation)] !== undefined;
        if (live && !primary) continue;
        candidates.push({ key: { poolId: chunk.poolId, vtreeId: chunk.vtreeId, chunkIndex: chunk.chunkIndex, generation }, pgIndex, secondary: primary ? group.secondary : null, live });
      }
    }
    if (candidates.length === 0) return;
    this.host.log.info({ chunks: candidates.length, epoch }, 'freeing chunk generations no head reaches');
    let freed = 0;
    for (const candidate of candidates) {
      if (this.host.epoch() !== epoch || this.host.isClosing()) return;
      const { key } = candidate;
      const name = keyName(key);
      const release = await locks.acquire(name, 0, store.chunkBytes, true);
      try {
        const now = this.host.map();
        const view = views.get(key.vtreeId);
        if (now !== map || view === undefined || this.host.epoch() !== epoch) return;
        // Again, now that no write to the key is in flight: keys may have come and gone. A
        // head's key still being allocated does not hide this one yet (resolveCommitted).
        const held = new Set<number>();
        for (const head of view.heads) {
          const holder = store.resolveCommitted(key, head.path);
          if (holder !== null) held.add(holder);
        }
        if (held.has(key.generation) || !store.has(key)) continue;
        if (!(await store.freeGarbage(key))) continue;
        freed += 1;
        // A shadowed key is the primary's decision: the secondary frees it because it is told to.
        if (!candidate.live || candidate.secondary === null) {
          if (candidate.live) this.host.noteChange(key.poolId, candidate.pgIndex, name);
          continue;
        }
        await this.trimSecondary({ key, pgIndex: candidate.pgIndex, secondary: candidate.secondary }, epoch);
      } finally {
        release();
      }
    }
    this.snapshotBytesAtMs = -Infinity;
    this.host.log.info({ freed, epoch }, 'chunk generations freed');
  }

  /** Sends the Replica Trim of a shadowed key freed here; one not taken is kept for the next pass. The caller holds the key's lock. */
  private async trimSecondary(trim: UnsentTrim, epoch: number): Promise<void> {
    const { key } = trim;
    const name = keyName(key);
    const payload = encodeIo({ poolId: key.poolId, vtreeId: key.vtreeId, pgIndex: trim.pgIndex, chunkIndex: key.chunkIndex, generation: key.generation, offsetBytes: 0, lengthBytes: this.host.store.chunkBytes, flags: IoFlag.Replica });
    try {
      await this.host.forward(trim.secondary, SdsOp.Trim, payload, epoch);
      this.unsentTrims.delete(name);
    } catch (err) {
      const first = !this.unsentTrims.has(name);
      this.unsentTrims.set(name, trim);
      this.host.noteChange(key.poolId, trim.pgIndex, name);
      if (first) this.host.log.warn({ err, key: name, secondary: trim.secondary, epoch }, 'a freed shadowed chunk was not freed on the secondary; sent again at the next pass');
      this.scheduleResend();
    }
  }

  /** A pass soon after a refused trim, rather than at the next interval (the map that refused it is often just being installed). */
  private scheduleResend(): void {
    if (this.resendTimer !== null || this.host.isClosing()) return;
    this.resendTimer = setTimeout(() => {
      this.resendTimer = null;
      if (this.host.isClosing()) return;
      void this.host.track(this.collect(this.host.epoch())).catch((err: unknown) => this.host.log.error({ err }, 'freeing unreachable chunk generations failed'));
    }, staleCollectDelayMs);
    this.resendTimer.unref();
  }

  /**
   * Sends again the trims the secondary did not take, at `epoch`, each only while it still
   * stands: this SDS is the group's primary and the secondary the same as when the key was
   * freed (another secondary was filled from this copy, which lacks the key; a copy no longer
   * in the group is freed as stale), the key's generation is still in the tree (if not, the
   * secondary frees it itself), this SDS has not got the key again, and every head through the
   * generation still finds the chunk in a nearer generation here (what made it garbage).
   */
  private async resendTrims(map: PlacementMap, views: ReadonlyMap<string, TreeView>, epoch: number): Promise<void> {
    const { store, locks, sdsId } = this.host;
    for (const [name, trim] of [...this.unsentTrims]) {
      if (this.host.epoch() !== epoch || this.host.isClosing()) return;
      const { key } = trim;
      const group = map.pools[key.poolId]?.groups[trim.pgIndex];
      const view = views.get(key.vtreeId);
      const stands =
        group !== undefined && group.primary === sdsId && group.secondary === trim.secondary && view !== undefined && view.tree.generations[String(key.generation)] !== undefined;
      if (!stands) {
        this.unsentTrims.delete(name);
        continue;
      }
      const release = await locks.acquire(name, 0, store.chunkBytes, true);
      try {
        if (this.host.map() !== map || this.host.epoch() !== epoch) return;
        if (store.has(key) || !shadowedHere(store, view, key)) {
          this.host.log.warn({ key: name }, 'a freed shadowed chunk is no longer shadowed here; its trim is not sent again');
          this.unsentTrims.delete(name);
          continue;
        }
        await this.trimSecondary(trim, epoch);
      } finally {
        release();
      }
    }
  }

  /**
   * Bytes only snapshots reach, by device: keys some snapshot head resolves to and no
   * volume head does. The last count; a new one starts in the background when this one is
   * older than snapshotBytesRefreshMs or the map moved (so a heartbeat never waits for it).
   */
  snapshotBytesByDevice(nowMs = Date.now()): ReadonlyMap<string, number> {
    const map = this.host.map();
    if (map === null || this.counting !== null) return this.snapshotBytes;
    if (nowMs - this.snapshotBytesAtMs < snapshotBytesRefreshMs && this.snapshotBytesEpoch === map.epoch) return this.snapshotBytes;
    this.counting = this.countSnapshotBytes(map, nowMs)
      .catch((err: unknown) => this.host.log.warn({ err }, 'snapshot bytes not counted'))
      .finally(() => (this.counting = null));
    return this.snapshotBytes;
  }

  private async countSnapshotBytes(map: PlacementMap, nowMs: number): Promise<void> {
    const views = treeViews(map);
    const bytes = new Map<string, number>();
    const { store } = this.host;
    let walked = 0;
    for (const chunk of await chunksOf(store, views)) {
      if (++walked % walkChunksPerTurn === 0) await nextTurn();
      if (this.host.isClosing()) return;
      const view = views.get(chunk.vtreeId);
      if (view === undefined) continue;
      const byVolume = new Set<number>();
      const bySnapshot = new Set<number>();
      for (const head of view.heads) {
        const holder = holderOf(head.path, chunk.generations);
        if (holder !== null) (head.snapshot ? bySnapshot : byVolume).add(holder);
      }
      for (const generation of bySnapshot) {
        if (byVolume.has(generation)) continue;
        const device = store.deviceOf({ poolId: chunk.poolId, vtreeId: chunk.vtreeId, chunkIndex: chunk.chunkIndex, generation });
        if (device !== null) bytes.set(device.deviceId, (bytes.get(device.deviceId) ?? 0) + store.chunkBytes);
      }
    }
    this.snapshotBytes = bytes;
    this.snapshotBytesAtMs = nowMs;
    this.snapshotBytesEpoch = map.epoch;
  }
}

interface UnsentTrim {
  key: ChunkKey;
  pgIndex: number;
  secondary: string;
}

/** Every head whose path passes `key`'s generation finds the chunk here in a nearer generation. */
function shadowedHere(store: ChunkStore, view: TreeView, key: ChunkKey): boolean {
  for (const head of view.heads) {
    const at = head.path.indexOf(key.generation);
    if (at < 0) continue;
    const holder = store.resolveCommitted(key, head.path);
    if (holder === null || head.path.indexOf(holder) >= at) return false;
  }
  return true;
}

/** The chunk indexes of the listed trees, copied (the walks await; the store's views change meanwhile). */
async function chunksOf(store: ChunkStore, views: ReadonlyMap<string, TreeView>): Promise<HeldChunk[]> {
  const chunks: HeldChunk[] = [];
  for (const vtreeId of views.keys()) {
    for (const chunk of store.heldChunksOf(vtreeId)) {
      chunks.push(chunk);
      if (chunks.length % (walkChunksPerTurn * 16) === 0) await nextTurn();
    }
  }
  return chunks;
}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function treeViews(map: PlacementMap): Map<string, TreeView> {
  const views = new Map<string, TreeView>();
  for (const [vtreeId, tree] of Object.entries(map.vtrees ?? {})) {
    views.set(vtreeId, { tree, heads: tree.heads.map((head) => ({ snapshot: head.snapshot, path: generationPath(tree, head.generation) })) });
  }
  return views;
}

/** The first generation of `path` held, or null. */
function holderOf(path: readonly number[], generations: ReadonlySet<number>): number | null {
  for (const generation of path) if (generations.has(generation)) return generation;
  return null;
}

/** The generations of a chunk that some head of the tree resolves to. */
function reachedGenerations(view: TreeView, generations: HeldChunk['generations']): Set<number> {
  const reached = new Set<number>();
  for (const head of view.heads) {
    const holder = holderOf(head.path, generations);
    if (holder !== null) reached.add(holder);
  }
  return reached;
}
