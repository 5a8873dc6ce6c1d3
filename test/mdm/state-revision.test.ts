// Proves what the MDM's per-peer work relies on in the state machine (issue 23):
// - `revision` moves on every command applied or refused, never on an observation, and no two
//   StateMachine instances of a process share a revision;
// - placementMap() is the same object while no command could change the map, and after any
//   command always equals a map built afresh (a new StateMachine on a copy of the model): a
//   command wrongly listed as leaving the map alone would show here as a stale map;
// - sdcMappings() (the index by SDC behind every SDC's view) always lists exactly what a scan
//   of every volume finds, mapping by mapping, including across refused commands.
// The second and third are checked after each step of a seeded random run of commands, good
// and bad (SEED=n replays one).

import t, { type Test } from 'tap';
import { mulberry32 } from '../../src/common/seeded-random.js';
import { GiB } from '../../src/common/units.js';
import type { Id, SystemModel } from '../../src/mdm/model.js';
import { MdmError, StateMachine, type Command } from '../../src/mdm/state-machine.js';

const clusterId = '0123456789abcdef';

function sdsId(index: number): Id {
  return (0x5d5000000000 + index).toString(16).padStart(16, '0');
}

function deviceId(index: number): Id {
  return (0xde7000000000 + index).toString(16).padStart(16, '0');
}

/** One PD, one 64-group pool, `sdsCount` SDSs with one device each. */
function smallSystem(sdsCount: number): { machine: StateMachine; pd: Id; pool: Id } {
  const machine = StateMachine.create(clusterId, 'test');
  const pd = machine.apply({ type: 'addProtectionDomain', name: 'pd1' }).id as Id;
  const pool = machine.apply({ type: 'addStoragePool', protectionDomainId: pd, name: 'sp1', volumeGranularityBytes: GiB, pgCount: 64 }).id as Id;
  for (let index = 0; index < sdsCount; index++) {
    machine.apply({ type: 'registerSds', sdsId: sdsId(index), name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, nowMs: 1000 });
    machine.apply({ type: 'addSds', sdsId: sdsId(index), protectionDomainId: pd, faultSetId: null });
    machine.apply({ type: 'addDevice', deviceId: deviceId(index), sdsId: sdsId(index), storagePoolId: pool, path: '/dev/sdb', name: null, capacityBytes: 100 * GiB });
  }
  return { machine, pd, pool };
}

/** The map as a state machine that never cached one builds it from the same model. */
function freshMap(model: SystemModel): string {
  return JSON.stringify(new StateMachine(structuredClone(model)).placementMap());
}

/** What the mappings of an SDC are by a scan of every volume: `volumeId/accessMode/iopsLimit`, sorted. */
function scannedMappings(model: SystemModel, sdcId: Id): string[] {
  const found: string[] = [];
  for (const volume of Object.values(model.volumes)) {
    for (const mapping of volume.mappings) if (mapping.sdcId === sdcId) found.push(`${volume.id}/${mapping.accessMode}/${mapping.iopsLimit}`);
  }
  return found.sort();
}

t.test('revision: every command, refused ones too, and never an observation', async (t) => {
  const { machine } = smallSystem(3);
  const other = StateMachine.create(clusterId, 'other');
  t.not(other.revision, machine.revision, 'two state machines never share a revision');
  let revision = machine.revision;
  machine.observe({ type: 'sdsHeartbeat', sdsId: sdsId(0), nowMs: 5000, devices: [{ deviceId: deviceId(0), usedBytes: GiB }] });
  machine.observe({ type: 'connectionsLost' });
  t.equal(machine.revision, revision, 'observations leave it');
  machine.apply({ type: 'addProtectionDomain', name: 'pd2' });
  t.ok(machine.revision > revision, 'an applied command moves it');
  revision = machine.revision;
  t.throws(() => machine.apply({ type: 'addProtectionDomain', name: 'pd2' }), { code: 'MB_ERR_NAME_TAKEN' });
  t.ok(machine.revision > revision, 'a refused command moves it too');
  revision = machine.revision;
  machine.replay({ type: 'renameSds', id: sdsId(0), name: 'renamed' });
  t.ok(machine.revision > revision, 'so does a replayed one');
});

t.test('placementMap: one object while the map cannot have changed', async (t) => {
  const { machine, pool } = smallSystem(3);
  const map = machine.placementMap();
  t.equal(machine.placementMap(), map, 'asked twice: the same object');
  machine.observe({ type: 'sdsHeartbeat', sdsId: sdsId(1), nowMs: 5000, devices: [] });
  const volume = machine.apply({ type: 'addVolume', storagePoolId: pool, name: 'v1', sizeBytes: GiB, volumeType: 'ThinProvisioned', nowMs: 1 }).id as Id;
  const sdc = machine.apply({ type: 'registerSdc', guid: 'guid-0000-1111', name: 'sdc1', nowMs: 1 }).id as Id;
  machine.apply({ type: 'addMappedSdc', volumeId: volume, sdcId: sdc, accessMode: 'ReadWrite', allowMultipleMappings: false });
  t.equal(machine.placementMap(), map, 'kept across observations, a volume, an SDC and a mapping (none is in the map)');
  machine.apply({ type: 'sdsDown', sdsId: sdsId(2), nowMs: 6000, reason: 'test' });
  const after = machine.placementMap();
  t.not(after, map, 'a failure makes a new map');
  t.equal(after.epoch, map.epoch + 1);
  t.equal(JSON.stringify(after), freshMap(machine.model), 'equal to one built afresh');
  t.equal(JSON.stringify(map).includes(`"epoch":${map.epoch},`), true, 'the map returned before is not changed by later commands');
});

/**
 * One seeded run of `steps` random commands, checking the map and the index after each.
 * Returns how many commands of each type were applied and refused.
 */
function seededRun(t: Test, seed: number, steps: number): Map<string, number> {
  const random = mulberry32(seed);
  const pick = <T>(values: readonly T[]): T | undefined => values[Math.floor(random() * values.length)];
  const { machine, pd, pool } = smallSystem(4);
  for (let index = 4; index < 6; index++) machine.apply({ type: 'registerSds', sdsId: sdsId(index), name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, nowMs: 1000 });
  for (let index = 0; index < 4; index++) machine.apply({ type: 'registerSdc', guid: `guid-${index}-0000`, name: `sdc${index}`, nowMs: 1 });
  // SDCs once known are asked about after they are removed too: the index must not keep them.
  const sdcsSeen = new Set<Id>();
  let nowMs = 10_000;
  let volumeCount = 0;
  const kinds = new Map<string, number>();
  for (let step = 0; step < steps; step++) {
    nowMs += 1000;
    const model = machine.model;
    const sdcs = Object.keys(model.sdcs);
    for (const sdcId of sdcs) sdcsSeen.add(sdcId);
    const volumes = Object.keys(model.volumes);
    const sdsIds = Object.keys(model.sdss);
    const barrier = model.snapshotBarrier;
    const syncing = (model.storagePools[pool]?.groups ?? []).flatMap((group, pgIndex) =>
      group.syncing === true && group.secondaryDevice !== null ? [{ pgIndex, secondaryDevice: group.secondaryDevice, orderEpoch: model.epoch }] : [],
    );
    const candidates: Array<() => Command | null> = [
      () => ({ type: 'addVolume', storagePoolId: pool, name: `v${volumeCount++}`, sizeBytes: GiB, volumeType: 'ThinProvisioned', nowMs }),
      () => ({ type: 'removeVolume', id: pick(volumes) ?? 'none', removeMode: random() < 0.5 ? 'ONLY_ME' : 'INCLUDING_DESCENDANTS' }),
      () => ({ type: 'addMappedSdc', volumeId: pick(volumes) ?? 'none', sdcId: pick(sdcs) ?? 'none', accessMode: pick(['ReadWrite', 'ReadOnly'] as const) ?? 'ReadWrite', allowMultipleMappings: random() < 0.5 }),
      () => ({ type: 'addMappedSdc', volumeId: pick(volumes) ?? 'none', sdcId: pick(sdcs) ?? 'none', accessMode: 'ReadOnly', allowMultipleMappings: true }),
      () => ({ type: 'removeMappedSdc', volumeId: pick(volumes) ?? 'none', sdcId: pick(sdcs) ?? 'none' }),
      () => ({ type: 'setMappedSdcLimits', volumeId: pick(volumes) ?? 'none', sdcId: pick(sdcs) ?? 'none', iopsLimit: pick([0, 100, 2000]) ?? 0, bandwidthLimitKbps: 0 }),
      () => ({ type: 'removeSdc', id: pick(sdcs) ?? 'none' }),
      () => ({ type: 'registerSdc', guid: `guid-${Math.floor(random() * 4)}-0000`, name: null, nowMs }),
      () => ({ type: 'setVolumeAccessModeLimit', id: pick(volumes) ?? 'none', accessModeLimit: pick(['ReadWrite', 'ReadOnly'] as const) ?? 'ReadWrite' }),
      () => ({ type: 'sdsDown', sdsId: pick(sdsIds) ?? 'none', nowMs, reason: 'random' }),
      () => ({ type: 'sdsOut', sdsId: pick(sdsIds) ?? 'none' }),
      () => {
        const index = Math.floor(random() * 6);
        return { type: 'registerSds', sdsId: sdsId(index), name: `sds${index}`, address: `127.0.0.1:${random() < 0.2 ? 8000 + index : 7000 + index}`, nowMs, host: random() < 0.2 ? `host${index % 3}` : null };
      },
      () => {
        const index = 4 + Math.floor(random() * 2);
        return { type: 'addSds', sdsId: sdsId(index), protectionDomainId: pd, faultSetId: null };
      },
      () => {
        const index = 4 + Math.floor(random() * 2);
        return { type: 'addDevice', deviceId: deviceId(index * 10 + step), sdsId: sdsId(index), storagePoolId: pool, path: `/dev/sd${step}`, name: null, capacityBytes: 100 * GiB };
      },
      () => ({ type: 'removeDevice', id: pick(Object.keys(model.devices)) ?? 'none' }),
      () => ({ type: 'deviceFailed', deviceId: pick(Object.keys(model.devices)) ?? 'none', reason: 'random' }),
      () => ({ type: 'repairPool', poolId: pool }),
      () => (syncing.length === 0 ? null : { type: 'copiesSynced', poolId: pool, groups: syncing }),
      () => (barrier !== null ? null : { type: 'beginSnapshot', defs: [{ volumeId: pick(volumes) ?? 'none', name: `s${volumeCount++}`, readOnly: random() < 0.5 }], nowMs }),
      () => (barrier === null ? null : random() < 0.7 ? { type: 'commitSnapshot', groupId: barrier.groupId, nowMs } : { type: 'abortSnapshot', groupId: barrier.groupId, reason: 'random' }),
      () => {
        const volume = model.volumes[pick(volumes) ?? 'none'];
        const source = pick(Object.values(model.volumes).filter((entry) => entry.vtreeId === volume?.vtreeId && entry.id !== volume?.id));
        return { type: 'overwriteVolumeContent', volumeId: volume?.id ?? 'none', sourceVolumeId: source?.id ?? 'none' };
      },
      () => ({ type: 'setScrubPolicy', poolId: pool, mode: pick(['off', 'deviceOnly'] as const) ?? 'off', rateKBps: pick([1024, 2048]) ?? 1024 }),
      () => ({ type: 'renameVolume', id: pick(volumes) ?? 'none', name: `r${volumeCount++}` }),
    ];
    const command = (pick(candidates) as () => Command | null)();
    if (command === null) continue;
    const mapBefore = machine.placementMap();
    const revisionBefore = machine.revision;
    let outcome = 'applied';
    try {
      machine.apply(command);
    } catch (err) {
      if (!(err instanceof MdmError)) throw err;
      outcome = 'refused';
    }
    kinds.set(`${command.type} ${outcome}`, (kinds.get(`${command.type} ${outcome}`) ?? 0) + 1);
    if (machine.revision <= revisionBefore) t.fail(`step ${step}: ${command.type} did not move the revision`);
    const map = machine.placementMap();
    const fresh = freshMap(machine.model);
    if (JSON.stringify(map) !== fresh) {
      t.fail(`seed ${seed} step ${step}: ${command.type} (${outcome}) left a map that is not the model's (same object as before: ${map === mapBefore})`);
      break;
    }
    for (const sdcId of new Set([...sdcsSeen, ...Object.keys(machine.model.sdcs)])) {
      const indexed = machine
        .sdcMappings(sdcId)
        .map(({ volume, mapping }) => `${volume.id}/${mapping.accessMode}/${mapping.iopsLimit}`)
        .sort();
      const scanned = scannedMappings(machine.model, sdcId);
      if (JSON.stringify(indexed) !== JSON.stringify(scanned)) {
        t.fail(`seed ${seed} step ${step}: after ${command.type} (${outcome}) SDC ${sdcId} is indexed with ${indexed.length} mapping(s), the volumes hold ${scanned.length}`);
        break;
      }
    }
  }
  t.comment(`seed ${seed}: ${[...kinds].sort().map(([kind, count]) => `${kind}: ${count}`).join(', ')}`);
  return kinds;
}

/** What a run must reach for its checks to mean something: maps kept and changed, mappings made and removed. */
const kindsNeeded = ['addMappedSdc applied', 'removeMappedSdc applied', 'sdsDown applied', 'registerSds applied', 'addVolume applied', 'removeVolume applied', 'commitSnapshot applied', 'overwriteVolumeContent applied'];

t.test('seeded runs: the cached map and the SDC index always match a fresh look at the model', async (t) => {
  for (const seed of [1, 2]) {
    const kinds = seededRun(t, seed, 1000);
    for (const kind of kindsNeeded) t.ok((kinds.get(kind) ?? 0) > 0, `seed ${seed} applied ${kind.split(' ')[0]}`);
  }
  // A fresh seed each run (SEED=n replays it): its coverage is said, not failed.
  const seed = process.env['SEED'] === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(process.env['SEED']);
  t.comment(`SEED=${seed}`);
  const kinds = seededRun(t, seed, 1000);
  const missed = kindsNeeded.filter((kind) => (kinds.get(kind) ?? 0) === 0);
  if (missed.length > 0) t.comment(`seed ${seed} did not reach: ${missed.join(', ')}`);
});

t.test('sdcMappings: in creation order, only what is still mapped', async (t) => {
  const { machine, pool } = smallSystem(3);
  const sdc = machine.apply({ type: 'registerSdc', guid: 'guid-0000-1111', name: 'sdc1', nowMs: 1 }).id as Id;
  const first = machine.apply({ type: 'addVolume', storagePoolId: pool, name: 'first', sizeBytes: GiB, volumeType: 'ThinProvisioned', nowMs: 1 }).id as Id;
  const second = machine.apply({ type: 'addVolume', storagePoolId: pool, name: 'second', sizeBytes: GiB, volumeType: 'ThinProvisioned', nowMs: 2 }).id as Id;
  t.same(machine.sdcMappings(sdc), [], 'nothing mapped yet');
  machine.apply({ type: 'addMappedSdc', volumeId: second, sdcId: sdc, accessMode: 'ReadWrite', allowMultipleMappings: false });
  machine.apply({ type: 'addMappedSdc', volumeId: first, sdcId: sdc, accessMode: 'ReadOnly', allowMultipleMappings: false });
  t.same(
    machine.sdcMappings(sdc).map(({ volume, mapping }) => [volume.name, mapping.accessMode]),
    [
      ['first', 'ReadOnly'],
      ['second', 'ReadWrite'],
    ],
    'oldest volume first, whatever the order of mapping',
  );
  t.ok(machine.isMapped(first, sdc));
  machine.apply({ type: 'removeMappedSdc', volumeId: first, sdcId: sdc });
  t.notOk(machine.isMapped(first, sdc));
  t.same(
    machine.sdcMappings(sdc).map(({ volume }) => volume.name),
    ['second'],
    'an unmapped volume leaves the list',
  );
  t.throws(() => machine.apply({ type: 'removeSdc', id: sdc }), { code: 'MB_ERR_SDC_MAPPED', message: /'second'/ }, 'removing the SDC names what is still mapped');
});
