// ScaleIO's rule for the names of the model (protection domains, pools, fault sets, SDSs,
// SDCs, ...), which an SDS's host label follows too: checked by the MDM (state machine and
// REST bodies), the wire's SDS registration and `sds start`.

import { nameBytesMax } from './limits.js';

const namePattern = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** The rule, for messages. */
export const nameRule = `1 to ${nameBytesMax} letters, digits, '_', '.' or '-', starting with a letter or digit`;

export function isName(value: string): boolean {
  return value.length > 0 && Buffer.byteLength(value) <= nameBytesMax && namePattern.test(value);
}
