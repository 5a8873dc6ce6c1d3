// Proves that a wire client that asks and never reads cannot hurt a real SDS process or its
// other clients (the wire's reply bounds, src/wire/limits.ts and peer.ts "Bounds"):
//
// A `meshblock sds start` on a sparse file gets a client that authenticates, sets a map and
// writes 16 chunks, then writes 1,500 READ requests of 1 MiB each by hand onto its socket
// and never reads a byte of the replies. Meanwhile the SDS's resident memory (VmRSS in
// /proc/<pid>/status) must stay within 256 MiB of what it was before the flood: without
// the bounds the SDS prepares every reply and queues it behind the stuck socket, 1.5 GiB
// (measured: RSS grew by ~1.5 GiB before the fix). A second client on the same SDS writes
// and reads back its own data throughout, each round finishing in seconds. When the
// hostile client hangs up, the SDS is still running and serves its data.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import t from 'tap';
import { encodeHeader } from '../../src/wire/header.js';
import { SdsOp, encodeIo } from '../../src/wire/sds-ops.js';
import { sparseFile } from '../helpers/files.js';
import { MiB, TestVolumeClient, connectSocket, connectWire, makeMap, setMap, startSds, testClusterId } from '../helpers/sds.js';

const KiB = 1024;
const hostileVtreeId = '1111222233334444';
const calmVtreeId = '5555666677778888';
const writtenChunkCount = 16;
const floodReadCount = 1500;
const rssGrowthBytesMax = 256 * MiB;

function rssBytes(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (match === null) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(match[1]) * KiB;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

t.test('a client that floods 1 MiB READs and never reads the replies', async (t) => {
  const dir = t.testdir();
  const device = sparseFile(dir, 'dev0.img', 512 * MiB);
  const sds = await startSds(t, { dir, name: 'sds-a', devices: [device] });
  const pid = sds.process.pid as number;
  const map = makeMap(1, [sds]);

  // The hostile client: a real, authenticated connection that sets the map and writes data.
  const hostileSocket = await connectSocket(t, sds.address);
  const hostile = await connectWire(t, sds.address, { socket: hostileSocket });
  t.equal((await setMap(hostile, map)).status, 0, 'the hostile client set the map');
  const hostileVolume = new TestVolumeClient(map, new Map([[sds.sdsId, hostile]]), hostileVtreeId);
  const hostileData = randomBytes(writtenChunkCount * MiB);
  await hostileVolume.write(0, hostileData);

  // The other client, whose IO must go on.
  const calm = await connectWire(t, sds.address);
  const calmVolume = new TestVolumeClient(map, new Map([[sds.sdsId, calm]]), calmVtreeId);
  await calmVolume.write(0, randomBytes(4 * MiB));

  await delay(500);
  const rssBeforeBytes = rssBytes(pid);

  // The flood: READs of the written chunks, framed by hand, and the socket never read again.
  hostileSocket.pause();
  const pieces = hostileVolume.pieces(0, writtenChunkCount * MiB);
  const frames: Buffer[] = [];
  for (let index = 0; index < floodReadCount; index++) {
    const piece = pieces[index % pieces.length];
    if (piece === undefined) throw new Error('no pieces');
    const args = encodeIo(piece.args);
    frames.push(
      encodeHeader({ op: SdsOp.Read, reply: false, status: 0, clusterId: testClusterId, requestId: 1_000_000 + index, epoch: map.epoch, payloadBytes: args.length, payloadCrc32c: null }),
      args,
    );
  }
  hostileSocket.write(Buffer.concat(frames));

  // Meanwhile the calm client writes and reads back, round after round, and RSS is sampled.
  let rssPeakBytes = rssBeforeBytes;
  const sampler = setInterval(() => (rssPeakBytes = Math.max(rssPeakBytes, rssBytes(pid))), 50);
  t.teardown(() => clearInterval(sampler));
  const roundDurationsMs: number[] = [];
  for (let round = 0; round < 6; round++) {
    const startedMs = Date.now();
    const data = randomBytes(2 * MiB);
    const offsetBytes = (round % 4) * 2 * MiB;
    await calmVolume.write(offsetBytes, data);
    const back = await calmVolume.read(offsetBytes, data.length);
    t.ok(back.equals(data), `round ${round}: the other client's data reads back`);
    roundDurationsMs.push(Date.now() - startedMs);
    await delay(400);
  }
  clearInterval(sampler);
  rssPeakBytes = Math.max(rssPeakBytes, rssBytes(pid));
  const growthBytes = rssPeakBytes - rssBeforeBytes;
  t.ok(
    growthBytes < rssGrowthBytesMax,
    `SDS RSS grew by ${(growthBytes / MiB).toFixed(1)} MiB (from ${(rssBeforeBytes / MiB).toFixed(1)} MiB) while ${floodReadCount} MiB of replies were asked for and not read`,
  );
  t.ok(Math.max(...roundDurationsMs) < 10_000, `the other client's rounds took ${roundDurationsMs.join(', ')} ms`);

  // The hostile client goes; the SDS is still up and serves its data.
  hostileSocket.destroy();
  t.equal(sds.process.exitCode, null, 'the SDS did not exit');
  const after = await connectWire(t, sds.address);
  const afterVolume = new TestVolumeClient(map, new Map([[sds.sdsId, after]]), hostileVtreeId);
  t.ok((await afterVolume.read(3 * MiB, 2 * MiB)).equals(hostileData.subarray(3 * MiB, 5 * MiB)), 'a fresh client reads the hostile client’s data');
});
