// The MDM process's core: the state machine, its journal, and the wire connections of the
// SDSs (and later SDCs) it manages. Every change goes through execute(): applied to the
// state machine (which validates), appended to the journal and synced, and only then
// acknowledged; when the epoch moves, the new placement map is pushed to every connected
// SDS. Heartbeats update what is volatile (last seen, bytes in use) without the journal.
//
// Time is read here, in the I/O layer, and handed to the state machine on commands.

import * as net from 'node:net';
import type { Logger } from 'pino';
import { assert } from '../common/assert.js';
import { MeshblockError } from '../common/errors.js';
import { MdmOp, SdcOp, heartbeatIntervalMs, parseSdcRegistration, parseSdsRegistration, type DeviceRefusal, type RegisteredDevice, type SdcHeartbeat, type SdcView, type SdcVolume } from '../wire/mdm-ops.js';
import { WirePeer, type WireReply, type WireRequest } from '../wire/peer.js';
import { listenTcp } from '../wire/peer-pool.js';
import { SdsOp, SdsStatus, type RebuildArgs, type SdsStats } from '../wire/sds-ops.js';
import type { AddDeviceRequest, MdmController } from './controller.js';
import { Journal } from './journal.js';
import { emptyModel, type Id, type SystemModel } from './model.js';
import { MdmError, StateMachine, type Applied, type Command, type CopyMove } from './state-machine.js';

/** An SDS is called disconnected after this long without a heartbeat. */
export const heartbeatTimeoutMs = 5 * heartbeatIntervalMs;
/** The journal is compacted into a snapshot after this many records. */
const compactAfterRecords = 1000;
const sdsOrderTimeoutMs = 30_000;
/** Throttle for copies onto new devices, per group: client IO keeps priority. */
const rebalanceBytesPerSecondMax = 64 * 1024 * 1024;
const rebalanceChunksInflightMax = 2;

export interface JournalRecord {
  command: Command;
}

interface Session {
  sdsId: Id | null;
  sdcId: Id | null;
  peer: WirePeer | null;
}

export interface MdmServiceOptions {
  dataDir: string;
  clusterId: Id;
  systemName: string;
  secret: Buffer;
  log: Logger;
}

export class MdmService implements MdmController {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  /** Connected SDSs by id: registration proved who they are. */
  private readonly sdsPeers = new Map<Id, WirePeer>();
  /** Connected SDCs by id, and the view each was last sent. */
  private readonly sdcPeers = new Map<Id, { peer: WirePeer; sentView: string }>();
  private readonly sdcOpenVolumes = new Map<Id, string[]>();
  private readonly lastStats = new Map<Id, SdsStats>();
  private healthTimer: NodeJS.Timeout | null = null;
  /** Commands are applied and journaled one at a time, so the journal's order is the order applied. */
  private executing: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly state: StateMachine,
    private readonly journal: Journal<JournalRecord, SystemModel>,
    private readonly options: MdmServiceOptions,
  ) {
    this.server = net.createServer((socket) => this.onConnection(socket));
  }

  static async open(options: MdmServiceOptions): Promise<MdmService> {
    const { journal, snapshot, records } = await Journal.open<JournalRecord, SystemModel>(options.dataDir, {
      log: options.log.child({ component: 'journal' }),
      initialSnapshot: emptyModel(options.clusterId, options.systemName),
    });
    if (snapshot.clusterId !== options.clusterId) {
      await journal.close();
      throw new MeshblockError('MB_ERR_MDM_CLUSTER', `${options.dataDir} holds cluster ${snapshot.clusterId}, not ${options.clusterId}`);
    }
    const state = new StateMachine(snapshot);
    for (const [index, record] of records.entries()) {
      try {
        state.apply(record.command);
      } catch (err) {
        await journal.close();
        throw new MeshblockError('MB_ERR_JOURNAL_REPLAY', `journal record ${index} (${record.command.type}) no longer applies: ${(err as Error).message}`, { cause: err });
      }
    }
    // Connections did not survive the restart: everyone is disconnected until they call.
    for (const sds of Object.values(state.model.sdss)) sds.state = 'disconnected';
    for (const sdc of Object.values(state.model.sdcs)) sdc.state = 'disconnected';
    options.log.info({ records: records.length, epoch: state.model.epoch }, 'state restored from the journal');
    return new MdmService(state, journal, options);
  }

  async listen(host: string, port: number): Promise<net.AddressInfo> {
    const bound = await listenTcp(this.server, host, port);
    this.healthTimer = setInterval(() => this.checkHealth(Date.now()), heartbeatIntervalMs).unref();
    return bound;
  }

  // --- MdmController ---------------------------------------------------------------------

  execute(command: Command): Promise<Applied> {
    const run = this.executing.then(() => this.executeNow(command));
    this.executing = run.catch(() => undefined);
    return run;
  }

  private async executeNow(command: Command): Promise<Applied> {
    // ScaleIO's rule: a volume an SDC has open (NBD clients attached, as its heartbeats say)
    // is not taken away from it. Checked here: it depends on live state, not on the model.
    if (command.type === 'removeMappedSdc' && this.openVolumes(command.sdcId).includes(command.volumeId)) {
      const volume = this.state.model.volumes[command.volumeId];
      const sdc = this.state.model.sdcs[command.sdcId];
      throw new MdmError('MB_ERR_VOLUME_OPEN', `volume '${volume?.name ?? command.volumeId}' is open on SDC '${sdc?.name ?? command.sdcId}' (NBD clients attached); detach them first`, 409);
    }
    const applied = this.state.apply(command);
    try {
      await this.journal.append({ command });
    } catch (err) {
      // The change is applied in memory but not on disk: this process can no longer tell
      // the truth about its state. Stop rather than acknowledge anything more.
      this.options.log.fatal({ err, command: command.type }, 'journal append failed; the MDM stops');
      setImmediate(() => process.exit(1));
      throw err;
    }
    if (applied.epochChanged) {
      const pushed = this.pushMap();
      const moves = applied.moves ?? [];
      if (moves.length > 0) void pushed.then(() => this.orderCopies(moves));
    }
    this.pushViews();
    if (this.journal.recordCount >= compactAfterRecords) {
      await this.journal.compact(this.state.model).catch((err: unknown) => this.options.log.error({ err }, 'journal compaction failed; will retry'));
    }
    return applied;
  }

  async addDevice(request: AddDeviceRequest): Promise<Applied> {
    const sds = this.state.find(this.state.model.sdss, request.sdsId, 'SDS');
    const pool = this.state.find(this.state.model.storagePools, request.storagePoolId, 'storage pool');
    if (sds.protectionDomainId !== pool.protectionDomainId) {
      throw new MdmError('MB_ERR_INVALID_ARGUMENT', `storagePoolId: SDS '${sds.name}' is not in the storage pool's protection domain`, 400);
    }
    const peer = this.sdsPeers.get(sds.id);
    if (peer === undefined) throw new MdmError('MB_ERR_SDS_DISCONNECTED', `SDS '${sds.name}' is not connected to the MDM`, 503);
    let response;
    try {
      response = await peer.request(SdsOp.AddDevice, Buffer.from(JSON.stringify({ path: request.path, force: request.force })), { timeoutMs: sdsOrderTimeoutMs });
    } catch (err) {
      throw new MdmError('MB_ERR_SDS_UNREACHABLE', `SDS '${sds.name}' did not answer: ${(err as Error).message}`, 503);
    }
    if (response.status === SdsStatus.DeviceRefused) {
      const refusal = JSON.parse(response.payload.toString()) as DeviceRefusal;
      throw new MdmError(refusal.code, `SDS '${sds.name}': ${refusal.message}`, 409);
    }
    if (response.status !== SdsStatus.Ok) throw new MdmError('MB_ERR_SDS_FAILED', `SDS '${sds.name}' failed to add ${request.path}: ${response.payload.toString()}`, 502);
    const device = JSON.parse(response.payload.toString()) as RegisteredDevice;
    return this.execute({ type: 'addDevice', deviceId: device.deviceId, sdsId: sds.id, storagePoolId: pool.id, path: device.path, name: request.name, capacityBytes: device.capacityBytes });
  }

  sdsStats(sdsId: Id): SdsStats | null {
    return this.lastStats.get(sdsId) ?? null;
  }

  // --- SDS connections -------------------------------------------------------------------

  private onConnection(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    const session: Session = { sdsId: null, sdcId: null, peer: null };
    WirePeer.accept(socket, {
      clusterId: this.options.clusterId,
      secret: this.options.secret,
      role: 'mdm',
      name: this.state.model.name,
      log: this.options.log,
      onRequest: (request) => this.onRequest(session, request),
    }).then(
      (peer) => {
        session.peer = peer;
        void peer.closed.then(() => {
          if (session.sdcId !== null && this.sdcPeers.get(session.sdcId)?.peer === peer) {
            this.sdcPeers.delete(session.sdcId);
            this.sdcOpenVolumes.delete(session.sdcId);
            const sdc = this.state.model.sdcs[session.sdcId];
            if (sdc !== undefined) sdc.state = 'disconnected';
            this.options.log.warn({ sdcId: session.sdcId }, 'SDC disconnected');
          }
          if (session.sdsId !== null && this.sdsPeers.get(session.sdsId) === peer) {
            this.sdsPeers.delete(session.sdsId);
            const sds = this.state.model.sdss[session.sdsId];
            if (sds !== undefined) sds.state = 'disconnected';
            this.options.log.warn({ sdsId: session.sdsId }, 'SDS disconnected');
          }
        });
      },
      (err: unknown) => this.options.log.warn({ err, address: socket.remoteAddress }, 'wire peer refused'),
    );
  }

  private async onRequest(session: Session, request: WireRequest): Promise<WireReply> {
    try {
      switch (request.op) {
        case MdmOp.RegisterSds: {
          const registration = parseSdsRegistration(request.payload);
          await this.execute({ type: 'registerSds', sdsId: registration.sdsId, name: registration.name, address: registration.address, nowMs: Date.now() });
          // Setup resolved (and set session.peer) before any request could be read.
          const peer = session.peer;
          assert(peer !== null, 'a registration arrives on an established connection');
          session.sdsId = registration.sdsId;
          const previous = this.sdsPeers.get(registration.sdsId);
          if (previous !== undefined && previous !== peer) previous.destroy();
          this.sdsPeers.set(registration.sdsId, peer);
          // After this reply, so that the SDS hears of its registration first.
          setImmediate(() => void this.pushMapTo(registration.sdsId, peer));
          this.options.log.info({ sdsId: registration.sdsId, name: registration.name, address: registration.address, devices: registration.devices.length }, 'SDS registered');
          return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify({ epoch: this.state.model.epoch })) };
        }
        case MdmOp.RegisterSdc: {
          const registration = parseSdcRegistration(request.payload);
          const applied = await this.execute({ type: 'registerSdc', guid: registration.guid, name: registration.name, nowMs: Date.now() });
          const peer = session.peer;
          assert(peer !== null && applied.id !== undefined, 'a registration arrives on an established connection and names the SDC');
          session.sdcId = applied.id;
          const previous = this.sdcPeers.get(applied.id);
          if (previous !== undefined && previous.peer !== peer) previous.peer.destroy();
          const view = JSON.stringify(this.sdcView(applied.id));
          this.sdcPeers.set(applied.id, { peer, sentView: view });
          this.options.log.info({ sdcId: applied.id, guid: registration.guid }, 'SDC registered');
          return { status: SdsStatus.Ok, payload: Buffer.from(view) };
        }
        case MdmOp.Heartbeat: {
          if (session.sdcId !== null) {
            const sdc = this.state.model.sdcs[session.sdcId];
            if (sdc !== undefined) {
              sdc.lastSeenMs = Date.now();
              sdc.state = 'connected';
            }
            const beat = JSON.parse(request.payload.toString()) as Partial<SdcHeartbeat>;
            this.sdcOpenVolumes.set(session.sdcId, Array.isArray(beat.openVolumes) ? beat.openVolumes.filter((entry) => typeof entry === 'string') : []);
            return { status: SdsStatus.Ok };
          }
          if (session.sdsId === null) return { status: SdsStatus.InvalidArgument, payload: Buffer.from('heartbeat before registration') };
          this.onHeartbeat(session.sdsId, JSON.parse(request.payload.toString()) as SdsStats);
          return { status: SdsStatus.Ok };
        }
        case MdmOp.GetMap:
          return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify(this.state.placementMap())) };
        default:
          return { status: SdsStatus.UnknownOp, payload: Buffer.from(`op ${request.op} is not an MDM operation`) };
      }
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      this.options.log.warn({ err, op: request.op }, 'MDM request refused');
      return { status: err instanceof MdmError && err.httpStatus === 400 ? SdsStatus.InvalidArgument : SdsStatus.Failed, payload: Buffer.from(message) };
    }
  }

  private onHeartbeat(sdsId: Id, stats: SdsStats): void {
    const sds = this.state.model.sdss[sdsId];
    if (sds === undefined) return;
    sds.lastHeartbeatMs = Date.now();
    sds.state = 'connected';
    this.lastStats.set(sdsId, stats);
    for (const reported of stats.devices ?? []) {
      const device = this.state.model.devices[reported.deviceId];
      if (device !== undefined && device.sdsId === sdsId) device.usedBytes = reported.usedBytes;
    }
  }

  private checkHealth(nowMs: number): void {
    for (const sdc of Object.values(this.state.model.sdcs)) {
      if (sdc.state === 'connected' && nowMs - sdc.lastSeenMs > heartbeatTimeoutMs) {
        sdc.state = 'disconnected';
        this.options.log.warn({ sdcId: sdc.id, name: sdc.name, silentMs: nowMs - sdc.lastSeenMs }, 'SDC missed its heartbeats');
      }
    }
    for (const sds of Object.values(this.state.model.sdss)) {
      if (sds.state === 'connected' && nowMs - sds.lastHeartbeatMs > heartbeatTimeoutMs) {
        sds.state = 'disconnected';
        this.options.log.warn({ sdsId: sds.id, name: sds.name, silentMs: nowMs - sds.lastHeartbeatMs }, 'SDS missed its heartbeats');
      }
    }
  }

  /** What an SDC should know: the map and the volumes mapped to it. */
  sdcView(sdcId: Id): SdcView {
    const model = this.state.model;
    const sdc = model.sdcs[sdcId];
    const volumes: SdcVolume[] = [];
    for (const volume of Object.values(model.volumes)) {
      const mapping = volume.mappings.find((entry) => entry.sdcId === sdcId);
      const pool = model.storagePools[volume.storagePoolId];
      if (mapping === undefined || pool === undefined) continue;
      volumes.push({
        id: volume.id,
        name: volume.name,
        vtreeId: volume.vtreeId,
        poolId: pool.id,
        sizeBytes: volume.sizeBytes,
        chunkBytes: pool.chunkBytes,
        accessMode: mapping.accessMode,
        exclusive: volume.mappings.length === 1,
        iopsLimit: mapping.iopsLimit,
        bandwidthLimitKbps: mapping.bandwidthLimitKbps,
      });
    }
    return { sdcId, name: sdc?.name ?? '', map: this.state.placementMap(), volumes };
  }

  /** Volumes an SDC reported as open (NBD clients connected), from its last heartbeat. */
  openVolumes(sdcId: Id): readonly string[] {
    return this.sdcOpenVolumes.get(sdcId) ?? [];
  }

  /** Sends every connected SDC its view if it changed since it was last sent. */
  private pushViews(): void {
    for (const [sdcId, entry] of this.sdcPeers) {
      const view = JSON.stringify(this.sdcView(sdcId));
      if (view === entry.sentView) continue;
      entry.sentView = view;
      entry.peer.request(SdcOp.Update, Buffer.from(view), { timeoutMs: sdsOrderTimeoutMs }).then(
        (response) => {
          if (response.status !== SdsStatus.Ok) this.options.log.warn({ sdcId, status: response.status }, 'SDC refused its update');
        },
        (err: unknown) => this.options.log.warn({ err, sdcId }, 'SDC update failed'),
      );
    }
  }

  /** Resolves when every connected SDS has answered (or failed to take) the current map. */
  private pushMap(): Promise<void> {
    return Promise.all([...this.sdsPeers].map(([sdsId, peer]) => this.pushMapTo(sdsId, peer))).then(() => undefined);
  }

  /**
   * Copies placed on new devices start empty: each group's primary streams its chunks to
   * the new secondary (SdsOp.Rebuild; until it is done the secondary takes the mirrored
   * writes but serves no reads, since a new copy is never made primary). Progress and
   * retries are the rebalance work of the failure-handling issue; here a failed order is
   * logged loudly.
   */
  private orderCopies(moves: CopyMove[]): void {
    this.options.log.info({ groups: moves.length }, 'copying placement groups onto their new devices');
    for (const move of moves) {
      const peer = this.sdsPeers.get(move.sourceSdsId);
      if (peer === undefined) {
        this.options.log.error({ move }, 'cannot order a copy: its primary SDS is not connected');
        continue;
      }
      const order: RebuildArgs = { poolId: move.poolId, pgIndex: move.pgIndex, targetSdsId: move.targetSdsId, bytesPerSecondMax: rebalanceBytesPerSecondMax, chunksInflightMax: rebalanceChunksInflightMax };
      peer.request(SdsOp.Rebuild, Buffer.from(JSON.stringify(order)), { timeoutMs: sdsOrderTimeoutMs }).then(
        (response) => {
          if (response.status !== SdsStatus.Ok) this.options.log.error({ move, status: response.status, reason: response.payload.toString() }, 'copy order refused');
        },
        (err: unknown) => this.options.log.error({ err, move }, 'copy order failed'),
      );
    }
  }

  private pushMapTo(sdsId: Id, peer: WirePeer): Promise<void> {
    const map = this.state.placementMap();
    return peer.request(SdsOp.SetMap, Buffer.from(JSON.stringify(map)), { timeoutMs: sdsOrderTimeoutMs }).then(
      (response) => {
        if (response.status !== SdsStatus.Ok) this.options.log.warn({ sdsId, epoch: map.epoch, status: response.status, reason: response.payload.toString() }, 'SDS refused the map');
      },
      (err: unknown) => this.options.log.warn({ err, sdsId, epoch: map.epoch }, 'map push failed'),
    );
  }

  // --- stopping --------------------------------------------------------------------------

  async close(): Promise<void> {
    if (this.healthTimer !== null) clearInterval(this.healthTimer);
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    await this.executing;
    for (const peer of this.sdsPeers.values()) peer.destroy();
    for (const entry of this.sdcPeers.values()) entry.peer.destroy();
    for (const socket of this.sockets) socket.destroy();
    await stopped;
    await this.journal.close();
  }

  destroy(): void {
    if (this.healthTimer !== null) clearInterval(this.healthTimer);
    this.server.close();
    for (const socket of this.sockets) socket.destroy();
  }
}
