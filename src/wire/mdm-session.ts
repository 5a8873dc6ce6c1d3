// A process's standing connection to its MDM, shared by the SDS and the SDC: connect, prove
// the cluster secret, register (the caller's step), heartbeat every second, serve the MDM's
// orders that come back on the same connection, and reconnect with backoff whenever it
// drops. Data never waits for it: SDSs and SDCs keep serving from their cached maps.

import type { Logger } from 'pino';
import { WirePeer, type PeerRole, type WireReply, type WireRequest } from './peer.js';
import { connectTcp } from './peer-pool.js';
import { heartbeatIntervalMs, mdmConnectTimeoutMs, mdmReconnectDelayMsMax, mdmReconnectDelayMsMin } from '../common/limits.js';
import { MdmOp } from './mdm-ops.js';

export interface MdmSessionOptions {
  mdmAddress: string;
  clusterId: string;
  secret: Buffer;
  role: PeerRole;
  name: string;
  log: Logger;
  /** Serves a request the MDM sends on this connection. */
  onRequest: (request: WireRequest) => Promise<WireReply>;
  /** Registers on a fresh connection; throwing drops it and tries again later. */
  register: (peer: WirePeer) => Promise<void>;
  /** What each heartbeat carries. */
  heartbeat: () => Buffer;
}

export class MdmSession {
  /** The connection, while one is up. */
  peer: WirePeer | null = null;
  private stopped = false;
  private delayMs = mdmReconnectDelayMsMin;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;

  constructor(private readonly options: MdmSessionOptions) {}

  start(): void {
    void this.connectLoop();
  }

  private async connectLoop(): Promise<void> {
    if (this.stopped) return;
    try {
      await this.connectOnce();
      this.delayMs = mdmReconnectDelayMsMin;
    } catch (err) {
      this.options.log.warn({ err, mdm: this.options.mdmAddress, retryMs: this.delayMs }, 'MDM unreachable; serving from the cached map');
      this.scheduleRetry();
    }
  }

  private scheduleRetry(): void {
    if (this.stopped) return;
    this.retryTimer = setTimeout(() => void this.connectLoop(), this.delayMs);
    this.delayMs = Math.min(this.delayMs * 2, mdmReconnectDelayMsMax);
  }

  private async connectOnce(): Promise<void> {
    const socket = await connectTcp(this.options.mdmAddress, mdmConnectTimeoutMs);
    const peer = await WirePeer.connect(socket, {
      clusterId: this.options.clusterId,
      secret: this.options.secret,
      role: this.options.role,
      name: this.options.name,
      log: this.options.log,
      onRequest: this.options.onRequest,
    });
    if (this.stopped) {
      peer.destroy();
      return;
    }
    this.peer = peer;
    void peer.closed.then(() => this.onClosed(peer));
    try {
      await this.options.register(peer);
    } catch (err) {
      // The caller's catch retries; the close handler must not retry as well.
      this.peer = null;
      peer.destroy();
      throw err;
    }
    this.heartbeatTimer = setInterval(() => {
      peer.request(MdmOp.Heartbeat, this.options.heartbeat(), { timeoutMs: heartbeatIntervalMs * 5 }).catch((err: unknown) => {
        this.options.log.debug({ err }, 'heartbeat not acknowledged');
      });
    }, heartbeatIntervalMs);
  }

  private onClosed(peer: WirePeer): void {
    if (this.peer !== peer) return;
    this.peer = null;
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    if (this.stopped) return;
    this.options.log.warn({ mdm: this.options.mdmAddress }, 'lost the MDM connection; serving from the cached map and reconnecting');
    this.scheduleRetry();
  }

  close(): void {
    this.stopped = true;
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer);
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.peer?.destroy();
    this.peer = null;
  }
}
