// A verifying NBD client for fault-injection tests: it writes and reads random blocks of an
// export while storage processes are killed under it, and checks every byte it reads back.
//
// Why our own client: fio's nbd engine (libnbd) cannot reconnect after the server restarts,
// and a fault test must tell "the volume lost an acknowledged write" apart from "the client
// gave up". This one reconnects and re-issues what was in flight, as the kernel's NBD client
// does, and reports everything in stats() instead of throwing:
//
// - ioErrors: error replies (an NBD errno). Fault tests assert zero: the storage below must
//   hide a failed process from the client.
// - verifyFailures: a read returned bytes that are neither the last acknowledged version of
//   the block nor a version sent but never acknowledged (zeros for a block never written).
// - reconnects: connections lost (closed, reset, or a request unanswered for
//   requestTimeoutMs) and established again; fatal: reconnecting failed for
//   reconnectTimeoutMs, or the export cannot be used at all.
//
// Every block the writer writes is self-describing, so a read says exactly which write it
// saw (and a human can inspect the backing storage offline):
//
//   +0   magic 'MBVRFY01' (u64)
//   +8   seed (u32)          the writer's seed: another run's data is recognised as such
//   +12  block index (u32)   a block read at the wrong offset is recognised as misplaced
//   +16  version (u32)       per block, 1 for its first write, +1 for every later write
//   +20  block bytes (u32)   the layout's block size, for offline readers
//   +24  crc32c (u32)        of the payload, [32, blockBytes): tells torn from stale
//   +28  reserved, zero (u32)
//   +32  payload: mulberry32 words seeded from (seed, block index, version)
//
// The check is exact because the writer never has two requests on one block at once:
// while a write of version v is unacknowledged, nothing else reads or writes that block, so
// a read can only see the acknowledged version or one sent and not acknowledged (an error
// reply, or a write abandoned by a fatal connection loss, may or may not have landed).
//
// A connection loss re-sends writes with the same version, so a late arrival of the first
// send is indistinguishable from the re-send. A write that lands after a *later* version was
// acknowledged (a stale request replayed by a storage process) is caught as a failure.
// Beware after a request timeout: a server that was only slow, not gone, may still carry
// out the old connection's requests after the re-sent ones, which is that same failure;
// the kernel's NBD client has the same hazard. stats().requestTimeouts says it happened.

import * as net from 'node:net';
import { crc32c } from '../../src/common/crc32c.js';
import { InvalidArgumentError, OutOfRangeError } from '../../src/common/errors.js';
import { nbdRequestBytesMax } from '../../src/common/limits.js';
import { mulberry32, mulberry32Uint32 } from '../../src/common/seeded-random.js';
import * as P from '../../src/nbd/protocol.js';

// ---------------------------------------------------------------------------------------
// Block layout

export const VERIFY_MAGIC = 0x4d42565246593031n; // 'MBVRFY01'
export const verifyHeaderBytes = 32;
const crcOffsetBytes = 24;
const u32Max = 0xffff_ffff;

/** The hash that seeds a block version's payload words: distinct inputs, distinct streams. */
function payloadSeed(seed: number, blockIndex: number, version: number): number {
  let hash = Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(blockIndex + 1, 0xc2b2ae35) ^ Math.imul(version, 0x27d4eb2f);
  // murmur3's finaliser, so that neighbouring blocks and versions do not share low bits.
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  return (hash ^ (hash >>> 16)) >>> 0;
}

/** The exact bytes version `version` of block `blockIndex` holds (layout above). */
export function blockContent(seed: number, blockIndex: number, version: number, blockBytes: number): Buffer {
  const block = Buffer.allocUnsafe(blockBytes);
  block.writeBigUInt64BE(VERIFY_MAGIC, 0);
  block.writeUInt32BE(seed, 8);
  block.writeUInt32BE(blockIndex, 12);
  block.writeUInt32BE(version, 16);
  block.writeUInt32BE(blockBytes, 20);
  block.writeUInt32BE(0, 28);
  const next = mulberry32Uint32(payloadSeed(seed, blockIndex, version));
  for (let position = verifyHeaderBytes; position < blockBytes; position += 4) block.writeUInt32BE(next(), position);
  block.writeUInt32BE(crc32c(block.subarray(verifyHeaderBytes)), crcOffsetBytes);
  return block;
}

/** What a read of one block returned. */
export type SeenContent =
  | { kind: 'zeros' }
  | { kind: 'version'; version: number }
  | { kind: 'garbage'; detail: string };

/** Says which version of `blockIndex` `data` is, or why it is none. */
export function identifyBlock(data: Buffer, seed: number, blockIndex: number, blockBytes: number): SeenContent {
  if (data.length !== blockBytes) return { kind: 'garbage', detail: `${data.length} bytes instead of ${blockBytes}` };
  if (isAllZero(data)) return { kind: 'zeros' };
  if (data.readBigUInt64BE(0) !== VERIFY_MAGIC) return { kind: 'garbage', detail: 'no verifier header (bad magic)' };
  const headerSeed = data.readUInt32BE(8);
  const headerBlockIndex = data.readUInt32BE(12);
  const version = data.readUInt32BE(16);
  if (headerSeed !== seed) return { kind: 'garbage', detail: `written by another verifier (seed ${headerSeed})` };
  if (headerBlockIndex !== blockIndex) return { kind: 'garbage', detail: `misplaced: holds block ${headerBlockIndex}'s version ${version}` };
  if (data.readUInt32BE(20) !== blockBytes) return { kind: 'garbage', detail: `header says ${data.readUInt32BE(20)}-byte blocks` };
  if (version === 0) return { kind: 'garbage', detail: 'header says version 0' };
  if (!data.equals(blockContent(seed, blockIndex, version, blockBytes))) {
    const crcMatches = crc32c(data.subarray(verifyHeaderBytes)) === data.readUInt32BE(crcOffsetBytes);
    return {
      kind: 'garbage',
      detail: crcMatches
        ? `header of version ${version} with a self-consistent but wrong payload`
        : `header of version ${version} with a damaged payload (checksum mismatch: torn or corrupted)`,
    };
  }
  return { kind: 'version', version };
}

function isAllZero(data: Buffer): boolean {
  for (let position = 0; position < data.length; position++) if (data[position] !== 0) return false;
  return true;
}

function describeSeen(seen: SeenContent): string {
  switch (seen.kind) {
    case 'zeros':
      return 'zeros';
    case 'version':
      return `version ${seen.version}`;
    case 'garbage':
      return `garbage (${seen.detail})`;
  }
}

// ---------------------------------------------------------------------------------------
// Options and stats

export interface VerifierOptions {
  host: string;
  port: number;
  /** The export to open; '' is the default export. */
  exportName?: string;
  /** The writer uses [0, regionBytes) of the export; a multiple of blockBytes. */
  regionBytes: number;
  /** Size of every request; a multiple of 4, at least 32. Default 4096. */
  blockBytes?: number;
  /** Requests in flight (reads and writes; a flush comes on top). Default 8. */
  depth?: number;
  /** Share of writes among reads and writes, 0 to 100. Default 70. */
  writePercent?: number;
  /** An NBD_CMD_FLUSH this often while running; 0 for none. Default 500. */
  flushEveryMs?: number;
  /** Seeds block choice and content (u32); printed in stats. Default: a random one. */
  seed?: number;
  /** How long to keep trying to connect after a connection loss. Default 60000. */
  reconnectTimeoutMs?: number;
  /** A request unanswered this long counts as a connection loss. Default 30000. */
  requestTimeoutMs?: number;
  /** Where progress lines go (connection losses, reconnects, failures, summaries). */
  log?: ((line: string) => void) | undefined;
}

export interface VerifyFailure {
  /** 'run' while writing, 'verify' in verifyAll(). */
  phase: 'run' | 'verify';
  blockIndex: number;
  offsetBytes: number;
  /** The last acknowledged version; 0 means never written (zeros). */
  ackedVersion: number;
  /** Versions sent and never acknowledged, also acceptable. */
  unackedVersions: number[];
  expected: string;
  seen: string;
  /** The version the block holds, if it is a valid one of this block (a stale or lost write). */
  seenVersion: number | null;
  elapsedMs: number;
}

export interface IoErrorDetail {
  command: string;
  /** The NBD error value of the reply, and its name. */
  errno: number;
  errnoName: string;
  offsetBytes: number;
  elapsedMs: number;
}

/** The counters of VerifierStats, as waitUntil() predicates see them. */
export type VerifierProgress = Readonly<Omit<VerifierStats, 'seed' | 'ioErrorDetails' | 'verifyFailures' | 'fatal'>>;

export interface VerifierStats {
  seed: number;
  /** Acknowledged writes, completed reads (while running) and flushes. */
  writes: number;
  reads: number;
  flushes: number;
  bytesWritten: number;
  /** Error replies, all counted; the first few kept in ioErrorDetails. */
  ioErrors: number;
  ioErrorDetails: IoErrorDetail[];
  /** Wrong reads, all counted; the first few kept in verifyFailures. */
  verifyFailureCount: number;
  verifyFailures: VerifyFailure[];
  /** Connections lost and established again. */
  reconnects: number;
  /** Requests sent again on a new connection because the old one was lost. */
  reissuedRequests: number;
  /** Connection losses caused by a request unanswered for requestTimeoutMs. */
  requestTimeouts: number;
  /** Replies that broke the protocol (bad magic, unknown cookie); each drops the connection. */
  protocolErrors: number;
  /** Blocks read back and checked by verifyAll(). */
  verifiedBlocks: number;
  /** Why the writer gave up, or null. */
  fatal: string | null;
}

/** How many failure and error details stats() keeps; the counts include all of them. */
const detailsKeptMax = 20;
/** How many verify failures are also logged as they happen. */
const failuresLoggedMax = 5;
const reconnectDelayMinMs = 50;
const reconnectDelayMaxMs = 1000;
/** How long close() waits for the server to hang up after NBD_CMD_DISC. */
const closeWaitMs = 1000;
const depthMax = 1024;

const errnoNames: Record<number, string> = {
  [P.NBD_EPERM]: 'EPERM',
  [P.NBD_EIO]: 'EIO',
  [P.NBD_ENOMEM]: 'ENOMEM',
  [P.NBD_EINVAL]: 'EINVAL',
  [P.NBD_ENOSPC]: 'ENOSPC',
  [P.NBD_EOVERFLOW]: 'EOVERFLOW',
  [P.NBD_ENOTSUP]: 'ENOTSUP',
  [P.NBD_ESHUTDOWN]: 'ESHUTDOWN',
};

interface Settings {
  host: string;
  port: number;
  exportName: string;
  regionBytes: number;
  blockBytes: number;
  blockCount: number;
  depth: number;
  writePercent: number;
  flushEveryMs: number;
  seed: number;
  reconnectTimeoutMs: number;
  requestTimeoutMs: number;
  log: (line: string) => void;
}

function validateOptions(options: VerifierOptions): Settings {
  const integerIn = (field: string, value: number, min: number, max: number): number => {
    if (!Number.isSafeInteger(value) || value < min || value > max) throw new OutOfRangeError(field, `an integer from ${min} to ${max}`, value);
    return value;
  };
  if (options.host === '') throw new InvalidArgumentError('host', 'must not be empty');
  const port = integerIn('port', options.port, 1, 65535);
  const exportName = options.exportName ?? '';
  const blockBytes = integerIn('blockBytes', options.blockBytes ?? 4096, verifyHeaderBytes, nbdRequestBytesMax);
  if (blockBytes % 4 !== 0) throw new OutOfRangeError('blockBytes', 'a multiple of 4', blockBytes);
  const regionBytes = integerIn('regionBytes', options.regionBytes, blockBytes, Number.MAX_SAFE_INTEGER);
  if (regionBytes % blockBytes !== 0) throw new OutOfRangeError('regionBytes', `a multiple of blockBytes (${blockBytes})`, regionBytes);
  // The header carries the block index as a u32.
  const blockCount = integerIn('regionBytes / blockBytes', regionBytes / blockBytes, 1, u32Max);
  return {
    host: options.host,
    port,
    exportName,
    regionBytes,
    blockBytes,
    blockCount,
    // More requests than blocks could not be in flight without two on one block.
    depth: Math.min(integerIn('depth', options.depth ?? 8, 1, depthMax), blockCount),
    writePercent: integerIn('writePercent', options.writePercent ?? 70, 0, 100),
    flushEveryMs: integerIn('flushEveryMs', options.flushEveryMs ?? 500, 0, 3_600_000),
    seed: integerIn('seed', options.seed ?? Math.floor(Math.random() * u32Max), 0, u32Max),
    reconnectTimeoutMs: integerIn('reconnectTimeoutMs', options.reconnectTimeoutMs ?? 60_000, 0, 3_600_000),
    requestTimeoutMs: integerIn('requestTimeoutMs', options.requestTimeoutMs ?? 30_000, 1, 3_600_000),
    log: options.log ?? (() => undefined),
  };
}

// ---------------------------------------------------------------------------------------
// One connection: handshake and framing

/** The connection cannot be used and trying again will not help (wrong size, read-only). */
class UnusableExportError extends Error {}
/** The server broke the protocol; the connection is dropped. */
class ProtocolError extends Error {}

/**
 * Bytes from the socket, handed out in exact sizes. One reader at a time; what is buffered
 * is bounded by what we asked for (depth requests' replies), so no pause is needed.
 */
class ByteReader {
  private readonly chunks: Buffer[] = [];
  private headOffsetBytes = 0;
  private bufferedBytes = 0;
  private waiter: { byteCount: number; resolve: (data: Buffer) => void; reject: (err: Error) => void } | null = null;
  private socketError: Error | null = null;
  private endError: Error | null = null;

  constructor(socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.bufferedBytes += chunk.length;
      this.wake();
    });
    socket.on('error', (err) => (this.socketError ??= err));
    socket.on('close', () => {
      this.endError = this.socketError ?? new Error('the server closed the connection');
      this.wake();
    });
  }

  read(byteCount: number): Promise<Buffer> {
    if (this.bufferedBytes >= byteCount) return Promise.resolve(this.take(byteCount));
    if (this.endError !== null) return Promise.reject(this.endError);
    if (this.waiter !== null) return Promise.reject(new Error('ByteReader: two reads at once'));
    return new Promise((resolve, reject) => (this.waiter = { byteCount, resolve, reject }));
  }

  private wake(): void {
    const waiter = this.waiter;
    if (waiter === null) return;
    if (this.bufferedBytes >= waiter.byteCount) {
      this.waiter = null;
      waiter.resolve(this.take(waiter.byteCount));
    } else if (this.endError !== null) {
      this.waiter = null;
      waiter.reject(this.endError);
    }
  }

  /** A view into one chunk when it holds all `byteCount` bytes, else a copy. */
  private take(byteCount: number): Buffer {
    this.bufferedBytes -= byteCount;
    const first = this.chunks[0];
    if (first !== undefined && first.length - this.headOffsetBytes >= byteCount) {
      const data = first.subarray(this.headOffsetBytes, this.headOffsetBytes + byteCount);
      this.advance(first, byteCount);
      return data;
    }
    const data = Buffer.allocUnsafe(byteCount);
    let filledBytes = 0;
    while (filledBytes < byteCount) {
      const chunk = this.chunks[0] as Buffer;
      const countBytes = Math.min(chunk.length - this.headOffsetBytes, byteCount - filledBytes);
      chunk.copy(data, filledBytes, this.headOffsetBytes, this.headOffsetBytes + countBytes);
      filledBytes += countBytes;
      this.advance(chunk, countBytes);
    }
    return data;
  }

  private advance(chunk: Buffer, byteCount: number): void {
    this.headOffsetBytes += byteCount;
    if (this.headOffsetBytes === chunk.length) {
      this.chunks.shift();
      this.headOffsetBytes = 0;
    }
  }
}

interface ConnectTarget {
  host: string;
  port: number;
  exportName: string;
  regionBytes: number;
}

class NbdConnection {
  private constructor(
    private readonly socket: net.Socket,
    readonly reader: ByteReader,
    readonly sizeBytes: number,
    readonly flushSupported: boolean,
    readonly closed: Promise<void>,
  ) {}

  /** Connects and negotiates `target.exportName`, all within `timeoutMs`. */
  static async open(target: ConnectTarget, timeoutMs: number): Promise<NbdConnection> {
    const socket = net.connect({ host: target.host, port: target.port });
    socket.setNoDelay(true);
    const reader = new ByteReader(socket);
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    const timer = setTimeout(() => socket.destroy(new Error(`no connection and handshake within ${timeoutMs} ms`)), timeoutMs);
    try {
      const { sizeBytes, transmissionFlags } = await handshake(socket, reader, target.exportName);
      if (sizeBytes < target.regionBytes) {
        throw new UnusableExportError(`export '${target.exportName}' has ${sizeBytes} bytes, the region needs ${target.regionBytes}`);
      }
      if ((transmissionFlags & P.NBD_FLAG_READ_ONLY) !== 0) throw new UnusableExportError(`export '${target.exportName}' is read-only`);
      const flushSupported = (transmissionFlags & P.NBD_FLAG_SEND_FLUSH) !== 0;
      return new NbdConnection(socket, reader, sizeBytes, flushSupported, closed);
    } catch (err) {
      socket.destroy();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  get destroyed(): boolean {
    return this.socket.destroyed;
  }

  /**
   * One request, header and payload together. write()'s return value is not waited on:
   * the writer never has more than depth requests (plus a flush) outstanding, which bounds
   * what can queue here.
   */
  send(type: number, cookie: bigint, offsetBytes: number, lengthBytes: number, payload: Buffer | null): void {
    if (this.socket.destroyed) return;
    const header = Buffer.allocUnsafe(P.REQUEST_HEADER_BYTES);
    header.writeUInt32BE(P.NBD_REQUEST_MAGIC, 0);
    header.writeUInt16BE(0, 4);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(cookie, 8);
    header.writeBigUInt64BE(BigInt(offsetBytes), 16);
    header.writeUInt32BE(lengthBytes, 24);
    this.socket.cork();
    this.socket.write(header);
    if (payload !== null) this.socket.write(payload);
    this.socket.uncork();
  }

  /** NBD_CMD_DISC, then wait (bounded) for the server to hang up. */
  async close(): Promise<void> {
    this.send(P.NBD_CMD_DISC, 0n, 0, 0, null);
    this.socket.end();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, closeWaitMs)))]);
    clearTimeout(timer);
    this.socket.destroy();
  }

  destroy(reason?: Error): void {
    this.socket.destroy(reason);
  }
}

/** Fixed newstyle handshake: NBD_OPT_GO, or NBD_OPT_EXPORT_NAME if the server lacks GO. */
async function handshake(socket: net.Socket, reader: ByteReader, exportName: string): Promise<{ sizeBytes: number; transmissionFlags: number }> {
  const greeting = await reader.read(18);
  if (greeting.readBigUInt64BE(0) !== P.NBD_MAGIC || greeting.readBigUInt64BE(8) !== P.NBD_IHAVEOPT) {
    throw new UnusableExportError('not a newstyle NBD server (bad greeting)');
  }
  const handshakeFlags = greeting.readUInt16BE(16);
  if ((handshakeFlags & P.NBD_FLAG_FIXED_NEWSTYLE) === 0) throw new UnusableExportError('the server does not speak fixed newstyle');
  const noZeroes = (handshakeFlags & P.NBD_FLAG_NO_ZEROES) !== 0;
  const clientFlags = Buffer.allocUnsafe(4);
  clientFlags.writeUInt32BE(P.NBD_FLAG_C_FIXED_NEWSTYLE | (noZeroes ? P.NBD_FLAG_C_NO_ZEROES : 0), 0);
  socket.write(clientFlags);

  const nameBytes = Buffer.from(exportName);
  // NBD_OPT_GO data: name length (u32), name, number of info requests (u16, none).
  const goData = Buffer.alloc(4 + nameBytes.length + 2);
  goData.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(goData, 4);
  sendOption(socket, P.NBD_OPT_GO, goData);
  let exportInfo: { sizeBytes: number; transmissionFlags: number } | null = null;
  for (;;) {
    const header = await reader.read(P.OPTION_REPLY_HEADER_BYTES);
    if (header.readBigUInt64BE(0) !== P.NBD_REP_MAGIC) throw new ProtocolError('bad option reply magic');
    const replyType = header.readUInt32BE(12);
    const data = await reader.read(header.readUInt32BE(16));
    if (replyType === P.NBD_REP_INFO && data.length >= 12 && data.readUInt16BE(0) === P.NBD_INFO_EXPORT) {
      exportInfo = { sizeBytes: safeSize(data.readBigUInt64BE(2)), transmissionFlags: data.readUInt16BE(10) };
    } else if (replyType === P.NBD_REP_ACK) {
      if (exportInfo === null) throw new ProtocolError('NBD_OPT_GO acknowledged without NBD_INFO_EXPORT');
      return exportInfo;
    } else if (replyType === P.NBD_REP_ERR_UNSUP) {
      break;
    } else if ((replyType & 0x80000000) !== 0) {
      // Retried: a restarting server may not know its export yet.
      throw new Error(`NBD_OPT_GO '${exportName}' refused: reply type 0x${replyType.toString(16)} ${data.toString()}`);
    }
  }
  // No NBD_OPT_GO: the old way, where a server that does not know the name hangs up.
  sendOption(socket, P.NBD_OPT_EXPORT_NAME, nameBytes);
  const reply = await reader.read(noZeroes ? 10 : 134);
  return { sizeBytes: safeSize(reply.readBigUInt64BE(0)), transmissionFlags: reply.readUInt16BE(8) };
}

function sendOption(socket: net.Socket, option: number, data: Buffer): void {
  const header = Buffer.allocUnsafe(P.OPTION_HEADER_BYTES);
  header.writeBigUInt64BE(P.NBD_IHAVEOPT, 0);
  header.writeUInt32BE(option, 8);
  header.writeUInt32BE(data.length, 12);
  socket.write(Buffer.concat([header, data]));
}

function safeSize(sizeBytes: bigint): number {
  if (sizeBytes > BigInt(Number.MAX_SAFE_INTEGER)) throw new UnusableExportError(`export size ${sizeBytes} is beyond 2^53`);
  return Number(sizeBytes);
}

// ---------------------------------------------------------------------------------------
// Requests over a connection that comes back

type Outcome = { kind: 'ok'; data: Buffer | null } | { kind: 'error'; errno: number } | { kind: 'abandoned' };

interface PendingRequest {
  readonly sequence: number;
  readonly type: number;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  readonly payload: Buffer | null;
  readonly onDone: (outcome: Outcome) => void;
  /** On the current connection; null while waiting for one. */
  cookie: bigint | null;
  sentAtMs: number;
}

interface EngineEvents {
  onReconnect(downMs: number, attemptCount: number, reissuedCount: number): void;
  onConnectionLost(reason: string, pendingCount: number): void;
  onRequestTimeout(): void;
  onProtocolError(): void;
  onFatal(reason: string): void;
}

/**
 * Keeps requests outstanding across connection losses: each is sent, and after a loss sent
 * again on the next connection (in submission order), until it gets a reply. Gives up only
 * when no connection comes back within reconnectTimeoutMs; then every request is abandoned.
 */
class RequestEngine {
  private connection: NbdConnection | null = null;
  private state: 'new' | 'connected' | 'connecting' | 'closed' | 'failed' = 'new';
  /** By sequence number; Map order is submission order, which re-sends keep. */
  private readonly pending = new Map<number, PendingRequest>();
  private readonly byCookie = new Map<bigint, PendingRequest>();
  private nextSequence = 0;
  private nextCookie = 1n;
  private idleWaiters: Array<() => void> = [];
  private readonly timeoutTimer: NodeJS.Timeout;
  private cancelSleep: (() => void) | null = null;
  flushSupported = false;

  constructor(
    private readonly settings: Settings,
    private readonly events: EngineEvents,
  ) {
    // Checked a few times per timeout, so a hung request is noticed within ~1.25 timeouts.
    const checkEveryMs = Math.max(10, Math.min(1000, Math.floor(settings.requestTimeoutMs / 4)));
    this.timeoutTimer = setInterval(() => this.checkTimeouts(), checkEveryMs);
    this.timeoutTimer.unref();
  }

  get failed(): boolean {
    return this.state === 'failed';
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  /** The first connection, tried as long as a reconnection would be. */
  open(): Promise<boolean> {
    this.state = 'connecting';
    return this.connectLoop(false);
  }

  submit(type: number, offsetBytes: number, lengthBytes: number, payload: Buffer | null, onDone: (outcome: Outcome) => void): void {
    if (this.state === 'failed' || this.state === 'closed') {
      // Later, so that a caller submitting in a loop does not recurse.
      queueMicrotask(() => onDone({ kind: 'abandoned' }));
      return;
    }
    const request: PendingRequest = { sequence: this.nextSequence++, type, offsetBytes, lengthBytes, payload, onDone, cookie: null, sentAtMs: 0 };
    this.pending.set(request.sequence, request);
    if (this.connection !== null) this.send(this.connection, request);
  }

  /** Resolves when nothing is outstanding (answered, or abandoned by a failure). */
  idle(): Promise<void> {
    if (this.pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Hangs up politely; anything still outstanding is abandoned. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    const connection = this.connection;
    this.state = 'closed';
    this.connection = null;
    this.stopTimers();
    this.abandonAll();
    if (connection !== null) await connection.close();
  }

  destroy(): void {
    this.state = 'closed';
    this.connection?.destroy();
    this.connection = null;
    this.stopTimers();
    this.abandonAll();
  }

  private send(connection: NbdConnection, request: PendingRequest): void {
    const cookie = this.nextCookie++;
    request.cookie = cookie;
    request.sentAtMs = Date.now();
    this.byCookie.set(cookie, request);
    connection.send(request.type, cookie, request.offsetBytes, request.lengthBytes, request.payload);
  }

  private async connectLoop(isReconnect: boolean): Promise<boolean> {
    const startMs = Date.now();
    const deadlineMs = startMs + this.settings.reconnectTimeoutMs;
    let delayMs = reconnectDelayMinMs;
    let lastError = '';
    for (let attemptCount = 1; ; attemptCount++) {
      if (this.state !== 'connecting') return false;
      try {
        const timeoutMs = Math.max(1, Math.min(this.settings.requestTimeoutMs, deadlineMs - Date.now()));
        const connection = await NbdConnection.open(this.settings, timeoutMs);
        if (this.state !== 'connecting') {
          connection.destroy();
          return false;
        }
        const reissuedCount = this.adopt(connection);
        if (isReconnect) this.events.onReconnect(Date.now() - startMs, attemptCount, reissuedCount);
        return true;
      } catch (err) {
        lastError = err instanceof Error ? err.message : String(err);
        if (err instanceof UnusableExportError) {
          this.fail(`cannot use ${this.settings.host}:${this.settings.port}: ${lastError}`);
          return false;
        }
      }
      const remainingMs = deadlineMs - Date.now();
      if (remainingMs <= 0) {
        const what = isReconnect ? 'reconnect' : 'connect';
        this.fail(`could not ${what} to ${this.settings.host}:${this.settings.port} within ${this.settings.reconnectTimeoutMs} ms (${attemptCount} attempts); last error: ${lastError}`);
        return false;
      }
      await this.sleep(Math.min(delayMs, remainingMs));
      delayMs = Math.min(delayMs * 2, reconnectDelayMaxMs);
    }
  }

  /** Makes `connection` current and sends everything outstanding on it; returns how many. */
  private adopt(connection: NbdConnection): number {
    this.connection = connection;
    this.state = 'connected';
    this.flushSupported = connection.flushSupported;
    void connection.closed.then(() => this.onConnectionLost(connection, 'the connection closed'));
    void this.readReplies(connection);
    for (const request of this.pending.values()) this.send(connection, request);
    return this.pending.size;
  }

  private async readReplies(connection: NbdConnection): Promise<void> {
    try {
      for (;;) {
        const header = await connection.reader.read(P.SIMPLE_REPLY_HEADER_BYTES);
        const magic = header.readUInt32BE(0);
        if (magic !== P.NBD_SIMPLE_REPLY_MAGIC) throw new ProtocolError(`reply magic 0x${magic.toString(16)}, not a simple reply`);
        const errno = header.readUInt32BE(4);
        const cookie = header.readBigUInt64BE(8);
        const request = this.byCookie.get(cookie);
        if (request === undefined) throw new ProtocolError(`reply to cookie ${cookie}, which is not outstanding`);
        const data = request.type === P.NBD_CMD_READ && errno === 0 ? await connection.reader.read(request.lengthBytes) : null;
        // Lost while the data came in: the request is pending again, for the next connection.
        if (connection !== this.connection) return;
        this.byCookie.delete(cookie);
        this.pending.delete(request.sequence);
        this.complete(request, errno === 0 ? { kind: 'ok', data } : { kind: 'error', errno });
        if (this.pending.size === 0) this.wakeIdle();
      }
    } catch (err) {
      if (err instanceof ProtocolError && connection === this.connection) this.events.onProtocolError();
      this.onConnectionLost(connection, err instanceof Error ? err.message : String(err));
    }
  }

  private onConnectionLost(connection: NbdConnection, reason: string): void {
    connection.destroy();
    if (connection !== this.connection) return;
    this.connection = null;
    this.byCookie.clear();
    for (const request of this.pending.values()) request.cookie = null;
    if (this.state !== 'connected') return;
    this.state = 'connecting';
    this.events.onConnectionLost(reason, this.pending.size);
    this.connectLoop(true).catch((err: unknown) => this.fail(`internal error in the verifier: ${String(err)}`));
  }

  private checkTimeouts(): void {
    const connection = this.connection;
    if (connection === null) return;
    const nowMs = Date.now();
    for (const request of this.byCookie.values()) {
      if (nowMs - request.sentAtMs > this.settings.requestTimeoutMs) {
        this.events.onRequestTimeout();
        this.onConnectionLost(connection, `${P.commandName(request.type)} at ${request.offsetBytes} unanswered for ${this.settings.requestTimeoutMs} ms`);
        return;
      }
    }
  }

  private fail(reason: string): void {
    if (this.state === 'failed' || this.state === 'closed') return;
    this.state = 'failed';
    this.connection?.destroy();
    this.connection = null;
    this.stopTimers();
    this.events.onFatal(reason);
    this.abandonAll();
  }

  private abandonAll(): void {
    const requests = [...this.pending.values()];
    this.pending.clear();
    this.byCookie.clear();
    for (const request of requests) this.complete(request, { kind: 'abandoned' });
    this.wakeIdle();
  }

  /** A throwing callback is a bug in the writer: it fails the run instead of escaping. */
  private complete(request: PendingRequest, outcome: Outcome): void {
    try {
      request.onDone(outcome);
    } catch (err) {
      queueMicrotask(() => this.fail(`internal error in the verifier: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`));
    }
  }

  private wakeIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const waiter of waiters) waiter();
  }

  private sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.cancelSleep = null;
        resolve();
      }, delayMs);
      this.cancelSleep = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private stopTimers(): void {
    clearInterval(this.timeoutTimer);
    const cancel = this.cancelSleep;
    this.cancelSleep = null;
    cancel?.();
  }
}

// ---------------------------------------------------------------------------------------
// The writer

type WriterState = 'new' | 'starting' | 'running' | 'stopping' | 'stopped' | 'verifying' | 'failed' | 'destroyed';

/**
 * Random reads and writes of whole blocks in [0, regionBytes), each checked; see the top of
 * this file. Nothing here throws once constructed (bad options throw from the constructor):
 * errors, wrong data and a connection that never comes back all end up in stats().
 */
export class VerifyingWriter {
  private readonly settings: Settings;
  private readonly random: () => number;
  private state: WriterState = 'new';
  private engine: RequestEngine | null = null;
  private readonly startedAtMs = Date.now();

  // Per block: the last acknowledged version (0: never), the highest version sent, whether
  // a request is on it, and the versions sent but not acknowledged (only blocks that have
  // any; all newer than the acknowledged one).
  private readonly ackedVersions: Uint32Array;
  private readonly sentVersionsMax: Uint32Array;
  private readonly busyBlocks: Uint8Array;
  private readonly unackedVersions = new Map<number, number[]>();
  private opsInFlight = 0;
  private flushInFlight = false;
  private flushTimer: NodeJS.Timeout | null = null;
  private flushUnsupportedLogged = false;

  private startPromise: Promise<void> | null = null;
  private stopPromise: Promise<VerifierStats> | null = null;
  private progressWaiters: Array<{ predicate: (progress: VerifierProgress) => boolean; resolve: (reached: boolean) => void; timer: NodeJS.Timeout }> = [];

  private readonly counters = {
    writes: 0,
    reads: 0,
    flushes: 0,
    bytesWritten: 0,
    ioErrors: 0,
    verifyFailureCount: 0,
    reconnects: 0,
    reissuedRequests: 0,
    requestTimeouts: 0,
    protocolErrors: 0,
    verifiedBlocks: 0,
  };
  private readonly ioErrorDetails: IoErrorDetail[] = [];
  private readonly verifyFailures: VerifyFailure[] = [];
  private fatal: string | null = null;

  constructor(options: VerifierOptions) {
    this.settings = validateOptions(options);
    this.random = mulberry32(this.settings.seed);
    this.ackedVersions = new Uint32Array(this.settings.blockCount);
    this.sentVersionsMax = new Uint32Array(this.settings.blockCount);
    this.busyBlocks = new Uint8Array(this.settings.blockCount);
  }

  get seed(): number {
    return this.settings.seed;
  }

  /** Connects and starts writing; resolves once running, or once it failed (see stats().fatal). */
  start(): Promise<void> {
    if (this.startPromise === null) this.startPromise = this.startOnce();
    return this.startPromise;
  }

  private async startOnce(): Promise<void> {
    if (this.state !== 'new') return;
    this.state = 'starting';
    const { host, port, exportName, regionBytes, blockBytes, depth, writePercent, seed } = this.settings;
    this.log(`verifier seed ${seed}: ${host}:${port} export '${exportName}', ${regionBytes} bytes in ${blockBytes}-byte blocks, depth ${depth}, ${writePercent}% writes`);
    const engine = this.newEngine();
    this.engine = engine;
    const connected = await engine.open();
    if (!connected || this.state !== 'starting') return;
    this.state = 'running';
    if (this.settings.flushEveryMs > 0) {
      this.flushTimer = setInterval(() => this.flushNow(), this.settings.flushEveryMs);
      this.flushTimer.unref();
    }
    this.pump();
  }

  stats(): VerifierStats {
    return {
      seed: this.settings.seed,
      ...this.counters,
      ioErrorDetails: this.ioErrorDetails.map((detail) => ({ ...detail })),
      verifyFailures: this.verifyFailures.map((failure) => ({ ...failure, unackedVersions: [...failure.unackedVersions] })),
      fatal: this.fatal,
    };
  }

  /** Blocks with an acknowledged write, ascending. */
  writtenBlocks(): number[] {
    const blocks: number[] = [];
    this.ackedVersions.forEach((version, blockIndex) => {
      if (version > 0) blocks.push(blockIndex);
    });
    return blocks;
  }

  /** What a read of `blockIndex` may return now. */
  blockState(blockIndex: number): { ackedVersion: number; unackedVersions: number[] } {
    return { ackedVersion: this.ackedVersions[blockIndex] ?? 0, unackedVersions: [...(this.unackedVersions.get(blockIndex) ?? [])] };
  }

  /**
   * Resolves true once `predicate` holds for the counters (checked after every completion);
   * false if the writer stops or fails first, or after `timeoutMs`.
   */
  waitUntil(predicate: (progress: VerifierProgress) => boolean, timeoutMs = 30_000): Promise<boolean> {
    if (predicate(this.counters)) return Promise.resolve(true);
    if (this.state !== 'running' && this.state !== 'starting' && this.state !== 'new') return Promise.resolve(false);
    return new Promise((resolve) => {
      const waiter = {
        predicate,
        resolve,
        timer: setTimeout(() => {
          this.progressWaiters = this.progressWaiters.filter((other) => other !== waiter);
          resolve(false);
        }, timeoutMs),
      };
      this.progressWaiters.push(waiter);
    });
  }

  /** Until `count` writes in all have been acknowledged (see waitUntil). */
  waitForWrites(count: number, timeoutMs = 30_000): Promise<boolean> {
    return this.waitUntil((progress) => progress.writes >= count, timeoutMs);
  }

  /** Until `count` reads in all have completed (see waitUntil). */
  waitForReads(count: number, timeoutMs = 30_000): Promise<boolean> {
    return this.waitUntil((progress) => progress.reads >= count, timeoutMs);
  }

  /** Stops issuing, waits for everything in flight (across reconnects), flushes, hangs up. */
  stop(): Promise<VerifierStats> {
    if (this.stopPromise === null) this.stopPromise = this.stopOnce();
    return this.stopPromise;
  }

  private async stopOnce(): Promise<VerifierStats> {
    if (this.startPromise !== null) await this.startPromise;
    if (this.state === 'new') this.state = 'stopped';
    if (this.state !== 'running') return this.stats();
    this.state = 'stopping';
    this.stopFlushTimer();
    this.settleProgressWaiters();
    const engine = this.engine as RequestEngine;
    await engine.idle();
    if (!engine.failed && engine.flushSupported) {
      this.submitFlush(engine);
      await engine.idle();
    }
    await engine.close();
    if (this.state === 'stopping') this.state = 'stopped';
    const stats = this.stats();
    this.log(`verifier stopped: ${summary(stats)}`);
    return stats;
  }

  /**
   * Reads back every block of the region on a new connection and checks it: never-written
   * blocks must be zeros. Stops the writer first if it is running. Useful after restarts,
   * and after a fatal error too (the server may be back).
   */
  async verifyAll(): Promise<VerifierStats> {
    await this.stop();
    if (this.state === 'destroyed' || this.state === 'verifying') return this.stats();
    const stateBefore = this.state;
    this.state = 'verifying';
    const engine = this.newEngine();
    this.engine = engine;
    if (await engine.open()) {
      await this.readEveryBlock(engine);
      await engine.close();
    }
    if (this.state === 'verifying') this.state = stateBefore;
    const stats = this.stats();
    this.log(`verifier verified ${stats.verifiedBlocks} blocks: ${summary(stats)}`);
    return stats;
  }

  /** Aborts at once: no drain, no flush. For teardown. */
  destroy(): void {
    this.state = 'destroyed';
    this.stopFlushTimer();
    this.settleProgressWaiters();
    this.engine?.destroy();
  }

  private readEveryBlock(engine: RequestEngine): Promise<void> {
    const { blockCount, blockBytes, depth } = this.settings;
    let nextBlockIndex = 0;
    let inFlight = 0;
    return new Promise((resolve) => {
      const issue = (): void => {
        while (inFlight < depth && nextBlockIndex < blockCount && !engine.failed && this.state === 'verifying') {
          const blockIndex = nextBlockIndex++;
          inFlight++;
          engine.submit(P.NBD_CMD_READ, blockIndex * blockBytes, blockBytes, null, (outcome) => {
            inFlight--;
            if (outcome.kind === 'ok') {
              this.counters.verifiedBlocks++;
              this.check(blockIndex, outcome.data as Buffer, 'verify');
            } else if (outcome.kind === 'error') {
              this.recordIoError(P.NBD_CMD_READ, blockIndex * blockBytes, outcome.errno);
            }
            issue();
          });
        }
        if (inFlight === 0) resolve();
      };
      issue();
    });
  }

  private newEngine(): RequestEngine {
    return new RequestEngine(this.settings, {
      onConnectionLost: (reason, pendingCount) => this.log(`verifier lost its connection (${reason}); ${pendingCount} requests to re-send`),
      // Counters that change without a completion: waiters on them are settled here.
      onReconnect: (downMs, attemptCount, reissuedCount) => {
        this.counters.reconnects++;
        this.counters.reissuedRequests += reissuedCount;
        this.log(`verifier reconnected after ${downMs} ms (${attemptCount} attempts), re-sent ${reissuedCount} requests`);
        this.settleProgressWaiters();
      },
      onRequestTimeout: () => {
        this.counters.requestTimeouts++;
        this.settleProgressWaiters();
      },
      onProtocolError: () => {
        this.counters.protocolErrors++;
        this.settleProgressWaiters();
      },
      onFatal: (reason) => {
        this.fatal ??= reason;
        this.log(`verifier failed: ${reason}`);
        if (this.state === 'starting' || this.state === 'running' || this.state === 'stopping') this.state = 'failed';
        this.stopFlushTimer();
        this.settleProgressWaiters();
      },
    });
  }

  /** Keeps depth requests in flight, each on a block nothing else is using. */
  private pump(): void {
    const engine = this.engine;
    while (this.state === 'running' && engine !== null && this.opsInFlight < this.settings.depth) {
      const blockIndex = this.pickIdleBlock();
      if (blockIndex < 0) return;
      if (this.random() * 100 < this.settings.writePercent) this.submitWrite(engine, blockIndex);
      else this.submitRead(engine, blockIndex);
    }
  }

  /** A random block, probing forward past busy ones (at most depth are busy). */
  private pickIdleBlock(): number {
    const { blockCount } = this.settings;
    const firstIndex = Math.floor(this.random() * blockCount);
    for (let step = 0; step < blockCount; step++) {
      const blockIndex = (firstIndex + step) % blockCount;
      if (this.busyBlocks[blockIndex] === 0) return blockIndex;
    }
    return -1;
  }

  private submitWrite(engine: RequestEngine, blockIndex: number): void {
    const { seed, blockBytes } = this.settings;
    const version = (this.sentVersionsMax[blockIndex] as number) + 1;
    this.sentVersionsMax[blockIndex] = version;
    const unacked = this.unackedVersions.get(blockIndex);
    if (unacked === undefined) this.unackedVersions.set(blockIndex, [version]);
    else unacked.push(version);
    this.busyBlocks[blockIndex] = 1;
    this.opsInFlight++;
    const offsetBytes = blockIndex * blockBytes;
    engine.submit(P.NBD_CMD_WRITE, offsetBytes, blockBytes, blockContent(seed, blockIndex, version, blockBytes), (outcome) => {
      if (outcome.kind === 'ok') this.onWriteAck(blockIndex, version);
      else if (outcome.kind === 'error') this.recordIoError(P.NBD_CMD_WRITE, offsetBytes, outcome.errno);
      // An error or an abandoned write may or may not have landed: its version stays acceptable.
      this.release(blockIndex);
    });
  }

  private onWriteAck(blockIndex: number, version: number): void {
    this.ackedVersions[blockIndex] = version;
    // Older unacknowledged versions are overwritten by this one: no longer acceptable.
    const unacked = (this.unackedVersions.get(blockIndex) ?? []).filter((other) => other > version);
    if (unacked.length === 0) this.unackedVersions.delete(blockIndex);
    else this.unackedVersions.set(blockIndex, unacked);
    this.counters.writes++;
    this.counters.bytesWritten += this.settings.blockBytes;
  }

  private submitRead(engine: RequestEngine, blockIndex: number): void {
    const { blockBytes } = this.settings;
    this.busyBlocks[blockIndex] = 1;
    this.opsInFlight++;
    const offsetBytes = blockIndex * blockBytes;
    engine.submit(P.NBD_CMD_READ, offsetBytes, blockBytes, null, (outcome) => {
      if (outcome.kind === 'ok') {
        this.counters.reads++;
        this.check(blockIndex, outcome.data as Buffer, 'run');
      } else if (outcome.kind === 'error') {
        this.recordIoError(P.NBD_CMD_READ, offsetBytes, outcome.errno);
      }
      this.release(blockIndex);
    });
  }

  private release(blockIndex: number): void {
    this.busyBlocks[blockIndex] = 0;
    this.opsInFlight--;
    if (this.progressWaiters.length > 0) this.settleProgressWaiters();
    this.pump();
  }

  private flushNow(): void {
    const engine = this.engine;
    if (this.state !== 'running' || engine === null || this.flushInFlight) return;
    if (!engine.flushSupported) {
      if (!this.flushUnsupportedLogged) this.log('verifier: the export does not take NBD_CMD_FLUSH; not flushing');
      this.flushUnsupportedLogged = true;
      return;
    }
    this.submitFlush(engine);
  }

  private submitFlush(engine: RequestEngine): void {
    this.flushInFlight = true;
    engine.submit(P.NBD_CMD_FLUSH, 0, 0, null, (outcome) => {
      this.flushInFlight = false;
      if (outcome.kind === 'ok') this.counters.flushes++;
      else if (outcome.kind === 'error') this.recordIoError(P.NBD_CMD_FLUSH, 0, outcome.errno);
      if (this.progressWaiters.length > 0) this.settleProgressWaiters();
    });
  }

  /** Records a failure unless `data` is a version of the block a read may return now. */
  private check(blockIndex: number, data: Buffer, phase: 'run' | 'verify'): void {
    const { seed, blockBytes } = this.settings;
    const seen = identifyBlock(data, seed, blockIndex, blockBytes);
    const ackedVersion = this.ackedVersions[blockIndex] as number;
    const unackedVersions = this.unackedVersions.get(blockIndex) ?? [];
    const correct =
      (seen.kind === 'zeros' && ackedVersion === 0) ||
      (seen.kind === 'version' && (seen.version === ackedVersion || unackedVersions.includes(seen.version)));
    if (correct) return;
    this.counters.verifyFailureCount++;
    const allowed = [ackedVersion === 0 ? 'zeros' : `version ${ackedVersion}`, ...unackedVersions.map((version) => `version ${version} (unacknowledged)`)];
    const failure: VerifyFailure = {
      phase,
      blockIndex,
      offsetBytes: blockIndex * blockBytes,
      ackedVersion,
      unackedVersions: [...unackedVersions],
      expected: allowed.join(' or '),
      seen: describeSeen(seen),
      seenVersion: seen.kind === 'version' ? seen.version : null,
      elapsedMs: Date.now() - this.startedAtMs,
    };
    if (this.verifyFailures.length < detailsKeptMax) this.verifyFailures.push(failure);
    if (this.counters.verifyFailureCount <= failuresLoggedMax) {
      this.log(`verifier: WRONG DATA (${phase}) in block ${blockIndex} at ${failure.offsetBytes}: expected ${failure.expected}, saw ${failure.seen}`);
    }
  }

  private recordIoError(type: number, offsetBytes: number, errno: number): void {
    this.counters.ioErrors++;
    const detail: IoErrorDetail = {
      command: P.commandName(type),
      errno,
      errnoName: errnoNames[errno] ?? `errno ${errno}`,
      offsetBytes,
      elapsedMs: Date.now() - this.startedAtMs,
    };
    if (this.ioErrorDetails.length < detailsKeptMax) this.ioErrorDetails.push(detail);
    if (this.counters.ioErrors <= failuresLoggedMax) this.log(`verifier: ${detail.command} at ${offsetBytes} failed with ${detail.errnoName}`);
  }

  /** Resolves the waiters whose predicate holds, and all of them once writing has ended. */
  private settleProgressWaiters(): void {
    const ended = this.state !== 'running' && this.state !== 'starting';
    const keep: typeof this.progressWaiters = [];
    for (const waiter of this.progressWaiters) {
      const reached = waiter.predicate(this.counters);
      if (reached || ended) {
        clearTimeout(waiter.timer);
        waiter.resolve(reached);
      } else {
        keep.push(waiter);
      }
    }
    this.progressWaiters = keep;
  }

  private stopFlushTimer(): void {
    if (this.flushTimer !== null) clearInterval(this.flushTimer);
    this.flushTimer = null;
  }

  private log(line: string): void {
    try {
      this.settings.log(line);
    } catch {
      // A broken log sink must not break the writer.
    }
  }
}

/** Starts a writer; the handle is the writer itself. */
export async function startVerifier(options: VerifierOptions): Promise<VerifyingWriter> {
  const writer = new VerifyingWriter(options);
  await writer.start();
  return writer;
}

export function summary(stats: VerifierStats): string {
  return [
    `seed ${stats.seed}`,
    `${stats.writes} writes`,
    `${stats.reads} reads`,
    `${stats.flushes} flushes`,
    `${stats.ioErrors} io errors`,
    `${stats.verifyFailureCount} verify failures`,
    `${stats.reconnects} reconnects (${stats.reissuedRequests} re-sent, ${stats.requestTimeouts} timeouts)`,
    `${stats.protocolErrors} protocol errors`,
    ...(stats.fatal !== null ? [`FATAL: ${stats.fatal}`] : []),
  ].join(', ');
}
