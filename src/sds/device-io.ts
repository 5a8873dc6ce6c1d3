// The five calls the chunk store makes on a device, behind one interface: the real one
// (positional reads and writes through PositionalIo, punch or zeroout, fdatasync), and in
// tests a device that simulates a power cut (test/helpers/power-loss.ts), which keeps only
// what a sync made durable and any subset of the rest, torn at 512-byte sectors.
//
// Errors are the system's (a SystemCallError or an errno-coded Error): the chunk store
// decides which of them mean the device has failed.

import * as fs from 'node:fs';
import type { Logger } from 'pino';
import * as native from '../common/native.js';
import { PositionalIo } from '../common/positional-io.js';
import type { OpenedDevice } from './device.js';

export interface DeviceIo {
  /** Fills `target` from `positionBytes`; a read past the end rejects with ShortReadError. */
  read(target: Buffer, positionBytes: number): Promise<void>;
  write(source: Buffer, positionBytes: number): Promise<void>;
  /** The range reads as zeros afterwards (a punched hole in a file, BLKZEROOUT on a device). */
  zero(positionBytes: number, lengthBytes: number): Promise<void>;
  /**
   * Gives the range's space back where the device can: a punched hole in a file (which
   * reads as zeros), a discard on a block device (which may not). Never fails for lack of
   * support; callers that need zeros call zero().
   */
  discard(positionBytes: number, lengthBytes: number): Promise<void>;
  /** Everything written before the call is durable when it resolves (fdatasync). */
  sync(): Promise<void>;
}

/** Makes the DeviceIo for an opened device: the real one unless a test gives its own. */
export type DeviceIoFactory = (opened: OpenedDevice, log: Logger) => DeviceIo;

export const nativeDeviceIo: DeviceIoFactory = (opened, log) => {
  const io = new PositionalIo(opened.fd, { path: opened.path, isBlockDevice: opened.isBlockDevice, log });
  const fd = opened.fd;
  const zero = (positionBytes: number, lengthBytes: number): Promise<void> =>
    opened.isBlockDevice ? native.zeroout(fd, positionBytes, lengthBytes) : native.fallocate(fd, native.FALLOC_FL_PUNCH_HOLE | native.FALLOC_FL_KEEP_SIZE, positionBytes, lengthBytes);
  return {
    read: (target, positionBytes) => io.read(target, positionBytes),
    write: (source, positionBytes) => io.write(source, positionBytes),
    zero,
    discard: (positionBytes, lengthBytes) => {
      if (!opened.isBlockDevice) return zero(positionBytes, lengthBytes);
      return native.discard(fd, positionBytes, lengthBytes).catch((err: unknown) => {
        log.debug({ err, path: opened.path }, 'discard not supported; the range keeps its old bytes');
      });
    },
    sync: () => new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve()))),
  };
};
