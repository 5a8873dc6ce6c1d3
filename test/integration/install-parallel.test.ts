// `meshblock install` at more hosts than three, over real SSH: five hosts (network namespaces
// with Debian's sshd, test/helpers/sshd.ts startInstallHosts), each with a slow shell
// start-up file (root's ~/.bashrc sleeps, as a host whose .bashrc sources a slow profile:
// sshd starts the login shell for every command, so every command pays it). What it proves:
//
// - query runs on the hosts in parallel, no more than --parallel at once (each host's query
//   ends with a line of its own; with --parallel 2 the third host's first line comes after one
//   of the first two finished), and the SSH commands each host costs, counted in its sshd's log
//   (LogLevel VERBOSE logs every session), stay at most queryCommandsMax: the count was 26
//   per host before the query was made one command per step (see the report of issue 20).
// - a failing host stops the run only after the others of its phase: with host 2's device
//   gone and host 3's holding a swap signature, every other host's query still ends (its line
//   is there), the run exits 1, and the error names both hosts and why.
//
// Nothing is mocked: query only reads (os-release, uname, blkid, the host modules' checks).

import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { createSimNetwork, type SimNetwork } from '../helpers/netns.js';
import { run, runMeshblock } from '../helpers/processes.js';
import { startInstallHosts } from '../helpers/sshd.js';

const hostCount = 5;
/** What root's shell start-up file costs each command, in seconds. */
const bashrcSleepSeconds = 0.3;
/** SSH sessions query may cost one host with one SDS device (7 when this was written: the facts, the read-ahead, 4 tool runs, the SDS unit read). */
const queryCommandsMax = 10;

/** The SSH sessions (commands, SFTP) a host's sshd has started so far: it logs each at LogLevel VERBOSE. */
function sshSessionCount(hostRoot: string): number {
  const log = path.join(hostRoot, 'sshd', 'sshd.log');
  return fs.existsSync(log) ? (fs.readFileSync(log, 'utf8').match(/Starting session: /g) ?? []).length : 0;
}

t.test('install --phase query on five hosts in parallel, each command paying a slow .bashrc', { timeout: 900_000 }, async (t) => {
  const network = await createSimNetwork(t, hostCount, { names: ['par1', 'par2', 'par3', 'par4', 'par5'] });
  if ('unavailable' in network) {
    t.fail(`no simulated network: ${network.unavailable}`);
    return;
  }
  const net: SimNetwork = network;
  const dir = t.testdir();
  const { roots, key } = await startInstallHosts(t, net, dir);
  // The bashrc is a bind mount of this file into the host: rewritten in place, the host sees it.
  for (const root of roots) fs.writeFileSync(path.join(root, 'bashrc'), `sleep ${bashrcSleepSeconds}\n`);
  const csv = path.join(dir, 'cluster.csv');
  fs.writeFileSync(
    csv,
    [
      'IPs,Username,Password,Operating System,Is MDM/TB,MDM IPs,Is SDS,SDS Name,SDS All IPs,Protection Domain,Fault Set,SDS Device List,StoragePool List,Is SDC,SDC Name',
      ...net.hosts.map((host, index) => `${host.address},root,,debian,${index === 0 ? 'Master' : ''},,Yes,sds${index + 1},,pd1,,${path.join(roots[index] as string, 'disk0')},sp1,${index === hostCount - 1 ? 'Yes' : 'No'},${index === hostCount - 1 ? `sdc${index + 1}` : ''}`),
      '',
    ].join('\n'),
  );
  const query = ['install', '--csv', csv, '--identity', key.privateKeyFile, '--known-hosts', path.join(dir, 'known_hosts'), '--accept-new-host-key', '--phase', 'query', '--sds-shards', '1'];
  const label = (index: number): string => `${net.hosts[index]?.address} (row ${index + 2})`;

  await t.test('--parallel 2: every host queried, two at a time, each in few SSH commands', async (t) => {
    const before = roots.map(sshSessionCount);
    const startedAt = Date.now();
    const result = await runMeshblock([...query, '--parallel', '2'], { timeoutMs: 600_000 });
    const tookMs = Date.now() - startedAt;
    t.equal(result.code, 0, `query exits 0: ${result.stderr}`);
    if (result.code !== 0) t.comment(result.stdout);
    const lines = result.stdout.split('\n');
    for (const index of roots.keys()) {
      t.ok(lines.some((line) => line.startsWith(`${label(index)}: query done in `)), `host ${index + 1}: a line saying its query is done`);
      t.ok(lines.some((line) => line.startsWith(`${label(index)}: `) && line.includes('roles ')), `host ${index + 1}: its query line, prefixed with its label`);
    }
    // Hosts start in CSV order as places free up: the third starts after one of the first two is done.
    const firstDone = lines.findIndex((line) => / query done in /.test(line));
    const thirdFirst = lines.findIndex((line) => line.startsWith(`${label(2)}: `));
    t.ok(firstDone >= 0 && thirdFirst > firstDone, `the third host's first line (${thirdFirst}) after the first host done (${firstDone})`);
    const sessions = roots.map((root, index) => sshSessionCount(root) - (before[index] as number));
    t.comment(`query of ${hostCount} hosts, --parallel 2, ${bashrcSleepSeconds} s per command in .bashrc: ${tookMs} ms; SSH sessions per host: ${sessions.join(', ')}`);
    for (const [index, count] of sessions.entries()) t.ok(count > 0 && count <= queryCommandsMax, `host ${index + 1}: ${count} SSH commands for query (at most ${queryCommandsMax})`);
  });

  await t.test('two hosts failing: the others finish their query, the error names both and why', async (t) => {
    fs.rmSync(path.join(roots[1] as string, 'disk0'));
    const swap = await run('mkswap', [path.join(roots[2] as string, 'disk0')]);
    t.equal(swap.code, 0, `a swap signature on host 3's device: ${swap.stderr}`);
    const result = await runMeshblock([...query, '--parallel', '2'], { timeoutMs: 600_000 });
    t.equal(result.code, 1, 'the run fails');
    t.match(result.stderr, /query: 2 of 5 hosts failed: /);
    t.match(result.stderr, `${label(1)}, column 'SDS Device List': ${path.join(roots[1] as string, 'disk0')} does not exist`);
    t.match(result.stderr, `${label(2)}: ${path.join(roots[2] as string, 'disk0')} holds swap`);
    for (const index of [0, 3, 4]) t.match(result.stdout, `${label(index)}: query done in `, `host ${index + 1}: its query finished`);
    for (const index of [1, 2]) t.match(result.stdout, `${label(index)}: query FAILED: `, `host ${index + 1}: its failure said as it happened`);
  });
});
