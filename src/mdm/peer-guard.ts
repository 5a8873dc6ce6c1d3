// What one bad peer may cost the MDM (issue 23, "Bad input"). The wire layer already bounds a
// single connection (peer.ts: bytes and requests in flight, the socket queue; handshake:
// the setup timeout). This bounds what a peer that knows the cluster secret may make the MDM
// do across connections and requests, so that it starves no honest peer of the MDM's time:
//
//   what                     bound                                   where it is checked
//   -----------------------  --------------------------------------  -----------------------
//   reconnecting in a loop   short connections per remote address    at accept, before the
//                            (an IPv6 address: its /64), a token     handshake: the socket
//                            bucket (burst, then per second)         is destroyed unread
//   holding sockets open     connections per remote address          at accept
//   registering in a loop    registrations per SDS id / SDC guid,    RegisterSds/Sdc, before
//                            a token bucket                          the command is journaled
//   enormous payloads        bytes per op (heartbeats: an SDS's      every MDM request,
//                            stats list its rebuild jobs; others)    before JSON.parse
//
// Only short connections are charged to an address (one that ends within mdmShortConnectionMs
// of being accepted): the fleet simulator runs thousands of honest peers from 127.0.0.1, and
// after an MDM restart every shard of a host calls at once; neither churns, and neither pays.
// An address that churned lately pays its token at accept instead (given back if the
// connection lasts), so a loop with many connections in flight gets no more than the rate.
// A refused connection is not charged: refusing costs an accept and a close, so a loop at
// full speed gets mdmChurnPerAddressPerSecond handshakes a second, and its address gets its
// allowance back as soon as it stops.
//
// Every refusal is logged, at most once per kind and peer per mdmRefusalLogIntervalMs, with
// the count of those not logged since: a peer refused every second is one line a minute.
//
// The decisions are made by RateLimiter with the time handed in, as the state machine's
// (docs: "State machines do no I/O"); PeerGuard adds only the log.

import { isIPv6 } from 'node:net';
import type { Logger } from 'pino';
import { assert } from '../common/assert.js';
import type { MeshblockCode } from '../common/errors.js';
import {
  mdmChurnPerAddressBurstMax,
  mdmChurnPerAddressPerSecond,
  mdmConnectionsPerAddressMax,
  mdmGuardKeysMax,
  mdmHeartbeatBytesMax,
  mdmRefusalLogIntervalMs,
  mdmRegistrationRefillMs,
  mdmRegistrationsPerPeerBurstMax,
  mdmRequestBytesMax,
  mdmShortConnectionMs,
} from '../common/limits.js';
import { MdmOp } from '../wire/mdm-ops.js';
import type { WireReply, WireRequest } from '../wire/peer.js';
import { SdsStatus } from '../wire/sds-ops.js';

/** The bounds; every one defaults to its limits.ts value (tests pass smaller ones). */
export interface PeerGuardLimits {
  churnPerAddressBurstMax: number;
  churnPerAddressPerSecond: number;
  shortConnectionMs: number;
  connectionsPerAddressMax: number;
  registrationsPerPeerBurstMax: number;
  registrationRefillMs: number;
  keysMax: number;
  requestBytesMax: number;
  heartbeatBytesMax: number;
  refusalLogIntervalMs: number;
}

export const peerGuardLimitsDefault: Readonly<PeerGuardLimits> = {
  churnPerAddressBurstMax: mdmChurnPerAddressBurstMax,
  churnPerAddressPerSecond: mdmChurnPerAddressPerSecond,
  shortConnectionMs: mdmShortConnectionMs,
  connectionsPerAddressMax: mdmConnectionsPerAddressMax,
  registrationsPerPeerBurstMax: mdmRegistrationsPerPeerBurstMax,
  registrationRefillMs: mdmRegistrationRefillMs,
  keysMax: mdmGuardKeysMax,
  requestBytesMax: mdmRequestBytesMax,
  heartbeatBytesMax: mdmHeartbeatBytesMax,
  refusalLogIntervalMs: mdmRefusalLogIntervalMs,
};

/** What a peer is known by in the MDM's session of its connection. */
export interface GuardedSession {
  sdsId: string | null;
  sdcId: string | null;
  remoteAddress: string | null;
}

interface Bucket {
  tokens: number;
  atMs: number;
}

/**
 * Token buckets by key (an address, a peer id), at most `keysMax` of them: a bucket that has
 * refilled is the same as none and is dropped by sweep(), so only keys refused or charged
 * lately take memory. Time is handed in.
 */
export class TokenBuckets {
  private readonly buckets = new Map<string, Bucket>();
  private sweptAtMs = 0;

  constructor(
    private readonly burstMax: number,
    private readonly refillPerMs: number,
    private readonly keysMax: number,
  ) {
    assert(burstMax >= 1 && refillPerMs > 0 && keysMax >= 1, 'a bucket holds at least one token and refills');
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Tokens `key` holds at `nowMs` (burstMax for a key never charged). */
  tokens(key: string, nowMs: number): number {
    const bucket = this.buckets.get(key);
    if (bucket === undefined) return this.burstMax;
    return Math.min(this.burstMax, bucket.tokens + Math.max(0, nowMs - bucket.atMs) * this.refillPerMs);
  }

  /** Takes one token if `key` has one; false (nothing taken) if not, or if no room is left to track it. */
  take(key: string, nowMs: number): boolean {
    const tokens = this.tokens(key, nowMs);
    if (tokens < 1) return false;
    return this.set(key, tokens - 1, nowMs);
  }

  /** Takes one token whatever is left, down to none (a cost already paid: a short connection that closed). */
  charge(key: string, nowMs: number): void {
    this.set(key, Math.max(0, this.tokens(key, nowMs) - 1), nowMs);
  }

  /** Gives one token back (up to burstMax): a cost taken ahead that turned out not to be one. */
  refund(key: string, nowMs: number): void {
    if (this.buckets.has(key)) this.set(key, Math.min(this.burstMax, this.tokens(key, nowMs) + 1), nowMs);
  }

  private set(key: string, tokens: number, nowMs: number): boolean {
    if (!this.buckets.has(key) && this.buckets.size >= this.keysMax) {
      this.sweep(nowMs);
      if (this.buckets.size >= this.keysMax) return false;
    }
    this.buckets.set(key, { tokens, atMs: nowMs });
    // Full buckets go at most once per refill time of the whole burst: amortized O(1).
    if (nowMs - this.sweptAtMs >= this.burstMax / this.refillPerMs) this.sweep(nowMs);
    return true;
  }

  /** Drops every bucket that has refilled. */
  sweep(nowMs: number): void {
    this.sweptAtMs = nowMs;
    for (const [key] of this.buckets) if (this.tokens(key, nowMs) >= this.burstMax) this.buckets.delete(key);
  }
}

/** An admitted connection, as the guard tracks it until it closes. */
export interface ConnectionTicket {
  readonly address: string;
  readonly openedAtMs: number;
  /** It paid its token at accept (its address had churned lately). */
  readonly reserved: boolean;
  /** Known short or long: charged, or given back, already. */
  settled: boolean;
}

/** Why the guard refused something, as the peer is told and the log says. */
export interface Refusal {
  code: MeshblockCode;
  message: string;
}

/** The guard's decisions, with time handed in: no I/O, no clock. */
export class RateLimiter {
  readonly limits: PeerGuardLimits;
  private readonly churn: TokenBuckets;
  private readonly registrations: TokenBuckets;
  private readonly openByAddress = new Map<string, number>();

  constructor(limits: Partial<PeerGuardLimits> = {}) {
    this.limits = { ...peerGuardLimitsDefault, ...limits };
    const l = this.limits;
    this.churn = new TokenBuckets(l.churnPerAddressBurstMax, l.churnPerAddressPerSecond / 1000, l.keysMax);
    this.registrations = new TokenBuckets(l.registrationsPerPeerBurstMax, 1 / l.registrationRefillMs, l.keysMax);
  }

  /** Keys tracked (addresses with open connections, charged addresses, charged peers): bounded by keysMax each. */
  get trackedKeys(): number {
    return this.openByAddress.size + this.churn.size + this.registrations.size;
  }

  /**
   * A connection from `address` was accepted: a ticket admits it (counted open until
   * connectionClosed), a refusal does not. An address that churned lately (its allowance not
   * full) pays a token at accept, given back if the connection lasts: else a loop with many
   * connections in flight would pass, each time a token came back, as many as it has in
   * flight. An address that never churned pays nothing at accept, however many it opens.
   */
  admitConnection(address: string, nowMs: number): ConnectionTicket | Refusal {
    const open = this.openByAddress.get(address) ?? 0;
    if (open >= this.limits.connectionsPerAddressMax) {
      return { code: 'MB_ERR_PEER_THROTTLED', message: `${address} holds ${open} connections to the MDM, its most (mdmConnectionsPerAddressMax)` };
    }
    if (open === 0 && this.openByAddress.size >= this.limits.keysMax) {
      return { code: 'MB_ERR_PEER_THROTTLED', message: `the MDM holds connections from ${this.openByAddress.size} addresses, its most (mdmGuardKeysMax)` };
    }
    const tokens = this.churn.tokens(address, nowMs);
    if (tokens < 1) {
      return {
        code: 'MB_ERR_PEER_THROTTLED',
        message: `${address} made over ${this.limits.churnPerAddressBurstMax} connections that ended within ${this.limits.shortConnectionMs} ms (a reconnect loop?); its connections are refused beyond ${this.limits.churnPerAddressPerSecond} a second`,
      };
    }
    const reserved = tokens < this.limits.churnPerAddressBurstMax && this.churn.take(address, nowMs);
    this.openByAddress.set(address, open + 1);
    return { address, openedAtMs: nowMs, reserved, settled: false };
  }

  /** An admitted connection is still open mdmShortConnectionMs after it was accepted: it was no churn. */
  connectionLasted(ticket: ConnectionTicket, nowMs: number): void {
    if (ticket.settled) return;
    ticket.settled = true;
    if (ticket.reserved) this.churn.refund(ticket.address, nowMs);
  }

  /** An admitted connection closed: a short one costs its address a token (unless it paid at accept). */
  connectionClosed(ticket: ConnectionTicket, nowMs: number): void {
    const open = this.openByAddress.get(ticket.address) ?? 0;
    assert(open > 0, 'a connection closes only once, after it was admitted');
    if (open === 1) this.openByAddress.delete(ticket.address);
    else this.openByAddress.set(ticket.address, open - 1);
    if (ticket.settled) return;
    if (nowMs - ticket.openedAtMs >= this.limits.shortConnectionMs) {
      this.connectionLasted(ticket, nowMs);
      return;
    }
    ticket.settled = true;
    if (!ticket.reserved) this.churn.charge(ticket.address, nowMs);
  }

  /** A registration of `peerKey` ('sds:ID', 'sdc:GUID'): null admits it (taking a token), else why not. */
  admitRegistration(peerKey: string, nowMs: number): Refusal | null {
    if (this.registrations.take(peerKey, nowMs)) return null;
    const everyS = this.limits.registrationRefillMs / 1000;
    return {
      code: 'MB_ERR_PEER_THROTTLED',
      message: `${peerKey.replace(':', ' ')} registered over ${this.limits.registrationsPerPeerBurstMax} times in a row (a registration loop?); it may register once every ${everyS} s from now`,
    };
  }

  /** The bound of `op`'s payload. */
  payloadBytesMax(op: number): number {
    return op === MdmOp.Heartbeat ? this.limits.heartbeatBytesMax : this.limits.requestBytesMax;
  }

  /** A payload of `payloadBytes` for `op`: null if within its bound, else why not. */
  checkPayload(op: number, payloadBytes: number): Refusal | null {
    const max = this.payloadBytesMax(op);
    if (payloadBytes <= max) return null;
    const what = op === MdmOp.Heartbeat ? 'a heartbeat' : `a request (op ${op})`;
    return { code: 'MB_ERR_REQUEST_TOO_LARGE', message: `${what} of ${payloadBytes} bytes, over its bound of ${max} (${op === MdmOp.Heartbeat ? 'mdmHeartbeatBytesMax' : 'mdmRequestBytesMax'}); refused unread` };
  }
}

/**
 * Logs a refusal once per `interval` per key, with how many were not logged since. Bounded:
 * at most `keysMax` keys; entries older than the interval are dropped when room is needed.
 */
export class RefusalLog {
  private readonly entries = new Map<string, { loggedAtMs: number; suppressed: number }>();

  constructor(
    private readonly intervalMs: number,
    private readonly keysMax: number,
  ) {}

  /** Null if this refusal is not to be logged now; else how many of the key's were not logged before it. */
  due(key: string, nowMs: number): number | null {
    const entry = this.entries.get(key);
    if (entry !== undefined && nowMs - entry.loggedAtMs < this.intervalMs) {
      entry.suppressed += 1;
      return null;
    }
    const suppressed = entry?.suppressed ?? 0;
    if (entry === undefined && this.entries.size >= this.keysMax) {
      for (const [old, value] of this.entries) if (nowMs - value.loggedAtMs >= this.intervalMs) this.entries.delete(old);
      // Still full: many peers refused at once. Logging this one anyway costs a line; tracking it, unbounded memory.
      if (this.entries.size >= this.keysMax) return 0;
    }
    this.entries.set(key, { loggedAtMs: nowMs, suppressed: 0 });
    return suppressed;
  }
}

/** The MDM's guard: the RateLimiter's decisions, their log, and the replies refused requests get. */
export class PeerGuard {
  readonly limiter: RateLimiter;
  private readonly refusalLog: RefusalLog;
  /** Refusals since the MDM started, by kind: for tests and the bench. */
  readonly refused = { connections: 0, registrations: 0, payloads: 0 };

  constructor(
    private readonly log: Logger,
    limits: Partial<PeerGuardLimits> = {},
  ) {
    this.limiter = new RateLimiter(limits);
    this.refusalLog = new RefusalLog(this.limiter.limits.refusalLogIntervalMs, this.limiter.limits.keysMax);
  }

  /** A connection accepted from `address`: a ticket admits it; null: the caller destroys the socket unread. */
  admitConnection(address: string, nowMs: number): ConnectionTicket | null {
    const admitted = this.limiter.admitConnection(addressKey(address), nowMs);
    if (!('code' in admitted)) return admitted;
    this.refused.connections += 1;
    this.logRefusal(`connection/${address}`, nowMs, { address }, admitted, 'wire connection refused');
    return null;
  }

  /** Call mdmShortConnectionMs after admitting, if the connection is still open. */
  connectionLasted(ticket: ConnectionTicket, nowMs: number): void {
    this.limiter.connectionLasted(ticket, nowMs);
  }

  connectionClosed(ticket: ConnectionTicket, nowMs: number): void {
    this.limiter.connectionClosed(ticket, nowMs);
  }

  /**
   * Checks a request before it is served: its payload's size (before anything parses it) and,
   * for a registration, its peer's registration allowance. Null: serve it; else the reply.
   */
  checkRequest(session: GuardedSession, request: WireRequest, nowMs: number): WireReply | null {
    const peer = session.sdsId !== null ? `sds:${session.sdsId}` : session.sdcId !== null ? `sdc:${session.sdcId}` : `address:${session.remoteAddress ?? 'unknown'}`;
    const tooLarge = this.limiter.checkPayload(request.op, request.payload.length);
    if (tooLarge !== null) {
      this.refused.payloads += 1;
      this.logRefusal(`payload/${request.op}/${peer}`, nowMs, { peer, op: request.op, payloadBytes: request.payload.length }, tooLarge, 'MDM request refused unread: too large');
      return refusalReply(tooLarge);
    }
    const registering = registrationKey(request);
    if (registering === null) return null;
    const throttled = this.limiter.admitRegistration(registering, nowMs);
    if (throttled === null) return null;
    this.refused.registrations += 1;
    this.logRefusal(`registration/${registering}`, nowMs, { peer: registering, address: session.remoteAddress }, throttled, 'registration refused');
    return refusalReply(throttled);
  }

  private logRefusal(key: string, nowMs: number, fields: Record<string, unknown>, refusal: Refusal, what: string): void {
    const suppressed = this.refusalLog.due(key, nowMs);
    if (suppressed === null) return;
    this.log.warn({ ...fields, code: refusal.code, notLoggedSince: suppressed, logIntervalMs: this.limiter.limits.refusalLogIntervalMs }, `${what}: ${refusal.message}`);
  }
}

/**
 * What an address is bounded as: an IPv4 address itself, an IPv6 address by its /64 (one
 * host or LAN is given a whole /64: per address, a loop could change address every time).
 */
export function addressKey(address: string): string {
  if (!isIPv6(address)) return address;
  // An IPv4 peer of a dual-stack listener: its IPv4 address.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped !== null) return mapped[1] as string;
  const [head = '', tail] = address.split('::') as [string, string | undefined];
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  // An embedded IPv4 tail (::ffff:1.2.3.4, 64:ff9b::1.2.3.4) is two groups; only the first four matter.
  const tailCount = tailGroups.reduce((count, group) => count + (group.includes('.') ? 2 : 1), 0);
  const groups = tail === undefined ? headGroups : [...headGroups, ...Array<string>(Math.max(0, 8 - headGroups.length - tailCount)).fill('0'), ...tailGroups];
  return `${groups.slice(0, 4).map((group) => (group.includes('.') ? group : Number.parseInt(group, 16).toString(16))).join(':')}::/64`;
}

/** The reply to a refused request: Failed, with the code first in the message (the peer logs it). */
function refusalReply(refusal: Refusal): WireReply {
  return { status: SdsStatus.Failed, payload: Buffer.from(`${refusal.code}: ${refusal.message}`) };
}

/**
 * The peer a registration names ('sds:ID' or 'sdc:GUID'), or null for another op or one that
 * names none (the op's own parser refuses it). The payload is within mdmRequestBytesMax here.
 */
function registrationKey(request: WireRequest): string | null {
  if (request.op !== MdmOp.RegisterSds && request.op !== MdmOp.RegisterSdc) return null;
  let value: unknown;
  try {
    value = JSON.parse(request.payload.toString('utf8'));
  } catch {
    return null;
  }
  if (value === null || typeof value !== 'object') return null;
  const entry = value as { sdsId?: unknown; guid?: unknown };
  if (request.op === MdmOp.RegisterSds) return typeof entry.sdsId === 'string' ? `sds:${entry.sdsId.slice(0, 64)}` : null;
  return typeof entry.guid === 'string' ? `sdc:${entry.guid.slice(0, 64)}` : null;
}
