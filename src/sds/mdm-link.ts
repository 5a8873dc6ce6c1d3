// An SDS's connection to its MDM: connect, prove the cluster secret, register, then
// heartbeat every second with the SDS's statistics, and serve the MDM's orders (placement
// maps, devices, rebuilds) that come back on the same connection. When the connection
// drops, the SDS keeps serving IO from its cached map and reconnects with backoff: data
// never waits for the control plane.

import type { Logger } from 'pino';
import { WirePeer } from '../wire/peer.js';
import { connectTcp } from '../wire/peer-pool.js';
import { MdmOp, heartbeatIntervalMs, type SdsRegistration } from '../wire/mdm-ops.js';
import { SdsStatus } from '../wire/sds-ops.js';
import type { SdsIdentity, SdsService } from './service.js';

const reconnectDelayMsMin = 200;
const reconnectDelayMsMax = 5000;
const connectTimeoutMs = 5000;

export class MdmLink {
  private peer: WirePeer | null = null;
  private stopped = false;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private delayMs = reconnectDelayMsMin;
  /** Resolves when the first registration succeeded (for the ready line). */
  readonly registered: Promise<void>;
  private onRegistered: () => void = () => undefined;

  constructor(
    private readonly options: {
      mdmAddress: string;
      identity: SdsIdentity;
      secret: Buffer;
      service: SdsService;
      /** HOST:PORT the SDS serves on, as the MDM should tell others. */
      address: string;
      log: Logger;
    },
  ) {
    this.registered = new Promise((resolve) => (this.onRegistered = resolve));
  }

  start(): void {
    void this.connectLoop();
  }

  private async connectLoop(): Promise<void> {
    if (this.stopped) return;
    try {
      await this.connectOnce();
      this.delayMs = reconnectDelayMsMin;
    } catch (err) {
      this.options.log.warn({ err, mdm: this.options.mdmAddress, retryMs: this.delayMs }, 'MDM unreachable; serving from the cached map');
      this.scheduleRetry();
    }
  }

  private scheduleRetry(): void {
    if (this.stopped) return;
    this.retryTimer = setTimeout(() => void this.connectLoop(), this.delayMs);
    this.delayMs = Math.min(this.delayMs * 2, reconnectDelayMsMax);
  }

  private async connectOnce(): Promise<void> {
    const socket = await connectTcp(this.options.mdmAddress, connectTimeoutMs);
    const served = { role: 'mdm' as const, name: 'mdm' };
    const peer = await WirePeer.connect(socket, {
      clusterId: this.options.identity.clusterId,
      secret: this.options.secret,
      role: 'sds',
      name: this.options.identity.name,
      log: this.options.log,
      onRequest: (request) => this.options.service.handle(served, request),
    });
    if (this.stopped) {
      peer.destroy();
      return;
    }
    this.peer = peer;
    void peer.closed.then(() => this.onClosed(peer));
    const registration: SdsRegistration = {
      sdsId: this.options.identity.sdsId,
      name: this.options.identity.name,
      address: this.options.address,
      devices: this.options.service.registeredDevices(),
    };
    const reply = await peer.request(MdmOp.RegisterSds, Buffer.from(JSON.stringify(registration)));
    if (reply.status !== SdsStatus.Ok) {
      peer.destroy();
      throw new Error(`the MDM refused the registration: ${reply.payload.toString()}`);
    }
    this.options.log.info({ mdm: this.options.mdmAddress, mdmEpoch: JSON.parse(reply.payload.toString()).epoch as number }, 'registered with the MDM');
    this.onRegistered();
    this.heartbeatTimer = setInterval(() => this.sendHeartbeat(peer), heartbeatIntervalMs);
  }

  private sendHeartbeat(peer: WirePeer): void {
    const stats = Buffer.from(JSON.stringify(this.options.service.stats()));
    peer.request(MdmOp.Heartbeat, stats, { timeoutMs: heartbeatIntervalMs * 5 }).catch((err: unknown) => {
      this.options.log.debug({ err }, 'heartbeat not acknowledged');
    });
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
