// Proves docs/snapshots.md's step 4 for an MDM cluster: a Master that takes over and finds a
// snapshot barrier its predecessor journaled (beginSnapshot in etcd, no commit or abort)
// aborts it before acting, so a group is all or nothing across a takeover. A real etcd (one
// member, TLS) holds the log a deposed Master left; a real MdmClusterMember campaigns, wins
// and is checked: the barrier is gone from its state and an abortSnapshot is in etcd's log.

import pino from 'pino';
import t from 'tap';
import { Lease } from 'etcd3';
import { GiB } from '../../src/common/units.js';
import { MdmClusterMember } from '../../src/mdm/cluster-member.js';
import { loadEtcdClientTls } from '../../src/mdm/etcd-pki.js';
import { EtcdStore, type MasterRecord } from '../../src/mdm/etcd-store.js';
import type { Id } from '../../src/mdm/model.js';
import { StateMachine, type Command } from '../../src/mdm/state-machine.js';
import { freeLoopbackPorts, startEtcdCluster } from '../helpers/etcd-cluster.js';

const log = pino({ level: process.env['TEST_LOG_LEVEL'] ?? 'silent' });
const clusterId = '0123456789abcdef';

t.test('a new Master aborts the barrier its predecessor left in etcd', async (t) => {
  const etcd = await startEtcdCluster(t, { members: 1, dir: t.testdir() });
  const store = EtcdStore.connect({ endpoints: etcd.endpoints, tls: loadEtcdClientTls(etcd.pkiDir, 'mdm1'), log });
  t.teardown(() => store.close());
  await store.createCluster({ clusterId, name: 'c1', secret: 'ab', adminAuth: '{}' });

  // The predecessor: its commands, up to a beginSnapshot it never ended.
  const machine = StateMachine.create(clusterId, 'c1');
  const commands: Command[] = [];
  const run = (command: Command): Id | undefined => {
    commands.push(command);
    return machine.apply(command).id;
  };
  const pd = run({ type: 'addProtectionDomain', name: 'pd1' }) as Id;
  const pool = run({ type: 'addStoragePool', protectionDomainId: pd, name: 'sp1', volumeGranularityBytes: GiB, pgCount: 16 }) as Id;
  for (const index of [1, 2]) {
    const sdsId = `5d5000000000000${index}`;
    run({ type: 'registerSds', sdsId, name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, nowMs: 1 });
    run({ type: 'addSds', sdsId, protectionDomainId: pd, faultSetId: null });
    run({ type: 'addDevice', deviceId: `de7000000000000${index}`, sdsId, storagePoolId: pool, path: '/dev/sdb', name: null, capacityBytes: 100 * GiB });
  }
  const volumeId = run({ type: 'addVolume', storagePoolId: pool, name: 'vol', sizeBytes: GiB, volumeType: 'ThinProvisioned', nowMs: 1 }) as Id;
  const groupId = run({ type: 'beginSnapshot', defs: [{ volumeId, name: 'half', readOnly: false }], nowMs: 1 }) as Id;
  const lease = store.client.lease(3, { autoKeepAlive: true }) as Lease;
  t.teardown(() => lease.revoke().catch(() => undefined));
  const predecessor: MasterRecord = { name: 'mdm2', wireAddress: '127.0.0.1:1', apiAddress: '127.0.0.1:2', apiCertificate: '', startedAtMs: 0, lease: '0' };
  const term = await store.campaign(predecessor, lease);
  t.type(term, 'string', 'the predecessor was Master');
  t.ok(await store.append(term as string, 0, commands), 'and committed up to the barrier');
  await store.resign(term as string);
  await lease.revoke();

  const [wirePort] = await freeLoopbackPorts(1);
  const member = new MdmClusterMember({
    store,
    name: 'mdm1',
    wire: { host: '127.0.0.1', port: wirePort as number },
    apiAddress: '127.0.0.1:1',
    apiCertificate: '',
    clusterId,
    systemName: 'c1',
    service: { dataDir: t.testdir(), clusterId, systemName: 'c1', secret: Buffer.from('a test cluster secret, long enough'), log },
    log,
  });
  t.teardown(() => member.close());
  await member.start();
  const deadline = Date.now() + 20_000;
  while (member.service === null || member.service.state.model.snapshotBarrier !== null) {
    if (Date.now() > deadline) throw new Error('the member did not become Master and abort the barrier in time');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const model = member.service.state.model;
  t.equal(model.snapshotBarrier, null, 'the new Master aborted the barrier');
  t.same(Object.values(model.volumes).map((volume) => volume.name), ['vol'], 'no half group');
  const loaded = await store.load();
  const last = loaded.commands.at(-1);
  t.same(last?.type === 'abortSnapshot' ? last.groupId : null, groupId, "the abort is in etcd's log: every MDM agrees");
});
