// A BlockBackend over a regular file or a block device, one shared file descriptor for
// every connection: FLUSH (fdatasync) on any connection therefore covers writes made on
// all of them, which is what CAN_MULTI_CONN promises.
//
// TRIM punches holes in files (BLKDISCARD on devices), WRITE_ZEROES punches or zeroes
// ranges (BLKZEROOUT on devices), and allocation status comes from SEEK_DATA/SEEK_HOLE.

import * as fs from 'node:fs';
import type { Logger } from 'pino';
import { MeshblockError, SystemCallError } from '../common/errors.js';
import { nbdBlockSizePreferredBytes, nbdRequestBytesMax } from '../common/limits.js';
import { MiB } from '../common/units.js';
import { BackendError, type BackendCapabilities, type BlockBackend, type BlockSizeLimits, type Extent, type WriteOptions, type ZeroOptions } from './backend.js';
import * as native from '../common/native.js';
import { PositionalIo, ShortReadError } from '../common/positional-io.js';

export interface FileBackendOptions {
  readOnly: boolean;
  /** Where the backend reports what an administrator should know (a write that stalled). */
  log?: Logger;
}


/** Zeroes are written in pieces of this size when the filesystem cannot punch or zero ranges. */
const zeroWriteBytes = 1 * MiB;
const zeroBuffer = Buffer.alloc(zeroWriteBytes);

export class FileOpenError extends MeshblockError {
  constructor(path: string, reason: string, cause?: unknown) {
    super('MB_ERR_FILE_OPEN', `${path}: ${reason}`, { cause });
  }
}

export class FileBackend implements BlockBackend {
  readonly capabilities: Readonly<BackendCapabilities>;
  readonly blockSize: Readonly<BlockSizeLimits> = {
    minimumBytes: 1,
    preferredBytes: nbdBlockSizePreferredBytes,
    maximumBytes: nbdRequestBytesMax,
  };
  readonly description: string;
  /** Cleared the first time the filesystem says it cannot fallocate that way. */
  private punchSupported = true;
  private zeroRangeSupported = true;
  /** Reads and writes, with the fast paths for small cached IO (common/positional-io.ts). */
  private readonly io: PositionalIo;
  private closed = false;

  private constructor(
    private readonly fd: number,
    readonly path: string,
    readonly sizeBytes: number,
    private readonly isBlockDevice: boolean,
    readOnly: boolean,
    log: Logger | undefined,
  ) {
    this.io = new PositionalIo(fd, { path, isBlockDevice, log });
    this.capabilities = {
      readOnly,
      flush: true,
      fua: true,
      trim: true,
      zero: true,
      fastZero: true,
      cache: true,
      extents: !isBlockDevice,
      multiConn: true,
      rotational: false,
    };
    this.description = `${isBlockDevice ? 'block device' : 'file'} ${path}`;
  }

  static async open(path: string, options: FileBackendOptions): Promise<FileBackend> {
    const flags = (options.readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR); // libuv adds O_CLOEXEC
    let fd: number;
    try {
      fd = await new Promise<number>((resolve, reject) => fs.open(path, flags, (err, opened) => (err ? reject(err) : resolve(opened))));
    } catch (err) {
      throw new FileOpenError(path, describeOpenError(err), err);
    }
    try {
      const stat = fs.fstatSync(fd);
      if (stat.isFile()) return new FileBackend(fd, path, stat.size, false, options.readOnly, options.log);
      if (stat.isBlockDevice()) return new FileBackend(fd, path, native.blockDeviceSizeBytes(fd), true, options.readOnly, options.log);
      throw new FileOpenError(path, 'not a regular file or a block device');
    } catch (err) {
      fs.closeSync(fd);
      throw err instanceof FileOpenError ? err : new FileOpenError(path, String(err), err);
    }
  }

  read(offsetBytes: number, target: Buffer): Promise<void> {
    return this.io.read(target, offsetBytes).catch((err: unknown) => {
      throw err instanceof ShortReadError ? new BackendError('EIO', err.message) : err;
    });
  }

  write(offsetBytes: number, source: Buffer, options: WriteOptions): Promise<void> {
    const written = this.io.write(source, offsetBytes);
    return options.fua ? written.then(() => this.flush()) : written;
  }

  flush(): Promise<void> {
    return new Promise((resolve, reject) => fs.fdatasync(this.fd, (err) => (err ? reject(err) : resolve())));
  }

  async trim(offsetBytes: number, lengthBytes: number, options: WriteOptions): Promise<void> {
    // TRIM is advisory: where the storage cannot discard, doing nothing is correct.
    if (lengthBytes === 0) return;
    if (this.isBlockDevice) {
      await native.discard(this.fd, offsetBytes, lengthBytes).catch(ignoreUnsupported);
    } else if (this.punchSupported) {
      await this.punch(offsetBytes, lengthBytes).catch(ignoreUnsupported);
    }
    if (options.fua) await this.flush();
  }

  async zero(offsetBytes: number, lengthBytes: number, options: ZeroOptions): Promise<void> {
    if (lengthBytes === 0) return;
    if (await this.zeroFast(offsetBytes, lengthBytes, options.mayTrim)) {
      if (options.fua) await this.flush();
      return;
    }
    if (options.fastOnly) throw new BackendError('ENOTSUP', 'zeroing this range would mean writing zeroes');
    if (this.isBlockDevice) {
      await native.zeroout(this.fd, offsetBytes, lengthBytes);
    } else {
      for (let done = 0; done < lengthBytes; done += zeroWriteBytes) {
        const pieceBytes = Math.min(zeroWriteBytes, lengthBytes - done);
        await this.write(offsetBytes + done, zeroBuffer.subarray(0, pieceBytes), { fua: false });
      }
    }
    if (options.fua) await this.flush();
  }

  /** Zeroes by deallocating or by fallocate(ZERO_RANGE). Resolves false if neither works here. */
  private async zeroFast(offsetBytes: number, lengthBytes: number, mayTrim: boolean): Promise<boolean> {
    if (this.isBlockDevice) return false;
    if (mayTrim && this.punchSupported) {
      if (await this.punch(offsetBytes, lengthBytes).then(() => true, unsupportedAsFalse)) return true;
    }
    if (this.zeroRangeSupported) {
      const done = await native
        .fallocate(this.fd, native.FALLOC_FL_ZERO_RANGE | native.FALLOC_FL_KEEP_SIZE, offsetBytes, lengthBytes)
        .then(() => true, unsupportedAsFalse);
      if (done) return true;
      this.zeroRangeSupported = false;
    }
    return false;
  }

  private punch(offsetBytes: number, lengthBytes: number): Promise<void> {
    return native
      .fallocate(this.fd, native.FALLOC_FL_PUNCH_HOLE | native.FALLOC_FL_KEEP_SIZE, offsetBytes, lengthBytes)
      .catch((err: unknown) => {
        if (isUnsupported(err)) this.punchSupported = false;
        throw err;
      });
  }

  async cache(offsetBytes: number, lengthBytes: number): Promise<void> {
    // Prefetch into the page cache by reading; the bytes themselves are dropped.
    const scratch = Buffer.allocUnsafe(Math.min(lengthBytes, zeroWriteBytes));
    for (let done = 0; done < lengthBytes; done += scratch.length) {
      await this.read(offsetBytes + done, scratch.subarray(0, Math.min(scratch.length, lengthBytes - done)));
    }
  }

  async extents(offsetBytes: number, lengthBytes: number, extentCountMax: number): Promise<Extent[]> {
    const endBytes = offsetBytes + lengthBytes;
    const extents: Extent[] = [];
    let position = offsetBytes;
    try {
      while (position < endBytes && extents.length < extentCountMax) {
        const dataAt = await native.seekData(this.fd, position);
        if (dataAt === null || dataAt > position) {
          const holeEnd = dataAt === null ? endBytes : Math.min(dataAt, endBytes);
          extents.push({ lengthBytes: holeEnd - position, hole: true, zero: true });
          position = holeEnd;
          continue;
        }
        const holeAt = await native.seekHole(this.fd, position);
        const dataEnd = holeAt === null ? endBytes : Math.min(holeAt, endBytes);
        extents.push({ lengthBytes: dataEnd - position, hole: false, zero: false });
        position = dataEnd;
      }
    } catch (err) {
      // A filesystem without SEEK_DATA: everything is data, which is always a true answer.
      if (!(err instanceof SystemCallError) || err.code !== 'EINVAL' || extents.length > 0) throw err;
      return [{ lengthBytes, hole: false, zero: false }];
    }
    return extents;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((resolve, reject) => fs.close(this.fd, (err) => (err ? reject(err) : resolve())));
  }
}

function isUnsupported(err: unknown): boolean {
  return err instanceof SystemCallError && (err.code === 'EOPNOTSUPP' || err.code === 'ENOTSUP' || err.code === 'ENOSYS');
}

function ignoreUnsupported(err: unknown): void {
  if (!isUnsupported(err)) throw err;
}

function unsupportedAsFalse(err: unknown): false {
  if (!isUnsupported(err)) throw err;
  return false;
}

function describeOpenError(err: unknown): string {
  const code = typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : '';
  switch (code) {
    case 'ENOENT':
      return 'no such file or device';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EROFS':
      return 'on a read-only filesystem (use --read-only)';
    case 'EISDIR':
      return 'is a directory, not a file or block device';
    default:
      return err instanceof Error ? err.message : String(err);
  }
}
