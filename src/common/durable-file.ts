// Replacing a small file so that a crash or a power cut leaves either the old content or the
// new, never a mix or nothing: write a temporary file beside it, fsync it, rename it over the
// old one, fsync the directory (the rename is only durable once the directory is).

import * as fs from 'node:fs';
import * as path from 'node:path';

export function replaceFileDurably(file: string, content: string): void {
  const temporary = `${file}.tmp`;
  const fd = fs.openSync(temporary, 'w', 0o600);
  try {
    fs.writeSync(fd, content);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(temporary, file);
  const directory = fs.openSync(path.dirname(file), 'r');
  try {
    fs.fsyncSync(directory);
  } finally {
    fs.closeSync(directory);
  }
}
