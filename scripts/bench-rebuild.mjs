#!/usr/bin/env node
// Benchmark: what happens when a host dies. A lab of 4 SDSs (two copies) is filled with
// --data bytes; fio measures 4k random reads at depth 8 (the baseline); then one SDS is
// killed (SIGKILL) while fio reads on, and the bench follows `lab status --json` until the
// lost copies are re-created on the other three: the client's stall at the failure (fio's
// worst latency), the time to declare the SDS down and out, the rebuild's bytes, duration
// and rate, and the client's IOPS during the rebuild next to the baseline.
//
// The lab runs with --rebuild-after 5 (copies are re-created 5 s after the SDS is declared
// down; the default is 60 s) and the MDM's default rebuild throttle (64 MiB/s and 2 chunk
// copies in flight per source SDS), unless --rebuild-rate is given.
//
// Usage: node scripts/bench-rebuild.mjs [--data 2G] [--dir /tmp] [--rebuild-rate 64MiB]
// Exit codes: 0 done, 1 a step failed, 2 bad usage. The lab is stopped and purged on every path out.

import { spawn, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { GiB, MiB, formatBytes, parseSizeBytes } from '../dist/common/units.js';
import { delay, exitRuntimeError, exitUsageError, meshblockBin } from './bench-common.mjs';

const nbdPort = 10870;
const rebuildAfterSeconds = 5;
const statusPollMs = 500;
const rebuildTimeoutMs = 15 * 60_000;

const { values } = parseArgs({ options: { data: { type: 'string', default: '2G' }, dir: { type: 'string', default: os.tmpdir() }, 'rebuild-rate': { type: 'string' } } });
let dataBytes;
try {
  dataBytes = parseSizeBytes('--data', values.data);
} catch (err) {
  process.stderr.write(`bench-rebuild: ${err.message}\n`);
  process.exit(exitUsageError);
}
const deviceBytes = Math.max(4 * GiB, Math.ceil((dataBytes * 2) / 3 / GiB + 1) * GiB);
const dir = fs.mkdtempSync(path.join(values.dir, 'meshblock-bench-rebuild-'));
const labDir = path.join(dir, 'lab');
const uri = `nbd://127.0.0.1:${nbdPort}/vol1`;

function meshblock(args) {
  return execFileSync(process.execPath, [meshblockBin, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function status() {
  return JSON.parse(meshblock(['lab', 'status', '--dir', labDir, '--json']));
}

/** Runs fio (nbd engine); `done` resolves with its JSON report's first job; `stop()` ends a time-based run early. */
function fioRun(args) {
  let child;
  let stopped = false;
  const done = new Promise((resolve, reject) => {
    child = spawn('fio', ['--name=bench', '--ioengine=nbd', `--uri=${uri}`, '--output-format=json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk) => (out += chunk));
    child.stderr.on('data', (chunk) => (err += chunk));
    child.on('close', (code) => {
      // fio stopped by a signal still prints its report (and exits non-zero).
      if (code !== 0 && !(stopped && out.includes('{'))) return reject(new Error(`fio ${args.join(' ')} failed (${code}): ${err.slice(-500)}`));
      const json = JSON.parse(out.slice(out.indexOf('{')));
      resolve(json.jobs[0]);
    });
  });
  return {
    done,
    stop: () => {
      stopped = true;
      child.kill('SIGINT');
    },
  };
}

const fio = (args) => fioRun(args).done;

const randRead = (seconds) => ['--rw=randread', '--bs=4k', '--iodepth=8', `--size=${dataBytes}`, '--time_based', `--runtime=${seconds}`];
const mib = (bytes) => (bytes / MiB).toFixed(0);

async function main() {
  process.stderr.write(`bench-rebuild: lab of 4 SDSs (${formatBytes(deviceBytes)} devices) in ${labDir}\n`);
  meshblock(['lab', 'up', '--dir', labDir, '--sds', '4', '--device-size', `${deviceBytes / MiB}MiB`, '--volume', `vol1:${Math.max(8, Math.ceil(dataBytes / GiB) + 1)}GiB`, '--nbd-port', String(nbdPort), '--rebuild-after', String(rebuildAfterSeconds), ...(values['rebuild-rate'] === undefined ? [] : ['--rebuild-rate', values['rebuild-rate']]), '--detach']);
  process.stderr.write(`bench-rebuild: writing ${formatBytes(dataBytes)}\n`);
  await fio(['--rw=write', '--bs=1M', '--iodepth=8', `--size=${dataBytes}`]);
  const baseline = await fio(randRead(10));

  const victim = status().processes.find((entry) => entry.role === 'sds' && entry.name === 'sds2');
  const before = status().health.rebuild.bytesDone;
  const iopsLog = path.join(dir, 'during');
  const during = fioRun(randRead(600).concat([`--write_iops_log=${iopsLog}`, '--log_avg_msec=1000']));
  during.done.catch(() => undefined);
  const readsRunning = Date.now();
  await delay(3000);
  const killedAt = Date.now();
  process.kill(victim.pid, 'SIGKILL');
  process.stderr.write(`bench-rebuild: killed sds2 (pid ${victim.pid})\n`);
  let downAt = null;
  let runningAt = null;
  let doneAt = null;
  let last = null;
  while (Date.now() - killedAt < rebuildTimeoutMs) {
    await delay(statusPollMs);
    last = status();
    const sds = last.processes.find((entry) => entry.name === 'sds2');
    if (downAt === null && sds?.clusterState === 'Down') downAt = Date.now();
    if (runningAt === null && last.health.rebuild.state === 'running') runningAt = Date.now();
    if (runningAt !== null && last.health.rebuild.state === 'idle' && last.health.degradedBytes === 0) {
      doneAt = Date.now();
      break;
    }
  }
  if (doneAt === null) throw new Error(`the rebuild did not finish within ${rebuildTimeoutMs / 60_000} minutes: ${JSON.stringify(last?.health)}`);
  // fio was started time-based: stop it now that the rebuild is over.
  during.stop();
  const under = await during.done;
  const copied = last.health.rebuild.bytesDone - before;
  // fio's per-second IOPS log (ms since its start, IOPS): the rebuild's window alone.
  const perSecond = fs
    .readFileSync(`${iopsLog}_iops.1.log`, 'utf8')
    .trim()
    .split('\n')
    .map((line) => line.split(',').map((field) => Number(field.trim())))
    .map(([ms, iops]) => ({ atMs: readsRunning + ms, iops }));
  const inRebuild = perSecond.filter((sample) => sample.atMs >= runningAt && sample.atMs <= doneAt);
  const rebuildIops = inRebuild.reduce((sum, sample) => sum + sample.iops, 0) / Math.max(1, inRebuild.length);
  const rebuildSeconds = (doneAt - runningAt) / 1000;
  const baseIops = baseline.read.iops;
  const lines = [
    `rebuild after one of 4 SDSs died, ${formatBytes(dataBytes)} of data (two copies), ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'})`,
    `  declared down after     ${downAt === null ? '?' : ((downAt - killedAt) / 1000).toFixed(1)} s (sds-down-after 3 s, polled every ${statusPollMs} ms)`,
    `  rebuild started after   ${((runningAt - killedAt) / 1000).toFixed(1)} s (rebuild-after ${rebuildAfterSeconds} s)`,
    `  rebuild copied          ${mib(copied)} MiB in ${rebuildSeconds.toFixed(1)} s = ${(copied / MiB / rebuildSeconds).toFixed(1)} MiB/s`,
    `  client 4k randread QD8  baseline ${baseIops.toFixed(0)} IOPS; from the kill to the end of the rebuild ${under.read.iops.toFixed(0)} IOPS (${((100 * under.read.iops) / baseIops).toFixed(0)}%) over ${((Date.now() - readsRunning) / 1000).toFixed(0)} s`,
    `  client 4k randread QD8  during the rebuild alone ${rebuildIops.toFixed(0)} IOPS (${((100 * rebuildIops) / baseIops).toFixed(0)}% of the baseline)`,
    `  client worst latency    ${(under.read.clat_ns.max / 1e6).toFixed(0)} ms (the failover stall), errors ${under.error}`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

let exitCode = 0;
try {
  await main();
} catch (err) {
  process.stderr.write(`bench-rebuild: ${err.message}\n`);
  exitCode = exitRuntimeError;
} finally {
  try {
    meshblock(['lab', 'down', '--dir', labDir, '--purge']);
  } catch {
    // already down
  }
  fs.rmSync(dir, { recursive: true, force: true });
}
process.exit(exitCode);
