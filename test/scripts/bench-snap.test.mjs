// Proves scripts/bench-snap.mjs reads its arguments as its usage says (defaults, --quick,
// refusals by flag name: snapshots that would not fit in the run), and the two helpers its
// copy-on-write numbers rest on: fio's IOPS log read into windows, and the first window back
// at 90% of the speed before the snapshot. Importing the script runs nothing.

import t from 'tap';
import { parseIopsLog, parseOptions, recoveredAtMs } from '../../scripts/bench-snap.mjs';

const MiB = 1024 * 1024;

t.test('parseOptions: defaults, --quick, given values', async (t) => {
  t.match(parseOptions([]), { sizeBytes: 512 * MiB, runtimeSeconds: 20, rampSeconds: 2, roundCount: 3, snapshotCount: 5, snapIntervalSeconds: 3, sharedNetwork: false, outPath: null });
  t.match(parseOptions(['--quick']), { sizeBytes: 128 * MiB, runtimeSeconds: 6, snapshotCount: 2, snapIntervalSeconds: 2, roundCount: 1 });
  t.match(parseOptions(['--snapshots', '3', '--snap-interval', '4', '--runtime', '30']), { snapshotCount: 3, snapIntervalSeconds: 4, runtimeSeconds: 30 });
  t.equal(parseOptions(['--help']), null);
});

t.test('parseOptions: refusals name the flag', async (t) => {
  t.throws(() => parseOptions(['--snapshots', '10']), { code: 'MB_ERR_OUT_OF_RANGE', message: /^--snapshots/ }, 'ten snapshots 3 s apart do not fit in 20 s');
  t.throws(() => parseOptions(['--snapshots', '0']), { code: 'MB_ERR_OUT_OF_RANGE', message: /^--snapshots/ });
  t.throws(() => parseOptions(['--snap-interval', 'soon']), { code: 'MB_ERR_INVALID_ARGUMENT', message: /^--snap-interval/ });
  t.throws(() => parseOptions(['--size', '1M']), { code: 'MB_ERR_OUT_OF_RANGE', message: /^--size/ });
});

t.test('the IOPS log and the recovery time', async (t) => {
  const windows = parseIopsLog('500, 1200, 1, 4096, 0\n1000, 3000, 1, 4096, 0\n\n1500, 9500, 1, 4096, 0\nnot a line\n');
  t.same(windows, [
    { atMs: 500, iops: 1200 },
    { atMs: 1000, iops: 3000 },
    { atMs: 1500, iops: 9500 },
  ]);
  t.equal(recoveredAtMs(windows, 10_000), 1500, '9500 is within 90% of 10000');
  t.equal(recoveredAtMs(windows, 20_000), null, 'never back within the run');
  t.equal(recoveredAtMs(windows, 1000), 500, 'at full speed from the first window');
});
