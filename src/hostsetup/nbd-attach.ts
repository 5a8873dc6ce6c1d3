// Attaching a volume on this host as a kernel block device: the nbd module, a free
// /dev/nbdN, and nbd-client connected to the SDC's export. What `meshblock attach` and
// `meshblock detach` do, and what the XenServer SR module needs before `xe sr-create`.
//
// The kernel client is configured by nbd-client (Debian's nbd-client, `nbd` on the
// RHEL family). The options chosen and why:
//   -N VOLUME        the export is the volume's name (the SDC serves one export per volume)
//   -b 4096          4 KiB logical blocks: the volume's natural unit; LVM and ext4 use 4 KiB
//   -t 30            a request not answered in 30 s fails. The SDC fails over within a few
//                    seconds when an SDS dies, far inside this.
//   -C N             several TCP connections (the SDC advertises CAN_MULTI_CONN); 1 unless
//                    asked, since one connection already keeps every SDS busy
//   (netlink)        nbd-client configures the device through netlink and exits: the path
//                    the VM test runs (scripts/vm/guest-init.sh uses these same options).
//                    A dead SDC connection fails IO after -t.
//   --persist        `-persist -nonetlink`: nbd-client stays resident and reconnects the
//                    device when the SDC's connection drops (an SDC restart); that needs the
//                    ioctl interface. Not yet run in the VM test, so not the default.
// Attachments are recorded in /run/meshblock/attachments/nbdN.json so `detach VOLUME`
// finds the device; the kernel's own /sys/block/nbdN/pid says whether a device is in use.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidArgumentError, MeshblockError } from '../common/errors.js';
import { kernelNbdRequestTimeoutMs } from '../common/limits.js';
import { formatArgv, lastLine } from './host-module.js';
import { commandNotFoundCode, LocalTransport, type RunResult } from './host-transport.js';

export const nbdDevicePattern = /^\/dev\/nbd([0-9]+)$/;
export const nbdsMaxDefault = 16;
export const nbdPartitionsMax = 16;
/** nbd-client's -t: the kernel client's request timeout, which the cluster's failover timings fit inside. */
export const attachTimeoutSDefault = kernelNbdRequestTimeoutMs / 1000;
export const attachBlockSizeBytes = 4096;
export const attachConnectionsMax = 16;
/** How long a device may take to show its size after nbd-client returned. */
const deviceReadyWaitMs = 10_000;

export class AttachError extends MeshblockError {}

export interface AttachPaths {
  sysRoot: string;
  devRoot: string;
  stateDir: string;
}

export const systemAttachPaths: AttachPaths = { sysRoot: '/sys', devRoot: '/dev', stateDir: '/run/meshblock/attachments' };

export interface AttachRequest {
  volume: string;
  /** The SDC's NBD address: TCP host and port, or a Unix socket. */
  sdc: { host: string; port: number } | { socket: string };
  device: string | undefined;
  connections: number;
  timeoutS: number;
  persist: boolean;
  readOnly: boolean;
  nbdsMax: number;
}

export interface Attachment {
  volume: string;
  /** The volume's id, when the attacher knew it (sdc start --attach-mapped); absent from `meshblock attach`'s records. */
  volumeId?: string;
  device: string;
  sdc: string;
  connections: number;
  persist: boolean;
  readOnly: boolean;
  attachedAt: string;
}

export interface CommandLine {
  command: string;
  args: string[];
}

export function formatCommand(line: CommandLine): string {
  return formatArgv([line.command, ...line.args]);
}

export function modprobeCommand(nbdsMax: number): CommandLine {
  return { command: 'modprobe', args: ['nbd', `nbds_max=${nbdsMax}`, `max_part=${nbdPartitionsMax}`] };
}

export function nbdClientCommand(request: AttachRequest, device: string): CommandLine {
  const args = 'socket' in request.sdc ? ['-unix', request.sdc.socket, device] : [request.sdc.host, String(request.sdc.port), device];
  args.push('-N', request.volume, '-b', String(attachBlockSizeBytes), '-t', String(request.timeoutS));
  if (request.connections > 1) args.push('-C', String(request.connections));
  if (request.persist) args.push('-persist', '-nonetlink');
  if (request.readOnly) args.push('-readonly');
  return { command: 'nbd-client', args };
}

export function sdcLabel(sdc: AttachRequest['sdc']): string {
  return 'socket' in sdc ? `unix:${sdc.socket}` : `${sdc.host.includes(':') ? `[${sdc.host}]` : sdc.host}:${sdc.port}`;
}

export function validateDevice(field: string, device: string): number {
  const match = nbdDevicePattern.exec(device);
  if (match === null) throw new InvalidArgumentError(field, `must be an NBD device such as /dev/nbd0, got '${device}'`);
  return Number(match[1]);
}

/** The index N of a device path ending in /nbdN: under /dev, or under a test's devRoot. */
export function deviceIndexOf(device: string): number {
  const match = /\/nbd([0-9]+)$/.exec(device);
  if (match === null) throw new InvalidArgumentError('device', `must be an NBD device such as /dev/nbd0, got '${device}'`);
  return Number(match[1]);
}

const localHost = new LocalTransport();

/** Runs a command of this host; a missing tool is an AttachError that says how to install it. */
async function runCommand(line: CommandLine): Promise<RunResult> {
  const result = await localHost.run(line.command, line.args);
  if (result.code === commandNotFoundCode) {
    throw new AttachError('MB_ERR_ATTACH_TOOL', `${line.command} is not installed (${line.command === 'nbd-client' ? 'Debian: apt-get install nbd-client; RHEL/CentOS: yum install nbd' : 'install kmod'})`);
  }
  return result;
}

/** The device's kernel state: size in bytes (0 = not connected) and the pid serving it. */
export function deviceState(paths: AttachPaths, index: number): { sizeBytes: number; pid: number | null } | null {
  const dir = path.join(paths.sysRoot, 'block', `nbd${index}`);
  if (!fs.existsSync(dir)) return null;
  const sectors = Number(fs.readFileSync(path.join(dir, 'size'), 'utf8').trim());
  let pid: number | null = null;
  try {
    pid = Number(fs.readFileSync(path.join(dir, 'pid'), 'utf8').trim());
  } catch {
    pid = null;
  }
  return { sizeBytes: sectors * 512, pid };
}

/** NBD device indexes the kernel has, in order. */
export function nbdDeviceIndexes(paths: AttachPaths): number[] {
  const dir = path.join(paths.sysRoot, 'block');
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .map((name) => /^nbd([0-9]+)$/.exec(name))
    .filter((match): match is RegExpExecArray => match !== null)
    .map((match) => Number(match[1]))
    .sort((left, right) => left - right);
}

function moduleLoaded(paths: AttachPaths): boolean {
  return fs.existsSync(path.join(paths.sysRoot, 'module', 'nbd'));
}

function firstFreeIndex(paths: AttachPaths): number | undefined {
  return nbdDeviceIndexes(paths).find((index) => {
    const state = deviceState(paths, index);
    return state !== null && !inUse(state);
  });
}

function inUse(state: { sizeBytes: number; pid: number | null }): boolean {
  return state.pid !== null || state.sizeBytes > 0;
}

export function readAttachments(paths: AttachPaths): Attachment[] {
  if (!fs.existsSync(paths.stateDir)) return [];
  return fs
    .readdirSync(paths.stateDir)
    .filter((name) => /^nbd[0-9]+\.json$/.test(name))
    .flatMap((name) => {
      try {
        return [JSON.parse(fs.readFileSync(path.join(paths.stateDir, name), 'utf8')) as Attachment];
      } catch {
        return [];
      }
    });
}

/** What attach would run, in order, without running it (for --dry-run). */
export function attachPlan(request: AttachRequest, paths: AttachPaths = systemAttachPaths): CommandLine[] {
  const plan: CommandLine[] = [];
  const loaded = moduleLoaded(paths);
  if (!loaded) plan.push(modprobeCommand(request.nbdsMax));
  const device = request.device ?? `${paths.devRoot}/nbd${(loaded ? firstFreeIndex(paths) : undefined) ?? 0}`;
  plan.push(nbdClientCommand(request, device));
  return plan;
}

export async function attach(request: AttachRequest, paths: AttachPaths = systemAttachPaths, known: { volumeId?: string } = {}): Promise<Attachment> {
  if (request.device !== undefined) validateDevice('--device', request.device);
  const existing = readAttachments(paths).find((entry) => entry.volume === request.volume && entry.sdc === sdcLabel(request.sdc));
  if (existing !== undefined) {
    const index = deviceIndexOf(existing.device);
    const state = deviceState(paths, index);
    if (state !== null && inUse(state)) throw new AttachError('MB_ERR_ATTACHED', `volume '${request.volume}' is already attached as ${existing.device}`);
  }
  if (!moduleLoaded(paths)) {
    const result = await runCommand(modprobeCommand(request.nbdsMax));
    if (result.code !== 0) {
      throw new AttachError('MB_ERR_NBD_MODULE', `cannot load the nbd kernel module (${formatCommand(modprobeCommand(request.nbdsMax))}): ${lastLine(result.stderr) || `exit ${result.code}`}`);
    }
  }
  let device: string;
  if (request.device !== undefined) {
    const index = validateDevice('--device', request.device);
    const state = deviceState(paths, index);
    if (state === null) throw new AttachError('MB_ERR_NO_DEVICE', `${request.device} does not exist (the nbd module has ${nbdDeviceIndexes(paths).length} devices: nbds_max)`);
    if (inUse(state)) throw new AttachError('MB_ERR_DEVICE_BUSY', `${request.device} is in use${state.pid !== null ? ` (served for pid ${state.pid})` : ''}`);
    device = request.device;
  } else {
    const free = firstFreeIndex(paths);
    if (free === undefined) throw new AttachError('MB_ERR_NO_DEVICE', `every /dev/nbdN is in use (${nbdDeviceIndexes(paths).length} devices); load the module with a larger nbds_max`);
    device = `${paths.devRoot}/nbd${free}`;
  }
  const line = nbdClientCommand(request, device);
  const result = await runCommand(line);
  if (result.code !== 0) {
    throw new AttachError('MB_ERR_NBD_CLIENT', `${formatCommand(line)} failed: ${lastLine(result.stderr) || lastLine(result.stdout) || `exit ${result.code}`}`);
  }
  const index = deviceIndexOf(device);
  const deadline = Date.now() + deviceReadyWaitMs;
  for (;;) {
    const state = deviceState(paths, index);
    if (state !== null && state.sizeBytes > 0) break;
    if (Date.now() > deadline) throw new AttachError('MB_ERR_NBD_CLIENT', `${device} did not come up within ${deviceReadyWaitMs / 1000} s after nbd-client`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const attachment: Attachment = {
    volume: request.volume,
    ...(known.volumeId !== undefined ? { volumeId: known.volumeId } : {}),
    device,
    sdc: sdcLabel(request.sdc),
    connections: request.connections,
    persist: request.persist,
    readOnly: request.readOnly,
    attachedAt: new Date().toISOString(),
  };
  fs.mkdirSync(paths.stateDir, { recursive: true });
  fs.writeFileSync(path.join(paths.stateDir, `nbd${index}.json`), `${JSON.stringify(attachment, null, 1)}\n`);
  return attachment;
}

/** Detaches by device (/dev/nbdN) or by volume name (from the attachment records). */
export async function detach(target: string, paths: AttachPaths = systemAttachPaths): Promise<{ device: string; volume: string | null }> {
  const attachments = readAttachments(paths);
  let device: string;
  if (nbdDevicePattern.test(target)) {
    device = target;
  } else {
    const matches = attachments.filter((entry) => entry.volume === target);
    if (matches.length === 0) {
      const known = attachments.map((entry) => `${entry.volume} (${entry.device})`).join(', ');
      throw new AttachError('MB_ERR_NOT_ATTACHED', `volume '${target}' is not attached here${known === '' ? '' : `; attached: ${known}`}`);
    }
    if (matches.length > 1) throw new AttachError('MB_ERR_AMBIGUOUS', `volume '${target}' is attached as ${matches.map((entry) => entry.device).join(' and ')}; name the device`);
    device = (matches[0] as Attachment).device;
  }
  const index = validateDevice('device', device);
  const state = deviceState(paths, index);
  if (state === null) throw new AttachError('MB_ERR_NO_DEVICE', `${device} does not exist`);
  const line: CommandLine = { command: 'nbd-client', args: ['-d', device] };
  if (inUse(state)) {
    const result = await runCommand(line);
    if (result.code !== 0) throw new AttachError('MB_ERR_NBD_CLIENT', `${formatCommand(line)} failed: ${lastLine(result.stderr) || `exit ${result.code}`}`);
  }
  const record = path.join(paths.stateDir, `nbd${index}.json`);
  const volume = attachments.find((entry) => entry.device === device)?.volume ?? null;
  fs.rmSync(record, { force: true });
  return { device, volume };
}
