import { InvalidArgumentError } from './errors.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

const unitBytes: Record<string, number> = {
  '': 1,
  b: 1,
  k: KiB,
  kb: 1000,
  kib: KiB,
  m: MiB,
  mb: 1000 * 1000,
  mib: MiB,
  g: GiB,
  gb: 1000 * 1000 * 1000,
  gib: GiB,
  t: TiB,
  tb: 1000 * 1000 * 1000 * 1000,
  tib: TiB,
};

/**
 * Parses a size such as `4096`, `512K`, `8GiB` or `1.5G` into bytes. Binary units for the
 * bare letters (as qemu-img and nbdkit do); `KB`/`MB`/`GB` are decimal. The result must be a
 * whole number of bytes and a safe integer; anything else is refused, never rounded.
 */
export function parseSizeBytes(field: string, text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (match === null) {
    throw new InvalidArgumentError(field, `not a size: '${text}' (examples: 4096, 512K, 8GiB)`);
  }
  const multiplier = unitBytes[(match[2] ?? '').toLowerCase()];
  if (multiplier === undefined) {
    throw new InvalidArgumentError(field, `unknown unit '${match[2]}' in '${text}' (use K, M, G, T, KiB, MB, ...)`);
  }
  const bytes = Number(match[1]) * multiplier;
  if (!Number.isSafeInteger(bytes)) {
    throw new InvalidArgumentError(field, `'${text}' is not a whole number of bytes below 2^53`);
  }
  return bytes;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unitIndex = 0;
  while (value >= 1024 && unitIndex < units.length - 1) {
    value /= 1024;
    unitIndex += 1;
  }
  const digits = unitIndex === 0 || Number.isInteger(value) ? 0 : 1;
  return `${value.toFixed(digits)} ${units[unitIndex]}`;
}
