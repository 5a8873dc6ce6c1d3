// The runtime bundle runs where there is no C library but its own, and lends none of its
// libraries to the programs meshblock runs.
//
// `meshblock bundle` makes the tarball; it is unpacked into ROOT/opt/meshblock, where ROOT
// holds nothing else but busybox-static (a static shell and tools): no /lib, no /lib64, no
// loader, as on a host whose glibc is too old for this machine's Node, only more so. ROOT is
// entered with chroot from a private mount namespace (unshare -m) holding ROOT's /dev (a bind
// of this machine's), /proc and a tmpfs /tmp; the network namespace is this machine's, so
// clients here reach what runs there on loopback.
//
//   1. `meshblock --version` there, with an empty environment.
//   2. `meshblock lab up` there: an MDM, three SDSs on sparse files inside ROOT and an SDC,
//      each a Node child started through the bundle's loader (src/common/node-command.ts);
//      a volume made and mapped with the bundle's management CLI; fio here writes and
//      verifies it over NBD.
//   3. The bundle's etcd there: bin/etcd --version, then `meshblock etcd start` (a one-member
//      cluster, its PKI made here) running the bundle's etcd through the bundle's loader, and
//      an MDM of the bundle on it, up (its etcd session made).
//   4. The programs meshblock runs on its host get nothing of the bundle: the MDM runs
//      `openssl` for its certificate (a busybox script standing in for it, as ROOT has no C
//      library for a real one), which records its environment (no LD_LIBRARY_PATH, nothing
//      naming the bundle) and its own and its parent's /proc/PID/maps (the MDM's has the
//      bundle's libc, its own none of the bundle's files). Busybox being static proves little
//      about maps, so the same probe runs on this machine too, under the bundle's `host check`:
//      there it is dash, dynamically linked, and must load this machine's libc, not the
//      bundle's, while its parent (the bundle's Node) has the bundle's.
//
// Every process is stopped (lab down, then anything still running with ROOT as its root is
// killed) and the mount namespace ends with its holder: nothing is mounted outside it.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { createEtcdPki } from '../../src/mdm/etcd-pki.js';
import { orphanKill, run, runMeshblock, repoRoot, type RunResult, freePort } from '../helpers/processes.js';

const prefix = '/opt/meshblock';
const busyboxApplets = ['sh', 'cat', 'tr', 'env', 'readlink', 'dirname', 'sleep', 'ls'];
const version = (JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;

/** What the probe program recorded: its environment, its maps, its parent's maps. */
function readProbe(dir: string): { env: string[]; maps: string; parentMaps: string } {
  return {
    env: fs.readFileSync(path.join(dir, 'probe.env'), 'utf8').split('\n').filter((line) => line !== ''),
    maps: fs.readFileSync(path.join(dir, 'probe.maps'), 'utf8'),
    parentMaps: fs.readFileSync(path.join(dir, 'probe.parent-maps'), 'utf8'),
  };
}

/** The lines of a probe script that record what it was given into DIR. */
function probeLines(dir: string): string[] {
  return [
    `tr '\\0' '\\n' < /proc/$$/environ > ${dir}/probe.env`,
    `cat /proc/$$/maps > ${dir}/probe.maps`,
    `cat /proc/$PPID/maps > ${dir}/probe.parent-maps`,
  ];
}

/** Pids of processes whose root directory is ROOT (what runs in the chroot). */
function processesIn(root: string): number[] {
  const pids: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (fs.readlinkSync(`/proc/${name}/root`) === root) pids.push(Number(name));
    } catch {
      // gone, or a kernel thread
    }
  }
  return pids;
}

t.test('the runtime bundle in a root without a C library: --version, a cluster, fio; no library lent to host programs', { timeout: 420_000 }, async (t) => {
  const dir = t.testdir();
  const tarball = path.join(dir, 'meshblock-bundle.tar.gz');
  const built = await runMeshblock(['bundle', '--out', tarball], { timeoutMs: 120_000 });
  t.equal(built.code, 0, built.stderr);
  t.match(built.stdout, /bundle [0-9a-f]{16}, .* with \d+ shared libraries and its loader ld-linux-x86-64\.so\.2; etcd from \/usr\/bin\/etcd \(bin\/etcd\)/);

  const root = fs.realpathSync(fs.mkdtempSync(path.join(dir, 'root-')));
  const bundle = path.join(root, prefix);
  for (const sub of ['bin', 'usr/bin', 'dev', 'proc', 'tmp', 'lab', 'probe', prefix]) fs.mkdirSync(path.join(root, sub), { recursive: true });
  fs.copyFileSync('/bin/busybox', path.join(root, 'bin/busybox'));
  fs.chmodSync(path.join(root, 'bin/busybox'), 0o755);
  for (const applet of busyboxApplets) fs.symlinkSync('busybox', path.join(root, 'bin', applet));
  const unpacked = await run('tar', ['-xzf', tarball, '-C', bundle]);
  t.equal(unpacked.code, 0, unpacked.stderr);
  t.notOk(['lib', 'lib64', 'usr/lib'].some((sub) => fs.existsSync(path.join(root, sub))), 'the root has no library directory of its own');
  t.ok(fs.existsSync(path.join(bundle, 'lib/libc.so.6')) && fs.existsSync(path.join(bundle, 'lib/ld-linux-x86-64.so.2')), "the bundle's own libc and loader");
  t.ok(fs.readFileSync(path.join(bundle, 'lib/etcd')).equals(fs.readFileSync('/usr/bin/etcd')), "this machine's etcd in the bundle's lib/");

  await t.test("on this machine: a program run by the bundle's meshblock loads this machine's libc, its parent the bundle's", async (t) => {
    const hostRoot = t.testdir({ usr: { bin: {} } });
    fs.writeFileSync(path.join(hostRoot, 'usr/bin/openssl'), ['#!/bin/sh', ...probeLines(hostRoot), 'echo "OpenSSL 3.0.11 19 Sep 2023"', ''].join('\n'), { mode: 0o755 });
    const checked = await run(path.join(bundle, 'bin/meshblock'), ['host', 'check', '--root', hostRoot, '--only', 'prereqs'], { timeoutMs: 60_000 });
    t.match(checked.stdout, /OpenSSL 3\.0\.11/, `host check ran the probe: ${checked.stderr}`);
    const probe = readProbe(hostRoot);
    t.notOk(probe.env.some((line) => /^LD_(LIBRARY_PATH|PRELOAD)=/.test(line)), 'no LD_LIBRARY_PATH or LD_PRELOAD in its environment');
    t.notOk(probe.env.some((line) => line.includes(bundle)), 'nothing in its environment names the bundle');
    t.match(probe.maps, /\/libc\.so\.6\n/, 'the probe (dash) loads a libc...');
    t.notOk(probe.maps.includes(bundle), "...this machine's: none of the bundle's files");
    t.ok(probe.parentMaps.includes(`${bundle}/lib/libc.so.6`), "its parent, the bundle's Node, runs on the bundle's libc");
  });

  // The private mount namespace, held by a process that only sleeps: every command enters it.
  const holderArgv = [...orphanKill, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c',
    `mount --rbind /dev ${root}/dev && mount -t proc proc ${root}/proc && mount -t tmpfs tmpfs ${root}/tmp && echo ready && exec sleep 600`];
  const holder = spawn(holderArgv[0] as string, holderArgv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    // Anything the lab left behind is killed before the namespace goes with its holder.
    for (const pid of processesIn(root)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    holder.kill('SIGKILL');
  });
  const ready = await new Promise<string>((resolve) => {
    let said = '';
    holder.stdout.on('data', (chunk: Buffer) => {
      said += chunk.toString();
      if (said.includes('ready')) resolve('ready');
    });
    holder.stderr.on('data', (chunk: Buffer) => (said += chunk.toString()));
    holder.on('exit', () => resolve(said));
  });
  t.equal(ready, 'ready', 'the mount namespace is set up');
  if (ready !== 'ready') return;
  // A command inside ROOT, in the namespace, with nothing of this process's environment.
  const inRoot = (args: string[], timeoutMs = 60_000): Promise<RunResult> =>
    run('nsenter', ['-t', String(holder.pid), '-m', '--', 'chroot', root, '/bin/env', '-i', 'PATH=/bin:/usr/bin', ...args], { timeoutMs });
  const meshblock = (args: string[], timeoutMs?: number): Promise<RunResult> => inRoot([`${prefix}/bin/meshblock`, ...args], timeoutMs);

  await t.test('meshblock --version in the root', async (t) => {
    const result = await meshblock(['--version']);
    t.equal(result.code, 0, result.stderr);
    t.equal(result.stdout.trim(), version);
  });

  await t.test("the bundle's etcd in the root: bin/etcd --version", async (t) => {
    const result = await inRoot([`${prefix}/bin/etcd`, '--version']);
    t.equal(result.code, 0, result.stderr);
    t.match(result.stdout, /^etcd Version: 3\.\d+\.\d+\n/, 'etcd runs on the bundle\'s libc, through its loader');
  });

  await t.test('an MDM, three SDSs and an SDC from the bundle in the root; a volume made there, written and verified by fio from here', async (t) => {
    // The MDM makes its REST certificate with openssl: a pair made here, handed over by the probe.
    const made = await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=meshblock-mdm',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', path.join(root, 'probe/api.key'), '-out', path.join(root, 'probe/api.crt')]);
    t.equal(made.code, 0, made.stderr);
    fs.writeFileSync(
      path.join(root, 'usr/bin/openssl'),
      [
        '#!/bin/sh',
        '# Stands in for the host\'s openssl: records what meshblock gave it, then answers',
        '# req -x509 ... -keyout KEY -out CERT with the pair made outside.',
        ...probeLines('/probe'),
        'while [ $# -gt 0 ]; do',
        '  case $1 in -keyout) key=$2; shift ;; -out) cert=$2; shift ;; esac',
        '  shift',
        'done',
        'cat /probe/api.key > "$key" && cat /probe/api.crt > "$cert"',
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    const nbdPort = await freePort();
    t.teardown(async () => {
      await meshblock(['lab', 'down', '--dir', '/lab'], 60_000);
    });
    const up = await meshblock(['lab', 'up', '--dir', '/lab', '--detach', '--volume', 'vol1:1GiB', '--device-size', '2048MiB', '--nbd-port', String(nbdPort)], 120_000);
    t.equal(up.code, 0, `lab up: ${up.stderr}`);
    if (up.code !== 0) return;
    t.match(up.stdout, /lab \/lab is up: .* 3 SDSs/);

    // Every daemon is a Node child started through the bundle's loader.
    const daemons = processesIn(root).filter((pid) => fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('meshblock.cjs'));
    t.equal(daemons.length, 5, 'MDM, 3 SDSs, SDC running in the root');
    for (const pid of daemons) {
      t.equal(fs.readlinkSync(`/proc/${pid}/exe`), `${bundle}/lib/ld-linux-x86-64.so.2`, `pid ${pid} runs through the bundle's loader`);
      t.ok(fs.readFileSync(`/proc/${pid}/maps`, 'utf8').includes(`${bundle}/lib/libc.so.6`), `pid ${pid} has the bundle's libc`);
    }

    const added = await meshblock(['--dir', '/lab', 'volume', 'add', '--pool', 'sp1', '--name', 'vol2', '--size', '1GiB']);
    t.equal(added.code, 0, added.stderr);
    const mapped = await meshblock(['--dir', '/lab', 'volume', 'map', '--volume', 'vol2', '--sdc', 'sdc1']);
    t.equal(mapped.code, 0, mapped.stderr);
    const uri = `nbd://127.0.0.1:${nbdPort}/vol2`;
    // The mapping reaches the SDC with the MDM's next push.
    let info = await run('nbdinfo', [uri], { timeoutMs: 10_000 });
    for (const deadline = Date.now() + 15_000; info.code !== 0 && Date.now() < deadline; ) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      info = await run('nbdinfo', [uri], { timeoutMs: 10_000 });
    }
    t.equal(info.code, 0, `vol2 is exported: ${info.stderr}`);
    const fio = await run('fio', ['--name=bundle', '--ioengine=nbd', `--uri=${uri}`, '--rw=randrw', '--bs=64k', '--size=64m', '--iodepth=8', '--verify=crc32c', '--verify_fatal=1', '--output-format=terse'], { timeoutMs: 60_000 });
    t.equal(fio.code, 0, `fio wrote and verified vol2: ${fio.stderr}`);

    // The MDM ran openssl (the probe) for its certificate at its first start.
    const probe = readProbe(path.join(root, 'probe'));
    t.ok(probe.env.includes('PATH=/bin:/usr/bin'), 'the probe was run by meshblock, with its environment');
    t.notOk(probe.env.some((line) => /^LD_(LIBRARY_PATH|PRELOAD)=/.test(line)), 'no LD_LIBRARY_PATH or LD_PRELOAD');
    t.notOk(probe.env.some((line) => line.includes(prefix)), 'nothing in its environment names the bundle');
    t.notOk(probe.maps.includes(`${prefix}/lib/`), "none of the bundle's libraries in the program's maps");
    t.ok(probe.parentMaps.includes(`${prefix}/lib/libc.so.6`), "while its parent, the MDM, runs on the bundle's libc");
  });

  await t.test("a one-member etcd from the bundle's `etcd start` in the root, and an MDM on it", async (t) => {
    // The PKI is made here (createEtcdPki runs openssl, which the root has not); the member and
    // the MDM in the root only read it. The MDM's REST certificate comes from the openssl
    // stand-in the previous subtest wrote.
    const pki = path.join(root, 'pki');
    createEtcdPki(pki, { members: [{ name: 'm1', ips: ['127.0.0.1'] }], clients: ['m1'] });
    // An MDM of a cluster publishes its ports: fixed ones, free now.
    const [clientPort, peerPort, mdmPort, apiPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const inRootDetached = (name: string, args: string[]): { output: () => string; exited: () => boolean } => {
      const child = spawn('nsenter', ['-t', String(holder.pid), '-m', '--', 'chroot', root, '/bin/env', '-i', 'PATH=/bin:/usr/bin', `${prefix}/bin/meshblock`, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      let exited = false;
      child.on('exit', () => (exited = true));
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      t.teardown(() => void child.kill('SIGKILL'));
      t.comment(`${name}: nsenter pid ${child.pid}`);
      return { output: () => output, exited: () => exited };
    };
    const member = inRootDetached('etcd', ['etcd', 'start', '--data-dir', '/etcd', '--name', 'm1', '--client', `127.0.0.1:${clientPort}`, '--peer', `127.0.0.1:${peerPort}`,
      '--initial-cluster', `m1=https://127.0.0.1:${peerPort}`, '--pki', '/pki']);
    const mdm = inRootDetached('mdm', ['mdm', 'start', '--data-dir', '/mdm1', '--listen', `127.0.0.1:${mdmPort}`, '--api', `127.0.0.1:${apiPort}`, '--etcd', `https://127.0.0.1:${clientPort}`, '--etcd-pki', '/pki', '--mdm-name', 'm1']);
    for (const deadline = Date.now() + 120_000; !/"msg":"mdm ready"/.test(mdm.output()) && !mdm.exited() && !member.exited() && Date.now() < deadline; ) await new Promise((resolve) => setTimeout(resolve, 500));
    t.match(member.output(), /etcd member m1 \(etcd pid (\d+)\) started/);
    if (!t.match(mdm.output(), /"msg":"mdm ready"/, "the MDM is up on the bundle's etcd")) t.comment(`MDM: ${mdm.output().slice(-2000)}\netcd: ${member.output().slice(-2000)}`);
    const etcdPid = Number(/etcd pid (\d+)/.exec(member.output())?.[1]);
    if (etcdPid > 0) {
      t.equal(fs.readlinkSync(`/proc/${etcdPid}/exe`), `${bundle}/lib/ld-linux-x86-64.so.2`, "etcd runs through the bundle's loader");
      t.ok(fs.readFileSync(`/proc/${etcdPid}/cmdline`, 'utf8').includes(`\0${prefix}/lib/etcd\0`), "the bundle's etcd binary");
      t.ok(fs.readFileSync(`/proc/${etcdPid}/maps`, 'utf8').includes(`${bundle}/lib/libc.so.6`), "on the bundle's libc");
    }
  });
});
