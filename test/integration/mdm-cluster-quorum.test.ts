// The MDM cluster losing its quorum, and all of it restarted, on real processes (as
// mdm-cluster-faults.test.ts: real etcd members with TLS, MDMs, SDSs, an SDC, a verifying
// writer and fio --verify=crc32c on NBD volumes the whole time; zero client-visible IO errors
// and zero verify failures):
//
// - a Tie-Breaker, then the Master host killed: degraded but working; then no quorum: the
//   Slave left refuses management with a clear error (not a forward to the dead Master) while
//   IO goes on; restored, everything works again.
// - everything (MDMs and etcd members) stopped, then started from disk: nothing lost; one
//   member's data directory wiped and re-added.

import * as fs from 'node:fs';
import t from 'tap';
import { until } from '../helpers/cluster.js';
import { expectClean, fioVerify, fioVerifyOnly } from '../helpers/fault-load.js';
import { clusterWriter, expectWriterClean, setUpMdmClusterFaults } from '../helpers/mdm-cluster-faults.js';

const MiB = 1024 * 1024;

t.test('a Tie-Breaker, then the Master host down: degraded, then no quorum (management refused by the Slave, IO goes on), then restored', async (t) => {
  const { mdms, cluster } = await setUpMdmClusterFaults(t);
  const onVol1 = await clusterWriter(t, cluster, 'vol1');
  const firstMaster = await mdms.master();
  // Members are mdm1, mdm2, tb1 in that order (etcd-cluster.ts names them mdm1.. and the MDMs follow).
  const tieBreaker = 2;
  await mdms.etcd.kill(tieBreaker, 'SIGKILL');
  const degraded = await until('the cluster to report itself degraded', async () => {
    const view = await mdms.query(firstMaster);
    return view?.clusterState === 'ClusteredDegraded' ? view : undefined;
  });
  t.equal(degraded.goodNodesNum, 2, 'two good nodes of three');
  t.equal(degraded.tieBreakers[0]?.status, 'Disconnected', 'the Tie-Breaker is shown disconnected');
  t.equal((await mdms.cli(['volume', 'add', '--pool', 'sp1', '--name', 'degraded', '--size', '1GiB'])).code, 0, 'a degraded cluster takes changes');

  // The Master host goes (the mastership may have moved while etcd chose a new leader).
  // The Slave it leaves knows a Master that no longer answers and an etcd without a quorum:
  // it must say so, not forward to the dead Master forever.
  const downIndex = await mdms.master();
  const survivor = downIndex === 0 ? 1 : 0;
  await mdms.mdms[downIndex]?.handle?.kill();
  mdms.mdms[downIndex]!.handle = null;
  await mdms.etcd.kill(downIndex, 'SIGKILL');
  let lastRefusal = '';
  const refused = await until(
    'management to be refused for want of a quorum',
    async () => {
      const result = await mdms.cli(['volume', 'add', '--pool', 'sp1', '--name', 'no-quorum', '--size', '1GiB']);
      lastRefusal = result.stderr.trim();
      return result.code !== 0 && /quorum/i.test(result.stderr) ? result : undefined;
    },
    30_000,
  ).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}; the last answer: ${lastRefusal}`);
  });
  t.match(refused.stderr, /quorum/i, `${mdms.mdms[survivor]!.name}, the Slave left, says why: ${refused.stderr.trim()}`);
  t.ok(await onVol1.waitForWrites(onVol1.stats().writes + 500, 20_000), 'IO goes on without a quorum, from the cached maps');

  await mdms.etcd.start(downIndex);
  await mdms.etcd.start(tieBreaker);
  await mdms.start(downIndex);
  await until('a Master again, taking changes', async () => ((await mdms.cli(['volume', 'add', '--pool', 'sp1', '--name', 'restored', '--size', '1GiB'])).code === 0 ? true : undefined), 60_000);
  const whole = await until('the cluster to be whole', async () => {
    const view = await mdms.query(downIndex);
    return view?.clusterState === 'ClusteredNormal' ? view : undefined;
  }, 30_000);
  t.equal(whole.goodNodesNum, 3, 'three good nodes again');
  const names = (JSON.parse((await mdms.cli(['volume', 'list', '--json'])).stdout) as Array<{ name: string }>).map((volume) => volume.name);
  t.ok(names.includes('degraded') && names.includes('restored') && !names.includes('no-quorum'), 'what was acknowledged is there, what was refused is not');
  await expectWriterClean(t, onVol1, 'through the loss and return of the quorum');
});

t.test('every MDM and etcd member stopped, then started from disk: nothing lost, IO never stopped; a wiped member re-added', async (t) => {
  const { mdms, cluster } = await setUpMdmClusterFaults(t);
  const onVol1 = await clusterWriter(t, cluster, 'vol1');
  expectClean(t, await fioVerify(cluster.uri('vol2'), { sizeBytes: 32 * MiB, loops: 1, bs: '1M' }).done, 'writing vol2');
  for (const mdm of mdms.mdms) {
    await mdm.handle?.stop();
    mdm.handle = null;
  }
  await mdms.etcd.stopAll();
  const during = onVol1.stats().writes;
  const stoppedMs = Number(process.env['MESHBLOCK_CLUSTER_STOP_MS'] ?? 60_000);
  await new Promise((resolve) => setTimeout(resolve, stoppedMs));
  t.ok(onVol1.stats().writes > during + 100, `IO went on while the whole control plane was stopped for ${stoppedMs / 1000} s`);
  for (let index = 0; index < mdms.etcd.members.length; index++) await mdms.etcd.start(index);
  for (let index = 0; index < mdms.mdms.length; index++) await mdms.start(index);
  await mdms.master(60_000);
  const names = (JSON.parse((await mdms.cli(['volume', 'list', '--json'])).stdout) as Array<{ name: string }>).map((volume) => volume.name).sort();
  t.same(names, ['vol1', 'vol2'], 'the volumes came back from disk');
  t.equal((await mdms.cli(['volume', 'add', '--pool', 'sp1', '--name', 'after-restart', '--size', '1GiB'])).code, 0, 'the restarted cluster takes changes');

  // One member loses its disk: removed, wiped, added again, it catches up from the others.
  await mdms.etcd.wipeAndReAdd(2);
  await until('the cluster to be whole after the wipe', async () => ((await mdms.query(0))?.clusterState === 'ClusteredNormal' ? true : undefined), 60_000);
  t.equal((await mdms.cli(['volume', 'add', '--pool', 'sp1', '--name', 'after-wipe', '--size', '1GiB'])).code, 0, 'and takes changes after a member was wiped and re-added');
  t.ok(fs.existsSync(mdms.etcd.members[2]!.dataDir), 'the re-added member has its data directory again');
  expectClean(t, await fioVerifyOnly(cluster.uri('vol2'), 32 * MiB, '1M').done, 'reading vol2 back');
  await expectWriterClean(t, onVol1, 'through the whole stop and start');
});
