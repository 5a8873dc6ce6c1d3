// Errors are classes with stable codes (after undici's lib/core/errors.js):
// tests and callers compare `code`, never message text.

export class MeshblockError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A user-supplied value (CLI flag, REST field, config key) is wrong. Names the field. */
export class InvalidArgumentError extends MeshblockError {
  readonly field: string;

  constructor(field: string, message: string) {
    super('MB_ERR_INVALID_ARGUMENT', `${field}: ${message}`);
    this.field = field;
  }
}

/** A value is outside its allowed range, in the shape of Node's ERR_OUT_OF_RANGE. */
export class OutOfRangeError extends MeshblockError {
  readonly field: string;

  constructor(field: string, range: string, value: unknown) {
    super('MB_ERR_OUT_OF_RANGE', `${field}: must be ${range}, got ${String(value)}`);
    this.field = field;
  }
}

/** One of our own invariants broke. Never caused by input; always a bug. */
export class AssertionError extends MeshblockError {
  constructor(message: string) {
    super('MB_ERR_ASSERTION', message);
  }
}

/**
 * A system call failed; `code` is the errno name (`EIO`, `ENOSPC`, `EOPNOTSUPP`, ...), so
 * the NBD and wire layers can map it to what their protocols can carry.
 */
export class SystemCallError extends MeshblockError {}
