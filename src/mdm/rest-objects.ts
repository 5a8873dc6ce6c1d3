// What the REST API returns: the model's objects in ScaleIO's shape and vocabulary (field
// names of the ScaleIO REST API where it has them, `links` with rel/href), and meshblock's
// dashboard. Statistics (relationships/Statistics, querySelectedStatistics) are
// rest-statistics.ts. Pure functions of the state machine's model and queries; the CLI
// imports these types to read the replies.

import type { VolumeQosStats } from '../wire/mdm-ops.js';
import type { IntegrityCounters, ScrubProgress, SdsStats } from '../wire/sds-ops.js';
import { integrityOf, scrubOf, scrubPercent, unrepairableRanges, type UnrepairableReport } from './integrity.js';
import type { AccessMode, Device, FaultSet, Id, IoPriorityPolicyName, Mapping, ProtectionDomain, Sdc, Sds, StoragePool, SystemModel, Volume, VolumeType, VTree } from './model.js';
import { ioPriorityShown, type FillDefaults } from './health.js';
import { scrubPolicyOf } from './model.js';
import type { ScrubPolicy } from '../wire/placement.js';
import type { StateMachine } from './state-machine.js';
import type { RebuildStatus } from './controller.js';
import { restStatisticsTypes, storagePoolStatistics, systemStatistics, type RestStoragePoolStatistics, type RestSystemStatistics } from './rest-statistics.js';

// The statistics types moved to rest-statistics.ts; named here too for the readers that
// import every reply type from this file (the CLI, the tests).
export type {
  RestCapacity,
  RestDeviceStatistics,
  RestRebuildProgress,
  RestSdcStatistics,
  RestSdcVolumeQos,
  RestSdsStatistics,
  RestStoragePoolStatistics,
  RestSystemStatistics,
  RestVolumeSdcQos,
  RestVolumeStatistics,
} from './rest-statistics.js';

/** The REST types, ScaleIO's names, and the model table each one lists. */
export const restTypes = ['System', 'ProtectionDomain', 'StoragePool', 'FaultSet', 'Sds', 'Device', 'Sdc', 'Volume', 'VTree'] as const;
export type RestType = (typeof restTypes)[number];

export const meshblockVersionName = 'meshblock 0.1.0';

/** The model's instances of each REST type but the System (which is not in a table). */
export function instanceTables(model: SystemModel): {
  [T in Exclude<RestType, 'System'>]: Record<Id, T extends 'VTree' ? VTree : { id: Id; name: string; protectionDomainId?: Id | null }>;
} {
  return {
    ProtectionDomain: model.protectionDomains,
    StoragePool: model.storagePools,
    FaultSet: model.faultSets,
    Sds: model.sdss,
    Device: model.devices,
    Sdc: model.sdcs,
    Volume: model.volumes,
    VTree: model.vtrees,
  };
}

export interface RestLink {
  rel: string;
  href: string;
}

interface RestObject {
  id: Id;
  name: string;
  links: RestLink[];
}

export interface RestSystem extends RestObject {
  systemVersionName: string;
  /** meshblock: the placement epoch SDSs and SDCs work from. */
  mapEpoch: number;
  /** meshblock: snapshots one V-Tree may hold (System action setSnapshotsPerVtree). */
  snapshotsPerVtree: number;
}

export interface RestProtectionDomain extends RestObject {
  systemId: Id;
  protectionDomainState: 'Active';
}

export interface RestStoragePool extends RestObject {
  protectionDomainId: Id;
  sparePercentage: number;
  zeroPaddingEnabled: boolean;
  /**
   * ScaleIO's layout: medium granularity (1 MiB-class chunks, no compression), which is what
   * meshblock's pools are. Cinder reads it: only FineGranularity pools compress.
   */
  dataLayout: 'MediumGranularity';
  /** meshblock: chunk size (ScaleIO's is fixed at 1 MiB). */
  chunkSizeInKb: number;
  /** meshblock: volume sizes are rounded up to this (ScaleIO: 8 GiB). */
  volumeGranularityInKb: number;
  /** meshblock: placement groups of the pool. */
  pgCount: number;
  // Rebuild and rebalance IO priority (ScaleIO's names; docs/rebuild-policy.md). Per device
  // of the source SDS; a pool never set shows the MDM's start options (FromStartOptions).
  rebuildIoPriorityPolicy: IoPriorityPolicyName;
  rebuildIoPriorityNumOfConcurrentIosPerDevice: number;
  rebuildIoPriorityBwLimitPerDeviceInKbps: number;
  /** meshblock: never set; the numbers are the MDM's --rebuild-* options, per SDS (not per device). */
  rebuildIoPriorityFromStartOptions: boolean;
  rebalanceIoPriorityPolicy: IoPriorityPolicyName;
  rebalanceIoPriorityNumOfConcurrentIosPerDevice: number;
  rebalanceIoPriorityBwLimitPerDeviceInKbps: number;
  rebalanceIoPriorityFromStartOptions: boolean;
  // The background scrub (ScaleIO's background device scanner; docs/integrity.md).
  /** ScaleIO's values; Disabled is the pool policy 'off'. */
  backgroundScannerMode: RestScannerMode;
  /** Per device, KB/s (kept while Disabled: enabling again without a rate uses it). */
  backgroundScannerBWLimitKBps: number;
  /** What the scanner does with a bad copy and with copies that differ: meshblock always repairs from the good copy and reports. */
  bgScannerCompareErrorAction: 'ReportAndFix';
  bgScannerReadErrorAction: 'ReportAndFix';
  /** meshblock: the pool never set a scanner policy; the values shown are the defaults. */
  backgroundScannerFromDefault: boolean;
}

export type RestScannerMode = 'Disabled' | 'DeviceOnly' | 'DataComparison';

/** The pool policy's mode in ScaleIO's words. */
export function restScannerMode(mode: ScrubPolicy['mode']): RestScannerMode {
  return mode === 'off' ? 'Disabled' : mode === 'deviceOnly' ? 'DeviceOnly' : 'DataComparison';
}

export interface RestFaultSet extends RestObject {
  protectionDomainId: Id;
}

export interface RestSds extends RestObject {
  /** Null while the SDS is registered but not yet added to a protection domain. */
  protectionDomainId: Id | null;
  faultSetId: Id | null;
  /**
   * meshblock: the host label the SDS registered with (`sds start --host`, or the machine's
   * hostname for shards); SDSs of one label never hold both copies of a group. Null: none.
   */
  hostLabel: string | null;
  /** 'Normal' when connected, 'Disconnected' while heartbeats are missing, 'Down' once declared dead. */
  sdsState: 'Normal' | 'Disconnected' | 'Down';
  mdmConnectionState: 'Connected' | 'Disconnected';
  /** meshblock: 'Joined' once in a protection domain, 'Registered' before. */
  membershipState: 'Joined' | 'Registered';
  ipList: Array<{ ip: string; role: 'all' }>;
  port: number;
  /** meshblock: HOST:PORT of the data listener. */
  address: string;
  /** meshblock: last heartbeat, milliseconds since the Unix epoch. */
  lastHeartbeatTimeMs: number;
}

export interface RestDevice extends RestObject {
  sdsId: Id;
  storagePoolId: Id;
  deviceCurrentPathName: string;
  deviceOriginalPathName: string;
  capacityInKb: number;
  maxCapacityInKb: number;
  /** meshblock: chunk bytes in use, as the SDS last reported. */
  capacityInUseInKb: number;
  deviceState: 'Normal' | 'Failed' | 'RemovePending';
  errorState: 'None' | 'Error';
}

export interface RestSdc extends RestObject {
  sdcGuid: string;
  /** The IP address the SDC last registered from (ScaleIO's field); null if not since the MDM started. */
  sdcIp: string | null;
  mdmConnectionState: 'Connected' | 'Disconnected';
  sdcApproved: true;
  /** meshblock: last contact, milliseconds since the Unix epoch. */
  lastSeenTimeMs: number;
}

export interface RestMappedSdcInfo {
  sdcId: Id;
  sdcName: string;
  accessMode: 'ReadWrite' | 'ReadOnly';
  /** 0 = unlimited. */
  limitIops: number;
  /** ScaleIO's name: MiB per second, rounded down; 0 = unlimited. */
  limitBwInMbps: number;
  /** meshblock: the exact bandwidth limit in KiB/s (0 = unlimited). */
  limitBwInKbps: number;
  /** meshblock: the burst (librbd's `_burst`), IOPS and KiB/s while an idle volume spends what it saved (0 = none), and for how long at most. */
  limitIopsBurst: number;
  limitBwBurstInKbps: number;
  limitBurstSeconds: number;
  /**
   * meshblock: what the SDC's limiter did, from its last heartbeat (0 while unknown: the SDC
   * is not connected, or has not beaten since): reads and writes counted and held back, and
   * their waits summed, since the SDC process started; requests waiting now.
   */
  qosRequests: number;
  qosThrottledRequests: number;
  qosThrottledMs: number;
  qosWaiting: number;
}

export interface RestVolume extends RestObject {
  sizeInKb: number;
  /** 'Snapshot' for a snapshot (always thin, whatever its ancestor is). */
  volumeType: VolumeType;
  storagePoolId: Id;
  /** The volume tree: a base volume and every snapshot taken from it or from its snapshots. */
  vtreeId: Id;
  /** The volume (or snapshot) this snapshot was taken of; null for a base volume. */
  ancestorVolumeId: Id | null;
  /** The snapshotVolumes call that made this snapshot (its snapshotGroupId); null for a base volume. */
  consistencyGroupId: Id | null;
  /** 'ReadOnly': every mapping of it is read-only (a read-only snapshot). */
  accessModeLimit: AccessMode;
  /** null when the volume is mapped to no SDC, as ScaleIO (Cinder reads "not null" as "mapped"). */
  mappedSdcInfo: RestMappedSdcInfo[] | null;
  mappingToAllSdcsEnabled: false;
  /** Seconds since the Unix epoch, as ScaleIO. */
  creationTime: number;
}

/** A volume tree (ScaleIO's VTree): the base volume and its snapshots share its chunks. */
export interface RestVTree extends RestObject {
  /** The base volume of the tree; null once it was removed and only snapshots are left. */
  baseVolumeId: Id | null;
  storagePoolId: Id;
  /** meshblock: volumes of the tree, the base volume included. */
  numOfVolumes: number;
  numOfSnapshots: number;
}

export type RestInstance = RestSystem | RestProtectionDomain | RestStoragePool | RestFaultSet | RestSds | RestDevice | RestSdc | RestVolume | RestVTree;

/** A mapping with a limit, as the dashboard lists them. */
export interface RestDashboardQos extends RestMappedSdcInfo {
  volumeId: Id;
  volumeName: string;
}

export interface RestDashboardPool extends RestStoragePoolStatistics {
  id: Id;
  name: string;
  protectionDomainId: Id;
  protectionDomainName: string;
  /** The pool's scrub policy (ScaleIO's background device scanner), as the pool object shows it. */
  backgroundScannerMode: RestScannerMode;
  backgroundScannerBWLimitKBps: number;
}

/** One SDS's checksums at rest and scrub, as its last heartbeat said (docs/integrity.md). */
export interface RestDashboardSdsIntegrity {
  sdsId: Id;
  sdsName: string;
  /** Since the SDS started, in 4 KiB blocks; zeros from an SDS that does not report them. */
  integrity: IntegrityCounters;
  /** Null: the SDS never reported a scrub (not connected yet, or from before the scrub). */
  scrub: ScrubProgress | null;
  /** The current pass, in percent (one decimal); null without a scrub report. */
  scrubPassPercent: number | null;
}

/** meshblock's GET /api/dashboard: everything `meshblock dashboard` shows, in one reply. */
export interface RestDashboard {
  system: { id: Id; name: string; mapEpoch: number; systemVersionName: string };
  capacity: RestSystemStatistics;
  storagePools: RestDashboardPool[];
  health: {
    sdsConnected: number;
    sdsDisconnected: number;
    sdsDown: number;
    /** Registered SDSs not yet added to a protection domain. */
    sdsUnassigned: number;
    devicesNormal: number;
    devicesFailed: number;
    devicesRemoving: number;
    sdcConnected: number;
    sdcDisconnected: number;
    degradedCapacityInKb: number;
    failedCapacityInKb: number;
    rebuildsRunning: number;
    /** Bytes of data with one copy in sync, and with none (IO to them fails). */
    degradedBytes: number;
    failedBytes: number;
    /** Volumes with chunks in degraded groups, and in groups with no readable copy. */
    volumesDegraded: string[];
    volumesFailed: string[];
    rebuild: RebuildStatus;
  };
  /** meshblock: every mapping with a QoS limit, by volume name then SDC name, and what it held back. */
  qos: RestDashboardQos[];
  /** meshblock: checksums at rest and the scrub, per SDS by name, and every range bad on both copies (IO to it fails with EIO). */
  integrity: { sds: RestDashboardSdsIntegrity[]; unrepairable: UnrepairableReport[] };
}

const kb = (bytes: number): number => Math.floor(bytes / 1024);

export function instanceHref(type: RestType, id: Id): string {
  return `/api/instances/${type}::${id}`;
}

function links(type: RestType, id: Id, parents: Array<[string, RestType, Id | null]>, related: readonly string[]): RestLink[] {
  const self = instanceHref(type, id);
  return [
    { rel: 'self', href: self },
    ...related.map((other) => ({ rel: `/api/${type}/relationship/${other}`, href: `${self}/relationships/${other}` })),
    ...parents.filter((parent): parent is [string, RestType, Id] => parent[2] !== null).map(([field, parentType, parentId]) => ({ rel: `/api/parent/relationship/${field}`, href: instanceHref(parentType, parentId) })),
  ];
}

/**
 * The children each type lists under /relationships/{Type}, with the field of the child
 * that points at the parent; Statistics is served separately.
 */
export const restRelationships: Readonly<Partial<Record<RestType, Partial<Record<RestType, string>>>>> = {
  System: { ProtectionDomain: '', Sdc: '' },
  ProtectionDomain: { StoragePool: 'protectionDomainId', FaultSet: 'protectionDomainId', Sds: 'protectionDomainId' },
  StoragePool: { Device: 'storagePoolId', Volume: 'storagePoolId', VTree: 'storagePoolId' },
  FaultSet: { Sds: 'faultSetId' },
  Sds: { Device: 'sdsId' },
  Sdc: { Volume: '' },
  VTree: { Volume: 'vtreeId' },
};


function related(type: RestType): string[] {
  return withStatistics(type, Object.keys(restRelationships[type] ?? {}));
}

function withStatistics(type: RestType, others: string[]): string[] {
  return restStatisticsTypes.includes(type) && !others.includes('Statistics') ? [...others, 'Statistics'] : others;
}

export function renderSystem(model: SystemModel): RestSystem {
  return {
    id: model.clusterId,
    name: model.name,
    systemVersionName: meshblockVersionName,
    mapEpoch: model.epoch,
    snapshotsPerVtree: model.snapshotsPerVtree,
    links: links('System', model.clusterId, [], withStatistics('System', related('System'))),
  };
}

export function renderProtectionDomain(model: SystemModel, domain: ProtectionDomain): RestProtectionDomain {
  return {
    id: domain.id,
    name: domain.name,
    systemId: model.clusterId,
    protectionDomainState: 'Active',
    links: links('ProtectionDomain', domain.id, [['systemId', 'System', model.clusterId]], related('ProtectionDomain')),
  };
}

export function renderStoragePool(pool: StoragePool, fillDefaults?: FillDefaults): RestStoragePool {
  const rebuild = ioPriorityShown(pool, 'rebuild', fillDefaults);
  const rebalance = ioPriorityShown(pool, 'rebalance', fillDefaults);
  const scrub = scrubPolicyOf(pool);
  return {
    id: pool.id,
    name: pool.name,
    protectionDomainId: pool.protectionDomainId,
    sparePercentage: pool.sparePercent,
    zeroPaddingEnabled: pool.zeroPadding,
    dataLayout: 'MediumGranularity',
    chunkSizeInKb: kb(pool.chunkBytes),
    volumeGranularityInKb: kb(pool.volumeGranularityBytes),
    pgCount: pool.pgCount,
    // Rebuild and rebalance IO priority (docs/rebuild-policy.md).
    rebuildIoPriorityPolicy: rebuild.policy,
    rebuildIoPriorityNumOfConcurrentIosPerDevice: rebuild.concurrentIosPerDevice,
    rebuildIoPriorityBwLimitPerDeviceInKbps: rebuild.bandwidthPerDeviceKbps,
    rebuildIoPriorityFromStartOptions: rebuild.isDefault,
    rebalanceIoPriorityPolicy: rebalance.policy,
    rebalanceIoPriorityNumOfConcurrentIosPerDevice: rebalance.concurrentIosPerDevice,
    rebalanceIoPriorityBwLimitPerDeviceInKbps: rebalance.bandwidthPerDeviceKbps,
    rebalanceIoPriorityFromStartOptions: rebalance.isDefault,
    backgroundScannerMode: restScannerMode(scrub.mode),
    backgroundScannerBWLimitKBps: scrub.rateKBps,
    bgScannerCompareErrorAction: 'ReportAndFix',
    bgScannerReadErrorAction: 'ReportAndFix',
    backgroundScannerFromDefault: scrub.isDefault,
    links: links('StoragePool', pool.id, [['protectionDomainId', 'ProtectionDomain', pool.protectionDomainId]], withStatistics('StoragePool', related('StoragePool'))),
  };
}

export function renderFaultSet(set: FaultSet): RestFaultSet {
  return {
    id: set.id,
    name: set.name,
    protectionDomainId: set.protectionDomainId,
    links: links('FaultSet', set.id, [['protectionDomainId', 'ProtectionDomain', set.protectionDomainId]], related('FaultSet')),
  };
}

export function renderSds(sds: Sds): RestSds {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(sds.address);
  const ip = match?.[1] ?? match?.[2] ?? sds.address;
  return {
    id: sds.id,
    name: sds.name,
    protectionDomainId: sds.protectionDomainId,
    faultSetId: sds.faultSetId,
    hostLabel: sds.host ?? null,
    sdsState: sds.state === 'connected' ? 'Normal' : sds.state === 'disconnected' ? 'Disconnected' : 'Down',
    mdmConnectionState: sds.state === 'connected' ? 'Connected' : 'Disconnected',
    membershipState: sds.protectionDomainId === null ? 'Registered' : 'Joined',
    ipList: [{ ip, role: 'all' }],
    port: Number(match?.[3] ?? 0),
    address: sds.address,
    lastHeartbeatTimeMs: sds.lastHeartbeatMs,
    links: links(
      'Sds',
      sds.id,
      [
        ['protectionDomainId', 'ProtectionDomain', sds.protectionDomainId],
        ['faultSetId', 'FaultSet', sds.faultSetId],
      ],
      withStatistics('Sds', related('Sds')),
    ),
  };
}

export function renderDevice(device: Device): RestDevice {
  return {
    id: device.id,
    name: device.name,
    sdsId: device.sdsId,
    storagePoolId: device.storagePoolId,
    deviceCurrentPathName: device.path,
    deviceOriginalPathName: device.path,
    capacityInKb: kb(device.capacityBytes),
    maxCapacityInKb: kb(device.capacityBytes),
    capacityInUseInKb: kb(device.usedBytes),
    deviceState: device.state === 'normal' ? 'Normal' : device.state === 'failed' ? 'Failed' : 'RemovePending',
    errorState: device.state === 'failed' ? 'Error' : 'None',
    links: links(
      'Device',
      device.id,
      [
        ['sdsId', 'Sds', device.sdsId],
        ['storagePoolId', 'StoragePool', device.storagePoolId],
      ],
      withStatistics('Device', related('Device')),
    ),
  };
}

/** Where an SDC last registered from (MdmController.sdcAddress); the default knows none. */
export type SdcAddressLookup = (sdcId: Id) => string | null;
const noAddress: SdcAddressLookup = () => null;

export function renderSdc(sdc: Sdc, sdcAddress: SdcAddressLookup = noAddress): RestSdc {
  return {
    id: sdc.id,
    name: sdc.name,
    sdcGuid: sdc.guid,
    sdcIp: sdcAddress(sdc.id),
    mdmConnectionState: sdc.state === 'connected' ? 'Connected' : 'Disconnected',
    sdcApproved: true,
    lastSeenTimeMs: sdc.lastSeenMs,
    links: links('Sdc', sdc.id, [], withStatistics('Sdc', related('Sdc'))),
  };
}

/**
 * Where the QoS statistics SDCs reported are read from (MdmController.sdcQosStats); the
 * default, none, renders every counter 0.
 */
export type SdcQosLookup = (sdcId: Id) => readonly VolumeQosStats[];
const noQos: SdcQosLookup = () => [];

/**
 * An SDC's report for one volume. Indexed per SDC on first use: a listing of every volume
 * reads each SDC's report once, not once per mapping (100k volumes on one SDC).
 */
function qosIndex(lookup: SdcQosLookup): (sdcId: Id, volumeId: Id) => VolumeQosStats | undefined {
  const bySdc = new Map<Id, Map<Id, VolumeQosStats>>();
  return (sdcId, volumeId) => {
    let volumes = bySdc.get(sdcId);
    if (volumes === undefined) {
      volumes = new Map(lookup(sdcId).map((stats) => [stats.volumeId, stats]));
      bySdc.set(sdcId, volumes);
    }
    return volumes.get(volumeId);
  };
}

function renderMappedSdcInfo(model: SystemModel, volume: Volume, mapping: Mapping, qos: ReturnType<typeof qosIndex>): RestMappedSdcInfo {
  const stats = qos(mapping.sdcId, volume.id);
  return {
    sdcId: mapping.sdcId,
    sdcName: model.sdcs[mapping.sdcId]?.name ?? '',
    accessMode: mapping.accessMode,
    limitIops: mapping.iopsLimit,
    limitBwInMbps: Math.floor(mapping.bandwidthLimitKbps / 1024),
    limitBwInKbps: mapping.bandwidthLimitKbps,
    limitIopsBurst: mapping.iopsBurst,
    limitBwBurstInKbps: mapping.bandwidthBurstKbps,
    limitBurstSeconds: mapping.burstSeconds,
    qosRequests: stats?.requests ?? 0,
    qosThrottledRequests: stats?.throttledRequests ?? 0,
    qosThrottledMs: Math.round(stats?.throttledMs ?? 0),
    qosWaiting: stats?.waiting ?? 0,
  };
}

export function renderVolume(model: SystemModel, volume: Volume, qos = qosIndex(noQos)): RestVolume {
  return {
    id: volume.id,
    name: volume.name,
    sizeInKb: kb(volume.sizeBytes),
    volumeType: volume.volumeType,
    storagePoolId: volume.storagePoolId,
    vtreeId: volume.vtreeId,
    ancestorVolumeId: volume.ancestorVolumeId,
    consistencyGroupId: volume.snapshotGroupId,
    accessModeLimit: volume.accessModeLimit,
    mappedSdcInfo: volume.mappings.length === 0 ? null : volume.mappings.map((mapping) => renderMappedSdcInfo(model, volume, mapping, qos)),
    mappingToAllSdcsEnabled: false,
    creationTime: Math.floor(volume.creationTimeMs / 1000),
    links: links(
      'Volume',
      volume.id,
      [
        ['storagePoolId', 'StoragePool', volume.storagePoolId],
        ['vtreeId', 'VTree', volume.vtreeId],
        ['ancestorVolumeId', 'Volume', volume.ancestorVolumeId],
      ],
      withStatistics('Volume', related('Volume')),
    ),
  };
}

/** `volumes`: the tree's volumes, when the caller grouped them already (a listing of every tree). */
export function renderVTree(model: SystemModel, tree: VTree, volumes = Object.values(model.volumes).filter((volume) => volume.vtreeId === tree.id)): RestVTree {
  const base = volumes.find((volume) => volume.volumeType !== 'Snapshot');
  return {
    id: tree.id,
    // meshblock does not name V-Trees: a tree shows its base volume's name ('' once it is gone).
    name: base?.name ?? '',
    baseVolumeId: base?.id ?? null,
    storagePoolId: tree.storagePoolId,
    numOfVolumes: volumes.length,
    numOfSnapshots: volumes.filter((volume) => volume.volumeType === 'Snapshot').length,
    links: links('VTree', tree.id, [['storagePoolId', 'StoragePool', tree.storagePoolId]], related('VTree')),
  };
}

/** Every instance of a type, in a stable order (by name, then id). */
export function listInstances(state: StateMachine, type: RestType, sdcQos: SdcQosLookup = noQos, fillDefaults?: FillDefaults, sdcAddress: SdcAddressLookup = noAddress): RestInstance[] {
  const model = state.model;
  const sorted = <T extends { id: Id; name: string }>(table: Record<Id, T>): T[] =>
    Object.values(table).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  switch (type) {
    case 'System':
      return [renderSystem(model)];
    case 'ProtectionDomain':
      return sorted(model.protectionDomains).map((domain) => renderProtectionDomain(model, domain));
    case 'StoragePool':
      return sorted(model.storagePools).map((pool) => renderStoragePool(pool, fillDefaults));
    case 'FaultSet':
      return sorted(model.faultSets).map(renderFaultSet);
    case 'Sds':
      return sorted(model.sdss).map(renderSds);
    case 'Device':
      return sorted(model.devices).map(renderDevice);
    case 'Sdc':
      return sorted(model.sdcs).map((sdc) => renderSdc(sdc, sdcAddress));
    case 'Volume': {
      const qos = qosIndex(sdcQos);
      return sorted(model.volumes).map((volume) => renderVolume(model, volume, qos));
    }
    case 'VTree': {
      // One pass over the volumes, not one per tree.
      const byTree = new Map<Id, Volume[]>();
      for (const volume of Object.values(model.volumes)) {
        const inTree = byTree.get(volume.vtreeId);
        if (inTree === undefined) byTree.set(volume.vtreeId, [volume]);
        else inTree.push(volume);
      }
      // Unnamed: by id.
      return Object.values(model.vtrees)
        .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
        .map((tree) => renderVTree(model, tree, byTree.get(tree.id) ?? []));
    }
  }
}

/** One instance, or null if there is none with that id. */
export function getInstance(state: StateMachine, type: RestType, id: string, sdcQos: SdcQosLookup = noQos, fillDefaults?: FillDefaults, sdcAddress: SdcAddressLookup = noAddress): RestInstance | null {
  const model = state.model;
  const lookup = <T>(table: Record<Id, T>): T | undefined => (Object.hasOwn(table, id) ? table[id] : undefined);
  switch (type) {
    case 'System':
      return id === model.clusterId ? renderSystem(model) : null;
    case 'ProtectionDomain': {
      const domain = lookup(model.protectionDomains);
      return domain === undefined ? null : renderProtectionDomain(model, domain);
    }
    case 'StoragePool': {
      const pool = lookup(model.storagePools);
      return pool === undefined ? null : renderStoragePool(pool, fillDefaults);
    }
    case 'FaultSet': {
      const set = lookup(model.faultSets);
      return set === undefined ? null : renderFaultSet(set);
    }
    case 'Sds': {
      const sds = lookup(model.sdss);
      return sds === undefined ? null : renderSds(sds);
    }
    case 'Device': {
      const device = lookup(model.devices);
      return device === undefined ? null : renderDevice(device);
    }
    case 'Sdc': {
      const sdc = lookup(model.sdcs);
      return sdc === undefined ? null : renderSdc(sdc, sdcAddress);
    }
    case 'Volume': {
      const volume = lookup(model.volumes);
      return volume === undefined ? null : renderVolume(model, volume, qosIndex(sdcQos));
    }
    case 'VTree': {
      const tree = lookup(model.vtrees);
      return tree === undefined ? null : renderVTree(model, tree);
    }
  }
}

/** The children of one instance (GET /api/instances/{Type}::{id}/relationships/{Other}). */
export function relatedInstances(state: StateMachine, type: RestType, id: Id, other: RestType, sdcQos: SdcQosLookup = noQos, fillDefaults?: FillDefaults, sdcAddress: SdcAddressLookup = noAddress): RestInstance[] {
  const children = listInstances(state, other, sdcQos, fillDefaults, sdcAddress);
  if (type === 'System') return children;
  if (type === 'Sdc' && other === 'Volume') {
    return children.filter((volume) => ((volume as RestVolume).mappedSdcInfo ?? []).some((info) => info.sdcId === id));
  }
  const field = restRelationships[type]?.[other] as string;
  return children.filter((child) => (child as unknown as Record<string, unknown>)[field] === id);
}

/** Every mapping with a limit, by volume name then SDC name. */
function dashboardQos(model: SystemModel, sdcQos: SdcQosLookup): RestDashboardQos[] {
  const qos = qosIndex(sdcQos);
  const limited: RestDashboardQos[] = [];
  for (const volume of Object.values(model.volumes)) {
    for (const mapping of volume.mappings) {
      if (mapping.iopsLimit === 0 && mapping.bandwidthLimitKbps === 0) continue;
      limited.push({ volumeId: volume.id, volumeName: volume.name, ...renderMappedSdcInfo(model, volume, mapping, qos) });
    }
  }
  const byName = (a: RestDashboardQos, b: RestDashboardQos): number => (a.volumeName < b.volumeName ? -1 : a.volumeName > b.volumeName ? 1 : a.sdcName < b.sdcName ? -1 : a.sdcName > b.sdcName ? 1 : 0);
  return limited.sort(byName);
}

export function dashboard(state: StateMachine, sdsStats: (sdsId: Id) => SdsStats | null, rebuild: RebuildStatus, sdcQos: SdcQosLookup = noQos): RestDashboard {
  const model = state.model;
  const capacity = systemStatistics(state);
  const sdss = Object.values(model.sdss);
  const devices = Object.values(model.devices);
  const sdcs = Object.values(model.sdcs);
  const storagePools = (listInstances(state, 'StoragePool') as RestStoragePool[]).map((pool) => ({
    id: pool.id,
    name: pool.name,
    protectionDomainId: pool.protectionDomainId,
    protectionDomainName: model.protectionDomains[pool.protectionDomainId]?.name ?? '',
    backgroundScannerMode: pool.backgroundScannerMode,
    backgroundScannerBWLimitKBps: pool.backgroundScannerBWLimitKBps,
    ...storagePoolStatistics(state, pool.id),
  }));
  const rebuildsRunning = sdss.reduce((total, sds) => total + (sdsStats(sds.id)?.rebuilds.filter((rebuild) => rebuild.state === 'running').length ?? 0), 0);
  return {
    system: { id: model.clusterId, name: model.name, mapEpoch: model.epoch, systemVersionName: meshblockVersionName },
    capacity,
    storagePools,
    health: {
      sdsConnected: sdss.filter((sds) => sds.state === 'connected').length,
      sdsDisconnected: sdss.filter((sds) => sds.state === 'disconnected').length,
      sdsDown: sdss.filter((sds) => sds.state === 'down').length,
      sdsUnassigned: sdss.filter((sds) => sds.protectionDomainId === null).length,
      devicesNormal: devices.filter((device) => device.state === 'normal').length,
      devicesFailed: devices.filter((device) => device.state === 'failed').length,
      devicesRemoving: devices.filter((device) => device.state === 'removing').length,
      sdcConnected: sdcs.filter((sdc) => sdc.state === 'connected').length,
      sdcDisconnected: sdcs.filter((sdc) => sdc.state === 'disconnected').length,
      degradedCapacityInKb: capacity.degradedCapacityInKb,
      failedCapacityInKb: capacity.failedCapacityInKb,
      rebuildsRunning,
      degradedBytes: capacity.degradedCapacityInKb * 1024,
      failedBytes: capacity.failedCapacityInKb * 1024,
      volumesDegraded: Object.values(model.volumes).filter((volume) => state.volumeHealth(volume.id).degradedChunks > 0).map((volume) => volume.name),
      volumesFailed: Object.values(model.volumes).filter((volume) => state.volumeHealth(volume.id).failedChunks > 0).map((volume) => volume.name),
      rebuild,
    },
    qos: dashboardQos(model, sdcQos),
    integrity: {
      sds: [...sdss]
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
        .map((sds) => {
          const stats = sdsStats(sds.id);
          const scrub = scrubOf(stats);
          return { sdsId: sds.id, sdsName: sds.name, integrity: integrityOf(stats), scrub, scrubPassPercent: scrub === null ? null : scrubPercent(scrub) };
        }),
      unrepairable: unrepairableRanges(model, sdsStats),
    },
  };
}
