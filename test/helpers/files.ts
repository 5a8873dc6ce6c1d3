import * as fs from 'node:fs';
import * as path from 'node:path';
import { consumeStaleWritebackError } from './loop-devices.js';
import { run, type TeardownHost } from './processes.js';

/** A sparse file of `sizeBytes` in `dir`: every byte reads as zero, nothing is allocated. */
export function sparseFile(dir: string, name: string, sizeBytes: number): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, sizeBytes);
  return file;
}

/**
 * Attaches `file` to a free loop device (a real block device) until the test ends, or
 * says why it cannot (no loop devices in this sandbox) by returning the reason.
 */
export async function loopDevice(t: TeardownHost, file: string): Promise<{ device: string } | { unavailable: string }> {
  const attach = await run('losetup', ['--find', '--show', file]);
  if (attach.code !== 0) return { unavailable: `no loop device here: ${attach.stderr.trim()}` };
  const device = attach.stdout.trim();
  t.teardown(() => run('losetup', ['-d', device]));
  consumeStaleWritebackError(device);
  return { device };
}

/** Every .ts file under `dir`, at any depth (the source checks read src/ with it). */
export function typescriptFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return typescriptFiles(full);
    return entry.name.endsWith('.ts') ? [full] : [];
  });
}
