// The seam between the MDM's front ends (the REST API) and its core (state machine,
// journal, SDS and SDC connections). The REST layer validates and translates requests
// into commands and calls these; it never touches the model directly except to read.

import type { RebuildFailure, VolumeQosStats } from '../wire/mdm-ops.js';
import type { SdsStats } from '../wire/sds-ops.js';
import type { Id } from './model.js';
import type { Applied, Command, StateMachine } from './state-machine.js';
import type { FillDefaults } from './health.js';
import type { LatencyWindow } from './sdc-latency.js';

export interface AddDeviceRequest {
  sdsId: Id;
  storagePoolId: Id;
  /** The device path on the SDS's host, e.g. /dev/sdb or a file. */
  path: string;
  name: string | null;
  /** Format the device even if it holds a filesystem, partition table or LVM label. */
  force: boolean;
}

/** Rebuild and rebalance progress, as the dashboard and the REST API show it. */
export interface RebuildStatus {
  state: 'idle' | 'running' | 'waiting';
  /** Groups whose second copy is filling, and the most there were since the last idle. */
  groupsSyncing: number;
  groupsTotal: number;
  percent: number;
  bytesDone: number;
  bytesPerSecond: number;
  /** Estimated from the groups left and the bytes a group holds; null while unknown. */
  etaSeconds: number | null;
  /** Down SDSs not yet out: their copies are re-created elsewhere at `outAtMs`. */
  pendingOut: Array<{ sdsId: Id; name: string; outAtMs: number }>;
  /**
   * Syncing groups whose last fill job failed on a chunk (still syncing, never counted in
   * sync): all counted, the first rebuildFailingShownMax listed, with the chunk, the side
   * that failed, the cause, the jobs failed in a row and when the next is ordered.
   */
  groupsFailing: number;
  failing: RebuildFailingView[];
}

/** One failing fill, as the dashboard and REST show it (health.ts RebuildFailing): the SDS's failure and where and when. */
export interface RebuildFailingView extends RebuildFailure {
  poolId: Id;
  pgIndex: number;
  sourceSdsId: Id;
  targetSdsId: Id;
  attempts: number;
  failedAtMs: number;
  retryAtMs: number;
}

/** One volume of a snapshotVolumes call (ScaleIO's snapshotDefs entry). */
export interface SnapshotRequest {
  volumeId: Id;
  /** Null: the MDM names it '<volume name>-snap-<n>' (unique, within nameBytesMax). */
  name: string | null;
  /** A read-only snapshot: accessModeLimit ReadOnly, so every mapping of it is read-only. */
  readOnly: boolean;
}

/** What snapshotVolumes answers (ScaleIO's { volumeIdList, snapshotGroupId }). */
export interface SnapshotResult {
  snapshotGroupId: Id;
  /** The snapshots' ids, in the order of the request. */
  volumeIds: Id[];
}

export interface MdmController {
  /** Read-only use: queries (find, poolCapacity, placementMap) and the model. */
  readonly state: StateMachine;
  /**
   * Applies a command: validated by the state machine (MdmError on refusal, nothing
   * changed), written to the journal and synced, and the new map pushed when the epoch
   * moved. Resolves once the change is durable.
   */
  execute(command: Command): Promise<Applied>;
  /**
   * Asks the SDS to take the device (it formats a blank one, and refuses one that holds
   * anything unless forced: MdmError 'MB_ERR_DEVICE_FORMATTED' with the SDS's message),
   * then records it in the pool.
   */
  addDevice(request: AddDeviceRequest): Promise<Applied>;
  /**
   * Snapshots one or more volumes with one crash point (a consistency group when several):
   * beginSnapshot freezes their V-Trees, every SDS of their pools confirms it drained its
   * writes to them, then commitSnapshot creates the snapshots (docs/snapshots.md). Refused
   * like a command (MdmError: a missing volume, a name taken, MB_ERR_SNAPSHOT_LIMIT, a barrier
   * already under way: MB_ERR_SNAPSHOT_BARRIER); an SDS that does not confirm within
   * snapshotBarrierTimeoutMs aborts it (MB_ERR_SNAPSHOT_BARRIER naming the SDSs; nothing made).
   */
  snapshotVolumes(requests: SnapshotRequest[]): Promise<SnapshotResult>;
  /**
   * Restore: `volumeId` gets the content of `sourceVolumeId` (same V-Tree: else
   * MB_ERR_VTREE_MISMATCH), keeping its id and mappings. Refused with MB_ERR_VOLUME_OPEN (409)
   * while an SDC reports the volume open (NBD clients attached).
   */
  overwriteVolumeContent(volumeId: Id, sourceVolumeId: Id): Promise<void>;
  /** The last statistics an SDS reported, or null if it never did. */
  sdsStats(sdsId: Id): SdsStats | null;
  /** Rebuild and rebalance progress over every pool. */
  rebuildStatus(): RebuildStatus;
  /** The QoS statistics an SDC's last heartbeat carried for its mapped volumes ([] if none yet). */
  sdcQosStats(sdcId: Id): readonly VolumeQosStats[];
  /** What an SDC did with a volume between its last two heartbeats, for client latency (sdc-latency.ts). Absent: never known. */
  sdcLatencyWindow?(sdcId: Id, volumeId: Id): LatencyWindow | undefined;
  /**
   * The IP address an SDC last registered from (ScaleIO's sdcIp), null if it has not since
   * this MDM started. Absent: never known.
   */
  sdcAddress?(sdcId: Id): string | null;
  /**
   * The MDM's start options that throttle the fills of a pool never given an IO priority
   * policy (--rebuild-rate-under-load, --rebuild-inflight): the REST API shows them as that
   * pool's policy. Absent: the built-in defaults.
   */
  fillDefaults?(): FillDefaults;
}

/** What a controller reports when nothing is rebuilding. */
export function idleRebuildStatus(groupsTotal: number): RebuildStatus {
  return { state: 'idle', groupsSyncing: 0, groupsTotal, percent: 100, bytesDone: 0, bytesPerSecond: 0, etaSeconds: 0, pendingOut: [], groupsFailing: 0, failing: [] };
}
