// The cluster secret, read from a file: the one thing SDSs, SDCs and the MDM share to
// prove they belong to one cluster. Trailing whitespace (a final newline) is not part of it.

import * as fs from 'node:fs';
import { InvalidArgumentError } from '../common/errors.js';

export const secretBytesMin = 16;

export function readSecretFile(field: string, file: string): Buffer {
  let secret: Buffer;
  try {
    secret = Buffer.from(fs.readFileSync(file, 'utf8').trim());
  } catch (err) {
    throw new InvalidArgumentError(field, `cannot read ${file}: ${(err as Error).message}`);
  }
  if (secret.length < secretBytesMin) throw new InvalidArgumentError(field, `the secret in ${file} is shorter than ${secretBytesMin} bytes`);
  return secret;
}
