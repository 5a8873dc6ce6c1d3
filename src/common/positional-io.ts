// Positional reads and writes on one file descriptor, with the two fast paths that keep
// small cached IO off libuv's thread pool: a read tries preadv2(RWF_NOWAIT) on the event
// loop first (cached pages are copied right there), and a small buffered write to a file
// is a copy into the page cache, done inline. The pool's round trip (a wake-up, a context
// switch each way) costs more than either copy. Both the NBD file backend and the SDS
// chunk store sit on this; the import rule keeps those two apart, so it lives here, with
// native.ts, as the other piece of src/common that touches the system.

import * as fs from 'node:fs';
import type { Logger } from 'pino';
import { MeshblockError } from './errors.js';
import * as native from './native.js';
import { inlineWriteBackoffMs, inlineWriteBytesMax, inlineWriteStallMs, nowaitReadBytesMax } from './limits.js';

const resolved = Promise.resolve();

/** A read found the end of the file before the end of the range: EIO to whoever asked. */
export class ShortReadError extends MeshblockError {
  declare readonly code: 'EIO';

  constructor(message: string) {
    super('EIO', message);
  }
}

export class PositionalIo {
  /** Cleared if the kernel or filesystem has no RWF_NOWAIT reads. */
  private nowaitReads = true;
  /** Small writes run inline from this time on. */
  private inlineWritesFromMs = 0;

  constructor(
    private readonly fd: number,
    private readonly options: { path: string; isBlockDevice: boolean; log?: Logger | undefined },
  ) {}

  /** Fills `target` from `positionBytes`; a read past the end of the file rejects (EIO). */
  read(target: Buffer, positionBytes: number): Promise<void> {
    let filled = 0;
    if (this.nowaitReads && target.length <= nowaitReadBytesMax) {
      const result = native.preadNowait(this.fd, target, positionBytes);
      if (result === target.length) return resolved;
      if (result > 0) filled = result;
      else if (result === -native.EOPNOTSUPP) this.nowaitReads = false;
    }
    return new Promise((resolve, reject) => {
      const step = (done: number): void => {
        fs.read(this.fd, target, done, target.length - done, positionBytes + done, (err, bytesRead) => {
          if (err) return reject(err);
          // The file shrank under us: never hand out bytes we did not read.
          if (bytesRead === 0) return reject(new ShortReadError(`${this.options.path}: short read at ${positionBytes + done}: end of file`));
          const next = done + bytesRead;
          if (next === target.length) resolve();
          else step(next);
        });
      };
      step(filled);
    });
  }

  write(source: Buffer, positionBytes: number): Promise<void> {
    let done = 0;
    if (this.inlineWritesFromMs <= Date.now() && source.length <= inlineWriteBytesMax && !this.options.isBlockDevice) {
      // Buffered writes can block (dirty-page throttling, journal waits): one that slept
      // sends writes back to the pool for a while. One that was merely preempted did not
      // block the disk's way: on a machine with more busy processes than cores that is
      // common, and must not cost every later write a trip through the pool.
      const startedMs = performance.now();
      const result = native.pwriteInline(this.fd, source, positionBytes);
      const tookMs = performance.now() - startedMs;
      if (tookMs > inlineWriteStallMs && native.inlineWriteSlept()) {
        this.inlineWritesFromMs = Date.now() + inlineWriteBackoffMs;
        this.options.log?.warn(
          { path: this.options.path, durationMs: Math.round(tookMs), backoffMs: inlineWriteBackoffMs },
          'a small write blocked the event loop (dirty-page throttling?): writes go to the thread pool for a while',
        );
      }
      if (result === source.length) return resolved;
      // Short, or failed: the pool finishes it, and a real error comes back from there
      // with the code and message of fs.write.
      if (result > 0) done = result;
    }
    return new Promise<void>((resolve, reject) => {
      const step = (doneBytes: number): void => {
        fs.write(this.fd, source, doneBytes, source.length - doneBytes, positionBytes + doneBytes, (err, bytesWritten) => {
          if (err) return reject(err);
          const next = doneBytes + bytesWritten;
          if (next === source.length) resolve();
          else step(next);
        });
      };
      step(done);
    });
  }
}
