// `meshblock install --csv` of a 3-node MDM cluster on three real hosts (each a network
// namespace with its own address running Debian's sshd, with its own /opt, /etc/meshblock,
// /var/lib/meshblock, /run/meshblock...: test/helpers/sshd.ts startInstallHosts), and the
// cluster surviving the death of its Master there. The CSV is `--template 3`-shaped: host 1
// Master, host 2 Slave, host 3 Tie-Breaker, each also an SDS and an SDC. What it proves:
//
// - install: an etcd member on each host (Debian's etcd, TLS with the PKI made here), MDMs on
//   hosts 1 and 2 with their REST APIs on their own addresses, one REST certificate and one
//   admin password (made here, in --state-dir) on both; the cluster reports ThreeNodes,
//   ClusteredNormal, Master mdm1, Slave mdm2, Tie-Breaker tb1, to a client on this machine
//   given both APIs; a REST client given only the Slave's API is answered by the Master.
// - failover: with the project's verifying writer on the volume through host 3's SDC, kill -9
//   the Master's MDM on host 1 (its pid file): host 2's API reports mdm2 Master (the time is
//   reported), the writer went on meanwhile, a management change succeeds (a volume added
//   and mapped, then served on host 3), and the writer saw no IO error and no wrong byte
//   across the kill, and everything it wrote reads back.
// - running the installer again restarts the killed MDM (with the cluster's admin password,
//   which it checks), which rejoins as a Slave: ClusteredNormal again, nothing created twice.
// - stopping: killing the daemons' pids (as teardown does) leaves no process behind in the
//   hosts, etcd included (it runs under `setpriv --pdeathsig KILL`).
//
// The SDC's NBD server listens on its host's loopback, as installed; the writer, which runs
// here, reaches it through a plain TCP forwarder inside host 3 (on the host's address).
// Mocked, because it cannot happen here: as in install.test.ts, `modprobe` (a stub) and
// systemd (not running in these hosts: the daemons run under SysV init scripts, with pid files).

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import type { MdmClusterView } from '../../src/mdm/cluster-member.js';
import { answeredByHeader } from '../../src/mdm/rest-api.js';
import { until } from '../helpers/cluster.js';
import { createSimNetwork, type SimNetwork } from '../helpers/netns.js';
import { run, runMeshblock } from '../helpers/processes.js';
import { basic, call } from '../helpers/rest.js';
import { killInstalledDaemons, startInstallHosts } from '../helpers/sshd.js';
import { startVerifier, summary } from '../helpers/verifier.js';

const MiB = 1024 * 1024;
/** Where the forwarder to host 3's SDC listens, on host 3's address. */
const forwardPort = 10810;

t.test('install --csv: a 3-node MDM cluster on three hosts over SSH survives kill -9 of its Master', { timeout: 1_500_000 }, async (t) => {
  const network = await createSimNetwork(t, 3, { names: ['mdm1', 'mdm2', 'tb1'] });
  if ('unavailable' in network) {
    t.fail(`no simulated network: ${network.unavailable}`);
    return;
  }
  const net: SimNetwork = network;
  const dir = t.testdir();
  const { roots, key } = await startInstallHosts(t, net, dir);
  const address = (index: number): string => net.hosts[index]?.address as string;
  const roles = ['Master', 'Slave', 'TB'];
  const csv = path.join(dir, 'cluster.csv');
  fs.writeFileSync(
    csv,
    [
      'IPs,Username,Password,Operating System,Is MDM/TB,MDM IPs,Is SDS,SDS Name,SDS All IPs,Protection Domain,Fault Set,SDS Device List,StoragePool List,Is SDC,SDC Name',
      ...net.hosts.map((host, index) => `${host.address},root,,debian,${roles[index]},,Yes,sds${index + 1},,pd1,,${path.join(roots[index] as string, 'disk0')},sp1,Yes,sdc${index + 1}`),
      '',
    ].join('\n'),
  );
  const stateDir = path.join(dir, 'state');
  const install = ['install', '--csv', csv, '--identity', key.privateKeyFile, '--known-hosts', path.join(dir, 'known_hosts'), '--accept-new-host-key', '--state-dir', stateDir, '--volume', 'vol1:1GiB'];
  const apis = [0, 1].map((index) => `https://${address(index)}:8443`);
  /** The management CLI from this machine, as the installer's last line says. */
  const manage = (args: string[], api = apis.join(',')) =>
    runMeshblock([...args, '--api', api, '--ca-cert', path.join(stateDir, 'api', 'api.crt'), '--password-file', path.join(stateDir, 'admin.password')], { timeoutMs: 60_000 });
  const queryCluster = async (api?: string): Promise<MdmClusterView> => {
    const result = await manage(['mdm', 'cluster', '--json'], api);
    if (result.code !== 0) throw new Error(`mdm cluster failed: ${result.stderr}`);
    return JSON.parse(result.stdout) as MdmClusterView;
  };

  await t.test('the install: etcd on every host, MDMs on the Master and Slave hosts, one certificate and password on both', async (t) => {
    const startedAt = Date.now();
    const result = await runMeshblock(install, { timeoutMs: 600_000 });
    t.equal(result.code, 0, `install exits 0: ${result.stderr}`);
    if (result.code !== 0) t.comment(result.stdout);
    t.comment(`install took ${Date.now() - startedAt} ms`);
    // What the run cost each host in SSH commands (sshd logs each session at LogLevel VERBOSE).
    t.comment(`SSH sessions per host for the first install: ${roots.map((root) => sshSessionCount(root)).join(', ')}`);
    t.match(result.stdout, new RegExp(`cluster [0-9a-f]{16} configured: MDM cluster of 3 \\(Master mdm1 on ${address(0)}, Slave mdm2 on ${address(1)}, TB tb1 on ${address(2)}\\), 3 SDS\\(s\\), 3 SDC\\(s\\)`));
    t.match(result.stdout, `manage it from here or any MDM host: meshblock dashboard --api ${apis.join(',')} --ca-cert ${path.join(stateDir, 'api', 'api.crt')}`);
    for (const [index, root] of roots.entries()) {
      t.ok(fs.existsSync(path.join(root, 'run/meshblock/etcd.pid')), `host ${index + 1}: an etcd member`);
      t.equal(fs.existsSync(path.join(root, 'run/meshblock/mdm.pid')), index < 2, `host ${index + 1}: ${index < 2 ? 'an' : 'no'} MDM`);
      const unit = path.join(root, 'etc/init.d/meshblock-mdm');
      if (index === 2) continue;
      t.match(fs.readFileSync(unit, 'utf8'), `--api ${address(index)}:8443 `, `host ${index + 1}: its MDM's API on its own address`);
      t.equal(fs.readFileSync(path.join(root, 'etc/meshblock/api.crt'), 'utf8'), fs.readFileSync(path.join(stateDir, 'api', 'api.crt'), 'utf8'), `host ${index + 1}: the shared REST certificate`);
      t.equal(fs.readFileSync(path.join(root, 'etc/meshblock/admin.password'), 'utf8'), fs.readFileSync(path.join(stateDir, 'admin.password'), 'utf8'), `host ${index + 1}: the admin password`);
    }
    t.notOk(fs.existsSync(path.join(roots[2] as string, 'etc/meshblock/api.key')), 'nothing of the MDMs on the TB host');
  });

  await t.test('the cluster: ThreeNodes, ClusteredNormal, Master mdm1 (through either API)', async (t) => {
    for (const api of apis) {
      const view = await until(`a whole cluster through ${api}`, async () => {
        const current = await queryCluster(api).catch(() => null);
        return current?.clusterState === 'ClusteredNormal' ? current : undefined;
      }, 60_000);
      t.equal(view.clusterMode, 'ThreeNodes');
      t.equal(view.master?.name, 'mdm1', 'the Master row runs the Master (the installer starts it first)');
      t.same(view.slaves.map((mdm) => mdm.name), ['mdm2']);
      t.same(view.tieBreakers.map((member) => member.name), ['tb1']);
      t.equal(view.goodNodesNum, 3);
    }
    // A REST client given only the Slave's API: its requests are forwarded to the Master over
    // the hosts' network (the Slave trusts the certificate the Master published in etcd).
    const slaveApi = { url: apis[1] as string, ca: fs.readFileSync(path.join(stateDir, 'api', 'api.crt')) };
    const password = fs.readFileSync(path.join(stateDir, 'admin.password'), 'utf8').trim();
    const loggedIn = await call(slaveApi, 'GET', '/api/login', { authorization: basic('admin', password) });
    t.equal(loggedIn.status, 200, `logged in through the Slave: ${loggedIn.text}`);
    const volumes = await call(slaveApi, 'GET', '/api/types/Volume/instances', { token: loggedIn.body as string });
    t.equal(volumes.status, 200, volumes.text);
    t.equal(volumes.headers[answeredByHeader], 'mdm1', "the Slave's API answered with the Master's reply");
    t.same((volumes.body as Array<{ name: string }>).map((volume) => volume.name), ['vol1']);
  });

  await t.test('kill -9 the Master on host 1 under IO: mdm2 takes over, management goes on, no IO fails', async (t) => {
    // The SDC on host 3 serves NBD on that host's loopback; a forwarder there lets the writer reach it.
    const forwarder = spawn(
      'ip',
      [
        'netns', 'exec', net.hosts[2]?.netns as string, process.execPath, '-e',
        `const net = require('node:net');
         net.createServer((client) => {
           const sdc = net.connect(10809, '127.0.0.1');
           client.pipe(sdc).pipe(client);
           client.on('error', () => sdc.destroy());
           sdc.on('error', () => client.destroy());
           client.on('close', () => sdc.destroy());
           sdc.on('close', () => client.destroy());
         }).listen(${forwardPort}, '${address(2)}', () => console.log('listening'));`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    t.teardown(() => void forwarder.kill('SIGKILL'));
    await new Promise<void>((resolve, reject) => {
      forwarder.stdout.once('data', () => resolve());
      forwarder.once('exit', (code) => reject(new Error(`the forwarder exited (${code})`)));
    });
    const writer = await startVerifier({ host: address(2), port: forwardPort, exportName: 'vol1', regionBytes: 64 * MiB, depth: 8, reconnectTimeoutMs: 120_000, log: (line) => t.comment(line) });
    t.teardown(() => writer.destroy());
    t.ok(await writer.waitForWrites(300, 60_000), 'the writer is under way');

    const pid = Number(fs.readFileSync(path.join(roots[0] as string, 'run/meshblock/mdm.pid'), 'utf8').trim());
    const writesAtKill = writer.stats().writes;
    const killedAt = Date.now();
    process.kill(pid, 'SIGKILL');
    const took = await until(
      "mdm2 to be Master, answering host 2's API",
      async () => ((await queryCluster(apis[1]).catch(() => null))?.master?.name === 'mdm2' ? Date.now() - killedAt : undefined),
      60_000,
    );
    const writesAtTakeover = writer.stats().writes;
    t.comment(`failover: kill -9 of the Master's MDM to host 2's API reporting mdm2 Master took ${took} ms; the writer made ${writesAtTakeover - writesAtKill} writes meanwhile`);
    t.ok(writesAtTakeover > writesAtKill, 'IO went on while there was no Master');
    t.ok(took < 30_000, `mdm2 is Master within 30 s (took ${took} ms)`);
    const view = await queryCluster(apis[1]);
    t.equal(view.clusterState, 'ClusteredDegraded', 'degraded: the old Master is gone');
    t.same(view.slaves.map((mdm) => `${mdm.name} ${mdm.status}`), ['mdm1 Disconnected']);

    // A change through the CLI given both APIs: host 1's refuses connections, host 2's commits.
    const added = await manage(['volume', 'add', '--pool', 'sp1', '--name', 'vol2', '--size', '1GiB']);
    t.equal(added.code, 0, `a volume added under the new Master: ${added.stderr}`);
    const mapped = await manage(['volume', 'map', '--volume', 'vol2', '--sdc', 'sdc3']);
    t.equal(mapped.code, 0, `and mapped: ${mapped.stderr}`);
    const listed = JSON.parse((await manage(['volume', 'list', '--json'], apis[1])).stdout) as Array<{ name: string }>;
    t.same(listed.map((volume) => volume.name).sort(), ['vol1', 'vol2']);
    const info = await until('vol2 exported by sdc3', async () => {
      const result = await net.exec(2, 'nbdinfo', ['--size', 'nbd://127.0.0.1:10809/vol2'], { timeoutMs: 30_000 });
      return result.code === 0 ? result.stdout.trim() : undefined;
    }, 60_000);
    t.ok(Number(info) > 0, `the new volume is served on host 3 (${info} bytes)`);

    t.ok(await writer.waitForWrites(writesAtKill + 1000, 60_000), 'the writer went on writing after the kill');
    const stats = await writer.verifyAll();
    t.comment(summary(stats));
    t.equal(stats.ioErrors, 0, 'no IO error across the kill');
    t.equal(stats.verifyFailureCount, 0, 'every acknowledged write reads back');
    t.equal(stats.fatal, null, 'the writer never gave up');
    t.ok(stats.verifiedBlocks > 0, `the whole region read back (${stats.verifiedBlocks} blocks)`);
  });

  await t.test('running the installer again brings the killed MDM back as a Slave', async (t) => {
    const startedAt = Date.now();
    const result = await runMeshblock(install, { timeoutMs: 600_000 });
    t.equal(result.code, 0, `install exits 0: ${result.stderr}`);
    if (result.code !== 0) t.comment(result.stdout);
    t.comment(`the second run took ${Date.now() - startedAt} ms`);
    t.match(result.stdout, new RegExp(`${address(0).replace(/\./g, '\\.')} \\(row 2\\): meshblock mdm started`), "host 1's MDM started again");
    t.match(result.stdout, /meshblock etcd already running/);
    t.notMatch(result.stdout, /created |added |mapped |admin password made/, 'nothing created twice');
    const view = await until('mdm1 back as a Slave', async () => {
      const current = await queryCluster().catch(() => null);
      return current?.clusterState === 'ClusteredNormal' ? current : undefined;
    }, 60_000);
    t.equal(view.master?.name, 'mdm2', 'mdm2 stays Master');
    t.same(view.slaves.map((mdm) => `${mdm.name} ${mdm.status}`), ['mdm1 Normal']);
  });

  await t.test("killing the daemons' pids leaves nothing running in the hosts, etcd included", async (t) => {
    const etcdPids = async (index: number): Promise<number[]> => {
      const listed = await run('ip', ['netns', 'pids', net.hosts[index]?.netns as string]);
      return listed.stdout
        .split('\n')
        .map(Number)
        // The bundle's etcd runs through the bundle's loader: its comm is the loader's name.
        .filter((pid) => pid > 0 && readCmdline(pid).includes('/opt/meshblock/lib/etcd\0'));
    };
    for (const index of [0, 1, 2]) t.equal((await etcdPids(index)).length, 1, `host ${index + 1}: etcd runs`);
    for (const root of roots) killInstalledDaemons(root);
    for (const index of [0, 1, 2]) {
      const left = await until(`host ${index + 1}'s etcd to go`, async () => ((await etcdPids(index)).length === 0 ? true : undefined), 10_000).catch(() => false);
      t.ok(left, `host ${index + 1}: its etcd died with its meshblock etcd start`);
    }
  });
});

/** The SSH sessions (commands, SFTP) the host's sshd has started so far: it logs each at LogLevel VERBOSE. */
function sshSessionCount(hostRoot: string): number {
  return (fs.readFileSync(path.join(hostRoot, 'sshd', 'sshd.log'), 'utf8').match(/Starting session: /g) ?? []).length;
}

function readCmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}
