// An SDS that comes back, on real processes under fio's verifying load: a hung SDS (SIGSTOP
// past its down deadline, then SIGCONT) is fenced and nothing stale survives; an SDS
// restarted within the short-outage window receives exactly the changed chunks of its groups.

import * as fs from 'node:fs';
import t, { type Test } from 'tap';
import { MdmOp } from '../../src/wire/mdm-ops.js';
import { parsePlacementMap, placementGroupOf, type PlacementMap } from '../../src/wire/placement.js';
import { restartSds, startCluster, until, type Cluster } from '../helpers/cluster.js';
import { dashboard, expectClean, fioVerify, fioVerifyOnly, untilWhole } from '../helpers/fault-load.js';
import { run } from '../helpers/processes.js';
import { connectWire } from '../helpers/sds.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** The MDM's current placement map, asked over the wire as any cluster member would. */
async function placementMap(t: Test, cluster: Cluster): Promise<PlacementMap> {
  const peer = await connectWire(t, cluster.mdm.address, { clusterId: cluster.mdm.clusterId, secret: fs.readFileSync(cluster.mdm.secretFile, 'utf8').trim() });
  const response = await peer.request(MdmOp.GetMap, Buffer.alloc(0));
  peer.destroy();
  return parsePlacementMap(JSON.parse(response.payload.toString()));
}

t.test('SIGSTOP an SDS (a hung host) until it is declared down, then SIGCONT: fenced, no stale write survives', async (t) => {
  const dir = t.testdir();
  const cluster = await startCluster(t, dir, {
    sdsCount: 3,
    deviceBytes: 2 * GiB,
    volumes: [{ name: 'vol1', sizeBytes: GiB }],
    mdmArgs: ['--sds-down-after', '2', '--rebuild-after', '60'],
  });
  const hung = cluster.sds[0] as Cluster['sds'][number];
  const load = fioVerify(cluster.uri('vol1'), { sizeBytes: 32 * MiB, loops: 2 });
  await new Promise((resolve) => setTimeout(resolve, 1500));
  hung.process.kill('SIGSTOP');
  await until('the hung SDS to be declared down', async () => ((await dashboard(cluster)).health.sdsDown === 1 ? true : undefined), 30_000);
  // Its socket buffers hold requests from before: resumed, it must refuse or lose them all.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  hung.process.kill('SIGCONT');
  expectClean(t, await load.done, 'while sds1 hung and came back');
  const view = await untilWhole(cluster);
  t.equal(view.health.sdsDown, 0, 'the SDS is back (registered again, under the new map)');
  t.match(hung.stderr(), /registered with the MDM[\s\S]*registered with the MDM/, 'it had to register again before serving');
  // Primaries are handed back to it once its copies are in sync: a full read-back now reads
  // from it too, and would see any stale write it had applied.
  expectClean(t, await fioVerifyOnly(cluster.uri('vol1'), 32 * MiB).done, 'reading everything back afterwards');
});

t.test('an SDS restarted within the short-outage window gets back only what changed', async (t) => {
  const dir = t.testdir();
  const cluster = await startCluster(t, dir, {
    sdsCount: 4,
    deviceBytes: 2 * GiB,
    volumes: [{ name: 'vol1', sizeBytes: GiB }],
    mdmArgs: ['--sds-down-after', '2', '--rebuild-after', '120'],
  });
  // 128 MiB of data, on every SDS.
  expectClean(t, await fioVerify(cluster.uri('vol1'), { sizeBytes: 128 * MiB, loops: 1, bs: '1M' }).done, 'writing the data');
  const before = await untilWhole(cluster);
  await (cluster.sds[2] as Cluster['sds'][number]).kill();
  await until('the killed SDS to be declared down', async () => ((await dashboard(cluster)).health.sdsDown === 1 ? true : undefined), 30_000);
  // While it is away, 16 chunks (1 MiB each) change; at most these are copied back.
  const changed = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 512M 16M', cluster.uri('vol1')]);
  t.equal(changed.code, 0, `16 MiB written while the SDS is away ${changed.stderr}`);
  await restartSds(t, dir, cluster, 2);
  const after = await untilWhole(cluster);
  const copied = after.health.rebuild.bytesDone - before.health.rebuild.bytesDone;
  // Exactly the changed chunks whose groups have a copy on the SDS that was away.
  const map = await placementMap(t, cluster);
  const volumes = JSON.parse((await cluster.meshblock(['volume', 'list', '--json'])).stdout) as Array<{ name: string; vtreeId: string; storagePoolId: string }>;
  const volume = volumes.find((entry) => entry.name === 'vol1') as { vtreeId: string; storagePoolId: string };
  const groups = map.pools[volume.storagePoolId]?.groups ?? [];
  const awayId = (cluster.sds[2] as Cluster['sds'][number]).sdsId;
  let expected = 0;
  for (let chunk = 512; chunk < 528; chunk++) {
    const group = groups[placementGroupOf(volume.vtreeId, chunk, groups.length)];
    if (group?.primary === awayId || group?.secondary === awayId) expected += MiB;
  }
  t.ok(expected > 0, `${expected / MiB} of the 16 changed chunks have a copy on the SDS that was away`);
  t.equal(copied, expected, `the delta rebuild copied exactly those (${copied / MiB} MiB, rebuilt bytes ${before.health.rebuild.bytesDone} → ${after.health.rebuild.bytesDone}; a full rebuild would copy about 70 MiB)`);
  // Its copies now serve reads again (primaries are handed back once in sync): all of it reads right.
  const read = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0xab 512M 16M', cluster.uri('vol1')]);
  t.equal(read.code, 0, `the changed range reads back ${read.stdout}${read.stderr}`);
  t.notMatch(read.stdout, /Pattern verification failed/, 'with the bytes written while the SDS was away');
  expectClean(t, await fioVerifyOnly(cluster.uri('vol1'), 128 * MiB, '1M').done, 'reading the older data back');
});
