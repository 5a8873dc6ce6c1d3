// The seam between the host modules and the host they work on. A module reads and writes the
// host's files and runs its commands only through a HostTransport, so the same module runs on
// this machine (LocalTransport, here) or over SSH (a transport of its own, later) unchanged.
//
// Paths are the host's absolute paths (`/etc/lvm/lvm.conf`). LocalTransport resolves them
// under a root directory (`--root DIR`, default `/`), which is how the tests point the modules
// at a copy of a real host's files. A command given by absolute path is resolved under the
// root too (a stub `DIR/usr/bin/xe` is what runs for `/usr/bin/xe`); a bare command name runs
// from this machine's PATH whatever the root: the root holds files, it is not a chroot. Modules
// that query the system look their tools up under the root first (findTool in host-module.ts).

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { MeshblockError } from '../common/errors.js';

/** A command that does not exit within this is killed: it hangs, it is not slow. */
export const runTimeoutMsDefault = 60_000;
/** Output kept per stream; past it the rest is dropped (a runaway command, not data we need). */
export const runOutputBytesMax = 4 * 1024 * 1024;
/** The exit code a shell gives for a command it cannot find; run() reports ENOENT the same way. */
export const commandNotFoundCode = 127;

export class TransportError extends MeshblockError {}

export interface RunOptions {
  /** Written to the command's stdin, which is then closed (no input: closed at once). */
  input?: string;
  timeoutMs?: number;
}

export interface RunResult {
  /** The exit code; `commandNotFoundCode` when the command does not exist. */
  code: number;
  stdout: string;
  stderr: string;
}

export interface WriteOptions {
  /** Permission bits for the file; default: the replaced file's, else 0644. */
  mode?: number;
}

export interface HostTransport {
  /** What this transport reaches, for messages: `this machine`, `this machine, root /tmp/x`. */
  readonly label: string;
  /** The file's text, or null when it does not exist. */
  readFile(filePath: string): Promise<string | null>;
  /**
   * Replaces the file atomically (a temporary file in the same directory, then rename), with
   * the old file's owner and mode unless `mode` is given; creates missing parent directories.
   */
  writeFile(filePath: string, text: string, options?: WriteOptions): Promise<void>;
  exists(filePath: string): Promise<boolean>;
  run(command: string, args: readonly string[], options?: RunOptions): Promise<RunResult>;
  /**
   * Copies the file to `PATH.meshblock-YYYYMMDDTHHMMSS.bak` (UTC) the first time it is called
   * for that path on this transport, and returns the copy's path; later calls return the same
   * copy, so a file edited twice in one run is backed up as it was before the run. Null when
   * the file does not exist (nothing to keep).
   */
  backup(filePath: string): Promise<string | null>;
  /**
   * The first of `filePaths` that exists, or null. Optional: a transport where each look is
   * a round trip (SSH) answers it in one; others fall back to exists() one by one.
   */
  firstExisting?(filePaths: readonly string[]): Promise<string | null>;
}

/** Quotes one word for a POSIX shell, only where the shell needs it (commas are plain). */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(word) ? word : `'${word.replace(/'/g, "'\\''")}'`;
}

/** `20250314T093000` for the backup names: sorts by time, no characters a shell minds. */
export function backupStamp(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, '');
}

function errnoCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

export class LocalTransport implements HostTransport {
  readonly root: string;
  readonly label: string;
  private readonly backups = new Map<string, string>();
  private readonly now: () => Date;

  constructor(options: { root?: string; now?: () => Date } = {}) {
    this.root = path.resolve(options.root ?? '/');
    this.label = this.root === '/' ? 'this machine' : `this machine, root ${this.root}`;
    this.now = options.now ?? (() => new Date());
  }

  /**
   * The local path of a host path. `..` cannot climb above the root (path.resolve against `/`
   * first); symbolic links inside the root are followed as the kernel would, which is the
   * limit of a root that is not a chroot.
   */
  resolve(hostPath: string): string {
    if (!path.isAbsolute(hostPath)) throw new TransportError('MB_ERR_HOST_PATH', `host paths are absolute: '${hostPath}'`);
    return path.join(this.root, path.resolve('/', hostPath));
  }

  async readFile(filePath: string): Promise<string | null> {
    try {
      return await fs.readFile(this.resolve(filePath), 'utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return null;
      throw new TransportError('MB_ERR_HOST_READ', `cannot read ${filePath}: ${(err as Error).message}`, { cause: err });
    }
  }

  async exists(filePath: string): Promise<boolean> {
    try {
      await fs.access(this.resolve(filePath));
      return true;
    } catch {
      return false;
    }
  }

  async writeFile(filePath: string, text: string, options: WriteOptions = {}): Promise<void> {
    const target = this.resolve(filePath);
    const directory = path.dirname(target);
    const temporary = path.join(directory, `.${path.basename(target)}.meshblock-${randomBytes(4).toString('hex')}.tmp`);
    try {
      await fs.mkdir(directory, { recursive: true, mode: 0o755 });
      const previous = await fs.stat(target).catch((err: unknown) => {
        if (errnoCode(err) === 'ENOENT') return null;
        throw err;
      });
      const mode = options.mode ?? (previous === null ? 0o644 : previous.mode & 0o7777);
      const handle = await fs.open(temporary, 'wx', mode);
      try {
        await handle.writeFile(text, 'utf8');
        // The mode again: open() applies the umask, and a config file's mode matters.
        await handle.chmod(mode);
        if (previous !== null && process.getuid?.() === 0) await handle.chown(previous.uid, previous.gid);
        // On disk before it replaces the old file, so a crash leaves one or the other whole.
        await handle.sync();
      } finally {
        await handle.close();
      }
      await fs.rename(temporary, target);
    } catch (err) {
      await fs.rm(temporary, { force: true });
      throw new TransportError('MB_ERR_HOST_WRITE', `cannot write ${filePath}: ${(err as Error).message}`, { cause: err });
    }
  }

  async backup(filePath: string): Promise<string | null> {
    const known = this.backups.get(filePath);
    if (known !== undefined) return known;
    const source = this.resolve(filePath);
    if (!(await this.exists(filePath))) return null;
    const stamp = backupStamp(this.now());
    // Two runs within one second: a suffix rather than overwriting the older copy.
    for (let attempt = 1; attempt < 100; attempt += 1) {
      const hostBackup = `${filePath}.meshblock-${stamp}${attempt === 1 ? '' : `-${attempt}`}.bak`;
      try {
        await fs.copyFile(source, this.resolve(hostBackup), fs.constants.COPYFILE_EXCL);
        this.backups.set(filePath, hostBackup);
        return hostBackup;
      } catch (err) {
        if (errnoCode(err) === 'EEXIST') continue;
        throw new TransportError('MB_ERR_HOST_BACKUP', `cannot back up ${filePath}: ${(err as Error).message}`, { cause: err });
      }
    }
    throw new TransportError('MB_ERR_HOST_BACKUP', `cannot back up ${filePath}: 99 backups from ${stamp} already exist`);
  }

  run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    const executable = path.isAbsolute(command) ? this.resolve(command) : command;
    const timeoutMs = options.timeoutMs ?? runTimeoutMsDefault;
    return new Promise((resolve, reject) => {
      const child = spawn(executable, [...args], { stdio: ['pipe', 'pipe', 'pipe'] });
      const stdout: Buffer[] = [];
      const stderr: Buffer[] = [];
      const collect = (into: Buffer[]) => {
        let bytes = 0;
        return (chunk: Buffer) => {
          if (bytes < runOutputBytesMax) into.push(chunk.subarray(0, runOutputBytesMax - bytes));
          bytes += chunk.length;
        };
      };
      child.stdout.on('data', collect(stdout));
      child.stderr.on('data', collect(stderr));
      // A command that exits without reading its input closes the pipe first: not an error.
      child.stdin.on('error', () => undefined);
      child.stdin.end(options.input ?? '');
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, timeoutMs);
      child.on('error', (err) => {
        clearTimeout(timer);
        if (errnoCode(err) === 'ENOENT') resolve({ code: commandNotFoundCode, stdout: '', stderr: `${command}: command not found` });
        else if (errnoCode(err) === 'EACCES') resolve({ code: 126, stdout: '', stderr: `${command}: permission denied` });
        else reject(new TransportError('MB_ERR_HOST_RUN', `cannot run ${command}: ${err.message}`, { cause: err }));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (timedOut) {
          reject(new TransportError('MB_ERR_HOST_RUN_TIMEOUT', `${command} did not finish within ${timeoutMs / 1000} s and was killed`));
          return;
        }
        // Killed by a signal: the shell's convention, 128 + the signal's number.
        const signalCode = signal === null ? 0 : 128 + (os.constants.signals[signal] ?? 0);
        resolve({ code: code ?? signalCode, stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8') });
      });
    });
  }
}

/** What a read-ahead found at a path: a readable regular file's text, or only whether it exists. */
type ReadAhead = { kind: 'file'; text: string } | { kind: 'exists' } | { kind: 'missing' };

/**
 * A HostTransport that answers readFile, exists and firstExisting from what one command read
 * ahead (readAhead), and asks the host only for the rest. The host modules' checks and plans
 * read the same few files over and over (each module finds out the host's OS: os-release and
 * the XenServer markers; the tools' paths; lvm.conf; the nbd module's files), and over SSH
 * each read is a command of its own, paying the login shell's start-up every time.
 *
 * What was read ahead holds while nothing changes the host: writeFile keeps the cache right
 * for the file it writes, and run() empties it, unless `readOnly` is set (the caller runs only
 * commands that change nothing: host module checks and plans, as dry-run relies on).
 */
export class ReadAheadTransport implements HostTransport {
  readonly label: string;
  /** Set while only read-only commands run: run() then keeps what was read ahead. */
  readOnly = false;
  private readonly known = new Map<string, ReadAhead>();

  constructor(readonly inner: HostTransport) {
    this.label = inner.label;
  }

  /**
   * Reads these files, and whether these other paths exist (tools: their text is no one's
   * business, and a binary may be large), in one command; what a later read finds here costs
   * no command.
   */
  async readAhead(filePaths: readonly string[], existsPaths: readonly string[] = []): Promise<void> {
    const allPaths = [...filePaths, ...existsPaths];
    if (allPaths.length === 0) return;
    const marker = `@@meshblock-${randomBytes(6).toString('hex')}@@`;
    const script = [
      ...filePaths.map((filePath) => {
        const quoted = shellQuote(filePath);
        // A newline after the text, whatever its end: taken off again below.
        return `printf '%s\\n' '${marker}'; if [ -f ${quoted} ] && [ -r ${quoted} ]; then echo file; cat -- ${quoted} && echo; elif [ -e ${quoted} ]; then echo exists; else echo missing; fi`;
      }),
      ...existsPaths.map((filePath) => `printf '%s\\n' '${marker}'; if [ -e ${shellQuote(filePath)} ]; then echo exists; else echo missing; fi`),
      `printf '%s\\n' '${marker}'`,
    ].join('\n');
    const result = await this.inner.run('sh', ['-c', script], { timeoutMs: runTimeoutMsDefault });
    // Nothing learnt is no error: the reads then go to the host one by one, as without this.
    if (result.code !== 0) return;
    const sections = result.stdout.split(`${marker}\n`).slice(1, allPaths.length + 1);
    if (sections.length !== allPaths.length) return;
    for (const [index, section] of sections.entries()) {
      const filePath = allPaths[index] as string;
      if (section.startsWith('file\n') && section.endsWith('\n')) this.known.set(filePath, { kind: 'file', text: section.slice('file\n'.length, -1) });
      else if (section === 'exists\n') this.known.set(filePath, { kind: 'exists' });
      else if (section === 'missing\n') this.known.set(filePath, { kind: 'missing' });
    }
  }

  /** Drops what was read ahead: the next reads ask the host. */
  forget(): void {
    this.known.clear();
  }

  async readFile(filePath: string): Promise<string | null> {
    const known = this.known.get(filePath);
    if (known?.kind === 'file') return known.text;
    if (known?.kind === 'missing') return null;
    return this.inner.readFile(filePath);
  }

  async exists(filePath: string): Promise<boolean> {
    const known = this.known.get(filePath);
    if (known !== undefined) return known.kind !== 'missing';
    return this.inner.exists(filePath);
  }

  async firstExisting(filePaths: readonly string[]): Promise<string | null> {
    if (filePaths.every((filePath) => this.known.has(filePath))) return filePaths.find((filePath) => this.known.get(filePath)?.kind !== 'missing') ?? null;
    if (this.inner.firstExisting !== undefined) return this.inner.firstExisting(filePaths);
    for (const filePath of filePaths) if (await this.inner.exists(filePath)) return filePath;
    return null;
  }

  async writeFile(filePath: string, text: string, options?: WriteOptions): Promise<void> {
    this.known.delete(filePath);
    await this.inner.writeFile(filePath, text, options);
    this.known.set(filePath, { kind: 'file', text });
  }

  run(command: string, args: readonly string[], options?: RunOptions): Promise<RunResult> {
    if (!this.readOnly) this.known.clear();
    return this.inner.run(command, args, options);
  }

  async backup(filePath: string): Promise<string | null> {
    const copy = await this.inner.backup(filePath);
    if (copy !== null) this.known.delete(copy);
    return copy;
  }
}
