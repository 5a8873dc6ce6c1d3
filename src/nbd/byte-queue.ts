// The handshake reads whole protocol fields from a byte stream that arrives in arbitrary
// pieces. ByteQueue turns socket chunks into exact reads. It is for the handshake only:
// the transmission phase parses requests straight from the socket's chunks instead.

import type { Duplex } from 'node:stream';
import { MeshblockError } from '../common/errors.js';

interface Waiter {
  bytes: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class StreamEndedError extends MeshblockError {
  constructor(cause?: unknown) {
    super('MB_ERR_STREAM_ENDED', 'peer closed the connection', { cause });
  }
}

export class ByteQueue {
  private chunks: Buffer[] = [];
  private queuedBytes = 0;
  private waiter: Waiter | null = null;
  private failure: Error | null = null;
  private readonly onData = (chunk: Buffer): void => this.push(chunk);
  private readonly onEnd = (): void => this.fail(new StreamEndedError());
  private readonly onError = (err: Error): void => this.fail(new StreamEndedError(err));

  /** Stops reading from the stream while more than `queuedBytesMax` bytes wait unread. */
  constructor(
    private readonly stream: Duplex,
    private readonly queuedBytesMax: number,
  ) {
    stream.on('data', this.onData);
    stream.on('end', this.onEnd);
    stream.on('close', this.onEnd);
    stream.on('error', this.onError);
  }

  /** Stops listening and returns what was received but not consumed. */
  detach(): Buffer[] {
    // Paused, so nothing arrives with no listener before the next reader attaches.
    this.stream.pause();
    this.stream.off('data', this.onData);
    this.stream.off('end', this.onEnd);
    this.stream.off('close', this.onEnd);
    this.stream.off('error', this.onError);
    const leftover = this.chunks;
    this.chunks = [];
    this.queuedBytes = 0;
    return leftover;
  }

  async readExact(byteCount: number): Promise<Buffer> {
    await this.waitFor(byteCount);
    return this.take(byteCount);
  }

  /** Discards `byteCount` bytes as they arrive, never holding more than one chunk of them. */
  async skip(byteCount: number): Promise<void> {
    let remaining = byteCount;
    while (remaining > 0) {
      await this.waitFor(1);
      const dropped = Math.min(remaining, this.queuedBytes);
      this.take(dropped);
      remaining -= dropped;
    }
  }

  private push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.queuedBytes += chunk.length;
    if (this.queuedBytes > this.queuedBytesMax) this.stream.pause();
    const waiter = this.waiter;
    if (waiter !== null && this.queuedBytes >= waiter.bytes) {
      this.waiter = null;
      waiter.resolve();
    }
  }

  private fail(err: Error): void {
    if (this.failure === null) this.failure = err;
    const waiter = this.waiter;
    if (waiter !== null) {
      this.waiter = null;
      waiter.reject(this.failure);
    }
  }

  private waitFor(byteCount: number): Promise<void> {
    if (this.queuedBytes >= byteCount) return Promise.resolve();
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.stream.isPaused()) this.stream.resume();
    return new Promise((resolve, reject) => {
      this.waiter = { bytes: byteCount, resolve, reject };
    });
  }

  private take(byteCount: number): Buffer {
    const first = this.chunks[0];
    let result: Buffer;
    if (first !== undefined && first.length >= byteCount) {
      result = first.subarray(0, byteCount);
      if (first.length === byteCount) this.chunks.shift();
      else this.chunks[0] = first.subarray(byteCount);
    } else {
      // Handshake only: a field split across socket chunks is joined once.
      result = Buffer.allocUnsafe(byteCount);
      let filled = 0;
      while (filled < byteCount) {
        const chunk = this.chunks[0] as Buffer;
        const used = Math.min(chunk.length, byteCount - filled);
        chunk.copy(result, filled, 0, used);
        filled += used;
        if (used === chunk.length) this.chunks.shift();
        else this.chunks[0] = chunk.subarray(used);
      }
    }
    // A paused stream is resumed lazily, by waitFor, when the handshake asks for more.
    this.queuedBytes -= byteCount;
    return result;
  }
}
