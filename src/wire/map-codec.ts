// The placement map in a compact binary form, and deltas between two epochs of it (issue 23).
// The JSON form (placement.ts) costs ~140 bytes a group, and the MDM sends the whole map to
// every peer on every epoch change: at 1,024 SDSs that is megabytes per peer per failure.
// Here a group costs a few bytes (two varint indices into a table of copies), and a delta
// carries only the groups, SDSs, pools and V-Trees that changed. MapUpdates (at the end) is
// the sender's side: what a peer at epoch E needs (nothing, the chain of deltas from E, or the
// whole map). On the wire: SdsOp.SetMapBinary, SdcOp.SetMap and MdmOp.GetMapBinary carry a
// MapUpdate as its frames one after another (encodeMapUpdate; docs/map-encoding.md).
//
// Every encoded map or delta is one self-checking unit: a fixed header with a CRC-32C over
// header and body. Input that is truncated, corrupt, of another version or kind, or whose
// counts run past its end is refused whole (MapCodecError) before anything is returned or
// changed: decodeMap builds a new map, applyDelta builds a new map from the old one (which it
// never mutates), and both run the result through parsePlacementMap, the validation the JSON
// path uses, so the binary path accepts exactly the maps the JSON path accepts.
//
// Header (16 bytes, little-endian):
//
//   0       4       5      6          8              12             16
//   +-------+-------+------+----------+--------------+--------------+---------------
//   | magic | ver.  | kind | reserved | bodyBytes    | crc32c       | body ...
//   | MBPM  | 1     | 1|2  | 0        | u32          | u32          |
//   +-------+-------+------+----------+--------------+--------------+---------------
//   crc32c covers bytes 0..11 of the header, then the body.
//
// Integers in the body are unsigned LEB128 varints (at most 8 bytes, below 2^53); ids (SDS,
// device, pool, V-Tree: 16 hex digits everywhere in the map) are 8 raw bytes; strings are a
// varint length and UTF-8.
//
// Full map body (kind 1), canonical: SDSs, pools and V-Trees in id order, so that equal maps
// encode to equal bytes whatever order their objects' keys were made in (the digest below
// depends on it):
//
//   epoch
//   sdsCount,  sdsCount × (sdsId, address)             -- the SDS table; its index is an SDS's number
//   copyCount, copyCount × (sdsIndex, hasDevice u8, [deviceId])
//                                                       -- the copy table: each (SDS, device) pair a
//                                                          group names, in order of first use
//   poolCount, poolCount × pool
//   vtreeCount + 1 (0: no `vtrees` key), (vtreeCount × vtree)
//
//   pool  = poolId, chunkBytesLog2 u8, scrubMode u8 (0 none, 1 off, 2 deviceOnly,
//           3 dataComparison), [rateKBps], groupCount, groupCount × group
//   group = (primaryCopy << 1 | lost), secondaryCopy + 1 (0: null)
//   vtree = vtreeId, frozen u8, generationCount × (generation, parent + 1 (0: root)),
//           headCount × (generation, snapshot u8)
//
// Delta body (kind 2): what turns the map of `baseEpoch` into the map of `epoch`.
//
//   baseEpoch, epoch, baseDigest u32, resultDigest u32
//   sdsRemovedCount × sdsId, sdsSetCount × (sdsId, address)
//   copyCount × (baseCopy + 1, or 0 then (sdsId, hasDevice u8, [deviceId]))
//                                                       -- the delta's own copy table: a copy the
//                                                          base names by its number in the base's
//                                                          canonical copy table, a new one in full
//   poolRemovedCount × poolId
//   poolSetCount × (poolId, chunkBytesLog2, scrubMode, [rateKBps], groupCount, form u8,
//                   form 0 (all groups): groupCount × group
//                   form 1 (changed):    changedCount × (indexGap, group))
//   vtreesForm u8 (0 unchanged, 1 drop the `vtrees` key, 2 changes), [vtreeRemovedCount × vtreeId,
//                   vtreeSetCount × vtree]
//
// A digest is the CRC-32C of a map's canonical full encoding. A delta names both: the base's,
// so that it is refused by a peer whose map has the same epoch but other content (which
// should never happen, and would otherwise be silently compounded), and the result's, so that
// the peer checks end to end that it now holds exactly the MDM's map.

import { crc32c } from '../common/crc32c.js';
import { MeshblockError } from '../common/errors.js';
import { mapAddressBytesMax, mapEncodedBytesMax, mapUpdateDeltasMax, mapPoolsMax, mapSdsCountMax, mapVtreesMax, pgCountMax, vtreeGenerationsMax } from '../common/limits.js';
import { idPattern, parsePlacementMap, scrubModes, type PlacementGroup, type PlacementMap, type PoolPlacement, type VTreeMap } from './placement.js';

export const mapCodecMagic = 0x4d50424d; // 'MBPM' read as a little-endian u32
export const mapCodecVersion = 1;
export const mapHeaderBytes = 16;

/** The kind byte of the header. */
export const MapKind = { Full: 1, Delta: 2 } as const;
export type MapKind = (typeof MapKind)[keyof typeof MapKind];

export type MapCodecErrorCode = 'MB_ERR_MAP_CORRUPT' | 'MB_ERR_MAP_BASE';

/** An encoded map or delta was refused: corrupt or malformed (MB_ERR_MAP_CORRUPT), or a delta for another base (MB_ERR_MAP_BASE). */
export class MapCodecError extends MeshblockError {
  constructor(code: MapCodecErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** The map in its compact form. */
export function encodeMap(map: PlacementMap): Buffer {
  return frame(MapKind.Full, encodeMapBody(map).body);
}

/** A map from its compact form; refuses it whole if anything about it is wrong. */
export function decodeMap(encoded: Buffer): PlacementMap {
  const reader = new Reader(unframe(encoded, MapKind.Full), 'map');
  const map = readMapBody(reader);
  reader.end();
  return validated(map);
}

/** The CRC-32C of the map's canonical encoding: equal maps have equal digests. */
export function mapDigest(map: PlacementMap): number {
  return crc32c(encodeMapBody(map).body);
}

/** The epoch an encoded map or delta brings a peer to, read from a checked frame (cheap: no decode). */
export function encodedEpoch(encoded: Buffer): { kind: MapKind; epoch: number; baseEpoch: number | null } {
  const kind = encoded.length >= mapHeaderBytes ? encoded.readUInt8(5) : 0;
  if (kind !== MapKind.Full && kind !== MapKind.Delta) throw corrupt('map', `unknown kind ${kind}`);
  const reader = new Reader(unframe(encoded, kind), kind === MapKind.Full ? 'map' : 'delta');
  if (kind === MapKind.Full) return { kind, epoch: reader.uint('epoch'), baseEpoch: null };
  const baseEpoch = reader.uint('baseEpoch');
  return { kind, epoch: reader.uint('epoch'), baseEpoch };
}

/** What turns `base` into `next`, for a peer that holds `base`. `next` must be a later epoch. */
export function encodeDelta(base: PlacementMap, next: PlacementMap): Buffer {
  if (next.epoch <= base.epoch) throw new MapCodecError('MB_ERR_MAP_BASE', `a delta goes forward: epoch ${base.epoch} to ${next.epoch}`);
  const writer = new Writer();
  writer.uint(base.epoch);
  writer.uint(next.epoch);
  const baseCanonical = encodeMapBody(base);
  writer.u32(crc32c(baseCanonical.body));
  writer.u32(mapDigest(next));

  const sdsRemoved = sortedKeys(base.sds).filter((sdsId) => next.sds[sdsId] === undefined);
  const sdsSet = sortedKeys(next.sds).filter((sdsId) => base.sds[sdsId]?.address !== (next.sds[sdsId] as { address: string }).address);
  writer.uint(sdsRemoved.length);
  for (const sdsId of sdsRemoved) writer.id(sdsId);
  writer.uint(sdsSet.length);
  for (const sdsId of sdsSet) {
    writer.id(sdsId);
    writer.string((next.sds[sdsId] as { address: string }).address);
  }

  // The pools' changes first into a body of their own, so that the copy table they fill can
  // be written before them.
  const copies = new CopyTable();
  const baseCopies = new Map(baseCanonical.copies.entries.map((copy, index) => [copyKey(copy.sdsId, copy.deviceId), index]));
  const pools = new Writer();
  const poolRemoved = sortedKeys(base.pools).filter((poolId) => next.pools[poolId] === undefined);
  pools.uint(poolRemoved.length);
  for (const poolId of poolRemoved) pools.id(poolId);
  const poolSet: Array<[string, PoolPlacement, number[] | null]> = [];
  for (const poolId of sortedKeys(next.pools)) {
    const pool = next.pools[poolId] as PoolPlacement;
    const old = base.pools[poolId];
    if (old === undefined || old.groups.length !== pool.groups.length) {
      poolSet.push([poolId, pool, null]);
      continue;
    }
    const changed: number[] = [];
    for (let index = 0; index < pool.groups.length; index++) {
      if (!sameGroup(old.groups[index] as PlacementGroup, pool.groups[index] as PlacementGroup)) changed.push(index);
    }
    if (changed.length > 0 || old.chunkBytes !== pool.chunkBytes || !sameScrub(old, pool)) {
      // Past half the groups, the whole list is smaller than indices plus groups.
      poolSet.push([poolId, pool, changed.length * 2 > pool.groups.length ? null : changed]);
    }
  }
  pools.uint(poolSet.length);
  for (const [poolId, pool, changed] of poolSet) {
    writePoolHead(pools, poolId, pool);
    if (changed === null) {
      pools.u8(0);
      for (const group of pool.groups) writeGroup(pools, copies.indexOf(group));
    } else {
      pools.u8(1);
      pools.uint(changed.length);
      let previous = -1;
      for (const index of changed) {
        pools.uint(index - previous - 1);
        previous = index;
        writeGroup(pools, copies.indexOf(pool.groups[index] as PlacementGroup));
      }
    }
  }
  // A copy the base map names is its number there (both ends number the base's copies alike:
  // the canonical encoding's table); a new one is spelled out.
  writer.uint(copies.entries.length);
  for (const copy of copies.entries) {
    const baseIndex = baseCopies.get(copyKey(copy.sdsId, copy.deviceId));
    writer.uint(baseIndex === undefined ? 0 : baseIndex + 1);
    if (baseIndex !== undefined) continue;
    writer.id(copy.sdsId);
    writeOptionalId(writer, copy.deviceId);
  }
  writer.bytes(pools.finish());

  if (next.vtrees === undefined) {
    writer.u8(base.vtrees === undefined ? 0 : 1);
  } else {
    const before = base.vtrees ?? {};
    const removed = sortedKeys(before).filter((vtreeId) => next.vtrees?.[vtreeId] === undefined);
    const set = sortedKeys(next.vtrees).filter((vtreeId) => {
      const old = before[vtreeId];
      return old === undefined || !sameVTree(old, next.vtrees?.[vtreeId] as VTreeMap);
    });
    if (base.vtrees !== undefined && removed.length === 0 && set.length === 0) {
      writer.u8(0);
    } else {
      writer.u8(2);
      writer.uint(removed.length);
      for (const vtreeId of removed) writer.id(vtreeId);
      writer.uint(set.length);
      for (const vtreeId of set) writeVTree(writer, vtreeId, next.vtrees[vtreeId] as VTreeMap);
    }
  }
  return frame(MapKind.Delta, writer.finish());
}

/**
 * The map `delta` makes of `base`, a new object (`base` is left as it was). Refused whole: a
 * corrupt delta (MB_ERR_MAP_CORRUPT), or one made for another base map (MB_ERR_MAP_BASE: an
 * older or newer epoch, or the same epoch with other content); the peer then asks for the
 * whole map.
 */
export function applyDelta(base: PlacementMap, delta: Buffer): PlacementMap {
  const reader = new Reader(unframe(delta, MapKind.Delta), 'delta');
  const baseEpoch = reader.uint('baseEpoch');
  const epoch = reader.uint('epoch');
  if (baseEpoch !== base.epoch) throw new MapCodecError('MB_ERR_MAP_BASE', `the delta is for epoch ${baseEpoch}, this map is at epoch ${base.epoch}`);
  if (epoch <= baseEpoch) throw corrupt('delta', `epoch ${epoch} does not follow its base ${baseEpoch}`);
  const baseDigest = reader.u32('baseDigest');
  const resultDigest = reader.u32('resultDigest');
  const baseCanonical = encodeMapBody(base);
  if (crc32c(baseCanonical.body) !== baseDigest) throw new MapCodecError('MB_ERR_MAP_BASE', `the delta is for another map of epoch ${baseEpoch} (base digest differs)`);

  const sds: PlacementMap['sds'] = { ...base.sds };
  for (let count = reader.count('sdsRemoved', 8, mapSdsCountMax); count > 0; count--) {
    const sdsId = reader.id('sdsRemoved');
    if (sds[sdsId] === undefined) throw corrupt('delta', `removes SDS ${sdsId}, which the map does not have`);
    delete sds[sdsId];
  }
  for (let count = reader.count('sdsSet', 9, mapSdsCountMax); count > 0; count--) {
    const sdsId = reader.id('sdsSet');
    sds[sdsId] = { address: reader.string('sdsSet.address', mapAddressBytesMax) };
  }
  const copies = readCopyTable(reader, 1, (index) => {
    const baseNumber = reader.uint(`copies[${index}].baseIndex`);
    if (baseNumber > 0) {
      const copy = baseCanonical.copies.entries[baseNumber - 1];
      if (copy === undefined) throw corrupt('delta', `copy ${index} is the base's copy ${baseNumber - 1} of ${baseCanonical.copies.entries.length}`);
      return copy;
    }
    const sdsId = reader.id(`copies[${index}].sdsId`);
    return { sdsId, deviceId: readOptionalId(reader, `copies[${index}].deviceId`) };
  });

  const pools: PlacementMap['pools'] = { ...base.pools };
  for (let count = reader.count('poolRemoved', 8, mapPoolsMax); count > 0; count--) {
    const poolId = reader.id('poolRemoved');
    if (pools[poolId] === undefined) throw corrupt('delta', `removes pool ${poolId}, which the map does not have`);
    delete pools[poolId];
  }
  for (let count = reader.count('poolSet', 12, mapPoolsMax); count > 0; count--) {
    const { poolId, pool, groupCount } = readPoolHead(reader);
    const form = reader.u8('pool.form');
    if (form === 0) {
      reader.checkCount('pool.groupCount', groupCount, 2, pgCountMax);
      for (let index = 0; index < groupCount; index++) pool.groups.push(readGroup(reader, copies));
    } else if (form === 1) {
      const old = base.pools[poolId];
      if (old === undefined || old.groups.length !== groupCount) throw corrupt('delta', `changes groups of pool ${poolId}, whose group count was not ${groupCount}`);
      pool.groups = old.groups.slice();
      let index = -1;
      for (let changed = reader.count('pool.changed', 3, groupCount); changed > 0; changed--) {
        index += reader.uint('pool.changed.gap') + 1;
        if (index >= groupCount) throw corrupt('delta', `changes group ${index} of pool ${poolId}, which has ${groupCount}`);
        pool.groups[index] = readGroup(reader, copies);
      }
    } else {
      throw corrupt('delta', `unknown pool form ${form}`);
    }
    pools[poolId] = pool;
  }

  const next: PlacementMap = { epoch, sds, pools };
  const vtreesForm = reader.u8('vtreesForm');
  if (vtreesForm === 0) {
    if (base.vtrees !== undefined) next.vtrees = base.vtrees;
  } else if (vtreesForm === 2) {
    const vtrees: Record<string, VTreeMap> = { ...base.vtrees };
    for (let count = reader.count('vtreeRemoved', 8, mapVtreesMax); count > 0; count--) {
      const vtreeId = reader.id('vtreeRemoved');
      if (vtrees[vtreeId] === undefined) throw corrupt('delta', `removes V-Tree ${vtreeId}, which the map does not have`);
      delete vtrees[vtreeId];
    }
    for (let count = reader.count('vtreeSet', 11, mapVtreesMax); count > 0; count--) {
      const [vtreeId, tree] = readVTree(reader);
      vtrees[vtreeId] = tree;
    }
    next.vtrees = vtrees;
  } else if (vtreesForm !== 1) {
    throw corrupt('delta', `unknown V-Tree form ${vtreesForm}`);
  }
  reader.end();
  const result = validated(next);
  const digest = mapDigest(result);
  if (digest !== resultDigest) throw corrupt('delta', 'the map it makes is not the one it was made for (result digest differs)');
  return result;
}

// --- the full map's body -------------------------------------------------------------------

/** The canonical body, and the copy table it numbered (a delta refers to the base's copies by number). */
function encodeMapBody(map: PlacementMap): { body: Buffer; copies: CopyTable } {
  const writer = new Writer();
  writer.uint(map.epoch);
  const sdsIds = sortedKeys(map.sds);
  const sdsIndex = new Map(sdsIds.map((sdsId, index) => [sdsId, index]));
  writer.uint(sdsIds.length);
  for (const sdsId of sdsIds) {
    writer.id(sdsId);
    writer.string((map.sds[sdsId] as { address: string }).address);
  }
  const copies = new CopyTable();
  const pools = new Writer();
  const poolIds = sortedKeys(map.pools);
  pools.uint(poolIds.length);
  for (const poolId of poolIds) {
    const pool = map.pools[poolId] as PoolPlacement;
    writePoolHead(pools, poolId, pool);
    for (const group of pool.groups) writeGroup(pools, copies.indexOf(group));
  }
  writer.uint(copies.entries.length);
  for (const copy of copies.entries) {
    const index = sdsIndex.get(copy.sdsId);
    if (index === undefined) throw new MapCodecError('MB_ERR_MAP_CORRUPT', `a group names SDS ${copy.sdsId}, which map.sds lacks`);
    writer.uint(index);
    writeOptionalId(writer, copy.deviceId);
  }
  writer.bytes(pools.finish());
  if (map.vtrees === undefined) {
    writer.uint(0);
  } else {
    const vtreeIds = sortedKeys(map.vtrees);
    writer.uint(vtreeIds.length + 1);
    for (const vtreeId of vtreeIds) writeVTree(writer, vtreeId, map.vtrees[vtreeId] as VTreeMap);
  }
  return { body: writer.finish(), copies };
}

function readMapBody(reader: Reader): PlacementMap {
  const epoch = reader.uint('epoch');
  const sdsIds: string[] = [];
  const sds: PlacementMap['sds'] = {};
  for (let count = reader.count('sdsCount', 9, mapSdsCountMax); count > 0; count--) {
    const sdsId = reader.id('sds.id');
    if (sds[sdsId] !== undefined) throw corrupt('map', `SDS ${sdsId} twice`);
    sds[sdsId] = { address: reader.string('sds.address', mapAddressBytesMax) };
    sdsIds.push(sdsId);
  }
  const copies = readCopyTable(reader, 2, (index) => {
    const sdsIndex = reader.uint(`copies[${index}].sdsIndex`);
    const sdsId = sdsIds[sdsIndex];
    if (sdsId === undefined) throw corrupt('map', `copy ${index} names SDS number ${sdsIndex} of ${sdsIds.length}`);
    return { sdsId, deviceId: readOptionalId(reader, `copies[${index}].deviceId`) };
  });
  const pools: PlacementMap['pools'] = {};
  for (let count = reader.count('poolCount', 11, mapPoolsMax); count > 0; count--) {
    const { poolId, pool, groupCount } = readPoolHead(reader);
    if (pools[poolId] !== undefined) throw corrupt('map', `pool ${poolId} twice`);
    reader.checkCount('pool.groupCount', groupCount, 2, pgCountMax);
    for (let index = 0; index < groupCount; index++) pool.groups.push(readGroup(reader, copies));
    pools[poolId] = pool;
  }
  const map: PlacementMap = { epoch, sds, pools };
  const vtreeCountPlusOne = reader.uint('vtreeCount');
  if (vtreeCountPlusOne > 0) {
    const vtrees: Record<string, VTreeMap> = {};
    for (let count = reader.checkCount('vtreeCount', vtreeCountPlusOne - 1, 11, mapVtreesMax); count > 0; count--) {
      const [vtreeId, tree] = readVTree(reader);
      if (vtrees[vtreeId] !== undefined) throw corrupt('map', `V-Tree ${vtreeId} twice`);
      vtrees[vtreeId] = tree;
    }
    map.vtrees = vtrees;
  }
  return map;
}

// --- pieces shared by maps and deltas -----------------------------------------------------

interface Copy {
  sdsId: string;
  deviceId: string | null;
}

/** The (SDS, device) pairs the groups name, each numbered once, in order of first use. */
class CopyTable {
  readonly entries: Copy[] = [];
  private readonly index = new Map<string, number>();

  /** The index of the group's primary and secondary copy (-1: none), with the lost flag. */
  indexOf(group: PlacementGroup): { primary: number; secondary: number; lost: boolean } {
    if (group.secondary === null && group.secondaryDevice !== undefined) {
      throw new MapCodecError('MB_ERR_MAP_CORRUPT', `a group with no secondary names a secondary device (${group.secondaryDevice})`);
    }
    return {
      primary: this.number(group.primary, group.primaryDevice ?? null),
      secondary: group.secondary === null ? -1 : this.number(group.secondary, group.secondaryDevice ?? null),
      lost: group.lost === true,
    };
  }

  private number(sdsId: string, deviceId: string | null): number {
    const key = copyKey(sdsId, deviceId);
    let index = this.index.get(key);
    if (index === undefined) {
      index = this.entries.length;
      this.entries.push({ sdsId, deviceId });
      this.index.set(key, index);
    }
    return index;
  }
}

function copyKey(sdsId: string, deviceId: string | null): string {
  return deviceId === null ? sdsId : `${sdsId}/${deviceId}`;
}

function readCopyTable(reader: Reader, copyBytesMin: number, readCopy: (index: number) => Copy): Copy[] {
  const copies: Copy[] = [];
  const count = reader.count('copyCount', copyBytesMin, 2 * mapPoolsMax * pgCountMax);
  for (let index = 0; index < count; index++) copies.push(readCopy(index));
  return copies;
}

function writeGroup(writer: Writer, group: { primary: number; secondary: number; lost: boolean }): void {
  writer.uint(group.primary * 2 + (group.lost ? 1 : 0));
  writer.uint(group.secondary + 1);
}

/** A group with the keys in the order the MDM's state machine makes them (placementMap()). */
function readGroup(reader: Reader, copies: readonly Copy[]): PlacementGroup {
  const first = reader.uint('group.primary');
  const primary = copies[Math.floor(first / 2)];
  const secondaryNumber = reader.uint('group.secondary');
  const secondary = secondaryNumber === 0 ? null : copies[secondaryNumber - 1];
  if (primary === undefined || secondary === undefined) throw corrupt('map', `a group names a copy past the table's ${copies.length}`);
  const group: PlacementGroup = { primary: primary.sdsId, secondary: secondary === null ? null : secondary.sdsId };
  if (primary.deviceId !== null) group.primaryDevice = primary.deviceId;
  if (secondary !== null && secondary.deviceId !== null) group.secondaryDevice = secondary.deviceId;
  if (first % 2 === 1) group.lost = true;
  return group;
}

function writePoolHead(writer: Writer, poolId: string, pool: PoolPlacement): void {
  writer.id(poolId);
  const log2 = Math.log2(pool.chunkBytes);
  if (!Number.isInteger(log2)) throw new MapCodecError('MB_ERR_MAP_CORRUPT', `pool ${poolId}: chunkBytes ${pool.chunkBytes} is not a power of two`);
  writer.u8(log2);
  if (pool.scrub === undefined) {
    writer.u8(0);
  } else {
    writer.u8(scrubModes.indexOf(pool.scrub.mode) + 1);
    writer.uint(pool.scrub.rateKBps);
  }
  writer.uint(pool.groups.length);
}

function readPoolHead(reader: Reader): { poolId: string; pool: PoolPlacement; groupCount: number } {
  const poolId = reader.id('pool.id');
  const log2 = reader.u8('pool.chunkBytesLog2');
  if (log2 > 52) throw corrupt('map', `pool ${poolId}: chunk size 2^${log2}`);
  const scrubMode = reader.u8('pool.scrubMode');
  const pool: PoolPlacement = { chunkBytes: 2 ** log2, groups: [] };
  if (scrubMode !== 0) {
    const mode = scrubModes[scrubMode - 1];
    if (mode === undefined) throw corrupt('map', `pool ${poolId}: scrub mode ${scrubMode}`);
    pool.scrub = { mode, rateKBps: reader.uint('pool.scrub.rateKBps') };
  }
  // Its groups' bytes are checked by the caller: a delta may carry only a few of them.
  const groupCount = reader.checkCount('pool.groupCount', reader.uint('pool.groupCount'), 0, pgCountMax);
  return { poolId, pool, groupCount };
}

function writeVTree(writer: Writer, vtreeId: string, tree: VTreeMap): void {
  writer.id(vtreeId);
  writer.u8(tree.frozen === true ? 1 : 0);
  const generations = Object.entries(tree.generations);
  writer.uint(generations.length);
  for (const [generation, parent] of generations) {
    writer.uint(Number(generation));
    writer.uint(parent === null ? 0 : parent + 1);
  }
  writer.uint(tree.heads.length);
  for (const head of tree.heads) {
    writer.uint(head.generation);
    writer.u8(head.snapshot ? 1 : 0);
  }
}

function readVTree(reader: Reader): [string, VTreeMap] {
  const vtreeId = reader.id('vtree.id');
  const frozen = reader.u8('vtree.frozen');
  if (frozen > 1) throw corrupt('map', `V-Tree ${vtreeId}: frozen is ${frozen}`);
  const tree: VTreeMap = { generations: {}, heads: [] };
  for (let count = reader.count('vtree.generationCount', 2, vtreeGenerationsMax); count > 0; count--) {
    const generation = reader.uint('vtree.generation');
    const parent = reader.uint('vtree.parent');
    tree.generations[String(generation)] = parent === 0 ? null : parent - 1;
  }
  for (let count = reader.count('vtree.headCount', 2, vtreeGenerationsMax); count > 0; count--) {
    const generation = reader.uint('vtree.head.generation');
    const snapshot = reader.u8('vtree.head.snapshot');
    if (snapshot > 1) throw corrupt('map', `V-Tree ${vtreeId}: snapshot is ${snapshot}`);
    tree.heads.push({ generation, snapshot: snapshot === 1 });
  }
  if (frozen === 1) tree.frozen = true;
  return [vtreeId, tree];
}

function writeOptionalId(writer: Writer, id: string | null): void {
  writer.u8(id === null ? 0 : 1);
  if (id !== null) writer.id(id);
}

function readOptionalId(reader: Reader, field: string): string | null {
  const present = reader.u8(field);
  if (present > 1) throw corrupt('map', `${field}: presence byte ${present}`);
  return present === 1 ? reader.id(field) : null;
}

function sameGroup(left: PlacementGroup, right: PlacementGroup): boolean {
  return (
    left.primary === right.primary &&
    left.secondary === right.secondary &&
    left.primaryDevice === right.primaryDevice &&
    left.secondaryDevice === right.secondaryDevice &&
    left.lost === right.lost
  );
}

function sameScrub(left: PoolPlacement, right: PoolPlacement): boolean {
  return left.scrub?.mode === right.scrub?.mode && left.scrub?.rateKBps === right.scrub?.rateKBps;
}

function sameVTree(left: VTreeMap, right: VTreeMap): boolean {
  const leftWriter = new Writer();
  writeVTree(leftWriter, '0000000000000000', left);
  const rightWriter = new Writer();
  writeVTree(rightWriter, '0000000000000000', right);
  return leftWriter.finish().equals(rightWriter.finish());
}

function sortedKeys(record: Record<string, unknown>): string[] {
  return Object.keys(record).sort();
}

/** The decoded map, through the JSON path's validation: the same maps are accepted either way. */
function validated(map: PlacementMap): PlacementMap {
  try {
    return parsePlacementMap(map);
  } catch (err) {
    throw new MapCodecError('MB_ERR_MAP_CORRUPT', `the decoded map is not a valid map: ${(err as Error).message}`, { cause: err });
  }
}

function corrupt(what: 'map' | 'delta', detail: string): MapCodecError {
  return new MapCodecError('MB_ERR_MAP_CORRUPT', `refused the encoded ${what}: ${detail}`);
}

// --- framing --------------------------------------------------------------------------------

function frame(kind: MapKind, body: Buffer): Buffer {
  if (mapHeaderBytes + body.length > mapEncodedBytesMax) {
    throw new MapCodecError('MB_ERR_MAP_CORRUPT', `the encoded map would be ${mapHeaderBytes + body.length} bytes, over ${mapEncodedBytesMax}`);
  }
  const encoded = Buffer.allocUnsafe(mapHeaderBytes + body.length);
  encoded.writeUInt32LE(mapCodecMagic, 0);
  encoded.writeUInt8(mapCodecVersion, 4);
  encoded.writeUInt8(kind, 5);
  encoded.writeUInt16LE(0, 6);
  encoded.writeUInt32LE(body.length, 8);
  body.copy(encoded, mapHeaderBytes);
  encoded.writeUInt32LE(crc32c(body, crc32c(encoded.subarray(0, 12))), 12);
  return encoded;
}

/** The body of a checked frame of this kind. */
function unframe(encoded: Buffer, kind: MapKind): Buffer {
  const what = kind === MapKind.Full ? 'map' : 'delta';
  if (encoded.length < mapHeaderBytes) throw corrupt(what, `${encoded.length} bytes, shorter than the ${mapHeaderBytes}-byte header`);
  if (encoded.length > mapEncodedBytesMax) throw corrupt(what, `${encoded.length} bytes, over ${mapEncodedBytesMax}`);
  if (encoded.readUInt32LE(0) !== mapCodecMagic) throw corrupt(what, 'bad magic');
  const bodyBytes = encoded.readUInt32LE(8);
  if (encoded.length !== mapHeaderBytes + bodyBytes) throw corrupt(what, `${encoded.length} bytes, the header says ${mapHeaderBytes + bodyBytes}`);
  const body = encoded.subarray(mapHeaderBytes);
  if (crc32c(body, crc32c(encoded.subarray(0, 12))) !== encoded.readUInt32LE(12)) throw corrupt(what, 'checksum mismatch');
  // Checked after the checksum, so that a flipped bit reads as corruption, not as another version.
  if (encoded.readUInt8(4) !== mapCodecVersion) throw corrupt(what, `version ${encoded.readUInt8(4)}, this build reads ${mapCodecVersion}`);
  if (encoded.readUInt8(5) !== kind) throw corrupt(what, `kind ${encoded.readUInt8(5)}, expected ${kind}`);
  if (encoded.readUInt16LE(6) !== 0) throw corrupt(what, 'reserved bytes are not zero');
  return body;
}

// --- bytes ----------------------------------------------------------------------------------

class Writer {
  private buffer = Buffer.allocUnsafe(4096);
  private offset = 0;

  private room(bytes: number): void {
    if (this.offset + bytes <= this.buffer.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.offset + bytes));
    this.buffer.copy(grown, 0, 0, this.offset);
    this.buffer = grown;
  }

  u8(value: number): void {
    this.room(1);
    this.buffer[this.offset++] = value;
  }

  u32(value: number): void {
    this.room(4);
    this.offset = this.buffer.writeUInt32LE(value >>> 0, this.offset);
  }

  /** Unsigned LEB128 of a safe integer (arithmetic, not bit operations: values pass 2^32). */
  uint(value: number): void {
    if (!Number.isSafeInteger(value) || value < 0) throw new MapCodecError('MB_ERR_MAP_CORRUPT', `cannot encode ${value} (not a whole number below 2^53)`);
    this.room(8);
    let rest = value;
    while (rest >= 0x80) {
      this.buffer[this.offset++] = (rest % 0x80) | 0x80;
      rest = Math.floor(rest / 0x80);
    }
    this.buffer[this.offset++] = rest;
  }

  id(value: string): void {
    if (!idPattern.test(value)) throw new MapCodecError('MB_ERR_MAP_CORRUPT', `cannot encode id '${value}' (16 hex digits)`);
    this.room(8);
    this.offset += this.buffer.write(value, this.offset, 8, 'hex');
  }

  string(value: string): void {
    const bytes = Buffer.from(value, 'utf8');
    this.uint(bytes.length);
    this.bytes(bytes);
  }

  bytes(value: Buffer): void {
    this.room(value.length);
    this.offset += value.copy(this.buffer, this.offset);
  }

  finish(): Buffer {
    return this.buffer.subarray(0, this.offset);
  }
}

class Reader {
  private offset = 0;

  constructor(
    private readonly body: Buffer,
    private readonly what: 'map' | 'delta',
  ) {}

  private need(bytes: number, field: string): void {
    if (this.offset + bytes > this.body.length) throw corrupt(this.what, `${field} runs past the end (byte ${this.offset} of ${this.body.length})`);
  }

  u8(field: string): number {
    this.need(1, field);
    return this.body[this.offset++] as number;
  }

  u32(field: string): number {
    this.need(4, field);
    const value = this.body.readUInt32LE(this.offset);
    this.offset += 4;
    return value;
  }

  uint(field: string): number {
    let value = 0;
    let scale = 1;
    for (let length = 0; length < 8; length++) {
      const byte = this.u8(field);
      value += (byte & 0x7f) * scale;
      if ((byte & 0x80) === 0) {
        // A last byte of 0 after others would be a second spelling of a shorter number.
        if (byte === 0 && length > 0) throw corrupt(this.what, `${field}: a varint with a zero last byte`);
        if (!Number.isSafeInteger(value)) throw corrupt(this.what, `${field}: ${value} is past 2^53`);
        return value;
      }
      scale *= 0x80;
    }
    throw corrupt(this.what, `${field}: a varint longer than 8 bytes`);
  }

  /** A count of items of at least `itemBytesMin` bytes each, checked against what is left, so a bad count never allocates. */
  count(field: string, itemBytesMin: number, countMax: number): number {
    return this.checkCount(field, this.uint(field), itemBytesMin, countMax);
  }

  checkCount(field: string, count: number, itemBytesMin: number, countMax: number): number {
    if (count > countMax) throw corrupt(this.what, `${field}: ${count}, over ${countMax}`);
    if (count * itemBytesMin > this.body.length - this.offset) throw corrupt(this.what, `${field}: ${count} items cannot fit in the ${this.body.length - this.offset} bytes left`);
    return count;
  }

  id(field: string): string {
    this.need(8, field);
    const value = this.body.toString('hex', this.offset, this.offset + 8);
    this.offset += 8;
    return value;
  }

  string(field: string, bytesMax: number): string {
    const length = this.uint(field);
    if (length > bytesMax) throw corrupt(this.what, `${field}: ${length} bytes, over ${bytesMax}`);
    this.need(length, field);
    const bytes = this.body.subarray(this.offset, this.offset + length);
    this.offset += length;
    const value = bytes.toString('utf8');
    if (!Buffer.from(value, 'utf8').equals(bytes)) throw corrupt(this.what, `${field}: not UTF-8`);
    return value;
  }

  end(): void {
    if (this.offset !== this.body.length) throw corrupt(this.what, `${this.body.length - this.offset} bytes after the end`);
  }
}

// --- what to send a peer ----------------------------------------------------------------------

/**
 * What a peer holds, as it says in its registration and in every answer to a map update: the
 * map's epoch and its digest (mapDigest). Both, because a map can change without its epoch
 * moving (the state machine moves it on every change today, but nothing on the wire may rely
 * on that): a peer whose digest differs from the MDM's map of that epoch gets the whole map.
 */
export interface MapHeld {
  epoch: number;
  digest: number;
}

/** What brings a peer to the current map: nothing, the deltas from its epoch on, or the whole map. */
export type MapUpdate = { kind: 'current' } | { kind: 'deltas'; deltas: Buffer[] } | { kind: 'full'; encoded: Buffer };

/**
 * The sender's side (the MDM's): the current map encoded once, and the one-epoch deltas of
 * the last `deltasKept` epochs, so that a peer holding (E, digest) gets the chain E→…→current,
 * and a peer too far behind (or new, or at a map this side never had) the whole map. Each
 * epoch costs one full encoding and one delta, whatever the number of peers; a chain longer in
 * bytes than the whole map is not sent.
 *
 * A map published at the current epoch with other content (a same-epoch change) cannot be
 * reached by a delta (deltas go forward in epochs): the chain is dropped and every peer not
 * holding it gets the whole map. The state machine moves the epoch on every map change, so
 * this is a safety net, not a path taken.
 */
export class MapUpdates {
  private current: { map: PlacementMap; encoded: Buffer; held: MapHeld } | null = null;
  /** One-epoch deltas, oldest first; deltas[i] goes from bases[i] to the next. */
  private readonly deltas: Buffer[] = [];
  private readonly bases: MapHeld[] = [];

  constructor(private readonly deltasKept: number) {
    if (!Number.isSafeInteger(deltasKept) || deltasKept < 0) throw new MapCodecError('MB_ERR_MAP_CORRUPT', `deltasKept must be a whole number, is ${deltasKept}`);
  }

  /** The map published last, and what a peer holding it says it holds. */
  get map(): PlacementMap | null {
    return this.current?.map ?? null;
  }

  get held(): MapHeld | null {
    return this.current?.held ?? null;
  }

  /**
   * A new map. Returns false (and changes nothing) when it is the map already published (same
   * epoch and digest); a map of an older epoch is refused (maps only go forward).
   */
  publish(map: PlacementMap): boolean {
    const encoded = encodeMap(map);
    const held: MapHeld = { epoch: map.epoch, digest: crc32c(encoded.subarray(mapHeaderBytes)) };
    const current = this.current;
    if (current !== null) {
      if (map.epoch < current.held.epoch) throw new MapCodecError('MB_ERR_MAP_BASE', `maps go forward: epoch ${map.epoch} published after ${current.held.epoch}`);
      if (map.epoch === current.held.epoch) {
        if (held.digest === current.held.digest) return false;
        this.deltas.length = 0;
        this.bases.length = 0;
      } else {
        this.deltas.push(encodeDelta(current.map, map));
        this.bases.push(current.held);
        if (this.deltas.length > this.deltasKept) {
          this.deltas.shift();
          this.bases.shift();
        }
      }
    }
    this.current = { map, encoded, held };
    return true;
  }

  /**
   * What a peer holding `peer` (null: no map) needs. A bare epoch (a peer that never said its
   * digest) is matched by epoch alone: only for callers that know no same-epoch change happened.
   */
  updateFor(peer: MapHeld | number | null): MapUpdate {
    if (this.current === null) throw new MapCodecError('MB_ERR_MAP_BASE', 'no map published yet');
    const epoch = typeof peer === 'number' ? peer : peer?.epoch;
    const matches = (held: MapHeld): boolean => held.epoch === epoch && (typeof peer === 'number' || held.digest === peer?.digest);
    if (peer !== null && matches(this.current.held)) return { kind: 'current' };
    const start = peer === null ? -1 : this.bases.findIndex(matches);
    if (start < 0) return { kind: 'full', encoded: this.current.encoded };
    const chain = this.deltas.slice(start);
    const chainBytes = chain.reduce((sum, delta) => sum + delta.length, 0);
    return chainBytes < this.current.encoded.length ? { kind: 'deltas', deltas: chain } : { kind: 'full', encoded: this.current.encoded };
  }
}

/** The receiver's side: the map an update makes of `held` (null: none). Refused whole, `held` untouched. */
export function applyUpdate(held: PlacementMap | null, update: MapUpdate): PlacementMap {
  if (update.kind === 'full') return decodeMap(update.encoded);
  if (held === null) throw new MapCodecError('MB_ERR_MAP_BASE', 'deltas for a peer that holds no map');
  if (update.kind === 'current') return held;
  let map = held;
  for (const delta of update.deltas) map = applyDelta(map, delta);
  return map;
}

/**
 * applyUpdate, with the digest of the result, which a peer reports back (MapHeld): read from
 * the frames (a full map's body CRC, a delta's result digest, which applyDelta checked), so
 * the peer never encodes its map to learn it. `held.digest` is the digest of `held.map`.
 */
export function applyUpdateHeld(held: { map: PlacementMap; digest: number } | null, update: MapUpdate): { map: PlacementMap; digest: number } {
  const map = applyUpdate(held?.map ?? null, update);
  return { map, digest: updateResult(held === null ? null : { epoch: held.map.epoch, digest: held.digest }, update).digest };
}

/**
 * What an update brings a peer holding `held` to, read from the frames' first fields only
 * (no checksum, no decode): for applyUpdateHeld once the update is applied, and for the fleet
 * simulator, whose peers hold no maps. MB_ERR_MAP_BASE when its deltas do not start at `held`.
 */
export function updateResult(held: MapHeld | null, update: MapUpdate): MapHeld {
  if (update.kind === 'full') {
    const body = update.encoded.subarray(mapHeaderBytes);
    return { epoch: new Reader(body, 'map').uint('epoch'), digest: crc32c(body) };
  }
  if (held === null) throw new MapCodecError('MB_ERR_MAP_BASE', 'an update from a map, for a peer that holds none');
  let at = held;
  for (const delta of update.kind === 'current' ? [] : update.deltas) {
    const reader = new Reader(delta.subarray(mapHeaderBytes), 'delta');
    const baseEpoch = reader.uint('baseEpoch');
    const epoch = reader.uint('epoch');
    const baseDigest = reader.u32('baseDigest');
    if (baseEpoch !== at.epoch || baseDigest !== at.digest) throw new MapCodecError('MB_ERR_MAP_BASE', `a delta from epoch ${baseEpoch} (digest ${baseDigest}), for a peer at epoch ${at.epoch} (digest ${at.digest})`);
    at = { epoch, digest: reader.u32('resultDigest') };
  }
  return at;
}

// --- a MapUpdate on the wire ----------------------------------------------------------------
//
// The payload of SdsOp.SetMapBinary, SdcOp.SetMap and MdmOp.GetMapBinary's reply: the update's
// frames one after another (each says its length in its header):
//
//   (nothing)                          'current': the peer holds the map already
//   one full frame (kind 1)            'full'
//   1..mapUpdateDeltasMax delta frames 'deltas', oldest first
//
// Only the frames' lengths and kinds are read here; each frame's checksum and content are
// checked when it is decoded or applied (applyUpdate), which refuses the whole update.

/** The frames of an update, as one payload. */
export function encodeMapUpdate(update: MapUpdate): Buffer {
  const frames = mapUpdateFrames(update);
  return frames.length === 1 ? (frames[0] as Buffer) : Buffer.concat(frames);
}

/** The frames of an update, for a writer that takes several buffers (WirePeer.request): no copy. */
export function mapUpdateFrames(update: MapUpdate): readonly Buffer[] {
  if (update.kind === 'current') return [];
  if (update.kind === 'full') return [update.encoded];
  return update.deltas;
}

/** An update from its payload; MB_ERR_MAP_CORRUPT if the frames do not tile it or mix kinds. */
export function decodeMapUpdate(payload: Buffer): MapUpdate {
  if (payload.length === 0) return { kind: 'current' };
  const frames: Buffer[] = [];
  const kinds = new Set<number>();
  for (let offset = 0; offset < payload.length; ) {
    if (payload.length - offset < mapHeaderBytes) throw corrupt('delta', `an update's frame at byte ${offset} is shorter than its header`);
    if (payload.readUInt32LE(offset) !== mapCodecMagic) throw corrupt('delta', `an update's frame at byte ${offset} has a bad magic`);
    const frameBytes = mapHeaderBytes + payload.readUInt32LE(offset + 8);
    if (frameBytes > payload.length - offset) throw corrupt('delta', `an update's frame at byte ${offset} runs past the payload's end`);
    if (frames.length >= mapUpdateDeltasMax) throw corrupt('delta', `an update of more than ${mapUpdateDeltasMax} frames`);
    kinds.add(payload.readUInt8(offset + 5));
    frames.push(payload.subarray(offset, offset + frameBytes));
    offset += frameBytes;
  }
  if (kinds.size === 1 && kinds.has(MapKind.Full) && frames.length === 1) return { kind: 'full', encoded: frames[0] as Buffer };
  if (kinds.size === 1 && kinds.has(MapKind.Delta)) return { kind: 'deltas', deltas: frames };
  throw corrupt('delta', `an update of ${frames.length} frames of kinds ${[...kinds].join(', ')}: one full map or deltas only`);
}

/** MapHeld from a peer's JSON (registration, reply); null when absent, MB_ERR_MAP_CORRUPT when malformed. */
export function parseMapHeld(value: unknown, field: string): MapHeld | null {
  if (value === undefined || value === null) return null;
  const entry = value as Partial<MapHeld>;
  if (typeof value !== 'object' || !Number.isSafeInteger(entry.epoch) || (entry.epoch as number) < 0 || !Number.isInteger(entry.digest) || (entry.digest as number) < 0 || (entry.digest as number) > 0xffffffff) {
    throw new MapCodecError('MB_ERR_MAP_CORRUPT', `${field}: must be { epoch, digest } (whole numbers, digest a u32), got ${JSON.stringify(value).slice(0, 120)}`);
  }
  return { epoch: entry.epoch as number, digest: entry.digest as number };
}
