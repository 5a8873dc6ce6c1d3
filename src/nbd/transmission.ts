// The transmission phase: requests parsed straight out of the socket's chunks, validated
// at the edge (validateRequest), run concurrently against the backend, answered out of
// order as they complete.
//
// Bounds: at most nbdInflightRequestsMax requests and nbdInflightBytesMax bytes (WRITE
// payloads being received or run, READ data being read) per connection, and at most
// nbdWritableBytesMax bytes of replies queued in the socket. Past any bound we stop
// reading (pause the socket and keep the unparsed rest of the chunk) until completions
// or 'drain' bring us back under it. A client that stops reading therefore stalls only
// itself.
//
// Bad input: a request with intact framing but bad content gets an error reply and the
// connection goes on (a rejected WRITE's payload is read and dropped to stay in sync); a
// bad magic means we no longer know where requests start, so that connection is dropped.

import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import {
  nbdBlockedRepliesMax,
  nbdExtentsPerReplyMax,
  nbdExtentsQueryBytesMax,
  nbdInflightBytesMax,
  nbdInflightRequestsMax,
  nbdLingerMs,
  nbdRequestBytesMax,
  nbdWritableBytesMax,
} from '../common/limits.js';
import { assert } from '../common/assert.js';
import { BorrowedReads, borrowedDataEvent, directDataEvent } from '../common/borrowed-reads.js';
import type { BlockBackend, Extent } from './backend.js';
import { BufferPool, acquirePayload, payloadPool as pool } from '../common/buffer-pool.js';
import { nbdErrnoOf } from './errno.js';
import type { Negotiated } from './handshake-newstyle.js';
import * as P from './protocol.js';

/** Requests whose validation failed carry this instead of running. */
interface Rejection {
  errno: number;
  message: string;
}

const enum ParseState {
  Header,
  /** Receiving a WRITE payload into `payload`. */
  Payload,
  /** Reading and dropping the payload of a rejected WRITE. */
  Discard,
}

/** Gives back a buffer from acquirePayload(); small ones are left to the garbage collector. */
function recycle(buffer: Buffer): void {
  if (BufferPool.pooled(buffer.length)) pool.release(buffer);
}

/** Offsets above this cannot be represented exactly; no export is that large. */
const offsetHighMax = Math.floor(Number.MAX_SAFE_INTEGER / 0x1_0000_0000);

export class Transmission {
  private readonly stream: Duplex;
  private readonly backend: BlockBackend;
  private readonly sizeBytes: number;
  private readonly flags: number;
  private readonly structured: boolean;
  private readonly baseAllocation: boolean;
  private readonly log: Logger;
  private readonly traceEnabled: boolean;

  private state = ParseState.Header;
  private readonly header = Buffer.allocUnsafe(P.REQUEST_HEADER_BYTES);
  private headerFilled = 0;
  /** The WRITE whose payload is arriving (Payload and Discard states). */
  private write: PendingWrite | null = null;
  private payloadFilled = 0;
  private discardRemaining = 0;
  /** Unparsed rest of a chunk, kept while reading is stopped. */
  private stalled: Buffer | null = null;
  private readStopped = false;
  private parsing = false;
  /** The socket's borrowed reads, if it has them (see borrowed-reads.ts). */
  private readonly reads: BorrowedReads | undefined;
  /** While a borrowed chunk is parsed: whatever of it is kept must be copied. */
  private borrowing = false;

  private inflightCount = 0;
  private inflightBytes = 0;
  private disconnecting = false;
  private closed = false;
  private corked = false;
  /** Replies written while the socket was not draining (reset by 'drain'). */
  private blockedReplies = 0;
  /** Our EOF is sent (end() called). */
  private ended = false;
  /** Closes the connection if the client has not hung up nbdLingerMs after our EOF. */
  private lingerTimer: NodeJS.Timeout | null = null;

  /** Resolves once the connection is closed and every request has finished. */
  readonly done: Promise<void>;
  private resolveDone!: () => void;

  constructor(negotiated: Negotiated, log: Logger) {
    this.stream = negotiated.stream;
    this.backend = negotiated.export.backend;
    this.sizeBytes = this.backend.sizeBytes;
    this.flags = negotiated.transmissionFlags;
    this.structured = negotiated.structuredReplies;
    this.baseAllocation = negotiated.baseAllocation;
    this.log = log;
    this.traceEnabled = log.isLevelEnabled('trace');
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });

    this.reads = BorrowedReads.of(this.stream);
    this.stream.on('data', (chunk: Buffer) => this.onData(chunk));
    this.stream.on(borrowedDataEvent, (chunk: Buffer) => this.onBorrowedData(chunk));
    this.stream.on(directDataEvent, (landed: Buffer) => this.onDirectData(landed));
    this.stream.on('drain', () => {
      this.blockedReplies = 0;
      this.maybeResume();
    });
    this.stream.on('error', (err: Error) => {
      this.log.debug({ err }, 'nbd connection error');
    });
    this.stream.on('end', () => {
      // The client half-closed: nothing more will arrive, finish what is in flight.
      this.dropPartialWrite();
      this.disconnecting = true;
      this.maybeFinish();
    });
    this.stream.on('close', () => {
      if (this.lingerTimer !== null) clearTimeout(this.lingerTimer);
      this.dropPartialWrite();
      this.closed = true;
      this.maybeSettle();
    });
    for (const chunk of negotiated.leftover) this.onData(chunk);
    if (!this.readStopped) this.stream.resume();
  }

  /** Stops taking requests, lets in-flight ones finish, then closes (server shutdown). */
  shutdown(): void {
    // A WRITE whose payload is still arriving will not be read to its end: forget it.
    this.dropPartialWrite();
    this.disconnecting = true;
    this.stream.pause();
    this.maybeFinish();
  }

  destroy(): void {
    this.stream.destroy();
  }

  // --- receiving -------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    if (this.disconnecting) return; // Nothing may follow DISC; after shutdown we ignore it.
    if (this.readStopped) {
      // Data already in flight when we paused: keep it with the stalled rest.
      this.stalled = this.stalled === null ? this.keep(chunk) : Buffer.concat([this.stalled, chunk]);
      return;
    }
    this.parse(chunk);
  }

  /** A read into the socket's own buffer, which the next read overwrites. */
  private onBorrowedData(chunk: Buffer): void {
    this.borrowing = true;
    try {
      this.onData(chunk);
    } finally {
      this.borrowing = false;
    }
    this.readNextIntoPayload();
  }

  /** A read that landed straight in the rest of the WRITE payload being received. */
  private onDirectData(landed: Buffer): void {
    if (this.disconnecting || this.closed) return;
    const write = this.write;
    const payload = write?.payload ?? null;
    if (this.state !== ParseState.Payload || write === null || payload === null || landed.buffer !== payload.buffer || landed.byteOffset !== payload.byteOffset + this.payloadFilled) {
      this.log.error({ state: this.state }, 'a direct read landed outside the WRITE payload being received; dropping the connection');
      this.stream.destroy();
      return;
    }
    this.payloadArrived(write, payload, landed.length);
    this.readNextIntoPayload();
  }

  /** `bytes` more of the WRITE's payload are in; a complete payload is written. */
  private payloadArrived(write: PendingWrite, payload: Buffer, bytes: number): void {
    this.payloadFilled += bytes;
    if (this.payloadFilled < payload.length) return;
    this.state = ParseState.Header;
    this.write = null;
    this.runWrite(write);
  }

  /**
   * Points the socket's next read at the rest of the WRITE payload being received, when
   * nothing else is waiting to be parsed; otherwise back at the socket's own buffer.
   */
  private readNextIntoPayload(): void {
    if (this.reads === undefined) return;
    const payload = this.state === ParseState.Payload && this.stalled === null && !this.disconnecting ? (this.write?.payload ?? null) : null;
    this.reads.direct = payload === null ? null : payload.subarray(this.payloadFilled);
  }

  /** `bytes` itself, or a copy while they live in a borrowed read buffer. */
  private keep(bytes: Buffer): Buffer {
    return this.borrowing ? Buffer.from(bytes) : bytes;
  }

  private parse(chunk: Buffer): void {
    this.parsing = true;
    let position = 0;
    while (position < chunk.length && !this.disconnecting && !this.closed) {
      if (this.readStopped) {
        this.stalled = this.keep(chunk.subarray(position));
        break;
      }
      const available = chunk.length - position;
      if (this.state === ParseState.Header) {
        if (this.headerFilled === 0 && available >= P.REQUEST_HEADER_BYTES) {
          this.onHeader(chunk, position);
          position += P.REQUEST_HEADER_BYTES;
        } else {
          const used = Math.min(available, P.REQUEST_HEADER_BYTES - this.headerFilled);
          chunk.copy(this.header, this.headerFilled, position, position + used);
          this.headerFilled += used;
          position += used;
          if (this.headerFilled === P.REQUEST_HEADER_BYTES) {
            this.headerFilled = 0;
            this.onHeader(this.header, 0);
          }
        }
      } else if (this.state === ParseState.Payload) {
        const write = this.write as PendingWrite;
        const payload = write.payload as Buffer;
        const used = Math.min(available, payload.length - this.payloadFilled);
        chunk.copy(payload, this.payloadFilled, position, position + used);
        position += used;
        this.payloadArrived(write, payload, used);
      } else {
        const used = Math.min(available, this.discardRemaining);
        this.discardRemaining -= used;
        position += used;
        if (this.discardRemaining === 0) {
          const write = this.write as PendingWrite;
          this.state = ParseState.Header;
          this.write = null;
          this.finishRejected(write.cookieHigh, write.cookieLow, P.NBD_CMD_WRITE, write.rejection as Rejection, write.lengthBytes);
        }
      }
    }
    this.parsing = false;
  }

  private onHeader(buffer: Buffer, at: number): void {
    const magic = buffer.readUInt32BE(at);
    if (magic !== P.NBD_REQUEST_MAGIC) {
      // Framing is lost: we cannot tell where the next request starts.
      this.log.warn({ magic: magic.toString(16) }, 'nbd request with bad magic: dropping connection');
      this.disconnecting = true;
      this.stream.destroy();
      return;
    }
    const commandFlags = buffer.readUInt16BE(at + 4);
    const type = buffer.readUInt16BE(at + 6);
    const cookieHigh = buffer.readUInt32BE(at + 8);
    const cookieLow = buffer.readUInt32BE(at + 12);
    const offsetHigh = buffer.readUInt32BE(at + 16);
    const offsetLow = buffer.readUInt32BE(at + 20);
    const lengthBytes = buffer.readUInt32BE(at + 24);
    // 64-bit offsets are checked once here and carried as numbers: anything that does not
    // fit a safe integer is beyond every export and is refused as out of range below.
    const offsetBytes = offsetHigh > offsetHighMax ? Number.MAX_SAFE_INTEGER : offsetHigh * 0x1_0000_0000 + offsetLow;

    if (this.traceEnabled) {
      this.log.trace({ command: P.commandName(type), commandFlags, offsetBytes, lengthBytes }, 'nbd request');
    }
    if (type === P.NBD_CMD_DISC) {
      this.disconnecting = true;
      this.maybeFinish();
      return;
    }

    const rejection = this.validateRequest(type, commandFlags, offsetBytes, lengthBytes);
    if (type === P.NBD_CMD_WRITE) {
      const write: PendingWrite = {
        cookieHigh,
        cookieLow,
        commandFlags,
        offsetBytes,
        lengthBytes,
        payload: null,
        rejection,
      };
      this.inflightCount += 1;
      if (rejection !== null) {
        if (lengthBytes === 0) {
          this.finishRejected(cookieHigh, cookieLow, type, rejection, 0);
        } else {
          this.write = write;
          this.discardRemaining = lengthBytes;
          this.state = ParseState.Discard;
        }
      } else {
        this.inflightBytes += lengthBytes;
        write.payload = acquirePayload(lengthBytes);
        if (lengthBytes === 0) {
          this.runWrite(write);
        } else {
          this.write = write;
          this.payloadFilled = 0;
          this.state = ParseState.Payload;
        }
      }
      this.checkBounds();
      return;
    }

    this.inflightCount += 1;
    if (rejection !== null) {
      this.finishRejected(cookieHigh, cookieLow, type, rejection, 0);
    } else {
      this.run(type, commandFlags, cookieHigh, cookieLow, offsetBytes, lengthBytes);
    }
    this.checkBounds();
  }

  /** The edge: every request is checked here before a backend sees it (nbdkit's validate_request). */
  private validateRequest(type: number, commandFlags: number, offsetBytes: number, lengthBytes: number): Rejection | null {
    const flags = this.flags;
    let writes = false;
    let capable = true;
    switch (type) {
      case P.NBD_CMD_READ:
        break;
      case P.NBD_CMD_WRITE:
        writes = true;
        break;
      case P.NBD_CMD_FLUSH:
        capable = (flags & P.NBD_FLAG_SEND_FLUSH) !== 0;
        break;
      case P.NBD_CMD_TRIM:
        writes = true;
        capable = (flags & P.NBD_FLAG_SEND_TRIM) !== 0 || (flags & P.NBD_FLAG_READ_ONLY) !== 0;
        break;
      case P.NBD_CMD_WRITE_ZEROES:
        writes = true;
        capable = (flags & P.NBD_FLAG_SEND_WRITE_ZEROES) !== 0 || (flags & P.NBD_FLAG_READ_ONLY) !== 0;
        break;
      case P.NBD_CMD_CACHE:
        capable = (flags & P.NBD_FLAG_SEND_CACHE) !== 0;
        break;
      case P.NBD_CMD_BLOCK_STATUS:
        if (!this.baseAllocation) return reject(P.NBD_EINVAL, 'BLOCK_STATUS without a negotiated meta context');
        break;
      default:
        return reject(P.NBD_EINVAL, `unknown command ${type}`);
    }
    if (!capable) return reject(P.NBD_EINVAL, `${P.commandName(type)} is not supported by this export`);

    if ((commandFlags & ~P.CMD_FLAGS_KNOWN) !== 0) {
      return reject(P.NBD_EINVAL, `unknown command flags 0x${commandFlags.toString(16)}`);
    }
    if ((commandFlags & P.NBD_CMD_FLAG_FUA) !== 0 && (flags & P.NBD_FLAG_SEND_FUA) === 0 && !writes) {
      return reject(P.NBD_EINVAL, 'FUA was not negotiated');
    }
    if ((commandFlags & (P.NBD_CMD_FLAG_NO_HOLE | P.NBD_CMD_FLAG_FAST_ZERO)) !== 0 && type !== P.NBD_CMD_WRITE_ZEROES) {
      return reject(P.NBD_EINVAL, 'NO_HOLE and FAST_ZERO apply to WRITE_ZEROES only');
    }
    if ((commandFlags & P.NBD_CMD_FLAG_FAST_ZERO) !== 0 && (flags & P.NBD_FLAG_SEND_FAST_ZERO) === 0 && !writes) {
      return reject(P.NBD_EINVAL, 'FAST_ZERO was not negotiated');
    }
    if ((commandFlags & P.NBD_CMD_FLAG_DF) !== 0 && (type !== P.NBD_CMD_READ || !this.structured)) {
      return reject(P.NBD_EINVAL, 'DF applies to READ with structured replies only');
    }
    if ((commandFlags & P.NBD_CMD_FLAG_REQ_ONE) !== 0 && type !== P.NBD_CMD_BLOCK_STATUS) {
      return reject(P.NBD_EINVAL, 'REQ_ONE applies to BLOCK_STATUS only');
    }

    if (writes && (flags & P.NBD_FLAG_READ_ONLY) !== 0) return reject(P.NBD_EPERM, 'the export is read-only');

    if (type === P.NBD_CMD_FLUSH) {
      if (offsetBytes !== 0 || lengthBytes !== 0) return reject(P.NBD_EINVAL, 'FLUSH must have offset and length 0');
      return null;
    }
    // offsetBytes <= MAX_SAFE_INTEGER and lengthBytes < 2^32, so the sum cannot wrap; if
    // it rounds, it rounds above every export size.
    if (offsetBytes + lengthBytes > this.sizeBytes) {
      const errno = type === P.NBD_CMD_WRITE || type === P.NBD_CMD_WRITE_ZEROES ? P.NBD_ENOSPC : P.NBD_EINVAL;
      return reject(errno, `offset ${offsetBytes} + length ${lengthBytes} is beyond the export's ${this.sizeBytes} bytes`);
    }
    if ((type === P.NBD_CMD_READ || type === P.NBD_CMD_WRITE) && lengthBytes > nbdRequestBytesMax) {
      return reject(P.NBD_EINVAL, `length ${lengthBytes} is above the maximum of ${nbdRequestBytesMax} bytes`);
    }
    if (type === P.NBD_CMD_BLOCK_STATUS && lengthBytes === 0) return reject(P.NBD_EINVAL, 'BLOCK_STATUS of length 0');
    return null;
  }

  // --- running -----------------------------------------------------------------------

  private run(
    type: number,
    commandFlags: number,
    cookieHigh: number,
    cookieLow: number,
    offsetBytes: number,
    lengthBytes: number,
  ): void {
    const backend = this.backend;
    const fua = (commandFlags & P.NBD_CMD_FLAG_FUA) !== 0;
    switch (type) {
      case P.NBD_CMD_READ:
        this.runRead(cookieHigh, cookieLow, offsetBytes, lengthBytes);
        return;
      case P.NBD_CMD_FLUSH:
        this.settle(backend.flush(), type, cookieHigh, cookieLow, offsetBytes, 0);
        return;
      case P.NBD_CMD_TRIM:
        this.settle(backend.trim(offsetBytes, lengthBytes, { fua }), type, cookieHigh, cookieLow, offsetBytes, 0);
        return;
      case P.NBD_CMD_WRITE_ZEROES: {
        const options = {
          fua,
          mayTrim: (commandFlags & P.NBD_CMD_FLAG_NO_HOLE) === 0,
          fastOnly: (commandFlags & P.NBD_CMD_FLAG_FAST_ZERO) !== 0,
        };
        this.settle(backend.zero(offsetBytes, lengthBytes, options), type, cookieHigh, cookieLow, offsetBytes, 0);
        return;
      }
      case P.NBD_CMD_CACHE:
        this.settle(backend.cache(offsetBytes, lengthBytes), type, cookieHigh, cookieLow, offsetBytes, 0);
        return;
      case P.NBD_CMD_BLOCK_STATUS:
        this.runBlockStatus(commandFlags, cookieHigh, cookieLow, offsetBytes, lengthBytes);
        return;
      default:
        assert(false, `validated command ${type} has no handler`);
    }
  }

  private runRead(cookieHigh: number, cookieLow: number, offsetBytes: number, lengthBytes: number): void {
    this.inflightBytes += lengthBytes;
    if (lengthBytes === 0) {
      this.finish(this.structured ? this.chunkNone(cookieHigh, cookieLow) : this.simpleReply(cookieHigh, cookieLow, 0), 0);
      return;
    }
    // Header and data share one buffer: the backend reads straight behind the header and
    // the reply goes out in one write, with no copy (as Vitastor does).
    const headerBytes = this.structured ? P.STRUCTURED_REPLY_HEADER_BYTES + 8 : P.SIMPLE_REPLY_HEADER_BYTES;
    const reply = acquirePayload(headerBytes + lengthBytes);
    this.backend.read(offsetBytes, reply.subarray(headerBytes)).then(
      () => {
        if (this.structured) {
          writeChunkHeader(reply, P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_OFFSET_DATA, cookieHigh, cookieLow, 8 + lengthBytes);
          writeU64(reply, P.STRUCTURED_REPLY_HEADER_BYTES, offsetBytes);
        } else {
          writeSimpleHeader(reply, 0, cookieHigh, cookieLow);
        }
        this.finish(reply, lengthBytes, true);
      },
      (err: unknown) => {
        recycle(reply);
        this.fail(err, P.NBD_CMD_READ, cookieHigh, cookieLow, offsetBytes, lengthBytes);
      },
    );
  }

  private runWrite(write: PendingWrite): void {
    const fua = (write.commandFlags & P.NBD_CMD_FLAG_FUA) !== 0;
    const payload = write.payload as Buffer;
    const written = this.backend.write(write.offsetBytes, payload, { fua });
    // A pooled payload goes back when the backend is done with it, before the reply.
    this.settle(written, P.NBD_CMD_WRITE, write.cookieHigh, write.cookieLow, write.offsetBytes, write.lengthBytes, BufferPool.pooled(payload.length) ? payload : null);
  }

  private runBlockStatus(
    commandFlags: number,
    cookieHigh: number,
    cookieLow: number,
    offsetBytes: number,
    lengthBytes: number,
  ): void {
    const requestOne = (commandFlags & P.NBD_CMD_FLAG_REQ_ONE) !== 0;
    const queryBytes = Math.min(lengthBytes, nbdExtentsQueryBytesMax);
    const extentCountMax = requestOne ? 1 : nbdExtentsPerReplyMax;
    const lookup: Promise<Extent[]> = this.backend.capabilities.extents
      ? this.backend.extents(offsetBytes, queryBytes, extentCountMax)
      : Promise.resolve([{ lengthBytes: queryBytes, hole: false, zero: false }]);
    lookup.then(
      (extents) => {
        const count = Math.min(extents.length, extentCountMax);
        assert(count > 0, 'extents() returned no extent');
        const reply = Buffer.allocUnsafe(P.STRUCTURED_REPLY_HEADER_BYTES + 4 + 8 * count);
        writeChunkHeader(reply, P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_BLOCK_STATUS, cookieHigh, cookieLow, 4 + 8 * count);
        reply.writeUInt32BE(P.META_CONTEXT_BASE_ALLOCATION_ID, P.STRUCTURED_REPLY_HEADER_BYTES);
        let position = P.STRUCTURED_REPLY_HEADER_BYTES + 4;
        let coveredBytes = 0;
        let written = 0;
        for (let index = 0; index < count && coveredBytes < queryBytes; index++) {
          const extent = extents[index] as Extent;
          const extentBytes = Math.min(extent.lengthBytes, queryBytes - coveredBytes);
          assert(extentBytes > 0, 'extent of length 0');
          reply.writeUInt32BE(extentBytes, position);
          reply.writeUInt32BE((extent.hole ? P.NBD_STATE_HOLE : 0) | (extent.zero ? P.NBD_STATE_ZERO : 0), position + 4);
          position += 8;
          coveredBytes += extentBytes;
          written += 1;
        }
        if (written < count) {
          reply.writeUInt32BE(4 + 8 * written, 16);
          this.finish(reply.subarray(0, position), 0);
        } else {
          this.finish(reply, 0);
        }
      },
      (err: unknown) => this.fail(err, P.NBD_CMD_BLOCK_STATUS, cookieHigh, cookieLow, offsetBytes, 0),
    );
  }

  /** Answers a command without reply data once `operation` settles; `recycled` (a pooled WRITE payload) goes back first. */
  private settle(
    operation: Promise<void>,
    type: number,
    cookieHigh: number,
    cookieLow: number,
    offsetBytes: number,
    inflightBytes: number,
    recycled: Buffer | null = null,
  ): void {
    operation.then(
      () => {
        if (recycled !== null) recycle(recycled);
        this.finish(this.simpleReply(cookieHigh, cookieLow, 0), inflightBytes);
      },
      (err: unknown) => {
        if (recycled !== null) recycle(recycled);
        this.fail(err, type, cookieHigh, cookieLow, offsetBytes, inflightBytes);
      },
    );
  }

  private fail(err: unknown, type: number, cookieHigh: number, cookieLow: number, offsetBytes: number, inflightBytes: number): void {
    const errno = nbdErrnoOf(err);
    // Log the real cause before it is reduced to what the wire can carry.
    if (errno === P.NBD_ENOTSUP) this.log.debug({ err, command: P.commandName(type), offsetBytes }, 'nbd request refused');
    else this.log.warn({ err, command: P.commandName(type), offsetBytes }, 'nbd request failed');
    const message = err instanceof Error ? err.message : String(err);
    this.finish(this.errorReply(cookieHigh, cookieLow, errno, message), inflightBytes);
  }

  private finishRejected(cookieHigh: number, cookieLow: number, type: number, rejection: Rejection, payloadBytes: number): void {
    this.log.debug({ command: P.commandName(type), reason: rejection.message, payloadBytes }, 'nbd request rejected');
    this.finish(this.errorReply(cookieHigh, cookieLow, rejection.errno, rejection.message), 0);
  }

  // --- replying ----------------------------------------------------------------------

  private simpleReply(cookieHigh: number, cookieLow: number, errno: number): Buffer {
    const reply = Buffer.allocUnsafe(P.SIMPLE_REPLY_HEADER_BYTES);
    writeSimpleHeader(reply, errno, cookieHigh, cookieLow);
    return reply;
  }

  private chunkNone(cookieHigh: number, cookieLow: number): Buffer {
    const reply = Buffer.allocUnsafe(P.STRUCTURED_REPLY_HEADER_BYTES);
    writeChunkHeader(reply, P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_NONE, cookieHigh, cookieLow, 0);
    return reply;
  }

  /**
   * Simple replies carry only the errno. With structured replies an error goes in an
   * ERROR chunk with a message for the human; READ must use one, others may, and the
   * spec prefers it.
   */
  private errorReply(cookieHigh: number, cookieLow: number, errno: number, message: string): Buffer {
    if (!this.structured) return this.simpleReply(cookieHigh, cookieLow, errno);
    const text = Buffer.from(message.slice(0, 512));
    const reply = Buffer.allocUnsafe(P.STRUCTURED_REPLY_HEADER_BYTES + 6 + text.length);
    writeChunkHeader(reply, P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_ERROR, cookieHigh, cookieLow, 6 + text.length);
    reply.writeUInt32BE(errno, P.STRUCTURED_REPLY_HEADER_BYTES);
    reply.writeUInt16BE(text.length, P.STRUCTURED_REPLY_HEADER_BYTES + 4);
    text.copy(reply, P.STRUCTURED_REPLY_HEADER_BYTES + 6);
    return reply;
  }

  /** Sends one complete reply and retires its request; an acquirePayload() one is recycled once sent. */
  private finish(reply: Buffer, inflightBytes: number, allocated = false): void {
    this.inflightCount -= 1;
    this.inflightBytes -= inflightBytes;
    assert(this.inflightCount >= 0 && this.inflightBytes >= 0, 'in-flight accounting went negative');
    if (!this.closed && !this.stream.destroyed) {
      // Replies completing in the same turn of the event loop leave in one writev.
      if (!this.corked) {
        this.corked = true;
        this.stream.cork();
        setImmediate(this.uncork);
      }
      if (this.stream.writableNeedDrain) this.blockedReplies += 1;
      if (allocated) this.stream.write(reply, () => recycle(reply));
      else this.stream.write(reply);
    } else if (allocated) {
      recycle(reply);
    }
    if (this.disconnecting) this.maybeFinish();
    else this.maybeResume();
  }

  private readonly uncork = (): void => {
    this.corked = false;
    this.stream.uncork();
  };

  // --- flow control and shutdown -----------------------------------------------------

  private overBounds(): boolean {
    return (
      this.inflightCount >= nbdInflightRequestsMax ||
      this.inflightBytes >= nbdInflightBytesMax ||
      this.stream.writableLength >= nbdWritableBytesMax ||
      this.blockedReplies >= nbdBlockedRepliesMax
    );
  }

  private checkBounds(): void {
    if (!this.readStopped && this.overBounds()) {
      this.readStopped = true;
      this.stream.pause();
    }
  }

  private maybeResume(): void {
    if (!this.readStopped || this.parsing || this.disconnecting || this.overBounds()) return;
    this.readStopped = false;
    const stalled = this.stalled;
    this.stalled = null;
    if (stalled !== null) this.parse(stalled);
    if (!this.readStopped && !this.disconnecting) this.stream.resume();
  }

  /** A WRITE whose payload will never arrive completely is forgotten, unanswered. */
  private dropPartialWrite(): void {
    const write = this.write;
    if (write === null) return;
    this.write = null;
    this.state = ParseState.Header;
    this.inflightCount -= 1;
    if (write.rejection === null) this.inflightBytes -= write.lengthBytes;
    // A payload the socket may still be set to read into is left to the GC, never reused.
    const readTarget = this.reads?.direct ?? null;
    if (write.payload !== null && readTarget?.buffer !== write.payload.buffer) recycle(write.payload);
    if (this.reads !== undefined) this.reads.direct = null;
    this.log.debug({ offsetBytes: write.offsetBytes, lengthBytes: write.lengthBytes }, 'nbd WRITE cut off by disconnect');
  }

  private maybeFinish(): void {
    if (this.inflightCount > 0 || this.closed) return;
    if (this.corked) this.uncork();
    if (!this.ended) {
      this.ended = true;
      // The spec has the server close the TCP session after DISC; a client that keeps its
      // side open must not hold the connection for ever. It gets nbdLingerMs from when our
      // last reply reached the kernel to hang up first: closing at once, with its bytes
      // unread, would reset the connection and could lose those replies on its side.
      this.stream.end(() => {
        if (this.closed) return;
        this.lingerTimer = setTimeout(() => this.stream.destroy(), nbdLingerMs);
        this.lingerTimer.unref();
      });
    }
    this.maybeSettle();
  }

  private maybeSettle(): void {
    if (this.closed && this.inflightCount === 0) this.resolveDone();
  }
}

interface PendingWrite {
  cookieHigh: number;
  cookieLow: number;
  commandFlags: number;
  offsetBytes: number;
  lengthBytes: number;
  payload: Buffer | null;
  rejection: Rejection | null;
}

function reject(errno: number, message: string): Rejection {
  return { errno, message };
}

function writeSimpleHeader(target: Buffer, errno: number, cookieHigh: number, cookieLow: number): void {
  target.writeUInt32BE(P.NBD_SIMPLE_REPLY_MAGIC, 0);
  target.writeUInt32BE(errno, 4);
  target.writeUInt32BE(cookieHigh, 8);
  target.writeUInt32BE(cookieLow, 12);
}

function writeChunkHeader(
  target: Buffer,
  flags: number,
  type: number,
  cookieHigh: number,
  cookieLow: number,
  payloadBytes: number,
): void {
  target.writeUInt32BE(P.NBD_STRUCTURED_REPLY_MAGIC, 0);
  target.writeUInt16BE(flags, 4);
  target.writeUInt16BE(type, 6);
  target.writeUInt32BE(cookieHigh, 8);
  target.writeUInt32BE(cookieLow, 12);
  target.writeUInt32BE(payloadBytes, 16);
}

function writeU64(target: Buffer, at: number, value: number): void {
  target.writeUInt32BE(Math.floor(value / 0x1_0000_0000), at);
  target.writeUInt32BE(value >>> 0, at + 4);
}
