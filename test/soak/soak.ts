// Soak: the CI fault tests' failures at random, for minutes to hours, on one cluster under
// one verifying writer. It proves that a long, seeded run of single failures (an SDS killed
// and back before or after its copies are rebuilt elsewhere, an SDS hung and resumed, the
// Master MDM killed and restarted, the Master hung past its lease and resumed, the Master's
// etcd member killed and restarted, the SDC killed and restarted) costs the client no IO
// error and no acknowledged write: the writer sees none while it runs, and every block reads
// back at its last acknowledged version at the end.
//
// The control plane is a 3-node MDM cluster by default (3 etcd members, Master and Slave
// MDMs, a Tie-Breaker: test/helpers/mdm-cluster.ts), SDSs and the SDC given both MDMs'
// addresses; SOAK_MDMS=1 runs the one MDM with its embedded journal instead, whose fault is
// `mdm-kill` (kill -9 it, restart it on its ports and data). After an MDM fault is healed the
// run also waits until the cluster is ClusteredNormal (the old Master back as a Slave).
// Not here: a network partition of the Master. It needs every MDM and etcd member in its own
// network namespace from the start (test/mdm-cluster-partition's set-up), a different
// cluster from this one; killing the Master's etcd member for ~10 s is the soak's stand-in.
//
// Fault model: one failure at a time. Two copies survive one failure, so after every fault
// is healed the run waits until the MDM reports the cluster whole (rebuild idle, no degraded
// or failed bytes) before the next. The fault sequence, its targets and its delays come from
// a mulberry32 stream of SOAK_SEED; the writer's block choice and content from the same
// seed. Process timing is not replayed, so a replay repeats the faults, not the interleaving.
//
// Not part of `tap` (package.json excludes test/soak/**); run it with `npm run soak`:
//
//   SOAK_SECONDS  how long to keep injecting faults (default 300); startup, the last heal
//                 and the final read-back come on top
//   SOAK_SEED     u32 seed (default random; printed first, with the line that replays it)
//   SOAK_SDS      SDSs in the cluster (default 4, at least 3: a full rebuild needs two left)
//   SOAK_MDMS     3 (default): a 3-node MDM cluster on etcd; 1: one MDM with its journal
//   SOAK_FLUSH_EVERY_MS
//                 how often the writer sends NBD_CMD_FLUSH (default 500; 0 for never, to
//                 look past a flush problem at everything else)
//
// It stops at the first problem (a writer error, wrong data, a cluster that does not become
// whole, a writer that stops making progress) and prints the seed, the fault history and
// the writer's details, and saves every daemon's log under .tap/soak/seed-SEED/.

import { spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { OutOfRangeError } from '../../src/common/errors.js';
import { envInteger } from '../helpers/env.js';
import { mulberry32 } from '../../src/common/seeded-random.js';
import type { MdmClusterView } from '../../src/mdm/cluster-member.js';
import type { RestDashboard } from '../../src/mdm/rest-objects.js';
import { populateCluster, restartSds, startCluster, startMdm, startSdc, until, type Cluster, type ControlPlane, type Mdm } from '../helpers/cluster.js';
import { dashboard, untilWhole } from '../helpers/fault-load.js';
import { startMdmCluster, type MdmClusterHandle } from '../helpers/mdm-cluster.js';
import { repoRoot, type DaemonHandle } from '../helpers/processes.js';
import { startVerifier, summary, type VerifierStats, type VerifyingWriter } from '../helpers/verifier.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

// --- settings --------------------------------------------------------------------------

const soakSecondsDefault = 300;
const sdsCountDefault = 4;
const u32Max = 0xffff_ffff;

const sdsDownAfterSeconds = 2;
/** Short, so that both kinds of return happen: sooner is a delta rebuild, later a full one. */
const rebuildAfterSeconds = 8;
const mdmArgs = ['--sds-down-after', String(sdsDownAfterSeconds), '--rebuild-after', String(rebuildAfterSeconds)];

const deviceBytes = 2 * GiB;
const volumeBytes = GiB;
const writerRegionBytes = 256 * MiB;
const writerDepth = 8;
const writerFlushEveryMsDefault = 500;
/** Longer than any planned outage of the SDC (sdc-kill below) plus its start. */
const writerReconnectTimeoutMs = 120_000;

/** For the MDM cluster to be ClusteredNormal again after an MDM fault (a restarted MDM rejoins as a Slave). */
const clusterNormalTimeoutMs = 90_000;
/** A full rebuild and the rebalance back, under load, on a small machine. */
const wholeTimeoutMs = 300_000;
/** For the MDM to see every SDS and the SDC connected again after a heal. */
const reconnectedTimeoutMs = 90_000;
/** Writes the writer must complete after every heal: it is not stuck. */
const progressWritesMin = 200;
const progressTimeoutMs = 60_000;
/** How often the writer's counters are checked while a fault is on. */
const watchIntervalMs = 1000;
/** How often the reaper's list of daemons is brought up to date (see startReaper). */
const reaperScanIntervalMs = 1000;
/** On top of SOAK_SECONDS for tap's timeout: startup, the last fault's heal, the read-back. */
const slackSeconds = 1200;

type FaultKind = 'sds-kill-delta' | 'sds-kill-full' | 'sds-stop' | 'mdm-kill' | 'master-kill' | 'master-stop' | 'master-etcd-kill' | 'sdc-kill' | 'quiet';

/**
 * Relative frequency and how long each fault keeps its target away, in ms. A delta kill is
 * back well inside --rebuild-after (the SDS's start takes about a second on top); a full
 * kill stays past it, so its copies are re-created elsewhere and the pool rebalances back
 * onto it. A hang is past --sds-down-after, on either side of --rebuild-after.
 */
type FaultPlan = { kind: FaultKind; weight: number; awayMsMin: number; awayMsMax: number };
const dataFaultKinds: readonly FaultPlan[] = [
  { kind: 'sds-kill-delta', weight: 3, awayMsMin: 500, awayMsMax: (rebuildAfterSeconds - 3) * 1000 },
  { kind: 'sds-kill-full', weight: 2, awayMsMin: (rebuildAfterSeconds + 2) * 1000, awayMsMax: (rebuildAfterSeconds + 15) * 1000 },
  { kind: 'sds-stop', weight: 3, awayMsMin: 3000, awayMsMax: 10_000 },
  { kind: 'sdc-kill', weight: 1, awayMsMin: 500, awayMsMax: 3000 },
  { kind: 'quiet', weight: 1, awayMsMin: 5000, awayMsMax: 20_000 },
];
/** One MDM with its journal: killed and restarted on its ports and data. */
const singleMdmFaultKinds: readonly FaultPlan[] = [{ kind: 'mdm-kill', weight: 1, awayMsMin: 1000, awayMsMax: 5000 }];
/**
 * The MDM cluster. The Master killed (a Slave takes over; the old one comes back as a Slave);
 * the Master hung longer than its lease (mdmMasterLeaseMs, 3 s: a Slave takes over, and the
 * woken one must step down without giving an order); the Master's own etcd member killed for
 * about etcd's election timeout times ten (the Master goes on through the other members, or
 * loses its lease if it cannot).
 */
const mdmClusterFaultKinds: readonly FaultPlan[] = [
  { kind: 'master-kill', weight: 1, awayMsMin: 1000, awayMsMax: 5000 },
  { kind: 'master-stop', weight: 1, awayMsMin: 5000, awayMsMax: 7000 },
  { kind: 'master-etcd-kill', weight: 1, awayMsMin: 8000, awayMsMax: 12_000 },
];

const soakSeconds = envInteger('SOAK_SECONDS', soakSecondsDefault, 1, 30 * 86_400);
const seed = envInteger('SOAK_SEED', randomInt(0, u32Max + 1), 0, u32Max);
const sdsCount = envInteger('SOAK_SDS', sdsCountDefault, 3, 16);
const writerFlushEveryMs = envInteger('SOAK_FLUSH_EVERY_MS', writerFlushEveryMsDefault, 0, 3_600_000);
const mdmCount = envInteger('SOAK_MDMS', 3, 1, 3);
if (mdmCount === 2) throw new OutOfRangeError('SOAK_MDMS', '1 (one MDM, journal) or 3 (a 3-node MDM cluster)', '2');
const faultKinds: readonly FaultPlan[] = [...dataFaultKinds, ...(mdmCount === 1 ? singleMdmFaultKinds : mdmClusterFaultKinds)];
const faultWeightTotal = faultKinds.reduce((sum, entry) => sum + entry.weight, 0);
const replayCommand = [
  `SOAK_SEED=${seed}`,
  `SOAK_SECONDS=${soakSeconds}`,
  `SOAK_SDS=${sdsCount}`,
  `SOAK_MDMS=${mdmCount}`,
  ...(writerFlushEveryMs !== writerFlushEveryMsDefault ? [`SOAK_FLUSH_EVERY_MS=${writerFlushEveryMs}`] : []),
  'npm run soak',
].join(' ');

// The seed first, before anything can fail.
t.comment(`soak seed ${seed}: ${soakSeconds} s of faults on ${sdsCount} SDSs and ${mdmCount === 1 ? 'one MDM (journal)' : 'a 3-node MDM cluster (etcd)'}; replay with: ${replayCommand}`);
if (writerFlushEveryMs === 0) t.comment('the writer sends no NBD_CMD_FLUSH (SOAK_FLUSH_EVERY_MS=0)');
// Tells tap's runner too (its own timeout is package.json's, for the normal run).
t.setTimeout((soakSeconds + slackSeconds) * 1000);

// --- the run ---------------------------------------------------------------------------

interface Fault {
  index: number;
  kind: FaultKind;
  /** The SDS it hits (cluster.sds index), for SDS faults. */
  sdsIndex: number | null;
  /** The MDM that was Master when the fault hit it (MDM cluster faults), and the Master after it healed. */
  masterBefore: string | null;
  masterAfter: string | null;
  awayMs: number;
  startedAtMs: number;
  /** Until the target was back (restarted, resumed) and the MDM saw everything connected. */
  healedMs: number | null;
  /** Until untilWhole() after the heal. */
  wholeMs: number | null;
  /** The dashboard's rebuild bytes between before the fault and whole again. */
  rebuildBytes: number | null;
}

class SoakProblem extends Error {}

// One name whatever the seed and length: its test directory is then the same for every run,
// and a run ended by Ctrl-C (no teardown) leaves one behind that the next run clears.
t.test('soak: random faults under a verifying writer', async (t) => {
  const startedAtMs = Date.now();
  const say = (line: string): void => {
    const elapsedSeconds = ((Date.now() - startedAtMs) / 1000).toFixed(1);
    t.comment(`${new Date().toISOString()} +${elapsedSeconds}s ${line}`);
  };
  const random = mulberry32(seed);
  const between = (min: number, max: number): number => min + Math.floor(random() * (max - min + 1));
  // Ends a fault step left running when the run stops at a problem (its sleeps reject, and
  // it starts nothing more), and keeps late writer log lines out of a finished test.
  const abort = new AbortController();
  const { signal } = abort;

  // A teardown before testdir(), on purpose: tap runs all teardowns in one end hook, made by
  // the first t.teardown(), and testdir() removes the directory after the end hooks that
  // exist when it is called. In this order every daemon is killed before the directory
  // goes; the other way round it is removed under running daemons (a run here failed with
  // ENOTEMPTY, which then skipped the teardowns and left the daemons running).
  startReaper(t);
  t.teardown(() => abort.abort());
  const dir = t.testdir();
  const populate = { sdsCount, deviceBytes, volumes: [{ name: 'vol1', sizeBytes: volumeBytes }] };
  // The MDM cluster (null with one MDM), and what SDSs and the SDC are given: the cluster's
  // id and secret and every MDM's wire address.
  let mdms: MdmClusterHandle | null = null;
  let cluster: Cluster;
  if (mdmCount === 1) {
    say(`starting an MDM (${mdmArgs.join(' ')}), ${sdsCount} SDSs with ${deviceBytes / GiB} GiB sparse devices, an SDC`);
    cluster = await startCluster(t, dir, { ...populate, mdmArgs });
  } else {
    say(`starting a 3-node MDM cluster (etcd members mdm1, mdm2, tb1; MDMs mdm1 and mdm2; ${mdmArgs.join(' ')}), ${sdsCount} SDSs with ${deviceBytes / GiB} GiB sparse devices, an SDC`);
    const started = await startMdmCluster(t, dir, { size: 3, mdmArgs });
    mdms = started;
    const plane: ControlPlane = { clusterId: started.clusterId, address: started.addresses, secretFile: started.secretFile, meshblock: (args) => started.cli(args) };
    const first = started.mdms[0] as (typeof started.mdms)[number];
    // Cluster's `mdm` is one MDM's handle: here mdm1's, with every MDM's addresses (what the
    // SDC and SDS restarts below, and untilWhole's log dump, use of it).
    const mdm: Mdm = { ...(first.handle as DaemonHandle), clusterId: started.clusterId, address: started.addresses, apiUrl: `https://${first.apiAddress}`, certPath: started.certPath, secretFile: started.secretFile };
    cluster = { ...(await populateCluster(t, dir, plane, populate)), mdm };
  }
  // Every daemon ever started, for the logs.
  const incarnations: Array<{ label: string; handle: DaemonHandle }> = [];
  const remember = (label: string, handle: DaemonHandle): void => {
    incarnations.push({ label: `${label}.${incarnations.filter((entry) => entry.label.startsWith(`${label}.`)).length + 1}`, handle });
  };
  if (mdms === null) remember('mdm', cluster.mdm);
  else for (const mdm of mdms.mdms) remember(mdm.name, mdm.handle as DaemonHandle);
  cluster.sds.forEach((sds) => remember(sds.name, sds));
  remember('sdc', cluster.sdc);
  say(
    `cluster ${cluster.mdm.clusterId}: ${mdms === null ? `MDM at ${cluster.mdm.address}` : `MDMs ${mdms.mdms.map((mdm) => `${mdm.name} at ${mdm.wireAddress} (API ${mdm.apiAddress})`).join(', ')}, etcd ${mdms.etcd.endpoints.join(', ')}`}, SDSs at ${cluster.sds.map((sds) => sds.address).join(', ')}, volume at ${cluster.uri('vol1')}`,
  );


  /** The MDM cluster's Master: its index in mdms.mdms, once the cluster agrees on one. */
  const masterIndex = async (): Promise<number> => (mdms as MdmClusterHandle).master(reconnectedTimeoutMs);

  const writer = await startVerifier({
    host: '127.0.0.1',
    port: cluster.sdc.nbdPort,
    exportName: 'vol1',
    regionBytes: writerRegionBytes,
    depth: writerDepth,
    seed,
    flushEveryMs: writerFlushEveryMs,
    reconnectTimeoutMs: writerReconnectTimeoutMs,
    log: (line) => {
      if (!signal.aborted) say(line);
    },
  });
  t.teardown(() => {
    abort.abort();
    writer.destroy();
  });

  const faults: Fault[] = [];
  const watch = watchWriter(writer);
  t.teardown(() => watch.stop());
  let rebuildBaselineBytes = 0;
  let rebuildBytesTotal = 0;

  /** The dashboard, or undefined while the MDM cannot answer (it may be restarting). */
  const tryDashboard = async (): Promise<RestDashboard | undefined> => {
    signal.throwIfAborted();
    try {
      return await dashboard(cluster);
    } catch {
      return undefined;
    }
  };

  const apply = async (fault: Fault): Promise<void> => {
    switch (fault.kind) {
      case 'sds-kill-delta':
      case 'sds-kill-full': {
        const index = fault.sdsIndex as number;
        const old = cluster.sds[index] as Cluster['sds'][number];
        await old.kill();
        await sleep(fault.awayMs, undefined, { signal });
        remember(old.name, await restartSds(t, dir, cluster, index));
        return;
      }
      case 'sds-stop': {
        const hung = cluster.sds[fault.sdsIndex as number] as Cluster['sds'][number];
        hung.process.kill('SIGSTOP');
        try {
          await sleep(fault.awayMs, undefined, { signal });
        } finally {
          hung.process.kill('SIGCONT');
        }
        return;
      }
      case 'mdm-kill': {
        // One MDM with its journal (SOAK_MDMS=1).
        const old = cluster.mdm;
        const apiPort = new URL(old.apiUrl).port;
        await old.kill();
        // The dashboard's rebuild counter starts again with the MDM.
        rebuildBaselineBytes = 0;
        await sleep(fault.awayMs, undefined, { signal });
        cluster.mdm = await startMdm(t, dir, { listen: old.address, api: `127.0.0.1:${apiPort}` }, mdmArgs);
        remember('mdm', cluster.mdm);
        return;
      }
      case 'master-kill': {
        const cluster3 = mdms as MdmClusterHandle;
        const index = await masterIndex();
        const master = cluster3.mdms[index] as (typeof cluster3.mdms)[number];
        fault.masterBefore = master.name;
        await master.handle?.kill();
        master.handle = null;
        await sleep(fault.awayMs, undefined, { signal });
        // Its data directory and ports: it rejoins as a Slave (settle waits for that).
        remember(master.name, (await cluster3.start(index)).handle as DaemonHandle);
        return;
      }
      case 'master-stop': {
        const cluster3 = mdms as MdmClusterHandle;
        const master = cluster3.mdms[await masterIndex()] as (typeof cluster3.mdms)[number];
        fault.masterBefore = master.name;
        const hung = master.handle as DaemonHandle;
        hung.process.kill('SIGSTOP');
        try {
          await sleep(fault.awayMs, undefined, { signal });
        } finally {
          hung.process.kill('SIGCONT');
        }
        return;
      }
      case 'master-etcd-kill': {
        const cluster3 = mdms as MdmClusterHandle;
        const master = cluster3.mdms[await masterIndex()] as (typeof cluster3.mdms)[number];
        fault.masterBefore = master.name;
        // An MDM's host runs the etcd member of the same name (etcd-cluster.ts names them mdm1, mdm2, tb1).
        const member = cluster3.etcd.members.findIndex((entry) => entry.name === master.name);
        if (member < 0) throw new SoakProblem(`no etcd member named ${master.name}`);
        await cluster3.etcd.kill(member, 'SIGKILL');
        try {
          await sleep(fault.awayMs, undefined, { signal });
        } finally {
          // From its data directory: it catches up from the others.
          await cluster3.etcd.start(member);
        }
        return;
      }
      case 'sdc-kill': {
        const old = cluster.sdc;
        await old.kill();
        await sleep(fault.awayMs, undefined, { signal });
        // The same listen address, so the writer's reconnects find it.
        cluster.sdc = await startSdc(t, dir, cluster.mdm, old.name, old.nbdAddress);
        remember('sdc', cluster.sdc);
        return;
      }
      case 'quiet':
        await sleep(fault.awayMs, undefined, { signal });
        return;
    }
  };

  /**
   * An MDM cluster with one Master whose Slave and Tie-Breaker are Normal (a restarted or
   * woken MDM back as a Slave, a restarted etcd member back in), as some MDM answers it.
   */
  const untilClusterNormal = async (cluster3: MdmClusterHandle): Promise<MdmClusterView> => {
    let last: MdmClusterView | null = null;
    try {
      return await until(
        'the MDM cluster to be ClusteredNormal',
        async () => {
          signal.throwIfAborted();
          for (const [index, mdm] of cluster3.mdms.entries()) {
            if (mdm.handle === null) continue;
            const view = await cluster3.query(index);
            if (view === null) continue;
            last = view;
            const members = [...view.slaves, ...view.tieBreakers];
            if (view.clusterState === 'ClusteredNormal' && view.master !== null && view.slaves.length === cluster3.mdms.length - 1 && members.every((member) => member.status === 'Normal')) return view;
          }
          return undefined;
        },
        clusterNormalTimeoutMs,
      );
    } catch (err) {
      throw new SoakProblem(`${(err as Error).message}; last view: ${JSON.stringify(last)}`);
    }
  };

  /** Until the MDM cluster is whole (with one), the MDM sees every SDS and the SDC connected, then until the cluster is whole. */
  const settle = async (fault: Fault): Promise<RestDashboard> => {
    if (mdms !== null) fault.masterAfter = (await untilClusterNormal(mdms)).master?.name ?? null;
    await until(
      'every SDS and the SDC to be connected to the MDM again',
      async () => {
        const view = await tryDashboard();
        return view !== undefined && view.health.sdsConnected === sdsCount && view.health.sdsDown === 0 && view.health.sdcConnected >= 1 ? true : undefined;
      },
      reconnectedTimeoutMs,
    );
    fault.healedMs = Date.now() - fault.startedAtMs;
    const view = await untilWhole(cluster, wholeTimeoutMs);
    fault.wholeMs = Date.now() - fault.startedAtMs;
    return view;
  };

  const report = (problem: string): void => {
    say(`SOAK FAILED: ${problem}`);
    say(`seed ${seed}; replay with: ${replayCommand}`);
    say(`fault history (${faults.length}):`);
    for (const fault of faults) say(`  ${describeFault(fault)}`);
    const stats = writer.stats();
    say(`writer: ${summary(stats)}`);
    for (const detail of stats.ioErrorDetails) say(`  io error: ${JSON.stringify(detail)}`);
    for (const failure of stats.verifyFailures) say(`  wrong data: ${JSON.stringify(failure)}`);
    const logDir = path.join(repoRoot, '.tap', 'soak', `seed-${seed}`);
    fs.mkdirSync(logDir, { recursive: true });
    for (const { label, handle } of incarnations) fs.writeFileSync(path.join(logDir, `${label}.log`), handle.stderr());
    fs.writeFileSync(path.join(logDir, 'faults.json'), JSON.stringify({ seed, soakSeconds, sdsCount, problem, faults, writer: stats }, null, 2));
    say(`daemon logs (every incarnation) and the history saved in ${path.relative(repoRoot, logDir)}/`);
  };

  const faultsStartedAtMs = Date.now();
  const endAtMs = faultsStartedAtMs + soakSeconds * 1000;
  try {
    await watch.guard(writer.waitForWrites(progressWritesMin, progressTimeoutMs).then((ok) => assertProgress(ok, 'the writer to start')));
    rebuildBaselineBytes = (await dashboard(cluster)).health.rebuild.bytesDone;
    while (Date.now() < endAtMs) {
      const kind = pickKind(random());
      const plan = faultKinds.find((entry) => entry.kind === kind) as (typeof faultKinds)[number];
      // Drawn whatever the kind, so the stream stays aligned with the fault count.
      const sdsIndex = between(0, sdsCount - 1);
      const awayMs = between(plan.awayMsMin, plan.awayMsMax);
      const fault: Fault = {
        index: faults.length + 1,
        kind,
        sdsIndex: kind.startsWith('sds-') ? sdsIndex : null,
        masterBefore: null,
        masterAfter: null,
        awayMs,
        startedAtMs: Date.now(),
        healedMs: null,
        wholeMs: null,
        rebuildBytes: null,
      };
      faults.push(fault);
      const writesBefore = writer.stats().writes;
      say(`fault ${fault.index}: ${describeTarget(fault, cluster)} for ${(awayMs / 1000).toFixed(1)} s`);
      await watch.guard(apply(fault));
      const view = await watch.guard(settle(fault));
      // The dashboard's rebuild counter is the Master's own: it starts again with a new Master.
      if (fault.masterBefore !== null && fault.masterAfter !== fault.masterBefore) rebuildBaselineBytes = 0;
      const rebuildNow = view.health.rebuild.bytesDone;
      fault.rebuildBytes = Math.max(0, rebuildNow - rebuildBaselineBytes);
      rebuildBaselineBytes = rebuildNow;
      rebuildBytesTotal += fault.rebuildBytes;
      assertProgress(await watch.guard(writer.waitForWrites(writesBefore + progressWritesMin, progressTimeoutMs)), `the writer to go on after fault ${fault.index}`);
      watch.check();
      say(`fault ${fault.index} done: ${describeFault(fault)}; writer ${summary(writer.stats())}`);
      t.pass(`fault ${fault.index} (${fault.kind}) healed; the cluster is whole and the writer clean`);
    }
  } catch (err) {
    watch.stop();
    abort.abort();
    report(err instanceof SoakProblem ? err.message : `${(err as Error).stack ?? String(err)}`);
    t.fail(`soak stopped at fault ${faults.length}: ${(err as Error).message} (seed ${seed})`);
    return;
  }
  watch.stop();

  const faultSeconds = (Date.now() - faultsStartedAtMs) / 1000;
  say('time is up: stopping the writer and reading back every block');
  const stats = await writer.verifyAll();
  const blockCount = writerRegionBytes / 4096;
  t.equal(stats.fatal, null, 'the writer never gave up');
  t.equal(stats.ioErrors, 0, 'no IO errors');
  t.equal(stats.verifyFailureCount, 0, 'every block holds its last acknowledged version');
  t.equal(stats.verifiedBlocks, blockCount, `all ${blockCount} blocks read back`);
  const clean = stats.fatal === null && stats.ioErrors === 0 && stats.verifyFailureCount === 0 && stats.verifiedBlocks === blockCount;
  if (!clean) report('the final read-back');

  const byKind = faultKinds.map(({ kind }) => `${kind} ${faults.filter((fault) => fault.kind === kind).length}`).join(', ');
  const finalView = await dashboard(cluster);
  const mdmLine =
    mdms === null
      ? '  MDM: one, with its journal'
      : `  MDM cluster: ${faults.filter((fault) => fault.masterBefore !== null && fault.masterAfter !== fault.masterBefore).length} Master changes over ${faults.filter((fault) => fault.masterBefore !== null).length} Master faults; at the end ${JSON.stringify(await mdms.query(0).then((view) => (view === null ? null : { clusterState: view.clusterState, master: view.master?.name, slaves: view.slaves.map((mdm) => `${mdm.name} ${mdm.status}`) })))}`;
  const lines = [
    `soak summary${clean ? '' : ' (FAILED)'}`,
    `  seed ${seed}; replay with: ${replayCommand}`,
    `  duration: ${soakSeconds} s of faults requested, ${faultSeconds.toFixed(0)} s from the first until the last was healed, ${((Date.now() - startedAtMs) / 1000).toFixed(0)} s in all (startup and read-back)`,
    `  faults: ${faults.length} (${byKind})`,
    mdmLine,
    `  heal to whole: ${healTimes(faults)}`,
    `  writer: ${stats.writes} writes (${(stats.bytesWritten / MiB).toFixed(0)} MiB), ${stats.reads} reads, ${stats.flushes} flushes, ${stats.reconnects} reconnects (${stats.reissuedRequests} re-sent, ${stats.requestTimeouts} timeouts), ${stats.ioErrors} io errors, ${stats.verifyFailureCount} verify failures, ${stats.verifiedBlocks} blocks verified at the end`,
    `  rebuild: ${(rebuildBytesTotal / MiB).toFixed(1)} MiB copied over all faults (${rebuildByKind(faults)}); the MDM's counter since it last started: ${(finalView.health.rebuild.bytesDone / MiB).toFixed(1)} MiB, map epoch ${finalView.system.mapEpoch}`,
  ];
  for (const line of lines) t.comment(line);
});

// --- helpers -----------------------------------------------------------------------------

function pickKind(draw: number): FaultKind {
  let point = draw * faultWeightTotal;
  for (const entry of faultKinds) {
    if (point < entry.weight) return entry.kind;
    point -= entry.weight;
  }
  return (faultKinds[faultKinds.length - 1] as (typeof faultKinds)[number]).kind;
}

function describeTarget(fault: Fault, cluster: Cluster): string {
  const sds = fault.sdsIndex !== null ? (cluster.sds[fault.sdsIndex] as Cluster['sds'][number]).name : '';
  switch (fault.kind) {
    case 'sds-kill-delta':
      return `kill -9 ${sds}, restart it within --rebuild-after (delta rebuild), away`;
    case 'sds-kill-full':
      return `kill -9 ${sds}, restart it after --rebuild-after (full rebuild, then rebalance back), away`;
    case 'sds-stop':
      return `SIGSTOP ${sds} (a hung host), then SIGCONT, hung`;
    case 'mdm-kill':
      return 'kill -9 the MDM, restart it on its ports and data, away';
    case 'master-kill':
      return 'kill -9 the Master MDM (a Slave takes over), restart it on its ports and data (it rejoins as a Slave), away';
    case 'master-stop':
      return "SIGSTOP the Master MDM past its lease (a Slave takes over), then SIGCONT (it steps down), hung";
    case 'master-etcd-kill':
      return "kill -9 the Master's etcd member, restart it from its data directory, away";
    case 'sdc-kill':
      return 'kill -9 the SDC, restart it on its NBD address (the writer reconnects), away';
    case 'quiet':
      return 'no fault, a quiet period';
  }
}

function describeFault(fault: Fault): string {
  const seconds = (ms: number | null): string => (ms === null ? '-' : `${(ms / 1000).toFixed(1)} s`);
  const target = fault.sdsIndex !== null ? ` sds${fault.sdsIndex + 1}` : fault.masterBefore !== null ? ` (Master ${fault.masterBefore} → ${fault.masterAfter ?? '?'})` : '';
  const rebuilt = fault.rebuildBytes === null ? '-' : `${(fault.rebuildBytes / MiB).toFixed(1)} MiB`;
  return `#${fault.index} ${fault.kind}${target} at ${new Date(fault.startedAtMs).toISOString()}, away ${seconds(fault.awayMs)}, reconnected after ${seconds(fault.healedMs)}, whole after ${seconds(fault.wholeMs)}, rebuild copied ${rebuilt}`;
}

function healTimes(faults: Fault[]): string {
  const times = faults.filter((fault) => fault.kind !== 'quiet' && fault.wholeMs !== null).map((fault) => (fault.wholeMs as number) - fault.awayMs);
  if (times.length === 0) return 'no faults';
  const mean = times.reduce((sum, value) => sum + value, 0) / times.length;
  return `after the target was back, whole in ${(mean / 1000).toFixed(1)} s on average, ${(Math.max(...times) / 1000).toFixed(1)} s at most`;
}

function rebuildByKind(faults: Fault[]): string {
  return faultKinds
    .filter(({ kind }) => kind !== 'quiet')
    .map(({ kind }) => `${kind} ${(faults.filter((fault) => fault.kind === kind).reduce((sum, fault) => sum + (fault.rebuildBytes ?? 0), 0) / MiB).toFixed(1)} MiB`)
    .join(', ');
}

function assertProgress(ok: boolean, what: string): void {
  if (!ok) throw new SoakProblem(`timed out waiting for ${what} (${progressWritesMin} more acknowledged writes within ${progressTimeoutMs / 1000} s)`);
}

/** A writer problem as text, or null while it is clean. */
function writerProblem(stats: VerifierStats): string | null {
  if (stats.fatal !== null) return `the writer gave up: ${stats.fatal}`;
  if (stats.verifyFailureCount > 0) return `the writer read wrong data ${stats.verifyFailureCount} times`;
  if (stats.ioErrors > 0) return `the writer got ${stats.ioErrors} IO errors`;
  return null;
}

/**
 * Checks the writer every second while a fault is on, so the run stops at the first
 * problem rather than after a heal that may take minutes: guard(step) rejects as soon as
 * the writer is unclean.
 */
function watchWriter(writer: VerifyingWriter): { guard<T>(step: Promise<T>): Promise<T>; check(): void; stop(): void } {
  let rejectProblem: (err: Error) => void = () => undefined;
  const problemSeen = new Promise<never>((_, reject) => (rejectProblem = reject));
  // Awaited only through guard(); nobody may be waiting when it happens.
  problemSeen.catch(() => undefined);
  const check = (): void => {
    const problem = writerProblem(writer.stats());
    if (problem !== null) {
      const err = new SoakProblem(problem);
      rejectProblem(err);
      throw err;
    }
  };
  const timer = setInterval(() => {
    try {
      check();
    } catch {
      clearInterval(timer);
    }
  }, watchIntervalMs);
  return {
    guard: <T>(step: Promise<T>): Promise<T> => {
      // The step may go on after a problem ends the race: its failure is of no interest then.
      step.catch(() => undefined);
      return Promise.race([step, problemSeen]);
    },
    check,
    stop: () => clearInterval(timer),
  };
}

/**
 * A watchdog for the daemons: they run in their own process groups (so teardown can reach
 * everything under them), which also means that Ctrl-C or tap's timeout, which end this
 * process without its teardown, would leave them running for hours. The reaper is a shell
 * that waits for this process to be gone and then kills the process groups listed in a file.
 * The file is this process's children, from /proc every second (the daemons are started
 * inside the helpers, startCluster among them, so their pids are not known here as they
 * start); a child that leads no group (a management CLI run) has no group to kill. A
 * normal end, pass or fail, runs teardown, which kills every daemon and then the reaper.
 */
function startReaper(t: Test): void {
  const pidFile = path.join(os.tmpdir(), `meshblock-soak-${process.pid}.pids`);
  const script = [
    'while kill -0 "$1" 2>/dev/null; do sleep 1; done',
    '[ -f "$2" ] || exit 0',
    // No `--`: dash's kill takes "-PID" after a signal option, and refuses `--`.
    'while read -r pid; do kill -KILL "-$pid" 2>/dev/null; done < "$2"',
    'rm -f "$2"',
  ].join('\n');
  const reaper = spawn('sh', ['-c', script, 'meshblock-soak-reaper', String(process.pid), pidFile], { detached: true, stdio: 'ignore' });
  reaper.unref();
  let stopped = false;
  const record = async (): Promise<void> => {
    const pids = (await childPids(process.pid)).filter((pid) => pid !== reaper.pid);
    if (stopped) return;
    await fs.promises.writeFile(`${pidFile}.tmp`, pids.map((pid) => `${pid}\n`).join(''));
    await fs.promises.rename(`${pidFile}.tmp`, pidFile);
  };
  let recording: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    // One scan at a time; a failed one is retried by the next tick.
    recording = recording.then(record).catch(() => undefined);
  }, reaperScanIntervalMs);
  timer.unref();
  t.teardown(async () => {
    stopped = true;
    clearInterval(timer);
    await recording;
    reaper.kill('SIGKILL');
    fs.rmSync(pidFile, { force: true });
    fs.rmSync(`${pidFile}.tmp`, { force: true });
  });
}

/** The pids whose parent is `parentPid`, from /proc/PID/stat (field 4, after the command in parentheses). */
async function childPids(parentPid: number): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await fs.promises.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = await fs.promises.readFile(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // Gone since the listing.
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[1]) === parentPid) pids.push(Number(entry));
  }
  return pids;
}
