// A burst of journal appends for test/mdm/journal.test.ts to kill with SIGKILL. It runs the
// built journal (dist/, so `npm run build` first) as a separate process, because only a
// real process can be killed mid-write.
//
//   node journal-writer.mjs DIR SEED INFLIGHT COMPACT_EVERY PAD_BYTES_MAX
//
// Opens the journal in DIR (state: { count }, records: { n, pad }), prints `ready COUNT`,
// then keeps INFLIGHT appends going, each the next n, and prints `n` once its append has
// resolved. With COMPACT_EVERY > 0, every COMPACT_EVERY-th record also starts a compaction
// with the state after every append called so far. With PAD_BYTES_MAX > 0 every record
// pads to between half of it and all of it (large writes, which a kill can cut short:
// Linux checks for a fatal signal between the pages of a write); with 0, most records are
// small and a few span pages. Runs until killed.
//
// Output goes out with fs.writeSync on fd 1 (never process.stdout, which is asynchronous on
// a pipe and would make libuv set the fd non-blocking): a printed number has reached the
// pipe before the next record is appended, so the test's bound on what may be on disk
// beyond the last printed number holds.

import * as fs from 'node:fs';
import { pino } from 'pino';
import { Journal } from '../../dist/mdm/journal.js';

const [dir, seedText, inflightText, compactEveryText, padBytesMaxText] = process.argv.slice(2);
const inflight = Number(inflightText);
const compactEvery = Number(compactEveryText);
const padBytesMax = Number(padBytesMaxText);
let random = Number(seedText) >>> 0;
/** xorshift32: sizes vary by seed, so records straddle pages differently in each round. */
function next() {
  random ^= random << 13;
  random >>>= 0;
  random ^= random >>> 17;
  random ^= random << 5;
  random >>>= 0;
  return random / 4294967296;
}

const log = pino({ level: 'warn' }, pino.destination({ dest: 2, sync: true }));
const { journal, snapshot, records } = await Journal.open(dir, { log, initialSnapshot: { count: 0 } });
let issued = snapshot.count + records.length;
fs.writeSync(1, `ready ${issued}\n`);

async function worker() {
  for (;;) {
    const n = ++issued;
    const padBytes =
      padBytesMax > 0 ? Math.floor(padBytesMax * (0.5 + next() / 2)) : next() < 0.05 ? 4096 + Math.floor(next() * 20_000) : Math.floor(next() * 300);
    await journal.append({ n, pad: 'p'.repeat(padBytes) });
    fs.writeSync(1, `${n}\n`);
    if (compactEvery > 0 && n % compactEvery === 0) await journal.compact({ count: issued });
  }
}

for (let index = 0; index < inflight; index++) {
  worker().catch((err) => {
    log.fatal({ err }, 'journal writer failed');
    process.exit(1);
  });
}
