// What the MDM cluster fault tests share (test/integration/mdm-cluster-faults.test.ts and
// mdm-cluster-quorum.test.ts, one file split in two so that tap runs them side by side): a
// 3- or 5-MDM cluster on etcd with SDSs, an SDC and two 1 GiB volumes, and a verifying writer.

import type { Test } from 'tap';
import { populateCluster, type Cluster } from './cluster.js';
import { startMdmCluster, type MdmClusterHandle } from './mdm-cluster.js';
import { startVerifier, summary, type VerifyingWriter } from './verifier.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** A cluster of `size` MDMs (3) with `sdsCount` SDSs (3) of 2 GiB, an SDC, and volumes vol1 and vol2 of 1 GiB. */
export async function setUpMdmClusterFaults(t: Test, options: { sdsCount?: number; mdmArgs?: string[]; size?: 3 | 5 } = {}): Promise<{ dir: string; mdms: MdmClusterHandle; cluster: Cluster }> {
  const dir = t.testdir();
  const mdms = await startMdmCluster(t, dir, { size: options.size ?? 3, mdmArgs: options.mdmArgs ?? [] });
  const rest = await populateCluster(t, dir, { clusterId: mdms.clusterId, address: mdms.addresses, secretFile: mdms.secretFile, meshblock: (args) => mdms.cli(args) }, {
    sdsCount: options.sdsCount ?? 3,
    deviceBytes: 2 * GiB,
    volumes: [
      { name: 'vol1', sizeBytes: GiB },
      { name: 'vol2', sizeBytes: GiB },
    ],
  });
  // Cluster's `mdm` is the single-MDM handle; fault-load's helpers use only meshblock and uri.
  return { dir, mdms, cluster: { ...rest, mdm: undefined as unknown as Cluster['mdm'] } };
}

export async function clusterWriter(t: Test, cluster: Cluster, volume: string): Promise<VerifyingWriter> {
  const started = await startVerifier({ host: '127.0.0.1', port: cluster.sdc.nbdPort, exportName: volume, regionBytes: 64 * MiB, depth: 8, reconnectTimeoutMs: 120_000, log: (line) => t.comment(line) });
  t.teardown(() => started.destroy());
  t.ok(await started.waitForWrites(500), `the writer on ${volume} is under way`);
  return started;
}

export async function expectWriterClean(t: Test, running: VerifyingWriter, what: string): Promise<void> {
  const stats = await running.verifyAll();
  t.comment(summary(stats));
  t.equal(stats.ioErrors, 0, `no IO errors ${what}`);
  t.equal(stats.verifyFailureCount, 0, `every acknowledged write is there ${what}`);
  t.equal(stats.fatal, null, `the writer did not give up ${what}`);
}
