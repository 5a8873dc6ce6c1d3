#!/usr/bin/env node
// Benchmark: what the chunk store's integrity costs (issue 21), each cost against the same
// lab without it, in one run. src/sds/chunk-store.ts keeps a CRC-32C per 4 KiB block, checked
// on every read, and allocates a chunk in the power-safe order: the slot's first content,
// fdatasync, then its entry. An SDS started with MESHBLOCK_SDS_BENCH_WITHOUT=checksums or
// =safe-allocation (src/cli/sds-start.ts) skips one of them; `lab up` passes its environment
// to the daemons it starts, so a lab started with the variable set is the reference side.
//
// What it measures, and how:
// 1. Checksums: lab "with" (default) and lab "without" (MESHBLOCK_SDS_BENCH_WITHOUT=checksums)
//    up side by side, each volume's --size region written in full first (so every chunk is
//    allocated and every read is of data, checked or not), then fio (nbd engine, one job,
//    time-based): 4k random read QD32, 4k random write QD32 (pure writes, not bench-lab's 70/30
//    mix, so each direction's cost is seen alone), 1M sequential read QD4, 1M sequential write
//    QD4. The runs alternate the two labs (the first side swapped every round), --rounds
//    times; each side's number is the median. The CPU time of the SDS processes (utime +
//    stime from /proc, the three summed) is sampled inside fio's measured window and given
//    per IO: that is where the checksums are computed.
// 2. Power-safe allocation: lab "safe" (the same default lab) and lab "unsafe"
//    (MESHBLOCK_SDS_BENCH_WITHOUT=safe-allocation). Every run writes a thin volume that was
//    never written (one per run and side, created by `lab up --volume`): fio --rw=write:SKIP
//    --bs=4k with SKIP = chunk size - 4 KiB, so each 4 KiB write is the first write of its own
//    chunk, --first-writes of them (io_size caps the run: fio would wrap around and rewrite),
//    at QD1 and QD16. Then, for context, the same job again at once on the same volume: every
//    chunk is then allocated, so these are rewrites (on the safe lab of slots that may have
//    been closed meanwhile, which a write re-opens with an fdatasync: see the report). IOPS,
//    completion latency p50/p99 and SDS CPU per IO, medians over rounds.
//    While part 2 runs the "without checksums" lab is down, and part 1 runs before the
//    "unsafe" lab is up: an idle lab still heartbeats, and the machine has 2 cores.
// Before every run the bench waits (bounded) for a quiet machine and flags runs during which
// other processes used more than a fifth of a core (bench-common, bench-labs).
//
// Exit codes: 0 done, 1 a lab failed or fio reported an error, 2 bad usage, 128+N interrupted
// by signal N. Every lab is stopped and purged (`lab down --purge`) and the temp dir removed
// on every path out.
//
// Usage: node scripts/bench-integrity.mjs [--size 1G] [--runtime 10] [--ramp-time 2] [--rounds 3]
//          [--first-writes 1024] [--out docs/benchmarks.md] [--dir /tmp] [--shared-network] [--quick]

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { GiB, KiB, MiB, formatBytes } from '../dist/common/units.js';
import { chunkBytesDefault, slotCloseIdleMs } from '../dist/common/limits.js';
import {
  BenchError,
  checkPaths,
  describeBuild,
  disturbedPercentMin,
  exitRuntimeError,
  firstLine,
  freeLoopbackPort,
  interruptedExitCode,
  killRunning,
  markdownTable,
  median,
  parseInteger,
  parseSharedOptions,
  sharedOptionSpecs,
  textTable,
  throwIfInterrupted,
  writeSection,
} from './bench-common.mjs';
import {
  describeMachine,
  fioArgs,
  formatUs,
  formatValue,
  inOwnNetwork,
  labAlive,
  labBenchOptions,
  labDirsUp,
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

const sizeBytesMin = 64 * MiB;
/** The lab's devices are at least this big (sparse files: only what is written takes space). */
const labDeviceBytesMin = 2 * GiB;
/** Devices get this much more than the copies they are to hold: placement is not exactly even. */
const labDeviceSlack = 2;
/** The lab's SDSs use the default chunk size: a write at every chunkBytes is a first write. */
const chunkBytes = chunkBytesDefault;
const firstWriteBytes = 4 * KiB;
const copyCount = 2;
const sdsCount = 3;
const withoutVariable = 'MESHBLOCK_SDS_BENCH_WITHOUT';
/** What the SDS logs at start when the variable is set (src/cli/sds-start.ts). */
const withoutLogged = `${withoutVariable} is set`;
const volumeName = 'vol1';

const checksumPatterns = [
  { id: 'randread-4k-qd32', title: '4k random read, QD32', fio: ['--rw=randread', '--bs=4k', '--iodepth=32'], metric: 'iops', latency: 'read' },
  { id: 'randwrite-4k-qd32', title: '4k random write, QD32', fio: ['--rw=randwrite', '--bs=4k', '--iodepth=32'], metric: 'iops', latency: 'write' },
  { id: 'read-1m-qd4', title: '1M sequential read, QD4', fio: ['--rw=read', '--bs=1M', '--iodepth=4'], metric: 'mbps', latency: 'read' },
  { id: 'write-1m-qd4', title: '1M sequential write, QD4', fio: ['--rw=write', '--bs=1M', '--iodepth=4'], metric: 'mbps', latency: 'write' },
];
const allocationDepths = [1, 16];
const allocationJobs = [
  { id: 'first', title: 'first writes (each allocates a chunk)' },
  { id: 'rewrite', title: 'rewrites of the same blocks (chunks allocated)' },
];

/** The labs: `without` is MESHBLOCK_SDS_BENCH_WITHOUT's value (null: not set). */
const labKinds = {
  default: { name: 'default', without: null },
  noChecksums: { name: 'without-checksums', without: 'checksums' },
  unsafe: { name: 'without-safe-allocation', without: 'safe-allocation' },
};

const sectionHeading = '## Lab benchmark: the cost of checksums at rest and power-safe allocation';
const analysisStart = '<!-- integrity-analysis:start -->';
const analysisEnd = '<!-- integrity-analysis:end -->';

const usage = `Usage: node scripts/bench-integrity.mjs [options]

Measures what the chunk store's checksums and its power-safe allocation cost: fio (nbd engine)
against a default lab and, alternating, against the same lab with its SDSs started with
${withoutVariable}=checksums, then =safe-allocation.

  --size SIZE          region of the checksum runs, written in full first (binary units)
                       [default: 1G; --quick: 256M]
  --runtime SECONDS    measured time per checksum run [default: 10; --quick: 3]
  --ramp-time SECONDS  unmeasured warm-up per checksum run [default: 2; --quick: 1]
  --rounds N           alternations per pattern; results are medians [default: 3; --quick: 1]
  --first-writes N     4 KiB first writes (chunks allocated) per allocation run
                       [default: 1024; --quick: 128]
  --out FILE           also write the report as a Markdown section '${sectionHeading.slice(3)}'
                       of FILE, in place (or at the end), keeping the rest and the hand-written analysis
  --dir DIR            where the temp dir (the labs) goes [default: ${os.tmpdir()}]
  --shared-network     run in this network namespace (as root the bench re-runs itself in a
                       new one, so that no other lab on the machine can take the labs' ports)
  --quick              smoke test: the --quick defaults above
  -h, --help           this text
`;

// --- arguments -------------------------------------------------------------------------

/** The options, validated by name and range; null for --help. */
function parseOptions(argv) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: { ...sharedOptionSpecs, 'first-writes': { type: 'string' }, 'shared-network': { type: 'boolean', default: false } },
  });
  if (values.help) return null;
  const options = {
    ...parseSharedOptions(values, { sizeText: '1G', sizeTextQuick: '256M', rounds: '3', roundsQuick: '1', sizeBytesMin }),
    firstWriteCount: parseInteger('--first-writes', values['first-writes'] ?? (values.quick ? '128' : '1024'), 16, 65_536),
    sharedNetwork: values['shared-network'],
  };
  checkPaths(values, options);
  return options;
}

// --- the labs --------------------------------------------------------------------------

/** The fresh volumes of the allocation runs: one per round, depth and lab. */
function allocationVolumes(options) {
  const volumes = [];
  for (let round = 1; round <= options.roundCount; round++) {
    for (const depth of allocationDepths) volumes.push({ name: `first-qd${depth}-r${round}`, sizeBytes: options.firstWriteCount * chunkBytes, round, depth });
  }
  return volumes;
}

/** Room on each SDS for two copies of every volume's written chunks, with slack. */
function deviceBytes(volumes) {
  const writtenBytes = volumes.reduce((sum, volume) => sum + volume.sizeBytes, 0);
  const perSdsBytes = Math.ceil((labDeviceSlack * copyCount * writtenBytes) / sdsCount / GiB) * GiB;
  return Math.max(labDeviceBytesMin, perSdsBytes);
}

/** `lab up` of one kind, its SDSs started with or without MESHBLOCK_SDS_BENCH_WITHOUT; checks they took it. */
async function startLab(kind, labDir, volumes) {
  const port = await freeLoopbackPort();
  const extra = ['--detach', '--nbd-port', String(port), '--device-size', `${deviceBytes(volumes) / MiB}MiB`, ...volumes.flatMap((volume) => ['--volume', `${volume.name}:${volume.sizeBytes / MiB}MiB`])];
  const env = { ...process.env };
  delete env[withoutVariable];
  if (kind.without !== null) env[withoutVariable] = kind.without;
  const state = await labUp(labDir, extra, { name: kind.name, spawnOptions: { env } });
  throwIfInterrupted();
  const uris = Object.fromEntries(volumes.map((volume) => [volume.name, labVolumeUri(state.stdout, volume.name, kind.name)]));
  const status = await labStatus(labDir, kind.name);
  checkWithout(kind, labDir);
  const sdsPids = status.processes.filter((entry) => entry.role === 'sds').map((entry) => entry.pid);
  const sdcPids = status.processes.filter((entry) => entry.role === 'sdc').map((entry) => entry.pid);
  return {
    name: kind.name,
    kind,
    dir: labDir,
    uris,
    uri: uris[volumeName] ?? null,
    status,
    pids: () => ({ sds: sdsPids, sdc: sdcPids }),
    command: `${kind.without === null ? '' : `${withoutVariable}=${kind.without} `}node bin/meshblock.cjs lab up --dir $DIR ${extra.join(' ').replace(`--nbd-port ${port}`, '--nbd-port PORT')}`,
  };
}

/**
 * A reference that is not what it claims would make every ratio a lie: every SDS of a lab
 * started with the variable must have said so in its log, and none of a default lab.
 */
function checkWithout(kind, labDir) {
  const logDir = path.join(labDir, 'logs');
  const sdsLogs = fs.readdirSync(logDir).filter((name) => name.startsWith('sds'));
  const saying = sdsLogs.filter((name) => fs.readFileSync(path.join(logDir, name), 'utf8').includes(withoutLogged)).length;
  const expected = kind.without === null ? 0 : sdsCount;
  if (sdsLogs.length !== sdsCount || saying !== expected) {
    throw new BenchError('SERVER', `lab ${kind.name}: ${saying} of ${sdsLogs.length} SDS logs in ${logDir} say '${withoutLogged}', expected ${expected} of ${sdsCount}`);
  }
}

function checkAlive(lab) {
  if (!labAlive(lab)) throw new BenchError('SERVER', `a process of lab ${lab.name} died; logs in ${lab.dir}/logs`);
}

// --- the runs --------------------------------------------------------------------------

function disturbedText(result) {
  return result.disturbed ? ' (DISTURBED: other load on the machine)' : '';
}

function sdsUsPerIo(result) {
  return result.roles.sds.usPerIo;
}

/** 1. The checksum patterns, alternating the two labs, the first side swapped every round. */
async function measureChecksums(sides, options, machine) {
  const runs = [];
  for (let round = 1; round <= options.roundCount; round++) {
    const ordered = round % 2 === 1 ? sides : [...sides].reverse();
    for (const pattern of checksumPatterns) {
      for (const side of ordered) {
        checkAlive(side);
        const result = await runFio(pattern, side, options, machine);
        runs.push({ pattern, side: side.name, result });
        process.stderr.write(
          `checksums round ${round}/${options.roundCount} ${pattern.id.padEnd(17)} ${side.name.padEnd(17)} ${formatValue(pattern.metric, result[pattern.metric])} ${unit(pattern)}, ` +
            `SDS CPU ${sdsUsPerIo(result).toFixed(1)} µs per IO${disturbedText(result)}\n`,
        );
      }
    }
  }
  return runs;
}

function allocationArgs(name, uri, depth, options) {
  return [
    `--name=${name}`,
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=write:${chunkBytes - firstWriteBytes}`,
    `--bs=${firstWriteBytes}`,
    `--iodepth=${depth}`,
    `--size=${options.firstWriteCount * chunkBytes}`,
    // Without it fio wraps around at the end of the region and rewrites what it wrote.
    `--io_size=${options.firstWriteCount * firstWriteBytes}`,
    '--numjobs=1',
    '--output-format=json',
  ];
}

/**
 * 2. Per round and depth, each lab writes its own fresh volume (first writes), then the same
 * job again on it (rewrites); the lab that goes first is swapped every round.
 */
async function measureAllocation(sides, volumes, options, machine) {
  const runs = [];
  for (const volume of volumes) {
    const ordered = volume.round % 2 === 1 ? sides : [...sides].reverse();
    for (const side of ordered) {
      for (const job of allocationJobs) {
        checkAlive(side);
        const pattern = {
          id: `${job.id}-qd${volume.depth}`,
          latency: 'write',
          metric: 'iops',
          args: (uri) => allocationArgs(`${job.id}-qd${volume.depth}`, uri, volume.depth, options),
        };
        const result = await runFio(pattern, { ...side, uri: side.uris[volume.name] }, options, machine);
        runs.push({ job, depth: volume.depth, side: side.name, result });
        process.stderr.write(
          `allocation round ${volume.round}/${options.roundCount} ${pattern.id.padEnd(11)} ${side.name.padEnd(23)} ${formatValue('iops', result.iops)} IOPS, ` +
            `p50 ${formatUs(result.p50Us)} µs p99 ${formatUs(result.p99Us)} µs, SDS CPU ${sdsUsPerIo(result).toFixed(1)} µs per IO${disturbedText(result)}\n`,
        );
      }
    }
  }
  return runs;
}

// --- results ---------------------------------------------------------------------------

function unit(pattern) {
  return pattern.metric === 'iops' ? 'IOPS' : 'MB/s';
}

function ratioText(mine, reference) {
  return mine === null || reference === null || reference === 0 ? '' : (mine / reference).toFixed(2);
}

/** Medians of one side's runs: value (the pattern's metric), latency, SDS CPU per IO, disturbed count. */
function summarizeSide(results, metric) {
  return {
    value: median(results.map((result) => result[metric])),
    p50Us: median(results.map((result) => result.p50Us)),
    p99Us: median(results.map((result) => result.p99Us)),
    sdsUsPerIo: median(results.map(sdsUsPerIo)),
    disturbedCount: results.filter((result) => result.disturbed).length,
    runCount: results.length,
  };
}

function checksumRows(runs, names) {
  const header = ['Pattern', 'Unit', 'with checksums', 'without', 'with/without', 'SDS CPU µs per IO with', 'without', 'with/without', 'p99 µs with', 'p99 µs without', 'disturbed runs'];
  const rows = checksumPatterns.map((pattern) => {
    const [mine, reference] = names.map((name) => summarizeSide(runs.filter((entry) => entry.pattern === pattern && entry.side === name).map((entry) => entry.result), pattern.metric));
    return [
      pattern.title,
      unit(pattern),
      formatValue(pattern.metric, mine.value),
      formatValue(pattern.metric, reference.value),
      ratioText(mine.value, reference.value),
      mine.sdsUsPerIo.toFixed(1),
      reference.sdsUsPerIo.toFixed(1),
      ratioText(mine.sdsUsPerIo, reference.sdsUsPerIo),
      formatUs(mine.p99Us),
      formatUs(reference.p99Us),
      `${mine.disturbedCount + reference.disturbedCount} of ${mine.runCount + reference.runCount}`,
    ];
  });
  return { header, rows };
}

function allocationRows(runs, names) {
  const header = ['Job (4 KiB writes, one per chunk)', 'QD', 'IOPS safe', 'IOPS unsafe', 'safe/unsafe', 'p50 µs safe', 'p50 µs unsafe', 'p99 µs safe', 'p99 µs unsafe', 'SDS CPU µs per IO safe', 'unsafe', 'disturbed runs'];
  const rows = [];
  for (const job of allocationJobs) {
    for (const depth of allocationDepths) {
      const [mine, reference] = names.map((name) => summarizeSide(runs.filter((entry) => entry.job === job && entry.depth === depth && entry.side === name).map((entry) => entry.result), 'iops'));
      rows.push([
        job.title,
        String(depth),
        formatValue('iops', mine.value),
        formatValue('iops', reference.value),
        ratioText(mine.value, reference.value),
        formatUs(mine.p50Us),
        formatUs(reference.p50Us),
        formatUs(mine.p99Us),
        formatUs(reference.p99Us),
        mine.sdsUsPerIo.toFixed(1),
        reference.sdsUsPerIo.toFixed(1),
        `${mine.disturbedCount + reference.disturbedCount} of ${mine.runCount + reference.runCount}`,
      ]);
    }
  }
  return { header, rows };
}

// --- report ----------------------------------------------------------------------------

function machineText(machine, parentDir) {
  const mount = firstLine('findmnt', ['-n', '-o', 'SOURCE,FSTYPE', '-T', parentDir]).replace(/\s+/g, ' ');
  return (
    `${machine.cpuModel}, ${machine.cpuCount} logical CPUs, ${(os.totalmem() / GiB).toFixed(0)} GiB RAM, ${machine.kernel}, Node.js ${machine.node}, ${machine.fio}; ` +
    `the labs' sparse-file devices in ${parentDir} (on ${mount}; the fdatasyncs of the allocation go to it); meshblock ${machine.meshblock}, ${describeBuild()}`
  );
}

function markdownSection({ options, machine, tables, startedAt, loads, commands, disturbed, elapsedSeconds, analysis }) {
  const argv = process.argv.slice(2).join(' ');
  const checksumFio = checksumPatterns.map((pattern) => `fio ${fioArgs(pattern, 'nbd://127.0.0.1:PORT/vol1', options).join(' ')}`);
  const allocationFio = allocationDepths.map((depth) => `fio ${allocationArgs(`first-qd${depth}`, 'nbd://127.0.0.1:PORT/first-qdN-rR', depth, options).join(' ')}   # twice: first writes, rewrites`);
  return `${sectionHeading}

Generated by \`npm run build && node scripts/bench-integrity.mjs${argv ? ` ${argv}` : ''}\` (\`npm run bench:integrity\`; started ${startedAt}, took ${(elapsedSeconds / 60).toFixed(1)} min).

What the chunk store's integrity costs (src/sds/chunk-store.ts): a CRC-32C per 4 KiB block, written
with the data and checked on every read, and the power-safe allocation (a new chunk's first content,
then an fdatasync, then its slot entry). Each against the same lab without it, in the same run: the
labs' SDSs started with \`${withoutVariable}=checksums\` or \`=safe-allocation\` (a benchmark-only switch;
every SDS's log was checked for its warning). Each lab: \`meshblock lab up\` (MDM, ${sdsCount} SDSs on sparse
files, two copies, one SDC serving NBD), fio's nbd engine, one job. Runs alternate the two labs, the first
side swapped every round; medians of ${options.roundCount} round(s). SDS CPU per IO is the utime + stime of the ${sdsCount} SDS
processes (from /proc) over the measured window, divided by the IOs done (per 1 MiB IO for the 1M patterns).

**Checksums at rest.** Labs "with" (default) and "without" (\`${withoutVariable}=checksums\`), each volume's
${formatBytes(options.sizeBytes)} region written in full first (so every read is of allocated, checksummed data, and every
write a rewrite); ${options.runtimeSeconds} s measured after ${options.rampSeconds} s ramp. 4k writes are pure random writes (not bench-lab's
70/30 mix) so that the write side's cost shows alone. Latency is fio's completion latency.

${markdownTable(tables.checksums)}

**Power-safe allocation.** Labs "safe" (the same default lab) and "unsafe" (\`${withoutVariable}=safe-allocation\`).
Each run writes a thin volume nobody wrote before (a new one per run and lab): ${options.firstWriteCount} writes of 4 KiB,
${formatBytes(chunkBytes)} apart, so every write is the first of its chunk and allocates it on both copies' SDSs.
Then the same job at once on the same volume: the chunks are allocated, so those are rewrites of
the same blocks. On the safe lab a slot whose writes an fdatasync has made durable is closed after
${slotCloseIdleMs / 1000} s idle (slotCloseIdleMs), and a write to a closed slot re-opens it with an
fdatasync first; a run here is shorter than that, so the rewrites find their slots open and are the
cost of a write to an allocated chunk on both labs.

${markdownTable(tables.allocation)}

Machine: ${machineText(machine, options.parentDir)}. Network: ${inOwnNetwork() ? 'a namespace of its own (loopback only)' : "the machine's own"}.
Load average (1/5/15 min) at start ${loads.start}, at the end ${loads.end}; other engineers share this machine:
${disturbed.count === 0 ? `no run saw more than ${disturbedPercentMin}% of a core of other load` : `**${disturbed.count} of ${disturbed.runs} runs saw other load** (more than ${disturbedPercentMin}% of a core, or no quiet start within ${labQuietWaitMsMax / 1000} s); they are counted per row`}.

How it was run:

\`\`\`
${commands.join('\n')}
fio ${prewriteArgs('nbd://127.0.0.1:PORT/vol1', options.sizeBytes).join(' ')}
${checksumFio.join('\n')}
${allocationFio.join('\n')}
\`\`\`

${analysisStart}
${analysis ?? '_Not written yet. Kept across re-runs of the script (between the integrity-analysis markers); check it still matches the numbers above._'}
${analysisEnd}
`;
}

// --- main ------------------------------------------------------------------------------

async function main() {
  const parsed = await labBenchOptions('bench-integrity', parseOptions, usage, import.meta.url);
  if (parsed.exitCode !== undefined) return parsed.exitCode;
  const { options } = parsed;
  const startedMs = performance.now();
  const startedAt = new Date().toISOString();
  const loads = { start: loadAverage(), end: '' };
  const machine = describeMachine();
  const workDir = fs.mkdtempSync(path.join(options.parentDir, 'meshblock-bench-integrity-'));
  const labDir = (kind) => path.join(workDir, kind.name);
  try {
    const checksumVolume = { name: volumeName, sizeBytes: options.sizeBytes };
    const firstVolumes = allocationVolumes(options);
    process.stderr.write(`starting labs ${labKinds.default.name} and ${labKinds.noChecksums.name} in ${workDir}\n`);
    const defaultLab = await startLab(labKinds.default, labDir(labKinds.default), [checksumVolume, ...firstVolumes]);
    const noChecksumsLab = await startLab(labKinds.noChecksums, labDir(labKinds.noChecksums), [checksumVolume]);
    const commands = [defaultLab.command, noChecksumsLab.command];
    for (const lab of [defaultLab, noChecksumsLab]) {
      process.stderr.write(`pre-writing ${formatBytes(options.sizeBytes)} of ${lab.name}'s ${volumeName}\n`);
      await prewriteLab(lab, options.sizeBytes);
    }
    const checksumSides = [defaultLab, noChecksumsLab];
    const checksumRuns = await measureChecksums(checksumSides, options, machine);
    await stopLab(noChecksumsLab.dir);

    process.stderr.write(`starting lab ${labKinds.unsafe.name}\n`);
    const unsafeLab = await startLab(labKinds.unsafe, labDir(labKinds.unsafe), firstVolumes);
    commands.push(unsafeLab.command);
    const allocationSides = [defaultLab, unsafeLab];
    const allocationRuns = await measureAllocation(allocationSides, firstVolumes, options, machine);
    loads.end = loadAverage();
    const elapsedSeconds = (performance.now() - startedMs) / 1000;

    const tables = {
      checksums: checksumRows(checksumRuns, checksumSides.map((side) => side.name)),
      allocation: allocationRows(allocationRuns, allocationSides.map((side) => side.name)),
    };
    const results = [...checksumRuns, ...allocationRuns].map((entry) => entry.result);
    const disturbed = { count: results.filter((result) => result.disturbed).length, runs: results.length };
    process.stdout.write(
      `\nChecksums at rest: ${labKinds.default.name} (with) against ${labKinds.noChecksums.name} (load average ${loads.start} -> ${loads.end})\n${textTable(tables.checksums)}\n` +
        `\nPower-safe allocation: ${labKinds.default.name} (safe) against ${labKinds.unsafe.name} (unsafe)\n${textTable(tables.allocation)}\n` +
        `\n${disturbed.count} of ${disturbed.runs} runs disturbed; took ${(elapsedSeconds / 60).toFixed(1)} min\n`,
    );
    if (options.outPath !== null) {
      writeSection(options.outPath, { heading: sectionHeading, analysisStart, analysisEnd }, (analysis) =>
        markdownSection({ options, machine, tables, startedAt, loads, commands, disturbed, elapsedSeconds, analysis }),
      );
      process.stdout.write(`\nwrote the '${sectionHeading.slice(3)}' section of ${options.outPath}\n`);
    }
    return 0;
  } catch (err) {
    if (err instanceof BenchError && err.code === 'INTERRUPTED') return interruptedExitCode();
    process.stderr.write(`bench-integrity: ${err instanceof BenchError ? err.message : (err?.stack ?? String(err))}\n`);
    return exitRuntimeError;
  } finally {
    killRunning('SIGKILL', { fioOnly: true });
    for (const dir of [...labDirsUp]) await stopLab(dir).catch((err) => process.stderr.write(`bench-integrity: stopping ${dir}: ${err.message}\n`));
    killRunning('SIGKILL');
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
