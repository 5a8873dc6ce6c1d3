// Which kind of host this is: the package family (yum or apt) and whether it is a XenServer
// Dom0. From /etc/os-release where the host has one; else from the files only one family
// has, and the finding says which file decided (a fixture tree or an old release may lack
// os-release, and a guess should be visible as one).

import type { HostTransport } from './host-transport.js';

export const osReleasePath = '/etc/os-release';
export const xensourceInventoryPath = '/etc/xensource-inventory';
export const xenCmdlinePath = '/opt/xensource/libexec/xen-cmdline';
export const redhatReleasePath = '/etc/redhat-release';
export const debianVersionPath = '/etc/debian_version';
export const yumReposDir = '/etc/yum.repos.d';

export type OsFamily = 'rhel' | 'debian' | 'unknown';

export interface HostOs {
  /** rhel: yum and rpm (CentOS, RHEL, XenServer's Dom0); debian: apt and dpkg. */
  family: OsFamily;
  /** What the host calls itself, or what the deciding file suggests. */
  name: string;
  xenServer: boolean;
  /** How this was decided, for findings. */
  evidence: string;
}

const rhelIds = new Set(['rhel', 'centos', 'fedora', 'xenenterprise', 'rocky', 'almalinux', 'ol', 'amzn', 'scientific']);
const debianIds = new Set(['debian', 'ubuntu', 'raspbian', 'linuxmint']);

/** os-release(5): KEY=value lines, values optionally quoted. */
export function parseOsRelease(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const match = /^\s*([A-Z0-9_]+)=(.*?)\s*$/.exec(line);
    if (match === null) continue;
    let value = match[2] as string;
    const quoted = /^(["'])(.*)\1$/.exec(value);
    if (quoted !== null) value = (quoted[2] as string).replace(/\\(["'$`\\])/g, '$1');
    fields.set(match[1] as string, value);
  }
  return fields;
}

export async function detectOs(transport: HostTransport): Promise<HostOs> {
  const hasInventory = await transport.exists(xensourceInventoryPath);
  const hasXenCmdline = await transport.exists(xenCmdlinePath);
  const xenEvidence = hasInventory ? xensourceInventoryPath : hasXenCmdline ? xenCmdlinePath : null;
  const osRelease = await transport.readFile(osReleasePath);
  if (osRelease !== null) {
    const fields = parseOsRelease(osRelease);
    const id = (fields.get('ID') ?? '').toLowerCase();
    const like = (fields.get('ID_LIKE') ?? '').toLowerCase().split(/\s+/);
    const ids = [id, ...like];
    const family: OsFamily = ids.some((entry) => rhelIds.has(entry)) ? 'rhel' : ids.some((entry) => debianIds.has(entry)) ? 'debian' : 'unknown';
    return {
      family,
      name: fields.get('PRETTY_NAME') ?? fields.get('NAME') ?? (id || 'unknown'),
      xenServer: xenEvidence !== null || id === 'xenenterprise',
      evidence: `${osReleasePath} says ID=${id || '(none)'}${like[0] ? ` ID_LIKE=${like.join(' ')}` : ''}`,
    };
  }
  const xenServer = xenEvidence !== null;
  if (hasInventory) return { family: 'rhel', name: 'XenServer', xenServer, evidence: `no ${osReleasePath}; ${xensourceInventoryPath} exists: XenServer Dom0 (yum)` };
  const redhatRelease = await transport.readFile(redhatReleasePath);
  if (redhatRelease !== null) {
    return { family: 'rhel', name: redhatRelease.trim().split('\n')[0] || 'RHEL family', xenServer, evidence: `no ${osReleasePath}; ${redhatReleasePath} exists: RHEL family (yum)` };
  }
  const debianVersion = await transport.readFile(debianVersionPath);
  if (debianVersion !== null) {
    return { family: 'debian', name: `Debian ${debianVersion.trim()}`, xenServer, evidence: `no ${osReleasePath}; ${debianVersionPath} exists: Debian family (apt)` };
  }
  if (await transport.exists(yumReposDir)) {
    return { family: 'rhel', name: 'a yum host', xenServer, evidence: `no ${osReleasePath}, ${redhatReleasePath} or ${debianVersionPath}; ${yumReposDir} exists: taken as a yum host` };
  }
  return {
    family: 'unknown',
    name: 'unknown',
    xenServer,
    evidence: `no ${osReleasePath}, ${redhatReleasePath}, ${debianVersionPath} or ${yumReposDir}: the OS family is unknown`,
  };
}
