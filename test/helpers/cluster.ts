// A whole cluster of real processes for tests: an MDM, SDSs registering with it, an SDC,
// configured through the real management CLI over the REST API.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { sparseFile } from './files.js';
import { run, runMeshblock, startMeshblock, type DaemonHandle, type RunResult, type TeardownHost } from './processes.js';
import { MiB, startSds, type SdsHandle, type SdsIoMode } from './sds.js';

export const adminPassword = 'the lab admin password';

export interface Mdm extends DaemonHandle {
  clusterId: string;
  address: string;
  apiUrl: string;
  certPath: string;
  secretFile: string;
}

export async function startMdm(t: TeardownHost, dir: string, ports?: { listen: string; api: string }, extraArgs: string[] = []): Promise<Mdm> {
  const passwordFile = path.join(dir, 'admin-password.txt');
  fs.writeFileSync(passwordFile, `${adminPassword}\n`, { mode: 0o600 });
  const dataDir = path.join(dir, 'mdm');
  const args = ['mdm', 'start', '--data-dir', dataDir, '--listen', ports?.listen ?? '127.0.0.1:0', '--api', ports?.api ?? '127.0.0.1:0', ...extraArgs];
  if (!fs.existsSync(path.join(dataDir, 'admin-password.json'))) args.push('--admin-password-file', passwordFile);
  const daemon = await startMeshblock(t, args, { ready: /^mdm of cluster ([0-9a-f]{16}) \(\S+\) listening on (\S+), REST API at (\S+) \(certificate (\S+)\); cluster secret in (\S+)$/m });
  return { ...daemon, clusterId: daemon.ready[1] as string, address: daemon.ready[2] as string, apiUrl: daemon.ready[3] as string, certPath: daemon.ready[4] as string, secretFile: daemon.ready[5] as string };
}

export function cli(mdm: Pick<Mdm, 'apiUrl' | 'certPath'>, dir: string) {
  const passwordFile = path.join(dir, 'admin-password.txt');
  return (args: string[]) => runMeshblock([...args, '--api', mdm.apiUrl, '--ca-cert', mdm.certPath, '--password-file', passwordFile]);
}

export async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}


export interface SdcHandle extends DaemonHandle {
  name: string;
  nbdAddress: string;
  nbdPort: number;
}

export async function startSdc(t: TeardownHost, dir: string, mdm: Pick<Mdm, 'address' | 'clusterId' | 'secretFile'>, name = 'sdc1', listen = '127.0.0.1:0'): Promise<SdcHandle> {
  const daemon = await startMeshblock(
    t,
    ['sdc', 'start', '--mdm', mdm.address, '--name', name, '--listen', listen, '--data-dir', path.join(dir, `${name}-data`), '--cluster-id', mdm.clusterId, '--secret-file', mdm.secretFile],
    { ready: /^sdc \S+ \(\S+\) of cluster [0-9a-f]{16} serving NBD on (\S+)$/m },
  );
  const nbdAddress = daemon.ready[1] as string;
  return { ...daemon, name, nbdAddress, nbdPort: Number(nbdAddress.split(':').pop()) };
}

export interface Cluster {
  mdm: Mdm;
  sds: SdsHandle[];
  sdc: SdcHandle;
  meshblock: (args: string[]) => Promise<RunResult>;
  /** nbd://127.0.0.1:PORT/NAME */
  uri(volume: string): string;
}

/**
 * An MDM, `sdsCount` SDSs with one sparse device each (or `devices`, one per SDS), one SDC,
 * a protection domain pd1 and a pool sp1 (1 GiB granularity) holding every device, and the
 * volumes, mapped.
 */
export async function startCluster(
  t: TeardownHost,
  dir: string,
  options: {
    sdsCount?: number;
    deviceBytes?: number;
    volumes: Array<{ name: string; sizeBytes: number }>;
    mdmArgs?: string[];
    /** Where the MDM listens for SDSs and SDCs (its REST API stays on 127.0.0.1). */
    mdmHost?: string;
    /** SDS k runs in this network namespace, listening on this address. */
    sdsHosts?: Array<{ netns: string; address: string }>;
  } & ClusterDevices,
): Promise<Cluster> {
  const mdm = await startMdm(t, dir, { listen: `${options.mdmHost ?? '127.0.0.1'}:0`, api: '127.0.0.1:0' }, options.mdmArgs ?? []);
  return { mdm, ...(await populateCluster(t, dir, { ...mdm, meshblock: cli(mdm, dir) }, options)) };
}

/** What populateCluster needs of the control plane: one MDM, or an MDM cluster (addresses comma-separated). */
export interface ControlPlane {
  clusterId: string;
  /** The MDM wire address(es) SDSs and SDCs are given (--mdm). */
  address: string;
  secretFile: string;
  meshblock: (args: string[]) => Promise<RunResult>;
}

/** Where a test cluster's SDSs keep their data, and how they do its IO. */
export interface ClusterDevices {
  /**
   * SDS k's device (e.g. a loop device from test/helpers/loop-devices.ts), one per SDS;
   * sdsCount defaults to their count. Without it, each SDS gets a sparse file
   * sdsK.img of deviceBytes in the test's dir.
   */
  devices?: string[];
  /** `sds start --io` for every SDS (and its restarts); without it the SDS's default. */
  sdsIo?: SdsIoMode;
}

/** SDSs, an SDC, pd1/sp1 and the volumes, mapped, on a running control plane. */
export async function populateCluster(
  t: TeardownHost,
  dir: string,
  mdm: ControlPlane,
  options: { sdsCount?: number; deviceBytes?: number; volumes: Array<{ name: string; sizeBytes: number }>; sdsHosts?: Array<{ netns: string; address: string }> } & ClusterDevices,
): Promise<Omit<Cluster, 'mdm'>> {
  const meshblock = mdm.meshblock;
  const must = async (args: string[]): Promise<void> => {
    const result = await meshblock(args);
    if (result.code !== 0) throw new Error(`meshblock ${args.join(' ')} failed: ${result.stderr}`);
  };
  const sds: SdsHandle[] = [];
  const sdsCount = options.sdsCount ?? options.devices?.length ?? 3;
  if (options.devices !== undefined && options.devices.length !== sdsCount) throw new Error(`${options.devices.length} devices for ${sdsCount} SDSs`);
  for (let index = 1; index <= sdsCount; index++) {
    const device = options.devices?.[index - 1] ?? sparseFile(dir, `sds${index}.img`, options.deviceBytes ?? 4096 * MiB);
    const host = options.sdsHosts?.[index - 1];
    sds.push(
      await startSds(t, {
        dir,
        name: `sds${index}`,
        devices: [device],
        clusterId: mdm.clusterId,
        secretFile: mdm.secretFile,
        extraArgs: ['--mdm', mdm.address],
        ...(options.sdsIo !== undefined ? { io: options.sdsIo } : {}),
        ...(host !== undefined ? { netns: host.netns, listen: `${host.address}:0` } : {}),
      }),
    );
  }
  const sdc = await startSdc(t, dir, mdm);
  await must(['pd', 'add', '--name', 'pd1']);
  await must(['pool', 'add', '--pd', 'pd1', '--name', 'sp1', '--volume-granularity', '1GiB']);
  await until('the SDSs to register', async () => {
    const list = JSON.parse((await meshblock(['sds', 'list', '--json'])).stdout) as unknown[];
    return list.length === sds.length ? true : undefined;
  });
  for (const entry of sds) {
    await must(['sds', 'add', '--sds', entry.name, '--pd', 'pd1']);
    await must(['device', 'add', '--sds', entry.name, '--pool', 'sp1', '--path', entry.devices[0] as string]);
  }
  for (const volume of options.volumes) {
    await must(['volume', 'add', '--pool', 'sp1', '--name', volume.name, '--size', String(volume.sizeBytes)]);
    await must(['volume', 'map', '--volume', volume.name, '--sdc', sdc.name]);
  }
  const uri = (volume: string): string => `nbd://${sdc.nbdAddress}/${volume}`;
  await until('the SDC to export every volume', async () => {
    const listed = await run('nbdinfo', ['--list', '--json', `nbd://${sdc.nbdAddress}`]);
    return options.volumes.every((volume) => listed.stdout.includes(`"${volume.name}"`)) ? true : undefined;
  });
  return { sds, sdc, meshblock, uri };
}

/** Restarts a killed SDS of the cluster on its old address, device, --io and data directory. */
export async function restartSds(t: TeardownHost, dir: string, cluster: Cluster, index: number): Promise<SdsHandle> {
  const old = cluster.sds[index] as SdsHandle;
  const restarted = await startSds(t, {
    dir,
    name: old.name,
    devices: old.devices,
    listen: old.address,
    clusterId: cluster.mdm.clusterId,
    secretFile: cluster.mdm.secretFile,
    extraArgs: ['--mdm', cluster.mdm.address],
    ...(old.io !== undefined ? { io: old.io } : {}),
  });
  cluster.sds[index] = restarted;
  return restarted;
}
