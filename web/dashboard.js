// The dashboard view: capacity rings, live IO charts, health, rebuild/rebalance, the MDM
// cluster, the busiest volumes, and the event log (events.js).

import { Chart, Ring, html } from './widgets.js';
import { EventsPanel } from './events.js';
import { clock, count, kib, percent, seconds } from './format.js';

const colors = {
  protected: '#2e9e4f',
  degraded: '#f0a020',
  failed: '#d7263d',
  spare: '#8a94a6',
  unused: '#d9dee7',
  reserved: '#5b8def',
  thick: '#2f6fbf',
  thin: '#7fb3f0',
  snapshot: '#a77fd6',
  free: '#d9dee7',
  read: '#2f6fbf',
  write: '#e0702a',
};

/** Raw capacity by state, as ScaleIO's ring: the states sum to the raw capacity. */
export function rawSegments(capacity) {
  const known = ['protected', 'degraded', 'failed', 'spare', 'unused'];
  const values = {
    protected: capacity.protectedCapacityInKb,
    degraded: capacity.degradedCapacityInKb,
    failed: capacity.failedCapacityInKb,
    spare: capacity.spareCapacityInKb,
    unused: capacity.unusedCapacityInKb,
  };
  const listed = known.reduce((total, key) => total + values[key], 0);
  // Every figure is rounded down to KiB on its own: a remainder below 1 MiB is rounding, not a reservation.
  const reservedKib = capacity.maxCapacityInKb - listed >= 1024 ? capacity.maxCapacityInKb - listed : 0;
  return [
    { key: 'protected', label: 'Protected', valueKib: values.protected, color: colors.protected },
    { key: 'degraded', label: 'Degraded', valueKib: values.degraded, color: colors.degraded },
    { key: 'failed', label: 'Failed', valueKib: values.failed, color: colors.failed },
    { key: 'spare', label: 'Spare', valueKib: values.spare, color: colors.spare },
    // Thick reservations not written yet: neither in use nor free (docs/rest-statistics.md).
    ...(reservedKib > 0 ? [{ key: 'reserved', label: 'Thick, not written', valueKib: reservedKib, color: colors.reserved }] : []),
    { key: 'unused', label: 'Unused', valueKib: values.unused, color: colors.unused },
  ];
}

/** Net capacity by what volumes were given: thick, thin, snapshots, and what a new volume may still get. */
export function netSegments(capacity) {
  return [
    { key: 'thick', label: 'Thick provisioned', valueKib: capacity.thickCapacityProvisionedInKb, color: colors.thick },
    { key: 'thin', label: 'Thin provisioned', valueKib: capacity.thinCapacityProvisionedInKb, color: colors.thin },
    { key: 'snapshot', label: 'Snapshots provisioned', valueKib: capacity.snapshotCapacityProvisionedInKb, color: colors.snapshot },
    { key: 'available', label: 'Available for volumes', valueKib: capacity.capacityAvailableForVolumeAllocationInKb, color: colors.free },
  ];
}

export function DashboardView({ data, history, busiest, mdmCluster, latencySupported, eventLog }) {
  const { dashboard } = data;
  const capacity = dashboard.capacity;
  const health = dashboard.health;
  const rebuild = health.rebuild;
  return html`<div class="view dashboard">
    <section class="panel capacity">
      <h2>Capacity</h2>
      <div class="rings">
        <${Ring} id="raw" title="Raw capacity by state" totalKib=${capacity.maxCapacityInKb} totalLabel="raw" segments=${rawSegments(capacity)} />
        <${Ring} id="net" title="Net: volumes" totalKib=${capacity.usableCapacityInKb} totalLabel="usable" segments=${netSegments(capacity)} />
      </div>
      <p class="totals">Raw <b data-testid="capacity-max" data-kib=${capacity.maxCapacityInKb}>${kib(capacity.maxCapacityInKb)}</b> · usable <b data-testid="capacity-usable" data-kib=${capacity.usableCapacityInKb}>${kib(capacity.usableCapacityInKb)}</b> · in use <b data-testid="capacity-in-use" data-kib=${capacity.capacityInUseInKb}>${kib(capacity.capacityInUseInKb)}</b> (${percent(capacity.capacityInUseInKb, capacity.maxCapacityInKb)} of raw)</p>
    </section>
    <section class="panel io">
      <h2>Client IO <small>${history.time.length < 2 ? 'since the page opened' : `the last ${seconds(history.time[history.time.length - 1] - history.time[0])}`}, every 2 s</small></h2>
      <${Chart} id="iops" title="IOPS" unit="IO/s" series=${[{ label: 'read', color: colors.read }, { label: 'write', color: colors.write }]} data=${[history.time, history.readIops, history.writeIops]} />
      <${Chart} id="bandwidth" title="Bandwidth" unit="MiB/s" series=${[{ label: 'read', color: colors.read }, { label: 'write', color: colors.write }]} data=${[history.time, history.readMibps, history.writeMibps]} />
      ${latencySupported
        ? html`<${Chart} id="latency" title="Latency" unit="ms" series=${[{ label: 'read', color: colors.read }, { label: 'write', color: colors.write }]} data=${[history.time, history.readLatencyMs, history.writeLatencyMs]} />`
        : html`<section class="chart" data-testid="chart-latency"><h3>Latency</h3><p class="muted">This MDM does not report client latency yet (the SDCs' heartbeats carry no latency); per-process latency histograms are on the Prometheus endpoints.</p></section>`}
    </section>
    <section class="panel health" data-testid="health">
      <h2>Health</h2>
      <table>
        <tr><th>SDSs</th><td><span class="ok">${health.sdsConnected} connected</span>${health.sdsDisconnected > 0 ? html` · <span class="warn">${health.sdsDisconnected} disconnected</span>` : null}${health.sdsDown > 0 ? html` · <span class="bad" data-testid="sds-down">${health.sdsDown} down</span>` : null}</td></tr>
        <tr><th>Devices</th><td><span class="ok">${health.devicesNormal} normal</span>${health.devicesFailed > 0 ? html` · <span class="bad">${health.devicesFailed} failed</span>` : null}${health.devicesRemoving > 0 ? html` · ${health.devicesRemoving} removing` : null}</td></tr>
        <tr><th>SDCs</th><td>${health.sdcConnected} connected${health.sdcDisconnected > 0 ? html` · <span class="warn">${health.sdcDisconnected} disconnected</span>` : null}</td></tr>
        <tr><th>Data</th><td>${health.degradedCapacityInKb > 0 ? html`<span class="warn">${kib(health.degradedCapacityInKb)} degraded</span>` : html`<span class="ok">fully protected</span>`}${health.failedCapacityInKb > 0 ? html` · <span class="bad">${kib(health.failedCapacityInKb)} failed</span>` : null}</td></tr>
        ${health.volumesDegraded.length > 0 ? html`<tr><th>Degraded volumes</th><td>${health.volumesDegraded.join(', ')}</td></tr>` : null}
        ${health.volumesFailed.length > 0 ? html`<tr><th>Failed volumes</th><td class="bad">${health.volumesFailed.join(', ')}</td></tr>` : null}
      </table>
    </section>
    <section class="panel rebuild" data-testid="rebuild" data-state=${rebuild.state} data-percent=${rebuild.percent} data-bytes-done=${rebuild.bytesDone}>
      <h2>Rebuild and rebalance</h2>
      ${rebuild.state === 'idle' && rebuild.pendingOut.length === 0
        ? html`<p class="ok">Idle: every group has both copies where it belongs.</p>`
        : html`<div>
            <progress max="100" value=${rebuild.percent}></progress> <b>${rebuild.percent.toFixed(1)} %</b> (${rebuild.state})
            <p>${count(rebuild.groupsSyncing)} of ${count(rebuild.groupsTotal)} groups filling · ${kib(rebuild.bytesDone / 1024)} copied · <span data-testid="rebuild-rate">${kib(rebuild.bytesPerSecond / 1024)}/s</span> · ETA <span data-testid="rebuild-eta">${rebuild.etaSeconds === null ? 'unknown' : seconds(rebuild.etaSeconds)}</span></p>
            ${rebuild.pendingOut.map((pending) => html`<p class="warn" key=${pending.sdsId}>SDS ${pending.name} is down: its copies are rebuilt elsewhere from ${clock(pending.outAtMs)}</p>`)}
            ${rebuild.groupsFailing > 0 ? html`<p class="bad">${rebuild.groupsFailing} groups failing to fill (${rebuild.failing[0]?.message ?? ''})</p>` : null}
          </div>`}
    </section>
    <section class="panel mdm" data-testid="mdm-cluster">
      <h2>MDM cluster</h2>
      ${mdmCluster === null
        ? html`<p class="muted">unknown</p>`
        : html`<p><b class=${mdmCluster.clusterState === 'ClusteredNormal' || mdmCluster.clusterState === 'NotClustered' ? 'ok' : 'bad'}>${mdmCluster.clusterState}</b> · ${mdmCluster.clusterMode} · ${mdmCluster.goodNodesNum} good nodes</p>
            <table>
              ${[mdmCluster.master, ...mdmCluster.slaves, ...mdmCluster.tieBreakers].filter((mdm) => mdm !== null).map(
                (mdm) => html`<tr key=${mdm.id}><th>${mdm.name}</th><td>${mdm === mdmCluster.master ? 'Master' : mdm.role === 'TieBreaker' ? 'Tie-Breaker' : 'Slave'}</td><td class=${mdm.status === 'Normal' ? 'ok' : 'bad'}>${mdm.status}</td><td>${mdm.apiAddress ?? mdm.ips.join(', ')}</td></tr>`,
              )}
            </table>`}
      <p class="muted">System ${dashboard.system.name ?? dashboard.system.id} · ${dashboard.system.systemVersionName} · map epoch ${dashboard.system.mapEpoch}</p>
    </section>
    <section class="panel busiest" data-testid="busiest">
      <h2>Busiest volumes</h2>
      ${busiest.length === 0
        ? html`<p class="muted">No client IO in the last interval.</p>`
        : html`<table><tr><th>Volume</th><th>IOPS</th><th>MiB/s</th></tr>${busiest.map((entry) => html`<tr key=${entry.id}><td>${entry.name}</td><td>${count(entry.iops)}</td><td>${(entry.kibps / 1024).toFixed(1)}</td></tr>`)}</table>`}
    </section>
    <${EventsPanel} log=${eventLog} />
  </div>`;
}
