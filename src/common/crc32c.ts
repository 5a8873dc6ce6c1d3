// CRC-32C (Castagnoli), the checksum of iSCSI, ext4 metadata and the wire protocol's
// headers. Table-driven, one byte at a time: fine for headers (60 bytes); payload
// checksums at line rate will want the SSE4.2 instruction in the native addon.

const table = new Uint32Array(256);
for (let index = 0; index < 256; index++) {
  let value = index;
  for (let bit = 0; bit < 8; bit++) value = value & 1 ? (value >>> 1) ^ 0x82f63b78 : value >>> 1;
  table[index] = value >>> 0;
}

/** CRC-32C of `bytes`, continuing from `previous` (the CRC of what came before, or 0). */
export function crc32c(bytes: Uint8Array, previous = 0): number {
  let crc = ~previous >>> 0;
  for (let index = 0; index < bytes.length; index++) {
    crc = (table[(crc ^ (bytes[index] as number)) & 0xff] as number) ^ (crc >>> 8);
  }
  return ~crc >>> 0;
}
