// Small pieces the views share: the capacity ring, the live chart, the confirm dialog.

import { h } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import htm from 'htm';
import uPlot from 'uplot';
import { kib } from './format.js';

export const html = htm.bind(h);

/**
 * A ring as ScaleIO's dashboard draws capacity: one arc per state, in order, over the whole.
 * segments: [{key, label, valueKib, color}]; the legend lists each with its number, so that the
 * test (and a user) can read the exact values the API gave.
 */
export function Ring({ id, title, totalKib, totalLabel, segments }) {
  const radius = 60;
  const circumference = 2 * Math.PI * radius;
  let offset = 0;
  const arcs = segments.map((segment) => {
    const length = totalKib > 0 ? (Math.max(0, segment.valueKib) / totalKib) * circumference : 0;
    const arc = html`<circle class="arc" cx="80" cy="80" r=${radius} stroke=${segment.color} stroke-dasharray=${`${length} ${circumference - length}`} stroke-dashoffset=${-offset}><title>${segment.label}: ${kib(segment.valueKib)}</title></circle>`;
    offset += length;
    return arc;
  });
  return html`<figure class="ring" data-testid=${`ring-${id}`}>
    <figcaption>${title}</figcaption>
    <svg viewBox="0 0 160 160" width="160" height="160" role="img" aria-label=${title}>
      <circle class="track" cx="80" cy="80" r=${radius} />
      <g transform="rotate(-90 80 80)">${arcs}</g>
      <text x="80" y="76" class="ring-total">${kib(totalKib)}</text>
      <text x="80" y="96" class="ring-label">${totalLabel}</text>
    </svg>
    <ul class="legend">
      ${segments.map((segment) => html`<li key=${segment.key}><span class="swatch" style=${{ background: segment.color }}></span>${segment.label}<span class="value" data-testid=${`capacity-${segment.key}`} data-kib=${segment.valueKib}>${kib(segment.valueKib)}</span></li>`)}
    </ul>
  </figure>`;
}

/**
 * A live uPlot chart: times in seconds, one series per entry of `series`. The data is handed
 * over whole on each refresh (uPlot redraws fast: a few hundred points).
 */
export function Chart({ id, title, unit, series, data }) {
  const box = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const width = Math.max(280, box.current.clientWidth - 8);
    plot.current = new uPlot(
      {
        width,
        height: 180,
        legend: { live: false },
        scales: { x: { time: true }, y: { range: (_u, min, max) => [0, Math.max(1, max * 1.1)] } },
        axes: [{}, { label: unit, size: 60 }],
        series: [{}, ...series.map((entry) => ({ label: entry.label, stroke: entry.color, width: 2, points: { show: false } }))],
      },
      data,
      box.current,
    );
    return () => plot.current.destroy();
  }, []);
  useEffect(() => {
    if (plot.current !== null) plot.current.setData(data);
  }, [data]);
  const last = data[1].length > 0 ? series.map((entry, index) => `${entry.label} ${format(data[index + 1][data[index + 1].length - 1])}`).join(' · ') : 'waiting for data';
  return html`<section class="chart" data-testid=${`chart-${id}`} data-points=${data[0].length} data-last=${JSON.stringify(series.map((_entry, index) => data[index + 1][data[index + 1].length - 1] ?? null))}>
    <h3>${title} <small>${last}</small></h3>
    <div ref=${box}></div>
  </section>`;
}

function format(value) {
  if (typeof value !== 'number') return '—';
  return value >= 100 ? Math.round(value).toString() : value.toFixed(1);
}

/**
 * Asks before doing: `fields` ([{name, label, type, value, options}]) are filled in, `run(values)`
 * is called on confirm. A refusal from the API stays in the dialog with its message and code, so
 * the administrator sees why and can correct the input.
 */
export function Dialog({ dialog, onClose }) {
  const [values, setValues] = useState(() => Object.fromEntries((dialog.fields ?? []).map((field) => [field.name, field.value ?? ''])));
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const confirm = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await dialog.run(values);
      onClose(true);
    } catch (err) {
      setError(err.code ? `${err.message} (${err.code})` : err.message);
      setBusy(false);
    }
  };
  return html`<div class="backdrop">
    <form class="dialog" data-testid="dialog" onSubmit=${confirm}>
      <h2>${dialog.title}</h2>
      ${dialog.text ? html`<p>${dialog.text}</p>` : null}
      ${(dialog.fields ?? []).map(
        (field) => html`<label key=${field.name}>${field.label}
          ${field.options
            ? html`<select name=${field.name} value=${values[field.name]} onChange=${(event) => setValues({ ...values, [field.name]: event.target.value })}>
                ${field.options.map((option) => html`<option value=${option.value}>${option.label}</option>`)}
              </select>`
            : html`<input name=${field.name} type=${field.type ?? 'text'} value=${values[field.name]} onInput=${(event) => setValues({ ...values, [field.name]: event.target.value })} />`}
        </label>`,
      )}
      ${error !== null ? html`<p class="error" data-testid="dialog-error" role="alert">${error}</p>` : null}
      <div class="buttons">
        <button type="button" onClick=${() => onClose(false)} disabled=${busy}>Cancel</button>
        <button type="submit" class=${dialog.danger ? 'danger' : 'primary'} data-testid="dialog-confirm" disabled=${busy}>${dialog.confirmLabel ?? 'Confirm'}</button>
      </div>
    </form>
  </div>`;
}
