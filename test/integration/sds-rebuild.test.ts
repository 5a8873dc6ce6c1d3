// Proves rebuild between real SDS processes: a pool runs on A (primary) and B (secondary);
// B is lost; the map makes C the new secondary; A streams every chunk of every group to C
// while a client keeps writing through A. The rebuild is throttled, stops with A (SIGTERM)
// and resumes from its saved cursor when A comes back (from A's state file, as a data dir of
// an older version kept it; the cursor file takes it over), and a chunk C held from an earlier
// life that A no longer has is trimmed. In the end C alone serves the whole volume, equal
// to what the client wrote.
//
// Then a crash: A is killed with SIGKILL in the middle of a throttled rebuild, under strace.
// The cursor A had saved on disk (rebuild-cursors.json) is what the restarted A resumes
// from, exactly, and it copies only the chunks after it; while A copied, its main thread
// (the event loop) made no fsync, fdatasync or rename at all, and its thread pool did
// (the cursor saves), so the cursor is saved, and saved off the event loop.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import type { PlacementMap } from '../../src/wire/placement.js';
import { IoFlag, SdsOp, SdsStatus, encodeIo, type RebuildArgs } from '../../src/wire/sds-ops.js';
import { sparseFile } from '../helpers/files.js';
import { MiB, TestVolumeClient, connectWire, expectOk, getStats, setMap, startSds, testPoolId, type SdsHandle } from '../helpers/sds.js';
import type { WirePeer } from '../../src/wire/peer.js';
import { rebuildCursorsFileName } from '../../src/sds/rebuild-cursors.js';
import { run } from '../helpers/processes.js';

const vtreeId = '7777000011112222';
const pgCount = 8;
const volumeBytes = 32 * MiB;
/** Every fifth chunk is left unwritten (a hole); the rest hold data. */
const dataChunks = Array.from({ length: volumeBytes / MiB }, (_, chunk) => chunk).filter((chunk) => chunk % 5 !== 4).length;

function mapOf(epoch: number, primary: SdsHandle, secondary: SdsHandle | null, all: SdsHandle[], groupCount = pgCount): PlacementMap {
  return {
    epoch,
    sds: Object.fromEntries(all.map((sds) => [sds.sdsId, { address: sds.address }])),
    pools: { [testPoolId]: { chunkBytes: MiB, groups: Array.from({ length: groupCount }, () => ({ primary: primary.sdsId, secondary: secondary?.sdsId ?? null })) } },
  };
}

async function rebuild(peer: WirePeer, args: RebuildArgs): Promise<void> {
  expectOk(await peer.request(SdsOp.Rebuild, Buffer.from(JSON.stringify(args))), `rebuild of group ${args.pgIndex}`);
}

async function waitForRebuilds(peer: WirePeer, count: number): Promise<Awaited<ReturnType<typeof getStats>>['rebuilds']> {
  for (let attempt = 0; attempt < 600; attempt++) {
    const { rebuilds } = await getStats(peer);
    const failed = rebuilds.find((progress) => progress.state === 'failed');
    if (failed !== undefined) throw new Error(`rebuild of group ${failed.pgIndex} failed: ${failed.error}`);
    if (rebuilds.length >= count && rebuilds.every((progress) => progress.state === 'done')) return rebuilds;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('rebuilds did not finish in 60 s');
}

t.test('a lost secondary is rebuilt onto another SDS, throttled and resumable, under client writes', async (t) => {
  const dir = t.testdir();
  const device = (name: string): string => sparseFile(dir, `${name}.img`, 128 * MiB);
  let a = await startSds(t, { dir, name: 'sds-a', devices: [device('a')] });
  const b = await startSds(t, { dir, name: 'sds-b', devices: [device('b')] });
  const c = await startSds(t, { dir, name: 'sds-c', devices: [device('c')] });
  const all = [a, b, c];
  let peerA = await connectWire(t, a.address);
  const peerC = await connectWire(t, c.address);
  const peerB = await connectWire(t, b.address);

  const first = mapOf(1, a, b, all);
  for (const peer of [peerA, peerB, peerC]) expectOk(await setMap(peer, first), 'map 1');
  const expected = randomBytes(volumeBytes);
  for (let chunk = 0; chunk < volumeBytes / MiB; chunk++) if (chunk % 5 === 4) expected.fill(0, chunk * MiB, (chunk + 1) * MiB);
  let volume = new TestVolumeClient(first, new Map([[a.sdsId, peerA]]), vtreeId);
  for (let chunk = 0; chunk < volumeBytes / MiB; chunk++) {
    if (chunk % 5 !== 4) await volume.write(chunk * MiB, expected.subarray(chunk * MiB, (chunk + 1) * MiB));
  }

  // B is lost; C becomes the secondary of every group.
  await b.kill();
  const second = mapOf(2, a, c, all);
  for (const peer of [peerA, peerC]) expectOk(await setMap(peer, second), 'map 2');
  // C holds a stray chunk from an earlier life (A never had chunk 100): rebuild must drop it.
  const stray = new TestVolumeClient(second, new Map([[a.sdsId, peerA]]), vtreeId).pieces(100 * MiB, 4096, IoFlag.Replica)[0];
  expectOk(await peerC.request(SdsOp.Write, encodeIo(stray?.args as Parameters<typeof encodeIo>[0], Buffer.alloc(4096, 0xee)), { epoch: 2 }), 'stray write');

  // A throttled rebuild of group 0, stopped with A after its first chunk.
  const throttled: RebuildArgs = { poolId: testPoolId, pgIndex: 0, targetSdsId: c.sdsId, bytesPerSecondMax: 2 * MiB, chunksInflightMax: 1 };
  await rebuild(peerA, throttled);
  for (let attempt = 0; attempt < 200; attempt++) {
    const progress = (await getStats(peerA)).rebuilds[0];
    if ((progress?.chunksDone ?? 0) >= 1) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const before = (await getStats(peerA)).rebuilds[0];
  t.ok(before !== undefined && before.chunksDone >= 1 && before.chunksDone < before.chunksTotal, `the throttled rebuild was part way (${before?.chunksDone}/${before?.chunksTotal}) when A stopped`);
  t.equal(await a.stop(), 0, 'A stops cleanly in the middle of a rebuild');
  // Make A's data dir look like an older version's: its cursors in the state file only.
  const stateFile = path.join(a.dataDir, 'sds-state.json');
  const oldState = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as { rebuildCursors?: Record<string, string> };
  oldState.rebuildCursors = savedCursors(a.dataDir);
  t.ok(Object.keys(oldState.rebuildCursors).length >= 1, 'A saved its cursor as it stopped');
  fs.writeFileSync(stateFile, JSON.stringify(oldState));
  fs.rmSync(path.join(a.dataDir, rebuildCursorsFileName));
  a = await startSds(t, { dir, name: 'sds-a', devices: [`${dir}/a.img`], listen: a.address });
  peerA = await connectWire(t, a.address);
  volume = new TestVolumeClient(second, new Map([[a.sdsId, peerA]]), vtreeId);

  // Every group, unthrottled, while the client writes on.
  for (let pgIndex = 0; pgIndex < pgCount; pgIndex++) {
    await rebuild(peerA, { poolId: testPoolId, pgIndex, targetSdsId: c.sdsId, bytesPerSecondMax: 0, chunksInflightMax: 4 });
  }
  let writes = 0;
  const writing = (async () => {
    for (let round = 0; round < 40; round++) {
      // Only into chunks A holds: a write that made a new chunk would be in the listing of
      // its group's job or not, depending on whether the job had started (the count below
      // counts chunks held when the rebuilds started).
      const heldChunk = Math.floor(Math.random() * (volumeBytes / MiB));
      const chunk = heldChunk % 5 === 4 ? heldChunk - 1 : heldChunk;
      const offset = chunk * MiB + Math.floor(Math.random() * (MiB / 4096)) * 4096;
      const data = randomBytes(4096);
      data.copy(expected, offset);
      await volume.write(offset, data);
      writes += 1;
    }
  })();
  const rebuilds = await waitForRebuilds(peerA, pgCount);
  await writing;
  t.equal(writes, 40, 'client writes went on during the rebuild');
  const resumed = /"resumedAfter":(\d+).*"msg":"rebuild started"/.exec(a.stderr().split('\n').find((line) => line.includes('"rebuild":"' + `${testPoolId}/0/`)) ?? '');
  t.ok(Number(resumed?.[1] ?? 0) >= 1, `group 0 resumed after its saved cursor (${resumed?.[1]} chunks were already done)`);
  const copiedChunks = rebuilds.reduce((sum, progress) => sum + progress.chunksTotal, 0);
  t.equal(copiedChunks, dataChunks, 'every chunk A held when the rebuilds started was in one');

  // C alone now serves everything, equal to what the client wrote; the stray chunk is gone.
  const third = mapOf(3, c, null, all);
  for (const peer of [peerA, peerC]) expectOk(await setMap(peer, third), 'map 3');
  const fromC = new TestVolumeClient(third, new Map([[c.sdsId, peerC]]), vtreeId);
  t.ok((await fromC.read(0, volumeBytes)).equals(expected), 'C holds the whole volume, including writes made during the rebuild');
  t.ok((await fromC.read(100 * MiB, 4096)).equals(Buffer.alloc(4096)), 'the stray chunk was trimmed on C');
  const statsC = await getStats(peerC);
  t.equal(statsC.devices[0]?.usedBytes, (dataChunks + (await countExtraChunks())) * MiB, 'C holds exactly the chunks A holds');
  t.notOk('rebuildCursors' in (JSON.parse(fs.readFileSync(stateFile, 'utf8')) as object), "A's state file no longer holds cursors");
  const stale = await peerA.request(SdsOp.Rebuild, Buffer.from(JSON.stringify({ ...throttled, pgIndex: 1 })));
  t.equal(stale.status, SdsStatus.InvalidArgument, 'A refuses to rebuild groups it is no longer primary of');

  async function countExtraChunks(): Promise<number> {
    // Client writes may have landed in chunks that were all zeros (every fifth one).
    let extra = 0;
    for (let chunk = 4; chunk < volumeBytes / MiB; chunk += 5) {
      if (!expected.subarray(chunk * MiB, (chunk + 1) * MiB).equals(Buffer.alloc(MiB))) extra += 1;
    }
    return extra;
  }
});

/** The cursors an SDS has saved on disk, by job key (none if it saved none yet). */
function savedCursors(dataDir: string): Record<string, string> {
  try {
    return (JSON.parse(fs.readFileSync(path.join(dataDir, rebuildCursorsFileName), 'utf8')) as { cursors: Record<string, string> }).cursors;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw err;
  }
}

t.test('kill -9 mid-rebuild: the restarted SDS resumes from the cursor it saved, saved off its event loop', async (t) => {
  if ((await run('strace', ['-V'])).code !== 0) {
    t.skip('strace is not installed', () => undefined);
    return;
  }
  const dir = t.testdir();
  const device = (name: string): string => sparseFile(dir, `${name}.img`, 128 * MiB);
  let a = await startSds(t, { dir, name: 'sds-a', devices: [device('a')] });
  const c = await startSds(t, { dir, name: 'sds-c', devices: [device('c')] });
  const all = [a, c];
  let peerA = await connectWire(t, a.address);
  const peerC = await connectWire(t, c.address);
  // One group holding every chunk: one job, one cursor, and chunk i is the job's i-th key.
  const chunkCount = 40;
  const first = mapOf(1, a, null, all, 1);
  for (const peer of [peerA, peerC]) expectOk(await setMap(peer, first), 'map 1');
  const expected = randomBytes(chunkCount * MiB);
  await new TestVolumeClient(first, new Map([[a.sdsId, peerA]]), vtreeId).write(0, expected);
  const second = mapOf(2, a, c, all, 1);
  for (const peer of [peerA, peerC]) expectOk(await setMap(peer, second), 'map 2');
  const jobKey = `${testPoolId}/0/${c.sdsId}`;

  // strace A's every thread for the calls a state or cursor save makes.
  const traceFile = path.join(dir, 'sds-a.strace');
  const strace = spawn('strace', ['-f', '-qq', '-e', 'trace=fsync,fdatasync,rename,renameat,renameat2', '-o', traceFile, '-p', String(a.process.pid)], { stdio: ['ignore', 'ignore', 'pipe'] });
  t.teardown(() => strace.kill('SIGKILL'));
  let straceErrors = '';
  strace.stderr.setEncoding('utf8').on('data', (text: string) => (straceErrors += text));
  let straceExitedEarly = false;
  const straceExited = new Promise<void>((resolve) => strace.once('exit', () => resolve()));
  void straceExited.then(() => (straceExitedEarly = a.process.exitCode === null && a.process.signalCode === null));
  // strace says nothing once attached (-qq): give it a moment. Whether it saw the cursor
  // saves is checked below, so a late attach fails the test rather than passing it.
  await new Promise((resolve) => setTimeout(resolve, 1000));

  // 4 MiB/s: ten seconds for the group; a cursor is saved every second or so.
  await rebuild(peerA, { poolId: testPoolId, pgIndex: 0, targetSdsId: c.sdsId, bytesPerSecondMax: 4 * MiB, chunksInflightMax: 1 });
  let cursorName: string | undefined;
  for (let attempt = 0; attempt < 300; attempt++) {
    cursorName = savedCursors(a.dataDir)[jobKey];
    if (cursorName !== undefined && Number(cursorName.split(':')[1]) >= 3) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  t.ok(cursorName !== undefined, `A saved a cursor while copying (${cursorName})`);
  await a.kill();
  await straceExited;
  const cursorAtKill = savedCursors(a.dataDir)[jobKey];
  const cursorChunkIndex = Number(cursorAtKill?.split(':')[1]);
  t.ok(cursorChunkIndex >= 3 && cursorChunkIndex < chunkCount - 1, `A died part way: its cursor on disk is chunk ${cursorChunkIndex} of ${chunkCount}`);

  if (straceExitedEarly) throw new Error(`strace could not trace A (ptrace not allowed here?): ${straceErrors.trim()}`);
  const pid = String(a.process.pid);
  const calls = fs.readFileSync(traceFile, 'utf8').split('\n').map((line) => /^(\d+)\s+(\w+)\((.*)$/.exec(line)).filter((match) => match !== null);
  const onEventLoop = calls.filter((match) => match[1] === pid).map((match) => `${match[2]}(${match[3]}`);
  const inPool = calls.filter((match) => match[1] !== pid);
  t.same(onEventLoop, [], 'no fsync, fdatasync or rename on the event loop while A was copying');
  t.ok(inPool.some((match) => match[2] === 'fsync') && inPool.some((match) => match[2]?.startsWith('rename') === true && match[3]?.includes(rebuildCursorsFileName) === true), 'the cursor saves were traced, in the thread pool');

  a = await startSds(t, { dir, name: 'sds-a', devices: [`${dir}/a.img`], listen: a.address });
  peerA = await connectWire(t, a.address);
  await rebuild(peerA, { poolId: testPoolId, pgIndex: 0, targetSdsId: c.sdsId, bytesPerSecondMax: 0, chunksInflightMax: 4 });
  const [job] = await waitForRebuilds(peerA, 1);
  const resumed = /"resumedAfter":(\d+).*"msg":"rebuild started"/.exec(a.stderr().split('\n').find((line) => line.includes(`"rebuild":"${jobKey}"`)) ?? '');
  t.equal(Number(resumed?.[1]), cursorChunkIndex + 1, 'the restarted A resumed right after the cursor it had saved');
  t.equal(job?.chunksTotal, chunkCount, 'the job still counts the whole group');
  t.equal(job?.bytesDone, (chunkCount - cursorChunkIndex - 1) * MiB, 'and copied only the chunks after the cursor');
  for (let attempt = 0; attempt < 50 && savedCursors(a.dataDir)[jobKey] !== undefined; attempt++) await new Promise((resolve) => setTimeout(resolve, 100));
  t.equal(savedCursors(a.dataDir)[jobKey], undefined, 'the finished job forgot its cursor');

  const third = mapOf(3, c, null, all, 1);
  for (const peer of [peerA, peerC]) expectOk(await setMap(peer, third), 'map 3');
  const fromC = new TestVolumeClient(third, new Map([[c.sdsId, peerC]]), vtreeId);
  t.ok((await fromC.read(0, chunkCount * MiB)).equals(expected), 'C holds every chunk, those before the cursor included');
});
