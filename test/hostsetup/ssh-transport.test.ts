// The SSH transport against a real OpenSSH server in a network namespace of its own: key
// login, host-key checking (unknown, accepted, changed, hashed known_hosts), file reads and
// atomic writes with backups, commands with their exit codes, uploads, and the failures an
// administrator meets (wrong password, wrong key, a damaged key, nobody listening, a host cut
// off the network), each one clear and none showing a secret.

import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { checkKnownHost, knownHostsName, parseSshTarget, shellQuote, SshTransport, type SshTransportOptions } from '../../src/hostsetup/ssh-transport.js';
import { createSimNetwork } from '../helpers/netns.js';
import { run, runMeshblock } from '../helpers/processes.js';
import { sshKeyPair, startSshd } from '../helpers/sshd.js';

t.test('parsing targets and quoting', async (t) => {
  t.same(parseSshTarget('--host', '10.0.0.5'), { user: 'root', host: '10.0.0.5', port: 22 });
  t.same(parseSshTarget('--host', 'admin@xen1.example:2222'), { user: 'admin', host: 'xen1.example', port: 2222 });
  t.same(parseSshTarget('--host', 'root@[fd00::5]:22'), { user: 'root', host: 'fd00::5', port: 22 });
  t.throws(() => parseSshTarget('--host', 'root@'), { code: 'MB_ERR_INVALID_ARGUMENT', message: /--host: expected USER@HOST/ });
  t.throws(() => parseSshTarget('--host', 'root@h:99999'), { code: 'MB_ERR_INVALID_ARGUMENT' });
  t.equal(knownHostsName({ host: '10.0.0.5', port: 22 }), '10.0.0.5');
  t.equal(knownHostsName({ host: '10.0.0.5', port: 2222 }), '[10.0.0.5]:2222');
  t.equal(shellQuote("it's"), "'it'\\''s'");
  t.equal(shellQuote('/etc/lvm/lvm.conf'), '/etc/lvm/lvm.conf');
  const key = Buffer.from('0000000b7373682d6564323535313900000001ff', 'hex');
  t.same(checkKnownHost(`# comment\nother ssh-ed25519 ${key.toString('base64')}\n`, 'host', key), { kind: 'unknown' });
  t.same(checkKnownHost(`a,host ssh-ed25519 ${key.toString('base64')}\n`, 'host', key), { kind: 'known', line: 1 });
  t.same(checkKnownHost(`\nhost ssh-ed25519 AAAA\n`, 'host', key), { kind: 'changed', line: 2 });
  t.same(checkKnownHost(`@revoked host ssh-ed25519 ${key.toString('base64')}\nhost ssh-ed25519 ${key.toString('base64')}\n`, 'host', key), { kind: 'changed', line: 1 });
});

t.test('a real sshd in a namespace', async (t) => {
  const network = await createSimNetwork(t, 1, { names: ['xen1'] });
  if ('unavailable' in network) {
    t.fail(`no simulated network: ${network.unavailable}`);
    return;
  }
  const host = network.hosts[0] as (typeof network.hosts)[number];
  const dir = t.testdir();
  const key = await sshKeyPair(dir, 'id_admin');
  const otherKey = await sshKeyPair(dir, 'id_other');
  const sshd = await startSshd(t, path.join(dir, 'sshd'), host.netns, host.address, [key.publicKey]);
  const knownHostsFile = path.join(dir, 'known_hosts');
  const target = { user: 'root', host: host.address, port: 22 };
  const base: SshTransportOptions = { target, credentials: { privateKey: key.privateKey }, knownHostsFile };

  await t.test('an unknown host key is refused with its fingerprint', async (t) => {
    await t.rejects(SshTransport.connect(base), { code: 'MB_ERR_SSH_HOST_KEY_UNKNOWN', message: new RegExp(`unknown host key ${sshd.hostFingerprint.replace(/[+/]/g, '\\$&')}`) });
    t.notOk(fs.existsSync(knownHostsFile), 'nothing recorded');
  });

  await t.test('accepted once, then known; files and commands over SSH', async (t) => {
    const first = await SshTransport.connect({ ...base, acceptNewHostKey: true });
    first.close();
    t.equal(fs.readFileSync(knownHostsFile, 'utf8'), `${host.address} ${sshd.hostPublicKey}\n`, 'recorded as OpenSSH would');
    const ssh = await SshTransport.connect({ ...base, now: () => new Date('2026-03-14T09:30:00Z') });
    t.teardown(() => ssh.close());
    t.equal(ssh.label, `root@${host.address}`);

    const id = await ssh.run('id', ['-u']);
    t.same(id, { code: 0, stdout: '0\n', stderr: '' });
    const failing = await ssh.run('sh', ['-c', 'echo oops >&2; exit 7']);
    t.same([failing.code, failing.stderr], [7, 'oops\n'], 'exit codes and stderr come back');
    t.equal((await ssh.run('no-such-tool-here', [])).code, 127, 'a missing command is 127, as locally');
    const quoted = await ssh.run('printf', ['%s|', "it's", 'a b', '$HOME', '`x`']);
    t.equal(quoted.stdout, "it's|a b|$HOME|`x`|", 'arguments arrive unchanged');
    t.equal((await ssh.run('cat', [], { input: 'through stdin' })).stdout, 'through stdin');

    // The host shares this machine's files: read back what SSH wrote.
    const conf = path.join(dir, 'etc', 'lvm', 'lvm.conf');
    t.equal(await ssh.readFile(conf), null, 'a missing file reads as null');
    t.equal(await ssh.exists(conf), false);
    await ssh.writeFile(conf, 'devices {\n}\n', { mode: 0o600 });
    t.equal(fs.readFileSync(conf, 'utf8'), 'devices {\n}\n', 'parent directories made, file written');
    t.equal(fs.statSync(conf).mode & 0o777, 0o600);
    const backup = await ssh.backup(conf);
    t.equal(backup, `${conf}.meshblock-20260314T093000.bak`);
    t.equal(await ssh.backup(conf), backup, 'one backup per file per run');
    await ssh.writeFile(conf, "devices {\n\ttypes = [ \"nbd\", 16 ]\n}\n# it's $done\n");
    t.equal(await ssh.readFile(conf), "devices {\n\ttypes = [ \"nbd\", 16 ]\n}\n# it's $done\n");
    t.equal(fs.statSync(conf).mode & 0o777, 0o600, 'the mode of the replaced file is kept');
    t.equal(fs.readFileSync(backup as string, 'utf8'), 'devices {\n}\n', 'the backup holds the text from before');
    t.same(fs.readdirSync(path.dirname(conf)).filter((name) => name.includes('.tmp') || name.includes('meshblock-') && !name.endsWith('.bak')), [], 'no temporary file left');

    const payload = path.join(dir, 'payload.bin');
    fs.writeFileSync(payload, Buffer.from(Array.from({ length: 300_000 }, (_, index) => (index * 7) & 0xff)));
    const uploaded = path.join(dir, 'opt', 'meshblock', 'payload.bin');
    await ssh.upload(payload, uploaded, 0o755);
    t.ok(fs.readFileSync(uploaded).equals(fs.readFileSync(payload)), 'an upload arrives byte for byte');
    t.equal(fs.statSync(uploaded).mode & 0o777, 0o755);
  });

  await t.test('meshblock host check --host runs the modules over SSH', async (t) => {
    const result = await runMeshblock(['host', 'check', '--host', `root@${host.address}`, '--identity', key.privateKeyFile, '--known-hosts', knownHostsFile, '--only', 'prereqs,nbd-module', '--json']);
    const report = JSON.parse(result.stdout) as { host: string; findings: Array<{ module: string; ok: boolean }> };
    t.equal(report.host, `root@${host.address}`);
    t.same(report.findings.map((finding) => finding.module), ['prereqs', 'nbd-module']);
    // This kernel has no nbd module: the check over SSH finds it not loaded, and says so.
    t.equal(report.findings[1]?.ok, false);
    t.equal(result.code, 1);
    const refused = await runMeshblock(['host', 'check', '--host', `root@${host.address}`, '--identity', otherKey.privateKeyFile, '--known-hosts', knownHostsFile]);
    t.equal(refused.code, 1);
    t.match(refused.stderr, /^meshblock: root@.*: login refused \(key not accepted\)\n$/);
  });

  await t.test('hashed known_hosts entries are understood', async (t) => {
    const hashed = path.join(dir, 'known_hosts_hashed');
    fs.copyFileSync(knownHostsFile, hashed);
    const result = await run('ssh-keygen', ['-H', '-f', hashed]);
    t.equal(result.code, 0);
    t.match(fs.readFileSync(hashed, 'utf8'), /^\|1\|/);
    const ssh = await SshTransport.connect({ ...base, knownHostsFile: hashed });
    ssh.close();
  });

  await t.test('a changed host key is refused, even with --accept-new-host-key', async (t) => {
    const changed = path.join(dir, 'known_hosts_changed');
    fs.writeFileSync(changed, `${host.address} ${otherKey.publicKey}\n`);
    await t.rejects(SshTransport.connect({ ...base, knownHostsFile: changed, acceptNewHostKey: true }), {
      code: 'MB_ERR_SSH_HOST_KEY_CHANGED',
      message: /does not match .*line 1: refusing/,
    });
  });

  await t.test('login failures are clear and show no secret', async (t) => {
    const password = 'hunter2-not-the-password';
    const wrongPassword = await SshTransport.connect({ ...base, credentials: { password } }).catch((err: Error & { code?: string }) => err);
    t.match(wrongPassword, { code: 'MB_ERR_SSH_LOGIN', message: /login refused \(password not accepted\)/ });
    t.notMatch((wrongPassword as Error).message, password);
    await t.rejects(SshTransport.connect({ ...base, credentials: { privateKey: otherKey.privateKey } }), { code: 'MB_ERR_SSH_LOGIN', message: /key not accepted/ });
    const damaged = await SshTransport.connect({ ...base, credentials: { privateKey: '-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n-----END OPENSSH PRIVATE KEY-----\n' } }).catch((err: Error) => err);
    t.match(damaged, { code: 'MB_ERR_SSH_KEY' });
    t.notMatch((damaged as Error).message, 'not a key');
    await t.rejects(SshTransport.connect({ ...base, credentials: {} }), { code: 'MB_ERR_SSH_NO_CREDENTIALS' });
    t.match(sshd.log(), /Failed password for root/, "sshd itself refused the password");
  });

  await t.test('unreachable: nobody listening, and a host cut off the network', async (t) => {
    await t.rejects(SshTransport.connect({ ...base, target: { ...target, port: 2 } }), { code: 'MB_ERR_SSH_UNREACHABLE', message: /cannot reach \[.*\]:2 \(ECONNREFUSED\)/ });
    await network.cut(0);
    t.teardown(() => network.heal(0));
    await t.rejects(SshTransport.connect({ ...base, readyTimeoutMs: 2000 }), { code: 'MB_ERR_SSH_UNREACHABLE' });
  });
});
