// Proves CAN_MULTI_CONN's promise: a FLUSH on one connection makes durable the writes that
// other connections had completed. Four raw connections write distinct patterns, a fifth
// sends FLUSH; the server runs under strace, and the test checks that the FLUSH reply came
// only after an fdatasync() of the one file descriptor that all connections wrote through.
// (A real power cut cannot be made to happen here; the system call it depends on can be
// watched.) The bytes are then checked with qemu-io and in the file itself.

import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import * as P from '../../src/nbd/protocol.js';
import { sparseFile } from '../helpers/files.js';
import { run, startNbdServe } from '../helpers/processes.js';
import { RawNbd } from '../helpers/raw-nbd.js';

const MiB = 1024 * 1024;

function fdatasyncFds(log: string): number[] {
  // Lines look like "1234  fdatasync(21) = 0" or "1234  <... fdatasync resumed>) = 0".
  return [...log.matchAll(/fdatasync\((\d+)\)/g)].map((match) => Number(match[1]));
}

t.test('FLUSH on one connection covers writes from four others', async (t) => {
  const strace = await run('strace', ['-V']);
  if (strace.code !== 0) {
    t.skip('strace is not installed', () => undefined);
    return;
  }
  const dir = t.testdir();
  const file = sparseFile(dir, 'multi.img', 16 * MiB);
  const traceLog = path.join(dir, 'strace.log');
  const server = await startNbdServe(t, ['--file', file], { prefix: ['strace', '-f', '-qq', '-e', 'trace=fdatasync', '-o', traceLog] });

  const writers: RawNbd[] = [];
  for (let index = 0; index < 4; index++) {
    const client = await RawNbd.connect({ port: server.port });
    t.teardown(() => client.destroy());
    const { flags } = await client.go();
    t.ok((flags & P.NBD_FLAG_CAN_MULTI_CONN) !== 0, `connection ${index} is offered CAN_MULTI_CONN`);
    writers.push(client);
  }
  await Promise.all(
    writers.map(async (client, index) => {
      client.request(P.NBD_CMD_WRITE, { cookie: BigInt(index + 1), offset: index * 2 * MiB, payload: Buffer.alloc(MiB, 0x10 + index) });
      const reply = await client.readSimpleReply();
      t.equal(reply.error, 0, `write on connection ${index} acknowledged`);
    }),
  );
  t.same(fdatasyncFds(fs.readFileSync(traceLog, 'utf8')), [], 'no fdatasync before the FLUSH (no FUA was asked)');

  const flusher = await RawNbd.connect({ port: server.port });
  t.teardown(() => flusher.destroy());
  await flusher.go();
  flusher.request(P.NBD_CMD_FLUSH, { cookie: 99n });
  const flushReply = await flusher.readSimpleReply();
  t.equal(flushReply.error, 0, 'FLUSH acknowledged');
  t.equal(flushReply.cookie, 99n);

  // strace writes its line when the system call returns, which is before our reply left.
  const synced = fdatasyncFds(fs.readFileSync(traceLog, 'utf8'));
  t.equal(synced.length, 1, 'exactly one fdatasync for the FLUSH');

  const nodePid = Number((await run('pgrep', ['-P', String(server.process.pid), '-f', 'meshblock'])).stdout.trim().split('\n')[0]);
  const fileFds = fs
    .readdirSync(`/proc/${nodePid}/fd`)
    .filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/${nodePid}/fd/${fd}`) === file;
      } catch {
        return false;
      }
    })
    .map(Number);
  t.same(fileFds, synced, 'the file is open once, and that descriptor is the one synced');

  for (const client of writers) client.destroy();
  const args = ['-f', 'raw'];
  for (let index = 0; index < 4; index++) args.push('-c', `read -P ${0x10 + index} ${index * 2}M 1M`);
  const verify = await run('qemu-io', [...args, server.uri]);
  t.equal(verify.code, 0, verify.stderr);
  t.notMatch(verify.stdout, /verification failed/);
  const bytes = fs.readFileSync(file);
  for (let index = 0; index < 4; index++) {
    t.ok(bytes.subarray(index * 2 * MiB, index * 2 * MiB + MiB).every((b) => b === 0x10 + index), `connection ${index}'s bytes are in the file`);
  }
});
