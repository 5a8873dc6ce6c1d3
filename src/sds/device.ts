// Opening a device for an SDS: a raw block device or a regular file standing in for one.
// A device is recognised by its superblock; a blank device is formatted; anything else on
// it (a partition table, a filesystem, an LVM label, another cluster's superblock, ...) is
// refused with what was found, unless forced: "previous formatting must be removed first".

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { alignedBuffer } from '../common/aligned-buffers.js';
import { MeshblockError } from '../common/errors.js';
import * as native from '../common/native.js';
import type { DeviceIoMode } from '../wire/sds-ops.js';
import { MiB } from '../common/units.js';
import { isUnsupported, writeZeros } from './device-io.js';
import { probeFormats, probeHeadBytes, type Found } from './device-probe.js';
import { encodeSuperblock, superblockBytes, type Superblock } from './superblock.js';
import { chunkBytesDefault, deviceBytesMin } from '../common/limits.js';

/** Bytes per slot-table entry (chunk-store.ts draws it). */
export const slotEntryBytes = 64;
/** Bytes of chunk data one stored checksum covers. */
export const checksumBlockBytes = 4096;
/** Each slot's checksum area: a 32-byte header (a copy of its key), then 4 bytes per block. */
export const checksumHeaderBytes = 32;

export function checksumAreaBytes(chunkBytes: number): number {
  return checksumHeaderBytes + (chunkBytes / checksumBlockBytes) * 4;
}

/**
 * Where one slot's entry and checksum area sit: padded to whole sectors on a device
 * formatted for direct IO (sectorBytes, superblock version 3), packed on an older one
 * (sectorBytes 0). The chunk store reads and writes each record whole, stride bytes.
 */
export function metadataStrides(sectorBytes: number, chunkBytes: number): { entryStrideBytes: number; areaStrideBytes: number } {
  if (sectorBytes === 0) return { entryStrideBytes: slotEntryBytes, areaStrideBytes: checksumAreaBytes(chunkBytes) };
  return { entryStrideBytes: alignUp(slotEntryBytes, sectorBytes), areaStrideBytes: alignUp(checksumAreaBytes(chunkBytes), sectorBytes) };
}

/** How an SDS is asked to do device IO (sds start --io): direct where it can, or as said. */
export type DeviceIoRequest = 'auto' | DeviceIoMode;
export const deviceIoRequests: readonly DeviceIoRequest[] = ['auto', 'direct', 'buffered'];
/** The sector size metadata is padded to when nothing larger is needed. */
const sectorBytesMin = 512;
/** The slot table starts after the superblock; the data area at a MiB boundary after it. */
const slotTableOffsetBytes = superblockBytes;
const dataAlignBytes = 1 * MiB;
/** Forced formatting zeroes this much at both ends (signatures, GPT and its backup copy). */
const wipeBytes = 1 * MiB;

export interface DeviceOwner {
  clusterId: string;
  sdsId: string;
  sdsName: string;
}

export interface OpenedDevice {
  /** Opened through the page cache: probing, formatting, and ioctls (zeroout, discard). */
  fd: number;
  /** Opened O_DIRECT for the chunk store's IO; null when it goes through the page cache. */
  directFd: number | null;
  /** Direct IO's unit of position and length on this device (its logical sector, at least the format's). */
  sectorBytes: number;
  io: DeviceIoMode;
  /** Why the IO is not direct (null when it is). */
  ioReason: string | null;
  path: string;
  sizeBytes: number;
  isBlockDevice: boolean;
  superblock: Superblock;
  /** True when this open formatted the device; false when it recognised its superblock. */
  formatted: boolean;
}

export class DeviceError extends MeshblockError {}

export class DeviceFormattedError extends DeviceError {
  constructor(
    readonly path: string,
    readonly found: readonly Found[],
  ) {
    super(
      'MB_ERR_DEVICE_FORMATTED',
      `${path}: refusing to add a device that holds ${found.map((entry) => entry.description).join(' and ')}; ` +
        'previous formatting must be removed first (wipefs --all), or add it with --force to destroy it',
    );
  }
}

export async function openDevice(
  path: string,
  owner: DeviceOwner,
  options: { force: boolean; chunkBytes?: number; io?: DeviceIoRequest },
): Promise<OpenedDevice> {
  const opened = await openAndFormat(path, owner, options);
  try {
    return { ...opened, ...chooseIo(opened, options.io ?? 'auto') };
  } catch (err) {
    fs.closeSync(opened.fd);
    throw err;
  }
}

/** Closes what openDevice opened. */
export function closeDevice(opened: OpenedDevice): void {
  if (opened.directFd !== null) fs.closeSync(opened.directFd);
  fs.closeSync(opened.fd);
}

type RecognisedDevice = Omit<OpenedDevice, 'directFd' | 'sectorBytes' | 'io' | 'ioReason'>;

async function openAndFormat(path: string, owner: DeviceOwner, options: { force: boolean; chunkBytes?: number }): Promise<RecognisedDevice> {
  let fd: number;
  try {
    fd = fs.openSync(path, fs.constants.O_RDWR);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'no such file or device' : code === 'EACCES' ? 'permission denied' : code === 'EBUSY' ? 'device is busy (mounted or in use)' : (err as Error).message;
    throw new DeviceError('MB_ERR_DEVICE_OPEN', `${path}: ${reason}`, { cause: err });
  }
  try {
    const stat = fs.fstatSync(fd);
    const isBlockDevice = stat.isBlockDevice();
    if (!isBlockDevice && !stat.isFile()) throw new DeviceError('MB_ERR_DEVICE_OPEN', `${path}: not a block device or a regular file`);
    const sizeBytes = isBlockDevice ? native.blockDeviceSizeBytes(fd) : stat.size;
    // No readahead: chunk reads are exactly what the SDC asked for, and readahead's large
    // page-cache folios make every later 4 KiB write into them ~10x dearer. Advice only: a
    // device that refuses it works as before.
    native.adviseRandom(fd);
    if (sizeBytes < deviceBytesMin) {
      throw new DeviceError('MB_ERR_DEVICE_TOO_SMALL', `${path}: ${sizeBytes} bytes is below the ${deviceBytesMin}-byte minimum`);
    }
    const head = Buffer.alloc(Math.min(probeHeadBytes, sizeBytes));
    fs.readSync(fd, head, 0, head.length, 0);
    const found = probeFormats(head);

    const ours = found.find((entry) => entry.superblock !== undefined);
    if (ours?.superblock !== undefined && found.length === 1) {
      const superblock = ours.superblock;
      if (superblock.clusterId === owner.clusterId && superblock.sdsId === owner.sdsId) {
        if (options.chunkBytes !== undefined && superblock.chunkBytes !== options.chunkBytes) {
          throw new DeviceError('MB_ERR_DEVICE_CHUNK_SIZE', `${path}: formatted for ${superblock.chunkBytes}-byte chunks, this SDS uses ${options.chunkBytes}`);
        }
        if (sizeBytes < superblock.deviceSizeBytes) {
          throw new DeviceError('MB_ERR_DEVICE_SHRUNK', `${path}: the device shrank from ${superblock.deviceSizeBytes} to ${sizeBytes} bytes since it was formatted`);
        }
        if (superblock.checksumBlockBytes !== checksumBlockBytes) {
          throw new DeviceError('MB_ERR_DEVICE_FORMAT', `${path}: formatted with ${superblock.checksumBlockBytes}-byte checksum blocks, this meshblock uses ${checksumBlockBytes}`);
        }
        return { fd, path, sizeBytes, isBlockDevice, superblock, formatted: false };
      }
    }
    if (found.length > 0 && !options.force) throw new DeviceFormattedError(path, found);

    const chunkBytes = options.chunkBytes ?? chunkBytesDefault;
    const sectorBytes = Math.max(sectorBytesMin, directSectorBytes(path, isBlockDevice ? native.logicalBlockSize(fd) : 0) ?? sectorBytesMin);
    const layout = slotLayout(sizeBytes, chunkBytes, sectorBytes);
    if (layout.slotCount < 1) throw new DeviceError('MB_ERR_DEVICE_TOO_SMALL', `${path}: no room for one ${chunkBytes}-byte chunk`);
    const superblock: Superblock = {
      clusterId: owner.clusterId,
      sdsId: owner.sdsId,
      deviceId: randomBytes(8).toString('hex'),
      deviceSizeBytes: sizeBytes,
      dataOffsetBytes: layout.dataOffsetBytes,
      formattedAtMs: Date.now(),
      sdsName: owner.sdsName,
      chunkBytes,
      slotCount: layout.slotCount,
      slotTableOffsetBytes,
      checksumTableOffsetBytes: layout.checksumTableOffsetBytes,
      checksumBlockBytes,
      sectorBytes,
    };
    const zeroes = Buffer.alloc(wipeBytes);
    fs.writeSync(fd, zeroes, 0, Math.min(wipeBytes, sizeBytes), Math.max(0, sizeBytes - wipeBytes));
    // The whole metadata area reads as zeros afterwards: an all-zero slot entry is a free slot.
    if (isBlockDevice) await native.zeroout(fd, 0, layout.dataOffsetBytes);
    else {
      await native.fallocate(fd, native.FALLOC_FL_PUNCH_HOLE | native.FALLOC_FL_KEEP_SIZE, 0, layout.dataOffsetBytes).catch(async (err: unknown) => {
        // A filesystem that cannot punch holes (ramfs): zeros written instead.
        if (!isUnsupported(err)) throw err;
        await writeZeros(async (bytes, at) => void fs.writeSync(fd, bytes, 0, bytes.length, at), 0, layout.dataOffsetBytes);
      });
    }
    fs.writeSync(fd, encodeSuperblock(superblock), 0, superblockBytes, 0);
    fs.fdatasyncSync(fd);
    return { fd, path, sizeBytes, isBlockDevice, superblock, formatted: true };
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

/**
 * Where the checksum table and the data area start and how many chunk slots fit, for a
 * device of `sizeBytes`: the slot table, then (4 KiB-aligned) the checksum table, then (MiB-
 * aligned) the slots.
 */
export function slotLayout(sizeBytes: number, chunkBytes: number, sectorBytes: number): { slotCount: number; checksumTableOffsetBytes: number; dataOffsetBytes: number } {
  const { entryStrideBytes, areaStrideBytes } = metadataStrides(sectorBytes, chunkBytes);
  const layout = (slotCount: number): { slotCount: number; checksumTableOffsetBytes: number; dataOffsetBytes: number } => {
    const checksumTableOffsetBytes = alignUp(slotTableOffsetBytes + slotCount * entryStrideBytes, checksumBlockBytes);
    const dataOffsetBytes = alignUp(checksumTableOffsetBytes + slotCount * areaStrideBytes, dataAlignBytes);
    return { slotCount, checksumTableOffsetBytes, dataOffsetBytes };
  };
  const fits = (slotCount: number): boolean => layout(slotCount).dataOffsetBytes + slotCount * chunkBytes <= sizeBytes;
  // A first guess that ignores the alignment padding, then corrected by single steps.
  const perSlotBytes = chunkBytes + entryStrideBytes + areaStrideBytes;
  let slotCount = Math.max(0, Math.floor((sizeBytes - slotTableOffsetBytes) / perSlotBytes));
  while (slotCount > 0 && !fits(slotCount)) slotCount -= 1;
  while (fits(slotCount + 1)) slotCount += 1;
  return layout(slotCount);
}

/**
 * How the device is to be read and written: through an O_DIRECT descriptor when asked (or
 * by default) and possible, else the page cache. 'direct' that cannot be done is an error
 * naming the device and the way out; 'auto' falls back to the page cache and says why.
 */
function chooseIo(opened: RecognisedDevice, request: DeviceIoRequest): Pick<OpenedDevice, 'directFd' | 'sectorBytes' | 'io' | 'ioReason'> {
  const buffered = (reason: string): Pick<OpenedDevice, 'directFd' | 'sectorBytes' | 'io' | 'ioReason'> => {
    if (request === 'direct') throw new DeviceError('MB_ERR_DEVICE_DIRECT_IO', `${opened.path}: cannot do direct IO: ${reason}; start the SDS with --io buffered (or --io auto) to use the page cache`);
    return { directFd: null, sectorBytes: sectorBytesMin, io: 'buffered', ioReason: reason };
  };
  if (request === 'buffered') return buffered('asked for (--io buffered)');
  if (opened.superblock.sectorBytes === 0) {
    return buffered('formatted by an older meshblock (format version 2, metadata not in whole sectors); remove the device and add it again with --force to use direct IO (its chunks are rebuilt from their other copies)');
  }
  let directFd: number;
  try {
    directFd = fs.openSync(opened.path, fs.constants.O_RDWR | fs.constants.O_DIRECT);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'an error';
    return buffered(code === 'EINVAL' ? 'its filesystem refuses O_DIRECT (EINVAL; ramfs, or tmpfs before Linux 6.6)' : `opening it O_DIRECT failed: ${code}`);
  }
  const logical = opened.isBlockDevice ? native.logicalBlockSize(opened.fd) : 0;
  const needed = directSectorBytesOf(directFd, logical);
  if (needed === null) {
    fs.closeSync(directFd);
    return buffered('a direct read of its first sector failed (EINVAL): its filesystem or driver does not do O_DIRECT');
  }
  return { directFd, sectorBytes: Math.max(needed, opened.superblock.sectorBytes), io: 'direct', ioReason: null };
}

/** The smallest unit direct IO on `path` accepts (512 or 4096), or null where it does not work. */
function directSectorBytes(path: string, logicalBlockBytes: number): number | null {
  let fd: number;
  try {
    fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_DIRECT);
  } catch {
    return null;
  }
  try {
    return directSectorBytesOf(fd, logicalBlockBytes);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Asks an O_DIRECT descriptor: a block device says its logical sector size; a file's is
 * that of the disk under its filesystem, found by trying a 512-byte read, then 4096.
 */
function directSectorBytesOf(fd: number, logicalBlockBytes: number): number | null {
  const buffer = alignedBuffer(4096);
  for (const sector of logicalBlockBytes > 0 ? [logicalBlockBytes] : [512, 4096]) {
    try {
      fs.readSync(fd, buffer, 0, sector, sector);
      return sector;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
    }
  }
  return null;
}

function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}
