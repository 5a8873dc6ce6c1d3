// Proves the memory budget shared by a server's client connections (wire/serving-budget.ts,
// `sds start --memory-budget`), on real loopback sockets with both ends in this process:
//
// - three clients each sending 16 requests of 256 KiB at once to handlers that hold them:
//   the server stops reading once the budget is spent (it holds at most the budget plus one
//   request per connection, and far from all 48 requests); as the handlers finish, it reads
//   again, every request is served once, and the budget goes back to zero;
// - progress: a client whose requests fill the budget and are held until another client's
//   request is served does not block that client: a connection with nothing in flight
//   always reads one request;
// - a connection not sharing the budget (an SDS's mirror writes) is not held back by it.

import * as net from 'node:net';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { WirePeer, WireStatus, type WireReply, type WireRequest } from '../../src/wire/peer.js';
import { ServingBudget } from '../../src/wire/serving-budget.js';

const log = pino({ level: 'silent' });
const clusterId = 'a1b2c3d4e5f60718';
const secret = Buffer.from('correct horse battery staple');
const opAsk = 100;
const KiB = 1024;
const MiB = 1024 * KiB;

interface Held {
  from: string;
  request: WireRequest;
  finish: () => void;
}

/** A server whose handler holds every request until the test finishes it, and its clients. */
async function serverWithClients(t: Test, budget: ServingBudget, clients: Array<{ name: string; shares: boolean }>): Promise<{ peers: WirePeer[]; held: Held[]; served: string[] }> {
  const held: Held[] = [];
  const served: string[] = [];
  const listener = net.createServer((socket) => {
    let from = '?';
    WirePeer.accept(socket, {
      clusterId,
      secret,
      role: 'sds',
      name: 'sds1',
      log,
      onRequest: (request) =>
        new Promise<WireReply>((resolve) => {
          held.push({
            from,
            request,
            finish: () => {
              served.push(from);
              resolve({ status: WireStatus.Ok });
            },
          });
        }),
    }).then(
      (peer) => {
        from = peer.remote?.name ?? '?';
        if (clients.find((client) => client.name === from)?.shares === true) peer.shareServingBudget(budget);
        t.teardown(() => peer.destroy());
      },
      () => undefined,
    );
  });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => listener.close(() => resolve())));
  const peers: WirePeer[] = [];
  for (const client of clients) {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const connecting = net.connect({ port: (listener.address() as net.AddressInfo).port, host: '127.0.0.1' }, () => resolve(connecting));
      connecting.once('error', reject);
    });
    const peer = await WirePeer.connect(socket, { clusterId, secret, role: client.shares ? 'sdc' : 'sds', name: client.name, log });
    t.teardown(() => peer.destroy());
    peers.push(peer);
  }
  // The server's side of each connection has taken its name (and budget) before requests come.
  await new Promise((resolve) => setTimeout(resolve, 50));
  return { peers, held, served };
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Finishes held requests as they come (those `which` picks), until `total` were finished. */
async function finishAll(held: Held[], total: number, which: (entry: Held) => boolean = () => true): Promise<void> {
  const finished = new Set<Held>();
  while (finished.size < total) {
    const entry = held.find((candidate) => !finished.has(candidate) && which(candidate));
    if (entry === undefined) {
      await delay(20);
      continue;
    }
    finished.add(entry);
    entry.finish();
  }
}

/** Waits until `count()` has not changed for 300 ms. */
async function settled(count: () => number): Promise<number> {
  let last = -1;
  while (count() !== last) {
    last = count();
    await delay(300);
  }
  return last;
}

t.test('three clients and a 1 MiB budget: reading stops when it is spent and resumes as requests finish', async (t) => {
  const budget = new ServingBudget(MiB);
  const requestBytes = 256 * KiB;
  const names = ['sdc1', 'sdc2', 'sdc3'];
  const { peers, held, served } = await serverWithClients(t, budget, names.map((name) => ({ name, shares: true })));
  const replies = peers.flatMap((peer) => Array.from({ length: 16 }, () => peer.request(opAsk, Buffer.alloc(requestBytes, 7), { timeoutMs: 60_000 })));
  const bound = budget.limitBytes + names.length * requestBytes;
  const heldAtFirst = await settled(() => held.length);
  t.ok(budget.usedBytes >= budget.limitBytes, `the budget was spent (${budget.usedBytes} bytes held)`);
  t.ok(budget.usedBytes <= bound, `at most the budget and one request per connection held (${budget.usedBytes} <= ${bound})`);
  t.ok(heldAtFirst < 48 && heldAtFirst >= 4, `reading stopped: ${heldAtFirst} of 48 requests read`);
  let most = budget.usedBytes;
  let next = 0;
  while (served.length < 48) {
    const entry = held[next];
    if (entry === undefined) {
      await delay(20);
      continue;
    }
    next += 1;
    entry.finish();
    await delay(5);
    most = Math.max(most, budget.usedBytes);
  }
  t.ok(most <= bound, `never more than the bound held (${most} <= ${bound})`);
  const statuses = await Promise.all(replies);
  t.same(new Set(statuses.map((reply) => reply.status)), new Set([WireStatus.Ok]), 'every request answered Ok');
  t.same(names.map((name) => served.filter((from) => from === name).length), [16, 16, 16], 'each client served all its requests, once');
  await delay(50);
  t.equal(budget.usedBytes, 0, 'the budget is all given back');
  t.ok(budget.peakBytes >= budget.limitBytes && budget.peakBytes <= bound, `the peak (${budget.peakBytes}) is within the bound`);
});

t.test('a client with nothing in flight always gets one request read, whatever others hold', async (t) => {
  const budget = new ServingBudget(MiB);
  const { peers, held, served } = await serverWithClients(t, budget, [
    { name: 'greedy', shares: true },
    { name: 'other', shares: true },
  ]);
  const [greedy, other] = peers as [WirePeer, WirePeer];
  const greedyReplies = Array.from({ length: 12 }, () => greedy.request(opAsk, Buffer.alloc(512 * KiB), { timeoutMs: 60_000 }));
  await settled(() => held.length);
  t.ok(budget.spent, 'the greedy client spent the budget');
  const otherReply = other.request(opAsk, Buffer.alloc(512 * KiB), { timeoutMs: 60_000 });
  await settled(() => held.length);
  const othersHeld = held.find((entry) => entry.from === 'other');
  t.ok(othersHeld !== undefined, "the other client's request was read although the budget is spent");
  othersHeld?.finish();
  t.equal((await otherReply).status, WireStatus.Ok);
  await finishAll(held, 12, (entry) => entry.from === 'greedy');
  t.equal((await Promise.all(greedyReplies)).length, 12, "then the greedy client's requests all complete");
  t.equal(served.length, 13);
});

t.test('a connection that does not share the budget is not held back by it', async (t) => {
  const budget = new ServingBudget(MiB);
  const { peers, held } = await serverWithClients(t, budget, [
    { name: 'sdc1', shares: true },
    { name: 'mirror', shares: false },
  ]);
  const [client, mirror] = peers as [WirePeer, WirePeer];
  const clientReplies = Array.from({ length: 8 }, () => client.request(opAsk, Buffer.alloc(512 * KiB), { timeoutMs: 60_000 }));
  await settled(() => held.length);
  t.ok(budget.spent);
  const mirrorReplies = Array.from({ length: 8 }, () => mirror.request(opAsk, Buffer.alloc(512 * KiB), { timeoutMs: 60_000 }));
  await settled(() => held.length);
  t.equal(held.filter((entry) => entry.from === 'mirror').length, 8, 'every mirror request was read');
  await finishAll(held, 16);
  t.equal((await Promise.all([...clientReplies, ...mirrorReplies])).length, 16, 'all answered');
});
