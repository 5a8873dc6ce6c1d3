// A process's standing connection to the MDM, shared by the SDS and the SDC: connect, prove
// the cluster secret, register (the caller's step), heartbeat every second, serve the MDM's
// orders that come back on the same connection, and reconnect whenever it drops. Data never
// waits for it: SDSs and SDCs keep serving from their cached maps.
//
// Following the Master. The process is given every MDM's address (ScaleIO's "MDM IPs"), and
// only the Master takes wire connections (a Slave's wire port is closed; an MDM that is
// stepping down may still refuse a registration). So the addresses are tried in turn:
//
//   connect or setup fails, or the registration is refused   the next address, at once
//   every address failed in one round                         back off (min, doubling to max),
//                                                             then the next round
//   registered                                                backoff back to min
//   a registered connection drops, or stops answering         the next address, after the
//   heartbeats (mdmHeartbeatTimeoutMs)                        current backoff (min, normally)
//
// The pause after a drop is short but not zero: an MDM that accepts a registration and then
// drops it at once must not get a reconnect loop at the speed of the network. Starting after
// a drop from the next address, not the same one, finds a new Master first when the old one
// died; if the old one only restarted, the round comes back to it.

import type { Logger } from 'pino';
import { WirePeer, type PeerRole, type WireReply, type WireRequest } from './peer.js';
import { connectTcp } from './peer-pool.js';
import { assert } from '../common/assert.js';
import { MeshblockError } from '../common/errors.js';
import { heartbeatIntervalMs, mdmAddressesMax, mdmConnectTimeoutMs, mdmHeartbeatTimeoutMs, mdmReconnectDelayMsMax, mdmReconnectDelayMsMin } from '../common/limits.js';
import { MdmOp } from './mdm-ops.js';

export interface MdmSessionOptions {
  /** Every MDM's wire address (HOST:PORT), tried in this order: 1 to mdmAddressesMax, distinct. */
  mdmAddresses: readonly string[];
  clusterId: string;
  secret: Buffer;
  role: PeerRole;
  name: string;
  log: Logger;
  /** Serves a request the MDM sends on this connection. */
  onRequest: (request: WireRequest) => Promise<WireReply>;
  /**
   * Registers on a fresh connection to the MDM at `address`; throwing (a refusal) drops it
   * and moves on to the next address.
   */
  register: (peer: WirePeer, address: string) => Promise<void>;
  /** What each heartbeat carries. */
  heartbeat: () => Buffer;
}

export class MdmSession {
  /** The connection, while one is up. */
  peer: WirePeer | null = null;
  private stopped = false;
  private delayMs = mdmReconnectDelayMsMin;
  /** Index in mdmAddresses of the MDM connected to, being tried, or to be tried next. */
  private addressIndex = 0;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private heartbeatQueued = false;
  private retryTimer: NodeJS.Timeout | null = null;

  constructor(private readonly options: MdmSessionOptions) {
    // Callers validate the list at the edge (parseHostPortList); here it is an invariant.
    const count = options.mdmAddresses.length;
    assert(count >= 1 && count <= mdmAddressesMax, `1 to ${mdmAddressesMax} MDM addresses, not ${count}`);
    assert(new Set(options.mdmAddresses).size === count, 'MDM addresses are distinct');
  }

  /** The MDM address connected to, being tried, or to be tried next. */
  get address(): string {
    return this.options.mdmAddresses[this.addressIndex] as string;
  }

  start(): void {
    void this.connectRound();
  }

  /** Tries each address once, from the current one, until one registers; never throws. */
  private async connectRound(): Promise<void> {
    this.retryTimer = null;
    const addresses = this.options.mdmAddresses;
    for (let attempt = 0; attempt < addresses.length; attempt += 1) {
      if (this.stopped) return;
      const address = this.address;
      try {
        await this.connectOnce(address);
        this.delayMs = mdmReconnectDelayMsMin;
        return;
      } catch (err) {
        if (this.stopped) return;
        this.options.log.warn({ err, mdm: address }, addresses.length > 1 ? 'MDM not available at this address; trying the next' : 'MDM not available');
        this.nextAddress();
      }
    }
    if (this.stopped) return;
    this.options.log.warn({ mdms: addresses, retryMs: this.delayMs }, 'no MDM reachable; serving from the cached map');
    this.scheduleRound();
  }

  private nextAddress(): void {
    this.addressIndex = (this.addressIndex + 1) % this.options.mdmAddresses.length;
  }

  private scheduleRound(): void {
    if (this.stopped) return;
    this.retryTimer = setTimeout(() => void this.connectRound(), this.delayMs);
    this.delayMs = Math.min(this.delayMs * 2, mdmReconnectDelayMsMax);
  }

  private async connectOnce(address: string): Promise<void> {
    const socket = await connectTcp(address, mdmConnectTimeoutMs);
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
      await this.options.register(peer, address);
    } catch (err) {
      // The round moves on; the close handler must not start another as well.
      this.peer = null;
      peer.destroy();
      throw err;
    }
    this.heartbeatTimer = setInterval(() => this.sendHeartbeat(peer), heartbeatIntervalMs);
  }

  /**
   * Sends a heartbeat now rather than at the next tick, when what it carries changed in a way the
   * MDM acts on (an SDC's first client of a volume: restore and unmap refuse an open volume).
   * Calls before the one queued is sent coalesce into it; unregistered, nothing is sent.
   */
  heartbeatSoon(): void {
    if (this.heartbeatQueued) return;
    this.heartbeatQueued = true;
    setImmediate(() => {
      this.heartbeatQueued = false;
      if (this.peer !== null && this.heartbeatTimer !== null) this.sendHeartbeat(this.peer);
    });
  }

  private sendHeartbeat(peer: WirePeer): void {
    peer.request(MdmOp.Heartbeat, this.options.heartbeat(), { timeoutMs: mdmHeartbeatTimeoutMs }).catch((err: unknown) => {
      if (this.peer !== peer) return;
      const code = err instanceof MeshblockError ? err.code : null;
      if (code === 'MB_ERR_WIRE_TIMEOUT' || code === 'MB_ERR_WIRE_SEND_TIMEOUT') {
        // Silence, not a closed connection: drop it, and the close handler moves on.
        this.options.log.warn({ err, mdm: this.address }, 'the MDM stopped answering heartbeats; dropping the connection');
        peer.destroy();
        return;
      }
      this.options.log.debug({ err }, 'heartbeat not acknowledged');
    });
  }

  private onClosed(peer: WirePeer): void {
    // Closed while registering: the round that connected it hears of it from register() and
    // moves on itself; starting another round here would run two at once.
    if (this.peer !== peer || this.heartbeatTimer === null) return;
    this.peer = null;
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    if (this.stopped) return;
    const lost = this.address;
    this.nextAddress();
    this.options.log.warn({ mdm: lost, next: this.address, retryMs: this.delayMs }, 'lost the MDM connection; serving from the cached map and reconnecting');
    this.scheduleRound();
  }

  close(): void {
    this.stopped = true;
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer);
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.peer?.destroy();
    this.peer = null;
  }
}
