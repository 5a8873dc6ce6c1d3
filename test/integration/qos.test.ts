// QoS end to end (issue 17, docs/qos.md): an MDM, three SDSs and an SDC (real processes), the
// limits set through the management CLI and the REST API, and real fio (its nbd engine) at
// depth 64 measuring what the SDC lets through, second by second. It proves:
// - an IOPS limit of 2,000 holds within ±5% over each 10 s window; a bandwidth limit of
//   10 MiB/s with 64 KiB requests too; a burst lets an idle volume run at the burst rate for
//   about burst-seconds, then the limit holds;
// - live changes: raising, lowering and removing a limit while fio runs take hold within a
//   second or two;
// - a noisy neighbour: a volume limited and at full load does not pull the other volume's
//   IOPS much below what it gets while the limited one is idle (phases interleaved);
// - the limits and what they held back are visible (REST mappedSdcInfo, the SDC's statistics
//   through the MDM, the dashboard);
// - bad input (5 IOPS, 1000 KB/s, negative, not a number, an SDC the volume is not mapped
//   to) is refused with an error naming the field, and changes nothing;
// - limits survive an SDC restart, an MDM restart and the failover of an SDS.
// Rates are checked against the limits the test sets, never against this machine's speed,
// except that the unlimited rate must be above a limit the test just lifted.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { startCluster, startMdm, startSdc, until, type Cluster } from '../helpers/cluster.js';
import { expectClean, fioVerify } from '../helpers/fault-load.js';
import { fioSeconds, windowRate, within, type FioLoad } from '../helpers/qos.js';
import { MiB } from '../helpers/sds.js';
import { Api, codeOf, must } from '../helpers/snapshots.js';

const GiB = 1024 * MiB;
const regionBytes = 64 * MiB;

interface MappedSdcInfo {
  sdcId: string;
  limitIops: number;
  limitBwInMbps: number;
  limitBwInKbps: number;
  qosThrottledRequests?: number;
}

async function mappingOf(api: Api, volume: string): Promise<MappedSdcInfo | undefined> {
  const found = (await api.volume(volume)) as unknown as { mappedSdcInfo: MappedSdcInfo[] | null };
  return found.mappedSdcInfo?.[0];
}

async function setLimits(cluster: Cluster, volume: string, flags: string[]): Promise<void> {
  await must(cluster, ['volume', 'set-limits', '--volume', volume, '--sdc', cluster.sdc.name, ...flags]);
}

function load(cluster: Cluster, scratch: string, volume: string, label: string, options: Partial<FioLoad> = {}): FioLoad {
  return { uri: cluster.uri(volume), rw: 'randread', bs: '4k', iodepth: 64, runtimeS: 12, sizeBytes: regionBytes, dir: scratch, label, ...options };
}

function rates(values: readonly number[]): string {
  return values.map((value) => value.toFixed(0)).join(' ');
}

t.test('QoS limits enforced by the SDC, live, visible, and kept across restarts and failover', async (t) => {
  // A scratch directory of our own: tap removes testdir before teardowns run.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshblock-qos-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const scratch = path.join(dir, 'fio');
  fs.mkdirSync(scratch);
  const cluster = await startCluster(t, dir, {
    sdsCount: 3,
    deviceBytes: 2 * GiB,
    volumes: [
      { name: 'qa', sizeBytes: GiB },
      { name: 'qb', sizeBytes: GiB },
    ],
  });
  const api = await Api.login(cluster.mdm);
  // Reads of data, not of holes: every read goes to an SDS.
  for (const volume of ['qa', 'qb']) expectClean(t, await fioVerify(cluster.uri(volume), { sizeBytes: regionBytes, loops: 1, bs: '1M' }).done, `writing ${volume}`);

  await t.test('an IOPS limit of 2,000 holds within 5% over each 10 s window, at depth 64', async (t) => {
    await setLimits(cluster, 'qa', ['--iops', '2000']);
    t.equal((await mappingOf(api, 'qa'))?.limitIops, 2000, 'REST mappedSdcInfo shows limitIops');
    const run = await fioSeconds(load(cluster, scratch, 'qa', 'iops', { runtimeS: 22 }));
    t.equal(run.code, 0, 'fio ran clean');
    t.comment(`IOPS per second: ${rates(run.ios)}`);
    for (const from of [1, 11]) {
      const rate = windowRate(run.ios, from, 10);
      t.ok(within(rate, 2000, 0.05), `seconds ${from}-${from + 10}: ${rate?.toFixed(0)} IOPS`);
    }
  });

  await t.test('a bandwidth limit of 10 MiB/s holds within 5% with 64 KiB requests', async (t) => {
    await setLimits(cluster, 'qa', ['--iops', '0', '--bandwidth', '10MiB']);
    const mapping = await mappingOf(api, 'qa');
    t.same([mapping?.limitIops, mapping?.limitBwInMbps, mapping?.limitBwInKbps], [0, 10, 10240], 'REST shows 0 IOPS (unlimited) and 10 MB/s');
    const run = await fioSeconds(load(cluster, scratch, 'qa', 'bw', { bs: '64k', runtimeS: 22 }));
    t.equal(run.code, 0, 'fio ran clean');
    t.comment(`KiB/s per second: ${rates(run.kib)}`);
    for (const from of [1, 11]) {
      const rate = windowRate(run.kib, from, 10);
      t.ok(within(rate, 10240, 0.05), `seconds ${from}-${from + 10}: ${rate?.toFixed(0)} KiB/s`);
    }
  });

  await t.test('a burst lets an idle volume run at the burst rate, then the limit holds', async (t) => {
    // 500 IOPS, bursting at 2,000 for 3 s: 6,000 saved, spent at a net 1,500/s: ~4 s of burst.
    await setLimits(cluster, 'qa', ['--bandwidth', '0', '--iops', '500', '--iops-burst', '2000', '--burst-seconds', '3']);
    await new Promise((resolve) => setTimeout(resolve, 13_000)); // idle: the bucket fills (6,000 at 500/s)
    const run = await fioSeconds(load(cluster, scratch, 'qa', 'burst', { runtimeS: 18 }));
    t.equal(run.code, 0, 'fio ran clean');
    t.comment(`IOPS per second: ${rates(run.ios)}`);
    const first = windowRate(run.ios, 0, 3);
    t.ok(within(first, 2000, 0.1), `the first 3 s at the burst rate: ${first?.toFixed(0)} IOPS`);
    const settled = windowRate(run.ios, 7, 10);
    t.ok(within(settled, 500, 0.05), `then the limit: seconds 7-17 at ${settled?.toFixed(0)} IOPS`);
    await setLimits(cluster, 'qa', ['--iops', '0', '--iops-burst', '0', '--burst-seconds', '0']);
  });

  await t.test('raised, lowered and removed while fio runs: each new rate holds within a second', async (t) => {
    await setLimits(cluster, 'qa', ['--iops', '1000']);
    // Through REST (what the CLI calls), to know to a few milliseconds when each change was made.
    const id = (await api.volume('qa')).id;
    const sdcId = (await mappingOf(api, 'qa'))?.sdcId ?? '';
    const fioStartedMs = Date.now();
    const running = fioSeconds(load(cluster, scratch, 'qa', 'live', { runtimeS: 32 }));
    const steps: Array<{ atS: number; iops: number; madeS?: number }> = [{ atS: 8, iops: 3000 }, { atS: 16, iops: 500 }, { atS: 24, iops: 0 }];
    for (const step of steps) {
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, fioStartedMs + step.atS * 1000 - Date.now())));
      const reply = await api.post(`/api/instances/Volume::${id}/action/setMappedSdcLimits`, { sdcId, iopsLimit: String(step.iops) });
      t.equal(reply.status, 200, `set ${step.iops} IOPS: ${reply.text.slice(0, 200)}`);
      step.madeS = (Date.now() - fioStartedMs) / 1000;
    }
    const run = await running;
    t.equal(run.code, 0, 'fio ran clean (no request failed while the limit changed)');
    t.comment(`IOPS per second: ${rates(run.ios)}; changes made at ${steps.map((step) => `${step.madeS?.toFixed(2)} s`).join(', ')}`);
    // fio's seconds count from its job start, a little after it was spawned: a change made at
    // M s is in force from second ceil(M) + 1 on if it applies within a second.
    const from = (step: { madeS?: number }): number => Math.ceil(step.madeS ?? 0) + 1;
    const before = windowRate(run.ios, 1, 6);
    t.ok(within(before, 1000, 0.05), `1,000 IOPS: ${before?.toFixed(0)}`);
    const [raised, lowered, removed] = steps as [(typeof steps)[0], (typeof steps)[0], (typeof steps)[0]];
    const raisedRate = windowRate(run.ios, from(raised), 5);
    t.ok(within(raisedRate, 3000, 0.05), `raised to 3,000: ${raisedRate?.toFixed(0)} from second ${from(raised)}`);
    const loweredRate = windowRate(run.ios, from(lowered), 5);
    t.ok(within(loweredRate, 500, 0.05), `lowered to 500: ${loweredRate?.toFixed(0)} from second ${from(lowered)}`);
    const free = windowRate(run.ios, from(removed), 5);
    t.ok(free !== undefined && free > 1000, `removed: ${free?.toFixed(0)} IOPS from second ${from(removed)}, well above the 500 just lifted`);
  });

  await t.test('a noisy neighbour limited at full load leaves the other volume its IOPS', async (t) => {
    await setLimits(cluster, 'qa', ['--iops', '1000']);
    // qb reads unlimited at depth 8 throughout; qa is idle and at full load by turns (three
    // times each), so that drift on this machine hits both sides alike. Each second of qb is
    // counted as loaded or idle by when qa's runs really were (with a second's margin), and
    // the medians compared: another test's burst on this shared machine moves a second or
    // two, not the median.
    const victimStartedMs = Date.now();
    const victim = fioSeconds(load(cluster, scratch, 'qb', 'victim', { iodepth: 8, runtimeS: 26 }));
    const noisy: Array<[fromS: number, toS: number]> = [];
    for (let turn = 0; turn < 3; turn++) {
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, victimStartedMs + (5 + turn * 8) * 1000 - Date.now())));
      const fromS = (Date.now() - victimStartedMs) / 1000;
      const noise = await fioSeconds(load(cluster, scratch, 'qa', `noise${turn}`, { runtimeS: 4 }));
      noisy.push([fromS, (Date.now() - victimStartedMs) / 1000]);
      t.equal(noise.code, 0, `the limited volume ran clean (turn ${turn + 1})`);
    }
    const run = await victim;
    t.equal(run.code, 0, 'the other volume ran clean');
    t.comment(`other volume IOPS per second: ${rates(run.ios)}; the limited one ran at ${noisy.map(([from, to]) => `${from.toFixed(1)}-${to.toFixed(1)} s`).join(', ')}`);
    // fio's second k covers [k + 1, k + 2) s after its spawn, give or take its start-up.
    const loadedSeconds: number[] = [];
    const idleSeconds: number[] = [];
    run.ios.forEach((value, second) => {
      const [startS, endS] = [second + 1, second + 2];
      if (second === 0 || endS > 26) return;
      if (noisy.some(([from, to]) => startS >= from + 1 && endS <= to)) loadedSeconds.push(value);
      else if (noisy.every(([from, to]) => endS <= from - 0.5 || startS >= to + 1)) idleSeconds.push(value);
    });
    const median = (values: number[]): number => [...values].sort((x, y) => x - y)[Math.floor(values.length / 2)] ?? 0;
    const idle = median(idleSeconds);
    const loaded = median(loadedSeconds);
    t.ok(idleSeconds.length >= 3 && loadedSeconds.length >= 3, `seconds counted: ${idleSeconds.length} idle, ${loadedSeconds.length} loaded`);
    t.ok(idle > 0, `the other volume did IO (median ${idle.toFixed(0)} IOPS beside an idle neighbour)`);
    // The bound is for a 2-core machine that tap shares with another test file: the
    // neighbour's 1,000 IOPS are real IO that costs CPU here (measured medians 84% of the idle
    // rate in one CI run, 65% in another where the parallel job was heavy). An unenforced
    // limit would leave this depth-8 volume about 8/72 of the IO beside the neighbour's depth
    // 64, far below the bound: the check still fails for that.
    t.ok(loaded >= idle * 0.55, `beside the limited neighbour at full load: median ${loaded.toFixed(0)} IOPS (at least 55% of ${idle.toFixed(0)})`);
    await setLimits(cluster, 'qa', ['--iops', '0']);
  });

  await t.test('what the limits held back is visible: REST, the SDC statistics, the dashboard', async (t) => {
    const sdcs = (await api.get('/api/types/Sdc/instances')).body as Array<{ id: string; name: string }>;
    const sdc = sdcs.find((entry) => entry.name === cluster.sdc.name);
    t.ok(sdc !== undefined, 'the SDC is listed');
    const stats = await until('the SDC to report throttled requests', async () => {
      const reply = await api.get(`/api/instances/Sdc::${sdc?.id ?? ''}/relationships/Statistics`);
      const text = reply.text;
      return reply.status === 200 && /"throttledRequests":[1-9]/.test(text) ? text : undefined;
    });
    t.match(stats, /"volumeId"/, `SDC statistics per volume: ${stats.slice(0, 300)}`);
    const mapping = await mappingOf(api, 'qa');
    t.ok((mapping?.qosThrottledRequests ?? 0) > 0, `mappedSdcInfo counts throttled requests (${mapping?.qosThrottledRequests})`);
    await setLimits(cluster, 'qa', ['--iops', '2000']);
    const dashboard = (await must(cluster, ['dashboard', '--json'])).stdout;
    t.match(dashboard, /"qos"/, 'the dashboard lists the limited mappings');
    const shown = (await must(cluster, ['volume', 'show', '--volume', 'qa'])).stdout;
    t.match(shown, /^sdc1\s+rw\s+2000\s/m, `volume show prints the limit: ${shown.trim().split('\n').slice(0, 6).join(' | ')}`);
  });

  await t.test('bad input is refused with the field named, and changes nothing', async (t) => {
    const before = JSON.stringify(await mappingOf(api, 'qa'));
    const cases: Array<[flags: string[], field: RegExp]> = [
      [['--iops', '5'], /iops/i],
      [['--bandwidth', '1000KiB'], /bandwidth/i],
      [['--iops', '-1'], /iops/i],
      [['--iops', 'abc'], /iops/i],
      [['--bandwidth', 'lots'], /bandwidth/i],
    ];
    for (const [flags, field] of cases) {
      const result = await cluster.meshblock(['volume', 'set-limits', '--volume', 'qa', '--sdc', cluster.sdc.name, ...flags]);
      t.not(result.code, 0, `set-limits ${flags.join(' ')} is refused`);
      t.match(result.stderr, field, `and says which: ${result.stderr.trim().split('\n')[0]}`);
    }
    const id = (await api.volume('qa')).id;
    const sdcId = (await mappingOf(api, 'qa'))?.sdcId ?? '';
    const restCases: Array<[body: Record<string, unknown>, field: string]> = [
      [{ sdcId, iopsLimit: '5' }, 'iopsLimit'],
      [{ sdcId, bandwidthLimitInKbps: '1000' }, 'bandwidthLimitInKbps'],
      [{ sdcId, iopsLimit: '-3' }, 'iopsLimit'],
      [{ sdcId, iopsLimit: 'twelve' }, 'iopsLimit'],
    ];
    for (const [body, field] of restCases) {
      const reply = await api.post(`/api/instances/Volume::${id}/action/setMappedSdcLimits`, body);
      t.equal(reply.status, 400, `REST ${JSON.stringify(body)}: 400 (${codeOf(reply)})`);
      t.match(reply.text, field, `naming ${field}`);
    }
    // qb is mapped to the SDC; an SDC id the volume is not mapped to: a made-up one.
    const unmapped = await api.post(`/api/instances/Volume::${id}/action/setMappedSdcLimits`, { sdcId: '0123456789abcdef', iopsLimit: '100' });
    t.ok(unmapped.status === 404 || unmapped.status === 400, `an SDC the volume is not mapped to: ${unmapped.status} ${codeOf(unmapped)}`);
    t.equal(JSON.stringify(await mappingOf(api, 'qa')), before, 'nothing changed');
  });

  await t.test('limits survive an SDC restart, an MDM restart and an SDS failover', async (t) => {
    await setLimits(cluster, 'qa', ['--iops', '2000']);
    const measure = async (label: string): Promise<void> => {
      const run = await fioSeconds(load(cluster, scratch, 'qa', label, { runtimeS: 8 }));
      t.equal(run.code, 0, `${label}: fio ran clean`);
      const rate = windowRate(run.ios, 2, 5);
      t.ok(within(rate, 2000, 0.05), `${label}: ${rate?.toFixed(0)} IOPS (per second: ${rates(run.ios)})`);
    };
    await cluster.sdc.kill();
    cluster.sdc = await startSdc(t, dir, cluster.mdm, cluster.sdc.name, cluster.sdc.nbdAddress);
    await until('the restarted SDC to export qa', async () => ((await cluster.meshblock(['volume', 'list', '--json'])).code === 0 ? true : undefined));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await measure('after an SDC restart');

    const apiPort = new URL(cluster.mdm.apiUrl).port;
    await cluster.mdm.kill();
    cluster.mdm = await startMdm(t, dir, { listen: cluster.mdm.address, api: `127.0.0.1:${apiPort}` });
    const restarted = await Api.login(cluster.mdm);
    t.equal((await mappingOf(restarted, 'qa'))?.limitIops, 2000, 'the restarted MDM has the limit');
    await measure('after an MDM restart');

    await (cluster.sds[2] as { kill(): Promise<void> }).kill();
    await measure('with an SDS killed (its groups failed over)');
  });
});
