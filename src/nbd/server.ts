// The NBD server: accepts connections on TCP and/or a Unix socket, runs the handshake,
// then hands each connection to its Transmission. One client's bad input ends at most
// that client's connection; nothing a client sends can end the process.

import * as fs from 'node:fs';
import * as net from 'node:net';
import type { Logger } from 'pino';
import { MeshblockError } from '../common/errors.js';
import { nbdHandshakeTimeoutMs, nbdLingerMs } from '../common/limits.js';
import type { ExportRegistry } from './exports.js';
import { HandshakeError, negotiate, type TlsPolicy } from './handshake-newstyle.js';
import { StreamEndedError } from './byte-queue.js';
import { Transmission } from './transmission.js';
import { adoptReading } from '../common/borrowed-reads.js';

export interface NbdServerOptions {
  exports: ExportRegistry;
  tls: TlsPolicy;
  log: Logger;
}

export class ListenError extends MeshblockError {
  constructor(where: string, cause: unknown) {
    const code = typeof cause === 'object' && cause !== null && 'code' in cause ? String(cause.code) : '';
    const reason =
      code === 'EADDRINUSE' ? 'address already in use' : code === 'EACCES' ? 'permission denied' : String(cause);
    super('MB_ERR_LISTEN', `cannot listen on ${where}: ${reason}`, { cause });
  }
}

interface Connection {
  socket: net.Socket;
  transmission: Transmission | null;
}

export class NbdServer {
  private readonly servers: net.Server[] = [];
  private readonly connections = new Set<Connection>();
  private nextConnectionId = 1;
  private closing = false;

  constructor(private readonly options: NbdServerOptions) {}

  async listenTcp(host: string, port: number): Promise<net.AddressInfo> {
    const server = this.createServer();
    await listen(server, { host, port }, `${host}:${port}`);
    return server.address() as net.AddressInfo;
  }

  async listenUnix(path: string): Promise<void> {
    await removeStaleSocket(path);
    const server = this.createServer();
    await listen(server, { path }, path);
  }

  /** Stops accepting, lets every connection finish its in-flight requests, then closes it. */
  async close(): Promise<void> {
    this.closing = true;
    const closed = this.servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
    const finished: Promise<void>[] = [];
    for (const connection of this.connections) {
      if (connection.transmission === null) {
        connection.socket.destroy();
      } else {
        connection.transmission.shutdown();
        finished.push(connection.transmission.done);
      }
    }
    await Promise.all([...closed, ...finished]);
  }

  /** Drops every connection at once. */
  destroy(): void {
    this.closing = true;
    for (const server of this.servers) server.close();
    for (const connection of this.connections) connection.socket.destroy();
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  private createServer(): net.Server {
    // allowHalfOpen: a client may send its requests and shut its side; it still gets replies.
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.onConnection(socket));
    server.on('error', (err) => this.options.log.error({ err }, 'nbd listener error'));
    this.servers.push(server);
    return server;
  }

  private onConnection(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const connectionId = this.nextConnectionId++;
    const log = this.options.log.child({ connectionId, peer: socket.remoteAddress ?? 'unix' });
    const connection: Connection = { socket, transmission: null };
    this.connections.add(connection);
    socket.setNoDelay(true);
    // The connection's socket, from accept and again after adoptReading replaces it.
    const watch = (watched: net.Socket): void => {
      watched.on('error', (err) => log.debug({ err }, 'nbd socket error'));
      watched.on('close', () => this.connections.delete(connection));
    };
    watch(socket);
    log.debug('nbd client connected');

    const timer = setTimeout(() => {
      log.warn({ timeoutMs: nbdHandshakeTimeoutMs }, 'nbd handshake timed out');
      socket.destroy();
    }, nbdHandshakeTimeoutMs);
    timer.unref();

    negotiate(socket, { exports: this.options.exports, tls: this.options.tls, log }).then(
      (negotiated) => {
        clearTimeout(timer);
        if (negotiated === null) {
          // ABORT: the ACK and our EOF are sent and the client is to hang up. One that does
          // not is cut off, or it would hold a connection that never chose an export (nor
          // passed TLS) past the handshake timeout.
          const linger = setTimeout(() => socket.destroy(), nbdLingerMs);
          linger.unref();
          socket.once('close', () => clearTimeout(linger));
          return;
        }
        if (this.closing) {
          negotiated.stream.destroy();
          return;
        }
        log.info(
          { export: negotiated.export.name, structuredReplies: negotiated.structuredReplies, tls: negotiated.tls },
          'nbd client attached',
        );
        // Past the handshake, a plain connection reads into buffers of its own (write
        // payloads straight into theirs); TLS keeps its socket.
        let attached = negotiated;
        if (!negotiated.tls && negotiated.stream === socket) {
          const adopted = adoptReading(socket, true);
          if (adopted !== null) {
            connection.socket = adopted.socket;
            watch(adopted.socket);
            attached = { ...negotiated, stream: adopted.socket, leftover: [...negotiated.leftover, ...adopted.buffered] };
          }
        }
        const transmission = new Transmission(attached, log);
        connection.transmission = transmission;
        const exports = this.options.exports;
        exports.attached?.(negotiated.export);
        transmission.done.then(
          () => log.info('nbd client detached'),
          () => undefined,
        ).finally(() => exports.detached?.(negotiated.export));
      },
      (err: unknown) => {
        clearTimeout(timer);
        if (err instanceof StreamEndedError) log.debug('nbd client left during the handshake');
        else if (err instanceof HandshakeError) log.warn({ reason: err.message }, 'nbd handshake failed');
        else log.warn({ err }, 'nbd handshake failed');
        socket.destroy();
      },
    );
  }
}

function listen(server: net.Server, options: net.ListenOptions, where: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(new ListenError(where, err));
    server.once('error', onError);
    server.listen(options, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** A socket file left by a dead server is removed; a live one, or any other file, is not. */
async function removeStaleSocket(path: string): Promise<void> {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(path);
  } catch {
    return;
  }
  if (!stat.isSocket()) throw new ListenError(path, 'the path exists and is not a socket');
  const alive = await new Promise<boolean>((resolve) => {
    const probe = net.connect({ path }, () => {
      probe.destroy();
      resolve(true);
    });
    probe.on('error', () => resolve(false));
  });
  if (alive) throw new ListenError(path, 'another server is listening on it');
  fs.unlinkSync(path);
}
