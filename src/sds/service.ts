// The SDS data service: serves chunk IO over the wire (wire/sds-ops.ts), mirrors writes to
// the secondary of each placement group, and checks who sent each request before it hands
// control orders (map, reservations, devices, stats) to control-ops.ts and rebuild orders
// to rebuild.ts (the source side; the target side is Put and replica Trim, served here).
// The placement map comes from the MDM (or, until one runs, from whoever holds the cluster
// secret with role 'mdm' or 'test'); IO stamped with any other epoch is refused.
//
//   SDC ──Write──▶ primary ──Write|Replica──▶ secondary
//                   │ apply locally, in parallel with the forward
//   SDC ◀──Ok───── primary ◀──────Ok──────────┘   (Ok only when both copies are written)
//
// The primary holds a byte-range lock on the chunk from before it applies a write until
// both copies have it, so overlapping writes reach both copies in the same order.
//
// Snapshots (docs/snapshots.md). A chunk key carries a generation; the map's V-Tree says
// which generations are heads and what each one's parents are. A read of generation g
// reads the nearest generation on generationPath(tree, g) that holds the chunk; writes and
// trims must name a head (StaleEpoch otherwise: the sender's map is old) of a tree that is
// not frozen (Frozen). The primary alone decides what a change does to generations, and
// sends the secondary something whose meaning does not depend on what the secondary holds
// (during a rebuild it may not hold the ancestors yet):
//
//   on the primary, chunk i of head h         mirrored to the secondary as
//   ----------------------------------------  ---------------------------------------------
//   h holds i, or nobody on the path does     the request itself (exact key i:h)
//   an ancestor holds i, partial write/trim   copy on write here, then a whole-chunk Write
//                                             of the result (the secondary never copies)
//   an ancestor holds i, whole write          the request itself (whole: nothing to copy)
//   an ancestor holds i, whole trim           a whole-chunk Write of zeros (i:h must hide
//                                             the ancestor on both copies)
//   nobody but h holds i, whole trim          the request itself: the key is freed
//
// So a secondary applies Replica writes and trims to the exact key named, and a rebuild
// (Put, and Trim of what the source no longer holds) does the same. Any whole-chunk write of
// a key that may hide another generation's copy uses the store's shadow order
// (chunk-store.ts): content, fdatasync, entry.
//
// Freeze: a map that freezes a tree is answered once the writes to it that this SDS accepted
// as primary have completed on both copies; the freeze holds until a map lifts it
// (control-ops.ts).

import { mirrorTimeoutMs, sdsClientQuietMs, sdsMemoryBudgetBytesDefault } from '../common/limits.js';
import * as net from 'node:net';
import type { Logger } from 'pino';
import { assert } from '../common/assert.js';
import { acquirePayload, payloadPool } from '../common/buffer-pool.js';
import { InvalidArgumentError } from '../common/errors.js';
import type { RebuildDone, RegisteredDevice } from '../wire/mdm-ops.js';
import { WirePeer, WireError, type PeerRole, type WireReply, type WireRequest } from '../wire/peer.js';
import { ServingBudget } from '../wire/serving-budget.js';
import { adoptAccepted } from '../common/borrowed-reads.js';
import { PeerPool, listenTcp } from '../wire/peer-pool.js';
import { generationPath, placementGroupOf, vtreeOf, type PlacementGroup, type PlacementMap } from '../wire/placement.js';
import {
  SdsOp,
  SdsStatus,
  IoFlag,
  decodeIo,
  decodeAllocation,
  decodeListGroup,
  encodeListedChunks,
  encodeEpoch,
  setIoFlags,
  encodeIo,
  ioArgsBytes,
  ioArgOffsets,
  type IoArgs,
  type SdsStats,
} from '../wire/sds-ops.js';
import { ChecksumError, ChunkStore, StoreError, keyName, type ChunkKey } from './chunk-store.js';
import { CopyRepair, blockAligned } from './copy-repair.js';
import { Scrubber } from './scrub.js';
import { GenerationCollector } from './generation-gc.js';
import { RangeLocks } from './range-locks.js';
import type { MapHeld } from '../wire/map-codec.js';
import { SdsControl, type SdsIdentity } from './control-ops.js';
import { RebuildSource, groupKeysOf } from './rebuild.js';
import { RebuildCursors } from './rebuild-cursors.js';
import { ReplyError } from './reply-error.js';
import type { SdsState } from './state.js';
import { IoStats, ioTiming, type IoCounter } from '../common/metrics.js';

/** What the SDS counts of the IO it serves (its metrics: sds/metrics.ts): a client's as primary, and mirror copies from a primary. */
export type SdsIoOp = 'read' | 'write' | 'trim' | 'mirror_write' | 'mirror_trim';
export const sdsIoOps: readonly SdsIoOp[] = ['read', 'write', 'trim', 'mirror_write', 'mirror_trim'];

export type { SdsIdentity } from './control-ops.js';

export interface SdsServiceOptions {
  /** Tells the MDM a rebuild order is complete (the SDS's MDM link sends it). */
  onRebuildDone?: (done: RebuildDone) => void;
  identity: SdsIdentity;
  secret: Buffer;
  store: ChunkStore;
  state: SdsState;
  dataDir: string;
  log: Logger;
  payloadChecksums: boolean;
  /**
   * Bytes of client IO held at once, across all client connections (sds start
   * --memory-budget; wire/serving-budget.ts); default sdsMemoryBudgetBytesDefault.
   */
  memoryBudgetBytes?: number;
}

export interface Served {
  role: PeerRole;
  name: string;
}

export class SdsService {
  private readonly control: SdsControl;
  private readonly server: net.Server;
  private readonly accepted = new Set<WirePeer>();
  private readonly sockets = new Set<net.Socket>();
  /** Outgoing connections to other SDSs (mirrors, rebuild targets), by SDS id. */
  private readonly peers: PeerPool;
  /** Mirrors written to since the last client flush: a flush must reach them too. */
  private readonly mirrorsWritten = new Set<string>();
  private readonly locks = new RangeLocks();
  private readonly rebuilds: RebuildSource;
  /** Opened (read) in the background at start; a rebuild order waits for it. */
  private readonly rebuildCursors: Promise<RebuildCursors>;
  private readonly handlers = new Set<Promise<unknown>>();
  /** Shared by the connections of clients (SDCs, tests and benchmarks), not of SDSs or the MDM. */
  private readonly budget: ServingBudget;
  /** Client writes and trims accepted here as primary and not yet answered, by V-Tree: what a freeze waits for. */
  private readonly primaryChanges = new Map<string, Set<Promise<unknown>>>();
  private readonly collector: GenerationCollector;
  /** Bad bytes found here are fetched from the other copy and rewritten (copy-repair.ts). */
  private readonly repair: CopyRepair;
  private readonly scrubber: Scrubber;
  private refetching = false;
  private closing = false;
  private clientIoInflight = 0;
  /** When the last client IO ended, on performance.now()'s clock (the one the metrics read anyway); never: -Infinity. */
  private clientIoLastMs = Number.NEGATIVE_INFINITY;
  /**
   * Without IO timing (--metrics off) no request reads the clock: requests ending are
   * counted, and the first isClientBusy() that sees the count move takes its own time as
   * the last end (late by at most the time between two looks, rebuildPaceRecheckMs while
   * a rebuild is paced, so a rebuild gives way a little longer than with timing).
   */
  private clientIoEnded = 0;
  private clientIoEndedSeen = 0;
  /** Served IO, counted for the metrics; the counters are taken out once (no lookup per request). */
  readonly io = new IoStats<SdsIoOp>(sdsIoOps);
  private readonly ioCounters: Record<SdsIoOp, IoCounter> = {
    read: this.io.op('read'),
    write: this.io.op('write'),
    trim: this.io.op('trim'),
    mirror_write: this.io.op('mirror_write'),
    mirror_trim: this.io.op('mirror_trim'),
  };

  constructor(private readonly options: SdsServiceOptions) {
    this.budget = new ServingBudget(options.memoryBudgetBytes ?? sdsMemoryBudgetBytesDefault);
    this.control = new SdsControl({
      identity: options.identity,
      store: options.store,
      state: options.state,
      dataDir: options.dataDir,
      log: options.log,
      locks: this.locks,
      isClosing: () => this.closing,
      track: (work) => this.track(work),
      onMapAccepted: (map) => {
        this.peers.retain((sdsId) => map.sds[sdsId]?.address);
        // A new map may bring a new scrub policy or new groups: the next pass need not wait.
        this.scrubber.poke();
        this.refetchLost();
      },
      rebuildProgress: () => this.rebuilds.progress(),
      collectGenerations: (epoch) => this.collector.collect(epoch),
      snapshotBytesByDevice: () => this.collector.snapshotBytesByDevice(),
      scrubProgress: () => this.scrubber.progress(),
      memoryProgress: () => ({ budgetBytes: this.budget.limitBytes, usedBytes: this.budget.usedBytes, peakBytes: this.budget.peakBytes }),
    });
    // Cursors live in their own file now; a data dir from before keeps them in the state
    // file: read there when the cursor file is absent (and moved into it), and no longer
    // written there. Should the next state save beat the move to a crash, the cursors are
    // lost, which only makes their jobs copy from the start.
    const legacyCursors = options.state.rebuildCursors ?? {};
    delete options.state.rebuildCursors;
    this.rebuildCursors = RebuildCursors.open(options.dataDir, legacyCursors, options.log);
    // What the background parts (rebuild, collector, repair, scrub) all get of this service.
    const shared = {
      sdsId: options.identity.sdsId,
      store: options.store,
      locks: this.locks,
      log: options.log,
      map: () => this.map,
      epoch: () => this.epoch,
      isClosing: () => this.closing,
      track: <T>(work: Promise<T>) => this.track(work),
      forward: (sdsId: string, op: number, payload: Buffer, epoch: number) => this.forward(sdsId, op, payload, epoch),
      peerFor: (sdsId: string) => this.peerFor(sdsId),
    };
    const clientBusy = (): boolean => {
      if (this.clientIoInflight > 0) return true;
      const nowMs = performance.now();
      if (this.clientIoEnded !== this.clientIoEndedSeen) {
        this.clientIoEndedSeen = this.clientIoEnded;
        if (!ioTiming.on) this.clientIoLastMs = nowMs;
      }
      return nowMs - this.clientIoLastMs < sdsClientQuietMs;
    };
    this.rebuilds = new RebuildSource({
      ...shared,
      cursors: this.rebuildCursors,
      isClientBusy: clientBusy,
      ...(options.onRebuildDone !== undefined ? { onRebuildDone: options.onRebuildDone } : {}),
    });
    this.collector = new GenerationCollector({
      ...shared,
      noteChange: (poolId, pgIndex, chunkName) => this.rebuilds.noteChange(poolId, pgIndex, chunkName),
    });
    this.repair = new CopyRepair(shared);
    this.scrubber = new Scrubber({
      ...shared,
      repair: this.repair,
      isBusy: () => clientBusy() || this.rebuilds.progress().some((job) => job.state === 'running' || job.state === 'waiting'),
    });
    // Paused on accept: the socket is adopted with borrowed reads before anything is read.
    this.server = net.createServer({ pauseOnConnect: true }, (socket) => this.onConnection(adoptAccepted(socket)));
    this.peers = new PeerPool({
      clusterId: options.identity.clusterId,
      secret: options.secret,
      role: 'sds',
      name: options.identity.name,
      log: options.log,
      payloadChecksums: options.payloadChecksums,
    });
  }

  /** The placement map in force (null before the first one). */
  private get map(): PlacementMap | null {
    return this.control.map;
  }

  get epoch(): number {
    return this.control.epoch;
  }

  async listen(host: string, port: number): Promise<net.AddressInfo> {
    const address = await listenTcp(this.server, host, port);
    this.scrubber.start();
    return address;
  }

  private onConnection(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    const served: Served = { role: 'test', name: '?' };
    WirePeer.accept(socket, {
      clusterId: this.options.identity.clusterId,
      secret: this.options.secret,
      role: 'sds',
      name: this.options.identity.name,
      log: this.options.log,
      payloadChecksums: this.options.payloadChecksums,
      onRequest: (request) => this.handle(served, request),
    }).then(
      (peer) => {
        assert(peer.remote !== null, 'an accepted peer has proven who it is');
        served.role = peer.remote.role;
        served.name = peer.remote.name;
        // A client's requests share the budget; an SDS's (mirror writes, rebuild copies) must
        // not wait behind the client writes that wait on them (serving-budget.ts).
        if (served.role === 'sdc' || served.role === 'test') peer.shareServingBudget(this.budget);
        this.accepted.add(peer);
        void peer.closed.then(() => this.accepted.delete(peer));
        this.options.log.debug({ remote: peer.remote, address: socket.remoteAddress }, 'wire peer connected');
      },
      (err: unknown) => this.options.log.warn({ err, address: socket.remoteAddress }, 'wire peer refused'),
    );
  }

  /** Serves one request from a peer of `from`'s role (also used by the MDM link). */
  handle(from: Served, request: WireRequest): Promise<WireReply> {
    return this.track(this.onRequest(from, request));
  }

  private track<T>(work: Promise<T>): Promise<T> {
    this.handlers.add(work);
    // then() with both outcomes: one promise per request, not finally()'s and catch()'s.
    const forget = (): void => void this.handlers.delete(work);
    work.then(forget, forget);
    return work;
  }

  // --- dispatch --------------------------------------------------------------------------

  private async onRequest(from: Served, request: WireRequest): Promise<WireReply> {
    try {
      switch (request.op) {
        case SdsOp.Read:
        case SdsOp.Write:
        case SdsOp.Trim:
          return await this.clientIo(from, request);
        case SdsOp.Flush:
          return await this.onFlush(from);
        case SdsOp.Put:
          return await this.onPut(from, request);
        case SdsOp.Allocation:
          return this.onAllocation(request);
        case SdsOp.ListGroup:
          return this.onListGroup(request);
        case SdsOp.SetMap:
          this.requireRole(from, ['mdm', 'test'], 'a placement map');
          this.control.onSetMap(request.payload);
          // The MDM reads Ok as "no write to a frozen tree is in flight here any more".
          await this.drainFrozen();
          return { status: SdsStatus.Ok };
        case SdsOp.SetMapBinary: {
          this.requireRole(from, ['mdm', 'test'], 'a placement map');
          const held = this.control.onSetMapBinary(request.payload);
          // As SetMap: also for an update that changed nothing (the barrier's confirmation).
          await this.drainFrozen();
          return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify(held)) };
        }
        case SdsOp.Stats:
          return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify(this.stats())) };
        case SdsOp.Reserve:
          this.requireRole(from, ['mdm', 'test'], 'a reservation');
          this.control.onReserve(request.payload);
          return { status: SdsStatus.Ok };
        case SdsOp.Rebuild:
          this.requireRole(from, ['mdm', 'test'], 'a rebuild order');
          this.rebuilds.onRebuild(request.payload);
          return { status: SdsStatus.Ok };
        case SdsOp.AddDevice:
          this.requireRole(from, ['mdm', 'test'], 'a device order');
          return await this.control.onAddDevice(request.payload);
        case SdsOp.ReadCopy:
          this.requireRole(from, ['sds', 'test'], 'a copy read');
          return await this.repair.onReadCopy(request);
        case SdsOp.Digest:
          this.requireRole(from, ['sds', 'test'], 'a copy digest');
          return await this.repair.onDigest(request);
        default:
          return { status: SdsStatus.UnknownOp, payload: Buffer.from(`op ${request.op} is not an SDS operation`) };
      }
    } catch (err) {
      return this.failureReply(err, request.op);
    }
  }

  /**
   * Client IO (and its mirror writes), counted so that rebuilds can give way to it, and for
   * the metrics: two clock reads (none with --metrics off: ioTiming) and a few additions
   * into an IoCounter, no allocation. A request refused (a stale epoch, a frozen tree)
   * counts as an error of its operation.
   */
  private async clientIo(from: Served, request: WireRequest): Promise<WireReply> {
    this.clientIoInflight += 1;
    const timed = ioTiming.on;
    const startMs = timed ? performance.now() : 0;
    const counter = this.ioCounterOf(request);
    let ok = false;
    try {
      let reply: WireReply;
      if (request.op === SdsOp.Read) reply = await this.onRead(request);
      else if (request.op === SdsOp.Write) reply = await this.onWrite(from, request);
      else reply = await this.onTrim(from, request);
      ok = reply.status === SdsStatus.Ok;
      return reply;
    } finally {
      this.clientIoInflight -= 1;
      this.clientIoEnded += 1;
      const bytes = request.payload.length >= ioArgsBytes ? request.payload.readUInt32BE(ioArgOffsets.lengthBytes) : 0;
      if (timed) {
        // One clock read serves both the rebuild's idea of "client busy" and the latency.
        const endMs = performance.now();
        this.clientIoLastMs = endMs;
        if (ok) counter.done(bytes, endMs - startMs);
        else counter.failed();
      } else if (ok) counter.doneUntimed(bytes);
      else counter.failed();
    }
  }

  /** The counter of a read, write or trim request (its arguments say whether it is a mirror copy). */
  private ioCounterOf(request: WireRequest): IoCounter {
    if (request.op === SdsOp.Read) return this.ioCounters.read;
    const replica = request.payload.length >= ioArgsBytes && (request.payload.readUInt32BE(ioArgOffsets.flags) & IoFlag.Replica) !== 0;
    if (request.op === SdsOp.Write) return replica ? this.ioCounters.mirror_write : this.ioCounters.write;
    return replica ? this.ioCounters.mirror_trim : this.ioCounters.trim;
  }

  private failureReply(err: unknown, op: number): WireReply {
    if (err instanceof ReplyError) return { status: err.status, payload: err.payload };
    if (err instanceof InvalidArgumentError) return { status: SdsStatus.InvalidArgument, payload: Buffer.from(err.message) };
    if (err instanceof StoreError && err.code === 'MB_ERR_DEVICE_FAILED') return { status: SdsStatus.IoError, payload: Buffer.from(err.message) };
    if (err instanceof StoreError && err.code === 'MB_ERR_NO_SPACE') return { status: SdsStatus.NoSpace, payload: Buffer.from(err.message) };
    // Bad bytes no repair was tried for here (a mirror write's read-modify-write, a rebuild
    // read): nothing of them is returned, and the sender decides.
    if (err instanceof ChecksumError) return { status: SdsStatus.Corrupt, payload: Buffer.from(err.message) };
    this.options.log.error({ err, op }, 'SDS request failed');
    return { status: SdsStatus.Failed, payload: Buffer.from(err instanceof Error ? err.message : String(err)) };
  }

  // --- IO --------------------------------------------------------------------------------

  /** Checks epoch, group and role; returns the group. Throws ReplyError(StaleEpoch) otherwise. */
  private admit(args: IoArgs, epoch: number, role: 'primary' | 'secondary', options: { previousEpoch?: boolean } = {}): PlacementGroup {
    const map = this.map;
    if (map === null || (epoch !== map.epoch && !(options.previousEpoch === true && this.samePlacementBefore(args, epoch)))) {
      throw new ReplyError(SdsStatus.StaleEpoch, `request epoch ${epoch}, SDS epoch ${this.epoch}`, encodeEpoch(this.epoch));
    }
    const pool = map.pools[args.poolId];
    if (pool === undefined) throw new InvalidArgumentError('io.poolId', `pool ${args.poolId} is not in map epoch ${map.epoch}`);
    const group = pool.groups[args.pgIndex];
    if (group === undefined || placementGroupOf(args.vtreeId, args.chunkIndex, pool.groups.length) !== args.pgIndex) {
      throw new InvalidArgumentError('io.pgIndex', `chunk ${args.vtreeId}:${args.chunkIndex} is not in placement group ${args.pgIndex}`);
    }
    if (args.offsetBytes + args.lengthBytes > this.options.store.chunkBytes) {
      throw new InvalidArgumentError('io', `range ${args.offsetBytes}+${args.lengthBytes} passes the ${this.options.store.chunkBytes}-byte chunk`);
    }
    if (group.lost === true) throw new ReplyError(SdsStatus.IoError, `placement group ${args.pgIndex} lost both copies: its data is gone`);
    const holder = role === 'primary' ? group.primary : group.secondary;
    if (holder !== this.options.identity.sdsId) {
      // Same epoch, different opinion: the sender misrouted. Tell it to look again.
      this.options.log.warn({ args, role, epoch }, 'IO for a placement group this SDS does not hold in that role');
      throw new ReplyError(SdsStatus.StaleEpoch, `this SDS is not the ${role} of group ${args.pgIndex} at epoch ${epoch}`, encodeEpoch(this.epoch));
    }
    return group;
  }

  /**
   * A mirror write stamped with the epoch just before this SDS's is still taken when its
   * group has the same two copies in both maps. A map is installed on every SDS at its own
   * moment: without this, a primary's write accepted before the new map reached it (and a
   * freeze drains exactly those) would be refused here, leaving the write on one copy only,
   * in a generation the snapshot then shares: its two copies would differ for ever.
   */
  private samePlacementBefore(args: IoArgs, epoch: number): boolean {
    const previous = this.control.previousMap;
    const current = this.map;
    if (previous === null || current === null || previous.epoch !== epoch) return false;
    const before = previous.pools[args.poolId]?.groups[args.pgIndex];
    const now = current.pools[args.poolId]?.groups[args.pgIndex];
    return before !== undefined && now !== undefined && before.primary === now.primary && before.secondary === now.secondary && before.lost !== true && now.lost !== true;
  }

  /** The generations a read of `args.generation` looks in; StaleEpoch if the generation is not live. */
  private readPath(args: IoArgs): number[] {
    const map = this.map;
    assert(map !== null, 'IO is admitted only with a map');
    const path = generationPath(vtreeOf(map, args.vtreeId), args.generation);
    if (path.length === 0) {
      throw new ReplyError(SdsStatus.StaleEpoch, `generation ${args.generation} of V-Tree ${args.vtreeId} is not live at epoch ${map.epoch}`, encodeEpoch(this.epoch));
    }
    return path;
  }

  /** A change must name a head (StaleEpoch otherwise) of a tree that is not frozen (Frozen); returns the head's path. */
  private headPath(args: IoArgs, options: { frozenRefused: boolean }): number[] {
    const map = this.map;
    assert(map !== null, 'IO is admitted only with a map');
    const tree = vtreeOf(map, args.vtreeId);
    if (!tree.heads.some((head) => head.generation === args.generation)) {
      throw new ReplyError(SdsStatus.StaleEpoch, `generation ${args.generation} of V-Tree ${args.vtreeId} is not a head at epoch ${map.epoch}: only heads are written`, encodeEpoch(this.epoch));
    }
    if (options.frozenRefused && this.control.isFrozen(args.vtreeId)) {
      throw new ReplyError(SdsStatus.Frozen, `V-Tree ${args.vtreeId} is frozen for a snapshot at epoch ${map.epoch}`);
    }
    return generationPath(tree, args.generation);
  }

  private async onRead(request: WireRequest): Promise<WireReply> {
    const { args } = decodeIo(request.payload);
    this.admit(args, request.epoch, 'primary');
    const path = this.readPath(args);
    const key = chunkKey(args);
    const { startBytes, endBytes } = blockAligned(args.offsetBytes, args.lengthBytes);
    // A bad range found here is repaired from the secondary (copy-repair.ts, under its own
    // exclusive lock) and the read runs again.
    return this.repair.withRepair(async () => {
      const release = await this.locks.acquire(keyName(key), startBytes, endBytes, false);
      try {
        // The path is this epoch's: a read that waited for the lock across a map change could
        // look for generations a newer map dropped (and the collector freed).
        if (this.epoch !== request.epoch) throw new ReplyError(SdsStatus.StaleEpoch, `the map moved to epoch ${this.epoch} while the read waited`, encodeEpoch(this.epoch));
        // A large reply buffer is reused: the peer gives it back once the socket has sent it.
        const data = acquirePayload(args.lengthBytes);
        try {
          await this.options.store.readResolved(key, path, args.offsetBytes, data);
        } catch (err) {
          if (payloadPool.owns(data)) payloadPool.release(data);
          throw err;
        }
        return { status: SdsStatus.Ok, payload: data, releaseAfterSend: payloadPool.owns(data) };
      } finally {
        release();
      }
    }, { lockedExclusive: false });
  }

  private async onWrite(from: Served, request: WireRequest): Promise<WireReply> {
    const { args, data } = decodeIo(request.payload);
    if (data.length !== args.lengthBytes) throw new InvalidArgumentError('io', `write of ${args.lengthBytes} bytes carries ${data.length}`);
    const fua = (args.flags & IoFlag.Fua) !== 0;
    if ((args.flags & IoFlag.Replica) !== 0) {
      this.requireRole(from, ['sds', 'test'], 'a replica write');
      const group = this.admit(args, request.epoch, 'secondary', { previousEpoch: true });
      // The primary checked this at its epoch; a mirror write must never land in a frozen
      // generation (one a snapshot shares), whatever the epochs say.
      this.headPath(args, { frozenRefused: false });
      const key = chunkKey(args);
      const { startBytes, endBytes } = blockAligned(args.offsetBytes, args.lengthBytes);
      const release = await this.locks.acquire(keyName(key), startBytes, endBytes, true);
      try {
        await this.applyExact(key, args.offsetBytes, data, { fua, preferDeviceId: group.secondaryDevice });
      } finally {
        release();
      }
      return { status: SdsStatus.Ok };
    }
    const group = this.admit(args, request.epoch, 'primary');
    const path = this.headPath(args, { frozenRefused: true });
    return this.trackPrimary(args.vtreeId, this.primaryChange(args, request, group, path, data));
  }

  private async onTrim(from: Served, request: WireRequest): Promise<WireReply> {
    const { args } = decodeIo(request.payload);
    const fua = (args.flags & IoFlag.Fua) !== 0;
    if ((args.flags & IoFlag.Replica) !== 0) {
      this.requireRole(from, ['sds', 'test'], 'a replica trim');
      // Any generation at this epoch (a rebuild trims what its source no longer holds, the
      // collector what no head reaches); only a head's at the epoch before (a client's trim).
      const sameEpoch = request.epoch === this.epoch;
      this.admit(args, request.epoch, 'secondary', { previousEpoch: true });
      if (!sameEpoch) this.headPath(args, { frozenRefused: false });
      const key = chunkKey(args);
      const { startBytes, endBytes } = blockAligned(args.offsetBytes, args.lengthBytes);
      const release = await this.locks.acquire(keyName(key), startBytes, endBytes, true);
      try {
        await this.options.store.trim(key, args.offsetBytes, args.lengthBytes, { fua });
      } finally {
        release();
      }
      return { status: SdsStatus.Ok };
    }
    const group = this.admit(args, request.epoch, 'primary');
    const path = this.headPath(args, { frozenRefused: true });
    return this.trackPrimary(args.vtreeId, this.primaryChange(args, request, group, path, null));
  }

  /**
   * A mirror write, to the exact key the primary applied. A whole chunk written to a
   * key not held here while another generation of the chunk is takes the shadow order: it
   * may hide an ancestor's copy, and must not do so before its bytes are durable.
   */
  private async applyExact(key: ChunkKey, offsetBytes: number, data: Buffer, options: { fua: boolean; preferDeviceId?: string | undefined }): Promise<void> {
    const store = this.options.store;
    const whole = offsetBytes === 0 && data.length === store.chunkBytes;
    if (whole && !store.has(key) && store.holdsOtherGeneration(key)) await store.writeShadowing(key, data, options);
    else await store.write(key, offsetBytes, data, options);
  }

  /**
   * Fetches again, whole, the chunks this SDS lost to damaged slot-table entries (found at
   * open), from their other copies, without waiting for a read or the scrub to need them:
   * a secondary's lost copy is read by nobody until its primary fails. Runs once per map
   * while any are lost; one that cannot be fetched now is tried with the next map.
   */
  private refetchLost(): void {
    if (this.refetching || this.closing) return;
    const lost = this.options.store.lostToDamage().filter((key) => this.repair.groupOf(key) !== null);
    if (lost.length === 0) return;
    this.refetching = true;
    const work = (async () => {
      for (const key of lost) {
        if (this.closing) return;
        const found = new ChecksumError(key, 0, this.options.store.chunkBytes, 'lost to a damaged slot-table entry');
        await this.repair.repair(found, { lockedExclusive: false }).catch((err: unknown) => this.options.log.warn({ err, key }, 'fetching a chunk lost to a damaged entry failed; tried again with the next map'));
      }
    })().finally(() => (this.refetching = false));
    void this.track(work);
  }

  /** Registers a change accepted as primary until it is answered, so that a freeze can wait for it. */
  private trackPrimary<T>(vtreeId: string, work: Promise<T>): Promise<T> {
    let inflight = this.primaryChanges.get(vtreeId);
    if (inflight === undefined) this.primaryChanges.set(vtreeId, (inflight = new Set()));
    const set = inflight;
    set.add(work);
    const forget = (): void => {
      set.delete(work);
      if (set.size === 0 && this.primaryChanges.get(vtreeId) === set) this.primaryChanges.delete(vtreeId);
    };
    work.then(forget, forget);
    return work;
  }

  /** Waits until every change accepted here as primary to a tree now frozen has been answered. */
  private async drainFrozen(): Promise<void> {
    const waits: Array<Promise<unknown>> = [];
    for (const vtreeId of this.control.frozenVtrees()) waits.push(...(this.primaryChanges.get(vtreeId) ?? []));
    await Promise.allSettled(waits);
  }

  /**
   * A client write (`data`) or trim (`data` null) of head `path[0]`, applied here and on the
   * secondary as the table at the top says. The range lock covers the request's range, or
   * the whole chunk when this is the chunk's first change under its head while an ancestor
   * holds it (copy on write): no other change to the key may interleave with the copy.
   */
  private async primaryChange(args: IoArgs, request: WireRequest, group: PlacementGroup, path: readonly number[], data: Buffer | null): Promise<WireReply> {
    const store = this.options.store;
    const chunkBytes = store.chunkBytes;
    const key = chunkKey(args);
    const chunkName = keyName(key);
    const whole = args.offsetBytes === 0 && args.lengthBytes === chunkBytes;
    const fua = (args.flags & IoFlag.Fua) !== 0;
    const shadowsAncestor = (): boolean => {
      const holder = store.resolve(key, path);
      return holder !== null && holder !== key.generation;
    };
    let release: () => void;
    let shadowing: boolean;
    for (;;) {
      const wanted = shadowsAncestor();
      const range = blockAligned(args.offsetBytes, args.lengthBytes);
      release = await this.locks.acquire(chunkName, wanted ? 0 : range.startBytes, wanted ? chunkBytes : range.endBytes, true);
      shadowing = shadowsAncestor();
      // Copying needs the whole chunk's lock; a range lock taken before another change freed
      // the head's key is not enough.
      if (shadowing === wanted || !shadowing) break;
      release();
    }
    try {
      // What this copy does, and what goes to the secondary (null: the request as it came).
      let local: () => Promise<void>;
      let mirror: { op: number; payload: Buffer } | null = null;
      const preferDeviceId = group.primaryDevice;
      if (data !== null && (!shadowing || whole)) {
        local = shadowing ? () => store.writeShadowing(key, data, { fua, preferDeviceId }) : () => store.write(key, args.offsetBytes, data, { fua, preferDeviceId });
      } else if (data === null && !shadowing && !(whole && store.resolve(key, path.slice(1)) !== null)) {
        local = () => store.trim(key, args.offsetBytes, args.lengthBytes, { fua });
      } else if (data === null && whole) {
        // The head must hide what an ancestor holds: a zeroed chunk, here and there.
        const payload = encodeIo({ ...args, flags: (args.flags & IoFlag.Fua) | IoFlag.Replica }, Buffer.alloc(chunkBytes));
        local = () => store.writeShadowing(key, 'zeros', { fua, preferDeviceId });
        mirror = { op: SdsOp.Write, payload };
      } else {
        // Copy on write: the ancestor's chunk with this change applied, whole, to both copies.
        // The whole chunk is the first cut and costs its size for a small write (read here,
        // written on both copies, sent once): on the test VM a 4 KiB write's first touch of a
        // chunk after a snapshot ran ~20x slower, and without the fdatasync only ~25% faster,
        // so the bytes are the cost. The next step is a finer copy: a bitmap of the blocks a
        // key holds (the entry's reserved bytes), reads merging the rest from the ancestor.
        const payload = Buffer.allocUnsafe(ioArgsBytes + chunkBytes);
        encodeIo({ ...args, offsetBytes: 0, lengthBytes: chunkBytes, flags: (args.flags & IoFlag.Fua) | IoFlag.Replica }).copy(payload);
        const chunk = payload.subarray(ioArgsBytes);
        await this.repair.withRepair(() => store.readResolved(key, path.slice(1), 0, chunk), { lockedExclusive: false });
        if (data !== null) data.copy(chunk, args.offsetBytes);
        else chunk.fill(0, args.offsetBytes, args.offsetBytes + args.lengthBytes);
        local = () => store.writeShadowing(key, chunk, { fua, preferDeviceId });
        mirror = { op: SdsOp.Write, payload };
      }
      // A read-modify-write of a block here that turns out bad is repaired from the
      // secondary under the lock this change holds (whole blocks), then done again.
      const unrepaired = local;
      local = () => this.repair.withRepair(unrepaired, { lockedExclusive: true });
      const secondary = group.secondary;
      if (secondary === null) {
        this.rebuilds.noteChange(args.poolId, args.pgIndex, chunkName);
        await local();
        return { status: SdsStatus.Ok };
      }
      if (mirror === null) {
        // The request's own payload goes on to the secondary, with the Replica flag set.
        setIoFlags(request.payload, args.flags | IoFlag.Replica);
        mirror = { op: request.op, payload: request.payload };
      }
      this.mirrorsWritten.add(secondary);
      // The mirror's frame is queued first and this copy is written after it has left (the
      // peer sends what a turn queued just before the next setImmediate callbacks run): the
      // secondary writes while this SDS does, instead of after it. A device write done on
      // the event loop would otherwise hold the frame back for its whole length, on the
      // critical path of every write at QD1. The range lock is held throughout.
      const mirrored = this.forward(secondary, mirror.op, mirror.payload, request.epoch);
      const applied = new Promise<void>((resolve) => setImmediate(resolve)).then(local);
      const [localResult, mirrorResult] = await Promise.allSettled([applied, mirrored]);
      if (mirrorResult.status === 'rejected') this.rebuilds.noteChange(args.poolId, args.pgIndex, chunkName);
      if (localResult.status === 'rejected') throw localResult.reason;
      if (mirrorResult.status === 'rejected') throw mirrorResult.reason;
      return { status: SdsStatus.Ok };
    } finally {
      release();
    }
  }

  /** Sends to another SDS; a failure or refusal there becomes MirrorFailed (or StaleEpoch). */
  private async forward(sdsId: string, op: number, payload: Buffer, epoch: number): Promise<void> {
    let response;
    try {
      const peer = this.connectedPeer(sdsId) ?? (await this.peerFor(sdsId));
      response = await peer.request(op, payload, { epoch, timeoutMs: mirrorTimeoutMs });
    } catch (err) {
      throw new ReplyError(SdsStatus.MirrorFailed, `mirror SDS ${sdsId} unreachable: ${(err as Error).message}`);
    }
    if (response.status === SdsStatus.Ok) return;
    if (response.status === SdsStatus.StaleEpoch) {
      throw new ReplyError(SdsStatus.StaleEpoch, `mirror SDS ${sdsId} refused epoch ${epoch}`, encodeEpoch(this.epoch));
    }
    throw new ReplyError(SdsStatus.MirrorFailed, `mirror SDS ${sdsId} failed (status ${response.status}): ${response.payload.toString()}`);
  }

  private async onFlush(from: Served): Promise<WireReply> {
    const local = this.options.store.flush();
    // A client's flush covers the mirror copies of what it wrote; a primary's flush
    // (from role 'sds') is this copy's share only.
    // A mirror the map no longer counts (its SDS is down or out) holds no copy to make
    // durable: its groups' data is on the copies the map names, this one included.
    const mirrors = from.role === 'sds' ? [] : [...this.mirrorsWritten].filter((sdsId) => this.map?.sds[sdsId] !== undefined);
    this.mirrorsWritten.clear();
    const results = await Promise.allSettled([local, ...mirrors.map((sdsId) => this.forward(sdsId, SdsOp.Flush, Buffer.alloc(0), this.epoch))]);
    const failed = results.find((result) => result.status === 'rejected');
    if (failed !== undefined) {
      for (const sdsId of mirrors) this.mirrorsWritten.add(sdsId);
      throw (failed as PromiseRejectedResult).reason;
    }
    return { status: SdsStatus.Ok };
  }

  private async onPut(from: Served, request: WireRequest): Promise<WireReply> {
    this.requireRole(from, ['sds', 'test'], 'a rebuild copy');
    const { args, data } = decodeIo(request.payload);
    if (args.offsetBytes !== 0 || args.lengthBytes !== this.options.store.chunkBytes || data.length !== args.lengthBytes) {
      throw new InvalidArgumentError('put', `a rebuild copy is one whole ${this.options.store.chunkBytes}-byte chunk`);
    }
    const group = this.admit(args, request.epoch, 'secondary');
    // Any generation, frozen or not: a rebuild copies every key of the group as it is. The
    // plain slot order is enough here, unlike a mirror write: the copy counts only after the
    // source flushed it here (a rebuild cursor, "done"), and a crash before that flush
    // makes the source copy the chunk again.
    const key = chunkKey(args);
    const release = await this.locks.acquire(keyName(key), 0, this.options.store.chunkBytes, true);
    try {
      await this.options.store.write(key, 0, data, { fua: false, preferDeviceId: group.secondaryDevice });
    } finally {
      release();
    }
    return { status: SdsStatus.Ok };
  }

  private onAllocation(request: WireRequest): WireReply {
    const args = decodeAllocation(request.payload);
    const map = this.map;
    // No map ever (a new SDS): it holds nothing of any volume, as it always answered.
    const path = map === null ? [] : generationPath(vtreeOf(map, args.vtreeId), args.generation);
    if (map === null) return { status: SdsStatus.Ok, payload: Buffer.alloc(args.chunkCount) };
    if (path.length === 0) {
      throw new ReplyError(SdsStatus.StaleEpoch, `generation ${args.generation} of V-Tree ${args.vtreeId} is not live at epoch ${this.epoch}`, encodeEpoch(this.epoch));
    }
    const held = Buffer.alloc(args.chunkCount);
    for (let index = 0; index < args.chunkCount; index++) {
      const key: ChunkKey = { poolId: args.poolId, vtreeId: args.vtreeId, chunkIndex: args.chunkIndexFirst + index, generation: args.generation };
      if (this.options.store.resolve(key, path) !== null) held[index] = 1;
    }
    return { status: SdsStatus.Ok, payload: held };
  }

  private onListGroup(request: WireRequest): WireReply {
    const args = decodeListGroup(request.payload);
    return { status: SdsStatus.Ok, payload: encodeListedChunks(groupKeysOf(this.options.store, this.map, args.poolId, args.pgIndex)) };
  }

  // --- roles and control (control-ops.ts) ------------------------------------------------

  private requireRole(from: Served, roles: PeerRole[], what: string): void {
    if (!roles.includes(from.role)) throw new InvalidArgumentError('role', `${what} is not accepted from a peer of role '${from.role}'`);
  }

  /** The devices this SDS serves, as it registers them with the MDM. */
  registeredDevices(): RegisteredDevice[] {
    return this.control.registeredDevices();
  }

  /** The map this SDS holds, as its registration tells the MDM (binary maps). */
  mapHeld(): MapHeld | null {
    return this.control.held();
  }

  stats(): SdsStats {
    return this.control.stats();
  }

  // --- peers -----------------------------------------------------------------------------

  /** The connection to `sdsId` if it is made, else null (peerFor makes it). */
  private connectedPeer(sdsId: string): WirePeer | null {
    const address = this.map?.sds[sdsId]?.address;
    return address === undefined ? null : this.peers.connected(sdsId, address);
  }

  private peerFor(sdsId: string): Promise<WirePeer> {
    const address = this.map?.sds[sdsId]?.address;
    if (address === undefined) return Promise.reject(new WireError('MB_ERR_SDS_UNKNOWN', `SDS ${sdsId} is not in the placement map`));
    return this.peers.get(sdsId, address);
  }

  // --- stopping --------------------------------------------------------------------------

  /** Stops accepting, lets requests in flight finish, then closes every connection. */
  async close(): Promise<void> {
    this.closing = true;
    this.control.close();
    this.collector.close();
    const scrubbed = this.scrubber.close();
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    while (this.handlers.size > 0) await Promise.allSettled([...this.handlers]);
    await (await this.rebuildCursors).settled();
    await scrubbed;
    for (const peer of this.accepted) peer.destroy();
    this.peers.dropAll();
    for (const socket of this.sockets) socket.destroy();
    await stopped;
  }

  destroy(): void {
    this.closing = true;
    this.control.close();
    this.collector.close();
    this.scrubber.poke();
    this.server.close();
    for (const socket of this.sockets) socket.destroy();
    this.peers.dropAll();
  }
}

function chunkKey(args: IoArgs): ChunkKey {
  return { poolId: args.poolId, vtreeId: args.vtreeId, chunkIndex: args.chunkIndex, generation: args.generation };
}
