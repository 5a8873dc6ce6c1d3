// Proves that direct device IO (`meshblock sds start --io direct`, docs/direct-io.md) does not
// change what is stored, on real block devices: three SDSs on loop devices with the loop
// driver's direct IO on (test/helpers/loop-devices.ts: no page cache below the SDS either),
// two of them with 4096-byte sectors and one with 512-byte sectors, so that IO smaller than
// a device's sector must be read, merged and written whole by the SDS. Through the SDC's NBD
// export, with the real clients:
//
// - every SDS reports 'direct' for its device (its stats and its `sds ready` line);
// - qemu-io writes patterns at 512-byte sectors and odd offsets (7 sectors at sector 7,
//   across 4 KiB blocks and across a chunk boundary), and the eight sectors of one 4 KiB
//   block at once (asynchronous, all in flight together: a read-merge-write that lost a
//   neighbour's sector shows), and reads every byte back, neighbours included;
// - fio writes and verifies (crc32c) with bs=512 and bs=3584 (at odd offsets);
// - an SDS is killed (SIGKILL) under fio's verifying load: no IO error, no verify failure,
//   its copies are rebuilt on the others (read from and written to direct devices); then it
//   restarts on its device after the crash, direct again, and everything reads back.
//
// And a device that refuses O_DIRECT (a file on ramfs; tmpfs, the example, does
// O_DIRECT since Linux 6.6): `--io direct` refuses to start, naming the device and
// O_DIRECT; `--io auto` starts buffered on it, warns why, and says so in its stats (io
// 'buffered' with an ioReason) and its `sds ready` line.
//
// The exact crash check (every acknowledged write survives kill -9) on a direct device is
// in sds-crash.test.ts, the failing-device path in sds-faults.test.ts, the SDS basics on a
// direct loop device in sds-io.test.ts.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import type { DeviceStats } from '../../src/wire/sds-ops.js';
import { restartSds, startCluster, until, type Cluster } from '../helpers/cluster.js';
import { expectClean, fioVerify, fioVerifyOnly, untilWhole } from '../helpers/fault-load.js';
import { sparseFile } from '../helpers/files.js';
import { loopDevices, loopDevicesUnavailable } from '../helpers/loop-devices.js';
import { logged, run } from '../helpers/processes.js';
import { MiB, TestVolumeClient, connectWire, getStats, makeMap, setMap, startSds, type SdsHandle } from '../helpers/sds.js';

const GiB = 1024 * MiB;
const unavailable = loopDevicesUnavailable();

/** The stats of `sds`'s devices, asked over the wire. */
async function devicesOf(t: Test, cluster: Cluster, sds: SdsHandle): Promise<DeviceStats[]> {
  const secret = fs.readFileSync(cluster.mdm.secretFile, 'utf8').trim();
  const peer = await connectWire(t, sds.address, { clusterId: cluster.mdm.clusterId, secret });
  const stats = await getStats(peer);
  peer.destroy();
  return stats.devices;
}

/** The `sds ready` line says how each device does its IO (the field's shape is the SDS's; the value is what counts). */
async function readyLineSays(sds: SdsHandle, io: 'direct' | 'buffered'): Promise<boolean> {
  // The log is written asynchronously (pino): the line may reach stderr after the ready line on stdout.
  const says = (): boolean => logged(sds.stderr(), 'sds ready').some((entry) => JSON.stringify(entry).includes(`"io":"${io}"`));
  return (await until('the sds ready log line', async () => (says() ? true : undefined), 10_000).catch(() => false)) === true;
}

/**
 * The expected bytes of a range after pattern writes: fills applied in order. `runs` are
 * the maximal stretches of one byte value, which qemu-io `read -P` checks one by one.
 */
class PatternModel {
  readonly bytes: Buffer;

  constructor(readonly baseBytes: number, sizeBytes: number) {
    this.bytes = Buffer.alloc(sizeBytes);
  }

  write(pattern: number, offsetBytes: number, lengthBytes: number): string {
    this.bytes.fill(pattern, offsetBytes, offsetBytes + lengthBytes);
    return `${offsetBytes + this.baseBytes} ${lengthBytes}`;
  }

  runs(): Array<{ pattern: number; offsetBytes: number; lengthBytes: number }> {
    const runs: Array<{ pattern: number; offsetBytes: number; lengthBytes: number }> = [];
    let start = 0;
    for (let position = 1; position <= this.bytes.length; position++) {
      if (position < this.bytes.length && this.bytes[position] === this.bytes[start]) continue;
      runs.push({ pattern: this.bytes[start] as number, offsetBytes: start + this.baseBytes, lengthBytes: position - start });
      start = position;
    }
    return runs;
  }
}

async function qemuIo(uri: string, commands: string[]): Promise<{ code: number | null; output: string }> {
  const result = await run('qemu-io', ['-f', 'raw', ...commands.flatMap((command) => ['-c', command]), uri], { timeoutMs: 120_000 });
  return { code: result.code, output: `${result.stdout}${result.stderr}` };
}

t.test('a cluster on direct loop devices (512- and 4096-byte sectors) stores exactly what clients write', async (t) => {
  if (unavailable !== null) {
    t.skip(unavailable, () => undefined);
    return;
  }
  const dir = t.testdir();
  const startedMs = Date.now();
  // Three SDSs, not four as in failover.test.ts: each costs seconds of CI time to set up,
  // and three keep two copies after one dies.
  const loops = await loopDevices(t, dir, { count: 3, sizeBytes: 2 * GiB, namePrefix: 'sds', sectorBytes: [4096, 512] });
  const cluster = await startCluster(t, dir, {
    devices: loops.map((loop) => loop.device),
    sdsIo: 'direct',
    volumes: [{ name: 'vol1', sizeBytes: GiB }],
    mdmArgs: ['--sds-down-after', '2', '--rebuild-after', '3'],
  });
  const vol1 = cluster.uri('vol1');
  t.comment(`cluster up in ${Date.now() - startedMs} ms`);

  await t.test('every SDS does direct IO on its loop device', async (t) => {
    for (const [index, sds] of cluster.sds.entries()) {
      const devices = await devicesOf(t, cluster, sds);
      t.same(devices.map((device) => [device.path, device.io]), [[loops[index]?.device, 'direct']], `${sds.name}: ${loops[index]?.device} (${loops[index]?.sectorBytes}-byte sectors) in direct IO`);
      t.ok(await readyLineSays(sds, 'direct'), `${sds.name}: its sds ready line says direct`);
    }
  });

  await t.test('qemu-io patterns at 512-byte sectors and odd offsets read back exactly', async (t) => {
    // 2 MiB from 600 MiB: chunks 600 and 601 (1 MiB chunks), away from fio's ranges.
    const model = new PatternModel(600 * MiB, 2 * MiB);
    const writes = [
      `write -P 0x11 ${model.write(0x11, 0, 2 * MiB)}`,
      // One sector inside a 4 KiB block, then seven at an odd sector (7), across the block's end.
      `write -P 0x22 ${model.write(0x22, 512, 512)}`,
      `write -P 0x33 ${model.write(0x33, 7 * 512, 7 * 512)}`,
      // Odd sectors across a 4 KiB block and across the chunk boundary at 1 MiB.
      `write -P 0x44 ${model.write(0x44, MiB - 3 * 512, 5 * 512)}`,
      `write -P 0x55 ${model.write(0x55, 3 * 4096 + 3 * 512, 11 * 512)}`,
      // A tail sector of the range and a sector of zeroes written into the middle.
      `write -P 0x66 ${model.write(0x66, 2 * MiB - 512, 512)}`,
      `write -z ${model.write(0, 64 * 1024 + 512, 1024)}`,
    ];
    // The eight sectors of one 4 KiB block (at 512 KiB), all in flight at once, each its own pattern.
    const inflight = Array.from({ length: 8 }, (_, sector) => `aio_write -P ${0x70 + sector} ${model.write(0x70 + sector, 512 * 1024 + sector * 512, 512)}`);
    const written = await qemuIo(vol1, [...writes, ...inflight, 'aio_flush', 'flush']);
    t.equal(written.code, 0, `qemu-io wrote ${writes.length + inflight.length} patterns ${written.code !== 0 ? written.output : ''}`);
    t.notMatch(written.output, /error|failed/i, 'no write failed');
    const runs = model.runs();
    const read = await qemuIo(vol1, runs.map((run) => `read -P ${run.pattern} ${run.offsetBytes} ${run.lengthBytes}`));
    t.equal(read.code, 0, 'qemu-io read every stretch back');
    t.notMatch(read.output, /Pattern verification failed|error/i, `each of the ${runs.length} stretches holds its pattern, neighbours untouched ${read.output.split('\n').filter((line) => /fail|error/i.test(line)).slice(0, 5).join(' | ')}`);
    t.equal((read.output.match(/^read \d+\/\d+ bytes/gm) ?? []).length, runs.length, 'every read completed');
  });

  await t.test('fio verify with bs=512 and bs=3584', async (t) => {
    // fio's offsets step by bs from --offset: with 3584 (7 sectors) from 256 MiB + 3584,
    // nearly every IO starts and ends inside a 4 KiB block.
    for (const [bs, offset] of [['512', 128 * MiB + 512], ['3584', 256 * MiB + 3584]] as const) {
      const result = await fioVerify(vol1, { sizeBytes: 4 * MiB, loops: 1, bs, iodepth: 16, extra: [`--offset=${offset}`] }).done;
      expectClean(t, result, `with bs=${bs} from offset ${offset}`);
      t.match(result.output, /^3;fio/m, `fio bs=${bs} reported`);
    }
  });

  await t.test('kill -9 an SDS under verifying load: rebuilt elsewhere; restarted on its device, direct again', async (t) => {
    // An SDS on a 4096-byte-sector device (the stricter alignment): its copies are rebuilt
    // onto the other two, one of each sector size.
    const victim = 0;
    const load = fioVerify(vol1, { sizeBytes: 32 * MiB, loops: 2 });
    await new Promise((resolve) => setTimeout(resolve, 2000));
    await (cluster.sds[victim] as SdsHandle).kill();
    expectClean(t, await load.done, 'while sds1 died');
    const view = await untilWhole(cluster);
    t.equal(view.health.sdsDown, 1, 'the dead SDS is down');
    t.ok(view.health.rebuild.bytesDone > 0, `its copies were rebuilt elsewhere (${view.health.rebuild.bytesDone} bytes)`);

    const restarted = await restartSds(t, dir, cluster, victim);
    const devices = await devicesOf(t, cluster, restarted);
    t.equal(devices[0]?.io, 'direct', 'after the crash it reopens its device in direct IO');
    t.equal(devices[0]?.state, 'normal', 'the device opened cleanly');
    t.notMatch(restarted.stderr(), /damaged slot-table entry|two slots held one chunk/, 'the store opened without damage');
    await untilWhole(cluster);
    expectClean(t, await fioVerifyOnly(vol1, 32 * MiB).done, 'reading everything back after the restart');
  });
});

/**
 * A ramfs, unmounted at teardown: a filesystem that refuses O_DIRECT on every kernel (its
 * files have no direct_IO; tmpfs has had one since Linux 6.6). Outside the test directory:
 * tap removes that before the teardowns run, and cannot remove a mount point.
 */
async function ramfs(t: Test): Promise<string> {
  const mountPoint = fs.mkdtempSync(path.join(os.tmpdir(), 'meshblock-ramfs-'));
  const mounted = await run('mount', ['-t', 'ramfs', 'ramfs', mountPoint]);
  if (mounted.code !== 0) {
    fs.rmdirSync(mountPoint);
    throw new Error(`mount -t ramfs failed: ${mounted.stderr.trim()}`);
  }
  t.teardown(async () => {
    await run('umount', ['-l', mountPoint]);
    fs.rmSync(mountPoint, { recursive: true, force: true });
  });
  return mountPoint;
}

t.test('a device that refuses O_DIRECT (ramfs): --io direct names it and fails, --io auto runs buffered and says why', async (t) => {
  if (unavailable !== null) {
    t.skip(`mounting a ramfs needs root, as ${unavailable}`, () => undefined);
    return;
  }
  const dir = t.testdir();
  // ramfs has no size limit: these sparse files take only what the SDS writes (its metadata, a few KiB of data).
  const mountPoint = await ramfs(t);

  const directDevice = sparseFile(mountPoint, 'direct.img', 64 * MiB);
  const refused = await startSds(t, { dir, name: 'sds-direct', devices: [directDevice], io: 'direct' }).then(
    async (sds) => {
      await sds.stop();
      return null;
    },
    (err: Error) => err.message,
  );
  t.not(refused, null, '--io direct on a ramfs file does not start');
  t.match(refused ?? '', /exited [1-9]\d* before it was ready/, 'it exits with an error');
  t.ok((refused ?? '').includes(directDevice), `the message names the device ${refused ?? ''}`);
  t.match(refused ?? '', /O_DIRECT/, 'and O_DIRECT');

  const autoDevice = sparseFile(mountPoint, 'auto.img', 64 * MiB);
  const sds = await startSds(t, { dir, name: 'sds-auto', devices: [autoDevice], io: 'auto' });
  const peer = await connectWire(t, sds.address);
  const device = (await getStats(peer)).devices[0];
  t.equal(device?.io, 'buffered', '--io auto runs the ramfs device buffered');
  t.match(device?.ioReason ?? '', /O_DIRECT|direct/i, `and says why in its stats: ${device?.ioReason}`);
  t.ok(await readyLineSays(sds, 'buffered'), 'its sds ready line says buffered');
  const warnings = sds.stderr().split('\n').filter((line) => line.includes(autoDevice) && /"level":40/.test(line));
  t.ok(warnings.some((line) => /buffered|page cache/i.test(line) && /O_DIRECT/.test(line)), `a warning names the device, says it runs buffered and why: ${warnings[0] ?? 'none'}`);

  // And it works: data written reads back.
  const map = makeMap(1, [sds], { pgCount: 8 });
  await setMap(peer, map);
  const volume = new TestVolumeClient(map, new Map([[sds.sdsId, peer]]), '00000000d1ec7010');
  const data = Buffer.alloc(3 * 4096 + 512, 0xd1);
  await volume.write(512, data);
  await volume.flush();
  t.ok((await volume.read(512, data.length)).equals(data), 'the buffered device stores what is written');
  t.equal(await sds.stop(), 0, 'and stops cleanly');
});
