#!/usr/bin/env node
// Benchmark: the lab on block devices. Loop devices with direct IO (`losetup --direct-io=on`)
// over files on this machine's disk stand in for disks, and three servers of the same kind of
// device run side by side in one run:
//
//   device  fio directly on a loop device (ioengine=libaio, direct=1): the device's limit;
//   nbdkit  nbdkit's file plugin serving that same loop device over NBD (its defaults: through
//           the block device's page cache), driven by fio's nbd engine;
//   lab     `meshblock lab up --device` on three more loop devices (MDM, 3 SDSs with
//           `sds start --io auto`, two copies, one SDC serving NBD), driven by fio's nbd engine.
//
// For each run: IOPS or MB/s, fio's p50/p99 completion latency, CPU per IO of every process
// (SDC, each SDS, MDM, nbdkit, fio; utime + stime from /proc, bench-common and bench-labs),
// the largest RSS of each server process seen while it ran (sampled every rssSampleMs), and how
// much the machine's page cache (Cached + Buffers in /proc/meminfo) grew over the run. Ratios
// lab/nbdkit and lab/device per pattern.
//
// Fairness and its limits:
// - the device side and nbdkit share one loop device; the lab's three devices are the same
//   kind (same size, same disk, same loop settings). All backing files are on one filesystem,
//   refused when it is tmpfs (no disk under it). The device's region is written in full with
//   pseudorandom bytes first, the lab's volume by one sequential fio write through the SDC;
// - runs alternate device, nbdkit, lab per pattern, repeated --rounds times (medians);
// - every fio run is a whole fio process (pattern.args in bench-labs' runFio): the CPU window
//   is fio's whole run, ramp included, so per-IO CPU is slightly high for every side alike;
// - the page cache is the whole machine's: other users' IO shows in it too (the runs say when
//   the machine was busy otherwise; a growth in the noise is not meshblock's);
// - the disk is a VM's virtual disk, shared with other users: device numbers move run to run.
//
// Needs root (losetup) and fio, nbdkit; without root it says so and exits 0 (it is part of
// `npm run bench`). Every loop device is detached, nbdkit stopped, the lab purged and the temp
// dir removed on every path out (a second signal: as far as synchronous calls can).
//
// Exit codes: 0 done (or skipped), 1 a server failed or fio reported an error, 2 bad usage,
// 128+N interrupted by signal N.
//
// Usage: node scripts/bench-devices.mjs [--size 512M] [--runtime 4] [--ramp-time 1] [--rounds 1]
//          [--out docs/benchmarks.md] [--dir DIR-ON-DISK] [--quick]

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { InvalidArgumentError } from '../dist/common/errors.js';
import { MiB, formatBytes } from '../dist/common/units.js';
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
  pageCacheBytes,
  parseSharedOptions,
  processRssBytes,
  run,
  sharedOptionSpecs,
  spawnTracked,
  stopTracked,
  textTable,
  throwIfInterrupted,
  writePseudorandom,
  writeSection,
  optionsOrExitCode,
} from './bench-common.mjs';
import { describeMachine, formatUs, formatValue, labAlive, labDirsUp, labDownSync, labFailure, labPids, labQuietWaitMsMax, labStatus, labUp, labVolumeUri, loadAverage, prewriteLab, runFio, stopLab } from './bench-labs.mjs';

const volumeName = 'vol1';
const sizeBytesMin = 64 * MiB;
/** The lab's devices hold two copies of the volume over three devices, their metadata, and room to spare. */
const labDeviceHeadroomBytes = 64 * MiB;
const labSdsCount = 3;
const serverStartMs = 20_000;
const serverStopMs = 10_000;
/** RSS of the server processes is sampled this often during each run; the largest is kept. */
const rssSampleMs = 250;
const losetupMs = 30_000;

const usage = `Usage: node scripts/bench-devices.mjs [options]

Runs fio directly on a direct-IO loop device, against nbdkit serving such a device, and
against a meshblock lab on three such devices (lab up --device), alternating, and reports
throughput, latency, CPU per IO per process, RSS and page cache growth. Needs root (losetup).

  --size SIZE          region every side serves and fio uses (binary units) [default: 512M; --quick: 256M]
  --runtime SECONDS    measured time per fio run [default: 4; --quick: 3]
  --ramp-time SECONDS  unmeasured warm-up per fio run [default: 1]
  --rounds N           alternations per pattern; results are medians [default: 1]
  --out FILE           also write the report as a Markdown section '## Lab benchmark: devices'
                       of FILE, keeping the rest (and a hand-written analysis between the
                       section's analysis markers)
  --dir DIR            where the temp dir (backing files, lab) goes; must be on a disk, not
                       tmpfs [default: ${os.tmpdir()}]
  --quick              smoke test: --size 256M --runtime 3 --ramp-time 1 unless given
  -h, --help           this text
`;

/** As bench-lab's; `latency` is the direction whose clat percentiles are shown. */
const patterns = [
  { id: 'randread-4k-qd32', title: '4k random read, QD32', fio: ['--rw=randread', '--bs=4k', '--iodepth=32'], metric: 'iops', latency: 'read' },
  { id: 'randrw70-4k-qd32', title: '4k random R/W 70% write, QD32', fio: ['--rw=randrw', '--rwmixwrite=70', '--bs=4k', '--iodepth=32'], metric: 'iops', latency: 'write' },
  { id: 'randwrite-4k-qd1', title: '4k random write, QD1', fio: ['--rw=randwrite', '--bs=4k', '--iodepth=1'], metric: 'iops', latency: 'write' },
  { id: 'read-1m-qd8', title: '1M sequential read, QD8', fio: ['--rw=read', '--bs=1M', '--iodepth=8'], metric: 'mbps', latency: 'read' },
  { id: 'write-1m-qd8', title: '1M sequential write, QD8', fio: ['--rw=write', '--bs=1M', '--iodepth=8'], metric: 'mbps', latency: 'write' },
];
const sideNames = ['device', 'nbdkit', 'lab'];

const sectionHeading = '## Lab benchmark: devices';
const analysisStart = '<!-- devices-analysis:start -->';
const analysisEnd = '<!-- devices-analysis:end -->';

// --- arguments -------------------------------------------------------------------------

function parseOptions(argv) {
  const { values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: sharedOptionSpecs });
  if (values.help) return null;
  // Shorter runs than the other benches' defaults: this one is part of `npm run bench`, with
  // three sides and five patterns.
  const defaults = values.quick ? {} : { runtime: '4', 'ramp-time': '1' };
  const options = parseSharedOptions({ ...defaults, ...values }, { sizeText: '512M', sizeTextQuick: '256M', rounds: '1', sizeBytesMin });
  checkPaths(values, options);
  const fsType = filesystemType(options.parentDir);
  if (fsType === 'tmpfs' || fsType === 'ramfs') {
    throw new InvalidArgumentError('--dir', `${options.parentDir} is on ${fsType}: the loop devices must stand on a disk (give --dir on one)`);
  }
  return { ...options, fsType };
}

function filesystemType(dir) {
  try {
    return execFileSync('findmnt', ['-n', '-o', 'FSTYPE', '--target', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
}

// --- loop devices ----------------------------------------------------------------------

/** Loop devices attached by this run, detached on every path out. */
const loopDevices = new Set();

async function attachLoop(file) {
  const state = await run('losetup', ['--find', '--show', '--direct-io=on', file], losetupMs);
  if (state.code !== 0) throw new BenchError('LOSETUP', `losetup --find --show --direct-io=on ${file} failed: ${state.stderr.trim()}`);
  const device = state.stdout.trim();
  loopDevices.add(device);
  // The kernel may refuse direct IO (backing filesystem without O_DIRECT) and attach anyway.
  const dio = fs.readFileSync(`/sys/block/${path.basename(device)}/loop/dio`, 'utf8').trim();
  if (dio !== '1') throw new BenchError('LOSETUP', `${device} over ${file} runs without direct IO (loop/dio = ${dio}): its filesystem refuses O_DIRECT`);
  return device;
}

async function detachLoops() {
  for (const device of loopDevices) {
    const state = await run('losetup', ['-d', device], losetupMs).catch((err) => ({ code: -1, stderr: err.message }));
    if (state.code !== 0) process.stderr.write(`bench-devices: losetup -d ${device}: ${state.stderr.trim()}\n`);
    loopDevices.delete(device);
  }
}

function detachLoopsSync() {
  for (const device of loopDevices) {
    try {
      execFileSync('losetup', ['-d', device], { stdio: 'ignore', timeout: losetupMs });
    } catch {
      // Nothing more to do on the way out.
    }
  }
}

async function createFile(file, sizeBytes, { fill }) {
  const handle = await fs.promises.open(file, 'wx');
  try {
    await handle.truncate(sizeBytes);
    if (fill) {
      await writePseudorandom(handle, sizeBytes);
      await handle.datasync();
    }
  } finally {
    await handle.close();
  }
}

// --- the three sides ---------------------------------------------------------------------

function fioCommon(pattern, options) {
  return [...pattern.fio, `--size=${options.sizeBytes}`, '--numjobs=1', '--time_based', `--runtime=${options.runtimeSeconds}`, `--ramp_time=${options.rampSeconds}`, '--output-format=json'];
}

function deviceSide(device) {
  return {
    name: 'device',
    uri: device,
    fioArgs: (pattern, options) => [`--name=${pattern.id}`, '--ioengine=libaio', '--direct=1', `--filename=${device}`, ...fioCommon(pattern, options)],
    pids: () => ({}),
    servers: () => ({}),
  };
}

function nbdSide(name, uri, pids) {
  return {
    name,
    uri,
    fioArgs: (pattern, options) => [`--name=${pattern.id}`, '--ioengine=nbd', `--uri=${uri}`, ...fioCommon(pattern, options)],
    pids,
    servers: pids,
  };
}

async function startNbdkit(device, workDir) {
  const port = await freeLoopbackPort();
  const pidFile = path.join(workDir, 'nbdkit.pid');
  const args = ['--foreground', '--exit-with-parent', '--ipaddr', host, '--port', String(port), '--pidfile', pidFile, 'file', `file=${device}`];
  const tracked = spawnTracked('nbdkit', args);
  const deadline = Date.now() + serverStartMs;
  while (!(fs.existsSync(pidFile) && fs.readFileSync(pidFile, 'utf8').trim() !== '')) {
    throwIfInterrupted();
    if (tracked.state.exited) throw labFailure('nbdkit', tracked.state);
    if (Date.now() > deadline) throw new BenchError('SERVER', `nbdkit did not write ${pidFile} within ${serverStartMs} ms`);
    await delay(20);
  }
  const side = nbdSide('nbdkit', `nbd://${host}:${port}/`, () => ({ nbdkit: [tracked.child.pid] }));
  return { ...side, tracked, command: ['nbdkit', ...args] };
}

async function startLab(labDir, devices, options) {
  const port = await freeLoopbackPort();
  const extra = ['--detach', '--nbd-port', String(port), ...devices.flatMap((device) => ['--device', device]), '--volume', `${volumeName}:${options.sizeBytes / MiB}MiB`];
  const state = await labUp(labDir, extra);
  throwIfInterrupted();
  const uri = labVolumeUri(state.stdout, volumeName);
  const status = await labStatus(labDir);
  const side = nbdSide('lab', uri, () => labPids(status));
  // RSS: the SDC and the SDSs (the MDM is idle during IO).
  const servers = () => Object.fromEntries(Object.entries(labPids(status)).filter(([role]) => role !== 'mdm'));
  return { ...side, servers, status, command: ['node', 'bin/meshblock.cjs', 'lab', 'up', '--dir', '$DIR', ...extra] };
}

// --- one run -----------------------------------------------------------------------------

/** runFio with the side's own fio arguments, plus the servers' largest RSS and the page cache growth over the run. */
async function measure(pattern, side, options, machine) {
  const rssMaxBytes = {};
  const sampleRss = () => {
    for (const [role, pids] of Object.entries(side.servers())) {
      const bytes = pids.reduce((sum, pid) => sum + (processRssBytes(pid) ?? 0), 0);
      rssMaxBytes[role] = Math.max(rssMaxBytes[role] ?? 0, bytes);
    }
  };
  const cacheBeforeBytes = pageCacheBytes();
  sampleRss();
  const timer = setInterval(sampleRss, rssSampleMs);
  let result;
  try {
    result = await runFio({ ...pattern, args: () => side.fioArgs(pattern, options) }, side, options, machine);
  } finally {
    clearInterval(timer);
  }
  sampleRss();
  return { ...result, rssMaxBytes, pageCacheGrowthBytes: pageCacheBytes() - cacheBeforeBytes };
}

// --- results -----------------------------------------------------------------------------

function summarize(pattern, runs) {
  const perSide = {};
  for (const name of sideNames) {
    const mine = runs.filter((entry) => entry.side === name).map((entry) => entry.result);
    const roles = [...new Set(mine.flatMap((result) => Object.keys(result.roles)))];
    const servers = [...new Set(mine.flatMap((result) => Object.keys(result.rssMaxBytes)))];
    perSide[name] = {
      value: median(mine.map((result) => result[pattern.metric])),
      p50Us: median(mine.map((result) => result.p50Us)),
      p99Us: median(mine.map((result) => result.p99Us)),
      usPerIo: Object.fromEntries(roles.map((role) => [role, median(mine.map((result) => result.roles[role]?.usPerIo ?? null))])),
      rssMaxBytes: Object.fromEntries(servers.map((server) => [server, Math.max(...mine.map((result) => result.rssMaxBytes[server] ?? 0))])),
      pageCacheGrowthBytes: median(mine.map((result) => result.pageCacheGrowthBytes)),
      disturbedCount: mine.filter((result) => result.disturbed).length,
      runCount: mine.length,
    };
  }
  return { pattern, perSide };
}

function formatMiB(bytes) {
  return (bytes / MiB).toFixed(0);
}

function resultRows(summaries) {
  const header = ['Pattern', 'Unit', 'device', 'nbdkit', 'lab', 'lab/nbdkit', 'lab/device', 'latency of', 'p50 µs dev/nbdkit/lab', 'p99 µs dev/nbdkit/lab', 'disturbed runs'];
  const rows = summaries.map(({ pattern, perSide }) => [
    pattern.title,
    pattern.metric === 'iops' ? 'IOPS' : 'MB/s',
    ...sideNames.map((name) => formatValue(pattern.metric, perSide[name].value)),
    (perSide.lab.value / perSide.nbdkit.value).toFixed(2),
    (perSide.lab.value / perSide.device.value).toFixed(2),
    pattern.latency === 'write' ? 'writes' : 'reads',
    sideNames.map((name) => formatUs(perSide[name].p50Us)).join(' / '),
    sideNames.map((name) => formatUs(perSide[name].p99Us)).join(' / '),
    `${sideNames.reduce((sum, name) => sum + perSide[name].disturbedCount, 0)} of ${sideNames.reduce((sum, name) => sum + perSide[name].runCount, 0)}`,
  ]);
  return { header, rows };
}

/** CPU per IO of each process (µs), the lab's SDC and SDSs summed, RSS and page cache growth. */
function resourceRows(summaries) {
  const header = ['Pattern', 'Side', 'CPU µs per I/O, by process', 'lab SDC+SDSs µs/IO', 'largest RSS MiB', 'page cache growth MiB'];
  const rows = [];
  for (const { pattern, perSide } of summaries) {
    for (const name of sideNames) {
      const side = perSide[name];
      const cpu = Object.entries(side.usPerIo)
        .filter(([role]) => role !== 'rest of machine')
        .map(([role, usPerIo]) => `${role} ${usPerIo === null ? '-' : usPerIo.toFixed(1)}`)
        .join(', ');
      const labUs = name === 'lab' ? Object.entries(side.usPerIo).filter(([role]) => role === 'sdc' || role.startsWith('sds')).reduce((sum, [, usPerIo]) => sum + (usPerIo ?? 0), 0).toFixed(1) : '';
      const rss = Object.entries(side.rssMaxBytes).map(([server, bytes]) => `${server} ${formatMiB(bytes)}`).join(', ') || '-';
      rows.push([pattern.title, name, cpu, labUs, rss, formatMiB(side.pageCacheGrowthBytes)]);
    }
  }
  return { header, rows };
}

function ioModes(status) {
  return status.processes
    .filter((entry) => entry.role === 'sds')
    .map((entry) => `${entry.name} ${entry.devicePath ?? '?'} ${entry.io ?? 'unknown'}${entry.ioReason ? ` (${entry.ioReason})` : ''}`)
    .join(', ');
}

// --- report ------------------------------------------------------------------------------

function markdownSection({ options, machine, summaries, startedAt, loads, commands, prewriteSeconds, labIo, analysis }) {
  const argv = process.argv.slice(2).join(' ');
  return `${sectionHeading}

Generated by \`npm run build && node scripts/bench-devices.mjs${argv ? ` ${argv}` : ''}\` (started ${startedAt}).

Loop devices with direct IO (\`losetup --direct-io=on\`) over ${formatBytes(options.sizeBytes)} files on this machine's disk
(${options.fsType}) stand in for disks. **device**: fio directly on one of them (libaio, direct=1), the device's
limit; **nbdkit**: nbdkit's file plugin serving that same loop device (its defaults: through the block
device's page cache), fio's nbd engine; **lab**: \`meshblock lab up --device\` on three more (3 SDSs,
two copies, SDC serving NBD), fio's nbd engine. SDS device IO as the SDSs reported it: ${labIo}.
The device's region was written in full with pseudorandom bytes first, the lab's volume by one
sequential 1M fio write through the SDC (${prewriteSeconds.toFixed(1)} s). Runs alternate device, nbdkit, lab; median of
${options.roundCount} round(s); ${options.runtimeSeconds} s measured after ${options.rampSeconds} s ramp. 1M patterns in MB/s (10^6 bytes/s), the rest
in IOPS; latency is fio's completion latency of the direction named.

${markdownTable(resultRows(summaries))}

CPU per I/O from utime + stime in /proc over each fio process's whole run (ramp included, for
every side alike; fio's own from its report); "largest RSS" is the largest VmRSS seen every
${rssSampleMs} ms during the run (the SDC and each SDS; nbdkit); page cache growth is Cached +
Buffers in /proc/meminfo after the run minus before it, for the whole machine.

${markdownTable(resourceRows(summaries))}

Machine: ${machine.cpuModel}, ${machine.cpuCount} logical CPUs, ${machine.kernel}, Node.js ${machine.node}, ${machine.fio},
${machine.nbdkit}, meshblock ${machine.meshblock}. Load average (1/5/15 min) at start ${loads.start}, at the end ${loads.end}:
other engineers share this machine and its disk; a run is disturbed when others used more than ${disturbedPercentMin}% of a
core or the machine found no quiet start within ${labQuietWaitMsMax / 1000} s.

How it was run:

\`\`\`
${commands.join('\n')}
\`\`\`

### Analysis

${analysisStart}
${analysis ?? '_Not written yet. Kept across re-runs of the script (between the devices-analysis markers); check it still matches the numbers above._'}
${analysisEnd}
`;
}

// --- main --------------------------------------------------------------------------------

async function main() {
  const parsed = optionsOrExitCode('bench-devices', parseOptions, usage);
  if (parsed.exitCode !== undefined) return parsed.exitCode;
  const { options } = parsed;
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench-devices: needs root for losetup; skipped\n');
    return 0;
  }
  handleSignals({
    // A second signal still stops the lab and frees the loop devices before leaving.
    onSecondSignal: () => {
      for (const labDir of labDirsUp) labDownSync(labDir);
      detachLoopsSync();
    },
  });

  const startedAt = new Date().toISOString();
  const loads = { start: loadAverage(), end: '' };
  const machine = describeMachine();
  const workDir = fs.mkdtempSync(path.join(options.parentDir, 'meshblock-bench-devices-'));
  const labDir = path.join(workDir, 'lab');
  let nbdkit = null;
  try {
    const referenceFile = path.join(workDir, 'device.img');
    process.stderr.write(`writing ${formatBytes(options.sizeBytes)} of ${referenceFile} (${options.fsType})\n`);
    await createFile(referenceFile, options.sizeBytes, { fill: true });
    const reference = await attachLoop(referenceFile);
    const labDevices = [];
    for (let index = 1; index <= labSdsCount; index++) {
      const file = path.join(workDir, `sds${index}.img`);
      // Sparse: the lab's pre-write writes every byte of the volume's chunks.
      await createFile(file, options.sizeBytes + labDeviceHeadroomBytes, { fill: false });
      labDevices.push(await attachLoop(file));
    }
    const device = deviceSide(reference);
    nbdkit = await startNbdkit(reference, workDir);
    process.stderr.write(`device ${reference}, nbdkit at ${nbdkit.uri}; starting the lab on ${labDevices.join(' ')}\n`);
    const lab = await startLab(labDir, labDevices, options);
    const labIo = ioModes(lab.status);
    process.stderr.write(`lab ready at ${lab.uri} (${labIo}); pre-writing ${formatBytes(options.sizeBytes)} of it\n`);
    const prewriteSeconds = await prewriteLab(lab, options.sizeBytes);
    const sides = [device, nbdkit, lab];

    const runs = patterns.map(() => []);
    for (let round = 1; round <= options.roundCount; round++) {
      for (const [patternIndex, pattern] of patterns.entries()) {
        for (const side of sides) {
          if (side === nbdkit && nbdkit.tracked.state.exited) throw labFailure('nbdkit', nbdkit.tracked.state);
          if (side === lab && !labAlive(lab)) throw new BenchError('SERVER', `a lab process died; logs in ${labDir}/logs`);
          const result = await measure(pattern, side, options, machine);
          runs[patternIndex].push({ side: side.name, round, result });
          const cpu = Object.entries(result.roles).map(([role, { usPerIo }]) => `${role} ${usPerIo.toFixed(0)}`).join(', ');
          process.stderr.write(
            `round ${round}/${options.roundCount} ${pattern.id.padEnd(17)} ${side.name.padEnd(6)} ` +
              `${formatValue(pattern.metric, result[pattern.metric])} ${pattern.metric === 'iops' ? 'IOPS' : 'MB/s'}, ` +
              `p50 ${formatUs(result.p50Us)} µs p99 ${formatUs(result.p99Us)} µs; CPU µs/IO: ${cpu}; page cache ${result.pageCacheGrowthBytes >= 0 ? '+' : ''}${formatMiB(result.pageCacheGrowthBytes)} MiB` +
              `${result.disturbed ? ' (DISTURBED: other load on the machine)' : ''}\n`,
          );
        }
      }
    }
    loads.end = loadAverage();

    const summaries = patterns.map((pattern, index) => summarize(pattern, runs[index]));
    process.stdout.write(
      `\nResults (load average ${loads.start} -> ${loads.end}; lab SDS IO: ${labIo})\n${textTable(resultRows(summaries))}\n\n` +
        `CPU per I/O, largest RSS, page cache growth\n${textTable(resourceRows(summaries))}\n`,
    );
    if (options.outPath !== null) {
      const commands = [
        `losetup --find --show --direct-io=on FILE   # ${1 + labSdsCount} files of ${formatBytes(options.sizeBytes)} (+${formatBytes(labDeviceHeadroomBytes)} for the lab's)`,
        `fio ${device.fioArgs(patterns[0], options).join(' ').replace(reference, '/dev/loopR')}`,
        nbdkit.command.join(' ').split(workDir).join('$DIR').replace(reference, '/dev/loopR'),
        lab.command.join(' ').replace(/\/dev\/loop\d+/g, '/dev/loopN'),
        `fio ${lab.fioArgs(patterns[0], options).join(' ').replace(/:\d+\//, ':PORT/')}`,
      ];
      writeSection(options.outPath, { heading: sectionHeading, analysisStart, analysisEnd }, (analysis) =>
        markdownSection({ options, machine, summaries, startedAt, loads, commands, prewriteSeconds, labIo, analysis }),
      );
      process.stdout.write(`\nwrote the '${sectionHeading.slice(3)}' section of ${options.outPath}\n`);
    }
    return 0;
  } catch (err) {
    if (err instanceof BenchError && err.code === 'INTERRUPTED') return interruptedExitCode();
    process.stderr.write(`bench-devices: ${err instanceof BenchError ? err.message : (err?.stack ?? String(err))}\n`);
    return exitRuntimeError;
  } finally {
    killRunning('SIGKILL', { fioOnly: true });
    await stopLab(labDir).catch((err) => process.stderr.write(`bench-devices: stopping the lab: ${err.message}\n`));
    if (nbdkit !== null) await stopTracked(nbdkit.tracked, serverStopMs, 'nbdkit');
    await detachLoops();
    killRunning('SIGKILL');
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
