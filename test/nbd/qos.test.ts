// Proves the QoS limiter of src/nbd/qos.ts keeps its promises (docs/qos.md), on a fake clock
// so that seconds of simulated IO take milliseconds and every number is exact:
// - a limited volume under a client that always has `depth` requests outstanding gets its
//   IOPS or bandwidth within ±1% in every simulated one-second window, evenly (every 100 ms
//   window too), with no timer set further off than the 50 ms tick;
// - the debt rule: a request larger than the bucket goes at once and those after it wait its
//   debt out; a stream of such requests still gets the exact long-run rate;
// - waiters are let in in arrival order (FIFO), even when a later one would fit;
// - a burst is spent at the burst rate after idling, then the limit holds;
// - live changes: raise, lower, remove (waiters released at once), release();
// - bad limits are refused naming the field, and change nothing;
// - without limits, admit() reads no clock, sets no timer and makes no promise, and the
//   QosBackend hands back the next backend's own promise; trim, zero, flush, cache and block
//   status pass through uncounted.

import t, { type Test } from 'tap';
import { QosBackend, QosLimiter, qosUnlimited, type QosClock, type QosLimits } from '../../src/nbd/qos.js';
import type { BlockBackend, Extent } from '../../src/nbd/backend.js';
import { InvalidArgumentError } from '../../src/common/errors.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** A clock that moves only when told, firing due timers in time order. */
class FakeClock implements QosClock {
  now = 0;
  reads = 0;
  readonly delays: number[] = [];
  private timers = new Map<number, { atMs: number; callback: () => void }>();
  private nextId = 1;

  nowMs(): number {
    this.reads += 1;
    return this.now;
  }

  setTimer(callback: () => void, delayMs: number): unknown {
    const id = this.nextId++;
    this.delays.push(delayMs);
    this.timers.set(id, { atMs: this.now + delayMs, callback });
    return id;
  }

  clearTimer(timer: unknown): void {
    this.timers.delete(timer as number);
  }

  get pendingTimers(): number {
    return this.timers.size;
  }

  /** Moves to `targetMs`, firing every timer due on the way; `afterFire` runs after each. */
  advanceTo(targetMs: number, afterFire: () => void = () => undefined): void {
    for (;;) {
      let next: [number, { atMs: number; callback: () => void }] | undefined;
      for (const entry of this.timers) if (entry[1].atMs <= targetMs && (next === undefined || entry[1].atMs < next[1].atMs)) next = entry;
      if (next === undefined) break;
      this.timers.delete(next[0]);
      this.now = next[1].atMs;
      next[1].callback();
      afterFire();
    }
    this.now = targetMs;
  }
}

const limitsOf = (partial: Partial<QosLimits>): QosLimits => ({ ...qosUnlimited, ...partial });

/** Requests let in so far (those waiting are not counted yet). */
const admitted = (limiter: QosLimiter): number => limiter.stats().requests;

/** Keeps `depth` requests of `bytes` outstanding, as a client at queue depth `depth` whose IO completes at once. */
function topUp(limiter: QosLimiter, depth: number, bytes: number): void {
  while (limiter.stats().waiting < depth) {
    const waiting = limiter.admit(bytes);
    if (waiting !== null) void waiting.then(() => undefined);
  }
}

/** Runs a depth-`depth` client for `windowMs` × `windows` and returns requests let in per window. */
function runWindows(clock: FakeClock, limiter: QosLimiter, options: { depth: number; bytes: number; windowMs: number; windows: number }): number[] {
  const counts: number[] = [];
  topUp(limiter, options.depth, options.bytes);
  for (let window = 0; window < options.windows; window += 1) {
    const before = admitted(limiter);
    clock.advanceTo(clock.now + options.windowMs, () => topUp(limiter, options.depth, options.bytes));
    counts.push(admitted(limiter) - before);
  }
  return counts;
}

function within(t: Test, value: number, expected: number, fraction: number, what: string): void {
  t.ok(Math.abs(value - expected) <= expected * fraction, `${what}: ${value} within ±${fraction * 100}% of ${expected}`);
}

/** Lets promise continuations run. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

t.test('2,000 IOPS at depth 64: every second within ±1%, every 100 ms too, timers at most 50 ms', async (t) => {
  const clock = new FakeClock();
  const limiter = new QosLimiter(limitsOf({ iopsLimit: 2000 }), clock);
  const perSecond = runWindows(clock, limiter, { depth: 64, bytes: 4 * KiB, windowMs: 1000, windows: 10 });
  // (The bucket it started with, one tick's worth, went before the first window opened.)
  for (const [index, count] of perSecond.entries()) within(t, count, 2000, 0.01, `second ${index + 1}`);
  const perTenth = runWindows(clock, limiter, { depth: 64, bytes: 4 * KiB, windowMs: 100, windows: 20 });
  t.ok(perTenth.every((count) => Math.abs(count - 200) <= 4), `every 100 ms window 200 ± 2%: ${perTenth.join(' ')}`);
  t.ok(clock.delays.every((delayMs) => delayMs >= 1 && delayMs <= 50), 'no timer is set further off than the tick');
  t.equal(limiter.stats().waiting, 64, 'the client still has its 64 waiting');
  t.ok(limiter.stats().throttledRequests > 20_000, 'nearly every request was throttled');
});

t.test('10 MiB/s with 64 KiB requests: every second within ±1%; a tiny IOPS limit holds as well', async (t) => {
  const clock = new FakeClock();
  const limiter = new QosLimiter(limitsOf({ bandwidthLimitKbps: 10 * 1024 }), clock);
  const perSecond = runWindows(clock, limiter, { depth: 64, bytes: 64 * KiB, windowMs: 1000, windows: 10 });
  for (const [index, count] of perSecond.entries()) if (index > 0) within(t, count * 64 * KiB, 10 * MiB, 0.01, `bytes in second ${index + 1}`);

  // 11 IOPS (ScaleIO's smallest): the bucket holds one request (0.55 rounded up to the minimum).
  const slowClock = new FakeClock();
  const slow = new QosLimiter(limitsOf({ iopsLimit: 11 }), slowClock);
  const slowCounts = runWindows(slowClock, slow, { depth: 8, bytes: 4 * KiB, windowMs: 10_000, windows: 3 });
  for (const [index, count] of slowCounts.entries()) if (index > 0) t.ok(Math.abs(count - 110) <= 1, `11 IOPS: ${count} in 10 s window ${index + 1}`);

  // Both limits: the tighter one rules (100 IOPS of 1 MiB = 100 MiB/s against 20 MiB/s).
  const bothClock = new FakeClock();
  const both = new QosLimiter(limitsOf({ iopsLimit: 100, bandwidthLimitKbps: 20 * 1024 }), bothClock);
  const bothCounts = runWindows(bothClock, both, { depth: 16, bytes: MiB, windowMs: 1000, windows: 4 });
  for (const [index, count] of bothCounts.entries()) if (index > 0) t.ok(Math.abs(count - 20) <= 1, `bandwidth rules: ${count} MiB in second ${index + 1}`);
});

t.test('the debt rule: a request larger than the bucket goes at once, the next waits out its debt, the long-run rate is exact', async (t) => {
  const clock = new FakeClock();
  const limiter = new QosLimiter(limitsOf({ bandwidthLimitKbps: 1024 }), clock); // 1 MiB/s; the bucket holds 51.2 KiB
  t.equal(limiter.admit(4 * MiB), null, 'a 4 MiB request against a 1 MiB/s limit is not cut or held: it goes now');
  let nextAtMs = -1;
  const next = limiter.admit(4 * KiB);
  t.not(next, null, 'the request after it waits');
  const noteAdmission = (): void => {
    if (nextAtMs < 0 && limiter.stats().waiting === 0) nextAtMs = clock.now;
  };
  const debtMs = ((4 * MiB - 51.2 * KiB + 4 * KiB) / MiB) * 1000; // back to 4 KiB of tokens
  clock.advanceTo(debtMs - 2, noteAdmission);
  t.equal(nextAtMs, -1, 'not before the debt is paid');
  clock.advanceTo(debtMs + 2, noteAdmission);
  t.ok(nextAtMs >= debtMs && nextAtMs <= debtMs + 1, `let in when it is (${nextAtMs.toFixed(1)} ms, due ${debtMs.toFixed(1)})`);
  await t.resolves(next as Promise<void>, 'its promise resolves');

  // A stream of 8 MiB requests, each 8 s of the limit: over 80 s, 80 MiB ± one request.
  const streamClock = new FakeClock();
  const stream = new QosLimiter(limitsOf({ bandwidthLimitKbps: 1024 }), streamClock);
  const counts = runWindows(streamClock, stream, { depth: 4, bytes: 8 * MiB, windowMs: 80_000, windows: 2 });
  t.ok(Math.abs((counts[1] as number) - 10) <= 1, `80 s at 1 MiB/s let ${counts[1]} requests of 8 MiB through (10 expected)`);
  t.ok(streamClock.delays.every((delayMs) => delayMs <= 50), 'a debt of seconds is re-checked every tick, not left to one long timer');
});

t.test('waiters are let in in arrival order, even when a later one would fit', async (t) => {
  const clock = new FakeClock();
  const limiter = new QosLimiter(limitsOf({ bandwidthLimitKbps: 1024 }), clock);
  t.equal(limiter.admit(51 * KiB), null, 'the first takes the bucket');
  const order: string[] = [];
  void limiter.admit(MiB)?.then(() => order.push('big'));
  void limiter.admit(KiB)?.then(() => order.push('small 1'));
  void limiter.admit(KiB)?.then(() => order.push('small 2'));
  clock.advanceTo(40);
  await settle();
  t.same(order, [], 'after 40 ms there are 40 KiB of tokens: enough for a small one, but the big one is first');
  t.same([limiter.stats().requests, limiter.stats().bytes, limiter.stats().waiting], [1, 51 * KiB, 3], 'waiting requests are not counted until they go');
  clock.advanceTo(60);
  await settle();
  t.same(order, ['big'], 'at 50 ms the bucket is full again: the big one goes (into debt), the small ones wait behind it');
  clock.advanceTo(2000);
  await settle();
  t.same(order, ['big', 'small 1', 'small 2'], 'then the small ones, in order');
  t.same([limiter.stats().requests, limiter.stats().bytes, limiter.stats().waiting], [4, 51 * KiB + MiB + 2 * KiB, 0], 'then they are');
  t.equal(limiter.stats().throttledRequests, 3, 'three were throttled');
  t.ok(limiter.stats().throttledMs > 1000, `and their waits are summed (${limiter.stats().throttledMs.toFixed(0)} ms)`);
});

t.test('burst: after idling, requests go at the burst rate until the saving is spent, then the limit holds', async (t) => {
  const clock = new FakeClock();
  // 100 IOPS, bursting at 1,000 for up to 2 s: 2,000 saved, spent at 900/s net, ~2.2 s.
  const limiter = new QosLimiter(limitsOf({ iopsLimit: 100, iopsBurst: 1000, burstSeconds: 2 }), clock);
  const counts = runWindows(clock, limiter, { depth: 64, bytes: 4 * KiB, windowMs: 1000, windows: 8 });
  within(t, counts[0] as number, 1000, 0.01, 'second 1 at the burst rate');
  within(t, counts[1] as number, 1000, 0.01, 'second 2 at the burst rate');
  for (let index = 3; index < 8; index += 1) within(t, counts[index] as number, 100, 0.01, `second ${index + 1} at the limit`);

  // The client stops: its last 64 go within a second, then 30 s idle save the burst again.
  clock.advanceTo(clock.now + 30_000);
  t.equal(limiter.stats().waiting, 0, 'the client’s last requests went');
  const again = runWindows(clock, limiter, { depth: 64, bytes: 4 * KiB, windowMs: 1000, windows: 4 });
  t.ok((again[0] as number) > 900, `after idling the burst is there again (${again[0]} in the first second)`);
  within(t, again[3] as number, 100, 0.01, 'and spent within ~2 s');

  // A bandwidth burst given with 0 seconds means 1 s.
  const bandwidthClock = new FakeClock();
  const bandwidth = new QosLimiter(limitsOf({ bandwidthLimitKbps: 1024, bandwidthBurstKbps: 4096, burstSeconds: 0 }), bandwidthClock);
  const bandwidthCounts = runWindows(bandwidthClock, bandwidth, { depth: 16, bytes: 64 * KiB, windowMs: 1000, windows: 4 });
  t.ok((bandwidthCounts[0] as number) * 64 * KiB >= 4 * MiB, `first second at 4 MiB/s from 4 MiB saved (${bandwidthCounts[0]} × 64 KiB)`);
  within(t, (bandwidthCounts[3] as number) * 64 * KiB, MiB, 0.01, 'then 1 MiB/s');
});

t.test('live changes: raise, lower, remove (waiters released at once), release()', async (t) => {
  const clock = new FakeClock();
  const limiter = new QosLimiter(limitsOf({ iopsLimit: 200 }), clock);
  const run = (seconds: number): number[] => runWindows(clock, limiter, { depth: 64, bytes: 4 * KiB, windowMs: 1000, windows: seconds });
  within(t, run(2)[1] as number, 200, 0.01, 'at 200 IOPS');
  limiter.setLimits(limitsOf({ iopsLimit: 1000 }));
  within(t, run(2)[0] as number, 1000, 0.02, 'raised to 1000: the very next second');
  limiter.setLimits(limitsOf({ iopsLimit: 100 }));
  within(t, run(2)[0] as number, 100, 0.02, 'lowered to 100: the very next second (waiters re-planned)');
  t.equal(limiter.stats().waiting, 64, '64 waiting');
  limiter.setLimits(limitsOf({ iopsLimit: 0 }));
  t.equal(limiter.stats().waiting, 0, 'removing the limit lets every waiter in at once (synchronously)');
  t.equal(clock.pendingTimers, 0, 'and leaves no timer');
  t.equal(limiter.admit(4 * KiB), null, 'new requests go straight through');

  // Removing one limit of two: the other still holds.
  limiter.setLimits(limitsOf({ iopsLimit: 100, bandwidthLimitKbps: 1024 }));
  run(1);
  limiter.setLimits(limitsOf({ bandwidthLimitKbps: 1024 }));
  const bandwidthOnly = run(3);
  within(t, (bandwidthOnly[2] as number) * 4 * KiB, MiB, 0.02, 'with the IOPS limit removed the bandwidth limit (256 × 4 KiB) holds');

  // release(): what an unmap does.
  t.ok(limiter.stats().waiting > 0, 'requests wait');
  limiter.release();
  t.equal(limiter.stats().waiting, 0, 'release() lets them all in');
  t.same(limiter.limits, qosUnlimited, 'and the limiter no longer limits');
  t.equal(clock.pendingTimers, 0, 'no timer left to keep a process alive');
});

t.test('bad limits are refused naming the field, and change nothing', async (t) => {
  const clock = new FakeClock();
  const good = limitsOf({ iopsLimit: 100, bandwidthLimitKbps: 2048 });
  const limiter = new QosLimiter(good, clock);
  const cases: Array<[Partial<QosLimits>, string]> = [
    [{ iopsLimit: -1 }, 'iopsLimit'],
    [{ bandwidthLimitKbps: Number.NaN }, 'bandwidthLimitKbps'],
    [{ iopsLimit: '5' as unknown as number }, 'iopsLimit'],
    [{ burstSeconds: 1.5 }, 'burstSeconds'],
    [{ burstSeconds: 3601 }, 'burstSeconds'],
    [{ iopsBurst: 50 }, 'iopsBurst'],
    [{ iopsLimit: 0, iopsBurst: 500 }, 'iopsBurst'],
    [{ bandwidthBurstKbps: 1024 }, 'bandwidthBurstKbps'],
    [{ bandwidthLimitKbps: 0, bandwidthBurstKbps: 4096 }, 'bandwidthBurstKbps'],
  ];
  for (const [change, field] of cases) {
    try {
      limiter.setLimits({ ...good, ...change });
      t.fail(`${JSON.stringify(change)} was taken`);
    } catch (err) {
      t.ok(err instanceof InvalidArgumentError && err.code === 'MB_ERR_INVALID_ARGUMENT' && err.field === field, `${JSON.stringify(change)} refused naming ${field}`);
    }
  }
  t.same(limiter.limits, good, 'the limits are those before');
  t.throws(() => new QosLimiter(limitsOf({ iopsLimit: -5 }), clock), { code: 'MB_ERR_INVALID_ARGUMENT' }, 'a new limiter refuses them too');
});

/** A backend that answers at once and records what reached it. */
function recordingBackend(): BlockBackend & { calls: string[]; readPromise: Promise<void> } {
  const readPromise = Promise.resolve();
  const calls: string[] = [];
  return {
    calls,
    readPromise,
    sizeBytes: 64 * MiB,
    capabilities: { readOnly: false, flush: true, fua: true, trim: true, zero: true, fastZero: false, cache: true, extents: true, multiConn: true, rotational: false },
    blockSize: { minimumBytes: 1, preferredBytes: 4096, maximumBytes: 32 * MiB },
    description: 'recording',
    read: () => (calls.push('read'), readPromise),
    write: () => (calls.push('write'), Promise.resolve()),
    flush: () => (calls.push('flush'), Promise.resolve()),
    trim: () => (calls.push('trim'), Promise.resolve()),
    zero: () => (calls.push('zero'), Promise.resolve()),
    cache: () => (calls.push('cache'), Promise.resolve()),
    extents: (): Promise<Extent[]> => (calls.push('extents'), Promise.resolve([{ lengthBytes: 4096, hole: false, zero: false }])),
    close: () => (calls.push('close'), Promise.resolve()),
  };
}

t.test('without limits: no clock, no timer, no promise; the backend below answers directly', async (t) => {
  const clock = new FakeClock();
  const limiter = new QosLimiter(qosUnlimited, clock);
  const readsAtStart = clock.reads;
  for (let index = 0; index < 1000; index += 1) if (limiter.admit(4096) !== null) t.fail('a promise was made');
  t.equal(clock.reads, readsAtStart, 'admit() never read the clock');
  t.equal(clock.delays.length, 0, 'nor set a timer');
  t.same(limiter.stats(), { requests: 1000, bytes: 1000 * 4096, throttledRequests: 0, throttledMs: 0, waiting: 0 }, 'but counted every request and byte');

  const inner = recordingBackend();
  const backend = new QosBackend(inner, limiter);
  t.equal(backend.read(0, Buffer.alloc(4096)), inner.readPromise, "a read returns the backend's own promise: nothing in between");
  t.equal(backend.sizeBytes, inner.sizeBytes, 'the size,');
  t.equal(backend.capabilities, inner.capabilities, 'capabilities and block size are those below');
  await backend.write(0, Buffer.alloc(8192), { fua: false });
  await backend.flush();
  await backend.trim(0, MiB, { fua: false });
  await backend.zero(0, MiB, { fua: false, mayTrim: true, fastOnly: false });
  await backend.cache(0, MiB);
  t.same(await backend.extents(0, 4096, 1), [{ lengthBytes: 4096, hole: false, zero: false }], 'block status passes through');
  t.same(inner.calls, ['read', 'write', 'flush', 'trim', 'zero', 'cache', 'extents'], 'every request reached the backend');
  t.same([limiter.stats().requests, limiter.stats().bytes], [1002, 1000 * 4096 + 4096 + 8192], 'only the read and the write were counted');
  await backend.close();
  t.equal(inner.calls.at(-1), 'close', 'close closes the backend below');
});

t.test('a limited QosBackend holds reads and writes, not trims or flushes; two backends share one limiter', async (t) => {
  const clock = new FakeClock();
  const limiter = new QosLimiter(limitsOf({ iopsLimit: 20 }), clock); // the bucket holds one request
  const inner = recordingBackend();
  const first = new QosBackend(inner, limiter);
  const second = new QosBackend(inner, limiter);
  await first.read(0, Buffer.alloc(512)); // takes the bucket
  const held = second.write(0, Buffer.alloc(512), { fua: false });
  await first.trim(0, MiB, { fua: false });
  await second.flush();
  t.same(inner.calls, ['read', 'trim', 'flush'], 'the write on the other connection waits for the shared bucket; trim and flush do not');
  clock.advanceTo(50);
  await held;
  t.same(inner.calls, ['read', 'trim', 'flush', 'write'], 'and goes 50 ms later (20 IOPS)');
});
