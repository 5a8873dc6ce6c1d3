// Proves that sds-ops.ts's offset table (ioArgOffsets) is where encodeIo writes each IO
// argument and decodeIo reads it, that setIoFlags rewrites the flags word and nothing else,
// and that ioReplyBytesOf (what the wire peer counts for a request it serves) is a READ's
// length, capped at the largest frame, and 0 for anything else.

import t from 'tap';
import { wirePayloadBytesMax } from '../../src/wire/header.js';
import { IoFlag, SdsOp, decodeIo, encodeIo, ioArgOffsets, ioArgsBytes, ioReplyBytesOf, setIoFlags, type IoArgs } from '../../src/wire/sds-ops.js';

const args: IoArgs = {
  poolId: '00000000000000a1',
  vtreeId: '1111222233334444',
  pgIndex: 0x01020304,
  chunkIndex: 0x05060708,
  generation: 0x090a0b0c,
  offsetBytes: 0x200,
  lengthBytes: 0x10_0000,
  flags: IoFlag.Fua,
};

t.test('each argument sits at its offset in the table', async (t) => {
  const payload = encodeIo(args, Buffer.from('data'));
  t.equal(payload.length, ioArgsBytes + 4, 'arguments, then data');
  t.equal(payload.toString('hex', ioArgOffsets.poolId, ioArgOffsets.poolId + 8), args.poolId, `poolId at ${ioArgOffsets.poolId}`);
  t.equal(payload.toString('hex', ioArgOffsets.vtreeId, ioArgOffsets.vtreeId + 8), args.vtreeId, `vtreeId at ${ioArgOffsets.vtreeId}`);
  for (const field of ['pgIndex', 'chunkIndex', 'generation', 'offsetBytes', 'lengthBytes', 'flags'] as const) {
    t.equal(payload.readUInt32BE(ioArgOffsets[field]), args[field], `${field} at ${ioArgOffsets[field]}`);
  }
  t.same(decodeIo(payload).args, args, 'decodeIo reads back what encodeIo wrote');
});

t.test('pool and vtree ids that change between requests are each carried as themselves', async (t) => {
  // encodeIo and decodeIo remember the last ids they converted: changes must be seen.
  const sequence = [args, { ...args, vtreeId: 'ffffffffffffffff' }, { ...args, poolId: '0000000000000000' }, args, { ...args, poolId: '0000000000000000', vtreeId: '0000000000000000' }];
  for (const each of sequence) {
    const payload = encodeIo(each);
    t.equal(payload.toString('hex', ioArgOffsets.poolId, ioArgOffsets.poolId + 8), each.poolId, `poolId ${each.poolId} on the wire`);
    t.same(decodeIo(payload).args, each, `${each.poolId}/${each.vtreeId} decoded`);
  }
  t.throws(() => encodeIo({ ...args, vtreeId: 'not-hex-at-all!!' }), { code: 'MB_ERR_ASSERTION' }, 'a bad id is our bug');
});

t.test('setIoFlags rewrites the flags word only', async (t) => {
  const payload = encodeIo(args, Buffer.from('data'));
  const before = Buffer.from(payload);
  setIoFlags(payload, args.flags | IoFlag.Replica);
  t.same(decodeIo(payload).args, { ...args, flags: IoFlag.Fua | IoFlag.Replica }, 'the flags changed');
  const changed = [...payload.keys()].filter((index) => payload[index] !== before[index]);
  t.ok(changed.every((index) => index >= ioArgOffsets.flags && index < ioArgOffsets.flags + 4), `only bytes of the flags word changed (${changed.join(', ')})`);
  t.throws(() => setIoFlags(payload, 1 << 7), { code: 'MB_ERR_ASSERTION' }, 'an unknown flag is a bug of the caller');
});

t.test('ioReplyBytesOf: a READ’s length, capped; nothing for other ops', async (t) => {
  t.equal(ioReplyBytesOf(SdsOp.Read, encodeIo(args)), args.lengthBytes, 'a READ holds lengthBytes of reply');
  t.equal(ioReplyBytesOf(SdsOp.Read, encodeIo({ ...args, lengthBytes: 0xffff_fe00 })), wirePayloadBytesMax, 'a hostile length counts as the largest frame');
  t.equal(ioReplyBytesOf(SdsOp.Write, encodeIo(args, Buffer.alloc(512))), 0, 'a WRITE replies empty');
  t.equal(ioReplyBytesOf(SdsOp.Read, Buffer.alloc(10)), 0, 'a READ too short to hold arguments is refused, not served');
});
