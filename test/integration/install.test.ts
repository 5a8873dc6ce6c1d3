// `meshblock install --csv` against three real hosts: each a network namespace with its own
// address running Debian's sshd, in a mount namespace of its own where /opt, /etc/meshblock,
// /etc/lvm, /etc/modprobe.d, /etc/modules-load.d, /etc/systemd/system, /usr/local/bin,
// /var/lib/meshblock, /var/log/meshblock and /run/meshblock are the host's own directories
// (the rest of the filesystem is this machine's). The installer logs in with a key, checks
// host keys, uploads the runtime bundle (meshblock, Node with its own loader and libraries), applies the host modules, writes units,
// starts the MDM, SDSs and SDCs, and sets up the pool; the test then reads and writes the
// volume over NBD on one host, and runs the installer again to see it change nothing.
//
// Host 3 has no Node.js (/usr/bin/node is /dev/null there): query does not count that against
// it, and the SDC and SDS it runs use the runtime bundle the installer ships (every host's
// daemons do, through the bundle's loader; its SDS shards too).
//
// systemd is not running in these hosts, so the installer takes the SysV path: each daemon
// is an init script /etc/init.d/meshblock-ROLE (service-units.ts), enabled with chkconfig and
// started by it; the daemons' pids are the scripts' pid files, and the script's status says
// so. Debian has no chkconfig, and the scripts must be registered with it as on CentOS.
//
// The SDC runs `sdc start --attach-mapped` (mapped volumes appear as /dev/nbdN with by-id
// names). These hosts share this machine's kernel, which has no nbd module: the SDC's log says
// so in one warning and it serves the volume over NBD all the same, which is what host 3's
// reads and writes go through. (The attach itself runs in the QEMU guest: vm-attach.test.ts.)
//
// Mocked, because it cannot happen here: `modprobe` (this kernel has no nbd module) and
// `chkconfig` (Debian has none) are stubs in each host's /usr/local/bin that record their
// arguments.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { createSimNetwork, type SimNetwork } from '../helpers/netns.js';
import { run, runMeshblock } from '../helpers/processes.js';
import { startInstallHosts } from '../helpers/sshd.js';

const GiB = 1024 * 1024 * 1024;

t.test('install --csv: three hosts over real SSH, a cluster serving a volume at the end', { timeout: 1_500_000 }, async (t) => {
  const network = await createSimNetwork(t, 3, { names: ['xen1', 'xen2', 'xen3'] });
  if ('unavailable' in network) {
    t.fail(`no simulated network: ${network.unavailable}`);
    return;
  }
  const net: SimNetwork = network;
  if (fs.existsSync('/sys/module/nbd')) {
    // The hosts share this kernel: host 3's SDC (--attach-mapped) would attach this machine's own /dev/nbdN.
    t.fail('this machine has the nbd kernel module loaded; the install hosts share its kernel: run this test where nbd is not loaded');
    return;
  }
  const dir = t.testdir();
  // Host 3 has no Node.js: the installer must bring its own runtime.
  const { roots, key } = await startInstallHosts(t, net, dir, { withoutNode: [2] });
  for (const root of roots) {
    fs.writeFileSync(path.join(root, 'usr/local/bin/chkconfig'), `#!/bin/sh\necho "$*" >> ${path.join(root, 'chkconfig.calls')}\n`, { mode: 0o755 });
  }
  // A second device on every host: the install runs each SDS as two shards, one device each.
  for (const root of roots) {
    fs.writeFileSync(path.join(root, 'disk1'), '');
    fs.truncateSync(path.join(root, 'disk1'), 4 * GiB);
  }
  const devicesOf = (index: number): string => ['disk0', 'disk1'].map((disk) => path.join(roots[index] as string, disk)).join(';');
  const csv = path.join(dir, 'cluster.csv');
  fs.writeFileSync(
    csv,
    [
      'IPs,Username,Password,Operating System,Is MDM/TB,MDM IPs,Is SDS,SDS Name,SDS All IPs,Protection Domain,Fault Set,SDS Device List,StoragePool List,Is SDC,SDC Name',
      ...net.hosts.map((host, index) => `${host.address},root,,debian,${index === 0 ? 'Master' : ''},,Yes,sds${index + 1},,pd1,,${devicesOf(index)},sp1,${index === 2 ? 'Yes' : 'No'},${index === 2 ? 'sdc3' : ''}`),
      '',
    ].join('\n'),
  );
  const knownHosts = path.join(dir, 'known_hosts');
  const common = ['install', '--csv', csv, '--identity', key.privateKeyFile, '--known-hosts', knownHosts];

  await t.test('unknown host keys are refused before anything is done', async (t) => {
    const result = await runMeshblock([...common, '--dry-run'], { timeoutMs: 60_000 });
    t.equal(result.code, 1, result.stderr);
    t.match(result.stderr, /row 2\).*unknown host key SHA256:/);
    t.notOk(fs.existsSync(path.join(roots[0] as string, 'opt/meshblock')));
  });

  await t.test('--dry-run queries the hosts and says what it would do', async (t) => {
    const result = await runMeshblock([...common, '--accept-new-host-key', '--dry-run', '--volume', 'vol1:1GiB'], { timeoutMs: 300_000 });
    t.equal(result.code, 0, result.stderr);
    t.match(result.stdout, /== query/);
    t.match(result.stdout, new RegExp(`${net.hosts[0]?.address} \\(row 2\\): .*roles mdm, sds`));
    t.match(result.stdout, /would do \(dry run: nothing was changed\)/);
    t.match(result.stdout, /lvm-filter: edit \/etc\/lvm\/lvm.conf/);
    t.match(result.stdout, /start meshblock sds start --name sds2/);
    t.notMatch(result.stdout, /\(row 4\): [^\n]*prereqs: /, 'host 3 has no Node.js, and needs none: the runtime bundle brings its own');
    // The host's cores, read over SSH (nproc): half of them, at most one shard per device (two).
    const auto = Math.max(1, Math.min(2, Math.floor(os.availableParallelism() / 2)));
    const shardText = auto === 1 ? 'sds1 as one process' : `in ${auto} shards sds1\\.1\\.\\.sds1\\.${auto}`;
    t.match(result.stdout, new RegExp(`\\(row 2\\): .*; SDS ${shardText} \\(auto: ${os.availableParallelism()} core\\(s\\), 2 device\\(s\\)\\);`));
    t.equal(fs.readFileSync(knownHosts, 'utf8').trim().split('\n').length, 3, 'the three host keys were recorded');
    t.notOk(fs.existsSync(path.join(roots[0] as string, 'opt/meshblock')), 'nothing uploaded');
    t.equal(fs.readFileSync(path.join(roots[0] as string, 'etc/lvm/lvm.conf'), 'utf8'), fs.readFileSync('/etc/lvm/lvm.conf', 'utf8'), 'lvm.conf unchanged');
  });

  await t.test('the whole install in two shards per SDS host, then a volume read and written over NBD on host 3', async (t) => {
    const result = await runMeshblock([...common, '--volume', 'vol1:1GiB', '--sds-shards', '2'], { timeoutMs: 480_000 });
    t.equal(result.code, 0, `install exits 0: ${result.stderr}`);
    if (result.code !== 0) t.comment(result.stdout);
    for (const phase of ['query', 'upload', 'install', 'configure']) t.match(result.stdout, `== ${phase}`);
    t.match(result.stdout, /cluster [0-9a-f]{16} configured: MDM on .*, 3 SDS\(s\) in 6 shards, 1 SDC\(s\)/);

    for (const root of roots) {
      t.ok(fs.existsSync(path.join(root, 'opt/meshblock/lib/node')) && fs.existsSync(path.join(root, 'opt/meshblock/lib/ld-linux-x86-64.so.2')), `${root}: the runtime bundle shipped, Node with its own loader`);
      t.match(fs.readFileSync(path.join(root, 'etc/lvm/lvm.conf'), 'utf8'), /\n\ttypes = \[ "nbd", 16 \]\n/, 'LVM accepts NBD devices');
      t.ok(fs.readdirSync(path.join(root, 'etc/lvm')).some((name) => /^lvm\.conf\.meshblock-\d{8}T\d{6}\.bak$/.test(name)), 'lvm.conf backed up first');
      t.match(fs.readFileSync(path.join(root, 'modprobe.calls'), 'utf8'), /nbd nbds_max=16 max_part=16/);
      t.match(fs.readFileSync(path.join(root, 'etc/init.d/meshblock-sds'), 'utf8'), /\n\texec \/usr\/local\/bin\/meshblock sds start --name (sds\d) .*--shards 2 --host \1\b/, 'an init script for the SDS, in two shards labelled with its host');
      t.notOk(fs.existsSync(path.join(root, 'etc/systemd/system/meshblock-sds.service')), 'no systemd unit on a host without systemd');
      t.match(fs.readFileSync(path.join(root, 'chkconfig.calls'), 'utf8'), /^--add meshblock-sds\nmeshblock-sds on\n/m, 'registered with chkconfig (a stub here)');
      t.same(fs.readdirSync(path.join(root, 'var/lib/meshblock/sds')).filter((name) => name.startsWith('shard-')).sort(), ['shard-1', 'shard-2'], 'two shard data directories');
    }
    t.match(fs.readFileSync(path.join(roots[0] as string, 'etc/init.d/meshblock-mdm'), 'utf8'), /\n\texec \/usr\/local\/bin\/meshblock mdm start /);
    t.match(fs.readFileSync(path.join(roots[2] as string, 'etc/init.d/meshblock-sdc'), 'utf8'), /\n\texec \/usr\/local\/bin\/meshblock sdc start --mdm .* --attach-mapped\n/, "the SDC's init script attaches mapped volumes");
    t.match(result.stdout, new RegExp(`\\(row 2\\): meshblock mdm started \\(SysV init: /etc/init\\.d/meshblock-mdm; at boot: chkconfig --add meshblock-mdm\\)`), 'the installer says which init system, per host');
    // The daemons run under their init scripts: status (run on the host, over its sshd's namespaces) names the pid in the pid file.
    for (const [index, role] of [[0, 'mdm'], [1, 'sds'], [2, 'sdc']] as const) {
      const sshdPid = fs.readFileSync(path.join(roots[index] as string, 'sshd/sshd.pid'), 'utf8').trim();
      const status = await run('nsenter', ['-t', sshdPid, '-m', '-n', '--', `/etc/init.d/meshblock-${role}`, 'status'], { timeoutMs: 30_000 });
      const pid = fs.readFileSync(path.join(roots[index] as string, `run/meshblock/${role}.pid`), 'utf8').trim();
      t.equal(status.code, 0, `host ${index + 1}: meshblock-${role} status: ${status.stdout}${status.stderr}`);
      t.equal(status.stdout.trim(), `meshblock-${role} is running (pid ${pid})`);
    }

    // On host 3 (the SDC's), as a user there would: its loopback, its NBD export.
    const uri = 'nbd://127.0.0.1:10809/vol1';
    // The mapping reaches the SDC in the MDM's next push, which may come just after install returns.
    let info = await net.exec(2, 'nbdinfo', ['--json', uri], { timeoutMs: 30_000 });
    for (const deadline = Date.now() + 30_000; info.code !== 0 && Date.now() < deadline; ) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      info = await net.exec(2, 'nbdinfo', ['--json', uri], { timeoutMs: 30_000 });
    }
    t.equal(info.code, 0, info.stderr);
    // ScaleIO's rule, kept: volume sizes round up to the pool's granularity (8 GiB).
    t.equal((JSON.parse(info.stdout) as { exports: Array<{ 'export-size': number }> }).exports[0]?.['export-size'], 8 * GiB);
    const pattern = path.join(dir, 'pattern.bin');
    fs.writeFileSync(pattern, Buffer.from(Array.from({ length: 8 * 1024 * 1024 }, (_, index) => (index * 131) & 0xff)));
    const write = await net.exec(2, 'nbdcopy', [pattern, uri], { timeoutMs: 60_000 });
    t.equal(write.code, 0, write.stderr);
    const readBack = path.join(dir, 'read.bin');
    const read = await net.exec(2, 'sh', ['-c', `nbdcopy ${uri} - | head -c ${8 * 1024 * 1024} > ${readBack}`], { timeoutMs: 60_000 });
    t.equal(read.code, 0, read.stderr);
    t.ok(fs.readFileSync(readBack).equals(fs.readFileSync(pattern)), 'the volume reads back what was written');

    // No nbd on host 3: its SDC said why it attached nothing (stderr, in the init script's log), and served the volume meanwhile (above).
    const sdcLog = path.join(roots[2] as string, 'var/log/meshblock/sdc.log');
    const warned = /this host cannot attach mapped volumes as disks: [^"]*; the SDC goes on serving the mapped volumes over NBD at 127\.0\.0\.1:10809; trying again every \d+ s/;
    for (const deadline = Date.now() + 60_000; !warned.test(fs.readFileSync(sdcLog, 'utf8')) && Date.now() < deadline; ) await new Promise((resolve) => setTimeout(resolve, 500));
    const logText = fs.readFileSync(sdcLog, 'utf8');
    t.match(logText, warned, "the SDC's log says why nothing is attached");
    t.equal(logText.split('\n').filter((line) => line.includes('cannot attach mapped volumes')).length, 1, 'said once, not at every retry');
    t.notOk(fs.existsSync(path.join(roots[2] as string, 'run/meshblock/attachments')) && fs.readdirSync(path.join(roots[2] as string, 'run/meshblock/attachments')).length > 0, 'no attachment recorded');
  });

  await t.test('running it again changes nothing', async (t) => {
    const lvmBefore = fs.readFileSync(path.join(roots[1] as string, 'etc/lvm/lvm.conf'), 'utf8');
    const result = await runMeshblock([...common, '--volume', 'vol1:1GiB'], { timeoutMs: 300_000 });
    t.equal(result.code, 0, result.stderr);
    t.match(result.stdout, /bundle [0-9a-f]{16} already in \/opt\/meshblock/);
    t.match(result.stdout, /meshblock sds already running \(SysV init: /);
    t.match(result.stdout, /\(row 3\): .*; SDS in 2 shards sds2\.1\.\.sds2\.2 \(as installed\);/, 'the installed unit decides the shard count');
    t.notMatch(result.stdout, /created |added |mapped /, 'no object created twice');
    t.equal(fs.readFileSync(path.join(roots[1] as string, 'etc/lvm/lvm.conf'), 'utf8'), lvmBefore);
  });

  await t.test('a host nobody answers on stops the run with its row', async (t) => {
    await net.cut(1);
    t.teardown(() => net.heal(1));
    const result = await runMeshblock([...common, '--phase', 'query'], { timeoutMs: 120_000 });
    t.equal(result.code, 1);
    t.match(result.stderr, new RegExp(`${net.hosts[1]?.address.replace(/\./g, '\\.')} \\(row 3\\): `));
  });
});
