// The installer's CSV: ScaleIO's columns read into a plan, the templates read back, and every
// bad input refused with its row and column.

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
    mdm: { listenAddress: '10.0.0.1' },
    sds: { name: 'sds1', listenAddress: '10.0.0.1', protectionDomain: 'pd1', faultSet: null, devices: [{ path: '/dev/sdb', pool: 'sp1', name: null }, { path: '/dev/sdc', pool: 'sp1', name: null }] },
    sdc: { name: 'sdc-10-0-0-1' },
  });
  t.equal(plan.hosts[1]?.password, 'secret');
  t.equal(plan.hosts[1]?.sds?.listenAddress, '10.0.1.2');
  t.equal(plan.hosts[1]?.sdc, null);
  t.same(plan.hosts[2]?.sds?.devices.map((device) => device.pool), ['sp1', 'sp2']);
  t.equal(plan.hosts[2]?.sds?.name, 'sds-10-0-0-3');
  t.equal(plan.hosts[2]?.sds?.protectionDomain, 'pd1');
});

t.test("ScaleIO's own extra columns are accepted, column names in any case", async (t) => {
  const text = `Domain,ips,USERNAME,Password,Operating System,Is MDM/TB,MDM Mgmt IP,perfProfileForMDM,Is SDS,SDS Name,SDS All IPs,Protection Domain,Fault Set,SDS Storage Device List,StoragePool List,Is SDC,perfProfileForSDC\n,10.0.0.1,root,,linux,Master,,,Yes,a,,pd,,/dev/sdb,sp,Yes,\n,10.0.0.2,root,,linux,,,,Yes,b,,pd,,/dev/sdb,sp,Yes,\n`;
  const plan = parseInstallCsv(text);
  t.same(plan.hosts.map((host) => host.sds?.devices[0]?.path), ['/dev/sdb', '/dev/sdb']);
});

t.test('the templates read back', async (t) => {
  for (const nodes of [3, 5] as const) {
    const plan = parseInstallCsv(installCsvTemplate(nodes));
    t.equal(plan.hosts.length, nodes);
    t.equal(plan.hosts.filter((host) => host.mdm !== null).length, 1);
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
    [csv(good[0] as string, good[1] as string, '10.0.0.3,root,,linux,Slave,,Yes,x,,pd1,,/dev/sdb,sp1,No'), /row 4, column 'Is MDM\/TB': 'Slave' needs an MDM cluster/, 4, 'Is MDM/TB'],
    [csv(good[0] as string, good[1] as string, '10.0.0.3,root,,linux,Master,,Yes,x,,pd1,,/dev/sdb,sp1,No'), /rows 2 and 4 are both Master/, 4, 'Is MDM/TB'],
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
