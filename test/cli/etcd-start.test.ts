// Proves `meshblock etcd start` with the real etcd (Debian's /usr/bin/etcd) on loopback:
// - bad flags (addresses, names, --initial-cluster without this member or with another peer
//   URL, missing PKI files, a missing binary) give one line and a non-zero exit, and etcd's
//   own exit code comes back out (a stand-in binary that exits 3);
// - three members form a cluster; a put/get works with a client certificate of the CA, and a
//   client without a certificate, or with one of another CA, is refused; the data directory
//   is locked; SIGTERM stops a member cleanly (exit 0);
// - a member killed with SIGKILL (its etcd too) leaves the cluster writable, and restarted
//   from its data directory it catches up; a member wiped and re-added (member remove,
//   member add, --existing) is healthy again and serves what was written before; the whole
//   cluster stopped (SIGTERM) and started again member by member keeps its data;
// - five members come up, serve from each member, and stay writable with two of them down.
// The cluster is test/helpers/etcd-cluster.ts: `node bin/meshblock.cjs etcd start` per member,
// PKI by src/mdm/etcd-pki.ts, membership changes with etcdctl; everything is killed in teardown.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { Etcd3 } from 'etcd3';
import t from 'tap';
import { checkEtcdStartArgs } from '../../src/cli/etcd-start.js';
import { createEtcdPki, loadEtcdClientTls } from '../../src/mdm/etcd-pki.js';
import { until } from '../helpers/cluster.js';
import { etcdClient, startEtcdCluster, type EtcdCluster } from '../helpers/etcd-cluster.js';
import { runMeshblock } from '../helpers/processes.js';

function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/** The `etcd start` flags of member i, as the helper gives them. */
function memberArgs(cluster: EtcdCluster, i: number): string[] {
  const member = cluster.members[i];
  if (member === undefined) throw new Error(`no member ${i}`);
  return [
    'etcd', 'start',
    '--data-dir', member.dataDir,
    '--name', member.name,
    '--client', member.clientUrl.slice('https://'.length),
    '--peer', member.peerUrl.slice('https://'.length),
    '--initial-cluster', cluster.members.map((entry) => `${entry.name}=${entry.peerUrl}`).join(','),
    '--pki', cluster.pkiDir,
  ];
}

t.test('bad flags: one line and a non-zero exit; etcd’s exit code comes back out', async (t) => {
  const dir = t.testdir();
  const pki = path.join(dir, 'pki');
  createEtcdPki(pki, { members: [{ name: 'm1', ips: ['127.0.0.1'] }], clients: [] });
  const base = { 'data-dir': path.join(dir, 'data'), name: 'm1', client: '127.0.0.1:1', peer: '127.0.0.1:2', 'initial-cluster': 'm1=https://127.0.0.1:2', pki };
  const args = (overrides: Partial<Record<keyof typeof base, string>>, extra: string[] = []): string[] => [
    'etcd', 'start',
    ...Object.entries({ ...base, ...overrides }).flatMap(([flag, value]) => [`--${flag}`, value]),
    ...extra,
  ];
  // The one-line contract, through the real command (each run is a Node start: a few only).
  const cases: Array<[string[], RegExp, number, Record<string, string>?]> = [
    [['etcd'], /etcd: name a subcommand/, 2],
    [['etcd', 'start', '--name', 'm1'], /Missing required argument/, 2],
    [args({ client: '127.0.0.1:bad' }), /--client: expected HOST:PORT/, 2],
    [args({ 'initial-cluster': 'm2=https://127.0.0.1:2' }), /--initial-cluster: names no member 'm1' \(--name\); it lists m2/, 2],
    [args({ pki: path.join(dir, 'no-pki') }), /no-pki\/ca\.crt is missing/, 1],
    [args({ name: 'm2', 'initial-cluster': 'm2=https://127.0.0.1:2' }), /member-m2\.crt is missing/, 1],
    [args({}), /\/nonexistent is missing or not executable \(install Debian's etcd-server, or set MESHBLOCK_ETCD_BIN\)/, 1, { MESHBLOCK_ETCD_BIN: '/nonexistent' }],
  ];
  const help = await runMeshblock(['etcd', 'start', '--help']);
  t.equal(help.code, 0);
  for (const flag of ['--data-dir', '--name', '--client', '--peer', '--initial-cluster', '--existing', '--pki']) t.match(help.stdout, flag, `etcd start --help mentions ${flag}`);
  for (const [argv, message, code, env] of cases) {
    const result = await runMeshblock(argv, env !== undefined ? { env } : {});
    const lines = result.stderr.trim().split('\n');
    t.equal(result.code, code, `${argv.slice(2).join(' ')}: exit ${code}`);
    t.equal(lines.length, 1, `${argv.slice(2).join(' ')}: one line (${result.stderr.trim()})`);
    t.match(lines[0], message);
  }

  // The rest of the flag checks, in this process: the same function the command runs.
  const flags = { ...base, existing: false, 'log-level': 'info' as const };
  const refusals: Array<[Partial<typeof base>, RegExp]> = [
    [{ client: '127.0.0.1:70000' }, /--client: must be a port from 0 to 65535/],
    [{ client: 'etcd.example:2379' }, /--client: 'etcd\.example' is not an IP address/],
    [{ client: ':2379' }, /--client: expected IP:PORT/],
    [{ peer: '0.0.0.0:2', 'initial-cluster': 'm1=https://0.0.0.0:2' }, /--peer: .*"any address"/],
    [{ client: '[::]:5' }, /--client: .*"any address"/],
    [{ client: '127.0.0.1:0' }, /--client: port 0/],
    [{ client: '127.0.0.1:2' }, /--client\/--peer: both are 127\.0\.0\.1:2/],
    [{ name: 'bad name' }, /--name: 'bad name' must be 1 to 31/],
    [{ name: 'x'.repeat(32) }, /--name: /],
    [{ 'initial-cluster': 'm1=https://127.0.0.1:3' }, /--initial-cluster: gives m1=https:\/\/127\.0\.0\.1:3, but --peer is https:\/\/127\.0\.0\.1:2/],
    [{ 'initial-cluster': 'm1=http://127.0.0.1:2' }, /--initial-cluster: 'http:\/\/127\.0\.0\.1:2' must be https:\/\/IP:PORT/],
    [{ 'initial-cluster': 'm1=https://127.0.0.1' }, /must be https:\/\/IP:PORT/],
    [{ 'initial-cluster': 'm1=https://127.0.0.1:2/path' }, /must be https:\/\/IP:PORT/],
    [{ 'initial-cluster': 'm1=https://host.example:2' }, /'host\.example' is not an IP address/],
    [{ 'initial-cluster': 'm1=https://127.0.0.1:2,m3=https://127.0.0.1:99999' }, /the port must be from 1 to 65535/],
    [{ 'initial-cluster': 'm1=https://127.0.0.1:2,m1=https://127.0.0.1:4' }, /member 'm1' is listed twice/],
    [{ 'initial-cluster': 'm1=https://127.0.0.1:2,m2=https://127.0.0.1:2' }, /m2 and m1 have the same peer URL/],
    [{ 'initial-cluster': 'm1=https://127.0.0.1:2,garbage' }, /'garbage' is not NAME=https:\/\/IP:PORT/],
    [{ 'initial-cluster': 'm1=https://127.0.0.1:2,-x=https://127.0.0.1:5' }, /member name '-x'/],
  ];
  for (const [overrides, message] of refusals) {
    t.throws(() => checkEtcdStartArgs({ ...flags, ...overrides }), { message }, JSON.stringify(overrides));
  }
  t.same(
    checkEtcdStartArgs({ ...flags, client: '[::1]:1', peer: '[0:0::1]:2', 'initial-cluster': 'm0=https://10.0.0.1:2380,m1=https://[::1]:2' }),
    { clientUrl: 'https://[::1]:1', peerUrl: 'https://[::1]:2', cluster: [{ name: 'm0', peerUrl: 'https://10.0.0.1:2380' }, { name: 'm1', peerUrl: 'https://[::1]:2' }] },
    'IPv6 addresses compare in their canonical form',
  );

  // A stand-in for etcd that fails as etcd does on a bad data directory: its code comes back.
  const standIn = path.join(dir, 'fake-etcd');
  fs.writeFileSync(standIn, '#!/bin/sh\necho "fake etcd: $*" >&2\nexit 3\n', { mode: 0o755 });
  const failed = await runMeshblock(args({}), { env: { MESHBLOCK_ETCD_BIN: standIn } });
  t.equal(failed.code, 3, 'etcd’s exit code is ours');
  t.match(failed.stderr, /fake etcd: --name m1 --data-dir \S+\/data\/etcd --listen-client-urls https:\/\/127\.0\.0\.1:1 /, 'etcd’s stderr is inherited');
  for (const flag of ['--client-cert-auth', '--peer-client-cert-auth', '--initial-cluster-token meshblock', '--initial-cluster-state new', '--auto-compaction-mode revision', '--auto-compaction-retention 1000', '--quota-backend-bytes 2147483648', '--max-request-bytes 1572864', '--heartbeat-interval 100', '--election-timeout 1000', '--pre-vote', '--logger zap', '--log-outputs stderr']) {
    t.match(failed.stderr, ` ${flag}`, `etcd runs with ${flag}`);
  }
  const existing = await runMeshblock(args({}, ['--existing']), { env: { MESHBLOCK_ETCD_BIN: standIn } });
  t.match(existing.stderr, ' --initial-cluster-state existing');
  t.equal(fs.statSync(path.join(dir, 'data')).mode & 0o777, 0o700, 'the data directory is 0700');
});

t.test('three members: client certificates, a member killed, restarted, replaced', async (t) => {
  const dir = t.testdir();
  const cluster = await startEtcdCluster(t, { members: 3, dir });
  t.equal(cluster.endpoints.length, 3);
  t.same(cluster.members.map((member) => member.name), ['mdm1', 'mdm2', 'mdm3']);
  for (const endpoint of cluster.endpoints) t.match(endpoint, /^https:\/\/127\.0\.0\.1:\d+$/);

  const client = etcdClient(cluster, 'mdm1');
  await client.put('meshblock/k1').value('v1');
  t.equal(await client.get('meshblock/k1').string(), 'v1', 'put/get with a client certificate');

  const tls = loadEtcdClientTls(cluster.pkiDir, 'mdm1');
  const bounded = { dialTimeout: 2000, defaultCallOptions: () => ({ deadline: Date.now() + 2000 }) };
  const noCertificate = new Etcd3({ hosts: cluster.endpoints, credentials: { rootCertificate: tls.ca }, ...bounded });
  t.teardown(() => noCertificate.close());
  await t.rejects(noCertificate.get('meshblock/k1').string(), 'a client without a certificate is refused');
  const otherPki = path.join(dir, 'other-pki');
  createEtcdPki(otherPki, { members: [], clients: ['mdm1'] });
  const other = loadEtcdClientTls(otherPki, 'mdm1');
  const otherCa = new Etcd3({ hosts: cluster.endpoints, credentials: { rootCertificate: tls.ca, certChain: other.cert, privateKey: other.key }, ...bounded });
  t.teardown(() => otherCa.close());
  await t.rejects(otherCa.get('meshblock/k1').string(), 'a client with a certificate of another CA is refused');

  const locked = await runMeshblock(memberArgs(cluster, 0));
  t.equal(locked.code, 1, 'a second etcd start on a data directory in use fails');
  t.match(locked.stderr.trim(), /^meshblock: \S+ is in use by process \d+ \(\S+etcd\.lock\)$/);

  // A host dies: meshblock etcd start and its etcd go at once.
  const { etcdPid } = cluster.members[2] as { etcdPid: number };
  t.equal(await cluster.kill(2, 'SIGKILL'), null);
  await until('etcd of mdm3 to be gone', async () => (gone(etcdPid) ? true : undefined), 5000);
  const survivors = etcdClient(cluster, 'mdm2', { endpoints: cluster.endpoints.slice(0, 2) });
  await survivors.put('meshblock/k2').value('v2');
  t.equal(await survivors.get('meshblock/k2').string(), 'v2', 'writable with one member of three down');

  await cluster.start(2);
  const restarted = etcdClient(cluster, 'mdm3', { endpoints: [cluster.endpoints[2] as string] });
  t.equal(await restarted.get('meshblock/k2').string(), 'v2', 'restarted from its data directory, it caught up');

  t.equal(await cluster.kill(1, 'SIGTERM'), 0, 'SIGTERM stops a member cleanly: exit 0');
  t.equal(cluster.members[1]?.pid, null);
  await cluster.start(1);

  await cluster.wipeAndReAdd(0);
  const replaced = etcdClient(cluster, 'etcdctl', { endpoints: [cluster.endpoints[0] as string] });
  t.equal(await replaced.get('meshblock/k1').string(), 'v1', 'the replaced member has what was written before it was wiped');
  t.equal(await replaced.get('meshblock/k2').string(), 'v2');
  await replaced.put('meshblock/k3').value('v3');
  t.equal(await restarted.get('meshblock/k3').string(), 'v3', 'and takes writes');
  const list = await cluster.etcdctl(['member', 'list', '-w', 'simple']);
  const lines = list.stdout.trim().split('\n');
  t.equal(lines.length, 3, 'still three members');
  for (const line of lines) t.match(line, /^[0-9a-f]+, started, mdm\d, https:\/\/127\.0\.0\.1:\d+, https:\/\/127\.0\.0\.1:\d+, false$/);

  await cluster.stopAll();
  t.same(cluster.members.map((member) => member.pid), [null, null, null], 'stopAll stops every member');
  // Started again one by one, as after a power cut: the first alone cannot be healthy.
  for (let index = 0; index < cluster.members.length; index++) await cluster.start(index);
  const again = etcdClient(cluster, 'mdm2');
  t.equal(await again.get('meshblock/k3').string(), 'v3', 'the whole cluster stopped and started from disk keeps its data');
});

t.test('five members: each serves, two may be down', async (t) => {
  const cluster = await startEtcdCluster(t, { members: 5, dir: t.testdir() });
  t.same(cluster.members.map((member) => member.name), ['mdm1', 'mdm2', 'mdm3', 'mdm4', 'mdm5']);
  const writer = etcdClient(cluster, 'mdm1');
  await writer.put('meshblock/five').value('yes');
  for (const [index, endpoint] of cluster.endpoints.entries()) {
    const reader = etcdClient(cluster, `mdm${index + 1}`, { endpoints: [endpoint] });
    t.equal(await reader.get('meshblock/five').string(), 'yes', `member ${index + 1} serves it`);
  }
  await cluster.kill(3, 'SIGKILL');
  await cluster.kill(4, 'SIGKILL');
  const survivors = etcdClient(cluster, 'etcdctl', { endpoints: cluster.endpoints.slice(0, 3) });
  await survivors.put('meshblock/five').value('still');
  t.equal(await survivors.get('meshblock/five').string(), 'still', 'writable with two of five down');
});
