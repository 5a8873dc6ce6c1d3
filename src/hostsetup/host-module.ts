// What every host module is: check the host, plan the changes, apply them. `meshblock host
// check|plan|apply` and the installer drive modules only through this interface.
//
//   check(host)        -> Finding   read-only: is the host as meshblock needs it?
//   plan(host)         -> Step[]    read-only: what apply would change (empty: nothing)
//   apply(host, steps) -> ApplyResult
//
// A step is a whole-file edit (the text before and after, and a unified diff for people) or a
// command. apply() re-checks before changing anything: it plans again, refuses a file step
// whose file changed since the plan was made, skips steps the host no longer needs, and backs
// every file up before replacing it. So applying twice changes nothing the second time, and
// plan() after apply() is empty.

import type * as Diff from 'diff';
import { MeshblockError, type ErrorCode } from '../common/errors.js';
import { lazyModule } from '../common/lazy-module.js';
import type { BlockDeviceRecord } from './disk-inventory.js';
import type { HostTransport, RunResult } from './host-transport.js';
import { commandNotFoundCode, shellQuote } from './host-transport.js';

/** Loaded when a plan shows a file's change (src/common/lazy-module.ts). */
const diffPackage = lazyModule<typeof Diff>('diff');

export const moduleNames = ['yum-repos', 'packages', 'prereqs', 'lvm-filter', 'nbd-module', 'dom0-memory', 'disks', 'xen-sr'] as const;
export type ModuleName = (typeof moduleNames)[number];

/** Where a host keeps the programs modules run, in root's PATH order. */
export const systemToolDirs: readonly string[] = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

export interface HostOptions {
  /** Xen's dom0_mem size, as Xen writes it: `4096M`. */
  dom0Mem: string;
  /** NBD devices the nbd module creates (nbds_max). */
  nbdsMax: number;
  /** The XenServer SR to create, and the attached NBD device it goes on. */
  srName?: string;
  srDevice?: string;
  /** The one device the disks module may wipe (`--yes-wipe DEVICE`). */
  wipeDevice?: string;
  /**
   * Which Node meshblock will run on: `bundled`, the runtime bundle `meshblock install` ships
   * (the host's own Node, or none, is then no prerequisite), or `host`, the host's own
   * (Node 20 or later needed). Absent: `host`.
   */
  nodeRuntime?: NodeRuntime;
}

export const nodeRuntimes = ['bundled', 'host'] as const;
export type NodeRuntime = (typeof nodeRuntimes)[number];

export interface Host {
  transport: HostTransport;
  options: HostOptions;
  /**
   * The host's block devices. Absent: systeminformation on this machine (disk-inventory.ts);
   * a remote transport gives lsblkInventory over itself.
   */
  inventory?: () => Promise<BlockDeviceRecord[]>;
}

export interface Finding {
  module: ModuleName;
  /** False when the module has nothing to do on this kind of host (ok is then true). */
  applicable: boolean;
  ok: boolean;
  /** One line. */
  summary: string;
  /** What was looked at and found, and what to do when nothing can be done automatically. */
  details: string[];
}

export interface FileStep {
  kind: 'file';
  path: string;
  /** Null: the file does not exist yet. */
  before: string | null;
  after: string;
  /** Unified diff of before and after, for plan. */
  diff: string;
  why: string;
  /** Permission bits for a new file (an existing file keeps its own). */
  mode?: number;
}

export interface CommandStep {
  kind: 'command';
  argv: readonly [string, ...string[]];
  why: string;
  timeoutMs?: number;
}

export type Step = FileStep | CommandStep;

export interface ApplyResult {
  module: ModuleName;
  /** One line per change made or step found already done. */
  done: string[];
  /** Host paths of the backups made. */
  backups: string[];
  /** What the administrator must still do (a reboot). */
  notes: string[];
}

export interface HostModule {
  readonly name: ModuleName;
  readonly description: string;
  check(host: Host): Promise<Finding>;
  plan(host: Host): Promise<Step[]>;
  apply(host: Host, steps: readonly Step[]): Promise<ApplyResult>;
}

/** A step failed, or the host changed under the plan; `result` says what was done before. */
export class HostStepError extends MeshblockError {
  readonly result: ApplyResult;

  constructor(code: ErrorCode, message: string, result: ApplyResult) {
    super(code, message);
    this.result = result;
  }
}

/** A module cannot work on this host as it is (a file it cannot read, a tool that fails). */
export class HostModuleError extends MeshblockError {}

/** A command line as a shell would take it back: words quoted only where the shell needs it. */
export function formatArgv(argv: readonly string[]): string {
  // Commas are plain in sh (dom0_mem=4096M,max:4096M needs no quotes).
  return argv.map(shellQuote).join(' ');
}

export function lastLine(text: string): string {
  const lines = text.split('\n').map((line) => line.trim()).filter((line) => line !== '');
  return lines[lines.length - 1] ?? '';
}

export function fileStep(filePath: string, before: string | null, after: string, why: string, mode?: number): FileStep {
  const diff = diffPackage().createTwoFilesPatch(before === null ? '/dev/null' : `a${filePath}`, `b${filePath}`, before ?? '', after, undefined, undefined, { context: 3 });
  // jsdiff opens with a row of '=' (its "Index:" style); git and patch do without.
  const trimmed = diff.replace(/^=+\n/, '');
  return { kind: 'file', path: filePath, before, after, diff: trimmed, why, ...(mode !== undefined ? { mode } : {}) };
}

export function commandStep(argv: readonly [string, ...string[]], why: string, timeoutMs?: number): CommandStep {
  return { kind: 'command', argv, why, ...(timeoutMs !== undefined ? { timeoutMs } : {}) };
}

export interface ResolvedTool {
  /** What to run: the host path where found, else the bare name (the PATH of whoever runs it). */
  command: string;
  /** The host path it was found at, or null when it is left to PATH. */
  foundAt: string | null;
}

/**
 * Looks a program up in `dirs` on the host (under --root, for the local transport), then
 * leaves it to PATH. Tests put stub programs under the root this way; on a real host the
 * directories hold the real ones.
 */
export async function resolveTool(host: Host, name: string, dirs: readonly string[] = systemToolDirs): Promise<ResolvedTool> {
  const candidates = dirs.map((dir) => `${dir}/${name}`);
  if (host.transport.firstExisting !== undefined) {
    const found = await host.transport.firstExisting(candidates);
    return found === null ? { command: name, foundAt: null } : { command: found, foundAt: found };
  }
  for (const candidate of candidates) {
    if (await host.transport.exists(candidate)) return { command: candidate, foundAt: candidate };
  }
  return { command: name, foundAt: null };
}

/** Where a tool came from, for findings: `/usr/bin/rpm` or `rpm from PATH`. */
export function toolLabel(tool: ResolvedTool): string {
  return tool.foundAt ?? `${tool.command} from PATH`;
}

export function isNotFound(result: RunResult): boolean {
  return result.code === commandNotFoundCode || result.code === 126;
}

/** Runs a query command and fails with what it said when it fails. */
export async function runQuery(host: Host, argv: readonly [string, ...string[]], okCodes: readonly number[] = [0]): Promise<RunResult> {
  const result = await host.transport.run(argv[0], argv.slice(1));
  if (isNotFound(result)) throw new HostModuleError('MB_ERR_HOST_TOOL_MISSING', `${argv[0]} is not installed on the host (${lastLine(result.stderr)})`);
  if (!okCodes.includes(result.code)) {
    throw new HostModuleError('MB_ERR_HOST_QUERY', `${formatArgv(argv)} failed (exit ${result.code}): ${lastLine(result.stderr) || lastLine(result.stdout) || 'no output'}`);
  }
  return result;
}

export interface ApplyHooks {
  /** A better message for a command that failed (which repository to enable, say). */
  explainFailure?(step: CommandStep, result: RunResult): Promise<string | undefined>;
  /** After a command exited 0: a message when it did not do its job (yum exits 0 when one of several packages is missing). */
  verify?(step: CommandStep, result: RunResult): Promise<string | undefined>;
  /** Notes for the administrator once something changed (a reboot). */
  notesWhenChanged?: string[];
}

function sameArgv(left: readonly string[], right: readonly string[]): boolean {
  return left.length === right.length && left.every((word, index) => word === right[index]);
}

/**
 * What every module's apply() does: plans again (re-checking the host), then carries out the
 * given steps in order, stopping at the first failure.
 */
export async function applySteps(host: Host, module: HostModule, steps: readonly Step[], hooks: ApplyHooks = {}): Promise<ApplyResult> {
  const result: ApplyResult = { module: module.name, done: [], backups: [], notes: [] };
  const fresh = await module.plan(host);
  let changed = false;
  for (const step of steps) {
    if (step.kind === 'file') {
      const current = await host.transport.readFile(step.path);
      if (current === step.after) {
        result.done.push(`${step.path}: already as planned`);
        continue;
      }
      if (current !== step.before) {
        throw new HostStepError('MB_ERR_HOST_CHANGED', `${step.path} changed since the plan was made; nothing of it was written: plan again`, result);
      }
      const backup = await host.transport.backup(step.path);
      if (backup !== null) result.backups.push(backup);
      await host.transport.writeFile(step.path, step.after, step.before === null && step.mode !== undefined ? { mode: step.mode } : {});
      result.done.push(`${step.before === null ? 'created' : 'edited'} ${step.path}${backup === null ? '' : ` (backup ${backup})`}: ${step.why}`);
      changed = true;
      continue;
    }
    if (!fresh.some((candidate) => candidate.kind === 'command' && sameArgv(candidate.argv, step.argv))) {
      result.done.push(`${formatArgv(step.argv)}: no longer needed`);
      continue;
    }
    const output = await host.transport.run(step.argv[0], step.argv.slice(1), step.timeoutMs !== undefined ? { timeoutMs: step.timeoutMs } : {});
    changed = true;
    if (output.code !== 0) {
      const explained = await hooks.explainFailure?.(step, output);
      const said = lastLine(output.stderr) || lastLine(output.stdout) || 'no output';
      throw new HostStepError('MB_ERR_HOST_STEP', explained ?? `${formatArgv(step.argv)} failed (exit ${output.code}): ${said}`, result);
    }
    const problem = await hooks.verify?.(step, output);
    if (problem !== undefined) throw new HostStepError('MB_ERR_HOST_STEP', problem, result);
    result.done.push(`ran ${formatArgv(step.argv)}: ${step.why}`);
  }
  if (changed) result.notes.push(...(hooks.notesWhenChanged ?? []));
  return result;
}

/** The Finding of a module that does not apply here. */
export function notApplicable(module: ModuleName, summary: string, details: string[] = []): Finding {
  return { module, applicable: false, ok: true, summary, details };
}
