// The rebuild simulator (issue 23, "rebuild grows with the cluster"): how long one failed
// SDS's data takes to be re-protected (every group back on two in-sync copies) at a given
// cluster size, with the MDM's own decisions and a bandwidth model of the disks and NICs.
//
// What is real. The cluster is a real StateMachine (src/mdm/state-machine.ts): SDSs,
// devices, a pool planned by the real planner (placement-planner.ts), a volume (so the pool
// holds data and re-plans keep copies in place). The failure goes through the real health
// decisions (src/mdm/health.ts) on a simulated clock, exactly as MdmService and the seeded
// simulation (test/mdm/simulation.test.ts) carry them out: decideHealth every second
// (declares the SDS down after the disconnect grace, out after rebuildAfterMs, which re-plans
// the pool: sdsOut), decideRebuilds after every map change (which groups fill, from which
// primary to which new secondary, with which throttle: fillThrottle), noteRebuildDone /
// takeSyncedBatch every rebuildSyncedBatchMs (copiesSynced, which re-plans again). Nothing
// of that is re-implemented here; only the SDSs and the bytes are simulated.
//
// What is modelled: the source SDSs, as src/sds/rebuild.ts runs its jobs, and the hardware.
// - Jobs. An order starts a job on its source SDS (the group's primary) unless one for the
//   same copy runs (a repeat, or the same order at a new epoch: the job goes on, as a real
//   one resumes from its cursor; the few chunks after the last cursor a real SDS copies
//   again are not modelled). Each SDS runs at most sdsRebuildsRunningMax jobs at once, in
//   the order they were given (FIFO); the others wait. A job whose copy the map no longer
//   names (the group re-placed) is dropped at the map change. A job copies one group: its
//   bytes are the pool's data divided evenly over its groups (chunks hash evenly onto
//   groups); every group of the pool carries the same bytes.
// - Throttle. The jobs of one SDS share one budget (per pool and kind where the pool has an
//   IO priority policy, as FillBudget): a pace in bytes/s (0: none) and a limit of chunk
//   copies in flight. The limit caps the budget at inflight × chunkBytes / chunk service
//   time (Little's law): a copy holds its slot while the chunk is read from the source
//   device, sent over the NIC, and written on the target device, one after the other, plus
//   chunkLatencyMs of round trips and request handling. The cluster is quiet (no client IO),
//   so favorAppIos's under-load rate never applies.
// - Hardware, as a fluid model. Each device reads and writes at its own rate (separate
//   budgets: a mixed load is not slower than its parts here, which flatters small clusters
//   where devices both send and receive), each SDS is a host with a NIC of its own rate in
//   each direction. A job's copy stream uses the source device's read, the source NIC's
//   transmit, the target NIC's receive, the target device's write and its budget. Between
//   events (a job finishes, a batch is recorded, a health tick) every running job moves at
//   a constant rate, set by max-min fair sharing of all those resources (progressive
//   filling): no resource above its rate, and no job could go faster without slowing one
//   that is no faster. Sharing of TCP and disk queues is fairer here than in life.
// - Not modelled: client IO, the map's delivery to the SDSs (instant), the time an order or
//   a report takes over the wire (instant), ListGroup/Flush round trips per job, failed
//   copies, and rebalances after the re-protect (the simulation stops when every group has
//   two in-sync copies; fills left over that move healthy copies are counted, not run).
//
// Health ticks. The simulation ticks every second (heartbeatIntervalMs) until the rebuild
// starts, then every rebuildOrderRepeatMs: once the SDS is out, a tick between those could
// only give an order again (no report is lost here, no copy fails, no SDS is fenced) or
// repair a pool, and the orders of a new epoch are given at the map change, as
// MdmService.orderRebuildsNow() does. It keeps a 4 TB rebuild at 8 SDSs (hours simulated)
// to a few seconds of wall time.
//
// Time. `seconds` runs from the re-plan that starts the rebuild (sdsOut) to the last group
// recorded in sync; `secondsFromFailure` adds the detection and the rebuildAfterMs wait
// from the kill (the real MDM's `--rebuild-after`, 60 s unless told). Data per SDS is fixed
// as the cluster grows (4 TB each by default: the bytes both copies take on that SDS), so
// the bytes to rebuild stay about the same while the SDSs that share the work grow.

import { assert, assertNever } from '../common/assert.js';
import { InvalidArgumentError } from '../common/errors.js';
import { chunkBytesDefault, rebuildOrderRepeatMs, rebuildSyncedBatchMs, heartbeatIntervalMs, sdsRebuildChunksInflightMax, sdsRebuildsRunningMax } from '../common/limits.js';
import { GiB } from '../common/units.js';
import {
  decideHealth,
  decideRebuilds,
  emptyObservations,
  healthOptions,
  noteDecisions,
  noteRebuildDone,
  noteRepairDone,
  noteSdsDisconnected,
  takeSyncedBatch,
  type HealthDecisions,
  type HealthObservations,
  type HealthOptions,
  type RebuildOrder,
} from '../mdm/health.js';
import { emptyModel, type Id, type IoPriorityPolicyName, type PoolGroup } from '../mdm/model.js';
import { pgCountFor } from '../mdm/placement-planner.js';
import { StateMachine, type Command } from '../mdm/state-machine.js';

/** The largest cluster simulated (as the fleet: what one MDM is claimed to manage). */
export const rebuildSimSdsCountMax = 4096;

export interface ReprotectOptions {
  /** SDSs in the cluster, each on a host of its own; one of them fails. */
  sdsCount: number;
  /** Devices per SDS, all in the one pool (default 4). */
  devicesPerSds?: number;
  /** Bytes stored on each SDS, both copies counted (default 4 TB). The failed SDS held this much. */
  dataBytesPerSds?: number;
  /** Devices are this full with the data (default 0.5): sets their capacity, which the planner balances by. */
  deviceFillRatio?: number;
  /** Each device's read and write rates, bytes/s (default 200 MB/s each). */
  deviceReadBytesPerSecond?: number;
  deviceWriteBytesPerSecond?: number;
  /** Each host's NIC, bytes/s in each direction (default 1.25 GB/s, 10 Gb/s). */
  nicBytesPerSecond?: number;
  /** Round trips and request handling per chunk copy, on top of its transfer times (default 0.5 ms). */
  chunkLatencyMs?: number;
  /** The pool's groups (default pgCountFor(all devices), as for a pool expected to grow to this size). */
  pgCount?: number;
  /** The pool's rebuild IO priority policy (docs/rebuild-policy.md); absent: never set, the MDM's start options. */
  rebuildPolicy?: { policy: IoPriorityPolicyName; concurrentIosPerDevice?: number; bandwidthPerDeviceKbps?: number };
  /** The MDM's start options (--rebuild-rate, --rebuild-inflight, --rebuild-after, ...). */
  health?: Partial<HealthOptions>;
  /** Simulated time after which the run gives up (default 30 days): a result with `protected: false`. */
  simulatedSecondsMax?: number;
}

export interface ReprotectResult {
  sdsCount: number;
  deviceCount: number;
  pgCount: number;
  /** Bytes every group carries on each of its copies. */
  groupBytes: number;
  /** Copies the failed SDS held (groups that were short of a copy), and their bytes. */
  copiesLost: number;
  bytesToRebuild: number;
  /** Rebuild jobs finished, and their bytes (a copy rebuilt twice would show here). */
  jobsDone: number;
  bytesRebuilt: number;
  /** Every group on two copies in sync at the end. */
  protected: boolean;
  /** From the re-plan that starts the rebuild (sdsOut) to the last group recorded in sync. */
  seconds: number;
  /** From the failure (the connection dropping) to the last group in sync. */
  secondsFromFailure: number;
  /** bytesRebuilt / seconds. */
  bytesPerSecond: number;
  /** SDSs that sent, and that received, copies. */
  sourceSdsCount: number;
  targetSdsCount: number;
  /** The highest rate any device read or wrote at, and any NIC sent or received at, as a fraction of its rate (≤ 1). */
  deviceReadUtilizationMax: number;
  deviceWriteUtilizationMax: number;
  nicUtilizationMax: number;
  /** The share of job-seconds limited by each kind of resource (what bounds the rebuild). */
  boundBy: Record<ResourceKind, number>;
  /** Copies lost that were rebuilt more than once, or never (both 0 in a correct run). */
  copiesRebuiltTwice: number;
  copiesNeverRebuilt: number;
  /** Fills of healthy copies (rebalances) the re-plans left for after the re-protect. */
  rebalancesPending: number;
  ordersGiven: number;
  copiesSyncedCommands: number;
  /** The map's epochs during the rebuild. */
  epochs: number;
  /** Wall time the simulation took. */
  wallMs: number;
}

export type ResourceKind = 'deviceRead' | 'deviceWrite' | 'nicSend' | 'nicReceive' | 'budget';
const resourceKinds: readonly ResourceKind[] = ['deviceRead', 'deviceWrite', 'nicSend', 'nicReceive', 'budget'];

interface Resource {
  kind: ResourceKind;
  capacityBytesPerSecond: number;
  /** Left while rates are being shared out. */
  residual: number;
  /** Jobs using it whose rate is not fixed yet. */
  unfixed: number;
  /** The highest total rate seen on it. */
  loadMax: number;
}

interface Job {
  key: string;
  poolId: Id;
  pgIndex: number;
  sourceSdsId: Id;
  targetSdsId: Id;
  epoch: number;
  bytesTotal: number;
  bytesLeft: number;
  state: 'waiting' | 'running' | 'done';
  rateBytesPerSecond: number;
  resources: Resource[];
  boundBy: ResourceKind | null;
  /** The throttle of the order that started (or last re-ordered) it, for its budget. */
  budgetKey: string;
  paceBytesPerSecond: number;
  chunksInflightMax: number;
}

interface SimSds {
  id: Id;
  queue: Job[];
  running: number;
  nicSend: Resource;
  nicReceive: Resource;
  budgets: Map<string, Resource>;
}

const terabyte = 1e12;
const epsilon = 1e-9;

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) throw new InvalidArgumentError(name, `must be a positive number, got ${value}`);
  return value;
}

function hexId(prefix: number, index: number): string {
  return `${prefix.toString(16).padStart(4, '0')}${index.toString(16).padStart(12, '0')}`;
}

function resource(kind: ResourceKind, capacityBytesPerSecond: number): Resource {
  return { kind, capacityBytesPerSecond, residual: 0, unfixed: 0, loadMax: 0 };
}

/**
 * Simulates the loss of one SDS of `sdsCount` and the rebuild of its copies; see the
 * header for the model. Deterministic: the planner draws from a fixed seed.
 */
export function simulateReprotect(options: ReprotectOptions): ReprotectResult {
  const startedMs = Date.now();
  const sdsCount = options.sdsCount;
  if (!Number.isSafeInteger(sdsCount) || sdsCount < 3 || sdsCount > rebuildSimSdsCountMax) throw new InvalidArgumentError('sdsCount', `must be an integer from 3 to ${rebuildSimSdsCountMax}, got ${sdsCount}`);
  const devicesPerSds = options.devicesPerSds ?? 4;
  if (!Number.isSafeInteger(devicesPerSds) || devicesPerSds < 1 || devicesPerSds > 64) throw new InvalidArgumentError('devicesPerSds', `must be an integer from 1 to 64, got ${devicesPerSds}`);
  const dataBytesPerSds = positive('dataBytesPerSds', options.dataBytesPerSds ?? 4 * terabyte);
  const fillRatio = positive('deviceFillRatio', options.deviceFillRatio ?? 0.5);
  if (fillRatio >= 1) throw new InvalidArgumentError('deviceFillRatio', `must be below 1, got ${fillRatio}`);
  const readRate = positive('deviceReadBytesPerSecond', options.deviceReadBytesPerSecond ?? 200e6);
  const writeRate = positive('deviceWriteBytesPerSecond', options.deviceWriteBytesPerSecond ?? 200e6);
  const nicRate = positive('nicBytesPerSecond', options.nicBytesPerSecond ?? 1.25e9);
  const chunkLatencyMs = options.chunkLatencyMs ?? 0.5;
  if (!Number.isFinite(chunkLatencyMs) || chunkLatencyMs < 0) throw new InvalidArgumentError('chunkLatencyMs', `must be a number ≥ 0, got ${chunkLatencyMs}`);
  const simulatedMsMax = positive('simulatedSecondsMax', options.simulatedSecondsMax ?? 30 * 86_400) * 1000;
  const deviceCount = sdsCount * devicesPerSds;
  const pgCount = options.pgCount ?? pgCountFor(deviceCount);
  const health = healthOptions(options.health ?? {});

  // --- the cluster, built as fleet.ts's preloadDataDir builds it: one plan, not one per device.
  const machine = new StateMachine(emptyModel('5eb51d0000000000', 'rebuild-sim'));
  const apply = (command: Command): ReturnType<StateMachine['apply']> => machine.apply(command);
  const protectionDomainId = apply({ type: 'addProtectionDomain', name: 'pd1' }).id as Id;
  const poolId = apply({ type: 'addStoragePool', protectionDomainId, name: 'pool1', pgCount }).id as Id;
  const chunkBytes = machine.model.storagePools[poolId]?.chunkBytes ?? chunkBytesDefault;
  const capacityBytes = Math.ceil(dataBytesPerSds / devicesPerSds / fillRatio / GiB) * GiB;
  const sdsIds: Id[] = [];
  const deviceResources = new Map<Id, { read: Resource; write: Resource }>();
  for (let index = 0; index < sdsCount; index += 1) {
    const sdsId = hexId(0x5d5, index);
    sdsIds.push(sdsId);
    apply({ type: 'registerSds', sdsId, name: `sds${index}`, address: `127.0.0.1:${10_000 + index}`, nowMs: 0, host: null });
    apply({ type: 'addSds', sdsId, protectionDomainId, faultSetId: null });
    for (let deviceIndex = 0; deviceIndex < devicesPerSds; deviceIndex += 1) {
      const deviceId = hexId(0xde5, index * 64 + deviceIndex);
      deviceResources.set(deviceId, { read: resource('deviceRead', readRate), write: resource('deviceWrite', writeRate) });
      const last = index === sdsCount - 1 && deviceIndex === devicesPerSds - 1;
      if (last) {
        // The one plan of the whole pool.
        apply({ type: 'addDevice', deviceId, sdsId, storagePoolId: poolId, path: `/dev/sim${deviceIndex}`, name: null, capacityBytes });
      } else {
        machine.model.devices[deviceId] = { id: deviceId, name: `sds${index}-d${deviceIndex + 1}`, sdsId, storagePoolId: poolId, path: `/dev/sim${deviceIndex}`, capacityBytes, state: 'normal', usedBytes: 0 };
      }
    }
  }
  // A volume: the pool holds data, so re-plans keep copies where they are.
  apply({ type: 'addVolume', storagePoolId: poolId, name: 'vol1', sizeBytes: 8 * GiB, volumeType: 'ThinProvisioned', nowMs: 0 });
  if (options.rebuildPolicy !== undefined) apply({ type: 'setIoPriorityPolicy', poolId, kind: 'rebuild', ...options.rebuildPolicy });
  const pool = machine.model.storagePools[poolId];
  assert(pool !== undefined && pool.groups.length === pgCount, 'the pool was planned');
  const groupBytes = (dataBytesPerSds * sdsCount) / (2 * pgCount);

  // --- the failure: SDS 0 drops its connection at time 0.
  const failedSdsId = sdsIds[0] as Id;
  const failedDevices = new Set(machine.sdsDevices(failedSdsId).map((device) => device.id));
  const lostGroups = new Set<number>();
  pool.groups.forEach((group, pgIndex) => {
    if (failedDevices.has(group.primaryDevice) || (group.secondaryDevice !== null && failedDevices.has(group.secondaryDevice))) lostGroups.add(pgIndex);
  });
  const connected = new Set(sdsIds.filter((sdsId) => sdsId !== failedSdsId));
  const observations: HealthObservations = emptyObservations();
  noteSdsDisconnected(observations, failedSdsId, 0);
  for (const sdsId of connected) machine.observe({ type: 'sdsHeartbeat', sdsId, nowMs: 0, devices: [] });

  const sdss = new Map<Id, SimSds>();
  for (const sdsId of sdsIds) sdss.set(sdsId, { id: sdsId, queue: [], running: 0, nicSend: resource('nicSend', nicRate), nicReceive: resource('nicReceive', nicRate), budgets: new Map() });
  const jobs = new Map<string, Job>();
  const rebuiltTimes = new Map<number, number>();
  let nowMs = 0;
  let outAtMs: number | null = null;
  let syncedDueMs: number | null = null;
  let ordersGiven = 0;
  let copiesSyncedCommands = 0;
  let jobsDone = 0;
  let bytesRebuilt = 0;
  const epochFirst = machine.model.epoch;
  const boundSeconds: Record<ResourceKind, number> = { deviceRead: 0, deviceWrite: 0, nicSend: 0, nicReceive: 0, budget: 0 };
  let ratesStale = true;

  const sdsOf = (sdsId: Id): SimSds => {
    const sds = sdss.get(sdsId);
    assert(sds !== undefined, `SDS ${sdsId} is simulated`);
    return sds;
  };

  /** The chunk copies of a budget: a pace, and its in-flight limit over one chunk's service time. */
  const chunkServiceSeconds = chunkBytes / readRate + chunkBytes / nicRate + chunkBytes / writeRate + chunkLatencyMs / 1000;
  const budgetCapacity = (paceBytesPerSecond: number, chunksInflightMax: number): number => {
    const inflight = Math.max(1, Math.min(chunksInflightMax, sdsRebuildChunksInflightMax));
    const byInflight = (inflight * chunkBytes) / chunkServiceSeconds;
    return paceBytesPerSecond > 0 ? Math.min(paceBytesPerSecond, byInflight) : byInflight;
  };

  const startWaiting = (sds: SimSds): void => {
    for (const job of sds.queue) {
      if (sds.running >= sdsRebuildsRunningMax) break;
      if (job.state !== 'waiting') continue;
      job.state = 'running';
      sds.running += 1;
      ratesStale = true;
    }
  };

  /** The SDS's side of an order (src/sds/rebuild.ts onRebuild): a new job, a repeat, or a report again. */
  const deliverOrder = (order: RebuildOrder): void => {
    ordersGiven += 1;
    const args = order.args;
    const sds = sdsOf(order.sourceSdsId);
    const budgetKey = args.policy === undefined ? '' : `${args.poolId}/${args.kind ?? 'rebuild'}`;
    const existing = jobs.get(order.key);
    if (existing !== undefined && existing.state !== 'done') {
      // Running or waiting: it goes on (from its cursor), with the order's epoch and throttle.
      existing.epoch = args.epoch;
      if (existing.budgetKey !== budgetKey || existing.paceBytesPerSecond !== args.bytesPerSecondMax || existing.chunksInflightMax !== args.chunksInflightMax) ratesStale = true;
      Object.assign(existing, { budgetKey, paceBytesPerSecond: args.bytesPerSecondMax, chunksInflightMax: args.chunksInflightMax });
      return;
    }
    if (existing !== undefined) {
      // Done, and ordered again (the batch not recorded yet, or a repeat): the report again.
      report(existing);
      return;
    }
    const job: Job = {
      key: order.key,
      poolId: args.poolId,
      pgIndex: args.pgIndex,
      sourceSdsId: order.sourceSdsId,
      targetSdsId: args.targetSdsId,
      epoch: args.epoch,
      bytesTotal: groupBytes,
      bytesLeft: groupBytes,
      state: 'waiting',
      rateBytesPerSecond: 0,
      resources: [],
      boundBy: null,
      budgetKey,
      paceBytesPerSecond: args.bytesPerSecondMax,
      chunksInflightMax: args.chunksInflightMax,
    };
    jobs.set(job.key, job);
    sds.queue.push(job);
    startWaiting(sds);
  };

  const report = (job: Job): void => {
    const accepted = noteRebuildDone(observations, machine, job.sourceSdsId, { poolId: job.poolId, pgIndex: job.pgIndex, targetSdsId: job.targetSdsId, epoch: job.epoch, mode: 'full', chunksDone: Math.ceil(job.bytesTotal / chunkBytes), bytesDone: Math.round(job.bytesTotal) });
    if (accepted) syncedDueMs ??= nowMs + rebuildSyncedBatchMs;
  };

  /** The map changed: each SDS drops the jobs whose copy the map no longer names (rebuild.ts checks the group at each order). */
  const dropStaleJobs = (): void => {
    for (const job of jobs.values()) {
      if (job.state === 'done') continue;
      const group = machine.model.storagePools[job.poolId]?.groups[job.pgIndex];
      const current = group !== undefined && group.secondaryDevice !== null && machine.model.devices[group.primaryDevice]?.sdsId === job.sourceSdsId && machine.model.devices[group.secondaryDevice]?.sdsId === job.targetSdsId;
      if (current) continue;
      const sds = sdsOf(job.sourceSdsId);
      if (job.state === 'running') sds.running -= 1;
      sds.queue = sds.queue.filter((queued) => queued !== job);
      jobs.delete(job.key);
      ratesStale = true;
      startWaiting(sds);
    }
  };

  const execute = (command: Command): void => {
    const epochBefore = machine.model.epoch;
    machine.apply(command);
    if (command.type === 'sdsOut') outAtMs = nowMs;
    if (command.type === 'copiesSynced') copiesSyncedCommands += 1;
    if (machine.model.epoch !== epochBefore) {
      dropStaleJobs();
      // As MdmService: the map goes out, then the rebuilds of the new epoch are ordered.
      carryOut(decideRebuilds({ machine, nowMs, connected, observations, options: health }));
    }
  };

  /** As MdmService.carryOut(), for what this cluster meets: commands, orders (no SDC, no fencing of a live SDS). */
  function carryOut(decisions: HealthDecisions): void {
    noteDecisions(observations, decisions, nowMs);
    for (const observation of decisions.observations) machine.observe(observation);
    for (const sdsId of decisions.fence) connected.delete(sdsId);
    for (const command of decisions.commands) {
      execute(command);
      if (command.type === 'repairPool') noteRepairDone(observations, command.poolId);
    }
    for (const order of decisions.orders) deliverOrder(order);
  }

  /** Max-min fair rates of the running jobs (progressive filling), and which resource bounds each. */
  const shareRates = (): void => {
    ratesStale = false;
    const running: Job[] = [];
    const touched = new Set<Resource>();
    for (const job of jobs.values()) {
      if (job.state !== 'running') continue;
      const source = sdsOf(job.sourceSdsId);
      const target = sdsOf(job.targetSdsId);
      const group = machine.model.storagePools[job.poolId]?.groups[job.pgIndex] as PoolGroup;
      const sourceDevice = deviceResources.get(group.primaryDevice);
      const targetDevice = deviceResources.get(group.secondaryDevice as Id);
      assert(sourceDevice !== undefined && targetDevice !== undefined, `group ${job.pgIndex}'s devices are simulated`);
      let budget = source.budgets.get(job.budgetKey);
      const capacity = budgetCapacity(job.paceBytesPerSecond, job.chunksInflightMax);
      if (budget === undefined) source.budgets.set(job.budgetKey, (budget = resource('budget', capacity)));
      // The budget's numbers are the last order's (FillBudget reads them at each chunk).
      budget.capacityBytesPerSecond = capacity;
      job.resources = [sourceDevice.read, source.nicSend, target.nicReceive, targetDevice.write, budget];
      job.rateBytesPerSecond = 0;
      job.boundBy = null;
      running.push(job);
      for (const used of job.resources) touched.add(used);
    }
    for (const used of touched) {
      used.residual = used.capacityBytesPerSecond;
      used.unfixed = 0;
    }
    for (const job of running) for (const used of job.resources) used.unfixed += 1;
    let unfixed = running;
    while (unfixed.length > 0) {
      let step = Infinity;
      for (const used of touched) if (used.unfixed > 0) step = Math.min(step, used.residual / used.unfixed);
      for (const job of unfixed) job.rateBytesPerSecond += step;
      for (const used of touched) used.residual -= step * used.unfixed;
      const next: Job[] = [];
      for (const job of unfixed) {
        const saturated = job.resources.find((used) => used.residual <= epsilon * used.capacityBytesPerSecond);
        if (saturated === undefined) {
          next.push(job);
          continue;
        }
        job.boundBy = saturated.kind;
        for (const used of job.resources) used.unfixed -= 1;
      }
      assert(next.length < unfixed.length, 'progressive filling fixes a job at every step');
      unfixed = next;
    }
    for (const used of touched) {
      const load = used.capacityBytesPerSecond - used.residual;
      used.loadMax = Math.max(used.loadMax, load);
    }
  };

  const degraded = (): boolean => pool.groups.some((group) => group.secondaryDevice === null || (group.syncing === true && group.rebalance !== true));

  // --- the clock: health ticks every heartbeatIntervalMs, the synced batch, job completions.
  let nextTickMs = heartbeatIntervalMs;
  let done = false;
  while (nowMs < simulatedMsMax) {
    if (ratesStale) shareRates();
    let nextMs = Math.min(nextTickMs, syncedDueMs ?? Infinity);
    let finishing: Job | null = null;
    for (const job of jobs.values()) {
      if (job.state !== 'running' || job.rateBytesPerSecond <= 0) continue;
      const atMs = nowMs + (job.bytesLeft / job.rateBytesPerSecond) * 1000;
      if (atMs < nextMs) {
        nextMs = atMs;
        finishing = job;
      }
    }
    const elapsedSeconds = (nextMs - nowMs) / 1000;
    for (const job of jobs.values()) {
      if (job.state !== 'running') continue;
      job.bytesLeft = job === finishing ? 0 : Math.max(0, job.bytesLeft - job.rateBytesPerSecond * elapsedSeconds);
      if (job.boundBy !== null) boundSeconds[job.boundBy] += elapsedSeconds;
    }
    nowMs = nextMs;
    for (const job of jobs.values()) {
      if (job.state !== 'running' || (job !== finishing && job.bytesLeft > epsilon * job.bytesTotal)) continue;
      job.state = 'done';
      job.bytesLeft = 0;
      jobsDone += 1;
      bytesRebuilt += job.bytesTotal;
      rebuiltTimes.set(job.pgIndex, (rebuiltTimes.get(job.pgIndex) ?? 0) + 1);
      const sds = sdsOf(job.sourceSdsId);
      sds.running -= 1;
      sds.queue = sds.queue.filter((queued) => queued !== job);
      ratesStale = true;
      report(job);
      startWaiting(sds);
    }
    if (syncedDueMs !== null && nowMs >= syncedDueMs) {
      syncedDueMs = null;
      for (const command of takeSyncedBatch(observations)) execute(command);
    }
    if (nowMs >= nextTickMs) {
      // Every second until the rebuild starts (failure detection); then every
      // rebuildOrderRepeatMs, since nothing a tick decides in between differs here (see the header).
      nextTickMs += outAtMs === null ? heartbeatIntervalMs : rebuildOrderRepeatMs;
      // The live SDSs heartbeat (the down deadline never passes for them).
      for (const sdsId of connected) machine.observe({ type: 'sdsHeartbeat', sdsId, nowMs, devices: [] });
      carryOut(decideHealth({ machine, nowMs, connected, observations, options: health }));
    }
    if (outAtMs !== null && !degraded()) {
      done = true;
      break;
    }
  }

  const sourceSdss = new Set<Id>();
  const targetSdss = new Set<Id>();
  for (const job of jobs.values()) {
    sourceSdss.add(job.sourceSdsId);
    targetSdss.add(job.targetSdsId);
  }
  let readMax = 0;
  let writeMax = 0;
  for (const { read, write } of deviceResources.values()) {
    readMax = Math.max(readMax, read.loadMax / read.capacityBytesPerSecond);
    writeMax = Math.max(writeMax, write.loadMax / write.capacityBytesPerSecond);
  }
  let nicMax = 0;
  for (const sds of sdss.values()) nicMax = Math.max(nicMax, sds.nicSend.loadMax / nicRate, sds.nicReceive.loadMax / nicRate);
  const boundTotal = resourceKinds.reduce((sum, kind) => sum + boundSeconds[kind], 0);
  const boundBy = Object.fromEntries(resourceKinds.map((kind) => [kind, boundTotal > 0 ? boundSeconds[kind] / boundTotal : 0])) as Record<ResourceKind, number>;
  let copiesRebuiltTwice = 0;
  let copiesNeverRebuilt = 0;
  for (const pgIndex of lostGroups) {
    const times = rebuiltTimes.get(pgIndex) ?? 0;
    if (times === 0) copiesNeverRebuilt += 1;
    if (times > 1) copiesRebuiltTwice += 1;
  }
  const seconds = outAtMs === null ? 0 : (nowMs - outAtMs) / 1000;
  return {
    sdsCount,
    deviceCount,
    pgCount,
    groupBytes,
    copiesLost: lostGroups.size,
    bytesToRebuild: lostGroups.size * groupBytes,
    jobsDone,
    bytesRebuilt,
    protected: done,
    seconds,
    secondsFromFailure: nowMs / 1000,
    bytesPerSecond: seconds > 0 ? bytesRebuilt / seconds : 0,
    sourceSdsCount: sourceSdss.size,
    targetSdsCount: targetSdss.size,
    deviceReadUtilizationMax: readMax,
    deviceWriteUtilizationMax: writeMax,
    nicUtilizationMax: nicMax,
    boundBy,
    copiesRebuiltTwice,
    copiesNeverRebuilt,
    rebalancesPending: pool.groups.filter((group) => group.syncing === true && group.rebalance === true).length,
    ordersGiven,
    copiesSyncedCommands,
    epochs: machine.model.epoch - epochFirst,
    wallMs: Date.now() - startedMs,
  };
}

/** The cluster sizes issue 23 asks about. */
export const reprotectSdsCounts: readonly number[] = [8, 32, 128, 512, 1024];

/**
 * The simulated re-protect seconds by cluster size, for bench-scale.mjs's JSON line
 * (`reprotect`): {"8": seconds, ...}, from the re-plan that starts the rebuild; null where
 * the run gave up (simulatedSecondsMax). At the default sizes it takes ~20 s of one core,
 * most of it the 1,024-SDS cluster's setup and plans.
 */
export function reprotectSecondsBySize(sdsCounts: readonly number[] = reprotectSdsCounts, options: Omit<ReprotectOptions, 'sdsCount'> = {}): Record<string, number | null> {
  const bySize: Record<string, number | null> = {};
  for (const result of simulateReprotectSeries(sdsCounts, options)) bySize[String(result.sdsCount)] = result.protected ? Number(result.seconds.toFixed(1)) : null;
  return bySize;
}

/** simulateReprotect at each size, the same options otherwise. */
export function simulateReprotectSeries(sdsCounts: readonly number[], options: Omit<ReprotectOptions, 'sdsCount'> = {}): ReprotectResult[] {
  return sdsCounts.map((sdsCount) => simulateReprotect({ ...options, sdsCount }));
}

/** What a resource kind is called in the bench's table. */
export function resourceKindLabel(kind: ResourceKind): string {
  switch (kind) {
    case 'deviceRead':
      return 'device read';
    case 'deviceWrite':
      return 'device write';
    case 'nicSend':
      return 'NIC send';
    case 'nicReceive':
      return 'NIC receive';
    case 'budget':
      return 'rebuild throttle';
    default:
      return assertNever(kind, 'resource kind');
  }
}
