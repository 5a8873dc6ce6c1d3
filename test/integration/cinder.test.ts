// OpenStack cinder's Dell EMC PowerFlex (ScaleIO) volume driver, unchanged (Debian's
// python3-cinder), against a real cluster (an MDM, three SDSs, an SDC: real processes)
// through the MDM's REST API, its certificate verified as the driver's configuration allows
// (driver_ssl_cert_verify, driver_ssl_cert_path). The driver is run by
// test/helpers/scaleio-clients/cinder_driver.py, step by step; each step is asserted here, with what
// the driver sent and what the MDM answered printed for it:
// setup and its checks, pool statistics, volumes (thin, thick), extend, snapshot, volume from
// snapshot (extended), clone, revert to snapshot, manage existing (its size; a mapped volume
// refused), deletion (of a snapshot, an unmapped volume, a volume already gone, a mapped
// volume: unmapped from every SDC first).

import t from 'tap';
import { adminPassword, startCluster } from '../helpers/cluster.js';
import { assertStep, runClient, targetOf } from '../helpers/scaleio-clients.js';
import { Api, must } from '../helpers/snapshots.js';
import { MiB } from '../helpers/sds.js';

const GiB = 1024 * MiB;
const KiB = 1024;

t.test('cinder PowerFlex driver against a real cluster', async (t) => {
  const dir = t.testdir();
  // Cinder's volumes are multiples of 8 GB; the devices are sparse files.
  const cluster = await startCluster(t, dir, { sdsCount: 3, deviceBytes: 64 * GiB, volumes: [{ name: 'mapped1', sizeBytes: GiB }] });
  await must(cluster, ['volume', 'add', '--pool', 'sp1', '--name', 'legacy1', '--size', String(3 * GiB)]);
  const api = await Api.login(cluster.mdm);
  const sdcs = (await api.get('/api/types/Sdc/instances')).body as Array<{ id: string; name: string }>;
  const sdcId = sdcs.find((sdc) => sdc.name === cluster.sdc.name)?.id;
  if (sdcId === undefined) throw new Error(`no SDC ${cluster.sdc.name} in ${JSON.stringify(sdcs)}`);
  const client = await runClient('cinder_driver', {
    ...targetOf(cluster.mdm, adminPassword, dir),
    protectionDomain: 'pd1',
    storagePool: 'sp1',
    sdcId,
    manageVolumeId: (await api.volume('legacy1')).id,
    mappedVolumeId: (await api.volume('mapped1')).id,
  });

  type Described = { providerId: string; name: string; expectedName: string; volumeType: string; sizeInKb: number; mappedSdcInfo: unknown };
  const described = (result: unknown): Described => ((result as { volume?: Described }).volume ?? (result as Described));

  assertStep(t, client, 'do_setup');
  assertStep(t, client, 'check_for_setup_error');
  assertStep(t, client, 'get_volume_stats', (result) => {
    const stats = result as { pools: Array<{ pool_name: string; total_capacity_gb: number; free_capacity_gb: number }> };
    t.equal(stats.pools[0]?.pool_name, 'pd1:sp1', 'one pool, as configured');
    t.ok((stats.pools[0]?.total_capacity_gb ?? 0) > 0, 'the pool has capacity');
  });
  assertStep(t, client, 'create thin volume', (result) => {
    const volume = described(result);
    t.equal(volume.name, volume.expectedName, 'named as cinder names it (base64 of its id)');
    t.equal(volume.volumeType, 'ThinProvisioned');
    t.equal(volume.sizeInKb, 8 * GiB / KiB);
  });
  assertStep(t, client, 'create thick volume', (result) => t.equal(described(result).volumeType, 'ThickProvisioned'));
  assertStep(t, client, 'extend thin volume to 16 GB', (result) => t.equal(described(result).sizeInKb, 16 * GiB / KiB));
  assertStep(t, client, 'create snapshot', (result) => {
    const snapshot = (result as { snapshot: Described }).snapshot;
    t.equal(snapshot.volumeType, 'Snapshot');
    t.equal(snapshot.name, snapshot.expectedName);
  });
  assertStep(t, client, 'create volume from snapshot (24 GB: extended)', (result) => t.equal(described(result).sizeInKb, 24 * GiB / KiB));
  assertStep(t, client, 'clone volume', (result) => t.equal(described(result).sizeInKb, 16 * GiB / KiB));
  assertStep(t, client, 'revert volume to snapshot');
  assertStep(t, client, 'manage existing volume (get size, manage)', (result) => {
    const managed = result as { sizeGb: number; updates: { provider_id: string } };
    t.equal(managed.sizeGb, 3, 'its size, in GiB rounded up');
  });
  assertStep(t, client, 'manage existing mapped volume: refused');
  assertStep(t, client, 'delete snapshot');
  assertStep(t, client, 'delete unmapped volume (clone)');
  assertStep(t, client, 'delete volume already gone (clone again)');
  assertStep(t, client, 'map thick volume to the SDC', (result) => t.equal((described(result).mappedSdcInfo as unknown[] | null)?.length, 1, 'mapped to the SDC'));
  assertStep(t, client, 'delete mapped volume (thick)');
  assertStep(t, client, 'delete volume from snapshot');
  assertStep(t, client, 'delete thin volume');
  assertStep(t, client, 'get_volume_stats after deletes');
  t.ok(client.done, 'the driver script ran to its end');

  // What is left is what was there before, plus nothing cinder made.
  const left = (await api.volumes()).map((volume) => volume.name).sort();
  t.same(left, ['legacy1', 'mapped1'], 'every volume cinder made is gone');
});
