// The MDM cluster's store in a real etcd (one member, TLS): appends are conditioned on the
// mastership and on the log's head, snapshots larger than one etcd value are split into parts
// and read back whole, a snapshot drops the commands it covers (a follower behind it is told
// to load again), and a deposed Master's snapshot is not committed.

import { Lease } from 'etcd3';
import pino from 'pino';
import t from 'tap';
import { loadEtcdClientTls } from '../../src/mdm/etcd-pki.js';
import { EtcdCommandLog, EtcdStore, etcdKeys, type MasterRecord } from '../../src/mdm/etcd-store.js';
import { emptyModel, type SystemModel } from '../../src/mdm/model.js';
import type { Command } from '../../src/mdm/state-machine.js';
import { etcdValueBytesMax, journalCompactAfterRecords } from '../../src/common/limits.js';
import { startEtcdCluster } from '../helpers/etcd-cluster.js';

const log = pino({ level: 'silent' });
const record = (name: string): MasterRecord => ({ name, wireAddress: '127.0.0.1:1', apiAddress: '127.0.0.1:2', apiCertificate: '', startedAtMs: 0, lease: '0' });
const command = (index: number): Command => ({ type: 'addProtectionDomain', name: `pd${index}` }) as unknown as Command;

t.test('the store: campaign, conditioned appends, snapshots in parts, compaction', async (t) => {
  const etcd = await startEtcdCluster(t, { members: 1, dir: t.testdir() });
  const store = EtcdStore.connect({ endpoints: etcd.endpoints, tls: loadEtcdClientTls(etcd.pkiDir, 'mdm1'), log });
  t.teardown(() => store.close());

  t.equal(await store.readCluster(), null, 'no cluster before the first MDM');
  const made = await store.createCluster({ clusterId: '0123456789abcdef', name: 'c1', secret: 'ab', adminAuth: '{}' });
  const again = await store.createCluster({ clusterId: 'fedcba9876543210', name: 'c2', secret: 'cd', adminAuth: '{}' });
  t.equal(again.clusterId, made.clusterId, 'a second MDM gets the identity the first made');

  const lease1 = store.client.lease(3, { autoKeepAlive: true }) as Lease;
  t.teardown(() => lease1.revoke().catch(() => undefined));
  const term1 = await store.campaign(record('mdm1'), lease1);
  t.type(term1, 'string', 'the first campaign wins');
  const lease2 = store.client.lease(3, { autoKeepAlive: true }) as Lease;
  t.teardown(() => lease2.revoke().catch(() => undefined));
  t.equal(await store.campaign(record('mdm2'), lease2), null, 'a second campaign loses while the Master holds the key');

  t.ok(await store.append(term1 as string, 0, [command(1), command(2)]), 'the Master appends');
  t.notOk(await store.append(term1 as string, 0, [command(3)]), 'an append after a stale head is refused');
  t.notOk(await store.append('1', 2, [command(3)]), 'an append of another mastership is refused');
  t.same((await store.readAfter(0)) as Command[], [command(1), command(2)], 'a follower reads the commands in order');
  const raw = await store.client.get(etcdKeys.log(1)).json();
  t.same(raw, { term: term1, command: command(1) }, 'each record names the term it was committed in');

  // A snapshot larger than one etcd value: stored in parts, read back whole.
  const model = emptyModel('0123456789abcdef', 'c1') as SystemModel & { padding?: string };
  model.padding = 'x'.repeat(Math.round(2.5 * etcdValueBytesMax));
  t.ok(await store.writeSnapshot(term1 as string, 2, model), 'the Master writes a snapshot');
  const loaded = await store.load();
  t.same(loaded.model, model, 'the snapshot reads back whole');
  t.equal(loaded.snapshotSeq, 2);
  t.same(loaded.commands, [], 'the commands it covers are gone');
  t.equal(await store.readAfter(0), 'compacted', 'a follower behind the snapshot is told to load again');
  t.equal((await store.client.getAll().prefix(etcdKeys.snapshotPartsPrefix).keys()).length, 3, 'in three parts');

  t.ok(await store.append(term1 as string, 2, [command(3)]), 'appends go on after the snapshot');
  const after = await store.load();
  t.same(after.commands, [command(3)], 'load: the snapshot, then the commands after it');
  t.equal(after.seq, 3);

  // The Master resigns; the other MDM takes over; the old one can no longer commit anything.
  await store.resign(term1 as string);
  const term2 = await store.campaign(record('mdm2'), lease2);
  t.type(term2, 'string', 'the mastership is taken over');
  t.notOk(await store.append(term1 as string, 3, [command(4)]), 'the deposed Master cannot append');
  t.notOk(await store.writeSnapshot(term1 as string, 3, model), 'nor commit a snapshot');
  t.equal((await store.load()).snapshotSeq, 2, 'the snapshot is the one committed by a Master');
  t.equal((await store.client.getAll().prefix(etcdKeys.snapshotPartsPrefix).keys()).length, 3, "the deposed Master's parts are cleared");

  // The command log compacts by itself after journalCompactAfterRecords commands.
  const commandLog = new EtcdCommandLog(store, term2 as string, 3, log);
  for (let index = 0; index < journalCompactAfterRecords; index++) await commandLog.append(command(100 + index));
  await commandLog.compactIfDue(model);
  await t.resolves(
    (async () => {
      for (let tries = 0; tries < 100; tries++) {
        if ((await store.load()).snapshotSeq === 3 + journalCompactAfterRecords) return;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      throw new Error('no snapshot');
    })(),
    'the Master compacts the log after journalCompactAfterRecords commands',
  );
  await t.rejects(new EtcdCommandLog(store, term1 as string, commandLog.lastSeq, log).append(command(9999)), { code: 'MB_ERR_MDM_NOT_MASTER' }, "a refused commit is the caller's MB_ERR_MDM_NOT_MASTER");
});
