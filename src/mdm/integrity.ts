// Checksums at rest and the scrub, as the MDM sees them (docs/integrity.md): what the SDSs'
// heartbeats report (SdsStats.integrity, .scrub, .unrepairable), read defensively (an SDS
// from before checksums sends none of it: zeros and null), the ranges bad on both copies
// mapped to the volume that reads them, and the log lines an operator acts on.
//
// Pure functions of the model and the reports, and one small class (IntegrityWatch) that
// remembers what it last logged per SDS, so each rise of a counter and each new bad range is
// logged once. Nothing here is journaled: the counters are the SDSs' own, since they started.

import type { Logger } from 'pino';
import type { IntegrityCounters, ScrubProgress, SdsStats, UnrepairableRange } from '../wire/sds-ops.js';
import { generationPath, type VTreeMap } from '../wire/placement.js';
import type { Id, SystemModel, Volume } from './model.js';

export const integrityCounterNames: ReadonlyArray<keyof IntegrityCounters> = ['checksumErrors', 'repairedBlocks', 'unrepairableBlocks', 'tornBlocksAccepted', 'damagedEntries', 'mismatchedBlocks'];

export const noIntegrity: Readonly<IntegrityCounters> = Object.freeze({ checksumErrors: 0, repairedBlocks: 0, unrepairableBlocks: 0, tornBlocksAccepted: 0, damagedEntries: 0, mismatchedBlocks: 0 });

const count = (value: unknown): number => (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : 0);

/** An SDS's counters, every field a whole number (a missing or bad one reads 0). */
export function integrityOf(stats: SdsStats | null | undefined): IntegrityCounters {
  const reported = stats?.integrity as Partial<Record<keyof IntegrityCounters, unknown>> | undefined;
  if (reported === undefined || reported === null || typeof reported !== 'object') return { ...noIntegrity };
  const counters = { ...noIntegrity };
  for (const name of integrityCounterNames) counters[name] = count(reported[name]);
  return counters;
}

const scrubStates: ReadonlyArray<ScrubProgress['state']> = ['off', 'running', 'paused', 'idle'];
const scrubModes: ReadonlyArray<ScrubProgress['mode']> = ['off', 'deviceOnly', 'dataComparison'];

/** An SDS's scrub progress, or null if it sent none (or a malformed one: it is only shown). */
export function scrubOf(stats: SdsStats | null | undefined): ScrubProgress | null {
  const scrub = stats?.scrub as Partial<Record<keyof ScrubProgress, unknown>> | undefined;
  if (scrub === undefined || scrub === null || typeof scrub !== 'object') return null;
  if (!scrubStates.includes(scrub.state as ScrubProgress['state']) || !scrubModes.includes(scrub.mode as ScrubProgress['mode'])) return null;
  const time = (value: unknown): number | null => (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : null);
  return {
    state: scrub.state as ScrubProgress['state'],
    mode: scrub.mode as ScrubProgress['mode'],
    rateKBps: count(scrub.rateKBps),
    passesCompleted: count(scrub.passesCompleted),
    passStartedAtMs: time(scrub.passStartedAtMs),
    lastPassCompletedAtMs: time(scrub.lastPassCompletedAtMs),
    chunksScanned: count(scrub.chunksScanned),
    chunksTotal: count(scrub.chunksTotal),
    bytesScanned: count(scrub.bytesScanned),
  };
}

/** The current pass's progress in percent, one decimal (100 with nothing to scan). */
export function scrubPercent(scrub: ScrubProgress): number {
  if (scrub.chunksTotal === 0) return 100;
  return Math.floor((1000 * Math.min(scrub.chunksScanned, scrub.chunksTotal)) / scrub.chunksTotal) / 10;
}

const idPattern = /^[0-9a-f]{16}$/;

/** An SDS's reported ranges, the well-formed ones only. */
export function unrepairableOf(stats: SdsStats | null | undefined): UnrepairableRange[] {
  const list = stats?.unrepairable as unknown;
  if (!Array.isArray(list)) return [];
  return list.filter((entry: unknown): entry is UnrepairableRange => {
    if (entry === null || typeof entry !== 'object') return false;
    const range = entry as Record<string, unknown>;
    return (
      typeof range['poolId'] === 'string' &&
      idPattern.test(range['poolId']) &&
      typeof range['vtreeId'] === 'string' &&
      idPattern.test(range['vtreeId']) &&
      ['generation', 'chunkIndex', 'offsetBytes', 'detectedAtMs'].every((field) => Number.isSafeInteger(range[field]) && (range[field] as number) >= 0) &&
      Number.isSafeInteger(range['lengthBytes']) &&
      (range['lengthBytes'] as number) > 0
    );
  });
}

/** What a range bad on both copies is, in the administrator's terms. */
export interface UnrepairableReport {
  poolId: Id;
  vtreeId: Id;
  generation: number;
  chunkIndex: number;
  /** Within the chunk. */
  offsetInChunkBytes: number;
  lengthBytes: number;
  /**
   * 'volume': the generation is a volume's head (its own writes): volumeId/volumeName name it.
   * 'snapshotData': an older generation (or a snapshot's head) that only snapshots read;
   * 'sharedData': an older generation that the base volume reads too where it has not
   * written since (volumeId names that volume; the snapshots in readBy read it as well);
   * 'removed': no live volume reads that generation any more.
   */
  reaches: 'volume' | 'snapshotData' | 'sharedData' | 'removed';
  /** The volume the range belongs to ('volume'), or the base volume that reads it ('sharedData'); else null. */
  volumeId: Id | null;
  volumeName: string | null;
  /** Every live volume whose reads may reach the range (by name), the named one first. */
  readBy: string[];
  /** In volume coordinates: chunkIndex * chunkBytes + offsetInChunkBytes. */
  volumeOffsetBytes: number;
  /** One past the last byte: volumeOffsetBytes + lengthBytes. */
  volumeEndBytes: number;
  detectedAtMs: number;
  /** The SDSs that reported it (one copy's SDS, or both). */
  reportedBy: Id[];
}

function treeOf(model: SystemModel, vtreeId: Id, volumes: readonly Volume[]): VTreeMap | null {
  const tree = model.vtrees[vtreeId];
  if (tree !== undefined) {
    const generations: Record<string, number | null> = {};
    for (const [name, parent] of Object.entries(tree.generations)) generations[name] = parent;
    return { generations, heads: volumes.map((volume) => ({ generation: volume.generation, snapshot: volume.volumeType === 'Snapshot' })) };
  }
  // A V-Tree the model keeps no record of has its one generation 0 (its base volume's head).
  return volumes.length > 0 ? { generations: { '0': null }, heads: volumes.map((volume) => ({ generation: volume.generation, snapshot: volume.volumeType === 'Snapshot' })) } : null;
}

/** Maps one reported range to the volume that reads it; `reportedBy` is whoever reported it. */
export function describeUnrepairable(model: SystemModel, range: UnrepairableRange, reportedBy: Id[]): UnrepairableReport {
  const pool = model.storagePools[range.poolId];
  const chunkBytes = pool?.chunkBytes ?? 0;
  const volumeOffsetBytes = range.chunkIndex * chunkBytes + range.offsetBytes;
  const base: Omit<UnrepairableReport, 'reaches' | 'volumeId' | 'volumeName' | 'readBy'> = {
    poolId: range.poolId,
    vtreeId: range.vtreeId,
    generation: range.generation,
    chunkIndex: range.chunkIndex,
    offsetInChunkBytes: range.offsetBytes,
    lengthBytes: range.lengthBytes,
    volumeOffsetBytes,
    volumeEndBytes: volumeOffsetBytes + range.lengthBytes,
    detectedAtMs: range.detectedAtMs,
    reportedBy,
  };
  const volumes = Object.values(model.volumes)
    .filter((volume) => volume.vtreeId === range.vtreeId)
    .sort((a, b) => (a.volumeType === 'Snapshot' ? 1 : 0) - (b.volumeType === 'Snapshot' ? 1 : 0) || a.name.localeCompare(b.name));
  const tree = treeOf(model, range.vtreeId, volumes);
  const readers = tree === null ? [] : volumes.filter((volume) => generationPath(tree, volume.generation).includes(range.generation));
  const head = volumes.find((volume) => volume.generation === range.generation);
  const readBy = readers.map((volume) => volume.name);
  // A head's own writes: that volume's (a snapshot's too: it is a volume of its own).
  if (head !== undefined) return { ...base, reaches: 'volume', volumeId: head.id, volumeName: head.name, readBy };
  const baseReader = readers.find((volume) => volume.volumeType !== 'Snapshot');
  if (baseReader !== undefined) return { ...base, reaches: 'sharedData', volumeId: baseReader.id, volumeName: baseReader.name, readBy };
  if (readers.length > 0) return { ...base, reaches: 'snapshotData', volumeId: null, volumeName: null, readBy };
  return { ...base, reaches: 'removed', volumeId: null, volumeName: null, readBy: [] };
}

export const unrepairableKey = (range: UnrepairableRange): string => `${range.poolId}/${range.vtreeId}/${range.generation}/${range.chunkIndex}/${range.offsetBytes}+${range.lengthBytes}`;

/**
 * Every range some SDS reports bad on both copies, once each (both copies' SDSs may report
 * the same range), mapped to volumes; oldest detection first. `poolId` keeps one pool's.
 */
export function unrepairableRanges(model: SystemModel, sdsStats: (sdsId: Id) => SdsStats | null, poolId?: Id): UnrepairableReport[] {
  const byKey = new Map<string, { range: UnrepairableRange; reportedBy: Id[] }>();
  for (const sdsId of Object.keys(model.sdss).sort()) {
    for (const range of unrepairableOf(sdsStats(sdsId))) {
      if (poolId !== undefined && range.poolId !== poolId) continue;
      const key = unrepairableKey(range);
      const seen = byKey.get(key);
      if (seen === undefined) byKey.set(key, { range, reportedBy: [sdsId] });
      else {
        seen.reportedBy.push(sdsId);
        if (range.detectedAtMs < seen.range.detectedAtMs) seen.range = range;
      }
    }
  }
  return [...byKey.values()]
    .map(({ range, reportedBy }) => describeUnrepairable(model, range, reportedBy))
    .sort((a, b) => a.detectedAtMs - b.detectedAtMs || a.vtreeId.localeCompare(b.vtreeId) || a.volumeOffsetBytes - b.volumeOffsetBytes);
}

/** One line's worth: "volume 'vol1' bytes 1048576..1052672 (4096 bytes)" and the like. */
export function describeRangeText(report: UnrepairableReport): string {
  const bytes = `bytes ${report.volumeOffsetBytes}..${report.volumeEndBytes} (${report.lengthBytes} bytes)`;
  switch (report.reaches) {
    case 'volume':
      return `volume '${report.volumeName ?? ''}' ${bytes}`;
    case 'sharedData':
      return `volume '${report.volumeName ?? ''}' ${bytes}, shared with its snapshots ${report.readBy.filter((name) => name !== report.volumeName).map((name) => `'${name}'`).join(', ')}`;
    case 'snapshotData':
      return `snapshot data (read by ${report.readBy.map((name) => `'${name}'`).join(', ')}) at ${bytes}`;
    case 'removed':
      // Its pool may be gone too (no chunk size): chunk coordinates, which need none.
      return `data no volume reads any more (V-Tree ${report.vtreeId} generation ${report.generation}, chunk ${report.chunkIndex} bytes ${report.offsetInChunkBytes}..${report.offsetInChunkBytes + report.lengthBytes})`;
  }
}

/**
 * Logs what an operator must hear about from the SDSs' heartbeats: a warning when an SDS's
 * integrity counters rise (naming the SDS, each counter's increase and new total; an error
 * when blocks became unrepairable), and one error per new range bad on both copies, with the
 * volume and its byte range. Counters that fall mean the SDS restarted (they count since it
 * started): they are the new baseline, their non-zero values logged as a rise from zero.
 */
export class IntegrityWatch {
  private readonly counters = new Map<Id, IntegrityCounters>();
  /** Per SDS, the keys of the ranges it reported last time: bounded by what it reports. */
  private readonly ranges = new Map<Id, Set<string>>();

  constructor(private readonly log: Logger) {}

  /** One SDS's heartbeat; `sdsName` only for the log. */
  onStats(model: SystemModel, sdsId: Id, sdsName: string, stats: SdsStats): void {
    const now = integrityOf(stats);
    let before = this.counters.get(sdsId) ?? noIntegrity;
    if (integrityCounterNames.some((name) => now[name] < before[name])) before = noIntegrity;
    this.counters.set(sdsId, now);
    const rises: Partial<Record<keyof IntegrityCounters, { increase: number; total: number }>> = {};
    for (const name of integrityCounterNames) if (now[name] > before[name]) rises[name] = { increase: now[name] - before[name], total: now[name] };
    const risen = Object.keys(rises) as Array<keyof IntegrityCounters>;
    if (risen.length > 0) {
      const text = risen.map((name) => `${name} +${(rises[name] as { increase: number }).increase} (${now[name]} since it started)`).join(', ');
      const fields = { sdsId, sdsName, ...Object.fromEntries(risen.map((name) => [`${name}Increase`, (rises[name] as { increase: number }).increase])), integrity: now };
      if (rises.unrepairableBlocks !== undefined) this.log.error(fields, `SDS '${sdsName}' integrity: ${text}`);
      else this.log.warn(fields, `SDS '${sdsName}' integrity: ${text}`);
    }
    const reported = unrepairableOf(stats);
    const previous = this.ranges.get(sdsId) ?? new Set<string>();
    const current = new Set<string>();
    for (const range of reported) {
      const key = unrepairableKey(range);
      current.add(key);
      if (previous.has(key) || this.reportedByAnother(sdsId, key)) continue;
      const report = describeUnrepairable(model, range, [sdsId]);
      this.log.error(
        {
          sdsId,
          sdsName,
          poolId: report.poolId,
          vtreeId: report.vtreeId,
          generation: report.generation,
          chunkIndex: report.chunkIndex,
          volumeId: report.volumeId,
          volumeName: report.volumeName,
          reaches: report.reaches,
          volumeOffsetBytes: report.volumeOffsetBytes,
          lengthBytes: report.lengthBytes,
        },
        `unrepairable: both copies bad, ${describeRangeText(report)}; IO to it fails with EIO until it is rewritten`,
      );
    }
    this.ranges.set(sdsId, current);
  }

  private reportedByAnother(sdsId: Id, key: string): boolean {
    for (const [other, keys] of this.ranges) if (other !== sdsId && keys.has(key)) return true;
    return false;
  }
}
