// The control ops' payloads are JSON (docs/wire-protocol.md), each checked field by field by
// its op's parser. These are the two steps every such parser starts with, so that a payload
// that is not JSON, or not an object, is refused alike everywhere, naming the op's field.

import { InvalidArgumentError } from '../common/errors.js';

/** The payload's JSON value, or InvalidArgumentError naming `field`. */
export function parseJsonPayload(payload: Buffer, field: string): unknown {
  try {
    return JSON.parse(payload.toString('utf8')) as unknown;
  } catch {
    throw new InvalidArgumentError(field, 'is not JSON');
  }
}

/** The payload's JSON object, its fields not checked yet (the caller checks each one). */
export function parseJsonObject<T extends object>(payload: Buffer, field: string): Partial<T> {
  const value = parseJsonPayload(payload, field);
  if (value === null || typeof value !== 'object') throw new InvalidArgumentError(field, 'must be an object');
  return value as Partial<T>;
}
