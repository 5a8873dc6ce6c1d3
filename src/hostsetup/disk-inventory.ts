// The host's block devices, for the disks module: name, size, rotational or not, model,
// filesystem, mount point, and which disk a partition is on.
//
// Two sources with one shape:
//   systeminformationInventory()  this machine, through the systeminformation package (the
//                                 project's library for hardware discovery; it runs lsblk)
//   lsblkInventory(transport)     any host a transport reaches, from `lsblk -P`: the
//                                 key="value" output, because CentOS 7 and XenServer 7 ship
//                                 util-linux 2.23, whose lsblk has no --json
// Neither sees a signature that udev has not recorded (no udev in a container, a disk written
// since); the disks module asks `blkid -p` for that.

import type * as Systeminformation from 'systeminformation';
import { lazyModule } from '../common/lazy-module.js';
import { HostModuleError, lastLine } from './host-module.js';
import type { HostTransport } from './host-transport.js';

/** Loaded by the commands that list a host's disks (src/common/lazy-module.ts). */
const systeminformation = lazyModule<typeof Systeminformation>('systeminformation');

export interface BlockDeviceRecord {
  /** The kernel's name: sda, sda1, nvme0n1p2, loop3. */
  name: string;
  /** /dev/NAME. */
  path: string;
  /** lsblk's TYPE: disk, part, loop, lvm, raid1, crypt, rom... */
  type: string;
  sizeBytes: number;
  /** Null when nothing was recorded. */
  fsType: string | null;
  mountpoint: string | null;
  /** Null when unknown (systeminformation says it for disks only). */
  rotational: boolean | null;
  model: string | null;
  /** The kernel name of the disk a partition is on; null for a whole disk. */
  parent: string | null;
}

function blankToNull(value: string | undefined | null): string | null {
  const trimmed = (value ?? '').trim();
  return trimmed === '' ? null : trimmed;
}

/** The disk a partition named `name` is on: sda1 -> sda, nvme0n1p2 -> nvme0n1, loop0p1 -> loop0. */
export function partitionParent(name: string, diskNames: readonly string[]): string | null {
  const candidates = diskNames.filter((disk) => name !== disk && name.startsWith(disk) && /^p?\d+$/.test(name.slice(disk.length)));
  // The longest match: nvme0n1p1 starts with nvme0n1, never with a shorter disk's name.
  return candidates.sort((left, right) => right.length - left.length)[0] ?? null;
}

export async function systeminformationInventory(): Promise<BlockDeviceRecord[]> {
  const devices = await systeminformation().blockDevices();
  const diskNames = devices.filter((device) => device.type === 'disk' || device.type === 'loop').map((device) => device.name);
  return devices.map((device) => ({
    name: device.name,
    path: `/dev/${device.name}`,
    type: device.type,
    sizeBytes: Number.isFinite(device.size) ? device.size : 0,
    fsType: blankToNull(device.fsType),
    mountpoint: blankToNull(device.mount),
    rotational: device.physical === 'HDD' ? true : device.physical === 'SSD' ? false : null,
    model: blankToNull(device.model),
    parent: device.type === 'part' ? partitionParent(device.name, diskNames) : null,
  }));
}

export const lsblkColumns = 'NAME,KNAME,PKNAME,TYPE,SIZE,FSTYPE,MOUNTPOINT,ROTA,MODEL';

/** lsblk -P escapes bytes outside printable ASCII (and quotes) as \xHH. */
function unescapeLsblk(value: string): string {
  return value.replace(/\\x([0-9a-fA-F]{2})/g, (_match, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}

/** Parses `lsblk -b -P -o ${lsblkColumns}` output. */
export function parseLsblkPairs(output: string): BlockDeviceRecord[] {
  const records: BlockDeviceRecord[] = [];
  for (const line of output.split('\n')) {
    if (line.trim() === '') continue;
    const fields = new Map<string, string>();
    for (const match of line.matchAll(/([A-Z:-]+)="([^"]*)"/g)) fields.set(match[1] as string, unescapeLsblk(match[2] as string));
    const kernelName = fields.get('KNAME') ?? fields.get('NAME') ?? '';
    if (kernelName === '') throw new HostModuleError('MB_ERR_HOST_QUERY', `lsblk: cannot read '${line}'`);
    const type = fields.get('TYPE') ?? '';
    const rota = fields.get('ROTA');
    records.push({
      name: kernelName,
      path: `/dev/${kernelName}`,
      type,
      sizeBytes: Number(fields.get('SIZE') ?? 0) || 0,
      fsType: blankToNull(fields.get('FSTYPE')),
      mountpoint: blankToNull(fields.get('MOUNTPOINT')),
      rotational: rota === '1' ? true : rota === '0' ? false : null,
      model: blankToNull(fields.get('MODEL')),
      parent: type === 'part' ? blankToNull(fields.get('PKNAME')) : null,
    });
  }
  return records;
}

export async function lsblkInventory(transport: HostTransport): Promise<BlockDeviceRecord[]> {
  const result = await transport.run('lsblk', ['-b', '-P', '-o', lsblkColumns]);
  if (result.code !== 0) throw new HostModuleError('MB_ERR_HOST_QUERY', `lsblk failed (exit ${result.code}): ${lastLine(result.stderr) || 'no output'}`);
  return parseLsblkPairs(result.stdout);
}
