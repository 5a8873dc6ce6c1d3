// The packages module: the programs meshblock needs from the distribution, installed with
// its package manager:
//   numactl       the SDS pins itself next to its devices' NUMA node (ScaleIO needs it too)
//   libaio        asynchronous IO for fio and the benchmarks (Debian: libaio1)
//   nbd-client    the kernel NBD client's user side (RHEL family: the `nbd` package)
// rpm -q / yum install -y on the RHEL family (CentOS, XenServer's Dom0), dpkg-query -W /
// apt-get install -y on Debian. A package no enabled repository offers is the usual failure
// on XenServer (CentOS's repositories ship disabled); the error names the repository to enable.

import { detectOs, type HostOs } from './host-os.js';
import {
  applySteps,
  commandStep,
  formatArgv,
  HostModuleError,
  isNotFound,
  lastLine,
  resolveTool,
  toolLabel,
  type ApplyResult,
  type CommandStep,
  type Finding,
  type Host,
  type HostModule,
  type Step,
} from './host-module.js';
import type { RunResult } from './host-transport.js';
import { centosBaseRepoPath, reposEnabled } from './yum-repos.js';

export const rhelPackages: readonly string[] = ['numactl', 'libaio', 'nbd'];
export const debianPackages: readonly string[] = ['numactl', 'libaio1', 'nbd-client'];
/** A yum or apt-get run downloads; slow mirrors are slow, hung ones are killed at this. */
export const installTimeoutMs = 15 * 60_000;

export interface PackageState {
  name: string;
  installed: boolean;
  /** What the package database said: the version installed, or why not. */
  said: string;
}

interface PackagesView {
  os: HostOs;
  packages: PackageState[];
  queriedWith: string;
}

/** rpm -q prints one line per package, in order: its name-version, or "package X is not installed". */
export function parseRpmQuery(names: readonly string[], stdout: string): PackageState[] {
  const lines = stdout.split('\n').filter((line) => line.trim() !== '');
  return names.map((name, index) => {
    const line = (lines[index] ?? '').trim();
    const installed = line !== '' && !/is not installed$/.test(line);
    return { name, installed, said: line || 'no answer from rpm' };
  });
}

/** dpkg-query -W -f '${Package}\t${Status}\n': "install ok installed" when installed. */
export function parseDpkgQuery(names: readonly string[], stdout: string): PackageState[] {
  const statuses = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const [name, status] = line.split('\t');
    if (name !== undefined && status !== undefined) statuses.set(name.replace(/:.*$/, ''), status.trim());
  }
  return names.map((name) => {
    const status = statuses.get(name);
    return { name, installed: status !== undefined && / installed$/.test(status), said: status ?? 'unknown to dpkg' };
  });
}

async function packagesView(host: Host): Promise<PackagesView> {
  const os = await detectOs(host.transport);
  if (os.family === 'rhel') {
    const rpm = await resolveTool(host, 'rpm');
    const result = await host.transport.run(rpm.command, ['-q', ...rhelPackages]);
    if (isNotFound(result)) throw new HostModuleError('MB_ERR_HOST_TOOL_MISSING', `rpm is not installed on this yum host (${os.name})`);
    // rpm -q exits with the number of packages not installed.
    if (result.code > rhelPackages.length) throw new HostModuleError('MB_ERR_HOST_QUERY', `rpm -q failed (exit ${result.code}): ${lastLine(result.stderr)}`);
    return { os, packages: parseRpmQuery(rhelPackages, result.stdout), queriedWith: toolLabel(rpm) };
  }
  if (os.family === 'debian') {
    const dpkgQuery = await resolveTool(host, 'dpkg-query');
    const result = await host.transport.run(dpkgQuery.command, ['-W', '-f=${Package}\\t${Status}\\n', ...debianPackages]);
    if (isNotFound(result)) throw new HostModuleError('MB_ERR_HOST_TOOL_MISSING', `dpkg-query is not installed on this Debian host (${os.name})`);
    // Exit 1: some package is unknown to dpkg (said on stderr); the others are still listed.
    if (result.code > 1) throw new HostModuleError('MB_ERR_HOST_QUERY', `dpkg-query failed (exit ${result.code}): ${lastLine(result.stderr)}`);
    return { os, packages: parseDpkgQuery(debianPackages, result.stdout), queriedWith: toolLabel(dpkgQuery) };
  }
  throw new HostModuleError('MB_ERR_HOST_OS_UNKNOWN', `cannot tell which package manager this host uses: ${os.evidence}`);
}

/** What to enable when yum or apt-get cannot find `missing`. */
async function repositoryAdvice(host: Host, os: HostOs, missing: readonly string[]): Promise<string> {
  if (os.family === 'debian') return "enable Debian's main repository in /etc/apt/sources.list, then run apt-get update";
  const repo = await host.transport.readFile(centosBaseRepoPath);
  let disabled: string[] = [];
  try {
    disabled = repo === null ? [] : [...reposEnabled(repo)].filter(([, enabled]) => !enabled).map(([name]) => name);
  } catch {
    // A damaged repo file is the yum-repos module's finding; the advice stays general.
  }
  if (disabled.length > 0) return 'enable the CentOS base repository: meshblock host apply --only yum-repos';
  const epel = missing.includes('nbd') ? '; CentOS 7 has nbd in EPEL only (yum install epel-release)' : '';
  return `enable a repository that has them: the CentOS base repository (${centosBaseRepoPath})${epel}`;
}

/** Packages yum or apt-get said they cannot find. */
export function unavailablePackages(output: string): string[] {
  const names = new Set<string>();
  for (const match of output.matchAll(/No package (\S+) available/g)) names.add(match[1] as string);
  for (const match of output.matchAll(/Unable to locate package (\S+)/g)) names.add(match[1] as string);
  for (const match of output.matchAll(/Package '?([^'\s]+)'? has no installation candidate/g)) names.add(match[1] as string);
  return [...names];
}

export const packagesModule: HostModule = {
  name: 'packages',
  description: 'numactl, libaio and nbd-client installed (yum or apt)',

  async check(host: Host): Promise<Finding> {
    const view = await packagesView(host);
    const missing = view.packages.filter((entry) => !entry.installed).map((entry) => entry.name);
    return {
      module: 'packages',
      applicable: true,
      ok: missing.length === 0,
      summary: missing.length === 0 ? `${view.packages.map((entry) => entry.name).join(', ')} installed` : `not installed: ${missing.join(', ')}`,
      details: [view.os.evidence, `queried with ${view.queriedWith}`, ...view.packages.map((entry) => `${entry.name}: ${entry.installed ? entry.said : `not installed (${entry.said})`}`)],
    };
  },

  async plan(host: Host): Promise<Step[]> {
    const view = await packagesView(host);
    const missing = view.packages.filter((entry) => !entry.installed).map((entry) => entry.name);
    if (missing.length === 0) return [];
    if (view.os.family === 'rhel') {
      const yum = await resolveTool(host, 'yum');
      return [commandStep([yum.command, 'install', '-y', ...missing], `install ${missing.join(', ')}`, installTimeoutMs)];
    }
    const aptGet = await resolveTool(host, 'apt-get');
    return [
      commandStep([aptGet.command, 'update'], 'refresh the package lists', installTimeoutMs),
      commandStep([aptGet.command, 'install', '-y', ...missing], `install ${missing.join(', ')}`, installTimeoutMs),
    ];
  },

  async apply(host: Host, steps: readonly Step[]): Promise<ApplyResult> {
    const os = await detectOs(host.transport);
    const installing = (step: CommandStep) => step.argv[1] === 'install';
    return applySteps(host, packagesModule, steps, {
      async explainFailure(step: CommandStep, result: RunResult) {
        const unavailable = unavailablePackages(`${result.stdout}\n${result.stderr}`);
        if (!installing(step) || unavailable.length === 0) return undefined;
        return `${formatArgv(step.argv)}: no enabled repository has ${unavailable.join(', ')}: ${await repositoryAdvice(host, os, unavailable)}`;
      },
      async verify(step: CommandStep, result: RunResult) {
        // yum exits 0 when it installed some of the packages and found no others.
        if (!installing(step)) return undefined;
        const view = await packagesView(host);
        const missing = view.packages.filter((entry) => !entry.installed).map((entry) => entry.name);
        if (missing.length === 0) return undefined;
        const unavailable = unavailablePackages(`${result.stdout}\n${result.stderr}`);
        const advice = await repositoryAdvice(host, os, missing);
        return `${formatArgv(step.argv)} left ${missing.join(', ')} not installed${unavailable.length > 0 ? ` (no package ${unavailable.join(', ')} available)` : ''}: ${advice}`;
      },
    });
  },
};
