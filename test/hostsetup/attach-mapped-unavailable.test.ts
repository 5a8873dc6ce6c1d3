// `sdc start --attach-mapped` on a host that cannot attach (the install tests' hosts, a Dom0
// without the nbd module): the attacher says why in one warning (again only when the reason
// changes), holds further tries for attachUnavailableRetryMs (each try runs modprobe: one per
// try, not one per volume), and attaches once the host can.
//
// MOCKED, because this machine's kernel has no nbd module: the kernel's files (a fake /sys and
// /dev under the test's directory, which the attacher is pointed at as `sdc start
// --attach-root` points it) and the two tools, `modprobe` and `nbd-client`, stubs on PATH that
// record their arguments (nbd-client writes the device's size into the fake /sys, as the kernel
// would). The attacher, its files, its by-id links and the processes it runs are real. That the
// SDC goes on serving the volume over NBD meanwhile is test/integration/install.test.ts's
// (a real SDC on a host without nbd).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import t from 'tap';
import { attachUnavailableRetryMs } from '../../src/common/limits.js';
import { MappedAttacher } from '../../src/hostsetup/attach-mapped.js';

interface LogLine {
  level: number;
  msg: string;
  code?: string;
}

const warn = 40;

t.test('no nbd module: one clear warning, tries held, attached once the module is there', async (t) => {
  const dir = t.testdir();
  const root = path.join(dir, 'host');
  const binDir = path.join(dir, 'bin');
  for (const sub of ['sys', 'dev', 'run/meshblock', 'proc']) fs.mkdirSync(path.join(root, sub), { recursive: true });
  fs.mkdirSync(binDir);
  const calls = (tool: string): string[] => {
    const file = path.join(dir, `${tool}.calls`);
    return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim().split('\n') : [];
  };
  const stubModprobe = (body: string): void => fs.writeFileSync(path.join(binDir, 'modprobe'), `#!/bin/sh\necho "$*" >>'${dir}/modprobe.calls'\n${body}\n`, { mode: 0o755 });
  // As the install tests' hosts have it: a modprobe that does nothing and says nothing.
  stubModprobe('exit 0');
  fs.writeFileSync(
    path.join(binDir, 'nbd-client'),
    `#!/bin/sh\necho "$*" >>'${dir}/nbd-client.calls'\n[ "$1" = -d ] && exit 0\necho 16777216 >'${root}/sys/block/'"$(basename "$3")"'/size'\n`,
    { mode: 0o755 },
  );
  const pathBefore = process.env['PATH'];
  process.env['PATH'] = `${binDir}:${pathBefore ?? ''}`;
  t.teardown(() => {
    process.env['PATH'] = pathBefore;
  });

  const lines: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') lines.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  let nowMs = 1_000_000;
  const attacher = new MappedAttacher({
    systemId: 'a1b2c3d4e5f60718',
    sdc: { host: '127.0.0.1', port: 10809 },
    paths: { sysRoot: path.join(root, 'sys'), devRoot: path.join(root, 'dev'), stateDir: path.join(root, 'run/meshblock/attachments') },
    byIdDir: path.join(root, 'dev/disk/by-id'),
    procRoot: path.join(root, 'proc'),
    timeoutS: 30,
    nbdsMax: 16,
    log: pino({ level: 'debug' }, sink),
    nowMs: () => nowMs,
  });
  t.teardown(() => attacher.close());
  const pass = async (): Promise<void> => {
    attacher.kick();
    await attacher.settled();
  };
  const warnings = (): LogLine[] => lines.filter((line) => line.level === warn);

  attacher.setMapped([
    { id: 'c0ffee0000000001', name: 'vol1' },
    { id: 'c0ffee0000000002', name: 'vol2' },
  ]);
  await attacher.settled();
  t.equal(warnings().length, 1, 'one warning');
  t.match(
    warnings()[0]?.msg,
    /^this host cannot attach mapped volumes as disks: the nbd kernel module is not loaded and there is no \/dev\/nbdN .*; the SDC goes on serving the mapped volumes over NBD at 127\.0\.0\.1:10809; trying again every 10 s$/,
  );
  t.equal(warnings()[0]?.code, 'MB_ERR_NO_DEVICE');
  t.equal(calls('modprobe').length, 1, 'one modprobe for the pass, not one per volume');
  t.same(calls('nbd-client'), [], 'no nbd-client without a device');
  t.same(attacher.list(), []);

  await pass();
  await pass();
  t.equal(calls('modprobe').length, 1, 'passes within the hold try nothing');

  nowMs += attachUnavailableRetryMs;
  await pass();
  t.equal(calls('modprobe').length, 2, 'tried again once the hold is over');
  t.equal(warnings().length, 1, 'the same reason is not warned again');
  t.ok(lines.some((line) => line.level === 20 && line.msg.startsWith('this host cannot attach')), 'said again at debug level');

  // Another reason: modprobe fails (a kernel without the module).
  stubModprobe("echo 'modprobe: FATAL: Module nbd not found in directory /lib/modules/6.1.0' >&2; exit 1");
  nowMs += attachUnavailableRetryMs;
  await pass();
  t.equal(warnings().length, 2, 'a new reason is warned');
  t.equal(warnings()[1]?.code, 'MB_ERR_NBD_MODULE');
  t.match(warnings()[1]?.msg, /cannot load the nbd kernel module \(modprobe nbd nbds_max=16 max_part=16\): modprobe: FATAL: Module nbd not found/);

  // The module arrives (loaded by hand): the next try after the hold attaches both volumes.
  fs.mkdirSync(path.join(root, 'sys/module/nbd'), { recursive: true });
  for (const index of [0, 1]) {
    fs.mkdirSync(path.join(root, 'sys/block', `nbd${index}`), { recursive: true });
    fs.writeFileSync(path.join(root, 'sys/block', `nbd${index}`, 'size'), '0\n');
    fs.writeFileSync(path.join(root, 'dev', `nbd${index}`), '');
  }
  await pass();
  t.same(attacher.list(), [], 'still held');
  nowMs += attachUnavailableRetryMs;
  await pass();
  t.same(
    attacher.list().map((entry) => [entry.volume.name, path.basename(entry.device)]),
    [
      ['vol1', 'nbd0'],
      ['vol2', 'nbd1'],
    ],
  );
  t.equal(fs.readlinkSync(path.join(root, 'dev/disk/by-id/emc-vol-a1b2c3d4e5f60718-c0ffee0000000001')), '../../nbd0');
  t.ok(lines.some((line) => line.level === 30 && line.msg === 'this host can attach mapped volumes again'));
  t.equal(attacher.unavailableReason, null);
  t.equal(warnings().length, 2);
});
