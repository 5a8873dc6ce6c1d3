#!/usr/bin/env node
// Benchmark: the lab volume (MDM, 3 SDSs, two copies, one SDC serving NBD, all on this
// machine) against nbdkit's file plugin serving one plain file, driven by the same fio
// nbd-engine jobs as scripts/bench-nbd.mjs. nbdkit is the floor of what any NBD server can
// do here; the lab adds a second hop (SDC -> SDS over TCP) and a second copy of every write.
//
// How it keeps the comparison fair:
// - both sides serve a region of the same size (--size), written in full before the first
//   run, so reads hit data (nbdkit: a file written with pseudorandom bytes; lab: every chunk
//   of the region allocated by a sequential fio write through the SDC);
// - both are started once and kept; for every pattern the runs alternate nbdkit, lab, and
//   the alternation is repeated --rounds times; each side's result is the median;
// - before every run the bench waits (a bounded time) for the rest of the machine to be
//   quiet, and flags runs during which other processes used more than a fifth of a core.
//
// Where the time goes: during the (first) lab run of 4k randrw QD32 the CPU time of every
// lab process (SDC, each SDS, MDM) and of fio is sampled from /proc; then one extra,
// unmeasured run of the same pattern is made while the SDC and sds1 run V8's CPU profiler.
// `lab up` offers no way to pass node flags and node refuses --cpu-prof in NODE_OPTIONS, so
// `lab up` gets NODE_OPTIONS=--require=PRELOAD: a few lines, written into the temp dir, that
// start the in-process profiler (node:inspector) on the first SIGUSR2 and write a
// .cpuprofile on the second. It costs nothing until signalled.
//
// Exit codes: 0 done, 1 a server failed to start or died, or fio reported an error,
// 2 bad usage, 128+N interrupted by signal N. nbdkit is killed, the lab is stopped and
// purged (`lab down --purge`) and the temp dir removed on every path out.
//
// Usage: node scripts/bench-lab.mjs [--size 1G] [--runtime 10] [--ramp-time 2] [--rounds 1]
//          [--out docs/benchmarks.md] [--dir /tmp] [--no-profile] [--io auto|direct|buffered] [--quick]

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { GiB, MiB, formatBytes } from '../dist/common/units.js';
import { InvalidArgumentError } from '../dist/common/errors.js';
import { labIoModes } from '../dist/cli/lab.js';
import {
  BenchError,
  checkPaths,
  delay,
  disturbedPercentMin,
  exitRuntimeError,
  freeLoopbackPort,
  handleSignals,
  host,
  interruptedExitCode,
  killRunning,
  markdownTable,
  median,
  parseSharedOptions,
  repoRoot,
  run,
  sharedOptionSpecs,
  spawnTracked,
  textTable,
  throwIfInterrupted,
  writePseudorandom,
  writeSection,
  optionsOrExitCode,
} from './bench-common.mjs';
import {
  describeMachine,
  fioArgs,
  formatUs,
  formatValue,
  labAlive,
  labDirsUp,
  labDownSync,
  labFailure,
  labPids,
  labQuietWaitMsMax,
  labStatus,
  labUp,
  labVolumeUri,
  loadAverage,
  prewriteArgs,
  prewriteLab,
  runFio,
  stopLab,
} from './bench-labs.mjs';

const volumeName = 'vol1';

const serverStartMs = 20_000;
const sizeBytesMin = 64 * MiB;
/** The lab's devices and volume are at least this big (the lab's own default device size). */
const labDeviceBytesMin = 2 * GiB;
/** Functions listed per profiled process. */
const profileTopCount = 8;
const profileWaitMs = 15_000;

/** Ceph RBD, two copies on three OSDs, on the same kind of machine (from the issue). */
const cephReference = '1,200 IOPS at 4k random 70% write QD32; about 300 IOPS (3 ms) at 4k QD1';

const usage = `Usage: node scripts/bench-lab.mjs [options]

Runs fio (nbd engine) against a local meshblock lab volume (3 SDSs, two copies) and
against nbdkit file on a plain file, alternating, and profiles the lab under load.

  --size SIZE          region both sides serve and fio uses (binary units) [default: 1G; --quick: 256M]
  --runtime SECONDS    measured time per fio run [default: 10; --quick: 3]
  --ramp-time SECONDS  unmeasured warm-up per fio run [default: 2; --quick: 1]
  --rounds N           alternations per pattern; results are medians [default: 1]
  --out FILE           also write the report as a Markdown section '## Lab benchmark' at the
                       end of FILE, keeping the rest (and a hand-written analysis between the
                       section's analysis markers)
  --dir DIR            where the temp dir (test file, lab) goes [default: ${os.tmpdir()}]
  --no-profile         skip the CPU-profiled extra run
  --io MODE            the lab SDSs' device IO on their sparse files: auto, direct or buffered
                       (lab up --io) [default: the lab's own, buffered]
  --qos-only           only the QoS limiter's cost (no nbdkit, no patterns, no profiles); with
                       --out, writes only its section '## Lab benchmark: the QoS limiter's cost'
  --quick              smoke test: --size 256M --runtime 3 --ramp-time 1 unless given
  -h, --help           this text
`;

/** Same patterns as bench-nbd; `latency` is the direction whose clat percentiles are shown. */
const patterns = [
  { id: 'randrw70-4k-qd32', title: '4k random R/W 70% write, QD32', fio: ['--rw=randrw', '--rwmixwrite=70', '--bs=4k', '--iodepth=32'], metric: 'iops', latency: 'write', goal: 0.5 },
  { id: 'randread-4k-qd32', title: '4k random read, QD32', fio: ['--rw=randread', '--bs=4k', '--iodepth=32'], metric: 'iops', latency: 'read', goal: 0.5 },
  { id: 'randwrite-4k-qd1', title: '4k random write, QD1', fio: ['--rw=randwrite', '--bs=4k', '--iodepth=1'], metric: 'iops', latency: 'write', goal: 0.5 },
  { id: 'read-1m-qd8', title: '1M sequential read, QD8', fio: ['--rw=read', '--bs=1M', '--iodepth=8'], metric: 'mbps', latency: 'read', goal: 1 },
  { id: 'write-1m-qd8', title: '1M sequential write, QD8', fio: ['--rw=write', '--bs=1M', '--iodepth=8'], metric: 'mbps', latency: 'write', goal: null },
];
/** CPU per process is reported for the first; CPU profiles are taken for both. */
const profiledPattern = patterns[0];
const profiledPatterns = [patterns[0], patterns[3]];
const sideNames = ['nbdkit', 'lab'];

const sectionHeading = '## Lab benchmark';
const analysisStart = '<!-- lab-analysis:start -->';
const analysisEnd = '<!-- lab-analysis:end -->';

// --- arguments -------------------------------------------------------------------------

function parseOptions(argv) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: { ...sharedOptionSpecs, 'no-profile': { type: 'boolean', default: false }, 'qos-only': { type: 'boolean', default: false }, io: { type: 'string' } },
  });
  if (values.help) return null;
  if (values.io !== undefined && !labIoModes.includes(values.io)) throw new InvalidArgumentError('--io', `must be one of ${labIoModes.join(', ')}, got '${values.io}'`);
  const options = {
    ...parseSharedOptions(values, { sizeText: '1G', sizeTextQuick: '256M', rounds: '1', sizeBytesMin }),
    profile: !values['no-profile'],
    qosOnly: values['qos-only'],
    ioMode: values.io ?? null,
  };
  checkPaths(values, options);
  return options;
}

// --- interruption ----------------------------------------------------------------------

/** The lab dir while a lab may be up: a second signal still stops it before leaving. */

// --- nbdkit ----------------------------------------------------------------------------

async function createTestFile(file, sizeBytes) {
  const handle = await fs.promises.open(file, 'wx');
  try {
    await handle.truncate(sizeBytes);
    await writePseudorandom(handle, sizeBytes);
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

async function startNbdkit(file, workDir) {
  const port = await freeLoopbackPort();
  const pidFile = path.join(workDir, 'nbdkit.pid');
  const args = ['--foreground', '--exit-with-parent', '--ipaddr', host, '--port', String(port), '--pidfile', pidFile, 'file', `file=${file}`];
  const { child, state } = spawnTracked('nbdkit', args);
  const server = { name: 'nbdkit', child, state, uri: `nbd://${host}:${port}/`, command: ['nbdkit', ...args], pids: () => ({ nbdkit: [child.pid] }) };
  const deadline = Date.now() + serverStartMs;
  for (;;) {
    if (fs.existsSync(pidFile) && fs.readFileSync(pidFile, 'utf8').trim() !== '') return server;
    throwIfInterrupted();
    if (state.exited) throw labFailure('nbdkit', state);
    if (Date.now() > deadline) throw new BenchError('SERVER', `nbdkit did not write ${pidFile} within ${serverStartMs} ms`);
    await delay(20);
  }
}

/** The tail of stdout and stderr together: `meshblock lab` prints its result on one, its progress on the other. */

async function stopNbdkit(server) {
  if (server.state.exited) return;
  server.child.kill('SIGTERM');
  const timer = setTimeout(() => server.child.kill('SIGKILL'), serverStartMs);
  await server.state.exit;
  clearTimeout(timer);
}

// --- the lab ---------------------------------------------------------------------------

/**
 * Loaded into every lab daemon through NODE_OPTIONS=--require. SIGUSR2 starts V8's CPU
 * profiler in-process; the next SIGUSR2 stops it and writes PID.cpuprofile (renamed into
 * place, so a reader never sees half a file). Nothing runs until the first signal.
 */
const profilerPreload = `'use strict';
const dir = process.env.MESHBLOCK_BENCH_PROFILE_DIR;
if (dir) {
  const inspector = require('node:inspector');
  const fs = require('node:fs');
  const path = require('node:path');
  let session = null;
  process.on('SIGUSR2', () => {
    if (session === null) {
      session = new inspector.Session();
      session.connect();
      session.post('Profiler.enable', () => session.post('Profiler.start'));
      return;
    }
    const current = session;
    session = null;
    current.post('Profiler.stop', (err, result) => {
      if (!err) {
        const file = path.join(dir, process.pid + '.cpuprofile');
        fs.writeFileSync(file + '.tmp', JSON.stringify(result.profile));
        fs.renameSync(file + '.tmp', file);
      }
      current.disconnect();
    });
  });
}
`;

async function startLab(labDir, sizeBytes, profileDir, preloadFile, ioMode) {
  const port = await freeLoopbackPort();
  const deviceBytes = Math.max(labDeviceBytesMin, sizeBytes);
  const sizeText = `${deviceBytes / MiB}MiB`;
  const extra = ['--detach', '--nbd-port', String(port), '--device-size', sizeText, '--volume', `${volumeName}:${sizeText}`, ...(ioMode === null ? [] : ['--io', ioMode])];
  const env = { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require=${preloadFile}`.trim(), MESHBLOCK_BENCH_PROFILE_DIR: profileDir };
  const state = await labUp(labDir, extra, { spawnOptions: { env } });
  throwIfInterrupted();
  const uri = labVolumeUri(state.stdout, volumeName);
  const status = await labStatus(labDir);
  const command = ['node', 'bin/meshblock.cjs', 'lab', 'up', '--dir', '$DIR', ...extra];
  return { name: 'lab', uri, command, status, pids: () => labPids(status) };
}

// --- the QoS limiter's cost ---------------------------------------------------------------

/**
 * The SDC's QoS limiter (docs/qos.md) sits in front of every read and write. Its cost is
 * measured where it matters, in the SDC's CPU per IO, with the limiter's two cheap states
 * alternated on the same volume: no limit set (the fast path), and limits set far above what
 * this machine reaches (every request reads the clock and takes tokens, none waits). A run
 * with a limit that is reached would measure the limit, not the limiter.
 */
const qosPattern = patterns[1];
const qosModes = [
  { id: 'none', title: 'no limit set', flags: ['--iops', '0', '--bandwidth', '0'] },
  { id: 'unreached', title: 'limits set, not reached (10M IOPS, 100 GiB/s)', flags: ['--iops', '10000000', '--bandwidth', '100GiB'] },
];

async function setLabLimits(labDir, flags) {
  const args = [path.join(repoRoot, 'bin/meshblock.cjs'), '--dir', labDir, 'volume', 'set-limits', '--volume', volumeName, '--sdc', 'sdc1', ...flags];
  const state = await run(process.execPath, args, 60_000);
  throwIfInterrupted();
  if (state.code !== 0) throw new BenchError('SERVER', `meshblock volume set-limits ${flags.join(' ')} failed (${state.code}): ${state.stderr.trim()}`);
  // The MDM pushes the view to the SDC at once; a moment for it to land before fio starts.
  await delay(500);
}

async function measureQos(lab, labDir, options, machine) {
  const runs = Object.fromEntries(qosModes.map((mode) => [mode.id, []]));
  const roundCount = Math.max(2, options.roundCount);
  try {
    for (let round = 1; round <= roundCount; round++) {
      for (const mode of qosModes) {
        if (!labAlive(lab)) throw new BenchError('SERVER', `a lab process died; logs in ${labDir}/logs`);
        await setLabLimits(labDir, mode.flags);
        const result = await runFio(qosPattern, lab, options, machine);
        runs[mode.id].push(result);
        process.stderr.write(
          `qos round ${round}/${roundCount} ${mode.id.padEnd(9)} ${formatValue('iops', result.iops)} IOPS, SDC ${result.roles.sdc.usPerIo.toFixed(1)} µs CPU per IO` +
            `${result.disturbed ? ' (DISTURBED: other load on the machine)' : ''}\n`,
        );
      }
    }
  } finally {
    await setLabLimits(labDir, qosModes[0].flags).catch(() => undefined);
  }
  const nsPerAdmit = await measureQosAdmit();
  return qosModes.map((mode) => ({
    mode,
    nsPerAdmit: nsPerAdmit[mode.id],
    iops: median(runs[mode.id].map((result) => result.iops)),
    sdcUsPerIo: median(runs[mode.id].map((result) => result.roles.sdc.usPerIo)),
    runCount: runs[mode.id].length,
    disturbedCount: runs[mode.id].filter((result) => result.disturbed).length,
  }));
}

/**
 * The limiter alone, in this process: nanoseconds per `admit` of a 4 KiB request, with no
 * limit and with limits no request reaches (the two states the lab runs above compare).
 */
async function measureQosAdmit() {
  const { QosLimiter, qosUnlimited } = await import('../dist/nbd/qos.js');
  const admits = 5_000_000;
  const states = [
    ['none', qosUnlimited],
    // Limits no loop on any machine reaches (a billion requests, a terabyte per second):
    // 10 million IOPS was reached by this loop on a quiet machine (50 ns an admit).
    ['unreached', { ...qosUnlimited, iopsLimit: 1_000_000_000, bandwidthLimitKbps: 1024 * 1024 * 1024 }],
  ];
  const nsPerAdmit = {};
  for (const [id, limits] of states) {
    const limiter = new QosLimiter(limits);
    let waited = 0;
    const startedMs = performance.now();
    for (let index = 0; index < admits; index++) if (limiter.admit(4096) !== null) waited += 1;
    nsPerAdmit[id] = ((performance.now() - startedMs) * 1e6) / admits;
    if (waited > 0) throw new BenchError('QOS', `${waited} of ${admits} admits waited with limits that should not be reached`);
  }
  return nsPerAdmit;
}

function qosRows(qos) {
  const [reference] = qos;
  const header = ['Limiter', 'IOPS', 'SDC CPU µs per I/O', 'IOPS / no limit', 'SDC µs per I/O / no limit', 'disturbed runs', 'ns per admit (in-process)'];
  const rows = qos.map((entry) => [
    entry.mode.title,
    formatValue('iops', entry.iops),
    entry.sdcUsPerIo.toFixed(2),
    (entry.iops / reference.iops).toFixed(2),
    (entry.sdcUsPerIo / reference.sdcUsPerIo).toFixed(2),
    `${entry.disturbedCount} of ${entry.runCount}`,
    entry.nsPerAdmit.toFixed(1),
  ]);
  return { header, rows };
}

const qosSectionHeading = "## Lab benchmark: the QoS limiter's cost";
const qosAnalysisStart = '<!-- qos-analysis:start -->';
const qosAnalysisEnd = '<!-- qos-analysis:end -->';

function qosSection({ options, machine, qos, startedAt, loads, analysis }) {
  const argv = process.argv.slice(2).join(' ');
  return `${qosSectionHeading}

Generated by \`npm run build && node scripts/bench-lab.mjs${argv ? ` ${argv}` : ''}\` (started ${startedAt}).

The SDC's QoS limiter (docs/qos.md) is in front of every read and write. ${qosPattern.title} on the lab
volume (fio's nbd engine, ${options.runtimeSeconds} s measured after ${options.rampSeconds} s ramp), alternating the limiter's two cheap
states on the same volume (\`meshblock volume set-limits\` between runs), median of ${qos[0].runCount} runs each:
no limit set (the fast path: two counters, one branch), and limits set far above what this machine
reaches (a clock read and tokens taken on every request, no request waits). The SDC's CPU per I/O is
its utime + stime over fio's measured window divided by the I/Os done; the reference is the same SDC
with no limit, in the same run. The last column is the limiter alone, timed in this process: a loop of
5 million \`QosLimiter.admit\` calls for a 4 KiB request in each state.

${markdownTable(qosRows(qos))}

Machine: ${machine.cpuModel}, ${machine.cpuCount} logical CPUs, ${machine.kernel}, Node.js ${machine.node}, ${machine.fio},
meshblock ${machine.meshblock}. Load average (1/5/15 min) at start ${loads.start}, at the end ${loads.end}: other engineers
share this machine, and a disturbed run (more than ${disturbedPercentMin}% of a core of other load) is counted in the table.

${qosAnalysisStart}
${analysis ?? '_Not written yet. Kept across re-runs of the script (between the qos-analysis markers)._'}
${qosAnalysisEnd}
`;
}

// --- CPU profiles ----------------------------------------------------------------------

/** Signals a profiled daemon; a daemon that is gone makes the profile missing, not the bench fail. */
function signalProfiler(pid) {
  try {
    process.kill(pid, 'SIGUSR2');
  } catch (err) {
    process.stderr.write(`cannot signal pid ${pid} for profiling: ${err.message}\n`);
  }
}

async function waitForProfile(file) {
  const deadline = Date.now() + profileWaitMs;
  while (!fs.existsSync(file)) {
    if (Date.now() > deadline) return null;
    await delay(100);
  }
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

/**
 * The functions of native/meshblock_native.c, as the profiler may name any of them: read
 * from the built addon itself (a list kept here went stale: a new function took the name
 * of all the others in one report).
 */
const addonFunctionNames = new Set(Object.keys(createRequire(import.meta.url)('../build/Release/meshblock_native.node')));

/**
 * Self samples per function: a node's hitCount is the samples whose top frame was that node.
 * Functions are keyed by name and file:line, so one function reached by many call paths
 * counts once. Shares are of all samples, and of the busy (non-idle) ones.
 */
function summarizeProfile(profile) {
  const byFunction = new Map();
  let totalSamples = 0;
  let idleSamples = 0;
  for (const node of profile.nodes) {
    const hits = node.hitCount ?? 0;
    if (hits === 0) continue;
    totalSamples += hits;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === '(idle)') {
      idleSamples += hits;
      continue;
    }
    const where = url === '' ? '' : `${shortUrl(url)}:${lineNumber + 1}`;
    // N-API functions share one C++ entry point, so V8's profiler gives every call into
    // meshblock's addon the name of whichever addon function it saw first or last.
    const name = url === '' && addonFunctionNames.has(functionName) ? '(meshblock addon)' : functionName || '(anonymous)';
    const key = `${name} ${where}`.trim();
    byFunction.set(key, (byFunction.get(key) ?? 0) + hits);
  }
  const busySamples = totalSamples - idleSamples;
  const top = [...byFunction.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, profileTopCount)
    .map(([name, hits]) => ({ name, busyPercent: (100 * hits) / busySamples }));
  return { totalSamples, busyPercent: (100 * busySamples) / totalSamples, top, durationSeconds: (profile.endTime - profile.startTime) / 1e6 };
}

function shortUrl(url) {
  const file = url.replace(/^file:\/\//, '');
  if (file.startsWith(repoRoot)) return path.relative(repoRoot, file);
  const nodeModules = file.lastIndexOf('node_modules/');
  return nodeModules === -1 ? file : file.slice(nodeModules);
}

async function profileLab(lab, pattern, options, machine, profileDir) {
  const targets = lab.status.processes.filter((entry) => entry.role === 'sdc' || entry.name === 'sds1');
  const result = await runFio(pattern, lab, options, machine, {
    atWindowStart: () => targets.forEach((entry) => signalProfiler(entry.pid)),
    atWindowEnd: () => targets.forEach((entry) => signalProfiler(entry.pid)),
  });
  const profiles = [];
  for (const entry of targets) {
    const file = path.join(profileDir, `${entry.pid}.cpuprofile`);
    const profile = await waitForProfile(file);
    // The next profiled run of this daemon writes the same name.
    fs.rmSync(file, { force: true });
    if (profile === null) {
      process.stderr.write(`no CPU profile from ${entry.name} (pid ${entry.pid}) within ${profileWaitMs / 1000} s\n`);
      continue;
    }
    profiles.push({ name: entry.name, pattern, result, ...summarizeProfile(profile) });
  }
  return profiles;
}

// --- results ---------------------------------------------------------------------------

function summarize(pattern, runs) {
  const perSide = {};
  for (const name of sideNames) {
    const mine = runs.filter((entry) => entry.side === name).map((entry) => entry.result);
    perSide[name] = {
      value: median(mine.map((result) => result[pattern.metric])),
      p50Us: median(mine.map((result) => result.p50Us)),
      p99Us: median(mine.map((result) => result.p99Us)),
      disturbedCount: mine.filter((result) => result.disturbed).length,
      runCount: mine.length,
    };
  }
  return { pattern, perSide, ratio: perSide.lab.value / perSide.nbdkit.value };
}

function goalText(pattern, ratio) {
  if (pattern.goal === null) return '';
  return `${ratio >= pattern.goal ? 'met' : 'MISSED'} (>= ${pattern.goal.toFixed(1)})`;
}

function resultRows(summaries) {
  const header = ['Pattern', 'Unit', 'nbdkit', 'lab', 'lab/nbdkit', 'goal', 'latency of', 'p50 µs nbdkit', 'p50 µs lab', 'p99 µs nbdkit', 'p99 µs lab'];
  const rows = summaries.map(({ pattern, perSide, ratio }) => [
    pattern.title,
    pattern.metric === 'iops' ? 'IOPS' : 'MB/s',
    formatValue(pattern.metric, perSide.nbdkit.value),
    formatValue(pattern.metric, perSide.lab.value),
    ratio.toFixed(2),
    goalText(pattern, ratio),
    pattern.latency === 'write' ? 'writes' : 'reads',
    formatUs(perSide.nbdkit.p50Us),
    formatUs(perSide.lab.p50Us),
    formatUs(perSide.nbdkit.p99Us),
    formatUs(perSide.lab.p99Us),
  ]);
  return { header, rows };
}

function cpuRows(labResult, nbdkitResult) {
  const header = ['Process', 'CPU, % of a core', 'CPU µs per I/O'];
  const rows = [];
  for (const [label, result] of [['lab', labResult], ['nbdkit', nbdkitResult]]) {
    let ownPercent = 0;
    for (const [role, { percent, usPerIo }] of Object.entries(result.roles)) {
      if (role !== 'rest of machine') ownPercent += percent;
      rows.push([`${label}: ${role}`, percent.toFixed(0), usPerIo.toFixed(1)]);
    }
    rows.push([`${label}: total (without rest)`, ownPercent.toFixed(0), ((ownPercent * 1e4) / result.iops).toFixed(1)]);
  }
  return { header, rows };
}

function profileRows(profile) {
  return {
    header: ['Function (self time)', '% of busy samples'],
    rows: profile.top.map(({ name, busyPercent }) => [name.replace(/\|/g, '\\|'), busyPercent.toFixed(1)]),
  };
}

// --- report ----------------------------------------------------------------------------

function markdownSection({ options, machine, summaries, cpu, profiles, prewriteSeconds, startedAt, loads, nbdkitCommand, labCommand, analysis }) {
  const argv = process.argv.slice(2).join(' ');
  const fioLines = patterns.map((pattern) => `fio ${fioArgs(pattern, 'nbd://127.0.0.1:PORT/[vol1]', options).join(' ')}`);
  let disturbed = 0;
  let runs = 0;
  for (const { perSide } of summaries) for (const name of sideNames) (disturbed += perSide[name].disturbedCount), (runs += perSide[name].runCount);
  const profileText =
    profiles.length === 0
      ? '_No CPU profile was taken (--no-profile, or the daemons wrote none)._'
      : profiles
          .map(
            (profile) => `**${profile.name}, ${profile.pattern.title}** (${formatValue(profile.pattern.metric, profile.result[profile.pattern.metric])} ${profile.pattern.metric === 'iops' ? 'IOPS' : 'MB/s'} with the profiler on; ${profile.totalSamples.toLocaleString('en-US')} samples over ${profile.durationSeconds.toFixed(1)} s, the main thread was busy in ${profile.busyPercent.toFixed(0)}% of them):

${markdownTable(profileRows(profile))}`,
          )
          .join('\n\n');
  return `${sectionHeading}

Generated by \`npm run build && node scripts/bench-lab.mjs${argv ? ` ${argv}` : ''}\` (started ${startedAt}).

fio's nbd engine (one connection, one job) against two servers on this machine: **nbdkit**
serving one plain ${formatBytes(options.sizeBytes)} file, and the **lab**: \`meshblock lab up\` with an MDM, 3 SDSs
(sparse-file devices) and an SDC serving the volume over NBD; every write goes SDC -> primary
SDS -> secondary SDS (two copies) over loopback TCP. Both regions were written in full first
(nbdkit's file with pseudorandom bytes; the lab's volume by one sequential 1M fio write through the SDC,
${prewriteSeconds.toFixed(1)} s), and all data fits in the page cache, so this measures software, not disks.
Runs alternate nbdkit, lab; median of ${options.roundCount} round(s); ${options.runtimeSeconds} s measured after ${options.rampSeconds} s ramp.
1M patterns in MB/s (10^6 bytes/s), the rest in IOPS (reads + writes); latency is fio's
completion latency (clat) of the direction named. Goals from the issue: at least half of nbdkit's
4k IOPS, at least nbdkit's 1M read throughput.

${markdownTable(resultRows(summaries))}

For scale: Ceph RBD with two copies on three OSDs on this kind of machine does about ${cephReference}.

Machine: ${machine.cpuModel}, ${machine.cpuCount} logical CPUs, ${machine.kernel}, Node.js ${machine.node}, ${machine.fio},
${machine.nbdkit}, meshblock ${machine.meshblock}. Load average (1/5/15 min) at start ${loads.start}, at the end ${loads.end}:
other engineers share this machine; ${disturbed === 0 ? `no run saw more than ${disturbedPercentMin}% of a core of other load` : `**${disturbed} of ${runs} runs saw other load** (more than ${disturbedPercentMin}% of a core, or no quiet start within ${labQuietWaitMsMax / 1000} s)`}.

### Where the CPU goes

CPU time per process (utime + stime from /proc/PID/stat, fio including its job process),
sampled twice inside fio's measured window of the ${profiledPattern.title} run, against the lab
(${formatValue('iops', cpu.lab.iops)} IOPS) and against nbdkit (${formatValue('iops', cpu.nbdkit.iops)} IOPS). "Rest of machine" is everything else
(other users' processes and kernel threads; loopback TCP's receive work mostly runs in the
sender's system call and is charged to the sending process).

${markdownTable(cpuRows(cpu.lab, cpu.nbdkit))}

CPU profiles (V8 sampling profiler, main thread only: work on libuv's thread pool and in the
kernel does not appear, except as the native call that does it) of the SDC and of sds1, each
during one extra, unmeasured run of ${profiledPatterns.map((pattern) => pattern.title).join(' and of ')}. Top ${profileTopCount} functions by
self time, in % of the samples in which the main thread was busy. Native functions without a file
are calls into C++: \`writev\`/\`writeBuffer\` are socket writes, \`read\` is \`fs.read\` (large device
reads, handed to the thread pool), "(meshblock addon)" is meshblock's native addon: on an SDS chiefly
\`pwriteInline\` (the small device writes, done on the event loop) and \`preadNowait\` (cached small
reads); "(program)" is V8/native time not attributed to a JavaScript function, "(garbage collector)" is GC.
Time a process spends preempted inside a system call counts for that call: on two cores shared by
six busy processes, a socket write that wakes its receiver is often where the writer loses the CPU.

${profileText}

How it was run:

\`\`\`
${nbdkitCommand}
${labCommand}
fio ${prewriteArgs('nbd://127.0.0.1:PORT/vol1', options.sizeBytes).join(' ')}
${fioLines.join('\n')}
\`\`\`

The profiles come from a preload (\`NODE_OPTIONS=--require=PRELOAD\` in \`lab up\`'s environment, which
the daemons inherit) that runs \`node:inspector\`'s Profiler between two SIGUSR2s; see the script's header.

### Analysis

${analysisStart}
${analysis ?? '_Not written yet. Kept across re-runs of the script (between the lab-analysis markers); check it still matches the numbers above._'}
${analysisEnd}
`;
}

// --- main ------------------------------------------------------------------------------

async function main() {
  const parsed = optionsOrExitCode('bench-lab', parseOptions, usage);
  if (parsed.exitCode !== undefined) return parsed.exitCode;
  const { options } = parsed;
  handleSignals({
    // A second signal still stops the lab before leaving.
    onSecondSignal: () => {
      for (const labDir of labDirsUp) labDownSync(labDir);
    },
  });

  const startedAt = new Date().toISOString();
  const loads = { start: loadAverage(), end: '' };
  const machine = describeMachine();
  const workDir = fs.mkdtempSync(path.join(options.parentDir, 'meshblock-bench-lab-'));
  const file = path.join(workDir, 'nbdkit.img');
  const labDir = path.join(workDir, 'lab');
  const profileDir = path.join(workDir, 'profiles');
  const preloadFile = path.join(workDir, 'profiler-preload.cjs');
  let nbdkit = null;
  try {
    fs.mkdirSync(profileDir);
    fs.writeFileSync(preloadFile, profilerPreload);
    if (options.qosOnly) {
      const lab = await startLab(labDir, options.sizeBytes, profileDir, preloadFile, options.ioMode);
      process.stderr.write(`lab ready at ${lab.uri}; pre-writing ${formatBytes(options.sizeBytes)} of it\n`);
      await prewriteLab(lab, options.sizeBytes);
      process.stderr.write(`the QoS limiter's cost: ${qosPattern.id} with no limit and with limits set but not reached, alternated\n`);
      const qos = await measureQos(lab, labDir, options, machine);
      loads.end = loadAverage();
      process.stdout.write(`\nThe QoS limiter's cost, ${qosPattern.title} on the lab (load average ${loads.start} -> ${loads.end})\n${textTable(qosRows(qos))}\n`);
      if (options.outPath !== null) {
        writeSection(options.outPath, { heading: qosSectionHeading, analysisStart: qosAnalysisStart, analysisEnd: qosAnalysisEnd }, (analysis) => qosSection({ options, machine, qos, startedAt, loads, analysis }));
        process.stdout.write(`\nwrote the '${qosSectionHeading.slice(3)}' section of ${options.outPath}\n`);
      }
      return 0;
    }
    process.stderr.write(`writing ${formatBytes(options.sizeBytes)} test file ${file}\n`);
    await createTestFile(file, options.sizeBytes);
    nbdkit = await startNbdkit(file, workDir);
    process.stderr.write(`nbdkit ready at ${nbdkit.uri}; starting the lab in ${labDir}\n`);
    const lab = await startLab(labDir, options.sizeBytes, profileDir, preloadFile, options.ioMode);
    process.stderr.write(`lab ready at ${lab.uri}; pre-writing ${formatBytes(options.sizeBytes)} of it\n`);
    const prewriteSeconds = await prewriteLab(lab, options.sizeBytes);
    const sides = [nbdkit, lab];

    const runs = patterns.map(() => []);
    const cpu = { lab: null, nbdkit: null };
    for (let round = 1; round <= options.roundCount; round++) {
      for (const [patternIndex, pattern] of patterns.entries()) {
        for (const side of sides) {
          if (side === nbdkit && nbdkit.state.exited) throw labFailure('nbdkit', nbdkit.state);
          if (side === lab && !labAlive(lab)) throw new BenchError('SERVER', `a lab process died; logs in ${labDir}/logs`);
          const result = await runFio(pattern, side, options, machine);
          runs[patternIndex].push({ side: side.name, round, result });
          if (pattern === profiledPattern && cpu[side.name] === null) cpu[side.name] = result;
          const roles = Object.entries(result.roles).map(([role, { percent }]) => `${role} ${percent.toFixed(0)}%`).join(', ');
          process.stderr.write(
            `round ${round}/${options.roundCount} ${pattern.id.padEnd(17)} ${side.name.padEnd(6)} ` +
              `${formatValue(pattern.metric, result[pattern.metric])} ${pattern.metric === 'iops' ? 'IOPS' : 'MB/s'}, ` +
              `${pattern.latency} clat p50 ${formatUs(result.p50Us)} µs p99 ${formatUs(result.p99Us)} µs; CPU: ${roles}` +
              `${result.disturbed ? ' (DISTURBED: other load on the machine)' : ''}\n`,
          );
        }
      }
    }

    process.stderr.write(`the QoS limiter's cost: ${qosPattern.id} with no limit and with limits set but not reached, alternated\n`);
    const qos = await measureQos(lab, labDir, options, machine);

    const profiles = [];
    if (options.profile) {
      for (const pattern of profiledPatterns) {
        process.stderr.write(`profiling the SDC and sds1 during one more ${pattern.id} run\n`);
        profiles.push(...(await profileLab(lab, pattern, options, machine, profileDir)));
      }
    }
    loads.end = loadAverage();

    const summaries = patterns.map((pattern, index) => summarize(pattern, runs[index]));
    const tables = [resultRows(summaries), cpuRows(cpu.lab, cpu.nbdkit), qosRows(qos), ...profiles.map(profileRows)].map(textTable);
    const profileTitles = profiles.map(
      (profile) => `CPU profile of ${profile.name}, ${profile.pattern.title} (main thread busy ${profile.busyPercent.toFixed(0)}% of ${profile.totalSamples} samples)`,
    );
    const titled = [`Results (load average ${loads.start} -> ${loads.end})`, `CPU per process during ${profiledPattern.title}`, `The QoS limiter's cost, ${qosPattern.title} on the lab`, ...profileTitles].map(
      (title, index) => `${title}\n${tables[index]}`,
    );
    process.stdout.write(`\n${titled.join('\n\n')}\n\nFor scale, Ceph RBD (2 copies, 3 OSDs, same kind of machine): ${cephReference}.\n`);
    if (options.outPath !== null) {
      const nbdkitCommand = nbdkit.command.join(' ').split(workDir).join('$DIR');
      const labCommand = lab.command.join(' ');
      writeSection(options.outPath, { heading: sectionHeading, analysisStart, analysisEnd, atEnd: true }, (analysis) =>
        markdownSection({ options, machine, summaries, cpu, profiles, prewriteSeconds, startedAt, loads, nbdkitCommand, labCommand, analysis }),
      );
      writeSection(options.outPath, { heading: qosSectionHeading, analysisStart: qosAnalysisStart, analysisEnd: qosAnalysisEnd }, (analysis) => qosSection({ options, machine, qos, startedAt, loads, analysis }));
      process.stdout.write(`\nwrote the '${sectionHeading.slice(3)}' and '${qosSectionHeading.slice(3)}' sections of ${options.outPath}\n`);
    }
    return 0;
  } catch (err) {
    if (err instanceof BenchError && err.code === 'INTERRUPTED') return interruptedExitCode();
    process.stderr.write(`bench-lab: ${err instanceof BenchError ? err.message : (err?.stack ?? String(err))}\n`);
    return exitRuntimeError;
  } finally {
    killRunning('SIGKILL', { fioOnly: true });
    await stopLab(labDir).catch((err) => process.stderr.write(`bench-lab: stopping the lab: ${err.message}\n`));
    if (nbdkit !== null) await stopNbdkit(nbdkit);
    killRunning('SIGKILL');
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
