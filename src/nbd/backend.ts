// The one seam between the NBD protocol core and whatever stores the bytes (after
// nbdkit's `struct backend`). The protocol core validates every request before calling
// a backend, so a backend may assert, not check, that ranges are inside the export.
// Wrappers (read-only, QoS, statistics) are backends that call the next one.

import { MeshblockError, type ErrnoCode } from '../common/errors.js';

export interface BackendCapabilities {
  readOnly: boolean;
  /** FLUSH does something (write-back cache to make durable). */
  flush: boolean;
  /** FUA on writes, trims and zeroes. */
  fua: boolean;
  trim: boolean;
  zero: boolean;
  /** WRITE_ZEROES with FAST_ZERO can be answered quickly or refused with ENOTSUP. */
  fastZero: boolean;
  cache: boolean;
  /** Allocation status for base:allocation; without it every range reads as data. */
  extents: boolean;
  /** Flushes and FUA on one connection cover writes made on every connection. */
  multiConn: boolean;
  rotational: boolean;
}

export interface BlockSizeLimits {
  minimumBytes: number;
  preferredBytes: number;
  maximumBytes: number;
}

export interface Extent {
  lengthBytes: number;
  /** Not allocated in the backing storage. */
  hole: boolean;
  /** Reads as zeroes. */
  zero: boolean;
}

export interface WriteOptions {
  /** Persist before the promise resolves. */
  fua: boolean;
}

export interface ZeroOptions extends WriteOptions {
  /** The range may be deallocated (NBD_CMD_FLAG_NO_HOLE not set). */
  mayTrim: boolean;
  /** Refuse with BackendError('ENOTSUP') instead of doing slow work (NBD_CMD_FLAG_FAST_ZERO). */
  fastOnly: boolean;
}

export interface BlockBackend {
  readonly sizeBytes: number;
  readonly capabilities: Readonly<BackendCapabilities>;
  readonly blockSize: Readonly<BlockSizeLimits>;
  readonly description: string;

  /** Fills `target` (whose length is the request length) with the bytes at `offsetBytes`. */
  read(offsetBytes: number, target: Buffer): Promise<void>;
  write(offsetBytes: number, source: Buffer, options: WriteOptions): Promise<void>;
  /** Every write completed before this call is durable when it resolves. */
  flush(): Promise<void>;
  trim(offsetBytes: number, lengthBytes: number, options: WriteOptions): Promise<void>;
  zero(offsetBytes: number, lengthBytes: number, options: ZeroOptions): Promise<void>;
  /** A hint to prefetch. */
  cache(offsetBytes: number, lengthBytes: number): Promise<void>;
  /** Consecutive extents starting at `offsetBytes`, covering at most `lengthBytes`, at least one. */
  extents(offsetBytes: number, lengthBytes: number, extentCountMax: number): Promise<Extent[]>;
  close(): Promise<void>;
}

/**
 * A backend failure carrying a POSIX error name (`EIO`, `ENOSPC`, `ENOTSUP`, ...). The
 * protocol core maps it to an NBD error in one place (`nbdErrnoOf`).
 */
export class BackendError extends MeshblockError {
  declare readonly code: ErrnoCode;

  constructor(code: ErrnoCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
