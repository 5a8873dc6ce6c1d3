// The MDM's state machine: every change to the system is a command applied here, and
// nothing else changes the model. It reads no clock and opens no socket: time comes in on
// the command (`nowMs`), ids are derived from the cluster id and a counter, and placement
// is a pure function, so replaying the journal's commands rebuilds the same state, and a
// seeded simulation can drive it (TigerBeetle's rule: state machines do no I/O).
//
// Two ways in, both here so that this file stays the only code writing the model:
// - apply(command): a durable change, journaled by the caller before it is acknowledged.
// - observe(observation): what the MDM sees of the running system (connections, heartbeat
//   times, bytes in use). Not journaled: every SDS beats every second, and journaling that
//   would turn the journal into a heartbeat log. The volatile fields (volatileFields in
//   model.ts) are therefore not what replay restores: after a restart (or when another MDM
//   takes over) everything is disconnected until it calls, which `connectionsLost` says.
//   Decisions that depend on time and observations are made in health.ts, and come back
//   here as commands.
//
// Commands are validated here (names, ranges, references, capacity); a refused command
// throws MdmError and changes nothing: validation happens before the first mutation, and
// the few commands that re-plan pools (which can refuse mid-way) are undone by apply().

import { createHash } from 'node:crypto';
import { assert } from '../common/assert.js';
import { InvalidArgumentError, MeshblockError, type ErrorCode, type MeshblockCode } from '../common/errors.js';
import { MiB, formatBytes } from '../common/units.js';
import { qosLimitsProblem, type QosLimits } from '../common/qos-limits.js';
import { parseScrubPolicy, placementGroupOf, type PlacementMap, type ScrubPolicy, type VTreeMap } from '../wire/placement.js';
import {
  emptyModel,
  removeModes,
  upgradeModel,
  scrubPolicyOf,
  type AccessMode,
  type Device,
  ioPriorityPolicyNames,
  type IoPriorityPolicy,
  type IoPriorityPolicyName,
  type Id,
  type Mapping,
  type PoolGroup,
  type RemoveMode,
  type Sds,
  type SdsState,
  type SnapshotBarrier,
  type SnapshotDef,
  type StoragePool,
  type SystemModel,
  type Volume,
  type VolumeType,
  type VTree,
} from './model.js';
import { failureDomainOf, failureDomainsNoun, planPlacement, type DomainMember, type PlannerDevice } from './placement-planner.js';
import { isName, nameRule } from '../common/names.js';
import { ioPriorityBandwidthPerDeviceKbpsDefault, ioPriorityBandwidthPerDeviceKbpsMax, ioPriorityConcurrentIosPerDeviceDefault, ioPriorityConcurrentIosPerDeviceMax, nameBytesMax, pgCountDefault, pgCountMax, snapshotGroupVolumesMax, snapshotsPerVtreeMax, sparePercentDefault, volumeGranularityBytesDefault, vtreeGenerationsMax } from '../common/limits.js';

/** A refused command: `code` is stable, `httpStatus` is what the REST API answers. */
export class MdmError extends MeshblockError {
  constructor(
    // MeshblockCode, not only MB_ERR_*: an SDS's refusal of a device is passed on with its
    // code (parseDeviceRefusal), and that may be an errno name.
    code: MeshblockCode,
    message: string,
    readonly httpStatus: number,
  ) {
    super(code, message);
  }
}


/**
 * Volume (and snapshot) names: ScaleIO's 31 characters, and the base64 alphabet in them
 * (`+`, `/`, `=`), because Cinder's PowerFlex driver names every volume and snapshot with the
 * base64 of its UUID (24 characters, and they may start with `+` or `/`). Never `%` (a name in
 * a URL, percent-encoded once or twice as ScaleIO's clients do, then decodes one way only),
 * `,` or `:` (getByName's separators), a space, or a leading `-` (a CLI flag) or `.`.
 */
export const volumeNamePattern = /^[A-Za-z0-9+/][A-Za-z0-9_.+/=-]*$/;
export const volumeNameRule = `1 to ${nameBytesMax} letters, digits, '_', '.', '-', '+', '/' or '=', starting with a letter, a digit, '+' or '/'`;

export type Command =
  | { type: 'addProtectionDomain'; name: string }
  | { type: 'renameProtectionDomain'; id: Id; name: string }
  | { type: 'removeProtectionDomain'; id: Id }
  | { type: 'addStoragePool'; protectionDomainId: Id; name: string; chunkBytes?: number; sparePercent?: number; zeroPadding?: boolean; volumeGranularityBytes?: number; pgCount?: number }
  | { type: 'renameStoragePool'; id: Id; name: string }
  | { type: 'setStoragePoolSpare'; id: Id; sparePercent: number }
  | { type: 'removeStoragePool'; id: Id }
  | { type: 'addFaultSet'; protectionDomainId: Id; name: string }
  | { type: 'removeFaultSet'; id: Id }
  /** `host`: the SDS's host label (SdsRegistration.host); absent (and in journals from before labels) means none. */
  | { type: 'registerSds'; sdsId: Id; name: string; address: string; nowMs: number; host?: string | null }
  | { type: 'addSds'; sdsId: Id; protectionDomainId: Id; faultSetId: Id | null }
  | { type: 'renameSds'; id: Id; name: string }
  | { type: 'removeSds'; id: Id }
  | { type: 'addDevice'; deviceId: Id; sdsId: Id; storagePoolId: Id; path: string; name: string | null; capacityBytes: number }
  | { type: 'removeDevice'; id: Id }
  | { type: 'registerSdc'; guid: string; name: string | null; nowMs: number }
  | { type: 'renameSdc'; id: Id; name: string }
  | { type: 'removeSdc'; id: Id }
  | { type: 'addVolume'; storagePoolId: Id; name: string; sizeBytes: number; volumeType: VolumeType; nowMs: number }
  | { type: 'renameVolume'; id: Id; name: string }
  | { type: 'setVolumeSize'; id: Id; sizeBytes: number }
  /** ScaleIO's removeMode (default ONLY_ME); refused if any volume it would remove is mapped. */
  | { type: 'removeVolume'; id: Id; removeMode?: RemoveMode }
  | { type: 'addMappedSdc'; volumeId: Id; sdcId: Id; accessMode: AccessMode; allowMultipleMappings: boolean }
  | { type: 'removeMappedSdc'; volumeId: Id; sdcId: Id }
  /**
   * The QoS of one mapping, every field at once (the REST layer fills in what a request left
   * out). The burst fields are absent from commands journaled before bursts: no burst.
   */
  | { type: 'setMappedSdcLimits'; volumeId: Id; sdcId: Id; iopsLimit: number; bandwidthLimitKbps: number; iopsBurst?: number; bandwidthBurstKbps?: number; burstSeconds?: number }
  | { type: 'sdsDown'; sdsId: Id; nowMs: number; reason: string }
  | { type: 'sdsOut'; sdsId: Id }
  | { type: 'deviceFailed'; deviceId: Id; reason: string }
  | { type: 'repairPool'; poolId: Id }
  | { type: 'copiesSynced'; poolId: Id; groups: Array<{ pgIndex: number; secondaryDevice: Id; orderEpoch: number }> }
  // --- snapshots (docs/snapshots.md) ---
  /** Phase 1 of snapshotVolumes: checks everything, records the barrier, freezes the V-Trees (epoch moves). Applied.id is the group id. */
  | { type: 'beginSnapshot'; defs: SnapshotDef[]; nowMs: number }
  /** Phase 2, once every SDS confirmed the freeze: creates the snapshots, unfreezes (epoch moves). Applied.ids are the new volumes, in defs' order. */
  | { type: 'commitSnapshot'; groupId: Id; nowMs: number }
  /** Phase 2 otherwise (an SDS did not confirm, or a new Master found the barrier): unfreezes, creates nothing (epoch moves). */
  | { type: 'abortSnapshot'; groupId: Id; reason: string }
  /** ScaleIO's removeConsistencyGroupSnapshots: every volume the group made; refused if any is mapped. Applied.ids are the removed. */
  | { type: 'removeSnapshotGroup'; groupId: Id }
  /** Restore: `volumeId` gets the content of `sourceVolumeId`, of the same V-Tree; metadata only (epoch moves). */
  | { type: 'overwriteVolumeContent'; volumeId: Id; sourceVolumeId: Id }
  | { type: 'setVolumeAccessModeLimit'; id: Id; accessModeLimit: AccessMode }
  /** Snapshots per V-Tree from now on (1..snapshotsPerVtreeMax); trees above a lowered limit keep theirs. */
  | { type: 'setSnapshotsPerVtree'; limit: number }
  // --- rebuild and rebalance IO priority (docs/rebuild-policy.md) ---
  /**
   * ScaleIO's setRebuildIoPriorityPolicy / setRebalanceIoPriorityPolicy. A number left out
   * keeps the pool's (or, on a pool never set, ScaleIO's default), so replaying the command
   * on the same model gives the same policy.
   */
  | { type: 'setIoPriorityPolicy'; poolId: Id; kind: FillKind; policy: IoPriorityPolicyName; concurrentIosPerDevice?: number; bandwidthPerDeviceKbps?: number }
  // --- the background scrub (docs/integrity.md) ---
  /**
   * ScaleIO's enable/disableBackgroundDeviceScanner and its bandwidth limit. A rate left out
   * keeps the pool's (or, on a pool never set, scrubRateKBpsDefault), so replaying the
   * command on the same model gives the same policy. The map's epoch moves when the policy
   * changes: the SDSs learn it from the map.
   */
  | { type: 'setScrubPolicy'; poolId: Id; mode: ScrubPolicy['mode']; rateKBps?: number };

/** Which policy of a pool throttles a fill: the group short of a copy, or a healthy copy moving. */
export type FillKind = 'rebuild' | 'rebalance';

/**
 * What the MDM saw, applied with observe(): volatile, never journaled. Heartbeats carry
 * their arrival time (the state machine reads no clock) and the bytes each device holds.
 */
export type Observation =
  | { type: 'sdsHeartbeat'; sdsId: Id; nowMs: number; devices: Array<{ deviceId: Id; usedBytes: number; snapshotBytes?: number }> }
  /** Its connection dropped, or it went silent while holding nothing (so it is not declared down). */
  | { type: 'sdsDisconnected'; sdsId: Id }
  | { type: 'sdcHeartbeat'; sdcId: Id; nowMs: number }
  | { type: 'sdcDisconnected'; sdcId: Id }
  /** The MDM (re)started or took over: no connection survived, everyone must call again. */
  | { type: 'connectionsLost' };

/** Commands that may refuse after a first change (they re-plan pools): apply() undoes them. */
const replanningCommands: ReadonlySet<Command['type']> = new Set(['registerSds', 'removeSds', 'removeDevice', 'sdsOut', 'deviceFailed', 'copiesSynced']);

/** What a command created, when it created something. */
export interface Applied {
  id?: Id;
  /** Several objects made or removed (commitSnapshot: the snapshots; removals: the volumes removed), in order. */
  ids?: Id[];
  epochChanged: boolean;
}

export interface PoolCapacity {
  rawBytes: number;
  spareBytes: number;
  /** Net capacity for volume data (two copies): (raw - spare) / 2. */
  usableBytes: number;
  thickReservedBytes: number;
  thinProvisionedBytes: number;
  /** Net bytes of chunks written, from the SDSs' reports (half the raw bytes in use). */
  inUseBytes: number;
  /** Raw bytes in use in groups that have both copies. */
  protectedBytes: number;
  /** Bytes of data with one copy in sync (degraded, or its second copy still filling). */
  degradedBytes: number;
  /** Bytes of data with no readable copy (its SDSs down, or lost): IO to it fails. */
  failedBytes: number;
  /** Raw bytes neither spare, in use, nor reserved for thick volumes. */
  unusedBytes: number;
  /** Net bytes that only snapshots reach (ScaleIO's snapCapacityInUse), from the SDSs' reports; 0 until they report it. */
  snapshotInUseBytes: number;
  /** Sizes of the pool's snapshots (thin, whatever their ancestor), like thinProvisionedBytes for base volumes. */
  snapshotProvisionedBytes: number;
}

export interface PoolHealth {
  groups: number;
  /** Groups with one copy in sync (no secondary, or it is filling or away). */
  degradedGroups: number;
  /** Groups whose secondary is being filled (rebuild or rebalance). */
  syncingGroups: number;
  /** Groups with no readable copy: their SDSs are down, or the data is lost. */
  failedGroups: number;
  degradedBytes: number;
  failedBytes: number;
}

/**
 * Commands that never change what placementMap() returns: they touch names, SDCs, mappings,
 * policies of the SDSs' IO or pools without groups, none of which is in the map. After one of
 * these the cached map is kept (a fleet's SDCs registering must not rebuild a 262,144-group
 * map each). Any command not listed invalidates it, so a command added later is safe by
 * default. addVolume is listed: a new V-Tree of one generation is implicit (not in the map).
 */
const mapNeutralCommands: ReadonlySet<Command['type']> = new Set([
  'addProtectionDomain',
  'renameProtectionDomain',
  'removeProtectionDomain',
  'addStoragePool',
  'renameStoragePool',
  'setStoragePoolSpare',
  'addFaultSet',
  'removeFaultSet',
  'renameSds',
  'registerSdc',
  'renameSdc',
  'removeSdc',
  'addVolume',
  'renameVolume',
  'setVolumeSize',
  'addMappedSdc',
  'removeMappedSdc',
  'setMappedSdcLimits',
  'setVolumeAccessModeLimit',
  'setSnapshotsPerVtree',
  'setIoPriorityPolicy',
]);

/**
 * Commands whose every change to the map moves the epoch (they re-plan, fail over or give an
 * SDS a new address, and each of those moves it): applied without moving the epoch, they left
 * the map as it was (a registration of an SDS already known, an sdsOut or sdsDown repeated
 * while the first was queued), and the cached map is kept. test/mdm/state-revision.test.ts
 * checks both lists against maps built afresh.
 */
const epochTrackedCommands: ReadonlySet<Command['type']> = new Set(['registerSds', 'addSds', 'removeSds', 'removeDevice', 'sdsDown', 'sdsOut', 'deviceFailed', 'repairPool', 'copiesSynced']);

/**
 * The last revision given to any state machine of this process: revisions are unique across
 * instances, so a number remembered from one StateMachine never matches another's state (an
 * MDM that loses and regains mastership builds a new one from the journal).
 */
let revisionLast = 0;

export class StateMachine {
  /** Set while replay() applies a journaled command: capacity is not checked again. */
  private replaying = false;
  /** See `revision`. */
  private revisionNow = ++revisionLast;
  /** The revision of the last command that may have changed the map (not in mapNeutralCommands). */
  private mapRevision = this.revisionNow;
  /** placementMap()'s last answer and the mapRevision it was built at. */
  private mapCached: { revision: number; map: PlacementMap } | null = null;
  /**
   * By SDC, the ids of the volumes mapped to it (sdcMappings()): built from the model at the
   * first question, then kept by the commands that map and unmap (the only writers of
   * mappings). An entry may outlive its volume or mapping for a moment; sdcMappings() checks
   * each against the model, so a stale entry is skipped, never shown.
   */
  private mappedBySdc: Map<Id, Set<Id>> | null = null;

  /** Takes a model as loaded (journal, etcd): one written before snapshots is brought to the current shape first. */
  constructor(readonly model: SystemModel) {
    upgradeModel(model);
  }

  static create(clusterId: Id, name: string): StateMachine {
    return new StateMachine(emptyModel(clusterId, name));
  }

  /**
   * The command may refuse after its first change (it may re-plan a pool), so apply() keeps a
   * copy to undo it. A registration of a new SDS, or of a known one that is up and keeps its
   * host label, re-plans nothing and checks everything before its first change: no copy. That
   * is every registration but a few in an MDM restart's storm of 1,024 SDSs calling back, where
   * copying the pools (JSON of every group and device) for each was a third of the MDM's CPU.
   */
  private mayRefuseAfterChanging(command: Command): boolean {
    if (!replanningCommands.has(command.type)) return false;
    if (command.type !== 'registerSds') return true;
    const existing = this.model.sdss[command.sdsId];
    return existing !== undefined && (isDown(existing) || (existing.host ?? null) !== (command.host ?? null));
  }

  /**
   * A number that moves (upwards) on every apply() and replay(), refused commands included,
   * and never on observe(): while it is the same, no command changed the model (only
   * volatile fields may have moved: heartbeat times, connection states, bytes in use). Unique
   * in the process across StateMachine instances. Reading it costs a field read. The model
   * written from outside the state machine (a fleet's preload) does not move it.
   */
  get revision(): number {
    return this.revisionNow;
  }

  /**
   * Records what the MDM saw. Changes only volatile fields (volatileFields): never the
   * placement, the epoch or anything a command decides. Unknown ids are ignored: a
   * heartbeat may race the removal of its SDS.
   */
  observe(observation: Observation): void {
    const model = this.model;
    switch (observation.type) {
      case 'sdsHeartbeat': {
        const sds = model.sdss[observation.sdsId];
        if (sds === undefined) return;
        sds.lastHeartbeatMs = observation.nowMs;
        sds.state = sdsState(sds, true);
        for (const reported of observation.devices) {
          const device = model.devices[reported.deviceId];
          // A device that moved to another SDS is that SDS's to report.
          if (device === undefined || device.sdsId !== sds.id) continue;
          device.usedBytes = reported.usedBytes;
          if (reported.snapshotBytes !== undefined) device.snapshotBytes = reported.snapshotBytes;
        }
        return;
      }
      case 'sdsDisconnected': {
        const sds = model.sdss[observation.sdsId];
        if (sds !== undefined) sds.state = sdsState(sds, false);
        return;
      }
      case 'sdcHeartbeat': {
        const sdc = model.sdcs[observation.sdcId];
        if (sdc === undefined) return;
        sdc.lastSeenMs = observation.nowMs;
        sdc.state = 'connected';
        return;
      }
      case 'sdcDisconnected': {
        const sdc = model.sdcs[observation.sdcId];
        if (sdc !== undefined) sdc.state = 'disconnected';
        return;
      }
      case 'connectionsLost': {
        for (const sds of Object.values(model.sdss)) sds.state = sdsState(sds, false);
        for (const sdc of Object.values(model.sdcs)) sdc.state = 'disconnected';
        return;
      }
    }
  }

  /**
   * Applies a journaled command again (journal replay). It was accepted once; its capacity
   * check then read the bytes in use, which are volatile (heartbeats, not the journal), so
   * it is not made again: a replay must rebuild the state, not decide anew (found by the
   * seeded simulation: a thick volume accepted before a snapshot with more bytes in use made
   * the journal refuse to open). Every other check stays: they read only durable state.
   */
  replay(command: Command): Applied {
    this.replaying = true;
    try {
      return this.apply(command);
    } finally {
      this.replaying = false;
    }
  }

  /**
   * Applies a command, or refuses it (MdmError) and changes nothing. Most commands validate
   * before their first change; those that re-plan pools (which may refuse mid-way, e.g. a
   * placement that no longer fits) are undone from a copy taken before, so that the live
   * model never holds a change the journal does not (found by the seeded simulation: a
   * refused sdsOut left its SDS out in memory only).
   */
  apply(command: Command): Applied {
    // Moved before the command runs, whatever its outcome: a refused command changes nothing
    // (or is undone), but a spare revision costs only one more encoding, a missed one a stale map.
    this.revisionNow = ++revisionLast;
    const epochBefore = this.model.epoch;
    try {
      return this.applyUndoable(command);
    } finally {
      if (!mapNeutralCommands.has(command.type) && (!epochTrackedCommands.has(command.type) || this.model.epoch !== epochBefore)) this.mapRevision = this.revisionNow;
    }
  }

  private applyUndoable(command: Command): Applied {
    if (!this.mayRefuseAfterChanging(command)) return this.applyCommand(command);
    // Only what these commands change is copied: volumes (the largest table at 100k of them),
    // SDCs and domains stay out of it. The simulation checks that a refusal changes nothing.
    const { epoch, storagePools, sdss, devices } = this.model;
    const undo = JSON.stringify({ epoch, storagePools, sdss, devices });
    try {
      return this.applyCommand(command);
    } catch (err) {
      if (err instanceof MdmError) Object.assign(this.model, JSON.parse(undo) as Pick<SystemModel, 'epoch' | 'storagePools' | 'sdss' | 'devices'>);
      throw err;
    }
  }

  private applyCommand(command: Command): Applied {
    const model = this.model;
    switch (command.type) {
      case 'addProtectionDomain': {
        this.checkName('name', command.name);
        this.unique(Object.values(model.protectionDomains), command.name, 'protection domain');
        const id = this.newId();
        model.protectionDomains[id] = { id, name: command.name };
        return { id, epochChanged: false };
      }
      case 'renameProtectionDomain': {
        const domain = this.get(model.protectionDomains, command.id, 'protection domain');
        this.checkName('name', command.name);
        this.unique(Object.values(model.protectionDomains).filter((entry) => entry.id !== domain.id), command.name, 'protection domain');
        domain.name = command.name;
        return { epochChanged: false };
      }
      case 'removeProtectionDomain': {
        this.get(model.protectionDomains, command.id, 'protection domain');
        const inUse = [
          ...Object.values(model.storagePools).filter((pool) => pool.protectionDomainId === command.id).map((pool) => `storage pool '${pool.name}'`),
          ...Object.values(model.sdss).filter((sds) => sds.protectionDomainId === command.id).map((sds) => `SDS '${sds.name}'`),
          ...Object.values(model.faultSets).filter((set) => set.protectionDomainId === command.id).map((set) => `fault set '${set.name}'`),
        ];
        if (inUse.length > 0) throw conflict('MB_ERR_NOT_EMPTY', `the protection domain still holds ${inUse.join(', ')}`);
        delete model.protectionDomains[command.id];
        return { epochChanged: false };
      }
      case 'addStoragePool': {
        this.get(model.protectionDomains, command.protectionDomainId, 'protection domain');
        this.checkName('name', command.name);
        this.unique(Object.values(model.storagePools).filter((pool) => pool.protectionDomainId === command.protectionDomainId), command.name, 'storage pool in this protection domain');
        const chunkBytes = command.chunkBytes ?? MiB;
        if (!isPowerOfTwo(chunkBytes) || chunkBytes < 64 * 1024 || chunkBytes > 64 * MiB) throw invalid('chunkBytes', 'must be a power of two from 64 KiB to 64 MiB');
        const sparePercent = command.sparePercent ?? sparePercentDefault;
        if (!Number.isInteger(sparePercent) || sparePercent < 0 || sparePercent > 90) throw invalid('sparePercent', 'must be an integer from 0 to 90');
        const volumeGranularityBytes = command.volumeGranularityBytes ?? volumeGranularityBytesDefault;
        if (!Number.isSafeInteger(volumeGranularityBytes) || volumeGranularityBytes < chunkBytes || volumeGranularityBytes % chunkBytes !== 0) {
          throw invalid('volumeGranularityBytes', `must be a multiple of the chunk size (${chunkBytes})`);
        }
        const pgCount = command.pgCount ?? pgCountDefault;
        if (!isPowerOfTwo(pgCount) || pgCount < 16 || pgCount > pgCountMax) throw invalid('pgCount', `must be a power of two from 16 to ${pgCountMax}`);
        const id = this.newId();
        model.storagePools[id] = {
          id,
          name: command.name,
          protectionDomainId: command.protectionDomainId,
          chunkBytes,
          sparePercent,
          zeroPadding: command.zeroPadding ?? true,
          volumeGranularityBytes,
          pgCount,
          groups: [],
        };
        return { id, epochChanged: false };
      }
      case 'renameStoragePool': {
        const pool = this.get(model.storagePools, command.id, 'storage pool');
        this.checkName('name', command.name);
        this.unique(Object.values(model.storagePools).filter((entry) => entry.protectionDomainId === pool.protectionDomainId && entry.id !== pool.id), command.name, 'storage pool in this protection domain');
        pool.name = command.name;
        return { epochChanged: false };
      }
      case 'setStoragePoolSpare': {
        const pool = this.get(model.storagePools, command.id, 'storage pool');
        if (!Number.isInteger(command.sparePercent) || command.sparePercent < 0 || command.sparePercent > 90) throw invalid('sparePercent', 'must be an integer from 0 to 90');
        const capacity = this.poolCapacity(pool.id, { sparePercent: command.sparePercent });
        this.checkFits(capacity, 0, 'raising the spare');
        pool.sparePercent = command.sparePercent;
        return { epochChanged: false };
      }
      case 'removeStoragePool': {
        const pool = this.get(model.storagePools, command.id, 'storage pool');
        const devices = this.poolDevices(pool.id);
        const volumes = Object.values(model.volumes).filter((volume) => volume.storagePoolId === pool.id);
        if (devices.length > 0 || volumes.length > 0) throw conflict('MB_ERR_NOT_EMPTY', `storage pool '${pool.name}' still has ${devices.length} device(s) and ${volumes.length} volume(s)`);
        delete model.storagePools[pool.id];
        return { epochChanged: false };
      }
      case 'addFaultSet': {
        this.get(model.protectionDomains, command.protectionDomainId, 'protection domain');
        this.checkName('name', command.name);
        this.unique(Object.values(model.faultSets).filter((set) => set.protectionDomainId === command.protectionDomainId), command.name, 'fault set in this protection domain');
        const id = this.newId();
        model.faultSets[id] = { id, name: command.name, protectionDomainId: command.protectionDomainId };
        return { id, epochChanged: false };
      }
      case 'removeFaultSet': {
        const set = this.get(model.faultSets, command.id, 'fault set');
        const members = Object.values(model.sdss).filter((sds) => sds.faultSetId === set.id);
        if (members.length > 0) throw conflict('MB_ERR_NOT_EMPTY', `fault set '${set.name}' still holds SDS ${members.map((sds) => `'${sds.name}'`).join(', ')}`);
        delete model.faultSets[set.id];
        return { epochChanged: false };
      }
      case 'registerSds': {
        this.checkName('name', command.name);
        const host = command.host ?? null;
        if (host !== null) this.checkName('host', host);
        const existing = model.sdss[command.sdsId];
        const clash = Object.values(model.sdss).find((sds) => sds.name === command.name && sds.id !== command.sdsId);
        if (clash !== undefined) throw conflict('MB_ERR_NAME_TAKEN', `an SDS named '${command.name}' is already registered (id ${clash.id})`);
        if (existing === undefined) {
          model.sdss[command.sdsId] = { id: command.sdsId, name: command.name, protectionDomainId: null, faultSetId: null, host, address: command.address, state: 'connected', lastHeartbeatMs: command.nowMs };
          return { id: command.sdsId, epochChanged: false };
        }
        const moved = existing.address !== command.address;
        const hostBefore = existing.host ?? null;
        existing.name = command.name;
        existing.address = command.address;
        existing.host = host;
        existing.lastHeartbeatMs = command.nowMs;
        let epochChanged = false;
        // Registering is how a down SDS comes back.
        if (isDown(existing)) {
          this.sdsReturns(existing);
          epochChanged = true;
        }
        existing.state = sdsState(existing, true);
        if (host !== hostBefore && this.onHostChanged(existing, hostBefore)) epochChanged = true;
        if (!epochChanged && moved && this.sdsInUse(existing.id)) model.epoch += 1;
        return { id: existing.id, epochChanged: epochChanged || moved };
      }
      case 'addSds': {
        const sds = this.get(model.sdss, command.sdsId, 'SDS');
        this.get(model.protectionDomains, command.protectionDomainId, 'protection domain');
        if (sds.protectionDomainId !== null && sds.protectionDomainId !== command.protectionDomainId) {
          throw conflict('MB_ERR_SDS_ASSIGNED', `SDS '${sds.name}' already belongs to another protection domain`);
        }
        if (command.faultSetId !== null) {
          const set = this.get(model.faultSets, command.faultSetId, 'fault set');
          if (set.protectionDomainId !== command.protectionDomainId) throw invalid('faultSetId', `fault set '${set.name}' is in another protection domain`);
          if (this.sdsDevices(sds.id).length > 0 && sds.faultSetId !== command.faultSetId) throw conflict('MB_ERR_SDS_IN_USE', `SDS '${sds.name}' has devices; remove them before changing its fault set`);
        }
        const hostClash = this.hostFaultSetClash(sds, command.protectionDomainId, command.faultSetId);
        if (hostClash !== null) throw conflict('MB_ERR_HOST_FAULT_SET', `SDS '${sds.name}' cannot go to ${hostClash}`);
        sds.protectionDomainId = command.protectionDomainId;
        sds.faultSetId = command.faultSetId;
        return { id: sds.id, epochChanged: false };
      }
      case 'renameSds': {
        const sds = this.get(model.sdss, command.id, 'SDS');
        this.checkName('name', command.name);
        this.unique(Object.values(model.sdss).filter((entry) => entry.id !== sds.id), command.name, 'SDS');
        sds.name = command.name;
        return { epochChanged: false };
      }
      case 'removeSds': {
        const sds = this.get(model.sdss, command.id, 'SDS');
        const devices = this.sdsDevices(sds.id);
        if (devices.length === 0) {
          delete model.sdss[sds.id];
          return { epochChanged: false };
        }
        if (sds.removing === true) return { epochChanged: false };
        // ScaleIO's graceful removal: its data moves away first, then it goes.
        this.beginRemoval(devices, `removing SDS '${sds.name}'`);
        // Marked after the checks (a refusal changes nothing); goes now if its devices did.
        sds.removing = true;
        this.finishRemovals();
        return { epochChanged: true };
      }
      case 'addDevice': {
        const sds = this.get(model.sdss, command.sdsId, 'SDS');
        const pool = this.get(model.storagePools, command.storagePoolId, 'storage pool');
        if (sds.protectionDomainId !== pool.protectionDomainId) throw invalid('storagePoolId', `SDS '${sds.name}' is not in the storage pool's protection domain`);
        if (model.devices[command.deviceId] !== undefined) throw conflict('MB_ERR_DEVICE_EXISTS', `device ${command.deviceId} is already in the system`);
        if (this.sdsDevices(sds.id).some((device) => device.path === command.path)) throw conflict('MB_ERR_DEVICE_EXISTS', `SDS '${sds.name}' already has a device at ${command.path}`);
        if (!Number.isSafeInteger(command.capacityBytes) || command.capacityBytes < pool.chunkBytes) throw invalid('capacityBytes', 'must hold at least one chunk');
        const taken = new Set(this.sdsDevices(sds.id).map((device) => device.name));
        let name = command.name;
        if (name === null) {
          // ScaleIO device names are optional; ours default to '<sds>-d<n>', unique on the SDS.
          let index = 1;
          while (taken.has(`${sds.name.slice(0, nameBytesMax - 6)}-d${index}`)) index += 1;
          name = `${sds.name.slice(0, nameBytesMax - 6)}-d${index}`;
        } else {
          this.checkName('name', name);
          if (taken.has(name)) throw conflict('MB_ERR_NAME_TAKEN', `SDS '${sds.name}' already has a device named '${name}'`);
        }
        const device: Device = { id: command.deviceId, name, sdsId: sds.id, storagePoolId: pool.id, path: command.path, capacityBytes: command.capacityBytes, state: 'normal', usedBytes: 0 };
        this.refuseWhileDown(pool, `adding device ${command.path}`);
        this.replan(pool, [...this.poolDevices(pool.id), device]);
        model.devices[device.id] = device;
        return { id: device.id, epochChanged: true };
      }
      case 'removeDevice': {
        const device = this.get(model.devices, command.id, 'device');
        if (device.state === 'removing') return { epochChanged: false };
        this.beginRemoval([device], `removing device '${device.name}'`);
        return { epochChanged: true };
      }
      case 'registerSdc': {
        if (typeof command.guid !== 'string' || command.guid.length < 8 || command.guid.length > 64) throw invalid('guid', 'must be 8 to 64 characters');
        const existing = Object.values(model.sdcs).find((sdc) => sdc.guid === command.guid);
        const name = command.name ?? existing?.name ?? `sdc-${command.guid.slice(0, 8)}`;
        this.checkName('name', name);
        this.unique(Object.values(model.sdcs).filter((sdc) => sdc.guid !== command.guid), name, 'SDC');
        if (existing !== undefined) {
          existing.name = name;
          existing.state = 'connected';
          existing.lastSeenMs = command.nowMs;
          return { id: existing.id, epochChanged: false };
        }
        const id = this.newId();
        model.sdcs[id] = { id, guid: command.guid, name, state: 'connected', lastSeenMs: command.nowMs };
        return { id, epochChanged: false };
      }
      case 'renameSdc': {
        const sdc = this.get(model.sdcs, command.id, 'SDC');
        this.checkName('name', command.name);
        this.unique(Object.values(model.sdcs).filter((entry) => entry.id !== sdc.id), command.name, 'SDC');
        sdc.name = command.name;
        return { epochChanged: false };
      }
      case 'removeSdc': {
        const sdc = this.get(model.sdcs, command.id, 'SDC');
        const mapped = this.sdcMappings(sdc.id).map(({ volume }) => volume);
        if (mapped.length > 0) throw conflict('MB_ERR_SDC_MAPPED', `SDC '${sdc.name}' still has volume(s) ${mapped.map((volume) => `'${volume.name}'`).join(', ')} mapped`);
        delete model.sdcs[sdc.id];
        this.mappedBySdc?.delete(sdc.id);
        return { epochChanged: false };
      }
      case 'addVolume': {
        const pool = this.get(model.storagePools, command.storagePoolId, 'storage pool');
        this.checkVolumeName('name', command.name);
        this.checkVolumeNameFree(command.name, null);
        if (command.volumeType !== 'ThinProvisioned' && command.volumeType !== 'ThickProvisioned') throw invalid('volumeType', "must be 'ThinProvisioned' or 'ThickProvisioned'");
        const sizeBytes = this.roundVolumeSize(pool, command.sizeBytes);
        if (command.volumeType === 'ThickProvisioned') this.checkFits(this.poolCapacity(pool.id), sizeBytes, `a ${formatBytes(sizeBytes)} thick volume`);
        if (pool.groups.length === 0) throw conflict('MB_ERR_POOL_NOT_READY', `storage pool '${pool.name}' needs devices on at least two ${this.domainsNoun(this.poolDevices(pool.id))} before it can hold volumes`);
        const id = this.newId();
        const vtreeId = this.newId();
        const volume: Volume = {
          id,
          name: command.name,
          storagePoolId: pool.id,
          vtreeId,
          sizeBytes,
          volumeType: command.volumeType,
          mappings: [],
          creationTimeMs: command.nowMs,
          ancestorVolumeId: null,
          generation: 0,
          accessModeLimit: 'ReadWrite',
          snapshotGroupId: null,
        };
        model.volumes[id] = volume;
        // A new tree of one generation is not in the map (vtreeOf() gives it): the epoch stays.
        model.vtrees[vtreeId] = { id: vtreeId, storagePoolId: pool.id, nextGeneration: 1, generations: { '0': null } };
        return { id, epochChanged: false };
      }
      case 'renameVolume': {
        const volume = this.get(model.volumes, command.id, 'volume');
        this.checkVolumeName('name', command.name);
        this.checkVolumeNameFree(command.name, volume.id);
        volume.name = command.name;
        return { epochChanged: false };
      }
      case 'setVolumeSize': {
        const volume = this.get(model.volumes, command.id, 'volume');
        const pool = this.get(model.storagePools, volume.storagePoolId, 'storage pool');
        const sizeBytes = this.roundVolumeSize(pool, command.sizeBytes);
        if (sizeBytes < volume.sizeBytes) throw invalid('sizeBytes', `volumes only grow (from ${formatBytes(volume.sizeBytes)}); shrinking would destroy data`);
        if (volume.volumeType === 'ThickProvisioned') this.checkFits(this.poolCapacity(pool.id), sizeBytes - volume.sizeBytes, `growing thick volume '${volume.name}'`);
        volume.sizeBytes = sizeBytes;
        return { epochChanged: false };
      }
      case 'removeVolume': {
        const volume = this.get(model.volumes, command.id, 'volume');
        const removeMode = command.removeMode ?? 'ONLY_ME';
        if (!removeModes.includes(removeMode)) throw invalid('removeMode', `must be one of ${removeModes.join(', ')}`);
        const tree = this.treeOf(volume);
        this.refuseWhileFrozen(tree, `removing volume '${volume.name}'`);
        const treeVolumes = this.treeVolumes(tree.id);
        const descendants = descendantsOf(volume.id, treeVolumes);
        const doomed =
          removeMode === 'ONLY_ME' ? [volume] : removeMode === 'INCLUDING_DESCENDANTS' ? [volume, ...descendants] : removeMode === 'DESCENDANTS_ONLY' ? descendants : treeVolumes;
        this.refuseMapped(doomed, volume, `removing volume '${volume.name}' (${removeMode})`);
        const ids = doomed.map((entry) => entry.id);
        const epochChanged = this.removeVolumes(tree, doomed);
        return { ids, epochChanged };
      }
      case 'addMappedSdc': {
        const volume = this.get(model.volumes, command.volumeId, 'volume');
        const sdc = this.get(model.sdcs, command.sdcId, 'SDC');
        if (command.accessMode !== 'ReadWrite' && command.accessMode !== 'ReadOnly') throw invalid('accessMode', "must be 'ReadWrite' or 'ReadOnly'");
        if (command.accessMode === 'ReadWrite' && volume.accessModeLimit === 'ReadOnly') {
          throw conflict('MB_ERR_VOLUME_READ_ONLY', `volume '${volume.name}' is read-only (accessModeLimit ReadOnly): map it with accessMode ReadOnly`);
        }
        if (volume.mappings.some((mapping) => mapping.sdcId === sdc.id)) throw conflict('MB_ERR_ALREADY_MAPPED', `volume '${volume.name}' is already mapped to SDC '${sdc.name}'`);
        if (volume.mappings.length > 0 && !command.allowMultipleMappings) {
          throw conflict('MB_ERR_MULTIPLE_MAPPINGS', `volume '${volume.name}' is already mapped to another SDC; pass allowMultipleMappings to share it`);
        }
        volume.mappings.push({ sdcId: sdc.id, accessMode: command.accessMode, iopsLimit: 0, bandwidthLimitKbps: 0, iopsBurst: 0, bandwidthBurstKbps: 0, burstSeconds: 0 });
        this.indexMapping(sdc.id, volume.id, true);
        return { epochChanged: false };
      }
      case 'removeMappedSdc': {
        const volume = this.get(model.volumes, command.volumeId, 'volume');
        const at = volume.mappings.findIndex((mapping) => mapping.sdcId === command.sdcId);
        if (at === -1) throw notFound(`volume '${volume.name}' is not mapped to SDC ${command.sdcId}`);
        volume.mappings.splice(at, 1);
        this.indexMapping(command.sdcId, volume.id, false);
        return { epochChanged: false };
      }
      case 'setMappedSdcLimits': {
        const volume = this.get(model.volumes, command.volumeId, 'volume');
        const mapping: Mapping | undefined = volume.mappings.find((entry) => entry.sdcId === command.sdcId);
        if (mapping === undefined) throw notFound(`volume '${volume.name}' is not mapped to SDC ${command.sdcId}`);
        const limits: QosLimits = {
          iopsLimit: command.iopsLimit,
          bandwidthLimitKbps: command.bandwidthLimitKbps,
          iopsBurst: command.iopsBurst ?? 0,
          bandwidthBurstKbps: command.bandwidthBurstKbps ?? 0,
          burstSeconds: command.burstSeconds ?? 0,
        };
        checkQosLimits(limits, this.replaying);
        Object.assign(mapping, limits);
        return { epochChanged: false };
      }
      case 'sdsDown': {
        const sds = this.get(model.sdss, command.sdsId, 'SDS');
        if (isDown(sds)) return { epochChanged: false };
        sds.downSinceMs = command.nowMs;
        sds.out = false;
        sds.state = sdsState(sds, false);
        // Its copies stop counting: a group it was primary of fails over to an in-sync
        // secondary; a copy it held is remembered as absent, to come back if it does.
        for (const pool of Object.values(model.storagePools)) {
          for (const group of pool.groups) {
            const primaryHere = this.sdsOf(group.primaryDevice) === sds.id;
            const secondaryHere = group.secondaryDevice !== null && this.sdsOf(group.secondaryDevice) === sds.id;
            if (secondaryHere) {
              group.absentDevice = group.secondaryDevice as Id;
              if (group.syncing === true) group.absentFull = true;
              group.secondaryDevice = null;
              delete group.syncing;
              delete group.syncEpoch;
              delete group.delta;
              delete group.rebalance;
            } else if (primaryHere && group.secondaryDevice !== null && group.syncing !== true) {
              group.absentDevice = group.primaryDevice;
              group.primaryDevice = group.secondaryDevice;
              group.secondaryDevice = null;
              delete group.delta;
            }
            // A group whose only in-sync copy was here is unavailable until the SDS returns.
          }
        }
        model.epoch += 1;
        return { epochChanged: true };
      }
      case 'sdsOut': {
        const sds = this.get(model.sdss, command.sdsId, 'SDS');
        if (!isDown(sds)) throw conflict('MB_ERR_SDS_UP', `SDS '${sds.name}' is not down`);
        if (sds.out === true) return { epochChanged: false };
        sds.out = true;
        // Its copies are given up: the pools re-create them on the other devices.
        const deviceIds = new Set(this.sdsDevices(sds.id).map((device) => device.id));
        for (const pool of Object.values(model.storagePools)) {
          if (!this.poolDevices(pool.id).some((device) => deviceIds.has(device.id))) continue;
          for (const group of pool.groups) {
            if (group.absentDevice === undefined || !deviceIds.has(group.absentDevice)) continue;
            delete group.absentDevice;
            delete group.absentFull;
          }
          this.replanAfterFailure(pool);
        }
        model.epoch += 1;
        return { epochChanged: true };
      }
      case 'deviceFailed': {
        const device = this.get(model.devices, command.deviceId, 'device');
        if (device.state === 'failed') return { epochChanged: false };
        device.state = 'failed';
        const pool = this.get(model.storagePools, device.storagePoolId, 'storage pool');
        for (const group of pool.groups) {
          if (group.absentDevice !== device.id) continue;
          delete group.absentDevice;
          delete group.absentFull;
        }
        this.replanAfterFailure(pool);
        model.epoch += 1;
        return { epochChanged: true };
      }
      case 'repairPool': {
        // A group on one copy that nothing will fill (no absent copy to return, no SDS of
        // the pool down): plan the pool again, which gives it a second copy.
        const pool = this.get(model.storagePools, command.poolId, 'storage pool');
        if (!this.needsRepair(pool)) return { epochChanged: false };
        this.replan(pool, this.poolDevices(pool.id));
        return { epochChanged: true };
      }
      case 'copiesSynced': {
        const pool = this.get(model.storagePools, command.poolId, 'storage pool');
        let synced = 0;
        let failedOver = false;
        for (const entry of command.groups) {
          const group = pool.groups[entry.pgIndex];
          if (group === undefined || group.syncing !== true || group.secondaryDevice !== entry.secondaryDevice) continue;
          // An order from before this fill began (the copy went away and came back since) proves nothing.
          if (entry.orderEpoch < (group.syncEpoch ?? 0)) continue;
          delete group.syncing;
          delete group.syncEpoch;
          delete group.delta;
          delete group.rebalance;
          synced += 1;
          if (!this.readable(group.primaryDevice)) {
            // Its primary's SDS went down after the fill finished but before it was recorded:
            // the group fails over to the copy now in sync, as sdsDown would have done (found
            // by the seeded simulation: the group stayed unavailable until the SDS was out).
            group.absentDevice = group.primaryDevice;
            group.primaryDevice = entry.secondaryDevice;
            group.secondaryDevice = null;
            failedOver = true;
          }
        }
        if (synced === 0) return { epochChanged: false };
        // Every copy in sync: plan once more with the same devices, which moves nothing and
        // hands primaries (reads) to the devices that just received copies.
        if (!pool.groups.some((group) => group.syncing === true) && !this.poolHasDownSds(pool)) {
          this.replan(pool, this.poolDevices(pool.id));
          this.finishRemovals();
          return { epochChanged: true };
        }
        if (failedOver) model.epoch += 1;
        return { epochChanged: failedOver };
      }
      case 'beginSnapshot': {
        const barrier = model.snapshotBarrier;
        if (barrier !== null) {
          throw conflict('MB_ERR_SNAPSHOT_BARRIER', `snapshot group ${barrier.groupId} (${barrier.defs.length} volume(s)) is being taken; try again once it ends`);
        }
        const checked = this.checkSnapshotDefs(command.defs);
        const groupId = this.newId();
        // Copied: the command object is the journal's, the model's must not alias it.
        model.snapshotBarrier = { groupId, defs: checked.map(({ def }) => ({ volumeId: def.volumeId, name: def.name, readOnly: def.readOnly })), startedMs: command.nowMs };
        model.epoch += 1;
        return { id: groupId, epochChanged: true };
      }
      case 'commitSnapshot': {
        const barrier = this.barrierOf(command.groupId);
        // Checked again: commands ran between the phases (those that would undo the checks on
        // the frozen trees are refused meanwhile, but the limit may have been lowered).
        const checked = this.checkSnapshotDefs(barrier.defs);
        const ids: Id[] = [];
        for (const { def, volume, tree } of checked) {
          // docs/snapshots.md: V (head h) gets a new head a, the snapshot a new head b, both
          // children of h, which is frozen from now on.
          const shared = volume.generation;
          volume.generation = this.newGeneration(tree, shared);
          const id = this.newId();
          model.volumes[id] = {
            id,
            name: def.name,
            storagePoolId: volume.storagePoolId,
            vtreeId: tree.id,
            sizeBytes: volume.sizeBytes,
            volumeType: 'Snapshot',
            mappings: [],
            creationTimeMs: command.nowMs,
            ancestorVolumeId: volume.id,
            generation: this.newGeneration(tree, shared),
            accessModeLimit: def.readOnly ? 'ReadOnly' : 'ReadWrite',
            snapshotGroupId: barrier.groupId,
          };
          ids.push(id);
        }
        model.snapshotBarrier = null;
        model.epoch += 1;
        return { id: barrier.groupId, ids, epochChanged: true };
      }
      case 'abortSnapshot': {
        const barrier = this.barrierOf(command.groupId);
        if (typeof command.reason !== 'string') throw invalid('reason', 'must be a string');
        model.snapshotBarrier = null;
        model.epoch += 1;
        return { id: barrier.groupId, epochChanged: true };
      }
      case 'removeSnapshotGroup': {
        if (typeof command.groupId !== 'string') throw invalid('groupId', 'must be a snapshot group id');
        if (model.snapshotBarrier?.groupId === command.groupId) throw conflict('MB_ERR_SNAPSHOT_BARRIER', `snapshot group ${command.groupId} is still being taken`);
        const members = Object.values(model.volumes).filter((volume) => volume.snapshotGroupId === command.groupId);
        if (members.length === 0) throw notFound(`no snapshot group with id ${command.groupId} (or none of its snapshots is left)`);
        const trees = [...new Set(members.map((volume) => volume.vtreeId))].map((vtreeId) => this.get(model.vtrees, vtreeId, 'V-Tree'));
        for (const tree of trees) this.refuseWhileFrozen(tree, `removing snapshot group ${command.groupId}`);
        this.refuseMapped(members, null, `removing snapshot group ${command.groupId}`);
        let epochChanged = false;
        for (const tree of trees) epochChanged = this.removeVolumes(tree, members.filter((volume) => volume.vtreeId === tree.id)) || epochChanged;
        return { ids: members.map((volume) => volume.id), epochChanged };
      }
      case 'overwriteVolumeContent': {
        const volume = this.get(model.volumes, command.volumeId, 'volume');
        const source = this.get(model.volumes, command.sourceVolumeId, 'volume');
        if (source.id === volume.id) throw invalid('sourceVolumeId', `volume '${volume.name}' cannot be overwritten with its own content`);
        if (source.vtreeId !== volume.vtreeId) {
          throw conflict('MB_ERR_VTREE_MISMATCH', `volume '${source.name}' is not of the V-Tree of '${volume.name}' (${source.vtreeId}, not ${volume.vtreeId}): a volume is overwritten only from a volume of its own tree`);
        }
        if (volume.accessModeLimit === 'ReadOnly') throw conflict('MB_ERR_VOLUME_READ_ONLY', `volume '${volume.name}' is read-only (accessModeLimit ReadOnly): its content does not change`);
        const tree = this.treeOf(volume);
        this.refuseWhileFrozen(tree, `overwriting volume '${volume.name}'`);
        this.checkGenerationRoom(tree, 2);
        // docs/snapshots.md: the source (head s) gets a new head s', the volume a new head r,
        // both children of s; the volume's old head goes if nothing descends from it.
        const shared = source.generation;
        const dropped = volume.generation;
        source.generation = this.newGeneration(tree, shared);
        volume.generation = this.newGeneration(tree, shared);
        this.prune(tree, [dropped]);
        model.epoch += 1;
        return { epochChanged: true };
      }
      case 'setVolumeAccessModeLimit': {
        const volume = this.get(model.volumes, command.id, 'volume');
        if (command.accessModeLimit !== 'ReadWrite' && command.accessModeLimit !== 'ReadOnly') throw invalid('accessModeLimit', "must be 'ReadWrite' or 'ReadOnly'");
        if (command.accessModeLimit === 'ReadOnly') {
          const writers = volume.mappings.filter((mapping) => mapping.accessMode === 'ReadWrite').map((mapping) => `'${model.sdcs[mapping.sdcId]?.name ?? mapping.sdcId}'`);
          if (writers.length > 0) throw conflict('MB_ERR_VOLUME_MAPPED', `volume '${volume.name}' is mapped read-write to SDC ${writers.join(', ')}; unmap it (or map it read-only) before making it read-only`);
        }
        volume.accessModeLimit = command.accessModeLimit;
        return { epochChanged: false };
      }
      case 'setSnapshotsPerVtree': {
        if (!Number.isSafeInteger(command.limit) || command.limit < 1 || command.limit > snapshotsPerVtreeMax) throw invalid('limit', `must be an integer from 1 to ${snapshotsPerVtreeMax}`);
        model.snapshotsPerVtree = command.limit;
        return { epochChanged: false };
      }
      case 'setIoPriorityPolicy': {
        const pool = this.get(model.storagePools, command.poolId, 'storage pool');
        if (command.kind !== 'rebuild' && command.kind !== 'rebalance') throw invalid('kind', "must be 'rebuild' or 'rebalance'");
        if (!ioPriorityPolicyNames.includes(command.policy)) throw invalid('policy', `must be ${ioPriorityPolicyNames.map((name) => `'${name}'`).join(', ')}`);
        const field = command.kind === 'rebuild' ? 'rebuildIoPriority' : 'rebalanceIoPriority';
        const current = pool[field];
        const concurrentIosPerDevice = command.concurrentIosPerDevice ?? current?.concurrentIosPerDevice ?? ioPriorityConcurrentIosPerDeviceDefault;
        const bandwidthPerDeviceKbps = command.bandwidthPerDeviceKbps ?? current?.bandwidthPerDeviceKbps ?? ioPriorityBandwidthPerDeviceKbpsDefault;
        if (!Number.isSafeInteger(concurrentIosPerDevice) || concurrentIosPerDevice < 1 || concurrentIosPerDevice > ioPriorityConcurrentIosPerDeviceMax) {
          throw invalid('concurrentIosPerDevice', `must be an integer from 1 to ${ioPriorityConcurrentIosPerDeviceMax}`);
        }
        if (!Number.isSafeInteger(bandwidthPerDeviceKbps) || bandwidthPerDeviceKbps < 1024 || bandwidthPerDeviceKbps % 1024 !== 0 || bandwidthPerDeviceKbps > ioPriorityBandwidthPerDeviceKbpsMax) {
          throw invalid('bandwidthPerDeviceKbps', `must be a multiple of 1024 KB/s (whole MiB/s) from 1024 to ${ioPriorityBandwidthPerDeviceKbpsMax}`);
        }
        const policy: IoPriorityPolicy = { policy: command.policy, concurrentIosPerDevice, bandwidthPerDeviceKbps };
        pool[field] = policy;
        return { epochChanged: false };
      }
      case 'setScrubPolicy': {
        const pool = this.get(model.storagePools, command.poolId, 'storage pool');
        const before = scrubPolicyOf(pool);
        const field = { mode: command.mode, rateKBps: command.rateKBps ?? before.rateKBps };
        let policy: ScrubPolicy;
        try {
          policy = parseScrubPolicy('scrub', field);
        } catch (err) {
          if (err instanceof InvalidArgumentError) throw invalid(err.field.replace(/^scrub\./, ''), err.message.replace(/^[^:]*: /, ''));
          throw err;
        }
        const changed = pool.scrub === undefined || policy.mode !== before.mode || policy.rateKBps !== before.rateKBps;
        pool.scrub = policy;
        // Only a pool with groups is in the map: nothing to tell the SDSs otherwise.
        if (!changed || pool.groups.length === 0) return { epochChanged: false };
        model.epoch += 1;
        return { epochChanged: true };
      }
    }
  }

  /**
   * Starts removing devices: refused (nothing changed) if the pools could not hold their
   * data without them; else they are marked removing and their pools re-planned, which moves
   * their copies away (each kept until its replacement is in sync). A device holding no copy
   * goes at once.
   */
  private beginRemoval(devices: Device[], what: string): void {
    const model = this.model;
    const leaving = new Set(devices.map((device) => device.id));
    const pools = [...new Set(devices.map((device) => device.storagePoolId))].map((id) => this.get(model.storagePools, id, 'storage pool'));
    for (const pool of pools) {
      const remaining = this.poolDevices(pool.id).filter((entry) => !leaving.has(entry.id) && entry.state !== 'removing');
      this.checkFits(this.poolCapacity(pool.id, { devices: remaining }), 0, what);
      const holdsData = Object.values(model.volumes).some((volume) => volume.storagePoolId === pool.id);
      const domains = new Set(remaining.map((device) => this.domainOf(device.sdsId)));
      if (holdsData && domains.size < 2) throw conflict('MB_ERR_POOL_IN_USE', `${what} would leave storage pool '${pool.name}', which has volumes, on fewer than two ${this.domainsNoun(this.poolDevices(pool.id))}`);
      this.refuseWhileDown(pool, what);
    }
    for (const device of devices) device.state = 'removing';
    for (const pool of pools) this.replan(pool, this.poolDevices(pool.id));
    this.finishRemovals();
  }

  /** Devices being removed that hold no copy any more go, and SDSs being removed with no device left. */
  private finishRemovals(): void {
    const model = this.model;
    const referenced = new Set<Id>();
    for (const pool of Object.values(model.storagePools)) {
      for (const group of pool.groups) {
        referenced.add(group.primaryDevice);
        if (group.secondaryDevice !== null) referenced.add(group.secondaryDevice);
        if (group.absentDevice !== undefined) referenced.add(group.absentDevice);
      }
    }
    // A device being removed is kept (shown as removing) until no group of its pool is still
    // filling: its copies were given up for new ones, and those must be in sync first.
    const filling = new Set(Object.values(model.storagePools).filter((pool) => pool.groups.some((group) => group.syncing === true)).map((pool) => pool.id));
    for (const device of Object.values(model.devices)) {
      if (device.state === 'removing' && !referenced.has(device.id) && !filling.has(device.storagePoolId)) delete model.devices[device.id];
    }
    for (const sds of Object.values(model.sdss)) {
      if (sds.removing === true && this.sdsDevices(sds.id).length === 0) delete model.sdss[sds.id];
    }
    for (const pool of Object.values(model.storagePools)) this.tidyLost(pool);
  }

  /** A down SDS registered again: its absent copies return as secondaries, filled by delta. */
  private sdsReturns(sds: Sds): void {
    const wasOut = sds.out === true;
    sds.downSinceMs = null;
    sds.out = false;
    const deviceIds = new Set(this.sdsDevices(sds.id).map((device) => device.id));
    const epoch = this.model.epoch + 1;
    for (const pool of Object.values(this.model.storagePools)) {
      if (!this.poolDevices(pool.id).some((device) => deviceIds.has(device.id))) continue;
      if (wasOut) {
        // Its copies were re-created elsewhere: it comes back empty, and the pool is
        // rebalanced onto it (unless another SDS of the pool is still down).
        if (!this.poolHasDownSds(pool)) this.replan(pool, this.poolDevices(pool.id));
        continue;
      }
      for (const group of pool.groups) {
        if (group.absentDevice === undefined || !deviceIds.has(group.absentDevice)) continue;
        if (group.secondaryDevice === null && this.readable(group.primaryDevice) && group.lost !== true) {
          group.secondaryDevice = group.absentDevice;
          group.syncing = true;
          group.syncEpoch = epoch;
          if (group.absentFull !== true) group.delta = true;
        }
        delete group.absentDevice;
        delete group.absentFull;
      }
    }
    this.model.epoch = Math.max(this.model.epoch + 1, epoch);
  }

  // --- snapshots (V-Trees) ------------------------------------------------------------

  /**
   * Checks one snapshotVolumes call against the model (volumes exist, each once, names free,
   * the V-Trees' limits): the same checks at begin and at commit. Refuses, changing nothing.
   */
  private checkSnapshotDefs(defs: SnapshotDef[]): Array<{ def: SnapshotDef; volume: Volume; tree: VTree }> {
    const model = this.model;
    if (!Array.isArray(defs) || defs.length < 1 || defs.length > snapshotGroupVolumesMax) throw invalid('defs', `must name 1 to ${snapshotGroupVolumesMax} volumes`);
    const checked: Array<{ def: SnapshotDef; volume: Volume; tree: VTree }> = [];
    const names = new Set<string>();
    const added = new Map<Id, number>();
    for (const [index, def] of defs.entries()) {
      const field = `defs[${index}]`;
      if (typeof def !== 'object' || def === null) throw invalid(field, 'must be { volumeId, name, readOnly }');
      const volume = this.get(model.volumes, def.volumeId, 'volume');
      if (checked.some((entry) => entry.volume.id === volume.id)) throw invalid(`${field}.volumeId`, `volume '${volume.name}' is named twice in one snapshot group`);
      this.checkVolumeName(`${field}.name`, def.name);
      if (names.has(def.name)) throw conflict('MB_ERR_NAME_TAKEN', `two snapshots of the group are named '${def.name}'`);
      names.add(def.name);
      this.unique(Object.values(model.volumes), def.name, 'volume');
      if (typeof def.readOnly !== 'boolean') throw invalid(`${field}.readOnly`, 'must be true or false');
      const tree = this.treeOf(volume);
      added.set(tree.id, (added.get(tree.id) ?? 0) + 1);
      checked.push({ def, volume, tree });
    }
    const snapshots = new Map<Id, number>();
    for (const volume of Object.values(model.volumes)) {
      if (volume.volumeType === 'Snapshot' && added.has(volume.vtreeId)) snapshots.set(volume.vtreeId, (snapshots.get(volume.vtreeId) ?? 0) + 1);
    }
    for (const [vtreeId, count] of added) {
      const tree = model.vtrees[vtreeId] as VTree;
      const held = snapshots.get(vtreeId) ?? 0;
      if (held + count > model.snapshotsPerVtree) {
        const base = checked.find((entry) => entry.tree.id === vtreeId)?.volume.name ?? vtreeId;
        throw conflict('MB_ERR_SNAPSHOT_LIMIT', `the V-Tree of volume '${base}' holds ${held} snapshot(s); ${count} more would pass the limit of ${model.snapshotsPerVtree} per V-Tree (remove snapshots, or raise the limit up to ${snapshotsPerVtreeMax})`);
      }
      this.checkGenerationRoom(tree, 2 * count);
    }
    return checked;
  }

  /**
   * Refuses a change that would give the tree more than vtreeGenerationsMax generations. A
   * frozen generation left with one child is kept (it is not merged into the child yet:
   * docs/snapshots.md), so a tree whose snapshots are taken and removed in turn grows a
   * chain; this is where it stops, clearly, rather than in the SDSs' map check.
   */
  private checkGenerationRoom(tree: VTree, extra: number): void {
    const count = Object.keys(tree.generations).length;
    if (count + extra > vtreeGenerationsMax) {
      throw conflict('MB_ERR_SNAPSHOT_LIMIT', `V-Tree ${tree.id} holds ${count} generations; ${extra} more would pass its limit of ${vtreeGenerationsMax} (frozen generations are not merged yet: remove the whole V-Tree's snapshots to start again)`);
    }
  }

  /** The barrier under way with this group id, or a refusal saying what is (not) under way. */
  private barrierOf(groupId: Id): SnapshotBarrier {
    const barrier = this.model.snapshotBarrier;
    if (barrier === null) throw conflict('MB_ERR_SNAPSHOT_BARRIER', `no snapshot group is being taken (group ${String(groupId)} was committed or aborted)`);
    if (barrier.groupId !== groupId) throw conflict('MB_ERR_SNAPSHOT_BARRIER', `snapshot group ${barrier.groupId} is being taken, not ${String(groupId)}`);
    return barrier;
  }

  /** The V-Trees a barrier under way freezes. */
  frozenVtrees(): Set<Id> {
    const frozen = new Set<Id>();
    for (const def of this.model.snapshotBarrier?.defs ?? []) {
      const volume = this.model.volumes[def.volumeId];
      if (volume !== undefined) frozen.add(volume.vtreeId);
    }
    return frozen;
  }

  private refuseWhileFrozen(tree: VTree, what: string): void {
    const barrier = this.model.snapshotBarrier;
    if (barrier !== null && this.frozenVtrees().has(tree.id)) {
      throw conflict('MB_ERR_SNAPSHOT_BARRIER', `${what} must wait: snapshot group ${barrier.groupId} is being taken of its V-Tree`);
    }
  }

  /** Refuses removing volumes that are mapped, naming them. */
  private refuseMapped(volumes: Volume[], named: Volume | null, what: string): void {
    const mapped = volumes.filter((volume) => volume.mappings.length > 0);
    if (mapped.length === 0) return;
    if (mapped.length === 1 && mapped[0] === named) {
      throw conflict('MB_ERR_VOLUME_MAPPED', `volume '${named.name}' is mapped to ${named.mappings.length} SDC(s); unmap it first`);
    }
    throw conflict('MB_ERR_VOLUME_MAPPED', `${what} would remove mapped volume(s) ${mapped.map((volume) => `'${volume.name}' (${volume.mappings.length} SDC(s))`).join(', ')}; unmap them first`);
  }

  private treeOf(volume: Volume): VTree {
    const tree = this.model.vtrees[volume.vtreeId];
    assert(tree !== undefined, `volume ${volume.id} has its V-Tree ${volume.vtreeId} in the model`);
    return tree;
  }

  treeVolumes(vtreeId: Id): Volume[] {
    return Object.values(this.model.volumes).filter((volume) => volume.vtreeId === vtreeId);
  }

  private newGeneration(tree: VTree, parent: number): number {
    const generation = tree.nextGeneration;
    tree.nextGeneration += 1;
    tree.generations[String(generation)] = parent;
    return generation;
  }

  /**
   * Removes volumes of one tree: their heads go, and the generations nothing reads any more
   * (prune); their snapshots left behind take the nearest ancestor that stays. The tree goes
   * with its last volume. True if the epoch moved (the tree's map entry changed, or lost
   * groups were tidied).
   */
  private removeVolumes(tree: VTree, doomed: Volume[]): boolean {
    const model = this.model;
    if (doomed.length === 0) return false;
    const frozen = this.frozenVtrees();
    const before = JSON.stringify(this.vtreeMap(tree, frozen.has(tree.id)));
    const ancestorOf = new Map(doomed.map((volume) => [volume.id, volume.ancestorVolumeId]));
    for (const volume of doomed) {
      // Mapped volumes are refused before this (refuseMapped): dropped from the index for tidiness only.
      for (const mapping of volume.mappings) this.indexMapping(mapping.sdcId, volume.id, false);
      delete model.volumes[volume.id];
    }
    const survivors = this.treeVolumes(tree.id);
    for (const volume of survivors) {
      let ancestor = volume.ancestorVolumeId;
      while (ancestor !== null && ancestorOf.has(ancestor)) ancestor = ancestorOf.get(ancestor) ?? null;
      volume.ancestorVolumeId = ancestor;
    }
    let changed: boolean;
    if (survivors.length === 0) {
      delete model.vtrees[tree.id];
      changed = before !== 'null';
    } else {
      this.prune(tree, doomed.map((volume) => volume.generation));
      changed = JSON.stringify(this.vtreeMap(tree, frozen.has(tree.id))) !== before;
    }
    const pool = model.storagePools[tree.storagePoolId];
    if (pool !== undefined && this.tidyLost(pool)) changed = true;
    if (changed) model.epoch += 1;
    return changed;
  }

  /**
   * Drops generations that no volume reads any more, from the given ones upward: a
   * generation that is no head and has no children goes, then its parent is looked at.
   */
  private prune(tree: VTree, from: number[]): void {
    const heads = new Set(this.treeVolumes(tree.id).map((volume) => volume.generation));
    const children = new Map<number, number>();
    for (const parent of Object.values(tree.generations)) if (parent !== null) children.set(parent, (children.get(parent) ?? 0) + 1);
    const queue = [...from];
    while (queue.length > 0) {
      const generation = queue.pop() as number;
      const parent = tree.generations[String(generation)];
      if (parent === undefined || heads.has(generation) || (children.get(generation) ?? 0) > 0) continue;
      // The root goes only with the tree (removeVolumes deletes a tree with no volume).
      if (parent === null) continue;
      delete tree.generations[String(generation)];
      children.set(parent, (children.get(parent) ?? 1) - 1);
      queue.push(parent);
    }
  }

  /** A tree as the map carries it, or null when it is implicit (one generation, not frozen: vtreeOf()). */
  vtreeMap(tree: VTree, frozen: boolean, volumes: Volume[] = this.treeVolumes(tree.id)): VTreeMap | null {
    if (Object.keys(tree.generations).length === 1 && !frozen) return null;
    const heads = volumes.map((volume) => ({ generation: volume.generation, snapshot: volume.volumeType === 'Snapshot' })).sort((a, b) => a.generation - b.generation);
    return { generations: { ...tree.generations }, heads, ...(frozen ? { frozen: true as const } : {}) };
  }

  /** A volume name free for a new volume (or for `exceptId` to take): no volume has it, nor a snapshot being taken. */
  private checkVolumeNameFree(name: string, exceptId: Id | null): void {
    this.unique(Object.values(this.model.volumes).filter((entry) => entry.id !== exceptId), name, 'volume');
    if (this.model.snapshotBarrier?.defs.some((def) => def.name === name) === true) throw conflict('MB_ERR_NAME_TAKEN', `a snapshot named '${name}' is being taken`);
  }

  // --- queries -------------------------------------------------------------------------

  poolDevices(poolId: Id): Device[] {
    return Object.values(this.model.devices).filter((device) => device.storagePoolId === poolId);
  }

  /**
   * The volumes mapped to an SDC with its mapping of each, in creation order (creationTimeMs,
   * then id): O(volumes mapped to it), not O(all volumes), after the first call. What the SDC's
   * view is made of, asked for every SDC whenever views may have changed.
   */
  sdcMappings(sdcId: Id): Array<{ volume: Volume; mapping: Mapping }> {
    const ids = this.mappingIndex().get(sdcId);
    if (ids === undefined) return [];
    const found: Array<{ volume: Volume; mapping: Mapping }> = [];
    for (const volumeId of ids) {
      const volume = this.model.volumes[volumeId];
      const mapping = volume?.mappings.find((entry) => entry.sdcId === sdcId);
      if (volume !== undefined && mapping !== undefined) found.push({ volume, mapping });
    }
    return found.sort((a, b) => a.volume.creationTimeMs - b.volume.creationTimeMs || (a.volume.id < b.volume.id ? -1 : a.volume.id > b.volume.id ? 1 : 0));
  }

  /** A volume is mapped to an SDC. */
  isMapped(volumeId: Id, sdcId: Id): boolean {
    return this.model.volumes[volumeId]?.mappings.some((mapping) => mapping.sdcId === sdcId) === true;
  }

  private mappingIndex(): Map<Id, Set<Id>> {
    if (this.mappedBySdc !== null) return this.mappedBySdc;
    const index = new Map<Id, Set<Id>>();
    for (const volume of Object.values(this.model.volumes)) {
      for (const mapping of volume.mappings) {
        let ids = index.get(mapping.sdcId);
        if (ids === undefined) index.set(mapping.sdcId, (ids = new Set()));
        ids.add(volume.id);
      }
    }
    this.mappedBySdc = index;
    return index;
  }

  /** Keeps the mapping index (if built) in step with a mapping made or removed. */
  private indexMapping(sdcId: Id, volumeId: Id, mapped: boolean): void {
    const index = this.mappedBySdc;
    if (index === null) return;
    let ids = index.get(sdcId);
    if (mapped) {
      if (ids === undefined) index.set(sdcId, (ids = new Set()));
      ids.add(volumeId);
    } else if (ids !== undefined) {
      ids.delete(volumeId);
      if (ids.size === 0) index.delete(sdcId);
    }
  }

  sdsDevices(sdsId: Id): Device[] {
    return Object.values(this.model.devices).filter((device) => device.sdsId === sdsId);
  }

  private sdsInUse(sdsId: Id): boolean {
    return this.sdsDevices(sdsId).length > 0;
  }

  /** Capacity of a pool, optionally as it would be with other devices or another spare. */
  poolCapacity(poolId: Id, what: { devices?: Device[]; sparePercent?: number } = {}): PoolCapacity {
    const pool = this.get(this.model.storagePools, poolId, 'storage pool');
    const devices = what.devices ?? this.poolDevices(poolId);
    const healthy = devices.filter((device) => device.state === 'normal');
    const rawBytes = healthy.reduce((sum, device) => sum + device.capacityBytes, 0);
    const spareBytes = Math.ceil((rawBytes * (what.sparePercent ?? pool.sparePercent)) / 100);
    const volumes = Object.values(this.model.volumes).filter((volume) => volume.storagePoolId === poolId);
    const thickReservedBytes = volumes.filter((volume) => volume.volumeType === 'ThickProvisioned').reduce((sum, volume) => sum + volume.sizeBytes, 0);
    const thinProvisionedBytes = volumes.filter((volume) => volume.volumeType === 'ThinProvisioned').reduce((sum, volume) => sum + volume.sizeBytes, 0);
    const snapshotProvisionedBytes = volumes.filter((volume) => volume.volumeType === 'Snapshot').reduce((sum, volume) => sum + volume.sizeBytes, 0);
    const usedRawBytes = healthy.reduce((sum, device) => sum + device.usedBytes, 0);
    const snapshotRawBytes = healthy.reduce((sum, device) => sum + (device.snapshotBytes ?? 0), 0);
    const { degradedBytes, failedBytes } = this.poolHealth(pool);
    const usableBytes = Math.floor((rawBytes - spareBytes) / 2);
    return {
      rawBytes,
      spareBytes,
      usableBytes,
      thickReservedBytes,
      thinProvisionedBytes,
      inUseBytes: Math.floor(usedRawBytes / 2),
      protectedBytes: Math.max(0, usedRawBytes - degradedBytes),
      degradedBytes,
      failedBytes,
      unusedBytes: Math.max(0, rawBytes - spareBytes - usedRawBytes - 2 * thickReservedBytes),
      snapshotInUseBytes: Math.floor(snapshotRawBytes / 2),
      snapshotProvisionedBytes,
    };
  }

  /**
   * How many of a pool's groups run on fewer than two copies in sync, and the bytes in them.
   * Per-group usage is not reported by the SDSs: the bytes are estimated by spreading the
   * readable devices' usage evenly over the copies they hold.
   */
  poolHealth(pool: StoragePool): PoolHealth {
    let copies = 0;
    let usedBytes = 0;
    const counted = new Set<Id>();
    const health: PoolHealth = { groups: pool.groups.length, degradedGroups: 0, syncingGroups: 0, failedGroups: 0, degradedBytes: 0, failedBytes: 0 };
    for (const group of pool.groups) {
      const primaryOk = group.lost !== true && this.readable(group.primaryDevice);
      // A lost group's IO fails whatever its devices hold (as volumeHealth counts it).
      const secondaryOk = group.lost !== true && group.secondaryDevice !== null && group.syncing !== true && this.readable(group.secondaryDevice);
      // A readable secondary in sync still holds the data (the group fails over to it).
      if (!primaryOk && !secondaryOk) health.failedGroups += 1;
      else if (!primaryOk || !secondaryOk) health.degradedGroups += 1;
      if (group.syncing === true) health.syncingGroups += 1;
      for (const deviceId of [group.primaryDevice, group.secondaryDevice]) {
        if (deviceId === null || !this.readable(deviceId)) continue;
        copies += 1;
        if (!counted.has(deviceId)) {
          counted.add(deviceId);
          usedBytes += this.model.devices[deviceId]?.usedBytes ?? 0;
        }
      }
    }
    const perGroupBytes = copies > 0 ? usedBytes / copies : 0;
    health.degradedBytes = Math.round(health.degradedGroups * perGroupBytes);
    health.failedBytes = Math.round(health.failedGroups * perGroupBytes);
    return health;
  }

  /** Chunks of a volume (written or not) in groups with one copy in sync, and with none. */
  volumeHealth(volumeId: Id): { degradedChunks: number; failedChunks: number } {
    const volume = this.get(this.model.volumes, volumeId, 'volume');
    const pool = this.get(this.model.storagePools, volume.storagePoolId, 'storage pool');
    const result = { degradedChunks: 0, failedChunks: 0 };
    if (pool.groups.length === 0) return result;
    const status = pool.groups.map((group) => {
      const primaryOk = group.lost !== true && this.readable(group.primaryDevice);
      const secondaryOk = group.lost !== true && group.secondaryDevice !== null && group.syncing !== true && this.readable(group.secondaryDevice);
      return primaryOk && secondaryOk ? 0 : primaryOk || secondaryOk ? 1 : 2;
    });
    if (status.every((value) => value === 0)) return result;
    const chunks = Math.ceil(volume.sizeBytes / pool.chunkBytes);
    for (let chunk = 0; chunk < chunks; chunk++) {
      const value = status[placementGroupOf(volume.vtreeId, chunk, pool.groups.length)];
      if (value === 1) result.degradedChunks += 1;
      else if (value === 2) result.failedChunks += 1;
    }
    return result;
  }

  /**
   * The placement map every SDS and SDC works from. The same object is returned until a
   * command that may change the map is applied (see `revision`; commands that never change it
   * keep it too), so a caller may compare it by reference to skip encoding it again. Callers
   * must not change it: it is shared (copy it, e.g. `{ ...map, epoch }`, to alter it). It holds
   * no reference into the model: a later command never changes a map already returned.
   */
  placementMap(): PlacementMap {
    const cached = this.mapCached;
    if (cached !== null && cached.revision === this.mapRevision) return cached.map;
    const map = this.buildPlacementMap();
    this.mapCached = { revision: this.mapRevision, map };
    return map;
  }

  /** placementMap() built afresh from the model. */
  private buildPlacementMap(): PlacementMap {
    const sds: PlacementMap['sds'] = {};
    const pools: PlacementMap['pools'] = {};
    for (const pool of Object.values(this.model.storagePools)) {
      if (pool.groups.length === 0) continue;
      pools[pool.id] = {
        chunkBytes: pool.chunkBytes,
        // Only a policy that was set: a pool never set sends the map it sent before the scrub.
        ...(pool.scrub !== undefined ? { scrub: { mode: pool.scrub.mode, rateKBps: pool.scrub.rateKBps } } : {}),
        groups: pool.groups.map((group) => {
          const primary = this.model.devices[group.primaryDevice] as Device;
          const secondary = group.secondaryDevice === null ? null : (this.model.devices[group.secondaryDevice] as Device);
          for (const device of [primary, secondary]) {
            if (device !== null) sds[device.sdsId] = { address: (this.model.sdss[device.sdsId] as { address: string }).address };
          }
          return {
            primary: primary.sdsId,
            secondary: secondary?.sdsId ?? null,
            primaryDevice: primary.id,
            ...(secondary !== null ? { secondaryDevice: secondary.id } : {}),
            ...(group.lost === true ? { lost: true as const } : {}),
          };
        }),
      };
    }
    // Only trees with more than their base generation, or frozen: a system of plain volumes
    // sends the map it sent before snapshots.
    const vtrees: Record<string, VTreeMap> = {};
    const frozen = this.frozenVtrees();
    const byTree = new Map<Id, Volume[]>();
    for (const volume of Object.values(this.model.volumes)) {
      const tree = this.model.vtrees[volume.vtreeId];
      if (tree === undefined || (Object.keys(tree.generations).length === 1 && !frozen.has(tree.id))) continue;
      const list = byTree.get(tree.id);
      if (list === undefined) byTree.set(tree.id, [volume]);
      else list.push(volume);
    }
    for (const [vtreeId, volumes] of byTree) {
      const entry = this.vtreeMap(this.model.vtrees[vtreeId] as VTree, frozen.has(vtreeId), volumes);
      if (entry !== null) vtrees[vtreeId] = entry;
    }
    return { epoch: this.model.epoch, sds, pools, ...(byTree.size > 0 ? { vtrees } : {}) };
  }

  // --- helpers -------------------------------------------------------------------------

  /**
   * Plans the pool again. Copies new to their devices start `syncing` (their primary fills
   * them); a secondary still syncing is never made primary; groups left with no readable
   * copy are marked lost rather than re-created empty.
   */
  private replan(pool: StoragePool, devices: Device[]): void {
    const plannerDevices: PlannerDevice[] = devices.map((device) => {
      const sds = this.model.sdss[device.sdsId];
      const gone = device.state === 'failed' || (sds !== undefined && isDown(sds));
      return { deviceId: device.id, ...this.memberOf(device.sdsId), capacityBytes: device.capacityBytes, state: gone ? 'failed' : device.state };
    });
    // Two copies need two failure domains (SDSs, hosts, or fault sets where the pool has
    // them): until the pool's devices span two, it holds no groups and takes no volumes.
    const domains = new Set(plannerDevices.map(failureDomainOf));
    const holdsData = Object.values(this.model.volumes).some((volume) => volume.storagePoolId === pool.id);
    if (domains.size < 2) {
      if (pool.groups.length > 0 && holdsData) {
        throw conflict('MB_ERR_POOL_IN_USE', `storage pool '${pool.name}' has volumes; its devices must stay on at least two ${failureDomainsNoun(plannerDevices)}`);
      }
      pool.groups = [];
      this.model.epoch += 1;
      return;
    }
    const previous = pool.groups;
    // The planner takes `previous` as copies in sync: a syncing secondary is only passed
    // where its primary is readable (so it is kept, not promoted).
    const inSync = previous.map((group) => ({
      primaryDevice: group.primaryDevice,
      secondaryDevice: group.syncing === true && !this.readable(group.primaryDevice) ? null : group.secondaryDevice,
    }));
    let planned;
    try {
      // A pool without volumes holds no data, so nothing is worth keeping in place: plan it
      // afresh, which also spreads primaries (reads) over every device, new ones included.
      planned = planPlacement({ pgCount: pool.pgCount, devices: plannerDevices, previous: previous.length > 0 && holdsData ? inSync : null });
    } catch (err) {
      throw conflict('MB_ERR_PLACEMENT', `cannot place storage pool '${pool.name}': ${(err as Error).message}`);
    }
    this.model.epoch += 1;
    if (previous.length === 0 || !holdsData) {
      pool.groups = planned.groups.map((group) => ({ primaryDevice: group.primaryDevice, secondaryDevice: group.secondaryDevice }));
      return;
    }
    pool.groups = planned.groups.map((after, pgIndex) => {
      const before = previous[pgIndex] as PoolGroup;
      const next: PoolGroup = { primaryDevice: after.primaryDevice, secondaryDevice: after.secondaryDevice };
      const syncedBefore = new Set<Id>();
      if (this.readable(before.primaryDevice)) syncedBefore.add(before.primaryDevice);
      if (before.secondaryDevice !== null && before.syncing !== true && this.readable(before.secondaryDevice)) syncedBefore.add(before.secondaryDevice);
      if (before.lost === true || syncedBefore.size === 0) {
        // Nothing readable survived: keep the group where it was, failing IO, not zeros.
        return { primaryDevice: before.primaryDevice, secondaryDevice: before.secondaryDevice, lost: true };
      }
      if (before.syncing === true && before.secondaryDevice !== null && after.primaryDevice === before.secondaryDevice && after.secondaryDevice === before.primaryDevice) {
        // A role swap onto a copy still filling: undo it (roles move no data).
        next.primaryDevice = before.primaryDevice;
        next.secondaryDevice = before.secondaryDevice;
      }
      if (!syncedBefore.has(next.primaryDevice)) {
        // The plan put the primary on a copy that is not in sync (a device being removed, or
        // a rebalance onto a new one, while the group's second copy was still filling): the
        // group's last good copy would be dropped and reads served from a partial one (found
        // by the seeded simulation). Keep the group where it was: the fill goes on, and the
        // plan made once it is in sync (copiesSynced plans again) moves the group then.
        return this.keptGroup(before, syncedBefore);
      }
      if (next.secondaryDevice !== null) {
        const keptSyncing = before.syncing === true && next.secondaryDevice === before.secondaryDevice && next.primaryDevice === before.primaryDevice;
        if (keptSyncing) {
          next.syncing = true;
          next.syncEpoch = before.syncEpoch ?? this.model.epoch;
          if (before.delta === true) next.delta = true;
          if (before.rebalance === true) next.rebalance = true;
        } else if (!syncedBefore.has(next.secondaryDevice)) {
          next.syncing = true;
          next.syncEpoch = this.model.epoch;
          // Both copies were in sync: this one moves (a rebalance), it does not restore a lost one.
          if (syncedBefore.size === 2) next.rebalance = true;
        }
      } else if (before.absentDevice !== undefined) {
        next.absentDevice = before.absentDevice;
        if (before.absentFull === true) next.absentFull = true;
      }
      return next;
    });
    for (const group of pool.groups) {
      for (const key of ['syncing', 'syncEpoch', 'delta', 'rebalance', 'absentDevice', 'absentFull', 'lost'] as const) if (group[key] === undefined) delete group[key];
    }
  }

  /** A group left as it was by a plan, on a copy in sync; a second copy that is unreadable is let go (repairPool gives another). */
  private keptGroup(before: PoolGroup, syncedBefore: ReadonlySet<Id>): PoolGroup {
    const primaryDevice = syncedBefore.has(before.primaryDevice) ? before.primaryDevice : (before.secondaryDevice as Id);
    const other = primaryDevice === before.primaryDevice ? before.secondaryDevice : null;
    const kept: PoolGroup = { primaryDevice, secondaryDevice: other !== null && this.readable(other) ? other : null };
    if (kept.secondaryDevice !== null && before.syncing === true) {
      kept.syncing = true;
      if (before.syncEpoch !== undefined) kept.syncEpoch = before.syncEpoch;
      if (before.delta === true) kept.delta = true;
      if (before.rebalance === true) kept.rebalance = true;
    }
    if (before.absentDevice !== undefined) {
      kept.absentDevice = before.absentDevice;
      if (before.absentFull === true) kept.absentFull = true;
    }
    return kept;
  }

  /** Re-plans a pool after a device or SDS was lost for good (refused plans are logged by the caller). */
  private replanAfterFailure(pool: StoragePool): void {
    if (pool.groups.length === 0) return;
    this.replan(pool, this.poolDevices(pool.id));
  }

  /** Forgets lost groups once the pool holds no volume (their data belonged to none). */
  private tidyLost(pool: StoragePool): boolean {
    if (Object.values(this.model.volumes).some((volume) => volume.storagePoolId === pool.id)) return false;
    let changed = false;
    for (const group of pool.groups) {
      if (group.lost === true) {
        delete group.lost;
        changed = true;
        // No volume holds data here any more: a copy that became readable again while the
        // group was lost (its SDS came back) serves, as a failover would have made it
        // (found by the seeded simulation, seed 858006796).
        if (!this.readable(group.primaryDevice) && group.secondaryDevice !== null && group.syncing !== true && this.readable(group.secondaryDevice)) {
          group.primaryDevice = group.secondaryDevice;
          group.secondaryDevice = null;
          delete group.delta;
        }
      }
    }
    return changed;
  }

  /**
   * Groups left on one copy with nothing to fill them, or with both copies in one failure
   * domain (an SDS's host label changed while the pool could not be planned again), in a pool
   * that could hold two copies apart.
   */
  needsRepair(pool: StoragePool): boolean {
    if (pool.groups.length === 0) return false;
    // Asked every health tick for every pool: the pool's devices are listed once (a scan of
    // every device of the system), not once per question as before.
    const devices = this.poolDevices(pool.id);
    if (this.downSdsOf(devices).length > 0) return false;
    const orphan = pool.groups.some((group) => group.secondaryDevice === null && group.absentDevice === undefined && group.lost !== true && this.readable(group.primaryDevice));
    if (!orphan && !this.sharesDomain(pool, devices)) return false;
    const domains = new Set(devices.filter((device) => device.state === 'normal' && this.readable(device.id)).map((device) => this.domainOf(device.sdsId)));
    return domains.size >= 2;
  }

  /**
   * Some group of the pool has its two copies in one failure domain. Asked every health tick:
   * where every domain of the pool is one SDS (no labels shared, no fault sets) it cannot be,
   * and no group is read.
   */
  private sharesDomain(pool: StoragePool, devices: readonly Device[]): boolean {
    // No fault set and no host label in the pool: every domain is one SDS (failureDomainOf),
    // told without making a domain name per device.
    if (devices.every((device) => (this.model.sdss[device.sdsId]?.faultSetId ?? null) === null && (this.model.sdss[device.sdsId]?.host ?? null) === null)) return false;
    const domainOfDevice = new Map(devices.map((device) => [device.id, this.domainOf(device.sdsId)]));
    if (new Set(domainOfDevice.values()).size === new Set(devices.map((device) => device.sdsId)).size) return false;
    return pool.groups.some((group) => {
      if (group.secondaryDevice === null || group.lost === true) return false;
      const primaryDomain = domainOfDevice.get(group.primaryDevice);
      return primaryDomain !== undefined && primaryDomain === domainOfDevice.get(group.secondaryDevice);
    });
  }

  /** What an SDS's failure domain is made of: its fault set and host label. */
  private memberOf(sdsId: Id): DomainMember {
    const sds = this.model.sdss[sdsId];
    return { sdsId, faultSetId: sds?.faultSetId ?? null, host: sds?.host ?? null };
  }

  /** The failure domain of an SDS (failureDomainOf: fault set, else host label, else itself). */
  domainOf(sdsId: Id): string {
    return failureDomainOf(this.memberOf(sdsId));
  }

  /** What the failure domains of these devices are, for messages: 'fault sets', 'hosts' or 'SDSs'. */
  private domainsNoun(devices: readonly Device[]): string {
    return failureDomainsNoun(devices.map((device) => this.memberOf(device.sdsId)));
  }

  /**
   * With fault sets in use, the SDSs of one host must share a fault set: else one machine's
   * failure could take both copies of a group that the fault sets hold apart. Says where `sds`
   * (with its host label) would go against an SDS of the same host in the same protection
   * domain that is in another fault set (or none, where one of the two has one); null if
   * nowhere. addSds refuses such a move (MB_ERR_HOST_FAULT_SET); a registration that changes a
   * label into such a clash is taken (refusing it would keep a data-holding SDS out), its fault
   * set still its failure domain, and the MDM logs it (hostFaultSetWarning).
   */
  hostFaultSetClash(sds: Sds, protectionDomainId: Id | null, faultSetId: Id | null): string | null {
    const host = sds.host ?? null;
    if (host === null || protectionDomainId === null) return null;
    const mate = Object.values(this.model.sdss)
      .filter((other) => other.id !== sds.id && (other.host ?? null) === host && other.protectionDomainId === protectionDomainId && other.faultSetId !== faultSetId)
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))[0];
    if (mate === undefined) return null;
    const setName = (id: Id | null): string => (id === null ? 'no fault set' : `fault set '${this.model.faultSets[id]?.name ?? id}'`);
    return `${setName(faultSetId)}: SDS '${mate.name}' of the same host '${host}' is in ${setName(mate.faultSetId)}, and the SDSs of one host must share a fault set (else one machine's failure takes both copies)`;
  }

  /** The clash of a registered SDS's host label with its fault set (hostFaultSetClash), as a warning; null if none. */
  hostFaultSetWarning(sdsId: Id): string | null {
    const sds = this.model.sdss[sdsId];
    if (sds === undefined) return null;
    const clash = this.hostFaultSetClash(sds, sds.protectionDomainId, sds.faultSetId);
    return clash === null ? null : `SDS '${sds.name}' is in ${clash}; its fault set stays its failure domain`;
  }

  /**
   * A registration changed the SDS's host label: each pool of its devices whose domains are
   * now grouped otherwise is planned again (two copies that now share a host are moved
   * apart). A pool with another SDS down keeps its plan for now: planning around a down SDS
   * would rebuild what it will bring back, so needsRepair (sharesDomain) has the health loop
   * repair it once none is. Refuses (and so the registration, which the SDS retries) where
   * the pool cannot be planned with the new label: volumes left on one host, say.
   * Returns whether the epoch moved.
   */
  private onHostChanged(sds: Sds, hostBefore: string | null): boolean {
    const model = this.model;
    const domainBefore = failureDomainOf({ sdsId: sds.id, faultSetId: sds.faultSetId, host: hostBefore });
    const domainAfter = this.domainOf(sds.id);
    if (domainBefore === domainAfter) return false;
    const poolIds = [...new Set(this.sdsDevices(sds.id).map((device) => device.storagePoolId))].sort();
    let changed = false;
    for (const poolId of poolIds) {
      const pool = this.get(model.storagePools, poolId, 'storage pool');
      const others = [...new Set(this.poolDevices(pool.id).map((device) => device.sdsId))].filter((id) => id !== sds.id);
      const matesOf = (domain: string): string => others.filter((id) => this.domainOf(id) === domain).sort().join(',');
      // The same SDSs share its domain as before (a label no other SDS of the pool has, say): the plan stands.
      if (matesOf(domainBefore) === matesOf(domainAfter)) continue;
      if (this.poolHasDownSds(pool)) continue;
      try {
        this.replan(pool, this.poolDevices(pool.id));
      } catch (err) {
        if (!(err instanceof MdmError)) throw err;
        const label = (value: string | null): string => (value === null ? 'no host label' : `host label '${value}'`);
        throw new MdmError(err.code, `SDS '${sds.name}' registering with ${label(sds.host ?? null)} (it had ${label(hostBefore)}): ${err.message}`, err.httpStatus);
      }
      changed = true;
    }
    return changed;
  }

  private refuseWhileDown(pool: StoragePool, what: string): void {
    const down = this.poolDownSds(pool);
    if (down.length > 0) {
      throw conflict('MB_ERR_POOL_DEGRADED', `${what} must wait: SDS ${down.map((sds) => `'${sds.name}'`).join(', ')} of storage pool '${pool.name}' is down (it returns, or is rebuilt around once out)`);
    }
  }

  private poolDownSds(pool: StoragePool): Sds[] {
    return this.downSdsOf(this.poolDevices(pool.id));
  }

  /** The SDSs of these devices that are down and not out. */
  private downSdsOf(devices: readonly Device[]): Sds[] {
    const ids = new Set(devices.map((device) => device.sdsId));
    return [...ids].map((id) => this.model.sdss[id]).filter((sds): sds is Sds => sds !== undefined && isDown(sds) && sds.out !== true);
  }

  private poolHasDownSds(pool: StoragePool): boolean {
    return this.poolDownSds(pool).length > 0;
  }

  /** A copy on this device can be read: the device works and its SDS is up. */
  readable(deviceId: Id): boolean {
    const device = this.model.devices[deviceId];
    if (device === undefined || device.state === 'failed') return false;
    const sds = this.model.sdss[device.sdsId];
    return sds !== undefined && !isDown(sds);
  }

  private sdsOf(deviceId: Id): Id | undefined {
    return this.model.devices[deviceId]?.sdsId;
  }

  private roundVolumeSize(pool: StoragePool, sizeBytes: number): number {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw invalid('sizeBytes', 'must be a positive whole number of bytes');
    const rounded = Math.ceil(sizeBytes / pool.volumeGranularityBytes) * pool.volumeGranularityBytes;
    if (rounded / pool.chunkBytes > 0xffffffff) throw invalid('sizeBytes', 'too many chunks for one volume');
    return rounded;
  }

  private checkFits(capacity: PoolCapacity, extraThickBytes: number, what: string): void {
    if (this.replaying) return;
    const needed = capacity.thickReservedBytes + extraThickBytes + Math.max(0, capacity.inUseBytes - capacity.thickReservedBytes);
    if (needed > capacity.usableBytes) {
      throw new MdmError(
        'MB_ERR_INSUFFICIENT_CAPACITY',
        `${what} does not fit: ${formatBytes(needed)} needed, ${formatBytes(capacity.usableBytes)} usable after the ${formatBytes(capacity.spareBytes)} spare`,
        409,
      );
    }
  }

  private newId(): Id {
    this.model.idCounter += 1;
    return createHash('sha256').update(`${this.model.clusterId}/${this.model.idCounter}`).digest('hex').slice(0, 16);
  }

  private get<T>(table: Record<Id, T>, id: Id, what: string): T {
    const entry = typeof id === 'string' ? table[id] : undefined;
    if (entry === undefined) throw notFound(`no ${what} with id ${String(id)}`);
    return entry;
  }

  private checkName(field: string, name: string): void {
    if (typeof name !== 'string' || !isName(name)) {
      throw invalid(field, `must be ${nameRule}`);
    }
  }

  private checkVolumeName(field: string, name: string): void {
    if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) > nameBytesMax || !volumeNamePattern.test(name)) throw invalid(field, `must be ${volumeNameRule}`);
  }

  private unique(entries: Array<{ name: string }>, name: string, what: string): void {
    if (entries.some((entry) => entry.name === name)) throw conflict('MB_ERR_NAME_TAKEN', `a ${what} named '${name}' already exists`);
  }

  /** Finds an object by id or by name, the way the CLI lets users name things. */
  find<T extends { id: Id; name: string }>(table: Record<Id, T>, idOrName: string, what: string): T {
    const byId = table[idOrName];
    if (byId !== undefined) return byId;
    const byName = Object.values(table).filter((entry) => entry.name === idOrName);
    if (byName.length === 1) return byName[0] as T;
    if (byName.length > 1) throw conflict('MB_ERR_AMBIGUOUS', `${byName.length} ${what}s are named '${idOrName}'; use the id`);
    throw notFound(`no ${what} with id or name '${idOrName}'`);
  }
}

export function isDown(sds: Sds): boolean {
  return sds.downSinceMs !== undefined && sds.downSinceMs !== null;
}

/**
 * The one derivation of an SDS's shown state: down is decided by commands (and journaled);
 * connected or not is only what the MDM sees, and never overrides down.
 */
export function sdsState(sds: Sds, connected: boolean): SdsState {
  if (isDown(sds)) return 'down';
  return connected ? 'connected' : 'disconnected';
}

/** The volumes whose ancestry (ancestorVolumeId, up and up) reaches `volumeId`: its snapshots, theirs, and so on. */
export function descendantsOf(volumeId: Id, treeVolumes: Volume[]): Volume[] {
  const found: Volume[] = [];
  const reached = new Set<Id>([volumeId]);
  // Breadth by rounds: each round adds the snapshots of what the last one found.
  let grew = true;
  while (grew) {
    grew = false;
    for (const volume of treeVolumes) {
      if (reached.has(volume.id) || volume.ancestorVolumeId === null || !reached.has(volume.ancestorVolumeId)) continue;
      reached.add(volume.id);
      found.push(volume);
      grew = true;
    }
  }
  return found;
}

function isPowerOfTwo(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0 && (value & (value - 1)) === 0;
}

/**
 * ScaleIO's rules for a mapping's QoS, and librbd's for its burst; refuses naming the field
 * (the state machine's names: the REST layer renames bandwidthLimitKbps and
 * bandwidthBurstKbps to its own). A burst is a rate above a limit, so it needs the limit it
 * rises above: a burst without one would mean nothing and is refused rather than ignored.
 */
function checkQosLimits(limits: QosLimits, replaying: boolean): void {
  // Whole MiB/s is ScaleIO's rule, which meshblock took up with enforcement (issue 17): a
  // limit accepted before is replayed as it was, or an old journal would not open.
  const problem = qosLimitsProblem(limits, replaying ? 'journal' : 'scaleio');
  if (problem !== null) throw invalid(problem.field, problem.message);
}

export function invalid(field: string, message: string): MdmError {
  return new MdmError('MB_ERR_INVALID_ARGUMENT', `${field}: ${message}`, 400);
}

export function notFound(message: string): MdmError {
  return new MdmError('MB_ERR_NOT_FOUND', message, 404);
}

export function conflict(code: ErrorCode, message: string): MdmError {
  return new MdmError(code, message, 409);
}

export type { PoolGroup } from './model.js';
