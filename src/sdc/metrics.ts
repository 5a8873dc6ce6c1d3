// The SDC's Prometheus metrics (docs/metrics.md): per mapped volume, the IO its NBD clients
// did (counted in volume-backend.ts), its QoS limiter's counters and limits, and the SDC's
// map. Read from the SDC at each scrape; nothing here runs per request.

import { MetricsRegistry } from '../common/metrics.js';
import type { Sdc } from './sdc.js';

export function sdcMetrics(sdc: Sdc, sdcName: string): MetricsRegistry {
  const metrics = new MetricsRegistry('sdc', { sdc: sdcName });
  const volumeLabels = ['sdc', 'volume', 'volume_id'];
  const labelsOf = (volume: { name: string; id: string }): Record<string, string> => ({ sdc: sdcName, volume: volume.name, volume_id: volume.id });

  metrics.ioFamilies('meshblock_sdc_volume', 'IO of NBD clients to a volume through this SDC (reads and writes, measured below QoS)', volumeLabels, function* () {
    for (const { volume, io } of sdc.mappedVolumes()) yield { labels: labelsOf(volume), stats: io };
  });
  metrics.counter('meshblock_sdc_volume_qos_throttled_requests_total', 'Reads and writes that waited for QoS tokens', volumeLabels, (set) => {
    for (const { volume, limiter } of sdc.mappedVolumes()) set(labelsOf(volume), limiter?.stats().throttledRequests ?? 0);
  });
  metrics.counter('meshblock_sdc_volume_qos_throttled_seconds_total', 'Time reads and writes spent waiting for QoS tokens, summed', volumeLabels, (set) => {
    for (const { volume, limiter } of sdc.mappedVolumes()) set(labelsOf(volume), (limiter?.stats().throttledMs ?? 0) / 1000);
  });
  metrics.gauge('meshblock_sdc_volume_qos_waiting_requests', 'Reads and writes waiting for QoS tokens now', volumeLabels, (set) => {
    for (const { volume, limiter } of sdc.mappedVolumes()) set(labelsOf(volume), limiter?.stats().waiting ?? 0);
  });
  metrics.gauge('meshblock_sdc_volume_qos_iops_limit', 'The mapping\'s IOPS limit (0: unlimited)', volumeLabels, (set) => {
    for (const { volume } of sdc.mappedVolumes()) set(labelsOf(volume), volume.iopsLimit);
  });
  metrics.gauge('meshblock_sdc_volume_qos_bandwidth_limit_bytes_per_second', 'The mapping\'s bandwidth limit (0: unlimited)', volumeLabels, (set) => {
    for (const { volume } of sdc.mappedVolumes()) set(labelsOf(volume), volume.bandwidthLimitKbps * 1024);
  });
  metrics.gauge('meshblock_sdc_volume_size_bytes', 'Size of a volume mapped to this SDC', volumeLabels, (set) => {
    for (const { volume } of sdc.mappedVolumes()) set(labelsOf(volume), volume.sizeBytes);
  });
  metrics.gauge('meshblock_sdc_mapped_volumes', 'Volumes mapped to this SDC', ['sdc'], (set) => set({ sdc: sdcName }, sdc.mappedVolumes().length));
  metrics.gauge('meshblock_sdc_map_epoch', 'Epoch of the placement map this SDC routes IO with', ['sdc'], (set) => set({ sdc: sdcName }, sdc.map().epoch));
  metrics.counter('meshblock_sdc_map_refreshes_total', 'Maps this SDC asked the MDM for on demand (a stale epoch, an unreachable SDS)', ['sdc'], (set) => set({ sdc: sdcName }, sdc.mapRefreshCount));
  metrics.counter('meshblock_sdc_views_total', 'Views (map and mapped volumes) applied from the MDM: at registration and at each change', ['sdc'], (set) => set({ sdc: sdcName }, sdc.viewCount));
  metrics.gauge('meshblock_sdc_mdm_connected', '1 while this SDC is connected to the Master MDM', ['sdc'], (set) => set({ sdc: sdcName }, sdc.mdmConnected ? 1 : 0));
  return metrics;
}
