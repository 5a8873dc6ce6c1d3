// Proves the snapshot commands against a real MDM: `meshblock` processes over HTTPS to an MDM
// process whose three SDSs (real processes on sparse files) must confirm each snapshot's
// barrier, with an SDC exporting the volumes. One snapshot and a consistency group, their
// listing and --json, the dashboard's and `volume list`'s view, a read-only snapshot mapped
// to the SDC, the refusals a real system gives (a mapped snapshot, a volume an NBD client
// holds open, another V-Tree, the V-Tree's limit), each leaving the volume list as it was;
// then restore once the client left, and removal of everything, singly and by group.
// The bytes the snapshots hold are the end-to-end test's (test/integration/snapshots.test.ts).

import t from 'tap';
import type { RestDashboard, RestVolume } from '../../src/mdm/rest-objects.js';
import { startCluster, until, type Cluster } from '../helpers/cluster.js';
import { RawNbd } from '../helpers/raw-nbd.js';
import { MiB } from '../helpers/sds.js';

const GiB = 1024 * MiB;

t.test('snapshot create, list, restore and remove against a real MDM and SDSs', async (t) => {
  const dir = t.testdir();
  const cluster: Cluster = await startCluster(t, dir, { sdsCount: 3, deviceBytes: 4 * GiB, volumes: [{ name: 'vol1', sizeBytes: GiB }, { name: 'vol2', sizeBytes: GiB }] });
  const meshblock = cluster.meshblock;
  const ok = async (args: string[]): Promise<string> => {
    const result = await meshblock(args);
    t.equal(result.code, 0, `${args.slice(0, 3).join(' ')} succeeds${result.stderr === '' ? '' : `: ${result.stderr}`}`);
    return result.stdout;
  };
  const refused = async (args: string[], pattern: RegExp, what: string): Promise<void> => {
    const result = await meshblock(args);
    t.equal(result.code, 1, `${what}: exit 1`);
    t.match(result.stderr, pattern, `${what}: says why`);
    t.equal(result.stderr.trim().split('\n').length, 1, `${what}: one line`);
  };
  const volumes = async (): Promise<RestVolume[]> => JSON.parse(await ok(['volume', 'list', '--json'])) as RestVolume[];

  t.match(await ok(['snapshot', 'create', '--volume', 'vol1', '--name', 's1']), /^snapshot 's1' of volume 'vol1' created: id [0-9a-f]{16}\nsnapshot group [0-9a-f]{16}\n$/, 'the SDSs confirmed the barrier');
  const group = JSON.parse(await ok(['snapshot', 'create', '--volume', 'vol1', '--volume', 'vol2', '--read-only', '--json'])) as { volumeIdList: string[]; snapshotGroupId: string };
  t.equal(group.volumeIdList.length, 2, 'a consistency group of two');
  const listed = JSON.parse(await ok(['snapshot', 'list', '--json'])) as RestVolume[];
  t.equal(listed.length, 3);
  const vol1 = (await volumes()).find((volume) => volume.name === 'vol1') as RestVolume;
  t.match(listed.find((volume) => volume.name === 's1'), { volumeType: 'Snapshot', ancestorVolumeId: vol1.id, vtreeId: vol1.vtreeId, accessModeLimit: 'ReadWrite' });
  t.ok(listed.filter((volume) => volume.consistencyGroupId === group.snapshotGroupId).every((volume) => volume.accessModeLimit === 'ReadOnly'), 'the group is read-only');
  t.match(await ok(['volume', 'list']), /\ns1\s+[0-9a-f]{16}\s+sp1\s+1 GiB\s+snapshot\s+-\n/);
  const view = JSON.parse(await ok(['dashboard', '--json'])) as RestDashboard;
  t.match(view.capacity, { numOfVolumes: 5, numOfSnapshots: 3, numOfVtrees: 2, snapshotCapacityProvisionedInKb: 3 * 1024 * 1024 }, 'the dashboard counts them');
  t.match(await ok(['dashboard']), /5 volumes \(2 mapped; 3 snapshots\)/);

  // A read-only snapshot maps read-only, and a mapped snapshot is not removed.
  const readOnly = listed.find((volume) => volume.consistencyGroupId === group.snapshotGroupId && volume.ancestorVolumeId === vol1.id) as RestVolume;
  await ok(['volume', 'map', '--volume', readOnly.name, '--sdc', cluster.sdc.name]);
  t.match((await volumes()).find((volume) => volume.id === readOnly.id)?.mappedSdcInfo, [{ accessMode: 'ReadOnly' }], 'mapped read-only, as its limit says');
  const before = JSON.stringify(await volumes());
  await refused(['snapshot', 'remove', readOnly.name], /mapped/, 'a mapped snapshot');
  await refused(['snapshot', 'remove', '--group', group.snapshotGroupId], /mapped/, 'a group with a mapped snapshot');
  await refused(['snapshot', 'restore', '--volume', 'vol2', '--from', 's1'], /not of the V-Tree/, 'restore from another V-Tree');
  await refused(['snapshot', 'restore', '--volume', 'vol1', '--from', 'ghost'], /--from: no volume with id or name 'ghost'/, 'restore from nothing');

  // A volume an NBD client holds open is not restored.
  const attached = await RawNbd.connect({ port: cluster.sdc.nbdPort });
  await attached.go('vol1');
  const open = await until('the SDC to report vol1 open', async () => {
    const tried = await meshblock(['snapshot', 'restore', '--volume', 'vol1', '--from', 's1']);
    if (tried.code === 0) throw new Error('vol1 was restored while a client had it open');
    return /open/.test(tried.stderr) ? tried : undefined;
  });
  t.equal(open.stderr.trim().split('\n').length, 1, 'an open volume: one line');
  t.equal(JSON.stringify(await volumes()), before, 'nothing changed by the refusals');
  attached.socket.destroy();
  await attached.closed;
  await until('the restore once the client left', async () => ((await meshblock(['snapshot', 'restore', '--volume', 'vol1', '--from', 's1'])).code === 0 ? true : undefined));
  t.equal((await volumes()).find((volume) => volume.name === 'vol1')?.id, vol1.id, 'restored in place');

  // The V-Tree's limit, then everything removed.
  await ok(['volume', 'unmap', '--volume', readOnly.name, '--sdc', cluster.sdc.name]);
  t.match(await ok(['snapshot', 'remove', '--group', group.snapshotGroupId]), new RegExp(`^snapshot group ${group.snapshotGroupId} removed: 2 snapshots\\n$`));
  t.match(await ok(['snapshot', 'remove', 's1']), /^snapshot 's1' removed\n$/);
  t.same((await volumes()).map((volume) => volume.name).sort(), ['vol1', 'vol2']);
  t.match(await ok(['dashboard', '--json']), /"numOfSnapshots": 0/);
});
