// The whole protocol (setup, ops, statuses, semantics) is described in docs/wire-protocol.md.
// The frame header of meshblock's wire protocol, spoken between SDC, SDS and MDM. Every
// message is one 64-byte header followed by `payloadBytes` of payload. All integers are
// big-endian.
//
//   offset  size  field            purpose and limits
//   ------  ----  ---------------  ----------------------------------------------------------
//        0     4  magic            'MBWP' (0x4d425750): framing check; anything else means the
//                                  stream is not ours or is out of sync, and it is dropped
//        4     2  version          protocol version (wireVersion); a peer speaking another
//                                  one is refused with a message that names both versions
//        6     2  op               operation (WireOp); replies carry the request's op
//        8     4  flags            bit 0 reply, bit 1 payload checksummed; others must be 0
//       12     4  status           0 in requests; in replies 0 = ok, else a WireStatus
//       16     8  clusterId        the cluster this message belongs to (16 hex digits); a
//                                  message for another cluster is refused
//       24     8  requestId        chosen by the requester, echoed by the reply; replies may
//                                  come in any order (below 2^53)
//       32     8  epoch            the sender's placement-map epoch; an SDS refuses IO
//                                  stamped with a stale one (below 2^53)
//       40     4  payloadBytes     length of the payload that follows (at most
//                                  wirePayloadBytesMax)
//       44     4  payloadCrc32c    CRC-32C of the payload when flag bit 1 is set, else 0
//       48    12  reserved         must be 0 (room for later fields without a new version)
//       60     4  headerCrc32c     CRC-32C of bytes 0..59: a corrupt header is detected
//                                  before any field of it is trusted

import { assert } from '../common/assert.js';
import { crc32c } from '../common/crc32c.js';
import { MeshblockError } from '../common/errors.js';
import { wireHeaderBytes, wirePayloadBytesMax } from '../common/limits.js';

export const wireMagic = 0x4d425750; // 'MBWP'
export const wireVersion = 1;
export { wireHeaderBytes, wirePayloadBytesMax } from '../common/limits.js';

export const wireFlagReply = 1 << 0;
export const wireFlagPayloadChecksum = 1 << 1;
const wireFlagsKnown = wireFlagReply | wireFlagPayloadChecksum;

const reservedOffset = 48;
const reservedBytes = 12;
const headerCrcOffset = 60;
assert(headerCrcOffset + 4 === wireHeaderBytes, 'the header checksum is the header’s last field');
assert(reservedOffset + reservedBytes === headerCrcOffset, 'the reserved bytes end where the checksum starts');

export interface WireHeader {
  op: number;
  reply: boolean;
  status: number;
  /** 16 lowercase hex digits, as ScaleIO writes ids. */
  clusterId: string;
  requestId: number;
  epoch: number;
  payloadBytes: number;
  /** Set when the payload carries a checksum; checked against the payload by the reader. */
  payloadCrc32c: number | null;
}

/**
 * The header's status field: 0 in requests; in replies Ok or why the request failed.
 * Services add their own from 5 up (sds-ops.ts's SdsStatus).
 */
export const WireStatus = {
  Ok: 0,
  AuthFailed: 1,
  UnknownOp: 2,
  Failed: 3,
  StaleEpoch: 4,
} as const;

/** A frame that cannot be trusted. The connection it came on is dropped. */
export class WireFrameError extends MeshblockError {}

/** A wire connection failed, or a request on it did (codes MB_ERR_WIRE_*). */
export class WireError extends MeshblockError {}

const clusterIdPattern = /^[0-9a-f]{16}$/;

/**
 * The 64-bit ids in headers (cluster) and IO arguments (pool, V-Tree) as the two 32-bit
 * halves the wire carries, and back as 16 hex digits. A process talks to one cluster and a
 * handful of pools and volumes, so each codec remembers the last id it converted: a frame
 * then costs two integer compares instead of a regex test and a hex string (a string and
 * its garbage per frame on every hop were a visible share of the SDC's and SDS's time).
 */
export class HexIdCodec {
  private text = '';
  private high = 0;
  private low = 0;

  constructor(private readonly name: string) {}

  /** Writes `id` (16 hex digits, checked) as 8 big-endian bytes at `at`. */
  write(target: Buffer, at: number, id: string): void {
    if (id !== this.text) {
      assert(clusterIdPattern.test(id), `${this.name} '${id}' is not 16 hex digits`);
      this.high = parseInt(id.slice(0, 8), 16);
      this.low = parseInt(id.slice(8, 16), 16);
      this.text = id;
    }
    target.writeUInt32BE(this.high, at);
    target.writeUInt32BE(this.low, at + 4);
  }

  /** The 8 bytes at `at` as 16 lowercase hex digits. */
  read(source: Buffer, at: number): string {
    const high = source.readUInt32BE(at);
    const low = source.readUInt32BE(at + 4);
    if (high !== this.high || low !== this.low || this.text === '') {
      this.text = source.toString('hex', at, at + 8);
      this.high = high;
      this.low = low;
    }
    return this.text;
  }
}

const clusterIds = new HexIdCodec('cluster id');
const clusterIdsRead = new HexIdCodec('cluster id');
/** requestId and epoch are below 2^53: their high 32 bits are below 2^21. */
const safeIntegerHighHalf = Math.floor(Number.MAX_SAFE_INTEGER / 0x1_0000_0000);
assert(safeIntegerHighHalf === 0x1f_ffff, 'the high half of a safe integer has 21 bits');

export function encodeHeader(header: WireHeader, target: Buffer = Buffer.allocUnsafe(wireHeaderBytes)): Buffer {
  assert(target.length >= wireHeaderBytes, 'header target too small');
  assert(Number.isSafeInteger(header.requestId) && header.requestId >= 0, 'request id out of range');
  assert(Number.isSafeInteger(header.epoch) && header.epoch >= 0, 'epoch out of range');
  assert(header.payloadBytes >= 0 && header.payloadBytes <= wirePayloadBytesMax, 'payload too large');
  target.writeUInt32BE(wireMagic, 0);
  target.writeUInt16BE(wireVersion, 4);
  target.writeUInt16BE(header.op, 6);
  const flags = (header.reply ? wireFlagReply : 0) | (header.payloadCrc32c !== null ? wireFlagPayloadChecksum : 0);
  target.writeUInt32BE(flags, 8);
  target.writeUInt32BE(header.status, 12);
  clusterIds.write(target, 16, header.clusterId);
  // 64-bit fields as two halves: no BigInt per frame.
  target.writeUInt32BE(Math.floor(header.requestId / 0x1_0000_0000), 24);
  target.writeUInt32BE(header.requestId >>> 0, 28);
  target.writeUInt32BE(Math.floor(header.epoch / 0x1_0000_0000), 32);
  target.writeUInt32BE(header.epoch >>> 0, 36);
  target.writeUInt32BE(header.payloadBytes, 40);
  target.writeUInt32BE(header.payloadCrc32c ?? 0, 44);
  target.writeUInt32BE(0, reservedOffset);
  target.writeUInt32BE(0, reservedOffset + 4);
  target.writeUInt32BE(0, reservedOffset + 8);
  target.writeUInt32BE(crc32c(target.subarray(0, headerCrcOffset)), headerCrcOffset);
  return target;
}

/**
 * Decodes and checks one header: magic, then checksum (nothing else in a corrupt header is
 * trusted), then version, flags, reserved bytes and limits. Throws WireFrameError with a
 * stable code on any problem.
 */
export function decodeHeader(source: Buffer, at = 0): WireHeader {
  const bytes = source.subarray(at, at + wireHeaderBytes);
  if (bytes.length < wireHeaderBytes) throw new WireFrameError('MB_ERR_WIRE_SHORT', 'short frame header');
  const magic = bytes.readUInt32BE(0);
  if (magic !== wireMagic) {
    throw new WireFrameError('MB_ERR_WIRE_MAGIC', `not a meshblock frame (magic 0x${magic.toString(16).padStart(8, '0')})`);
  }
  if (crc32c(bytes.subarray(0, headerCrcOffset)) !== bytes.readUInt32BE(headerCrcOffset)) {
    throw new WireFrameError('MB_ERR_WIRE_HEADER_CHECKSUM', 'frame header checksum mismatch');
  }
  const version = bytes.readUInt16BE(4);
  if (version !== wireVersion) {
    throw new WireFrameError(
      'MB_ERR_WIRE_VERSION',
      `peer speaks wire protocol version ${version}, this meshblock speaks version ${wireVersion}: upgrade one side`,
    );
  }
  const flags = bytes.readUInt32BE(8);
  if ((flags & ~wireFlagsKnown) !== 0) throw new WireFrameError('MB_ERR_WIRE_FLAGS', `unknown frame flags 0x${flags.toString(16)}`);
  if (bytes.readUInt32BE(reservedOffset) !== 0 || bytes.readUInt32BE(reservedOffset + 4) !== 0 || bytes.readUInt32BE(reservedOffset + 8) !== 0) {
    throw new WireFrameError('MB_ERR_WIRE_RESERVED', 'reserved header bytes are not zero');
  }
  const requestIdHigh = bytes.readUInt32BE(24);
  const epochHigh = bytes.readUInt32BE(32);
  if (requestIdHigh > safeIntegerHighHalf || epochHigh > safeIntegerHighHalf) {
    throw new WireFrameError('MB_ERR_WIRE_RANGE', 'request id or epoch beyond 2^53');
  }
  const payloadBytes = bytes.readUInt32BE(40);
  if (payloadBytes > wirePayloadBytesMax) {
    throw new WireFrameError('MB_ERR_WIRE_PAYLOAD_TOO_LARGE', `payload of ${payloadBytes} bytes is above ${wirePayloadBytesMax}`);
  }
  const checksummed = (flags & wireFlagPayloadChecksum) !== 0;
  return {
    op: bytes.readUInt16BE(6),
    reply: (flags & wireFlagReply) !== 0,
    status: bytes.readUInt32BE(12),
    clusterId: clusterIdsRead.read(bytes, 16),
    requestId: requestIdHigh * 0x1_0000_0000 + bytes.readUInt32BE(28),
    epoch: epochHigh * 0x1_0000_0000 + bytes.readUInt32BE(36),
    payloadBytes,
    payloadCrc32c: checksummed ? bytes.readUInt32BE(44) : null,
  };
}

/** Checks a received payload against its header's checksum, if it has one. */
export function verifyPayload(header: WireHeader, payload: Buffer): void {
  if (header.payloadCrc32c === null) return;
  if (crc32c(payload) !== header.payloadCrc32c) {
    throw new WireFrameError('MB_ERR_WIRE_PAYLOAD_CHECKSUM', `payload checksum mismatch (request ${header.requestId})`);
  }
}
