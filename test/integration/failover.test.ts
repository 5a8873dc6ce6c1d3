// An SDS killed on real processes under real client load: an MDM, SDSs and an SDC on this
// machine, fio (its nbd engine, crc32c verify) writing through the SDC the whole time; the
// lost copies are rebuilt on the others, then a second SDS dies. Asserts that fio saw no IO
// error and no verify failure, and that the MDM reports the cluster whole again.

import t from 'tap';
import { startCluster } from '../helpers/cluster.js';
import { expectClean, fioVerify, untilWhole } from '../helpers/fault-load.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

t.test('kill -9 one SDS under write load, rebuild, then kill another: no IO error, data verifies', async (t) => {
  const dir = t.testdir();
  const cluster = await startCluster(t, dir, {
    sdsCount: 4,
    deviceBytes: 2 * GiB,
    volumes: [{ name: 'vol1', sizeBytes: GiB }],
    mdmArgs: ['--sds-down-after', '2', '--rebuild-after', '3'],
  });
  const load = fioVerify(cluster.uri('vol1'), { sizeBytes: 32 * MiB, loops: 2 });
  await new Promise((resolve) => setTimeout(resolve, 2000));
  await (cluster.sds[0] as { kill(): Promise<void> }).kill();
  expectClean(t, await load.done, 'while sds1 died');
  const view = await untilWhole(cluster);
  t.equal(view.health.sdsDown, 1, 'the dead SDS is down');
  t.same(view.health.rebuild.pendingOut, [], '... and out: its copies were rebuilt elsewhere');
  t.ok(view.health.rebuild.bytesDone > 0, `the rebuild copied ${view.health.rebuild.bytesDone} bytes`);

  // Everything is on two copies again: a second SDS may die.
  const second = fioVerify(cluster.uri('vol1'), { sizeBytes: 32 * MiB, loops: 1 });
  await new Promise((resolve) => setTimeout(resolve, 1500));
  await (cluster.sds[1] as { kill(): Promise<void> }).kill();
  expectClean(t, await second.done, 'while sds2 died');
});
