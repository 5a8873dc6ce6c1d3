// Errors of the REST API. Every error reply has one shape (ScaleIO's, plus our string code):
//
//   { "message": "volumeSizeInKb: must be ...",   one line, names the field when a field is wrong
//     "httpStatusCode": 400,                      the HTTP status again, as ScaleIO sends it
//     "errorCode": 1,                             stable number, from restErrorCodes below
//     "code": "MB_ERR_INVALID_ARGUMENT" }         stable string, the MeshblockError code
//
// errorCode numbers never change meaning; new codes get new numbers. 0 means a code this
// table does not know (an error a newer core raised): clients should then read `code`.

import { MeshblockError, type ErrorCode, type MeshblockCode } from '../common/errors.js';
import { MdmError } from './state-machine.js';

/**
 * errorCode of each stable error code; ScaleIO clients look at the number, ours at `code`.
 * Looked up by any string (a code a newer core raised is 0); `satisfies` keeps every key a
 * code of the list in src/common/errors.ts.
 */
export const restErrorCodes: Readonly<Record<string, number>> = {
  // Refusals of the state machine and the controller (MdmError codes).
  MB_ERR_INVALID_ARGUMENT: 1,
  MB_ERR_NOT_FOUND: 2,
  MB_ERR_NAME_TAKEN: 3,
  MB_ERR_NOT_EMPTY: 4,
  MB_ERR_SDS_ASSIGNED: 5,
  MB_ERR_SDS_IN_USE: 6,
  MB_ERR_DEVICE_EXISTS: 7,
  MB_ERR_DEVICE_IN_USE: 8,
  MB_ERR_POOL_IN_USE: 9,
  MB_ERR_POOL_EMPTY: 10,
  MB_ERR_SDC_MAPPED: 11,
  MB_ERR_VOLUME_MAPPED: 12,
  MB_ERR_ALREADY_MAPPED: 13,
  MB_ERR_MULTIPLE_MAPPINGS: 14,
  MB_ERR_INSUFFICIENT_CAPACITY: 15,
  MB_ERR_PLACEMENT: 16,
  MB_ERR_AMBIGUOUS: 17,
  MB_ERR_DEVICE_FORMATTED: 18,
  MB_ERR_OUT_OF_RANGE: 19,
  // The MDM cluster.
  MB_ERR_MDM_NOT_MASTER: 20,
  MB_ERR_NO_QUORUM: 21,
  MB_ERR_MDM_CLUSTER_CHANGE: 22,
  // Snapshots (and the open-volume refusal they share with unmapping).
  MB_ERR_VOLUME_OPEN: 23,
  MB_ERR_SNAPSHOT_LIMIT: 24,
  MB_ERR_VTREE_MISMATCH: 25,
  MB_ERR_SNAPSHOT_BARRIER: 26,
  MB_ERR_VOLUME_READ_ONLY: 27,
  // The HTTP layer's own.
  MB_ERR_UNAUTHORIZED: 101,
  MB_ERR_NO_ROUTE: 102,
  MB_ERR_METHOD_NOT_ALLOWED: 103,
  MB_ERR_BODY_TOO_LARGE: 104,
  MB_ERR_MALFORMED_JSON: 105,
  MB_ERR_TOO_MANY_LOGINS: 106,
  MB_ERR_SHUTTING_DOWN: 107,
  MB_ERR_BODY_INCOMPLETE: 108,
  MB_ERR_INTERNAL: 199,
} satisfies Partial<Record<ErrorCode, number>>;

export interface RestErrorBody {
  message: string;
  httpStatusCode: number;
  errorCode: number;
  code: MeshblockCode;
}

/** An error the HTTP layer raises itself (auth, routing, framing). */
export class RestError extends MeshblockError {
  declare readonly code: ErrorCode;

  constructor(
    code: ErrorCode,
    message: string,
    readonly httpStatus: number,
    /** Extra response headers, e.g. Allow on a 405. */
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(code, message);
  }
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
  return { message: text.replace(/\s*\n\s*/g, ' ').trim(), httpStatusCode, errorCode: restErrorCode(code), code };
}
