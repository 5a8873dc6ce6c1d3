// One bound on the bytes a server holds for its clients across all their connections
// (`sds start --memory-budget`, docs/operations.md). Each WirePeer already bounds what one
// connection may leave with us (limits.ts, "the wire"); that is a bound per client, and an
// SDS with a hundred SDCs connected would hold a hundred times it. Peers sharing a budget
// stop reading new requests while the budget is spent, and start again as any of them
// finishes a request.
//
// A peer with nothing in flight always reads its next request, whatever the budget: every
// client makes progress (no request waits on another client's), and the budget is exceeded
// by at most one request per connection. Only client connections share it: a primary's
// forwarded writes to its mirror must never wait behind the clients' writes that wait on the
// mirror, or two SDSs would wait on each other.

import { assert } from '../common/assert.js';

export class ServingBudget {
  /** Bytes held now: request payloads and the replies they will need, of requests being served. */
  usedBytes = 0;
  /** The most held at once since start. */
  peakBytes = 0;
  /** Peers that stopped reading because the budget was spent. */
  private readonly waiting = new Set<() => void>();

  constructor(readonly limitBytes: number) {
    assert(Number.isSafeInteger(limitBytes) && limitBytes > 0, 'a memory budget is a positive byte count');
  }

  get spent(): boolean {
    return this.usedBytes >= this.limitBytes;
  }

  charge(bytes: number): void {
    this.usedBytes += bytes;
    if (this.usedBytes > this.peakBytes) this.peakBytes = this.usedBytes;
  }

  release(bytes: number): void {
    this.usedBytes -= bytes;
    assert(this.usedBytes >= 0, 'memory budget accounting went negative');
    if (this.spent || this.waiting.size === 0) return;
    const woken = [...this.waiting];
    this.waiting.clear();
    for (const wake of woken) wake();
  }

  /** Calls `wake` once, when bytes are released and the budget is no longer spent. */
  wait(wake: () => void): void {
    this.waiting.add(wake);
  }

  forget(wake: () => void): void {
    this.waiting.delete(wake);
  }
}
