// What the benches that run whole labs (bench-lab, bench-mdm, bench-snap) share: the `lab`
// commands they run, stopping a lab on every path out, and a ScaleIO-style REST client for a
// lab's MDM. bench-common.mjs has the rest (arguments, signals, children, fio, tables).

import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BenchError, exitRuntimeError, meshblockBin, processFailure, run } from './bench-common.mjs';

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
