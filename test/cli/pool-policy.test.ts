// Proves `meshblock pool set-io-priority` and `pool show` against the real REST API over
// HTTPS (test/helpers/rest.ts): the flags reach the pool in the API's units (--bandwidth in
// whole MiB per second, per device), `pool show` prints both policies (a pool never set as
// the MDM's start options), and every bad flag is one line naming it, refused before any
// request, with nothing changed.

import t, { type Test } from 'tap';
import type { RestStoragePool } from '../../src/mdm/rest-objects.js';
import { startTestApi, type TestApi } from '../helpers/rest.js';
import { manageRunner, type ManageRunner } from '../helpers/manage.js';

async function setup(t: Test): Promise<{ api: TestApi; run: ManageRunner; ok: (args: string[]) => Promise<string> }> {
  const api = await startTestApi(t);
  const run = manageRunner(api);
  const ok = async (args: string[]): Promise<string> => {
    const result = await run(args);
    t.equal(result.code, 0, `${args.slice(0, 3).join(' ')} succeeds${result.stderr === '' ? '' : `: ${result.stderr}`}`);
    return result.stdout;
  };
  await ok(['pd', 'add', '--name', 'pd1']);
  await ok(['pool', 'add', '--pd', 'pd1', '--name', 'pool1']);
  return { api, run, ok };
}

t.test('set-io-priority sets either policy in the API’s units; pool show prints them', async (t) => {
  const { api, ok } = await setup(t);
  const pool = (): Record<string, unknown> => Object.values(api.controller.state.model.storagePools)[0] as unknown as Record<string, unknown>;

  const fresh = await ok(['pool', 'show', 'pool1']);
  t.match(fresh, /rebuild IO priority\s+favorAppIos \(not set: the MDM's --rebuild-\* options, per SDS: 2 copies in flight, 16 MiB\/s while clients are busy/, 'a pool never set: the start options');

  const set = await ok(['pool', 'set-io-priority', 'pool1', '--rebuild', '--policy', 'limitBandwidth', '--bandwidth', '20MiB', '--concurrent-ios', '3']);
  t.match(set, /storage pool 'pool1' rebuild IO priority set to limitBandwidth/);
  t.match(set, /rebuild IO priority\s+limitBandwidth \(20 MiB\/s and 3 copies in flight per device\)/, 'and prints the result');
  t.same(pool()['rebuildIoPriority'], { policy: 'limitBandwidth', concurrentIosPerDevice: 3, bandwidthPerDeviceKbps: 20 * 1024 }, 'in the model in KiB/s');

  await ok(['pool', 'set-io-priority', '--pool', 'pool1', '--pd', 'pd1', '--rebalance', '--policy', 'limitNumOfConcurrentIos', '--concurrent-ios', '4']);
  t.same(pool()['rebalanceIoPriority'], { policy: 'limitNumOfConcurrentIos', concurrentIosPerDevice: 4, bandwidthPerDeviceKbps: 10 * 1024 }, '--pool and --pd work too');

  await ok(['pool', 'set-io-priority', 'pool1', '--rebuild', '--policy', 'favorAppIos']);
  t.same(pool()['rebuildIoPriority'], { policy: 'favorAppIos', concurrentIosPerDevice: 3, bandwidthPerDeviceKbps: 20 * 1024 }, 'numbers left out are kept');

  const shown = await ok(['pool', 'show', 'pool1']);
  t.match(shown, /rebuild IO priority\s+favorAppIos \(3 copies in flight per device, 20 MiB\/s per device while clients are busy\)/);
  t.match(shown, /rebalance IO priority\s+limitNumOfConcurrentIos \(4 copies in flight per device\)/);
  const json = JSON.parse(await ok(['pool', 'show', 'pool1', '--json'])) as RestStoragePool;
  t.match(json, { rebuildIoPriorityPolicy: 'favorAppIos', rebalanceIoPriorityNumOfConcurrentIosPerDevice: 4, rebuildIoPriorityFromStartOptions: false }, '--json: the API object');
});

t.test('bad flags: one line naming the flag, nothing sent, nothing changed', async (t) => {
  const { api, run } = await setup(t);
  const before = JSON.stringify(api.controller.state.model);
  const cases: Array<[string[], RegExp]> = [
    [['--policy', 'unlimited'], /--rebuild\/--rebalance/],
    [['--rebuild', '--rebalance', '--policy', 'unlimited'], /--rebuild\/--rebalance/],
    [['--rebuild', '--policy', 'fastest'], /policy/],
    [['--rebuild', '--policy', 'limitBandwidth', '--bandwidth', '1536KiB'], /--bandwidth.*whole number of MiB/],
    [['--rebuild', '--policy', 'limitBandwidth', '--bandwidth', '0'], /--bandwidth/],
    [['--rebuild', '--policy', 'limitBandwidth', '--bandwidth', 'lots'], /--bandwidth/],
    [['--rebuild', '--policy', 'limitNumOfConcurrentIos', '--concurrent-ios', '21'], /--concurrent-ios/],
    [['--rebuild', '--policy', 'limitNumOfConcurrentIos', '--concurrent-ios', '0'], /--concurrent-ios/],
  ];
  for (const [flags, pattern] of cases) {
    const result = await run(['pool', 'set-io-priority', 'pool1', ...flags]);
    t.not(result.code, 0, `${flags.join(' ')}: refused`);
    t.match(result.stderr, pattern, `... naming the flag: ${result.stderr.trim()}`);
    t.equal(result.stderr.trim().split('\n').length, 1, '... in one line');
  }
  const unknown = await run(['pool', 'set-io-priority', 'nosuchpool', '--rebuild', '--policy', 'unlimited']);
  t.not(unknown.code, 0, 'an unknown pool is refused');
  t.match(unknown.stderr, /nosuchpool/);
  t.equal(JSON.stringify(api.controller.state.model), before, 'nothing changed');
});
