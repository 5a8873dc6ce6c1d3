// What the snapshot tests against a real cluster share (test/integration/snapshots*.test.ts):
// the REST API in ScaleIO's shapes, the CLI, the SDC's exports, and the real clients.

import * as fs from 'node:fs';
import type { Test } from 'tap';
import { adminPassword, until, type Cluster } from './cluster.js';
import { readExport } from './dependent-writer.js';
import { run, type RunResult, type TeardownHost } from './processes.js';
import { MdmOp } from '../../src/wire/mdm-ops.js';
import { parsePlacementMap, type PlacementMap } from '../../src/wire/placement.js';
import { basic, call, type Response } from './rest.js';
import { MiB, connectWire } from './sds.js';

/** What the tests write and compare at the start of a volume. */
export const dataBytes = 64 * MiB;

/** A Volume as the snapshot-aware REST API gives it (ScaleIO's fields). */
export interface SnapVolume {
  id: string;
  name: string;
  vtreeId: string;
  storagePoolId: string;
  ancestorVolumeId: string | null;
  volumeType: string;
  accessModeLimit?: string;
  consistencyGroupId?: string | null;
  mappedSdcInfo: Array<{ sdcId: string }> | null;
}

/** The REST API of an MDM, logged in as admin. */
export class Api {
  private constructor(
    private readonly target: { url: string; ca: Buffer },
    private readonly token: string,
  ) {}

  static async login(mdm: { apiUrl: string; certPath: string }): Promise<Api> {
    const target = { url: mdm.apiUrl, ca: fs.readFileSync(mdm.certPath) };
    const reply = await call(target, 'GET', '/api/login', { authorization: basic('admin', adminPassword) });
    if (reply.status !== 200 || typeof reply.body !== 'string') throw new Error(`login failed: ${reply.status} ${reply.text}`);
    return new Api(target, reply.body);
  }

  get(urlPath: string): Promise<Response> {
    return call(this.target, 'GET', urlPath, { token: this.token, timeoutMs: 60_000 });
  }

  post(urlPath: string, body: unknown): Promise<Response> {
    return call(this.target, 'POST', urlPath, { body, token: this.token, timeoutMs: 60_000 });
  }

  async volumes(): Promise<SnapVolume[]> {
    const reply = await call(this.target, 'GET', '/api/types/Volume/instances', { token: this.token, timeoutMs: 60_000 });
    if (reply.status !== 200) throw new Error(`listing volumes: ${reply.status} ${reply.text}`);
    return reply.body as SnapVolume[];
  }

  async volume(name: string): Promise<SnapVolume> {
    const found = (await this.volumes()).find((volume) => volume.name === name);
    if (found === undefined) throw new Error(`no volume ${name}`);
    return found;
  }

  /** snapshotVolumes as ScaleIO clients (Cinder) send it. */
  snapshot(defs: Array<{ volumeId: string; snapshotName: string }>, readOnly = false): Promise<Response> {
    return this.post('/api/instances/System/action/snapshotVolumes', { snapshotDefs: defs, ...(readOnly ? { accessModeLimit: 'ReadOnly' } : {}) });
  }
}

/** The stable code of a REST error reply. */
export function codeOf(reply: Response): string {
  const code = (reply.body as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? code : `(none; HTTP ${reply.status}: ${reply.text.slice(0, 200)})`;
}

export async function must(cluster: Cluster, args: string[]): Promise<RunResult> {
  const result = await cluster.meshblock(args);
  if (result.code !== 0) throw new Error(`meshblock ${args.join(' ')} failed (${result.code}): ${result.stderr}`);
  return result;
}

/** Maps a volume to the SDC (read-only: as a read-only snapshot must be) and waits for its export. */
export async function mapAndWait(cluster: Cluster, name: string, readOnly = false): Promise<void> {
  await must(cluster, ['volume', 'map', '--volume', name, '--sdc', cluster.sdc.name, ...(readOnly ? ['--read-only'] : [])]);
  await until(`the SDC to export ${name}`, async () => ((await run('nbdinfo', ['--list', '--json', `nbd://${cluster.sdc.nbdAddress}`])).stdout.includes(`"${name}"`) ? true : undefined));
}

export async function unmapAndWait(cluster: Cluster, name: string): Promise<void> {
  // The SDC's heartbeat may still count a client that just left: retry the refusal.
  await until(`${name} to be unmapped`, async () => ((await cluster.meshblock(['volume', 'unmap', '--volume', name, '--sdc', cluster.sdc.name])).code === 0 ? true : undefined));
}

/** qemu-img compare's exit code: 0 identical, 1 different (beyond the shorter image, only zeros count as identical). */
export async function compare(first: string, second: string): Promise<number | null> {
  const result = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', first, second]);
  if (result.code !== 0 && result.code !== 1) throw new Error(`qemu-img compare ${first} ${second}: ${result.stderr}`);
  return result.code;
}

/**
 * Runs qemu-io commands (reads and writes) on an export: whether every one of them did its
 * whole length and every pattern matched (qemu-io exits 0 even when a command fails).
 */
export async function qemuIo(t: Test, uri: string, commands: string[]): Promise<boolean> {
  const result = await run('qemu-io', ['-f', 'raw', ...commands.flatMap((command) => ['-c', command]), uri]);
  const output = `${result.stdout}${result.stderr}`;
  const done = output.match(/^(?:wrote|read) (\d+)\/\1 bytes/gm)?.length ?? 0;
  const ok = result.code === 0 && done === commands.length && !/Pattern verification failed/.test(output);
  if (!ok) t.comment(`qemu-io ${commands.join('; ')} on ${uri}: ${output.trim()}`);
  return ok;
}

export function readFirst(cluster: Cluster, name: string, byteCount = dataBytes, offsetBytes = 0): Promise<Buffer> {
  return readExport('127.0.0.1', cluster.sdc.nbdPort, name, byteCount, offsetBytes);
}

export async function dashboardJson(cluster: Cluster): Promise<string> {
  const result = await must(cluster, ['dashboard', '--json']);
  return JSON.stringify(JSON.parse(result.stdout));
}

/** The placement map the MDM serves now (what SDSs and SDCs get), over the wire. */
export async function placementMap(t: TeardownHost, cluster: Cluster): Promise<PlacementMap> {
  const peer = await connectWire(t, cluster.mdm.address, { clusterId: cluster.mdm.clusterId, secret: fs.readFileSync(cluster.mdm.secretFile, 'utf8').trim() });
  try {
    const response = await peer.request(MdmOp.GetMap, Buffer.alloc(0));
    return parsePlacementMap(JSON.parse(response.payload.toString()));
  } finally {
    peer.destroy();
  }
}
