#!/usr/bin/env node
// Benchmark: does an SDS use a second core when it runs as shards? The "multi-core
// demonstration" of issue 22. The same two device files are served, in turn, by
//
//   one process   one `meshblock sds start` with both devices (one event loop);
//   two shards    `meshblock sds start --shards 2` with the same devices, one per shard: a
//                 supervisor and two SDS processes (NAME.1 and NAME.2), two event loops.
//
// and the table gives the ratio two shards / one process for each pattern. As in
// scripts/bench-sds.mjs, the SDSs run without an MDM: the script installs a placement map
// on them over the wire (SdsOp.SetMap, role 'mdm') and drives them itself. The map has 64
// unmirrored groups of 1 MiB chunks; with two shards group i is on shard (i mod 2) + 1, so
// half the chunks are on each device; the one process holds every group and spreads its
// chunks over its two devices itself (most free slots first, so half each too).
//
// The client has to be cheap, or it measures itself: two load generators, each in its own
// worker thread with its own event loop and one wire connection, each owning the chunks of
// the even or of the odd groups and keeping half the queue depth in flight on them. Against
// two shards generator k talks to shard k; against the one process both talk to it, each on
// its own connection. So the client does the same work in both configurations, and only
// the server side changes. Each generator's thread CPU is measured (/proc/thread-self), to
// say whether a generator, rather than an SDS, was the limit.
//
// How it keeps the comparison fair:
// - both configurations use the same two files in --dir, recreated empty (truncated to
//   nothing, then sparse) before each configuration starts, so each formats them afresh;
//   each configuration writes its whole region once (1 MiB writes) before it is measured,
//   and the device counters (SdsOp.Stats) are checked after every run: every request
//   completed reached a device (an SDS answers reads of unwritten chunks without one);
// - buffered (default): the files are synced, dropped from the page cache and read back
//   whole before the first run, and synced and read whole again before every run, as
//   bench-sds does; --io direct runs the SDSs with --io direct (O_DIRECT, Linux AIO) on the
//   same files and skips the page cache fill;
// - configurations alternate within each round (one, shards; then shards, one), and each
//   result is the median of its rounds;
// - before every run the bench waits for a quiet machine and samples the CPU of the SDS
//   processes (and of each one's main thread, the event loop), of the client and of
//   everything else inside the measured window, to flag disturbed runs.
//
// Exit codes: 0 done, 1 an SDS failed to start or died, a request failed, or fio (the page
// cache fill) failed, 2 bad usage, 128+N interrupted by signal N. Every SDS (and every
// shard) is stopped and the temp dir removed on every path out.
//
// Usage: node scripts/bench-shards.mjs [--size 1G] [--runtime 10] [--ramp-time 2] [--rounds 2]
//          [--out docs/benchmarks.md] [--dir /tmp] [--io buffered|direct] [--quick]

import { randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import {
  BenchError,
  LatencyHistogram,
  checkPaths,
  connectWire,
  cpuSecondsOf,
  createSparseFile,
  delay,
  describeBuild,
  disturbedPercentMin,
  disturbedRunsText,
  expectOk,
  exitRuntimeError,
  fillArgs,
  firstLine,
  handleSignals,
  host,
  interruptedExitCode,
  interruptedSignal,
  ioPayload,
  killRunning,
  machineBusyPercent,
  machineTicks,
  markdownTable,
  median,
  meshblockBin,
  optionsOrExitCode,
  parseSharedOptions,
  procStatFields,
  processFailure,
  quietBusyPercentMax,
  run,
  sdsDeviceBytesFor,
  sdsReadyLines,
  setIoArgs,
  sharedOptionSpecs,
  spawnTracked,
  stopTracked,
  syncFiles,
  textTable,
  throwIfInterrupted,
  waitForQuiet,
  within,
  writeSection,
} from './bench-common.mjs';
import { describeMachine, formatUs, formatValue } from './bench-labs.mjs';
import { pino } from 'pino';
import { InvalidArgumentError } from '../dist/common/errors.js';
import { MiB, formatBytes } from '../dist/common/units.js';
import { mulberry32 } from '../dist/common/seeded-random.js';
import { placementGroupOf } from '../dist/wire/placement.js';
import { SdsOp, SdsStatus } from '../dist/wire/sds-ops.js';

/** How long an SDS (or the supervisor's shards) has to say it is ready, and to exit after SIGTERM. */
const sdsStartMs = 30_000;
const sdsStopMs = 15_000;
/** A generator gets its ramp and runtime plus this much before the run counts as hung. */
const runSlackMs = 60_000;
/** A wire request the SDS has not answered in this long fails the run. */
const requestTimeoutMs = 30_000;
/** The fill writes the whole region; below this rate it is taken as hung. */
const fillBytesPerSecondMin = 4 * MiB;
const fillSlackMs = 60_000;
/** Concurrent 1 MiB writes per generator while filling the region. */
const fillDepth = 4;
/** Bytes of SDS stderr kept to show when it fails. */
const stderrKeptBytes = 16 * 1024;
const sizeBytesMin = 64 * MiB;
const sizeBytesQuick = 256 * MiB;
/**
 * A short wait for quiet, and one repeat of a disturbed run (the last attempt kept): on the
 * shared machine this was written on, quiet rarely came. --quick, a smoke test, waits less
 * and never repeats.
 */
const quietWaitMsMax = 30_000;
const quietWaitMsMaxQuick = 5_000;
const disturbedRetryCount = 1;

const chunkBytes = MiB;
const pgCount = 64;
const clusterId = 'c0ffee00c0ffee22';
const poolId = '00000000000000a1';
const vtreeId = 'b0b0000000000001';
const mapEpoch = 1;
const clusterSecret = Buffer.from(randomFillSync(Buffer.alloc(24)).toString('hex'));
/** Two generators (worker threads), two shards, two devices. */
const shardCount = 2;
const sdsName = 'bench';
const seedBase = 0x5ad5_0022;

const usage = `Usage: node scripts/bench-shards.mjs [options]

Serves the same two device files by one SDS process and by two SDS shards (sds start
--shards 2), drives both with the same cheap client (a wire load generator per worker
thread) and prints IOPS, latency, CPU per IO and the ratio two shards / one process.

  --size SIZE          volume region, half on each device (binary units: 512M, 1G)
                       [default: 1G; --quick: ${formatBytes(sizeBytesQuick)}]
  --runtime SECONDS    measured time per run [default: 10; --quick: 3]
  --ramp-time SECONDS  unmeasured warm-up per run [default: 2; --quick: 1]
  --rounds N           alternations of the two configurations; results are medians
                       [default: 2; --quick: 1]
  --out FILE           also write the report as a Markdown section '## Shards benchmark' into
                       FILE, replacing that section and keeping everything else (and a
                       hand-written analysis between the section's shards-analysis markers)
  --dir DIR            where the temp dir with the device files goes [default: ${os.tmpdir()}]
  --io MODE            buffered: device files through the page cache (the software path);
                       direct: the SDSs with --io direct, no page cache [default: buffered]
  --quick              smoke test: --size ${formatBytes(sizeBytesQuick)} --runtime 3 --ramp-time 1 --rounds 1 unless given
  -h, --help           this text
`;

/** The load; `depth` is the total in flight, half per generator. */
const patterns = [
  { id: 'randwrite-4k-qd64', title: '4k random write, QD64', write: true, blockBytes: 4096, depth: 64, metric: 'iops' },
  { id: 'randread-4k-qd64', title: '4k random read, QD64', write: false, blockBytes: 4096, depth: 64, metric: 'iops' },
  { id: 'randwrite-1m-qd8', title: '1M random write, QD8', write: true, blockBytes: MiB, depth: 8, metric: 'mibps' },
  { id: 'randread-1m-qd8', title: '1M random read, QD8', write: false, blockBytes: MiB, depth: 8, metric: 'mibps' },
];

const configNames = ['one', 'shards'];
const configTitles = { one: 'one process', shards: 'two shards' };

const sectionHeading = '## Shards benchmark: one SDS process vs two shards';
const analysisStart = '<!-- shards-analysis:start -->';
const analysisEnd = '<!-- shards-analysis:end -->';

// --- the load generator (worker thread) -------------------------------------------------

/** utime + stime of the calling thread, in seconds. */
function threadCpuSeconds(clockTicksPerSecond) {
  return cpuSecondsOf(procStatFields('/proc/thread-self/stat'), clockTicksPerSecond);
}

/**
 * One generator: one wire connection to `address`, the chunks it owns (`chunks`, with their
 * groups in `pgs`), and runs on demand: a timed load, or the fill (every owned chunk written
 * once). It answers each run with its completions in the measured window, their latency
 * histogram, and its thread's CPU at the window's edges.
 */
async function generatorThread() {
  const { address, chunks, pgs, clockTicksPerSecond } = workerData;
  const log = pino({ level: 'warn', base: { component: 'bench-shards' } }, pino.destination(2));
  const peer = await connectWire(address, { clusterId, secret: Buffer.from(workerData.secret), role: 'sdc', name: 'bench-sdc', log });
  const requestOptions = { epoch: mapEpoch, timeoutMs: requestTimeoutMs };
  let stopped = false;
  parentPort.postMessage({ type: 'ready' });
  parentPort.on('message', async (message) => {
    if (message.type === 'stop') {
      stopped = true;
      return;
    }
    if (message.type === 'close') {
      peer.destroy();
      parentPort.close();
      return;
    }
    stopped = false;
    try {
      parentPort.postMessage(message.type === 'fill' ? await fill(message) : await load(message));
    } catch (err) {
      stopped = true;
      parentPort.postMessage({ type: 'error', message: err instanceof Error ? err.message : String(err) });
    }
  });

  async function fill({ fillByte }) {
    let next = 0;
    const slot = async (slotIndex) => {
      const payload = ioPayload({ poolId, vtreeId, write: true, blockBytes: chunkBytes, fillByte: fillByte + slotIndex });
      while (!stopped && next < chunks.length) {
        const index = next++;
        setIoArgs(payload, pgs[index], chunks[index], 0);
        payload.writeDoubleLE(chunks[index], payload.length - 8); // No two chunks alike.
        const response = await peer.request(SdsOp.Write, payload, requestOptions);
        if (response.status !== SdsStatus.Ok) throw new Error(`filling chunk ${chunks[index]}: status ${response.status}`);
      }
    };
    await Promise.all(Array.from({ length: fillDepth }, (_, slotIndex) => slot(slotIndex)));
    return { type: 'filled', count: chunks.length };
  }

  async function load({ write, blockBytes, depth, seed, rampEndNs: rampEndText, endNs: endText }) {
    const rampEndNs = BigInt(rampEndText);
    const endNs = BigInt(endText);
    const random = mulberry32(seed);
    const blocksPerChunk = chunkBytes / blockBytes;
    const op = write ? SdsOp.Write : SdsOp.Read;
    const histogram = new LatencyHistogram();
    let completed = 0;
    const cpu = { atRampEnd: null, atEnd: null };
    const sampleRampEnd = () => {
      cpu.atRampEnd ??= { ns: process.hrtime.bigint(), seconds: threadCpuSeconds(clockTicksPerSecond) };
    };
    const rampTimer = setTimeout(sampleRampEnd, Number(rampEndNs - process.hrtime.bigint()) / 1e6);
    const slot = async (slotIndex) => {
      const payload = ioPayload({ poolId, vtreeId, write, blockBytes, fillByte: slotIndex });
      while (!stopped) {
        const sentNs = process.hrtime.bigint();
        if (sentNs >= endNs) {
          cpu.atEnd ??= { ns: sentNs, seconds: threadCpuSeconds(clockTicksPerSecond) };
          return;
        }
        const index = Math.floor(random() * chunks.length);
        const block = Math.floor(random() * blocksPerChunk);
        setIoArgs(payload, pgs[index], chunks[index], block * blockBytes);
        const response = await peer.request(op, payload, requestOptions);
        const doneNs = process.hrtime.bigint();
        if (response.status !== SdsStatus.Ok) throw new Error(`${write ? 'write' : 'read'} of chunk ${chunks[index]}: status ${response.status}`);
        if (doneNs > rampEndNs && doneNs <= endNs) {
          completed += 1;
          histogram.add(Number(doneNs - sentNs));
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: depth }, (_, slotIndex) => slot(slotIndex)));
    } finally {
      clearTimeout(rampTimer);
    }
    if (cpu.atRampEnd === null || cpu.atEnd === null) throw new Error('stopped before the measured window closed');
    return {
      type: 'loaded',
      completed,
      counts: histogram.counts,
      cpuSeconds: cpu.atEnd.seconds - cpu.atRampEnd.seconds,
      windowSeconds: Number(cpu.atEnd.ns - cpu.atRampEnd.ns) / 1e9,
    };
  }
}

if (!isMainThread) await generatorThread();

// --- arguments -------------------------------------------------------------------------

function parseOptions(argv) {
  const { values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: { ...sharedOptionSpecs, io: { type: 'string' } } });
  if (values.help) return null;
  const options = {
    ...parseSharedOptions(values, { sizeText: '1G', sizeTextQuick: String(sizeBytesQuick), rounds: '2', roundsQuick: '1', sizeBytesMin }),
    io: values.io ?? 'buffered',
    quick: values.quick,
  };
  if (!['buffered', 'direct'].includes(options.io)) throw new InvalidArgumentError('--io', `must be buffered or direct, got '${options.io}'`);
  checkPaths(values, options);
  return options;
}

// --- generators (main thread) ----------------------------------------------------------

/** The generator threads running now: a signal stops them issuing requests. */
const generators = new Set();

function startGenerator({ address, chunks, pgs, machine }) {
  const worker = new Worker(new URL(import.meta.url), {
    workerData: { address, chunks, pgs, secret: clusterSecret, clockTicksPerSecond: machine.clockTicksPerSecond },
  });
  const generator = { worker, pending: null, exited: false };
  generators.add(generator);
  const answered = (settle) => {
    const pending = generator.pending;
    generator.pending = null;
    if (pending !== null) settle(pending);
  };
  worker.on('message', (message) => {
    if (message.type === 'error') answered((pending) => pending.reject(new BenchError('REQUEST', message.message)));
    else answered((pending) => pending.resolve(message));
  });
  worker.on('error', (err) => answered((pending) => pending.reject(new BenchError('GENERATOR', `load generator failed: ${err.message}`))));
  worker.on('exit', (code) => {
    generator.exited = true;
    generators.delete(generator);
    answered((pending) => pending.reject(new BenchError('GENERATOR', `load generator exited with ${code}`)));
  });
  return generator;
}

/** Sends `message` to a generator; resolves with its answer. */
function ask(generator, message) {
  return new Promise((resolve, reject) => {
    if (generator.exited) {
      reject(new BenchError('GENERATOR', 'load generator has exited'));
      return;
    }
    generator.pending = { resolve, reject };
    if (message !== null) generator.worker.postMessage(message);
  });
}

async function stopGenerators() {
  for (const generator of generators) {
    generator.worker.postMessage({ type: 'stop' });
    generator.worker.postMessage({ type: 'close' });
  }
  await Promise.all([...generators].map((generator) => within(new Promise((resolve) => generator.worker.once('exit', resolve)), 5_000, 'a load generator exiting').catch(() => generator.worker.terminate())));
}

// --- SDS processes ---------------------------------------------------------------------

/** Pids of shard processes started by a supervisor, not by us: killed on every path out too. */
const shardPids = new Set();

function sdsArgs({ name, devices, dataDir, listen, io, extra = [] }) {
  return [
    meshblockBin, 'sds', 'start',
    '--name', name,
    ...devices.flatMap((device) => ['--device', device]),
    '--listen', listen,
    '--data-dir', dataDir,
    '--cluster-id', clusterId,
    '--secret-file', path.join(path.dirname(devices[0]), 'cluster.secret'),
    '--io', io,
    ...extra,
  ];
}

/**
 * Starts one process and waits for `readyCount` ready lines on its stdout (and, with
 * `doneLine`, for that line too): the SDSs it serves, as { name, sdsId, address }.
 */
async function startProcess(args, readyCount, doneLine = null) {
  const { child, state } = spawnTracked(process.execPath, args, { stderrKeptBytes });
  const proc = { name: args[args.indexOf('--name') + 1], child, state, command: ['node', 'bin/meshblock.cjs', ...args.slice(1)] };
  const deadline = Date.now() + sdsStartMs;
  for (;;) {
    const served = sdsReadyLines(state.stdout);
    if (served.length >= readyCount && (doneLine === null || doneLine.test(state.stdout))) return { proc, served };
    throwIfInterrupted();
    if (state.exited) throw processFailure('SDS', `SDS ${proc.name}`, state);
    if (Date.now() > deadline) throw new BenchError('SDS', `SDS ${proc.name} did not say it was ready within ${sdsStartMs} ms:\n${state.stdout}`);
    await delay(20);
  }
}

/** Pids of the children of `pid` (a supervisor's shards), from /proc. */
function childPids(pid) {
  const pids = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (Number(procStatFields(`/proc/${entry}/stat`)[1]) === pid) pids.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}

/**
 * Starts a configuration on `devices`. Its `pids` are every process whose CPU counts as the
 * SDS's (with a supervisor: the supervisor and its shards), its `sdsList` the SDSs to put in
 * the map, in shard order.
 */
async function startConfig(configName, devices, dataDir, options) {
  if (configName === 'one') {
    const args = sdsArgs({ name: sdsName, devices, dataDir, listen: `${host}:0`, io: options.io });
    const { proc, served } = await startProcess(args, 1);
    return { procs: [proc], sdsList: served, pids: [proc.child.pid], commands: [proc.command.join(' ')] };
  }
  const args = sdsArgs({ name: sdsName, devices, dataDir, listen: `${host}:0`, io: options.io, extra: ['--shards', String(shardCount)] });
  const { proc, served } = await startProcess(args, shardCount, new RegExp(`^sds ${sdsName}: ${shardCount} shards ready$`, 'm'));
  const shards = childPids(proc.child.pid);
  for (const pid of shards) shardPids.add(pid);
  if (shards.length !== shardCount) throw new BenchError('SDS', `the supervisor runs ${shards.length} child processes, expected ${shardCount}`);
  const sdsList = Array.from({ length: shardCount }, (_, index) => served.find((sds) => sds.name === `${sdsName}.${index + 1}`));
  if (sdsList.includes(undefined)) throw new BenchError('SDS', `the supervisor's ready lines do not name ${sdsName}.1..${shardCount}:\n${proc.state.stdout}`);
  return { procs: [proc], sdsList, pids: [proc.child.pid, ...shards], commands: [proc.command.join(' ')] };
}

async function stopConfig(config) {
  await Promise.all(config.procs.map((proc) => stopTracked(proc, sdsStopMs, `SDS ${proc.name}`)));
  killShards();
}

/** SIGKILL to shards that outlived their supervisor (they should stop themselves). */
function killShards() {
  for (const pid of shardPids) {
    try {
      process.kill(pid, 0);
      process.stderr.write(`shard process ${pid} outlived its supervisor: killing it\n`);
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone: what should happen.
    }
    shardPids.delete(pid);
  }
}

// --- the map and the wire --------------------------------------------------------------

const wireLog = pino({ level: 'warn', base: { component: 'bench-shards' } }, pino.destination(2));

/** Group i on sdsList[i mod n]: one SDS holds all, two split the groups even/odd. */
function makeMap(sdsList) {
  return {
    epoch: mapEpoch,
    sds: Object.fromEntries(sdsList.map((sds) => [sds.sdsId, { address: sds.address }])),
    pools: { [poolId]: { chunkBytes, groups: Array.from({ length: pgCount }, (_, index) => ({ primary: sdsList[index % sdsList.length].sdsId, secondary: null })) } },
  };
}

/** Installs the map on every SDS of the configuration; keeps one control connection each for Stats. */
async function installMap(config) {
  const map = makeMap(config.sdsList);
  config.controls = [];
  for (const sds of config.sdsList) {
    const control = await connectWire(sds.address, { clusterId, secret: clusterSecret, role: 'mdm', name: 'bench-mdm', log: wireLog });
    config.controls.push(control);
    expectOk(await control.request(SdsOp.SetMap, Buffer.from(JSON.stringify(map)), { timeoutMs: requestTimeoutMs }), `installing the map on ${sds.name}`);
  }
}

/** Device counters summed over the configuration's SDSs. */
async function deviceCounters(config) {
  const counters = { reads: 0, writes: 0, usedBytes: 0, totalBytes: 0, deviceCount: 0 };
  for (const control of config.controls) {
    const response = await control.request(SdsOp.Stats, Buffer.alloc(0), { timeoutMs: requestTimeoutMs });
    expectOk(response, 'stats');
    for (const device of JSON.parse(response.payload.toString('utf8')).devices) {
      counters.reads += device.reads;
      counters.writes += device.writes;
      counters.usedBytes += device.usedBytes;
      counters.totalBytes += device.totalBytes;
      counters.deviceCount += 1;
    }
  }
  return counters;
}

/**
 * The region's chunks split by owner: generator k (and with shards, shard k + 1) owns the
 * chunks whose group index is k mod 2.
 */
function splitChunks(sizeBytes) {
  const owned = Array.from({ length: shardCount }, () => ({ chunks: [], pgs: [] }));
  for (let chunkIndex = 0; chunkIndex < sizeBytes / chunkBytes; chunkIndex++) {
    const pgIndex = placementGroupOf(vtreeId, chunkIndex, pgCount);
    owned[pgIndex % shardCount].chunks.push(chunkIndex);
    owned[pgIndex % shardCount].pgs.push(pgIndex);
  }
  return owned.map(({ chunks, pgs }) => ({ chunks: Int32Array.from(chunks), pgs: Int32Array.from(pgs) }));
}

// --- CPU -------------------------------------------------------------------------------

/** CPU seconds of each process and of its main thread (the event loop); null once gone. */
function sampleSds(pids, machine) {
  return pids.map((pid) => {
    try {
      return {
        cpuSeconds: cpuSecondsOf(procStatFields(`/proc/${pid}/stat`), machine.clockTicksPerSecond),
        mainSeconds: cpuSecondsOf(procStatFields(`/proc/${pid}/task/${pid}/stat`), machine.clockTicksPerSecond),
      };
    } catch {
      return null;
    }
  });
}

// --- one run ---------------------------------------------------------------------------

async function fillPageCache(files, invalidate) {
  for (const file of files) {
    const args = fillArgs(file, fs.statSync(file).size, 'random', invalidate);
    const result = await run('fio', args, 300_000, { stderrKeptBytes });
    throwIfInterrupted();
    if (result.code !== 0) throw new BenchError('FIO', `fio could not fill the page cache: fio ${args.join(' ')}\n${result.stderr.trim()}`);
  }
}

/** Writes every chunk of the region once through the configuration; checks every chunk is held. */
async function fillRegion(config, sizeBytes, fillByte) {
  const timeoutMs = (1000 * sizeBytes) / fillBytesPerSecondMin + fillSlackMs;
  await within(Promise.all(config.generators.map((generator) => ask(generator, { type: 'fill', fillByte }))), timeoutMs, 'filling the region');
  const counters = await deviceCounters(config);
  if (counters.usedBytes !== sizeBytes) throw new BenchError('HONESTY', `after the fill the SDSs hold ${formatBytes(counters.usedBytes)} of chunks, expected ${formatBytes(sizeBytes)}`);
}

async function runLoad(config, pattern, options, machine, seed) {
  const before = await deviceCounters(config);
  const startNs = process.hrtime.bigint();
  const rampEndNs = startNs + BigInt(options.rampSeconds) * 1_000_000_000n;
  const endNs = rampEndNs + BigInt(options.runtimeSeconds) * 1_000_000_000n;
  // The SDSs' CPU is sampled by timers at the window's edges (this thread is idle meanwhile);
  // the generators may finish draining before the second fires, so it is awaited.
  const samples = [];
  const sampleAt = () => samples.push({ ns: process.hrtime.bigint(), machine: machineTicks(), client: process.cpuUsage(), sds: sampleSds(config.pids, machine) });
  const timers = [];
  const sampled = [options.rampSeconds, options.rampSeconds + options.runtimeSeconds].map(
    (atSeconds) =>
      new Promise((resolve) => {
        timers.push(
          setTimeout(() => {
            sampleAt();
            resolve();
          }, atSeconds * 1000),
        );
      }),
  );
  const depth = pattern.depth / config.generators.length;
  let answers;
  try {
    answers = await within(
      Promise.all(
        config.generators.map((generator, index) =>
          ask(generator, { type: 'load', write: pattern.write, blockBytes: pattern.blockBytes, depth, seed: seed + index, rampEndNs: String(rampEndNs), endNs: String(endNs) }),
        ),
      ),
      (options.rampSeconds + options.runtimeSeconds) * 1000 + runSlackMs,
      `${pattern.id} against ${configTitles[config.name]}`,
    );
    await Promise.all(sampled);
  } catch (err) {
    for (const generator of config.generators) generator.worker.postMessage({ type: 'stop' });
    throw err;
  } finally {
    for (const timer of timers) clearTimeout(timer);
  }
  throwIfInterrupted();
  for (const proc of config.procs) if (proc.state.exited) throw processFailure('SDS', `SDS ${proc.name}`, proc.state);
  if (samples.length !== 2 || samples.some((sample) => sample.sds.includes(null))) throw new BenchError('SAMPLE', `could not sample the SDS processes during ${pattern.id}`);
  const after = await deviceCounters(config);
  const histogram = new LatencyHistogram();
  let completed = 0;
  for (const answer of answers) {
    histogram.merge(answer.counts);
    completed += answer.completed;
  }
  if (completed === 0) throw new BenchError('REQUEST', `no request completed in the measured window of ${pattern.id}`);
  const deviceOps = pattern.write ? after.writes - before.writes : after.reads - before.reads;
  if (deviceOps < completed) throw new BenchError('HONESTY', `${pattern.id}: ${completed} requests completed but the devices counted ${deviceOps} ${pattern.write ? 'writes' : 'reads'}`);

  const [first, last] = samples;
  const windowSeconds = Number(last.ns - first.ns) / 1e9;
  const iops = completed / options.runtimeSeconds;
  const sdsCpuSeconds = last.sds.reduce((sum, sample, index) => sum + sample.cpuSeconds - first.sds[index].cpuSeconds, 0);
  const sdsMainPercents = last.sds.map((sample, index) => (100 * (sample.mainSeconds - first.sds[index].mainSeconds)) / windowSeconds);
  const clientCpuSeconds = (last.client.user - first.client.user + last.client.system - first.client.system) / 1e6;
  const generatorPercents = answers.map((answer) => (100 * answer.cpuSeconds) / answer.windowSeconds);
  const sdsCpuPercent = (100 * sdsCpuSeconds) / windowSeconds;
  const clientCpuPercent = (100 * clientCpuSeconds) / windowSeconds;
  const machinePercent = machineBusyPercent(first.machine, last.machine, machine.cpuCount);
  const restCpuPercent = Math.max(0, machinePercent - sdsCpuPercent - clientCpuPercent);
  return {
    iops,
    mibps: (iops * pattern.blockBytes) / MiB,
    p50Us: histogram.percentileUs(50),
    p99Us: histogram.percentileUs(99),
    sdsCpuPercent,
    // The busiest event loop of the SDS processes (a supervisor's is idle): at ~100 % it is the limit.
    sdsMainPercentMax: Math.max(...sdsMainPercents),
    sdsCpuUsPerIo: (1e6 * sdsCpuSeconds) / windowSeconds / iops,
    clientCpuPercent,
    generatorPercentMax: Math.max(...generatorPercents),
    clientCpuUsPerIo: (1e6 * clientCpuSeconds) / windowSeconds / iops,
    machinePercent,
    restCpuPercent,
  };
}

async function runOne(config, pattern, context, round) {
  const { options, machine } = context;
  throwIfInterrupted();
  const quiet = await waitForQuiet(machine.cpuCount, options.quick ? quietWaitMsMaxQuick : quietWaitMsMax);
  await syncFiles(context.devices);
  if (options.io === 'buffered') await fillPageCache(context.devices, false);
  const seed = seedBase + round * 16 + patterns.indexOf(pattern) * 4;
  const result = await runLoad(config, pattern, options, machine, seed);
  result.quiet = quiet;
  result.disturbed = !quiet || result.restCpuPercent > disturbedPercentMin;
  return result;
}

/** One configuration, one round: fresh files, start, map, generators, fill, every pattern, stop. */
async function runConfig(configName, round, context, runs) {
  const { options, machine, devices, deviceBytes, owned, workDir } = context;
  for (const device of devices) createSparseFile(device, deviceBytes);
  const dataDir = path.join(workDir, `${configName}-${round}`);
  const config = { name: configName, generators: [], controls: [] };
  context.current = config;
  try {
    Object.assign(config, await startConfig(configName, devices, dataDir, options));
    context.commands[configName] = config.commands;
    for (const sds of config.sdsList) process.stderr.write(`${configTitles[configName]}: SDS ${sds.name} (${sds.sdsId}) at ${sds.address}\n`);
    await installMap(config);
    const capacity = await deviceCounters(config);
    if (capacity.deviceCount !== devices.length) throw new BenchError('SDS', `${configTitles[configName]} serves ${capacity.deviceCount} devices, expected ${devices.length}`);
    if (capacity.totalBytes < options.sizeBytes) throw new BenchError('SDS', `${configTitles[configName]} holds ${formatBytes(capacity.totalBytes)}, less than the ${formatBytes(options.sizeBytes)} region`);
    for (let index = 0; index < shardCount; index++) {
      const sds = config.sdsList[index % config.sdsList.length];
      const generator = startGenerator({ address: sds.address, chunks: owned[index].chunks, pgs: owned[index].pgs, machine });
      config.generators.push(generator);
      await within(ask(generator, null), 15_000, 'a load generator connecting');
    }
    process.stderr.write(`${configTitles[configName]}: writing the ${formatBytes(options.sizeBytes)} region once\n`);
    await fillRegion(config, options.sizeBytes, round);
    await syncFiles(devices);
    if (options.io === 'buffered') await fillPageCache(devices, true);
    for (const pattern of patterns) {
      let result;
      for (let attempt = 0; attempt <= (options.quick ? 0 : disturbedRetryCount); attempt++) {
        result = await runOne(config, pattern, context, round);
        process.stderr.write(`round ${round}/${options.roundCount} ${pattern.id.padEnd(17)} ${configTitles[configName].padEnd(11)} ${describeResult(pattern, result)}\n`);
        if (!result.disturbed) break;
        if (!options.quick && attempt < disturbedRetryCount) process.stderr.write('other load disturbed that run: repeating it\n');
      }
      runs.push({ config: configName, pattern: pattern.id, round, result });
    }
  } catch (err) {
    // A wire error is usually the symptom of an SDS that died: say which, and what it logged.
    if (err instanceof BenchError && ['SDS', 'INTERRUPTED'].includes(err.code)) throw err;
    const exited = () => config.procs?.find((proc) => proc.state.exited);
    if (exited() === undefined) await delay(500); // Its exit may come after its connections' close.
    const died = exited();
    if (died === undefined) throw err;
    throw processFailure('SDS', `SDS ${died.name} (${configTitles[configName]})`, died.state, `${err.message}\n${died.state.stderr}`);
  } finally {
    await stopGenerators();
    for (const control of config.controls) control.destroy();
    if (config.procs !== undefined) await stopConfig(config);
    context.current = null;
  }
}

// --- results ---------------------------------------------------------------------------

function unitOf(pattern) {
  return pattern.metric === 'iops' ? 'IOPS' : 'MiB/s';
}

function describeResult(pattern, result) {
  return (
    `${formatValue(pattern.metric, result[pattern.metric]).padStart(8)} ${unitOf(pattern).padEnd(5)}` +
    ` p50 ${formatUs(result.p50Us)} µs p99 ${formatUs(result.p99Us)} µs` +
    `, SDS CPU ${result.sdsCpuPercent.toFixed(0)}% (busiest event loop ${result.sdsMainPercentMax.toFixed(0)}%)` +
    `, client CPU ${result.clientCpuPercent.toFixed(0)}% (busiest generator ${result.generatorPercentMax.toFixed(0)}%)` +
    `, rest of machine ${result.restCpuPercent.toFixed(0)}%${result.disturbed ? ' (DISTURBED)' : ''}`
  );
}

const summaryKeys = ['iops', 'mibps', 'p50Us', 'p99Us', 'sdsCpuPercent', 'sdsMainPercentMax', 'sdsCpuUsPerIo', 'clientCpuPercent', 'generatorPercentMax', 'clientCpuUsPerIo', 'machinePercent', 'restCpuPercent'];

function summarize(runs) {
  return patterns.map((pattern) => {
    const perConfig = {};
    for (const name of configNames) {
      const mine = runs.filter((entry) => entry.config === name && entry.pattern === pattern.id).map((entry) => entry.result);
      perConfig[name] = Object.fromEntries(summaryKeys.map((key) => [key, median(mine.map((result) => result[key]))]));
      perConfig[name].values = mine.map((result) => result[pattern.metric]);
      perConfig[name].disturbedCount = mine.filter((result) => result.disturbed).length;
      perConfig[name].runCount = mine.length;
    }
    return { pattern, perConfig, ratio: perConfig.shards[pattern.metric] / perConfig.one[pattern.metric] };
  });
}

/**
 * A thread at this share of a core is taken as the limit of its run, and so is the machine
 * at this share of all its cores.
 */
const saturatedPercentMin = 90;

/** What bounded a run, from its medians: an SDS event loop, a generator, the whole machine, or none of them. */
function limitOf(result, cpuCount) {
  const limits = [];
  if (result.sdsMainPercentMax >= saturatedPercentMin) limits.push('SDS loop');
  if (result.generatorPercentMax >= saturatedPercentMin) limits.push('client');
  if (result.machinePercent >= (saturatedPercentMin / 100) * cpuCount * 100) limits.push('machine full');
  return limits.length === 0 ? 'none (IO)' : limits.join(', ');
}

const pair = (perConfig, key, format) => configNames.map((name) => format(perConfig[name][key])).join(' / ');
const fixed = (digits) => (value) => (value === null ? '–' : value.toFixed(digits));

function resultRows(summaries) {
  const header = ['Pattern', 'Unit', 'one process', 'two shards', 'ratio shards / one', 'p50 µs (one / shards)', 'p99 µs (one / shards)'];
  const rows = summaries.map(({ pattern, perConfig, ratio }) => [
    pattern.title,
    unitOf(pattern),
    formatValue(pattern.metric, perConfig.one[pattern.metric]),
    formatValue(pattern.metric, perConfig.shards[pattern.metric]),
    ratio.toFixed(2),
    pair(perConfig, 'p50Us', formatUs),
    pair(perConfig, 'p99Us', formatUs),
  ]);
  return { header, rows };
}

function costRows(summaries, cpuCount) {
  const header = [
    'Pattern',
    'SDS CPU % (one / shards)',
    'busiest SDS event loop %',
    'SDS CPU µs per IO',
    'client CPU %',
    'busiest generator %',
    'client CPU µs per IO',
    'machine busy %',
    'rest of machine %',
    'limit (one / shards)',
  ];
  const rows = summaries.map(({ pattern, perConfig }) => [
    pattern.title,
    pair(perConfig, 'sdsCpuPercent', fixed(0)),
    pair(perConfig, 'sdsMainPercentMax', fixed(0)),
    pair(perConfig, 'sdsCpuUsPerIo', fixed(1)),
    pair(perConfig, 'clientCpuPercent', fixed(0)),
    pair(perConfig, 'generatorPercentMax', fixed(0)),
    pair(perConfig, 'clientCpuUsPerIo', fixed(1)),
    pair(perConfig, 'machinePercent', fixed(0)),
    pair(perConfig, 'restCpuPercent', fixed(0)),
    configNames.map((name) => limitOf(perConfig[name], cpuCount)).join(' / '),
  ]);
  return { header, rows };
}

function roundRows(summaries) {
  const header = ['Pattern', 'Unit', 'one process, per round', 'two shards, per round'];
  const rows = summaries.map(({ pattern, perConfig }) => [
    pattern.title,
    unitOf(pattern),
    ...configNames.map((name) => perConfig[name].values.map((value) => formatValue(pattern.metric, value)).join(', ')),
  ]);
  return { header, rows };
}

/** The report's sentence on disturbed runs, over every pattern's summary of every configuration. */
function disturbedText(summaries) {
  return disturbedRunsText(summaries.flatMap(({ perConfig }) => configNames.map((name) => perConfig[name])));
}

function machineLines(machine, options) {
  return [
    ['CPU', `${machine.cpuModel}, ${machine.cpuCount} logical CPUs`],
    ['Memory', formatBytes(os.totalmem())],
    ['Kernel', machine.kernel],
    ['Node.js', machine.node],
    ['meshblock', `${machine.meshblock}, ${describeBuild()}`],
    ["Device files' filesystem", firstLine('stat', ['--file-system', '--format=%T', options.parentDir])],
    ['Load average at start', machine.loadAverageAtStart],
  ];
}

function markdownSection({ options, machine, summaries, startedAt, commands, workDir, deviceBytes, analysis }) {
  const argv = process.argv.slice(2).join(' ');
  const placeholder = (text) => text.split(workDir).join('$DIR');
  return `${sectionHeading}

Generated by \`npm run build && node scripts/bench-shards.mjs${argv ? ` ${argv}` : ''}\` (started ${startedAt}).

Does an SDS use more than one core when it runs as shards (docs/cores.md)? The same two device
files are served by **one process** (one \`sds start\` with both devices) and by **two shards**
(\`meshblock sds start --shards 2\`, a supervisor that runs two shard processes),
and driven by the same client. **Ratio = two shards / one process: above 1.00, the second
event loop helped.**
${options.io === 'direct'
    ? 'The SDSs run with `--io direct` (O_DIRECT through Linux AIO): every IO reaches the disk under the files.'
    : 'The device files are in the page cache (written in full, synced, and read back before every run): the numbers compare software paths, not the disk.'}

### Results

Median of ${options.roundCount} round(s); each round ran every pattern against one configuration, then the other
(the order alternating by round). 1M patterns in MiB/s, 4k ones in IOPS. Latency is per request,
from submission to completion, at the pattern's total queue depth (half on each generator).

${markdownTable(resultRows(summaries))}

Where the time goes (medians; "one / shards"). SDS CPU is utime + stime of the SDS processes
(with shards: both, and the supervisor if any), in % of one core and per IO; the busiest event
loop is the highest main-thread CPU among them (an SDS's wire, map and chunk work runs there;
its file IO runs on libuv's pool threads): near 100 % it is the limit. Client CPU is the whole
script (both generator threads and the idle main thread); the busiest generator is one
generator thread's CPU: near 100 % the client, not the SDS, was the limit. Machine busy is all
CPU in /proc/stat (of ${machine.cpuCount} × 100 %); rest is what was neither SDS nor client. Limit names what
was at ${saturatedPercentMin} % or more (of a core for a thread, of all cores for the machine); none means the IO
path itself (devices, page cache, latency at this depth). Each run
waited up to ${(options.quick ? quietWaitMsMaxQuick : quietWaitMsMax) / 1000} s for a quiet machine (under ${quietBusyPercentMax}% of a core busy); ${disturbedText(summaries)}

${markdownTable(costRows(summaries, machine.cpuCount))}

Every round's result:

${markdownTable(roundRows(summaries))}

### Machine

${machineLines(machine, options).map(([name, value]) => `- ${name}: ${value}`).join('\n')}

### How it was run

Two device files of ${formatBytes(deviceBytes)} each (half the ${formatBytes(options.sizeBytes)} region, plus the slack the
placement hash needs and the SDS's metadata area) in a fresh temp dir (\`$DIR\`) under \`${options.parentDir}\`,
recreated empty before each configuration started (with a data dir of its own per round).
Commands of the last round (ports picked by the kernel, chunk size 1 MiB):

\`\`\`
${configNames.flatMap((name) => commands[name] ?? []).map(placeholder).join('\n')}
\`\`\`

Placement map, installed over the wire (SetMap, role \`mdm\`) on each SDS: pool \`${poolId}\`,
${pgCount} unmirrored groups of 1 MiB chunks, all on the one process, or group i on shard (i mod 2) + 1.
The region (volume tree \`${vtreeId}\`) is written once in full (1 MiB writes, ${fillDepth} in flight per
generator), and every SDS reports every chunk held. The client is two worker threads, each with
one wire connection (role \`sdc\`) and the chunks of the even or of the odd groups: against the
shards, generator k talks to shard k + 1; against the one process, both talk to it. Each keeps
half the queue depth in flight, picking a chunk it owns and a block in it at random
(mulberry32, seed ${seedBase} + 16 × round + 4 × pattern index + generator). After every run the
SDSs' device counters show that every request completed reached a device.
${options.io === 'buffered' ? `Before every run the files are synced and read whole through the page cache:

\`\`\`
${placeholder(`fio ${fillArgs(path.join(workDir, 'device-1.img'), deviceBytes, 'random', false).join(' ')}`)}
\`\`\`
` : ''}
### What it shows, and how far it goes here

${analysisStart}
${analysis ?? '_Not written yet. This part is kept across re-runs of the script (between the analysis markers); check it still matches the numbers above._'}
${analysisEnd}
`;
}

// --- main ------------------------------------------------------------------------------

async function main() {
  const parsed = optionsOrExitCode('bench-shards', parseOptions, usage);
  if (parsed.exitCode !== undefined) return parsed.exitCode;
  const { options } = parsed;
  handleSignals({
    onInterrupt: () => {
      for (const generator of generators) generator.worker.postMessage({ type: 'stop' });
    },
    onSecondSignal: () => killShards(),
  });
  const startedAt = new Date().toISOString();
  const machine = { ...describeMachine(), loadAverageAtStart: os.loadavg().map((load) => load.toFixed(2)).join(' ') };
  let workDir = null;
  process.on('exit', () => {
    killRunning('SIGKILL');
    killShards();
    if (workDir !== null) fs.rmSync(workDir, { recursive: true, force: true });
  });
  try {
    const owned = splitChunks(options.sizeBytes);
    // Each device holds one shard's chunks: the larger half, plus 1/16 of it in case.
    const halfBytes = Math.max(...owned.map(({ chunks }) => chunks.length)) * chunkBytes;
    const deviceBytes = sdsDeviceBytesFor(halfBytes + Math.ceil(halfBytes / 16 / chunkBytes) * chunkBytes, chunkBytes);
    const statfs = fs.statfsSync(options.parentDir);
    if (statfs.bavail * statfs.bsize < 2 * deviceBytes + 256 * MiB) {
      throw new BenchError('SPACE', `${options.parentDir} has ${formatBytes(statfs.bavail * statfs.bsize)} free; the two files need ${formatBytes(2 * deviceBytes)} (use --dir or a smaller --size)`);
    }
    workDir = fs.mkdtempSync(path.join(options.parentDir, 'meshblock-bench-shards-'));
    fs.writeFileSync(path.join(workDir, 'cluster.secret'), `${clusterSecret.toString()}\n`, { mode: 0o600 });
    const devices = Array.from({ length: shardCount }, (_, index) => path.join(workDir, `device-${index + 1}.img`));
    const context = { options, machine, devices, deviceBytes, owned, workDir, commands: {}, current: null };
    const runs = [];
    for (let round = 1; round <= options.roundCount; round++) {
      const order = round % 2 === 1 ? configNames : [...configNames].reverse();
      for (const configName of order) await runConfig(configName, round, context, runs);
    }
    const summaries = summarize(runs);
    const machineText = machineLines(machine, options).map(([name, value]) => `${name}: ${value}`).join('\n');
    const tables = [resultRows(summaries), costRows(summaries, machine.cpuCount), roundRows(summaries)].map(textTable).join('\n\n');
    process.stdout.write(`\nShards benchmark: ratio = two shards / one process \n\n${machineText}\n\n${tables}\n`);
    if (options.outPath !== null) {
      writeSection(options.outPath, { heading: sectionHeading, analysisStart, analysisEnd }, (analysis) =>
        markdownSection({ options, machine, summaries, startedAt, commands: context.commands, workDir, deviceBytes, analysis }),
      );
      process.stdout.write(`\nwrote the '${sectionHeading.slice(3)}' section of ${options.outPath}\n`);
    }
    return 0;
  } catch (err) {
    if (interruptedSignal() !== null) return interruptedExitCode();
    process.stderr.write(`bench-shards: ${err instanceof BenchError ? err.message : (err?.stack ?? String(err))}\n`);
    return exitRuntimeError;
  } finally {
    await stopGenerators();
    killRunning('SIGKILL');
    killShards();
    if (workDir !== null) fs.rmSync(workDir, { recursive: true, force: true });
    workDir = null;
  }
}

if (isMainThread) process.exitCode = await main();
