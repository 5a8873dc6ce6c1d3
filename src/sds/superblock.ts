// The superblock that makes a device self-describing: it names the cluster, the SDS and
// the device, so a device is recognised after a restart or when moved to another host.
// One 4 KiB block at offset 0 of the device (the data area starts at dataOffsetBytes):
//
//   offset  size  field               notes
//   ------  ----  ------------------  ------------------------------------------------
//        0     8  magic               'MESHBLK1'
//        8     4  version             superblockVersion
//       12     4  reserved            0
//       16     8  clusterId           16 hex digits
//       24     8  sdsId               16 hex digits
//       32     8  deviceId            16 hex digits
//       40     8  deviceSizeBytes     the size when formatted; a device that shrank is refused
//       48     8  dataOffsetBytes     where chunk data starts (after the metadata area)
//       56     8  formattedAtMs       Unix time of formatting (for the administrator)
//       64    32  sdsName             UTF-8, NUL-padded (ScaleIO names: at most 31 bytes)
//       96     4  chunkBytes          size of one chunk slot (the SDS's chunk size)
//      100     4  reserved            0
//      104     8  slotCount           chunk slots in the data area
//      112     8  slotTableOffsetBytes where the slot table starts (chunk-store.ts)
//      120     8  checksumTableOffsetBytes where the checksum table starts (version 2 on)
//      128     4  checksumBlockBytes  bytes of chunk data one stored CRC covers (version 2 on)
//      132     4  sectorBytes         version 3: the unit every metadata record is padded to
//                                     (slot entries and checksum areas start on and fill whole
//                                     sectors), so that direct IO writes them whole; 512 or
//                                     the device's larger logical sector. Version 2 packs them
//                                     (read as 0): such a device works only through the page cache.
//      136  3956  reserved            0
//     4092     4  crc32c              CRC-32C of bytes 0..4091

import { nameBytesMax } from '../common/limits.js';
import { assert } from '../common/assert.js';
import { crc32c } from '../common/crc32c.js';
import { MeshblockError } from '../common/errors.js';
import { KiB } from '../common/units.js';

export const superblockMagic = Buffer.from('MESHBLK1');
export const superblockVersion = 3;
/** The oldest version still read: checksums at rest, metadata packed (sectorBytes 0). */
const superblockVersionMin = 2;
export const superblockBytes = 4 * KiB;
/** The sdsName field: a name of nameBytesMax bytes and at least one NUL. */
const sdsNameFieldBytes = 32;
assert(nameBytesMax < sdsNameFieldBytes, 'the longest name fits the superblock with its NUL');
const crcOffset = superblockBytes - 4;

export interface Superblock {
  clusterId: string;
  sdsId: string;
  deviceId: string;
  deviceSizeBytes: number;
  dataOffsetBytes: number;
  formattedAtMs: number;
  sdsName: string;
  chunkBytes: number;
  slotCount: number;
  slotTableOffsetBytes: number;
  checksumTableOffsetBytes: number;
  checksumBlockBytes: number;
  /** Metadata records padded to whole sectors of this size; 0 on a version-2 device (packed). */
  sectorBytes: number;
}

export class SuperblockError extends MeshblockError {}

const idPattern = /^[0-9a-f]{16}$/;

export function encodeSuperblock(superblock: Superblock): Buffer {
  for (const [field, value] of [['clusterId', superblock.clusterId], ['sdsId', superblock.sdsId], ['deviceId', superblock.deviceId]]) {
    assert(idPattern.test(value as string), `${field} '${value}' is not 16 hex digits`);
  }
  const name = Buffer.from(superblock.sdsName);
  assert(name.length <= nameBytesMax, `SDS name is longer than ${nameBytesMax} bytes`);
  const bytes = Buffer.alloc(superblockBytes);
  superblockMagic.copy(bytes, 0);
  bytes.writeUInt32BE(superblockVersion, 8);
  bytes.write(superblock.clusterId, 16, 8, 'hex');
  bytes.write(superblock.sdsId, 24, 8, 'hex');
  bytes.write(superblock.deviceId, 32, 8, 'hex');
  bytes.writeBigUInt64BE(BigInt(superblock.deviceSizeBytes), 40);
  bytes.writeBigUInt64BE(BigInt(superblock.dataOffsetBytes), 48);
  bytes.writeBigUInt64BE(BigInt(superblock.formattedAtMs), 56);
  name.copy(bytes, 64);
  bytes.writeUInt32BE(superblock.chunkBytes, 96);
  bytes.writeBigUInt64BE(BigInt(superblock.slotCount), 104);
  bytes.writeBigUInt64BE(BigInt(superblock.slotTableOffsetBytes), 112);
  bytes.writeBigUInt64BE(BigInt(superblock.checksumTableOffsetBytes), 120);
  bytes.writeUInt32BE(superblock.checksumBlockBytes, 128);
  assert(superblock.sectorBytes >= 512 && (superblock.sectorBytes & (superblock.sectorBytes - 1)) === 0, 'new devices pad metadata to whole sectors');
  bytes.writeUInt32BE(superblock.sectorBytes, 132);
  bytes.writeUInt32BE(crc32c(bytes.subarray(0, crcOffset)), crcOffset);
  return bytes;
}

/** True when `head` starts with our magic, whether or not the rest is intact. */
export function hasSuperblockMagic(head: Buffer): boolean {
  return head.length >= superblockMagic.length && head.subarray(0, superblockMagic.length).equals(superblockMagic);
}

export function decodeSuperblock(head: Buffer): Superblock {
  if (!hasSuperblockMagic(head)) throw new SuperblockError('MB_ERR_SUPERBLOCK_MAGIC', 'no meshblock superblock');
  if (head.length < superblockBytes) throw new SuperblockError('MB_ERR_SUPERBLOCK_SHORT', 'superblock is truncated');
  if (crc32c(head.subarray(0, crcOffset)) !== head.readUInt32BE(crcOffset)) {
    throw new SuperblockError('MB_ERR_SUPERBLOCK_CHECKSUM', 'meshblock superblock is damaged (checksum mismatch)');
  }
  const version = head.readUInt32BE(8);
  if (version < superblockVersionMin || version > superblockVersion) {
    const hint = version < superblockVersionMin ? ' (formatted by an older meshblock, without checksums at rest: remove the device and add it again with --force; its chunks are rebuilt from their other copies)' : '';
    throw new SuperblockError('MB_ERR_SUPERBLOCK_VERSION', `superblock version ${version}; this meshblock reads versions ${superblockVersionMin} to ${superblockVersion}${hint}`);
  }
  const nameEnd = head.indexOf(0, 64);
  return {
    clusterId: head.toString('hex', 16, 24),
    sdsId: head.toString('hex', 24, 32),
    deviceId: head.toString('hex', 32, 40),
    deviceSizeBytes: Number(head.readBigUInt64BE(40)),
    dataOffsetBytes: Number(head.readBigUInt64BE(48)),
    formattedAtMs: Number(head.readBigUInt64BE(56)),
    sdsName: head.toString('utf8', 64, nameEnd === -1 || nameEnd > 96 ? 96 : nameEnd),
    chunkBytes: head.readUInt32BE(96),
    slotCount: Number(head.readBigUInt64BE(104)),
    slotTableOffsetBytes: Number(head.readBigUInt64BE(112)),
    checksumTableOffsetBytes: Number(head.readBigUInt64BE(120)),
    checksumBlockBytes: head.readUInt32BE(128),
    sectorBytes: version >= 3 ? head.readUInt32BE(132) : 0,
  };
}
