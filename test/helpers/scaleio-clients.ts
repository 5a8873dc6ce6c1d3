// Runs the real ScaleIO clients (OpenStack cinder's PowerFlex driver, os-brick's ScaleIO
// connector; Debian's python3-cinder and python3-os-brick) against an MDM's REST API, through
// the drivers in test/helpers/scaleio-clients/*.py, and reads back what each step did: one
// JSON line per step, with every HTTP exchange the client made (method, URL, body, status,
// reply). A failed step's message shows those exchanges, so a test failure says what the
// client sent and what the MDM answered.

import * as path from 'node:path';
import type { Test } from 'tap';
import { repoRoot, run } from './processes.js';

/** Debian's interpreter: the packages are installed for it, not for another python3 on PATH. */
export const systemPython = '/usr/bin/python3';

export interface ClientExchange {
  method: string;
  url: string;
  body: unknown;
  status?: number;
  reply?: unknown;
  error?: string;
}

export interface ClientStep {
  step: string;
  ok: boolean;
  result: unknown;
  error: string | null;
  traceback?: string;
  exchanges: ClientExchange[];
}

export interface ClientRun {
  steps: Map<string, ClientStep>;
  /** Every step in order. */
  order: ClientStep[];
  done: boolean;
  code: number | null;
  stderr: string;
}

/** What the scripts read on stdin: where the MDM's REST API is and how to log in. */
export interface ClientTarget {
  host: string;
  port: number;
  certPath: string;
  user: string;
  password: string;
  workDir: string;
  [key: string]: unknown;
}

export function targetOf(mdm: { apiUrl: string; certPath: string }, password: string, workDir: string): ClientTarget {
  const url = new URL(mdm.apiUrl);
  return { host: url.hostname, port: Number(url.port), certPath: mdm.certPath, user: 'admin', password, workDir };
}

export async function runClient(script: 'cinder_driver' | 'os_brick_connector', target: ClientTarget, timeoutMs = 300_000): Promise<ClientRun> {
  const file = path.join(repoRoot, 'test/helpers/scaleio-clients', `${script}.py`);
  // No __pycache__ in the source tree.
  const result = await run(systemPython, [file], { input: JSON.stringify(target), timeoutMs, env: { PYTHONDONTWRITEBYTECODE: '1' } });
  const steps = new Map<string, ClientStep>();
  const order: ClientStep[] = [];
  let done = false;
  for (const line of result.stdout.split('\n')) {
    if (line.trim() === '') continue;
    const parsed = JSON.parse(line) as ClientStep | { done: true };
    if ('done' in parsed) {
      done = true;
      continue;
    }
    steps.set(parsed.step, parsed);
    order.push(parsed);
  }
  return { steps, order, done, code: result.code, stderr: result.stderr };
}

/** One exchange as a line or two: what the client sent, what the MDM answered. */
export function describeExchange(exchange: ClientExchange): string {
  const url = new URL(exchange.url);
  const body = exchange.body === undefined || exchange.body === null ? '' : ` ${JSON.stringify(exchange.body)}`;
  const answer = exchange.error !== undefined ? `failed: ${exchange.error}` : `${exchange.status} ${JSON.stringify(exchange.reply)}`;
  return `${exchange.method} ${url.pathname}${body}\n      -> ${answer}`;
}

/** Asserts that the step ran and succeeded; its exchanges are printed either way, as a comment. */
export function assertStep(t: Test, run: ClientRun, name: string, check?: (result: unknown) => void): unknown {
  const step = run.steps.get(name);
  if (step === undefined) {
    t.fail(`${name}: the client never reported this step (exit ${run.code}); its stderr ends:\n${run.stderr.slice(-3000)}`);
    return undefined;
  }
  const trace = step.exchanges.map(describeExchange).join('\n    ');
  t.comment(`${name}: ${step.ok ? 'ok' : `FAILED ${step.error}`}\n    ${trace}`);
  t.ok(step.ok, `${name}${step.ok ? '' : `: ${step.error}`}`, step.traceback !== undefined ? { traceback: step.traceback } : {});
  if (step.ok && check !== undefined) check(step.result);
  return step.result;
}
