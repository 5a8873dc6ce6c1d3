// Proves the MDM state machine's host labels (SdsRegistration.host, docs/architecture.md):
//   - the label is kept on the SDS, updated by every registration, null when absent (and in
//     journals from before labels); a bad label is refused by name;
//   - a label that puts two SDSs of a pool on one host re-plans the pool (the epoch moves): no
//     group keeps both copies there; a label no other SDS has moves nothing; a label that
//     would leave a pool with volumes on one host refuses the registration, changing nothing;
//   - with another SDS of the pool down, the label is taken but the pool waits: once the SDS
//     is back, needsRepair says so and repairPool moves the copies apart;
//   - addSds refuses an SDS of a host whose other SDSs are in another fault set (or none):
//     MB_ERR_HOST_FAULT_SET, 409, naming both SDSs, the host and both fault sets; a registration
//     changing a label into such a clash is taken with a warning, the fault set staying the domain;
//   - replaying the accepted commands gives the same model.

import t, { type Test } from 'tap';
import { GiB } from '../../src/common/units.js';
import type { Id, StoragePool } from '../../src/mdm/model.js';
import { MdmError, StateMachine, type Command } from '../../src/mdm/state-machine.js';
import { durableJson } from '../../src/mdm/model.js';

const clusterId = '0123456789abcdef';

function sdsId(index: number): Id {
  return (0x5d5000000000 + index).toString(16).padStart(16, '0');
}

function deviceId(index: number): Id {
  return (0xde7000000000 + index).toString(16).padStart(16, '0');
}

/** A machine that records what it accepted, for a replay. */
class Recorder {
  readonly machine = StateMachine.create(clusterId, 'test');
  readonly accepted: Command[] = [];

  apply(command: Command): { id?: Id; epochChanged: boolean } {
    const applied = this.machine.apply(command);
    this.accepted.push(command);
    return applied;
  }

  register(index: number, host: string | null | undefined, nowMs = 1000): void {
    const command: Command = { type: 'registerSds', sdsId: sdsId(index), name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, nowMs };
    if (host !== undefined) command.host = host;
    this.apply(command);
  }
}

/** One PD, one pool, `sdsCount` SDSs of one device each, with these labels; a volume if `withVolume`. */
function system(hosts: Array<string | null>, options: { withVolume?: boolean; faultSets?: Array<string | null> } = {}): { rec: Recorder; pd: Id; pool: Id } {
  const rec = new Recorder();
  const pd = rec.apply({ type: 'addProtectionDomain', name: 'pd1' }).id as Id;
  const pool = rec.apply({ type: 'addStoragePool', protectionDomainId: pd, name: 'sp1', volumeGranularityBytes: GiB, pgCount: 1024 }).id as Id;
  const sets = new Map<string, Id>();
  for (const name of options.faultSets ?? []) if (name !== null && !sets.has(name)) sets.set(name, rec.apply({ type: 'addFaultSet', protectionDomainId: pd, name }).id as Id);
  hosts.forEach((host, index) => {
    rec.register(index, host);
    const set = options.faultSets?.[index] ?? null;
    rec.apply({ type: 'addSds', sdsId: sdsId(index), protectionDomainId: pd, faultSetId: set === null ? null : (sets.get(set) as Id) });
    rec.apply({ type: 'addDevice', deviceId: deviceId(index), sdsId: sdsId(index), storagePoolId: pool, path: '/dev/sdb', name: null, capacityBytes: 100 * GiB });
  });
  if (options.withVolume === true) rec.apply({ type: 'addVolume', storagePoolId: pool, name: 'vol1', sizeBytes: 10 * GiB, volumeType: 'ThinProvisioned', nowMs: 1 });
  return { rec, pd, pool };
}

function refused(t: Test, rec: Recorder, command: Command, code: string, what: string): MdmError {
  const before = JSON.stringify(rec.machine.model);
  let caught: unknown;
  try {
    rec.machine.apply(command);
  } catch (err) {
    caught = err;
  }
  t.match(caught, { code }, what);
  t.equal(JSON.stringify(rec.machine.model), before, `${what}: nothing changed`);
  return caught as MdmError;
}

/** Groups of the pool whose two copies are on SDSs with the same label. */
function sameHostGroups(machine: StateMachine, poolId: Id): number {
  const pool = machine.model.storagePools[poolId];
  const hostOf = (device: Id | null): string | null => (device === null ? null : (machine.model.sdss[machine.model.devices[device]?.sdsId as Id]?.host ?? null));
  return (pool?.groups ?? []).filter((group) => group.secondaryDevice !== null && hostOf(group.primaryDevice) !== null && hostOf(group.primaryDevice) === hostOf(group.secondaryDevice)).length;
}

/** Groups whose copies are on exactly these two SDSs. */
function groupsOn(machine: StateMachine, poolId: Id, a: Id, b: Id): number {
  const sdsOf = (device: Id | null): Id | undefined => (device === null ? undefined : machine.model.devices[device]?.sdsId);
  return (machine.model.storagePools[poolId]?.groups ?? []).filter((group) => [sdsOf(group.primaryDevice), sdsOf(group.secondaryDevice)].sort().join() === [a, b].sort().join()).length;
}

function replayed(rec: Recorder): string {
  const replay = StateMachine.create(clusterId, 'test');
  for (const command of rec.accepted) replay.replay(command);
  return durableJson(replay.model);
}

t.test('the label is kept, updated at every registration, null when absent; a bad one is refused', async (t) => {
  const rec = new Recorder();
  rec.register(0, 'hostA');
  rec.register(1, undefined);
  rec.register(2, null);
  t.equal(rec.machine.model.sdss[sdsId(0)]?.host, 'hostA');
  t.equal(rec.machine.model.sdss[sdsId(1)]?.host, null, 'absent: none (as in journals from before labels)');
  t.equal(rec.machine.model.sdss[sdsId(2)]?.host, null);
  rec.register(0, 'hostB', 2000);
  t.equal(rec.machine.model.sdss[sdsId(0)]?.host, 'hostB', 'a new label replaces the old');
  rec.register(0, undefined, 3000);
  t.equal(rec.machine.model.sdss[sdsId(0)]?.host, null, 'registering without one clears it');
  for (const bad of ['', 'has space', '-dash', 'x'.repeat(32), 'h:colon']) {
    const err = refused(t, rec, { type: 'registerSds', sdsId: sdsId(0), name: 'sds0', address: '127.0.0.1:7000', nowMs: 4000, host: bad }, 'MB_ERR_INVALID_ARGUMENT', `label ${JSON.stringify(bad)}`);
    t.match(err.message, /^host: /, 'names the field');
  }
  t.equal(replayed(rec), durableJson(rec.machine.model), 'replay gives the same model');
});

t.test('a label that puts two SDSs of a pool on one host moves their shared copies apart', async (t) => {
  const { rec, pool } = system([null, null, null, null], { withVolume: true });
  const machine = rec.machine;
  const shared = groupsOn(machine, pool, sdsId(0), sdsId(1));
  t.ok(shared > 0, `${shared} groups on sds0 and sds1 before labels`);
  let epoch = machine.model.epoch;
  const groupsBefore = JSON.stringify(machine.model.storagePools[pool]?.groups);
  rec.register(0, 'hostA', 2000);
  t.equal(machine.model.epoch, epoch, 'a label no other SDS has: the domains are the same, the epoch stays');
  t.equal(JSON.stringify(machine.model.storagePools[pool]?.groups), groupsBefore, 'and nothing moves');
  const applied = rec.apply({ type: 'registerSds', sdsId: sdsId(1), name: 'sds1', address: '127.0.0.1:7001', nowMs: 2000, host: 'hostA' });
  t.ok(applied.epochChanged, 'sds1 joining hostA re-plans: the epoch changed');
  t.ok(machine.model.epoch > epoch, 'and moved');
  t.equal(groupsOn(machine, pool, sdsId(0), sdsId(1)), 0, 'no group has copies on both shards of hostA');
  t.equal(sameHostGroups(machine, pool), 0);
  const groups = machine.model.storagePools[pool]?.groups ?? [];
  t.ok(groups.filter((group) => group.syncing === true).length >= shared, 'each such group fills a new copy from its primary');
  t.ok(groups.every((group) => group.lost !== true), 'nothing lost');
  t.equal(machine.needsRepair(machine.model.storagePools[pool] as StoragePool), false, 'nothing left to repair');
  // The label goes away again: the domains split, the pool is planned again (and may spread back).
  epoch = machine.model.epoch;
  rec.register(1, null, 3000);
  t.ok(machine.model.epoch > epoch, 'a label removed that regroups re-plans too');
  t.equal(replayed(rec), durableJson(machine.model), 'replay gives the same model');
});

t.test('a label that would leave a pool with volumes on one host refuses the registration', async (t) => {
  const { rec, pool } = system(['hostA', null], { withVolume: true });
  const err = refused(t, rec, { type: 'registerSds', sdsId: sdsId(1), name: 'sds1', address: '127.0.0.1:7001', nowMs: 2000, host: 'hostA' }, 'MB_ERR_POOL_IN_USE', 'both SDSs of a pool with volumes on one host');
  t.match(err.message, /SDS 'sds1' registering with host label 'hostA' \(it had no host label\): storage pool 'sp1' has volumes; its devices must stay on at least two hosts/);
  t.equal(err.httpStatus, 409);
  t.ok((rec.machine.model.storagePools[pool]?.groups.length ?? 0) > 0, 'the pool keeps its plan');
  // Without volumes the pool simply has no placement until its devices span two hosts.
  const empty = system(['hostA', null]);
  empty.rec.register(1, 'hostA', 2000);
  t.equal(empty.rec.machine.model.storagePools[empty.pool]?.groups.length, 0, 'an empty pool on one host holds no groups');
  t.throws(() => empty.rec.machine.apply({ type: 'addVolume', storagePoolId: empty.pool, name: 'v', sizeBytes: GiB, volumeType: 'ThinProvisioned', nowMs: 1 }), { code: 'MB_ERR_POOL_NOT_READY', message: /at least two hosts/ });
  empty.rec.register(1, 'hostB', 3000);
  t.equal(empty.rec.machine.model.storagePools[empty.pool]?.groups.length, 1024, 'and is placed again once they do');
});

t.test('with another SDS down the label is taken and the pool waits; repairPool moves the copies apart later', async (t) => {
  const { rec, pool } = system([null, null, null, null], { withVolume: true });
  const machine = rec.machine;
  rec.apply({ type: 'sdsDown', sdsId: sdsId(3), nowMs: 5000, reason: 'test' });
  rec.register(0, 'hostA', 6000);
  const epoch = machine.model.epoch;
  const groupsBefore = JSON.stringify(machine.model.storagePools[pool]?.groups);
  rec.register(1, 'hostA', 6000);
  t.equal(machine.model.sdss[sdsId(1)]?.host, 'hostA', 'the label is taken');
  t.equal(machine.model.epoch, epoch, 'no plan around the down SDS (it would rebuild what it brings back)');
  t.equal(JSON.stringify(machine.model.storagePools[pool]?.groups), groupsBefore);
  t.notOk(machine.needsRepair(machine.model.storagePools[pool] as StoragePool), 'no repair while an SDS is down');
  rec.register(3, null, 7000);
  t.ok(sameHostGroups(machine, pool) > 0, 'back: some groups still have both copies on hostA');
  t.ok(machine.needsRepair(machine.model.storagePools[pool] as StoragePool), 'needsRepair says so');
  rec.apply({ type: 'repairPool', poolId: pool });
  t.equal(sameHostGroups(machine, pool), 0, 'repairPool moved them apart');
  t.equal(replayed(rec), durableJson(machine.model), 'replay gives the same model');
});

t.test('addSds refuses SDSs of one host in different fault sets (MB_ERR_HOST_FAULT_SET)', async (t) => {
  const rec = new Recorder();
  const pd = rec.apply({ type: 'addProtectionDomain', name: 'pd1' }).id as Id;
  const pd2 = rec.apply({ type: 'addProtectionDomain', name: 'pd2' }).id as Id;
  const fs1 = rec.apply({ type: 'addFaultSet', protectionDomainId: pd, name: 'rack1' }).id as Id;
  const fs2 = rec.apply({ type: 'addFaultSet', protectionDomainId: pd, name: 'rack2' }).id as Id;
  rec.register(0, 'hostA');
  rec.register(1, 'hostA');
  rec.register(2, 'hostB');
  rec.register(3, 'hostA');
  rec.apply({ type: 'addSds', sdsId: sdsId(0), protectionDomainId: pd, faultSetId: fs1 });
  const err = refused(t, rec, { type: 'addSds', sdsId: sdsId(1), protectionDomainId: pd, faultSetId: fs2 }, 'MB_ERR_HOST_FAULT_SET', 'a shard of hostA into rack2 while another is in rack1');
  t.equal(err.httpStatus, 409);
  t.match(err.message, /SDS 'sds1'.*fault set 'rack2'.*SDS 'sds0'.*host 'hostA'.*fault set 'rack1'/, 'names both SDSs, the host and both fault sets');
  t.match(refused(t, rec, { type: 'addSds', sdsId: sdsId(1), protectionDomainId: pd, faultSetId: null }, 'MB_ERR_HOST_FAULT_SET', 'into no fault set while another is in rack1').message, /no fault set.*rack1/);
  rec.apply({ type: 'addSds', sdsId: sdsId(1), protectionDomainId: pd, faultSetId: fs1 });
  t.equal(rec.machine.model.sdss[sdsId(1)]?.faultSetId, fs1, 'into the same fault set: fine');
  rec.apply({ type: 'addSds', sdsId: sdsId(2), protectionDomainId: pd, faultSetId: fs2 });
  t.pass('another host into another fault set: fine');
  rec.apply({ type: 'addSds', sdsId: sdsId(3), protectionDomainId: pd2, faultSetId: null });
  t.pass('a shard of hostA in another protection domain: its fault sets are its own');

  // A registration that changes a label into such a clash is taken: the fault set stays the domain.
  const epoch = rec.machine.model.epoch;
  t.equal(rec.machine.hostFaultSetWarning(sdsId(2)), null, 'no clash yet');
  rec.register(2, 'hostA', 2000);
  t.equal(rec.machine.model.sdss[sdsId(2)]?.host, 'hostA', 'the label is taken');
  t.equal(rec.machine.model.epoch, epoch, 'nothing re-planned: fault sets decide');
  t.match(rec.machine.hostFaultSetWarning(sdsId(2)), /SDS 'sds2' is in fault set 'rack2': SDS 'sds0' of the same host 'hostA' is in fault set 'rack1'/, 'the MDM has a warning to log');
  t.equal(replayed(rec), durableJson(rec.machine.model), 'replay gives the same model');
});

t.test('a pool of fault sets is planned by them whatever the labels', async (t) => {
  const { rec, pool } = system(['hostA', 'hostA', 'hostB', 'hostC'], { withVolume: true, faultSets: ['rack1', 'rack1', 'rack2', 'rack3'] });
  const machine = rec.machine;
  t.equal(groupsOn(machine, pool, sdsId(0), sdsId(1)), 0, 'hostA\'s shards (rack1) never pair');
  const epoch = machine.model.epoch;
  rec.register(2, 'hostC', 2000);
  t.equal(machine.model.epoch, epoch, 'relabelling an SDS in a fault set moves nothing');
  t.equal(sameHostGroups(machine, pool), 0);
});
