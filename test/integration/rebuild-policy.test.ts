// Proves, between real SDS processes over the real wire, that a running rebuild follows a
// live change of its pool's IO priority policy: A (primary) fills C (the new secondary) of
// one group under limitBandwidth at 2 MiB/s; the same order given again with 8 MiB/s (what
// the MDM sends at its next tick once setRebuildIoPriorityPolicy is applied) speeds the job
// up within a second, without starting it over; given again with 2 MiB/s, it slows down.
// The rate is read from A's Stats (bytes done) over windows of wall time, with generous
// bounds (other work runs on this machine). Then, given as unlimited, the job finishes and
// C holds every chunk, each copied once.
//
// End to end on a whole cluster of real processes (MDM, four SDSs, an SDC, fio writing
// through NBD): a pool's rebalance policy set with the CLI throttles the rebalance onto a
// new SDS, and raising it while the rebalance runs speeds it up within seconds (the MDM
// gives the running orders again at its next tick). The rate is the MDM's own count of
// bytes copied (dashboard), over windows of a few seconds.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import t from 'tap';
import type { PlacementMap } from '../../src/wire/placement.js';
import { SdsOp, type RebuildArgs } from '../../src/wire/sds-ops.js';
import { startCluster, until } from '../helpers/cluster.js';
import { dashboard, expectClean, fioVerify, untilWhole } from '../helpers/fault-load.js';
import { sparseFile } from '../helpers/files.js';
import { MiB, TestVolumeClient, connectWire, expectOk, getStats, setMap, startSds, testPoolId, type SdsHandle } from '../helpers/sds.js';
import type { WirePeer } from '../../src/wire/peer.js';

const vtreeId = '7777000011112222';
const volumeBytes = 64 * MiB;

function mapOf(epoch: number, primary: SdsHandle, secondary: SdsHandle | null, all: SdsHandle[]): PlacementMap {
  return {
    epoch,
    sds: Object.fromEntries(all.map((sds) => [sds.sdsId, { address: sds.address }])),
    pools: { [testPoolId]: { chunkBytes: MiB, groups: [{ primary: primary.sdsId, secondary: secondary?.sdsId ?? null }] } },
  };
}

async function bytesDone(peer: WirePeer): Promise<number> {
  return (await getStats(peer)).rebuilds.reduce((total, job) => total + job.bytesDone, 0);
}

/** Bytes/s A copied over `windowMs`. */
async function rate(peer: WirePeer, windowMs: number): Promise<number> {
  const before = await bytesDone(peer);
  const startMs = performance.now();
  await new Promise((resolve) => setTimeout(resolve, windowMs));
  return (((await bytesDone(peer)) - before) * 1000) / (performance.now() - startMs);
}

const mibps = (bytesPerSecond: number): string => `${(bytesPerSecond / MiB).toFixed(2)} MiB/s`;

t.test("a running rebuild between real SDSs follows its pool's policy, changed live", async (t) => {
  const dir = t.testdir();
  const device = (name: string): string => sparseFile(dir, `${name}.img`, 256 * MiB);
  const a = await startSds(t, { dir, name: 'sds-a', devices: [device('a')] });
  const b = await startSds(t, { dir, name: 'sds-b', devices: [device('b')] });
  const c = await startSds(t, { dir, name: 'sds-c', devices: [device('c')] });
  const all = [a, b, c];
  const peerA = await connectWire(t, a.address);
  const peerB = await connectWire(t, b.address);
  const peerC = await connectWire(t, c.address);
  const first = mapOf(1, a, b, all);
  for (const peer of [peerA, peerB, peerC]) expectOk(await setMap(peer, first), 'map 1');
  const volume = new TestVolumeClient(first, new Map([[a.sdsId, peerA]]), vtreeId);
  for (let chunk = 0; chunk < volumeBytes / MiB; chunk++) await volume.write(chunk * MiB, randomBytes(MiB));

  // B is lost; C is the new secondary, filled by A.
  await b.kill();
  const second = mapOf(2, a, c, all);
  for (const peer of [peerA, peerC]) expectOk(await setMap(peer, second), 'map 2');
  const order = (bytesPerSecondMax: number): RebuildArgs => ({ poolId: testPoolId, pgIndex: 0, targetSdsId: c.sdsId, bytesPerSecondMax, bytesPerSecondUnderLoad: 0, chunksInflightMax: 2, policy: 'limitBandwidth', kind: 'rebuild', mode: 'full', epoch: 2 });
  const give = async (args: RebuildArgs): Promise<void> => expectOk(await peerA.request(SdsOp.Rebuild, Buffer.from(JSON.stringify(args))), 'rebuild order');

  await give(order(2 * MiB));
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const slow = await rate(peerA, 3000);
  t.ok(slow > 1.2 * MiB && slow < 3 * MiB, `limitBandwidth 2 MiB/s: ${mibps(slow)}`);
  const jobId = (await getStats(peerA)).rebuilds[0]?.jobId;

  await give(order(8 * MiB));
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const fast = await rate(peerA, 2500);
  t.ok(fast > 5 * MiB && fast < 10 * MiB, `raised live to 8 MiB/s: ${mibps(fast)}`);

  await give(order(2 * MiB));
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const slowAgain = await rate(peerA, 2500);
  t.ok(slowAgain > 1.2 * MiB && slowAgain < 3 * MiB, `lowered live to 2 MiB/s: ${mibps(slowAgain)}`);

  const jobs = (await getStats(peerA)).rebuilds;
  t.equal(jobs.length, 1, 'one job all along');
  t.equal(jobs[0]?.jobId, jobId, 'the same job, never started over');
  t.equal(jobs[0]?.state, 'running', 'still running');
  t.match(a.stderr(), /rebuild throttle changed/, 'A logged each change');

  // Unthrottled to the end: C gets the whole group.
  await give({ ...order(0), policy: 'unlimited', chunksInflightMax: 64 });
  for (let attempt = 0; attempt < 300; attempt++) {
    const job = (await getStats(peerA)).rebuilds[0];
    if (job?.state === 'failed') throw new Error(`rebuild failed: ${job.error}`);
    if (job?.state === 'done') break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const done = (await getStats(peerA)).rebuilds[0];
  t.equal(done?.state, 'done', 'the job finished once unlimited');
  t.equal(done?.chunksDone, volumeBytes / MiB, 'every chunk copied once');
});

t.test('end to end: a rebalance follows its pool policy, set and raised live with the CLI', async (t) => {
  const dir = t.testdir();
  const GiB = 1024 * MiB;
  const cluster = await startCluster(t, dir, { sdsCount: 3, deviceBytes: 2 * GiB, volumes: [{ name: 'vol1', sizeBytes: GiB }] });
  expectClean(t, await fioVerify(cluster.uri('vol1'), { sizeBytes: 256 * MiB, loops: 1, bs: '1M' }).done, 'writing the data');
  const set = async (bandwidth: string): Promise<void> => {
    const result = await cluster.meshblock(['pool', 'set-io-priority', 'sp1', '--rebalance', '--policy', 'limitBandwidth', '--bandwidth', bandwidth, '--concurrent-ios', '2']);
    t.equal(result.code, 0, `rebalance policy limitBandwidth ${bandwidth} per device${result.stderr === '' ? '' : `: ${result.stderr}`}`);
  };
  await set('1MiB');
  const shown = await cluster.meshblock(['pool', 'show', 'sp1']);
  t.match(shown.stdout, /rebalance IO priority\s+limitBandwidth \(1 MiB\/s and 2 copies in flight per device\)/, 'pool show prints it');

  const device = sparseFile(dir, 'sds4.img', 2 * GiB);
  const added = await startSds(t, { dir, name: 'sds4', devices: [device], clusterId: cluster.mdm.clusterId, secretFile: cluster.mdm.secretFile, extraArgs: ['--mdm', cluster.mdm.address] });
  await until('sds4 to register', async () => ((await cluster.meshblock(['sds', 'list', '--json'])).stdout.includes('"sds4"') ? true : undefined));
  t.equal((await cluster.meshblock(['sds', 'add', '--sds', added.name, '--pd', 'pd1'])).code, 0);
  t.equal((await cluster.meshblock(['device', 'add', '--sds', added.name, '--pool', 'sp1', '--path', device])).code, 0, 'a device added: the pool rebalances onto it');
  await until('the rebalance to start', async () => ((await dashboard(cluster)).health.rebuild.bytesDone > 0 ? true : undefined), 30_000);

  // What lands on the new device, read from sds4 itself: the MDM's bytesDone counts finished
  // orders and running jobs, and a job a new map aborts (groups complete, the epoch moves, all
  // the more often the faster the rebalance goes) drops out of it until ordered again.
  const sds4 = await connectWire(t, added.address, { clusterId: cluster.mdm.clusterId, secret: fs.readFileSync(cluster.mdm.secretFile, 'utf8').trim() });
  const landed = async (): Promise<number> => (await getStats(sds4)).devices.reduce((sum, entry) => sum + entry.usedBytes, 0);
  /** Bytes/s written onto sds4 over `windowMs`. */
  const copied = async (windowMs: number): Promise<number> => {
    const before = await landed();
    const startMs = performance.now();
    await new Promise((resolve) => setTimeout(resolve, windowMs));
    return (((await landed()) - before) * 1000) / (performance.now() - startMs);
  };
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const slow = await copied(5000);
  // Three source SDSs of one device each: at most ~3 MiB/s together.
  t.ok(slow > 0.3 * MiB && slow < 4.5 * MiB, `1 MiB/s per device, three sources: ${mibps(slow)}`);
  t.equal((await dashboard(cluster)).health.rebuild.state, 'running', 'still rebalancing');

  await set('8MiB');
  await new Promise((resolve) => setTimeout(resolve, 2000));
  // A longer window than the slow one: the MDM counts copies as groups complete, and on a
  // loaded machine the copies themselves slow down; the point is that the rate rose.
  const fast = await copied(6000);
  t.ok(fast > 1.8 * slow, `raised live to 8 MiB/s per device: ${mibps(fast)} (was ${mibps(slow)})`);
  const sources = cluster.sds.map((sds) => sds.stderr()).filter((log) => log.includes('rebuild throttle changed'));
  t.ok(sources.length >= 1, `${sources.length} source SDS(s) logged the change to their running jobs`);

  await set('100MiB');
  await untilWhole(cluster, 120_000);
  t.pass('the rebalance finished');
});
