// Proves, with a real MDM process and one wire client playing an SDS, that what an SDS's
// heartbeat says about checksums at rest reaches the operator: the MDM logs a counter rise
// once (naming the SDS and the increase), a range bad on both copies once at error level,
// nothing more when the same heartbeat repeats, and `meshblock dashboard --json` shows the
// SDS's counters, scrub and the range.

import * as fs from 'node:fs';
import t from 'tap';
import type { RestDashboard } from '../../src/mdm/rest-objects.js';
import { MdmOp } from '../../src/wire/mdm-ops.js';
import type { WirePeer } from '../../src/wire/peer.js';
import { SdsStatus, type SdsStats } from '../../src/wire/sds-ops.js';
import { cli, startMdm, until } from '../helpers/cluster.js';
import { MiB, connectWire } from '../helpers/sds.js';

const sdsId = '5d50000000000001';

async function send(peer: WirePeer, op: number, body: unknown): Promise<void> {
  const reply = await peer.request(op, Buffer.from(JSON.stringify(body)));
  if (reply.status !== SdsStatus.Ok) throw new Error(`MDM refused op ${op}: ${reply.payload.toString()}`);
}

const logLines = (stderr: string): Array<Record<string, unknown>> =>
  stderr
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);

t.test('an SDS heartbeat with findings: logged once each, shown on the dashboard', async (t) => {
  const dir = t.testdir();
  const mdm = await startMdm(t, dir);
  const meshblock = cli(mdm, dir);
  const peer = await connectWire(t, mdm.address, { role: 'sds', clusterId: mdm.clusterId, secret: fs.readFileSync(mdm.secretFile, 'utf8').trim() });
  await send(peer, MdmOp.RegisterSds, { sdsId, name: 'fake-sds', address: '127.0.0.1:1', devices: [] });
  const stats: SdsStats = {
    sdsId,
    name: 'fake-sds',
    epoch: 1,
    chunkBytes: MiB,
    devices: [],
    reservedBytes: 0,
    rebuilds: [],
    integrity: { checksumErrors: 4, repairedBlocks: 3, unrepairableBlocks: 1, tornBlocksAccepted: 0, damagedEntries: 0, mismatchedBlocks: 0 },
    scrub: { state: 'running', mode: 'dataComparison', rateKBps: 1024, passesCompleted: 0, passStartedAtMs: 1, lastPassCompletedAtMs: null, chunksScanned: 3, chunksTotal: 12, bytesScanned: 3 * MiB },
    unrepairable: [{ poolId: '00000000000000a1', vtreeId: '00000000000000c1', generation: 0, chunkIndex: 2, offsetBytes: 4096, lengthBytes: 4096, detectedAtMs: 1 }],
  };
  await send(peer, MdmOp.Heartbeat, stats);
  await send(peer, MdmOp.Heartbeat, stats);
  const integrityLines = (): Array<Record<string, unknown>> => logLines(mdm.stderr()).filter((line) => line['component'] === 'integrity');
  await until('the integrity log lines', async () => (integrityLines().length >= 2 ? true : undefined));

  const result = await meshblock(['dashboard', '--json']);
  t.equal(result.code, 0, result.stderr);
  const view = JSON.parse(result.stdout) as RestDashboard;
  t.match(view.integrity.sds, [{ sdsId, sdsName: 'fake-sds', integrity: { checksumErrors: 4, unrepairableBlocks: 1 }, scrub: { state: 'running' }, scrubPassPercent: 25 }]);
  t.match(view.integrity.unrepairable, [{ chunkIndex: 2, offsetInChunkBytes: 4096, lengthBytes: 4096, reaches: 'removed', reportedBy: [sdsId] }]);

  const lines = integrityLines();
  t.equal(lines.length, 2, 'the repeated heartbeat logged nothing more');
  t.match(lines[0], { level: 50, sdsId, sdsName: 'fake-sds', checksumErrorsIncrease: 4, repairedBlocksIncrease: 3, unrepairableBlocksIncrease: 1, msg: /^SDS 'fake-sds' integrity: checksumErrors \+4 \(4 since it started\)/ });
  t.match(lines[1], { level: 50, sdsId, chunkIndex: 2, lengthBytes: 4096, msg: /^unrepairable: both copies bad, data no volume reads any more \(V-Tree 00000000000000c1 generation 0, chunk 2 bytes 4096\.\.8192\)/ });
});
