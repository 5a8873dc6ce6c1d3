// Proves the MDM service's half of snapshots (docs/snapshots.md, "The barrier"): a real
// MdmService with its journal listens on a real socket; wire clients registered as SDSs
// answer its SetMap requests as the test tells them (at once, after draining for a while, or
// never), and one registered as an SDC reports its open volumes. Checked: the map that
// freezes the V-Trees reaches every SDS of the pool before anything is created, the commit
// waits for the slowest SDS, an SDS that does not confirm within snapshotBarrierTimeoutMs
// aborts the group (named in the error, nothing created, trees unfrozen), a second group
// waits for the first, unnamed snapshots are named '<volume>-snap-<n>', a restore of an open
// volume is refused, an SDC's view carries the head generation and read-only access, and a
// barrier left in the journal by an MDM that stopped is aborted when the MDM starts again.

import * as net from 'node:net';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { snapshotBarrierTimeoutMs } from '../../src/common/limits.js';
import { GiB } from '../../src/common/units.js';
import type { JournalRecord } from '../../src/mdm/command-log.js';
import { Journal } from '../../src/mdm/journal.js';
import { emptyModel, type Id, type SystemModel } from '../../src/mdm/model.js';
import { MdmService } from '../../src/mdm/service.js';
import { StateMachine } from '../../src/mdm/state-machine.js';
import { MdmOp, heartbeatIntervalMs } from '../../src/wire/mdm-ops.js';
import { WirePeer } from '../../src/wire/peer.js';
import { parsePlacementMap, type PlacementMap } from '../../src/wire/placement.js';
import { SdsOp, SdsStatus, type SdsStats } from '../../src/wire/sds-ops.js';

const clusterId = '0123456789abcdef';
const secret = Buffer.from('a test cluster secret, long enough');
const log = pino({ level: process.env['TEST_LOG_LEVEL'] ?? 'silent' });
const sdsId = (index: number): Id => (0x5d5000000000 + index).toString(16).padStart(16, '0');
const deviceId = (index: number): Id => (0xde7000000000 + index).toString(16).padStart(16, '0');

/** 'staleOnce': refuses the next map as older than its own (another map overtook it), then answers Ok. */
type Answer = 'ok' | { delayMs: number } | 'never' | 'staleOnce';

/** A wire client that registered as an SDS: it keeps the maps it was sent and answers as told. */
interface FakeSds {
  id: Id;
  maps: PlacementMap[];
  /** Epochs of the maps it answered Ok, in order. */
  confirmed: number[];
  answer: Answer;
  peer: WirePeer;
}

async function connect(t: Test, port: number, role: 'sds' | 'sdc', onRequest: (op: number, payload: Buffer) => Promise<{ status: number }>): Promise<WirePeer> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const peer = await WirePeer.connect(socket, { clusterId, secret, role, name: `test-${role}`, log, onRequest: (request) => onRequest(request.op, request.payload) });
  t.teardown(() => peer.destroy());
  return peer;
}

async function fakeSds(t: Test, port: number, index: number): Promise<FakeSds> {
  const sds: FakeSds = { id: sdsId(index), maps: [], confirmed: [], answer: 'ok', peer: undefined as unknown as WirePeer };
  sds.peer = await connect(t, port, 'sds', async (op, payload) => {
    if (op !== SdsOp.SetMap) return { status: SdsStatus.UnknownOp };
    const map = parsePlacementMap(JSON.parse(payload.toString()));
    sds.maps.push(map);
    const answer = sds.answer;
    if (answer === 'never') return new Promise<never>(() => undefined);
    if (answer === 'staleOnce') {
      sds.answer = 'ok';
      return { status: SdsStatus.StaleEpoch };
    }
    if (answer !== 'ok') await new Promise((resolve) => setTimeout(resolve, answer.delayMs));
    sds.confirmed.push(map.epoch);
    return { status: SdsStatus.Ok };
  });
  const reply = await sds.peer.request(MdmOp.RegisterSds, Buffer.from(JSON.stringify({ sdsId: sds.id, name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, devices: [] })));
  if (reply.status !== SdsStatus.Ok) throw new Error(`registration refused: ${reply.payload.toString()}`);
  // It beats as an SDS does, so that the MDM does not declare it down while a test runs.
  const stats: SdsStats = { sdsId: sds.id, name: `sds${index}`, epoch: 1, chunkBytes: 1024 * 1024, devices: [], reservedBytes: 0, rebuilds: [] };
  const beat = setInterval(() => void sds.peer.request(MdmOp.Heartbeat, Buffer.from(JSON.stringify(stats))).catch(() => undefined), heartbeatIntervalMs);
  t.teardown(() => clearInterval(beat));
  return sds;
}

async function openService(t: Test, dir: string): Promise<{ service: MdmService; port: number }> {
  const service = await MdmService.open({ dataDir: dir, clusterId, systemName: 'test', secret, log });
  const address = await service.listen('127.0.0.1', 0);
  t.teardown(() => service.close());
  return { service, port: address.port };
}

/** One pool over the SDSs' devices, and volumes in it. */
async function populate(service: MdmService, sdsCount: number, volumes: string[]): Promise<{ pool: Id; volumes: Id[] }> {
  const pd = (await service.execute({ type: 'addProtectionDomain', name: 'pd1' })).id as Id;
  const pool = (await service.execute({ type: 'addStoragePool', protectionDomainId: pd, name: 'sp1', volumeGranularityBytes: GiB, pgCount: 16 })).id as Id;
  for (let index = 0; index < sdsCount; index++) {
    if (service.state.model.sdss[sdsId(index)] === undefined) await service.execute({ type: 'registerSds', sdsId: sdsId(index), name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, nowMs: Date.now() });
    await service.execute({ type: 'addSds', sdsId: sdsId(index), protectionDomainId: pd, faultSetId: null });
    await service.execute({ type: 'addDevice', deviceId: deviceId(index), sdsId: sdsId(index), storagePoolId: pool, path: '/dev/sdb', name: null, capacityBytes: 100 * GiB });
  }
  const ids: Id[] = [];
  for (const name of volumes) ids.push((await service.execute({ type: 'addVolume', storagePoolId: pool, name, sizeBytes: GiB, volumeType: 'ThinProvisioned', nowMs: Date.now() })).id as Id);
  return { pool, volumes: ids };
}

async function until(what: string, probe: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

t.test('the barrier: every SDS of the pool gets the freeze and confirms before the snapshots exist', async (t) => {
  const { service, port } = await openService(t, t.testdir());
  const sdss = await Promise.all([0, 1, 2].map((index) => fakeSds(t, port, index)));
  const { volumes } = await populate(service, 3, ['a', 'b']);
  const [a, b] = volumes as [Id, Id];
  const vtreeA = service.state.model.volumes[a]?.vtreeId as Id;
  const vtreeB = service.state.model.volumes[b]?.vtreeId as Id;
  await until('every SDS to have the map', () => sdss.every((sds) => sds.maps.at(-1)?.epoch === service.state.model.epoch));
  const epoch = service.state.model.epoch;
  for (const sds of sdss) sds.maps.length = 0;
  // One SDS drains its writes for a while: the commit waits for it.
  (sdss[2] as FakeSds).answer = { delayMs: 400 };
  (sdss[1] as FakeSds).answer = 'staleOnce';
  let createdBeforeConfirmed = false;
  const watch = setInterval(() => {
    if (Object.keys(service.state.model.volumes).length > 2 && !(sdss[2] as FakeSds).confirmed.includes(epoch + 1)) createdBeforeConfirmed = true;
  }, 5);
  const startedMs = Date.now();
  const result = await service.snapshotVolumes([
    { volumeId: a, name: null, readOnly: false },
    { volumeId: b, name: 'b-ro', readOnly: true },
  ]);
  clearInterval(watch);
  t.ok(Date.now() - startedMs >= 400, 'the commit waited for the slowest SDS');
  t.ok((sdss[1] as FakeSds).maps.filter((map) => map.epoch === epoch + 1).length >= 2, 'an SDS that refused the map as older got it again, and confirmed');
  t.notOk(createdBeforeConfirmed, 'nothing was created before every SDS confirmed');
  t.same(result.volumeIds.map((id) => service.state.model.volumes[id]?.name), ['a-snap-1', 'b-ro'], "ids in the order asked; an unnamed snapshot is '<volume>-snap-<n>'");
  t.equal(service.state.model.volumes[result.volumeIds[1] as Id]?.accessModeLimit, 'ReadOnly');
  t.ok(result.volumeIds.every((id) => service.state.model.volumes[id]?.snapshotGroupId === result.snapshotGroupId), 'one group');
  t.equal(service.state.model.snapshotBarrier, null, 'the barrier is over');
  t.equal(service.state.model.epoch, epoch + 2, 'two epochs: the freeze, the commit');
  for (const [index, sds] of sdss.entries()) {
    const frozen = sds.maps.find((map) => map.epoch === epoch + 1);
    t.same([frozen?.vtrees?.[vtreeA]?.frozen, frozen?.vtrees?.[vtreeB]?.frozen], [true, true], `sds${index} got E1 with both trees frozen`);
  }
  await until('every SDS to have the commit', () => sdss.every((sds) => sds.maps.some((map) => map.epoch === epoch + 2)));
  const committed = sdss[0]?.maps.find((map) => map.epoch === epoch + 2);
  t.same(committed?.vtrees?.[vtreeA], { generations: { '0': null, '1': 0, '2': 0 }, heads: [{ generation: 1, snapshot: false }, { generation: 2, snapshot: true }] }, 'E2: unfrozen, the new heads');

  // A second snapshot of a: the next free name.
  const again = await service.snapshotVolumes([{ volumeId: a, name: null, readOnly: false }]);
  t.equal(service.state.model.volumes[again.volumeIds[0] as Id]?.name, 'a-snap-2', 'the next free number');

  // Bad input through the service: refused, nothing changed.
  const before = JSON.stringify(service.state.model.volumes);
  await t.rejects(service.snapshotVolumes([{ volumeId: 'ffffffffffffffff', name: null, readOnly: false }]), { code: 'MB_ERR_NOT_FOUND' }, 'a snapshot of a missing volume');
  await t.rejects(service.snapshotVolumes([{ volumeId: a, name: 'b', readOnly: false }]), { code: 'MB_ERR_NAME_TAKEN' }, "a volume's name");
  await t.rejects(service.execute({ type: 'beginSnapshot', defs: [{ volumeId: a, name: 'x', readOnly: false }], nowMs: 1 }), { code: 'MB_ERR_INVALID_ARGUMENT' }, 'a phase is not a command of its own');
  t.equal(JSON.stringify(service.state.model.volumes), before, 'nothing changed');
  t.equal(service.state.model.snapshotBarrier, null, 'no barrier left');
});

t.test('an SDS that does not confirm aborts the group: named, nothing created, unfrozen; a second group waits', async (t) => {
  const { service, port } = await openService(t, t.testdir());
  const sdss = await Promise.all([0, 1, 2].map((index) => fakeSds(t, port, index)));
  const { volumes } = await populate(service, 3, ['a', 'b']);
  const [a, b] = volumes as [Id, Id];
  await until('every SDS to have the map', () => sdss.every((sds) => sds.maps.at(-1)?.epoch === service.state.model.epoch));
  const epoch = service.state.model.epoch;
  (sdss[1] as FakeSds).answer = 'never';
  const startedMs = Date.now();
  const first = service.snapshotVolumes([{ volumeId: a, name: 'a-s', readOnly: false }]);
  await until('the barrier to begin', () => service.state.model.snapshotBarrier !== null);
  await t.rejects(service.snapshotVolumes([{ volumeId: b, name: 'b-s', readOnly: false }]), { code: 'MB_ERR_SNAPSHOT_BARRIER' }, 'a second group while one is under way is refused');
  await t.rejects(first, { code: 'MB_ERR_SNAPSHOT_BARRIER', message: /'sds1'/ }, 'the group is aborted, naming the SDS that did not confirm');
  const tookMs = Date.now() - startedMs;
  t.ok(tookMs >= snapshotBarrierTimeoutMs && tookMs < snapshotBarrierTimeoutMs + 2000, `it waited snapshotBarrierTimeoutMs (${tookMs} ms)`);
  t.same(Object.values(service.state.model.volumes).map((volume) => volume.name).sort(), ['a', 'b'], 'nothing was created');
  t.equal(service.state.model.snapshotBarrier, null, 'no barrier left');
  t.equal(service.state.model.epoch, epoch + 2, 'the freeze and the abort');
  t.equal(service.state.placementMap().vtrees, undefined, 'the tree is unfrozen (and back to its implicit form)');
  await until('the answering SDSs to have the abort', () => [sdss[0], sdss[2]].every((sds) => sds?.maps.some((map) => map.epoch === epoch + 2 && map.vtrees === undefined)));
  (sdss[1] as FakeSds).answer = 'ok';
  const later = await service.snapshotVolumes([{ volumeId: a, name: 'a-s', readOnly: false }]);
  t.equal(later.volumeIds.length, 1, 'once it answers again, the snapshot is taken');
});

t.test('restore refused while an SDC has the volume open; the SDC view carries the head and read-only access', async (t) => {
  const { service, port } = await openService(t, t.testdir());
  await Promise.all([0, 1].map((index) => fakeSds(t, port, index)));
  const { volumes } = await populate(service, 2, ['vol']);
  const vol = volumes[0] as Id;
  const sdcPeer = await connect(t, port, 'sdc', async () => ({ status: SdsStatus.Ok }));
  const registered = await sdcPeer.request(MdmOp.RegisterSdc, Buffer.from(JSON.stringify({ guid: '0123abcd-0000-1111', name: 'sdc1' })));
  t.equal(registered.status, SdsStatus.Ok);
  const sdcId = Object.values(service.state.model.sdcs)[0]?.id as Id;
  const { volumeIds } = await service.snapshotVolumes([{ volumeId: vol, name: 'snap', readOnly: true }]);
  const snap = volumeIds[0] as Id;
  await service.execute({ type: 'addMappedSdc', volumeId: vol, sdcId, accessMode: 'ReadWrite', allowMultipleMappings: false });
  await service.execute({ type: 'addMappedSdc', volumeId: snap, sdcId, accessMode: 'ReadOnly', allowMultipleMappings: false });
  const view = service.sdcView(sdcId);
  const byName = Object.fromEntries(view.volumes.map((entry) => [entry.name, entry]));
  t.same([byName['vol']?.generation, byName['vol']?.accessMode], [1, 'ReadWrite'], 'the volume: its new head');
  t.same([byName['snap']?.generation, byName['snap']?.accessMode], [2, 'ReadOnly'], 'the read-only snapshot: its head, read-only');
  t.ok(view.map.vtrees?.[service.state.model.volumes[vol]?.vtreeId as Id], 'the view carries the tree');

  const heartbeat = (open: Id[]): Promise<unknown> => sdcPeer.request(MdmOp.Heartbeat, Buffer.from(JSON.stringify({ openVolumes: open })));
  await heartbeat([vol]);
  const before = JSON.stringify(service.state.model);
  await t.rejects(service.overwriteVolumeContent(vol, snap), { code: 'MB_ERR_VOLUME_OPEN', message: /'sdc1'/ }, 'restore of an open volume');
  t.equal(JSON.stringify(service.state.model), before, 'nothing changed');
  await heartbeat([]);
  await service.overwriteVolumeContent(vol, snap);
  t.equal(service.sdcView(sdcId).volumes.find((entry) => entry.name === 'vol')?.generation, service.state.model.volumes[vol]?.generation, 'closed, it is restored: the view has its new head');
  t.equal(service.state.model.volumes[vol]?.generation, 4, 'the head a child of the snapshot head');
});

t.test('a barrier left in the journal by an MDM that stopped is aborted when the MDM starts again', async (t) => {
  const dir = t.testdir();
  {
    const { service } = await openService(t, dir);
    await populate(service, 2, ['vol']);
    await service.close();
  }
  // As an MDM that journaled beginSnapshot and died before its SDSs answered.
  {
    const { journal, snapshot, records } = await Journal.open<JournalRecord, SystemModel>(dir, { log, initialSnapshot: emptyModel(clusterId, 'test') });
    t.equal(records.length > 0 || snapshot.idCounter > 0, true, 'the journal holds the setup');
    const state = new StateMachine(snapshot);
    for (const record of records) state.replay(record.command);
    const volumeId = Object.keys(state.model.volumes)[0] as Id;
    await journal.append({ command: { type: 'beginSnapshot', defs: [{ volumeId, name: 'half', readOnly: false }], nowMs: Date.now() } });
    await journal.close();
  }
  const reopened = await MdmService.open({ dataDir: dir, clusterId, systemName: 'test', secret, log });
  t.not(reopened.state.model.snapshotBarrier, null, 'replayed, the barrier is there');
  const epoch = reopened.state.model.epoch;
  await reopened.listen('127.0.0.1', 0);
  t.equal(reopened.state.model.snapshotBarrier, null, 'starting to act, the MDM aborted it');
  t.equal(reopened.state.model.epoch, epoch + 1, 'the abort moved the epoch (the unfrozen map goes out)');
  t.same(Object.values(reopened.state.model.volumes).map((volume) => volume.name), ['vol'], 'no half group');
  await reopened.close();
  const again = await MdmService.open({ dataDir: dir, clusterId, systemName: 'test', secret, log });
  t.equal(again.state.model.snapshotBarrier, null, 'the abort is journaled');
  await again.close();
});

t.test('a journal written before snapshots opens: its volumes become the bases of their own trees', async (t) => {
  const dir = t.testdir();
  // The model as an MDM before snapshots compacted it, and a command it journaled after.
  const machine = StateMachine.create(clusterId, 'test');
  const pd = machine.apply({ type: 'addProtectionDomain', name: 'pd1' }).id as Id;
  const pool = machine.apply({ type: 'addStoragePool', protectionDomainId: pd, name: 'sp1', volumeGranularityBytes: GiB, pgCount: 16 }).id as Id;
  for (const index of [0, 1]) {
    machine.apply({ type: 'registerSds', sdsId: sdsId(index), name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, nowMs: 1 });
    machine.apply({ type: 'addSds', sdsId: sdsId(index), protectionDomainId: pd, faultSetId: null });
    machine.apply({ type: 'addDevice', deviceId: deviceId(index), sdsId: sdsId(index), storagePoolId: pool, path: '/dev/sdb', name: null, capacityBytes: 100 * GiB });
  }
  const kept = machine.apply({ type: 'addVolume', storagePoolId: pool, name: 'kept', sizeBytes: GiB, volumeType: 'ThickProvisioned', nowMs: 1 }).id as Id;
  const gone = machine.apply({ type: 'addVolume', storagePoolId: pool, name: 'gone', sizeBytes: GiB, volumeType: 'ThinProvisioned', nowMs: 1 }).id as Id;
  const old = JSON.parse(JSON.stringify(machine.model)) as Record<string, unknown> & { volumes: Record<Id, Record<string, unknown>> };
  for (const key of ['vtrees', 'snapshotsPerVtree', 'snapshotBarrier']) delete old[key];
  for (const volume of Object.values(old.volumes)) for (const key of ['ancestorVolumeId', 'generation', 'accessModeLimit', 'snapshotGroupId']) delete volume[key];
  {
    const { journal } = await Journal.open<JournalRecord, SystemModel>(dir, { log, initialSnapshot: emptyModel(clusterId, 'test') });
    await journal.compact(old as unknown as SystemModel);
    await journal.append({ command: { type: 'removeVolume', id: gone } });
    await journal.close();
  }
  const service = await MdmService.open({ dataDir: dir, clusterId, systemName: 'test', secret, log });
  t.teardown(() => service.close());
  const volume = service.state.model.volumes[kept];
  t.same([volume?.generation, volume?.ancestorVolumeId, volume?.accessModeLimit, volume?.snapshotGroupId], [0, null, 'ReadWrite', null], 'the volume: head 0, no ancestor, read-write, no group');
  t.same(service.state.model.vtrees[volume?.vtreeId as Id]?.generations, { '0': null }, 'its tree of one generation');
  t.equal(Object.keys(service.state.model.vtrees).length, 1, "the removed volume's tree went with it (an old removeVolume, no mode)");
  t.equal(service.state.model.snapshotBarrier, null);
  t.same(service.state.placementMap().vtrees, undefined, 'the map is the one it sent before snapshots');
});
