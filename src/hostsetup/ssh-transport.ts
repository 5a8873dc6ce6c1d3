// The host modules over SSH: a HostTransport that reaches another host with ssh2. Everything
// is done with commands on the host (cat, mktemp + mv, cp), so one path serves root logins and
// sudo alike, and what runs there is what an administrator would type.
//
// Security:
//   - The host key is checked against a known_hosts file (OpenSSH's format, plain or hashed
//     host names, `[addr]:port` for other ports). An unknown host is refused with the key's
//     SHA256 fingerprint unless `acceptNewHostKey` (OpenSSH's StrictHostKeyChecking=accept-new),
//     which then records it; a host whose key differs from the recorded one is always refused.
//   - Passwords and private keys are never logged nor put in an error message or a label.
//   - A non-root login runs every command through `sudo -n` (no password prompt: it fails
//     with sudo's own message instead of hanging).

import { createHash, createHmac, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as Ssh2 from 'ssh2';
import type { ClientChannel, ConnectConfig } from 'ssh2';
import { InvalidArgumentError, MeshblockError } from '../common/errors.js';
import { lazyModule } from '../common/lazy-module.js';
import { backupStamp, runOutputBytesMax, shellQuote, runTimeoutMsDefault, type HostTransport, type RunOptions, type RunResult, type WriteOptions } from './host-transport.js';

/** Loaded by the commands that reach hosts over SSH (src/common/lazy-module.ts). */
const ssh2 = lazyModule<typeof Ssh2>('ssh2');

export const sshPortDefault = 22;
export const sshReadyTimeoutMs = 20_000;
/** The exit code our readFile script gives for a missing file (cat's own is 1 for any error). */
const missingFileCode = 3;

export class SshError extends MeshblockError {}

export interface SshTarget {
  user: string;
  host: string;
  port: number;
}

export interface SshCredentials {
  /** A private key (PEM/OpenSSH text). */
  privateKey?: string;
  passphrase?: string;
  password?: string;
}

export interface SshTransportOptions {
  target: SshTarget;
  credentials: SshCredentials;
  knownHostsFile: string;
  acceptNewHostKey?: boolean;
  /** How long the TCP connect and SSH handshake may take [sshReadyTimeoutMs]. */
  readyTimeoutMs?: number;
  now?: () => Date;
}

/** The key OpenSSH would offer first: ~/.ssh/id_ed25519, id_ecdsa, id_rsa (undefined: none). */
export function defaultIdentityFile(home = os.homedir()): string | undefined {
  return ['id_ed25519', 'id_ecdsa', 'id_rsa'].map((name) => path.join(home, '.ssh', name)).find((file) => fs.existsSync(file));
}

/** `user@host`, `user@host:port`, `user@[v6]:port`; the user defaults to root. */
export function parseSshTarget(field: string, text: string): SshTarget {
  const match = /^(?:([A-Za-z_][A-Za-z0-9_.-]*)@)?(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+))(?::([0-9]+))?$/.exec(text.trim());
  if (match === null) throw new InvalidArgumentError(field, `expected USER@HOST[:PORT], got '${text}'`);
  const port = match[4] === undefined ? sshPortDefault : Number(match[4]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new InvalidArgumentError(field, `port ${match[4]} is not 1 to 65535`);
  return { user: match[1] ?? 'root', host: (match[2] ?? match[3]) as string, port };
}

/** How known_hosts names a host: `addr`, or `[addr]:port` for a port other than 22. */
export function knownHostsName(target: Pick<SshTarget, 'host' | 'port'>): string {
  return target.port === sshPortDefault ? target.host : `[${target.host}]:${target.port}`;
}

export function fingerprintSha256(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

function hostPatternMatches(pattern: string, name: string): boolean {
  if (pattern.startsWith('|1|')) {
    const [, , salt, hash] = pattern.split('|');
    if (salt === undefined || hash === undefined) return false;
    return createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64') === hash;
  }
  return pattern.split(',').some((entry) => {
    if (entry.startsWith('!')) return false;
    const regex = new RegExp(`^${entry.replace(/[.+^${}()|\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
    return regex.test(name);
  });
}

export type HostKeyVerdict = { kind: 'known'; line: number } | { kind: 'unknown' } | { kind: 'changed'; line: number };

/** Looks the host's key up in known_hosts text. */
export function checkKnownHost(text: string, name: string, key: Buffer): HostKeyVerdict {
  const keyBase64 = key.toString('base64');
  let changedLine: number | null = null;
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index += 1) {
    const line = (lines[index] as string).trim();
    if (line === '' || line.startsWith('#')) continue;
    const fields = line.split(/\s+/);
    // An optional marker (@cert-authority, @revoked) comes first.
    const marker = fields[0]?.startsWith('@') === true ? fields.shift() : undefined;
    const [hosts, , blob] = fields;
    if (hosts === undefined || blob === undefined || !hostPatternMatches(hosts, name)) continue;
    if (marker === '@revoked' && blob === keyBase64) return { kind: 'changed', line: index + 1 };
    if (marker !== undefined) continue;
    if (blob === keyBase64) return { kind: 'known', line: index + 1 };
    changedLine ??= index + 1;
  }
  return changedLine === null ? { kind: 'unknown' } : { kind: 'changed', line: changedLine };
}

function keyTypeOf(key: Buffer): string {
  // The SSH wire form starts with the key type as a length-prefixed string.
  if (key.length < 4) return 'ssh-unknown';
  const length = key.readUInt32BE(0);
  return key.subarray(4, 4 + length).toString('ascii');
}

export { shellQuote };

export class SshTransport implements HostTransport {
  readonly label: string;
  private readonly client = new (ssh2().Client)();
  private readonly backups = new Map<string, string>();
  private readonly now: () => Date;
  private readonly sudo: boolean;
  private closed = false;

  private constructor(readonly target: SshTarget, now: () => Date) {
    this.label = `${target.user}@${knownHostsName(target)}`;
    this.now = now;
    this.sudo = target.user !== 'root';
  }

  /** Connects, checks the host key and logs in; every failure is one clear SshError. */
  static async connect(options: SshTransportOptions): Promise<SshTransport> {
    const transport = new SshTransport(options.target, options.now ?? (() => new Date()));
    await transport.open(options);
    return transport;
  }

  private open(options: SshTransportOptions): Promise<void> {
    const { target, credentials } = options;
    const name = knownHostsName(target);
    let hostKeyProblem: SshError | null = null;
    const config: ConnectConfig = {
      host: target.host,
      port: target.port,
      username: target.user,
      readyTimeout: options.readyTimeoutMs ?? sshReadyTimeoutMs,
      tryKeyboard: false,
      hostVerifier: (key: Buffer): boolean => {
        const text = fs.existsSync(options.knownHostsFile) ? fs.readFileSync(options.knownHostsFile, 'utf8') : '';
        const verdict = checkKnownHost(text, name, key);
        const fingerprint = fingerprintSha256(key);
        if (verdict.kind === 'known') return true;
        if (verdict.kind === 'changed') {
          hostKeyProblem = new SshError(
            'MB_ERR_SSH_HOST_KEY_CHANGED',
            `${name}: host key ${fingerprint} does not match ${options.knownHostsFile} line ${verdict.line}: refusing (someone may be in the middle; if the host was reinstalled, remove that line)`,
          );
          return false;
        }
        if (options.acceptNewHostKey !== true) {
          hostKeyProblem = new SshError(
            'MB_ERR_SSH_HOST_KEY_UNKNOWN',
            `${name}: unknown host key ${fingerprint} (${keyTypeOf(key)}), not in ${options.knownHostsFile}: check it and pass --accept-new-host-key, or add it with ssh-keyscan`,
          );
          return false;
        }
        fs.mkdirSync(path.dirname(options.knownHostsFile), { recursive: true, mode: 0o700 });
        fs.appendFileSync(options.knownHostsFile, `${name} ${keyTypeOf(key)} ${key.toString('base64')}\n`, { mode: 0o600 });
        return true;
      },
    };
    if (credentials.privateKey !== undefined) {
      config.privateKey = credentials.privateKey;
      if (credentials.passphrase !== undefined) config.passphrase = credentials.passphrase;
    }
    if (credentials.password !== undefined) config.password = credentials.password;
    if (credentials.privateKey === undefined && credentials.password === undefined) {
      return Promise.reject(new SshError('MB_ERR_SSH_NO_CREDENTIALS', `${this.label}: no key and no password to log in with`));
    }
    return new Promise((resolve, reject) => {
      const onError = (err: Error & { level?: string; code?: string }) => {
        this.client.removeListener('ready', onReady);
        this.closed = true;
        if (hostKeyProblem !== null) reject(hostKeyProblem);
        else if (err.level === 'client-authentication') reject(new SshError('MB_ERR_SSH_LOGIN', `${this.label}: login refused (${credentials.privateKey !== undefined ? 'key' : 'password'} not accepted)`));
        else if (err.level === 'client-timeout') reject(new SshError('MB_ERR_SSH_UNREACHABLE', `${this.label}: no SSH handshake within ${(options.readyTimeoutMs ?? sshReadyTimeoutMs) / 1000} s`));
        else if (err.code === 'ECONNREFUSED' || err.code === 'EHOSTUNREACH' || err.code === 'ENETUNREACH' || err.code === 'ETIMEDOUT' || err.code === 'ENOTFOUND') {
          reject(new SshError('MB_ERR_SSH_UNREACHABLE', `${this.label}: cannot reach ${name} (${err.code})`));
        } else if (err.message.includes('private key') || err.message.includes('Cannot parse')) {
          reject(new SshError('MB_ERR_SSH_KEY', `${this.label}: the private key cannot be used: ${err.message}`));
        } else reject(new SshError('MB_ERR_SSH', `${this.label}: ${err.message}`));
      };
      const onReady = () => {
        this.client.removeListener('error', onError);
        // Later errors (a dropped connection) fail the calls in progress, not the process.
        this.client.on('error', () => undefined);
        this.client.on('close', () => (this.closed = true));
        resolve();
      };
      this.client.once('error', onError);
      this.client.once('ready', onReady);
      try {
        this.client.connect(config);
      } catch (err) {
        onError(err as Error);
      }
    });
  }

  close(): void {
    this.closed = true;
    this.client.end();
  }

  /** Runs a shell command line on the host (through sudo for a non-root login). */
  private exec(commandLine: string, options: RunOptions = {}): Promise<RunResult> {
    if (this.closed) return Promise.reject(new SshError('MB_ERR_SSH_CLOSED', `${this.label}: the SSH connection is closed`));
    const line = this.sudo ? `sudo -n sh -c ${shellQuote(commandLine)}` : commandLine;
    const timeoutMs = options.timeoutMs ?? runTimeoutMsDefault;
    return new Promise((resolve, reject) => {
      this.client.exec(line, (err: Error | undefined, stream: ClientChannel) => {
        if (err !== undefined) {
          reject(new SshError('MB_ERR_SSH_EXEC', `${this.label}: cannot run a command: ${err.message}`));
          return;
        }
        const stdout: Buffer[] = [];
        const stderr: Buffer[] = [];
        let stdoutBytes = 0;
        let stderrBytes = 0;
        stream.on('data', (chunk: Buffer) => {
          if (stdoutBytes < runOutputBytesMax) stdout.push(chunk);
          stdoutBytes += chunk.length;
        });
        stream.stderr.on('data', (chunk: Buffer) => {
          if (stderrBytes < runOutputBytesMax) stderr.push(chunk);
          stderrBytes += chunk.length;
        });
        const timer = setTimeout(() => {
          stream.close();
          reject(new SshError('MB_ERR_HOST_RUN_TIMEOUT', `${this.label}: command did not finish within ${timeoutMs / 1000} s`));
        }, timeoutMs);
        stream.on('close', (code: number | null, signal?: string) => {
          clearTimeout(timer);
          resolve({ code: code ?? (signal !== undefined ? 128 : 255), stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8') });
        });
        stream.end(options.input ?? '');
      });
    });
  }

  run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    // `command -v` first so that a missing command is 127 like the local transport says.
    const words = [command, ...args].map(shellQuote).join(' ');
    return this.exec(`command -v ${shellQuote(command)} >/dev/null 2>&1 || { echo "${command.replace(/["$`\\]/g, '')}: command not found" >&2; exit 127; }; exec ${words}`, options);
  }

  async readFile(filePath: string): Promise<string | null> {
    const quoted = shellQuote(absolute(filePath));
    const result = await this.exec(`if [ -e ${quoted} ]; then exec cat -- ${quoted}; else exit ${missingFileCode}; fi`);
    if (result.code === missingFileCode) return null;
    if (result.code !== 0) throw new SshError('MB_ERR_HOST_READ', `${this.label}: cannot read ${filePath}: ${result.stderr.trim()}`);
    return result.stdout;
  }

  async exists(filePath: string): Promise<boolean> {
    return (await this.exec(`test -e ${shellQuote(absolute(filePath))}`)).code === 0;
  }

  async firstExisting(filePaths: readonly string[]): Promise<string | null> {
    const result = await this.exec(`for f in ${filePaths.map((filePath) => shellQuote(absolute(filePath))).join(' ')}; do if [ -e "$f" ]; then printf '%s' "$f"; exit 0; fi; done; exit 1`);
    return result.code === 0 ? result.stdout : null;
  }

  async writeFile(filePath: string, text: string, options: WriteOptions = {}): Promise<void> {
    const target = shellQuote(absolute(filePath));
    const directory = shellQuote(path.posix.dirname(absolute(filePath)));
    const base = path.posix.basename(filePath).replace(/[^A-Za-z0-9_.-]/g, '_');
    const mode = options.mode === undefined ? null : options.mode.toString(8);
    // Same directory, so the rename is atomic; synced before it replaces the old file.
    const script = [
      'set -e',
      `mkdir -p ${directory}`,
      `tmp=$(mktemp ${directory}/.${base}.meshblock-XXXXXX)`,
      `trap 'rm -f "$tmp"' EXIT`,
      'cat > "$tmp"',
      mode !== null
        ? `chmod ${mode} "$tmp"`
        : `if [ -e ${target} ]; then chmod --reference=${target} "$tmp"; chown --reference=${target} "$tmp" 2>/dev/null || true; else chmod 644 "$tmp"; fi`,
      'sync "$tmp" 2>/dev/null || sync',
      `mv -f "$tmp" ${target}`,
      'trap - EXIT',
    ].join('\n');
    const result = await this.exec(script, { input: text });
    if (result.code !== 0) throw new SshError('MB_ERR_HOST_WRITE', `${this.label}: cannot write ${filePath}: ${result.stderr.trim()}`);
  }

  async backup(filePath: string): Promise<string | null> {
    const known = this.backups.get(filePath);
    if (known !== undefined) return known;
    if (!(await this.exists(filePath))) return null;
    const stamp = backupStamp(this.now());
    const source = shellQuote(absolute(filePath));
    // The first free name (two runs in one second get a suffix), copied with mode and times.
    const script = `n=1; b=${source}.meshblock-${stamp}.bak; while [ -e "$b" ]; do n=$((n+1)); b=${source}.meshblock-${stamp}-$n.bak; done; cp -p -- ${source} "$b" && printf '%s' "$b"`;
    const result = await this.exec(script);
    if (result.code !== 0) throw new SshError('MB_ERR_HOST_BACKUP', `${this.label}: cannot back up ${filePath}: ${result.stderr.trim()}`);
    this.backups.set(filePath, result.stdout);
    return result.stdout;
  }

  /**
   * Copies a local file to the host: SFTP into /tmp under a random name (any login can), then
   * moved into place by a command (through sudo for a non-root login).
   */
  async upload(localPath: string, hostPath: string, mode = 0o644): Promise<void> {
    const target = absolute(hostPath);
    const staging = await this.stage(localPath);
    const result = await this.exec(
      `mkdir -p ${shellQuote(path.posix.dirname(target))} && chmod ${mode.toString(8)} ${staging} && mv -f ${staging} ${shellQuote(target)} || { rm -f ${staging}; exit 1; }`,
    );
    if (result.code !== 0) throw new SshError('MB_ERR_SSH_UPLOAD', `${this.label}: cannot put ${localPath} at ${hostPath}: ${result.stderr.trim()}`);
  }

  /**
   * Copies a local file into /tmp on the host under a random name, mode 0600, by SFTP alone
   * (no command, so no login shell started), and returns its path: for a caller whose next
   * command reads it there and removes it (the installer's unpacking), which saves upload()'s
   * own command. Owned by the login user; a non-root login's commands read it through sudo.
   */
  async stage(localPath: string): Promise<string> {
    const staging = `/tmp/.meshblock-upload-${randomBytes(8).toString('hex')}`;
    await new Promise<void>((resolve, reject) => {
      this.client.sftp((err, sftp) => {
        if (err !== undefined) return reject(new SshError('MB_ERR_SSH_SFTP', `${this.label}: no SFTP: ${err.message}`));
        sftp.fastPut(localPath, staging, { mode: 0o600 }, (putError) => {
          sftp.end();
          if (putError !== undefined && putError !== null) reject(new SshError('MB_ERR_SSH_UPLOAD', `${this.label}: cannot upload ${localPath}: ${putError.message}`));
          else resolve();
        });
      });
    });
    return staging;
  }
}

function absolute(filePath: string): string {
  if (!filePath.startsWith('/')) throw new SshError('MB_ERR_HOST_PATH', `host paths are absolute: '${filePath}'`);
  return path.posix.resolve(filePath);
}
