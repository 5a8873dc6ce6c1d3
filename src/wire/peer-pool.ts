// Outgoing wire connections by the id of the process at the other end (an SDS, for the
// SDC and for mirroring SDSs). A connection is made on first use, shared by every request
// to that process, forgotten when it closes, and replaced when the process's address
// changes in the placement map.

import * as net from 'node:net';
import { parseHostPort } from '../common/address.js';
import { connectBorrowed } from '../common/borrowed-reads.js';
import { wireConnectTimeoutMs } from '../common/limits.js';
import { WireError, WirePeer, type WirePeerOptions } from './peer.js';


/** Who we are on every connection the pool makes; these serve no requests. */
export type PeerPoolOptions = Omit<WirePeerOptions, 'onRequest' | 'inflightBytesMax'>;

export class PeerPool {
  /** `connected` is set once `peer` has resolved: the IO path takes it without an await. */
  private readonly peers = new Map<string, { address: string; peer: Promise<WirePeer>; connected: WirePeer | null }>();

  constructor(private readonly options: PeerPoolOptions) {}

  /** The connection to `id` at `address`, made (and authenticated) if there is none. */
  get(id: string, address: string): Promise<WirePeer> {
    const existing = this.peers.get(id);
    if (existing !== undefined && existing.address === address) return existing.peer;
    if (existing !== undefined) this.drop(id);
    const peer = this.connect(address);
    const entry = { address, peer, connected: null as WirePeer | null };
    this.peers.set(id, entry);
    peer.then(
      (connected) => {
        entry.connected = connected;
        void connected.closed.then(() => this.forget(id, peer));
      },
      () => this.forget(id, peer),
    );
    return peer;
  }

  /**
   * The connection to `id` at `address` if it is made and authenticated, else null (then
   * get() makes it). One that has just failed is still returned until its close is seen: its
   * requests fail at once, as the promise's would.
   */
  connected(id: string, address: string): WirePeer | null {
    const existing = this.peers.get(id);
    return existing !== undefined && existing.address === address ? existing.connected : null;
  }

  /** Drops connections to processes no longer at the address `addressOf` gives (or gone). */
  retain(addressOf: (id: string) => string | undefined): void {
    for (const [id, entry] of this.peers) {
      if (addressOf(id) !== entry.address) this.drop(id);
    }
  }

  drop(id: string): void {
    const entry = this.peers.get(id);
    if (entry === undefined) return;
    this.peers.delete(id);
    entry.peer.then((peer) => peer.destroy(), () => undefined);
  }

  dropAll(): void {
    for (const id of [...this.peers.keys()]) this.drop(id);
  }

  private forget(id: string, peer: Promise<WirePeer>): void {
    if (this.peers.get(id)?.peer === peer) this.peers.delete(id);
  }

  private async connect(address: string): Promise<WirePeer> {
    const socket = await connectTcp(address, wireConnectTimeoutMs);
    return WirePeer.connect(socket, this.options);
  }
}

/**
 * A TCP connection to HOST:PORT, or a WireError naming the address (refused, timed out).
 * The socket has borrowed reads (see borrowed-reads.ts): its WirePeer gets each read as a
 * view of the socket's own buffer, or straight in the payload buffer it is filling.
 */
export async function connectTcp(address: string, timeoutMs: number): Promise<net.Socket> {
  const { host, port } = parseHostPort('address', address);
  const socket = connectBorrowed(host, port);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new WireError('MB_ERR_WIRE_CONNECT_TIMEOUT', `connect to ${address} timed out`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      // Nothing is read until a WirePeer takes the socket (it resumes it): a borrowed read
      // before then would have no one to go to.
      socket.pause();
      resolve();
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(new WireError('MB_ERR_WIRE_CONNECT', `cannot connect to ${address}: ${err.message}`, { cause: err }));
    });
  });
  return socket;
}

/** Listens on HOST:PORT; resolves with the address bound (port 0 picks one). */
export async function listenTcp(server: net.Server, host: string, port: number): Promise<net.AddressInfo> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server.address() as net.AddressInfo;
}
