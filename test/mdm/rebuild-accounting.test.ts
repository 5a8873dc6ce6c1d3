// The dashboard's "bytes rebuilt" counts each rebuild job once. A real MDM process hears of a
// job three ways: the stats of every heartbeat (running, then done), and the SDS's completion
// report. The stats that arrive after the report may still show the job running; a report may
// be lost, leaving only the stats. Here one wire client plays the SDS and sends those messages
// in each order, and the dashboard, read with the CLI as an administrator would, is checked
// after each.

import * as fs from 'node:fs';
import t from 'tap';
import type { RestDashboard } from '../../src/mdm/rest-objects.js';
import { MdmOp, type RebuildDone } from '../../src/wire/mdm-ops.js';
import type { WirePeer } from '../../src/wire/peer.js';
import type { RebuildProgress, SdsStats } from '../../src/wire/sds-ops.js';
import { SdsStatus } from '../../src/wire/sds-ops.js';
import { cli, startMdm } from '../helpers/cluster.js';
import { MiB, connectWire } from '../helpers/sds.js';

const sdsId = '5d50000000000001';
const targetSdsId = '5d50000000000002';

function job(jobId: string, state: RebuildProgress['state'], bytesDone: number): RebuildProgress {
  return { jobId, poolId: '00000000000000a1', pgIndex: 7, targetSdsId, state, mode: 'delta', epoch: 3, chunksDone: bytesDone / MiB, chunksTotal: 5, bytesDone, error: null };
}

async function send(peer: WirePeer, op: number, body: unknown): Promise<void> {
  const reply = await peer.request(op, Buffer.from(JSON.stringify(body)));
  if (reply.status !== SdsStatus.Ok) throw new Error(`MDM refused op ${op}: ${reply.payload.toString()}`);
}

function heartbeat(peer: WirePeer, rebuilds: RebuildProgress[]): Promise<void> {
  const stats: SdsStats = { sdsId, name: 'fake-sds', epoch: 3, chunkBytes: MiB, devices: [], reservedBytes: 0, rebuilds };
  return send(peer, MdmOp.Heartbeat, stats);
}

function report(peer: WirePeer, done: RebuildProgress): Promise<void> {
  const body: RebuildDone = { jobId: done.jobId, poolId: done.poolId, pgIndex: done.pgIndex, targetSdsId: done.targetSdsId, epoch: done.epoch, mode: done.mode, chunksDone: done.chunksDone, bytesDone: done.bytesDone };
  return send(peer, MdmOp.RebuildDone, body);
}

t.test('a rebuild job is counted once, whichever way the MDM hears of it', async (t) => {
  const dir = t.testdir();
  const mdm = await startMdm(t, dir);
  const meshblock = cli(mdm, dir);
  const bytesRebuilt = async (): Promise<number> => {
    const result = await meshblock(['dashboard', '--json']);
    t.equal(result.code, 0, `meshblock dashboard ${result.stderr}`);
    return (JSON.parse(result.stdout) as RestDashboard).health.rebuild.bytesDone;
  };
  const peer = await connectWire(t, mdm.address, { role: 'sds', clusterId: mdm.clusterId, secret: fs.readFileSync(mdm.secretFile, 'utf8').trim() });
  await send(peer, MdmOp.RegisterSds, { sdsId, name: 'fake-sds', address: '127.0.0.1:1', devices: [] });
  t.equal(await bytesRebuilt(), 0, 'nothing rebuilt yet');

  await heartbeat(peer, [job('a1.1', 'running', 3 * MiB)]);
  t.equal(await bytesRebuilt(), 3 * MiB, 'a running job counts what it has copied so far');
  await report(peer, job('a1.1', 'done', 5 * MiB));
  t.equal(await bytesRebuilt(), 5 * MiB, 'its report replaces the running figure (not 3 + 5)');
  await heartbeat(peer, [job('a1.1', 'done', 5 * MiB)]);
  t.equal(await bytesRebuilt(), 5 * MiB, 'the stats showing it done add nothing');
  await report(peer, job('a1.1', 'done', 5 * MiB));
  t.equal(await bytesRebuilt(), 5 * MiB, 'nor does the same report again');

  // A report lost with its connection: the stats alone say the job is done.
  await heartbeat(peer, [job('a1.1', 'done', 5 * MiB), job('a1.2', 'done', 2 * MiB)]);
  t.equal(await bytesRebuilt(), 7 * MiB, 'a job known only from the stats counts too');
  // The same job ids from another life of the SDS are other jobs: ids carry the life.
  await heartbeat(peer, [job('b2.1', 'running', MiB)]);
  t.equal(await bytesRebuilt(), 8 * MiB, 'a new job of a restarted SDS counts apart');
});
