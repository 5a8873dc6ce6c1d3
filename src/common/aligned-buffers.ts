// Memory for O_DIRECT: buffers whose address is a multiple of the memory page size, which
// is what direct IO asks of memory (4 KiB covers every device's logical block size). An
// ArrayBuffer's bytes never move, so an aligned view into one over-allocated by an alignment
// stays aligned; bufferAddressModulo (the addon) says where that view starts.
//
// Reused like BufferPool's (a fresh large ArrayBuffer is a fresh mmap, page faults and the
// collector's attention): free lists by power-of-two size, each kept at most
// alignedIdlePerClassMax long, so idle memory is bounded whatever the load was.

import { assert } from './assert.js';
import { alignedIdlePerClassMax } from './limits.js';
import * as native from './native.js';

/** The memory alignment of every buffer handed out. */
export const memoryAlignBytes = 4096;
const smallestClassBytes = 4096;

export class AlignedBuffers {
  private readonly free = new Map<number, Buffer[]>();
  private idleBytes = 0;

  /** An aligned buffer of exactly `bytes` (its capacity is the next power of two); release() it after its last use. */
  acquire(bytes: number): Buffer {
    const classBytes = classOf(bytes);
    const reused = this.free.get(classBytes)?.pop();
    if (reused !== undefined) {
      this.idleBytes -= classBytes;
      return reused.subarray(0, bytes);
    }
    return alignedBuffer(classBytes).subarray(0, bytes);
  }

  /** Gives back a buffer from acquire(); the caller must not touch it again. */
  release(buffer: Buffer): void {
    const capacity = buffer.buffer.byteLength - memoryAlignBytes;
    const classBytes = classOf(capacity);
    if (classBytes !== capacity) return;
    const list = this.free.get(classBytes) ?? [];
    if (list.length >= alignedIdlePerClassMax) return;
    list.push(Buffer.from(buffer.buffer, buffer.byteOffset, classBytes));
    this.free.set(classBytes, list);
    this.idleBytes += classBytes;
  }

  /** Bytes held in the free lists (for the SDS's memory report). */
  get idle(): number {
    return this.idleBytes;
  }
}

/** A new buffer of `bytes` at a memoryAlignBytes-aligned address. */
export function alignedBuffer(bytes: number): Buffer {
  const store = new ArrayBuffer(bytes + memoryAlignBytes);
  const whole = Buffer.from(store);
  const offset = (memoryAlignBytes - native.bufferAddressModulo(whole, memoryAlignBytes)) % memoryAlignBytes;
  const aligned = whole.subarray(offset, offset + bytes);
  assert(isAligned(aligned), 'an aligned view of an over-allocated ArrayBuffer');
  return aligned;
}

/** True when `buffer` starts at a memoryAlignBytes-aligned address. */
export function isAligned(buffer: Buffer): boolean {
  return native.bufferAddressModulo(buffer, memoryAlignBytes) === 0;
}

function classOf(bytes: number): number {
  let classBytes = smallestClassBytes;
  while (classBytes < bytes) classBytes *= 2;
  return classBytes;
}
