// meshblock install --csv FILE: a whole cluster over SSH from ScaleIO's CSV, phase by phase
// (src/hostsetup/installer.ts), and `meshblock install --template 3|5` for a CSV to start
// from. SSH: a key (--identity, or the CSV's Password column per host), host keys checked
// against --known-hosts (--accept-new-host-key records unknown ones). An MDM cluster's etcd
// PKI and the MDMs' shared REST certificate are made here, by src/mdm/etcd-pki.ts and
// src/mdm/tls.ts, which this layer hands to the installer (src/hostsetup may not import src/mdm).
// --sds-shards sets how many shard processes each SDS host runs (default auto: half its cores,
// no more than its devices; see src/hostsetup/installer.ts). --parallel bounds how many hosts
// are worked on at once.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Argv } from 'yargs';
import { InvalidArgumentError } from '../common/errors.js';
import { installParallelDefault, installParallelMax, sdsShardsMax } from '../common/limits.js';
import { parseSizeBytes } from '../common/units.js';
import { dom0MemDefault, parseDom0Mem } from '../hostsetup/dom0-memory.js';
import { installCsvTemplate, parseInstallCsv, type InstallHost } from '../hostsetup/install-csv.js';
import { defaultWorkDir, Installer, installPhases, installPrefixDefault, type InstallPhase, type InstallVolume } from '../hostsetup/installer.js';
import { parseShardCount } from '../common/sds-shards.js';
import { nbdsMaxDefault } from '../hostsetup/nbd-attach.js';
import { defaultIdentityFile, SshTransport } from '../hostsetup/ssh-transport.js';
import { createEtcdPki } from '../mdm/etcd-pki.js';
import { ensureSelfSignedCertificate } from '../mdm/tls.js';

export interface InstallArgs {
  csv: string | undefined;
  template: number | undefined;
  identity: string | undefined;
  'known-hosts': string;
  'accept-new-host-key': boolean;
  phase: string[] | undefined;
  'dry-run': boolean;
  prefix: string;
  volume: string[] | undefined;
  'dom0-mem': string;
  'state-dir': string | undefined;
  'sds-shards': string;
  parallel: string;
}

const appRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export function installOptions(yargs: Argv): Argv<InstallArgs> {
  return yargs
    .option('csv', { type: 'string', describe: 'the cluster, one host per row (ScaleIO Installation Manager columns)', requiresArg: true })
    .option('template', { type: 'number', describe: 'print a CSV template for the 3-node or 5-node layout', requiresArg: true })
    .option('identity', { type: 'string', describe: 'SSH private key [default: ~/.ssh/id_ed25519, else ~/.ssh/id_rsa]; rows with a Password log in with it instead', requiresArg: true })
    .option('known-hosts', { type: 'string', default: path.join(os.homedir(), '.ssh', 'known_hosts'), describe: 'host keys to check against', requiresArg: true })
    .option('accept-new-host-key', { type: 'boolean', default: false, describe: 'record the key of a host not in --known-hosts (a changed key is always refused)' })
    .option('phase', { type: 'string', array: true, describe: `run only these phases (comma-separated: ${installPhases.join(', ')}) [default: all]`, requiresArg: true })
    .option('dry-run', { type: 'boolean', default: false, describe: 'query the hosts and print what would be done; change nothing' })
    .option('prefix', { type: 'string', default: installPrefixDefault, describe: 'where meshblock and its Node runtime go on each host', requiresArg: true })
    .option('volume', { type: 'string', array: true, describe: 'NAME:SIZE to create in the first pool and map to every SDC (repeatable)', requiresArg: true })
    .option('sds-shards', {
      type: 'string',
      default: 'auto',
      describe: `SDS processes per SDS host, 1 to ${sdsShardsMax}, each a shard with its own core and devices (auto: half the host's cores, at most one per device in the CSV; an installed SDS keeps its count)`,
      requiresArg: true,
    })
    .option('parallel', {
      type: 'string',
      default: String(installParallelDefault),
      describe: `hosts worked on at once in each phase, 1 to ${installParallelMax} (configure still starts the MDMs one after another)`,
      requiresArg: true,
    })
    .option('dom0-mem', { type: 'string', default: dom0MemDefault, describe: 'XenServer Dom0 memory (dom0_mem=SIZE,max:SIZE)', requiresArg: true })
    .option('state-dir', {
      type: 'string',
      describe: "what this machine keeps for an MDM cluster: the etcd CA and certificates, the MDMs' REST certificate, the admin password (keep it; later runs need the same) [default: ~/.meshblock/install/MASTER-IP]",
      requiresArg: true,
    })
    .check((argv) => {
      if ((argv.csv === undefined) === (argv.template === undefined)) throw new InvalidArgumentError('--csv/--template', 'give one of them');
      if (argv.template !== undefined && argv.template !== 3 && argv.template !== 5) throw new InvalidArgumentError('--template', `must be 3 or 5, got ${String(argv.template)}`);
      parsePhases(argv.phase as string[] | undefined);
      parseVolumes(argv.volume as string[] | undefined);
      parseDom0Mem('--dom0-mem', argv['dom0-mem'] as string);
      parseShardCount('--sds-shards', argv['sds-shards'] as string);
      parseParallel(argv.parallel as string);
      if (!(argv.prefix as string).startsWith('/')) throw new InvalidArgumentError('--prefix', 'must be an absolute path');
      return true;
    }) as unknown as Argv<InstallArgs>;
}

function parseParallel(given: string): number {
  const count = /^[0-9]+$/.test(given.trim()) ? Number(given.trim()) : Number.NaN;
  if (!(count >= 1 && count <= installParallelMax)) throw new InvalidArgumentError('--parallel', `must be a whole number from 1 to ${installParallelMax}, got '${given}'`);
  return count;
}

function parsePhases(given: string[] | undefined): InstallPhase[] {
  if (given === undefined) return [...installPhases];
  const names = given.flatMap((entry) => entry.split(',')).map((entry) => entry.trim()).filter((entry) => entry !== '');
  for (const name of names) {
    if (!(installPhases as readonly string[]).includes(name)) throw new InvalidArgumentError('--phase', `unknown phase '${name}' (phases: ${installPhases.join(', ')})`);
  }
  return installPhases.filter((phase) => names.includes(phase));
}

function parseVolumes(given: string[] | undefined): InstallVolume[] {
  return (given ?? []).map((text) => {
    const match = /^([A-Za-z0-9][A-Za-z0-9_.-]{0,30}):(.+)$/.exec(text);
    if (match === null) throw new InvalidArgumentError('--volume', `expected NAME:SIZE, got '${text}'`);
    return { name: match[1] as string, sizeBytes: parseSizeBytes('--volume', match[2] as string) };
  });
}

export async function installCommand(args: InstallArgs): Promise<void> {
  if (args.template !== undefined) {
    process.stdout.write(installCsvTemplate(args.template as 3 | 5));
    return;
  }
  const csvPath = args.csv as string;
  let text: string;
  try {
    text = fs.readFileSync(csvPath, 'utf8');
  } catch (err) {
    throw new InvalidArgumentError('--csv', `cannot read ${csvPath}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const plan = parseInstallCsv(text);
  const identityFile = args.identity ?? defaultIdentityFile();
  let privateKey: string | undefined;
  if (identityFile !== undefined) {
    try {
      privateKey = fs.readFileSync(identityFile, 'utf8');
    } catch (err) {
      throw new InvalidArgumentError('--identity', `cannot read ${identityFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  const keyless = plan.hosts.filter((host) => host.password === '' && privateKey === undefined);
  if (keyless.length > 0) throw new InvalidArgumentError('--identity', `row ${keyless[0]?.row} has no password and no SSH key was found: give --identity`);
  const installer = new Installer({
    plan,
    connect: (host: InstallHost) =>
      SshTransport.connect({
        target: { user: host.username, host: host.address, port: host.sshPort },
        credentials: host.password !== '' ? { password: host.password } : { privateKey: privateKey as string },
        knownHostsFile: args['known-hosts'],
        acceptNewHostKey: args['accept-new-host-key'],
      }),
    phases: parsePhases(args.phase),
    dryRun: args['dry-run'],
    prefix: args.prefix,
    volumes: parseVolumes(args.volume),
    sdsShards: parseShardCount('--sds-shards', args['sds-shards']),
    hostOptions: { dom0Mem: args['dom0-mem'], nbdsMax: nbdsMaxDefault },
    appRoot,
    workDir: defaultWorkDir(),
    stateDir: args['state-dir'] ?? path.join(os.homedir(), '.meshblock', 'install', plan.mdmHost.address),
    createEtcdPki,
    createApiCertificate: ensureSelfSignedCertificate,
    parallel: parseParallel(args.parallel),
    report: (line) => process.stdout.write(`${line}\n`),
  });
  await installer.run();
}
