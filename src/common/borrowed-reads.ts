// Socket reads into memory the process keeps. By default Node reads a socket into a fresh
// 64 KiB allocation per read; at hundreds of MB/s, or tens of thousands of small frames a
// second, those allocations drive V8 into frequent full collections (it counts them as
// external memory). Node's `onread` option reads into a buffer of our choosing instead:
// here one 256 KiB buffer per socket, reused for every read, or, while a large payload is
// being received, the rest of that payload's own buffer, so its bytes land where they are
// used with no copy at all.
//
// A socket with borrowed reads does not emit 'data'. It emits `borrowedDataEvent` with a
// view of the shared buffer, valid only during the listener (the next read overwrites it),
// and `directDataEvent` with the bytes that landed in `direct`.
//
// Node 20 takes `onread` only when it makes the socket (net.connect, new net.Socket), not
// for the sockets a server accepts. adoptAccepted moves an accepted socket's handle into a
// socket made with `onread`; the server must be created with `pauseOnConnect`, so that
// nothing is read before the move. adoptReading does the same for a socket that has been
// read through 'data' events (the NBD handshake), handing over what it had buffered. Both
// use Node's `_handle` field and its constructor's `handle` option, which are not public
// API: they are stable across Node's lines and tested here, and Node 20 is pinned.

import * as net from 'node:net';

export const borrowedDataEvent = 'meshblock:borrowed-data';
export const directDataEvent = 'meshblock:direct-data';

const sharedReadBytes = 256 * 1024;
const readsOfSocket = new WeakMap<net.Socket, BorrowedReads>();

export class BorrowedReads {
  private readonly shared = Buffer.allocUnsafeSlow(sharedReadBytes);
  private socket: net.Socket | null = null;
  /**
   * Where reads land instead of the shared buffer, until set back to null. Node asks for the
   * next read's buffer right after each read's callback, so a value set inside a listener
   * takes effect from the next read on.
   */
  direct: Buffer | null = null;

  readonly option: net.OnReadOpts = {
    buffer: () => this.direct ?? this.shared,
    callback: (bytesRead: number, buffer: Uint8Array): boolean => {
      const view = Buffer.from(buffer.buffer, buffer.byteOffset, bytesRead);
      this.socket?.emit(buffer === this.shared ? borrowedDataEvent : directDataEvent, view);
      return true;
    },
  };

  /** The borrowed reads of `socket`, if it was made with them. */
  static of(socket: object): BorrowedReads | undefined {
    return readsOfSocket.get(socket as net.Socket);
  }

  attach(socket: net.Socket): void {
    this.socket = socket;
    readsOfSocket.set(socket, this);
  }
}

/** What Node keeps inside a socket and takes in its constructor, beyond its typed options. */
interface SocketInternals {
  _handle: { readStop(): number; reading: boolean; writeQueueSize: number } | null;
  _readableState: { ended: boolean };
}

/**
 * The socket a server accepted, as a socket with borrowed reads, paused until its reader
 * resumes it. The server must have been created with `pauseOnConnect: true`. If the socket
 * has no handle (already closed), it is returned as it is.
 */
export function adoptAccepted(accepted: net.Socket): net.Socket {
  const internals = accepted as unknown as SocketInternals;
  const handle = internals._handle;
  if (handle === null) return accepted;
  // The accepted socket lets go of the handle and closes without touching it (the server
  // counts it as closed); the new socket owns the connection from here.
  internals._handle = null;
  accepted.destroy();
  return socketWithBorrowedReads(handle, false);
}

/**
 * A socket that has been read through 'data' events (and is paused), moved into a socket
 * with borrowed reads, with the bytes it had read but not delivered yet, in order. Null, and
 * the socket left as it was, when the move is not safe: closed, its end already read, or
 * writes still queued (their completions belong to the old socket).
 */
export function adoptReading(socket: net.Socket, allowHalfOpen: boolean): { socket: net.Socket; buffered: Buffer[] } | null {
  const internals = socket as unknown as SocketInternals;
  const handle = internals._handle;
  if (handle === null || socket.destroyed || internals._readableState.ended || socket.writableLength !== 0 || handle.writeQueueSize !== 0) return null;
  handle.readStop();
  handle.reading = false;
  // Without a handle, read() only hands out what the stream holds (it cannot start reading).
  internals._handle = null;
  const buffered: Buffer[] = [];
  for (let chunk: unknown = socket.read(); chunk !== null; chunk = socket.read()) buffered.push(chunk as Buffer);
  socket.removeAllListeners();
  socket.on('error', () => undefined);
  socket.destroy();
  return { socket: socketWithBorrowedReads(handle, allowHalfOpen), buffered };
}

function socketWithBorrowedReads(handle: object, allowHalfOpen: boolean): net.Socket {
  const reads = new BorrowedReads();
  const options = { handle, allowHalfOpen, readable: true, writable: true, pauseOnCreate: true, onread: reads.option };
  const socket = new net.Socket(options as net.SocketConstructorOpts);
  reads.attach(socket);
  return socket;
}

/**
 * A TCP connection being made to `host:port` with borrowed reads. Listen for 'connect' and
 * 'error' as on net.connect's socket.
 */
export function connectBorrowed(host: string, port: number): net.Socket {
  const reads = new BorrowedReads();
  const socket = net.connect({ host, port, onread: reads.option });
  reads.attach(socket);
  return socket;
}
