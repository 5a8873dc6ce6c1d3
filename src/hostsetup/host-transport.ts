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
