#!/usr/bin/env node
// Benchmark: one real MDM (`meshblock mdm start`) against a fleet of simulated SDSs and SDCs
// (src/sim/fleet.ts: real wire connections, real registration, heartbeats every second,
// maps and orders taken and acknowledged; no data served). Issue 23.
//
// What it measures, and how (docs/scale.md says what each number means and what it does not):
// 0. Before the MDM starts (so its CPU is not disturbed): the map sizes, planned in-process by
//    the real state machine and planner and encoded with the codec (src/wire/map-codec.ts), at
//    4 SDSs, at this fleet's size and at 1,024 SDSs: full JSON, full binary, one SDS failure's
//    delta, one rack's (measurePlannedMaps in fleet.ts); and the simulated time to re-protect
//    one SDS's data by cluster size, from REBUILDSIM's model (dist/sim/rebuild-sim.js) when
//    that module is present (in a child process, bounded), else null.
// 1. Connecting: SDSs first, then SDCs (in waves of --concurrency), each phase bounded.
// 2. The first full map: the pool's last device is added through the REST API, the MDM plans
//    the pool with the real planner and pushes the map to every peer. mapFullBytes is the
//    largest map payload one SDS received for it, as it went on the wire.
// 3. Idle: with everyone connected and heartbeating, the MDM's CPU seconds (/proc/PID/stat
//    utime+stime) over --idle-seconds: mdmCpuCoresIdle is CPU seconds per second.
// 4. One SDS failure: the last SDS's connections are dropped (killSds). Measured: drop to the
//    MDM listing it Down (REST, polled every 200 ms), to the first live peer holding a newer
//    map, to the last live peer holding the epoch the MDM was at once it was Down
//    (failureToLastMapMs), the map payload bytes the live peers got meanwhile
//    (bytesSentPerFailure), and the MDM's CPU. Then, with --rebuild-after small, the SDS is
//    declared out and its copies re-created (the simulated SDSs report rebuilds done at once):
//    the time until the MDM's metrics show no degraded group is the control plane's part of
//    re-protection only (no data moves).
// 5. A rack failure: every SDS of fault set 0 (--rack-size SDSs, 16 by default) dropped in
//    the same turn, measured as the single failure (rack*), plus the groups left with no
//    readable copy (the MDM's meshblock_pool_placement_groups{health="failed"}; 0 is the fault
//    sets' promise) and the time to no degraded group.
// Every wait is bounded (--connect-seconds, --settle-seconds): a phase that does not finish is
// reported with what it got (which peers lag, how many lost their MDM connection), later
// phases that depend on it are skipped, and the last line is still the JSON object, with
// null for what was not measured.
// With --profile the MDM runs under `node --cpu-prof` and the functions where it spent the most
// self time are printed after the table (the profile covers the whole run). --real-rebuild also
// runs scripts/bench-scale-rebuild.mjs (REBUILDSIM's real cluster at 3..6 SDSs, some minutes)
// and puts its JSON line under realRebuild. --large-map adds the map sizes at 1,024 SDSs x 4
// devices at 262,144 groups (about a minute and 400 MB of heap in-process).
//
// Usage: node scripts/bench-scale.mjs [--sds 1024] [--sdc 1024] [--devices 4] [--pgs N]
//          [--rack-size 16] [--idle-seconds 10] [--sds-down-after 3] [--rebuild-after 10]
//          [--concurrency 64] [--connect-seconds 300] [--settle-seconds 180]
//          [--real-rebuild] [--large-map] [--profile] [--keep]
// The last line of stdout is one JSON object (docs/scale.md lists its fields). Exit status 0:
// everything measured; 3: something did not finish in time (see `unsettled`); 1: an error.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';

const repoRoot = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const { preloadDataDir, Fleet, processCpuSeconds, measurePlannedMaps } = await import(path.join(repoRoot, 'dist/sim/fleet.js'));
const { ApiClient } = await import(path.join(repoRoot, 'dist/cli/manage-client.js'));

const { values: flags } = parseArgs({
  options: {
    sds: { type: 'string', default: '1024' },
    sdc: { type: 'string', default: '1024' },
    devices: { type: 'string', default: '4' },
    pgs: { type: 'string' },
    'rack-size': { type: 'string' },
    'idle-seconds': { type: 'string', default: '10' },
    'sds-down-after': { type: 'string', default: '3' },
    'rebuild-after': { type: 'string', default: '10' },
    concurrency: { type: 'string', default: '64' },
    'connect-seconds': { type: 'string', default: '300' },
    'settle-seconds': { type: 'string', default: '180' },
    'real-rebuild': { type: 'boolean', default: false },
    'large-map': { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
  },
});
function integerFlag(name, min, max, given = flags[name]) {
  const value = Number(given);
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    process.stderr.write(`bench-scale: --${name} must be an integer from ${min} to ${max}, got ${given}\n`);
    process.exit(2);
  }
  return value;
}
const sdsCount = integerFlag('sds', 3, 4096);
const sdcCount = integerFlag('sdc', 0, 4096);
const devicesPerSds = integerFlag('devices', 1, 64);
const idleSeconds = integerFlag('idle-seconds', 1, 600);
const downAfterSeconds = integerFlag('sds-down-after', 1, 60);
const rebuildAfterSeconds = integerFlag('rebuild-after', 1, 3600);
const concurrency = integerFlag('concurrency', 1, 1024);
const connectSeconds = integerFlag('connect-seconds', 5, 3600);
const settleSeconds = integerFlag('settle-seconds', 5, 3600);
const pgCount = flags.pgs === undefined ? undefined : integerFlag('pgs', 16, 1 << 20);
/** The issue's rack: 16 SDSs; a smaller fleet gets racks of a third of it (three fault sets at least). 0: no racks, no rack failure. */
const rackSizeDefault = 16;
const rackSizeMax = Math.floor(sdsCount / 3);
const rackSize = flags['rack-size'] === undefined ? Math.min(rackSizeDefault, rackSizeMax) : integerFlag('rack-size', 0, rackSizeMax);
const settleMs = settleSeconds * 1000;

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
const GiB = 1024 ** 3;
const deviceCapacityBytes = 64 * GiB;

/** Everything the JSON line carries; null until measured. */
const result = {
  sds: sdsCount,
  sdc: sdcCount,
  devicesPerSds,
  pgCount: pgCount ?? null,
  rackSize: rackSize === 0 ? null : rackSize,
  mapFullBytes: null,
  sdcViewBytes: null,
  mapDeltaBytesPerFailure: null,
  bytesSentPerFailure: null,
  mdmCpuCoresIdle: null,
  failureDeclaredDownMs: null,
  failureToFirstMapMs: null,
  failureToLastMapMs: null,
  failureMdmCpuSeconds: null,
  failureDegradedGroups: null,
  failureReprotectedMs: null,
  rackDeclaredDownMs: null,
  rackFailureToFirstMapMs: null,
  rackFailureToLastMapMs: null,
  rackBytesSent: null,
  rackEpochs: null,
  rackDegradedGroups: null,
  rackFailedGroups: null,
  rackMdmCpuSeconds: null,
  rackReprotectedMs: null,
  fullMapToLastPeerMs: null,
  sdsDownAfterMs: downAfterSeconds * 1000,
  rebuildAfterMs: rebuildAfterSeconds * 1000,
  connectSdsMs: null,
  connectSdcMs: null,
  mapSizes: [],
  reprotect: null,
  realRebuild: null,
  /** What did not finish, in order: each a phase and what it got. Empty: everything measured. */
  unsettled: [],
};

// 0. Map sizes and the simulated re-protection, before anything runs beside them.
const mapSizeRuns = [
  { sdsCount: 4, devicesPerSds, sdssPerFaultSet: 1 },
  { sdsCount, devicesPerSds, ...(pgCount === undefined ? {} : { pgCount }), ...(rackSize === 0 ? {} : { sdssPerFaultSet: rackSize }) },
  ...(sdsCount === 1024 && devicesPerSds === 4 && pgCount === undefined ? [] : [{ sdsCount: 1024, devicesPerSds: 4, sdssPerFaultSet: rackSizeDefault }]),
  ...(flags['large-map'] ? [{ sdsCount: 1024, devicesPerSds: 4, pgCount: 262_144, sdssPerFaultSet: rackSizeDefault }] : []),
];
for (const run of mapSizeRuns) {
  const startMs = Date.now();
  try {
    const sizes = measurePlannedMaps({ ...run, sdcCount: 0, deviceCapacityBytes });
    result.mapSizes.push(sizes);
    row(
      `map in-process: ${sizes.sds} SDSs x ${sizes.devicesPerSds}, ${sizes.pgCount} groups`,
      `JSON ${sizes.mapJsonBytes} B, binary ${sizes.mapBinaryBytes} B, one failure's delta ${sizes.mapDeltaBytesPerFailure} B, a rack of ${sizes.rackSdsCount}: ${sizes.rackDeltaBytesSum} B in ${sizes.rackEpochs} deltas (${sizes.rackDeltaBytesDirect} B as one), ${sizes.rackFailedGroups} groups without a copy (${since(startMs)} ms)`,
    );
  } catch (err) {
    row(`map in-process: ${run.sdsCount} SDSs x ${run.devicesPerSds}`, `failed: ${err instanceof Error ? err.message : String(err)}`);
  }
}
const fleetSizes = result.mapSizes.find((sizes) => sizes.sds === sdsCount && sizes.devicesPerSds === devicesPerSds && (pgCount === undefined || sizes.pgCount === pgCount));
result.mapDeltaBytesPerFailure = fleetSizes?.mapDeltaBytesPerFailure ?? null;
result.reprotect = await simulatedReprotect();

// A class is not hoisted as the functions below are: declared before the phases use it.
/** A phase that did not finish within its bound: what it got goes into the JSON line. */
class Unsettled extends Error {
  constructor(phase, got) {
    super(`${phase} did not finish`);
    this.phase = phase;
    this.got = got;
  }
}

let mdm = null;
let fleet = null;
/** The preloaded cluster (PreloadedCluster), once written. */
let preloaded = null;
/** The MDM's Prometheus endpoint (loopback), once it started. */
let metricsUrl = null;
let exitCode = 0;
try {
  let startMs = Date.now();
  const cluster = (preloaded = await preloadDataDir(dataDir, { sdsCount, devicesPerSds, sdcCount, deviceCapacityBytes, ...(pgCount === undefined ? {} : { pgCount }), ...(rackSize === 0 ? {} : { sdssPerFaultSet: rackSize }) }, log));
  row('preload (state machine, journal snapshot)', `${since(startMs)} ms${rackSize === 0 ? '' : `, ${cluster.faultSets.length} fault sets of up to ${rackSize} SDSs`}`);

  const profileDir = path.join(dir, 'profile');
  const nodeArgs = flags.profile ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
  // Metrics on loopback: the failed and degraded group counts come from them (scraped only after a failure).
  const mdmArgs = ['mdm', 'start', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--api', '127.0.0.1:0', '--admin-password-file', passwordFile, '--metrics', '127.0.0.1:0', '--sds-down-after', String(downAfterSeconds), '--rebuild-after', String(rebuildAfterSeconds), '--log-level', 'warn'];
  const mdmLog = fs.openSync(path.join(dir, 'mdm.log'), 'w');
  // setpriv execs the MDM (same pid) with a death signal: killed if this script dies first.
  const orphanKill = fs.existsSync('/usr/bin/setpriv') ? ['/usr/bin/setpriv', '--pdeathsig', 'KILL'] : [];
  const [command, ...commandArgs] = [...orphanKill, process.execPath, ...nodeArgs, path.join(repoRoot, 'bin/meshblock.cjs'), ...mdmArgs];
  mdm = spawn(command, commandArgs, { stdio: ['ignore', 'pipe', mdmLog] });
  let stdout = '';
  const ready = await bounded(
    'the MDM ready',
    new Promise((resolve, reject) => {
      mdm.stdout.setEncoding('utf8').on('data', (text) => {
        stdout += text;
        const match = /listening on (\S+), REST API at (\S+) \(certificate (\S+)\)/.exec(stdout);
        if (match !== null) resolve(match);
      });
      mdm.on('exit', (code) => reject(new Error(`the MDM exited ${code} before it was ready; see ${dir}/mdm.log`)));
    }),
    60_000,
  );
  const [, mdmAddress, apiUrl, certPath] = ready;
  metricsUrl = /metrics at (\S+)/.exec(stdout)?.[1] ?? null;
  row('MDM started on the preloaded data dir', `${since(startMs)} ms (pid ${mdm.pid})`);

  fleet = new Fleet({ mdmAddress, cluster, sdcCount, log });
  startMs = Date.now();
  const sdssIn = await bounded('SDSs registered', fleet.connectSdss(concurrency), connectSeconds * 1000).then(
    () => true,
    () => false,
  );
  if (!sdssIn) throw new Unsettled('connect SDSs', { connected: fleet.connected(), ofSds: sdsCount });
  result.connectSdsMs = since(startMs);
  row(`${sdsCount} SDSs connected and registered`, `${result.connectSdsMs} ms`);
  startMs = Date.now();
  const sdcsIn = await bounded('SDCs registered', fleet.connectSdcs(concurrency), connectSeconds * 1000).then(
    () => true,
    () => false,
  );
  if (!sdcsIn) throw new Unsettled('connect SDCs', { connected: fleet.connected(), ofSdc: sdcCount });
  result.connectSdcMs = since(startMs);
  row(`${sdcCount} SDCs connected and registered`, `${result.connectSdcMs} ms`);

  // The first full plan and its distribution.
  const api = await ApiClient.connect({ api: apiUrl, dir: undefined, username: 'admin', 'password-file': passwordFile, 'ca-cert': certPath, insecure: false }, { stdout: process.stdout, stderr: process.stderr, env: {} });
  startMs = Date.now();
  await api.post('/api/types/Device/instances', { sdsId: cluster.lastDevice.sdsId, storagePoolId: cluster.storagePoolId, deviceCurrentPathName: cluster.lastDevice.path });
  const restMs = since(startMs);
  const plannedEpoch = await mdmEpoch(api);
  const planned = await untilHeld(plannedEpoch, startMs, 'the first full map');
  const fullReceipts = fleet.receiptsSince(startMs);
  result.mapFullBytes = largest(fullReceipts.filter((entry) => entry.kind === 'sds').map((entry) => entry.receipt.bytes), 0);
  result.sdcViewBytes = largest(fullReceipts.filter((entry) => entry.kind === 'sdc').map((entry) => entry.receipt.bytes), 0);
  result.fullMapToLastPeerMs = planned.lastMs;
  row('last device added (REST, includes the plan)', `${restMs} ms`);
  row('full map: largest SDS map payload', `${result.mapFullBytes} bytes`);
  row('full map: largest SDC view payload', `${result.sdcViewBytes} bytes`);
  row('full map to every peer', `${planned.lastMs} ms, ${planned.bytes} bytes in ${planned.count} payloads`);
  if (!planned.held) throw new Unsettled('the first full map', planned.lagging);

  // Idle.
  await sleep(2000);
  const cpuBefore = processCpuSeconds(mdm.pid);
  const idleStartMs = Date.now();
  await sleep(idleSeconds * 1000);
  const mdmCpuCoresIdle = (processCpuSeconds(mdm.pid) - cpuBefore) / ((Date.now() - idleStartMs) / 1000);
  result.mdmCpuCoresIdle = Number(mdmCpuCoresIdle.toFixed(4));
  row(`MDM CPU at idle over ${idleSeconds} s (${sdsCount} SDSs + ${sdcCount} SDCs heartbeating)`, `${mdmCpuCoresIdle.toFixed(3)} cores`);

  // One SDS failure (the last SDS; in the last rack, so the rack failure below is of other SDSs).
  const single = await failure(api, [sdsCount - 1], 'SDS failure');
  result.failureDeclaredDownMs = single.declaredDownMs;
  result.failureToFirstMapMs = single.firstMs;
  result.failureToLastMapMs = single.lastMs;
  result.bytesSentPerFailure = single.bytes;
  result.failureMdmCpuSeconds = single.cpuSeconds;
  result.failureDegradedGroups = single.degradedGroups;
  if (!single.held) throw new Unsettled('SDS failure', single.lagging);
  result.failureReprotectedMs = await reprotected(single, 'SDS failure');

  if (rackSize > 0) {
    const singleProtected = result.failureReprotectedMs !== null || (single.degradedGroups === 0 && single.failedGroups === 0);
    if (!singleProtected) result.unsettled.push({ phase: 'rack failure', got: 'on a cluster not yet re-protected from the single failure: groups on both may lose their last copy' });
    const rack = await failure(api, fleet.rackSdsIndexes(0), `rack failure (${rackSize} SDSs)`);
    result.rackDeclaredDownMs = rack.declaredDownMs;
    result.rackFailureToFirstMapMs = rack.firstMs;
    result.rackFailureToLastMapMs = rack.lastMs;
    result.rackBytesSent = rack.bytes;
    result.rackEpochs = rack.epochs;
    result.rackMdmCpuSeconds = rack.cpuSeconds;
    result.rackDegradedGroups = rack.degradedGroups;
    result.rackFailedGroups = rack.failedGroups;
    if (!rack.held) throw new Unsettled('rack failure', rack.lagging);
    result.rackReprotectedMs = await reprotected(rack, 'rack failure');
  }
} catch (err) {
  if (err instanceof Unsettled) {
    result.unsettled.push({ phase: err.phase, got: err.got });
    row(`${err.phase}: did not finish`, JSON.stringify(err.got));
  } else {
    process.stderr.write(`bench-scale: ${err instanceof Error ? err.stack : String(err)}\n`);
    result.unsettled.push({ phase: 'error', got: err instanceof Error ? err.message : String(err) });
    exitCode = 1;
  }
}
try {
  fleet?.close();
  if (mdm !== null && mdm.exitCode === null) {
    mdm.kill('SIGTERM');
    await Promise.race([once(mdm, 'exit'), sleep(30_000)]);
    if (mdm.exitCode === null) mdm.kill('SIGKILL');
  }
  if (flags['real-rebuild']) result.realRebuild = await realRebuild();
  process.stdout.write(`\n${'measure'.padEnd(72)} value\n`);
  for (const [what, value] of rows) process.stdout.write(`${what.padEnd(72)} ${value}\n`);
  if (flags.profile) printProfile(path.join(dir, 'profile'));
} finally {
  if (flags.keep) process.stderr.write(`bench-scale: kept ${dir}\n`);
  else fs.rmSync(dir, { recursive: true, force: true });
  // The last line, always: what was measured, null for what was not.
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
// 1: an error; 3: it ran, but something did not finish in time (`unsettled`); 0: all measured.
process.exit(exitCode !== 0 ? exitCode : result.unsettled.length > 0 ? 3 : 0);

/** `promise`, or a rejection after `timeoutMs` (the promise itself runs on, unawaited). */
async function bounded(what, promise, timeoutMs) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Calls `probe` every `intervalMs` until it returns something other than undefined; null after `timeoutMs`. */
async function pollUntil(probe, timeoutMs, intervalMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let value;
    try {
      value = await probe();
    } catch {
      // A REST call refused or timed out while the MDM is busy: asked again next round.
      value = undefined;
    }
    if (value !== undefined) return value;
    if (Date.now() > deadline) return null;
    await sleep(intervalMs);
  }
}

/** The MDM's placement epoch now (REST System). */
async function mdmEpoch(api) {
  const [system] = await api.get('/api/types/System/instances');
  return system.mapEpoch;
}

/**
 * Waits (bounded) until every live peer holds `epoch` or newer; then reports the first
 * arrival of `firstEpoch` or newer (the first change) and the last arrival of `epoch` since
 * `sinceMs`, and the bytes of every map payload live peers got from `sinceMs` until that last
 * arrival. Unsettled: what lagged.
 */
async function untilHeld(epoch, sinceMs, what, firstEpoch = epoch) {
  const held = (await pollUntil(() => (fleet.lagging(epoch).count === 0 ? true : undefined), Math.max(0, sinceMs + settleMs - Date.now()), 250)) !== null;
  const arrivals = fleet.arrivals(epoch, sinceMs);
  const firstAtMs = fleet.arrivals(firstEpoch, sinceMs).firstAtMs;
  const untilMs = held ? arrivals.lastAtMs : Date.now();
  const receipts = fleet.receiptsSince(sinceMs).filter((entry) => entry.receipt.atMs <= untilMs);
  const sum = (entries) => entries.reduce((total, entry) => total + entry.receipt.bytes, 0);
  const lagging = held ? null : { what, epoch, ...fleet.lagging(epoch) };
  return {
    held,
    lagging,
    firstMs: firstAtMs === null ? null : firstAtMs - sinceMs,
    lastMs: held && arrivals.lastAtMs !== null ? arrivals.lastAtMs - sinceMs : null,
    bytes: sum(receipts),
    sdsBytes: sum(receipts.filter((entry) => entry.kind === 'sds')),
    sdcBytes: sum(receipts.filter((entry) => entry.kind === 'sdc')),
    count: receipts.length,
  };
}

/**
 * Drops the SDSs at `indexes` at once and measures: to the MDM listing all of them Down, to
 * the first and the last live peer holding the epoch the MDM was at then, the bytes, the CPU.
 */
async function failure(api, indexes, what) {
  const victims = indexes.map((index) => preloaded.sdss[index].sdsId);
  const epochBefore = await mdmEpoch(api);
  const cpuBefore = processCpuSeconds(mdm.pid);
  const killedAtMs = fleet.killSdss(indexes);
  const downAtMs = await pollUntil(
    async () => {
      const states = await Promise.all(victims.map((sdsId) => api.get(`/api/instances/Sds::${sdsId}`)));
      return states.every((sds) => sds.sdsState === 'Down') ? Date.now() : undefined;
    },
    settleMs,
    200,
  );
  const declaredDownMs = downAtMs === null ? null : downAtMs - killedAtMs;
  // The epoch with every victim down (or, if they never were, the first change after the drop).
  const epochDown = downAtMs === null ? epochBefore + 1 : await mdmEpoch(api);
  const reached = await untilHeld(epochDown, killedAtMs, what, epochBefore + 1);
  // Once every victim is down: the groups left on one copy, and on none (0 with fault sets).
  const groups = await scrapeGroups();
  const cpuSeconds = Number((processCpuSeconds(mdm.pid) - cpuBefore).toFixed(2));
  row(`${what}: drop to the MDM listing ${victims.length === 1 ? 'it' : `all ${victims.length}`} Down`, declaredDownMs === null ? `not within ${settleSeconds} s` : `${declaredDownMs} ms (sds-down-after ${downAfterSeconds} s)`);
  row(`${what}: drop to first peer with a newer map`, reached.firstMs === null ? 'none' : `${reached.firstMs} ms`);
  row(`${what}: drop to last live peer holding epoch ${epochDown}`, reached.lastMs === null ? `not within ${settleSeconds} s: ${JSON.stringify(reached.lagging)}` : `${reached.lastMs} ms (epoch ${epochBefore} → ${epochDown}, ${epochDown - epochBefore} epochs)`);
  row(`${what}: map payload bytes to live peers until then`, `${reached.bytes} bytes in ${reached.count} payloads (SDSs ${reached.sdsBytes}, SDCs ${reached.sdcBytes})`);
  row(`${what}: MDM CPU from drop to last map`, `${cpuSeconds} s`);
  row(`${what}: groups then on one copy, and on none`, groups === null ? 'not measured (no metrics)' : `${groups.degraded} degraded, ${groups.failed} failed, of ${groups.total}`);
  return { ...reached, killedAtMs, declaredDownMs, epochs: epochDown - epochBefore, cpuSeconds, degradedGroups: groups?.degraded ?? null, failedGroups: groups?.failed ?? null };
}

/** The pool's groups by health from the MDM's metrics (meshblock_pool_placement_groups), summed over pools; null without them. */
async function scrapeGroups() {
  if (metricsUrl === null) return null;
  try {
    const response = await bounded('metrics', fetch(metricsUrl), 10_000);
    const text = await response.text();
    const groups = { total: 0, degraded: 0, failed: 0 };
    for (const match of text.matchAll(/^meshblock_pool_placement_groups\{[^}]*health="(\w+)"[^}]*\} (\S+)$/gm)) {
      if (match[1] in groups) groups[match[1]] += Number(match[2]);
    }
    return groups;
  } catch {
    return null;
  }
}

/**
 * Waits (bounded) until no group is degraded or failed (the MDM's metrics): the control
 * plane's part of re-protection (out after --rebuild-after, orders, the simulated SDSs'
 * reports); ms since the drop, or null if not within --settle-seconds, or if the failure left
 * nothing degraded (the SDS held no copy: with few groups, some devices hold none).
 */
async function reprotected(failed, what) {
  if (metricsUrl === null) return null;
  if (failed.degradedGroups === 0 && failed.failedGroups === 0) {
    row(`${what}: re-protection`, 'not measured: no group was degraded (the victims held no copy)');
    return null;
  }
  const sinceMs = failed.killedAtMs;
  const doneAtMs = await pollUntil(
    async () => {
      const groups = await scrapeGroups();
      return groups !== null && groups.total > 0 && groups.degraded === 0 && groups.failed === 0 ? Date.now() : undefined;
    },
    Math.max(0, sinceMs + rebuildAfterSeconds * 1000 + settleMs - Date.now()),
    500,
  );
  const groups = await scrapeGroups();
  row(`${what}: drop to no degraded group (control plane only, rebuild-after ${rebuildAfterSeconds} s)`, doneAtMs === null ? `not within ${settleSeconds} s after rebuild-after: ${JSON.stringify(groups)}` : `${doneAtMs - sinceMs} ms`);
  return doneAtMs === null ? null : doneAtMs - sinceMs;
}

/**
 * REBUILDSIM's model (src/sim/rebuild-sim.ts, built to dist/sim/rebuild-sim.js) if this tree
 * has it: the simulated seconds to re-protect one failed SDS's data (its `seconds`: from the
 * re-plan that starts the rebuild to the last group in sync) by cluster size, each size in a
 * child process of its own so a slow or broken model cannot hold the benchmark (120 s each).
 * Null when the module is absent; a size that fails or does not finish is null.
 */
async function simulatedReprotect() {
  const modulePath = path.join(repoRoot, 'dist/sim/rebuild-sim.js');
  if (!fs.existsSync(modulePath)) {
    row('simulated re-protect by cluster size', 'not measured: dist/sim/rebuild-sim.js absent');
    return null;
  }
  const reprotect = {};
  for (const sdsCount of [8, 32, 128, 512, 1024]) {
    const script = `
      const model = await import(${JSON.stringify(modulePath)});
      const simulate = model.simulateReprotect;
      if (typeof simulate !== 'function') throw new Error('dist/sim/rebuild-sim.js exports no simulateReprotect');
      const outcome = await simulate({ sdsCount: ${sdsCount} });
      process.stdout.write(JSON.stringify({ seconds: outcome.seconds, protected: outcome.protected ?? null, bytesToRebuild: outcome.bytesToRebuild ?? null, wallMs: outcome.wallMs ?? null }) + '\\n');
    `;
    const outcome = await runChild([process.execPath, '--input-type=module', '-e', script], 120_000);
    const entry = outcome.json;
    const seconds = entry !== null && typeof entry.seconds === 'number' && entry.protected !== false ? Number(entry.seconds.toFixed(1)) : null;
    reprotect[sdsCount] = seconds;
    row(
      `simulated re-protect of one SDS's data at ${sdsCount} SDSs (rebuild-sim.ts)`,
      entry === null ? `not measured: ${outcome.error}` : `${seconds === null ? `not protected (${entry.seconds} s simulated)` : `${seconds} s`}, ${entry.bytesToRebuild} bytes (simulation wall ${entry.wallMs} ms)`,
    );
  }
  return reprotect;
}

/** REBUILDSIM's real cluster run (scripts/bench-scale-rebuild.mjs), its JSON line, bounded to 10 minutes; null if absent or failed. */
async function realRebuild() {
  const script = path.join(repoRoot, 'scripts/bench-scale-rebuild.mjs');
  if (!fs.existsSync(script)) {
    row('real rebuild (bench-scale-rebuild.mjs)', 'not run: the script is absent');
    return null;
  }
  const outcome = await runChild([process.execPath, script], 600_000);
  row('real rebuild (bench-scale-rebuild.mjs)', outcome.json === null ? `failed: ${outcome.error}` : JSON.stringify(outcome.json));
  return outcome.json;
}

/** Runs a command with stdout captured and stderr passed through; its last stdout line parsed as JSON, or null and why. */
async function runChild(argv, timeoutMs) {
  const [file, ...args] = argv;
  const child = spawn(file, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (text) => (output += text));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code, signal] = await once(child, 'exit');
  clearTimeout(timer);
  const last = output.trim().split('\n').pop() ?? '';
  try {
    return { json: JSON.parse(last), error: null };
  } catch {
    return { json: null, error: signal === 'SIGKILL' ? `killed after ${timeoutMs} ms` : `exit ${code}, last line ${JSON.stringify(last.slice(0, 200))}` };
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
