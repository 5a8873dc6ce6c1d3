// Proves that `lab status` (its JSON and its text) shows snapshots: each volume's type and,
// for a snapshot, the volume it was taken of (none once that one is removed alone); and
// the capacity only snapshots hold, apart. Against the real REST API over HTTPS (in-process,
// test/helpers/rest.ts), with the SDSs' reported bytes set by the test.

import t from 'tap';
import { collectStatus, renderStatus } from '../../src/cli/lab-status.js';
import { ApiClient } from '../../src/cli/manage-client.js';
import type { LabFile } from '../../src/cli/lab-state.js';
import { MiB, call, login, startTestApi } from '../helpers/rest.js';

t.test('lab status shows snapshots and their capacity', async (t) => {
  const api = await startTestApi(t);
  const token = await login(api);
  const post = async <T>(path: string, body: unknown): Promise<T> => {
    const reply = await call(api, 'POST', path, { token, body });
    if (reply.status !== 200) throw new Error(`${path}: ${reply.text}`);
    return reply.body as T;
  };
  const pd = (await post<{ id: string }>('/api/types/ProtectionDomain/instances', { name: 'pd1' })).id;
  const pool = (await post<{ id: string }>('/api/types/StoragePool/instances', { protectionDomainId: pd, name: 'sp1', volumeGranularityInMb: 64 })).id;
  for (const [index, name] of ['sds1', 'sds2'].entries()) {
    const sdsId = api.controller.registerSds(name, 7500 + index);
    await post('/api/types/Sds/instances', { sdsId, protectionDomainId: pd });
    await post('/api/types/Device/instances', { sdsId, storagePoolId: pool, deviceCurrentPathName: '/dev/sdb' });
  }
  const vol1 = (await post<{ id: string }>('/api/types/Volume/instances', { storagePoolId: pool, name: 'vol1', volumeSizeInKb: 64 * 1024, volumeType: 'ThinProvisioned' })).id;
  await post('/api/instances/System/action/snapshotVolumes', { snapshotDefs: [{ volumeId: vol1, snapshotName: 's1' }] });
  await post('/api/instances/System/action/snapshotVolumes', { snapshotDefs: [{ volumeId: vol1, snapshotName: 's2' }] });
  for (const device of Object.values(api.controller.state.model.devices)) Object.assign(device, { usedBytes: 48 * MiB, snapshotBytes: 16 * MiB });

  const lab: LabFile = { formatVersion: 1, clusterId: '0123456789abcdef', apiUrl: api.url, caCert: api.certPath, passwordFile: api.passwordFile, secretFile: '', deviceSizeBytes: 0, volumes: [], processes: [] };
  const client = await ApiClient.connect({ api: api.url, dir: undefined, username: 'admin', 'password-file': api.passwordFile, 'ca-cert': api.certPath, insecure: false }, { stdout: { write: () => true }, stderr: { write: () => true }, env: {} });
  t.teardown(() => client.close());
  let status = await collectStatus('/lab', lab, client, null);
  t.match(status.volumes, [
    { name: 's1', type: 'snapshot', snapshotOf: 'vol1', sizeBytes: 64 * MiB },
    { name: 's2', type: 'snapshot', snapshotOf: 'vol1' },
    { name: 'vol1', type: 'thin', snapshotOf: null },
  ]);
  t.match(status.capacity, { snapshotInUseBytes: 2 * 16 * MiB, snapshotProvisionedBytes: 2 * 64 * MiB, inUseBytes: 2 * 48 * MiB }, 'snapshot capacity apart, raw as in use');
  const text = renderStatus(status);
  t.match(text, /VOLUME\s+SIZE\s+TYPE\s+NBD URI\s+MAPPED TO\n/);
  t.match(text, /\ns1\s+64 MiB\s+snapshot of vol1\s+-\s+-\n/);
  t.match(text, /\nvol1\s+64 MiB\s+thin\s+-/);
  t.match(text, /in use 96 MiB raw \(snapshots only: 32 MiB\)/);

  // vol1 removed alone: its snapshots stay, snapshots of nothing now (they take vol1's own ancestor).
  await post(`/api/instances/Volume::${vol1}/action/removeVolume`, { removeMode: 'ONLY_ME' });
  status = await collectStatus('/lab', lab, client, null);
  t.match(status.volumes, [{ name: 's1', type: 'snapshot', snapshotOf: null }, { name: 's2', type: 'snapshot', snapshotOf: null }]);
  t.match(renderStatus(status), /\ns1\s+64 MiB\s+snapshot\s+-/);
});
