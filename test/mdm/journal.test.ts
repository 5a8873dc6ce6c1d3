// Proves that the MDM's journal (src/mdm/journal.ts) gives back after a restart exactly
// what it acknowledged, whatever the crash:
//
// - round trips: records, compactions and their call order survive close and reopen;
// - a crash at each step of a compaction, made by leaving the directory as that step
//   leaves it (files built by the real journal), opens to the right generation;
// - a torn last record, cut at every byte, is dropped (and logged) and appends go on after
//   it; a power cut's torn batch (a hole, then intact records of the same batch) likewise;
// - damage that a crash cannot cause (a bad record before a later batch, a repeated record,
//   a damaged snapshot, a journal without its snapshot) refuses the open with
//   MB_ERR_JOURNAL_CORRUPT and leaves the files as they were;
// - a real failed write (the journal file is /dev/full: ENOSPC) or compaction (the
//   snapshot's temporary name is a directory: EISDIR) makes every later operation fail with
//   MB_ERR_JOURNAL_FAILED, and reopening goes on from the disk; bad appends are refused by
//   code and leave the journal usable;
// - concurrent appends share fdatasyncs (group commit), measured;
// - the real crash: a child process appends in a burst and is killed with SIGKILL at a
//   seeded random moment, three rounds each on one directory, for three kinds of burst:
//   small records with 8 in flight, the same with compactions in the burst, and records of
//   0.5-1 MiB with compactions (a kill cuts one of those short now and then: a real torn
//   tail, reported in the round's comment). After each kill the journal must hold every record
//   the child printed as acknowledged, in order, contiguous, and at most the ones in flight
//   beyond. The seed is printed; MESHBLOCK_SEED=n replays the kill moments (the timing of
//   the child's writes is not under the seed's control). The child runs dist/ (npm run
//   build first).

import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { pino, type Logger } from 'pino';
import t, { type Test } from 'tap';
import { mulberry32 } from '../../src/common/seeded-random.js';
import { Journal, type JournalCorruptError } from '../../src/mdm/journal.js';
import { nodeCommand, repoRoot } from '../helpers/processes.js';
import { journalRecordBytesMax } from '../../src/common/limits.js';

interface Change {
  n: number;
  pad?: string;
}

interface State {
  count: number;
}

const quietLog = pino({ level: 'silent' });

function openJournal(dir: string, log: Logger = quietLog, parseRecord?: (value: unknown) => Change) {
  return Journal.open<Change, State>(dir, { log, initialSnapshot: { count: 0 }, ...(parseRecord ? { parseRecord } : {}) });
}

/** A logger whose JSON lines the test can read back. */
function capturingLog(): { log: Logger; lines: () => Array<{ [key: string]: unknown }> } {
  let text = '';
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      text += chunk.toString();
      callback();
    },
  });
  return { log: pino({ level: 'info' }, stream), lines: () => text.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as { [key: string]: unknown }) };
}

/** Offsets of the frames in a journal file (each: u32 payload length, 12 more header bytes, payload). */
function frameOffsets(bytes: Buffer): number[] {
  const offsets: number[] = [];
  for (let offset = 0; offset < bytes.length; offset += 16 + bytes.readUInt32BE(offset)) offsets.push(offset);
  return offsets;
}

function numbers(records: Change[]): number[] {
  return records.map((record) => record.n);
}

function range(first: number, last: number): number[] {
  return Array.from({ length: last - first + 1 }, (_, index) => first + index);
}

function readDir(dir: string): Map<string, Buffer> {
  return new Map(fs.readdirSync(dir).map((name) => [name, fs.readFileSync(path.join(dir, name))]));
}

function writeDir(dir: string, files: Map<string, Buffer>): void {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir);
  for (const [name, bytes] of files) fs.writeFileSync(path.join(dir, name), bytes);
}

async function rejectsWithCode(t: Test, promise: Promise<unknown>, code: string, message: string): Promise<Error | undefined> {
  try {
    await promise;
  } catch (err) {
    t.equal((err as { code?: unknown }).code, code, message);
    return err as Error;
  }
  t.fail(`${message}: resolved`);
  return undefined;
}

t.test('round trip: every record comes back in order, and numbering goes on', async (t) => {
  const dir = t.testdir();
  const first = await openJournal(dir);
  t.same(first.snapshot, { count: 0 }, 'an empty directory starts from initialSnapshot');
  t.same(first.records, []);
  await first.journal.append({ n: 1 });
  await first.journal.appendMany([{ n: 2 }, { n: 3, pad: 'ünïcødé ✓' }]);
  await first.journal.appendMany([]);
  await Promise.all([first.journal.append({ n: 4 }), first.journal.append({ n: 5 })]);
  t.equal(first.journal.recordCount, 5);
  t.equal(first.journal.bytes, fs.statSync(path.join(dir, 'journal-0.log')).size, 'bytes is the size of the journal file');
  await first.journal.close();

  const second = await openJournal(dir);
  t.same(second.records, [{ n: 1 }, { n: 2 }, { n: 3, pad: 'ünïcødé ✓' }, { n: 4 }, { n: 5 }]);
  t.equal(second.journal.recordCount, 5);
  await second.journal.append({ n: 6 });
  await second.journal.close();
  const third = await openJournal(dir);
  t.same(numbers(third.records), range(1, 6));
  await third.journal.close();
});

t.test('compaction: reopen gives the snapshot and only the records after it, in call order', async (t) => {
  const dir = t.testdir();
  const { journal } = await openJournal(dir);
  // Not awaited one by one: operations take effect in call order.
  const done = [journal.append({ n: 1 }), journal.append({ n: 2 }), journal.compact({ count: 2 }), journal.append({ n: 3 })];
  t.equal(journal.recordCount, 1, 'recordCount counts from the last compaction');
  await Promise.all(done);
  await journal.close();
  t.same(fs.readdirSync(dir).sort(), ['journal-1.log', 'snapshot-1.snap'], 'generation 0 is gone');

  const parseRecord = (value: unknown): Change => {
    const record = value as Change;
    if (typeof record.n !== 'number') throw new Error('n is not a number');
    return { n: record.n, pad: 'parsed' };
  };
  const reopened = await openJournal(dir, quietLog, parseRecord);
  t.same(reopened.snapshot, { count: 2 });
  t.same(reopened.records, [{ n: 3, pad: 'parsed' }], 'parseRecord sees every record');
  await reopened.journal.compact({ count: 3 });
  await reopened.journal.compact({ count: 3 });
  await reopened.journal.append({ n: 4 });
  await reopened.journal.close();
  const last = await openJournal(dir);
  t.same(last.snapshot, { count: 3 });
  t.same(numbers(last.records), [4]);
  t.same(fs.readdirSync(dir).sort(), ['journal-3.log', 'snapshot-3.snap']);
  await last.journal.close();
});

t.test('a crash at each step of compaction opens to the right state', async (t) => {
  const root = t.testdir();
  const source = path.join(root, 'source');
  let opened = await openJournal(source);
  for (const n of [1, 2, 3]) await opened.journal.append({ n });
  await opened.journal.compact({ count: 3 });
  await opened.journal.appendMany([{ n: 4 }, { n: 5 }]);
  await opened.journal.close();
  const before = readDir(source);
  t.same([...before.keys()].sort(), ['journal-1.log', 'snapshot-1.snap']);
  opened = await openJournal(source);
  await opened.journal.compact({ count: 5 });
  await opened.journal.close();
  const newSnapshot = readDir(source).get('snapshot-2.snap') as Buffer;

  const old = { snapshot: { count: 3 }, records: [4, 5], files: ['journal-1.log', 'snapshot-1.snap'] };
  const compacted = { snapshot: { count: 5 }, records: [], files: ['journal-2.log', 'snapshot-2.snap'] };
  const with_ = (extra: Array<[string, Buffer]>, without: string[] = []): Map<string, Buffer> =>
    new Map([...before, ...extra].filter(([name]) => !without.includes(name)));
  const steps: Array<[string, Map<string, Buffer>, typeof old]> = [
    ['1. snapshot written halfway', with_([['snapshot-2.snap.tmp', newSnapshot.subarray(0, newSnapshot.length >> 1)]]), old],
    ['1. snapshot written and synced, not renamed', with_([['snapshot-2.snap.tmp', newSnapshot]]), old],
    ['2. renamed, no new journal yet', with_([['snapshot-2.snap', newSnapshot]]), compacted],
    ['3. new journal created', with_([['snapshot-2.snap', newSnapshot], ['journal-2.log', Buffer.alloc(0)]]), compacted],
    ['4. old journal deleted', with_([['snapshot-2.snap', newSnapshot], ['journal-2.log', Buffer.alloc(0)]], ['journal-1.log']), compacted],
    ['4. old snapshot deleted too', with_([['snapshot-2.snap', newSnapshot], ['journal-2.log', Buffer.alloc(0)]], ['journal-1.log', 'snapshot-1.snap']), compacted],
  ];
  const dir = path.join(root, 'crashed');
  for (const [step, files, expected] of steps) {
    writeDir(dir, files);
    const crashed = await openJournal(dir);
    t.same(crashed.snapshot, expected.snapshot, `${step}: snapshot`);
    t.same(numbers(crashed.records), expected.records, `${step}: records`);
    t.same(fs.readdirSync(dir).sort(), expected.files, `${step}: leftovers removed`);
    await crashed.journal.append({ n: 6 });
    await crashed.journal.close();
    const again = await openJournal(dir);
    t.same(numbers(again.records), [...expected.records, 6], `${step}: appends go on`);
    await again.journal.close();
  }
});

t.test('a torn last record, cut at every byte, is dropped and appending goes on', async (t) => {
  const root = t.testdir();
  const source = path.join(root, 'source');
  const { journal } = await openJournal(source);
  for (const n of [1, 2, 3, 4]) await journal.append({ n, pad: 'x'.repeat(n * 10) });
  await journal.append({ n: 5, pad: 'the last record, torn by the crash' });
  await journal.close();
  const whole = fs.readFileSync(path.join(source, 'journal-0.log'));
  const lastOffset = frameOffsets(whole)[4] as number;

  const dir = path.join(root, 'torn');
  let failures = 0;
  for (let cut = lastOffset; cut < whole.length; cut++) {
    writeDir(dir, new Map([['journal-0.log', whole.subarray(0, cut)]]));
    const capture = capturingLog();
    const torn = await openJournal(dir, capture.log);
    const warnings = capture.lines().filter((line) => line['level'] === 40);
    const ok =
      numbers(torn.records).join() === '1,2,3,4' &&
      fs.statSync(path.join(dir, 'journal-0.log')).size === lastOffset &&
      (cut === lastOffset
        ? warnings.length === 0
        : warnings.length === 1 && warnings[0]?.['droppedBytes'] === cut - lastOffset && warnings[0]?.['offsetBytes'] === lastOffset);
    await torn.journal.append({ n: 5, pad: 'appended after the tear' });
    await torn.journal.close();
    const again = await openJournal(dir);
    const okAgain = numbers(again.records).join() === '1,2,3,4,5' && again.records[4]?.pad === 'appended after the tear';
    await again.journal.close();
    if (!ok || !okAgain) {
      failures++;
      t.fail(`cut at ${cut}: records ${numbers(torn.records).join()}, warnings ${JSON.stringify(warnings)}, after append ${numbers(again.records).join()}`);
    }
  }
  t.equal(failures, 0, `cut at each of ${whole.length - lastOffset} offsets in the last record: the tail dropped and logged, appends go on`);
});

t.test('a power cut: zeros past the end, or a hole inside the last batch, are a torn tail', async (t) => {
  const root = t.testdir();
  const source = path.join(root, 'source');
  const { journal } = await openJournal(source);
  for (const n of [1, 2, 3, 4, 5]) await journal.append({ n });
  await journal.appendMany([{ n: 6 }, { n: 7, pad: 'lost in the power cut' }, { n: 8 }]);
  await journal.close();
  const whole = fs.readFileSync(path.join(source, 'journal-0.log'));
  const offsets = frameOffsets(whole);
  const dir = path.join(root, 'cut');

  writeDir(dir, new Map([['journal-0.log', Buffer.concat([whole, Buffer.alloc(4096)])]]));
  let opened = await openJournal(dir);
  t.same(numbers(opened.records), range(1, 8), 'zeros after the last record (size extended, data lost) are dropped');
  await opened.journal.close();

  // Record 7's payload never reached the disk, record 8 (same batch, a later page) did.
  const hole = Buffer.from(whole);
  hole.fill(0, (offsets[6] as number) + 16, offsets[7] as number);
  writeDir(dir, new Map([['journal-0.log', hole]]));
  opened = await openJournal(dir);
  t.same(numbers(opened.records), range(1, 6), 'a hole in the unacknowledged last batch drops the rest of that batch');
  t.equal(fs.statSync(path.join(dir, 'journal-0.log')).size, offsets[6], 'truncated at the hole');
  await opened.journal.close();

  // The same hole with a later batch after it: the batch was acknowledged, so this is damage.
  const { journal: more } = await openJournal(source);
  await more.append({ n: 9 });
  await more.close();
  const longer = fs.readFileSync(path.join(source, 'journal-0.log'));
  longer.fill(0, (offsets[6] as number) + 16, offsets[7] as number);
  writeDir(dir, new Map([['journal-0.log', longer]]));
  const err = await rejectsWithCode(t, openJournal(dir), 'MB_ERR_JOURNAL_CORRUPT', 'the same hole before a later batch refuses the open');
  t.equal((err as JournalCorruptError | undefined)?.offsetBytes, offsets[6], 'at the damaged record');
});

t.test('damage a crash cannot cause refuses the open and changes nothing', async (t) => {
  const root = t.testdir();
  const source = path.join(root, 'source');
  const { journal } = await openJournal(source);
  for (const n of range(1, 10)) await journal.append({ n, pad: 'abcdefgh' });
  await journal.close();
  const whole = fs.readFileSync(path.join(source, 'journal-0.log'));
  const offsets = frameOffsets(whole);
  const dir = path.join(root, 'damaged');

  const flipped = Buffer.from(whole);
  flipped[(offsets[2] as number) + 20] ^= 0x01;
  writeDir(dir, new Map([['journal-0.log', flipped]]));
  const err = await rejectsWithCode(t, openJournal(dir), 'MB_ERR_JOURNAL_CORRUPT', 'a flipped bit in record 3 of 10');
  t.equal((err as JournalCorruptError | undefined)?.offsetBytes, offsets[2], 'names the offset');
  t.equal((err as JournalCorruptError | undefined)?.file, path.join(dir, 'journal-0.log'), 'names the file');
  t.same(readDir(dir), new Map([['journal-0.log', flipped]]), 'the directory is untouched');

  const flippedHeader = Buffer.from(whole);
  flippedHeader[(offsets[2] as number) + 15] ^= 0x01;
  writeDir(dir, new Map([['journal-0.log', flippedHeader]]));
  await rejectsWithCode(t, openJournal(dir), 'MB_ERR_JOURNAL_CORRUPT', 'a flipped bit in a sequence number (covered by the checksum)');

  writeDir(dir, new Map([['journal-0.log', Buffer.concat([whole, whole.subarray(offsets[1], offsets[2])])]]));
  await rejectsWithCode(t, openJournal(dir), 'MB_ERR_JOURNAL_CORRUPT', 'an intact record out of sequence (record 2 again)');

  // Damage to the last record looks exactly like a torn write: it is dropped.
  const lastFlipped = Buffer.from(whole);
  lastFlipped[(offsets[9] as number) + 20] ^= 0x01;
  writeDir(dir, new Map([['journal-0.log', lastFlipped]]));
  const dropped = await openJournal(dir);
  t.same(numbers(dropped.records), range(1, 9), 'damage to the last record cannot be told from a tear: dropped');
  await dropped.journal.close();

  writeDir(dir, new Map([['journal-0.log', whole]]));
  await rejectsWithCode(
    t,
    openJournal(dir, quietLog, () => {
      throw new Error('not a change this version knows');
    }),
    'MB_ERR_JOURNAL_CORRUPT',
    'a record parseRecord refuses',
  );

  const compactedSource = path.join(root, 'compacted');
  const compacted = await openJournal(compactedSource);
  await compacted.journal.append({ n: 1 });
  await compacted.journal.compact({ count: 1 });
  await compacted.journal.close();
  const files = readDir(compactedSource);
  const snapshot = Buffer.from(files.get('snapshot-1.snap') as Buffer);
  snapshot[snapshot.length - 2] ^= 0x01;
  writeDir(dir, new Map([...files, ['snapshot-1.snap', snapshot]]));
  const snapshotErr = await rejectsWithCode(t, openJournal(dir), 'MB_ERR_JOURNAL_CORRUPT', 'a damaged snapshot');
  t.equal((snapshotErr as JournalCorruptError | undefined)?.file, path.join(dir, 'snapshot-1.snap'), 'names the snapshot');

  writeDir(dir, new Map([['journal-1.log', files.get('journal-1.log') as Buffer]]));
  await rejectsWithCode(t, openJournal(dir), 'MB_ERR_JOURNAL_CORRUPT', 'a journal whose snapshot is missing');
  t.same([...readDir(dir).keys()], ['journal-1.log'], 'nothing created or deleted');
});

t.test('bad appends are refused by code and leave the journal usable', async (t) => {
  const dir = t.testdir();
  const { journal } = await openJournal(dir);
  await rejectsWithCode(t, journal.append({ n: 1, pad: 'x'.repeat(journalRecordBytesMax) }), 'MB_ERR_OUT_OF_RANGE', 'a record above journalRecordBytesMax');
  await rejectsWithCode(t, journal.append({ n: 1n } as unknown as Change), 'MB_ERR_INVALID_ARGUMENT', 'a record JSON cannot hold');
  await rejectsWithCode(t, journal.append(undefined as unknown as Change), 'MB_ERR_INVALID_ARGUMENT', 'undefined');

  // Four records of 15 MiB wait for the disk; a fifth would pass journalPendingBytesMax.
  const big = 'b'.repeat(15 * 1024 * 1024);
  const accepted = [1, 2, 3, 4].map((n) => journal.append({ n, pad: big }));
  await rejectsWithCode(t, journal.append({ n: 5, pad: big }), 'MB_ERR_JOURNAL_BUSY', 'past journalPendingBytesMax');
  await Promise.all(accepted);
  await journal.append({ n: 5 });
  await journal.close();
  await rejectsWithCode(t, journal.append({ n: 6 }), 'MB_ERR_JOURNAL_CLOSED', 'append after close');
  await rejectsWithCode(t, journal.compact({ count: 5 }), 'MB_ERR_JOURNAL_CLOSED', 'compact after close');
  await journal.close();

  const reopened = await openJournal(dir);
  t.same(numbers(reopened.records), range(1, 5), 'refused appends took no sequence numbers');
  await reopened.journal.close();
});

t.test('a failed write (ENOSPC) makes the journal refuse everything until reopened', async (t) => {
  if (!fs.existsSync('/dev/full')) {
    t.skip('no /dev/full here', () => undefined);
    return;
  }
  const dir = t.testdir();
  // A real ENOSPC without a full file system: the journal file is /dev/full.
  fs.symlinkSync('/dev/full', path.join(dir, 'journal-0.log'));
  const capture = capturingLog();
  const { journal } = await openJournal(dir, capture.log);
  const first = journal.append({ n: 1 });
  const second = journal.append({ n: 2 });
  const err = await rejectsWithCode(t, first, 'MB_ERR_JOURNAL_FAILED', 'the failing append');
  t.equal((err?.cause as { code?: unknown } | undefined)?.code, 'ENOSPC', 'with the real cause');
  t.match(err?.message, /unusable/, 'saying the journal is unusable');
  await rejectsWithCode(t, second, 'MB_ERR_JOURNAL_FAILED', 'the append queued behind it');
  await rejectsWithCode(t, journal.append({ n: 3 }), 'MB_ERR_JOURNAL_FAILED', 'a later append');
  await rejectsWithCode(t, journal.compact({ count: 0 }), 'MB_ERR_JOURNAL_FAILED', 'a later compaction');
  t.equal(capture.lines().filter((line) => line['level'] === 50).length, 1, 'the cause is logged once');
  await journal.close();
});

t.test('a failed compaction makes the journal refuse everything; reopening goes on from the disk', async (t) => {
  const dir = t.testdir();
  const { journal } = await openJournal(dir);
  await journal.appendMany([{ n: 1 }, { n: 2 }]);
  // A real failure: the snapshot's temporary name is taken by a directory (EISDIR).
  fs.mkdirSync(path.join(dir, 'snapshot-1.snap.tmp'));
  const err = await rejectsWithCode(t, journal.compact({ count: 2 }), 'MB_ERR_JOURNAL_FAILED', 'the compaction');
  t.equal((err?.cause as { code?: unknown } | undefined)?.code, 'EISDIR', 'with the real cause');
  await rejectsWithCode(t, journal.append({ n: 3 }), 'MB_ERR_JOURNAL_FAILED', 'a later append');
  await journal.close();
  fs.rmdirSync(path.join(dir, 'snapshot-1.snap.tmp'));
  const reopened = await openJournal(dir);
  t.same(reopened.snapshot, { count: 0 });
  t.same(numbers(reopened.records), [1, 2], 'the records from before the failed compaction');
  await reopened.journal.close();
});

t.test('concurrent appends share fdatasyncs (group commit)', async (t) => {
  const dir = t.testdir();
  const { journal } = await openJournal(dir);
  const appendCount = 200;
  let startedMs = performance.now();
  for (const n of range(1, appendCount)) await journal.append({ n });
  const sequentialMs = performance.now() - startedMs;
  t.equal(journal.syncCount, appendCount, 'one fdatasync per append awaited in turn');
  startedMs = performance.now();
  await Promise.all(range(appendCount + 1, 2 * appendCount).map((n) => journal.append({ n })));
  const concurrentMs = performance.now() - startedMs;
  const concurrentSyncs = journal.syncCount - appendCount;
  t.ok(concurrentSyncs <= 2, `${appendCount} concurrent appends took ${concurrentSyncs} fdatasyncs`);
  t.comment(`${appendCount} appends: ${sequentialMs.toFixed(1)} ms one at a time, ${concurrentMs.toFixed(1)} ms concurrently (${concurrentSyncs} fdatasyncs)`);
  await journal.close();
  const reopened = await openJournal(dir);
  t.same(numbers(reopened.records), range(1, 2 * appendCount), 'all in order');
  await reopened.journal.close();
});


interface Writer {
  readyCount: number;
  /** Resolves once the writer has printed its first acknowledgement: the burst is going. */
  going: Promise<unknown>;
  /** SIGKILL, then every number the writer printed as acknowledged. */
  kill(): Promise<{ acked: number[]; signal: NodeJS.Signals | null; stderr: string }>;
}

interface Burst {
  inflight: number;
  compactEvery: number;
  /** 0: mostly small records; else records of half to all of this many bytes. */
  padBytesMax: number;
  /** The kill comes 0 to this many ms after the first acknowledgement (seeded). */
  killAfterMsMax: number;
}

async function startWriter(t: Test, dir: string, seed: number, burst: Burst): Promise<Writer> {
  // The child runs plain dist/, without tap's loader (nodeCommand: deleting NODE_OPTIONS from
  // the env is not enough, tap adds it back to every spawn).
  const script = path.join(repoRoot, 'test/helpers/journal-writer.mjs');
  const args = [script, dir, String(seed), String(burst.inflight), String(burst.compactEvery), String(burst.padBytesMax)];
  const child = spawn(...nodeCommand(args), { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  const closed = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  const output = (pattern: RegExp): Promise<RegExpExecArray> =>
    new Promise((resolve, reject) => {
      const onData = (): void => {
        const match = pattern.exec(stdout);
        if (match === null) return;
        child.stdout.off('data', onData);
        resolve(match);
      };
      child.stdout.on('data', onData);
      onData();
      void closed.then(([code]) => reject(new Error(`journal writer exited ${code} before printing ${pattern}:\n${stderr}`)));
    });
  const readyCount = Number((await output(/^ready (\d+)\n/))[1]);
  return {
    readyCount,
    going: output(/^ready \d+\n\d+\n/),
    kill: async () => {
      child.kill('SIGKILL');
      const [, signal] = await closed;
      const acked = stdout
        .split('\n')
        .slice(1)
        .filter((line) => line !== '')
        .map(Number);
      return { acked, signal, stderr };
    },
  };
}

t.test('kill -9 during a burst of appends and compactions loses nothing acknowledged', async (t) => {
  const built = path.join(repoRoot, 'dist/mdm/journal.js');
  const source = path.join(repoRoot, 'src/mdm/journal.ts');
  if (!fs.existsSync(built) || fs.statSync(built).mtimeMs < fs.statSync(source).mtimeMs) {
    t.fail('dist/mdm/journal.js is missing or older than src/mdm/journal.ts: run npm run build first');
    return;
  }
  const firstSeed = Number(process.env['MESHBLOCK_SEED'] ?? crypto.randomInt(2 ** 31));
  t.comment(`seed ${firstSeed} (MESHBLOCK_SEED=${firstSeed} replays)`);
  const rounds = 3;
  const root = t.testdir();
  const bursts: Burst[] = [
    { inflight: 8, compactEvery: 0, padBytesMax: 0, killAfterMsMax: 400 },
    { inflight: 8, compactEvery: 37, padBytesMax: 0, killAfterMsMax: 400 },
    // Records of 0.5 to 1 MiB: a kill now and then cuts one short, a real torn tail.
    { inflight: 4, compactEvery: 3, padBytesMax: 1024 * 1024, killAfterMsMax: 600 },
  ];
  for (const [index, burst] of bursts.entries()) {
    const { inflight, compactEvery } = burst;
    const name = `${inflight} in flight, compact every ${compactEvery}, pad ${burst.padBytesMax === 0 ? 'small' : `up to ${burst.padBytesMax}`}`;
    const dir = path.join(root, `burst-${index}`);
    let count = 0;
    for (let round = 0; round < rounds; round++) {
      const seed = firstSeed + index * rounds + round;
      const killAfterMs = Math.floor(mulberry32(seed)() * burst.killAfterMsMax);
      const writer = await startWriter(t, dir, seed, burst);
      t.equal(writer.readyCount, count, `${name}, round ${round}: the writer starts from what the last round left`);
      await writer.going;
      await delay(killAfterMs);
      const { acked, signal, stderr } = await writer.kill();
      t.equal(signal, 'SIGKILL', `round ${round}: the writer ran until killed${stderr === '' ? '' : `: ${stderr}`}`);
      t.same(acked, range(count + 1, count + acked.length), `round ${round}: acknowledgements came in order`);

      const capture = capturingLog();
      const { journal, snapshot, records } = await openJournal(dir, capture.log);
      await journal.close();
      const torn = capture.lines().find((line) => line['msg'] === 'dropped a torn record at the end of the journal');
      const final = snapshot.count + records.length;
      const lastAcked = count + acked.length;
      t.same(numbers(records), range(snapshot.count + 1, final), `round ${round}: the records continue the snapshot without a gap`);
      t.ok(records.every((record) => /^p*$/.test(record.pad ?? '')), `round ${round}: every record whole`);
      t.ok(final >= lastAcked, `round ${round}: every acknowledged record is there (${final} >= ${lastAcked})`);
      t.ok(final <= lastAcked + inflight, `round ${round}: at most the ${inflight} in flight beyond (${final} <= ${lastAcked} + ${inflight})`);
      t.comment(
        `${name}, round ${round}: seed ${seed}, killed ${killAfterMs} ms after the first acknowledgement; ` +
          `${acked.length} acknowledged, ${final - lastAcked} in flight survived; snapshot at ${snapshot.count}, ${records.length} records after it; ` +
          (torn ? `a torn tail of ${String(torn['droppedBytes'])} bytes dropped` : 'no torn tail'),
      );
      count = final;
    }
    if (compactEvery > 0) t.ok(fs.readdirSync(dir).some((file) => /^snapshot-\d+\.snap$/.test(file)), 'compactions happened in the burst');
  }
});
