// The placement map: which SDS holds each placement group of each pool, at which epoch.
// The MDM computes it; SDCs and SDSs cache it. It travels as JSON (SdsOp.SetMap, and later
// the MDM's map updates) and is validated here, at the edge, by every process that takes it.
//
// A chunk belongs to placement group hash(vtreeId, chunkIndex) mod pgCount of its pool, so
// the map stays small however many volumes there are: its size is the pools' group count.
// Every change bumps `epoch`; an SDS refuses IO stamped with any other epoch than its own
// (StaleEpoch), which tells the sender that one of the two maps is out of date.

import { InvalidArgumentError } from '../common/errors.js';
import { pgCountMax } from '../common/limits.js';

export interface PlacementGroup {
  /** SDS id of the copy that serves reads and orders writes. */
  primary: string;
  /** SDS id of the mirror copy, or null while the group runs on one copy (degraded). */
  secondary: string | null;
  /** Device ids the copies live on, when the MDM chose them; an SDS picks otherwise. */
  primaryDevice?: string;
  secondaryDevice?: string;
  /** No copy of the group survived: IO to it fails (never zeros for lost data). */
  lost?: true;
}

export interface PoolPlacement {
  chunkBytes: number;
  groups: PlacementGroup[];
}

export interface SdsAddress {
  /** HOST:PORT of the SDS's wire listener. */
  address: string;
}

export interface PlacementMap {
  epoch: number;
  sds: Record<string, SdsAddress>;
  pools: Record<string, PoolPlacement>;
}

export const idPattern = /^[0-9a-f]{16}$/;

/**
 * The placement group of a chunk: a 32-bit mix (murmur3's finalizer) of the volume tree id
 * and the chunk index, so that consecutive chunks of a volume land on different groups and
 * every process computes the same answer.
 */
export function placementGroupOf(vtreeId: string, chunkIndex: number, pgCount: number): number {
  const high = parseInt(vtreeId.slice(0, 8), 16);
  const low = parseInt(vtreeId.slice(8, 16), 16);
  let hash = mix32(chunkIndex ^ 0x9e3779b9);
  hash = mix32(hash ^ low);
  hash = mix32(hash ^ high);
  return hash % pgCount;
}

function mix32(value: number): number {
  let hash = value >>> 0;
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b) >>> 0;
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35) >>> 0;
  hash ^= hash >>> 16;
  return hash >>> 0;
}

/** Validates untrusted JSON as a map; names the first wrong field. */
export function parsePlacementMap(value: unknown): PlacementMap {
  const map = record('map', value);
  const epoch = map['epoch'];
  if (!Number.isSafeInteger(epoch) || (epoch as number) < 1) throw new InvalidArgumentError('map.epoch', 'must be a positive integer');
  const sds: Record<string, SdsAddress> = {};
  for (const [sdsId, entry] of Object.entries(record('map.sds', map['sds']))) {
    if (!idPattern.test(sdsId)) throw new InvalidArgumentError(`map.sds.${sdsId}`, 'an SDS id is 16 hex digits');
    const address = record(`map.sds.${sdsId}`, entry)['address'];
    if (typeof address !== 'string' || !/^.+:\d{1,5}$/.test(address)) throw new InvalidArgumentError(`map.sds.${sdsId}.address`, 'must be HOST:PORT');
    sds[sdsId] = { address };
  }
  const pools: Record<string, PoolPlacement> = {};
  for (const [poolId, entry] of Object.entries(record('map.pools', map['pools']))) {
    const field = `map.pools.${poolId}`;
    if (!idPattern.test(poolId)) throw new InvalidArgumentError(field, 'a pool id is 16 hex digits');
    const pool = record(field, entry);
    const chunkBytes = pool['chunkBytes'];
    if (!Number.isSafeInteger(chunkBytes) || (chunkBytes as number) < 65536 || (chunkBytes as number) > 64 * 1024 * 1024 || ((chunkBytes as number) & ((chunkBytes as number) - 1)) !== 0) {
      throw new InvalidArgumentError(`${field}.chunkBytes`, 'must be a power of two from 64 KiB to 64 MiB');
    }
    const groups = pool['groups'];
    if (!Array.isArray(groups) || groups.length < 1 || groups.length > pgCountMax) {
      throw new InvalidArgumentError(`${field}.groups`, `must be an array of 1 to ${pgCountMax} placement groups`);
    }
    pools[poolId] = {
      chunkBytes: chunkBytes as number,
      groups: groups.map((group: unknown, pgIndex) => parseGroup(`${field}.groups[${pgIndex}]`, group, sds)),
    };
  }
  return { epoch: epoch as number, sds, pools };
}

function parseGroup(field: string, value: unknown, sds: Record<string, SdsAddress>): PlacementGroup {
  const group = record(field, value);
  const primary = group['primary'];
  const secondary = group['secondary'] ?? null;
  if (typeof primary !== 'string' || sds[primary] === undefined) throw new InvalidArgumentError(`${field}.primary`, 'must name an SDS of map.sds');
  if (secondary !== null && (typeof secondary !== 'string' || sds[secondary] === undefined)) {
    throw new InvalidArgumentError(`${field}.secondary`, 'must name an SDS of map.sds, or be null');
  }
  if (secondary === primary) throw new InvalidArgumentError(`${field}.secondary`, 'the two copies must be on different SDSs');
  const parsed: PlacementGroup = { primary, secondary };
  if (group['lost'] !== undefined) {
    if (group['lost'] !== true) throw new InvalidArgumentError(`${field}.lost`, 'must be true when present');
    parsed.lost = true;
  }
  for (const key of ['primaryDevice', 'secondaryDevice'] as const) {
    const device = group[key];
    if (device === undefined) continue;
    if (typeof device !== 'string' || !idPattern.test(device)) throw new InvalidArgumentError(`${field}.${key}`, 'a device id is 16 hex digits');
    parsed[key] = device;
  }
  return parsed;
}

function record(field: string, value: unknown): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new InvalidArgumentError(field, 'must be an object');
  return value as Record<string, unknown>;
}
