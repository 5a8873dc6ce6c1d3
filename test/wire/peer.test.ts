// Proves the wire connection on real loopback sockets: mutual challenge-response setup,
// pipelined requests answered out of order, timeouts, close() draining and destroy()
// aborting, and refusal of peers that do not belong: wrong secret, wrong cluster, another
// protocol version, a corrupted frame. (The SDS processes that use it come next; here
// both ends run in the test process, over real TCP.)

import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { acquirePayload, payloadPool, releasePayload } from '../../src/common/buffer-pool.js';
import { crc32c } from '../../src/common/crc32c.js';
import { encodeHeader } from '../../src/wire/header.js';
import { WirePeer, WireStatus, type WirePeerOptions, type WireReply } from '../../src/wire/peer.js';
import { adoptAccepted, directDataEvent } from '../../src/common/borrowed-reads.js';
import { PeerPool, connectTcp } from '../../src/wire/peer-pool.js';

const log = pino({ level: 'silent' });
const clusterId = 'a1b2c3d4e5f60718';
const secret = Buffer.from('correct horse battery staple');
const opEcho = 100;
const MiB = 1024 * 1024;

interface Pair {
  client: WirePeer;
  server: WirePeer;
}

/** A listening socket whose accepted connections run `accept`; closed at teardown. */
async function listen(t: Test, accept: (socket: net.Socket) => void, borrowedReads = false): Promise<number> {
  // As an SDS listens: paused on accept, then adopted into a socket with borrowed reads.
  const server = borrowedReads ? net.createServer({ pauseOnConnect: true }, (socket) => accept(adoptAccepted(socket))) : net.createServer(accept);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.address() as net.AddressInfo).port;
}

/**
 * A peer that answers the first request by hand: `reply` gets the socket and the header of a
 * 1 MiB reply, and writes whatever of it the test wants; the request's handler never returns.
 */
function partialReplier(t: Test, reply: (socket: net.Socket, header: Buffer) => void, borrowedReads = false): Promise<number> {
  return listen(
    t,
    (socket) => {
      const onRequest = (): Promise<WireReply> => {
        reply(socket, encodeHeader({ op: opEcho, reply: true, status: WireStatus.Ok, clusterId, requestId: 1, epoch: 0, payloadBytes: MiB, payloadCrc32c: null }));
        return new Promise(() => undefined);
      };
      WirePeer.accept(socket, { clusterId, secret, role: 'sds', name: 'sds1', log, onRequest }).catch(() => undefined);
    },
    borrowedReads,
  );
}

function connectSocket(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' }, () => resolve(socket));
    socket.once('error', reject);
  });
}

/**
 * `borrowedReads`: both sockets read into buffers of their own, as the daemons' do: the
 * client's from connectTcp, the server's adopted on accept. `directBytes` counts the bytes
 * that either read straight into a payload's buffer.
 */
async function pair(t: Test, serverOptions: Partial<WirePeerOptions> = {}, clientOptions: Partial<WirePeerOptions> = {}, borrowedReads = false): Promise<Pair & { directBytes: () => number }> {
  let accepted!: Promise<WirePeer>;
  let directBytes = 0;
  const countDirect = (socket: net.Socket): void => void socket.on(directDataEvent, (landed: Buffer) => (directBytes += landed.length));
  const port = await listen(
    t,
    (socket) => {
      countDirect(socket);
      accepted = WirePeer.accept(socket, { clusterId, secret, role: 'sds', name: 'sds1', log, ...serverOptions });
      accepted.catch(() => undefined);
    },
    borrowedReads,
  );
  const socket = borrowedReads ? await connectTcp(`127.0.0.1:${port}`, 5000) : await connectSocket(port);
  countDirect(socket);
  const client = await WirePeer.connect(socket, { clusterId, secret, role: 'sdc', name: 'sdc1', log, ...clientOptions });
  const server = await accepted;
  t.teardown(() => {
    client.destroy();
    server.destroy();
  });
  return { client, server, directBytes: () => directBytes };
}

t.test('setup proves both sides; requests are pipelined and answered out of order', async (t) => {
  const { client, server } = await pair(
    t,
    {
      onRequest: async (request) => {
        // Later requests finish first: replies come back out of order.
        await new Promise((resolve) => setTimeout(resolve, 50 - (request.payload.readUInt32BE(0) % 50)));
        return { status: WireStatus.Ok, payload: Buffer.from(request.payload).reverse() };
      },
      payloadChecksums: true,
    },
    { payloadChecksums: true },
  );
  t.same(client.remote, { role: 'sds', name: 'sds1' });
  t.same(server.remote, { role: 'sdc', name: 'sdc1' });
  const order: number[] = [];
  const replies = await Promise.all(
    Array.from({ length: 200 }, async (_, index) => {
      const payload = Buffer.alloc(4 + (index % 7) * 1000, index);
      payload.writeUInt32BE(index, 0);
      const reply = await client.request(opEcho, payload, { epoch: 5 });
      order.push(index);
      t.equal(reply.status, WireStatus.Ok);
      return reply.payload.equals(Buffer.from(payload).reverse());
    }),
  );
  t.ok(replies.every(Boolean), 'every reply carries its own request’s payload');
  t.not(order.join(','), [...order].sort((a, b) => a - b).join(','), 'replies arrived out of order');
});

t.test('PeerPool.connected: the made connection without an await, none before it is made or after it is dropped', async (t) => {
  const port = await listen(t, (socket) => {
    WirePeer.accept(socket, { clusterId, secret, role: 'sds', name: 'sds1', log, onRequest: async (request) => ({ status: WireStatus.Ok, payload: request.payload }) }).catch(() => undefined);
  });
  const pool = new PeerPool({ clusterId, secret, role: 'sdc', name: 'sdc1', log });
  t.teardown(() => pool.dropAll());
  const address = `127.0.0.1:${port}`;
  t.equal(pool.connected('sds1', address), null, 'nothing before the first get');
  const making = pool.get('sds1', address);
  t.equal(pool.connected('sds1', address), null, 'nothing while it is being made');
  const peer = await making;
  t.equal(pool.connected('sds1', address), peer, 'the made connection');
  t.equal(pool.connected('sds1', '127.0.0.1:1'), null, 'not for another address');
  t.equal((await peer.request(opEcho, Buffer.from('ping'))).payload.toString(), 'ping', 'and it serves');
  pool.drop('sds1');
  t.equal(pool.connected('sds1', address), null, 'nothing once dropped');
  await peer.closed;
});

t.test('a request the other side does not serve gets UnknownOp', async (t) => {
  const { client } = await pair(t);
  const reply = await client.request(opEcho, Buffer.from('x'));
  t.equal(reply.status, WireStatus.UnknownOp);
});

t.test('handler failures become Failed replies; timeouts reject', async (t) => {
  const { client } = await pair(t, {
    onRequest: async (request) => {
      if (request.payload.toString() === 'fail') throw new Error('disk on fire');
      return new Promise(() => undefined); // never answers
    },
  });
  const failed = await client.request(opEcho, Buffer.from('fail'));
  t.equal(failed.status, WireStatus.Failed);
  t.match(failed.payload.toString(), /disk on fire/);
  await t.rejects(client.request(opEcho, Buffer.from('hang'), { timeoutMs: 200 }), { code: 'MB_ERR_WIRE_TIMEOUT' });
});

t.test('close() drains, destroy() aborts', async (t) => {
  const { client } = await pair(t, {
    onRequest: async () => {
      await new Promise((resolve) => setTimeout(resolve, 100));
      return { status: WireStatus.Ok };
    },
  });
  const inFlight = client.request(opEcho, Buffer.from('a'));
  await client.close();
  t.equal((await inFlight).status, WireStatus.Ok, 'the request in flight finished before close() resolved');
  await t.rejects(client.request(opEcho, Buffer.from('b')), { code: 'MB_ERR_WIRE_CLOSED' });

  const second = await pair(t, { onRequest: () => new Promise(() => undefined) });
  const stuck = second.client.request(opEcho, Buffer.from('c'));
  second.client.destroy();
  await t.rejects(stuck, { code: 'MB_ERR_WIRE_DESTROYED' });
});

t.test('a peer with the wrong secret is refused on both sides', async (t) => {
  let serverSide!: Promise<WirePeer>;
  const port = await listen(t, (socket) => {
    serverSide = WirePeer.accept(socket, { clusterId, secret, role: 'sds', name: 'sds1', log });
    serverSide.catch(() => undefined);
  });
  const wrong = { clusterId, secret: Buffer.from('guess'), role: 'sdc' as const, name: 'intruder', log };
  await t.rejects(WirePeer.connect(await connectSocket(port), wrong), { code: 'MB_ERR_WIRE_AUTH' }, 'the connector sees the acceptor’s proof fail');
  await t.rejects(serverSide, { code: /MB_ERR_WIRE_(AUTH|CLOSED)/ }, 'the acceptor drops it');
});

t.test('a peer of another cluster is refused', async (t) => {
  let serverSide!: Promise<WirePeer>;
  const port = await listen(t, (socket) => {
    serverSide = WirePeer.accept(socket, { clusterId, secret, role: 'sds', name: 'sds1', log });
    serverSide.catch(() => undefined);
  });
  const other = WirePeer.connect(await connectSocket(port), { clusterId: 'ffffffffffffffff', secret, role: 'sdc', name: 'x', log });
  other.catch(() => undefined);
  await t.rejects(serverSide, { code: 'MB_ERR_WIRE_CLUSTER' });
  await t.rejects(other, { code: /MB_ERR_WIRE_(CLOSED|SOCKET)/ });
});

t.test('hostile frames: another version, a corrupted header', async (t) => {
  for (const [label, frame, code] of [
    ['version 2', versioned(2), 'MB_ERR_WIRE_VERSION'],
    ['flipped bit', corrupted(), 'MB_ERR_WIRE_HEADER_CHECKSUM'],
    ['not ours', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'.padEnd(64, ' ')), 'MB_ERR_WIRE_MAGIC'],
  ] as const) {
    let serverSide!: Promise<WirePeer>;
    const port = await listen(t, (socket) => {
      serverSide = WirePeer.accept(socket, { clusterId, secret, role: 'sds', name: 'sds1', log });
      serverSide.catch(() => undefined);
    });
    const raw = await connectSocket(port);
    const closed = new Promise<void>((resolve) => raw.on('close', () => resolve()));
    raw.on('error', () => undefined);
    raw.write(frame);
    await t.rejects(serverSide, { code }, label);
    await closed;
    t.pass(`${label}: the connection was dropped`);
  }
});

function hello(): Buffer {
  return encodeHeader({ op: 1, reply: false, status: 0, clusterId, requestId: 0, epoch: 0, payloadBytes: 0, payloadCrc32c: null });
}

function versioned(version: number): Buffer {
  const bytes = hello();
  bytes.writeUInt16BE(version, 4);
  bytes.writeUInt32BE(crc32c(bytes.subarray(0, 60)), 60);
  return bytes;
}

function corrupted(): Buffer {
  const bytes = hello();
  bytes[30] = (bytes[30] as number) ^ 0x10;
  return bytes;
}

t.test('large payloads: received into reused buffers, sent in parts, bytes intact', async (t) => {
  // The server echoes each request into a pooled reply (as an SDS read does) after a
  // delay, so many large frames are in flight both ways and pooled buffers are recycled
  // while others are still queued on the socket.
  for (const [payloadChecksums, borrowedReads] of [[false, false], [true, false], [false, true], [true, true]] as const) {
    const what = `checksums ${payloadChecksums}, borrowed reads ${borrowedReads}`;
    const { client, directBytes } = await pair(
      t,
      {
        payloadChecksums,
        onRequest: async (request) => {
          await new Promise((resolve) => setTimeout(resolve, request.payload[0] as number % 5));
          const reply = acquirePayload(request.payload.length);
          request.payload.copy(reply);
          return { status: WireStatus.Ok, payload: reply, releaseAfterSend: payloadPool.owns(reply) };
        },
      },
      { payloadChecksums },
      borrowedReads,
    );
    // Small and large frames mixed, so that borrowed reads hold frames that span reads.
    const sizes = [10, 4136, 64 * 1024, 1024 * 1024 + 40, 100_000, 3 * 1024 * 1024, 65_535, 200_000];
    for (let round = 0; round < 3; round++) {
      const sent = sizes.map((size) => randomBytes(size));
      const responses = await Promise.all(
        // Half go as one buffer, half in two parts (arguments, then data), as the SDC sends writes.
        sent.map((bytes, index) => client.request(opEcho, index % 2 === 0 ? bytes : [bytes.subarray(0, 40), bytes.subarray(40)])),
      );
      responses.forEach((response, index) => {
        t.equal(response.status, WireStatus.Ok);
        t.ok(response.payload.equals(sent[index] as Buffer), `${what}, round ${round}: ${sizes[index]} bytes came back intact`);
        releasePayload(response.payload);
      });
    }
    // 3 rounds of 4.4 MiB each way; most of each large payload comes in reads of its own.
    if (borrowedReads) t.ok(directBytes() > 3 * 2 * 2 * MiB, `${what}: ${directBytes()} bytes were read straight into payload buffers`);
    else t.equal(directBytes(), 0, `${what}: no direct reads without borrowed reads`);
  }
});

t.test('borrowed reads: a hostile reply, and a peer that dies in the middle of a large payload', async (t) => {
  // Not a meshblock peer at all: it answers the client's HELLO with an HTTP line.
  const hostilePort = await listen(t, (socket) => {
    socket.on('error', () => undefined);
    socket.once('data', () => socket.write(Buffer.from('HTTP/1.1 400 Bad Request\r\n'.padEnd(64, ' '))));
  });
  await t.rejects(
    WirePeer.connect(await connectTcp(`127.0.0.1:${hostilePort}`, 5000), { clusterId, secret, role: 'sdc', name: 'sdc1', log }),
    { code: 'MB_ERR_WIRE_MAGIC' },
    'the reply is refused as not ours',
  );

  // A real peer that announces a 1 MiB reply, sends 100 KiB of it and dies.
  const port = await partialReplier(t, (socket, header) => socket.write(Buffer.concat([header, randomBytes(100 * 1024)]), () => socket.destroy()));
  const client = await WirePeer.connect(await connectTcp(`127.0.0.1:${port}`, 5000), { clusterId, secret, role: 'sdc', name: 'sdc1', log });
  t.teardown(() => client.destroy());
  await t.rejects(client.request(opEcho, Buffer.from('x')), { code: /MB_ERR_WIRE_(CLOSED|SOCKET)/ }, 'the request fails when the peer goes, mid-payload');
  await t.rejects(client.request(opEcho, Buffer.from('y')), { code: /MB_ERR_WIRE_(CLOSED|SOCKET)/ }, 'and so does the next one');
});

t.test('adopted sockets: a client that dies in the middle of a large request, then one that stays', async (t) => {
  const served: WirePeer[] = [];
  const port = await listen(
    t,
    (socket) =>
      void WirePeer.accept(socket, { clusterId, secret, role: 'sds', name: 'sds1', log, onRequest: async (request) => ({ status: WireStatus.Ok, payload: Buffer.from(String(request.payload.length)) }) }).then(
        (peer) => served.push(peer),
        () => undefined,
      ),
    true,
  );
  // A client that announces a 4 MiB request, sends 1 MiB of it and goes.
  const dying = await WirePeer.connect(await connectSocket(port), { clusterId, secret, role: 'sdc', name: 'sdc1', log });
  const header = encodeHeader({ op: opEcho, reply: false, status: 0, clusterId, requestId: 1, epoch: 0, payloadBytes: 4 * MiB, payloadCrc32c: null });
  const raw = (dying as unknown as { socket: net.Socket }).socket;
  await new Promise<void>((resolve) => raw.write(Buffer.concat([header, randomBytes(MiB)]), () => resolve()));
  raw.destroy();
  await (served[0] as WirePeer).closed;
  t.pass('the server side of the dead client closed');
  // The listener still serves: a whole 4 MiB request is answered.
  const client = await WirePeer.connect(await connectTcp(`127.0.0.1:${port}`, 5000), { clusterId, secret, role: 'sdc', name: 'sdc1', log });
  t.teardown(() => client.destroy());
  const response = await client.request(opEcho, randomBytes(4 * MiB));
  t.equal(response.payload.toString(), String(4 * MiB), 'a later client is served');
  served.forEach((peer) => peer.destroy());
});

t.test('replyInto: a reply lands in the caller buffer; other replies do not touch it', async (t) => {
  for (const borrowedReads of [false, true]) {
    const { client } = await pair(
      t,
      {
        onRequest: async (request) => {
          const size = request.payload.readUInt32BE(0);
          if (size === 0) return { status: WireStatus.Failed, payload: Buffer.from('no such thing') };
          return { status: WireStatus.Ok, payload: Buffer.alloc(size, request.payload[4] as number) };
        },
      },
      {},
      borrowedReads,
    );
    const ask = (size: number, fill: number): Buffer => {
      const args = Buffer.alloc(5);
      args.writeUInt32BE(size, 0);
      args[4] = fill;
      return args;
    };
    for (const size of [4096, 1024 * 1024 + 8]) {
      const into = Buffer.alloc(size);
      const response = await client.request(opEcho, ask(size, 0x5a), { replyInto: into });
      t.equal(response.payload, into, `borrowed reads ${borrowedReads}, ${size} bytes: the payload is the caller's buffer`);
      t.ok(into.every((byte) => byte === 0x5a), 'holding the reply');
    }
    const other = Buffer.alloc(4096, 1);
    const shorter = await client.request(opEcho, ask(100, 0x33), { replyInto: other });
    t.not(shorter.payload, other, 'a reply of another length comes in its own buffer');
    t.equal(shorter.payload.length, 100);
    const failed = await client.request(opEcho, ask(0, 0), { replyInto: Buffer.alloc('no such thing'.length, 1) });
    t.equal(failed.status, WireStatus.Failed);
    t.equal(failed.payload.toString(), 'no such thing', 'a failure reply is not put in the buffer');
    t.ok(other.every((byte) => byte === 1), 'the unused buffer is untouched');
  }
});

t.test('replyInto: a reply still arriving when the request times out drops the connection, and nothing lands after', async (t) => {
  // Half of a 1 MiB reply now; the rest after the client has given up.
  const port = await partialReplier(
    t,
    (socket, header) => {
      socket.write(Buffer.concat([header, Buffer.alloc(MiB / 2, 0x77)]));
      setTimeout(() => socket.write(Buffer.alloc(MiB / 2, 0x77), () => undefined), 600);
    },
    true,
  );
  const client = await WirePeer.connect(await connectTcp(`127.0.0.1:${port}`, 5000), { clusterId, secret, role: 'sdc', name: 'sdc1', log });
  t.teardown(() => client.destroy());
  const into = Buffer.alloc(MiB);
  await t.rejects(client.request(opEcho, Buffer.from('x'), { timeoutMs: 300, replyInto: into }), { code: 'MB_ERR_WIRE_TIMEOUT' }, 'the request times out');
  const atTimeout = Buffer.from(into);
  const dropped = await Promise.race([client.closed.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 5000))]);
  t.ok(dropped, 'the connection was dropped');
  await new Promise((resolve) => setTimeout(resolve, 700));
  t.ok(into.equals(atTimeout), 'the buffer did not change after the caller heard of the timeout');
  t.ok(into.subarray(MiB / 2).every((byte) => byte === 0), 'the second half never landed');
});
