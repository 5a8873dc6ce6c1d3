#!/usr/bin/env node
// Benchmark: what snapshots cost (issue 16), on a lab (`lab up`: one MDM, three SDSs on
// sparse files, the SDC serving NBD), with a reference beside each number in the same run.
//
// What it measures, and how:
// 1. Taking a snapshot under load, for an 8 GiB and a 1 TiB thin volume (both with the same
//    --size region written first): fio (nbd engine, 4k randwrite, iodepth 4, time-based) runs
//    on the volume while the script takes --snapshots snapshots of it, one every
//    --snap-interval seconds (POST /api/instances/System/action/snapshotVolumes, timed from
//    send to answer). Reference: the same fio run on the same volume with no snapshot. The
//    numbers: the call's median and longest time per volume size (the 1 TiB / 8 GiB ratio
//    should be about 1: the time must not depend on size), and fio's longest write
//    completion (the longest client IO pause) with snapshots against without.
// 2. The copy-on-write penalty: fio 4k randwrite, iodepth 16, on the 8 GiB volume's written
//    region, IOPS logged per 500 ms: once before a snapshot, once right after one. A 4 KiB
//    write to a chunk the snapshot shares copies the chunk first. Reported: IOPS and p99
//    completion latency before and after, and how long after the snapshot the IOPS are back
//    to 90% of the median before. Reference: the same two runs on qemu-nbd serving a raw file
//    (before) and a fresh qcow2 overlay on it (`qemu-img create -b`, after), the way a
//    hypervisor snapshots a disk: qcow2 copies a 64 KiB cluster on a first write.
// 3. Reading a snapshot whose chunks are all shared with its volume: fio 4k randread,
//    iodepth 1, on the snapshot (mapped to the lab's SDC) and on the volume, alternating
//    --rounds times. Reported: median and p99 read completion latency of both.
//
// Exit codes: 0 done, 1 a lab or qemu-nbd failed, a request failed, or fio reported an
// error, 2 bad usage, 128+N interrupted by signal N. The lab is stopped and purged and the temp
// dir removed on every path out.
//
// Usage: node scripts/bench-snap.mjs [--size 512M] [--runtime 20] [--ramp-time 2] [--rounds 3]
//          [--snapshots 5] [--snap-interval 3] [--out docs/benchmarks.md] [--dir /tmp]
//          [--shared-network] [--quick]

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { OutOfRangeError } from '../dist/common/errors.js';
import { GiB, MiB, formatBytes } from '../dist/common/units.js';
import {
  BenchError,
  checkPaths,
  delay,
  describeBuild,
  exitRuntimeError,
  firstLine,
  freeLoopbackPort,
  interruptedExitCode,
  killRunning,
  markdownTable,
  median,
  parseInteger,
  parseSharedOptions,
  run,
  sharedOptionSpecs,
  spawnTracked,
  stopTracked,
  textTable,
  throwIfInterrupted,
  waitForQuiet,
  writeSection,
} from './bench-common.mjs';
import { describeMachine, inOwnNetwork, labBenchOptions, labDirsUp, labFile, labRestApi, labUp, labVolumeUri, stopLab } from './bench-labs.mjs';

const sizeBytesMin = 64 * MiB;
const volumes = [
  { name: 'small', sizeText: '8GiB', title: '8 GiB thin' },
  { name: 'big', sizeText: '1TiB', title: '1 TiB thin' },
];
/** The lab's devices: the written regions twice (two copies) and their copies on write fit easily. */
const labDeviceText = '8GiB';
const fioSlackMs = 60_000;
const quietWaitMsMax = 5000;
/** IOPS log window for the copy-on-write runs. */
const iopsLogMs = 500;
/** "Back to full speed": a window at this share of the median IOPS before the snapshot. */
const recoveredShare = 0.9;
/** For a mapped snapshot to be exported by the SDC. */
const exportTimeoutMs = 30_000;
const qemuNbdReadyMs = 10_000;

const sectionHeading = '## Snapshot benchmark';
const analysisStart = '<!-- snap-analysis:start -->';
const analysisEnd = '<!-- snap-analysis:end -->';

const usage = `Usage: node scripts/bench-snap.mjs [options]

Starts a lab and measures what snapshots cost, each against a reference in the same run: the
time to take a snapshot under fio load on an 8 GiB and a 1 TiB thin volume and the longest IO
pause it causes, the copy-on-write penalty after a snapshot (against a qcow2 overlay on
qemu-nbd), and the read latency of a snapshot against its volume.

  --size SIZE          region written and used by fio (binary units) [default: 512M; --quick: 128M]
  --runtime SECONDS    measured time per fio run [default: 20; --quick: 6]
  --ramp-time SECONDS  unmeasured warm-up per fio run [default: 2; --quick: 1]
  --rounds N           read-latency rounds [default: 3; --quick: 1]
  --snapshots N        snapshots taken during each load run [default: 5; --quick: 2]
  --snap-interval S    seconds between them [default: 3; --quick: 2]
  --out FILE           also write the report as a Markdown section '${sectionHeading.slice(3)}' of FILE,
                       in place (or at the end), keeping the rest and the hand-written analysis
  --dir DIR            where the temp dir (the lab, the reference files) goes [default: ${os.tmpdir()}]
  --shared-network     run in this network namespace (as root the bench re-runs itself in a new one)
  --quick              smoke test: the --quick defaults above
  -h, --help           this text
`;

// --- arguments -------------------------------------------------------------------------

/** The options, validated by name and range; null for --help. Exported for its test. */
export function parseOptions(argv) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: { ...sharedOptionSpecs, snapshots: { type: 'string' }, 'snap-interval': { type: 'string' }, 'shared-network': { type: 'boolean', default: false } },
  });
  if (values.help) return null;
  const quick = values.quick;
  const shared = parseSharedOptions({ ...values, runtime: values.runtime ?? (quick ? '6' : '20') }, { sizeText: '512M', sizeTextQuick: '128M', rounds: '3', roundsQuick: '1', sizeBytesMin });
  const options = {
    ...shared,
    snapshotCount: parseInteger('--snapshots', values.snapshots ?? (quick ? '2' : '5'), 1, 30),
    snapIntervalSeconds: parseInteger('--snap-interval', values['snap-interval'] ?? (quick ? '2' : '3'), 1, 600),
    sharedNetwork: values['shared-network'],
  };
  if (options.snapshotCount * options.snapIntervalSeconds >= options.runtimeSeconds) {
    throw new OutOfRangeError('--snapshots', `few enough that --snapshots x --snap-interval stays under --runtime (${options.runtimeSeconds})`, String(options.snapshotCount));
  }
  checkPaths(values, options);
  return options;
}

// --- numbers ---------------------------------------------------------------------------

function ms(value, digits = 1) {
  return value === null || value === undefined ? '-' : value.toFixed(digits);
}

function ratio(mine, reference) {
  return mine === null || reference === null || reference === 0 ? '-' : (mine / reference).toFixed(2);
}

/**
 * The first time (ms after the run's start) from which a window's IOPS reach `share` of
 * `target`; null if none does. `windows`: [{ atMs, iops }] in time order.
 */
export function recoveredAtMs(windows, target, share = recoveredShare) {
  const found = windows.find((window) => window.iops >= share * target);
  return found === undefined ? null : found.atMs;
}

/** fio's IOPS log ("msec, value, direction, bs, prio" per line) as windows. */
export function parseIopsLog(text) {
  return text
    .split('\n')
    .map((line) => line.split(',').map((field) => field.trim()))
    .filter((fields) => fields.length >= 2 && /^\d+$/.test(fields[0] ?? ''))
    .map((fields) => ({ atMs: Number(fields[0]), iops: Number(fields[1]) }));
}

// --- fio -------------------------------------------------------------------------------

function fioBase(name, uri, options) {
  return [`--name=${name}`, '--ioengine=nbd', `--uri=${uri}`, `--size=${options.sizeBytes}`, '--output-format=json'];
}

function timedArgs(options) {
  return ['--time_based', `--runtime=${options.runtimeSeconds}`, `--ramp_time=${options.rampSeconds}`];
}

async function prewrite(uri, sizeBytes, what) {
  const args = ['--name=prewrite', '--ioengine=nbd', `--uri=${uri}`, '--rw=write', '--bs=1M', '--iodepth=8', `--size=${sizeBytes}`, '--output-format=json'];
  const state = await run('fio', args, 600_000);
  throwIfInterrupted();
  if (state.code !== 0) throw new BenchError('FIO', `fio could not pre-write ${what}: fio ${args.join(' ')}\n${state.stderr.trim()}`);
}

/**
 * One fio run; `during` (async, may be null) runs alongside from the end of the ramp. fio's
 * own errors are reported in `error`, not thrown.
 */
async function fioRun(args, options, cpuCount, during = null) {
  throwIfInterrupted();
  const quiet = await waitForQuiet(cpuCount, quietWaitMsMax, { announce: false });
  const { child, state } = spawnTracked('fio', args, { fio: true });
  const killTimer = setTimeout(() => child.kill('SIGKILL'), (options.runtimeSeconds + options.rampSeconds) * 1000 + fioSlackMs);
  let duringDone = Promise.resolve(null);
  const duringTimer = during === null ? null : setTimeout(() => (duringDone = during().catch((err) => err)), options.rampSeconds * 1000);
  await state.exit;
  clearTimeout(killTimer);
  if (duringTimer !== null) clearTimeout(duringTimer);
  const duringResult = await duringDone;
  throwIfInterrupted();
  if (duringResult instanceof Error) throw duringResult;
  if (state.spawnError !== null) throw new BenchError('FIO', `cannot run fio: ${state.spawnError.message}`);
  let job = null;
  try {
    job = JSON.parse(state.stdout.slice(state.stdout.search(/^\{/m))).jobs?.[0] ?? null;
  } catch {
    // No report: counted as an error below.
  }
  const error = state.code !== 0 || job === null || job.error !== 0 ? `fio exited with ${state.signal ?? state.code}, job error ${job?.error ?? '?'}: ${state.stderr.trim().split('\n').slice(-3).join(' | ')}` : null;
  const side = (direction) => (job === null || job[direction].total_ios === 0 ? null : job[direction]);
  const write = side('write');
  const read = side('read');
  return {
    iops: write?.iops ?? read?.iops ?? null,
    writeClatMaxMs: write === null ? null : write.clat_ns.max / 1e6,
    writeClatP99Ms: write === null ? null : write.clat_ns.percentile['99.000000'] / 1e6,
    readClatP50Ms: read === null ? null : read.clat_ns.percentile['50.000000'] / 1e6,
    readClatP99Ms: read === null ? null : read.clat_ns.percentile['99.000000'] / 1e6,
    during: duringResult,
    error,
    disturbed: !quiet,
  };
}

// --- the lab and its REST API -----------------------------------------------------------

async function startLab(labDir) {
  const port = await freeLoopbackPort();
  const extra = ['--detach', '--nbd-port', String(port), '--device-size', labDeviceText, ...volumes.flatMap((volume) => ['--volume', `${volume.name}:${volume.sizeText}`])];
  const state = await labUp(labDir, extra);
  throwIfInterrupted();
  const file = labFile(labDir);
  const lab = { dir: labDir, port, api: labRestApi(labDir), base: file.apiUrl, command: ['node', 'bin/meshblock.cjs', 'lab', 'up', '--dir', '$DIR', ...extra].join(' '), uris: {} };
  for (const volume of volumes) lab.uris[volume.name] = labVolumeUri(state.stdout, volume.name);
  const [listed, sdcs] = await Promise.all([lab.api.must(lab.base, 'GET', '/api/types/Volume/instances'), lab.api.must(lab.base, 'GET', '/api/types/Sdc/instances')]);
  lab.volumeIds = Object.fromEntries(listed.body.map((volume) => [volume.name, volume.id]));
  lab.sdcId = sdcs.body[0].id;
  return lab;
}

/** Takes one snapshot of `volumeName`; resolves { tookMs, id }. */
async function snapshot(lab, volumeName, snapshotName) {
  const startMs = performance.now();
  const answer = await lab.api.authed(lab.base, 'POST', '/api/instances/System/action/snapshotVolumes', { body: { snapshotDefs: [{ volumeId: lab.volumeIds[volumeName], snapshotName }] } });
  const tookMs = performance.now() - startMs;
  if (answer.status !== 200 || !Array.isArray(answer.body?.volumeIdList)) throw new BenchError('REST', `snapshotVolumes of ${volumeName} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  return { tookMs, id: answer.body.volumeIdList[0] };
}

async function removeVolume(lab, id) {
  await lab.api.must(lab.base, 'POST', `/api/instances/Volume::${id}/action/removeVolume`, { body: { removeMode: 'ONLY_ME' } });
}

/** Maps a snapshot to the lab's SDC and waits until the SDC exports it; resolves its URI. */
async function mapAndWait(lab, id, name) {
  await lab.api.must(lab.base, 'POST', `/api/instances/Volume::${id}/action/addMappedSdc`, { body: { sdcId: lab.sdcId, allowMultipleMappings: 'TRUE' } });
  const deadline = Date.now() + exportTimeoutMs;
  for (;;) {
    throwIfInterrupted();
    const listed = await run('nbdinfo', ['--list', `nbd://127.0.0.1:${lab.port}`], 10_000);
    if (listed.code === 0 && new RegExp(`export="${name}"`).test(listed.stdout)) return `nbd://127.0.0.1:${lab.port}/${name}`;
    if (Date.now() > deadline) throw new BenchError('SERVER', `the SDC did not export snapshot ${name} within ${exportTimeoutMs / 1000} s`);
    await delay(250);
  }
}

// --- the reference: qemu-nbd, a raw file and a qcow2 overlay ---------------------------

async function serveQemuNbd(file, format) {
  const port = await freeLoopbackPort();
  const tracked = spawnTracked('qemu-nbd', ['--persistent', '--bind=127.0.0.1', `--port=${port}`, `--format=${format}`, '--export-name=ref', file]);
  const deadline = Date.now() + qemuNbdReadyMs;
  for (;;) {
    const probe = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/ref`], 5000);
    if (probe.code === 0) return { tracked, uri: `nbd://127.0.0.1:${port}/ref` };
    if (tracked.state.exited || Date.now() > deadline) throw new BenchError('SERVER', `qemu-nbd (${format}) did not serve ${file}: ${tracked.state.stderr.trim()}`);
    await delay(100);
  }
}

// --- the measurements -------------------------------------------------------------------

/** 1. Snapshots under load on one volume, and its reference run. */
async function snapshotUnderLoad(lab, volume, options, cpuCount) {
  const loadArgs = [...fioBase(`load-${volume.name}`, lab.uris[volume.name], options), '--rw=randwrite', '--bs=4k', '--iodepth=4', ...timedArgs(options)];
  const reference = await fioRun(loadArgs, options, cpuCount);
  const taken = [];
  const during = async () => {
    for (let index = 1; index <= options.snapshotCount; index++) {
      await delay(options.snapIntervalSeconds * 1000);
      taken.push(await snapshot(lab, volume.name, `${volume.name}-load-${index}`));
    }
  };
  const loaded = await fioRun(loadArgs, options, cpuCount, during);
  const removeMs = [];
  for (const snap of taken) {
    const startMs = performance.now();
    await removeVolume(lab, snap.id);
    removeMs.push(performance.now() - startMs);
  }
  return { volume, reference, loaded, snapshotMs: taken.map((snap) => snap.tookMs), removeMs };
}

/**
 * One copy-on-write pair: a run before, `between`, a run right after, IOPS logged. `between`
 * may resolve a URI: the after-run goes there (the reference serves its overlay anew).
 */
async function cowPair(name, uri, options, cpuCount, workDir, between) {
  const measure = async (label, target) => {
    const prefix = path.join(workDir, `${name}-${label}`);
    const args = [...fioBase(`cow-${name}-${label}`, target, options), '--rw=randwrite', '--bs=4k', '--iodepth=16', '--time_based', `--runtime=${options.runtimeSeconds}`, `--write_iops_log=${prefix}`, `--log_avg_msec=${iopsLogMs}`];
    const result = await fioRun(args, { ...options, rampSeconds: 0 }, cpuCount);
    const logFile = fs.readdirSync(workDir).find((file) => file.startsWith(`${name}-${label}_iops`));
    result.windows = logFile === undefined ? [] : parseIopsLog(fs.readFileSync(path.join(workDir, logFile), 'utf8'));
    return result;
  };
  const before = await measure('before', uri);
  const next = await between();
  const after = await measure('after', typeof next === 'string' ? next : uri);
  const target = median(before.windows.map((window) => window.iops));
  return { before, after, recoveredMs: target === null ? null : recoveredAtMs(after.windows, target) };
}

async function copyOnWrite(lab, options, cpuCount, workDir) {
  let snapId = null;
  const ours = await cowPair('meshblock', lab.uris.small, options, cpuCount, workDir, async () => {
    snapId = (await snapshot(lab, 'small', 'small-cow')).id;
  });
  await removeVolume(lab, snapId);
  // The reference: a raw file with the same region written, then a qcow2 overlay on it.
  const rawFile = path.join(workDir, 'reference.raw');
  fs.writeFileSync(rawFile, '');
  fs.truncateSync(rawFile, 8 * GiB);
  let served = await serveQemuNbd(rawFile, 'raw');
  await prewrite(served.uri, options.sizeBytes, 'the reference raw file');
  const overlay = path.join(workDir, 'reference.qcow2');
  const reference = await cowPair('qcow2', served.uri, options, cpuCount, workDir, async () => {
    await stopTracked(served.tracked, 5000, 'qemu-nbd');
    const created = await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', rawFile, overlay]);
    if (created.code !== 0) throw new BenchError('SERVER', `qemu-img create failed: ${created.stderr.trim()}`);
    served = await serveQemuNbd(overlay, 'qcow2');
    return served.uri;
  });
  await stopTracked(served.tracked, 5000, 'qemu-nbd');
  return { ours, reference };
}

/** 3. Reads of a snapshot sharing every chunk with its volume, against reads of the volume. */
async function snapshotReads(lab, options, cpuCount) {
  const snap = await snapshot(lab, 'small', 'small-read');
  const snapUri = await mapAndWait(lab, snap.id, 'small-read');
  const readArgs = (name, uri) => [...fioBase(name, uri, options), '--rw=randread', '--bs=4k', '--iodepth=1', ...timedArgs(options)];
  const rounds = [];
  for (let round = 1; round <= options.roundCount; round++) {
    const volume = await fioRun(readArgs('read-volume', lab.uris.small), options, cpuCount);
    const snapshotRun = await fioRun(readArgs('read-snapshot', snapUri), options, cpuCount);
    rounds.push({ volume, snapshot: snapshotRun });
    process.stderr.write(`reads ${round}/${options.roundCount}: volume p50 ${ms(volume.readClatP50Ms, 3)} ms p99 ${ms(volume.readClatP99Ms, 3)} ms; snapshot p50 ${ms(snapshotRun.readClatP50Ms, 3)} ms p99 ${ms(snapshotRun.readClatP99Ms, 3)} ms\n`);
  }
  await unmapWhenClosed(lab, snap.id);
  await removeVolume(lab, snap.id);
  return rounds;
}

/** Unmaps a volume once the SDC no longer reports it open (its heartbeat comes every few seconds after fio's exit). */
async function unmapWhenClosed(lab, id) {
  const deadline = Date.now() + exportTimeoutMs;
  for (;;) {
    throwIfInterrupted();
    const answer = await lab.api.authed(lab.base, 'POST', `/api/instances/Volume::${id}/action/removeMappedSdc`, { body: { sdcId: lab.sdcId } });
    if (answer.status === 200) return;
    if (answer.body?.code !== 'MB_ERR_VOLUME_OPEN' || Date.now() > deadline) throw new BenchError('REST', `removeMappedSdc of ${id} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
    await delay(500);
  }
}

// --- report ----------------------------------------------------------------------------

function loadRows(loads) {
  const header = ['volume', 'snapshot call median ms', 'longest ms', 'remove median ms', 'IO pause: longest write with snapshots ms', 'without ms', 'ratio', 'IOPS with', 'IOPS without'];
  const rows = loads.map((entry) => [
    entry.volume.title,
    ms(median(entry.snapshotMs)),
    ms(Math.max(...entry.snapshotMs)),
    ms(median(entry.removeMs)),
    ms(entry.loaded.writeClatMaxMs),
    ms(entry.reference.writeClatMaxMs),
    ratio(entry.loaded.writeClatMaxMs, entry.reference.writeClatMaxMs),
    ms(entry.loaded.iops, 0),
    ms(entry.reference.iops, 0),
  ]);
  const [small, big] = loads;
  rows.push(['1 TiB / 8 GiB', ratio(median(big.snapshotMs), median(small.snapshotMs)), ratio(Math.max(...big.snapshotMs), Math.max(...small.snapshotMs)), ratio(median(big.removeMs), median(small.removeMs)), '', '', '', '', '']);
  return { header, rows };
}

function cowRows(cow) {
  const header = ['system', 'IOPS before', 'IOPS after', 'after / before', 'p99 write ms before', 'after', 'back to 90% after ms'];
  const row = (title, pair) => [title, ms(pair.before.iops, 0), ms(pair.after.iops, 0), ratio(pair.after.iops, pair.before.iops), ms(pair.before.writeClatP99Ms, 2), ms(pair.after.writeClatP99Ms, 2), pair.recoveredMs === null ? 'not within the run' : ms(pair.recoveredMs, 0)];
  return { header, rows: [row('meshblock (1 MiB chunk copied)', cow.ours), row('reference: qcow2 overlay on qemu-nbd (64 KiB clusters)', cow.reference)] };
}

function readRows(reads) {
  const header = ['4k randread, iodepth 1', 'p50 ms (median of rounds)', 'p99 ms (median of rounds)'];
  const stat = (side, key) => median(reads.map((round) => round[side][key]));
  return {
    header,
    rows: [
      ['the volume', ms(stat('volume', 'readClatP50Ms'), 3), ms(stat('volume', 'readClatP99Ms'), 3)],
      ['its snapshot (every chunk shared)', ms(stat('snapshot', 'readClatP50Ms'), 3), ms(stat('snapshot', 'readClatP99Ms'), 3)],
      ['snapshot / volume', ratio(stat('snapshot', 'readClatP50Ms'), stat('volume', 'readClatP50Ms')), ratio(stat('snapshot', 'readClatP99Ms'), stat('volume', 'readClatP99Ms'))],
    ],
  };
}

function describeSnapMachine(parentDir) {
  const machine = describeMachine();
  return {
    text: `${machine.cpuModel}, ${machine.cpuCount} CPUs, ${(os.totalmem() / GiB).toFixed(0)} GiB RAM, ${machine.kernel}, Node ${machine.node}, ${machine.fio}, ${firstLine('qemu-nbd', ['--version'])}`,
    meshblock: machine.meshblock,
    build: describeBuild(),
    parentDir,
  };
}

function markdownSection({ options, machine, tables, startedAt, labCommand, disturbed, analysis }) {
  return `${sectionHeading}

Run ${startedAt} by \`node scripts/bench-snap.mjs\` (\`npm run bench:snap\`): ${machine.text}; meshblock ${machine.meshblock}, ${machine.build}. The lab: \`${labCommand}\` in ${machine.parentDir} (sparse files, the page cache under them).
Region ${formatBytes(options.sizeBytes)}, fio runs of ${options.runtimeSeconds} s (ramp ${options.rampSeconds} s), ${options.snapshotCount} snapshots ${options.snapIntervalSeconds} s apart per load run, ${options.roundCount} read round(s). Network: ${inOwnNetwork() ? 'a namespace of its own (loopback only)' : "the machine's own"}. Runs that started on a busy machine: ${disturbed}.

${tables.map(([title, table]) => `**${title}**\n\n${markdownTable(table)}`).join('\n\n')}

${analysisStart}
${analysis ?? '_No analysis written yet._'}
${analysisEnd}
`;
}

// --- main ------------------------------------------------------------------------------

async function main() {
  const parsed = await labBenchOptions('bench-snap', parseOptions, usage, import.meta.url);
  if (parsed.exitCode !== undefined) return parsed.exitCode;
  const { options } = parsed;
  const startedAt = new Date().toISOString();
  const machine = describeSnapMachine(options.parentDir);
  const cpuCount = os.cpus().length;
  const workDir = fs.mkdtempSync(path.join(options.parentDir, 'meshblock-bench-snap-'));
  let lab = null;
  try {
    process.stderr.write(`starting the lab in ${workDir}\n`);
    lab = await startLab(path.join(workDir, 'lab'));
    for (const volume of volumes) await prewrite(lab.uris[volume.name], options.sizeBytes, `the ${volume.title} volume`);

    const loads = [];
    for (const volume of volumes) {
      const entry = await snapshotUnderLoad(lab, volume, options, cpuCount);
      loads.push(entry);
      process.stderr.write(`${volume.title}: snapshot median ${ms(median(entry.snapshotMs))} ms, longest ${ms(Math.max(...entry.snapshotMs))} ms; longest write ${ms(entry.loaded.writeClatMaxMs)} ms with, ${ms(entry.reference.writeClatMaxMs)} ms without\n`);
    }
    const cow = await copyOnWrite(lab, options, cpuCount, workDir);
    process.stderr.write(`copy on write: meshblock ${ms(cow.ours.before.iops, 0)} -> ${ms(cow.ours.after.iops, 0)} IOPS; qcow2 ${ms(cow.reference.before.iops, 0)} -> ${ms(cow.reference.after.iops, 0)} IOPS\n`);
    const reads = await snapshotReads(lab, options, cpuCount);

    const tables = [
      ['Taking a snapshot under 4k random writes (iodepth 4); the reference is the same run without snapshots', loadRows(loads)],
      ['Copy on write: 4k random writes (iodepth 16) before and right after a snapshot', cowRows(cow)],
      ['Reading a snapshot', readRows(reads)],
    ];
    process.stdout.write(`\n${tables.map(([title, table]) => `${title}\n${textTable(table)}`).join('\n\n')}\n`);
    const runs = [...loads.flatMap((entry) => [entry.reference, entry.loaded]), cow.ours.before, cow.ours.after, cow.reference.before, cow.reference.after, ...reads.flatMap((round) => [round.volume, round.snapshot])];
    const failed = runs.filter((result) => result.error !== null);
    if (options.outPath !== null) {
      writeSection(options.outPath, { heading: sectionHeading, analysisStart, analysisEnd }, (analysis) =>
        markdownSection({ options, machine, tables, startedAt, labCommand: lab.command, disturbed: `${runs.filter((result) => result.disturbed).length} of ${runs.length}`, analysis }),
      );
      process.stdout.write(`\nwrote the '${sectionHeading.slice(3)}' section of ${options.outPath}\n`);
    }
    if (failed.length > 0) {
      process.stderr.write(`bench-snap: fio reported errors: ${failed.map((result) => result.error).join('; ')}\n`);
      return exitRuntimeError;
    }
    return 0;
  } catch (err) {
    if (err instanceof BenchError && err.code === 'INTERRUPTED') return interruptedExitCode();
    process.stderr.write(`bench-snap: ${err instanceof BenchError ? err.message : (err?.stack ?? String(err))}\n`);
    return exitRuntimeError;
  } finally {
    killRunning('SIGKILL', { fioOnly: true });
    lab?.api.destroy();
    for (const labDir of [...labDirsUp]) await stopLab(labDir).catch((err) => process.stderr.write(`bench-snap: stopping ${labDir}: ${err.message}\n`));
    killRunning('SIGKILL');
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

// Run only as a program: the test imports parseOptions, parseIopsLog and recoveredAtMs.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) process.exitCode = await main();
