// Proves the MDM's health decisions (src/mdm/health.ts) keep the timings the MDM has always
// had, at the millisecond on each side of every deadline: an SDS disconnected is down after
// the 1 s grace, a connected one silent after sdsDownAfterMs, after a restart only once the
// restart grace is over, and out after rebuildAfterMs; an SDC is disconnected past 5 missed
// heartbeats; a fill order is given once per epoch and again after 30 s, or at once when
// its job failed; a pool is repaired at most every 30 s. And that the decisions are pure:
// deciding changes neither the model nor the observations, and the same input gives the same
// output. The seeded simulation (simulation.test.ts) drives the same functions at random.

import t from 'tap';
import {
  acceptRebuildDone,
  decideFailures,
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
  noteSdsDisconnected,
  takeSyncedBatch,
  type HealthInput,
  type HealthObservations,
} from '../../src/mdm/health.js';
import type { Id, PoolGroup } from '../../src/mdm/model.js';
import { StateMachine } from '../../src/mdm/state-machine.js';
import type { SdsStats } from '../../src/wire/sds-ops.js';
import { healthCluster, healthSdsId, healthT0 } from '../helpers/mdm-model.js';

const clusterId = '0123456789abcdef';
const sdsId = healthSdsId;
const options = healthOptions({});
const t0 = healthT0;
const cluster = (sdsCount: number): { machine: StateMachine; pool: Id } => healthCluster(clusterId, sdsCount);

function input(machine: StateMachine, nowMs: number, observations: HealthObservations, connected: Id[]): HealthInput {
  return { machine, nowMs, connected: new Set(connected), observations, options };
}

const allSds = (count: number): Id[] => Array.from({ length: count }, (_, index) => sdsId(index));

t.test('an SDS disconnected is declared down after the grace, fenced first', async (t) => {
  const { machine } = cluster(3);
  const observations = emptyObservations();
  noteSdsDisconnected(observations, sdsId(1), t0);
  const connected = [sdsId(0), sdsId(2)];
  t.same(decideFailures(input(machine, t0 + 999, observations, connected)).commands, [], '999 ms after: nothing');
  const decisions = decideFailures(input(machine, t0 + 1000, observations, connected));
  t.same(decisions.fence, [sdsId(1)], '1000 ms after: fenced');
  t.same(decisions.commands, [{ type: 'sdsDown', sdsId: sdsId(1), nowMs: t0 + 1000, reason: 'disconnected for 1000 ms' }], '... and declared down');
});

t.test('a connected SDS silent past sdsDownAfterMs is declared down; one holding nothing is only shown disconnected', async (t) => {
  const { machine } = cluster(3);
  machine.apply({ type: 'registerSds', sdsId: sdsId(5), name: 'empty', address: '127.0.0.1:7005', nowMs: t0 });
  const observations = emptyObservations();
  for (const index of [0, 1, 2]) machine.observe({ type: 'sdsHeartbeat', sdsId: sdsId(index), nowMs: t0 + 1000, devices: [] });
  machine.observe({ type: 'sdsHeartbeat', sdsId: sdsId(5), nowMs: t0, devices: [] });
  const connected = [...allSds(3), sdsId(5)];
  const early = decideFailures(input(machine, t0 + 1000 + options.sdsDownAfterMs - 1, observations, connected));
  t.same(early.commands, [], 'a millisecond before the deadline: nothing');
  t.same(early.observations, [{ type: 'sdsDisconnected', sdsId: sdsId(5) }], 'the SDS with no device is past its deadline: shown disconnected, not down');
  const late = decideFailures(input(machine, t0 + 1000 + options.sdsDownAfterMs, observations, connected));
  t.same(late.commands.map((command) => command.type), ['sdsDown', 'sdsDown', 'sdsDown'], 'at the deadline every silent SDS with devices is down');
  t.same(late.fence, allSds(3));
  t.match(late.commands[0], { reason: `no heartbeat for ${options.sdsDownAfterMs} ms` });
  machine.observe({ type: 'sdsDisconnected', sdsId: sdsId(5) });
  t.equal(machine.model.sdss[sdsId(5)]?.state, 'disconnected', 'the observation shows it disconnected');
  t.same(decideFailures(input(machine, t0 + 10_000, observations, connected)).observations, [], 'and it is not observed again');
});

t.test('after a restart, SDSs get the restart grace before they are declared down', async (t) => {
  const { machine } = cluster(3);
  machine.observe({ type: 'connectionsLost' });
  const observations = emptyObservations();
  noteRestart(observations, machine, t0, options);
  const deadline = t0 + options.sdsDownAfterMs + 10_000 + 1000;
  t.same(decideFailures(input(machine, deadline - 1, observations, [])).commands, [], 'just before: nothing');
  t.equal(decideFailures(input(machine, deadline, observations, [])).commands.length, 3, 'at the deadline: all three down');
});

t.test('a down SDS is declared out after rebuildAfterMs', async (t) => {
  const { machine } = cluster(3);
  machine.apply({ type: 'sdsDown', sdsId: sdsId(1), nowMs: t0, reason: 'test' });
  const observations = emptyObservations();
  // The others are not connected either (but not disconnected since any time): only sds1 is judged.
  const connected: Id[] = [];
  t.same(decideFailures(input(machine, t0 + options.rebuildAfterMs - 1, observations, connected)).commands, [], 'just before: still only down');
  t.same(decideFailures(input(machine, t0 + options.rebuildAfterMs, observations, connected)).commands, [{ type: 'sdsOut', sdsId: sdsId(1) }], 'then out');
});

t.test('an SDC is disconnected past five missed heartbeats', async (t) => {
  const { machine } = cluster(2);
  const sdc = machine.apply({ type: 'registerSdc', guid: 'guid-0000-1111', name: 'sdc1', nowMs: t0 }).id as Id;
  const observations = emptyObservations();
  t.same(decideFailures(input(machine, t0 + 5000, observations, allSds(2))).observations, [], 'at 5000 ms: still connected');
  t.same(decideFailures(input(machine, t0 + 5001, observations, allSds(2))).observations, [{ type: 'sdcDisconnected', sdcId: sdc }], 'past it: disconnected');
});

t.test('fill orders: once per epoch, again after 30 s or when the job failed; none to a fenced or unconnected SDS', async (t) => {
  const { machine, pool } = cluster(4);
  machine.apply({ type: 'sdsDown', sdsId: sdsId(3), nowMs: t0, reason: 'test' });
  machine.apply({ type: 'sdsOut', sdsId: sdsId(3) });
  const groups = machine.model.storagePools[pool]?.groups as PoolGroup[];
  const syncing = groups.filter((group) => group.syncing === true).length;
  t.ok(syncing > 0, `${syncing} groups filling`);
  const observations = emptyObservations();
  const first = decideRebuilds(input(machine, t0, observations, allSds(3)));
  t.equal(first.orders.length, syncing, 'every filling group is ordered');
  t.equal(first.syncingGroups, syncing);
  t.ok(first.orders.every((order) => order.args.epoch === machine.model.epoch && order.args.mode === 'full'), 'at this epoch, in full');
  noteDecisions(observations, first, t0);
  t.same(decideRebuilds(input(machine, t0 + 29_999, observations, allSds(3))).orders, [], 'not again within 30 s');
  t.equal(decideRebuilds(input(machine, t0 + 30_000, observations, allSds(3))).orders.length, syncing, 'again after 30 s');

  const order = first.orders[0];
  if (order === undefined) throw new Error('no order');
  const stats: SdsStats = { sdsId: order.sourceSdsId, name: 'x', epoch: machine.model.epoch, chunkBytes: 1 << 20, devices: [], reservedBytes: 0, rebuilds: [{ jobId: '1.1', poolId: pool, pgIndex: order.args.pgIndex, targetSdsId: order.args.targetSdsId, state: 'failed', mode: 'full', epoch: machine.model.epoch, chunksDone: 0, chunksTotal: 1, bytesDone: 0, error: 'x' }] };
  const beat = decideOnHeartbeat(machine, order.sourceSdsId, stats, t0 + 1000);
  t.same(beat?.failedOrders, [order.key], 'a job failed at this epoch is named');
  for (const key of beat?.failedOrders ?? []) noteOrderFailed(observations, key);
  t.same(decideRebuilds(input(machine, t0 + 1000, observations, allSds(3))).orders.map((entry) => entry.key), [order.key], 'and ordered again at once');

  const withoutSource = allSds(3).filter((id) => id !== order.sourceSdsId);
  t.notOk(decideRebuilds(input(machine, t0 + 40_000, observations, withoutSource)).orders.some((entry) => entry.sourceSdsId === order.sourceSdsId), 'no order to an SDS not connected');
});

t.test('a health tick gives no order to the SDS it fences', async (t) => {
  const { machine } = cluster(4);
  machine.apply({ type: 'sdsDown', sdsId: sdsId(3), nowMs: t0, reason: 'test' });
  machine.apply({ type: 'sdsOut', sdsId: sdsId(3) });
  const observations = emptyObservations();
  noteSdsDisconnected(observations, sdsId(0), t0);
  const decisions = decideHealth(input(machine, t0 + 1000, observations, allSds(3)));
  t.same(decisions.fence, [sdsId(0)], 'sds0 is fenced');
  t.ok(decisions.orders.length > 0, 'others are ordered');
  t.notOk(decisions.orders.some((order) => order.sourceSdsId === sdsId(0)), 'sds0 is not');
});

t.test('a pool with orphaned groups is repaired, at most every 30 s', async (t) => {
  const { machine, pool } = cluster(3);
  const groups = machine.model.storagePools[pool]?.groups as PoolGroup[];
  // An orphan, as a journal from before absentFull could leave (set directly, as the state-machine test does).
  (groups[5] as PoolGroup).secondaryDevice = null;
  const observations = emptyObservations();
  const first = decideRebuilds(input(machine, t0, observations, allSds(3)));
  t.same(first.commands, [{ type: 'repairPool', poolId: pool }], 'the pool is repaired');
  noteDecisions(observations, first, t0);
  t.same(decideRebuilds(input(machine, t0 + 60_000, observations, allSds(3))).commands, [], 'not while the repair is in flight');
  noteRepairDone(observations, pool);
  t.same(decideRebuilds(input(machine, t0 + 29_999, observations, allSds(3))).commands, [], 'nor within 30 s of it');
  t.equal(decideRebuilds(input(machine, t0 + 30_000, observations, allSds(3))).commands.length, 1, 'then again');
});

t.test('rebuild reports: accepted only from the primary to the secondary, at or after the fill began, once per batch', async (t) => {
  const { machine, pool } = cluster(4);
  machine.apply({ type: 'sdsDown', sdsId: sdsId(3), nowMs: t0, reason: 'test' });
  machine.apply({ type: 'sdsOut', sdsId: sdsId(3) });
  const groups = machine.model.storagePools[pool]?.groups as PoolGroup[];
  const pgIndex = groups.findIndex((group) => group.syncing === true);
  const group = groups[pgIndex] as PoolGroup;
  const source = machine.model.devices[group.primaryDevice]?.sdsId as Id;
  const target = machine.model.devices[group.secondaryDevice as Id]?.sdsId as Id;
  const other = allSds(3).find((id) => id !== source && id !== target) as Id;
  const done = { poolId: pool, pgIndex, targetSdsId: target, epoch: group.syncEpoch ?? 0, mode: 'full' as const, chunksDone: 1, bytesDone: 1 };
  t.equal(acceptRebuildDone(machine, source, { ...done, epoch: (group.syncEpoch ?? 0) - 1 }, []), null, 'an order from before the fill began: refused');
  t.equal(acceptRebuildDone(machine, other, done, []), null, 'from an SDS that is not the primary: refused');
  t.equal(acceptRebuildDone(machine, source, { ...done, targetSdsId: other }, []), null, 'to another target: refused');
  const observations = emptyObservations();
  t.ok(noteRebuildDone(observations, machine, source, done), 'the right report is accepted');
  t.notOk(noteRebuildDone(observations, machine, source, done), 'its duplicate is not');
  t.same(takeSyncedBatch(observations), [{ type: 'copiesSynced', poolId: pool, groups: [{ pgIndex, secondaryDevice: group.secondaryDevice, orderEpoch: group.syncEpoch }] }], 'one batch for the pool');
  t.same(takeSyncedBatch(observations), [], 'and the batch is emptied');
});

t.test('deciding is pure: nothing changes, the same input decides the same', async (t) => {
  const { machine } = cluster(4);
  machine.apply({ type: 'sdsDown', sdsId: sdsId(3), nowMs: t0, reason: 'test' });
  machine.apply({ type: 'sdsOut', sdsId: sdsId(3) });
  const observations = emptyObservations();
  noteSdsDisconnected(observations, sdsId(1), t0);
  for (const index of [0, 2]) machine.observe({ type: 'sdsHeartbeat', sdsId: sdsId(index), nowMs: t0 + 4000, devices: [] });
  const modelBefore = JSON.stringify(machine.model);
  const observationsBefore = JSON.stringify([...observations.disconnectedSinceMs, ...observations.ordersGiven]);
  const first = decideHealth(input(machine, t0 + 5000, observations, allSds(3)));
  const second = decideHealth(input(machine, t0 + 5000, observations, allSds(3)));
  t.ok(first.commands.length > 0 && first.orders.length > 0, 'it decided something');
  t.same(second, first, 'the same decisions');
  t.equal(JSON.stringify(machine.model), modelBefore, 'the model is unchanged');
  t.equal(JSON.stringify([...observations.disconnectedSinceMs, ...observations.ordersGiven]), observationsBefore, 'the observations are unchanged');
});
