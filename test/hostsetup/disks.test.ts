// The disks module on this machine's real block devices: a loop device over a sparse file
// holding a real ext4 filesystem is listed as not free (blkid -p sees the ext4 even where no
// udev recorded it), --yes-wipe plans `wipefs --all` for it, apply erases the signature, the
// disk is then free and a second plan is empty. Wiping is refused for a device that is not a
// disk of the host and for a mounted one (shown with an inventory given to the module, so no
// real mounted disk is ever a wipe candidate in a test).

import t from 'tap';
import { lsblkInventory, parseLsblkPairs, partitionParent, type BlockDeviceRecord } from '../../src/hostsetup/disk-inventory.js';
import { diskReports, disksModule, parseBlkidExport } from '../../src/hostsetup/disks.js';
import { checkModule } from '../../src/hostsetup/host-modules.js';
import type { Host } from '../../src/hostsetup/host-module.js';
import { LocalTransport } from '../../src/hostsetup/host-transport.js';
import { loopDevice, sparseFile } from '../helpers/files.js';
import { run } from '../helpers/processes.js';
import { defaultOptions } from '../helpers/host-root.js';

const MiB = 1024 * 1024;

function localHost(options: Partial<Host['options']> = {}, inventory?: Host['inventory']): Host {
  return { transport: new LocalTransport(), options: { ...defaultOptions, ...options }, ...(inventory !== undefined ? { inventory } : {}) };
}

t.test('a loop device holding ext4: listed, not free; --yes-wipe wipes it once', async (t) => {
  const file = sparseFile(t.testdir(), 'disk.img', 64 * MiB);
  const mkfs = await run('mkfs.ext4', ['-q', '-F', file]);
  t.equal(mkfs.code, 0, mkfs.stderr);
  const loop = await loopDevice(t, file);
  if ('unavailable' in loop) {
    t.skip(loop.unavailable, () => undefined);
    return;
  }
  const device = loop.device;
  const reports = await diskReports(localHost());
  const report = reports.find((entry) => entry.device.path === device);
  t.ok(report, `${device} is listed by systeminformation`);
  t.equal(report?.device.sizeBytes, 64 * MiB);
  t.same([report?.free, report?.signatures], [false, ['ext4']]);
  t.equal(report?.verdict, 'holds ext4');
  const finding = await disksModule.check(localHost());
  t.match(finding.details.join('\n'), `${device}  64 MiB  loop: holds ext4`);
  t.same(await disksModule.plan(localHost()), [], 'no wipe without --yes-wipe');

  const host = localHost({ wipeDevice: device });
  const wipeFinding = await disksModule.check(host);
  t.equal(wipeFinding.ok, false);
  t.match(wipeFinding.details.join('\n'), `--yes-wipe ${device}: apply removes ext4 (wipefs --all)`);
  const steps = await disksModule.plan(host);
  t.same(steps.map((step) => (step.kind === 'command' ? step.argv : null)), [['/usr/sbin/wipefs', '--all', device]]);
  const result = await disksModule.apply(host, steps);
  t.match(result.done, [`ran /usr/sbin/wipefs --all ${device}`]);
  const probe = await run('blkid', ['-p', device]);
  t.equal(probe.code, 2, 'blkid finds nothing on it now');
  const after = (await diskReports(localHost())).find((entry) => entry.device.path === device);
  t.same([after?.free, after?.verdict], [true, 'free for an SDS']);
  t.equal((await disksModule.check(host)).ok, true);
  t.same(await disksModule.plan(host), [], 'the second plan is empty');

  // lsblk over the transport (the SSH path's inventory) sees the same device.
  const viaLsblk = (await lsblkInventory(new LocalTransport())).find((entry) => entry.path === device);
  t.same([viaLsblk?.type, viaLsblk?.sizeBytes], ['loop', 64 * MiB]);
});

function record(fields: Partial<BlockDeviceRecord> & { name: string }): BlockDeviceRecord {
  return { path: `/dev/${fields.name}`, type: 'disk', sizeBytes: 100 * 1024 * MiB, fsType: null, mountpoint: null, rotational: true, model: 'TEST DISK', parent: null, ...fields };
}

t.test('wipes are refused for a device that is not a disk here, a mounted one, an NBD volume', async (t) => {
  // /dev/null and /dev/zero stand in for disks: blkid -p finds nothing on them.
  const inventory = async () => [
    record({ name: 'null', path: '/dev/null' }),
    record({ name: 'zero', path: '/dev/zero', mountpoint: '/srv' }),
    record({ name: 'nbd0', path: '/dev/null' }),
  ];
  await t.rejects(disksModule.plan(localHost({ wipeDevice: '/dev/sdz' }, inventory)), { code: 'MB_ERR_WIPE_REFUSED', message: /--yes-wipe \/dev\/sdz: not a disk of this host \(disks: \/dev\/null, \/dev\/zero, \/dev\/null\)/ });
  await t.rejects(disksModule.plan(localHost({ wipeDevice: '/dev/zero' }, inventory)), { code: 'MB_ERR_WIPE_REFUSED', message: /it is mounted \(\/dev\/zero on \/srv\)/ });
  const finding = await checkModule(disksModule, localHost({ wipeDevice: '/dev/zero' }, inventory));
  t.match(finding.summary, /cannot check: --yes-wipe \/dev\/zero: refused, it is mounted/);
  const reports = await diskReports(localHost({}, inventory));
  t.same(reports.map((report) => [report.device.name, report.free]), [['null', true], ['zero', false], ['nbd0', false]]);
  t.match(reports[2]?.verdict, /an NBD device/);
  t.same(await disksModule.plan(localHost({ wipeDevice: '/dev/null' }, inventory)), [], 'nothing on it: nothing to wipe');
});

t.test('partitions make a disk not free, whatever their contents', async (t) => {
  const inventory = async () => [
    record({ name: 'null', path: '/dev/null', model: 'DISK A' }),
    record({ name: 'null1', path: '/dev/null', type: 'part', parent: 'null', fsType: 'xfs', mountpoint: '/boot' }),
    record({ name: 'zram0', path: '/dev/zero', sizeBytes: 0 }),
  ];
  const finding = await disksModule.check(localHost({}, inventory));
  t.equal(finding.summary, '1 disk(s), none free for an SDS');
  t.same(finding.details, ['/dev/null  100 GiB  rotational  DISK A: mounted: /dev/null on /boot; 1 partition(s): null1 xfs']);
});

t.test('what lsblk, blkid and kernel names say', async (t) => {
  t.same(parseLsblkPairs('NAME="sda" KNAME="sda" PKNAME="" TYPE="disk" SIZE="1000" FSTYPE="" MOUNTPOINT="" ROTA="0" MODEL="Samsung\\x20SSD"\nNAME="sda1" KNAME="sda1" PKNAME="sda" TYPE="part" SIZE="500" FSTYPE="LVM2_member" MOUNTPOINT="" ROTA="0" MODEL=""\n'), [
    { name: 'sda', path: '/dev/sda', type: 'disk', sizeBytes: 1000, fsType: null, mountpoint: null, rotational: false, model: 'Samsung SSD', parent: null },
    { name: 'sda1', path: '/dev/sda1', type: 'part', sizeBytes: 500, fsType: 'LVM2_member', mountpoint: null, rotational: false, model: null, parent: 'sda' },
  ]);
  t.same(parseBlkidExport('DEVNAME=/dev/sdb\nPTUUID=x\nPTTYPE=gpt\n'), ['gpt partition table']);
  t.same(parseBlkidExport('DEVNAME=/dev/sdb\nUUID=x\nTYPE=LVM2_member\nUSAGE=raid\n'), ['LVM2_member']);
  t.equal(partitionParent('nvme0n1p2', ['nvme0n1', 'nvme0n10']), 'nvme0n1');
  t.equal(partitionParent('sda1', ['sd', 'sda']), 'sda');
  t.equal(partitionParent('loop0p1', ['loop0']), 'loop0');
  t.equal(partitionParent('sdb', ['sda']), null);
});
