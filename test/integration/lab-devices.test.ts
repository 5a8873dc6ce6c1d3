// Proves `meshblock lab up --device PATH` on real block devices: three loop devices
// (`losetup --direct-io=on` over files in the test's directory, on disk, never tmpfs), one per
// SDS. The lab starts its SDSs on them with `sds start --io auto`, IO through the SDC's NBD
// export is stored and read back (qemu-io patterns, aligned and not), `lab status` (text and
// --json) shows each SDS's device and its IO mode as the SDS reports it (direct: a loop device
// with direct IO takes O_DIRECT), and the devices stay fixed: a resumed lab keeps its data and a
// later up that names other devices is refused. Bad input fails before anything starts, with
// one clear line: a --device count that is not the SDS count, a path that does not exist, a
// device named twice, --device-size beside --device. A device that holds another cluster is
// refused by its SDS unless `lab up --force`.
//
// Needs root (losetup) and qemu-io; skipped with that reason otherwise. Every loop device is
// detached in teardown, whatever happened.

import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { repoRoot, run, runMeshblock, type RunResult } from '../helpers/processes.js';

const MiB = 1024 * 1024;
const deviceBytes = 256 * MiB;
const labUpTimeoutMs = 90_000;
const sdcBuilt = fs.existsSync(path.join(repoRoot, 'dist/cli/sdc-start.js'));

function hasProgram(name: string): boolean {
  return (process.env['PATH'] ?? '').split(':').some((dir) => dir !== '' && fs.existsSync(path.join(dir, name)));
}

const skip =
  process.getuid?.() !== 0
    ? 'needs root (losetup)'
    : !hasProgram('losetup')
      ? 'needs losetup (util-linux)'
      : !hasProgram('qemu-io')
        ? 'needs qemu-io'
        : !sdcBuilt
          ? 'needs meshblock sdc start (dist/cli/sdc-start.js is not built)'
          : false;

interface StatusSds {
  role: string;
  name: string;
  state: string;
  devicePath?: string;
  io?: string | null;
  ioReason?: string | null;
}

/**
 * Loop devices with direct IO over files in `dir`, recorded in `attached` as each is made, for
 * the caller's teardown to detach.
 */
async function loopDevices(dir: string, count: number, attached: string[]): Promise<string[]> {
  const devices: string[] = [];
  for (let index = 1; index <= count; index++) {
    const file = path.join(dir, `backing${index}.img`);
    fs.writeFileSync(file, '');
    fs.truncateSync(file, deviceBytes);
    const result = await run('losetup', ['--find', '--show', '--direct-io=on', file]);
    if (result.code !== 0) throw new Error(`losetup ${file}: ${result.stderr.trim()}`);
    const device = result.stdout.trim();
    attached.push(device);
    devices.push(device);
  }
  return devices;
}

function lab(args: string[]): Promise<RunResult> {
  return runMeshblock(['lab', ...args], { timeoutMs: labUpTimeoutMs });
}

function qemuIo(uri: string, commands: string[]): Promise<RunResult> {
  return run('qemu-io', ['-f', 'raw', ...commands.flatMap((command) => ['-c', command]), uri], { timeoutMs: 60_000 });
}

t.test('lab up --device on three loop devices', { skip }, async (t) => {
  // Registered before t.testdir(), so that it runs before tap deletes the directory (which
  // holds lab.json, which `lab down` needs): the lab stops first, then its devices go.
  const attached: string[] = [];
  const cleanup: { dir: string | null } = { dir: null };
  t.teardown(async () => {
    if (cleanup.dir !== null && fs.existsSync(path.join(cleanup.dir, 'lab.json'))) await lab(['down', '--dir', cleanup.dir, '--purge']);
    for (const device of attached) {
      const detached = await run('losetup', ['-d', device]);
      if (detached.code !== 0) process.stderr.write(`losetup -d ${device}: ${detached.stderr}`);
    }
  });
  const scratch = t.testdir();
  const dir = path.join(scratch, 'lab');
  cleanup.dir = dir;
  const devices = await loopDevices(scratch, 3, attached);
  const deviceFlags = devices.flatMap((device) => ['--device', device]);

  await t.test('bad input is refused before anything starts', async (t) => {
    const cases: Array<[string, string[], RegExp]> = [
      ['two devices for three SDSs', ['--device', devices[0] as string, '--device', devices[1] as string], /--device: the lab has 3 SDSs but --device was given 2 time\(s\): give exactly one device per SDS, or --sds 2/],
      ['four devices for --sds 3', ['--sds', '3', ...deviceFlags, '--device', path.join(scratch, 'backing1.img')], /--device: the lab has 3 SDSs but --device was given 4 time\(s\)/],
      ['a path that does not exist', ['--device', path.join(scratch, 'missing'), '--device', devices[1] as string, '--device', devices[2] as string], /--device: .*missing: no such device or file/],
      ['a device named twice', ['--device', devices[0] as string, '--device', devices[0] as string, '--device', devices[2] as string], /--device: .* is named twice/],
      ['--device-size beside --device', [...deviceFlags, '--device-size', '1GiB'], /--device-size: applies to the lab's sparse files only/],
      ['an unknown --io', [...deviceFlags, '--io', 'fast'], /io/],
    ];
    for (const [what, args, message] of cases) {
      const result = await lab(['up', '--detach', '--dir', dir, ...args]);
      t.equal(result.code, 2, `${what}: exit 2 (usage)`);
      t.match(result.stderr, message, `${what}: says what is wrong`);
      t.notOk(fs.existsSync(path.join(dir, 'lab.json')), `${what}: no lab was made`);
    }
  });

  const up = await lab(['up', '--detach', '--dir', dir, ...deviceFlags, '--volume', 'vol1:256MiB']);
  t.equal(up.code, 0, `lab up --device x3${up.code === 0 ? '' : `: ${up.stderr.trim()}`}`);
  if (up.code !== 0) return;
  const uri = /(nbd:\/\/127\.0\.0\.1:\d+\/vol1)\b/.exec(up.stdout)?.[1] as string;
  t.ok(uri, 'lab up prints the NBD URI of vol1');
  t.notOk(fs.existsSync(path.join(dir, 'devices')), 'no sparse files are made');
  for (const [index, device] of devices.entries()) {
    const log = fs.readFileSync(path.join(dir, 'logs', `sds${index + 1}.log`), 'utf8');
    t.match(log, new RegExp(`sds start --name sds${index + 1} --device ${device} .*--io auto`), `sds${index + 1} runs on ${device} with --io auto`);
  }

  // Aligned 4 KiB and 1 MiB writes, and an unaligned one (512 bytes at an odd sector), read back.
  const written = await qemuIo(uri, ['write -P 0xa1 0 4k', 'write -P 0xb2 1M 1M', 'write -P 0xc3 12800512 512', 'write -P 0xd4 200M 64k']);
  t.equal(written.code, 0, `qemu-io writes${written.code === 0 ? '' : `: ${written.stderr}${written.stdout}`}`);
  const patterns = ['read -P 0xa1 0 4k', 'read -P 0xb2 1M 1M', 'read -P 0xc3 12800512 512', 'read -P 0x00 12801024 3584', 'read -P 0xd4 200M 64k'];
  const readBack = await qemuIo(uri, patterns);
  t.equal(readBack.code, 0, 'qemu-io reads');
  t.notMatch(readBack.stdout, /Pattern verification failed/, 'every pattern reads back as written');

  const statusJson = await lab(['status', '--dir', dir, '--json']);
  t.equal(statusJson.code, 0, 'lab status --json');
  const sdss = (JSON.parse(statusJson.stdout) as { processes: StatusSds[] }).processes.filter((entry) => entry.role === 'sds');
  t.same(
    sdss.map((entry) => entry.devicePath),
    devices,
    'each SDS shows its device',
  );
  for (const entry of sdss) {
    t.equal(entry.io, 'direct', `${entry.name} does direct IO on its loop device (as it reports)`);
    t.equal(entry.ioReason ?? null, null, `${entry.name}: direct as asked, nothing to explain`);
  }
  const statusText = await lab(['status', '--dir', dir]);
  t.equal(statusText.code, 0, 'lab status');
  for (const [index, device] of devices.entries()) {
    t.match(statusText.stdout, new RegExp(`sds${index + 1} .*running.*\\s${device}\\s+direct\\b`), `the text status shows sds${index + 1} on ${device}, direct`);
  }

  // Fixed at the first up: the same devices resume the lab with its data, others are refused.
  const down = await lab(['down', '--dir', dir]);
  t.equal(down.code, 0, 'lab down');
  const swapped = await lab(['up', '--detach', '--dir', dir, '--device', devices[1] as string, '--device', devices[0] as string, '--device', devices[2] as string]);
  t.equal(swapped.code, 2, 'other devices (the same, in another order) are refused');
  t.match(swapped.stderr, /--device: sds1 runs on .*, fixed at the first up/, 'saying which SDS runs on which device');
  const resumed = await lab(['up', '--detach', '--dir', dir]);
  t.equal(resumed.code, 0, `lab up resumes without naming the devices again${resumed.code === 0 ? '' : `: ${resumed.stderr.trim()}`}`);
  const again = await qemuIo(uri, patterns);
  t.equal(again.code, 0, 'qemu-io reads after the restart');
  t.notMatch(again.stdout, /Pattern verification failed/, 'the data is still there');

  // The devices now hold this cluster: a new lab's SDSs refuse them unless --force.
  const purged = await lab(['down', '--dir', dir, '--purge']);
  t.equal(purged.code, 0, 'lab down --purge');
  const refused = await lab(['up', '--detach', '--dir', dir, ...deviceFlags]);
  t.not(refused.code, 0, 'a new lab on devices of another cluster does not start');
  t.match(`${refused.stderr}${refused.stdout}`, /refusing to add a device that holds/, 'the SDS says what the device holds');
  const forced = await lab(['up', '--detach', '--dir', dir, '--force', ...deviceFlags]);
  t.equal(forced.code, 0, `lab up --force formats them${forced.code === 0 ? '' : `: ${forced.stderr.trim()}`}`);
});
