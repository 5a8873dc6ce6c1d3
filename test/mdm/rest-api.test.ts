// Proves the MDM's REST API contract over real HTTPS (a self-signed certificate made by
// openssl, trusted by the client) against a real StateMachine behind a small in-test
// controller (test/helpers/rest.ts): ScaleIO-style login with the token in place of the
// password, every create/list/get/action/statistics route, and refusal of bad input of every
// kind — wrong type, out of range, unknown or missing field, malformed JSON, a body over the
// limit, unknown route, method or id — each naming the field and leaving the model exactly as
// it was (a JSON snapshot compared before and after). Capacity statistics are checked against
// arithmetic done by hand on a pool of known devices and volumes.

import { Writable } from 'node:stream';
import { pino } from 'pino';
import t from 'tap';
import { restErrorCodes, scaleIoErrorCodes } from '../../src/mdm/rest-errors.js';
import type { RestDashboard, RestDevice, RestSds, RestStoragePool, RestStoragePoolStatistics, RestSystemStatistics, RestVolume } from '../../src/mdm/rest-objects.js';
import { GiB, MiB, basic, call, formattedDevicePath, login, populatedApi, startTestApi, testClusterId, testDeviceCapacityBytes, testPassword, type TestApi } from '../helpers/rest.js';
import { loginsInflightMax, restBodyBytesMax } from '../../src/common/limits.js';

const KiB = 1024;

function snapshot(api: TestApi): string {
  return JSON.stringify(api.controller.state.model);
}

async function post(api: TestApi, token: string, path: string, body: unknown): Promise<{ status: number; body: unknown }> {
  return call(api, 'POST', path, { token, body });
}

/** The parsed body of a GET that must succeed, taken to be the T the caller names. */
async function get<T = unknown>(api: TestApi, token: string, path: string): Promise<T> {
  const reply = await call(api, 'GET', path, { token });
  if (reply.status !== 200) throw new Error(`GET ${path}: ${reply.status} ${reply.text}`);
  return reply.body as T;
}

async function create(api: TestApi, token: string, type: string, body: unknown): Promise<string> {
  const reply = await post(api, token, `/api/types/${type}/instances`, body);
  if (reply.status !== 200) throw new Error(`create ${type}: ${reply.status} ${JSON.stringify(reply.body)}`);
  return (reply.body as { id: string }).id;
}

const populated = populatedApi;

t.test('login: wrong password is refused, the right one gives a token; token by Basic or Bearer; logout ends it', async (t) => {
  const lines: string[] = [];
  const log = pino({ level: 'debug', redact: ['password', '*.password'] }, new Writable({ write: (chunk, _encoding, done) => (lines.push(String(chunk)), done()) }));
  const api = await startTestApi(t, { log });

  const none = await call(api, 'GET', '/api/login');
  t.equal(none.status, 401, 'no credentials: 401');
  t.match(none.headers['www-authenticate'], /^Basic/);

  const wrong = await call(api, 'GET', '/api/login', { authorization: basic('admin', 'not the password') });
  t.equal(wrong.status, 401, 'wrong password: 401');
  t.match(wrong.body, { httpStatusCode: 401, errorCode: restErrorCodes['MB_ERR_UNAUTHORIZED'], code: 'MB_ERR_UNAUTHORIZED', message: /wrong user name or password/ });
  const wrongUser = await call(api, 'GET', '/api/login', { authorization: basic('root', testPassword) });
  t.equal(wrongUser.status, 401, 'right password, wrong user: 401');

  const right = await call(api, 'GET', '/api/login', { authorization: basic('admin', testPassword) });
  t.equal(right.status, 200, 'the right password afterwards works');
  const token = right.body as string;
  t.match(token, /^[0-9a-f]{64}$/, 'the token is a JSON string of 64 hex digits');

  t.equal((await call(api, 'GET', '/api/types/System/instances')).status, 401, 'no token: 401');
  t.equal((await call(api, 'GET', '/api/types/System/instances', { token: 'f'.repeat(64) })).status, 401, 'a made-up token: 401');
  t.equal((await call(api, 'GET', '/api/types/System/instances', { token: testPassword })).status, 401, 'the password is not a token');
  t.equal((await call(api, 'GET', '/api/types/System/instances', { token })).status, 200, 'Basic admin:TOKEN works');
  t.equal((await call(api, 'GET', '/api/types/System/instances', { authorization: `Bearer ${token}` })).status, 200, 'Bearer TOKEN works');
  t.equal((await call(api, 'GET', '/api/version', { token })).body, '3.6', 'the ScaleIO API version');

  const other = await login(api);
  t.equal((await call(api, 'GET', '/api/logout', { token })).status, 200, 'logout');
  t.equal((await call(api, 'GET', '/api/types/System/instances', { token })).status, 401, 'the token is dead after logout');
  t.equal((await call(api, 'GET', '/api/types/System/instances', { token: other })).status, 200, 'another session lives on');
  t.equal((await call(api, 'POST', '/api/login', { authorization: basic('admin', testPassword) })).status, 405, 'POST /api/login: 405');

  // Guessing in bulk: at most loginsInflightMax logins are checked at once, the rest get 429.
  const guesses = await Promise.all(Array.from({ length: loginsInflightMax + 4 }, (_, index) => call(api, 'GET', '/api/login', { authorization: basic('admin', `guess ${index}`) })));
  t.same([...new Set(guesses.map((reply) => reply.status))].sort(), [401, 429], 'wrong guesses beyond the bound are turned away');
  t.match(guesses.find((reply) => reply.status === 429)?.body, { code: 'MB_ERR_TOO_MANY_LOGINS', errorCode: restErrorCodes['MB_ERR_TOO_MANY_LOGINS'] });
  t.equal((await call(api, 'GET', '/api/login', { authorization: basic('admin', testPassword) })).status, 200, 'the right password works once they are answered');

  const logged = lines.join('');
  t.match(logged, /login refused/, 'the refused login is logged');
  t.notMatch(logged, testPassword, 'the password never reaches the log');
  t.notMatch(logged, 'not the password', 'nor a wrong one');
  t.notMatch(logged, token, 'nor a token');
});

t.test('every create, list, get and action route', async (t) => {
  const { api, token, pd, pool, sds, devices } = await populated(t);
  const model = api.controller.state.model;

  const [system] = await get<unknown[]>(api, token, '/api/types/System/instances');
  t.match(system, { id: testClusterId, name: 'testsys', systemVersionName: /meshblock/ });
  t.same(await get(api, token, `/api/instances/System::${testClusterId}`), system);

  const pools = await get<RestStoragePool[]>(api, token, '/api/types/StoragePool/instances');
  t.match(pools, [{ id: pool, name: 'pool1', protectionDomainId: pd, sparePercentage: 10, zeroPaddingEnabled: true, chunkSizeInKb: 1024, volumeGranularityInKb: 64 * 1024, pgCount: 4096 }]);
  t.same(pools[0]?.links[0], { rel: 'self', href: `/api/instances/StoragePool::${pool}` });
  t.ok(pools[0]?.links.some((link) => link.rel === '/api/parent/relationship/protectionDomainId' && link.href === `/api/instances/ProtectionDomain::${pd}`), 'a link to its parent');

  const custom = await create(api, token, 'StoragePool', { protectionDomainId: pd, name: 'pool2', sparePercentage: '20', zeroPaddingEnabled: 'false', chunkSizeInKb: 256, volumeGranularityInGb: '1', pgCount: 8192 });
  t.match(model.storagePools[custom], { sparePercent: 20, zeroPadding: false, chunkBytes: 256 * KiB, volumeGranularityBytes: GiB, pgCount: 8192 }, 'ScaleIO-style strings of digits and booleans are accepted');

  const sdsList = await get<RestSds[]>(api, token, '/api/types/Sds/instances');
  t.equal(sdsList.length, 3);
  t.match(sdsList[0], { name: 'sds1', protectionDomainId: pd, faultSetId: null, sdsState: 'Normal', mdmConnectionState: 'Connected', membershipState: 'Joined', ipList: [{ ip: '127.0.0.1', role: 'all' }], port: 7072, address: '127.0.0.1:7072' });

  // Fault sets; an SDS added by name.
  const fs1 = await create(api, token, 'FaultSet', { protectionDomainId: pd, name: 'rack1' });
  t.match(await get(api, token, `/api/instances/FaultSet::${fs1}`), { id: fs1, name: 'rack1', protectionDomainId: pd });
  const sds4 = api.controller.registerSds('sds4', 7080);
  t.match(await get(api, token, `/api/instances/Sds::${sds4}`), { membershipState: 'Registered', protectionDomainId: null });
  t.equal(await create(api, token, 'Sds', { name: 'sds4', protectionDomainId: pd, faultSetId: fs1 }), sds4, 'adding by name replies with its id');
  t.match(model.sdss[sds4], { protectionDomainId: pd, faultSetId: fs1 });
  t.same((await get<RestSds[]>(api, token, `/api/instances/FaultSet::${fs1}/relationships/Sds`)).map((entry) => entry.id), [sds4], 'FaultSet → Sds');

  // Devices.
  const deviceList = await get<RestDevice[]>(api, token, '/api/types/Device/instances');
  t.equal(deviceList.length, 3);
  const added = deviceList.find((device) => device.id === devices[2]);
  t.match(added, { sdsId: sds[2], storagePoolId: pool, deviceCurrentPathName: '/dev/sdb', maxCapacityInKb: testDeviceCapacityBytes / KiB, capacityInKb: testDeviceCapacityBytes / KiB, deviceState: 'Normal', name: 'sds3-d1' });
  t.same(api.controller.deviceRequests.at(-1), { sdsId: sds[2], storagePoolId: pool, path: '/dev/sdb', name: null, force: false }, 'the controller got the request');
  const named = await create(api, token, 'Device', { sdsId: sds[2], storagePoolId: pool, deviceCurrentPathName: '/dev/sdc', name: 'fast1', forceDeviceTakeover: true });
  t.match(api.controller.deviceRequests.at(-1), { name: 'fast1', force: true });
  t.same((await get<RestDevice[]>(api, token, `/api/instances/Sds::${sds[2]}/relationships/Device`)).map((device) => device.id).sort(), [devices[2], named].sort(), 'Sds → Device');

  // Volumes.
  const thin = await create(api, token, 'Volume', { storagePoolId: pool, name: 'vol1', volumeSizeInKb: '100000', volumeType: 'ThinProvisioned' });
  const volume = await get<RestVolume>(api, token, `/api/instances/Volume::${thin}`);
  t.match(volume, { id: thin, name: 'vol1', sizeInKb: 128 * 1024, volumeType: 'ThinProvisioned', storagePoolId: pool, mappedSdcInfo: null, creationTime: Math.floor(api.controller.nowMs / 1000) }, 'rounded up to the 64 MiB granularity');
  t.match(volume.vtreeId, /^[0-9a-f]{16}$/);
  const thick = await create(api, token, 'Volume', { storagePoolId: pool, name: 'vol2', volumeSizeInKb: 64 * 1024 });
  t.equal(model.volumes[thick]?.volumeType, 'ThickProvisioned', "ScaleIO's default volume type");
  t.same((await get<RestVolume[]>(api, token, `/api/instances/StoragePool::${pool}/relationships/Volume`)).map((entry) => entry.name), ['vol1', 'vol2'], 'StoragePool → Volume');

  // Mapping and limits.
  const sdc1 = api.controller.registerSdc('guid-0001-host1', 'host1');
  const sdc2 = api.controller.registerSdc('guid-0002-host2', 'host2');
  const action = (name: string, body: unknown, id = thin, type = 'Volume') => post(api, token, `/api/instances/${type}::${id}/action/${name}`, body);
  t.equal((await action('addMappedSdc', { sdcId: sdc1 })).status, 200);
  t.match((await action('addMappedSdc', { sdcId: sdc2 })).body, { code: 'MB_ERR_MULTIPLE_MAPPINGS', errorCode: restErrorCodes['MB_ERR_MULTIPLE_MAPPINGS'], httpStatusCode: 409 }, 'a second mapping needs allowMultipleMappings');
  t.equal((await action('addMappedSdc', { sdcId: sdc2, allowMultipleMappings: 'true', accessMode: 'ReadOnly' })).status, 200);
  t.equal((await action('setMappedSdcLimits', { sdcId: sdc1, iopsLimit: '1000', bandwidthLimitInKbps: 10240 })).status, 200);
  t.equal((await action('setMappedSdcLimits', { sdcId: sdc1, iopsLimit: 500 })).status, 200, 'one limit alone');
  t.match((await get<RestVolume>(api, token, `/api/instances/Volume::${thin}`)).mappedSdcInfo, [
    { sdcId: sdc1, sdcName: 'host1', accessMode: 'ReadWrite', limitIops: 500, limitBwInMbps: 10, limitBwInKbps: 10240 },
    { sdcId: sdc2, sdcName: 'host2', accessMode: 'ReadOnly', limitIops: 0, limitBwInMbps: 0 },
  ], 'the bandwidth limit left out kept its value');
  t.same((await get<RestVolume[]>(api, token, `/api/instances/Sdc::${sdc2}/relationships/Volume`)).map((entry) => entry.id), [thin], 'Sdc → Volume');
  t.equal((await action('removeMappedSdc', { sdcId: sdc2 })).status, 200);
  t.equal(model.volumes[thin]?.mappings.length, 1);

  // Renames and resizes.
  t.equal((await action('setVolumeName', { newName: 'vol1b' })).status, 200);
  t.equal(model.volumes[thin]?.name, 'vol1b');
  t.equal((await action('setVolumeSize', { sizeInGB: 1 })).status, 200);
  t.equal(model.volumes[thin]?.sizeBytes, GiB);
  t.equal((await action('setVolumeSize', { sizeInKb: 1100 * 1024 })).status, 200, 'sizeInKb for small lab volumes');
  t.equal(model.volumes[thin]?.sizeBytes, 1152 * MiB, 'rounded up to the granularity');
  t.equal((await action('setProtectionDomainName', { name: 'pdX' }, pd, 'ProtectionDomain')).status, 200);
  t.equal(model.protectionDomains[pd]?.name, 'pdX');
  t.equal((await action('setStoragePoolName', { name: 'poolX' }, pool, 'StoragePool')).status, 200);
  t.equal(model.storagePools[pool]?.name, 'poolX');
  t.equal((await action('setSparePercentage', { sparePercentage: 15 }, pool, 'StoragePool')).status, 200);
  t.equal(model.storagePools[pool]?.sparePercent, 15);
  t.equal((await action('setSdsName', { name: 'sdsX' }, sds[0], 'Sds')).status, 200);
  t.equal(model.sdss[sds[0] as string]?.name, 'sdsX');
  t.equal((await action('setSdcName', { sdcName: 'hostX' }, sdc2, 'Sdc')).status, 200);
  t.equal(model.sdcs[sdc2]?.name, 'hostX');

  // Removals.
  t.match((await action('removeSdc', {}, sdc1, 'Sdc')).body, { code: 'MB_ERR_SDC_MAPPED' }, 'a mapped SDC stays');
  t.match((await action('removeVolume', {})).body, { code: 'MB_ERR_VOLUME_MAPPED' }, 'a mapped volume stays');
  t.equal((await action('removeMappedSdc', { sdcId: sdc1 })).status, 200);
  t.equal((await action('removeVolume', { removeMode: 'ONLY_ME' })).status, 200, "ScaleIO's removeMode");
  t.equal((await action('removeVolume', {}, thick)).status, 200);
  t.equal((await action('removeSdc', {}, sdc1, 'Sdc')).status, 200);
  t.equal(model.sdcs[sdc1], undefined);
  t.equal((await action('removeDevice', {}, named, 'Device')).status, 200);
  t.equal(model.devices[named], undefined);
  t.match((await action('removeFaultSet', {}, fs1, 'FaultSet')).body, { code: 'MB_ERR_NOT_EMPTY' });
  t.equal((await action('removeSds', {}, sds4, 'Sds')).status, 200);
  t.equal((await action('removeFaultSet', {}, fs1, 'FaultSet')).status, 200);
  t.equal((await action('removeStoragePool', {}, custom, 'StoragePool')).status, 200);
  t.match((await action('removeStoragePool', {}, pool, 'StoragePool')).body, { code: 'MB_ERR_NOT_EMPTY', httpStatusCode: 409 });
  t.match((await action('removeProtectionDomain', {}, pd, 'ProtectionDomain')).body, { code: 'MB_ERR_NOT_EMPTY' });
  const emptyPd = await create(api, token, 'ProtectionDomain', { name: 'spare-pd' });
  t.equal((await action('removeProtectionDomain', {}, emptyPd, 'ProtectionDomain')).status, 200);

  // queryIdByKey, as ScaleIO clients resolve names.
  t.equal((await post(api, token, '/api/types/StoragePool/instances/action/queryIdByKey', { name: 'poolX' })).body, pool);
  t.equal((await post(api, token, '/api/types/StoragePool/instances/action/queryIdByKey', { name: 'poolX', protectionDomainId: pd })).body, pool);
  t.match((await post(api, token, '/api/types/Volume/instances/action/queryIdByKey', { name: 'nope' })), { status: 404, body: { code: 'MB_ERR_NOT_FOUND' } });
});

t.test('bad input of every kind: 4xx naming the field, the model unchanged', async (t) => {
  const { api, token, pd, pool, sds } = await populated(t);
  const volume = await create(api, token, 'Volume', { storagePoolId: pool, name: 'vol1', volumeSizeInKb: 128 * 1024, volumeType: 'ThinProvisioned' });
  const sdc = api.controller.registerSdc('guid-0001-host1', 'host1');
  const unmappedSdc = api.controller.registerSdc('guid-0002-host2', 'host2');
  t.equal((await post(api, token, `/api/instances/Volume::${volume}/action/addMappedSdc`, { sdcId: sdc })).status, 200);
  const vtree = api.controller.state.model.volumes[volume]?.vtreeId as string;
  const before = snapshot(api);
  const unknownId = 'ffffffffffffffff';

  const cases: Array<{ what: string; method?: string; path: string; body?: unknown; raw?: string; status: number; code: string; errorCode?: number; message?: RegExp }> = [
    // Wrong type.
    { what: 'name is a number', path: '/api/types/ProtectionDomain/instances', body: { name: 5 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^name: must be a string/ },
    { what: 'size is a word', path: '/api/types/Volume/instances', body: { storagePoolId: pool, name: 'v', volumeSizeInKb: 'lots' }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^volumeSizeInKb: must be a whole number/ },
    { what: 'size is fractional', path: '/api/types/Volume/instances', body: { storagePoolId: pool, name: 'v', volumeSizeInKb: 1.5 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^volumeSizeInKb:/ },
    { what: 'boolean is a number', path: `/api/instances/Volume::${volume}/action/addMappedSdc`, body: { sdcId: sdc, allowMultipleMappings: 1 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^allowMultipleMappings: must be true or false/ },
    { what: 'id is not hex', path: '/api/types/StoragePool/instances', body: { protectionDomainId: 'pd1', name: 'p' }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^protectionDomainId: must be an id/ },
    { what: 'body is an array', path: '/api/types/ProtectionDomain/instances', body: [{ name: 'x' }], status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^body: must be a JSON object/ },
    { what: 'bad enum', path: '/api/types/Volume/instances', body: { storagePoolId: pool, name: 'v', volumeSizeInKb: 1024, volumeType: 'Sparse' }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^volumeType: must be 'ThinProvisioned' or 'ThickProvisioned'/ },
    { what: 'bad access mode', path: `/api/instances/Volume::${volume}/action/addMappedSdc`, body: { sdcId: sdc, accessMode: 'NoAccess' }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^accessMode:/ },
    { what: 'bad name', path: '/api/types/ProtectionDomain/instances', body: { name: 'has space' }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^name: must be 1 to 31/ },
    { what: 'relative device path', path: '/api/types/Device/instances', body: { sdsId: sds[0], storagePoolId: pool, deviceCurrentPathName: 'sdb' }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^deviceCurrentPathName: must be an absolute path/ },
    // Out of range (in this layer, and in the state machine with the REST field's name).
    { what: 'negative size', path: '/api/types/Volume/instances', body: { storagePoolId: pool, name: 'v', volumeSizeInKb: -1 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^volumeSizeInKb: must be a whole number from 1/ },
    { what: 'zero size', path: '/api/types/Volume/instances', body: { storagePoolId: pool, name: 'v', volumeSizeInKb: '0' }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^volumeSizeInKb:/ },
    { what: 'spare over 100', path: `/api/instances/StoragePool::${pool}/action/setSparePercentage`, body: { sparePercentage: 101 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^sparePercentage: must be a whole number from 0 to 100/ },
    { what: 'spare over the state machine bound', path: `/api/instances/StoragePool::${pool}/action/setSparePercentage`, body: { sparePercentage: 95 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^sparePercentage: must be an integer from 0 to 90/ },
    { what: 'chunk not a power of two', path: '/api/types/StoragePool/instances', body: { protectionDomainId: pd, name: 'p2', chunkSizeInKb: 100 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^chunkSizeInKb: must be a power of two/ },
    { what: 'pgCount not a power of two', path: '/api/types/StoragePool/instances', body: { protectionDomainId: pd, name: 'p2', pgCount: 5000 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^pgCount: must be a power of two/ },
    { what: 'granularity below the chunk', path: '/api/types/StoragePool/instances', body: { protectionDomainId: pd, name: 'p2', chunkSizeInKb: 4096, volumeGranularityInMb: 1 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^volumeGranularityInMb: must be a multiple of the chunk size/ },
    { what: 'granularity given twice', path: '/api/types/StoragePool/instances', body: { protectionDomainId: pd, name: 'p2', volumeGranularityInMb: 64, volumeGranularityInGb: 1 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^volumeGranularityInMb: give volumeGranularityInGb or volumeGranularityInMb/ },
    { what: 'iops limit below 11', path: `/api/instances/Volume::${volume}/action/setMappedSdcLimits`, body: { sdcId: sdc, iopsLimit: 5 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^iopsLimit: must be 0 \(unlimited\) or at least 11/ },
    { what: 'limits of an SDC not mapped', path: `/api/instances/Volume::${volume}/action/setMappedSdcLimits`, body: { sdcId: unmappedSdc, iopsLimit: 100 }, status: 404, code: 'MB_ERR_NOT_FOUND', errorCode: scaleIoErrorCodes.volumeNotMapped, message: /is not mapped to SDC/ },
    { what: 'mapped twice', path: `/api/instances/Volume::${volume}/action/addMappedSdc`, body: { sdcId: sdc }, status: 409, code: 'MB_ERR_ALREADY_MAPPED' },
    { what: 'removing a mapped volume', path: `/api/instances/Volume::${volume}/action/removeVolume`, body: {}, status: 409, code: 'MB_ERR_VOLUME_MAPPED' },
    { what: 'shrinking', path: `/api/instances/Volume::${volume}/action/setVolumeSize`, body: { sizeInKb: 1 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^sizeInKb: volumes only grow/ },
    // Unknown field.
    { what: 'unknown field', path: '/api/types/ProtectionDomain/instances', body: { name: 'pdY', colour: 'red' }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^colour: unknown field; this request takes name/ },
    { what: 'case typo', path: '/api/types/Volume/instances', body: { storagePoolId: pool, name: 'v', volumeSizeInKB: 1024 }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^volumeSizeInK[bB]/ },
    { what: 'unknown remove mode', path: `/api/instances/Volume::${volume}/action/removeVolume`, body: { removeMode: 'ONLY_YOU' }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^removeMode: must be 'ONLY_ME' or 'INCLUDING_DESCENDANTS'/ },
    { what: 'unknown field on remove', path: `/api/instances/Sdc::${sdc}/action/removeSdc`, body: { force: true }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^force: unknown field; this request takes no fields/ },
    // Missing field.
    { what: 'missing name', path: '/api/types/ProtectionDomain/instances', body: {}, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^name: is required/ },
    { what: 'missing size', path: '/api/types/Volume/instances', body: { storagePoolId: pool, name: 'v' }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^volumeSizeInKb: is required/ },
    { what: 'empty body where fields are needed', path: '/api/types/FaultSet/instances', raw: '', status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^protectionDomainId: is required/ },
    { what: 'missing sdcId', path: `/api/instances/Volume::${volume}/action/addMappedSdc`, body: {}, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^sdcId: is required/ },
    { what: 'neither limit', path: `/api/instances/Volume::${volume}/action/setMappedSdcLimits`, body: { sdcId: sdc }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^iopsLimit: give iopsLimit, bandwidthLimitInKbps or both/ },
    { what: 'neither size', path: `/api/instances/Volume::${volume}/action/setVolumeSize`, body: {}, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^sizeInGB: give the new size/ },
    { what: 'SDS by neither id nor name', path: '/api/types/Sds/instances', body: { protectionDomainId: pd }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^sdsId:/ },
    // Malformed JSON.
    { what: 'malformed JSON', path: '/api/types/ProtectionDomain/instances', raw: '{"name": "pdY",', status: 400, code: 'MB_ERR_MALFORMED_JSON', message: /^body: malformed JSON/ },
    { what: 'not JSON at all', path: '/api/types/ProtectionDomain/instances', raw: 'name=pdY', status: 400, code: 'MB_ERR_MALFORMED_JSON' },
    // Unknown route, type, action, relationship, id; wrong method.
    { what: 'unknown route', method: 'GET', path: '/api/nothing/here', status: 404, code: 'MB_ERR_NO_ROUTE' },
    // (/ itself is the web dashboard's: it redirects to /ui/, web-session.test.ts.)
    { what: 'outside /api', method: 'GET', path: '/nothing', status: 404, code: 'MB_ERR_NO_ROUTE' },
    { what: 'unknown type', method: 'GET', path: '/api/types/Snapshot/instances', status: 404, code: 'MB_ERR_NO_ROUTE', message: /no type 'Snapshot'/ },
    { what: 'unknown action', path: `/api/instances/Volume::${volume}/action/explode`, body: {}, status: 404, code: 'MB_ERR_NO_ROUTE', message: /Volume has no action 'explode' \(actions: addMappedSdc/ },
    { what: 'unknown relationship', method: 'GET', path: `/api/instances/Volume::${volume}/relationships/Device`, status: 404, code: 'MB_ERR_NO_ROUTE' },
    { what: 'unknown relationship of a V-Tree', method: 'GET', path: `/api/instances/VTree::${vtree}/relationships/Device`, status: 404, code: 'MB_ERR_NO_ROUTE', message: /relationships: Volume, Statistics/ },
    { what: 'unknown id (get)', method: 'GET', path: `/api/instances/Volume::${unknownId}`, status: 404, code: 'MB_ERR_NOT_FOUND', errorCode: scaleIoErrorCodes.volumeNotFound, message: /no Volume with id ffffffffffffffff/ },
    { what: 'unknown id (action)', path: `/api/instances/Volume::${unknownId}/action/removeVolume`, body: {}, status: 404, code: 'MB_ERR_NOT_FOUND', errorCode: scaleIoErrorCodes.volumeNotFound },
    { what: 'unknown referenced id', path: '/api/types/Volume/instances', body: { storagePoolId: unknownId, name: 'v', volumeSizeInKb: 1024 }, status: 404, code: 'MB_ERR_NOT_FOUND', message: /no storage pool with id/ },
    { what: 'unknown SDC to map', path: `/api/instances/Volume::${volume}/action/addMappedSdc`, body: { sdcId: unknownId }, status: 404, code: 'MB_ERR_NOT_FOUND' },
    { what: 'unknown SDS by name', path: '/api/types/Sds/instances', body: { name: 'ghost', protectionDomainId: pd }, status: 404, code: 'MB_ERR_NOT_FOUND' },
    { what: 'device on an unknown SDS', path: '/api/types/Device/instances', body: { sdsId: unknownId, storagePoolId: pool, deviceCurrentPathName: '/dev/sdz' }, status: 404, code: 'MB_ERR_NOT_FOUND' },
    { what: 'GET on an action', method: 'GET', path: `/api/instances/Volume::${volume}/action/removeVolume`, status: 405, code: 'MB_ERR_METHOD_NOT_ALLOWED' },
    { what: 'DELETE on instances', method: 'DELETE', path: '/api/types/Volume/instances', status: 405, code: 'MB_ERR_METHOD_NOT_ALLOWED', message: /allowed: GET, POST/ },
    { what: 'POST on an instance', path: `/api/instances/Volume::${volume}`, body: {}, status: 405, code: 'MB_ERR_METHOD_NOT_ALLOWED' },
    { what: 'creating an SDC', path: '/api/types/Sdc/instances', body: { name: 'x' }, status: 405, code: 'MB_ERR_METHOD_NOT_ALLOWED' },
    // Conflicts.
    { what: 'name taken', path: '/api/types/Volume/instances', body: { storagePoolId: pool, name: 'vol1', volumeSizeInKb: 1024 }, status: 409, code: 'MB_ERR_NAME_TAKEN', errorCode: scaleIoErrorCodes.volumeNameTaken },
    { what: 'SDS of another protection domain', path: '/api/types/Device/instances', body: { sdsId: api.controller.registerSds('loner', 7999), storagePoolId: pool, deviceCurrentPathName: '/dev/sdb' }, status: 400, code: 'MB_ERR_INVALID_ARGUMENT', message: /^storagePoolId: SDS 'loner' is in no protection domain/ },
    { what: 'device path taken on the SDS', path: '/api/types/Device/instances', body: { sdsId: sds[2], storagePoolId: pool, deviceCurrentPathName: '/dev/sdb' }, status: 409, code: 'MB_ERR_DEVICE_EXISTS' },
  ];
  const requestsBefore = api.controller.deviceRequests.length;
  // The registration above ('loner') is the one change made on purpose, before the snapshot.
  const baseline = snapshot(api);
  t.not(baseline, before, 'registering an SDS changed the model (sanity)');
  for (const entry of cases) {
    const reply = await call(api, entry.method ?? 'POST', entry.path, { token, ...(entry.raw !== undefined ? { raw: entry.raw } : entry.body !== undefined ? { body: entry.body } : {}) });
    t.equal(reply.status, entry.status, `${entry.what}: HTTP ${entry.status}`);
    t.match(reply.body, { code: entry.code, httpStatusCode: entry.status, errorCode: entry.errorCode ?? restErrorCodes[entry.code] }, `${entry.what}: ${entry.code}`);
    if (entry.message !== undefined) t.match((reply.body as { message: string }).message, entry.message, `${entry.what}: says why`);
    t.notMatch((reply.body as { message: string }).message, /\n/, `${entry.what}: one line`);
    if (entry.status === 405) t.ok(reply.headers['allow'], `${entry.what}: Allow header`);
  }
  t.equal(snapshot(api), baseline, 'nothing changed in the model');
  t.equal(api.controller.deviceRequests.length, requestsBefore, 'no refused device request reached the SDS');
});

t.test('bodies over the limit: 413, nothing applied', async (t) => {
  const api = await startTestApi(t);
  const token = await login(api);
  const before = snapshot(api);
  const huge = JSON.stringify({ name: 'pdZ', padding: 'x'.repeat(restBodyBytesMax) });
  const reply = await call(api, 'POST', '/api/types/ProtectionDomain/instances', { token, raw: huge });
  t.equal(reply.status, 413);
  t.match(reply.body, { code: 'MB_ERR_BODY_TOO_LARGE', errorCode: restErrorCodes['MB_ERR_BODY_TOO_LARGE'], message: /^body: larger than 1048576 bytes/ });
  t.equal(snapshot(api), before);
  t.equal((await call(api, 'GET', '/api/types/ProtectionDomain/instances', { token })).status, 200, 'the API goes on');
});

t.test('capacity statistics: arithmetic on a pool with devices, thick and thin volumes', async (t) => {
  const { api, token, pool, devices, sds } = await populated(t);
  // Three 1 GiB devices, 10% spare; a 256 MiB thick and a 2 GiB thin volume; 96 MiB written per device.
  await create(api, token, 'Volume', { storagePoolId: pool, name: 'thick1', volumeSizeInKb: 256 * 1024, volumeType: 'ThickProvisioned' });
  await create(api, token, 'Volume', { storagePoolId: pool, name: 'thin1', volumeSizeInKb: 2 * 1024 * 1024, volumeType: 'ThinProvisioned' });
  // Of which 32 MiB per device only snapshots reach (as SDSs that count them report).
  for (const id of devices) Object.assign(api.controller.state.model.devices[id] as object, { usedBytes: 96 * MiB, snapshotBytes: 32 * MiB });

  const rawKb = (3 * GiB) / KiB; // 3145728
  const spareKb = Math.floor(Math.ceil((3 * GiB * 10) / 100) / KiB); // 314572.8 KiB, rounded up in bytes, down in KiB
  const usableBytes = Math.floor((3 * GiB - Math.ceil((3 * GiB * 10) / 100)) / 2);
  const usedRawKb = (3 * 96 * MiB) / KiB;
  const stats = await get<RestStoragePoolStatistics>(api, token, `/api/instances/StoragePool::${pool}/relationships/Statistics`);
  // t.match: the reply also has ScaleIO's properties (test/mdm/rest-statistics.test.ts).
  t.match(stats, {
    maxCapacityInKb: rawKb,
    spareCapacityInKb: spareKb,
    usableCapacityInKb: Math.floor(usableBytes / KiB),
    // Raw, as ScaleIO: both copies of the thick volume.
    thickCapacityInUseInKb: 2 * 256 * 1024,
    thickCapacityProvisionedInKb: 256 * 1024,
    thinCapacityProvisionedInKb: 2 * 1024 * 1024,
    capacityInUseInKb: usedRawKb,
    netCapacityInUseInKb: usedRawKb / 2,
    protectedCapacityInKb: usedRawKb,
    degradedCapacityInKb: 0,
    failedCapacityInKb: 0,
    // raw - spare - used - 2 × thick
    unusedCapacityInKb: Math.floor((3 * GiB - Math.ceil((3 * GiB * 10) / 100) - 3 * 96 * MiB - 2 * 256 * MiB) / KiB),
    // usable - thick - (net in use beyond thick: 144 MiB - 256 MiB < 0, so none)
    capacityAvailableForVolumeAllocationInKb: Math.floor((usableBytes - 256 * MiB) / KiB),
    // Raw, as capacityInUseInKb: both copies of what only snapshots reach, under each of ScaleIO's names.
    snapCapacityInUseInKb: (3 * 32 * MiB) / KiB,
    snapCapacityInUseOccupiedInKb: (3 * 32 * MiB) / KiB,
    snapshotCapacityInKb: (3 * 32 * MiB) / KiB,
    snapshotCapacityProvisionedInKb: 0,
    numOfDevices: 3,
    numOfFailedDevices: 0,
    numOfVolumes: 2,
    numOfThickBaseVolumes: 1,
    numOfThinBaseVolumes: 1,
    numOfSnapshots: 0,
    numOfVtrees: 2,
    numOfMappedToAllVolumes: 0,
  });

  const system = await get<RestSystemStatistics>(api, token, `/api/instances/System::${testClusterId}/relationships/Statistics`);
  t.match(system, { maxCapacityInKb: rawKb, protectedCapacityInKb: usedRawKb, numOfProtectionDomains: 1, numOfStoragePools: 1, numOfSds: 3, numOfDevices: 3, numOfVolumes: 2, numOfMappedVolumes: 0, snapCapacityInUseInKb: (3 * 32 * MiB) / KiB }, 'the system sums its pools');
  t.match(await get(api, token, `/api/instances/Sds::${sds[0]}/relationships/Statistics`), { snapCapacityInUseInKb: (32 * MiB) / KiB, capacityInUseInKb: (96 * MiB) / KiB }, "an SDS's snapshot bytes");
  t.match(await get(api, token, `/api/instances/Device::${devices[0]}/relationships/Statistics`), { snapCapacityInUseInKb: (32 * MiB) / KiB }, "a device's");

  // A thick volume that does not fit is refused, with the numbers, and nothing changes.
  const before = snapshot(api);
  const tooBig = await post(api, token, '/api/types/Volume/instances', { storagePoolId: pool, name: 'huge', volumeSizeInKb: 2 * 1024 * 1024, volumeType: 'ThickProvisioned' });
  t.equal(tooBig.status, 409);
  t.match(tooBig.body, { code: 'MB_ERR_INSUFFICIENT_CAPACITY', errorCode: restErrorCodes['MB_ERR_INSUFFICIENT_CAPACITY'], message: /does not fit: .* needed, .* usable after the .* spare/ });
  t.equal(snapshot(api), before);
  const fits = stats.capacityAvailableForVolumeAllocationInKb - (stats.capacityAvailableForVolumeAllocationInKb % (64 * 1024));
  t.equal((await post(api, token, '/api/types/Volume/instances', { storagePoolId: pool, name: 'fits', volumeSizeInKb: fits, volumeType: 'ThickProvisioned' })).status, 200, 'the available capacity, rounded down to the granularity, fits');

  // A failed device: its capacity leaves raw; the data it shared with the others is down to
  // one copy (degraded, estimated from usage spread over the groups), none of it failed.
  const failed = api.controller.state.model.devices[devices[0] as string] as { state: string };
  failed.state = 'failed';
  const degraded = await get<RestStoragePoolStatistics>(api, token, `/api/instances/StoragePool::${pool}/relationships/Statistics`);
  t.equal(degraded.maxCapacityInKb, (2 * GiB) / KiB, 'raw counts healthy devices');
  t.equal(degraded.failedCapacityInKb, 0, 'failed: nothing, every group has a copy left');
  t.equal(degraded.numOfFailedDevices, 1);
  t.ok(Math.abs(degraded.degradedCapacityInKb - (96 * MiB) / KiB) < (2 * MiB) / KiB, `degraded: about what the failed device held (${degraded.degradedCapacityInKb} KiB)`);
  t.ok(Math.abs(degraded.protectedCapacityInKb + degraded.degradedCapacityInKb - (2 * 96 * MiB) / KiB) <= 2, 'protected + degraded = in use on healthy devices (to the rounding of KiB)');

  // SDS and device statistics from what the SDS reported.
  const sdsId = sds[2] as string;
  const deviceId = devices[2] as string;
  t.match(await get(api, token, `/api/instances/Sds::${sdsId}/relationships/Statistics`), { sdsId, statisticsAvailable: false, numOfDevices: 1, readIops: 0 }, 'no report yet');
  api.controller.stats.set(sdsId, {
    sdsId,
    name: 'sds3',
    epoch: 4,
    chunkBytes: MiB,
    reservedBytes: 256 * MiB,
    devices: [{ deviceId, path: '/dev/sdb', state: 'normal', error: null, totalBytes: GiB, usedBytes: 100 * MiB, freeBytes: GiB - 100 * MiB, reads: 10, writes: 20, readBytes: 40 * KiB, writeBytes: 80 * KiB, readIops: 5, writeIops: 7, readBytesPerSecond: 2 * MiB, writeBytesPerSecond: MiB }],
    rebuilds: [{ jobId: '0a0b0c0d.1', poolId: pool, pgIndex: 3, targetSdsId: sdsId, state: 'running', mode: 'full', epoch: 4, chunksDone: 1, chunksTotal: 4, bytesDone: MiB, error: null }],
  });
  t.match(await get(api, token, `/api/instances/Sds::${sdsId}/relationships/Statistics`), {
    statisticsAvailable: true,
    mapEpoch: 4,
    thickCapacityReservedInKb: 256 * 1024,
    readIops: 5,
    writeIops: 7,
    readBwInKbps: 2048,
    writeBwInKbps: 1024,
    capacityInUseInKb: 100 * 1024,
    rebuilds: [{ storagePoolId: pool, pgIndex: 3, state: 'running', chunksDone: 1, chunksTotal: 4, doneInKb: 1024 }],
  });
  t.match(await get(api, token, `/api/instances/Device::${deviceId}/relationships/Statistics`), { deviceId, statisticsAvailable: true, totalReadIos: 10, totalWriteIos: 20, totalReadInKb: 40, totalWriteInKb: 80, maxCapacityInKb: GiB / KiB });

  const view = await get<RestDashboard>(api, token, '/api/dashboard');
  t.match(view, {
    system: { id: testClusterId, name: 'testsys' },
    capacity: { numOfVolumes: 3, failedCapacityInKb: 0 },
    storagePools: [{ id: pool, name: 'pool1', protectionDomainName: 'pd1', numOfDevices: 3 }],
    health: { sdsConnected: 3, sdsDisconnected: 0, devicesNormal: 2, devicesFailed: 1, failedCapacityInKb: 0, rebuildsRunning: 1 },
  });
});

t.test('a device holding data is refused with the SDS message, and taken when forced', async (t) => {
  const { api, token, pool, sds } = await populated(t);
  const before = snapshot(api);
  const refused = await post(api, token, '/api/types/Device/instances', { sdsId: sds[0], storagePoolId: pool, deviceCurrentPathName: formattedDevicePath });
  t.equal(refused.status, 409);
  t.same(refused.body, {
    message: `${formattedDevicePath} holds an ext4 filesystem; add it with forceDeviceTakeover to format it anyway`,
    httpStatusCode: 409,
    errorCode: restErrorCodes['MB_ERR_DEVICE_FORMATTED'],
    code: 'MB_ERR_DEVICE_FORMATTED',
  });
  t.equal(snapshot(api), before, 'nothing recorded');
  const forced = await post(api, token, '/api/types/Device/instances', { sdsId: sds[0], storagePoolId: pool, deviceCurrentPathName: formattedDevicePath, forceDeviceTakeover: true });
  t.equal(forced.status, 200);
  t.match(api.controller.state.model.devices[(forced.body as { id: string }).id], { path: formattedDevicePath, sdsId: sds[0] });
});

t.test('close: the API stops listening; in-flight sessions end', async (t) => {
  const api = await startTestApi(t);
  const token = await login(api);
  t.equal((await call(api, 'GET', '/api/types/Volume/instances', { token })).status, 200);
  await api.api.close();
  await t.rejects(call(api, 'GET', '/api/types/Volume/instances', { token }), { code: 'ECONNREFUSED' }, 'nothing listens');
  await api.api.close(); // a second close is harmless
});
