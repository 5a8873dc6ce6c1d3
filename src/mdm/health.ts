// The MDM's failure and rebuild decisions, as pure functions of (model, time, observations).
// The I/O layer (service.ts) feeds them the clock, what it saw on its connections and what
// it has already done, and carries out what they return: commands through the state
// machine's serialised execute(), rebuild orders over the wire, connections to fence. The
// seeded simulation (test/mdm/simulation.test.ts) drives the very same functions with
// simulated time, and an MDM that takes over (etcd Master/Slave) decides alike from the
// same model and observations.
//
// Nothing here reads a clock, opens a socket or changes the model: the functions only read
// the state machine's queries, and the note*() helpers only record, in the observations,
// what the I/O layer has carried out.

import {
  healthCommandRepeatMs,
  mdmRestartGraceMs,
  poolRepairIntervalMs,
  rebuildAfterMsDefault,
  rebuildBytesPerSecondMaxDefault,
  rebuildBytesPerSecondUnderLoadDefault,
  rebuildChunksInflightMaxDefault,
  rebuildOrderRepeatMs,
  rebuildRetryDelayMsMax,
  rebuildRetryDelayMsMin,
  sdcHeartbeatTimeoutMs,
  sdsRebuildChunksInflightMax,
  sdsDisconnectGraceMs,
  sdsDownAfterMsDefault,
} from '../common/limits.js';
import type { RebuildDone, RebuildFailure } from '../wire/mdm-ops.js';
import type { RebuildArgs, RebuildProgress, SdsStats } from '../wire/sds-ops.js';
import type { Id, IoPriorityPolicy, PoolGroup, StoragePool } from './model.js';
import { isDown, type Command, type FillKind, type Observation, type StateMachine } from './state-machine.js';

/** What the decisions read of the state machine: its model and queries, never apply(). */
export type ModelView = Pick<StateMachine, 'model' | 'readable' | 'needsRepair' | 'sdsDevices'>;

export interface HealthOptions {
  sdsDownAfterMs: number;
  rebuildAfterMs: number;
  rebuildBytesPerSecondMax: number;
  rebuildBytesPerSecondUnderLoad: number;
  rebuildChunksInflightMax: number;
}

export function healthOptions(given: Partial<HealthOptions>): HealthOptions {
  return {
    sdsDownAfterMs: given.sdsDownAfterMs ?? sdsDownAfterMsDefault,
    rebuildAfterMs: given.rebuildAfterMs ?? rebuildAfterMsDefault,
    rebuildBytesPerSecondMax: given.rebuildBytesPerSecondMax ?? rebuildBytesPerSecondMaxDefault,
    rebuildBytesPerSecondUnderLoad: given.rebuildBytesPerSecondUnderLoad ?? rebuildBytesPerSecondUnderLoadDefault,
    rebuildChunksInflightMax: given.rebuildChunksInflightMax ?? rebuildChunksInflightMaxDefault,
  };
}

/** A rebuild order given, with the epoch it was given at and when. */
export interface OrderGiven {
  epoch: number;
  atMs: number;
  /** The throttle it carried (throttleKey()): a policy change gives the order again at once. */
  throttle?: string;
}

/** A finished fill, waiting for its batch to be recorded (copiesSynced). */
export interface SyncedEntry {
  pgIndex: number;
  secondaryDevice: Id;
  orderEpoch: number;
}

/**
 * A group whose fill keeps failing on a chunk: what the source SDS said of its last failed
 * job, how many jobs failed in a row, and when the group is ordered again (backoff).
 */
export interface RebuildFailing {
  poolId: Id;
  pgIndex: number;
  sourceSdsId: Id;
  targetSdsId: Id;
  failure: RebuildFailure;
  /** Failed jobs in a row for this copy (since this MDM began watching it). */
  attempts: number;
  /** The last failed job's id: a job is counted once, however many heartbeats list it. */
  jobId: string;
  failedAtMs: number;
  retryAtMs: number;
}

/**
 * What the I/O layer saw and did that the decisions need and the model does not hold. Kept
 * out of the model because none of it is durable: an MDM that restarts (or takes over)
 * starts it afresh with noteRestart(). Each map is bounded by the model (SDSs, pools,
 * groups being filled); syncedPending empties at every batch.
 */
export interface HealthObservations {
  /** When each SDS's connection dropped (or, after a restart, a deadline in the future). */
  disconnectedSinceMs: Map<Id, number>;
  /** Rebuild orders given, by orderKey(), with their epoch. */
  ordersGiven: Map<string, OrderGiven>;
  /** Pools with a repairPool command in flight, and when each was last repaired. */
  repairing: Set<Id>;
  repairedAtMs: Map<Id, number>;
  /** Finished fills by pool, accepted and not yet recorded. */
  syncedPending: Map<Id, SyncedEntry[]>;
  /** Fills whose last job failed on a chunk, by orderKey(): retried after a backoff, shown. */
  rebuildFailures: Map<string, RebuildFailing>;
  /**
   * sdsDown and sdsOut decided, by commandKey(), and when: not decided again for
   * healthCommandRepeatMs (the first may still be queued). Bounded by the SDSs: entries go
   * once they are that old.
   */
  commandsGiven: Map<string, number>;
}

export function emptyObservations(): HealthObservations {
  return { disconnectedSinceMs: new Map(), ordersGiven: new Map(), repairing: new Set(), repairedAtMs: new Map(), syncedPending: new Map(), rebuildFailures: new Map(), commandsGiven: new Map() };
}

/** Which SDSs have a live, registered connection (the service's peers, the simulation's set). */
export interface Connections {
  has(sdsId: Id): boolean;
}

export interface HealthInput {
  machine: ModelView;
  nowMs: number;
  connected: Connections;
  observations: Readonly<HealthObservations>;
  options: HealthOptions;
}

/** A fill order for the group's primary SDS. */
export interface RebuildOrder {
  key: string;
  sourceSdsId: Id;
  args: RebuildArgs & { epoch: number };
}

export interface HealthDecisions {
  /** Volatile updates for observe(): SDCs and SDSs that went silent. */
  observations: Observation[];
  /** SDSs whose connection is closed before they are declared down: they must register again. */
  fence: Id[];
  /** Journaled changes, in order: sdsDown, sdsOut, repairPool. */
  commands: Command[];
  orders: RebuildOrder[];
  /** Groups whose second copy is filling (when rebuilds were decided; else null). */
  syncingGroups: number | null;
  /** The orderKey() of every group filling (when rebuilds were decided): failures of others are forgotten. */
  syncingKeys?: Set<string>;
}

export function orderKey(poolId: Id, pgIndex: number, targetSdsId: Id): string {
  return `${poolId}/${pgIndex}/${targetSdsId}`;
}

/** The key of an sdsDown or sdsOut decided for an SDS (commandsGiven). */
function commandKey(type: 'sdsDown' | 'sdsOut', sdsId: Id): string {
  return `${type}/${sdsId}`;
}

/**
 * An sdsDown or sdsOut was decided for this SDS less than healthCommandRepeatMs ago, and
 * nothing was heard of it since (`heardAtMs`: its last registration or heartbeat): one that
 * registered again after being declared down, and then dropped again, is declared down again
 * at once.
 */
function recentlyGiven(observations: Readonly<HealthObservations>, type: 'sdsDown' | 'sdsOut', sdsId: Id, nowMs: number, heardAtMs: number): boolean {
  const atMs = observations.commandsGiven.get(commandKey(type, sdsId));
  return atMs !== undefined && nowMs - atMs < healthCommandRepeatMs && heardAtMs <= atMs;
}

/**
 * Failure detection: SDCs silent too long are disconnected; an SDS disconnected past the
 * grace, or connected but silent past the down deadline, is fenced and declared down (if it
 * holds devices; else only shown disconnected); a down SDS away past rebuildAfterMs is out.
 */
export function decideFailures(input: HealthInput): HealthDecisions {
  const { machine, nowMs, connected, observations, options } = input;
  const model = machine.model;
  const decisions: HealthDecisions = { observations: [], fence: [], commands: [], orders: [], syncingGroups: null };
  for (const sdc of Object.values(model.sdcs)) {
    if (sdc.state === 'connected' && nowMs - sdc.lastSeenMs > sdcHeartbeatTimeoutMs) decisions.observations.push({ type: 'sdcDisconnected', sdcId: sdc.id });
  }
  for (const sds of Object.values(model.sdss)) {
    if (isDown(sds)) {
      if (sds.out !== true && nowMs - (sds.downSinceMs ?? nowMs) >= options.rebuildAfterMs && !recentlyGiven(observations, 'sdsOut', sds.id, nowMs, sds.lastHeartbeatMs)) decisions.commands.push({ type: 'sdsOut', sdsId: sds.id });
      continue;
    }
    const disconnectedSince = observations.disconnectedSinceMs.get(sds.id);
    const silentMs = nowMs - sds.lastHeartbeatMs;
    const reason =
      disconnectedSince !== undefined && nowMs - disconnectedSince >= sdsDisconnectGraceMs
        ? `disconnected for ${nowMs - disconnectedSince} ms`
        : connected.has(sds.id) && silentMs >= options.sdsDownAfterMs
          ? `no heartbeat for ${silentMs} ms`
          : null;
    if (reason === null) continue;
    if (machine.sdsDevices(sds.id).length === 0) {
      // Nothing to fail over: it is only shown as what it is.
      if (sds.state === 'connected') decisions.observations.push({ type: 'sdsDisconnected', sdsId: sds.id });
      continue;
    }
    // Decided a moment ago and still queued: fenced then, and deciding it again on news that
    // old could take it down after it registered again.
    if (recentlyGiven(observations, 'sdsDown', sds.id, nowMs, sds.lastHeartbeatMs)) continue;
    // Fenced first: it must register again (and take the current map) before it serves anything.
    decisions.fence.push(sds.id);
    decisions.commands.push({ type: 'sdsDown', sdsId: sds.id, nowMs, reason });
  }
  return decisions;
}

/**
 * Orders every group whose second copy is filling to be filled by its primary, once per
 * epoch (an SDS drops its rebuilds when the map changes, and resumes from its cursor when
 * ordered again), and again after rebuildOrderRepeatMs without the group being recorded in sync (a
 * report ignored or lost, an order lost): the SDS answers a repeat of a running job with
 * Ok, and of a finished one with its report again. Pools left with one-copy groups nothing
 * will fill are planned again, at most every poolRepairIntervalMs.
 */
export function decideRebuilds(input: HealthInput): HealthDecisions {
  const { machine, nowMs, connected, observations, options } = input;
  const model = machine.model;
  const epoch = model.epoch;
  const decisions: HealthDecisions = { observations: [], fence: [], commands: [], orders: [], syncingGroups: 0, syncingKeys: new Set() };
  let syncing = 0;
  for (const pool of Object.values(model.storagePools)) {
    pool.groups.forEach((group, pgIndex) => {
      if (group.syncing !== true || group.secondaryDevice === null || group.lost === true) return;
      syncing += 1;
      if (!machine.readable(group.primaryDevice) || !machine.readable(group.secondaryDevice)) return;
      const sourceSdsId = model.devices[group.primaryDevice]?.sdsId as Id;
      const targetSdsId = model.devices[group.secondaryDevice]?.sdsId as Id;
      const key = orderKey(pool.id, pgIndex, targetSdsId);
      decisions.syncingKeys?.add(key);
      // A job that failed on a chunk is ordered again only after its backoff.
      if ((observations.rebuildFailures.get(key)?.retryAtMs ?? 0) > nowMs) return;
      const given = observations.ordersGiven.get(key);
      const throttle = fillThrottle(machine, pool, group, sourceSdsId, options);
      // A policy changed while the job runs: the same order again carries the new numbers,
      // which the SDS applies to the running job (the next tick, so within a second).
      const throttleChanged = given !== undefined && (given.throttle ?? throttleKey(defaultThrottle(options))) !== throttleKey(throttle);
      if (given !== undefined && given.epoch === epoch && nowMs - given.atMs < rebuildOrderRepeatMs && !throttleChanged) return;
      if (!connected.has(sourceSdsId)) return;
      decisions.orders.push({
        key,
        sourceSdsId,
        args: {
          poolId: pool.id,
          pgIndex,
          targetSdsId,
          ...throttle,
          mode: group.delta === true ? 'delta' : 'full',
          epoch,
        },
      });
    });
  }
  for (const pool of Object.values(model.storagePools)) {
    if (observations.repairing.has(pool.id) || nowMs - (observations.repairedAtMs.get(pool.id) ?? 0) < poolRepairIntervalMs || !machine.needsRepair(pool)) continue;
    decisions.commands.push({ type: 'repairPool', poolId: pool.id });
  }
  decisions.syncingGroups = syncing;
  return decisions;
}

/**
 * One health tick: failures, then rebuilds, both decided from the same model (the failure
 * commands are carried out after). An SDS fenced by the first gets no order from the second.
 */
export function decideHealth(input: HealthInput): HealthDecisions {
  const failures = decideFailures(input);
  const fenced = new Set(failures.fence);
  const rebuilds = decideRebuilds({ ...input, connected: { has: (sdsId) => !fenced.has(sdsId) && input.connected.has(sdsId) } });
  return {
    observations: [...failures.observations, ...rebuilds.observations],
    fence: failures.fence,
    commands: [...failures.commands, ...rebuilds.commands],
    orders: rebuilds.orders,
    syncingGroups: rebuilds.syncingGroups,
    ...(rebuilds.syncingKeys !== undefined ? { syncingKeys: rebuilds.syncingKeys } : {}),
  };
}

/**
 * Records what the I/O layer is carrying out, so the next decision knows: orders given now
 * (and, with nothing filling, no order remembered), repairs started. Called before the
 * orders are sent and the commands executed.
 */
export function noteDecisions(observations: HealthObservations, decisions: HealthDecisions, nowMs: number): void {
  for (const order of decisions.orders) observations.ordersGiven.set(order.key, { epoch: order.args.epoch, atMs: nowMs, throttle: throttleKey(order.args) });
  for (const [key, atMs] of observations.commandsGiven) if (nowMs - atMs >= healthCommandRepeatMs) observations.commandsGiven.delete(key);
  for (const command of decisions.commands) {
    if (command.type === 'sdsDown' || command.type === 'sdsOut') observations.commandsGiven.set(commandKey(command.type, command.sdsId), nowMs);
    if (command.type !== 'repairPool') continue;
    observations.repairing.add(command.poolId);
    observations.repairedAtMs.set(command.poolId, nowMs);
  }
  if (decisions.syncingGroups === 0) observations.ordersGiven.clear();
  // A copy no longer filling (in sync, or re-placed) has no failure to show or back off from.
  const syncingKeys = decisions.syncingKeys;
  if (syncingKeys !== undefined) for (const key of observations.rebuildFailures.keys()) if (!syncingKeys.has(key)) observations.rebuildFailures.delete(key);
}

/** How long a fill that failed `attempts` times in a row waits before it is ordered again. */
export function rebuildRetryDelayMs(attempts: number): number {
  return Math.min(rebuildRetryDelayMsMax, rebuildRetryDelayMsMin * 2 ** Math.min(30, Math.max(0, attempts - 1)));
}

/**
 * A source SDS's stats list a job that failed on a chunk: counted once per job, for a group
 * still filling from that SDS to that target at the current epoch, and backed off. Returns
 * the entry when the job is newly counted (the caller logs it), else null. The group stays
 * syncing: only a finished job (copiesSynced) ends its fill.
 */
export function noteRebuildFailed(observations: HealthObservations, machine: ModelView, sdsId: Id, job: RebuildProgress, nowMs: number): RebuildFailing | null {
  const failure = failureOf(job);
  if (job.state !== 'failed' || failure === null) return null;
  const model = machine.model;
  const group = model.storagePools[job.poolId]?.groups[job.pgIndex];
  if (job.epoch !== model.epoch || group === undefined || group.syncing !== true || group.secondaryDevice === null) return null;
  if (model.devices[group.primaryDevice]?.sdsId !== sdsId || model.devices[group.secondaryDevice]?.sdsId !== job.targetSdsId) return null;
  const key = orderKey(job.poolId, job.pgIndex, job.targetSdsId);
  const known = observations.rebuildFailures.get(key);
  if (known?.jobId === job.jobId) return null;
  const attempts = (known?.attempts ?? 0) + 1;
  const entry: RebuildFailing = { poolId: job.poolId, pgIndex: job.pgIndex, sourceSdsId: sdsId, targetSdsId: job.targetSdsId, failure, attempts, jobId: job.jobId, failedAtMs: nowMs, retryAtMs: nowMs + rebuildRetryDelayMs(attempts) };
  observations.rebuildFailures.set(key, entry);
  return entry;
}

/** The failure a job's stats entry carries, read only when well-formed (it comes from another process). */
function failureOf(job: RebuildProgress): RebuildFailure | null {
  const failure = (job as { failure?: unknown }).failure;
  if (failure === null || typeof failure !== 'object') return null;
  const { chunk, side, code, deviceId, message, chunksFailed } = failure as Record<string, unknown>;
  if (typeof chunk !== 'string' || typeof code !== 'string' || typeof message !== 'string') return null;
  if (side !== 'source' && side !== 'target') return null;
  return { chunk, side, code, deviceId: typeof deviceId === 'string' ? deviceId : null, message, chunksFailed: Number.isSafeInteger(chunksFailed) ? (chunksFailed as number) : 1 };
}

/** A repairPool command finished (applied or refused): the pool may be repaired again later. */
export function noteRepairDone(observations: HealthObservations, poolId: Id): void {
  observations.repairing.delete(poolId);
}

/** An order the SDS refused or never answered: given again at the next tick. */
export function noteOrderFailed(observations: HealthObservations, key: string): void {
  observations.ordersGiven.delete(key);
}

/** After a restart (or a takeover) every SDS gets downAfterMs + mdmRestartGraceMs to call. */
export function noteRestart(observations: HealthObservations, machine: ModelView, nowMs: number, options: HealthOptions): void {
  for (const sds of Object.values(machine.model.sdss)) observations.disconnectedSinceMs.set(sds.id, nowMs + options.sdsDownAfterMs + mdmRestartGraceMs);
}

export function noteSdsConnected(observations: HealthObservations, sdsId: Id): void {
  observations.disconnectedSinceMs.delete(sdsId);
}

export function noteSdsDisconnected(observations: HealthObservations, sdsId: Id, nowMs: number): void {
  observations.disconnectedSinceMs.set(sdsId, nowMs);
}

/**
 * An SDS finished a fill order: its target's copy is in sync once the MDM records it. The
 * entry to batch, or null when the report proves nothing: the group is not filling (any
 * more), the order is from before this fill began, the same group already waits in the
 * batch, or the source and target are not the group's copies now.
 */
export function acceptRebuildDone(machine: ModelView, sdsId: Id, done: RebuildDone, pending: readonly SyncedEntry[]): SyncedEntry | null {
  const model = machine.model;
  const pool = model.storagePools[done.poolId];
  const group = pool?.groups[done.pgIndex];
  if (pool === undefined || group === undefined || group.syncing !== true || group.secondaryDevice === null) return null;
  if (done.epoch < (group.syncEpoch ?? 0) || pending.some((entry) => entry.pgIndex === done.pgIndex)) return null;
  if (model.devices[group.primaryDevice]?.sdsId !== sdsId || model.devices[group.secondaryDevice]?.sdsId !== done.targetSdsId) return null;
  return { pgIndex: done.pgIndex, secondaryDevice: group.secondaryDevice, orderEpoch: done.epoch };
}

/** Accepts a report into the batch; true when it was accepted (the caller starts the batch timer). */
export function noteRebuildDone(observations: HealthObservations, machine: ModelView, sdsId: Id, done: RebuildDone): boolean {
  const pending = observations.syncedPending.get(done.poolId) ?? [];
  const entry = acceptRebuildDone(machine, sdsId, done, pending);
  if (entry === null) return false;
  pending.push(entry);
  observations.syncedPending.set(done.poolId, pending);
  return true;
}

/** The batch, one copiesSynced command per pool; the batch is emptied. */
export function takeSyncedBatch(observations: HealthObservations): Array<Extract<Command, { type: 'copiesSynced' }>> {
  const commands: Array<Extract<Command, { type: 'copiesSynced' }>> = [];
  for (const [poolId, groups] of observations.syncedPending) commands.push({ type: 'copiesSynced', poolId, groups });
  observations.syncedPending.clear();
  return commands;
}

export interface HeartbeatDecisions {
  observation: Observation;
  /** Jobs the stats list as done: reports again (one may have been lost with a connection). */
  reports: RebuildDone[];
  /** Orders whose jobs failed at this epoch: given again at the next tick. */
  failedOrders: string[];
  /** Devices the SDS reports failed that the model does not know as failed yet. */
  commands: Array<Extract<Command, { type: 'deviceFailed' }>>;
}

/** What an SDS's heartbeat (its stats) means; null for an SDS the model does not know. */
export function decideOnHeartbeat(machine: ModelView, sdsId: Id, stats: SdsStats, nowMs: number): HeartbeatDecisions | null {
  const model = machine.model;
  if (model.sdss[sdsId] === undefined) return null;
  const devices = (stats.devices ?? []).map((reported) => {
    // Snapshot bytes come from SDSs that count them (docs/snapshots.md, "Space"); read only when well-formed.
    const snapshotBytes = (reported as { snapshotBytes?: unknown }).snapshotBytes;
    return { deviceId: reported.deviceId, usedBytes: reported.usedBytes, ...(Number.isSafeInteger(snapshotBytes) && (snapshotBytes as number) >= 0 ? { snapshotBytes: snapshotBytes as number } : {}) };
  });
  const decisions: HeartbeatDecisions = { observation: { type: 'sdsHeartbeat', sdsId, nowMs, devices }, reports: [], failedOrders: [], commands: [] };
  for (const job of stats.rebuilds ?? []) {
    if (job.state === 'done') decisions.reports.push(job);
    else if (job.state === 'failed' && job.epoch === model.epoch) decisions.failedOrders.push(orderKey(job.poolId, job.pgIndex, job.targetSdsId));
  }
  for (const reported of stats.devices ?? []) {
    const device = model.devices[reported.deviceId];
    if (device === undefined || device.sdsId !== sdsId) continue;
    // One disk of the SDS failed: only that device's copies are rebuilt.
    if (reported.state === 'failed' && device.state !== 'failed') decisions.commands.push({ type: 'deviceFailed', deviceId: device.id, reason: reported.error ?? 'failed' });
  }
  return decisions;
}

// --- rebuild and rebalance IO priority (docs/rebuild-policy.md) ------------------------------

/** The throttle fields of a fill order (RebuildArgs), as the source SDS applies them. */
export type FillThrottle = Pick<RebuildArgs, 'bytesPerSecondMax' | 'bytesPerSecondUnderLoad' | 'chunksInflightMax' | 'policy' | 'kind'>;

/** Which of its pool's policies throttles a group's fill. */
export function fillKindOf(group: PoolGroup): FillKind {
  return group.rebalance === true ? 'rebalance' : 'rebuild';
}

/** A pool never given a policy: the MDM's start options, one budget for the whole source SDS. */
function defaultThrottle(options: HealthOptions): FillThrottle {
  return {
    bytesPerSecondMax: options.rebuildBytesPerSecondMax,
    bytesPerSecondUnderLoad: options.rebuildBytesPerSecondUnderLoad,
    chunksInflightMax: options.rebuildChunksInflightMax,
  };
}

/**
 * The throttle a fill of `group` gets on its source SDS. A policy's numbers are per device,
 * so they are multiplied by the source SDS's devices in the pool (ScaleIO's rule: an SDS
 * with more disks can copy more at once). The SDS caps chunk copies in flight at
 * sdsRebuildChunksInflightMax whatever it is told; `unlimited` asks for exactly that.
 */
export function fillThrottle(machine: ModelView, pool: StoragePool, group: PoolGroup, sourceSdsId: Id, options: HealthOptions): FillThrottle {
  const kind = fillKindOf(group);
  const policy = kind === 'rebuild' ? pool.rebuildIoPriority : pool.rebalanceIoPriority;
  if (policy === undefined) return defaultThrottle(options);
  const devices = Math.max(1, machine.sdsDevices(sourceSdsId).filter((device) => device.storagePoolId === pool.id && device.state !== 'failed').length);
  const inflight = Math.min(sdsRebuildChunksInflightMax, policy.concurrentIosPerDevice * devices);
  const bytesPerSecond = policy.bandwidthPerDeviceKbps * 1024 * devices;
  switch (policy.policy) {
    case 'unlimited':
      return { bytesPerSecondMax: 0, bytesPerSecondUnderLoad: 0, chunksInflightMax: sdsRebuildChunksInflightMax, policy: policy.policy, kind };
    case 'limitNumOfConcurrentIos':
      return { bytesPerSecondMax: 0, bytesPerSecondUnderLoad: 0, chunksInflightMax: inflight, policy: policy.policy, kind };
    case 'limitBandwidth':
      return { bytesPerSecondMax: bytesPerSecond, bytesPerSecondUnderLoad: 0, chunksInflightMax: inflight, policy: policy.policy, kind };
    case 'favorAppIos':
      // No cap on a quiet SDS; the bandwidth only while clients do IO there (sdsClientQuietMs).
      return { bytesPerSecondMax: 0, bytesPerSecondUnderLoad: bytesPerSecond, chunksInflightMax: inflight, policy: policy.policy, kind };
  }
}

/** The start options a pool never set shows (ioPriorityShown). */
export type FillDefaults = Pick<HealthOptions, 'rebuildBytesPerSecondUnderLoad' | 'rebuildChunksInflightMax'>;

/** A throttle as a string, to tell whether an order given still carries the numbers of today. */
export function throttleKey(throttle: FillThrottle): string {
  return `${throttle.policy ?? 'options'}/${throttle.kind ?? ''}/${throttle.bytesPerSecondMax}/${throttle.bytesPerSecondUnderLoad ?? 0}/${throttle.chunksInflightMax}`;
}

/**
 * A pool's policy as the REST API and the CLI show it. A pool never set shows the MDM's
 * start options in ScaleIO's terms: favorAppIos, --rebuild-inflight copies and
 * --rebuild-rate-under-load while clients are busy (rounded down to whole MiB/s, at least
 * 1) — with two differences the docs spell out: those numbers are per source SDS, not per
 * device, and --rebuild-rate caps a quiet SDS too.
 */
export function ioPriorityShown(pool: StoragePool, kind: FillKind, options: FillDefaults = healthOptions({})): IoPriorityPolicy & { isDefault: boolean } {
  const policy = kind === 'rebuild' ? pool.rebuildIoPriority : pool.rebalanceIoPriority;
  if (policy !== undefined) return { ...policy, isDefault: false };
  return {
    policy: 'favorAppIos',
    concurrentIosPerDevice: options.rebuildChunksInflightMax,
    bandwidthPerDeviceKbps: Math.max(1024, Math.floor(options.rebuildBytesPerSecondUnderLoad / (1024 * 1024)) * 1024),
    isDefault: true,
  };
}
