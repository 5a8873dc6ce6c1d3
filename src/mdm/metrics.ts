// The MDM's Prometheus metrics (docs/metrics.md): the system as the MDM knows it. Only the
// Master has the model; a Slave exports its role and the MDM cluster's state, so that every
// MDM can be scraped and the alerts hold whichever is Master.
//
// Capacity by state, per pool, in ScaleIO's vocabulary, as a partition of the pool's raw
// capacity (the sum over states is raw exactly):
//
//   raw ─┬─ in use (chunk slots written, both copies) ─┬─ failed     no readable copy (estimated)
//        │                                            ├─ degraded   one copy in sync (estimated)
//        │                                            └─ protected  the rest of what is in use
//        ├─ spare            held back for rebuilds (what is left of it after what is in use)
//        ├─ thick_reserved   reserved for thick volumes and not written yet
//        └─ unused           the rest
//
// The estimates are the REST API's (StateMachine.poolCapacity: per-group use is spread evenly).

import { metricsClusterQueryTimeoutMs } from '../common/limits.js';
import { MetricsRegistry } from '../common/metrics.js';
import type { SdsStats } from '../wire/sds-ops.js';
import type { MdmClusterView, RestCluster } from './cluster-member.js';
import type { MdmController, RebuildStatus } from './controller.js';
import type { Id, SystemModel } from './model.js';
import { isDown, type PoolCapacity, type PoolHealth } from './state-machine.js';

export interface MdmMetricsSources {
  /** This MDM's name (the system name for a lone MDM). */
  name: string;
  /** The controller; its reads throw while this MDM is not the Master. */
  controller: MdmController;
  isMaster: () => boolean;
  /** The MDM cluster (one-node for a lone MDM); undefined until the MDM listens. */
  cluster: () => RestCluster | undefined;
}

/** The capacity states, in the order the partition above takes them. */
export const capacityStates = ['failed', 'degraded', 'protected', 'spare', 'thick_reserved', 'unused'] as const;
export type CapacityState = (typeof capacityStates)[number];

/** A pool's raw capacity split by state (see the top of this file). */
export function capacityByState(capacity: PoolCapacity, usedRawBytes: number): Record<CapacityState, number> {
  const raw = capacity.rawBytes;
  const used = Math.min(usedRawBytes, raw);
  const failed = Math.min(used, capacity.failedBytes);
  const degraded = Math.min(used - failed, capacity.degradedBytes);
  const spare = Math.min(capacity.spareBytes, raw - used);
  const thickReserved = Math.min(raw - used - spare, Math.max(0, 2 * capacity.thickReservedBytes - used));
  return { failed, degraded, protected: used - failed - degraded, spare, thick_reserved: Math.max(0, thickReserved), unused: Math.max(0, raw - used - spare - Math.max(0, thickReserved)) };
}

interface PoolSnapshot {
  labels: Record<string, string>;
  capacity: PoolCapacity;
  health: PoolHealth;
  byState: Record<CapacityState, number>;
  fills: Record<'rebuild' | 'rebalance', { groups: number; pendingBytes: number; activeBytes: number }>;
}

/** What one scrape reads of the Master's state, once. */
interface Snapshot {
  model: SystemModel;
  pools: PoolSnapshot[];
  rebuild: RebuildStatus;
  sdsStats: Map<Id, SdsStats>;
  qos: Array<{ labels: Record<string, string>; requests: number; bytes: number; throttledRequests: number; throttledMs: number }>;
}

function takeSnapshot(controller: MdmController): Snapshot {
  const state = controller.state;
  const model = state.model;
  const sdsStats = new Map<Id, SdsStats>();
  for (const sdsId of Object.keys(model.sdss)) {
    const stats = controller.sdsStats(sdsId);
    if (stats !== null) sdsStats.set(sdsId, stats);
  }
  const pools: PoolSnapshot[] = [];
  for (const pool of Object.values(model.storagePools)) {
    const capacity = state.poolCapacity(pool.id);
    const health = state.poolHealth(pool);
    const devices = state.poolDevices(pool.id).filter((device) => device.state === 'normal');
    const usedRaw = devices.reduce((sum, device) => sum + device.usedBytes, 0);
    // Bytes a group holds (one copy), as the rebuild status estimates it.
    const bytesPerGroup = health.groups > 0 ? usedRaw / (2 * health.groups) : 0;
    const fills = { rebuild: { groups: 0, pendingBytes: 0, activeBytes: 0 }, rebalance: { groups: 0, pendingBytes: 0, activeBytes: 0 } };
    for (const group of pool.groups) {
      if (group.syncing !== true) continue;
      const kind = group.rebalance === true ? 'rebalance' : 'rebuild';
      fills[kind].groups += 1;
      fills[kind].pendingBytes += bytesPerGroup;
    }
    for (const stats of sdsStats.values()) {
      for (const job of stats.rebuilds ?? []) {
        if (job.poolId !== pool.id || job.state !== 'running') continue;
        const kind = pool.groups[job.pgIndex]?.rebalance === true ? 'rebalance' : 'rebuild';
        fills[kind].activeBytes += (job.chunksTotal - job.chunksDone) * stats.chunkBytes;
      }
    }
    fills.rebuild.pendingBytes = Math.round(fills.rebuild.pendingBytes);
    fills.rebalance.pendingBytes = Math.round(fills.rebalance.pendingBytes);
    const domain = model.protectionDomains[pool.protectionDomainId];
    pools.push({ labels: { protection_domain: domain?.name ?? pool.protectionDomainId, pool: pool.name, pool_id: pool.id }, capacity, health, byState: capacityByState(capacity, usedRaw), fills });
  }
  const qos: Snapshot['qos'] = [];
  for (const sdc of Object.values(model.sdcs)) {
    for (const entry of controller.sdcQosStats(sdc.id)) {
      const volume = model.volumes[entry.volumeId];
      if (volume === undefined) continue;
      qos.push({ labels: { sdc: sdc.name, sdc_id: sdc.id, volume: volume.name, volume_id: volume.id }, requests: entry.requests, bytes: entry.bytes, throttledRequests: entry.throttledRequests, throttledMs: entry.throttledMs });
    }
  }
  return { model, pools, rebuild: controller.rebuildStatus(), sdsStats, qos };
}

/** The MDM cluster as the cluster says within the timeout; NoQuorum when it cannot say. */
async function clusterView(cluster: RestCluster | undefined): Promise<Pick<MdmClusterView, 'clusterState' | 'goodNodesNum' | 'clusterMode'> | null> {
  if (cluster === undefined) return null;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), metricsClusterQueryTimeoutMs);
  });
  try {
    const view = await Promise.race([cluster.query(), timeout]);
    return view ?? { clusterState: 'NoQuorum', goodNodesNum: 0, clusterMode: 'unknown' };
  } catch {
    return { clusterState: 'NoQuorum', goodNodesNum: 0, clusterMode: 'unknown' };
  } finally {
    clearTimeout(timer);
  }
}

export function mdmMetrics(sources: MdmMetricsSources): MetricsRegistry {
  const metrics = new MetricsRegistry('mdm', { mdm: sources.name });
  const mdmLabels = { mdm: sources.name };
  // One snapshot per scrape (families are collected one after the other); null on a Slave.
  let cached: { atMs: number; snapshot: Snapshot | null } | null = null;
  const snapshot = (): Snapshot | null => {
    const nowMs = Date.now();
    if (cached === null || nowMs - cached.atMs > 500) {
      let taken: Snapshot | null = null;
      try {
        if (sources.isMaster()) taken = takeSnapshot(sources.controller);
      } catch {
        // Not the Master (any more): only the role and cluster families have samples.
      }
      cached = { atMs: nowMs, snapshot: taken };
    }
    return cached.snapshot;
  };

  metrics.gauge('meshblock_mdm_is_master', '1 when this MDM is the Master (the one that serves the system\'s metrics), 0 when a Slave', ['mdm'], (set) => set(mdmLabels, sources.isMaster() ? 1 : 0));
  const clusterStates: readonly MdmClusterView['clusterState'][] = ['ClusteredNormal', 'ClusteredDegraded', 'NotClustered', 'NoQuorum'];
  metrics.gauge('meshblock_mdm_cluster_state', 'The MDM cluster\'s state as this MDM sees it: 1 for the current state (NotClustered: one MDM, its own journal; NoQuorum: etcd does not answer)', ['mdm', 'state'], async (set) => {
    const view = await clusterView(sources.cluster());
    if (view === null) return;
    for (const state of clusterStates) set({ ...mdmLabels, state }, view.clusterState === state ? 1 : 0);
  });
  metrics.gauge('meshblock_mdm_cluster_good_nodes', 'MDMs and Tie-Breakers of the MDM cluster that answer', ['mdm'], async (set) => {
    const view = await clusterView(sources.cluster());
    if (view !== null) set(mdmLabels, view.goodNodesNum);
  });

  const fromModel = (name: string, help: string, labelNames: readonly string[], fill: (snapshot: Snapshot, set: (labels: Record<string, string>, value: number) => void) => void, kind: 'gauge' | 'counter' = 'gauge'): void => {
    const each = (set: (labels: Record<string, string>, value: number) => void): void => {
      const taken = snapshot();
      if (taken !== null) fill(taken, set);
    };
    if (kind === 'counter') metrics.counter(name, help, labelNames, each);
    else metrics.gauge(name, help, labelNames, each);
  };
  const poolNames = ['protection_domain', 'pool', 'pool_id'];

  fromModel('meshblock_map_epoch', 'Epoch of the placement map: every placement change bumps it', [], (taken, set) => set({}, taken.model.epoch));
  fromModel('meshblock_capacity_bytes', 'Raw capacity of a pool by state (failed, degraded, protected, spare, thick_reserved, unused): the states sum to the raw capacity of its healthy devices', [...poolNames, 'state'], (taken, set) => {
    for (const pool of taken.pools) for (const state of capacityStates) set({ ...pool.labels, state }, pool.byState[state]);
  });
  fromModel('meshblock_pool_raw_bytes', 'Raw capacity of a pool: its healthy devices, both copies of the data', poolNames, (taken, set) => {
    for (const pool of taken.pools) set(pool.labels, pool.capacity.rawBytes);
  });
  fromModel('meshblock_pool_usable_bytes', 'Net capacity of a pool for volume data: (raw - spare) / 2', poolNames, (taken, set) => {
    for (const pool of taken.pools) set(pool.labels, pool.capacity.usableBytes);
  });
  fromModel('meshblock_pool_in_use_bytes', 'Net bytes written (half the raw bytes in use)', poolNames, (taken, set) => {
    for (const pool of taken.pools) set(pool.labels, pool.capacity.inUseBytes);
  });
  fromModel('meshblock_pool_allocated_bytes', 'Net bytes given out: written, plus thick volumes\' reservations not written yet (what the 80% capacity alert compares to usable)', poolNames, (taken, set) => {
    for (const pool of taken.pools) set(pool.labels, Math.round((pool.byState.failed + pool.byState.degraded + pool.byState.protected + pool.byState.thick_reserved) / 2));
  });
  fromModel('meshblock_pool_provisioned_bytes', 'Sizes of a pool\'s volumes, by type (thin, thick, snapshot)', [...poolNames, 'type'], (taken, set) => {
    for (const pool of taken.pools) {
      set({ ...pool.labels, type: 'thin' }, pool.capacity.thinProvisionedBytes);
      set({ ...pool.labels, type: 'thick' }, pool.capacity.thickReservedBytes);
      set({ ...pool.labels, type: 'snapshot' }, pool.capacity.snapshotProvisionedBytes);
    }
  });
  fromModel('meshblock_pool_placement_groups', 'Placement groups of a pool, by health: degraded (one copy in sync), failed (no readable copy), total', [...poolNames, 'health'], (taken, set) => {
    for (const pool of taken.pools) {
      set({ ...pool.labels, health: 'total' }, pool.health.groups);
      set({ ...pool.labels, health: 'degraded' }, pool.health.degradedGroups);
      set({ ...pool.labels, health: 'failed' }, pool.health.failedGroups);
    }
  });
  fromModel('meshblock_fill_groups', 'Placement groups whose second copy is being filled, by kind: rebuild (a copy was lost) or rebalance (a copy moves)', [...poolNames, 'kind'], (taken, set) => {
    for (const pool of taken.pools) for (const kind of ['rebuild', 'rebalance'] as const) set({ ...pool.labels, kind }, pool.fills[kind].groups);
  });
  fromModel('meshblock_fill_pending_bytes', 'Bytes the groups being filled hold, by kind (estimated: the pool\'s use spread over its groups)', [...poolNames, 'kind'], (taken, set) => {
    for (const pool of taken.pools) for (const kind of ['rebuild', 'rebalance'] as const) set({ ...pool.labels, kind }, pool.fills[kind].pendingBytes);
  });
  fromModel('meshblock_fill_active_bytes', 'Bytes left to copy by the fill jobs running now, by kind (as their source SDSs last reported)', [...poolNames, 'kind'], (taken, set) => {
    for (const pool of taken.pools) for (const kind of ['rebuild', 'rebalance'] as const) set({ ...pool.labels, kind }, pool.fills[kind].activeBytes);
  });
  fromModel('meshblock_fill_copied_bytes_total', 'Bytes rebuilds and rebalances copied since this MDM became Master', [], (taken, set) => set({}, taken.rebuild.bytesDone), 'counter');
  fromModel('meshblock_fill_failing_groups', 'Groups being filled whose last fill job failed on a chunk', [], (taken, set) => set({}, taken.rebuild.groupsFailing));
  fromModel('meshblock_fill_waiting_sdss', 'SDSs down and not yet out: their copies are rebuilt elsewhere if they stay away', [], (taken, set) => set({}, taken.rebuild.pendingOut.length));

  const sdsNames = ['protection_domain', 'sds', 'sds_id'];
  const sdsLabels = (model: SystemModel, sds: SystemModel['sdss'][string]): Record<string, string> => ({ protection_domain: sds.protectionDomainId === null ? '' : (model.protectionDomains[sds.protectionDomainId]?.name ?? sds.protectionDomainId), sds: sds.name, sds_id: sds.id });
  fromModel('meshblock_cluster_sds_down', '1 when the MDM declared the SDS down (missed heartbeats, lost connection)', sdsNames, (taken, set) => {
    for (const sds of Object.values(taken.model.sdss)) set(sdsLabels(taken.model, sds), isDown(sds) ? 1 : 0);
  });
  fromModel('meshblock_cluster_sds_connected', '1 while the SDS is connected to the Master', sdsNames, (taken, set) => {
    for (const sds of Object.values(taken.model.sdss)) set(sdsLabels(taken.model, sds), sds.state === 'connected' && !isDown(sds) ? 1 : 0);
  });
  const deviceNames = ['sds', 'sds_id', 'pool', 'device', 'device_id', 'path'];
  const devices = function* (model: SystemModel): Iterable<{ labels: Record<string, string>; device: SystemModel['devices'][string] }> {
    for (const device of Object.values(model.devices)) {
      yield { labels: { sds: model.sdss[device.sdsId]?.name ?? device.sdsId, sds_id: device.sdsId, pool: model.storagePools[device.storagePoolId]?.name ?? device.storagePoolId, device: device.name, device_id: device.id, path: device.path }, device };
    }
  };
  fromModel('meshblock_cluster_device_failed', '1 when the device failed (its SDS reported an IO error on it)', deviceNames, (taken, set) => {
    for (const { labels, device } of devices(taken.model)) set(labels, device.state === 'failed' ? 1 : 0);
  });
  fromModel('meshblock_cluster_device_capacity_bytes', 'Capacity of the device', deviceNames, (taken, set) => {
    for (const { labels, device } of devices(taken.model)) set(labels, device.capacityBytes);
  });
  fromModel('meshblock_cluster_device_used_bytes', 'Bytes of the device in use, as its SDS last reported', deviceNames, (taken, set) => {
    for (const { labels, device } of devices(taken.model)) set(labels, device.usedBytes);
  });
  fromModel('meshblock_cluster_sdc_connected', '1 while the SDC is connected to the Master', ['sdc', 'sdc_id'], (taken, set) => {
    for (const sdc of Object.values(taken.model.sdcs)) set({ sdc: sdc.name, sdc_id: sdc.id }, sdc.state === 'connected' ? 1 : 0);
  });
  fromModel('meshblock_cluster_volume_size_bytes', 'Size of each volume, by type', ['pool', 'volume', 'volume_id', 'type'], (taken, set) => {
    for (const volume of Object.values(taken.model.volumes)) set({ pool: taken.model.storagePools[volume.storagePoolId]?.name ?? volume.storagePoolId, volume: volume.name, volume_id: volume.id, type: volume.volumeType }, volume.sizeBytes);
  });
  const qosNames = ['sdc', 'sdc_id', 'volume', 'volume_id'];
  fromModel('meshblock_cluster_volume_sdc_requests_total', 'Reads and writes of a volume through an SDC, as the SDC\'s heartbeats report them (since the SDC started)', qosNames, (taken, set) => {
    for (const entry of taken.qos) set(entry.labels, entry.requests);
  }, 'counter');
  fromModel('meshblock_cluster_volume_sdc_bytes_total', 'Bytes read and written of a volume through an SDC, from its heartbeats', qosNames, (taken, set) => {
    for (const entry of taken.qos) set(entry.labels, entry.bytes);
  }, 'counter');
  fromModel('meshblock_cluster_volume_sdc_qos_throttled_requests_total', 'Reads and writes of a volume that waited for QoS tokens on an SDC, from its heartbeats', qosNames, (taken, set) => {
    for (const entry of taken.qos) set(entry.labels, entry.throttledRequests);
  }, 'counter');
  return metrics;
}
