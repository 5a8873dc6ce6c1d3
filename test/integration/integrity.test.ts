// Bit rot end to end (issue 21, docs/integrity.md): an MDM, three SDSs on sparse files and an
// SDC (real processes), a volume written through NBD (nbdcopy --flush) with a pattern where
// every 4-byte word is a hash of its own volume offset, and bytes flipped in the SDSs' device
// files behind their backs, as a rotting disk would (test/helpers/integrity.ts finds a copy's
// data, entry and checksums from the device's own slot table). Copies are told apart by the
// MDM's placement map, so every flip knows whether it hit the primary (the copy reads reach)
// or the secondary. Reads go through the SDC's export with qemu-img and qemu-io. It proves:
// - one copy rotted: the read returns the written bytes, the rotten copy is rewritten on its
//   device, the SDS's counters reach the MDM (REST dashboard, `meshblock dashboard --json`)
//   and the MDM logs the rise;
// - a damaged slot-table entry, found when its SDS restarts: the chunk reads whole and right
//   once reads reach that copy (its SDS the primary again), the copy is fetched again into a
//   slot with a good entry, `damagedEntries` is reported and logged;
// - one block rotted on both copies: a read of it fails with EIO, never with wrong bytes, and
//   so does a read of its whole chunk; its neighbours and other chunks read; the range is
//   reported exactly (REST System `unrepairableRanges`, the dashboard, the MDM's and the SDC's
//   logs) with the volume name and volume byte offset; a whole-block write makes it readable;
// - the scrub (pool policy set through the CLI, data comparison): rot planted in four blocks
//   of three secondary copies, which no read reaches, and a secondary block that differs
//   though it verifies (its CRC rewritten), are all repaired on the device within one pass,
//   and the counts reported (dashboard, REST statistics, the MDM's log) match what was
//   planted: exactly for mismatches and unrepairable blocks, within stated bounds where the
//   design counts one finding twice.
// The scrub is off (through the CLI) until the last part, so only reads find the first cases.
// Every wait is bounded and names what it waits for. Without the flips every part fails.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import type { UnrepairableReport } from '../../src/mdm/integrity.js';
import type { RestDashboard } from '../../src/mdm/rest-objects.js';
import type { ChunkKey } from '../../src/sds/chunk-store.js';
import { placementGroupOf, vtreeOf, type PlacementMap } from '../../src/wire/placement.js';
import type { IntegrityCounters } from '../../src/wire/sds-ops.js';
import { restartSds, startCluster, until } from '../helpers/cluster.js';
import { flipByte, forgeBlock, locateChunk, readBytes, type SlotPlace } from '../helpers/integrity.js';
import { run } from '../helpers/processes.js';
import { MiB, type SdsHandle } from '../helpers/sds.js';
import { Api, must, placementMap, qemuIo } from '../helpers/snapshots.js';

const GiB = 1024 * MiB;
const block = 4096;
/** Chunks 0..writtenChunks-1 of the volume hold the pattern (the pool's chunks are 1 MiB). */
const writtenChunks = 24;
const scrubRateKBpsHigh = 1024 * 1024;

/** The volume's bytes at [offsetBytes, +lengthBytes): each 4-byte word a hash of its own offset. */
function pattern(offsetBytes: number, lengthBytes: number): Buffer {
  const bytes = Buffer.alloc(lengthBytes);
  for (let at = 0; at < lengthBytes; at += 4) bytes.writeUInt32BE(Math.imul((offsetBytes + at) / 4 + 1, 0x9e3779b1) >>> 0, at);
  return bytes;
}

function sumOf(counters: Array<IntegrityCounters | undefined>, name: keyof IntegrityCounters): number {
  return counters.reduce((sum, entry) => sum + (entry?.[name] ?? 0), 0);
}

t.test('rot under a running cluster: reads repair or fail with EIO, never wrong bytes; the scrub repairs what was planted; all of it reported', async (t) => {
  // A scratch directory of our own: tap removes testdir before teardowns run, and the
  // daemons write into it until then.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshblock-integrity-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const top = t;
  const cluster = await startCluster(t, dir, {
    sdsCount: 3,
    deviceBytes: GiB,
    volumes: [{ name: 'vol1', sizeBytes: GiB }],
    // An SDS restarted here is away for seconds: it comes back to a delta rebuild, never a full one.
    mdmArgs: ['--rebuild-after', '120'],
  });
  const api = await Api.login(cluster.mdm);
  // The dashboard through REST: polled often, and the CLI costs a process start each time.
  const dashboard = async (): Promise<RestDashboard> => {
    const reply = await api.get('/api/dashboard');
    if (reply.status !== 200) throw new Error(`GET /api/dashboard: ${reply.status} ${reply.text}`);
    return reply.body as RestDashboard;
  };
  await must(cluster, ['pool', 'set-scrub', 'sp1', '--mode', 'off']);
  await until(
    'every SDS to report its scrub off',
    async () => ((await dashboard()).integrity.sds.every((entry) => entry.scrub?.state === 'off') ? true : undefined),
    20_000,
  );
  const volume = await api.volume('vol1');
  const uri = cluster.uri('vol1');

  const source = path.join(dir, 'source.bin');
  fs.writeFileSync(source, pattern(0, writtenChunks * MiB));
  const copyIn = await run('nbdcopy', ['--flush', source, uri]);
  t.equal(copyIn.code, 0, `the pattern written through NBD and flushed ${copyIn.stderr}`);

  const map = await placementMap(t, cluster);
  const pool = map.pools[volume.storagePoolId];
  if (pool === undefined) throw new Error(`pool ${volume.storagePoolId} is not in the map`);
  const chunkBytes = pool.chunkBytes;
  t.equal(chunkBytes, MiB, 'the pool has 1 MiB chunks, as the test counts them');
  const generation = (vtreeOf(map, volume.vtreeId).heads[0] as { generation: number }).generation;
  const keyOf = (chunkIndex: number): ChunkKey => ({ poolId: volume.storagePoolId, vtreeId: volume.vtreeId, chunkIndex, generation });
  const deviceOf = (sds: SdsHandle): string => path.join(dir, `${sds.name}.img`);
  const sdsById = (sdsId: string | null | undefined): SdsHandle => {
    const found = cluster.sds.find((sds) => sds.sdsId === sdsId);
    if (found === undefined) throw new Error(`SDS ${sdsId} is not one of the cluster's`);
    return found;
  };
  /** The SDSs holding the primary and the secondary copy of a chunk, in `current` (the map as it is now). */
  const copiesOf = (current: PlacementMap, chunkIndex: number): { primary: SdsHandle; secondary: SdsHandle } => {
    const groups = current.pools[volume.storagePoolId]?.groups ?? [];
    const group = groups[placementGroupOf(volume.vtreeId, chunkIndex, groups.length)];
    return { primary: sdsById(group?.primary), secondary: sdsById(group?.secondary) };
  };
  const locate = (sds: SdsHandle, chunkIndex: number): SlotPlace => locateChunk(deviceOf(sds), { vtreeId: volume.vtreeId, chunkIndex, generation });
  const onDevice = (sds: SdsHandle, chunkIndex: number, offsetBytes: number, lengthBytes: number): Buffer =>
    readBytes(deviceOf(sds), locate(sds, chunkIndex).dataBytes + offsetBytes, lengthBytes);

  /**
   * Reads the volume through the SDC's NBD export with qemu-img (a real client: a raw window
   * of the export, converted to a file); null when the read fails.
   */
  const readVolume = async (offsetBytes: number, lengthBytes: number): Promise<Buffer | null> => {
    const target = path.join(dir, `read-${offsetBytes}-${lengthBytes}.bin`);
    fs.rmSync(target, { force: true });
    const image = `driver=raw,offset=${offsetBytes},size=${lengthBytes},file.driver=nbd,file.server.type=inet,file.server.host=127.0.0.1,file.server.port=${cluster.sdc.nbdPort},file.export=vol1`;
    const result = await run('qemu-img', ['convert', '--image-opts', image, '-O', 'raw', target]);
    if (result.code !== 0) {
      t.comment(`qemu-img convert of ${offsetBytes}+${lengthBytes}: ${result.stderr.trim()}`);
      return null;
    }
    const bytes = fs.readFileSync(target);
    fs.rmSync(target);
    if (bytes.length !== lengthBytes) throw new Error(`qemu-img read ${bytes.length} bytes of ${offsetBytes}+${lengthBytes}`);
    return bytes;
  };
  const readsRight = async (offsetBytes: number, lengthBytes: number): Promise<boolean> =>
    (await readVolume(offsetBytes, lengthBytes))?.equals(pattern(offsetBytes, lengthBytes)) ?? false;

  /** Each SDS's counters as the MDM shows them (dashboard JSON), by SDS name. */
  const counters = async (): Promise<Map<string, IntegrityCounters>> => new Map((await dashboard()).integrity.sds.map((entry) => [entry.sdsName, entry.integrity]));
  const untilCounters = (what: string, sds: SdsHandle, expected: Partial<IntegrityCounters>): Promise<IntegrityCounters> =>
    until(
      `the MDM to show ${sds.name}'s counters ${JSON.stringify(expected)} (${what})`,
      async () => {
        const now = (await counters()).get(sds.name);
        return now !== undefined && Object.entries(expected).every(([name, value]) => now[name as keyof IntegrityCounters] === value) ? now : undefined;
      },
      15_000,
    );

  /**
   * The placement map once it has stopped changing for 3 s: after an SDS comes back the MDM
   * rebuilds what changed and may move roles, and which copy reads reach is what counts here.
   */
  const settledMap = async (what: string): Promise<PlacementMap> => {
    await until(
      `every group to have two copies in sync again ${what}`,
      async () => {
        const { health } = await dashboard();
        return health.rebuild.state === 'idle' && health.degradedBytes === 0 && health.failedBytes === 0 ? true : undefined;
      },
      60_000,
    );
    let last = '';
    let sameSinceMs = Date.now();
    return until(
      `the placement map to settle (the same for 3 s) ${what}`,
      async () => {
        const now = await placementMap(top, cluster);
        const shown = JSON.stringify(now.pools[volume.storagePoolId]?.groups);
        if (shown !== last) {
          last = shown;
          sameSinceMs = Date.now();
          return undefined;
        }
        return Date.now() - sameSinceMs >= 3000 ? now : undefined;
      },
      30_000,
    );
  };
  /** Stops an SDS cleanly (no slot left open: nothing is taken for a torn write at open), runs `meanwhile`, starts it again. */
  const restart = async (sds: SdsHandle, meanwhile: () => void = () => undefined): Promise<SdsHandle> => {
    await sds.stop();
    meanwhile();
    return restartSds(top, dir, cluster, cluster.sds.indexOf(sds));
  };

  t.ok(await readsRight(0, writtenChunks * MiB), 'the whole pattern reads back through NBD before any rot');

  await t.test('one copy rotted: the read returns the written bytes, the copy is repaired, the events reported', async (t) => {
    const chunkIndex = 1;
    const { primary } = copiesOf(map, chunkIndex);
    const at = locate(primary, chunkIndex);
    flipByte(deviceOf(primary), at.dataBytes + 2 * block + 100);
    t.notOk(onDevice(primary, chunkIndex, 2 * block, block).equals(pattern(MiB + 2 * block, block)), `block 2 of chunk 1 rotted on its primary ${primary.name}`);
    t.ok(await readsRight(MiB, MiB), 'chunk 1 reads through NBD with the written bytes');
    t.ok(onDevice(primary, chunkIndex, 2 * block, block).equals(pattern(MiB + 2 * block, block)), "the primary's copy is rewritten on its device");
    const seen = await untilCounters('one bad block, repaired', primary, { checksumErrors: 1, repairedBlocks: 1, unrepairableBlocks: 0 });
    t.equal(seen.checksumErrors, 1, `${primary.name} reports one bad block and its repair through the MDM`);
    const viaCli = JSON.parse((await must(cluster, ['dashboard', '--json'])).stdout) as RestDashboard;
    t.match(viaCli.integrity.sds.find((entry) => entry.sdsName === primary.name)?.integrity, { checksumErrors: 1, repairedBlocks: 1 }, 'meshblock dashboard --json shows the same');
    t.match(cluster.mdm.stderr(), new RegExp(`SDS '${primary.name}' integrity: checksumErrors \\+1 \\(1 since it started\\), repairedBlocks \\+1 \\(1 since it started\\)`), 'the MDM logs the rise');
  });

  await t.test('a damaged slot-table entry: after its SDS restarts the chunk reads whole and right, damagedEntries reported', async (t) => {
    const chunkIndex = 2;
    const damaged = copiesOf(map, chunkIndex).primary;
    const at = locate(damaged, chunkIndex);
    // Byte 20 is in the entry's poolId: its CRC no longer matches. Found only at open.
    const restarted = await restart(damaged, () => flipByte(deviceOf(damaged), at.entryBytes + 20));
    t.match(restarted.stderr(), /damaged slot-table entry/, 'the restarted SDS logs the damaged entry at open');
    // Away for a moment, it was declared down and its groups failed over: it may come back as
    // the secondary of chunk 2, where no read reaches its copy. Then the other copy's SDS is
    // restarted, which hands the primary role to the damaged copy (the only one in sync).
    let current = await settledMap(`after ${damaged.name} came back`);
    for (let round = 0; round < 2 && copiesOf(current, chunkIndex).primary !== restarted; round++) {
      const other = copiesOf(current, chunkIndex).primary;
      t.comment(`${restarted.name} is the secondary of chunk 2: restarting its primary ${other.name} to hand it the role`);
      await restart(other);
      current = await settledMap(`after ${other.name} came back`);
    }
    const { secondary } = copiesOf(current, chunkIndex);
    t.equal(copiesOf(current, chunkIndex).primary, restarted, `${restarted.name}, with the damaged entry, is the primary of chunk 2: reads reach its copy`);
    t.ok(await readsRight(2 * MiB, MiB), 'chunk 2 reads whole through NBD with the written bytes');
    t.ok(onDevice(restarted, chunkIndex, 0, MiB).equals(pattern(2 * MiB, MiB)), `${restarted.name} holds chunk 2 again, fetched from ${secondary.name}, in a slot with a good entry`);
    const seen = await untilCounters('one damaged entry, the chunk fetched whole', restarted, { damagedEntries: 1, repairedBlocks: MiB / block });
    t.equal(seen.damagedEntries, 1, 'damagedEntries 1 reported through the MDM');
    t.match(cluster.mdm.stderr(), new RegExp(`SDS '${restarted.name}' integrity: [^"]*damagedEntries \\+1`), 'the MDM logs it');
  });

  await t.test('one block rotted on both copies: EIO for that block only, reported precisely, readable again once rewritten', async (t) => {
    const chunkIndex = 3;
    const current = await placementMap(t, cluster);
    const { primary, secondary } = copiesOf(current, chunkIndex);
    const volumeOffsetBytes = chunkIndex * MiB + 5 * block;
    flipByte(deviceOf(primary), locate(primary, chunkIndex).dataBytes + 5 * block + 9);
    flipByte(deviceOf(secondary), locate(secondary, chunkIndex).dataBytes + 5 * block + 4000);
    const failed = await run('qemu-io', ['-f', 'raw', '-c', `read ${volumeOffsetBytes} ${block}`, uri]);
    const output = `${failed.stdout}${failed.stderr}`;
    t.match(output, /read failed: Input\/output error/, `a read of the block fails with EIO: ${output.trim()}`);
    t.notMatch(output, /read 4096\/4096 bytes/, 'and returns nothing');
    t.equal(await readVolume(chunkIndex * MiB, MiB), null, 'a read of the whole chunk fails too, never with wrong bytes');
    t.ok(await readsRight(volumeOffsetBytes - block, block), 'the block before it reads');
    t.ok(await readsRight(volumeOffsetBytes + block, block), 'the block after it reads');
    t.ok(await readsRight(4 * MiB, MiB), 'another chunk reads');
    const expected = { volumeName: 'vol1', volumeId: volume.id, reaches: 'volume', volumeOffsetBytes, volumeEndBytes: volumeOffsetBytes + block, lengthBytes: block, chunkIndex, offsetInChunkBytes: 5 * block };
    const reported = await until(
      'the MDM to report the range (REST System unrepairableRanges)',
      async () => {
        const reply = await api.post('/api/instances/System/action/querySelectedStatistics', { properties: ['unrepairableRanges'] });
        const ranges = (reply.body as { unrepairableRanges?: UnrepairableReport[] }).unrepairableRanges ?? [];
        return ranges.length > 0 ? ranges : undefined;
      },
      15_000,
    );
    t.match(reported, [expected], 'REST: exactly this range, by volume name and volume byte offset');
    t.equal(reported.length, 1, 'and nothing else');
    t.ok(reported[0]?.reportedBy.includes(primary.sdsId), `reported by ${primary.name}, the primary that was asked`);
    const view = await dashboard();
    t.match(view.integrity.unrepairable, [expected], 'the dashboard JSON lists it the same');
    t.equal((await counters()).get(primary.name)?.unrepairableBlocks, 1, `${primary.name} counts one unrepairable block`);
    t.match(cluster.mdm.stderr(), `unrepairable: both copies bad, volume 'vol1' bytes ${volumeOffsetBytes}..${volumeOffsetBytes + block} (4096 bytes)`, 'the MDM logs the range once');
    t.match(cluster.sdc.stderr(), /read of data bad on every copy; EIO, not retried/, 'the SDC logs the EIO it gave');

    t.ok(await qemuIo(t, uri, [`write -P 0x33 ${volumeOffsetBytes} ${block}`]), 'a whole-block write over it is taken');
    t.ok(await qemuIo(t, uri, [`read -P 0x33 ${volumeOffsetBytes} ${block}`]), 'and the block reads again, with the new bytes');
    t.ok(await readsRight(chunkIndex * MiB, 5 * block), 'the rest of the chunk before it is unchanged');
    t.ok(await readsRight(volumeOffsetBytes + block, MiB - 6 * block), 'and after it');
    t.ok(onDevice(secondary, chunkIndex, 5 * block, block).equals(Buffer.alloc(block, 0x33)), 'the write reached the secondary copy too');
    // Rewritten, the range is good again on both copies: a report that still listed it would
    // keep the dashboard's health at FAILED and send an operator after data that is fine.
    const listed = async (): Promise<UnrepairableReport[]> => {
      const reply = await api.post('/api/instances/System/action/querySelectedStatistics', { properties: ['unrepairableRanges'] });
      return (reply.body as { unrepairableRanges?: UnrepairableReport[] }).unrepairableRanges ?? [];
    };
    const cleared = await until('the MDM to drop the rewritten range (two heartbeats)', async () => ((await listed()).length === 0 ? true : undefined), 3000).catch(() => false);
    // A write over the whole range ends its report (ChunkStore.clearUnrepairable); before it
    // did, the MDM listed it, and said FAILED, until the SDS restarted.
    t.ok(cleared, 'once rewritten, the range is no longer reported as unrepairable');
  });

  await t.test('the scrub finds and repairs every case planted on secondary copies, and the counts match', async (t) => {
    // The planted SDS is restarted first (cleanly: no slot is left open, so nothing is taken
    // for a torn write at open), so that it holds no block checksums in memory: it loads them
    // from its device when the scrub first reads a copy, and so believes the forged CRC. That
    // makes a block that differs from the primary's yet verifies, which only the data
    // comparison can find (an SDS that had the checksums in memory would see plain rot).
    // Roles may move while it is away and back, so the copies are chosen once the map settles.
    const untouched = Array.from({ length: writtenChunks - 5 }, (_, index) => index + 5);
    const secondaryCount = (current: PlacementMap, sds: SdsHandle): number => untouched.filter((chunk) => copiesOf(current, chunk).secondary === sds).length;
    // Which copies an SDS holds as secondary after its restart depends on the placement (random
    // ids) and on how the roles settle: if the one restarted ends with fewer than four, the SDS
    // that now holds the most is restarted in turn (at most three restarts in all).
    let target = cluster.sds[0] as SdsHandle;
    let restarted = target;
    let chunks: number[] = [];
    for (let attempt = 1; attempt <= 3 && chunks.length < 4; attempt++) {
      const before = await placementMap(t, cluster);
      target = [...cluster.sds].sort((a, b) => secondaryCount(before, b) - secondaryCount(before, a))[0] as SdsHandle;
      restarted = await restart(target);
      const current = await settledMap(`after ${target.name} came back`);
      chunks = untouched.filter((chunk) => copiesOf(current, chunk).secondary === restarted);
    }
    t.ok(chunks.length >= 4, `${target.name} holds the secondary copy of ${chunks.length} untouched chunks (${chunks.join(', ')}); 4 are needed`);
    const [rotA, rotB, rotC, forged] = chunks as [number, number, number, number];
    /** The rotted blocks, none next to another: each is one range, one repair. */
    const rotted: Array<{ chunkIndex: number; blockIndex: number }> = [
      { chunkIndex: rotA, blockIndex: 3 },
      { chunkIndex: rotB, blockIndex: 10 },
      { chunkIndex: rotB, blockIndex: 200 },
      { chunkIndex: rotC, blockIndex: MiB / block - 1 },
    ];
    const forgedBlock = 7;
    for (const { chunkIndex, blockIndex } of rotted) flipByte(deviceOf(restarted), locate(restarted, chunkIndex).dataBytes + blockIndex * block + 1234);
    forgeBlock(deviceOf(restarted), locate(restarted, forged), keyOf(forged), forgedBlock, Buffer.alloc(block, 0x77));
    const plantedChunks = [rotA, rotB, rotC, forged];
    for (const chunkIndex of plantedChunks) t.notOk(onDevice(restarted, chunkIndex, 0, MiB).equals(pattern(chunkIndex * MiB, MiB)), `chunk ${chunkIndex}'s secondary copy on ${target.name} is planted`);

    const before = await dashboard();
    const beforeBy = new Map(before.integrity.sds.map((entry) => [entry.sdsName, entry]));
    const systemStats = async (): Promise<Record<string, number>> => {
      const reply = await api.post('/api/instances/System/action/querySelectedStatistics', { properties: ['backgroundScanReadErrorCount', 'backgroundScanFixedReadErrorCount', 'backgroundScanCompareErrorCount'] });
      return reply.body as Record<string, number>;
    };
    const restBefore = await systemStats();
    await must(cluster, ['pool', 'set-scrub', 'sp1', '--mode', 'data-comparison', '--rate-kbps', String(scrubRateKBpsHigh)]);
    const startedMs = Date.now();
    await until(
      'the scrub to repair every planted copy on the device',
      async () => (plantedChunks.every((chunkIndex) => onDevice(restarted, chunkIndex, 0, MiB).equals(pattern(chunkIndex * MiB, MiB))) ? true : undefined),
      60_000,
    );
    t.pass(`every planted copy is the pattern again on ${target.name}'s device, ${Date.now() - startedMs} ms after the policy was set`);
    // A pass started after the policy arrived and completed on every SDS: nothing found later.
    const after: RestDashboard = await until(
      'a scrub pass completed on every SDS after the policy was set',
      async () => {
        const view = await dashboard();
        return view.integrity.sds.every((entry) => (entry.scrub?.passesCompleted ?? 0) > (beforeBy.get(entry.sdsName)?.scrub?.passesCompleted ?? 0) && entry.scrub?.mode === 'dataComparison')
          ? view
          : undefined;
      },
      60_000,
    );
    const increase = (name: keyof IntegrityCounters): number =>
      sumOf(after.integrity.sds.map((entry) => entry.integrity), name) - sumOf(before.integrity.sds.map((entry) => entry.integrity), name);
    // Exact: the forged block is the one difference between copies that both verify.
    t.equal(increase('mismatchedBlocks'), 1, 'mismatchedBlocks +1: the forged block');
    t.equal(increase('unrepairableBlocks'), 0, 'nothing unrepairable');
    // Not exact: the planted SDS's own scan and the primary's comparison both look at each
    // rotted copy, and each counts what it finds. The secondary's scan finds the block (+1),
    // lets go of the chunk's lock and asks the primary for the range, while the primary's
    // comparison (holding its own lock, which that request waits for) asks the secondary for
    // its digest, whose verification finds the same block again (+1) before the primary
    // replaces the copy whole. So each rotted block counts once or twice (both have been seen
    // on the same run); repairs count 1 per block the secondary rewrites itself, or 256 (the
    // whole chunk) where the primary replaced its copy.
    t.ok(increase('checksumErrors') >= rotted.length && increase('checksumErrors') <= 2 * rotted.length, `checksumErrors +${increase('checksumErrors')}: every rotted block (${rotted.length}) found, none invented`);
    t.ok(increase('repairedBlocks') >= rotted.length && increase('repairedBlocks') <= 3 * (MiB / block), `repairedBlocks +${increase('repairedBlocks')}: at least the ${rotted.length} rotted blocks, at most their 3 chunks whole`);
    const restAfter = await until(
      'REST System statistics to show the comparison error',
      async () => {
        const stats = await systemStats();
        return (stats['backgroundScanCompareErrorCount'] ?? 0) > (restBefore['backgroundScanCompareErrorCount'] ?? 0) ? stats : undefined;
      },
      15_000,
    );
    t.equal((restAfter['backgroundScanCompareErrorCount'] ?? 0) - (restBefore['backgroundScanCompareErrorCount'] ?? 0), 1, 'REST backgroundScanCompareErrorCount +1');
    t.ok((restAfter['backgroundScanReadErrorCount'] ?? 0) - (restBefore['backgroundScanReadErrorCount'] ?? 0) >= rotted.length, 'REST backgroundScanReadErrorCount counts every rotted block');
    t.match(cluster.mdm.stderr(), /integrity: [^"]*mismatchedBlocks \+1/, 'the MDM logs the mismatch');
    for (const chunkIndex of plantedChunks) t.ok(await readsRight(chunkIndex * MiB, MiB), `chunk ${chunkIndex} reads right through NBD`);
    commentCounters(t, after);
  });
});

/** What the scrub reported, for a reader of the log (and of a failure). */
function commentCounters(t: Test, view: RestDashboard): void {
  for (const entry of view.integrity.sds) t.comment(`${entry.sdsName}: ${JSON.stringify(entry.integrity)}; scrub ${JSON.stringify(entry.scrub)}`);
}
