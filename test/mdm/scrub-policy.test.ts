// Proves the pools' scrub policy in the MDM (docs/integrity.md), with the real state machine
// and a real MdmService over its real journal (no SDSs needed):
// - setScrubPolicy checks mode and rate by name and range, and a refusal changes nothing; a
//   rate left out keeps the pool's (or the default on a pool never set), so turning the scrub
//   off and on again keeps the administrator's rate;
// - a pool never set has the default (limits.ts) and sends no policy in the map (the map an
//   SDS got before the scrub); a set policy is in the pool's map entry, and the map's epoch
//   moves when, and only when, the policy of a pool in the map changes;
// - the policy survives an MDM restart (journal replay) and a compaction (the snapshot the
//   journal and etcd hold), and a model from before the scrub loads with the default;
// - replaying the same commands on a fresh machine (what an etcd Slave or a new Master does,
//   cluster-member.ts) gives the same model.

import { pino } from 'pino';
import t from 'tap';
import { compactJournal, recordingMachine, type RecordingMachine } from '../helpers/mdm-model.js';
import { scrubModeDefault, scrubRateKBpsDefault, scrubRateKBpsMax, scrubRateKBpsMin } from '../../src/common/limits.js';
import { GiB } from '../../src/common/units.js';
import { scrubPolicyOf, type Id, type StoragePool, type SystemModel } from '../../src/mdm/model.js';
import { MdmService } from '../../src/mdm/service.js';
import { StateMachine, type Command } from '../../src/mdm/state-machine.js';

const clusterId = '0123456789abcdef';
const secret = Buffer.from('a test cluster secret, long enough');
const log = pino({ level: process.env['TEST_LOG_LEVEL'] ?? 'silent' });
const sdsId = (index: number): Id => (0x5d5000000000 + index).toString(16).padStart(16, '0');
const deviceId = (index: number): Id => (0xde7000000000 + index).toString(16).padStart(16, '0');

/** A pool on three SDSs (so in the map) and an empty pool (not in the map); every command kept, for replay. */
function cluster(): RecordingMachine & { pool: Id; emptyPool: Id } {
  const { machine, commands, run } = recordingMachine(clusterId);
  const pd = run({ type: 'addProtectionDomain', name: 'pd1' }).id as Id;
  const pool = run({ type: 'addStoragePool', protectionDomainId: pd, name: 'sp1', volumeGranularityBytes: GiB, pgCount: 16 }).id as Id;
  const emptyPool = run({ type: 'addStoragePool', protectionDomainId: pd, name: 'sp2', volumeGranularityBytes: GiB, pgCount: 16 }).id as Id;
  for (const index of [0, 1, 2]) {
    run({ type: 'registerSds', sdsId: sdsId(index), name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, nowMs: 1 });
    run({ type: 'addSds', sdsId: sdsId(index), protectionDomainId: pd, faultSetId: null });
    run({ type: 'addDevice', deviceId: deviceId(index), sdsId: sdsId(index), storagePoolId: pool, path: '/dev/sdb', name: null, capacityBytes: 100 * GiB });
  }
  return { machine, pool, emptyPool, commands, run };
}

const poolOf = (machine: StateMachine, pool: Id): StoragePool => machine.model.storagePools[pool] as StoragePool;

t.test('a pool never set: the default policy, and no policy in the map', async (t) => {
  const { machine, pool } = cluster();
  t.same(scrubPolicyOf(poolOf(machine, pool)), { mode: scrubModeDefault, rateKBps: scrubRateKBpsDefault, isDefault: true });
  t.same({ mode: scrubModeDefault, rateKBps: scrubRateKBpsDefault }, { mode: 'dataComparison', rateKBps: 1024 }, "ScaleIO's scanner default");
  const entry = machine.placementMap().pools[pool];
  t.ok(entry !== undefined, 'the pool is in the map');
  t.notOk(entry !== undefined && 'scrub' in entry, 'without a scrub field: the SDS applies the default');
});

t.test('setScrubPolicy: checked by name and range; a refusal changes nothing', async (t) => {
  const { machine, pool } = cluster();
  const before = JSON.stringify(machine.model);
  const cases: Array<[string, Command, RegExp]> = [
    ['an unknown mode', { type: 'setScrubPolicy', poolId: pool, mode: 'full' as 'off' }, /^mode: must be 'off', 'deviceOnly', 'dataComparison'/],
    ['a rate below the minimum', { type: 'setScrubPolicy', poolId: pool, mode: 'deviceOnly', rateKBps: scrubRateKBpsMin - 1 }, /^rateKBps: must be an integer from 64 to 1048576/],
    ['a rate above the maximum', { type: 'setScrubPolicy', poolId: pool, mode: 'deviceOnly', rateKBps: scrubRateKBpsMax + 1 }, /^rateKBps/],
    ['a fractional rate', { type: 'setScrubPolicy', poolId: pool, mode: 'dataComparison', rateKBps: 100.5 }, /^rateKBps/],
  ];
  for (const [what, command, message] of cases) {
    t.throws(() => machine.apply(command), { code: 'MB_ERR_INVALID_ARGUMENT', message }, what);
  }
  t.throws(() => machine.apply({ type: 'setScrubPolicy', poolId: 'ffffffffffffffff', mode: 'off' }), { code: 'MB_ERR_NOT_FOUND' }, 'an unknown pool');
  t.equal(JSON.stringify(machine.model), before, 'nothing changed');
});

t.test('the policy goes into the map; the epoch moves when it changes, not otherwise', async (t) => {
  const { machine, pool, emptyPool, run } = cluster();
  const epoch0 = machine.model.epoch;
  t.same(run({ type: 'setScrubPolicy', poolId: pool, mode: 'deviceOnly', rateKBps: 2048 }), { epochChanged: true }, 'a change: a new map');
  t.equal(machine.model.epoch, epoch0 + 1);
  t.same(machine.placementMap().pools[pool]?.scrub, { mode: 'deviceOnly', rateKBps: 2048 }, 'in the pool entry of the map');
  t.same(run({ type: 'setScrubPolicy', poolId: pool, mode: 'deviceOnly', rateKBps: 2048 }), { epochChanged: false }, 'the same policy again: no new map');
  t.equal(machine.model.epoch, epoch0 + 1);

  // Off keeps the rate; on again without a rate gets it back.
  run({ type: 'setScrubPolicy', poolId: pool, mode: 'off' });
  t.same(poolOf(machine, pool).scrub, { mode: 'off', rateKBps: 2048 }, 'off keeps the rate');
  t.same(machine.placementMap().pools[pool]?.scrub, { mode: 'off', rateKBps: 2048 }, 'and the SDSs are told it is off');
  run({ type: 'setScrubPolicy', poolId: pool, mode: 'dataComparison' });
  t.same(poolOf(machine, pool).scrub, { mode: 'dataComparison', rateKBps: 2048 });
  t.equal(machine.model.epoch, epoch0 + 3);

  // A pool never set, given a mode only: the default rate.
  t.same(run({ type: 'setScrubPolicy', poolId: emptyPool, mode: 'deviceOnly' }), { epochChanged: false }, 'a pool with no devices is in no map: no new epoch');
  t.same(poolOf(machine, emptyPool).scrub, { mode: 'deviceOnly', rateKBps: scrubRateKBpsDefault });
  t.equal(machine.placementMap().pools[emptyPool], undefined);
});

t.test('replaying the commands on a fresh machine gives the same model (an etcd Slave, a new Master)', async (t) => {
  const { machine, pool, commands, run } = cluster();
  run({ type: 'setScrubPolicy', poolId: pool, mode: 'deviceOnly', rateKBps: 512 });
  run({ type: 'setScrubPolicy', poolId: pool, mode: 'off' });
  const replayed = StateMachine.create(clusterId, 'test');
  for (const command of commands) replayed.apply(JSON.parse(JSON.stringify(command)) as Command);
  t.equal(JSON.stringify(replayed.model), JSON.stringify(machine.model));
  // And the model as JSON (the journal's snapshot, etcd's key) loads as it was.
  const loaded = new StateMachine(JSON.parse(JSON.stringify(machine.model)) as SystemModel);
  t.same(poolOf(loaded, pool).scrub, { mode: 'off', rateKBps: 512 });
  t.same(loaded.placementMap().pools[pool]?.scrub, { mode: 'off', rateKBps: 512 });
});

const open = (dir: string): Promise<MdmService> => MdmService.open({ dataDir: dir, clusterId, systemName: 'test', secret, log });

t.test('through the service: survives a restart (journal replay) and a compaction; an old journal loads with the default', async (t) => {
  const dir = t.testdir();
  const { machine, pool } = cluster();
  const old = JSON.parse(JSON.stringify(machine.model)) as SystemModel;
  t.notOk('scrub' in (old.storagePools[pool] as StoragePool), 'a model from before the scrub has no field');
  await compactJournal(dir, old, clusterId, log);
  const first = await open(dir);
  t.same(scrubPolicyOf(first.state.model.storagePools[pool] as StoragePool).isDefault, true, 'the old pool loads with the default');
  const epoch = first.state.model.epoch;
  const applied = await first.execute({ type: 'setScrubPolicy', poolId: pool, mode: 'deviceOnly', rateKBps: 4096 });
  t.equal(applied.epochChanged, true);
  t.same(first.sdcView('ffffffffffffffff').map.pools[pool]?.scrub, { mode: 'deviceOnly', rateKBps: 4096 }, 'the map the service sends carries it');
  await first.close();

  const replayed = await open(dir);
  t.same(replayed.state.model.storagePools[pool]?.scrub, { mode: 'deviceOnly', rateKBps: 4096 }, 'after a restart (journal replay)');
  t.equal(replayed.state.model.epoch, epoch + 1, 'and the epoch it had');
  const model = JSON.parse(JSON.stringify(replayed.state.model)) as SystemModel;
  await replayed.close();
  await compactJournal(dir, model, clusterId, log);
  const compacted = await open(dir);
  t.teardown(() => compacted.close());
  t.same(compacted.state.model.storagePools[pool]?.scrub, { mode: 'deviceOnly', rateKBps: 4096 }, 'after a compaction (the snapshot)');
  t.same(compacted.state.placementMap().pools[pool]?.scrub, { mode: 'deviceOnly', rateKBps: 4096 });
});
