// Errors of the REST API. Every error reply has one shape (ScaleIO's, plus our string code):
//
//   { "message": "volumeSizeInKb: must be ...",   one line, names the field when a field is wrong
//     "httpStatusCode": 400,                      the HTTP status again, as ScaleIO sends it
//     "errorCode": 1001,                          a number, ScaleIO's where it has one (below)
//     "code": "MB_ERR_INVALID_ARGUMENT" }         stable string, the MeshblockError code
//
// errorCode is what ScaleIO clients compare, so where ScaleIO has a number for the situation
// its clients test, that number is sent: os-brick ignores 81 (already mapped) on map and 84
// (not mapped) on unmap; Cinder's PowerFlex driver ignores 79 (volume not found) on delete;
// siolib knows 3, 99, 104, 126, 206 too. A ScaleIO number names a situation, not one of our
// codes: "not found" is 79 for a volume, 126 for a device, 3 for anything else, and "not
// mapped" (84) is one MB_ERR_NOT_FOUND among others; the REST layer, which knows which
// object was missing, says so by giving the error its number (RestError's errorCode, or
// withErrorCode()). Situations ScaleIO has no number for get meshblock's own, from 1000 up
// so that they never read as one of ScaleIO's; they never change meaning, and new codes get
// new numbers. 0 means a code this table does not know (an error a newer core raised):
// clients should then read `code` — meshblock's own clients always do.
//
// The HTTP status is meshblock's (400 bad input, 404 not found, 409 conflict, 503 no Master):
// ScaleIO answers most refusals with 400 or 500, and its clients look only at "200 or not"
// (and 401/403, which make them log in again: never sent for anything but a bad token).

import { MeshblockError, type ErrorCode, type MeshblockCode } from '../common/errors.js';
import { MdmError } from './state-machine.js';

/**
 * errorCode of each stable error code; ScaleIO clients look at the number, ours at `code`.
 * Looked up by any string (a code a newer core raised is 0); `satisfies` keeps every key a
 * code of the list in src/common/errors.ts.
 */
export const restErrorCodes: Readonly<Record<string, number>> = {
  // Refusals of the state machine and the controller (MdmError codes).
  MB_ERR_INVALID_ARGUMENT: 1001,
  // ScaleIO's "resource not found"; the REST layer gives 79 (volume) or 126 (device) instead.
  MB_ERR_NOT_FOUND: 3,
  MB_ERR_NAME_TAKEN: 1003,
  MB_ERR_NOT_EMPTY: 1004,
  MB_ERR_SDS_ASSIGNED: 1005,
  MB_ERR_SDS_IN_USE: 1006,
  // ScaleIO's DEVICE_ALREADY_EXISTS.
  MB_ERR_DEVICE_EXISTS: 206,
  MB_ERR_DEVICE_IN_USE: 1008,
  MB_ERR_POOL_IN_USE: 1009,
  MB_ERR_POOL_EMPTY: 1010,
  MB_ERR_SDC_MAPPED: 1011,
  // ScaleIO's VOLUME_MAPPED: a mapped volume cannot be removed.
  MB_ERR_VOLUME_MAPPED: 104,
  // ScaleIO's VOLUME_ALREADY_MAPPED (os-brick's "already mapped is fine").
  MB_ERR_ALREADY_MAPPED: 81,
  MB_ERR_MULTIPLE_MAPPINGS: 1014,
  MB_ERR_INSUFFICIENT_CAPACITY: 1015,
  MB_ERR_PLACEMENT: 1016,
  MB_ERR_AMBIGUOUS: 1017,
  MB_ERR_DEVICE_FORMATTED: 1018,
  MB_ERR_OUT_OF_RANGE: 1019,
  // The MDM cluster.
  MB_ERR_MDM_NOT_MASTER: 1020,
  MB_ERR_NO_QUORUM: 1021,
  MB_ERR_MDM_CLUSTER_CHANGE: 1022,
  // Snapshots (and the open-volume refusal they share with unmapping).
  MB_ERR_VOLUME_OPEN: 1023,
  MB_ERR_SNAPSHOT_LIMIT: 1024,
  MB_ERR_VTREE_MISMATCH: 1025,
  MB_ERR_SNAPSHOT_BARRIER: 1026,
  MB_ERR_VOLUME_READ_ONLY: 1027,
  // Host labels (SDS shards).
  MB_ERR_HOST_FAULT_SET: 1028,
  // The HTTP layer's own.
  MB_ERR_UNAUTHORIZED: 1101,
  MB_ERR_NO_ROUTE: 1102,
  MB_ERR_METHOD_NOT_ALLOWED: 1103,
  MB_ERR_BODY_TOO_LARGE: 1104,
  MB_ERR_MALFORMED_JSON: 1105,
  MB_ERR_TOO_MANY_LOGINS: 1106,
  MB_ERR_SHUTTING_DOWN: 1107,
  MB_ERR_BODY_INCOMPLETE: 1108,
  MB_ERR_INTERNAL: 1199,
} satisfies Partial<Record<ErrorCode, number>>;

/** ScaleIO's errorCode numbers for the situations its clients test (see the header). */
export const scaleIoErrorCodes = {
  resourceNotFound: 3,
  volumeNotFound: 79,
  volumeAlreadyMapped: 81,
  volumeNotMapped: 84,
  volumeNameTaken: 99,
  volumeMapped: 104,
  deviceNotFound: 126,
  /** In `details[0].rc` of a refused snapshotVolumes: Cinder's "snapshot limit reached". */
  tooManySnapshots: 182,
  deviceExists: 206,
} as const;

export interface RestErrorBody {
  message: string;
  httpStatusCode: number;
  errorCode: number;
  code: MeshblockCode;
  /** ScaleIO's per-object return codes; only for a snapshot limit (Cinder reads details[0].rc). */
  details?: Array<{ rc: number }>;
}

/** An error the HTTP layer raises itself (auth, routing, framing). */
export class RestError extends MeshblockError {
  constructor(
    code: MeshblockCode,
    message: string,
    readonly httpStatus: number,
    /** Extra response headers, e.g. Allow on a 405. */
    readonly headers: Readonly<Record<string, string>> = {},
    /** ScaleIO's errorCode for this situation, when it is not the code's (79 for a missing volume). */
    readonly errorCode?: number,
  ) {
    super(code, message);
  }
}

/**
 * The same refusal, with ScaleIO's errorCode for the situation (code, message and status
 * kept): a MB_ERR_NOT_FOUND about a volume answers 79. Anything but a MeshblockError with
 * an HTTP status passes through.
 */
export function withErrorCode(err: unknown, errorCode: number): unknown {
  if (!(err instanceof RestError || err instanceof MdmError)) return err;
  return new RestError(err.code, err.message, err.httpStatus, err instanceof RestError ? err.headers : {}, errorCode);
}

/** A refusal about a missing object of a REST type: ScaleIO's number for that type. */
export function notFoundErrorCode(type: string): number {
  return type === 'Volume' ? scaleIoErrorCodes.volumeNotFound : type === 'Device' ? scaleIoErrorCodes.deviceNotFound : scaleIoErrorCodes.resourceNotFound;
}

export function restErrorCode(code: string): number {
  return restErrorCodes[code] ?? 0;
}

/** The HTTP status for any error: ours carry one; input errors are 400; the rest are ours, 500. */
export function httpStatusOf(err: unknown): number {
  if (err instanceof RestError || err instanceof MdmError) return err.httpStatus;
  if (err instanceof MeshblockError && (err.code === 'MB_ERR_INVALID_ARGUMENT' || err.code === 'MB_ERR_OUT_OF_RANGE')) return 400;
  // No Master (or not this one): clients try again, or another MDM.
  if (err instanceof MeshblockError && (err.code === 'MB_ERR_MDM_NOT_MASTER' || err.code === 'MB_ERR_NO_QUORUM')) return 503;
  if (err instanceof MeshblockError && err.code === 'MB_ERR_MDM_CLUSTER_CHANGE') return 409;
  return 500;
}

export function errorBody(err: unknown): RestErrorBody {
  const httpStatusCode = httpStatusOf(err);
  const code = err instanceof MeshblockError ? err.code : 'MB_ERR_INTERNAL';
  const text = err instanceof Error ? err.message : String(err);
  const errorCode = err instanceof RestError && err.errorCode !== undefined ? err.errorCode : restErrorCode(code);
  const body: RestErrorBody = { message: text.replace(/\s*\n\s*/g, ' ').trim(), httpStatusCode, errorCode, code };
  if (code === 'MB_ERR_SNAPSHOT_LIMIT') body.details = [{ rc: scaleIoErrorCodes.tooManySnapshots }];
  return body;
}
