#!/usr/bin/env node
// Benchmark: one real MDM (`meshblock mdm start`) against a fleet of simulated SDSs and SDCs
// (src/sim/fleet.ts: real wire connections, real registration, heartbeats every second,
// maps and orders taken and acknowledged; no data served). Issue 23.
//
// What it measures, and how:
// 1. Connecting: SDSs first, then SDCs (in waves of --concurrency), each wave timed.
// 2. The first full map: the pool's last device is added through the REST API, the MDM plans
//    the pool with the real planner and pushes the map to every SDS (SetMap) and its view to
//    every SDC (SdcOp.Update, which carries the whole map too). mapFullBytes is one SDS's
//    SetMap payload; the time is from the REST call to the last peer holding the new epoch.
// 3. Idle: with everyone connected and heartbeating, the MDM's CPU seconds (/proc/PID/stat
//    utime+stime) over --idle-seconds: mdmCpuCoresIdle is CPU seconds per second.
// 4. One SDS failure: the connections of one simulated SDS are dropped (killSds); the MDM
//    declares it down after --sds-down-after seconds and pushes the new map. failureToLastMapMs
//    is from the drop to the last live peer holding the newest epoch (it includes the
//    detection delay, reported apart as failureToFirstMapMs); bytesSentPerFailure is every
//    map and view payload received by live peers from the drop until quiet.
//    mapDeltaBytesPerFailure is null: the MDM sends no deltas yet (src/wire/map-codec.ts, not wired).
// With --profile the MDM runs under `node --cpu-prof` and the functions where it spent the most
// self time are printed after the table (the profile covers the whole run).
//
// Usage: node scripts/bench-scale.mjs [--sds 1024] [--sdc 1024] [--devices 4] [--pgs N]
//          [--idle-seconds 10] [--sds-down-after 3] [--concurrency 64] [--settle-seconds 180]
//          [--profile] [--keep]

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';

const repoRoot = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const { preloadDataDir, Fleet, processCpuSeconds } = await import(path.join(repoRoot, 'dist/sim/fleet.js'));
const { ApiClient } = await import(path.join(repoRoot, 'dist/cli/manage-client.js'));

const { values: flags } = parseArgs({
  options: {
    sds: { type: 'string', default: '1024' },
    sdc: { type: 'string', default: '1024' },
    devices: { type: 'string', default: '4' },
    pgs: { type: 'string' },
    'idle-seconds': { type: 'string', default: '10' },
    'sds-down-after': { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '64' },
    'settle-seconds': { type: 'string', default: '180' },
    profile: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
  },
});
function integerFlag(name, min, max) {
  const value = Number(flags[name]);
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    process.stderr.write(`bench-scale: --${name} must be an integer from ${min} to ${max}, got ${flags[name]}\n`);
    process.exit(2);
  }
  return value;
}
const sdsCount = integerFlag('sds', 2, 4096);
const sdcCount = integerFlag('sdc', 0, 4096);
const devicesPerSds = integerFlag('devices', 1, 64);
const idleSeconds = integerFlag('idle-seconds', 1, 600);
const downAfterSeconds = integerFlag('sds-down-after', 1, 60);
const concurrency = integerFlag('concurrency', 1, 1024);
const settleSeconds = integerFlag('settle-seconds', 5, 3600);
const pgCount = flags.pgs === undefined ? undefined : integerFlag('pgs', 16, 1 << 20);

const log = pino({ level: 'warn' }, pino.destination(2));
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-scale-'));
const dataDir = path.join(dir, 'mdm');
const passwordFile = path.join(dir, 'admin-password.txt');
fs.writeFileSync(passwordFile, 'bench scale password\n', { mode: 0o600 });
const rows = [];
const row = (what, value) => {
  rows.push([what, value]);
  process.stderr.write(`bench-scale: ${what}: ${value}\n`);
};
const since = (startMs) => Date.now() - startMs;

let mdm = null;
let fleet = null;
let exitCode = 0;
try {
  let startMs = Date.now();
  const cluster = await preloadDataDir(dataDir, { sdsCount, devicesPerSds, sdcCount, deviceCapacityBytes: 64 * 1024 ** 3, ...(pgCount === undefined ? {} : { pgCount }) }, log);
  row('preload (state machine, journal snapshot)', `${since(startMs)} ms`);

  const profileDir = path.join(dir, 'profile');
  const nodeArgs = flags.profile ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
  const mdmArgs = ['mdm', 'start', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--api', '127.0.0.1:0', '--admin-password-file', passwordFile, '--metrics', 'off', '--sds-down-after', String(downAfterSeconds), '--log-level', 'warn'];
  const mdmLog = fs.openSync(path.join(dir, 'mdm.log'), 'w');
  // setpriv execs the MDM (same pid) with a death signal: killed if this script dies first.
  const orphanKill = fs.existsSync('/usr/bin/setpriv') ? ['/usr/bin/setpriv', '--pdeathsig', 'KILL'] : [];
  const [command, ...commandArgs] = [...orphanKill, process.execPath, ...nodeArgs, path.join(repoRoot, 'bin/meshblock.cjs'), ...mdmArgs];
  mdm = spawn(command, commandArgs, { stdio: ['ignore', 'pipe', mdmLog] });
  let stdout = '';
  const ready = await new Promise((resolve, reject) => {
    mdm.stdout.setEncoding('utf8').on('data', (text) => {
      stdout += text;
      const match = /listening on (\S+), REST API at (\S+) \(certificate (\S+)\)/.exec(stdout);
      if (match !== null) resolve(match);
    });
    mdm.on('exit', (code) => reject(new Error(`the MDM exited ${code} before it was ready; see ${dir}/mdm.log`)));
  });
  const [, mdmAddress, apiUrl, certPath] = ready;
  row('MDM started on the preloaded data dir', `${since(startMs)} ms (pid ${mdm.pid})`);

  fleet = new Fleet({ mdmAddress, cluster, sdcCount, log });
  startMs = Date.now();
  await fleet.connectSdss(concurrency);
  row(`${sdsCount} SDSs connected and registered`, `${since(startMs)} ms`);
  startMs = Date.now();
  await fleet.connectSdcs(concurrency);
  row(`${sdcCount} SDCs connected and registered`, `${since(startMs)} ms`);

  // The first full plan and its distribution.
  const api = await ApiClient.connect({ api: apiUrl, dir: undefined, username: 'admin', 'password-file': passwordFile, 'ca-cert': certPath, insecure: false }, { stdout: process.stdout, stderr: process.stderr, env: {} });
  const epochBefore = fleet.epochMax;
  startMs = Date.now();
  await api.post('/api/types/Device/instances', { sdsId: cluster.lastDevice.sdsId, storagePoolId: cluster.storagePoolId, deviceCurrentPathName: cluster.lastDevice.path });
  const restMs = since(startMs);
  const planned = await settle(fleet, startMs, epochBefore);
  const fullReceipts = fleet.receiptsSince(startMs);
  const sdsMapBytes = largest(fullReceipts.filter((entry) => entry.kind === 'sds').map((entry) => entry.receipt.bytes), 0);
  const sdcViewBytes = largest(fullReceipts.filter((entry) => entry.kind === 'sdc').map((entry) => entry.receipt.bytes), 0);
  row('last device added (REST, includes the plan)', `${restMs} ms`);
  row('full map: SetMap payload (JSON)', `${sdsMapBytes} bytes`);
  row('full map: SDC view payload (JSON)', `${sdcViewBytes} bytes`);
  row('full map to every peer', `${planned.lastMs} ms, ${planned.bytes} bytes in ${planned.count} payloads`);

  // Idle.
  await sleep(2000);
  const cpuBefore = processCpuSeconds(mdm.pid);
  const idleStartMs = Date.now();
  await sleep(idleSeconds * 1000);
  const mdmCpuCoresIdle = (processCpuSeconds(mdm.pid) - cpuBefore) / ((Date.now() - idleStartMs) / 1000);
  row(`MDM CPU at idle over ${idleSeconds} s (${sdsCount} SDSs + ${sdcCount} SDCs heartbeating)`, `${mdmCpuCoresIdle.toFixed(3)} cores`);

  // One SDS failure.
  const epochBeforeFailure = fleet.epochMax;
  const failureCpuBefore = processCpuSeconds(mdm.pid);
  const killedAtMs = fleet.killSds(sdsCount - 1);
  const failure = await settle(fleet, killedAtMs, epochBeforeFailure);
  const failureCpu = processCpuSeconds(mdm.pid) - failureCpuBefore;
  row('SDS failure: drop to first peer with the new map', `${failure.firstMs} ms (sds-down-after ${downAfterSeconds} s)`);
  row('SDS failure: drop to last peer with the newest map', `${failure.lastMs} ms (epoch ${epochBeforeFailure} → ${failure.epoch})`);
  row('SDS failure: bytes of maps and views sent', `${failure.bytes} bytes in ${failure.count} payloads (SDSs ${failure.sdsBytes}, SDCs ${failure.sdcBytes})`);
  row('SDS failure: MDM CPU from drop to quiet', `${failureCpu.toFixed(2)} s`);
  const holding = fleet.holding(failure.epoch);
  row('peers holding the newest map', `${holding.sds} of ${sdsCount - 1} SDSs, ${holding.sdc} of ${sdcCount} SDCs`);

  process.stdout.write(`\n${'measure'.padEnd(72)} value\n`);
  for (const [what, value] of rows) process.stdout.write(`${what.padEnd(72)} ${value}\n`);
  const result = {
    sds: sdsCount,
    sdc: sdcCount,
    devicesPerSds,
    pgCount: pgCount ?? null,
    mapFullBytes: sdsMapBytes,
    sdcViewBytes,
    mapDeltaBytesPerFailure: null,
    bytesSentPerFailure: failure.bytes,
    mdmCpuCoresIdle: Number(mdmCpuCoresIdle.toFixed(4)),
    failureToFirstMapMs: failure.firstMs,
    failureToLastMapMs: failure.lastMs,
    fullMapToLastPeerMs: planned.lastMs,
    sdsDownAfterMs: downAfterSeconds * 1000,
    peersMissingNewestMap: sdsCount - 1 - holding.sds + (sdcCount - holding.sdc),
  };
  if (flags.profile) {
    mdm.kill('SIGTERM');
    await once(mdm, 'exit');
    mdm = null;
    printProfile(profileDir);
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
} catch (err) {
  process.stderr.write(`bench-scale: ${err instanceof Error ? err.stack : String(err)}\n`);
  exitCode = 1;
  // Where the MDM spent its time matters most when it could not keep up.
  if (flags.profile && mdm !== null) {
    fleet?.close();
    mdm.kill('SIGTERM');
    await Promise.race([once(mdm, 'exit'), sleep(30_000)]);
    printProfile(path.join(dir, 'profile'));
  }
} finally {
  fleet?.close();
  if (mdm !== null && mdm.exitCode === null) {
    mdm.kill('SIGTERM');
    await Promise.race([once(mdm, 'exit'), sleep(10_000)]);
    if (mdm.exitCode === null) mdm.kill('SIGKILL');
  }
  if (flags.keep) process.stderr.write(`bench-scale: kept ${dir}\n`);
  else fs.rmSync(dir, { recursive: true, force: true });
}
process.exit(exitCode);

/**
 * Waits until every live peer holds the newest epoch above `epochBefore` and nothing more
 * arrived for quietMs; then reports the first and last arrival of that change.
 */
async function settle(fleetNow, sinceMs, epochBefore, quietMs = 3000, timeoutMs = settleSeconds * 1000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await sleep(250);
    const receipts = fleetNow.receiptsSince(sinceMs);
    const epoch = fleetNow.epochMax;
    const lastAtMs = largest(receipts.map((entry) => entry.receipt.atMs), sinceMs);
    const holding = fleetNow.holding(epoch);
    const live = fleetNow.sdss.filter((peer) => !peer.killed).length + fleetNow.sdcs.length;
    if (epoch > epochBefore && holding.sds + holding.sdc === live && Date.now() - lastAtMs >= quietMs) {
      const newer = receipts.filter((entry) => entry.receipt.epoch > epochBefore);
      const sum = (entries) => entries.reduce((total, entry) => total + entry.receipt.bytes, 0);
      return {
        epoch,
        firstMs: -largest(newer.map((entry) => -entry.receipt.atMs), -Infinity) - sinceMs,
        lastMs: largest(receipts.filter((entry) => entry.receipt.epoch === epoch).map((entry) => entry.receipt.atMs), -Infinity) - sinceMs,
        bytes: sum(receipts),
        sdsBytes: sum(receipts.filter((entry) => entry.kind === 'sds')),
        sdcBytes: sum(receipts.filter((entry) => entry.kind === 'sdc')),
        count: receipts.length,
      };
    }
    if (Date.now() > deadline) {
      const reconnecting = [...fleetNow.sdss, ...fleetNow.sdcs].filter((peer) => !peer.killed && peer.session.peer === null).length;
      throw new Error(`peers did not settle on a new map within ${timeoutMs} ms (epoch ${epoch}, holding ${JSON.stringify(holding)} of ${live}; ${reconnecting} peers without an MDM connection now)`);
    }
  }
}

/** Self time by function over the MDM's CPU profile, the top 15. */
function printProfile(profileDir) {
  const files = fs.existsSync(profileDir) ? fs.readdirSync(profileDir).filter((name) => name.endsWith('.cpuprofile')) : [];
  if (files.length === 0) {
    process.stdout.write('no CPU profile written\n');
    return;
  }
  const profile = JSON.parse(fs.readFileSync(path.join(profileDir, files[0]), 'utf8'));
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfUs = new Map();
  const deltas = profile.timeDeltas;
  for (let index = 0; index < profile.samples.length; index += 1) {
    const node = byId.get(profile.samples[index]);
    const frame = node.callFrame;
    const key = `${frame.functionName || '(anonymous)'} ${frame.url.replace(/^.*\/(dist|node_modules)\//, '$1/')}:${frame.lineNumber + 1}`;
    selfUs.set(key, (selfUs.get(key) ?? 0) + (deltas[index] ?? 0));
  }
  const totalUs = [...selfUs.values()].reduce((sum, value) => sum + value, 0);
  const idleUs = [...selfUs].filter(([key]) => key.startsWith('(idle)')).reduce((sum, [, value]) => sum + value, 0);
  process.stdout.write(`\nMDM CPU profile: ${(totalUs / 1e6).toFixed(1)} s sampled, ${((totalUs - idleUs) / 1e6).toFixed(1)} s busy; self time, top 15:\n`);
  for (const [key, value] of [...selfUs].filter(([name]) => !name.startsWith('(idle)')).sort((a, b) => b[1] - a[1]).slice(0, 15)) {
    process.stdout.write(`${(value / 1e6).toFixed(2).padStart(8)} s  ${((100 * value) / (totalUs - idleUs)).toFixed(1).padStart(5)} %  ${key}\n`);
  }
}

/** The largest of numbers, or `floor` if there are none or all are smaller (no spread: there may be millions). */
function largest(numbers, floor) {
  let most = floor;
  for (const value of numbers) if (value > most) most = value;
  return most;
}
