// What the QoS tests measure with: fio's nbd engine at a fixed depth, with its per-second
// log (--write_iops_log / --write_bw_log averaged over 1 s), cut into windows.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface FioSeconds {
  /** Per whole second of the run, in order: IOs (reads + writes) and KiB done in it. */
  ios: number[];
  kib: number[];
  code: number | null;
  output: string;
}

export interface FioLoad {
  uri: string;
  rw: 'randread' | 'randwrite' | 'read' | 'write';
  bs: string;
  iodepth: number;
  runtimeS: number;
  /** Bytes of the volume the load stays in. */
  sizeBytes: number;
  /** Where fio writes its logs (a scratch directory of the test). */
  dir: string;
  label: string;
}

/** Runs fio for `runtimeS` seconds and returns what it did in each second. */
export function fioSeconds(load: FioLoad): Promise<FioSeconds> {
  const prefix = path.join(load.dir, load.label);
  const args = [
    `--name=${load.label}`,
    '--ioengine=nbd',
    `--uri=${load.uri}`,
    `--rw=${load.rw}`,
    `--bs=${load.bs}`,
    `--iodepth=${load.iodepth}`,
    `--size=${load.sizeBytes}`,
    '--time_based=1',
    `--runtime=${load.runtimeS}`,
    `--write_iops_log=${prefix}`,
    `--write_bw_log=${prefix}`,
    '--log_avg_msec=1000',
    '--output-format=terse',
  ];
  const child = spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), (load.runtimeS + 60) * 1000);
  return new Promise((resolve) => {
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ ios: perSecond(`${prefix}_iops.1.log`), kib: perSecond(`${prefix}_bw.1.log`), code, output });
    });
  });
}

/**
 * fio's averaged log: one line a second, "msec, value, direction, bs, offset"; reads and
 * writes are separate lines of the same second. Values summed per second; IOPS and KiB/s
 * over one second are the IOs and KiB of that second.
 */
function perSecond(file: string): number[] {
  if (!fs.existsSync(file)) return [];
  const seconds: number[] = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const fields = line.split(',').map((field) => Number(field.trim()));
    const [msec, value] = fields;
    if (msec === undefined || value === undefined || !Number.isFinite(msec) || !Number.isFinite(value) || line.trim() === '') continue;
    const second = Math.max(0, Math.round(msec / 1000) - 1);
    seconds[second] = (seconds[second] ?? 0) + value;
  }
  return Array.from(seconds, (value) => value ?? 0);
}

/** The mean rate of seconds [from, from + length): undefined if fio did not log them all. */
export function windowRate(perSecondValues: readonly number[], from: number, length: number): number | undefined {
  if (from + length > perSecondValues.length) return undefined;
  let sum = 0;
  for (let second = from; second < from + length; second++) sum += perSecondValues[second] ?? 0;
  return sum / length;
}

/** `value` within ±`fraction` of `target`. */
export function within(value: number | undefined, target: number, fraction: number): boolean {
  return value !== undefined && Math.abs(value - target) <= target * fraction;
}
