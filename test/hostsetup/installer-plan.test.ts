// The installer's configure step for an MDM cluster, at the level of what it would run: the
// command lines each host's daemons get (configurePlan, which --dry-run prints and configure
// runs), the etcd PKI it asks for and the files each host gets, and the order configure starts
// things in across hosts (every etcd member, the Master's MDM, the Slave's, then SDSs and SDCs).
//
// The order is seen by running Installer's configure phase against recording hosts: each one
// keeps files in memory, records every command, answers the MDM start by writing cluster.json
// as an MDM would, and answers the management CLI as an MDM that already has every pool, SDS,
// device and SDC (so configure adds nothing). Mocked to see every command and its order in
// milliseconds, and cases real hosts cannot make here (systemd running Debian's etcd.service);
// the real multi-host installs are test/integration/install.test.ts (one MDM) and
// install-cluster.test.ts (Master, Slave and TB, surviving the Master's death).
// createEtcdPki is a stand-in that records its request and writes placeholder files; the
// MDMs' REST certificate is the real one (src/mdm/tls.ts, openssl), as the CLI hands it in.

import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import type { HostTransport, RunResult, WriteOptions } from '../../src/hostsetup/host-transport.js';
import { installCsvTemplate, parseInstallCsv, type InstallHost, type InstallPlan } from '../../src/hostsetup/install-csv.js';
import { X509Certificate } from 'node:crypto';
import {
  apiSubjectAltNames,
  configurePlan,
  etcdPkiRequest,
  Installer,
  mdmAddresses,
  mdmApiUrls,
  type CreateApiCertificate,
  type CreateEtcdPki,
  type EtcdPkiRequest,
} from '../../src/hostsetup/installer.js';
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
const sdcArgs = (index: number): string[] => ['sdc', 'start', '--mdm', mdmList, '--name', `sdc${index}`, '--data-dir', '/var/lib/meshblock/sdc', ...secretArgs];

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
          'sdc start --mdm 10.0.0.1:6611 --name sdc1 --data-dir /var/lib/meshblock/sdc --cluster-id CID --secret-file /etc/meshblock/cluster.secret',
        ],
      ],
      [[], ['sds start --name sds2 --listen 10.0.0.2:7072 --data-dir /var/lib/meshblock/sds --mdm 10.0.0.1:6611 --cluster-id CID --secret-file /etc/meshblock/cluster.secret']],
      [
        [],
        [
          'sds start --name sds3 --listen 10.0.0.3:7072 --data-dir /var/lib/meshblock/sds --mdm 10.0.0.1:6611 --cluster-id CID --secret-file /etc/meshblock/cluster.secret',
          'sdc start --mdm 10.0.0.1:6611 --name sdc3 --data-dir /var/lib/meshblock/sdc --cluster-id CID --secret-file /etc/meshblock/cluster.secret',
        ],
      ],
    ],
  );
});

/** The cluster the recording hosts' MDMs share: the first MDM start makes it. */
interface SimCluster {
  id: string | null;
  plan: InstallPlan;
  /** Every daemon start, across hosts, in order: `ROW ROLE`. */
  starts: string[];
}

/** A host that keeps files in memory and records commands; see the file's opening comment. */
class RecordingHost implements HostTransport {
  readonly label: string;
  readonly files = new Map<string, { text: string; mode: number | undefined }>();
  readonly commands: string[] = [];

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

  run(command: string, args: readonly string[]): Promise<RunResult> {
    const script = command === 'sh' && args[0] === '-c' ? (args[1] as string) : [command, ...args].join(' ');
    this.commands.push(script);
    const ok = (stdout = ''): Promise<RunResult> => Promise.resolve({ code: 0, stdout, stderr: '' });
    if (/kill -0/.test(script)) return Promise.resolve({ code: 1, stdout: '', stderr: '' });
    const started =
      /^mkdir -p \/run\/meshblock \/var\/log\/meshblock; setsid .*exec \/usr\/local\/bin\/meshblock (etcd|mdm|sds|sdc) start /.exec(script) ??
      /^systemctl daemon-reload && systemctl enable --now meshblock-(etcd|mdm|sds|sdc)\.service$/.exec(script);
    if (started !== null) {
      this.cluster.starts.push(`${this.host.row} ${started[1]}`);
      if (started[1] === 'mdm') {
        this.cluster.id ??= 'c0ffee0000000001';
        this.files.set('/var/lib/meshblock/mdm/cluster.json', { text: JSON.stringify({ clusterId: this.cluster.id, name: 'meshblock' }), mode: 0o644 });
        this.files.set('/var/lib/meshblock/mdm/cluster.secret', { text: 'SECRET\n', mode: 0o600 });
      }
      return ok();
    }
    const listing = /^\/usr\/local\/bin\/meshblock ([a-z-]+) list --json/.exec(script);
    if (listing !== null) return ok(JSON.stringify(this.listing(listing[1] as string)));
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
): Installer {
  return new Installer({
    plan,
    connect: (host) => Promise.resolve(connect(host)),
    phases: ['configure'],
    dryRun: false,
    prefix: '/opt/meshblock',
    volumes: [],
    hostOptions: { dom0Mem: '4096M', nbdsMax: 16 },
    appRoot: '/nonexistent',
    nodeBinary: process.execPath,
    workDir: stateDir,
    stateDir,
    createEtcdPki,
    createApiCertificate,
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
  t.same(cluster.starts, ['2 etcd', '3 etcd', '4 etcd', '2 mdm', '3 mdm', '2 sds', '2 sdc', '3 sds', '4 sds', '4 sdc'], 'etcd members, the Master, the Slave, then SDSs and SDCs');
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
      t.match(host.files.get(`/etc/systemd/system/meshblock-${daemon.role}.service`)?.text, `\nExecStart=/usr/local/bin/meshblock ${daemon.args.join(' ')}\n`, `row ${entry.host.row}: the ${daemon.role} unit`);
    }
    t.equal(host.files.get('/etc/meshblock/cluster.secret')?.text, 'SECRET\n', `row ${entry.host.row}: the Master's secret`);
  }
  t.match(recording.get(4)?.files.get('/etc/systemd/system/meshblock-etcd.service')?.text, 'Description=meshblock etcd member\n');
  t.notOk(recording.get(4)?.files.has('/etc/systemd/system/meshblock-mdm.service'), 'no MDM on the TB');
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
  t.match(recording.get(2)?.files.get('/etc/systemd/system/meshblock-etcd.service')?.text, '\nConflicts=etcd.service\n', "the member's unit keeps Debian's etcd.service from running beside it");
  t.notMatch(recording.get(2)?.files.get('/etc/systemd/system/meshblock-mdm.service')?.text, 'Conflicts=');
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
  t.same(cluster.starts, ['2 etcd', '3 etcd', '4 etcd'], 'only the etcd members started');
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
    if (/meshblock mdm start/.test(args[1] ?? '')) slave.files.set('/var/lib/meshblock/mdm/cluster.json', { text: JSON.stringify({ clusterId: 'other' }), mode: 0o644 });
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
