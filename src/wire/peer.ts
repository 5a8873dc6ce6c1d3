// One authenticated wire connection between two meshblock processes (SDC↔SDS, SDS↔SDS,
// SDS/SDC↔MDM). Either side may send requests; replies come back in any order, matched
// by request id. Frames are header.ts's 64-byte header plus payload.
//
// Connection setup proves that both ends know the cluster secret without sending it
// (mutual challenge-response, HMAC-SHA256 over both nonces):
//
//   connector                                   acceptor
//   HELLO  { role, name, nonceC }        --->
//                                        <---   HELLO { role, name, nonceS, proofS }
//   PROOF  { proofC }                    --->                 proofS = HMAC(secret, "acceptor" | nonceC | nonceS)
//                                        <---   READY {}      proofC = HMAC(secret, "connector" | nonceS | nonceC)
//
// Each side checks the other's proof with a constant-time compare; a peer that fails is
// told (status AUTH_FAILED) and dropped, and the failure is logged on both sides. Frames
// for another cluster id, of another protocol version, or with a bad checksum drop the
// connection: past a bad frame nothing on the stream can be trusted.
//
// Bounds: requests we send hold at most `inflightBytesMax` bytes of payload in flight
// (further request() calls wait for room); requests we serve hold at most as many bytes,
// past which we stop reading the socket.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { assert } from '../common/assert.js';
import { crc32c } from '../common/crc32c.js';
import { MeshblockError } from '../common/errors.js';
import { MiB } from '../common/units.js';
import { BufferPool, payloadPool, releasePayload } from '../common/buffer-pool.js';
import { BorrowedReads, borrowedDataEvent, directDataEvent } from '../common/borrowed-reads.js';
import { decodeHeader, encodeHeader, verifyPayload, wireHeaderBytes, WireFrameError, type WireHeader } from './header.js';

/** Operations below 16 belong to connection setup; the rest are defined by their users. */
export const WireOp = {
  Hello: 1,
  Proof: 2,
  Ready: 3,
} as const;

export const WireStatus = {
  Ok: 0,
  AuthFailed: 1,
  UnknownOp: 2,
  Failed: 3,
  StaleEpoch: 4,
} as const;

export const wireSetupTimeoutMs = 10_000;
export const wireRequestTimeoutMsDefault = 30_000;
export const wireInflightBytesMaxDefault = 64 * MiB;
const nonceBytes = 32;

export class WireError extends MeshblockError {}

export type PeerRole = 'sdc' | 'sds' | 'mdm' | 'test';

export interface WirePeerOptions {
  clusterId: string;
  /** The shared cluster secret; never sent. */
  secret: Buffer;
  role: PeerRole;
  name: string;
  log: Logger;
  /** Checksum payloads we send (CRC-32C); received checksums are always checked. */
  payloadChecksums?: boolean;
  inflightBytesMax?: number;
  /** Serves a request from the other side; resolve with the reply, or throw to fail it. */
  onRequest?: (request: WireRequest) => Promise<WireReply>;
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
  timeoutMs?: number;
  /**
   * A successful reply of exactly this many bytes is received straight into this buffer,
   * and is the response's payload (not to be released). The caller must not give the
   * buffer to anyone else before the request settles; if it times out while the reply is
   * arriving into it, the connection is dropped first, so nothing is written to it after.
   */
  replyInto?: Buffer | undefined;
}

export interface PeerIdentity {
  role: PeerRole;
  name: string;
}

export class WirePeer {
  private readonly pending = new Map<number, Pending>();
  private nextRequestId = 1;
  private sentInflightBytes = 0;
  private servedInflightBytes = 0;
  /** Woken whenever a request we sent retires, or the connection fails. */
  private readonly retireWaiters: Array<() => void> = [];
  /** Rejects the setup step waiting for a frame, if the connection fails first. */
  private setupReject: ((err: Error) => void) | null = null;
  private readonly inflightBytesMax: number;
  private closing = false;
  private corked = false;
  private failure: Error | null = null;
  private received: Buffer[] = [];
  private receivedBytes = 0;
  private header: WireHeader | null = null;
  /** A large payload being received straight into a pooled buffer, and how much is in. */
  private assembling: Buffer | null = null;
  private assembledBytes = 0;
  /** The request whose reply is being assembled in its caller's buffer (replyInto), if any. */
  private assemblingFor: number | null = null;
  /** While onBorrowedData runs: the store of the borrowed chunk, whose bytes must be copied to be kept. */
  private borrowedStore: ArrayBufferLike | null = null;
  /** The socket's borrowed reads, if it has them: a large payload's rest is read straight into its buffer. */
  private readonly reads: BorrowedReads | undefined;
  private onFrame: ((header: WireHeader, payload: Buffer) => void) | null = null;
  /** Who is at the other end, once setup has proven it. */
  remote: PeerIdentity | null = null;
  readonly closed: Promise<void>;

  private constructor(
    private readonly socket: Socket,
    private readonly options: WirePeerOptions,
  ) {
    this.inflightBytesMax = options.inflightBytesMax ?? wireInflightBytesMaxDefault;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.reads = BorrowedReads.of(socket);
    socket.on(borrowedDataEvent, (chunk: Buffer) => this.onBorrowedData(chunk));
    socket.on(directDataEvent, (landed: Buffer) => this.onDirectData(landed));
    if (socket.isPaused()) socket.resume();
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
      const ownNonce = randomBytes(nonceBytes);
      if (side === 'connector') {
        this.sendFrame(WireOp.Hello, false, WireStatus.Ok, 0, 0, helloPayload(ownNonce, this.options, null));
        const reply = await this.nextFrame(WireOp.Hello);
        const { nonce: remoteNonce, identity, proof } = parseHello(reply.payload, true);
        this.checkProof(proof, 'acceptor', ownNonce, remoteNonce, identity);
        this.sendFrame(WireOp.Proof, false, WireStatus.Ok, 0, 0, this.proof('connector', remoteNonce, ownNonce));
        await this.nextFrame(WireOp.Ready);
        this.remote = identity;
      } else {
        const request = await this.nextFrame(WireOp.Hello);
        const { nonce: remoteNonce, identity } = parseHello(request.payload, false);
        this.sendFrame(WireOp.Hello, true, WireStatus.Ok, 0, 0, helloPayload(ownNonce, this.options, this.proof('acceptor', remoteNonce, ownNonce)));
        const proof = await this.nextFrame(WireOp.Proof);
        this.checkProof(proof.payload, 'connector', ownNonce, remoteNonce, identity);
        this.sendFrame(WireOp.Ready, true, WireStatus.Ok, 0, 0, Buffer.alloc(0));
        this.remote = identity;
      }
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.destroy(error);
      throw error;
    } finally {
      clearTimeout(timer);
    }
    this.setFrameHandler((header, payload) => this.onEstablishedFrame(header, payload));
  }

  /** Frames wait in the receive buffer while no handler is set, and are read when one is. */
  private setFrameHandler(handler: ((header: WireHeader, payload: Buffer) => void) | null): void {
    this.onFrame = handler;
    if (handler !== null) queueMicrotask(() => this.processReceived());
  }

  private proof(side: 'connector' | 'acceptor', first: Buffer, second: Buffer): Buffer {
    return createHmac('sha256', this.options.secret)
      .update(`meshblock-wire/${side}/${this.options.clusterId}/`)
      .update(first)
      .update(second)
      .digest();
  }

  private checkProof(proof: Buffer, side: 'connector' | 'acceptor', ownNonce: Buffer, remoteNonce: Buffer, identity: PeerIdentity): void {
    const expected = side === 'acceptor' ? this.proof('acceptor', ownNonce, remoteNonce) : this.proof('connector', ownNonce, remoteNonce);
    if (proof.length !== expected.length || !timingSafeEqual(proof, expected)) {
      this.options.log.warn({ remote: identity, peer: this.socket.remoteAddress }, 'wire peer failed the cluster secret challenge');
      this.sendFrame(WireOp.Ready, true, WireStatus.AuthFailed, 0, 0, Buffer.from('cluster secret challenge failed'));
      throw new WireError('MB_ERR_WIRE_AUTH', `peer ${identity.role} '${identity.name}' does not know the cluster secret`);
    }
  }

  /** The next frame during setup; it must be `op`, and a failure status ends setup. */
  private nextFrame(op: number): Promise<{ header: WireHeader; payload: Buffer }> {
    return new Promise((resolve, reject) => {
      if (this.failure !== null) return reject(this.failure);
      this.setupReject = reject;
      this.setFrameHandler((header, payload) => {
        this.onFrame = null;
        if (header.status === WireStatus.AuthFailed) {
          reject(new WireError('MB_ERR_WIRE_AUTH', `the peer refused us: ${payload.toString()}`));
        } else if (header.op !== op) {
          reject(new WireError('MB_ERR_WIRE_SETUP', `expected setup op ${op}, got ${header.op}`));
        } else {
          resolve({ header, payload });
        }
      });
    });
  }

  // --- requests ------------------------------------------------------------------------

  /** Sends a request and resolves with the reply; rejects on timeout, failure or close. */
  async request(op: number, payload: Buffer | readonly Buffer[], options: RequestOptions = {}): Promise<WireResponse> {
    assert(op >= 16, 'ops below 16 are reserved for connection setup');
    const payloadBytes = Buffer.isBuffer(payload) ? payload.length : payload.reduce((sum, part) => sum + part.length, 0);
    while (this.sentInflightBytes > 0 && this.sentInflightBytes + payloadBytes > this.inflightBytesMax && this.failure === null) {
      await this.nextRetire();
    }
    if (this.failure !== null) throw this.failure;
    if (this.closing) throw new WireError('MB_ERR_WIRE_CLOSING', 'wire connection is closing');
    const requestId = this.nextRequestId++;
    const timeoutMs = options.timeoutMs ?? wireRequestTimeoutMsDefault;
    return new Promise<WireResponse>((resolve, reject) => {
      const timer = setTimeout(() => {
        const timedOut = new WireError('MB_ERR_WIRE_TIMEOUT', `request ${requestId} (op ${op}) got no reply in ${timeoutMs} ms`);
        // Its reply is arriving into the caller's buffer: stop the socket before the caller
        // hears of the timeout and reuses the buffer.
        if (this.assemblingFor === requestId) this.destroy(timedOut);
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
    while (this.pending.size > 0 && this.failure === null) await this.nextRetire();
    this.socket.end();
    await this.closed;
  }

  /** Aborts: every pending request fails with `err`. */
  destroy(err: Error = new WireError('MB_ERR_WIRE_DESTROYED', 'wire connection destroyed')): void {
    this.fail(err);
    this.socket.destroy();
  }

  private retire(requestId: number): Pending | undefined {
    const entry = this.pending.get(requestId);
    if (entry === undefined) return undefined;
    this.pending.delete(requestId);
    clearTimeout(entry.timer);
    this.sentInflightBytes -= entry.payloadBytes;
    this.wakeRetireWaiters();
    return entry;
  }

  private nextRetire(): Promise<void> {
    return new Promise((resolve) => this.retireWaiters.push(resolve));
  }

  private wakeRetireWaiters(): void {
    for (const wake of this.retireWaiters.splice(0)) wake();
  }

  private fail(err: Error): void {
    if (this.failure !== null) return;
    this.failure = err;
    this.setupReject?.(err);
    this.setupReject = null;
    for (const requestId of [...this.pending.keys()]) this.retire(requestId)?.reject(err);
    this.wakeRetireWaiters();
  }

  // --- frames --------------------------------------------------------------------------

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

  /**
   * Bytes in the socket's own read buffer (connectTcp's borrowed reads), valid only during
   * this call: large payloads are copied into their pooled buffer as usual, and whatever
   * else is kept past this call (small payloads, a partial frame) is copied out.
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
    if (this.failure !== null) return;
    const target = this.assembling;
    if (target === null || landed.buffer !== target.buffer || landed.byteOffset !== target.byteOffset + this.assembledBytes || this.receivedBytes !== 0) {
      this.destroy(new WireError('MB_ERR_WIRE_INTERNAL', 'a direct read landed outside the payload being received'));
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
    this.reads.direct = target !== null && this.receivedBytes === 0 && this.failure === null ? target.subarray(this.assembledBytes) : null;
  }

  private onData(chunk: Buffer): void {
    this.received.push(chunk);
    this.receivedBytes += chunk.length;
    this.processReceived();
  }

  private processReceived(): void {
    try {
      while (this.onFrame !== null && this.failure === null) {
        if (this.header === null) {
          if (this.receivedBytes < wireHeaderBytes) return;
          const header = decodeHeader(this.take(wireHeaderBytes));
          if (header.clusterId !== this.options.clusterId) {
            throw new WireFrameError('MB_ERR_WIRE_CLUSTER', `frame for cluster ${header.clusterId}, this is cluster ${this.options.clusterId}`);
          }
          this.header = header;
          // A reply the caller asked for in its own buffer goes there; any other large
          // payload is copied into one pooled buffer as it arrives: no concat of the
          // socket's chunks into a fresh allocation at the end.
          const into = header.reply && header.status === WireStatus.Ok ? this.pending.get(header.requestId)?.replyInto : undefined;
          if (into !== undefined && into.length === header.payloadBytes && into.length > 0) {
            this.assembling = into;
            this.assembledBytes = 0;
            this.assemblingFor = header.requestId;
          } else if (BufferPool.pooled(header.payloadBytes)) {
            this.assembling = payloadPool.acquire(header.payloadBytes);
            this.assembledBytes = 0;
          }
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
        this.onFrame(header, payload);
      }
    } catch (err) {
      this.options.log.warn({ err, peer: this.socket.remoteAddress }, 'dropping wire connection: bad frame');
      this.destroy(err instanceof Error ? err : new Error(String(err)));
    }
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

  private onEstablishedFrame(header: WireHeader, payload: Buffer): void {
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
    if (handler === undefined || header.op < 16) {
      this.sendFrame(header.op, true, WireStatus.UnknownOp, header.requestId, header.epoch, Buffer.alloc(0));
      return;
    }
    this.servedInflightBytes += payload.length;
    if (this.servedInflightBytes > this.inflightBytesMax) this.socket.pause();
    handler({ op: header.op, epoch: header.epoch, payload }).then(
      (reply) => this.sendFrame(header.op, true, reply.status, header.requestId, header.epoch, reply.payload ?? Buffer.alloc(0), reply.releaseAfterSend === true),
      (err: unknown) => {
        this.options.log.warn({ err, op: header.op }, 'wire request failed');
        this.sendFrame(header.op, true, WireStatus.Failed, header.requestId, header.epoch, Buffer.from(String(err instanceof Error ? err.message : err)));
      },
    ).finally(() => {
      // The handler is done with the request: a pooled payload goes back (once any socket
      // write forwarding it has finished).
      releasePayload(payload);
      this.servedInflightBytes -= payload.length;
      if (this.servedInflightBytes <= this.inflightBytesMax && this.socket.isPaused()) this.socket.resume();
    });
  }
}

function helloPayload(nonce: Buffer, options: WirePeerOptions, proof: Buffer | null): Buffer {
  // nonce (32) | proof length (u16) | proof | identity JSON
  const identity = Buffer.from(JSON.stringify({ role: options.role, name: options.name }));
  const proofBytes = proof ?? Buffer.alloc(0);
  const length = Buffer.alloc(2);
  length.writeUInt16BE(proofBytes.length, 0);
  return Buffer.concat([nonce, length, proofBytes, identity]);
}

function parseHello(payload: Buffer, withProof: boolean): { nonce: Buffer; identity: PeerIdentity; proof: Buffer } {
  if (payload.length < nonceBytes + 2) throw new WireError('MB_ERR_WIRE_SETUP', 'HELLO too short');
  const nonce = payload.subarray(0, nonceBytes);
  const proofBytes = payload.readUInt16BE(nonceBytes);
  if (withProof !== proofBytes > 0 || nonceBytes + 2 + proofBytes > payload.length) {
    throw new WireError('MB_ERR_WIRE_SETUP', 'HELLO proof is missing or malformed');
  }
  const proof = payload.subarray(nonceBytes + 2, nonceBytes + 2 + proofBytes);
  let identity: unknown;
  try {
    identity = JSON.parse(payload.subarray(nonceBytes + 2 + proofBytes).toString('utf8'));
  } catch {
    throw new WireError('MB_ERR_WIRE_SETUP', 'HELLO identity is not JSON');
  }
  if (
    typeof identity !== 'object' ||
    identity === null ||
    !('role' in identity) ||
    !('name' in identity) ||
    typeof identity.name !== 'string' ||
    !['sdc', 'sds', 'mdm', 'test'].includes(String(identity.role))
  ) {
    throw new WireError('MB_ERR_WIRE_SETUP', 'HELLO identity lacks a role or name');
  }
  return { nonce, identity: { role: identity.role as PeerRole, name: identity.name }, proof };
}
