// The chunk store: an SDS's devices cut into fixed chunk slots, and the index from chunk
// keys to slots. Space is taken on first write (thin); a chunk that was never written, or
// was trimmed whole, reads as zeros without touching a device.
//
// On-device layout (device.ts writes the superblock and sizes the table):
//
//   0                 4 KiB              dataOffsetBytes (MiB-aligned)
//   +-----------------+------------------+---------+---------+-----+---------------+
//   | superblock      | slot table       | slot 0  | slot 1  | ... | slot N-1      |
//   +-----------------+------------------+---------+---------+-----+---------------+
//                      N entries x 64 B    chunkBytes each
//
// A slot-table entry describes its slot (64 bytes, big-endian):
//
//   offset  size  field        notes
//   ------  ----  -----------  -------------------------------------------------------------
//        0     4  crc32c       CRC-32C of bytes 4..63
//        4     1  state        1 = holds a chunk; an all-zero entry is a free slot
//        5     3  reserved     0
//        8     8  sequence     store-wide, increasing: if two slots claim one key after a
//                              crash, the higher sequence wins and the other is freed
//       16     8  poolId       the key: pool, volume tree, chunk index and generation
//       24     8  vtreeId
//       32     4  chunkIndex
//       36     4  generation
//       40    24  reserved     0 (room for snapshot bookkeeping)
//
// Crash safety without a journal: every change of the index is one entry write of 64
// bytes, inside one 512-byte sector, so it lands whole or not at all, and the entry is the
// index — there is nothing else to keep consistent with it. Ordering makes every crash
// point safe:
//   allocate: zero the slot, then write its entry, then the data. A crash between leaves a
//             chunk that reads as zeros where the unacknowledged write did not land.
//   free:     drop the key from memory, zero the entry, then punch or discard the slot, and
//             only then give the slot back to the free list.
// A flush (or FUA) fdatasyncs the devices written since the last one, entries and data
// alike, so everything acknowledged after it survives a crash of the process or the host.
// A damaged entry (bad checksum) is reported and its slot is never reused; the chunk it
// held is lost on this copy and has to come back from the mirror (rebuild).
//
// Snapshots (docs/snapshots.md): a key has a generation, and a volume tree's generations
// form a tree the placement map carries. The store itself only knows exact keys; the
// *Resolved / shadowing calls below take a generation path (head first, then its parents,
// from generationPath()) so that a volume reads chunk i from the nearest generation that
// holds it, and a head that first writes a chunk an ancestor holds gets a copy of it (copy
// on write, decided by the service, which also mirrors the copy). A key that hides an
// ancestor's chunk needs one more order than the allocate above:
//   shadow:   write the slot's whole content (the ancestor's bytes merged with the write, or
//             zeros), fdatasync that device, and only then write the entry. The entry is
//             what makes the head stop reading the ancestor, so it must never land before
//             the bytes it points to: a crash before the entry is durable leaves the head
//             reading the ancestor (the unacknowledged write is lost, nothing else); after,
//             the slot's content is already durable. The zero-then-entry order of a plain
//             allocation would, after a power cut, let a head read zeros (or a freed slot's
//             old bytes) where it had read its ancestor's acknowledged data.
// Chunks are shared between a volume and its snapshots by this lookup rule, so an entry
// never needs a reference count; a key no head resolves to is garbage (the SDS frees it,
// generation-gc.ts). A key being read through another generation is pinned meanwhile, so
// that freeing it waits for the read (the read holds the range lock of its own key only).

import * as fs from 'node:fs';
import type { Logger } from 'pino';
import { assert } from '../common/assert.js';
import { crc32c } from '../common/crc32c.js';
import { MeshblockError } from '../common/errors.js';
import { ShortReadError } from '../common/positional-io.js';
import { nativeDeviceIo, type DeviceIo, type DeviceIoFactory } from './device-io.js';
import { openDevice, slotEntryBytes, type DeviceOwner, type OpenedDevice } from './device.js';
import { rateWindowMs } from '../common/limits.js';

export interface ChunkKey {
  poolId: string;
  vtreeId: string;
  chunkIndex: number;
  generation: number;
}

export class StoreError extends MeshblockError {}

/** errno names that mean the device itself cannot be trusted any more. */
const deviceFailureCodes = new Set(['EIO', 'ENOSPC', 'EROFS', 'ENXIO', 'ENODEV', 'EDQUOT', 'EBADF']);
const slotTableReadBytes = 1024 * 1024;

/** The generations of one chunk index of a volume tree held here. */
export interface HeldChunk {
  poolId: string;
  vtreeId: string;
  chunkIndex: number;
  generations: Set<number>;
}

/**
 * What goes into a new slot before its entry is written: zeros (a partial first write; the
 * rest reads as zeros), nothing (a whole-chunk write follows), or the shadow order of the
 * header (the slot's whole content, an fdatasync, then the entry).
 */
type SlotFill = 'zeros' | null | { shadow: Buffer | 'zeros' };

interface Location {
  device: StoreDevice;
  slot: number;
  sequence: number;
  key: ChunkKey;
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

export class StoreDevice {
  state: 'normal' | 'failed' = 'normal';
  error: string | null = null;
  /** Written since the last fdatasync began. */
  dirty = false;
  /** The fdatasync in flight: a flush that finds the device clean still waits for it. */
  syncing: Promise<void> | null = null;
  readonly freeSlots: number[] = [];
  usedSlotCount = 0;
  damagedSlotCount = 0;
  readonly counters = zeroCounters();
  /** Rates over the last completed window. */
  rates = zeroCounters();
  private windowStart = zeroCounters();

  readonly io: DeviceIo;

  constructor(
    readonly opened: OpenedDevice,
    log: Logger,
    ioFactory: DeviceIoFactory,
  ) {
    this.io = ioFactory(opened, log);
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

  slotOffsetBytes(slot: number): number {
    return this.opened.superblock.dataOffsetBytes + slot * this.opened.superblock.chunkBytes;
  }

  entryOffsetBytes(slot: number): number {
    return this.opened.superblock.slotTableOffsetBytes + slot * slotEntryBytes;
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
}

export class ChunkStore {
  private readonly index = new Map<string, Location>();
  /** Chunks whose copy here went with a failed device and was then only partly rewritten: never read. */
  private readonly lostKeys = new Map<string, ChunkKey>();
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
  private nextSequence = 1;
  private readonly rateTimer: NodeJS.Timeout;

  private constructor(
    readonly devices: StoreDevice[],
    readonly chunkBytes: number,
    private readonly log: Logger,
    reservations: Map<string, number>,
    private readonly options: ChunkStoreOptions,
  ) {
    this.reservations = reservations;
    this.rateTimer = setInterval(() => {
      for (const device of this.devices) device.sampleRates(rateWindowMs);
    }, rateWindowMs).unref();
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
    const opened = await openDevice(path, this.options.owner, { force: options.force, chunkBytes: this.chunkBytes });
    if (this.devices.some((device) => device.deviceId === opened.superblock.deviceId)) {
      fs.closeSync(opened.fd);
      throw new StoreError('MB_ERR_DEVICE_DUPLICATE', `${path} is device ${opened.superblock.deviceId}, which is already open under another path`);
    }
    const device = new StoreDevice(opened, this.log, this.options.deviceIo ?? nativeDeviceIo);
    try {
      await this.loadSlotTable(device);
    } catch (err) {
      fs.closeSync(opened.fd);
      throw err;
    }
    this.devices.push(device);
    return device;
  }

  private async loadSlotTable(device: StoreDevice): Promise<void> {
    const entriesPerRead = slotTableReadBytes / slotEntryBytes;
    const buffer = Buffer.allocUnsafe(slotTableReadBytes);
    const duplicates: Location[] = [];
    for (let first = 0; first < device.slotCount; first += entriesPerRead) {
      const count = Math.min(entriesPerRead, device.slotCount - first);
      await this.readFully(device, buffer.subarray(0, count * slotEntryBytes), device.entryOffsetBytes(first));
      // Free slots are pushed in reverse so that allocation pops them in ascending order.
      for (let entryIndex = count - 1; entryIndex >= 0; entryIndex--) {
        const slot = first + entryIndex;
        const entry = buffer.subarray(entryIndex * slotEntryBytes, (entryIndex + 1) * slotEntryBytes);
        const decoded = decodeEntry(entry);
        if (decoded === 'free') {
          device.freeSlots.push(slot);
          continue;
        }
        if (decoded === 'damaged') {
          device.damagedSlotCount += 1;
          this.log.error({ deviceId: device.deviceId, path: device.path, slot }, 'damaged slot-table entry: the chunk it held is lost on this copy; the slot is not reused');
          continue;
        }
        device.usedSlotCount += 1;
        this.nextSequence = Math.max(this.nextSequence, decoded.sequence + 1);
        const location: Location = { device, slot, sequence: decoded.sequence, key: decoded.key };
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
    // The free list was built from the highest slot down; reverse once so pop() gives the lowest.
    device.freeSlots.reverse();
    for (const stale of duplicates) {
      this.log.warn({ deviceId: stale.device.deviceId, slot: stale.slot, key: stale.key }, 'two slots held one chunk (a crash during a move); freeing the older');
      await this.releaseSlot(stale);
    }
  }

  // --- IO ------------------------------------------------------------------------------

  /** Reads `target.length` bytes at `offsetBytes` of the chunk; unwritten chunks read as zeros. */
  async read(key: ChunkKey, offsetBytes: number, target: Buffer): Promise<void> {
    this.checkRange(offsetBytes, target.length);
    if (this.lostKeys.has(keyName(key))) {
      throw new StoreError('MB_ERR_DEVICE_FAILED', `this copy of chunk ${keyName(key)} was on a failed device and is incomplete until it is rewritten whole`);
    }
    const location = this.index.get(keyName(key)) ?? (await this.allocating.get(keyName(key)));
    if (location === undefined) {
      target.fill(0);
      return;
    }
    await this.readFully(location.device, target, location.device.slotOffsetBytes(location.slot) + offsetBytes);
    location.device.counters.reads += 1;
    location.device.counters.readBytes += target.length;
  }

  async write(key: ChunkKey, offsetBytes: number, data: Buffer, options: { fua: boolean; preferDeviceId?: string | undefined }): Promise<void> {
    this.checkRange(offsetBytes, data.length);
    const whole = offsetBytes === 0 && data.length === this.chunkBytes;
    const found = await this.locate(key, { create: true, fill: whole ? null : 'zeros', whole, preferDeviceId: options.preferDeviceId });
    assert(found !== null, 'locate with create returns a slot');
    const { location } = found;
    await this.writeFully(location.device, data, location.device.slotOffsetBytes(location.slot) + offsetBytes);
    if (whole) {
      this.lostKeys.delete(keyName(key));
      this.touched(key);
    }
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
    const location = (await this.locate(key, { create: false, fill: null, whole }))?.location ?? null;
    if (whole) {
      this.lostKeys.delete(keyName(key));
      this.touched(key);
    }
    if (location === null) return;
    if (offsetBytes === 0 && lengthBytes === this.chunkBytes) {
      this.index.delete(keyName(key));
      this.touched(key);
      this.countAllocated(key.vtreeId, -1);
      await this.releaseSlot(location);
    } else {
      await this.zeroRange(location.device, location.device.slotOffsetBytes(location.slot) + offsetBytes, lengthBytes);
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
    const syncs = live.map((device) => (device.dirty ? this.syncDevice(device) : device.syncing));
    await Promise.all(syncs.filter((sync): sync is Promise<void> => sync !== null));
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
    const found = await this.locate(key, { create: true, fill: { shadow: content }, whole: true, preferDeviceId: options.preferDeviceId });
    assert(found !== null, 'locate with create returns a slot');
    const { location } = found;
    const offsetBytes = location.device.slotOffsetBytes(location.slot);
    if (!found.fresh) {
      if (content === 'zeros') await this.zeroRange(location.device, offsetBytes, this.chunkBytes);
      else await this.writeFully(location.device, content, offsetBytes);
    }
    this.lostKeys.delete(keyName(key));
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
    this.lostKeys.delete(name);
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
    for (const [name, key] of this.lostKeys) if (!this.index.has(name) && filter(key)) keys.push(key);
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
    return this.devices.reduce((sum, device) => sum + (device.state === 'normal' ? device.freeSlots.length : 0), 0);
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
  private async locate(key: ChunkKey, options: { create: boolean; fill: SlotFill; whole: boolean; preferDeviceId?: string | undefined }): Promise<{ location: Location; fresh: boolean } | null> {
    const name = keyName(key);
    const found = this.index.get(name) ?? (await this.allocating.get(name));
    if (found !== undefined) {
      if (found.device.state !== 'failed') return { location: found, fresh: false };
      if (this.index.get(name) === found) {
        this.index.delete(name);
        this.countAllocated(key.vtreeId, -1);
        if (!options.whole) this.lostKeys.set(name, key);
        this.touched(key);
      }
      if (!options.create) return null;
    }
    if (!options.create) return null;
    const again = this.index.get(name) ?? this.allocating.get(name);
    // Another caller's allocation: its fill, not ours, went into the slot (`fresh` false).
    if (again !== undefined) return { location: await again, fresh: false };
    const allocation = this.allocate(key, options.fill, options.preferDeviceId);
    this.allocating.set(name, allocation);
    this.touched(key);
    try {
      return { location: await allocation, fresh: true };
    } finally {
      this.allocating.delete(name);
      this.touched(key);
    }
  }

  private async allocate(key: ChunkKey, fill: SlotFill, preferDeviceId: string | undefined): Promise<Location> {
    const reserved = Math.max(0, (this.reservations.get(key.vtreeId) ?? 0) - (this.allocatedByVtree.get(key.vtreeId) ?? 0));
    if (reserved === 0 && this.unreservedFreeSlots() <= 0) {
      throw new StoreError('MB_ERR_NO_SPACE', `no free chunk slot on this SDS (${this.reservedUnusedSlots()} slots are reserved for thick volumes)`);
    }
    const healthy = this.devices.filter((device) => device.state === 'normal' && device.freeSlots.length > 0);
    const preferred = healthy.find((device) => device.deviceId === preferDeviceId);
    const device = preferred ?? healthy.reduce<StoreDevice | undefined>((best, device) => (best === undefined || device.freeSlots.length > best.freeSlots.length ? device : best), undefined);
    if (device === undefined) throw new StoreError('MB_ERR_NO_SPACE', 'no healthy device with a free chunk slot');
    const slot = device.freeSlots.pop();
    assert(slot !== undefined, 'the chosen device has a free slot');
    this.countAllocated(key.vtreeId, 1);
    const location: Location = { device, slot, sequence: this.nextSequence++, key };
    try {
      if (fill === 'zeros') {
        await this.zeroRange(device, device.slotOffsetBytes(slot), this.chunkBytes);
      } else if (fill !== null) {
        // The shadow order (header): content, fdatasync, and only then the entry.
        if (fill.shadow === 'zeros') await this.zeroRange(device, device.slotOffsetBytes(slot), this.chunkBytes);
        else await this.writeFully(device, fill.shadow, device.slotOffsetBytes(slot));
        await this.syncDevice(device);
      }
      await this.writeFully(device, encodeEntry(location), device.entryOffsetBytes(slot));
    } catch (err) {
      this.countAllocated(key.vtreeId, -1);
      // The slot's state is unknown after a failed entry write; a failed device is not reused anyway.
      if (device.state === 'normal') device.freeSlots.push(slot);
      throw err;
    }
    device.usedSlotCount += 1;
    this.index.set(keyName(key), location);
    return location;
  }

  private async releaseSlot(location: Location): Promise<void> {
    const { device, slot } = location;
    await this.writeFully(device, Buffer.alloc(slotEntryBytes), device.entryOffsetBytes(slot));
    await this.discardRange(device, device.slotOffsetBytes(slot), this.chunkBytes);
    device.usedSlotCount -= 1;
    device.freeSlots.push(slot);
  }

  // --- device calls: every failure that means the device is bad marks it failed ----------

  private async readFully(device: StoreDevice, target: Buffer, positionBytes: number): Promise<void> {
    if (device.state === 'failed') throw this.failedError(device);
    try {
      await this.deviceCall(device, 'read', () => device.io.read(target, positionBytes));
    } catch (err) {
      if (err instanceof ShortReadError) throw this.markFailed(device, new StoreError('MB_ERR_DEVICE_SHORT', err.message));
      throw err;
    }
  }

  private async writeFully(device: StoreDevice, data: Buffer, positionBytes: number): Promise<void> {
    if (device.state === 'failed') throw this.failedError(device);
    device.dirty = true;
    await this.deviceCall(device, 'write', () => device.io.write(data, positionBytes));
    // Again once written: a flush that began while the write was in flight cleared the
    // mark, and its fdatasync may have missed the write.
    device.dirty = true;
  }

  private async zeroRange(device: StoreDevice, positionBytes: number, lengthBytes: number): Promise<void> {
    if (device.state === 'failed') throw this.failedError(device);
    device.dirty = true;
    await this.deviceCall(device, 'zero', () => device.io.zero(positionBytes, lengthBytes));
    device.dirty = true; // as in writeFully
  }

  /** Gives a freed slot's space back: punch on files; discard on devices, ignored if unsupported. */
  private async discardRange(device: StoreDevice, positionBytes: number, lengthBytes: number): Promise<void> {
    if (device.state === 'failed') throw this.failedError(device);
    device.dirty = true;
    await this.deviceCall(device, 'discard', () => device.io.discard(positionBytes, lengthBytes));
    device.dirty = true; // as in writeFully
  }

  private async syncDevice(device: StoreDevice): Promise<void> {
    if (device.state === 'failed') throw this.failedError(device);
    device.dirty = false;
    const sync = this.deviceCall(device, 'fdatasync', () => device.io.sync());
    device.syncing = sync;
    try {
      await sync;
    } finally {
      if (device.syncing === sync) device.syncing = null;
    }
  }

  private async deviceCall<T>(device: StoreDevice, what: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
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

  async close(): Promise<void> {
    clearInterval(this.rateTimer);
    await Promise.allSettled([...this.allocating.values()]);
    for (const device of this.devices) {
      try {
        if (device.dirty && device.state === 'normal') await device.io.sync();
      } catch (err) {
        this.log.error({ err, deviceId: device.deviceId }, 'fdatasync at close failed');
      }
      fs.closeSync(device.opened.fd);
    }
  }
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

function encodeEntry(location: Location): Buffer {
  const entry = Buffer.alloc(slotEntryBytes);
  entry.writeUInt8(1, 4);
  entry.writeBigUInt64BE(BigInt(location.sequence), 8);
  entry.write(location.key.poolId, 16, 8, 'hex');
  entry.write(location.key.vtreeId, 24, 8, 'hex');
  entry.writeUInt32BE(location.key.chunkIndex, 32);
  entry.writeUInt32BE(location.key.generation, 36);
  entry.writeUInt32BE(crc32c(entry.subarray(4)), 0);
  return entry;
}

function decodeEntry(entry: Buffer): 'free' | 'damaged' | { sequence: number; key: ChunkKey } {
  if (entry.every((byte) => byte === 0)) return 'free';
  if (crc32c(entry.subarray(4)) !== entry.readUInt32BE(0) || entry.readUInt8(4) !== 1) return 'damaged';
  return {
    sequence: Number(entry.readBigUInt64BE(8)),
    key: {
      poolId: entry.toString('hex', 16, 24),
      vtreeId: entry.toString('hex', 24, 32),
      chunkIndex: entry.readUInt32BE(32),
      generation: entry.readUInt32BE(36),
    },
  };
}

