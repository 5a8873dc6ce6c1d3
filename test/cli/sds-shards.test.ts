// `meshblock sds start --shards N` (src/cli/sds-shards.ts, docs/cores.md): one SDS as N shard
// processes. With real processes, a real MDM and an SDC, through NBD with qemu-io:
//
// - a two-shard SDS on host label 'hosta' beside a one-process SDS on 'hostb': both shards
//   register (ha.1, ha.2, each with one of the two devices, on consecutive ports, with the
//   host label); the MDM never puts both copies of a group on the two shards of hosta, and
//   each shard holds copies;
// - data written through NBD reads back; a shard killed with SIGKILL is restarted by its
//   supervisor (a new pid, the same SDS id, back in the MDM) and the data still reads back;
// - SIGTERM to the supervisor stops every shard and it exits 0; a start with another shard
//   count is refused (exit 2, the data directory's count named); a shard failing before it
//   was ready stops the supervisor with exit 1 and the shard's error, leaving no process;
// - the supervisor killed with SIGKILL leaves no shard running.
// And the pure parts: --shards auto, the device assignment, a damaged shards.json.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { autoShardCount, parseShardCount, shardNameTooLong } from '../../src/common/sds-shards.js';
import { assignDevices, readShardsFile, resolveShardCount } from '../../src/cli/sds-shards.js';
import { sdsShardsMax } from '../../src/common/limits.js';
import { cli, startMdm, startSdc, until, type Mdm } from '../helpers/cluster.js';
import { sparseFile } from '../helpers/files.js';
import { placementMap } from '../helpers/snapshots.js';
import { meshblockBin, nodeCommand, run, runMeshblock, startMeshblock, type DaemonHandle } from '../helpers/processes.js';
import { MiB, connectWire, getStats, startSds } from '../helpers/sds.js';

const GiB = 1024 * MiB;

t.test('--shards auto takes half the cores, at most one shard per device named', async (t) => {
  t.equal(autoShardCount(1, null), 1);
  t.equal(autoShardCount(2, 4), 1);
  t.equal(autoShardCount(8, 0), 1, 'no device: one shard');
  t.equal(autoShardCount(40, null), 20, 'devices not known yet: by the cores');
  t.equal(autoShardCount(40, 6), 6);
  t.equal(autoShardCount(16, 12), 8);
  t.equal(autoShardCount(1000, null), sdsShardsMax);
  t.equal(parseShardCount('--shards', 'auto'), 'auto');
  t.equal(parseShardCount('--shards', '3'), 3);
  for (const bad of ['0', '-1', '1.5', 'two', String(sdsShardsMax + 1), '']) t.throws(() => parseShardCount('--shards', bad), { code: 'MB_ERR_INVALID_ARGUMENT' }, bad);
});

t.test('shard names must fit a name: NAME.N at most nameBytesMax', async (t) => {
  t.equal(shardNameTooLong('a'.repeat(29), 9), null, '29 characters and .9 fit');
  t.equal(shardNameTooLong('a'.repeat(29), 10), `${'a'.repeat(29)}.10`, 'and .10 does not: the name is returned');
});

t.test('--memory-budget below 1 MiB per process, alone or split over shards, is refused with exit 2', async (t) => {
  const dir = t.testdir({});
  const small = await runMeshblock(['sds', 'start', '--name', 'x', '--device', path.join(dir, 'd.img'), '--memory-budget', '512KiB', '--data-dir', path.join(dir, 'x')]);
  t.equal(small.code, 2, 'exit 2');
  t.match(small.stderr, /--memory-budget: must give each of 1 process\(es\) at least 1 MiB, not 512KiB/);
  const secret = path.join(dir, 'secret');
  fs.writeFileSync(secret, 'a test cluster secret, long enough\n');
  const split = await runMeshblock(['sds', 'start', '--name', 'y', '--shards', '2', '--device', path.join(dir, 'a.img'), '--device', path.join(dir, 'b.img'), '--memory-budget', '1MiB', '--cluster-id', '0123456789abcdef', '--secret-file', secret, '--data-dir', path.join(dir, 'y')]);
  t.equal(split.code, 2, 'exit 2');
  t.match(split.stderr, /--memory-budget: must give each of 2 process\(es\) at least 1 MiB, not 1MiB/);
  t.notOk(fs.existsSync(path.join(dir, 'y', 'shard-1')), 'no shard was started');
});

t.test('devices go round-robin at the first start and keep their shard; new ones go to the shard with the fewest', async (t) => {
  const first = assignDevices({ shards: 3, devices: {} }, ['/a', '/b', '/c', '/d']);
  t.same(first.devices, { '/a': 1, '/b': 2, '/c': 3, '/d': 1 });
  const again = assignDevices(first, ['/d', '/c', '/e']);
  t.same(again.devices, { '/a': 1, '/b': 2, '/c': 3, '/d': 1, '/e': 2 }, 'the old ones stay; /e goes to the first of the shards with one device');
});

t.test('shards.json: remembered, a changed count refused, a damaged file refused, a one-process SDS never split', async (t) => {
  const dir = t.testdir({
    fresh: {},
    two: { 'shards.json': JSON.stringify({ shards: 2, devices: { '/a': 1, '/b': 2 } }) },
    damaged: { 'shards.json': '{"shards": 2, "devices": {"/a": 3}}' },
    notJson: { 'shards.json': '{' },
  });
  t.equal(resolveShardCount(path.join(dir, 'fresh'), undefined, 2, false).shards, 1, 'one process unless asked');
  t.equal(resolveShardCount(path.join(dir, 'fresh'), 4, 2, false).shards, 4);
  t.throws(() => resolveShardCount(path.join(dir, 'fresh'), 2, 2, true), /one-process SDS/);
  t.equal(resolveShardCount(path.join(dir, 'two'), undefined, 0, false).shards, 2, 'the count is remembered');
  t.equal(resolveShardCount(path.join(dir, 'two'), 'auto', 9, false).shards, 2);
  t.throws(() => resolveShardCount(path.join(dir, 'two'), 3, 2, false), /holds an SDS of 2 shards/);
  t.throws(() => readShardsFile(path.join(dir, 'damaged')), { code: 'MB_ERR_STATE_DAMAGED', message: /shard 3/ });
  t.throws(() => readShardsFile(path.join(dir, 'notJson')), { code: 'MB_ERR_STATE_DAMAGED' });
});

const shardsReady = (name: string, count: number): RegExp => new RegExp(`^sds ${name.replace('.', '\\.')}: ${count} shards ready$`, 'm');

/** The pid in a shard's data directory lock (pid-lock.ts). */
function shardPid(dataDir: string, shard: number): number {
  return Number(fs.readFileSync(path.join(dataDir, `shard-${shard}`, 'sds.lock'), 'utf8').trim());
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function startSharded(t: Test, mdm: Mdm, dir: string, devices: string[], extra: string[] = []): Promise<DaemonHandle & { dataDir: string }> {
  const dataDir = path.join(dir, 'ha-data');
  const daemon = await startMeshblock(
    t,
    ['sds', 'start', '--name', 'ha', '--shards', '2', '--host', 'hosta', ...devices.flatMap((device) => ['--device', device]), '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--cluster-id', mdm.clusterId, '--secret-file', mdm.secretFile, '--mdm', mdm.address, ...extra],
    { ready: shardsReady('ha', 2) },
  );
  return { ...daemon, dataDir };
}

interface ListedSds {
  id: string;
  name: string;
  address: string;
  sdsState: string;
  lastHeartbeatTimeMs: number;
  hostLabel?: string | null;
}

t.test('a two-shard SDS beside a one-process SDS: registration, placement apart, IO, a shard restarted, stopping', async (t) => {
  const dir = t.testdir({});
  const mdm = await startMdm(t, dir);
  const meshblock = cli(mdm, dir);
  const must = async (args: string[]): Promise<string> => {
    const result = await meshblock(args);
    if (result.code !== 0) throw new Error(`meshblock ${args.join(' ')} failed: ${result.stderr}`);
    return result.stdout;
  };
  const haDevices = [sparseFile(dir, 'ha1.img', 2 * GiB), sparseFile(dir, 'ha2.img', 2 * GiB)];
  // 4 MiB of client IO for the SDS: 2 MiB per shard.
  const ha = await startSharded(t, mdm, dir, haDevices, ['--memory-budget', '4MiB']);
  // As large as each shard's device: without the host label, copies could pair the shards.
  const hb = await startSds(t, { dir, name: 'hb', devices: [sparseFile(dir, 'hb.img', 2 * GiB)], clusterId: mdm.clusterId, secretFile: mdm.secretFile, extraArgs: ['--mdm', mdm.address, '--host', 'hostb'] });
  const shardLines = [...ha.ready.input.matchAll(/^sds (ha\.\d) \(([0-9a-f]{16})\) of cluster [0-9a-f]{16} listening on (\S+) with (\d+) device/gm)];
  t.same(shardLines.map((line) => [line[1], line[4]]).sort(), [['ha.1', '1'], ['ha.2', '1']], 'each shard serves one of the two devices');
  const ports = shardLines.map((line) => Number((line[3] as string).split(':').pop()));
  t.ok(ports.every((port) => port > 0), 'port 0 stays 0 for every shard: each gets its own');
  t.same(JSON.parse(fs.readFileSync(path.join(ha.dataDir, 'shards.json'), 'utf8')), { shards: 2, devices: { [haDevices[0] as string]: 1, [haDevices[1] as string]: 2 } });

  const listed = await until('the three SDSs to register', async () => {
    const list = JSON.parse(await must(['sds', 'list', '--json'])) as ListedSds[];
    return list.length === 3 ? list : undefined;
  });
  t.same(listed.map((sds) => sds.name).sort(), ['ha.1', 'ha.2', 'hb']);
  const byName = new Map(listed.map((sds) => [sds.name, sds]));
  t.same(['ha.1', 'ha.2', 'hb'].map((name) => byName.get(name)?.hostLabel), ['hosta', 'hosta', 'hostb'], 'the MDM keeps each SDS host label');

  await must(['pd', 'add', '--name', 'pd1']);
  await must(['pool', 'add', '--pd', 'pd1', '--name', 'sp1', '--volume-granularity', '1GiB']);
  for (const name of ['ha.1', 'ha.2', 'hb']) await must(['sds', 'add', '--sds', name, '--pd', 'pd1']);
  await must(['device', 'add', '--sds', 'ha.1', '--pool', 'sp1', '--path', haDevices[0] as string]);
  await must(['device', 'add', '--sds', 'ha.2', '--pool', 'sp1', '--path', haDevices[1] as string]);
  await must(['device', 'add', '--sds', 'hb', '--pool', 'sp1', '--path', hb.devices[0] as string]);
  await must(['volume', 'add', '--pool', 'sp1', '--name', 'v1', '--size', String(GiB)]);
  const sdc = await startSdc(t, dir, mdm);
  await must(['volume', 'map', '--volume', 'v1', '--sdc', sdc.name]);

  const shardIds = new Set(['ha.1', 'ha.2'].map((name) => byName.get(name)?.id as string));
  const hbId = byName.get('hb')?.id as string;
  const map = await placementMap(t, { mdm } as Parameters<typeof placementMap>[1]);
  const groups = Object.values(map.pools).flatMap((pool) => pool.groups);
  t.ok(groups.length > 0, 'the pool has groups');
  const together = groups.filter((group) => group.secondary !== null && shardIds.has(group.primary) && shardIds.has(group.secondary));
  t.equal(together.length, 0, 'no group has both copies on the two shards of one host');
  t.ok(groups.every((group) => group.secondary !== null && (group.primary === hbId || group.secondary === hbId)), 'every group is mirrored, one copy on the other host');
  for (const id of shardIds) t.ok(groups.some((group) => group.primary === id || group.secondary === id), `shard ${id} holds copies`);

  const uri = `nbd://${sdc.nbdAddress}/v1`;
  await until('the SDC to export v1', async () => ((await run('nbdinfo', ['--list', '--json', `nbd://${sdc.nbdAddress}`])).stdout.includes('"v1"') ? true : undefined));
  const written = await run('qemu-io', ['-f', 'raw', uri, '-c', 'write -P 0x5a 0 64M', '-c', 'flush']);
  t.equal(written.code, 0, `qemu-io wrote 64 MiB over both shards and hb: ${written.stderr}`);
  const readBack = async (): Promise<number | null> => (await run('qemu-io', ['-f', 'raw', '-r', uri, '-c', 'read -P 0x5a 0 64M'])).code;
  t.equal(await readBack(), 0, 'and it reads back');
  // Each shard held its half of the budget at most, plus one request of its one client
  // connection (a 1 MiB chunk piece and its reply).
  const secret = fs.readFileSync(mdm.secretFile, 'utf8').trim();
  for (const line of shardLines) {
    const peer = await connectWire(t, line[3] as string, { clusterId: mdm.clusterId, secret });
    const memory = (await getStats(peer)).memory;
    peer.destroy();
    t.equal(memory?.budgetBytes, 2 * MiB, `${line[1]} has half the SDS's budget`);
    t.ok((memory?.peakBytes ?? 0) > 0 && (memory?.peakBytes ?? Infinity) <= 2 * MiB + 2 * MiB + 64 * 1024, `${line[1]} held ${memory?.peakBytes} bytes at most`);
  }

  // A shard dies: its supervisor starts it again, same identity, and the MDM sees it back.
  const oldPid = shardPid(ha.dataDir, 1);
  process.kill(oldPid, 'SIGKILL');
  const newPid = await until('ha.1 to be restarted', async () => {
    try {
      const pid = shardPid(ha.dataDir, 1);
      return pid !== oldPid && alive(pid) ? pid : undefined;
    } catch {
      return undefined;
    }
  });
  t.not(newPid, oldPid);
  t.match(ha.stderr(), /shard was killed by SIGKILL; restarting it/, 'the supervisor says why it restarts');
  const restartedAtMs = Date.now();
  await until('ha.1 back in the MDM', async () => {
    const list = JSON.parse(await must(['sds', 'list', '--json'])) as ListedSds[];
    const entry = list.find((sds) => sds.name === 'ha.1');
    return entry !== undefined && entry.id === byName.get('ha.1')?.id && entry.sdsState === 'Normal' && entry.lastHeartbeatTimeMs > restartedAtMs ? true : undefined;
  }, 30_000);
  t.equal(await readBack(), 0, 'the data reads back after the restart');

  // SIGTERM: every shard drains and stops, the supervisor exits 0.
  const pids = [shardPid(ha.dataDir, 1), shardPid(ha.dataDir, 2)];
  t.equal(await ha.stop(), 0, 'the supervisor exits 0');
  t.same(pids.map(alive), [false, false], 'no shard is left running');

  const changed = await runMeshblock(['sds', 'start', '--name', 'ha', '--shards', '3', '--device', haDevices[0] as string, '--listen', '127.0.0.1:0', '--data-dir', ha.dataDir, '--secret-file', mdm.secretFile]);
  t.equal(changed.code, 2, 'another shard count is refused');
  t.match(changed.stderr, /holds an SDS of 2 shards/);
});

t.test('a shard failing before it is ready stops the supervisor; a supervisor killed leaves no shard', async (t) => {
  const dir = t.testdir({});
  const mdm = await startMdm(t, dir);
  const good = sparseFile(dir, 'good.img', GiB);
  const failed = await runMeshblock(['sds', 'start', '--name', 'hx', '--shards', '2', '--device', good, '--device', path.join(dir, 'missing.img'), '--listen', '127.0.0.1:0', '--data-dir', path.join(dir, 'hx-data'), '--cluster-id', mdm.clusterId, '--secret-file', mdm.secretFile], { timeoutMs: 60_000 });
  t.equal(failed.code, 1, 'exit 1');
  t.match(failed.stderr, /missing\.img/, "the shard's error is shown");
  t.match(failed.stderr, /shard hx\.2 exited with code \d+ before it was ready/);
  const hxPids = [1, 2].flatMap((shard) => {
    try {
      return [shardPid(path.join(dir, 'hx-data'), shard)];
    } catch {
      return [];
    }
  });
  t.same(hxPids.filter(alive), [], 'no shard of it is left running');

  const ha = await startSharded(t, mdm, dir, [sparseFile(dir, 'a.img', GiB), sparseFile(dir, 'b.img', GiB)]);
  const pids = [shardPid(ha.dataDir, 1), shardPid(ha.dataDir, 2)];
  process.kill(ha.process.pid as number, 'SIGKILL');
  await ha.exited;
  await until('the shards to stop on their own', async () => (pids.some(alive) ? undefined : true), 30_000);
  t.pass('both shards stopped after their supervisor was killed');

  // Killed while its shards are still loading: the IPC channel closes before a shard listens
  // for it, which once left both running as orphans, serving, for good.
  const early = spawn(...nodeCommand([meshblockBin, 'sds', 'start', '--name', 'hy', '--shards', '2', '--device', sparseFile(dir, 'c.img', GiB), '--device', sparseFile(dir, 'd.img', GiB), '--listen', '127.0.0.1:0', '--metrics', 'off', '--data-dir', path.join(dir, 'hy-data'), '--cluster-id', mdm.clusterId, '--secret-file', mdm.secretFile]), { stdio: ['ignore', 'ignore', 'pipe'] });
  t.teardown(() => void early.kill('SIGKILL'));
  const earlyExited = once(early, 'exit');
  let earlyLog = '';
  const shardPids = await new Promise<number[]>((resolve, reject) => {
    early.stderr.setEncoding('utf8').on('data', (text: string) => {
      earlyLog += text;
      const started = [...earlyLog.matchAll(/"shard":"hy\.\d","pid":(\d+),"msg":"shard started"/g)].map((match) => Number(match[1]));
      if (started.length === 2) resolve(started);
    });
    void earlyExited.then(() => reject(new Error(`the supervisor exited before starting its shards:\n${earlyLog}`)));
  });
  early.kill('SIGKILL');
  await earlyExited;
  t.teardown(() => shardPids.filter(alive).forEach((pid) => process.kill(pid, 'SIGKILL')));
  await until('the shards of a supervisor killed at their start to stop', async () => (shardPids.some(alive) ? undefined : true), 30_000);
  t.pass('no shard is left when the supervisor is killed while they start');
});
