// Proves the rebuild cursor store on a real directory: cursors survive reopening, saves made
// in a burst coalesce into at most two file writes (one in flight, one carrying everything
// after it), a failed write is reported with a stable code and does not wedge later saves,
// old data dirs' cursors (from the SDS state file) are used until the cursor file exists,
// a damaged file is treated as "no cursors" (a job then copies from its start), and no
// synchronous fs call is made by the store: every *Sync function of node:fs is wrapped
// (and the wrapping itself is checked to catch a call) while the store opens and saves.

import * as fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import * as path from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import { RebuildCursors, rebuildCursorsFileName } from '../../src/sds/rebuild-cursors.js';

const log = pino({ level: 'silent' });
const jobKey = (pgIndex: number): string => `00000000000000a1/${pgIndex}/00000000000000c3`;
const chunkName = (chunkIndex: number): string => `00000000000000a17777000011112222:${chunkIndex}:0`;

function readFile(dir: string): unknown {
  return JSON.parse(fs.readFileSync(path.join(dir, rebuildCursorsFileName), 'utf8'));
}

t.test('cursors survive reopening; deleting one is saved too', async (t) => {
  const dir = t.testdir();
  const cursors = await RebuildCursors.open(dir, {}, log);
  t.equal(cursors.get(jobKey(0)), undefined, 'a fresh data dir has no cursors');
  await cursors.set(jobKey(0), chunkName(64));
  await cursors.set(jobKey(1), chunkName(128));
  t.same(readFile(dir), { version: 1, cursors: { [jobKey(0)]: chunkName(64), [jobKey(1)]: chunkName(128) } }, 'the file holds both cursors once set() resolves');
  await cursors.delete(jobKey(0));
  const reopened = await RebuildCursors.open(dir, {}, log);
  t.same(reopened.entries(), { [jobKey(1)]: chunkName(128) }, 'reopened: the deleted cursor is gone, the other kept');
  t.notOk(fs.existsSync(path.join(dir, `${rebuildCursorsFileName}.tmp`)), 'no temporary file is left behind');
});

t.test('a burst of saves coalesces into at most two writes, ending with the last values', async (t) => {
  const dir = t.testdir();
  const cursors = await RebuildCursors.open(dir, {}, log);
  const saves: Array<Promise<void>> = [];
  for (let step = 1; step <= 1000; step++) saves.push(cursors.set(jobKey(step % 8), chunkName(step)));
  await Promise.all(saves);
  t.ok(cursors.writeCount <= 2, `1000 saves took ${cursors.writeCount} file writes`);
  t.ok(cursors.writeCount >= 1, 'and at least one');
  const expected = Object.fromEntries(Array.from({ length: 8 }, (_, pgIndex) => [jobKey(pgIndex), chunkName(1000 - ((1000 - pgIndex) % 8))]));
  t.same((readFile(dir) as { cursors: unknown }).cursors, expected, 'the file holds the last cursor of every job');
  // A save made while another write runs waits for the write after it, not for nothing.
  const writesBefore = cursors.writeCount;
  const first = cursors.set(jobKey(0), chunkName(2000));
  const second = cursors.set(jobKey(0), chunkName(2001));
  await first;
  await second;
  t.equal(cursors.writeCount - writesBefore, 2, 'a change during a write gets a write of its own');
  t.equal((readFile(dir) as { cursors: Record<string, string> }).cursors[jobKey(0)], chunkName(2001), 'the later value is the one on disk');
});

t.test('a failed save rejects with a stable code, and later saves still work', async (t) => {
  const dir = t.testdir();
  const dataDir = path.join(dir, 'sds-data');
  fs.mkdirSync(dataDir);
  const cursors = await RebuildCursors.open(dataDir, {}, log);
  fs.rmSync(dataDir, { recursive: true });
  await t.rejects(cursors.set(jobKey(0), chunkName(1)), { code: 'MB_ERR_REBUILD_CURSORS_WRITE' }, 'the data dir is gone: the save fails');
  fs.mkdirSync(dataDir);
  await cursors.set(jobKey(0), chunkName(2));
  t.same(readFile(dataDir), { version: 1, cursors: { [jobKey(0)]: chunkName(2) } }, 'the next save lands');
});

t.test("an old data dir's cursors (in the state file) are used until the cursor file exists", async (t) => {
  const dir = t.testdir();
  const legacy = { [jobKey(3)]: chunkName(7) };
  const cursors = await RebuildCursors.open(dir, legacy, log);
  t.equal(cursors.get(jobKey(3)), chunkName(7), 'read from the state file when there is no cursor file');
  t.same(readFile(dir), { version: 1, cursors: legacy }, 'and moved into a cursor file at once');
  await cursors.set(jobKey(4), chunkName(9));
  t.same(readFile(dir), { version: 1, cursors: { [jobKey(3)]: chunkName(7), [jobKey(4)]: chunkName(9) } }, 'later saves keep them');
  await cursors.delete(jobKey(3));
  const reopened = await RebuildCursors.open(dir, legacy, log);
  t.equal(reopened.get(jobKey(3)), undefined, 'once the cursor file exists, the stale state-file cursor is ignored');
});

t.test('a damaged cursor file means no cursors, not a refusal to start', async (t) => {
  const dir = t.testdir({ [rebuildCursorsFileName]: '{"version":1,"cursors":{"a":' });
  const cursors = await RebuildCursors.open(dir, { [jobKey(0)]: chunkName(1) }, log);
  t.same(cursors.entries(), {}, 'no cursors (and not the state file ones: the cursor file was written after them)');
  const wrongVersion = t.testdir({ [rebuildCursorsFileName]: '{"version":2,"cursors":{}}' });
  t.same((await RebuildCursors.open(wrongVersion, {}, log)).entries(), {}, 'an unknown version is not trusted either');
});

t.test('the store makes no synchronous fs call', async (t) => {
  const dir = t.testdir();
  // The CommonJS object behind node:fs; syncBuiltinESMExports() carries changes to the ESM view.
  const fsModule = (fs as unknown as { default: Record<string, unknown> }).default;
  const calls: string[] = [];
  const originals = new Map<string, (...args: unknown[]) => unknown>();
  for (const name of Object.keys(fsModule)) {
    const original = fsModule[name];
    if (!name.endsWith('Sync') || typeof original !== 'function') continue;
    originals.set(name, original as (...args: unknown[]) => unknown);
    fsModule[name] = function (this: unknown, ...args: unknown[]): unknown {
      // Only calls made from the store count: tap and the loader may use fs too.
      if (new Error().stack?.includes('rebuild-cursors.ts') === true) calls.push(name);
      return (original as (...args: unknown[]) => unknown).apply(this, args);
    };
  }
  syncBuiltinESMExports();
  const restore = (): void => {
    for (const [name, original] of originals) fsModule[name] = original;
    syncBuiltinESMExports();
  };
  t.teardown(restore);
  t.ok(originals.has('fsyncSync') && originals.has('writeFileSync') && originals.has('renameSync'), 'the sync calls that matter are wrapped');

  const cursors = await RebuildCursors.open(dir, { [jobKey(9)]: chunkName(1) }, log);
  const saves: Array<Promise<void>> = [];
  for (let step = 0; step < 100; step++) saves.push(cursors.set(jobKey(step % 4), chunkName(step)));
  await Promise.all(saves);
  await cursors.delete(jobKey(0));
  await cursors.settled();
  await RebuildCursors.open(dir, {}, log);
  t.same(calls, [], 'no *Sync call from the cursor store while it opened, saved and deleted');

  // The wrapping catches a call when there is one (from a frame this file's name matches).
  const probe = { 'rebuild-cursors.ts': (): boolean => fs.existsSync(dir) };
  Object.defineProperty(probe['rebuild-cursors.ts'], 'name', { value: 'rebuild-cursors.ts' });
  probe['rebuild-cursors.ts']();
  t.same(calls, ['existsSync'], 'the spy sees a *Sync call made from a frame named like the store');
  restore();
});
