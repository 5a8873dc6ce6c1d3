// Proves the metrics plumbing without a cluster (common/metrics.ts, mdm/metrics.ts): an
// IoCounter puts each latency in the right bucket and Prometheus gets them cumulative, and
// counts untimed successes (--metrics off) without putting them in the histogram;
// the text a MetricsRegistry renders (counters and gauges refilled at scrape, histograms
// read from IoCounters) passes Debian's `promtool check metrics`; the endpoint serves GET
// /metrics on a real socket and refuses other paths and methods; a default port that is
// taken is skipped with a warning while an address asked for fails; --metrics values are
// checked; and the capacity partition sums to raw whatever the pool's numbers.

import * as fs from 'node:fs';
import pino from 'pino';
import t from 'tap';
import { IoCounter, IoStats, MetricsEndpoint, MetricsRegistry, latencyBucketsSeconds, metricsAddressOf, metricsPortDefaults, parseMetricsAddress } from '../../src/common/metrics.js';
import { capacityByState, capacityStates } from '../../src/mdm/metrics.js';
import type { PoolCapacity } from '../../src/mdm/state-machine.js';
import { run, freePort } from '../helpers/processes.js';
import { mulberry32 } from '../../src/common/seeded-random.js';

const promtool = '/usr/bin/promtool';
const log = pino({ level: 'silent' });

t.test('IoCounter: buckets, sum, errors', async (t) => {
  const counter = new IoCounter();
  counter.done(4096, 0.03); // 30 µs: the first bucket
  counter.done(4096, 1); // 1 ms: exactly a bound goes in that bucket
  counter.done(8192, 60_000); // a minute: past the last bound, only in +Inf
  counter.failed();
  t.equal(counter.count, 3);
  t.equal(counter.bytes, 16384);
  t.equal(counter.errors, 1, 'a failure is counted apart');
  t.ok(Math.abs(counter.sumSeconds - 60.00103) < 1e-9, 'the sum is in seconds');
  const cumulative = counter.cumulativeBuckets();
  t.equal(cumulative.length, latencyBucketsSeconds.length + 1, 'one per bound and +Inf');
  t.equal(cumulative[0], 1, '30 µs is under the first bound (50 µs)');
  t.equal(cumulative[latencyBucketsSeconds.indexOf(0.001)], 2, '1 ms is in the 1 ms bucket');
  t.equal(cumulative[latencyBucketsSeconds.length - 1], 2, 'a minute is in no bounded bucket');
  t.equal(cumulative[latencyBucketsSeconds.length], 3, '+Inf holds every success');
});

t.test('IoCounter: untimed successes are counted but not in the histogram', async (t) => {
  const counter = new IoCounter();
  counter.done(4096, 2); // 2 ms
  counter.doneUntimed(512);
  counter.doneSince(1024, Number.NaN); // what ioStartMs() gives with timing off
  counter.doneSince(2048, performance.now() - 1); // started a millisecond ago
  t.equal(counter.count, 4, 'every success counts');
  t.equal(counter.bytes, 4096 + 512 + 1024 + 2048);
  t.equal(counter.timedCount, 2, 'two were timed');
  t.equal(counter.cumulativeBuckets().at(-1), 2, '+Inf (the histogram count) holds the timed ones only');
  t.ok(counter.sumSeconds >= 0.003 && counter.sumSeconds < 1, `the sum is the timed ones' (${counter.sumSeconds} s)`);
});

t.test('a registry renders valid Prometheus text', { skip: fs.existsSync(promtool) ? false : `needs ${promtool}` }, async (t) => {
  const metrics = new MetricsRegistry('sdc', { sdc: 'unit' });
  const stats = new IoStats(['read', 'write'] as const);
  stats.op('read').done(4096, 0.2);
  stats.op('write').done(4096, 3);
  let gaugeValue = 1;
  metrics.ioFamilies('meshblock_test_volume', 'test IO', ['volume'], () => [{ labels: { volume: 'vol"1' }, stats }]);
  metrics.gauge('meshblock_test_level', 'a gauge refilled at each scrape', ['name'], (set) => set({ name: 'a' }, gaugeValue));
  const first = await metrics.metrics();
  t.match(first, /^meshblock_test_volume_requests_total\{volume="vol\\"1",op="read"\} 1$/m, 'a counter with escaped labels');
  t.match(first, /^meshblock_test_volume_request_duration_seconds_bucket\{volume="vol\\"1",op="write",le="\+Inf"\} 1$/m, 'a histogram bucket');
  t.match(first, /^# TYPE meshblock_test_volume_request_duration_seconds histogram$/m, 'typed histogram');
  t.match(first, /^meshblock_test_level\{name="a"\} 1$/m);
  t.match(first, /^meshblock_process_info\{role="sdc",sdc="unit"\} 1$/m, 'the process says who it is');
  gaugeValue = 7;
  stats.op('read').done(512, 0.2);
  const second = await metrics.metrics();
  t.match(second, /^meshblock_test_level\{name="a"\} 7$/m, 'gauges are read at each scrape');
  t.match(second, /^meshblock_test_volume_requests_total\{volume="vol\\"1",op="read"\} 2$/m, 'so are counters');
  const checked = await run(promtool, ['check', 'metrics'], { input: second });
  t.equal(checked.code, 0, `promtool check metrics: ${checked.stdout}${checked.stderr}`);
});

t.test('the endpoint on a real socket', async (t) => {
  const metrics = new MetricsRegistry('mdm', { mdm: 'unit' });
  const port = await freePort();
  const endpoint = await MetricsEndpoint.start(metrics, { address: { host: '127.0.0.1', port }, given: true }, log);
  if (endpoint === null) throw new Error('no endpoint');
  t.teardown(() => endpoint.close());
  t.equal(endpoint.url, `http://127.0.0.1:${port}/metrics`);
  const ok = await fetch(endpoint.url);
  t.equal(ok.status, 200);
  t.match(ok.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  t.match(await ok.text(), /meshblock_process_info/);
  t.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 404, 'only /metrics');
  t.equal((await fetch(endpoint.url, { method: 'POST', body: 'x' })).status, 405, 'only GET');

  // The same port again: asked for, it fails naming the flag; as a default, it is skipped.
  await t.rejects(MetricsEndpoint.start(metrics, { address: { host: '127.0.0.1', port }, given: true }, log), { code: 'MB_ERR_INVALID_ARGUMENT', message: /^--metrics: cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE/ });
  t.equal(await MetricsEndpoint.start(metrics, { address: { host: '127.0.0.1', port }, given: false }, log), null, 'a taken default port means no metrics, not no daemon');
  t.equal(await MetricsEndpoint.start(metrics, { address: null, given: true }, log), null, 'off');
});

t.test('--metrics values', async (t) => {
  t.same(parseMetricsAddress('--metrics', '0.0.0.0:9100'), { host: '0.0.0.0', port: 9100 });
  t.same(parseMetricsAddress('--metrics', ':9100'), { host: '127.0.0.1', port: 9100 }, 'loopback unless told');
  t.equal(parseMetricsAddress('--metrics', 'off'), null);
  t.throws(() => parseMetricsAddress('--metrics', 'on'), { code: 'MB_ERR_INVALID_ARGUMENT', message: "--metrics: expected HOST:PORT, :PORT or off, got 'on'" });
  t.throws(() => parseMetricsAddress('--metrics', ':70000'), { code: 'MB_ERR_OUT_OF_RANGE' });
  t.same(metricsAddressOf('sds', undefined, 3), { address: { host: '127.0.0.1', port: metricsPortDefaults.sds + 2 }, given: false }, 'shard 3 of an SDS: the default + 2');
  t.same(metricsAddressOf('mdm', '127.0.0.1:0'), { address: { host: '127.0.0.1', port: 0 }, given: true });
  const ports = Object.values(metricsPortDefaults);
  t.equal(new Set(ports).size, ports.length, 'one default port per role');
  t.equal(Math.max(...ports), metricsPortDefaults.sds, 'the SDS is last, so its shards take the ports above without meeting another role');
});

t.test('capacity by state is a partition of raw', async (t) => {
  const seed = Number(process.env['MESHBLOCK_SEED'] ?? Date.now() % 1_000_000);
  t.comment(`seed ${seed} (MESHBLOCK_SEED=${seed} replays it)`);
  const next = mulberry32(seed);
  const random = { int: (min: number, max: number): number => min + Math.floor(next() * (max - min + 1)) };
  for (let round = 0; round < 2000; round++) {
    const rawBytes = random.int(0, 1 << 30);
    const capacity: PoolCapacity = {
      rawBytes,
      spareBytes: random.int(0, rawBytes),
      usableBytes: 0,
      thickReservedBytes: random.int(0, rawBytes),
      thinProvisionedBytes: 0,
      inUseBytes: 0,
      protectedBytes: 0,
      degradedBytes: random.int(0, rawBytes),
      failedBytes: random.int(0, rawBytes),
      unusedBytes: 0,
      snapshotInUseBytes: 0,
      snapshotProvisionedBytes: 0,
    };
    const used = random.int(0, rawBytes);
    const byState = capacityByState(capacity, used);
    const sum = capacityStates.reduce((total, state) => total + byState[state], 0);
    if (sum !== rawBytes || capacityStates.some((state) => byState[state] < 0) || byState.failed + byState.degraded + byState.protected !== used) {
      t.fail(`round ${round}: ${JSON.stringify({ capacity, used, byState, sum })}`);
      return;
    }
  }
  t.pass('2000 random pools: the states are never negative, sum to raw, and in-use states to what is used');
});
