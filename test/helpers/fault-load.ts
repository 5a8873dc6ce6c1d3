// Client load for fault tests: fio (its nbd engine) writing at random with crc32c
// verification, run in the background while processes are killed, hung and cut off, and
// the MDM's dashboard, to wait until the cluster is whole again.

import { spawn } from 'node:child_process';
import type { Test } from 'tap';
import type { RestDashboard } from '../../src/mdm/rest-objects.js';
import { until, type Cluster } from './cluster.js';

export interface FioRun {
  done: Promise<{ code: number | null; output: string }>;
}

/** fio writing `sizeBytes` at random, then verifying it, `loops` times over. */
export function fioVerify(uri: string, options: { sizeBytes: number; loops: number; bs?: string; iodepth?: number; extra?: string[] }): FioRun {
  const args = [
    '--name=verify',
    '--ioengine=nbd',
    `--uri=${uri}`,
    '--rw=randwrite',
    `--bs=${options.bs ?? '4k'}`,
    `--iodepth=${options.iodepth ?? 8}`,
    `--size=${options.sizeBytes}`,
    `--loops=${options.loops}`,
    '--verify=crc32c',
    '--do_verify=1',
    '--verify_fatal=1',
    // A flush every 64 writes: flushes must get through failures too.
    '--fsync=64',
    '--output-format=terse',
    ...(options.extra ?? []),
  ];
  const child = spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 240_000);
  return {
    done: new Promise((resolve) => {
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, output });
      });
    }),
  };
}

export function expectClean(t: Test, result: { code: number | null; output: string }, what: string): void {
  t.equal(result.code, 0, `fio saw no IO error and no verify failure ${what}`);
  if (result.code !== 0) t.comment(result.output.slice(-3000));
}

export async function dashboard(cluster: Cluster): Promise<RestDashboard> {
  const result = await cluster.meshblock(['dashboard', '--json']);
  if (result.code !== 0) throw new Error(`meshblock dashboard failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as RestDashboard;
}

/** Waits until every group has two copies in sync again (and nothing waits for an SDS). */
export async function untilWhole(cluster: Cluster, timeoutMs = 120_000): Promise<RestDashboard> {
  let last: RestDashboard | null = null;
  try {
    return await until(
      'the cluster to be whole again',
      async () => {
        const view = await dashboard(cluster);
        last = view;
        return view.health.rebuild.state === 'idle' && view.health.degradedBytes === 0 && view.health.failedBytes === 0 ? view : undefined;
      },
      timeoutMs,
    );
  } catch (err) {
    // What it was still waiting for, and what the daemons said, to tell why.
    if (process.env['MESHBLOCK_TEST_LOGS'] !== undefined) {
      const fs = await import('node:fs');
      fs.writeFileSync(`${process.env['MESHBLOCK_TEST_LOGS']}/mdm.log`, cluster.mdm.stderr());
      cluster.sds.forEach((sds) => fs.writeFileSync(`${process.env['MESHBLOCK_TEST_LOGS']}/${sds.name}.log`, sds.stderr()));
      fs.writeFileSync(`${process.env['MESHBLOCK_TEST_LOGS']}/sdc.log`, cluster.sdc.stderr());
    }
    throw new Error(`${(err as Error).message}; health: ${JSON.stringify((last as RestDashboard | null)?.health ?? null)}`);
  }
}

/** fio re-reading and checking what an earlier fioVerify with the same size wrote. */
export function fioVerifyOnly(uri: string, sizeBytes: number, bs = '4k'): FioRun {
  return fioVerify(uri, { sizeBytes, loops: 1, bs, extra: ['--verify_only'] });
}
