#!/usr/bin/env node
// Benchmark: the MDM cluster on etcd (`lab up --mdm-cluster 3`: 3 etcd members, Master and
// Slave MDMs, a Tie-Breaker) against the reference, one MDM with its embedded journal (`lab
// up`), both labs started by this script with the same SDSs, devices and volume, side by side.
//
// What it measures, and how:
// 1. Management operations: N volume creates (POST /api/types/Volume/instances), N maps and N
//    unmaps (addMappedSdc / removeMappedSdc), each one HTTPS request on a kept-alive
//    connection, timed from send to answer. The requests go straight to the MDM (no CLI
//    start-up in the numbers): on the cluster to the Master's API, and once more to the
//    Slave's (which forwards to the Master). The sides alternate request by request, so a
//    burst of load elsewhere on the machine hits both alike. Median and p99 per side.
// 2. Failover: kill -9 the Master (pid from `lab status --json`), then, every 50 ms, a volume
//    create through the other MDM's API until one is accepted and answered by that MDM
//    (x-meshblock-mdm); a 401 (the token died with the Master) logs in again, as a client
//    does, inside the measured time. The killed MDM is restarted (`lab up --detach`) and the
//    next round waits until it is a Slave and the cluster is ClusteredNormal. The reference
//    has no failover: its MDM is killed and restarted at once by `lab up`, as a service
//    manager would, and timed the same way (kill to a create accepted).
// 3. The longest client IO stall during a failover: fio (nbd engine, iodepth 1, 4k randwrite,
//    an fsync every fsyncEvery writes, time-based) on the lab volume, the Master killed
//    --kill-at seconds into the measured window; fio's max completion latency of writes and
//    of fsyncs against the same run without a fault (baseline), and fio's error (must be 0).
//    The reference gets the same runs, its MDM killed and restarted at once. Each run is
//    repeated --stall-rounds times (the scenarios alternating): a maximum is one sample.
// 4. A planned switch: POST /api/instances/System/action/changeMdmOwnership {"id": Slave} to
//    the Master's API, then, every 50 ms, a volume create through the new Master's API until
//    it is accepted; and one fio run as in 3 with the switch in its window.
// The fio region of each volume is written once in full first, so the runs measure writes
// to allocated chunks.
//
// Its own network: run as root, the script re-runs itself in a new network namespace (`unshare
// --net`, loopback only) unless --shared-network is given. On a shared machine other labs and
// tests pick loopback ports too, and `lab up` chooses each MDM's ports once: while a killed
// MDM is down another lab can take its API port (its restart then fails with EADDRINUSE), and
// a Slave's wire port is not even held while it is a Slave (seen here: another lab's SDC
// talking to our MDM). In its own namespace nobody else can take a port from under a failover.
//
// Exit codes: 0 done, 1 a lab failed to start, a request failed, or fio reported an error,
// 2 bad usage, 128+N interrupted by signal N. Both labs are stopped and purged (`lab down
// --purge`) and the temp dir removed on every path out.
//
// Usage: node scripts/bench-mdm.mjs [--ops 100] [--rounds 5] [--size 512M] [--runtime 20]
//          [--ramp-time 2] [--kill-at 5] [--stall-rounds 3] [--out docs/benchmarks.md] [--dir /tmp] [--shared-network] [--quick]

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { OutOfRangeError } from '../dist/common/errors.js';
import { mdmMasterLeaseMs } from '../dist/common/limits.js';
import { GiB, MiB, formatBytes } from '../dist/common/units.js';
import {
  BenchError,
  checkPaths,
  delay,
  describeBuild,
  exitRuntimeError,
  firstLine,
  firstLineMatching,
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
  textTable,
  throwIfInterrupted,
  waitForQuiet,
  writeSection,
} from './bench-common.mjs';
import {
  describeMachine,
  inOwnNetwork,
  labArgs,
  labBenchOptions,
  labDirsUp,
  labFailure,
  labFile,
  labRestApi,
  labStatus,
  labUp,
  labUpMs,
  labVolumeUri,
  loadAverage,
  percentile,
  stopLab,
} from './bench-labs.mjs';

const volumeName = 'vol1';
const sizeBytesMin = 64 * MiB;
/** The lab's devices and volume are at least this big (the lab's own minimum device size). */
const labDeviceBytesMin = 2 * GiB;
/** How often a failover or switch probe sends its change (the brief: every 50 ms). */
const probeIntervalMs = 50;
/** A probe request not answered in this is abandoned and sent again (a dead Master never answers). */
const probeRequestTimeoutMs = 1000;
/** A failover or switch that takes longer than this is a failure, not a number. */
const takeoverTimeoutMs = 60_000;
/** For a restarted MDM to rejoin as a Slave and the cluster to be ClusteredNormal again. */
const rejoinTimeoutMs = 60_000;
/** Between rounds: the cluster settles (leases renewed, Slave caught up) before the next kill. */
const settleMs = 2000;
/** fio stall runs: an fsync after this many writes. */
const fsyncEvery = 32;
const fioSlackMs = 60_000;
/**
 * Bounded wait for a quiet machine before each timed series or round (see bench-lab). Short:
 * there are some forty of them, and on a machine others keep busy each one runs out; the
 * runs that started busy are counted in the report instead.
 */
const quietWaitMsMax = 5000;
/** Thin volumes created by the management series and the probes: no capacity is used. */
const probeVolumeSizeInKb = 8 * 1024 * 1024;

const sectionHeading = '## MDM cluster benchmark';
const analysisStart = '<!-- mdm-analysis:start -->';
const analysisEnd = '<!-- mdm-analysis:end -->';

const usage = `Usage: node scripts/bench-mdm.mjs [options]

Starts a 3-node MDM cluster lab (etcd) and a one-MDM lab (embedded journal) and measures, side
by side: management operation latency, failover time (kill -9 the Master), the longest fio
stall during a failover, and the planned ownership switch.

  --ops N              volume creates, maps and unmaps per side [default: 100; --quick: 20]
  --rounds N           failover, restart and switch rounds [default: 5; --quick: 2]
  --size SIZE          region fio writes (binary units) [default: 512M; --quick: 256M]
  --runtime SECONDS    measured time per fio run [default: 20; --quick: 10]
  --ramp-time SECONDS  unmeasured warm-up per fio run [default: 2; --quick: 1]
  --kill-at SECONDS    when, into fio's measured window, the fault is made [default: 5; --quick: 3]
  --stall-rounds N     fio runs per stall scenario [default: 3; --quick: 1]
  --out FILE           also write the report as a Markdown section '${sectionHeading.slice(3)}' of FILE,
                       in place (or at the end), keeping the rest and the hand-written analysis
  --dir DIR            where the temp dir (the labs) goes [default: ${os.tmpdir()}]
  --shared-network     run in this network namespace (as root the bench re-runs itself in a
                       new one, so that no other lab on the machine can take the labs' ports)
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
    options: { ...sharedOptionSpecs, ops: { type: 'string' }, 'kill-at': { type: 'string' }, 'stall-rounds': { type: 'string' }, 'shared-network': { type: 'boolean', default: false } },
  });
  if (values.help) return null;
  const quick = values.quick;
  // This bench's fio runs are longer than the throughput benches': a fault sits inside them.
  const shared = parseSharedOptions(
    { ...values, runtime: values.runtime ?? (quick ? '10' : '20') },
    { sizeText: '512M', sizeTextQuick: '256M', rounds: '5', roundsQuick: '2', sizeBytesMin },
  );
  const options = {
    ...shared,
    opCount: parseInteger('--ops', values.ops ?? (quick ? '20' : '100'), 1, 10_000),
    killAtSeconds: parseInteger('--kill-at', values['kill-at'] ?? (quick ? '3' : '5'), 1, 3600),
    stallRoundCount: parseInteger('--stall-rounds', values['stall-rounds'] ?? (quick ? '1' : '3'), 1, 100),
    sharedNetwork: values['shared-network'],
  };
  if (options.killAtSeconds >= options.runtimeSeconds) {
    throw new OutOfRangeError('--kill-at', `less than --runtime (${options.runtimeSeconds})`, String(options.killAtSeconds));
  }
  checkPaths(values, options);
  return options;
}

// --- results ---------------------------------------------------------------------------


function maximum(values) {
  return values.length === 0 ? null : Math.max(...values);
}

function ms(value, digits = 1) {
  return value === null || value === undefined ? '-' : value.toFixed(digits);
}

function ratio(mine, reference) {
  return mine === null || reference === null || reference === 0 ? '-' : (mine / reference).toFixed(2);
}

// --- the labs --------------------------------------------------------------------------

async function startLab(name, labDir, options, cluster) {
  const port = await freeLoopbackPort();
  const deviceBytes = Math.max(labDeviceBytesMin, options.sizeBytes);
  const sizeText = `${deviceBytes / MiB}MiB`;
  const extra = ['--detach', '--nbd-port', String(port), '--device-size', sizeText, '--volume', `${volumeName}:${sizeText}`, ...(cluster ? ['--mdm-cluster', '3'] : [])];
  const state = await labUp(labDir, extra, { name });
  throwIfInterrupted();
  const file = labFile(labDir);
  const lab = {
    name,
    dir: labDir,
    cluster,
    uri: labVolumeUri(state.stdout, volumeName, name),
    command: ['node', 'bin/meshblock.cjs', 'lab', 'up', '--dir', '$DIR', ...extra].join(' '),
    api: labRestApi(labDir),
    apiUrls: file.apiAddresses ?? [file.apiUrl],
  };
  const [pools, sdcs] = await Promise.all([lab.api.must(lab.apiUrls[0], 'GET', '/api/types/StoragePool/instances'), lab.api.must(lab.apiUrls[0], 'GET', '/api/types/Sdc/instances')]);
  lab.poolId = pools.body[0].id;
  lab.sdcId = sdcs.body[0].id;
  return lab;
}

/** `lab up --detach` on an existing lab: starts what is not running (a killed MDM). */
async function resumeLab(lab) {
  const state = await run(process.execPath, labArgs('up', lab.dir, ['--detach']), labUpMs);
  throwIfInterrupted();
  if (state.code !== 0) throw labFailure(`meshblock lab up (${lab.name}, resuming)`, state);
}

/** The MDM process entries of `lab status --json`: { master, slave } on a cluster (or null while there is none). */
async function clusterRoles(lab) {
  const status = await labStatus(lab.dir, lab.name);
  const mdms = status.processes.filter((entry) => entry.role === 'mdm');
  const master = mdms.find((entry) => entry.clusterRole === 'master' && entry.state === 'running') ?? null;
  const slave = mdms.find((entry) => entry.clusterRole === 'slave' && entry.state === 'running') ?? null;
  return { master, slave, mdms };
}

function apiUrlOf(lab, mdmName) {
  const file = labFile(lab.dir);
  const entry = file.processes.find((process) => process.role === 'mdm' && process.name === mdmName);
  if (entry?.apiAddress === undefined) throw new BenchError('SERVER', `lab.json of ${lab.name} has no API address for ${mdmName}`);
  return `https://${entry.apiAddress}`;
}

/** Until both MDMs run, one Master and one Slave, and the cluster says ClusteredNormal. */
async function waitClusterNormal(lab) {
  const deadline = Date.now() + rejoinTimeoutMs;
  let last = 'no answer';
  for (;;) {
    throwIfInterrupted();
    const roles = await clusterRoles(lab);
    if (roles.master !== null && roles.slave !== null) {
      const answer = await lab.api
        .authed(apiUrlOf(lab, roles.slave.name), 'POST', '/api/instances/System/action/queryMdmCluster', { body: {}, timeoutMs: 2000 })
        .catch((err) => ({ status: 0, body: err.message }));
      const view = answer.body;
      if (answer.status === 200 && view.clusterState === 'ClusteredNormal' && view.master?.name === roles.master.name && view.slaves.every((mdm) => mdm.status === 'Normal')) return roles;
      last = `${roles.master.name} master, ${roles.slave.name} slave; cluster ${answer.status === 200 ? view.clusterState : `not answering (${answer.status}: ${JSON.stringify(answer.body)})`}`;
    } else {
      last = roles.mdms.map((mdm) => `${mdm.name} ${mdm.state} ${mdm.clusterRole}`).join(', ');
    }
    if (Date.now() > deadline) throw new BenchError('SERVER', `the MDM cluster of ${lab.name} was not whole within ${rejoinTimeoutMs / 1000} s: ${last}`);
    await delay(250);
  }
}

// --- the REST API: RestApi in bench-labs.mjs ---------------------------------------------

function createVolume(lab, base, name, options = {}) {
  return lab.api.authed(base, 'POST', '/api/types/Volume/instances', {
    ...options,
    body: { storagePoolId: lab.poolId, name, volumeSizeInKb: probeVolumeSizeInKb, volumeType: 'ThinProvisioned' },
  });
}

// --- 1. management operations ----------------------------------------------------------

/** Times one request that must answer 200, in ms. */
async function timed(step) {
  const startMs = performance.now();
  const answer = await step();
  const tookMs = performance.now() - startMs;
  if (answer.status !== 200) throw new BenchError('REST', `a timed request answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  return { tookMs, answer };
}

/**
 * N creates, then N maps, then N unmaps on every side, alternating side by side request by
 * request (the side that goes first rotates). Returns ms per operation and side.
 */
async function measureManagement(sides, options, cpuCount) {
  const results = Object.fromEntries(sides.map((side) => [side.key, { create: [], map: [], unmap: [], volumeIds: [] }]));
  let disturbed = 0;
  for (const side of sides) await side.lab.api.login(side.base);
  for (const operation of ['create', 'map', 'unmap']) {
    if (!(await waitForQuiet(cpuCount, quietWaitMsMax, { announce: false }))) disturbed += 1;
    for (let index = 0; index < options.opCount; index++) {
      throwIfInterrupted();
      for (let turn = 0; turn < sides.length; turn++) {
        const side = sides[(index + turn) % sides.length];
        const mine = results[side.key];
        const { lab, base } = side;
        if (operation === 'create') {
          const { tookMs, answer } = await timed(() => createVolume(lab, base, `bench-${side.key}-${index}`));
          mine.create.push(tookMs);
          mine.volumeIds.push(answer.body.id);
        } else {
          const action = operation === 'map' ? 'addMappedSdc' : 'removeMappedSdc';
          const volumeId = mine.volumeIds[index];
          const { tookMs } = await timed(() => lab.api.authed(base, 'POST', `/api/instances/Volume::${volumeId}/action/${action}`, { body: { sdcId: lab.sdcId } }));
          mine[operation].push(tookMs);
        }
      }
    }
    process.stderr.write(
      `management: ${operation} x${options.opCount}: ${sides.map((side) => `${side.key} median ${ms(median(results[side.key][operation]))} ms p99 ${ms(percentile(results[side.key][operation], 99))} ms`).join('; ')}\n`,
    );
  }
  return { results, disturbed };
}

// --- 2 and 4. failover and planned switch ----------------------------------------------

/**
 * Sends a volume create through `base` every probeIntervalMs (each abandoned after
 * probeRequestTimeoutMs) until one is accepted, answered by `expectMdm` when given; resolves
 * the ms since `sinceMs` and the attempts made.
 */
async function probeUntilAccepted(lab, base, sinceMs, label, expectMdm = null) {
  let attempts = 0;
  let last = '';
  for (;;) {
    throwIfInterrupted();
    attempts += 1;
    try {
      const answer = await createVolume(lab, base, `${label}-${attempts}`, { timeoutMs: probeRequestTimeoutMs });
      if (answer.status === 200 && (expectMdm === null || answer.mdm === expectMdm)) return { tookMs: performance.now() - sinceMs, attempts };
      last = `${answer.status} from ${answer.mdm ?? '?'}: ${answer.body?.code ?? JSON.stringify(answer.body)}`;
    } catch (err) {
      last = err.code ?? err.name ?? err.message;
    }
    if (performance.now() - sinceMs > takeoverTimeoutMs) throw new BenchError('TAKEOVER', `${label}: no change accepted through ${base} within ${takeoverTimeoutMs / 1000} s (last: ${last})`);
    await delay(probeIntervalMs);
  }
}

/** kill -9 the Master; the time until the other MDM accepts a change; restart it; until whole again. */
async function failoverRound(lab, round) {
  const { master, slave } = await waitClusterNormal(lab);
  await delay(settleMs);
  const survivorUrl = apiUrlOf(lab, slave.name);
  await lab.api.login(survivorUrl);
  const killedAtMs = performance.now();
  process.kill(master.pid, 'SIGKILL');
  const { tookMs, attempts } = await probeUntilAccepted(lab, survivorUrl, killedAtMs, `failover-${round}`, slave.name);
  const restartAtMs = performance.now();
  await resumeLab(lab);
  const roles = await waitClusterNormal(lab);
  if (roles.master.name !== slave.name) throw new BenchError('TAKEOVER', `after the failover of round ${round} the Master is ${roles.master.name}, not ${slave.name}`);
  return { tookMs, attempts, killed: master.name, survivor: slave.name, rejoinMs: performance.now() - restartAtMs };
}

/** The reference: kill -9 the one MDM and restart it at once (`lab up`); the time until it accepts a change. */
async function restartRound(lab, round) {
  const base = lab.apiUrls[0];
  const mdm = (await labStatus(lab.dir, lab.name)).processes.find((entry) => entry.role === 'mdm');
  await lab.api.login(base);
  await delay(settleMs);
  const killedAtMs = performance.now();
  process.kill(mdm.pid, 'SIGKILL');
  const resuming = resumeLab(lab);
  // Awaited below; a rejection while the probe still runs must not go unhandled meanwhile.
  resuming.catch(() => undefined);
  // A failed resume ends the probe's wait too (it would otherwise wait out takeoverTimeoutMs).
  const result = await Promise.race([probeUntilAccepted(lab, base, killedAtMs, `restart-${round}`), resuming.then(() => new Promise(() => undefined))]);
  await resuming;
  return result;
}

/** changeMdmOwnership to the Slave, through the Master's API; the time until the new Master accepts a change. */
async function switchRound(lab, round) {
  const { master, slave } = await waitClusterNormal(lab);
  await delay(settleMs);
  const masterUrl = apiUrlOf(lab, master.name);
  const targetUrl = apiUrlOf(lab, slave.name);
  await Promise.all([lab.api.login(masterUrl), lab.api.login(targetUrl)]);
  const startedAtMs = performance.now();
  const answer = await lab.api.authed(masterUrl, 'POST', '/api/instances/System/action/changeMdmOwnership', { body: { id: slave.name } });
  const answeredMs = performance.now() - startedAtMs;
  if (answer.status !== 200) throw new BenchError('REST', `changeMdmOwnership to ${slave.name} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  const { tookMs, attempts } = await probeUntilAccepted(lab, targetUrl, startedAtMs, `switch-${round}`, slave.name);
  return { tookMs, answeredMs, attempts, from: master.name, to: slave.name };
}

// --- 3. IO stall -----------------------------------------------------------------------

function prewriteArgs(uri, sizeBytes) {
  return ['--name=prewrite', '--ioengine=nbd', `--uri=${uri}`, '--rw=write', '--bs=1M', '--iodepth=8', `--size=${sizeBytes}`, '--output-format=json'];
}

function stallFioArgs(uri, options) {
  return [
    '--name=stall',
    '--ioengine=nbd',
    `--uri=${uri}`,
    '--rw=randwrite',
    '--bs=4k',
    '--iodepth=1',
    `--fsync=${fsyncEvery}`,
    `--size=${options.sizeBytes}`,
    '--time_based',
    `--runtime=${options.runtimeSeconds}`,
    `--ramp_time=${options.rampSeconds}`,
    '--output-format=json',
  ];
}

async function prewrite(lab, sizeBytes) {
  const args = prewriteArgs(lab.uri, sizeBytes);
  const state = await run('fio', args, 600_000);
  throwIfInterrupted();
  if (state.code !== 0) throw new BenchError('FIO', `fio could not pre-write ${lab.name}'s volume: fio ${args.join(' ')}\n${state.stderr.trim()}`);
}

/**
 * One fio stall run; `fault` (async, may be null) runs --kill-at seconds into the measured
 * window, and `afterFault` once fio has ended (a restart). fio's errors are reported, not thrown.
 */
async function stallRun(lab, options, cpuCount, fault, afterFault = null) {
  throwIfInterrupted();
  const quiet = await waitForQuiet(cpuCount, quietWaitMsMax, { announce: false });
  const args = stallFioArgs(lab.uri, options);
  const { child, state } = spawnTracked('fio', args, { fio: true });
  const killTimer = setTimeout(() => child.kill('SIGKILL'), (options.runtimeSeconds + options.rampSeconds) * 1000 + fioSlackMs);
  let faultDone = Promise.resolve(null);
  const faultTimer =
    fault === null
      ? null
      : setTimeout(() => {
          faultDone = fault().catch((err) => err);
        }, (options.rampSeconds + options.killAtSeconds) * 1000);
  await state.exit;
  clearTimeout(killTimer);
  if (faultTimer !== null) clearTimeout(faultTimer);
  const faultError = await faultDone;
  throwIfInterrupted();
  if (faultError instanceof Error) throw faultError;
  if (afterFault !== null) await afterFault();
  if (state.spawnError !== null) throw new BenchError('FIO', `cannot run fio: ${state.spawnError.message}`);
  let job = null;
  try {
    job = JSON.parse(state.stdout.slice(state.stdout.search(/^\{/m))).jobs?.[0] ?? null;
  } catch {
    // No report: counted as an error below.
  }
  const error = state.code !== 0 || job === null || job.error !== 0 ? `fio exited with ${state.signal ?? state.code}, job error ${job?.error ?? '?'}: ${state.stderr.trim().split('\n').slice(-3).join(' | ')}` : null;
  return {
    writeClatMaxMs: job === null ? null : job.write.clat_ns.max / 1e6,
    writeClatP99Ms: job === null ? null : job.write.clat_ns.percentile['99.000000'] / 1e6,
    syncLatMaxMs: job?.sync?.lat_ns?.max === undefined ? null : job.sync.lat_ns.max / 1e6,
    iops: job === null ? null : job.write.iops,
    error,
    disturbed: !quiet,
  };
}

// --- the machine -----------------------------------------------------------------------

function describeLabMachine(parentDir) {
  // The labs' etcd WALs and journals are fsynced: the filesystem under them matters.
  const fsLines = firstLineMatching('df', ['--output=fstype', parentDir], /^(?!Type)\S/);
  return {
    ...describeMachine(),
    memoryGiB: (os.totalmem() / GiB).toFixed(0),
    etcd: firstLine('etcd', ['--version']),
    tmpFilesystem: fsLines === '' ? 'unknown' : fsLines.trim(),
    parentDir,
    build: describeBuild(),
  };
}

// --- report ----------------------------------------------------------------------------

const operationTitles = { create: 'volume create (POST /api/types/Volume/instances)', map: 'map (addMappedSdc)', unmap: 'unmap (removeMappedSdc)' };

function managementRows(management) {
  const { results } = management;
  const header = ['Operation', 'journal median ms', 'journal p99 ms', 'cluster median ms', 'cluster p99 ms', 'cluster/journal median', 'cluster/journal p99', 'via Slave median ms', 'via Slave p99 ms'];
  const rows = Object.keys(operationTitles).map((operation) => {
    const stat = (key) => ({ median: median(results[key][operation]), p99: percentile(results[key][operation], 99) });
    const journal = stat('journal');
    const cluster = stat('cluster');
    const slave = stat('slave');
    return [operationTitles[operation], ms(journal.median, 2), ms(journal.p99, 2), ms(cluster.median, 2), ms(cluster.p99, 2), ratio(cluster.median, journal.median), ratio(cluster.p99, journal.p99), ms(slave.median, 2), ms(slave.p99, 2)];
  });
  return { header, rows };
}

function takeoverRows({ failovers, restarts, switches }) {
  const header = ['What (kill or switch → a change accepted)', 'rounds', 'median ms', 'max ms', 'min ms', 'vs reference (median)'];
  const line = (title, values, reference) => [title, String(values.length), ms(median(values), 0), ms(maximum(values), 0), ms(values.length === 0 ? null : Math.min(...values), 0), reference === null ? '-' : ratio(median(values), median(reference))];
  const failoverMs = failovers.map((entry) => entry.tookMs);
  const restartMs = restarts.map((entry) => entry.tookMs);
  const rows = [
    line('cluster: kill -9 the Master → the Slave accepts a create', failoverMs, restartMs),
    line('reference: kill -9 the one MDM, restarted at once (lab up) → it accepts a create', restartMs, null),
    line('cluster: changeMdmOwnership → the new Master accepts a create', switches.map((entry) => entry.tookMs), null),
    line('cluster: changeMdmOwnership answered', switches.map((entry) => entry.answeredMs), null),
    line('cluster: killed Master restarted (lab up) → Slave, ClusteredNormal', failovers.map((entry) => entry.rejoinMs), null),
  ];
  return { header, rows };
}

/** The longest completion of a run, write or fsync. */
function longestMs(result) {
  return Math.max(result.writeClatMaxMs ?? 0, result.syncLatMaxMs ?? 0);
}

function stallRows(stalls) {
  const header = [
    'fio run (4k randwrite QD1, fsync every 32)',
    'runs',
    'longest completion ms, worst run',
    'longest completion ms, median run',
    'write clat max ms, worst',
    'fsync max ms, worst',
    'write clat p99 ms, median',
    'IOPS, median',
    'worst vs baseline worst',
    'fio errors',
  ];
  const rows = stalls.map(({ title, results, baseline }) => {
    const errors = results.filter((result) => result.error !== null);
    const worst = maximum(results.map(longestMs));
    return [
      title,
      String(results.length),
      ms(worst, 1),
      ms(median(results.map(longestMs)), 1),
      ms(maximum(results.map((result) => result.writeClatMaxMs ?? 0)), 1),
      ms(maximum(results.map((result) => result.syncLatMaxMs ?? 0)), 1),
      ms(median(results.map((result) => result.writeClatP99Ms)), 2),
      Math.round(median(results.map((result) => result.iops)) ?? 0).toLocaleString('en-US'),
      baseline === null ? '-' : ratio(worst, maximum(baseline.results.map(longestMs))),
      errors.length === 0 ? 'none' : `${errors.length}: ${errors[0].error}`,
    ];
  });
  return { header, rows };
}

function markdownSection({ options, machine, management, takeovers, stalls, startedAt, loads, labCommands, analysis }) {
  const argv = process.argv.slice(2).join(' ');
  const disturbedStalls = stalls.reduce((sum, entry) => sum + entry.results.filter((result) => result.disturbed).length, 0);
  const stallRunCount = stalls.reduce((sum, entry) => sum + entry.results.length, 0);
  return `${sectionHeading}

Generated by \`npm run build && node scripts/bench-mdm.mjs${argv ? ` ${argv}` : ''}\` (started ${startedAt}).

Two labs on this machine, started by the script with the same 3 SDSs (sparse-file devices),
one SDC and one ${formatBytes(Math.max(labDeviceBytesMin, options.sizeBytes))} volume: the **cluster**, \`lab up --mdm-cluster 3\`
(3 etcd members, Master and Slave MDMs, a Tie-Breaker; every committed command is an etcd transaction
under the Master's lease), and the **reference** (**journal**), \`lab up\`: one MDM with its embedded journal.

### Management operations

${options.opCount} of each per side, one HTTPS request each on a kept-alive connection (no CLI start-up),
timed from send to answer; the sides alternate request by request. "cluster" is the Master's own API;
"via Slave" is the same cluster through the Slave's API, which forwards to the Master. p99 is the
nearest rank (with ${options.opCount} requests, the ${Math.ceil(0.99 * options.opCount)}th fastest).${management.disturbed > 0 ? ` **${management.disturbed} of 3 series started without a quiet machine.**` : ''}

${markdownTable(managementRows(management))}

### Failover and planned switch

Each round: kill -9 the Master (pid from \`lab status --json\`), then a volume create through the
other MDM's API every ${probeIntervalMs} ms (each attempt abandoned after ${probeRequestTimeoutMs} ms) until one is accepted
and answered by that MDM; a 401 logs in again inside the measured time. Then the killed MDM is
restarted (\`lab up --dir D --detach\`) and the next round waits until it is a Slave and the cluster
is ClusteredNormal. The reference cannot fail over: its MDM is killed and restarted at once by
\`lab up\` (as a service manager would) and timed the same way. The switch is
\`POST /api/instances/System/action/changeMdmOwnership {"id": SLAVE}\` to the Master's API, then
creates through the new Master's API every ${probeIntervalMs} ms. ${options.roundCount} round(s) each; the
Master's etcd lease is ${mdmMasterLeaseMs} ms (\`mdmMasterLeaseMs\`, src/common/limits.ts).

${markdownTable(takeoverRows(takeovers))}

### Longest client IO stall

fio (nbd engine, one job) on the lab's volume, its ${formatBytes(options.sizeBytes)} region written in full first:
4k random writes at iodepth 1, an fsync every ${fsyncEvery} writes, ${options.runtimeSeconds} s measured after ${options.rampSeconds} s ramp; the
fault is made ${options.killAtSeconds} s into the measured window; ${options.stallRoundCount} run(s) per scenario, the scenarios alternating.
"Longest completion" is the larger of fio's write clat max and fsync latency max in a run; "worst vs baseline worst"
compares it with that lab's runs without a fault.${disturbedStalls > 0 ? ` **${disturbedStalls} of ${stallRunCount} runs started without a quiet machine.**` : ''}

${markdownTable(stallRows(stalls))}

Machine: ${machine.cpuModel}, ${machine.cpuCount} logical CPUs, ${machine.memoryGiB} GiB RAM, ${machine.kernel}, Node.js ${machine.node},
${machine.fio}, ${machine.etcd}, labs on ${machine.tmpFilesystem} (${machine.parentDir}); meshblock ${machine.meshblock}, ${machine.build}.
Load average (1/5/15 min) at start ${loads.start}, at the end ${loads.end}; other engineers share this machine.
Network: ${!inOwnNetwork() ? 'the machine\'s own (shared with other labs and tests)' : 'a network namespace of its own (`unshare --net`, loopback only), so no other lab could take a port'}.

How it was run:

\`\`\`
${labCommands.join('\n')}
fio ${prewriteArgs('nbd://127.0.0.1:PORT/vol1', options.sizeBytes).join(' ')}
fio ${stallFioArgs('nbd://127.0.0.1:PORT/vol1', options).join(' ')}
\`\`\`

### Analysis

${analysisStart}
${analysis ?? '_Not written yet. Kept across re-runs of the script (between the mdm-analysis markers); check it still matches the numbers above._'}
${analysisEnd}
`;
}

// --- main ------------------------------------------------------------------------------

async function main() {
  const parsed = await labBenchOptions('bench-mdm', parseOptions, usage, import.meta.url);
  if (parsed.exitCode !== undefined) return parsed.exitCode;
  const { options } = parsed;
  if (!options.sharedNetwork && !inOwnNetwork()) {
    process.stderr.write('bench-mdm: not root, so running in the shared network namespace: another lab on this machine may take a port of a killed MDM\n');
  }

  const startedAt = new Date().toISOString();
  const loads = { start: loadAverage(), end: '' };
  const machine = describeLabMachine(options.parentDir);
  const workDir = fs.mkdtempSync(path.join(options.parentDir, 'meshblock-bench-mdm-'));
  const labs = [];
  try {
    // The reference first: a cluster Slave's wire port is recorded in lab.json but not held
    // (only the Master listens), so a lab started after the cluster could take it.
    process.stderr.write(`starting the reference lab (one MDM, journal) and the 3-node MDM cluster lab in ${workDir}\n`);
    const journal = await startLab('journal', path.join(workDir, 'journal'), options, false);
    labs.push(journal);
    const cluster = await startLab('cluster', path.join(workDir, 'cluster'), options, true);
    labs.push(cluster);
    const { master, slave } = await waitClusterNormal(cluster);
    process.stderr.write(`labs up: journal ${journal.uri}, cluster ${cluster.uri} (Master ${master.name}, Slave ${slave.name}); pre-writing ${formatBytes(options.sizeBytes)} of each\n`);
    await prewrite(journal, options.sizeBytes);
    await prewrite(cluster, options.sizeBytes);

    // 1. Management operations.
    const sides = [
      { key: 'journal', lab: journal, base: journal.apiUrls[0] },
      { key: 'cluster', lab: cluster, base: apiUrlOf(cluster, master.name) },
      { key: 'slave', lab: cluster, base: apiUrlOf(cluster, slave.name) },
    ];
    const management = await measureManagement(sides, options, machine.cpuCount);

    // 2. Failover rounds, each followed by a reference restart round.
    const takeovers = { failovers: [], restarts: [], switches: [] };
    for (let round = 1; round <= options.roundCount; round++) {
      await waitForQuiet(machine.cpuCount, quietWaitMsMax, { announce: false });
      const failover = await failoverRound(cluster, round);
      takeovers.failovers.push(failover);
      process.stderr.write(`failover ${round}/${options.roundCount}: kill -9 ${failover.killed} → ${failover.survivor} accepted a create after ${ms(failover.tookMs, 0)} ms (${failover.attempts} attempts); ${failover.killed} back as Slave ${ms(failover.rejoinMs, 0)} ms after its restart\n`);
      await waitForQuiet(machine.cpuCount, quietWaitMsMax, { announce: false });
      const restart = await restartRound(journal, round);
      takeovers.restarts.push(restart);
      process.stderr.write(`reference restart ${round}/${options.roundCount}: kill -9 the MDM, lab up → a create accepted after ${ms(restart.tookMs, 0)} ms (${restart.attempts} attempts)\n`);
    }

    // 4. Planned switches.
    for (let round = 1; round <= options.roundCount; round++) {
      await waitForQuiet(machine.cpuCount, quietWaitMsMax, { announce: false });
      const switched = await switchRound(cluster, round);
      takeovers.switches.push(switched);
      process.stderr.write(`switch ${round}/${options.roundCount}: ${switched.from} → ${switched.to}: answered in ${ms(switched.answeredMs, 0)} ms, ${switched.to} accepted a create after ${ms(switched.tookMs, 0)} ms\n`);
    }

    // 3 and 4. fio stall runs, the labs alternating.
    const killMaster = async () => {
      const roles = await clusterRoles(cluster);
      if (roles.master === null) throw new BenchError('SERVER', 'no Master to kill');
      process.kill(roles.master.pid, 'SIGKILL');
    };
    const killJournalMdm = async () => {
      const mdm = (await labStatus(journal.dir, journal.name)).processes.find((entry) => entry.role === 'mdm');
      process.kill(mdm.pid, 'SIGKILL');
      await resumeLab(journal);
    };
    const switchMaster = async () => {
      const roles = await clusterRoles(cluster);
      const answer = await cluster.api.authed(apiUrlOf(cluster, roles.master.name), 'POST', '/api/instances/System/action/changeMdmOwnership', { body: { id: roles.slave.name } });
      if (answer.status !== 200) throw new BenchError('REST', `changeMdmOwnership answered ${answer.status}: ${JSON.stringify(answer.body)}`);
    };
    const plan = [
      { title: 'journal: no fault (baseline)', lab: journal, fault: null, baselineOf: 'journal' },
      { title: 'cluster: no fault (baseline)', lab: cluster, fault: null, baselineOf: 'cluster' },
      {
        title: 'cluster: kill -9 the Master',
        lab: cluster,
        fault: killMaster,
        after: async () => {
          await resumeLab(cluster);
          await waitClusterNormal(cluster);
        },
        against: 'cluster',
      },
      { title: 'journal: kill -9 the MDM, restarted at once', lab: journal, fault: killJournalMdm, against: 'journal' },
      { title: 'cluster: changeMdmOwnership', lab: cluster, fault: switchMaster, after: () => waitClusterNormal(cluster), against: 'cluster' },
    ];
    const stalls = plan.map((entry) => ({ title: entry.title, entry, results: [], baseline: null }));
    for (const stall of stalls) {
      const against = stall.entry.against;
      if (against !== undefined) stall.baseline = stalls.find((other) => other.entry.baselineOf === against);
    }
    for (let round = 1; round <= options.stallRoundCount; round++) {
      for (const stall of stalls) {
        const { entry } = stall;
        if (entry.lab === cluster) await waitClusterNormal(cluster);
        const result = await stallRun(entry.lab, options, machine.cpuCount, entry.fault, entry.after ?? null);
        stall.results.push(result);
        process.stderr.write(
          `fio ${round}/${options.stallRoundCount} ${entry.title}: write clat max ${ms(result.writeClatMaxMs)} ms, fsync max ${ms(result.syncLatMaxMs)} ms, ${Math.round(result.iops ?? 0)} IOPS, error: ${result.error ?? 'none'}\n`,
        );
      }
    }
    loads.end = loadAverage();

    const tables = [
      ['Management operations (ms; journal = one MDM, embedded journal; cluster = 3-node on etcd, the Master; via Slave = forwarded)', managementRows(management)],
      ['Failover and planned switch (ms)', takeoverRows(takeovers)],
      ['Longest client IO stall', stallRows(stalls)],
    ];
    process.stdout.write(`\n${tables.map(([title, table]) => `${title}\n${textTable(table)}`).join('\n\n')}\n\nload average ${loads.start} -> ${loads.end}\n`);
    const fioErrors = stalls.filter((entry) => entry.results.some((result) => result.error !== null));
    if (options.outPath !== null) {
      const labCommands = labs.map((lab) => lab.command);
      writeSection(options.outPath, { heading: sectionHeading, analysisStart, analysisEnd }, (analysis) =>
        markdownSection({ options, machine, management, takeovers, stalls, startedAt, loads, labCommands, analysis }),
      );
      process.stdout.write(`\nwrote the '${sectionHeading.slice(3)}' section of ${options.outPath}\n`);
    }
    if (fioErrors.length > 0) {
      process.stderr.write(`bench-mdm: fio reported errors in ${fioErrors.map((entry) => entry.title).join(', ')}\n`);
      return exitRuntimeError;
    }
    return 0;
  } catch (err) {
    if (err instanceof BenchError && err.code === 'INTERRUPTED') return interruptedExitCode();
    process.stderr.write(`bench-mdm: ${err instanceof BenchError ? err.message : (err?.stack ?? String(err))}\n`);
    if (labs.length > 0) {
      // The daemons' logs go with the temp dir: keep the tails that say why.
      for (const lab of labs) {
        const logDir = path.join(lab.dir, 'logs');
        if (!fs.existsSync(logDir)) continue;
        for (const name of fs.readdirSync(logDir).filter((file) => /^mdm/.test(file))) {
          const tail = fs.readFileSync(path.join(logDir, name), 'utf8').trim().split('\n').slice(-5).join('\n');
          process.stderr.write(`--- ${lab.name} ${name} (last lines)\n${tail}\n`);
        }
      }
    }
    return exitRuntimeError;
  } finally {
    killRunning('SIGKILL', { fioOnly: true });
    for (const lab of labs) lab.api.destroy();
    for (const labDir of [...labDirsUp]) await stopLab(labDir).catch((err) => process.stderr.write(`bench-mdm: stopping ${labDir}: ${err.message}\n`));
    killRunning('SIGKILL');
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

// Run only as a program: the test imports parseOptions.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) process.exitCode = await main();
