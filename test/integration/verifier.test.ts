// Proves that the verifying NBD client (test/helpers/verifier.ts) can be trusted by the
// fault tests that use it, against the real `meshblock nbd serve` process on a sparse file:
//
// - on a healthy server it reports no error and no wrong byte, and its read-back of the
//   whole region (verifyAll) agrees;
// - when the server is killed with SIGKILL and started again on the same port and file, it
//   reconnects, re-sends what was in flight, and still finds every acknowledged write (a
//   killed process leaves its writes in the page cache, so nothing acknowledged may vanish);
// - it can fail: blocks changed behind the server's back (an older version of the block put
//   back, random bytes, another block's data, bytes in a block never written) are reported,
//   each by block, and nothing else is;
// - a server that does not come back ends the run with a fatal error in its stats, within
//   reconnectTimeoutMs, and nothing is thrown.
//
// Randomized: every writer's seed is printed; SEED=n replays the first one.

import * as fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { sparseFile } from '../helpers/files.js';
import { startNbdServe, type ServeHandle } from '../helpers/processes.js';
import { blockContent, summary, VerifyingWriter, type VerifierOptions, type VerifierStats } from '../helpers/verifier.js';

const MiB = 1024 * 1024;
const exportBytes = 64 * MiB;
const blockBytes = 4096;

let nextSeed = process.env['SEED'] !== undefined ? Number(process.env['SEED']) : Math.floor(Math.random() * 2 ** 31);

/** A writer on `server`, destroyed in teardown; its progress lines become test comments. */
function newWriter(t: Test, server: { host: string; port: number }, options: Partial<VerifierOptions> & { regionBytes: number }): VerifyingWriter {
  const writer = new VerifyingWriter({
    host: server.host,
    port: server.port,
    seed: nextSeed++,
    log: (line) => t.comment(line),
    ...options,
  });
  t.teardown(() => writer.destroy());
  return writer;
}

function assertClean(t: Test, stats: VerifierStats, what: string): void {
  t.equal(stats.fatal, null, `${what}: no fatal error`);
  t.equal(stats.ioErrors, 0, `${what}: no error replies`, { details: stats.ioErrorDetails });
  t.equal(stats.verifyFailureCount, 0, `${what}: no wrong data`, { failures: stats.verifyFailures });
  t.equal(stats.protocolErrors, 0, `${what}: no protocol errors`);
}

function serve(t: Test, file: string, port = 0): Promise<ServeHandle> {
  return startNbdServe(t, ['--file', file, '--listen', `127.0.0.1:${port}`]);
}

t.test('a healthy server: no error, no wrong byte, and the read-back agrees', async (t) => {
  const file = sparseFile(t.testdir(), 'healthy.img', exportBytes);
  const server = await serve(t, file);
  // 8 MiB of the 64: small enough that blocks are written, read and rewritten many times.
  const regionBytes = 8 * MiB;
  const writer = newWriter(t, server, { regionBytes, flushEveryMs: 200 });
  await writer.start();
  t.ok(await writer.waitForWrites(100), 'writes are acknowledged');
  await sleep(2000);
  const stats = await writer.stop();
  t.comment(summary(stats));
  assertClean(t, stats, 'run');
  t.ok(stats.writes > 0 && stats.reads > 0 && stats.flushes > 0, 'it wrote, read and flushed');
  t.equal(stats.bytesWritten, stats.writes * blockBytes);
  t.equal(stats.reconnects, 0);

  const verified = await writer.verifyAll();
  assertClean(t, verified, 'verifyAll');
  t.equal(verified.verifiedBlocks, regionBytes / blockBytes, 'every block of the region was read back');
});

t.test('SIGKILL and restart of the server: it reconnects and loses nothing acknowledged', async (t) => {
  const file = sparseFile(t.testdir(), 'restart.img', exportBytes);
  let server = await serve(t, file);
  const port = server.port;
  const writer = newWriter(t, server, { regionBytes: 16 * MiB, depth: 16, reconnectTimeoutMs: 15_000, requestTimeoutMs: 5_000 });
  await writer.start();
  for (let round = 1; round <= 2; round++) {
    t.ok(await writer.waitForWrites(writer.stats().writes + 300), `round ${round}: writing`);
    await server.kill();
    t.comment(`round ${round}: server killed after ${writer.stats().writes} acknowledged writes`);
    // Down long enough for the writer to see refused connections and back off.
    await sleep(300);
    server = await serve(t, file, port);
    t.ok(await writer.waitForWrites(writer.stats().writes + 300), `round ${round}: writing again after the restart`);
  }
  const stats = await writer.stop();
  t.comment(summary(stats));
  assertClean(t, stats, 'run');
  t.ok(stats.reconnects >= 2, 'it reconnected after each kill');

  // A server that was never told to flush, killed twice: the page cache still has it all.
  const verified = await writer.verifyAll();
  assertClean(t, verified, 'verifyAll');
});

t.test('a server that stalls (SIGSTOP): requests time out, and it reconnects once the server resumes', async (t) => {
  const file = sparseFile(t.testdir(), 'stall.img', exportBytes);
  const server = await serve(t, file);
  const pid = server.process.pid as number;
  const writer = newWriter(t, server, { regionBytes: 16 * MiB, requestTimeoutMs: 500, reconnectTimeoutMs: 15_000 });
  await writer.start();
  t.ok(await writer.waitForWrites(300), 'writing');
  process.kill(pid, 'SIGSTOP');
  // Teardown's SIGKILL ends a stopped process too; this only matters if an assertion throws.
  t.teardown(() => process.kill(pid, 'SIGCONT'));
  t.ok(await writer.waitUntil((progress) => progress.requestTimeouts >= 1, 10_000), 'a request timed out');
  // The stalled server still completes TCP handshakes (its backlog): connection attempts
  // must time out in the NBD handshake, not only in connect().
  await sleep(1000);
  process.kill(pid, 'SIGCONT');
  t.ok(await writer.waitForWrites(writer.stats().writes + 300), 'writing again after the stall');
  const stats = await writer.stop();
  t.comment(summary(stats));
  assertClean(t, stats, 'run');
  t.ok(stats.reconnects >= 1, 'it reconnected');
  assertClean(t, await writer.verifyAll(), 'verifyAll');
});

t.test('blocks changed behind the server are reported, each by block', async (t) => {
  const file = sparseFile(t.testdir(), 'corrupt.img', exportBytes);
  const server = await serve(t, file);
  // 512 blocks and a few hundred writes: some blocks are rewritten, many are never written.
  const regionBytes = 2 * MiB;
  const blockCount = regionBytes / blockBytes;
  const writer = newWriter(t, server, { regionBytes });
  await writer.start();
  const rewritten = (): number | undefined => writer.writtenBlocks().find((blockIndex) => writer.blockState(blockIndex).ackedVersion >= 2);
  t.ok(await writer.waitForWrites(300), 'writing');
  for (let tries = 0; rewritten() === undefined && tries < 100; tries++) await writer.waitForWrites(writer.stats().writes + 10);
  const stats = await writer.stop();
  t.comment(summary(stats));
  assertClean(t, stats, 'run before the damage');

  const written = writer.writtenBlocks();
  const neverWritten = Array.from({ length: blockCount }, (_, blockIndex) => blockIndex).filter((blockIndex) => !written.includes(blockIndex));
  const staleBlock = rewritten();
  if (staleBlock === undefined || neverWritten.length === 0) throw new Error(`no rewritten or no unwritten block among ${written.length} written`);
  const [randomBlock, misplacedBlock, sourceBlock] = written.filter((blockIndex) => blockIndex !== staleBlock);
  const zeroBlock = neverWritten[0] as number;
  if (randomBlock === undefined || misplacedBlock === undefined || sourceBlock === undefined) throw new Error('too few written blocks');

  const staleVersion = writer.blockState(staleBlock).ackedVersion - 1;
  const fd = fs.openSync(file, 'r+');
  try {
    const put = (blockIndex: number, data: Buffer): void => {
      fs.writeSync(fd, data, 0, blockBytes, blockIndex * blockBytes);
    };
    const source = Buffer.alloc(blockBytes);
    fs.readSync(fd, source, 0, blockBytes, sourceBlock * blockBytes);
    put(staleBlock, blockContent(writer.seed, staleBlock, staleVersion, blockBytes)); // a lost write
    put(randomBlock, Buffer.from(Array.from({ length: blockBytes }, (_, index) => (index * 131 + 7) & 0xff)));
    put(misplacedBlock, source); // a write that went to the wrong offset
    put(zeroBlock, Buffer.alloc(blockBytes, 0xa5)); // data where nothing was written
  } finally {
    fs.closeSync(fd);
  }

  const verified = await writer.verifyAll();
  t.equal(verified.fatal, null);
  t.equal(verified.ioErrors, 0);
  t.equal(verified.verifiedBlocks, blockCount);
  t.equal(verified.verifyFailureCount, 4, 'exactly the four damaged blocks fail');
  const byBlock = new Map(verified.verifyFailures.map((failure) => [failure.blockIndex, failure]));
  t.same([...byBlock.keys()].sort((a, b) => a - b), [staleBlock, randomBlock, misplacedBlock, zeroBlock].sort((a, b) => a - b), 'named by block');
  t.match(byBlock.get(staleBlock), { phase: 'verify', seenVersion: staleVersion, ackedVersion: staleVersion + 1 }, 'an older version is a lost write');
  t.match(byBlock.get(randomBlock), { seen: /garbage/, seenVersion: null });
  t.match(byBlock.get(misplacedBlock), { seen: new RegExp(`misplaced: holds block ${sourceBlock}'s`) });
  t.match(byBlock.get(zeroBlock), { expected: 'zeros', ackedVersion: 0, seen: /garbage/ });
});

t.test('a server that does not come back: a fatal error in the stats, nothing thrown', async (t) => {
  const file = sparseFile(t.testdir(), 'gone.img', exportBytes);
  const server = await serve(t, file);
  const writer = newWriter(t, server, { regionBytes: 4 * MiB, reconnectTimeoutMs: 1000, requestTimeoutMs: 2000 });
  await writer.start();
  t.ok(await writer.waitForWrites(100), 'writing');
  await server.kill();
  // stop() drains: the requests in flight wait for a reconnection that never comes.
  const stats = await writer.stop();
  t.comment(summary(stats));
  t.match(stats.fatal, /could not reconnect to 127\.0\.0\.1:\d+ within 1000 ms/);
  t.equal(stats.ioErrors, 0, 'a lost connection is not an error reply');
  t.equal(stats.verifyFailureCount, 0);
  t.equal(await writer.waitForWrites(stats.writes + 1, 100), false, 'waiting for progress on a failed writer says no');

  // Nothing listens: start() resolves, and says why in the stats.
  const late = newWriter(t, server, { regionBytes: 4 * MiB, reconnectTimeoutMs: 300 });
  await late.start();
  t.match(late.stats().fatal, /could not connect/);
  const verified = await late.verifyAll();
  t.match(verified.fatal, /could not connect/);
  t.equal(verified.verifiedBlocks, 0);
});
