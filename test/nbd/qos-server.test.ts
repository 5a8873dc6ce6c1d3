// Proves that a bandwidth limit holds for real NBD clients: the real NbdServer, in process,
// serves a file (FileBackend) through a QosBackend, and libnbd's nbdcopy (four connections,
// multi-conn, 64 requests in flight) and qemu-io drive it over TCP on loopback. The limiter
// runs on the real clock, so the bounds are a few percent plus the programs' start-up time.
// - nbdcopy reading 24 MiB at 8 MiB/s takes the time the limit says (its four connections
//   share the one limiter), while unlimited it takes a fraction of that;
// - qemu-io's sequential 2 MiB writes at 8 MiB/s: each waits out the one before (debt rule);
// - raising the limit while nbdcopy runs speeds the open connections up at once.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { StaticExports } from '../../src/nbd/exports.js';
import { FileBackend } from '../../src/nbd/file-backend.js';
import { QosBackend, QosLimiter, qosUnlimited, type QosLimits } from '../../src/nbd/qos.js';
import { NbdServer } from '../../src/nbd/server.js';
import { run } from '../helpers/processes.js';

const log = pino({ level: process.env['TEST_LOG_LEVEL'] ?? 'silent' });
const MiB = 1024 * 1024;
const fileBytes = 24 * MiB;

/** A file of `fileBytes` random bytes (no holes: nbdcopy would skip them) served through `limiter`. */
async function serve(t: Test, limiter: QosLimiter): Promise<string> {
  const file = path.join(t.testdir(), 'disk.img');
  fs.writeFileSync(file, randomBytes(fileBytes));
  const backend = await FileBackend.open(file, { readOnly: false, log });
  const server = new NbdServer({ exports: new StaticExports([{ name: 'disk', description: 'limited disk', backend: new QosBackend(backend, limiter) }]), tls: { mode: 'off', secureContext: null }, log });
  const bound = await server.listenTcp('127.0.0.1', 0);
  t.teardown(async () => {
    limiter.release();
    await server.close();
    await backend.close();
  });
  return `nbd://127.0.0.1:${bound.port}/disk`;
}

const limitsOf = (partial: Partial<QosLimits>): QosLimits => ({ ...qosUnlimited, ...partial });

/** Runs the program and resolves to its run time in seconds; a failure fails the test. */
async function timedRun(t: Test, command: string, args: string[]): Promise<number> {
  const startedMs = performance.now();
  const result = await run(command, args, { timeoutMs: 60_000 });
  const seconds = (performance.now() - startedMs) / 1000;
  t.equal(result.code, 0, `${command} succeeded ${result.stderr}`);
  return seconds;
}

t.test('nbdcopy over four connections gets 8 MiB/s, not more, and far more without the limit', async (t) => {
  const limiter = new QosLimiter(limitsOf({ bandwidthLimitKbps: 8 * 1024 }));
  const uri = await serve(t, limiter);
  const seconds = await timedRun(t, 'nbdcopy', ['--connections=4', '--requests=16', uri, 'null:']);
  // Everything but the bucket it started with (50 ms of the rate) had to be earned.
  const expectedSeconds = (fileBytes - 0.05 * 8 * MiB) / (8 * MiB);
  t.ok(seconds >= expectedSeconds * 0.97 && seconds <= expectedSeconds * 1.1 + 0.3, `24 MiB in ${seconds.toFixed(2)} s (the limit says ${expectedSeconds.toFixed(2)} s)`);
  const stats = limiter.stats();
  t.equal(stats.bytes, fileBytes, 'every byte read went through the one shared limiter');
  t.ok(stats.throttledRequests > stats.requests / 2, `most requests waited (${stats.throttledRequests} of ${stats.requests})`);
  t.equal(stats.waiting, 0, 'none is left waiting');

  limiter.setLimits(qosUnlimited);
  const unlimitedSeconds = await timedRun(t, 'nbdcopy', ['--connections=4', '--requests=16', uri, 'null:']);
  t.ok(unlimitedSeconds < expectedSeconds / 2, `unlimited, the same copy takes ${unlimitedSeconds.toFixed(2)} s`);
});

t.test('qemu-io: sequential 2 MiB writes at 8 MiB/s each wait out the one before', async (t) => {
  const limiter = new QosLimiter(limitsOf({ bandwidthLimitKbps: 8 * 1024 }));
  const uri = await serve(t, limiter);
  const writes = 8;
  const commands = Array.from({ length: writes }, (_, index) => ['-c', `write -P 0x5a ${index * 2}M 2M`]).flat();
  const seconds = await timedRun(t, 'qemu-io', ['-f', 'raw', ...commands, uri]);
  // The first goes at once (into debt); each next one waits for the 2 MiB before it: 7 × 0.25 s.
  const expectedSeconds = ((writes - 1) * 2 * MiB) / (8 * MiB);
  t.ok(seconds >= expectedSeconds * 0.97 && seconds <= expectedSeconds * 1.1 + 0.5, `${writes} writes of 2 MiB in ${seconds.toFixed(2)} s (the limit says ${expectedSeconds.toFixed(2)} s after the first)`);
  t.equal(limiter.stats().requests, writes, 'one request per write: none was cut');
  const readBack = await run('qemu-io', ['-f', 'raw', '-c', `read -P 0x5a 0 ${writes * 2}M`, uri], { timeoutMs: 60_000 });
  t.equal(readBack.code, 0, 'what was written reads back');
  t.notMatch(readBack.stdout, /Pattern verification failed/, 'with the pattern');
});

t.test('raising the limit while nbdcopy runs speeds its open connections up at once', async (t) => {
  const limiter = new QosLimiter(limitsOf({ bandwidthLimitKbps: 4 * 1024 }));
  const uri = await serve(t, limiter);
  const copying = timedRun(t, 'nbdcopy', ['--connections=4', '--requests=16', uri, 'null:']);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const bytesBefore = limiter.stats().bytes;
  limiter.setLimits(limitsOf({ bandwidthLimitKbps: 64 * 1024 }));
  const seconds = await copying;
  t.ok(bytesBefore > 3.5 * MiB && bytesBefore < 5 * MiB, `at 4 MiB/s the first second read ${(bytesBefore / MiB).toFixed(1)} MiB`);
  t.ok(seconds < 3, `the rest went at 64 MiB/s: ${seconds.toFixed(2)} s in all (6 s at the old limit)`);
});
