// The frontend view: volumes (size, type, mappings, QoS limits, snapshots) and SDCs, and the
// administrator's daily actions on them. Each action asks first (Dialog) and shows the API's
// refusal as it came.

import { html } from './widgets.js';
import { kib } from './format.js';
import { post } from './api.js';

const GiB = 1024 * 1024; // in KiB

function wholeNumber(name, text, { min = 0 } = {}) {
  const value = Number(text);
  if (text === '' || !Number.isSafeInteger(value) || value < min) throw new Error(`${name}: must be a whole number ≥ ${min}`);
  return value;
}

export function createVolumeDialog(lists) {
  const pools = lists.StoragePool;
  const sdcs = lists.Sdc;
  return {
    title: 'Create a volume',
    confirmLabel: 'Create',
    fields: [
      { name: 'name', label: 'Name', value: '' },
      { name: 'sizeGib', label: 'Size (GiB)', type: 'number', value: '8' },
      { name: 'poolId', label: 'Storage pool', value: pools[0]?.id ?? '', options: pools.map((pool) => ({ value: pool.id, label: pool.name })) },
      { name: 'volumeType', label: 'Type', value: 'ThinProvisioned', options: [{ value: 'ThinProvisioned', label: 'thin' }, { value: 'ThickProvisioned', label: 'thick' }] },
      { name: 'sdcId', label: 'Map to SDC', value: '', options: [{ value: '', label: '(do not map)' }, ...sdcs.map((sdc) => ({ value: sdc.id, label: sdc.name }))] },
    ],
    run: async (values) => {
      const created = await post('/api/types/Volume/instances', { name: values.name, volumeSizeInKb: wholeNumber('size', values.sizeGib, { min: 1 }) * GiB, storagePoolId: values.poolId, volumeType: values.volumeType });
      if (values.sdcId !== '') await post(`/api/instances/Volume::${created.id}/action/addMappedSdc`, { sdcId: values.sdcId });
    },
  };
}

function resizeDialog(volume) {
  return {
    title: `Resize ${volume.name}`,
    text: 'Volumes only grow: the new size must be larger.',
    confirmLabel: 'Resize',
    fields: [{ name: 'sizeGib', label: 'New size (GiB)', type: 'number', value: String(Math.ceil(volume.sizeInKb / GiB)) }],
    run: (values) => post(`/api/instances/Volume::${volume.id}/action/setVolumeSize`, { sizeInGB: wholeNumber('size', values.sizeGib, { min: 1 }) }),
  };
}

function removeDialog(volume) {
  return {
    title: `Remove ${volume.name}`,
    text: `Its data is gone for good (its snapshots stay). A mapped volume is refused: unmap it first.`,
    confirmLabel: 'Remove',
    danger: true,
    run: () => post(`/api/instances/Volume::${volume.id}/action/removeVolume`, { removeMode: 'ONLY_ME' }),
  };
}

function mapDialog(volume, sdcs) {
  const unmapped = sdcs.filter((sdc) => !(volume.mappedSdcInfo ?? []).some((mapping) => mapping.sdcId === sdc.id));
  return {
    title: `Map ${volume.name}`,
    confirmLabel: 'Map',
    fields: [{ name: 'sdcId', label: 'SDC', value: unmapped[0]?.id ?? '', options: unmapped.map((sdc) => ({ value: sdc.id, label: sdc.name })) }],
    run: (values) => post(`/api/instances/Volume::${volume.id}/action/addMappedSdc`, { sdcId: values.sdcId }),
  };
}

function unmapDialog(volume, mapping) {
  return {
    title: `Unmap ${volume.name} from ${mapping.sdcName}`,
    text: 'The SDC stops exporting it; a client that has it open loses it.',
    confirmLabel: 'Unmap',
    danger: true,
    run: () => post(`/api/instances/Volume::${volume.id}/action/removeMappedSdc`, { sdcId: mapping.sdcId }),
  };
}

function limitsDialog(volume, mapping) {
  return {
    title: `QoS of ${volume.name} on ${mapping.sdcName}`,
    text: '0 = unlimited.',
    confirmLabel: 'Set limits',
    fields: [
      { name: 'iopsLimit', label: 'IOPS limit', type: 'number', value: String(mapping.limitIops) },
      { name: 'bandwidthLimitInKbps', label: 'Bandwidth limit (KiB/s)', type: 'number', value: String(mapping.limitBwInKbps) },
    ],
    run: (values) =>
      post(`/api/instances/Volume::${volume.id}/action/setMappedSdcLimits`, {
        sdcId: mapping.sdcId,
        iopsLimit: wholeNumber('IOPS limit', values.iopsLimit),
        bandwidthLimitInKbps: wholeNumber('bandwidth limit', values.bandwidthLimitInKbps),
      }),
  };
}

export function FrontendView({ data, ask }) {
  const { lists } = data;
  const pools = new Map(lists.StoragePool.map((pool) => [pool.id, pool.name]));
  const names = new Map(lists.Volume.map((volume) => [volume.id, volume.name]));
  const volumes = [...lists.Volume].sort((a, b) => a.name.localeCompare(b.name));
  return html`<div class="view frontend" data-testid="frontend">
    <section class="panel">
      <h2>Volumes <button class="primary" data-testid="create-volume" onClick=${() => ask(createVolumeDialog(lists))}>Create volume…</button></h2>
      <table class="volumes">
        <tr><th>Name</th><th>Size</th><th>Type</th><th>Pool</th><th>Mapped to (QoS)</th><th>Snapshot of</th><th></th></tr>
        ${volumes.map(
          (volume) => html`<tr key=${volume.id} data-testid=${`volume-${volume.name}`}>
            <td>${volume.name}</td>
            <td data-kib=${volume.sizeInKb}>${kib(volume.sizeInKb)}</td>
            <td>${volume.volumeType === 'ThinProvisioned' ? 'thin' : volume.volumeType === 'ThickProvisioned' ? 'thick' : 'snapshot'}${volume.accessModeLimit === 'ReadOnly' ? ' (read-only)' : ''}</td>
            <td>${pools.get(volume.storagePoolId) ?? volume.storagePoolId}</td>
            <td class="mappings">
              ${(volume.mappedSdcInfo ?? []).map(
                (mapping) => html`<div key=${mapping.sdcId} data-testid=${`mapping-${volume.name}-${mapping.sdcName}`}>
                  ${mapping.sdcName} <small>${mapping.limitIops > 0 ? `${mapping.limitIops} IOPS` : ''}${mapping.limitIops > 0 && mapping.limitBwInKbps > 0 ? ', ' : ''}${mapping.limitBwInKbps > 0 ? `${kib(mapping.limitBwInKbps)}/s` : ''}${mapping.limitIops === 0 && mapping.limitBwInKbps === 0 ? 'no limit' : ''}</small>
                  <button class="small" data-testid="limits" onClick=${() => ask(limitsDialog(volume, mapping))}>limits</button>
                  <button class="small" data-testid="unmap" onClick=${() => ask(unmapDialog(volume, mapping))}>unmap</button>
                </div>`,
              )}
            </td>
            <td>${volume.ancestorVolumeId === null ? '' : (names.get(volume.ancestorVolumeId) ?? volume.ancestorVolumeId)}</td>
            <td class="actions">
              <button class="small" data-testid="map" onClick=${() => ask(mapDialog(volume, lists.Sdc))}>map</button>
              <button class="small" data-testid="resize" onClick=${() => ask(resizeDialog(volume))}>resize</button>
              <button class="small danger" data-testid="remove" onClick=${() => ask(removeDialog(volume))}>remove</button>
            </td>
          </tr>`,
        )}
      </table>
    </section>
    <section class="panel">
      <h2>SDCs</h2>
      <table>
        <tr><th>Name</th><th>State</th><th>IP</th><th>GUID</th><th>Volumes</th></tr>
        ${lists.Sdc.map(
          (sdc) => html`<tr key=${sdc.id}>
            <td>${sdc.name}</td><td class=${sdc.mdmConnectionState === 'Connected' ? 'ok' : 'warn'}>${sdc.mdmConnectionState}</td><td>${sdc.sdcIp ?? ''}</td><td><small>${sdc.sdcGuid}</small></td>
            <td>${lists.Volume.filter((volume) => (volume.mappedSdcInfo ?? []).some((mapping) => mapping.sdcId === sdc.id)).map((volume) => volume.name).join(', ')}</td>
          </tr>`,
        )}
      </table>
    </section>
  </div>`;
}
