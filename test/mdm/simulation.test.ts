// A seeded simulation of the MDM's deterministic core, in the spirit of TigerBeetle's VOPR:
// the state machine and the pure health decisions (health.ts) are driven exactly as
// service.ts drives them, with simulated time, against simulated SDS processes that
// register, beat, take rebuild orders, finish or fail their jobs and report them. Faults
// come in random orders and timings: SDS crashes, network drops (back within the grace or
// after down or out), hung SDSs (connected, silent), device failures, lost and duplicated
// rebuild reports and orders, reports replayed long after or from an earlier fill of the
// same copies (stale epochs), batches recorded after their copy came back, time jumps, and
// MDM restarts, which rebuild the state machine from the last snapshot plus the journaled
// commands, as MdmService.open() does. Administration runs alongside: SDSs, devices,
// volumes (thin and thick), writes, removals, spare changes, pool repairs, in two protection
// domains, the second with three fault sets.
//
// After every command and every step it checks the invariants:
// - no group has two copies on one device, one SDS or one fault set (never two primaries
//   for a group);
// - the epoch never goes back, and the placement map never changes without it moving
//   (and the service is told, so the map is pushed);
// - no command makes a group give up its last in-sync readable copies while one of them is
//   still readable (a failure makes a copy unreadable; a decision must never drop one);
// - a copy is recorded in sync only after a real fill from its primary, ordered at or
//   after that fill began, finished (an oracle the simulated SDSs keep); a report or batch
//   entry from before the fill began is refused, by health.ts and by the state machine;
// - capacity and health, recomputed here from devices, volumes and groups, equal
//   poolCapacity() and poolHealth(); accepted thick reservations fit;
// - a refused command changes nothing; the journal replayed from its snapshot equals the
//   live model (every field but the volatile ones, which every MDM starts afresh).
//
// Snapshots run alongside (their own random stream, so that a seed recorded before them can
// still run its old course): groups begun, then committed or aborted some steps later or
// aborted by an MDM restart as MdmService.listen() does; restores; every removal mode;
// group removals; access mode limits and the per-tree limit changed. They add invariants:
// - every volume heads a live leaf generation of its own tree, in its pool; its ancestor is
//   a volume of the same tree; no generation is left that no volume reads (pruning);
// - trees stay within vtreeGenerationsMax, and every map passes the SDSs' own check;
// - the barrier names volumes that exist.
//
// Two fixed seeds keep CI reproducible, and one fresh seed a run keeps exploring. It prints
// each seed; a failure names the seed, the step and the events before it.
// MESHBLOCK_SIM_SEED=n replays one seed (MESHBLOCK_SIM_STEPS=n changes the step count).

import { rebuildSyncedBatchMs, vtreeGenerationsMax } from '../../src/common/limits.js';
import t from 'tap';
import { mulberry32 } from '../../src/common/seeded-random.js';
import { GiB, MiB } from '../../src/common/units.js';
import {
  decideHealth,
  decideOnHeartbeat,
  decideRebuilds,
  emptyObservations,
  healthOptions,
  noteDecisions,
  noteOrderFailed,
  noteRebuildDone,
  noteRepairDone,
  noteRestart,
  noteSdsConnected,
  noteSdsDisconnected,
  takeSyncedBatch,
  type HealthDecisions,
  type HealthObservations,
  type RebuildOrder,
} from '../../src/mdm/health.js';
import { durableJson, type Id, type PoolGroup, type SystemModel } from '../../src/mdm/model.js';
import { MdmError, StateMachine, isDown, type Applied, type Command } from '../../src/mdm/state-machine.js';
import type { RebuildDone } from '../../src/wire/mdm-ops.js';
import { generationPath, parsePlacementMap, vtreeOf } from '../../src/wire/placement.js';
import type { DeviceStats, RebuildProgress, SdsStats } from '../../src/wire/sds-ops.js';

const clusterId = '0123456789abcdef';
const stepsDefault = 3000;
/** The service compacts after 1000 records; a smaller number exercises snapshots more often. */
const compactAfterRecords = 40;
/** Jobs an SDS keeps listed in its stats (it drops the oldest finished ones). */
const jobsListedMax = 64;
/** Reports kept to be delivered again later (duplicates, stale epochs). */
const reportHistoryMax = 1024;
const sdsCountMax = 13;
/** Events shown with a failure. */
const trailMax = 200;

class InvariantError extends Error {}

function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new InvariantError(message);
}

const sdsIdOf = (index: number): Id => (0x5d5000000000 + index).toString(16).padStart(16, '0');

interface SimSds {
  id: Id;
  name: string;
  /** The process runs (a crash loses its jobs; it comes back only by a restart event). */
  alive: boolean;
  /** Connected but silent: it sends no heartbeat until the MDM fences it. */
  hung: boolean;
  deviceIds: Id[];
  /** Its protection domain's index, and its fault set (the second domain has three). */
  domain: number;
  faultSetId: Id | null;
  broken: Set<Id>;
  /** The last map epoch it saw: a newer map drops its running jobs, as a real SDS does. */
  epochSeen: number;
  life: number;
  jobSerial: number;
  jobs: Array<RebuildProgress & { doneAtMs: number; fails: boolean }>;
}

interface GroupCopies {
  good: Id[];
  /** The group as it was, for the failure message. */
  was: string;
}

class Simulation {
  readonly random: () => number;
  nowMs = 1_000_000;
  machine: StateMachine;
  observations: HealthObservations = emptyObservations();
  readonly options = healthOptions({});
  readonly connected = new Set<Id>();
  snapshot: string;
  journal: Command[] = [];
  syncedDueMs: number | null = null;
  readonly sdss = new Map<Id, SimSds>();
  readonly reports: Array<{ sdsId: Id; done: RebuildDone }> = [];
  /** Oracle: fills really done, by pool/group/source/target, with the newest order epoch. */
  readonly fills = new Map<string, number>();
  readonly writtenBytesPerGroup = new Map<Id, number>();
  readonly counts = new Map<string, number>();
  /** Protection domains: the first without fault sets, the second with three. */
  readonly pds: Id[] = [];
  readonly faultSets: Id[] = [];
  /** Pools by protection domain; `pools` lists them all. */
  readonly poolsOf: Id[][] = [[], []];
  pools: Id[] = [];
  deviceSerial = 0;
  volumeSerial = 0;
  epochMoved = false;
  step = 0;

  /**
   * Snapshot events draw from their own stream, so that a seed run without them (the
   * regression seeds, recorded before snapshots) takes the same course as it always did.
   */
  readonly snapshotRandom: () => number;
  snapshotSerial = 0;

  constructor(
    readonly seed: number,
    readonly snapshots: boolean,
  ) {
    this.random = mulberry32(seed);
    this.snapshotRandom = mulberry32(seed ^ 0x5a5a5a5a);
    this.machine = StateMachine.create(clusterId, 'sim');
    this.snapshot = JSON.stringify(this.machine.model);
    for (const name of ['pd1', 'pd2']) this.pds.push(this.execute({ type: 'addProtectionDomain', name })?.id as Id);
    for (const name of ['fs0', 'fs1', 'fs2']) this.faultSets.push(this.execute({ type: 'addFaultSet', protectionDomainId: this.pds[1] as Id, name })?.id as Id);
    for (const [domain, name, pgCount] of [[0, 'sp1', 64], [0, 'sp2', 16], [1, 'sp3', 32]] as const) {
      const pool = this.execute({ type: 'addStoragePool', protectionDomainId: this.pds[domain] as Id, name, volumeGranularityBytes: GiB, pgCount })?.id as Id;
      this.poolsOf[domain]?.push(pool);
      this.pools.push(pool);
    }
    for (let index = 0; index < 7; index++) this.addSds();
  }

  /** The last things that happened, shown with a failure. */
  readonly trail: string[] = [];

  count(what: string, detail: string | null = what): void {
    this.counts.set(what, (this.counts.get(what) ?? 0) + 1);
    if (detail === null) return;
    this.trail.push(`${this.step}: ${detail}`);
    if (this.trail.length > trailMax) this.trail.shift();
  }

  int(below: number): number {
    return Math.floor(this.random() * below);
  }

  pick<T>(items: readonly T[]): T | undefined {
    return items[this.int(items.length)];
  }

  get model(): SystemModel {
    return this.machine.model;
  }

  // --- the MDM: execute(), journal, restart -------------------------------------------

  /** As MdmService.execute(): applied (or refused, nothing changed), then journaled. */
  execute(command: Command): Applied | null {
    const before = JSON.stringify(this.model);
    const epochBefore = this.model.epoch;
    const mapBefore = JSON.stringify({ ...this.machine.placementMap(), epoch: 0 });
    const goodBefore = this.copiesByGroup();
    if (command.type === 'copiesSynced') this.checkFilled(command);
    let applied: Applied;
    try {
      applied = this.machine.apply(command);
    } catch (err) {
      if (!(err instanceof MdmError)) throw err;
      check(JSON.stringify(this.model) === before, `refused ${command.type} (${err.code}) changed the model`);
      this.count(`refused ${command.type}`, `refused ${err.code} ${JSON.stringify(command)}: ${err.message}`);
      return null;
    }
    this.count(command.type, JSON.stringify(command));
    this.journal.push(JSON.parse(JSON.stringify(command)) as Command);
    if (this.journal.length >= compactAfterRecords) {
      this.snapshot = JSON.stringify(this.model);
      this.journal = [];
    }
    const epochAfter = this.model.epoch;
    check(epochAfter >= epochBefore, `${command.type} moved the epoch back from ${epochBefore} to ${epochAfter}`);
    const mapAfter = JSON.stringify({ ...this.machine.placementMap(), epoch: 0 });
    check(mapAfter === mapBefore || epochAfter > epochBefore, `${command.type} changed the placement map without moving the epoch (${epochAfter})`);
    check(epochAfter === epochBefore || applied.epochChanged, `${command.type} moved the epoch without saying so (the map would not be pushed)`);
    this.checkCopiesKept(goodBefore, command);
    this.checkGroups(command.type);
    this.checkReservationsFit(command);
    if (applied.epochChanged) this.epochMoved = true;
    return applied;
  }

  /** The journal restored as MdmService.open() does: snapshot, then every command since. */
  replayed(): StateMachine {
    const machine = new StateMachine(JSON.parse(this.snapshot) as SystemModel);
    for (const [index, command] of this.journal.entries()) {
      try {
        machine.replay(command);
      } catch (err) {
        throw new InvariantError(`journal record ${index} (${command.type}) no longer applies: ${(err as Error).message}`);
      }
    }
    machine.observe({ type: 'connectionsLost' });
    return machine;
  }

  /** The MDM process restarts: only the journal survives; every SDS must call again. */
  restartMdm(): void {
    this.machine = this.replayed();
    // As MdmService.listen(): a barrier the MDM did not begin in this life is aborted.
    const barrier = this.model.snapshotBarrier;
    if (barrier !== null) {
      this.execute({ type: 'abortSnapshot', groupId: barrier.groupId, reason: 'the MDM restarted' });
      this.count('barrier aborted by a restart');
    }
    this.observations = emptyObservations();
    noteRestart(this.observations, this.machine, this.nowMs, this.options);
    this.connected.clear();
    this.syncedDueMs = null;
    this.count('mdm restart');
  }

  /** Carries out health decisions as MdmService.carryOut() does. */
  carryOut(decisions: HealthDecisions): void {
    noteDecisions(this.observations, decisions, this.nowMs);
    for (const observation of decisions.observations) this.machine.observe(observation);
    for (const sdsId of decisions.fence) {
      this.connected.delete(sdsId);
      const sds = this.sdss.get(sdsId);
      // Fenced, a hung SDS notices and recovers; it registers again by itself.
      if (sds !== undefined) sds.hung = false;
      this.count('fenced');
    }
    for (const command of decisions.commands) {
      this.execute(command);
      if (command.type === 'repairPool') noteRepairDone(this.observations, command.poolId);
    }
    for (const order of decisions.orders) this.deliverOrder(order);
  }

  healthTick(): void {
    this.carryOut(decideHealth({ machine: this.machine, nowMs: this.nowMs, connected: this.connected, observations: this.observations, options: this.options }));
  }

  /** After the epoch moved, the service pushes the map and orders rebuilds for it. */
  orderRebuildsIfMoved(): void {
    if (!this.epochMoved) return;
    this.epochMoved = false;
    for (const sdsId of this.connected) this.seeMap(sdsId);
    this.carryOut(decideRebuilds({ machine: this.machine, nowMs: this.nowMs, connected: this.connected, observations: this.observations, options: this.options }));
  }

  onRebuildDone(sdsId: Id, done: RebuildDone): void {
    const group = this.model.storagePools[done.poolId]?.groups[done.pgIndex];
    const stale = group?.syncing === true && done.epoch < (group.syncEpoch ?? 0);
    if (stale) this.count('stale report', null);
    if (noteRebuildDone(this.observations, this.machine, sdsId, done)) {
      check(!stale, `a report from epoch ${done.epoch}, before the fill of group ${done.pgIndex} began (${group?.syncEpoch}), was accepted`);
      this.count('report accepted');
      this.syncedDueMs ??= this.nowMs + rebuildSyncedBatchMs;
    } else {
      this.count('report ignored', null);
    }
  }

  fireSyncedBatch(): void {
    if (this.syncedDueMs === null || this.nowMs < this.syncedDueMs) return;
    this.syncedDueMs = null;
    for (const command of takeSyncedBatch(this.observations)) this.execute(command);
  }

  // --- the SDS processes --------------------------------------------------------------

  addSds(): void {
    const index = this.sdss.size;
    if (index >= sdsCountMax) return;
    // Every third SDS goes to the second domain, in its fault sets in turn.
    const domain = index % 3 === 2 ? 1 : 0;
    const faultSetId = domain === 1 ? (this.faultSets[Math.floor(index / 3) % this.faultSets.length] as Id) : null;
    const sds: SimSds = { id: sdsIdOf(index), name: `sds${index}`, alive: true, hung: false, deviceIds: [], domain, faultSetId, broken: new Set(), epochSeen: 0, life: 1, jobSerial: 0, jobs: [] };
    this.sdss.set(sds.id, sds);
    this.register(sds);
    if (this.execute({ type: 'addSds', sdsId: sds.id, protectionDomainId: this.pds[domain] as Id, faultSetId }) === null) return;
    this.addDevice(sds);
  }

  addDevice(sds: SimSds): void {
    const pool = this.pick(this.poolsOf[sds.domain] ?? []) as Id;
    const deviceId = (0xde7000000000 + this.deviceSerial++).toString(16).padStart(16, '0');
    const capacityBytes = (64 + this.int(4) * 64) * GiB;
    if (this.execute({ type: 'addDevice', deviceId, sdsId: sds.id, storagePoolId: pool, path: `/dev/sd${deviceId.slice(-3)}`, name: null, capacityBytes }) !== null) sds.deviceIds.push(deviceId);
  }

  register(sds: SimSds): void {
    const known = this.model.sdss[sds.id];
    const wasDown = known !== undefined && isDown(known);
    const wasOut = known?.out === true;
    if (this.execute({ type: 'registerSds', sdsId: sds.id, name: sds.name, address: `127.0.0.1:${7000 + Number.parseInt(sds.id.slice(-2), 16)}`, nowMs: this.nowMs }) === null) return;
    if (wasDown) this.count(wasOut ? 'back after out' : 'back before out');
    this.connected.add(sds.id);
    noteSdsConnected(this.observations, sds.id);
    this.seeMap(sds.id);
  }

  /** The connection drops (a crash, or the network); the MDM sees it close. */
  disconnect(sds: SimSds): void {
    if (!this.connected.delete(sds.id)) return;
    noteSdsDisconnected(this.observations, sds.id, this.nowMs);
    this.machine.observe({ type: 'sdsDisconnected', sdsId: sds.id });
  }

  seeMap(sdsId: Id): void {
    const sds = this.sdss.get(sdsId);
    if (sds === undefined || sds.epochSeen === this.model.epoch) return;
    sds.epochSeen = this.model.epoch;
    // A real SDS drops its running rebuilds when the map changes; ordered again, it resumes.
    sds.jobs = sds.jobs.filter((job) => job.state !== 'running');
  }

  deliverOrder(order: RebuildOrder): void {
    const sds = this.sdss.get(order.sourceSdsId);
    const roll = this.random();
    if (sds === undefined || !sds.alive || roll < 0.03) {
      // Lost: no answer ever comes, and the MDM repeats it after orderRepeatMs.
      this.count('order lost');
      return;
    }
    if (roll < 0.08 || sds.epochSeen !== order.args.epoch) {
      // Refused (its map is not this epoch's yet): ordered again at the next tick.
      noteOrderFailed(this.observations, order.key);
      this.count('order refused');
      return;
    }
    const same = sds.jobs.find((job) => job.poolId === order.args.poolId && job.pgIndex === order.args.pgIndex && job.targetSdsId === order.args.targetSdsId && job.epoch === order.args.epoch);
    if (same?.state === 'running') return;
    if (same?.state === 'done') {
      // A repeat of a finished job is answered with its report again.
      this.sendReport(sds, same);
      return;
    }
    sds.jobSerial += 1;
    sds.jobs.push({
      jobId: `${sds.life}.${sds.jobSerial}`,
      poolId: order.args.poolId,
      pgIndex: order.args.pgIndex,
      targetSdsId: order.args.targetSdsId,
      state: 'running',
      mode: order.args.mode ?? 'full',
      epoch: order.args.epoch,
      chunksDone: 0,
      chunksTotal: 8,
      bytesDone: 0,
      error: null,
      doneAtMs: this.nowMs + this.int(4000),
      fails: this.random() < 0.05,
    });
    while (sds.jobs.length > jobsListedMax) sds.jobs.splice(sds.jobs.findIndex((job) => job.state !== 'running'), 1);
    this.count('order taken', null);
  }

  /** Jobs past their time finish (or fail: the target is gone, or bad luck) and are reported. */
  advanceJobs(): void {
    for (const sds of this.sdss.values()) {
      if (!sds.alive) continue;
      for (const job of sds.jobs) {
        if (job.state !== 'running' || job.doneAtMs > this.nowMs) continue;
        const target = this.sdss.get(job.targetSdsId);
        if (job.fails || target === undefined || !target.alive) {
          job.state = 'failed';
          job.error = 'target unreachable';
          continue;
        }
        job.state = 'done';
        job.chunksDone = job.chunksTotal;
        job.bytesDone = job.chunksTotal * MiB;
        const key = `${job.poolId}/${job.pgIndex}/${sds.id}/${job.targetSdsId}`;
        this.fills.set(key, Math.max(this.fills.get(key) ?? 0, job.epoch));
        this.sendReport(sds, job);
      }
    }
  }

  sendReport(sds: SimSds, job: RebuildProgress): void {
    const done: RebuildDone = { jobId: job.jobId, poolId: job.poolId, pgIndex: job.pgIndex, targetSdsId: job.targetSdsId, epoch: job.epoch, mode: job.mode, chunksDone: job.chunksDone, bytesDone: job.bytesDone };
    this.reports.push({ sdsId: sds.id, done });
    if (this.reports.length > reportHistoryMax) this.reports.shift();
    // Lost with its connection: the stats of later heartbeats still list the job as done.
    if (!this.connected.has(sds.id) || this.random() < 0.15) {
      this.count('report lost');
      return;
    }
    this.onRebuildDone(sds.id, done);
  }

  heartbeats(): void {
    for (const sds of this.sdss.values()) {
      if (!sds.alive || sds.hung || !this.connected.has(sds.id)) continue;
      const decisions = decideOnHeartbeat(this.machine, sds.id, this.stats(sds), this.nowMs);
      if (decisions === null) continue;
      this.machine.observe(decisions.observation);
      for (const done of decisions.reports) this.onRebuildDone(sds.id, done);
      for (const key of decisions.failedOrders) noteOrderFailed(this.observations, key);
      for (const command of decisions.commands) this.execute(command);
    }
  }

  /** An SDS's stats: its devices (usage from the copies it holds) and its jobs. */
  stats(sds: SimSds): SdsStats {
    const copies = new Map<Id, number>();
    for (const pool of Object.values(this.model.storagePools)) {
      const bytes = this.writtenBytesPerGroup.get(pool.id) ?? 0;
      for (const group of pool.groups) {
        for (const deviceId of [group.primaryDevice, group.secondaryDevice]) if (deviceId !== null) copies.set(deviceId, (copies.get(deviceId) ?? 0) + bytes);
      }
    }
    const devices: DeviceStats[] = sds.deviceIds
      .filter((deviceId) => this.model.devices[deviceId] !== undefined)
      .map((deviceId) => {
        const totalBytes = this.model.devices[deviceId]?.capacityBytes ?? 0;
        const usedBytes = Math.min(totalBytes, copies.get(deviceId) ?? 0);
        const failed = sds.broken.has(deviceId);
        // An SDS that counts snapshot bytes reports them beside usedBytes (a quarter here).
        const device: DeviceStats & { snapshotBytes: number } = {
          deviceId,
          path: '/dev/x',
          state: failed ? 'failed' : 'normal',
          error: failed ? 'EIO' : null,
          totalBytes,
          usedBytes,
          snapshotBytes: Math.floor(usedBytes / 4),
          freeBytes: totalBytes - usedBytes,
          reads: 0,
          writes: 0,
          readBytes: 0,
          writeBytes: 0,
          readIops: 0,
          writeIops: 0,
          readBytesPerSecond: 0,
          writeBytesPerSecond: 0,
        };
        return device;
      });
    const rebuilds = sds.jobs.map(({ doneAtMs: _doneAtMs, fails: _fails, ...job }) => job);
    return { sdsId: sds.id, name: sds.name, epoch: sds.epochSeen, chunkBytes: MiB, devices, reservedBytes: 0, rebuilds };
  }

  // --- one step -----------------------------------------------------------------------

  runStep(): void {
    const roll = this.random();
    this.nowMs += roll < 0.02 ? 30_000 + this.int(60_000) : roll < 0.05 ? 5_000 + this.int(15_000) : 50 + this.int(1500);
    this.heartbeats();
    this.advanceJobs();
    this.fireSyncedBatch();
    this.orderRebuildsIfMoved();
    this.randomEvent();
    if (this.snapshots) this.snapshotEvent();
    this.orderRebuildsIfMoved();
    // Alive SDSs that are not connected call again (their reconnect backoff).
    for (const sds of this.sdss.values()) if (sds.alive && !sds.hung && !this.connected.has(sds.id) && this.random() < 0.3) this.register(sds);
    this.orderRebuildsIfMoved();
    this.healthTick();
    this.orderRebuildsIfMoved();
    this.checkInvariants();
  }

  randomEvent(): void {
    const sdss = [...this.sdss.values()];
    const events: Array<[number, () => void]> = [
      [2, () => this.addSds()],
      [2, () => this.addDevice(this.pick(sdss) as SimSds)],
      [6, () => this.addVolume()],
      [4, () => this.write()],
      [1.5, () => this.removeVolume()],
      [0.3, () => this.execute({ type: 'removeDevice', id: this.pick(Object.keys(this.model.devices)) ?? 'x' })],
      [0.2, () => this.execute({ type: 'removeSds', id: (this.pick(sdss) as SimSds).id })],
      [0.5, () => this.execute({ type: 'setStoragePoolSpare', id: this.pick(this.pools) as Id, sparePercent: this.int(40) })],
      [0.5, () => this.execute({ type: 'repairPool', poolId: this.pick(this.pools) as Id })],
      [2, () => this.crash(this.pick(sdss) as SimSds)],
      [2, () => this.disconnect(this.pick(sdss) as SimSds)],
      [1, () => this.hang(this.pick(sdss) as SimSds)],
      [2, () => this.restartSds(this.pick(sdss.filter((sds) => !sds.alive)))],
      [0.7, () => this.failDevice(this.pick(sdss) as SimSds)],
      [3, () => this.replayReport()],
      [2, () => this.delayedReport()],
      [1, () => this.lateBatch()],
      [0.4, () => this.restartMdm()],
      [20, () => undefined],
    ];
    let roll = this.random() * events.reduce((sum, [weight]) => sum + weight, 0);
    for (const [weight, event] of events) {
      roll -= weight;
      if (roll < 0) {
        event();
        return;
      }
    }
  }

  addVolume(): void {
    const pool = this.pick(this.pools) as Id;
    const thick = this.random() < 0.3;
    const sizeBytes = (1 + this.int(thick ? 40 : 200)) * GiB;
    this.execute({ type: 'addVolume', storagePoolId: pool, name: `vol${this.volumeSerial++}`, sizeBytes, volumeType: thick ? 'ThickProvisioned' : 'ThinProvisioned', nowMs: this.nowMs });
  }

  write(): void {
    const pool = this.pick(this.pools) as Id;
    this.writtenBytesPerGroup.set(pool, (this.writtenBytesPerGroup.get(pool) ?? 0) + this.int(512) * MiB);
  }

  removeVolume(): void {
    const volume = this.pick(Object.keys(this.model.volumes));
    if (volume !== undefined) this.execute({ type: 'removeVolume', id: volume });
  }

  crash(sds: SimSds): void {
    sds.alive = false;
    sds.jobs = [];
    this.disconnect(sds);
    this.count('sds crash');
  }

  hang(sds: SimSds): void {
    if (sds.alive && this.connected.has(sds.id)) sds.hung = true;
  }

  restartSds(sds: SimSds | undefined): void {
    if (sds === undefined) return;
    sds.alive = true;
    sds.hung = false;
    sds.life += 1;
    sds.jobSerial = 0;
    sds.jobs = [];
    this.register(sds);
  }

  failDevice(sds: SimSds): void {
    const deviceId = this.pick(sds.deviceIds.filter((id) => !sds.broken.has(id)));
    if (deviceId !== undefined) sds.broken.add(deviceId);
  }

  /** A report delivered again, long after: a duplicate, or from before the fill began. */
  replayReport(): void {
    const report = this.pick(this.reports);
    if (report === undefined || !this.connected.has(report.sdsId)) return;
    this.count('report replayed');
    this.onRebuildDone(report.sdsId, report.done);
  }

  /**
   * A report from an earlier fill between a group's two SDSs arrives now (a slow connection):
   * the copy went away and came back since, so the report proves nothing about it.
   */
  delayedReport(): void {
    const candidates: Array<{ poolId: Id; pgIndex: number; group: PoolGroup }> = [];
    for (const pool of Object.values(this.model.storagePools)) {
      pool.groups.forEach((group, pgIndex) => {
        if (group.syncing === true && group.secondaryDevice !== null && (group.syncEpoch ?? 0) > 1) candidates.push({ poolId: pool.id, pgIndex, group });
      });
    }
    const chosen = this.pick(candidates);
    if (chosen === undefined) return;
    const sourceSdsId = this.model.devices[chosen.group.primaryDevice]?.sdsId as Id;
    const targetSdsId = this.model.devices[chosen.group.secondaryDevice as Id]?.sdsId as Id;
    if (!this.connected.has(sourceSdsId)) return;
    const epoch = Math.max(1, (chosen.group.syncEpoch ?? 0) - 1 - this.int(3));
    this.onRebuildDone(sourceSdsId, { jobId: `late.${this.step}`, poolId: chosen.poolId, pgIndex: chosen.pgIndex, targetSdsId, epoch, mode: 'delta', chunksDone: 1, bytesDone: MiB });
  }

  /**
   * A batch taken before a copy went away and came back is executed after (the race the
   * state machine's own epoch check is for): its entry carries an order from before the fill.
   */
  lateBatch(): void {
    const pool = this.model.storagePools[this.pick(this.pools) as Id];
    const pgIndex = pool?.groups.findIndex((group) => group.syncing === true && (group.syncEpoch ?? 0) > 1) ?? -1;
    const group = pool?.groups[pgIndex];
    if (pool === undefined || group === undefined || group.secondaryDevice === null) return;
    this.execute({ type: 'copiesSynced', poolId: pool.id, groups: [{ pgIndex, secondaryDevice: group.secondaryDevice, orderEpoch: (group.syncEpoch ?? 0) - 1 }] });
  }

  // --- invariants ---------------------------------------------------------------------

  readable(model: SystemModel, deviceId: Id | null): boolean {
    if (deviceId === null) return false;
    const device = model.devices[deviceId];
    if (device === undefined || device.state === 'failed') return false;
    const sds = model.sdss[device.sdsId];
    return sds !== undefined && !isDown(sds);
  }

  goodCopies(model: SystemModel, group: PoolGroup): Id[] {
    const good: Id[] = [];
    // A lost group's IO fails: what its devices hold counts for nothing.
    if (group.lost === true) return good;
    if (this.readable(model, group.primaryDevice)) good.push(group.primaryDevice);
    if (group.secondaryDevice !== null && group.syncing !== true && this.readable(model, group.secondaryDevice)) good.push(group.secondaryDevice);
    return good;
  }

  /** The in-sync readable copies of every group of every pool that holds volumes. */
  copiesByGroup(): Map<Id, GroupCopies[]> {
    const result = new Map<Id, GroupCopies[]>();
    for (const pool of Object.values(this.model.storagePools)) {
      if (!Object.values(this.model.volumes).some((volume) => volume.storagePoolId === pool.id)) continue;
      result.set(pool.id, pool.groups.map((group) => ({ good: this.goodCopies(this.model, group), was: JSON.stringify(group) })));
    }
    return result;
  }

  /** The oracle: a group recorded in sync was really filled from its primary, by an order given at or after the fill began. */
  checkFilled(command: Extract<Command, { type: 'copiesSynced' }>): void {
    const pool = this.model.storagePools[command.poolId];
    for (const entry of command.groups) {
      const group = pool?.groups[entry.pgIndex];
      if (group === undefined || group.syncing !== true || group.secondaryDevice !== entry.secondaryDevice) continue;
      if (entry.orderEpoch < (group.syncEpoch ?? 0)) {
        // From before the fill began: the state machine must leave the group as it is (tried on a copy).
        const probe = new StateMachine(JSON.parse(JSON.stringify(this.model)) as SystemModel);
        probe.apply({ type: 'copiesSynced', poolId: command.poolId, groups: [entry] });
        check(JSON.stringify(probe.model.storagePools[command.poolId]?.groups[entry.pgIndex]) === JSON.stringify(group), `copiesSynced recorded group ${entry.pgIndex} in sync from an order of epoch ${entry.orderEpoch}, before its fill began (${group.syncEpoch})`);
        this.count('stale copiesSynced entry', null);
        continue;
      }
      const source = this.model.devices[group.primaryDevice]?.sdsId;
      const target = this.model.devices[group.secondaryDevice]?.sdsId;
      const filledAt = this.fills.get(`${command.poolId}/${entry.pgIndex}/${source}/${target}`);
      check(filledAt !== undefined && filledAt >= (group.syncEpoch ?? 0), `group ${entry.pgIndex} of pool ${command.poolId} recorded in sync without a fill from its primary since epoch ${group.syncEpoch} (last fill: ${filledAt})`);
    }
  }

  /** What the state machine promises when it accepts a thick reservation or a spare change (checkFits): it fits. */
  checkReservationsFit(command: Command): void {
    let pool: Id | undefined;
    if (command.type === 'addVolume' && command.volumeType === 'ThickProvisioned') pool = command.storagePoolId;
    else if (command.type === 'setVolumeSize' && this.model.volumes[command.id]?.volumeType === 'ThickProvisioned') pool = this.model.volumes[command.id]?.storagePoolId;
    else if (command.type === 'setStoragePoolSpare') pool = command.id;
    if (pool === undefined) return;
    const capacity = this.machine.poolCapacity(pool);
    const needed = capacity.thickReservedBytes + Math.max(0, capacity.inUseBytes - capacity.thickReservedBytes);
    check(needed <= capacity.usableBytes, `${command.type}: pool ${pool}: ${needed} bytes reserved or in use, ${capacity.usableBytes} usable`);
  }

  /** No group gives up its last good copy while that copy is still readable (checked around each command). */
  checkCopiesKept(before: Map<Id, GroupCopies[]>, command: Command): void {
    const model = this.model;
    const what = command.type;
    // Copies this command recorded in sync are good too: the group may move onto them.
    const synced = new Set(command.type === 'copiesSynced' ? command.groups.map((entry) => `${command.poolId}/${entry.pgIndex}/${entry.secondaryDevice}`) : []);
    for (const [poolId, groups] of before) {
      const pool = model.storagePools[poolId];
      if (pool === undefined || pool.groups.length !== groups.length || !Object.values(model.volumes).some((volume) => volume.storagePoolId === poolId)) continue;
      groups.forEach((copies, pgIndex) => {
        const stillReadable = copies.good.filter((deviceId) => this.readable(model, deviceId));
        if (stillReadable.length === 0) return;
        const goodNow = this.goodCopies(model, pool.groups[pgIndex] as PoolGroup);
        const kept = goodNow.some((deviceId) => copies.good.includes(deviceId) || synced.has(`${poolId}/${pgIndex}/${deviceId}`));
        check(kept, `${what}: pool ${pool.name} group ${pgIndex}: its in-sync copies ${copies.good.join(', ')} were dropped while ${stillReadable.join(', ')} is still readable (was ${copies.was}, now ${JSON.stringify(pool.groups[pgIndex])})`);
      });
    }
  }

  /** Every group on two devices of two SDSs (never two primaries), consistent flags, failovers done. */
  checkGroups(what: string): void {
    const model = this.model;
    for (const pool of Object.values(model.storagePools)) {
      pool.groups.forEach((group, pgIndex) => {
        const where = `${what}: pool ${pool.name} group ${pgIndex}`;
        check(model.devices[group.primaryDevice] !== undefined, `${where}: primary device ${group.primaryDevice} does not exist`);
        if (group.secondaryDevice !== null) {
          check(group.secondaryDevice !== group.primaryDevice, `${where}: both copies on device ${group.primaryDevice}`);
          const primarySds = model.devices[group.primaryDevice]?.sdsId;
          const secondarySds = model.devices[group.secondaryDevice]?.sdsId;
          check(secondarySds !== undefined, `${where}: secondary device ${group.secondaryDevice} does not exist`);
          check(primarySds !== secondarySds, `${where}: both copies on SDS ${primarySds}`);
          const primaryFaultSet = model.sdss[primarySds as Id]?.faultSetId ?? null;
          check(primaryFaultSet === null || primaryFaultSet !== model.sdss[secondarySds as Id]?.faultSetId, `${where}: both copies in fault set ${primaryFaultSet}`);
        }
        check(group.syncing !== true || group.secondaryDevice !== null, `${where}: syncing without a secondary`);
        check((group.syncEpoch ?? 0) <= model.epoch, `${where}: fill begins at epoch ${group.syncEpoch}, after the current ${model.epoch}`);
        // A readable copy in sync that is not primary while the primary is unreadable: a failover not done.
        const secondaryGood = group.secondaryDevice !== null && group.syncing !== true && this.readable(model, group.secondaryDevice);
        check(group.lost === true || this.readable(model, group.primaryDevice) || !secondaryGood, `${where}: primary unreadable while the in-sync secondary is readable`);
      });
    }
  }

  /** Snapshots, restores and removals, as the REST API and snapshotVolumes() drive them. */
  snapshotEvent(): void {
    const random = this.snapshotRandom;
    const int = (below: number): number => Math.floor(random() * below);
    const pick = <T>(items: readonly T[]): T | undefined => items[int(items.length)];
    const volumes = Object.values(this.model.volumes);
    const barrier = this.model.snapshotBarrier;
    const roll = random();
    // A barrier stays a few steps (its SDSs answer slowly): other events, restarts included, run meanwhile.
    if (barrier !== null && roll < 0.15) {
      // The SDSs answered (commit) or one did not (abort); meanwhile other events ran.
      if (random() < 0.7) this.execute({ type: 'commitSnapshot', groupId: barrier.groupId, nowMs: this.nowMs });
      else this.execute({ type: 'abortSnapshot', groupId: barrier.groupId, reason: 'an SDS did not confirm' });
      return;
    }
    if (roll < 0.7) return;
    const event = random();
    if (event < 0.35) {
      const defs = Array.from({ length: 1 + int(3) }, () => ({
        volumeId: random() < 0.03 ? 'ffffffffffffffff' : (pick(volumes)?.id ?? 'x'),
        // Now and then a name that is taken.
        name: random() < 0.05 ? (pick(volumes)?.name ?? 'taken') : `snap${this.snapshotSerial++}`,
        readOnly: random() < 0.3,
      }));
      const begun = this.execute({ type: 'beginSnapshot', defs, nowMs: this.nowMs });
      if (begun !== null && random() < 0.6) this.execute({ type: 'commitSnapshot', groupId: begun.id as Id, nowMs: this.nowMs });
    } else if (event < 0.6) {
      const modes = ['ONLY_ME', 'INCLUDING_DESCENDANTS', 'DESCENDANTS_ONLY', 'WHOLE_VTREE'] as const;
      this.execute({ type: 'removeVolume', id: pick(volumes)?.id ?? 'x', removeMode: pick(modes) as (typeof modes)[number] });
    } else if (event < 0.7) {
      const groups = [...new Set(volumes.map((volume) => volume.snapshotGroupId).filter((id): id is Id => id !== null))];
      this.execute({ type: 'removeSnapshotGroup', groupId: pick(groups) ?? 'ffffffffffffffff' });
    } else if (event < 0.88) {
      const target = pick(volumes);
      if (target === undefined) return;
      // Mostly from its own tree; now and then from another (refused).
      const sameTree = volumes.filter((volume) => volume.vtreeId === target.vtreeId && volume.id !== target.id);
      const source = random() < 0.85 ? pick(sameTree) : pick(volumes);
      this.execute({ type: 'overwriteVolumeContent', volumeId: target.id, sourceVolumeId: source?.id ?? 'x' });
    } else if (event < 0.95) {
      this.execute({ type: 'setVolumeAccessModeLimit', id: pick(volumes)?.id ?? 'x', accessModeLimit: random() < 0.5 ? 'ReadOnly' : 'ReadWrite' });
    } else {
      this.execute({ type: 'setSnapshotsPerVtree', limit: int(40) });
    }
  }

  /**
   * V-Trees: every volume heads a live leaf of its own tree, in its pool; every generation
   * is read by some volume (pruning leaves none behind); trees stay within their limits; an
   * ancestor is a volume of the same tree; a barrier names volumes that exist; the map's
   * trees pass the SDSs' own check.
   */
  checkVtrees(): void {
    const model = this.model;
    const map = this.machine.placementMap();
    parsePlacementMap(JSON.parse(JSON.stringify(map)));
    const reached = new Map<Id, Set<number>>();
    for (const volume of Object.values(model.volumes)) {
      const tree = model.vtrees[volume.vtreeId];
      check(tree !== undefined, `volume ${volume.name}: its V-Tree ${volume.vtreeId} is not in the model`);
      check(tree.storagePoolId === volume.storagePoolId, `volume ${volume.name}: its tree is in another pool`);
      check(tree.generations[String(volume.generation)] !== undefined, `volume ${volume.name}: its head ${volume.generation} is not a generation of its tree`);
      check(!Object.values(tree.generations).includes(volume.generation), `volume ${volume.name}: its head ${volume.generation} has children (frozen)`);
      check(volume.ancestorVolumeId === null || model.volumes[volume.ancestorVolumeId]?.vtreeId === volume.vtreeId, `volume ${volume.name}: its ancestor ${volume.ancestorVolumeId} is not a volume of its tree`);
      let seen = reached.get(tree.id);
      if (seen === undefined) reached.set(tree.id, (seen = new Set()));
      for (const generation of generationPath(vtreeOf(map, tree.id), volume.generation)) seen.add(generation);
    }
    for (const tree of Object.values(model.vtrees)) {
      const count = Object.keys(tree.generations).length;
      check(count <= vtreeGenerationsMax, `tree ${tree.id}: ${count} generations`);
      check(reached.get(tree.id)?.size === count, `tree ${tree.id}: generations no volume reads (${JSON.stringify(tree.generations)}), or a tree without volumes`);
      check(Object.keys(tree.generations).every((generation) => Number(generation) < tree.nextGeneration), `tree ${tree.id}: a generation at or past nextGeneration ${tree.nextGeneration}`);
    }
    for (const def of model.snapshotBarrier?.defs ?? []) check(model.volumes[def.volumeId] !== undefined, `the barrier names volume ${def.volumeId}, which is gone`);
  }

  checkInvariants(): void {
    const model = this.model;
    this.checkVtrees();
    this.checkGroups('step');
    const faultSetPool = model.storagePools[this.poolsOf[1]?.[0] as Id];
    if (faultSetPool?.groups.some((group) => group.secondaryDevice !== null) === true) this.count('steps with fault-set groups', null);
    for (const sds of Object.values(model.sdss)) check((sds.state === 'down') === isDown(sds), `SDS ${sds.name}: state ${sds.state} but ${isDown(sds) ? 'down' : 'up'}`);
    this.checkCapacity();
    const replayed = this.replayed();
    check(durableJson(replayed.model) === durableJson(model), 'the journal (snapshot and commands) replays to another model than the live one');
  }

  /** Capacity and health recomputed from the devices, volumes and groups, independently of the state machine. */
  checkCapacity(): void {
    const model = this.model;
    for (const pool of Object.values(model.storagePools)) {
      const devices = Object.values(model.devices).filter((device) => device.storagePoolId === pool.id);
      const healthy = devices.filter((device) => device.state === 'normal');
      const rawBytes = healthy.reduce((sum, device) => sum + device.capacityBytes, 0);
      const spareBytes = Math.ceil((rawBytes * pool.sparePercent) / 100);
      const volumes = Object.values(model.volumes).filter((volume) => volume.storagePoolId === pool.id);
      const thickReservedBytes = volumes.filter((volume) => volume.volumeType === 'ThickProvisioned').reduce((sum, volume) => sum + volume.sizeBytes, 0);
      const thinProvisionedBytes = volumes.filter((volume) => volume.volumeType === 'ThinProvisioned').reduce((sum, volume) => sum + volume.sizeBytes, 0);
      const usedRawBytes = healthy.reduce((sum, device) => sum + device.usedBytes, 0);
      let failedGroups = 0;
      let degradedGroups = 0;
      let syncingGroups = 0;
      let copies = 0;
      const counted = new Set<Id>();
      let copyBytes = 0;
      for (const group of pool.groups) {
        const primaryOk = group.lost !== true && this.readable(model, group.primaryDevice);
        const secondaryOk = group.lost !== true && group.secondaryDevice !== null && group.syncing !== true && this.readable(model, group.secondaryDevice);
        if (!primaryOk && !secondaryOk) failedGroups += 1;
        else if (!primaryOk || !secondaryOk) degradedGroups += 1;
        if (group.syncing === true) syncingGroups += 1;
        for (const deviceId of [group.primaryDevice, group.secondaryDevice]) {
          if (!this.readable(model, deviceId)) continue;
          copies += 1;
          if (!counted.has(deviceId as Id)) {
            counted.add(deviceId as Id);
            copyBytes += model.devices[deviceId as Id]?.usedBytes ?? 0;
          }
        }
      }
      const perGroupBytes = copies > 0 ? copyBytes / copies : 0;
      const degradedBytes = Math.round(degradedGroups * perGroupBytes);
      const expected = {
        rawBytes,
        spareBytes,
        usableBytes: Math.floor((rawBytes - spareBytes) / 2),
        thickReservedBytes,
        thinProvisionedBytes,
        inUseBytes: Math.floor(usedRawBytes / 2),
        protectedBytes: Math.max(0, usedRawBytes - degradedBytes),
        degradedBytes,
        failedBytes: Math.round(failedGroups * perGroupBytes),
        unusedBytes: Math.max(0, rawBytes - spareBytes - usedRawBytes - 2 * thickReservedBytes),
        snapshotInUseBytes: Math.floor(healthy.reduce((sum, device) => sum + (device.snapshotBytes ?? 0), 0) / 2),
        snapshotProvisionedBytes: volumes.filter((volume) => volume.volumeType === 'Snapshot').reduce((sum, volume) => sum + volume.sizeBytes, 0),
      };
      const capacity = this.machine.poolCapacity(pool.id);
      check(JSON.stringify(capacity) === JSON.stringify(expected), `pool ${pool.name}: capacity ${JSON.stringify(capacity)}, recomputed ${JSON.stringify(expected)}`);
      const health = this.machine.poolHealth(pool);
      check(health.failedGroups === failedGroups && health.degradedGroups === degradedGroups && health.syncingGroups === syncingGroups, `pool ${pool.name}: health ${JSON.stringify(health)}, recomputed ${failedGroups} failed, ${degradedGroups} degraded, ${syncingGroups} syncing`);
    }
  }
}

function simulate(seed: number, steps: number, snapshots = true): { simulation: Simulation; failure: string | null } {
  const simulation = new Simulation(seed, snapshots);
  try {
    for (simulation.step = 1; simulation.step <= steps; simulation.step++) simulation.runStep();
    return { simulation, failure: null };
  } catch (err) {
    if (!(err instanceof InvariantError) && !(err instanceof MdmError)) throw err;
    return { simulation, failure: `step ${simulation.step} (t=${simulation.nowMs} ms, epoch ${simulation.model.epoch}): ${err.message}\nlast events:\n${simulation.trail.join('\n')}` };
  }
}

const replaySeed = process.env['MESHBLOCK_SIM_SEED'];
const steps = process.env['MESHBLOCK_SIM_STEPS'] !== undefined ? Number(process.env['MESHBLOCK_SIM_STEPS']) : stepsDefault;
// Fixed seeds keep CI reproducible; one fresh seed a run keeps exploring (it is printed).
// 858006796: a lost group whose secondary came back was left with an unreadable primary when
// its pool's last volume went (tidyLost).
// Seeds with snapshot events (their own random stream) and without: 858006796 runs as it was
// recorded, before snapshots (MESHBLOCK_SIM_SNAPSHOTS=0 replays a seed that way).
const withoutSnapshots = new Set(replaySeed !== undefined ? (process.env['MESHBLOCK_SIM_SNAPSHOTS'] === '0' ? [Number(replaySeed)] : []) : [858006796]);
const freshSeed = Math.floor(Math.random() * 2 ** 31);
const seeds = replaySeed !== undefined ? [Number(replaySeed)] : [1, 2, 858006796, freshSeed];

for (const seed of seeds) {
  const snapshots = !withoutSnapshots.has(seed);
  t.test(`seed ${seed}${snapshots ? ' with snapshots' : ''}: ${steps} steps of failures, rebuilds and restarts keep every invariant`, async (t) => {
    t.comment(`seed ${seed} (replay: MESHBLOCK_SIM_SEED=${seed}${snapshots ? '' : ' MESHBLOCK_SIM_SNAPSHOTS=0'} npx tap test/mdm/simulation.test.ts)`);
    const { simulation, failure } = simulate(seed, steps, snapshots);
    const counts = Object.fromEntries([...simulation.counts].sort(([a], [b]) => a.localeCompare(b)));
    t.comment(JSON.stringify(counts));
    t.equal(failure, null, `seed ${seed}: ${failure ?? 'no invariant broken'}`);
    if (failure !== null) return;
    // The run reached what it is meant to test (else its invariants proved little). The fixed
    // seeds must reach every case; the fresh seed explores, and a rare case it happens to miss
    // (seed 593949851 never met a stale copiesSynced entry in 3000 steps) is said, not failed:
    // its invariants held all the same.
    const reached = (what: string): void => {
      const count = simulation.counts.get(what) ?? 0;
      if (seed === freshSeed && replaySeed === undefined && count === 0) t.comment(`this fresh seed did not reach ${what}`);
      else t.ok(count > 0, `it reached ${what} (${count})`);
    };
    for (const what of ['sdsDown', 'sdsOut', 'deviceFailed', 'copiesSynced', 'back before out', 'back after out', 'mdm restart', 'report ignored', 'stale report', 'stale copiesSynced entry', 'fenced', 'order lost', 'steps with fault-set groups']) reached(what);
    if (snapshots) {
      for (const what of ['commitSnapshot', 'abortSnapshot', 'overwriteVolumeContent', 'removeSnapshotGroup', 'refused beginSnapshot', 'refused overwriteVolumeContent']) reached(what);
    }
    t.ok(Object.keys(simulation.model.volumes).length > 0, 'volumes remain at the end');
  });
}

t.test('the same seed gives the same run', async (t) => {
  const seed = seeds[0] as number;
  const first = simulate(seed, 400);
  const second = simulate(seed, 400);
  t.equal(first.failure, null);
  t.equal(JSON.stringify(second.simulation.model), JSON.stringify(first.simulation.model), 'identical models');
  t.same([...second.simulation.counts], [...first.simulation.counts], 'identical histories');
});
