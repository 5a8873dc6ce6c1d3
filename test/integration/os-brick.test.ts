// os-brick's ScaleIO connector (what nova and cinder run on a compute node to attach a
// PowerFlex volume), unchanged (Debian's python3-os-brick), against a real cluster (an MDM,
// three SDSs, an SDC: real processes) through the MDM's REST API, its certificate verified.
// The connector is run by test/helpers/scaleio-clients/os_brick_connector.py step by step;
// only what needs the scini kernel driver is replaced (the SDC's GUID is meshblock's SDC's,
// and the device appearing is the SDC's NBD export appearing). Each step is asserted here,
// with what the connector sent and what the MDM answered printed for it: the volume's id by
// name (a plain name; cinder's base64 name, percent-encoded twice), map by GUID (twice: the
// second "already mapped" is accepted), QoS limits by GUID, unmap by GUID (twice: the second
// "not mapped" is accepted).

import t from 'tap';
import { adminPassword, startCluster } from '../helpers/cluster.js';
import { assertStep, runClient, targetOf } from '../helpers/scaleio-clients.js';
import { MiB } from '../helpers/sds.js';
import { Api, must } from '../helpers/snapshots.js';

const GiB = 1024 * MiB;

/** A name as cinder makes them (base64 of a UUID): starts with '+', holds '/' and '='. */
const cinderName = '+b/Hnbw5yQXiRdOaQtA6G==';

interface MappedSdcInfo {
  sdcId: string;
  limitIops?: number;
  limitBwInKbps?: number;
}

t.test('os-brick ScaleIO connector against a real cluster', async (t) => {
  const dir = t.testdir();
  const cluster = await startCluster(t, dir, { sdsCount: 3, deviceBytes: 16 * GiB, volumes: [] });
  await must(cluster, ['volume', 'add', '--pool', 'sp1', '--name', 'brick1', '--size', String(GiB)]);
  const api = await Api.login(cluster.mdm);
  const sdcs = (await api.get('/api/types/Sdc/instances')).body as Array<{ id: string; name: string; sdcGuid: string }>;
  const sdc = sdcs.find((entry) => entry.name === cluster.sdc.name);
  if (sdc === undefined) throw new Error(`no SDC ${cluster.sdc.name} in ${JSON.stringify(sdcs)}`);
  const volume = await api.volume('brick1');
  const client = await runClient('os_brick_connector', {
    ...targetOf(cluster.mdm, adminPassword, dir),
    sdcGuid: sdc.sdcGuid,
    sdcId: sdc.id,
    nbdAddress: cluster.sdc.nbdAddress,
    volumeName: 'brick1',
    volumeId: volume.id,
    storagePoolId: volume.storagePoolId,
    cinderName,
  });

  const mapped = (result: unknown): MappedSdcInfo[] => ((result as { mappedSdcInfo: MappedSdcInfo[] | null }).mappedSdcInfo ?? []);

  assertStep(t, client, 'volume id by name (plain name)', (result) => t.equal(result, volume.id, "brick1's id"));
  const created = assertStep(t, client, 'create a volume named as cinder names them (REST, setup)');
  assertStep(t, client, "volume id by name (cinder's base64 name, encoded twice)", (result) => t.equal(result, created, 'the id of the volume named so'));
  assertStep(t, client, 'connect_volume: map by guid', (result) => {
    t.same(mapped(result).map((info) => info.sdcId), [sdc.id], 'mapped to the SDC of that GUID');
    t.equal((result as { device: { path: string } }).device.path, `nbd://${cluster.sdc.nbdAddress}/brick1`, 'the SDC exports it');
  });
  assertStep(t, client, 'connect_volume again: already mapped is accepted', (result) => t.equal(mapped(result).length, 1, 'still one mapping'));
  assertStep(t, client, 'connect_volume with QoS limits: setMappedSdcLimits by guid', (result) => {
    const info = mapped(result)[0];
    t.equal(info?.limitIops, 1000, 'IOPS limit set');
    t.equal(info?.limitBwInKbps, 2048, 'bandwidth limit set');
  });
  assertStep(t, client, 'disconnect_volume: unmap by guid', (result) => t.same(mapped(result), [], 'unmapped'));
  assertStep(t, client, 'disconnect_volume again: not mapped is accepted', (result) => t.same(mapped(result), [], 'still unmapped'));
  t.ok(client.done, 'the connector script ran to its end');

  const after = await api.volume('brick1');
  t.same(after.mappedSdcInfo ?? [], [], 'brick1 is left unmapped');
});
