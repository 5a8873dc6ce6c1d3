// Proves the REST side of the pools' rebuild and rebalance IO priority policies over real
// HTTPS (test/helpers/rest.ts: a real API and state machine, no SDSs):
// - setRebuildIoPriorityPolicy / setRebalanceIoPriorityPolicy take ScaleIO's body, numbers
//   as JSON numbers or strings of digits, a number left out keeping the pool's;
// - every bad field is a 400 naming it, and nothing changes;
// - pool objects (one, the list, a domain's pools) show both policies; a pool never set shows
//   favorAppIos with the numbers of the MDM's start options, and says so.

import t, { type Test } from 'tap';
import { healthOptions, type FillDefaults } from '../../src/mdm/health.js';
import type { RestStoragePool } from '../../src/mdm/rest-objects.js';
import { call, login, startTestApi, TestController, type TestApi } from '../helpers/rest.js';

const MiB = 1024 * 1024;

/** The test controller, with the start options of an MDM run with --rebuild-rate-under-load 24MiB --rebuild-inflight 5. */
class OptionsController extends TestController {
  fillDefaults(): FillDefaults {
    return healthOptions({ rebuildBytesPerSecondUnderLoad: 24 * MiB, rebuildChunksInflightMax: 5 });
  }
}

async function setup(t: Test): Promise<{ api: TestApi; token: string; pd: string; pool: string }> {
  const api = await startTestApi(t, { controller: new OptionsController() });
  const token = await login(api);
  const created = async (type: string, body: unknown): Promise<string> => {
    const reply = await call(api, 'POST', `/api/types/${type}/instances`, { token, body });
    if (reply.status !== 200) throw new Error(`create ${type}: ${reply.status} ${reply.text}`);
    return (reply.body as { id: string }).id;
  };
  const pd = await created('ProtectionDomain', { name: 'pd1' });
  const pool = await created('StoragePool', { protectionDomainId: pd, name: 'pool1' });
  return { api, token, pd, pool };
}

async function poolShown(api: TestApi, token: string, pool: string): Promise<RestStoragePool> {
  const reply = await call(api, 'GET', `/api/instances/StoragePool::${pool}`, { token });
  if (reply.status !== 200) throw new Error(`GET pool: ${reply.status} ${reply.text}`);
  return reply.body as RestStoragePool;
}

const policyFields = (pool: RestStoragePool): Record<string, unknown> =>
  Object.fromEntries(Object.entries(pool).filter(([key]) => key.startsWith('rebuildIoPriority') || key.startsWith('rebalanceIoPriority')));

t.test('a pool never set shows favorAppIos with the start options, per SDS', async (t) => {
  const { api, token, pd, pool } = await setup(t);
  const expected = {
    rebuildIoPriorityPolicy: 'favorAppIos',
    rebuildIoPriorityNumOfConcurrentIosPerDevice: 5,
    rebuildIoPriorityBwLimitPerDeviceInKbps: 24 * 1024,
    rebuildIoPriorityFromStartOptions: true,
    rebalanceIoPriorityPolicy: 'favorAppIos',
    rebalanceIoPriorityNumOfConcurrentIosPerDevice: 5,
    rebalanceIoPriorityBwLimitPerDeviceInKbps: 24 * 1024,
    rebalanceIoPriorityFromStartOptions: true,
  };
  t.same(policyFields(await poolShown(api, token, pool)), expected, 'the pool object');
  const list = await call(api, 'GET', '/api/types/StoragePool/instances', { token });
  t.same(policyFields((list.body as RestStoragePool[])[0] as RestStoragePool), expected, 'the list');
  const related = await call(api, 'GET', `/api/instances/ProtectionDomain::${pd}/relationships/StoragePool`, { token });
  t.same(policyFields((related.body as RestStoragePool[])[0] as RestStoragePool), expected, "the domain's pools");
});

t.test('set: ScaleIO bodies with numbers or strings; a number left out keeps the pool’s', async (t) => {
  const { api, token, pool } = await setup(t);
  const rebuild = await call(api, 'POST', `/api/instances/StoragePool::${pool}/action/setRebuildIoPriorityPolicy`, { token, body: { policy: 'limitBandwidth', numOfConcurrentIosPerDevice: '3', bwLimitPerDeviceInKbps: '20480' } });
  t.equal(rebuild.status, 200, rebuild.text);
  t.same(rebuild.body, {}, 'an empty reply, as ScaleIO');
  const rebalance = await call(api, 'POST', `/api/instances/StoragePool::${pool}/action/setRebalanceIoPriorityPolicy`, { token, body: { policy: 'limitNumOfConcurrentIos', numOfConcurrentIosPerDevice: 2 } });
  t.equal(rebalance.status, 200, rebalance.text);
  t.same(policyFields(await poolShown(api, token, pool)), {
    rebuildIoPriorityPolicy: 'limitBandwidth',
    rebuildIoPriorityNumOfConcurrentIosPerDevice: 3,
    rebuildIoPriorityBwLimitPerDeviceInKbps: 20480,
    rebuildIoPriorityFromStartOptions: false,
    rebalanceIoPriorityPolicy: 'limitNumOfConcurrentIos',
    rebalanceIoPriorityNumOfConcurrentIosPerDevice: 2,
    rebalanceIoPriorityBwLimitPerDeviceInKbps: 10240,
    rebalanceIoPriorityFromStartOptions: false,
  }, 'both policies shown; the bandwidth never given is ScaleIO’s default');
  const again = await call(api, 'POST', `/api/instances/StoragePool::${pool}/action/setRebuildIoPriorityPolicy`, { token, body: { policy: 'favorAppIos' } });
  t.equal(again.status, 200, again.text);
  const shown = await poolShown(api, token, pool);
  t.same([shown.rebuildIoPriorityPolicy, shown.rebuildIoPriorityNumOfConcurrentIosPerDevice, shown.rebuildIoPriorityBwLimitPerDeviceInKbps], ['favorAppIos', 3, 20480], 'only the policy changed');
});

t.test('bad input: 400 naming the field, nothing changed', async (t) => {
  const { api, token, pool } = await setup(t);
  const before = JSON.stringify(api.controller.state.model);
  const cases: Array<[unknown, string]> = [
    [{}, 'policy'],
    [{ policy: 'dynamicBwThrottling' }, 'policy'],
    [{ policy: 7 }, 'policy'],
    [{ policy: 'limitNumOfConcurrentIos', numOfConcurrentIosPerDevice: 0 }, 'numOfConcurrentIosPerDevice'],
    [{ policy: 'limitNumOfConcurrentIos', numOfConcurrentIosPerDevice: '21' }, 'numOfConcurrentIosPerDevice'],
    [{ policy: 'limitNumOfConcurrentIos', numOfConcurrentIosPerDevice: 'two' }, 'numOfConcurrentIosPerDevice'],
    [{ policy: 'limitNumOfConcurrentIos', numOfConcurrentIosPerDevice: -1 }, 'numOfConcurrentIosPerDevice'],
    [{ policy: 'limitBandwidth', bwLimitPerDeviceInKbps: 512 }, 'bwLimitPerDeviceInKbps'],
    [{ policy: 'limitBandwidth', bwLimitPerDeviceInKbps: '1500' }, 'bwLimitPerDeviceInKbps'],
    [{ policy: 'limitBandwidth', bwLimitPerDeviceInKbps: 10.5 }, 'bwLimitPerDeviceInKbps'],
    [{ policy: 'limitBandwidth', bandwidth: 1024 }, 'bandwidth'],
  ];
  for (const action of ['setRebuildIoPriorityPolicy', 'setRebalanceIoPriorityPolicy']) {
    for (const [body, field] of cases) {
      const reply = await call(api, 'POST', `/api/instances/StoragePool::${pool}/action/${action}`, { token, body });
      t.equal(reply.status, 400, `${action} ${JSON.stringify(body)}: 400`);
      t.match((reply.body as { message?: string }).message, new RegExp(`\\b${field}\\b`), `... naming ${field}: ${(reply.body as { message?: string }).message}`);
    }
  }
  const missing = await call(api, 'POST', '/api/instances/StoragePool::ffffffffffffffff/action/setRebuildIoPriorityPolicy', { token, body: { policy: 'unlimited' } });
  t.equal(missing.status, 404, 'an unknown pool: 404');
  t.equal(JSON.stringify(api.controller.state.model), before, 'nothing changed');
});
