// The cluster description for `meshblock install --csv`: the ScaleIO Installation Manager's
// CSV (one row per host), read into a checked plan. Every problem names its row (the CSV line
// number) and column, and nothing is installed from a file with any problem in it.
//
// Columns (ScaleIO's names; case and surrounding spaces do not matter; unknown columns are
// refused so that a typo does not silently drop a setting):
//   IPs                      the host's address for SSH (the first of a comma list)   required
//   Username, Password       SSH login; an empty password means key login (--identity)
//   Operating System         linux | xenserver | centos | debian (ScaleIO wrote "linux")
//   Is MDM/TB                Master on exactly one host; Slave and TB make an MDM cluster
//                            (below). Case does not matter; Primary, Secondary and
//                            TieBreaker are read as Master, Slave and TB.
//   MDM IPs                  Master and Slave rows: the MDM's addresses for SDS and SDC
//                            traffic, comma or semicolon separated [default: the host's IP].
//                            The MDM listens on the first (meshblock's MDM has one wire
//                            address); the others are accepted, as ScaleIO lists one per data
//                            network, and reported as unused. A TB runs no MDM: refused there.
//   Is SDS, Is SDC           Yes/No
//   SDS Name                 [default: sds-<IP>]
//   SDS All IPs              the address the SDS listens on [default: the host's IP]
//   Protection Domain        [default: pd1]
//   Fault Set                optional; with fault sets, every SDS has one
//   SDS Device List          device paths, comma separated (block devices, or files)
//   StoragePool List         one pool per device, or one for all [default: sp1]
//   SDS Device Names         optional, one name per device
//   SDC Name                 [default: sdc-<IP>]
//   SSH Port                 meshblock's own: [default 22]
//
// The MDM cluster (ScaleIO's rules, checked here): the Master alone (1 member: one MDM with its
// embedded journal), or 3 members (1 Master, 1 Slave, 1 TB), or 5 (1 Master, 2 Slaves, 2 TBs).
// Every member runs an etcd member; Master and Slave hosts also run an MDM. An odd count, so
// that a majority survives any split in two. Members are named by CSV order: Master and Slave
// rows mdm1, mdm2, ...; TB rows tb1, tb2 (so reordering the rows of an installed cluster
// renames its members: don't). etcd binds to IP addresses only, so a member's address (its
// first MDM IP, or a TB's IPs) must be an IP, not a host name.

import { isIP } from 'node:net';
import type * as CsvParse from 'csv-parse/sync';
import { MeshblockError } from '../common/errors.js';
import { lazyModule } from '../common/lazy-module.js';

/** Loaded when an installation CSV is read (src/common/lazy-module.ts). */
const csvParse = lazyModule<typeof CsvParse>('csv-parse/sync');

export class InstallCsvError extends MeshblockError {
  constructor(
    message: string,
    readonly row: number | null,
    readonly column: string | null,
  ) {
    super('MB_ERR_INSTALL_CSV', message);
  }
}

export type HostOs = 'linux' | 'xenserver' | 'centos' | 'debian';

export interface InstallHost {
  /** CSV line number, for messages. */
  row: number;
  address: string;
  sshPort: number;
  username: string;
  /** Empty: log in with the key given to the installer. */
  password: string;
  os: HostOs;
  /**
   * The host's place in the MDM cluster (column 'Is MDM/TB'), null for none. `name` is its etcd
   * member's name (and its MDM's); `address` the IP its etcd member listens on: a Master's or
   * Slave's MDM address, a TB's host address. With one member (the Master alone) no etcd runs.
   */
  member: { role: MemberRole; name: string; address: string } | null;
  /** Master and Slave hosts: the MDM. It listens on `listenAddress`, the first of `ips`. */
  mdm: { listenAddress: string; ips: string[] } | null;
  sds: {
    name: string;
    listenAddress: string;
    protectionDomain: string;
    faultSet: string | null;
    devices: Array<{ path: string; pool: string; name: string | null }>;
  } | null;
  sdc: { name: string } | null;
}

export type MemberRole = 'master' | 'slave' | 'tb';

export interface InstallPlan {
  hosts: InstallHost[];
  /** The Master's host. */
  mdmHost: InstallHost;
  /** Members of the MDM cluster: 1 (the Master alone, no etcd), 3 or 5. */
  memberCount: 1 | 3 | 5;
}

/** ScaleIO's cluster shapes: Slaves and TBs beside the one Master, by member count. */
const clusterShapes: Record<3 | 5, { slave: number; tb: number }> = { 3: { slave: 1, tb: 1 }, 5: { slave: 2, tb: 2 } };
const memberCountMax = 5;
const roleWords: Record<MemberRole, string> = { master: 'Master', slave: 'Slave', tb: 'TB' };

interface ColumnSpec {
  key: keyof typeof columnNames;
  required: boolean;
}

const columnNames = {
  ips: 'IPs',
  username: 'Username',
  password: 'Password',
  os: 'Operating System',
  mdmRole: 'Is MDM/TB',
  mdmIps: 'MDM IPs',
  isSds: 'Is SDS',
  sdsName: 'SDS Name',
  sdsAllIps: 'SDS All IPs',
  protectionDomain: 'Protection Domain',
  faultSet: 'Fault Set',
  sdsDevices: 'SDS Device List',
  pools: 'StoragePool List',
  sdsDeviceNames: 'SDS Device Names',
  isSdc: 'Is SDC',
  sdcName: 'SDC Name',
  sshPort: 'SSH Port',
} as const;

const columns: ColumnSpec[] = [
  { key: 'ips', required: true },
  { key: 'username', required: true },
  { key: 'password', required: true },
  { key: 'os', required: true },
  { key: 'mdmRole', required: true },
  { key: 'mdmIps', required: true },
  { key: 'isSds', required: true },
  { key: 'sdsName', required: true },
  { key: 'sdsAllIps', required: true },
  { key: 'protectionDomain', required: true },
  { key: 'faultSet', required: true },
  { key: 'sdsDevices', required: true },
  { key: 'pools', required: true },
  { key: 'sdsDeviceNames', required: false },
  { key: 'isSdc', required: true },
  { key: 'sdcName', required: false },
  { key: 'sshPort', required: false },
];

/** ScaleIO's own spellings of columns we read under one name. */
const columnAliases: Record<string, keyof typeof columnNames> = {
  'sds storage device list': 'sdsDevices',
  'sds storage device names': 'sdsDeviceNames',
  'mdm mgmt ip': 'mdmIps',
};

/** ScaleIO columns we accept and do not use (performance profiles, virtual IPs, ...). */
const ignoredColumns = new Set(['domain', 'mdm name', 'perfprofileformdm', 'virtual ips', 'virtual ip nics', 'sds-sds only ips', 'sds-sdc only ips', 'perfprofileforsds', 'perfprofileforsdc', 'rfcache', 'rfcache ssd device list', 'sdr', 'is rfcache']);

const namePattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}$/;
const ipv4Pattern = /^(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}$/;
const hostnamePattern = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

function normalise(header: string): string {
  return header.trim().toLowerCase().replace(/\s+/g, ' ');
}

function yesNo(value: string, row: number, column: string): boolean {
  const text = value.trim().toLowerCase();
  if (text === 'yes' || text === 'y' || text === 'true' || text === '1') return true;
  if (text === 'no' || text === 'n' || text === 'false' || text === '0' || text === '') return false;
  throw new InstallCsvError(`row ${row}, column '${column}': expected Yes or No, got '${value}'`, row, column);
}

function checkAddress(text: string, row: number, column: string): string {
  const looksNumeric = /^[0-9.]+$/.test(text);
  if (looksNumeric ? !ipv4Pattern.test(text) : !hostnamePattern.test(text) && !/^[0-9A-Fa-f:]+$/.test(text)) {
    throw new InstallCsvError(`row ${row}, column '${column}': '${text}' is not an IP address or host name`, row, column);
  }
  return text;
}

function address(value: string, row: number, column: string): string {
  const first = value.split(',')[0]?.trim() ?? '';
  if (first === '') throw new InstallCsvError(`row ${row}, column '${column}': an address is required`, row, column);
  return checkAddress(first, row, column);
}

/** A cell of several addresses (ScaleIO separates them with commas or semicolons). */
function addresses(value: string, row: number, column: string): string[] {
  const entries = list(value);
  if (entries.length === 0) throw new InstallCsvError(`row ${row}, column '${column}': an address is required`, row, column);
  return entries.map((entry) => checkAddress(entry, row, column));
}

const roleSpellings = new Map<string, MemberRole>([
  ['master', 'master'],
  ['primary', 'master'],
  ['slave', 'slave'],
  ['secondary', 'slave'],
  ['tb', 'tb'],
  ['tiebreaker', 'tb'],
]);

function list(value: string): string[] {
  return value
    .split(/[,;]/)
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
}

/** Reads and checks the CSV text. Throws InstallCsvError naming row and column. */
export function parseInstallCsv(text: string): InstallPlan {
  let records: string[][];
  try {
    records = csvParse().parse(text, { bom: true, relax_column_count: false, skip_empty_lines: true, trim: false }) as string[][];
  } catch (err) {
    const line = (err as { lines?: number }).lines ?? null;
    throw new InstallCsvError(`the CSV cannot be read${line === null ? '' : ` at row ${line}`}: ${(err as Error).message}`, line, null);
  }
  const header = records[0];
  if (header === undefined) throw new InstallCsvError('the CSV is empty: it needs a header row and one row per host', null, null);
  const indexOf = new Map<keyof typeof columnNames, number>();
  header.forEach((name, index) => {
    const normal = normalise(name);
    if (normal === '') return;
    const key = (Object.keys(columnNames) as Array<keyof typeof columnNames>).find((candidate) => normalise(columnNames[candidate]) === normal) ?? columnAliases[normal];
    if (key === undefined) {
      if (ignoredColumns.has(normal)) return;
      throw new InstallCsvError(`row 1: unknown column '${name.trim()}' (a typo? the columns are: ${Object.values(columnNames).join(', ')})`, 1, name.trim());
    }
    if (indexOf.has(key)) throw new InstallCsvError(`row 1: column '${columnNames[key]}' appears twice`, 1, columnNames[key]);
    indexOf.set(key, index);
  });
  const missing = columns.filter((column) => column.required && !indexOf.has(column.key)).map((column) => columnNames[column.key]);
  if (missing.length > 0) throw new InstallCsvError(`row 1: missing column${missing.length > 1 ? 's' : ''} ${missing.map((name) => `'${name}'`).join(', ')}`, 1, missing[0] as string);
  if (records.length < 2) throw new InstallCsvError('the CSV has a header but no host rows', null, null);

  const hosts: InstallHost[] = [];
  for (let index = 1; index < records.length; index += 1) {
    const record = records[index] as string[];
    const row = index + 1;
    const cell = (key: keyof typeof columnNames): string => {
      const at = indexOf.get(key);
      return at === undefined ? '' : (record[at] ?? '').trim();
    };
    const hostAddress = address(cell('ips'), row, columnNames.ips);
    const username = cell('username');
    if (!/^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/.test(username)) throw new InstallCsvError(`row ${row}, column 'Username': '${username}' is not a user name`, row, 'Username');
    const osText = cell('os').toLowerCase();
    if (!['linux', 'xenserver', 'centos', 'debian'].includes(osText)) {
      throw new InstallCsvError(`row ${row}, column 'Operating System': expected linux, xenserver, centos or debian, got '${cell('os')}'`, row, 'Operating System');
    }
    const portText = cell('sshPort');
    const sshPort = portText === '' ? 22 : Number(portText);
    if (!Number.isInteger(sshPort) || sshPort < 1 || sshPort > 65535) throw new InstallCsvError(`row ${row}, column 'SSH Port': '${portText}' is not a port`, row, 'SSH Port');

    const roleText = cell('mdmRole');
    const role = roleText === '' ? null : roleSpellings.get(roleText.toLowerCase());
    if (role === undefined) throw new InstallCsvError(`row ${row}, column 'Is MDM/TB': expected Master, Slave, TB or empty, got '${roleText}'`, row, 'Is MDM/TB');
    let mdm: InstallHost['mdm'] = null;
    let member: InstallHost['member'] = null;
    if (role === 'tb') {
      if (cell('mdmIps') !== '') throw new InstallCsvError(`row ${row}, column 'MDM IPs': a TB runs no MDM (only an etcd member, on the host's IP): leave MDM IPs empty`, row, 'MDM IPs');
      member = { role, name: '', address: hostAddress };
    } else if (role !== null) {
      const ips = cell('mdmIps') === '' ? [hostAddress] : addresses(cell('mdmIps'), row, columnNames.mdmIps);
      mdm = { listenAddress: ips[0] as string, ips };
      member = { role, name: '', address: ips[0] as string };
    }

    let sds: InstallHost['sds'] = null;
    if (yesNo(cell('isSds'), row, 'Is SDS')) {
      const name = cell('sdsName') === '' ? `sds-${hostAddress.replace(/[^A-Za-z0-9]/g, '-')}` : cell('sdsName');
      if (!namePattern.test(name)) throw new InstallCsvError(`row ${row}, column 'SDS Name': '${name}' must be 1 to 31 letters, digits, _ . -`, row, 'SDS Name');
      const devicePaths = list(cell('sdsDevices'));
      if (devicePaths.length === 0) throw new InstallCsvError(`row ${row}, column 'SDS Device List': an SDS needs at least one device`, row, 'SDS Device List');
      for (const devicePath of devicePaths) {
        if (!devicePath.startsWith('/')) throw new InstallCsvError(`row ${row}, column 'SDS Device List': '${devicePath}' is not an absolute path`, row, 'SDS Device List');
      }
      const pools = list(cell('pools'));
      if (pools.length > 1 && pools.length !== devicePaths.length) {
        throw new InstallCsvError(`row ${row}, column 'StoragePool List': ${pools.length} pools for ${devicePaths.length} devices (give one per device, or one for all)`, row, 'StoragePool List');
      }
      const names = list(cell('sdsDeviceNames'));
      if (names.length > 0 && names.length !== devicePaths.length) {
        throw new InstallCsvError(`row ${row}, column 'SDS Device Names': ${names.length} names for ${devicePaths.length} devices`, row, 'SDS Device Names');
      }
      for (const poolName of [...pools, ...names]) {
        if (!namePattern.test(poolName)) throw new InstallCsvError(`row ${row}: '${poolName}' must be 1 to 31 letters, digits, _ . -`, row, pools.includes(poolName) ? 'StoragePool List' : 'SDS Device Names');
      }
      const protectionDomain = cell('protectionDomain') === '' ? 'pd1' : cell('protectionDomain');
      if (!namePattern.test(protectionDomain)) throw new InstallCsvError(`row ${row}, column 'Protection Domain': '${protectionDomain}' must be 1 to 31 letters, digits, _ . -`, row, 'Protection Domain');
      const faultSet = cell('faultSet') === '' ? null : cell('faultSet');
      if (faultSet !== null && !namePattern.test(faultSet)) throw new InstallCsvError(`row ${row}, column 'Fault Set': '${faultSet}' must be 1 to 31 letters, digits, _ . -`, row, 'Fault Set');
      sds = {
        name,
        listenAddress: cell('sdsAllIps') === '' ? hostAddress : address(cell('sdsAllIps'), row, columnNames.sdsAllIps),
        protectionDomain,
        faultSet,
        devices: devicePaths.map((devicePath, deviceIndex) => ({ path: devicePath, pool: pools[pools.length === 1 ? 0 : deviceIndex] ?? 'sp1', name: names[deviceIndex] ?? null })),
      };
    } else if (cell('sdsDevices') !== '') {
      throw new InstallCsvError(`row ${row}, column 'SDS Device List': devices are listed but 'Is SDS' is not Yes`, row, 'SDS Device List');
    }
    let sdc: InstallHost['sdc'] = null;
    if (yesNo(cell('isSdc'), row, 'Is SDC')) {
      const name = cell('sdcName') === '' ? `sdc-${hostAddress.replace(/[^A-Za-z0-9]/g, '-')}` : cell('sdcName');
      if (!namePattern.test(name)) throw new InstallCsvError(`row ${row}, column 'SDC Name': '${name}' must be 1 to 31 letters, digits, _ . -`, row, 'SDC Name');
      sdc = { name };
    }
    hosts.push({ row, address: hostAddress, sshPort, username, password: cell('password'), os: osText as HostOs, member, mdm, sds, sdc });
  }

  const seen = new Map<string, number>();
  for (const host of hosts) {
    const key = `${host.address}:${host.sshPort}`;
    const earlier = seen.get(key);
    if (earlier !== undefined) throw new InstallCsvError(`row ${host.row}, column 'IPs': ${host.address} is already the host of row ${earlier}`, host.row, 'IPs');
    seen.set(key, host.row);
  }
  const sdsNames = new Map<string, number>();
  for (const host of hosts) {
    if (host.sds === null) continue;
    const earlier = sdsNames.get(host.sds.name);
    if (earlier !== undefined) throw new InstallCsvError(`row ${host.row}, column 'SDS Name': '${host.sds.name}' is already the SDS of row ${earlier}`, host.row, 'SDS Name');
    sdsNames.set(host.sds.name, host.row);
  }
  const memberCount = checkCluster(hosts);
  const sdsHosts = hosts.filter((host) => host.sds !== null);
  if (sdsHosts.length < 2) throw new InstallCsvError(`${sdsHosts.length} SDS host(s): two copies on different hosts need at least two (three to survive a host)`, null, 'Is SDS');
  const withFaultSets = sdsHosts.filter((host) => host.sds?.faultSet !== null);
  if (withFaultSets.length > 0 && withFaultSets.length < sdsHosts.length) {
    const without = sdsHosts.find((host) => host.sds?.faultSet === null) as InstallHost;
    throw new InstallCsvError(`row ${without.row}, column 'Fault Set': other SDSs have fault sets, so this one needs one too`, without.row, 'Fault Set');
  }
  return { hosts, mdmHost: hosts.find((host) => host.member?.role === 'master') as InstallHost, memberCount };
}

/**
 * ScaleIO's MDM cluster rules, each refusal at the row that breaks it; then the members' names
 * (mdm1.. for Master and Slave rows, tb1.. for TB rows, in CSV order).
 */
function checkCluster(hosts: InstallHost[]): 1 | 3 | 5 {
  const column = 'Is MDM/TB';
  const refuse = (host: InstallHost, why: string): never => {
    throw new InstallCsvError(`row ${host.row}, column '${column}': ${why}`, host.row, column);
  };
  const members = hosts.filter((host) => host.member !== null);
  const masters = members.filter((host) => host.member?.role === 'master');
  if (masters.length > 1) refuse(masters[1] as InstallHost, `row ${masters[0]?.row} is already the Master; a cluster has one Master (make the others Slave or TB)`);
  if (members.length === 0) throw new InstallCsvError(`no host is the MDM: mark one host 'Master' in column '${column}'`, null, column);
  if (masters.length === 0) {
    const first = members[0] as InstallHost;
    refuse(first, `a ${roleWords[first.member?.role as MemberRole]} needs a Master, and no row is Master: mark one host 'Master'`);
  }
  if (members.length > memberCountMax) {
    refuse(members[memberCountMax] as InstallHost, `cluster member number ${memberCountMax + 1} (of ${members.length}): an MDM cluster has 1, 3 or 5 members (Master, Slaves and TBs), at most ${memberCountMax}`);
  }
  if (members.length % 2 === 0) {
    refuse(
      members[members.length - 1] as InstallHost,
      `${members.length} cluster members (rows ${members.map((host) => host.row).join(', ')}): an MDM cluster has an odd number, 1, 3 or 5, so that a majority survives a split; add a TB or remove a member`,
    );
  }
  const memberCount = members.length as 1 | 3 | 5;
  if (memberCount !== 1) {
    const shape = clusterShapes[memberCount];
    for (const role of ['slave', 'tb'] as const) {
      const ofRole = members.filter((host) => host.member?.role === role);
      if (ofRole.length > shape[role]) {
        refuse(
          ofRole[shape[role]] as InstallHost,
          `a ${memberCount}-member cluster is 1 Master, ${shape.slave} Slave${shape.slave > 1 ? 's' : ''} and ${shape.tb} TB${shape.tb > 1 ? 's' : ''} (ScaleIO's rule); this row makes ${ofRole.length} ${roleWords[role]}s`,
        );
      }
    }
    // etcd binds to IP addresses only (a host name in a listen URL is refused by etcd itself).
    for (const host of members) {
      const member = host.member as NonNullable<InstallHost['member']>;
      if (isIP(member.address) === 0) {
        const where = host.mdm !== null && host.mdm.ips[0] !== host.address ? 'MDM IPs' : 'IPs';
        throw new InstallCsvError(`row ${host.row}, column '${where}': '${member.address}' is a host name; a cluster member's etcd listens on an IP address: give the IP`, host.row, where);
      }
    }
  }
  let managerCount = 0;
  let tieBreakerCount = 0;
  for (const host of members) {
    const member = host.member as NonNullable<InstallHost['member']>;
    member.name = member.role === 'tb' ? `tb${(tieBreakerCount += 1)}` : `mdm${(managerCount += 1)}`;
  }
  return memberCount;
}

/**
 * A CSV template for ScaleIO's 3-node cluster (Master, Slave, TB) or 5-node cluster (Master,
 * 2 Slaves, 2 TBs, each host in a fault set of its own), every host also an SDS and an SDC.
 */
export function installCsvTemplate(nodeCount: 3 | 5): string {
  const header = ['IPs', 'Username', 'Password', 'Operating System', 'Is MDM/TB', 'MDM IPs', 'Is SDS', 'SDS Name', 'SDS All IPs', 'Protection Domain', 'Fault Set', 'SDS Device List', 'StoragePool List', 'Is SDC', 'SDC Name'];
  const shape = clusterShapes[nodeCount];
  const roles = ['Master', ...Array<string>(shape.slave).fill('Slave'), ...Array<string>(shape.tb).fill('TB')];
  const rows = roles.map((role, index) => {
    const ip = `192.0.2.${11 + index}`;
    return [ip, 'root', '', 'xenserver', role, role === 'TB' ? '' : ip, 'Yes', `sds${index + 1}`, '', 'pd1', nodeCount === 5 ? `fs${index + 1}` : '', '/dev/sdb,/dev/sdc', 'sp1', 'Yes', `sdc${index + 1}`];
  });
  const quote = (value: string) => (/[",\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value);
  return [header, ...rows].map((row) => row.map(quote).join(',')).join('\n') + '\n';
}
