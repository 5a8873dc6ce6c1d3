// `meshblock install --csv`: a whole cluster from the ScaleIO-style CSV, over SSH, in the
// Installation Manager's four phases. Every phase is idempotent (it looks before it acts), so
// a failed run is resumed by running it again, or from a phase with `--phase`.
//
//   query      connect to every host (host keys checked), read its OS, check each SDS device
//              exists and holds nothing (blkid), and run the host modules' checks
//   upload     the runtime bundle (runtime-bundle.ts: this meshblock, its production
//              node_modules and native addon, and this Node with its own loader and C
//              library, so it runs whatever the host's glibc) to PREFIX on each host, unless
//              the host has the same bundle (its hash is in PREFIX/BUNDLE)
//   install    the host modules (repositories, packages, LVM filter, nbd module, dom0 memory)
//              applied; /usr/local/bin/meshblock; systemd units for the host's roles
//   configure  with an MDM cluster (3 or 5 members: Master, Slaves, TBs), first the etcd PKI
//              made on this machine (in --state-dir, kept: a later run must use the same CA),
//              each member host given its certificates, Debian's own etcd.service stopped
//              there, and an etcd member started on each; the MDMs' shared REST certificate
//              and the admin password (both made here too, kept in --state-dir) given to each
//              MDM host; the MDM started on the Master host, then on each Slave; the cluster
//              id and secret carried to the others; SDSs and SDCs started, told every MDM's
//              address; protection domains, fault sets, pools, SDSs and devices set up through
//              the management CLI on the Master host (one MDM: its API stays on that host's
//              loopback; a cluster: every MDM's API on its MDM IP, the CLI given them all, so
//              it follows the Master); volumes from --volume created and mapped to every SDC
//
// An SDS host's SDS runs as N shards (`sds start --shards N`: N SDS processes NAME.1..NAME.N,
// one core each; docs/cores.md), N chosen per host in query: --sds-shards, else half the
// host's cores (read over SSH) but no more than its devices in the CSV, at least 1; an SDS
// already installed keeps its count (its devices hold its shards' data). Configure waits for
// every shard to register, adds each to the protection domain and fault set, and gives the
// host's devices to the shards round-robin in CSV order. With N = 1 the command lines are
// those of before shards.
//
// Hosts are worked on in parallel, up to --parallel at once (installParallelDefault), in
// query, upload, install and configure's per-host steps; what the cluster needs in order stays
// in order (configure starts the Master's MDM alone, then each Slave's, before any SDS or SDC,
// and adds objects on the Master host one command after another). Output lines are prefixed
// with the host's label, and each host's part of each step ends with a line of its own
// (`LABEL: upload done in 12.3 s`, or `LABEL: upload FAILED: why`). A host that fails does not
// stop the others of its step: they all finish, then the run stops, naming every host that
// failed and why; nothing later runs. `--dry-run` runs query (read-only) and prints what the
// other phases would do on each host.
//
// SSH commands: every command is a session of its own, and sshd starts the login shell for
// each (a slow ~/.bashrc makes each cost its time), so a step is one command where it can be:
// query reads a host's OS, architecture and devices in one script, files are put in one script
// per host (each replaced only if its text differs), and configure lists the MDM's objects
// and adds what is missing in one command each.
//
// Services (service-units.ts): with systemd running on the host (/run/systemd/system), a unit
// and `systemctl enable --now`; without it (XenServer 6.5's Dom0, containers, the test hosts),
// a SysV init script /etc/init.d/meshblock-ROLE, enabled at boot (chkconfig, else rc links)
// and started. Either way a daemon already running is left alone.

import { randomBytes, X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isIP } from 'node:net';
import { formatHostPort } from '../common/address.js';
import { MeshblockError } from '../common/errors.js';
import { installParallelDefault, installScriptBytesMax, nameBytesMax } from '../common/limits.js';
import { autoShardCount, shardName, shardNameTooLong, type ShardCountRequest } from '../common/sds-shards.js';
import { formatArgv, systemToolDirs, type Host, type HostOptions } from './host-module.js';
import { debianVersionPath, osReleasePath, redhatReleasePath, xenCmdlinePath, xensourceInventoryPath, yumReposDir } from './host-os.js';
import { selectModules } from './host-modules.js';
import { ReadAheadTransport, shellQuote as quote, type HostTransport } from './host-transport.js';
import { lvmConfPath } from './lvm-filter.js';
import { modprobeConfPath, modulesLoadPath, nbdSysModulePath } from './nbd-module.js';
import { centosBaseRepoPath } from './yum-repos.js';
import type { InstallHost, InstallPlan } from './install-csv.js';
import { buildRuntimeBundle, bundleCommandPath, etcdSourcePath, etcdToBundle, type RuntimeBundle } from './runtime-bundle.js';
import { debianEtcdUnit, installedCommandLine, installService, readInstalledService } from './service-units.js';

export const installPhases = ['query', 'upload', 'install', 'configure'] as const;
export type InstallPhase = (typeof installPhases)[number];

export const installPrefixDefault = '/opt/meshblock';
export const mdmPort = 6611;
export const sdsPort = 7072;
export const apiPort = 8443;
/** One MDM's REST API: on its host's loopback only (management runs there, over SSH). */
export const apiAddress = `127.0.0.1:${apiPort}`;
export const etcdClientPort = 2379;
export const etcdPeerPort = 2380;
const dataRoot = '/var/lib/meshblock';
const configDir = '/etc/meshblock';
const logDir = '/var/log/meshblock';
const secretFile = `${configDir}/cluster.secret`;
/** Where a member host keeps its etcd certificates (inside configDir, which is 0700). */
const etcdPkiDir = `${configDir}/etcd-pki`;
const etcdDataDir = `${dataRoot}/etcd`;
/**
 * An MDM cluster's REST certificate and admin password, the same on every MDM host: a Slave
 * forwards REST requests to the Master's API with the certificate the Master published, and
 * clients pin one certificate and log in with one password whichever MDM answers. A single
 * MDM makes its own of both in its data directory instead (as before the cluster).
 */
const apiCertFile = `${configDir}/api.crt`;
const apiKeyFile = `${configDir}/api.key`;
const adminPasswordFile = `${configDir}/admin.password`;
/** In --state-dir: the REST certificate's directory and the admin password. */
const stateApiDir = 'api';
const stateAdminPasswordFile = 'admin.password';
const startWaitMs = 60_000;
/** The modules the install phase applies, in order (disks and xen-sr are the administrator's). */
const installModules = ['yum-repos', 'packages', 'prereqs', 'lvm-filter', 'nbd-module', 'dom0-memory'];

export class InstallError extends MeshblockError {}

/** The SDS names a host's SDS registers under: NAME for one process, NAME.1..NAME.N for N shards. */
export function sdsShardNames(name: string, shardCount: number): string[] {
  return shardCount === 1 ? [name] : Array.from({ length: shardCount }, (_unused, index) => shardName(name, index + 1));
}

/** The SDS each of the host's devices is added to: round-robin over the shards in CSV order. */
export function deviceShards(host: InstallHost, shardCount: number): Array<{ device: NonNullable<InstallHost['sds']>['devices'][number]; sdsName: string }> {
  const sds = host.sds as NonNullable<InstallHost['sds']>;
  const names = sdsShardNames(sds.name, shardCount);
  return sds.devices.map((device, index) => ({ device, sdsName: names[index % names.length] as string }));
}

/**
 * The shard count of the SDS an installed unit runs (the --shards of its `sds start`, 1
 * without), or null when the text is no SDS unit (nothing installed yet).
 */
export function installedSdsShards(unit: string | null): number | null {
  const execStart = /^sds start (.*)$/.exec(installedCommandLine(unit) ?? '')?.[1];
  if (execStart === undefined) return null;
  const shards = / --shards ([0-9]+)(?: |$)/.exec(` ${execStart}`)?.[1];
  return shards === undefined ? 1 : Number(shards);
}

/** An SDS host's shard count, chosen in query, and why (for the query line). */
export interface SdsShardChoice {
  count: number;
  why: string;
}

export interface InstallVolume {
  name: string;
  sizeBytes: number;
}

/** What createEtcdPki (src/mdm/etcd-pki.ts) is asked to make: one pair per member and per MDM. */
export interface EtcdPkiRequest {
  members: Array<{ name: string; ips: string[] }>;
  clients: string[];
}

/**
 * createEtcdPki of src/mdm/etcd-pki.ts, handed in by the CLI: src/hostsetup may not import
 * src/mdm (the layering rule), and the installer needs only this one call of it.
 */
export type CreateEtcdPki = (dir: string, request: EtcdPkiRequest) => unknown;

/**
 * ensureSelfSignedCertificate of src/mdm/tls.ts, handed in by the CLI for the same reason:
 * makes DIR/api.crt and DIR/api.key at the first call (with these subjectAltNames), keeps
 * them afterwards, and says where they are.
 */
export type CreateApiCertificate = (dir: string, options: { subjectAltNames: readonly string[] }) => { certPath: string; keyPath: string };

export interface InstallOptions {
  plan: InstallPlan;
  /** Opens the transport to a host (SSH; tests may give another). */
  connect: (host: InstallHost) => Promise<ConnectedTransport>;
  phases: readonly InstallPhase[];
  dryRun: boolean;
  prefix: string;
  volumes: readonly InstallVolume[];
  /** --sds-shards: the shard count of every SDS host not installed yet, or auto. */
  sdsShards: ShardCountRequest;
  hostOptions: HostOptions;
  /** The meshblock to install (this one's directory), shipped with this Node as a runtime bundle. */
  appRoot: string;
  /** Where the bundle is built. */
  workDir: string;
  /**
   * This cluster's lasting state on this machine, with an MDM cluster: the etcd PKI
   * (`etcd-pki/`, its CA key included), the MDMs' REST certificate (`api/api.crt`, `.key`)
   * and the admin password (`admin.password`). Kept between runs: a run that made a new CA
   * would hand out certificates the running members do not trust, a new password would not
   * be the cluster's.
   */
  stateDir: string;
  createEtcdPki: CreateEtcdPki;
  createApiCertificate: CreateApiCertificate;
  /** Hosts worked on at once [installParallelDefault]. */
  parallel?: number;
  report: (line: string) => void;
}

type Role = 'etcd' | 'mdm' | 'sds' | 'sdc';

/** One object of `meshblock TYPE list --json`. */
type ManagedObject = { name: string; id: string } & Record<string, unknown>;

/** A Master, Slave or TB host: one with an etcd member (only with 3 or 5 members). */
type MemberHost = InstallHost & { member: NonNullable<InstallHost['member']> };

/** What connect gives: a transport, and what an SSH one has besides. */
type ConnectedTransport = HostTransport & {
  close?: () => void;
  upload?: (local: string, remote: string, mode?: number) => Promise<void>;
  /** Copies a local file to a temporary file of the host's (SFTP alone, no command), and says where. */
  stage?: (local: string) => Promise<string>;
};

interface Session {
  host: InstallHost;
  label: string;
  /** The host's transport, its reads answered from a read-ahead where one was made (moduleReadAheadFiles, moduleReadAheadTools). */
  transport: ReadAheadTransport & Pick<ConnectedTransport, 'close' | 'upload' | 'stage'>;
}

/**
 * What the host modules read of a host in their checks and plans (their OS detection in
 * host-os.ts, the tools they look for, lvm.conf, the nbd module's files), read ahead in one
 * command before them: each is otherwise a command of its own, several of them read by every
 * module. A path not listed is read as before: the list only saves commands.
 */
const moduleReadAheadFiles: readonly string[] = [
  osReleasePath, xensourceInventoryPath, xenCmdlinePath, redhatReleasePath, debianVersionPath, yumReposDir, centosBaseRepoPath,
  lvmConfPath, modulesLoadPath, modprobeConfPath, nbdSysModulePath,
];
/** The tools the modules look for (resolveTool): only whether each candidate path exists. */
const moduleReadAheadTools: readonly string[] = ['openssl', 'node', 'nbd-client', 'rpm', 'dpkg-query', 'yum', 'apt-get', 'modprobe'].flatMap((tool) => systemToolDirs.map((dir) => `${dir}/${tool}`));

async function sh(session: Session, script: string, timeoutMs = 120_000): Promise<string> {
  const result = await session.transport.run('sh', ['-c', script], { timeoutMs });
  if (result.code !== 0) {
    const said = (result.stderr.trim() || result.stdout.trim()).split('\n').slice(-3).join(' / ');
    throw new InstallError('MB_ERR_INSTALL_STEP', `${session.label}: ${script.split('\n')[0]?.slice(0, 120)} failed (exit ${result.code}): ${said || 'no output'}`);
  }
  return result.stdout;
}

/** A file the installer gives a host. */
export interface HostFile {
  path: string;
  text: string;
  mode: number;
}

/**
 * A POSIX sh script giving the host these files, each replaced only where its text differs
 * (a temporary file in the same directory, then mv: never half a file), printing
 * `changed PATH` for each it replaced. One SSH command for what was a read and a write per
 * file. The texts are in the script, single-quoted (any byte but NUL passes), so the script
 * needs no stdin; without `cmp` (a host without diffutils) every file is rewritten.
 */
export function putFilesScript(files: readonly HostFile[]): string {
  const lines = ['set -e', 't=', `trap 'if [ -n "$t" ]; then rm -f "$t"; fi' EXIT`];
  for (const file of files) {
    if (!file.path.startsWith('/')) throw new InstallError('MB_ERR_INSTALL_STEP', `host paths are absolute: '${file.path}'`);
    const target = quote(file.path);
    const directory = quote(path.posix.dirname(file.path));
    lines.push(
      `mkdir -p ${directory}`,
      `t=$(mktemp ${directory}/.meshblock-put-XXXXXX)`,
      `printf '%s' '${file.text.replace(/'/g, "'\\''")}' > "$t"`,
      `if cmp -s "$t" ${target} 2>/dev/null; then rm -f "$t"; else chmod ${file.mode.toString(8)} "$t" && mv -f "$t" ${target} && echo changed ${target}; fi`,
      't=',
    );
  }
  const script = `${lines.join('\n')}\n`;
  if (Buffer.byteLength(script) > installScriptBytesMax) {
    throw new InstallError('MB_ERR_INSTALL_STEP', `files ${files.map((file) => file.path).join(', ')} are ${Buffer.byteLength(script)} bytes as a script, over the ${installScriptBytesMax} one command may carry`);
  }
  return script;
}

/** The paths a putFilesScript run replaced, from its output. */
export function changedFiles(output: string): string[] {
  return output
    .split('\n')
    .filter((line) => line.startsWith('changed '))
    .map((line) => line.slice('changed '.length));
}

/** A line no file's text will hold, to cut one command's output into sections. */
function sectionMarker(): string {
  return `@@meshblock-${randomBytes(6).toString('hex')}@@`;
}

/**
 * The line that starts a section of a script's output: a newline first, so a section whose
 * output does not end with one (a file without a last newline) still leaves the marker a
 * line of its own.
 */
function markerLine(marker: string, name: string): string {
  return `printf '\\n%s\\n' '${marker} ${name}'`;
}

/** The output of a script that printed markerLine(MARKER, NAME) before each section, cut into them. */
export function outputSections(output: string, marker: string): Array<{ name: string; body: string }> {
  const sections: Array<{ name: string; body: string }> = [];
  for (const line of output.split('\n')) {
    if (line.startsWith(`${marker} `)) sections.push({ name: line.slice(marker.length + 1), body: '' });
    else if (sections.length > 0) (sections[sections.length - 1] as { body: string }).body += `${line}\n`;
  }
  return sections;
}

function etcdMembers(plan: InstallPlan): MemberHost[] {
  return plan.memberCount === 1 ? [] : plan.hosts.filter((host): host is MemberHost => host.member !== null);
}

function rolesOf(host: InstallHost, plan: InstallPlan): Role[] {
  const roles: Role[] = [];
  if (plan.memberCount > 1 && host.member !== null) roles.push('etcd');
  if (host.mdm !== null) roles.push('mdm');
  if (host.sds !== null) roles.push('sds');
  if (host.sdc !== null) roles.push('sdc');
  return roles;
}

function mdmAddressOf(host: InstallHost): string {
  return formatHostPort({ host: (host.mdm as NonNullable<InstallHost['mdm']>).listenAddress, port: mdmPort });
}

/** The MDM hosts: the Master's first, then the Slaves' in CSV order. */
function mdmHosts(plan: InstallPlan): InstallHost[] {
  return [plan.mdmHost, ...plan.hosts.filter((host) => host.mdm !== null && host !== plan.mdmHost)];
}

/**
 * Every MDM's wire address, for the SDSs' and SDCs' --mdm: the Master's first (where they find
 * the Master on a fresh cluster without trying a Slave), then the Slaves' in CSV order.
 */
export function mdmAddresses(plan: InstallPlan): string[] {
  return mdmHosts(plan).map(mdmAddressOf);
}

/** Where an MDM's REST API listens: one MDM on its loopback, an MDM of a cluster on its MDM IP. */
function apiAddressOf(host: InstallHost, plan: InstallPlan): string {
  return plan.memberCount === 1 ? apiAddress : formatHostPort({ host: (host.mdm as NonNullable<InstallHost['mdm']>).listenAddress, port: apiPort });
}

/** The management CLI's --api: every MDM's REST API, the Master's first (the CLI moves on past one that does not answer). */
export function mdmApiUrls(plan: InstallPlan): string[] {
  return mdmHosts(plan).map((host) => `https://${apiAddressOf(host, plan)}`);
}

/**
 * The subjectAltNames of an MDM cluster's shared REST certificate: every MDM's API address
 * (what clients check), and loopback's names, as every MDM's default certificate has them.
 */
export function apiSubjectAltNames(plan: InstallPlan): string[] {
  const names = mdmHosts(plan).map((host) => {
    const address = (host.mdm as NonNullable<InstallHost['mdm']>).listenAddress;
    return isIP(address) === 0 ? `DNS:${address}` : `IP:${address}`;
  });
  return [...new Set([...names, 'IP:127.0.0.1', 'DNS:localhost'])];
}

function etcdUrl(host: MemberHost, port: number): string {
  return `https://${formatHostPort({ host: host.member.address, port })}`;
}

/** What the etcd PKI must hold for this plan; null without an MDM cluster. */
export function etcdPkiRequest(plan: InstallPlan): EtcdPkiRequest | null {
  const members = etcdMembers(plan);
  if (members.length === 0) return null;
  return {
    // The SAN: the address the member listens on, and the host's own if it is another IP.
    members: members.map((host) => ({ name: host.member.name, ips: [...new Set([host.member.address, ...(isIP(host.address) === 0 ? [] : [host.address])])] })),
    clients: members.filter((host) => host.mdm !== null).map((host) => host.member.name),
  };
}

/** The PKI files a host gets in its etcd PKI directory: the CA's certificate (never its key), its member's pair, its MDM's client pair. */
export function etcdPkiFilesFor(host: InstallHost, plan: InstallPlan): Array<{ name: string; mode: number }> {
  if (plan.memberCount === 1 || host.member === null) return [];
  const name = host.member.name;
  return [
    { name: 'ca.crt', mode: 0o644 },
    { name: `member-${name}.crt`, mode: 0o644 },
    { name: `member-${name}.key`, mode: 0o600 },
    ...(host.mdm === null
      ? []
      : [
          { name: `client-${name}.crt`, mode: 0o644 },
          { name: `client-${name}.key`, mode: 0o600 },
        ]),
  ];
}

/**
 * A host's daemon's command line. `sdsShards` > 1 (the SDS's shard count) adds
 * `--shards N --host NAME` to the SDS's: the SDS name is the host label, valid by the CSV's
 * name rule, unique per host and stable (a host name may repeat across cloned hosts, an IPv6
 * address is no label); with 1 the command line is the one of before shards, so a re-run on
 * an SDS installed before changes nothing.
 */
export function daemonArgs(role: Role, host: InstallHost, plan: InstallPlan, clusterId: string, sdsShards = 1): string[] {
  const mdmList = mdmAddresses(plan).join(',');
  const members = etcdMembers(plan);
  switch (role) {
    case 'etcd': {
      const member = host as MemberHost;
      return [
        'etcd', 'start',
        '--data-dir', etcdDataDir,
        '--name', member.member.name,
        '--client', formatHostPort({ host: member.member.address, port: etcdClientPort }),
        '--peer', formatHostPort({ host: member.member.address, port: etcdPeerPort }),
        '--initial-cluster', members.map((other) => `${other.member.name}=${etcdUrl(other, etcdPeerPort)}`).join(','),
        '--pki', etcdPkiDir,
      ];
    }
    case 'mdm': {
      const args = ['mdm', 'start', '--data-dir', `${dataRoot}/mdm`, '--listen', mdmAddressOf(host), '--api', apiAddressOf(host, plan)];
      if (members.length === 0) return args;
      return [
        ...args,
        '--etcd', members.map((member) => etcdUrl(member, etcdClientPort)).join(','),
        '--etcd-pki', etcdPkiDir,
        '--mdm-name', (host as MemberHost).member.name,
        '--tls-cert', apiCertFile,
        '--tls-key', apiKeyFile,
        // The first MDM creates the cluster with it; every later start checks it is the cluster's.
        '--admin-password-file', adminPasswordFile,
      ];
    }
    case 'sds': {
      const sds = host.sds as NonNullable<InstallHost['sds']>;
      const args = ['sds', 'start', '--name', sds.name, '--listen', `${sds.listenAddress}:${sdsPort}`, '--data-dir', `${dataRoot}/sds`, '--mdm', mdmList, '--cluster-id', clusterId, '--secret-file', secretFile];
      return sdsShards === 1 ? args : [...args, '--shards', String(sdsShards), '--host', sds.name];
    }
    case 'sdc':
      // Mapped volumes appear as disks (/dev/nbdN and /dev/disk/by-id names), as ScaleIO's SDC
      // makes them; a host without the nbd module gets a warning and its volumes over NBD.
      return ['sdc', 'start', '--mdm', mdmList, '--name', (host.sdc as { name: string }).name, '--data-dir', `${dataRoot}/sdc`, '--cluster-id', clusterId, '--secret-file', secretFile, '--attach-mapped'];
  }
}

/** What an MDM host of a cluster gets from --state-dir, beside its etcd PKI files: the shared REST certificate and the admin password. */
export function mdmSharedFilesFor(host: InstallHost, plan: InstallPlan): Array<{ source: string; target: string; mode: number }> {
  if (plan.memberCount === 1 || host.mdm === null) return [];
  return [
    { source: `${stateApiDir}/api.crt`, target: apiCertFile, mode: 0o644 },
    { source: `${stateApiDir}/api.key`, target: apiKeyFile, mode: 0o600 },
    { source: stateAdminPasswordFile, target: adminPasswordFile, mode: 0o600 },
  ];
}

export interface HostConfigure {
  host: InstallHost;
  /** Copied into the host's etcd PKI directory before its daemons start. */
  pkiFiles: Array<{ name: string; mode: number }>;
  /** Copied from --state-dir (source, relative) to the host (target) before its MDM starts. */
  sharedFiles: Array<{ source: string; target: string; mode: number }>;
  /** The daemons it runs, each a service (meshblock-ROLE), with the meshblock command line. */
  daemons: Array<{ role: Role; args: string[] }>;
}

/**
 * What configure sets up on each host, in CSV order. Configure starts them in this order
 * across hosts: every etcd member, the Master's MDM, the Slaves' MDMs, then SDSs and SDCs.
 * `sdsShards`: each SDS host's shard count by CSV row (a row not in it: 1).
 */
export function configurePlan(plan: InstallPlan, clusterId: string, sdsShards: ReadonlyMap<number, number> = new Map()): HostConfigure[] {
  return plan.hosts.map((host) => ({
    host,
    pkiFiles: etcdPkiFilesFor(host, plan),
    sharedFiles: mdmSharedFilesFor(host, plan),
    daemons: rolesOf(host, plan).map((role) => ({ role, args: daemonArgs(role, host, plan, clusterId, sdsShards.get(host.row) ?? 1) })),
  }));
}

function labelOf(host: InstallHost): string {
  return `${host.address} (row ${host.row})`;
}

function codeOf(err: unknown): MeshblockError['code'] {
  return err instanceof MeshblockError ? err.code : 'MB_ERR_INSTALL_STEP';
}

export class Installer {
  /** Each host's session by CSV row, opened at the first ask (a promise: parallel steps ask at once). */
  private readonly sessions = new Map<number, Promise<Session>>();
  /** Each SDS host's shard count by CSV row, chosen once per run (sdsShardsOf). */
  private readonly sdsShards = new Map<number, SdsShardChoice>();
  private bundle: RuntimeBundle | null = null;

  constructor(private readonly options: InstallOptions) {}

  async run(): Promise<void> {
    try {
      const phases = this.options.dryRun ? (['query'] as const) : this.options.phases;
      for (const phase of installPhases) {
        if (!phases.includes(phase)) continue;
        this.options.report(`== ${phase}`);
        await this[phase]();
      }
      if (this.options.dryRun) await this.describe();
    } finally {
      for (const opened of await Promise.allSettled(this.sessions.values())) if (opened.status === 'fulfilled') opened.value.transport.close?.();
    }
  }

  private session(host: InstallHost): Promise<Session> {
    const known = this.sessions.get(host.row);
    if (known !== undefined) return known;
    const label = labelOf(host);
    const opening = this.options.connect(host).then(
      (connected): Session => {
        const transport: Session['transport'] = new ReadAheadTransport(connected);
        if (connected.close !== undefined) transport.close = () => connected.close?.();
        if (connected.upload !== undefined) transport.upload = (local, remote, mode) => (connected.upload as NonNullable<ConnectedTransport['upload']>)(local, remote, mode);
        if (connected.stage !== undefined) transport.stage = (local) => (connected.stage as NonNullable<ConnectedTransport['stage']>)(local);
        return { host, label, transport };
      },
      (err: unknown) => {
        // Not kept: a later step (a re-run's query after a fix) may connect.
        this.sessions.delete(host.row);
        throw new InstallError('MB_ERR_INSTALL_CONNECT', `${label}: ${(err as Error).message}`);
      },
    );
    this.sessions.set(host.row, opening);
    return opening;
  }

  /**
   * Runs `work` on every host, up to --parallel at once, taking hosts in CSV order as places
   * free up. A host that fails does not stop the others: every host of the step finishes,
   * then the step fails naming each failed host and why (a single failure is thrown as it
   * is, its code kept). Each host's part ends with a line `LABEL: STEP done in N s` (none
   * when `work` says false: nothing to do there) or `LABEL: STEP FAILED: why`.
   */
  private async each(step: string, work: (session: Session) => Promise<void | false>): Promise<void> {
    const hosts = this.options.plan.hosts;
    const failures: Array<{ row: number; label: string; err: Error }> = [];
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < hosts.length) {
        const host = hosts[next] as InstallHost;
        next += 1;
        const startedAt = Date.now();
        try {
          const outcome = await work(await this.session(host));
          if (outcome !== false) this.options.report(`${labelOf(host)}: ${step} done in ${((Date.now() - startedAt) / 1000).toFixed(1)} s`);
        } catch (err) {
          const label = labelOf(host);
          // Named by its host whatever threw it (a module's or a transport's own error may not be).
          const named = (err as Error).message.includes(label) ? (err as Error) : new InstallError(codeOf(err), `${label}: ${(err as Error).message}`, { cause: err });
          failures.push({ row: host.row, label, err: named });
          this.options.report(`${label}: ${step} FAILED: ${named.message.replace(`${label}: `, '')}`);
        }
      }
    };
    const parallel = this.options.parallel ?? installParallelDefault;
    await Promise.all(Array.from({ length: Math.max(1, Math.min(parallel, hosts.length)) }, worker));
    if (failures.length === 0) return;
    failures.sort((a, b) => a.row - b.row);
    if (failures.length === 1) throw (failures[0] as { err: Error }).err;
    throw new InstallError(
      'MB_ERR_INSTALL_HOSTS',
      `${step}: ${failures.length} of ${hosts.length} hosts failed: ${failures.map((failure) => failure.err.message).join('; ')}`,
    );
  }

  private hostOf(session: Session): Host {
    // The runtime bundle brings its own Node: the host's (or none) is no prerequisite.
    return { transport: session.transport, options: { ...this.options.hostOptions, nodeRuntime: 'bundled' } };
  }

  /**
   * What query reads of a host, in one command: its os-release, whether it is a XenServer,
   * its architecture, and each SDS device's kind (block, file, missing) and what blkid finds
   * on it (before: two commands per device and three for the rest).
   */
  private async hostFacts(session: Session): Promise<{ pretty: string; arch: string; devices: Array<{ path: string; kind: string; type: string | undefined }> }> {
    const marker = sectionMarker();
    const devices = session.host.sds?.devices ?? [];
    const script = [
      markerLine(marker, 'os-release'),
      'cat /etc/os-release 2>/dev/null || true',
      markerLine(marker, 'xen'),
      'if [ -e /etc/xensource-inventory ]; then echo yes; fi',
      markerLine(marker, 'arch'),
      'uname -m',
      ...devices.flatMap((device) => {
        const quoted = quote(device.path);
        return [
          markerLine(marker, 'kind'),
          `if [ -b ${quoted} ]; then echo block; elif [ -f ${quoted} ]; then echo file; else echo missing; fi`,
          markerLine(marker, 'blkid'),
          `if [ -e ${quoted} ]; then blkid -p -o export ${quoted} 2>/dev/null || true; fi`,
        ];
      }),
    ].join('\n');
    const sections = outputSections(await sh(session, script), marker);
    const body = (name: string): string => sections.find((section) => section.name === name)?.body ?? '';
    const kinds = sections.filter((section) => section.name === 'kind');
    const probes = sections.filter((section) => section.name === 'blkid');
    const pretty = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(body('os-release'))?.[1] ?? (body('xen').trim() === 'yes' ? 'XenServer' : 'unknown OS');
    return {
      pretty,
      arch: body('arch').trim(),
      devices: devices.map((device, index) => {
        const probe = probes[index]?.body ?? '';
        return { path: device.path, kind: kinds[index]?.body.trim() ?? 'missing', type: /^TYPE=(.*)$/m.exec(probe)?.[1] ?? /^PTTYPE=(.*)$/m.exec(probe)?.[1] };
      }),
    };
  }

  private async query(): Promise<void> {
    await this.each('query', async (session) => {
      const { host } = session;
      const { pretty, arch, devices } = await this.hostFacts(session);
      if (arch !== 'x86_64') throw new InstallError('MB_ERR_INSTALL_HOST', `${session.label}: ${arch} host; the Node runtime meshblock ships is x86_64`);
      for (const device of devices) {
        if (device.kind === 'missing') throw new InstallError('MB_ERR_INSTALL_DEVICE', `${session.label}, column 'SDS Device List': ${device.path} does not exist on ${host.address}`);
        if (device.type !== undefined && device.type !== '') {
          throw new InstallError('MB_ERR_INSTALL_DEVICE', `${session.label}: ${device.path} holds ${device.type} (previous formatting must be removed first: wipefs --all ${device.path}, or meshblock host apply --only disks --yes-wipe ${device.path})`);
        }
      }
      // The runtime bundle carries this machine's etcd: the host needs none, but this machine
      // must have one to ship. Checked here, before anything is uploaded.
      if (rolesOf(host, this.options.plan).includes('etcd') && etcdToBundle() === null) {
        throw new InstallError('MB_ERR_INSTALL_HOST', `${session.label}: a ${host.member?.role === 'tb' ? 'TB' : 'Master or Slave'} host runs an etcd member, and the runtime bundle has no etcd to give it: this machine has no ${etcdSourcePath} (Debian: apt-get install etcd-server)`);
      }
      if (host.mdm !== null && host.mdm.ips.length > 1) {
        this.options.report(`${session.label}: MDM IPs ${host.mdm.ips.slice(1).join(', ')} not used: the MDM listens on ${host.mdm.listenAddress} only`);
      }
      const findings: string[] = [];
      // The modules' checks only read: what they read is read ahead in one command.
      await session.transport.readAhead(moduleReadAheadFiles, moduleReadAheadTools);
      session.transport.readOnly = true;
      try {
        for (const module of selectModules(installModules)) {
          const finding = await module.check(this.hostOf(session)).catch((err: Error) => ({ applicable: true, ok: false, summary: `cannot check: ${err.message}` }));
          if (finding.applicable && !finding.ok) findings.push(`${module.name}: ${finding.summary}`);
        }
      } finally {
        session.transport.readOnly = false;
      }
      let shardText = '';
      if (host.sds !== null) {
        const shards = await this.sdsShardsOf(session);
        shardText = `; SDS ${shards.count === 1 ? `${host.sds.name} as one process` : `in ${shards.count} shards ${host.sds.name}.1..${host.sds.name}.${shards.count}`} (${shards.why})`;
      }
      this.options.report(`${session.label}: ${pretty}, ${arch}; roles ${rolesOf(host, this.options.plan).join(', ') || 'none'}; ${host.sds?.devices.length ?? 0} device(s) free${shardText}; ${findings.length === 0 ? 'host modules ok' : `to fix in install: ${findings.join('; ')}`}`);
    });
  }

  /**
   * The host's shard count, chosen at the first ask in a run: an SDS already installed keeps
   * the count of its unit (each shard's devices hold that shard's data, and `sds start` refuses
   * another count on its data directory), so a different --sds-shards is refused here, before
   * anything is done; else --sds-shards, else the auto choice from the host's cores.
   */
  private async sdsShardsOf(session: Session): Promise<SdsShardChoice> {
    const known = this.sdsShards.get(session.host.row);
    if (known !== undefined) return known;
    const sds = session.host.sds as NonNullable<InstallHost['sds']>;
    const requested = this.options.sdsShards;
    const service = await readInstalledService(session.transport, 'sds');
    const installed = installedSdsShards(service?.text ?? null);
    let choice: SdsShardChoice;
    if (installed !== null) {
      if (requested !== 'auto' && requested !== installed) {
        throw new InstallError(
          'MB_ERR_INSTALL_HOST',
          `${session.label}: SDS ${sds.name} is installed as ${installed === 1 ? 'one process' : `${installed} shards`} (${service?.path}); --sds-shards ${requested} cannot change that, each shard's devices hold that shard's data (run with --sds-shards auto, or remove the SDS from the cluster and its data directory first)`,
        );
      }
      choice = { count: installed, why: 'as installed' };
    } else if (requested !== 'auto') {
      choice = { count: requested, why: `--sds-shards ${requested}${requested > sds.devices.length ? `, ${requested - sds.devices.length === 1 ? `shard ${requested} gets` : `shards ${sds.devices.length + 1}..${requested} get`} no device` : ''}` };
    } else {
      const coreCount = await this.coreCountOf(session);
      choice = { count: autoShardCount(coreCount, sds.devices.length), why: `auto: ${coreCount} core(s), ${sds.devices.length} device(s)` };
    }
    const longest = choice.count === 1 ? null : shardNameTooLong(sds.name, choice.count);
    if (longest !== null) {
      throw new InstallError('MB_ERR_INSTALL_HOST', `${session.label}, column 'SDS Name': with ${choice.count} shards the SDS names (up to '${longest}') must fit ${nameBytesMax} characters: a shorter SDS Name, or --sds-shards`);
    }
    this.sdsShards.set(session.host.row, choice);
    return choice;
  }

  /**
   * The host's usable cores: `nproc` counts those a process may run on (its affinity, as
   * os.availableParallelism() does for `sds start --shards auto`); getconf's online count
   * where there is no nproc (coreutils before 8.1, busybox built without it).
   */
  private async coreCountOf(session: Session): Promise<number> {
    const result = await session.transport.run('sh', ['-c', 'nproc 2>/dev/null || getconf _NPROCESSORS_ONLN'], { timeoutMs: 30_000 });
    const text = result.stdout.trim();
    if (result.code !== 0 || !/^[0-9]+$/.test(text) || Number(text) < 1) {
      const said = (result.stderr.trim() || text).split('\n').slice(-1)[0]?.slice(0, 120) || 'no output';
      throw new InstallError('MB_ERR_INSTALL_HOST', `${session.label}: cannot read its core count (nproc, getconf _NPROCESSORS_ONLN: exit ${result.code}, ${said}): give --sds-shards`);
    }
    return Number(text);
  }

  /** The shard counts chosen so far by CSV row, for configurePlan. */
  private shardCounts(): Map<number, number> {
    return new Map([...this.sdsShards].map(([row, choice]) => [row, choice.count]));
  }

  private async upload(): Promise<void> {
    // Built once, before any host's upload starts.
    this.bundle ??= await buildRuntimeBundle(this.options.appRoot, this.options.workDir);
    const { file, hash } = this.bundle;
    const prefix = this.options.prefix;
    await this.each('upload', async (session) => {
      const current = ((await session.transport.readFile(`${prefix}/BUNDLE`)) ?? '').trim();
      if (current === hash) {
        this.options.report(`${session.label}: bundle ${hash} already in ${prefix}`);
        return;
      }
      let remote: string;
      if (session.transport.stage !== undefined) {
        // SFTP alone; the unpacking command below moves nothing, it reads the staged file.
        remote = await session.transport.stage(file);
      } else if (session.transport.upload !== undefined) {
        // Its own name: another install may be uploading the same bundle to this host.
        remote = `/tmp/meshblock-bundle-${hash}-${randomBytes(4).toString('hex')}.tar.gz`;
        await session.transport.upload(file, remote, 0o600);
      } else {
        throw new InstallError('MB_ERR_INSTALL_UPLOAD', `${session.label}: this transport cannot upload files`);
      }
      // Unpacked beside the old one, then swapped in: a host never has half a meshblock.
      await sh(
        session,
        [
          'set -e',
          `rm -rf ${prefix}.new && mkdir -p ${prefix}.new`,
          `tar -xzf ${remote} -C ${prefix}.new`,
          `echo ${hash} > ${prefix}.new/BUNDLE`,
          `rm -rf ${prefix}.old; if [ -d ${prefix} ]; then mv ${prefix} ${prefix}.old; fi`,
          `mv ${prefix}.new ${prefix} && rm -rf ${prefix}.old ${remote}`,
          `${prefix}/${bundleCommandPath} --version`,
        ].join('\n'),
        300_000,
      );
      this.options.report(`${session.label}: bundle ${hash} (${(fs.statSync(file).size / 1048576).toFixed(1)} MiB) unpacked in ${prefix}`);
    });
  }

  private async install(): Promise<void> {
    const prefix = this.options.prefix;
    await this.each('install', async (session) => {
      const host = this.hostOf(session);
      // Plans only read (what --dry-run relies on): read ahead in one command, kept while they
      // run; a module's apply changes the host, and its first command drops what was read.
      await session.transport.readAhead(moduleReadAheadFiles, moduleReadAheadTools);
      for (const module of selectModules(installModules)) {
        session.transport.readOnly = true;
        const steps = await module.plan(host).finally(() => (session.transport.readOnly = false));
        if (steps.length === 0) continue;
        const result = await module.apply(host, steps);
        for (const line of result.done) this.options.report(`${session.label}: ${module.name}: ${line}`);
        for (const note of result.notes) this.options.report(`${session.label}: ${module.name}: NOTE ${note}`);
      }
      const wrapper = `#!/bin/sh\n# meshblock, installed by meshblock install: its runtime bundle's command\nexec ${prefix}/${bundleCommandPath} "$@"\n`;
      // The command, meshblock's directories and its version: one command.
      const version = await sh(
        session,
        [
          putFilesScript([{ path: '/usr/local/bin/meshblock', text: wrapper, mode: 0o755 }]),
          // No run directory: the init scripts make /var/run/meshblock at start (it is gone after
          // a reboot anyway), and the SDC makes its attachment records' directory.
          `mkdir -p ${dataRoot} ${configDir} ${logDir} && chmod 700 ${configDir} >/dev/null`,
          '/usr/local/bin/meshblock --version',
        ].join('\n'),
      );
      const versionLine = version.split('\n').filter((line) => line !== '' && !line.startsWith('changed ')).pop() ?? '';
      this.options.report(`${session.label}: /usr/local/bin/meshblock (${versionLine.trim()}), roles ${rolesOf(session.host, this.options.plan).join(', ') || 'none'}`);
    });
  }

  private async startDaemon(session: Session, role: Role, args: string[]): Promise<void> {
    const service = await installService(session.transport, role, args, (script) => sh(session, script));
    this.options.report(`${session.label}: meshblock ${role} ${service.started ? 'started' : 'already running'} (${service.how})`);
  }

  /** The management CLI's connection arguments on the Master host. */
  private manageConnection(): string[] {
    return this.options.plan.memberCount === 1
      ? ['--api', `https://${apiAddress}`, '--ca-cert', `${dataRoot}/mdm/api.crt`, '--password-file', `${dataRoot}/mdm/admin.password`]
      : ['--api', mdmApiUrls(this.options.plan).join(','), '--ca-cert', apiCertFile, '--password-file', adminPasswordFile];
  }

  /** The MDM's objects of these types (`meshblock TYPE list --json` each), in one command on the Master host. */
  private async lists<T extends string>(mdm: Session, types: readonly T[]): Promise<Record<T, ManagedObject[]>> {
    const marker = sectionMarker();
    const script = ['set -e', ...types.flatMap((type) => [markerLine(marker, type), `/usr/local/bin/meshblock ${[type, 'list', '--json', ...this.manageConnection()].map(quote).join(' ')}`])].join('\n');
    const sections = outputSections(await sh(mdm, script), marker);
    const result = {} as Record<T, ManagedObject[]>;
    for (const type of types) {
      const body = sections.find((section) => section.name === type)?.body ?? '';
      try {
        result[type] = JSON.parse(body) as ManagedObject[];
      } catch (err) {
        throw new InstallError('MB_ERR_INSTALL_STEP', `${mdm.label}: meshblock ${type} list --json gave no JSON (${(err as Error).message}): ${body.slice(0, 120)}`);
      }
    }
    return result;
  }

  /**
   * Changes through the management CLI on the Master host, one after another in one command
   * (each needs the ones before: a pool its domain, a device its pool), each reported once
   * done; the first that fails stops the rest, with its reason.
   */
  private async manageAll(mdm: Session, changes: ReadonlyArray<{ args: string[]; done: string }>): Promise<void> {
    if (changes.length === 0) return;
    const marker = sectionMarker();
    const script = changes.flatMap((change, index) => [`/usr/local/bin/meshblock ${[...change.args, ...this.manageConnection()].map(quote).join(' ')} >/dev/null || exit $?`, markerLine(marker, String(index))]).join('\n');
    const result = await mdm.transport.run('sh', ['-c', script], { timeoutMs: 120_000 + 30_000 * changes.length });
    const doneCount = outputSections(result.stdout, marker).length;
    for (const change of changes.slice(0, doneCount)) this.options.report(change.done);
    if (result.code !== 0) {
      const failed = changes[doneCount];
      const said = (result.stderr.trim() || 'no output').split('\n').slice(-3).join(' / ');
      throw new InstallError('MB_ERR_INSTALL_STEP', `${mdm.label}: meshblock ${failed?.args.join(' ') ?? ''} failed (exit ${result.code}): ${said}`);
    }
  }

  private async until<T>(what: string, probe: () => Promise<T | undefined>): Promise<T> {
    const deadline = Date.now() + startWaitMs;
    let last = '';
    for (;;) {
      try {
        const value = await probe();
        if (value !== undefined) return value;
      } catch (err) {
        last = (err as Error).message;
      }
      if (Date.now() > deadline) throw new InstallError('MB_ERR_INSTALL_TIMEOUT', `timed out after ${startWaitMs / 1000} s waiting for ${what}${last === '' ? '' : ` (${last})`}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }

  /** The cluster's id and secret, once the MDM on this host has written them. */
  private async clusterOn(session: Session): Promise<{ id: string; secret: string } | undefined> {
    // Both files in one command (this is polled while the MDM starts).
    const marker = sectionMarker();
    const [json, secretPath] = [`${dataRoot}/mdm/cluster.json`, `${dataRoot}/mdm/cluster.secret`];
    const result = await session.transport.run('sh', ['-c', `[ -e ${json} ] && [ -e ${secretPath} ] || exit 3; cat ${json}; printf '\\n%s\\n' '${marker}'; cat ${secretPath}`]);
    if (result.code !== 0) return undefined;
    const cut = result.stdout.indexOf(`\n${marker}\n`);
    if (cut < 0) return undefined;
    return { id: (JSON.parse(result.stdout.slice(0, cut)) as { clusterId: string }).clusterId, secret: result.stdout.slice(cut + marker.length + 2) };
  }

  /** Puts files on the host in one command (putFilesScript); the paths it replaced. */
  private async putFiles(session: Session, files: readonly HostFile[]): Promise<string[]> {
    return files.length === 0 ? [] : changedFiles(await sh(session, putFilesScript(files)));
  }

  /** The etcd PKI made here, each member host given its files, an etcd member started on each. */
  private async startEtcdMembers(request: EtcdPkiRequest): Promise<void> {
    const { plan } = this.options;
    const pkiDir = path.join(this.options.stateDir, 'etcd-pki');
    // A member host with another CA than ours (this state dir lost, or the cluster installed
    // from another machine): new certificates would not be trusted by the members running
    // with the old ones. Refused before anything is made or copied.
    const localCa = fs.existsSync(path.join(pkiDir, 'ca.crt')) ? fs.readFileSync(path.join(pkiDir, 'ca.crt'), 'utf8') : null;
    await this.each('configure: etcd CA check', async (session) => {
      if (etcdPkiFilesFor(session.host, plan).length === 0) return false;
      const hostCa = await session.transport.readFile(`${etcdPkiDir}/ca.crt`);
      if (hostCa !== null && hostCa !== localCa) {
        throw new InstallError(
          'MB_ERR_INSTALL_STEP',
          `${session.label}: its etcd CA (${etcdPkiDir}/ca.crt) is not the one in ${pkiDir}${localCa === null ? ' (there is none there)' : ''}: give --state-dir the directory of the run that installed this cluster`,
        );
      }
    });
    fs.mkdirSync(pkiDir, { recursive: true, mode: 0o700 });
    await this.options.createEtcdPki(pkiDir, request);
    this.options.report(`etcd PKI in ${pkiDir}: members ${request.members.map((member) => member.name).join(', ')}; MDM clients ${request.clients.join(', ')}`);
    // Read here first: a file missing from the PKI is this machine's problem, said once, not per host.
    const pkiFiles = new Map(
      plan.hosts.map((host) => [
        host.row,
        etcdPkiFilesFor(host, plan).map((file): HostFile => {
          const local = path.join(pkiDir, file.name);
          try {
            return { path: `${etcdPkiDir}/${file.name}`, text: fs.readFileSync(local, 'utf8'), mode: file.mode };
          } catch (err) {
            throw new InstallError('MB_ERR_INSTALL_STEP', `the etcd PKI has no ${local}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
          }
        }),
      ]),
    );
    await this.each('configure: etcd member', async (session) => {
      const files = etcdPkiFilesFor(session.host, plan);
      if (files.length === 0) return false;
      await this.putFiles(session, pkiFiles.get(session.host.row) ?? []);
      this.options.report(`${session.label}: ${files.map((file) => file.name).join(', ')} in ${etcdPkiDir}`);
      await this.stopDebianEtcd(session);
      await this.startDaemon(session, 'etcd', daemonArgs('etcd', session.host, plan, ''));
    });
  }

  /**
   * Debian's etcd-server enables etcd.service: a member of its own, plain HTTP on
   * localhost:2379, open to every local user. A member host runs the cluster's member
   * instead, so the package's is stopped and disabled (under systemd; without it, as on
   * containers and the test hosts, nothing starts the package's unit, and a sysvinit
   * host's /etc/init.d/etcd is the administrator's to disable).
   */
  private async stopDebianEtcd(session: Session): Promise<void> {
    // One command: whether systemd runs, whether the unit is enabled or active, and stopping it.
    const output = await sh(
      session,
      `[ -e /run/systemd/system ] || exit 0; if systemctl is-enabled --quiet ${debianEtcdUnit} || systemctl is-active --quiet ${debianEtcdUnit}; then systemctl disable --now ${debianEtcdUnit} && echo stopped; fi`,
    );
    if (output.trim() !== 'stopped') return;
    this.options.report(`${session.label}: Debian's ${debianEtcdUnit} (its own etcd on localhost:2379) stopped and disabled: the cluster's member runs as meshblock-etcd`);
  }

  /**
   * An MDM cluster's REST certificate and admin password, made here once (kept in
   * --state-dir) and copied to every MDM host: each MDM's API presents the same
   * certificate, so a Slave's forwarding and a client's --ca-cert work whichever MDM is
   * Master; the first MDM creates the cluster with the password, and every later start of
   * any MDM checks it against the cluster's.
   */
  private async shareMdmFiles(): Promise<void> {
    const { plan, stateDir } = this.options;
    fs.mkdirSync(path.join(stateDir, stateApiDir), { recursive: true, mode: 0o700 });
    const passwordFile = path.join(stateDir, stateAdminPasswordFile);
    if (!fs.existsSync(passwordFile)) {
      fs.writeFileSync(passwordFile, `${randomBytes(18).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
      this.options.report(`admin password made in ${passwordFile}`);
    }
    const { certPath, keyPath } = this.options.createApiCertificate(path.join(stateDir, stateApiDir), { subjectAltNames: apiSubjectAltNames(plan) });
    // A certificate made for other MDM addresses (an MDM added or moved since) would fail
    // every client's host check on the new address: refused, with what to do.
    const certificate = new X509Certificate(fs.readFileSync(certPath));
    const unnamed = mdmHosts(plan)
      .map((host) => (host.mdm as NonNullable<InstallHost['mdm']>).listenAddress)
      .filter((address) => (isIP(address) === 0 ? certificate.checkHost(address) : certificate.checkIP(address)) === undefined);
    if (unnamed.length > 0) {
      throw new InstallError(
        'MB_ERR_INSTALL_STEP',
        `the MDMs' REST certificate ${certPath} does not name ${unnamed.join(', ')}: remove ${certPath} and ${keyPath} to make one for every MDM (clients that pinned the old one then need the new one)`,
      );
    }
    this.options.report(`MDM REST certificate ${certPath} (${apiSubjectAltNames(plan).join(', ')}); admin password ${passwordFile}`);
    await this.each('configure: MDM files', async (session) => {
      const files = mdmSharedFilesFor(session.host, plan);
      if (files.length === 0) return false;
      await this.putFiles(session, files.map((file) => ({ path: file.target, text: fs.readFileSync(path.join(stateDir, file.source), 'utf8'), mode: file.mode })));
      this.options.report(`${session.label}: ${files.map((file) => file.target).join(', ')}`);
    });
  }

  private async configure(): Promise<void> {
    const { plan } = this.options;
    // Every SDS host's shard count first: a refused --sds-shards stops the run before anything starts.
    await this.each('configure: SDS shard count', async (session) => {
      // Known from query when it ran in this run (then nothing is asked): no line of its own.
      if (session.host.sds !== null) await this.sdsShardsOf(session);
      return false;
    });
    const pkiRequest = etcdPkiRequest(plan);
    // etcd first: an MDM in cluster mode waits for a quorum of members before it does anything.
    if (pkiRequest !== null) {
      await this.startEtcdMembers(pkiRequest);
      await this.shareMdmFiles();
    }
    // The Master's MDM alone first: the first MDM to start creates the cluster's identity,
    // secret and admin password, and the installer reads the password on the Master host.
    const mdm = await this.session(plan.mdmHost);
    await this.startDaemon(mdm, 'mdm', daemonArgs('mdm', plan.mdmHost, plan, ''));
    const cluster = await this.until('the MDM to create the cluster', () => this.clusterOn(mdm));
    await this.until('the MDM API', async () => (await this.lists(mdm, ['pd'])).pd !== undefined || undefined);
    this.options.report(`${mdm.label}: MDM up, cluster ${cluster.id}`);
    for (const host of plan.hosts.filter((candidate) => candidate.mdm !== null && candidate !== plan.mdmHost)) {
      const slave = await this.session(host);
      await this.startDaemon(slave, 'mdm', daemonArgs('mdm', host, plan, ''));
      const joined = await this.until(`the Slave MDM on ${slave.label} to join the cluster`, () => this.clusterOn(slave));
      if (joined.id !== cluster.id) {
        throw new InstallError('MB_ERR_INSTALL_STEP', `${slave.label}: its MDM is in cluster ${joined.id}, not the Master's ${cluster.id} (a data directory from another cluster in ${dataRoot}/mdm?)`);
      }
      this.options.report(`${slave.label}: Slave MDM ${host.member?.name} up, cluster ${joined.id}`);
    }

    await this.each('configure: SDS and SDC', async (session) => {
      const roles = rolesOf(session.host, plan).filter((role) => role === 'sds' || role === 'sdc');
      if (roles.length === 0) return false;
      await this.putFiles(session, [{ path: secretFile, text: cluster.secret, mode: 0o600 }]);
      for (const role of roles) await this.startDaemon(session, role, daemonArgs(role, session.host, plan, cluster.id, this.sdsShards.get(session.host.row)?.count ?? 1));
    });

    const sdsHosts = plan.hosts.filter((host) => host.sds !== null);
    const shardCountOf = (host: InstallHost): number => (this.sdsShards.get(host.row) as SdsShardChoice).count;
    const sdsNames = sdsHosts.flatMap((host) => sdsShardNames((host.sds as NonNullable<InstallHost['sds']>).name, shardCountOf(host)));
    await this.until(`the SDSs ${sdsNames.join(', ')} to register`, async () => {
      const names = (await this.lists(mdm, ['sds'])).sds.map((entry) => entry.name);
      return sdsNames.every((name) => names.includes(name)) || undefined;
    });
    // What the MDM has, in one listing; what is missing, added in one command (manageAll).
    const known = await this.lists(mdm, ['pd', 'fault-set', 'pool', 'sds', 'device']);
    const changes: Array<{ args: string[]; done: string }> = [];
    const domains = new Set(sdsHosts.map((host) => host.sds?.protectionDomain as string));
    for (const domain of domains) {
      if (!known.pd.some((entry) => entry.name === domain)) changes.push({ args: ['pd', 'add', '--name', domain], done: `created protection domain ${domain}` });
      const inDomain = sdsHosts.filter((host) => host.sds?.protectionDomain === domain);
      for (const faultSet of new Set(inDomain.map((host) => host.sds?.faultSet).filter((name): name is string => name !== null && name !== undefined))) {
        if (!known['fault-set'].some((entry) => entry.name === faultSet)) changes.push({ args: ['fault-set', 'add', '--pd', domain, '--name', faultSet], done: `created fault set ${faultSet} in ${domain}` });
      }
      for (const pool of new Set(inDomain.flatMap((host) => host.sds?.devices.map((device) => device.pool) ?? []))) {
        if (!known.pool.some((entry) => entry.name === pool)) changes.push({ args: ['pool', 'add', '--pd', domain, '--name', pool], done: `created storage pool ${pool} in ${domain}` });
      }
    }
    for (const host of sdsHosts) {
      const sds = host.sds as NonNullable<InstallHost['sds']>;
      // Each shard is an SDS of its own in the MDM: added to the host's domain and fault set
      // (shards of one host share its fault set, which the MDM requires of one host label).
      const records = sdsShardNames(sds.name, shardCountOf(host)).map((name) => known.sds.find((entry) => entry.name === name));
      for (const record of records) {
        if (record !== undefined && (record['protectionDomainId'] === null || record['protectionDomainId'] === undefined)) {
          changes.push({
            args: ['sds', 'add', '--sds', record.name, '--pd', sds.protectionDomain, ...(sds.faultSet === null ? [] : ['--fault-set', sds.faultSet])],
            done: `added ${record.name} to ${sds.protectionDomain}${sds.faultSet === null ? '' : `, fault set ${sds.faultSet}`}`,
          });
        }
      }
      // A device already on any of the host's shards stays where it is (a re-run, or one
      // added by hand to another shard than round-robin would pick).
      const hostSdsIds = new Set(records.flatMap((record) => (record === undefined ? [] : [record.id])));
      for (const { device, sdsName } of deviceShards(host, shardCountOf(host))) {
        if (known.device.some((entry) => hostSdsIds.has(entry['sdsId'] as string) && entry['deviceCurrentPathName'] === device.path)) continue;
        changes.push({
          args: ['device', 'add', '--sds', sdsName, '--pool', device.pool, '--path', device.path, ...(device.name === null ? [] : ['--name', device.name])],
          done: `added ${sdsName}:${device.path} to ${device.pool}`,
        });
      }
    }
    await this.manageAll(mdm, changes);
    const sdcHosts = plan.hosts.filter((host) => host.sdc !== null);
    const registered = await this.until(`the SDCs ${sdcHosts.map((host) => host.sdc?.name).join(', ')} to register`, async () => {
      const listed = await this.lists(mdm, ['sdc', 'volume']);
      return sdcHosts.every((host) => listed.sdc.some((entry) => entry.name === host.sdc?.name)) ? listed : undefined;
    });
    const firstPool = sdsHosts[0]?.sds?.devices[0]?.pool as string;
    const volumeChanges: Array<{ args: string[]; done: string }> = [];
    for (const volume of this.options.volumes) {
      const record = registered.volume.find((entry) => entry.name === volume.name);
      if (record === undefined) {
        volumeChanges.push({ args: ['volume', 'add', '--pool', firstPool, '--name', volume.name, '--size', `${volume.sizeBytes / 1048576}MiB`], done: `created volume ${volume.name} in ${firstPool}` });
      }
      const mapped = JSON.stringify(record ?? {});
      for (const host of sdcHosts) {
        const sdc = registered.sdc.find((entry) => entry.name === host.sdc?.name);
        if (sdc === undefined || mapped.includes(sdc.id)) continue;
        volumeChanges.push({ args: ['volume', 'map', '--volume', volume.name, '--sdc', sdc.name, ...(sdcHosts.length > 1 ? ['--allow-multiple'] : [])], done: `mapped ${volume.name} to ${sdc.name}` });
      }
    }
    await this.manageAll(mdm, volumeChanges);
    const mdmText =
      plan.memberCount === 1
        ? `MDM on ${plan.mdmHost.address}`
        : `MDM cluster of ${plan.memberCount} (${etcdMembers(plan).map((host) => `${host.member.role === 'tb' ? 'TB' : host.member.role === 'master' ? 'Master' : 'Slave'} ${host.member.name} on ${host.address}`).join(', ')})`;
    const shardText = sdsNames.length === sdsHosts.length ? '' : ` in ${sdsNames.length} shards`;
    this.options.report(`cluster ${cluster.id} configured: ${mdmText}, ${sdsHosts.length} SDS(s)${shardText}, ${sdcHosts.length} SDC(s)`);
    if (plan.memberCount > 1) {
      const state = this.options.stateDir;
      this.options.report(
        `manage it from here or any MDM host: meshblock dashboard --api ${mdmApiUrls(plan).join(',')} --ca-cert ${path.join(state, stateApiDir, 'api.crt')} --password-file ${path.join(state, stateAdminPasswordFile)} (on an MDM host: ${apiCertFile}, ${adminPasswordFile})`,
      );
    }
  }

  /** --dry-run: what upload, install and configure would do, host by host. */
  private async describe(): Promise<void> {
    const prefix = this.options.prefix;
    this.options.report('== would do (dry run: nothing was changed)');
    const pkiRequest = etcdPkiRequest(this.options.plan);
    if (pkiRequest !== null) {
      this.options.report(`make the etcd PKI in ${path.join(this.options.stateDir, 'etcd-pki')} (kept there): a CA, a pair for each member (${pkiRequest.members.map((member) => member.name).join(', ')}), a client pair for each MDM (${pkiRequest.clients.join(', ')})`);
    }
    const plans = configurePlan(this.options.plan, 'CLUSTER-ID', this.shardCounts());
    await this.each('dry run', async (session) => {
      // A host's lines together, whatever the other hosts print meanwhile.
      const lines: string[] = [];
      const say = (line: string): void => void lines.push(line);
      say(`${session.label}: upload the meshblock runtime bundle (this meshblock and Node ${process.version} with its own loader and libraries) to ${prefix}`);
      for (const module of selectModules(installModules)) {
        // Dry run: plans only read; what query read ahead still holds.
        session.transport.readOnly = true;
        const steps = await module.plan(this.hostOf(session)).finally(() => (session.transport.readOnly = false)).catch((err: Error) => {
          say(`${session.label}: ${module.name}: cannot plan: ${err.message}`);
          return [];
        });
        for (const step of steps) say(`${session.label}: ${module.name}: ${step.kind === 'file' ? `edit ${step.path}: ${step.why}` : `run ${formatArgv(step.argv)}: ${step.why}`}`);
      }
      const configure = plans.find((entry) => entry.host === session.host) as HostConfigure;
      if (configure.pkiFiles.length > 0) {
        say(`${session.label}: copy ${configure.pkiFiles.map((file) => file.name).join(', ')} to ${etcdPkiDir}`);
        say(`${session.label}: stop and disable Debian's ${debianEtcdUnit} if it runs (systemd)`);
      }
      if (configure.sharedFiles.length > 0) say(`${session.label}: copy the MDMs' REST certificate and the admin password (made in ${this.options.stateDir}) to ${configure.sharedFiles.map((file) => file.target).join(', ')}`);
      for (const daemon of configure.daemons) say(`${session.label}: start meshblock ${daemon.args.join(' ')}`);
      const shardCount = this.sdsShards.get(session.host.row)?.count ?? 1;
      if (shardCount > 1) {
        const names = sdsShardNames((session.host.sds as NonNullable<InstallHost['sds']>).name, shardCount);
        say(`${session.label}: wait for ${names.join(', ')} to register; add their devices round-robin: ${deviceShards(session.host, shardCount).map((entry) => `${entry.sdsName} ${entry.device.path}`).join(', ')}`);
      }
      for (const line of lines) this.options.report(line);
      return false;
    });
    this.options.report(`then set up protection domains, pools, SDSs and devices on the ${this.options.plan.memberCount === 1 ? 'MDM' : 'Master MDM'} (${this.options.plan.mdmHost.address}) and create ${this.options.volumes.map((volume) => volume.name).join(', ') || 'no volumes'}`);
  }
}

export function defaultWorkDir(): string {
  const dir = path.join(os.tmpdir(), 'meshblock-install');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}
