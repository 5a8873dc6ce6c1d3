// An MDM cluster of real processes for tests: etcd members (test/helpers/etcd-cluster.ts) and
// MDMs (`meshblock mdm start --etcd ...`) sharing one REST certificate, and helpers to find
// the Master, kill, pause and restart MDMs, and read the cluster as the REST API shows it.
//
// With `hosts` (simulated hosts, test/helpers/netns.ts: one per etcd member, MDM hosts
// first), every etcd member and MDM runs in its host's network namespace on the host's
// address and the default ports, and the shared REST certificate names every host's
// address (and 127.0.0.1): a host cut off the network takes its MDM and its member with it.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { defaultApiPort, defaultMdmPort } from '../../src/cli/mdm-start.js';
import { ensureSelfSignedCertificate } from '../../src/mdm/tls.js';
import type { MdmClusterView } from '../../src/mdm/cluster-member.js';
import { adminPassword, until } from './cluster.js';
import { freeLoopbackPorts, startEtcdCluster, type EtcdCluster, type EtcdMemberHost } from './etcd-cluster.js';
import { runMeshblock, startMeshblock, type DaemonHandle, type RunResult, type TeardownHost } from './processes.js';
import { basic, call, type Response } from './rest.js';

export interface ClusterMdm {
  name: string;
  wireAddress: string;
  apiAddress: string;
  dataDir: string;
  /** The simulated host's namespace it runs in (undefined: the test's own, on loopback). */
  netns?: string;
  handle: DaemonHandle | null;
}

export interface MdmClusterHandle {
  etcd: EtcdCluster;
  mdms: ClusterMdm[];
  clusterId: string;
  certPath: string;
  secretFile: string;
  passwordFile: string;
  /** Every MDM's wire address, as SDSs and SDCs take them (--mdm). */
  addresses: string;
  /** Every MDM's REST API, https://HOST:PORT,... (the CLI's --api). */
  apiUrls: string;
  start(index: number): Promise<ClusterMdm>;
  /** The meshblock management CLI against the cluster (any MDM answers). */
  cli(args: string[]): Promise<RunResult>;
  /** queryMdmCluster from one MDM's REST API, or null if it did not answer 200. */
  query(index?: number): Promise<MdmClusterView | null>;
  /** One REST call (after a login) to one MDM's API, bounded to 5 s; null when it did not answer. */
  rest(index: number, method: 'GET' | 'POST', urlPath: string, body?: unknown): Promise<Response | null>;
  /** The Master's index, once the cluster agrees on one. */
  master(timeoutMs?: number): Promise<number>;
}

/** query() gives up on an MDM that has not answered within this long. */
const queryTimeoutMs = 5000;

const mdmReady = /^mdm (\S+) of cluster ([0-9a-f]{16}) \(.*?\): REST API at (\S+), SDSs and SDCs on (\S+) while Master/m;

export async function startMdmCluster(
  t: TeardownHost & { testdir?: () => string },
  dir: string,
  options: { size: 3 | 5; mdmArgs?: string[]; hosts?: readonly EtcdMemberHost[] },
): Promise<MdmClusterHandle> {
  const hosts = options.hosts;
  const etcd = await startEtcdCluster(t, {
    members: options.size,
    dir: path.join(dir, 'etcd'),
    names: options.size === 3 ? ['mdm1', 'mdm2', 'tb1'] : ['mdm1', 'mdm2', 'mdm3', 'tb1', 'tb2'],
    ...(hosts !== undefined ? { hosts } : {}),
  });
  const managerCount = options.size === 3 ? 2 : 3;
  const passwordFile = path.join(dir, 'admin-password.txt');
  fs.writeFileSync(passwordFile, `${adminPassword}\n`, { mode: 0o600 });
  fs.mkdirSync(path.join(dir, 'api'), { recursive: true });
  const certificate = ensureSelfSignedCertificate(
    path.join(dir, 'api'),
    hosts === undefined ? {} : { subjectAltNames: [...hosts.slice(0, managerCount).map((host) => `IP:${host.address}`), 'IP:127.0.0.1'] },
  );
  // A namespace has ports of its own: the MDM's default ones are free there.
  const ports = hosts === undefined ? await freeLoopbackPorts(2 * managerCount) : [];
  const mdms: ClusterMdm[] = [];
  for (let index = 0; index < managerCount; index++) {
    const host = hosts?.[index];
    mdms.push({
      name: `mdm${index + 1}`,
      wireAddress: host === undefined ? `127.0.0.1:${ports[2 * index] as number}` : `${host.address}:${defaultMdmPort}`,
      apiAddress: host === undefined ? `127.0.0.1:${ports[2 * index + 1] as number}` : `${host.address}:${defaultApiPort}`,
      dataDir: path.join(dir, `mdm${index + 1}`),
      ...(host !== undefined ? { netns: host.netns } : {}),
      handle: null,
    });
  }
  let clusterId = '';
  const start = async (index: number): Promise<ClusterMdm> => {
    const mdm = mdms[index] as ClusterMdm;
    const args = ['mdm', 'start', '--data-dir', mdm.dataDir, '--listen', mdm.wireAddress, '--api', mdm.apiAddress, '--etcd', etcd.endpoints.join(','), '--etcd-pki', etcd.pkiDir, '--mdm-name', mdm.name];
    args.push('--tls-cert', certificate.certPath, '--tls-key', certificate.keyPath, '--admin-password-file', passwordFile, ...(options.mdmArgs ?? []));
    mdm.handle = await startMeshblock(t, args, { ready: mdmReady, ...(mdm.netns !== undefined ? { netns: mdm.netns } : {}) });
    clusterId = mdm.handle.ready[2] as string;
    return mdm;
  };
  await Promise.all(mdms.map((_, index) => start(index)));
  const apiUrls = mdms.map((mdm) => `https://${mdm.apiAddress}`).join(',');
  const rest = async (index: number, method: 'GET' | 'POST', urlPath: string, body?: unknown): Promise<Response | null> => {
    const api = { url: `https://${(mdms[index] as ClusterMdm).apiAddress}`, ca: certificate.cert };
    // A paused Master holds forwarded requests until the Slave sees it replaced: bounded here.
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), queryTimeoutMs)));
    const ask = async (): Promise<Response | null> => {
      try {
        const login = await call(api, 'GET', '/api/login', { authorization: basic('admin', adminPassword), timeoutMs: queryTimeoutMs });
        if (login.status !== 200 || typeof login.body !== 'string') return login;
        return await call(api, method, urlPath, { token: login.body, timeoutMs: queryTimeoutMs, ...(body === undefined ? {} : { body }) });
      } catch {
        return null;
      }
    };
    try {
      return await Promise.race([ask(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  };
  const query = async (index = 0): Promise<MdmClusterView | null> => {
    const answer = await rest(index, 'POST', '/api/instances/System/action/queryMdmCluster', {});
    return answer?.status === 200 ? (answer.body as MdmClusterView) : null;
  };
  const handle: MdmClusterHandle = {
    etcd,
    mdms,
    clusterId,
    certPath: certificate.certPath,
    secretFile: path.join((mdms[0] as ClusterMdm).dataDir, 'cluster.secret'),
    passwordFile,
    addresses: mdms.map((mdm) => mdm.wireAddress).join(','),
    apiUrls,
    start,
    rest,
    cli: (args) => runMeshblock([...args, '--api', apiUrls, '--ca-cert', certificate.certPath, '--password-file', passwordFile]),
    query,
    master: async (timeoutMs = 20_000) =>
      until(
        'one Master',
        async () => {
          for (const [index, mdm] of mdms.entries()) {
            if (mdm.handle === null) continue;
            const view = await query(index);
            const master = view?.master?.name;
            if (master === undefined) continue;
            const found = mdms.findIndex((entry) => entry.name === master);
            if (found >= 0 && mdms[found]?.handle !== null) return found;
          }
          return undefined;
        },
        timeoutMs,
      ),
  };
  await handle.master();
  return handle;
}
