// Proves the CLI side of checksums at rest and the scrub against the real REST API over HTTPS
// (test/helpers/rest.ts; the SDSs' heartbeats are SdsStats the test sets by hand):
// - `pool set-scrub --mode off|device-only|data-comparison [--rate-kbps N]` reaches the pool
//   (ScaleIO's enable/disableBackgroundDeviceScanner), `pool show` prints the policy (a pool
//   never set says so), and every bad flag is one line naming it, refused before any request;
// - `dashboard` shows each pool's policy, each SDS's scrub (state, pass %, chunks) and
//   integrity counters, and every range bad on both copies with its volume and byte range
//   (health FAILED while there is one);
// - `lab status --json` gives each SDS entry `integrity` and `scrub` and the cluster's
//   `unrepairable` list (null and [] when the MDM cannot be asked), and its text shows them.

import t, { type Test } from 'tap';
import { collectStatus, renderStatus } from '../../src/cli/lab-status.js';
import { ApiClient } from '../../src/cli/manage-client.js';
import type { LabFile } from '../../src/cli/lab-state.js';
import type { RestDashboard } from '../../src/mdm/rest-objects.js';
import type { UnrepairableRange } from '../../src/wire/sds-ops.js';
import { MiB, populatedApi, type PopulatedApi } from '../helpers/rest.js';
import { manageRunner, oneLine, type ManageRunner } from '../helpers/manage.js';

async function setup(t: Test): Promise<PopulatedApi & { run: ManageRunner; ok: (args: string[]) => Promise<string> }> {
  const populated = await populatedApi(t);
  const run = manageRunner(populated.api);
  const ok = async (args: string[]): Promise<string> => {
    const result = await run(args);
    t.equal(result.code, 0, `${args.slice(0, 3).join(' ')} succeeds${result.stderr === '' ? '' : `: ${result.stderr}`}`);
    return result.stdout;
  };
  return { ...populated, run, ok };
}

t.test('pool set-scrub and pool show', async (t) => {
  const { api, ok, pool } = await setup(t);
  const scrub = (): unknown => api.controller.state.model.storagePools[pool]?.scrub;
  t.match(await ok(['pool', 'show', 'pool1']), /\n {2}scrub {17}DataComparison at 1 MiB\/s per device \(not set: the default\)\n?$/);

  const set = await ok(['pool', 'set-scrub', 'pool1', '--mode', 'device-only', '--rate-kbps', '2048']);
  t.match(set, /storage pool 'pool1' scrub set to device-only\n {2}scrub {17}DeviceOnly at 2 MiB\/s per device/);
  t.same(scrub(), { mode: 'deviceOnly', rateKBps: 2048 }, 'in the model');
  t.same(api.controller.state.placementMap().pools[pool]?.scrub, { mode: 'deviceOnly', rateKBps: 2048 }, 'and in the map');

  await ok(['pool', 'set-scrub', '--pool', 'pool1', '--pd', 'pd1', '--mode', 'off']);
  t.same(scrub(), { mode: 'off', rateKBps: 2048 }, 'off keeps the rate');
  t.match(await ok(['pool', 'show', 'pool1']), /scrub {17}Disabled \(rate kept: 2 MiB\/s per device\)/);
  await ok(['pool', 'set-scrub', 'pool1', '--mode', 'data-comparison']);
  t.same(scrub(), { mode: 'dataComparison', rateKBps: 2048 });
  await ok(['pool', 'set-scrub', 'pool1', '--mode', 'data-comparison', '--rate-kbps', '64']);
  t.same(scrub(), { mode: 'dataComparison', rateKBps: 64 }, 'the smallest rate');
  const json = JSON.parse(await ok(['pool', 'show', 'pool1', '--json'])) as Record<string, unknown>;
  t.match(json, { backgroundScannerMode: 'DataComparison', backgroundScannerBWLimitKBps: 64, backgroundScannerFromDefault: false }, '--json: the API object');
});

t.test('set-scrub bad flags: one line naming the flag, nothing sent, nothing changed', async (t) => {
  const { api, run } = await setup(t);
  const before = JSON.stringify(api.controller.state.model);
  const cases: Array<[string[], RegExp]> = [
    [[], /mode/],
    [['--mode', 'fast'], /mode/],
    [['--mode', 'deviceOnly'], /mode/],
    [['--mode', 'device-only', '--rate-kbps', '63'], /--rate-kbps.*64 to 1048576/],
    [['--mode', 'device-only', '--rate-kbps', '1048577'], /--rate-kbps/],
    [['--mode', 'device-only', '--rate-kbps', '1MiB'], /--rate-kbps/],
    [['--mode', 'device-only', '--rate-kbps', '-5'], /--rate-kbps/],
    [['--mode', 'off', '--rate-kbps', '1024'], /--rate-kbps: give it with device-only or data-comparison/],
  ];
  for (const [flags, pattern] of cases) oneLine(t, await run(['pool', 'set-scrub', 'pool1', ...flags]), pattern, 2, flags.join(' ') || 'no flags');
  const unknown = await run(['pool', 'set-scrub', 'nosuchpool', '--mode', 'off']);
  t.not(unknown.code, 0, 'an unknown pool is refused');
  t.match(unknown.stderr, /nosuchpool/);
  t.equal(JSON.stringify(api.controller.state.model), before, 'nothing changed');
});

/** sds1 scrubbing with findings and one range bad on both copies of vol1; sds2 paused; sds3 reports nothing. */
async function reporting(t: Test): Promise<Awaited<ReturnType<typeof setup>> & { range: UnrepairableRange }> {
  const context = await setup(t);
  const { api, ok, pool, sds } = context;
  await ok(['volume', 'add', '--pool', 'pool1', '--name', 'vol1', '--size', '1GiB']);
  const volume = Object.values(api.controller.state.model.volumes).find((entry) => entry.name === 'vol1');
  if (volume === undefined) throw new Error('vol1 missing');
  const range: UnrepairableRange = { poolId: pool, vtreeId: volume.vtreeId, generation: volume.generation, chunkIndex: 5, offsetBytes: 8192, lengthBytes: 4096, detectedAtMs: Date.UTC(2026, 11, 6, 23, 0, 0) };
  const base = { name: 'sds', epoch: 1, chunkBytes: MiB, reservedBytes: 0, rebuilds: [], devices: [] };
  api.controller.stats.set(sds[0] as string, {
    ...base,
    sdsId: sds[0] as string,
    integrity: { checksumErrors: 7, repairedBlocks: 6, unrepairableBlocks: 1, tornBlocksAccepted: 0, damagedEntries: 0, mismatchedBlocks: 2 },
    scrub: { state: 'running', mode: 'dataComparison', rateKBps: 1024, passesCompleted: 1, passStartedAtMs: 1, lastPassCompletedAtMs: 0, chunksScanned: 10, chunksTotal: 40, bytesScanned: 300 * MiB },
    unrepairable: [range],
  });
  api.controller.stats.set(sds[1] as string, {
    ...base,
    sdsId: sds[1] as string,
    integrity: { checksumErrors: 0, repairedBlocks: 0, unrepairableBlocks: 0, tornBlocksAccepted: 0, damagedEntries: 0, mismatchedBlocks: 0 },
    scrub: { state: 'paused', mode: 'dataComparison', rateKBps: 1024, passesCompleted: 0, passStartedAtMs: 1, lastPassCompletedAtMs: null, chunksScanned: 40, chunksTotal: 40, bytesScanned: 200 * MiB },
  });
  return { ...context, range };
}

t.test('dashboard: pool policies, per-SDS scrub and counters, unrepairable ranges', async (t) => {
  const { ok } = await reporting(t);
  const text = await ok(['dashboard']);
  t.match(text, /Health\s+FAILED: 1 range bad on both copies \(IO to it fails with EIO; listed below\)/);
  t.match(text, /\nScrub\s+pd1\/pool1: DataComparison at 1 MiB\/s per device\n/);
  t.match(text, /\nSDS\s+SCRUB\s+MODE\s+PASSES\s+SCANNED\s+CHECKSUM ERRORS\s+REPAIRED\s+MISMATCHED\s+UNREPAIRABLE\s+TORN\s+DAMAGED ENTRIES\n/);
  t.match(text, /\nsds1\s+running 25% \(10\/40 chunks\)\s+dataComparison\s+1\s+300 MiB\s+7\s+6\s+2\s+1\s+0\s+0\n/);
  t.match(text, /\nsds2\s+paused 100% \(40\/40 chunks\)\s+dataComparison\s+0\s+200 MiB\s+0\s+0\s+0\s+0\s+0\s+0\n/);
  t.match(text, /\nsds3\s+-\s+-\s+-\s+-\s+0\s+0\s+0\s+0\s+0\s+0\n/, 'an SDS that reported nothing');
  t.match(text, /\nUNREPAIRABLE \(both copies bad: IO to these ranges fails with EIO until they are rewritten\)\n {2}volume 'vol1' bytes 5251072\.\.5255168 \(4096 bytes\), detected 2026-12-06T23:00:00\.000Z by sds1\n/);
  const view = JSON.parse(await ok(['dashboard', '--json'])) as RestDashboard;
  t.match(view.integrity, { sds: [{ sdsName: 'sds1', scrubPassPercent: 25, integrity: { checksumErrors: 7 } }, { sdsName: 'sds2' }, { sdsName: 'sds3', scrub: null }], unrepairable: [{ volumeName: 'vol1', volumeOffsetBytes: 5 * MiB + 8192 }] });
  t.match(view.storagePools, [{ name: 'pool1', backgroundScannerMode: 'DataComparison', backgroundScannerBWLimitKBps: 1024 }]);
});

t.test('dashboard: nothing wrong, health OK', async (t) => {
  const { ok } = await setup(t);
  const text = await ok(['dashboard']);
  t.match(text, /Health\s+OK\n/);
  t.notMatch(text, /UNREPAIRABLE \(both copies bad/, 'no list of bad ranges');
});

t.test('lab status --json: each SDS entry has integrity and scrub; the cluster its unrepairable list', async (t) => {
  const { api } = await reporting(t);
  const processes = ['sds1', 'sds2', 'sds3', 'sds9'].map((name, index) => ({ role: 'sds' as const, name, pid: null, address: `127.0.0.1:${7072 + index}`, dataDir: '/x', logFile: '/x.log' }));
  const lab: LabFile = { formatVersion: 1, clusterId: '0123456789abcdef', apiUrl: api.url, caCert: api.certPath, passwordFile: api.passwordFile, secretFile: '', deviceSizeBytes: 0, volumes: [], processes: [{ role: 'mdm', name: 'mdm', pid: null, address: '127.0.0.1:7070', dataDir: '/x', logFile: '/x.log' }, ...processes] };
  const unreachable = await collectStatus('/lab', lab, null, 'connect ECONNREFUSED');
  t.match(unreachable.processes, [{ role: 'mdm' }, { name: 'sds1', integrity: null, scrub: null }, { name: 'sds2', integrity: null, scrub: null }, { name: 'sds3', integrity: null }, { name: 'sds9', integrity: null }], 'MDM not reachable: null');
  t.notOk('integrity' in (unreachable.processes[0] as object), 'not on the MDM entry');
  t.same(unreachable.unrepairable, []);

  const client = await ApiClient.connect({ api: api.url, dir: undefined, username: 'admin', 'password-file': api.passwordFile, 'ca-cert': api.certPath, insecure: false }, { stdout: { write: () => true }, stderr: { write: () => true }, env: {} });
  t.teardown(() => client.close());
  const status = JSON.parse(JSON.stringify(await collectStatus('/lab', lab, client, null))) as Awaited<ReturnType<typeof collectStatus>>;
  t.match(status.processes[1], { name: 'sds1', integrity: { checksumErrors: 7, repairedBlocks: 6, unrepairableBlocks: 1, mismatchedBlocks: 2 }, scrub: { state: 'running', chunksScanned: 10, chunksTotal: 40, passPercent: 25, bytesScanned: 300 * MiB } });
  t.match(status.processes[2], { name: 'sds2', scrub: { state: 'paused', passPercent: 100 } });
  t.match(status.processes[3], { name: 'sds3', integrity: { checksumErrors: 0 }, scrub: null }, 'an SDS that reports nothing: zeros, no scrub');
  t.match(status.processes[4], { name: 'sds9', integrity: null, scrub: null }, 'an SDS the MDM does not know');
  t.match(status.unrepairable, [{ reaches: 'volume', volumeName: 'vol1', volumeOffsetBytes: 5 * MiB + 8192, volumeEndBytes: 5 * MiB + 12288, lengthBytes: 4096 }]);

  const text = renderStatus(status);
  t.match(text, /\nscrub: sds1 running 25% \(10\/40 chunks\) \[checksum errors 7, repaired 6, mismatched 2, unrepairable 1, torn 0, damaged entries 0\]; sds2 paused 100% \(40\/40 chunks\); sds3 -\n/);
  t.match(text, /\nUNREPAIRABLE \(both copies bad: IO to these ranges fails with EIO until they are rewritten\):\n {2}volume 'vol1' bytes 5251072\.\.5255168 \(4096 bytes\), detected 2026-12-06T23:00:00\.000Z by /);
});
