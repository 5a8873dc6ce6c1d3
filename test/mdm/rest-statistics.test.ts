// Proves the REST API's statistics in ScaleIO's shapes over real HTTPS against a real
// StateMachine behind the in-test controller (test/helpers/rest.ts), whose SDS reports the
// test sets by hand:
// - Cinder's PowerFlex driver's exact pool query (get_volume_stats: the five properties, ids
//   of one pool) answers one key with five numbers, and Cinder's own arithmetic on them gives
//   the pool's usable, free and provisioned capacity (net, after the two copies);
// - querySelectedStatistics by type with ids, allIds "" and [""], the System's own form, and
//   ScaleIO's several-types form (selectedStatisticsList), each the same values as the
//   object's relationships/Statistics, which every type now has;
// - IO counters in ScaleIO's Bwc shape from the SDSs' reported rates (numSeconds 0 while
//   nothing is reported);
// - bad input (an unknown property, as ScaleIO refuses it, an unknown id, type or field,
//   wrong shapes) is refused with 4xx naming the field, and nothing answered or changed.

import t, { type Test } from 'tap';
import type { RestBwc } from '../../src/mdm/rest-statistics.js';
import { restTypes } from '../../src/mdm/rest-objects.js';
import { GiB, MiB, call, populatedApi, testClusterId, type PopulatedApi, type TestApi } from '../helpers/rest.js';

const KiB = 1024;

interface Populated extends PopulatedApi {
  thick: string;
  thin: string;
  sdc: string;
}

async function post(api: TestApi, token: string, path: string, body: unknown): Promise<{ status: number; body: unknown }> {
  return call(api, 'POST', path, { token, body });
}

/** The parsed body of a request that must succeed. */
async function ok<T = Record<string, unknown>>(api: TestApi, token: string, method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  const reply = await call(api, method, path, { token, body });
  if (reply.status !== 200) throw new Error(`${method} ${path}: ${reply.status} ${reply.text}`);
  return reply.body as T;
}

async function create(api: TestApi, token: string, type: string, body: unknown): Promise<string> {
  return (await ok<{ id: string }>(api, token, 'POST', `/api/types/${type}/instances`, body)).id;
}

/** A pool over three SDSs (1 GiB device each), a 256 MiB thick and a 2 GiB thin volume, the thin one mapped to an SDC. */
async function populated(t: Test): Promise<Populated> {
  const { api, token, pd, pool, sds, devices } = await populatedApi(t);
  const thick = await create(api, token, 'Volume', { storagePoolId: pool, name: 'thick1', volumeSizeInKb: 256 * 1024, volumeType: 'ThickProvisioned' });
  const thin = await create(api, token, 'Volume', { storagePoolId: pool, name: 'thin1', volumeSizeInKb: 2 * 1024 * 1024, volumeType: 'ThinProvisioned' });
  const sdc = api.controller.registerSdc('0a1b2c3d-0000-1111-2222-333344445555', 'host1');
  await ok(api, token, 'POST', `/api/instances/Volume::${thin}/action/addMappedSdc`, { sdcId: sdc });
  // 96 MiB written on each device (both copies of 144 MiB), 32 MiB of it only snapshots reach.
  for (const id of devices) Object.assign(api.controller.state.model.devices[id] as object, { usedBytes: 96 * MiB, snapshotBytes: 32 * MiB });
  return { api, token, pd, pool, sds, devices, thick, thin, sdc };
}

function model(api: TestApi): string {
  return JSON.stringify(api.controller.state.model);
}

t.test("Cinder's pool query: five numbers under the pool's id, and Cinder's arithmetic gives usable, free and provisioned", async (t) => {
  const { api, token, pool } = await populated(t);
  // driver.py _get_queryable_statistics for a 3.x API, as E3 saw it sent (/work/e3-findings.md F5).
  const properties = ['snapshotCapacityInKb', 'thickCapacityInUseInKb', 'netCapacityInUseInKb', 'netUnusedCapacityInKb', 'thinCapacityAllocatedInKb'];
  const reply = await ok<Record<string, Record<string, number>>>(api, token, 'POST', '/api/types/StoragePool/instances/action/querySelectedStatistics', { ids: [pool], properties });
  t.same(Object.keys(reply), [pool], 'exactly one key, the pool id (Cinder unpacks `raw, = response.values()`)');
  const stats = reply[pool] as Record<string, number>;
  t.same(Object.keys(stats).sort(), [...properties].sort(), 'exactly the properties asked for');
  for (const property of properties) t.type(stats[property], 'number', `${property} is a number`);

  const rawBytes = 3 * GiB;
  const spareBytes = Math.ceil((rawBytes * 10) / 100);
  const usedRawBytes = 3 * 96 * MiB;
  const thickBytes = 256 * MiB;
  const usableBytes = Math.floor((rawBytes - spareBytes) / 2);
  // What a new volume can still get: usable less the thick reservation (144 MiB written < 256 MiB thick).
  const availableBytes = usableBytes - Math.max(thickBytes, usedRawBytes / 2);
  t.same(stats, {
    snapshotCapacityInKb: (3 * 32 * MiB) / KiB,
    thickCapacityInUseInKb: (2 * thickBytes) / KiB,
    netCapacityInUseInKb: usedRawBytes / 2 / KiB,
    netUnusedCapacityInKb: Math.floor(availableBytes / KiB),
    thinCapacityAllocatedInKb: (2 * 2 * GiB) / KiB,
  });

  // driver.py _compute_pool_stats_v3, in KiB rather than GiB.
  const totalKb = (stats['netCapacityInUseInKb'] as number) + (stats['netUnusedCapacityInKb'] as number);
  const provisionedKb = ((stats['thickCapacityInUseInKb'] as number) + (stats['snapshotCapacityInKb'] as number) + (stats['thinCapacityAllocatedInKb'] as number)) / 2;
  // The thick volume's unwritten reservation is neither in use nor free (docs/rest-statistics.md).
  t.ok(Math.abs(totalKb - (usableBytes - (thickBytes - usedRawBytes / 2)) / KiB) <= 1, `total: usable less the thick volume's unwritten reservation (${totalKb} KiB)`);
  t.equal(stats['netUnusedCapacityInKb'], (await ok<Record<string, number>>(api, token, 'GET', `/api/instances/StoragePool::${pool}/relationships/Statistics`))['capacityAvailableForVolumeAllocationInKb'], 'free: what a new volume can get');
  t.equal(provisionedKb, (thickBytes + 2 * GiB + (3 * 32 * MiB) / 2) / KiB, 'provisioned: the volumes net, and the net of snapshot-only data');

  // The same numbers as the pool's Statistics.
  const statistics = await ok(api, token, 'GET', `/api/instances/StoragePool::${pool}/relationships/Statistics`);
  t.match(statistics, stats, 'relationships/Statistics has the same values');
});

t.test('every type has Statistics, and querySelectedStatistics of every property it lists answers the same', async (t) => {
  const { api, token, pd, pool, sds, devices, thick, sdc } = await populated(t);
  const faultSet = await create(api, token, 'FaultSet', { protectionDomainId: pd, name: 'fs1' });
  const vtree = (api.controller.state.model.volumes[thick] as { vtreeId: string }).vtreeId;
  const ids: Record<string, string> = { System: testClusterId, ProtectionDomain: pd, StoragePool: pool, FaultSet: faultSet, Sds: sds[0] as string, Device: devices[0] as string, Sdc: sdc, Volume: thick, VTree: vtree };
  for (const type of restTypes) {
    const id = ids[type] as string;
    const statistics = await ok(api, token, 'GET', `/api/instances/${type}::${id}/relationships/Statistics`);
    const properties = Object.keys(statistics);
    t.ok(properties.length > 0, `${type}: Statistics has ${properties.length} properties`);
    const byIds = await ok(api, token, 'POST', `/api/types/${type}/instances/action/querySelectedStatistics`, { ids: [id], properties });
    t.same(byIds, { [id]: statistics }, `${type}: querySelectedStatistics of all of them is the Statistics`);
    const instance = await ok<{ links: Array<{ rel: string; href: string }> }>(api, token, 'GET', `/api/instances/${type}::${id}`);
    t.ok(
      instance.links.some((link) => link.href.endsWith('/relationships/Statistics')),
      `${type}: its links name the Statistics`,
    );
  }
});

t.test('allIds (any value), ids, the System forms and the several-types form', async (t) => {
  const { api, token, pool, thick, thin, sdc } = await populated(t);
  const path = '/api/types/Volume/instances/action/querySelectedStatistics';
  for (const allIds of ['', [''], true]) {
    const every = await ok(api, token, 'POST', path, { allIds, properties: ['numOfMappedSdcs'] });
    t.same(every, { [thick]: { numOfMappedSdcs: 0 }, [thin]: { numOfMappedSdcs: 1 } }, `allIds ${JSON.stringify(allIds)}: every volume`);
  }
  t.same(await ok(api, token, 'POST', path, { ids: [thin], properties: ['mappedSdcIds', 'numOfMappedSdcs'] }), { [thin]: { mappedSdcIds: [sdc], numOfMappedSdcs: 1 } }, 'ids: those volumes');
  t.same(await ok(api, token, 'POST', path, { ids: [], properties: ['numOfMappedSdcs'] }), {}, 'no ids: nothing');
  t.same(await ok(api, token, 'POST', '/api/types/Sdc/instances/action/querySelectedStatistics', { allIds: '', properties: ['numOfMappedVolumes', 'volumeIds'] }), { [sdc]: { numOfMappedVolumes: 1, volumeIds: [thin] } }, "an SDC's volumes");

  // The System: one instance, so allIds and ids are optional.
  const systemProperties = ['numOfVolumes', 'numOfSdc', 'capacityLimitInKb'];
  const expected = { numOfVolumes: 2, numOfSdc: 1, capacityLimitInKb: (3 * GiB) / KiB };
  t.same(await ok(api, token, 'POST', '/api/types/System/instances/action/querySelectedStatistics', { properties: systemProperties }), { [testClusterId]: expected }, 'System by type: under its id');
  t.same(await ok(api, token, 'POST', '/api/instances/System/action/querySelectedStatistics', { properties: systemProperties }), expected, "the System's own action: the properties themselves");
  t.same(await ok(api, token, 'POST', `/api/instances/System::${testClusterId}/action/querySelectedStatistics`, { properties: systemProperties }), expected, 'and with its id');
  const wrongSystem = await post(api, token, '/api/instances/System::ffffffffffffffff/action/querySelectedStatistics', { properties: systemProperties });
  t.equal(wrongSystem.status, 404);
  t.match(wrongSystem.body, { code: 'MB_ERR_NOT_FOUND', httpStatusCode: 404 });

  // ScaleIO's several-types form, as monitoring tools send it.
  const several = await ok(api, token, 'POST', '/api/instances/querySelectedStatistics', {
    selectedStatisticsList: [
      { type: 'System', properties: ['numOfVolumes'] },
      { type: 'StoragePool', allIds: '', properties: ['numOfVolumes', 'capacityInUseInKb'] },
      { type: 'Volume', ids: [thick], properties: ['numOfMappedSdcs'] },
    ],
  });
  t.same(several, { System: { numOfVolumes: 2 }, StoragePool: { [pool]: { numOfVolumes: 2, capacityInUseInKb: (3 * 96 * MiB) / KiB } }, Volume: { [thick]: { numOfMappedSdcs: 0 } } });
});

t.test("IO in ScaleIO's Bwc shape, from the SDSs' reported rates", async (t) => {
  const { api, token, pool, sds, devices } = await populated(t);
  const path = '/api/types/StoragePool/instances/action/querySelectedStatistics';
  const none: RestBwc = { numSeconds: 0, totalWeightInKb: 0, numOccured: 0 };
  t.same(await ok(api, token, 'POST', path, { ids: [pool], properties: ['userDataReadBwc', 'totalWriteBwc'] }), { [pool]: { userDataReadBwc: none, totalWriteBwc: none } }, 'no report yet: numSeconds 0');

  // Two SDSs report: reads 5 + 3 IOPS of 2 + 1 MiB/s, writes 8 + 4 IOPS of 4 + 2 MiB/s.
  const report = (index: number, readIops: number, readBytesPerSecond: number, writeIops: number, writeBytesPerSecond: number): void => {
    const sdsId = sds[index] as string;
    const deviceId = devices[index] as string;
    api.controller.stats.set(sdsId, {
      sdsId,
      name: `sds${index + 1}`,
      epoch: 1,
      chunkBytes: MiB,
      reservedBytes: 0,
      devices: [{ deviceId, path: '/dev/sdb', state: 'normal', error: null, totalBytes: GiB, usedBytes: 96 * MiB, freeBytes: GiB - 96 * MiB, reads: 0, writes: 0, readBytes: 0, writeBytes: 0, readIops, writeIops, readBytesPerSecond, writeBytesPerSecond }],
      rebuilds: [],
    });
  };
  report(0, 5, 2 * MiB, 8, 4 * MiB);
  report(1, 3, MiB, 4, 2 * MiB);
  const device = await ok(api, token, 'POST', '/api/types/Device/instances/action/querySelectedStatistics', { ids: [devices[0]], properties: ['totalReadBwc', 'totalWriteBwc'] });
  t.same(device, { [devices[0] as string]: { totalReadBwc: { numSeconds: 1, totalWeightInKb: 2048, numOccured: 5 }, totalWriteBwc: { numSeconds: 1, totalWeightInKb: 4096, numOccured: 8 } } }, 'a device: its rates, per second');
  const sdsReply = await ok<Record<string, Record<string, RestBwc>>>(api, token, 'GET', `/api/instances/Sds::${sds[1]}/relationships/Statistics`);
  t.same(sdsReply['totalReadBwc'], { numSeconds: 1, totalWeightInKb: 1024, numOccured: 3 }, 'an SDS: its devices');

  const reads: RestBwc = { numSeconds: 1, totalWeightInKb: 3 * 1024, numOccured: 8 };
  // Every client write is written on two devices: half the device writes.
  const writes: RestBwc = { numSeconds: 1, totalWeightInKb: 3 * 1024, numOccured: 6 };
  const properties = ['totalReadBwc', 'totalWriteBwc', 'primaryReadBwc', 'userDataReadBwc', 'primaryWriteBwc', 'secondaryWriteBwc', 'userDataWriteBwc'];
  const expected = { totalReadBwc: reads, totalWriteBwc: { numSeconds: 1, totalWeightInKb: 6 * 1024, numOccured: 12 }, primaryReadBwc: reads, userDataReadBwc: reads, primaryWriteBwc: writes, secondaryWriteBwc: writes, userDataWriteBwc: writes };
  t.same(await ok(api, token, 'POST', path, { ids: [pool], properties }), { [pool]: expected }, 'a pool: reads from primaries, writes halved');
  t.same(await ok(api, token, 'POST', '/api/instances/System/action/querySelectedStatistics', { properties }), expected, 'the system: the same, one pool');
  t.same(await ok(api, token, 'POST', '/api/instances/System/action/querySelectedStatistics', { properties: ['fwdRebuildReadBwc'] }), { fwdRebuildReadBwc: none }, 'no rebuild: nothing copied');
});

t.test('a V-Tree counts its volumes, snapshots included (what Cinder limits image-cache clones by)', async (t) => {
  const { api, token, thin } = await populated(t);
  const snapshot = await ok<{ volumeIdList: string[] }>(api, token, 'POST', '/api/instances/System/action/snapshotVolumes', { snapshotDefs: [{ volumeId: thin, snapshotName: 'snap1' }] });
  const vtree = (api.controller.state.model.volumes[thin] as { vtreeId: string }).vtreeId;
  t.match(await ok(api, token, 'GET', `/api/instances/VTree::${vtree}/relationships/Statistics`), { numOfVolumes: 2, numOfSnapshots: 1 });
  t.same(await ok(api, token, 'POST', '/api/types/Volume/instances/action/querySelectedStatistics', { ids: [thin], properties: ['numOfChildVolumes', 'numOfDescendantVolumes'] }), { [thin]: { numOfChildVolumes: 1, numOfDescendantVolumes: 1 } });
  t.equal(snapshot.volumeIdList.length, 1);
});

t.test('bad input: 4xx naming the field, nothing answered, the model unchanged', async (t) => {
  const { api, token, pool, thick } = await populated(t);
  const path = '/api/types/StoragePool/instances/action/querySelectedStatistics';
  const cases: Array<{ what: string; path?: string; body: unknown; status: number; code: string; message: RegExp }> = [
    // ScaleIO refuses a property it does not know with 400 and the list of those it does.
    { what: 'unknown property', body: { ids: [pool], properties: ['capacityInUseInKb', 'rfcacheReadMiss'] }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^properties: rfcacheReadMiss: not known; StoragePool properties should contain only following values: .*capacityInUseInKb/ },
    { what: 'unknown property, allIds', body: { allIds: '', properties: ['thinCapacityAllocatedInKm'] }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /thinCapacityAllocatedInKm: not known/ },
    { what: 'unknown id', body: { ids: [pool, 'ffffffffffffffff'], properties: ['numOfVolumes'] }, status: 404, code: 'MB_ERR_NOT_FOUND', message: /^ids: no StoragePool with id ffffffffffffffff/ },
    { what: 'an id of another type', body: { ids: [thick], properties: ['numOfVolumes'] }, status: 404, code: 'MB_ERR_NOT_FOUND', message: /no StoragePool with id/ },
    { what: 'no properties', body: { ids: [pool] }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^properties: must be a non-empty array/ },
    { what: 'empty properties', body: { ids: [pool], properties: [] }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^properties:/ },
    { what: 'properties not an array', body: { ids: [pool], properties: 'numOfVolumes' }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^properties:/ },
    { what: 'neither ids nor allIds', body: { properties: ['numOfVolumes'] }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^ids: missing/ },
    { what: 'both ids and allIds', body: { ids: [pool], allIds: '', properties: ['numOfVolumes'] }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^ids: give either ids or allIds/ },
    { what: 'ids not an array', body: { ids: pool, properties: ['numOfVolumes'] }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^ids: must be an array/ },
    { what: 'unknown field', body: { ids: [pool], properties: ['numOfVolumes'], id: pool }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^id: not a field of querySelectedStatistics/ },
    { what: 'not an object', body: ['numOfVolumes'], status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^body: must be a JSON object/ },
    { what: 'no body', body: undefined, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^body:/ },
    { what: 'unknown type', path: '/api/types/Snapshot/instances/action/querySelectedStatistics', body: { allIds: '', properties: ['numOfVolumes'] }, status: 404, code: 'MB_ERR_NO_ROUTE', message: /no type 'Snapshot'/ },
    { what: 'System: unknown property', path: '/api/instances/System/action/querySelectedStatistics', body: { properties: ['numOfScsiInitiators'] }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /System properties should contain only following values/ },
    {
      what: 'several types: a bad entry names itself',
      path: '/api/instances/querySelectedStatistics',
      body: { selectedStatisticsList: [{ type: 'System', properties: ['numOfVolumes'] }, { type: 'Volume', properties: ['numOfMappedSdcs'] }] },
      status: 400,
      code: 'MB_ERR_INVALID_ARGUMENT',
      message: /^selectedStatisticsList\[1\]\.ids: missing/,
    },
    { what: 'several types: unknown type', path: '/api/instances/querySelectedStatistics', body: { selectedStatisticsList: [{ type: 'Rfcache', allIds: '', properties: ['x'] }] }, status: 404, code: 'MB_ERR_NO_ROUTE', message: /no type 'Rfcache'/ },
    { what: 'several types: a type twice', path: '/api/instances/querySelectedStatistics', body: { selectedStatisticsList: [{ type: 'System', properties: ['numOfVolumes'] }, { type: 'System', properties: ['numOfSdc'] }] }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^selectedStatisticsList\[1\]\.type: System is asked for twice/ },
    { what: 'several types: no list', path: '/api/instances/querySelectedStatistics', body: {}, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^selectedStatisticsList: must be a non-empty array/ },
  ];
  const before = model(api);
  for (const entry of cases) {
    const reply = await post(api, token, entry.path ?? path, entry.body);
    t.equal(reply.status, entry.status, `${entry.what}: HTTP ${entry.status}`);
    t.match(reply.body, { code: entry.code, httpStatusCode: entry.status, message: entry.message }, `${entry.what}: ${entry.code}`);
    t.type((reply.body as { errorCode: unknown }).errorCode, 'number', `${entry.what}: a ScaleIO errorCode`);
  }
  t.equal(model(api), before, 'nothing changed');
  const get = await call(api, 'GET', path, { token });
  t.equal(get.status, 405, 'GET is not allowed: querySelectedStatistics is a POST');
});
