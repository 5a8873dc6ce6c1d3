// Proves that the pools' IO priority policies survive an MDM restart and that state written
// before them still loads, with a real MdmService over its real journal (no SDSs needed):
// - a policy set through the service is there after a restart (journal replay) and after
//   the journal is compacted (the snapshot), and the REST view shows it;
// - a journal from before policies (a compacted model whose pools have no policy fields and
//   whose filling groups have no rebalance mark, then a command journaled after) opens: the
//   pools show the start options, fills are rebuilds, and a policy can then be set.
// (An etcd-backed MDM loads its model through the same StateMachine constructor and replays
// the same commands: cluster-member.ts; pool-policy.test.ts checks that path on the JSON.)

import { pino } from 'pino';
import t from 'tap';
import { compactJournal } from '../helpers/mdm-model.js';
import { GiB } from '../../src/common/units.js';
import type { JournalRecord } from '../../src/mdm/command-log.js';
import { fillKindOf, ioPriorityShown } from '../../src/mdm/health.js';
import { Journal } from '../../src/mdm/journal.js';
import { emptyModel, type Id, type StoragePool, type SystemModel } from '../../src/mdm/model.js';
import { renderStoragePool } from '../../src/mdm/rest-objects.js';
import { MdmService } from '../../src/mdm/service.js';
import { StateMachine } from '../../src/mdm/state-machine.js';

const clusterId = '0123456789abcdef';
const secret = Buffer.from('a test cluster secret, long enough');
const log = pino({ level: process.env['TEST_LOG_LEVEL'] ?? 'silent' });
const sdsId = (index: number): Id => (0x5d5000000000 + index).toString(16).padStart(16, '0');
const deviceId = (index: number): Id => (0xde7000000000 + index).toString(16).padStart(16, '0');
const MiB = 1024 * 1024;

const open = (dir: string): Promise<MdmService> =>
  MdmService.open({ dataDir: dir, clusterId, systemName: 'test', secret, log, rebuildBytesPerSecondUnderLoad: 12 * MiB, rebuildChunksInflightMax: 6 });

/** A pool on three SDSs holding a volume, the third SDS out: its groups are filling (rebuilds). */
function degraded(): { machine: StateMachine; pool: Id } {
  const machine = StateMachine.create(clusterId, 'test');
  const pd = machine.apply({ type: 'addProtectionDomain', name: 'pd1' }).id as Id;
  const pool = machine.apply({ type: 'addStoragePool', protectionDomainId: pd, name: 'sp1', volumeGranularityBytes: GiB, pgCount: 16 }).id as Id;
  for (const index of [0, 1, 2, 3]) {
    machine.apply({ type: 'registerSds', sdsId: sdsId(index), name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, nowMs: 1 });
    machine.apply({ type: 'addSds', sdsId: sdsId(index), protectionDomainId: pd, faultSetId: null });
    machine.apply({ type: 'addDevice', deviceId: deviceId(index), sdsId: sdsId(index), storagePoolId: pool, path: '/dev/sdb', name: null, capacityBytes: 100 * GiB });
  }
  machine.apply({ type: 'addVolume', storagePoolId: pool, name: 'vol', sizeBytes: 4 * GiB, volumeType: 'ThinProvisioned', nowMs: 1 });
  machine.apply({ type: 'sdsDown', sdsId: sdsId(3), nowMs: 1, reason: 'test' });
  machine.apply({ type: 'sdsOut', sdsId: sdsId(3) });
  return { machine, pool };
}

t.test('a policy set through the service survives a restart and a compaction', async (t) => {
  const dir = t.testdir();
  await compactJournal(dir, degraded().machine.model, clusterId, log);
  const first = await open(dir);
  const pool = Object.keys(first.state.model.storagePools)[0] as Id;
  await first.execute({ type: 'setIoPriorityPolicy', poolId: pool, kind: 'rebuild', policy: 'limitBandwidth', concurrentIosPerDevice: 2, bandwidthPerDeviceKbps: 30 * 1024 });
  await first.execute({ type: 'setIoPriorityPolicy', poolId: pool, kind: 'rebalance', policy: 'unlimited' });
  const expected = JSON.stringify((first.state.model.storagePools[pool] as StoragePool));
  await first.close();

  const replayed = await open(dir);
  t.equal(JSON.stringify(replayed.state.model.storagePools[pool]), expected, 'after a restart (journal replay): the same pool, policies included');
  t.match(renderStoragePool(replayed.state.model.storagePools[pool] as StoragePool, replayed.fillDefaults()), { rebuildIoPriorityPolicy: 'limitBandwidth', rebuildIoPriorityBwLimitPerDeviceInKbps: 30 * 1024, rebalanceIoPriorityPolicy: 'unlimited', rebuildIoPriorityFromStartOptions: false }, 'shown over REST');
  const model = JSON.parse(JSON.stringify(replayed.state.model)) as SystemModel;
  await replayed.close();
  await compactJournal(dir, model, clusterId, log);
  const compacted = await open(dir);
  t.teardown(() => compacted.close());
  t.equal(JSON.stringify(compacted.state.model.storagePools[pool]), expected, 'after a compaction (the snapshot): the same');
});

t.test('a journal written before policies opens; its pools show the start options and take a policy', async (t) => {
  const dir = t.testdir();
  const { machine, pool } = degraded();
  const old = JSON.parse(JSON.stringify(machine.model)) as SystemModel;
  const oldPool = old.storagePools[pool] as StoragePool;
  t.notOk('rebuildIoPriority' in oldPool || 'rebalanceIoPriority' in oldPool, 'the old model has no policy fields');
  t.ok(oldPool.groups.some((group) => group.syncing === true) && !oldPool.groups.some((group) => 'rebalance' in group), 'groups filling, without marks');
  {
    const { journal } = await Journal.open<JournalRecord, SystemModel>(dir, { log, initialSnapshot: emptyModel(clusterId, 'test') });
    await journal.compact(old);
    // And a command of the old MDM after its snapshot.
    await journal.append({ command: { type: 'renameStoragePool', id: pool, name: 'sp-old' } });
    await journal.close();
  }
  const service = await open(dir);
  t.teardown(() => service.close());
  const loaded = service.state.model.storagePools[pool] as StoragePool;
  t.equal(loaded.name, 'sp-old', 'the journal replayed');
  t.same(ioPriorityShown(loaded, 'rebuild', service.fillDefaults()), { policy: 'favorAppIos', concurrentIosPerDevice: 6, bandwidthPerDeviceKbps: 12 * 1024, isDefault: true }, "shown as this MDM's start options");
  t.ok(loaded.groups.filter((group) => group.syncing === true).every((group) => fillKindOf(group) === 'rebuild'), 'its fills are rebuilds');
  await service.execute({ type: 'setIoPriorityPolicy', poolId: pool, kind: 'rebuild', policy: 'limitNumOfConcurrentIos', concurrentIosPerDevice: 4 });
  t.same(service.state.model.storagePools[pool]?.rebuildIoPriority, { policy: 'limitNumOfConcurrentIos', concurrentIosPerDevice: 4, bandwidthPerDeviceKbps: 10 * 1024 }, 'and takes a policy');
});
