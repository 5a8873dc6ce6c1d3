// Moving a live socket into one with borrowed reads (what the NBD server does after its
// handshake) must lose, reorder or duplicate no byte, keep the write side working, and
// refuse when the move is not safe. Real TCP sockets on loopback.

import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import t, { type Test } from 'tap';
import { BorrowedReads, adoptReading, borrowedDataEvent, directDataEvent } from '../../src/common/borrowed-reads.js';

/** A connected pair: `server` is the accepted end, read through 'data' as a handshake reads it. */
async function connected(t: Test): Promise<{ client: net.Socket; server: net.Socket }> {
  const listener = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => listener.close(() => resolve())));
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const client = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise<void>((resolve) => client.once('connect', resolve));
  const server = await accepted;
  t.teardown(() => {
    client.destroy();
    server.destroy();
  });
  return { client, server };
}

t.test('bytes read before, during and after the move arrive once and in order', async (t) => {
  const { client, server } = await connected(t);
  const sent = randomBytes(3 * 1024 * 1024);
  const received: Buffer[] = [];
  // The "handshake" reads the first 100 bytes through 'data', then pauses.
  const first = new Promise<Buffer>((resolve) => server.once('data', resolve));
  client.write(sent.subarray(0, 100));
  received.push(await first);
  server.pause();
  // More arrives while paused: the old socket reads some of it into its own buffer.
  client.write(sent.subarray(100, 5100));
  await new Promise((resolve) => setTimeout(resolve, 50));
  const adopted = adoptReading(server, true);
  if (adopted === null) throw new Error('the move was refused');
  t.ok(BorrowedReads.of(adopted.socket) !== undefined, 'the new socket has borrowed reads');
  received.push(...adopted.buffered);
  let direct = 0;
  const reads = BorrowedReads.of(adopted.socket) as BorrowedReads;
  const target = Buffer.alloc(64 * 1024);
  adopted.socket.on(borrowedDataEvent, (chunk: Buffer) => {
    received.push(Buffer.from(chunk));
    // Now and then, point the next read at a buffer of our own, as a payload would be.
    reads.direct = received.length % 3 === 0 ? target : null;
  });
  adopted.socket.on(directDataEvent, (landed: Buffer) => {
    t.equal(landed.buffer, target.buffer, 'a direct read lands in the buffer given');
    direct += landed.length;
    received.push(Buffer.from(landed));
    reads.direct = null;
  });
  const ended = new Promise<void>((resolve) => adopted.socket.once('end', resolve));
  adopted.socket.resume();
  client.end(sent.subarray(5100));
  await ended;
  // The write side works on the new socket.
  const echoed = new Promise<Buffer>((resolve) => client.once('data', resolve));
  adopted.socket.end(Buffer.from('done'));
  t.equal((await echoed).toString(), 'done', 'the new socket writes');
  const all = Buffer.concat(received);
  t.equal(all.length, sent.length, 'every byte arrived once');
  t.ok(all.equals(sent), 'in order');
  t.ok(direct > 0, `${direct} bytes were read straight into the given buffer`);
});

t.test('the move is refused when it is not safe', async (t) => {
  const closed = await connected(t);
  closed.server.destroy();
  t.equal(adoptReading(closed.server, true), null, 'a closed socket');

  const ended = await connected(t);
  const gotEnd = new Promise<void>((resolve) => ended.server.once('end', resolve));
  ended.server.resume();
  ended.client.end();
  await gotEnd;
  t.equal(adoptReading(ended.server, true), null, 'a socket whose end was read');
  t.equal(ended.server.destroyed, false, 'is left as it was');
});
