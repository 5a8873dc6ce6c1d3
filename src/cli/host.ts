// meshblock host check|plan|apply: prepare this host for meshblock, module by module
// (src/hostsetup/host-modules.ts lists them).
//
//   meshblock host check [--root DIR] [--only MODULE,...] [--json]
//   meshblock host plan  [--root DIR] [--only MODULE,...] [--json]     what apply would change
//   meshblock host apply [--root DIR] [--only MODULE,...] [--yes] [--json]
//   options of the modules: --dom0-mem SIZE, --sr-name NAME --sr-device /dev/nbdN,
//                           --yes-wipe DEVICE, --node-runtime bundled|host
//
// --root DIR points the modules at a directory tree instead of / (a copy of a host's files;
// commands still run on this machine, looked up under DIR first). --host USER@HOST[:PORT]
// works on another host over SSH (hostsetup/ssh-transport.ts): a key from --identity or the
// password in $MESHBLOCK_SSH_PASSWORD, the host key checked against --known-hosts.
//
// Exit codes: 0 every module ok (check), everything plannable (plan), applied and ok (apply);
// 1 a module found a problem, could not plan, a step failed, or apply was not confirmed;
// 2 bad usage.

import { createInterface } from 'node:readline/promises';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Argv } from 'yargs';
import { InvalidArgumentError, MeshblockError, OutOfRangeError } from '../common/errors.js';
import { dom0MemDefault, parseDom0Mem } from '../hostsetup/dom0-memory.js';
import { checkModule, planModule, selectModules, type ModulePlan } from '../hostsetup/host-modules.js';
import { formatArgv, HostStepError, nodeRuntimes, type ApplyResult, type NodeRuntime, type Finding, type Host, type HostModule, type Step } from '../hostsetup/host-module.js';
import { lsblkInventory } from '../hostsetup/disk-inventory.js';
import { LocalTransport } from '../hostsetup/host-transport.js';
import { defaultIdentityFile, parseSshTarget, SshTransport } from '../hostsetup/ssh-transport.js';
import { nbdsMaxDefault, validateDevice } from '../hostsetup/nbd-attach.js';

const exitRuntimeError = 1;
/** xe accepts long labels; a label this long is a mistake, not a name. */
const srNameBytesMax = 255;

export class HostCommandError extends MeshblockError {}

export interface HostArgs {
  root: string;
  host: string | undefined;
  identity: string | undefined;
  'known-hosts': string;
  'accept-new-host-key': boolean;
  only: string[] | undefined;
  yes: boolean;
  json: boolean;
  'dom0-mem': string;
  'sr-name': string | undefined;
  'sr-device': string | undefined;
  'yes-wipe': string | undefined;
  'node-runtime': NodeRuntime;
}

function hostOptions(yargs: Argv, verb: 'check' | 'plan' | 'apply'): Argv<HostArgs> {
  let y = yargs
    .option('root', { type: 'string', default: '/', describe: "the host's files are under DIR instead of / (commands still run on this machine; block devices are this machine's)", requiresArg: true })
    .option('host', { type: 'string', describe: 'work on USER@HOST[:PORT] over SSH (key from --identity, or env MESHBLOCK_SSH_PASSWORD)', requiresArg: true })
    .option('identity', { type: 'string', describe: 'SSH private key for --host [default: ~/.ssh/id_ed25519, id_ecdsa, id_rsa]', requiresArg: true })
    .option('known-hosts', { type: 'string', default: path.join(os.homedir(), '.ssh', 'known_hosts'), describe: 'host keys to check --host against', requiresArg: true })
    .option('accept-new-host-key', { type: 'boolean', default: false, describe: 'record the key of a host not in --known-hosts (a changed key is always refused)' })
    .option('only', { type: 'string', array: true, describe: 'only these modules (comma-separated): yum-repos, packages, prereqs, lvm-filter, nbd-module, dom0-memory, disks, xen-sr', requiresArg: true })
    .option('json', { type: 'boolean', default: false, describe: 'print JSON' })
    .option('dom0-mem', { type: 'string', default: dom0MemDefault, describe: 'XenServer Dom0 memory to set (dom0_mem=SIZE,max:SIZE)', requiresArg: true })
    .option('sr-name', { type: 'string', describe: 'XenServer: the name-label of the shared LVM SR to create', requiresArg: true })
    .option('sr-device', { type: 'string', describe: 'XenServer: the attached volume (/dev/nbdN) the SR goes on', requiresArg: true })
    .option('yes-wipe', { type: 'string', describe: 'erase every signature on DEVICE (wipefs --all) so an SDS can take it', requiresArg: true })
    .option('node-runtime', { choices: nodeRuntimes, default: 'bundled' as NodeRuntime, describe: "the Node meshblock will run on: bundled (meshblock install's runtime bundle: the host's Node is not needed) or host (the host's own, Node 20 or later)" });
  if (verb === 'apply') y = y.option('yes', { type: 'boolean', default: false, describe: 'apply without asking' });
  return y.check((argv) => {
    const root = argv.root as string;
    if (!fs.existsSync(root) || !fs.statSync(root).isDirectory()) throw new InvalidArgumentError('--root', `'${root}' is not a directory`);
    selectModules(argv.only as string[] | undefined);
    parseDom0Mem('--dom0-mem', argv['dom0-mem'] as string);
    const srName = argv['sr-name'] as string | undefined;
    const srDevice = argv['sr-device'] as string | undefined;
    if ((srName === undefined) !== (srDevice === undefined)) throw new InvalidArgumentError('--sr-name/--sr-device', 'give both or neither');
    if (srName !== undefined && (srName.trim() === '' || Buffer.byteLength(srName) > srNameBytesMax || /[\n\r]/.test(srName))) {
      throw new OutOfRangeError('--sr-name', `a name of 1 to ${srNameBytesMax} bytes on one line`, `'${srName}'`);
    }
    if (srDevice !== undefined) validateDevice('--sr-device', srDevice);
    const wipe = argv['yes-wipe'] as string | undefined;
    if (wipe !== undefined && !/^\/dev\/[A-Za-z0-9._/-]+$/.test(wipe)) throw new InvalidArgumentError('--yes-wipe', `must be a device path such as /dev/sdb, got '${wipe}'`);
    return true;
  }) as unknown as Argv<HostArgs>;
}

async function hostFor(args: HostArgs): Promise<{ host: Host; modules: HostModule[]; close: () => void }> {
  const modules = selectModules(args.only);
  const options: Host['options'] = {
    dom0Mem: args['dom0-mem'],
    nbdsMax: nbdsMaxDefault,
    nodeRuntime: args['node-runtime'],
    ...(args['sr-name'] !== undefined ? { srName: args['sr-name'] } : {}),
    ...(args['sr-device'] !== undefined ? { srDevice: args['sr-device'] } : {}),
    ...(args['yes-wipe'] !== undefined ? { wipeDevice: args['yes-wipe'] } : {}),
  };
  if (args.host === undefined) return { host: { transport: new LocalTransport({ root: args.root }), options }, modules, close: () => undefined };
  if (path.resolve(args.root) !== '/') throw new InvalidArgumentError('--root', 'a root directory is for this machine; with --host the modules work on that host\'s /');
  const target = parseSshTarget('--host', args.host);
  const identity = args.identity ?? defaultIdentityFile();
  // A password only from the environment: never on a command line that ps shows.
  const password = process.env['MESHBLOCK_SSH_PASSWORD'];
  const credentials = password !== undefined && password !== '' ? { password } : identity !== undefined ? { privateKey: fs.readFileSync(identity, 'utf8') } : {};
  const transport = await SshTransport.connect({ target, credentials, knownHostsFile: args['known-hosts'], acceptNewHostKey: args['accept-new-host-key'] });
  return { host: { transport, options, inventory: () => lsblkInventory(transport) }, modules, close: () => transport.close() };
}

/** Runs one verb on the host the arguments name, and lets go of it (an SSH session) after. */
async function withHost(args: HostArgs, verb: (args: HostArgs, host: Host, modules: HostModule[]) => Promise<void>): Promise<void> {
  const { host, modules, close } = await hostFor(args);
  try {
    await verb(args, host, modules);
  } finally {
    close();
  }
}

function allOk(count: number): string {
  return count === 1 ? 'the module is ok' : `all ${count} modules ok`;
}

function write(text: string): void {
  process.stdout.write(text);
}

function status(finding: Finding): string {
  if (!finding.applicable) return 'n/a ';
  return finding.ok ? 'ok  ' : 'FAIL';
}

function renderFinding(finding: Finding): string {
  const lines = [`${status(finding)}  ${finding.module.padEnd(11)}  ${finding.summary}`];
  for (const detail of finding.details) lines.push(`${' '.repeat(19)}${detail}`);
  return `${lines.join('\n')}\n`;
}

/** The same command with another verb, for "run this next" hints. */
function commandLine(args: HostArgs, verb: string, extra: string[] = []): string {
  const words = ['meshblock', 'host', verb];
  if (path.resolve(args.root) !== '/') words.push('--root', args.root);
  if (args.only !== undefined) words.push('--only', args.only.join(','));
  if (args['dom0-mem'] !== dom0MemDefault) words.push('--dom0-mem', args['dom0-mem']);
  if (args['sr-name'] !== undefined && args['sr-device'] !== undefined) words.push('--sr-name', args['sr-name'], '--sr-device', args['sr-device']);
  if (args['yes-wipe'] !== undefined) words.push('--yes-wipe', args['yes-wipe']);
  return formatArgv([...words, ...extra]);
}

function renderStep(step: Step): string {
  if (step.kind === 'command') return `$ ${formatArgv(step.argv)}\n    # ${step.why}\n`;
  const diff = step.diff.endsWith('\n') ? step.diff : `${step.diff}\n`;
  return `# ${step.before === null ? 'create' : 'edit'} ${step.path}: ${step.why}\n${diff}`;
}

/** Modules whose problem no step fixes: the administrator must act. */
function manualFindings(plans: readonly ModulePlan[]): ModulePlan[] {
  return plans.filter((plan) => plan.error !== null || (!plan.finding.ok && plan.steps.length === 0));
}

function renderPlans(plans: readonly ModulePlan[]): string {
  let text = '';
  for (const plan of plans) {
    if (plan.error !== null) {
      text += `== ${plan.module}: cannot plan: ${plan.error}\n`;
    } else if (plan.steps.length > 0) {
      text += `== ${plan.module}: ${plan.finding.summary}\n`;
      for (const step of plan.steps) text += renderStep(step);
    } else if (!plan.finding.ok) {
      text += `== ${plan.module}: needs you: ${plan.finding.summary}\n`;
      for (const detail of plan.finding.details) text += `   ${detail}\n`;
    }
  }
  return text;
}

/** Steps without the files' full text: a plan of a 100 KB lvm.conf is its diff. */
function jsonPlan(plan: ModulePlan): object {
  return {
    ...plan,
    steps: plan.steps.map((step) => (step.kind === 'file' ? { kind: step.kind, path: step.path, creates: step.before === null, why: step.why, diff: step.diff } : step)),
  };
}

export function hostCheck(args: HostArgs): Promise<void> {
  return withHost(args, hostCheckOn);
}

async function hostCheckOn(args: HostArgs, host: Host, modules: HostModule[]): Promise<void> {
  const findings: Finding[] = [];
  for (const module of modules) findings.push(await checkModule(module, host));
  const failing = findings.filter((finding) => !finding.ok);
  if (args.json) {
    write(`${JSON.stringify({ host: host.transport.label, ok: failing.length === 0, findings }, null, 1)}\n`);
  } else {
    write(`meshblock host check: ${host.transport.label}\n`);
    for (const finding of findings) write(renderFinding(finding));
    write(failing.length === 0 ? `${allOk(findings.length)}\n` : `${failing.length} of ${findings.length} modules not ok: see ${commandLine(args, 'plan')}\n`);
  }
  if (failing.length > 0) process.exitCode = exitRuntimeError;
}

async function planAll(host: Host, modules: readonly HostModule[]): Promise<ModulePlan[]> {
  const plans: ModulePlan[] = [];
  for (const module of modules) plans.push(await planModule(module, host));
  return plans;
}

export function hostPlan(args: HostArgs): Promise<void> {
  return withHost(args, hostPlanOn);
}

async function hostPlanOn(args: HostArgs, host: Host, modules: HostModule[]): Promise<void> {
  const plans = await planAll(host, modules);
  const stepCount = plans.reduce((sum, plan) => sum + plan.steps.length, 0);
  const manual = manualFindings(plans);
  if (args.json) {
    write(`${JSON.stringify({ host: host.transport.label, steps: stepCount, plans: plans.map(jsonPlan) }, null, 1)}\n`);
  } else {
    write(`meshblock host plan: ${host.transport.label}\n`);
    write(renderPlans(plans));
    const changing = plans.filter((plan) => plan.steps.length > 0).length;
    write(stepCount === 0 ? 'nothing to change\n' : `${stepCount} change(s) in ${changing} module(s); apply with: ${commandLine(args, 'apply', ['--yes'])}\n`);
    if (manual.length > 0) write(`${manual.length} module(s) need you: ${manual.map((plan) => plan.module).join(', ')}\n`);
  }
  if (manual.length > 0) process.exitCode = exitRuntimeError;
}

async function confirm(question: string): Promise<boolean> {
  const prompt = createInterface({ input: process.stdin, output: process.stdout });
  try {
    const answer = await prompt.question(question);
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    prompt.close();
  }
}

export function hostApply(args: HostArgs): Promise<void> {
  return withHost(args, hostApplyOn);
}

async function hostApplyOn(args: HostArgs, host: Host, modules: HostModule[]): Promise<void> {
  const plans = await planAll(host, modules);
  const stepCount = plans.reduce((sum, plan) => sum + plan.steps.length, 0);
  const applied: ApplyResult[] = [];
  let failure: { module: string; message: string } | null = null;
  if (stepCount > 0) {
    if (!args.yes) {
      if (process.stdin.isTTY !== true) throw new HostCommandError('MB_ERR_NO_TTY', 'no terminal to ask: pass --yes');
      write(renderPlans(plans));
      if (!(await confirm(`apply ${stepCount} change(s) to ${host.transport.label}? [y/N] `))) {
        write('not applied: nothing changed\n');
        process.exitCode = exitRuntimeError;
        return;
      }
    }
    for (const plan of plans) {
      if (plan.steps.length === 0) continue;
      const module = modules.find((entry) => entry.name === plan.module) as HostModule;
      try {
        const result = await module.apply(host, plan.steps);
        applied.push(result);
        if (!args.json) for (const line of result.done) write(`${plan.module}: ${line}\n`);
      } catch (err) {
        if (!(err instanceof MeshblockError)) throw err;
        if (err instanceof HostStepError) {
          applied.push(err.result);
          if (!args.json) for (const line of err.result.done) write(`${plan.module}: ${line}\n`);
        }
        // The first failure stops the run: later modules may need this one (packages need
        // the repositories), and a half-prepared host should be looked at before going on.
        failure = { module: plan.module, message: err.message };
        break;
      }
    }
  }
  const findings: Finding[] = [];
  for (const module of modules) findings.push(await checkModule(module, host));
  const failing = findings.filter((finding) => !finding.ok);
  const notes = [...new Set(applied.flatMap((result) => result.notes))];
  if (args.json) {
    write(`${JSON.stringify({ host: host.transport.label, ok: failure === null && failing.length === 0, applied, failure, notes, findings }, null, 1)}\n`);
  } else {
    if (failure !== null) write(`${failure.module}: FAILED: ${failure.message}\n`);
    if (stepCount === 0) write(`meshblock host apply: ${host.transport.label}: nothing to change\n`);
    for (const note of notes) write(`note: ${note}\n`);
    for (const finding of failing) write(renderFinding(finding));
    const backups = applied.flatMap((result) => result.backups);
    if (backups.length > 0) write(`backups: ${backups.join(', ')}\n`);
    write(failing.length === 0 ? `${allOk(findings.length)}\n` : `${failing.length} of ${findings.length} modules not ok\n`);
  }
  if (failure !== null || failing.length > 0) process.exitCode = exitRuntimeError;
}

export function registerHostCommands(cli: Argv): Argv {
  return cli.command('host', 'check and prepare this host for meshblock (packages, LVM filter, nbd module, XenServer)', (host) =>
    host
      .command('check', 'check every module (or --only some) and report', (y) => hostOptions(y, 'check'), async (args) => hostCheck(args as unknown as HostArgs))
      .command('plan', 'show what apply would change: file diffs and commands', (y) => hostOptions(y, 'plan'), async (args) => hostPlan(args as unknown as HostArgs))
      .command('apply', 'make the changes (asks first unless --yes); backs up every file it edits', (y) => hostOptions(y, 'apply'), async (args) => hostApply(args as unknown as HostArgs))
      .demandCommand(1, 'host: name a subcommand (check, plan, apply)')
      .strict(),
  );
}
