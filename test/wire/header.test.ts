// Proves the wire frame header: what is encoded decodes to the same fields, every single
// corrupted byte is caught (by the magic or the header checksum), and each malformed field
// is refused with its own stable code — a peer of another protocol version is told so.

import t from 'tap';
import { crc32c } from '../../src/common/crc32c.js';
import {
  decodeHeader,
  encodeHeader,
  verifyPayload,
  wireHeaderBytes,
  wirePayloadBytesMax,
  type WireHeader,
} from '../../src/wire/header.js';

const sample: WireHeader = {
  op: 7,
  reply: true,
  status: 3,
  clusterId: '0123456789abcdef',
  requestId: Number.MAX_SAFE_INTEGER,
  epoch: 42,
  payloadBytes: 4096,
  payloadCrc32c: 0xdeadbeef,
};

/** Re-seals a header after a deliberate edit, so only the edited field is wrong. */
function reseal(bytes: Buffer): Buffer {
  bytes.writeUInt32BE(crc32c(bytes.subarray(0, 60)), 60);
  return bytes;
}

t.test('crc32c matches the standard check value', async (t) => {
  t.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  t.equal(crc32c(Buffer.from('56789'), crc32c(Buffer.from('1234'))), 0xe3069283, 'continues across pieces');
  t.equal(crc32c(Buffer.alloc(0)), 0);
});

t.test('round trip', async (t) => {
  const bytes = encodeHeader(sample);
  t.equal(bytes.length, wireHeaderBytes);
  t.same(decodeHeader(bytes), sample);
  const plain = { ...sample, reply: false, status: 0, payloadCrc32c: null, requestId: 0, epoch: 0 };
  t.same(decodeHeader(encodeHeader(plain)), plain);
  const framed = Buffer.concat([Buffer.alloc(5), bytes]);
  t.same(decodeHeader(framed, 5), sample, 'decodes at an offset');
});

t.test('every corrupted byte is detected', async (t) => {
  const good = encodeHeader(sample);
  let detected = 0;
  for (let index = 0; index < wireHeaderBytes; index++) {
    const bad = Buffer.from(good);
    bad[index] = (bad[index] as number) ^ 0x01;
    try {
      decodeHeader(bad);
    } catch (err) {
      if (['MB_ERR_WIRE_MAGIC', 'MB_ERR_WIRE_HEADER_CHECKSUM'].includes((err as { code: string }).code)) detected += 1;
    }
  }
  t.equal(detected, wireHeaderBytes);
});

t.test('malformed fields, each with its own code', async (t) => {
  const cases: Array<[string, (bytes: Buffer) => void, string | RegExp]> = [
    ['another version', (b) => b.writeUInt16BE(2, 4), /peer speaks wire protocol version 2, this meshblock speaks version 1/],
    ['unknown flags', (b) => b.writeUInt32BE(0x80, 8), 'MB_ERR_WIRE_FLAGS'],
    ['reserved bytes', (b) => b.writeUInt8(1, 50), 'MB_ERR_WIRE_RESERVED'],
    ['payload too large', (b) => b.writeUInt32BE(wirePayloadBytesMax + 1, 40), 'MB_ERR_WIRE_PAYLOAD_TOO_LARGE'],
    ['request id beyond 2^53', (b) => b.writeBigUInt64BE(1n << 60n, 24), 'MB_ERR_WIRE_RANGE'],
    ['request id 2^53 exactly', (b) => b.writeBigUInt64BE(1n << 53n, 24), 'MB_ERR_WIRE_RANGE'],
    ['epoch beyond 2^53', (b) => b.writeBigUInt64BE(1n << 53n, 32), 'MB_ERR_WIRE_RANGE'],
    ['last reserved byte', (b) => b.writeUInt8(1, 59), 'MB_ERR_WIRE_RESERVED'],
  ];
  for (const [label, edit, expected] of cases) {
    const bytes = encodeHeader(sample);
    edit(bytes);
    const match = typeof expected === 'string' ? { code: expected } : { code: 'MB_ERR_WIRE_VERSION', message: expected };
    t.throws(() => decodeHeader(reseal(bytes)), match, label);
  }
  t.throws(() => decodeHeader(Buffer.alloc(10)), { code: 'MB_ERR_WIRE_SHORT' });
  t.throws(() => decodeHeader(Buffer.alloc(64)), { code: 'MB_ERR_WIRE_MAGIC' });
});

t.test('64-bit fields keep every bit across the 32-bit halves', async (t) => {
  for (const value of [0, 1, 0xffff_ffff, 0x1_0000_0000, 0x1_2345_6789, Number.MAX_SAFE_INTEGER - 1, Number.MAX_SAFE_INTEGER]) {
    const header = { ...sample, requestId: value, epoch: Number.MAX_SAFE_INTEGER - value };
    const bytes = encodeHeader(header);
    t.equal(bytes.readBigUInt64BE(24), BigInt(value), `request id ${value} on the wire`);
    t.same(decodeHeader(bytes), header, `request id ${value} decoded`);
  }
});

t.test('cluster ids alternating between frames are each encoded and decoded as themselves', async (t) => {
  // The codecs remember the last id: a change, and a change back, must be seen.
  const ids = ['0123456789abcdef', 'fedcba9876543210', '0123456789abcdef', '0000000000000000', 'ffffffffffffffff', '0000000000000000'];
  for (const clusterId of ids) {
    const bytes = encodeHeader({ ...sample, clusterId });
    t.equal(bytes.toString('hex', 16, 24), clusterId, `${clusterId} on the wire`);
    t.equal(decodeHeader(bytes).clusterId, clusterId, `${clusterId} decoded`);
  }
  t.throws(() => encodeHeader({ ...sample, clusterId: '0123456789ABCDEF' }), { code: 'MB_ERR_ASSERTION' }, 'upper case refused');
});

t.test('payload checksum', async (t) => {
  const payload = Buffer.from('chunk data');
  const header = { ...sample, payloadBytes: payload.length, payloadCrc32c: crc32c(payload) };
  t.doesNotThrow(() => verifyPayload(header, payload));
  t.throws(() => verifyPayload(header, Buffer.from('chunk dato')), { code: 'MB_ERR_WIRE_PAYLOAD_CHECKSUM' });
  t.doesNotThrow(() => verifyPayload({ ...header, payloadCrc32c: null }, Buffer.from('anything')), 'unchecked payloads pass');
});

t.test('our own bad values are assertion failures, not frames', async (t) => {
  t.throws(() => encodeHeader({ ...sample, clusterId: 'xyz' }), { code: 'MB_ERR_ASSERTION' });
  t.throws(() => encodeHeader({ ...sample, epoch: -1 }), { code: 'MB_ERR_ASSERTION' });
});
