// Reading a test's knobs from the environment (seed counts, durations), checked.

import { OutOfRangeError } from '../../src/common/errors.js';

/** The integer in environment variable `name`, or `fallback` when unset; refused when not an integer in [min, max]. */
export function envInteger(name: string, fallback: number, min: number, max: number): number {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min || value > max) throw new OutOfRangeError(name, `an integer from ${min} to ${max}`, text);
  return value;
}
