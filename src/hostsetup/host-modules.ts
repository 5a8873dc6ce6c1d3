// Every host module, in the order apply runs them: the repositories before the packages
// that need them, the packages before the checks of what they install, host files next,
// and last what needs the rest (an SR needs LVM to accept the attached NBD device).

import { InvalidArgumentError, MeshblockError } from '../common/errors.js';
import { disksModule } from './disks.js';
import { dom0MemoryModule } from './dom0-memory.js';
import { moduleNames, type Finding, type Host, type HostModule, type ModuleName, type Step } from './host-module.js';
import { lvmFilterModule } from './lvm-filter.js';
import { nbdModuleModule } from './nbd-module.js';
import { packagesModule } from './packages.js';
import { prereqsModule } from './prereqs.js';
import { xenSrModule } from './xen-sr.js';
import { yumReposModule } from './yum-repos.js';

export const hostModules: readonly HostModule[] = [
  yumReposModule,
  packagesModule,
  prereqsModule,
  lvmFilterModule,
  nbdModuleModule,
  dom0MemoryModule,
  disksModule,
  xenSrModule,
];

/** The modules `--only a,b` names, in apply order; every name must be known. */
export function selectModules(only: readonly string[] | undefined): HostModule[] {
  if (only === undefined || only.length === 0) return [...hostModules];
  const wanted = new Set<string>();
  for (const name of only.flatMap((entry) => entry.split(',')).map((entry) => entry.trim()).filter((entry) => entry !== '')) {
    if (!(moduleNames as readonly string[]).includes(name)) throw new InvalidArgumentError('--only', `unknown module '${name}' (modules: ${moduleNames.join(', ')})`);
    wanted.add(name);
  }
  if (wanted.size === 0) throw new InvalidArgumentError('--only', `name at least one module (${moduleNames.join(', ')})`);
  return hostModules.filter((module) => wanted.has(module.name));
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A module's check, with a failure to check turned into a finding that says why. */
export async function checkModule(module: HostModule, host: Host): Promise<Finding> {
  try {
    return await module.check(host);
  } catch (err) {
    if (!(err instanceof MeshblockError)) throw err;
    return { module: module.name, applicable: true, ok: false, summary: `cannot check: ${message(err)}`, details: [] };
  }
}

export interface ModulePlan {
  module: ModuleName;
  finding: Finding;
  steps: Step[];
  /** Why the module could not plan; its steps are then empty. */
  error: string | null;
}

export async function planModule(module: HostModule, host: Host): Promise<ModulePlan> {
  const finding = await checkModule(module, host);
  try {
    return { module: module.name, finding, steps: await module.plan(host), error: null };
  } catch (err) {
    if (!(err instanceof MeshblockError)) throw err;
    return { module: module.name, finding, steps: [], error: message(err) };
  }
}
