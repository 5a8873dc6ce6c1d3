// Starting the real meshblock command and the real client programs, for tests.
// Every process started here is killed in the test's teardown.

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const meshblockBin = path.join(repoRoot, 'bin/meshblock.cjs');

/**
 * How tests start Node: through `env -u NODE_OPTIONS`. Under tap, NODE_OPTIONS loads tap's
 * process tracker (@tapjs/processinfo), which runs every module load through a loader thread
 * and records V8 coverage; it made each `meshblock` start cost about 1.3 s of CPU instead of
 * 0.4 s, and slowed every daemon while it ran. It re-adds itself to every spawn of a traced
 * process, so only a non-Node program in between (env) keeps it out. Coverage is then
 * reported for the code tests run in their own process; MESHBLOCK_TEST_CHILD_COVERAGE=1
 * traces the daemons and CLI runs too (slower: with it, and before lazy loading, a clean-clone
 * run took 49.5 min here; without both, 33 min).
 */
export const nodeArgv: readonly string[] = process.env['MESHBLOCK_TEST_CHILD_COVERAGE'] === '1' ? [process.execPath] : ['/usr/bin/env', '-u', 'NODE_OPTIONS', process.execPath];

/** Node with `args` (a script and its arguments) through nodeArgv, as spawn()'s command and arguments: `spawn(...nodeCommand(args), options)`. */
export function nodeCommand(args: readonly string[]): [string, string[]] {
  const [program, ...argv] = [...nodeArgv, ...args] as [string, ...string[]];
  return [program, argv];
}

/**
 * Daemons run under `setpriv --pdeathsig KILL` (util-linux; every prefix after it execs, so
 * the pid stays the daemon's): if the test process dies without its teardown, killed by
 * tap's timeout or by hand, the kernel kills the daemons it started instead of leaving
 * them running.
 */
export const orphanKill = fs.existsSync('/usr/bin/setpriv') ? ['/usr/bin/setpriv', '--pdeathsig', 'KILL'] : [];

/** The part of tap's Test that these helpers use. */
export interface TeardownHost {
  teardown(fn: () => unknown): void;
}

/** How long startMeshblock waits for a daemon's ready line by default (generous: CI runs tests two at a time on two cores). */
export const daemonReadyTimeoutMs = 180_000;
/** How long stop() waits after SIGTERM: a daemon drains for at most 10 s, then aborts. */
export const daemonStopTimeoutMs = 60_000;

export interface DaemonHandle {
  process: ChildProcess;
  /** The ready line's match of the `ready` pattern. */
  ready: RegExpExecArray;
  /** Everything the daemon logged to stderr so far (pino JSON lines). */
  stderr(): string;
  /** SIGTERM and wait for the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL (a crash) and wait for the exit. */
  kill(): Promise<void>;
  /** Resolves with the exit code whenever the daemon exits. */
  exited: Promise<number | null>;
}

/**
 * Runs the meshblock command `args` as a daemon and resolves once its stdout matches
 * `ready`. It is killed in the test's teardown if still running.
 */
export async function startMeshblock(
  t: TeardownHost,
  args: string[],
  options: { ready: RegExp; prefix?: string[]; netns?: string; readyTimeoutMs?: number },
): Promise<DaemonHandle> {
  // `prefix` runs the daemon under another program, e.g. strace. `netns` runs it (and the
  // prefix) in that network namespace: `ip netns exec` execs it, so the pid stays the same.
  const netnsPrefix = options.netns !== undefined ? ['ip', 'netns', 'exec', options.netns] : [];
  const [command, ...commandArgs] = [...orphanKill, ...netnsPrefix, ...(options.prefix ?? []), ...nodeArgv, meshblockBin, ...args] as [string, ...string[]];
  // Its own process group, so that teardown reaches everything under a prefix too.
  const child = spawn(command, commandArgs, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const signalGroup = (signal: NodeJS.Signals): void => {
    try {
      process.kill(-(child.pid as number), signal);
    } catch {
      // Already gone.
    }
  };
  let stdout = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  let exitedAlready = false;
  const exited = once(child, 'exit').then(([code]) => {
    exitedAlready = true;
    return code as number | null;
  });
  t.teardown(async () => {
    signalGroup('SIGKILL');
    if (!exitedAlready) await exited;
    child.stdout.destroy();
    child.stderr.destroy();
  });
  // Bounded, so that a daemon stuck before its ready line fails the test with its log rather
  // than hanging until tap's timeout kills the whole file with nothing said.
  const readyTimeoutMs = options.readyTimeoutMs ?? daemonReadyTimeoutMs;
  let readyTimer: NodeJS.Timeout | undefined;
  const ready = await new Promise<RegExpExecArray>((resolve, reject) => {
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      stdout += text;
      const match = options.ready.exec(stdout);
      if (match !== null) resolve(match);
    });
    void exited.then((code) => reject(new Error(`meshblock ${args.slice(0, 2).join(' ')} exited ${code} before it was ready:\n${stderr}`)));
    readyTimer = setTimeout(() => {
      signalGroup('SIGKILL');
      reject(new Error(`meshblock ${args.slice(0, 2).join(' ')} was not ready within ${readyTimeoutMs} ms (killed); stdout:\n${stdout}\nstderr:\n${stderr}`));
    }, readyTimeoutMs);
  }).finally(() => clearTimeout(readyTimer));
  return {
    process: child,
    ready,
    stderr: () => stderr,
    stop: async () => {
      if (exitedAlready) return exited;
      child.kill('SIGTERM');
      // Every daemon drains within shutdownDrainMs (signals.ts) and then aborts: one that is
      // still there long after is stuck, which the test must say rather than hang on.
      let stopTimer: NodeJS.Timeout | undefined;
      const stuck = new Promise<never>((_resolve, reject) => {
        stopTimer = setTimeout(() => {
          signalGroup('SIGKILL');
          reject(new Error(`meshblock ${args.slice(0, 2).join(' ')} did not exit within ${daemonStopTimeoutMs} ms of SIGTERM (killed); stderr:\n${stderr.slice(-4000)}`));
        }, daemonStopTimeoutMs);
      });
      try {
        return await Promise.race([exited, stuck]);
      } finally {
        clearTimeout(stopTimer);
      }
    },
    kill: async () => {
      signalGroup('SIGKILL');
      await exited;
    },
    exited,
  };
}

export interface ServeHandle extends DaemonHandle {
  /** The NBD URI printed by the server, e.g. nbd://127.0.0.1:41234/ */
  uri: string;
  host: string;
  port: number;
}

/**
 * Runs `meshblock nbd serve` with `args` (on 127.0.0.1, port 0 unless --listen/--socket is
 * given) and resolves once it prints its URI.
 */
export async function startNbdServe(
  t: TeardownHost,
  args: string[],
  options: { prefix?: string[]; netns?: string } = {},
): Promise<ServeHandle> {
  const fullArgs = ['nbd', 'serve', ...args];
  if (!args.includes('--listen') && !args.includes('--socket')) fullArgs.push('--listen', '127.0.0.1:0');
  const daemon = await startMeshblock(t, fullArgs, {
    ready: /(nbds?(?:\+unix)?:\/\/\S+)/,
    ...(options.prefix ? { prefix: options.prefix } : {}),
    ...(options.netns !== undefined ? { netns: options.netns } : {}),
  });
  const uri = daemon.ready[1] as string;
  const tcp = /^nbds?:\/\/([^/]+):(\d+)\//.exec(uri);
  return { ...daemon, uri, host: tcp?.[1] ?? '', port: Number(tcp?.[2] ?? 0) };
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion (with a time bound) and collects its output. */
export async function run(command: string, args: string[], options: { timeoutMs?: number; input?: string; env?: Record<string, string> } = {}): Promise<RunResult> {
  // Node itself goes through nodeArgv (untraced by tap).
  const program: [string, string[]] = command === process.execPath ? nodeCommand(args) : [command, args];
  const child = spawn(...program, { stdio: ['pipe', 'pipe', 'pipe'], ...(options.env !== undefined ? { env: { ...process.env, ...options.env } } : {}) });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  // A program that exits without reading its input closes the pipe first: not an error.
  child.stdin.on('error', () => undefined);
  child.stdin.end(options.input ?? '');
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
  // events.once() resolves with the listener's arguments as any[]: 'exit' gives (code, signal).
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** Runs the meshblock command itself. */
export function runMeshblock(args: string[], options: { timeoutMs?: number; env?: Record<string, string> } = {}): Promise<RunResult> {
  return run(process.execPath, [meshblockBin, ...args], options);
}

/** A daemon's log lines (pino JSON, as DaemonHandle.stderr() gives them) with this message, at or after `sinceMs` (wall clock). */
export function logged(stderr: string, message: string, sinceMs = 0): Array<Record<string, unknown>> {
  const found: Array<Record<string, unknown>> = [];
  for (const line of stderr.split('\n')) {
    if (!line.includes(message)) continue;
    try {
      const entry = JSON.parse(line) as Record<string, unknown>;
      if (entry['msg'] === message && Number(entry['time']) >= sinceMs) found.push(entry);
    } catch {
      // Not a log line.
    }
  }
  return found;
}

/**
 * Listens on a loopback port so that a daemon meant to take it cannot. Null when something
 * else holds it already (another test's lab): the port is taken either way, but only while
 * that other program keeps it.
 */
export function squat(port: number): Promise<net.Server | null> {
  const server = net.createServer();
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' ? resolve(null) : reject(err)));
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

/** A TCP port free on 127.0.0.1 now (it may be taken again before it is used: pass it at once). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
