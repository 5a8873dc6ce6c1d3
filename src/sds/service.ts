// The SDS data service: serves chunk IO over the wire (wire/sds-ops.ts), mirrors writes to
// the secondary of each placement group, and copies placement groups to other SDSs for
// rebuild. The placement map comes from the MDM (or, until one runs, from whoever holds
// the cluster secret with role 'mdm' or 'test'); IO stamped with any other epoch is refused.
//
//   SDC ──Write──▶ primary ──Write|Replica──▶ secondary
//                   │ apply locally, in parallel with the forward
//   SDC ◀──Ok───── primary ◀──────Ok──────────┘   (Ok only when both copies are written)
//
// The primary holds a byte-range lock on the chunk from before it applies a write until
// both copies have it, so overlapping writes reach both copies in the same order.

import * as crypto from 'node:crypto';
import * as net from 'node:net';
import type { Logger } from 'pino';
import { assert } from '../common/assert.js';
import { acquirePayload, payloadPool } from '../common/buffer-pool.js';
import { AssertionError, InvalidArgumentError, MeshblockError } from '../common/errors.js';
import type { AddDeviceOrder, DeviceRefusal, RebuildDone, RegisteredDevice } from '../wire/mdm-ops.js';
import { WirePeer, WireError, type PeerRole, type WireReply, type WireRequest } from '../wire/peer.js';
import { adoptAccepted } from '../common/borrowed-reads.js';
import { PeerPool, listenTcp } from '../wire/peer-pool.js';
import { idPattern, parsePlacementMap, placementGroupOf, type PlacementGroup, type PlacementMap } from '../wire/placement.js';
import {
  SdsOp,
  SdsStatus,
  IoFlag,
  decodeIo,
  decodeAllocation,
  decodeReserve,
  decodeListGroup,
  encodeIo,
  encodeListGroup,
  encodeListedChunks,
  decodeListedChunks,
  encodeEpoch,
  setIoFlags,
  type IoArgs,
  type RebuildArgs,
  type RebuildProgress,
  type SdsStats,
} from '../wire/sds-ops.js';
import { ChunkStore, StoreError, keyName, compareKeys, type ChunkKey } from './chunk-store.js';
import { RangeLocks } from './range-locks.js';
import { saveState, type SdsState } from './state.js';

/** How long a primary waits for its mirror before failing the client's write. */
export const mirrorTimeoutMs = 10_000;
/** Rebuild cursors are saved after this many chunks (and when a rebuild ends). */
const rebuildCursorSaveChunks = 64;
const rebuildChunksInflightMax = 64;
/** Rebuild jobs copying at once; the others wait their turn (still listed as running). */
const rebuildsRunningMax = 8;
/** A target lists a group's chunks within this (it may be busy with other rebuilds). */
const listGroupTimeoutMs = 30_000;
/** Rebuild jobs listed in Stats, finished ones included. */
const rebuildsKeptMax = 1024;
/** Client IO this recent makes the SDS busy: rebuilds run at their under-load rate. */
const clientQuietMs = 200;
/** Stale chunks are freed this long after the map that makes them stale (if still current). */
const staleCollectDelayMs = 5000;

export interface SdsIdentity {
  clusterId: string;
  sdsId: string;
  name: string;
}

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
}

export interface Served {
  role: PeerRole;
  name: string;
}

/** Failures inside a handler that become a specific status instead of `Failed`. */
class ReplyError extends MeshblockError {
  constructor(
    readonly status: number,
    message: string,
    readonly payload: Buffer = Buffer.from(message),
  ) {
    super('MB_ERR_SDS_REPLY', message);
  }
}

export class SdsService {
  private map: PlacementMap | null;
  private readonly server: net.Server;
  private readonly accepted = new Set<WirePeer>();
  private readonly sockets = new Set<net.Socket>();
  /** Outgoing connections to other SDSs (mirrors, rebuild targets), by SDS id. */
  private readonly peers: PeerPool;
  /** Mirrors written to since the last client flush: a flush must reach them too. */
  private readonly mirrorsWritten = new Set<string>();
  private readonly locks = new RangeLocks();
  private readonly rebuilds = new Map<string, RebuildProgress>();
  /** Rebuild job ids: this process's life, then a count. */
  private readonly lifeId = crypto.randomBytes(4).toString('hex');
  private rebuildJobsStarted = 0;
  private rebuildsRunning = 0;
  private readonly rebuildWaiters: Array<() => void> = [];
  private readonly handlers = new Set<Promise<unknown>>();
  private closing = false;
  /**
   * Chunks changed, per group this SDS is primary of, while a copy of the group did not get
   * the change (no secondary, or the mirror failed): what a returning copy lacks, so a
   * delta rebuild copies only these. Kept in memory: a group degraded when this process
   * started has an unknown history (`changesUnknown`), and is rebuilt in full.
   */
  private readonly changes = new Map<string, Set<string>>();
  private readonly changesUnknown = new Set<string>();
  /** One pace for every rebuild job of this SDS: the order's bytes/s is the SDS's budget. */
  private rebuildPacedUntilMs = 0;
  private clientIoInflight = 0;
  private clientIoLastMs = 0;
  /** Chunk copies in flight over all rebuild jobs, and those waiting for a slot. */
  private rebuildSlotsUsed = 0;
  private readonly rebuildSlotWaiters: Array<() => void> = [];
  private gcTimer: NodeJS.Timeout | null = null;

  constructor(private readonly options: SdsServiceOptions) {
    this.map = options.state.map;
    for (const [poolId, pool] of Object.entries(this.map?.pools ?? {})) {
      pool.groups.forEach((group, pgIndex) => {
        if (group.primary === options.identity.sdsId && group.secondary === null) this.changesUnknown.add(groupKeyOf(poolId, pgIndex));
      });
    }
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

  get epoch(): number {
    return this.map?.epoch ?? 0;
  }

  async listen(host: string, port: number): Promise<net.AddressInfo> {
    return listenTcp(this.server, host, port);
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
    void work.finally(() => this.handlers.delete(work)).catch(() => undefined);
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
          return this.onSetMap(from, request);
        case SdsOp.Stats:
          return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify(this.stats())) };
        case SdsOp.Reserve:
          return this.onReserve(from, request);
        case SdsOp.Rebuild:
          return this.onRebuild(from, request);
        case SdsOp.AddDevice:
          return await this.onAddDevice(from, request);
        default:
          return { status: SdsStatus.UnknownOp, payload: Buffer.from(`op ${request.op} is not an SDS operation`) };
      }
    } catch (err) {
      return this.failureReply(err, request.op);
    }
  }

  /** Client IO (and its mirror writes), counted so that rebuilds can give way to it. */
  private async clientIo(from: Served, request: WireRequest): Promise<WireReply> {
    this.clientIoInflight += 1;
    try {
      if (request.op === SdsOp.Read) return await this.onRead(request);
      if (request.op === SdsOp.Write) return await this.onWrite(from, request);
      return await this.onTrim(from, request);
    } finally {
      this.clientIoInflight -= 1;
      this.clientIoLastMs = Date.now();
    }
  }

  private failureReply(err: unknown, op: number): WireReply {
    if (err instanceof ReplyError) return { status: err.status, payload: err.payload };
    if (err instanceof InvalidArgumentError) return { status: SdsStatus.InvalidArgument, payload: Buffer.from(err.message) };
    if (err instanceof StoreError && err.code === 'MB_ERR_DEVICE_FAILED') return { status: SdsStatus.IoError, payload: Buffer.from(err.message) };
    if (err instanceof StoreError && err.code === 'MB_ERR_NO_SPACE') return { status: SdsStatus.NoSpace, payload: Buffer.from(err.message) };
    this.options.log.error({ err, op }, 'SDS request failed');
    return { status: SdsStatus.Failed, payload: Buffer.from(err instanceof Error ? err.message : String(err)) };
  }

  // --- IO --------------------------------------------------------------------------------

  /** Checks epoch, group and role; returns the group. Throws ReplyError(StaleEpoch) otherwise. */
  private admit(args: IoArgs, epoch: number, role: 'primary' | 'secondary'): PlacementGroup {
    const map = this.map;
    if (map === null || epoch !== map.epoch) {
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

  private async onRead(request: WireRequest): Promise<WireReply> {
    const { args } = decodeIo(request.payload);
    this.admit(args, request.epoch, 'primary');
    const key = chunkKey(args);
    const release = await this.locks.acquire(keyName(key), args.offsetBytes, args.offsetBytes + args.lengthBytes, false);
    try {
      // A large reply buffer is reused: the peer gives it back once the socket has sent it.
      const data = acquirePayload(args.lengthBytes);
      await this.options.store.read(key, args.offsetBytes, data);
      return { status: SdsStatus.Ok, payload: data, releaseAfterSend: payloadPool.owns(data) };
    } finally {
      release();
    }
  }

  private async onWrite(from: Served, request: WireRequest): Promise<WireReply> {
    const { args, data } = decodeIo(request.payload);
    if (data.length !== args.lengthBytes) throw new InvalidArgumentError('io', `write of ${args.lengthBytes} bytes carries ${data.length}`);
    const fua = (args.flags & IoFlag.Fua) !== 0;
    if ((args.flags & IoFlag.Replica) !== 0) {
      this.requireRole(from, ['sds', 'test'], 'a replica write');
      const group = this.admit(args, request.epoch, 'secondary');
      await this.options.store.write(chunkKey(args), args.offsetBytes, data, { fua, preferDeviceId: group.secondaryDevice });
      return { status: SdsStatus.Ok };
    }
    const group = this.admit(args, request.epoch, 'primary');
    return this.mirrored(args, request, group, () => this.options.store.write(chunkKey(args), args.offsetBytes, data, { fua, preferDeviceId: group.primaryDevice }));
  }

  private async onTrim(from: Served, request: WireRequest): Promise<WireReply> {
    const { args } = decodeIo(request.payload);
    const fua = (args.flags & IoFlag.Fua) !== 0;
    if ((args.flags & IoFlag.Replica) !== 0) {
      this.requireRole(from, ['sds', 'test'], 'a replica trim');
      this.admit(args, request.epoch, 'secondary');
      await this.options.store.trim(chunkKey(args), args.offsetBytes, args.lengthBytes, { fua });
      return { status: SdsStatus.Ok };
    }
    const group = this.admit(args, request.epoch, 'primary');
    return this.mirrored(args, request, group, () => this.options.store.trim(chunkKey(args), args.offsetBytes, args.lengthBytes, { fua }));
  }

  /** Applies `local` and forwards the request to the secondary, under the range lock. */
  private async mirrored(args: IoArgs, request: WireRequest, group: PlacementGroup, local: () => Promise<void>): Promise<WireReply> {
    const chunkName = keyName(chunkKey(args));
    const release = await this.locks.acquire(chunkName, args.offsetBytes, args.offsetBytes + args.lengthBytes, true);
    try {
      const secondary = group.secondary;
      if (secondary === null) {
        this.noteChange(groupKeyOf(args.poolId, args.pgIndex), chunkName);
        await local();
        return { status: SdsStatus.Ok };
      }
      // The request's own payload goes on to the secondary, with the Replica flag set.
      setIoFlags(request.payload, args.flags | IoFlag.Replica);
      this.mirrorsWritten.add(secondary);
      const [localResult, mirrorResult] = await Promise.allSettled([local(), this.forward(secondary, request.op, request.payload, request.epoch)]);
      if (mirrorResult.status === 'rejected') this.noteChange(groupKeyOf(args.poolId, args.pgIndex), chunkName);
      if (localResult.status === 'rejected') throw localResult.reason;
      if (mirrorResult.status === 'rejected') throw mirrorResult.reason;
      return { status: SdsStatus.Ok };
    } finally {
      release();
    }
  }

  /** Records a chunk changed here that the group's other copy may lack. */
  private noteChange(groupKey: string, chunkName: string): void {
    let changed = this.changes.get(groupKey);
    if (changed === undefined) this.changes.set(groupKey, (changed = new Set()));
    changed.add(chunkName);
  }

  /** Sends to another SDS; a failure or refusal there becomes MirrorFailed (or StaleEpoch). */
  private async forward(sdsId: string, op: number, payload: Buffer, epoch: number): Promise<void> {
    let response;
    try {
      const peer = await this.peerFor(sdsId);
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
    await this.options.store.write(chunkKey(args), 0, data, { fua: false, preferDeviceId: group.secondaryDevice });
    return { status: SdsStatus.Ok };
  }

  private onAllocation(request: WireRequest): WireReply {
    const args = decodeAllocation(request.payload);
    const held = Buffer.alloc(args.chunkCount);
    for (let index = 0; index < args.chunkCount; index++) {
      if (this.options.store.has({ poolId: args.poolId, vtreeId: args.vtreeId, chunkIndex: args.chunkIndexFirst + index, generation: 0 })) held[index] = 1;
    }
    return { status: SdsStatus.Ok, payload: held };
  }

  private onListGroup(request: WireRequest): WireReply {
    const args = decodeListGroup(request.payload);
    return { status: SdsStatus.Ok, payload: encodeListedChunks(this.groupKeys(args.poolId, args.pgIndex)) };
  }

  private groupKeys(poolId: string, pgIndex: number): ChunkKey[] {
    const pool = this.map?.pools[poolId];
    if (pool === undefined) return [];
    const pgCount = pool.groups.length;
    return this.options.store.keys((key) => key.poolId === poolId && placementGroupOf(key.vtreeId, key.chunkIndex, pgCount) === pgIndex);
  }

  // --- control ---------------------------------------------------------------------------

  private requireRole(from: Served, roles: PeerRole[], what: string): void {
    if (!roles.includes(from.role)) throw new InvalidArgumentError('role', `${what} is not accepted from a peer of role '${from.role}'`);
  }

  private onSetMap(from: Served, request: WireRequest): WireReply {
    this.requireRole(from, ['mdm', 'test'], 'a placement map');
    let json: unknown;
    try {
      json = JSON.parse(request.payload.toString('utf8'));
    } catch {
      throw new InvalidArgumentError('map', 'is not JSON');
    }
    const map = parsePlacementMap(json);
    if (map.epoch < this.epoch) throw new ReplyError(SdsStatus.StaleEpoch, `map epoch ${map.epoch} is older than this SDS's ${this.epoch}`, encodeEpoch(this.epoch));
    for (const [poolId, pool] of Object.entries(map.pools)) {
      const holds = pool.groups.some((group) => group.primary === this.options.identity.sdsId || group.secondary === this.options.identity.sdsId);
      if (holds && pool.chunkBytes !== this.options.store.chunkBytes) {
        throw new InvalidArgumentError(`map.pools.${poolId}.chunkBytes`, `${pool.chunkBytes} differs from this SDS's ${this.options.store.chunkBytes}-byte chunks`);
      }
    }
    this.peers.retain((sdsId) => map.sds[sdsId]?.address);
    this.map = map;
    this.options.state.map = map;
    this.persist();
    this.scheduleCollect();
    this.options.log.info({ epoch: map.epoch, pools: Object.keys(map.pools).length }, 'placement map installed');
    return { status: SdsStatus.Ok };
  }

  /**
   * Chunks of groups this SDS no longer holds (it was out, or a rebalance moved the copy)
   * are stale: freed a while after a map says so, if no newer map came meanwhile.
   */
  private scheduleCollect(): void {
    if (this.gcTimer !== null) clearTimeout(this.gcTimer);
    const epoch = this.epoch;
    this.gcTimer = setTimeout(() => {
      this.gcTimer = null;
      if (this.epoch === epoch && !this.closing) void this.track(this.collectStale(epoch)).catch((err: unknown) => this.options.log.error({ err }, 'freeing stale chunks failed'));
    }, staleCollectDelayMs);
    this.gcTimer.unref();
  }

  private async collectStale(epoch: number): Promise<void> {
    const map = this.map;
    if (map === null) return;
    const me = this.options.identity.sdsId;
    const stale = this.options.store.keys((key) => {
      const pool = map.pools[key.poolId];
      if (pool === undefined) return false; // a pool not in the map is left alone
      const group = pool.groups[placementGroupOf(key.vtreeId, key.chunkIndex, pool.groups.length)];
      return group !== undefined && group.primary !== me && group.secondary !== me;
    });
    if (stale.length === 0) return;
    this.options.log.info({ chunks: stale.length, epoch }, 'freeing chunks of groups this SDS no longer holds');
    for (const key of stale) {
      if (this.epoch !== epoch || this.closing) return;
      const release = await this.locks.acquire(keyName(key), 0, this.options.store.chunkBytes, true);
      try {
        await this.options.store.trim(key, 0, this.options.store.chunkBytes, { fua: false });
      } finally {
        release();
      }
    }
  }

  private onReserve(from: Served, request: WireRequest): WireReply {
    this.requireRole(from, ['mdm', 'test'], 'a reservation');
    const args = decodeReserve(request.payload);
    this.options.store.setReservation(args.vtreeId, args.chunkCount);
    this.options.state.reservations = this.options.store.reservationsSnapshot();
    this.persist();
    return { status: SdsStatus.Ok };
  }

  private async onAddDevice(from: Served, request: WireRequest): Promise<WireReply> {
    this.requireRole(from, ['mdm', 'test'], 'a device order');
    const order = parseAddDeviceOrder(request.payload);
    let device;
    try {
      device = await this.options.store.addDevice(order.path, { force: order.force });
    } catch (err) {
      if (!(err instanceof MeshblockError) || err instanceof AssertionError) throw err;
      this.options.log.warn({ err, path: order.path }, 'device refused');
      const refusal: DeviceRefusal = { code: err.code, message: err.message };
      return { status: SdsStatus.DeviceRefused, payload: Buffer.from(JSON.stringify(refusal)) };
    }
    if (!this.options.state.devicePaths.includes(device.path)) {
      this.options.state.devicePaths.push(device.path);
      this.persist();
    }
    this.options.log.info({ deviceId: device.deviceId, path: device.path, slots: device.slotCount }, 'device added');
    const registered: RegisteredDevice = { deviceId: device.deviceId, path: device.path, capacityBytes: device.slotCount * this.options.store.chunkBytes };
    return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify(registered)) };
  }

  /** The devices this SDS serves, as it registers them with the MDM. */
  registeredDevices(): RegisteredDevice[] {
    return this.options.store.devices.map((device) => ({ deviceId: device.deviceId, path: device.path, capacityBytes: device.slotCount * this.options.store.chunkBytes }));
  }

  private persist(): void {
    saveState(this.options.dataDir, this.options.state);
  }

  stats(): SdsStats {
    const store = this.options.store;
    return {
      sdsId: this.options.identity.sdsId,
      name: this.options.identity.name,
      epoch: this.epoch,
      chunkBytes: store.chunkBytes,
      devices: store.devices.map((device) => ({
        deviceId: device.deviceId,
        path: device.path,
        state: device.state,
        error: device.error,
        totalBytes: device.slotCount * store.chunkBytes,
        usedBytes: device.usedSlotCount * store.chunkBytes,
        freeBytes: device.state === 'normal' ? device.freeSlots.length * store.chunkBytes : 0,
        reads: device.counters.reads,
        writes: device.counters.writes,
        readBytes: device.counters.readBytes,
        writeBytes: device.counters.writeBytes,
        readIops: device.rates.reads,
        writeIops: device.rates.writes,
        readBytesPerSecond: device.rates.readBytes,
        writeBytesPerSecond: device.rates.writeBytes,
      })),
      reservedBytes: store.reservedUnusedSlots() * store.chunkBytes,
      rebuilds: [...this.rebuilds.values()],
    };
  }

  // --- rebuild (source side; the target side is Put and replica Trim) ---------------------

  private onRebuild(from: Served, request: WireRequest): WireReply {
    this.requireRole(from, ['mdm', 'test'], 'a rebuild order');
    const args = parseRebuildArgs(request.payload);
    const epoch = args.epoch ?? this.epoch;
    const jobKey = `${args.poolId}/${args.pgIndex}/${args.targetSdsId}`;
    const current = this.rebuilds.get(jobKey);
    // The same order again (the MDM repeats orders it has no answer for): nothing to do.
    if ((current?.state === 'running' || current?.state === 'waiting') && current.epoch === epoch) return { status: SdsStatus.Ok };
    if (current?.state === 'done' && current.epoch === epoch && epoch === this.epoch) {
      // Done at this epoch, and mirrored to since: the copy is in sync. Say so again.
      this.options.onRebuildDone?.(rebuildDone(current, 0));
      return { status: SdsStatus.Ok };
    }
    if (epoch !== this.epoch) throw new ReplyError(SdsStatus.StaleEpoch, `rebuild ordered at epoch ${epoch}, SDS epoch ${this.epoch}`, encodeEpoch(this.epoch));
    const group = this.map?.pools[args.poolId]?.groups[args.pgIndex];
    if (group === undefined || group.primary !== this.options.identity.sdsId || group.secondary !== args.targetSdsId) {
      throw new InvalidArgumentError('rebuild', `at epoch ${this.epoch} this SDS is not the primary of group ${args.pgIndex} with secondary ${args.targetSdsId}`);
    }
    const progress: RebuildProgress = { jobId: `${this.lifeId}.${++this.rebuildJobsStarted}`, ...args, mode: args.mode ?? 'full', epoch, state: 'waiting', chunksDone: 0, chunksTotal: 0, bytesDone: 0, error: null };
    this.rebuilds.delete(jobKey);
    this.rebuilds.set(jobKey, progress);
    // Finished jobs stay visible in Stats for a while; the oldest go first.
    for (const [key, entry] of this.rebuilds) {
      if (this.rebuilds.size <= rebuildsKeptMax) break;
      if (entry.state === 'done' || entry.state === 'failed') this.rebuilds.delete(key);
    }
    void this.track(this.runRebuild(args, jobKey, progress)).catch((err: unknown) => {
      progress.state = 'failed';
      progress.error = err instanceof Error ? err.message : String(err);
      this.options.log.warn({ err, jobKey }, 'rebuild stopped');
    });
    return { status: SdsStatus.Ok };
  }

  private async runRebuild(args: RebuildArgs, jobKey: string, progress: RebuildProgress): Promise<void> {
    // Adding a device re-places thousands of groups at once: run a few at a time, or the
    // targets drown in listings and every job times out.
    while (this.rebuildsRunning >= rebuildsRunningMax) await new Promise<void>((resolve) => this.rebuildWaiters.push(resolve));
    this.rebuildsRunning += 1;
    try {
      if (this.epoch !== progress.epoch) throw new Error(`placement map changed (epoch ${progress.epoch} → ${this.epoch}) before the rebuild began`);
      progress.state = 'running';
      await this.runRebuildNow(args, jobKey, progress);
      this.options.onRebuildDone?.(rebuildDone(progress, progress.bytesDone));
    } finally {
      this.rebuildsRunning -= 1;
      this.rebuildWaiters.shift()?.();
    }
  }

  private async runRebuildNow(args: RebuildArgs, jobKey: string, progress: RebuildProgress): Promise<void> {
    const log = this.options.log.child({ rebuild: jobKey });
    const epoch = progress.epoch;
    const groupKey = groupKeyOf(args.poolId, args.pgIndex);
    const recorded = this.changes.get(groupKey);
    if (progress.mode === 'delta' && (this.changesUnknown.has(groupKey) || this.closing)) {
      log.info('no record of what changed while the copy was away: copying everything');
      progress.mode = 'full';
    }
    if (progress.mode === 'delta') {
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
          for (const key of keys) this.noteChange(groupKey, keyName(key));
          throw err;
        }
      }
      this.changes.delete(groupKey);
      progress.state = 'done';
      log.debug({ chunks: progress.chunksDone, bytes: progress.bytesDone }, 'delta rebuild done');
      return;
    }

    const keys = this.groupKeys(args.poolId, args.pgIndex);
    const cursor = this.options.state.rebuildCursors[jobKey];
    const remaining = cursor === undefined ? keys : keys.filter((key) => compareKeys(key, parseKeyName(cursor)) > 0);
    progress.chunksTotal = keys.length;
    progress.chunksDone = keys.length - remaining.length;
    // Thousands of jobs start at once after a failure: only a resumed one is worth a line.
    (progress.chunksDone > 0 ? log.info : log.debug).call(log, { chunks: keys.length, resumedAfter: progress.chunksDone }, 'rebuild started');
    // Changes recorded from here on are covered by this copy (or mirrored to the target).
    this.changes.delete(groupKey);
    this.changesUnknown.delete(groupKey);

    // The target may hold copies from an earlier life that are gone here: trim them.
    const targetPeer = await this.peerFor(args.targetSdsId);
    const listed = await targetPeer.request(SdsOp.ListGroup, encodeListGroup({ poolId: args.poolId, pgIndex: args.pgIndex }), { timeoutMs: listGroupTimeoutMs });
    if (listed.status !== SdsStatus.Ok) throw new Error(`target refused to list its chunks: ${listed.payload.toString()}`);
    for (const chunk of decodeListedChunks(listed.payload)) {
      const key: ChunkKey = { poolId: args.poolId, ...chunk };
      await this.copyChunk(key, args, epoch, true);
    }
    let contiguousDone = 0;
    try {
      await this.copyAll(remaining, args, progress, (done) => {
        contiguousDone = done;
        if (done % rebuildCursorSaveChunks === 0) this.saveCursor(jobKey, remaining[done - 1] as ChunkKey);
      });
    } finally {
      if (contiguousDone > 0 && contiguousDone < remaining.length) this.saveCursor(jobKey, remaining[contiguousDone - 1] as ChunkKey);
    }
    // The state file holds the whole map: written only when this job had saved a cursor.
    if (this.options.state.rebuildCursors[jobKey] !== undefined) {
      delete this.options.state.rebuildCursors[jobKey];
      this.persist();
    }
    progress.state = 'done';
    log.debug({ chunks: progress.chunksDone, bytes: progress.bytesDone }, 'rebuild done');
  }

  /**
   * Copies `keys` to the target, a few chunks in flight, paced to the SDS's rebuild budget;
   * `onPrefixDone(n)` is told whenever the first n keys are all copied (for the cursor).
   */
  private async copyAll(keys: ChunkKey[], args: RebuildArgs, progress: RebuildProgress, onPrefixDone?: (done: number) => void): Promise<void> {
    const chunkBytes = this.options.store.chunkBytes;
    let nextIndex = 0;
    const completed = new Set<number>();
    let contiguousDone = 0;
    const inflightMax = Math.max(1, Math.min(args.chunksInflightMax, rebuildChunksInflightMax));
    const worker = async (): Promise<void> => {
      while (nextIndex < keys.length) {
        if (this.closing) throw new Error('SDS is shutting down; the rebuild resumes from its cursor');
        if (this.epoch !== progress.epoch) throw new Error(`placement map changed (epoch ${progress.epoch} → ${this.epoch}); the MDM orders again`);
        const index = nextIndex++;
        const rate = this.rebuildRate(args);
        if (rate > 0) {
          this.rebuildPacedUntilMs = Math.max(this.rebuildPacedUntilMs, Date.now()) + (chunkBytes * 1000) / rate;
          const waitMs = this.rebuildPacedUntilMs - Date.now();
          if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs));
        }
        // ScaleIO's "concurrent rebuild IOs" policy: a limit for the whole SDS, not per job.
        await this.rebuildSlot(inflightMax);
        try {
          progress.bytesDone += await this.copyChunk(keys[index] as ChunkKey, args, progress.epoch, false);
        } finally {
          this.rebuildSlotsUsed -= 1;
          this.rebuildSlotWaiters.shift()?.();
        }
        progress.chunksDone += 1;
        completed.add(index);
        // The cursor only moves over a prefix that is entirely done.
        const before = contiguousDone;
        while (completed.has(contiguousDone)) completed.delete(contiguousDone++);
        if (contiguousDone > before) onPrefixDone?.(contiguousDone);
      }
    };
    await Promise.all(Array.from({ length: inflightMax }, () => worker()));
  }

  /**
   * Copies one chunk to the rebuild target under the chunk's lock, so no client write slips
   * between the read here and the copy there. A chunk no longer held here is trimmed there.
   */
  private async copyChunk(key: ChunkKey, args: RebuildArgs, epoch: number, onlyIfAbsent: boolean): Promise<number> {
    const chunkBytes = this.options.store.chunkBytes;
    const release = await this.locks.acquire(keyName(key), 0, chunkBytes, true);
    try {
      const held = this.options.store.has(key);
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
        await this.forward(args.targetSdsId, SdsOp.Trim, encodeIo(ioArgs), epoch);
        return 0;
      }
      const payload = encodeIo(ioArgs, Buffer.alloc(0));
      const withData = Buffer.allocUnsafe(payload.length + chunkBytes);
      payload.copy(withData);
      await this.options.store.read(key, 0, withData.subarray(payload.length));
      await this.forward(args.targetSdsId, SdsOp.Put, withData, epoch);
      return chunkBytes;
    } finally {
      release();
    }
  }

  /**
   * ScaleIO's "favor application IO": while clients are doing IO here (now or in the last
   * moment), rebuilds get the lower under-load budget; on a quiet SDS, the full one.
   */
  private rebuildRate(args: RebuildArgs): number {
    const busy = this.clientIoInflight > 0 || Date.now() - this.clientIoLastMs < clientQuietMs;
    const underLoad = args.bytesPerSecondUnderLoad ?? 0;
    if (!busy || underLoad <= 0) return args.bytesPerSecondMax;
    return args.bytesPerSecondMax > 0 ? Math.min(args.bytesPerSecondMax, underLoad) : underLoad;
  }

  private async rebuildSlot(limit: number): Promise<void> {
    while (this.rebuildSlotsUsed >= limit) await new Promise<void>((resolve) => this.rebuildSlotWaiters.push(resolve));
    this.rebuildSlotsUsed += 1;
  }

  private saveCursor(jobKey: string, key: ChunkKey): void {
    this.options.state.rebuildCursors[jobKey] = keyName(key);
    this.persist();
  }

  // --- peers -----------------------------------------------------------------------------

  private peerFor(sdsId: string): Promise<WirePeer> {
    const address = this.map?.sds[sdsId]?.address;
    if (address === undefined) return Promise.reject(new WireError('MB_ERR_SDS_UNKNOWN', `SDS ${sdsId} is not in the placement map`));
    return this.peers.get(sdsId, address);
  }

  // --- stopping --------------------------------------------------------------------------

  /** Stops accepting, lets requests in flight finish, then closes every connection. */
  async close(): Promise<void> {
    this.closing = true;
    if (this.gcTimer !== null) clearTimeout(this.gcTimer);
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    while (this.handlers.size > 0) await Promise.allSettled([...this.handlers]);
    for (const peer of this.accepted) peer.destroy();
    this.peers.dropAll();
    for (const socket of this.sockets) socket.destroy();
    await stopped;
  }

  destroy(): void {
    this.closing = true;
    if (this.gcTimer !== null) clearTimeout(this.gcTimer);
    this.server.close();
    for (const socket of this.sockets) socket.destroy();
    this.peers.dropAll();
  }
}

/** The key of a placement group in this SDS's change records. */
function groupKeyOf(poolId: string, pgIndex: number): string {
  return `${poolId}/${pgIndex}`;
}

function chunkKey(args: IoArgs): ChunkKey {
  return { poolId: args.poolId, vtreeId: args.vtreeId, chunkIndex: args.chunkIndex, generation: args.generation };
}

function parseKeyName(name: string): ChunkKey {
  const [ids = '', chunkIndex = '0', generation = '0'] = name.split(':');
  return { poolId: ids.slice(0, 16), vtreeId: ids.slice(16, 32), chunkIndex: Number(chunkIndex), generation: Number(generation) };
}

function parseRebuildArgs(payload: Buffer): RebuildArgs {
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new InvalidArgumentError('rebuild', 'is not JSON');
  }
  const args = value as Partial<RebuildArgs> | null;
  if (args === null || typeof args !== 'object') throw new InvalidArgumentError('rebuild', 'must be an object');
  if (typeof args.poolId !== 'string' || !idPattern.test(args.poolId)) throw new InvalidArgumentError('rebuild.poolId', 'must be 16 hex digits');
  if (typeof args.targetSdsId !== 'string' || !idPattern.test(args.targetSdsId)) throw new InvalidArgumentError('rebuild.targetSdsId', 'must be 16 hex digits');
  if (args.mode !== undefined && args.mode !== 'full' && args.mode !== 'delta') throw new InvalidArgumentError('rebuild.mode', "must be 'full' or 'delta'");
  if (args.epoch !== undefined && (!Number.isSafeInteger(args.epoch) || args.epoch < 0)) throw new InvalidArgumentError('rebuild.epoch', 'must be a non-negative integer');
  if (args.bytesPerSecondUnderLoad !== undefined && (!Number.isSafeInteger(args.bytesPerSecondUnderLoad) || args.bytesPerSecondUnderLoad < 0)) {
    throw new InvalidArgumentError('rebuild.bytesPerSecondUnderLoad', 'must be a non-negative integer');
  }
  for (const field of ['pgIndex', 'bytesPerSecondMax', 'chunksInflightMax'] as const) {
    if (!Number.isSafeInteger(args[field]) || (args[field] as number) < 0) throw new InvalidArgumentError(`rebuild.${field}`, 'must be a non-negative integer');
  }
  return args as RebuildArgs;
}

function parseAddDeviceOrder(payload: Buffer): AddDeviceOrder {
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new InvalidArgumentError('addDevice', 'is not JSON');
  }
  const order = value as Partial<AddDeviceOrder> | null;
  if (order === null || typeof order !== 'object') throw new InvalidArgumentError('addDevice', 'must be an object');
  if (typeof order.path !== 'string' || !order.path.startsWith('/')) throw new InvalidArgumentError('addDevice.path', 'must be an absolute path');
  if (typeof order.force !== 'boolean') throw new InvalidArgumentError('addDevice.force', 'must be true or false');
  return { path: order.path, force: order.force };
}

/** The report of a finished job; `bytesDone` 0 when it repeats a report already made. */
function rebuildDone(job: RebuildProgress, bytesDone: number): RebuildDone {
  return { jobId: job.jobId, poolId: job.poolId, pgIndex: job.pgIndex, targetSdsId: job.targetSdsId, epoch: job.epoch, mode: job.mode, chunksDone: job.chunksDone, bytesDone };
}
