// What is already on a device, read from its first bytes. An SDS refuses a device that
// carries a partition table, a filesystem, an LVM label, a RAID member, swap or another
// cluster's superblock unless forced ("previous formatting must be removed first"), and
// says exactly what it found. Pure: the caller reads probeHeadBytes from the device.
//
// Signatures (offsets in bytes from the start of the device):
//   meshblock   'MESHBLK1' at 0
//   GPT         'EFI PART' at 512 (512-byte sectors) or 4096 (4 KiB sectors)
//   MBR/DOS     0x55 0xAA at 510, with a partition entry at 446..509
//   ext2/3/4    0xEF53 (little-endian) at 1080; features tell ext2, ext3, ext4
//   XFS         'XFSB' at 0
//   btrfs       '_BHRfS_M' at 65600
//   LVM2 PV     'LABELONE' at 0, 512, 1024 or 1536, with 'LVM2 001' 24 bytes later
//   swap        'SWAPSPACE2' or 'SWAP-SPACE' at 4086
//   Linux RAID  0xa92b4efc (little-endian) at 0 (md 1.1) or 4096 (md 1.2)

import { KiB } from '../common/units.js';
import { decodeSuperblock, hasSuperblockMagic, type Superblock } from './superblock.js';

export const probeHeadBytes = 128 * KiB;

export type FoundKind = 'meshblock' | 'gpt' | 'mbr' | 'ext2' | 'ext3' | 'ext4' | 'xfs' | 'btrfs' | 'lvm2' | 'swap' | 'mdraid';

export interface Found {
  kind: FoundKind;
  offsetBytes: number;
  /** For people: what it is, with its label or UUID where the format has one. */
  description: string;
  /** For kind 'meshblock' with an intact superblock. */
  superblock?: Superblock;
}

function ascii(head: Buffer, at: number, text: string): boolean {
  return head.length >= at + text.length && head.toString('latin1', at, at + text.length) === text;
}

function uuid(bytes: Buffer): string {
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

export function probeFormats(head: Buffer): Found[] {
  const found: Found[] = [];

  if (hasSuperblockMagic(head)) {
    try {
      const superblock = decodeSuperblock(head);
      found.push({
        kind: 'meshblock',
        offsetBytes: 0,
        description: `a meshblock device of cluster ${superblock.clusterId} (SDS '${superblock.sdsName}' ${superblock.sdsId}, device ${superblock.deviceId})`,
        superblock,
      });
    } catch (err) {
      found.push({ kind: 'meshblock', offsetBytes: 0, description: `a damaged meshblock superblock (${(err as Error).message})` });
    }
  }
  for (const at of [512, 4096]) {
    if (ascii(head, at, 'EFI PART')) found.push({ kind: 'gpt', offsetBytes: at, description: 'a GPT partition table' });
  }
  if (head.length >= 512 && head[510] === 0x55 && head[511] === 0xaa && !found.some((f) => f.kind === 'gpt')) {
    const hasPartition = [0, 1, 2, 3].some((index) => head[446 + index * 16 + 4] !== 0);
    found.push({
      kind: 'mbr',
      offsetBytes: 510,
      description: hasPartition ? 'a DOS/MBR partition table' : 'a DOS/MBR boot sector',
    });
  }
  if (head.length >= 1024 + 136 && head.readUInt16LE(1080) === 0xef53) {
    const compat = head.readUInt32LE(1024 + 92);
    const incompat = head.readUInt32LE(1024 + 96);
    const kind: FoundKind = (incompat & 0x40) !== 0 ? 'ext4' : (compat & 0x4) !== 0 ? 'ext3' : 'ext2';
    const label = head.toString('utf8', 1024 + 120, 1024 + 136).replace(/\0.*$/s, '');
    found.push({
      kind,
      offsetBytes: 1024,
      description: `an ${kind} filesystem (UUID ${uuid(head.subarray(1024 + 104, 1024 + 120))}${label ? `, label '${label}'` : ''})`,
    });
  }
  if (ascii(head, 0, 'XFSB')) {
    found.push({ kind: 'xfs', offsetBytes: 0, description: `an XFS filesystem (UUID ${uuid(head.subarray(32, 48))})` });
  }
  if (ascii(head, 65600, '_BHRfS_M')) {
    found.push({ kind: 'btrfs', offsetBytes: 65536, description: 'a btrfs filesystem' });
  }
  for (const at of [0, 512, 1024, 1536]) {
    if (ascii(head, at, 'LABELONE') && ascii(head, at + 24, 'LVM2 001')) {
      const pvUuid = head.toString('latin1', at + 32, at + 64);
      found.push({ kind: 'lvm2', offsetBytes: at, description: `an LVM2 physical volume (PV UUID ${pvUuid})` });
    }
  }
  if (ascii(head, 4086, 'SWAPSPACE2') || ascii(head, 4086, 'SWAP-SPACE')) {
    found.push({ kind: 'swap', offsetBytes: 4086, description: 'Linux swap space' });
  }
  for (const at of [0, 4096]) {
    if (head.length >= at + 4 && head.readUInt32LE(at) === 0xa92b4efc) {
      found.push({ kind: 'mdraid', offsetBytes: at, description: `a Linux RAID (md) member superblock` });
    }
  }
  return found;
}
