// A network fault between hosts: SDSs in their own network namespaces (test/helpers/netns.ts),
// one cut off by taking its link down under fio's verifying load, then healed.

import t from 'tap';
import { startCluster, until } from '../helpers/cluster.js';
import { fioVerify, fioVerifyOnly, expectClean, dashboard, untilWhole } from '../helpers/fault-load.js';
import { createSimNetwork } from '../helpers/netns.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

t.test('a host cut off the network (SDSs in network namespaces), then healed', async (t) => {
  const dir = t.testdir();
  const network = await createSimNetwork(t, 3);
  if ('unavailable' in network) {
    t.fail(`network namespaces are unavailable: ${network.unavailable}`);
    return;
  }
  const cluster = await startCluster(t, dir, {
    sdsCount: 3,
    deviceBytes: 2 * GiB,
    volumes: [{ name: 'vol1', sizeBytes: GiB }],
    mdmArgs: ['--sds-down-after', '2', '--rebuild-after', '60'],
    mdmHost: network.hostAddress,
    sdsHosts: network.hosts.map((host) => ({ netns: host.netns, address: host.address })),
  });
  t.match(cluster.sds[0]?.address, new RegExp(`^${network.hosts[0]?.address.replace(/\./g, '\\.')}:`), 'the SDSs serve from their own hosts');
  const load = fioVerify(cluster.uri('vol1'), { sizeBytes: 32 * MiB, loops: 2 });
  await new Promise((resolve) => setTimeout(resolve, 1500));
  await network.cut(0);
  await until('the cut-off SDS to be declared down', async () => ((await dashboard(cluster)).health.sdsDown === 1 ? true : undefined), 30_000);
  await new Promise((resolve) => setTimeout(resolve, 2000));
  await network.heal(0);
  expectClean(t, await load.done, 'while a host was cut off and came back');
  const view = await untilWhole(cluster, 120_000);
  t.equal(view.health.sdsDown, 0, 'the host is back in the cluster');
  expectClean(t, await fioVerifyOnly(cluster.uri('vol1'), 32 * MiB).done, 'reading everything back');
});
