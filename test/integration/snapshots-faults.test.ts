// Snapshots under faults, on real processes (issue 16, docs/snapshots.md): an MDM, four SDSs
// and an SDC, fio (crc32c verify) writing through the SDC. An SDS is killed while fio's
// first writes after a snapshot copy chunks on write; once its copies are rebuilt, a second
// is killed and a snapshot taken while the rebuild runs; once that is rebuilt too, a third
// is killed. fio sees no IO error and no verify failure, and both snapshots and the volume
// read whole, byte for byte, from the copies the rebuilds made: every generation of a chunk
// moved with it.
//
// And the MDM killed between the two phases of a group snapshot: no half group.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { startCluster, startMdm, until } from '../helpers/cluster.js';
import { dashboard, expectClean, fioVerify, fioVerifyOnly, untilWhole } from '../helpers/fault-load.js';
import { run } from '../helpers/processes.js';
import { MiB } from '../helpers/sds.js';
import { compare, dashboardJson, dataBytes, mapAndWait, must, placementMap, readFirst } from '../helpers/snapshots.js';

const GiB = 1024 * MiB;

interface VolumeRow {
  name: string;
  volumeType: string;
}

t.test('an SDS killed during copy on write, a snapshot taken during a rebuild, then a third SDS lost: every generation survives', async (t) => {
  // Four SDSs, lost one by one, each loss rebuilt before the next: with two left, every
  // group still has a copy. Rebuilds are throttled so that a snapshot can be taken while
  // one runs.
  const dir = t.testdir();
  const cluster = await startCluster(t, dir, {
    sdsCount: 4,
    deviceBytes: 2 * GiB,
    volumes: [{ name: 'vol1', sizeBytes: GiB }],
    mdmArgs: ['--sds-down-after', '2', '--rebuild-after', '2', '--rebuild-rate', '1MiB', '--rebuild-rate-under-load', '1MiB'],
  });
  const uri = (name: string): string => cluster.uri(name);
  const kill = (index: number): Promise<void> => (cluster.sds[index] as { kill(): Promise<void> }).kill();
  const source = path.join(dir, 'source.bin');
  fs.writeFileSync(source, randomBytes(dataBytes));
  t.equal((await run('nbdcopy', [source, uri('vol1')])).code, 0, '64 MiB of random bytes into vol1');
  await must(cluster, ['snapshot', 'create', '--volume', 'vol1', '--name', 's1', '--read-only']);
  await mapAndWait(cluster, 's1', true);

  // fio's first write to each chunk after the snapshot copies it; an SDS dies meanwhile.
  const load = fioVerify(uri('vol1'), { sizeBytes: dataBytes, loops: 2 });
  await new Promise((resolve) => setTimeout(resolve, 1500));
  await kill(1);
  expectClean(t, await load.done, 'on vol1 while an SDS was killed during its copies on write');
  t.equal(await compare(source, uri('s1')), 0, 's1 is whole after the SDS loss');
  await untilWhole(cluster, 300_000);
  t.pass('the lost copies were rebuilt');

  await kill(2);
  await until('a rebuild to run', async () => ((await dashboardJson(cluster)).includes('"state":"running"') ? true : undefined), 60_000);
  await must(cluster, ['snapshot', 'create', '--volume', 'vol1', '--name', 's2', '--read-only']);
  await mapAndWait(cluster, 's2', true);
  const atS2 = await readFirst(cluster, 'vol1');
  t.ok((await readFirst(cluster, 's2')).equals(atS2), 's2, taken during the rebuild, holds vol1 of its moment');
  expectClean(t, await fioVerify(uri('vol1'), { sizeBytes: dataBytes, loops: 1 }).done, 'rewriting vol1 during the rebuild');
  await untilWhole(cluster, 300_000);
  t.pass('the second rebuild ended');

  // Now the copies the rebuilds made must serve: a third SDS goes.
  await kill(3);
  t.equal(await compare(source, uri('s1')), 0, 's1 reads whole from the last SDS');
  t.ok((await readFirst(cluster, 's2')).equals(atS2), 'and so does s2');
  expectClean(t, await fioVerifyOnly(uri('vol1'), dataBytes).done, 'and vol1 verifies');
});

t.test('the MDM killed in the middle of a group snapshot: no half group, IO goes on, the next group works', async (t) => {
  const dir = t.testdir();
  const cluster = await startCluster(t, dir, {
    sdsCount: 3,
    deviceBytes: 2 * GiB,
    volumes: [
      { name: 'vol1', sizeBytes: GiB },
      { name: 'vol2', sizeBytes: GiB },
    ],
  });
  const loads = ['vol1', 'vol2'].map((name) => fioVerify(cluster.uri(name), { sizeBytes: 16 * MiB, loops: 3, extra: ['--iodepth=4'] }));
  await new Promise((resolve) => setTimeout(resolve, 1000));

  // sds3 does not answer the freeze: the Master waits for it, and dies waiting.
  const held = cluster.sds[2] as { process: { pid?: number } };
  process.kill(held.process.pid as number, 'SIGSTOP');
  let resumed = false;
  t.teardown(() => {
    if (!resumed) process.kill(held.process.pid as number, 'SIGCONT');
  });
  const group = cluster.meshblock(['snapshot', 'create', '--volume', 'vol1', '--volume', 'vol2', '--name', 'g1', '--name', 'g2']);
  // Between the phases: the freeze is committed (the map freezes both trees), the commit waits for sds3.
  try {
    await until('the barrier to freeze both trees', async () => (Object.values((await placementMap(t, cluster)).vtrees ?? {}).filter((tree) => tree.frozen === true).length === 2 ? true : undefined), 20_000);
  } catch (err) {
    const lines = cluster.mdm.stderr().split('\n').filter((line) => /snapshot|barrier|freeze|request/i.test(line)).slice(-30).join('\n');
    t.comment(`the MDM said:\n${lines}`);
    t.comment(`the CLI: ${JSON.stringify(await Promise.race([group, new Promise((resolve) => setTimeout(() => resolve('still running'), 100))]))}`);
    throw err;
  }
  const apiPort = new URL(cluster.mdm.apiUrl).port;
  const killed = cluster.mdm;
  await killed.kill();
  process.kill(held.process.pid as number, 'SIGCONT');
  resumed = true;
  const answer = await group;
  t.not(answer.code, 0, `the group call did not succeed: ${answer.stderr.trim()}`);
  cluster.mdm = await startMdm(t, dir, { listen: cluster.mdm.address, api: `127.0.0.1:${apiPort}` });
  await until('the SDSs to reconnect', async () => ((await dashboard(cluster)).health.sdsConnected === 3 ? true : undefined), 60_000);

  const volumes = JSON.parse((await must(cluster, ['volume', 'list', '--json'])).stdout) as VolumeRow[];
  const names = volumes.map((volume) => volume.name).sort();
  t.same(names, ['vol1', 'vol2'], 'no snapshot of the interrupted group exists (all or nothing)');
  if (names.length !== 2) {
    const lines = (text: string): string => text.split('\n').filter((line) => /snapshot|barrier|freeze/i.test(line)).join('\n');
    t.comment(`the killed MDM said:\n${lines(killed.stderr())}\nthe restarted one:\n${lines(cluster.mdm.stderr())}`);
  }
  for (const [index, load] of loads.entries()) expectClean(t, await load.done, `writing vol${index + 1} through the interrupted group snapshot`);

  const again = await must(cluster, ['snapshot', 'create', '--volume', 'vol1', '--volume', 'vol2', '--name', 'g1', '--name', 'g2', '--json']);
  const made = JSON.parse(again.stdout) as { volumeIdList: string[]; snapshotGroupId: string };
  t.equal(made.volumeIdList.length, 2, 'a group snapshot after the restart takes both volumes');
  const after = fioVerify(cluster.uri('vol1'), { sizeBytes: 8 * MiB, loops: 1 });
  expectClean(t, await after.done, 'writing vol1 after the group (its tree is not left frozen)');
});
