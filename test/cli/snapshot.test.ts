// Proves `meshblock snapshot create|list|remove|restore|set-access|set-limit` and the snapshot
// side of `volume list` / `volume map` / `volume remove --mode` against the real REST API over HTTPS (in-process, the
// in-test controller of test/helpers/rest.ts): one snapshot and a consistency group, names
// given or left to the MDM, read-only, snapshots of snapshots, listing by volume (its
// descendants), restore, the removal modes and group removal, --json that parses; and the
// error contract: one line on stderr, exit 2 for bad usage (before connecting), exit 1 for
// what the API refused, the model unchanged.

import t, { type Test } from 'tap';
import type { RestVolume } from '../../src/mdm/rest-objects.js';
import { snapshotGroupVolumesMax } from '../../src/common/limits.js';
import { startTestApi, type TestApi } from '../helpers/rest.js';
import { manageRunner, oneLine, type ManageRunner } from '../helpers/manage.js';

/** pd1/pool1 over three SDSs, vol1 (thin 128 MiB) and vol2 (thick 64 MiB), SDC host1. */
async function populated(t: Test): Promise<{ api: TestApi; run: ManageRunner; ok: (args: string[]) => Promise<string> }> {
  const api = await startTestApi(t);
  const run = manageRunner(api);
  const ok = async (args: string[]): Promise<string> => {
    const result = await run(args);
    t.equal(result.code, 0, `${args.slice(0, 3).join(' ')} succeeds${result.stderr === '' ? '' : `: ${result.stderr}`}`);
    t.equal(result.stderr, '', `${args.slice(0, 3).join(' ')}: nothing on stderr`);
    return result.stdout;
  };
  await ok(['pd', 'add', '--name', 'pd1']);
  await ok(['pool', 'add', '--pd', 'pd1', '--name', 'pool1', '--volume-granularity', '64MiB']);
  for (const [index, name] of ['sds1', 'sds2', 'sds3'].entries()) {
    api.controller.registerSds(name, 7400 + index);
    await ok(['sds', 'add', '--sds', name, '--pd', 'pd1']);
    await ok(['device', 'add', '--sds', name, '--pool', 'pool1', '--path', '/dev/sdb']);
  }
  await ok(['volume', 'add', '--pool', 'pool1', '--name', 'vol1', '--size', '128MiB']);
  await ok(['volume', 'add', '--pool', 'pool1', '--name', 'vol2', '--size', '64MiB', '--thick']);
  api.controller.registerSdc('guid-0001-host1', 'host1');
  return { api, run, ok };
}

t.test('create, list, restore and remove snapshots', async (t) => {
  const { api, run, ok } = await populated(t);
  const model = api.controller.state.model;
  const json = async <T>(args: string[]): Promise<T> => JSON.parse(await ok([...args, '--json'])) as T;
  const byName = (name: string) => Object.values(model.volumes).find((volume) => volume.name === name);

  t.match(await ok(['snapshot', 'create', '--volume', 'vol1', '--name', 's1']), /^snapshot 's1' of volume 'vol1' created: id [0-9a-f]{16}\nsnapshot group [0-9a-f]{16}\n$/);
  t.match(byName('s1'), { volumeType: 'Snapshot', ancestorVolumeId: byName('vol1')?.id, accessModeLimit: 'ReadWrite' });

  const group = await json<{ volumeIdList: string[]; snapshotGroupId: string }>(['snapshot', 'create', '--volume', 'vol1', '--volume', 'vol2', '--read-only']);
  t.match(group, { volumeIdList: [/^[0-9a-f]{16}$/, /^[0-9a-f]{16}$/], snapshotGroupId: /^[0-9a-f]{16}$/ }, 'create --json is the API reply');
  const [g1, g2] = group.volumeIdList.map((id) => model.volumes[id]);
  t.match(g1, { ancestorVolumeId: byName('vol1')?.id, accessModeLimit: 'ReadOnly', snapshotGroupId: group.snapshotGroupId });
  t.match(g2, { ancestorVolumeId: byName('vol2')?.id, accessModeLimit: 'ReadOnly', snapshotGroupId: group.snapshotGroupId });
  t.match(g1?.name, /^vol1-snap-\d+$/, 'named by the MDM');

  const text = await ok(['snapshot', 'create', '--volume', 's1', '--volume', 'vol2', '--name', 's1a', '--name', 'v2s']);
  t.match(text, /^snapshot 's1a' of volume 's1' created: id [0-9a-f]{16}\nsnapshot 'v2s' of volume 'vol2' created: id [0-9a-f]{16}\nsnapshot group [0-9a-f]{16}: 2 snapshots at one crash point\n$/, 'a group, with names, of a snapshot too');

  const table = await ok(['snapshot', 'list']);
  t.match(table, /^NAME\s+ID\s+OF\s+SIZE\s+ACCESS\s+GROUP\s+CREATED\s+MAPPED TO\n/, 'a header row');
  t.match(table, /\ns1\s+[0-9a-f]{16}\s+vol1\s+128 MiB\s+read-write\s+[0-9a-f]{16}\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+-\n/);
  t.match(table, new RegExp(`\\n${g2?.name}\\s+[0-9a-f]{16}\\s+vol2\\s+64 MiB\\s+read-only\\s+${group.snapshotGroupId}`));
  t.equal(table.trim().split('\n').length, 6, 'five snapshots, no base volume');
  const ofVol1 = await json<RestVolume[]>(['snapshot', 'list', '--volume', 'vol1']);
  t.same(ofVol1.map((volume) => volume.name).sort(), [g1?.name, 's1', 's1a'].sort(), '--volume: its snapshots and theirs');
  t.ok(ofVol1.every((volume) => volume.volumeType === 'Snapshot'));

  // A read-only snapshot maps read-only by default; asked otherwise, the API says why not.
  t.match(await ok(['volume', 'map', '--volume', g2?.name as string, '--sdc', 'host1']), /^volume 'vol2-snap-\d+' mapped to SDC 'host1' read-only \(a read-only snapshot\)\n$/);
  t.match(model.volumes[g2?.id as string]?.mappings, [{ accessMode: 'ReadOnly' }]);
  const forced = await run(['volume', 'map', '--volume', 'v2s', '--sdc', 'host1', '--read-only']);
  t.equal(forced.code, 0, 'a writable snapshot maps read-only when asked');
  const writable = await run(['volume', 'map', '--volume', g1?.name as string, '--sdc', 'host1', '--no-read-only']);
  t.equal(writable.code, 1, 'a read-only snapshot does not map read-write');
  t.match(writable.stderr, /is read-only \(accessModeLimit ReadOnly\)/);
  await ok(['volume', 'unmap', '--volume', g2?.name as string, '--sdc', 'host1']);
  await ok(['volume', 'unmap', '--volume', 'v2s', '--sdc', 'host1']);

  // Access: a writable snapshot made read-only and back; a read-only one mapped read-write is not.
  t.match(await ok(['snapshot', 'set-access', 's1', '--access', 'read-only']), /^snapshot 's1' is now read-only\n$/);
  t.equal(byName('s1')?.accessModeLimit, 'ReadOnly');
  t.match(await ok(['snapshot', 'set-access', 's1', '--access', 'read-write']), /^snapshot 's1' is now read-write\n$/);
  t.equal(byName('s1')?.accessModeLimit, 'ReadWrite');

  const volumes = await ok(['volume', 'list']);
  t.match(volumes, /\ns1\s+[0-9a-f]{16}\s+pool1\s+128 MiB\s+snapshot\s+-\n/, "volume list shows a snapshot's type");
  t.match(volumes, new RegExp(`\\n${g2?.name}\\s+[0-9a-f]{16}\\s+pool1\\s+64 MiB\\s+snapshot\\(ro\\)`));
  t.match(volumes, /\nvol2\s+[0-9a-f]{16}\s+pool1\s+64 MiB\s+thick\s+-/);

  const vol1 = byName('vol1');
  t.match(await ok(['snapshot', 'restore', '--volume', 'vol1', '--from', 's1']), /^volume 'vol1' restored from snapshot 's1'\n$/);
  t.equal(byName('vol1')?.id, vol1?.id, 'the volume keeps its id');

  t.match(await ok(['snapshot', 'remove', 's1', '--mode', 'descendants-only']), /^1 removed \(DESCENDANTS_ONLY, 's1' stays\): 's1a'\n$/);
  t.match(await ok(['snapshot', 'remove', 's1']), /^snapshot 's1' removed\n$/);
  t.match(await ok(['snapshot', 'remove', '--group', group.snapshotGroupId]), new RegExp(`^snapshot group ${group.snapshotGroupId} removed: 2 snapshots\\n$`));
  t.match(await ok(['volume', 'remove', '--volume', 'vol2', '--mode', 'whole-vtree']), /^2 removed \(WHOLE_VTREE\): 'v2s', 'vol2'\n$/);
  t.same(Object.values(model.volumes).map((volume) => volume.name), ['vol1'], 'only vol1 is left');
  t.equal(api.auth.sessionCount, 0, 'every invocation logged out');
});

t.test('errors: one line, exit 2 for usage, exit 1 for what the API refused', async (t) => {
  const { api, run, ok } = await populated(t);
  await ok(['snapshot', 'create', '--volume', 'vol1', '--name', 's1']);
  await ok(['snapshot', 'create', '--volume', 'vol2', '--name', 'other']);
  await ok(['volume', 'map', '--volume', 'other', '--sdc', 'host1']);
  const before = JSON.stringify(api.controller.state.model);

  // Usage: exit 2, before connecting.
  oneLine(t, await run(['snapshot', 'create']), /Missing required argument: volume/, 2, 'no volume');
  oneLine(t, await run(['snapshot', 'create', '--volume', 'vol1', '--name', 'a', '--name', 'b']), /--name: give one --name per --volume \(1 volumes, 2 names\), or none/, 2, 'names do not match volumes');
  oneLine(t, await run(['snapshot', 'create', '--volume', 'vol1', '--volume', 'vol1']), /--volume: 'vol1' is given twice/, 2, 'a volume twice');
  const many = Array.from({ length: snapshotGroupVolumesMax + 1 }, (_, index) => ['--volume', `v${index}`]).flat();
  oneLine(t, await run(['snapshot', 'create', ...many]), new RegExp(`--volume: at most ${snapshotGroupVolumesMax} volumes in one snapshot, got ${snapshotGroupVolumesMax + 1}`), 2, 'too many volumes');
  oneLine(t, await run(['snapshot', 'remove']), /--group: give a snapshot, or --group with a snapshot group id \(one of the two\)/, 2, 'nothing to remove');
  oneLine(t, await run(['snapshot', 'remove', 's1', '--group', '0123456789abcdef']), /one of the two/, 2, 'both');
  oneLine(t, await run(['snapshot', 'remove', '--group', 'g1']), /--group: must be a snapshot group id of 16 lowercase hex digits, got 'g1'/, 2, 'bad group id');
  oneLine(t, await run(['snapshot', 'remove', '--group', '0123456789abcdef', '--mode', 'whole-vtree']), /--mode: applies to one snapshot, not to --group/, 2, '--mode with --group');
  oneLine(t, await run(['snapshot', 'remove', 's1', '--mode', 'everything']), /Invalid values:.*mode.*everything/, 2, 'unknown mode');
  oneLine(t, await run(['snapshot', 'restore', '--volume', 'vol1']), /Missing required argument: from/, 2, 'restore without --from');
  oneLine(t, await run(['snapshot', 'set-limit', '--per-vtree', '0']), /--per-vtree: must be a whole number from 1 to 127, got 0/, 2, 'limit 0');
  oneLine(t, await run(['snapshot', 'set-limit', '--per-vtree', 'many']), /--per-vtree: must be a whole number from 1 to 127, got many/, 2, 'limit not a number');
  oneLine(t, await run(['snapshot', 'set-access', 's1']), /Missing required argument: access/, 2, 'set-access without --access');
  oneLine(t, await run(['snapshot', 'set-access', 's1', '--access', 'none']), /Invalid values:.*access.*none/, 2, 'unknown access');
  oneLine(t, await run(['snapshot'], { connection: false }), /snapshot: name a subcommand \(create, list, remove, restore, set-access, set-limit\)/, 2, 'no verb');

  // The API refused: exit 1 with its message. The V-Tree of vol1 holds one snapshot: a limit of 1 refuses the next.
  t.match(await ok(['snapshot', 'set-limit', '--per-vtree', '1']), /^snapshots per V-Tree: 1 \(was 31\)\n$/);
  oneLine(t, await run(['snapshot', 'create', '--volume', 'vol1']), /the V-Tree of volume 'vol1' holds 1 snapshot\(s\); 1 more would pass the limit of 1 per V-Tree/, 1, 'too many snapshots');
  const limited = JSON.stringify(api.controller.state.model);
  oneLine(t, await run(['snapshot', 'create', '--volume', 'ghost']), /--volume: no volume with id or name 'ghost'/, 1, 'a missing volume');
  oneLine(t, await run(['snapshot', 'create', '--volume', 'vol1', '--name', 'vol2']), /snapshotDefs\[0\]\.snapshotName: a volume named 'vol2' already exists/, 1, 'name taken');
  oneLine(t, await run(['snapshot', 'remove', 'vol1']), /snapshot: 'vol1' is a volume, not a snapshot \(remove volumes with volume remove\)/, 1, 'a base volume');
  oneLine(t, await run(['snapshot', 'remove', 'other']), /mapped/, 1, 'a mapped snapshot');
  oneLine(t, await run(['snapshot', 'set-access', 'other', '--access', 'read-only']), /volume 'other' is mapped read-write to SDC 'host1'/, 1, 'read-only while mapped read-write');
  oneLine(t, await run(['snapshot', 'set-access', 'vol1', '--access', 'read-only']), /snapshot: 'vol1' is a volume, not a snapshot/, 1, 'a base volume');
  oneLine(t, await run(['snapshot', 'restore', '--volume', 'vol1', '--from', 'other']), /V-Tree|tree/i, 1, 'from another V-Tree');
  oneLine(t, await run(['snapshot', 'remove', '--group', 'ffffffffffffffff']), /snapGroupId: no snapshot group with id ffffffffffffffff/, 1, 'an unknown group');
  t.equal(JSON.stringify(api.controller.state.model), limited, 'nothing changed');
  t.not(limited, before, 'but the limit (sanity)');
});

t.test('--help on snapshot and its verbs', async (t) => {
  const api = await startTestApi(t);
  const run = manageRunner(api);
  for (const args of [['snapshot', '--help'], ['snapshot', 'create', '--help'], ['snapshot', 'list', '--help'], ['snapshot', 'remove', '--help'], ['snapshot', 'restore', '--help'], ['snapshot', 'set-access', '--help'], ['snapshot', 'set-limit', '--help']]) {
    const result = await run(args, { connection: false });
    t.equal(result.code, 0, `${args.join(' ')} exits 0`);
    t.match(result.stdout, /meshblock snapshot/, `${args.join(' ')} prints usage`);
  }
  const create = await run(['snapshot', 'create', '--help'], { connection: false });
  for (const flag of ['--volume', '--name', '--read-only', '--json', '--api']) t.match(create.stdout, flag, `snapshot create --help mentions ${flag}`);
  const remove = await run(['snapshot', 'remove', '--help'], { connection: false });
  for (const word of ['--group', '--mode', 'only-me', 'including-descendants', 'descendants-only', 'whole-vtree']) t.match(remove.stdout, word, `snapshot remove --help mentions ${word}`);
});
