// Large request and reply buffers are reused instead of allocated per request. A fresh
// 1 MiB Buffer is a fresh mmap: the server pays its page faults on first touch and the
// garbage collector's attention afterwards, which at 1 MiB sequential IO was most of the
// CPU we spent. Small buffers come from V8's own allocator, which handles them well.
//
// Ownership is explicit: whoever acquired a buffer releases it exactly once, after the
// last reader (the socket, for a reply; the backend, for a WRITE payload) is done with it.

import { assert } from '../common/assert.js';
import { nbdRequestBytesMax } from '../common/limits.js';
import { KiB, MiB } from '../common/units.js';

/** Buffers smaller than this are not pooled. */
export const pooledBytesMin = 64 * KiB;
/** Headroom for a reply header in front of the largest request's data. */
const headerRoomBytes = 64;
/** Idle pooled memory kept per size class; more is returned to the allocator. */
const idleBytesPerClassMax = 64 * MiB;

export class BufferPool {
  /** Free lists by size class: index i holds ArrayBuffers of pooledBytesMin << i bytes. */
  private readonly free: ArrayBuffer[][] = [];

  constructor() {
    for (let bytes = pooledBytesMin; bytes < nbdRequestBytesMax + headerRoomBytes; bytes *= 2) this.free.push([]);
    this.free.push([]);
  }

  /** True when `bytes` is worth pooling; smaller buffers should be plain allocations. */
  static pooled(bytes: number): boolean {
    return bytes >= pooledBytesMin;
  }

  acquire(bytes: number): Buffer {
    const classIndex = this.classOf(bytes);
    const store = this.free[classIndex]?.pop() ?? new ArrayBuffer(pooledBytesMin << classIndex);
    return Buffer.from(store, 0, bytes);
  }

  release(buffer: Buffer): void {
    const store = buffer.buffer;
    assert(store instanceof ArrayBuffer && buffer.byteOffset === 0, 'released a buffer the pool did not give out');
    const classIndex = Math.log2(store.byteLength / pooledBytesMin);
    const list = this.free[classIndex];
    assert(list !== undefined, `released a buffer of ${store.byteLength} bytes, a size the pool does not make`);
    if ((list.length + 1) * store.byteLength <= idleBytesPerClassMax) list.push(store);
  }

  private classOf(bytes: number): number {
    assert(bytes >= pooledBytesMin && bytes <= nbdRequestBytesMax + headerRoomBytes, `no pool class for ${bytes} bytes`);
    return Math.ceil(Math.log2(bytes / pooledBytesMin));
  }
}
