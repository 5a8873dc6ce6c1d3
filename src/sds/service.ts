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

import { mirrorTimeoutMs, sdsClientQuietMs } from '../common/limits.js';
import * as net from 'node:net';
import type { Logger } from 'pino';
import { assert } from '../common/assert.js';
import { acquirePayload, payloadPool } from '../common/buffer-pool.js';
import { InvalidArgumentError } from '../common/errors.js';
import type { RebuildDone, RegisteredDevice } from '../wire/mdm-ops.js';
import { WirePeer, WireError, type PeerRole, type WireReply, type WireRequest } from '../wire/peer.js';
import { adoptAccepted } from '../common/borrowed-reads.js';
import { PeerPool, listenTcp } from '../wire/peer-pool.js';
import { placementGroupOf, type PlacementGroup, type PlacementMap } from '../wire/placement.js';
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
  type IoArgs,
  type SdsStats,
} from '../wire/sds-ops.js';
import { ChunkStore, StoreError, keyName, type ChunkKey } from './chunk-store.js';
import { RangeLocks } from './range-locks.js';
import { SdsControl, type SdsIdentity } from './control-ops.js';
import { RebuildSource, groupKeysOf } from './rebuild.js';
import { RebuildCursors } from './rebuild-cursors.js';
import { ReplyError } from './reply-error.js';
import type { SdsState } from './state.js';

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
  private closing = false;
  private clientIoInflight = 0;
  private clientIoLastMs = 0;

  constructor(private readonly options: SdsServiceOptions) {
    this.control = new SdsControl({
      identity: options.identity,
      store: options.store,
      state: options.state,
      dataDir: options.dataDir,
      log: options.log,
      locks: this.locks,
      isClosing: () => this.closing,
      track: (work) => this.track(work),
      onMapAccepted: (map) => this.peers.retain((sdsId) => map.sds[sdsId]?.address),
      rebuildProgress: () => this.rebuilds.progress(),
    });
    // Cursors live in their own file now; a data dir from before keeps them in the state
    // file: read there when the cursor file is absent (and moved into it), and no longer
    // written there. Should the next state save beat the move to a crash, the cursors are
    // lost, which only makes their jobs copy from the start.
    const legacyCursors = options.state.rebuildCursors ?? {};
    delete options.state.rebuildCursors;
    this.rebuildCursors = RebuildCursors.open(options.dataDir, legacyCursors, options.log);
    this.rebuilds = new RebuildSource({
      sdsId: options.identity.sdsId,
      store: options.store,
      locks: this.locks,
      cursors: this.rebuildCursors,
      log: options.log,
      map: () => this.map,
      isClosing: () => this.closing,
      isClientBusy: () => this.clientIoInflight > 0 || Date.now() - this.clientIoLastMs < sdsClientQuietMs,
      forward: (sdsId, op, payload, epoch) => this.forward(sdsId, op, payload, epoch),
      peerFor: (sdsId) => this.peerFor(sdsId),
      track: (work) => this.track(work),
      ...(options.onRebuildDone !== undefined ? { onRebuildDone: options.onRebuildDone } : {}),
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
          this.requireRole(from, ['mdm', 'test'], 'a placement map');
          this.control.onSetMap(request.payload);
          return { status: SdsStatus.Ok };
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
        this.rebuilds.noteChange(args.poolId, args.pgIndex, chunkName);
        await local();
        return { status: SdsStatus.Ok };
      }
      // The request's own payload goes on to the secondary, with the Replica flag set.
      setIoFlags(request.payload, args.flags | IoFlag.Replica);
      this.mirrorsWritten.add(secondary);
      const [localResult, mirrorResult] = await Promise.allSettled([local(), this.forward(secondary, request.op, request.payload, request.epoch)]);
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

  stats(): SdsStats {
    return this.control.stats();
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
    this.control.close();
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    while (this.handlers.size > 0) await Promise.allSettled([...this.handlers]);
    await (await this.rebuildCursors).settled();
    for (const peer of this.accepted) peer.destroy();
    this.peers.dropAll();
    for (const socket of this.sockets) socket.destroy();
    await stopped;
  }

  destroy(): void {
    this.closing = true;
    this.control.close();
    this.server.close();
    for (const socket of this.sockets) socket.destroy();
    this.peers.dropAll();
  }
}

function chunkKey(args: IoArgs): ChunkKey {
  return { poolId: args.poolId, vtreeId: args.vtreeId, chunkIndex: args.chunkIndex, generation: args.generation };
}
