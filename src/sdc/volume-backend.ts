// The SDC's volume backend: a BlockBackend that cuts each NBD request at chunk boundaries
// and sends every piece to the primary SDS of the chunk's placement group, all pieces at
// once, so one request spreads over many SDSs and every SDS serves every volume.
//
//   NBD WRITE 0..3 MiB  ──▶  chunk 0 → pg 1214 → primary sds-b
//                            chunk 1 → pg 1945 → primary sds-a     (in parallel)
//                            chunk 2 → pg  837 → primary sds-c
//
// Retries: a piece refused with StaleEpoch, or whose SDS cannot be reached, makes the SDC
// fetch the current map from the MDM and send it again (bounded), so clients see no error
// while the MDM moves the group to a surviving copy. Writes are idempotent, so a piece
// sent twice does no harm.
//
// Snapshots (docs/snapshots.md): every piece names the volume's head generation, read
// afresh at each attempt. Taking a snapshot moves the head (the old one is frozen for
// good), so a write sent to the old head is refused with StaleEpoch; the SDC then learns
// the new head from the MDM (VolumeRouter.refreshView, or the MDM's own update, which
// `follow` applies) and the retried piece names it. While the MDM holds a V-Tree frozen for
// a group snapshot's barrier, its writes are refused with Frozen: those are sent again
// every few milliseconds, without asking the MDM anything, until the freeze lifts or the
// piece's deadline passes.
//
// Holes: the backend knows which chunks hold data (asked from the SDSs when the volume is
// opened, then kept up to date by its own writes and trims) when it is the only SDC the
// volume is mapped to; reads of chunks known empty then cost no round trip, and
// BLOCK_STATUS reports them as holes. A shared volume trusts nothing and asks.

import type { Logger } from 'pino';
import { assert } from '../common/assert.js';
import { allocationChunkCountMax, nbdRequestBytesMax, sdcFrozenRetryMs, sdcPieceAttemptsMax, sdcPieceTimeoutMs, sdcRetryDelayMsMax, frozenRetryDelayMsMax } from '../common/limits.js';
import type { SdcVolume } from '../wire/mdm-ops.js';
import type { WirePeer, WireResponse } from '../wire/peer.js';
import { vtreeOf, type PlacementMap } from '../wire/placement.js';
import { releasePayload } from '../common/buffer-pool.js';
import { IoStats, ioStartMs, type IoCounter } from '../common/metrics.js';
import { SdsOp, SdsStatus, encodeAllocation, encodeIo, IoFlag, type IoArgs } from '../wire/sds-ops.js';
import { chunkPieces, routePiece, type Piece } from './chunk-pieces.js';
import { BackendError, type BackendCapabilities, type BlockBackend, type BlockSizeLimits, type Extent, type WriteOptions, type ZeroOptions } from '../nbd/backend.js';

export interface VolumeRouter {
  /** The current placement map. */
  map(): PlacementMap;
  /**
   * Asks the MDM for a newer map, and for the volumes too when a volume's head is no longer
   * a head in it (a snapshot or restore moved it): resolves when they came, or when the MDM
   * could not be asked. New heads reach the backends through `follow`.
   */
  refreshView(): Promise<void>;
  /** The connection to an SDS of the current map. */
  peer(sdsId: string): Promise<WirePeer>;
  /** The connection to an SDS of the current map if it is made, else null: the IO path takes it without an await. */
  connectedPeer?(sdsId: string): WirePeer | null;
}

/** What the SDC counts of a volume's IO (its metrics: sdc/metrics.ts), shared by the volume's backends. */
export type VolumeIoOp = 'read' | 'write';
export const volumeIoOps: readonly VolumeIoOp[] = ['read', 'write'];
export type VolumeIoStats = IoStats<VolumeIoOp>;

/** Why one SDS's flush did not succeed, and whether trying again can help. */
interface FlushProblem {
  /**
   * The SDS was unreachable, or answered a status a new map can cure (a stale epoch, a
   * failed mirror, a failed device whose group the MDM moves): worth another attempt. Any
   * other status will not change on retry, and fails the flush at once.
   */
  retryable: boolean;
  /** What went wrong, for the log and the error's message. */
  problem: string;
}

/** How one send of a piece ended, when it did not throw. */
type SendOutcome =
  | { kind: 'ok'; response: WireResponse }
  /** `sdsEpoch`: a StaleEpoch from an SDS whose map is newer than the one the piece was sent on. */
  | { kind: 'retry'; problem: string; sdsEpoch: number | null }
  | { kind: 'frozen'; problem: string };

/** What the backend knows about a chunk. */
const enum ChunkState {
  Unknown = 0,
  Empty = 1,
  Data = 2,
}

export class VolumeBackend implements BlockBackend {
  /** Fixed when opened: an NBD client keeps the size it was told. */
  readonly sizeBytes: number;
  readonly capabilities: Readonly<BackendCapabilities>;
  readonly blockSize: Readonly<BlockSizeLimits> = { minimumBytes: 512, preferredBytes: 4096, maximumBytes: nbdRequestBytesMax };
  readonly description: string;
  private readonly chunkStates: Uint8Array;
  /** SDSs written since the last flush: a flush must reach each of them. */
  private readonly written = new Set<string>();

  /** The volume as the MDM last described it: its head generation and access mode move. */
  private current: SdcVolume;
  /** Where completed reads and writes are counted (taken out of the IoStats once: no lookup per request). */
  private readonly readIo: IoCounter;
  private readonly writeIo: IoCounter;

  private constructor(
    volume: SdcVolume,
    private readonly router: VolumeRouter,
    private readonly log: Logger,
    readonly io: VolumeIoStats,
  ) {
    this.current = volume;
    this.readIo = io.op('read');
    this.writeIo = io.op('write');
    this.sizeBytes = volume.sizeBytes;
    this.description = `meshblock volume ${volume.name} (${volume.id})`;
    this.capabilities = {
      readOnly: volume.accessMode === 'ReadOnly',
      flush: true,
      fua: true,
      trim: true,
      zero: true,
      fastZero: true,
      cache: false,
      extents: true,
      multiConn: true,
      rotational: false,
    };
    this.chunkStates = new Uint8Array(Math.ceil(volume.sizeBytes / volume.chunkBytes));
  }

  /**
   * Opens a volume: learns which of its chunks hold data when it is mapped here alone. `io`:
   * where its reads and writes are counted (the SDC gives every backend of a volume the same).
   */
  static async open(volume: SdcVolume, router: VolumeRouter, log: Logger, io: VolumeIoStats = new IoStats(volumeIoOps)): Promise<VolumeBackend> {
    const backend = new VolumeBackend(volume, router, log, io);
    if (volume.exclusive) await backend.loadAllocation();
    return backend;
  }

  get volume(): SdcVolume {
    return this.current;
  }

  /**
   * Takes the MDM's newer description of this volume (same id), for connections already
   * open: their next pieces name its head, and writes are refused once it is read-only
   * (a connection opened read-write keeps the flags it was told, so the backend refuses).
   * What the backend knew of holes stays true only where the new head starts with the old
   * one's content (a snapshot: the new head is the old one's child); after a restore, or
   * once another SDC may write the volume, it knows nothing and asks the SDSs.
   */
  follow(next: SdcVolume): void {
    const previous = this.current;
    assert(next.id === previous.id && next.vtreeId === previous.vtreeId, 'a backend follows its own volume');
    if (next.generation !== previous.generation) {
      const parent = vtreeOf(this.router.map(), next.vtreeId).generations[String(next.generation)];
      if (parent !== previous.generation) this.chunkStates.fill(ChunkState.Unknown);
      this.log.info({ volume: next.name, generationFrom: previous.generation, generationTo: next.generation, holesKept: parent === previous.generation }, 'volume head moved');
    }
    if (previous.exclusive && !next.exclusive) this.chunkStates.fill(ChunkState.Unknown);
    if (next.accessMode !== previous.accessMode) this.log.info({ volume: next.name, accessMode: next.accessMode }, 'volume access mode changed');
    this.current = next;
  }

  private async loadAllocation(): Promise<void> {
    const map = this.router.map();
    const chunkCount = this.chunkStates.length;
    const held = new Uint8Array(chunkCount);
    for (const sdsId of Object.keys(map.sds)) {
      const peer = await this.router.peer(sdsId);
      for (let first = 0; first < chunkCount; first += allocationChunkCountMax) {
        const count = Math.min(allocationChunkCountMax, chunkCount - first);
        const response = await peer.request(SdsOp.Allocation, encodeAllocation({ poolId: this.volume.poolId, vtreeId: this.volume.vtreeId, generation: this.volume.generation, chunkIndexFirst: first, chunkCount: count }), { timeoutMs: sdcPieceTimeoutMs });
        if (response.status !== SdsStatus.Ok) throw new BackendError('EIO', `SDS ${sdsId} did not say which chunks it holds (status ${response.status})`);
        for (let index = 0; index < count; index++) if (response.payload[index] === 1) held[first + index] = 1;
      }
    }
    for (let index = 0; index < chunkCount; index++) this.chunkStates[index] = held[index] === 1 ? ChunkState.Data : ChunkState.Empty;
  }

  // --- IO ------------------------------------------------------------------------------

  // A request within one chunk (every 4 KiB one) is one piece: it is sent without the
  // array, closures and allSettled() a request spread over several chunks needs.
  //
  // Counting (metrics): two clock reads (none with --metrics off: ioStartMs) and a few
  // additions into the volume's IoCounter, no allocation. The time is the SDSs' service
  // time as this SDC sees it, retries included; time waiting for QoS tokens is before this
  // backend (qos.ts) and counted there.

  async read(offsetBytes: number, target: Buffer): Promise<void> {
    const startMs = ioStartMs();
    try {
      const pieces = this.pieces(offsetBytes, target.length);
      if (pieces.length === 1) await this.readPiece(pieces[0] as Piece, target);
      else await allPieces(pieces.map((piece) => this.readPiece(piece, target)));
    } catch (err) {
      this.readIo.failed();
      throw err;
    }
    this.readIo.doneSince(target.length, startMs);
  }

  private async readPiece(piece: Piece, target: Buffer): Promise<void> {
    const part = target.subarray(piece.atBytes, piece.atBytes + piece.args.lengthBytes);
    if (this.chunkEmpty(piece.args.chunkIndex)) {
      part.fill(0);
      return;
    }
    // The SDS's reply is received straight into its place in the NBD reply.
    const response = await this.send(SdsOp.Read, piece.args, undefined, part);
    if (response.payload !== part) {
      response.payload.copy(part);
      releasePayload(response.payload);
    }
  }

  async write(offsetBytes: number, source: Buffer, options: WriteOptions): Promise<void> {
    const startMs = ioStartMs();
    try {
      this.assertWritable('write');
      const pieces = this.pieces(offsetBytes, source.length, options.fua ? IoFlag.Fua : 0);
      if (pieces.length === 1) await this.writePiece(pieces[0] as Piece, source);
      else await allPieces(pieces.map((piece) => this.writePiece(piece, source)));
    } catch (err) {
      this.writeIo.failed();
      throw err;
    }
    this.writeIo.doneSince(source.length, startMs);
  }

  private async writePiece(piece: Piece, source: Buffer): Promise<void> {
    const args = piece.args;
    // Marked before the write is sent: a read racing it must ask the SDS.
    this.chunkStates[args.chunkIndex] = ChunkState.Data;
    await this.send(SdsOp.Write, args, source.subarray(piece.atBytes, piece.atBytes + args.lengthBytes));
  }

  /**
   * Makes every write acknowledged so far durable on every copy the map counts: each SDS
   * written since the last flush fsyncs and flushes the mirrors it wrote to. Where an SDS
   * is unreachable or a mirror fails, the map is refreshed and the flush tried again; an SDS
   * the map no longer names (down) had its groups' copies promoted elsewhere, so then every
   * SDS of the map is flushed instead.
   */
  async flush(): Promise<void> {
    const written = [...this.written];
    this.written.clear();
    let targets = written;
    let lastProblem = '';
    for (let attempt = 0; attempt < sdcPieceAttemptsMax; attempt++) {
      await this.beforeAttempt(attempt);
      const map = this.router.map();
      if (targets.some((sdsId) => map.sds[sdsId] === undefined)) targets = Object.keys(map.sds);
      const results = await Promise.all(targets.map((sdsId) => this.flushOne(sdsId)));
      const failed = targets.filter((_, index) => results[index] !== null);
      if (failed.length === 0) return;
      const problems = results.filter((result): result is FlushProblem => result !== null);
      lastProblem = problems.map((result) => result.problem).join('; ');
      if (problems.some((result) => !result.retryable)) break;
      targets = failed;
    }
    for (const sdsId of written) this.written.add(sdsId);
    this.log.error({ volume: this.volume.name, lastProblem }, 'flush failed after every retry');
    throw new BackendError('EIO', `flush of ${this.volume.name}: ${lastProblem}`);
  }

  /** Flushes one SDS: null when done, else why not and whether to try again. */
  private async flushOne(sdsId: string): Promise<FlushProblem | null> {
    let response: WireResponse;
    try {
      const peer = await this.router.peer(sdsId);
      response = await peer.request(SdsOp.Flush, Buffer.alloc(0), { timeoutMs: sdcPieceTimeoutMs });
    } catch (err) {
      return { retryable: true, problem: `SDS ${sdsId}: ${(err as Error).message}` };
    }
    if (response.status === SdsStatus.Ok) return null;
    if (response.status === SdsStatus.MirrorFailed || response.status === SdsStatus.StaleEpoch || response.status === SdsStatus.IoError) {
      return { retryable: true, problem: `SDS ${sdsId}: ${response.payload.toString()}` };
    }
    return { retryable: false, problem: `SDS ${sdsId} (status ${response.status}): ${response.payload.toString()}` };
  }

  async trim(offsetBytes: number, lengthBytes: number, options: WriteOptions): Promise<void> {
    this.assertWritable('trim');
    const flags = options.fua ? IoFlag.Fua : 0;
    await allPieces(
      this.pieces(offsetBytes, lengthBytes).map(async (piece) => {
        const args = { ...piece.args, flags };
        if (this.chunkEmpty(args.chunkIndex)) return;
        await this.send(SdsOp.Trim, args);
        if (args.offsetBytes === 0 && args.lengthBytes === this.current.chunkBytes && this.current.exclusive) this.chunkStates[args.chunkIndex] = ChunkState.Empty;
      }),
    );
  }

  /** Zeroing is trimming here: a trimmed range reads as zeros, thin or thick. */
  zero(offsetBytes: number, lengthBytes: number, options: ZeroOptions): Promise<void> {
    return this.trim(offsetBytes, lengthBytes, options);
  }

  async cache(): Promise<void> {
    // Nothing to prefetch: SDSs serve from their own page cache.
  }

  async extents(offsetBytes: number, lengthBytes: number, extentCountMax: number): Promise<Extent[]> {
    const chunkBytes = this.volume.chunkBytes;
    const endBytes = Math.min(this.sizeBytes, offsetBytes + lengthBytes);
    if (!this.volume.exclusive) return [{ lengthBytes: endBytes - offsetBytes, hole: false, zero: false }];
    const extents: Extent[] = [];
    let at = offsetBytes;
    while (at < endBytes && extents.length < extentCountMax) {
      const chunkIndex = Math.floor(at / chunkBytes);
      const hole = this.chunkEmpty(chunkIndex);
      const runEnd = Math.min(endBytes, (chunkIndex + 1) * chunkBytes);
      const last = extents[extents.length - 1];
      if (last !== undefined && last.hole === hole) last.lengthBytes += runEnd - at;
      else extents.push({ lengthBytes: runEnd - at, hole, zero: hole });
      at = runEnd;
    }
    return extents;
  }

  async close(): Promise<void> {
    // Connections belong to the SDC, shared by every volume.
  }

  /** A volume made read-only while a client had it open read-write (EROFS reaches the client as EPERM). */
  private assertWritable(what: string): void {
    if (this.current.accessMode === 'ReadOnly') throw new BackendError('EROFS', `${what} of ${this.current.name}: the volume is mapped read-only now`);
  }

  /** Known to hold nothing, so reads are zeros and trims are no-ops without asking an SDS. */
  private chunkEmpty(chunkIndex: number): boolean {
    // chunkStates stores ChunkState values in a byte each; read back as the enum they are.
    return (this.chunkStates[chunkIndex] as ChunkState) === ChunkState.Empty;
  }

  // --- routing -------------------------------------------------------------------------

  private pieces(offsetBytes: number, lengthBytes: number, flags = 0): Piece[] {
    return chunkPieces(this.current, offsetBytes, lengthBytes, flags);
  }

  /**
   * Before a retry: a fresh map (and volumes), and from the third attempt on, a growing
   * pause. No pause when the SDS refused the last send because its map was newer
   * (`sdsEpoch`) and the SDC now has that map: the cluster did not fail, it moved on (a
   * snapshot's commit ends every write that waited out its freeze this way), and the
   * piece can go at once.
   */
  private async beforeAttempt(attempt: number, sdsEpoch: number | null = null): Promise<void> {
    if (attempt === 0) return;
    await this.router.refreshView();
    if (sdsEpoch !== null && this.router.map().epoch >= sdsEpoch) return;
    if (attempt > 1) await new Promise((resolve) => setTimeout(resolve, Math.min(sdcRetryDelayMsMax, 50 * 2 ** attempt)));
  }

  /**
   * Sends one piece to the primary of its group at the current epoch, refreshing the map
   * and trying again while the cluster is changing under it, and sending it again while its
   * V-Tree is frozen, until sdcPieceTimeoutMs after the first send. `replyInto`: where a
   * read's data is to land (see WirePeer.request).
   */
  private async send(op: number, args: IoArgs, data?: Buffer, replyInto?: Buffer): Promise<WireResponse> {
    let lastProblem = '';
    const deadlineMs = Date.now() + sdcPieceTimeoutMs;
    let sdsEpoch: number | null = null;
    for (let attempt = 0; attempt < sdcPieceAttemptsMax; attempt++) {
      if (attempt > 0) await this.beforeAttempt(attempt, sdsEpoch);
      let outcome = await this.sendOnce(op, args, data, replyInto);
      // Frozen is no failure and asks nothing of the MDM: the barrier lifts it in a few
      // milliseconds, or the snapshot's commit moves the epoch (then StaleEpoch, below).
      for (let frozenSends = 0; outcome.kind === 'frozen'; frozenSends++) {
        const delayMs = Math.min(frozenRetryDelayMsMax, sdcFrozenRetryMs * 2 ** Math.min(frozenSends, 8));
        if (Date.now() + delayMs > deadlineMs) {
          this.log.error({ volume: this.current.name, chunkIndex: args.chunkIndex, frozenSends, problem: outcome.problem }, 'V-Tree still frozen at the piece deadline');
          throw new BackendError('EIO', `chunk ${args.chunkIndex} of ${this.current.name}: its V-Tree stayed frozen for ${sdcPieceTimeoutMs} ms (${outcome.problem})`);
        }
        await new Promise((resolve) => setTimeout(resolve, delayMs));
        outcome = await this.sendOnce(op, args, data, replyInto);
      }
      if (outcome.kind === 'ok') return outcome.response;
      lastProblem = outcome.problem;
      sdsEpoch = outcome.sdsEpoch;
    }
    this.log.error({ volume: this.current.name, chunkIndex: args.chunkIndex, lastProblem }, 'IO failed after every retry');
    throw new BackendError('EIO', `chunk ${args.chunkIndex} of ${this.current.name}: ${lastProblem}`);
  }

  /**
   * One send of a piece, on the current map, naming the volume's current head: done, worth
   * another attempt on a fresh map, or refused for a frozen V-Tree. Throws what no retry
   * can cure.
   */
  private async sendOnce(op: number, args: IoArgs, data: Buffer | undefined, replyInto: Buffer | undefined): Promise<SendOutcome> {
    const map = this.router.map();
    const route = routePiece(map, args);
    if (!route.ok) return { kind: 'retry', problem: route.problem, sdsEpoch: null };
    const { pgIndex, group } = route;
    if (group.lost === true) {
      this.log.error({ volume: this.current.name, chunkIndex: args.chunkIndex, pgIndex }, 'IO to a placement group that lost both copies');
      throw new BackendError('EIO', `chunk ${args.chunkIndex} of ${this.current.name}: both copies of placement group ${pgIndex} are lost`);
    }
    args.pgIndex = pgIndex;
    // Read at every send: a snapshot may have moved the head since the last one.
    args.generation = this.current.generation;
    // Arguments are encoded per attempt (an earlier attempt's may still sit in a socket's
    // queue, and must not change under it); the data goes out as it is, behind them,
    // without a copy. A pooled NBD payload is held by the socket until written, so it
    // is not reused while queued, even if this request times out first.
    const payload = data === undefined ? encodeIo(args) : [encodeIo(args), data];
    let response: WireResponse;
    try {
      const peer = this.router.connectedPeer?.(group.primary) ?? (await this.router.peer(group.primary));
      response = await peer.request(op, payload, { epoch: map.epoch, timeoutMs: sdcPieceTimeoutMs, replyInto });
    } catch (err) {
      this.log.debug({ err, sdsId: group.primary }, 'SDS unreachable; refreshing the map');
      return { kind: 'retry', problem: `SDS ${group.primary}: ${(err as Error).message}`, sdsEpoch: null };
    }
    if (response.status === SdsStatus.Ok) {
      if (op === SdsOp.Write || op === SdsOp.Trim) this.written.add(group.primary);
      return { kind: 'ok', response };
    }
    if (response.status === SdsStatus.Frozen) return { kind: 'frozen', problem: `SDS ${group.primary}: ${response.payload.toString()}` };
    // StaleEpoch: the SDS's map differs, or the generation is no longer a head (a snapshot
    // moved it). IoError: the device under this copy failed; the MDM re-places the group
    // (the other copy serves it) within a heartbeat, so it is worth the same retries.
    if (response.status === SdsStatus.StaleEpoch || response.status === SdsStatus.MirrorFailed || response.status === SdsStatus.IoError) {
      const epochReply = response.status === SdsStatus.StaleEpoch && response.payload.length === 8 ? Number(response.payload.readBigUInt64BE(0)) : null;
      const problem = `SDS ${group.primary}: ${epochReply !== null ? `epoch ${epochReply} vs ${map.epoch}, generation ${args.generation}` : response.payload.toString()}`;
      return { kind: 'retry', problem, sdsEpoch: epochReply !== null && epochReply > map.epoch ? epochReply : null };
    }
    const what = op === SdsOp.Read ? 'read' : op === SdsOp.Write ? 'write' : 'trim';
    if (response.status === SdsStatus.Corrupt) {
      // Every copy of the range failed its checksums (docs/integrity.md): no map or retry
      // can bring the bytes back, so the client gets EIO now, and the SDS has reported it.
      const reason = response.payload.toString();
      this.log.error({ volume: this.current.name, chunkIndex: args.chunkIndex, offsetBytes: args.offsetBytes, lengthBytes: args.lengthBytes, sdsId: group.primary, reason }, `${what} of data bad on every copy; EIO, not retried`);
      throw new BackendError('EIO', `${what} of chunk ${args.chunkIndex} of ${this.current.name}: SDS ${group.primary} reports the data corrupt on every copy: ${reason}`);
    }
    throw this.errorOf(response, what);
  }

  private errorOf(response: WireResponse, what: string): BackendError {
    const reason = response.payload.toString();
    this.log.warn({ volume: this.volume.name, status: response.status, reason }, `SDS ${what} failed`);
    switch (response.status) {
      case SdsStatus.NoSpace:
        return new BackendError('ENOSPC', `${what}: ${reason}`);
      case SdsStatus.InvalidArgument:
        return new BackendError('EINVAL', `${what}: ${reason}`);
      default:
        return new BackendError('EIO', `${what}: ${reason}`);
    }
  }
}

/**
 * Waits for every piece of a request, then fails with the first failure. Promise.all would
 * fail at the first, and the NBD server would then reuse the request's buffer while other
 * pieces still read into it or send from it (a retry of a write would send someone else's
 * bytes).
 */
async function allPieces(pieces: Array<Promise<void>>): Promise<void> {
  const settled = await Promise.allSettled(pieces);
  for (const result of settled) if (result.status === 'rejected') throw result.reason;
}
