// The MDM cluster's Master cut off the network, then healed: exactly one Master at any time,
// proved with a history of REST changes checked against what etcd committed.
//
// Three simulated hosts (network namespaces on a bridge, test/helpers/netns.ts): mdm1 and
// mdm2 each run an etcd member and an MDM on their own address, tb1 runs only an etcd member
// (the Tie-Breaker). The SDSs, the SDC and the verifying writer on an NBD volume run in the
// test's own namespace, where the cut does not reach them: the data path must not notice.
//
// Three history clients (test/helpers/rest-history-client.mjs) send uniquely named changes
// (new protection domains), ~20 a second in all, the whole time: one in the test's namespace,
// round robin to both MDMs' APIs (it loses the cut-off MDM), and one inside each MDM's host,
// to that host's MDM only. The one on the cut-off host plays a client stuck on the old
// Master's side of the partition: once the old Master's lease can have run out, it must get
// no acknowledgement at all. Each records every request: start, end, target, HTTP status and
// the x-meshblock-mdm / x-meshblock-term headers.
//
// The Master's host link goes down (`ip link set down` on its bridge port) for 10 s (and until
// the new Master has acknowledged a change), well past the 3 s lease: the old Master must step
// down (it can neither renew its lease nor commit in the minority), the other MDM must become
// Master and take changes. The link comes back up: the old Master must rejoin as a Slave.
// Afterwards (test/helpers/rest-history.ts, whose check the first subtest exercises on
// synthetic histories):
//   - masterships, from the history of etcd's Master key, never overlap, and every log
//     record was committed inside its term's mastership (a deposed Master committed nothing);
//   - every acknowledged change is in the final state and in the log under the term its
//     answer named, held by the MDM its answer named;
//   - no acknowledgement of an older term came entirely after one of a newer term;
//   - refusals and timeouts are counted (they may or may not have been committed);
//   - both MDMs name the same Master, which takes changes through either;
//   - the verifying writer saw no IO error and no verify failure.
// The times (cut to step-down, to the new Master, to its first acknowledgement; heal to a
// whole cluster) and the counts go to comments. MESHBLOCK_TEST_LOGS=DIR keeps the MDMs' (at
// debug level) and the etcd members' logs there.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { logged } from '../helpers/processes.js';
import { mdmMasterLeaseMs } from '../../src/common/limits.js';
import { adminPassword, populateCluster, until } from '../helpers/cluster.js';
import { etcdClient } from '../helpers/etcd-cluster.js';
import { startMdmCluster, type ClusterMdm } from '../helpers/mdm-cluster.js';
import { createSimNetwork } from '../helpers/netns.js';
import { basic, call, type Response } from '../helpers/rest.js';
import {
  checkHistory,
  monotonicNowMs,
  readEtcdLog,
  readMasterKeyHistory,
  startHistoryClient,
  type CommittedRecord,
  type HistoryClient,
  type HistoryEntry,
  type MasterKeyEvent,
} from '../helpers/rest-history.js';
import { startVerifier, summary } from '../helpers/verifier.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** How long the Master's host stays cut off at least: well past its lease. */
const partitionMs = 10_000;
/** History before the cut and after the cluster is whole again. */
const quietBeforeMs = 4000;
const quietAfterMs = 3000;
/** A request unanswered this long counts as unanswered (status 0). */
const requestTimeoutMs = 8000;


t.test('the history check finds what it is there to find (synthetic histories)', async (t) => {
  const change = (name: string, mdm: string, term: string, startMs: number, endMs: number, status = 200): HistoryEntry => ({ kind: 'change', name, target: mdm, startMs, endMs, status, mdm, term, code: null, error: null, sent: true });
  const record = (seq: number, term: string, modRevision: string, name: string): CommittedRecord => ({ seq, term, modRevision, record: { term, command: { type: 'addProtectionDomain', name } } });
  // mdm1 is Master from revision 5 until its key goes at 20; mdm2 from 21 on.
  const masterKey: MasterKeyEvent[] = [
    { type: 'put', revision: '5', createRevision: '5', name: 'mdm1' },
    { type: 'delete', revision: '20', createRevision: '5', name: null },
    { type: 'put', revision: '21', createRevision: '21', name: 'mdm2' },
  ];
  const log = { snapshotSeq: 0, records: [record(1, '5', '6', 'a'), record(2, '5', '7', 'b'), record(3, '21', '22', 'c')] };
  const names = new Set(['a', 'b', 'c']);
  const good = [change('a', 'mdm1', '5', 0, 10), change('b', 'mdm1', '5', 5, 35), change('c', 'mdm2', '21', 20, 30), change('d', 'mdm1', '5', 25, 40, 503)];
  const clean = checkHistory(good, log, masterKey, names);
  t.same(clean.violations, [], 'a good history passes (an old-term ack that started before a new-term ack ended is fine)');
  t.equal(clean.acknowledged, 3);
  t.same([...clean.refused.entries()], [['503 ', 1]], 'refusals are counted');

  const late = checkHistory([...good.slice(0, 3), change('b2', 'mdm1', '5', 31, 32)], { ...log, records: [...log.records, record(4, '5', '8', 'b2')] }, masterKey, new Set([...names, 'b2']));
  t.match(late.violations.join('\n'), /two Masters acknowledging/, 'an old-term ack started after a new-term ack ended is caught');
  t.match(late.violations.join('\n'), /record 4 has term 5, older than record 3/, 'and so is its record after a newer term');
  t.match(checkHistory(good, log, masterKey, new Set(['a', 'c'])).violations.join('\n'), /b \(sent to mdm1, .*\) is not in the final state/, 'a lost acknowledged change is caught');
  t.match(checkHistory(good, { ...log, records: log.records.slice(0, 1).concat(log.records.slice(2)) }, masterKey, names).violations.join('\n'), /b .* is in 0 log records/, 'an acknowledged change missing from the log is caught');
  t.match(checkHistory([change('a', 'mdm1', '21', 0, 10)], log, masterKey, names).violations.join('\n'), /under term 5, not the term it was acknowledged in/, 'a wrong term is caught');
  t.match(checkHistory([change('a', 'mdm2', '5', 0, 10)], log, masterKey, names).violations.join('\n'), /etcd says term 5 was mdm1's/, 'a wrong MDM is caught');
  t.match(checkHistory([], { ...log, records: [record(1, '5', '25', 'a')] }, masterKey, names).violations.join('\n'), /committed at 25, after that mastership ended at 20/, 'a commit after the mastership ended is caught');
  t.match(checkHistory([], log, [masterKey[0] as MasterKeyEvent, masterKey[2] as MasterKeyEvent], names).violations.join('\n'), /two masterships at once/, 'overlapping masterships are caught');
});

t.test('the Master cut off the network, then healed: one Master at any time, every acknowledged change kept', async (t) => {
  const dir = t.testdir();
  const testStartMs = monotonicNowMs();
  const phase = (what: string): void => t.comment(`${what} at ${((monotonicNowMs() - testStartMs) / 1000).toFixed(1)} s`);
  const network = await createSimNetwork(t, 3, { topology: 'bridge', names: ['mdm1', 'mdm2', 'tb1'] });
  if ('unavailable' in network) {
    t.fail(`network namespaces are unavailable: ${network.unavailable}`);
    return;
  }
  phase('network made');
  const keepLogs = process.env['MESHBLOCK_TEST_LOGS'];
  const mdms = await startMdmCluster(t, dir, { size: 3, hosts: network.hosts, mdmArgs: keepLogs === undefined ? [] : ['--log-level', 'debug'] });
  if (keepLogs !== undefined) {
    t.teardown(() => {
      fs.mkdirSync(keepLogs, { recursive: true });
      for (const mdm of mdms.mdms) fs.writeFileSync(path.join(keepLogs, `${mdm.name}.log`), mdm.handle?.stderr() ?? '');
      for (const [index, member] of mdms.etcd.members.entries()) fs.writeFileSync(path.join(keepLogs, `etcd-${member.name}.log`), mdms.etcd.stderr(index));
    });
  }
  phase('etcd members and MDMs started');
  const cluster = await populateCluster(t, dir, { clusterId: mdms.clusterId, address: mdms.addresses, secretFile: mdms.secretFile, meshblock: (args) => mdms.cli(args) }, {
    sdsCount: 3,
    deviceBytes: 2 * GiB,
    volumes: [{ name: 'vol1', sizeBytes: GiB }],
  });
  phase('SDSs, SDC and volume ready');
  const writer = await startVerifier({ host: '127.0.0.1', port: cluster.sdc.nbdPort, exportName: 'vol1', regionBytes: 32 * MiB, depth: 8, reconnectTimeoutMs: 120_000, log: (line) => t.comment(line) });
  t.teardown(() => writer.destroy());
  t.ok(await writer.waitForWrites(500), 'the verifying writer is under way');

  phase('cluster set up, writer running');
  const masterIndex = await mdms.master();
  const otherIndex = masterIndex === 0 ? 1 : 0;
  const oldMaster = mdms.mdms[masterIndex] as ClusterMdm;
  const newMaster = mdms.mdms[otherIndex] as ClusterMdm;
  const apiUrl = (mdm: ClusterMdm): string => `https://${mdm.apiAddress}`;
  const common = { caPath: mdms.certPath, password: adminPassword, requestTimeoutMs, inflightMax: 4, durationMsMax: 120_000 };
  // ~20 changes a second in all: 10 from outside, 5 from inside each MDM host.
  const clients: HistoryClient[] = [
    await startHistoryClient(t, { ...common, label: 'outside', prefix: 'out', intervalMs: 100, targets: mdms.mdms.map((mdm) => ({ name: mdm.name, url: apiUrl(mdm) })) }),
    ...(await Promise.all(
      mdms.mdms.map((mdm) => startHistoryClient(t, { ...common, label: `inside ${mdm.name}`, prefix: mdm.name, intervalMs: 200, netns: mdm.netns as string, targets: [{ name: mdm.name, url: apiUrl(mdm) }] })),
    )),
  ];
  const insideOld = clients[1 + masterIndex] as HistoryClient;
  await sleep(quietBeforeMs);
  await until('every history client to have changes acknowledged', async () => (clients.every((client) => client.entries().filter((entry) => entry.status === 200).length >= 5) ? true : undefined), 30_000);

  // The cut.
  const cutWallMs = Date.now();
  const cutMs = monotonicNowMs();
  await network.cut(masterIndex);
  t.comment(`${oldMaster.name}'s host cut off the network (${Math.round(monotonicNowMs() - cutMs)} ms to lose carrier)`);
  const elected = await until('the other MDM to become the Master', async () => {
    const found = logged(newMaster.handle?.stderr() ?? '', 'this MDM is the Master', cutWallMs);
    return found.length > 0 ? found : undefined;
  }, 30_000);
  const electedMs = Number(elected[0]?.['time']) - cutWallMs;
  const stepDowns = await until('the cut-off Master to step down', async () => {
    const found = logged(oldMaster.handle?.stderr() ?? '', 'this MDM is no longer the Master; following', cutWallMs);
    return found.length > 0 ? found : undefined;
  }, 15_000);
  // The partition lasts partitionMs, and at least until the new Master has acknowledged a
  // change, so that every run shows the majority side taking changes while the old Master is
  // cut off (clients whose requests a Slave forwarded to the old Master wait for their own
  // timeout first; a loaded machine adds seconds).
  const preCutTerms = clients.flatMap((client) => client.entries()).filter((entry) => entry.status === 200 && entry.endMs < cutMs).map((entry) => entry.term);
  const ackedByNewMaster = (): HistoryEntry | undefined =>
    clients
      .flatMap((client) => client.entries())
      .filter((entry) => entry.status === 200 && entry.startMs > cutMs && entry.mdm === newMaster.name && !preCutTerms.includes(entry.term))
      .sort((a, b) => a.endMs - b.endMs)[0];
  const firstNew = await until('the new Master to acknowledge a change while the old one is cut off', async () => ackedByNewMaster(), 30_000);
  await sleep(Math.max(0, cutMs + partitionMs - monotonicNowMs()));
  const takeovers = logged(newMaster.handle?.stderr() ?? '', 'this MDM is the Master', cutWallMs).length;

  // The heal.
  const healWallMs = Date.now();
  const healMs = monotonicNowMs();
  t.same(logged(oldMaster.handle?.stderr() ?? '', 'this MDM is the Master', cutWallMs), [], `${oldMaster.name} did not become Master again while cut off`);
  await network.heal(masterIndex);
  const rejoined = await until(
    'both MDMs to name the same Master, the healed one among its Slaves',
    async () => {
      const views = await Promise.all([mdms.query(0), mdms.query(1)]);
      const masters = new Set(views.map((view) => view?.master?.name));
      const [view] = views;
      if (masters.size !== 1 || view === null || view === undefined || view.master === null) return undefined;
      const slave = view.master.name === oldMaster.name ? newMaster.name : oldMaster.name;
      return view.slaves.some((mdm) => mdm.name === slave && mdm.status === 'Normal') ? { master: view.master.name, tookMs: monotonicNowMs() - healMs } : undefined;
    },
    60_000,
  );
  await sleep(quietAfterMs);
  phase('stopping the history clients');
  const stopped = await Promise.all(clients.map((client) => client.stop()));
  phase('history clients stopped');
  const entries: HistoryEntry[] = stopped.flatMap((result) => result.entries);

  // What etcd and the final state hold.
  const ca = fs.readFileSync(mdms.certPath);
  const login = async (mdm: ClusterMdm): Promise<string> => {
    const answer = await call({ url: apiUrl(mdm), ca }, 'GET', '/api/login', { authorization: basic('admin', adminPassword), timeoutMs: requestTimeoutMs });
    if (answer.status !== 200 || typeof answer.body !== 'string') throw new Error(`login at ${mdm.name} failed: ${answer.status} ${answer.text}`);
    return answer.body;
  };
  const rest = async (mdm: ClusterMdm, method: string, urlPath: string, body?: unknown): Promise<Response> => call({ url: apiUrl(mdm), ca }, method, urlPath, { token: await login(mdm), timeoutMs: requestTimeoutMs, ...(body !== undefined ? { body } : {}) });
  for (const mdm of mdms.mdms) {
    const answer = await rest(mdm, 'POST', '/api/types/ProtectionDomain/instances', { name: `after-heal-via-${mdm.name}` });
    t.equal(answer.status, 200, `after the heal, a change sent to ${mdm.name} is taken${answer.status === 200 ? '' : `: ${answer.text}`}`);
    t.equal(answer.headers['x-meshblock-mdm'], rejoined.master, `and served by the one Master, ${rejoined.master}`);
  }
  const listed = await rest(newMaster, 'GET', '/api/types/ProtectionDomain/instances');
  t.equal(listed.status, 200, 'the final state lists');
  const finalNames = new Set((listed.body as Array<{ name: string }>).map((domain) => domain.name));
  const etcd = etcdClient(mdms.etcd, 'etcdctl');
  const log = await readEtcdLog(etcd);
  t.equal(log.snapshotSeq, 0, 'no snapshot compacted the log during the test (the check reads every record)');
  const masterKey = await readMasterKeyHistory(etcd);

  const report = checkHistory(entries, log, masterKey, finalNames);
  t.same(report.violations, [], 'the history holds: one Master at a time, every acknowledged change committed in its term and kept');
  t.comment(`masterships: ${report.masterships.map((entry) => `${entry.term} ${entry.name} (to ${entry.endRevision ?? 'now'}; ${report.acknowledgedPerTerm.get(entry.term) ?? 0} acks)`).join(', ')}`);
  t.comment(`history: ${entries.length} changes sent, ${report.acknowledged} acknowledged, ${entries.length - report.acknowledged} refused or unanswered (${report.refusedButCommitted.length} of them committed all the same), ${stopped.reduce((sum, result) => sum + result.skipped, 0)} not sent (target busy), ${log.records.length} log records`);
  for (const [what, count] of [...report.refused.entries()].sort((a, b) => b[1] - a[1])) t.comment(`  ${count} × ${what}`);
  for (const entry of report.refusedButCommitted) {
    t.comment(`  committed though not acknowledged: ${entry.name} to ${entry.target}, ${entry.status} ${entry.code ?? entry.error ?? ''} after ${Math.round(entry.endMs - entry.startMs)} ms, ${Math.round(entry.startMs - cutMs)} ms from the cut`);
  }

  // The partition did what it should, and how fast.
  const terms = report.masterships.map((entry) => entry.term);
  t.ok(report.masterships.some((entry) => entry.name === newMaster.name), `${newMaster.name} held a mastership`);
  t.ok(firstNew.endMs < healMs, `${newMaster.name} acknowledged changes while ${oldMaster.name} was cut off`);
  const stuck = insideOld.entries().filter((entry) => entry.startMs >= cutMs + mdmMasterLeaseMs && entry.startMs < healMs);
  t.ok(stuck.length > 0, `the client on ${oldMaster.name}'s side kept trying during the cut (${stuck.length} changes)`);
  t.same(stuck.filter((entry) => entry.status === 200), [], `nothing it sent after the lease could have run out was acknowledged on the cut-off side`);
  t.ok(stuck.some((entry) => entry.status >= 500), `the cut-off MDM answered it with refusals (${stuck.filter((entry) => entry.status >= 500).length} refused)`);
  const stepDownMs = Number(stepDowns[0]?.['time']) - cutWallMs;
  t.comment(
    `times: cut → ${oldMaster.name} stepped down ${stepDownMs} ms; cut → ${newMaster.name} Master ${electedMs} ms (${takeovers} takeover${takeovers === 1 ? '' : 's'} while cut); ` +
      `cut → first change acknowledged by the new Master ${Math.round(firstNew.endMs - cutMs)} ms; ` +
      `heal (after ${Math.round(healMs - cutMs)} ms) → cluster whole ${Math.round(rejoined.tookMs)} ms; terms ${terms.join(' → ')}; heal at ${new Date(healWallMs).toISOString()}`,
  );
  const gaps = entries
    .filter((entry) => entry.status === 200)
    .map((entry) => entry.endMs)
    .sort((a, b) => a - b)
    .reduce((longest, endMs, index, all) => (index === 0 ? longest : Math.max(longest, endMs - (all[index - 1] as number))), 0);
  t.comment(`longest time without any acknowledgement: ${Math.round(gaps)} ms`);

  // The data path never noticed.
  phase('checks done; verifying the volume');
  const stats = await writer.verifyAll();
  phase('volume verified');
  t.comment(summary(stats));
  t.equal(stats.ioErrors, 0, 'no IO errors through the partition');
  t.equal(stats.verifyFailureCount, 0, 'every acknowledged write is there');
  t.equal(stats.fatal, null, 'the writer did not give up');
});
