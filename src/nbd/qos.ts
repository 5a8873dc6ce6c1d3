// QoS: IOPS and bandwidth limits enforced in front of any backend (docs/qos.md). The SDC
// gives every mapped volume one QosLimiter, shared by all the NBD connections to it and
// changed in place when the MDM sends new limits; each export's backend is a QosBackend
// that asks the limiter before every read and write.
//
//   NBD READ/WRITE ──▶ QosBackend ──admit(bytes)──▶ QosLimiter ──▶ next backend (the volume)
//                                                   iops  bucket  (+ its burst-rate bucket)
//                                                   bytes bucket  (+ its burst-rate bucket)
//
// A request of N bytes costs 1 IO token and N byte tokens. Buckets refill continuously from
// a monotonic clock; requests that find too few tokens wait in one FIFO per limiter, and a
// single timer, set for the head waiter and never further off than qosTickMs, lets them in.
// Nothing here fails a request: a waiter only waits, and the NBD server's in-flight bounds
// (nbdInflightRequestsMax per connection) bound how many can wait, so a throttled client is
// slowed by backpressure, not by a queue that grows.
//
// The debt rule: a request is let in once every bucket holds min(cost, capacity) tokens, and
// then its whole cost is taken, which may leave a bucket negative; those after it wait until
// the debt is paid back. A request larger than a bucket can ever hold (say 1 MiB against a
// 1 MiB/s limit, whose bucket holds 50 ms worth) is therefore neither cut nor starved, and the
// long-run rate stays exact.
//
// Burst (librbd's `_burst` options): with a burst rate set, the limit's bucket holds
// burst × burstSeconds tokens, saved while the volume is idle, and a second bucket refilled
// at the burst rate caps how fast the saving is spent. Without a burst the bucket holds only
// qosTickMs worth of its rate, so an idle volume gains nothing and the limit holds at once.
//
// Without limits the per-request cost is two counter increments and one branch: no clock
// read, no promise, no allocation (`admit` returns null for "go now").

import { qosTickMs } from '../common/limits.js';
import { qosLimitsProblem, qosUnlimited, type QosLimits } from '../common/qos-limits.js';
import { assert } from '../common/assert.js';
import { InvalidArgumentError } from '../common/errors.js';
import { KiB } from '../common/units.js';
import type { BackendCapabilities, BlockBackend, BlockSizeLimits, Extent, WriteOptions, ZeroOptions } from './backend.js';

export { qosUnlimited, type QosLimits };

/** What a limiter counted since it was made. */
export interface QosStats {
  /**
   * Reads and writes let through, and their bytes (a request is counted when it goes, not
   * while it waits, so that the counters' rate is the rate the volume got). Other requests
   * move no data to the client and are not counted.
   */
  requests: number;
  bytes: number;
  /** Requests that had to wait for tokens, and their waits summed (of those let in so far). */
  throttledRequests: number;
  throttledMs: number;
  /** Requests waiting now. */
  waiting: number;
}

/** Time as the limiter sees it: a seam so that unit tests can drive a fake clock. */
export interface QosClock {
  /** Milliseconds since an arbitrary origin, never going back. */
  nowMs(): number;
  setTimer(callback: () => void, delayMs: number): unknown;
  clearTimer(timer: unknown): void;
}

export const monotonicClock: QosClock = {
  // performance.now(), not Date.now(): a wall clock stepped back by NTP would stall every
  // limited volume, and one stepped forward would hand out a burst.
  nowMs: () => performance.now(),
  setTimer: (callback, delayMs) => setTimeout(callback, delayMs),
  clearTimer: (timer) => clearTimeout(timer as NodeJS.Timeout),
};

/**
 * A bucket of tokens filled at `ratePerSecond` up to `capacityTokens`. It keeps no queue:
 * the limiter decides who waits. A rate of 0 means this bucket does not limit: it is always
 * ready and taking from it does nothing.
 */
export class TokenBucket {
  private ratePerSecond = 0;
  private capacityTokens = 0;
  /** May be negative: the debt of a request larger than the capacity. */
  private tokens = 0;
  private refilledAtMs: number;

  constructor(nowMs: number) {
    this.refilledAtMs = nowMs;
  }

  get active(): boolean {
    return this.ratePerSecond > 0;
  }

  get level(): number {
    return this.tokens;
  }

  get capacity(): number {
    return this.capacityTokens;
  }

  /**
   * A new rate and capacity from `nowMs` on (the caller refilled at the old rate up to now).
   * A bucket that did not limit before starts full, as a volume idle for ever would be; one
   * that did keeps its tokens, debt included, down to the new capacity.
   */
  configure(ratePerSecond: number, capacityTokens: number, nowMs: number): void {
    assert(ratePerSecond >= 0 && Number.isFinite(ratePerSecond), 'a bucket rate is a finite non-negative number');
    assert(ratePerSecond === 0 || capacityTokens > 0, 'a limiting bucket holds something');
    const wasActive = this.active;
    this.ratePerSecond = ratePerSecond;
    this.capacityTokens = ratePerSecond > 0 ? capacityTokens : 0;
    this.tokens = wasActive ? Math.min(this.tokens, this.capacityTokens) : this.capacityTokens;
    this.refilledAtMs = nowMs;
  }

  refill(nowMs: number): void {
    const elapsedMs = nowMs - this.refilledAtMs;
    this.refilledAtMs = nowMs;
    if (elapsedMs <= 0 || this.ratePerSecond === 0) return;
    this.tokens = Math.min(this.capacityTokens, this.tokens + (elapsedMs * this.ratePerSecond) / 1000);
  }

  /** Whether a request costing `cost` may go now (the debt rule: it needs min(cost, capacity)). */
  ready(cost: number): boolean {
    if (this.ratePerSecond === 0) return true;
    // The slack absorbs rounding in the refill arithmetic: a timer that fires exactly when
    // the tokens are due must find them there, not 1e-12 short and set another timer.
    return this.tokens >= Math.min(cost, this.capacityTokens) * (1 - 1e-9);
  }

  take(cost: number): void {
    if (this.ratePerSecond > 0) this.tokens -= cost;
  }

  /** How long until `ready(cost)`, at the current rate (0 if it is). */
  msUntilReady(cost: number): number {
    if (this.ratePerSecond === 0) return 0;
    const deficit = Math.min(cost, this.capacityTokens) - this.tokens;
    return deficit <= 0 ? 0 : (deficit * 1000) / this.ratePerSecond;
  }
}

interface Waiter {
  bytes: number;
  sinceMs: number;
  resolve: () => void;
}

/**
 * Checks limits from the wire; throws naming the field, before anything is changed. Only
 * what enforcing needs: the MDM applies ScaleIO's rules, and an older journal's limits
 * (a bandwidth not in whole MiB/s) are enforced as they are.
 */
export function validateQosLimits(limits: QosLimits): void {
  const problem = qosLimitsProblem(limits, 'enforceable');
  if (problem !== null) throw new InvalidArgumentError(problem.field, problem.message);
}

/** The tokens a bucket at `ratePerSecond` holds without burst: one tick's worth, at least one `unitMin`. */
function tickCapacity(ratePerSecond: number, unitMin: number): number {
  return Math.max(unitMin, (ratePerSecond * qosTickMs) / 1000);
}

/**
 * One volume's limits on one SDC: IOPS and bandwidth buckets with their burst, the FIFO of
 * requests waiting for tokens, and counters. Shared by every connection to the volume.
 */
export class QosLimiter {
  private readonly iops: TokenBucket;
  /** Caps how fast saved IOPS tokens are spent (active only with a burst). */
  private readonly iopsPeak: TokenBucket;
  private readonly bytes: TokenBucket;
  private readonly bytesPeak: TokenBucket;
  /** Any bucket limits: the one branch of the fast path. */
  private limited = false;
  private current: Readonly<QosLimits> = qosUnlimited;

  /** Waiters from `queueHead` on, oldest first; entries before it are spent. */
  private queue: Array<Waiter | undefined> = [];
  private queueHead = 0;
  private timer: unknown = null;

  private requestCount = 0;
  private byteCount = 0;
  private throttledCount = 0;
  private throttledMsSum = 0;

  constructor(
    limits: QosLimits = qosUnlimited,
    private readonly clock: QosClock = monotonicClock,
  ) {
    const nowMs = clock.nowMs();
    this.iops = new TokenBucket(nowMs);
    this.iopsPeak = new TokenBucket(nowMs);
    this.bytes = new TokenBucket(nowMs);
    this.bytesPeak = new TokenBucket(nowMs);
    this.setLimits(limits);
  }

  get limits(): Readonly<QosLimits> {
    return this.current;
  }

  /**
   * Says when a read or write of `bytes` may go: null means now (no promise made), a promise
   * means once it resolves. The promise never rejects.
   */
  admit(bytes: number): Promise<void> | null {
    if (this.limited) return this.admitLimited(bytes);
    this.requestCount += 1;
    this.byteCount += bytes;
    return null;
  }

  private admitLimited(bytes: number): Promise<void> | null {
    const nowMs = this.clock.nowMs();
    const idle = this.queueHead === this.queue.length;
    if (idle) {
      // FIFO: only when nobody waits may a request take tokens that are there.
      this.refill(nowMs);
      if (this.ready(bytes)) {
        this.take(bytes);
        this.requestCount += 1;
        this.byteCount += bytes;
        return null;
      }
    }
    this.throttledCount += 1;
    return new Promise<void>((resolve) => {
      this.queue.push({ bytes, sinceMs: nowMs, resolve });
      // A new head needs a timer; behind a head, the head's timer will come to it.
      if (idle) this.schedule();
    });
  }

  /**
   * Applies new limits now, to requests already waiting too: a raised or removed limit lets
   * them in at once as far as the new rates allow, a lowered one makes them wait longer.
   * Throws InvalidArgumentError naming the field, with nothing changed, on bad limits.
   */
  setLimits(limits: QosLimits): void {
    validateQosLimits(limits);
    const nowMs = this.clock.nowMs();
    this.refill(nowMs);
    // A burst given with 0 seconds means one second of it (the MDM's rule).
    const burstSeconds = limits.burstSeconds === 0 ? 1 : limits.burstSeconds;
    const iopsRate = limits.iopsLimit;
    const iopsBurstRate = limits.iopsBurst;
    this.iops.configure(iopsRate, iopsBurstRate > 0 ? Math.max(iopsBurstRate * burstSeconds, tickCapacity(iopsRate, 1)) : tickCapacity(iopsRate, 1), nowMs);
    this.iopsPeak.configure(iopsBurstRate, tickCapacity(iopsBurstRate, 1), nowMs);
    const bytesRate = limits.bandwidthLimitKbps * KiB;
    const bytesBurstRate = limits.bandwidthBurstKbps * KiB;
    // Bytes need no minimum: a request larger than the bucket is handled by the debt rule.
    this.bytes.configure(bytesRate, bytesBurstRate > 0 ? Math.max(bytesBurstRate * burstSeconds, tickCapacity(bytesRate, 1)) : tickCapacity(bytesRate, 1), nowMs);
    this.bytesPeak.configure(bytesBurstRate, tickCapacity(bytesBurstRate, 1), nowMs);
    this.current = Object.freeze({ ...limits });
    this.limited = this.iops.active || this.bytes.active;
    this.pump(nowMs);
  }

  /** Lets every waiter in at once and stops limiting: the volume was unmapped, or the SDC stops. */
  release(): void {
    this.setLimits(qosUnlimited);
  }

  stats(): QosStats {
    return {
      requests: this.requestCount,
      bytes: this.byteCount,
      throttledRequests: this.throttledCount,
      throttledMs: this.throttledMsSum,
      waiting: this.queue.length - this.queueHead,
    };
  }

  private refill(nowMs: number): void {
    this.iops.refill(nowMs);
    this.iopsPeak.refill(nowMs);
    this.bytes.refill(nowMs);
    this.bytesPeak.refill(nowMs);
  }

  private ready(bytes: number): boolean {
    return this.iops.ready(1) && this.iopsPeak.ready(1) && this.bytes.ready(bytes) && this.bytesPeak.ready(bytes);
  }

  private take(bytes: number): void {
    this.iops.take(1);
    this.iopsPeak.take(1);
    this.bytes.take(bytes);
    this.bytesPeak.take(bytes);
  }

  /** Lets in, oldest first, every waiter the buckets now allow, then sets the timer for the next. */
  private pump(nowMs: number): void {
    this.refill(nowMs);
    while (this.queueHead < this.queue.length) {
      const waiter = this.queue[this.queueHead] as Waiter;
      if (!this.ready(waiter.bytes)) break;
      this.take(waiter.bytes);
      this.queue[this.queueHead] = undefined;
      this.queueHead += 1;
      this.requestCount += 1;
      this.byteCount += waiter.bytes;
      this.throttledMsSum += nowMs - waiter.sinceMs;
      waiter.resolve();
    }
    if (this.queueHead === this.queue.length) {
      this.queue.length = 0;
      this.queueHead = 0;
    } else if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      // A queue that never empties (a volume at its limit for hours) drops its spent head.
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
    this.schedule();
  }

  /** One timer, for the head waiter: when its tokens are due, but no later than a tick. */
  private schedule(): void {
    if (this.timer !== null) {
      this.clock.clearTimer(this.timer);
      this.timer = null;
    }
    const head = this.queue[this.queueHead];
    if (head === undefined) return;
    const dueMs = Math.max(this.iops.msUntilReady(1), this.iopsPeak.msUntilReady(1), this.bytes.msUntilReady(head.bytes), this.bytesPeak.msUntilReady(head.bytes));
    // Whole milliseconds, at least one (Node's timers are no finer), at most a tick: a debt
    // of seconds is looked at every tick rather than left to one long timer, which costs
    // ~20 wake-ups a second and keeps a late timer (a busy event loop) from adding up.
    const delayMs = Math.min(qosTickMs, Math.max(1, Math.ceil(dueMs)));
    this.timer = this.clock.setTimer(() => {
      this.timer = null;
      this.pump(this.clock.nowMs());
    }, delayMs);
  }
}

/**
 * A backend whose reads and writes pass through a QosLimiter; every other request goes
 * straight through, uncounted (trim, zero, flush, cache and block status move no data to
 * the client). Several QosBackends may share one limiter: the SDC's connections to one volume.
 */
export class QosBackend implements BlockBackend {
  readonly sizeBytes: number;
  readonly capabilities: Readonly<BackendCapabilities>;
  readonly blockSize: Readonly<BlockSizeLimits>;
  readonly description: string;

  constructor(
    readonly next: BlockBackend,
    readonly limiter: QosLimiter,
  ) {
    this.sizeBytes = next.sizeBytes;
    this.capabilities = next.capabilities;
    this.blockSize = next.blockSize;
    this.description = next.description;
  }

  read(offsetBytes: number, target: Buffer): Promise<void> {
    const waiting = this.limiter.admit(target.length);
    if (waiting === null) return this.next.read(offsetBytes, target);
    return waiting.then(() => this.next.read(offsetBytes, target));
  }

  write(offsetBytes: number, source: Buffer, options: WriteOptions): Promise<void> {
    const waiting = this.limiter.admit(source.length);
    if (waiting === null) return this.next.write(offsetBytes, source, options);
    return waiting.then(() => this.next.write(offsetBytes, source, options));
  }

  flush(): Promise<void> {
    return this.next.flush();
  }

  trim(offsetBytes: number, lengthBytes: number, options: WriteOptions): Promise<void> {
    return this.next.trim(offsetBytes, lengthBytes, options);
  }

  zero(offsetBytes: number, lengthBytes: number, options: ZeroOptions): Promise<void> {
    return this.next.zero(offsetBytes, lengthBytes, options);
  }

  cache(offsetBytes: number, lengthBytes: number): Promise<void> {
    return this.next.cache(offsetBytes, lengthBytes);
  }

  extents(offsetBytes: number, lengthBytes: number, extentCountMax: number): Promise<Extent[]> {
    return this.next.extents(offsetBytes, lengthBytes, extentCountMax);
  }

  /** Closes the backend below; the limiter is shared and stays. */
  close(): Promise<void> {
    return this.next.close();
  }
}
