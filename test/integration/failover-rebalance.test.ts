// Rebalance on real processes under fio's verifying load: an SDS added (the pool spreads
// onto it, evenly) and another removed gracefully (its data moves away first).

import t from 'tap';
import type { RestDevice } from '../../src/mdm/rest-objects.js';
import { startCluster, until } from '../helpers/cluster.js';
import { fioVerify, fioVerifyOnly, expectClean, untilWhole } from '../helpers/fault-load.js';
import { sparseFile } from '../helpers/files.js';
import { startSds } from '../helpers/sds.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

t.test('add a fourth SDS under load: the pool rebalances onto it; remove another: its data moves away first', async (t) => {
  const dir = t.testdir();
  const cluster = await startCluster(t, dir, { sdsCount: 3, deviceBytes: 2 * GiB, volumes: [{ name: 'vol1', sizeBytes: GiB }] });
  expectClean(t, await fioVerify(cluster.uri('vol1'), { sizeBytes: 256 * MiB, loops: 1, bs: '1M' }).done, 'writing the data');
  const load = fioVerify(cluster.uri('vol1'), { sizeBytes: 32 * MiB, loops: 2, extra: ['--offset=512M'] });
  const device = sparseFile(dir, 'sds4.img', 2 * GiB);
  const added = await startSds(t, { dir, name: 'sds4', devices: [device], clusterId: cluster.mdm.clusterId, secretFile: cluster.mdm.secretFile, extraArgs: ['--mdm', cluster.mdm.address] });
  await until('sds4 to register', async () => ((await cluster.meshblock(['sds', 'list', '--json'])).stdout.includes('"sds4"') ? true : undefined));
  t.equal((await cluster.meshblock(['sds', 'add', '--sds', added.name, '--pd', 'pd1'])).code, 0);
  t.equal((await cluster.meshblock(['device', 'add', '--sds', added.name, '--pool', 'sp1', '--path', device])).code, 0, 'its device joins the pool under load');
  expectClean(t, await load.done, 'while the pool rebalanced');
  await untilWhole(cluster, 180_000);
  // Stale copies are freed a few seconds after the map that moved them away.
  const devices = await until('usage to settle', async () => {
    const list = JSON.parse((await cluster.meshblock(['device', 'list', '--json'])).stdout) as RestDevice[];
    const used = list.map((entry) => entry.capacityInUseInKb);
    const mean = used.reduce((sum, value) => sum + value, 0) / used.length;
    return used.every((value) => Math.abs(value - mean) <= 0.3 * mean) ? list : undefined;
  }, 60_000);
  const usedNew = devices.find((entry) => entry.deviceCurrentPathName === device)?.capacityInUseInKb ?? 0;
  t.ok(usedNew > 0, `the new device holds ${Math.round(usedNew / 1024)} MiB`);
  t.comment(`in use per device: ${devices.map((entry) => `${Math.round(entry.capacityInUseInKb / 1024)} MiB`).join(', ')}`);
  expectClean(t, await fioVerifyOnly(cluster.uri('vol1'), 256 * MiB, '1M').done, 'reading everything back from its new places');

  // And the other way: an SDS removed gracefully under load, its data moved away first.
  const removing = fioVerify(cluster.uri('vol1'), { sizeBytes: 32 * MiB, loops: 2, extra: ['--offset=512M'] });
  const removed = await cluster.meshblock(['sds', 'remove', '--sds', 'sds1']);
  t.equal(removed.code, 0, removed.stderr);
  t.match(removed.stdout, /being removed: its data moves/, 'the removal starts, online');
  expectClean(t, await removing.done, 'while an SDS was removed');
  await untilWhole(cluster, 180_000);
  await until('sds1 to be gone', async () => (JSON.parse((await cluster.meshblock(['sds', 'list', '--json'])).stdout) as Array<{ name: string }>).every((entry) => entry.name !== 'sds1') ? true : undefined, 60_000);
  expectClean(t, await fioVerifyOnly(cluster.uri('vol1'), 256 * MiB, '1M').done, 'reading everything back without sds1');
});
