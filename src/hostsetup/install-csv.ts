// The cluster description for `meshblock install --csv`: the ScaleIO Installation Manager's
// CSV (one row per host), read into a checked plan. Every problem names its row (the CSV line
// number) and column, and nothing is installed from a file with any problem in it.
//
// Columns (ScaleIO's names; case and surrounding spaces do not matter; unknown columns are
// refused so that a typo does not silently drop a setting):
//   IPs                      the host's address for SSH (the first of a comma list)   required
//   Username, Password       SSH login; an empty password means key login (--identity)
//   Operating System         linux | xenserver | centos | debian (ScaleIO wrote "linux")
//   Is MDM/TB                Master on exactly one host. Slave and TB (ScaleIO's MDM cluster)
//                            need the etcd-backed MDM, not built yet: refused, saying so.
//   MDM IPs                  the address the MDM listens on [default: the host's IP]
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

import { parse } from 'csv-parse/sync';
import { MeshblockError } from '../common/errors.js';

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
  mdm: { listenAddress: string } | null;
  sds: {
    name: string;
    listenAddress: string;
    protectionDomain: string;
    faultSet: string | null;
    devices: Array<{ path: string; pool: string; name: string | null }>;
  } | null;
  sdc: { name: string } | null;
}

export interface InstallPlan {
  hosts: InstallHost[];
  mdmHost: InstallHost;
}

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

function address(value: string, row: number, column: string): string {
  const first = value.split(',')[0]?.trim() ?? '';
  if (first === '') throw new InstallCsvError(`row ${row}, column '${column}': an address is required`, row, column);
  const looksNumeric = /^[0-9.]+$/.test(first);
  if (looksNumeric ? !ipv4Pattern.test(first) : !hostnamePattern.test(first) && !/^[0-9A-Fa-f:]+$/.test(first)) {
    throw new InstallCsvError(`row ${row}, column '${column}': '${first}' is not an IP address or host name`, row, column);
  }
  return first;
}

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
    records = parse(text, { bom: true, relax_column_count: false, skip_empty_lines: true, trim: false }) as string[][];
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

    const role = cell('mdmRole').toLowerCase();
    let mdm: InstallHost['mdm'] = null;
    if (role === 'master' || role === 'primary') {
      mdm = { listenAddress: cell('mdmIps') === '' ? hostAddress : address(cell('mdmIps'), row, columnNames.mdmIps) };
    } else if (role === 'slave' || role === 'tb' || role === 'secondary' || role === 'tiebreaker') {
      throw new InstallCsvError(
        `row ${row}, column 'Is MDM/TB': '${cell('mdmRole')}' needs an MDM cluster (etcd), which meshblock does not run yet: mark one host Master and leave this empty`,
        row,
        'Is MDM/TB',
      );
    } else if (role !== '') {
      throw new InstallCsvError(`row ${row}, column 'Is MDM/TB': expected Master or empty, got '${cell('mdmRole')}'`, row, 'Is MDM/TB');
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
    hosts.push({ row, address: hostAddress, sshPort, username, password: cell('password'), os: osText as HostOs, mdm, sds, sdc });
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
  const masters = hosts.filter((host) => host.mdm !== null);
  if (masters.length !== 1) {
    throw new InstallCsvError(
      masters.length === 0 ? "no host is the MDM: mark one host 'Master' in column 'Is MDM/TB'" : `rows ${masters.map((host) => host.row).join(' and ')} are both Master: meshblock runs one MDM`,
      masters[1]?.row ?? null,
      'Is MDM/TB',
    );
  }
  const sdsHosts = hosts.filter((host) => host.sds !== null);
  if (sdsHosts.length < 2) throw new InstallCsvError(`${sdsHosts.length} SDS host(s): two copies on different hosts need at least two (three to survive a host)`, null, 'Is SDS');
  const withFaultSets = sdsHosts.filter((host) => host.sds?.faultSet !== null);
  if (withFaultSets.length > 0 && withFaultSets.length < sdsHosts.length) {
    const without = sdsHosts.find((host) => host.sds?.faultSet === null) as InstallHost;
    throw new InstallCsvError(`row ${without.row}, column 'Fault Set': other SDSs have fault sets, so this one needs one too`, without.row, 'Fault Set');
  }
  return { hosts, mdmHost: masters[0] as InstallHost };
}

/** A CSV template for the 3-node or 5-node layout, in ScaleIO's column order. */
export function installCsvTemplate(nodeCount: 3 | 5): string {
  const header = ['IPs', 'Username', 'Password', 'Operating System', 'Is MDM/TB', 'MDM IPs', 'Is SDS', 'SDS Name', 'SDS All IPs', 'Protection Domain', 'Fault Set', 'SDS Device List', 'StoragePool List', 'Is SDC', 'SDC Name'];
  const rows = Array.from({ length: nodeCount }, (_, index) => {
    const ip = `192.0.2.${11 + index}`;
    return [ip, 'root', '', 'xenserver', index === 0 ? 'Master' : '', '', 'Yes', `sds${index + 1}`, '', 'pd1', nodeCount === 5 ? `fs${index + 1}` : '', '/dev/sdb,/dev/sdc', 'sp1', 'Yes', `sdc${index + 1}`];
  });
  const quote = (value: string) => (/[",\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value);
  return [header, ...rows].map((row) => row.map(quote).join(',')).join('\n') + '\n';
}
