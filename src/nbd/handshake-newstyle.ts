// The fixed newstyle handshake: greeting, client flags, then option haggling until the
// client picks an export (GO or EXPORT_NAME) or leaves (ABORT, hang-up).
//
// Three kinds of bad input, three treatments: a bad option with intact framing gets an
// NBD_REP_ERR_* reply and haggling goes on; broken framing (bad magic, unknown client
// flags, an EXPORT_NAME we cannot satisfy) ends this connection only; our own broken
// invariants are assertion failures.

import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { Logger } from 'pino';
import { MeshblockError } from '../common/errors.js';
import { nbdOptionBytesMax, nbdOptionCountMax, nbdStringBytesMax } from '../common/limits.js';
import type { BlockBackend } from './backend.js';
import { ByteQueue } from './byte-queue.js';
import type { ExportRegistry, NbdExport } from './exports.js';
import * as P from './protocol.js';

export type TlsMode = 'off' | 'on' | 'require';

export interface TlsPolicy {
  /** off: refuse STARTTLS; on: TLS at the client's choice; require: nothing but STARTTLS before TLS. */
  mode: TlsMode;
  secureContext: SecureContext | null;
}

export interface HandshakeContext {
  exports: ExportRegistry;
  tls: TlsPolicy;
  log: Logger;
}

export interface Negotiated {
  /** The stream to speak on: the accepted socket, or the TLS socket wrapped around it. */
  stream: Duplex;
  export: NbdExport;
  transmissionFlags: number;
  structuredReplies: boolean;
  /** base:allocation was selected, so BLOCK_STATUS is allowed. */
  baseAllocation: boolean;
  /** Bytes the client sent after its final option (normally none). */
  leftover: Buffer[];
  tls: boolean;
}

/** The client broke the handshake's framing; the connection is dropped. */
export class HandshakeError extends MeshblockError {
  constructor(message: string) {
    super('MB_ERR_NBD_HANDSHAKE', message);
  }
}

export function transmissionFlagsOf(backend: BlockBackend, structuredReplies: boolean): number {
  const caps = backend.capabilities;
  let flags = P.NBD_FLAG_HAS_FLAGS;
  if (caps.flush) flags |= P.NBD_FLAG_SEND_FLUSH;
  if (caps.readOnly) {
    flags |= P.NBD_FLAG_READ_ONLY;
  } else {
    if (caps.fua) flags |= P.NBD_FLAG_SEND_FUA;
    if (caps.trim) flags |= P.NBD_FLAG_SEND_TRIM;
    if (caps.zero) flags |= P.NBD_FLAG_SEND_WRITE_ZEROES;
    if (caps.zero && caps.fastZero) flags |= P.NBD_FLAG_SEND_FAST_ZERO;
  }
  if (caps.rotational) flags |= P.NBD_FLAG_ROTATIONAL;
  if (caps.multiConn) flags |= P.NBD_FLAG_CAN_MULTI_CONN;
  if (caps.cache) flags |= P.NBD_FLAG_SEND_CACHE;
  if (structuredReplies) flags |= P.NBD_FLAG_SEND_DF;
  return flags;
}

/** Thrown inside option handlers to answer the option with an error reply. */
class OptionRefusal extends Error {
  constructor(
    readonly replyType: number,
    message: string,
  ) {
    super(message);
  }
}

class Session {
  private queue: ByteQueue;
  private stream: Duplex;
  private fixedNewstyle = false;
  private noZeroes = false;
  private structuredReplies = false;
  private tlsActive = false;
  /** Export name the meta context selection was made for, or null when none is selected. */
  private metaContextExport: string | null = null;
  private baseAllocation = false;

  constructor(
    socket: Socket,
    private readonly ctx: HandshakeContext,
  ) {
    this.stream = socket;
    this.queue = new ByteQueue(socket, nbdOptionBytesMax * 2);
  }

  async run(): Promise<Negotiated | null> {
    const greeting = Buffer.alloc(18);
    greeting.writeBigUInt64BE(P.NBD_MAGIC, 0);
    greeting.writeBigUInt64BE(P.NBD_IHAVEOPT, 8);
    greeting.writeUInt16BE(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES, 16);
    this.stream.write(greeting);

    const clientFlags = (await this.queue.readExact(4)).readUInt32BE(0);
    if ((clientFlags & ~P.CLIENT_FLAGS_KNOWN) !== 0) {
      throw new HandshakeError(`unknown client flags 0x${clientFlags.toString(16)}`);
    }
    this.fixedNewstyle = (clientFlags & P.NBD_FLAG_C_FIXED_NEWSTYLE) !== 0;
    this.noZeroes = (clientFlags & P.NBD_FLAG_C_NO_ZEROES) !== 0;

    for (let optionIndex = 0; optionIndex < nbdOptionCountMax; optionIndex++) {
      const header = await this.queue.readExact(P.OPTION_HEADER_BYTES);
      if (header.readBigUInt64BE(0) !== P.NBD_IHAVEOPT) {
        throw new HandshakeError('bad option magic');
      }
      const option = header.readUInt32BE(8);
      const dataBytes = header.readUInt32BE(12);
      if (dataBytes > nbdOptionBytesMax) {
        if (option === P.NBD_OPT_EXPORT_NAME) throw new HandshakeError(`EXPORT_NAME of ${dataBytes} bytes`);
        await this.queue.skip(dataBytes);
        this.reply(option, P.NBD_REP_ERR_TOO_BIG, Buffer.from(`option data of ${dataBytes} bytes is too long`));
        continue;
      }
      const data = await this.queue.readExact(dataBytes);
      this.ctx.log.debug({ option: P.optionName(option), dataBytes }, 'nbd option');
      if (!this.fixedNewstyle && option !== P.NBD_OPT_EXPORT_NAME) {
        // A non-fixed client cannot understand an error reply; it may only choose an export.
        throw new HandshakeError(`option ${P.optionName(option)} from a client without fixed newstyle`);
      }
      try {
        const result = await this.onOption(option, data);
        if (result === 'abort') return null;
        if (result !== null) return result;
      } catch (err) {
        if (!(err instanceof OptionRefusal)) throw err;
        this.ctx.log.debug({ option: P.optionName(option), reason: err.message }, 'nbd option refused');
        this.reply(option, err.replyType, Buffer.from(err.message));
      }
    }
    throw new HandshakeError(`more than ${nbdOptionCountMax} options`);
  }

  private async onOption(option: number, data: Buffer): Promise<Negotiated | 'abort' | null> {
    const tlsRequired = this.ctx.tls.mode === 'require' && !this.tlsActive;
    switch (option) {
      case P.NBD_OPT_EXPORT_NAME:
        return this.onExportName(data, tlsRequired);
      case P.NBD_OPT_ABORT:
        this.reply(option, P.NBD_REP_ACK);
        this.stream.end();
        return 'abort';
      case P.NBD_OPT_STARTTLS:
        await this.onStartTls(data);
        return null;
    }
    if (tlsRequired) throw new OptionRefusal(P.NBD_REP_ERR_TLS_REQD, 'TLS is required: send STARTTLS first');
    switch (option) {
      case P.NBD_OPT_LIST:
        this.onList(data);
        return null;
      case P.NBD_OPT_INFO:
      case P.NBD_OPT_GO:
        return this.onInfoOrGo(option, data);
      case P.NBD_OPT_STRUCTURED_REPLY:
        this.onStructuredReply(data);
        return null;
      case P.NBD_OPT_LIST_META_CONTEXT:
      case P.NBD_OPT_SET_META_CONTEXT:
        this.onMetaContext(option, data);
        return null;
      default:
        throw new OptionRefusal(P.NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
    }
  }

  private onExportName(data: Buffer, tlsRequired: boolean): Negotiated {
    // EXPORT_NAME has no way to report an error: the spec's answer is to hang up.
    if (tlsRequired) throw new HandshakeError('EXPORT_NAME before STARTTLS on a TLS-only server');
    const name = this.decodeString(data, 'export name', true);
    const entry = this.ctx.exports.find(name);
    if (entry === undefined) throw new HandshakeError(`EXPORT_NAME '${name}': no such export`);
    const flags = transmissionFlagsOf(entry.backend, this.structuredReplies);
    const reply = Buffer.alloc(this.noZeroes ? 10 : 134);
    reply.writeBigUInt64BE(BigInt(entry.backend.sizeBytes), 0);
    reply.writeUInt16BE(flags, 8);
    this.stream.write(reply);
    return this.finish(entry, flags);
  }

  private onList(data: Buffer): void {
    if (data.length !== 0) throw new OptionRefusal(P.NBD_REP_ERR_INVALID, 'LIST takes no data');
    for (const entry of this.ctx.exports.list()) {
      const name = Buffer.from(entry.name);
      const description = Buffer.from(entry.description);
      const payload = Buffer.allocUnsafe(4 + name.length + description.length);
      payload.writeUInt32BE(name.length, 0);
      name.copy(payload, 4);
      description.copy(payload, 4 + name.length);
      this.reply(P.NBD_OPT_LIST, P.NBD_REP_SERVER, payload);
    }
    this.reply(P.NBD_OPT_LIST, P.NBD_REP_ACK);
  }

  private async onStartTls(data: Buffer): Promise<void> {
    if (data.length !== 0) throw new OptionRefusal(P.NBD_REP_ERR_INVALID, 'STARTTLS takes no data');
    if (this.tlsActive) throw new OptionRefusal(P.NBD_REP_ERR_INVALID, 'TLS is already active');
    const secureContext = this.ctx.tls.secureContext;
    if (this.ctx.tls.mode === 'off' || secureContext === null) {
      throw new OptionRefusal(P.NBD_REP_ERR_POLICY, 'this server is not configured for TLS');
    }
    this.reply(P.NBD_OPT_STARTTLS, P.NBD_REP_ACK);
    const leftover = this.queue.detach();
    // The client must wait for our ACK before it starts TLS: bytes already here broke that.
    if (leftover.length > 0) throw new HandshakeError('client sent data before the STARTTLS reply');
    const socket = this.stream as Socket;
    const tlsSocket = new TLSSocket(socket, { isServer: true, secureContext });
    await new Promise<void>((resolve, reject) => {
      tlsSocket.once('secure', resolve);
      tlsSocket.once('error', reject);
      tlsSocket.once('close', () => reject(new HandshakeError('connection closed during TLS handshake')));
    });
    this.tlsActive = true;
    this.stream = tlsSocket;
    this.queue = new ByteQueue(tlsSocket, nbdOptionBytesMax * 2);
    this.ctx.log.debug({ protocol: tlsSocket.getProtocol() }, 'nbd TLS established');
  }

  private onStructuredReply(data: Buffer): void {
    if (data.length !== 0) throw new OptionRefusal(P.NBD_REP_ERR_INVALID, 'STRUCTURED_REPLY takes no data');
    if (this.structuredReplies) throw new OptionRefusal(P.NBD_REP_ERR_INVALID, 'structured replies already negotiated');
    this.structuredReplies = true;
    this.reply(P.NBD_OPT_STRUCTURED_REPLY, P.NBD_REP_ACK);
  }

  private onInfoOrGo(option: number, data: Buffer): Negotiated | null {
    // u32 name length | name | u16 request count | u16 request[count]
    if (data.length < 6) throw new OptionRefusal(P.NBD_REP_ERR_INVALID, 'INFO/GO data is too short');
    const nameBytes = data.readUInt32BE(0);
    if (nameBytes > data.length - 6) throw new OptionRefusal(P.NBD_REP_ERR_INVALID, 'export name overruns the option');
    const name = this.decodeString(data.subarray(4, 4 + nameBytes), 'export name', false);
    const requestCount = data.readUInt16BE(4 + nameBytes);
    if (data.length !== 6 + nameBytes + 2 * requestCount) {
      throw new OptionRefusal(P.NBD_REP_ERR_INVALID, 'INFO/GO length does not match its request count');
    }
    const requests = new Set<number>();
    for (let index = 0; index < requestCount; index++) requests.add(data.readUInt16BE(6 + nameBytes + 2 * index));

    const entry = this.ctx.exports.find(name);
    if (entry === undefined) throw new OptionRefusal(P.NBD_REP_ERR_UNKNOWN, `no export named '${name}'`);
    const backend = entry.backend;
    const flags = transmissionFlagsOf(backend, this.structuredReplies);

    const exportInfo = Buffer.allocUnsafe(12);
    exportInfo.writeUInt16BE(P.NBD_INFO_EXPORT, 0);
    exportInfo.writeBigUInt64BE(BigInt(backend.sizeBytes), 2);
    exportInfo.writeUInt16BE(flags, 10);
    this.reply(option, P.NBD_REP_INFO, exportInfo);
    if (requests.has(P.NBD_INFO_NAME)) {
      this.reply(option, P.NBD_REP_INFO, Buffer.concat([u16(P.NBD_INFO_NAME), Buffer.from(entry.name)]));
    }
    if (requests.has(P.NBD_INFO_DESCRIPTION) && entry.description !== '') {
      this.reply(option, P.NBD_REP_INFO, Buffer.concat([u16(P.NBD_INFO_DESCRIPTION), Buffer.from(entry.description)]));
    }
    if (requests.has(P.NBD_INFO_BLOCK_SIZE) || backend.blockSize.minimumBytes > 1) {
      const blockSize = Buffer.allocUnsafe(14);
      blockSize.writeUInt16BE(P.NBD_INFO_BLOCK_SIZE, 0);
      blockSize.writeUInt32BE(backend.blockSize.minimumBytes, 2);
      blockSize.writeUInt32BE(backend.blockSize.preferredBytes, 6);
      blockSize.writeUInt32BE(backend.blockSize.maximumBytes, 10);
      this.reply(option, P.NBD_REP_INFO, blockSize);
    }
    this.reply(option, P.NBD_REP_ACK);
    if (option === P.NBD_OPT_INFO) return null;
    return this.finish(entry, flags);
  }

  private onMetaContext(option: number, data: Buffer): void {
    // u32 name length | name | u32 query count | (u32 query length | query)[count]
    if (!this.structuredReplies) {
      throw new OptionRefusal(P.NBD_REP_ERR_INVALID, 'meta contexts need structured replies first');
    }
    if (data.length < 8) throw new OptionRefusal(P.NBD_REP_ERR_INVALID, 'meta context data is too short');
    const nameBytes = data.readUInt32BE(0);
    if (nameBytes > data.length - 8) throw new OptionRefusal(P.NBD_REP_ERR_INVALID, 'export name overruns the option');
    const name = this.decodeString(data.subarray(4, 4 + nameBytes), 'export name', false);
    const queryCount = data.readUInt32BE(4 + nameBytes);
    const queries: string[] = [];
    let position = 8 + nameBytes;
    for (let index = 0; index < queryCount; index++) {
      if (position + 4 > data.length) throw new OptionRefusal(P.NBD_REP_ERR_INVALID, 'query list overruns the option');
      const queryBytes = data.readUInt32BE(position);
      position += 4;
      if (queryBytes > data.length - position) {
        throw new OptionRefusal(P.NBD_REP_ERR_INVALID, 'query overruns the option');
      }
      queries.push(this.decodeString(data.subarray(position, position + queryBytes), 'query', false));
      position += queryBytes;
    }
    if (position !== data.length) throw new OptionRefusal(P.NBD_REP_ERR_INVALID, 'trailing bytes after the queries');
    if (this.ctx.exports.find(name) === undefined) {
      throw new OptionRefusal(P.NBD_REP_ERR_UNKNOWN, `no export named '${name}'`);
    }

    const listing = option === P.NBD_OPT_LIST_META_CONTEXT;
    // base:allocation is the one context we serve. LIST with no queries, or with the bare
    // namespace "base:", lists it; SET selects it only when named exactly.
    const matches =
      (listing && queries.length === 0) ||
      queries.some((query) => query === P.META_CONTEXT_BASE_ALLOCATION || (listing && query === 'base:'));
    if (!listing) {
      this.metaContextExport = name;
      this.baseAllocation = matches;
    }
    if (matches) {
      const contextName = Buffer.from(P.META_CONTEXT_BASE_ALLOCATION);
      const payload = Buffer.allocUnsafe(4 + contextName.length);
      payload.writeUInt32BE(listing ? 0 : P.META_CONTEXT_BASE_ALLOCATION_ID, 0);
      contextName.copy(payload, 4);
      this.reply(option, P.NBD_REP_META_CONTEXT, payload);
    }
    this.reply(option, P.NBD_REP_ACK);
  }

  private finish(entry: NbdExport, transmissionFlags: number): Negotiated {
    // A selection made for another export does not carry over (as nbdkit does).
    const baseAllocation =
      this.structuredReplies &&
      this.baseAllocation &&
      this.metaContextExport !== null &&
      this.ctx.exports.find(this.metaContextExport) === entry;
    return {
      stream: this.stream,
      export: entry,
      transmissionFlags,
      structuredReplies: this.structuredReplies,
      baseAllocation,
      leftover: this.queue.detach(),
      tls: this.tlsActive,
    };
  }

  private decodeString(bytes: Buffer, what: string, fatal: boolean): string {
    const problem =
      bytes.length > nbdStringBytesMax
        ? `${what} is longer than ${nbdStringBytesMax} bytes`
        : bytes.includes(0)
          ? `${what} contains NUL`
          : null;
    if (problem !== null) {
      if (fatal) throw new HandshakeError(problem);
      throw new OptionRefusal(P.NBD_REP_ERR_INVALID, problem);
    }
    return bytes.toString('utf8');
  }

  private reply(option: number, replyType: number, payload?: Buffer): void {
    const header = Buffer.allocUnsafe(P.OPTION_REPLY_HEADER_BYTES);
    header.writeBigUInt64BE(P.NBD_REP_MAGIC, 0);
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(replyType, 12);
    header.writeUInt32BE(payload?.length ?? 0, 16);
    this.stream.write(payload === undefined || payload.length === 0 ? header : Buffer.concat([header, payload]));
  }
}

function u16(value: number): Buffer {
  const buffer = Buffer.allocUnsafe(2);
  buffer.writeUInt16BE(value, 0);
  return buffer;
}

/** Runs the handshake on a new connection. Resolves null when the client left (ABORT). */
export function negotiate(socket: Socket, ctx: HandshakeContext): Promise<Negotiated | null> {
  return new Session(socket, ctx).run();
}
