// Proves the Prometheus metrics with the real tools (issue 19, docs/metrics.md): a lab
// (MDM, three SDSs, an SDC) is scraped every second by Debian's `prometheus`, started here
// with its own port, configuration and TSDB in the test directory and the repository's alert
// rules loaded; fio writes to a volume through the SDC's NBD server at a fixed rate
// (--rate_iops, so the rate does not depend on how busy this machine is), and the test asks
// Prometheus's HTTP API for the rate of the SDC's and the SDSs' write counters over the run,
// which must match fio's own IOPS and bandwidth (within a generous tolerance: scrapes and
// fio's start are not aligned), and for the change of the SDC's counter over the whole run,
// which must equal the writes fio made. `promtool check metrics` passes on the output of
// every endpoint, `promtool check rules` on deploy/prometheus/meshblock-alerts.yml, and the
// capacity by state sums to the raw capacity; the SDSs' devices show the write calls under
// those writes with a latency. Last, an SDS killed with SIGKILL raises the
// SDS-down and data-degraded alerts in Prometheus.

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { repoRoot, run, runMeshblock, freePort } from '../helpers/processes.js';

const promtool = '/usr/bin/promtool';
const prometheusBin = '/usr/bin/prometheus';
const fio = '/usr/bin/fio';
const missing = [promtool, prometheusBin, fio].filter((file) => !fs.existsSync(file));
const skip = missing.length > 0 ? `needs ${missing.join(', ')} (scripts/install-deps.sh)` : false;
const rulesFile = path.join(repoRoot, 'deploy/prometheus/meshblock-alerts.yml');
const labUpTimeoutMs = 120_000;
const fioRuntimeSeconds = 16;
const fioRateIops = 200;

interface PromResponse<T> {
  status: string;
  data: T;
  error?: string;
}

async function promGet<T>(base: string, pathAndQuery: string): Promise<T> {
  const response = await fetch(`${base}${pathAndQuery}`);
  const body = (await response.json()) as PromResponse<T>;
  if (body.status !== 'success') throw new Error(`prometheus ${pathAndQuery}: ${body.error ?? response.status}`);
  return body.data;
}

/** One instant query's samples as numbers (NaN when there is none). */
async function query(base: string, expr: string, atSeconds?: number): Promise<number[]> {
  const params = new URLSearchParams({ query: expr, ...(atSeconds === undefined ? {} : { time: String(atSeconds) }) });
  const data = await promGet<{ resultType: string; result: Array<{ value: [number, string] }> }>(base, `/api/v1/query?${params.toString()}`);
  return data.result.map((sample) => Number(sample.value[1]));
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(500);
  }
}

t.test('promtool check rules passes on the alert rules', { skip }, async (t) => {
  const result = await run(promtool, ['check', 'rules', rulesFile]);
  t.equal(result.code, 0, `promtool check rules: ${result.stdout}${result.stderr}`);
  t.match(result.stdout, /SUCCESS: 9 rules found/, 'all nine rules');
  const config = await run(promtool, ['check', 'config', path.join(repoRoot, 'deploy/prometheus/prometheus.yml')]);
  t.equal(config.code, 0, `promtool check config on the example configuration: ${config.stdout}${config.stderr}`);
});

t.test('Prometheus scrapes a lab while fio runs: the rates match fio', { skip }, async (t) => {
  const cleanup: { dir: string | null; prometheus: ChildProcess | null } = { dir: null, prometheus: null };
  t.teardown(async () => {
    const child = cleanup.prometheus;
    if (child !== null && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await Promise.race([once(child, 'exit'), sleep(10_000).then(() => child.kill('SIGKILL'))]);
    }
    if (cleanup.dir !== null && fs.existsSync(path.join(cleanup.dir, 'lab.json'))) await runMeshblock(['lab', 'down', '--dir', cleanup.dir], { timeoutMs: 60_000 });
  });
  const scratch = t.testdir();
  const dir = path.join(scratch, 'lab');
  cleanup.dir = dir;
  const nbdPort = await freePort();
  const up = await runMeshblock(['lab', 'up', '--detach', '--dir', dir, '--sds', '3', '--device-size', '1GiB', '--volume', 'vol1:1GiB', '--nbd-port', String(nbdPort)], { timeoutMs: labUpTimeoutMs });
  t.equal(up.code, 0, `lab up --detach${up.code === 0 ? '' : `: ${up.stderr.trim()}`}`);
  if (up.code !== 0) return;
  t.match(up.stderr, /started sdc1 .*, metrics at http:\/\/127\.0\.0\.1:\d+\/metrics/, 'lab up prints where each daemon serves its metrics');
  const statusRun = await runMeshblock(['lab', 'status', '--dir', dir, '--json']);
  const status = JSON.parse(statusRun.stdout) as { processes: Array<{ role: string; name: string; metricsUrl: string | null }> };
  const targets = new Map<string, string[]>();
  for (const entry of status.processes) {
    t.match(entry.metricsUrl, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/, `${entry.name} has a metricsUrl`);
    if (entry.metricsUrl === null) continue;
    targets.set(entry.role, [...(targets.get(entry.role) ?? []), new URL(entry.metricsUrl).host]);
  }

  // Prometheus: its own port and TSDB, a 1 s scrape, the repository's rules.
  const promPort = await freePort();
  const base = `http://127.0.0.1:${promPort}`;
  const configFile = path.join(scratch, 'prometheus.yml');
  const jobs = [...targets].map(([role, hosts]) => `  - job_name: meshblock-${role}\n    static_configs:\n      - targets: [${hosts.map((host) => `'${host}'`).join(', ')}]\n`).join('');
  fs.writeFileSync(configFile, `global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - '${rulesFile}'\nscrape_configs:\n${jobs}`);
  const promLog = fs.openSync(path.join(scratch, 'prometheus.log'), 'w');
  const prometheus = spawn(prometheusBin, [`--config.file=${configFile}`, `--storage.tsdb.path=${path.join(scratch, 'tsdb')}`, `--web.listen-address=127.0.0.1:${promPort}`, '--log.level=warn'], { stdio: ['ignore', promLog, promLog] });
  fs.closeSync(promLog);
  cleanup.prometheus = prometheus;
  await waitFor('prometheus ready', async () => (await fetch(`${base}/-/ready`)).status === 200, 60_000);
  const targetCount = [...targets.values()].flat().length;
  await waitFor('every target scraped and up', async () => {
    const data = await promGet<{ activeTargets: Array<{ health: string }> }>(base, '/api/v1/targets');
    return data.activeTargets.length === targetCount && data.activeTargets.every((target) => target.health === 'up');
  }, 60_000);
  const rules = await promGet<{ groups: Array<{ rules: Array<{ name: string; health: string }> }> }>(base, '/api/v1/rules');
  const loaded = rules.groups.flatMap((group) => group.rules);
  t.equal(loaded.length, 9, 'Prometheus loaded the nine alert rules');
  t.ok(loaded.every((rule) => rule.health !== 'err'), 'and evaluates them without error');

  // fio at a fixed rate, so that the rate to compare is fio's, not the machine's.
  const writes = 'meshblock_sdc_volume_requests_total{job="meshblock-sdc",volume="vol1",op="write"}';
  await sleep(2_000);
  const startSeconds = Date.now() / 1000;
  const fioRun = await run(fio, ['--name=metrics', '--ioengine=nbd', `--uri=nbd://127.0.0.1:${nbdPort}/vol1`, '--rw=randwrite', '--bs=4k', '--size=256m', '--iodepth=4', `--rate_iops=${fioRateIops}`, '--time_based', `--runtime=${fioRuntimeSeconds}`, '--output-format=json'], { timeoutMs: 120_000 });
  const endSeconds = Date.now() / 1000;
  t.equal(fioRun.code, 0, `fio ran${fioRun.code === 0 ? '' : `: ${fioRun.stderr}`}`);
  if (fioRun.code !== 0) return;
  const job = (JSON.parse(fioRun.stdout.slice(fioRun.stdout.indexOf('{'))) as { jobs: Array<{ write: { iops: number; bw_bytes: number; total_ios: number } }> }).jobs[0];
  if (job === undefined) throw new Error('fio printed no job');
  t.ok(job.write.total_ios > 0, `fio wrote ${job.write.total_ios} blocks at ${job.write.iops.toFixed(1)} IOPS`);
  // Two scrapes after the end, so the last counters are in.
  await sleep(3_000);

  // The rate over the middle of the run: every write of fio goes through the SDC once, and
  // to one primary SDS once (4 KiB never spans chunks), and that SDS mirrors it once.
  const middle = (startSeconds + endSeconds) / 2;
  const windowSeconds = Math.floor(fioRuntimeSeconds / 2);
  const near = (actual: number | undefined, expected: number, what: string): void => {
    t.ok(actual !== undefined && Math.abs(actual - expected) <= 0.25 * expected, `${what}: ${actual?.toFixed(1) ?? 'no sample'} vs fio's ${expected.toFixed(1)} (within 25%)`);
  };
  const [sdcRate] = await query(base, `rate(${writes}[${windowSeconds}s])`, middle + windowSeconds / 2);
  near(sdcRate, job.write.iops, 'the SDC\'s write rate in Prometheus');
  const [sdcBytesRate] = await query(base, `rate(meshblock_sdc_volume_bytes_total{job="meshblock-sdc",volume="vol1",op="write"}[${windowSeconds}s])`, middle + windowSeconds / 2);
  near(sdcBytesRate, job.write.bw_bytes, 'the SDC\'s write bandwidth');
  const [sdsRate] = await query(base, `sum(rate(meshblock_sds_requests_total{op="write"}[${windowSeconds}s]))`, middle + windowSeconds / 2);
  near(sdsRate, job.write.iops, 'the SDSs\' primary write rate');
  const [mirrorRate] = await query(base, `sum(rate(meshblock_sds_requests_total{op="mirror_write"}[${windowSeconds}s]))`, middle + windowSeconds / 2);
  near(mirrorRate, job.write.iops, 'the SDSs\' mirror write rate');
  // Below the chunk stores: each write an SDS stores is at least one call on a device
  // (its data; slot entries, checksum areas and syncs come on top), timed per device.
  const [deviceWriteRate] = await query(base, `sum(rate(meshblock_sds_device_io_requests_total{op="write"}[${windowSeconds}s]))`, middle + windowSeconds / 2);
  t.ok(deviceWriteRate !== undefined && deviceWriteRate >= 0.75 * 2 * job.write.iops, `the devices' write calls (${deviceWriteRate?.toFixed(1) ?? 'no sample'}/s) cover the primary and mirror writes (2 x ${job.write.iops.toFixed(1)}/s, 25% slack)`);
  const [deviceP50] = await query(base, `histogram_quantile(0.5, sum by (le) (rate(meshblock_sds_device_io_request_duration_seconds_bucket{op="write"}[${windowSeconds}s])))`, middle + windowSeconds / 2);
  t.ok(deviceP50 !== undefined && deviceP50 > 0 && deviceP50 < 10, `the devices' median write latency is a number of seconds (${deviceP50})`);
  // Over the whole run (counters flat before and after): exactly fio's writes.
  const [before] = await query(base, writes, startSeconds - 1);
  const [after] = await query(base, writes, Date.now() / 1000);
  t.equal((after ?? NaN) - (before ?? NaN), job.write.total_ios, 'the SDC counted every write fio made, once');
  const [p50] = await query(base, `histogram_quantile(0.5, rate(meshblock_sdc_volume_request_duration_seconds_bucket{volume="vol1",op="write"}[${windowSeconds}s]))`, middle + windowSeconds / 2);
  t.ok(p50 !== undefined && p50 > 0 && p50 < 10, `the median write latency is a number of seconds (${p50})`);

  // Capacity by state sums to raw; the system's families come from the MDM.
  const [capacitySum] = await query(base, 'sum(meshblock_capacity_bytes)');
  const [raw] = await query(base, 'sum(meshblock_pool_raw_bytes)');
  t.ok(raw !== undefined && raw > 0 && capacitySum === raw, `capacity by state sums to raw (${capacitySum} = ${raw})`);
  t.same(await query(base, 'meshblock_mdm_is_master'), [1], 'the lab\'s MDM is Master');
  t.same(await query(base, 'sum(meshblock_cluster_sds_down)'), [0], 'no SDS down');
  t.same(await query(base, 'count(ALERTS{alertstate="firing"})'), [], 'no alert fires on a healthy lab');

  // promtool's lint on every endpoint's output, now that the histograms have samples.
  for (const [role, hosts] of targets) {
    for (const host of hosts) {
      const text = await (await fetch(`http://${host}/metrics`)).text();
      t.match(text, /^meshblock_/m, `${role} ${host} serves meshblock metrics`);
      const checked = await run(promtool, ['check', 'metrics'], { input: text });
      t.equal(checked.code, 0, `promtool check metrics on ${role} ${host}${checked.code === 0 ? '' : `: ${checked.stdout}${checked.stderr}`}`);
    }
  }

  // The alerts on real data: an SDS killed with SIGKILL is declared down by the MDM within
  // seconds (--sds-down-after, 3 s by default), and MeshblockSdsDown and MeshblockDataDegraded
  // are raised (pending: they fire after their `for`, which the test does not wait for).
  const running = JSON.parse((await runMeshblock(['lab', 'status', '--dir', dir, '--json'])).stdout) as { processes: Array<{ name: string; pid: number | null }> };
  const victimPid = running.processes.find((entry) => entry.name === 'sds3')?.pid;
  if (typeof victimPid !== 'number') {
    t.fail('sds3 is not running');
    return;
  }
  process.kill(victimPid, 'SIGKILL');
  for (const [alert, selector] of [['MeshblockSdsDown', ',sds="sds3"'], ['MeshblockDataDegraded', '']] as const) {
    await waitFor(`${alert} raised`, async () => (await query(base, `ALERTS{alertname="${alert}"${selector}}`)).length > 0, 60_000).then(
      () => t.pass(`${alert} is raised after the kill`),
      (err: unknown) => t.fail(String(err)),
    );
  }
  t.same(await query(base, 'meshblock_cluster_sds_down{sds="sds3"}'), [1], 'the MDM reports sds3 down');
});
