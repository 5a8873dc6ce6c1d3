// Real OpenSSH servers for the host-setup tests: Debian's sshd, one per simulated host (a
// network namespace with its own address, test/helpers/netns.ts), with its own host key,
// config and log in the test's directory. Root logs in with the test's key; password logins
// are on, so a wrong password is refused by sshd itself. The hosts share this machine's
// filesystem (only the network is namespaced): what a module writes over SSH can be read
// back directly.

import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { SimNetwork } from './netns.js';
import { run, type TeardownHost } from './processes.js';

export const sshdBinary = '/usr/sbin/sshd';

export interface SshKeyPair {
  privateKeyFile: string;
  privateKey: string;
  publicKey: string;
}

export interface SshdHandle {
  address: string;
  port: number;
  /** The host's public key line (`ssh-ed25519 AAAA...`). */
  hostPublicKey: string;
  /** `ssh-keygen -lf` of the host key: `SHA256:...`. */
  hostFingerprint: string;
  log(): string;
  process: ChildProcess;
  stop(): Promise<void>;
}

export async function sshKeyPair(dir: string, name: string): Promise<SshKeyPair> {
  const file = path.join(dir, name);
  const result = await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', file]);
  if (result.code !== 0) throw new Error(`ssh-keygen failed: ${result.stderr}`);
  return { privateKeyFile: file, privateKey: fs.readFileSync(file, 'utf8'), publicKey: fs.readFileSync(`${file}.pub`, 'utf8').trim() };
}

/**
 * Starts sshd inside `netns` on `address`:`port`, accepting `authorizedKeys` for root. With
 * `binds`, sshd (and so every session of it) runs in a mount namespace of its own where each
 * `[source, target]` directory is bind-mounted over `target`: the host's own /opt, /etc/...
 * while the rest of the filesystem stays this machine's.
 */
export async function startSshd(
  t: TeardownHost,
  dir: string,
  netns: string,
  address: string,
  authorizedKeys: string[],
  port = 22,
  binds: Array<[string, string]> = [],
): Promise<SshdHandle> {
  fs.mkdirSync(dir, { recursive: true });
  // sshd's privilege separation directory (Debian's service would create it).
  fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const hostKey = path.join(dir, 'ssh_host_ed25519_key');
  if (!fs.existsSync(hostKey)) {
    const keygen = await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `host ${address}`, '-f', hostKey]);
    if (keygen.code !== 0) throw new Error(`ssh-keygen failed: ${keygen.stderr}`);
  }
  const authorized = path.join(dir, 'authorized_keys');
  fs.writeFileSync(authorized, `${authorizedKeys.join('\n')}\n`, { mode: 0o600 });
  const config = path.join(dir, 'sshd_config');
  const logFile = path.join(dir, 'sshd.log');
  fs.writeFileSync(
    config,
    [
      `ListenAddress ${address}:${port}`,
      `HostKey ${hostKey}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${authorized}`,
      'PermitRootLogin yes',
      'PasswordAuthentication yes',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      // The test directory's parents belong to the test runner, not to root alone.
      'StrictModes no',
      'LogLevel VERBOSE',
      'Subsystem sftp internal-sftp',
      '',
    ].join('\n'),
  );
  const sshdLine = [sshdBinary, '-D', '-f', config, '-E', logFile];
  const quote = (word: string) => `'${word.replace(/'/g, "'\\''")}'`;
  const argv =
    binds.length === 0
      ? ['netns', 'exec', netns, ...sshdLine]
      : [
          'netns', 'exec', netns, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c',
          [...binds.map(([source, target]) => `{ [ -e ${quote(target)} ] || mkdir -p ${quote(target)}; } && mount --bind ${quote(source)} ${quote(target)}`), `exec ${sshdLine.map(quote).join(' ')}`].join(' && '),
        ];
  const child = spawn('ip', argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  t.teardown(stop);
  const log = () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '') + stderr;
  const deadline = Date.now() + 15_000;
  while (!/Server listening on/.test(log())) {
    if (child.exitCode !== null) throw new Error(`sshd exited (${child.exitCode}): ${log()}`);
    if (Date.now() > deadline) throw new Error(`sshd did not start listening: ${log()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const hostPublicKey = fs.readFileSync(`${hostKey}.pub`, 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');
  const fingerprint = await run('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${hostKey}.pub`]);
  const hostFingerprint = /SHA256:\S+/.exec(fingerprint.stdout)?.[0] ?? '';
  return { address, port, hostPublicKey, hostFingerprint, log, process: child, stop };
}

/**
 * The directories an install test's host has of its own: bind-mounted over this machine's
 * in the mount namespace of the host's sshd (and so of everything the installer runs there).
 */
export const installHostDirs = ['/opt', '/etc/meshblock', '/etc/lvm', '/etc/modprobe.d', '/etc/modules-load.d', '/etc/systemd/system', '/usr/local/bin', '/var/lib/meshblock', '/var/log/meshblock', '/run/meshblock',
  // The SysV init scripts and their boot links (no systemd runs in these hosts): never this machine's.
  '/etc/init.d', ...['0', '1', '2', '3', '4', '5', '6'].map((level) => `/etc/rc${level}.d`)];

export interface InstallHosts {
  /** Each host's directory here: ROOT/opt is its /opt, and so on; ROOT/disk0 its SDS device. */
  roots: string[];
  key: SshKeyPair;
}

/**
 * Hosts for `meshblock install`, one per host of `net`: Debian's sshd in the host's network
 * namespace, in a mount namespace where installHostDirs are the host's own (ROOT/...); lvm.conf
 * copied from this machine; `modprobe` a stub in the host's /usr/local/bin recording its
 * arguments in ROOT/modprobe.calls (this kernel has no nbd module); a sparse 4 GiB file
 * ROOT/disk0 for the SDS; empty root shell start-up files, as a fresh host has (sshd runs
 * every command through bash, which reads ~/.bashrc). Hosts whose index is in `withoutNode`
 * have no Node.js (/usr/bin/node is /dev/null there). Teardown kills every daemon the
 * installer started (killInstalledDaemons).
 */
export async function startInstallHosts(t: TeardownHost, net: SimNetwork, dir: string, options: { withoutNode?: number[] } = {}): Promise<InstallHosts> {
  const key = await sshKeyPair(dir, 'id_installer');
  const roots: string[] = [];
  for (const [index, host] of net.hosts.entries()) {
    const root = path.join(dir, `host${index + 1}`);
    roots.push(root);
    for (const hostDir of installHostDirs) fs.mkdirSync(path.join(root, hostDir), { recursive: true });
    fs.cpSync('/etc/lvm', path.join(root, 'etc/lvm'), { recursive: true });
    fs.writeFileSync(path.join(root, 'usr/local/bin/modprobe'), `#!/bin/sh\necho "$*" >> ${path.join(root, 'modprobe.calls')}\n`, { mode: 0o755 });
    const device = path.join(root, 'disk0');
    fs.writeFileSync(device, '');
    fs.truncateSync(device, 4 * 1024 * 1024 * 1024);
    t.teardown(() => void killInstalledDaemons(root));
    fs.writeFileSync(path.join(root, 'bashrc'), '');
    const binds: Array<[string, string]> = [...installHostDirs.map((hostDir): [string, string] => [path.join(root, hostDir), hostDir]), [path.join(root, 'bashrc'), '/root/.bashrc']];
    if (options.withoutNode?.includes(index) === true) binds.push(['/dev/null', '/usr/bin/node']);
    await startSshd(t, path.join(root, 'sshd'), host.netns, host.address, [key.publicKey], 22, binds);
  }
  return { roots, key };
}

/**
 * SIGKILL to every daemon the installer started detached on a host (the pids in its
 * /run/meshblock/*.pid); returns them. An etcd member goes with its `meshblock etcd start`:
 * etcd runs under `setpriv --pdeathsig KILL`.
 */
/** The pids whose parent is `pid` (from /proc/PID/stat). */
function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const entry of fs.readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      // pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) children.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return children;
}

export function killInstalledDaemons(hostRoot: string): number[] {
  const runDir = path.join(hostRoot, 'run/meshblock');
  if (!fs.existsSync(runDir)) return [];
  const killed: number[] = [];
  for (const name of fs.readdirSync(runDir).filter((entry) => entry.endsWith('.pid'))) {
    const pid = Number(fs.readFileSync(path.join(runDir, name), 'utf8').trim());
    // An SDS in shards is a supervisor and its shard processes: they go too.
    for (const each of pid > 1 ? [pid, ...childrenOf(pid)] : []) {
      try {
        process.kill(each, 'SIGKILL');
        killed.push(each);
      } catch {
        // already gone
      }
    }
  }
  return killed;
}
