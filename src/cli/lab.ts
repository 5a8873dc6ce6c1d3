// meshblock lab up|down|status: an all-in-one cluster on this machine, for trying meshblock
// out and for tests. One MDM, N SDSs each on one sparse file, one SDC serving NBD, all on
// 127.0.0.1, laid out as pd1/sp1 with thin volumes mapped to the SDC.
//
//   meshblock lab up [--dir DIR] [--sds N] [--device-size SIZE | --device PATH...] [--force]
//                    [--io auto|direct|buffered] [--volume NAME:SIZE]... [--nbd-port PORT] [--detach]
//   meshblock lab status [--dir DIR] [--json]
//   meshblock lab down [--dir DIR] [--purge]
//
// DIR is --dir, else $MESHBLOCK_LAB_DIR, else the current directory if it holds a lab.json,
// else ./meshblock-lab; lab-state.ts draws its layout. The first `up` fixes the addresses
// (free ports from ScaleIO's defaults upward: MDM 6611, REST API 8443, SDSs 7072; NBD 10809
// or --nbd-port), the device size and the admin password, and records them in DIR/lab.json;
// every later `up` resumes the same cluster with its data, starting only the daemons that are
// not running and creating only what is missing (lab-setup.ts). --sds may grow a lab, never
// shrink it; --volume adds volumes.
//
// Without --detach, `up` stays in the foreground with a dashboard and stops the lab on
// Ctrl-C (SIGINT) or SIGTERM; with it, `up` returns once the NBD exports are listed. The
// management commands reach the lab's MDM without flags when given --dir or run in DIR
// (labConnectionDefaults in lab-state.ts). An `up` that fails stops what it started; one
// interrupted while starting leaves what it started so far running, recorded in lab.json, for
// the next `up` to reuse or `down` to stop.
//
// Devices: by default each SDS gets a sparse file the lab makes (DIR/devices/sdsI.img), run
// with `sds start --io buffered` (the page cache: on files that are mostly holes it is the
// faster choice, see docs/benchmarks.md). `--device PATH`, once per SDS, runs the SDSs on
// given block devices (or loop devices) instead, with `--io auto` (direct IO where the device
// takes O_DIRECT). Like the device size, the devices are fixed at the first up; a later up may
// name them again, in the same order (and more, for the SDSs --sds adds). A device that holds
// a filesystem, partition table, LVM label or another cluster is refused by its SDS, as
// `sds start` does, unless `lab up --force` passes --force on (only for that up: an SDS
// never reformats a device that carries its own superblock, so a later --force is harmless).
// `--io` overrides the mode for the SDSs this up starts.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Level } from 'pino';
import type { Argv } from 'yargs';
import { parseHostPort } from '../common/address.js';
import { InvalidArgumentError, OutOfRangeError } from '../common/errors.js';
import { MiB, formatBytes, parseSizeBytes } from '../common/units.js';
import { AdminAuth } from '../mdm/auth.js';
import { logLevels } from './log.js';
import type { ApiClient, ManageIo } from './manage-client.js';
import { processIo } from './manage-client.js';
import { LockError, lockDataDir } from './pid-lock.js';
import { isDaemonRunning, startDaemon, startMovable, stopDaemons, type StopOutcome } from './lab-processes.js';
import { labSdcName, listNbdExports, nbdPortDefault, nbdUri, sdcAvailable, sdcReadyPattern, sdcStartArgs } from './lab-sdc.js';
import { connectLab, ensureLayout, ensureMappings, ensureVolumes, registrationTimeoutMs, waitForExports } from './lab-setup.js';
import { LabError, labDirDefault, labDirEnv, labFormatVersion, labMetricsArgs, labMetricsUrl, readLabFile, resolveLabDir, writeLabFile, type LabFile, type LabProcess, type LabVolume } from './lab-state.js';
import { collectStatus, processStatus, renderStatus } from './lab-status.js';
import { deviceBytesMin, nameBytesMax } from '../common/limits.js';
import { clusterProcesses, mdmAddresses, parseMdmClusterFlag, startMdmCluster, type LabMdmClusterSize } from './lab-cluster.js';

export const labSdsCountDefault = 3;
/** At least two: every chunk has its two copies on two SDSs. */
export const labSdsCountMin = 2;
export const labSdsCountMax = 16;
export const labDeviceSizeBytesDefault = 4 * 1024 * MiB;
export const labVolumesDefault: readonly LabVolume[] = [{ name: 'vol1', sizeBytes: 8 * 1024 * MiB }];
/** ScaleIO's ports, where the lab starts looking for free ones. */
export const labMdmPortFirst = 6611;
export const labApiPortFirst = 8443;
export const labSdsPortFirst = 7072;
/**
 * The lab's daemons take metrics ports from here up, not from their roles' defaults
 * (9611-9613+, docs/metrics.md): any daemon started without --metrics on this host may hold
 * a default, and would take it from under the lab between its layout and its start.
 */
export const labMetricsPortFirst = 9700;
/** How many ports upward from each first one are tried. */
export const labPortSearchCount = 200;
/** The foreground dashboard is redrawn this often. */
export const labDashboardIntervalMs = 3_000;
const volumeNamePattern = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const loopback = '127.0.0.1';

const dirOption = {
  type: 'string',
  describe: `lab directory [default: $${labDirEnv}, else the current directory if it holds lab.json, else ./${labDirDefault}]`,
  requiresArg: true,
} as const;

// --- flags ------------------------------------------------------------------------------------

export interface LabUpArgs {
  dir: string | undefined;
  sds: string | undefined;
  'device-size': string | undefined;
  volume: string[] | undefined;
  'nbd-port': string | undefined;
  detach: boolean;
  'log-level': Level;
  'rebuild-after': string | undefined;
  'rebuild-rate': string | undefined;
  'mdm-cluster': string | undefined;
  device: string[] | undefined;
  io: string | undefined;
  force: boolean;
}

export interface LabDownArgs {
  dir: string | undefined;
  purge: boolean;
}

export interface LabStatusArgs {
  dir: string | undefined;
  json: boolean;
}

/** What `lab up` was asked for; undefined where a flag was not given (the lab's own value, or the default, applies). */
export interface LabUpRequest {
  sdsCount: number | undefined;
  deviceSizeBytes: number | undefined;
  volumes: LabVolume[] | undefined;
  nbdPort: number | undefined;
  detach: boolean;
  logLevel: Level;
  /** Seconds a down SDS may stay away before its copies are rebuilt elsewhere (the MDM's --rebuild-after). */
  rebuildAfterSeconds: number | undefined;
  /** Rebuild bandwidth per source SDS (the MDM's --rebuild-rate), e.g. '32MiB'. */
  rebuildRate: string | undefined;
  /** 1: one MDM with its journal; 3 or 5: an MDM cluster on etcd. Fixed at the first up. */
  mdmCluster: LabMdmClusterSize | undefined;
  /** Absolute paths of the SDSs' devices, in SDS order (--device); undefined: the lab's own, or sparse files. */
  devicePaths: string[] | undefined;
  /** `sds start --io` of the SDSs this up starts; undefined: the default for the lab's kind of device. */
  ioMode: LabIoMode | undefined;
  /** Pass --force to `sds start`: format devices that hold something else. */
  force: boolean;
}

/** `sds start --io` (docs/direct-io.md). */
export type LabIoMode = 'auto' | 'direct' | 'buffered';
export const labIoModes: readonly LabIoMode[] = ['auto', 'direct', 'buffered'];
/** On the lab's sparse files: the page cache (measured against direct IO in docs/benchmarks.md). */
export const labIoModeFilesDefault: LabIoMode = 'buffered';
/** On devices given with --device: direct IO where the device takes it. */
export const labIoModeDevicesDefault: LabIoMode = 'auto';

function wholeNumber(flag: string, value: string, min: number, max: number): number {
  const number = /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(number) || number < min || number > max) throw new OutOfRangeError(flag, `a whole number from ${min} to ${max}`, value);
  return number;
}

function wholeMiB(flag: string, text: string, minBytes: number): number {
  const bytes = parseSizeBytes(flag, text);
  if (bytes % MiB !== 0) throw new InvalidArgumentError(flag, `must be a whole number of MiB, got '${text}'`);
  if (bytes < minBytes) throw new OutOfRangeError(flag, `at least ${formatBytes(minBytes)}`, text);
  return bytes;
}

/** NAME:SIZE, e.g. vol1:8GiB. */
export function parseVolumeFlag(text: string): LabVolume {
  const colon = text.lastIndexOf(':');
  if (colon <= 0 || colon === text.length - 1) throw new InvalidArgumentError('--volume', `expected NAME:SIZE (e.g. vol1:8GiB), got '${text}'`);
  const name = text.slice(0, colon);
  if (Buffer.byteLength(name) > nameBytesMax || !volumeNamePattern.test(name)) {
    throw new InvalidArgumentError('--volume', `volume name '${name}' must be 1 to ${nameBytesMax} letters, digits, '_', '.' or '-', starting with a letter or digit`);
  }
  return { name, sizeBytes: wholeMiB('--volume', text.slice(colon + 1), MiB) };
}

/** Checks every flag of `lab up` before anything starts: a bad one is a usage error. */
export function parseLabUpArgs(args: LabUpArgs): LabUpRequest {
  if (args.dir !== undefined && args.dir === '') throw new InvalidArgumentError('--dir', 'must not be empty');
  const volumes = args.volume === undefined ? undefined : args.volume.map((entry) => parseVolumeFlag(String(entry)));
  const seen = new Set<string>();
  for (const volume of volumes ?? []) {
    if (seen.has(volume.name)) throw new InvalidArgumentError('--volume', `volume '${volume.name}' is named twice`);
    seen.add(volume.name);
  }
  const devicePaths = args.device === undefined ? undefined : args.device.map((entry) => parseDeviceFlag(String(entry)));
  const seenDevices = new Set<string>();
  for (const device of devicePaths ?? []) {
    if (seenDevices.has(device)) throw new InvalidArgumentError('--device', `${device} is named twice: each SDS needs a device of its own`);
    seenDevices.add(device);
  }
  if (devicePaths !== undefined && args['device-size'] !== undefined) {
    throw new InvalidArgumentError('--device-size', 'applies to the lab\'s sparse files only; with --device each device has its own size');
  }
  if (args.io !== undefined && !(labIoModes as readonly string[]).includes(String(args.io))) {
    throw new InvalidArgumentError('--io', `must be one of ${labIoModes.join(', ')}, got '${args.io}'`);
  }
  return {
    sdsCount: args.sds === undefined ? undefined : wholeNumber('--sds', String(args.sds), labSdsCountMin, labSdsCountMax),
    deviceSizeBytes: args['device-size'] === undefined ? undefined : wholeMiB('--device-size', String(args['device-size']), deviceBytesMin),
    volumes,
    nbdPort: args['nbd-port'] === undefined ? undefined : wholeNumber('--nbd-port', String(args['nbd-port']), 1, 65535),
    detach: args.detach,
    logLevel: args['log-level'],
    rebuildAfterSeconds: args['rebuild-after'] === undefined ? undefined : wholeNumber('--rebuild-after', String(args['rebuild-after']), 1, 86_400),
    rebuildRate: args['rebuild-rate'] === undefined ? undefined : `${parseSizeBytes('--rebuild-rate', String(args['rebuild-rate']))}`,
    mdmCluster: args['mdm-cluster'] === undefined ? undefined : parseMdmClusterFlag(String(args['mdm-cluster'])),
    devicePaths,
    ioMode: args.io === undefined ? undefined : (String(args.io) as LabIoMode),
    force: args.force,
  };
}

/**
 * A --device: an absolute path to something that exists and is a block device (or a regular
 * file, e.g. for a test). What it holds is the SDS's to judge when it opens it.
 */
export function parseDeviceFlag(text: string): string {
  if (text.trim() === '') throw new InvalidArgumentError('--device', 'must not be empty');
  const device = path.resolve(text);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(device);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new InvalidArgumentError('--device', `${device}: ${code === 'ENOENT' ? 'no such device or file' : (err as Error).message}`);
  }
  if (!stat.isBlockDevice() && !stat.isFile()) throw new InvalidArgumentError('--device', `${device}: not a block device or a regular file`);
  return device;
}

// --- lab up -----------------------------------------------------------------------------------

/** Output of the lab commands: what was asked for on stdout, progress on stderr. */
function reporter(io: ManageIo): (line: string) => void {
  return (line) => io.stderr.write(`lab: ${line}\n`);
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ host: loopback, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** The first free port from `first` upward that the lab does not use already. */
async function choosePort(first: number, taken: Set<number>): Promise<number> {
  for (let port = first; port < first + labPortSearchCount && port <= 65535; port++) {
    if (taken.has(port) || !(await portFree(port))) continue;
    taken.add(port);
    return port;
  }
  throw new LabError('MB_ERR_LAB_PORTS', `no free port on ${loopback} from ${first} to ${first + labPortSearchCount - 1}`);
}

function portOf(address: string): number {
  return parseHostPort('address', address).port;
}

/** The lab in `dir` as this `up` wants it: read or created, checked against the flags, ports fixed, recorded. */
async function prepareLab(dir: string, request: LabUpRequest): Promise<{ lab: LabFile; volumesToCreate: LabVolume[] }> {
  const existing = readLabFile(dir);
  // Ports the lab uses already, or is asked to: a new SDS must not take one of them.
  const taken = new Set<number>();
  for (const record of existing?.processes ?? []) {
    for (const address of [record.address, record.apiAddress, record.peerAddress, record.metricsAddress]) if (address !== undefined) taken.add(portOf(address));
  }
  if (existing !== null) taken.add(Number(new URL(existing.apiUrl).port));
  if (request.nbdPort !== undefined) taken.add(request.nbdPort);
  let lab: LabFile;
  if (existing === null && request.mdmCluster !== undefined && request.mdmCluster !== 1) {
    const { processes, apiUrls } = await clusterProcesses(dir, request.mdmCluster, (first) => choosePort(first, taken));
    lab = {
      formatVersion: labFormatVersion,
      clusterId: null,
      apiUrl: apiUrls[0] as string,
      apiAddresses: apiUrls,
      caCert: path.join(dir, 'api', 'api.crt'),
      passwordFile: path.join(dir, 'admin.password'),
      secretFile: path.join(dir, 'mdm1', 'cluster.secret'),
      deviceSizeBytes: request.deviceSizeBytes ?? labDeviceSizeBytesDefault,
      volumes: [],
      processes,
      mdmCluster: request.mdmCluster,
      ...(request.devicePaths !== undefined ? { devicesGiven: true as const } : {}),
    };
  } else if (existing === null) {
    const mdmPort = await choosePort(labMdmPortFirst, taken);
    const apiPort = await choosePort(labApiPortFirst, taken);
    const mdmDir = path.join(dir, 'mdm');
    lab = {
      formatVersion: labFormatVersion,
      clusterId: null,
      apiUrl: `https://${loopback}:${apiPort}`,
      caCert: path.join(mdmDir, 'api.crt'),
      passwordFile: path.join(dir, 'admin.password'),
      secretFile: path.join(mdmDir, 'cluster.secret'),
      deviceSizeBytes: request.deviceSizeBytes ?? labDeviceSizeBytesDefault,
      volumes: [],
      ...(request.devicePaths !== undefined ? { devicesGiven: true as const } : {}),
      processes: [{ role: 'mdm', name: 'mdm', pid: null, address: `${loopback}:${mdmPort}`, dataDir: mdmDir, logFile: path.join(dir, 'logs', 'mdm.log') }],
    };
  } else {
    lab = existing;
    if (request.mdmCluster !== undefined && request.mdmCluster !== (lab.mdmCluster ?? 1)) {
      throw new InvalidArgumentError('--mdm-cluster', `this lab's MDM cluster has ${lab.mdmCluster ?? 1} node(s), fixed at its first up (lab down --purge starts over)`);
    }
    if (request.deviceSizeBytes !== undefined && lab.devicesGiven === true) {
      throw new InvalidArgumentError('--device-size', 'this lab runs on devices given with --device, each of its own size; --device-size is for sparse files');
    }
    if (request.deviceSizeBytes !== undefined && request.deviceSizeBytes !== lab.deviceSizeBytes) {
      throw new InvalidArgumentError('--device-size', `this lab's devices are ${formatBytes(lab.deviceSizeBytes)}, fixed at its first up (lab down --purge starts over)`);
    }
    if (request.devicePaths !== undefined && lab.devicesGiven !== true) {
      throw new InvalidArgumentError('--device', 'this lab runs on its own sparse files, fixed at its first up (lab down --purge starts over with --device)');
    }
  }
  const sdsRecords = lab.processes.filter((record) => record.role === 'sds');
  const sdsCount = request.sdsCount ?? Math.max(sdsRecords.length, existing === null ? labSdsCountDefault : 0);
  if (sdsCount < sdsRecords.length) {
    throw new InvalidArgumentError('--sds', `this lab has ${sdsRecords.length} SDSs; it only grows (remove SDSs with meshblock sds remove)`);
  }
  const devicePaths = labDevicePaths(lab, sdsRecords, sdsCount, request.devicePaths);
  for (let index = sdsRecords.length + 1; index <= sdsCount; index++) {
    const name = `sds${index}`;
    const port = await choosePort(labSdsPortFirst, taken);
    const devicePath = devicePaths?.[index - 1] ?? path.join(dir, 'devices', `${name}.img`);
    const record: LabProcess = { role: 'sds', name, pid: null, address: `${loopback}:${port}`, dataDir: path.join(dir, name), logFile: path.join(dir, 'logs', `${name}.log`), devicePath };
    // SDSs stay together, before the SDC.
    const sdcIndex = lab.processes.findIndex((entry) => entry.role === 'sdc');
    if (sdcIndex < 0) lab.processes.push(record);
    else lab.processes.splice(sdcIndex, 0, record);
  }
  const sdc = lab.processes.find((record) => record.role === 'sdc');
  if (sdc === undefined) {
    // A build without the SDC leaves it out; a later up with one adds it.
    if (sdcAvailable()) {
      lab.processes.push({ role: 'sdc', name: labSdcName, pid: null, address: `${loopback}:${request.nbdPort ?? nbdPortDefault}`, dataDir: path.join(dir, labSdcName), logFile: path.join(dir, 'logs', `${labSdcName}.log`) });
    }
  } else if (request.nbdPort !== undefined && request.nbdPort !== portOf(sdc.address)) {
    if (isDaemonRunning(sdc)) throw new InvalidArgumentError('--nbd-port', `the lab's SDC is serving NBD on ${sdc.address}; lab down first to move it`);
    sdc.address = `${loopback}:${request.nbdPort}`;
  }
  // Each daemon its own metrics port (docs/metrics.md).
  for (const record of lab.processes) {
    if (record.role !== 'etcd' && record.metricsAddress === undefined) record.metricsAddress = `${loopback}:${await choosePort(labMetricsPortFirst, taken)}`;
  }
  const volumesToCreate = request.volumes ?? (existing === null ? [...labVolumesDefault] : []);
  for (const volume of volumesToCreate) {
    const known = lab.volumes.findIndex((entry) => entry.name === volume.name);
    if (known < 0) lab.volumes.push(volume);
  }
  writeLabFile(dir, lab);
  return { lab, volumesToCreate };
}

/**
 * The devices of a lab on given devices, one per SDS in SDS order, checked against --device:
 * exactly one per SDS, and the ones the lab has already in the same order (fixed at the
 * first up). Null for a lab on sparse files.
 */
function labDevicePaths(lab: LabFile, sdsRecords: readonly LabProcess[], sdsCount: number, given: readonly string[] | undefined): string[] | null {
  if (lab.devicesGiven !== true) return null;
  const known = sdsRecords.map((record) => record.devicePath as string);
  if (given === undefined) {
    if (sdsCount > known.length) {
      throw new InvalidArgumentError('--device', `this lab runs on given devices: growing it to ${sdsCount} SDSs needs --device for each of them (its ${known.length} devices first, in order)`);
    }
    return known;
  }
  if (given.length !== sdsCount) {
    const sdsFlag = sdsRecords.length === 0 && given.length >= labSdsCountMin && given.length <= labSdsCountMax ? `, or --sds ${given.length}` : '';
    throw new InvalidArgumentError('--device', `the lab has ${sdsCount} SDSs but --device was given ${given.length} time(s): give exactly one device per SDS${sdsFlag}`);
  }
  known.forEach((device, index) => {
    if (given[index] !== device) {
      throw new InvalidArgumentError('--device', `${sdsRecords[index]?.name ?? `sds${index + 1}`} runs on ${device}, fixed at the first up, not ${given[index]} (lab down --purge starts over)`);
    }
  });
  return [...given];
}

function ensurePasswordFile(file: string): void {
  if (fs.existsSync(file)) return;
  fs.writeFileSync(file, `${randomBytes(18).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
}

function ensureDeviceFile(file: string, sizeBytes: number): void {
  if (fs.existsSync(file)) return;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const fd = fs.openSync(file, 'wx', 0o600);
  try {
    // Sparse: nothing is allocated until the SDS writes.
    fs.ftruncateSync(fd, sizeBytes);
  } finally {
    fs.closeSync(fd);
  }
}

const mdmReadyPattern = /^mdm of cluster ([0-9a-f]{16}) \(.*?\) listening on (\S+), REST API at (\S+) \(certificate (.+)\); cluster secret in (.+)$/m;
const sdsReadyPattern = /^sds (\S+) \(([0-9a-f]{16})\) of cluster ([0-9a-f]{16}) listening on (\S+) with/m;

/** Starts the MDM and the SDSs that are not running; `startedNow` collects them. */
async function startCore(dir: string, lab: LabFile, request: Pick<LabUpRequest, 'logLevel' | 'rebuildAfterSeconds' | 'rebuildRate' | 'ioMode' | 'force'>, startedNow: LabProcess[], report: (line: string) => void): Promise<void> {
  const logLevel = request.logLevel;
  const mdm = lab.processes.find((record) => record.role === 'mdm') as LabProcess;
  const tuning: string[] = [];
  if (request.rebuildAfterSeconds !== undefined) tuning.push('--rebuild-after', String(request.rebuildAfterSeconds));
  if (request.rebuildRate !== undefined) tuning.push('--rebuild-rate', request.rebuildRate);
  // A port found free when the lab was laid out may be taken since (another lab starting
  // beside this one): a daemon that cannot listen moves to free ones (startMovable).
  const taken = new Set<number>([portOf(new URL(lab.apiUrl).host)]);
  for (const record of lab.processes) for (const address of [record.address, record.apiAddress, record.peerAddress, record.metricsAddress]) if (address !== undefined) taken.add(portOf(address));
  if (lab.mdmCluster !== undefined) {
    await startMdmCluster(dir, lab, { logLevel, extraMdmArgs: tuning, choosePort: (first) => choosePort(first, taken) }, startedNow, report);
  } else if (isDaemonRunning(mdm)) {
    report(`mdm is running (pid ${mdm.pid})`);
  } else {
    const start = (): ReturnType<typeof startDaemon> => {
      const args = ['mdm', 'start', '--data-dir', mdm.dataDir, '--listen', mdm.address, '--api', new URL(lab.apiUrl).host, ...labMetricsArgs(mdm), '--log-level', logLevel, ...tuning];
      if (!AdminAuth.isInitialized(mdm.dataDir)) args.push('--admin-password-file', lab.passwordFile);
      return startDaemon({ name: 'mdm', args, logFile: mdm.logFile, cwd: dir, ready: mdmReadyPattern });
    };
    const started = await startMovable(start, async () => {
      const wire = await choosePort(labMdmPortFirst, taken);
      const api = await choosePort(labApiPortFirst, taken);
      report(`mdm: a port of ${mdm.address} or ${new URL(lab.apiUrl).host} was taken meanwhile; moving to ${loopback}:${wire} and ${loopback}:${api}`);
      mdm.address = `${loopback}:${wire}`;
      // Its metrics port too (which of them was taken the error does not say); the started line shows it.
      if (mdm.metricsAddress !== undefined) mdm.metricsAddress = `${loopback}:${await choosePort(labMetricsPortFirst, taken)}`;
      lab.apiUrl = `https://${loopback}:${api}`;
      writeLabFile(dir, lab);
    });
    mdm.pid = started.pid;
    startedNow.push(mdm);
    const [, clusterId, address, apiUrl, caCert, secretFile] = started.ready as unknown as [string, string, string, string, string, string];
    if (lab.clusterId !== null && lab.clusterId !== clusterId) {
      throw new LabError('MB_ERR_LAB_CLUSTER', `the MDM in ${mdm.dataDir} runs cluster ${clusterId}, but this lab is cluster ${lab.clusterId}`);
    }
    Object.assign(lab, { clusterId, apiUrl, caCert, secretFile });
    mdm.address = address;
    writeLabFile(dir, lab);
    report(`started mdm (pid ${started.pid}) of cluster ${clusterId} on ${address}, REST API ${apiUrl}${metricsNote(mdm)}`);
  }
  const clusterId = lab.clusterId as string;
  const sdss = lab.processes.filter((record) => record.role === 'sds');
  const devicesGiven = lab.devicesGiven === true;
  const ioMode = request.ioMode ?? (devicesGiven ? labIoModeDevicesDefault : labIoModeFilesDefault);
  const results = await Promise.allSettled(
    sdss.map(async (sds) => {
      if (isDaemonRunning(sds)) {
        report(`${sds.name} is running (pid ${sds.pid})`);
        return;
      }
      const devicePath = sds.devicePath as string;
      if (!devicesGiven) ensureDeviceFile(devicePath, lab.deviceSizeBytes);
      const start = (): ReturnType<typeof startDaemon> => {
        const args = ['sds', 'start', '--name', sds.name, '--device', devicePath, '--listen', sds.address, '--data-dir', sds.dataDir, '--cluster-id', clusterId, '--secret-file', lab.secretFile, '--mdm', mdmAddresses(lab), '--log-level', logLevel, '--io', ioMode, ...labMetricsArgs(sds)];
        if (request.force) args.push('--force');
        return startDaemon({ name: sds.name, args, logFile: sds.logFile, cwd: dir, ready: sdsReadyPattern });
      };
      // The SDS registers its address with the MDM, which takes a moved one.
      const started = await startMovable(start, async () => {
        const port = await choosePort(labSdsPortFirst, taken);
        report(`${sds.name}: ${sds.address} was taken meanwhile; moving to ${loopback}:${port}`);
        sds.address = `${loopback}:${port}`;
        // Its metrics port too; the started line shows it.
        if (sds.metricsAddress !== undefined) sds.metricsAddress = `${loopback}:${await choosePort(labMetricsPortFirst, taken)}`;
      });
      sds.pid = started.pid;
      startedNow.push(sds);
      report(`started ${sds.name} (pid ${started.pid}) on ${sds.address} with ${devicePath} (${devicesGiven ? 'given device' : formatBytes(lab.deviceSizeBytes)}, --io ${ioMode})${metricsNote(sds)}`);
    }),
  );
  writeLabFile(dir, lab);
  const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
}

/** Starts the SDC if needed, maps the lab's volumes to it, waits for its exports. Returns the exported volumes. */
async function startSdc(dir: string, lab: LabFile, client: ApiClient, logLevel: Level, startedNow: LabProcess[], report: (line: string) => void): Promise<string[]> {
  const sdc = lab.processes.find((record) => record.role === 'sdc') as LabProcess;
  if (isDaemonRunning(sdc)) {
    report(`${sdc.name} is running (pid ${sdc.pid})`);
  } else {
    const start = (): ReturnType<typeof startDaemon> => {
      const args = [...sdcStartArgs({ name: sdc.name, mdmAddress: mdmAddresses(lab), listen: sdc.address, dataDir: sdc.dataDir, clusterId: lab.clusterId as string, secretFile: lab.secretFile, logLevel }), ...labMetricsArgs(sdc)];
      return startDaemon({ name: sdc.name, args, logFile: sdc.logFile, cwd: dir, ready: sdcReadyPattern });
    };
    // The NBD port is the user's; a metrics port taken since the layout moves.
    const taken = new Set<number>();
    for (const record of lab.processes) for (const address of [record.address, record.apiAddress, record.peerAddress, record.metricsAddress]) if (address !== undefined) taken.add(portOf(address));
    const started = await startMovable(start, async () => {
      if (sdc.metricsAddress === undefined) return;
      const port = await choosePort(labMetricsPortFirst, taken);
      report(`${sdc.name}: a port was taken meanwhile; moving its metrics from ${sdc.metricsAddress} to ${loopback}:${port}`);
      sdc.metricsAddress = `${loopback}:${port}`;
    });
    sdc.pid = started.pid;
    sdc.address = started.ready[4] as string;
    startedNow.push(sdc);
    writeLabFile(dir, lab);
    report(`started ${sdc.name} (pid ${started.pid}) serving NBD on ${sdc.address}${metricsNote(sdc)}`);
  }
  const mapped = await ensureMappings(client, sdc.name, lab.volumes.map((volume) => volume.name), report);
  const target = parseHostPort('address', sdc.address);
  await waitForExports(mapped, () => listNbdExports(target), registrationTimeoutMs);
  return mapped;
}

/** ", metrics at URL" for a started daemon's line. */
function metricsNote(record: LabProcess): string {
  const url = labMetricsUrl(record);
  return url === null ? '' : `, metrics at ${url}`;
}

function summary(dir: string, lab: LabFile, exported: readonly string[] | null): string {
  const mdm = lab.processes.find((record) => record.role === 'mdm') as LabProcess;
  const sdc = lab.processes.find((record) => record.role === 'sdc') as LabProcess;
  const sdsCount = lab.processes.filter((record) => record.role === 'sds').length;
  const mdmCount = lab.processes.filter((record) => record.role === 'mdm').length;
  const lines =
    lab.mdmCluster === undefined
      ? [`lab ${dir} is up: cluster ${lab.clusterId}, MDM ${mdm.address}, REST API ${lab.apiUrl}, ${sdsCount} SDSs`]
      : [`lab ${dir} is up: cluster ${lab.clusterId}, ${lab.mdmCluster}-node MDM cluster (${mdmCount} MDMs, ${lab.mdmCluster - mdmCount} Tie-Breakers, on etcd), REST API ${(lab.apiAddresses ?? [lab.apiUrl]).join(' ')}, ${sdsCount} SDSs`];
  if (exported === null) {
    lines.push(`volumes ${lab.volumes.map((volume) => volume.name).join(', ')} are created but not exported: this build has no 'meshblock sdc start'`);
  } else if (exported.length === 0) {
    lines.push(`the SDC serves NBD on ${sdc.address}, with no volumes mapped`);
  } else {
    const { host, port } = parseHostPort('address', sdc.address);
    lines.push(`NBD exports on ${sdc.address}:`);
    for (const name of exported) {
      const size = lab.volumes.find((volume) => volume.name === name)?.sizeBytes;
      lines.push(`  ${name}${size === undefined ? '' : ` (${formatBytes(size)})`}: ${nbdUri(sdc.address, name)}`);
    }
    lines.push('attach them:');
    lines.push(`  nbdinfo --list nbd://${sdc.address}`);
    exported.forEach((name, index) => {
      lines.push(`  nbdinfo ${nbdUri(sdc.address, name)}`);
      lines.push(`  sudo nbd-client ${host} ${port} /dev/nbd${index} -N ${name}`);
    });
  }
  lines.push(`manage it: meshblock --dir ${dir} volume list (or any management command, run in ${dir})`);
  lines.push(`status: meshblock lab status --dir ${dir}; stop: meshblock lab down --dir ${dir}`);
  return `${lines.join('\n')}\n`;
}

function takeLabLock(dir: string): void {
  try {
    lockDataDir(dir, 'lab');
  } catch (err) {
    if (err instanceof LockError) throw new LabError('MB_ERR_LAB_BUSY', `${err.message}: another 'meshblock lab up' is running on this lab`);
    throw err;
  }
}

function clearPids(records: readonly LabProcess[]): void {
  for (const record of records) record.pid = null;
}

function reportStop(report: (line: string) => void): (record: LabProcess, outcome: StopOutcome) => void {
  return (record, outcome) => {
    if (outcome !== 'not running') report(`${record.name} ${outcome === 'stopped' ? 'stopped' : 'killed (it did not stop on SIGTERM in time)'}`);
  };
}

export async function labUp(args: LabUpArgs, io: ManageIo = processIo): Promise<void> {
  const request = parseLabUpArgs(args);
  const report = reporter(io);
  const dir = resolveLabDir(args.dir, io.env, process.cwd());
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  takeLabLock(dir);
  const { lab, volumesToCreate } = await prepareLab(dir, request);
  ensurePasswordFile(lab.passwordFile);
  const startedNow: LabProcess[] = [];
  let exported: string[] | null = null;
  try {
    await startCore(dir, lab, request, startedNow, report);
    const client = await connectLab(lab);
    try {
      const poolId = await ensureLayout(client, lab, report);
      await ensureVolumes(client, poolId, volumesToCreate, report);
      if (sdcAvailable()) exported = await startSdc(dir, lab, client, request.logLevel, startedNow, report);
      else report("warning: this build has no 'meshblock sdc start': the volumes are not exported");
    } finally {
      await client.close();
    }
  } catch (err) {
    // Leave nothing half-started behind: what this `up` started, it stops.
    if (startedNow.length > 0) {
      report(`stopping what this lab up started (${startedNow.map((record) => record.name).join(', ')})`);
      await stopDaemons(startedNow, reportStop(report)).catch(() => undefined);
      clearPids(startedNow);
      writeLabFile(dir, lab);
    }
    throw err;
  }
  io.stdout.write(summary(dir, lab, exported));
  if (request.detach) return;
  await runForeground(dir, lab, io, summary(dir, lab, exported), report);
}

/** The dashboard, until SIGINT or SIGTERM (then the lab stops) or until every daemon is gone. */
async function runForeground(dir: string, lab: LabFile, io: ManageIo, header: string, report: (line: string) => void): Promise<void> {
  const tty = (io.stdout as { isTTY?: boolean }).isTTY === true;
  // An object, not a variable: TypeScript does not see assignments made in the handler.
  const stop: { signal: NodeJS.Signals | null } = { signal: null };
  let wake: (() => void) | null = null;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stop.signal !== null) {
      // A second Ctrl-C: no more waiting.
      report(`${signal} again: killing the lab's daemons`);
      for (const record of lab.processes) {
        try {
          if (isDaemonRunning(record)) process.kill(-(record.pid as number), 'SIGKILL');
        } catch {
          // Gone in the meantime.
        }
      }
      return;
    }
    stop.signal = signal;
    wake?.();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let client: ApiClient | null = null;
  let shown = '';
  try {
    if (!tty) io.stdout.write('Ctrl-C stops the lab\n');
    while (stop.signal === null) {
      if (processStatus(lab).every((entry) => entry.state === 'stopped')) {
        report('every daemon of the lab has stopped (lab down?): leaving');
        return;
      }
      let mdmError: string | null = null;
      if (client === null) {
        try {
          client = await connectLab(lab);
        } catch (err) {
          mdmError = (err as Error).message;
        }
      }
      const status = await collectStatus(dir, lab, client, mdmError);
      if (!status.lab.mdmReachable && client !== null) {
        await client.close();
        client = null;
      }
      const text = renderStatus(status);
      if (tty) io.stdout.write(`\x1b[H\x1b[2J${header}\n${text}\nCtrl-C stops the lab\n`);
      else if (text !== shown) io.stdout.write(`\n${text}`);
      shown = text;
      await Promise.race([sleep(labDashboardIntervalMs), new Promise<void>((resolve) => (wake = resolve))]);
      wake = null;
    }
    report(`${stop.signal}: stopping the lab`);
    await stopDaemons(lab.processes, reportStop(report));
    clearPids(lab.processes);
    writeLabFile(dir, lab);
    report(`lab ${dir} stopped; lab up --dir ${dir} resumes it`);
  } finally {
    await client?.close();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

// --- lab down, lab status -----------------------------------------------------------------------

function requireLab(dir: string): LabFile {
  const lab = readLabFile(dir);
  if (lab === null) throw new LabError('MB_ERR_LAB_NOT_FOUND', `no lab in ${dir} (no lab.json); start one with: meshblock lab up --dir ${dir}`);
  return lab;
}

export async function labDown(args: LabDownArgs, io: ManageIo = processIo): Promise<void> {
  if (args.dir !== undefined && args.dir === '') throw new InvalidArgumentError('--dir', 'must not be empty');
  const report = reporter(io);
  const dir = resolveLabDir(args.dir, io.env, process.cwd());
  const lab = requireLab(dir);
  await stopDaemons(lab.processes, reportStop(report));
  clearPids(lab.processes);
  writeLabFile(dir, lab);
  if (args.purge) {
    fs.rmSync(dir, { recursive: true, force: true });
    io.stdout.write(`lab ${dir} stopped and deleted\n`);
  } else {
    io.stdout.write(`lab ${dir} stopped; lab up --dir ${dir} resumes it, lab down --purge --dir ${dir} deletes it\n`);
  }
}

export async function labStatus(args: LabStatusArgs, io: ManageIo = processIo): Promise<void> {
  if (args.dir !== undefined && args.dir === '') throw new InvalidArgumentError('--dir', 'must not be empty');
  const dir = resolveLabDir(args.dir, io.env, process.cwd());
  const lab = requireLab(dir);
  const mdms = lab.processes.filter((record) => record.role === 'mdm');
  let client: ApiClient | null = null;
  let mdmError: string | null = null;
  if (!mdms.some((mdm) => isDaemonRunning(mdm))) {
    mdmError = mdms.length > 1 ? 'no MDM is running' : 'the MDM is not running';
  } else {
    try {
      client = await connectLab(lab);
    } catch (err) {
      mdmError = (err as Error).message;
    }
  }
  try {
    const status = await collectStatus(dir, lab, client, mdmError);
    io.stdout.write(args.json ? `${JSON.stringify(status, null, 2)}\n` : renderStatus(status));
  } finally {
    await client?.close();
  }
}

// --- registration -------------------------------------------------------------------------------

function labUpOptions(yargs: Argv): Argv<LabUpArgs> {
  return yargs
    .option('dir', dirOption)
    .option('sds', { type: 'string', describe: `how many SDSs, ${labSdsCountMin} to ${labSdsCountMax} [default: ${labSdsCountDefault} at the first up; a lab grows, never shrinks]`, requiresArg: true })
    .option('device-size', { type: 'string', describe: `size of each SDS's sparse-file device, whole MiB [default: ${formatBytes(labDeviceSizeBytesDefault)}; fixed at the first up]`, requiresArg: true })
    .option('device', {
      type: 'string',
      array: true,
      describe:
        'run the SDSs on these block devices (or loop devices) instead of sparse files: exactly one --device per SDS, in order (repeatable) [fixed at the first up; ' +
        'a later up may name them again, in the same order]. A device that holds a filesystem, partition table, LVM label or another cluster is refused unless --force',
      requiresArg: true,
    })
    .option('force', { type: 'boolean', default: false, describe: "with --device: let the SDSs format devices that hold something else, destroying it (sds start --force; never reformats a lab device's own data)" })
    .option('io', { choices: labIoModes, describe: `device IO of the SDSs this up starts (sds start --io) [default: ${labIoModeFilesDefault} on the lab's sparse files, ${labIoModeDevicesDefault} on --device]` })
    .option('volume', { type: 'string', array: true, describe: `a thin volume to create and export, NAME:SIZE (repeatable) [default at the first up: ${labVolumesDefault.map((volume) => `${volume.name}:${formatBytes(volume.sizeBytes).replace(' ', '')}`).join(' ')}]`, requiresArg: true })
    .option('nbd-port', { type: 'string', describe: `the SDC's NBD port on ${loopback} [default: ${nbdPortDefault} at the first up, then the lab's]`, requiresArg: true })
    .option('detach', { type: 'boolean', default: false, describe: 'return once the NBD exports are ready, leaving the lab running' })
    .option('rebuild-after', { type: 'string', describe: 'seconds a down SDS may stay away before its copies are rebuilt on the others (back sooner, it gets only what changed) [default: 60; applies when the MDM starts]', requiresArg: true })
    .option('rebuild-rate', { type: 'string', describe: 'rebuild bandwidth per source SDS, bytes per second, e.g. 32MiB [default: 64MiB; applies when the MDM starts]', requiresArg: true })
    .option('mdm-cluster', { type: 'string', describe: "ScaleIO's MDM cluster modes: 1 (one MDM, its own journal), 3 (Master, Slave, Tie-Breaker) or 5 (Master, 2 Slaves, 2 Tie-Breakers), on etcd members [default: 1; fixed at the first up]", requiresArg: true })
    .option('log-level', { choices: logLevels, default: 'info' as Level, describe: 'log level of the daemons (logs in DIR/logs)' }) as unknown as Argv<LabUpArgs>;
}

/** Adds `lab up|down|status`. */
export function registerLabCommands(yargs: Argv, io: ManageIo = processIo): Argv {
  return yargs.command('lab', 'an all-in-one cluster on this machine (MDM, SDSs on sparse files or given devices, SDC) for trying meshblock out', (lab) =>
    lab
      .command(
        'up',
        'start the lab (creating it at the first up, resuming it after) and export its volumes over NBD',
        (y) => labUpOptions(y).strict(),
        async (args) => labUp(args as unknown as LabUpArgs, io),
      )
      .command(
        'status',
        "the lab's processes, volumes, capacity and health",
        (y) => y.option('dir', dirOption).option('json', { type: 'boolean', default: false, describe: 'print the status as JSON (a stable contract)' }).strict(),
        async (args) => labStatus(args as unknown as LabStatusArgs, io),
      )
      .command(
        'down',
        "stop the lab's daemons (SIGTERM, then SIGKILL after a bound); its data stays unless --purge",
        (y) => y.option('dir', dirOption).option('purge', { type: 'boolean', default: false, describe: 'delete the lab directory and all its data after stopping' }).strict(),
        async (args) => labDown(args as unknown as LabDownArgs, io),
      )
      .demandCommand(1, 'lab: name a subcommand (up, status, down)')
      .strict(),
  );
}
