// The chunk store: an SDS's devices cut into fixed chunk slots, and the index from chunk
// keys to slots. Space is taken on first write (thin); a chunk that was never written, or
// was trimmed whole, reads as zeros without touching a device. Every 4 KiB block of every
// chunk carries a CRC-32C on the device, checked on every read.
//
// On-device layout (device.ts writes the superblock and sizes the tables):
//
//   0            4 KiB         (4 KiB-aligned)       dataOffsetBytes (MiB-aligned)
//   +------------+-------------+---------------------+---------+-----+---------------+
//   | superblock | slot table  | checksum table      | slot 0  | ... | slot N-1      |
//   +------------+-------------+---------------------+---------+-----+---------------+
//                 N x 64 B      N x (32 + 4 per block) chunkBytes each
//
// A slot-table entry describes its slot (64 bytes, big-endian):
//
//   offset  size  field        notes
//   ------  ----  -----------  -------------------------------------------------------------
//        0     4  crc32c       CRC-32C of bytes 4..63
//        4     1  state        1 = holds a chunk; an all-zero entry is a free slot
//        5     1  flags        bit 0 "open": the slot may hold writes not yet made durable
//        6     2  reserved     0
//        8     8  sequence     store-wide, increasing: if two slots claim one key after a
//                              crash, the higher sequence wins and the other is freed
//       16     8  poolId       the key: pool, volume tree, chunk index and generation
//       24     8  vtreeId
//       32     4  chunkIndex
//       36     4  generation
//       40    24  reserved     0
//
// A slot's checksum area: a 32-byte header (CRC-32C of bytes 4..31, 4 reserved bytes, then
// the key's 24 bytes as in the entry: a second copy of the key, far from the entry, so that
// a damaged entry still names the chunk it lost), then one CRC-32C per 4 KiB block of the
// slot, little-endian (as the SDS holds them in memory: a change is one store, and the area
// is written from that memory). A block's CRC is seeded with the key's own CRC, so a block written for
// one key never verifies as another's (a misdirected write, a slot read under the wrong
// entry). A stored 0 over an all-zero block means "never written" and verifies.
//
// The storage model is a disk that loses power: what an fdatasync made durable stays; of
// everything written since, any subset lands, each 512-byte sector whole or not at all.
// Every change of the index is one entry write, inside one sector. The orders below make
// every cut safe:
//   allocate: write the slot's whole first content (zeros, with the first write's bytes in
//             it) and its checksum area, fdatasync, and only then write the entry (open).
//             Before the entry lands the slot is free and nothing reads it; after, what it
//             points to is durable. Free slots hold whatever they held (nothing zeroes them
//             durably), which is why the entry must never land first: the slot would read
//             its previous bytes, another volume's perhaps. A copy on write (a key hiding
//             an ancestor's chunk, docs/snapshots.md) is the same order with the ancestor's
//             bytes as the first content: a head never reads zeros where it read its
//             ancestor's acknowledged data.
//             A plain first write (no ancestor to hide) skips that fdatasync when it gets a
//             slot from the device's zeroed pool: free slots zeroed in the background, a
//             batch at a time, each batch made durable by one fdatasync before its slots are
//             handed out. Its content, checksums and entry then go out in no order: after a
//             cut that kept the entry, each sector holds zeros or the write's bytes (the old
//             or the new content), and the slot is open, so its blocks are verified at open.
//   rewrite:  a write into a slot whose entry is closed first writes the entry open and
//             waits for an fdatasync; then the data goes out, and the slot's checksum area
//             (changed in memory) with the next fdatasync, or sooner (markAreaDirty): a
//             flush, FUA or any other sync writes the dirty areas first, so what it makes
//             durable has its checksums; what it does not is in an open slot. A slot is
//             closed again (entry rewritten, no sync needed) once a flush has made its
//             writes durable, its area is written, and it has been idle slotCloseIdleMs (or
//             the device has more than openSlotsPerDeviceMax open), and on a clean close.
//   free:     drop the key from memory, zero the entry and the checksum header; after the
//             next fdatasync discard the slot and give it back to the free list. Until the
//             zeroed entry is durable the slot may still be the old key's after a cut, so
//             neither new content nor a discard (zeros under the old key's checksums) may
//             touch it.
// A flush (or FUA) fdatasyncs the devices written since the last one, entries, checksums
// and data alike, so everything acknowledged after it survives a crash of the process or
// a power cut of the host.
//
// Rot and torn writes. A block that fails its checksum is rot, with one exception: after a
// cut, a block of a slot whose entry is open may hold a write that was never made durable,
// torn at a sector boundary, or its new data with the old checksum or the reverse. Opening
// the store verifies every block of every open slot (a clean close leaves none) and takes
// such a block as it is: each of its sectors holds the old or the new bytes of a write not
// acknowledged as durable, which is what a power cut may leave. Its checksum is recomputed
// and counted (tornBlocksAccepted); it is never a "corruption", so a cut of both copies'
// hosts cannot leave a block refused on both. Everywhere else, and in open slots once the
// store runs, a failing block is rot: the read rejects with a ChecksumError naming the
// range, and nothing of the block is returned (the service reads the other copy and
// repairs this one, service.ts). Rot inside a slot that was open at a cut is taken for a
// torn write: the one case not told apart, and the scrub's comparison of the two copies
// still finds it there.
//
// A damaged entry (bad CRC) is reported and its slot never reused; the key named by the
// slot's checksum header is marked lost here, and reads of it fail with a ChecksumError,
// so the service fetches it whole from the mirror. With the header damaged as well the key
// is unknown: logged, and left to the scrub's comparison and to rebuild.
//
// Snapshots (docs/snapshots.md): a key has a generation, and a volume tree's generations
// form a tree the placement map carries. The store itself only knows exact keys; the
// *Resolved / shadowing calls below take a generation path (head first, then its parents,
// from generationPath()) so that a volume reads chunk i from the nearest generation that
// holds it, and a head that first writes a chunk an ancestor holds gets a copy of it (copy
// on write, decided by the service, which also mirrors the copy).
// Chunks are shared between a volume and its snapshots by this lookup rule, so an entry
// never needs a reference count; a key no head resolves to is garbage (the SDS frees it,
// generation-gc.ts). A key being read through another generation is pinned meanwhile, so
// that freeing it waits for the read (the read holds the range lock of its own key only).

import * as os from 'node:os';
import type { Logger } from 'pino';
import { assert } from '../common/assert.js';
import { crc32c, crc32cBlocks } from '../common/crc32c.js';
import { MeshblockError } from '../common/errors.js';
import { IoStats, ioStartMs, type IoCounter } from '../common/metrics.js';
import { ShortReadError } from '../common/positional-io.js';
import type { IntegrityCounters, UnrepairableRange } from '../wire/sds-ops.js';
import { nativeDeviceIo, type DeviceIo, type DeviceIoFactory } from './device-io.js';
import { checksumBlockBytes, checksumHeaderBytes, closeDevice, metadataStrides, openDevice, slotEntryBytes, type DeviceIoRequest, type DeviceOwner, type OpenedDevice } from './device.js';
import { checksumCacheSlotsMax, dirtyAreasPerDeviceMax, openSlotsPerDeviceMax, rateWindowMs, slotCloseCheckMs, slotCloseIdleMs, unrepairableRangesMax, zeroedSlotsReadyMax } from '../common/limits.js';

export { checksumBlockBytes } from './device.js';

export interface ChunkKey {
  poolId: string;
  vtreeId: string;
  chunkIndex: number;
  generation: number;
}

export class StoreError extends MeshblockError {}

/**
 * Stored bytes of a chunk failed their checksums (or this copy of the chunk is lost to a
 * damaged entry): nothing of the range was returned. The range is in chunk coordinates,
 * whole 4 KiB blocks, from the first bad block to the last.
 */
export class ChecksumError extends StoreError {
  constructor(
    readonly key: ChunkKey,
    readonly offsetBytes: number,
    readonly lengthBytes: number,
    detail: string,
  ) {
    super('MB_ERR_CHECKSUM', `chunk ${keyName(key)} bytes ${offsetBytes}+${lengthBytes}: ${detail}`);
  }
}

/** errno names that mean the device itself cannot be trusted any more. */
const deviceFailureCodes = new Set(['EIO', 'ENOSPC', 'EROFS', 'ENXIO', 'ENODEV', 'EDQUOT', 'EBADF']);
const slotTableReadBytes = 1024 * 1024;
/** Open slots are verified at open this many bytes at a time. */
const recoverReadBytes = 1024 * 1024;
const entryFlagOpen = 1;
const zeroBlock = Buffer.alloc(checksumBlockBytes);
// Block CRCs are kept on the device as they are in memory (newChecksumArea).
assert(os.endianness() === 'LE', 'meshblock stores block checksums little-endian and runs on little-endian hosts');

/** The generations of one chunk index of a volume tree held here. */
export interface HeldChunk {
  poolId: string;
  vtreeId: string;
  chunkIndex: number;
  generations: Set<number>;
}

/**
 * A new slot's first content, written with its checksums and made durable before its entry
 * (header): zeros, or zeros with `content` at `offsetBytes` (a first write, a copy on write).
 */
type SlotFill = 'zeros' | { content: Buffer; offsetBytes: number };

/** A new slot's first content hides an ancestor's chunk (copy on write): never without the sync before the entry. */
type FillOrder = { hidesAncestor: boolean };

/** Why a key is held but never read here. */
type LostReason = 'device' | 'entry';

interface Location {
  device: StoreDevice;
  slot: number;
  sequence: number;
  key: ChunkKey;
  /** The key's CRC: every block's checksum is seeded with it. */
  seed: number;
  /** The entry's open flag as last set (the entry write may still be on its way). */
  open: boolean;
  /** An open under way: entry written open, then an fdatasync. Writes wait for it. */
  opening: Promise<void> | null;
  /** Entry writes of this slot, one after another, so the last on disk is the latest state. */
  entryChain: Promise<void>;
  /**
   * The slot's checksum area as on the device, when loaded (checksumCache holds the loaded
   * ones, least recent first), and its block CRCs as an array over the same bytes.
   */
  area: Buffer | null;
  checksums: Uint32Array | null;
  loading: Promise<Buffer> | null;
  /** A checksum-area write in flight, and the one queued behind it for later changes. */
  checksumWrite: Promise<void> | null;
  checksumWriteQueued: Promise<void> | null;
  /** Changes of the slot in progress: it is neither closed nor evicted meanwhile. */
  busy: number;
  /** Blocks found bad and counted, until rewritten: a block found again is not counted again. */
  knownBad: Set<number> | null;
  /** device.writeSeq after its last change completed; closable once device.syncedSeq reaches it. */
  lastWriteSeq: number;
  lastWriteMs: number;
}

export interface DeviceCounters {
  reads: number;
  writes: number;
  readBytes: number;
  writeBytes: number;
}

function zeroCounters(): DeviceCounters {
  return { reads: 0, writes: 0, readBytes: 0, writeBytes: 0 };
}

/** The calls the store makes on a device, each timed for the metrics (sds/metrics.ts: meshblock_sds_device_io_*). */
export const deviceCallOps = ['read', 'write', 'zero', 'discard', 'fdatasync'] as const;
export type DeviceCallOp = (typeof deviceCallOps)[number];

export function zeroIntegrity(): IntegrityCounters {
  return { checksumErrors: 0, repairedBlocks: 0, unrepairableBlocks: 0, tornBlocksAccepted: 0, damagedEntries: 0, mismatchedBlocks: 0 };
}

export class StoreDevice {
  state: 'normal' | 'failed' = 'normal';
  error: string | null = null;
  /** Written since the last fdatasync began. */
  dirty = false;
  /** The fdatasync in flight: a flush that finds the device clean still waits for it. */
  syncing: Promise<void> | null = null;
  /** The fdatasync that starts once the one in flight ends, shared by all who need one to begin after their writes. */
  syncQueued: Promise<void> | null = null;
  /** Counts completed changes; syncedSeq is its value when the last completed fdatasync began. */
  writeSeq = 0;
  syncedSeq = 0;
  readonly freeSlots: number[] = [];
  /** Freed slots whose zeroed entry is not durable yet: discarded, then reusable, after the next fdatasync. */
  readonly pendingFree: Array<{ slot: number; seq: number }> = [];
  /** Freed slots being discarded (their entry zeroed durably): free once the discard is done. */
  discarding = 0;
  /** Free slots whose bytes are zeros, durably (zeroed, then an fdatasync): a plain first write's, with no sync of its own. */
  readonly zeroedSlots: number[] = [];
  /** Free slots being zeroed for zeroedSlots, and the promise of that batch. */
  zeroing = 0;
  zeroed: Promise<void> = Promise.resolve();
  /** Zeroing ahead failed here once: not tried again until the SDS restarts. */
  zeroingStopped = false;
  /** Settles when the discards in flight are done. */
  discarded: Promise<void> = Promise.resolve();
  /** Slots whose entry is open. */
  readonly openSlots = new Set<Location>();
  /** Slots whose checksum area changed since it was last written: written before the next fdatasync, or sooner (dirtyAreasPerDeviceMax, slotCloseCheckMs). */
  readonly dirtyAreas = new Set<Location>();
  usedSlotCount = 0;
  damagedSlotCount = 0;
  checksumErrors = 0;
  scrubbedBytes = 0;
  readonly counters = zeroCounters();
  /**
   * Every call on the device (data, slot entries, checksum areas, syncs; client IO, mirror
   * copies, rebuild and scrub alike) with its latency, as the kernel answered it: what
   * iostat's await would show of this device from the SDS. Counted in deviceCall.
   */
  readonly calls = new IoStats<DeviceCallOp>(deviceCallOps);
  /** The counters of `calls`, taken out once (no lookup per call). */
  readonly callCounters: Readonly<Record<DeviceCallOp, IoCounter>> = {
    read: this.calls.op('read'),
    write: this.calls.op('write'),
    zero: this.calls.op('zero'),
    discard: this.calls.op('discard'),
    fdatasync: this.calls.op('fdatasync'),
  };
  /** Rates over the last completed window. */
  rates = zeroCounters();
  private windowStart = zeroCounters();

  readonly io: DeviceIo;
  /** One slot's entry and checksum area on the device: whole sectors on a device formatted for direct IO (device.ts). */
  readonly entryStrideBytes: number;
  readonly areaStrideBytes: number;

  constructor(
    readonly opened: OpenedDevice,
    log: Logger,
    ioFactory: DeviceIoFactory,
  ) {
    this.io = ioFactory(opened, log);
    ({ entryStrideBytes: this.entryStrideBytes, areaStrideBytes: this.areaStrideBytes } = metadataStrides(opened.superblock.sectorBytes, opened.superblock.chunkBytes));
  }

  get deviceId(): string {
    return this.opened.superblock.deviceId;
  }

  get path(): string {
    return this.opened.path;
  }

  get slotCount(): number {
    return this.opened.superblock.slotCount;
  }

  /** Free slots, counting those waiting for an fdatasync or a discard to be reused. */
  get freeSlotCount(): number {
    return this.freeSlots.length + this.pendingFree.length + this.discarding + this.zeroedSlots.length + this.zeroing;
  }

  slotOffsetBytes(slot: number): number {
    return this.opened.superblock.dataOffsetBytes + slot * this.opened.superblock.chunkBytes;
  }

  entryOffsetBytes(slot: number): number {
    return this.opened.superblock.slotTableOffsetBytes + slot * this.entryStrideBytes;
  }

  checksumAreaOffsetBytes(slot: number): number {
    return this.opened.superblock.checksumTableOffsetBytes + slot * this.areaStrideBytes;
  }

  sampleRates(windowMs: number): void {
    const scale = 1000 / windowMs;
    this.rates = {
      reads: (this.counters.reads - this.windowStart.reads) * scale,
      writes: (this.counters.writes - this.windowStart.writes) * scale,
      readBytes: (this.counters.readBytes - this.windowStart.readBytes) * scale,
      writeBytes: (this.counters.writeBytes - this.windowStart.writeBytes) * scale,
    };
    this.windowStart = { ...this.counters };
  }
}

export interface ChunkStoreOptions {
  owner: DeviceOwner;
  chunkBytes: number;
  force: boolean;
  log: Logger;
  /** Thick reservations by volume tree: chunk slots held back for its first writes. */
  reservations?: Map<string, number>;
  /** How device IO is done: the real calls unless a test simulates power loss. */
  deviceIo?: DeviceIoFactory;
  /** Direct IO (O_DIRECT) or the page cache (default 'auto': direct where the device allows it; device.ts). */
  io?: DeviceIoRequest;
  /**
   * For benchmarks only (scripts/bench-integrity.mjs, MESHBLOCK_SDS_BENCH_WITHOUT): run
   * without checksums (none computed, written or verified) or without the power-safe
   * allocation (no fdatasync between a new slot's first content and its entry), to measure
   * what they cost. Either makes the store unsafe: the SDS logs so loudly at start.
   */
  benchWithout?: { checksums?: boolean; safeAllocation?: boolean };
  /** Free slots kept zeroed per device (default zeroedSlotsReadyMax; 0: every allocation syncs, as a test of that order wants). */
  zeroedSlotsReady?: number;
}

/** What the scrub learns of one chunk copy (scrubChunk). */
export interface ChunkScrub {
  /** Ranges that failed their checksums (whole blocks, chunk coordinates). */
  badRanges: Array<{ offsetBytes: number; lengthBytes: number }>;
  /** Per block, the CRC of its bytes as stored (a never-written block's is that of zeros); 0 for a bad block. */
  digests: Uint32Array;
}

export class ChunkStore {
  private readonly index = new Map<string, Location>();
  /**
   * Keys held here that are never read: a chunk whose copy went with a failed device and
   * was then only partly rewritten ('device'), or whose entry was found damaged ('entry').
   * Rewritten whole, a key is whole again.
   */
  private readonly lostKeys = new Map<string, { key: ChunkKey; reason: LostReason }>();
  /** Allocations in progress, so that concurrent first writes to a chunk share one slot. */
  private readonly allocating = new Map<string, Promise<Location>>();
  private readonly allocatedByVtree = new Map<string, number>();
  /**
   * The generations held (in the index, lost or being allocated) per chunk index of a
   * volume tree, by chunkName(): what a generation path is resolved against, and what
   * garbage collection and snapshot accounting walk.
   */
  private readonly byChunk = new Map<string, HeldChunk>();
  /** The same entries by V-Tree id, so that a walk over one tree's chunks skips every other tree's. */
  private readonly byVtree = new Map<string, Map<string, HeldChunk>>();
  /** Keys read through another generation's request right now, by keyName, with a count: never freed meanwhile. */
  private readonly pins = new Map<string, number>();
  private readonly reservations: Map<string, number>;
  /** The slots of damaged entries whose key is lost here, by keyName: freed once the key is whole again. */
  private readonly damagedSlots = new Map<string, { device: StoreDevice; slot: number }>();
  /** Slots whose checksums are in memory, least recently used first. */
  private readonly checksumCache = new Set<Location>();
  private nextSequence = 1;
  private readonly rateTimer: NodeJS.Timeout;
  private readonly closeTimer: NodeJS.Timeout;
  private readonly blocksPerChunk: number;
  /** False only in a benchmark's run without checksums (ChunkStoreOptions.benchWithout). */
  private readonly checksums: boolean;
  private readonly safeAllocation: boolean;
  /** Checksums at rest since the store opened (SdsStats.integrity). */
  readonly integrity = zeroIntegrity();
  /** Ranges bad on both copies, newest last (markUnrepairable). */
  readonly unrepairable: UnrepairableRange[] = [];

  private constructor(
    readonly devices: StoreDevice[],
    readonly chunkBytes: number,
    private readonly log: Logger,
    reservations: Map<string, number>,
    private readonly options: ChunkStoreOptions,
  ) {
    this.reservations = reservations;
    this.blocksPerChunk = chunkBytes / checksumBlockBytes;
    this.checksums = options.benchWithout?.checksums !== true;
    this.safeAllocation = options.benchWithout?.safeAllocation !== true;
    assert(Number.isInteger(this.blocksPerChunk) && this.blocksPerChunk >= 1, `a chunk of ${chunkBytes} bytes is whole checksum blocks`);
    this.rateTimer = setInterval(() => {
      for (const device of this.devices) device.sampleRates(rateWindowMs);
    }, rateWindowMs).unref();
    this.closeTimer = setInterval(() => this.closeIdleSlots(), slotCloseCheckMs).unref();
  }

  /** Opens (formatting blank ones) every device and reads the slot tables into the index. */
  static async open(paths: string[], options: ChunkStoreOptions): Promise<ChunkStore> {
    const store = new ChunkStore([], options.chunkBytes, options.log, options.reservations ?? new Map<string, number>(), options);
    try {
      for (const path of paths) await store.addDevice(path, { force: options.force });
    } catch (err) {
      await store.close();
      throw err;
    }
    return store;
  }

  /**
   * Opens one more device (formatting a blank one; refusing one that holds anything unless
   * forced) and adds its chunks to the index. A device already open is returned as it is.
   */
  async addDevice(path: string, options: { force: boolean }): Promise<StoreDevice> {
    const existing = this.devices.find((device) => device.path === path);
    if (existing !== undefined) return existing;
    const opened = await openDevice(path, this.options.owner, { force: options.force, chunkBytes: this.chunkBytes, io: this.options.io ?? 'auto' });
    if (this.devices.some((device) => device.deviceId === opened.superblock.deviceId)) {
      closeDevice(opened);
      throw new StoreError('MB_ERR_DEVICE_DUPLICATE', `${path} is device ${opened.superblock.deviceId}, which is already open under another path`);
    }
    const device = new StoreDevice(opened, this.log, this.options.deviceIo ?? nativeDeviceIo);
    try {
      await this.loadSlotTable(device);
    } catch (err) {
      closeIo(device);
      closeDevice(opened);
      throw err;
    }
    this.devices.push(device);
    this.refillZeroed(device);
    return device;
  }

  private async loadSlotTable(device: StoreDevice): Promise<void> {
    const stride = device.entryStrideBytes;
    const entriesPerRead = slotTableReadBytes / stride;
    const buffer = Buffer.allocUnsafe(slotTableReadBytes);
    const duplicates: Location[] = [];
    const damaged: number[] = [];
    for (let first = 0; first < device.slotCount; first += entriesPerRead) {
      const count = Math.min(entriesPerRead, device.slotCount - first);
      await this.readFully(device, buffer.subarray(0, count * stride), device.entryOffsetBytes(first));
      for (let entryIndex = 0; entryIndex < count; entryIndex++) {
        const slot = first + entryIndex;
        const entry = buffer.subarray(entryIndex * stride, entryIndex * stride + slotEntryBytes);
        const decoded = decodeEntry(entry);
        if (decoded === 'free') {
          device.freeSlots.push(slot);
          continue;
        }
        if (decoded === 'damaged') {
          damaged.push(slot);
          continue;
        }
        device.usedSlotCount += 1;
        this.nextSequence = Math.max(this.nextSequence, decoded.sequence + 1);
        const location = newLocation(device, slot, decoded.sequence, decoded.key, decoded.open);
        const name = keyName(decoded.key);
        const existing = this.index.get(name);
        if (existing === undefined) {
          this.index.set(name, location);
          this.touched(decoded.key);
          this.countAllocated(decoded.key.vtreeId, 1);
        } else if (existing.sequence < location.sequence) {
          this.index.set(name, location);
          duplicates.push(existing);
        } else {
          duplicates.push(location);
        }
      }
    }
    // The free list was built from the lowest slot up; reversed, pop() gives the lowest first.
    device.freeSlots.reverse();
    for (const stale of duplicates) {
      this.log.warn({ deviceId: stale.device.deviceId, slot: stale.slot, key: stale.key }, 'two slots held one chunk (a crash during a move); freeing the older');
      await this.releaseSlot(stale);
    }
    for (const slot of damaged) await this.adoptDamagedEntry(device, slot);
    await this.recoverOpenSlots(device);
  }

  /**
   * A damaged entry: its slot is never reused, and the key its checksum header names (when
   * that is intact and no other slot holds the key) is lost here, to be fetched whole from
   * the mirror by the first read or the scrub.
   */
  private async adoptDamagedEntry(device: StoreDevice, slot: number): Promise<void> {
    device.damagedSlotCount += 1;
    this.integrity.damagedEntries += 1;
    const area = Buffer.alloc(device.areaStrideBytes);
    await this.readFully(device, area, device.checksumAreaOffsetBytes(slot));
    const key = decodeChecksumHeader(area.subarray(0, checksumHeaderBytes));
    if (key === null) {
      this.log.error({ deviceId: device.deviceId, path: device.path, slot }, 'damaged slot-table entry, and its checksum header too: the chunk it held is unknown and lost on this copy; the slot is not reused');
      return;
    }
    const name = keyName(key);
    if (this.index.has(name)) {
      this.log.warn({ deviceId: device.deviceId, slot, key }, 'damaged slot-table entry of a chunk another slot holds (an older copy): the slot is not reused');
      return;
    }
    this.lostKeys.set(name, { key, reason: 'entry' });
    this.damagedSlots.set(name, { device, slot });
    this.touched(key);
    this.log.error({ deviceId: device.deviceId, path: device.path, slot, key }, 'damaged slot-table entry: the chunk is lost on this copy until it is fetched again from its mirror; the slot is freed then');
  }

  /**
   * Verifies every block of every slot whose entry says open (it was being written when the
   * SDS stopped without closing it), takes a failing block as a torn write never made
   * durable (header), and closes the slots: their checksums first, an fdatasync, then the
   * entries.
   */
  private async recoverOpenSlots(device: StoreDevice): Promise<void> {
    const open = [...this.index.values()].filter((location) => location.device === device && location.open);
    if (open.length === 0) return;
    const buffer = Buffer.allocUnsafe(Math.min(recoverReadBytes, this.chunkBytes));
    let torn = 0;
    for (const location of open) {
      const checksums = await this.loadChecksums(location);
      let changed = false;
      for (let offset = 0; offset < this.chunkBytes; offset += buffer.length) {
        await this.readFully(device, buffer, device.slotOffsetBytes(location.slot) + offset);
        const firstBlock = offset / checksumBlockBytes;
        for (const index of failingBlocks(buffer, location.seed, checksums, firstBlock)) {
          const block = index - firstBlock;
          checksums[index] = crc32c(buffer.subarray(block * checksumBlockBytes, (block + 1) * checksumBlockBytes), location.seed);
          changed = true;
          torn += 1;
        }
      }
      if (changed) await this.writeFully(device, location.area as Buffer, device.checksumAreaOffsetBytes(location.slot));
    }
    await this.syncDevice(device);
    for (const location of open) {
      location.open = false;
      await this.writeEntry(location);
    }
    this.integrity.tornBlocksAccepted += torn;
    const fields = { deviceId: device.deviceId, path: device.path, openSlots: open.length, tornBlocks: torn };
    if (torn > 0) this.log.warn(fields, 'slots open at an unclean stop verified: blocks failing their checksums there are writes never acknowledged as durable, torn by the stop, and are kept as they are');
    else this.log.info(fields, 'slots open at an unclean stop verified: every block passed');
  }

  // --- IO ------------------------------------------------------------------------------

  /**
   * Reads `target.length` bytes at `offsetBytes` of the chunk; unwritten chunks read as
   * zeros. Every block read is verified: a bad one rejects with a ChecksumError.
   */
  async read(key: ChunkKey, offsetBytes: number, target: Buffer): Promise<void> {
    this.checkRange(offsetBytes, target.length);
    const lost = this.lostKeys.get(keyName(key));
    if (lost?.reason === 'device') {
      throw new StoreError('MB_ERR_DEVICE_FAILED', `this copy of chunk ${keyName(key)} was on a failed device and is incomplete until it is rewritten whole`);
    }
    if (lost?.reason === 'entry') throw new ChecksumError(key, 0, this.chunkBytes, 'this copy is lost to a damaged slot-table entry');
    const location = this.index.get(keyName(key)) ?? (await this.allocating.get(keyName(key)));
    if (location === undefined) {
      target.fill(0);
      return;
    }
    await this.readVerified(location, offsetBytes, target);
    location.device.counters.reads += 1;
    location.device.counters.readBytes += target.length;
  }

  async write(key: ChunkKey, offsetBytes: number, data: Buffer, options: { fua: boolean; preferDeviceId?: string | undefined }): Promise<void> {
    this.checkRange(offsetBytes, data.length);
    const whole = offsetBytes === 0 && data.length === this.chunkBytes;
    const found = await this.locate(key, { create: true, fill: { content: data, offsetBytes }, whole, preferDeviceId: options.preferDeviceId });
    assert(found !== null, 'locate with create returns a slot');
    const { location } = found;
    if (!found.fresh) await this.change(location, offsetBytes, data.length, data);
    if (whole) {
      this.forgetLost(key);
      this.touched(key);
    }
    this.clearUnrepairable(key, offsetBytes, data.length);
    location.device.counters.writes += 1;
    location.device.counters.writeBytes += data.length;
    if (options.fua) await this.syncDevice(location.device);
  }

  /**
   * Zeroes a range of the chunk: a whole chunk gives its slot back; a part is punched
   * (files) or zeroed (block devices). A chunk that holds nothing is left alone.
   */
  async trim(key: ChunkKey, offsetBytes: number, lengthBytes: number, options: { fua: boolean }): Promise<void> {
    this.checkRange(offsetBytes, lengthBytes);
    const whole = offsetBytes === 0 && lengthBytes === this.chunkBytes;
    const location = (await this.locate(key, { create: false, fill: 'zeros', whole }))?.location ?? null;
    if (whole) {
      this.forgetLost(key);
      this.touched(key);
    }
    this.clearUnrepairable(key, offsetBytes, lengthBytes);
    if (location === null) {
      // Nothing held, but an earlier trim's freeing may not be durable yet: FUA covers it.
      if (options.fua) await this.flush();
      return;
    }
    if (whole) {
      this.index.delete(keyName(key));
      this.touched(key);
      this.countAllocated(key.vtreeId, -1);
      await this.releaseSlot(location);
    } else {
      await this.change(location, offsetBytes, lengthBytes, null);
    }
    if (options.fua) await this.syncDevice(location.device);
  }

  /**
   * fdatasync of every device written since the last flush. A device found clean may have
   * an fdatasync in flight, begun by another flush for writes acknowledged before this
   * one: this flush waits for it too, or it would answer before those writes are durable.
   */
  async flush(): Promise<void> {
    // A failed device holds no copy anyone counts on (the MDM re-places its groups from
    // their other copies, which flushes reach): flushing it again would fail forever.
    const live = this.devices.filter((device) => device.state !== 'failed');
    const syncs = live.map((device) => (device.dirty || device.dirtyAreas.size > 0 ? this.syncDevice(device) : device.syncing));
    await Promise.all(syncs.filter((sync): sync is Promise<void> => sync !== null));
  }

  // --- checksums: repair and scrub ------------------------------------------------------

  /**
   * Rewrites a range of a chunk (whole blocks) with good bytes from its other copy: the
   * blocks a ChecksumError named, or the whole chunk of a key lost to a damaged entry.
   */
  async repair(key: ChunkKey, offsetBytes: number, data: Buffer): Promise<void> {
    this.checkRange(offsetBytes, data.length);
    assert(offsetBytes % checksumBlockBytes === 0 && data.length % checksumBlockBytes === 0, 'a repair rewrites whole blocks');
    const name = keyName(key);
    if (this.lostKeys.has(name)) {
      assert(offsetBytes === 0 && data.length === this.chunkBytes, 'a lost key is repaired whole');
      await this.write(key, 0, data, { fua: false });
    } else {
      const location = this.index.get(name);
      if (location === undefined) throw new StoreError('MB_ERR_CHECKSUM', `chunk ${name} is not held here: nothing to repair`);
      await this.change(location, offsetBytes, data.length, data);
      this.clearUnrepairable(key, offsetBytes, data.length);
    }
    this.integrity.repairedBlocks += data.length / checksumBlockBytes;
    this.log.warn({ key, offsetBytes, lengthBytes: data.length }, 'repaired a bad range of a chunk copy from its other copy');
  }

  /** Ranges bad on both copies inside [offsetBytes, +lengthBytes) of `key` are gone once it is rewritten. */
  private clearUnrepairable(key: ChunkKey, offsetBytes: number, lengthBytes: number): void {
    if (this.unrepairable.length === 0) return;
    const name = keyName(key);
    for (let index = this.unrepairable.length - 1; index >= 0; index--) {
      const range = this.unrepairable[index] as UnrepairableRange;
      if (keyName(range) === name && range.offsetBytes >= offsetBytes && range.offsetBytes + range.lengthBytes <= offsetBytes + lengthBytes) this.unrepairable.splice(index, 1);
    }
  }

  /** `key` is whole again (rewritten whole, trimmed whole or freed): not lost, and the slot of its damaged entry is freed. */
  private forgetLost(key: ChunkKey): void {
    const name = keyName(key);
    this.lostKeys.delete(name);
    const damaged = this.damagedSlots.get(name);
    if (damaged === undefined) return;
    this.damagedSlots.delete(name);
    const { device, slot } = damaged;
    void (async () => {
      await this.writeFully(device, Buffer.alloc(device.entryStrideBytes), device.entryOffsetBytes(slot));
      await this.writeFully(device, Buffer.alloc(checksumHeaderBytes), device.checksumAreaOffsetBytes(slot)); // as in releaseSlot
      device.damagedSlotCount -= 1;
      device.pendingFree.push({ slot, seq: ++device.writeSeq });
    })().catch((err: unknown) => this.log.warn({ err, deviceId: device.deviceId, slot }, 'freeing the slot of a damaged entry failed; it stays unused'));
  }

  /** The keys lost here to damaged slot-table entries: to be fetched again whole from their other copy. */
  lostToDamage(): ChunkKey[] {
    return [...this.lostKeys.values()].filter((lost) => lost.reason === 'entry').map((lost) => lost.key);
  }

  /** Both copies of the range are bad: remembered and reported; reads of it keep failing until it is rewritten. */
  markUnrepairable(key: ChunkKey, offsetBytes: number, lengthBytes: number): void {
    const known = this.unrepairable.find(
      (range) => keyName(range) === keyName(key) && range.offsetBytes === offsetBytes && range.lengthBytes === lengthBytes,
    );
    if (known !== undefined) return;
    this.unrepairable.push({ ...key, offsetBytes, lengthBytes, detectedAtMs: Date.now() });
    if (this.unrepairable.length > unrepairableRangesMax) this.unrepairable.shift();
    this.integrity.unrepairableBlocks += Math.ceil(lengthBytes / checksumBlockBytes);
    this.log.error({ key, offsetBytes, lengthBytes }, 'a range is bad on both copies: reads of it fail with EIO until it is written again');
  }

  /**
   * Reads a whole chunk copy from the device and verifies it: every block against its
   * checksum, and the checksum area on the device against the one in memory (rewritten from
   * memory where it rotted while the blocks still verify). A key not held here reads as a
   * never-written chunk. The caller holds the key's whole range lock.
   */
  async scrubChunk(key: ChunkKey): Promise<ChunkScrub> {
    const name = keyName(key);
    const seed = keySeed(key);
    const digests = new Uint32Array(this.blocksPerChunk);
    if (this.lostKeys.get(name)?.reason === 'entry') {
      return { badRanges: [{ offsetBytes: 0, lengthBytes: this.chunkBytes }], digests };
    }
    const location = this.index.get(name);
    if (!this.checksums) return { badRanges: [], digests };
    if (location === undefined || location.device.state === 'failed') {
      digests.fill(crc32c(zeroBlock, seed));
      return { badRanges: [], digests };
    }
    const device = location.device;
    location.busy += 1;
    try {
      const checksums = await this.loadChecksums(location);
      const onDisk = Buffer.allocUnsafe(device.areaStrideBytes);
      await this.readFully(device, onDisk, device.checksumAreaOffsetBytes(location.slot));
      const expected = location.area as Buffer;
      const buffer = Buffer.allocUnsafe(Math.min(recoverReadBytes, this.chunkBytes));
      const bad: number[] = [];
      for (let offset = 0; offset < this.chunkBytes; offset += buffer.length) {
        await this.readFully(device, buffer, device.slotOffsetBytes(location.slot) + offset);
        const firstBlock = offset / checksumBlockBytes;
        const failing = new Set(failingBlocks(buffer, seed, checksums, firstBlock));
        for (let index = firstBlock; index < firstBlock + buffer.length / checksumBlockBytes; index++) {
          const stored = checksums[index] as number;
          if (failing.has(index)) bad.push(index);
          else digests[index] = stored === 0 ? crc32c(zeroBlock, seed) : stored;
        }
      }
      device.scrubbedBytes += this.chunkBytes;
      // An area with changes not yet written (or on their way) differs from memory by design.
      const settled = !device.dirtyAreas.has(location) && location.checksumWrite === null;
      if (settled && !onDisk.equals(expected) && bad.length === 0) {
        await this.writeChecksumArea(location);
        this.integrity.checksumErrors += 1;
        this.integrity.repairedBlocks += 1;
        this.log.warn({ deviceId: device.deviceId, slot: location.slot, key }, 'the checksum area of a chunk copy rotted on the device; rewritten from memory (its blocks verify)');
      }
      if (bad.length > 0) this.countBad(location, bad, 'scrub');
      return { badRanges: blockRanges(bad), digests };
    } finally {
      location.busy -= 1;
    }
  }

  /**
   * Rewrites the slot-table entries of a device from memory where the device's copy
   * differs (an entry that rotted while the SDS runs): the scrub's pass over the table.
   * Returns how many were rewritten.
   */
  async scrubSlotTable(device: StoreDevice): Promise<number> {
    const expected = new Map<number, Location>();
    for (const location of this.index.values()) if (location.device === device) expected.set(location.slot, location);
    const stride = device.entryStrideBytes;
    const entriesPerRead = slotTableReadBytes / stride;
    const buffer = Buffer.allocUnsafe(slotTableReadBytes);
    let rewritten = 0;
    for (let first = 0; first < device.slotCount; first += entriesPerRead) {
      const count = Math.min(entriesPerRead, device.slotCount - first);
      await this.readFully(device, buffer.subarray(0, count * stride), device.entryOffsetBytes(first));
      for (let entryIndex = 0; entryIndex < count; entryIndex++) {
        const location = expected.get(first + entryIndex);
        if (location === undefined || location.opening !== null) continue;
        const onDisk = buffer.subarray(entryIndex * stride, (entryIndex + 1) * stride);
        if (onDisk.equals(entryRecord(location))) continue;
        // An entry write in flight may differ for a moment: look again after it.
        await location.entryChain.catch(() => undefined);
        const again = Buffer.allocUnsafe(stride);
        await this.readFully(device, again, device.entryOffsetBytes(location.slot));
        if (again.equals(entryRecord(location))) continue;
        await this.writeEntry(location);
        rewritten += 1;
        this.integrity.damagedEntries += 1;
        this.log.error({ deviceId: device.deviceId, path: device.path, slot: location.slot, key: location.key }, 'a slot-table entry rotted on the device; rewritten from memory');
      }
    }
    return rewritten;
  }

  // --- generations (snapshots) ----------------------------------------------------------

  /**
   * The generation of `path` (nearest first, from generationPath()) that chunk
   * `key.chunkIndex` resolves to here: the first one held, or null when none is. A lost
   * copy counts as held, so that nothing reads past it into an older generation.
   */
  resolve(key: ChunkKey, path: readonly number[]): number | null {
    const held = this.byChunk.get(chunkName(key))?.generations;
    if (held === undefined) return null;
    for (const generation of path) if (held.has(generation)) return generation;
    return null;
  }

  /**
   * As resolve(), but a key still being allocated does not count: what garbage collection
   * asks, since an allocation that fails (a copy on write on a device that just failed)
   * leaves the head resolving to the older generation again, which must still be there.
   */
  resolveCommitted(key: ChunkKey, path: readonly number[]): number | null {
    for (const generation of path) {
      const name = keyName({ ...key, generation });
      if (this.index.has(name) || this.lostKeys.has(name)) return generation;
    }
    return null;
  }

  /** Some generation of the chunk other than `key`'s is held here (a first write of `key` may hide it). */
  holdsOtherGeneration(key: ChunkKey): boolean {
    const held = this.byChunk.get(chunkName(key))?.generations;
    if (held === undefined) return false;
    for (const generation of held) if (generation !== key.generation) return true;
    return false;
  }

  /**
   * Reads through a generation path: from the first generation holding the chunk, zeros
   * when none does. The key read is pinned meanwhile (garbage collection skips it): the
   * caller's range lock is on the path's head, not on the key read.
   */
  async readResolved(key: ChunkKey, path: readonly number[], offsetBytes: number, target: Buffer): Promise<void> {
    this.checkRange(offsetBytes, target.length);
    const generation = this.resolve(key, path);
    if (generation === null) {
      target.fill(0);
      return;
    }
    const source: ChunkKey = { ...key, generation };
    const name = keyName(source);
    this.pins.set(name, (this.pins.get(name) ?? 0) + 1);
    try {
      await this.read(source, offsetBytes, target);
    } finally {
      const count = (this.pins.get(name) ?? 1) - 1;
      if (count === 0) this.pins.delete(name);
      else this.pins.set(name, count);
    }
  }

  /**
   * Writes the whole content of a chunk whose key hides (or may hide) an older generation's
   * copy: copy on write, a whole-chunk write or a zeroing trim of a head an ancestor holds.
   * A key not held yet gets its slot in the shadow order (header): content, fdatasync,
   * entry. A key already held is rewritten in place, as any write.
   */
  async writeShadowing(key: ChunkKey, content: Buffer | 'zeros', options: { fua: boolean; preferDeviceId?: string | undefined }): Promise<void> {
    assert(content === 'zeros' || content.length === this.chunkBytes, 'a shadowing write is one whole chunk');
    const fill: SlotFill = content === 'zeros' ? 'zeros' : { content, offsetBytes: 0 };
    const found = await this.locate(key, { create: true, fill, whole: true, hidesAncestor: true, preferDeviceId: options.preferDeviceId });
    assert(found !== null, 'locate with create returns a slot');
    const { location } = found;
    if (!found.fresh) await this.change(location, 0, this.chunkBytes, content === 'zeros' ? null : content);
    this.forgetLost(key);
    this.clearUnrepairable(key, 0, this.chunkBytes);
    this.touched(key);
    location.device.counters.writes += 1;
    location.device.counters.writeBytes += this.chunkBytes;
    if (options.fua) await this.syncDevice(location.device);
  }

  /**
   * Frees a key its caller found to be garbage (no head resolves to it), unless it is being
   * read through another generation or allocated: then false, and a later collection looks
   * again. The check and the removal from the index happen in one synchronous step, so no
   * read can resolve to the key after it is found free to go. The caller holds the key's
   * whole range lock (no write to it is in flight).
   */
  async freeGarbage(key: ChunkKey): Promise<boolean> {
    const name = keyName(key);
    if (this.pins.has(name) || this.allocating.has(name)) return false;
    const location = this.index.get(name);
    this.forgetLost(key);
    this.clearUnrepairable(key, 0, this.chunkBytes);
    if (location !== undefined) {
      this.index.delete(name);
      this.countAllocated(key.vtreeId, -1);
    }
    this.touched(key);
    if (location === undefined || location.device.state === 'failed') return true;
    await this.releaseSlot(location);
    return true;
  }

  /** Every chunk index held, with its generations (live views: copy what must outlast an await). */
  heldChunks(): IterableIterator<HeldChunk> {
    return this.byChunk.values();
  }

  /** The chunk indexes held of one V-Tree (live views, as heldChunks()). */
  heldChunksOf(vtreeId: string): IterableIterator<HeldChunk> {
    return (this.byVtree.get(vtreeId) ?? new Map<string, HeldChunk>()).values();
  }

  /** The device holding `key`, or null (not held, lost, or still being allocated). */
  deviceOf(key: ChunkKey): StoreDevice | null {
    return this.index.get(keyName(key))?.device ?? null;
  }

  /** Keeps byChunk in step with the index, the lost keys and the allocations for `key`. */
  private touched(key: ChunkKey): void {
    const name = keyName(key);
    const held = this.index.has(name) || this.lostKeys.has(name) || this.allocating.has(name);
    const chunk = chunkName(key);
    let entry = this.byChunk.get(chunk);
    if (held) {
      if (entry === undefined) {
        entry = { poolId: key.poolId, vtreeId: key.vtreeId, chunkIndex: key.chunkIndex, generations: new Set() };
        this.byChunk.set(chunk, entry);
        let ofTree = this.byVtree.get(key.vtreeId);
        if (ofTree === undefined) this.byVtree.set(key.vtreeId, (ofTree = new Map<string, HeldChunk>()));
        ofTree.set(chunk, entry);
      }
      entry.generations.add(key.generation);
    } else if (entry !== undefined) {
      entry.generations.delete(key.generation);
      if (entry.generations.size === 0) {
        this.byChunk.delete(chunk);
        const ofTree = this.byVtree.get(key.vtreeId);
        ofTree?.delete(chunk);
        if (ofTree?.size === 0) this.byVtree.delete(key.vtreeId);
      }
    }
  }

  has(key: ChunkKey): boolean {
    return this.index.has(keyName(key)) || this.lostKeys.has(keyName(key));
  }

  /** Every chunk held, optionally filtered, in key order (stable, so a walk can resume). */
  keys(filter: (key: ChunkKey) => boolean = () => true): ChunkKey[] {
    const keys: ChunkKey[] = [];
    for (const location of this.index.values()) if (filter(location.key)) keys.push(location.key);
    for (const [name, { key }] of this.lostKeys) if (!this.index.has(name) && filter(key)) keys.push(key);
    return keys.sort(compareKeys);
  }

  // --- space ---------------------------------------------------------------------------

  setReservation(vtreeId: string, chunkCount: number): void {
    if (chunkCount === 0) {
      this.reservations.delete(vtreeId);
      return;
    }
    const previous = this.reservations.get(vtreeId) ?? 0;
    const extra = Math.max(0, chunkCount - Math.max(previous, this.allocatedByVtree.get(vtreeId) ?? 0));
    if (extra > this.unreservedFreeSlots()) {
      throw new StoreError('MB_ERR_NO_SPACE', `cannot reserve ${chunkCount} chunks for volume tree ${vtreeId}: only ${this.unreservedFreeSlots()} unreserved free slots`);
    }
    this.reservations.set(vtreeId, chunkCount);
  }

  reservationsSnapshot(): Record<string, number> {
    return Object.fromEntries(this.reservations);
  }

  /** Slots reserved for thick volume trees and not yet written. */
  reservedUnusedSlots(): number {
    let total = 0;
    for (const [vtreeId, chunkCount] of this.reservations) total += Math.max(0, chunkCount - (this.allocatedByVtree.get(vtreeId) ?? 0));
    return total;
  }

  private freeSlotCount(): number {
    return this.devices.reduce((sum, device) => sum + (device.state === 'normal' ? device.freeSlotCount : 0), 0);
  }

  private unreservedFreeSlots(): number {
    return this.freeSlotCount() - this.reservedUnusedSlots();
  }

  private countAllocated(vtreeId: string, delta: number): void {
    const count = (this.allocatedByVtree.get(vtreeId) ?? 0) + delta;
    if (count === 0) this.allocatedByVtree.delete(vtreeId);
    else this.allocatedByVtree.set(vtreeId, count);
  }

  // --- slots ---------------------------------------------------------------------------

  /**
   * Finds a chunk's slot, allocating one with `create`. A chunk whose slot is on a failed
   * device is gone from this SDS: its entry is dropped, and a new slot is taken for a write.
   * Rewritten whole (a rebuild's Put) or trimmed whole, it is whole again; a partial write
   * or trim leaves it `lost` — kept, but never read — since the rest of it is not here.
   */
  private async locate(key: ChunkKey, options: { create: boolean; fill: SlotFill; whole: boolean; hidesAncestor?: boolean; preferDeviceId?: string | undefined }): Promise<{ location: Location; fresh: boolean } | null> {
    const name = keyName(key);
    const found = this.index.get(name) ?? (await this.allocating.get(name));
    if (found !== undefined) {
      if (found.device.state !== 'failed') return { location: found, fresh: false };
      if (this.index.get(name) === found) {
        this.index.delete(name);
        this.countAllocated(key.vtreeId, -1);
        if (!options.whole) this.lostKeys.set(name, { key, reason: 'device' });
        this.touched(key);
      }
      if (!options.create) return null;
    }
    if (!options.create) return null;
    const again = this.index.get(name) ?? this.allocating.get(name);
    // Another caller's allocation: its fill, not ours, went into the slot (`fresh` false).
    if (again !== undefined) return { location: await again, fresh: false };
    const allocation = this.allocate(key, options.fill, { hidesAncestor: options.hidesAncestor === true }, options.preferDeviceId);
    this.allocating.set(name, allocation);
    this.touched(key);
    try {
      return { location: await allocation, fresh: true };
    } finally {
      this.allocating.delete(name);
      this.touched(key);
    }
  }

  /** The allocate order of the header: first content and checksums, fdatasync, then the entry (open). */
  private async allocate(key: ChunkKey, fill: SlotFill, order: FillOrder, preferDeviceId: string | undefined): Promise<Location> {
    const reserved = Math.max(0, (this.reservations.get(key.vtreeId) ?? 0) - (this.allocatedByVtree.get(key.vtreeId) ?? 0));
    if (reserved === 0 && this.unreservedFreeSlots() <= 0) {
      throw new StoreError('MB_ERR_NO_SPACE', `no free chunk slot on this SDS (${this.reservedUnusedSlots()} slots are reserved for thick volumes)`);
    }
    const healthy = this.devices.filter((device) => device.state === 'normal' && device.freeSlotCount > 0);
    const preferred = healthy.find((device) => device.deviceId === preferDeviceId);
    const device = preferred ?? healthy.reduce<StoreDevice | undefined>((best, device) => (best === undefined || device.freeSlotCount > best.freeSlotCount ? device : best), undefined);
    if (device === undefined) throw new StoreError('MB_ERR_NO_SPACE', 'no healthy device with a free chunk slot');
    this.countAllocated(key.vtreeId, 1);
    let slot: number | undefined;
    let zeroed = false;
    try {
      // A plain first write (nothing older to hide: the chunk reads as zeros until then)
      // takes a slot known to hold zeros durably, and needs no sync before its entry: after
      // a cut that kept the entry and not all of the content, each sector reads as zeros or
      // as the write, which is what an unacknowledged write may leave.
      if (!order.hidesAncestor && this.safeAllocation && device.zeroedSlots.length > 0) {
        slot = device.zeroedSlots.pop();
        zeroed = true;
      } else {
        // Slots freed since the last fdatasync come back with the next one, and their discard.
        while (device.freeSlots.length === 0 && device.zeroedSlots.length === 0 && (device.pendingFree.length > 0 || device.discarding > 0 || device.zeroing > 0)) {
          if (device.pendingFree.length > 0) await this.syncAfterWrites(device);
          else if (device.discarding > 0) await device.discarded;
          else await device.zeroed;
        }
        slot = device.freeSlots.pop() ?? device.zeroedSlots.pop();
      }
      if (slot === undefined) throw new StoreError('MB_ERR_NO_SPACE', 'no healthy device with a free chunk slot');
      const location = newLocation(device, slot, this.nextSequence++, key, true);
      const area = newChecksumArea(key, this.blocksPerChunk, device.areaStrideBytes);
      const checksums = checksumsOf(area, this.blocksPerChunk);
      const base = device.slotOffsetBytes(slot);
      const whole = fill !== 'zeros' && fill.content.length === this.chunkBytes;
      if (!whole && !zeroed) await this.zeroRange(device, base, this.chunkBytes);
      if (fill !== 'zeros') {
        await this.writeFully(device, fill.content, base + fill.offsetBytes);
        if (this.checksums) {
          const image = this.blockImage(fill.offsetBytes, fill.content.length, fill.content, null);
          checksumBlocks(image.bytes, location.seed, checksums, image.firstBlock);
        }
      }
      this.setChecksums(location, area);
      // From the zeroed pool the checksums go out with the next fdatasync, in no order with
      // the entry (header); otherwise they are durable before it.
      if (this.checksums && zeroed) this.markAreaDirty(location);
      else if (this.checksums) await this.writeChecksumArea(location);
      if (this.safeAllocation && !zeroed) await this.syncAfterWrites(device);
      await this.writeEntry(location);
      device.usedSlotCount += 1;
      device.openSlots.add(location);
      this.markWritten(location);
      this.index.set(keyName(key), location);
      this.refillZeroed(device);
      return location;
    } catch (err) {
      this.countAllocated(key.vtreeId, -1);
      // The slot's state is unknown after a failed write; a failed device is not reused anyway.
      if (slot !== undefined && device.state === 'normal') device.freeSlots.push(slot);
      throw err;
    }
  }

  /**
   * Keeps up to zeroedSlotsReady free slots of a device zeroed and synced, in the
   * background: a batch is zeroed, one fdatasync makes it durable, and only then are its
   * slots taken by allocations that skip their own sync.
   */
  private refillZeroed(device: StoreDevice): void {
    const target = this.options.zeroedSlotsReady ?? zeroedSlotsReadyMax;
    if (device.state !== 'normal' || device.zeroingStopped || device.zeroing > 0 || device.zeroedSlots.length > target / 2) return;
    const batch: number[] = [];
    while (batch.length + device.zeroedSlots.length < target && device.freeSlots.length > 0) batch.push(device.freeSlots.pop() as number);
    if (batch.length === 0) return;
    device.zeroing = batch.length;
    device.zeroed = (async () => {
      try {
        // The device's own calls, not zeroRange's: a background optimisation that fails (a
        // thin backing store out of space, say) stops itself and never fails the device;
        // the writes that need the space find out, as they would have.
        device.dirty = true;
        for (const slot of batch) {
          // Counted as deviceCall counts (the device's latency), failing it or not.
          const startMs = ioStartMs();
          await device.io.zero(device.slotOffsetBytes(slot), this.chunkBytes).catch((err: unknown) => {
            device.callCounters.zero.failed();
            throw err;
          });
          device.callCounters.zero.doneSince(this.chunkBytes, startMs);
        }
        await this.syncAfterWrites(device);
        // Lowest last, so that allocations take the lowest first.
        device.zeroedSlots.push(...batch.reverse());
      } catch (err) {
        device.zeroingStopped = true;
        this.log.warn({ err, deviceId: device.deviceId, path: device.path }, 'zeroing free slots ahead failed: stopped on this device until the SDS restarts; first writes there take a sync each');
        device.freeSlots.push(...batch);
      } finally {
        device.zeroing = 0;
      }
    })();
  }

  private async releaseSlot(location: Location): Promise<void> {
    const { device, slot } = location;
    device.openSlots.delete(location);
    this.checksumCache.delete(location);
    location.checksums = null;
    location.area = null;
    device.dirtyAreas.delete(location);
    await location.entryChain.catch(() => undefined);
    // An area write in flight must land before the header is zeroed, not after.
    for (const write of [location.checksumWrite, location.checksumWriteQueued]) if (write !== null) await write.catch(() => undefined);
    await this.writeFully(device, Buffer.alloc(device.entryStrideBytes), device.entryOffsetBytes(slot));
    // The header only, never the CRCs behind it: until the zeroed entry is durable the slot
    // may still be the old key's after a cut, and must verify as it. On a direct device this
    // is the one metadata write of part of a sector (DirectIo reads, modifies and writes it).
    await this.writeFully(device, Buffer.alloc(checksumHeaderBytes), device.checksumAreaOffsetBytes(slot));
    device.usedSlotCount -= 1;
    // The slot's bytes stay until the zeroed entry is durable: discarded before that, a cut
    // that kept the discard but not the entry would leave the key pointing at zeros.
    device.pendingFree.push({ slot, seq: ++device.writeSeq });
  }

  /** Discards freed slots whose zeroed entry is durable, and gives them to the free list. */
  private discardFreed(device: StoreDevice, slots: readonly number[]): void {
    device.discarding += slots.length;
    const done = Promise.all(
      slots.map((slot) =>
        this.discardRange(device, device.slotOffsetBytes(slot), this.chunkBytes)
          .catch((err: unknown) => this.log.warn({ err, deviceId: device.deviceId, slot }, 'discarding a freed slot failed; it is reused with its old bytes'))
          .finally(() => {
            device.discarding -= 1;
            if (device.state === 'normal') device.freeSlots.push(slot);
          }),
      ),
    ).then(() => undefined);
    device.discarded = Promise.all([device.discarded, done]).then(() => undefined);
  }

  /**
   * Writes `data` (or zeros, for a trim) over a range of a held chunk, in place: the slot
   * is opened first if it was closed; blocks only partly covered are read, verified and
   * merged (read-modify-write, under the caller's range lock, which covers whole blocks).
   */
  private async change(location: Location, offsetBytes: number, lengthBytes: number, data: Buffer | null): Promise<void> {
    const device = location.device;
    location.busy += 1;
    try {
      await this.ensureOpen(location);
      if (!this.checksums) {
        const position = device.slotOffsetBytes(location.slot) + offsetBytes;
        await (data === null ? this.zeroRange(device, position, lengthBytes) : this.writeFully(device, data, position));
        this.markWritten(location);
        return;
      }
      const checksums = await this.loadChecksums(location);
      const image = this.blockImage(offsetBytes, lengthBytes, data, await this.edgeBlocks(location, checksums, offsetBytes, lengthBytes));
      const position = device.slotOffsetBytes(location.slot) + offsetBytes;
      checksumBlocks(image.bytes, location.seed, checksums, image.firstBlock);
      if (data === null) {
        // Whole blocks trimmed read as never written: a stored 0 over zeros.
        for (let block = Math.ceil(offsetBytes / checksumBlockBytes); block < Math.floor((offsetBytes + lengthBytes) / checksumBlockBytes); block++) checksums[block] = 0;
      }
      const wholeBlocks = image.firstBlock * checksumBlockBytes === offsetBytes && image.bytes.length === lengthBytes;
      if (data === null && wholeBlocks) await this.zeroRange(device, position, lengthBytes);
      else if (image.bytes === data) await this.writeFully(device, data, position);
      // Part blocks (of a write or a trim): the merged whole blocks, already read and
      // verified, go out whole, so the device never zeroes or merges part of a sector
      // (BLKZEROOUT refuses that on a 4 KiB-sector device; direct IO would read it back).
      else await this.writeFully(device, image.bytes, device.slotOffsetBytes(location.slot) + image.firstBlock * checksumBlockBytes);
      this.markAreaDirty(location);
      this.markWritten(location);
      if (location.knownBad !== null) {
        for (let block = image.firstBlock; block < image.firstBlock + image.bytes.length / checksumBlockBytes; block++) location.knownBad.delete(block);
      }
    } finally {
      location.busy -= 1;
    }
  }

  /**
   * The blocks a change only partly covers, read and verified (null when it covers whole
   * blocks only): the bytes a read-modify-write keeps.
   */
  private async edgeBlocks(location: Location, checksums: Uint32Array, offsetBytes: number, lengthBytes: number): Promise<Buffer | null> {
    const first = Math.floor(offsetBytes / checksumBlockBytes) * checksumBlockBytes;
    const end = Math.ceil((offsetBytes + lengthBytes) / checksumBlockBytes) * checksumBlockBytes;
    if (first === offsetBytes && end === offsetBytes + lengthBytes) return null;
    const edges = Buffer.alloc(end - first);
    if (first !== offsetBytes) await this.readBlocks(location, checksums, first, edges.subarray(0, checksumBlockBytes));
    const lastStart = end - checksumBlockBytes;
    if (end !== offsetBytes + lengthBytes && (lastStart !== first || first === offsetBytes)) {
      await this.readBlocks(location, checksums, lastStart, edges.subarray(lastStart - first));
    }
    return edges;
  }

  /** The whole blocks covering [offsetBytes, +lengthBytes): `edges` (or zeros) with `data` (or zeros) laid over. */
  private blockImage(offsetBytes: number, lengthBytes: number, data: Buffer | null, edges: Buffer | null): { bytes: Buffer; firstBlock: number } {
    const first = Math.floor(offsetBytes / checksumBlockBytes) * checksumBlockBytes;
    const end = Math.ceil((offsetBytes + lengthBytes) / checksumBlockBytes) * checksumBlockBytes;
    if (data !== null && first === offsetBytes && end === offsetBytes + lengthBytes) return { bytes: data, firstBlock: first / checksumBlockBytes };
    const bytes = edges ?? Buffer.alloc(end - first);
    if (data === null) bytes.fill(0, offsetBytes - first, offsetBytes - first + lengthBytes);
    else data.copy(bytes, offsetBytes - first);
    return { bytes, firstBlock: first / checksumBlockBytes };
  }

  /** Reads whole blocks of a slot into `target` and verifies them: a bad block rejects with a ChecksumError. */
  private async readBlocks(location: Location, checksums: Uint32Array, offsetBytes: number, target: Buffer): Promise<void> {
    await this.readFully(location.device, target, location.device.slotOffsetBytes(location.slot) + offsetBytes);
    if (!this.checksums) return;
    const bad = failingBlocks(target, location.seed, checksums, offsetBytes / checksumBlockBytes);
    if (bad.length === 0) return;
    this.countBad(location, bad, 'read');
    const first = bad[0] as number;
    const last = bad[bad.length - 1] as number;
    throw new ChecksumError(location.key, first * checksumBlockBytes, (last - first + 1) * checksumBlockBytes, `${bad.length} block(s) failed their checksums on ${location.device.path}`);
  }

  private async readVerified(location: Location, offsetBytes: number, target: Buffer): Promise<void> {
    if (!this.checksums) return this.readFully(location.device, target, location.device.slotOffsetBytes(location.slot) + offsetBytes);
    location.busy += 1;
    try {
      const checksums = await this.loadChecksums(location);
      const first = Math.floor(offsetBytes / checksumBlockBytes) * checksumBlockBytes;
      const end = Math.ceil((offsetBytes + target.length) / checksumBlockBytes) * checksumBlockBytes;
      if (first === offsetBytes && end === offsetBytes + target.length) return await this.readBlocks(location, checksums, offsetBytes, target);
      const blocks = Buffer.allocUnsafe(end - first);
      await this.readBlocks(location, checksums, first, blocks);
      blocks.copy(target, 0, offsetBytes - first, offsetBytes - first + target.length);
    } finally {
      location.busy -= 1;
    }
  }

  /** Counts and logs bad blocks of a slot, each once until it is rewritten (a read and the scrub may both find it). */
  private countBad(location: Location, badBlocks: readonly number[], where: 'read' | 'scrub'): void {
    const known = (location.knownBad ??= new Set<number>());
    const fresh = badBlocks.filter((block) => !known.has(block));
    if (fresh.length === 0) return;
    for (const block of fresh) known.add(block);
    location.device.checksumErrors += fresh.length;
    this.integrity.checksumErrors += fresh.length;
    this.log.error({ deviceId: location.device.deviceId, path: location.device.path, slot: location.slot, key: location.key, blocks: fresh.length, where }, 'blocks of a chunk copy failed their checksums (rot or a misdirected write): not returned; the other copy is asked');
  }

  // --- checksums in memory and on the device ---------------------------------------------

  private async loadChecksums(location: Location): Promise<Uint32Array> {
    if (location.checksums !== null) {
      this.checksumCache.delete(location);
      this.checksumCache.add(location);
      return location.checksums;
    }
    if (location.loading !== null) return checksumsOf(await location.loading, this.blocksPerChunk);
    const loading = (async () => {
      const area = newChecksumArea(location.key, this.blocksPerChunk, location.device.areaStrideBytes);
      const onDisk = Buffer.allocUnsafe(area.length);
      await this.readFully(location.device, onDisk, location.device.checksumAreaOffsetBytes(location.slot));
      // The header is the key's, rewritten from memory with the next write if it rotted.
      onDisk.copy(area, checksumHeaderBytes, checksumHeaderBytes, checksumHeaderBytes + this.blocksPerChunk * 4);
      return area;
    })();
    location.loading = loading;
    try {
      const area = await loading;
      // A slot freed meanwhile keeps no checksums.
      if (this.index.get(keyName(location.key)) === location || this.allocating.has(keyName(location.key))) this.setChecksums(location, area);
      return location.checksums ?? checksumsOf(area, this.blocksPerChunk);
    } finally {
      location.loading = null;
    }
  }

  private setChecksums(location: Location, area: Buffer): void {
    location.area = area;
    location.checksums = checksumsOf(area, this.blocksPerChunk);
    this.checksumCache.delete(location);
    this.checksumCache.add(location);
    if (this.checksumCache.size <= checksumCacheSlotsMax) return;
    for (const candidate of this.checksumCache) {
      if (this.checksumCache.size <= checksumCacheSlotsMax) break;
      if (candidate.busy > 0 || candidate.device.dirtyAreas.has(candidate) || candidate.checksumWrite !== null || candidate.checksumWriteQueued !== null || candidate === location) continue;
      candidate.checksums = null;
      candidate.area = null;
      this.checksumCache.delete(candidate);
    }
  }

  /**
   * A change of the slot's checksums is in memory: its area goes to the device with the
   * next fdatasync (a flush, FUA, an allocation's or an open's), or sooner when the device
   * has many such areas or at the next slot check. Until then the slot is open, so a cut
   * that loses the area leaves blocks that recovery takes as torn writes (header), and a
   * read checks against memory.
   */
  private markAreaDirty(location: Location): void {
    if (!this.checksums || location.area === null) return;
    location.device.dirtyAreas.add(location);
    if (location.device.dirtyAreas.size >= dirtyAreasPerDeviceMax) this.writeDirtyAreasSoon(location.device);
  }

  /** Writes every dirty checksum area of the device (taken now); resolves when all are written. */
  private writeDirtyAreas(device: StoreDevice): Promise<void> {
    if (device.dirtyAreas.size === 0) return Promise.resolve();
    const areas = [...device.dirtyAreas];
    device.dirtyAreas.clear();
    return Promise.all(areas.map((location) => this.writeChecksumArea(location))).then(() => undefined);
  }

  /** writeDirtyAreas in the background: a failure has marked the device failed, and is logged. */
  private writeDirtyAreasSoon(device: StoreDevice): void {
    this.writeDirtyAreas(device).catch((err: unknown) => this.log.warn({ err, deviceId: device.deviceId }, 'writing checksum areas failed'));
  }

  /**
   * Writes the slot's checksum area from memory, with every change made before the call:
   * a write that starts after it (the one queued behind the write in flight, shared).
   */
  private writeChecksumArea(location: Location): Promise<void> {
    if (location.checksumWrite === null) return this.startChecksumWrite(location);
    if (location.checksumWriteQueued === null) {
      location.checksumWriteQueued = location.checksumWrite
        .catch(() => undefined)
        .then(() => {
          location.checksumWriteQueued = null;
          return this.startChecksumWrite(location);
        });
    }
    return location.checksumWriteQueued;
  }

  private startChecksumWrite(location: Location): Promise<void> {
    const area = location.area;
    // Freed meanwhile (releaseSlot): nothing to write. Changes made while this write is in
    // flight (the buffer is written from as it is) are written again by the queued one.
    if (area === null) return Promise.resolve();
    const write = this.writeFully(location.device, area, location.device.checksumAreaOffsetBytes(location.slot)).finally(() => {
      if (location.checksumWrite === write) location.checksumWrite = null;
    });
    location.checksumWrite = write;
    return write;
  }

  // --- open and closed slots ------------------------------------------------------------

  /** Writes the slot's entry as memory has it now, after any entry write of the slot in flight. */
  private writeEntry(location: Location): Promise<void> {
    const write = location.entryChain
      .catch(() => undefined)
      .then(() => this.writeFully(location.device, entryRecord(location), location.device.entryOffsetBytes(location.slot)));
    location.entryChain = write;
    return write;
  }

  /** A closed slot is opened before a change: its entry written open, then an fdatasync. */
  private ensureOpen(location: Location): Promise<void> {
    if (location.opening !== null) return location.opening;
    if (location.open) return Promise.resolve();
    location.open = true;
    location.device.openSlots.add(location);
    const opening = (async () => {
      await this.writeEntry(location);
      await this.syncAfterWrites(location.device);
    })().finally(() => {
      if (location.opening === opening) location.opening = null;
    });
    location.opening = opening;
    return opening;
  }

  private markWritten(location: Location): void {
    location.lastWriteSeq = ++location.device.writeSeq;
    location.lastWriteMs = Date.now();
  }

  /**
   * Closes open slots whose every change an fdatasync has made durable: those idle for
   * slotCloseIdleMs, and, on a device over openSlotsPerDeviceMax, the least recently
   * written others until it is not.
   */
  private closeIdleSlots(): void {
    const idleBeforeMs = Date.now() - slotCloseIdleMs;
    for (const device of this.devices) {
      if (device.state !== 'normal') continue;
      this.writeDirtyAreasSoon(device);
      const closable = [...device.openSlots].filter(
        (location) => location.busy === 0 && location.opening === null && !device.dirtyAreas.has(location) && location.checksumWrite === null && location.lastWriteSeq <= device.syncedSeq,
      );
      closable.sort((a, b) => a.lastWriteMs - b.lastWriteMs);
      let excess = device.openSlots.size - openSlotsPerDeviceMax;
      for (const location of closable) {
        if (location.lastWriteMs > idleBeforeMs && excess <= 0) break;
        excess -= 1;
        location.open = false;
        device.openSlots.delete(location);
        this.writeEntry(location).catch((err: unknown) => this.log.warn({ err, deviceId: device.deviceId, slot: location.slot }, 'closing a slot failed; it stays open'));
      }
    }
  }

  /** An fdatasync that begins after every write completed so far: the one queued behind the sync in flight, shared. */
  private syncAfterWrites(device: StoreDevice): Promise<void> {
    if (device.syncing === null) return this.syncDevice(device);
    if (device.syncQueued === null) {
      device.syncQueued = device.syncing
        .catch(() => undefined)
        .then(() => {
          device.syncQueued = null;
          return this.syncDevice(device);
        });
    }
    return device.syncQueued;
  }

  // --- device calls: every failure that means the device is bad marks it failed ----------

  private async readFully(device: StoreDevice, target: Buffer, positionBytes: number): Promise<void> {
    if (device.state === 'failed') throw this.failedError(device);
    try {
      await this.deviceCall(device, 'read', target.length, () => device.io.read(target, positionBytes));
    } catch (err) {
      if (err instanceof ShortReadError) throw this.markFailed(device, new StoreError('MB_ERR_DEVICE_SHORT', err.message));
      throw err;
    }
  }

  private async writeFully(device: StoreDevice, data: Buffer, positionBytes: number): Promise<void> {
    if (device.state === 'failed') throw this.failedError(device);
    device.dirty = true;
    await this.deviceCall(device, 'write', data.length, () => device.io.write(data, positionBytes));
    // Again once written: a flush that began while the write was in flight cleared the
    // mark, and its fdatasync may have missed the write.
    device.dirty = true;
  }

  private async zeroRange(device: StoreDevice, positionBytes: number, lengthBytes: number): Promise<void> {
    if (device.state === 'failed') throw this.failedError(device);
    device.dirty = true;
    await this.deviceCall(device, 'zero', lengthBytes, () => device.io.zero(positionBytes, lengthBytes));
    device.dirty = true; // as in writeFully
  }

  /** Gives a freed slot's space back: punch on files; discard on devices, ignored if unsupported. */
  private async discardRange(device: StoreDevice, positionBytes: number, lengthBytes: number): Promise<void> {
    if (device.state === 'failed') throw this.failedError(device);
    device.dirty = true;
    await this.deviceCall(device, 'discard', lengthBytes, () => device.io.discard(positionBytes, lengthBytes));
    device.dirty = true; // as in writeFully
  }

  private async syncDevice(device: StoreDevice): Promise<void> {
    if (device.state === 'failed') throw this.failedError(device);
    // Every change counted in seq marked its area dirty as it was counted (markAreaDirty,
    // then markWritten, in one turn), so the areas taken now include all of theirs: once
    // this sync is done, their checksums are durable with their data.
    const seq = device.writeSeq;
    // What completed before the fdatasync begins is covered by it, so the device is clean
    // from then on: at once when no area needs writing first.
    const areas = device.dirtyAreas.size === 0 ? null : this.writeDirtyAreas(device);
    if (areas === null) device.dirty = false;
    const sync = (async () => {
      if (areas !== null) {
        await areas;
        device.dirty = false;
      }
      await this.deviceCall(device, 'fdatasync', 0, () => device.io.sync());
    })();
    device.syncing = sync;
    try {
      await sync;
    } finally {
      if (device.syncing === sync) device.syncing = null;
    }
    device.syncedSeq = Math.max(device.syncedSeq, seq);
    // Freed slots whose zeroed entry this sync made durable may be discarded, then reused.
    const ready: number[] = [];
    while (device.pendingFree.length > 0 && (device.pendingFree[0] as { seq: number }).seq <= seq) ready.push((device.pendingFree.shift() as { slot: number }).slot);
    if (ready.length > 0) this.discardFreed(device, ready);
  }

  /**
   * One call on the device, counted in device.calls (`bytes` it moves; a sync none): two
   * clock reads (none with timing off: metrics.ts ioTiming) and a few additions, no
   * allocation. A failed call counts as an error of its kind.
   */
  private async deviceCall<T>(device: StoreDevice, what: DeviceCallOp, bytes: number, call: () => Promise<T>): Promise<T> {
    const counter = device.callCounters[what];
    const startMs = ioStartMs();
    try {
      const result = await call();
      counter.doneSince(bytes, startMs);
      return result;
    } catch (err) {
      counter.failed();
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== undefined && deviceFailureCodes.has(code)) {
        throw this.markFailed(device, new StoreError('MB_ERR_DEVICE_FAILED', `${device.path}: ${what} failed with ${code}; the device is marked failed`, { cause: err }));
      }
      throw err;
    }
  }

  private markFailed(device: StoreDevice, err: StoreError): StoreError {
    if (device.state !== 'failed') {
      device.state = 'failed';
      device.error = err.message;
      this.log.error({ err, deviceId: device.deviceId, path: device.path }, 'device failed: its chunks are no longer served from this SDS');
    }
    return err;
  }

  private failedError(device: StoreDevice): StoreError {
    return new StoreError('MB_ERR_DEVICE_FAILED', `${device.path} has failed (${device.error ?? 'unknown error'})`);
  }

  private checkRange(offsetBytes: number, lengthBytes: number): void {
    assert(offsetBytes >= 0 && lengthBytes >= 0 && offsetBytes + lengthBytes <= this.chunkBytes, `range ${offsetBytes}+${lengthBytes} is outside the chunk`);
  }

  /** A clean close: everything synced, then every slot closed and that synced too, so the next open verifies nothing. */
  async close(): Promise<void> {
    clearInterval(this.rateTimer);
    clearInterval(this.closeTimer);
    await Promise.allSettled([...this.allocating.values()]);
    for (const device of this.devices) {
      try {
        if (device.state === 'normal') {
          await this.syncDevice(device);
          const open = [...device.openSlots];
          for (const location of open) {
            await location.checksumWrite?.catch(() => undefined);
            location.open = false;
            device.openSlots.delete(location);
          }
          await Promise.all(open.map((location) => this.writeEntry(location)));
          if (open.length > 0) await this.syncDevice(device);
          await device.discarded;
          await device.zeroed;
        }
      } catch (err) {
        this.log.error({ err, deviceId: device.deviceId }, 'syncing and closing slots at close failed: the next open verifies the open ones');
      }
      closeIo(device);
      closeDevice(device.opened);
    }
  }
}

/** Lets go of the device IO's own resources (an AIO ring); logged, never thrown, at close. */
function closeIo(device: StoreDevice): void {
  try {
    device.io.close?.();
  } catch (err) {
    // IO still in flight at close (a failed device's): the ring is left to the process's end.
    void err;
  }
}

function newLocation(device: StoreDevice, slot: number, sequence: number, key: ChunkKey, open: boolean): Location {
  return {
    device,
    slot,
    sequence,
    key,
    seed: keySeed(key),
    open,
    opening: null,
    entryChain: Promise.resolve(),
    area: null,
    checksums: null,
    loading: null,
    checksumWrite: null,
    checksumWriteQueued: null,
    busy: 0,
    knownBad: null,
    lastWriteSeq: 0,
    lastWriteMs: 0,
  };
}

export function keyName(key: ChunkKey): string {
  return `${key.poolId}${key.vtreeId}:${key.chunkIndex}:${key.generation}`;
}

/** A chunk index of a volume tree, every generation: keyName() without the generation. */
export function chunkName(key: Pick<ChunkKey, 'poolId' | 'vtreeId' | 'chunkIndex'>): string {
  return `${key.poolId}${key.vtreeId}:${key.chunkIndex}`;
}

export function compareKeys(a: ChunkKey, b: ChunkKey): number {
  if (a.poolId !== b.poolId) return a.poolId < b.poolId ? -1 : 1;
  if (a.vtreeId !== b.vtreeId) return a.vtreeId < b.vtreeId ? -1 : 1;
  if (a.chunkIndex !== b.chunkIndex) return a.chunkIndex - b.chunkIndex;
  return a.generation - b.generation;
}

/** The key's 24 bytes as the entry and the checksum header hold them. */
function encodeKey(key: ChunkKey, target: Buffer, offset: number): void {
  target.write(key.poolId, offset, 8, 'hex');
  target.write(key.vtreeId, offset + 8, 8, 'hex');
  target.writeUInt32BE(key.chunkIndex, offset + 16);
  target.writeUInt32BE(key.generation, offset + 20);
}

function decodeKey(source: Buffer, offset: number): ChunkKey {
  return {
    poolId: source.toString('hex', offset, offset + 8),
    vtreeId: source.toString('hex', offset + 8, offset + 16),
    chunkIndex: source.readUInt32BE(offset + 16),
    generation: source.readUInt32BE(offset + 20),
  };
}

/** The seed of a key's block checksums: the CRC of its 24 bytes. */
export function keySeed(key: ChunkKey): number {
  const bytes = Buffer.alloc(24);
  encodeKey(key, bytes, 0);
  return crc32c(bytes);
}

/** The seeded CRC of each whole block of `bytes` into `checksums` from `firstBlock` on. */
function checksumBlocks(bytes: Buffer, seed: number, checksums: Uint32Array, firstBlock: number): void {
  crc32cBlocks(bytes, checksumBlockBytes, seed, checksums.subarray(firstBlock, firstBlock + bytes.length / checksumBlockBytes));
}

/**
 * The block indexes (from `firstBlock`) of `bytes` that fail their stored checksums: one
 * native call for the CRCs, then the comparison; a stored 0 over zeros is a never-written block.
 */
function failingBlocks(bytes: Buffer, seed: number, checksums: Uint32Array, firstBlock: number): number[] {
  const blocks = bytes.length / checksumBlockBytes;
  const computed = new Uint32Array(blocks);
  crc32cBlocks(bytes, checksumBlockBytes, seed, computed);
  const bad: number[] = [];
  for (let block = 0; block < blocks; block++) {
    const stored = checksums[firstBlock + block] as number;
    if (computed[block] === stored) continue;
    if (stored === 0 && bytes.subarray(block * checksumBlockBytes, (block + 1) * checksumBlockBytes).equals(zeroBlock)) continue;
    bad.push(firstBlock + block);
  }
  return bad;
}

/** Block indexes (sorted) as contiguous byte ranges. */
function blockRanges(blocks: readonly number[]): Array<{ offsetBytes: number; lengthBytes: number }> {
  const ranges: Array<{ offsetBytes: number; lengthBytes: number }> = [];
  for (const block of blocks) {
    const last = ranges[ranges.length - 1];
    if (last !== undefined && last.offsetBytes + last.lengthBytes === block * checksumBlockBytes) last.lengthBytes += checksumBlockBytes;
    else ranges.push({ offsetBytes: block * checksumBlockBytes, lengthBytes: checksumBlockBytes });
  }
  return ranges;
}

function encodeEntry(location: Location): Buffer {
  const entry = Buffer.alloc(slotEntryBytes);
  entry.writeUInt8(1, 4);
  entry.writeUInt8(location.open ? entryFlagOpen : 0, 5);
  entry.writeBigUInt64BE(BigInt(location.sequence), 8);
  encodeKey(location.key, entry, 16);
  entry.writeUInt32BE(crc32c(entry.subarray(4)), 0);
  return entry;
}

/** The entry as written to the device: padded with zeros to its whole record (StoreDevice.entryStrideBytes). */
function entryRecord(location: Location): Buffer {
  const entry = encodeEntry(location);
  const stride = location.device.entryStrideBytes;
  if (stride === entry.length) return entry;
  const record = Buffer.alloc(stride);
  entry.copy(record);
  return record;
}

function decodeEntry(entry: Buffer): 'free' | 'damaged' | { sequence: number; key: ChunkKey; open: boolean } {
  if (entry.every((byte) => byte === 0)) return 'free';
  if (crc32c(entry.subarray(4)) !== entry.readUInt32BE(0) || entry.readUInt8(4) !== 1) return 'damaged';
  return { sequence: Number(entry.readBigUInt64BE(8)), key: decodeKey(entry, 16), open: (entry.readUInt8(5) & entryFlagOpen) !== 0 };
}

/**
 * A slot's checksum area for `key`: its header, then every block CRC 0 (never written). The
 * CRCs are stored little-endian, as the array over them (checksumsOf) holds them, so that a
 * change is one store into memory and the area is written from that memory as it is.
 */
function newChecksumArea(key: ChunkKey, blocks: number, strideBytes: number): Buffer {
  assert(strideBytes >= checksumHeaderBytes + blocks * 4, 'a checksum area fits its record');
  // Not from Buffer's pool: the array over it needs its own 4-aligned ArrayBuffer. The
  // padding to the record's size stays zeros.
  const area = Buffer.alloc(strideBytes);
  encodeKey(key, area, 8);
  area.writeUInt32BE(crc32c(area.subarray(4, checksumHeaderBytes)), 0);
  return area;
}

/** The block CRCs of a checksum area, over its bytes. */
function checksumsOf(area: Buffer, blocks: number): Uint32Array {
  return new Uint32Array(area.buffer, area.byteOffset + checksumHeaderBytes, blocks);
}

/** The key a checksum header names, or null when the header is blank or damaged. */
function decodeChecksumHeader(header: Buffer): ChunkKey | null {
  if (header.every((byte) => byte === 0)) return null;
  if (crc32c(header.subarray(4, checksumHeaderBytes)) !== header.readUInt32BE(0)) return null;
  return decodeKey(header, 8);
}
