// Proves the snapshot half of the REST API (docs/snapshots.md) over real HTTPS against a real
// StateMachine behind the in-test controller (test/helpers/rest.ts), in ScaleIO's shapes as
// Cinder's PowerFlex driver, PyPowerFlex and goscaleio send and read them:
// snapshotVolumes (with and without the System's id, one volume or a consistency group,
// named or named by the MDM, read-only) → {volumeIdList, snapshotGroupId}; the Volume
// object's ancestorVolumeId, vtreeId, volumeType 'Snapshot', consistencyGroupId and
// accessModeLimit; VTree instances and relationships; snapshot counts in the statistics;
// setVolumeAccessModeLimit; overwriteVolumeContent; removeVolume's four modes;
// removeConsistencyGroupSnapshots → {numberOfVolumes}; removeMappedSdc {"allSdcs": ""}.
// Then bad input of every kind, each refused with the field named and the model unchanged
// (its JSON compared before and after), and the core's refusals (limit, other V-Tree,
// mapped snapshot) arriving as ScaleIO-shaped errors.

import t, { type Test } from 'tap';
import { renameSnapshotDefField } from '../../src/mdm/rest-commands.js';
import { restErrorCodes, scaleIoErrorCodes } from '../../src/mdm/rest-errors.js';
import { MdmError } from '../../src/mdm/state-machine.js';
import type { RestStoragePoolStatistics, RestSystem, RestSystemStatistics, RestVolume, RestVTree } from '../../src/mdm/rest-objects.js';
import { snapshotGroupVolumesMax, snapshotsPerVtreeMax } from '../../src/common/limits.js';
import { call, login, startTestApi, testClusterId, type TestApi } from '../helpers/rest.js';

const KiB = 1024;

async function post(api: TestApi, token: string, path: string, body: unknown): Promise<{ status: number; body: unknown }> {
  return call(api, 'POST', path, { token, body });
}

async function get<T = unknown>(api: TestApi, token: string, path: string): Promise<T> {
  const reply = await call(api, 'GET', path, { token });
  if (reply.status !== 200) throw new Error(`GET ${path}: ${reply.status} ${reply.text}`);
  return reply.body as T;
}

async function ok<T = unknown>(api: TestApi, token: string, path: string, body: unknown): Promise<T> {
  const reply = await post(api, token, path, body);
  if (reply.status !== 200) throw new Error(`POST ${path}: ${reply.status} ${JSON.stringify(reply.body)}`);
  return reply.body as T;
}

/** A pool over three SDSs, thin vol1 (128 MiB) and thick vol2 (64 MiB), two SDCs. */
async function populated(t: Test): Promise<{ api: TestApi; token: string; pd: string; pool: string; vol1: string; vol2: string; sdc1: string; sdc2: string }> {
  const api = await startTestApi(t);
  const token = await login(api);
  const pd = (await ok<{ id: string }>(api, token, '/api/types/ProtectionDomain/instances', { name: 'pd1' })).id;
  const pool = (await ok<{ id: string }>(api, token, '/api/types/StoragePool/instances', { protectionDomainId: pd, name: 'pool1', volumeGranularityInMb: 64 })).id;
  for (const [index, name] of ['sds1', 'sds2', 'sds3'].entries()) {
    const sdsId = api.controller.registerSds(name, 7300 + index);
    await ok(api, token, '/api/types/Sds/instances', { sdsId, protectionDomainId: pd });
    await ok(api, token, '/api/types/Device/instances', { sdsId, storagePoolId: pool, deviceCurrentPathName: '/dev/sdb' });
  }
  // As Cinder's PowerFlex driver creates a volume: with the protection domain and no compression.
  const vol1 = (await ok<{ id: string }>(api, token, '/api/types/Volume/instances', { protectionDomainId: pd, storagePoolId: pool, name: 'vol1', volumeType: 'ThinProvisioned', volumeSizeInKb: String(128 * KiB), compressionMethod: 'None' })).id;
  const vol2 = (await ok<{ id: string }>(api, token, '/api/types/Volume/instances', { storagePoolId: pool, name: 'vol2', volumeSizeInKb: 64 * KiB })).id;
  const sdc1 = api.controller.registerSdc('guid-0001-host1', 'host1');
  const sdc2 = api.controller.registerSdc('guid-0002-host2', 'host2');
  return { api, token, pd, pool, vol1, vol2, sdc1, sdc2 };
}

t.test('snapshots, groups, V-Trees, access modes, restore and removal in ScaleIO shapes', async (t) => {
  const { api, token, pool, vol1, vol2, sdc1, sdc2 } = await populated(t);
  const model = api.controller.state.model;
  const volume = (id: string): Promise<RestVolume> => get<RestVolume>(api, token, `/api/instances/Volume::${id}`);
  const base1 = await volume(vol1);
  t.match(base1, { volumeType: 'ThinProvisioned', ancestorVolumeId: null, consistencyGroupId: null, accessModeLimit: 'ReadWrite' }, 'a base volume');

  // One volume, as Cinder's driver asks: POST /api/instances/System/action/snapshotVolumes.
  const one = await ok<{ volumeIdList: string[]; snapshotGroupId: string }>(api, token, '/api/instances/System/action/snapshotVolumes', { snapshotDefs: [{ volumeId: vol1, snapshotName: 's1' }] });
  t.match(one, { volumeIdList: [/^[0-9a-f]{16}$/], snapshotGroupId: /^[0-9a-f]{16}$/ }, '{volumeIdList, snapshotGroupId}');
  const s1 = one.volumeIdList[0] as string;
  const snap1 = await volume(s1);
  t.match(snap1, { id: s1, name: 's1', volumeType: 'Snapshot', ancestorVolumeId: vol1, vtreeId: base1.vtreeId, consistencyGroupId: one.snapshotGroupId, accessModeLimit: 'ReadWrite', sizeInKb: base1.sizeInKb, storagePoolId: pool, mappedSdcInfo: null });
  t.ok(snap1.links.some((link) => link.rel === '/api/parent/relationship/ancestorVolumeId' && link.href === `/api/instances/Volume::${vol1}`), 'a link to its ancestor');
  t.ok(snap1.links.some((link) => link.rel === '/api/parent/relationship/vtreeId' && link.href === `/api/instances/VTree::${base1.vtreeId}`), 'a link to its V-Tree');

  // A consistency group through System::ID (PyPowerFlex, goscaleio), read-only, one left unnamed.
  const group = await ok<{ volumeIdList: string[]; snapshotGroupId: string }>(api, token, `/api/instances/System::${testClusterId}/action/snapshotVolumes`, {
    snapshotDefs: [{ volumeId: vol1, snapshotName: 'g1' }, { volumeId: vol2 }],
    accessModeLimit: 'ReadOnly',
    allowOnExtManagedVol: false,
  });
  t.equal(group.volumeIdList.length, 2, 'one id per def');
  t.not(group.snapshotGroupId, one.snapshotGroupId, 'a group of its own');
  const [g1, g2] = await Promise.all(group.volumeIdList.map(volume));
  t.match(g1, { name: 'g1', ancestorVolumeId: vol1, consistencyGroupId: group.snapshotGroupId, accessModeLimit: 'ReadOnly', volumeType: 'Snapshot' }, 'in the order of snapshotDefs');
  t.match(g2, { ancestorVolumeId: vol2, consistencyGroupId: group.snapshotGroupId, accessModeLimit: 'ReadOnly', volumeType: 'Snapshot' });
  t.match(g2?.name, /^vol2-snap-\d+$/, 'the MDM names a snapshot left unnamed after its volume');
  t.equal(g2?.sizeInKb, 64 * KiB, "a thick volume's snapshot has its size");

  // A snapshot of a snapshot: same V-Tree, its ancestor is the snapshot.
  const s1a = (await ok<{ volumeIdList: string[] }>(api, token, '/api/instances/System/action/snapshotVolumes', { snapshotDefs: [{ volumeId: s1, snapshotName: 's1a' }] })).volumeIdList[0] as string;
  t.match(await volume(s1a), { ancestorVolumeId: s1, vtreeId: base1.vtreeId, volumeType: 'Snapshot' });

  // V-Trees.
  const trees = await get<RestVTree[]>(api, token, '/api/types/VTree/instances');
  t.equal(trees.length, 2, 'one V-Tree per base volume');
  const tree1 = await get<RestVTree>(api, token, `/api/instances/VTree::${base1.vtreeId}`);
  t.match(tree1, { id: base1.vtreeId, name: 'vol1', baseVolumeId: vol1, storagePoolId: pool, numOfVolumes: 4, numOfSnapshots: 3 });
  t.same((await get<RestVolume[]>(api, token, `/api/instances/VTree::${base1.vtreeId}/relationships/Volume`)).map((entry) => entry.name), ['g1', 's1', 's1a', 'vol1'], 'VTree → Volume');
  t.same((await get<RestVTree[]>(api, token, `/api/instances/StoragePool::${pool}/relationships/VTree`)).length, 2, 'StoragePool → VTree');
  t.match(await get<RestStoragePoolStatistics>(api, token, `/api/instances/StoragePool::${pool}/relationships/Statistics`), { numOfVolumes: 6, numOfSnapshots: 4, numOfVtrees: 2, numOfThinBaseVolumes: 1, numOfThickBaseVolumes: 1, snapshotCapacityProvisionedInKb: (3 * 128 + 64) * KiB, thinCapacityProvisionedInKb: 128 * KiB });
  t.match(await get<RestSystemStatistics>(api, token, `/api/instances/System::${testClusterId}/relationships/Statistics`), { numOfVolumes: 6, numOfSnapshots: 4, numOfVtrees: 2 });
  t.match(await get<RestSystem>(api, token, `/api/instances/System::${testClusterId}`), { snapshotsPerVtree: 31 });

  // Access mode: a writable snapshot made read-only, and back.
  await ok(api, token, `/api/instances/Volume::${s1}/action/setVolumeAccessModeLimit`, { accessModeLimit: 'ReadOnly' });
  t.equal(model.volumes[s1]?.accessModeLimit, 'ReadOnly');
  await ok(api, token, `/api/instances/Volume::${s1}/action/setVolumeAccessModeLimit`, { accessModeLimit: 'ReadWrite' });
  t.equal(model.volumes[s1]?.accessModeLimit, 'ReadWrite');

  // Restore: the volume keeps its id, name and mappings.
  await ok(api, token, `/api/instances/Volume::${vol1}/action/addMappedSdc`, { sdcId: sdc1 });
  await ok(api, token, `/api/instances/Volume::${vol1}/action/overwriteVolumeContent`, { srcVolumeId: s1 });
  t.match(await volume(vol1), { id: vol1, name: 'vol1', vtreeId: base1.vtreeId, volumeType: 'ThinProvisioned', mappedSdcInfo: [{ sdcId: sdc1 }] }, 'restored in place');

  // removeMappedSdc {"allSdcs": ""}, as Cinder unmaps before every removal; with no mapping left too.
  await ok(api, token, `/api/instances/Volume::${vol1}/action/addMappedSdc`, { sdcId: sdc2, allowMultipleMappings: 'True' });
  t.equal(model.volumes[vol1]?.mappings.length, 2, "Cinder's 'True' is true");
  await ok(api, token, `/api/instances/Volume::${vol1}/action/removeMappedSdc`, { allSdcs: '' });
  t.same(model.volumes[vol1]?.mappings, [], 'unmapped from every SDC');
  await ok(api, token, `/api/instances/Volume::${vol1}/action/removeMappedSdc`, { allSdcs: '' });

  // Removal modes. DESCENDANTS_ONLY: s1's snapshot goes, s1 stays.
  await ok(api, token, `/api/instances/Volume::${s1}/action/removeVolume`, { removeMode: 'DESCENDANTS_ONLY' });
  t.ok(model.volumes[s1] !== undefined && model.volumes[s1a] === undefined, 'DESCENDANTS_ONLY');
  const s1b = (await ok<{ volumeIdList: string[] }>(api, token, '/api/instances/System/action/snapshotVolumes', { snapshotDefs: [{ volumeId: s1, snapshotName: 's1b' }] })).volumeIdList[0] as string;
  await ok(api, token, `/api/instances/Volume::${s1}/action/removeVolume`, { removeMode: 'INCLUDING_DESCENDANTS' });
  t.ok(model.volumes[s1] === undefined && model.volumes[s1b] === undefined && model.volumes[vol1] !== undefined, 'INCLUDING_DESCENDANTS');
  // ONLY_ME of a base volume: its snapshots stay readable, the tree has no base volume then.
  const s2 = (await ok<{ volumeIdList: string[] }>(api, token, '/api/instances/System/action/snapshotVolumes', { snapshotDefs: [{ volumeId: vol1, snapshotName: 's2' }] })).volumeIdList[0] as string;
  await ok(api, token, `/api/instances/Volume::${vol1}/action/removeVolume`, {});
  t.ok(model.volumes[vol1] === undefined && model.volumes[s2] !== undefined, 'ONLY_ME is the default');
  t.match(await get<RestVTree>(api, token, `/api/instances/VTree::${base1.vtreeId}`), { baseVolumeId: null, numOfVolumes: 2 }, 'the V-Tree lives on');

  // A group goes together: {numberOfVolumes}.
  t.same(await ok(api, token, '/api/instances/System/action/removeConsistencyGroupSnapshots', { snapGroupId: group.snapshotGroupId }), { numberOfVolumes: 2 });
  t.ok(model.volumes[group.volumeIdList[0] as string] === undefined && model.volumes[group.volumeIdList[1] as string] === undefined, 'both members gone');

  // WHOLE_VTREE from a snapshot takes the base volume too.
  const s3 = (await ok<{ volumeIdList: string[] }>(api, token, '/api/instances/System/action/snapshotVolumes', { snapshotDefs: [{ volumeId: vol2, snapshotName: 's3' }] })).volumeIdList[0] as string;
  await ok(api, token, `/api/instances/Volume::${s3}/action/removeVolume`, { removeMode: 'WHOLE_VTREE' });
  t.ok(model.volumes[vol2] === undefined && model.volumes[s3] === undefined, 'WHOLE_VTREE');
  t.same((await get<RestVolume[]>(api, token, '/api/types/Volume/instances')).map((entry) => entry.name), ['s2'], 'only s2 is left');

  // Cinder makes a volume from a snapshot by snapshotting it and growing the new one.
  const fromSnapshot = (await ok<{ volumeIdList: string[] }>(api, token, '/api/instances/System/action/snapshotVolumes', { snapshotDefs: [{ volumeId: s2, snapshotName: 'cinder-vol' }] })).volumeIdList[0] as string;
  await ok(api, token, `/api/instances/Volume::${fromSnapshot}/action/setVolumeSize`, { sizeInGB: '1' });
  t.match(await volume(fromSnapshot), { sizeInKb: 1024 * 1024, volumeType: 'Snapshot', ancestorVolumeId: s2 }, 'a snapshot grows');
});

t.test("the core's refusals arrive as ScaleIO-shaped errors, nothing changed", async (t) => {
  const { api, token, vol1, vol2, sdc1 } = await populated(t);
  const snap = (volumeId: string, snapshotName: string) => post(api, token, '/api/instances/System/action/snapshotVolumes', { snapshotDefs: [{ volumeId, snapshotName }] });
  t.equal((await snap(vol1, 'a1')).status, 200);
  const other = ((await snap(vol2, 'b1')).body as { volumeIdList: string[] }).volumeIdList[0] as string;
  await ok(api, token, `/api/instances/System::${testClusterId}/action/setSnapshotsPerVtree`, { snapshotsPerVtree: 1 });
  t.equal(api.controller.state.model.snapshotsPerVtree, 1);
  await ok(api, token, `/api/instances/Volume::${other}/action/addMappedSdc`, { sdcId: sdc1 });
  const before = JSON.stringify(api.controller.state.model);

  const limit = await snap(vol1, 'a2');
  t.match(limit, { status: 409, body: { code: 'MB_ERR_SNAPSHOT_LIMIT', errorCode: restErrorCodes['MB_ERR_SNAPSHOT_LIMIT'] } }, 'the snapshot limit of the V-Tree');
  t.match((limit.body as { message: string }).message, /the V-Tree of volume 'vol1' holds 1 snapshot\(s\); 1 more would pass the limit of 1 per V-Tree/, 'says the limit');
  const mismatch = await post(api, token, `/api/instances/Volume::${vol1}/action/overwriteVolumeContent`, { srcVolumeId: other });
  t.match(mismatch.body, { code: 'MB_ERR_VTREE_MISMATCH', errorCode: restErrorCodes['MB_ERR_VTREE_MISMATCH'] }, 'restore from another V-Tree');
  t.equal(mismatch.status, 409);
  t.match((mismatch.body as { message: string }).message, /volume 'b1' is not of the V-Tree of 'vol1'/, 'names both');
  t.match((await post(api, token, `/api/instances/Volume::${other}/action/removeVolume`, { removeMode: 'ONLY_ME' })).body, { code: 'MB_ERR_VOLUME_MAPPED' }, 'a mapped snapshot stays');
  t.match((await post(api, token, `/api/instances/Volume::${vol2}/action/removeVolume`, { removeMode: 'WHOLE_VTREE' })).body, { code: 'MB_ERR_VOLUME_MAPPED' }, 'so does its tree');
  t.equal(JSON.stringify(api.controller.state.model), before, 'nothing changed');
});

t.test('bad input: 4xx naming the field, the model unchanged', async (t) => {
  const { api, token, pool, vol1, vol2, sdc1 } = await populated(t);
  const created = await ok<{ volumeIdList: string[]; snapshotGroupId: string }>(api, token, '/api/instances/System/action/snapshotVolumes', { snapshotDefs: [{ volumeId: vol1, snapshotName: 's1' }] });
  const s1 = created.volumeIdList[0] as string;
  const vtreeId = api.controller.state.model.volumes[vol1]?.vtreeId as string;
  const unknownId = 'ffffffffffffffff';
  const snapshotVolumes = '/api/instances/System/action/snapshotVolumes';
  const invalid = (what: string, path: string, body: unknown, message: RegExp) => ({ what, path, body, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message });
  const cases: Array<{ what: string; method?: string; path: string; body?: unknown; status: number; code: string; errorCode?: number; message?: RegExp }> = [
    invalid('no snapshotDefs', snapshotVolumes, {}, /^snapshotDefs: is required/),
    invalid('snapshotDefs not an array', snapshotVolumes, { snapshotDefs: { volumeId: vol1 } }, /^snapshotDefs: must be a JSON array of objects, got an object/),
    invalid('no defs', snapshotVolumes, { snapshotDefs: [] }, new RegExp(`^snapshotDefs: must hold 1 to ${snapshotGroupVolumesMax} entries, got 0`)),
    invalid('too many defs', snapshotVolumes, { snapshotDefs: Array.from({ length: snapshotGroupVolumesMax + 1 }, () => ({ volumeId: vol1 })) }, new RegExp(`got ${snapshotGroupVolumesMax + 1}$`)),
    invalid('a def not an object', snapshotVolumes, { snapshotDefs: ['vol1'] }, /^snapshotDefs\[0\]: must be a JSON object, got 'vol1'/),
    invalid('volumeId missing', snapshotVolumes, { snapshotDefs: [{ volumeId: vol1 }, { snapshotName: 'x' }] }, /^snapshotDefs\[1\]\.volumeId: is required/),
    invalid('volumeId not an id', snapshotVolumes, { snapshotDefs: [{ volumeId: 'vol1' }] }, /^snapshotDefs\[0\]\.volumeId: must be an id of 16 lowercase hex digits, got 'vol1'/),
    invalid('unknown field in a def', snapshotVolumes, { snapshotDefs: [{ volumeId: vol1, name: 'x' }] }, /^snapshotDefs\[0\]\.name: unknown field; this request takes snapshotName, volumeId/),
    invalid('bad snapshot name', snapshotVolumes, { snapshotDefs: [{ volumeId: vol1, snapshotName: 'has space' }] }, /^snapshotDefs\[0\]\.snapshotName: must be 1 to 31/),
    invalid('a volume twice', snapshotVolumes, { snapshotDefs: [{ volumeId: vol1 }, { volumeId: vol2 }, { volumeId: vol1 }] }, /^snapshotDefs\[2\]\.volumeId: names volume [0-9a-f]{16} again \(as snapshotDefs\[0\] does\)/),
    invalid('a name twice', snapshotVolumes, { snapshotDefs: [{ volumeId: vol1, snapshotName: 'x' }, { volumeId: vol2, snapshotName: 'x' }] }, /^snapshotDefs\[1\]\.snapshotName: 'x' is given to snapshotDefs\[0\] too/),
    invalid('bad access mode', snapshotVolumes, { snapshotDefs: [{ volumeId: vol1 }], accessModeLimit: 'NoAccess' }, /^accessModeLimit: must be 'ReadWrite' or 'ReadOnly', got 'NoAccess'/),
    invalid('retention', snapshotVolumes, { snapshotDefs: [{ volumeId: vol1 }], retentionPeriodInMin: '60' }, /^retentionPeriodInMin: snapshots that expire/),
    invalid('unknown top-level field', snapshotVolumes, { snapshotDefs: [{ volumeId: vol1 }], snapshotName: 'x' }, /^snapshotName: unknown field; this request takes accessModeLimit, allowOnExtManagedVol, retentionPeriodInMin, snapshotDefs/),
    { what: 'snapshot of a missing volume', path: snapshotVolumes, body: { snapshotDefs: [{ volumeId: vol1 }, { volumeId: unknownId }] }, status: 404, code: 'MB_ERR_NOT_FOUND', errorCode: scaleIoErrorCodes.volumeNotFound, message: /^snapshotDefs\[1\]\.volumeId: no volume with id ffffffffffffffff/ },
    { what: 'snapshot name taken', path: snapshotVolumes, body: { snapshotDefs: [{ volumeId: vol1, snapshotName: 'vol2' }] }, status: 409, code: 'MB_ERR_NAME_TAKEN', errorCode: scaleIoErrorCodes.volumeNameTaken, message: /^snapshotDefs\[0\]\.snapshotName: a volume named 'vol2' already exists/ },
    { what: 'another system', path: `/api/instances/System::${unknownId}/action/snapshotVolumes`, body: { snapshotDefs: [{ volumeId: vol1 }] }, status: 404, code: 'MB_ERR_NOT_FOUND', message: /no System with id/ },
    { what: 'unknown System action', path: '/api/instances/System/action/snapshotEverything', body: {}, status: 404, code: 'MB_ERR_NO_ROUTE', message: /System has no action 'snapshotEverything' \(actions: snapshotVolumes, removeConsistencyGroupSnapshots/ },
    invalid('no snapGroupId', '/api/instances/System/action/removeConsistencyGroupSnapshots', {}, /^snapGroupId: is required/),
    invalid('snapGroupId not an id', '/api/instances/System/action/removeConsistencyGroupSnapshots', { snapGroupId: 'g' }, /^snapGroupId: must be an id/),
    { what: 'unknown group', path: '/api/instances/System/action/removeConsistencyGroupSnapshots', body: { snapGroupId: unknownId }, status: 404, code: 'MB_ERR_NOT_FOUND', message: /^snapGroupId: no snapshot group with id ffffffffffffffff/ },
    invalid('no srcVolumeId', `/api/instances/Volume::${vol1}/action/overwriteVolumeContent`, {}, /^srcVolumeId: is required/),
    invalid('restore from itself', `/api/instances/Volume::${vol1}/action/overwriteVolumeContent`, { srcVolumeId: vol1 }, /^srcVolumeId: is the volume being overwritten/),
    { what: 'restore from a missing volume', path: `/api/instances/Volume::${vol1}/action/overwriteVolumeContent`, body: { srcVolumeId: unknownId }, status: 404, code: 'MB_ERR_NOT_FOUND', errorCode: scaleIoErrorCodes.volumeNotFound, message: /^srcVolumeId: no volume with id/ },
    invalid('bad access mode limit', `/api/instances/Volume::${s1}/action/setVolumeAccessModeLimit`, { accessModeLimit: 'ro' }, /^accessModeLimit: must be 'ReadWrite' or 'ReadOnly', got 'ro'/),
    invalid('no access mode limit', `/api/instances/Volume::${s1}/action/setVolumeAccessModeLimit`, {}, /^accessModeLimit: is required/),
    invalid('bad remove mode', `/api/instances/Volume::${s1}/action/removeVolume`, { removeMode: 'EVERYTHING' }, /^removeMode: must be 'ONLY_ME' or 'INCLUDING_DESCENDANTS' or 'DESCENDANTS_ONLY' or 'WHOLE_VTREE', got 'EVERYTHING'/),
    invalid('allSdcs with sdcId', `/api/instances/Volume::${vol1}/action/removeMappedSdc`, { allSdcs: '', sdcId: sdc1 }, /^allSdcs: give sdcId or allSdcs, not both/),
    invalid('limit 0', `/api/instances/System::${testClusterId}/action/setSnapshotsPerVtree`, { snapshotsPerVtree: 0 }, new RegExp(`^snapshotsPerVtree: must be a whole number from 1 to ${snapshotsPerVtreeMax}, got number 0`)),
    invalid('limit over the maximum', '/api/instances/System/action/setSnapshotsPerVtree', { snapshotsPerVtree: snapshotsPerVtreeMax + 1 }, /^snapshotsPerVtree: must be a whole number from 1/),
    invalid('volume in another protection domain', '/api/types/Volume/instances', { protectionDomainId: unknownId, storagePoolId: pool, name: 'v', volumeSizeInKb: 1024 }, /^protectionDomainId: is not storage pool 'pool1''s protection domain/),
    invalid('compression', '/api/types/Volume/instances', { storagePoolId: pool, name: 'v', volumeSizeInKb: 1024, compressionMethod: 'Normal' }, /^compressionMethod: must be 'None' or 'Invalid', got 'Normal'/),
    { what: 'creating a V-Tree', path: '/api/types/VTree/instances', body: {}, status: 405, code: 'MB_ERR_METHOD_NOT_ALLOWED', message: /each new volume starts one/ },
    { what: 'a V-Tree by name', path: '/api/types/VTree/instances/action/queryIdByKey', body: { name: 'vol1' }, status: 404, code: 'MB_ERR_NO_ROUTE', message: /VTree instances have no names/ },
    { what: 'an unknown V-Tree', method: 'GET', path: `/api/instances/VTree::${unknownId}`, status: 404, code: 'MB_ERR_NOT_FOUND' },
    { what: 'an action on a V-Tree', path: `/api/instances/VTree::${vtreeId}/action/removeVTree`, body: {}, status: 404, code: 'MB_ERR_NO_ROUTE', message: /VTree has no action 'removeVTree'$/ },
  ];
  const before = JSON.stringify(api.controller.state.model);
  for (const entry of cases) {
    const reply = await call(api, entry.method ?? 'POST', entry.path, { token, ...(entry.body !== undefined ? { body: entry.body } : {}) });
    t.equal(reply.status, entry.status, `${entry.what}: HTTP ${entry.status}`);
    t.match(reply.body, { code: entry.code, httpStatusCode: entry.status, errorCode: entry.errorCode ?? restErrorCodes[entry.code] }, `${entry.what}: ${entry.code}`);
    if (entry.message !== undefined) t.match((reply.body as { message: string }).message, entry.message, `${entry.what}: says why`);
    t.notMatch((reply.body as { message: string }).message, /\n/, `${entry.what}: one line`);
  }
  t.equal(JSON.stringify(api.controller.state.model), before, 'nothing changed in the model');
});

t.test("the core's def fields are named as the client sent them", async (t) => {
  const renamed = (message: string): string => (renameSnapshotDefField(new MdmError('MB_ERR_INVALID_ARGUMENT', message, 400)) as Error).message;
  t.equal(renamed('defs[2].name: must be 1 to 31 letters'), 'snapshotDefs[2].snapshotName: must be 1 to 31 letters');
  t.equal(renamed('defs[0].volumeId: volume named twice'), 'snapshotDefs[0].volumeId: volume named twice');
  t.equal(renamed('defs[1].readOnly: must be true or false'), 'accessModeLimit: must be true or false');
  t.equal(renamed('defs: must name 1 to 64 volumes'), 'snapshotDefs: must name 1 to 64 volumes');
  t.equal(renamed('name: taken'), 'name: taken', 'other fields are left alone');
  const conflict = new MdmError('MB_ERR_NAME_TAKEN', 'defs[0].name: taken', 409);
  t.equal(renameSnapshotDefField(conflict), conflict, 'only invalid arguments');
});
