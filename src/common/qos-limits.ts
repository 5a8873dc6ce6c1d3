// The QoS limits of one mapping (one volume on one SDC) and their rules (docs/qos.md),
// shared by the MDM, which refuses limits that break them, and the SDC, which enforces
// what the MDM sends and checks it again at its edge.

import { qosBandwidthStepKbps, qosBurstSecondsMax, qosIopsLimitMin } from './limits.js';

/**
 * Requests and KiB per second, 0 = unlimited. The burst follows librbd's `_burst` options:
 * the rate at which an idle volume may spend what it saved, saving up to burst ×
 * burstSeconds (0 = no burst: the limits hold at all times; a burst with 0 seconds saves
 * one second's worth).
 */
export interface QosLimits {
  iopsLimit: number;
  bandwidthLimitKbps: number;
  iopsBurst: number;
  bandwidthBurstKbps: number;
  burstSeconds: number;
}

export const qosLimitFields: ReadonlyArray<keyof QosLimits> = ['iopsLimit', 'bandwidthLimitKbps', 'iopsBurst', 'bandwidthBurstKbps', 'burstSeconds'];

export const qosUnlimited: Readonly<QosLimits> = Object.freeze({ iopsLimit: 0, bandwidthLimitKbps: 0, iopsBurst: 0, bandwidthBurstKbps: 0, burstSeconds: 0 });

/**
 * Which rules apply: 'scaleio' all of them (a new limit at the MDM); 'journal' all but whole
 * MiB/s for a bandwidth limit, which meshblock took up with enforcement (a limit an older MDM
 * accepted must replay, or its journal would not open); 'enforceable' only what the SDC needs
 * to enforce a limit at all (an SDC takes whatever a consistent MDM sends).
 */
export type QosRules = 'scaleio' | 'journal' | 'enforceable';

/** The first rule `limits` breaks, naming the field, or null. */
export function qosLimitsProblem(limits: Readonly<QosLimits>, rules: QosRules): { field: keyof QosLimits; message: string } | null {
  for (const field of qosLimitFields) {
    const value = limits[field];
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
      return { field, message: `must be a non-negative integer (${field === 'burstSeconds' ? 'seconds' : '0 = none'}), got ${String(value)}` };
    }
  }
  const { iopsLimit, bandwidthLimitKbps, iopsBurst, bandwidthBurstKbps, burstSeconds } = limits;
  if (rules !== 'enforceable' && iopsLimit > 0 && iopsLimit < qosIopsLimitMin) {
    return { field: 'iopsLimit', message: `must be 0 (unlimited) or at least ${qosIopsLimitMin}, as in ScaleIO; got ${iopsLimit}` };
  }
  if (rules === 'scaleio' && bandwidthLimitKbps % qosBandwidthStepKbps !== 0) {
    return { field: 'bandwidthLimitKbps', message: `must be a multiple of ${qosBandwidthStepKbps} KiB/s (whole MiB/s, as in ScaleIO), got ${bandwidthLimitKbps}` };
  }
  if (iopsBurst > 0) {
    if (iopsLimit === 0) return { field: 'iopsBurst', message: 'needs an IOPS limit to rise above (0 = no burst)' };
    if (iopsBurst < iopsLimit) return { field: 'iopsBurst', message: `must be 0 (no burst) or at least the IOPS limit, ${iopsLimit}; got ${iopsBurst}` };
  }
  if (bandwidthBurstKbps > 0) {
    if (bandwidthLimitKbps === 0) return { field: 'bandwidthBurstKbps', message: 'needs a bandwidth limit to rise above (0 = no burst)' };
    if (rules !== 'enforceable' && bandwidthBurstKbps % qosBandwidthStepKbps !== 0) {
      return { field: 'bandwidthBurstKbps', message: `must be a multiple of ${qosBandwidthStepKbps} KiB/s (whole MiB/s), got ${bandwidthBurstKbps}` };
    }
    if (bandwidthBurstKbps < bandwidthLimitKbps) return { field: 'bandwidthBurstKbps', message: `must be 0 (no burst) or at least the bandwidth limit, ${bandwidthLimitKbps} KiB/s; got ${bandwidthBurstKbps}` };
  }
  if (burstSeconds > qosBurstSecondsMax) return { field: 'burstSeconds', message: `must be from 0 to ${qosBurstSecondsMax}, got ${burstSeconds}` };
  return null;
}
