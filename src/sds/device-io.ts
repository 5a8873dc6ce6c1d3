// The calls the chunk store makes on a device, behind one interface: the real one
// (positional reads and writes through DirectIo on an O_DIRECT descriptor, or through
// PositionalIo and the page cache; punch or zeroout; fdatasync), and in
// tests a device that simulates a power cut (test/helpers/power-loss.ts), which keeps only
// what a sync made durable and any subset of the rest, torn at 512-byte sectors.
//
// Errors are the system's (a SystemCallError or an errno-coded Error): the chunk store
// decides which of them mean the device has failed.

import * as fs from 'node:fs';
import type { Logger } from 'pino';
import { AlignedBuffers, isAligned } from '../common/aligned-buffers.js';
import { InvalidArgumentError, SystemCallError } from '../common/errors.js';
import { aioDepth } from '../common/limits.js';
import * as native from '../common/native.js';
import { PositionalIo, ShortReadError } from '../common/positional-io.js';
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
  /** Lets go of what the IO holds besides the descriptors (an AIO ring); nothing may be in flight. */
  close?(): void;
}

/** Makes the DeviceIo for an opened device: the real one unless a test gives its own. */
export type DeviceIoFactory = (opened: OpenedDevice, log: Logger) => DeviceIo;

/** The real device IO: direct where the device was opened for it (opened.directFd), else through the page cache. */
export const nativeDeviceIo: DeviceIoFactory = (opened, log) => {
  const fd = opened.directFd ?? opened.fd;
  const positional =
    opened.directFd === null
      ? new PositionalIo(fd, { path: opened.path, isBlockDevice: opened.isBlockDevice, log })
      : new DirectIo(opened.directFd, opened.path, opened.sectorBytes, { log });
  const writeAt = (bytes: Buffer, positionBytes: number): Promise<void> => positional.write(bytes, positionBytes);
  let punchHoles = !opened.isBlockDevice;
  // BLKZEROOUT takes whole logical sectors only: part sectors at the ends are written as zeros.
  const logicalSectorBytes = opened.isBlockDevice ? Math.max(512, native.logicalBlockSize(opened.fd)) : 512;
  const zero = async (positionBytes: number, lengthBytes: number): Promise<void> => {
    if (opened.isBlockDevice) {
      const first = alignUp(positionBytes, logicalSectorBytes);
      const end = alignDown(positionBytes + lengthBytes, logicalSectorBytes);
      if (first >= end) return writeZeros(writeAt, positionBytes, lengthBytes);
      if (first > positionBytes) await writeZeros(writeAt, positionBytes, first - positionBytes);
      if (end < positionBytes + lengthBytes) await writeZeros(writeAt, end, positionBytes + lengthBytes - end);
      return native.zeroout(fd, first, end - first);
    }
    if (punchHoles) {
      try {
        return await native.fallocate(fd, native.FALLOC_FL_PUNCH_HOLE | native.FALLOC_FL_KEEP_SIZE, positionBytes, lengthBytes);
      } catch (err) {
        if (!isUnsupported(err)) throw err;
        punchHoles = false;
        log.info({ path: opened.path }, 'the filesystem cannot punch holes (ramfs?): ranges are zeroed by writing zeros');
      }
    }
    await writeZeros(writeAt, positionBytes, lengthBytes);
  };
  return {
    read: (target, positionBytes) => positional.read(target, positionBytes),
    write: (source, positionBytes) => positional.write(source, positionBytes),
    zero,
    discard: (positionBytes, lengthBytes) => {
      if (!opened.isBlockDevice) return zero(positionBytes, lengthBytes);
      return native.discard(fd, positionBytes, lengthBytes).catch((err: unknown) => {
        log.debug({ err, path: opened.path }, 'discard not supported; the range keeps its old bytes');
      });
    },
    sync: () => new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve()))),
    close: () => {
      if (positional instanceof DirectIo) positional.close();
    },
  };
};

/** How direct IO is submitted: Linux AIO completed on the event loop, or libuv's thread pool. */
export type DirectIoEngine = 'aio' | 'threads';

/**
 * The engine for new DirectIo instances: AIO unless MESHBLOCK_DIRECT_IO_ENGINE=threads (for
 * the benchmark that compares them, docs/direct-io.md), or where the kernel gives no AIO
 * context (then the thread pool, logged).
 */
export function directIoEngineFromEnv(value: string | undefined): DirectIoEngine {
  if (value === undefined || value === '' || value === 'aio') return 'aio';
  if (value === 'threads') return 'threads';
  throw new InvalidArgumentError('MESHBLOCK_DIRECT_IO_ENGINE', `'${value}' is not one of aio, threads`);
}

/** One pool for every device of the process: its idle memory is bounded once, not per device. */
const alignedBuffers = new AlignedBuffers();

/**
 * Positional IO on an O_DIRECT descriptor, never blocking the event loop on the device:
 * submitted with Linux AIO and completed on the event loop, or on libuv's thread pool where
 * AIO would block or cannot be had (transfer()). Direct IO wants the device position,
 * the length and the memory aligned: memory that is not goes through an aligned bounce
 * buffer (a copy costs far less than the device IO), and a range that is not whole sectors
 * is widened to whole sectors, its edge sectors read first and written back whole. Such a
 * read-modify-write holds its edge sectors meanwhile, so two of them on one sector (two
 * slots' metadata sharing it on a device formatted before direct IO) never lose each
 * other's bytes. The chunk store's own IO on a device formatted for direct IO is whole
 * sectors (device.ts pads its metadata), so that path is the exception.
 */
export class DirectIo {
  private readonly buffers = alignedBuffers;
  /** Read-modify-writes in flight, by sector: the next one on a sector waits for the last. */
  private readonly sectorLocks = new Map<number, Promise<void>>();

  /** Linux AIO where it can be had (aioDepth IOs in flight on the ring, more on the thread pool); null: the thread pool only. */
  private ring: native.AioRing | null = null;
  /** IOs that went to the thread pool because AIO would have blocked or was full (for the log and the tests). */
  fallbacks = 0;

  constructor(
    private readonly fd: number,
    private readonly path: string,
    private readonly sectorBytes: number,
    options: { engine?: DirectIoEngine; log?: Logger } = {},
  ) {
    const engine = options.engine ?? directIoEngineFromEnv(process.env['MESHBLOCK_DIRECT_IO_ENGINE']);
    if (engine === 'aio') {
      try {
        this.ring = native.aioOpen(aioDepth);
      } catch (err) {
        options.log?.warn({ err, path }, 'no Linux AIO context (fs.aio-max-nr reached?): direct IO runs on the thread pool');
      }
    }
  }

  /** Which engine this device's IO uses. */
  get engine(): DirectIoEngine {
    return this.ring === null ? 'threads' : 'aio';
  }

  /** Frees the AIO ring; nothing may be in flight (the chunk store closes devices only after their IO). */
  close(): void {
    if (this.ring === null) return;
    native.aioClose(this.ring);
    this.ring = null;
  }

  async read(target: Buffer, positionBytes: number): Promise<void> {
    const first = alignDown(positionBytes, this.sectorBytes);
    const end = alignUp(positionBytes + target.length, this.sectorBytes);
    if (first === positionBytes && end === positionBytes + target.length && isAligned(target)) return this.transfer('read', target, first);
    const bounce = this.buffers.acquire(end - first);
    try {
      await this.transfer('read', bounce, first);
      bounce.copy(target, 0, positionBytes - first, positionBytes - first + target.length);
    } finally {
      this.buffers.release(bounce);
    }
  }

  async write(source: Buffer, positionBytes: number): Promise<void> {
    const first = alignDown(positionBytes, this.sectorBytes);
    const end = alignUp(positionBytes + source.length, this.sectorBytes);
    if (first === positionBytes && end === positionBytes + source.length) {
      if (isAligned(source)) return this.transfer('write', source, first);
      const bounce = this.buffers.acquire(source.length);
      try {
        source.copy(bounce);
        return await this.transfer('write', bounce, first);
      } finally {
        this.buffers.release(bounce);
      }
    }
    const edges = [first / this.sectorBytes, end / this.sectorBytes - 1];
    const unlock = await this.lockSectors(edges);
    const bounce = this.buffers.acquire(end - first);
    try {
      const sector = this.sectorBytes;
      if (first !== positionBytes) await this.transfer('read', bounce.subarray(0, sector), first);
      if (end !== positionBytes + source.length && (end - sector !== first || first === positionBytes)) {
        await this.transfer('read', bounce.subarray(end - first - sector), end - sector);
      }
      source.copy(bounce, positionBytes - first);
      await this.transfer('write', bounce, first);
    } finally {
      this.buffers.release(bounce);
      unlock();
    }
  }

  /** Waits for the read-modify-writes in flight on `sectors`, then holds them until the returned call. */
  private async lockSectors(sectors: readonly number[]): Promise<() => void> {
    const unique = [...new Set(sectors)];
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const before = unique.map((sector) => this.sectorLocks.get(sector) ?? Promise.resolve());
    for (const sector of unique) this.sectorLocks.set(sector, held);
    await Promise.all(before);
    return () => {
      for (const sector of unique) if (this.sectorLocks.get(sector) === held) this.sectorLocks.delete(sector);
      release();
    };
  }

  /**
   * The whole of `buffer` (aligned memory, whole sectors) read or written at `positionBytes`:
   * through the AIO ring, or the thread pool for what the ring cannot take (full) or would
   * have blocked on (EAGAIN under RWF_NOWAIT: a filesystem allocating, a device queue full).
   */
  private transfer(kind: 'read' | 'write', buffer: Buffer, positionBytes: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const step = (done: number): void => {
        const moved = (bytes: number): void => {
          if (bytes === 0) return reject(new ShortReadError(`${this.path}: short ${kind} at ${positionBytes + done}: end of device`));
          // A partial direct transfer ends on a sector boundary; the rest goes on from there.
          const next = done + bytes;
          if (next === buffer.length) resolve();
          else step(next);
        };
        const threads = (): void => {
          const callback = (err: NodeJS.ErrnoException | null, bytes: number): void => (err ? reject(err) : moved(bytes));
          if (kind === 'read') fs.read(this.fd, buffer, done, buffer.length - done, positionBytes + done, callback);
          else fs.write(this.fd, buffer, done, buffer.length - done, positionBytes + done, callback);
        };
        if (this.ring === null) return threads();
        const submitted = native.aioSubmit(this.ring, kind === 'write', this.fd, done === 0 ? buffer : buffer.subarray(done), positionBytes + done, (result) => {
          if (result >= 0) return moved(result);
          if (result === -native.EAGAIN) {
            this.fallbacks += 1;
            return threads();
          }
          const code = native.errnoCode(-result);
          reject(new SystemCallError(code, `${kind} of ${this.path} at ${positionBytes + done} failed: ${code}`));
        });
        if (submitted === 0) return;
        this.fallbacks += 1;
        threads();
      };
      step(0);
    });
  }
}

/** Writes zeros over a range, a MiB at a time, where the device has no cheaper way. */
export async function writeZeros(write: (bytes: Buffer, positionBytes: number) => Promise<void>, positionBytes: number, lengthBytes: number): Promise<void> {
  const zeros = Buffer.alloc(Math.min(lengthBytes, zeroWriteBytes));
  for (let done = 0; done < lengthBytes; done += zeros.length) {
    await write(zeros.subarray(0, Math.min(zeros.length, lengthBytes - done)), positionBytes + done);
  }
}

const zeroWriteBytes = 1024 * 1024;

/** The system call is not supported here (EOPNOTSUPP; ENOTSUP is the same number on Linux). */
export function isUnsupported(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return code === 'EOPNOTSUPP' || code === 'ENOTSUP';
}

function alignDown(value: number, alignment: number): number {
  return Math.floor(value / alignment) * alignment;
}

function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}
