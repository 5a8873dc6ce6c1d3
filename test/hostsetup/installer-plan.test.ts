// The installer's configure step for an MDM cluster, at the level of what it would run: the
// command lines each host's daemons get (configurePlan, which --dry-run prints and configure
// runs), the etcd PKI it asks for and the files each host gets, and the order configure starts
// things in across hosts (every etcd member, the Master's MDM, the Slave's, then SDSs and SDCs).
// And SDS shards: the count chosen per host in query (auto from the host's `nproc` and its CSV
// devices, --sds-shards, or the installed unit's), the `sds start --shards N --host NAME` it
// runs, the wait for every shard to register (the simulated MDM registers one name per
// `sds list`, and refuses an `sds add` of a name not registered), each shard added to the
// domain and fault set, the devices round-robin, and a re-run that adds nothing. And hosts in
// parallel: --parallel 3 on ten hosts keeps three busy at once and never more, each ends with
// a `query done` line, and two failing hosts are named together after the others finish.
//
// The order is seen by running Installer's configure phase against recording hosts: each one
// keeps files in memory, records every command (playing the installer's scripts line by line:
// files put, read-aheads, the MDM's listings and changes), answers the MDM start by writing cluster.json
// as an MDM would, and answers the management CLI as an MDM that already has every pool, SDS,
// device and SDC (so configure adds nothing). Mocked to see every command and its order in
// milliseconds, and cases real hosts cannot make here (systemd running Debian's etcd.service);
// the real multi-host installs are test/integration/install.test.ts (one MDM) and
// install-cluster.test.ts (Master, Slave and TB, surviving the Master's death).
// createEtcdPki is a stand-in that records its request and writes placeholder files; the
// MDMs' REST certificate is the real one (src/mdm/tls.ts, openssl), as the CLI hands it in.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import type { HostTransport, RunResult, WriteOptions } from '../../src/hostsetup/host-transport.js';
import { installCsvTemplate, parseInstallCsv, type InstallHost, type InstallPlan } from '../../src/hostsetup/install-csv.js';
import { X509Certificate } from 'node:crypto';
import {
  apiSubjectAltNames,
  configurePlan,
  daemonArgs,
  deviceShards,
  etcdPkiRequest,
  Installer,
  installedSdsShards,
  changedFiles,
  putFilesScript,
  sdsShardNames,
  mdmAddresses,
  mdmApiUrls,
  type CreateApiCertificate,
  type CreateEtcdPki,
  type EtcdPkiRequest,
  type InstallPhase,
} from '../../src/hostsetup/installer.js';
import { sdsShardsMax } from '../../src/common/limits.js';
import { initScriptText, installedCommandLine } from '../../src/hostsetup/service-units.js';
import { autoShardCount, parseShardCount, type ShardCountRequest } from '../../src/common/sds-shards.js';
import { ensureSelfSignedCertificate } from '../../src/mdm/tls.js';

const header = 'IPs,Username,Password,Operating System,Is MDM/TB,MDM IPs,Is SDS,SDS Name,SDS All IPs,Protection Domain,Fault Set,SDS Device List,StoragePool List,Is SDC,SDC Name';
const threeNodes = [
  header,
  '10.0.0.1,root,,debian,Master,,Yes,sds1,,pd1,,/dev/sdb,sp1,Yes,sdc1',
  '10.0.0.2,root,,debian,Slave,,Yes,sds2,,pd1,,/dev/sdb,sp1,No,',
  '10.0.0.3,root,,debian,TB,,Yes,sds3,,pd1,,/dev/sdb,sp1,Yes,sdc3',
  '',
].join('\n');

const mdmList = '10.0.0.1:6611,10.0.0.2:6611';
const secretArgs = ['--cluster-id', 'CID', '--secret-file', '/etc/meshblock/cluster.secret'];
const etcdArgs = (name: string, ip: string): string[] => [
  'etcd', 'start',
  '--data-dir', '/var/lib/meshblock/etcd',
  '--name', name,
  '--client', `${ip}:2379`,
  '--peer', `${ip}:2380`,
  '--initial-cluster', 'mdm1=https://10.0.0.1:2380,mdm2=https://10.0.0.2:2380,tb1=https://10.0.0.3:2380',
  '--pki', '/etc/meshblock/etcd-pki',
];
const mdmArgs = (name: string, ip: string): string[] => [
  'mdm', 'start', '--data-dir', '/var/lib/meshblock/mdm', '--listen', `${ip}:6611`, '--api', `${ip}:8443`,
  '--etcd', 'https://10.0.0.1:2379,https://10.0.0.2:2379,https://10.0.0.3:2379',
  '--etcd-pki', '/etc/meshblock/etcd-pki',
  '--mdm-name', name,
  '--tls-cert', '/etc/meshblock/api.crt',
  '--tls-key', '/etc/meshblock/api.key',
  '--admin-password-file', '/etc/meshblock/admin.password',
];
const sdsArgs = (index: number): string[] => ['sds', 'start', '--name', `sds${index}`, '--listen', `10.0.0.${index}:7072`, '--data-dir', '/var/lib/meshblock/sds', '--mdm', mdmList, ...secretArgs];
const sdcArgs = (index: number): string[] => ['sdc', 'start', '--mdm', mdmList, '--name', `sdc${index}`, '--data-dir', '/var/lib/meshblock/sdc', ...secretArgs, '--attach-mapped'];

t.test('a 3-node cluster: what each host runs', async (t) => {
  const plan = parseInstallCsv(threeNodes);
  const hosts = configurePlan(plan, 'CID');
  t.same(
    hosts.map((entry) => entry.daemons),
    [
      [{ role: 'etcd', args: etcdArgs('mdm1', '10.0.0.1') }, { role: 'mdm', args: mdmArgs('mdm1', '10.0.0.1') }, { role: 'sds', args: sdsArgs(1) }, { role: 'sdc', args: sdcArgs(1) }],
      [{ role: 'etcd', args: etcdArgs('mdm2', '10.0.0.2') }, { role: 'mdm', args: mdmArgs('mdm2', '10.0.0.2') }, { role: 'sds', args: sdsArgs(2) }],
      [{ role: 'etcd', args: etcdArgs('tb1', '10.0.0.3') }, { role: 'sds', args: sdsArgs(3) }, { role: 'sdc', args: sdcArgs(3) }],
    ],
  );
  t.same(
    hosts.map((entry) => entry.pkiFiles.map((file) => `${file.name} ${file.mode.toString(8)}`)),
    [
      ['ca.crt 644', 'member-mdm1.crt 644', 'member-mdm1.key 600', 'client-mdm1.crt 644', 'client-mdm1.key 600'],
      ['ca.crt 644', 'member-mdm2.crt 644', 'member-mdm2.key 600', 'client-mdm2.crt 644', 'client-mdm2.key 600'],
      ['ca.crt 644', 'member-tb1.crt 644', 'member-tb1.key 600'],
    ],
    'the CA key stays here; a TB gets no client pair (it runs no MDM)',
  );
  t.same(etcdPkiRequest(plan), {
    members: [
      { name: 'mdm1', ips: ['10.0.0.1'] },
      { name: 'mdm2', ips: ['10.0.0.2'] },
      { name: 'tb1', ips: ['10.0.0.3'] },
    ],
    clients: ['mdm1', 'mdm2'],
  });
});

t.test('MDM IPs: the MDM and its etcd member listen on the first; the host IP is in the SAN too', async (t) => {
  const plan = parseInstallCsv(threeNodes.replace('debian,Slave,,', 'debian,Slave,"192.168.0.2,192.168.1.2",'));
  const slave = configurePlan(plan, 'CID')[1];
  t.match(slave?.daemons.find((daemon) => daemon.role === 'mdm')?.args.join(' '), /--listen 192\.168\.0\.2:6611 /);
  t.match(slave?.daemons.find((daemon) => daemon.role === 'etcd')?.args.join(' '), /--client 192\.168\.0\.2:2379 --peer 192\.168\.0\.2:2380 --initial-cluster mdm1=https:\/\/10\.0\.0\.1:2380,mdm2=https:\/\/192\.168\.0\.2:2380,/);
  t.same(mdmAddresses(plan), ['10.0.0.1:6611', '192.168.0.2:6611']);
  t.same(etcdPkiRequest(plan)?.members[1], { name: 'mdm2', ips: ['192.168.0.2', '10.0.0.2'] });
});

t.test('the Master first in --mdm wherever its row is; IPv6 members in brackets', async (t) => {
  const rows = threeNodes.split('\n');
  const plan = parseInstallCsv([rows[0], rows[3], rows[2], rows[1]?.replace('10.0.0.1', 'fd00::1'), ''].join('\n'));
  t.same(mdmAddresses(plan), ['[fd00::1]:6611', '10.0.0.2:6611']);
  t.same(plan.hosts.map((host) => host.member?.name), ['tb1', 'mdm1', 'mdm2'], 'named by CSV order');
  t.match(configurePlan(plan, 'CID')[2]?.daemons[0]?.args.join(' '), /--client \[fd00::1\]:2379 .*mdm2=https:\/\/\[fd00::1\]:2380/);
});

t.test('the 5-node template: 5 members, 3 MDMs, each SDS and SDC told the 3 MDMs', async (t) => {
  const plan = parseInstallCsv(installCsvTemplate(5));
  const hosts = configurePlan(plan, 'CID');
  t.same(hosts.map((entry) => entry.daemons.map((daemon) => daemon.role).join(',')), ['etcd,mdm,sds,sdc', 'etcd,mdm,sds,sdc', 'etcd,mdm,sds,sdc', 'etcd,sds,sdc', 'etcd,sds,sdc']);
  t.same(etcdPkiRequest(plan)?.clients, ['mdm1', 'mdm2', 'mdm3']);
  for (const entry of hosts) {
    for (const daemon of entry.daemons.filter((each) => each.role === 'sds' || each.role === 'sdc')) t.match(daemon.args.join(' '), '--mdm 192.0.2.11:6611,192.0.2.12:6611,192.0.2.13:6611 ');
  }
  t.match(hosts[4]?.daemons[0]?.args.join(' '), '--name tb2 --client 192.0.2.15:2379 --peer 192.0.2.15:2380 --initial-cluster mdm1=https://192.0.2.11:2380,mdm2=https://192.0.2.12:2380,mdm3=https://192.0.2.13:2380,tb1=https://192.0.2.14:2380,tb2=https://192.0.2.15:2380 ');
});

t.test('one Master alone: no etcd, the command lines of before the MDM cluster', async (t) => {
  const plan = parseInstallCsv(threeNodes.replace(',Slave,', ',,').replace(',TB,', ',,'));
  t.equal(etcdPkiRequest(plan), null);
  t.same(
    configurePlan(plan, 'CID').map((entry) => [entry.pkiFiles, entry.daemons.map((daemon) => daemon.args.join(' '))]),
    [
      [
        [],
        [
          'mdm start --data-dir /var/lib/meshblock/mdm --listen 10.0.0.1:6611 --api 127.0.0.1:8443',
          'sds start --name sds1 --listen 10.0.0.1:7072 --data-dir /var/lib/meshblock/sds --mdm 10.0.0.1:6611 --cluster-id CID --secret-file /etc/meshblock/cluster.secret',
          'sdc start --mdm 10.0.0.1:6611 --name sdc1 --data-dir /var/lib/meshblock/sdc --cluster-id CID --secret-file /etc/meshblock/cluster.secret --attach-mapped',
        ],
      ],
      [[], ['sds start --name sds2 --listen 10.0.0.2:7072 --data-dir /var/lib/meshblock/sds --mdm 10.0.0.1:6611 --cluster-id CID --secret-file /etc/meshblock/cluster.secret']],
      [
        [],
        [
          'sds start --name sds3 --listen 10.0.0.3:7072 --data-dir /var/lib/meshblock/sds --mdm 10.0.0.1:6611 --cluster-id CID --secret-file /etc/meshblock/cluster.secret',
          'sdc start --mdm 10.0.0.1:6611 --name sdc3 --data-dir /var/lib/meshblock/sdc --cluster-id CID --secret-file /etc/meshblock/cluster.secret --attach-mapped',
        ],
      ],
    ],
  );
});

/**
 * The starts cut into stages of these sizes (the last stage: the rest), each sorted: the
 * order within a stage is the parallel hosts', the order of stages is configure's.
 */
function stages(starts: readonly string[], sizes: readonly number[]): string[][] {
  const result: string[][] = [];
  let from = 0;
  for (const size of sizes) {
    result.push(starts.slice(from, from + size).sort());
    from += size;
  }
  result.push(starts.slice(from).sort());
  return result;
}

/** The cluster the recording hosts' MDMs share: the first MDM start makes it. */
interface SimCluster {
  id: string | null;
  plan: InstallPlan;
  /** Every daemon start, across hosts, in order: `ROW ROLE`. */
  starts: string[];
  /** An MDM that starts empty and does what it is told (see SimMdm); without it, one that has everything. */
  mdm?: SimMdm;
}

/**
 * An MDM the management CLI changes: SDSs register when their `sds start` runs (NAME, or
 * NAME.1..NAME.N with --shards N, with the --host label), but one name per `sds list` asked, so
 * the installer must wait for every shard; `pd|fault-set|pool add`, `sds add` and `device add`
 * change it, each recorded in `changes`.
 */
class SimMdm {
  readonly sdss: Array<{ name: string; id: string; host: string | null; protectionDomainId: string | null; faultSet: string | null }> = [];
  readonly devices: Array<{ id: string; sdsId: string; deviceCurrentPathName: string; pool: string }> = [];
  readonly names = { pd: [] as string[], 'fault-set': [] as string[], pool: [] as string[] };
  readonly changes: string[] = [];
  /** Names started but not yet registered, in start order. */
  private readonly starting: Array<{ name: string; host: string | null }> = [];

  start(names: string[], host: string | null): void {
    for (const name of names) if (!this.sdss.some((sds) => sds.name === name) && !this.starting.some((entry) => entry.name === name)) this.starting.push({ name, host });
  }

  list(type: string): Array<Record<string, unknown>> {
    if (type === 'sds') {
      const next = this.starting.shift();
      if (next !== undefined) this.sdss.push({ name: next.name, id: `id-${next.name}`, host: next.host, protectionDomainId: null, faultSet: null });
      return this.sdss.map((sds) => ({ ...sds }));
    }
    if (type === 'device') return this.devices.map((device) => ({ ...device }));
    if (type === 'pd' || type === 'fault-set' || type === 'pool') return this.names[type].map((name) => ({ name, id: `id-${name}` }));
    return [];
  }

  /** A management command that changes something: `TYPE add --flag value ...`. */
  change(type: string, flags: Map<string, string>): void {
    this.changes.push(`${type} add ${[...flags].map(([flag, value]) => `${flag} ${value}`).join(' ')}`);
    if (type === 'pd' || type === 'fault-set' || type === 'pool') this.names[type].push(flags.get('--name') as string);
    if (type === 'sds') {
      const sds = this.sdss.find((entry) => entry.name === flags.get('--sds'));
      if (sds === undefined) throw new Error(`sds add of an unregistered ${flags.get('--sds')}`);
      sds.protectionDomainId = `id-${flags.get('--pd')}`;
      sds.faultSet = flags.get('--fault-set') ?? null;
    }
    if (type === 'device') {
      const sds = this.sdss.find((entry) => entry.name === flags.get('--sds'));
      if (sds?.protectionDomainId === null || sds === undefined) throw new Error(`device add to ${flags.get('--sds')}, not in a protection domain`);
      this.devices.push({ id: `d${this.devices.length}`, sdsId: sds.id, deviceCurrentPathName: flags.get('--path') as string, pool: flags.get('--pool') as string });
    }
  }
}

/** A host that keeps files in memory and records commands; see the file's opening comment. */
class RecordingHost implements HostTransport {
  readonly label: string;
  readonly files = new Map<string, { text: string; mode: number | undefined }>();
  readonly commands: string[] = [];

  /** What `nproc` answers; null: it fails, as would a host without nproc and getconf. */
  cores: number | null = 2;

  constructor(
    private readonly host: InstallHost,
    private readonly cluster: SimCluster,
  ) {
    this.label = `recording ${host.address}`;
  }

  readFile(filePath: string): Promise<string | null> {
    return Promise.resolve(this.files.get(filePath)?.text ?? null);
  }

  writeFile(filePath: string, text: string, options: WriteOptions = {}): Promise<void> {
    this.files.set(filePath, { text, mode: options.mode });
    return Promise.resolve();
  }

  exists(filePath: string): Promise<boolean> {
    return Promise.resolve(this.files.has(filePath));
  }

  backup(): Promise<string | null> {
    return Promise.resolve(null);
  }

  /** How many commands the installer ran here (each an SSH session on a real host). */
  sessions = 0;

  /**
   * One command of the installer. A script of several lines is played as the shell would,
   * for the forms the installer writes: files put by putFilesScript, the cluster files read
   * in one go, the facts of query, Debian's etcd.service handled in one go, and listings and
   * changes of the management CLI one line each (`echo 'MARKER ...'` lines echoed). Every
   * command it plays is recorded in `commands`, so what the host was asked is seen whether it
   * came alone or in a script.
   */
  async run(command: string, args: readonly string[]): Promise<RunResult> {
    this.sessions += 1;
    const script = command === 'sh' && args[0] === '-c' ? (args[1] as string) : [command, ...args].join(' ');
    if (script.includes("printf '%s' '")) return this.putFiles(script);
    if (script.includes('then echo file; cat -- ')) {
      // ReadAheadTransport.readAhead: each path's marker, then its text, whether it exists, or missing.
      const marker = /^printf '%s\\n' '([^']+)'/.exec(script)?.[1] as string;
      const paths = script
        .split('\n')
        .flatMap((line) => {
          const match = /if \[ -(f|e) (\S+) \]/.exec(line);
          return match === null ? [] : [{ read: match[1] === 'f', file: match[2] as string }];
        });
      this.commands.push(`read ahead ${paths.map((entry) => entry.file).join(' ')}`);
      const sections = paths.map(({ read, file }) => {
        const known = this.files.get(file);
        return `${marker}\n${known === undefined ? 'missing\n' : read ? `file\n${known.text}\n` : 'exists\n'}`;
      });
      return { code: 0, stdout: `${sections.join('')}${marker}\n`, stderr: '' };
    }
    if (script.startsWith('[ -e /var/lib/meshblock/mdm/cluster.json ]')) {
      const json = this.files.get('/var/lib/meshblock/mdm/cluster.json')?.text;
      const secret = this.files.get('/var/lib/meshblock/mdm/cluster.secret')?.text;
      const marker = /printf '\\n%s\\n' '([^']+)'/.exec(script)?.[1] as string;
      this.commands.push('cat /var/lib/meshblock/mdm/cluster.json /var/lib/meshblock/mdm/cluster.secret');
      return json === undefined || secret === undefined ? { code: 3, stdout: '', stderr: '' } : { code: 0, stdout: `${json}\n${marker}\n${secret}`, stderr: '' };
    }
    if (script.startsWith('[ -e /run/systemd/system ] || exit 0;')) {
      if (!this.files.has('/run/systemd/system')) return { code: 0, stdout: '', stderr: '' };
      const unit = 'etcd.service';
      const enabled = await this.run('systemctl', ['is-enabled', '--quiet', unit]);
      const active = enabled.code === 0 ? enabled : await this.run('systemctl', ['is-active', '--quiet', unit]);
      if (active.code !== 0) return { code: 0, stdout: '', stderr: '' };
      await this.run('systemctl', ['disable', '--now', unit]);
      return { code: 0, stdout: 'stopped\n', stderr: '' };
    }
    if (script.includes("'@@meshblock-") && script.includes('uname -m')) {
      // query's facts: no os-release, an x86_64 host, every device a block device holding nothing.
      const out = script
        .split('\n')
        .map((line) => (/^printf '\\n%s\\n' '(@@meshblock-[^']+)'$/.exec(line)?.[1] ?? (line === 'uname -m' ? 'x86_64' : line.startsWith('if [ -b ') ? 'block' : null)))
        .filter((line): line is string => line !== null);
      this.commands.push('query facts');
      return { code: 0, stdout: `${out.join('\n')}\n`, stderr: '' };
    }
    if (!script.includes('\n')) return this.runOne(script);
    let stdout = '';
    for (const line of script.split('\n')) {
      if (line === 'set -e') continue;
      const echoed = /^printf '\\n%s\\n' '([^']*)'$/.exec(line);
      if (echoed !== null) {
        stdout += `\n${echoed[1]}\n`;
        continue;
      }
      const quiet = / >\/dev\/null \|\| exit \$\?$/.exec(line) !== null;
      const result = await this.runOne(line.replace(/ >\/dev\/null \|\| exit \$\?$/, ''));
      if (result.code !== 0) return { code: result.code, stdout, stderr: result.stderr };
      if (!quiet) stdout += result.stdout;
    }
    return { code: 0, stdout, stderr: '' };
  }

  /** putFilesScript's files: each written (through writeFile, so a test sees it) only when its text differs. */
  private async putFiles(script: string): Promise<RunResult> {
    let stdout = '';
    const block = /printf '%s' '((?:[^']|'\\'')*)' > "\$t"\nif cmp -s "\$t" (\S+) 2>\/dev\/null; then rm -f "\$t"; else chmod ([0-7]+) /g;
    for (const match of script.matchAll(block)) {
      const [text, target, mode] = [(match[1] as string).replace(/'\\''/g, "'"), match[2] as string, Number.parseInt(match[3] as string, 8)];
      this.commands.push(`put ${target}`);
      if (this.files.get(target)?.text === text) continue;
      await this.writeFile(target, text, { mode });
      stdout += `changed ${target}\n`;
    }
    return { code: 0, stdout, stderr: '' };
  }

  /** One command line, as the recording host answers it. */
  private runOne(script: string): Promise<RunResult> {
    this.commands.push(script);
    const ok = (stdout = ''): Promise<RunResult> => Promise.resolve({ code: 0, stdout, stderr: '' });
    if (/kill -0/.test(script)) return Promise.resolve({ code: 1, stdout: '', stderr: '' });
    if (script === 'uname -m') return ok('x86_64\n');
    if (script === 'nproc 2>/dev/null || getconf _NPROCESSORS_ONLN') return this.cores === null ? Promise.resolve({ code: 127, stdout: '', stderr: 'getconf: not found' }) : ok(`${this.cores}\n`);
    const started =
      /^\/etc\/init\.d\/meshblock-(etcd|mdm|sds|sdc) start$/m.exec(script) ??
      /^systemctl daemon-reload && systemctl enable --now meshblock-(etcd|mdm|sds|sdc)\.service$/.exec(script);
    if (started !== null) {
      this.cluster.starts.push(`${this.host.row} ${started[1]}`);
      if (started[1] === 'sds' && this.cluster.mdm !== undefined) {
        const name = this.host.sds?.name as string;
        // The command line is in the unit or init script the installer wrote just before.
        const commandLine = ` ${installedCommandLine(this.files.get('/etc/init.d/meshblock-sds')?.text ?? this.files.get('/etc/systemd/system/meshblock-sds.service')?.text ?? null) ?? ''} `;
        const shards = / --shards ([0-9]+) /.exec(commandLine)?.[1];
        this.cluster.mdm.start(shards === undefined ? [name] : Array.from({ length: Number(shards) }, (_unused, index) => `${name}.${index + 1}`), / --host ([^ ]+) /.exec(commandLine)?.[1] ?? null);
      }
      if (started[1] === 'mdm') {
        this.cluster.id ??= 'c0ffee0000000001';
        this.files.set('/var/lib/meshblock/mdm/cluster.json', { text: JSON.stringify({ clusterId: this.cluster.id, name: 'meshblock' }), mode: 0o644 });
        this.files.set('/var/lib/meshblock/mdm/cluster.secret', { text: 'SECRET\n', mode: 0o600 });
      }
      return ok();
    }
    const listing = /^\/usr\/local\/bin\/meshblock ([a-z-]+) list --json/.exec(script);
    if (listing !== null) return ok(JSON.stringify(this.cluster.mdm?.list(listing[1] as string) ?? this.listing(listing[1] as string)));
    const adding = /^\/usr\/local\/bin\/meshblock ([a-z-]+) add (.*?) --api /.exec(script);
    if (adding !== null && this.cluster.mdm !== undefined) {
      const words = (adding[2] as string).split(' ');
      const flags = new Map<string, string>();
      for (let index = 0; index + 1 < words.length; index += 2) flags.set(words[index] as string, words[index + 1] as string);
      this.cluster.mdm.change(adding[1] as string, flags);
    }
    return ok();
  }

  /** The management CLI's listings, of an MDM that has everything the plan asks for. */
  private listing(type: string): Array<Record<string, unknown>> {
    const sdsHosts = this.cluster.plan.hosts.filter((host) => host.sds !== null);
    switch (type) {
      case 'pd':
        return [{ name: 'pd1', id: 'pd-1' }];
      case 'pool':
        return [{ name: 'sp1', id: 'sp-1' }];
      case 'sds':
        return sdsHosts.map((host) => ({ name: host.sds?.name, id: `sds-${host.row}`, protectionDomainId: 'pd-1' }));
      case 'device':
        return sdsHosts.map((host) => ({ name: `d${host.row}`, id: `d-${host.row}`, sdsId: `sds-${host.row}`, deviceCurrentPathName: '/dev/sdb' }));
      case 'sdc':
        return this.cluster.plan.hosts.filter((host) => host.sdc !== null).map((host) => ({ name: host.sdc?.name, id: `sdc-${host.row}` }));
      default:
        return [];
    }
  }
}

/** An Installer running only configure, on the given hosts, keeping its state in `stateDir`. */
function configureOnly(
  plan: InstallPlan,
  stateDir: string,
  connect: (host: InstallHost) => RecordingHost,
  createEtcdPki: CreateEtcdPki,
  report: (line: string) => void = () => undefined,
  createApiCertificate: CreateApiCertificate = ensureSelfSignedCertificate,
  more: { phases?: InstallPhase[]; dryRun?: boolean; sdsShards?: ShardCountRequest; parallel?: number } = {},
): Installer {
  return new Installer({
    plan,
    connect: (host) => Promise.resolve(connect(host)),
    phases: more.phases ?? ['configure'],
    dryRun: more.dryRun ?? false,
    prefix: '/opt/meshblock',
    volumes: [],
    sdsShards: more.sdsShards ?? 'auto',
    hostOptions: { dom0Mem: '4096M', nbdsMax: 16 },
    appRoot: '/nonexistent',
    workDir: stateDir,
    stateDir,
    createEtcdPki,
    createApiCertificate,
    ...(more.parallel === undefined ? {} : { parallel: more.parallel }),
    report,
  });
}

/** A createEtcdPki stand-in: the files the contract names, each holding `PEM NAME`. */
function placeholderPki(dir: string, request: EtcdPkiRequest): Promise<void> {
  const names = ['ca.crt', 'ca.key', ...request.members.flatMap((member) => [`member-${member.name}.crt`, `member-${member.name}.key`]), ...request.clients.flatMap((name) => [`client-${name}.crt`, `client-${name}.key`])];
  for (const name of names) fs.writeFileSync(path.join(dir, name), `PEM ${name}\n`);
  return Promise.resolve();
}

t.test('configure on three recording hosts: PKI copied, etcd everywhere, then the Master, the Slave, SDSs and SDCs', async (t) => {
  const plan = parseInstallCsv(threeNodes);
  const cluster: SimCluster = { id: null, plan, starts: [] };
  const recording = new Map(plan.hosts.map((host) => [host.row, new RecordingHost(host, cluster)]));
  const stateDir = t.testdir();
  const requests: Array<{ dir: string; request: EtcdPkiRequest }> = [];
  const lines: string[] = [];
  const recordPki: CreateEtcdPki = (dir, request) => {
    requests.push({ dir, request });
    return placeholderPki(dir, request);
  };
  const installer = configureOnly(plan, stateDir, (host) => recording.get(host.row) as RecordingHost, recordPki, (line) => lines.push(line));
  await installer.run();

  t.same(requests, [{ dir: path.join(stateDir, 'etcd-pki'), request: etcdPkiRequest(plan) }], 'the PKI made once, in the state dir');
  // Hosts are worked on in parallel: the etcd members in any order, then the Master's MDM,
  // the Slave's, then SDSs and SDCs in any order across hosts (a host's SDS before its SDC).
  t.same(stages(cluster.starts, [3, 2]), [['2 etcd', '3 etcd', '4 etcd'], ['2 mdm', '3 mdm'], ['2 sdc', '2 sds', '3 sds', '4 sdc', '4 sds']], 'etcd members, the Master, the Slave, then SDSs and SDCs');
  t.ok(cluster.starts.indexOf('2 sds') < cluster.starts.indexOf('2 sdc') && cluster.starts.indexOf('4 sds') < cluster.starts.indexOf('4 sdc'), "a host's SDS before its SDC");
  const expected = configurePlan(plan, cluster.id as string);
  for (const entry of expected) {
    const host = recording.get(entry.host.row) as RecordingHost;
    for (const file of entry.pkiFiles) {
      t.same(host.files.get(`/etc/meshblock/etcd-pki/${file.name}`), { text: `PEM ${file.name}\n`, mode: file.mode }, `row ${entry.host.row}: ${file.name}`);
    }
    t.same(
      [...host.files.keys()].filter((name) => name.startsWith('/etc/meshblock/etcd-pki/')).length,
      entry.pkiFiles.length,
      `row ${entry.host.row}: only its own PKI files (never ca.key)`,
    );
    for (const daemon of entry.daemons) {
      t.match(host.files.get(`/etc/init.d/meshblock-${daemon.role}`)?.text, `\n\texec /usr/local/bin/meshblock ${daemon.args.join(' ')}\n`, `row ${entry.host.row}: the ${daemon.role} init script`);
    }
    t.equal(host.files.get('/etc/meshblock/cluster.secret')?.text, 'SECRET\n', `row ${entry.host.row}: the Master's secret`);
  }
  t.match(recording.get(4)?.files.get('/etc/init.d/meshblock-etcd')?.text, '# Short-Description: meshblock etcd member\n');
  t.notOk(recording.get(4)?.files.has('/etc/init.d/meshblock-mdm'), 'no MDM on the TB');
  const managed = recording.get(2)?.commands.filter((command) => /meshblock (pd|sds|device) list/.test(command)) ?? [];
  t.ok(managed.length > 0 && managed.every((command) => command.includes('--api https://10.0.0.1:8443,https://10.0.0.2:8443 --ca-cert /etc/meshblock/api.crt --password-file /etc/meshblock/admin.password')), 'the management CLI runs on the Master host, given every MDM API');
  t.notOk(recording.get(3)?.commands.some((command) => /meshblock [a-z-]+ list/.test(command)), 'nothing is managed through the Slave');

  // The MDMs' shared files: made once in the state dir, the same on both MDM hosts, none on the TB.
  const password = fs.readFileSync(path.join(stateDir, 'admin.password'), 'utf8');
  t.match(password, /^[A-Za-z0-9_-]{24}\n$/, 'a generated admin password');
  t.equal(fs.statSync(path.join(stateDir, 'admin.password')).mode & 0o777, 0o600);
  const certificate = new X509Certificate(fs.readFileSync(path.join(stateDir, 'api', 'api.crt')));
  t.equal(certificate.subjectAltName, 'IP Address:10.0.0.1, IP Address:10.0.0.2, IP Address:127.0.0.1, DNS:localhost', 'one REST certificate naming every MDM API');
  for (const row of [2, 3]) {
    const files = (recording.get(row) as RecordingHost).files;
    t.same(files.get('/etc/meshblock/api.crt'), { text: fs.readFileSync(path.join(stateDir, 'api', 'api.crt'), 'utf8'), mode: 0o644 }, `row ${row}: the REST certificate`);
    t.same(files.get('/etc/meshblock/api.key'), { text: fs.readFileSync(path.join(stateDir, 'api', 'api.key'), 'utf8'), mode: 0o600 }, `row ${row}: its key`);
    t.same(files.get('/etc/meshblock/admin.password'), { text: password, mode: 0o600 }, `row ${row}: the admin password`);
  }
  t.notOk(['/etc/meshblock/api.crt', '/etc/meshblock/api.key', '/etc/meshblock/admin.password'].some((file) => recording.get(4)?.files.has(file)), 'nothing of the MDMs on the TB');
  t.notOk(recording.get(2)?.commands.some((command) => command.includes('systemctl')), 'no systemd on these hosts: nothing asked of it');

  t.match(lines.join('\n'), /10\.0\.0\.2 \(row 3\): Slave MDM mdm2 up, cluster c0ffee0000000001/);
  t.match(lines.at(-2), /^cluster c0ffee0000000001 configured: MDM cluster of 3 \(Master mdm1 on 10\.0\.0\.1, Slave mdm2 on 10\.0\.0\.2, TB tb1 on 10\.0\.0\.3\), 3 SDS\(s\), 2 SDC\(s\)$/);
  t.equal(lines.at(-1), `manage it from here or any MDM host: meshblock dashboard --api https://10.0.0.1:8443,https://10.0.0.2:8443 --ca-cert ${path.join(stateDir, 'api', 'api.crt')} --password-file ${path.join(stateDir, 'admin.password')} (on an MDM host: /etc/meshblock/api.crt, /etc/meshblock/admin.password)`);

  // Run again on the same state dir: the same password and certificate, nothing rewritten.
  const again = configureOnly(plan, stateDir, (host) => recording.get(host.row) as RecordingHost, recordPki);
  const writes: string[] = [];
  for (const host of recording.values()) {
    const write = host.writeFile.bind(host);
    host.writeFile = (file, text, options) => (writes.push(file), write(file, text, options));
  }
  await again.run();
  t.equal(fs.readFileSync(path.join(stateDir, 'admin.password'), 'utf8'), password, 'the password is kept');
  t.equal(new X509Certificate(fs.readFileSync(path.join(stateDir, 'api', 'api.crt'))).fingerprint256, certificate.fingerprint256, 'the certificate is kept');
  t.same(writes, [], 'nothing written to a host again');
});

t.test('one Master alone: its MDM makes its own certificate and password, on loopback as before', async (t) => {
  const plan = parseInstallCsv(threeNodes.replace(',Slave,', ',,').replace(',TB,', ',,'));
  t.same(mdmApiUrls(plan), ['https://127.0.0.1:8443']);
  const cluster: SimCluster = { id: null, plan, starts: [] };
  const recording = new Map(plan.hosts.map((host) => [host.row, new RecordingHost(host, cluster)]));
  const stateDir = t.testdir();
  let certificates = 0;
  const installer = configureOnly(plan, stateDir, (host) => recording.get(host.row) as RecordingHost, placeholderPki, undefined, () => {
    certificates += 1;
    return { certPath: '', keyPath: '' };
  });
  await installer.run();
  t.equal(certificates, 0, 'no shared certificate');
  t.same(fs.readdirSync(stateDir), [], 'nothing kept in the state dir');
  t.same([...(recording.get(2) as RecordingHost).files.keys()].filter((file) => /api\.(crt|key)|admin\.password/.test(file)), [], 'nothing copied to the MDM host');
  t.ok(recording.get(2)?.commands.filter((command) => /meshblock pd list/.test(command)).every((command) => command.includes('--api https://127.0.0.1:8443 --ca-cert /var/lib/meshblock/mdm/api.crt --password-file /var/lib/meshblock/mdm/admin.password')));
});

t.test("a kept REST certificate that does not name an MDM's address is refused before any MDM starts", async (t) => {
  const plan = parseInstallCsv(threeNodes);
  const stateDir = t.testdir();
  // Made for another Slave address: as if the Slave had moved, or a 5-node cluster grew from this state dir.
  fs.mkdirSync(path.join(stateDir, 'api'));
  ensureSelfSignedCertificate(path.join(stateDir, 'api'), { subjectAltNames: apiSubjectAltNames(parseInstallCsv(threeNodes.replace('10.0.0.2,root', '10.0.0.9,root'))) });
  const cluster: SimCluster = { id: null, plan, starts: [] };
  const installer = configureOnly(plan, stateDir, (host) => new RecordingHost(host, cluster), placeholderPki);
  await t.rejects(installer.run(), { code: 'MB_ERR_INSTALL_STEP', message: /REST certificate .*api\/api\.crt does not name 10\.0\.0\.2: remove .*api\.crt and .*api\.key to make one for every MDM/ });
  t.same([...cluster.starts].sort(), ['2 etcd', '3 etcd', '4 etcd'], 'only the etcd members started');
});

t.test("a systemd host: Debian's etcd.service is stopped and disabled before the member starts", async (t) => {
  const plan = parseInstallCsv(threeNodes);
  const cluster: SimCluster = { id: null, plan, starts: [] };
  const recording = new Map(plan.hosts.map((host) => [host.row, new RecordingHost(host, cluster)]));
  // Row 2 runs the package's etcd (enabled and active), row 3 had it disabled, row 4 is a systemd host without it running.
  for (const host of recording.values()) host.files.set('/run/systemd/system', { text: '', mode: undefined });
  for (const [row, answer] of [[2, 0], [3, 1], [4, 1]] as const) {
    const host = recording.get(row) as RecordingHost;
    const run = host.run.bind(host);
    host.run = (command, args) => (command === 'systemctl' && args[0] !== undefined && /^is-(enabled|active)$/.test(args[0]) ? (host.commands.push([command, ...args].join(' ')), Promise.resolve({ code: answer, stdout: '', stderr: '' })) : run(command, args));
  }
  const lines: string[] = [];
  await configureOnly(plan, t.testdir(), (host) => recording.get(host.row) as RecordingHost, placeholderPki, (line) => lines.push(line)).run();
  const first = recording.get(2) as RecordingHost;
  const disabledAt = first.commands.indexOf('systemctl disable --now etcd.service');
  t.ok(disabledAt >= 0 && disabledAt < first.commands.findIndex((command) => command.includes('enable --now meshblock-etcd.service')), 'disabled on row 2, before its member starts');
  t.match(lines.join('\n'), /10\.0\.0\.1 \(row 2\): Debian's etcd\.service \(its own etcd on localhost:2379\) stopped and disabled/);
  for (const row of [3, 4]) t.notOk(recording.get(row)?.commands.includes('systemctl disable --now etcd.service'), `row ${row}: left alone (not enabled, not running)`);
  t.match(first.files.get('/etc/systemd/system/meshblock-etcd.service')?.text, '\nConflicts=etcd.service\n', "the member's unit keeps Debian's etcd.service from running beside it");
  t.notMatch(first.files.get('/etc/systemd/system/meshblock-mdm.service')?.text, 'Conflicts=');
  t.notOk(first.files.has('/etc/init.d/meshblock-etcd'), 'no init script on a systemd host');
});

t.test('a Slave whose MDM is in another cluster stops configure', async (t) => {
  const plan = parseInstallCsv(threeNodes);
  const cluster: SimCluster = { id: null, plan, starts: [] };
  const recording = new Map(plan.hosts.map((host) => [host.row, new RecordingHost(host, cluster)]));
  // The Slave host kept the data directory of another cluster: its MDM reads that identity.
  const slave = recording.get(3) as RecordingHost;
  const run = slave.run.bind(slave);
  slave.run = async (command, args) => {
    const result = await run(command, args);
    if (/meshblock-mdm start/.test(args[1] ?? '')) slave.files.set('/var/lib/meshblock/mdm/cluster.json', { text: JSON.stringify({ clusterId: 'other' }), mode: 0o644 });
    return result;
  };
  const stateDir = t.testdir();
  const installer = configureOnly(plan, stateDir, (host) => recording.get(host.row) as RecordingHost, placeholderPki);
  await t.rejects(installer.run(), { code: 'MB_ERR_INSTALL_STEP', message: /row 3\): its MDM is in cluster other, not the Master's c0ffee0000000001/ });
  t.notOk(cluster.starts.some((start) => / sd[sc]$/.test(start)), 'no SDS or SDC started');
});

t.test("a member host with another cluster's etcd CA is refused before anything is made", async (t) => {
  const plan = parseInstallCsv(threeNodes);
  const cluster: SimCluster = { id: null, plan, starts: [] };
  const tb = new RecordingHost(plan.hosts[2] as InstallHost, cluster);
  await tb.writeFile('/etc/meshblock/etcd-pki/ca.crt', 'PEM another CA\n');
  const stateDir = t.testdir();
  let made = 0;
  const installer = configureOnly(plan, stateDir, (host) => (host.row === 4 ? tb : new RecordingHost(host, cluster)), () => Promise.resolve(void (made += 1)));
  await t.rejects(installer.run(), { code: 'MB_ERR_INSTALL_STEP', message: /10\.0\.0\.3 \(row 4\): its etcd CA .* is not the one in .*etcd-pki \(there is none there\): give --state-dir/ });
  t.equal(made, 0, 'no PKI made');
  t.same(cluster.starts, [], 'nothing started');
});

t.test('a PKI missing a file is named', async (t) => {
  const plan = parseInstallCsv(threeNodes);
  const cluster: SimCluster = { id: null, plan, starts: [] };
  const stateDir = t.testdir();
  const installer = configureOnly(plan, stateDir, (host) => new RecordingHost(host, cluster), () => Promise.resolve());
  await t.rejects(installer.run(), { code: 'MB_ERR_INSTALL_STEP', message: /the etcd PKI has no .*etcd-pki\/ca\.crt: ENOENT/ });
  t.same(cluster.starts, [], 'nothing started');
});

// --- SDS shards ---------------------------------------------------------------------------------

const shardRows = [
  header,
  '10.0.0.1,root,,debian,Master,,Yes,sds1,,pd1,fs1,"/dev/sdb,/dev/sdc,/dev/sdd",sp1,No,',
  '10.0.0.2,root,,debian,,,Yes,sds2,,pd1,fs2,"/dev/sdb,/dev/sdc,/dev/sdd",sp1,No,',
  '10.0.0.3,root,,debian,,,Yes,sds3,,pd1,fs3,"/dev/sdb,/dev/sdc",sp1,No,',
  '10.0.0.4,root,,debian,,,Yes,sds4,,pd1,fs4,"/dev/sdb,/dev/sdc,/dev/sdd",sp1,No,',
  '',
].join('\n');
/** The hosts' cores by row: 8 cores, 3 devices: 3 shards; 4 and 3: 2; 64 and 2: 2; 3 and 3: 1. */
const shardCores = new Map([[2, 8], [3, 4], [4, 64], [5, 3]]);

function shardHosts(plan: InstallPlan): { cluster: SimCluster & { mdm: SimMdm }; recording: Map<number, RecordingHost> } {
  const cluster = { id: null, plan, starts: [], mdm: new SimMdm() };
  const recording = new Map(plan.hosts.map((host) => [host.row, new RecordingHost(host, cluster)]));
  for (const [row, cores] of shardCores) (recording.get(row) as RecordingHost).cores = cores;
  return { cluster, recording };
}

function shardInstaller(t: Test, plan: InstallPlan, recording: Map<number, RecordingHost>, lines: string[], more: { sdsShards?: ShardCountRequest; dryRun?: boolean } = {}): Installer {
  return configureOnly(plan, t.testdir(), (host) => recording.get(host.row) as RecordingHost, placeholderPki, (line) => lines.push(line), ensureSelfSignedCertificate, { phases: ['query', 'configure'], ...more });
}

t.test('the auto shard count: half the cores, at most one shard per device, at least one, at most sdsShardsMax', async (t) => {
  const cases: Array<[cores: number, devices: number, shards: number]> = [
    [1, 3, 1],
    [2, 3, 1],
    [3, 3, 1],
    [4, 3, 2],
    [8, 3, 3],
    [8, 1, 1],
    [64, 2, 2],
    [64, 40, 32],
    [1000, 500, sdsShardsMax],
    [0, 2, 1],
  ];
  t.same(cases.map(([cores, devices]) => autoShardCount(cores, devices)), cases.map((entry) => entry[2]));
});

t.test('--sds-shards: auto or 1..sdsShardsMax', async (t) => {
  t.equal(parseShardCount('--sds-shards', 'auto'), 'auto');
  t.equal(parseShardCount('--sds-shards', '1'), 1);
  t.equal(parseShardCount('--sds-shards', String(sdsShardsMax)), sdsShardsMax);
  for (const bad of ['0', String(sdsShardsMax + 1), 'two', '2.5', '', '-1', ' 2']) t.throws(() => parseShardCount('--sds-shards', bad), { code: 'MB_ERR_INVALID_ARGUMENT', message: new RegExp(`^--sds-shards: must be auto or a count from 1 to ${sdsShardsMax}`) }, `'${bad}'`);
});

t.test('shard names, devices round-robin in CSV order, the installed count read from a unit', async (t) => {
  t.same(sdsShardNames('sds1', 1), ['sds1']);
  t.same(sdsShardNames('sds1', 3), ['sds1.1', 'sds1.2', 'sds1.3']);
  const rows = [header, '10.0.0.1,root,,debian,Master,,Yes,sds1,,pd1,,"/dev/a,/dev/b,/dev/c,/dev/d,/dev/e","sp1,sp2,sp1,sp2,sp1",No,', '10.0.0.2,root,,debian,,,Yes,sds2,,pd1,,/dev/a,sp1,No,', ''];
  const host = parseInstallCsv(rows.join('\n')).hosts[0] as InstallHost;
  t.same(deviceShards(host, 2).map((entry) => `${entry.sdsName} ${entry.device.path} ${entry.device.pool}`), ['sds1.1 /dev/a sp1', 'sds1.2 /dev/b sp2', 'sds1.1 /dev/c sp1', 'sds1.2 /dev/d sp2', 'sds1.1 /dev/e sp1']);
  t.same(deviceShards(host, 1).map((entry) => entry.sdsName), ['sds1', 'sds1', 'sds1', 'sds1', 'sds1']);
  t.equal(installedSdsShards(null), null, 'no unit: not installed');
  t.equal(installedSdsShards('[Service]\nExecStart=/usr/local/bin/meshblock mdm start --data-dir /x\n'), null, 'not an SDS unit');
  t.equal(installedSdsShards('[Service]\nExecStart=/usr/local/bin/meshblock sds start --name sds1 --secret-file /etc/meshblock/cluster.secret\nRestart=on-failure\n'), 1, 'installed before shards');
  t.equal(installedSdsShards('[Service]\nExecStart=/usr/local/bin/meshblock sds start --name sds1 --secret-file /s --shards 12 --host sds1\n'), 12);
  t.equal(installedSdsShards('[Service]\nExecStart=/usr/local/bin/meshblock sds start --name sds1 --shards 3\n'), 3, 'last on the line');
  t.equal(installedSdsShards(initScriptText('sds', ['sds', 'start', '--name', 'sds1', '--shards', '4', '--host', 'sds1'])), 4, 'a SysV init script');
});

t.test('daemonArgs: --shards N --host NAME after the command line of before, only for N > 1', async (t) => {
  const plan = parseInstallCsv(shardRows);
  const host = plan.hosts[0] as InstallHost;
  const before = ['sds', 'start', '--name', 'sds1', '--listen', '10.0.0.1:7072', '--data-dir', '/var/lib/meshblock/sds', '--mdm', '10.0.0.1:6611', '--cluster-id', 'CID', '--secret-file', '/etc/meshblock/cluster.secret'];
  t.same(daemonArgs('sds', host, plan, 'CID'), before);
  t.same(daemonArgs('sds', host, plan, 'CID', 1), before, 'one process: byte for byte as before');
  t.same(daemonArgs('sds', host, plan, 'CID', 3), [...before, '--shards', '3', '--host', 'sds1']);
  t.same(configurePlan(plan, 'CID', new Map([[2, 3]])).map((entry) => entry.daemons.find((daemon) => daemon.role === 'sds')?.args.slice(14).join(' ')), ['--shards 3 --host sds1', '', '', ''], 'a row not in the map: one process');
});

t.test('auto shards on four hosts: chosen in query, started, every shard waited for, added, devices round-robin; a re-run adds nothing', async (t) => {
  const plan = parseInstallCsv(shardRows);
  const { cluster, recording } = shardHosts(plan);
  const lines: string[] = [];
  await shardInstaller(t, plan, recording, lines).run();

  t.same(
    lines.filter((line) => /; SDS /.test(line)).map((line) => /; (SDS [^;]*);/.exec(line)?.[1]),
    [
      'SDS in 3 shards sds1.1..sds1.3 (auto: 8 core(s), 3 device(s))',
      'SDS in 2 shards sds2.1..sds2.2 (auto: 4 core(s), 3 device(s))',
      'SDS in 2 shards sds3.1..sds3.2 (auto: 64 core(s), 2 device(s))',
      'SDS sds4 as one process (auto: 3 core(s), 3 device(s))',
    ],
    'the query line of each host says its choice and why',
  );
  const execStart = (row: number): string | undefined => /\n\texec (.*)\n/.exec(recording.get(row)?.files.get('/etc/init.d/meshblock-sds')?.text ?? '')?.[1];
  t.match(execStart(2), / --secret-file \/etc\/meshblock\/cluster\.secret --shards 3 --host sds1$/);
  t.match(execStart(3), / --shards 2 --host sds2$/);
  t.match(execStart(5), / --secret-file \/etc\/meshblock\/cluster\.secret$/, 'one process: no --shards, no --host');
  t.same(
    cluster.mdm.sdss.map((sds) => `${sds.name} ${sds.host} ${sds.protectionDomainId} ${sds.faultSet}`),
    ['sds1.1 sds1 id-pd1 fs1', 'sds1.2 sds1 id-pd1 fs1', 'sds1.3 sds1 id-pd1 fs1', 'sds2.1 sds2 id-pd1 fs2', 'sds2.2 sds2 id-pd1 fs2', 'sds3.1 sds3 id-pd1 fs3', 'sds3.2 sds3 id-pd1 fs3', 'sds4 null id-pd1 fs4'],
    'every shard registered (the SDS name its host label) and in the host fault set',
  );
  t.same(
    cluster.mdm.changes,
    [
      'pd add --name pd1',
      'fault-set add --pd pd1 --name fs1',
      'fault-set add --pd pd1 --name fs2',
      'fault-set add --pd pd1 --name fs3',
      'fault-set add --pd pd1 --name fs4',
      'pool add --pd pd1 --name sp1',
      'sds add --sds sds1.1 --pd pd1 --fault-set fs1',
      'sds add --sds sds1.2 --pd pd1 --fault-set fs1',
      'sds add --sds sds1.3 --pd pd1 --fault-set fs1',
      'device add --sds sds1.1 --pool sp1 --path /dev/sdb',
      'device add --sds sds1.2 --pool sp1 --path /dev/sdc',
      'device add --sds sds1.3 --pool sp1 --path /dev/sdd',
      'sds add --sds sds2.1 --pd pd1 --fault-set fs2',
      'sds add --sds sds2.2 --pd pd1 --fault-set fs2',
      'device add --sds sds2.1 --pool sp1 --path /dev/sdb',
      'device add --sds sds2.2 --pool sp1 --path /dev/sdc',
      'device add --sds sds2.1 --pool sp1 --path /dev/sdd',
      'sds add --sds sds3.1 --pd pd1 --fault-set fs3',
      'sds add --sds sds3.2 --pd pd1 --fault-set fs3',
      'device add --sds sds3.1 --pool sp1 --path /dev/sdb',
      'device add --sds sds3.2 --pool sp1 --path /dev/sdc',
      'sds add --sds sds4 --pd pd1 --fault-set fs4',
      'device add --sds sds4 --pool sp1 --path /dev/sdb',
      'device add --sds sds4 --pool sp1 --path /dev/sdc',
      'device add --sds sds4 --pool sp1 --path /dev/sdd',
    ],
  );
  t.ok(lines.includes('added sds1.3 to pd1, fault set fs1') && lines.includes('added sds2.1:/dev/sdd to sp1'), 'each step reported');
  t.match(lines.at(-1), /configured: MDM on 10\.0\.0\.1, 4 SDS\(s\) in 8 shards, 0 SDC\(s\)$/);

  // Again, on hosts that now say 2 cores: the installed counts stay, nothing is added or written.
  for (const host of recording.values()) host.cores = 2;
  const writes: string[] = [];
  for (const host of recording.values()) {
    const write = host.writeFile.bind(host);
    host.writeFile = (file, text, options) => (writes.push(file), write(file, text, options));
  }
  const again: string[] = [];
  const changes = cluster.mdm.changes.length;
  await shardInstaller(t, plan, recording, again).run();
  t.same(cluster.mdm.changes.slice(changes), [], 'no SDS or device added again');
  t.same(writes, [], 'no unit rewritten');
  t.same(
    again.filter((line) => /; SDS /.test(line)).map((line) => /; (SDS [^;]*);/.exec(line)?.[1]),
    ['SDS in 3 shards sds1.1..sds1.3 (as installed)', 'SDS in 2 shards sds2.1..sds2.2 (as installed)', 'SDS in 2 shards sds3.1..sds3.2 (as installed)', 'SDS sds4 as one process (as installed)'],
  );

  // A shard dropped from its domain and a device gone: only they are added; a device put on
  // another shard of its host by hand stays there.
  const sds13 = cluster.mdm.sdss.find((sds) => sds.name === 'sds1.3');
  if (sds13 !== undefined) sds13.protectionDomainId = null;
  const moved = cluster.mdm.devices.find((device) => device.sdsId === 'id-sds1.3');
  if (moved !== undefined) moved.sdsId = 'id-sds1.1';
  cluster.mdm.devices.splice(cluster.mdm.devices.findIndex((device) => device.sdsId === 'id-sds1.2'), 1);
  const changesBefore = cluster.mdm.changes.length;
  await shardInstaller(t, plan, recording, []).run();
  t.same(cluster.mdm.changes.slice(changesBefore), ['sds add --sds sds1.3 --pd pd1 --fault-set fs1', 'device add --sds sds1.2 --pool sp1 --path /dev/sdc']);
});

t.test('--sds-shards: every host the same count, nproc not asked; 1 is the install of before', async (t) => {
  const plan = parseInstallCsv(shardRows.replace(/,fs\d,/g, ',,'));
  const { cluster, recording } = shardHosts(plan);
  const lines: string[] = [];
  await shardInstaller(t, plan, recording, lines, { sdsShards: 3 }).run();
  t.same(
    lines.filter((line) => /; SDS /.test(line)).map((line) => /; (SDS [^;]*);/.exec(line)?.[1]),
    ['SDS in 3 shards sds1.1..sds1.3 (--sds-shards 3)', 'SDS in 3 shards sds2.1..sds2.3 (--sds-shards 3)', 'SDS in 3 shards sds3.1..sds3.3 (--sds-shards 3, shard 3 gets no device)', 'SDS in 3 shards sds4.1..sds4.3 (--sds-shards 3)'],
  );
  t.notOk([...recording.values()].some((host) => host.commands.some((command) => command.startsWith('nproc'))), 'the cores are not asked');
  t.equal(cluster.mdm.sdss.length, 12);
  t.same(cluster.mdm.changes.filter((change) => change.startsWith('sds add --sds sds3')), ['sds add --sds sds3.1 --pd pd1', 'sds add --sds sds3.2 --pd pd1', 'sds add --sds sds3.3 --pd pd1'], 'no fault sets: domain only');
  t.same(cluster.mdm.changes.filter((change) => change.startsWith('device add --sds sds3')), ['device add --sds sds3.1 --pool sp1 --path /dev/sdb', 'device add --sds sds3.2 --pool sp1 --path /dev/sdc']);

  // The installed count cannot be changed by another --sds-shards: refused before anything starts.
  const starts = cluster.starts.length;
  // Every host of the phase is asked (in parallel), and the error names each that refused.
  await t.rejects(shardInstaller(t, plan, recording, [], { sdsShards: 2 }).run(), {
    code: 'MB_ERR_INSTALL_HOSTS',
    message: /^query: 4 of 4 hosts failed: 10\.0\.0\.1 \(row 2\): SDS sds1 is installed as 3 shards \(\/etc\/init\.d\/meshblock-sds\); --sds-shards 2 cannot change that.*; 10\.0\.0\.4 \(row 5\): SDS sds4 is installed as 3 shards/,
  });
  t.equal(cluster.starts.length, starts, 'nothing started');

  const single = parseInstallCsv(shardRows);
  const fresh = shardHosts(single);
  await shardInstaller(t, single, fresh.recording, [], { sdsShards: 1 }).run();
  for (const entry of configurePlan(single, cluster.id as string)) {
    const sds = entry.daemons.find((daemon) => daemon.role === 'sds');
    t.match(fresh.recording.get(entry.host.row)?.files.get('/etc/init.d/meshblock-sds')?.text, `\n\texec /usr/local/bin/meshblock ${sds?.args.join(' ')}\n`, `row ${entry.host.row}: the init script of before shards`);
  }
  t.same(fresh.cluster.mdm.sdss.map((sds) => sds.name), ['sds1', 'sds2', 'sds3', 'sds4']);
  t.same(fresh.cluster.mdm.changes.filter((change) => change.startsWith('device add --sds sds1 ')).length, 3);
});

t.test('shards refused in query: names that would not fit, a host whose cores cannot be read', async (t) => {
  const long = 'a'.repeat(30);
  const plan = parseInstallCsv(shardRows.replace(',sds1,', `,${long},`));
  const { cluster, recording } = shardHosts(plan);
  await t.rejects(shardInstaller(t, plan, recording, []).run(), { code: 'MB_ERR_INSTALL_HOST', message: new RegExp(`^10\\.0\\.0\\.1 \\(row 2\\), column 'SDS Name': with 3 shards the SDS names \\(up to '${long}\\.3'\\) must fit 31 characters`) });
  t.same(cluster.starts, [], 'refused in query');

  const plain = parseInstallCsv(shardRows);
  const hosts = shardHosts(plain);
  (hosts.recording.get(3) as RecordingHost).cores = null;
  await t.rejects(shardInstaller(t, plain, hosts.recording, []).run(), { code: 'MB_ERR_INSTALL_HOST', message: /^10\.0\.0\.2 \(row 3\): .*core count.*give --sds-shards/ });
  await shardInstaller(t, plain, hosts.recording, [], { sdsShards: 2 }).run();
  t.equal(hosts.cluster.mdm.sdss.length, 8, 'with --sds-shards the cores are not needed');
});

t.test('--dry-run: the shard start and the round-robin plan per host, nothing started', async (t) => {
  const plan = parseInstallCsv(shardRows);
  const { cluster, recording } = shardHosts(plan);
  const lines: string[] = [];
  await shardInstaller(t, plan, recording, lines, { dryRun: true }).run();
  t.ok(lines.includes('10.0.0.1 (row 2): start meshblock sds start --name sds1 --listen 10.0.0.1:7072 --data-dir /var/lib/meshblock/sds --mdm 10.0.0.1:6611 --cluster-id CLUSTER-ID --secret-file /etc/meshblock/cluster.secret --shards 3 --host sds1'));
  t.ok(lines.includes('10.0.0.2 (row 3): wait for sds2.1, sds2.2 to register; add their devices round-robin: sds2.1 /dev/sdb, sds2.2 /dev/sdc, sds2.1 /dev/sdd'));
  t.notOk(lines.some((line) => line.startsWith('10.0.0.4 (row 5): wait for')), 'one process: as before');
  t.same(cluster.starts, []);
  t.same(cluster.mdm.changes, []);
});

t.test('--parallel 3 on ten hosts: never more than three at once, every host done, the failures named together', async (t) => {
  const rows = Array.from({ length: 10 }, (_unused, index) => `10.0.1.${index + 1},root,,debian,${index === 0 ? 'Master' : ''},,Yes,sds${index + 1},,pd1,,/dev/sdb,sp1,No,`);
  const plan = parseInstallCsv([header, ...rows, ''].join('\n'));
  const cluster: SimCluster = { id: null, plan, starts: [] };
  const recording = new Map(plan.hosts.map((host) => [host.row, new RecordingHost(host, cluster)]));
  // Each command takes a few milliseconds, so hosts overlap; a host is busy from its first command to its `query done` line.
  const busy = new Set<string>();
  let busyMax = 0;
  for (const host of recording.values()) {
    const run = host.run.bind(host);
    host.run = async (command, args) => {
      busy.add(host.label.replace('recording ', ''));
      busyMax = Math.max(busyMax, busy.size);
      await new Promise((resolve) => setTimeout(resolve, 5));
      return run(command, args);
    };
  }
  const lines: string[] = [];
  const report = (line: string): void => {
    lines.push(line);
    const done = /^(\S+) \(row \d+\): query (done|FAILED)/.exec(line);
    if (done !== null) busy.delete(done[1] as string);
  };
  await configureOnly(plan, t.testdir(), (host) => recording.get(host.row) as RecordingHost, placeholderPki, report, ensureSelfSignedCertificate, { phases: ['query'], sdsShards: 1, parallel: 3 }).run();
  t.equal(busyMax, 3, 'three hosts at once, never more');
  t.same(lines.filter((line) => / query done in /.test(line)).length, 10, 'a done line per host');

  // Two hosts whose unit says another shard count than asked: both named, the others all done.
  for (const row of [4, 9]) (recording.get(row) as RecordingHost).files.set('/etc/systemd/system/meshblock-sds.service', { text: 'ExecStart=/usr/local/bin/meshblock sds start --name x --shards 2 --host x\n', mode: 0o644 });
  lines.length = 0;
  await t.rejects(configureOnly(plan, t.testdir(), (host) => recording.get(host.row) as RecordingHost, placeholderPki, report, ensureSelfSignedCertificate, { phases: ['query'], sdsShards: 1, parallel: 3 }).run(), {
    code: 'MB_ERR_INSTALL_HOSTS',
    message: /^query: 2 of 10 hosts failed: 10\.0\.1\.3 \(row 4\): SDS sds3 is installed as 2 shards.*; 10\.0\.1\.8 \(row 9\): SDS sds8 is installed as 2 shards/,
  });
  t.same(lines.filter((line) => / query done in /.test(line)).length, 8, 'every other host finished its query');
  t.same(lines.filter((line) => / query FAILED: /.test(line)).length, 2);
});

t.test('putFilesScript: one command for several files, byte for byte under sh and busybox sh, refused past what one argument may carry', async (t) => {
  const script = putFilesScript([
    { path: '/etc/meshblock/a', text: "it's\n", mode: 0o600 },
    { path: '/etc/meshblock/b', text: 'no newline', mode: 0o644 },
  ]);
  t.match(script, /printf '%s' 'it'\\''s\n' > "\$t"/, 'a quote in the text kept');
  t.match(script, /chmod 600 "\$t" && mv -f "\$t" \/etc\/meshblock\/a && echo changed \/etc\/meshblock\/a/);
  // Run for real, by the shells the hosts have (dash as /bin/sh here, busybox's as on a minimal host).
  for (const shell of [['/bin/sh'], ['busybox', 'sh']]) {
    const dir = t.testdir();
    const files = [
      { path: path.join(dir, 'sub', 'a'), text: "it's\n$HOME `x` \\n", mode: 0o600 },
      { path: path.join(dir, 'b'), text: 'no newline', mode: 0o644 },
    ];
    const first = spawnSync(shell[0] as string, [...shell.slice(1), '-c', putFilesScript(files)], { encoding: 'utf8' });
    t.equal(first.status, 0, `${shell.join(' ')}: ${first.stderr}`);
    t.same(changedFiles(first.stdout), files.map((file) => file.path), `${shell.join(' ')}: both written`);
    for (const file of files) {
      t.equal(fs.readFileSync(file.path, 'utf8'), file.text, `${shell.join(' ')}: ${path.basename(file.path)} byte for byte`);
      t.equal(fs.statSync(file.path).mode & 0o777, file.mode);
    }
    const again = spawnSync(shell[0] as string, [...shell.slice(1), '-c', putFilesScript(files)], { encoding: 'utf8' });
    t.same([again.status, changedFiles(again.stdout)], [0, []], `${shell.join(' ')}: the same files again: nothing replaced`);
    t.same(fs.readdirSync(dir).filter((name) => name.startsWith('.meshblock-put-')), [], 'no temporary file left');
  }
  t.throws(() => putFilesScript([{ path: '/etc/x', text: 'x'.repeat(200 * 1024), mode: 0o644 }]), { code: 'MB_ERR_INSTALL_STEP', message: /over the 98304 one command may carry/ });
  t.throws(() => putFilesScript([{ path: 'relative', text: '', mode: 0o644 }]), { code: 'MB_ERR_INSTALL_STEP', message: /host paths are absolute/ });
});
