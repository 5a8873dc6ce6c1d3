// Large request and reply buffers are reused instead of allocated per request. A fresh
// 1 MiB Buffer is a fresh mmap: the process pays its page faults on first touch and the
// garbage collector's attention afterwards (V8 answers external memory with full
// mark-compact collections), which at 1 MiB sequential IO was most of the CPU we spent.
// The same holds, more slowly, for 4 KiB payloads: Buffer.allocUnsafe cuts them from
// 128 KiB slabs that are external memory too, so they are pooled as well (from
// pooledBytesMin); only headers and arguments (tens of bytes) come from the slabs.
//
// Ownership is explicit: whoever acquired a buffer releases it exactly once, after its own
// last use. A socket write still in progress holds the buffer (hold/unhold around the
// write): a release made meanwhile takes effect when the last hold ends, so a buffer never
// goes back to the free list while the kernel may still be reading it.

import { assert } from './assert.js';
import { idleBytesPerClassMax, nbdRequestBytesMax, pooledBytesMin } from './limits.js';

/** Headroom for a reply header (or wire IO arguments) in front of the largest request's data. */
const headerRoomBytes = 64;
/** The largest buffer the pool makes. */
export const pooledBytesMax = nbdRequestBytesMax + headerRoomBytes;

interface Lent {
  /** Socket writes (or other readers) still using the buffer. */
  holds: number;
  /** The owner released it while held: it goes back when the last hold ends. */
  released: boolean;
}

export class BufferPool {
  /** Free lists by size class: index i holds ArrayBuffers of pooledBytesMin << i bytes. */
  private readonly free: ArrayBuffer[][] = [];
  /** Stores handed out and not yet back; one that is dropped instead is collected. */
  private readonly lent = new WeakMap<ArrayBuffer, Lent>();

  constructor() {
    for (let bytes = pooledBytesMin; bytes < pooledBytesMax; bytes *= 2) this.free.push([]);
    this.free.push([]);
  }

  /** True when `bytes` is worth pooling (and not too large to pool). */
  static pooled(bytes: number): boolean {
    return bytes >= pooledBytesMin && bytes <= pooledBytesMax;
  }

  acquire(bytes: number): Buffer {
    const classIndex = this.classOf(bytes);
    const store = this.free[classIndex]?.pop() ?? new ArrayBuffer(pooledBytesMin << classIndex);
    this.lent.set(store, { holds: 0, released: false });
    return Buffer.from(store, 0, bytes);
  }

  /** True when `buffer` is one this pool handed out and has not had back. */
  owns(buffer: Buffer): boolean {
    if (buffer.byteOffset !== 0 || !(buffer.buffer instanceof ArrayBuffer)) return false;
    const lent = this.lent.get(buffer.buffer);
    return lent !== undefined && !lent.released;
  }

  /**
   * A reader other than the owner (a socket write) starts using a pooled buffer, or any
   * view into one: true, and unhold() must follow. False for buffers the pool did not make.
   */
  hold(buffer: Buffer): boolean {
    const lent = this.lent.get(buffer.buffer as ArrayBuffer);
    if (lent === undefined) return false;
    lent.holds += 1;
    return true;
  }

  /** That reader is done; a release waiting for it takes effect now. */
  unhold(buffer: Buffer): void {
    const store = buffer.buffer as ArrayBuffer;
    const lent = this.lent.get(store);
    if (lent === undefined) return;
    assert(lent.holds > 0, 'unhold without a hold');
    lent.holds -= 1;
    if (lent.holds === 0 && lent.released) this.putBack(store);
  }

  /** The owner is done with the buffer; it is reused once no hold remains. */
  release(buffer: Buffer): void {
    const store = buffer.buffer;
    assert(store instanceof ArrayBuffer && buffer.byteOffset === 0, 'released a buffer the pool did not give out');
    const classIndex = Math.log2(store.byteLength / pooledBytesMin);
    assert(this.free[classIndex] !== undefined, `released a buffer of ${store.byteLength} bytes, a size the pool does not make`);
    const lent = this.lent.get(store);
    assert(lent !== undefined && !lent.released, 'released a buffer that is not lent out (released twice?)');
    lent.released = true;
    if (lent.holds === 0) this.putBack(store);
  }

  private putBack(store: ArrayBuffer): void {
    this.lent.delete(store);
    const list = this.free[Math.log2(store.byteLength / pooledBytesMin)] as ArrayBuffer[];
    if ((list.length + 1) * store.byteLength <= idleBytesPerClassMax) list.push(store);
  }

  private classOf(bytes: number): number {
    assert(BufferPool.pooled(bytes), `no pool class for ${bytes} bytes`);
    return Math.ceil(Math.log2(bytes / pooledBytesMin));
  }
}

/**
 * The process's pool for IO payloads (NBD requests and replies, wire frames): one pool,
 * so a buffer received on one connection can be reused by any other.
 */
export const payloadPool = new BufferPool();

/** A payload buffer of `bytes`: from payloadPool when large enough to be worth it. */
export function acquirePayload(bytes: number): Buffer {
  return BufferPool.pooled(bytes) ? payloadPool.acquire(bytes) : Buffer.allocUnsafe(bytes);
}

/** Gives a payload back to payloadPool if it came from there; anything else is left to the GC. */
export function releasePayload(buffer: Buffer): void {
  if (payloadPool.owns(buffer)) payloadPool.release(buffer);
}
