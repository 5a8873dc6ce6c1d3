// The MDM process's core: the state machine, its journal, and the wire connections of the
// SDSs (and later SDCs) it manages. Every change goes through execute(): applied to the
// state machine (which validates), appended to the journal and synced, and only then
// acknowledged; when the epoch moves, the new placement map is pushed to every connected
// SDS. Heartbeats update what is volatile (last seen, bytes in use) through the state
// machine's observe(), without the journal.
//
// Time is read here, in the I/O layer, and handed to the state machine on commands and to
// the health decisions (health.ts), which are pure: this file feeds them the clock and what
// it saw, and carries out what they decide. It makes no failure or rebuild decision itself.

import { barrierMapAttemptsMax, mapDeltasKept, nameBytesMax, rebuildFailingShownMax, rebuildSyncedBatchMs, sdsOrderTimeoutMs, snapshotBarrierTimeoutMs } from '../common/limits.js';
import * as net from 'node:net';
import type { Logger } from 'pino';
import { assert } from '../common/assert.js';
import { MeshblockError } from '../common/errors.js';
import { MapUpdates, mapUpdateFrames, parseMapHeld, type MapHeld } from '../wire/map-codec.js';
import { MdmOp, SdcOp, heartbeatIntervalMs, parseMapRefusal, parseSdcRegistration, parseSdsRegistration, parseDeviceRefusal, type RebuildDone, type RegisteredDevice, type SdcHeartbeat, type SdcView, type SdcVolume, type VolumeQosStats } from '../wire/mdm-ops.js';
import { WirePeer, type WireReply, type WireRequest, type WireResponse } from '../wire/peer.js';
import { listenTcp } from '../wire/peer-pool.js';
import { SdsOp, SdsStatus, type SdsStats } from '../wire/sds-ops.js';
import type { AddDeviceRequest, MdmController, RebuildStatus, SnapshotRequest, SnapshotResult } from './controller.js';
import {
  decideHealth,
  decideOnHeartbeat,
  decideRebuilds,
  emptyObservations,
  healthOptions,
  noteDecisions,
  noteOrderFailed,
  noteRebuildDone,
  noteRebuildFailed,
  noteRepairDone,
  noteRestart,
  noteSdsConnected,
  noteSdsDisconnected,
  takeSyncedBatch,
  type HealthDecisions,
  type HealthInput,
  type HealthObservations,
  type HealthOptions,
} from './health.js';
import { JournalCommandLog, type CommandLog, type JournalRecord } from './command-log.js';
import { IntegrityWatch } from './integrity.js';
import { Journal } from './journal.js';
import { emptyModel, type Id, type SnapshotDef, type SystemModel } from './model.js';
import { MdmError, StateMachine, isDown, notFound, type Applied, type Command } from './state-machine.js';
import { SdcLatencyWindows, type LatencyWindow } from './sdc-latency.js';
import { PeerGuard } from './peer-guard.js';

export type { JournalRecord } from './command-log.js';

interface Session {
  sdsId: Id | null;
  sdcId: Id | null;
  peer: WirePeer | null;
  /** The peer's IP address (an IPv4 address without its IPv6 mapping), for ScaleIO's sdcIp. */
  remoteAddress: string | null;
}

export interface MdmServiceOptions {
  dataDir: string;
  clusterId: Id;
  systemName: string;
  secret: Buffer;
  log: Logger;
  sdsDownAfterMs?: number;
  rebuildAfterMs?: number;
  rebuildBytesPerSecondMax?: number;
  rebuildBytesPerSecondUnderLoad?: number;
  rebuildChunksInflightMax?: number;
  /**
   * False while this MDM may not give orders (an MDM cluster's Master whose lease may have
   * run out): nothing is sent to SDSs and SDCs then, neither maps nor orders. Default: always.
   */
  mayAct?: () => boolean;
  /**
   * The command log failed: this process no longer knows what is durable. Default: exit
   * (the embedded journal); an MDM cluster's Master steps down instead.
   */
  onLogFailure?: (err: unknown) => void;
}

export class MdmService implements MdmController {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  /** Connected SDSs by id: registration proved who they are. */
  private readonly sdsPeers = new Map<Id, WirePeer>();
  /** Connected SDCs by id, and the view each was last sent. */
  /**
   * Each SDC's last view as sent, in two parts: the map's JSON (one string shared by every SDC
   * that was sent the same map, so comparing it is comparing references) and the rest.
   */
  private readonly sdcPeers = new Map<Id, { peer: WirePeer; sentMap: string; sentRest: ViewJsonParts; map: PeerMap | null }>();
  /**
   * The map as binary updates (docs/map-encoding.md): one full encoding and one delta per
   * epoch, for every peer that takes them, never one per peer.
   */
  private readonly mapUpdates = new MapUpdates(mapDeltasKept);
  /** A command was applied since the map was last published: its content may have changed. */
  private mapMaybeChanged = true;
  /**
   * A command executed with its pushes held changed the epoch: pushHeldAfterQueued() pushes
   * the map once for the whole burst (a rack of SDSs declared down in one health tick gets
   * one map update to every peer, not one per SDS).
   */
  private heldMapPush = false;
  /** What each SDS that takes binary maps holds, by id (an entry for another peer than sdsPeers' is stale). */
  private readonly sdsMaps = new Map<Id, PeerMap>();
  /** The map's JSON as last sent in views: a new map equal to it reuses this very string. */
  private viewMapJson = '';
  private readonly sdcOpenVolumes = new Map<Id, string[]>();
  /** By SDC, the QoS statistics of its last heartbeat (volatile, like sdcOpenVolumes: gone when it disconnects). */
  private readonly sdcQos = new Map<Id, VolumeQosStats[]>();
  /** Client latency from the SDCs' heartbeats (GET .../Statistics: userDataSdcReadLatency ...). */
  private readonly sdcLatency = new SdcLatencyWindows();
  /** Where each SDC last registered from; kept while it is away (ScaleIO shows the last sdcIp). */
  private readonly sdcAddresses = new Map<Id, string>();
  private readonly lastStats = new Map<Id, SdsStats>();
  /** Logs rises of the SDSs' integrity counters and new ranges bad on both copies, once each (docs/integrity.md). */
  private readonly integrityWatch: IntegrityWatch;
  private healthTimer: NodeJS.Timeout | null = null;
  /** What the health decisions need beyond the model: disconnections, orders given, repairs, finished fills. */
  private readonly observations: HealthObservations = emptyObservations();
  private readonly healthOptions: HealthOptions;
  private syncedTimer: NodeJS.Timeout | null = null;
  /** Rebuild progress: bytes copied (reported with completions and stats) and a 1 s rate. */
  private rebuildBytesDone = 0;
  /**
   * By SDS, the ids of its finished jobs already in rebuildBytesDone. Each heartbeat trims
   * the set to the jobs its stats still list: an SDS never lists a job again once it has
   * dropped it, so the set stays as small as the SDS's own list and forgets nothing needed.
   */
  private readonly countedJobs = new Map<Id, Set<string>>();
  private rebuildRate = { atMs: Date.now(), bytes: 0, perSecond: 0 };
  private syncingMax = 0;
  /** Commands are applied and journaled one at a time, so the journal's order is the order applied. */
  private executing: Promise<unknown> = Promise.resolve();
  /** Set when an append failed: the in-memory state may hold a command the log does not. */
  private logFailure: unknown = null;
  private readonly mayAct: () => boolean;
  /** Bounds what a bad peer costs: reconnect and registration loops, enormous payloads (peer-guard.ts). */
  readonly peerGuard: PeerGuard;

  /** `state` must be what `commandLog` holds; the service applies and appends from there on. */
  constructor(
    readonly state: StateMachine,
    private readonly commandLog: CommandLog,
    private readonly options: MdmServiceOptions,
  ) {
    this.server = net.createServer((socket) => this.onConnection(socket));
    this.healthOptions = healthOptions(options);
    this.integrityWatch = new IntegrityWatch(options.log.child({ component: 'integrity' }));
    this.mayAct = options.mayAct ?? (() => true);
    this.peerGuard = new PeerGuard(options.log.child({ component: 'peer-guard' }));
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
        state.replay(record.command);
      } catch (err) {
        await journal.close();
        throw new MeshblockError('MB_ERR_JOURNAL_REPLAY', `journal record ${index} (${record.command.type}) no longer applies: ${(err as Error).message}`, { cause: err });
      }
    }
    // Connections did not survive the restart: everyone is disconnected until they call.
    state.observe({ type: 'connectionsLost' });
    options.log.info({ records: records.length, epoch: state.model.epoch }, 'state restored from the journal');
    return new MdmService(state, new JournalCommandLog(journal, options.log), options);
  }

  /**
   * Starts acting: the wire listener, the health timer, and the abort of a snapshot barrier
   * this MDM did not begin. Called once by whichever MDM starts acting on the state: the
   * single MDM after opening its journal, a cluster MDM once it is Master (takeover).
   */
  async listen(host: string, port: number): Promise<net.AddressInfo> {
    const bound = await listenTcp(this.server, host, port);
    // After a restart every SDS is disconnected: give them the time to call back (their
    // reconnect backoff reaches 5 s while the MDM is away).
    noteRestart(this.observations, this.state, Date.now(), this.healthOptions);
    this.healthTimer = setInterval(() => this.onHealthTick(Date.now()), heartbeatIntervalMs).unref();
    await this.abortInheritedBarrier();
    return bound;
  }

  /**
   * docs/snapshots.md, step 4: a barrier found in the state was begun by another MDM (or by
   * this one before a restart); whoever began it no longer waits for its SDSs, so it can
   * never be committed safely. Aborting unfreezes the V-Trees (the SDSs also lift a freeze by
   * themselves after sdsFreezeExpiryMs); no snapshot of it was created, so the group is all
   * or nothing.
   */
  private async abortInheritedBarrier(): Promise<void> {
    const barrier = this.state.model.snapshotBarrier;
    if (barrier === null) return;
    const reason = 'the MDM that began it stopped (restart or takeover) before committing it';
    this.options.log.warn({ groupId: barrier.groupId, volumes: barrier.defs.length }, `aborting a snapshot group: ${reason}`);
    await this.serialised({ type: 'abortSnapshot', groupId: barrier.groupId, reason }).catch((err: unknown) =>
      this.options.log.error({ err, groupId: barrier.groupId }, 'could not abort the inherited snapshot group'),
    );
  }

  // --- MdmController ---------------------------------------------------------------------

  fillDefaults(): HealthOptions {
    return this.healthOptions;
  }

  execute(command: Command): Promise<Applied> {
    // The two phases of a snapshot belong to snapshotVolumes(), which waits for the SDSs in
    // between: a beginSnapshot without it would leave its V-Trees frozen until a restart.
    if (command.type === 'beginSnapshot' || command.type === 'commitSnapshot') {
      return Promise.reject(new MdmError('MB_ERR_INVALID_ARGUMENT', `type: ${command.type} is a phase of snapshotVolumes, not a command of its own`, 400));
    }
    return this.serialised(command);
  }

  private serialised(command: Command, pushes: 'now' | 'held' = 'now'): Promise<Applied> {
    const run = this.executing.then(() => this.executeNow(command, pushes));
    this.executing = run.catch(() => undefined);
    return run;
  }

  /**
   * After the commands queued so far, pushes the map and the views if a command executed with
   * its pushes held changed them. Queued like a command, so it runs after the last of a burst
   * whatever became of each (a refused one included).
   */
  private pushHeldAfterQueued(): void {
    const run = this.executing.then(() => {
      const mapChanged = this.heldMapPush;
      this.heldMapPush = false;
      if (mapChanged) void this.pushMap().then(() => this.orderRebuildsNow());
      this.pushViews();
    });
    this.executing = run.catch((err: unknown) => this.options.log.error({ err }, 'could not push the held map'));
  }

  private async executeNow(command: Command, pushes: 'now' | 'held' = 'now'): Promise<Applied> {
    if (this.logFailure !== null) {
      throw new MdmError('MB_ERR_MDM_NOT_MASTER', `this MDM stopped committing (${this.logFailure instanceof Error ? this.logFailure.message : 'its command log failed'}); try the Master`, 503);
    }
    // ScaleIO's rule: a volume an SDC has open (NBD clients attached, as its heartbeats say)
    // is not taken away from it. Checked here: it depends on live state, not on the model.
    if (command.type === 'removeMappedSdc' && this.openVolumes(command.sdcId).includes(command.volumeId)) {
      const volume = this.state.model.volumes[command.volumeId];
      const sdc = this.state.model.sdcs[command.sdcId];
      throw new MdmError('MB_ERR_VOLUME_OPEN', `volume '${volume?.name ?? command.volumeId}' is open on SDC '${sdc?.name ?? command.sdcId}' (NBD clients attached); detach them first`, 409);
    }
    // A restore changes a volume's content under its readers: only while no SDC has it open.
    if (command.type === 'overwriteVolumeContent') {
      const openOn = [...this.sdcOpenVolumes].filter(([, open]) => open.includes(command.volumeId)).map(([sdcId]) => `'${this.state.model.sdcs[sdcId]?.name ?? sdcId}'`);
      if (openOn.length > 0) {
        const volume = this.state.model.volumes[command.volumeId];
        throw new MdmError('MB_ERR_VOLUME_OPEN', `volume '${volume?.name ?? command.volumeId}' is open on SDC ${openOn.join(', ')} (NBD clients attached); detach them before overwriting it`, 409);
      }
    }
    const applied = this.state.apply(command);
    this.mapMaybeChanged = true;
    try {
      await this.commandLog.append(command);
    } catch (err) {
      // The change is applied in memory but not durable (or not known to be): this process
      // can no longer tell the truth about its state. Acknowledge nothing more.
      this.logFailure = err;
      if (this.options.onLogFailure !== undefined) {
        this.options.onLogFailure(err);
      } else {
        this.options.log.fatal({ err, command: command.type }, 'journal append failed; the MDM stops');
        setImmediate(() => process.exit(1));
      }
      throw err;
    }
    // A barrier's map goes out from snapshotVolumes(), which waits for each SDS's answer.
    if (pushes === 'held') {
      // One of a burst (pushHeldAfterQueued() follows the last): one map for all of them.
      this.heldMapPush ||= applied.epochChanged;
    } else {
      if (applied.epochChanged && command.type !== 'beginSnapshot') void this.pushMap().then(() => this.orderRebuildsNow());
      this.pushViews();
    }
    await this.commandLog.compactIfDue(this.state.model);
    return applied;
  }

  async addDevice(request: AddDeviceRequest): Promise<Applied> {
    const sds = this.state.find(this.state.model.sdss, request.sdsId, 'SDS');
    const pool = this.state.find(this.state.model.storagePools, request.storagePoolId, 'storage pool');
    if (sds.protectionDomainId !== pool.protectionDomainId) {
      throw new MdmError('MB_ERR_INVALID_ARGUMENT', `storagePoolId: SDS '${sds.name}' is not in the storage pool's protection domain`, 400);
    }
    const peer = this.sdsPeers.get(sds.id);
    if (!this.mayAct()) throw new MdmError('MB_ERR_MDM_NOT_MASTER', 'this MDM is no longer sure to be the Master; try again', 503);
    if (peer === undefined) throw new MdmError('MB_ERR_SDS_DISCONNECTED', `SDS '${sds.name}' is not connected to the MDM`, 503);
    let response;
    try {
      response = await peer.request(SdsOp.AddDevice, Buffer.from(JSON.stringify({ path: request.path, force: request.force })), { timeoutMs: sdsOrderTimeoutMs });
    } catch (err) {
      throw new MdmError('MB_ERR_SDS_UNREACHABLE', `SDS '${sds.name}' did not answer: ${(err as Error).message}`, 503);
    }
    if (response.status === SdsStatus.DeviceRefused) {
      const refusal = parseDeviceRefusal(response.payload);
      throw new MdmError(refusal.code, `SDS '${sds.name}': ${refusal.message}`, 409);
    }
    if (response.status !== SdsStatus.Ok) throw new MdmError('MB_ERR_SDS_FAILED', `SDS '${sds.name}' failed to add ${request.path}: ${response.payload.toString()}`, 502);
    const device = JSON.parse(response.payload.toString()) as RegisteredDevice;
    return this.execute({ type: 'addDevice', deviceId: device.deviceId, sdsId: sds.id, storagePoolId: pool.id, path: device.path, name: request.name, capacityBytes: device.capacityBytes });
  }

  async snapshotVolumes(requests: SnapshotRequest[]): Promise<SnapshotResult> {
    if (!Array.isArray(requests)) throw new MdmError('MB_ERR_INVALID_ARGUMENT', 'snapshotDefs: must be an array', 400);
    const defs = this.nameSnapshots(requests);
    const begun = await this.serialised({ type: 'beginSnapshot', defs, nowMs: Date.now() });
    const groupId = begun.id;
    assert(groupId !== undefined, 'beginSnapshot names its group');
    const startedMs = Date.now();
    let unconfirmed: string[];
    try {
      unconfirmed = await this.awaitFreeze(groupId, startedMs + snapshotBarrierTimeoutMs);
    } catch (err) {
      await this.abortSnapshot(groupId, err instanceof Error ? err.message : String(err));
      throw err;
    }
    // Committed only within the deadline: the SDSs lift their freezes by themselves later
    // (sdsFreezeExpiryMs), and a commit must reach them while they still hold.
    const lateMs = Date.now() - startedMs - snapshotBarrierTimeoutMs;
    if (unconfirmed.length > 0 || lateMs > 0) {
      const why = unconfirmed.length > 0 ? `SDS ${unconfirmed.join(', ')} did not confirm the freeze within ${snapshotBarrierTimeoutMs} ms` : `the freeze was confirmed ${lateMs} ms after its ${snapshotBarrierTimeoutMs} ms deadline`;
      await this.abortSnapshot(groupId, why);
      throw new MdmError('MB_ERR_SNAPSHOT_BARRIER', `snapshot of ${defs.map((def) => `'${this.state.model.volumes[def.volumeId]?.name ?? def.volumeId}'`).join(', ')} aborted, nothing created: ${why}`, 503);
    }
    let committed: Applied;
    try {
      committed = await this.serialised({ type: 'commitSnapshot', groupId, nowMs: Date.now() });
    } catch (err) {
      // Refused (something changed between the phases): the barrier must not stay.
      if (err instanceof MdmError && this.state.model.snapshotBarrier?.groupId === groupId) await this.abortSnapshot(groupId, `the commit was refused: ${err.message}`);
      throw err;
    }
    assert(committed.ids !== undefined && committed.ids.length === defs.length, 'commitSnapshot makes one snapshot per volume named');
    this.options.log.info({ groupId, volumes: committed.ids.length, barrierMs: Date.now() - startedMs }, 'snapshot group taken');
    return { snapshotGroupId: groupId, volumeIds: committed.ids };
  }

  async overwriteVolumeContent(volumeId: Id, sourceVolumeId: Id): Promise<void> {
    await this.execute({ type: 'overwriteVolumeContent', volumeId, sourceVolumeId });
  }

  /**
   * Names the unnamed snapshots '<volume name>-snap-<n>', with the lowest n free among the
   * volumes and this call's other names, the volume's name cut so the whole fits nameBytesMax.
   */
  private nameSnapshots(requests: SnapshotRequest[]): SnapshotDef[] {
    const model = this.state.model;
    const taken = new Set(Object.values(model.volumes).map((volume) => volume.name));
    for (const request of requests) if (typeof request?.name === 'string') taken.add(request.name);
    return requests.map((request, index) => {
      if (typeof request !== 'object' || request === null) throw new MdmError('MB_ERR_INVALID_ARGUMENT', `snapshotDefs[${index}]: must be an object`, 400);
      if (request.name !== null) return { volumeId: request.volumeId, name: request.name, readOnly: request.readOnly };
      const volume = model.volumes[request.volumeId];
      if (volume === undefined) throw notFound(`no volume with id ${String(request.volumeId)}`);
      let name = '';
      for (let n = 1; name === '' || taken.has(name); n++) {
        const suffix = `-snap-${n}`;
        name = `${volume.name.slice(0, nameBytesMax - suffix.length)}${suffix}`;
      }
      taken.add(name);
      return { volumeId: request.volumeId, name, readOnly: request.readOnly };
    });
  }

  /**
   * Step 2 of the barrier: the map that freezes the group's V-Trees goes to the SDSs of
   * their pools, and each answers once the writes it accepted to those trees are done.
   * Every SDS holding a device of the pools that is connected must answer Ok, and so must
   * every SDS that is primary of a group of those pools and not declared down (connected or
   * not: a primary that did not hear of the freeze could still accept writes after the cut).
   * Resolves with the SDSs (quoted names, with why) that did not confirm by `deadlineMs`.
   */
  private async awaitFreeze(groupId: Id, deadlineMs: number): Promise<string[]> {
    if (!this.mayAct()) throw new MdmError('MB_ERR_MDM_NOT_MASTER', 'this MDM is no longer sure to be the Master; the snapshot is not taken', 503);
    const model = this.state.model;
    const barrier = model.snapshotBarrier;
    assert(barrier !== null && barrier.groupId === groupId, 'the barrier awaited is the one under way');
    const poolIds = new Set(barrier.defs.map((def) => model.volumes[def.volumeId]?.storagePoolId).filter((poolId): poolId is Id => poolId !== undefined));
    const required = new Set<Id>();
    for (const poolId of poolIds) {
      for (const device of this.state.poolDevices(poolId)) if (this.sdsPeers.has(device.sdsId)) required.add(device.sdsId);
      for (const group of model.storagePools[poolId]?.groups ?? []) {
        const sdsId = model.devices[group.primaryDevice]?.sdsId;
        const sds = sdsId === undefined ? undefined : model.sdss[sdsId];
        if (sds !== undefined && !isDown(sds) && group.lost !== true) required.add(sds.id);
      }
    }
    const epoch = model.epoch;
    // The SDSs of other pools get the map too (its epoch moved), without being waited for.
    const encoded = once(() => this.encodedMap());
    for (const [sdsId, peer] of this.sdsPeers) if (!required.has(sdsId)) void this.pushMapTo(sdsId, peer, encoded);
    const nameOf = (sdsId: Id): string => `'${model.sdss[sdsId]?.name ?? sdsId}'`;
    const confirm = async (sdsId: Id): Promise<string | null> => {
      for (let attempt = 1; ; attempt++) {
        const peer = this.sdsPeers.get(sdsId);
        if (peer === undefined) return `${nameOf(sdsId)} (not connected)`;
        if (this.state.model.snapshotBarrier?.groupId !== groupId) return `${nameOf(sdsId)} (the barrier was ended meanwhile)`;
        const timeoutMs = deadlineMs - Date.now();
        if (timeoutMs <= 0) return `${nameOf(sdsId)} (no answer in time)`;
        let response;
        const target = this.sdsMaps.get(sdsId);
        if (target !== undefined && target.peer === peer) {
          // The update from what it holds (the freeze's delta), or an empty one if it has the
          // map already: either way its Ok says the writes to the frozen trees are done.
          response = await this.sendMapUpdate(target, SdsOp.SetMapBinary, { sdsId }, { timeoutMs, confirm: true });
          if (response === null) return `${nameOf(sdsId)} (the map update failed)`;
        } else {
          // Made afresh each time: every map made while the barrier holds freezes its trees.
          const map = Buffer.from(JSON.stringify(this.state.placementMap()));
          try {
            response = await peer.request(SdsOp.SetMap, map, { timeoutMs });
          } catch (err) {
            return `${nameOf(sdsId)} (${err instanceof Error ? err.message : String(err)})`;
          }
        }
        if (response.status === SdsStatus.Ok) return null;
        // A newer map (another command moved the epoch meanwhile) reached it first: it refused
        // this one at once, before draining. The newest map's answer proves the drain too.
        if (response.status === SdsStatus.StaleEpoch && attempt < barrierMapAttemptsMax) continue;
        return `${nameOf(sdsId)} (refused the map: status ${response.status} ${response.payload.toString().slice(0, 200)})`;
      }
    };
    const answers = await Promise.all([...required].map(confirm));
    const unconfirmed = answers.filter((answer): answer is string => answer !== null).sort();
    this.options.log.info({ groupId, epoch, sdss: required.size, unconfirmed: unconfirmed.length }, 'snapshot barrier: freeze pushed');
    return unconfirmed;
  }

  /** Ends a barrier that will not be committed; a failure is logged (the next Master aborts it). */
  private async abortSnapshot(groupId: Id, reason: string): Promise<void> {
    this.options.log.warn({ groupId, reason }, 'snapshot group aborted');
    await this.serialised({ type: 'abortSnapshot', groupId, reason }).catch((err: unknown) => this.options.log.error({ err, groupId }, 'could not abort the snapshot group'));
  }

  sdsStats(sdsId: Id): SdsStats | null {
    return this.lastStats.get(sdsId) ?? null;
  }

  // --- SDS connections -------------------------------------------------------------------

  private onConnection(socket: net.Socket): void {
    const remoteAddress = socket.remoteAddress === undefined ? null : socket.remoteAddress.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '');
    // Before the handshake: a reconnect loop's connection past its address's allowance costs
    // an accept and a close, nothing more (peer-guard.ts). A socket already closed has no address.
    const ticket = this.peerGuard.admitConnection(remoteAddress ?? 'unknown', Date.now());
    if (ticket === null) {
      socket.destroy();
      return;
    }
    const lasted = setTimeout(() => this.peerGuard.connectionLasted(ticket, Date.now()), this.peerGuard.limiter.limits.shortConnectionMs).unref();
    this.sockets.add(socket);
    socket.on('close', () => {
      clearTimeout(lasted);
      this.sockets.delete(socket);
      this.peerGuard.connectionClosed(ticket, Date.now());
    });
    const session: Session = { sdsId: null, sdcId: null, peer: null, remoteAddress };
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
            this.sdcQos.delete(session.sdcId);
            this.sdcLatency.forget(session.sdcId);
            this.state.observe({ type: 'sdcDisconnected', sdcId: session.sdcId });
            this.options.log.warn({ sdcId: session.sdcId }, 'SDC disconnected');
          }
          if (session.sdsId !== null && this.sdsPeers.get(session.sdsId) === peer) {
            this.sdsPeers.delete(session.sdsId);
            noteSdsDisconnected(this.observations, session.sdsId, Date.now());
            this.state.observe({ type: 'sdsDisconnected', sdsId: session.sdsId });
            this.options.log.warn({ sdsId: session.sdsId }, 'SDS disconnected');
          }
        });
      },
      (err: unknown) => this.options.log.warn({ err, address: socket.remoteAddress }, 'wire peer refused'),
    );
  }

  private async onRequest(session: Session, request: WireRequest): Promise<WireReply> {
    const refused = this.peerGuard.checkRequest(session, request, Date.now());
    if (refused !== null) return refused;
    try {
      switch (request.op) {
        case MdmOp.RegisterSds: {
          const registration = parseSdsRegistration(request.payload);
          await this.execute({ type: 'registerSds', sdsId: registration.sdsId, name: registration.name, address: registration.address, nowMs: Date.now(), host: registration.host ?? null });
          const hostWarning = this.state.hostFaultSetWarning(registration.sdsId);
          if (hostWarning !== null) this.options.log.error({ sdsId: registration.sdsId, host: registration.host }, hostWarning);
          // Setup resolved (and set session.peer) before any request could be read.
          const peer = session.peer;
          assert(peer !== null, 'a registration arrives on an established connection');
          session.sdsId = registration.sdsId;
          const previous = this.sdsPeers.get(registration.sdsId);
          if (previous !== undefined && previous !== peer) previous.destroy();
          this.sdsPeers.set(registration.sdsId, peer);
          // An SDS of an older build takes JSON maps; one that takes binary maps gets what it lacks.
          if (registration.mapBinary === true) this.sdsMaps.set(registration.sdsId, { peer, held: registration.mapHeld ?? null, sending: Promise.resolve() });
          else this.sdsMaps.delete(registration.sdsId);
          noteSdsConnected(this.observations, registration.sdsId);
          // After this reply, so that the SDS hears of its registration first.
          setImmediate(() => void this.pushMapTo(registration.sdsId, peer));
          this.options.log.info({ sdsId: registration.sdsId, name: registration.name, address: registration.address, host: registration.host ?? null, devices: registration.devices.length }, 'SDS registered');
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
          const rest = this.sdcViewRest(applied.id);
          let view: string;
          if (registration.mapBinary === true) {
            // The view without the map, naming the map it was made with: the SDC asks for
            // the map (GetMapBinary, from what it holds) before it applies the view.
            this.sdcPeers.set(applied.id, { peer, sentMap: '', sentRest: rest, map: { peer, held: registration.mapHeld ?? null, sending: Promise.resolve() } });
            view = maplessViewJson(rest, this.currentMapUpdates().held);
          } else {
            const mapJson = this.currentViewMapJson();
            this.sdcPeers.set(applied.id, { peer, sentMap: mapJson, sentRest: rest, map: null });
            view = viewJson(rest, mapJson);
          }
          if (session.remoteAddress !== null) this.sdcAddresses.set(applied.id, session.remoteAddress);
          this.options.log.info({ sdcId: applied.id, guid: registration.guid }, 'SDC registered');
          return { status: SdsStatus.Ok, payload: Buffer.from(view) };
        }
        case MdmOp.Heartbeat: {
          if (session.sdcId !== null) {
            this.state.observe({ type: 'sdcHeartbeat', sdcId: session.sdcId, nowMs: Date.now() });
            const beat = JSON.parse(request.payload.toString()) as Partial<SdcHeartbeat>;
            this.sdcOpenVolumes.set(session.sdcId, Array.isArray(beat.openVolumes) ? beat.openVolumes.filter((entry) => typeof entry === 'string') : []);
            const qos = this.readQosStats(session.sdcId, beat.qos);
            this.sdcQos.set(session.sdcId, qos);
            this.sdcLatency.onHeartbeat(session.sdcId, Date.now(), qos);
            return { status: SdsStatus.Ok };
          }
          if (session.sdsId === null) return { status: SdsStatus.InvalidArgument, payload: Buffer.from('heartbeat before registration') };
          this.onHeartbeat(session.sdsId, JSON.parse(request.payload.toString()) as SdsStats);
          return { status: SdsStatus.Ok };
        }
        case MdmOp.GetMap:
          return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify(this.state.placementMap())) };
        case MdmOp.GetMapBinary: {
          const held = parseMapHeld(request.payload.length === 0 ? null : JSON.parse(request.payload.toString('utf8')), 'held');
          const updates = this.currentMapUpdates();
          const update = updates.updateFor(held);
          // The asker holds the current map once it applied this (it says otherwise when it
          // refuses the next update): the next update is made from there.
          const target = session.sdcId !== null ? this.sdcPeers.get(session.sdcId)?.map : session.sdsId !== null ? this.sdsMaps.get(session.sdsId) : undefined;
          if (target !== undefined && target !== null && target.peer === session.peer) target.held = updates.held;
          const frames = mapUpdateFrames(update);
          // The shared encoding itself when it is one frame (the whole map): no copy per asker.
          return { status: SdsStatus.Ok, payload: frames.length === 1 ? (frames[0] as Buffer) : Buffer.concat(frames) };
        }
        case MdmOp.RebuildDone: {
          if (session.sdsId === null) return { status: SdsStatus.InvalidArgument, payload: Buffer.from('a rebuild report before registration') };
          const done = JSON.parse(request.payload.toString()) as RebuildDone;
          this.countRebuildBytes(session.sdsId, done);
          this.onRebuildDone(session.sdsId, done);
          return { status: SdsStatus.Ok };
        }
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
    const nowMs = Date.now();
    const decisions = decideOnHeartbeat(this.state, sdsId, stats, nowMs);
    if (decisions === null) return;
    this.state.observe(decisions.observation);
    this.lastStats.set(sdsId, stats);
    // Only shown and logged, never acted on: a bad report must not stop the heartbeat's work.
    try {
      this.integrityWatch.onStats(this.state.model, sdsId, this.state.model.sdss[sdsId]?.name ?? sdsId, stats);
    } catch (err) {
      this.options.log.warn({ err, sdsId }, 'could not read the integrity report of an SDS heartbeat');
    }
    // Rebuild reports lost with a connection are found here; failed jobs are ordered again.
    for (const done of decisions.reports) {
      this.countRebuildBytes(sdsId, done);
      this.onRebuildDone(sdsId, done);
    }
    for (const key of decisions.failedOrders) noteOrderFailed(this.observations, key);
    // A job that failed on a chunk: said loudly, once per job, and ordered again after a backoff.
    for (const job of stats.rebuilds ?? []) {
      const failing = noteRebuildFailed(this.observations, this.state, sdsId, job, nowMs);
      if (failing === null) continue;
      const { failure } = failing;
      this.options.log.error(
        {
          poolId: failing.poolId,
          pgIndex: failing.pgIndex,
          sourceSdsId: sdsId,
          sourceSdsName: this.state.model.sdss[sdsId]?.name,
          targetSdsId: failing.targetSdsId,
          targetSdsName: this.state.model.sdss[failing.targetSdsId]?.name,
          chunk: failure.chunk,
          side: failure.side,
          code: failure.code,
          deviceId: failure.deviceId,
          chunksFailed: failure.chunksFailed,
          error: failure.message,
          attempts: failing.attempts,
          retryInMs: failing.retryAtMs - nowMs,
        },
        `rebuild of a group failed on chunk ${failure.chunk} (${failure.side} side, ${failure.code}): the group stays on one copy; ordered again after a backoff`,
      );
    }
    const counted = this.countedJobs.get(sdsId);
    if (counted !== undefined) {
      const listed = new Set((stats.rebuilds ?? []).map((job) => job.jobId));
      for (const jobId of counted) if (!listed.has(jobId)) counted.delete(jobId);
    }
    for (const command of decisions.commands) {
      const device = this.state.model.devices[command.deviceId];
      this.options.log.error({ sdsId, deviceId: command.deviceId, path: device?.path, error: command.reason }, 'device failed; rebuilding its copies');
      this.execute(command).catch((err: unknown) => this.options.log.error({ err, deviceId: command.deviceId }, 'could not act on a device failure'));
    }
  }

  /**
   * Adds a finished job's bytes to the copied total, once: its report and the stats that
   * carry it after are the same job, and the stats may still show it running after the report.
   */
  private countRebuildBytes(sdsId: Id, done: RebuildDone): void {
    if (!Number.isSafeInteger(done.bytesDone) || done.bytesDone <= 0) return;
    if (typeof done.jobId === 'string') {
      let counted = this.countedJobs.get(sdsId);
      if (counted === undefined) this.countedJobs.set(sdsId, (counted = new Set()));
      if (counted.has(done.jobId)) return;
      counted.add(done.jobId);
    }
    this.rebuildBytesDone += done.bytesDone;
  }

  /** An SDS finished a rebuild order: its target's copy is in sync once the MDM records it (in a batch). */
  private onRebuildDone(sdsId: Id, done: RebuildDone): void {
    if (!noteRebuildDone(this.observations, this.state, sdsId, done)) return;
    this.syncedTimer ??= setTimeout(() => {
      this.syncedTimer = null;
      for (const command of takeSyncedBatch(this.observations)) {
        this.execute(command).catch((err: unknown) => this.options.log.error({ err, poolId: command.poolId }, 'could not record finished rebuilds'));
      }
    }, rebuildSyncedBatchMs);
  }

  private healthInput(nowMs: number): HealthInput {
    return { machine: this.state, nowMs, connected: this.sdsPeers, observations: this.observations, options: this.healthOptions };
  }

  /** Every second: failures are detected, and rebuild orders given (again). */
  private onHealthTick(nowMs: number): void {
    this.carryOut(decideHealth(this.healthInput(nowMs)), nowMs);
  }

  /** Orders rebuilds for the current epoch, once the SDSs have its map. */
  private orderRebuildsNow(): void {
    const nowMs = Date.now();
    this.carryOut(decideRebuilds(this.healthInput(nowMs)), nowMs);
  }

  /**
   * Carries out what the health decisions said: volatile updates observed, SDSs fenced,
   * commands executed (serialised, journaled), orders sent. Nothing is decided here.
   */
  private carryOut(decisions: HealthDecisions, nowMs: number): void {
    // A Master that may have lost its lease decides nothing: another may be deciding already.
    if (!this.mayAct()) return;
    noteDecisions(this.observations, decisions, nowMs);
    for (const observation of decisions.observations) {
      if (observation.type === 'sdcDisconnected') {
        const sdc = this.state.model.sdcs[observation.sdcId];
        this.options.log.warn({ sdcId: observation.sdcId, name: sdc?.name, silentMs: nowMs - (sdc?.lastSeenMs ?? nowMs) }, 'SDC missed its heartbeats');
      }
      this.state.observe(observation);
    }
    for (const sdsId of decisions.fence) {
      this.sdsPeers.get(sdsId)?.destroy();
      this.sdsPeers.delete(sdsId);
    }
    // SDSs found down (or out) in one tick (a rack, a switch) are journaled one command each,
    // but their map goes out once, after the last: one update to every peer instead of one per SDS.
    const burst = decisions.commands.filter((command) => command.type === 'sdsDown' || command.type === 'sdsOut').length > 1;
    for (const command of decisions.commands) {
      if (command.type === 'sdsDown') {
        const sds = this.state.model.sdss[command.sdsId];
        this.options.log.error({ sdsId: command.sdsId, name: sds?.name, reason: command.reason }, 'SDS declared down; its groups fail over');
        this.serialised(command, burst ? 'held' : 'now').catch((err: unknown) => this.options.log.error({ err, sdsId: command.sdsId }, 'could not declare the SDS down'));
      } else if (command.type === 'sdsOut') {
        const sds = this.state.model.sdss[command.sdsId];
        this.options.log.warn({ sdsId: command.sdsId, name: sds?.name, downMs: nowMs - (sds?.downSinceMs ?? nowMs) }, 'SDS down too long: declared out, its copies are rebuilt elsewhere');
        this.serialised(command, burst ? 'held' : 'now').catch((err: unknown) => this.options.log.error({ err, sdsId: command.sdsId }, 'could not declare the SDS out'));
      } else if (command.type === 'repairPool') {
        const poolId = command.poolId;
        this.options.log.warn({ poolId }, 'groups on one copy with nothing to fill them: planning the pool again');
        this.execute(command)
          .catch((err: unknown) => this.options.log.error({ err, poolId }, 'could not repair the pool'))
          .finally(() => noteRepairDone(this.observations, poolId));
      } else {
        this.execute(command).catch((err: unknown) => this.options.log.error({ err, command: command.type }, 'health command failed'));
      }
    }
    if (burst) this.pushHeldAfterQueued();
    for (const order of decisions.orders) {
      const peer = this.sdsPeers.get(order.sourceSdsId);
      // Decided from this.sdsPeers a moment ago, in the same turn: still there.
      assert(peer !== undefined, 'rebuild orders go to connected SDSs');
      peer.request(SdsOp.Rebuild, Buffer.from(JSON.stringify(order.args)), { timeoutMs: sdsOrderTimeoutMs }).then(
        (response) => {
          if (response.status === SdsStatus.Ok) return;
          // Most often the SDS has not installed this epoch's map yet: order again next tick.
          noteOrderFailed(this.observations, order.key);
          this.options.log.debug({ key: order.key, status: response.status, reason: response.payload.toString() }, 'rebuild order refused; ordering again');
        },
        (err: unknown) => {
          noteOrderFailed(this.observations, order.key);
          this.options.log.warn({ err, key: order.key }, 'rebuild order failed; ordering again');
        },
      );
    }
    if (decisions.syncingGroups === 0) this.syncingMax = 0;
    else if (decisions.syncingGroups !== null) this.syncingMax = Math.max(this.syncingMax, decisions.syncingGroups);
  }

  /** Rebuild (and rebalance) progress over every pool. */
  rebuildStatus(nowMs = Date.now()): RebuildStatus {
    const model = this.state.model;
    let syncing = 0;
    let groups = 0;
    let bytesPerGroup = 0;
    for (const pool of Object.values(model.storagePools)) {
      const health = this.state.poolHealth(pool);
      syncing += health.syncingGroups;
      groups += health.groups;
      const used = this.state.poolDevices(pool.id).reduce((sum, device) => sum + device.usedBytes, 0);
      if (health.groups > 0) bytesPerGroup = Math.max(bytesPerGroup, used / (2 * health.groups));
    }
    // The bytes copied: finished orders, plus what running jobs report in their stats.
    let running = 0;
    for (const [sdsId, stats] of this.lastStats) {
      const counted = this.countedJobs.get(sdsId);
      for (const job of stats.rebuilds ?? []) if (job.state === 'running' && counted?.has(job.jobId) !== true) running += job.bytesDone;
    }
    const bytesDone = this.rebuildBytesDone + running;
    const elapsedMs = nowMs - this.rebuildRate.atMs;
    if (elapsedMs >= 1000) {
      this.rebuildRate = { atMs: nowMs, bytes: bytesDone, perSecond: Math.max(0, ((bytesDone - this.rebuildRate.bytes) * 1000) / elapsedMs) };
    }
    const max = Math.max(this.syncingMax, syncing);
    const pendingOut = Object.values(model.sdss)
      .filter((sds) => isDown(sds) && sds.out !== true && this.state.sdsDevices(sds.id).length > 0)
      .map((sds) => ({ sdsId: sds.id, name: sds.name, outAtMs: (sds.downSinceMs ?? nowMs) + this.healthOptions.rebuildAfterMs }));
    const perSecond = Math.round(this.rebuildRate.perSecond);
    const failing = [...this.observations.rebuildFailures.values()];
    return {
      state: syncing > 0 ? 'running' : pendingOut.length > 0 ? 'waiting' : 'idle',
      groupsSyncing: syncing,
      groupsTotal: groups,
      percent: max === 0 ? 100 : Math.floor((1000 * (max - syncing)) / max) / 10,
      bytesDone,
      bytesPerSecond: perSecond,
      etaSeconds: syncing === 0 ? 0 : perSecond > 0 ? Math.ceil((syncing * bytesPerGroup) / perSecond) : null,
      pendingOut,
      groupsFailing: failing.length,
      failing: failing.slice(0, rebuildFailingShownMax).map((entry) => ({
        poolId: entry.poolId,
        pgIndex: entry.pgIndex,
        sourceSdsId: entry.sourceSdsId,
        targetSdsId: entry.targetSdsId,
        ...entry.failure,
        attempts: entry.attempts,
        failedAtMs: entry.failedAtMs,
        retryAtMs: entry.retryAtMs,
      })),
    };
  }

  /** What an SDC should know: the map and the volumes mapped to it. */
  sdcView(sdcId: Id): SdcView {
    return { ...this.sdcViewWithoutMap(sdcId), map: this.state.placementMap() };
  }

  /** An SDC's view but its map: its id, name and the volumes mapped to it. */
  private sdcViewWithoutMap(sdcId: Id): Omit<SdcView, 'map'> {
    const model = this.state.model;
    const sdc = model.sdcs[sdcId];
    const volumes: SdcVolume[] = [];
    // O(volumes mapped to it): asked for every connected SDC after every command (pushViews).
    for (const { volume, mapping } of this.state.sdcMappings(sdcId)) {
      const pool = model.storagePools[volume.storagePoolId];
      if (pool === undefined) continue;
      volumes.push({
        id: volume.id,
        name: volume.name,
        vtreeId: volume.vtreeId,
        generation: volume.generation,
        poolId: pool.id,
        sizeBytes: volume.sizeBytes,
        chunkBytes: pool.chunkBytes,
        // A read-only volume (snapshot) is read-only on every mapping, whatever was asked.
        accessMode: volume.accessModeLimit === 'ReadOnly' ? 'ReadOnly' : mapping.accessMode,
        exclusive: volume.mappings.length === 1,
        iopsLimit: mapping.iopsLimit,
        bandwidthLimitKbps: mapping.bandwidthLimitKbps,
        iopsBurst: mapping.iopsBurst,
        bandwidthBurstKbps: mapping.bandwidthBurstKbps,
        burstSeconds: mapping.burstSeconds,
      });
    }
    return { sdcId, name: sdc?.name ?? '', volumes };
  }

  /** The JSON of an SDC's view around its map (viewJson, maplessViewJson). */
  private sdcViewRest(sdcId: Id): ViewJsonParts {
    const { name, volumes } = this.sdcViewWithoutMap(sdcId);
    return { head: `{"sdcId":${JSON.stringify(sdcId)},"name":${JSON.stringify(name)},`, tail: `"volumes":${JSON.stringify(volumes)}}` };
  }

  /**
   * The current map's JSON for views, built once per call (not once per SDC): when it equals
   * the last one sent, that same string is returned, so every SDC's comparison is by reference.
   */
  private currentViewMapJson(): string {
    const json = JSON.stringify(this.state.placementMap());
    if (json !== this.viewMapJson) this.viewMapJson = json;
    return this.viewMapJson;
  }

  /** The QoS statistics of the volumes mapped to an SDC, from its last heartbeat ([] before one, or from an older SDC). */
  sdcQosStats(sdcId: Id): readonly VolumeQosStats[] {
    return this.sdcQos.get(sdcId) ?? [];
  }

  /** What an SDC did with a volume between its last two heartbeats (undefined before two, or from an SDC that does not time its IO). */
  sdcLatencyWindow(sdcId: Id, volumeId: Id): LatencyWindow | undefined {
    return this.sdcLatency.window(sdcId, volumeId);
  }

  /** The IP address the SDC last registered from, null if not since this MDM started (or removed). */
  sdcAddress(sdcId: Id): string | null {
    return Object.hasOwn(this.state.model.sdcs, sdcId) ? (this.sdcAddresses.get(sdcId) ?? null) : null;
  }

  /**
   * An SDC's heartbeat `qos`, read defensively: it is only shown, never acted on, so a bad
   * entry (an older or broken SDC) is dropped rather than refusing the heartbeat, which also
   * keeps the SDC alive. Only volumes mapped to that SDC are kept, once each: what is kept is
   * bounded by the mappings, whatever the SDC sends.
   */
  private readQosStats(sdcId: Id, reported: unknown): VolumeQosStats[] {
    if (!Array.isArray(reported)) return [];
    const kept = new Map<Id, VolumeQosStats>();
    const counter = (value: unknown): value is number => typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
    for (const entry of reported as unknown[]) {
      if (entry === null || typeof entry !== 'object') continue;
      const stats = entry as Record<keyof VolumeQosStats, unknown>;
      const volumeId = stats.volumeId;
      if (typeof volumeId !== 'string' || !Object.hasOwn(this.state.model.volumes, volumeId) || kept.has(volumeId)) continue;
      if (!this.state.isMapped(volumeId, sdcId)) continue;
      const { iopsLimit, bandwidthLimitKbps, requests, bytes, throttledRequests, throttledMs, waiting, readsDone, readLatencyUsSum, writesDone, writeLatencyUsSum } = stats;
      if (![iopsLimit, bandwidthLimitKbps, requests, bytes, throttledRequests, waiting].every(counter)) continue;
      // Waits are summed from a monotonic clock: fractions of a millisecond are fine.
      if (typeof throttledMs !== 'number' || !Number.isFinite(throttledMs) || throttledMs < 0) continue;
      const volumeStats = { volumeId, iopsLimit, bandwidthLimitKbps, requests, bytes, throttledRequests, throttledMs, waiting } as VolumeQosStats;
      // Client latency (sdc-latency.ts): all four or none (an older SDC, or one not timing its IO).
      if ([readsDone, readLatencyUsSum, writesDone, writeLatencyUsSum].every(counter)) Object.assign(volumeStats, { readsDone, readLatencyUsSum, writesDone, writeLatencyUsSum });
      kept.set(volumeId, volumeStats);
    }
    return [...kept.values()];
  }

  /** Volumes an SDC reported as open (NBD clients connected), from its last heartbeat. */
  openVolumes(sdcId: Id): readonly string[] {
    return this.sdcOpenVolumes.get(sdcId) ?? [];
  }

  /** Sends every connected SDC its view if it changed since it was last sent. */
  private pushViews(): void {
    if (!this.mayAct() || this.sdcPeers.size === 0) return;
    // The map is built and encoded once for every SDC (at a 4,096-group pool it is ~550 KB of
    // JSON: once per SDC per command stalled the MDM past its peers' heartbeat timeout), and
    // only if an SDC of an older build takes it as JSON.
    let mapJson: string | null = null;
    let held: MapHeld | null | undefined;
    for (const [sdcId, entry] of this.sdcPeers) {
      const rest = this.sdcViewRest(sdcId);
      const sameRest = rest.head === entry.sentRest.head && rest.tail === entry.sentRest.tail;
      if (entry.map !== null) {
        // The map (nothing if it holds it, else the deltas), then the view if it changed, sent
        // once the map was answered: the SDC then holds the view's map when the view arrives.
        const mapSent = this.sendMapUpdate(entry.map, SdcOp.SetMap, { sdcId }, { timeoutMs: sdsOrderTimeoutMs, confirm: false });
        if (sameRest) {
          mapSent.catch((err: unknown) => this.options.log.error({ err, sdcId }, 'could not make the map update'));
          continue;
        }
        entry.sentRest = rest;
        held ??= this.currentMapUpdates().held;
        const view = Buffer.from(maplessViewJson(rest, held));
        mapSent
          .then(() => entry.peer.request(SdcOp.Update, view, { timeoutMs: sdsOrderTimeoutMs }))
          .then(
            (response) => {
              if (response.status !== SdsStatus.Ok) this.options.log.warn({ sdcId, status: response.status }, 'SDC refused its update');
            },
            (err: unknown) => this.options.log.warn({ err, sdcId }, 'SDC update failed'),
          );
        continue;
      }
      mapJson ??= this.currentViewMapJson();
      if (mapJson === entry.sentMap && sameRest) continue;
      entry.sentMap = mapJson;
      entry.sentRest = rest;
      entry.peer.request(SdcOp.Update, Buffer.from(viewJson(rest, mapJson)), { timeoutMs: sdsOrderTimeoutMs }).then(
        (response) => {
          if (response.status !== SdsStatus.Ok) this.options.log.warn({ sdcId, status: response.status }, 'SDC refused its update');
        },
        (err: unknown) => this.options.log.warn({ err, sdcId }, 'SDC update failed'),
      );
    }
  }

  /** Resolves when every connected SDS has answered (or failed to take) the current map. */
  private pushMap(): Promise<void> {
    if (!this.mayAct()) return Promise.resolve();
    this.options.log.info({ epoch: this.state.model.epoch, sdss: this.sdsPeers.size }, 'map pushed');
    // One encoding for every SDS: the payload is only read by the sockets. The JSON one only
    // if an SDS of an older build needs it.
    const encoded = once(() => this.encodedMap());
    return Promise.all([...this.sdsPeers].map(([sdsId, peer]) => this.pushMapTo(sdsId, peer, encoded))).then(() => undefined);
  }

  /**
   * The binary form of the current map. Published again only when a command was applied
   * since (or the epoch moved without one: a state changed under this service), and then
   * only encoded: MapUpdates.publish keeps the same map (same epoch and digest) as it is.
   */
  private currentMapUpdates(): MapUpdates {
    if (this.mapMaybeChanged || this.mapUpdates.held?.epoch !== this.state.model.epoch) {
      const map = this.state.placementMap();
      // The very object published (a state machine that caches its map while nothing changed):
      // nothing to encode.
      if (map !== this.mapUpdates.map) this.mapUpdates.publish(map);
      this.mapMaybeChanged = false;
    }
    return this.mapUpdates;
  }

  /**
   * Brings a peer that takes binary maps to the current map: the update from what it holds,
   * computed when sent, after its previous update was answered (one at a time per peer), so
   * a burst of epochs costs it one chain of deltas rather than updates sent blind. `confirm`:
   * sent even when it holds the map (an empty update), for the snapshot barrier, whose Ok
   * means the freeze has drained there. A refusal names what the peer holds: it gets one more
   * update from there (the whole map if the MDM has no delta from it). Resolves with the last
   * answer, or null when none came (logged).
   */
  private sendMapUpdate(target: PeerMap, op: number, who: Record<string, string>, options: { timeoutMs: number; confirm: boolean }): Promise<WireResponse | null> {
    const run = target.sending.then(() => this.sendMapUpdateNow(target, op, who, options));
    target.sending = run.catch(() => undefined);
    return run;
  }

  private async sendMapUpdateNow(target: PeerMap, op: number, who: Record<string, string>, options: { timeoutMs: number; confirm: boolean }): Promise<WireResponse | null> {
    for (let attempt = 1; ; attempt++) {
      if (!this.mayAct()) return null;
      const updates = this.currentMapUpdates();
      const update = updates.updateFor(target.held);
      if (update.kind === 'current' && !options.confirm) return { status: SdsStatus.Ok, payload: Buffer.alloc(0) };
      const epoch = updates.held?.epoch;
      let response: WireResponse;
      try {
        response = await target.peer.request(op, mapUpdateFrames(update), { timeoutMs: options.timeoutMs });
      } catch (err) {
        // It may have taken it or not: the whole map next time.
        target.held = null;
        this.options.log.warn({ err, ...who, epoch }, 'map update failed');
        return null;
      }
      if (response.status === SdsStatus.Ok) {
        target.held = heldOfReply(response.payload);
        return response;
      }
      const refusal = parseMapRefusal(response.payload);
      target.held = refusal?.held ?? null;
      this.options.log.warn({ ...who, epoch, update: update.kind, status: response.status, code: refusal?.code, reason: refusal?.message ?? response.payload.toString().slice(0, 200) }, 'the peer refused the map update');
      if (refusal === null || attempt >= 2) return response;
    }
  }

  /** The current map as SetMap carries it, with its epoch. */
  private encodedMap(): { epoch: number; payload: Buffer } {
    const map = this.state.placementMap();
    return { epoch: map.epoch, payload: Buffer.from(JSON.stringify(map)) };
  }

  private pushMapTo(sdsId: Id, peer: WirePeer, encoded = once(() => this.encodedMap())): Promise<void> {
    if (!this.mayAct()) return Promise.resolve();
    const target = this.sdsMaps.get(sdsId);
    if (target !== undefined && target.peer === peer) {
      // Refusals and failures are logged there; the next epoch's update starts from what it said.
      return this.sendMapUpdate(target, SdsOp.SetMapBinary, { sdsId }, { timeoutMs: sdsOrderTimeoutMs, confirm: false }).then(
        () => undefined,
        (err: unknown) => this.options.log.error({ err, sdsId }, 'could not make the map update'),
      );
    }
    const { epoch, payload } = encoded();
    this.options.log.debug({ sdsId, epoch }, 'map pushed to an SDS');
    return peer.request(SdsOp.SetMap, payload, { timeoutMs: sdsOrderTimeoutMs }).then(
      (response) => {
        if (response.status !== SdsStatus.Ok) this.options.log.warn({ sdsId, epoch, status: response.status, reason: response.payload.toString() }, 'SDS refused the map');
      },
      (err: unknown) => this.options.log.warn({ err, sdsId, epoch }, 'map push failed'),
    );
  }

  // --- stopping --------------------------------------------------------------------------

  async close(): Promise<void> {
    if (this.healthTimer !== null) clearInterval(this.healthTimer);
    if (this.syncedTimer !== null) clearTimeout(this.syncedTimer);
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    await this.executing;
    for (const peer of this.sdsPeers.values()) peer.destroy();
    for (const entry of this.sdcPeers.values()) entry.peer.destroy();
    for (const socket of this.sockets) socket.destroy();
    await stopped;
    await this.commandLog.close();
  }

  destroy(): void {
    if (this.healthTimer !== null) clearInterval(this.healthTimer);
    if (this.syncedTimer !== null) clearTimeout(this.syncedTimer);
    this.server.close();
    for (const socket of this.sockets) socket.destroy();
  }
}

/** An SDC view's JSON but its map: viewJson() puts the map between them. */
interface ViewJsonParts {
  head: string;
  tail: string;
}

/** JSON.stringify(sdcView), from its parts and the map's JSON. */
function viewJson(rest: ViewJsonParts, mapJson: string): string {
  return `${rest.head}"map":${mapJson},${rest.tail}`;
}

/** An SdcMaplessView's JSON: the view for an SDC that takes binary maps. */
function maplessViewJson(rest: ViewJsonParts, held: MapHeld | null): string {
  assert(held !== null, 'a view is made once a map was published');
  return `${rest.head}"mapHeld":${JSON.stringify(held)},${rest.tail}`;
}

/** What a peer that takes binary maps holds, for the MDM's tracking of it. */
interface PeerMap {
  peer: WirePeer;
  /** What it said it holds last (null: no map, or unknown: it gets the whole map). */
  held: MapHeld | null;
  /** The last update sent to it: the next waits for its answer. */
  sending: Promise<unknown>;
}

/** What a peer's Ok to a binary map update says it holds (unreadable: unknown, the whole map next). */
function heldOfReply(payload: Buffer): MapHeld | null {
  try {
    return parseMapHeld(JSON.parse(payload.toString('utf8')), 'reply');
  } catch {
    return null;
  }
}

/** `make()` run once, on first use. */
function once<T>(make: () => T): () => T {
  let made: { value: T } | null = null;
  return () => (made ??= { value: make() }).value;
}
