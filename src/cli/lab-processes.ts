// The lab's daemons as processes: started detached (their own process group, so that Ctrl-C
// in the lab's terminal reaches the lab, which then stops them in order), stdout and stderr
// appended to DIR/logs/NAME.log, ready when their ready line appears there; stopped with
// SIGTERM, then SIGKILL after a bound. A recorded pid is only signalled while it is still the
// daemon the lab started: /proc/PID/cmdline must name meshblock and the daemon's data
// directory, so a pid recycled by the kernel is never signalled.

import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { nodeCommand } from '../common/node-command.js';
import { LabError, type LabProcess, type LabRole } from './lab-state.js';
import { shutdownDrainMs } from './signals.js';

/** The meshblock command the daemons run: the same installation as the lab's own. */
export const meshblockEntry = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/meshblock.cjs');

/** A daemon's ready line must appear in its log within this. */
export const daemonReadyTimeoutMs = 30_000;
/** SIGTERM gives a daemon its drain time and a margin before SIGKILL. */
export const daemonStopTimeoutMs = shutdownDrainMs + 5_000;
/** After SIGKILL, the kernel takes this long at most to reap it. */
export const daemonKillTimeoutMs = 5_000;
const pollIntervalMs = 100;
/** A failure message quotes this many of the log's last lines. */
const logTailLinesMax = 3;
/** ...read from at most this many bytes of its end. */
const logTailBytesMax = 64 * 1024;

export interface StartedDaemon {
  pid: number;
  /** The ready line's match. */
  ready: RegExpExecArray;
  child: ChildProcess;
}

export interface DaemonSpec {
  name: string;
  /** Arguments of `meshblock`, e.g. ['mdm', 'start', ...]. */
  args: string[];
  logFile: string;
  cwd: string;
  ready: RegExp;
  timeoutMs?: number;
}

/**
 * Starts `meshblock ARGS` detached and resolves once `ready` matches what it wrote to its
 * log in this run. A daemon that exits or stays silent is reported with its log's last lines
 * (and killed, if still there).
 */
export async function startDaemon(spec: DaemonSpec): Promise<StartedDaemon> {
  fs.mkdirSync(path.dirname(spec.logFile), { recursive: true });
  const fd = fs.openSync(spec.logFile, 'a', 0o600);
  let child: ChildProcess;
  let offsetBytes: number;
  try {
    fs.writeSync(fd, `--- meshblock lab: ${new Date().toISOString()} starting ${spec.name}: meshblock ${spec.args.join(' ')}\n`);
    offsetBytes = fs.fstatSync(fd).size;
    const node = nodeCommand();
    child = spawn(node.command, [...node.args, meshblockEntry, ...spec.args], { cwd: spec.cwd, detached: true, stdio: ['ignore', fd, fd] });
  } finally {
    // The child has its own descriptors now.
    fs.closeSync(fd);
  }
  const ended: { how: string | null } = { how: null };
  child.once('exit', (code, signal) => (ended.how = signal !== null ? `was killed by ${signal}` : `exited with code ${code}`));
  child.once('error', (err) => (ended.how = `could not be started: ${err.message}`));
  child.unref();

  const timeoutMs = spec.timeoutMs ?? daemonReadyTimeoutMs;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const written = readFrom(spec.logFile, offsetBytes);
    const ready = spec.ready.exec(written);
    if (ready !== null && child.pid !== undefined) return { pid: child.pid, ready, child };
    if (ended.how !== null) throw new LabError('MB_ERR_LAB_START', `${spec.name} ${ended.how} before it was ready: ${logTail(spec.logFile, offsetBytes)} (log: ${spec.logFile})`);
    if (Date.now() > deadline) {
      signalGroup(child.pid, 'SIGKILL');
      throw new LabError('MB_ERR_LAB_START', `${spec.name} was not ready within ${timeoutMs / 1000} s: ${logTail(spec.logFile, offsetBytes)} (log: ${spec.logFile})`);
    }
    await sleep(pollIntervalMs);
  }
}

function readFrom(file: string, offsetBytes: number): string {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const sizeBytes = fs.fstatSync(fd).size;
      const buffer = Buffer.alloc(Math.max(0, sizeBytes - offsetBytes));
      const readBytes = fs.readSync(fd, buffer, 0, buffer.length, offsetBytes);
      return buffer.subarray(0, readBytes).toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}

/** A daemon whose port was taken between the lab's layout and its start moves this many times at most. */
export const labPortRetriesMax = 3;

/**
 * Starts a daemon with `start`; when it could not listen because a port found free when the
 * lab was laid out is taken since (another lab starting beside this one), `move` gives it
 * free ones (and records them) and it is started again, at most labPortRetriesMax times.
 */
export async function startMovable(start: () => Promise<StartedDaemon>, move: () => Promise<void>): Promise<StartedDaemon> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await start();
    } catch (err) {
      if (attempt >= labPortRetriesMax || !(err instanceof Error) || !err.message.includes('EADDRINUSE')) throw err;
      await move();
    }
  }
}

/**
 * The log's last lines since `offsetBytes`, on one line: pino's JSON lines reduced to their
 * message and error, so that the cause reads in a terminal.
 */
export function logTail(file: string, offsetBytes = 0): string {
  let sizeBytes = 0;
  try {
    sizeBytes = fs.statSync(file).size;
  } catch {
    return 'no log';
  }
  const text = readFrom(file, Math.max(offsetBytes, sizeBytes - logTailBytesMax));
  const lines = text.split('\n').map((line) => line.trim()).filter((line) => line !== '').slice(-logTailLinesMax).map(readableLogLine);
  return lines.length === 0 ? 'nothing logged' : lines.join(' | ');
}

function readableLogLine(line: string): string {
  if (!line.startsWith('{')) return line;
  try {
    const entry = JSON.parse(line) as { msg?: unknown; err?: { message?: unknown } };
    const message = typeof entry.msg === 'string' ? entry.msg : line;
    return typeof entry.err?.message === 'string' ? `${message}: ${entry.err.message}` : message;
  } catch {
    return line;
  }
}

function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // Gone already.
  }
}

/**
 * Whether `record`'s pid is still the daemon the lab started: alive, and its command line
 * names meshblock and the daemon's data directory. A zombie has an empty command line.
 */
export function isDaemonRunning(record: Pick<LabProcess, 'pid' | 'dataDir'>): boolean {
  const pid = record.pid;
  if (pid === null || !Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  let cmdline: string;
  try {
    cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    // No /proc (not Linux): the signal check is all there is.
    return true;
  }
  return cmdline.includes('meshblock') && cmdline.split('\0').includes(record.dataDir);
}

/** How each daemon ended: it stopped on SIGTERM, needed SIGKILL, or was not running. */
export type StopOutcome = 'stopped' | 'killed' | 'not running';

/**
 * Stops the daemons in dependency order (the SDC, the SDSs, the MDMs, the etcd members), each tier in
 * parallel: SIGTERM, wait up to daemonStopTimeoutMs, then SIGKILL to its process group.
 */
export async function stopDaemons(records: readonly LabProcess[], onStopped: (record: LabProcess, outcome: StopOutcome) => void): Promise<void> {
  const tiers: LabRole[][] = [['sdc'], ['sds'], ['mdm'], ['etcd']];
  for (const roles of tiers) {
    await Promise.all(records.filter((record) => roles.includes(record.role)).map(async (record) => onStopped(record, await stopDaemon(record))));
  }
}

async function stopDaemon(record: LabProcess): Promise<StopOutcome> {
  if (!isDaemonRunning(record)) return 'not running';
  const pid = record.pid as number;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return 'stopped';
  }
  if (await gone(record, daemonStopTimeoutMs)) return 'stopped';
  signalGroup(pid, 'SIGKILL');
  if (await gone(record, daemonKillTimeoutMs)) return 'killed';
  throw new LabError('MB_ERR_LAB_STOP', `${record.name} (pid ${pid}) is still running after SIGKILL`);
}

async function gone(record: LabProcess, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isDaemonRunning(record)) {
    if (Date.now() > deadline) return false;
    await sleep(pollIntervalMs);
  }
  return true;
}
