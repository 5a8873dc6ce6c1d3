// Proves that an SDS's or SDC's MDM session follows the Master among the MDM addresses it
// was given, on real loopback sockets: fake MDMs in this process accept the wire
// connection (WirePeer.accept, role 'mdm'), answer or refuse the registration and answer
// heartbeats; an address nobody listens on stands for a Slave (its wire port is closed) or
// a dead MDM.
//   - a refused connection moves to the next address at once: no backoff in between;
//   - a refused registration does too;
//   - a connection the Master drops moves to the next address, not back to the same one;
//   - an MDM that stops answering heartbeats (cut off, no FIN) is dropped and left;
//   - when every address fails, the session backs off (min, doubling) between whole rounds,
//     and registers as soon as one MDM comes up.
// "At once" is read from the session's log: the line it writes when it backs off must not
// come before the registration.

import * as net from 'node:net';
import { pino, type Logger } from 'pino';
import t, { type Test } from 'tap';
import { mdmHeartbeatTimeoutMs, mdmReconnectDelayMsMin } from '../../src/common/limits.js';
import { MdmOp } from '../../src/wire/mdm-ops.js';
import { MdmSession } from '../../src/wire/mdm-session.js';
import { WirePeer, WireStatus, type WireReply, type WireRequest } from '../../src/wire/peer.js';

const clusterId = 'a1b2c3d4e5f60718';
const secret = Buffer.from('correct horse battery staple');

interface LogLine {
  msg: string;
  mdm?: string;
  retryMs?: number;
  time: number;
}

/** A pino logger whose lines the test reads back. */
function capturedLog(): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line) as LogLine) });
  return { log, lines };
}

type Behaviour = 'accept' | 'refuse' | 'drop-on-register' | 'silent-after-register';

/** An MDM for the session to find: it listens, registers (or refuses), answers heartbeats. */
class FakeMdm {
  /** Registrations it accepted / refused, heartbeats it answered. */
  accepted = 0;
  refused = 0;
  heartbeats = 0;
  private readonly peers = new Set<WirePeer>();
  private server: net.Server | null = null;

  private constructor(
    readonly port: number,
    public behaviour: Behaviour,
  ) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** An MDM on a fresh port; `down` leaves the port closed until up(). */
  static async create(t: Test, behaviour: Behaviour, down = false): Promise<FakeMdm> {
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const mdm = new FakeMdm(port, behaviour);
    if (!down) await mdm.up();
    t.teardown(() => mdm.down());
    return mdm;
  }

  async up(): Promise<void> {
    const server = net.createServer((socket) => {
      WirePeer.accept(socket, { clusterId, secret, role: 'mdm', name: `mdm-${this.port}`, log: pino({ level: 'silent' }), onRequest: (request) => this.onRequest(request) }).then(
        (peer) => {
          this.peers.add(peer);
          void peer.closed.then(() => this.peers.delete(peer));
        },
        () => undefined,
      );
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    this.server = server;
  }

  /** Stops listening and drops every connection (a crash, as the SDS sees it). */
  async down(): Promise<void> {
    this.dropConnections();
    const server = this.server;
    this.server = null;
    if (server !== null) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  dropConnections(): void {
    for (const peer of this.peers) peer.destroy();
  }

  private async onRequest(request: WireRequest): Promise<WireReply> {
    if (request.op === MdmOp.RegisterSds) {
      if (this.behaviour === 'drop-on-register') {
        this.refused += 1;
        this.dropConnections();
        return new Promise(() => undefined);
      }
      if (this.behaviour === 'refuse') {
        this.refused += 1;
        return { status: WireStatus.Failed, payload: Buffer.from('not the Master') };
      }
      this.accepted += 1;
      return { status: WireStatus.Ok, payload: Buffer.from('{}') };
    }
    if (request.op === MdmOp.Heartbeat) {
      // Cut off: the request is read, nothing ever comes back.
      if (this.behaviour === 'silent-after-register') return new Promise(() => undefined);
      this.heartbeats += 1;
      return { status: WireStatus.Ok };
    }
    return { status: WireStatus.UnknownOp };
  }
}

interface Started {
  session: MdmSession;
  lines: LogLine[];
  /** Addresses registered with, in order. */
  registrations: string[];
  startedAt: number;
}

function startSession(t: Test, addresses: string[]): Started {
  const { log, lines } = capturedLog();
  const registrations: string[] = [];
  const session = new MdmSession({
    mdmAddresses: addresses,
    clusterId,
    secret,
    role: 'sds',
    name: 'sds1',
    log,
    onRequest: async () => ({ status: WireStatus.UnknownOp }),
    heartbeat: () => Buffer.from('{}'),
    register: async (peer, address) => {
      const reply = await peer.request(MdmOp.RegisterSds, Buffer.from('{}'));
      if (reply.status !== WireStatus.Ok) throw new Error(`the MDM refused the registration: ${reply.payload.toString()}`);
      registrations.push(address);
    },
  });
  t.teardown(() => session.close());
  const startedAt = Date.now();
  session.start();
  return { session, lines, registrations, startedAt };
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const backoffs = (lines: LogLine[]): LogLine[] => lines.filter((line) => line.msg === 'no MDM reachable; serving from the cached map');

t.test('a refused connection moves to the next address at once', async (t) => {
  const slave = await FakeMdm.create(t, 'accept', true);
  const master = await FakeMdm.create(t, 'accept');
  const { session, lines, registrations, startedAt } = startSession(t, [slave.address, master.address]);
  await waitFor('the registration', () => registrations.length === 1);
  t.same(registrations, [master.address], 'registered with the second address');
  t.equal(session.address, master.address, 'the session says where it is');
  t.same(backoffs(lines), [], 'no backoff before it');
  t.match(lines.find((line) => line.mdm === slave.address), { msg: /trying the next/ }, 'the refused address is logged');
  t.comment(`registered after ${Date.now() - startedAt} ms (a backoff would be ${mdmReconnectDelayMsMin} ms at least)`);
  await waitFor('a heartbeat', () => master.heartbeats > 0);
  t.ok(session.peer !== null, 'the connection stays up and heartbeats');
});

t.test('a refused registration moves to the next address at once', async (t) => {
  const down = await FakeMdm.create(t, 'accept', true);
  const steppingDown = await FakeMdm.create(t, 'refuse');
  const master = await FakeMdm.create(t, 'accept');
  const { session, lines, registrations } = startSession(t, [down.address, steppingDown.address, master.address]);
  await waitFor('the registration', () => registrations.length === 1);
  t.same(registrations, [master.address], 'registered with the third address');
  t.equal(steppingDown.refused, 1, 'the second refused once');
  t.equal(session.address, master.address);
  t.same(backoffs(lines), [], 'no backoff before it');
  t.match(lines.find((line) => line.mdm === steppingDown.address), { msg: /trying the next/, err: { message: /refused the registration: not the Master/ } }, 'the refusal is logged with its reason');
});

t.test('a connection dropped during the registration moves to the next address, once', async (t) => {
  const crashing = await FakeMdm.create(t, 'drop-on-register');
  const master = await FakeMdm.create(t, 'accept');
  const { lines, registrations } = startSession(t, [crashing.address, master.address]);
  await waitFor('the registration', () => registrations.length === 1);
  // Two rounds at once (one from the failed registration, one from the close) would
  // register a second time within a backoff.
  await new Promise((resolve) => setTimeout(resolve, mdmReconnectDelayMsMin * 4));
  t.same(registrations, [master.address], 'registered once, with the second');
  t.equal(master.accepted, 1, 'the second MDM saw one registration');
  t.equal(crashing.refused, 1, 'the first was tried once');
  t.same(backoffs(lines), []);
  t.notOk(lines.some((line) => line.msg.startsWith('lost the MDM connection')), 'a connection that never registered is not a lost session');
});

t.test('a connection the Master drops moves to the next address', async (t) => {
  const first = await FakeMdm.create(t, 'accept');
  const second = await FakeMdm.create(t, 'accept');
  const { session, lines, registrations } = startSession(t, [first.address, second.address]);
  await waitFor('the first registration', () => registrations.length === 1);
  t.same(registrations, [first.address]);
  first.dropConnections();
  await waitFor('the second registration', () => registrations.length === 2);
  t.same(registrations, [first.address, second.address], 'registered with the next address, not the same one again');
  t.equal(first.accepted, 1, 'the first MDM was not tried again');
  t.equal(session.address, second.address);
  t.match(
    lines.find((line) => line.msg.startsWith('lost the MDM connection')),
    { mdm: first.address, next: second.address, retryMs: mdmReconnectDelayMsMin },
    'the drop is logged with where it goes next',
  );

  // And round again: the second drops, the first (still up) is next.
  second.dropConnections();
  await waitFor('the third registration', () => registrations.length === 3);
  t.same(registrations, [first.address, second.address, first.address], 'round the list');
});

t.test('an MDM that stops answering heartbeats is dropped and left', async (t) => {
  const cutOff = await FakeMdm.create(t, 'silent-after-register');
  const master = await FakeMdm.create(t, 'accept');
  const { lines, registrations } = startSession(t, [cutOff.address, master.address]);
  await waitFor('the first registration', () => registrations.length === 1);
  const registeredAt = Date.now();
  await waitFor('the second registration', () => registrations.length === 2, mdmHeartbeatTimeoutMs * 3);
  const afterMs = Date.now() - registeredAt;
  t.same(registrations, [cutOff.address, master.address]);
  t.ok(afterMs >= mdmHeartbeatTimeoutMs, `left after ${afterMs} ms: one unanswered heartbeat's timeout (${mdmHeartbeatTimeoutMs} ms), not before`);
  t.match(lines.find((line) => line.msg.startsWith('the MDM stopped answering')), { mdm: cutOff.address, err: { code: 'MB_ERR_WIRE_TIMEOUT' } });
});

t.test('every address down: back off between whole rounds, recover when one comes up', async (t) => {
  const mdms = await Promise.all([FakeMdm.create(t, 'accept', true), FakeMdm.create(t, 'accept', true), FakeMdm.create(t, 'accept', true)]);
  const { session, lines, registrations } = startSession(
    t,
    mdms.map((mdm) => mdm.address),
  );
  await waitFor('two backoffs', () => backoffs(lines).length >= 2);
  const [firstBackoff, secondBackoff] = backoffs(lines) as [LogLine, LogLine];
  t.equal(firstBackoff.retryMs, mdmReconnectDelayMsMin, 'the first backoff is the minimum');
  t.equal(secondBackoff.retryMs, mdmReconnectDelayMsMin * 2, 'and doubles');
  t.ok(secondBackoff.time - firstBackoff.time >= mdmReconnectDelayMsMin - 5, 'the rounds are a backoff apart');
  const attempts = lines.filter((line) => line.time <= secondBackoff.time && line.msg.startsWith('MDM not available')).map((line) => line.mdm);
  t.same(attempts, [...mdms, ...mdms].map((mdm) => mdm.address), 'each round tries every address once, in order');
  t.same(registrations, []);
  t.equal(session.peer, null);

  await (mdms[1] as FakeMdm).up();
  await waitFor('the registration', () => registrations.length === 1);
  t.same(registrations, [(mdms[1] as FakeMdm).address], 'registered with the one that came up');

  // A registration resets the backoff: after a drop the next round starts at the minimum.
  (mdms[1] as FakeMdm).dropConnections();
  await waitFor('the drop', () => lines.some((line) => line.msg.startsWith('lost the MDM connection')));
  t.match(
    lines.find((line) => line.msg.startsWith('lost the MDM connection')),
    { retryMs: mdmReconnectDelayMsMin },
    'the backoff was reset',
  );
  await waitFor('the registration again', () => registrations.length === 2);
  t.same(registrations, [(mdms[1] as FakeMdm).address, (mdms[1] as FakeMdm).address], 'the only MDM up, found again after a round');
});

t.test('the address list is checked when the session is made', async (t) => {
  const options = {
    clusterId,
    secret,
    role: 'sds' as const,
    name: 'sds1',
    log: pino({ level: 'silent' }),
    onRequest: async () => ({ status: WireStatus.UnknownOp }),
    heartbeat: () => Buffer.alloc(0),
    register: async () => undefined,
  };
  t.throws(() => new MdmSession({ ...options, mdmAddresses: [] }), { code: 'MB_ERR_ASSERTION' });
  t.throws(() => new MdmSession({ ...options, mdmAddresses: ['127.0.0.1:1', '127.0.0.1:1'] }), { code: 'MB_ERR_ASSERTION' });
  t.throws(() => new MdmSession({ ...options, mdmAddresses: Array.from({ length: 6 }, (_, index) => `127.0.0.1:${index + 1}`) }), { code: 'MB_ERR_ASSERTION' });
});
