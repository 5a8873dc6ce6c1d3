// The local transport, on real files and real processes in a test directory: host paths
// resolve under the root and cannot climb out of it; writes are atomic and keep the file's
// mode; a backup is made once per path per run and never overwrites an older one; commands
// run with their input, exit codes and a time bound, and an absolute command path runs the
// program under the root (how the module tests put stubs in place).

import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { backupStamp, commandNotFoundCode, LocalTransport } from '../../src/hostsetup/host-transport.js';

t.test('paths resolve under the root, and .. stays inside it', async (t) => {
  const root = t.testdir({ etc: { 'a.conf': 'x\n' } });
  const transport = new LocalTransport({ root });
  t.equal(transport.resolve('/etc/a.conf'), path.join(root, 'etc/a.conf'));
  t.equal(transport.resolve('/../../etc/a.conf'), path.join(root, 'etc/a.conf'));
  t.throws(() => transport.resolve('etc/a.conf'), { code: 'MB_ERR_HOST_PATH' });
  t.equal(await transport.readFile('/etc/a.conf'), 'x\n');
  t.equal(await transport.readFile('/etc/missing.conf'), null);
  t.equal(await transport.exists('/etc/a.conf'), true);
  t.equal(await transport.exists('/etc/missing.conf'), false);
  t.match(transport.label, `root ${root}`);
  t.equal(new LocalTransport().label, 'this machine');
});

t.test('writeFile replaces atomically, keeps the mode, creates directories', async (t) => {
  const root = t.testdir({ etc: { 'secret.conf': 'old\n' } });
  fs.chmodSync(path.join(root, 'etc/secret.conf'), 0o600);
  const transport = new LocalTransport({ root });
  await transport.writeFile('/etc/secret.conf', 'new\n');
  t.equal(fs.readFileSync(path.join(root, 'etc/secret.conf'), 'utf8'), 'new\n');
  t.equal(fs.statSync(path.join(root, 'etc/secret.conf')).mode & 0o777, 0o600, 'the old mode is kept');
  t.same(fs.readdirSync(path.join(root, 'etc')), ['secret.conf'], 'no temporary file left');
  await transport.writeFile('/etc/modules-load.d/x.conf', 'nbd\n');
  t.equal(fs.statSync(path.join(root, 'etc/modules-load.d/x.conf')).mode & 0o777, 0o644, 'a new file is 0644');
  await transport.writeFile('/etc/run.sh', '#!/bin/sh\n', { mode: 0o755 });
  t.equal(fs.statSync(path.join(root, 'etc/run.sh')).mode & 0o777, 0o755);
  fs.mkdirSync(path.join(root, 'etc/dir.conf'));
  await t.rejects(transport.writeFile('/etc/dir.conf', 'x'), { code: 'MB_ERR_HOST_WRITE' });
  t.same(fs.readdirSync(path.join(root, 'etc')).filter((name) => name.endsWith('.tmp')), [], 'a failed write leaves no temporary file');
});

t.test('backup: once per path per run, named by the time, never over an older one', async (t) => {
  const root = t.testdir({ etc: { 'lvm.conf': 'v1\n' } });
  const now = () => new Date('2025-03-14T09:30:00.123Z');
  t.equal(backupStamp(now()), '20250314T093000');
  const first = new LocalTransport({ root, now });
  t.equal(await first.backup('/etc/lvm.conf'), '/etc/lvm.conf.meshblock-20250314T093000.bak');
  await first.writeFile('/etc/lvm.conf', 'v2\n');
  t.equal(await first.backup('/etc/lvm.conf'), '/etc/lvm.conf.meshblock-20250314T093000.bak', 'the same run keeps the first copy');
  t.equal(fs.readFileSync(path.join(root, 'etc/lvm.conf.meshblock-20250314T093000.bak'), 'utf8'), 'v1\n');
  const second = new LocalTransport({ root, now });
  t.equal(await second.backup('/etc/lvm.conf'), '/etc/lvm.conf.meshblock-20250314T093000-2.bak', 'a second run in the same second gets a suffix');
  t.equal(fs.readFileSync(path.join(root, 'etc/lvm.conf.meshblock-20250314T093000-2.bak'), 'utf8'), 'v2\n');
  t.equal(await second.backup('/etc/none.conf'), null, 'nothing to back up');
});

t.test('run: input, output, exit codes, missing programs, the time bound', async (t) => {
  const root = t.testdir({ usr: { bin: { tool: '#!/bin/sh\necho "stub $*"\nexit 3\n' } } });
  fs.chmodSync(path.join(root, 'usr/bin/tool'), 0o755);
  const transport = new LocalTransport({ root });
  t.same(await transport.run('cat', [], { input: 'hello' }), { code: 0, stdout: 'hello', stderr: '' });
  t.same(await transport.run('/usr/bin/tool', ['a', 'b c']), { code: 3, stdout: 'stub a b c\n', stderr: '' }, 'an absolute command runs from under the root');
  const missing = await transport.run('/usr/bin/absent', []);
  t.equal(missing.code, commandNotFoundCode);
  t.match(missing.stderr, /command not found/);
  t.equal((await transport.run('no-such-program-here', [])).code, commandNotFoundCode);
  t.equal((await transport.run('sh', ['-c', 'echo err >&2; exit 7'])).stderr, 'err\n');
  await t.rejects(transport.run('sleep', ['5'], { timeoutMs: 200 }), { code: 'MB_ERR_HOST_RUN_TIMEOUT' });
  t.equal((await transport.run('sh', ['-c', 'kill -TERM $$'])).code, 128 + 15, 'killed by a signal: 128 + its number');
});
