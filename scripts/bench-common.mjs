// What the bench scripts (bench-nbd, bench-sds, bench-lab, bench-rebuild) share: their
// arguments, interruption by a signal, the child processes they start and must stop on every
// path out, CPU accounting from /proc, waiting for the shared machine to go quiet before a run,
// the test files and page cache, tables, the machine and build description, and the report
// section a bench writes into docs/benchmarks.md. Each script keeps what it alone measures.
//
// The interruption state and the set of running children are this module's: a script is one
// process, and every helper here that waits checks the same flag.

import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError, OutOfRangeError } from '../dist/common/errors.js';
import { MiB, formatBytes, parseSizeBytes } from '../dist/common/units.js';
import { WirePeer } from '../dist/wire/peer.js';
import { SdsStatus, encodeIo, ioArgOffsets } from '../dist/wire/sds-ops.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const meshblockBin = path.join(repoRoot, 'bin/meshblock.cjs');
/** Every server a bench starts listens on loopback only. */
export const host = '127.0.0.1';

export const exitRuntimeError = 1;
export const exitUsageError = 2;

/** Test files are written, and read into the page cache, in pieces of this size. */
export const fileChunkBytes = 8 * MiB;

/**
 * Before each run a bench waits (up to its own quietWaitMsMax) until the rest of the machine
 * uses less than quietBusyPercentMax of one core, sampled over quietSampleMs: on a 2-core
 * machine one busy neighbour halves the CPU left for what is measured.
 */
export const quietBusyPercentMax = 15;
export const quietSampleMs = 500;
/** A run during which the rest of the machine used more than this (% of one core) is flagged. */
export const disturbedPercentMin = 20;

/** Lines of a failed process's output shown in its error. */
const failureTailLineCount = 15;

export class BenchError extends Error {
  constructor(code, message, options) {
    super(message, options);
    this.name = 'BenchError';
    this.code = code;
  }
}

// --- arguments -------------------------------------------------------------------------

/**
 * The parseArgs options that bench-nbd, bench-sds and bench-lab share, so that
 * `npm run bench -- OPTIONS` can give all of them the same; each adds its own.
 */
export const sharedOptionSpecs = {
  size: { type: 'string' },
  runtime: { type: 'string' },
  'ramp-time': { type: 'string' },
  rounds: { type: 'string' },
  out: { type: 'string' },
  dir: { type: 'string' },
  quick: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
};

/**
 * The shared options' values, validated by name and range. `defaults` gives each script's
 * default size and round count (`quick` ones under --quick); runtime and ramp time default
 * alike everywhere. The paths are checked apart, by checkPaths(), so that a script can check
 * its own options in between, in the order its errors have always come.
 */
export function parseSharedOptions(values, { sizeText, sizeTextQuick = sizeText, rounds, roundsQuick = rounds, sizeBytesMin }) {
  const quick = values.quick;
  const sizeTextGiven = values.size ?? (quick ? sizeTextQuick : sizeText);
  const sizeBytes = parseSizeBytes('--size', sizeTextGiven);
  if (sizeBytes < sizeBytesMin || sizeBytes % MiB !== 0) {
    throw new OutOfRangeError('--size', `a whole number of MiB, at least ${formatBytes(sizeBytesMin)}`, sizeTextGiven);
  }
  return {
    sizeBytes,
    runtimeSeconds: parseInteger('--runtime', values.runtime ?? (quick ? '3' : '10'), 1, 3600),
    rampSeconds: parseInteger('--ramp-time', values['ramp-time'] ?? (quick ? '1' : '2'), 0, 600),
    roundCount: parseInteger('--rounds', values.rounds ?? (quick ? roundsQuick : rounds), 1, 100),
    outPath: values.out === undefined ? null : path.resolve(values.out),
    parentDir: path.resolve(values.dir ?? os.tmpdir()),
  };
}

/** --out and --dir must name places that exist: refused before any work, not after it. */
export function checkPaths(values, options) {
  if (values.out !== undefined && values.out.trim() === '') throw new InvalidArgumentError('--out', 'must not be empty');
  if (!isDirectory(options.parentDir)) throw new InvalidArgumentError('--dir', `${options.parentDir} is not a directory`);
  if (options.outPath !== null && !isDirectory(path.dirname(options.outPath))) {
    throw new InvalidArgumentError('--out', `directory ${path.dirname(options.outPath)} does not exist`);
  }
}

/**
 * A bench's options from its command line, or the exit code it stops with: 0 once `usage`
 * is printed for --help, exitUsageError once what is wrong is said (`name: message`).
 */
export function optionsOrExitCode(name, parseOptions, usage) {
  let options;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${name}: ${err.message} (see --help)\n`);
    return { exitCode: exitUsageError };
  }
  if (options === null) {
    process.stdout.write(usage);
    return { exitCode: 0 };
  }
  return { options };
}

export function parseInteger(field, text, min, max) {
  if (!/^\d+$/.test(text)) throw new InvalidArgumentError(field, `not a whole number: '${text}'`);
  const value = Number(text);
  if (value < min || value > max) throw new OutOfRangeError(field, `>= ${min} and <= ${max}`, text);
  return value;
}

export function isDirectory(dir) {
  try {
    return fs.statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

// --- interruption ----------------------------------------------------------------------

/** Set by SIGINT/SIGTERM; every wait checks it, and the running fio is killed. */
let interruptedBy = null;
/** Every child we started and that has not exited, so every path out can stop it. */
const running = new Set();

/**
 * Makes SIGINT and SIGTERM stop the bench: the first sets the flag every wait checks, stops
 * fio and calls `onInterrupt` (a script's own work to stop); a second kills everything we
 * started, calls `onSecondSignal` (last-ditch cleanup that cannot wait) and leaves.
 */
export function handleSignals({ onInterrupt = () => undefined, onSecondSignal = () => undefined } = {}) {
  const onSignal = (signal) => {
    if (interruptedBy !== null) {
      // Second signal: stop waiting for anything, kill what we started, leave.
      killRunning('SIGKILL');
      onSecondSignal();
      process.exit(128 + os.constants.signals[signal]);
    }
    interruptedBy = signal;
    process.stderr.write(`\n${signal}: stopping\n`);
    killRunning('SIGTERM', { fioOnly: true });
    onInterrupt();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

/** Null, or the signal that interrupted the bench. */
export function interruptedSignal() {
  return interruptedBy;
}

/** The exit code of a bench interrupted by a signal: 128 + its number. */
export function interruptedExitCode() {
  return 128 + os.constants.signals[interruptedBy];
}

export function throwIfInterrupted() {
  if (interruptedBy !== null) throw new BenchError('INTERRUPTED', `interrupted by ${interruptedBy}`);
}

export function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// --- processes -------------------------------------------------------------------------

/**
 * Spawns a program we own: tracked until it exits, so every exit path can stop it. `fio`
 * marks fio runs, the ones a first signal stops. With `stderrKeptBytes`, a long-lived
 * process's stderr (a daemon's log) is cut to its last stderrKeptBytes whenever it passes
 * twice that, which is plenty to show why it failed; fio's stderr is always kept whole.
 */
export function spawnTracked(command, args, { fio = false, env = process.env, stderrKeptBytes = null } = {}) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const entry = { process: child, fio };
  running.add(entry);
  const state = { exited: false, code: null, signal: null, stdout: '', stderr: '', spawnError: null };
  state.exit = new Promise((resolve) => {
    child.on('error', (err) => {
      state.spawnError = err;
      state.exited = true;
      running.delete(entry);
      resolve();
    });
    child.on('exit', (code, signal) => {
      state.exited = true;
      state.code = code;
      state.signal = signal;
      running.delete(entry);
      resolve();
    });
  });
  child.stdout.setEncoding('utf8').on('data', (text) => (state.stdout += text));
  child.stderr.setEncoding('utf8').on('data', (text) => {
    state.stderr += text;
    if (!fio && stderrKeptBytes !== null && state.stderr.length > 2 * stderrKeptBytes) state.stderr = state.stderr.slice(-stderrKeptBytes);
  });
  return { child, state };
}

/** Runs a program to its end (killed after `timeoutMs`); resolves with its state. */
export function run(command, args, timeoutMs = 30_000, spawnOptions = {}) {
  const { child, state } = spawnTracked(command, args, spawnOptions);
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return state.exit.then(() => {
    clearTimeout(timer);
    if (state.spawnError !== null) throw new BenchError('SPAWN', `cannot run ${command}: ${state.spawnError.message}`);
    return state;
  });
}

/** Sends `signal` to every tracked child still running (with `fioOnly`, to fio runs only). */
export function killRunning(signal, { fioOnly = false } = {}) {
  for (const entry of running) if (!fioOnly || entry.fio) entry.process.kill(signal);
}

/**
 * SIGTERM, then SIGKILL if the process has not exited `stopMs` later (saying so on stderr,
 * with `name`): a daemon gets its clean stop, but a hung one cannot hang the bench.
 */
export async function stopTracked({ child, state }, stopMs, name) {
  if (state.exited) return;
  child.kill('SIGTERM');
  let timer;
  const timedOut = new Promise((resolve) => {
    timer = setTimeout(() => resolve(false), stopMs);
  });
  const stopped = await Promise.race([state.exit.then(() => true), timedOut]);
  clearTimeout(timer); // A pending timer would keep the process alive after everything stopped.
  if (!stopped) {
    process.stderr.write(`${name} did not exit ${stopMs} ms after SIGTERM: killing it\n`);
    child.kill('SIGKILL');
    await state.exit;
  }
}

/** The error for a tracked process that could not start or exited: how, and the tail of `output`. */
export function processFailure(code, name, state, output = state.stderr) {
  const how = state.spawnError !== null ? state.spawnError.message : `exited with ${state.signal ?? state.code}`;
  const tail = output.trim().split('\n').slice(-failureTailLineCount).join('\n');
  return new BenchError(code, `${name} ${how}${tail ? `:\n${tail}` : ''}`);
}

export async function freeLoopbackPort() {
  const probe = net.createServer();
  await new Promise((resolve, reject) => {
    probe.once('error', reject);
    probe.listen({ host, port: 0 }, resolve);
  });
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

// --- CPU accounting --------------------------------------------------------------------

/**
 * The fields of a /proc stat file (/proc/PID/stat or /proc/PID/task/TID/stat) from field 3
 * on, so that fields[1] is the parent pid, fields[7] minor faults, fields[11] and fields[12]
 * utime and stime in clock ticks. Throws once the process is gone.
 */
export function procStatFields(statPath) {
  const stat = fs.readFileSync(statPath, 'utf8');
  // The command name (field 2) may contain spaces: count fields after its ')', from field 3.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** utime + stime, in seconds, from procStatFields(). */
export function cpuSecondsOf(fields, clockTicksPerSecond) {
  return (Number(fields[11]) + Number(fields[12])) / clockTicksPerSecond;
}

/** utime + stime of one process, in seconds; null once it is gone. */
export function processCpuSeconds(pid, clockTicksPerSecond) {
  try {
    return cpuSecondsOf(procStatFields(`/proc/${pid}/stat`), clockTicksPerSecond);
  } catch {
    return null;
  }
}

/**
 * Context switches (voluntary and involuntary) summed over a process's live threads, and how
 * many threads it has: a thread's own count leaves with it, so sample while the threads that
 * matter run. Throws once the process is gone.
 */
export function threadContextSwitches(pid) {
  let contextSwitches = 0;
  const tids = fs.readdirSync(`/proc/${pid}/task`);
  for (const tid of tids) {
    let status;
    try {
      status = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    } catch {
      continue; // The thread ended between readdir and read.
    }
    for (const match of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s*(\d+)$/gm)) contextSwitches += Number(match[1]);
  }
  return { contextSwitches, threadCount: tids.length };
}

/** Resident set size of one process in bytes (VmRSS from /proc/PID/status); null once it is gone. */
export function processRssBytes(pid) {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match === null ? null : Number(match[1]) * 1024;
  } catch {
    return null;
  }
}

/**
 * The machine's page cache in bytes: Cached (file pages) plus Buffers (block devices' pages,
 * where IO through /dev/loopN or /dev/sdX without O_DIRECT lands) from /proc/meminfo.
 */
export function pageCacheBytes() {
  const meminfo = fs.readFileSync('/proc/meminfo', 'utf8');
  const field = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(meminfo)?.[1] ?? 0) * 1024;
  return field('Cached') + field('Buffers');
}

/** Busy and total CPU ticks of the whole machine, summed over all CPUs, from /proc/stat. */
export function machineTicks() {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0];
  const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number); // user nice system idle iowait irq softirq steal
  // Busy is time in processes (user, nice, system), which the measured processes' and fio's
  // time can be taken from; interrupt time is nobody's. Steal is time the hypervisor ran
  // something else.
  const totalTicks = ticks.slice(0, 7).reduce((sum, value) => sum + value, 0);
  return { busyTicks: ticks[0] + ticks[1] + ticks[2], totalTicks };
}

/** CPU the machine used between two machineTicks() samples, in % of one core. */
export function machineBusyPercent(before, after, cpuCount) {
  const totalTicks = after.totalTicks - before.totalTicks;
  return totalTicks === 0 ? 0 : (100 * cpuCount * (after.busyTicks - before.busyTicks)) / totalTicks;
}

/**
 * Waits until the machine is idle apart from us, for at most `quietWaitMsMax`; resolves false
 * if it never became so (the run goes ahead, and is flagged by the caller). With `announce`,
 * says once on stderr that it is waiting.
 */
export async function waitForQuiet(cpuCount, quietWaitMsMax, { announce = true } = {}) {
  const deadline = Date.now() + quietWaitMsMax;
  let warned = false;
  for (;;) {
    const before = machineTicks();
    await delay(quietSampleMs);
    throwIfInterrupted();
    const busyPercent = machineBusyPercent(before, machineTicks(), cpuCount);
    if (busyPercent < quietBusyPercentMax) return true;
    if (Date.now() > deadline) {
      process.stderr.write(`the machine stayed busy (${busyPercent.toFixed(0)}% of a core) for ${quietWaitMsMax / 1000} s: running anyway\n`);
      return false;
    }
    if (announce && !warned) {
      process.stderr.write(`waiting for the machine to go quiet (${busyPercent.toFixed(0)}% of a core busy besides the bench)\n`);
      warned = true;
    }
  }
}

// --- test files and the page cache -----------------------------------------------------

/**
 * Writes every byte of `sizeBytes` through `handle` once with pseudorandom data, in
 * fileChunkBytes pieces that each differ: no server may read holes or unwritten extents,
 * which the kernel answers without touching the page cache.
 */
export async function writePseudorandom(handle, sizeBytes) {
  const piece = randomFillSync(Buffer.allocUnsafe(fileChunkBytes));
  for (let offsetBytes = 0; offsetBytes < sizeBytes; offsetBytes += piece.length) {
    throwIfInterrupted();
    const pieceBytes = Math.min(piece.length, sizeBytes - offsetBytes);
    // Vary the bytes per piece so no two pieces are identical.
    piece.writeDoubleLE(offsetBytes, 0);
    let writtenBytes = 0;
    while (writtenBytes < pieceBytes) {
      const { bytesWritten } = await handle.write(piece, writtenBytes, pieceBytes - writtenBytes, offsetBytes + writtenBytes);
      writtenBytes += bytesWritten;
    }
  }
}

/**
 * fio reading a whole file through the page cache; `invalidate` first drops what is cached.
 * `mode` is the --cache-fill mode: `random` (no readahead) leaves small page-cache folios,
 * `sequential` the large ones readahead leaves (see bench-nbd.mjs fillPageCache).
 */
export function fillArgs(file, sizeBytes, mode, invalidate) {
  return [
    '--name=cache-fill',
    `--filename=${file}`,
    '--rw=read',
    `--bs=${fileChunkBytes}`,
    '--ioengine=psync',
    `--fadvise_hint=${mode}`,
    `--invalidate=${invalidate ? 1 : 0}`,
    `--size=${sizeBytes}`,
    '--output-format=terse',
  ];
}

// --- results ---------------------------------------------------------------------------

/** The median of the values that are not null; null when none is. */
export function median(values) {
  const sorted = values.filter((value) => value !== null).sort((a, b) => a - b);
  if (sorted.length === 0) return null;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/**
 * The report's sentence on runs other load disturbed, from per-group counts
 * ({ disturbedCount, runCount } each, e.g. one per pattern and target).
 */
export function disturbedRunsText(groups) {
  let disturbedCount = 0;
  let runCount = 0;
  for (const group of groups) {
    disturbedCount += group.disturbedCount;
    runCount += group.runCount;
  }
  return disturbedCount === 0
    ? `no run saw more than ${disturbedPercentMin}% of a core of other load.`
    : `**${disturbedCount} of ${runCount} runs saw other load** (more than ${disturbedPercentMin}% of a core, or no quiet start): treat their numbers with care.`;
}

export function textTable({ header, rows }) {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column].length)));
  const line = (cells) => cells.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]) : cell.padStart(widths[column]))).join('  ');
  return [line(header), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.map(line)].join('\n');
}

export function markdownTable({ header, rows }) {
  const line = (cells) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map((_, column) => (column === 0 ? '---' : '---:'))), ...rows.map(line)].join('\n');
}

// --- the machine -----------------------------------------------------------------------

export function firstLine(command, args) {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim().split('\n')[0];
  } catch {
    return 'unknown';
  }
}

export function firstLineMatching(command, args, pattern) {
  try {
    const output = execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 64 * MiB });
    return output.split('\n').find((line) => pattern.test(line)) ?? '';
  } catch {
    return '';
  }
}

/**
 * The build the bench runs: a digest of dist/ (what `npm run build` produced), and a warning
 * when some source file is newer than the build, i.e. the numbers would not be for src/.
 */
export function describeBuild() {
  const files = (dir) =>
    fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
      const full = path.join(dir, entry.name);
      return entry.isDirectory() ? files(full) : [full];
    });
  try {
    const built = files(path.join(repoRoot, 'dist')).filter((file) => file.endsWith('.js')).sort();
    const hash = createHash('sha256');
    for (const file of built) hash.update(path.relative(repoRoot, file)).update(fs.readFileSync(file));
    const builtMs = Math.min(...built.map((file) => fs.statSync(file).mtimeMs));
    const stale = files(path.join(repoRoot, 'src')).some((file) => fs.statSync(file).mtimeMs > builtMs);
    return `dist sha256 ${hash.digest('hex').slice(0, 12)}${stale ? ' (STALE: sources are newer than dist/, run npm run build)' : ''}`;
  } catch {
    return 'dist unknown';
  }
}

// --- report sections -------------------------------------------------------------------

/**
 * A bench's section of a Markdown document: `heading` (a `## ` line) and the markers around
 * the hand-written analysis that re-runs keep.
 */
function findSection(text, heading) {
  const match = new RegExp(`^${heading}[ \\t]*$`, 'm').exec(text);
  if (match === null) return null;
  const rest = text.slice(match.index + match[0].length);
  // The section runs to the next # or ## heading.
  const next = /^#{1,2} /m.exec(rest);
  return { start: match.index, end: next === null ? text.length : match.index + match[0].length + next.index };
}

function readKeptAnalysis(existing, { heading, analysisStart, analysisEnd }) {
  const section = findSection(existing, heading);
  if (section === null) return null;
  const text = existing.slice(section.start, section.end);
  const start = text.indexOf(analysisStart);
  const end = text.indexOf(analysisEnd);
  if (start === -1 || end === -1 || end < start) return null;
  return text.slice(start + analysisStart.length, end).trim();
}

/**
 * Writes the section `makeSection(keptAnalysis)` into `outPath`, keeping everything else as
 * it was: in place of the old section, or with `atEnd` moved to the end of the file; appended
 * when there is none.
 */
export function writeSection(outPath, { heading, analysisStart, analysisEnd, atEnd = false }, makeSection) {
  let existing = '';
  try {
    existing = fs.readFileSync(outPath, 'utf8');
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
  }
  const section = makeSection(readKeptAnalysis(existing, { heading, analysisStart, analysisEnd }));
  const found = findSection(existing, heading);
  let text;
  if (found === null || atEnd) {
    const rest = found === null ? existing : `${existing.slice(0, found.start)}${existing.slice(found.end)}`;
    const head = rest.replace(/\s*$/, '');
    text = head === '' ? section : `${head}\n\n${section}`;
  } else {
    const tail = existing.slice(found.end);
    text = `${existing.slice(0, found.start)}${section}${tail === '' ? '' : `\n${tail}`}`;
  }
  // Write next to the file and rename, so an interrupted write never leaves half a document.
  const temporary = `${outPath}.${process.pid}.tmp`;
  fs.writeFileSync(temporary, text);
  fs.renameSync(temporary, outPath);
}

// --- SDSs without an MDM, driven over the wire -------------------------------------------
//
// For the benches that start SDSs themselves (bench-sds, bench-shards): the ready line, the
// size of a device file for a region, wire connections with the cluster secret, IO request
// payloads and their answers, and a latency histogram.

/** What `meshblock sds start` prints once it serves: name, id and address. */
export const sdsReadyPattern = /^sds (\S+) \(([0-9a-f]{16})\) of cluster [0-9a-f]{16} listening on (\S+) with/gm;

/** The SDSs that `stdout` (of `sds start`, or of its supervisor) says serve: { name, sdsId, address }, in order. */
export function sdsReadyLines(stdout) {
  return [...stdout.matchAll(sdsReadyPattern)].map((match) => ({ name: match[1], sdsId: match[2], address: match[3] }));
}

/**
 * Device file size for `regionBytes` of chunks of `chunkBytes`: the chunks, plus the
 * metadata area before the slots (the superblock, then per slot an entry and a checksum
 * area, each padded to whole sectors: at most 4 KiB each with 4 KiB sectors; see
 * src/sds/device.ts), rounded up to a MiB, plus a MiB of margin.
 */
export function sdsDeviceBytesFor(regionBytes, chunkBytes) {
  const chunkCount = Math.ceil(regionBytes / chunkBytes);
  return chunkCount * chunkBytes + Math.ceil((4096 + chunkCount * 2 * 4096) / MiB) * MiB + MiB;
}

/** A sparse file of `sizeBytes` (an existing one is cut to nothing first: its old blocks go). */
export function createSparseFile(file, sizeBytes) {
  const fd = fs.openSync(file, 'w');
  try {
    fs.ftruncateSync(fd, sizeBytes);
  } finally {
    fs.closeSync(fd);
  }
}

/** fdatasync of `files`: dirty pages of one run are written back now, not during the next. */
export async function syncFiles(files) {
  for (const file of files) {
    const handle = await fs.promises.open(file, 'r+');
    try {
      await handle.datasync();
    } finally {
      await handle.close();
    }
  }
}

/** Resolves with `promise`, or rejects with a BenchError after `timeoutMs`. */
export async function within(promise, timeoutMs, what) {
  let timer;
  const timedOut = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new BenchError('TIMEOUT', `${what} took over ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/** One authenticated wire connection to `address` (HOST:PORT) as `role`. */
export async function connectWire(address, { clusterId, secret, role, name, log }) {
  const [peerHost, port] = address.split(/:(?=\d+$)/);
  const socket = net.connect({ host: peerHost, port: Number(port) });
  await within(
    new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    }),
    10_000,
    `connecting to ${address}`,
  ).catch((err) => {
    socket.destroy();
    throw err;
  });
  return WirePeer.connect(socket, { clusterId, secret, role, name, log });
}

/**
 * An IO request's payload (SdsOp.Read or Write args, and for a write `blockBytes` of
 * random data whose first byte is `fillByte`), to be reused with setIoArgs() per request.
 */
export function ioPayload({ poolId, vtreeId, write, blockBytes, fillByte }) {
  const data = write ? randomFillSync(Buffer.allocUnsafe(blockBytes)) : undefined;
  if (data !== undefined) data[0] = fillByte;
  return encodeIo({ poolId, vtreeId, pgIndex: 0, chunkIndex: 0, generation: 0, offsetBytes: 0, lengthBytes: blockBytes, flags: 0 }, data);
}

/** Throws a BenchError unless an SDS answered `what` with SdsStatus.Ok (saying what it answered instead). */
export function expectOk(response, what) {
  if (response.status !== SdsStatus.Ok) {
    throw new BenchError('REQUEST', `${what} failed with status ${response.status}: ${response.payload.toString('utf8', 0, Math.min(response.payload.length, 500))}`);
  }
}

/** Points a payload from ioPayload() at a group, chunk and offset inside the chunk. */
export function setIoArgs(payload, pgIndex, chunkIndex, offsetBytes) {
  payload.writeUInt32BE(pgIndex, ioArgOffsets.pgIndex);
  payload.writeUInt32BE(chunkIndex, ioArgOffsets.chunkIndex);
  payload.writeUInt32BE(offsetBytes, ioArgOffsets.offsetBytes);
}

/**
 * Latency histogram: log-linear buckets 1 % wide from 1 ns to over 1000 s, so percentiles
 * are exact to ±0.5 % (fio's own are bucketed about as coarsely), in fixed memory whatever
 * the runtime. Histograms of several generators (worker threads) add up with merge() of
 * their counts.
 */
const histogramGrowth = 1.01;
const histogramBucketCount = 3000;
const histogramLogGrowth = Math.log(histogramGrowth);

export class LatencyHistogram {
  constructor() {
    this.counts = new Uint32Array(histogramBucketCount);
    this.count = 0;
  }

  add(latencyNs) {
    const index = latencyNs <= 1 ? 0 : Math.min(histogramBucketCount - 1, Math.floor(Math.log(latencyNs) / histogramLogGrowth));
    this.counts[index] += 1;
    this.count += 1;
  }

  merge(counts) {
    for (let index = 0; index < histogramBucketCount; index++) {
      this.counts[index] += counts[index];
      this.count += counts[index];
    }
  }

  /** The `percent` percentile in µs: the middle of the bucket that holds it. */
  percentileUs(percent) {
    if (this.count === 0) return null;
    const rank = Math.max(1, Math.ceil((percent / 100) * this.count));
    let seen = 0;
    for (let index = 0; index < histogramBucketCount; index++) {
      seen += this.counts[index];
      if (seen >= rank) return histogramGrowth ** (index + 0.5) / 1000;
    }
    return null;
  }
}
