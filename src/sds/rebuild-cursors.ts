// Where a full rebuild job resumes after its source SDS stops (SIGTERM, kill -9, power
// loss): the last chunk of the longest prefix of the job's chunk list that is copied *and
// durable on the target*. The caller keeps that ordering (flush the target, then save the
// cursor); this store only makes the cursor itself durable.
//
// One small JSON file of its own, not the SDS state file: the state file holds the whole
// placement map (thousands of groups), and rewriting it with synchronous fsyncs every few
// chunks of every job stalled the event loop that serves client IO. Here a save is
//
//   write rebuild-cursors.json.tmp ─▶ fsync ─▶ rename over rebuild-cursors.json ─▶ fsync dir
//
// through fs.promises (the thread pool), so a crash leaves the old file or the new one,
// whole. Saves coalesce: at most one write is in flight, and every change made while it
// runs is carried by one next write, so a slow disk costs staleness, never a queue.
//
// File layout (version 1):
//
//   { "version": 1, "cursors": { "<poolId>/<pgIndex>/<targetSdsId>": "<chunk key name>" } }
//
// A cursor is only ever a shortcut: losing one (an unreadable file, a save that did not
// land before a crash) makes the job copy from its start again, which is always safe. A
// cursor that claims too much would not be, hence the caller's ordering.

import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { MeshblockError } from '../common/errors.js';

export const rebuildCursorsFileName = 'rebuild-cursors.json';
const fileVersion = 1;

export class RebuildCursorsError extends MeshblockError {}

interface CursorsFile {
  version: number;
  cursors: Record<string, string>;
}

interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<void>((resolveNow, rejectNow) => {
    resolve = resolveNow;
    reject = rejectNow;
  });
  return { promise, resolve, reject };
}

export class RebuildCursors {
  private filesWritten = 0;
  /** The write in flight, if any; it never rejects (its batch's promise carries failures). */
  private writing: Promise<void> | null = null;
  /** Changes made since the write in flight took its snapshot: the next write's waiters. */
  private next: Deferred | null = null;

  private constructor(
    private readonly dataDir: string,
    private readonly cursors: Map<string, string>,
  ) {}

  /**
   * Opens the cursors of `dataDir`. A data dir from before this file existed keeps its
   * cursors in the SDS state file: `legacy` (read from there) is used when this file is
   * absent, and written here at once, before the state file drops them. An unreadable file
   * is logged and treated as empty: every job then copies from its start, slower but correct.
   */
  static async open(dataDir: string, legacy: Readonly<Record<string, string>>, log: Logger): Promise<RebuildCursors> {
    const file = path.join(dataDir, rebuildCursorsFileName);
    let text: string;
    try {
      text = await fsp.readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        log.warn({ err, file }, 'rebuild cursors unreadable: rebuilds copy from their start');
        return new RebuildCursors(dataDir, new Map());
      }
      const cursors = new RebuildCursors(dataDir, new Map(Object.entries(legacy)));
      if (cursors.cursors.size > 0) await cursors.save().catch((saveErr: unknown) => log.warn({ err: saveErr, file }, 'rebuild cursors of the state file not moved to their own file'));
      return cursors;
    }
    try {
      return new RebuildCursors(dataDir, new Map(Object.entries(parseCursorsFile(text))));
    } catch (err) {
      log.warn({ err, file }, 'rebuild cursors damaged: rebuilds copy from their start');
      return new RebuildCursors(dataDir, new Map());
    }
  }

  /** Files written so far (tests prove coalescing with it). */
  get writeCount(): number {
    return this.filesWritten;
  }

  get(jobKey: string): string | undefined {
    return this.cursors.get(jobKey);
  }

  /** Every cursor, by job key (a copy). */
  entries(): Record<string, string> {
    return Object.fromEntries(this.cursors);
  }

  /** Sets a job's cursor; resolves once a file holding it (or a later change) is durable. */
  set(jobKey: string, chunkName: string): Promise<void> {
    this.cursors.set(jobKey, chunkName);
    return this.save();
  }

  /** Forgets a job's cursor (it finished); resolves once that is durable. */
  delete(jobKey: string): Promise<void> {
    if (!this.cursors.delete(jobKey)) return Promise.resolve();
    return this.save();
  }

  /** Resolves once no save is in flight or pending (for a clean stop). */
  async settled(): Promise<void> {
    while (this.writing !== null) await this.writing;
  }

  private save(): Promise<void> {
    this.next ??= deferred();
    const { promise } = this.next;
    if (this.writing === null) this.startWrite();
    return promise;
  }

  private startWrite(): void {
    const batch = this.next;
    if (batch === null) return;
    this.next = null;
    const file: CursorsFile = { version: fileVersion, cursors: Object.fromEntries(this.cursors) };
    this.writing = this.writeFile(JSON.stringify(file)).then(
      () => batch.resolve(),
      (err: unknown) => batch.reject(new RebuildCursorsError('MB_ERR_REBUILD_CURSORS_WRITE', `cannot save rebuild cursors in ${this.dataDir}: ${(err as Error).message}`, { cause: err })),
    );
    void this.writing.then(() => {
      this.writing = null;
      this.startWrite();
    });
  }

  private async writeFile(text: string): Promise<void> {
    const file = path.join(this.dataDir, rebuildCursorsFileName);
    const temporary = `${file}.tmp`;
    const handle = await fsp.open(temporary, 'w', 0o600);
    try {
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(temporary, file);
    // The rename is durable only once the directory is.
    const directory = await fsp.open(this.dataDir, 'r');
    try {
      await directory.sync();
    } finally {
      await directory.close();
    }
    this.filesWritten += 1;
  }
}

function parseCursorsFile(text: string): Record<string, string> {
  const parsed = JSON.parse(text) as Partial<CursorsFile> | null;
  if (parsed === null || typeof parsed !== 'object' || parsed.version !== fileVersion) throw new Error(`not a version ${fileVersion} cursors file`);
  const cursors = parsed.cursors;
  if (cursors === null || typeof cursors !== 'object') throw new Error('cursors must be an object');
  for (const [jobKey, chunkName] of Object.entries(cursors)) {
    if (typeof chunkName !== 'string') throw new Error(`cursor of ${jobKey} is not a string`);
  }
  return cursors;
}
