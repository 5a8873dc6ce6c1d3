// The operations an SDS serves, shared by everything that talks to one (SDC, peer SDS, MDM,
// tests, the benchmark). Each is a request frame (header.ts) whose payload starts with the
// arguments below; replies carry a WireStatus and the payload named here.
//
// Chunk IO (Read, Write, Trim, Put) — a 40-byte argument block, then data for Write/Put:
//
//   offset  size  field         purpose and limits
//   ------  ----  ------------  ---------------------------------------------------------------
//        0     8  poolId        the storage pool (16 hex digits); chooses the group table
//        8     8  vtreeId       the volume tree the chunk belongs to (volume and its snapshots)
//       16     4  pgIndex       placement group; must equal placementGroupOf(vtreeId, chunkIndex)
//       20     4  chunkIndex    the chunk's index in its volume (offset / chunkBytes)
//       24     4  generation    the chunk's generation in its V-Tree (docs/snapshots.md): a Read
//                                 names any live generation and reads the nearest on its path
//                                 that holds the chunk; a Write or Trim names a head (else
//                                 StaleEpoch; Frozen while the tree is frozen); Replica and Put
//                                 name the exact key the primary applied
//       28     4  offsetBytes   byte offset inside the chunk, a multiple of 512
//       32     4  lengthBytes   bytes to read/write/trim, a multiple of 512, within the chunk
//       36     4  flags         IoFlag bits; unknown bits are refused
//
//   op               request payload            reply payload (status Ok)
//   ---------------  -------------------------  -------------------------------------------
//   Read        16   args                       lengthBytes of data
//   Write       17   args | data                empty
//   Trim        18   args                       empty (whole chunks are freed, parts zeroed;
//                                               a head's whole chunk that an ancestor holds is
//                                               kept, zeroed, to hide the ancestor's)
//   Flush       19   empty                      empty (every device written since the last
//                                               flush, and every mirror written to, is synced)
//   Allocation  20   AllocationArgs (28 bytes)  one byte per chunk: 1 = held here for that
//                                               generation or one of its ancestors (a chunk a
//                                               trim zeroed to hide an ancestor counts);
//                                               StaleEpoch if the generation is not live
//   SetMap      21   PlacementMap JSON          empty; a map older than the current is refused
//                                               (the MDM's path to SDSs that did not register
//                                               with mapBinary: older builds)
//   Stats       22   empty                      SdsStats JSON
//   Reserve     23   ReserveArgs (16 bytes)     empty; thick reservation of chunk slots
//   Rebuild     24   RebuildArgs JSON           empty once the copy is complete
//   Put         25   args | whole chunk         empty; a rebuilt chunk replaces what was there
//   ListGroup   26   ListGroupArgs (12 bytes)   16 bytes per chunk held: vtreeId (8),
//                                               chunkIndex (4), generation (4)
//   AddDevice   27   AddDeviceOrder JSON        RegisteredDevice JSON (mdm-ops.ts); a device
//                                               that holds anything: DeviceRefused
//   ReadCopy    28   args (exact key)           lengthBytes of this SDS's own copy, verified
//                                               against its checksums; Corrupt if it is bad
//                                               (a primary repairing its copy asks its mirror)
//   Digest      29   args (exact key, whole     4 bytes per 4 KiB block: the stored CRC-32C of
//                    chunk)                     each block, verified; Corrupt if any is bad
//                                               (the scrub's comparison of the two copies)
//   SetMapBinary 30  MapUpdate frames           MapHeld JSON (map-codec.ts): what the SDS now
//                    (map-codec.ts: nothing,    holds. As SetMap, answered once writes to the
//                    one full map, or deltas)   trees it freezes are done (also for an empty
//                                               update: the barrier's confirmation). Refused
//                                               whole: Failed with MapRefusal JSON (mdm-ops.ts;
//                                               MB_ERR_MAP_BASE: not its base, send the whole
//                                               map; MB_ERR_MAP_CORRUPT), StaleEpoch for an older map
//
// Errors: StaleEpoch replies carry the SDS's epoch as 8 bytes; other failures a UTF-8 message.

import { assert } from '../common/assert.js';
import { InvalidArgumentError } from '../common/errors.js';
import { HexIdCodec, wirePayloadBytesMax, WireStatus } from './header.js';
import { allocationChunkCountMax } from '../common/limits.js';

export const SdsOp = {
  Read: 16,
  Write: 17,
  Trim: 18,
  Flush: 19,
  Allocation: 20,
  SetMap: 21,
  Stats: 22,
  Reserve: 23,
  Rebuild: 24,
  Put: 25,
  ListGroup: 26,
  AddDevice: 27,
  ReadCopy: 28,
  Digest: 29,
  /** MDM → SDS: a binary MapUpdate (map-codec.ts) for an SDS that registered with mapBinary. */
  SetMapBinary: 30,
} as const;

export const IoFlag = {
  /** Durable before the reply (NBD FUA): the write is synced on both copies. */
  Fua: 1 << 0,
  /**
   * Sent by a primary to its secondary: apply here, do not forward, to the exact key named
   * (the primary already decided any copy on write and sends its result whole). Taken at the
   * SDS's epoch, or the one before when the group has the same copies in both maps.
   */
  Replica: 1 << 1,
} as const;
const ioFlagsKnown = IoFlag.Fua | IoFlag.Replica;

/** Statuses an SDS adds to the wire's own (header.ts). */
export const SdsStatus = {
  ...WireStatus,
  /** The device failed (EIO) or the data there cannot be trusted; nothing was returned. */
  IoError: 5,
  /** No free chunk slot (or the rest is reserved for thick volumes). */
  NoSpace: 6,
  /** Arguments out of range: a bug in the sender, never retried. */
  InvalidArgument: 7,
  /** The primary applied the write but its mirror could not; the MDM decides what next. */
  MirrorFailed: 8,
  /** The SDS will not take a device; the payload is DeviceRefusal JSON (mdm-ops.ts). */
  DeviceRefused: 9,
  /**
   * The V-Tree is frozen for a snapshot barrier (its map entry says `frozen`): the write was
   * not applied; the sender retries shortly (sdcFrozenRetryMs) until the freeze is lifted.
   */
  Frozen: 10,
  /**
   * The bytes asked for failed their checksums on every copy the SDS could reach (or, for
   * ReadCopy and Digest, on its own copy): nothing was returned. The SDC answers EIO and
   * does not retry; the range is reported (SdsStats.unrepairable).
   */
  Corrupt: 11,
} as const;

export const ioArgsBytes = 40;
export const sectorBytes = 512;

/**
 * Where each IO argument sits in the argument block (the table at the top). The one
 * place these offsets are written down: encodeIo, decodeIo, setIoFlags and the benchmark's
 * in-place rewrites all use it.
 */
export const ioArgOffsets = {
  poolId: 0,
  vtreeId: 8,
  pgIndex: 16,
  chunkIndex: 20,
  generation: 24,
  offsetBytes: 28,
  lengthBytes: 32,
  flags: 36,
} as const;
assert(ioArgOffsets.flags + 4 === ioArgsBytes, 'the flags word is the argument block’s last field');

export interface IoArgs {
  poolId: string;
  vtreeId: string;
  pgIndex: number;
  chunkIndex: number;
  generation: number;
  offsetBytes: number;
  lengthBytes: number;
  flags: number;
}

/** Args followed by `data` in one buffer, ready to be a request payload. */
// Every IO carries its pool and V-Tree ids; these remember the last of each (header.ts).
const poolIdsWritten = new HexIdCodec('pool id');
const vtreeIdsWritten = new HexIdCodec('vtree id');
const poolIdsRead = new HexIdCodec('pool id');
const vtreeIdsRead = new HexIdCodec('vtree id');

export function encodeIo(args: IoArgs, data?: Buffer): Buffer {
  const payload = Buffer.allocUnsafe(ioArgsBytes + (data?.length ?? 0));
  poolIdsWritten.write(payload, ioArgOffsets.poolId, args.poolId);
  vtreeIdsWritten.write(payload, ioArgOffsets.vtreeId, args.vtreeId);
  payload.writeUInt32BE(args.pgIndex, ioArgOffsets.pgIndex);
  payload.writeUInt32BE(args.chunkIndex, ioArgOffsets.chunkIndex);
  payload.writeUInt32BE(args.generation, ioArgOffsets.generation);
  payload.writeUInt32BE(args.offsetBytes, ioArgOffsets.offsetBytes);
  payload.writeUInt32BE(args.lengthBytes, ioArgOffsets.lengthBytes);
  payload.writeUInt32BE(args.flags, ioArgOffsets.flags);
  data?.copy(payload, ioArgsBytes);
  return payload;
}

/** Rewrites the flags word of an encoded IO request in place (a primary marking its mirror write Replica). */
export function setIoFlags(payload: Buffer, flags: number): void {
  assert(payload.length >= ioArgsBytes, 'not an encoded IO request');
  assert((flags & ~ioFlagsKnown) === 0, `unknown IO flags 0x${flags.toString(16)}`);
  payload.writeUInt32BE(flags, ioArgOffsets.flags);
}

/**
 * The reply payload bytes a request will take to serve: a READ's lengthBytes (capped at the
 * largest frame), nothing for any other op. The wire peer counts it against its in-flight
 * bound from the moment it reads the request, so that a flood of 40-byte READs cannot
 * make it prepare gigabytes of replies (peer.ts, "Bounds").
 */
export function ioReplyBytesOf(op: number, payload: Buffer): number {
  if (op !== SdsOp.Read || payload.length < ioArgsBytes) return 0;
  return Math.min(payload.readUInt32BE(ioArgOffsets.lengthBytes), wirePayloadBytesMax);
}

/** Decodes and checks the shape of IO args (ranges against the chunk are the SDS's job). */
export function decodeIo(payload: Buffer): { args: IoArgs; data: Buffer } {
  if (payload.length < ioArgsBytes) throw new InvalidArgumentError('io', `arguments are ${payload.length} bytes, expected ${ioArgsBytes}`);
  const args: IoArgs = {
    poolId: poolIdsRead.read(payload, ioArgOffsets.poolId),
    vtreeId: vtreeIdsRead.read(payload, ioArgOffsets.vtreeId),
    pgIndex: payload.readUInt32BE(ioArgOffsets.pgIndex),
    chunkIndex: payload.readUInt32BE(ioArgOffsets.chunkIndex),
    generation: payload.readUInt32BE(ioArgOffsets.generation),
    offsetBytes: payload.readUInt32BE(ioArgOffsets.offsetBytes),
    lengthBytes: payload.readUInt32BE(ioArgOffsets.lengthBytes),
    flags: payload.readUInt32BE(ioArgOffsets.flags),
  };
  if ((args.flags & ~ioFlagsKnown) !== 0) throw new InvalidArgumentError('io.flags', `unknown flags 0x${args.flags.toString(16)}`);
  if (args.offsetBytes % sectorBytes !== 0 || args.lengthBytes % sectorBytes !== 0) {
    throw new InvalidArgumentError('io', `offset ${args.offsetBytes} and length ${args.lengthBytes} must be multiples of ${sectorBytes}`);
  }
  return { args, data: payload.subarray(ioArgsBytes) };
}

export interface AllocationArgs {
  poolId: string;
  vtreeId: string;
  /** The volume's generation (its head): a chunk counts as held if it or an ancestor holds it. */
  generation: number;
  chunkIndexFirst: number;
  chunkCount: number;
}

const allocationArgsBytes = 28;

export function encodeAllocation(args: AllocationArgs): Buffer {
  const payload = Buffer.alloc(allocationArgsBytes);
  payload.write(args.poolId, 0, 8, 'hex');
  payload.write(args.vtreeId, 8, 8, 'hex');
  payload.writeUInt32BE(args.generation, 16);
  payload.writeUInt32BE(args.chunkIndexFirst, 20);
  payload.writeUInt32BE(args.chunkCount, 24);
  return payload;
}

export function decodeAllocation(payload: Buffer): AllocationArgs {
  if (payload.length !== allocationArgsBytes) throw new InvalidArgumentError('allocation', `arguments are ${payload.length} bytes, expected ${allocationArgsBytes}`);
  const chunkCount = payload.readUInt32BE(24);
  if (chunkCount > allocationChunkCountMax) throw new InvalidArgumentError('allocation.chunkCount', `at most ${allocationChunkCountMax}`);
  return { poolId: payload.toString('hex', 0, 8), vtreeId: payload.toString('hex', 8, 16), generation: payload.readUInt32BE(16), chunkIndexFirst: payload.readUInt32BE(20), chunkCount };
}

export interface ReserveArgs {
  vtreeId: string;
  /** Chunk slots held for this volume tree's first writes; 0 releases the reservation. */
  chunkCount: number;
}

export function encodeReserve(args: ReserveArgs): Buffer {
  const payload = Buffer.alloc(16);
  payload.write(args.vtreeId, 0, 8, 'hex');
  payload.writeBigUInt64BE(BigInt(args.chunkCount), 8);
  return payload;
}

export function decodeReserve(payload: Buffer): ReserveArgs {
  if (payload.length !== 16) throw new InvalidArgumentError('reserve', `arguments are ${payload.length} bytes, expected 16`);
  const chunkCount = payload.readBigUInt64BE(8);
  if (chunkCount > BigInt(Number.MAX_SAFE_INTEGER)) throw new InvalidArgumentError('reserve.chunkCount', 'beyond 2^53');
  return { vtreeId: payload.toString('hex', 0, 8), chunkCount: Number(chunkCount) };
}

/** Copy every chunk of one placement group from this SDS (its primary) to `targetSdsId`. */
export interface RebuildArgs {
  poolId: string;
  pgIndex: number;
  targetSdsId: string;
  /**
   * Throttle, ScaleIO-style: bytes per second this SDS may spend on all its rebuilds
   * together (0 = unlimited), and chunk copies it has in flight for all of them.
   */
  bytesPerSecondMax: number;
  chunksInflightMax: number;
  /** The bytes/s budget while clients are doing IO on the SDS ("favor application IO"; 0 or absent: no difference). */
  bytesPerSecondUnderLoad?: number;
  /**
   * 'delta': the target held this group before and was away; copy only what this SDS
   * changed since (if it kept that record; otherwise everything). Absent means 'full'.
   */
  mode?: 'full' | 'delta';
  /** The map epoch the order was given at (absent: the SDS's epoch when it arrives). */
  epoch?: number;
  /**
   * The pool policy the throttle numbers above come from (docs/rebuild-policy.md), already
   * multiplied by the source SDS's devices in the pool: with it, the budget is this pool's
   * for this kind of fill (jobs of other pools and kinds have their own); absent (a pool
   * never set, an MDM from before policies), one budget for every job of the SDS.
   *
   * Sent again for a running job (same pool, group, target and epoch) when the pool's
   * policy changes: the job takes the new numbers at once and goes on.
   */
  policy?: 'unlimited' | 'limitNumOfConcurrentIos' | 'favorAppIos' | 'limitBandwidth';
  /** Which of the pool's policies: a group short of a copy ('rebuild') or a healthy copy moving ('rebalance'). */
  kind?: 'rebuild' | 'rebalance';
}

export interface DeviceStats {
  deviceId: string;
  path: string;
  state: 'normal' | 'failed';
  error: string | null;
  totalBytes: number;
  usedBytes: number;
  /**
   * Of usedBytes, what only snapshots reach: chunks no volume's head resolves to but some
   * snapshot's does (docs/snapshots.md). Recounted every few seconds, so a little behind.
   * Optional only because an SDS from before snapshots does not send it (read it as 0).
   */
  snapshotBytes?: number;
  freeBytes: number;
  reads: number;
  writes: number;
  readBytes: number;
  writeBytes: number;
  readIops: number;
  writeIops: number;
  readBytesPerSecond: number;
  writeBytesPerSecond: number;
  /** Blocks of this device found failing their checksums since the SDS started (optional: older SDSs). */
  checksumErrors?: number;
  /** Bytes of this device the scrub has read since the SDS started. */
  scrubbedBytes?: number;
  /**
   * How the SDS does this device's IO: 'direct' (O_DIRECT, asynchronous, no page cache) or
   * 'buffered' (through the page cache), with why when it is not what was asked
   * (docs/direct-io.md). Optional: older SDSs do not send it.
   */
  io?: DeviceIoMode;
  ioReason?: string;
}

/** How an SDS does a device's IO (docs/direct-io.md). */
export type DeviceIoMode = 'direct' | 'buffered';

/** Checksums at rest and their repairs on one SDS, since it started (docs/integrity.md). */
export interface IntegrityCounters {
  /** Blocks found failing their checksum (read path and scrub), on this SDS's copies. */
  checksumErrors: number;
  /** Bad blocks rewritten from the other copy. */
  repairedBlocks: number;
  /** Blocks bad on both copies: reads of them fail with EIO until they are rewritten. */
  unrepairableBlocks: number;
  /** Blocks of slots open at a power cut that failed their checksum at open: torn writes never acknowledged, taken as they are. */
  tornBlocksAccepted: number;
  /** Slot-table entries found damaged at open (the chunk is fetched again from its mirror). */
  damagedEntries: number;
  /** Scrub comparison: both copies verified but differed; the secondary was rewritten from the primary. */
  mismatchedBlocks: number;
}

export type ScrubMode = 'off' | 'deviceOnly' | 'dataComparison';

/** The background scrub of one SDS (ScaleIO's background device scanner). */
export interface ScrubProgress {
  /** 'off' when the pool policy disables it; 'paused' while client IO or a rebuild runs. */
  state: 'off' | 'running' | 'paused' | 'idle';
  mode: ScrubMode;
  rateKBps: number;
  passesCompleted: number;
  passStartedAtMs: number | null;
  lastPassCompletedAtMs: number | null;
  /** Chunk copies scanned in the current pass, of chunksTotal. */
  chunksScanned: number;
  chunksTotal: number;
  /** Bytes read by the scrub since the SDS started. */
  bytesScanned: number;
}

/** A range bad on both copies: reads of it fail with EIO. Chunk coordinates. */
export interface UnrepairableRange {
  poolId: string;
  vtreeId: string;
  generation: number;
  chunkIndex: number;
  offsetBytes: number;
  lengthBytes: number;
  detectedAtMs: number;
}

export interface RebuildProgress {
  /** Unique among the jobs of this SDS process (another life of the SDS starts another series). */
  jobId: string;
  poolId: string;
  pgIndex: number;
  targetSdsId: string;
  state: 'waiting' | 'running' | 'done' | 'failed';
  mode: 'full' | 'delta';
  epoch: number;
  chunksDone: number;
  chunksTotal: number;
  bytesDone: number;
  error: string | null;
}

export interface SdsStats {
  sdsId: string;
  name: string;
  epoch: number;
  chunkBytes: number;
  devices: DeviceStats[];
  reservedBytes: number;
  rebuilds: RebuildProgress[];
  /** Optional: an SDS from before checksums at rest does not send them (read as zeros). */
  integrity?: IntegrityCounters;
  scrub?: ScrubProgress;
  /** The newest ranges bad on both copies (at most unrepairableRangesMax, newest last). */
  unrepairable?: UnrepairableRange[];
  /** Optional: an SDS from before the memory budget does not send it. */
  memory?: SdsMemory;
}

/**
 * The bytes of client IO an SDS holds (request payloads and the replies being prepared),
 * against its memory budget (sds start --memory-budget; wire/serving-budget.ts).
 */
export interface SdsMemory {
  budgetBytes: number;
  usedBytes: number;
  /** The most held at once since the SDS started. */
  peakBytes: number;
}

export interface ListGroupArgs {
  poolId: string;
  pgIndex: number;
}

export function encodeListGroup(args: ListGroupArgs): Buffer {
  const payload = Buffer.alloc(12);
  payload.write(args.poolId, 0, 8, 'hex');
  payload.writeUInt32BE(args.pgIndex, 8);
  return payload;
}

export function decodeListGroup(payload: Buffer): ListGroupArgs {
  if (payload.length !== 12) throw new InvalidArgumentError('listGroup', `arguments are ${payload.length} bytes, expected 12`);
  return { poolId: payload.toString('hex', 0, 8), pgIndex: payload.readUInt32BE(8) };
}

export interface ListedChunk {
  vtreeId: string;
  chunkIndex: number;
  generation: number;
}

export const listedChunkBytes = 16;

export function encodeListedChunks(chunks: readonly ListedChunk[]): Buffer {
  const payload = Buffer.alloc(chunks.length * listedChunkBytes);
  chunks.forEach((chunk, index) => {
    const at = index * listedChunkBytes;
    payload.write(chunk.vtreeId, at, 8, 'hex');
    payload.writeUInt32BE(chunk.chunkIndex, at + 8);
    payload.writeUInt32BE(chunk.generation, at + 12);
  });
  return payload;
}

export function decodeListedChunks(payload: Buffer): ListedChunk[] {
  if (payload.length % listedChunkBytes !== 0) throw new InvalidArgumentError('listGroup', 'reply is not a whole number of entries');
  const chunks: ListedChunk[] = [];
  for (let at = 0; at < payload.length; at += listedChunkBytes) {
    chunks.push({ vtreeId: payload.toString('hex', at, at + 8), chunkIndex: payload.readUInt32BE(at + 8), generation: payload.readUInt32BE(at + 12) });
  }
  return chunks;
}

/** A StaleEpoch reply's payload: the epoch of the SDS that refused. */
export function encodeEpoch(epoch: number): Buffer {
  const payload = Buffer.alloc(8);
  payload.writeBigUInt64BE(BigInt(epoch));
  return payload;
}

export function decodeEpoch(payload: Buffer): number {
  return payload.length === 8 ? Number(payload.readBigUInt64BE(0)) : 0;
}
