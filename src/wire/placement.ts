// The placement map: which SDS holds each placement group of each pool, at which epoch.
// The MDM computes it; SDCs and SDSs cache it. It travels as JSON (SdsOp.SetMap, and later
// the MDM's map updates) and is validated here, at the edge, by every process that takes it.
//
// A chunk belongs to placement group hash(vtreeId, chunkIndex) mod pgCount of its pool, so
// the map stays small however many volumes there are: its size is the pools' group count.
// Every change bumps `epoch`; an SDS refuses IO stamped with any other epoch than its own
// (StaleEpoch), which tells the sender that one of the two maps is out of date.

import { InvalidArgumentError } from '../common/errors.js';
import { pgCountMax, scrubRateKBpsMax, scrubRateKBpsMin, vtreeGenerationsMax } from '../common/limits.js';

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
  /** The pool's background scrub policy; absent means the default (limits.ts scrub*Default). */
  scrub?: ScrubPolicy;
}

/** ScaleIO's background device scanner: deviceOnly verifies each copy's checksums, dataComparison also compares the two copies. */
export interface ScrubPolicy {
  mode: 'off' | 'deviceOnly' | 'dataComparison';
  /** Per device, in KB/s (1 KB = 1024 bytes, as ScaleIO's bandwidth limits). */
  rateKBps: number;
}

export interface SdsAddress {
  /** HOST:PORT of the SDS's wire listener. */
  address: string;
}

/**
 * A volume tree's generations (docs/snapshots.md). Every volume of the tree (the base
 * volume and its snapshots) has a head generation: its writes go there, and it reads a
 * chunk from the nearest generation on its path to the root that holds it. Taking a
 * snapshot of a volume whose head is h gives the volume and the snapshot each a new head
 * whose parent is h; h then has children and is never written again. A V-Tree that is not
 * in `PlacementMap.vtrees` has the one generation 0, which is its base volume's head.
 */
export interface VTreeMap {
  /** Every live generation (decimal string) and its parent; the root's parent is null. */
  generations: Record<string, number | null>;
  /** The heads: the generations writes may name, with whether the volume is a snapshot. */
  heads: Array<{ generation: number; snapshot: boolean }>;
  /** A snapshot barrier is under way: writes to the tree are refused with Frozen. */
  frozen?: true;
}

export interface PlacementMap {
  epoch: number;
  sds: Record<string, SdsAddress>;
  pools: Record<string, PoolPlacement>;
  /** V-Trees with more than their base generation, or frozen, by V-Tree id. */
  vtrees?: Record<string, VTreeMap>;
}

/** A V-Tree as the map gives it, or its implicit form (one generation 0, its head). */
export function vtreeOf(map: PlacementMap, vtreeId: string): VTreeMap {
  return map.vtrees?.[vtreeId] ?? { generations: { '0': null }, heads: [{ generation: 0, snapshot: false }] };
}

/** The generations a read of `generation` looks in, nearest first; empty if it is not live. */
export function generationPath(tree: VTreeMap, generation: number): number[] {
  const path: number[] = [];
  let current: number | null = generation;
  while (current !== null) {
    const parent: number | null | undefined = tree.generations[String(current)];
    if (parent === undefined) return [];
    path.push(current);
    current = parent;
  }
  return path;
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
    if (pool['scrub'] !== undefined) (pools[poolId] as PoolPlacement).scrub = parseScrubPolicy(`${field}.scrub`, pool['scrub']);
  }
  const parsed: PlacementMap = { epoch: epoch as number, sds, pools };
  if (map['vtrees'] !== undefined) {
    const vtrees: Record<string, VTreeMap> = {};
    for (const [vtreeId, entry] of Object.entries(record('map.vtrees', map['vtrees']))) vtrees[vtreeId] = parseVTree(`map.vtrees.${vtreeId}`, vtreeId, entry);
    parsed.vtrees = vtrees;
  }
  return parsed;
}

export const scrubModes: readonly ScrubPolicy['mode'][] = ['off', 'deviceOnly', 'dataComparison'];

/**
 * A pool's scrub policy from untrusted JSON: a known mode and a whole rate within
 * scrubRateKBpsMin..scrubRateKBpsMax (the rate is kept even when the mode is 'off', so
 * that turning the scrub back on keeps what the administrator gave).
 */
export function parseScrubPolicy(field: string, value: unknown): ScrubPolicy {
  const policy = record(field, value);
  const mode = policy['mode'];
  if (typeof mode !== 'string' || !(scrubModes as readonly string[]).includes(mode)) {
    throw new InvalidArgumentError(`${field}.mode`, `must be ${scrubModes.map((name) => `'${name}'`).join(', ')}`);
  }
  const rateKBps = policy['rateKBps'];
  if (!Number.isSafeInteger(rateKBps) || (rateKBps as number) < scrubRateKBpsMin || (rateKBps as number) > scrubRateKBpsMax) {
    throw new InvalidArgumentError(`${field}.rateKBps`, `must be an integer from ${scrubRateKBpsMin} to ${scrubRateKBpsMax} (KB/s per device)`);
  }
  return { mode: mode as ScrubPolicy['mode'], rateKBps: rateKBps as number };
}

/** A tree: ids and generations in range, every parent live, no cycle, heads are leaves. */
function parseVTree(field: string, vtreeId: string, value: unknown): VTreeMap {
  if (!idPattern.test(vtreeId)) throw new InvalidArgumentError(field, 'a V-Tree id is 16 hex digits');
  const tree = record(field, value);
  const generations: Record<string, number | null> = {};
  const entries = Object.entries(record(`${field}.generations`, tree['generations']));
  if (entries.length < 1 || entries.length > vtreeGenerationsMax) throw new InvalidArgumentError(`${field}.generations`, `must hold 1 to ${vtreeGenerationsMax} generations`);
  for (const [name, parent] of entries) {
    if (!/^(0|[1-9][0-9]{0,9})$/.test(name) || Number(name) > 0xffffffff) throw new InvalidArgumentError(`${field}.generations.${name}`, 'a generation is a whole number below 2^32');
    if (parent !== null && (!Number.isSafeInteger(parent) || (parent as number) < 0 || (parent as number) > 0xffffffff)) {
      throw new InvalidArgumentError(`${field}.generations.${name}`, 'the parent must be a generation or null');
    }
    generations[name] = parent as number | null;
  }
  const roots = Object.values(generations).filter((parent) => parent === null).length;
  if (roots !== 1) throw new InvalidArgumentError(`${field}.generations`, `must have exactly one root, has ${roots}`);
  const shaped: VTreeMap = { generations, heads: [] };
  for (const name of Object.keys(generations)) {
    const path = generationPath(shaped, Number(name));
    // A path ends at the root, or is cut short by an unknown parent; a cycle never ends.
    if (path.length === 0 || path.length > entries.length || generations[String(path[path.length - 1])] !== null) {
      throw new InvalidArgumentError(`${field}.generations.${name}`, 'its parents do not lead to the root (unknown parent or a cycle)');
    }
  }
  const heads = tree['heads'];
  if (!Array.isArray(heads) || heads.length < 1) throw new InvalidArgumentError(`${field}.heads`, 'must be a non-empty array');
  const parents = new Set(Object.values(generations).filter((parent): parent is number => parent !== null));
  const seen = new Set<number>();
  for (const [index, head] of heads.entries()) {
    const entry = record(`${field}.heads[${index}]`, head);
    const generation = entry['generation'];
    if (typeof generation !== 'number' || generations[String(generation)] === undefined) throw new InvalidArgumentError(`${field}.heads[${index}].generation`, 'must be a generation of the tree');
    if (parents.has(generation)) throw new InvalidArgumentError(`${field}.heads[${index}].generation`, 'a head has no children (a generation with children is never written)');
    if (seen.has(generation)) throw new InvalidArgumentError(`${field}.heads[${index}].generation`, 'two volumes cannot share a head');
    if (typeof entry['snapshot'] !== 'boolean') throw new InvalidArgumentError(`${field}.heads[${index}].snapshot`, 'must be true or false');
    seen.add(generation);
    shaped.heads.push({ generation, snapshot: entry['snapshot'] });
  }
  if (tree['frozen'] !== undefined) {
    if (tree['frozen'] !== true) throw new InvalidArgumentError(`${field}.frozen`, 'must be true when present');
    shaped.frozen = true;
  }
  return shaped;
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
