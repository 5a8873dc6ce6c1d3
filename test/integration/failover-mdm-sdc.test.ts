// Control-plane and client-side failures on real processes under verifying load: the MDM
// killed during a rebuild and restarted (IO goes on from the cached maps; the rebuild
// resumes), and the SDC killed under a reconnecting verifying writer.

import t from 'tap';
import { startCluster, startMdm, startSdc, until } from '../helpers/cluster.js';
import { startVerifier, summary } from '../helpers/verifier.js';
import { fioVerify, fioVerifyOnly, expectClean, dashboard, untilWhole } from '../helpers/fault-load.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

t.test('kill -9 the MDM during a rebuild under load: IO goes on; restarted, it picks up its state and the rebuild', async (t) => {
  const dir = t.testdir();
  const cluster = await startCluster(t, dir, {
    sdsCount: 4,
    deviceBytes: 2 * GiB,
    volumes: [{ name: 'vol1', sizeBytes: GiB }],
    mdmArgs: ['--sds-down-after', '2', '--rebuild-after', '2', '--rebuild-rate', '1MiB', '--rebuild-rate-under-load', '1MiB'],
  });
  expectClean(t, await fioVerify(cluster.uri('vol1'), { sizeBytes: 96 * MiB, loops: 1, bs: '1M' }).done, 'writing the data');
  const epochBefore = (await dashboard(cluster)).system.mapEpoch;
  await (cluster.sds[3] as { kill(): Promise<void> }).kill();
  // Throttled to 1 MiB/s per source, the rebuild of ~48 MiB runs for a while.
  await until('a rebuild to run', async () => ((await dashboard(cluster)).health.rebuild.state === 'running' ? true : undefined), 60_000);

  const load = fioVerify(cluster.uri('vol1'), { sizeBytes: 32 * MiB, loops: 1, extra: ['--offset=256M'] });
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const apiPort = new URL(cluster.mdm.apiUrl).port;
  await cluster.mdm.kill();
  await new Promise((resolve) => setTimeout(resolve, 3000));
  cluster.mdm = await startMdm(t, dir, { listen: cluster.mdm.address, api: `127.0.0.1:${apiPort}` }, ['--sds-down-after', '2', '--rebuild-after', '2']);
  const view = await untilWhole(cluster);
  expectClean(t, await load.done, 'while the MDM was killed and restarted');
  t.ok(view.system.mapEpoch > epochBefore, 'the restarted MDM kept its epoch (and moved on)');
  t.equal(view.health.sdsConnected, 3, 'the three live SDSs reconnected (and none was declared down for the restart)');
  const volumes = JSON.parse((await cluster.meshblock(['volume', 'list', '--json'])).stdout) as Array<{ name: string }>;
  t.same(volumes.map((volume) => volume.name), ['vol1'], 'its volumes are intact');
  expectClean(t, await fioVerifyOnly(cluster.uri('vol1'), 96 * MiB, '1M').done, 'reading the data back after the rebuild');
});

t.test('kill -9 the SDC under a verifying writer and restart it: the client reconnects and continues, nothing lost', async (t) => {
  const dir = t.testdir();
  const cluster = await startCluster(t, dir, { sdsCount: 3, deviceBytes: 2 * GiB, volumes: [{ name: 'vol1', sizeBytes: GiB }] });
  const writer = await startVerifier({ host: '127.0.0.1', port: cluster.sdc.nbdPort, exportName: 'vol1', regionBytes: 64 * MiB, depth: 8, reconnectTimeoutMs: 60_000, log: (line) => t.comment(line) });
  t.teardown(() => writer.destroy());
  t.ok(await writer.waitForWrites(2000), 'the writer is under way');
  await cluster.sdc.kill();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  cluster.sdc = await startSdc(t, dir, cluster.mdm, cluster.sdc.name, cluster.sdc.nbdAddress);
  const before = writer.stats().writes;
  t.ok(await writer.waitForWrites(before + 2000, 60_000), 'the writer reconnected and goes on');
  const stats = await writer.verifyAll();
  t.comment(summary(stats));
  t.ok(stats.reconnects >= 1, `it reconnected (${stats.reconnects} times)`);
  t.equal(stats.ioErrors, 0, 'no IO errors');
  t.equal(stats.verifyFailureCount, 0, 'every acknowledged write is there, at the version last acknowledged');
  t.equal(stats.fatal, null);
});
