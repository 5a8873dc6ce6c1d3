// The disks module: the host's disks, and which of them an SDS may take. An SDS takes a whole
// raw disk, so a disk is free when it has no partitions, nothing mounted, and no signature
// that says someone uses it: a filesystem, an LVM physical volume, an md member, a partition
// table. The signatures come from `blkid -p` (a low-level probe of the device itself, not
// udev's record), so an ext4 written a second ago counts.
//
// Wiping is never implied: only `--yes-wipe DEVICE` plans `wipefs --all DEVICE`, for that one
// device, and only when it is a disk of this host with nothing mounted. wipefs itself opens
// the device exclusively, so it refuses a disk the kernel holds (an active PV, an md member).
// Block devices are always the host's own: --root moves files, not disks.

import { formatBytes } from '../common/units.js';
import { systeminformationInventory, type BlockDeviceRecord } from './disk-inventory.js';
import {
  applySteps,
  commandStep,
  HostModuleError,
  isNotFound,
  lastLine,
  resolveTool,
  type ApplyResult,
  type Finding,
  type Host,
  type HostModule,
  type Step,
} from './host-module.js';

/** Kernel devices that are never a disk for an SDS, whatever their type says. */
const notDiskPattern = /^(zram|ram|fd)\d/;

export interface DiskReport {
  device: BlockDeviceRecord;
  partitions: BlockDeviceRecord[];
  /** Where the disk or its partitions are mounted. */
  mounts: string[];
  /** Signatures blkid -p found on the whole device (ext4, LVM2_member, gpt...). */
  signatures: string[];
  /** Why blkid could not tell (permission, missing); null when it could. */
  probeError: string | null;
  free: boolean;
  /** Why it is not free, or that it is. */
  verdict: string;
}

/** `blkid -p -o export`: TYPE= and PTTYPE= name what is on the device. */
export function parseBlkidExport(output: string): string[] {
  const signatures: string[] = [];
  for (const line of output.split('\n')) {
    const match = /^(TYPE|PTTYPE)=(.+)$/.exec(line.trim());
    if (match !== null) signatures.push(match[1] === 'PTTYPE' ? `${match[2]} partition table` : (match[2] as string));
  }
  return signatures;
}

async function probe(host: Host, devicePath: string): Promise<{ signatures: string[]; error: string | null }> {
  const blkid = await resolveTool(host, 'blkid');
  const result = await host.transport.run(blkid.command, ['-p', '-o', 'export', devicePath]);
  if (isNotFound(result)) return { signatures: [], error: 'blkid is not installed (util-linux)' };
  // blkid exits 2 both for "nothing found" and for a device it could not open; stderr tells.
  if (result.code === 2 && result.stderr.trim() === '') return { signatures: [], error: null };
  if (result.code === 0) return { signatures: parseBlkidExport(result.stdout), error: null };
  if (result.code === 8) return { signatures: ['ambivalent signatures'], error: null };
  return { signatures: [], error: `blkid -p ${devicePath}: ${lastLine(result.stderr) || `exit ${result.code}`}` };
}

export async function diskReports(host: Host): Promise<DiskReport[]> {
  const records = await (host.inventory ?? systeminformationInventory)();
  const disks = records.filter((record) => (record.type === 'disk' || record.type === 'loop') && record.sizeBytes > 0 && !notDiskPattern.test(record.name));
  const reports: DiskReport[] = [];
  for (const device of disks) {
    const partitions = records.filter((record) => record.type === 'part' && record.parent === device.name);
    const mounts = [device, ...partitions].flatMap((record) => (record.mountpoint === null ? [] : [`${record.path} on ${record.mountpoint}`]));
    const { signatures, error } = await probe(host, device.path);
    const reasons: string[] = [];
    if (/^nbd\d/.test(device.name)) reasons.push('an NBD device (an attached volume is not a disk for an SDS)');
    if (mounts.length > 0) reasons.push(`mounted: ${mounts.join(', ')}`);
    if (partitions.length > 0) reasons.push(`${partitions.length} partition(s): ${partitions.map((part) => `${part.name}${part.fsType === null ? '' : ` ${part.fsType}`}`).join(', ')}`);
    const found = [...new Set([...(device.fsType === null ? [] : [device.fsType]), ...signatures])];
    if (found.length > 0) reasons.push(`holds ${found.join(', ')}`);
    if (error !== null) reasons.push(`cannot probe: ${error}`);
    const free = reasons.length === 0;
    reports.push({ device, partitions, mounts, signatures: found, probeError: error, free, verdict: free ? 'free for an SDS' : reasons.join('; ') });
  }
  return reports;
}

function describe(report: DiskReport): string {
  const device = report.device;
  const kind = device.rotational === null ? device.type : device.rotational ? 'rotational' : 'solid-state';
  return `${device.path}  ${formatBytes(device.sizeBytes)}  ${kind}${device.model === null ? '' : `  ${device.model}`}: ${report.verdict}`;
}

/** The wipe target's report, refusing anything but an unmounted disk of this host. */
function wipeTarget(reports: readonly DiskReport[], devicePath: string): DiskReport {
  const report = reports.find((entry) => entry.device.path === devicePath);
  if (report === undefined) {
    throw new HostModuleError('MB_ERR_WIPE_REFUSED', `--yes-wipe ${devicePath}: not a disk of this host (disks: ${reports.map((entry) => entry.device.path).join(', ') || 'none'})`);
  }
  if (report.mounts.length > 0) throw new HostModuleError('MB_ERR_WIPE_REFUSED', `--yes-wipe ${devicePath}: refused, it is mounted (${report.mounts.join(', ')})`);
  if (/^nbd\d/.test(report.device.name)) throw new HostModuleError('MB_ERR_WIPE_REFUSED', `--yes-wipe ${devicePath}: refused, an NBD device is a volume, not a disk`);
  return report;
}

export const disksModule: HostModule = {
  name: 'disks',
  description: 'disks of this host and which are free for an SDS; wipes one with --yes-wipe DEVICE',

  async check(host: Host): Promise<Finding> {
    const reports = await diskReports(host);
    const free = reports.filter((report) => report.free).map((report) => report.device.path);
    const details = reports.map(describe);
    let ok = true;
    const wipe = host.options.wipeDevice;
    if (wipe !== undefined) {
      const target = wipeTarget(reports, wipe);
      if (!target.free) {
        ok = false;
        details.push(`--yes-wipe ${wipe}: apply removes ${target.signatures.join(', ') || 'its partition table'} (wipefs --all)`);
      }
    }
    return {
      module: 'disks',
      applicable: true,
      ok,
      summary: `${reports.length} disk(s), ${free.length === 0 ? 'none free for an SDS' : `free for an SDS: ${free.join(', ')}`}`,
      details,
    };
  },

  async plan(host: Host): Promise<Step[]> {
    const wipe = host.options.wipeDevice;
    if (wipe === undefined) return [];
    const target = wipeTarget(await diskReports(host), wipe);
    if (target.probeError !== null) throw new HostModuleError('MB_ERR_WIPE_REFUSED', `--yes-wipe ${wipe}: ${target.probeError}`);
    if (target.signatures.length === 0 && target.partitions.length === 0) return [];
    const wipefs = await resolveTool(host, 'wipefs');
    return [commandStep([wipefs.command, '--all', wipe], `erase ${target.signatures.join(', ') || 'the partition table'} from ${wipe} (--yes-wipe)`)];
  },

  async apply(host: Host, steps: readonly Step[]): Promise<ApplyResult> {
    return applySteps(host, disksModule, steps);
  },
};
