// Proves scripts/bench-mdm.mjs reads its arguments as its usage says: the full and --quick
// defaults (its fio runs are longer than the other benches', a fault sits inside them),
// given values winning over --quick, refusals by flag name and stable code (a fault time
// outside the run, a bad count), and the nearest-rank percentile its p99 columns use.
// Importing the script runs nothing: main() runs only when it is the program.

import t from 'tap';
import { parseOptions } from '../../scripts/bench-mdm.mjs';
import { percentile } from '../../scripts/bench-labs.mjs';

const MiB = 1024 * 1024;

t.test('parseOptions: defaults, --quick, given values', async (t) => {
  t.match(parseOptions([]), { opCount: 100, roundCount: 5, sizeBytes: 512 * MiB, runtimeSeconds: 20, rampSeconds: 2, killAtSeconds: 5, stallRoundCount: 3, sharedNetwork: false, outPath: null });
  t.match(parseOptions(['--quick']), { opCount: 20, roundCount: 2, sizeBytes: 256 * MiB, runtimeSeconds: 10, rampSeconds: 1, killAtSeconds: 3, stallRoundCount: 1 });
  t.match(parseOptions(['--quick', '--ops', '7', '--rounds', '3', '--runtime', '30', '--kill-at', '12', '--shared-network']), { opCount: 7, roundCount: 3, runtimeSeconds: 30, killAtSeconds: 12, sharedNetwork: true });
  t.equal(parseOptions(['--help']), null, '--help asks for the usage');
});

t.test('parseOptions: refusals name the flag and carry a stable code', async (t) => {
  t.throws(() => parseOptions(['--ops', '0']), { code: 'MB_ERR_OUT_OF_RANGE', message: /^--ops/ });
  t.throws(() => parseOptions(['--ops', 'many']), { code: 'MB_ERR_INVALID_ARGUMENT', message: /^--ops/ });
  t.throws(() => parseOptions(['--kill-at', '20']), { code: 'MB_ERR_OUT_OF_RANGE', message: /^--kill-at/ }, 'the fault must fall inside the measured window');
  t.throws(() => parseOptions(['--size', '1M']), { code: 'MB_ERR_OUT_OF_RANGE', message: /^--size/ });
  t.throws(() => parseOptions(['--dir', '/nonexistent/place']), { code: 'MB_ERR_INVALID_ARGUMENT', message: /^--dir/ });
  t.throws(() => parseOptions(['--no-such-flag']), { code: 'ERR_PARSE_ARGS_UNKNOWN_OPTION' });
});

t.test('percentile: nearest rank, missing values skipped', async (t) => {
  const hundred = Array.from({ length: 100 }, (_, index) => index + 1);
  t.equal(percentile(hundred, 99), 99, 'p99 of 1..100 is the 99th value');
  t.equal(percentile(hundred, 50), 50);
  t.equal(percentile([3, null, 1, 2], 99), 3, 'with few values p99 is the largest');
  t.equal(percentile([null], 99), null);
});
