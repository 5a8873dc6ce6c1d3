// Validation of REST request bodies, field by field, before anything is executed: each read
// names its field, and finish() refuses fields nobody read, so a typo ("volumeSizeInKB") is
// an error rather than a silently ignored option. ScaleIO clients send numbers as strings of
// digits ("volumeSizeInKb": "8388608") and booleans as strings in any case (Cinder's
// PowerFlex driver sends "True", os-brick "TRUE"); both are accepted.
//
// Objects inside a body (snapshotVolumes' snapshotDefs) get a reader of their own whose
// errors name the whole path: "snapshotDefs[1].volumeId: must be an id ..."

import { InvalidArgumentError } from '../common/errors.js';
import { isName, nameRule } from '../common/names.js';
import { idPattern } from '../wire/placement.js';
import { devicePathBytesMax, nameBytesMax } from '../common/limits.js';
import { volumeNamePattern, volumeNameRule } from './state-machine.js';

/** The state machine's rule for names, checked here so the error names the REST field. */

export interface IntegerRange {
  min: number;
  max: number;
}

export class BodyReader {
  private readonly seen = new Set<string>();
  private readonly fields: Record<string, unknown>;

  /**
   * `where` names the object in errors: 'body' for a request's body, 'snapshotDefs[1]' for
   * an object inside it (whose fields are then named 'snapshotDefs[1].volumeId').
   */
  constructor(
    body: unknown,
    private readonly where = 'body',
  ) {
    if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new InvalidArgumentError(where, `must be a JSON object, got ${describe(body)}`);
    this.fields = body as Record<string, unknown>;
  }

  /** The name errors give a field: its path from the body. */
  private named(field: string): string {
    return this.where === 'body' ? field : `${this.where}.${field}`;
  }

  has(field: string): boolean {
    return Object.hasOwn(this.fields, field) && this.fields[field] !== undefined;
  }

  /** True if the field is present and null (and marks it read): "none" for nullable fields. */
  isNull(field: string): boolean {
    if (Object.hasOwn(this.fields, field) && this.fields[field] === null) {
      this.seen.add(field);
      return true;
    }
    return false;
  }

  /** True if the field is present, whatever its value (and marks it read): ScaleIO's flags such as {"allSdcs": ""}. */
  present(field: string): boolean {
    this.seen.add(field);
    return Object.hasOwn(this.fields, field);
  }

  private take(field: string, required: boolean): unknown {
    this.seen.add(field);
    if (!this.has(field)) {
      if (required) throw new InvalidArgumentError(this.named(field), 'is required');
      return undefined;
    }
    return this.fields[field];
  }

  string(field: string): string;
  string(field: string, required: false): string | undefined;
  string(field: string, required = true): string | undefined {
    const value = this.take(field, required);
    if (value === undefined) return undefined;
    if (typeof value !== 'string') throw new InvalidArgumentError(this.named(field), `must be a string, got ${describe(value)}`);
    return value;
  }

  /** An object id: 16 lowercase hex digits. */
  id(field: string): string;
  id(field: string, required: false): string | undefined;
  id(field: string, required = true): string | undefined {
    const value = required ? this.string(field) : this.string(field, false);
    if (value !== undefined && !idPattern.test(value)) throw new InvalidArgumentError(this.named(field), `must be an id of 16 lowercase hex digits, got '${truncate(value)}'`);
    return value;
  }

  /** An object name, by the state machine's rule. */
  name(field: string): string;
  name(field: string, required: false): string | undefined;
  name(field: string, required = true): string | undefined {
    const value = required ? this.string(field) : this.string(field, false);
    if (value !== undefined) checkName(this.named(field), value);
    return value;
  }

  /** A volume's or snapshot's name, by ScaleIO's wider rule (base64 included). */
  volumeName(field: string): string;
  volumeName(field: string, required: false): string | undefined;
  volumeName(field: string, required = true): string | undefined {
    const value = required ? this.string(field) : this.string(field, false);
    if (value !== undefined) checkVolumeName(this.named(field), value);
    return value;
  }

  /** A whole number in range, as a JSON number or a string of digits. */
  integer(field: string, range: IntegerRange): number;
  integer(field: string, range: IntegerRange, required: false): number | undefined;
  integer(field: string, range: IntegerRange, required = true): number | undefined {
    const value = this.take(field, required);
    if (value === undefined) return undefined;
    return parseInteger(this.named(field), value, range);
  }

  boolean(field: string): boolean;
  boolean(field: string, required: false): boolean | undefined;
  boolean(field: string, required = true): boolean | undefined {
    const value = this.take(field, required);
    if (value === undefined) return undefined;
    // Any case: Cinder's PowerFlex driver sends allowMultipleMappings as "True".
    const text = typeof value === 'string' ? value.toLowerCase() : value;
    if (text === true || text === 'true') return true;
    if (text === false || text === 'false') return false;
    throw new InvalidArgumentError(this.named(field), `must be true or false, got ${describe(value)}`);
  }

  oneOf<T extends string>(field: string, values: readonly T[]): T;
  oneOf<T extends string>(field: string, values: readonly T[], required: false): T | undefined;
  oneOf<T extends string>(field: string, values: readonly T[], required = true): T | undefined {
    const value = this.take(field, required);
    if (value === undefined) return undefined;
    if (typeof value !== 'string' || !(values as readonly string[]).includes(value)) {
      throw new InvalidArgumentError(this.named(field), `must be ${values.map((entry) => `'${entry}'`).join(' or ')}, got ${describe(value)}`);
    }
    return value as T;
  }

  /**
   * A JSON array of objects, from `min` to `max` of them: one reader per object, named
   * FIELD[index] in errors. Each must be finish()ed by the caller like the body's reader.
   */
  objects(field: string, range: IntegerRange): BodyReader[] {
    const value = this.take(field, true);
    if (!Array.isArray(value)) throw new InvalidArgumentError(this.named(field), `must be a JSON array of objects, got ${describe(value)}`);
    if (value.length < range.min || value.length > range.max) {
      throw new InvalidArgumentError(this.named(field), `must hold ${range.min === range.max ? range.min : `${range.min} to ${range.max}`} entries, got ${value.length}`);
    }
    return value.map((entry: unknown, index) => new BodyReader(entry, `${this.named(field)}[${index}]`));
  }

  /** An absolute path on an SDS's host. */
  path(field: string): string {
    const value = this.string(field);
    if (!value.startsWith('/') || value.includes('\0') || Buffer.byteLength(value) > devicePathBytesMax) {
      throw new InvalidArgumentError(this.named(field), `must be an absolute path of at most ${devicePathBytesMax} bytes, got '${truncate(value)}'`);
    }
    return value;
  }

  /** Refuses fields no read asked for. Call after all reads, before acting. */
  finish(): void {
    const unknown = Object.keys(this.fields).filter((field) => !this.seen.has(field));
    if (unknown.length > 0) {
      const known = [...this.seen].sort();
      throw new InvalidArgumentError(this.named(unknown[0] as string), `unknown field${unknown.length > 1 ? ` (also: ${unknown.slice(1).join(', ')})` : ''}; this request takes ${known.length === 0 ? 'no fields' : known.join(', ')}`);
    }
  }
}

export function parseInteger(field: string, value: unknown, range: IntegerRange): number {
  let number: number;
  if (typeof value === 'number') {
    number = value;
  } else if (typeof value === 'string' && /^\d{1,16}$/.test(value)) {
    number = Number(value);
  } else {
    throw new InvalidArgumentError(field, `must be a whole number (or a string of digits), got ${describe(value)}`);
  }
  if (!Number.isSafeInteger(number) || number < range.min || number > range.max) {
    throw new InvalidArgumentError(field, `must be a whole number from ${range.min} to ${range.max}, got ${describe(value)}`);
  }
  return number;
}

export function checkName(field: string, name: string): void {
  if (!isName(name)) {
    throw new InvalidArgumentError(field, `must be ${nameRule}, got '${truncate(name)}'`);
  }
}

export function checkVolumeName(field: string, name: string): void {
  if (name.length === 0 || Buffer.byteLength(name) > nameBytesMax || !volumeNamePattern.test(name)) {
    throw new InvalidArgumentError(field, `must be ${volumeNameRule}, got '${truncate(name)}'`);
  }
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'string') return `'${truncate(value)}'`;
  return `${typeof value} ${String(value)}`;
}

function truncate(text: string): string {
  const shown = text.length > 64 ? `${text.slice(0, 64)}...` : text;
  return JSON.stringify(shown).slice(1, -1);
}
