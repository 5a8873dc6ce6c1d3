// What the benches that run whole labs (bench-lab, bench-mdm, bench-snap, bench-integrity)
// share: the `lab` commands they run, stopping a lab on every path out, a ScaleIO-style REST
// client for a lab's MDM, and fio runs against a lab with its CPU sampled. bench-common.mjs has the rest (arguments, signals, children, fio, tables).

import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  BenchError,
  disturbedPercentMin,
  exitRuntimeError,
  firstLine,
  handleSignals,
  machineBusyPercent,
  machineTicks,
  meshblockBin,
  optionsOrExitCode,
  procStatFields,
  processCpuSeconds,
  processFailure,
  repoRoot,
  run,
  spawnTracked,
  throwIfInterrupted,
  waitForQuiet,
} from './bench-common.mjs';

export const labUpMs = 180_000;
export const labDownMs = 60_000;
export const labStatusMs = 30_000;
/** A REST request (not a probe) that takes longer than this is a failure. */
export const restRequestTimeoutMs = 30_000;

/** Lab dirs that may be up: a second signal still stops them before leaving. */
export const labDirsUp = new Set();

export function labArgs(command, labDir, extra = []) {
  return [meshblockBin, 'lab', command, '--dir', labDir, ...extra];
}

export function labFailure(name, state) {
  return processFailure('SERVER', name, state, `${state.stdout}\n${state.stderr}`);
}

/** `lab up` with `extra` flags; the lab's dir is remembered until stopLab. Returns run()'s state. */
export async function labUp(labDir, extra, { name = 'lab', spawnOptions = {} } = {}) {
  labDirsUp.add(labDir);
  const state = await run(process.execPath, labArgs('up', labDir, extra), labUpMs, spawnOptions);
  if (state.code !== 0) throw labFailure(`meshblock lab up (${name})`, state);
  return state;
}

/** The nbd:// URI `lab up` printed for a volume. */
export function labVolumeUri(stdout, volumeName, name = 'lab') {
  const match = new RegExp(`(nbd://127\\.0\\.0\\.1:\\d+/${volumeName})\\b`).exec(stdout);
  if (match === null) throw new BenchError('SERVER', `meshblock lab up (${name}) printed no URI for ${volumeName}:\n${stdout}`);
  return match[1];
}

export async function labStatus(labDir, name = 'lab') {
  const state = await run(process.execPath, labArgs('status', labDir, ['--json']), labStatusMs);
  if (state.code !== 0) throw labFailure(`meshblock lab status (${name})`, state);
  return JSON.parse(state.stdout);
}

/** lab.json as the lab wrote it. */
export function labFile(labDir) {
  return JSON.parse(fs.readFileSync(path.join(labDir, 'lab.json'), 'utf8'));
}

/** A REST client logged in as the lab's admin, trusting the lab's certificate. */
export function labRestApi(labDir) {
  const file = labFile(labDir);
  return new RestApi({ ca: fs.readFileSync(file.caCert), password: fs.readFileSync(file.passwordFile, 'utf8').trim() });
}

/** On the way out after a second signal: no promise may be waited for. */
export function labDownSync(labDir) {
  try {
    execFileSync(process.execPath, labArgs('down', labDir, ['--purge']), { stdio: 'ignore', timeout: labDownMs });
  } catch {
    // Nothing more to do on the way out.
  }
}

export async function stopLab(labDir) {
  if (!fs.existsSync(labDir)) return;
  const state = await run(process.execPath, labArgs('down', labDir, ['--purge']), labDownMs);
  if (state.code !== 0) process.stderr.write(`meshblock lab down --purge ${labDir} failed (${state.code}):\n${state.stderr.trim()}\n`);
  labDirsUp.delete(labDir);
}

/**
 * A ScaleIO-style REST client for one lab: one kept-alive HTTPS agent (so a timed request is
 * one round trip, not a TLS handshake), a token per API address, and a login again on 401
 * (a token dies with the MDM that issued it).
 */
export class RestApi {
  constructor({ ca, password }) {
    this.agent = new https.Agent({ keepAlive: true, ca, maxSockets: 4 });
    this.password = password;
    this.tokens = new Map();
  }

  /** One request; resolves { status, body, mdm } (mdm: the x-meshblock-mdm that answered), rejects on a network error or timeout. */
  call(base, method, urlPath, { body, token, basic, timeoutMs = restRequestTimeoutMs } = {}) {
    return new Promise((resolve, reject) => {
      const headers = { accept: 'application/json' };
      if (basic !== undefined) headers.authorization = `Basic ${Buffer.from(basic).toString('base64')}`;
      if (token !== undefined) headers.authorization = `Bearer ${token}`;
      const payload = body === undefined ? undefined : JSON.stringify(body);
      if (payload !== undefined) headers['content-type'] = 'application/json';
      const request = https.request(new URL(urlPath, base), { method, agent: this.agent, headers, signal: AbortSignal.timeout(timeoutMs) }, (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk) => (text += chunk));
        response.on('error', reject);
        response.on('end', () => {
          let parsed = text;
          try {
            parsed = text === '' ? null : JSON.parse(text);
          } catch {
            // Not JSON: kept as text for the error message.
          }
          resolve({ status: response.statusCode, body: parsed, mdm: response.headers['x-meshblock-mdm'] ?? null });
        });
      });
      request.on('error', reject);
      request.end(payload);
    });
  }

  async login(base, timeoutMs = restRequestTimeoutMs) {
    const answer = await this.call(base, 'GET', '/api/login', { basic: `admin:${this.password}`, timeoutMs });
    if (answer.status !== 200 || typeof answer.body !== 'string') throw new BenchError('REST', `login at ${base} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
    this.tokens.set(base, answer.body);
    return answer.body;
  }

  /** An authenticated request; on 401 logs in once more and repeats it. */
  async authed(base, method, urlPath, options = {}) {
    const token = this.tokens.get(base) ?? (await this.login(base, options.timeoutMs));
    const answer = await this.call(base, method, urlPath, { ...options, token });
    if (answer.status !== 401) return answer;
    return this.call(base, method, urlPath, { ...options, token: await this.login(base, options.timeoutMs) });
  }

  /** An authenticated request that must answer 200. */
  async must(base, method, urlPath, options = {}) {
    const answer = await this.authed(base, method, urlPath, options);
    if (answer.status !== 200) throw new BenchError('REST', `${method} ${base}${urlPath} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
    return answer;
  }

  destroy() {
    this.agent.destroy();
  }
}

/** Nearest-rank percentile (p in 0..100) of the values; null when there are none. */
export function percentile(values, p) {
  const sorted = values.filter((value) => value !== null).sort((a, b) => a - b);
  if (sorted.length === 0) return null;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1];
}

// --- a network of its own ----------------------------------------------------------------
//
// On a shared machine other labs and tests pick loopback ports too, and `lab up` chooses a
// daemon's ports once: a bench that kills and restarts daemons, or starts several labs,
// runs (as root) in a network namespace of its own, loopback only.

/**
 * The start of a lab bench's main(): its options, or the exit code it stops with (--help, bad
 * usage, or that of its re-run in a network namespace of its own when wantsOwnNetwork); then
 * signals that stop it, a second one stopping every lab still up before leaving.
 */
export async function labBenchOptions(name, parseOptions, usage, scriptUrl) {
  const parsed = optionsOrExitCode(name, parseOptions, usage);
  if (parsed.exitCode !== undefined) return parsed;
  if (wantsOwnNetwork(parsed.options)) return { exitCode: await runInOwnNetwork(scriptUrl, name) };
  handleSignals({
    onSecondSignal: () => {
      for (const labDir of labDirsUp) labDownSync(labDir);
    },
  });
  return parsed;
}

/** Set in the re-run inside the new network namespace. */
const isolatedNetworkEnv = 'MESHBLOCK_BENCH_NETNS';

export function inOwnNetwork() {
  return process.env[isolatedNetworkEnv] !== undefined;
}

/** Whether to re-run in a network namespace of its own: root, not yet in one, not refused (--shared-network). */
export function wantsOwnNetwork(options) {
  return !options.sharedNetwork && !inOwnNetwork() && process.getuid?.() === 0;
}

/**
 * Re-runs the script at `scriptUrl`, with the same arguments, under `unshare --net` with
 * loopback up, and resolves its exit code. A terminal's Ctrl-C reaches the re-run itself
 * (same process group); a SIGTERM sent to this process is passed on.
 */
export function runInOwnNetwork(scriptUrl, scriptName) {
  const args = ['--net', '--', 'sh', '-c', 'ip link set lo up && exec "$0" "$@"', process.execPath, ...process.execArgv, fileURLToPath(scriptUrl), ...process.argv.slice(2)];
  const child = spawn('unshare', args, { stdio: 'inherit', env: { ...process.env, [isolatedNetworkEnv]: '1' } });
  process.on('SIGINT', () => undefined);
  process.on('SIGTERM', () => child.kill('SIGTERM'));
  return new Promise((resolve) => {
    child.on('error', (err) => {
      process.stderr.write(`${scriptName}: cannot run unshare (${err.message}); use --shared-network\n`);
      resolve(exitRuntimeError);
    });
    child.on('exit', (code, signal) => resolve(code ?? 128 + (os.constants.signals[signal] ?? 0)));
  });
}

// --- fio against a lab, with CPU sampled --------------------------------------------------
//
// bench-lab and bench-integrity run the same fio nbd-engine jobs against lab volumes, with
// the CPU time of every lab process and of fio sampled from /proc inside fio's measured
// window, and describe the machine the same way.

/**
 * Before each run we wait up to labQuietWaitMsMax for the rest of the machine to use less than
 * quietBusyPercentMax of a core (bench-common). Kept short: other engineers share this 2-core
 * machine, and a bench that waits two minutes per run never finishes; disturbed runs are
 * flagged instead.
 */
export const labQuietWaitMsMax = 15_000;
/** CPU is sampled this long after fio's ramp ends, and half of it before its runtime ends. */
const sampleMarginMs = 500;
const fioSlackMs = 60_000;
/** A fixed-amount fio run (pattern.args) that takes longer than this is killed. */
const untimedFioMsMax = 600_000;

/** pid and its descendants (fio forks one process per job). */
function processTree(rootPid) {
  const parentOf = new Map();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      parentOf.set(Number(name), Number(procStatFields(`/proc/${name}/stat`)[1]));
    } catch {
      // Gone between readdir and read.
    }
  }
  const tree = [rootPid];
  for (let index = 0; index < tree.length; index++) {
    for (const [pid, parent] of parentOf) if (parent === tree[index]) tree.push(pid);
  }
  return tree;
}

/** Lab process pids by name (mdm, sds1.., sdc1). */
export function labPids(status) {
  const pids = {};
  for (const entry of status.processes) pids[entry.role === 'sdc' ? 'sdc' : entry.name] = [entry.pid];
  return pids;
}

export function labAlive(lab) {
  return lab.status.processes.every((entry) => processCpuSeconds(entry.pid, 100) !== null);
}

export function fioArgs(pattern, uri, options) {
  return [
    `--name=${pattern.id}`,
    '--ioengine=nbd',
    `--uri=${uri}`,
    ...pattern.fio,
    `--size=${options.sizeBytes}`,
    '--numjobs=1',
    '--time_based',
    `--runtime=${options.runtimeSeconds}`,
    `--ramp_time=${options.rampSeconds}`,
    '--output-format=json',
  ];
}

export function prewriteArgs(uri, sizeBytes) {
  return ['--name=prewrite', '--ioengine=nbd', `--uri=${uri}`, '--rw=write', '--bs=1M', '--iodepth=8', `--size=${sizeBytes}`, '--output-format=json'];
}

/** Writes the whole region once through the SDC, so every chunk is allocated on two SDSs. */
export async function prewriteLab(lab, sizeBytes) {
  const args = prewriteArgs(lab.uri, sizeBytes);
  const startedMs = performance.now();
  const state = await run('fio', args, 600_000);
  throwIfInterrupted();
  if (state.code !== 0) throw new BenchError('FIO', `fio could not pre-write the lab volume: fio ${args.join(' ')}\n${state.stderr.trim()}`);
  return (performance.now() - startedMs) / 1000;
}

function sampleRoles(pidsByRole, fioPid, machine) {
  const cpuSeconds = {};
  for (const [role, pids] of Object.entries(pidsByRole)) {
    cpuSeconds[role] = pids.reduce((sum, pid) => sum + (processCpuSeconds(pid, machine.clockTicksPerSecond) ?? 0), 0);
  }
  if (fioPid !== null) cpuSeconds.fio = processTree(fioPid).reduce((sum, pid) => sum + (processCpuSeconds(pid, machine.clockTicksPerSecond) ?? 0), 0);
  return { atMs: performance.now(), machine: machineTicks(), cpuSeconds };
}

/**
 * One fio run. `hooks.atWindowStart/atWindowEnd` run inside fio's measured window (used to
 * start and stop the profiler). CPU per role is sampled at the same two moments.
 *
 * A pattern with `args(uri)` is a run of a fixed amount of IO, not time-based (first writes
 * to a fresh volume: each chunk is new once only): fio gets those args, the lab's CPU is
 * sampled at fio's start and after its exit, and fio's own share comes from its report
 * (usr_cpu + sys_cpu over its run).
 */
export async function runFio(pattern, side, options, machine, hooks = {}) {
  throwIfInterrupted();
  const timed = pattern.args === undefined;
  const args = timed ? fioArgs(pattern, side.uri, options) : pattern.args(side.uri);
  const quiet = await waitForQuiet(machine.cpuCount, labQuietWaitMsMax, { announce: false });
  const { child, state } = spawnTracked('fio', args, { fio: true });
  const timeoutMs = timed ? (options.runtimeSeconds + options.rampSeconds) * 1000 + fioSlackMs : untimedFioMsMax;
  const killTimer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const samples = [];
  const startMs = options.rampSeconds * 1000 + sampleMarginMs;
  const endMs = (options.rampSeconds + options.runtimeSeconds) * 1000 - sampleMarginMs / 2;
  const timers = [];
  if (timed) {
    timers.push(
      setTimeout(() => {
        samples.push(sampleRoles(side.pids(), child.pid, machine));
        hooks.atWindowStart?.();
      }, startMs),
      setTimeout(() => {
        hooks.atWindowEnd?.();
        samples.push(sampleRoles(side.pids(), child.pid, machine));
      }, endMs),
    );
  } else {
    samples.push(sampleRoles(side.pids(), null, machine));
  }
  await state.exit;
  clearTimeout(killTimer);
  for (const timer of timers) clearTimeout(timer);
  if (!timed) samples.push(sampleRoles(side.pids(), null, machine));
  throwIfInterrupted();
  const commandLine = ['fio', ...args].join(' ');
  if (state.spawnError !== null) throw new BenchError('FIO', `cannot run fio: ${state.spawnError.message}`);
  if (state.code !== 0) throw new BenchError('FIO', `fio exited with ${state.signal ?? state.code} against ${side.name}: ${commandLine}\n${state.stderr.trim()}`);
  const jsonAt = state.stdout.search(/^\{/m);
  let report;
  try {
    report = JSON.parse(state.stdout.slice(jsonAt));
  } catch (err) {
    throw new BenchError('FIO', `fio printed no JSON report against ${side.name}: ${commandLine}\n${state.stdout.slice(0, 2000)}`, { cause: err });
  }
  const job = report.jobs?.[0];
  if (job === undefined || job.error !== 0) throw new BenchError('FIO', `fio job error against ${side.name}: ${commandLine}\n${state.stderr.trim()}`);
  const iops = job.read.iops + job.write.iops;
  if (iops === 0) throw new BenchError('FIO', `fio completed no I/O against ${side.name}: ${commandLine}`);
  if (samples.length !== 2) throw new BenchError('SAMPLE', `could not sample ${side.name} during the run`);
  const [first, last] = samples;
  const windowSeconds = (last.atMs - first.atMs) / 1000;
  const roles = {};
  let ownPercent = 0;
  for (const role of Object.keys(last.cpuSeconds)) {
    const percent = (100 * (last.cpuSeconds[role] - first.cpuSeconds[role])) / windowSeconds;
    roles[role] = { percent, usPerIo: (percent * 1e4) / iops };
    ownPercent += percent;
  }
  if (!timed) {
    const percent = job.usr_cpu + job.sys_cpu;
    roles.fio = { percent, usPerIo: (percent * 1e4) / iops };
    ownPercent += percent;
  }
  const machinePercent = machineBusyPercent(first.machine, last.machine, machine.cpuCount);
  const restPercent = Math.max(0, machinePercent - ownPercent);
  roles['rest of machine'] = { percent: restPercent, usPerIo: (restPercent * 1e4) / iops };
  const percentiles = job[pattern.latency].clat_ns.percentile;
  return {
    iops,
    mbps: (job.read.bw_bytes + job.write.bw_bytes) / 1e6,
    p50Us: percentiles['50.000000'] / 1000,
    p99Us: percentiles['99.000000'] / 1000,
    roles,
    restPercent,
    disturbed: !quiet || restPercent > disturbedPercentMin,
  };
}

export function formatValue(metric, value) {
  return metric === 'iops' ? Math.round(value).toLocaleString('en-US') : value.toFixed(0);
}

export function formatUs(value) {
  return value >= 1000 ? value.toFixed(0) : value.toFixed(1);
}

export function describeMachine() {
  let cpuModel = 'unknown';
  try {
    const match = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    if (match !== null) cpuModel = match[1].trim();
  } catch {
    // Not Linux: say unknown rather than guess.
  }
  const commit = firstLine('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']);
  const dirty = firstLine('git', ['-C', repoRoot, 'status', '--porcelain', '--', 'src', 'bin']) !== '';
  return {
    cpuModel,
    cpuCount: os.cpus().length,
    clockTicksPerSecond: Number(firstLine('getconf', ['CLK_TCK'])) || 100,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    fio: firstLine('fio', ['--version']),
    nbdkit: firstLine('nbdkit', ['--version']),
    meshblock: commit === 'unknown' ? 'unknown commit' : `commit ${commit}${dirty ? ' with uncommitted changes' : ''}`,
  };
}

export function loadAverage() {
  return os.loadavg().map((load) => load.toFixed(2)).join(' ');
}
