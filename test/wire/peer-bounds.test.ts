// Proves that a wire connection is bounded in both directions, on real loopback sockets
// with both ends in this process:
//
// - serving: a client that asks for many 1 MiB replies and does not read them gets only a
//   bounded number of requests served (the rest wait unread in the socket), on plain
//   sockets and on sockets with borrowed reads (the SDS's adopted sockets); when it reads
//   again, the server reads again ('drain') and every reply arrives intact; with borrowed
//   reads, stopping and starting in the middle of 1 MiB requests loses no byte;
// - serving: requests whose handler has not finished stop being read at exactly
//   wireRequestsInflightMax, and reading goes on when they finish;
// - requesting: against a peer that stops reading, request() stops writing once the socket
//   queue passes wireWritableBytesMax; a request that finds no room in its timeout fails
//   with MB_ERR_WIRE_SEND_TIMEOUT; once the peer reads again, every request is answered.

import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { acquirePayload, payloadPool, releasePayload } from '../../src/common/buffer-pool.js';
import { adoptAccepted, directDataEvent } from '../../src/common/borrowed-reads.js';
import { encodeHeader } from '../../src/wire/header.js';
import { wireRequestsInflightMax, wireWritableBytesMax } from '../../src/common/limits.js';
import { WirePeer, WireStatus, type WirePeerOptions, type WireReply } from '../../src/wire/peer.js';

const log = pino({ level: 'silent' });
const clusterId = 'a1b2c3d4e5f60718';
const secret = Buffer.from('correct horse battery staple');
const opAsk = 100;
const MiB = 1024 * 1024;

interface Connected {
  client: WirePeer;
  clientSocket: net.Socket;
  server: WirePeer;
  serverSocket: net.Socket;
}

/**
 * A client on a plain socket (so the test can stop its reading) and a server, adopted into
 * borrowed reads if `borrowedReads`, as an SDS accepts; both destroyed at teardown.
 */
async function connected(t: Test, serverOptions: Partial<WirePeerOptions>, clientOptions: Partial<WirePeerOptions> = {}, borrowedReads = false): Promise<Connected> {
  let accepted!: Promise<{ server: WirePeer; serverSocket: net.Socket }>;
  const listener = net.createServer({ pauseOnConnect: borrowedReads }, (raw) => {
    const socket = borrowedReads ? adoptAccepted(raw) : raw;
    accepted = WirePeer.accept(socket, { clusterId, secret, role: 'sds', name: 'sds1', log, ...serverOptions }).then((server) => ({ server, serverSocket: socket }));
    accepted.catch(() => undefined);
  });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => listener.close(() => resolve())));
  const clientSocket = await new Promise<net.Socket>((resolve, reject) => {
    const socket = net.connect({ port: (listener.address() as net.AddressInfo).port, host: '127.0.0.1' }, () => resolve(socket));
    socket.once('error', reject);
  });
  const client = await WirePeer.connect(clientSocket, { clusterId, secret, role: 'sdc', name: 'sdc1', log, ...clientOptions });
  const { server, serverSocket } = await accepted;
  t.teardown(() => {
    client.destroy();
    server.destroy();
  });
  return { client, clientSocket, server, serverSocket };
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves once `value()` has not changed for `quietMs` (at most `timeoutMs`): the other side has settled. */
async function settled(value: () => number, quietMs = 500, timeoutMs = 10_000): Promise<number> {
  const deadlineMs = Date.now() + timeoutMs;
  let last = value();
  let quietSinceMs = Date.now();
  while (Date.now() < deadlineMs && Date.now() - quietSinceMs < quietMs) {
    await delay(50);
    if (value() !== last) {
      last = value();
      quietSinceMs = Date.now();
    }
  }
  return last;
}

/** A request asking for a reply of `replyBytes` bytes, all equal to `fill`. */
function ask(replyBytes: number, fill: number): Buffer {
  const payload = Buffer.alloc(5);
  payload.writeUInt32BE(replyBytes, 0);
  payload[4] = fill;
  return payload;
}

t.test('a client that does not read its 1 MiB replies gets a bounded number served, then all of them', async (t) => {
  const requestCount = 400;
  const inflightBytesMax = 16 * MiB;
  for (const borrowedReads of [false, true]) {
    const what = borrowedReads ? 'borrowed reads' : 'plain socket';
    let served = 0;
    const { client, clientSocket, serverSocket } = await connected(
      t,
      {
        inflightBytesMax,
        replyBytesOf: (request) => request.payload.readUInt32BE(0),
        onRequest: async (request): Promise<WireReply> => {
          served += 1;
          // As an SDS read: a pooled reply buffer, released by the peer once sent.
          const reply = acquirePayload(request.payload.readUInt32BE(0));
          reply.fill(request.payload[4] as number);
          await delay(1);
          return { status: WireStatus.Ok, payload: reply, releaseAfterSend: payloadPool.owns(reply) };
        },
      },
      {},
      borrowedReads,
    );
    // The client stops reading before it asks: the replies pile up in the kernel, then in the server.
    clientSocket.pause();
    const replies = Array.from({ length: requestCount }, (_, index) => client.request(opAsk, ask(MiB, index % 251)));
    const servedWhileStuck = await settled(() => served);
    const queuedBytes = serverSocket.writableLength;
    // Served at most: the in-flight bound, the socket queue bound, and what the kernel's
    // socket buffers took (up to ~36 MiB here with autotuning), in 1 MiB replies.
    t.ok(servedWhileStuck < 100, `${what}: ${servedWhileStuck} of ${requestCount} requests were served while the client did not read`);
    t.ok(queuedBytes <= wireWritableBytesMax + inflightBytesMax + MiB, `${what}: ${queuedBytes} bytes queued in the server's socket`);
    await delay(300);
    t.equal(served, servedWhileStuck, `${what}: and no more while it still did not read`);
    clientSocket.resume();
    const responses = await Promise.all(replies);
    t.equal(served, requestCount, `${what}: once the client read again, every request was served`);
    const expected = Buffer.alloc(MiB);
    const intact = responses.every((response, index) => response.status === WireStatus.Ok && response.payload.equals(expected.fill(index % 251)));
    t.ok(intact, `${what}: every reply arrived whole and in its own bytes`);
    for (const response of responses) releasePayload(response.payload);
  }
});

t.test('borrowed reads: reading stopped and started again in the middle of large requests loses no byte', async (t) => {
  // 1 MiB requests echoed in 1 MiB replies to a client that reads late: the server stops
  // reading (often while a request's payload is arriving straight into its buffer) and
  // starts again many times.
  const requestCount = 96;
  let directBytes = 0;
  const { client, clientSocket, serverSocket } = await connected(
    t,
    {
      inflightBytesMax: 8 * MiB,
      replyBytesOf: (request) => request.payload.length,
      onRequest: async (request): Promise<WireReply> => {
        await delay(request.payload[0] as number % 3);
        const reply = acquirePayload(request.payload.length);
        request.payload.copy(reply);
        return { status: WireStatus.Ok, payload: reply, releaseAfterSend: payloadPool.owns(reply) };
      },
    },
    {},
    true,
  );
  serverSocket.on(directDataEvent, (landed: Buffer) => (directBytes += landed.length));
  clientSocket.pause();
  const sent = Array.from({ length: requestCount }, () => randomBytes(MiB));
  const replies = sent.map((payload) => client.request(opAsk, payload));
  await delay(1000);
  clientSocket.resume();
  const responses = await Promise.all(replies);
  t.ok(responses.every((response, index) => response.payload.equals(sent[index] as Buffer)), `all ${requestCount} echoes came back intact`);
  t.ok(directBytes > requestCount * MiB / 2, `${directBytes} bytes were read straight into request buffers`);
  for (const response of responses) releasePayload(response.payload);
});

t.test('requests whose handlers are still running stop being read at wireRequestsInflightMax', async (t) => {
  const frameCount = wireRequestsInflightMax + 500;
  const finishers: Array<() => void> = [];
  const { clientSocket } = await connected(t, {
    onRequest: () => new Promise<WireReply>((resolve) => finishers.push(() => resolve({ status: WireStatus.Ok }))),
  });
  // Frames written by hand: the client peer would not send more than the bound itself.
  const frames = Array.from({ length: frameCount }, (_, index) =>
    encodeHeader({ op: opAsk, reply: false, status: 0, clusterId, requestId: 1_000_000 + index, epoch: 0, payloadBytes: 0, payloadCrc32c: null }),
  );
  clientSocket.write(Buffer.concat(frames));
  t.equal(await settled(() => finishers.length), wireRequestsInflightMax, 'exactly the bound of requests reached the handler');
  for (const finish of finishers.splice(0)) finish();
  t.equal(await settled(() => finishers.length), frameCount - wireRequestsInflightMax, 'the rest were read once those finished');
  for (const finish of finishers.splice(0)) finish();
});

t.test('against a peer that stops reading, requests stop at the socket queue bound and wait', async (t) => {
  const requestCount = 48;
  let served = 0;
  const { client, clientSocket, serverSocket } = await connected(
    t,
    {
      onRequest: async (request) => {
        served += 1;
        return { status: WireStatus.Ok, payload: Buffer.from(String(request.payload.length)) };
      },
    },
    // Far above what is sent: here only the socket queue bound can hold requests back.
    { inflightBytesMax: 1024 * MiB },
  );
  serverSocket.pause();
  const responses = Array.from({ length: requestCount }, (_, index) => client.request(opAsk, Buffer.alloc(MiB, index)));
  const queuedBytes = await settled(() => clientSocket.writableLength);
  t.ok(queuedBytes > 0, `the client queued ${queuedBytes} bytes to the peer that does not read`);
  t.ok(queuedBytes < wireWritableBytesMax + MiB + 64, `at most the bound plus the request that crossed it (${wireWritableBytesMax} + 1 MiB)`);
  await t.rejects(client.request(opAsk, Buffer.alloc(10), { timeoutMs: 300 }), { code: 'MB_ERR_WIRE_SEND_TIMEOUT' }, 'a request that finds no room to be sent in its timeout fails, unsent');
  serverSocket.resume();
  const answered = await Promise.all(responses);
  t.ok(answered.every((response) => response.payload.toString() === String(MiB)), 'once the peer reads again, every waiting request is sent and answered');
  t.equal(served, requestCount, 'and served once');
});
