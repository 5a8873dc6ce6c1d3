// Proves `meshblock loadtest`, in two parts.
//
// The translation, in-process and pure: a table of diskspd flag sets (the ones Windows
// guides and diskspd's own samples use) and the fio options each must become, read back from
// the job file text that fio gets; bad or unsupported diskspd flags refused with an error
// whose `field` names the flag; VOLUME to URI, native flags, and fitting the region to the
// export. fio's stdout parser is fed a report with fio's messages inside it, as fio writes them.
//
// The runs, with real programs: the real `meshblock nbd serve` on a sparse file and the real
// `meshblock loadtest` process driving the real fio nbd engine against it, for 2-3 s each:
// native flags, --json, diskspd flags (the translated job printed, and no byte written past
// the -c region in the file itself), --verify crc32c (blocks read back and checked). And the
// failures: an unknown export, the server killed mid-run (fio's I/O error reported, exit 1),
// and SIGINT (forwarded to fio, partial summary, exit 1). Numbers are checked to be positive
// and ordered, never against timings.

import { once } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { InvalidArgumentError, MeshblockError } from '../../src/common/errors.js';
import { fioJobText, translateDiskspd } from '../../src/cli/diskspd.js';
import {
  FioOutputParser,
  fitJobToExport,
  formatProgress,
  loadtestJob,
  progressSample,
  volumeUri,
  type FioReport,
  type LoadtestArgs,
  type LoadtestSummary,
} from '../../src/cli/loadtest.js';
import { createRootLogger } from '../../src/cli/log.js';
import { sparseFile } from '../helpers/files.js';
import { runMeshblock, startMeshblock, startNbdServe, type DaemonHandle } from '../helpers/processes.js';

const MiB = 1024 * 1024;

/** The [global] options of a job file, as fio reads them. */
function fioOptions(text: string): Record<string, string> {
  const options: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)=(.*)$/.exec(line);
    if (match !== null) options[match[1] as string] = match[2] as string;
  }
  return options;
}

function fieldOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof MeshblockError && 'field' in err) return String(err.field);
    throw err;
  }
  return '(no error)';
}

t.test('diskspd flags become fio options', async (t) => {
  // [diskspd flags, fio options that must be there, options that must not be there, comment that must be there]
  const cases: Array<[string[], Record<string, string>, string[], RegExp?]> = [
    [
      ['-b4k', '-d60', '-L', '-o2', '-t4', '-r', '-w70', '-c500M'],
      { ioengine: 'nbd', rw: 'randrw', rwmixwrite: '70', bs: '4k', iodepth: '2', numjobs: '4', size: '500m', time_based: '1', runtime: '60', ramp_time: '5', lat_percentiles: '1', percentile_list: '50:99:99.9', group_reporting: '1', thread: '1' },
      ['blockalign', 'offset', 'uri', 'verify'],
      /-L: latency is always measured/,
    ],
    // Everything defaulted as diskspd does: 64K sequential reads, 2 in flight, 1 thread, 5 s warm-up.
    [['-d5'], { rw: 'read', bs: '64k', iodepth: '2', numjobs: '1', runtime: '5', ramp_time: '5' }, ['rwmixwrite', 'size'], /defaults for flags not given: -b64K -o2 -t1 -W5/],
    // One quoted string holds several flags; -r with the block size as alignment adds nothing.
    [['-w100 -r4k -b4k'], { rw: 'randwrite', bs: '4k' }, ['rwmixwrite', 'blockalign']],
    [['-b8k', '-r4k'], { rw: 'randread', bs: '8k', blockalign: '4k' }, []],
    [['-w', '-b4k'], { rw: 'read' }, ['rwmixwrite']],
    [['-w0', '-r'], { rw: 'randread' }, ['rwmixwrite']],
    [['-w50', '-b4k'], { rw: 'rw', rwmixwrite: '50' }, []],
    [['-b4K', '-s16K'], { rw: 'read:12k', bs: '4k' }, []],
    [['-b4k', '-s'], { rw: 'read' }, []],
    // diskspd's own sample: 8 threads one block apart, each striding 8 blocks (sequential overall).
    [
      ['-c2G', '-b4K', '-F8', '-T1b', '-s8b', '-o32', '-W60', '-d60', '-Sh'],
      { rw: 'read:28k', bs: '4k', numjobs: '8', offset_increment: '4k', iodepth: '32', size: '2g', ramp_time: '60', runtime: '60' },
      [],
      /-Sh: not translated: .*no page cache.*write-through/,
    ],
    [['-c100b', '-b4K'], { size: '400k' }, []],
    [['-B1M', '-c10M', '-b4k'], { offset: '1m', size: '9m' }, []],
    [['-f8M', '-c10M'], { size: '8m' }, [], /-c10M: diskspd would create a file this size/],
    [['-fr', '-c1G'], { size: '1g' }, [], /-fr: Windows cache-manager access hints/],
    [['-z'], { randrepeat: '0' }, ['randseed']],
    [['-z42'], { randseed: '42' }, ['randrepeat']],
    [['-Z', '-w100'], { zero_buffers: '1' }, ['refill_buffers']],
    [['-Zr', '-w100'], { refill_buffers: '1' }, ['zero_buffers']],
    [['-Z1G', '-w100'], {}, ['refill_buffers', 'zero_buffers'], /-Z1G: a random write buffer reused/],
    [['-rs30', '-b4k', '-w20'], { rw: 'randrw', percentage_random: '30', rwmixwrite: '20' }, []],
    // diskspd takes / as well as -.
    [['/b4k', '/d30', '/o8'], { bs: '4k', runtime: '30', iodepth: '8' }, []],
    [['-h'], {}, [], /-h: not translated: .*write-through/],
    [['-Su'], {}, [], /-Su: not translated: fio's nbd engine has no page cache to bypass \(direct=1 means nothing to it\)$/m],
    [['-W0', '-d1'], { runtime: '1' }, ['ramp_time']],
    [['-s8k', '-r', '-b4k'], { rw: 'randread' }, [], /-s8k: ignored: -r overrides -s/],
    [['-C5', '-v', '-P100', '-D500'], {}, [], /-C5: cool-down not translated/],
    [['-O8', '-F2'], { iodepth: '8', numjobs: '2' }, []],
    [['-T64k', '-t1'], {}, [], /-T64k: thread stride has no effect with one thread/],
  ];
  for (const [flags, present, absent, comment] of cases) {
    const label = flags.join(' ');
    const text = fioJobText(translateDiskspd(flags));
    const options = fioOptions(text);
    t.match(options, present, `${label}: fio options`);
    for (const name of absent) t.notOk(name in options, `${label}: no ${name}`);
    t.match(text, new RegExp(`^# translated from diskspd: ${label.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`, 'm'), `${label}: says where it came from`);
    if (comment !== undefined) t.match(text, comment, `${label}: explained`);
    t.match(text, /\n\n\[loadtest\]\n$/, `${label}: one job section, last`);
  }
});

t.test('bad diskspd flags are refused, naming the flag', async (t) => {
  const cases: Array<[string[], string]> = [
    [[], '--diskspd'],
    [['-q'], '-q'],
    [['-g100'], '-g'],
    [['-a0,1'], '-a'],
    [['-x'], '-x'],
    [['-?'], '-?'],
    [['-Xprofile.xml'], '-X'],
    [['-b4k', 'testfile.dat'], '--diskspd'],
    [['#1'], '--diskspd'],
    [['-b'], '-b'],
    [['-b4x'], '-b'],
    [['-b4b'], '-b'],
    [['-b64M'], '-b'],
    [['-b0'], '-b'],
    [['-b4k', '-b8k'], '-b'],
    [['-w101'], '-w'],
    [['-w-5'], '-w'],
    [['-t4', '-F4'], '-F'],
    [['-o2', '-O2'], '-O'],
    [['-o0'], '-o'],
    [['-t999'], '-t'],
    [['-d0'], '-d'],
    [['-dx'], '-d'],
    [['-si'], '-s'],
    [['-b8k', '-s4k'], '-s'],
    [['-B10M', '-c10M'], '-B'],
    [['-c0'], '-c'],
    [['-cb'], '-c'],
    [['-Sx'], '-S'],
    [['-L1'], '-L'],
    [['-hx'], '-h'],
    [['-Z1G,data.bin'], '-Z'],
    [['-rs'], '-rs'],
    [['-rs101'], '-rs'],
    [['-r0'], '-r'],
    [['-z-1'], '-z'],
    [['-P0'], '-P'],
    [['-vv'], '-v'],
  ];
  for (const [flags, field] of cases) {
    t.equal(fieldOf(() => translateDiskspd(flags)), field, `${flags.join(' ') || '(none)'} is refused naming ${field}`);
  }
  let message = '';
  try {
    translateDiskspd(['-g100']);
  } catch (err) {
    t.type(err, InvalidArgumentError);
    t.equal((err as InvalidArgumentError).code, 'MB_ERR_INVALID_ARGUMENT');
    message = (err as Error).message;
  }
  t.match(message, /-g100/, 'the message quotes the flag as given');
});

const noFlags: Omit<LoadtestArgs, 'volume' | 'nbd' | 'socket' | 'json' | 'log-level'> = {
  rw: undefined,
  bs: undefined,
  iodepth: undefined,
  numjobs: undefined,
  rwmixwrite: undefined,
  runtime: undefined,
  size: undefined,
  verify: undefined,
  diskspd: undefined,
};

t.test('VOLUME, native flags and the region', async (t) => {
  t.equal(volumeUri({ volume: 'vol1', nbd: undefined, socket: undefined }), 'nbd://127.0.0.1:10809/vol1');
  t.equal(volumeUri({ volume: 'my vol', nbd: '[::1]:5000', socket: undefined }), 'nbd://[::1]:5000/my%20vol');
  t.equal(volumeUri({ volume: 'v', nbd: undefined, socket: '/run/nbd sock' }), 'nbd+unix:///v?socket=/run/nbd%20sock');
  t.equal(volumeUri({ volume: 'nbd+unix:///v?socket=/s', nbd: undefined, socket: undefined }), 'nbd+unix:///v?socket=/s');
  t.equal(fieldOf(() => volumeUri({ volume: 'http://h/v', nbd: undefined, socket: undefined })), 'VOLUME');
  t.equal(fieldOf(() => volumeUri({ volume: 'nbd://h/v', nbd: 'h:1', socket: undefined })), '--nbd/--socket');
  t.equal(fieldOf(() => volumeUri({ volume: 'v', nbd: 'h:0', socket: undefined })), '--nbd');

  const defaults = fioOptions(fioJobText(loadtestJob(noFlags)));
  t.match(defaults, { rw: 'randrw', rwmixwrite: '50', bs: '4k', iodepth: '16', numjobs: '1', runtime: '60', time_based: '1' });
  t.notOk('ramp_time' in defaults, 'no warm-up unless diskspd asks');
  const native = fioOptions(fioJobText(loadtestJob({ ...noFlags, rw: 'write', bs: '1M', iodepth: 4, numjobs: 2, runtime: '2m', size: '64M' })));
  t.match(native, { rw: 'write', bs: '1m', iodepth: '4', numjobs: '2', runtime: '120', size: '64m' });
  t.notOk('rwmixwrite' in native);

  const refused: Array<[Partial<typeof noFlags>, string]> = [
    [{ bs: '4k', diskspd: ['-b4k'] }, '--bs'],
    [{ runtime: '5', diskspd: ['-d5'] }, '--runtime'],
    [{ rw: 'randread', verify: 'crc32c' }, '--verify'],
    [{ diskspd: ['-w50', '-T1M', '-t2'], verify: 'crc32c' }, '--verify'],
    [{ rw: 'read', rwmixwrite: 20 }, '--rwmixwrite'],
    [{ rwmixwrite: 101 }, '--rwmixwrite'],
    [{ iodepth: 0 }, '--iodepth'],
    [{ iodepth: 1.5 }, '--iodepth'],
    [{ numjobs: Number.NaN }, '--numjobs'],
    [{ bs: '64M' }, '--bs'],
    [{ bs: 'big' }, '--bs'],
    [{ runtime: '5x' }, '--runtime'],
    [{ runtime: '0' }, '--runtime'],
    [{ size: '1k' }, '--size'],
  ];
  for (const [flags, field] of refused) t.equal(fieldOf(() => loadtestJob({ ...noFlags, ...flags })), field, `${JSON.stringify(flags)} is refused naming ${field}`);

  const whole = fitJobToExport(loadtestJob(noFlags), 'nbd://h/v', 64 * MiB, '--size');
  t.equal(whole.sizeBytes, 64 * MiB, 'the whole export by default');
  t.equal(whole.uri, 'nbd://h/v');
  t.match(fioJobText(whole), /^uri=nbd:\/\/h\/v$/m);
  t.equal(fieldOf(() => fitJobToExport(loadtestJob({ ...noFlags, size: '65M' }), 'u', 64 * MiB, '--size')), '--size', 'a region past the end is refused');
  t.equal(fieldOf(() => fitJobToExport(translateDiskspd(['-B64M']), 'u', 64 * MiB, '-B')), '-B', 'an offset at the end is refused');
  const strided = fitJobToExport(translateDiskspd(['-t4', '-T1M', '-b4k']), 'u', 64 * MiB, '-T');
  t.equal(strided.sizeBytes, 61 * MiB, 'the last thread’s region ends at the end of the export');
  const verifying = fitJobToExport(loadtestJob({ ...noFlags, numjobs: 3, verify: 'crc32c' }), 'u', 64 * MiB, '--size');
  t.equal(verifying.offsetIncrementBytes, verifying.sizeBytes, 'verifying jobs get regions of their own');
  t.ok((verifying.sizeBytes as number) * 3 <= 64 * MiB && (verifying.sizeBytes as number) % 4096 === 0, 'the regions fit and are whole blocks');
  t.match(fioOptions(fioJobText(verifying)), { verify: 'crc32c', verify_fatal: '1', verify_state_save: '0', verify_backlog: '1024' });
});

t.test('fio stdout: reports and fio messages, even a message inside a report', async (t) => {
  const reports: FioReport[] = [];
  const parser = new FioOutputParser((report) => reports.push(report), createRootLogger('fatal', 'test'));
  const side = (ios: number): string =>
    `{ "io_bytes" : ${ios * 4096}, "total_ios" : ${ios}, "runtime" : 1000, "lat_ns" : { "mean" : 1000.0, "max" : 9000, "percentile" : { "50.000000" : 900 } } }`;
  const report = (ios: number, message?: string): string =>
    ['{', '  "timestamp_ms" : 1000,', ...(message === undefined ? [] : [message]), '  "jobs" : [', `    { "error" : 0, "elapsed" : 1, "read" : ${side(ios)}, "write" : ${side(0)} }`, '  ]', '}', ''].join('\n');
  const text = `fio: connected to NBD server\n${report(10)}${report(20, 'fio: pid=1, err=5/file:io_u.c:1, func=io_u error, error=Input/output error')}not a report\n`;
  // Fed in pieces that split lines, as a pipe delivers them.
  for (let offset = 0; offset < text.length; offset += 7) parser.push(text.slice(offset, offset + 7));
  parser.end();
  t.same(reports.map((r) => r.jobs[0]?.read.total_ios), [10, 20], 'both reports parsed');
  t.same(parser.messages, ['fio: pid=1, err=5/file:io_u.c:1, func=io_u error, error=Input/output error', 'not a report'], 'messages kept, the connect chatter dropped');
});

t.test('progress: rates between reports, fio\'s average across its warm-up reset', async (t) => {
  const job = translateDiskspd(['-d10', '-W2', '-w50', '-r']);
  const side = (ios: number, runtimeMs: number): FioReport['jobs'][number]['read'] => ({ io_bytes: ios * 65536, total_ios: ios, runtime: runtimeMs, lat_ns: { mean: 1, max: 1 } });
  const report = (timestampMs: number, elapsedS: number, ios: number, runtimeMs: number): FioReport => ({
    timestamp_ms: timestampMs,
    jobs: [{ error: 0, elapsed: elapsedS, read: side(ios, runtimeMs), write: side(ios / 2, runtimeMs) }],
  });
  const first = progressSample(null, report(1000, 1, 500, 1000), job);
  t.match(first, { elapsedS: 1, totalS: 12, warmingUp: true, readIops: 500, writeIops: 250 }, 'the first report: fio\'s average');
  t.match(formatProgress(first), /^ 1s\/12s  warm-up  read 500 IOPS 32\.8 MB\/s  write 250 IOPS 16\.4 MB\/s$/);
  const reset = progressSample(report(2000, 2, 1000, 2000), report(3000, 3, 300, 500), job);
  t.match(reset, { warmingUp: false, readIops: 600 }, 'counters reset after the warm-up: fio\'s average again');
  const steady = progressSample(report(3000, 3, 300, 500), report(5000, 5, 4300, 2500), job);
  t.match(steady, { readIops: 2000, writeIops: 1000, readBytesPerSecond: 2000 * 65536 }, 'the rate between two reports');
  t.match(formatProgress(steady), /^ 5s\/12s  read 2000 IOPS 131\.1 MB\/s  write 1000 IOPS 65\.5 MB\/s$/);
});

// ---------------------------------------------------------------------------------------
// Real runs

interface Served {
  file: string;
  nbd: string;
  server: DaemonHandle;
}

async function serveVolume(t: Test, sizeBytes = 64 * MiB): Promise<Served> {
  const dir = t.testdir();
  const file = sparseFile(dir, 'vol1.img', sizeBytes);
  const server = await startNbdServe(t, ['--file', file, '--name', 'vol1']);
  return { file, nbd: `127.0.0.1:${server.port}`, server };
}

/** The read and write rows of the text summary: IOPS and MB/s. */
function summaryRows(stdout: string): { read: [number, number]; write: [number, number] } {
  const row = (label: string): [number, number] => {
    const match = new RegExp(`^${label}\\s+(\\d+)\\s+([\\d.]+)\\s`, 'm').exec(stdout);
    return [Number(match?.[1] ?? Number.NaN), Number(match?.[2] ?? Number.NaN)];
  };
  return { read: row('read'), write: row('write') };
}

/** A scratch TMPDIR for the loadtest process, to see that it leaves nothing behind. */
function scratchTmp(t: Test): string {
  const dir = path.join(t.testdir(), 'tmp');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** Waits until fio has written to the served file (its allocated blocks grow). */
async function untilWritten(file: string): Promise<void> {
  for (let attempt = 0; attempt < 600 && fs.statSync(file).blocks === 0; attempt += 1) await new Promise((resolve) => setTimeout(resolve, 50));
}

t.test('native flags: the job, a summary with positive numbers, nothing left behind', async (t) => {
  const { nbd } = await serveVolume(t);
  const tmp = scratchTmp(t);
  const cwdBefore = fs.readdirSync(process.cwd());
  const result = await runMeshblock(['loadtest', 'vol1', '--nbd', nbd, '--runtime', '2s', '--numjobs', '2', '--iodepth', '8'], { env: { TMPDIR: tmp } });
  t.equal(result.code, 0, result.stderr);
  t.match(result.stdout, new RegExp(`^uri=nbd://${nbd}/vol1$`, 'm'), 'the job names the volume');
  t.match(fioOptions(result.stdout), { ioengine: 'nbd', rw: 'randrw', numjobs: '2', iodepth: '8', runtime: '2', size: '64m' });
  const rows = summaryRows(result.stdout);
  t.ok(rows.read[0] > 0 && rows.read[1] > 0, `read IOPS and MB/s are positive: ${rows.read.join(', ')}`);
  t.ok(rows.write[0] > 0 && rows.write[1] > 0, `write IOPS and MB/s are positive: ${rows.write.join(', ')}`);
  t.match(result.stdout, /lat p50 +lat p99 +lat p99\.9/);
  t.match(result.stdout, /^read .*[µm]?s +[\d.]+ [µm]?s +[\d.]+ [µm]?s$/m, 'three latencies for reads');
  t.match(result.stdout, /^errors: none$/m);
  t.same(fs.readdirSync(tmp), [], 'the scratch directory is removed');
  t.same(fs.readdirSync(process.cwd()), cwdBefore, 'no file left in the current directory');
});

t.test('--json: a summary that parses, with ordered latency percentiles', async (t) => {
  const { nbd } = await serveVolume(t);
  const result = await runMeshblock(['loadtest', 'vol1', '--nbd', nbd, '--runtime', '2', '--rw', 'randrw', '--rwmixwrite', '30', '--json']);
  t.equal(result.code, 0, result.stderr);
  const summary = JSON.parse(result.stdout) as LoadtestSummary;
  t.equal(summary.uri, `nbd://${nbd}/vol1`);
  t.match(summary.fioJob, /^rwmixwrite=30$/m, 'the job that ran is in the summary');
  t.ok(summary.measuredMs > 0);
  t.equal(summary.interrupted, false);
  t.equal(summary.errno, 0);
  t.equal(summary.error, null);
  for (const direction of ['read', 'write'] as const) {
    const side = summary[direction];
    t.ok(side.ioCount > 0 && side.ioBytes === side.ioCount * 4096, `${direction}: I/Os of 4 KiB`);
    t.ok(side.iops > 0 && side.bytesPerSecond > 0, `${direction}: positive rates`);
    const { latencyUsP50: p50, latencyUsP99: p99, latencyUsP999: p999, latencyUsMax: max } = side;
    t.ok(p50 !== null && p99 !== null && p999 !== null && max !== null && p50 > 0 && p50 <= p99 && p99 <= p999 && p999 <= max, `${direction}: 0 < p50 <= p99 <= p99.9 <= max (${p50}, ${p99}, ${p999}, ${max})`);
  }
});

t.test('diskspd flags: the translated job is printed, and the I/O stays in the -c region', async (t) => {
  const { file, nbd } = await serveVolume(t);
  const flags = ['-b8k', '-d2', '-W0', '-L', '-o2', '-t2', '-r', '-w30', '-c16M'];
  const result = await runMeshblock(['loadtest', 'vol1', '--nbd', nbd, '--diskspd', ...flags]);
  t.equal(result.code, 0, result.stderr);
  t.match(result.stdout, `# translated from diskspd: ${flags.join(' ')}\n`);
  t.match(fioOptions(result.stdout), { rw: 'randrw', rwmixwrite: '30', bs: '8k', iodepth: '2', numjobs: '2', size: '16m', runtime: '2' });
  const rows = summaryRows(result.stdout);
  t.ok(rows.read[0] > 0 && rows.write[0] > 0, `positive IOPS: ${rows.read[0]}, ${rows.write[0]}`);
  const image = fs.readFileSync(file);
  t.ok(image.subarray(0, 16 * MiB).some((byte) => byte !== 0), 'fio wrote into the first 16 MiB');
  t.ok(image.subarray(16 * MiB).every((byte) => byte === 0), 'and nothing past them');

  // One quoted string works too, and holds -h, which as its own word would be --help.
  const quoted = await runMeshblock(['loadtest', 'vol1', '--nbd', nbd, '--diskspd', '-b4k -d2 -W0 -h -c8M', '--json']);
  t.equal(quoted.code, 0, quoted.stderr);
  const summary = JSON.parse(quoted.stdout) as LoadtestSummary;
  t.match(summary.fioJob, /^# -h: not translated/m);
  t.ok(summary.read.iops > 0, 'reads by default, as in diskspd');
  t.equal(summary.write.ioCount, 0);
});

t.test('--verify crc32c: blocks are read back and checked', async (t) => {
  const { nbd } = await serveVolume(t);
  const result = await runMeshblock(['loadtest', 'vol1', '--nbd', nbd, '--runtime', '2', '--rw', 'randwrite', '--numjobs', '2', '--verify', 'crc32c', '--json']);
  t.equal(result.code, 0, result.stderr);
  const summary = JSON.parse(result.stdout) as LoadtestSummary;
  t.match(fioOptions(summary.fioJob), { verify: 'crc32c', verify_state_save: '0', offset_increment: '32m', size: '32m' });
  t.ok(summary.write.ioCount > 0, `${summary.write.ioCount} blocks written`);
  t.ok(summary.read.ioCount > 0, `${summary.read.ioCount} blocks read back and verified`);
  t.equal(summary.errno, 0, 'no verification failure');
});

t.test('usage: --help documents the diskspd syntax; bad flags exit 2 with one line', async (t) => {
  const help = await runMeshblock(['loadtest', '--help']);
  t.equal(help.code, 0);
  for (const text of ['--diskspd', '--nbd', '--socket', '--verify', '--json', '-b4k -d60 -L -o2 -t4 -r -w70 -c500M', 'write diskspd\'s -h as -Sh']) t.match(help.stdout, text);
  const cases: Array<[string[], RegExp]> = [
    [['loadtest', 'vol1', '--diskspd', '-b4k', '-g100'], /^meshblock: -g: diskspd -g100 is not supported/],
    [['loadtest', 'vol1', '--diskspd', '-b4k', 'testfile.dat'], /--diskspd: 'testfile.dat' is not a flag/],
    [['loadtest', 'vol1', '--bs', '4k', '--diskspd', '-b4k'], /--bs: give the workload with --diskspd or with native flags/],
    [['loadtest', 'vol1', '--rw', 'read', '--verify', 'crc32c'], /--verify:/],
    [['loadtest', 'vol1', '--nbd', '127.0.0.1:1', '--socket', '/tmp/s'], /mutually exclusive/],
    [['loadtest', 'vol1', '--bogus'], /Unknown argument: --bogus/],
  ];
  for (const [args, pattern] of cases) {
    const result = await runMeshblock(args);
    t.equal(result.code, 2, `${args.join(' ')} exits 2`);
    t.match(result.stderr, pattern);
    t.equal(result.stderr.trim().split('\n').length, 1, `${args.join(' ')}: one line`);
  }
});

t.test('an unknown export: exit 1, one line naming it', async (t) => {
  const { nbd } = await serveVolume(t);
  const result = await runMeshblock(['loadtest', 'nosuch', '--nbd', nbd, '--runtime', '2']);
  t.equal(result.code, 1);
  t.match(result.stderr, new RegExp(`^meshblock: cannot open nbd://${nbd}/nosuch: .*nosuch`));
  t.equal(result.stderr.trim().split('\n').length, 1);
  t.equal(result.stdout, '', 'no job printed, fio never started');
});

/**
 * Runs loadtest as a process, ready once its job is printed. `finished` resolves with the
 * exit code once its output has all been read.
 */
async function startLoadtest(t: Test, args: string[]): Promise<{ daemon: DaemonHandle; stdout: () => string; finished: Promise<number | null> }> {
  const daemon = await startMeshblock(t, ['loadtest', ...args], { ready: /^\[loadtest\]$/m });
  const { stdout: out, stderr: err } = daemon.process;
  let stdout = '';
  out?.on('data', (text: string) => (stdout += text));
  const finished = Promise.all([daemon.exited, out && once(out, 'end'), err && once(err, 'end')]).then(([code]) => code);
  return { daemon, stdout: () => stdout, finished };
}

t.test('the server killed mid-run: fio’s I/O error is reported, exit 1', async (t) => {
  const { file, nbd, server } = await serveVolume(t);
  const { daemon, stdout, finished } = await startLoadtest(t, ['vol1', '--nbd', nbd, '--runtime', '20']);
  await untilWritten(file);
  await server.kill();
  const code = await finished;
  t.equal(code, 1);
  t.match(stdout(), /^errors: (?!none)./m, 'the summary reports the error');
  t.match(daemon.stderr(), /meshblock: fio stopped on .*(Connection reset|recv|poll|closed|EIO|error)/i);
});

t.test('SIGINT is forwarded to fio: a partial summary, exit 1', async (t) => {
  const { file, nbd } = await serveVolume(t);
  const { daemon, stdout, finished } = await startLoadtest(t, ['vol1', '--nbd', nbd, '--runtime', '20', '--rw', 'randwrite']);
  await untilWritten(file);
  daemon.process.kill('SIGINT');
  const code = await finished;
  t.equal(code, 1);
  t.match(stdout(), / measured \(interrupted\);/);
  const rows = summaryRows(stdout());
  t.ok(rows.write[0] > 0, `writes counted up to the interruption: ${rows.write[0]} IOPS`);
  t.match(daemon.stderr(), /^meshblock: interrupted by SIGINT: the summary covers the first [\d.]+ s$/m);
});
