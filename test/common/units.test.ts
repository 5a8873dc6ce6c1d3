// Proves the parsers every CLI flag and config value goes through: sizes and HOST:PORT
// accept what an administrator writes and refuse, by field name, what is wrong.

import t from 'tap';
import { formatHostPort, parseHostPort } from '../../src/common/address.js';
import { InvalidArgumentError, OutOfRangeError } from '../../src/common/errors.js';
import { formatBytes, GiB, KiB, MiB, parseSizeBytes } from '../../src/common/units.js';

t.test('parseSizeBytes', async (t) => {
  t.equal(parseSizeBytes('--size', '4096'), 4096);
  t.equal(parseSizeBytes('--size', '512K'), 512 * KiB);
  t.equal(parseSizeBytes('--size', '8GiB'), 8 * GiB);
  t.equal(parseSizeBytes('--size', '1.5M'), 1.5 * MiB);
  t.equal(parseSizeBytes('--size', '10MB'), 10_000_000);
  for (const bad of ['', 'abc', '-1G', '4 XB', '0.3', '1e3', '99999999999T']) {
    t.throws(() => parseSizeBytes('--size', bad), { code: 'MB_ERR_INVALID_ARGUMENT', field: '--size' }, `'${bad}' is refused`);
  }
  t.throws(() => parseSizeBytes('--device-size', 'x'), InvalidArgumentError);
});

t.test('formatBytes', async (t) => {
  t.equal(formatBytes(0), '0 B');
  t.equal(formatBytes(4 * GiB), '4 GiB');
  t.equal(formatBytes(1536), '1.5 KiB');
});

t.test('parseHostPort', async (t) => {
  t.same(parseHostPort('--listen', '127.0.0.1:10809'), { host: '127.0.0.1', port: 10809 });
  t.same(parseHostPort('--listen', ':0'), { host: '127.0.0.1', port: 0 });
  t.same(parseHostPort('--listen', '[::1]:99'), { host: '::1', port: 99 });
  t.equal(formatHostPort({ host: '::1', port: 99 }), '[::1]:99');
  t.throws(() => parseHostPort('--listen', 'localhost'), { code: 'MB_ERR_INVALID_ARGUMENT', field: '--listen' });
  t.throws(() => parseHostPort('--listen', 'a:b:c'), InvalidArgumentError);
  t.throws(() => parseHostPort('--listen', 'h:65536'), OutOfRangeError);
});
