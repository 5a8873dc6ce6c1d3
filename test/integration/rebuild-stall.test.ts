// A rebuild that cannot finish is said, loudly, and never reported done: an MDM, three SDSs on
// sparse files and an SDC (real processes). A volume is written through NBD; one block of
// one chunk is rotted on its primary's device file (test/helpers/integrity.ts finds it from
// the slot table); the chunk's secondary SDS is killed and declared out, so the primary,
// holding the only copy, must rebuild the group onto the third SDS, and the rotten block
// makes that copy fail on the source side, every time. It proves:
// - the MDM shows the stalled group (dashboard JSON health.rebuild.failing): the chunk, the
//   side that failed (source), the error code (MB_ERR_CHECKSUM) and the attempts, which
//   grow (the job is retried, with backoff), and the group stays counted as syncing;
// - the MDM logs it at error level, naming the chunk;
// - once the rotten block is rewritten by a client, the next attempt copies the chunk and
//   the rebuild finishes: every copy in sync, nothing failing.
// Before the fix the group sat at "running" with groupsSyncing 1 and no word of why.
// Every wait is bounded and names what it waits for.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import type { RestDashboard } from '../../src/mdm/rest-objects.js';
import { placementGroupOf, vtreeOf } from '../../src/wire/placement.js';
import { keyName } from '../../src/sds/chunk-store.js';
import { startCluster, until } from '../helpers/cluster.js';
import { flipByte, locateChunk } from '../helpers/integrity.js';
import { run } from '../helpers/processes.js';
import { MiB, type SdsHandle } from '../helpers/sds.js';
import { Api, placementMap, qemuIo } from '../helpers/snapshots.js';

const GiB = 1024 * MiB;
const block = 4096;
const writtenChunks = 8;

t.test('a rebuild whose source copy is bad is reported failing, retried, and finishes once the range is rewritten', async (t) => {
  // A scratch directory of our own: tap removes testdir before teardowns run.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshblock-rebuild-stall-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const cluster = await startCluster(t, dir, {
    sdsCount: 3,
    deviceBytes: GiB,
    volumes: [{ name: 'vol1', sizeBytes: GiB }],
    mdmArgs: ['--sds-down-after', '2', '--rebuild-after', '2'],
  });
  const api = await Api.login(cluster.mdm);
  const dashboard = async (): Promise<RestDashboard> => {
    const reply = await api.get('/api/dashboard');
    if (reply.status !== 200) throw new Error(`GET /api/dashboard: ${reply.status} ${reply.text}`);
    return reply.body as RestDashboard;
  };
  const volume = await api.volume('vol1');
  const uri = cluster.uri('vol1');
  const source = path.join(dir, 'source.bin');
  fs.writeFileSync(source, Buffer.alloc(writtenChunks * MiB, 0x5a));
  const copyIn = await run('nbdcopy', ['--flush', source, uri]);
  t.equal(copyIn.code, 0, `the volume's first chunks written through NBD and flushed ${copyIn.stderr}`);

  const map = await placementMap(t, cluster);
  const pool = map.pools[volume.storagePoolId];
  if (pool === undefined) throw new Error(`pool ${volume.storagePoolId} is not in the map`);
  t.equal(pool.chunkBytes, MiB, 'the pool has 1 MiB chunks, as the test counts them');
  const generation = (vtreeOf(map, volume.vtreeId).heads[0] as { generation: number }).generation;
  const chunkIndex = 2;
  const group = pool.groups[placementGroupOf(volume.vtreeId, chunkIndex, pool.groups.length)];
  const byId = (sdsId: string | null | undefined): SdsHandle => {
    const found = cluster.sds.find((sds) => sds.sdsId === sdsId);
    if (found === undefined) throw new Error(`SDS ${sdsId} is not one of the cluster's`);
    return found;
  };
  const primary = byId(group?.primary);
  const secondary = byId(group?.secondary);
  const chunk = keyName({ poolId: volume.storagePoolId, vtreeId: volume.vtreeId, chunkIndex, generation });

  // The only copy left will be bad in block 5: rot it behind the primary's back.
  const device = path.join(dir, `${primary.name}.img`);
  flipByte(device, locateChunk(device, { vtreeId: volume.vtreeId, chunkIndex, generation }).dataBytes + 5 * block + 17);
  await secondary.kill();
  t.comment(`chunk ${chunk}: primary ${primary.name}, secondary ${secondary.name} killed`);

  type Failing = RestDashboard['health']['rebuild']['failing'][number];
  const failingOf = async (): Promise<Failing | undefined> => ((await dashboard()).health.rebuild.failing ?? []).find((entry) => entry.chunk === chunk);
  const first = await until('the MDM to show the group failing on that chunk (dashboard JSON)', failingOf, 60_000).catch(async (err: unknown) => {
    // What there is to see instead: the MDM's rebuild view and the primary's rebuild lines.
    t.comment(`dashboard rebuild: ${JSON.stringify((await dashboard()).health.rebuild)}`);
    const lines = primary.stderr().split('\n').filter((line) => line.includes('rebuild'));
    t.comment(`${primary.name}: ${lines.length} rebuild log lines, the last: ${lines.slice(-3).join('\n')}`);
    throw err;
  });
  t.match(first, { chunk, side: 'source', code: 'MB_ERR_CHECKSUM', sourceSdsId: primary.sdsId, poolId: volume.storagePoolId }, 'the chunk, the side and the code are shown');
  t.ok(first.attempts >= 1 && typeof first.message === 'string' && first.message.length > 0, `attempts ${first.attempts} and the error: ${first.message}`);
  const again = await until('a later attempt (retried, with backoff)', async () => {
    const now = await failingOf();
    return now !== undefined && now.attempts > first.attempts ? now : undefined;
  }, 30_000);
  t.ok(again.attempts > first.attempts, `retried: ${again.attempts} attempts`);
  const view = await dashboard();
  t.ok(view.health.rebuild.groupsSyncing >= 1, `the group still counts as syncing (${view.health.rebuild.groupsSyncing}), never as synced`);
  t.not(view.health.rebuild.state, 'idle', 'the rebuild is not idle');
  const text = await cluster.meshblock(['dashboard']);
  // FAILED here: the range is also bad on both copies (the other is on the SDS that is down).
  t.match(text.stdout, /^Health    [A-Z]+: .*1 rebuild failing again and again/m, 'meshblock dashboard says so in its health line');
  t.match(text.stdout, new RegExp(`^Rebuild   running: .*1 group failing: chunk ${chunk} \\(source MB_ERR_CHECKSUM, \\d+ attempts?, next in \\d+ s\\)`, 'm'), 'and in its rebuild line');
  const logged = cluster.mdm
    .stderr()
    .split('\n')
    .filter((line) => line.includes(chunk) && line.includes('"level":50'));
  t.ok(logged.length > 0, `the MDM logs the failure at error level, naming the chunk: ${logged[0] ?? '(none)'}`);

  // A client rewrites the bad block: the range is good again, and the next attempt copies it.
  const volumeOffsetBytes = chunkIndex * MiB + 5 * block;
  t.ok(await qemuIo(t, uri, [`write -P 0x33 ${volumeOffsetBytes} ${block}`]), 'a whole-block write over the bad block is taken');
  await until(
    'the rebuild to finish: every copy in sync, nothing failing',
    async () => {
      const { health } = await dashboard();
      return health.rebuild.state === 'idle' && (health.rebuild.failing ?? []).length === 0 && health.degradedBytes === 0 ? true : undefined;
    },
    120_000,
  );
  t.ok(await qemuIo(t, uri, [`read -P 0x33 ${volumeOffsetBytes} ${block}`, `read -P 0x5a ${chunkIndex * MiB} ${5 * block}`]), 'the chunk reads back as written');
});
