// One small seeded generator (mulberry32) for everything that must be random yet replayable:
// the placement planner's spread (deterministic by design), seeded simulations and fault
// tests (a failure replays from its printed seed), and the benchmarks' offsets.

/** Uniform uint32 values, the same sequence for the same seed. */
export function mulberry32Uint32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let value = state;
    value = Math.imul(value ^ (value >>> 15), value | 1);
    value ^= value + Math.imul(value ^ (value >>> 7), value | 61);
    return (value ^ (value >>> 14)) >>> 0;
  };
}

/** Uniform values in [0, 1), like Math.random but replayable. */
export function mulberry32(seed: number): () => number {
  const next = mulberry32Uint32(seed);
  return () => next() / 4294967296;
}
