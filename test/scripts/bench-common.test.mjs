// Proves the helpers that scripts/bench-common.mjs gives the bench scripts keep what each bench
// relied on when it had its own copy: a report section is rewritten in place (bench-sds) or
// moved to the end (bench-lab) with the rest of the document and the hand-written analysis
// kept; the shared options default and refuse as the benches documented, naming the flag by
// its stable code; the median skips missing values; a tracked child's stderr is cut to its
// tail only when asked, and a failed child's error shows how it ended and its last lines.
// Real files in a tap testdir and real child processes (node -e); nothing is mocked.

import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { killRunning, median, parseSharedOptions, processFailure, run, spawnTracked, writeSection } from '../../scripts/bench-common.mjs';

const MiB = 1024 * 1024;
const markers = { heading: '## SDS benchmark', analysisStart: '<!-- sds-analysis:start -->', analysisEnd: '<!-- sds-analysis:end -->' };

function section(body, analysis) {
  return `${markers.heading}\n\n${body}\n\n${markers.analysisStart}\n${analysis}\n${markers.analysisEnd}\n`;
}

t.test('writeSection: in place or at the end, keeping the rest and the analysis', async (t) => {
  const dir = t.testdir();
  const doc = path.join(dir, 'benchmarks.md');
  const before = '# Benchmarks\n\nintro\n\n';
  const after = '## Lab benchmark\n\nlab numbers\n';
  fs.writeFileSync(doc, `${before}${section('old numbers', 'why it is slow')}\n${after}`);

  let kept;
  writeSection(doc, markers, (analysis) => {
    kept = analysis;
    return section('new numbers', analysis);
  });
  t.equal(kept, 'why it is slow', 'the hand-written analysis is handed back');
  t.equal(fs.readFileSync(doc, 'utf8'), `${before}${section('new numbers', 'why it is slow')}\n${after}`, 'replaced in place');

  writeSection(doc, { ...markers, atEnd: true }, (analysis) => section('newer numbers', analysis));
  t.equal(fs.readFileSync(doc, 'utf8'), `${before}${after}\n${section('newer numbers', 'why it is slow')}`, 'moved to the end');

  const fresh = path.join(dir, 'fresh.md');
  writeSection(fresh, markers, (analysis) => {
    t.equal(analysis, null, 'no analysis in a new file');
    return section('first numbers', '_Not written yet._');
  });
  t.equal(fs.readFileSync(fresh, 'utf8'), section('first numbers', '_Not written yet._'), 'a missing file is created');
  t.same(fs.readdirSync(dir).sort(), ['benchmarks.md', 'fresh.md'], 'no temporary file is left');
});

t.test('parseSharedOptions: defaults, --quick, and refusals by code', async (t) => {
  const defaults = { sizeText: '1G', sizeTextQuick: '256M', rounds: '2', roundsQuick: '1', sizeBytesMin: 64 * MiB };
  t.match(parseSharedOptions({ quick: false }, defaults), { sizeBytes: 1024 * MiB, runtimeSeconds: 10, rampSeconds: 2, roundCount: 2, outPath: null });
  t.match(parseSharedOptions({ quick: true }, defaults), { sizeBytes: 256 * MiB, runtimeSeconds: 3, rampSeconds: 1, roundCount: 1 });
  t.match(parseSharedOptions({ quick: true, runtime: '7', rounds: '3' }, defaults), { runtimeSeconds: 7, roundCount: 3 }, 'given values win over --quick');
  t.throws(() => parseSharedOptions({ quick: false, size: '32M' }, defaults), { code: 'MB_ERR_OUT_OF_RANGE', message: /^--size/ });
  t.throws(() => parseSharedOptions({ quick: false, size: '100M', rounds: 'x' }, defaults), { code: 'MB_ERR_INVALID_ARGUMENT', message: /^--rounds/ });
  t.throws(() => parseSharedOptions({ quick: false, 'ramp-time': '601' }, defaults), { code: 'MB_ERR_OUT_OF_RANGE', message: /^--ramp-time/ });
});

t.test('median: middle value, mean of the middle two, missing values skipped', async (t) => {
  t.equal(median([5, 1, 3]), 3);
  t.equal(median([4, 1, 3, 2]), 2.5);
  t.equal(median([null, 9, 1, null]), 5);
  t.equal(median([null]), null);
});

t.test('tracked children: stderr cut only when asked, failures say how and show the tail', async (t) => {
  t.teardown(() => killRunning('SIGKILL'));
  // 64 KiB on stderr, then exit 3.
  const noisy = ['-e', "process.stderr.write('x'.repeat(65536) + '\\nlast line\\n'); process.exitCode = 3"];
  const whole = await run(process.execPath, noisy);
  t.equal(whole.stderr.length, 65536 + '\nlast line\n'.length, 'kept whole by default');
  const cut = await run(process.execPath, noisy, 30_000, { stderrKeptBytes: 1024 });
  t.ok(cut.stderr.length <= 2 * 1024, `cut to its tail (${cut.stderr.length} bytes)`);
  t.ok(cut.stderr.endsWith('last line\n'), 'the end is what is kept');
  const fio = spawnTracked(process.execPath, noisy, { fio: true, stderrKeptBytes: 1024 });
  await fio.state.exit;
  t.equal(fio.state.stderr.length, whole.stderr.length, "fio's stderr is always whole");

  const error = processFailure('SERVER', 'node', cut);
  t.equal(error.code, 'SERVER');
  t.match(error.message, /^node exited with 3:\n/);
  t.ok(error.message.endsWith('last line'), error.message.slice(-40));
});
