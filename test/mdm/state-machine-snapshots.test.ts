// Proves the state machine's snapshot semantics (docs/snapshots.md) command by command:
// the generations a snapshot, a restore and each removal mode give, exactly; the barrier's
// two phases (the V-Trees frozen in the map between them, the epoch moving at each); the
// limits (snapshots per V-Tree, generations per tree, volumes per group); read-only
// snapshots' mappings; pruning. Bad input is refused with a stable code and changes nothing
// (the model is compared before and after). A seeded random run keeps a tiny SDS of its own
// (chunk values by generation, read through generationPath) and checks that no command
// changes the bytes a volume reads except as its semantics say, and that every map it
// produces passes the SDSs' own map check. Every run is replayed to prove determinism.
// MESHBLOCK_SNAP_SEED=n replays the random run.

import t, { type Test } from 'tap';
import { snapshotsPerVtreeDefault, snapshotsPerVtreeMax, snapshotGroupVolumesMax, vtreeGenerationsMax } from '../../src/common/limits.js';
import { mulberry32 } from '../../src/common/seeded-random.js';
import { GiB } from '../../src/common/units.js';
import { durableJson, emptyModel, type Id, type SystemModel } from '../../src/mdm/model.js';
import { StateMachine, type Applied, type Command } from '../../src/mdm/state-machine.js';
import { generationPath, parsePlacementMap, vtreeOf } from '../../src/wire/placement.js';

const clusterId = '0123456789abcdef';
const sdsId = (index: number): Id => (0x5d5000000000 + index).toString(16).padStart(16, '0');
const deviceId = (index: number): Id => (0xde7000000000 + index).toString(16).padStart(16, '0');

/** Applies commands and keeps them, so that a test can replay the run and compare. */
class Run {
  readonly machine = StateMachine.create(clusterId, 'test');
  readonly commands: Command[] = [];
  pool = '';

  apply(command: Command): Applied {
    const applied = this.machine.apply(command);
    this.commands.push(JSON.parse(JSON.stringify(command)) as Command);
    return applied;
  }

  get model(): SystemModel {
    return this.machine.model;
  }

  replayed(): string {
    const other = StateMachine.create(clusterId, 'test');
    for (const command of this.commands) other.replay(command);
    return durableJson(other.model);
  }

  volume(name: string, thick = false): Id {
    return this.apply({ type: 'addVolume', storagePoolId: this.pool, name, sizeBytes: 8 * GiB, volumeType: thick ? 'ThickProvisioned' : 'ThinProvisioned', nowMs: 5 }).id as Id;
  }

  /** Both phases at once, as snapshotVolumes does when every SDS confirms. */
  snapshot(defs: Array<{ volumeId: Id; name: string; readOnly?: boolean }>, nowMs = 7): { groupId: Id; ids: Id[] } {
    const groupId = this.apply({ type: 'beginSnapshot', defs: defs.map((def) => ({ readOnly: false, ...def })), nowMs }).id as Id;
    const committed = this.apply({ type: 'commitSnapshot', groupId, nowMs });
    return { groupId, ids: committed.ids ?? [] };
  }

  byName(name: string): Id {
    const volume = Object.values(this.model.volumes).find((entry) => entry.name === name);
    if (volume === undefined) throw new Error(`no volume ${name}`);
    return volume.id;
  }

  generations(volumeId: Id): Record<string, number | null> {
    const volume = this.model.volumes[volumeId];
    return { ...(this.model.vtrees[volume?.vtreeId ?? '']?.generations ?? {}) };
  }

  head(volumeId: Id): number {
    return this.model.volumes[volumeId]?.generation ?? -1;
  }

  /** The generations a read of the volume looks in, as an SDS computes it from the map. */
  path(volumeId: Id): number[] {
    const volume = this.model.volumes[volumeId];
    if (volume === undefined) return [];
    return generationPath(vtreeOf(this.machine.placementMap(), volume.vtreeId), volume.generation);
  }
}

function system(): Run {
  const run = new Run();
  const pd = run.apply({ type: 'addProtectionDomain', name: 'pd1' }).id as Id;
  run.pool = run.apply({ type: 'addStoragePool', protectionDomainId: pd, name: 'sp1', volumeGranularityBytes: GiB, pgCount: 16 }).id as Id;
  for (let index = 0; index < 3; index++) {
    run.apply({ type: 'registerSds', sdsId: sdsId(index), name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, nowMs: 1000 });
    run.apply({ type: 'addSds', sdsId: sdsId(index), protectionDomainId: pd, faultSetId: null });
    run.apply({ type: 'addDevice', deviceId: deviceId(index), sdsId: sdsId(index), storagePoolId: run.pool, path: '/dev/sdb', name: null, capacityBytes: 1000 * GiB });
  }
  return run;
}

function refused(t: Test, run: Run, command: Command, code: string, what: string): void {
  const before = JSON.stringify(run.model);
  t.throws(() => run.machine.apply(command), { code }, what);
  t.equal(JSON.stringify(run.model), before, `${what}: nothing changed`);
}

t.test('a snapshot: generations as docs/snapshots.md says, the barrier frozen in the map between the phases', async (t) => {
  const run = system();
  const volume = run.volume('vol1');
  const epoch0 = run.model.epoch;
  t.same(run.generations(volume), { '0': null }, 'a new volume is a tree of the one generation 0');
  t.equal(run.machine.placementMap().vtrees, undefined, 'a system of plain volumes sends no vtrees');

  const begun = run.apply({ type: 'beginSnapshot', defs: [{ volumeId: volume, name: 'snap1', readOnly: false }], nowMs: 10 });
  const groupId = begun.id as Id;
  t.ok(begun.epochChanged && run.model.epoch === epoch0 + 1, 'beginSnapshot moves the epoch (E1)');
  t.same(run.model.snapshotBarrier, { groupId, defs: [{ volumeId: volume, name: 'snap1', readOnly: false }], startedMs: 10 }, 'the barrier is recorded');
  const frozenMap = run.machine.placementMap();
  const vtreeId = run.model.volumes[volume]?.vtreeId as Id;
  t.same(frozenMap.vtrees, { [vtreeId]: { generations: { '0': null }, heads: [{ generation: 0, snapshot: false }], frozen: true } }, 'E1 lists the tree, frozen, even with one generation');
  t.same(parsePlacementMap(JSON.parse(JSON.stringify(frozenMap))).vtrees?.[vtreeId]?.frozen, true, 'the SDSs accept the frozen map');
  t.equal(Object.keys(run.model.volumes).length, 1, 'nothing is created before the commit');

  const committed = run.apply({ type: 'commitSnapshot', groupId, nowMs: 11 });
  t.ok(committed.epochChanged && run.model.epoch === epoch0 + 2, 'commitSnapshot moves the epoch (E2)');
  t.equal(committed.id, groupId);
  const snapshot = committed.ids?.[0] as Id;
  t.same(run.model.volumes[snapshot], {
    id: snapshot,
    name: 'snap1',
    storagePoolId: run.pool,
    vtreeId,
    sizeBytes: 8 * GiB,
    volumeType: 'Snapshot',
    mappings: [],
    creationTimeMs: 11,
    ancestorVolumeId: volume,
    generation: 2,
    accessModeLimit: 'ReadWrite',
    snapshotGroupId: groupId,
  }, 'the snapshot is a volume of the same tree');
  t.same(run.generations(volume), { '0': null, '1': 0, '2': 0 }, 'the volume heads 1, the snapshot 2, both children of the frozen 0');
  t.equal(run.head(volume), 1);
  t.equal(run.model.snapshotBarrier, null, 'the barrier is over');
  const map = run.machine.placementMap();
  t.same(map.vtrees, { [vtreeId]: { generations: { '0': null, '1': 0, '2': 0 }, heads: [{ generation: 1, snapshot: false }, { generation: 2, snapshot: true }] } }, 'E2: the tree unfrozen, with both heads');
  t.ok(parsePlacementMap(JSON.parse(JSON.stringify(map))), 'the SDSs accept it');
  t.same(run.path(snapshot), [2, 0], 'the snapshot reads its own generation, then the shared one');

  // A snapshot of the snapshot: its head 2 is frozen and shared.
  const { ids } = run.snapshot([{ volumeId: snapshot, name: 'snap1.1' }]);
  t.same(run.generations(volume), { '0': null, '1': 0, '2': 0, '3': 2, '4': 2 }, 'a snapshot of a snapshot: its head 2 gets the children 3 (itself) and 4');
  t.equal(run.model.volumes[ids[0] as Id]?.ancestorVolumeId, snapshot);
  t.equal(run.head(snapshot), 3);
  t.equal(run.replayed(), durableJson(run.model), 'the journal replays to the same model');
});

t.test('a group: one barrier over several trees, snapshots in the order asked; an abort creates nothing', async (t) => {
  const run = system();
  const a = run.volume('a');
  const b = run.volume('b', true);
  const { groupId, ids } = run.snapshot([{ volumeId: b, name: 'b-s' }, { volumeId: a, name: 'a-s', readOnly: true }]);
  t.same(ids.map((id) => run.model.volumes[id]?.name), ['b-s', 'a-s'], 'ids in the order of the defs');
  t.ok(ids.every((id) => run.model.volumes[id]?.snapshotGroupId === groupId), 'both in the group');
  t.equal(run.model.volumes[ids[0] as Id]?.volumeType, 'Snapshot', "a thick volume's snapshot is a snapshot (thin)");
  t.equal(run.model.volumes[ids[1] as Id]?.accessModeLimit, 'ReadOnly', 'a read-only snapshot');
  const capacity = run.machine.poolCapacity(run.pool);
  t.equal(capacity.thickReservedBytes, 8 * GiB, 'the snapshot of the thick volume reserves nothing');
  t.equal(capacity.snapshotProvisionedBytes, 16 * GiB, 'snapshots are provisioned apart');

  const before = durableJson(run.model);
  const epoch = run.model.epoch;
  const other = run.apply({ type: 'beginSnapshot', defs: [{ volumeId: a, name: 'a-s2', readOnly: false }], nowMs: 20 }).id as Id;
  refused(t, run, { type: 'abortSnapshot', groupId: 'ffffffffffffffff', reason: 'x' }, 'MB_ERR_SNAPSHOT_BARRIER', 'aborting another group than the one under way');
  const aborted = run.apply({ type: 'abortSnapshot', groupId: other, reason: 'an SDS did not answer' });
  t.ok(aborted.epochChanged && run.model.epoch === epoch + 2, 'begin and abort each move the epoch');
  t.equal(durableJson({ ...run.model, epoch, idCounter: run.model.idCounter - 1 }), before, 'after an abort only the epoch and the id counter moved');
  t.notOk(run.machine.placementMap().vtrees?.[run.model.volumes[a]?.vtreeId as Id]?.frozen, 'unfrozen');
  refused(t, run, { type: 'commitSnapshot', groupId: other, nowMs: 21 }, 'MB_ERR_SNAPSHOT_BARRIER', 'committing an aborted group');
  t.equal(run.replayed(), durableJson(run.model));
});

t.test('bad input to a snapshot is refused and changes nothing', async (t) => {
  const run = system();
  const volume = run.volume('vol1');
  const other = run.volume('vol2');
  const def = (name: string, volumeId = volume): { volumeId: Id; name: string; readOnly: boolean } => ({ volumeId, name, readOnly: false });
  refused(t, run, { type: 'beginSnapshot', defs: [def('s', 'ffffffffffffffff')], nowMs: 1 }, 'MB_ERR_NOT_FOUND', 'a snapshot of a missing volume');
  refused(t, run, { type: 'beginSnapshot', defs: [def('s'), def('t', 'ffffffffffffffff')], nowMs: 1 }, 'MB_ERR_NOT_FOUND', 'a group with one missing volume: nothing of it');
  refused(t, run, { type: 'beginSnapshot', defs: [], nowMs: 1 }, 'MB_ERR_INVALID_ARGUMENT', 'no volume');
  refused(t, run, { type: 'beginSnapshot', defs: Array.from({ length: snapshotGroupVolumesMax + 1 }, (_, index) => def(`s${index}`)), nowMs: 1 }, 'MB_ERR_INVALID_ARGUMENT', 'more volumes than a group holds');
  refused(t, run, { type: 'beginSnapshot', defs: [def('s'), def('t')], nowMs: 1 }, 'MB_ERR_INVALID_ARGUMENT', 'the same volume twice');
  refused(t, run, { type: 'beginSnapshot', defs: [def('s'), def('s', other)], nowMs: 1 }, 'MB_ERR_NAME_TAKEN', 'two snapshots of one name');
  refused(t, run, { type: 'beginSnapshot', defs: [def('vol2')], nowMs: 1 }, 'MB_ERR_NAME_TAKEN', "a volume's name");
  refused(t, run, { type: 'beginSnapshot', defs: [def('bad name')], nowMs: 1 }, 'MB_ERR_INVALID_ARGUMENT', 'a name with a space');
  refused(t, run, { type: 'beginSnapshot', defs: [{ volumeId: volume, name: 's', readOnly: 'yes' as unknown as boolean }], nowMs: 1 }, 'MB_ERR_INVALID_ARGUMENT', 'readOnly not a boolean');
  refused(t, run, { type: 'commitSnapshot', groupId: 'ffffffffffffffff', nowMs: 1 }, 'MB_ERR_SNAPSHOT_BARRIER', 'a commit with no barrier under way');

  // A barrier under way: a second one, and what would undo its checks, wait.
  const groupId = run.apply({ type: 'beginSnapshot', defs: [def('pending')], nowMs: 1 }).id as Id;
  refused(t, run, { type: 'beginSnapshot', defs: [def('s', other)], nowMs: 2 }, 'MB_ERR_SNAPSHOT_BARRIER', 'a second barrier while one is under way');
  refused(t, run, { type: 'removeVolume', id: volume }, 'MB_ERR_SNAPSHOT_BARRIER', 'removing a volume of a frozen tree');
  refused(t, run, { type: 'addVolume', storagePoolId: run.pool, name: 'pending', sizeBytes: GiB, volumeType: 'ThinProvisioned', nowMs: 2 }, 'MB_ERR_NAME_TAKEN', "a volume taking a pending snapshot's name");
  refused(t, run, { type: 'renameVolume', id: other, name: 'pending' }, 'MB_ERR_NAME_TAKEN', "a rename to a pending snapshot's name");
  refused(t, run, { type: 'removeSnapshotGroup', groupId }, 'MB_ERR_SNAPSHOT_BARRIER', 'removing the group being taken');
  t.ok(run.apply({ type: 'removeVolume', id: other }).ids, 'a volume of another tree goes meanwhile');
  run.apply({ type: 'commitSnapshot', groupId, nowMs: 3 });
  t.equal(run.model.volumes[run.byName('pending')]?.ancestorVolumeId, volume, 'the barrier commits afterwards');
  t.equal(run.replayed(), durableJson(run.model));
});

t.test('limits: snapshots per V-Tree (default 31, settable to 127), all or nothing for a group', async (t) => {
  const run = system();
  const volume = run.volume('vol1');
  const second = run.volume('vol2');
  t.equal(run.model.snapshotsPerVtree, snapshotsPerVtreeDefault);
  for (let index = 0; index < snapshotsPerVtreeDefault; index++) run.snapshot([{ volumeId: volume, name: `s${index}` }]);
  refused(t, run, { type: 'beginSnapshot', defs: [{ volumeId: volume, name: 'one-too-many', readOnly: false }], nowMs: 1 }, 'MB_ERR_SNAPSHOT_LIMIT', `the ${snapshotsPerVtreeDefault + 1}th snapshot of a tree`);
  const sibling = run.byName('s3');
  refused(t, run, { type: 'beginSnapshot', defs: [{ volumeId: sibling, name: 'x', readOnly: false }], nowMs: 1 }, 'MB_ERR_SNAPSHOT_LIMIT', 'a snapshot of a snapshot counts in the same tree');
  refused(t, run, { type: 'beginSnapshot', defs: [{ volumeId: second, name: 'fine', readOnly: false }, { volumeId: volume, name: 'over', readOnly: false }], nowMs: 1 }, 'MB_ERR_SNAPSHOT_LIMIT', 'a group with one tree over the limit: none is taken');
  for (const limit of [0, snapshotsPerVtreeMax + 1, 2.5, Number.NaN]) refused(t, run, { type: 'setSnapshotsPerVtree', limit }, 'MB_ERR_INVALID_ARGUMENT', `a limit of ${limit}`);
  run.apply({ type: 'setSnapshotsPerVtree', limit: snapshotsPerVtreeDefault + 1 });
  run.snapshot([{ volumeId: volume, name: 'thirty-second' }]);
  refused(t, run, { type: 'beginSnapshot', defs: [{ volumeId: volume, name: 'x', readOnly: false }], nowMs: 1 }, 'MB_ERR_SNAPSHOT_LIMIT', 'the raised limit holds too');
  run.apply({ type: 'setSnapshotsPerVtree', limit: 1 });
  refused(t, run, { type: 'beginSnapshot', defs: [{ volumeId: volume, name: 'x', readOnly: false }], nowMs: 1 }, 'MB_ERR_SNAPSHOT_LIMIT', 'a lowered limit refuses new snapshots');
  t.equal(Object.values(run.model.volumes).filter((entry) => entry.volumeType === 'Snapshot').length, 32, 'and keeps those taken');
  // Two in one group where one is left: refused whole.
  run.snapshot([{ volumeId: second, name: 'only-one' }]);
  refused(t, run, { type: 'beginSnapshot', defs: [{ volumeId: second, name: 'x', readOnly: false }], nowMs: 1 }, 'MB_ERR_SNAPSHOT_LIMIT', 'the limit of 1 reached on the second tree');
  t.equal(run.replayed(), durableJson(run.model));
});

t.test('generations per tree: taking and removing snapshots in turn grows a chain, refused clearly at the limit', async (t) => {
  const run = system();
  const volume = run.volume('vol1');
  let taken = 0;
  for (;;) {
    const before = JSON.stringify(run.model);
    try {
      const { ids } = run.snapshot([{ volumeId: volume, name: `s${taken}` }]);
      run.apply({ type: 'removeVolume', id: ids[0] as Id });
      taken += 1;
    } catch (err) {
      t.match(err, { code: 'MB_ERR_SNAPSHOT_LIMIT' }, `refused after ${taken} rounds: ${(err as Error).message}`);
      // The refusal came at begin: the model is as before it.
      t.equal(JSON.stringify(run.model), before, 'nothing changed');
      break;
    }
    if (taken > vtreeGenerationsMax) break;
  }
  t.ok(taken > 100 && taken <= vtreeGenerationsMax, `${taken} rounds before the limit`);
  t.ok(Object.keys(run.generations(volume)).length <= vtreeGenerationsMax, 'the tree stays within vtreeGenerationsMax (the SDSs would refuse the map)');
  t.ok(parsePlacementMap(JSON.parse(JSON.stringify(run.machine.placementMap()))), 'its map is still valid');
});

t.test('removal modes, with pruning; the others keep what they read', async (t) => {
  // vol (head 0) -> s1 of vol, s2 of s1, s3 of vol:
  const build = (): { run: Run; vol: Id; s1: Id; s2: Id; s3: Id } => {
    const run = system();
    const vol = run.volume('vol');
    const s1 = run.snapshot([{ volumeId: vol, name: 's1' }]).ids[0] as Id;
    const s2 = run.snapshot([{ volumeId: s1, name: 's2' }]).ids[0] as Id;
    const s3 = run.snapshot([{ volumeId: vol, name: 's3' }]).ids[0] as Id;
    return { run, vol, s1, s2, s3 };
  };
  {
    const { run, vol, s1, s2, s3 } = build();
    t.same(run.generations(vol), { '0': null, '1': 0, '2': 0, '3': 2, '4': 2, '5': 1, '6': 1 }, 'the tree built');
    t.same([run.head(vol), run.head(s1), run.head(s2), run.head(s3)], [5, 3, 4, 6]);
    const paths = [run.path(vol), run.path(s2), run.path(s3)];
    const epoch = run.model.epoch;
    const removed = run.apply({ type: 'removeVolume', id: s1 });
    t.same(removed.ids, [s1], 'ONLY_ME removes the one volume');
    t.ok(removed.epochChanged && run.model.epoch === epoch + 1, 'the map changed: the epoch moved');
    t.same(run.generations(vol), { '0': null, '1': 0, '2': 0, '4': 2, '5': 1, '6': 1 }, "its head 3 is dropped; 2 stays with one child (s2's)");
    t.equal(run.model.volumes[s2]?.ancestorVolumeId, vol, 'its snapshot takes its ancestor');
    t.same([run.path(vol), run.path(s2), run.path(s3)], paths, 'a snapshot removed in the middle leaves its child whole: every other read path is unchanged');
    run.apply({ type: 'removeVolume', id: s2 });
    t.same(run.generations(vol), { '0': null, '1': 0, '5': 1, '6': 1 }, 'the last reader of 2 gone: 4 and 2 are pruned');
    run.apply({ type: 'removeVolume', id: s3 });
    t.same(run.generations(vol), { '0': null, '1': 0, '5': 1 }, 'every snapshot gone: a chain of frozen generations stays (not merged yet)');
    t.same(run.path(vol), [5, 1, 0]);
    t.equal(run.replayed(), durableJson(run.model));
  }
  {
    const { run, vol, s1, s2, s3 } = build();
    t.same(run.apply({ type: 'removeVolume', id: s1, removeMode: 'INCLUDING_DESCENDANTS' }).ids, [s1, s2], 'INCLUDING_DESCENDANTS: it and its snapshots');
    t.same(run.generations(vol), { '0': null, '1': 0, '5': 1, '6': 1 }, 'their generations pruned');
    t.ok(run.model.volumes[vol] && run.model.volumes[s3], 'the others stay');
  }
  {
    const { run, vol } = build();
    t.same(run.apply({ type: 'removeVolume', id: vol, removeMode: 'DESCENDANTS_ONLY' }).ids?.length, 3, 'DESCENDANTS_ONLY: every snapshot under it');
    t.same(Object.keys(run.model.volumes), [vol], 'the volume stays');
    t.same(run.generations(vol), { '0': null, '1': 0, '5': 1 });
    t.same(run.apply({ type: 'removeVolume', id: vol, removeMode: 'DESCENDANTS_ONLY' }), { ids: [], epochChanged: false }, 'none left: nothing to do');
  }
  {
    const { run, s2 } = build();
    const vtreeId = run.model.volumes[s2]?.vtreeId as Id;
    t.same(run.apply({ type: 'removeVolume', id: s2, removeMode: 'WHOLE_VTREE' }).ids?.length, 4, 'WHOLE_VTREE: every volume of the tree, from any of them');
    t.same(run.model.volumes, {}, 'nothing left');
    t.equal(run.model.vtrees[vtreeId], undefined, 'the tree goes with its last volume');
    t.equal(run.machine.placementMap().vtrees, undefined, 'and leaves the map');
    t.equal(run.replayed(), durableJson(run.model));
  }
  {
    const { run, vol, s1, s2 } = build();
    const sdc = run.apply({ type: 'registerSdc', guid: 'guid-0000-1111', name: 'sdc1', nowMs: 1 }).id as Id;
    run.apply({ type: 'addMappedSdc', volumeId: s2, sdcId: sdc, accessMode: 'ReadWrite', allowMultipleMappings: false });
    refused(t, run, { type: 'removeVolume', id: s2 }, 'MB_ERR_VOLUME_MAPPED', 'removing a mapped snapshot');
    refused(t, run, { type: 'removeVolume', id: s1, removeMode: 'INCLUDING_DESCENDANTS' }, 'MB_ERR_VOLUME_MAPPED', 'a removal that would take a mapped snapshot with it');
    refused(t, run, { type: 'removeVolume', id: vol, removeMode: 'WHOLE_VTREE' }, 'MB_ERR_VOLUME_MAPPED', 'the whole tree with a mapped member');
    refused(t, run, { type: 'removeVolume', id: vol, removeMode: 'ALL' as unknown as 'ONLY_ME' }, 'MB_ERR_INVALID_ARGUMENT', 'an unknown mode');
    refused(t, run, { type: 'removeVolume', id: 'ffffffffffffffff' }, 'MB_ERR_NOT_FOUND', 'a missing volume');
    // The base volume alone: its snapshots stay, reading the frozen generations.
    const path = run.path(s2);
    run.apply({ type: 'removeVolume', id: vol });
    t.equal(run.model.volumes[s1]?.ancestorVolumeId, null, 'its snapshots have no ancestor left');
    t.same(run.path(s2), path, 'and read what they read');
  }
});

t.test('removeSnapshotGroup removes the members of one snapshotVolumes call', async (t) => {
  const run = system();
  const a = run.volume('a');
  const b = run.volume('b');
  const first = run.snapshot([{ volumeId: a, name: 'a1' }, { volumeId: b, name: 'b1' }]);
  const second = run.snapshot([{ volumeId: a, name: 'a2' }]);
  const sdc = run.apply({ type: 'registerSdc', guid: 'guid-0000-1111', name: 'sdc1', nowMs: 1 }).id as Id;
  run.apply({ type: 'addMappedSdc', volumeId: first.ids[1] as Id, sdcId: sdc, accessMode: 'ReadWrite', allowMultipleMappings: false });
  refused(t, run, { type: 'removeSnapshotGroup', groupId: first.groupId }, 'MB_ERR_VOLUME_MAPPED', 'a group with a mapped member');
  refused(t, run, { type: 'removeSnapshotGroup', groupId: 'ffffffffffffffff' }, 'MB_ERR_NOT_FOUND', 'an unknown group');
  run.apply({ type: 'removeMappedSdc', volumeId: first.ids[1] as Id, sdcId: sdc });
  const removed = run.apply({ type: 'removeSnapshotGroup', groupId: first.groupId });
  t.same(removed.ids, first.ids, 'its members go');
  t.ok(removed.epochChanged, 'their trees changed: the epoch moved');
  t.same(Object.values(run.model.volumes).map((volume) => volume.name).sort(), ['a', 'a2', 'b'], 'the rest stays');
  t.ok(run.model.volumes[second.ids[0] as Id], 'another group of the same tree stays');
  refused(t, run, { type: 'removeSnapshotGroup', groupId: first.groupId }, 'MB_ERR_NOT_FOUND', 'a group already removed');
  t.equal(run.replayed(), durableJson(run.model));
});

t.test('restore (overwriteVolumeContent): generations as docs/snapshots.md says, same tree only', async (t) => {
  const run = system();
  const vol = run.volume('vol');
  const other = run.volume('other');
  const snap = run.snapshot([{ volumeId: vol, name: 'snap' }]).ids[0] as Id;
  const ro = run.snapshot([{ volumeId: vol, name: 'ro', readOnly: true }]).ids[0] as Id;
  t.same(run.generations(vol), { '0': null, '1': 0, '2': 0, '3': 1, '4': 1 });
  const snapPath = run.path(snap);
  const epoch = run.model.epoch;
  const applied = run.apply({ type: 'overwriteVolumeContent', volumeId: vol, sourceVolumeId: snap });
  t.ok(applied.epochChanged && run.model.epoch === epoch + 1, 'the epoch moves');
  t.same(run.generations(vol), { '0': null, '1': 0, '2': 0, '4': 1, '5': 2, '6': 2 }, "the snapshot (head 2) gets 5, the volume 6, both children of 2; the volume's old head 3 is dropped");
  t.same([run.head(snap), run.head(vol)], [5, 6]);
  t.same(run.path(vol).slice(1), snapPath, "the volume now reads the snapshot's bytes");
  t.same(run.path(snap).slice(1), snapPath, 'and the snapshot still does');
  t.ok(parsePlacementMap(JSON.parse(JSON.stringify(run.machine.placementMap()))), 'the SDSs accept the map');
  refused(t, run, { type: 'overwriteVolumeContent', volumeId: vol, sourceVolumeId: other }, 'MB_ERR_VTREE_MISMATCH', 'a restore from another V-Tree');
  refused(t, run, { type: 'overwriteVolumeContent', volumeId: vol, sourceVolumeId: vol }, 'MB_ERR_INVALID_ARGUMENT', 'a restore from itself');
  refused(t, run, { type: 'overwriteVolumeContent', volumeId: vol, sourceVolumeId: 'ffffffffffffffff' }, 'MB_ERR_NOT_FOUND', 'a restore from a missing volume');
  refused(t, run, { type: 'overwriteVolumeContent', volumeId: ro, sourceVolumeId: vol }, 'MB_ERR_VOLUME_READ_ONLY', 'overwriting a read-only snapshot');
  run.apply({ type: 'overwriteVolumeContent', volumeId: snap, sourceVolumeId: ro });
  t.equal(run.model.volumes[ro]?.accessModeLimit, 'ReadOnly', 'a read-only snapshot can be the source');
  const groupId = run.apply({ type: 'beginSnapshot', defs: [{ volumeId: vol, name: 'x', readOnly: false }], nowMs: 1 }).id as Id;
  refused(t, run, { type: 'overwriteVolumeContent', volumeId: vol, sourceVolumeId: snap }, 'MB_ERR_SNAPSHOT_BARRIER', 'a restore while the tree is frozen');
  run.apply({ type: 'abortSnapshot', groupId, reason: 'test' });
  t.equal(run.replayed(), durableJson(run.model));
});

t.test('read-only snapshots: accessModeLimit holds for every mapping', async (t) => {
  const run = system();
  const vol = run.volume('vol');
  const ro = run.snapshot([{ volumeId: vol, name: 'ro', readOnly: true }]).ids[0] as Id;
  const sdc = run.apply({ type: 'registerSdc', guid: 'guid-0000-1111', name: 'sdc1', nowMs: 1 }).id as Id;
  refused(t, run, { type: 'addMappedSdc', volumeId: ro, sdcId: sdc, accessMode: 'ReadWrite', allowMultipleMappings: false }, 'MB_ERR_VOLUME_READ_ONLY', 'mapping a read-only snapshot read-write');
  run.apply({ type: 'addMappedSdc', volumeId: ro, sdcId: sdc, accessMode: 'ReadOnly', allowMultipleMappings: false });
  run.apply({ type: 'addMappedSdc', volumeId: vol, sdcId: sdc, accessMode: 'ReadWrite', allowMultipleMappings: false });
  refused(t, run, { type: 'setVolumeAccessModeLimit', id: vol, accessModeLimit: 'ReadOnly' }, 'MB_ERR_VOLUME_MAPPED', 'making a volume mapped read-write read-only');
  refused(t, run, { type: 'setVolumeAccessModeLimit', id: vol, accessModeLimit: 'WriteOnly' as 'ReadOnly' }, 'MB_ERR_INVALID_ARGUMENT', 'an unknown access mode');
  refused(t, run, { type: 'setVolumeAccessModeLimit', id: 'ffffffffffffffff', accessModeLimit: 'ReadOnly' }, 'MB_ERR_NOT_FOUND', 'a missing volume');
  const epoch = run.model.epoch;
  run.apply({ type: 'setVolumeAccessModeLimit', id: ro, accessModeLimit: 'ReadWrite' });
  t.equal(run.model.volumes[ro]?.accessModeLimit, 'ReadWrite', 'a read-only snapshot made writable');
  t.equal(run.model.epoch, epoch, 'the map does not change with it');
  run.apply({ type: 'removeMappedSdc', volumeId: ro, sdcId: sdc });
  run.apply({ type: 'setVolumeAccessModeLimit', id: ro, accessModeLimit: 'ReadOnly' });
  t.equal(run.model.volumes[ro]?.accessModeLimit, 'ReadOnly', 'and read-only again');
  t.equal(run.replayed(), durableJson(run.model));
});

t.test('a model written before snapshots loads with every volume the base of its own tree', async (t) => {
  const run = system();
  const vol = run.volume('vol');
  run.volume('thick', true);
  // The shape a journal or etcd snapshot had before snapshots: no trees, no volume fields.
  const old = JSON.parse(JSON.stringify(run.model)) as Record<string, unknown> & { volumes: Record<Id, Record<string, unknown>> };
  for (const key of ['vtrees', 'snapshotsPerVtree', 'snapshotBarrier']) delete old[key];
  for (const volume of Object.values(old.volumes)) for (const key of ['ancestorVolumeId', 'generation', 'accessModeLimit', 'snapshotGroupId']) delete volume[key];
  const loaded = new StateMachine(old as unknown as SystemModel);
  t.equal(durableJson(loaded.model), durableJson(run.model), 'the same model as one made now');
  t.same(loaded.model.vtrees[loaded.model.volumes[vol]?.vtreeId as Id], { id: run.model.volumes[vol]?.vtreeId, storagePoolId: run.pool, nextGeneration: 1, generations: { '0': null } });
  // Old commands still apply (removeVolume without a mode), and snapshots work on old volumes.
  const snap = loaded.apply({ type: 'beginSnapshot', defs: [{ volumeId: vol, name: 's', readOnly: false }], nowMs: 1 }).id as Id;
  t.equal(loaded.apply({ type: 'commitSnapshot', groupId: snap, nowMs: 1 }).ids?.length, 1);
  t.ok(loaded.apply({ type: 'removeVolume', id: vol }).ids, 'removeVolume as old journals wrote it');
  const empty = emptyModel(clusterId, 'x') as Partial<SystemModel>;
  delete empty.vtrees;
  t.same(new StateMachine(empty as SystemModel).model.vtrees, {}, 'an empty old model too');
});

t.test('capacity: snapshot bytes from the SDS heartbeats, half the raw bytes', async (t) => {
  const run = system();
  run.volume('vol');
  t.equal(run.machine.poolCapacity(run.pool).snapshotInUseBytes, 0, 'nothing reported yet');
  run.machine.observe({ type: 'sdsHeartbeat', sdsId: sdsId(0), nowMs: 2000, devices: [{ deviceId: deviceId(0), usedBytes: 6 * GiB, snapshotBytes: 2 * GiB }] });
  run.machine.observe({ type: 'sdsHeartbeat', sdsId: sdsId(1), nowMs: 2000, devices: [{ deviceId: deviceId(1), usedBytes: 6 * GiB, snapshotBytes: 2 * GiB }] });
  run.machine.observe({ type: 'sdsHeartbeat', sdsId: sdsId(2), nowMs: 2000, devices: [{ deviceId: deviceId(2), usedBytes: 6 * GiB }] });
  const capacity = run.machine.poolCapacity(run.pool);
  t.equal(capacity.snapshotInUseBytes, 2 * GiB, 'two copies of 2 GiB: 2 GiB of snapshot data');
  t.equal(capacity.inUseBytes, 9 * GiB, 'snapshot bytes are part of the bytes in use');
  t.equal(run.model.devices[deviceId(2)]?.snapshotBytes, undefined, 'an SDS that does not count them reports none');
  t.notMatch(durableJson(run.model), /snapshotBytes/, 'volatile: not journaled');
});

/**
 * A tiny SDS of the test's own: chunk values by (chunk index, generation); a volume reads a
 * chunk from the first generation of its path that holds it. Kept beside a random run of
 * snapshot commands, it checks what each command does to what every volume reads.
 */
t.test('random snapshots, restores, removals and writes: reads change only as the commands say', async (t) => {
  const seed = process.env['MESHBLOCK_SNAP_SEED'] !== undefined ? Number(process.env['MESHBLOCK_SNAP_SEED']) : Math.floor(Math.random() * 2 ** 31);
  t.comment(`seed ${seed} (replay: MESHBLOCK_SNAP_SEED=${seed})`);
  const random = mulberry32(seed);
  const int = (below: number): number => Math.floor(random() * below);
  const run = system();
  const chunks = 4;
  /** Per tree: "chunkIndex/generation" -> value. */
  const stored = new Map<Id, Map<string, number>>();
  let serial = 0;
  let value = 1;
  const read = (volumeId: Id): number[] => {
    const volume = run.model.volumes[volumeId];
    if (volume === undefined) throw new Error('read of a missing volume');
    const data = stored.get(volume.vtreeId) ?? new Map<string, number>();
    const path = run.path(volumeId);
    return Array.from({ length: chunks }, (_, chunk) => {
      for (const generation of path) {
        const held = data.get(`${chunk}/${generation}`);
        if (held !== undefined) return held;
      }
      return 0;
    });
  };
  const everything = (): Map<Id, number[]> => new Map(Object.keys(run.model.volumes).map((id) => [id, read(id)]));
  const counts: Record<string, number> = {};
  for (let step = 0; step < 1500; step++) {
    const ids = Object.keys(run.model.volumes);
    const pick = (): Id => ids[int(ids.length)] as Id;
    const before = everything();
    const roll = random();
    let expect: Map<Id, number[]> = before;
    let what = '';
    try {
      if (ids.length === 0 || roll < 0.08) {
        what = 'addVolume';
        const id = run.volume(`v${serial++}`);
        expect = new Map(before).set(id, [0, 0, 0, 0]);
      } else if (roll < 0.4) {
        what = 'write';
        const id = pick();
        const volume = run.model.volumes[id];
        if (volume === undefined || volume.accessModeLimit === 'ReadOnly') continue;
        const chunk = int(chunks);
        let data = stored.get(volume.vtreeId);
        if (data === undefined) stored.set(volume.vtreeId, (data = new Map<string, number>()));
        data.set(`${chunk}/${volume.generation}`, value);
        const content = [...(before.get(id) as number[])];
        content[chunk] = value++;
        expect = new Map(before).set(id, content);
      } else if (roll < 0.65) {
        what = 'snapshot';
        const first = pick();
        const defs = [{ volumeId: first, name: `s${serial++}`, readOnly: random() < 0.3 }];
        const second = pick();
        if (random() < 0.3 && second !== first) defs.push({ volumeId: second, name: `s${serial++}`, readOnly: false });
        const { ids: made } = run.snapshot(defs);
        expect = new Map(before);
        made.forEach((id, index) => expect.set(id, before.get(defs[index]?.volumeId as Id) as number[]));
      } else if (roll < 0.75) {
        what = 'restore';
        const target = pick();
        const sameTree = ids.filter((id) => id !== target && run.model.volumes[id]?.vtreeId === run.model.volumes[target]?.vtreeId);
        const source = sameTree[int(sameTree.length)];
        if (source === undefined || run.model.volumes[target]?.accessModeLimit === 'ReadOnly') continue;
        run.apply({ type: 'overwriteVolumeContent', volumeId: target, sourceVolumeId: source });
        expect = new Map(before).set(target, before.get(source) as number[]);
      } else if (roll < 0.97) {
        const modes = ['ONLY_ME', 'ONLY_ME', 'INCLUDING_DESCENDANTS', 'DESCENDANTS_ONLY', 'WHOLE_VTREE'] as const;
        const removeMode = modes[int(modes.length)] as (typeof modes)[number];
        what = `remove ${removeMode}`;
        const removed = run.apply({ type: 'removeVolume', id: pick(), removeMode }).ids ?? [];
        expect = new Map(before);
        for (const id of removed) expect.delete(id);
      } else {
        what = 'group';
        const groups = [...new Set(Object.values(run.model.volumes).map((volume) => volume.snapshotGroupId).filter((id): id is Id => id !== null))];
        const groupId = groups[int(groups.length)];
        if (groupId === undefined) continue;
        const removed = run.apply({ type: 'removeSnapshotGroup', groupId }).ids ?? [];
        expect = new Map(before);
        for (const id of removed) expect.delete(id);
      }
    } catch (err) {
      const code = (err as { code?: string }).code;
      t.ok(code === 'MB_ERR_SNAPSHOT_LIMIT', `step ${step}: ${what} refused only by a limit (${code}: ${(err as Error).message})`);
      counts[`refused ${what}`] = (counts[`refused ${what}`] ?? 0) + 1;
      continue;
    }
    counts[what] = (counts[what] ?? 0) + 1;
    const after = everything();
    const same = JSON.stringify([...after].sort()) === JSON.stringify([...expect].sort());
    if (!same) {
      t.fail(`step ${step}: ${what} changed what volumes read: expected ${JSON.stringify([...expect])}, got ${JSON.stringify([...after])}`);
      break;
    }
    const map = run.machine.placementMap();
    try {
      parsePlacementMap(JSON.parse(JSON.stringify(map)));
    } catch (err) {
      t.fail(`step ${step}: ${what} made a map the SDSs refuse: ${(err as Error).message}`);
      break;
    }
    // Every generation of every tree is read by some volume (pruning leaves no garbage generation).
    for (const tree of Object.values(run.model.vtrees)) {
      const reached = new Set<number>();
      for (const volume of run.machine.treeVolumes(tree.id)) for (const generation of generationPath(vtreeOf(map, tree.id), volume.generation)) reached.add(generation);
      if (reached.size !== Object.keys(tree.generations).length) {
        t.fail(`step ${step}: ${what} left generations of tree ${tree.id} that no volume reads: ${JSON.stringify(tree.generations)}`);
        return;
      }
    }
  }
  t.comment(JSON.stringify(counts));
  for (const what of ['snapshot', 'restore', 'write', 'remove ONLY_ME', 'remove WHOLE_VTREE', 'group']) t.ok((counts[what] ?? 0) > 0, `it reached ${what}`);
  t.equal(run.replayed(), durableJson(run.model), 'the journal replays to the same model');
});
