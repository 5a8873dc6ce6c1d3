// Rot made by hand in an SDS device file, for the checksum tests (test/sds/integrity.test.ts,
// test/integration/integrity.test.ts): where a chunk copy's slot, data, slot-table entry and
// checksum area are (read from the device's own superblock and slot table, chunk-store.ts
// draws the layout), and byte-level reads and writes of the file behind the SDS's back.

import * as fs from 'node:fs';
import { crc32c } from '../../src/common/crc32c.js';
import { keySeed, type ChunkKey } from '../../src/sds/chunk-store.js';
import { checksumBlockBytes, checksumHeaderBytes, metadataStrides, slotEntryBytes } from '../../src/sds/device.js';
import { decodeSuperblock } from '../../src/sds/superblock.js';

/** Where one chunk copy lives in a device file, in bytes from the file's start. */
export interface SlotPlace {
  slot: number;
  /** The slot's first data byte. */
  dataBytes: number;
  /** Its 64-byte slot-table entry. */
  entryBytes: number;
  /** Its checksum area (32-byte header, then one CRC per 4 KiB block). */
  checksumsBytes: number;
  chunkBytes: number;
}

/**
 * Where chunk `chunkIndex` of V-Tree `vtreeId` (generation `generation`, 0 unless given) is
 * in a device file, from its slot table. Entries that fail their CRC are skipped: a damaged
 * entry names no chunk the SDS believes in.
 */
export function locateChunk(file: string, where: { vtreeId: string; chunkIndex: number; generation?: number }): SlotPlace {
  const head = Buffer.alloc(4096);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, head, 0, head.length, 0);
    const superblock = decodeSuperblock(head);
    const { entryStrideBytes, areaStrideBytes } = metadataStrides(superblock.sectorBytes, superblock.chunkBytes);
    const table = Buffer.alloc(superblock.slotCount * entryStrideBytes);
    fs.readSync(fd, table, 0, table.length, superblock.slotTableOffsetBytes);
    for (let slot = 0; slot < superblock.slotCount; slot++) {
      const entry = table.subarray(slot * entryStrideBytes, slot * entryStrideBytes + slotEntryBytes);
      if (entry.readUInt8(4) !== 1 || crc32c(entry.subarray(4)) !== entry.readUInt32BE(0)) continue;
      if (entry.toString('hex', 24, 32) !== where.vtreeId || entry.readUInt32BE(32) !== where.chunkIndex || entry.readUInt32BE(36) !== (where.generation ?? 0)) continue;
      return {
        slot,
        dataBytes: superblock.dataOffsetBytes + slot * superblock.chunkBytes,
        entryBytes: superblock.slotTableOffsetBytes + slot * entryStrideBytes,
        checksumsBytes: superblock.checksumTableOffsetBytes + slot * areaStrideBytes,
        chunkBytes: superblock.chunkBytes,
      };
    }
  } finally {
    fs.closeSync(fd);
  }
  throw new Error(`chunk ${where.vtreeId}/${where.chunkIndex} is not in ${file}`);
}

/** XORs one byte of the file with 0x5a (never a no-op). */
export function flipByte(file: string, positionBytes: number): void {
  const byte = readBytes(file, positionBytes, 1);
  byte[0] = (byte[0] as number) ^ 0x5a;
  writeBytes(file, positionBytes, byte);
}

export function readBytes(file: string, positionBytes: number, lengthBytes: number): Buffer {
  const bytes = Buffer.alloc(lengthBytes);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, bytes, 0, lengthBytes, positionBytes);
  } finally {
    fs.closeSync(fd);
  }
  return bytes;
}

export function writeBytes(file: string, positionBytes: number, bytes: Buffer): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, positionBytes);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Replaces block `blockIndex` of a chunk copy with `bytes` and writes the CRC that makes
 * them verify (crc32c seeded with the key's, little-endian, as the chunk store keeps it): a copy that
 * differs from its mirror though every block of it checks out. An SDS that has the slot's
 * checksums in memory still sees the old CRC; one that loads them from the device after
 * this (a restart) believes the forged block.
 */
export function forgeBlock(file: string, at: SlotPlace, key: ChunkKey, blockIndex: number, bytes: Buffer): void {
  if (bytes.length !== checksumBlockBytes) throw new Error(`a forged block is ${checksumBlockBytes} bytes, not ${bytes.length}`);
  const crc = Buffer.alloc(4);
  crc.writeUInt32LE(crc32c(bytes, keySeed(key)));
  writeBytes(file, at.dataBytes + blockIndex * checksumBlockBytes, bytes);
  writeBytes(file, at.checksumsBytes + checksumHeaderBytes + blockIndex * 4, crc);
}
