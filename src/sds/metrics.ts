// The SDS's Prometheus metrics (docs/metrics.md): the IO it served (counted in service.ts's
// clientIo), each device's IO, capacity and state (the chunk store's own counters, the same
// the MDM gets in heartbeats), each device's calls with their latency (counted in the chunk
// store's deviceCall: a few additions into an IoCounter per call), and its part of rebuilds
// and rebalances (it is the source of every fill job it lists). Read at each scrape from
// SdsService.stats() and the store's devices; nothing of prom-client per request.

import { MetricsRegistry } from '../common/metrics.js';
import type { SdsStats } from '../wire/sds-ops.js';
import type { StoreDevice } from './chunk-store.js';
import type { SdsService } from './service.js';

/** `store`: where the devices' calls are counted (the SDS's ChunkStore; its devices as they are at each scrape). */
export function sdsMetrics(service: SdsService, identity: { sdsId: string; name: string }, store: { readonly devices: readonly StoreDevice[] }): MetricsRegistry {
  const metrics = new MetricsRegistry('sds', { sds: identity.name, sds_id: identity.sdsId });
  const sdsLabels = { sds: identity.name, sds_id: identity.sdsId };
  const sdsNames = ['sds', 'sds_id'];
  const deviceNames = ['sds', 'sds_id', 'device_id', 'path'];
  // One stats() per scrape, however many families read it (they are collected one after the other).
  let cached: { atMs: number; stats: SdsStats } | null = null;
  const stats = (): SdsStats => {
    const nowMs = Date.now();
    if (cached === null || nowMs - cached.atMs > 500) cached = { atMs: nowMs, stats: service.stats() };
    return cached.stats;
  };
  const devices = function* (): Iterable<{ labels: Record<string, string>; device: SdsStats['devices'][number] }> {
    for (const device of stats().devices) yield { labels: { ...sdsLabels, device_id: device.deviceId, path: device.path }, device };
  };

  metrics.ioFamilies('meshblock_sds', 'IO this SDS served: reads, writes and trims as primary, mirror copies as secondary', sdsNames, () => [{ labels: sdsLabels, stats: service.io }]);

  // Below the chunk store: every call on the device (a client write is its data, maybe its
  // slot entry and checksum area, and a sync for FUA), client IO, mirror copies, rebuild
  // and scrub alike: the device's own latency, as iostat's await would show it.
  metrics.ioFamilies('meshblock_sds_device_io', 'Calls on this device (read, write, zero, discard, fdatasync) as the kernel answered them', deviceNames, function* () {
    for (const device of store.devices) yield { labels: { ...sdsLabels, device_id: device.deviceId, path: device.path }, stats: device.calls };
  });

  metrics.counter('meshblock_sds_device_requests_total', 'Reads and writes this device did (client IO, mirror copies, rebuild, scrub)', [...deviceNames, 'op'], (set) => {
    for (const { labels, device } of devices()) {
      set({ ...labels, op: 'read' }, device.reads);
      set({ ...labels, op: 'write' }, device.writes);
    }
  });
  metrics.counter('meshblock_sds_device_bytes_total', 'Bytes this device read and wrote', [...deviceNames, 'op'], (set) => {
    for (const { labels, device } of devices()) {
      set({ ...labels, op: 'read' }, device.readBytes);
      set({ ...labels, op: 'write' }, device.writeBytes);
    }
  });
  metrics.gauge('meshblock_sds_device_capacity_bytes', 'Capacity of the device (its chunk slots)', deviceNames, (set) => {
    for (const { labels, device } of devices()) set(labels, device.totalBytes);
  });
  metrics.gauge('meshblock_sds_device_used_bytes', 'Bytes of the device in chunk slots in use', deviceNames, (set) => {
    for (const { labels, device } of devices()) set(labels, device.usedBytes);
  });
  metrics.gauge('meshblock_sds_device_free_bytes', 'Bytes of free chunk slots (0 on a failed device)', deviceNames, (set) => {
    for (const { labels, device } of devices()) set(labels, device.freeBytes);
  });
  metrics.gauge('meshblock_sds_device_snapshot_bytes', 'Of the used bytes, those only snapshots reach', deviceNames, (set) => {
    for (const { labels, device } of devices()) set(labels, device.snapshotBytes ?? 0);
  });
  metrics.gauge('meshblock_sds_device_failed', '1 when the SDS took the device out after an IO error', deviceNames, (set) => {
    for (const { labels, device } of devices()) set(labels, device.state === 'failed' ? 1 : 0);
  });
  metrics.counter('meshblock_sds_device_checksum_errors_total', '4 KiB blocks of this device that failed their checksums', deviceNames, (set) => {
    for (const { labels, device } of devices()) set(labels, device.checksumErrors ?? 0);
  });
  metrics.gauge('meshblock_sds_map_epoch', 'Epoch of the placement map this SDS serves IO at', sdsNames, (set) => set(sdsLabels, stats().epoch));
  metrics.gauge('meshblock_sds_reserved_bytes', 'Chunk slots reserved for thick volumes and not yet written', sdsNames, (set) => set(sdsLabels, stats().reservedBytes));
  metrics.gauge('meshblock_sds_memory_budget_bytes', 'Bytes of client IO this SDS may hold at once (--memory-budget)', sdsNames, (set) => set(sdsLabels, stats().memory?.budgetBytes ?? 0));
  metrics.gauge('meshblock_sds_memory_used_bytes', 'Bytes of client IO this SDS holds now', sdsNames, (set) => set(sdsLabels, stats().memory?.usedBytes ?? 0));
  // Fill jobs this SDS runs as source; whether a job is a rebuild or a rebalance only the MDM knows (its metrics split them).
  metrics.gauge('meshblock_sds_fill_jobs', 'Rebuild and rebalance jobs this SDS copies from, by state (finished ones while still listed)', [...sdsNames, 'state'], (set) => {
    const byState = { waiting: 0, running: 0, done: 0, failed: 0 };
    for (const job of stats().rebuilds) byState[job.state] += 1;
    for (const [state, count] of Object.entries(byState)) set({ ...sdsLabels, state }, count);
  });
  metrics.gauge('meshblock_sds_fill_pending_bytes', 'Bytes left to copy by the rebuild and rebalance jobs waiting or running here (chunks left x chunk size)', sdsNames, (set) => {
    const current = stats();
    set(sdsLabels, current.rebuilds.filter((job) => job.state === 'waiting' || job.state === 'running').reduce((sum, job) => sum + (job.chunksTotal - job.chunksDone) * current.chunkBytes, 0));
  });
  metrics.gauge('meshblock_sds_fill_active_bytes', 'Bytes left to copy by the jobs running here now', sdsNames, (set) => {
    const current = stats();
    set(sdsLabels, current.rebuilds.filter((job) => job.state === 'running').reduce((sum, job) => sum + (job.chunksTotal - job.chunksDone) * current.chunkBytes, 0));
  });
  metrics.counter('meshblock_sds_scrub_read_bytes_total', 'Bytes the background scrub read', sdsNames, (set) => set(sdsLabels, stats().scrub?.bytesScanned ?? 0));
  return metrics;
}
