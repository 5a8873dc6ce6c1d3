// The event log of an MDM cluster survives a failover: a 3-node cluster (etcd members of
// Debian's etcd, two MDMs), a change made through the Master is in the log, the Master is
// killed with -9, and the new Master serves the same log (the log is in etcd, not in the
// dead MDM's data directory) and numbers the next change after it: no event lost, none
// repeated, ids in order.

import t from 'tap';
import { until } from '../helpers/cluster.js';
import { startMdmCluster } from '../helpers/mdm-cluster.js';
import type { MdmEvent } from '../../src/mdm/events.js';

function parseEvents(stdout: string): MdmEvent[] {
  return stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as MdmEvent);
}

t.test('kill -9 of the Master: the new Master serves the same event log and numbers on', async (t) => {
  const dir = t.testdir();
  const cluster = await startMdmCluster(t, dir, { size: 3 });
  const first = await cluster.master();
  t.equal((await cluster.cli(['pd', 'add', '--name', 'pd1'])).code, 0, 'a change through the Master');
  const before = await until('the change in the event log', async () => {
    const events = parseEvents((await cluster.cli(['events', '--json'])).stdout);
    return events.some((event) => event.objectName === 'pd1') ? events : undefined;
  });

  await cluster.mdms[first]?.handle?.kill();
  const second = await cluster.master(60_000);
  t.not(second, first, 'the other MDM took over');
  await until('the new Master to take a change', async () => ((await cluster.cli(['pd', 'add', '--name', 'pd2'])).code === 0 ? true : undefined), 60_000);
  const after = parseEvents((await cluster.cli(['events', '--json', '--since', '0'])).stdout);
  t.same(
    after.filter((event) => event.id <= (before.at(-1) as MdmEvent).id),
    before,
    'the new Master serves every event the old one recorded',
  );
  t.ok(
    after.every((event, index) => index === 0 || event.id === (after[index - 1] as MdmEvent).id + 1),
    'ids follow each other: none lost, none repeated',
  );
  const pd1 = after.filter((event) => event.objectName === 'pd1');
  const pd2 = after.filter((event) => event.objectName === 'pd2');
  t.equal(pd1.length, 1, 'pd1 once');
  t.equal(pd2.length, 1, 'pd2 once (the retried add was refused, not recorded twice)');
  t.ok((pd2[0] as MdmEvent).id > (pd1[0] as MdmEvent).id, 'numbered after the old Master\'s events');
  t.equal(pd2[0]?.user, 'admin', 'with its user');
});
