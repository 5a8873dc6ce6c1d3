// Proves that both CRC-32C implementations (the table in TypeScript and the addon's, with
// SSE4.2 where the CPU has it) give the standard check value and agree with each other on
// every length and alignment, also when continuing from a previous CRC. Seeded: the seed
// is printed and a failure replays from it.

import * as crypto from 'node:crypto';
import t from 'tap';
import { crc32c, crc32cBlocks, crc32cSoftware } from '../../src/common/crc32c.js';
import { nativeCrc32c } from '../../src/common/native.js';

t.test('check value', async (t) => {
  const check = Buffer.from('123456789');
  t.equal(crc32cSoftware(check), 0xe3069283);
  t.equal(nativeCrc32c(check, 0), 0xe3069283);
  t.equal(crc32c(Buffer.alloc(1024, 0xff)), crc32cSoftware(Buffer.alloc(1024, 0xff)));
});

t.test('native and software agree', async (t) => {
  const seed = Number(process.env['MESHBLOCK_SEED'] ?? crypto.randomInt(2 ** 31));
  t.comment(`seed ${seed} (MESHBLOCK_SEED=${seed} replays)`);
  const source = crypto.createHash('sha512');
  let material = Buffer.alloc(0);
  for (let round = 0; material.length < 70_000; round++) material = Buffer.concat([material, source.copy().update(`${seed}:${round}`).digest()]);
  let mismatches = 0;
  for (let length = 0; length < 2100; length += 1 + (length % 13)) {
    for (const offset of [0, 1, 3, 7]) {
      const bytes = material.subarray(offset, offset + length);
      const previous = material.readUInt32LE(length % 1000);
      if (nativeCrc32c(bytes, previous) !== crc32cSoftware(bytes, previous)) mismatches += 1;
    }
  }
  const large = material.subarray(5, 65_541);
  t.equal(nativeCrc32c(large, 0), crc32cSoftware(large), '64 KiB at an odd offset');
  t.equal(mismatches, 0, 'every length and alignment agrees');
  const whole = crc32c(large);
  t.equal(crc32c(large.subarray(1000), crc32c(large.subarray(0, 1000))), whole, 'continuing across pieces');
});

t.test('crc32cBlocks: every block from the seed, in one native call, checked against the reference', async (t) => {
  const bytes = crypto.randomBytes(16 * 4096 + 3).subarray(3);
  const seed = 0x1234abcd;
  const out = new Uint32Array(16);
  crc32cBlocks(bytes, 4096, seed, out);
  const expected = Array.from({ length: 16 }, (_, block) => crc32cSoftware(bytes.subarray(block * 4096, (block + 1) * 4096), seed));
  t.same([...out], expected, 'each block as its own CRC from the seed, at an odd buffer offset');
  const part = new Uint32Array(20);
  crc32cBlocks(bytes.subarray(4096, 3 * 4096), 4096, seed, part.subarray(5));
  t.same([part[5], part[6], part[4], part[7]], [expected[1], expected[2], 0, 0], 'into a window of a larger array, nothing outside it touched');
  t.throws(() => crc32cBlocks(bytes.subarray(0, 5000), 4096, seed, out), RangeError, 'a buffer that is not whole blocks is refused');
  t.throws(() => crc32cBlocks(bytes, 4096, seed, new Uint32Array(15)), RangeError, 'an array too short is refused');
});
