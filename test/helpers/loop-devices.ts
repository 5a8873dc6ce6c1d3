// Loop devices for the direct-IO tests: real block devices (`losetup`) over sparse files on
// this machine's disk, with the loop driver's own direct IO on (`--direct-io=on`), so that
// an SDS opening one with O_DIRECT meets what it meets on a disk: no page cache anywhere
// below it, and the device's logical sector size (512, or 4096 with `sectorBytes`) as the
// alignment every IO must keep.
//
// Every device is detached in the test's teardown, registered as soon as it is attached, so
// a test that fails half way leaves nothing attached. tap runs teardowns last-registered
// first: attach the devices before starting the SDSs on them, and the SDSs are killed before
// their devices are detached (`losetup -d` on a device still open only marks it for
// detaching at its last close, which the retry below waits out).
//
// Tests skip only where losetup is impossible: not root (outside CI). As root, or with CI
// set, any failure is the test's failure: CI runs as root and must run these tests.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { sparseFile } from './files.js';
import { run, type TeardownHost } from './processes.js';

export interface LoopDevice {
  /** /dev/loopN */
  device: string;
  /** The sparse file behind it. */
  backingFile: string;
  /** Its logical sector size: the alignment O_DIRECT IO on it must keep. */
  sectorBytes: number;
}

export type LoopSectorBytes = 512 | 4096;

/** Why loop devices cannot be made here, or null when they can (and a failure is a test failure). */
export function loopDevicesUnavailable(): string | null {
  if (process.getuid?.() === 0 || process.env['CI'] !== undefined) return null;
  return 'loop devices need root (losetup); CI runs these tests as root';
}

const detachAttemptsMax = 50;
const detachRetryMs = 100;

/**
 * `count` loop devices over sparse files `${namePrefix}N.img` (N from 1) of `sizeBytes` in
 * `dir`, which must be on a disk filesystem (tmpfs has no direct IO: the loop driver would
 * quietly run buffered, and the test would prove nothing). `sectorBytes` gives device N
 * the size sectorBytes[(N - 1) % length] (default 512 for all).
 */
export async function loopDevices(
  t: TeardownHost,
  dir: string,
  options: { count: number; sizeBytes: number; namePrefix?: string; sectorBytes?: LoopSectorBytes[] },
): Promise<LoopDevice[]> {
  const fsType = await run('findmnt', ['--noheadings', '--output', 'FSTYPE', '--target', dir]);
  if (fsType.code !== 0) throw new Error(`findmnt --target ${dir} failed: ${fsType.stderr.trim()}`);
  if (/^(tmpfs|ramfs)$/.test(fsType.stdout.trim())) throw new Error(`${dir} is on ${fsType.stdout.trim()}: loop devices with direct IO need backing files on a disk filesystem`);
  const sizes = options.sectorBytes ?? [512];
  const devices: LoopDevice[] = [];
  for (let index = 1; index <= options.count; index++) {
    const sectorBytes = sizes[(index - 1) % sizes.length] as LoopSectorBytes;
    const backingFile = sparseFile(dir, `${options.namePrefix ?? 'loop'}${index}.img`, options.sizeBytes);
    devices.push(await attach(t, backingFile, sectorBytes));
  }
  return devices;
}

async function attach(t: TeardownHost, backingFile: string, sectorBytes: LoopSectorBytes): Promise<LoopDevice> {
  const attached = await run('losetup', ['--find', '--show', '--direct-io=on', '--sector-size', String(sectorBytes), backingFile]);
  if (attached.code !== 0) throw new Error(`losetup --find --show --direct-io=on ${backingFile} failed: ${attached.stderr.trim()}`);
  const device = attached.stdout.trim();
  t.teardown(() => detach(device));
  // losetup may attach the device and still fail to switch direct IO on (it warns and goes
  // on): a test meant to exercise direct IO must know.
  const shown = await run('losetup', ['--noheadings', '--raw', '--output', 'DIO,LOG-SEC', device]);
  const [dio, logSec] = shown.stdout.trim().split(/\s+/);
  if (dio !== '1') throw new Error(`${device} over ${path.basename(backingFile)} has no direct IO (losetup DIO ${dio}): ${attached.stderr.trim()}`);
  if (Number(logSec) !== sectorBytes) throw new Error(`${device} has ${logSec}-byte sectors, asked ${sectorBytes}`);
  consumeStaleWritebackError(device);
  return { device, backingFile, sectorBytes };
}

/**
 * /dev/loopN outlives its attachments, and so does its page cache's writeback error: a test
 * whose loop device failed (sds-faults.test.ts fills a tmpfs under one) can leave an error
 * no one has seen, which Linux reports to the next opener's first fsync, on whatever file
 * is attached by then. One fsync here sees it, so that the SDS's first fdatasync does not
 * mark a healthy device failed.
 */
export function consumeStaleWritebackError(device: string): void {
  const fd = fs.openSync(device, 'r');
  try {
    fs.fsyncSync(fd);
  } catch {
    // The stale error, now seen.
  } finally {
    fs.closeSync(fd);
  }
}

async function detach(device: string): Promise<void> {
  let last = '';
  for (let attempt = 0; attempt < detachAttemptsMax; attempt++) {
    const detached = await run('losetup', ['--detach', device]);
    // Gone already (detached lazily at its last close): done.
    if (detached.code === 0 || /No such device/i.test(detached.stderr)) return;
    last = detached.stderr.trim();
    await new Promise((resolve) => setTimeout(resolve, detachRetryMs));
  }
  throw new Error(`losetup --detach ${device} failed ${detachAttemptsMax} times: ${last}`);
}
