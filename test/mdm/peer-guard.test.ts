// Proves that a bad peer is bounded at the MDM and starves no honest one (issue 23, "Bad
// input"; src/mdm/peer-guard.ts):
//
// - the guard's decisions, with the time handed in: connections that stay up are never
//   charged to their address, short ones are (a burst, then a rate), refused ones are not;
//   open connections per address are capped; registrations per peer are a token bucket;
//   what it tracks is bounded and forgets refilled keys; payloads are bounded per op; a
//   refusal is logged once per interval with the count of those not logged;
// - a registration claiming more than sdsDevicesMax devices is refused by its parser, and the
//   fleet simulator's bound is that same limit;
// - against a real `meshblock mdm start` with simulated honest SDSs and SDCs heartbeating
//   (src/sim/fleet.ts, from 127.0.0.1): a peer reconnecting and registering in a loop at full
//   speed from 127.0.0.2 for ~5 s gets at most its allowance of handshakes and registrations,
//   the rest refused with MB_ERR_PEER_THROTTLED and one log line per kind; meanwhile no honest
//   SDS or SDC is disconnected or declared down, and a new connection from 127.0.0.1 is served.
//   Oversized heartbeats are refused unread (MB_ERR_REQUEST_TOO_LARGE) and logged once.
//   Nothing is timed but the loop's length; the bounds asserted are counts.

import * as net from 'node:net';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { mdmChurnPerAddressBurstMax, mdmChurnPerAddressPerSecond, mdmHeartbeatBytesMax, mdmRegistrationRefillMs, mdmRegistrationsPerPeerBurstMax, mdmRequestBytesMax, sdsDevicesMax } from '../../src/common/limits.js';
import { PeerGuard, RateLimiter, RefusalLog, TokenBuckets, addressKey, type ConnectionTicket } from '../../src/mdm/peer-guard.js';
import { MdmOp, parseSdsRegistration, type RegisteredDevice, type SdsRegistration } from '../../src/wire/mdm-ops.js';
import { WirePeer, WireStatus } from '../../src/wire/peer.js';
import { fleetDevicesPerSdsMax, processCpuSeconds } from '../../src/sim/fleet.js';
import { until } from '../helpers/cluster.js';
import { startFleetCluster } from '../helpers/fleet.js';

const silent = pino({ level: 'silent' });

/** Admits a connection, failing the test if it is refused. */
function admitted(t: Test, limiter: RateLimiter, address: string, nowMs: number, what: string): ConnectionTicket {
  const ticket = limiter.admitConnection(address, nowMs);
  if ('code' in ticket) throw new Error(`${what}: refused: ${ticket.message}`);
  t.pass(what);
  return ticket;
}

t.test('short connections are charged to their address, long ones never, refused ones not', async (t) => {
  const limiter = new RateLimiter({ churnPerAddressBurstMax: 4, churnPerAddressPerSecond: 2, shortConnectionMs: 1000 });
  let nowMs = 1_000_000;
  // Honest: thousands open at once from one address, staying up past the short bound.
  const fleet = Array.from({ length: 5000 }, () => limiter.admitConnection('10.0.0.1', nowMs));
  t.ok(fleet.every((ticket) => !('code' in ticket)), '5000 connections at once from one address that never churned: all admitted');
  for (const ticket of fleet) if (!('code' in ticket)) limiter.connectionClosed(ticket, nowMs + 1000);
  // A loop: four short ones pass, the fifth is refused.
  for (let index = 0; index < 4; index += 1) limiter.connectionClosed(admitted(t, limiter, '10.0.0.2', nowMs, `short connection ${index + 1} of the burst admitted`), nowMs + 1);
  const refused = limiter.admitConnection('10.0.0.2', nowMs + 1);
  t.match(refused, { code: 'MB_ERR_PEER_THROTTLED', message: /10\.0\.0\.2 made over 4 connections that ended within 1000 ms/ }, 'past the burst the address is refused, and told why');
  limiter.connectionClosed(admitted(t, limiter, '10.0.0.3', nowMs, 'another address is not affected'), nowMs + 5000);
  // Refusals cost nothing: a thousand of them, then half a second refills one token.
  for (let index = 0; index < 1000; index += 1) t.ok('code' in limiter.admitConnection('10.0.0.2', nowMs + 1));
  nowMs += 501;
  const next = admitted(t, limiter, '10.0.0.2', nowMs, 'refused attempts were not charged: the rate refills it');
  limiter.connectionClosed(next, nowMs + 1);
  t.ok('code' in limiter.admitConnection('10.0.0.2', nowMs + 1), 'and that connection, short too, spent it');
  nowMs += 2001;
  admitted(t, limiter, '10.0.0.2', nowMs, 'the loop stopped: the allowance comes back');
});

t.test('an address that churned pays at accept: a loop with many in flight gets no more than the rate', async (t) => {
  const limiter = new RateLimiter({ churnPerAddressBurstMax: 4, churnPerAddressPerSecond: 2, shortConnectionMs: 1000 });
  let nowMs = 0;
  limiter.connectionClosed(admitted(t, limiter, '10.0.0.2', nowMs, 'one short connection'), nowMs + 1);
  // 100 connections in flight at once: the three tokens left are paid at accept, the rest refused.
  const burst = Array.from({ length: 100 }, () => limiter.admitConnection('10.0.0.2', nowMs + 1));
  const tickets = burst.filter((ticket): ticket is ConnectionTicket => !('code' in ticket));
  t.equal(tickets.length, 3, 'only as many as the allowance holds');
  for (const ticket of tickets) limiter.connectionClosed(ticket, nowMs + 2);
  t.ok('code' in limiter.admitConnection('10.0.0.2', nowMs + 2), 'closing short charges nothing more, and nothing is left');
  // 10 s of 100 in flight, tried every 10 ms: 2 a second get through.
  let through = 0;
  for (nowMs = 10; nowMs <= 10_000; nowMs += 10) {
    for (let index = 0; index < 100; index += 1) {
      const ticket = limiter.admitConnection('10.0.0.2', nowMs);
      if ('code' in ticket) continue;
      through += 1;
      limiter.connectionClosed(ticket, nowMs + 1);
    }
  }
  t.ok(through >= 19 && through <= 21, `${through} connections in 10 s at 2 a second`);
  // A connection that lasts gives its token back: 1 s after the loop the address holds 2 of 4.
  nowMs = 11_000;
  const lasting = admitted(t, limiter, '10.0.0.2', nowMs, 'a connection from the churned address');
  t.ok(lasting.reserved, 'paid at accept');
  limiter.connectionLasted(lasting, nowMs + 1000);
  limiter.connectionClosed(lasting, nowMs + 60_000);
  // At 12 s: 1 left + 2 refilled + 1 given back = the whole burst of 4 (3 without the refund), spent by short connections.
  let passed = 0;
  for (let index = 0; index < 10; index += 1) {
    const ticket = limiter.admitConnection('10.0.0.2', 12_000);
    if ('code' in ticket) continue;
    passed += 1;
    limiter.connectionClosed(ticket, 12_000);
  }
  t.equal(passed, 4, 'given back once it lasted; its close later charged nothing');
});

t.test('an IPv6 peer is bounded by its /64, an IPv4 one by its address', async (t) => {
  t.equal(addressKey('10.1.2.3'), '10.1.2.3');
  t.equal(addressKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
  t.equal(addressKey('2001:0db8:0001:0002:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64', 'every address of one /64 is one key');
  t.equal(addressKey('2001:db8::1'), '2001:db8:0:0::/64');
  t.equal(addressKey('::1'), '0:0:0:0::/64');
  t.equal(addressKey('fe80::1:2:3:4'), 'fe80:0:0:0::/64');
  t.equal(addressKey('::ffff:10.1.2.3'), '10.1.2.3', 'a mapped IPv4 address is its IPv4 address');
  t.equal(addressKey('unknown'), 'unknown');
});

t.test('connections held open per address are capped'
, async (t) => {
  const limiter = new RateLimiter({ connectionsPerAddressMax: 3 });
  const open = [0, 1, 2].map((index) => admitted(t, limiter, '10.0.0.1', 0, `connection ${index + 1}`));
  t.match(limiter.admitConnection('10.0.0.1', 0), { code: 'MB_ERR_PEER_THROTTLED', message: /holds 3 connections/ }, 'the fourth open one is refused');
  limiter.connectionClosed(open[0] as ConnectionTicket, 60_000);
  admitted(t, limiter, '10.0.0.1', 60_000, 'one closed (long-lived: not churn), one admitted');
});

t.test('registrations per peer: a burst, then one per refill time', async (t) => {
  const limiter = new RateLimiter({ registrationsPerPeerBurstMax: 3, registrationRefillMs: 10_000 });
  for (let index = 0; index < 3; index += 1) t.equal(limiter.admitRegistration('sds:5d50000000000001', 0), null);
  const refused = limiter.admitRegistration('sds:5d50000000000001', 100);
  t.equal(refused?.code, 'MB_ERR_PEER_THROTTLED', 'the fourth in a row is refused');
  t.match(refused?.message, /sds 5d50000000000001 registered over 3 times in a row .* once every 10 s/);
  t.equal(limiter.admitRegistration('sds:5d50000000000002', 100), null, 'another SDS registers');
  t.not(limiter.admitRegistration('sds:5d50000000000001', 9_999), null, 'not before the refill');
  t.equal(limiter.admitRegistration('sds:5d50000000000001', 10_000), null, 'one after it');
});

t.test('what the guard tracks is bounded, and refilled keys are forgotten', async (t) => {
  const buckets = new TokenBuckets(2, 1 / 1000, 100);
  for (let index = 0; index < 100; index += 1) buckets.charge(`10.0.${index >> 8}.${index & 255}`, 0);
  t.equal(buckets.size, 100, 'a hundred charged keys are tracked');
  t.notOk(buckets.take('10.9.9.9', 0), 'a new key past the bound is refused, not tracked');
  t.equal(buckets.size, 100);
  t.ok(buckets.take('10.9.9.9', 2000), 'once the others refilled they are swept and it gets room');
  t.ok(buckets.size <= 2, `only what is not refilled stays (${buckets.size})`);

  const limiter = new RateLimiter({ keysMax: 10 });
  for (let index = 0; index < 10; index += 1) admitted(t, limiter, `10.1.0.${index}`, 0, `address ${index + 1}`);
  t.match(limiter.admitConnection('10.1.0.99', 0), { code: 'MB_ERR_PEER_THROTTLED', message: /10 addresses/ }, 'open connections from more addresses than keysMax are refused');
  admitted(t, limiter, '10.1.0.1', 0, 'an address already holding one still connects');
});

t.test('payloads are bounded per op, heartbeats more loosely', async (t) => {
  const limiter = new RateLimiter();
  t.equal(limiter.checkPayload(MdmOp.Heartbeat, mdmHeartbeatBytesMax), null);
  t.match(limiter.checkPayload(MdmOp.Heartbeat, mdmHeartbeatBytesMax + 1), { code: 'MB_ERR_REQUEST_TOO_LARGE', message: /a heartbeat of \d+ bytes, over its bound/ });
  t.equal(limiter.checkPayload(MdmOp.RegisterSds, mdmRequestBytesMax), null);
  t.match(limiter.checkPayload(MdmOp.RebuildDone, mdmRequestBytesMax + 1), { code: 'MB_ERR_REQUEST_TOO_LARGE', message: /op 44/ });
});

t.test('a refusal is logged once per interval, with the count of those not logged', async (t) => {
  const log = new RefusalLog(60_000, 4);
  t.equal(log.due('a', 0), 0, 'the first is logged');
  for (let index = 1; index <= 30; index += 1) t.equal(log.due('a', index * 1000), null);
  t.equal(log.due('b', 1000), 0, 'another key has its own');
  t.equal(log.due('a', 60_000), 30, 'a minute on: logged again, saying 30 were not');

  const lines: Array<{ msg: string; notLoggedSince: number }> = [];
  const guard = new PeerGuard(pino({ level: 'warn' }, { write: (line: string) => lines.push(JSON.parse(line) as { msg: string; notLoggedSince: number }) }));
  const session = { sdsId: '5d50000000000001', sdcId: null, remoteAddress: '10.0.0.1' };
  const huge = { op: MdmOp.Heartbeat, epoch: 0, payload: Buffer.alloc(mdmHeartbeatBytesMax + 1) };
  for (let beat = 0; beat < 10; beat += 1) {
    const reply = guard.checkRequest(session, huge, beat * 1000);
    t.equal(reply?.status, WireStatus.Failed);
    t.match(reply?.payload?.toString(), /^MB_ERR_REQUEST_TOO_LARGE: a heartbeat of 4194305 bytes/);
  }
  t.equal(lines.length, 1, 'ten refused heartbeats in 10 s: one line');
  t.match(lines[0]?.msg, /MDM request refused unread: too large/);
  t.equal(guard.refused.payloads, 10);
});

t.test('a registration claiming more than sdsDevicesMax devices is refused', async (t) => {
  const devices = (count: number): RegisteredDevice[] => Array.from({ length: count }, (_, index) => ({ deviceId: index.toString(16).padStart(16, '0'), path: `/dev/sd${index}`, capacityBytes: 1 << 30 }));
  const registration = (count: number): Buffer => Buffer.from(JSON.stringify({ sdsId: '5d50000000000001', name: 'sds1', address: '10.0.0.1:7072', devices: devices(count) } satisfies SdsRegistration));
  t.equal(parseSdsRegistration(registration(sdsDevicesMax)).devices.length, sdsDevicesMax, `${sdsDevicesMax} devices are taken`);
  t.throws(() => parseSdsRegistration(registration(sdsDevicesMax + 1)), { code: 'MB_ERR_INVALID_ARGUMENT', message: /registration\.devices: must list at most 64 devices \(sdsDevicesMax\), got 65/ });
  t.throws(() => parseSdsRegistration(registration(5000)), { code: 'MB_ERR_INVALID_ARGUMENT' }, 'thousands too');
  t.equal(fleetDevicesPerSdsMax, sdsDevicesMax, "the fleet simulator's bound is the same limit");
});

const sdsCount = 48;
const sdcCount = 16;
const loopMs = 5000;
const loopConcurrency = 4;
const looperAddress = '127.0.0.2';
const GiB = 1024 ** 3;

interface SdsObject {
  id: string;
  sdsState: string;
  mdmConnectionState: string;
}

/** A wire connection to `address` made from `localAddress`. */
async function connectFrom(address: string, localAddress: string, clusterId: string, secret: Buffer): Promise<WirePeer> {
  const [host, port] = address.split(/:(?=\d+$)/) as [string, string];
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const connecting = net.connect({ host, port: Number(port), localAddress }, () => resolve(connecting));
    connecting.once('error', reject);
  });
  socket.on('error', () => undefined);
  return WirePeer.connect(socket, { clusterId, secret, role: 'sds', name: 'looper', log: silent });
}

t.test(`a peer reconnecting and registering in a loop for ${loopMs / 1000} s is throttled; ${sdsCount} honest SDSs and ${sdcCount} SDCs keep their heartbeats`, async (t) => {
  const dir = t.testdir();
  const log = pino({ level: 'warn' }, pino.destination(2));
  const { cluster, mdm, fleet, api } = await startFleetCluster(t, dir, { sdsCount, devicesPerSds: 4, sdcCount, deviceCapacityBytes: 64 * GiB }, ['--sds-down-after', '2', '--metrics', 'off', '--log-level', 'warn'], log);
  const connectedSdss = async (): Promise<number> => (await api.get<SdsObject[]>('/api/types/Sds/instances')).filter((sds) => sds.mdmConnectionState === 'Connected').length;
  await until('every SDS connected', async () => ((await connectedSdss()) === sdsCount ? true : undefined), 30_000);
  // The pool planned: every registration of the looper now costs a journal record and a map push.
  await api.post('/api/types/Device/instances', { sdsId: cluster.lastDevice.sdsId, storagePoolId: cluster.storagePoolId, deviceCurrentPathName: cluster.lastDevice.path });
  await until('every peer holding the planned map', async () => (fleet.epochMax > 0 && fleet.holding(fleet.epochMax).sds === sdsCount ? true : undefined), 30_000);
  const logBefore = mdm.stderr().length;

  // The loop: connect, prove the secret, register, hang up; four at once, as fast as it goes.
  const counts = { attempts: 0, setupFailed: 0, handshaken: 0, registered: 0, throttled: 0, otherReplies: 0 };
  const registration = Buffer.from(JSON.stringify({ sdsId: '100f000000000001', name: 'looper', address: `${looperAddress}:7072`, devices: [] } satisfies SdsRegistration));
  const cpuBefore = processCpuSeconds(mdm.process.pid as number);
  const startMs = Date.now();
  const loop = async (): Promise<void> => {
    while (Date.now() - startMs < loopMs) {
      counts.attempts += 1;
      let peer: WirePeer;
      try {
        peer = await connectFrom(mdm.address, looperAddress, cluster.clusterId, cluster.secret);
      } catch {
        counts.setupFailed += 1;
        continue;
      }
      counts.handshaken += 1;
      try {
        const reply = await peer.request(MdmOp.RegisterSds, registration);
        if (reply.status === WireStatus.Ok) counts.registered += 1;
        else if (reply.payload.toString().startsWith('MB_ERR_PEER_THROTTLED')) counts.throttled += 1;
        else counts.otherReplies += 1;
      } catch {
        counts.otherReplies += 1;
      }
      peer.destroy();
    }
  };
  // Meanwhile, the honest side: every SDS stays connected (sampled through the REST API).
  let connectedMin = sdsCount;
  const sampling = (async () => {
    while (Date.now() - startMs < loopMs) {
      connectedMin = Math.min(connectedMin, await connectedSdss());
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  })();
  await Promise.all([...Array.from({ length: loopConcurrency }, loop), sampling]);
  const loopS = (Date.now() - startMs) / 1000;
  const mdmCores = (processCpuSeconds(mdm.process.pid as number) - cpuBefore) / loopS;
  t.comment(`looper in ${loopS.toFixed(1)} s: ${JSON.stringify(counts)}; MDM CPU ${mdmCores.toFixed(2)} cores meanwhile`);

  // A new honest connection from 127.0.0.1, while the looper is refused: served.
  const newcomer = await connectFrom(mdm.address, '127.0.0.1', cluster.clusterId, cluster.secret);
  t.teardown(() => newcomer.destroy());
  t.equal((await newcomer.request(MdmOp.GetMap, Buffer.alloc(0))).status, WireStatus.Ok, 'a new connection from another address is served during the throttling');
  // Oversized heartbeats: refused unread, told why.
  const huge = Buffer.alloc(mdmHeartbeatBytesMax + 1, 0x20);
  for (let beat = 0; beat < 3; beat += 1) {
    const reply = await newcomer.request(MdmOp.Heartbeat, huge);
    t.equal(reply.status, WireStatus.Failed, `oversized heartbeat ${beat + 1} refused`);
    t.match(reply.payload.toString(), /^MB_ERR_REQUEST_TOO_LARGE: /);
  }
  const claims = Buffer.from(JSON.stringify({ sdsId: '100f000000000002', name: 'claims', address: '127.0.0.1:7073', devices: Array.from({ length: 1000 }, (_, index) => ({ deviceId: index.toString(16).padStart(16, '0'), path: `/dev/x${index}`, capacityBytes: GiB })) }));
  const claimed = await newcomer.request(MdmOp.RegisterSds, claims);
  t.not(claimed.status, WireStatus.Ok, 'a registration claiming 1,000 devices is refused');
  t.match(claimed.payload.toString(), /at most 64 devices/);

  // The looper's allowance: the address's burst plus its rate (and the handshakes already
  // under way when it ran out), and its SDS id's registration burst plus its refill.
  const handshakesMax = mdmChurnPerAddressBurstMax + mdmChurnPerAddressPerSecond * Math.ceil(loopS + 1) + 2 * loopConcurrency;
  const registrationsMax = mdmRegistrationsPerPeerBurstMax + Math.ceil((loopS * 1000) / mdmRegistrationRefillMs) + 1;
  t.ok(counts.attempts > 4 * handshakesMax, `the loop ran at full speed: ${counts.attempts} attempts`);
  t.ok(counts.handshaken <= handshakesMax, `handshakes the MDM took part in: ${counts.handshaken}, at most ${handshakesMax}`);
  t.ok(counts.setupFailed >= counts.attempts - handshakesMax, `connections refused at accept: ${counts.setupFailed}`);
  t.ok(counts.registered >= 1 && counts.registered <= registrationsMax, `registrations accepted: ${counts.registered}, at most ${registrationsMax}`);
  t.ok(counts.throttled >= 1, `registrations refused with MB_ERR_PEER_THROTTLED: ${counts.throttled}`);
  t.equal(counts.otherReplies, 0, 'no other failure');

  // The honest peers kept their heartbeats: none dropped, none declared down.
  t.equal(connectedMin, sdsCount, `every one of the ${sdsCount} honest SDSs stayed connected throughout`);
  const sdss = await api.get<SdsObject[]>('/api/types/Sds/instances');
  const fleetIds = new Set(cluster.sdss.map((sds) => sds.sdsId));
  t.same(sdss.filter((sds) => fleetIds.has(sds.id) && (sds.sdsState !== 'Normal' || sds.mdmConnectionState !== 'Connected')), [], 'and the MDM lists them all connected, none down');
  const mdmLog = mdm.stderr().slice(logBefore);
  const honestLost = mdmLog.split('\n').filter((line) => /SDS declared down|SDS disconnected|SDC disconnected/.test(line) && !line.includes('100f00000000000'));
  t.same(honestLost, [], 'the MDM logged no honest peer lost (the looper’s own disconnections aside)');
  t.equal(fleet.holding(0).sdc, sdcCount, 'every SDC is still there');

  // Refusals logged once per kind and key, not per refusal.
  const lines = mdmLog.split('\n').filter((line) => line.includes('"component":"peer-guard"'));
  const refusedConnections = lines.filter((line) => line.includes('wire connection refused') && line.includes(looperAddress));
  t.equal(refusedConnections.length, 1, 'the refused connections: one line');
  t.match(refusedConnections[0], /MB_ERR_PEER_THROTTLED.*reconnect loop/);
  t.equal(lines.filter((line) => line.includes('registration refused') && line.includes('100f000000000001')).length, 1, 'the refused registrations: one line');
  t.equal(lines.filter((line) => line.includes('too large')).length, 1, 'the three oversized heartbeats: one line');
});
