import * as fs from 'node:fs';
import * as path from 'node:path';

/** A sparse file of `sizeBytes` in `dir`: every byte reads as zero, nothing is allocated. */
export function sparseFile(dir: string, name: string, sizeBytes: number): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, sizeBytes);
  return file;
}
