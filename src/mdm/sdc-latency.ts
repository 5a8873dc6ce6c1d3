// Client latency as ScaleIO's gateway shows it (userDataSdcReadLatency, userDataSdcWriteLatency;
// docs/rest-statistics.md), from the SDCs' heartbeats.
//
// Each heartbeat carries, per mapped volume, the reads and writes the SDC completed and their
// latencies summed since it started (VolumeQosStats.readsDone ...; measured once, by the SDC's
// metrics counters). A rate needs two of them: the MDM keeps each (SDC, volume)'s last sample
// and the window between the last two — what happened in about the last heartbeat interval.
//
//   heartbeat n-1: readsDone 1000, readLatencyUsSum 250000   at t
//   heartbeat n:   readsDone 1400, readLatencyUsSum 370000   at t + 1.0 s
//   window:        400 reads in 1.0 s, 120000 µs: 400 IO/s at 300 µs each
//
// Time is given, never read here (the service passes its clock), so this is testable as is.
// What is kept is bounded by the mappings: the service only passes volumes mapped to the SDC
// (MdmService.readQosStats), and forgets an SDC when its connection ends.

import type { Id } from './model.js';
import type { VolumeQosStats } from '../wire/mdm-ops.js';

/** What one SDC did with one volume between its last two heartbeats. */
export interface LatencyWindow {
  seconds: number;
  reads: number;
  readLatencyUsSum: number;
  writes: number;
  writeLatencyUsSum: number;
}

interface LatencySample {
  atMs: number;
  readsDone: number;
  readLatencyUsSum: number;
  writesDone: number;
  writeLatencyUsSum: number;
}

function sampleOf(stats: VolumeQosStats, atMs: number): LatencySample | null {
  const { readsDone, readLatencyUsSum, writesDone, writeLatencyUsSum } = stats;
  if (readsDone === undefined || readLatencyUsSum === undefined || writesDone === undefined || writeLatencyUsSum === undefined) return null;
  return { atMs, readsDone, readLatencyUsSum, writesDone, writeLatencyUsSum };
}

/** The window between two samples; null when there is none (no time passed, or the SDC restarted and its counters began again). */
export function latencyWindow(before: LatencySample, after: LatencySample): LatencyWindow | null {
  const seconds = (after.atMs - before.atMs) / 1000;
  const reads = after.readsDone - before.readsDone;
  const readLatencyUsSum = after.readLatencyUsSum - before.readLatencyUsSum;
  const writes = after.writesDone - before.writesDone;
  const writeLatencyUsSum = after.writeLatencyUsSum - before.writeLatencyUsSum;
  if (!(seconds > 0) || reads < 0 || readLatencyUsSum < 0 || writes < 0 || writeLatencyUsSum < 0) return null;
  return { seconds, reads, readLatencyUsSum, writes, writeLatencyUsSum };
}

/** Every SDC's latency windows, by volume, from its heartbeats. */
export class SdcLatencyWindows {
  private readonly bySdc = new Map<Id, Map<Id, { sample: LatencySample; window: LatencyWindow | null }>>();

  /**
   * One heartbeat's stats (validated: only volumes mapped to this SDC, counters safe integers).
   * A volume missing from it (unmapped, or an SDC that does not time its IO) is dropped.
   */
  onHeartbeat(sdcId: Id, atMs: number, stats: readonly VolumeQosStats[]): void {
    const previous = this.bySdc.get(sdcId);
    const next = new Map<Id, { sample: LatencySample; window: LatencyWindow | null }>();
    for (const entry of stats) {
      const sample = sampleOf(entry, atMs);
      if (sample === null) continue;
      const before = previous?.get(entry.volumeId)?.sample;
      next.set(entry.volumeId, { sample, window: before === undefined ? null : latencyWindow(before, sample) });
    }
    if (next.size === 0) this.bySdc.delete(sdcId);
    else this.bySdc.set(sdcId, next);
  }

  /** The SDC's window for a volume, undefined before two heartbeats with latency arrived. */
  window(sdcId: Id, volumeId: Id): LatencyWindow | undefined {
    return this.bySdc.get(sdcId)?.get(volumeId)?.window ?? undefined;
  }

  /** The SDC's connection ended: its next heartbeat starts over. */
  forget(sdcId: Id): void {
    this.bySdc.delete(sdcId);
  }
}
