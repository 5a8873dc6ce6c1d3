// Proves that the REST API answers what ScaleIO's own clients send and expect, request by
// request as their code writes them (Debian's python3-cinder PowerFlex driver, rest_client.py,
// and python3-os-brick's ScaleIO connector, scaleio.py), over real HTTPS against a real
// StateMachine behind the in-test controller (test/helpers/rest.ts):
// - getByName for every named type, with Cinder's type names (Domain, Pool) and keys
//   (PDID,NAME), names percent-encoded once (Cinder) and twice (os-brick); the answer is the
//   id as a JSON string, and a missing name ScaleIO's error (79 for a volume);
// - volume names in ScaleIO's character set, base64 included (Cinder's id_to_base64), and the
//   same length limit; what stays refused;
// - the SDC named by sdcId or by guid on addMappedSdc, removeMappedSdc and setMappedSdcLimits;
//   os-brick's "already mapped" (81) and "not mapped" (84); {allSdcs: ""} on unmap;
// - mappedSdcInfo null for a volume mapped nowhere (Cinder reads "not null" as "in use");
//   sdcIp on Sdc objects and getByIp (os-brick's Client type), from where the SDC registered;
// - removeVolume of a volume already gone: errorCode 79 (Cinder's "already deleted");
// - every documented request field accepted, the ignored ones changing nothing; sizes in Kb
//   or Gb; numbers and booleans as strings in any case;
// - bad input a ScaleIO client can send (unknown type or action, wrong field type, missing
//   field): one error shape, errorCode and code, and the model exactly as it was.

import t, { type Test } from 'tap';
import { restErrorCodes, scaleIoErrorCodes } from '../../src/mdm/rest-errors.js';
import type { Id } from '../../src/mdm/model.js';
import type { RestSdc, RestVolume } from '../../src/mdm/rest-objects.js';
import { TestController, call, login, startTestApi, type TestApi } from '../helpers/rest.js';

const KiB = 1024;
const GiB = 1024 * 1024 * 1024;

/** Python's urllib.parse.quote(text, ''): every byte but letters, digits and '_.-~' escaped. */
function quote(text: string): string {
  return encodeURIComponent(text).replace(/[!'()*]/g, (char) => `%${char.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** Cinder's flex_utils.id_to_base64: the UUID's 16 bytes in base64 (24 characters). */
function idToBase64(uuid: string): string {
  return Buffer.from(uuid.replace(/-/g, ''), 'hex').toString('base64');
}

interface Fixture {
  api: TestApi;
  token: string;
  pd: string;
  pool: string;
  sdc: string;
  guid: string;
}

async function post(api: TestApi, token: string, path: string, body: unknown): Promise<{ status: number; body: unknown }> {
  return call(api, 'POST', path, { token, body });
}

async function get(api: TestApi, token: string, path: string): Promise<{ status: number; body: unknown }> {
  return call(api, 'GET', path, { token });
}

async function create(api: TestApi, token: string, type: string, body: unknown): Promise<string> {
  const reply = await post(api, token, `/api/types/${type}/instances`, body);
  if (reply.status !== 200) throw new Error(`create ${type}: ${reply.status} ${JSON.stringify(reply.body)}`);
  return (reply.body as { id: string }).id;
}

/** pd1/sp1 over three SDSs, and an SDC registered with a ScaleIO-style guid. */
async function populated(t: Test): Promise<Fixture> {
  const api = await startTestApi(t);
  const token = await login(api);
  const pd = await create(api, token, 'ProtectionDomain', { name: 'pd1' });
  const pool = await create(api, token, 'StoragePool', { protectionDomainId: pd, name: 'sp1', volumeGranularityInMb: 64 });
  for (const [index, name] of ['sds1', 'sds2', 'sds3'].entries()) {
    const sdsId = api.controller.registerSds(name, 7072 + index);
    await create(api, token, 'Sds', { sdsId, protectionDomainId: pd });
    await create(api, token, 'Device', { sdsId, storagePoolId: pool, deviceCurrentPathName: '/dev/sdb' });
  }
  const guid = 'B6A3C2F1-0E4D-4C57-9A1B-2C3D4E5F6A7B';
  const sdc = api.controller.registerSdc(guid.toLowerCase(), 'host1');
  return { api, token, pd, pool, sdc, guid };
}

function model(api: TestApi): string {
  return JSON.stringify(api.controller.state.model);
}

t.test('getByName: every named type, Cinder\'s Domain and Pool (PDID,NAME), names encoded once or twice; the id as a JSON string', async (t) => {
  const { api, token, pd, pool, sdc } = await populated(t);
  const name = idToBase64('0b3a2c7e-91d4-4f5a-8e6b-7c1d2e3f4a5b');
  t.match(name, /[+/=]/, `a Cinder volume name with base64's own characters: ${name}`);
  const volume = await create(api, token, 'Volume', { storagePoolId: pool, name, volumeSizeInKb: '8388608', volumeType: 'ThinProvisioned' });

  // Cinder: rest_client._get_protection_domain_id_by_name and _get_storage_pool_id_by_name.
  let reply = await get(api, token, `/api/types/Domain/instances/getByName::${quote('pd1')}`);
  t.same([reply.status, reply.body], [200, pd], 'Domain (Cinder\'s type name): the id as a JSON string');
  reply = await get(api, token, `/api/types/ProtectionDomain/instances/getByName::pd1`);
  t.same([reply.status, reply.body], [200, pd], 'ProtectionDomain too');
  reply = await get(api, token, `/api/types/Pool/instances/getByName::${pd},${quote('sp1')}`);
  t.same([reply.status, reply.body], [200, pool], 'Pool by PDID,NAME as Cinder sends it');
  t.match((await get(api, token, `/api/instances/StoragePool::${pool}`)).body, { zeroPaddingEnabled: true, dataLayout: 'MediumGranularity' }, 'the pool fields Cinder reads next');
  reply = await get(api, token, `/api/types/StoragePool/instances/getByName::sp1`);
  t.same([reply.status, reply.body], [200, pool], 'StoragePool by its name alone (unique)');
  reply = await get(api, token, `/api/types/Sdc/instances/getByName::host1`);
  t.same([reply.status, reply.body], [200, sdc], 'Sdc');

  // os-brick: _get_volume_id quotes the name twice; Cinder's own lookups quote it once.
  const twice = quote(quote(name));
  t.match(twice, /%25/, `encoded twice: ${twice}`);
  reply = await get(api, token, `/api/types/Volume/instances/getByName::${twice}`);
  t.same([reply.status, reply.body], [200, volume], 'Volume, name percent-encoded twice (os-brick)');
  reply = await get(api, token, `/api/types/Volume/instances/getByName::${quote(name)}`);
  t.same([reply.status, reply.body], [200, volume], 'Volume, name percent-encoded once (Cinder)');

  reply = await get(api, token, `/api/types/Volume/instances/getByName::${quote(quote(idToBase64('11111111-2222-3333-4444-555555555555')))}`);
  t.equal(reply.status, 404, 'a volume name nobody has: not 200');
  t.match(reply.body, { errorCode: scaleIoErrorCodes.volumeNotFound, code: 'MB_ERR_NOT_FOUND', httpStatusCode: 404, message: /no Volume named/ }, '79: ScaleIO\'s volume not found');
  reply = await get(api, token, `/api/types/Domain/instances/getByName::nope`);
  t.match([reply.status, reply.body], [404, { errorCode: scaleIoErrorCodes.resourceNotFound, code: 'MB_ERR_NOT_FOUND' }], 'a missing domain: 3, ScaleIO\'s resource not found');
  reply = await get(api, token, `/api/types/Pool/instances/getByName::0123456789abcdee,sp1`);
  t.match([reply.status, reply.body], [404, { errorCode: scaleIoErrorCodes.resourceNotFound, message: /no protection domain with id/ }], 'a pool in a domain that does not exist');
  reply = await get(api, token, `/api/types/Nothing/instances/getByName::x`);
  t.match([reply.status, reply.body], [404, { code: 'MB_ERR_NO_ROUTE', errorCode: restErrorCodes['MB_ERR_NO_ROUTE'] }], 'an unknown type');
  reply = await get(api, token, `/api/types/constructor/instances/getByName::x`);
  t.match([reply.status, reply.body], [404, { code: 'MB_ERR_NO_ROUTE' }], 'no prototype names reach the alias table');
});

t.test('volume names: ScaleIO\'s character set (base64 included) and 31 characters; the rest refused, nothing changed', async (t) => {
  const { api, token, pool } = await populated(t);
  const accepted = ['+AbC/dEf==', '/startsWithSlash', 'a.b_c-d+e/f=g', 'x'.repeat(31), idToBase64('ffffffff-ffff-ffff-ffff-ffffffffffff')];
  for (const name of accepted) {
    const reply = await post(api, token, '/api/types/Volume/instances', { storagePoolId: pool, name, volumeSizeInKb: 8 * 1024 * 1024, volumeType: 'ThinProvisioned' });
    t.equal(reply.status, 200, `'${name}' accepted`);
  }
  const before = model(api);
  for (const name of ['', 'x'.repeat(32), '-flag', '.hidden', 'has space', 'per%cent', 'com,ma', 'co:lon', 'é']) {
    const reply = await post(api, token, '/api/types/Volume/instances', { storagePoolId: pool, name, volumeSizeInKb: 8 * 1024 * 1024 });
    t.match([reply.status, reply.body], [400, { code: 'MB_ERR_INVALID_ARGUMENT', errorCode: restErrorCodes['MB_ERR_INVALID_ARGUMENT'], message: /^name: must be 1 to 31 letters/ }], `'${name}' refused, naming the field`);
  }
  t.equal(model(api), before, 'nothing changed');

  // Renames and snapshot names follow the same rule (Cinder's rename_volume and snapshot_volume).
  const id = (await get(api, token, `/api/types/Volume/instances/getByName::${quote(quote('+AbC/dEf=='))}`)).body as string;
  let reply = await post(api, token, `/api/instances/Volume::${id}/action/setVolumeName`, { newName: idToBase64('01234567-89ab-cdef-0123-456789abcdef') });
  t.equal(reply.status, 200, 'setVolumeName to a base64 name');
  reply = await post(api, token, '/api/instances/System/action/snapshotVolumes', { snapshotDefs: [{ volumeId: id, snapshotName: idToBase64('fedcba98-7654-3210-fedc-ba9876543210') }] });
  t.equal(reply.status, 200, 'snapshotVolumes with a base64 snapshotName');
  reply = await post(api, token, `/api/instances/Volume::${id}/action/setVolumeName`, { newName: '/startsWithSlash' });
  t.match([reply.status, reply.body], [409, { code: 'MB_ERR_NAME_TAKEN', errorCode: scaleIoErrorCodes.volumeNameTaken }], 'a name taken: 99, ScaleIO\'s volume already exists');
  reply = await post(api, token, '/api/types/Volume/instances', { storagePoolId: pool, name: '/startsWithSlash', volumeSizeInKb: 8 * 1024 * 1024 });
  t.match([reply.status, reply.body], [409, { code: 'MB_ERR_NAME_TAKEN', errorCode: scaleIoErrorCodes.volumeNameTaken }], 'on create too');
  // Other objects keep meshblock's names (no ScaleIO client names them in base64).
  reply = await post(api, token, '/api/types/ProtectionDomain/instances', { name: 'a+b' });
  t.match([reply.status, reply.body], [400, { code: 'MB_ERR_INVALID_ARGUMENT', message: /^name: / }], 'a protection domain name keeps its rule');
});

t.test('map, limit and unmap by sdcId or guid, as os-brick does; already mapped is 81, not mapped is 84', async (t) => {
  const { api, token, pool, sdc, guid } = await populated(t);
  const volume = await create(api, token, 'Volume', { storagePoolId: pool, name: 'vol1', volumeSizeInKb: '8388608', volumeType: 'ThinProvisioned' });
  const action = (name: string, body: unknown): Promise<{ status: number; body: unknown }> => post(api, token, `/api/instances/Volume::${volume}/action/${name}`, body);
  const info = async (): Promise<RestVolume['mappedSdcInfo']> => ((await get(api, token, `/api/instances/Volume::${volume}`)).body as RestVolume).mappedSdcInfo;

  t.equal(await info(), null, 'mapped nowhere: mappedSdcInfo is null, as ScaleIO');
  // os-brick connect_volume: {guid, allowMultipleMappings: 'TRUE'}; the guid in the SDC's case.
  let reply = await action('addMappedSdc', { guid, allowMultipleMappings: 'TRUE' });
  t.equal(reply.status, 200, 'mapped by guid (any case)');
  t.match(await info(), [{ sdcId: sdc, accessMode: 'ReadWrite' }], 'to the SDC of that guid');
  const mapped = model(api);
  reply = await action('addMappedSdc', { guid, allowMultipleMappings: 'TRUE' });
  t.match([reply.status, reply.body], [409, { errorCode: scaleIoErrorCodes.volumeAlreadyMapped, code: 'MB_ERR_ALREADY_MAPPED' }], 'again: 81, which os-brick ignores');
  reply = await action('addMappedSdc', { sdcId: sdc });
  t.match(reply.body, { errorCode: scaleIoErrorCodes.volumeAlreadyMapped }, 'by sdcId: the same');
  t.equal(model(api), mapped, 'nothing changed');

  reply = await action('setMappedSdcLimits', { guid, iopsLimit: '2000', bandwidthLimitInKbps: '10240' });
  t.equal(reply.status, 200, 'limits by guid (numbers as strings)');
  t.match(await info(), [{ limitIops: 2000, limitBwInKbps: 10240 }], 'applied');
  reply = await action('setMappedSdcLimits', { sdcId: sdc, iopsLimit: 0 });
  t.match([reply.status, await info()], [200, [{ limitIops: 0, limitBwInKbps: 10240 }]], 'by sdcId; the bandwidth kept');

  reply = await action('removeMappedSdc', { guid });
  t.equal(reply.status, 200, 'unmapped by guid');
  t.equal(await info(), null, 'mappedSdcInfo null again');
  const unmapped = model(api);
  reply = await action('removeMappedSdc', { guid });
  t.match([reply.status, reply.body], [404, { errorCode: scaleIoErrorCodes.volumeNotMapped, code: 'MB_ERR_NOT_FOUND', message: /is not mapped to SDC 'host1'/ }], 'again: 84, which os-brick ignores');
  reply = await action('removeMappedSdc', { sdcId: sdc });
  t.match(reply.body, { errorCode: scaleIoErrorCodes.volumeNotMapped }, 'by sdcId: the same');
  reply = await action('setMappedSdcLimits', { guid, iopsLimit: 100 });
  t.match(reply.body, { errorCode: scaleIoErrorCodes.volumeNotMapped }, 'limits of a mapping that is not there: 84');
  t.equal(model(api), unmapped, 'nothing changed');

  for (const [what, body, field] of [
    ['an unknown guid', { guid: '00000000-0000-0000-0000-000000000000' }, /^guid: no SDC with guid/],
    ['an unknown sdcId', { sdcId: 'ffffffffffffffff' }, /^sdcId: no SDC with id/],
  ] as const) {
    reply = await action('addMappedSdc', body);
    t.match([reply.status, reply.body], [404, { code: 'MB_ERR_NOT_FOUND', errorCode: scaleIoErrorCodes.resourceNotFound, message: field }], `${what}: refused, naming the field`);
  }
  for (const [what, body] of [
    ['neither sdcId nor guid', {}],
    ['both', { sdcId: sdc, guid }],
    ['a guid that is not a string', { guid: 7 }],
  ] as const) {
    reply = await action('addMappedSdc', body);
    t.match([reply.status, reply.body], [400, { code: 'MB_ERR_INVALID_ARGUMENT', message: /^(sdcId|guid): / }], `${what}: 400`);
  }
  t.equal(model(api), unmapped, 'nothing changed by the refusals');

  // Cinder's _unmap_volume_before_delete sends {allSdcs: ""}; ScaleIO's documented extras are read.
  await action('addMappedSdc', { sdcId: sdc, allowOnExtManagedVol: 'False' });
  reply = await action('removeMappedSdc', { allSdcs: '', ignoreScsiInitiators: 'true', skipApplianceValidation: 'TRUE', allowOnExtManagedVol: 'false' });
  t.match([reply.status, await info()], [200, null], 'allSdcs: "" unmaps from every SDC');
  reply = await action('removeMappedSdc', { allSdcs: '' });
  t.equal(reply.status, 200, 'allSdcs on a volume mapped nowhere: nothing to do');
  reply = await action('removeMappedSdc', { allSdcs: '', guid });
  t.match([reply.status, reply.body], [400, { message: /^allSdcs: give guid or allSdcs, not both/ }], 'allSdcs with an SDC: refused');
});

t.test('removeVolume of a volume already gone: 79 (Cinder\'s "already deleted"); any action or GET on it too', async (t) => {
  const { api, token, pool } = await populated(t);
  const volume = await create(api, token, 'Volume', { storagePoolId: pool, name: 'gone', volumeSizeInKb: '8388608', volumeType: 'ThinProvisioned' });
  let reply = await post(api, token, `/api/instances/Volume::${volume}/action/removeVolume`, { removeMode: 'ONLY_ME' });
  t.equal(reply.status, 200, 'removed');
  reply = await post(api, token, `/api/instances/Volume::${volume}/action/removeVolume`, { removeMode: 'ONLY_ME' });
  t.match([reply.status, reply.body], [404, { errorCode: scaleIoErrorCodes.volumeNotFound, code: 'MB_ERR_NOT_FOUND', httpStatusCode: 404 }], 'again: 79');
  reply = await get(api, token, `/api/instances/Volume::${volume}`);
  t.match([reply.status, reply.body], [404, { errorCode: scaleIoErrorCodes.volumeNotFound }], 'GET: 79 (Cinder\'s query_volume before unmapping)');
  reply = await post(api, token, `/api/instances/Volume::${volume}/action/removeMappedSdc`, { allSdcs: '' });
  t.match(reply.body, { errorCode: scaleIoErrorCodes.volumeNotFound }, 'unmap of a gone volume: 79');
  reply = await get(api, token, '/api/instances/Device::ffffffffffffffff');
  t.match(reply.body, { errorCode: scaleIoErrorCodes.deviceNotFound }, 'a missing device: 126');
  reply = await get(api, token, '/api/instances/Sds::ffffffffffffffff');
  t.match(reply.body, { errorCode: scaleIoErrorCodes.resourceNotFound }, 'any other missing object: 3');
  reply = await post(api, token, '/api/instances/System/action/snapshotVolumes', { snapshotDefs: [{ volumeId: volume }] });
  t.match([reply.status, reply.body], [404, { errorCode: scaleIoErrorCodes.volumeNotFound, message: /^snapshotDefs\[0\]\.volumeId: / }], 'a snapshot of a gone volume: 79');
});

t.test('volume creation: every documented field, Kb or Gb, numbers and booleans as strings in any case; ignored fields change nothing', async (t) => {
  const { api, token, pd, pool } = await populated(t);
  // Cinder's create_volume body, field for field.
  let id = await create(api, token, 'Volume', { protectionDomainId: pd, storagePoolId: pool, name: idToBase64('9e107d9d-372b-4b68-a4f8-2f7d6b5e3c11'), volumeType: 'ThickProvisioned', volumeSizeInKb: String(GiB / KiB), compressionMethod: 'None' });
  t.match(((await get(api, token, `/api/instances/Volume::${id}`)).body as RestVolume), { volumeType: 'ThickProvisioned', sizeInKb: GiB / KiB }, 'Cinder\'s thick volume');
  id = await create(api, token, 'Volume', { storagePoolId: pool, name: 'ingb', volumeSizeInGb: '1', volumeType: 'ThinProvisioned', useRmcache: 'True', volumeClass: 'defaultclass', compressionMethod: 'Invalid' });
  t.match(((await get(api, token, `/api/instances/Volume::${id}`)).body as RestVolume), { sizeInKb: GiB / KiB, volumeType: 'ThinProvisioned' }, 'volumeSizeInGb; useRmcache and volumeClass read and ignored');
  const reply = await post(api, token, '/api/types/StoragePool/instances', { protectionDomainId: pd, name: 'sp2', zeroPaddingEnabled: 'TRUE', sparePercentage: '20' });
  t.equal(reply.status, 200, 'booleans as "TRUE", numbers as strings');
  t.match(((await get(api, token, `/api/instances/StoragePool::${(reply.body as { id: string }).id}`)).body as object), { zeroPaddingEnabled: true, sparePercentage: 20 }, 'read as they mean');

  const before = model(api);
  for (const [what, body, message] of [
    ['no size', { storagePoolId: pool, name: 'v' }, /^volumeSizeInKb: is required \(or give the size as volumeSizeInGb\)/],
    ['both sizes', { storagePoolId: pool, name: 'v', volumeSizeInKb: 8388608, volumeSizeInGb: 8 }, /^volumeSizeInGb: give the size as volumeSizeInKb or volumeSizeInGb, not both/],
    ['a size that is no number', { storagePoolId: pool, name: 'v', volumeSizeInKb: 'eight' }, /^volumeSizeInKb: must be a whole number/],
    ['a size as a JSON boolean', { storagePoolId: pool, name: 'v', volumeSizeInGb: true }, /^volumeSizeInGb: must be a whole number/],
    ['no pool', { name: 'v', volumeSizeInKb: 8388608 }, /^storagePoolId: is required/],
    ['compression asked for', { storagePoolId: pool, name: 'v', volumeSizeInKb: 8388608, compressionMethod: 'Normal' }, /^compressionMethod: must be 'None' or 'Invalid'/],
    ['useRmcache that is no boolean', { storagePoolId: pool, name: 'v', volumeSizeInKb: 8388608, useRmcache: 'yes' }, /^useRmcache: must be true or false/],
    ['an unknown field', { storagePoolId: pool, name: 'v', volumeSizeInKb: 8388608, volumeSizeInKB: 1 }, /^volumeSizeInKB: unknown field/],
    ['a name that is no string', { storagePoolId: pool, name: 12, volumeSizeInKb: 8388608 }, /^name: must be a string/],
  ] as const) {
    const refused = await post(api, token, '/api/types/Volume/instances', body);
    t.match([refused.status, refused.body], [400, { code: 'MB_ERR_INVALID_ARGUMENT', errorCode: restErrorCodes['MB_ERR_INVALID_ARGUMENT'], httpStatusCode: 400, message }], what);
  }
  t.equal(model(api), before, 'nothing changed');
});

t.test('bad requests a ScaleIO client can make: unknown type or action, body not an object; one shape, nothing changed', async (t) => {
  const { api, token, pool } = await populated(t);
  const volume = await create(api, token, 'Volume', { storagePoolId: pool, name: 'v1', volumeSizeInKb: 8388608, volumeType: 'ThinProvisioned' });
  const before = model(api);
  const shape = (reply: { body: unknown }): string[] => Object.keys(reply.body as object).sort();
  for (const [what, method, path, body, status, code] of [
    ['an unknown type', 'GET', '/api/types/ReplicationPair/instances', undefined, 404, 'MB_ERR_NO_ROUTE'],
    ['an unknown type of instance', 'GET', '/api/instances/ReplicationPair::0123456789abcdef', undefined, 404, 'MB_ERR_NO_ROUTE'],
    ['an unknown action', 'POST', `/api/instances/Volume::${volume}/action/migrateVTree`, {}, 404, 'MB_ERR_NO_ROUTE'],
    ['a body that is an array', 'POST', `/api/instances/Volume::${volume}/action/setVolumeSize`, [1], 400, 'MB_ERR_INVALID_ARGUMENT'],
    ['a size as an object', 'POST', `/api/instances/Volume::${volume}/action/setVolumeSize`, { sizeInGB: { n: 1 } }, 400, 'MB_ERR_INVALID_ARGUMENT'],
    ['a missing field', 'POST', `/api/instances/Volume::${volume}/action/setVolumeName`, {}, 400, 'MB_ERR_INVALID_ARGUMENT'],
  ] as const) {
    const reply = await call(api, method, path, { token, ...(body !== undefined ? { body } : {}) });
    t.equal(reply.status, status, `${what}: ${status}`);
    t.same(shape(reply), ['code', 'errorCode', 'httpStatusCode', 'message'], `${what}: the one error shape`);
    t.match(reply.body, { code, httpStatusCode: status, errorCode: restErrorCodes[code] }, `${what}: ${code}`);
  }
  t.equal(model(api), before, 'nothing changed');
});

/** The controller, knowing where SDCs registered from (as MdmService does from their sockets). */
class AddressedController extends TestController {
  readonly addresses = new Map<Id, string>();

  sdcAddress(sdcId: Id): string | null {
    return this.addresses.get(sdcId) ?? null;
  }
}

t.test('sdcIp on Sdc objects, and getByIp (Sdc, or Client as os-brick writes it)', async (t) => {
  const controller = new AddressedController();
  const api = await startTestApi(t, { controller });
  const token = await login(api);
  const host1 = controller.registerSdc('guid-0001-host1', 'host1');
  const host2 = controller.registerSdc('guid-0002-host2', 'host2');
  controller.addresses.set(host1, '10.0.0.7');
  const sdcs = (await get(api, token, '/api/types/Sdc/instances')).body as RestSdc[];
  t.same(sdcs.map((sdc) => [sdc.name, sdc.sdcIp]), [['host1', '10.0.0.7'], ['host2', null]], 'sdcIp: where it registered from; null while unknown');
  t.match((await get(api, token, `/api/instances/Sdc::${host2}`)).body, { sdcIp: null, sdcGuid: 'guid-0002-host2' }, 'one instance too');
  let reply = await get(api, token, '/api/types/Client/instances/getByIp::10.0.0.7/');
  t.same([reply.status, reply.body], [200, host1], 'os-brick\'s Client/getByIp::IP/');
  reply = await get(api, token, '/api/types/Sdc/instances/getByIp::10.0.0.7');
  t.same([reply.status, reply.body], [200, host1], 'Sdc/getByIp::IP');
  reply = await get(api, token, '/api/types/Sdc/instances/getByIp::10.0.0.8');
  t.match([reply.status, reply.body], [404, { code: 'MB_ERR_NOT_FOUND', errorCode: scaleIoErrorCodes.resourceNotFound }], 'no SDC from there: 3');
  reply = await get(api, token, '/api/types/Sdc/instances/getByIp::not-an-ip');
  t.match([reply.status, reply.body], [400, { code: 'MB_ERR_INVALID_ARGUMENT', message: /^getByIp: / }], 'not an address: 400');
});
