// Proves the management commands against the real REST API over HTTPS (in-process, the
// in-test controller of test/helpers/rest.ts): the main flows from an empty system to a
// mapped volume with QoS limits and back, names resolved to ids (ambiguous names refused),
// --json output that parses, the dashboard, and the error contract: one line on stderr, exit 2
// for bad usage (caught before connecting), exit 1 for what the API or the connection refused,
// with the API's message.

import * as path from 'node:path';
import t from 'tap';
import type { RestDashboard, RestDevice, RestProtectionDomain, RestSds, RestStoragePool, RestVolume } from '../../src/mdm/rest-objects.js';
import { GiB, MiB, formattedDevicePath, startTestApi } from '../helpers/rest.js';
import { manageRunner, oneLine } from '../helpers/manage.js';

t.test('from an empty system to a mapped volume with limits, and back', async (t) => {
  const api = await startTestApi(t);
  const run = manageRunner(api);
  const ok = async (args: string[]): Promise<string> => {
    const result = await run(args);
    t.equal(result.code, 0, `${args.slice(0, 2).join(' ')} succeeds${result.stderr === '' ? '' : `: ${result.stderr}`}`);
    t.equal(result.stderr, '', `${args.slice(0, 2).join(' ')}: nothing on stderr`);
    return result.stdout;
  };
  const json = async <T>(args: string[]): Promise<T> => JSON.parse(await ok([...args, '--json'])) as T;
  const model = api.controller.state.model;

  t.match(await ok(['pd', 'add', '--name', 'pd1']), /^protection domain 'pd1' created: id [0-9a-f]{16}\n$/);
  t.match(await ok(['pool', 'add', '--pd', 'pd1', '--name', 'pool1', '--volume-granularity', '64MiB', '--spare-percent', '10']), /storage pool 'pool1' in protection domain 'pd1' created/);
  t.match(await ok(['pool', 'add', '--pd', 'pd1', '--name', 'pool2', '--chunk-size', '256K', '--volume-granularity', '1G', '--pg-count', '8192', '--no-zero-padding']), /created/);
  const pool2 = Object.values(model.storagePools).find((pool) => pool.name === 'pool2');
  t.match(pool2, { chunkBytes: 256 * 1024, volumeGranularityBytes: GiB, pgCount: 8192, zeroPadding: false }, 'pool flags reach the model in their units');

  const sdsIds = ['sds1', 'sds2', 'sds3'].map((name, index) => api.controller.registerSds(name, 7100 + index));
  t.match(await ok(['fault-set', 'add', '--pd', 'pd1', '--name', 'rack1']), /fault set 'rack1' in protection domain 'pd1' created/);
  t.match(await ok(['sds', 'add', '--sds', 'sds1', '--pd', 'pd1']), /^SDS 'sds1' added to protection domain 'pd1'\n$/);
  t.match(await ok(['sds', 'add', '--sds', sdsIds[1] as string, '--pd', 'pd1']), /SDS 'sds2' added/, 'by id');
  t.match(await ok(['sds', 'add', '--sds', 'sds3', '--pd', 'pd1']), /SDS 'sds3' added/);
  const pools = await json<RestStoragePool[]>(['pool', 'list']);
  t.same(pools.map((pool) => pool.name), ['pool1', 'pool2'], 'pool list --json parses');
  t.match(await ok(['device', 'add', '--sds', 'sds1', '--pool', 'pool1', '--path', '/dev/sdb']), /device \/dev\/sdb of SDS 'sds1' in storage pool 'pool1' created: id/);
  t.match(await ok(['device', 'add', '--sds', sdsIds[1] as string, '--pool', pools[0]?.id as string, '--path', '/dev/sdb']), /created/, 'by ids');
  t.match(await ok(['device', 'add', '--sds', 'sds3', '--pool', 'pool1', '--path', '/dev/sdb', '--name', 'd3']), /device \/dev\/sdb of SDS 'sds3' in storage pool 'pool1' created: id/);

  const devices = await json<RestDevice[]>(['device', 'list']);
  t.equal(devices.length, 3, 'device list --json parses');
  t.match(devices.find((device) => device.name === 'd3'), { deviceCurrentPathName: '/dev/sdb', sdsId: sdsIds[2] });
  const deviceTable = await ok(['device', 'list', '--sds', 'sds3']);
  t.match(deviceTable, /^NAME\s+ID\s+SDS\s+POOL\s+PATH\s+CAPACITY\s+IN USE\s+STATE\n/, 'a header row');
  t.match(deviceTable, /d3\s+[0-9a-f]{16}\s+sds3\s+pool1\s+\/dev\/sdb\s+1 GiB\s+0 B\s+Normal/);
  t.equal(deviceTable.trim().split('\n').length, 2, '--sds filters');

  t.match(await ok(['volume', 'add', '--pool', 'pool1', '--name', 'vol1', '--size', '100MiB']), /^volume 'vol1' created: id [0-9a-f]{16}, 128 MiB thin in storage pool 'pool1'\n$/, 'the size as rounded by the pool');
  t.match(await ok(['volume', 'add', '--pool', 'pool1', '--name', 'vol2', '--size', '64M', '--thick']), /64 MiB thick/);
  const sdc = api.controller.registerSdc('guid-0001-host1', 'host1');
  api.controller.registerSdc('guid-0002-host2', 'host2');
  t.match(await ok(['volume', 'map', '--volume', 'vol1', '--sdc', 'host1', '--read-only']), /^volume 'vol1' mapped to SDC 'host1' read-only\n$/);
  t.match(await ok(['volume', 'map', '--volume', 'vol1', '--sdc', 'host2', '--allow-multiple']), /mapped to SDC 'host2'/);
  t.match(await ok(['volume', 'set-limits', '--volume', 'vol1', '--sdc', sdc, '--iops', '100', '--bandwidth', '10MiB']), /^volume 'vol1' on SDC 'host1': IOPS 100, bandwidth 10 MiB\/s\n$/);
  t.match(await ok(['volume', 'set-limits', '--volume', 'vol1', '--sdc', 'host1', '--iops', '0']), /IOPS unlimited, bandwidth 10 MiB\/s/, 'one limit alone keeps the other');
  const volumeTable = await ok(['volume', 'list']);
  t.match(volumeTable, /vol1\s+[0-9a-f]{16}\s+pool1\s+128 MiB\s+thin\s+host1\(ro 10 MiB\/s\),host2/);
  t.match(volumeTable, /vol2\s+[0-9a-f]{16}\s+pool1\s+64 MiB\s+thick\s+-/);
  const volumes = await json<RestVolume[]>(['volume', 'list', '--pool', 'pool1']);
  t.match(volumes.find((volume) => volume.name === 'vol1')?.mappedSdcInfo, [{ sdcName: 'host1', accessMode: 'ReadOnly', limitBwInKbps: 10240 }, { sdcName: 'host2', accessMode: 'ReadWrite' }]);
  t.match(await ok(['volume', 'resize', '--volume', 'vol1', '--size', '1GiB']), /^volume 'vol1' resized to 1 GiB\n$/);
  t.match(await ok(['volume', 'resize', '--volume', 'vol1', '--size', '1100MiB']), /resized to 1.1 GiB/, 'sizes below a whole GiB go as sizeInKb');
  t.equal(Object.values(model.volumes).find((volume) => volume.name === 'vol1')?.sizeBytes, 1152 * MiB);
  t.match(await ok(['volume', 'rename', '--volume', 'vol1', '--new-name', 'data1']), /renamed to 'data1'/);
  t.match(await ok(['sdc', 'list']), /host1\s+[0-9a-f]{16}\s+guid-0001-host1\s+Connected\s+data1/);
  t.match(await ok(['sdc', 'rename', '--sdc', 'host2', '--new-name', 'web2']), /SDC 'host2' renamed to 'web2'/);
  t.match(await ok(['sds', 'list']), /sds1\s+[0-9a-f]{16}\s+127\.0\.0\.1:7100\s+-\s+Normal\s+pd1\s+-\s+1/);
  t.match(await ok(['pd', 'list']), /pd1\s+[0-9a-f]{16}\s+2\s+3\s+1/);
  t.match(await ok(['pool', 'list']), /pool1\s+[0-9a-f]{16}\s+pd1\s+10%\s+1 MiB\s+64 MiB\s+3\s+2\s+3 GiB/);
  t.match(await ok(['fault-set', 'list']), /rack1\s+[0-9a-f]{16}\s+pd1\s+-/);

  const dashboard = await ok(['dashboard']);
  t.match(dashboard, /^System\s+testsys \(id 0123456789abcdef\)/);
  t.match(dashboard, /Objects\s+1 protection domain, 2 storage pools, 1 fault set, 3 SDSs, 3 devices, 2 SDCs, 2 volumes \(1 mapped\)/);
  t.match(dashboard, /Health\s+OK\n/);
  t.match(dashboard, /POOL\s+RAW\s+SPARE\s+USABLE\s+THICK\s+THIN\s+IN USE\s+SNAPSHOTS\s+PROTECTED\s+DEGRADED\s+FAILED\s+UNUSED\s+AVAILABLE/);
  t.match(dashboard, /pd1\/pool1\s+3 GiB\s+307\.2 MiB\s+1\.3 GiB\s+64 MiB\s+1\.1 GiB\s+0 B/);
  t.match(dashboard, /TOTAL\s+3 GiB/);
  const view = await json<RestDashboard>(['dashboard']);
  t.match(view, { health: { sdsConnected: 3, devicesNormal: 3 }, capacity: { numOfVolumes: 2 } }, 'dashboard --json parses');

  // A failed device shows at a glance.
  (Object.values(model.devices)[0] as { state: string; usedBytes: number }).state = 'failed';
  t.match(await ok(['dashboard']), /Health\s+ATTENTION: 1 device failed/);

  // And back to empty.
  t.match(await ok(['volume', 'unmap', '--volume', 'data1', '--sdc', 'host1']), /unmapped from SDC 'host1'/);
  t.match(await ok(['volume', 'unmap', '--volume', 'data1', '--sdc', 'web2']), /unmapped/);
  t.match(await ok(['volume', 'remove', '--volume', 'data1']), /^volume 'data1' removed\n$/);
  t.match(await ok(['volume', 'remove', '--volume', 'vol2']), /removed/);
  t.match(await ok(['sdc', 'remove', '--sdc', 'host1']), /SDC 'host1' removed/);
  t.match(await ok(['device', 'remove', '--device', 'd3']), /device 'd3' removed/);
  t.match(await ok(['sds', 'rename', '--sds', 'sds3', '--new-name', 'sds3b']), /renamed to 'sds3b'/);
  t.match(await ok(['sds', 'remove', '--sds', 'sds3b']), /SDS 'sds3b' removed/);
  t.match(await ok(['fault-set', 'remove', '--fault-set', 'rack1']), /fault set 'rack1' removed/);
  t.match(await ok(['pool', 'set-spare', '--pool', 'pool2', '--spare-percent', '20']), /spare set to 20%/);
  t.match(await ok(['pool', 'rename', '--pool', 'pool2', '--new-name', 'pool2b']), /renamed to 'pool2b'/);
  t.match(await ok(['pool', 'remove', '--pool', 'pool2b']), /storage pool 'pool2b' removed/);
  t.match(await ok(['pd', 'add', '--name', 'pd2']), /created/);
  t.match(await ok(['pd', 'rename', '--pd', 'pd2', '--new-name', 'pd3']), /renamed to 'pd3'/);
  t.match(await ok(['pd', 'remove', '--pd', 'pd3']), /protection domain 'pd3' removed/);
  t.same((await json<RestProtectionDomain[]>(['pd', 'list'])).map((pd) => pd.name), ['pd1']);
  t.same((await json<RestSds[]>(['sds', 'list'])).map((sds) => sds.name), ['sds1', 'sds2']);
  t.equal(api.auth.sessionCount, 0, 'every invocation logged out');
});

t.test('errors: one line, exit 2 for usage, exit 1 for what the API refused', async (t) => {
  const api = await startTestApi(t);
  const run = manageRunner(api);
  await run(['pd', 'add', '--name', 'pd1']);
  await run(['pd', 'add', '--name', 'pd2']);
  await run(['pool', 'add', '--pd', 'pd1', '--name', 'pool1', '--volume-granularity', '64MiB']);
  await run(['pool', 'add', '--pd', 'pd2', '--name', 'pool1']);
  for (const [index, name] of ['sds1', 'sds2'].entries()) api.controller.registerSds(name, 7200 + index);
  for (const name of ['sds1', 'sds2']) t.equal((await run(['sds', 'add', '--sds', name, '--pd', 'pd1'])).code, 0);
  // 'pool1' is in both protection domains: the SDS's own settles which.
  for (const name of ['sds1', 'sds2']) t.equal((await run(['device', 'add', '--sds', name, '--pool', 'pool1', '--path', '/dev/sdb'])).code, 0);
  const before = JSON.stringify(api.controller.state.model);

  // Usage: exit 2, before connecting.
  oneLine(t, await run(['volume', 'add', '--pool', 'pool1', '--name', 'v']), /Missing required argument: size/, 2, 'missing flag');
  oneLine(t, await run(['volume', 'add', '--pool', 'pool1', '--name', 'v', '--size', 'big']), /--size: not a size: 'big'/, 2, 'bad size');
  oneLine(t, await run(['volume', 'add', '--pool', 'pool1', '--name', 'v', '--size', '1000']), /--size: must be a whole number of KiB/, 2, 'size not in KiB');
  oneLine(t, await run(['volume', 'set-limits', '--volume', 'v', '--sdc', 's']), /--iops: give --iops, --bandwidth or both/, 2, 'no limit');
  oneLine(t, await run(['volume', 'set-limits', '--volume', 'v', '--sdc', 's', '--iops', '-5']), /--iops/, 2, 'negative iops');
  oneLine(t, await run(['pool', 'add', '--pd', 'pd1', '--name', 'p', '--spare-percent', '120']), /--spare-percent: must be a whole number from 0 to 100, got 120/, 2, 'spare out of range');
  oneLine(t, await run(['pool', 'add', '--pd', 'pd1', '--name', 'p', '--volume-granularity', '100K']), /--volume-granularity: must be a whole number of MiB/, 2, 'granularity');
  oneLine(t, await run(['device', 'add', '--sds', 'sds1', '--pool', 'pool1', '--path', 'sdb']), /--path: must be an absolute path/, 2, 'relative path');
  oneLine(t, await run(['volume', 'list', '--bogus']), /Unknown argument: bogus/, 2, 'unknown flag');
  oneLine(t, await run(['volume', 'explode']), /Unknown argument: explode/, 2, 'unknown verb');
  oneLine(t, await run(['volume'], { connection: false }), /volume: name a subcommand \(add, list, remove, resize, rename, map, unmap, set-limits, show\)/, 2, 'no verb');
  oneLine(t, await run([], { connection: false }), /name a command/, 2, 'no command');
  oneLine(t, await run(['pd', 'list', '--api', 'ftp://x']), /--api: must be https:\/\/HOST:PORT/, 2, 'bad --api');
  oneLine(t, await run(['pd', 'list', '--api', api.url], { connection: false }), /--password-file: give the API password/, 2, 'no password');
  oneLine(t, await run(['pd', 'list', '--insecure']), /--insecure: and --ca-cert contradict/, 2, '--insecure with --ca-cert');

  // The API refused: exit 1 with its message.
  oneLine(t, await run(['pd', 'add', '--name', 'pd1']), /^meshblock: a protection domain named 'pd1' already exists\n$/, 1, 'name taken');
  oneLine(t, await run(['pd', 'add', '--name', 'bad name']), /^meshblock: name: must be 1 to 31/, 1, 'bad name');
  oneLine(t, await run(['volume', 'add', '--pool', 'pool1', '--pd', 'pd1', '--name', 'big', '--size', '10GiB', '--thick']), /a 10 GiB thick volume does not fit/, 1, 'thick volume too big');
  oneLine(t, await run(['volume', 'remove', '--volume', 'ghost']), /--volume: no volume with id or name 'ghost'/, 1, 'unknown name');
  oneLine(t, await run(['pool', 'remove', '--pool', 'pool1']), /--pool: 2 storage pools are named 'pool1' \(ids [0-9a-f]{16}, [0-9a-f]{16}\); give the id or --pd/, 1, 'ambiguous name');
  oneLine(t, await run(['device', 'add', '--sds', 'sds1', '--pool', 'pool1', '--path', formattedDevicePath]), /holds an ext4 filesystem; add it with forceDeviceTakeover/, 1, 'formatted device');
  t.equal(JSON.stringify(api.controller.state.model), before, 'nothing changed');
  t.match((await run(['device', 'add', '--sds', 'sds1', '--pool', 'pool1', '--path', formattedDevicePath, '--force'])).stdout, /created/, '--force takes it');

  // Connection and login problems: exit 1.
  const wrongPassword = path.join(api.dir, 'wrong.txt');
  (await import('node:fs')).writeFileSync(wrongPassword, 'not the password\n');
  oneLine(t, await run(['pd', 'list', '--api', api.url, '--password-file', wrongPassword, '--ca-cert', api.certPath], { connection: false }), /^meshblock: wrong user name or password\n$/, 1, 'wrong password');
  oneLine(t, await run(['pd', 'list', '--api', api.url, '--password-file', api.passwordFile], { connection: false }), /cannot reach the MDM at https:\/\/127\.0\.0\.1:\d+: .*certificate.*pass the MDM's certificate with --ca-cert/, 1, 'untrusted certificate');
  oneLine(t, await run(['pd', 'list', '--api', 'https://127.0.0.1:1', '--password-file', api.passwordFile], { connection: false }), /cannot reach the MDM at https:\/\/127\.0\.0\.1:1: .*ECONNREFUSED.*is the MDM running/, 1, 'nothing listening');

  // --insecure works, with a warning; the environment gives the API and the password.
  const insecure = await run(['pd', 'list', '--api', api.url, '--password-file', api.passwordFile, '--insecure'], { connection: false });
  t.equal(insecure.code, 0);
  t.match(insecure.stderr, /warning: --insecure/);
  t.match(insecure.stdout, /pd1/);
  const fromEnv = await run(['pd', 'list', '--json'], { connection: false, env: { MESHBLOCK_API: api.url, MESHBLOCK_PASSWORD: 'correct horse battery staple', MESHBLOCK_CA_CERT: api.certPath } });
  t.equal(fromEnv.code, 0, fromEnv.stderr);
  t.equal((JSON.parse(fromEnv.stdout) as unknown[]).length, 2);
});

t.test('--help on every noun and verb', async (t) => {
  const api = await startTestApi(t);
  const run = manageRunner(api);
  for (const args of [['--help'], ['volume', '--help'], ['volume', 'add', '--help'], ['sds', 'add', '--help'], ['dashboard', '--help']]) {
    const result = await run(args, { connection: false });
    t.equal(result.code, 0, `${args.join(' ')} exits 0`);
    t.match(result.stdout, /meshblock/, `${args.join(' ')} prints usage`);
  }
  const add = await run(['volume', 'add', '--help'], { connection: false });
  for (const flag of ['--pool', '--name', '--size', '--thick', '--api', '--password-file', '--ca-cert', '--insecure']) t.match(add.stdout, flag, `volume add --help mentions ${flag}`);
});
