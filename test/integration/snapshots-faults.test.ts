// Snapshots under faults, on real processes (issue 16, docs/snapshots.md): an MDM, four SDSs
// and an SDC, fio (crc32c verify) writing through the SDC. An SDS is killed while fio's
// first writes after a snapshot copy chunks on write; once its copies are rebuilt, a second
// is killed and a snapshot taken while the rebuild runs; once that is rebuilt too, a third
// is killed. fio sees no IO error and no verify failure, and both snapshots and the volume
// read whole, byte for byte, from the copies the rebuilds made: every generation of a chunk
// moved with it.
//
// Skipped, saying why, while the MDM answers the snapshotVolumes action with 404 (the SDS,
// MDM and REST parts of snapshots not merged yet).

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { startCluster, until } from '../helpers/cluster.js';
import { expectClean, fioVerify, fioVerifyOnly, untilWhole } from '../helpers/fault-load.js';
import { run } from '../helpers/processes.js';
import { MiB } from '../helpers/sds.js';
import { compare, dashboardJson, dataBytes, mapAndWait, must, readFirst, snapshotsUnsupported } from '../helpers/snapshots.js';

const GiB = 1024 * MiB;
const skipReason = await snapshotsUnsupported();
if (skipReason !== null) t.comment(`skipped: ${skipReason}`);
const skip = skipReason ?? false;

t.test('an SDS killed during copy on write, a snapshot taken during a rebuild, then a third SDS lost: every generation survives', { skip }, async (t) => {
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
