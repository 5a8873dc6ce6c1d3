// GET /api/events over real HTTPS against a RestApi with an event log in a test directory:
// bad parameters are refused naming the parameter; a change made through the API is
// recorded with the user and is what a waiting long poll wakes up with; a long poll does not
// hold the API's close() up; a refused login is recorded with the name tried, never the
// password.

import * as fs from 'node:fs';
import { pino } from 'pino';
import t from 'tap';
import { AdminAuth } from '../../src/mdm/auth.js';
import { EventLog, FileEventStore, eventFileNames, type MdmEvent } from '../../src/mdm/events.js';
import { RestApi } from '../../src/mdm/rest-api.js';
import { ensureSelfSignedCertificate } from '../../src/mdm/tls.js';
import { TestController, basic, call, testPassword } from '../helpers/rest.js';

const log = pino({ level: 'silent' });

async function start(t: { testdir(): string; teardown(fn: () => unknown): void }) {
  const dir = t.testdir();
  const auth = await AdminAuth.initialize(dir, testPassword, { scryptCost: 1024 });
  const certificate = ensureSelfSignedCertificate(dir);
  const events = await EventLog.open(new FileEventStore(dir, log), log);
  const controller = new TestController();
  const api = new RestApi({ controller, log, auth, tls: { cert: certificate.cert, key: certificate.key }, events });
  const address = await api.listen('127.0.0.1', 0);
  t.teardown(async () => {
    await api.close();
    await events.close();
  });
  const target = { url: `https://127.0.0.1:${address.port}`, ca: certificate.cert };
  const reply = await call(target, 'GET', '/api/login', { authorization: basic('admin', testPassword) });
  return { api, events, target, dir, token: reply.body as string };
}

t.test('GET /api/events: parameters, long poll, changes and refused logins', async (t) => {
  const { api, target, dir, token } = await start(t);
  for (const [query, field] of [['since=abc', 'since'], ['limit=0', 'limit'], ['limit=1001', 'limit'], ['wait=26', 'wait'], ['from=1', 'from']] as const) {
    const answer = await call(target, 'GET', `/api/events?${query}`, { token });
    t.equal(answer.status, 400, `${query} is refused`);
    t.match((answer.body as { message: string }).message, new RegExp(`^${field}: `), '... naming the parameter');
  }
  const empty = await call(target, 'GET', '/api/events', { token });
  t.same(empty.body, { events: [], lastId: 0 }, 'an empty log');

  const waiting = call(target, 'GET', '/api/events?since=0&wait=20', { token });
  const created = await call(target, 'POST', '/api/types/ProtectionDomain/instances', { token, body: { name: 'pd1' } });
  t.equal(created.status, 200, 'a change');
  const woken = (await waiting).body as { events: MdmEvent[]; lastId: number };
  t.equal(woken.events.length, 1, 'the long poll answers with it');
  t.match(woken.events[0], { id: 1, type: 'configChanged', severity: 'info', objectName: 'pd1', user: 'admin', object: /^ProtectionDomain::/ });
  t.match(woken.events[0]?.message, /^add ProtectionDomain \(name="pd1"\) from /, 'the message says what was done');

  const refused = await call(target, 'GET', '/api/login', { authorization: basic('mallory', 'a guess at the password') });
  t.equal(refused.status, 401, 'a wrong password');
  const after = (await call(target, 'GET', '/api/events?since=1', { token })).body as { events: MdmEvent[] };
  t.match(after.events, [{ id: 2, type: 'loginRefused', user: 'mallory', object: 'User::mallory' }], 'the refused login is recorded');
  t.notMatch(fs.readFileSync(`${dir}/${eventFileNames.current}`, 'utf8'), /a guess at the password/, 'never the password');

  // A follower waiting must not hold the API's shutdown up for its 25 s.
  const polling = call(target, 'GET', '/api/events?since=2&wait=25', { token });
  await new Promise((resolve) => setTimeout(resolve, 200));
  const startedMs = Date.now();
  await api.close();
  const answer = await polling;
  t.equal(answer.status, 200, 'the long poll is answered at close');
  t.ok(Date.now() - startedMs < 20_000, 'close() did not wait the long poll out');
});
