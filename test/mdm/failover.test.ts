// The MDM state machine's failure handling, command by command: an SDS declared down fails
// its groups over to in-sync secondaries and remembers its copies as absent; back in time,
// those copies return as secondaries filled by a delta rebuild; declared out, its copies are
// re-created elsewhere (syncing until their primaries report them filled); a copy still
// filling is never promoted, and a group left with no readable copy is marked lost (IO
// fails) instead of being re-created empty. Every step is replayed to prove determinism.

import t, { type Test } from 'tap';
import { GiB } from '../../src/common/units.js';
import type { Id, PoolGroup } from '../../src/mdm/model.js';
import { StateMachine, type Command } from '../../src/mdm/state-machine.js';

const clusterId = '0123456789abcdef';
const sdsId = (index: number): Id => (0x5d5000000000 + index).toString(16).padStart(16, '0');
const deviceId = (index: number): Id => (0xde7000000000 + index).toString(16).padStart(16, '0');

/** Applies commands and keeps them, so the test can replay the run and compare. */
class Recorder {
  readonly machine = StateMachine.create(clusterId, 'test');
  readonly commands: Command[] = [];
  apply(command: Command): ReturnType<StateMachine['apply']> {
    const applied = this.machine.apply(command);
    this.commands.push(command);
    return applied;
  }
  replayed(): string {
    const other = StateMachine.create(clusterId, 'test');
    for (const command of this.commands) other.apply(command);
    return durable(other.model);
  }
}

/** The model without what heartbeats set (usage), which the journal does not replay. */
function durable(model: unknown): string {
  return JSON.stringify(model, (key, value: unknown) => (key === 'usedBytes' ? undefined : value));
}

function cluster(sdsCount: number): { run: Recorder; pool: Id; volume: Id } {
  const run = new Recorder();
  const pd = run.apply({ type: 'addProtectionDomain', name: 'pd1' }).id as Id;
  const pool = run.apply({ type: 'addStoragePool', protectionDomainId: pd, name: 'sp1', volumeGranularityBytes: GiB }).id as Id;
  for (let index = 0; index < sdsCount; index++) {
    run.apply({ type: 'registerSds', sdsId: sdsId(index), name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, nowMs: 1000 });
    run.apply({ type: 'addSds', sdsId: sdsId(index), protectionDomainId: pd, faultSetId: null });
    run.apply({ type: 'addDevice', deviceId: deviceId(index), sdsId: sdsId(index), storagePoolId: pool, path: '/dev/sdb', name: null, capacityBytes: 100 * GiB });
  }
  const volume = run.apply({ type: 'addVolume', storagePoolId: pool, name: 'vol1', sizeBytes: 64 * GiB, volumeType: 'ThinProvisioned', nowMs: 2000 }).id as Id;
  // Some data everywhere, so that health has bytes to estimate.
  for (let index = 0; index < sdsCount; index++) (run.machine.model.devices[deviceId(index)] as { usedBytes: number }).usedBytes = 10 * GiB;
  return { run, pool, volume };
}

function groups(run: Recorder, pool: Id): PoolGroup[] {
  return run.machine.model.storagePools[pool]?.groups ?? [];
}

/** Reports every syncing group of the pool filled, as the primaries' RebuildDone would. */
function syncAll(run: Recorder, pool: Id): number {
  const entries = groups(run, pool)
    .map((group, pgIndex) => ({ group, pgIndex }))
    .filter(({ group }) => group.syncing === true && group.secondaryDevice !== null)
    .map(({ group, pgIndex }) => ({ pgIndex, secondaryDevice: group.secondaryDevice as Id, orderEpoch: run.machine.model.epoch }));
  if (entries.length > 0) run.apply({ type: 'copiesSynced', poolId: pool, groups: entries });
  return entries.length;
}

function holds(group: PoolGroup, device: Id): boolean {
  return group.primaryDevice === device || group.secondaryDevice === device;
}

function checkInvariants(t: Test, run: Recorder, pool: Id, what: string): void {
  const bad = groups(run, pool).filter((group) => group.secondaryDevice !== null && run.machine.model.devices[group.primaryDevice]?.sdsId === run.machine.model.devices[group.secondaryDevice]?.sdsId);
  t.equal(bad.length, 0, `${what}: no group has both copies on one SDS`);
  t.equal(run.replayed(), durable(run.machine.model), `${what}: replaying the commands gives the same model`);
}

t.test('down, then back before out: copies return as secondaries, filled by delta', async (t) => {
  const { run, pool, volume } = cluster(4);
  const down = deviceId(0);
  const before = groups(run, pool).map((group) => ({ ...group }));
  const heldBefore = before.filter((group) => holds(group, down)).length;
  const epoch = run.machine.model.epoch;
  t.ok(run.apply({ type: 'sdsDown', sdsId: sdsId(0), nowMs: 5000, reason: 'test' }).epochChanged);
  t.ok(run.machine.model.epoch > epoch, 'the epoch moves');
  t.equal(groups(run, pool).filter((group) => holds(group, down)).length, 0, 'no group uses the down SDS');
  t.equal(groups(run, pool).filter((group) => group.absentDevice === down).length, heldBefore, 'each of its copies is remembered as absent');
  t.ok(groups(run, pool).every((group, index) => !(before[index]?.primaryDevice === down) || group.primaryDevice === before[index]?.secondaryDevice), 'its primaries failed over to their secondaries');
  const health = run.machine.poolHealth(run.machine.model.storagePools[pool] as never);
  t.equal(health.failedGroups, 0, 'nothing failed: every group kept a copy');
  t.equal(health.degradedGroups, heldBefore, 'the groups it held are degraded');
  t.ok(health.degradedBytes > 0, `degraded bytes estimated (${health.degradedBytes})`);
  t.ok(run.machine.volumeHealth(volume).degradedChunks > 0, 'the volume is reported degraded');
  t.throws(() => run.apply({ type: 'addDevice', deviceId: deviceId(9), sdsId: sdsId(1), storagePoolId: pool, path: '/dev/sdc', name: null, capacityBytes: 100 * GiB }), { code: 'MB_ERR_POOL_DEGRADED' }, 'no re-plan while an SDS may still return');
  checkInvariants(t, run, pool, 'down');

  // The SDS registers again within the window.
  t.ok(run.apply({ type: 'registerSds', sdsId: sdsId(0), name: 'sds0', address: '127.0.0.1:7000', nowMs: 9000 }).epochChanged, 'coming back moves the epoch');
  const back = groups(run, pool).filter((group) => group.secondaryDevice === down);
  t.equal(back.length, heldBefore, 'every absent copy is a secondary again');
  t.ok(back.every((group) => group.syncing === true && group.delta === true), '... syncing, by delta');
  t.equal(groups(run, pool).filter((group) => group.absentDevice !== undefined).length, 0, 'nothing absent any more');
  t.equal(groups(run, pool).filter((group) => group.primaryDevice === down).length, 0, 'a copy filling is never primary');
  checkInvariants(t, run, pool, 'back');

  // An order given before this fill began proves nothing.
  const first = groups(run, pool).findIndex((group) => group.syncing === true);
  run.apply({ type: 'copiesSynced', poolId: pool, groups: [{ pgIndex: first, secondaryDevice: down, orderEpoch: 1 }] });
  t.equal(groups(run, pool)[first]?.syncing, true, 'a stale completion is ignored');

  const synced = syncAll(run, pool);
  t.equal(synced, heldBefore, 'every filled group is recorded in sync');
  t.equal(groups(run, pool).filter((group) => group.syncing === true).length, 0, 'nothing left syncing');
  const primaries = groups(run, pool).filter((group) => group.primaryDevice === down).length;
  t.ok(primaries > groups(run, pool).length / 8, `once in sync, primaries are handed back to it (${primaries})`);
  t.equal(groups(run, pool).filter((group) => holds(group, down)).length, heldBefore, 'and it holds the same groups as before');
  checkInvariants(t, run, pool, 'in sync');
});

t.test('down, then out: copies re-created elsewhere; back later, the pool rebalances onto it', async (t) => {
  const { run, pool } = cluster(4);
  const lost = deviceId(1);
  const heldBefore = groups(run, pool).filter((group) => holds(group, lost)).length;
  run.apply({ type: 'sdsDown', sdsId: sdsId(1), nowMs: 5000, reason: 'test' });
  t.throws(() => run.apply({ type: 'sdsOut', sdsId: sdsId(2) }), { code: 'MB_ERR_SDS_UP' }, 'only a down SDS goes out');
  run.apply({ type: 'sdsOut', sdsId: sdsId(1) });
  t.equal(groups(run, pool).filter((group) => holds(group, lost) || group.absentDevice === lost).length, 0, 'nothing refers to the out SDS');
  const syncing = groups(run, pool).filter((group) => group.syncing === true);
  t.equal(syncing.length, heldBefore, 'each copy it held is re-created (syncing) on another device');
  t.ok(syncing.every((group) => group.delta !== true), '... in full');
  t.equal(run.machine.poolHealth(run.machine.model.storagePools[pool] as never).failedGroups, 0, 'nothing failed');
  checkInvariants(t, run, pool, 'out');
  syncAll(run, pool);
  t.equal(groups(run, pool).filter((group) => group.syncing === true || group.secondaryDevice === null).length, 0, 'all groups on two copies again');

  run.apply({ type: 'registerSds', sdsId: sdsId(1), name: 'sds1', address: '127.0.0.1:7001', nowMs: 99_000 });
  const moved = groups(run, pool).filter((group) => group.secondaryDevice === lost);
  t.ok(moved.length > groups(run, pool).length / 4, `back after out, it receives its share again (${moved.length} groups)`);
  t.ok(moved.every((group) => group.syncing === true && group.delta !== true), '... filled in full (its old chunks are stale)');
  checkInvariants(t, run, pool, 'rebalanced');
});

t.test('a second failure before the rebuild is done: the groups with no copy left fail, then are lost', async (t) => {
  const { run, pool, volume } = cluster(3);
  run.apply({ type: 'sdsDown', sdsId: sdsId(0), nowMs: 5000, reason: 'test' });
  run.apply({ type: 'sdsOut', sdsId: sdsId(0) });
  const exposed = groups(run, pool).filter((group) => group.syncing === true && run.machine.model.devices[group.primaryDevice]?.sdsId === sdsId(1)).length;
  t.ok(exposed > 0, `${exposed} groups rely on sds1 alone while their new copies fill`);
  run.apply({ type: 'sdsDown', sdsId: sdsId(1), nowMs: 6000, reason: 'test' });
  const health = run.machine.poolHealth(run.machine.model.storagePools[pool] as never);
  t.equal(health.failedGroups, exposed, 'exactly those groups have no readable copy');
  t.ok(health.failedBytes > 0, `failed bytes estimated (${health.failedBytes})`);
  t.ok(run.machine.volumeHealth(volume).failedChunks > 0, 'the volume is reported failed');
  // The syncing copies on sds2 were never promoted: their groups still point at sds1.
  t.equal(groups(run, pool).filter((group) => run.machine.model.devices[group.primaryDevice]?.sdsId === sdsId(2) && group.syncing === true && group.secondaryDevice === null).length, 0, 'no copy still filling was made primary');

  // sds1 out too: those groups are lost for good, and say so in the map.
  run.apply({ type: 'sdsOut', sdsId: sdsId(1) });
  const lost = groups(run, pool).filter((group) => group.lost === true).length;
  t.equal(lost, exposed, 'the groups with no copy left are marked lost');
  const map = run.machine.placementMap();
  t.equal(Object.values(map.pools)[0]?.groups.filter((group) => group.lost === true).length, exposed, 'the map carries the lost groups (IO to them fails)');
  checkInvariants(t, run, pool, 'lost');
  // Removing the pool's volumes forgets them.
  run.apply({ type: 'removeVolume', id: volume });
  t.equal(groups(run, pool).filter((group) => group.lost === true).length, 0, 'with no volume left, nothing is lost');
});

t.test('one failed device: only its groups move', async (t) => {
  const { run, pool } = cluster(4);
  const failed = deviceId(2);
  const before = groups(run, pool).map((group) => ({ ...group }));
  run.apply({ type: 'deviceFailed', deviceId: failed, reason: 'EIO' });
  const after = groups(run, pool);
  const changed = after.filter((group, index) => {
    const old = before[index] as PoolGroup;
    return !(holds(group, old.primaryDevice) && (old.secondaryDevice === null || holds(group, old.secondaryDevice)));
  });
  t.equal(changed.length, before.filter((group) => holds(group, failed)).length, 'only the groups that had a copy on the failed device changed');
  t.equal(after.filter((group) => holds(group, failed)).length, 0, 'the failed device holds nothing');
  t.equal(after.filter((group) => group.syncing === true).length, changed.length, 'each gets a new copy, filling');
  checkInvariants(t, run, pool, 'device failed');
});

t.test('removing an SDS gracefully: its data moves away first, then it goes', async (t) => {
  const { run, pool } = cluster(4);
  const leaving = deviceId(3);
  const held = groups(run, pool).filter((group) => holds(group, leaving)).length;
  run.apply({ type: 'removeSds', id: sdsId(3) });
  t.equal(run.machine.model.devices[leaving]?.state, 'removing', 'its device is being removed');
  t.equal(run.machine.model.sdss[sdsId(3)]?.removing, true, 'the SDS is being removed');
  const syncing = groups(run, pool).filter((group) => group.syncing === true).length;
  t.equal(syncing, held, 'each copy it held is being re-created elsewhere');
  t.equal(groups(run, pool).filter((group) => group.primaryDevice === leaving || group.secondaryDevice === leaving).length, 0, 'the others hold its groups: the copy each shared with it is primary now');
  syncAll(run, pool);
  t.equal(run.machine.model.devices[leaving], undefined, 'once the copies are in sync, the device is gone');
  t.equal(run.machine.model.sdss[sdsId(3)], undefined, '... and the SDS');
  checkInvariants(t, run, pool, 'removed');

  // Down to two SDSs holding a volume: neither may go.
  run.apply({ type: 'removeSds', id: sdsId(2) });
  syncAll(run, pool);
  t.equal(run.machine.model.sdss[sdsId(2)], undefined, 'a third SDS could go');
  const before = durable(run.machine.model);
  t.throws(() => run.apply({ type: 'removeSds', id: sdsId(1) }), { code: 'MB_ERR_POOL_IN_USE' }, 'a pool with volumes keeps two SDSs');
  t.throws(() => run.apply({ type: 'removeDevice', id: deviceId(1) }), { code: 'MB_ERR_POOL_IN_USE' });
  t.equal(durable(run.machine.model), before, 'a refused removal changes nothing');
});

t.test('a copy still filling when its SDS goes down comes back for a full fill; orphans are repaired', async (t) => {
  const { run, pool } = cluster(4);
  run.apply({ type: 'sdsDown', sdsId: sdsId(0), nowMs: 5000, reason: 'test' });
  run.apply({ type: 'registerSds', sdsId: sdsId(0), name: 'sds0', address: '127.0.0.1:7000', nowMs: 6000 });
  const filling = groups(run, pool).filter((group) => group.syncing === true && group.delta === true).length;
  t.ok(filling > 0, `${filling} copies filling by delta`);
  run.apply({ type: 'sdsDown', sdsId: sdsId(0), nowMs: 7000, reason: 'test' });
  t.equal(groups(run, pool).filter((group) => group.absentFull === true).length, filling, 'the copies that were filling are absent, to be filled in full');
  run.apply({ type: 'registerSds', sdsId: sdsId(0), name: 'sds0', address: '127.0.0.1:7000', nowMs: 8000 });
  t.equal(groups(run, pool).filter((group) => group.syncing === true && group.delta !== true).length, filling, 'back, they fill in full');
  t.equal(groups(run, pool).filter((group) => group.secondaryDevice === null).length, 0, 'no group is left on one copy');
  syncAll(run, pool);

  // A group on one copy with nothing to fill it (as a journal from before absentFull could leave).
  const orphan = groups(run, pool)[7] as PoolGroup;
  orphan.secondaryDevice = null;
  t.ok(run.machine.needsRepair(run.machine.model.storagePools[pool] as never), 'the orphan is noticed');
  t.ok(run.apply({ type: 'repairPool', poolId: pool }).epochChanged, 'and repaired by a new plan');
  t.not(groups(run, pool)[7]?.secondaryDevice, null, 'it has a second copy again');
  t.equal(groups(run, pool)[7]?.syncing, true, 'filling');
});
