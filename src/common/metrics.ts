// Prometheus metrics (docs/metrics.md): what every meshblock process shares to serve them.
//
// The data path never touches prom-client. prom-client's `observe(labels, value)` builds a
// label object, a hash string and a closure per call; at 100k requests a second that is
// garbage the SDC and SDS were tuned to avoid. So IO is counted where it already is, into
// IoCounter: one Float64Array per (object, operation), written in place, no allocation,
// one clock read at start and one at the end (none in a process started with --metrics
// off: ioTiming). Everything becomes Prometheus samples only when scraped:
//
//   data path ──count()──▶ IoCounter (Float64Array)        scrape (GET /metrics)
//                                 ▲                               │
//                                 └──── collect(): read ◀─────────┘ prom-client Registry
//                                                                  → text format 0.0.4
//
// Counters and gauges are prom-client Counter/Gauge whose collect() resets and refills them
// from the process's state at each scrape (so an unmapped volume or removed device simply
// stops being exported). Histograms are SnapshotHistogram: a prom-client Histogram whose
// values are read from IoCounters instead of observe().
//
// Endpoint: plain HTTP, GET /metrics only, on loopback unless told otherwise (the metrics
// say nothing secret, but nothing in meshblock listens beyond loopback unless told to).

import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type LabelValues, type MetricType } from 'prom-client';
import { formatHostPort, parseHostPort, type HostPort } from './address.js';
import { assert } from './assert.js';
import { InvalidArgumentError } from './errors.js';
import { metricsScrapeTimeoutMs } from './limits.js';

/** Default metrics ports, one per role, so that an MDM, an SDC and an SDS share a host. SDS shards take PORT+k-1. */
export const metricsPortDefaults = { mdm: 9611, sdc: 9612, sds: 9613 } as const;
export type MetricsRole = keyof typeof metricsPortDefaults;

/**
 * Latency buckets, in seconds: 50 µs (a read served from page cache over loopback) to 10 s
 * (an IO waiting out an SDS failover). Roughly ×2.5 apart, so a quantile is off by at most
 * that factor at worst, within one bucket.
 */
export const latencyBucketsSeconds: readonly number[] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10];
for (let index = 1; index < latencyBucketsSeconds.length; index++) assert((latencyBucketsSeconds[index] as number) > (latencyBucketsSeconds[index - 1] as number), 'latency buckets ascend');

/**
 * Whether the data paths read the clock to time their IO (two performance.now() per
 * request, the only per-request cost of counting beyond a few additions). A process started
 * with `--metrics off` turns it off (setIoTiming), as nothing would read the times: its
 * IoCounters still count requests, bytes and errors, and their histograms stay empty
 * (`timedCount` 0). Process-wide, as a process is one daemon; read once per request.
 */
export const ioTiming: { readonly on: boolean } = { on: true };

export function setIoTiming(on: boolean): void {
  (ioTiming as { on: boolean }).on = on;
}

/**
 * Where a request to time starts: performance.now(), or NaN without a clock read when
 * timing is off. IoCounter.doneSince(bytes, startMs) reads the clock again only if it is a
 * time.
 */
export function ioStartMs(): number {
  return ioTiming.on ? performance.now() : Number.NaN;
}

// IoCounter's slots in its Float64Array.
const slotCount = 0;
const slotBytes = 1;
const slotErrors = 2;
const slotSumSeconds = 3;
/** Successes that were timed (in the histogram): all of them unless timing is off. */
const slotTimedCount = 4;
const slotBuckets = 5;

/**
 * One kind of IO of one object (a volume's reads on an SDC, an SDS's writes, a device's
 * fdatasyncs): requests, bytes, failures and a latency histogram, in one Float64Array
 * updated in place. A double counts exactly up to 2^53: 285 years of 1M IOPS.
 */
export class IoCounter {
  readonly values = new Float64Array(slotBuckets + latencyBucketsSeconds.length);

  /** A request that succeeded, started at `startMs` (ioStartMs()): timed unless that is NaN (timing off). */
  doneSince(bytes: number, startMs: number): void {
    if (Number.isNaN(startMs)) this.doneUntimed(bytes);
    else this.done(bytes, performance.now() - startMs);
  }

  /** A request that succeeded, not timed (timing is off): counted with its bytes, not in the histogram. */
  doneUntimed(bytes: number): void {
    const values = this.values;
    values[slotCount] = (values[slotCount] as number) + 1;
    values[slotBytes] = (values[slotBytes] as number) + bytes;
  }

  /** A request that succeeded, its bytes and how long it took (milliseconds, as performance.now() gives them). */
  done(bytes: number, durationMs: number): void {
    const values = this.values;
    values[slotCount] = (values[slotCount] as number) + 1;
    values[slotBytes] = (values[slotBytes] as number) + bytes;
    values[slotTimedCount] = (values[slotTimedCount] as number) + 1;
    const seconds = durationMs / 1000;
    values[slotSumSeconds] = (values[slotSumSeconds] as number) + seconds;
    // Non-cumulative: the first bucket that holds it. Beyond the last: only in +Inf (the count).
    for (let index = 0; index < latencyBucketsSeconds.length; index++) {
      if (seconds <= (latencyBucketsSeconds[index] as number)) {
        values[slotBuckets + index] = (values[slotBuckets + index] as number) + 1;
        return;
      }
    }
  }

  /** A request that failed (not in the count, the bytes or the histogram). */
  failed(): void {
    this.values[slotErrors] = (this.values[slotErrors] as number) + 1;
  }

  get count(): number {
    return this.values[slotCount] as number;
  }

  get bytes(): number {
    return this.values[slotBytes] as number;
  }

  get errors(): number {
    return this.values[slotErrors] as number;
  }

  /** Seconds the timed successes took, summed (a mean latency is sumSeconds / timedCount, not / count). */
  get sumSeconds(): number {
    return this.values[slotSumSeconds] as number;
  }

  /** Successes that were timed: the histogram's count (count, unless timing was off for some). */
  get timedCount(): number {
    return this.values[slotTimedCount] as number;
  }

  /** Cumulative bucket counts, as Prometheus wants them (the last is +Inf: every timed success). */
  cumulativeBuckets(): number[] {
    const cumulative: number[] = [];
    let total = 0;
    for (let index = 0; index < latencyBucketsSeconds.length; index++) {
      total += this.values[slotBuckets + index] as number;
      cumulative.push(total);
    }
    cumulative.push(this.timedCount);
    return cumulative;
  }
}

/** An object's IO by operation name (read, write, trim, ...), each counter made once. */
export class IoStats<Op extends string> {
  readonly byOp: ReadonlyMap<Op, IoCounter>;

  constructor(ops: readonly Op[]) {
    this.byOp = new Map(ops.map((op) => [op, new IoCounter()]));
  }

  op(op: Op): IoCounter {
    const counter = this.byOp.get(op);
    assert(counter !== undefined, `an IoStats counts ${op}`);
    return counter;
  }
}

type Labels = Record<string, string>;

/** One sample source for SnapshotHistogram: the series' labels and its IoCounter. */
export interface HistogramSource {
  labels: Labels;
  counter: IoCounter;
}

interface Sample {
  value: number;
  labels: Labels;
  metricName: string;
}

/**
 * A histogram read from IoCounters at scrape time. prom-client's Registry asks a metric for
 * its samples (getForPromString, else get()); both are answered from `sources()`.
 */
export class SnapshotHistogram extends Histogram<string> {
  private readonly metricName: string;
  private readonly helpText: string;

  constructor(
    config: { name: string; help: string; labelNames: readonly string[]; registers: Registry[] },
    private readonly sources: () => Iterable<HistogramSource>,
  ) {
    super({ name: config.name, help: config.help, labelNames: config.labelNames, buckets: [...latencyBucketsSeconds], registers: config.registers });
    this.metricName = config.name;
    this.helpText = config.help;
  }

  private samples(): Sample[] {
    const samples: Sample[] = [];
    const bounds = [...latencyBucketsSeconds.map(String), '+Inf'];
    for (const { labels, counter } of this.sources()) {
      counter.cumulativeBuckets().forEach((value, index) => samples.push({ value, labels: { ...labels, le: bounds[index] as string }, metricName: `${this.metricName}_bucket` }));
      samples.push({ value: counter.sumSeconds, labels, metricName: `${this.metricName}_sum` });
      samples.push({ value: counter.timedCount, labels, metricName: `${this.metricName}_count` });
    }
    return samples;
  }

  override get(): ReturnType<Histogram<string>['get']> {
    // prom-client's types declare `type` a numeric enum; at run time it is the text the
    // format's TYPE line prints, as prom-client's own Histogram sets it.
    return Promise.resolve({ name: this.metricName, help: this.helpText, type: 'histogram' as unknown as MetricType, aggregator: 'sum', values: this.samples(), collect: () => undefined });
  }

  /** What prom-client's Registry renders the text format from (it prefers this to get()). */
  getForPromString(): ReturnType<Histogram<string>['get']> {
    return this.get();
  }
}

/**
 * A process's metrics: a prom-client Registry with Node's process metrics (process_*,
 * nodejs_*) and a `meshblock_build_info`-style identity, to which each role adds its own.
 */
export class MetricsRegistry {
  readonly registry = new Registry();

  constructor(role: MetricsRole, identity: Labels) {
    collectDefaultMetrics({ register: this.registry });
    // Gauges prom-client names like counters: promtool's lint refuses them, and
    // nodejs_active_handles / _resources (by type) say the same.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(name);
    const info = new Gauge({ name: 'meshblock_process_info', help: 'Which meshblock process this is: 1, with its role and name as labels', labelNames: ['role', ...Object.keys(identity)], registers: [this.registry] });
    info.set({ role, ...identity }, 1);
  }

  /** A counter refilled at each scrape from `fill`, which calls `set(labels, value)` per series. */
  counter(name: string, help: string, labelNames: readonly string[], fill: (set: (labels: LabelValues<string>, value: number) => void) => void): Counter<string> {
    assert(name.endsWith('_total'), `counter ${name} ends in _total`);
    return new Counter({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect(this: Counter<string>) {
        this.reset();
        fill((labels, value) => this.inc(labels, value));
      },
    });
  }

  /** A gauge refilled at each scrape from `fill`. */
  gauge(name: string, help: string, labelNames: readonly string[], fill: (set: (labels: LabelValues<string>, value: number) => void) => void | Promise<void>): Gauge<string> {
    return new Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      async collect(this: Gauge<string>) {
        this.reset();
        await fill((labels, value) => this.set(labels, value));
      },
    });
  }

  histogram(name: string, help: string, labelNames: readonly string[], sources: () => Iterable<HistogramSource>): SnapshotHistogram {
    return new SnapshotHistogram({ name, help, labelNames, registers: [this.registry] }, sources);
  }

  /** Counters, bytes, errors and latency of IoStats, as four families named PREFIX_requests_total, _bytes_total, _errors_total, _request_duration_seconds. */
  ioFamilies(prefix: string, what: string, labelNames: readonly string[], sources: () => Iterable<{ labels: Labels; stats: IoStats<string> }>): void {
    const each = function* (): Iterable<{ labels: Labels; counter: IoCounter }> {
      for (const { labels, stats } of sources()) for (const [op, counter] of stats.byOp) yield { labels: { ...labels, op }, counter };
    };
    const withOp = [...labelNames, 'op'];
    this.counter(`${prefix}_requests_total`, `${what}: requests completed, by operation`, withOp, (set) => {
      for (const { labels, counter } of each()) set(labels, counter.count);
    });
    this.counter(`${prefix}_bytes_total`, `${what}: bytes moved by completed requests, by operation`, withOp, (set) => {
      for (const { labels, counter } of each()) set(labels, counter.bytes);
    });
    this.counter(`${prefix}_errors_total`, `${what}: requests that failed, by operation`, withOp, (set) => {
      for (const { labels, counter } of each()) set(labels, counter.errors);
    });
    this.histogram(`${prefix}_request_duration_seconds`, `${what}: time from request to completion, by operation`, withOp, each);
  }

  metrics(): Promise<string> {
    return this.registry.metrics();
  }
}

/**
 * `--metrics ADDR:PORT | :PORT | off`: where to serve, or null for off. `defaultPort` is
 * the role's; an SDS shard adds its index - 1 (port 0 stays 0: any free port).
 */
export function parseMetricsAddress(field: string, text: string): HostPort | null {
  if (text.trim() === 'off') return null;
  try {
    return parseHostPort(field, text);
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw new InvalidArgumentError(field, `expected HOST:PORT, :PORT or off, got '${text}'`);
    throw err;
  }
}

/** The `--metrics` option of a start command (yargs). */
export function metricsOption(role: MetricsRole): { type: 'string'; describe: string; requiresArg: true } {
  const port = metricsPortDefaults[role];
  const shards = role === 'sds' ? '; shard k of --shards serves on PORT+k-1' : '';
  return { type: 'string', describe: `Prometheus metrics on http://ADDR:PORT/metrics, or off [default: 127.0.0.1:${port}, skipped with a warning if taken${shards}] (docs/metrics.md)`, requiresArg: true };
}

/**
 * The metrics address a process uses: as given, or loopback on its role's default port
 * (`given: false`), plus `shardIndex - 1` for shard k of an SDS started with --shards.
 */
export function metricsAddressOf(role: MetricsRole, text: string | undefined, shardIndex = 1): { address: HostPort | null; given: boolean } {
  if (text === undefined) return { address: { host: '127.0.0.1', port: metricsPortDefaults[role] + (Number.isInteger(shardIndex) && shardIndex >= 1 ? shardIndex - 1 : 0) }, given: false };
  return { address: parseMetricsAddress('--metrics', text), given: true };
}

/** The HTTP server of one process's /metrics. */
export class MetricsEndpoint {
  private constructor(
    private readonly server: http.Server,
    readonly address: string,
  ) {}

  get url(): string {
    return `http://${this.address}/metrics`;
  }

  /**
   * Serves `registry` at http://ADDRESS/metrics. With `given` false (the role's default
   * address, not asked for), a port already taken (a second SDS on the host) is logged and
   * the process goes on without metrics (null); an address asked for that cannot be bound
   * fails the start.
   */
  static async start(metrics: MetricsRegistry, where: { address: HostPort | null; given: boolean }, log: Logger): Promise<MetricsEndpoint | null> {
    if (where.address === null) return null;
    const server = http.createServer((request, response) => {
      const pathname = (request.url ?? '/').split('?')[0];
      if (pathname !== '/metrics') {
        response.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at /metrics\n');
        return;
      }
      if (request.method !== 'GET' && request.method !== 'HEAD') {
        response.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('only GET\n');
        return;
      }
      metrics.metrics().then(
        (text) => response.writeHead(200, { 'content-type': metrics.registry.contentType }).end(request.method === 'HEAD' ? undefined : text),
        (err: unknown) => {
          log.error({ err }, 'collecting metrics failed');
          response.writeHead(500, { 'content-type': 'text/plain' }).end(`collecting metrics failed: ${(err as Error).message}\n`);
        },
      );
    });
    server.requestTimeout = metricsScrapeTimeoutMs;
    server.keepAliveTimeout = metricsScrapeTimeoutMs;
    const wanted = where.address;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(wanted.port, wanted.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (!where.given && code === 'EADDRINUSE') {
        log.warn({ address: formatHostPort(wanted) }, 'the default metrics port is taken (another process of this role on this host?): no metrics; give --metrics ADDR:PORT');
        return null;
      }
      throw new InvalidArgumentError('--metrics', `cannot listen on ${formatHostPort(wanted)}: ${(err as Error).message}`);
    }
    server.on('error', (err) => log.error({ err }, 'metrics endpoint failed'));
    const bound = server.address() as AddressInfo;
    const endpoint = new MetricsEndpoint(server, formatHostPort({ host: bound.address, port: bound.port }));
    log.info({ url: endpoint.url }, 'metrics served');
    return endpoint;
  }

  /** Stops listening and drops idle keep-alive connections (a scrape in progress finishes). */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
    });
  }
}
