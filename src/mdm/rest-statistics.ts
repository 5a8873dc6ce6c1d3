// The REST API's statistics: what GET /api/instances/{Type}::{id}/relationships/Statistics
// answers for each object. Pure functions of the state machine's model and queries and of
// what SDSs and SDCs reported; the CLI imports these types to read the replies.
//
// Sizes are in KiB ("InKb", as ScaleIO counts them), rounded down. Capacity statistics of
// a storage pool (and, summed, of the system), from StateMachine.poolCapacity():
//
//   field                                    copies  meaning
//   maxCapacityInKb                          raw     capacity of the pool's healthy devices
//   spareCapacityInKb                        raw     held back for rebuilds (sparePercentage of raw)
//   usableCapacityInKb                       net     (raw - spare) / 2: room for volume data, two copies
//   thickCapacityInUseInKb                   net     sizes of thick volumes (reserved at creation)
//   thinCapacityProvisionedInKb              net     sizes of thin volumes (promised, not reserved)
//   capacityInUseInKb                        raw     chunk bytes written, both copies, as the SDSs report
//   netCapacityInUseInKb                     net     half of capacityInUseInKb
//   protectedCapacityInKb                    raw     in use, in placement groups with both copies
//   degradedCapacityInKb                     net     data with one readable copy in sync (estimated)
//   failedCapacityInKb                       net     data with no readable copy: IO to it fails (estimated)
//   unusedCapacityInKb                       raw     neither spare, in use, nor reserved for thick volumes
//   snapCapacityInUseInKb                    raw     of capacityInUseInKb, what only snapshots reach (no base
//                                                    volume reads it), as the SDSs report (ScaleIO < 3.5's name)
//   snapCapacityInUseOccupiedInKb            raw     the same: chunks are allocated only when written
//   snapshotCapacityInKb                     raw     the same (ScaleIO 3.5's name, which Cinder reads)
//   snapshotCapacityProvisionedInKb          net     sizes of snapshots (thin, whatever their ancestor)
//   capacityAvailableForVolumeAllocationInKb net     the largest thick volume that fits now (before
//                                                    rounding to the pool's volume granularity)
//
// "raw" counts both copies of the data; "net" counts what volumes see.

import type { VolumeQosStats } from '../wire/mdm-ops.js';
import type { SdsStats } from '../wire/sds-ops.js';
import type { Device, Id, Sdc, Sds, Volume } from './model.js';
import type { RestType, SdcQosLookup } from './rest-objects.js';
import type { PoolCapacity, StateMachine } from './state-machine.js';

/** Types that have /relationships/Statistics. */
export const restStatisticsTypes: readonly RestType[] = ['System', 'StoragePool', 'Sds', 'Device', 'Sdc', 'Volume'];

export interface RestCapacity {
  maxCapacityInKb: number;
  spareCapacityInKb: number;
  usableCapacityInKb: number;
  thickCapacityInUseInKb: number;
  thinCapacityProvisionedInKb: number;
  capacityInUseInKb: number;
  netCapacityInUseInKb: number;
  protectedCapacityInKb: number;
  degradedCapacityInKb: number;
  failedCapacityInKb: number;
  unusedCapacityInKb: number;
  capacityAvailableForVolumeAllocationInKb: number;
  snapCapacityInUseInKb: number;
  snapCapacityInUseOccupiedInKb: number;
  snapshotCapacityInKb: number;
  /** meshblock: sizes of the snapshots, as thinCapacityProvisionedInKb for thin base volumes. */
  snapshotCapacityProvisionedInKb: number;
}

export const restCapacityFields: ReadonlyArray<keyof RestCapacity> = [
  'maxCapacityInKb',
  'spareCapacityInKb',
  'usableCapacityInKb',
  'thickCapacityInUseInKb',
  'thinCapacityProvisionedInKb',
  'capacityInUseInKb',
  'netCapacityInUseInKb',
  'protectedCapacityInKb',
  'degradedCapacityInKb',
  'failedCapacityInKb',
  'unusedCapacityInKb',
  'capacityAvailableForVolumeAllocationInKb',
  'snapCapacityInUseInKb',
  'snapCapacityInUseOccupiedInKb',
  'snapshotCapacityInKb',
  'snapshotCapacityProvisionedInKb',
];

export interface RestStoragePoolStatistics extends RestCapacity {
  numOfDevices: number;
  numOfFailedDevices: number;
  numOfVolumes: number;
  numOfThickBaseVolumes: number;
  numOfThinBaseVolumes: number;
  numOfSnapshots: number;
  numOfVtrees: number;
  numOfMappedToAllVolumes: 0;
}

export interface RestSystemStatistics extends RestCapacity {
  numOfProtectionDomains: number;
  numOfStoragePools: number;
  numOfFaultSets: number;
  numOfSds: number;
  numOfDevices: number;
  numOfSdc: number;
  numOfVolumes: number;
  numOfSnapshots: number;
  numOfVtrees: number;
  numOfMappedVolumes: number;
}

export interface RestDeviceStatistics {
  deviceId: Id;
  /** False until the device's SDS reported statistics; the counters are then 0. */
  statisticsAvailable: boolean;
  maxCapacityInKb: number;
  capacityInUseInKb: number;
  /** Of capacityInUseInKb, what only snapshots reach (from the SDS's heartbeats; 0 until it counts them). */
  snapCapacityInUseInKb: number;
  /** Per second, over the SDS's last reporting interval. */
  readIops: number;
  writeIops: number;
  readBwInKbps: number;
  writeBwInKbps: number;
  /** Since the SDS started. */
  totalReadIos: number;
  totalWriteIos: number;
  totalReadInKb: number;
  totalWriteInKb: number;
  /** The SDS's last error on this device, if it failed. */
  errorMessage: string | null;
}

export interface RestRebuildProgress {
  storagePoolId: Id;
  pgIndex: number;
  targetSdsId: Id;
  state: 'waiting' | 'running' | 'done' | 'failed';
  chunksDone: number;
  chunksTotal: number;
  doneInKb: number;
  errorMessage: string | null;
}

export interface RestSdsStatistics {
  sdsId: Id;
  statisticsAvailable: boolean;
  /** The placement epoch the SDS reported working from (0 if it never reported). */
  mapEpoch: number;
  numOfDevices: number;
  maxCapacityInKb: number;
  capacityInUseInKb: number;
  snapCapacityInUseInKb: number;
  thickCapacityReservedInKb: number;
  readIops: number;
  writeIops: number;
  readBwInKbps: number;
  writeBwInKbps: number;
  rebuilds: RestRebuildProgress[];
  devices: RestDeviceStatistics[];
}

/** One mapped volume's QoS on an SDC: the SDC's own report (VolumeQosStats) and the volume's name. */
export interface RestSdcVolumeQos extends VolumeQosStats {
  volumeName: string;
}

/** meshblock's Sdc statistics: its limiters, per volume, as its last heartbeat reported them. */
export interface RestSdcStatistics {
  sdcId: Id;
  /** False until the SDC (connected now) reported its QoS. */
  statisticsAvailable: boolean;
  numOfMappedVolumes: number;
  volumes: RestSdcVolumeQos[];
}

/** One SDC's share of a volume's QoS (volumeStatistics). */
export interface RestVolumeSdcQos {
  sdcId: Id;
  sdcName: string;
  statisticsAvailable: boolean;
  limitIops: number;
  limitBwInKbps: number;
  qosRequests: number;
  qosInKb: number;
  qosThrottledRequests: number;
  qosThrottledMs: number;
  qosWaiting: number;
}

/**
 * Volume statistics: the QoS of every SDC it is mapped to, and their sums. Each SDC limits
 * its own mapping (ScaleIO's semantics), so the sums are what the volume was held back in
 * all, not a limit of their own.
 */
export interface RestVolumeStatistics {
  volumeId: Id;
  numOfMappedSdcs: number;
  qosRequests: number;
  qosInKb: number;
  qosThrottledRequests: number;
  qosThrottledMs: number;
  qosWaiting: number;
  sdcs: RestVolumeSdcQos[];
}


const kb = (bytes: number): number => Math.floor(bytes / 1024);

export function renderCapacity(capacity: PoolCapacity): RestCapacity {
  const usedRawBytes = capacity.protectedBytes + capacity.degradedBytes;
  // The same sum StateMachine.checkFits() refuses a thick volume with.
  const committedBytes = capacity.thickReservedBytes + Math.max(0, capacity.inUseBytes - capacity.thickReservedBytes);
  return {
    maxCapacityInKb: kb(capacity.rawBytes),
    spareCapacityInKb: kb(capacity.spareBytes),
    usableCapacityInKb: kb(capacity.usableBytes),
    thickCapacityInUseInKb: kb(capacity.thickReservedBytes),
    thinCapacityProvisionedInKb: kb(capacity.thinProvisionedBytes),
    capacityInUseInKb: kb(usedRawBytes),
    netCapacityInUseInKb: kb(capacity.inUseBytes),
    protectedCapacityInKb: kb(capacity.protectedBytes),
    degradedCapacityInKb: kb(capacity.degradedBytes),
    failedCapacityInKb: kb(capacity.failedBytes),
    unusedCapacityInKb: kb(capacity.unusedBytes),
    capacityAvailableForVolumeAllocationInKb: kb(Math.max(0, capacity.usableBytes - committedBytes)),
    // Raw, as capacityInUseInKb: both copies of what only snapshots reach.
    snapCapacityInUseInKb: kb(2 * capacity.snapshotInUseBytes),
    snapCapacityInUseOccupiedInKb: kb(2 * capacity.snapshotInUseBytes),
    snapshotCapacityInKb: kb(2 * capacity.snapshotInUseBytes),
    snapshotCapacityProvisionedInKb: kb(capacity.snapshotProvisionedBytes),
  };
}

export function storagePoolStatistics(state: StateMachine, poolId: Id): RestStoragePoolStatistics {
  const devices = state.poolDevices(poolId);
  const volumes = Object.values(state.model.volumes).filter((volume) => volume.storagePoolId === poolId);
  return {
    ...renderCapacity(state.poolCapacity(poolId)),
    numOfDevices: devices.length,
    numOfFailedDevices: devices.filter((device) => device.state === 'failed').length,
    numOfVolumes: volumes.length,
    numOfThickBaseVolumes: volumes.filter((volume) => volume.volumeType === 'ThickProvisioned').length,
    numOfThinBaseVolumes: volumes.filter((volume) => volume.volumeType === 'ThinProvisioned').length,
    numOfSnapshots: volumes.filter((volume) => volume.volumeType === 'Snapshot').length,
    numOfVtrees: Object.values(state.model.vtrees).filter((tree) => tree.storagePoolId === poolId).length,
    numOfMappedToAllVolumes: 0,
  };
}

export function systemStatistics(state: StateMachine): RestSystemStatistics {
  const model = state.model;
  const total = Object.fromEntries(restCapacityFields.map((field) => [field, 0])) as unknown as RestCapacity;
  for (const poolId of Object.keys(model.storagePools)) {
    const pool = renderCapacity(state.poolCapacity(poolId));
    for (const field of restCapacityFields) total[field] += pool[field];
  }
  return {
    ...total,
    numOfProtectionDomains: Object.keys(model.protectionDomains).length,
    numOfStoragePools: Object.keys(model.storagePools).length,
    numOfFaultSets: Object.keys(model.faultSets).length,
    numOfSds: Object.keys(model.sdss).length,
    numOfDevices: Object.keys(model.devices).length,
    numOfSdc: Object.keys(model.sdcs).length,
    numOfVolumes: Object.keys(model.volumes).length,
    numOfSnapshots: Object.values(model.volumes).filter((volume) => volume.volumeType === 'Snapshot').length,
    numOfVtrees: Object.keys(model.vtrees).length,
    numOfMappedVolumes: Object.values(model.volumes).filter((volume) => volume.mappings.length > 0).length,
  };
}

export function deviceStatistics(device: Device, stats: SdsStats | null): RestDeviceStatistics {
  const reported = stats?.devices.find((entry) => entry.deviceId === device.id);
  return {
    deviceId: device.id,
    statisticsAvailable: reported !== undefined,
    maxCapacityInKb: kb(device.capacityBytes),
    capacityInUseInKb: kb(reported?.usedBytes ?? device.usedBytes),
    snapCapacityInUseInKb: kb(device.snapshotBytes ?? 0),
    readIops: Math.round(reported?.readIops ?? 0),
    writeIops: Math.round(reported?.writeIops ?? 0),
    readBwInKbps: kb(reported?.readBytesPerSecond ?? 0),
    writeBwInKbps: kb(reported?.writeBytesPerSecond ?? 0),
    totalReadIos: reported?.reads ?? 0,
    totalWriteIos: reported?.writes ?? 0,
    totalReadInKb: kb(reported?.readBytes ?? 0),
    totalWriteInKb: kb(reported?.writeBytes ?? 0),
    errorMessage: reported?.error ?? null,
  };
}

export function sdsStatistics(state: StateMachine, sds: Sds, stats: SdsStats | null): RestSdsStatistics {
  const devices = state.sdsDevices(sds.id).map((device) => deviceStatistics(device, stats));
  const sum = (field: 'readIops' | 'writeIops' | 'readBwInKbps' | 'writeBwInKbps' | 'capacityInUseInKb' | 'snapCapacityInUseInKb' | 'maxCapacityInKb'): number =>
    devices.reduce((total, device) => total + device[field], 0);
  return {
    sdsId: sds.id,
    statisticsAvailable: stats !== null,
    mapEpoch: stats?.epoch ?? 0,
    numOfDevices: devices.length,
    maxCapacityInKb: sum('maxCapacityInKb'),
    capacityInUseInKb: sum('capacityInUseInKb'),
    snapCapacityInUseInKb: sum('snapCapacityInUseInKb'),
    thickCapacityReservedInKb: kb(stats?.reservedBytes ?? 0),
    readIops: sum('readIops'),
    writeIops: sum('writeIops'),
    readBwInKbps: sum('readBwInKbps'),
    writeBwInKbps: sum('writeBwInKbps'),
    rebuilds: (stats?.rebuilds ?? []).map((rebuild) => ({
      storagePoolId: rebuild.poolId,
      pgIndex: rebuild.pgIndex,
      targetSdsId: rebuild.targetSdsId,
      state: rebuild.state,
      chunksDone: rebuild.chunksDone,
      chunksTotal: rebuild.chunksTotal,
      doneInKb: kb(rebuild.bytesDone),
      errorMessage: rebuild.error,
    })),
    devices,
  };
}

export function sdcStatistics(state: StateMachine, sdc: Sdc, sdcQos: SdcQosLookup): RestSdcStatistics {
  const model = state.model;
  const reported = sdcQos(sdc.id);
  return {
    sdcId: sdc.id,
    statisticsAvailable: reported.length > 0,
    numOfMappedVolumes: Object.values(model.volumes).filter((volume) => volume.mappings.some((mapping) => mapping.sdcId === sdc.id)).length,
    volumes: reported.map((stats) => ({ ...stats, volumeName: model.volumes[stats.volumeId]?.name ?? '' })),
  };
}

export function volumeStatistics(state: StateMachine, volume: Volume, sdcQos: SdcQosLookup): RestVolumeStatistics {
  const model = state.model;
  const sdcs = volume.mappings.map((mapping): RestVolumeSdcQos => {
    const stats = sdcQos(mapping.sdcId).find((entry) => entry.volumeId === volume.id);
    return {
      sdcId: mapping.sdcId,
      sdcName: model.sdcs[mapping.sdcId]?.name ?? '',
      statisticsAvailable: stats !== undefined,
      limitIops: mapping.iopsLimit,
      limitBwInKbps: mapping.bandwidthLimitKbps,
      qosRequests: stats?.requests ?? 0,
      qosInKb: kb(stats?.bytes ?? 0),
      qosThrottledRequests: stats?.throttledRequests ?? 0,
      qosThrottledMs: Math.round(stats?.throttledMs ?? 0),
      qosWaiting: stats?.waiting ?? 0,
    };
  });
  const sum = (field: 'qosRequests' | 'qosInKb' | 'qosThrottledRequests' | 'qosThrottledMs' | 'qosWaiting'): number => sdcs.reduce((total, entry) => total + entry[field], 0);
  return {
    volumeId: volume.id,
    numOfMappedSdcs: sdcs.length,
    qosRequests: sum('qosRequests'),
    qosInKb: sum('qosInKb'),
    qosThrottledRequests: sum('qosThrottledRequests'),
    qosThrottledMs: sum('qosThrottledMs'),
    qosWaiting: sum('qosWaiting'),
    sdcs,
  };
}

