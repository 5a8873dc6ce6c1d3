// What `lab status` reports, and the foreground dashboard of `lab up`: the lab's processes
// (from lab.json and /proc), and, when the MDM answers, its volumes, capacity and health.
//
// `lab status --json` is a stable contract (LabStatus): fields are added, never renamed or
// removed. Sizes are bytes. When the MDM cannot be asked (stopped, or not answering),
// `volumes` is empty, `capacity` and `health` are null, and `lab.mdmError` says why.

import { pino } from 'pino';
import { KiB, formatBytes } from '../common/units.js';
import type { RebuildStatus } from '../mdm/controller.js';
import type { RestDashboard, RestSds, RestVolume } from '../mdm/rest-objects.js';
import type { UnrepairableReport } from '../mdm/integrity.js';
import { SdsOp, SdsStatus, type DeviceIoMode, type IntegrityCounters, type ScrubProgress, type SdsStats } from '../wire/sds-ops.js';
import { WirePeer } from '../wire/peer.js';
import { connectTcp } from '../wire/peer-pool.js';
import { readSecretFile } from './secret.js';
import type { MdmClusterView } from '../mdm/cluster-member.js';
import { describeRebuild, describeScrub, describeUnrepairableLine } from './manage-format.js';
import type { ApiClient } from './manage-client.js';
import { renderTable } from './manage-format.js';
import { isDaemonRunning } from './lab-processes.js';
import { labSdcName, nbdUri } from './lab-sdc.js';
import { labMetricsUrl, type LabFile, type LabRole } from './lab-state.js';

export interface LabStatusProcess {
  role: LabRole;
  name: string;
  /** Null when it is not running. */
  pid: number | null;
  /** HOST:PORT: the wire listener of the MDM and the SDSs, the SDC's NBD server. */
  address: string;
  state: 'running' | 'stopped';
  /** Its Prometheus metrics, http://HOST:PORT/metrics (MDM, SDS, SDC; docs/metrics.md); null for etcd members and labs from before metrics. */
  metricsUrl: string | null;
  /** How the MDM sees it: 'connected', 'disconnected' or 'down' (null: the MDM itself, or unknown). */
  clusterState: string | null;
  /**
   * An MDM cluster only (lab up --mdm-cluster): an MDM is 'master' or 'slave'; an etcd member
   * is 'tieBreaker' on a Tie-Breaker host, 'manager' on an MDM's. Null while the cluster
   * cannot be asked. Absent with one MDM.
   */
  clusterRole?: 'master' | 'slave' | 'tieBreaker' | 'manager' | null;
  /**
   * SDSs only: checksums at rest since the SDS started, in 4 KiB blocks, as the MDM last
   * heard (docs/integrity.md); null while the MDM cannot be asked or does not know the SDS.
   */
  integrity?: IntegrityCounters | null;
  /** SDSs only: its background scrub with the current pass in percent; null as integrity, or before it reported one. */
  scrub?: (ScrubProgress & { passPercent: number }) | null;
  /** SDSs only: its device, as the lab started it (a sparse file of the lab's, or a device given with --device). */
  devicePath?: string;
  /**
   * SDSs only: how the SDS does that device's IO, as it reports it (DeviceStats.io): 'direct'
   * (O_DIRECT, no page cache) or 'buffered' (the page cache); null while the SDS is stopped,
   * does not answer, or is too old to say.
   */
  io?: DeviceIoMode | null;
  /** SDSs only: why the SDS chose `io` when it is not what it was asked for (e.g. 'tmpfs refuses O_DIRECT'); null when there is nothing to say. */
  ioReason?: string | null;
}

export interface LabStatusVolume {
  name: string;
  sizeBytes: number;
  /** nbd://HOST:PORT/NAME when the volume is mapped to the lab's SDC, else null. */
  nbdUri: string | null;
  /** Names of the SDCs it is mapped to. */
  mappedSdcs: string[];
  /** 'snapshot' for a snapshot (a volume of another's V-Tree). */
  type: 'thin' | 'thick' | 'snapshot';
  /** The volume a snapshot was taken of (its name, or its id if that volume is gone); null for a base volume. */
  snapshotOf: string | null;
}

/** The MDM's capacity figures (see src/mdm/rest-objects.ts), in bytes. */
export interface LabStatusCapacity {
  rawBytes: number;
  spareBytes: number;
  usableBytes: number;
  thickInUseBytes: number;
  thinProvisionedBytes: number;
  inUseBytes: number;
  netInUseBytes: number;
  protectedBytes: number;
  degradedBytes: number;
  failedBytes: number;
  unusedBytes: number;
  availableForVolumeAllocationBytes: number;
  /** Of inUseBytes (raw, both copies), what only snapshots reach. */
  snapshotInUseBytes: number;
  /** Sizes of the snapshots (net, as thinProvisionedBytes). */
  snapshotProvisionedBytes: number;
}

export interface LabStatusHealth {
  /** Bytes of data with one copy in sync (degraded, or its second copy still filling). */
  degradedBytes: number;
  /** Bytes of data with no readable copy: IO to them fails until an SDS returns. */
  failedBytes: number;
  volumesDegraded: string[];
  volumesFailed: string[];
  /**
   * Rebuild and rebalance: `running` while second copies are filling, `waiting` while a
   * down SDS may still return (before its copies are rebuilt elsewhere), else `idle`.
   * percent: of the groups to fill since the last idle, filled; 100 when idle.
   */
  rebuild: RebuildStatus;
  sdsConnected: number;
  sdsDisconnected: number;
  sdsDown: number;
  devicesNormal: number;
  devicesFailed: number;
  sdcConnected: number;
  sdcDisconnected: number;
}

export interface LabStatus {
  lab: { dir: string; clusterId: string | null; apiUrl: string; mdmReachable: boolean; mdmError: string | null };
  processes: LabStatusProcess[];
  volumes: LabStatusVolume[];
  capacity: LabStatusCapacity | null;
  health: LabStatusHealth | null;
  /** Ranges bad on both copies (IO to them fails with EIO), with their volume and byte range; [] when none or when the MDM cannot be asked. */
  unrepairable: UnrepairableReport[];
}

export function processStatus(lab: LabFile): LabStatusProcess[] {
  return lab.processes.map((record) => {
    const running = isDaemonRunning(record);
    const entry: LabStatusProcess = { role: record.role, name: record.name, pid: running ? record.pid : null, address: record.address, state: running ? 'running' : 'stopped', metricsUrl: labMetricsUrl(record), clusterState: null };
    if (record.role === 'sds') {
      entry.integrity = null;
      entry.scrub = null;
      if (record.devicePath !== undefined) entry.devicePath = record.devicePath;
      entry.io = null;
      entry.ioReason = null;
    }
    if (lab.mdmCluster !== undefined && (record.role === 'mdm' || record.role === 'etcd')) {
      entry.clusterRole = record.role === 'etcd' ? (record.memberName?.startsWith('tb') === true ? 'tieBreaker' : 'manager') : null;
    }
    return entry;
  });
}

/** Everything `lab status` shows. `client` is null when the MDM could not be reached (`mdmError`). */
export async function collectStatus(dir: string, lab: LabFile, client: ApiClient | null, mdmError: string | null): Promise<LabStatus> {
  const status: LabStatus = {
    lab: { dir, clusterId: lab.clusterId, apiUrl: lab.apiUrl, mdmReachable: false, mdmError },
    processes: processStatus(lab),
    volumes: [],
    capacity: null,
    health: null,
    unrepairable: [],
  };
  await addDeviceIo(lab, status.processes);
  if (client === null) return status;
  try {
    const [view, volumes] = await Promise.all([client.get<RestDashboard>('/api/dashboard'), client.get<RestVolume[]>('/api/types/Volume/instances')]);
    const sdc = lab.processes.find((record) => record.role === 'sdc');
    status.volumes = volumes.map((volume) => ({
      name: volume.name,
      sizeBytes: volume.sizeInKb * KiB,
      nbdUri: sdc !== undefined && (volume.mappedSdcInfo ?? []).some((info) => info.sdcName === labSdcName) ? nbdUri(sdc.address, volume.name) : null,
      mappedSdcs: (volume.mappedSdcInfo ?? []).map((info) => info.sdcName || info.sdcId),
      type: volume.volumeType === 'Snapshot' ? 'snapshot' : volume.volumeType === 'ThickProvisioned' ? 'thick' : 'thin',
      snapshotOf: volume.ancestorVolumeId === null ? null : (volumes.find((entry) => entry.id === volume.ancestorVolumeId)?.name ?? volume.ancestorVolumeId),
    }));
    status.capacity = capacityOf(view);
    const [sdss, sdcs] = await Promise.all([client.get<RestSds[]>('/api/types/Sds/instances'), client.get<Array<{ name: string; mdmConnectionState: string }>>('/api/types/Sdc/instances')]);
    // An older MDM's dashboard has no integrity part: the SDS entries keep null.
    const integrity = view.integrity as RestDashboard['integrity'] | undefined;
    status.unrepairable = integrity?.unrepairable ?? [];
    for (const entry of status.processes) {
      if (entry.role === 'sds') {
        const reported = integrity?.sds.find((sds) => sds.sdsName === entry.name);
        entry.integrity = reported?.integrity ?? null;
        entry.scrub = reported === undefined || reported.scrub === null ? null : { ...reported.scrub, passPercent: reported.scrubPassPercent ?? 0 };
        entry.clusterState = sdss.find((sds) => sds.name === entry.name)?.sdsState ?? null;
      }
      if (entry.role === 'sdc') entry.clusterState = sdcs.find((sdc) => sdc.name === entry.name)?.mdmConnectionState ?? null;
    }
    const rebuild = view.health.rebuild;
    status.health = {
      degradedBytes: view.health.degradedBytes,
      failedBytes: view.health.failedBytes,
      volumesDegraded: view.health.volumesDegraded,
      volumesFailed: view.health.volumesFailed,
      rebuild,
      sdsConnected: view.health.sdsConnected,
      sdsDisconnected: view.health.sdsDisconnected,
      sdsDown: view.health.sdsDown,
      devicesNormal: view.health.devicesNormal,
      devicesFailed: view.health.devicesFailed,
      sdcConnected: view.health.sdcConnected,
      sdcDisconnected: view.health.sdcDisconnected,
    };
    if (lab.mdmCluster !== undefined) {
      const cluster = await client.post<MdmClusterView>('/api/instances/System/action/queryMdmCluster', {});
      for (const entry of status.processes) {
        if (entry.role !== 'mdm') continue;
        entry.clusterRole = cluster.master?.name === entry.name ? 'master' : 'slave';
        if (entry.state === 'running') entry.clusterState = cluster.master?.name === entry.name || cluster.slaves.some((mdm) => mdm.name === entry.name && mdm.status === 'Normal') ? 'connected' : 'disconnected';
      }
      const tieBreakers = new Set(cluster.tieBreakers.map((member) => member.name));
      for (const entry of status.processes) {
        if (entry.role !== 'etcd') continue;
        const record = lab.processes.find((process) => process.name === entry.name);
        entry.clusterRole = tieBreakers.has(record?.memberName ?? '') ? 'tieBreaker' : 'manager';
      }
    }
    status.lab.mdmReachable = true;
  } catch (err) {
    status.lab.mdmError = (err as Error).message;
  }
  return status;
}

/** How long `lab status` waits for an SDS's own stats before showing its IO mode as unknown. */
export const labSdsStatsTimeoutMs = 3_000;

/**
 * Fills in each running SDS's IO mode from its own stats (SdsOp.Stats over the wire, with the
 * lab's cluster secret), asked of every SDS at once: the MDM's REST API does not carry it, and
 * the SDS is the one that knows. An SDS that does not answer keeps null.
 */
async function addDeviceIo(lab: LabFile, entries: LabStatusProcess[]): Promise<void> {
  const sdsEntries = entries.filter((entry) => entry.role === 'sds' && entry.state === 'running');
  if (sdsEntries.length === 0 || lab.clusterId === null) return;
  let secret: Buffer;
  try {
    secret = readSecretFile('secretFile', lab.secretFile);
  } catch {
    return;
  }
  const clusterId = lab.clusterId;
  await Promise.all(
    sdsEntries.map(async (entry) => {
      const stats = await askSdsStats(entry.address, clusterId, secret).catch(() => null);
      const device = stats?.devices.find((candidate) => candidate.path === entry.devicePath) ?? (stats?.devices.length === 1 ? stats.devices[0] : undefined);
      if (device === undefined) return;
      entry.io = device.io ?? null;
      entry.ioReason = device.ioReason ?? null;
    }),
  );
}

async function askSdsStats(address: string, clusterId: string, secret: Buffer): Promise<SdsStats> {
  const socket = await connectTcp(address, labSdsStatsTimeoutMs);
  let peer: WirePeer | null = null;
  try {
    // Role 'sdc': the least a stats reader needs (SdsOp.Stats is open to every role).
    peer = await WirePeer.connect(socket, { clusterId, secret, role: 'sdc', name: 'lab-status', log: pino({ level: 'silent' }) });
    const response = await peer.request(SdsOp.Stats, Buffer.alloc(0), { timeoutMs: labSdsStatsTimeoutMs });
    if (response.status !== SdsStatus.Ok) throw new Error(`stats answered status ${response.status}`);
    return JSON.parse(response.payload.toString('utf8')) as SdsStats;
  } finally {
    if (peer !== null) peer.destroy();
    else socket.destroy();
  }
}

function capacityOf(view: RestDashboard): LabStatusCapacity {
  const c = view.capacity;
  return {
    rawBytes: c.maxCapacityInKb * KiB,
    spareBytes: c.spareCapacityInKb * KiB,
    usableBytes: c.usableCapacityInKb * KiB,
    thickInUseBytes: c.thickCapacityProvisionedInKb * KiB,
    thinProvisionedBytes: c.thinCapacityProvisionedInKb * KiB,
    inUseBytes: c.capacityInUseInKb * KiB,
    netInUseBytes: c.netCapacityInUseInKb * KiB,
    protectedBytes: c.protectedCapacityInKb * KiB,
    degradedBytes: c.degradedCapacityInKb * KiB,
    failedBytes: c.failedCapacityInKb * KiB,
    unusedBytes: c.unusedCapacityInKb * KiB,
    availableForVolumeAllocationBytes: c.capacityAvailableForVolumeAllocationInKb * KiB,
    snapshotInUseBytes: c.snapCapacityInUseInKb * KiB,
    snapshotProvisionedBytes: c.snapshotCapacityProvisionedInKb * KiB,
  };
}

/** An SDS's IO mode for the text form: 'direct', 'buffered (why)', '?' when unknown; '-' for other roles. */
function describeIo(entry: LabStatusProcess): string {
  if (entry.role !== 'sds') return '-';
  if (entry.io === undefined || entry.io === null) return entry.state === 'running' ? '?' : '-';
  return entry.ioReason === undefined || entry.ioReason === null || entry.ioReason === '' ? entry.io : `${entry.io} (${entry.ioReason})`;
}

/** The text form of `lab status`, also the foreground dashboard. */
export function renderStatus(status: LabStatus): string {
  const lines: string[] = [];
  lines.push(`lab ${status.lab.dir}: cluster ${status.lab.clusterId ?? '(not created yet)'}, REST API ${status.lab.apiUrl}`);
  lines.push('');
  lines.push(
    renderTable<LabStatusProcess>(
      [
        { header: 'ROLE', value: (entry) => (entry.clusterRole === undefined || entry.clusterRole === null ? entry.role : `${entry.role} (${entry.clusterRole})`) },
        { header: 'NAME', value: (entry) => entry.name },
        { header: 'PID', value: (entry) => (entry.pid === null ? '-' : String(entry.pid)), align: 'right' },
        { header: 'ADDRESS', value: (entry) => entry.address },
        { header: 'STATE', value: (entry) => (entry.clusterState === null ? entry.state : `${entry.state}, ${entry.clusterState.toLowerCase()}`) },
        { header: 'DEVICE', value: (entry) => entry.devicePath ?? '-' },
        { header: 'IO', value: (entry) => describeIo(entry) },
      ],
      status.processes,
    ).trimEnd(),
  );
  lines.push('');
  if (!status.lab.mdmReachable) {
    lines.push(`MDM not reachable: ${status.lab.mdmError ?? 'unknown'}`);
    return `${lines.join('\n')}\n`;
  }
  if (status.volumes.length === 0) {
    lines.push('no volumes');
  } else {
    lines.push(
      renderTable<LabStatusVolume>(
        [
          { header: 'VOLUME', value: (entry) => entry.name },
          { header: 'SIZE', value: (entry) => formatBytes(entry.sizeBytes), align: 'right' },
          { header: 'TYPE', value: (entry) => (entry.snapshotOf === null ? entry.type : `snapshot of ${entry.snapshotOf}`) },
          { header: 'NBD URI', value: (entry) => entry.nbdUri ?? '-' },
          { header: 'MAPPED TO', value: (entry) => entry.mappedSdcs.join(',') || '-' },
        ],
        status.volumes,
      ).trimEnd(),
    );
  }
  lines.push('');
  const c = status.capacity as LabStatusCapacity;
  lines.push(
    `capacity: raw ${formatBytes(c.rawBytes)}, spare ${formatBytes(c.spareBytes)}, usable ${formatBytes(c.usableBytes)}, ` +
      `thin provisioned ${formatBytes(c.thinProvisionedBytes)}, thick ${formatBytes(c.thickInUseBytes)}, in use ${formatBytes(c.inUseBytes)} raw ` +
      `(snapshots only: ${formatBytes(c.snapshotInUseBytes)})`,
  );
  const h = status.health as LabStatusHealth;
  const sdsTotal = h.sdsConnected + h.sdsDisconnected + h.sdsDown;
  const rebuild = describeRebuild(h.rebuild);
  lines.push(
    `health: SDSs ${h.sdsConnected}/${sdsTotal} connected${h.sdsDown > 0 ? `, ${h.sdsDown} down` : ''}, devices ${h.devicesFailed} failed, ` +
      `SDCs ${h.sdcConnected}/${h.sdcConnected + h.sdcDisconnected} connected, degraded ${formatBytes(h.degradedBytes)}, failed ${formatBytes(h.failedBytes)}, rebuild ${rebuild}`,
  );
  if (h.volumesFailed.length > 0) lines.push(`FAILED: IO to volume(s) ${h.volumesFailed.join(', ')} fails where no copy is readable`);
  if (h.volumesDegraded.length > 0) lines.push(`degraded (one copy): ${h.volumesDegraded.join(', ')}`);
  const sdsEntries = status.processes.filter((entry) => entry.role === 'sds' && (entry.integrity ?? null) !== null);
  if (sdsEntries.length > 0) {
    const scrubs = sdsEntries.map((entry) => {
      const counters = entry.integrity as IntegrityCounters;
      const scrub = describeScrub({ scrub: entry.scrub ?? null, scrubPassPercent: entry.scrub?.passPercent ?? null });
      const found = counters.checksumErrors + counters.mismatchedBlocks + counters.tornBlocksAccepted + counters.damagedEntries;
      return `${entry.name} ${scrub}${found > 0 ? ` [checksum errors ${counters.checksumErrors}, repaired ${counters.repairedBlocks}, mismatched ${counters.mismatchedBlocks}, unrepairable ${counters.unrepairableBlocks}, torn ${counters.tornBlocksAccepted}, damaged entries ${counters.damagedEntries}]` : ''}`;
    });
    lines.push(`scrub: ${scrubs.join('; ')}`);
  }
  if (status.unrepairable.length > 0) {
    lines.push('UNREPAIRABLE (both copies bad: IO to these ranges fails with EIO until they are rewritten):');
    for (const range of status.unrepairable) lines.push(`  ${describeUnrepairableLine(range)}`);
  }
  return `${lines.join('\n')}\n`;
}
