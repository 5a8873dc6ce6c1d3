// The MDM's model: every object the control plane knows, as plain JSON-able data, so the
// whole state can be snapshotted into the journal and compared in tests. Names follow
// ScaleIO's (protection domain, storage pool, fault set, SDS, device, SDC, volume, V-Tree).
// Ids are 16 lowercase hex digits, as ScaleIO writes them.

import { scrubModeDefault, scrubRateKBpsDefault, snapshotsPerVtreeDefault } from '../common/limits.js';
import type { QosLimits } from '../common/qos-limits.js';
import type { ScrubPolicy } from '../wire/placement.js';

export type Id = string;

export interface ProtectionDomain {
  id: Id;
  name: string;
}

export interface StoragePool {
  id: Id;
  name: string;
  protectionDomainId: Id;
  chunkBytes: number;
  /** Held back for rebuilds, as a percentage of the pool's raw capacity. */
  sparePercent: number;
  /** ScaleIO's zero-padding policy: reads of never-written ranges are guaranteed zeros. */
  zeroPadding: boolean;
  /** Volume sizes are rounded up to this (ScaleIO: 8 GiB). */
  volumeGranularityBytes: number;
  /** Placement groups of this pool (fixed when the pool gets its first devices). */
  pgCount: number;
  groups: PoolGroup[];

  // --- rebuild and rebalance IO priority (ScaleIO's policies; docs/rebuild-policy.md) ---
  /**
   * How fills of this pool's groups are throttled on their source SDS: `rebuildIoPriority`
   * for a copy the group was short of, `rebalanceIoPriority` for a healthy copy that moves.
   * Absent (never set, and every pool from before policies): the MDM's start options
   * (--rebuild-rate, --rebuild-rate-under-load, --rebuild-inflight) throttle them, per SDS.
   */
  rebuildIoPriority?: IoPriorityPolicy;
  rebalanceIoPriority?: IoPriorityPolicy;

  // --- checksums at rest and the scrub (ScaleIO's background device scanner; docs/integrity.md) ---
  /**
   * The pool's background scrub, sent to its SDSs in the placement map. Absent (never set,
   * and every pool from before the scrub): scrubModeDefault at scrubRateKBpsDefault.
   */
  scrub?: ScrubPolicy;
}

/** A pool's scrub policy, the default where it never set one (ScaleIO's scanner: data comparison at 1 MB/s per device). */
export function scrubPolicyOf(pool: StoragePool): ScrubPolicy & { isDefault: boolean } {
  if (pool.scrub === undefined) return { mode: scrubModeDefault, rateKBps: scrubRateKBpsDefault, isDefault: true };
  return { ...pool.scrub, isDefault: false };
}

/** ScaleIO's names; `limitBandwidth` is meshblock's for "limit bandwidth per device". */
export type IoPriorityPolicyName = 'unlimited' | 'limitNumOfConcurrentIos' | 'favorAppIos' | 'limitBandwidth';
export const ioPriorityPolicyNames: readonly IoPriorityPolicyName[] = ['unlimited', 'limitNumOfConcurrentIos', 'favorAppIos', 'limitBandwidth'];

/**
 * One pool's policy for one kind of fill. Both numbers are kept whatever the policy uses,
 * so that switching policies back and forth keeps what the administrator gave.
 */
export interface IoPriorityPolicy {
  policy: IoPriorityPolicyName;
  /** Chunk copies in flight per device of the source SDS in the pool (ScaleIO: 1..20). */
  concurrentIosPerDevice: number;
  /** KiB/s per device of the source SDS in the pool; a whole number of MiB/s. */
  bandwidthPerDeviceKbps: number;
}


export interface PoolGroup {
  primaryDevice: Id;
  secondaryDevice: Id | null;
  /**
   * The secondary is still being filled from the primary (rebuild or rebalance): it takes
   * the mirrored writes but is not yet a copy to count on, so it is never promoted.
   */
  syncing?: boolean;
  /** The epoch the fill began at: only an order given at or after it completes it. */
  syncEpoch?: number;
  /** The fill may copy only the chunks the primary changed while this copy was away. */
  delta?: boolean;
  /**
   * The fill moves a copy that was in sync (a device added or removed: a rebalance), not
   * one the group was short of (a rebuild): the pool's rebalance policy throttles it.
   * Absent (a rebuild, and every fill recorded before policies) means a rebuild.
   */
  rebalance?: boolean;
  /**
   * A copy on a device of an SDS that is down but not yet out: it comes back as the
   * secondary (filled by a delta rebuild) if its SDS returns in time.
   */
  absentDevice?: Id;
  /** The absent copy was still filling when its SDS went down: it returns for a full fill. */
  absentFull?: boolean;
  /** Both copies are gone: IO to the group fails instead of reading zeros. */
  lost?: boolean;
}

export interface FaultSet {
  id: Id;
  name: string;
  protectionDomainId: Id;
}

export type SdsState = 'connected' | 'disconnected' | 'down';

export interface Sds {
  id: Id;
  name: string;
  /** Null until an administrator adds the registered SDS to a protection domain. */
  protectionDomainId: Id | null;
  faultSetId: Id | null;
  /**
   * The host label it registered with (SdsRegistration.host), updated at every registration:
   * SDSs of one label are one failure domain where there are no fault sets (failureDomainOf in
   * placement-planner.ts). Null or absent (models from before labels): none.
   */
  host?: string | null;
  /** HOST:PORT of its data listener. */
  address: string;
  state: SdsState;
  lastHeartbeatMs: number;
  /**
   * Set when the MDM declared the SDS down (missed heartbeats, lost connection): its copies
   * are not used. Down, it may still return with its data (a delta rebuild copies back what
   * changed); once `out`, its copies are re-created elsewhere and what it holds is stale.
   * Absent (journals from before failure handling) means up.
   */
  downSinceMs?: number | null;
  out?: boolean;
  /** Being removed: its devices' data moves away, then it is deleted. */
  removing?: boolean;
}

export type DeviceState = 'normal' | 'failed' | 'removing';

export interface Device {
  id: Id;
  name: string;
  sdsId: Id;
  storagePoolId: Id;
  path: string;
  capacityBytes: number;
  state: DeviceState;
  /** Bytes of chunk slots in use, as last reported by the SDS. */
  usedBytes: number;
  /**
   * Of usedBytes, the bytes only snapshots reach (no base volume's head resolves to them), as
   * last reported by the SDS; absent until an SDS that counts them reports (docs/snapshots.md).
   */
  snapshotBytes?: number;
}

export type SdcState = 'connected' | 'disconnected';

export interface Sdc {
  id: Id;
  /** Chosen by the SDC and kept across its restarts. */
  guid: string;
  name: string;
  state: SdcState;
  lastSeenMs: number;
}

export type AccessMode = 'ReadWrite' | 'ReadOnly';

/** A mapping written before bursts (journal and etcd snapshots) has none: upgradeModel sets them to 0. */
export interface Mapping extends QosLimits {
  sdcId: Id;
  accessMode: AccessMode;
}

/** ScaleIO's volume types: a snapshot is always thin, whatever its ancestor is. */
export type VolumeType = 'ThinProvisioned' | 'ThickProvisioned' | 'Snapshot';

/** ScaleIO's removal modes (removeVolume's removeMode). */
export type RemoveMode = 'ONLY_ME' | 'INCLUDING_DESCENDANTS' | 'DESCENDANTS_ONLY' | 'WHOLE_VTREE';
export const removeModes: readonly RemoveMode[] = ['ONLY_ME', 'INCLUDING_DESCENDANTS', 'DESCENDANTS_ONLY', 'WHOLE_VTREE'];

export interface Volume {
  id: Id;
  name: string;
  storagePoolId: Id;
  vtreeId: Id;
  sizeBytes: number;
  volumeType: VolumeType;
  mappings: Mapping[];
  creationTimeMs: number;
  /**
   * The volume this is a snapshot of (ScaleIO's ancestorVolumeId); null for a base volume.
   * When the ancestor is removed alone (ONLY_ME), its snapshots take its own ancestor.
   */
  ancestorVolumeId: Id | null;
  /** Its head generation in its V-Tree: where its writes go, where its reads start. */
  generation: number;
  /** 'ReadOnly' (read-only snapshots): every mapping of it is read-only. */
  accessModeLimit: AccessMode;
  /** The snapshotVolumes call (consistency group) that made it; null for a base volume. */
  snapshotGroupId: Id | null;
}

/**
 * A volume tree: a base volume and every snapshot of it (and of its snapshots), sharing
 * chunks through a tree of generations (docs/snapshots.md). Placement hashes the V-Tree id,
 * so every generation of a chunk index lives in the same placement group.
 */
export interface VTree {
  id: Id;
  storagePoolId: Id;
  /** The next generation number to give out: numbers are never reused within a tree. */
  nextGeneration: number;
  /** Every live generation (decimal string) and its parent; the root's parent is null (as VTreeMap.generations). */
  generations: Record<string, number | null>;
}

/**
 * A consistency-group snapshot between its two phases: recorded by beginSnapshot (which
 * freezes the V-Trees of the volumes named), ended by commitSnapshot or abortSnapshot.
 * At most one at a time. A Master that finds one it did not begin aborts it.
 */
export interface SnapshotBarrier {
  groupId: Id;
  defs: SnapshotDef[];
  startedMs: number;
}

/** One volume of a snapshotVolumes call: the snapshot's name is decided before the command (the controller names unnamed ones). */
export interface SnapshotDef {
  volumeId: Id;
  name: string;
  readOnly: boolean;
}

export interface SystemModel {
  clusterId: Id;
  name: string;
  /** Every placement change bumps it; SDSs refuse IO stamped with another. */
  epoch: number;
  /** Ids are derived from the cluster id and this counter: deterministic on replay. */
  idCounter: number;
  protectionDomains: Record<Id, ProtectionDomain>;
  storagePools: Record<Id, StoragePool>;
  faultSets: Record<Id, FaultSet>;
  sdss: Record<Id, Sds>;
  devices: Record<Id, Device>;
  sdcs: Record<Id, Sdc>;
  volumes: Record<Id, Volume>;
  vtrees: Record<Id, VTree>;
  /** Snapshots one V-Tree may hold (ScaleIO's default 31, at most snapshotsPerVtreeMax). */
  snapshotsPerVtree: number;
  snapshotBarrier: SnapshotBarrier | null;
}

export function emptyModel(clusterId: Id, name: string): SystemModel {
  return {
    clusterId,
    name,
    epoch: 1,
    idCounter: 0,
    protectionDomains: {},
    storagePools: {},
    faultSets: {},
    sdss: {},
    devices: {},
    sdcs: {},
    volumes: {},
    vtrees: {},
    snapshotsPerVtree: snapshotsPerVtreeDefault,
    snapshotBarrier: null,
  };
}

/**
 * Brings a model written before snapshots (a journal snapshot, an etcd snapshot) to the
 * current shape, in place: every volume the base of its own V-Tree with the one generation
 * 0, no barrier, the default snapshot limit; every mapping written before QoS bursts without
 * a burst. Idempotent, and deterministic, so that every MDM
 * loading the same snapshot gets the same model.
 */
export function upgradeModel(model: SystemModel): SystemModel {
  const loaded = model as Partial<SystemModel> & SystemModel;
  loaded.vtrees ??= {};
  loaded.snapshotsPerVtree ??= snapshotsPerVtreeDefault;
  loaded.snapshotBarrier ??= null;
  for (const volume of Object.values(loaded.volumes)) {
    const old = volume as Partial<Volume> & Volume;
    old.ancestorVolumeId ??= null;
    old.generation ??= 0;
    old.accessModeLimit ??= 'ReadWrite';
    old.snapshotGroupId ??= null;
    for (const mapping of volume.mappings) {
      const before = mapping as Partial<Mapping> & Mapping;
      before.iopsBurst ??= 0;
      before.bandwidthBurstKbps ??= 0;
      before.burstSeconds ??= 0;
    }
    loaded.vtrees[volume.vtreeId] ??= { id: volume.vtreeId, storagePoolId: volume.storagePoolId, nextGeneration: 1, generations: { '0': null } };
  }
  return loaded;
}

/**
 * The fields set by what the MDM sees (observe() in state-machine.ts), not by commands alone:
 * connection state, heartbeat times, bytes in use. Nothing journals their changes, so a
 * model restored from the journal differs from the live one only here; every MDM (after a
 * restart, or a Slave taking over) starts them over as "disconnected until it calls".
 * Named once, here, so that what a replay must reproduce is said in one place.
 */
export const volatileFields = ['state', 'lastHeartbeatMs', 'lastSeenMs', 'usedBytes', 'snapshotBytes'] as const;

/**
 * The model as JSON without its volatile fields: what the journal (snapshot and commands)
 * must restore exactly. Device and volume states are named `state` too but are durable, so
 * only SDS and SDC connection states are left out.
 */
export function durableJson(model: SystemModel): string {
  const volatile = new Set<string>(volatileFields);
  return JSON.stringify(model, function (this: unknown, key: string, value: unknown) {
    if (!volatile.has(key)) return value;
    if (key !== 'state') return undefined;
    // `this` is the object holding the key: SDSs and SDCs have a connection state, devices a durable one.
    const holder = this as { lastHeartbeatMs?: unknown; lastSeenMs?: unknown };
    return holder.lastHeartbeatMs !== undefined || holder.lastSeenMs !== undefined ? undefined : value;
  });
}
