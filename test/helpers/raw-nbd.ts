// A deliberately naive NBD client speaking bytes on a raw socket, for tests that must send
// what no real client sends (bad magic, unknown flags, overflowing ranges, ...). Real
// clients (nbdinfo, qemu-io, fio, ...) are used everywhere else.

import * as net from 'node:net';
import * as P from '../../src/nbd/protocol.js';

export class RawNbd {
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  private waiter: (() => void) | null = null;
  private ended = false;
  readonly closed: Promise<void>;
  /** The server's EOF arrived (it may still read, unless it closed the connection fully). */
  readonly serverEnded: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered.push(chunk);
      this.bufferedBytes += chunk.length;
      this.wake();
    });
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.ended = true;
        this.wake();
        resolve();
      });
    });
    this.serverEnded = new Promise((resolve) => socket.once('end', () => resolve()));
    socket.on('error', () => undefined);
  }

  /** `allowHalfOpen`: keep our side open after the server's EOF, as a client that will not hang up does. */
  static connect(target: { port: number; host?: string } | { path: string }, options: { allowHalfOpen?: boolean } = {}): Promise<RawNbd> {
    return new Promise((resolve, reject) => {
      const allowHalfOpen = options.allowHalfOpen ?? false;
      const socket =
        'path' in target
          ? net.connect({ path: target.path, allowHalfOpen })
          : net.connect({ port: target.port, host: target.host ?? '127.0.0.1', allowHalfOpen });
      socket.setNoDelay(true);
      socket.once('connect', () => resolve(new RawNbd(socket)));
      socket.once('error', reject);
    });
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }

  /** Exactly `byteCount` bytes; rejects if the server closes first or nothing comes in time. */
  async read(byteCount: number, timeoutMs = 10_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.bufferedBytes < byteCount) {
      if (this.ended) throw new Error(`server closed the connection (wanted ${byteCount} bytes, had ${this.bufferedBytes})`);
      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0) throw new Error(`timed out waiting for ${byteCount} bytes`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remainingMs);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    const all = Buffer.concat(this.buffered);
    this.buffered = [all.subarray(byteCount)];
    this.bufferedBytes = all.length - byteCount;
    return all.subarray(0, byteCount);
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Reads the greeting and answers with `clientFlags`; returns the handshake flags. */
  async greet(clientFlags = P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES): Promise<number> {
    const greeting = await this.read(18);
    if (greeting.readBigUInt64BE(0) !== P.NBD_MAGIC || greeting.readBigUInt64BE(8) !== P.NBD_IHAVEOPT) {
      throw new Error('bad greeting');
    }
    this.write(u32(clientFlags));
    return greeting.readUInt16BE(16);
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0), magic: bigint = P.NBD_IHAVEOPT): void {
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(magic, 0);
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(data.length, 12);
    this.write(Buffer.concat([header, data]));
  }

  async readOptionReply(): Promise<{ option: number; type: number; data: Buffer }> {
    const header = await this.read(20);
    if (header.readBigUInt64BE(0) !== P.NBD_REP_MAGIC) throw new Error('bad option reply magic');
    const length = header.readUInt32BE(16);
    const data = length > 0 ? await this.read(length) : Buffer.alloc(0);
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data };
  }

  /** Reads option replies up to and including the final one (ACK or an error). */
  async readOptionReplies(): Promise<Array<{ option: number; type: number; data: Buffer }>> {
    const replies = [];
    for (;;) {
      const reply = await this.readOptionReply();
      replies.push(reply);
      if (reply.type === P.NBD_REP_ACK || (reply.type & 0x80000000) !== 0) return replies;
    }
  }

  /** Full handshake to transmission with NBD_OPT_GO. */
  async go(name = '', options: { structured?: boolean; baseAllocation?: boolean } = {}): Promise<{ sizeBytes: number; flags: number }> {
    await this.greet();
    if (options.structured === true) {
      this.sendOption(P.NBD_OPT_STRUCTURED_REPLY);
      expectAck(await this.readOptionReplies());
      if (options.baseAllocation === true) {
        this.sendOption(P.NBD_OPT_SET_META_CONTEXT, metaContextData(name, [P.META_CONTEXT_BASE_ALLOCATION]));
        expectAck(await this.readOptionReplies());
      }
    }
    this.sendOption(P.NBD_OPT_GO, goData(name, []));
    const replies = await this.readOptionReplies();
    expectAck(replies);
    const exportInfo = replies.find((reply) => reply.type === P.NBD_REP_INFO && reply.data.readUInt16BE(0) === P.NBD_INFO_EXPORT);
    if (exportInfo === undefined) throw new Error('no NBD_INFO_EXPORT');
    return { sizeBytes: Number(exportInfo.data.readBigUInt64BE(2)), flags: exportInfo.data.readUInt16BE(10) };
  }

  request(type: number, options: RequestOptions = {}): void {
    this.write(requestBytes(type, options));
  }

  /** A simple reply; `dataBytes` is how much READ data to expect after a successful one. */
  async readSimpleReply(dataBytes = 0): Promise<{ error: number; cookie: bigint; data: Buffer }> {
    const header = await this.read(16);
    const magic = header.readUInt32BE(0);
    if (magic !== P.NBD_SIMPLE_REPLY_MAGIC) throw new Error(`expected a simple reply, got magic 0x${magic.toString(16)}`);
    const error = header.readUInt32BE(4);
    const data = error === 0 && dataBytes > 0 ? await this.read(dataBytes) : Buffer.alloc(0);
    return { error, cookie: header.readBigUInt64BE(8), data };
  }

  async readChunk(): Promise<{ flags: number; type: number; cookie: bigint; payload: Buffer }> {
    const header = await this.read(20);
    const magic = header.readUInt32BE(0);
    if (magic !== P.NBD_STRUCTURED_REPLY_MAGIC) throw new Error(`expected a structured chunk, got magic 0x${magic.toString(16)}`);
    const length = header.readUInt32BE(16);
    const payload = length > 0 ? await this.read(length) : Buffer.alloc(0);
    return { flags: header.readUInt16BE(4), type: header.readUInt16BE(6), cookie: header.readBigUInt64BE(8), payload };
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export interface RequestOptions {
  flags?: number;
  cookie?: bigint;
  offset?: bigint | number;
  length?: number;
  payload?: Buffer;
  magic?: number;
}

/** One request (header and WRITE payload) as bytes, so several can go out in one write. */
export function requestBytes(type: number, options: RequestOptions = {}): Buffer {
  const header = Buffer.alloc(28);
  header.writeUInt32BE(options.magic ?? P.NBD_REQUEST_MAGIC, 0);
  header.writeUInt16BE(options.flags ?? 0, 4);
  header.writeUInt16BE(type, 6);
  header.writeBigUInt64BE(options.cookie ?? 1n, 8);
  header.writeBigUInt64BE(BigInt(options.offset ?? 0), 16);
  header.writeUInt32BE(options.length ?? options.payload?.length ?? 0, 24);
  return options.payload === undefined ? header : Buffer.concat([header, options.payload]);
}

export function u32(value: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32BE(value, 0);
  return buffer;
}

export function goData(name: string, infoRequests: number[]): Buffer {
  const nameBytes = Buffer.from(name);
  const data = Buffer.alloc(4 + nameBytes.length + 2 + 2 * infoRequests.length);
  data.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(data, 4);
  data.writeUInt16BE(infoRequests.length, 4 + nameBytes.length);
  infoRequests.forEach((request, index) => data.writeUInt16BE(request, 6 + nameBytes.length + 2 * index));
  return data;
}

export function metaContextData(name: string, queries: string[]): Buffer {
  const parts = [u32(Buffer.byteLength(name)), Buffer.from(name), u32(queries.length)];
  for (const query of queries) parts.push(u32(Buffer.byteLength(query)), Buffer.from(query));
  return Buffer.concat(parts);
}

function expectAck(replies: Array<{ type: number; data: Buffer }>): void {
  const last = replies[replies.length - 1];
  if (last === undefined || last.type !== P.NBD_REP_ACK) {
    throw new Error(`option refused: type 0x${last?.type.toString(16)} ${last?.data.toString()}`);
  }
}
