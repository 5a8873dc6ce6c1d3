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
//   thickCapacityInUseInKb                   raw     both copies of the thick volumes' sizes (reserved at
//                                                    creation; ScaleIO's meaning, which Cinder halves)
//   thickCapacityProvisionedInKb             net     sizes of thick volumes (meshblock's)
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
import type { IntegrityCounters, ScrubProgress, SdsStats } from '../wire/sds-ops.js';
import { integrityCounterNames, integrityOf, noIntegrity, scrubOf, scrubPercent, unrepairableRanges, type UnrepairableReport } from './integrity.js';
import type { Device, Id, Sdc, Sds, Volume } from './model.js';
import { instanceTables, type RestType, type SdcQosLookup } from './rest-objects.js';
import type { PoolCapacity, StateMachine } from './state-machine.js';
import type { RebuildStatus } from './controller.js';
import type { LatencyWindow } from './sdc-latency.js';
import { InvalidArgumentError } from '../common/errors.js';
import { RestError } from './rest-errors.js';

/** Types that have /relationships/Statistics and querySelectedStatistics: every one (restTypes). */
export const restStatisticsTypes: readonly RestType[] = ['System', 'ProtectionDomain', 'StoragePool', 'FaultSet', 'Sds', 'Device', 'Sdc', 'Volume', 'VTree'];

export interface RestCapacity {
  maxCapacityInKb: number;
  spareCapacityInKb: number;
  usableCapacityInKb: number;
  /** Raw, as ScaleIO counts it (Cinder's driver halves it): both copies of the thick volumes' sizes. */
  thickCapacityInUseInKb: number;
  /** meshblock: net, the thick volumes' sizes (as thinCapacityProvisionedInKb for thin ones). */
  thickCapacityProvisionedInKb: number;
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
  'thickCapacityProvisionedInKb',
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
  /** 4 KiB blocks of this device that failed their checksums since its SDS started. */
  checksumErrors: number;
  /** What the scrub read of this device since its SDS started. */
  scrubbedInKb: number;
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
  /** Checksums at rest on this SDS since it started, in 4 KiB blocks (zeros from an SDS that does not report them; docs/integrity.md). */
  integrity: IntegrityCounters;
  /** Its background scrub, as it last reported it; null if it never did. */
  scrub: ScrubProgress | null;
  /** The current pass's progress in percent (one decimal); null without a scrub report. */
  scrubPassPercent: number | null;
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
    thickCapacityInUseInKb: kb(2 * capacity.thickReservedBytes),
    thickCapacityProvisionedInKb: kb(capacity.thickReservedBytes),
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
    checksumErrors: wholeCount(reported?.checksumErrors),
    scrubbedInKb: kb(wholeCount(reported?.scrubbedBytes)),
  };
}

const wholeCount = (value: unknown): number => (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : 0);

export function sdsStatistics(state: StateMachine, sds: Sds, stats: SdsStats | null): RestSdsStatistics {
  const devices = state.sdsDevices(sds.id).map((device) => deviceStatistics(device, stats));
  const scrub = scrubOf(stats);
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
    integrity: integrityOf(stats),
    scrub,
    scrubPassPercent: scrub === null ? null : scrubPercent(scrub),
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


// ---------------------------------------------------------------------------------------
// ScaleIO's statistics properties, and querySelectedStatistics.
//
// Every object's Statistics reply is meshblock's own fields above plus the ScaleIO
// properties meshblock can compute (docs/rest-statistics.md lists which are exact, which
// estimated). POST /api/types/{Type}/instances/action/querySelectedStatistics picks
// properties of that same reply, `{"properties": [...], "ids": [...]}` or `{..., "allIds": ""}`
// → `{"<id>": {"<property>": value}}`. A property the reply does not have is refused whole
// with 400, as ScaleIO refuses one it does not know ("StoragePool properties should contain
// only following values: ..."): a client probing for a property (Cinder's driver probes
// thinCapacityAllocatedInKb on old versions) learns it is not there, instead of reading a
// made-up 0.

/**
 * ScaleIO's bandwidth counter: over the last numSeconds seconds, numOccured IOs moved
 * totalWeightInKb. Rates are totalWeightInKb / numSeconds and numOccured / numSeconds;
 * numSeconds 0 means nothing is known (no report yet), and clients read the rate as 0.
 */
export interface RestBwc {
  numSeconds: number;
  totalWeightInKb: number;
  numOccured: number;
}

/**
 * ScaleIO's background scanner statistics (names as PowerFlex's Statistics replies spell
 * them; docs/integrity.md). Error counts are in 4 KiB blocks, meshblock's checksum unit:
 *   BackgroundScannedInMB                 what the scrub read (per device: scrubbedBytes; per SDS: its scrub's bytesScanned)
 *   backgroundScanReadErrorCount          blocks failing their checksum (read path and scrub): checksumErrors
 *   backgroundScanFixedReadErrorCount     of those, rewritten from the other copy: repairedBlocks
 *   backgroundScanCompareErrorCount       both copies verified but different: mismatchedBlocks
 *   backgroundScanFixedCompareErrorCount  the same (the secondary is always rewritten from the primary)
 */
export interface RestScannerStatistics {
  BackgroundScannedInMB: number;
  backgroundScanReadErrorCount: number;
  backgroundScanFixedReadErrorCount: number;
  backgroundScanCompareErrorCount: number;
  backgroundScanFixedCompareErrorCount: number;
}

/** The scanner statistics of some SDSs (each counted whole), and their integrity counters summed. */
export function scannerStatistics(sources: Pick<StatisticsSources, 'sdsStats'>, sdsIds: readonly Id[]): RestScannerStatistics & { integrity: IntegrityCounters } {
  const integrity = { ...noIntegrity };
  let scannedBytes = 0;
  for (const sdsId of sdsIds) {
    const stats = sources.sdsStats(sdsId);
    const counters = integrityOf(stats);
    for (const name of integrityCounterNames) integrity[name] += counters[name];
    scannedBytes += scrubOf(stats)?.bytesScanned ?? 0;
  }
  return { ...scannerCounts(scannedBytes, integrity), integrity };
}

function scannerCounts(scannedBytes: number, integrity: IntegrityCounters): RestScannerStatistics {
  return {
    BackgroundScannedInMB: Math.floor(scannedBytes / (1024 * 1024)),
    backgroundScanReadErrorCount: integrity.checksumErrors,
    backgroundScanFixedReadErrorCount: integrity.repairedBlocks,
    backgroundScanCompareErrorCount: integrity.mismatchedBlocks,
    backgroundScanFixedCompareErrorCount: integrity.mismatchedBlocks,
  };
}

/** A pool's, or the system's, ranges bad on both copies (meshblock's `unrepairableRanges`). */
export function restUnrepairable(sources: Pick<StatisticsSources, 'state' | 'sdsStats'>, poolId?: Id): UnrepairableReport[] {
  return unrepairableRanges(sources.state.model, sources.sdsStats, poolId);
}

/** Where statistics come from: the model, and what SDSs and SDCs last reported (MdmController). */
export interface StatisticsSources {
  state: StateMachine;
  sdsStats: (sdsId: Id) => SdsStats | null;
  sdcQos: SdcQosLookup;
  rebuildStatus: () => RebuildStatus;
  /** An SDC's latency window for a volume (MdmController.sdcLatencyWindow); absent: no client latency known. */
  sdcLatency?: (sdcId: Id, volumeId: Id) => LatencyWindow | undefined;
}

const noBwc: RestBwc = { numSeconds: 0, totalWeightInKb: 0, numOccured: 0 };

/**
 * A Bwc of per-second rates: the SDSs report rates over their last reporting interval, so
 * the window is one second of that rate (numSeconds 1), or unknown (0) without a report.
 */
function rateBwc(known: boolean, iosPerSecond: number, bytesPerSecond: number): RestBwc {
  return known ? { numSeconds: 1, totalWeightInKb: kb(bytesPerSecond), numOccured: Math.round(iosPerSecond) } : noBwc;
}

/**
 * ScaleIO's client latency counters, userDataSdcReadLatency and userDataSdcWriteLatency: Bwcs
 * whose weight is microseconds instead of KiB, so that totalWeightInKb / numOccured is the
 * mean latency in µs (how PowerFlex's clients read them). From the windows of the (SDC,
 * volume) pairs given (sdc-latency.ts), as one second of their summed rates, like the other
 * Bwcs here; numSeconds 0 when no pair has a window (no SDC timing IO, or not two
 * heartbeats yet). Rounded to whole IOs per second, so below half an IO a second the count
 * reads 0 and the latency unknown.
 */
function latencyBwcs(sources: StatisticsSources, pairs: Iterable<{ sdcId: Id; volumeId: Id }>): Record<'userDataSdcReadLatency' | 'userDataSdcWriteLatency', RestBwc> {
  let known = false;
  let readsPerSecond = 0;
  let readUsPerSecond = 0;
  let writesPerSecond = 0;
  let writeUsPerSecond = 0;
  for (const { sdcId, volumeId } of pairs) {
    const window = sources.sdcLatency?.(sdcId, volumeId);
    if (window === undefined) continue;
    known = true;
    readsPerSecond += window.reads / window.seconds;
    readUsPerSecond += window.readLatencyUsSum / window.seconds;
    writesPerSecond += window.writes / window.seconds;
    writeUsPerSecond += window.writeLatencyUsSum / window.seconds;
  }
  if (!known) return { userDataSdcReadLatency: noBwc, userDataSdcWriteLatency: noBwc };
  return {
    userDataSdcReadLatency: { numSeconds: 1, totalWeightInKb: Math.round(readUsPerSecond), numOccured: Math.round(readsPerSecond) },
    userDataSdcWriteLatency: { numSeconds: 1, totalWeightInKb: Math.round(writeUsPerSecond), numOccured: Math.round(writesPerSecond) },
  };
}

/** The (SDC, volume) pairs of some volumes' mappings. */
function* mappingPairs(volumes: Iterable<Volume>): Iterable<{ sdcId: Id; volumeId: Id }> {
  for (const volume of volumes) for (const mapping of volume.mappings) yield { sdcId: mapping.sdcId, volumeId: volume.id };
}

interface DeviceRates {
  known: boolean;
  readIops: number;
  writeIops: number;
  readBytesPerSecond: number;
  writeBytesPerSecond: number;
}

function scrubbedBytesOf(sources: StatisticsSources, device: Device): number {
  return wholeCount(sources.sdsStats(device.sdsId)?.devices.find((entry) => entry.deviceId === device.id)?.scrubbedBytes);
}

/** The read and write rates of some devices, summed, from their SDSs' last reports. */
function deviceRates(sources: StatisticsSources, devices: readonly Device[]): DeviceRates {
  const rates: DeviceRates = { known: false, readIops: 0, writeIops: 0, readBytesPerSecond: 0, writeBytesPerSecond: 0 };
  const bySds = new Map<Id, SdsStats | null>();
  for (const device of devices) {
    if (!bySds.has(device.sdsId)) bySds.set(device.sdsId, sources.sdsStats(device.sdsId));
    const reported = bySds.get(device.sdsId)?.devices.find((entry) => entry.deviceId === device.id);
    if (reported === undefined) continue;
    rates.known = true;
    rates.readIops += reported.readIops;
    rates.writeIops += reported.writeIops;
    rates.readBytesPerSecond += reported.readBytesPerSecond;
    rates.writeBytesPerSecond += reported.writeBytesPerSecond;
  }
  return rates;
}

/** What the devices did: every read and write they served (client IO, mirroring, rebuild). */
function deviceBwcs(rates: DeviceRates): Record<'totalReadBwc' | 'totalWriteBwc', RestBwc> {
  return {
    totalReadBwc: rateBwc(rates.known, rates.readIops, rates.readBytesPerSecond),
    totalWriteBwc: rateBwc(rates.known, rates.writeIops, rates.writeBytesPerSecond),
  };
}

/**
 * Client IO of a pool, a protection domain or the system, from its devices: reads are
 * served by primary copies only, so device reads are primary reads; every client write is
 * written twice (primary, then secondary), so each is half the device writes. Estimates:
 * rebuild and rebalance copies are counted in as well (docs/rest-statistics.md).
 */
function clientBwcs(rates: DeviceRates): Record<string, RestBwc> {
  const reads = rateBwc(rates.known, rates.readIops, rates.readBytesPerSecond);
  const writes = rateBwc(rates.known, rates.writeIops / 2, rates.writeBytesPerSecond / 2);
  return { ...deviceBwcs(rates), primaryReadBwc: reads, userDataReadBwc: reads, primaryWriteBwc: writes, secondaryWriteBwc: writes, userDataWriteBwc: writes };
}

/**
 * ScaleIO's capacity properties that meshblock's RestCapacity names differently or not at
 * all. ScaleIO counts thick and thin allocation raw (both copies: Cinder's driver halves
 * them). netUnusedCapacityInKb is Cinder's free space, and with netCapacityInUseInKb its
 * total: it is what a new volume can still be given, capacityAvailableForVolumeAllocationInKb
 * (thick reservations not yet written are neither in use nor free), so that Cinder never
 * schedules onto space meshblock would refuse.
 */
function scaleIoCapacity(capacity: PoolCapacity): Record<string, number> {
  return {
    capacityLimitInKb: kb(capacity.rawBytes),
    thinCapacityAllocatedInKb: kb(2 * capacity.thinProvisionedBytes),
    netUnusedCapacityInKb: renderCapacity(capacity).capacityAvailableForVolumeAllocationInKb,
    degradedHealthyCapacityInKb: kb(capacity.degradedBytes),
    netSnapshotCapacityInKb: kb(capacity.snapshotInUseBytes),
  };
}

function sumCapacity(state: StateMachine, poolIds: readonly Id[]): { meshblock: RestCapacity; scaleIo: Record<string, number> } {
  const meshblock = Object.fromEntries(restCapacityFields.map((field) => [field, 0])) as unknown as RestCapacity;
  const scaleIo: Record<string, number> = {};
  for (const poolId of poolIds) {
    const capacity = state.poolCapacity(poolId);
    const pool = renderCapacity(capacity);
    for (const field of restCapacityFields) meshblock[field] += pool[field];
    for (const [field, value] of Object.entries(scaleIoCapacity(capacity))) scaleIo[field] = (scaleIo[field] ?? 0) + value;
  }
  return { meshblock, scaleIo };
}

const byId = <T extends { id: Id }>(items: readonly T[]): Id[] => items.map((item) => item.id).sort();

export interface RestProtectionDomainStatistics extends RestCapacity {
  numOfStoragePools: number;
  numOfFaultSets: number;
  numOfSds: number;
  numOfDevices: number;
  numOfVolumes: number;
  storagePoolIds: Id[];
  faultSetIds: Id[];
  sdsIds: Id[];
}

export function protectionDomainStatistics(state: StateMachine, domainId: Id): RestProtectionDomainStatistics {
  const model = state.model;
  const pools = Object.values(model.storagePools).filter((pool) => pool.protectionDomainId === domainId);
  const poolIds = new Set(pools.map((pool) => pool.id));
  const sdss = Object.values(model.sdss).filter((sds) => sds.protectionDomainId === domainId);
  const faultSets = Object.values(model.faultSets).filter((set) => set.protectionDomainId === domainId);
  return {
    ...sumCapacity(state, byId(pools)).meshblock,
    numOfStoragePools: pools.length,
    numOfFaultSets: faultSets.length,
    numOfSds: sdss.length,
    numOfDevices: Object.values(model.devices).filter((device) => poolIds.has(device.storagePoolId)).length,
    numOfVolumes: Object.values(model.volumes).filter((volume) => poolIds.has(volume.storagePoolId)).length,
    storagePoolIds: byId(pools),
    faultSetIds: byId(faultSets),
    sdsIds: byId(sdss),
  };
}

/**
 * The volumes grouped by parent, by V-Tree and by SDC, each built on first use and once per
 * reply: querySelectedStatistics with allIds over 100k volumes stays linear instead of
 * scanning every volume for each one.
 */
export class VolumeIndex {
  private byParent: Map<Id, Volume[]> | null = null;
  private byTree: Map<Id, Volume[]> | null = null;
  private bySdc: Map<Id, Id[]> | null = null;

  constructor(private readonly volumes: Record<Id, Volume>) {}

  /** Snapshots taken of this volume (or snapshot). */
  children(volumeId: Id): readonly Volume[] {
    this.byParent ??= groupBy(Object.values(this.volumes), (volume) => (volume.ancestorVolumeId === null ? [] : [volume.ancestorVolumeId]));
    return this.byParent.get(volumeId) ?? [];
  }

  treeVolumes(vtreeId: Id): readonly Volume[] {
    this.byTree ??= groupBy(Object.values(this.volumes), (volume) => [volume.vtreeId]);
    return this.byTree.get(vtreeId) ?? [];
  }

  /** Ids of the volumes mapped to an SDC, sorted. */
  sdcVolumeIds(sdcId: Id): readonly Id[] {
    if (this.bySdc === null) {
      const grouped = groupBy(Object.values(this.volumes), (volume) => volume.mappings.map((mapping) => mapping.sdcId));
      this.bySdc = new Map([...grouped].map(([key, volumes]) => [key, byId(volumes)]));
    }
    return this.bySdc.get(sdcId) ?? [];
  }
}

function groupBy<T>(items: readonly T[], keys: (item: T) => readonly Id[]): Map<Id, T[]> {
  const groups = new Map<Id, T[]>();
  for (const item of items) {
    for (const key of keys(item)) {
      const group = groups.get(key);
      if (group === undefined) groups.set(key, [item]);
      else group.push(item);
    }
  }
  return groups;
}

/** The Statistics of one object, meshblock's fields and ScaleIO's; undefined if there is no such object. */
export function objectStatistics(sources: StatisticsSources, type: RestType, id: Id, index = new VolumeIndex(sources.state.model.volumes)): Record<string, unknown> | undefined {
  const { state } = sources;
  const model = state.model;
  const lookup = <T>(table: Record<Id, T>): T | undefined => (Object.hasOwn(table, id) ? table[id] : undefined);
  switch (type) {
    case 'System': {
      if (id !== model.clusterId) return undefined;
      const poolIds = Object.keys(model.storagePools).sort();
      const rebuild = sources.rebuildStatus();
      // The MDM knows one copy rate, of rebuilds and rebalances together: ScaleIO's forward
      // rebuild (protection being restored) is what it is while a failure is being repaired.
      const copying: RestBwc = rebuild.state === 'idle' ? noBwc : { numSeconds: 1, totalWeightInKb: kb(rebuild.bytesPerSecond), numOccured: 0 };
      return {
        ...systemStatistics(state),
        ...sumCapacity(state, poolIds).scaleIo,
        ...clientBwcs(deviceRates(sources, Object.values(model.devices))),
        fwdRebuildReadBwc: copying,
        fwdRebuildWriteBwc: copying,
        ...latencyBwcs(sources, mappingPairs(Object.values(model.volumes))),
        numOfSdc: Object.keys(model.sdcs).length,
        numOfMappedToAllVolumes: 0,
        numOfThickBaseVolumes: Object.values(model.volumes).filter((volume) => volume.volumeType === 'ThickProvisioned').length,
        numOfThinBaseVolumes: Object.values(model.volumes).filter((volume) => volume.volumeType === 'ThinProvisioned').length,
        protectionDomainIds: Object.keys(model.protectionDomains).sort(),
        sdcIds: Object.keys(model.sdcs).sort(),
        ...scannerStatistics(sources, Object.keys(model.sdss).sort()),
        unrepairableRanges: restUnrepairable(sources),
      };
    }
    case 'ProtectionDomain': {
      if (lookup(model.protectionDomains) === undefined) return undefined;
      const meshblock = protectionDomainStatistics(state, id);
      const devices = Object.values(model.devices).filter((device) => meshblock.storagePoolIds.includes(device.storagePoolId));
      return { ...meshblock, ...sumCapacity(state, meshblock.storagePoolIds).scaleIo, ...clientBwcs(deviceRates(sources, devices)) };
    }
    case 'StoragePool': {
      if (lookup(model.storagePools) === undefined) return undefined;
      const devices = state.poolDevices(id);
      const volumes = Object.values(model.volumes).filter((volume) => volume.storagePoolId === id);
      return {
        ...storagePoolStatistics(state, id),
        ...scaleIoCapacity(state.poolCapacity(id)),
        ...clientBwcs(deviceRates(sources, devices)),
        deviceIds: byId(devices),
        volumeIds: byId(volumes),
        vtreeIds: Object.values(model.vtrees).filter((tree) => tree.storagePoolId === id).map((tree) => tree.id).sort(),
        // The SDSs with a device in the pool, each counted whole (an SDS in two pools counts in both).
        ...scannerStatistics(sources, [...new Set(devices.map((device) => device.sdsId))].sort()),
        // What the scrub read of this pool's devices, exactly (per device).
        BackgroundScannedInMB: Math.floor(devices.reduce((total, device) => total + scrubbedBytesOf(sources, device), 0) / (1024 * 1024)),
        unrepairableRanges: restUnrepairable(sources, id),
      };
    }
    case 'FaultSet': {
      if (lookup(model.faultSets) === undefined) return undefined;
      const sdss = Object.values(model.sdss).filter((sds) => sds.faultSetId === id);
      const devices = sdss.flatMap((sds) => state.sdsDevices(sds.id));
      return {
        numOfSds: sdss.length,
        sdsIds: byId(sdss),
        numOfDevices: devices.length,
        maxCapacityInKb: kb(devices.reduce((total, device) => total + device.capacityBytes, 0)),
        capacityInUseInKb: kb(devices.reduce((total, device) => total + device.usedBytes, 0)),
        ...deviceBwcs(deviceRates(sources, devices)),
      };
    }
    case 'Sds': {
      const sds = lookup(model.sdss);
      if (sds === undefined) return undefined;
      const devices = state.sdsDevices(id);
      return { ...sdsStatistics(state, sds, sources.sdsStats(id)), ...scannerStatistics(sources, [id]), ...deviceBwcs(deviceRates(sources, devices)), capacityLimitInKb: kb(devices.reduce((total, device) => total + device.capacityBytes, 0)), deviceIds: byId(devices) };
    }
    case 'Device': {
      const device = lookup(model.devices);
      if (device === undefined) return undefined;
      const meshblock = deviceStatistics(device, sources.sdsStats(device.sdsId));
      return {
        ...meshblock,
        ...deviceBwcs(deviceRates(sources, [device])),
        capacityLimitInKb: kb(device.capacityBytes),
        // Per device the SDS counts checksum failures and scrubbed bytes only (not repairs or comparisons).
        BackgroundScannedInMB: Math.floor(scrubbedBytesOf(sources, device) / (1024 * 1024)),
        backgroundScanReadErrorCount: meshblock.checksumErrors,
      };
    }
    case 'Sdc': {
      const sdc = lookup(model.sdcs);
      if (sdc === undefined) return undefined;
      const volumeIds = index.sdcVolumeIds(id);
      return { ...sdcStatistics(state, sdc, sources.sdcQos), volumeIds, ...latencyBwcs(sources, volumeIds.map((volumeId) => ({ sdcId: id, volumeId }))) };
    }
    case 'Volume': {
      const volume = lookup(model.volumes);
      if (volume === undefined) return undefined;
      // Descendants: snapshots of it, and of those, down the V-Tree.
      let descendants = 0;
      const pending = [id];
      for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
        for (const child of index.children(next)) {
          descendants += 1;
          pending.push(child.id);
        }
      }
      return {
        ...volumeStatistics(state, volume, sources.sdcQos),
        mappedSdcIds: volume.mappings.map((mapping) => mapping.sdcId),
        numOfChildVolumes: index.children(id).length,
        numOfDescendantVolumes: descendants,
        ...latencyBwcs(sources, mappingPairs([volume])),
      };
    }
    case 'VTree': {
      const tree = lookup(model.vtrees);
      if (tree === undefined) return undefined;
      const volumes = index.treeVolumes(id);
      return {
        // Every volume of the tree, its base volume included (Cinder's image cache limits clones with it).
        numOfVolumes: volumes.length,
        numOfSnapshots: volumes.filter((volume) => volume.volumeType === 'Snapshot').length,
        volumeIds: byId(volumes),
      };
    }
  }
}

/** Every id of a type, for allIds. */
function allIdsOf(state: StateMachine, type: RestType): Id[] {
  const model = state.model;
  return type === 'System' ? [model.clusterId] : Object.keys(instanceTables(model)[type]).sort();
}

/** querySelectedStatistics' body, checked: which properties of which objects. */
export interface StatisticsQuery {
  properties: string[];
  /** Null: every object of the type (ScaleIO's allIds). */
  ids: Id[] | null;
}

const queryFields = ['properties', 'ids', 'allIds'];

/**
 * Reads `{properties, ids}` or `{properties, allIds}`. allIds is a flag: any value counts
 * (ScaleIO's clients send "" and [""]). With `allIdsDefault` (the System, which has one
 * instance) neither is needed.
 */
export function readStatisticsQuery(body: unknown, allIdsDefault = false): StatisticsQuery {
  if (body === null || body === undefined || typeof body !== 'object' || Array.isArray(body)) throw new InvalidArgumentError('body', 'must be a JSON object like {"properties": ["capacityInUseInKb"], "allIds": ""}');
  const fields = body as Record<string, unknown>;
  const unknown = Object.keys(fields).filter((field) => !queryFields.includes(field));
  if (unknown.length > 0) throw new InvalidArgumentError(unknown[0] as string, `not a field of querySelectedStatistics (fields: ${queryFields.join(', ')})`);
  const properties = fields['properties'];
  if (!Array.isArray(properties) || properties.length === 0 || !properties.every((property) => typeof property === 'string' && property !== '')) {
    throw new InvalidArgumentError('properties', 'must be a non-empty array of property names, e.g. ["capacityInUseInKb"]');
  }
  const hasIds = Object.hasOwn(fields, 'ids') && fields['ids'] !== undefined;
  const hasAllIds = Object.hasOwn(fields, 'allIds');
  if (hasIds && hasAllIds) throw new InvalidArgumentError('ids', 'give either ids or allIds, not both');
  if (hasAllIds || (!hasIds && allIdsDefault)) return { properties: properties as string[], ids: null };
  if (!hasIds) throw new InvalidArgumentError('ids', 'missing: give ids (an array of ids) or allIds ("")');
  const ids = fields['ids'];
  if (!Array.isArray(ids) || !ids.every((entry) => typeof entry === 'string' && entry !== '')) throw new InvalidArgumentError('ids', 'must be an array of ids, e.g. ["8f3bb15300000000"]');
  return { properties: properties as string[], ids: ids as Id[] };
}

/**
 * querySelectedStatistics on a type: for each id, the properties asked for. An unknown id
 * is a 404 (nothing else is answered); an unknown property a 400 naming the ones there are.
 */
export function querySelectedStatistics(sources: StatisticsSources, type: RestType, query: StatisticsQuery): Record<Id, Record<string, unknown>> {
  const ids = query.ids ?? allIdsOf(sources.state, type);
  const reply: Record<Id, Record<string, unknown>> = {};
  // The properties a type has do not depend on the object: the first one's decide.
  let known: ReadonlySet<string> | null = null;
  const index = new VolumeIndex(sources.state.model.volumes);
  for (const id of ids) {
    const statistics = objectStatistics(sources, type, id, index);
    if (statistics === undefined) throw new RestError('MB_ERR_NOT_FOUND', `ids: no ${type} with id ${id}`, 404);
    known ??= new Set(Object.keys(statistics));
    refuseUnknown(type, query.properties, known);
    reply[id] = Object.fromEntries(query.properties.map((property) => [property, statistics[property]]));
  }
  // allIds of a type with no instance: {} (there is nothing to check the names against).
  return reply;
}

function refuseUnknown(type: RestType, properties: readonly string[], known: ReadonlySet<string>): void {
  const unknown = properties.filter((property) => !known.has(property));
  if (unknown.length === 0) return;
  // ScaleIO's wording, so that a client matching on it still recognises the refusal.
  throw new InvalidArgumentError('properties', `${unknown.join(', ')}: not known; ${type} properties should contain only following values: ${[...known].sort().join(',')}`);
}

/**
 * POST /api/instances/System[::id]/action/querySelectedStatistics: the System's properties,
 * `{"properties": [...]}` → `{"<property>": value}` (one instance: no ids, no id level), as
 * the System's entry of ScaleIO's several-types reply. `idSuffix` is '' or '::ID'.
 */
export function systemSelectedStatistics(sources: StatisticsSources, idSuffix: string | undefined, body: unknown): Record<string, unknown> {
  const systemId = sources.state.model.clusterId;
  const id = idSuffix === undefined || idSuffix === '' ? systemId : idSuffix.slice(2);
  if (id !== systemId) throw new RestError('MB_ERR_NOT_FOUND', `no System with id ${id}`, 404);
  const query = readStatisticsQuery(body, true);
  return querySelectedStatistics(sources, 'System', { properties: query.properties, ids: [systemId] })[systemId] as Record<string, unknown>;
}

/**
 * POST /api/instances/querySelectedStatistics, ScaleIO's several-types form that monitoring
 * tools use: `{"selectedStatisticsList": [{"type", "properties", "ids" | "allIds"}, ...]}` →
 * `{"<type>": {"<id>": {...}}}`, and for the System `{"System": {"<property>": value}}`.
 * One bad entry refuses the whole query (as ScaleIO does), its error naming the entry.
 */
export function readStatisticsList(sources: StatisticsSources, body: unknown, typeOf: (name: string) => RestType): Record<string, unknown> {
  if (body === null || body === undefined || typeof body !== 'object' || Array.isArray(body)) throw new InvalidArgumentError('body', 'must be a JSON object like {"selectedStatisticsList": [{"type": "System", "properties": ["capacityInUseInKb"]}]}');
  const fields = body as Record<string, unknown>;
  const unknown = Object.keys(fields).filter((field) => field !== 'selectedStatisticsList');
  if (unknown.length > 0) throw new InvalidArgumentError(unknown[0] as string, 'not a field of querySelectedStatistics (fields: selectedStatisticsList)');
  const list = fields['selectedStatisticsList'];
  if (!Array.isArray(list) || list.length === 0) throw new InvalidArgumentError('selectedStatisticsList', 'must be a non-empty array of {"type", "properties", "ids" | "allIds"}');
  const reply: Record<string, unknown> = {};
  list.forEach((entry: unknown, index) => {
    const where = `selectedStatisticsList[${index}]`;
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw new InvalidArgumentError(where, 'must be an object {"type", "properties", "ids" | "allIds"}');
    const { type: typeName, ...rest } = entry as Record<string, unknown>;
    if (typeof typeName !== 'string') throw new InvalidArgumentError(`${where}.type`, 'must be a type name, e.g. "StoragePool"');
    const type = typeOf(typeName);
    if (Object.hasOwn(reply, type)) throw new InvalidArgumentError(`${where}.type`, `${type} is asked for twice`);
    let query: StatisticsQuery;
    try {
      query = readStatisticsQuery(rest, type === 'System');
    } catch (err) {
      if (err instanceof InvalidArgumentError) throw new InvalidArgumentError(`${where}.${err.field}`, err.message.slice(err.field.length + 2));
      throw err;
    }
    const selected = querySelectedStatistics(sources, type, query);
    reply[type] = type === 'System' ? selected[sources.state.model.clusterId] : selected;
  });
  return reply;
}
