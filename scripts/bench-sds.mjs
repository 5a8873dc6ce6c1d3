#!/usr/bin/env node
// Benchmark: what an SDS (`meshblock sds start`) adds to its device. The same load runs
// against three targets on files of the same size in the same directory:
//
//   raw       fio on a plain file: what the file (filesystem + page cache) can do by itself;
//   SDS x1    one SDS on a file device, driven over the wire, placement groups not mirrored;
//   mirrored  two SDSs on two files, every group mirrored (primaries alternate between
//             them, as test/helpers/sds.ts makeMap does), the client sending to primaries.
//
// and the table says how close each SDS configuration comes to the raw file: the ratio
// SDS / raw, where 1.00 means the SDS adds nothing. There is no fio engine for our wire
// protocol, so the SDS load comes from a generator in this script: a fixed number of
// requests kept in flight over one authenticated WirePeer connection per SDS, each
// request's latency taken with process.hrtime.bigint() from request() to its reply.
//
// How it keeps the comparison fair:
// - the volume region is 1 MiB-aligned with 1 MiB chunks and 64 placement groups, so every
//   request lies inside one chunk: a 4k request at 4k alignment never crosses a chunk
//   boundary and a 1M sequential request at 1M alignment is exactly one chunk; the SDS
//   never has to split, and fio's block sizes are the same;
// - every byte of the region is written once before any run (through the SDS for the SDS
//   targets), so reads hit allocated chunks: an SDS answers reads of never-written chunks
//   with zeros without touching its device, and measuring that would be dishonest. The
//   device read/write counters (SdsOp.Stats) are checked after every run to prove it;
// - the SDS opens its device files buffered (no O_DIRECT), so fio does too (direct=0), and
//   all files are held in the page cache the same way: after the fill they are synced,
//   dropped from the cache and read back whole (--cache-fill, as scripts/bench-nbd.mjs
//   does: the folio size the cache ends up with decides what a 4k buffered write costs),
//   and before every run they are synced (so no writeback from the previous run lands in
//   this one) and read whole again. The numbers therefore compare software paths, not the
//   disk under the files;
// - for every pattern the runs go raw, SDS x1, mirrored, and the whole alternation is
//   repeated --rounds times; each result is the median of its rounds;
// - before every run the bench waits until the rest of the machine is quiet and samples,
//   inside the measured window, the CPU of the SDS processes, of the load generator (this
//   process) or fio, and of everything else, to flag disturbed runs.
//
// Exit codes: 0 done, 1 an SDS failed to start or died, a request failed, or fio reported an
// error, 2 bad usage, 128+N interrupted by signal N. Every SDS is stopped and the temp dir
// removed on every path out.
//
// Usage: node scripts/bench-sds.mjs [--size 1G] [--runtime 10] [--ramp-time 2] [--rounds 2]
//          [--out docs/benchmarks.md] [--dir /tmp] [--cache-fill random|sequential] [--quick]
// (the same options as bench-nbd.mjs, so that `npm run bench -- OPTIONS` can give both the same)

import { randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
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
  firstLineMatching,
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
  parseSharedOptions,
  procStatFields,
  processFailure,
  quietBusyPercentMax,
  quietSampleMs,
  repoRoot,
  run,
  sdsDeviceBytesFor,
  sdsReadyLines,
  setIoArgs,
  sharedOptionSpecs,
  spawnTracked,
  stopTracked,
  syncFiles,
  textTable,
  threadContextSwitches,
  throwIfInterrupted,
  waitForQuiet,
  within,
  writePseudorandom,
  writeSection,
  optionsOrExitCode,
} from './bench-common.mjs';
import { pino } from 'pino';
import { InvalidArgumentError } from '../dist/common/errors.js';
import { MiB, formatBytes } from '../dist/common/units.js';
import { mulberry32 } from '../dist/common/seeded-random.js';
import { placementGroupOf } from '../dist/wire/placement.js';
import { SdsOp, SdsStatus, ioArgsBytes } from '../dist/wire/sds-ops.js';

/** How long an SDS has to say it is ready, and to exit after SIGTERM (its drain is 10 s). */
const sdsStartMs = 20_000;
const sdsStopMs = 15_000;
/** fio, and the load generator, get their runtime plus this much before they count as hung. */
const runSlackMs = 60_000;
/** A wire request the SDS has not answered in this long fails the run. */
const requestTimeoutMs = 30_000;
/** The fill writes the whole region; below this rate it is taken as hung. */
const fillBytesPerSecondMin = 8 * MiB;
const fillSlackMs = 60_000;
/** Bytes of SDS stderr kept to show when it fails. */
const stderrKeptBytes = 16 * 1024;
/** The largest request is 1 MiB; the region must hold many of them. */
const sizeBytesMin = 64 * MiB;
const sizeBytesQuick = 256 * MiB;

/** The pool every SDS serves: 1 MiB chunks (the SDS default) in 64 placement groups. */
const chunkBytes = MiB;
const pgCount = 64;
const clusterId = 'c0ffee00c0ffee00';
const poolId = '00000000000000a1';
const vtreeId = 'b0b0000000000001';
const mapEpoch = 1;
/** The cluster secret, made up per run and handed to the SDSs in a file. */
const clusterSecret = Buffer.from(randomFillSync(Buffer.alloc(24)).toString('hex'));
/** Concurrent 1 MiB writes while filling the region: enough to keep the SDS busy. */
const fillDepth = 8;
/** PRNG seed of the random offsets (fixed, so runs are repeatable; printed in the report). */
const seedBase = 0x5d5b_e4c4;

/**
 * Before each run we wait (up to quietWaitMsMax) until the rest of the machine uses less
 * than quietBusyPercentMax of one core (bench-common): on a 2-core machine one busy
 * neighbour halves the CPU left for the SDS and its client.
 */
const quietWaitMsMax = 120_000;
/**
 * A flagged run is repeated up to this many times (each after waiting for quiet again), and
 * the last attempt kept: on a shared machine, other people's test runs come in bursts.
 */
const disturbedRetryCount = 3;

const usage = `Usage: node scripts/bench-sds.mjs [options]

Runs 4k random and 1M sequential IO against a plain file (fio), one SDS and a mirrored
pair of SDSs (a load generator speaking the wire protocol), all on files of one size.

  --size SIZE          volume region and file size (binary units: 512M, 1G) [default: 1G;
                       --quick: ${formatBytes(sizeBytesQuick)}]
  --runtime SECONDS    measured time per run [default: 10; --quick: 3]
  --ramp-time SECONDS  unmeasured warm-up per run [default: 2; --quick: 1]
  --rounds N           alternations per pattern; results are medians [default: 2; --quick: 1]
  --out FILE           also write the report as a Markdown section '## SDS benchmark' into FILE,
                       replacing that section and keeping everything else (and a hand-written
                       analysis between the section's sds-analysis markers)
  --dir DIR            where the temp dir with the files goes [default: ${os.tmpdir()}]
  --cache-fill MODE    how files are read into the page cache before each run: random (small
                       folios) or sequential (readahead, large folios) [default: random]
  --io MODE            buffered: SDSs and fio through the page cache (the software path); direct:
                       SDSs with --io direct and fio with direct=1, no page cache (the disk under
                       the files counts) [default: buffered]
  --quick              smoke test: --size ${formatBytes(sizeBytesQuick)} --runtime 3 --ramp-time 1 --rounds 1
                       unless given
  -h, --help           this text
`;

/**
 * The load. `metric` says what the table reports: IOPS or MiB/s (2^20 bytes per second).
 * Latency is the whole request (submission to completion) for every target.
 */
const patterns = [
  { id: 'randwrite-4k-qd32', title: '4k random write, QD32', write: true, random: true, blockBytes: 4096, depth: 32, metric: 'iops' },
  { id: 'randread-4k-qd32', title: '4k random read, QD32', write: false, random: true, blockBytes: 4096, depth: 32, metric: 'iops' },
  // QD8 for 1M, as in bench-nbd.mjs, so the two benchmarks' 1M rows can be read side by side.
  { id: 'write-1m-qd8', title: '1M sequential write, QD8', write: true, random: false, blockBytes: MiB, depth: 8, metric: 'mibps' },
  { id: 'read-1m-qd8', title: '1M sequential read, QD8', write: false, random: false, blockBytes: MiB, depth: 8, metric: 'mibps' },
];

const targetNames = ['raw', 'single', 'mirrored'];
const targetTitles = { raw: 'raw file (fio)', single: 'SDS ×1', mirrored: 'SDS mirrored' };
const cacheFillModes = ['random', 'sequential'];

/** The buffered run's section, and the direct run's beside it (`--io direct`). */
const sectionHeadings = { buffered: '## SDS benchmark', direct: '## SDS benchmark, direct IO' };
const analysisStart = '<!-- sds-analysis:start -->';
/** Each section keeps its own hand-written analysis. */
function analysisMarkers(io) {
  if (io === 'buffered') return { analysisStart, analysisEnd };
  return { analysisStart: '<!-- sds-direct-analysis:start -->', analysisEnd: '<!-- sds-direct-analysis:end -->' };
}
const analysisEnd = '<!-- sds-analysis:end -->';

/** One of the bench's own invariants broke: a bug here, not in what is measured. */
function assert(condition, message) {
  if (!condition) throw new BenchError('ASSERTION', message);
}

// --- arguments -------------------------------------------------------------------------

function parseOptions(argv) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: { ...sharedOptionSpecs, 'cache-fill': { type: 'string' }, io: { type: 'string' } },
  });
  if (values.help) return null;
  // The region is whole chunks: parseSharedOptions() asks for whole MiB, which chunkBytes is.
  const options = {
    ...parseSharedOptions(values, { sizeText: '1G', sizeTextQuick: String(sizeBytesQuick), rounds: '2', roundsQuick: '1', sizeBytesMin }),
    cacheFill: values['cache-fill'] ?? 'random',
    io: values.io ?? 'buffered',
  };
  if (!['buffered', 'direct'].includes(options.io)) throw new InvalidArgumentError('--io', `must be buffered or direct, got '${options.io}'`);
  if (!cacheFillModes.includes(options.cacheFill)) {
    throw new InvalidArgumentError('--cache-fill', `must be one of ${cacheFillModes.join(', ')}, got '${options.cacheFill}'`);
  }
  checkPaths(values, options);
  return options;
}

// --- interruption ----------------------------------------------------------------------

/** The load generator running now, if any: a signal stops it issuing requests. */
let activeLoad = null;

// --- processes -------------------------------------------------------------------------

/**
 * A process's counters from /proc: CPU seconds (utime + stime) of the whole process, and
 * context switches summed over its live threads (libuv's pool threads live as long as the
 * process, so none of them leaves with its count during a run). Null once it is gone.
 */
function sampleProcess(pid, machine) {
  try {
    const fields = procStatFields(`/proc/${pid}/stat`);
    const { contextSwitches } = threadContextSwitches(pid);
    return { cpuSeconds: cpuSecondsOf(fields, machine.clockTicksPerSecond), contextSwitches };
  } catch {
    return null;
  }
}

// --- SDS processes ---------------------------------------------------------------------

function sdsFailure(sds) {
  return processFailure('SDS', `SDS ${sds.name}`, sds.state);
}

async function startSds({ name, device, workDir, secretFile, io }) {
  const args = [
    meshblockBin, 'sds', 'start',
    '--name', name,
    '--device', device,
    '--listen', `${host}:0`,
    '--data-dir', path.join(workDir, `${name}-data`),
    '--cluster-id', clusterId,
    '--secret-file', secretFile,
    '--io', io,
  ];
  const { child, state } = spawnTracked(process.execPath, args, { stderrKeptBytes });
  const sds = { name, device, child, state, sdsId: '', address: '', command: ['node', 'bin/meshblock.cjs', ...args.slice(1)] };
  const deadline = Date.now() + sdsStartMs;
  for (;;) {
    const [ready] = sdsReadyLines(state.stdout);
    if (ready !== undefined) {
      sds.sdsId = ready.sdsId;
      sds.address = ready.address;
      return sds;
    }
    throwIfInterrupted();
    if (state.exited) throw sdsFailure(sds);
    if (Date.now() > deadline) throw new BenchError('SDS', `SDS ${name} did not say it was listening within ${sdsStartMs} ms`);
    await delay(20);
  }
}

/**
 * Device file size for a region of `sizeBytes` (bench-common's sdsDeviceBytesFor): checked
 * against the SDS's capacity once it runs.
 */
function deviceBytesFor(sizeBytes) {
  return sdsDeviceBytesFor(sizeBytes, chunkBytes);
}

// --- the wire client -------------------------------------------------------------------

/**
 * Wire warnings (a dropped connection, a bad frame) go to stderr; per-request logs are off.
 * The benchmark is the only client, so anything logged here is worth seeing.
 */
const wireLog = pino({ level: 'warn', base: { component: 'bench-sds' } }, pino.destination(2));

/** One wire connection to an SDS as `role`, with the cluster secret. */
function connect(address, role) {
  return connectWire(address, { clusterId, secret: clusterSecret, role, name: `bench-${role}`, log: wireLog });
}

/**
 * The placement map of a target: 64 groups of 1 MiB chunks; with two SDSs group i has
 * primary sds[i % 2] and secondary sds[(i + 1) % 2]; with one, no secondary.
 */
function makeMap(sdsList) {
  const mirrored = sdsList.length > 1;
  return {
    epoch: mapEpoch,
    sds: Object.fromEntries(sdsList.map((sds) => [sds.sdsId, { address: sds.address }])),
    pools: {
      [poolId]: {
        chunkBytes,
        groups: Array.from({ length: pgCount }, (_, index) => ({
          primary: sdsList[index % sdsList.length].sdsId,
          secondary: mirrored ? sdsList[(index + 1) % sdsList.length].sdsId : null,
        })),
      },
    },
  };
}

async function sdsStats(peer) {
  const response = await peer.request(SdsOp.Stats, Buffer.alloc(0), { timeoutMs: requestTimeoutMs });
  expectOk(response, 'stats');
  return JSON.parse(response.payload.toString('utf8'));
}

/**
 * Connects a target: installs its map on every SDS (as role 'mdm', whose job that is), then
 * opens one 'sdc' connection per SDS for the IO, and routes each chunk of the region to the
 * connection of its group's primary, as an SDC does.
 */
async function connectTarget(name, sdsList, sizeBytes) {
  const map = makeMap(sdsList);
  for (const sds of sdsList) {
    const control = await connect(sds.address, 'mdm');
    try {
      expectOk(await control.request(SdsOp.SetMap, Buffer.from(JSON.stringify(map)), { timeoutMs: requestTimeoutMs }), `installing the map on ${sds.name}`);
    } finally {
      await control.close();
    }
  }
  const peers = new Map();
  try {
    for (const sds of sdsList) peers.set(sds.sdsId, await connect(sds.address, 'sdc'));
  } catch (err) {
    for (const peer of peers.values()) peer.destroy();
    throw err;
  }
  const chunkCount = sizeBytes / chunkBytes;
  const routes = Array.from({ length: chunkCount }, (_, chunkIndex) => {
    const pgIndex = placementGroupOf(vtreeId, chunkIndex, pgCount);
    return { pgIndex, peer: peers.get(map.pools[poolId].groups[pgIndex].primary) };
  });
  const target = { name, sdsList, map, peers, routes, files: sdsList.map((sds) => sds.device) };
  for (const sds of sdsList) {
    const stats = await sdsStats(peers.get(sds.sdsId));
    const totalBytes = stats.devices.reduce((sum, device) => sum + device.totalBytes, 0);
    if (totalBytes < sizeBytes) throw new BenchError('SDS', `SDS ${sds.name} holds ${formatBytes(totalBytes)}, less than the ${formatBytes(sizeBytes)} region`);
  }
  return target;
}

function closeTarget(target) {
  for (const peer of target.peers.values()) peer.destroy();
}

/** Device counters summed over a target's SDSs: reads and writes that reached a device. */
async function deviceCounters(target) {
  let reads = 0;
  let writes = 0;
  let usedBytes = 0;
  for (const peer of target.peers.values()) {
    for (const device of (await sdsStats(peer)).devices) {
      reads += device.reads;
      writes += device.writes;
      usedBytes += device.usedBytes;
    }
  }
  return { reads, writes, usedBytes };
}

// --- the load generator ----------------------------------------------------------------

/** mulberry32 (src/common/seeded-random.ts): a small, fast, seedable PRNG in [0, 1). */
const prng = mulberry32;

/**
 * Keeps `pattern.depth` requests in flight against `target` for the ramp time and the
 * runtime; counts the requests that complete inside the measured window (after the ramp)
 * and their latencies, and samples CPU at the window's edges.
 */
async function runLoad(target, pattern, options, machine, seed) {
  const sizeBytes = options.sizeBytes;
  const blockCount = sizeBytes / pattern.blockBytes;
  const random = prng(seed);
  let sequentialIndex = 0;
  const nextBlock = pattern.random
    ? () => Math.floor(random() * blockCount)
    : () => {
        const block = sequentialIndex;
        sequentialIndex = (sequentialIndex + 1) % blockCount;
        return block;
      };
  const op = pattern.write ? SdsOp.Write : SdsOp.Read;
  const before = await deviceCounters(target);
  const startNs = process.hrtime.bigint();
  const rampEndNs = startNs + BigInt(options.rampSeconds) * 1_000_000_000n;
  const endNs = rampEndNs + BigInt(options.runtimeSeconds) * 1_000_000_000n;
  const load = { stop: false, completedCount: 0, histogram: new LatencyHistogram(), error: null };
  activeLoad = load;

  const sampleAt = (at) => ({
    atNs: at,
    machine: machineTicks(),
    clientCpu: process.cpuUsage(),
    sds: target.sdsList.map((sds) => sampleProcess(sds.child.pid, machine)),
  });
  // CPU is sampled when the measured window opens (a timer at the end of the ramp) and when
  // it closes (by the first worker that finds the runtime over), so the ramp and the drain
  // at the end are not counted.
  const samples = [];
  const rampTimer = setTimeout(() => samples.push(sampleAt(process.hrtime.bigint())), options.rampSeconds * 1000);
  const sampleEnd = (at) => {
    if (samples.length === 1) samples.push(sampleAt(at));
  };
  // If the SDS stops answering, requests time out on their own (requestTimeoutMs); this
  // bounds the whole run regardless.
  const hangTimer = setTimeout(() => {
    load.error ??= new BenchError('TIMEOUT', `${pattern.id} against ${target.name} did not finish within its runtime plus ${runSlackMs} ms`);
    load.stop = true;
    for (const peer of target.peers.values()) peer.destroy();
  }, (options.rampSeconds + options.runtimeSeconds) * 1000 + runSlackMs);

  const worker = async (slotIndex) => {
    // One request buffer per slot in flight, reused: a slot sends its next request only after
    // the reply to the last, by which time the socket has long written the buffer out. The
    // args' fixed fields (pool, vtree, generation, flags) are written once; slots write
    // different bytes.
    const payload = ioPayload({ poolId, vtreeId, write: pattern.write, blockBytes: pattern.blockBytes, fillByte: slotIndex });
    const requestOptions = { epoch: mapEpoch, timeoutMs: requestTimeoutMs };
    while (!load.stop) {
      const sentNs = process.hrtime.bigint();
      if (sentNs >= endNs) {
        sampleEnd(sentNs);
        break;
      }
      const volumeOffsetBytes = nextBlock() * pattern.blockBytes;
      const chunkIndex = Math.floor(volumeOffsetBytes / chunkBytes);
      const route = target.routes[chunkIndex];
      setIoArgs(payload, route.pgIndex, chunkIndex, volumeOffsetBytes - chunkIndex * chunkBytes);
      const response = await route.peer.request(op, payload, requestOptions);
      const doneNs = process.hrtime.bigint();
      if (response.status !== SdsStatus.Ok) expectOk(response, `${pattern.id} at offset ${volumeOffsetBytes}`);
      if (doneNs > rampEndNs && doneNs <= endNs) {
        load.completedCount += 1;
        load.histogram.add(Number(doneNs - sentNs));
      }
    }
  };
  const outcomes = await Promise.allSettled(
    Array.from({ length: pattern.depth }, (_, slotIndex) =>
      worker(slotIndex).catch((err) => {
        // One failed request ends the run: the others stop issuing and drain.
        load.error ??= err;
        load.stop = true;
      }),
    ),
  );
  clearTimeout(hangTimer);
  clearTimeout(rampTimer);
  activeLoad = null;
  throwIfInterrupted();
  if (load.error !== null) throw load.error;
  assert(outcomes.every((outcome) => outcome.status === 'fulfilled'), 'workers handle their own failures');
  for (const sds of target.sdsList) if (sds.state.exited) throw sdsFailure(sds);
  const after = await deviceCounters(target);
  if (samples.length !== 2 || samples.some((sample) => sample.sds.includes(null))) {
    throw new BenchError('SAMPLE', `could not sample the SDS processes during ${pattern.id} against ${target.name}`);
  }
  if (load.completedCount === 0) throw new BenchError('REQUEST', `no request completed in the measured window of ${pattern.id} against ${target.name}`);

  const [first, last] = samples;
  const windowSeconds = Number(last.atNs - first.atNs) / 1e9;
  const runtimeSeconds = options.runtimeSeconds;
  const iops = load.completedCount / runtimeSeconds;
  const sdsCpuSeconds = last.sds.reduce((sum, sample, index) => sum + sample.cpuSeconds - first.sds[index].cpuSeconds, 0);
  const sdsContextSwitches = last.sds.reduce((sum, sample, index) => sum + sample.contextSwitches - first.sds[index].contextSwitches, 0);
  const clientCpuSeconds = (last.clientCpu.user - first.clientCpu.user + last.clientCpu.system - first.clientCpu.system) / 1e6;
  const sdsCpuPercent = (100 * sdsCpuSeconds) / windowSeconds;
  const clientCpuPercent = (100 * clientCpuSeconds) / windowSeconds;
  const machinePercent = machineBusyPercent(first.machine, last.machine, machine.cpuCount);
  // Every request of the run (ramp and drain included) must have reached a device: a read
  // answered from nowhere (an unallocated chunk) would not count here.
  const deviceOps = pattern.write ? after.writes - before.writes : after.reads - before.reads;
  const copies = pattern.write ? target.sdsList.length : 1;
  if (deviceOps < load.completedCount * copies) {
    throw new BenchError('HONESTY', `${pattern.id} against ${target.name}: ${load.completedCount} requests completed but devices counted ${deviceOps} ${pattern.write ? 'writes' : 'reads'}`);
  }
  return {
    iops,
    mibps: (iops * pattern.blockBytes) / MiB,
    p50Us: load.histogram.percentileUs(50),
    p99Us: load.histogram.percentileUs(99),
    serverCpuPercent: sdsCpuPercent,
    clientCpuPercent,
    serverCpuUsPerIo: (1e6 * sdsCpuSeconds) / windowSeconds / iops,
    contextSwitchesPerIo: sdsContextSwitches / windowSeconds / iops,
    clientCpuUsPerIo: (1e6 * clientCpuSeconds) / windowSeconds / iops,
    restCpuPercent: Math.max(0, machinePercent - sdsCpuPercent - clientCpuPercent),
  };
}

/**
 * Writes every chunk of the region once through the target (whole 1 MiB chunks, fillDepth
 * in flight), so that every later read hits an allocated chunk on a device.
 */
async function fillVolume(target, sizeBytes) {
  const chunkCount = sizeBytes / chunkBytes;
  let nextChunk = 0;
  const load = { stop: false };
  activeLoad = load;
  const worker = async (slotIndex) => {
    const payload = ioPayload({ poolId, vtreeId, write: true, blockBytes: chunkBytes, fillByte: slotIndex });
    while (!load.stop && nextChunk < chunkCount) {
      const chunkIndex = nextChunk++;
      const route = target.routes[chunkIndex];
      setIoArgs(payload, route.pgIndex, chunkIndex, 0);
      // Vary the bytes per chunk so no two chunks are identical.
      payload.writeDoubleLE(chunkIndex, ioArgsBytes + 8);
      expectOk(await route.peer.request(SdsOp.Write, payload, { epoch: mapEpoch, timeoutMs: requestTimeoutMs }), `filling chunk ${chunkIndex}`);
    }
  };
  const timeoutMs = (1000 * sizeBytes * target.sdsList.length) / fillBytesPerSecondMin + fillSlackMs;
  try {
    await within(
      Promise.all(Array.from({ length: fillDepth }, (_, slotIndex) => worker(slotIndex))),
      timeoutMs,
      `filling the region through ${target.name}`,
    );
  } catch (err) {
    load.stop = true;
    throw err;
  } finally {
    activeLoad = null;
  }
  throwIfInterrupted();
  const counters = await deviceCounters(target);
  const expectedBytes = sizeBytes * target.sdsList.length;
  if (counters.usedBytes !== expectedBytes) {
    throw new BenchError('HONESTY', `after the fill ${target.name} holds ${formatBytes(counters.usedBytes)} of chunks, expected ${formatBytes(expectedBytes)}`);
  }
}

// --- files and the page cache ----------------------------------------------------------

/** Writes every byte of the raw file once with pseudorandom data, as the SDS fill does its devices. */
async function fillRawFile(file, sizeBytes) {
  const handle = await fs.promises.open(file, 'r+');
  try {
    await writePseudorandom(handle, sizeBytes);
  } finally {
    await handle.close();
  }
}

/**
 * Reads a whole file through the page cache with fio; `invalidate` first drops what is
 * cached. How the pages are read decides the size of the page-cache folios, and on kernels
 * with large folios (6.x) that decides what a 4 KiB buffered write costs (see
 * bench-nbd.mjs fillPageCache): `random` (no readahead) gives small folios, `sequential`
 * the large ones readahead and big writes leave. Every file of every target is read the
 * same way, so none is favoured.
 */
async function fillPageCache(file, mode, invalidate) {
  const args = fillArgs(file, fs.statSync(file).size, mode, invalidate);
  const result = await run('fio', args, 300_000, { stderrKeptBytes });
  throwIfInterrupted();
  if (result.code !== 0) throw new BenchError('FIO', `fio could not fill the page cache: fio ${args.join(' ')}\n${result.stderr.trim()}`);
}

// --- fio on the raw file ---------------------------------------------------------------

/**
 * fio on the raw file. libaio with direct=0 at the pattern's depth, one job: the SDS's
 * files are buffered too, and buffered libaio does each IO inside io_submit on fio's one
 * thread, so this is what the file and page cache cost with nothing added — the same
 * depth as the SDS load (latencies compare by Little's law) and one submitting thread, like
 * the load generator's one event loop. psync with numjobs=32 was the alternative: 32
 * processes on this machine's few CPUs measure the scheduler as much as the file.
 * invalidate=0 keeps the page cache fio would otherwise drop at job start;
 * lat_percentiles=1 reports submission-to-completion latency, which is what the load
 * generator measures (for buffered libaio the work happens at submission, so clat alone
 * would leave it out); norandommap picks random offsets with replacement, as the load
 * generator does.
 */
function fioArgs(pattern, file, options) {
  return [
    `--name=${pattern.id}`,
    `--filename=${file}`,
    `--size=${options.sizeBytes}`,
    '--ioengine=libaio',
    `--direct=${options.io === 'direct' ? 1 : 0}`,
    '--invalidate=0',
    `--rw=${pattern.random ? 'rand' : ''}${pattern.write ? 'write' : 'read'}`,
    `--bs=${pattern.blockBytes}`,
    `--iodepth=${pattern.depth}`,
    '--numjobs=1',
    ...(pattern.random ? ['--norandommap', '--randrepeat=0'] : []),
    '--time_based',
    `--runtime=${options.runtimeSeconds}`,
    `--ramp_time=${options.rampSeconds}`,
    '--lat_percentiles=1',
    '--verify_state_save=0',
    '--output-format=json',
  ];
}

async function runFio(pattern, file, options, machine) {
  const args = fioArgs(pattern, file, options);
  const { child, state } = spawnTracked('fio', args, { fio: true });
  const timer = setTimeout(() => child.kill('SIGKILL'), (options.runtimeSeconds + options.rampSeconds) * 1000 + runSlackMs);
  // The machine is sampled inside fio's measured window, as for the SDS runs.
  const samples = [];
  const sampleTimers = [options.rampSeconds * 1000, (options.rampSeconds + options.runtimeSeconds) * 1000].map((atMs) =>
    setTimeout(() => samples.push({ atMs: performance.now(), machine: machineTicks() }), atMs),
  );
  await state.exit;
  clearTimeout(timer);
  for (const sampleTimer of sampleTimers) clearTimeout(sampleTimer);
  throwIfInterrupted();
  const commandLine = ['fio', ...args].join(' ');
  if (state.spawnError !== null) throw new BenchError('FIO', `cannot run fio: ${state.spawnError.message}`);
  if (state.code !== 0) throw new BenchError('FIO', `fio exited with ${state.signal ?? state.code}: ${commandLine}\n${state.stderr.trim()}`);
  let report;
  try {
    report = JSON.parse(state.stdout.slice(state.stdout.search(/^\{/m)));
  } catch (err) {
    throw new BenchError('FIO', `fio printed no JSON report: ${commandLine}\n${state.stdout.slice(0, 2000)}`, { cause: err });
  }
  const job = report.jobs?.[0];
  if (job === undefined) throw new BenchError('FIO', `fio report has no job: ${commandLine}`);
  if (job.error !== 0) throw new BenchError('FIO', `fio job error ${job.error} (${job.verror ?? ''}): ${commandLine}\n${state.stderr.trim()}`);
  const direction = pattern.write ? job.write : job.read;
  if (direction.total_ios === 0) throw new BenchError('FIO', `fio completed no I/O: ${commandLine}`);
  const percentiles = direction.lat_ns.percentile;
  const fioCpuPercent = job.usr_cpu + job.sys_cpu;
  const machinePercent = samples.length === 2 ? machineBusyPercent(samples[0].machine, samples[1].machine, machine.cpuCount) : fioCpuPercent;
  return {
    iops: direction.iops,
    mibps: direction.bw_bytes / MiB,
    p50Us: percentiles['50.000000'] / 1000,
    p99Us: percentiles['99.000000'] / 1000,
    serverCpuPercent: null,
    clientCpuPercent: fioCpuPercent,
    serverCpuUsPerIo: null,
    contextSwitchesPerIo: null,
    clientCpuUsPerIo: (1e4 * fioCpuPercent) / direction.iops,
    restCpuPercent: Math.max(0, machinePercent - fioCpuPercent),
  };
}

// --- one run ---------------------------------------------------------------------------

async function runOne(targetName, pattern, context, round) {
  const { options, machine, targets, rawFile, allFiles } = context;
  throwIfInterrupted();
  const quiet = await waitForQuiet(machine.cpuCount, quietWaitMsMax);
  await syncFiles(allFiles);
  const files = targetName === 'raw' ? [rawFile] : targets[targetName].files;
  if (options.io === 'buffered') for (const file of files) await fillPageCache(file, options.cacheFill, false);
  throwIfInterrupted();
  const seed = seedBase + round * 16 + patterns.indexOf(pattern);
  const result = targetName === 'raw' ? await runFio(pattern, rawFile, options, machine) : await runLoad(targets[targetName], pattern, options, machine, seed);
  result.quiet = quiet;
  result.disturbed = !quiet || result.restCpuPercent > disturbedPercentMin;
  return result;
}

// --- results ---------------------------------------------------------------------------

function summarize(pattern, runs) {
  const perTarget = {};
  for (const name of targetNames) {
    const mine = runs.filter((entry) => entry.target === name).map((entry) => entry.result);
    perTarget[name] = {
      value: median(mine.map((result) => result[pattern.metric])),
      values: mine.map((result) => result[pattern.metric]),
      p50Us: median(mine.map((result) => result.p50Us)),
      p99Us: median(mine.map((result) => result.p99Us)),
      serverCpuPercent: median(mine.map((result) => result.serverCpuPercent)),
      clientCpuPercent: median(mine.map((result) => result.clientCpuPercent)),
      serverCpuUsPerIo: median(mine.map((result) => result.serverCpuUsPerIo)),
      contextSwitchesPerIo: median(mine.map((result) => result.contextSwitchesPerIo)),
      clientCpuUsPerIo: median(mine.map((result) => result.clientCpuUsPerIo)),
      restCpuPercentMax: Math.max(...mine.map((result) => result.restCpuPercent)),
      disturbedCount: mine.filter((result) => result.disturbed).length,
      runCount: mine.length,
    };
  }
  const raw = perTarget.raw.value;
  return { pattern, perTarget, ratios: { single: perTarget.single.value / raw, mirrored: perTarget.mirrored.value / raw } };
}

function unitOf(pattern) {
  return pattern.metric === 'iops' ? 'IOPS' : 'MiB/s';
}

function formatValue(metric, value) {
  if (value === null) return '';
  return metric === 'iops' ? Math.round(value).toLocaleString('en-US') : value.toFixed(0);
}

function formatUs(value) {
  if (value === null) return '';
  return value >= 1000 ? Math.round(value).toLocaleString('en-US') : value.toFixed(1);
}

function formatNumber(value, digits) {
  return value === null ? '–' : value.toFixed(digits);
}

function resultRows(summaries) {
  const header = ['Pattern', 'Unit', 'raw file (fio)', 'SDS ×1', 'ratio', 'SDS mirrored', 'ratio', 'p50 µs raw', 'p50 µs ×1', 'p50 µs mirrored'];
  const rows = summaries.map(({ pattern, perTarget, ratios }) => [
    pattern.title,
    unitOf(pattern),
    formatValue(pattern.metric, perTarget.raw.value),
    formatValue(pattern.metric, perTarget.single.value),
    ratios.single.toFixed(2),
    formatValue(pattern.metric, perTarget.mirrored.value),
    ratios.mirrored.toFixed(2),
    formatUs(perTarget.raw.p50Us),
    formatUs(perTarget.single.p50Us),
    formatUs(perTarget.mirrored.p50Us),
  ]);
  return { header, rows };
}

function costRows(summaries) {
  const triple = (perTarget, key, digits) => targetNames.map((name) => formatNumber(perTarget[name][key], digits)).join(' / ');
  const pair = (perTarget, key, digits) => ['single', 'mirrored'].map((name) => formatNumber(perTarget[name][key], digits)).join(' / ');
  const header = [
    'Pattern',
    'p99 µs (raw / ×1 / mirrored)',
    'SDS CPU % (×1 / mirrored)',
    'SDS CPU µs per I/O',
    'SDS context switches per I/O',
    'client CPU % (fio / ×1 / mirrored)',
    'client CPU µs per I/O',
    'rest of machine CPU %, max',
  ];
  const rows = summaries.map(({ pattern, perTarget }) => [
    pattern.title,
    targetNames.map((name) => formatUs(perTarget[name].p99Us)).join(' / '),
    pair(perTarget, 'serverCpuPercent', 0),
    pair(perTarget, 'serverCpuUsPerIo', 1),
    pair(perTarget, 'contextSwitchesPerIo', 2),
    triple(perTarget, 'clientCpuPercent', 0),
    triple(perTarget, 'clientCpuUsPerIo', 1),
    targetNames.map((name) => perTarget[name].restCpuPercentMax.toFixed(0)).join(' / '),
  ]);
  return { header, rows };
}

function roundRows(summaries) {
  const header = ['Pattern', 'Unit', ...targetNames.map((name) => `${targetTitles[name]}, per round`)];
  const rows = summaries.map(({ pattern, perTarget }) => [
    pattern.title,
    unitOf(pattern),
    ...targetNames.map((name) => perTarget[name].values.map((value) => formatValue(pattern.metric, value)).join(', ')),
  ]);
  return { header, rows };
}

/** The report's sentence on disturbed runs, over every pattern's summary of every target. */
function disturbedText(summaries) {
  return disturbedRunsText(summaries.flatMap(({ perTarget }) => targetNames.map((name) => perTarget[name])));
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
  const hypervisor = /Hypervisor detected: (.+)$/m.exec(firstLineMatching('dmesg', [], /Hypervisor detected/));
  if (hypervisor !== null) virtualization = `virtual machine, ${hypervisor[1].trim()}`;
  const commit = firstLine('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']);
  const dirty = firstLine('git', ['-C', repoRoot, 'status', '--porcelain', '--', 'src', 'native', 'bin']) !== '';
  return {
    cpuModel,
    cpuCount: os.cpus().length,
    virtualization,
    clockTicksPerSecond: Number(firstLine('getconf', ['CLK_TCK'])) || 100,
    memoryBytes: os.totalmem(),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    fio: firstLine('fio', ['--version']),
    filesystem: firstLine('stat', ['--file-system', '--format=%T', parentDir]),
    meshblock: `${commit === 'unknown' ? 'unknown commit' : `commit ${commit}${dirty ? ' with uncommitted changes' : ''}`}, ${describeBuild()}`,
    loadAverage: os.loadavg().map((load) => load.toFixed(2)).join(' '),
  };
}

function machineLines(machine) {
  return [
    ['CPU', `${machine.cpuModel}, ${machine.cpuCount} logical CPUs`],
    ['Virtualization', machine.virtualization],
    ['Memory', formatBytes(machine.memoryBytes)],
    ['Kernel', machine.kernel],
    ['Node.js', machine.node],
    ['fio', machine.fio],
    ['meshblock', machine.meshblock],
    ['Files\' filesystem', machine.filesystem],
    ['Load average at start', machine.loadAverage],
  ];
}

/** Refuses to start when the files cannot fit, and warns when they will not fit in the cache. */
function checkRoom(options, machine) {
  const fileBytes = options.sizeBytes + 3 * deviceBytesFor(options.sizeBytes);
  let availableBytes = null;
  try {
    const stats = fs.statfsSync(options.parentDir);
    availableBytes = stats.bavail * stats.bsize;
  } catch {
    // statfs unsupported here: the writes will say so if the disk is full.
  }
  if (availableBytes !== null && availableBytes < fileBytes + 256 * MiB) {
    throw new BenchError('SPACE', `${options.parentDir} has ${formatBytes(availableBytes)} free; the four files need ${formatBytes(fileBytes)} (use --dir or a smaller --size)`);
  }
  if (fileBytes > 0.7 * machine.memoryBytes) {
    process.stderr.write(`warning: the files (${formatBytes(fileBytes)}) may not all stay in the page cache (${formatBytes(machine.memoryBytes)} of memory): some reads will go to the disk\n`);
  }
}

// --- report ----------------------------------------------------------------------------

function markdownSection({ options, machine, summaries, startedAt, sdsCommands, rawFile, workDir, analysis }) {
  const argv = process.argv.slice(2).join(' ');
  const fioLines = patterns.map((pattern) => `fio ${fioArgs(pattern, rawFile, options).join(' ')}`);
  const deviceBytes = deviceBytesFor(options.sizeBytes);
  const placeholder = (text) => text.split(workDir).join('$DIR');
  return `${sectionHeadings[options.io]}

Generated by \`npm run build && node scripts/bench-sds.mjs${argv ? ` ${argv}` : ''}\` (started ${startedAt}).

What an SDS adds to its device. The same load runs against a plain ${formatBytes(options.sizeBytes)} file (fio),
against one SDS whose device is a file (\`SDS ×1\`, no mirror) and against two SDSs on two
files with every placement group mirrored (\`SDS mirrored\`, the client sending to the
primaries, which forward each write to their secondary). There is no fio engine for the
wire protocol, so the SDS load comes from the script's own generator: the same block size,
queue depth, runtime and ramp time as fio, over one authenticated wire connection per SDS.
**Ratio = SDS / raw file: 1.00 means the SDS adds nothing; higher is better.**

${options.io === 'direct'
    ? `No file is in the page cache: the SDSs run with \`--io direct\` (O_DIRECT through Linux AIO,
docs/direct-io.md) and fio with direct=1, so every IO reaches the disk under the files (written in
full first, so no write allocates), and the ratio is what the SDS keeps of the disk.`
    : `All files are in the page cache (they were written in full, synced, and read back the same
way before every run), so the numbers compare software paths — the filesystem and page
cache alone against the wire, the SDS process and, when mirrored, the second SDS — not the
disk under them.`}

### Results

Median of ${options.roundCount} round(s) per target and pattern; each round ran every pattern against the raw
file, SDS ×1 and SDS mirrored in turn. 1M patterns are in MiB/s (2^20 bytes/s), 4k ones in
IOPS. Latency is per request, from submission to completion (fio's \`lat\`, the generator's
request-to-reply time), at the queue depth of the pattern.

${markdownTable(resultRows(summaries))}

Where the time goes (medians). SDS CPU is utime + stime of the SDS processes (both, when
mirrored), in % of one core and per request, and their context switches (voluntary and
involuntary, summed over their threads) per request, sampled from /proc at the edges of
the measured window; client CPU is fio's (usr + sys) or the load generator's (this script's
process); rest of machine is other processes' CPU time in /proc/stat, an estimate.
The machine has ${machine.cpuCount} logical CPUs shared by client and SDS. Each run started only after the
machine had been quiet (under ${quietBusyPercentMax}% of a core busy) for ${quietSampleMs} ms, and a run that other load
disturbed anyway was repeated up to ${disturbedRetryCount} times; ${disturbedText(summaries)}

${markdownTable(costRows(summaries))}

Every round's result:

${markdownTable(roundRows(summaries))}

### Machine

${machineLines(machine).map(([name, value]) => `- ${name}: ${value}`).join('\n')}

### How it was run

Files, in a fresh temp dir (\`$DIR\`) under \`${options.parentDir}\`, all created sparse: the raw file of
${formatBytes(options.sizeBytes)}; one device file of ${formatBytes(deviceBytes)} for SDS ×1 and one each for the two mirrored SDSs
(the region's ${options.sizeBytes / chunkBytes} chunks plus the SDS's metadata area). The raw file was written once
in full from this script; each SDS volume region was written once in full through its SDSs
(1 MiB writes, ${fillDepth} in flight), after which each SDS reported every chunk held (twice when
mirrored). Every file was then synced, dropped from the page cache and read back whole with
fio (\`--cache-fill ${options.cacheFill}\`); before every run the bench waited for a quiet machine,
synced all files and read the target's files whole again the same way:

\`\`\`
${placeholder(`fio ${fillArgs(rawFile, options.sizeBytes, options.cacheFill, true).join(' ')}`)}
${placeholder(`fio ${fillArgs(rawFile, options.sizeBytes, options.cacheFill, false).join(' ')}`)}
\`\`\`

SDSs (ports picked by the kernel; default 16 libuv IO threads; chunk size 1 MiB):

\`\`\`
${sdsCommands.map(placeholder).join('\n')}
\`\`\`

Placement map, installed over the wire (SetMap, as role \`mdm\`) on each SDS: pool
\`${poolId}\`, ${pgCount} placement groups of 1 MiB chunks; for the pair, group i has primary sds-a
(i even) or sds-b (i odd) and the other as secondary. The volume tree is \`${vtreeId}\`. The
load generator (role \`sdc\`) keeps QD requests in flight (one reused buffer each), picks
4k offsets uniformly at random over the region (mulberry32, seed ${seedBase} + 16 × round +
pattern index) or walks it in 1M steps, and sends each request to the primary of its
chunk's placement group (64 groups: each request lies inside one chunk). After every run
the SDSs' device counters are checked: every request completed has reached a device
(twice for mirrored writes).

fio on the raw file (${options.runtimeSeconds} s measured after ${options.rampSeconds} s ramp; libaio, buffered, one job at the
pattern's depth — the SDS's device files are buffered too; see fioArgs in the script for
why not psync with 32 jobs):

\`\`\`
${fioLines.map(placeholder).join('\n')}
\`\`\`

### Where it falls short and why

${analysisMarkers(options.io).analysisStart}
${analysis ?? '_Not written yet. This part is kept across re-runs of the script (between the analysis markers); check it still matches the numbers above._'}
${analysisMarkers(options.io).analysisEnd}
`;
}

/** One line of progress: the result and what the machine did meanwhile. */
function describeResult(pattern, targetName, result) {
  return (
    `${formatValue(pattern.metric, result[pattern.metric]).padStart(8)} ${unitOf(pattern).padEnd(5)}` +
    ` p50 ${formatUs(result.p50Us)} µs p99 ${formatUs(result.p99Us)} µs` +
    `${result.serverCpuPercent === null ? '' : `, SDS CPU ${result.serverCpuPercent.toFixed(0)}%`}` +
    `, ${targetName === 'raw' ? 'fio' : 'client'} CPU ${result.clientCpuPercent.toFixed(0)}%` +
    `, rest of machine ${result.restCpuPercent.toFixed(0)}%${result.disturbed ? ' (DISTURBED: other load on the machine)' : ''}`
  );
}

// --- main ------------------------------------------------------------------------------

async function main() {
  const parsed = optionsOrExitCode('bench-sds', parseOptions, usage);
  if (parsed.exitCode !== undefined) return parsed.exitCode;
  const { options } = parsed;
  handleSignals({
    onInterrupt: () => {
      if (activeLoad !== null) activeLoad.stop = true;
    },
  });

  const startedAt = new Date().toISOString();
  const machine = describeMachine(options.parentDir);
  let workDir = null;
  const sdsList = [];
  const targets = {};
  // Last resort for paths that skip the finally below (process.exit on a second signal, an
  // uncaught exception): nothing we started outlives us, and no temp files are left.
  process.on('exit', () => {
    killRunning('SIGKILL');
    if (workDir !== null) fs.rmSync(workDir, { recursive: true, force: true });
  });
  try {
    checkRoom(options, machine);
    workDir = fs.mkdtempSync(path.join(options.parentDir, 'meshblock-bench-sds-'));
    const secretFile = path.join(workDir, 'cluster.secret');
    fs.writeFileSync(secretFile, `${clusterSecret.toString()}\n`, { mode: 0o600 });
    const rawFile = path.join(workDir, 'raw.img');
    const deviceBytes = deviceBytesFor(options.sizeBytes);
    createSparseFile(rawFile, options.sizeBytes);
    const devices = { solo: path.join(workDir, 'sds-solo.img'), a: path.join(workDir, 'sds-a.img'), b: path.join(workDir, 'sds-b.img') };
    for (const device of Object.values(devices)) createSparseFile(device, deviceBytes);

    for (const [name, device] of [['sds-solo', devices.solo], ['sds-a', devices.a], ['sds-b', devices.b]]) {
      sdsList.push(await startSds({ name, device, workDir, secretFile, io: options.io }));
    }
    for (const sds of sdsList) process.stderr.write(`SDS ${sds.name} (${sds.sdsId}) ready at ${sds.address}\n`);
    targets.single = await connectTarget('single', [sdsList[0]], options.sizeBytes);
    targets.mirrored = await connectTarget('mirrored', [sdsList[1], sdsList[2]], options.sizeBytes);

    process.stderr.write(`writing the ${formatBytes(options.sizeBytes)} region of every target once\n`);
    await fillRawFile(rawFile, options.sizeBytes);
    await fillVolume(targets.single, options.sizeBytes);
    await fillVolume(targets.mirrored, options.sizeBytes);
    const allFiles = [rawFile, ...targets.single.files, ...targets.mirrored.files];
    await syncFiles(allFiles);
    if (options.io === 'buffered') for (const file of allFiles) await fillPageCache(file, options.cacheFill, true);

    const context = { options, machine, targets, rawFile, allFiles };
    const runs = patterns.map(() => []);
    for (let round = 1; round <= options.roundCount; round++) {
      for (const [patternIndex, pattern] of patterns.entries()) {
        for (const targetName of targetNames) {
          let result;
          for (let attempt = 0; attempt <= disturbedRetryCount; attempt++) {
            result = await runOne(targetName, pattern, context, round);
            process.stderr.write(`round ${round}/${options.roundCount} ${pattern.id.padEnd(17)} ${targetTitles[targetName].padEnd(14)} ${describeResult(pattern, targetName, result)}\n`);
            if (!result.disturbed) break;
            if (attempt < disturbedRetryCount) process.stderr.write(`other load disturbed that run: repeating it (${attempt + 1}/${disturbedRetryCount})\n`);
          }
          runs[patternIndex].push({ target: targetName, round, result });
        }
      }
    }

    const summaries = patterns.map((pattern, index) => summarize(pattern, runs[index]));
    const machineText = machineLines(machine).map(([name, value]) => `${name}: ${value}`).join('\n');
    const tables = [resultRows(summaries), costRows(summaries), roundRows(summaries)].map(textTable).join('\n\n');
    process.stdout.write(`\nSDS benchmark: ratio = SDS / raw file (1.00 = as fast as the file)\n\n${machineText}\n\n${tables}\n`);
    if (options.outPath !== null) {
      const sdsCommands = sdsList.map((sds) => sds.command.join(' '));
      writeSection(options.outPath, { heading: sectionHeadings[options.io], ...analysisMarkers(options.io) }, (analysis) => markdownSection({ options, machine, summaries, startedAt, sdsCommands, rawFile, workDir, analysis }));
      process.stdout.write(`\nwrote the '${sectionHeadings[options.io].slice(3)}' section of ${options.outPath}\n`);
    }
    return 0;
  } catch (err) {
    if (interruptedSignal() !== null) return interruptedExitCode();
    // A wire error is usually the symptom of an SDS that died: say which, and what it logged.
    const died = sdsList.find((sds) => sds.state.exited);
    if (died !== undefined && !(err instanceof BenchError && err.code === 'SDS')) process.stderr.write(`bench-sds: ${sdsFailure(died).message}\n`);
    process.stderr.write(`bench-sds: ${err instanceof BenchError ? err.message : (err?.stack ?? String(err))}\n`);
    return exitRuntimeError;
  } finally {
    for (const target of Object.values(targets)) closeTarget(target);
    await Promise.all(sdsList.map((sds) => stopTracked(sds, sdsStopMs, `SDS ${sds.name}`)));
    // Anything still running (an SDS that never became ready, a fio being killed).
    killRunning('SIGKILL');
    if (workDir !== null) fs.rmSync(workDir, { recursive: true, force: true });
    workDir = null;
  }
}

process.exitCode = await main();
