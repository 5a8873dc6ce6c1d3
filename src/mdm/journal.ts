// The MDM's embedded journal: its state survives any crash as a snapshot plus the change
// records appended after it, in the MDM's data directory. An append resolves only once
// its record is on disk (written and fdatasync'd); a restart gives back the snapshot and
// every acknowledged record, in order. A record torn by the crash is dropped, never half
// applied; damage anywhere else refuses the open instead of silently losing changes.
//
// Files in the directory, by generation g (a decimal number, starting at 0):
//
//   snapshot-<g>.snap      the state before journal g's first record (g >= 1; generation 0
//                          starts from the owner's initialSnapshot and has no file)
//   journal-<g>.log        the records appended since snapshot g
//   snapshot-<g>.snap.tmp  a compaction that did not finish (deleted at open)
//
// Compaction moves from generation g to g+1 in an order where every crash point leaves
// a directory that opens to the same state (the highest complete snapshot wins):
//
//   1. write snapshot-<g+1>.snap.tmp, fsync     crash: tmp deleted, g reopened
//   2. rename to snapshot-<g+1>.snap, fsync dir  from here on a crash reopens g+1
//   3. create journal-<g+1>.log, fsync dir       (recreated empty at open if missing)
//   4. delete journal-<g>.log, snapshot-<g>.snap (leftovers deleted at open)
//
// Both kinds of file hold frames of this layout (big-endian):
//
//   0        4        8                 16
//   +--------+--------+-----------------+---------------------------+
//   | length | crc32c | B|  sequence    | payload: UTF-8 JSON       |
//   |  u32   |  u32   |      u64        | `length` bytes            |
//   +--------+--------+-----------------+---------------------------+
//
//   length    payload bytes, at most journalRecordBytesMax (journalSnapshotBytesMax in a
//             snapshot file). A wrong length makes the CRC fail, so it needs no check of its own.
//   crc32c    CRC-32C of bytes 8 .. 16+length: sequence word and payload. The sequence word
//             is covered too (not only the payload), so that a flipped bit there is caught as
//             damage rather than read as a wrong sequence or a wrong batch flag.
//   B         bit 63 of the sequence word: set on the first record of each write batch
//             (one writev + one fdatasync). Why it exists: see scanJournal().
//   sequence  bits 0..62: the record's number, counted from 1 over the journal's whole life
//             (it does not restart at compaction), at most Number.MAX_SAFE_INTEGER. A snapshot
//             file's frame holds the sequence its journal's first record must have.

import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { assert } from '../common/assert.js';
import { crc32c } from '../common/crc32c.js';
import { InvalidArgumentError, MeshblockError, OutOfRangeError, SystemCallError } from '../common/errors.js';
import { journalPendingBytesMax, journalRecordBytesMax, journalSnapshotBytesMax } from '../common/limits.js';


const frameHeaderBytes = 16;
const batchStartBit = 1n << 63n;
const firstSequence = 1;

assert(journalPendingBytesMax >= 2 * (frameHeaderBytes + journalRecordBytesMax), 'two records of the largest size must fit in the queue');
assert(journalSnapshotBytesMax >= journalRecordBytesMax, 'a snapshot must be able to hold at least one record');
assert(journalSnapshotBytesMax <= 0xffffffff, 'a frame length must fit in u32');

/** A journal or snapshot file is damaged where a crash cannot have damaged it. */
export class JournalCorruptError extends MeshblockError {
  readonly file: string;
  readonly offsetBytes: number;

  constructor(file: string, offsetBytes: number, reason: string, options?: { cause?: unknown }) {
    super('MB_ERR_JOURNAL_CORRUPT', `${file}, offset ${offsetBytes}: ${reason}; refusing to open rather than lose acknowledged changes`, options);
    this.file = file;
    this.offsetBytes = offsetBytes;
  }
}

/** A write, fdatasync or compaction failed; the journal refuses everything until reopened. */
export class JournalFailedError extends MeshblockError {
  constructor(dir: string, cause: unknown) {
    super(
      'MB_ERR_JOURNAL_FAILED',
      `the journal in ${dir} is unusable after a failed write (${cause instanceof Error ? cause.message : String(cause)}); ` +
        'reopen it (restart the MDM) to go on from what is on disk',
      { cause },
    );
  }
}

export class JournalClosedError extends MeshblockError {
  constructor(dir: string) {
    super('MB_ERR_JOURNAL_CLOSED', `the journal in ${dir} is closed`);
  }
}

/** journalPendingBytesMax of appends are waiting for the disk; try again later. */
export class JournalBusyError extends MeshblockError {
  constructor(dir: string, pendingBytes: number) {
    super('MB_ERR_JOURNAL_BUSY', `the journal in ${dir} has ${pendingBytes} bytes waiting for the disk (at most ${journalPendingBytesMax})`);
  }
}

export interface JournalOptions<R, S> {
  log: Logger;
  /** The state of an empty directory (generation 0). */
  initialSnapshot: S;
  /** Validates a record read back from disk; throwing refuses the open. Default: a cast. */
  parseRecord?: (value: unknown) => R;
  /** Validates the snapshot read back from disk; throwing refuses the open. Default: a cast. */
  parseSnapshot?: (value: unknown) => S;
}

export interface JournalOpened<R, S> {
  journal: Journal<R, S>;
  /** The state at the last compaction (or initialSnapshot). */
  snapshot: S;
  /** Every record appended since, in order: apply them to `snapshot` to get the state. */
  records: R[];
}

type Step = { kind: 'write'; frames: Buffer[]; bytes: number } | { kind: 'task'; run: () => Promise<void> };
type Queued = Step & { resolve: () => void; reject: (err: unknown) => void };

/**
 * An append-only journal of change records `R` with compaction into a snapshot `S`. Records
 * and snapshots are stored as JSON, serialized when append() or compact() is called (the
 * caller may change the object afterwards).
 *
 * Operations take effect in call order. Appends waiting while a batch is being written are
 * group-committed: the next batch writes them all with one writev and one fdatasync.
 */
export class Journal<R, S> {
  private readonly dir: string;
  private readonly log: Logger;
  private generation: number;
  private handle: fs.FileHandle;
  /** Where the next batch goes: the end of what is written to journal-<generation>.log. */
  private fileBytes: number;
  /** Given to the next record appended. */
  private nextSequence: number;
  private pendingBytes = 0;
  private generationRecordCount: number;
  private generationBytes: number;
  private syncs = 0;
  private readonly queue: Queued[] = [];
  private pumping = false;
  private closing: Promise<void> | null = null;
  private failure: unknown = null;

  private constructor(dir: string, log: Logger, generation: number, handle: fs.FileHandle, fileBytes: number, nextSequence: number, recordCount: number) {
    this.dir = dir;
    this.log = log;
    this.generation = generation;
    this.handle = handle;
    this.fileBytes = fileBytes;
    this.nextSequence = nextSequence;
    this.generationRecordCount = recordCount;
    this.generationBytes = fileBytes;
  }

  /**
   * Opens (or creates) the journal in `dir` and reads back the state: the newest complete
   * snapshot and the records after it. A torn last record is truncated away and logged;
   * any other damage throws JournalCorruptError and leaves the directory untouched.
   */
  static async open<R, S>(dir: string, options: JournalOptions<R, S>): Promise<JournalOpened<R, S>> {
    const log = options.log.child({ component: 'journal' });
    const parseRecord = options.parseRecord ?? ((value: unknown) => value as R);
    const parseSnapshot = options.parseSnapshot ?? ((value: unknown) => value as S);
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    const files = listFiles(await fs.readdir(dir));
    const generation = Math.max(0, ...files.snapshots);
    const orphan = files.journals.find((journalGeneration) => journalGeneration > generation);
    if (orphan !== undefined) {
      throw new JournalCorruptError(path.join(dir, journalName(orphan)), 0, `${snapshotName(orphan)}, which this journal continues, is missing`);
    }

    let snapshot = options.initialSnapshot;
    let nextSequence = firstSequence;
    if (generation > 0) {
      const file = path.join(dir, snapshotName(generation));
      const bytes = await fs.readFile(file);
      const frame = checkFrame(bytes, 0, journalSnapshotBytesMax);
      if (!frame.ok) throw new JournalCorruptError(file, 0, frame.reason);
      if (frame.endBytes !== bytes.length) throw new JournalCorruptError(file, frame.endBytes, `${bytes.length - frame.endBytes} bytes after the snapshot`);
      if (frame.sequence < firstSequence || frame.sequence > Number.MAX_SAFE_INTEGER) throw new JournalCorruptError(file, 8, `next sequence ${frame.sequence} is out of range`);
      nextSequence = Number(frame.sequence);
      snapshot = parsePayload(bytes, 0, frame.endBytes, parseSnapshot, file);
    }

    const file = path.join(dir, journalName(generation));
    let handle: fs.FileHandle;
    const records: R[] = [];
    let fileBytes = 0;
    if (files.journals.includes(generation)) {
      handle = await fs.open(file, 'r+');
      try {
        const bytes = await readAll(handle);
        const scan = scanJournal(bytes, nextSequence, file);
        for (const frame of scan.frames) records.push(parsePayload(bytes, frame.offsetBytes, frame.endBytes, parseRecord, file));
        fileBytes = scan.validBytes;
        if (scan.tornReason !== null) {
          // Truncated (and synced) before anything is appended, so that new records follow
          // the last good one directly instead of a stretch of damage.
          log.warn({ file, offsetBytes: fileBytes, droppedBytes: bytes.length - fileBytes, reason: scan.tornReason }, 'dropped a torn record at the end of the journal');
          await handle.truncate(fileBytes);
          await handle.datasync();
        }
      } catch (err) {
        await handle.close();
        throw err;
      }
    } else {
      handle = await createJournalFile(dir, generation);
    }

    // Only now, with the current generation read back whole, delete what earlier ones left.
    const leftovers = [
      ...files.snapshots.filter((old) => old < generation).map(snapshotName),
      ...files.journals.filter((old) => old < generation).map(journalName),
      ...files.temporaries,
    ];
    for (const name of leftovers) await fs.rm(path.join(dir, name), { force: true });
    if (leftovers.length > 0) log.info({ files: leftovers }, 'removed what an earlier compaction left');

    const journal = new Journal<R, S>(dir, log, generation, handle, fileBytes, nextSequence + records.length, records.length);
    log.info({ dir, generation, recordCount: records.length, bytes: fileBytes, nextSequence: journal.nextSequence }, 'journal opened');
    return { journal, snapshot, records };
  }

  /** Resolves once `record` is written and fdatasync'd: after a crash, open() returns it. */
  append(record: R): Promise<void> {
    return this.appendMany([record]);
  }

  /**
   * Appends `records` in one write and one fdatasync (with whatever else is waiting). Each
   * record is framed on its own, so the group is NOT atomic: a crash before this resolves
   * may leave any prefix of it on disk (never a part of one record). Changes that must take
   * effect together belong in one record.
   */
  async appendMany(records: readonly R[]): Promise<void> {
    this.throwIfUnusable();
    const frames = records.map((record, index) => encodeFrame(record, this.nextSequence + index, journalRecordBytesMax, `records[${index}]`));
    const bytes = frames.reduce((sum, frame) => sum + frame.length, 0);
    if (bytes > journalPendingBytesMax) throw new OutOfRangeError('records', `at most ${journalPendingBytesMax} bytes framed`, bytes);
    if (this.pendingBytes + bytes > journalPendingBytesMax) throw new JournalBusyError(this.dir, this.pendingBytes);
    if (frames.length === 0) return;
    this.nextSequence += frames.length;
    this.pendingBytes += bytes;
    this.generationRecordCount += frames.length;
    this.generationBytes += bytes;
    await this.enqueue({ kind: 'write', frames, bytes });
  }

  /**
   * Replaces the journal with `snapshot`, which must be the state after every record
   * appended so far (every append() called before this, resolved or not). Appends called
   * after this go to the new generation.
   */
  async compact(snapshot: S): Promise<void> {
    this.throwIfUnusable();
    const frame = encodeFrame(snapshot, this.nextSequence, journalSnapshotBytesMax, 'snapshot');
    sealFrame(frame, false);
    this.generationRecordCount = 0;
    this.generationBytes = 0;
    await this.enqueue({ kind: 'task', run: () => this.compactNow(frame) });
  }

  /** Records in the current generation, counting appends not yet on disk. */
  get recordCount(): number {
    return this.generationRecordCount;
  }

  /** Bytes of the current generation's journal, counting appends not yet on disk. */
  get bytes(): number {
    return this.generationBytes;
  }

  /** fdatasyncs done for appends; fewer than the appends when they were group-committed. */
  get syncCount(): number {
    return this.syncs;
  }

  /** Waits for every earlier operation, then closes the file. Later appends are refused. */
  close(): Promise<void> {
    this.closing ??= this.enqueue({ kind: 'task', run: () => this.handle.close() });
    return this.closing;
  }

  private throwIfUnusable(): void {
    if (this.failure !== null) throw new JournalFailedError(this.dir, this.failure);
    if (this.closing !== null) throw new JournalClosedError(this.dir);
  }

  private enqueue(step: Step): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ ...step, resolve, reject });
      // pump() never rejects: every failure settles the operations it belongs to.
      if (!this.pumping) void this.pump();
    });
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    while (this.queue.length > 0) {
      let count = 1;
      if ((this.queue[0] as Queued).kind === 'write') {
        while (count < this.queue.length && (this.queue[count] as Queued).kind === 'write') count++;
      }
      const operations = this.queue.splice(0, count);
      const head = operations[0] as Queued;
      try {
        if (head.kind === 'task') await head.run();
        else await this.writeBatch(operations as Array<Queued & { kind: 'write' }>);
        for (const operation of operations) operation.resolve();
      } catch (err) {
        for (const operation of operations) operation.reject(err);
      }
    }
    this.pumping = false;
  }

  private async writeBatch(batch: Array<Queued & { kind: 'write' }>): Promise<void> {
    const bytes = batch.reduce((sum, operation) => sum + operation.bytes, 0);
    try {
      if (this.failure !== null) throw new JournalFailedError(this.dir, this.failure);
      const frames = batch.flatMap((operation) => operation.frames);
      frames.forEach((frame, index) => sealFrame(frame, index === 0));
      try {
        await writeFully(this.handle, frames, this.fileBytes);
        await this.handle.datasync();
      } catch (err) {
        throw this.fail(err, 'append');
      }
      this.syncs++;
      this.fileBytes += bytes;
    } finally {
      this.pendingBytes -= bytes;
    }
  }

  private async compactNow(frame: Buffer): Promise<void> {
    if (this.failure !== null) throw new JournalFailedError(this.dir, this.failure);
    const startedMs = Date.now();
    const next = this.generation + 1;
    try {
      const temporary = path.join(this.dir, `${snapshotName(next)}.tmp`);
      const snapshotHandle = await fs.open(temporary, 'w', 0o600);
      try {
        await writeFully(snapshotHandle, [frame], 0);
        await snapshotHandle.sync();
      } finally {
        await snapshotHandle.close();
      }
      await fs.rename(temporary, path.join(this.dir, snapshotName(next)));
      await syncDirectory(this.dir);
      // A crash from here on reopens generation `next`.
      const previous = this.handle;
      this.handle = await createJournalFile(this.dir, next);
      this.generation = next;
      this.fileBytes = 0;
      await previous.close();
      // Not synced: if a crash brings them back, open() deletes them again.
      await fs.rm(path.join(this.dir, journalName(next - 1)), { force: true });
      await fs.rm(path.join(this.dir, snapshotName(next - 1)), { force: true });
    } catch (err) {
      // A failure before the rename could leave the journal usable, but one rule for every
      // failure is simpler to trust, and a restart recovers either way.
      throw this.fail(err, 'compaction');
    }
    this.log.info({ generation: next, snapshotBytes: frame.length, durationMs: Date.now() - startedMs }, 'journal compacted');
  }

  /**
   * Marks the journal failed for good. Why not retry: a failed write may have left part of
   * a record in the file, and appending after it would turn a torn tail into damage in the
   * middle; after a failed fdatasync the kernel may have dropped the dirty pages and a
   * retried fdatasync can report success anyway. Reopening reads what really is on disk.
   */
  private fail(err: unknown, what: string): JournalFailedError {
    if (this.failure === null) {
      this.failure = err;
      this.log.error({ err, generation: this.generation }, `journal ${what} failed; the journal is unusable until reopened`);
    }
    return new JournalFailedError(this.dir, this.failure);
  }
}

function journalName(generation: number): string {
  return `journal-${generation}.log`;
}

function snapshotName(generation: number): string {
  return `snapshot-${generation}.snap`;
}

function listFiles(names: string[]): { journals: number[]; snapshots: number[]; temporaries: string[] } {
  const journals: number[] = [];
  const snapshots: number[] = [];
  const temporaries: string[] = [];
  for (const name of names) {
    const match = /^(journal|snapshot)-(0|[1-9]\d{0,14})\.(log|snap)(\.tmp)?$/.exec(name);
    if (match === null) continue;
    const [, kind, generation, extension, temporary] = match;
    if (temporary !== undefined) temporaries.push(name);
    else if (kind === 'journal' && extension === 'log') journals.push(Number(generation));
    else if (kind === 'snapshot' && extension === 'snap') snapshots.push(Number(generation));
  }
  return { journals, snapshots, temporaries };
}

/** A frame with its payload and sequence filled in; sealFrame() adds the flag and CRC. */
function encodeFrame(value: unknown, sequence: number, payloadBytesMax: number, field: string): Buffer {
  let text: string | undefined;
  try {
    text = JSON.stringify(value) as string | undefined;
  } catch (err) {
    throw new InvalidArgumentError(field, `cannot be stored as JSON: ${(err as Error).message}`);
  }
  if (text === undefined) throw new InvalidArgumentError(field, 'cannot be stored as JSON');
  const payloadBytes = Buffer.byteLength(text);
  if (payloadBytes > payloadBytesMax) throw new OutOfRangeError(field, `at most ${payloadBytesMax} bytes of JSON`, payloadBytes);
  assert(Number.isSafeInteger(sequence) && sequence >= firstSequence, `sequence ${sequence} out of range`);
  const frame = Buffer.allocUnsafe(frameHeaderBytes + payloadBytes);
  frame.writeUInt32BE(payloadBytes, 0);
  frame.writeBigUInt64BE(BigInt(sequence), 8);
  frame.write(text, frameHeaderBytes, 'utf8');
  return frame;
}

function sealFrame(frame: Buffer, batchStart: boolean): void {
  if (batchStart) frame.writeUInt8((frame[8] as number) | 0x80, 8);
  frame.writeUInt32BE(crc32c(frame.subarray(8)), 4);
}

type FrameCheck = { ok: true; endBytes: number; sequence: bigint; batchStart: boolean } | { ok: false; reason: string };

function checkFrame(bytes: Buffer, offsetBytes: number, payloadBytesMax: number): FrameCheck {
  const remainingBytes = bytes.length - offsetBytes;
  if (remainingBytes < frameHeaderBytes) return { ok: false, reason: `header cut short (${remainingBytes} of ${frameHeaderBytes} bytes)` };
  const payloadBytes = bytes.readUInt32BE(offsetBytes);
  if (payloadBytes > payloadBytesMax) return { ok: false, reason: `length ${payloadBytes} above the limit of ${payloadBytesMax}` };
  const endBytes = offsetBytes + frameHeaderBytes + payloadBytes;
  if (endBytes > bytes.length) return { ok: false, reason: `record cut short (${remainingBytes} of ${frameHeaderBytes + payloadBytes} bytes)` };
  if (crc32c(bytes.subarray(offsetBytes + 8, endBytes)) !== bytes.readUInt32BE(offsetBytes + 4)) return { ok: false, reason: 'checksum mismatch' };
  const word = bytes.readBigUInt64BE(offsetBytes + 8);
  return { ok: true, endBytes, sequence: word & ~batchStartBit, batchStart: (word & batchStartBit) !== 0n };
}

/**
 * Reads journal frames from the start until the end or the first bad one. A bad frame is
 * a torn tail, dropped, if no later write batch follows it; otherwise it is damage.
 *
 * Why batches and not simply "any good record after it": a crash of the process leaves a
 * prefix of the last write, but a power cut can also persist a later page of the last
 * batch and lose an earlier one, so a torn batch may end in an intact record. None of that
 * batch was acknowledged (its fdatasync never returned), and the next batch is written only
 * after it did. So an intact batch start after the bad frame proves the bad frame was
 * acknowledged; intact records of its own batch prove nothing.
 */
function scanJournal(bytes: Buffer, sequence: number, file: string): { frames: Array<{ offsetBytes: number; endBytes: number }>; validBytes: number; tornReason: string | null } {
  const frames: Array<{ offsetBytes: number; endBytes: number }> = [];
  let offsetBytes = 0;
  let expected = BigInt(sequence);
  while (offsetBytes < bytes.length) {
    const frame = checkFrame(bytes, offsetBytes, journalRecordBytesMax);
    if (!frame.ok) {
      const laterBytes = findBatchStart(bytes, offsetBytes + 1);
      if (laterBytes === null) return { frames, validBytes: offsetBytes, tornReason: frame.reason };
      throw new JournalCorruptError(file, offsetBytes, `${frame.reason}, but a later write batch at offset ${laterBytes} is intact, so this record was acknowledged`);
    }
    if (frame.sequence !== expected) throw new JournalCorruptError(file, offsetBytes, `intact record with sequence ${frame.sequence} where ${expected} was due`);
    frames.push({ offsetBytes, endBytes: frame.endBytes });
    offsetBytes = frame.endBytes;
    expected++;
  }
  return { frames, validBytes: offsetBytes, tornReason: null };
}

function findBatchStart(bytes: Buffer, fromBytes: number): number | null {
  for (let offsetBytes = fromBytes; offsetBytes + frameHeaderBytes <= bytes.length; offsetBytes++) {
    // The flag byte first: JSON text rarely has its top bit set, so few offsets get a CRC.
    if (((bytes[offsetBytes + 8] as number) & 0x80) === 0) continue;
    const frame = checkFrame(bytes, offsetBytes, journalRecordBytesMax);
    if (frame.ok && frame.batchStart) return offsetBytes;
  }
  return null;
}

function parsePayload<T>(bytes: Buffer, offsetBytes: number, endBytes: number, parse: (value: unknown) => T, file: string): T {
  try {
    return parse(JSON.parse(bytes.toString('utf8', offsetBytes + frameHeaderBytes, endBytes)));
  } catch (err) {
    throw new JournalCorruptError(file, offsetBytes, `intact record does not parse: ${(err as Error).message}`, { cause: err });
  }
}

async function readAll(handle: fs.FileHandle): Promise<Buffer> {
  const { size } = await handle.stat();
  const bytes = Buffer.allocUnsafe(size);
  let filledBytes = 0;
  while (filledBytes < size) {
    const { bytesRead } = await handle.read(bytes, filledBytes, size - filledBytes, filledBytes);
    if (bytesRead === 0) break;
    filledBytes += bytesRead;
  }
  return bytes.subarray(0, filledBytes);
}

async function writeFully(handle: fs.FileHandle, buffers: Buffer[], positionBytes: number): Promise<void> {
  let remaining = buffers;
  let position = positionBytes;
  while (remaining.length > 0) {
    const { bytesWritten } = await handle.writev(remaining, position);
    if (bytesWritten === 0) throw new SystemCallError('EIO', 'writev wrote nothing');
    position += bytesWritten;
    let skipBytes = bytesWritten;
    while (remaining.length > 0 && skipBytes >= (remaining[0] as Buffer).length) {
      skipBytes -= (remaining[0] as Buffer).length;
      remaining = remaining.slice(1);
    }
    if (skipBytes > 0) remaining = [(remaining[0] as Buffer).subarray(skipBytes), ...remaining.slice(1)];
  }
}

/** Creates an empty journal file and makes its name durable. */
async function createJournalFile(dir: string, generation: number): Promise<fs.FileHandle> {
  const handle = await fs.open(path.join(dir, journalName(generation)), 'wx', 0o600);
  try {
    await syncDirectory(dir);
  } catch (err) {
    await handle.close();
    throw err;
  }
  return handle;
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
