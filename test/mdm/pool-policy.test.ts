// Proves the pools' rebuild and rebalance IO priority policies in the MDM's core
// (docs/rebuild-policy.md), with the real state machine and health decisions:
// - setIoPriorityPolicy checks every field by name and range, and a refusal changes nothing;
//   a number left out keeps the pool's, or ScaleIO's default on a pool never set;
// - a fill is a rebuild (a copy the group was short of: an SDS out, a device failed) or a
//   rebalance (a healthy copy moving: a device added or removed), and its order carries the
//   numbers of that kind's policy, multiplied by the source SDS's devices in the pool;
// - a pool never set orders with the MDM's start options, exactly as before policies;
// - a policy changed while fills run gives their orders again at the next tick (live), and
//   nothing more when nothing changed;
// - state written before policies (a model snapshot without the fields, as the journal's
//   compacted snapshot and etcd hold it, and groups filling without `rebalance`) loads, and
//   replaying the commands gives the same model.

import t from 'tap';
import { recordingMachine, type RecordingMachine } from '../helpers/mdm-model.js';
import { GiB } from '../../src/common/units.js';
import { decideRebuilds, emptyObservations, fillKindOf, healthOptions, ioPriorityShown, noteDecisions, type HealthInput, type HealthObservations } from '../../src/mdm/health.js';
import { durableJson, type Id, type PoolGroup, type StoragePool, type SystemModel } from '../../src/mdm/model.js';
import { StateMachine, type Command } from '../../src/mdm/state-machine.js';
import { rebuildOrderRepeatMs, sdsRebuildChunksInflightMax } from '../../src/common/limits.js';

const clusterId = '0123456789abcdef';
const sdsId = (index: number): Id => (0x5d5000000000 + index).toString(16).padStart(16, '0');
const deviceId = (index: number): Id => (0xde7000000000 + index).toString(16).padStart(16, '0');
const options = healthOptions({ rebuildBytesPerSecondMax: 40 * 1024 * 1024, rebuildBytesPerSecondUnderLoad: 8 * 1024 * 1024, rebuildChunksInflightMax: 3 });
const t0 = 1_000_000;
const MiB = 1024 * 1024;

/** `sdsCount` SDSs with `devicesPerSds` devices each in one pool holding a volume; every command applied is kept, for replay. */
function cluster(sdsCount: number, devicesPerSds = 1): RecordingMachine & { pool: Id } {
  const { machine, commands, run } = recordingMachine(clusterId);
  const pd = run({ type: 'addProtectionDomain', name: 'pd1' }).id as Id;
  const pool = run({ type: 'addStoragePool', protectionDomainId: pd, name: 'sp1', volumeGranularityBytes: GiB, pgCount: 64 }).id as Id;
  for (let index = 0; index < sdsCount; index++) {
    run({ type: 'registerSds', sdsId: sdsId(index), name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, nowMs: t0 });
    run({ type: 'addSds', sdsId: sdsId(index), protectionDomainId: pd, faultSetId: null });
    for (let disk = 0; disk < devicesPerSds; disk++) {
      run({ type: 'addDevice', deviceId: deviceId(index * 10 + disk), sdsId: sdsId(index), storagePoolId: pool, path: `/dev/sd${'bcdefgh'[disk]}`, name: null, capacityBytes: 100 * GiB });
    }
  }
  run({ type: 'addVolume', storagePoolId: pool, name: 'vol1', sizeBytes: 16 * GiB, volumeType: 'ThinProvisioned', nowMs: t0 });
  return { machine, pool, commands, run };
}

function input(machine: StateMachine, nowMs: number, observations: HealthObservations, connected: Id[]): HealthInput {
  return { machine, nowMs, connected: new Set(connected), observations, options };
}

const allSds = (count: number): Id[] => Array.from({ length: count }, (_, index) => sdsId(index));
const poolOf = (machine: StateMachine, pool: Id): StoragePool => machine.model.storagePools[pool] as StoragePool;
const syncingGroups = (machine: StateMachine, pool: Id): PoolGroup[] => poolOf(machine, pool).groups.filter((group) => group.syncing === true);

t.test('setIoPriorityPolicy: fields checked by name and range; a refusal changes nothing', async (t) => {
  const { machine, pool } = cluster(3);
  const before = durableJson(machine.model);
  const refusals: Array<[Partial<Extract<Command, { type: 'setIoPriorityPolicy' }>>, string]> = [
    [{ policy: 'fast' as 'unlimited' }, 'policy'],
    [{ kind: 'resync' as 'rebuild' }, 'kind'],
    [{ concurrentIosPerDevice: 0 }, 'concurrentIosPerDevice'],
    [{ concurrentIosPerDevice: 21 }, 'concurrentIosPerDevice'],
    [{ concurrentIosPerDevice: 1.5 }, 'concurrentIosPerDevice'],
    [{ bandwidthPerDeviceKbps: 1000 }, 'bandwidthPerDeviceKbps'],
    [{ bandwidthPerDeviceKbps: 0 }, 'bandwidthPerDeviceKbps'],
    [{ bandwidthPerDeviceKbps: 1536 }, 'bandwidthPerDeviceKbps'],
    [{ bandwidthPerDeviceKbps: 200 * 1024 * 1024 }, 'bandwidthPerDeviceKbps'],
  ];
  for (const [change, field] of refusals) {
    const command = { type: 'setIoPriorityPolicy', poolId: pool, kind: 'rebuild', policy: 'limitBandwidth', ...change } as Command;
    t.throws(() => machine.apply(command), { code: 'MB_ERR_INVALID_ARGUMENT', message: new RegExp(`^${field}: `) }, `${JSON.stringify(change)} is refused, naming ${field}`);
  }
  t.throws(() => machine.apply({ type: 'setIoPriorityPolicy', poolId: 'ffffffffffffffff', kind: 'rebuild', policy: 'unlimited' }), { code: 'MB_ERR_NOT_FOUND' }, 'an unknown pool is not found');
  t.equal(durableJson(machine.model), before, 'nothing changed');

  machine.apply({ type: 'setIoPriorityPolicy', poolId: pool, kind: 'rebuild', policy: 'limitBandwidth', bandwidthPerDeviceKbps: 20 * 1024 });
  t.same(poolOf(machine, pool).rebuildIoPriority, { policy: 'limitBandwidth', concurrentIosPerDevice: 1, bandwidthPerDeviceKbps: 20 * 1024 }, 'set; the count left out is ScaleIO’s default, 1');
  t.equal(poolOf(machine, pool).rebalanceIoPriority, undefined, 'the rebalance policy is its own');
  machine.apply({ type: 'setIoPriorityPolicy', poolId: pool, kind: 'rebuild', policy: 'limitNumOfConcurrentIos', concurrentIosPerDevice: 4 });
  t.same(poolOf(machine, pool).rebuildIoPriority, { policy: 'limitNumOfConcurrentIos', concurrentIosPerDevice: 4, bandwidthPerDeviceKbps: 20 * 1024 }, 'the bandwidth left out keeps the pool’s');
  machine.apply({ type: 'setIoPriorityPolicy', poolId: pool, kind: 'rebalance', policy: 'favorAppIos' });
  t.same(poolOf(machine, pool).rebalanceIoPriority, { policy: 'favorAppIos', concurrentIosPerDevice: 1, bandwidthPerDeviceKbps: 10 * 1024 }, 'rebalance: ScaleIO’s defaults (1 IO, 10 MB/s per device)');
  t.notOk(machine.apply({ type: 'setIoPriorityPolicy', poolId: pool, kind: 'rebalance', policy: 'unlimited' }).epochChanged, 'a policy moves no placement');
});

t.test('a pool never set: orders carry the start options, and it shows as favorAppIos with their numbers', async (t) => {
  const { machine, pool } = cluster(4);
  machine.apply({ type: 'sdsDown', sdsId: sdsId(3), nowMs: t0, reason: 'test' });
  machine.apply({ type: 'sdsOut', sdsId: sdsId(3) });
  const orders = decideRebuilds(input(machine, t0, emptyObservations(), allSds(3))).orders;
  t.ok(orders.length > 0, `${orders.length} fills ordered`);
  for (const order of orders) {
    t.same(
      { max: order.args.bytesPerSecondMax, underLoad: order.args.bytesPerSecondUnderLoad, inflight: order.args.chunksInflightMax, policy: order.args.policy, kind: order.args.kind },
      { max: 40 * MiB, underLoad: 8 * MiB, inflight: 3, policy: undefined, kind: undefined },
      `group ${order.args.pgIndex}: the MDM's options, one budget per SDS, as before policies`,
    );
  }
  t.same(ioPriorityShown(poolOf(machine, pool), 'rebuild', options), { policy: 'favorAppIos', concurrentIosPerDevice: 3, bandwidthPerDeviceKbps: 8 * 1024, isDefault: true }, 'shown as favorAppIos, --rebuild-inflight and --rebuild-rate-under-load');
  t.same(ioPriorityShown(poolOf(machine, pool), 'rebalance', healthOptions({ rebuildBytesPerSecondUnderLoad: 1000 })), { policy: 'favorAppIos', concurrentIosPerDevice: 2, bandwidthPerDeviceKbps: 1024, isDefault: true }, 'a rate under 1 MiB/s shows as the least a policy takes, 1024 KB/s');
});

t.test('rebuild vs rebalance: an SDS out or a device failed is a rebuild, a device added or removed a rebalance', async (t) => {
  const out = cluster(4);
  out.run({ type: 'sdsDown', sdsId: sdsId(3), nowMs: t0, reason: 'test' });
  out.run({ type: 'sdsOut', sdsId: sdsId(3) });
  t.ok(syncingGroups(out.machine, out.pool).length > 0 && syncingGroups(out.machine, out.pool).every((group) => fillKindOf(group) === 'rebuild'), 'SDS out: every fill is a rebuild');

  const failed = cluster(4);
  failed.run({ type: 'deviceFailed', deviceId: deviceId(20), reason: 'EIO' });
  t.ok(syncingGroups(failed.machine, failed.pool).length > 0 && syncingGroups(failed.machine, failed.pool).every((group) => fillKindOf(group) === 'rebuild'), 'device failed: every fill is a rebuild');

  const added = cluster(3);
  added.run({ type: 'registerSds', sdsId: sdsId(3), name: 'sds3', address: '127.0.0.1:7003', nowMs: t0 });
  added.run({ type: 'addSds', sdsId: sdsId(3), protectionDomainId: poolOf(added.machine, added.pool).protectionDomainId, faultSetId: null });
  added.run({ type: 'addDevice', deviceId: deviceId(30), sdsId: sdsId(3), storagePoolId: added.pool, path: '/dev/sdb', name: null, capacityBytes: 100 * GiB });
  const moving = syncingGroups(added.machine, added.pool);
  t.ok(moving.length > 0 && moving.every((group) => group.rebalance === true), `device added: ${moving.length} fills, all rebalances`);

  const removed = cluster(4);
  removed.run({ type: 'removeDevice', id: deviceId(30) });
  const leaving = syncingGroups(removed.machine, removed.pool);
  t.ok(leaving.length > 0 && leaving.every((group) => group.rebalance === true), `device removed: ${leaving.length} fills, all rebalances`);

  // Each fill ends as before: copiesSynced clears the mark with the rest.
  const pgIndex = poolOf(added.machine, added.pool).groups.findIndex((group) => group.syncing === true);
  const group = poolOf(added.machine, added.pool).groups[pgIndex] as PoolGroup;
  added.run({ type: 'copiesSynced', poolId: added.pool, groups: [{ pgIndex, secondaryDevice: group.secondaryDevice as Id, orderEpoch: added.machine.model.epoch }] });
  const after = poolOf(added.machine, added.pool).groups[pgIndex] as PoolGroup;
  t.equal(after.syncing, undefined, 'in sync');
  t.equal(after.rebalance, undefined, 'and no longer a rebalance');

  for (const { machine, commands } of [out, failed, added, removed]) {
    const replayed = StateMachine.create(clusterId, 'test');
    for (const command of commands) replayed.replay(command);
    t.equal(durableJson(replayed.model), durableJson(machine.model), 'replaying the journal gives the same groups, marks included');
  }
});

t.test('orders carry the policy of their kind, per device of the source SDS', async (t) => {
  const { machine, pool, run } = cluster(4, 2);
  run({ type: 'setIoPriorityPolicy', poolId: pool, kind: 'rebuild', policy: 'limitBandwidth', concurrentIosPerDevice: 3, bandwidthPerDeviceKbps: 10 * 1024 });
  run({ type: 'setIoPriorityPolicy', poolId: pool, kind: 'rebalance', policy: 'favorAppIos', concurrentIosPerDevice: 20, bandwidthPerDeviceKbps: 5 * 1024 });
  run({ type: 'deviceFailed', deviceId: deviceId(31), reason: 'EIO' });
  const orders = decideRebuilds(input(machine, t0, emptyObservations(), allSds(4))).orders;
  t.ok(orders.length > 0, `${orders.length} rebuilds ordered`);
  for (const order of orders) {
    // Each source SDS has its 2 devices in the pool, but sds3 only one that has not failed.
    const devices = order.sourceSdsId === sdsId(3) ? 1 : 2;
    t.same(
      { max: order.args.bytesPerSecondMax, underLoad: order.args.bytesPerSecondUnderLoad, inflight: order.args.chunksInflightMax, policy: order.args.policy, kind: order.args.kind },
      { max: devices * 10 * MiB, underLoad: 0, inflight: devices * 3, policy: 'limitBandwidth', kind: 'rebuild' },
      `group ${order.args.pgIndex} from an SDS with ${devices} device(s): limitBandwidth x ${devices}`,
    );
  }

  const grown = cluster(3, 2);
  grown.run({ type: 'setIoPriorityPolicy', poolId: grown.pool, kind: 'rebalance', policy: 'favorAppIos', concurrentIosPerDevice: 20, bandwidthPerDeviceKbps: 5 * 1024 });
  grown.run({ type: 'registerSds', sdsId: sdsId(3), name: 'sds3', address: '127.0.0.1:7003', nowMs: t0 });
  grown.run({ type: 'addSds', sdsId: sdsId(3), protectionDomainId: poolOf(grown.machine, grown.pool).protectionDomainId, faultSetId: null });
  grown.run({ type: 'addDevice', deviceId: deviceId(30), sdsId: sdsId(3), storagePoolId: grown.pool, path: '/dev/sdb', name: null, capacityBytes: 100 * GiB });
  const rebalances = decideRebuilds(input(grown.machine, t0, emptyObservations(), allSds(4))).orders;
  t.ok(rebalances.length > 0, `${rebalances.length} rebalances ordered`);
  t.ok(
    rebalances.every((order) => order.args.policy === 'favorAppIos' && order.args.kind === 'rebalance' && order.args.bytesPerSecondMax === 0 && order.args.bytesPerSecondUnderLoad === 2 * 5 * MiB && order.args.chunksInflightMax === Math.min(sdsRebuildChunksInflightMax, 40)),
    'rebalances: favorAppIos, no cap on a quiet SDS, 2 x 5 MiB/s under load, 2 x 20 copies in flight',
  );

  run({ type: 'setIoPriorityPolicy', poolId: pool, kind: 'rebuild', policy: 'unlimited' });
  const unlimited = decideRebuilds(input(machine, t0, emptyObservations(), allSds(4))).orders;
  t.ok(unlimited.every((order) => order.args.bytesPerSecondMax === 0 && order.args.bytesPerSecondUnderLoad === 0 && order.args.chunksInflightMax === sdsRebuildChunksInflightMax), 'unlimited: no bandwidth cap, the most copies an SDS allows');
  run({ type: 'setIoPriorityPolicy', poolId: pool, kind: 'rebuild', policy: 'limitNumOfConcurrentIos', concurrentIosPerDevice: 2 });
  const counted = decideRebuilds(input(machine, t0, emptyObservations(), allSds(4))).orders;
  t.ok(counted.every((order) => order.args.bytesPerSecondMax === 0 && order.args.bytesPerSecondUnderLoad === 0 && order.args.chunksInflightMax === (order.sourceSdsId === sdsId(3) ? 2 : 4)), 'limitNumOfConcurrentIos: copies in flight only');
});

t.test('a policy changed while fills run: their orders are given again at the next tick, once', async (t) => {
  const { machine, pool } = cluster(4);
  machine.apply({ type: 'sdsDown', sdsId: sdsId(3), nowMs: t0, reason: 'test' });
  machine.apply({ type: 'sdsOut', sdsId: sdsId(3) });
  const observations = emptyObservations();
  const first = decideRebuilds(input(machine, t0, observations, allSds(3)));
  noteDecisions(observations, first, t0);
  t.same(decideRebuilds(input(machine, t0 + 1000, observations, allSds(3))).orders, [], 'nothing changed: no order again within the repeat interval');

  machine.apply({ type: 'setIoPriorityPolicy', poolId: pool, kind: 'rebalance', policy: 'limitBandwidth' });
  t.same(decideRebuilds(input(machine, t0 + 1000, observations, allSds(3))).orders, [], 'the rebalance policy changed: the rebuilds are not concerned');

  machine.apply({ type: 'setIoPriorityPolicy', poolId: pool, kind: 'rebuild', policy: 'limitBandwidth', bandwidthPerDeviceKbps: 2048 });
  const again = decideRebuilds(input(machine, t0 + 2000, observations, allSds(3)));
  t.equal(again.orders.length, first.orders.length, 'the rebuild policy changed: every running fill is ordered again at once');
  t.ok(again.orders.every((order) => order.args.policy === 'limitBandwidth' && order.args.bytesPerSecondMax === 2 * MiB && order.args.epoch === machine.model.epoch), '... with the new numbers, at the same epoch (the SDS updates the running job)');
  noteDecisions(observations, again, t0 + 2000);
  t.same(decideRebuilds(input(machine, t0 + 3000, observations, allSds(3))).orders, [], 'then nothing more');
  t.equal(decideRebuilds(input(machine, t0 + 2000 + rebuildOrderRepeatMs, observations, allSds(3))).orders.length, first.orders.length, 'and the usual repeat after the interval');
});

t.test('state from before policies loads: pools without the fields, fills without the mark', async (t) => {
  const { machine, pool } = cluster(4);
  machine.apply({ type: 'sdsDown', sdsId: sdsId(3), nowMs: t0, reason: 'test' });
  machine.apply({ type: 'sdsOut', sdsId: sdsId(3) });
  // A compacted journal snapshot or an etcd model of an older MDM: the JSON as it wrote it.
  const old = JSON.parse(durableJson(machine.model)) as SystemModel;
  for (const entry of Object.values(old.storagePools)) {
    t.notOk('rebuildIoPriority' in entry || 'rebalanceIoPriority' in entry, 'an older model has no policy fields');
    t.notOk(entry.groups.some((group) => 'rebalance' in group), '... and no rebalance marks');
  }
  const loaded = new StateMachine(old);
  t.equal(durableJson(loaded.model), durableJson(machine.model), 'it loads as it was');
  const orders = decideRebuilds(input(loaded, t0, emptyObservations(), allSds(3))).orders;
  t.ok(orders.length > 0 && orders.every((order) => order.args.policy === undefined && order.args.bytesPerSecondMax === 40 * MiB), 'its fills are rebuilds at the start options');
  t.equal(ioPriorityShown(poolOf(loaded, pool), 'rebuild', options).policy, 'favorAppIos', 'shown as favorAppIos');
  loaded.apply({ type: 'setIoPriorityPolicy', poolId: pool, kind: 'rebuild', policy: 'limitNumOfConcurrentIos', concurrentIosPerDevice: 5 });
  t.equal(poolOf(loaded, pool).rebuildIoPriority?.concurrentIosPerDevice, 5, 'and takes a policy like a new pool');
  // An OrderGiven of an MDM from before (no throttle recorded): treated as the options' throttle.
  const observations = emptyObservations();
  const fresh = cluster(4);
  fresh.machine.apply({ type: 'sdsDown', sdsId: sdsId(3), nowMs: t0, reason: 'test' });
  fresh.machine.apply({ type: 'sdsOut', sdsId: sdsId(3) });
  for (const order of decideRebuilds(input(fresh.machine, t0, observations, allSds(3))).orders) observations.ordersGiven.set(order.key, { epoch: order.args.epoch, atMs: t0 });
  t.same(decideRebuilds(input(fresh.machine, t0 + 1000, observations, allSds(3))).orders, [], 'orders remembered without a throttle are not given again early');
});
