// One daemon per data directory: two MDMs appending to one journal, or two SDSs on one
// set of devices, would corrupt them. A lock file holds the owner's pid; a lock left by a
// process that died (kill -9, a crash, a reboot) is taken over, since Node has no flock().
// The check-then-create is made atomic with O_EXCL; a stale file is removed first.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { MeshblockError } from '../common/errors.js';

export class LockError extends MeshblockError {}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A recycled pid that now belongs to something else does not hold our lock.
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('meshblock');
  } catch {
    return true;
  }
}

/** Takes `DIR/<name>.lock` for this process until it exits; throws LockError if held. */
export function lockDataDir(dataDir: string, name: string): void {
  const file = path.join(dataDir, `${name}.lock`);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
      fs.writeSync(fd, `${process.pid}\n`);
      fs.closeSync(fd);
      process.on('exit', () => {
        try {
          if (fs.readFileSync(file, 'utf8').trim() === String(process.pid)) fs.unlinkSync(file);
        } catch {
          // Gone already.
        }
      });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = Number(fs.readFileSync(file, 'utf8').trim());
    if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && alive(owner)) {
      throw new LockError('MB_ERR_DATA_DIR_LOCKED', `${dataDir} is in use by process ${owner} (${file})`);
    }
    fs.rmSync(file, { force: true });
  }
  throw new LockError('MB_ERR_DATA_DIR_LOCKED', `cannot take ${file}: another process keeps taking it`);
}
