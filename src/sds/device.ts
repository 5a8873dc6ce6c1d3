// Opening a device for an SDS: a raw block device or a regular file standing in for one.
// A device is recognised by its superblock; a blank device is formatted; anything else on
// it (a partition table, a filesystem, an LVM label, another cluster's superblock, ...) is
// refused with what was found, unless forced: "previous formatting must be removed first".

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { MeshblockError } from '../common/errors.js';
import * as native from '../common/native.js';
import { MiB } from '../common/units.js';
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
  fd: number;
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
  options: { force: boolean; chunkBytes?: number },
): Promise<OpenedDevice> {
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
    const layout = slotLayout(sizeBytes, chunkBytes);
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
    };
    const zeroes = Buffer.alloc(wipeBytes);
    fs.writeSync(fd, zeroes, 0, Math.min(wipeBytes, sizeBytes), Math.max(0, sizeBytes - wipeBytes));
    // The whole metadata area reads as zeros afterwards: an all-zero slot entry is a free slot.
    if (isBlockDevice) await native.zeroout(fd, 0, layout.dataOffsetBytes);
    else await native.fallocate(fd, native.FALLOC_FL_PUNCH_HOLE | native.FALLOC_FL_KEEP_SIZE, 0, layout.dataOffsetBytes);
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
export function slotLayout(sizeBytes: number, chunkBytes: number): { slotCount: number; checksumTableOffsetBytes: number; dataOffsetBytes: number } {
  const layout = (slotCount: number): { slotCount: number; checksumTableOffsetBytes: number; dataOffsetBytes: number } => {
    const checksumTableOffsetBytes = alignUp(slotTableOffsetBytes + slotCount * slotEntryBytes, checksumBlockBytes);
    const dataOffsetBytes = alignUp(checksumTableOffsetBytes + slotCount * checksumAreaBytes(chunkBytes), dataAlignBytes);
    return { slotCount, checksumTableOffsetBytes, dataOffsetBytes };
  };
  const fits = (slotCount: number): boolean => layout(slotCount).dataOffsetBytes + slotCount * chunkBytes <= sizeBytes;
  // A first guess that ignores the alignment padding, then corrected by single steps.
  const perSlotBytes = chunkBytes + slotEntryBytes + checksumAreaBytes(chunkBytes);
  let slotCount = Math.max(0, Math.floor((sizeBytes - slotTableOffsetBytes) / perSlotBytes));
  while (slotCount > 0 && !fits(slotCount)) slotCount -= 1;
  while (fits(slotCount + 1)) slotCount += 1;
  return layout(slotCount);
}

function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}
