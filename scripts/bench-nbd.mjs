#!/usr/bin/env node
// Benchmark: `meshblock nbd serve` against nbdkit's file plugin, both serving the SAME file,
// driven by the same fio nbd-engine jobs. The storage is held equal, so the numbers compare
// the protocol cores (socket handling, request parsing, thread pools, reply path).
//
// How it keeps the comparison fair:
// - one test file, fully written once before any run, so both servers read real blocks
//   (not holes) and both find the whole file in the page cache;
// - both servers are started once and kept for the whole run, each with its default
//   number of I/O threads (meshblock: 16 libuv threads; nbdkit: 16 threads);
// - for every pattern the runs alternate meshblock, nbdkit, and the whole alternation is
//   repeated --rounds times; each server's result is the median of its rounds;
// - before every run the bench waits until the rest of the machine is quiet, fdatasyncs
//   the file (dirty pages left by the previous run are not written back during the next)
//   and reads it whole (a kernel that reclaims cold page cache would otherwise make one
//   server read from the disk), always the same way (--cache-fill, see fillPageCache);
// - besides fio's numbers it samples each server's CPU time, context switches and page
//   faults from /proc inside fio's measured window, to say per request where they differ,
//   and what else the machine was doing, to flag disturbed runs.
//
// Exit codes: 0 done, 1 a server failed to start or died, or fio reported an error,
// 2 bad usage, 128+N interrupted by signal N. Both servers are stopped and the temp dir
// is removed on every path out.
//
// Usage: node scripts/bench-nbd.mjs [--size 1G] [--runtime 10] [--ramp-time 2] [--rounds 2]
//          [--out docs/benchmarks.md] [--dir /tmp] [--cache-fill random|sequential] [--quick]

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { InvalidArgumentError } from '../dist/common/errors.js';
import { MiB, formatBytes } from '../dist/common/units.js';
import {
  BenchError,
  checkPaths,
  cpuSecondsOf,
  delay,
  describeBuild,
  disturbedPercentMin,
  exitRuntimeError,
  fillArgs,
  firstLine,
  firstLineMatching,
  freeLoopbackPort,
  handleSignals,
  host,
  interruptedExitCode,
  killRunning,
  machineBusyPercent,
  machineTicks,
  markdownTable,
  median,
  meshblockBin,
  parseSharedOptions,
  procStatFields,
  processFailure,
  quietBusyPercentMax,
  quietSampleMs,
  repoRoot,
  run,
  sharedOptionSpecs,
  spawnTracked,
  stopTracked,
  textTable,
  threadContextSwitches,
  throwIfInterrupted,
  waitForQuiet,
  writePseudorandom,
  optionsOrExitCode,
} from './bench-common.mjs';

/** How long a server has to say it is ready, and to exit after SIGTERM. */
const serverStartMs = 20_000;
const serverStopMs = 15_000;
/** fio gets its runtime plus this much before it is killed as hung. */
const fioSlackMs = 60_000;
/** Bytes of server stderr kept to show when it fails. */
const stderrKeptBytes = 16 * 1024;
/** The largest block size a pattern uses; the file must hold many of them. */
const sizeBytesMin = 64 * MiB;
/** How long before each run we wait for the rest of the machine to go quiet (bench-common). */
const quietWaitMsMax = 120_000;
/** Server counters are sampled this long after the ramp time ends (and half of it before the run ends). */
const sampleMarginMs = 500;

const usage = `Usage: node scripts/bench-nbd.mjs [options]

Runs fio (nbd engine) against meshblock nbd serve and nbdkit file, on one shared file.

  --size SIZE          test file size (binary units: 512M, 1G) [default: 1G]
  --runtime SECONDS    measured time per fio run [default: 10; --quick: 3]
  --ramp-time SECONDS  unmeasured warm-up per fio run [default: 2; --quick: 1]
  --rounds N           alternations per pattern; results are medians [default: 2; --quick: 1]
  --out FILE           also write the report as Markdown to FILE (a hand-written analysis
                       between its analysis markers is kept)
  --dir DIR            where the temp dir with the test file goes [default: ${os.tmpdir()}]
  --cache-fill MODE    how the file is read into the page cache before each run: random
                       (small folios, cheap 4k writes) or sequential (readahead; large folios
                       on recent kernels, where a 4k buffered write costs ~10x more)
                       [default: random]
  --quick              smoke test: --runtime 3 --ramp-time 1 --rounds 1 unless given
  -h, --help           this text
`;

/**
 * The fio patterns. `metric` says what the table reports: total IOPS (reads + writes) or
 * throughput in MB/s (10^6 bytes per second). `latency` names the direction whose
 * completion latency percentiles are reported.
 */
const patterns = [
  { id: 'randrw70-4k-qd32', title: '4k random R/W 70% write, QD32', fio: ['--rw=randrw', '--rwmixwrite=70', '--bs=4k', '--iodepth=32'], metric: 'iops' },
  { id: 'randread-4k-qd32', title: '4k random read, QD32', fio: ['--rw=randread', '--bs=4k', '--iodepth=32'], metric: 'iops' },
  { id: 'randwrite-4k-qd1', title: '4k random write, QD1', fio: ['--rw=randwrite', '--bs=4k', '--iodepth=1'], metric: 'iops', latency: 'write' },
  { id: 'read-1m-qd8', title: '1M sequential read, QD8', fio: ['--rw=read', '--bs=1M', '--iodepth=8'], metric: 'mbps' },
  { id: 'write-1m-qd8', title: '1M sequential write, QD8', fio: ['--rw=write', '--bs=1M', '--iodepth=8'], metric: 'mbps' },
];

const serverNames = ['meshblock', 'nbdkit'];
const cacheFillModes = ['random', 'sequential'];

const analysisStart = '<!-- analysis:start -->';
const analysisEnd = '<!-- analysis:end -->';

// --- arguments -------------------------------------------------------------------------

function parseOptions(argv) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: { ...sharedOptionSpecs, 'cache-fill': { type: 'string' } },
  });
  if (values.help) return null;
  const options = {
    ...parseSharedOptions(values, { sizeText: '1G', rounds: '2', roundsQuick: '1', sizeBytesMin }),
    cacheFill: values['cache-fill'] ?? 'random',
  };
  if (!cacheFillModes.includes(options.cacheFill)) {
    throw new InvalidArgumentError('--cache-fill', `must be one of ${cacheFillModes.join(', ')}, got '${options.cacheFill}'`);
  }
  checkPaths(values, options);
  return options;
}

// --- processes -------------------------------------------------------------------------

/**
 * A server's counters from /proc: CPU (utime + stime) and minor page faults of the whole
 * process, and context switches summed over its live threads (a thread's own count leaves
 * with it, so this is sampled while the connection's threads run). Null once it is gone.
 */
function sampleServer(pid, machine) {
  try {
    const fields = procStatFields(`/proc/${pid}/stat`);
    const { contextSwitches, threadCount } = threadContextSwitches(pid);
    // The main thread: meshblock's event loop, which does all its JavaScript work.
    const mainFields = procStatFields(`/proc/${pid}/task/${pid}/stat`);
    return {
      atMs: performance.now(),
      machine: machineTicks(),
      cpuSeconds: cpuSecondsOf(fields, machine.clockTicksPerSecond),
      mainCpuSeconds: cpuSecondsOf(mainFields, machine.clockTicksPerSecond),
      minorFaults: Number(fields[7]),
      contextSwitches,
      threadCount,
    };
  } catch {
    return null;
  }
}

async function startMeshblock(file) {
  const args = [meshblockBin, 'nbd', 'serve', '--file', file, '--listen', `${host}:0`];
  const { child, state } = spawnTracked(process.execPath, args, { stderrKeptBytes });
  const server = { name: 'meshblock', child, state, uri: '', port: 0, command: ['node', 'bin/meshblock.cjs', ...args.slice(1)] };
  const deadline = Date.now() + serverStartMs;
  for (;;) {
    const match = /serving .* at (nbd:\/\/127\.0\.0\.1:(\d+)\/)\s*$/m.exec(state.stdout);
    if (match !== null) {
      server.uri = match[1];
      server.port = Number(match[2]);
      server.command[server.command.indexOf(`${host}:0`)] = `${host}:${server.port}`;
      return server;
    }
    throwIfInterrupted();
    if (state.exited) throw processFailure('SERVER', 'meshblock nbd serve', state);
    if (Date.now() > deadline) throw new BenchError('SERVER', `meshblock nbd serve did not print its URI within ${serverStartMs} ms`);
    await delay(20);
  }
}

async function startNbdkit(file, workDir) {
  const port = await freeLoopbackPort();
  const pidFile = path.join(workDir, 'nbdkit.pid');
  // --pidfile is written once nbdkit accepts connections, so it doubles as the ready signal.
  const args = ['--foreground', '--exit-with-parent', '--ipaddr', host, '--port', String(port), '--pidfile', pidFile, 'file', `file=${file}`];
  const { child, state } = spawnTracked('nbdkit', args, { stderrKeptBytes });
  const server = { name: 'nbdkit', child, state, uri: `nbd://${host}:${port}/`, port, command: ['nbdkit', ...args] };
  const deadline = Date.now() + serverStartMs;
  for (;;) {
    if (fs.existsSync(pidFile) && fs.readFileSync(pidFile, 'utf8').trim() !== '') return server;
    throwIfInterrupted();
    if (state.exited) throw processFailure('SERVER', 'nbdkit', state);
    if (Date.now() > deadline) throw new BenchError('SERVER', `nbdkit did not write ${pidFile} within ${serverStartMs} ms`);
    await delay(20);
  }
}

// --- the test file ---------------------------------------------------------------------

/**
 * Sparse first (ftruncate), then preallocated (fallocate), then every byte written once with
 * pseudorandom data and synced: neither server may read holes or unwritten extents, which
 * the kernel answers without touching the page cache.
 */
async function createTestFile(file, sizeBytes) {
  const handle = await fs.promises.open(file, 'wx');
  try {
    await handle.truncate(sizeBytes);
    const allocate = await run('fallocate', ['--length', String(sizeBytes), file], 30_000, { stderrKeptBytes });
    const preallocated = allocate.code === 0;
    if (!preallocated) process.stderr.write(`fallocate failed (${allocate.stderr.trim()}); writing the file anyway\n`);
    await writePseudorandom(handle, sizeBytes);
    await handle.datasync();
    return preallocated;
  } finally {
    await handle.close();
  }
}

// --- fio -------------------------------------------------------------------------------

function fioArgs(pattern, uri, options) {
  return [
    `--name=${pattern.id}`,
    '--ioengine=nbd',
    `--uri=${uri}`,
    ...pattern.fio,
    '--numjobs=1',
    '--time_based',
    `--runtime=${options.runtimeSeconds}`,
    `--ramp_time=${options.rampSeconds}`,
    '--output-format=json',
  ];
}

/**
 * Reads the whole file through the page cache with fio, so every run starts with all of it
 * cached; `invalidate` first drops what is cached. How the pages are read decides the size of
 * the page-cache folios, and on kernels with large folios for ext4 (6.x) that decides what a
 * 4 KiB buffered write costs: ~4 µs into a 4 KiB folio, ~35-40 µs into a large one (measured
 * on the machine of docs/benchmarks.md). `random` (no readahead) gives small folios, as a
 * disk that was read at random would have; `sequential` gives the large folios that
 * readahead and big sequential writes leave.
 */
async function fillPageCache(file, sizeBytes, mode, invalidate) {
  const args = fillArgs(file, sizeBytes, mode, invalidate);
  const result = await run('fio', args, 120_000, { stderrKeptBytes });
  throwIfInterrupted();
  if (result.code !== 0) throw new BenchError('FIO', `fio could not fill the page cache: fio ${args.join(' ')}\n${result.stderr.trim()}`);
}

async function runFio(pattern, server, options, machine, file, fileHandle) {
  throwIfInterrupted();
  if (server.state.exited) throw processFailure('SERVER', server.name, server.state);
  const args = fioArgs(pattern, server.uri, options);
  const quiet = await waitForQuiet(machine.cpuCount, quietWaitMsMax);
  // The previous run's dirty pages are written back now, not during this run.
  await fileHandle.datasync();
  await fillPageCache(file, options.sizeBytes, options.cacheFill, false);
  throwIfInterrupted();
  const { child, state } = spawnTracked('fio', args, { fio: true });
  const timeoutMs = (options.runtimeSeconds + options.rampSeconds) * 1000 + fioSlackMs;
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  // The server is sampled inside fio's measured window (after the ramp time, before the
  // end), so connection setup and teardown are not counted.
  const samples = [];
  const sampleTimers = [options.rampSeconds * 1000 + sampleMarginMs, (options.rampSeconds + options.runtimeSeconds) * 1000 - sampleMarginMs / 2].map(
    (atMs) => setTimeout(() => samples.push(sampleServer(server.child.pid, machine)), atMs),
  );
  await state.exit;
  clearTimeout(timer);
  for (const sampleTimer of sampleTimers) clearTimeout(sampleTimer);
  throwIfInterrupted();
  if (server.state.exited) throw processFailure('SERVER', server.name, server.state);
  const commandLine = ['fio', ...args].join(' ');
  if (state.spawnError !== null) throw new BenchError('FIO', `cannot run fio: ${state.spawnError.message}`);
  if (state.code !== 0) {
    throw new BenchError('FIO', `fio exited with ${state.signal ?? state.code} against ${server.name}: ${commandLine}\n${state.stderr.trim()}`);
  }
  // fio prints "fio: connected to NBD server" on stdout before the JSON document.
  const jsonAt = state.stdout.search(/^\{/m);
  let report;
  try {
    report = JSON.parse(state.stdout.slice(jsonAt));
  } catch (err) {
    throw new BenchError('FIO', `fio printed no JSON report against ${server.name}: ${commandLine}\n${state.stdout.slice(0, 2000)}`, { cause: err });
  }
  const job = report.jobs?.[0];
  if (job === undefined) throw new BenchError('FIO', `fio report has no job against ${server.name}: ${commandLine}`);
  if (job.error !== 0) {
    throw new BenchError('FIO', `fio job error ${job.error} (${job.verror ?? ''}) against ${server.name}: ${commandLine}\n${state.stderr.trim()}`);
  }
  const totalIos = job.read.total_ios + job.write.total_ios;
  if (totalIos === 0) throw new BenchError('FIO', `fio completed no I/O against ${server.name}: ${commandLine}`);
  const [first, last] = samples;
  if (samples.length !== 2 || first === null || last === null) {
    throw new BenchError('SAMPLE', `could not sample ${server.name} (pid ${server.child.pid}) during the run`);
  }
  const windowSeconds = (last.atMs - first.atMs) / 1000;
  const iops = job.read.iops + job.write.iops;
  const serverCpuPercent = (100 * (last.cpuSeconds - first.cpuSeconds)) / windowSeconds;
  const fioCpuPercent = job.usr_cpu + job.sys_cpu;
  const machinePercent = machineBusyPercent(first.machine, last.machine, machine.cpuCount);
  const result = {
    iops,
    mbps: (job.read.bw_bytes + job.write.bw_bytes) / 1e6,
    serverCpuPercent,
    mainCpuPercent: (100 * (last.mainCpuSeconds - first.mainCpuSeconds)) / windowSeconds,
    threadCount: last.threadCount,
    fioCpuPercent,
    // Per request, from the server's rates in the sampled window over fio's IOPS.
    serverCpuUsPerIo: (1e6 * (last.cpuSeconds - first.cpuSeconds)) / windowSeconds / iops,
    contextSwitchesPerIo: (last.contextSwitches - first.contextSwitches) / windowSeconds / iops,
    minorFaultsPerIo: (last.minorFaults - first.minorFaults) / windowSeconds / iops,
    // An estimate: fio reports its own CPU over its whole measured window.
    restCpuPercent: Math.max(0, machinePercent - serverCpuPercent - fioCpuPercent),
    quiet,
    p50Us: null,
    p99Us: null,
  };
  if (pattern.latency !== undefined) {
    const percentiles = job[pattern.latency].clat_ns.percentile;
    result.p50Us = percentiles['50.000000'] / 1000;
    result.p99Us = percentiles['99.000000'] / 1000;
  }
  return result;
}

// --- results ---------------------------------------------------------------------------

function summarize(pattern, runs) {
  const perServer = {};
  for (const name of serverNames) {
    const mine = runs.filter((entry) => entry.server === name).map((entry) => entry.result);
    perServer[name] = {
      value: median(mine.map((result) => result[pattern.metric])),
      values: mine.map((result) => result[pattern.metric]),
      serverCpuPercent: median(mine.map((result) => result.serverCpuPercent)),
      mainCpuPercent: median(mine.map((result) => result.mainCpuPercent)),
      threadCountMax: Math.max(...mine.map((result) => result.threadCount)),
      fioCpuPercent: median(mine.map((result) => result.fioCpuPercent)),
      serverCpuUsPerIo: median(mine.map((result) => result.serverCpuUsPerIo)),
      contextSwitchesPerIo: median(mine.map((result) => result.contextSwitchesPerIo)),
      minorFaultsPerIo: median(mine.map((result) => result.minorFaultsPerIo)),
      restCpuPercentMax: Math.max(...mine.map((result) => result.restCpuPercent)),
      disturbedCount: mine.filter((result) => !result.quiet || result.restCpuPercent > disturbedPercentMin).length,
      p50Us: pattern.latency === undefined ? null : median(mine.map((result) => result.p50Us)),
      p99Us: pattern.latency === undefined ? null : median(mine.map((result) => result.p99Us)),
    };
  }
  return { pattern, perServer, ratio: perServer.meshblock.value / perServer.nbdkit.value };
}

function formatValue(metric, value) {
  return metric === 'iops' ? Math.round(value).toLocaleString('en-US') : value.toFixed(0);
}

function formatUs(value) {
  return value === null ? '' : value.toFixed(1);
}

function resultRows(summaries) {
  const header = ['Pattern', 'Unit', 'meshblock', 'nbdkit', 'meshblock/nbdkit', 'p50 µs mb', 'p50 µs nbdkit', 'p99 µs mb', 'p99 µs nbdkit'];
  const rows = summaries.map(({ pattern, perServer, ratio }) => [
    pattern.title,
    pattern.metric === 'iops' ? 'IOPS' : 'MB/s',
    formatValue(pattern.metric, perServer.meshblock.value),
    formatValue(pattern.metric, perServer.nbdkit.value),
    ratio.toFixed(2),
    formatUs(perServer.meshblock.p50Us),
    formatUs(perServer.nbdkit.p50Us),
    formatUs(perServer.meshblock.p99Us),
    formatUs(perServer.nbdkit.p99Us),
  ]);
  return { header, rows };
}

function cpuRows(summaries) {
  const pair = (perServer, key, digits) => `${perServer.meshblock[key].toFixed(digits)} / ${perServer.nbdkit[key].toFixed(digits)}`;
  const header = [
    'Pattern',
    'server CPU % (mb / nbdkit)',
    'main thread CPU %',
    'server CPU µs per I/O',
    'context switches per I/O',
    'page faults per I/O',
    'fio CPU %',
    'rest of machine CPU %, max',
  ];
  const rows = summaries.map(({ pattern, perServer }) => [
    pattern.title,
    pair(perServer, 'serverCpuPercent', 0),
    pair(perServer, 'mainCpuPercent', 0),
    pair(perServer, 'serverCpuUsPerIo', 1),
    pair(perServer, 'contextSwitchesPerIo', 2),
    pair(perServer, 'minorFaultsPerIo', 2),
    pair(perServer, 'fioCpuPercent', 0),
    pair(perServer, 'restCpuPercentMax', 0),
  ]);
  return { header, rows };
}

function roundRows(summaries) {
  const header = ['Pattern', 'Unit', 'meshblock, per round', 'nbdkit, per round'];
  const rows = summaries.map(({ pattern, perServer }) => [
    pattern.title,
    pattern.metric === 'iops' ? 'IOPS' : 'MB/s',
    perServer.meshblock.values.map((value) => formatValue(pattern.metric, value)).join(', '),
    perServer.nbdkit.values.map((value) => formatValue(pattern.metric, value)).join(', '),
  ]);
  return { header, rows };
}

// --- the machine -----------------------------------------------------------------------

function describeMachine(parentDir) {
  let cpuModel = 'unknown';
  let virtualization = 'unknown';
  try {
    const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const match = /^model name\s*:\s*(.+)$/m.exec(cpuinfo);
    if (match !== null) cpuModel = match[1].trim();
    virtualization = /^flags\s*:.*\bhypervisor\b/m.test(cpuinfo) ? 'virtual machine' : 'none detected';
  } catch {
    // Not Linux, or /proc is not mounted: say so rather than guess.
  }
  // Syscalls, context switches and page faults cost more in some guests; name the hypervisor if the kernel did.
  const hypervisor = /Hypervisor detected: (.+)$/m.exec(firstLineMatching('dmesg', [], /Hypervisor detected/));
  if (hypervisor !== null) virtualization = `virtual machine, ${hypervisor[1].trim()}`;
  const commit = firstLine('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']);
  const dirty = firstLine('git', ['-C', repoRoot, 'status', '--porcelain', '--', 'src', 'native', 'bin']) !== '';
  const build = describeBuild();
  return {
    cpuModel,
    cpuCount: os.cpus().length,
    virtualization,
    clockTicksPerSecond: Number(firstLine('getconf', ['CLK_TCK'])) || 100,
    memory: formatBytes(os.totalmem()),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    fio: firstLine('fio', ['--version']),
    nbdkit: firstLine('nbdkit', ['--version']),
    filesystem: firstLine('stat', ['--file-system', '--format=%T', parentDir]),
    meshblock: `${commit === 'unknown' ? 'unknown commit' : `commit ${commit}${dirty ? ' with uncommitted changes' : ''}`}, ${build}`,
    loadAverage: os.loadavg().map((load) => load.toFixed(2)).join(' '),
  };
}

function machineLines(machine) {
  return [
    ['CPU', `${machine.cpuModel}, ${machine.cpuCount} logical CPUs`],
    ['Virtualization', machine.virtualization],
    ['Memory', machine.memory],
    ['Kernel', machine.kernel],
    ['Node.js', machine.node],
    ['fio', machine.fio],
    ['nbdkit', machine.nbdkit],
    ['meshblock', machine.meshblock],
    ['Test file filesystem', machine.filesystem],
    ['Load average at start', machine.loadAverage],
  ];
}

// --- report ----------------------------------------------------------------------------

function readKeptAnalysis(outPath) {
  let existing;
  try {
    existing = fs.readFileSync(outPath, 'utf8');
  } catch {
    return null;
  }
  const start = existing.indexOf(analysisStart);
  const end = existing.indexOf(analysisEnd);
  if (start === -1 || end === -1 || end < start) return null;
  return existing.slice(start + analysisStart.length, end).trim();
}

function threadCounts(summaries, name) {
  return String(Math.max(...summaries.map(({ perServer }) => perServer[name].threadCountMax)));
}

function disturbedText(summaries) {
  let disturbedCount = 0;
  let runCount = 0;
  for (const { perServer } of summaries) {
    for (const name of serverNames) {
      disturbedCount += perServer[name].disturbedCount;
      runCount += perServer[name].values.length;
    }
  }
  return disturbedCount === 0
    ? `no run saw more than ${disturbedPercentMin}% of a core of other load.`
    : `**${disturbedCount} of ${runCount} runs saw other load** (more than ${disturbedPercentMin}% of a core, or no quiet start): treat their numbers with care.`;
}

function markdownReport({ options, machine, servers, summaries, preallocated, startedAt, analysis, file }) {
  const uriPlaceholder = `nbd://${host}:PORT/`;
  const fioLines = patterns.map((pattern) => `fio ${fioArgs(pattern, uriPlaceholder, options).join(' ')}`);
  const argv = process.argv.slice(2).join(' ');
  return `# NBD server benchmark: meshblock vs nbdkit

Generated by \`npm run build && node scripts/bench-nbd.mjs${argv ? ` ${argv}` : ''}\` (started ${startedAt}).

Both servers export the same ${formatBytes(options.sizeBytes)} file; fio's nbd engine (libnbd, one
connection, one job) is the client. The numbers therefore compare the NBD servers, not storage:
the file was written in full before the first run and fits in the page cache, so reads are
served from memory and writes land in the page cache (neither server is asked to flush).

## Results

Median of ${options.roundCount} round(s) per server and pattern; each round ran every pattern
against meshblock, then against nbdkit. 1M patterns are in MB/s (10^6 bytes/s), the rest in
IOPS (reads + writes). Latency is fio's completion latency (clat) of the 4k QD1 writes. The
page cache was filled with \`--cache-fill ${options.cacheFill}\` (see "How it was run").

${markdownTable(resultRows(summaries))}

What each server spends per request (medians; each cell is meshblock / nbdkit). Server numbers
come from /proc, sampled twice inside fio's measured window:

- server CPU: utime + stime of the whole process, in % of one core; main thread: the same for
  the main thread alone (meshblock's event loop; nbdkit's main thread only accepts connections);
- CPU µs per I/O: server CPU time per request (per 1 MiB request for the 1M patterns);
- context switches (voluntary and involuntary, summed over the server's threads) and minor
  page faults, per request;
- fio CPU: as fio reports it (usr + sys);
- rest of machine: process time in /proc/stat (user + system) beyond server and fio, i.e.
  other processes; an estimate.

The machine has ${machine.cpuCount} logical CPUs shared by fio and the server, so a server that needs more
CPU per request also leaves less for fio. Each run started only after the machine had been
quiet (under ${quietBusyPercentMax}% of a core busy) for ${quietSampleMs} ms; ${disturbedText(summaries)}

${markdownTable(cpuRows(summaries))}

Every round's result:

${markdownTable(roundRows(summaries))}

## Machine

${machineLines(machine).map(([name, value]) => `- ${name}: ${value}`).join('\n')}

## How it was run

Test file: ${formatBytes(options.sizeBytes)} under a fresh temp dir in \`${options.parentDir}\`, created sparse (ftruncate),
${preallocated ? 'preallocated with `fallocate`' : 'not preallocated (`fallocate` failed)'}, fully written once with pseudorandom data and fdatasync'ed.
Its page cache was then dropped and refilled by reading the file with fio (\`--cache-fill ${options.cacheFill}\`:
${options.cacheFill === 'random' ? 'no readahead, so the cache holds small folios' : 'with readahead, so the cache holds large folios'}). Before every fio run the bench waits for the machine
to be quiet, fdatasyncs the file (so one run's dirty pages are not written back during the
next) and reads it whole the same way, without dropping the cache (so both servers find all of
it in the page cache, even on a kernel that reclaims cold page cache):

\`\`\`
fio ${fillArgs(file, options.sizeBytes, options.cacheFill, true).join(' ')}
fio ${fillArgs(file, options.sizeBytes, options.cacheFill, false).join(' ')}
\`\`\`

Servers, started once each and kept for the whole run (ports are picked free on 127.0.0.1):

\`\`\`
${servers.map((server) => server.command.join(' ')).join('\n')}
\`\`\`

Both run with their defaults. meshblock does all protocol work on its one JavaScript (main)
thread; its file backend copies small cached reads there too (\`preadv2(RWF_NOWAIT)\`), writes
small writes there (\`pwrite\`, falling back to the pool for 5 s after one that blocked), and
sends everything else to libuv's thread pool (16 threads). nbdkit runs its default 16 worker
threads per connection (\`--threads\`), with the file plugin's defaults \`cache=default\`,
\`fadvise=normal\`. Threads counted during the runs: meshblock ${threadCounts(summaries, 'meshblock')}, nbdkit ${threadCounts(summaries, 'nbdkit')}.

fio runs (URI is meshblock's or nbdkit's; ${options.runtimeSeconds} s measured after ${options.rampSeconds} s ramp time):

\`\`\`
${fioLines.join('\n')}
\`\`\`

## Where it falls short and why

${analysisStart}
${analysis ?? '_Not written yet. This section is kept across re-runs of the script (between the analysis markers); check it still matches the numbers above._'}
${analysisEnd}
`;
}

// --- main ------------------------------------------------------------------------------

async function main() {
  const parsed = optionsOrExitCode('bench-nbd', parseOptions, usage);
  if (parsed.exitCode !== undefined) return parsed.exitCode;
  const { options } = parsed;
  handleSignals();

  const startedAt = new Date().toISOString();
  const machine = describeMachine(options.parentDir);
  const workDir = fs.mkdtempSync(path.join(options.parentDir, 'meshblock-bench-'));
  const file = path.join(workDir, 'bench.img');
  const servers = [];
  let fileHandle = null;
  try {
    process.stderr.write(`writing ${formatBytes(options.sizeBytes)} test file ${file}\n`);
    const preallocated = await createTestFile(file, options.sizeBytes);
    await fillPageCache(file, options.sizeBytes, options.cacheFill, true);
    fileHandle = await fs.promises.open(file, 'r+');

    servers.push(await startMeshblock(file));
    servers.push(await startNbdkit(file, workDir));
    for (const server of servers) process.stderr.write(`${server.name} ready at ${server.uri}\n`);

    const runs = patterns.map(() => []);
    for (let round = 1; round <= options.roundCount; round++) {
      for (const [patternIndex, pattern] of patterns.entries()) {
        for (const server of servers) {
          const result = await runFio(pattern, server, options, machine, file, fileHandle);
          runs[patternIndex].push({ server: server.name, round, result });
          const latency = result.p50Us === null ? '' : `, clat p50 ${formatUs(result.p50Us)} µs p99 ${formatUs(result.p99Us)} µs`;
          process.stderr.write(
            `round ${round}/${options.roundCount} ${pattern.id.padEnd(17)} ${server.name.padEnd(9)} ` +
              `${formatValue(pattern.metric, result[pattern.metric])} ${pattern.metric === 'iops' ? 'IOPS' : 'MB/s'}` +
              `${latency}, server CPU ${result.serverCpuPercent.toFixed(0)}%, fio CPU ${result.fioCpuPercent.toFixed(0)}%` +
              `, rest of machine ${result.restCpuPercent.toFixed(0)}%` +
              `${!result.quiet || result.restCpuPercent > disturbedPercentMin ? ' (DISTURBED: other load on the machine)' : ''}\n`,
          );
        }
      }
    }

    const summaries = patterns.map((pattern, index) => summarize(pattern, runs[index]));
    const machineText = machineLines(machine).map(([name, value]) => `${name}: ${value}`).join('\n');
    const tables = [resultRows(summaries), cpuRows(summaries), roundRows(summaries)].map(textTable).join('\n\n');
    process.stdout.write(`\n${machineText}\n\n${tables}\n`);
    if (options.outPath !== null) {
      const analysis = readKeptAnalysis(options.outPath);
      const report = markdownReport({ options, machine, servers, summaries, preallocated, startedAt, analysis, file });
      fs.writeFileSync(options.outPath, report);
      process.stdout.write(`\nwrote ${options.outPath}\n`);
    }
    return 0;
  } catch (err) {
    if (err instanceof BenchError && err.code === 'INTERRUPTED') return interruptedExitCode();
    process.stderr.write(`bench-nbd: ${err instanceof BenchError ? err.message : (err?.stack ?? String(err))}\n`);
    return exitRuntimeError;
  } finally {
    if (fileHandle !== null) await fileHandle.close().catch(() => undefined);
    await Promise.all(servers.map((server) => stopTracked(server, serverStopMs, server.name)));
    // Anything still running (a server that never became ready, a fio being killed).
    killRunning('SIGKILL');
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
