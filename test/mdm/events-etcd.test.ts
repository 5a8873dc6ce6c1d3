// The event log of an MDM cluster, in a real etcd (one member, TLS with client
// certificates, as the MDMs reach it): two logs over the same store stand for an old and a
// new Master. The one that did not write last numbers its next event after the other's
// (the compare-and-swap on meshblock/event-head refuses its stale id; it reads the log
// again and numbers after it), and a third reading the store — a Master after a failover —
// sees every event once, in order, and goes on numbering.

import { pino } from 'pino';
import t from 'tap';
import { EtcdEventStore, EventLog, type EventInput } from '../../src/mdm/events.js';
import { etcdClient, startEtcdCluster } from '../helpers/etcd-cluster.js';

const log = pino({ level: 'silent' });
const change = (what: string): EventInput => ({ severity: 'info', type: 'configChanged', object: 'System::c1', objectName: null, message: what, user: 'admin' });

t.test('two Masters in turn number one log in etcd; a third reads it whole', async (t) => {
  const etcd = await startEtcdCluster(t, { members: 1, dir: t.testdir() });
  const client = etcdClient(etcd, 'mdm1');
  const first = await EventLog.open(new EtcdEventStore(client, log), log);
  const second = await EventLog.open(new EtcdEventStore(client, log), log);
  t.equal(first.lastEventId, 0, 'an empty log');
  for (const what of ['a', 'b', 'c']) await first.record(change(what));
  const fromSecond = await second.record(change('d'));
  t.equal(fromSecond.id, 4, 'the stale Master numbers after what the other wrote');
  const again = await first.record(change('e'));
  t.equal(again.id, 5, '... and so does the first, in its turn');
  const third = await EventLog.open(new EtcdEventStore(client, log), log);
  t.same(
    third.all().map((event) => `${event.id}:${event.message}`),
    ['1:a', '2:b', '3:c', '4:d', '5:e'],
    'a new Master reads every event once, in order',
  );
  t.equal((await third.record(change('f'))).id, 6, 'and goes on numbering');
  const head = await client.get('meshblock/event-head').string();
  t.equal(head, '6', 'the head in etcd is the last id');
});
