import { AssertionError } from './errors.js';

/** Asserts an invariant of our own code. Input is validated at the edge, never with this. */
export function assert(condition: unknown, message = 'assertion failed'): asserts condition {
  if (!condition) throw new AssertionError(message);
}

export function assertNever(value: never, what: string): never {
  throw new AssertionError(`unexpected ${what}: ${String(value)}`);
}
