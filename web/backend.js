// The backend view: protection domains → storage pools → SDSs → devices, each with capacity and state.

import { html } from './widgets.js';
import { kib, percent } from './format.js';

const stateClass = (state) => (state === 'Normal' || state === 'Connected' ? 'ok' : state === 'Down' || state === 'Failed' ? 'bad' : 'warn');

export function BackendView({ data }) {
  const { lists, dashboard } = data;
  const poolStats = new Map(dashboard.storagePools.map((pool) => [pool.id, pool]));
  const unassigned = lists.Sds.filter((sds) => sds.protectionDomainId === null);
  return html`<div class="view backend" data-testid="backend">
    ${lists.ProtectionDomain.map((domain) => {
      const pools = lists.StoragePool.filter((pool) => pool.protectionDomainId === domain.id);
      const sdss = lists.Sds.filter((sds) => sds.protectionDomainId === domain.id);
      return html`<section class="panel" key=${domain.id}>
        <h2>Protection domain ${domain.name} <small>${domain.id}</small></h2>
        ${pools.map((pool) => {
          const stats = poolStats.get(pool.id);
          const devices = lists.Device.filter((device) => device.storagePoolId === pool.id);
          return html`<div class="pool" key=${pool.id} data-testid=${`pool-${pool.name}`}>
            <h3>Storage pool ${pool.name} <small>${stats ? `${kib(stats.capacityInUseInKb)} of ${kib(stats.maxCapacityInKb)} raw in use (${percent(stats.capacityInUseInKb, stats.maxCapacityInKb)}) · ${stats.numOfVolumes} volumes · spare ${kib(stats.spareCapacityInKb)}` : ''}</small></h3>
            <table>
              <tr><th>SDS</th><th>state</th><th>address</th><th>device</th><th>device state</th><th>in use</th><th>capacity</th></tr>
              ${sdss.flatMap((sds) => {
                const own = devices.filter((device) => device.sdsId === sds.id);
                if (own.length === 0) return [];
                return own.map(
                  (device, index) => html`<tr key=${device.id} data-testid=${`sds-row-${sds.name}`}>
                    ${index === 0 ? html`<td rowspan=${own.length}>${sds.name}</td><td rowspan=${own.length} class=${stateClass(sds.sdsState)}>${sds.sdsState}</td><td rowspan=${own.length}>${sds.address}</td>` : null}
                    <td>${device.name ?? device.deviceCurrentPathName}</td>
                    <td class=${stateClass(device.deviceState)}>${device.deviceState}</td>
                    <td>${kib(device.capacityInUseInKb)}</td>
                    <td>${kib(device.maxCapacityInKb)}</td>
                  </tr>`,
                );
              })}
            </table>
          </div>`;
        })}
      </section>`;
    })}
    ${unassigned.length > 0 ? html`<section class="panel"><h2>Registered SDSs not in a protection domain</h2><ul>${unassigned.map((sds) => html`<li key=${sds.id}>${sds.name} (${sds.address})</li>`)}</ul></section>` : null}
  </div>`;
}
