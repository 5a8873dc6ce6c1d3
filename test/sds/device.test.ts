// Proves that an SDS device is self-describing and that previous formatting is refused:
// real partition tables, filesystems, swap and an LVM physical volume are made with
// Debian's own tools (sgdisk, sfdisk, mkfs.ext4, mkfs.xfs, mkswap, pvcreate on a loop
// device), and adding each is refused with what was found and without touching a byte,
// until --force; a formatted device is recognised when opened again, and afterwards
// blkid finds none of the old signatures.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { crc32c } from '../../src/common/crc32c.js';
import { closeDevice, metadataStrides, openDevice, slotLayout, type DeviceOwner } from '../../src/sds/device.js';
import { probeFormats } from '../../src/sds/device-probe.js';
import { decodeSuperblock, encodeSuperblock } from '../../src/sds/superblock.js';
import { loopDevice, sparseFile } from '../helpers/files.js';
import { run } from '../helpers/processes.js';

const MiB = 1024 * 1024;
const owner: DeviceOwner = { clusterId: '00112233445566aa', sdsId: '0a0b0c0d0e0f1011', sdsName: 'sds-1' };

function head(file: string): Buffer {
  const fd = fs.openSync(file, 'r');
  const bytes = Buffer.alloc(256 * 1024);
  fs.readSync(fd, bytes, 0, bytes.length, 0);
  fs.closeSync(fd);
  return bytes;
}

t.test('superblock round trip and damage', async (t) => {
  const superblock = { ...owner, deviceId: 'ffeeddccbbaa9988', deviceSizeBytes: 64 * MiB, dataOffsetBytes: MiB, formattedAtMs: 1_700_000_000_000, chunkBytes: MiB, slotCount: 63, slotTableOffsetBytes: 4096, checksumTableOffsetBytes: 8192, checksumBlockBytes: 4096, sectorBytes: 512 };
  const bytes = encodeSuperblock(superblock);
  t.same(decodeSuperblock(bytes), superblock);
  bytes[100] = 1;
  t.throws(() => decodeSuperblock(bytes), { code: 'MB_ERR_SUPERBLOCK_CHECKSUM' });
  const older = encodeSuperblock(superblock);
  older.writeUInt32BE(1, 8);
  older.writeUInt32BE(crc32c(older.subarray(0, older.length - 4)), older.length - 4);
  t.throws(() => decodeSuperblock(older), { code: 'MB_ERR_SUPERBLOCK_VERSION', message: /older meshblock, without checksums at rest/ }, 'a version-1 device (no checksums) is refused with what to do');
  const packed = encodeSuperblock(superblock);
  packed.writeUInt32BE(2, 8);
  packed.writeUInt32BE(0, 132);
  packed.writeUInt32BE(crc32c(packed.subarray(0, packed.length - 4)), packed.length - 4);
  t.same(decodeSuperblock(packed), { ...superblock, sectorBytes: 0 }, 'a version-2 device (metadata packed, before direct IO) is still read');
  t.same(probeFormats(Buffer.alloc(128 * 1024)), [], 'a blank device holds nothing');
});

t.test('a blank device is formatted, then recognised', async (t) => {
  const file = sparseFile(t.testdir(), 'blank.img', 64 * MiB);
  const first = await openDevice(file, owner, { force: false });
  t.equal(first.formatted, true);
  t.equal(first.sizeBytes, 64 * MiB);
  t.equal(first.superblock.chunkBytes, MiB, 'default 1 MiB chunks');
  t.equal(first.superblock.dataOffsetBytes, MiB, 'a 64 MiB device keeps its slot table in the first MiB');
  t.equal(first.superblock.slotCount, 63, 'and fits 63 chunk slots after it');
  closeDevice(first);
  await t.rejects(openDevice(file, owner, { force: false, chunkBytes: 4 * MiB }), { code: 'MB_ERR_DEVICE_CHUNK_SIZE' });
  const again = await openDevice(file, owner, { force: false });
  t.equal(again.formatted, false, 'recognised by its superblock');
  t.equal(again.superblock.deviceId, first.superblock.deviceId);
  closeDevice(again);

  const otherCluster = { ...owner, clusterId: '99999999999999ff' };
  await t.rejects(openDevice(file, otherCluster, { force: false }), {
    code: 'MB_ERR_DEVICE_FORMATTED',
    message: /a meshblock device of cluster 00112233445566aa \(SDS 'sds-1'/,
  });
  const taken = await openDevice(file, otherCluster, { force: true });
  t.equal(taken.superblock.clusterId, '99999999999999ff', '--force takes it over');
  closeDevice(taken);
});

t.test('slot layout: the table and the data area never overlap and never pass the end', async (t) => {
  for (const [sizeBytes, chunkBytes, sectorBytes] of [[16 * MiB, MiB, 512], [10 * 1024 * MiB + 12345, MiB, 512], [64 * 1024 * 1024 * MiB, MiB, 4096], [100 * MiB, 64 * 1024, 512], [100 * MiB, MiB, 0]] as const) {
    const layout = slotLayout(sizeBytes, chunkBytes, sectorBytes);
    const { entryStrideBytes, areaStrideBytes } = metadataStrides(sectorBytes, chunkBytes);
    t.ok(4096 + layout.slotCount * entryStrideBytes <= layout.checksumTableOffsetBytes, `${sizeBytes}: the slot table ends before the checksum table`);
    t.ok(layout.checksumTableOffsetBytes + layout.slotCount * areaStrideBytes <= layout.dataOffsetBytes, `${sizeBytes}: the checksum table ends before data`);
    if (sectorBytes > 0) {
      t.equal(entryStrideBytes % sectorBytes, 0, 'entries are whole sectors');
      t.equal(areaStrideBytes % sectorBytes, 0, 'checksum areas are whole sectors');
      t.equal(layout.checksumTableOffsetBytes % sectorBytes, 0, 'the checksum table starts on a sector');
    }
    t.ok(layout.dataOffsetBytes + layout.slotCount * chunkBytes <= sizeBytes, `${sizeBytes}: data ends before the end`);
    t.ok(layout.dataOffsetBytes + (layout.slotCount + 2) * chunkBytes > sizeBytes, `${sizeBytes}: at most one slot lost to the table's rounding`);
  }
});

t.test('bad devices: missing, too small, a directory', async (t) => {
  const dir = t.testdir();
  await t.rejects(openDevice(`${dir}/nope.img`, owner, { force: false }), { code: 'MB_ERR_DEVICE_OPEN', message: /no such file/ });
  await t.rejects(openDevice(sparseFile(dir, 'tiny.img', MiB), owner, { force: false }), { code: 'MB_ERR_DEVICE_TOO_SMALL' });
  await t.rejects(openDevice(dir, owner, { force: true }), { code: 'MB_ERR_DEVICE_OPEN' });
});

const formats: Array<{ label: string; sizeBytes: number; make: (file: string) => Promise<number | null>; expect: RegExp }> = [
  { label: 'ext4', sizeBytes: 64 * MiB, make: async (f) => (await run('mkfs.ext4', ['-q', '-F', '-L', 'olddata', f])).code, expect: /an ext4 filesystem \(UUID [0-9a-f-]{36}, label 'olddata'\)/ },
  { label: 'GPT', sizeBytes: 64 * MiB, make: async (f) => (await run('sgdisk', ['-n', '1:2048:+8M', f])).code, expect: /a GPT partition table/ },
  { label: 'MBR', sizeBytes: 64 * MiB, make: async (f) => (await run('sfdisk', ['--quiet', f], { input: 'label: dos\n,16M,83\n' })).code, expect: /a DOS\/MBR partition table/ },
  { label: 'XFS', sizeBytes: 512 * MiB, make: async (f) => (await run('mkfs.xfs', ['-q', '-f', f])).code, expect: /an XFS filesystem/ },
  { label: 'swap', sizeBytes: 64 * MiB, make: async (f) => (await run('mkswap', [f])).code, expect: /Linux swap space/ },
];

for (const format of formats) {
  t.test(`a device holding ${format.label} is refused until --force`, async (t) => {
    const file = sparseFile(t.testdir(), 'used.img', format.sizeBytes);
    const made = await format.make(file);
    if (made === null || made === 127) {
      t.skip(`the tool for ${format.label} is not installed`, () => undefined);
      return;
    }
    t.equal(made, 0, `${format.label} made`);
    const before = head(file);
    await t.rejects(openDevice(file, owner, { force: false }), { code: 'MB_ERR_DEVICE_FORMATTED', message: format.expect });
    await t.rejects(openDevice(file, owner, { force: false }), { message: /previous formatting must be removed first/ });
    t.ok(head(file).equals(before), 'refusing changed nothing');
    const forced = await openDevice(file, owner, { force: true });
    t.equal(forced.formatted, true);
    closeDevice(forced);
    const blkid = await run('blkid', ['-p', file]);
    t.equal(blkid.code, 2, `blkid finds no old signature after --force (${blkid.stdout.trim()})`);
  });
}

t.test('an LVM physical volume on a loop (block) device is refused until --force', async (t) => {
  const file = sparseFile(t.testdir(), 'pv.img', 64 * MiB);
  const loop = await loopDevice(t, file);
  if ('unavailable' in loop) {
    t.skip(loop.unavailable, () => undefined);
    return;
  }
  const device = loop.device;
  const pv = await run('pvcreate', ['-y', device]);
  if (pv.code === 127) {
    t.skip('pvcreate is not installed', () => undefined);
    return;
  }
  t.equal(pv.code, 0, pv.stderr);
  await t.rejects(openDevice(device, owner, { force: false }), { code: 'MB_ERR_DEVICE_FORMATTED', message: /an LVM2 physical volume \(PV UUID \w+\)/ });
  const forced = await openDevice(device, owner, { force: true });
  t.equal(forced.isBlockDevice, true);
  t.equal(forced.sizeBytes, 64 * MiB, 'size from BLKGETSIZE64');
  closeDevice(forced);
  const recognised = await openDevice(device, owner, { force: false });
  t.equal(recognised.formatted, false);
  closeDevice(recognised);
});

t.test('device IO: direct by default where the filesystem allows it, buffered when asked or when it cannot', async (t) => {
  const file = sparseFile(t.testdir(), 'direct.img', 64 * MiB);
  const direct = await openDevice(file, owner, { force: false });
  t.equal(direct.io, 'direct', 'a file on a disk filesystem opens O_DIRECT by default');
  t.not(direct.directFd, null);
  t.equal(direct.superblock.sectorBytes, direct.sectorBytes, 'formatted with the sector size direct IO needs here');
  t.equal(direct.ioReason, null);
  closeDevice(direct);
  const buffered = await openDevice(file, owner, { force: false, io: 'buffered' });
  t.equal(buffered.io, 'buffered');
  t.equal(buffered.directFd, null);
  t.match(buffered.ioReason, /asked for/);
  closeDevice(buffered);

  // A device formatted before direct IO (version 2: metadata packed) works only buffered.
  const fd = fs.openSync(file, 'r+');
  const superblock = Buffer.alloc(4096);
  fs.readSync(fd, superblock, 0, 4096, 0);
  superblock.writeUInt32BE(2, 8);
  superblock.writeUInt32BE(0, 132);
  superblock.writeUInt32BE(crc32c(superblock.subarray(0, 4092)), 4092);
  fs.writeSync(fd, superblock, 0, 4096, 0);
  fs.closeSync(fd);
  const older = await openDevice(file, owner, { force: false });
  t.equal(older.io, 'buffered', 'auto falls back to the page cache on a version-2 device');
  t.match(older.ioReason, /format version 2.*--force/);
  closeDevice(older);
  await t.rejects(openDevice(file, owner, { force: false, io: 'direct' }), { code: 'MB_ERR_DEVICE_DIRECT_IO', message: /direct\.img: cannot do direct IO: .*format version 2.*--io buffered/ });
});

t.test('device IO on a filesystem that refuses O_DIRECT (ramfs)', async (t) => {
  // Not under t.testdir(): tap removes that before teardowns registered later run.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshblock-ramfs-'));
  t.teardown(() => fs.rmdirSync(dir));
  const mounted = await run('mount', ['-t', 'ramfs', 'ramfs', dir]);
  if (mounted.code !== 0) {
    t.skip(`cannot mount ramfs here: ${mounted.stderr.trim()}`, () => undefined);
    return;
  }
  t.teardown(() => run('umount', [dir]).then(() => undefined));
  const file = path.join(dir, 'dev.img');
  fs.writeFileSync(file, Buffer.alloc(0));
  fs.truncateSync(file, 64 * MiB);
  await t.rejects(openDevice(file, owner, { force: false, io: 'direct' }), { code: 'MB_ERR_DEVICE_DIRECT_IO', message: /dev\.img: cannot do direct IO: its filesystem refuses O_DIRECT.*--io buffered/ });
  const fallback = await openDevice(file, owner, { force: false });
  t.equal(fallback.io, 'buffered', 'auto falls back to the page cache');
  t.match(fallback.ioReason, /refuses O_DIRECT/);
  t.equal(fallback.superblock.sectorBytes, 512, 'formatted with 512-byte records all the same, ready for a move to a disk');
  closeDevice(fallback);
});

t.test('a loop device with direct IO: the sector size is the device logical one', async (t) => {
  const file = sparseFile(t.testdir(), 'loop.img', 64 * MiB);
  const loop = await loopDevice(t, file);
  if ('unavailable' in loop) {
    t.skip(loop.unavailable, () => undefined);
    return;
  }
  const opened = await openDevice(loop.device, owner, { force: false });
  t.equal(opened.io, 'direct');
  const blockSize = await run('blockdev', ['--getss', loop.device]);
  t.equal(opened.sectorBytes, Number(blockSize.stdout.trim()), 'BLKSSZGET');
  closeDevice(opened);
});
