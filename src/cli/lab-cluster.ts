// `lab up --mdm-cluster 3|5`: the lab's MDM cluster on loopback, as ScaleIO lays one out.
//
//   3 nodes: etcd members mdm1, mdm2, tb1; MDMs mdm1 (Master at first, usually), mdm2
//   5 nodes: etcd members mdm1..mdm3, tb1, tb2; MDMs mdm1..mdm3
//
// Every member and MDM is a daemon of the lab (lab-processes.ts): the etcd members run
// `meshblock etcd start` (Debian's etcd, TLS with client certificates from DIR/pki), the MDMs
// `meshblock mdm start --etcd ...`. The MDMs share one REST certificate (DIR/api/api.crt), so
// that the management commands trust whichever MDM answers; SDSs and the SDC are given every
// MDM's address and follow the Master.
//
// A lab directory with a cluster holds, beside the usual:
//
//   DIR/pki/               the etcd CA, member and client certificates (src/mdm/etcd-pki.ts)
//   DIR/api/api.crt, .key  the MDMs' shared REST certificate
//   DIR/etcd/NAME/         each etcd member's data directory
//   DIR/mdm1/ ...          each MDM's data directory

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Level } from 'pino';
import { InvalidArgumentError } from '../common/errors.js';
import { createEtcdPki } from '../mdm/etcd-pki.js';
import { ensureSelfSignedCertificate } from '../mdm/tls.js';
import { isDaemonRunning, startDaemon, startMovable } from './lab-processes.js';
import { LabError, labMetricsArgs, writeLabFile, type LabFile, type LabProcess } from './lab-state.js';

/** ScaleIO's cluster modes: one MDM (its own journal), or 3 or 5 etcd members. */
export type LabMdmClusterSize = 1 | 3 | 5;
export const labEtcdClientPortFirst = 2379;
export const labEtcdPeerPortFirst = 2380;

const loopback = '127.0.0.1';
export function parseMdmClusterFlag(text: string): LabMdmClusterSize {
  if (text === '1' || text === '3' || text === '5') return Number(text) as LabMdmClusterSize;
  throw new InvalidArgumentError('--mdm-cluster', `must be 1, 3 or 5 (ScaleIO's one-, three- and five-node modes), got '${text}'`);
}

/** The names of the managers (MDM and etcd member) and of the Tie-Breakers (etcd member only). */
export function clusterNames(size: 3 | 5): { managers: string[]; tieBreakers: string[] } {
  return size === 3 ? { managers: ['mdm1', 'mdm2'], tieBreakers: ['tb1'] } : { managers: ['mdm1', 'mdm2', 'mdm3'], tieBreakers: ['tb1', 'tb2'] };
}

/** The processes of a new lab's MDM cluster, with their ports chosen. */
export async function clusterProcesses(dir: string, size: 3 | 5, choosePort: (first: number) => Promise<number>): Promise<{ processes: LabProcess[]; apiUrls: string[] }> {
  const { managers, tieBreakers } = clusterNames(size);
  const processes: LabProcess[] = [];
  for (const name of [...managers, ...tieBreakers]) {
    const client = await choosePort(labEtcdClientPortFirst);
    const peer = await choosePort(labEtcdPeerPortFirst);
    processes.push({ role: 'etcd', name: `etcd-${name}`, pid: null, address: `${loopback}:${client}`, peerAddress: `${loopback}:${peer}`, memberName: name, dataDir: path.join(dir, 'etcd', name), logFile: path.join(dir, 'logs', `etcd-${name}.log`) });
  }
  const apiUrls: string[] = [];
  for (const name of managers) {
    const wire = await choosePort(6611);
    const api = await choosePort(8443);
    apiUrls.push(`https://${loopback}:${api}`);
    processes.push({ role: 'mdm', name, pid: null, address: `${loopback}:${wire}`, apiAddress: `${loopback}:${api}`, dataDir: path.join(dir, name), logFile: path.join(dir, 'logs', `${name}.log`) });
  }
  return { processes, apiUrls };
}

/** `meshblock etcd start` says so once its etcd runs (it serves once a majority of members is up). */
const etcdReadyPattern = /^etcd member (\S+) \(etcd pid (\d+)\) started/m;
const clusterMdmReadyPattern = /^mdm (\S+) of cluster ([0-9a-f]{16}) \(.*?\): REST API at (\S+), SDSs and SDCs on (\S+) while Master/m;

/** The MDMs' wire addresses, as SDSs and SDCs are given them (--mdm). */
export function mdmAddresses(lab: LabFile): string {
  return lab.processes
    .filter((record) => record.role === 'mdm')
    .map((record) => record.address)
    .join(',');
}

/** Starts the etcd members, then the MDMs, that are not running; `startedNow` collects them. */
export async function startMdmCluster(
  dir: string,
  lab: LabFile,
  options: { logLevel: Level; extraMdmArgs: string[]; choosePort: (first: number) => Promise<number> },
  startedNow: LabProcess[],
  report: (line: string) => void,
): Promise<void> {
  const members = lab.processes.filter((record) => record.role === 'etcd');
  const mdms = lab.processes.filter((record) => record.role === 'mdm');
  const pkiDir = path.join(dir, 'pki');
  createEtcdPki(pkiDir, { members: members.map((member) => ({ name: member.memberName as string, ips: [loopback] })), clients: mdms.map((mdm) => mdm.name) });
  fs.mkdirSync(path.join(dir, 'api'), { recursive: true, mode: 0o700 });
  const certificate = ensureSelfSignedCertificate(path.join(dir, 'api'));
  const initialCluster = members.map((member) => `${member.memberName as string}=https://${member.peerAddress as string}`).join(',');
  const endpoints = members.map((member) => `https://${member.address}`).join(',');
  await settle(
    members.map(async (member) => {
      if (isDaemonRunning(member)) {
        report(`${member.name} is running (pid ${member.pid})`);
        return;
      }
      const args = ['etcd', 'start', '--data-dir', member.dataDir, '--name', member.memberName as string, '--client', member.address, '--peer', member.peerAddress as string, '--initial-cluster', initialCluster, '--pki', pkiDir];
      const started = await startDaemon({ name: member.name, args, logFile: member.logFile, cwd: dir, ready: etcdReadyPattern });
      member.pid = started.pid;
      startedNow.push(member);
      report(`started ${member.name} (pid ${started.pid}) on ${member.address}`);
    }),
  );
  writeLabFile(dir, lab);
  await settle(
    mdms.map(async (mdm) => {
      if (isDaemonRunning(mdm)) {
        report(`${mdm.name} is running (pid ${mdm.pid})`);
        return;
      }
      const start = (): ReturnType<typeof startDaemon> => {
        const args = ['mdm', 'start', '--data-dir', mdm.dataDir, '--listen', mdm.address, '--api', mdm.apiAddress as string, '--etcd', endpoints, '--etcd-pki', pkiDir, '--mdm-name', mdm.name, ...labMetricsArgs(mdm)];
        args.push('--tls-cert', certificate.certPath, '--tls-key', certificate.keyPath, '--admin-password-file', lab.passwordFile, '--log-level', options.logLevel, ...options.extraMdmArgs);
        return startDaemon({ name: mdm.name, args, logFile: mdm.logFile, cwd: dir, ready: clusterMdmReadyPattern });
      };
      // The MDM's SDSs and SDC are given its addresses after the MDMs start, and it publishes
      // its own in etcd: it may move.
      const started = await startMovable(start, async () => {
        const wire = await options.choosePort(6611);
        const api = await options.choosePort(8443);
        report(`${mdm.name}: a port of ${mdm.address} or ${mdm.apiAddress as string} was taken meanwhile; moving to ${loopback}:${wire} and ${loopback}:${api}`);
        const oldApi = `https://${mdm.apiAddress as string}`;
        mdm.address = `${loopback}:${wire}`;
        mdm.apiAddress = `${loopback}:${api}`;
        lab.apiAddresses = (lab.apiAddresses ?? []).map((url) => (url === oldApi ? `https://${mdm.apiAddress as string}` : url));
        if (lab.apiUrl === oldApi) lab.apiUrl = `https://${mdm.apiAddress}`;
        writeLabFile(dir, lab);
      });
      mdm.pid = started.pid;
      startedNow.push(mdm);
      const clusterId = started.ready[2] as string;
      if (lab.clusterId !== null && lab.clusterId !== clusterId) throw new LabError('MB_ERR_LAB_CLUSTER', `${mdm.name} runs cluster ${clusterId}, but this lab is cluster ${lab.clusterId}`);
      lab.clusterId = clusterId;
      report(`started ${mdm.name} (pid ${started.pid}) of cluster ${clusterId}: REST API ${mdm.apiAddress as string}, SDSs and SDCs on ${mdm.address} while Master`);
    }),
  );
  Object.assign(lab, { caCert: certificate.certPath, secretFile: path.join((mdms[0] as LabProcess).dataDir, 'cluster.secret') });
  writeLabFile(dir, lab);
}

/** Waits for every start; the first failure is thrown once all have ended (nothing left half-started unseen). */
async function settle(starts: Array<Promise<void>>): Promise<void> {
  const results = await Promise.allSettled(starts);
  const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
}
