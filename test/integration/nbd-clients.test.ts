// Proves that `meshblock nbd serve` works with the real NBD clients people use: libnbd's
// nbdinfo and nbdcopy, qemu-img and qemu-io, and fio's nbd engine with verification. Each
// case starts the real server process on a loopback port (or a Unix socket) in front of a
// sparse file in the test's scratch directory, drives it with the client program, and
// checks the bytes — through the server and in the file itself — so a wrong answer fails.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { loopDevice, sparseFile } from '../helpers/files.js';
import { run, startNbdServe } from '../helpers/processes.js';

const MiB = 1024 * 1024;

/** A file of random bytes with a hole in the middle, so copies must handle both. */
function patternedFile(dir: string, name: string, sizeBytes: number, seed: string): string {
  const file = sparseFile(dir, name, sizeBytes);
  const fd = fs.openSync(file, 'r+');
  const block = Buffer.alloc(MiB);
  for (let offset = 0; offset < sizeBytes; offset += MiB) {
    if (offset >= sizeBytes / 4 && offset < sizeBytes / 2) continue; // leave a hole
    const digest = crypto.createHash('sha256').update(`${seed}:${offset}`).digest();
    for (let position = 0; position < block.length; position += digest.length) digest.copy(block, position);
    fs.writeSync(fd, block, 0, Math.min(MiB, sizeBytes - offset), offset);
  }
  fs.closeSync(fd);
  return file;
}

t.test('nbdinfo: --json, --list and --map report the export truthfully', async (t) => {
  const dir = t.testdir();
  const file = sparseFile(dir, 'disk.img', 64 * MiB);
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.alloc(MiB, 0xa5), 0, MiB, 8 * MiB); // data at [8 MiB, 9 MiB)
  fs.closeSync(fd);
  const server = await startNbdServe(t, ['--file', file, '--name', 'disk1', '--description', 'test disk']);

  const info = await run('nbdinfo', ['--json', server.uri]);
  t.equal(info.code, 0, info.stderr);
  const parsed = JSON.parse(info.stdout) as {
    protocol: string;
    exports: Array<Record<string, unknown>>;
  };
  const entry = parsed.exports[0] ?? {};
  t.equal(parsed.protocol, 'newstyle-fixed');
  t.equal(entry['export-name'], 'disk1');
  t.equal(entry['description'], 'test disk');
  t.equal(entry['export-size'], 64 * MiB);
  t.equal(entry['is_read_only'], false);
  for (const capability of ['can_flush', 'can_fua', 'can_trim', 'can_zero', 'can_fast_zero', 'can_multi_conn', 'can_cache', 'can_df']) {
    t.equal(entry[capability], true, capability);
  }
  t.equal(entry['block_size_minimum'], 1);
  t.equal(entry['block_size_maximum'], 32 * MiB);
  t.same(entry['contexts'], ['base:allocation']);

  const list = await run('nbdinfo', ['--list', '--json', server.uri]);
  t.equal(list.code, 0, list.stderr);
  const listed = JSON.parse(list.stdout) as { exports: Array<{ 'export-name': string }> };
  t.same(listed.exports.map((e) => e['export-name']), ['disk1']);

  const map = await run('nbdinfo', ['--map', '--json', server.uri]);
  t.equal(map.code, 0, map.stderr);
  const extents = JSON.parse(map.stdout) as Array<{ offset: number; length: number; type: number }>;
  t.same(
    extents.map((e) => [e.offset, e.length, e.type]),
    [
      [0, 8 * MiB, 3],
      [8 * MiB, MiB, 0],
      [9 * MiB, 55 * MiB, 3],
    ],
    'hole, data, hole: the map follows the file’s allocation',
  );

  const unknown = await run('nbdinfo', [server.uri.replace(/disk1$/, 'nosuch')]);
  t.not(unknown.code, 0, 'an unknown export name is refused');
});

t.test('nbdcopy round trip, single and multi-connection, compared with cmp', async (t) => {
  const dir = t.testdir();
  const source = patternedFile(dir, 'source.img', 48 * MiB, 'nbdcopy');
  const target = sparseFile(dir, 'target.img', 48 * MiB);
  const server = await startNbdServe(t, ['--file', target]);

  const upload = await run('nbdcopy', ['--connections=4', '--requests=16', source, server.uri]);
  t.equal(upload.code, 0, upload.stderr);
  const cmpTarget = await run('cmp', [source, target]);
  t.equal(cmpTarget.code, 0, `the served file equals the source ${cmpTarget.stdout}`);

  const download = path.join(dir, 'download.img');
  const copyBack = await run('nbdcopy', ['--connections=1', server.uri, download]);
  t.equal(copyBack.code, 0, copyBack.stderr);
  const cmpBack = await run('cmp', [source, download]);
  t.equal(cmpBack.code, 0, `the copy read back equals the source ${cmpBack.stdout}`);
});

t.test('qemu-img compare and qemu-io patterns', async (t) => {
  const dir = t.testdir();
  const reference = patternedFile(dir, 'reference.img', 16 * MiB, 'qemu');
  const served = path.join(dir, 'served.img');
  fs.copyFileSync(reference, served);
  const server = await startNbdServe(t, ['--file', served]);

  const same = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', reference, server.uri]);
  t.equal(same.code, 0, `identical: ${same.stdout}${same.stderr}`);

  const io = await run('qemu-io', [
    '-f', 'raw',
    '-c', 'write -P 0x5a 1M 64k',
    '-c', 'write -P 0x33 3000 5000', // unaligned
    '-c', 'write -z 2M 1M',
    '-c', 'discard 4M 1M',
    '-c', 'write -P 0x77 -f 15M 4k', // -f: FUA
    '-c', 'flush',
    '-c', 'read -P 0x5a 1M 64k',
    '-c', 'read -P 0x33 3000 5000',
    '-c', 'read -P 0 2M 1M',
    '-c', 'read -P 0x77 15M 4k',
    server.uri,
  ]);
  t.equal(io.code, 0, io.stderr);
  t.notMatch(io.stdout + io.stderr, /Pattern verification failed|error|failed/i, io.stdout);

  const wrong = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x11 1M 4k', server.uri]);
  t.match(wrong.stdout + wrong.stderr, /Pattern verification failed/, 'a wrong pattern is detected (the check can fail)');

  const bytes = fs.readFileSync(served);
  t.ok(bytes.subarray(MiB, MiB + 65536).every((b) => b === 0x5a), 'writes reached the file');
  t.ok(bytes.subarray(2 * MiB, 3 * MiB).every((b) => b === 0), 'write -z zeroed the range in the file');
  t.ok(bytes.subarray(4 * MiB, 5 * MiB).every((b) => b === 0), 'discard reads back as zeroes');

  const differs = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', reference, server.uri]);
  t.equal(differs.code, 1, 'qemu-img compare now sees the difference');
});

t.test('TRIM and WRITE_ZEROES punch holes in the file', async (t) => {
  const dir = t.testdir();
  const file = sparseFile(dir, 'thin.img', 32 * MiB);
  const server = await startNbdServe(t, ['--file', file]);
  const fill = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 0 32M', '-c', 'flush', server.uri]);
  t.equal(fill.code, 0, fill.stderr);
  const allocatedFull = fs.statSync(file).blocks * 512;
  t.ok(allocatedFull >= 32 * MiB, `fully allocated after writing (${allocatedFull} bytes)`);

  const trim = await run('qemu-io', ['-f', 'raw', '-c', 'discard 0 16M', '-c', 'write -z -u 16M 8M', '-c', 'flush', server.uri]);
  t.equal(trim.code, 0, trim.stderr);
  const allocatedAfter = fs.statSync(file).blocks * 512;
  t.ok(allocatedAfter <= 8 * MiB + 64 * 1024, `24 MiB released (${allocatedAfter} bytes still allocated)`);

  const map = await run('nbdinfo', ['--map', '--json', server.uri]);
  const extents = JSON.parse(map.stdout) as Array<{ offset: number; length: number; type: number }>;
  t.same(extents.map((e) => [e.offset, e.length, e.type]), [
    [0, 24 * MiB, 3],
    [24 * MiB, 8 * MiB, 0],
  ]);
  const read = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0 0 24M', '-c', 'read -P 0x42 24M 8M', server.uri]);
  t.notMatch(read.stdout, /verification failed/);
});

t.test('fio nbd engine with crc32c verification', async (t) => {
  const dir = t.testdir();
  const file = sparseFile(dir, 'fio.img', 128 * MiB);
  const server = await startNbdServe(t, ['--file', file]);
  const common = ['--ioengine=nbd', `--uri=${server.uri}`, '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json', '--size=64M'];
  const jobs: Array<[string, string[]]> = [
    ['random 4k depth 32', ['--name=rand4k', '--rw=randwrite', '--bs=4k', '--iodepth=32', '--offset=0']],
    ['sequential 1M depth 8', ['--name=seq1m', '--rw=write', '--bs=1M', '--iodepth=8', '--offset=64M']],
  ];
  for (const [label, args] of jobs) {
    const result = await run('fio', [...args, ...common], { timeoutMs: 300_000 });
    t.equal(result.code, 0, `${label}: fio exits 0 ${result.stderr}`);
    const report = JSON.parse(result.stdout.slice(result.stdout.indexOf('{'))) as {
      jobs: Array<{ error: number; read: { io_bytes: number }; write: { io_bytes: number } }>;
    };
    const job = report.jobs[0];
    t.equal(job?.error, 0, `${label}: no fio error`);
    t.equal(job?.write.io_bytes, 64 * MiB, `${label}: wrote 64 MiB`);
    t.equal(job?.read.io_bytes, 64 * MiB, `${label}: read back and verified 64 MiB`);
  }
});

t.test('Unix socket export', async (t) => {
  const dir = t.testdir();
  const file = sparseFile(dir, 'unix.img', 8 * MiB);
  const socket = path.join(dir, 'nbd.sock');
  const server = await startNbdServe(t, ['--file', file, '--socket', socket, '--name', 'u']);
  t.equal(server.uri, `nbd+unix:///u?socket=${socket}`);
  const io = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x99 0 1M', '-c', 'read -P 0x99 0 1M', server.uri]);
  t.equal(io.code, 0, io.stderr);
  t.notMatch(io.stdout, /verification failed/);
  const info = await run('nbdinfo', ['--size', server.uri]);
  t.equal(info.stdout.trim(), String(8 * MiB));

  // A second server must not steal a live socket; after the first stops, the stale file is reused.
  const rival = await run(process.execPath, ['bin/meshblock.cjs', 'nbd', 'serve', '--file', file, '--socket', socket]);
  t.equal(rival.code, 1);
  t.match(rival.stderr, /another server is listening on it/);
  t.equal(await server.stop(), 0, 'SIGTERM stops the server cleanly');
});

t.test('read-only export refuses writes with EPERM', async (t) => {
  const dir = t.testdir();
  const file = patternedFile(dir, 'ro.img', 4 * MiB, 'ro');
  fs.chmodSync(file, 0o444);
  const before = fs.readFileSync(file);
  const server = await startNbdServe(t, ['--file', file, '--read-only']);
  const info = await run('nbdinfo', ['--json', server.uri]);
  const entry = (JSON.parse(info.stdout) as { exports: Array<Record<string, unknown>> }).exports[0] ?? {};
  t.equal(entry['is_read_only'], true);
  t.equal(entry['can_trim'], false);
  const write = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', server.uri]);
  t.match(write.stdout + write.stderr, /Operation not permitted|read-only|Permission denied/i);
  t.same(fs.readFileSync(file), before, 'the file is unchanged');
});

t.test('block device export (loop device)', async (t) => {
  const dir = t.testdir();
  const file = sparseFile(dir, 'loop.img', 16 * MiB);
  const loop = await loopDevice(t, file);
  if ('unavailable' in loop) {
    t.skip(loop.unavailable, () => undefined);
    return;
  }
  const device = loop.device;
  const server = await startNbdServe(t, ['--file', device]);
  const size = await run('nbdinfo', ['--size', server.uri]);
  t.equal(size.stdout.trim(), String(16 * MiB), 'size comes from BLKGETSIZE64');
  const io = await run('qemu-io', [
    '-f', 'raw',
    '-c', 'write -P 0x61 0 2M',
    '-c', 'write -z 4M 1M',
    '-c', 'discard 8M 1M',
    '-c', 'flush',
    '-c', 'read -P 0x61 0 2M',
    '-c', 'read -P 0 4M 1M',
    server.uri,
  ]);
  t.equal(io.code, 0, io.stderr);
  t.notMatch(io.stdout + io.stderr, /verification failed|error/i, io.stdout);
});
