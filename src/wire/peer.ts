// One authenticated wire connection between two meshblock processes (SDC↔SDS, SDS↔SDS,
// SDS/SDC↔MDM). Either side may send requests; replies come back in any order, matched
// by request id. Frames are header.ts's 64-byte header plus payload.
//
// The connection is made of three parts:
//
//   handshake.ts      setup: both ends prove the cluster secret (HMAC challenge-response)
//   frame-reader.ts   frames off the socket: header checks, payload assembly, direct reads
//   peer.ts (here)    requests and replies: matching by id, timeouts, the bounds below,
//                     frames onto the socket (corked per turn of the event loop)
//
// Bounds (limits.ts), in both directions:
//
// - Requests we send: at most `inflightBytesMax` bytes of payload and
//   wireRequestsInflightMax requests awaiting replies, and none is written while the
//   socket holds wireWritableBytesMax queued bytes or wireBlockedWritesMax frames written
//   since write() returned false; request() waits for room ('drain' or a reply), and
//   fails with MB_ERR_WIRE_SEND_TIMEOUT if none comes within its timeout.
// - Requests we serve: at most `inflightBytesMax` bytes of request payload plus the reply
//   bytes they will need (`replyBytesOf`), and wireRequestsInflightMax requests; and no new
//   request is read while our socket is backed up as above (a peer that asks and does not
//   read the answers). Past any of these the frame reader stops between frames and the
//   socket is paused, until handlers finish or the socket drains.
// - Requests we serve, across connections: a peer given a ServingBudget (serving-budget.ts)
//   also stops reading while the budget is spent, unless it serves nothing at the moment.

import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { assert } from '../common/assert.js';
import { crc32c } from '../common/crc32c.js';
import { payloadPool, releasePayload } from '../common/buffer-pool.js';
import { encodeHeader, wirePayloadBytesMax, WireError, WireStatus, type WireHeader } from './header.js';
import { FrameReader } from './frame-reader.js';
import { handshake, wireServiceOpMin, type PeerIdentity, type PeerRole } from './handshake.js';
import {
  wireBlockedWritesMax,
  wireInflightBytesMaxDefault,
  wireRequestsInflightMax,
  wireRequestTimeoutMsDefault,
  wireSetupTimeoutMs,
  wireWritableBytesMax,
} from '../common/limits.js';
import { ioReplyBytesOf } from './sds-ops.js';
import type { ServingBudget } from './serving-budget.js';

// Names other modules import from here, wherever they are defined.
export { WireError, WireStatus } from './header.js';
export { WireOp, type PeerIdentity, type PeerRole } from './handshake.js';
export { wireInflightBytesMaxDefault, wireRequestTimeoutMsDefault, wireSetupTimeoutMs } from '../common/limits.js';

export interface WirePeerOptions {
  clusterId: string;
  /** The shared cluster secret; never sent. */
  secret: Buffer;
  role: PeerRole;
  name: string;
  log: Logger;
  /** Checksum payloads we send (CRC-32C); received checksums are always checked. */
  payloadChecksums?: boolean;
  /** Bytes in flight each way (see "Bounds" above); default wireInflightBytesMaxDefault. */
  inflightBytesMax?: number;
  /** Serves a request from the other side; resolve with the reply, or throw to fail it. */
  onRequest?: (request: WireRequest) => Promise<WireReply>;
  /**
   * The reply payload bytes serving `request` will take, counted against `inflightBytesMax`
   * from the moment it is read (a 40-byte READ may hold a 1 MiB reply). Default:
   * ioReplyBytesOf (sds-ops.ts), which knows the SDS's READ; other ops count none.
   */
  replyBytesOf?: (request: WireRequest) => number;
}

export interface WireRequest {
  op: number;
  epoch: number;
  payload: Buffer;
}

export interface WireReply {
  status: number;
  payload?: Buffer;
  /** The payload came from payloadPool and is the peer's to release once it is sent. */
  releaseAfterSend?: boolean;
}

export interface WireResponse {
  status: number;
  /**
   * A large payload comes from payloadPool: the caller may give it back with
   * releasePayload() after its last use, or leave it to the garbage collector.
   */
  payload: Buffer;
}

interface Pending {
  resolve: (response: WireResponse) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
  payloadBytes: number;
  replyInto: Buffer | undefined;
}

export interface RequestOptions {
  epoch?: number;
  /**
   * How long to wait for the reply once the request is sent; also how long to wait for
   * room to send it (see the bounds above). Default wireRequestTimeoutMsDefault.
   */
  timeoutMs?: number;
  /**
   * A successful reply of exactly this many bytes is received straight into this buffer,
   * and is the response's payload (not to be released). The caller must not give the
   * buffer to anyone else before the request settles; if it times out while the reply is
   * arriving into it, the connection is dropped first, so nothing is written to it after.
   */
  replyInto?: Buffer | undefined;
}

/** The payload of replies that carry none (never written to: it has no bytes). */
const emptyPayload = Buffer.alloc(0);

export class WirePeer {
  private readonly pending = new Map<number, Pending>();
  private nextRequestId = 1;
  private sentInflightBytes = 0;
  private servedInflightBytes = 0;
  private servedInflightCount = 0;
  /** Frames written while the socket was not draining (reset by 'drain'). */
  private blockedWrites = 0;
  /** Callers of request() waiting for room; woken when a request retires, on 'drain', or on failure. */
  private readonly roomWaiters = new Set<() => void>();
  /** Rejects the setup step waiting for a frame, if the connection fails first. */
  private setupReject: ((err: Error) => void) | null = null;
  private readonly inflightBytesMax: number;
  /** Shared with the server's other client connections (shareServingBudget), or null. */
  private budget: ServingBudget | null = null;
  private readonly onBudget = (): void => this.maybeReadAgain();
  private readonly replyBytesOf: (request: WireRequest) => number;
  private readonly reader: FrameReader;
  private closing = false;
  private corked = false;
  private failure: Error | null = null;
  /** Who is at the other end, once setup has proven it. */
  remote: PeerIdentity | null = null;
  readonly closed: Promise<void>;

  private constructor(
    private readonly socket: Socket,
    private readonly options: WirePeerOptions,
  ) {
    this.inflightBytesMax = options.inflightBytesMax ?? wireInflightBytesMaxDefault;
    this.replyBytesOf = options.replyBytesOf ?? ((request) => ioReplyBytesOf(request.op, request.payload));
    socket.setNoDelay(true);
    this.reader = new FrameReader(socket, {
      clusterId: options.clusterId,
      log: options.log,
      replyInto: (header) => (header.status === WireStatus.Ok ? this.pending.get(header.requestId)?.replyInto : undefined),
      onBroken: (err) => this.destroy(err),
    });
    socket.on('drain', () => {
      this.blockedWrites = 0;
      this.wakeRoomWaiters();
      this.maybeReadAgain();
    });
    socket.on('error', (err) => this.fail(new WireError('MB_ERR_WIRE_SOCKET', `wire connection error: ${err.message}`, { cause: err })));
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.fail(new WireError('MB_ERR_WIRE_CLOSED', 'wire connection closed'));
        resolve();
      });
    });
  }

  /** Runs setup as the side that connected. */
  static async connect(socket: Socket, options: WirePeerOptions): Promise<WirePeer> {
    const peer = new WirePeer(socket, options);
    await peer.setup('connector');
    return peer;
  }

  /** Runs setup as the side that accepted. */
  static async accept(socket: Socket, options: WirePeerOptions): Promise<WirePeer> {
    const peer = new WirePeer(socket, options);
    await peer.setup('acceptor');
    return peer;
  }

  // --- setup -------------------------------------------------------------------------

  private async setup(side: 'connector' | 'acceptor'): Promise<void> {
    const timer = setTimeout(
      () => this.destroy(new WireError('MB_ERR_WIRE_SETUP_TIMEOUT', `wire setup took over ${wireSetupTimeoutMs} ms`)),
      wireSetupTimeoutMs,
    );
    try {
      this.remote = await handshake(
        side,
        {
          send: (op, reply, status, payload) => this.sendFrame(op, reply, status, 0, 0, payload),
          next: () => this.nextSetupFrame(),
          remoteAddress: this.socket.remoteAddress,
        },
        this.options,
      );
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.destroy(error);
      throw error;
    } finally {
      clearTimeout(timer);
    }
    this.reader.setHandler((header, payload) => this.onFrame(header, payload));
  }

  /** The next frame during setup; rejects if the connection fails first. */
  private nextSetupFrame(): Promise<{ header: WireHeader; payload: Buffer }> {
    return new Promise((resolve, reject) => {
      if (this.failure !== null) return reject(this.failure);
      this.setupReject = reject;
      this.reader.setHandler((header, payload) => {
        this.reader.setHandler(null);
        this.setupReject = null;
        resolve({ header, payload });
      });
    });
  }

  // --- requests ------------------------------------------------------------------------

  /**
   * Sends a request and resolves with the reply; rejects on timeout, failure or close.
   * Not an async function: with room to send (the common case) the caller gets the one
   * promise the reply settles, not a second one wrapped around it.
   */
  request(op: number, payload: Buffer | readonly Buffer[], options: RequestOptions = {}): Promise<WireResponse> {
    try {
      assert(op >= wireServiceOpMin, 'ops below 16 are reserved for connection setup');
      const payloadBytes = Buffer.isBuffer(payload) ? payload.length : payload.reduce((sum, part) => sum + part.length, 0);
      const timeoutMs = options.timeoutMs ?? wireRequestTimeoutMsDefault;
      if (this.roomToSend(payloadBytes)) return this.send(op, payload, payloadBytes, timeoutMs, options);
      return this.waitForRoom(op, payloadBytes, timeoutMs).then(() => this.send(op, payload, payloadBytes, timeoutMs, options));
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private send(op: number, payload: Buffer | readonly Buffer[], payloadBytes: number, timeoutMs: number, options: RequestOptions): Promise<WireResponse> {
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.closing) return Promise.reject(new WireError('MB_ERR_WIRE_CLOSING', 'wire connection is closing'));
    const requestId = this.nextRequestId++;
    return new Promise<WireResponse>((resolve, reject) => {
      const timer = setTimeout(() => {
        const timedOut = new WireError('MB_ERR_WIRE_TIMEOUT', `request ${requestId} (op ${op}) got no reply in ${timeoutMs} ms`);
        // Its reply is arriving into the caller's buffer: stop the socket before the caller
        // hears of the timeout and reuses the buffer.
        if (this.reader.assemblingFor === requestId) this.destroy(timedOut);
        this.retire(requestId);
        reject(timedOut);
      }, timeoutMs);
      this.pending.set(requestId, { resolve, reject, timer, payloadBytes, replyInto: options.replyInto });
      this.sentInflightBytes += payloadBytes;
      this.sendFrame(op, false, WireStatus.Ok, requestId, options.epoch ?? 0, payload);
    });
  }

  /** Stops sending requests, waits for those in flight, then closes. */
  async close(): Promise<void> {
    this.closing = true;
    while (this.pending.size > 0 && this.failure === null) await this.nextRoom(null);
    this.socket.end();
    await this.closed;
  }

  /** Aborts: every pending request fails with `err`. */
  destroy(err: Error = new WireError('MB_ERR_WIRE_DESTROYED', 'wire connection destroyed')): void {
    this.fail(err);
    this.socket.destroy();
  }

  /** True when a request of `payloadBytes` may be sent now (or the connection has failed). */
  private roomToSend(payloadBytes: number): boolean {
    if (this.failure !== null) return true;
    if (this.sentInflightBytes > 0 && this.sentInflightBytes + payloadBytes > this.inflightBytesMax) return false;
    return this.pending.size < wireRequestsInflightMax && !this.backedUp();
  }

  /** Waits until roomToSend(); throws MB_ERR_WIRE_SEND_TIMEOUT if that takes over `timeoutMs`. */
  private async waitForRoom(op: number, payloadBytes: number, timeoutMs: number): Promise<void> {
    const deadlineMs = Date.now() + timeoutMs;
    while (!this.roomToSend(payloadBytes)) {
      const remainingMs = deadlineMs - Date.now();
      if (remainingMs <= 0) {
        throw new WireError(
          'MB_ERR_WIRE_SEND_TIMEOUT',
          `a request (op ${op}) found no room to send in ${timeoutMs} ms: ${this.pending.size} requests and ${this.socket.writableLength} bytes were still queued to a peer that is not taking them`,
        );
      }
      await this.nextRoom(remainingMs);
    }
  }

  /** Resolves at the next retire, 'drain' or failure, or after `timeoutMs` (null: no limit). */
  private nextRoom(timeoutMs: number | null): Promise<void> {
    return new Promise((resolve) => {
      const timer = timeoutMs === null ? null : setTimeout(wake, timeoutMs);
      const waiters = this.roomWaiters;
      function wake(): void {
        if (timer !== null) clearTimeout(timer);
        waiters.delete(wake);
        resolve();
      }
      waiters.add(wake);
    });
  }

  private wakeRoomWaiters(): void {
    for (const wake of [...this.roomWaiters]) wake();
  }

  private retire(requestId: number): Pending | undefined {
    const entry = this.pending.get(requestId);
    if (entry === undefined) return undefined;
    this.pending.delete(requestId);
    clearTimeout(entry.timer);
    this.sentInflightBytes -= entry.payloadBytes;
    this.wakeRoomWaiters();
    return entry;
  }

  private fail(err: Error): void {
    if (this.failure !== null) return;
    this.failure = err;
    this.reader.halt();
    this.setupReject?.(err);
    this.setupReject = null;
    for (const requestId of [...this.pending.keys()]) this.retire(requestId)?.reject(err);
    this.wakeRoomWaiters();
    this.budget?.forget(this.onBudget);
  }

  // --- serving -------------------------------------------------------------------------

  private onFrame(header: WireHeader, payload: Buffer): void {
    if (header.reply) {
      const entry = this.retire(header.requestId);
      if (entry === undefined) {
        this.options.log.debug({ requestId: header.requestId }, 'late or unknown wire reply dropped');
        return;
      }
      entry.resolve({ status: header.status, payload });
      return;
    }
    const handler = this.options.onRequest;
    if (handler === undefined || header.op < wireServiceOpMin) {
      this.sendFrame(header.op, true, WireStatus.UnknownOp, header.requestId, header.epoch, emptyPayload);
      this.stopReadingIfOverBounds();
      return;
    }
    const request: WireRequest = { op: header.op, epoch: header.epoch, payload };
    // What this request holds until its handler is done: its payload, and the reply being
    // prepared (once sent, the reply counts in the socket's queue instead).
    const servedBytes = payload.length + Math.min(Math.max(this.replyBytesOf(request), 0), wirePayloadBytesMax);
    this.servedInflightBytes += servedBytes;
    this.servedInflightCount += 1;
    const budget = this.budget;
    budget?.charge(servedBytes);
    this.stopReadingIfOverBounds();
    // One then() with both outcomes, each ending in served(): no finally() promise per request.
    handler(request).then(
      (reply) => {
        try {
          this.sendFrame(header.op, true, reply.status, header.requestId, header.epoch, reply.payload ?? emptyPayload, reply.releaseAfterSend === true);
        } finally {
          this.served(payload, servedBytes, budget);
        }
      },
      (err: unknown) => {
        try {
          this.options.log.warn({ err, op: header.op }, 'wire request failed');
          this.sendFrame(header.op, true, WireStatus.Failed, header.requestId, header.epoch, Buffer.from(String(err instanceof Error ? err.message : err)));
        } finally {
          this.served(payload, servedBytes, budget);
        }
      },
    );
  }

  /** The handler is done with a request of `servedBytes` (payload and reply), charged to `budget`. */
  private served(payload: Buffer, servedBytes: number, budget: ServingBudget | null): void {
    // A pooled payload goes back (once any socket write forwarding it has finished).
    releasePayload(payload);
    this.servedInflightBytes -= servedBytes;
    this.servedInflightCount -= 1;
    assert(this.servedInflightBytes >= 0 && this.servedInflightCount >= 0, 'served in-flight accounting went negative');
    this.stopReadingIfOverBounds();
    this.maybeReadAgain();
    // Last: releasing may wake other peers, which should see this one's state settled.
    budget?.release(servedBytes);
  }

  /**
   * From now on requests read on this connection count against `budget` too, shared with
   * the server's other client connections (serving-budget.ts).
   */
  shareServingBudget(budget: ServingBudget): void {
    this.budget = budget;
  }

  /** The socket holds more than we let a peer leave unread (see limits.ts). */
  private backedUp(): boolean {
    return this.socket.writableLength >= wireWritableBytesMax || this.blockedWrites >= wireBlockedWritesMax;
  }

  private overServingBounds(): boolean {
    return this.servedInflightCount >= wireRequestsInflightMax || this.servedInflightBytes > this.inflightBytesMax || this.backedUp() || this.overBudget();
  }

  /** The shared budget is spent, and this peer has a request in flight (else it may read one). */
  private overBudget(): boolean {
    return this.budget !== null && this.servedInflightCount > 0 && this.budget.spent;
  }

  private stopReadingIfOverBounds(): void {
    if (!this.reader.stopped && this.failure === null && this.overServingBounds()) this.reader.stop();
    this.waitForBudget();
  }

  private maybeReadAgain(): void {
    if (this.reader.stopped && this.failure === null && !this.overServingBounds()) this.reader.start();
    this.waitForBudget();
  }

  /** Stopped for the budget: to be woken when another connection releases some. */
  private waitForBudget(): void {
    if (this.reader.stopped && this.failure === null && this.overBudget()) this.budget?.wait(this.onBudget);
  }

  // --- sending -------------------------------------------------------------------------

  /**
   * Queues one frame. Parts of the payload from payloadPool are held until the socket is
   * done with them; with `releaseAfterSend`, a pooled payload is also released then.
   */
  private sendFrame(op: number, reply: boolean, status: number, requestId: number, epoch: number, payload: Buffer | readonly Buffer[], releaseAfterSend = false): void {
    const parts = Buffer.isBuffer(payload) ? [payload] : payload;
    if (this.socket.destroyed) {
      if (releaseAfterSend) for (const part of parts) payloadPool.release(part);
      return;
    }
    let payloadBytes = 0;
    let payloadCrc32c: number | null = this.options.payloadChecksums === true ? 0 : null;
    for (const part of parts) {
      payloadBytes += part.length;
      if (payloadCrc32c !== null) payloadCrc32c = crc32c(part, payloadCrc32c);
    }
    const header = encodeHeader({ op, reply, status, clusterId: this.options.clusterId, requestId, epoch, payloadBytes, payloadCrc32c });
    // Setup frames go at once: a refusal is followed by destroy(), which drops corked bytes.
    if (this.remote === null) {
      this.socket.write(payloadBytes > 0 ? Buffer.concat([header, ...parts]) : header);
      return;
    }
    // Frames sent in the same turn of the event loop leave in one writev: under load every
    // wake-up of this process answers several requests, and each send wakes the receiver.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(this.uncork);
    }
    // write() said "stop" for an earlier frame and 'drain' has not come: this one is queued
    // past that point, and counted (backedUp()).
    if (this.socket.writableNeedDrain) this.blockedWrites += 1;
    this.socket.write(header);
    for (const part of parts) {
      if (part.length === 0) continue;
      if (!payloadPool.hold(part)) {
        this.socket.write(part);
        continue;
      }
      // The write callback runs when the kernel has the bytes, or the socket died.
      this.socket.write(part, () => {
        payloadPool.unhold(part);
        if (releaseAfterSend) payloadPool.release(part);
      });
    }
  }

  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };
}
