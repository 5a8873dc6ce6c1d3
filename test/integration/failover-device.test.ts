// One disk of an SDS failing under fio's verifying load: a device on a tiny tmpfs that fills
// up (ENOSPC) next to healthy ones. The SDS marks it failed, the MDM re-places only that
// device's copies from their other copies, the SDS itself stays up, and clients see no error.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import type { RestDevice } from '../../src/mdm/rest-objects.js';
import { startCluster, until } from '../helpers/cluster.js';
import { dashboard, expectClean, fioVerify, fioVerifyOnly, untilWhole } from '../helpers/fault-load.js';
import { sparseFile } from '../helpers/files.js';
import { run } from '../helpers/processes.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

t.test('a failed disk: only its copies are rebuilt, its SDS serves on, no client error', async (t) => {
  // Outside the test directory, which tap removes before later teardowns have run.
  const tiny = fs.mkdtempSync(path.join(os.tmpdir(), 'meshblock-tiny-'));
  const mounted = await run('mount', ['-t', 'tmpfs', '-o', `size=${48 * MiB}`, 'tmpfs', tiny]);
  t.equal(mounted.code, 0, `a 48 MiB tmpfs for the failing disk ${mounted.stderr}`);
  t.teardown(async () => {
    await run('umount', ['-l', tiny]);
    fs.rmSync(tiny, { recursive: true, force: true });
  });
  const dir = t.testdir();
  const cluster = await startCluster(t, dir, {
    sdsCount: 3,
    deviceBytes: 2 * GiB,
    volumes: [{ name: 'vol1', sizeBytes: GiB }],
    mdmArgs: ['--sds-down-after', '2', '--rebuild-after', '60'],
  });
  // sds1's second disk claims 512 MiB but has room for 48: it fails once that is written.
  const failing = sparseFile(tiny, 'disk.img', 512 * MiB);
  const added = await cluster.meshblock(['device', 'add', '--sds', 'sds1', '--pool', 'sp1', '--path', failing]);
  t.equal(added.code, 0, `the small disk joins the pool ${added.stderr}`);
  await untilWhole(cluster);

  expectClean(t, await fioVerify(cluster.uri('vol1'), { sizeBytes: 768 * MiB, loops: 1, bs: '1M' }).done, 'while one disk filled up and failed');
  const devices = await until('the MDM to mark the disk failed', async () => {
    const list = JSON.parse((await cluster.meshblock(['device', 'list', '--json'])).stdout) as RestDevice[];
    return list.find((device) => device.deviceCurrentPathName === failing)?.deviceState === 'Failed' ? list : undefined;
  }, 30_000).catch(async (err: unknown) => {
    t.comment((await cluster.meshblock(['device', 'list'])).stdout);
    throw err;
  });
  t.ok(devices.filter((device) => device.deviceCurrentPathName !== failing).every((device) => device.deviceState === 'Normal'), 'the other disks, sds1\'s first included, are normal');
  const before = await dashboard(cluster);
  t.equal(before.health.sdsDown, 0, 'no SDS is down: sds1 serves on from its other disk');
  const after = await untilWhole(cluster, 120_000);
  // The failed disk had 512 of the pool's 6,656 MiB of capacity, so its groups hold about
  // 8% of the 1.5 GiB of copies (~118 MiB); sds1 as a whole holds ~590 MiB.
  const copied = after.health.rebuild.bytesDone;
  t.ok(copied > 0 && copied <= 180 * MiB, `the rebuild copied ${copied / MiB} MiB: the failed disk's groups, not all of sds1`);
  expectClean(t, await fioVerifyOnly(cluster.uri('vol1'), 768 * MiB, '1M').done, 'reading everything back');
});
