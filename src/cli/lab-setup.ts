// The lab's cluster layout over the REST API, made idempotent: every step first looks for
// its object by name and creates only what is missing, so that `lab up` on an existing lab
// resumes it, and a lab up interrupted half-way finishes the job the next time.
//
//   protection domain pd1
//   └─ storage pool sp1 (volume granularity 1 MiB: a lab keeps the sizes it is asked for)
//      ├─ the device of each SDS sdsI: DIR/devices/sdsI.img, or the one given with lab up
//      │  --device (added to pd1 once it registered)
//      └─ volumes (thin), mapped to the lab's SDC once it registered

import { setTimeout as sleep } from 'node:timers/promises';
import { KiB, formatBytes } from '../common/units.js';
import type { RestDevice, RestProtectionDomain, RestSdc, RestSds, RestStoragePool, RestVolume } from '../mdm/rest-objects.js';
import { ApiClient, processIo } from './manage-client.js';
import { LabError, labApi, type LabFile, type LabVolume } from './lab-state.js';

export const labProtectionDomainName = 'pd1';
export const labStoragePoolName = 'sp1';
export const labVolumeGranularityMb = 1;
/** SDSs and the SDC register with the MDM within this after their ready line. */
export const registrationTimeoutMs = 30_000;
const pollIntervalMs = 200;

export type Report = (line: string) => void;

/** Logs in to the lab's REST API with the lab's password and certificate. */
export function connectLab(lab: LabFile): Promise<ApiClient> {
  // Built as a variable, not a literal: the connection flags may grow (e.g. --dir) and this
  // object carries only what the lab knows.
  const connection = { api: labApi(lab), username: 'admin', 'password-file': lab.passwordFile, 'ca-cert': lab.caCert, insecure: false, dir: undefined };
  return ApiClient.connect(connection, processIo);
}

function list<T>(client: ApiClient, type: string): Promise<T[]> {
  return client.get<T[]>(`/api/types/${type}/instances`);
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new LabError('MB_ERR_LAB_TIMEOUT', `timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(pollIntervalMs);
  }
}

/**
 * pd1 and sp1, every SDS of the lab in pd1 with its device in sp1. Returns sp1's id.
 */
export async function ensureLayout(client: ApiClient, lab: LabFile, report: Report): Promise<string> {
  let domainId = (await list<RestProtectionDomain>(client, 'ProtectionDomain')).find((entry) => entry.name === labProtectionDomainName)?.id;
  if (domainId === undefined) {
    ({ id: domainId } = await client.post<{ id: string }>('/api/types/ProtectionDomain/instances', { name: labProtectionDomainName }));
    report(`created protection domain ${labProtectionDomainName}`);
  }
  let poolId = (await list<RestStoragePool>(client, 'StoragePool')).find((entry) => entry.name === labStoragePoolName && entry.protectionDomainId === domainId)?.id;
  if (poolId === undefined) {
    ({ id: poolId } = await client.post<{ id: string }>('/api/types/StoragePool/instances', { protectionDomainId: domainId, name: labStoragePoolName, volumeGranularityInMb: labVolumeGranularityMb }));
    report(`created storage pool ${labStoragePoolName} in ${labProtectionDomainName}`);
  }

  const sdsRecords = lab.processes.filter((record) => record.role === 'sds');
  const registered = await until(
    `${sdsRecords.map((record) => record.name).join(', ')} to register with the MDM`,
    async () => {
      const sdss = await list<RestSds>(client, 'Sds');
      return sdsRecords.every((record) => sdss.some((sds) => sds.name === record.name)) ? sdss : undefined;
    },
    registrationTimeoutMs,
  );
  const devices = await list<RestDevice>(client, 'Device');
  for (const record of sdsRecords) {
    const sds = registered.find((entry) => entry.name === record.name) as RestSds;
    if (sds.protectionDomainId === null) {
      await client.post('/api/types/Sds/instances', { sdsId: sds.id, protectionDomainId: domainId });
      report(`added ${record.name} to ${labProtectionDomainName}`);
    } else if (sds.protectionDomainId !== domainId) {
      throw new LabError('MB_ERR_LAB_LAYOUT', `${record.name} is in another protection domain than ${labProtectionDomainName} (someone moved it); the lab leaves it there`);
    }
    if (record.devicePath !== undefined && !devices.some((device) => device.sdsId === sds.id && device.deviceCurrentPathName === record.devicePath)) {
      await client.post('/api/types/Device/instances', { sdsId: sds.id, storagePoolId: poolId, deviceCurrentPathName: record.devicePath });
      report(`added device ${record.devicePath} of ${record.name} to ${labStoragePoolName}`);
    }
  }
  return poolId;
}

/** Creates the volumes that do not exist yet (thin, in sp1); one that exists is left as it is. */
export async function ensureVolumes(client: ApiClient, poolId: string, volumes: readonly LabVolume[], report: Report): Promise<void> {
  const existing = await list<RestVolume>(client, 'Volume');
  for (const volume of volumes) {
    const found = existing.find((entry) => entry.name === volume.name);
    if (found !== undefined) {
      if (found.sizeInKb * KiB !== volume.sizeBytes) report(`volume ${volume.name} exists with ${formatBytes(found.sizeInKb * KiB)}, not ${formatBytes(volume.sizeBytes)}: left as it is (see meshblock volume resize)`);
      continue;
    }
    await client.post('/api/types/Volume/instances', { storagePoolId: poolId, name: volume.name, volumeSizeInKb: String(volume.sizeBytes / KiB), volumeType: 'ThinProvisioned' });
    report(`created volume ${volume.name} (${formatBytes(volume.sizeBytes)}, thin)`);
  }
}

/**
 * Waits for the SDC named `sdcName` to register, then maps to it each of `volumeNames` that
 * exists and is not mapped to it yet. Returns the names mapped to it now.
 */
export async function ensureMappings(client: ApiClient, sdcName: string, volumeNames: readonly string[], report: Report): Promise<string[]> {
  const sdc = await until(
    `SDC ${sdcName} to register with the MDM`,
    async () => (await list<RestSdc>(client, 'Sdc')).find((entry) => entry.name === sdcName && entry.mdmConnectionState === 'Connected'),
    registrationTimeoutMs,
  );
  const mapped: string[] = [];
  for (const volume of await list<RestVolume>(client, 'Volume')) {
    if (!volumeNames.includes(volume.name)) continue;
    if (!(volume.mappedSdcInfo ?? []).some((info) => info.sdcId === sdc.id)) {
      await client.post(`/api/instances/Volume::${volume.id}/action/addMappedSdc`, { sdcId: sdc.id });
      report(`mapped volume ${volume.name} to ${sdcName}`);
    }
    mapped.push(volume.name);
  }
  return mapped;
}

/** Polls until `list()` includes every name in `names`. */
export function waitForExports(names: readonly string[], listExports: () => Promise<string[]>, timeoutMs: number): Promise<string[]> {
  let lastError = '';
  return until(
    `the NBD exports ${names.join(', ')}`,
    async () => {
      try {
        const listed = await listExports();
        return names.every((name) => listed.includes(name)) ? listed : undefined;
      } catch (err) {
        lastError = (err as Error).message;
        return undefined;
      }
    },
    timeoutMs,
  ).catch((err: Error) => {
    throw new LabError('MB_ERR_LAB_TIMEOUT', lastError === '' ? err.message : `${err.message} (last: ${lastError})`);
  });
}
