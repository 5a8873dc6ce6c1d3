// The lab's record of itself, DIR/lab.json: which daemons it started, where they listen and
// keep their data, and how to reach the REST API. `lab up` writes it as each daemon becomes
// ready, `lab down` clears the pids, `lab status` reads it, and the management commands read
// it to find the API without flags (labConnectionDefaults).
//
// A lab directory:
//
//   DIR/lab.json           this record (LabFile)
//   DIR/admin.password     the REST admin password (0600), generated at the first up
//   DIR/mdm/               the MDM's data directory (cluster.json, cluster.secret, api.crt, journal)
//   DIR/sds1/ ...          each SDS's data directory
//   DIR/sdc1/              the SDC's data directory
//   DIR/devices/sds1.img   each SDS's device: a sparse file (none when the lab runs on --device)
//   DIR/logs/NAME.log      each daemon's stdout and stderr (appended across runs)
//
// Paths in lab.json are absolute: the MDM and the SDSs remember device paths too, so a lab
// directory cannot be moved anyway.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidArgumentError, MeshblockError } from '../common/errors.js';

/** `lab up`/`status`/`down` without --dir: $MESHBLOCK_LAB_DIR, else this, relative to the current directory. */
export const labDirDefault = 'meshblock-lab';
export const labDirEnv = 'MESHBLOCK_LAB_DIR';
export const labFileName = 'lab.json';
export const labFormatVersion = 1;

export type LabRole = 'mdm' | 'sds' | 'sdc' | 'etcd';

export interface LabProcess {
  role: LabRole;
  /** mdm, sds1..sdsN, sdc1: the daemon's name in the cluster and of its log file. */
  name: string;
  /** Null once stopped by the lab (a recorded pid may also belong to a process that died). */
  pid: number | null;
  /** HOST:PORT it listens on: the MDM's and SDSs' wire, the SDC's NBD server. */
  address: string;
  dataDir: string;
  logFile: string;
  /** SDS only: its device (a sparse file, or the device given with lab up --device). */
  devicePath?: string;
  /** An MDM of an MDM cluster: HOST:PORT of its REST API. */
  apiAddress?: string;
  /** etcd member only: its name in the etcd cluster (its host's: mdm1, tb1, ...). */
  memberName?: string;
  /** etcd member only: HOST:PORT of its peer listener. */
  peerAddress?: string;
  /**
   * MDM, SDS and SDC: HOST:PORT of its Prometheus metrics (http://HOST:PORT/metrics), chosen
   * at the up that first starts it; absent in labs from before metrics until their next up.
   */
  metricsAddress?: string;
}

/** The `--metrics` arguments of a lab daemon: its own port, or off (never a role's default port, which several labs would share). */
export function labMetricsArgs(record: Pick<LabProcess, 'metricsAddress'>): string[] {
  return ['--metrics', record.metricsAddress ?? 'off'];
}

/** Where a lab daemon's metrics are scraped, null without them. */
export function labMetricsUrl(record: Pick<LabProcess, 'metricsAddress'>): string | null {
  return record.metricsAddress === undefined ? null : `http://${record.metricsAddress}/metrics`;
}

export interface LabVolume {
  name: string;
  sizeBytes: number;
}

export interface LabFile {
  formatVersion: typeof labFormatVersion;
  /** Null until the MDM first reported it. */
  clusterId: string | null;
  /** https://HOST:PORT of the REST API. */
  apiUrl: string;
  /**
   * Every MDM's REST API (https://HOST:PORT), in the order the management commands try them,
   * when the lab runs an MDM cluster; absent for one MDM (apiUrl is then the only one).
   */
  apiAddresses?: string[];
  /** The REST API's certificate (DIR/mdm/api.crt): the management commands' --ca-cert. */
  caCert: string;
  /** The REST admin password: the management commands' --password-file. */
  passwordFile: string;
  /** The cluster secret that SDSs and the SDC prove they know. */
  secretFile: string;
  /** Size of each SDS's sparse-file device, fixed at the first up (unused when devicesGiven). */
  deviceSizeBytes: number;
  /**
   * True when the SDSs run on devices given with lab up --device (LabProcess.devicePath),
   * fixed at the first up; absent for the lab's own sparse files.
   */
  devicesGiven?: true;
  /** The volumes lab up created (and maps to the lab's SDC); other volumes are the user's. */
  volumes: LabVolume[];
  /** mdm first, then the SDSs, then the SDC (an MDM cluster: the etcd members, then the MDMs). */
  processes: LabProcess[];
  /** An MDM cluster (lab up --mdm-cluster 3|5): its size; absent for one MDM with its journal. */
  mdmCluster?: 3 | 5;
}

export class LabError extends MeshblockError {}

/**
 * The lab directory a command works on: --dir, else $MESHBLOCK_LAB_DIR, else the current
 * directory if it holds a lab, else ./meshblock-lab.
 */
export function resolveLabDir(flag: string | undefined, env: NodeJS.ProcessEnv, cwd: string): string {
  if (flag !== undefined) return path.resolve(cwd, flag);
  const fromEnv = env[labDirEnv];
  if (fromEnv !== undefined && fromEnv !== '') return path.resolve(cwd, fromEnv);
  if (fs.existsSync(path.join(cwd, labFileName))) return path.resolve(cwd);
  return path.resolve(cwd, labDirDefault);
}

export function labFilePath(dir: string): string {
  return path.join(dir, labFileName);
}

/** The lab in `dir`, or null if there is none; a damaged lab.json is an error. */
export function readLabFile(dir: string): LabFile | null {
  const file = labFilePath(dir);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new LabError('MB_ERR_LAB_FILE', `cannot read ${file}: ${(err as Error).message}`);
  }
  let lab: Partial<LabFile>;
  try {
    lab = JSON.parse(text) as Partial<LabFile>;
  } catch (err) {
    throw new LabError('MB_ERR_LAB_FILE', `${file} is damaged: ${(err as Error).message}`);
  }
  if (lab === null || typeof lab !== 'object' || lab.formatVersion !== labFormatVersion || !Array.isArray(lab.processes) || !Array.isArray(lab.volumes) || typeof lab.apiUrl !== 'string') {
    throw new LabError('MB_ERR_LAB_FILE', `${file} is not a meshblock lab record (format ${labFormatVersion})`);
  }
  return lab as LabFile;
}

/** Replaces lab.json atomically: a crash leaves the old record or the new one, never half. */
export function writeLabFile(dir: string, lab: LabFile): void {
  const file = labFilePath(dir);
  const temporary = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temporary, `${JSON.stringify(lab, null, 2)}\n`);
  fs.renameSync(temporary, file);
}

/** What the management commands need to reach a lab's MDM. */
export interface LabConnection {
  /** The API address, or several comma-separated (as --api takes them). */
  api: string;
  caCert: string;
  passwordFile: string;
}

/**
 * The REST connection of the lab in `dirOrCwd` (a lab directory, or a directory holding the
 * default ./meshblock-lab), or null if there is no lab there. Never throws: a damaged
 * lab.json is no lab.
 */
export function labConnectionDefaults(dirOrCwd: string): LabConnection | null {
  for (const dir of [dirOrCwd, path.join(dirOrCwd, labDirDefault)]) {
    let lab: LabFile | null;
    try {
      lab = readLabFile(path.resolve(dir));
    } catch {
      continue;
    }
    if (lab !== null) return { api: labApi(lab), caCert: lab.caCert, passwordFile: lab.passwordFile };
  }
  return null;
}

/**
 * The lab's API addresses as --api takes them: every MDM's (apiAddresses, comma-separated)
 * when the record lists them, else apiUrl. A list that is not one of strings is ignored.
 */
export function labApi(lab: Pick<LabFile, 'apiUrl' | 'apiAddresses'>): string {
  const list: unknown = lab.apiAddresses;
  if (Array.isArray(list) && list.length > 0 && list.every((entry) => typeof entry === 'string' && entry !== '' && !entry.includes(','))) return list.join(',');
  return lab.apiUrl;
}

/** The connection flags of the management commands, as manage-client.ts declares them. */
export interface LabConnectionFlags {
  api: string | undefined;
  'ca-cert': string | undefined;
  'password-file': string | undefined;
  insecure: boolean;
  dir: string | undefined;
}

/**
 * Fills the connection flags not given from a lab: the lab named by --dir (which must exist),
 * else, when neither --api nor MESHBLOCK_API names an MDM, the lab of $MESHBLOCK_LAB_DIR or of
 * the current directory, if any. A lab's API comes with its own certificate and password, so
 * those replace MESHBLOCK_CA_CERT and MESHBLOCK_PASSWORD; flags given always win.
 */
export function applyLabConnectionDefaults<T extends LabConnectionFlags>(args: T, env: NodeJS.ProcessEnv, cwd: string): T {
  let lab: LabConnection | null;
  if (args.dir !== undefined) {
    const dir = path.resolve(cwd, args.dir);
    lab = labConnectionDefaults(dir);
    if (lab === null) throw new InvalidArgumentError('--dir', `no lab in ${dir} (no ${labFileName}); start one with: meshblock lab up --dir ${args.dir}`);
  } else {
    if (args.api !== undefined || (env['MESHBLOCK_API'] ?? '') !== '') return args;
    const fromEnv = env[labDirEnv];
    lab = labConnectionDefaults(fromEnv !== undefined && fromEnv !== '' ? path.resolve(cwd, fromEnv) : cwd);
    if (lab === null) return args;
  }
  return {
    ...args,
    api: args.api ?? lab.api,
    'ca-cert': args['ca-cert'] ?? (args.insecure ? undefined : lab.caCert),
    'password-file': args['password-file'] ?? lab.passwordFile,
  };
}
