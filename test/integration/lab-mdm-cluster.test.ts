// `meshblock lab up --mdm-cluster 3|5` on real processes: etcd members and MDMs on loopback,
// SDSs and the SDC following the Master, volumes exported over NBD. `lab status --json` keeps
// its contract and adds clusterRole; the management commands run with --dir reach the Master
// whichever MDM it is, also after the Master is killed; `lab down` stops everything (etcd
// members last) and `lab up` resumes the cluster from disk with its data.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { until } from '../helpers/cluster.js';
import { freeLoopbackPorts } from '../helpers/etcd-cluster.js';
import { run, runMeshblock, squat } from '../helpers/processes.js';

const MiB = 1024 * 1024;
const labUpTimeoutMs = 120_000;

interface StatusJson {
  lab: { clusterId: string | null; mdmReachable: boolean; mdmError: string | null };
  processes: Array<{ role: string; name: string; pid: number | null; address: string; state: string; clusterState: string | null; clusterRole?: string | null }>;
  volumes: Array<{ name: string; nbdUri: string | null }>;
}

async function status(dir: string): Promise<StatusJson> {
  const result = await runMeshblock(['lab', 'status', '--dir', dir, '--json']);
  if (result.code !== 0) throw new Error(`lab status failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as StatusJson;
}

for (const size of [3, 5] as const) {
  t.test(`lab up --mdm-cluster ${size}`, async (t) => {
    // Not t.testdir(): tap removes it before teardowns run, and lab down needs its lab.json.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `meshblock-lab-cluster-${size}-`));
    t.teardown(async () => {
      await runMeshblock(['lab', 'down', '--dir', dir, '--purge'], { timeoutMs: 60_000 });
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const up = await runMeshblock(['lab', 'up', '--dir', dir, '--detach', '--mdm-cluster', String(size), '--sds', '3', '--device-size', '1GiB', '--volume', 'vol1:256MiB', '--nbd-port', String((await freeLoopbackPorts(1))[0])], { timeoutMs: labUpTimeoutMs });
    t.equal(up.code, 0, `lab up --mdm-cluster ${size} succeeds${up.code === 0 ? '' : `: ${up.stderr}`}`);
    t.match(up.stdout, new RegExp(`${size}-node MDM cluster`), 'the summary names the cluster');

    const first = await until('the lab to report a Master', async () => {
      const current = await status(dir);
      return current.processes.some((entry) => entry.role === 'mdm' && entry.clusterRole === 'master') ? current : undefined;
    }, 30_000);
    const mdms = first.processes.filter((entry) => entry.role === 'mdm');
    const members = first.processes.filter((entry) => entry.role === 'etcd');
    t.equal(mdms.length, size === 3 ? 2 : 3, 'MDMs on the manager hosts');
    t.equal(members.length, size, 'an etcd member on every host');
    t.equal(mdms.filter((entry) => entry.clusterRole === 'master').length, 1, 'exactly one Master');
    t.ok(mdms.every((entry) => entry.clusterRole === 'master' || entry.clusterRole === 'slave'), 'every MDM is Master or Slave');
    t.equal(members.filter((entry) => entry.clusterRole === 'tieBreaker').length, size === 3 ? 1 : 2, 'the Tie-Breakers are named');
    t.ok(first.processes.every((entry) => entry.state === 'running'), 'every daemon runs');
    const uri = first.volumes.find((volume) => volume.name === 'vol1')?.nbdUri;
    t.ok(uri, 'vol1 is exported over NBD');

    const query = await runMeshblock(['mdm', 'cluster', '--dir', dir, '--json']);
    t.equal(query.code, 0, `mdm cluster answers: ${query.stderr}`);
    const cluster = JSON.parse(query.stdout) as { clusterMode: string; clusterState: string; slaves: unknown[]; tieBreakers: unknown[] };
    t.equal(cluster.clusterMode, size === 3 ? 'ThreeNodes' : 'FiveNodes');
    t.equal(cluster.clusterState, 'ClusteredNormal');

    const written = await run('nbdcopy', ['--', '[', 'nbdkit', 'pattern', `size=${16 * MiB}`, ']', uri as string]);
    t.equal(written.code, 0, `a pattern is written through the SDC: ${written.stderr}`);

    // Kill the Master: management with --dir still reaches the (new) Master.
    const master = mdms.find((entry) => entry.clusterRole === 'master');
    process.kill(master?.pid as number, 'SIGKILL');
    const created = await until('a volume created through the new Master', async () => ((await runMeshblock(['volume', 'add', '--dir', dir, '--pool', 'sp1', '--name', 'after-kill', '--size', '1GiB'])).code === 0 ? true : undefined), 60_000);
    t.ok(created, 'management with --dir reaches the new Master');
    const after = await status(dir);
    const newMaster = after.processes.find((entry) => entry.role === 'mdm' && entry.clusterRole === 'master');
    t.ok(newMaster !== undefined && newMaster.name !== master?.name, `another MDM is Master (${newMaster?.name})`);
    const verify = await run('bash', ['-c', `cmp <(nbdcopy -- '${uri as string}' - | head -c ${16 * MiB}) <(nbdcopy -- '[' nbdkit pattern size=${16 * MiB} ']' -)`]);
    t.equal(verify.code, 0, `the data written before the kill reads back: ${verify.stderr}`);

    const down = await runMeshblock(['lab', 'down', '--dir', dir], { timeoutMs: 60_000 });
    t.equal(down.code, 0, 'lab down stops everything');
    t.ok((await status(dir)).processes.every((entry) => entry.state === 'stopped'), 'nothing runs after lab down');
    // Resuming from disk is the same code for both sizes: the 3-node lab shows it.
    if (size === 5) return;
    // Another program took an MDM's API port while the lab was down: that MDM moves.
    const lab = JSON.parse(fs.readFileSync(path.join(dir, 'lab.json'), 'utf8')) as { processes: Array<{ role: string; name: string; apiAddress?: string }> };
    const squatted = lab.processes.find((entry) => entry.role === 'mdm')?.apiAddress as string;
    const squatter = await squat(Number(squatted.split(':')[1]));
    t.teardown(() => squatter?.close());
    const again = await runMeshblock(['lab', 'up', '--dir', dir, '--detach'], { timeoutMs: labUpTimeoutMs });
    t.equal(again.code, 0, `lab up resumes the cluster${again.code === 0 ? '' : `: ${again.stderr}`}`);
    // Held by us, the port stays taken until lab up is done; taken by another test's lab, it may be free again by then.
    if (squatter !== null) t.match(again.stderr, new RegExp(`a port of \\S+ or ${squatted} was taken meanwhile; moving to`), 'the MDM whose port was taken moved to free ones');
    squatter?.close();
    const volumes = await runMeshblock(['volume', 'list', '--dir', dir, '--json']);
    t.ok((JSON.parse(volumes.stdout) as Array<{ name: string }>).some((volume) => volume.name === 'after-kill'), 'the volume made after the kill came back from disk');
    const refused = await runMeshblock(['lab', 'up', '--dir', dir, '--detach', '--mdm-cluster', size === 3 ? '5' : '3']);
    t.not(refused.code, 0, 'the cluster size is fixed at the first up');
    t.match(refused.stderr, /--mdm-cluster/);
  });
}

t.test('lab up --mdm-cluster refuses other sizes in one line', async (t) => {
  const result = await runMeshblock(['lab', 'up', '--dir', path.join(t.testdir(), 'lab'), '--mdm-cluster', '4', '--detach']);
  t.not(result.code, 0);
  t.match(result.stderr, /--mdm-cluster: must be 1, 3 or 5/);
  t.equal(result.stderr.trim().split('\n').length, 1, 'one line');
});
