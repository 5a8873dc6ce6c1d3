// Proves the MDM's handling of a fill job that failed on a chunk (src/mdm/health.ts), as pure
// decisions over a real state machine: the failure the source SDS's stats carry is counted
// once per job (heartbeats repeat it), the group is ordered again only after a backoff that
// doubles per failure up to rebuildRetryDelayMsMax, the group stays syncing (only a finished
// job ends its fill), a failed job without a chunk failure (a map change) is still ordered
// again at once, reports from an SDS that is not the group's primary or from another epoch
// are ignored, and the failure is forgotten once the group is in sync. The end-to-end case
// with real processes is test/integration/rebuild-stall.test.ts.

import t from 'tap';
import { rebuildRetryDelayMsMax, rebuildRetryDelayMsMin } from '../../src/common/limits.js';
import { GiB } from '../../src/common/units.js';
import { decideOnHeartbeat, decideRebuilds, emptyObservations, healthOptions, noteDecisions, noteOrderFailed, noteRebuildFailed, rebuildRetryDelayMs, type HealthInput, type HealthObservations } from '../../src/mdm/health.js';
import type { Id, PoolGroup } from '../../src/mdm/model.js';
import { StateMachine } from '../../src/mdm/state-machine.js';
import type { RebuildFailure } from '../../src/wire/mdm-ops.js';
import type { RebuildProgress, SdsStats } from '../../src/wire/sds-ops.js';

const clusterId = '0123456789abcdef';
const sdsId = (index: number): Id => (0x5d5000000000 + index).toString(16).padStart(16, '0');
const deviceId = (index: number): Id => (0xde7000000000 + index).toString(16).padStart(16, '0');
const options = healthOptions({});
const t0 = 1_000_000;
const allSds = [sdsId(0), sdsId(1), sdsId(2)];

/** Four SDSs, one out: its groups fill onto the other three. */
function filling(): { machine: StateMachine; pool: Id } {
  const machine = StateMachine.create(clusterId, 'test');
  const pd = machine.apply({ type: 'addProtectionDomain', name: 'pd1' }).id as Id;
  const pool = machine.apply({ type: 'addStoragePool', protectionDomainId: pd, name: 'sp1', volumeGranularityBytes: GiB, pgCount: 64 }).id as Id;
  for (let index = 0; index < 4; index++) {
    machine.apply({ type: 'registerSds', sdsId: sdsId(index), name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, nowMs: t0 });
    machine.apply({ type: 'addSds', sdsId: sdsId(index), protectionDomainId: pd, faultSetId: null });
    machine.apply({ type: 'addDevice', deviceId: deviceId(index), sdsId: sdsId(index), storagePoolId: pool, path: '/dev/sdb', name: null, capacityBytes: 100 * GiB });
  }
  machine.apply({ type: 'addVolume', storagePoolId: pool, name: 'vol1', sizeBytes: 16 * GiB, volumeType: 'ThinProvisioned', nowMs: t0 });
  machine.apply({ type: 'sdsDown', sdsId: sdsId(3), nowMs: t0, reason: 'test' });
  machine.apply({ type: 'sdsOut', sdsId: sdsId(3) });
  return { machine, pool };
}

function input(machine: StateMachine, nowMs: number, observations: HealthObservations): HealthInput {
  return { machine, nowMs, connected: new Set(allSds), observations, options };
}

/** A pool filling a group, and the MDM's first order for it. */
function firstOrder() {
  const { machine, pool } = filling();
  const observations = emptyObservations();
  const first = decideRebuilds(input(machine, t0, observations));
  noteDecisions(observations, first, t0);
  const order = first.orders[0];
  if (order === undefined) throw new Error('no order');
  return { machine, pool, observations, first, order };
}

const failure: RebuildFailure = { chunk: 'c:1:0', side: 'source', code: 'MB_ERR_CHECKSUM', deviceId: deviceId(0), message: 'bad block', chunksFailed: 1 };

t.test('a job failed on a chunk: counted once per job, ordered again after a doubling backoff, the group still syncing', async (t) => {
  const { machine, pool, observations, first, order } = firstOrder();
  const syncing = first.syncingGroups;
  const job = (jobId: string, nowEpoch = machine.model.epoch): RebuildProgress & { failure: RebuildFailure } => ({
    jobId,
    poolId: pool,
    pgIndex: order.args.pgIndex,
    targetSdsId: order.args.targetSdsId,
    state: 'failed',
    mode: 'full',
    epoch: nowEpoch,
    chunksDone: 3,
    chunksTotal: 4,
    bytesDone: 0,
    error: 'x',
    failure,
  });
  /** What the service does with a heartbeat listing `listed`. */
  const heartbeat = (listed: RebuildProgress, nowMs: number): ReturnType<typeof noteRebuildFailed> => {
    const stats: SdsStats = { sdsId: order.sourceSdsId, name: 'x', epoch: machine.model.epoch, chunkBytes: 1 << 20, devices: [], reservedBytes: 0, rebuilds: [listed] };
    for (const key of decideOnHeartbeat(machine, order.sourceSdsId, stats, nowMs)?.failedOrders ?? []) noteOrderFailed(observations, key);
    return noteRebuildFailed(observations, machine, order.sourceSdsId, listed, nowMs);
  };
  const ordered = (nowMs: number): boolean => {
    const decided = decideRebuilds(input(machine, nowMs, observations));
    noteDecisions(observations, decided, nowMs);
    return decided.orders.some((entry) => entry.key === order.key);
  };

  const counted = heartbeat(job('1.1'), t0 + 100);
  t.match(counted, { attempts: 1, failure, sourceSdsId: order.sourceSdsId, targetSdsId: order.args.targetSdsId, retryAtMs: t0 + 100 + rebuildRetryDelayMsMin }, 'the first failure is counted, with its chunk and cause');
  t.equal(heartbeat(job('1.1'), t0 + 200), null, 'the same job in the next heartbeat is not counted again');
  t.notOk(ordered(t0 + 100 + rebuildRetryDelayMsMin - 1), 'not ordered again within the backoff');
  t.equal(decideRebuilds(input(machine, t0 + 500, observations)).syncingGroups, syncing, 'the group still counts as syncing');
  t.ok(ordered(t0 + 100 + rebuildRetryDelayMsMin), 'ordered again once the backoff is over');
  t.match(heartbeat(job('1.2'), t0 + 2000), { attempts: 2, retryAtMs: t0 + 2000 + 2 * rebuildRetryDelayMsMin }, 'the next failure doubles the backoff');
  t.notOk(ordered(t0 + 2000 + 2 * rebuildRetryDelayMsMin - 1), 'not ordered within it');
  t.ok(ordered(t0 + 2000 + 2 * rebuildRetryDelayMsMin), 'ordered after it');
  t.equal(rebuildRetryDelayMs(1000), rebuildRetryDelayMsMax, 'the backoff is bounded');

  t.equal(noteRebuildFailed(observations, machine, sdsId(3), job('9.1'), t0 + 3000), null, 'a report from an SDS that is not the primary is ignored');
  t.equal(noteRebuildFailed(observations, machine, order.sourceSdsId, job('9.2', machine.model.epoch - 1), t0 + 3000), null, 'and one from another epoch');
  const plain = { ...job('9.3') } as RebuildProgress & { failure?: RebuildFailure };
  delete plain.failure;
  t.equal(noteRebuildFailed(observations, machine, order.sourceSdsId, plain, t0 + 3000), null, 'a failed job without a chunk failure is no chunk failure');

  // In sync: the failure has nothing more to say.
  machine.apply({ type: 'copiesSynced', poolId: pool, groups: [{ pgIndex: order.args.pgIndex, secondaryDevice: (machine.model.storagePools[pool]?.groups[order.args.pgIndex] as PoolGroup).secondaryDevice as Id, orderEpoch: machine.model.epoch }] });
  noteDecisions(observations, decideRebuilds(input(machine, t0 + 4000, observations)), t0 + 4000);
  t.equal(observations.rebuildFailures.size, 0, 'forgotten once the group is in sync');
});

t.test('a failed job without a chunk failure (a map change, a shutdown) is ordered again at once, as before', async (t) => {
  const { machine, pool, observations, order } = firstOrder();
  const listed: RebuildProgress = { jobId: '1.1', poolId: pool, pgIndex: order.args.pgIndex, targetSdsId: order.args.targetSdsId, state: 'failed', mode: 'full', epoch: machine.model.epoch, chunksDone: 0, chunksTotal: 1, bytesDone: 0, error: 'SDS is shutting down' };
  const stats: SdsStats = { sdsId: order.sourceSdsId, name: 'x', epoch: machine.model.epoch, chunkBytes: 1 << 20, devices: [], reservedBytes: 0, rebuilds: [listed] };
  for (const key of decideOnHeartbeat(machine, order.sourceSdsId, stats, t0 + 100)?.failedOrders ?? []) noteOrderFailed(observations, key);
  t.equal(noteRebuildFailed(observations, machine, order.sourceSdsId, listed, t0 + 100), null, 'not counted as a chunk failure');
  t.ok(decideRebuilds(input(machine, t0 + 100, observations)).orders.some((entry) => entry.key === order.key), 'ordered again at once');
});
