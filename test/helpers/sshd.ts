// Real OpenSSH servers for the host-setup tests: Debian's sshd, one per simulated host (a
// network namespace with its own address, test/helpers/netns.ts), with its own host key,
// config and log in the test's directory. Root logs in with the test's key; password logins
// are on, so a wrong password is refused by sshd itself. The hosts share this machine's
// filesystem (only the network is namespaced): what a module writes over SSH can be read
// back directly.

import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
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
