// Numbers as an administrator reads them: binary units (the API counts KiB), rates per second.

const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 1536 → "1.50 MiB" (from KiB). */
export function kib(valueKib) {
  if (typeof valueKib !== 'number' || !Number.isFinite(valueKib)) return '—';
  let value = valueKib;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 2)} ${units[unit]}`;
}

export function count(value) {
  if (typeof value !== 'number' || !Number.isFinite(value)) return '—';
  return Math.round(value).toLocaleString('en-US');
}

export function seconds(value) {
  if (typeof value !== 'number' || !Number.isFinite(value)) return '—';
  if (value < 60) return `${Math.round(value)} s`;
  if (value < 3600) return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
  return `${Math.floor(value / 3600)} h ${Math.round((value % 3600) / 60)} min`;
}

export function percent(part, whole) {
  if (!(whole > 0)) return '—';
  return `${((100 * part) / whole).toFixed(1)} %`;
}

export function clock(ms) {
  return new Date(ms).toLocaleTimeString('en-GB');
}
