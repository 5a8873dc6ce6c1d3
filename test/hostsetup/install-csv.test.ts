// The installer's CSV: ScaleIO's columns read into a plan, the templates read back, and every
// bad input refused with its row and column: among them ScaleIO's MDM cluster rules (1, 3 or 5
// members; one Master; 3 = Master, Slave, TB; 5 = Master, 2 Slaves, 2 TBs; a TB has no MDM IPs).
// Pure parsing, no processes: the CSV text in, the plan or the InstallCsvError out.

import t from 'tap';
import { installCsvTemplate, parseInstallCsv } from '../../src/hostsetup/install-csv.js';

const header = 'IPs,Username,Password,Operating System,Is MDM/TB,MDM IPs,Is SDS,SDS Name,SDS All IPs,Protection Domain,Fault Set,SDS Device List,StoragePool List,Is SDC';

function csv(...rows: string[]): string {
  return `${header}\n${rows.join('\n')}\n`;
}

const good = [
  '10.0.0.1,root,,linux,Master,,Yes,sds1,,pd1,,"/dev/sdb,/dev/sdc",sp1,Yes',
  '10.0.0.2,root,secret,debian,,,Yes,sds2,10.0.1.2,pd1,,/dev/sdb,sp1,No',
  '10.0.0.3,root,,xenserver,,,Yes,,,,,/dev/sdb;/dev/sdc,"sp1,sp2",yes',
];

t.test('a good CSV becomes a plan', async (t) => {
  const plan = parseInstallCsv(csv(...good));
  t.equal(plan.hosts.length, 3);
  t.equal(plan.mdmHost.address, '10.0.0.1');
  t.same(plan.hosts[0], {
    row: 2,
    address: '10.0.0.1',
    sshPort: 22,
    username: 'root',
    password: '',
    os: 'linux',
    member: { role: 'master', name: 'mdm1', address: '10.0.0.1' },
    mdm: { listenAddress: '10.0.0.1', ips: ['10.0.0.1'] },
    sds: { name: 'sds1', listenAddress: '10.0.0.1', protectionDomain: 'pd1', faultSet: null, devices: [{ path: '/dev/sdb', pool: 'sp1', name: null }, { path: '/dev/sdc', pool: 'sp1', name: null }] },
    sdc: { name: 'sdc-10-0-0-1' },
  });
  t.equal(plan.hosts[1]?.password, 'secret');
  t.equal(plan.hosts[1]?.sds?.listenAddress, '10.0.1.2');
  t.equal(plan.hosts[1]?.sdc, null);
  t.same(plan.hosts[2]?.sds?.devices.map((device) => device.pool), ['sp1', 'sp2']);
  t.equal(plan.hosts[2]?.sds?.name, 'sds-10-0-0-3');
  t.equal(plan.hosts[2]?.sds?.protectionDomain, 'pd1');
  t.equal(plan.memberCount, 1, 'one Master alone: no MDM cluster');
  t.same(plan.hosts.slice(1).map((host) => [host.member, host.mdm]), [[null, null], [null, null]]);
});

/** Three hosts with the given 'Is MDM/TB' and 'MDM IPs' cells, each an SDS. */
function clusterCsv(...cells: Array<[string, string]>): string {
  return csv(...cells.map(([role, mdmIps], index) => `10.0.0.${index + 1},root,,linux,${role},"${mdmIps}",Yes,sds${index + 1},,pd1,,/dev/sdb,sp1,Yes`));
}

t.test('a 3-member MDM cluster: Master, Slave and TB, named by CSV order', async (t) => {
  const plan = parseInstallCsv(clusterCsv(['TB', ''], ['Master', '10.1.0.2;10.2.0.2'], ['Slave', '']));
  t.equal(plan.memberCount, 3);
  t.equal(plan.mdmHost.row, 3);
  t.same(
    plan.hosts.map((host) => host.member),
    [
      { role: 'tb', name: 'tb1', address: '10.0.0.1' },
      { role: 'master', name: 'mdm1', address: '10.1.0.2' },
      { role: 'slave', name: 'mdm2', address: '10.0.0.3' },
    ],
  );
  t.same(
    plan.hosts.map((host) => host.mdm),
    [null, { listenAddress: '10.1.0.2', ips: ['10.1.0.2', '10.2.0.2'] }, { listenAddress: '10.0.0.3', ips: ['10.0.0.3'] }],
    "MDM IPs split on ';' (and ','); the MDM listens on the first",
  );
});

t.test("'Is MDM/TB' in ScaleIO's spellings, any case", async (t) => {
  const plan = parseInstallCsv(clusterCsv(['master', ''], ['SLAVE', '10.0.0.2,10.9.0.2'], ['tb', '']));
  t.same(plan.hosts.map((host) => host.member?.role), ['master', 'slave', 'tb']);
  t.same(plan.hosts[1]?.mdm?.ips, ['10.0.0.2', '10.9.0.2']);
  const older = parseInstallCsv(clusterCsv(['Primary', ''], ['Secondary', ''], ['TieBreaker', '']));
  t.same(older.hosts.map((host) => host.member?.name), ['mdm1', 'mdm2', 'tb1']);
});

t.test('a 5-member MDM cluster: Master, 2 Slaves, 2 TBs', async (t) => {
  const text = csv(
    ...['Master', 'TB', 'Slave', '', 'TB', 'Slave'].map((role, index) => `10.0.0.${index + 1},root,,linux,${role},,Yes,sds${index + 1},,pd1,,/dev/sdb,sp1,No`),
  );
  const plan = parseInstallCsv(text);
  t.equal(plan.memberCount, 5);
  t.same(plan.hosts.map((host) => host.member?.name ?? null), ['mdm1', 'tb1', 'mdm2', null, 'tb2', 'mdm3']);
});

t.test("ScaleIO's own extra columns are accepted, column names in any case", async (t) => {
  const text = `Domain,ips,USERNAME,Password,Operating System,Is MDM/TB,MDM Mgmt IP,perfProfileForMDM,Is SDS,SDS Name,SDS All IPs,Protection Domain,Fault Set,SDS Storage Device List,StoragePool List,Is SDC,perfProfileForSDC\n,10.0.0.1,root,,linux,Master,,,Yes,a,,pd,,/dev/sdb,sp,Yes,\n,10.0.0.2,root,,linux,,,,Yes,b,,pd,,/dev/sdb,sp,Yes,\n`;
  const plan = parseInstallCsv(text);
  t.same(plan.hosts.map((host) => host.sds?.devices[0]?.path), ['/dev/sdb', '/dev/sdb']);
});

t.test("the templates read back: ScaleIO's 3- and 5-node clusters", async (t) => {
  const roles = { 3: ['master', 'slave', 'tb'], 5: ['master', 'slave', 'slave', 'tb', 'tb'] };
  for (const nodes of [3, 5] as const) {
    const plan = parseInstallCsv(installCsvTemplate(nodes));
    t.equal(plan.hosts.length, nodes);
    t.equal(plan.memberCount, nodes);
    t.same(plan.hosts.map((host) => host.member?.role), roles[nodes]);
    t.equal(plan.hosts.filter((host) => host.mdm !== null).length, nodes === 5 ? 3 : 2, 'an MDM on the Master and each Slave');
    t.ok(plan.hosts.every((host) => host.sds !== null && host.sdc !== null), 'every host is also an SDS and an SDC');
    t.equal(new Set(plan.hosts.map((host) => host.sds?.faultSet ?? null)).size, nodes === 5 ? 5 : 1);
  }
});

t.test('bad input names its row and column', async (t) => {
  const cases: Array<[string, RegExp, number | null, string | null]> = [
    ['', /empty/, null, null],
    [`${header}\n`, /no host rows/, null, null],
    ['IPs,Username\n10.0.0.1,root\n', /row 1: missing columns 'Password', 'Operating System'/, 1, 'Password'],
    [csv(...good).replace('Is SDC', 'Is SDCC'), /unknown column 'Is SDCC'/, 1, 'Is SDCC'],
    [csv(good[0] as string, '10.0.0.2,root,,linux,,,Yes,sds2,,pd1,,/dev/sdb,sp1'), /row 3|Invalid Record Length/i, 3, null],
    [csv(good[0] as string, good[1] as string, '10.0.0.999,root,,linux,,,Yes,x,,pd1,,/dev/sdb,sp1,No'), /row 4, column 'IPs': '10.0.0.999' is not an IP/, 4, 'IPs'],
    [csv(good[0] as string, good[1] as string, '10.0.0.3,root,,windows,,,Yes,x,,pd1,,/dev/sdb,sp1,No'), /row 4, column 'Operating System'/, 4, 'Operating System'],
    [csv(good[0] as string, good[1] as string, '10.0.0.3,root,,linux,Master,,Yes,x,,pd1,,/dev/sdb,sp1,No'), /row 4, column 'Is MDM\/TB': row 2 is already the Master/, 4, 'Is MDM/TB'],
    [clusterCsv(['Master', ''], ['Master', ''], ['TB', '']), /row 3, column 'Is MDM\/TB': row 2 is already the Master/, 3, 'Is MDM/TB'],
    [csv(good[0] as string, good[1] as string, '10.0.0.3,root,,linux,Witness,,Yes,x,,pd1,,/dev/sdb,sp1,No'), /row 4, column 'Is MDM\/TB': expected Master, Slave, TB or empty, got 'Witness'/, 4, 'Is MDM/TB'],
    [clusterCsv(['Master', ''], ['constructor', ''], ['TB', '']), /row 3, column 'Is MDM\/TB': expected Master, Slave, TB/, 3, 'Is MDM/TB'],
    [clusterCsv(['Master', ''], ['Slave', '']), /row 3, column 'Is MDM\/TB': 2 cluster members \(rows 2, 3\): .*odd number/, 3, 'Is MDM/TB'],
    [clusterCsv(['Master', ''], ['TB', '']), /row 3, column 'Is MDM\/TB': 2 cluster members/, 3, 'Is MDM/TB'],
    [clusterCsv(['Master', ''], ['Slave', ''], ['Slave', ''], ['TB', '']), /row 5, column 'Is MDM\/TB': 4 cluster members/, 5, 'Is MDM/TB'],
    [clusterCsv(['', ''], ['TB', ''], ['Slave', '']), /row 3, column 'Is MDM\/TB': a TB needs a Master, and no row is Master/, 3, 'Is MDM/TB'],
    [clusterCsv(['Slave', ''], ['', ''], ['', '']), /row 2, column 'Is MDM\/TB': a Slave needs a Master/, 2, 'Is MDM/TB'],
    [clusterCsv(['Master', ''], ['Slave', ''], ['Slave', ''], ['TB', ''], ['TB', ''], ['TB', '']), /row 7, column 'Is MDM\/TB': cluster member number 6 \(of 6\): .*at most 5/, 7, 'Is MDM/TB'],
    [clusterCsv(['Master', ''], ['Slave', ''], ['Slave', '']), /row 4, column 'Is MDM\/TB': a 3-member cluster is 1 Master, 1 Slave and 1 TB \(ScaleIO's rule\); this row makes 2 Slaves/, 4, 'Is MDM/TB'],
    [clusterCsv(['TB', ''], ['Master', ''], ['TB', '']), /row 4, column 'Is MDM\/TB': a 3-member cluster .* this row makes 2 TBs/, 4, 'Is MDM/TB'],
    [clusterCsv(['Master', ''], ['Slave', ''], ['Slave', ''], ['Slave', ''], ['TB', '']), /row 5, column 'Is MDM\/TB': a 5-member cluster is 1 Master, 2 Slaves and 2 TBs .* 3 Slaves/, 5, 'Is MDM/TB'],
    [clusterCsv(['Master', ''], ['TB', ''], ['TB', ''], ['TB', ''], ['Slave', '']), /row 5, column 'Is MDM\/TB': a 5-member cluster .* 3 TBs/, 5, 'Is MDM/TB'],
    [clusterCsv(['Master', ''], ['Slave', ''], ['TB', '10.0.0.3']), /row 4, column 'MDM IPs': a TB runs no MDM/, 4, 'MDM IPs'],
    [clusterCsv(['Master', 'mdm-a.example'], ['Slave', ''], ['TB', '']), /row 2, column 'MDM IPs': 'mdm-a.example' is a host name; .*etcd listens on an IP/, 2, 'MDM IPs'],
    [clusterCsv(['Master', '10.0.0.1;10.0.0.256'], ['Slave', ''], ['TB', '']), /row 2, column 'MDM IPs': '10.0.0.256' is not an IP address/, 2, 'MDM IPs'],
    [csv('10.0.0.1,root,,linux,Master,,Yes,a,,pd1,,/dev/sdb,sp1,No', '10.0.0.2,root,,linux,Slave,,Yes,b,,pd1,,/dev/sdb,sp1,No', 'tb.example,root,,linux,TB,,Yes,c,,pd1,,/dev/sdb,sp1,No'), /row 4, column 'IPs': 'tb.example' is a host name/, 4, 'IPs'],
    [csv(good[1] as string, '10.0.0.3,root,,linux,,,Yes,x,,pd1,,/dev/sdb,sp1,No'), /no host is the MDM/, null, 'Is MDM/TB'],
    [csv(good[0] as string, '10.0.0.2,root,,linux,,,Maybe,x,,pd1,,/dev/sdb,sp1,No'), /row 3, column 'Is SDS': expected Yes or No, got 'Maybe'/, 3, 'Is SDS'],
    [csv(good[0] as string, '10.0.0.2,root,,linux,,,Yes,x,,pd1,,,sp1,No'), /row 3, column 'SDS Device List': an SDS needs at least one device/, 3, 'SDS Device List'],
    [csv(good[0] as string, '10.0.0.2,root,,linux,,,Yes,x,,pd1,,dev/sdb,sp1,No'), /not an absolute path/, 3, 'SDS Device List'],
    [csv(good[0] as string, '10.0.0.2,root,,linux,,,Yes,x,,pd1,,"/dev/a,/dev/b,/dev/c","p1,p2",No'), /row 3, column 'StoragePool List': 2 pools for 3 devices/, 3, 'StoragePool List'],
    [csv(good[0] as string, '10.0.0.1,root,,linux,,,Yes,x,,pd1,,/dev/sdb,sp1,No'), /row 3, column 'IPs': 10.0.0.1 is already the host of row 2/, 3, 'IPs'],
    [csv(good[0] as string, '10.0.0.2,root,,linux,,,Yes,sds1,,pd1,,/dev/sdb,sp1,No'), /row 3, column 'SDS Name': 'sds1' is already the SDS of row 2/, 3, 'SDS Name'],
    [csv(good[0] as string, '10.0.0.2,root,,linux,,,No,,,,,,,Yes'), /1 SDS host\(s\)/, null, 'Is SDS'],
    [csv(good[0] as string, '10.0.0.2,root,,linux,,,No,,,,,/dev/sdb,,Yes'), /devices are listed but 'Is SDS' is not Yes/, 3, 'SDS Device List'],
    [csv('10.0.0.1,root,,linux,Master,,Yes,sds1,,pd1,fs1,/dev/sdb,sp1,Yes', '10.0.0.2,root,,linux,,,Yes,sds2,,pd1,,/dev/sdb,sp1,Yes'), /row 3, column 'Fault Set': other SDSs have fault sets/, 3, 'Fault Set'],
    [csv(good[0] as string, '10.0.0.2,ro ot,,linux,,,Yes,x,,pd1,,/dev/sdb,sp1,No'), /row 3, column 'Username'/, 3, 'Username'],
    [csv(good[0] as string, '10.0.0.2,root,,linux,,,Yes,this-name-is-far-too-long-for-an-sds,,pd1,,/dev/sdb,sp1,No'), /row 3, column 'SDS Name'/, 3, 'SDS Name'],
    [`${header}\n"10.0.0.1,root\n`, /cannot be read/, null, null],
  ];
  for (const [text, message, row, column] of cases) {
    const error = (() => {
      try {
        parseInstallCsv(text);
        return null;
      } catch (err) {
        return err as Error & { row?: number | null; column?: string | null; code?: string };
      }
    })();
    t.ok(error !== null, `refused: ${message}`);
    if (error === null) continue;
    t.equal(error.code, 'MB_ERR_INSTALL_CSV');
    t.match(error.message, message);
    if (row !== null) t.equal(error.row, row, `row of ${message}`);
    if (column !== null) t.equal(error.column, column, `column of ${message}`);
  }
});
