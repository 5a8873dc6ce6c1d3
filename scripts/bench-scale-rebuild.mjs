#!/usr/bin/env node
// Benchmark: the real rebuild as the cluster grows, next to the simulated one (issue 23,
// "rebuild grows with the cluster"). For each SDS count (3, 4, 5, 6 by default) a lab is
// started (`meshblock lab up`: a real MDM, N real SDSs on small sparse-file devices, one per
// SDS, and the SDC), the same data per SDS is written through NBD (fio, 1 MiB writes: the
// volume holds dataPerSds × N / 2, so each SDS stores about dataPerSds of the two copies),
// one SDS is killed with SIGKILL, and the bench polls the MDM's dashboard (REST, every
// 250 ms, logged in as `lab status` does) until it reports everything protected again (no
// degraded bytes, rebuild idle). It prints a table
// and, as its last line, one JSON object:
//   {"bench":"scale-rebuild","dataPerSdsBytes":…,"rebuildAfterSeconds":…,"runs":[{sds, statusPollSeconds, killToDownSeconds,
//    killToRebuildSeconds, rebuildSeconds, killToProtectedSeconds, bytesRebuilt, rebuildBytesPerSecond, error}],
//    "simulated":[{sds, seconds, …}]}
// where `simulated` is src/sim/rebuild-sim.ts at the same sizes and data, with its rates set
// to what the lab has (one device per SDS; the MDM's default throttle), for comparison.
//
// Every wait is bounded (lab up/down, fio, each status poll, the rebuild); a run that fails
// or does not settle is reported with `error` and nulls, the next size still runs, and the
// JSON line is printed whatever happened. The lab runs with --rebuild-after 2 (copies are
// re-created 2 s after the SDS is declared down; the default is 60 s) and the MDM's default
// rebuild throttle (64 MiB/s and 2 chunk copies in flight per source SDS) unless --rebuild-rate.
//
// Usage: node scripts/bench-scale-rebuild.mjs [--sds 3,4,5,6] [--data-per-sds 256MiB]
//          [--dir /tmp] [--rebuild-rate 64MiB] [--rebuild-timeout 120]
// Exit codes: 0 every run measured, 1 a run failed (the JSON line says which), 2 bad usage,
// 128+N interrupted by signal N. Each lab is stopped and purged on every path out.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { GiB, MiB, formatBytes, parseSizeBytes } from '../dist/common/units.js';
import { connectLab } from '../dist/cli/lab-setup.js';
import { readLabFile } from '../dist/cli/lab-state.js';
import { simulateReprotect } from '../dist/sim/rebuild-sim.js';
import {
  BenchError,
  delay,
  exitRuntimeError,
  exitUsageError,
  freeLoopbackPort,
  handleSignals,
  interruptedExitCode,
  interruptedSignal,
  meshblockBin,
  parseInteger,
  run,
  textTable,
  throwIfInterrupted,
  within,
} from './bench-common.mjs';

const rebuildAfterSeconds = 2;
/** The MDM's dashboard (REST) is asked this often after the kill: every time below is known to within it and one request. */
const statusPollMs = 250;
const labUpTimeoutMs = 120_000;
const labDownTimeoutMs = 60_000;
const statusTimeoutMs = 20_000;
const fioBytesPerSecondMin = 4 * MiB;
/** The lab's devices: one per SDS, data on them this full at most. */
const deviceFillMax = 0.5;

const usage = 'usage: node scripts/bench-scale-rebuild.mjs [--sds 3,4,5,6] [--data-per-sds 256MiB] [--dir DIR] [--rebuild-rate 64MiB] [--rebuild-timeout SECONDS]';

function parseOptions() {
  const { values } = parseArgs({
    options: {
      sds: { type: 'string', default: '3,4,5,6' },
      'data-per-sds': { type: 'string', default: '256MiB' },
      dir: { type: 'string', default: os.tmpdir() },
      'rebuild-rate': { type: 'string' },
      'rebuild-timeout': { type: 'string', default: '120' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    process.exit(0);
  }
  const sdsCounts = values.sds.split(',').map((text) => parseInteger('--sds', text.trim(), 3, 16));
  const dataPerSdsBytes = parseSizeBytes('--data-per-sds', values['data-per-sds']);
  if (dataPerSdsBytes < 16 * MiB || dataPerSdsBytes % MiB !== 0) throw new BenchError('USAGE', '--data-per-sds: whole MiB, at least 16MiB');
  const rebuildRateBytes = values['rebuild-rate'] === undefined ? null : parseSizeBytes('--rebuild-rate', values['rebuild-rate']);
  const rebuildTimeoutMs = parseInteger('--rebuild-timeout', values['rebuild-timeout'], 10, 3600) * 1000;
  if (!fs.existsSync(values.dir)) throw new BenchError('USAGE', `--dir: ${values.dir} does not exist`);
  return { sdsCounts, dataPerSdsBytes, dir: values.dir, rebuildRate: values['rebuild-rate'] ?? null, rebuildRateBytes, rebuildTimeoutMs };
}

let options;
try {
  options = parseOptions();
} catch (err) {
  process.stderr.write(`bench-scale-rebuild: ${err.message}\n${usage}\n`);
  process.exit(exitUsageError);
}

/** The lab being measured, stopped and purged on every path out (and by a second signal). */
let currentLabDir = null;
handleSignals();

function log(line) {
  process.stderr.write(`bench-scale-rebuild: ${line}\n`);
}

async function meshblock(args, timeoutMs, what) {
  const state = await run(process.execPath, [meshblockBin, ...args], timeoutMs);
  if (state.code !== 0) {
    const how = state.signal === 'SIGKILL' ? `did not finish within ${timeoutMs} ms` : `exited with ${state.signal ?? state.code}`;
    throw new BenchError('COMMAND', `${what} ${how}: ${state.stderr.trim().split('\n').slice(-5).join('\n')}`);
  }
  return state.stdout;
}

async function labStatus(labDir) {
  return JSON.parse(await meshblock(['lab', 'status', '--dir', labDir, '--json'], statusTimeoutMs, 'lab status'));
}

async function labDown(labDir) {
  try {
    await meshblock(['lab', 'down', '--dir', labDir, '--purge'], labDownTimeoutMs, 'lab down');
  } catch (err) {
    log(`lab down: ${err.message}`);
  }
  fs.rmSync(labDir, { recursive: true, force: true });
}

/** One size: lab up, write, kill one SDS, wait until protected. Returns the run's numbers (error set on failure). */
async function measure(sdsCount, workDir) {
  const result = { sds: sdsCount, statusPollSeconds: null, killToDownSeconds: null, killToRebuildSeconds: null, rebuildSeconds: null, killToProtectedSeconds: null, bytesRebuilt: null, rebuildBytesPerSecond: null, error: null };
  const labDir = path.join(workDir, `lab-${sdsCount}`);
  currentLabDir = labDir;
  const volumeBytes = (options.dataPerSdsBytes * sdsCount) / 2;
  const deviceBytes = Math.max(GiB, Math.ceil(options.dataPerSdsBytes / deviceFillMax / MiB) * MiB);
  const volumeSizeGiB = Math.max(1, Math.ceil(volumeBytes / GiB));
  let api = null;
  try {
    const nbdPort = await freeLoopbackPort();
    log(`${sdsCount} SDSs: lab up (${formatBytes(deviceBytes)} devices) in ${labDir}`);
    await meshblock(
      ['lab', 'up', '--dir', labDir, '--sds', String(sdsCount), '--device-size', `${deviceBytes / MiB}MiB`, '--volume', `vol1:${volumeSizeGiB}GiB`, '--nbd-port', String(nbdPort), '--rebuild-after', String(rebuildAfterSeconds), ...(options.rebuildRate === null ? [] : ['--rebuild-rate', options.rebuildRate]), '--log-level', 'warn', '--detach'],
      labUpTimeoutMs,
      'lab up',
    );
    throwIfInterrupted();
    log(`${sdsCount} SDSs: writing ${formatBytes(volumeBytes)}`);
    const fioTimeoutMs = 30_000 + (volumeBytes / fioBytesPerSecondMin) * 1000;
    const fio = await run('fio', ['--name=fill', '--ioengine=nbd', `--uri=nbd://127.0.0.1:${nbdPort}/vol1`, '--rw=write', '--bs=1M', '--iodepth=8', `--size=${volumeBytes}`, '--output-format=terse'], fioTimeoutMs, { fio: true });
    if (fio.code !== 0) throw new BenchError('FIO', `fio ${fio.signal === 'SIGKILL' ? `did not finish within ${fioTimeoutMs} ms` : `exited with ${fio.signal ?? fio.code}`}: ${fio.stderr.trim().slice(-500)}`);
    throwIfInterrupted();

    const before = await labStatus(labDir);
    if (before.health === null) throw new BenchError('MDM', `the MDM does not answer: ${before.lab.mdmError}`);
    if (before.health.degradedBytes !== 0 || before.health.rebuild.state !== 'idle') throw new BenchError('NOT_PROTECTED', `the lab is not fully protected before the kill: ${JSON.stringify(before.health.rebuild)}`);
    const victim = before.processes.find((entry) => entry.role === 'sds' && entry.pid !== null && entry.name === `sds${sdsCount}`) ?? before.processes.find((entry) => entry.role === 'sds' && entry.pid !== null);
    if (victim === undefined) throw new BenchError('NO_SDS', 'no running SDS to kill');
    const bytesBefore = before.health.rebuild.bytesDone;
    const lab = readLabFile(labDir);
    if (lab === null) throw new BenchError('NO_LAB', `${labDir} holds no lab`);
    api = await within(connectLab(lab), statusTimeoutMs, 'logging in to the lab MDM');
    const dashboard = () => within(api.get('/api/dashboard'), statusTimeoutMs, 'GET /api/dashboard');
    const killedAt = Date.now();
    process.kill(victim.pid, 'SIGKILL');
    log(`${sdsCount} SDSs: killed ${victim.name} (pid ${victim.pid})`);
    let downAt = null;
    let runningAt = null;
    let protectedAt = null;
    let last = null;
    let polls = 0;
    while (Date.now() - killedAt < options.rebuildTimeoutMs) {
      throwIfInterrupted();
      await delay(statusPollMs);
      last = await dashboard();
      polls += 1;
      // Each time below is known to within one poll.
      result.statusPollSeconds = Number(((Date.now() - killedAt) / 1000 / polls).toFixed(2));
      if (downAt === null && last.health.sdsDown > 0) downAt = Date.now();
      if (runningAt === null && last.health.rebuild.state === 'running') runningAt = Date.now();
      if (runningAt !== null && last.health.rebuild.state === 'idle' && last.health.degradedBytes === 0) {
        protectedAt = Date.now();
        break;
      }
    }
    const seconds = (atMs) => (atMs === null ? null : Number(((atMs - killedAt) / 1000).toFixed(1)));
    result.killToDownSeconds = seconds(downAt);
    result.killToRebuildSeconds = seconds(runningAt);
    result.killToProtectedSeconds = seconds(protectedAt);
    if (last !== null) result.bytesRebuilt = last.health.rebuild.bytesDone - bytesBefore;
    if (protectedAt === null) {
      throw new BenchError('TIMEOUT', `not protected again ${options.rebuildTimeoutMs / 1000} s after the kill: ${JSON.stringify(last?.health?.rebuild ?? null)}`);
    }
    result.rebuildSeconds = Number(((protectedAt - runningAt) / 1000).toFixed(1));
    result.rebuildBytesPerSecond = result.rebuildSeconds > 0 ? Math.round(result.bytesRebuilt / result.rebuildSeconds) : null;
  } catch (err) {
    result.error = err.message;
    log(`${sdsCount} SDSs: ${err.message}`);
  } finally {
    await api?.close().catch(() => undefined);
    await labDown(labDir);
    currentLabDir = null;
  }
  return result;
}

/** The simulator at the lab's sizes: one device per SDS, the lab's data, its throttle and rebuild-after. */
function simulated(sdsCount) {
  try {
    const sim = simulateReprotect({
      sdsCount,
      devicesPerSds: 1,
      dataBytesPerSds: options.dataPerSdsBytes,
      deviceFillRatio: deviceFillMax,
      health: { rebuildAfterMs: rebuildAfterSeconds * 1000, ...(options.rebuildRateBytes === null ? {} : { rebuildBytesPerSecondMax: options.rebuildRateBytes }) },
    });
    return { sds: sdsCount, seconds: Number(sim.seconds.toFixed(1)), secondsFromFailure: Number(sim.secondsFromFailure.toFixed(1)), bytesToRebuild: Math.round(sim.bytesToRebuild), copiesLost: sim.copiesLost };
  } catch (err) {
    return { sds: sdsCount, seconds: null, secondsFromFailure: null, bytesToRebuild: null, copiesLost: null, error: err.message };
  }
}

const secondsText = (value, digits = 1) => (value === null ? '-' : value.toFixed(digits));

async function main() {
  const workDir = fs.mkdtempSync(path.join(options.dir, 'meshblock-bench-scale-rebuild-'));
  const runs = [];
  try {
    for (const sdsCount of options.sdsCounts) {
      if (interruptedSignal() !== null) break;
      runs.push(await measure(sdsCount, workDir));
    }
  } finally {
    if (currentLabDir !== null) await labDown(currentLabDir);
    fs.rmSync(workDir, { recursive: true, force: true });
  }
  const sims = options.sdsCounts.map(simulated);
  const table = textTable({
    header: ['SDSs', 'poll s', 'kill→down s', 'kill→rebuild s', 'rebuild s', 'kill→protected s', 'rebuilt', 'MiB/s', 'simulated rebuild s', 'simulated kill→protected s', 'error'],
    rows: runs.map((entry) => {
      const sim = sims.find((candidate) => candidate.sds === entry.sds);
      return [
        String(entry.sds),
        secondsText(entry.statusPollSeconds, 2),
        secondsText(entry.killToDownSeconds),
        secondsText(entry.killToRebuildSeconds),
        secondsText(entry.rebuildSeconds),
        secondsText(entry.killToProtectedSeconds),
        entry.bytesRebuilt === null ? '-' : formatBytes(entry.bytesRebuilt),
        entry.rebuildBytesPerSecond === null ? '-' : (entry.rebuildBytesPerSecond / MiB).toFixed(1),
        secondsText(sim?.seconds ?? null),
        secondsText(sim?.secondsFromFailure ?? null),
        entry.error === null ? '' : entry.error.split('\n')[0].slice(0, 60),
      ];
    }),
  });
  process.stdout.write(`rebuild after one SDS killed, ${formatBytes(options.dataPerSdsBytes)} of data per SDS (two copies), one sparse-file device per SDS, rebuild-after ${rebuildAfterSeconds} s, ${os.cpus().length} CPUs\n${table}\n`);
  process.stdout.write(`${JSON.stringify({ bench: 'scale-rebuild', dataPerSdsBytes: options.dataPerSdsBytes, rebuildAfterSeconds, runs, simulated: sims })}\n`);
  return runs.every((entry) => entry.error === null) && runs.length === options.sdsCounts.length;
}

let exitCode;
try {
  exitCode = (await main()) ? 0 : exitRuntimeError;
} catch (err) {
  process.stderr.write(`bench-scale-rebuild: ${err.message}\n`);
  exitCode = exitRuntimeError;
}
if (interruptedSignal() !== null) exitCode = interruptedExitCode();
process.exit(exitCode);
