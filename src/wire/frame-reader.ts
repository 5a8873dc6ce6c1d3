// Reads frames (header.ts's 64-byte header plus payload) off one wire connection's socket
// and hands each, whole and checked, to its handler. Frames for another cluster id, of
// another protocol version, or with a bad checksum break the connection: past a bad frame
// nothing on the stream can be trusted.
//
// Payloads are received without copies where possible: a reply its requester asked for in
// its own buffer (replyInto) lands there, and any other large payload in one buffer from
// payloadPool; on sockets with borrowed reads (common/borrowed-reads.ts) the rest of such a
// payload is read by the kernel straight into it.
//
// The reader can be stopped between frames (stop()/start()), which is how the WirePeer
// bounds what it serves: while stopped no new frame is parsed, and the socket is paused, so
// at most the one read that was in progress waits here.

import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { BufferPool, payloadPool } from '../common/buffer-pool.js';
import { BorrowedReads, borrowedDataEvent, directDataEvent } from '../common/borrowed-reads.js';
import { decodeHeader, verifyPayload, wireHeaderBytes, WireError, WireFrameError, type WireHeader } from './header.js';

export type FrameHandler = (header: WireHeader, payload: Buffer) => void;

export interface FrameReaderOptions {
  clusterId: string;
  log: Logger;
  /**
   * The caller's buffer for this frame's payload, if it is a reply its requester asked to
   * receive in place (see RequestOptions.replyInto); used only if the sizes match.
   */
  replyInto: (header: WireHeader) => Buffer | undefined;
  /** The stream broke (a bad frame, a read out of place): the connection must be dropped. */
  onBroken: (err: Error) => void;
}

export class FrameReader {
  private received: Buffer[] = [];
  private receivedBytes = 0;
  private header: WireHeader | null = null;
  /** A large payload being received straight into a buffer of its own, and how much is in. */
  private assembling: Buffer | null = null;
  private assembledBytes = 0;
  /** The request whose reply is being assembled in its caller's buffer (replyInto), if any. */
  assemblingFor: number | null = null;
  /** While onBorrowedData runs: the store of the borrowed chunk, whose bytes must be copied to be kept. */
  private borrowedStore: ArrayBufferLike | null = null;
  /** The socket's borrowed reads, if it has them: a large payload's rest is read straight into its buffer. */
  private readonly reads: BorrowedReads | undefined;
  private handler: FrameHandler | null = null;
  private halted = false;
  private stoppedByOwner = false;
  /** Inside processReceived: a start() from a handler must not run the loop again inside itself. */
  private processing = false;

  constructor(
    private readonly socket: Socket,
    private readonly options: FrameReaderOptions,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.reads = BorrowedReads.of(socket);
    socket.on(borrowedDataEvent, (chunk: Buffer) => this.onBorrowedData(chunk));
    socket.on(directDataEvent, (landed: Buffer) => this.onDirectData(landed));
    if (socket.isPaused()) socket.resume();
  }

  /** Frames wait in the receive buffer while no handler is set, and are read when one is. */
  setHandler(handler: FrameHandler | null): void {
    this.handler = handler;
    if (handler !== null) queueMicrotask(() => this.processReceived());
  }

  get stopped(): boolean {
    return this.stoppedByOwner;
  }

  /**
   * Stops reading: no new frame is parsed (the one being received, if any, is finished)
   * and the socket is paused, until start().
   */
  stop(): void {
    if (this.stoppedByOwner) return;
    this.stoppedByOwner = true;
    this.socket.pause();
  }

  /** Reads again: first the frames that wait here, then from the socket. */
  start(): void {
    if (!this.stoppedByOwner) return;
    this.stoppedByOwner = false;
    this.processReceived();
    if (!this.stoppedByOwner && !this.halted) this.socket.resume();
  }

  /** The connection failed: nothing more is parsed, and no read lands in a payload buffer. */
  halt(): void {
    this.halted = true;
    if (this.reads !== undefined) this.reads.direct = null;
  }

  /**
   * Bytes in the socket's own read buffer (borrowed reads), valid only during this call:
   * large payloads are copied into their buffer as usual, and whatever else is kept past
   * this call (small payloads, a partial frame, frames waiting while stopped) is copied out.
   */
  private onBorrowedData(chunk: Buffer): void {
    this.borrowedStore = chunk.buffer;
    try {
      this.onData(chunk);
      this.received = this.received.map((part) => (part.buffer === this.borrowedStore ? Buffer.from(part) : part));
    } finally {
      this.borrowedStore = null;
    }
    this.readNextIntoPayload();
  }

  /** Bytes the socket read straight into the rest of the payload being assembled. */
  private onDirectData(landed: Buffer): void {
    if (this.halted) return;
    const target = this.assembling;
    if (target === null || landed.buffer !== target.buffer || landed.byteOffset !== target.byteOffset + this.assembledBytes || this.receivedBytes !== 0) {
      this.options.onBroken(new WireError('MB_ERR_WIRE_INTERNAL', 'a direct read landed outside the payload being received'));
      return;
    }
    this.assembledBytes += landed.length;
    this.processReceived();
    this.readNextIntoPayload();
  }

  /**
   * Points the socket's next read at the rest of the payload being assembled, when every
   * byte received so far is in it; otherwise back at the socket's own buffer.
   */
  private readNextIntoPayload(): void {
    if (this.reads === undefined) return;
    const target = this.assembling;
    this.reads.direct = target !== null && this.receivedBytes === 0 && !this.halted ? target.subarray(this.assembledBytes) : null;
  }

  private onData(chunk: Buffer): void {
    this.received.push(chunk);
    this.receivedBytes += chunk.length;
    this.processReceived();
  }

  private processReceived(): void {
    if (this.processing) return;
    this.processing = true;
    try {
      while (this.handler !== null && !this.halted) {
        if (this.header === null) {
          if (this.stoppedByOwner || this.receivedBytes < wireHeaderBytes) return;
          this.header = this.headerOf(this.take(wireHeaderBytes));
        }
        let payload: Buffer;
        if (this.assembling !== null) {
          if (!this.assemble(this.assembling)) return;
          payload = this.assembling;
          this.assembling = null;
          this.assemblingFor = null;
        } else {
          if (this.receivedBytes < this.header.payloadBytes) return;
          payload = this.keep(this.take(this.header.payloadBytes));
        }
        const header = this.header;
        this.header = null;
        verifyPayload(header, payload);
        this.handler(header, payload);
      }
    } catch (err) {
      this.options.log.warn({ err, peer: this.socket.remoteAddress }, 'dropping wire connection: bad frame');
      this.options.onBroken(err instanceof Error ? err : new Error(String(err)));
    } finally {
      this.processing = false;
    }
  }

  /** Decodes a header and chooses where its payload goes. */
  private headerOf(bytes: Buffer): WireHeader {
    const header = decodeHeader(bytes);
    if (header.clusterId !== this.options.clusterId) {
      throw new WireFrameError('MB_ERR_WIRE_CLUSTER', `frame for cluster ${header.clusterId}, this is cluster ${this.options.clusterId}`);
    }
    // A reply the caller asked for in its own buffer goes there; any other large payload is
    // copied into one pooled buffer as it arrives: no concat of the socket's chunks into a
    // fresh allocation at the end.
    const into = header.reply ? this.options.replyInto(header) : undefined;
    if (into !== undefined && into.length === header.payloadBytes && into.length > 0) {
      this.assembling = into;
      this.assembledBytes = 0;
      this.assemblingFor = header.requestId;
    } else if (BufferPool.pooled(header.payloadBytes)) {
      this.assembling = payloadPool.acquire(header.payloadBytes);
      this.assembledBytes = 0;
    }
    return header;
  }

  /** Moves received bytes into `target`; true once it is full. */
  private assemble(target: Buffer): boolean {
    while (this.assembledBytes < target.length) {
      const chunk = this.received[0];
      if (chunk === undefined) return false;
      const used = Math.min(chunk.length, target.length - this.assembledBytes);
      chunk.copy(target, this.assembledBytes, 0, used);
      this.assembledBytes += used;
      this.receivedBytes -= used;
      if (used === chunk.length) this.received.shift();
      else this.received[0] = chunk.subarray(used);
    }
    return true;
  }

  /** A copy of `bytes` if they live in a borrowed read buffer; else `bytes`. */
  private keep(bytes: Buffer): Buffer {
    return this.borrowedStore !== null && bytes.buffer === this.borrowedStore ? Buffer.from(bytes) : bytes;
  }

  private take(byteCount: number): Buffer {
    const first = this.received[0];
    if (first !== undefined && first.length >= byteCount) {
      if (first.length === byteCount) this.received.shift();
      else this.received[0] = first.subarray(byteCount);
      this.receivedBytes -= byteCount;
      return first.subarray(0, byteCount);
    }
    const all = Buffer.concat(this.received);
    this.received = all.length > byteCount ? [all.subarray(byteCount)] : [];
    this.receivedBytes -= byteCount;
    return all.subarray(0, byteCount);
  }
}
