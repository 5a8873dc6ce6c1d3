// Typed, promise-returning access to native/meshblock_native.c (built by node-gyp when the
// package is installed). Failures become SystemCallErrors named after their errno. The one
// module under src/common that touches the system: the binding itself holds no state and
// opens nothing, and both the NBD file backend and the SDS device layer need it.

import { createRequire } from 'node:module';
import { constants } from 'node:os';
import { SystemCallError, type ErrnoCode } from './errors.js';

type NativeCallback = (errno: number, result: number) => void;
type NativeOp = (fd: number, mode: number, offsetBytes: number, lengthBytes: number, callback: NativeCallback) => void;

// The addon's functions are plain C functions that never read `this`: typed as function
// properties, not methods, so they can be exported bare below.
interface NativeBinding {
  fallocate: NativeOp;
  lseek: NativeOp;
  discard: NativeOp;
  zeroout: NativeOp;
  blockDeviceSize: (fd: number) => number;
  preadNowait: (fd: number, target: Buffer, offsetBytes: number) => number;
  pwriteInline: (fd: number, source: Buffer, offsetBytes: number) => number;
  inlineWriteSlept: () => boolean;
  tuneMalloc: (mmapThresholdBytes: number, trimThresholdBytes: number) => boolean;
  adviseRandom: (fd: number) => number;
  crc32c: (bytes: Buffer, previous: number) => number;
  crc32cBlocks: (bytes: Buffer, blockBytes: number, seed: number, out: Uint32Array) => number;
  bufferAddressModulo: (buffer: Buffer, modulus: number) => number;
  aioOpen: (depth: number) => AioRing;
  aioSubmit: (ring: AioRing, write: boolean, fd: number, buffer: Buffer, offsetBytes: number, callback: (result: number) => void) => number;
  aioClose: (ring: AioRing) => void;
  logicalBlockSize: (fd: number) => number;
  EOPNOTSUPP: number;
  FALLOC_FL_KEEP_SIZE: number;
  FALLOC_FL_PUNCH_HOLE: number;
  FALLOC_FL_ZERO_RANGE: number;
  SEEK_DATA: number;
  SEEK_HOLE: number;
}

const require = createRequire(import.meta.url);
// dist/common/native.js -> <package>/build/Release
const binding = require('../../build/Release/meshblock_native.node') as NativeBinding;

const errnoNames = new Map<number, ErrnoCode>();
// Object.keys types its result string[]; these are the keys of constants.errno itself.
for (const name of Object.keys(constants.errno) as Array<keyof typeof constants.errno>) {
  const value = constants.errno[name];
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}
// Linux gives EOPNOTSUPP and ENOTSUP the same number; the NBD mapping knows both names.

function errnoName(errno: number): ErrnoCode {
  return errnoNames.get(errno) ?? `E#${errno}`;
}

function call(op: NativeOp, what: string, fd: number, mode: number, offsetBytes: number, lengthBytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    op(fd, mode, offsetBytes, lengthBytes, (errno, result) => {
      if (errno === 0) resolve(result);
      else reject(new SystemCallError(errnoName(errno), `${what} failed: ${errnoName(errno)}`));
    });
  });
}

export const FALLOC_FL_KEEP_SIZE = binding.FALLOC_FL_KEEP_SIZE;
export const FALLOC_FL_PUNCH_HOLE = binding.FALLOC_FL_PUNCH_HOLE;
export const FALLOC_FL_ZERO_RANGE = binding.FALLOC_FL_ZERO_RANGE;

export function fallocate(fd: number, mode: number, offsetBytes: number, lengthBytes: number): Promise<void> {
  return call(binding.fallocate, 'fallocate', fd, mode, offsetBytes, lengthBytes).then(() => undefined);
}

/** lseek(SEEK_DATA); resolves null past the last data (ENXIO). */
export function seekData(fd: number, offsetBytes: number): Promise<number | null> {
  return seekOrNull(binding.SEEK_DATA, 'lseek(SEEK_DATA)', fd, offsetBytes);
}

/** lseek(SEEK_HOLE); resolves null when the offset is at or past the end (ENXIO). */
export function seekHole(fd: number, offsetBytes: number): Promise<number | null> {
  return seekOrNull(binding.SEEK_HOLE, 'lseek(SEEK_HOLE)', fd, offsetBytes);
}

function seekOrNull(whence: number, what: string, fd: number, offsetBytes: number): Promise<number | null> {
  return call(binding.lseek, what, fd, whence, offsetBytes, 0).catch((err: unknown) => {
    if (err instanceof SystemCallError && err.code === 'ENXIO') return null;
    throw err;
  });
}

export function discard(fd: number, offsetBytes: number, lengthBytes: number): Promise<void> {
  return call(binding.discard, 'BLKDISCARD', fd, 0, offsetBytes, lengthBytes).then(() => undefined);
}

export function zeroout(fd: number, offsetBytes: number, lengthBytes: number): Promise<void> {
  return call(binding.zeroout, 'BLKZEROOUT', fd, 0, offsetBytes, lengthBytes).then(() => undefined);
}

export function blockDeviceSizeBytes(fd: number): number {
  return binding.blockDeviceSize(fd);
}

/**
 * preadv2(RWF_NOWAIT) on the calling thread: bytes read (short or 0 at end of file), or a
 * negative errno (-EAGAIN when the pages are not cached). See meshblock_native.c.
 */
export const preadNowait: (fd: number, target: Buffer, offsetBytes: number) => number = binding.preadNowait;
export const EOPNOTSUPP = binding.EOPNOTSUPP;

/**
 * pwrite on the calling thread: bytes written, or a negative errno. inlineWriteSlept() then
 * says whether that write blocked (this thread switched out voluntarily during it) rather
 * than being preempted. See meshblock_native.c.
 */
export const pwriteInline: (fd: number, source: Buffer, offsetBytes: number) => number = binding.pwriteInline;
export const inlineWriteSlept: () => boolean = binding.inlineWriteSlept;

/**
 * Sets glibc's mmap and trim thresholds (mallopt): freed blocks below them stay mapped for
 * reuse instead of costing page faults again. False where the C library is not glibc.
 */
export const tuneMalloc: (mmapThresholdBytes: number, trimThresholdBytes: number) => boolean = binding.tuneMalloc;

/** posix_fadvise(POSIX_FADV_RANDOM) on the whole file: no readahead. 0, or an errno. */
export const adviseRandom: (fd: number) => number = binding.adviseRandom;

/** CRC-32C in the addon (SSE4.2 where available); use common/crc32c.ts's crc32c(). */
export const nativeCrc32c: (bytes: Buffer, previous: number) => number = binding.crc32c;
/** The CRC-32C of each block of `bytes`, each from `seed`, into `out`; use common/crc32c.ts's crc32cBlocks(). */
export const nativeCrc32cBlocks: (bytes: Buffer, blockBytes: number, seed: number, out: Uint32Array) => number = binding.crc32cBlocks;

/** The buffer's address modulo `modulus` (a power of two): O_DIRECT's memory alignment check. */
export const bufferAddressModulo: (buffer: Buffer, modulus: number) => number = binding.bufferAddressModulo;

/** A block device's logical sector size (BLKSSZGET), or a negative errno (ENOTTY for a file). */
export const logicalBlockSize: (fd: number) => number = binding.logicalBlockSize;

/** A Linux AIO context completed on the event loop (meshblock_aio.c): opaque. */
export type AioRing = { readonly __aioRing: unique symbol };
export const EAGAIN = constants.errno.EAGAIN;

/** An AIO context for `depth` IOs in flight; throws (with .errno) where the kernel refuses one (aio-max-nr reached). */
export const aioOpen: (depth: number) => AioRing = binding.aioOpen;

/**
 * Submits one read or write: 0 when submitted (the callback then gets the bytes moved or a
 * negative errno, -EAGAIN when it would have blocked), or a negative errno when it was not
 * (-EAGAIN: the ring is full), and then the callback is never called.
 */
export const aioSubmit: (ring: AioRing, write: boolean, fd: number, buffer: Buffer, offsetBytes: number, callback: (result: number) => void) => number = binding.aioSubmit;

/** Closes a ring with nothing in flight (throws EBUSY otherwise). */
export const aioClose: (ring: AioRing) => void = binding.aioClose;

/** The errno name of a positive errno number (SystemCallError's code). */
export function errnoCode(errno: number): ErrnoCode {
  return errnoName(errno);
}
