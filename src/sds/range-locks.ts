// Byte-range locks per chunk. Two copies stay identical only if overlapping writes are
// applied in the same order on both, and the secondary runs what it receives concurrently
// (the thread pool reorders freely), so the primary lets one write to a range be in flight
// at a time: a write waits for every overlapping write, trim or read before it; reads wait
// only for writes. Non-overlapping IO to a chunk runs in parallel.
//
// The waiting is bounded by the requests in flight, which the wire peer bounds.

interface Held {
  startBytes: number;
  endBytes: number;
  exclusive: boolean;
  released: Promise<void>;
}

export class RangeLocks {
  private readonly held = new Map<string, Held[]>();

  /** Resolves with the release function once no conflicting holder remains. */
  async acquire(key: string, startBytes: number, endBytes: number, exclusive: boolean): Promise<() => void> {
    for (;;) {
      const holders = this.held.get(key);
      const conflicts = holders?.filter((held) => held.startBytes < endBytes && startBytes < held.endBytes && (exclusive || held.exclusive)) ?? [];
      if (conflicts.length === 0) break;
      await Promise.all(conflicts.map((held) => held.released));
    }
    let release!: () => void;
    const entry: Held = { startBytes, endBytes, exclusive, released: new Promise((resolve) => (release = resolve)) };
    const holders = this.held.get(key);
    if (holders === undefined) this.held.set(key, [entry]);
    else holders.push(entry);
    return () => {
      const list = this.held.get(key);
      if (list !== undefined) {
        const at = list.indexOf(entry);
        if (at !== -1) list.splice(at, 1);
        if (list.length === 0) this.held.delete(key);
      }
      release();
    };
  }

  get heldCount(): number {
    let count = 0;
    for (const list of this.held.values()) count += list.length;
    return count;
  }
}
