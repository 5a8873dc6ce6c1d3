// Text output of the management commands: aligned tables and the dashboard. Plain text, no
// colours, so that it reads the same in a terminal, a log and a ticket.

import { formatBytes } from '../common/units.js';
import type { RestCapacity, RestDashboard, RestDashboardSdsIntegrity, RestMappedSdcInfo, RestStoragePool } from '../mdm/rest-objects.js';
import { describeRangeText, type UnrepairableReport } from '../mdm/integrity.js';

export type Alignment = 'left' | 'right';

export interface Column<T> {
  header: string;
  value: (row: T) => string;
  align?: Alignment;
}

/** Columns padded to their widest cell, two spaces apart; numbers right-aligned. */
export function renderTable<T>(columns: ReadonlyArray<Column<T>>, rows: readonly T[]): string {
  const cells = rows.map((row) => columns.map((column) => column.value(row)));
  const widths = columns.map((column, index) => Math.max(column.header.length, ...cells.map((row) => (row[index] as string).length)));
  const line = (values: readonly string[]): string =>
    values
      .map((value, index) => {
        const width = widths[index] as number;
        return columns[index]?.align === 'right' ? value.padStart(width) : value.padEnd(width);
      })
      .join('  ')
      .trimEnd();
  return `${[line(columns.map((column) => column.header)), ...cells.map(line)].join('\n')}\n`;
}

export function kbToText(sizeInKb: number): string {
  return formatBytes(sizeInKb * 1024);
}

/**
 * A pool's rebuild and rebalance IO priority, one line each; what a number means depends
 * on the policy (docs/rebuild-policy.md), and a pool never set runs on the MDM's start options.
 */
export function renderPoolIoPriority(pool: RestStoragePool): string {
  const line = (kind: 'rebuild' | 'rebalance'): string => {
    const policy = pool[`${kind}IoPriorityPolicy`];
    const ios = pool[`${kind}IoPriorityNumOfConcurrentIosPerDevice`];
    const bandwidth = `${kbToText(pool[`${kind}IoPriorityBwLimitPerDeviceInKbps`])}/s`;
    if (pool[`${kind}IoPriorityFromStartOptions`]) {
      return `${policy} (not set: the MDM's --rebuild-* options, per SDS: ${ios} copies in flight, ${bandwidth} while clients are busy, --rebuild-rate otherwise)`;
    }
    const perDevice =
      policy === 'unlimited' ? 'no limit'
      : policy === 'limitNumOfConcurrentIos' ? `${ios} copies in flight per device`
      : policy === 'limitBandwidth' ? `${bandwidth} and ${ios} copies in flight per device`
      : `${ios} copies in flight per device, ${bandwidth} per device while clients are busy`;
    return `${policy} (${perDevice})`;
  };
  return [`  rebuild IO priority   ${line('rebuild')}`, `  rebalance IO priority ${line('rebalance')}`].join('\n');
}

const capacityColumns: ReadonlyArray<[string, keyof RestCapacity]> = [
  ['RAW', 'maxCapacityInKb'],
  ['SPARE', 'spareCapacityInKb'],
  ['USABLE', 'usableCapacityInKb'],
  ['THICK', 'thickCapacityProvisionedInKb'],
  ['THIN', 'thinCapacityProvisionedInKb'],
  ['IN USE', 'capacityInUseInKb'],
  // Of IN USE, what only snapshots reach.
  ['SNAPSHOTS', 'snapCapacityInUseInKb'],
  ['PROTECTED', 'protectedCapacityInKb'],
  ['DEGRADED', 'degradedCapacityInKb'],
  ['FAILED', 'failedCapacityInKb'],
  ['UNUSED', 'unusedCapacityInKb'],
  ['AVAILABLE', 'capacityAvailableForVolumeAllocationInKb'],
];

function plural(count: number, word: string, many = `${word}s`): string {
  return `${count} ${count === 1 ? word : many}`;
}

/**
 * The dashboard: one screen with the system, object counts, health and capacity per pool.
 *
 *   System lab (id 0123456789abcdef), map epoch 7, meshblock 0.1.0
 *   Objects   1 protection domain, 1 storage pool, 0 fault sets, 3 SDSs, 3 devices, ...
 *   Health    OK | DEGRADED | ATTENTION, with what is wrong
 *   SDS       3 connected, 0 disconnected, 0 down, 0 not in a protection domain
 *   ...
 *   Capacity (raw counts both copies; USABLE, THICK, THIN and AVAILABLE are volume sizes)
 *   POOL       RAW  SPARE  USABLE  ...
 */
/** Rebuild and rebalance progress in one line. */
export function describeRebuild(rebuild: RestDashboard['health']['rebuild'], nowMs = Date.now()): string {
  if (rebuild.state === 'idle') return 'idle: every copy in sync';
  if (rebuild.state === 'waiting') {
    const next = rebuild.pendingOut.map((entry) => `${entry.name} in ${Math.max(0, Math.ceil((entry.outAtMs - nowMs) / 1000))} s`).join(', ');
    return `waiting: down SDSs may return (delta rebuild) before their copies are re-created elsewhere (${next})`;
  }
  const eta = rebuild.etaSeconds === null ? '' : `, ETA ${rebuild.etaSeconds} s`;
  const running = `running: ${rebuild.percent}% (${rebuild.groupsSyncing} of ${rebuild.groupsTotal} groups filling), ${formatBytes(rebuild.bytesDone)} copied, ${formatBytes(rebuild.bytesPerSecond)}/s${eta}`;
  // An older MDM's dashboard has no failing list.
  const failing = rebuild.failing ?? [];
  if ((rebuild.groupsFailing ?? 0) === 0 || failing[0] === undefined) return running;
  const first = failing[0];
  const retry = Math.max(0, Math.ceil((first.retryAtMs - nowMs) / 1000));
  return `${running}; ${plural(rebuild.groupsFailing, 'group')} failing: chunk ${first.chunk} (${first.side} ${first.code}, ${plural(first.attempts, 'attempt')}, next in ${retry} s)${rebuild.groupsFailing > 1 ? ', and more (dashboard --json)' : ''}`;
}

/**
 * A volume's mappings (or the dashboard's limited ones) with their QoS: the limits, the burst
 * and what the SDC held back since it started (0 while it has not reported).
 *
 *   SDC    ACCESS  IOPS  BANDWIDTH  IOPS BURST  BW BURST   BURST S  REQUESTS  THROTTLED  THROTTLED MS  WAITING
 *   host1  rw       100  10 MiB/s          400  40 MiB/s        60     12000       3400         51000        2
 */
export function renderQosTable<T extends RestMappedSdcInfo>(rows: readonly T[], first: Column<T> | null = null): string {
  const rate = (kbps: number): string => (kbps === 0 ? '-' : `${kbToText(kbps)}/s`);
  const count = (value: number): string => (value === 0 ? '-' : String(value));
  const columns: Array<Column<T>> = [
    ...(first === null ? [] : [first]),
    { header: 'SDC', value: (row) => row.sdcName || row.sdcId },
    { header: 'ACCESS', value: (row) => (row.accessMode === 'ReadOnly' ? 'ro' : 'rw') },
    { header: 'IOPS', value: (row) => count(row.limitIops), align: 'right' },
    { header: 'BANDWIDTH', value: (row) => rate(row.limitBwInKbps), align: 'right' },
    { header: 'IOPS BURST', value: (row) => count(row.limitIopsBurst), align: 'right' },
    { header: 'BW BURST', value: (row) => rate(row.limitBwBurstInKbps), align: 'right' },
    { header: 'BURST S', value: (row) => (row.limitIopsBurst === 0 && row.limitBwBurstInKbps === 0 ? '-' : String(Math.max(1, row.limitBurstSeconds))), align: 'right' },
    { header: 'REQUESTS', value: (row) => String(row.qosRequests), align: 'right' },
    { header: 'THROTTLED', value: (row) => String(row.qosThrottledRequests), align: 'right' },
    { header: 'THROTTLED MS', value: (row) => String(row.qosThrottledMs), align: 'right' },
    { header: 'WAITING', value: (row) => String(row.qosWaiting), align: 'right' },
  ];
  return renderTable(columns, rows);
}

export function renderDashboard(view: RestDashboard): string {
  const { system, capacity, health } = view;
  const problems: string[] = [];
  if (health.sdsDisconnected + health.sdsDown > 0) problems.push(`${plural(health.sdsDisconnected + health.sdsDown, 'SDS', 'SDSs')} not connected`);
  if (health.devicesFailed > 0) problems.push(`${plural(health.devicesFailed, 'device')} failed`);
  if (health.degradedCapacityInKb > 0) problems.push(`${kbToText(health.degradedCapacityInKb)} degraded (one copy in sync)`);
  if (health.failedCapacityInKb > 0) problems.push(`${kbToText(health.failedCapacityInKb)} failed (no readable copy: IO to it fails)`);
  if (health.volumesFailed.length > 0) problems.push(`volumes with failed data: ${health.volumesFailed.join(', ')}`);
  // An older MDM's dashboard has no integrity: nothing to show.
  const unrepairable = view.integrity?.unrepairable ?? [];
  if (unrepairable.length > 0) problems.push(`${plural(unrepairable.length, 'range')} bad on both copies (IO to it fails with EIO; listed below)`);
  const rebuild = health.rebuild;
  if ((rebuild.groupsFailing ?? 0) > 0) problems.push(`${plural(rebuild.groupsFailing, 'rebuild')} failing again and again (see Rebuild)`);
  const status = health.failedCapacityInKb > 0 || unrepairable.length > 0 ? 'FAILED' : problems.length === 0 ? 'OK' : health.degradedCapacityInKb > 0 ? 'DEGRADED' : 'ATTENTION';
  const lines = [
    `System    ${system.name} (id ${system.id}), map epoch ${system.mapEpoch}, ${system.systemVersionName}`,
    `Objects   ${[
      plural(capacity.numOfProtectionDomains, 'protection domain'),
      plural(capacity.numOfStoragePools, 'storage pool'),
      plural(capacity.numOfFaultSets, 'fault set'),
      plural(capacity.numOfSds, 'SDS', 'SDSs'),
      plural(capacity.numOfDevices, 'device'),
      plural(capacity.numOfSdc, 'SDC', 'SDCs'),
      `${plural(capacity.numOfVolumes, 'volume')} (${capacity.numOfMappedVolumes} mapped${capacity.numOfSnapshots > 0 ? `; ${plural(capacity.numOfSnapshots, 'snapshot')}` : ''})`,
    ].join(', ')}`,
    `Health    ${status}${problems.length > 0 ? `: ${problems.join('; ')}` : ''}`,
    `SDS       ${health.sdsConnected} connected, ${health.sdsDisconnected} disconnected, ${health.sdsDown} down, ${health.sdsUnassigned} not in a protection domain`,
    `Devices   ${health.devicesNormal} normal, ${health.devicesFailed} failed, ${health.devicesRemoving} being removed`,
    `SDC       ${health.sdcConnected} connected, ${health.sdcDisconnected} disconnected`,
    `Rebuild   ${describeRebuild(rebuild)}`,
    '',
    'Capacity (RAW, SPARE, IN USE, SNAPSHOTS, PROTECTED, DEGRADED, FAILED, UNUSED count both copies;',
    '          USABLE, THICK, THIN, AVAILABLE are what volumes see)',
  ];
  type Row = { label: string; capacity: RestCapacity };
  const rows: Row[] = [
    ...view.storagePools.map((pool) => ({ label: `${pool.protectionDomainName}/${pool.name}`, capacity: pool as RestCapacity })),
    ...(view.storagePools.length !== 1 ? [{ label: 'TOTAL', capacity: capacity as RestCapacity }] : []),
  ];
  const columns: Array<Column<Row>> = [
    { header: 'POOL', value: (row) => row.label },
    ...capacityColumns.map(([header, field]): Column<Row> => ({ header, value: (row) => kbToText(row.capacity[field]), align: 'right' })),
  ];
  const qos = view.qos.length === 0 ? '' : `\nQoS (limits enforced by each SDC; throttled = requests held back since the SDC started)\n${renderQosTable(view.qos, { header: 'VOLUME', value: (row) => row.volumeName })}`;
  return `${lines.join('\n')}\n${renderTable(columns, rows)}${qos}${renderIntegrity(view)}`;
}

/** A pool's scrub policy in one phrase: "DataComparison at 1 MiB/s per device" or "Disabled". */
export function describeScrubPolicy(pool: Pick<RestStoragePool, 'backgroundScannerMode' | 'backgroundScannerBWLimitKBps'>): string {
  if (pool.backgroundScannerMode === 'Disabled') return `Disabled (rate kept: ${kbToText(pool.backgroundScannerBWLimitKBps)}/s per device)`;
  return `${pool.backgroundScannerMode} at ${kbToText(pool.backgroundScannerBWLimitKBps)}/s per device`;
}

/** One SDS's scrub in a cell: "running 25% (10/40 chunks)", "paused 100% (40/40)", "-" unreported. */
export function describeScrub(entry: Pick<RestDashboardSdsIntegrity, 'scrub' | 'scrubPassPercent'>): string {
  const scrub = entry.scrub;
  if (scrub === null) return '-';
  if (scrub.state === 'off') return 'off';
  return `${scrub.state} ${entry.scrubPassPercent ?? 0}% (${scrub.chunksScanned}/${scrub.chunksTotal} chunks)`;
}

/**
 * The scrub and checksums part of the dashboard: each pool's policy, a table of the SDSs
 * (the scrub's pass and counters since each SDS started, in 4 KiB blocks), and every range
 * bad on both copies with its volume and byte range.
 *
 *   Scrub     pd1/pool1: DataComparison at 1 MiB/s per device
 *   SDS   SCRUB                         PASSES  SCANNED   CHECKSUM ERRORS  REPAIRED  MISMATCHED  UNREPAIRABLE  TORN  DAMAGED
 *   sds1  running 25% (10/40 chunks)         1  300 MiB                7         6           0             1     0        0
 *   UNREPAIRABLE (both copies bad: IO to these ranges fails with EIO until they are rewritten)
 *     volume 'vol1' bytes 5251072..5255168 (4096 bytes), detected 2026-12-06T23:00:00.000Z by sds1, sds2
 */
export function renderIntegrity(view: RestDashboard): string {
  if (view.integrity === undefined) return '';
  const lines = ['', ...view.storagePools.map((pool, index) => `${index === 0 ? 'Scrub    ' : '         '} ${pool.protectionDomainName}/${pool.name}: ${describeScrubPolicy(pool)}`)];
  const count = (value: number): string => String(value);
  const table =
    view.integrity.sds.length === 0
      ? ''
      : renderTable<RestDashboardSdsIntegrity>(
          [
            { header: 'SDS', value: (row) => row.sdsName },
            { header: 'SCRUB', value: (row) => describeScrub(row) },
            { header: 'MODE', value: (row) => row.scrub?.mode ?? '-' },
            { header: 'PASSES', value: (row) => (row.scrub === null ? '-' : count(row.scrub.passesCompleted)), align: 'right' },
            { header: 'SCANNED', value: (row) => (row.scrub === null ? '-' : formatBytes(row.scrub.bytesScanned)), align: 'right' },
            { header: 'CHECKSUM ERRORS', value: (row) => count(row.integrity.checksumErrors), align: 'right' },
            { header: 'REPAIRED', value: (row) => count(row.integrity.repairedBlocks), align: 'right' },
            { header: 'MISMATCHED', value: (row) => count(row.integrity.mismatchedBlocks), align: 'right' },
            { header: 'UNREPAIRABLE', value: (row) => count(row.integrity.unrepairableBlocks), align: 'right' },
            { header: 'TORN', value: (row) => count(row.integrity.tornBlocksAccepted), align: 'right' },
            { header: 'DAMAGED ENTRIES', value: (row) => count(row.integrity.damagedEntries), align: 'right' },
          ],
          view.integrity.sds,
        );
  const names = new Map(view.integrity.sds.map((entry) => [entry.sdsId, entry.sdsName]));
  const ranges = view.integrity.unrepairable;
  const bad =
    ranges.length === 0
      ? ''
      : `UNREPAIRABLE (both copies bad: IO to these ranges fails with EIO until they are rewritten)\n${ranges.map((range) => `  ${describeUnrepairableLine(range, names)}`).join('\n')}\n`;
  return `${lines.join('\n')}\n${table}${bad}`;
}

/** One unrepairable range: where it is, when it was found and by which SDSs. */
export function describeUnrepairableLine(range: UnrepairableReport, sdsNames: ReadonlyMap<string, string> = new Map()): string {
  return `${describeRangeText(range)}, detected ${new Date(range.detectedAtMs).toISOString()} by ${range.reportedBy.map((id) => sdsNames.get(id) ?? id).join(', ')}`;
}
