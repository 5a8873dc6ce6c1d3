// meshblock loadtest VOLUME: fio's nbd engine against one volume, with a progress line and a
// summary (IOPS, MB/s, latency percentiles). The workload comes from fio-like flags or from
// diskspd's (diskspd.ts); either way the fio job file that runs is printed first, so what
// was measured can be rerun with fio alone.
//
// How a run goes:
//   1. nbdinfo --json URI     the export exists, its size, whether it takes writes
//   2. fio JOBFILE            in a scratch directory (fio's cwd), removed afterwards, so no
//                             file is left in the user's directory; fio prints a JSON report
//                             every second (--status-interval) and a last one when it ends
//   3. summary                from the last report, also after SIGINT (forwarded to fio,
//                             which stops and reports) or an overrun (fio is stopped)
// fio runs in its own process group so that a signal reaches it once, through us.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Level, Logger } from 'pino';
import type { Argv } from 'yargs';
import { formatHostPort, parseHostPort } from '../common/address.js';
import { InvalidArgumentError, MeshblockError, OutOfRangeError } from '../common/errors.js';
import { nbdStringBytesMax } from '../common/limits.js';
import { KiB, formatBytes, parseSizeBytes } from '../common/units.js';
import {
  blockSizeBytesMax,
  fioJobText,
  fioRwChoices,
  iodepthMax,
  latencyPercentiles,
  numjobsMax,
  runtimeSMax,
  translateDiskspd,
  verifyChoices,
  type FioJob,
  type FioRw,
  type VerifyAlgorithm,
} from './diskspd.js';
import { createRootLogger, logLevels } from './log.js';
import { defaultNbdPort } from './nbd-serve.js';

export interface LoadtestArgs {
  volume: string;
  nbd: string | undefined;
  socket: string | undefined;
  rw: FioRw | undefined;
  bs: string | undefined;
  iodepth: number | undefined;
  numjobs: number | undefined;
  rwmixwrite: number | undefined;
  runtime: string | undefined;
  size: string | undefined;
  verify: VerifyAlgorithm | undefined;
  diskspd: string[] | undefined;
  json: boolean;
  'log-level': Level;
}

/** The workload when no flag says otherwise. */
export const loadtestDefaults = {
  rw: 'randrw' as FioRw,
  blockSizeBytes: 4 * KiB,
  iodepth: 16,
  numjobs: 1,
  rwmixwrite: 50,
  runtimeS: 60,
} as const;

/** fio prints a JSON report this often; the progress line is built from them. */
export const fioStatusIntervalS = 1;
/** Reports closer together than this (fio's last one follows its last status report closely) do not make a progress line. */
export const progressSampleMsMin = 500;
/** Off a terminal the progress line is printed as a new line this often. */
export const progressIntervalMsNonTty = 5_000;
/** fio may run this much longer than runtime plus warm-up (start-up, connecting, the final report) before it is stopped. */
export const fioOverrunMarginMs = 30_000;
/** After SIGINT, fio has this long to stop and report before SIGKILL. */
export const fioKillGraceMs = 10_000;
/** After fio exits, its pipes are read this long at most (until they close) before they are dropped. */
export const fioPipesDrainMs = 5_000;
/** nbdinfo has this long to connect and answer. */
export const nbdinfoTimeoutMs = 15_000;
/** fio's own messages (warnings, errors) kept for the error line; the first ones name the cause. */
export const fioMessagesMax = 50;

/** The flags that describe the workload natively; --diskspd replaces all of them. */
const nativeWorkloadFlags = ['rw', 'bs', 'iodepth', 'numjobs', 'rwmixwrite', 'runtime', 'size'] as const;

export const loadtestCommand = 'loadtest <volume>';
export const loadtestDescription = 'run fio against a volume over NBD: a progress line, then IOPS, MB/s and latency percentiles (diskspd flags accepted)';

const diskspdHelp = [
  'diskspd flags, for Windows guides: put them right after --diskspd, as separate words or as one',
  'quoted string, and any other --flag before --diskspd or after the quoted string:',
  '  meshblock loadtest vol1 --nbd 10.0.0.5:10809 --diskspd -b4k -d60 -L -o2 -t4 -r -w70 -c500M',
  '  meshblock loadtest vol1 --diskspd "-b8k -d30 -o4 -t8 -Sh -r -w25 -Z" --json',
  'Translated: -b block size, -d duration (s), -W warm-up (s), -o/-O I/Os in flight per thread,',
  '-t/-F threads, -r[align] random, -rs<pct> share random, -s<stride> sequential stride, -w<pct>',
  'writes, -c/-f<size> region size, -B<offset> base offset, -T<offset> thread stride, -z[seed],',
  '-Z zero and -Zr random-per-I/O write data. Sizes take K, M, G or b (blocks). Accepted and',
  'explained in the printed job: -L, -S[bhruw], -C, -v, -P, -D. diskspd defaults apply to the',
  'rest (-b64K -o2 -t1 -d10 -W5, reads, sequential). Other flags are refused, naming the flag.',
  'Inside separate words -h is meshblock\'s --help: write diskspd\'s -h as -Sh.',
  '',
  'The fio job is printed before it runs. Write workloads overwrite the volume\'s data.',
].join('\n');

export function loadtestOptions(yargs: Argv): Argv<LoadtestArgs> {
  return (
    yargs
      // diskspd's flags (-b4k, -w70, ...) are no options of ours: with this, yargs hands
      // them to --diskspd (an array) instead of splitting them into letters. Anything else
      // unknown still fails strict mode.
      .parserConfiguration({ 'unknown-options-as-args': true })
      .positional('volume', { type: 'string', describe: 'export name on the NBD server, or a full nbd://, nbds://, nbd+unix:// URI' })
      .option('nbd', { type: 'string', describe: `NBD server HOST:PORT [default: 127.0.0.1:${defaultNbdPort}]`, requiresArg: true })
      .option('socket', { type: 'string', describe: 'NBD server Unix socket path instead of --nbd', requiresArg: true })
      .option('rw', { choices: fioRwChoices, describe: `access pattern [default: ${loadtestDefaults.rw}]` })
      .option('bs', { type: 'string', describe: 'block size, e.g. 4k, 1M [default: 4k]', requiresArg: true })
      .option('iodepth', { type: 'number', describe: `I/Os in flight per job [default: ${loadtestDefaults.iodepth}]`, requiresArg: true })
      .option('numjobs', { type: 'number', describe: `jobs, each with its own NBD connection [default: ${loadtestDefaults.numjobs}]`, requiresArg: true })
      .option('rwmixwrite', { type: 'number', describe: `percentage of writes, for --rw rw and randrw [default: ${loadtestDefaults.rwmixwrite}]`, requiresArg: true })
      .option('runtime', { type: 'string', describe: `measured time: 60, 60s, 2m, 1h [default: ${loadtestDefaults.runtimeS}s]`, requiresArg: true })
      .option('size', { type: 'string', describe: 'bytes addressed from the start of the volume [default: the whole export]', requiresArg: true })
      .option('verify', { choices: verifyChoices, describe: 'write checksummed blocks and check them when read back (write workloads)' })
      .option('diskspd', { type: 'array', string: true, describe: 'diskspd flags instead of the workload flags above (see below)' })
      .option('json', { type: 'boolean', default: false, describe: 'print the summary as JSON (the progress line stays on stderr)' })
      .option('log-level', { choices: logLevels, default: 'warn' as Level, describe: 'log level (logs go to stderr)' })
      .conflicts('nbd', 'socket')
      .epilog(diskspdHelp)
      .check((argv) => {
        const args = argv as unknown as LoadtestArgs;
        volumeUri(args);
        loadtestJob(args);
        return true;
      }) as unknown as Argv<LoadtestArgs>
  );
}

// ---------------------------------------------------------------------------------------
// Errors

/** The export cannot be opened (no server, no such export, nbdinfo missing). */
export class ExportUnavailableError extends MeshblockError {
  constructor(message: string) {
    super('MB_ERR_EXPORT_UNAVAILABLE', message);
  }
}

/** The workload writes and the export is read-only. */
export class ExportReadOnlyError extends MeshblockError {
  constructor(message: string) {
    super('MB_ERR_EXPORT_READ_ONLY', message);
  }
}

/** fio could not run, reported an I/O or verification error, exited non-zero, or overran. */
export class FioFailedError extends MeshblockError {
  constructor(message: string) {
    super('MB_ERR_FIO_FAILED', message);
  }
}

/** SIGINT or SIGTERM stopped the run; the partial summary was printed. */
export class LoadtestInterruptedError extends MeshblockError {
  constructor(message: string) {
    super('MB_ERR_INTERRUPTED', message);
  }
}

// ---------------------------------------------------------------------------------------
// Flags to a job (pure)

/** The NBD URI for VOLUME: a full URI as given, else an export name on --socket or --nbd. */
export function volumeUri(args: Pick<LoadtestArgs, 'volume' | 'nbd' | 'socket'>): string {
  const volume = args.volume;
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(volume)?.[1];
  if (scheme !== undefined) {
    if (!/^nbds?(\+unix)?$/.test(scheme)) throw new InvalidArgumentError('VOLUME', `'${scheme}://' is not an NBD URI (nbd://, nbds://, nbd+unix://, nbds+unix://)`);
    if (args.nbd !== undefined || args.socket !== undefined) throw new InvalidArgumentError('--nbd/--socket', 'VOLUME is already a full URI');
    // A line break would end fio's `uri=` line and start another option.
    if (/[\s]/.test(volume)) throw new InvalidArgumentError('VOLUME', 'a URI has no white space (percent-encode it)');
    return volume;
  }
  if (Buffer.byteLength(volume) > nbdStringBytesMax) throw new InvalidArgumentError('VOLUME', `longer than ${nbdStringBytesMax} bytes`);
  const exportPath = encodeURIComponent(volume);
  if (args.socket !== undefined) {
    if (args.socket.trim() === '') throw new InvalidArgumentError('--socket', 'must not be empty');
    return `nbd+unix:///${exportPath}?socket=${args.socket.split('/').map(encodeURIComponent).join('/')}`;
  }
  const address = parseHostPort('--nbd', args.nbd ?? `127.0.0.1:${defaultNbdPort}`);
  if (address.port === 0) throw new OutOfRangeError('--nbd', 'a port from 1 to 65535', 0);
  return `nbd://${formatHostPort(address)}/${exportPath}`;
}

/**
 * The workload from the flags: native ones or --diskspd (never both), plus --verify. The
 * region is not known yet: fitJobToExport() completes it once the export's size is.
 */
export function loadtestJob(args: Omit<LoadtestArgs, 'volume' | 'nbd' | 'socket' | 'json' | 'log-level'>): FioJob {
  let job: FioJob;
  if (args.diskspd !== undefined) {
    const native = nativeWorkloadFlags.find((name) => args[name] !== undefined);
    if (native !== undefined) throw new InvalidArgumentError(`--${native}`, 'give the workload with --diskspd or with native flags, not both');
    job = translateDiskspd(args.diskspd);
  } else {
    job = nativeJob(args);
  }
  if (args.verify === undefined) return job;
  if (job.rw === 'read' || job.rw === 'randread') {
    throw new InvalidArgumentError('--verify', `checks blocks this run wrote, and this workload (${job.rw}) only reads`);
  }
  if (job.offsetIncrementBytes > 0) {
    throw new InvalidArgumentError('--verify', 'cannot be combined with diskspd -T: verifying jobs get regions of their own');
  }
  const comment = `--verify ${args.verify}: every block written carries a checksum; fio reads blocks back and checks them as it goes, stopping at the first mismatch`;
  return { ...job, comments: [...job.comments, comment], verify: args.verify };
}

function nativeJob(args: Pick<LoadtestArgs, (typeof nativeWorkloadFlags)[number]>): FioJob {
  const rw = args.rw ?? loadtestDefaults.rw;
  const blockSizeBytes = args.bs === undefined ? loadtestDefaults.blockSizeBytes : parseSizeBytes('--bs', args.bs);
  if (blockSizeBytes < 1 || blockSizeBytes > blockSizeBytesMax) throw new OutOfRangeError('--bs', `from 1 byte to ${formatBytes(blockSizeBytesMax)}`, args.bs);
  const iodepth = wholeNumber('--iodepth', args.iodepth ?? loadtestDefaults.iodepth, 1, iodepthMax);
  const numjobs = wholeNumber('--numjobs', args.numjobs ?? loadtestDefaults.numjobs, 1, numjobsMax);
  const mixed = rw === 'rw' || rw === 'randrw';
  if (args.rwmixwrite !== undefined && !mixed) throw new InvalidArgumentError('--rwmixwrite', `applies to --rw rw and randrw, not ${rw}`);
  const rwmixwrite = mixed ? wholeNumber('--rwmixwrite', args.rwmixwrite ?? loadtestDefaults.rwmixwrite, 0, 100) : undefined;
  const runtimeS = args.runtime === undefined ? loadtestDefaults.runtimeS : parseDurationS('--runtime', args.runtime);
  let sizeBytes: number | undefined;
  if (args.size !== undefined) {
    sizeBytes = parseSizeBytes('--size', args.size);
    if (sizeBytes < blockSizeBytes) throw new OutOfRangeError('--size', `at least the block size (${blockSizeBytes} bytes)`, args.size);
  }
  return {
    comments: [],
    uri: undefined,
    rw,
    sequentialSkipBytes: 0,
    rwmixwrite,
    percentageRandom: undefined,
    blockSizeBytes,
    blockAlignBytes: undefined,
    iodepth,
    numjobs,
    runtimeS,
    rampTimeS: 0,
    offsetBytes: 0,
    offsetIncrementBytes: 0,
    sizeBytes,
    randomSeed: 'repeatable',
    writeBuffers: 'random-reused',
    verify: undefined,
  };
}

function wholeNumber(field: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) throw new OutOfRangeError(field, `a whole number from ${min} to ${max}`, value);
  return value;
}

/** `60`, `60s`, `2m`, `1h` in seconds; fio's runtime is whole seconds here. */
export function parseDurationS(field: string, text: string): number {
  const match = /^\s*(\d+)\s*(s|m|h)?\s*$/.exec(text);
  if (match === null) throw new InvalidArgumentError(field, `not a duration: '${text}' (examples: 30, 30s, 2m, 1h)`);
  const seconds = Number(match[1]) * (match[2] === 'h' ? 3600 : match[2] === 'm' ? 60 : 1);
  if (seconds < 1 || seconds > runtimeSMax) throw new OutOfRangeError(field, `from 1 s to ${runtimeSMax} s`, text);
  return seconds;
}

/**
 * Completes the job for an export of `exportSizeBytes`: the region defaults to the rest of
 * the export and must fit in it. With --verify and several jobs, each job gets its own
 * 1/numjobs of the region: otherwise one job overwrites blocks another is about to check,
 * and verification fails although the storage is right.
 */
export function fitJobToExport(job: FioJob, uri: string, exportSizeBytes: number, regionField: string): FioJob {
  const lastJobOffsetBytes = job.offsetBytes + (job.numjobs - 1) * job.offsetIncrementBytes;
  const comments = [...job.comments];
  let sizeBytes = job.sizeBytes;
  if (sizeBytes === undefined) {
    sizeBytes = exportSizeBytes - lastJobOffsetBytes;
    if (sizeBytes < job.blockSizeBytes) {
      throw new InvalidArgumentError(regionField, `the region starts ${lastJobOffsetBytes} bytes in, too near the end of the ${exportSizeBytes}-byte export`);
    }
    comments.push(`size: to the end of the export (${formatBytes(exportSizeBytes)})`);
  } else if (lastJobOffsetBytes + sizeBytes > exportSizeBytes) {
    throw new InvalidArgumentError(
      regionField,
      `the region (${formatBytes(sizeBytes)} from ${lastJobOffsetBytes} bytes in) ends beyond the export (${formatBytes(exportSizeBytes)})`,
    );
  }
  let offsetIncrementBytes = job.offsetIncrementBytes;
  if (job.verify !== undefined && job.numjobs > 1) {
    const perJobBytes = Math.floor(sizeBytes / job.numjobs / job.blockSizeBytes) * job.blockSizeBytes;
    if (perJobBytes < job.blockSizeBytes) throw new InvalidArgumentError(regionField, `too small to give each of ${job.numjobs} verifying jobs a block of its own`);
    comments.push(`--verify with ${job.numjobs} jobs: each writes and checks its own ${formatBytes(perJobBytes)} (offset_increment), so none overwrites blocks another checks`);
    sizeBytes = perJobBytes;
    offsetIncrementBytes = perJobBytes;
  }
  return { ...job, comments, uri, sizeBytes, offsetIncrementBytes };
}

// ---------------------------------------------------------------------------------------
// fio's reports

/** The part of fio's JSON report (one read or write side of a job) used here. */
interface FioDirectionReport {
  io_bytes: number;
  total_ios: number;
  /** Milliseconds this side ran (for verification reads, not a usable figure). */
  runtime: number;
  /** Submission to completion; `percentile` is there with lat_percentiles=1 and some I/O done. */
  lat_ns: { mean: number; max: number; percentile?: Record<string, number> };
}

interface FioJobReport {
  /** errno of the error that stopped the job, 0 if none. */
  error: number;
  /** Seconds since fio started the job, warm-up included. */
  elapsed: number;
  read: FioDirectionReport;
  write: FioDirectionReport;
}

export interface FioReport {
  timestamp_ms: number;
  jobs: FioJobReport[];
}

function isDirection(value: unknown): value is FioDirectionReport {
  const side = value as Partial<FioDirectionReport> | null;
  return (
    typeof side === 'object' && side !== null &&
    typeof side.io_bytes === 'number' && typeof side.total_ios === 'number' && typeof side.runtime === 'number' &&
    typeof side.lat_ns === 'object' && side.lat_ns !== null && typeof side.lat_ns.mean === 'number'
  );
}

/** Checks a parsed JSON document at the edge: a report with one group-reported job, or null. */
export function asFioReport(value: unknown): FioReport | null {
  const report = value as Partial<FioReport> | null;
  if (typeof report !== 'object' || report === null || !Array.isArray(report.jobs) || report.jobs.length !== 1) return null;
  const job = report.jobs[0] as Partial<FioJobReport>;
  if (typeof job.error !== 'number' || typeof job.elapsed !== 'number' || !isDirection(job.read) || !isDirection(job.write)) return null;
  return { timestamp_ms: typeof report.timestamp_ms === 'number' ? report.timestamp_ms : 0, jobs: [job as FioJobReport] };
}

/** fio chatter that says nothing about the run. */
const fioChatter = /^fio: connected to NBD server$/;

/**
 * Splits fio's stdout into its JSON reports and its own messages. fio writes each report
 * as a document from a `{` line to a `}` line, every inner line indented, and its messages
 * ("fio: ...") on lines of their own, sometimes between or inside reports.
 */
export class FioOutputParser {
  readonly messages: string[] = [];
  private partial = '';
  private documentLines: string[] | null = null;

  constructor(private readonly onReport: (report: FioReport) => void, private readonly log: Logger) {}

  push(text: string): void {
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) this.onLine(line);
  }

  end(): void {
    if (this.partial !== '') this.onLine(this.partial);
    this.partial = '';
  }

  addMessage(line: string): void {
    const message = line.trim();
    if (message === '' || fioChatter.test(message)) return;
    if (this.messages.length < fioMessagesMax) this.messages.push(message);
  }

  private onLine(line: string): void {
    if (this.documentLines === null) {
      if (line === '{') this.documentLines = [line];
      else this.addMessage(line);
      return;
    }
    if (line !== '}' && !line.startsWith(' ') && !line.startsWith('\t')) {
      this.addMessage(line);
      return;
    }
    this.documentLines.push(line);
    if (line !== '}') return;
    const documentText = this.documentLines.join('\n');
    this.documentLines = null;
    let parsed: unknown;
    try {
      parsed = JSON.parse(documentText);
    } catch (err) {
      this.log.warn({ err }, 'fio report is not JSON: skipped');
      return;
    }
    const report = asFioReport(parsed);
    if (report === null) {
      this.log.warn('fio report has an unexpected shape: skipped');
      return;
    }
    this.onReport(report);
  }
}

// ---------------------------------------------------------------------------------------
// Progress and summary (pure formatting)

export interface DirectionSummary {
  ioCount: number;
  ioBytes: number;
  iops: number;
  bytesPerSecond: number;
  latencyUsMean: number | null;
  latencyUsP50: number | null;
  latencyUsP99: number | null;
  latencyUsP999: number | null;
  latencyUsMax: number | null;
}

export interface LoadtestSummary {
  volume: string;
  uri: string;
  /** The fio job file that ran. */
  fioJob: string;
  /** Time measured (warm-up excluded). */
  measuredMs: number;
  /** SIGINT or SIGTERM stopped the run before its runtime was over. */
  interrupted: boolean;
  read: DirectionSummary;
  write: DirectionSummary;
  /** errno of the error fio stopped on (0: none), its name, and fio's first message about it. */
  errno: number;
  errnoName: string | null;
  error: string | null;
}

function latencyUs(side: FioDirectionReport, percentile: string): number | null {
  const ns = side.lat_ns.percentile?.[Number(percentile).toFixed(6)];
  return side.total_ios === 0 || ns === undefined ? null : Math.round(ns / 100) / 10;
}

/**
 * Rates are over the measured time, not fio's per-side runtime: fio times verification
 * reads oddly (a run that read back 45,000 blocks reported 1 ms of reading).
 */
function directionSummary(side: FioDirectionReport, measuredMs: number): DirectionSummary {
  const done = side.total_ios > 0;
  const seconds = measuredMs / 1000;
  return {
    ioCount: side.total_ios,
    ioBytes: side.io_bytes,
    iops: seconds > 0 ? Math.round((side.total_ios / seconds) * 10) / 10 : 0,
    bytesPerSecond: seconds > 0 ? Math.round(side.io_bytes / seconds) : 0,
    latencyUsMean: done ? Math.round(side.lat_ns.mean / 100) / 10 : null,
    latencyUsP50: latencyUs(side, latencyPercentiles[0]),
    latencyUsP99: latencyUs(side, latencyPercentiles[1]),
    latencyUsP999: latencyUs(side, latencyPercentiles[2]),
    latencyUsMax: done ? Math.round(side.lat_ns.max / 100) / 10 : null,
  };
}

export function errnoName(errno: number): string | null {
  for (const [name, value] of Object.entries(osConstants.errno)) if (value === errno) return name;
  return null;
}

export function summarize(report: FioReport, context: { volume: string; uri: string; fioJob: string; interrupted: boolean; messages: readonly string[] }): LoadtestSummary {
  const job = report.jobs[0] as FioJobReport;
  // fio reports its own failures (not an errno) as -1, printed unsigned.
  const errno = job.error > 0x7fffffff ? job.error - 0x1_0000_0000 : job.error;
  const measuredMs = Math.max(job.read.runtime, job.write.runtime);
  return {
    volume: context.volume,
    uri: context.uri,
    fioJob: context.fioJob,
    measuredMs,
    interrupted: context.interrupted,
    read: directionSummary(job.read, measuredMs),
    write: directionSummary(job.write, measuredMs),
    errno,
    errnoName: errno > 0 ? errnoName(errno) : null,
    // The first message is the cause; later ones are its echoes ("Unknown error -1" per job).
    error: errno === 0 ? null : (context.messages[0]?.replace(/^fio: /, '') ?? null),
  };
}

/** `EIO (errno 5)`, or fio's own error number. */
function formatErrno(errno: number, name: string | null): string {
  return name === null ? `fio error ${errno}` : `${name} (errno ${errno})`;
}

function formatCount(count: number): string {
  if (count >= 1e6) return `${(count / 1e6).toFixed(2)}M`;
  if (count >= 1e4) return `${(count / 1e3).toFixed(1)}k`;
  return count.toFixed(0);
}

function formatMBPerS(bytesPerSecond: number): string {
  return (bytesPerSecond / 1e6).toFixed(1);
}

export function formatLatency(us: number | null): string {
  if (us === null) return '-';
  if (us >= 1_000_000) return `${(us / 1_000_000).toFixed(2)} s`;
  if (us >= 1000) return `${(us / 1000).toFixed(2)} ms`;
  return `${us.toFixed(0)} µs`;
}

export interface ProgressSample {
  elapsedS: number;
  totalS: number;
  warmingUp: boolean;
  readIops: number;
  writeIops: number;
  readBytesPerSecond: number;
  writeBytesPerSecond: number;
  errno: number;
}

/**
 * The rates since the previous report. fio's reports are cumulative, and fio resets its
 * counters when the warm-up ends; across that reset (or at the first report) the sample
 * falls back to fio's own average.
 */
export function progressSample(previous: FioReport | null, current: FioReport, job: FioJob): ProgressSample {
  const now = current.jobs[0] as FioJobReport;
  const before = previous?.jobs[0];
  const seconds = previous === null ? 0 : (current.timestamp_ms - previous.timestamp_ms) / 1000;
  const measuredS = Math.max(now.read.runtime, now.write.runtime) / 1000;
  const rate = (side: 'read' | 'write', field: 'total_ios' | 'io_bytes'): number => {
    const delta = before === undefined ? -1 : now[side][field] - before[side][field];
    if (delta >= 0 && seconds > 0) return delta / seconds;
    return measuredS > 0 ? now[side][field] / measuredS : 0;
  };
  return {
    elapsedS: now.elapsed,
    totalS: job.rampTimeS + job.runtimeS,
    warmingUp: now.elapsed <= job.rampTimeS,
    readIops: rate('read', 'total_ios'),
    writeIops: rate('write', 'total_ios'),
    readBytesPerSecond: rate('read', 'io_bytes'),
    writeBytesPerSecond: rate('write', 'io_bytes'),
    errno: now.error,
  };
}

export function formatProgress(sample: ProgressSample): string {
  const parts = [
    `${String(Math.min(sample.elapsedS, sample.totalS)).padStart(String(sample.totalS).length)}s/${sample.totalS}s`,
    sample.warmingUp ? 'warm-up' : '',
    `read ${formatCount(sample.readIops)} IOPS ${formatMBPerS(sample.readBytesPerSecond)} MB/s`,
    `write ${formatCount(sample.writeIops)} IOPS ${formatMBPerS(sample.writeBytesPerSecond)} MB/s`,
    sample.errno === 0 ? '' : 'error',
  ];
  return parts.filter((part) => part !== '').join('  ');
}

function describeWorkload(job: FioJob): string {
  const mix = job.rwmixwrite === undefined ? '' : `, ${job.rwmixwrite}% writes`;
  return `${job.rw}${mix}, ${formatBytes(job.blockSizeBytes)} blocks, ${job.numjobs} job${job.numjobs === 1 ? '' : 's'} x depth ${job.iodepth}`;
}

export function formatSummary(summary: LoadtestSummary, job: FioJob): string {
  const header = `${summary.volume === '' ? '(default export)' : summary.volume}: ${(summary.measuredMs / 1000).toFixed(1)} s measured${summary.interrupted ? ' (interrupted)' : ''}; ${describeWorkload(job)}${job.verify === undefined ? '' : `, verified (${job.verify})`}`;
  const columns = (cells: string[]): string => cells.map((cell, index) => (index === 0 ? cell.padEnd(6) : cell.padStart(11))).join('');
  const row = (label: string, side: DirectionSummary): string =>
    columns([label, side.iops.toFixed(0), formatMBPerS(side.bytesPerSecond), formatLatency(side.latencyUsP50), formatLatency(side.latencyUsP99), formatLatency(side.latencyUsP999)]);
  const errors = summary.errno === 0 ? 'none' : `${formatErrno(summary.errno, summary.errnoName)}${summary.error === null ? '' : `: ${summary.error}`}`;
  return [
    header,
    columns(['', 'IOPS', 'MB/s', 'lat p50', 'lat p99', 'lat p99.9']),
    row('read', summary.read),
    row('write', summary.write),
    `errors: ${errors}`,
    '',
  ].join('\n');
}

/** One line rewritten in place on a terminal; elsewhere a new line every few seconds. */
class ProgressLine {
  private shown = false;
  private lastLineMs = Date.now();

  constructor(private readonly stream: NodeJS.WriteStream) {}

  update(line: string): void {
    if (this.stream.isTTY === true) {
      this.stream.write(`\r${line}\x1b[K`);
      this.shown = true;
      return;
    }
    const nowMs = Date.now();
    if (nowMs - this.lastLineMs < progressIntervalMsNonTty) return;
    this.lastLineMs = nowMs;
    this.stream.write(`${line}\n`);
  }

  clear(): void {
    if (this.shown) this.stream.write('\r\x1b[K');
    this.shown = false;
  }
}

// ---------------------------------------------------------------------------------------
// Running the tools

interface ExportInfo {
  sizeBytes: number;
  readOnly: boolean;
}

/** Runs a helper program to completion within `timeoutMs`; a missing program is reported as `missing`. */
function runTool(command: string, args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string } | 'missing'> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ENOENT') resolve('missing');
      else reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The export's size and whether it is read-only, from nbdinfo; a refusal becomes one line. */
async function probeExport(uri: string, log: Logger): Promise<ExportInfo> {
  const result = await runTool('nbdinfo', ['--json', uri], nbdinfoTimeoutMs);
  if (result === 'missing') throw new ExportUnavailableError('nbdinfo not found: install libnbd-bin (Debian, Ubuntu) or libnbd (Fedora)');
  if (result.code !== 0) {
    log.debug({ uri, code: result.code, stderr: result.stderr }, 'nbdinfo failed');
    const reason = result.stderr.trim().split('\n')[0]?.replace(/^nbdinfo: (?:nbd_\w+: )*/, '') || `nbdinfo exited ${result.code ?? 'on a signal'}`;
    throw new ExportUnavailableError(`cannot open ${uri}: ${reason}`);
  }
  try {
    const info = JSON.parse(result.stdout) as { exports?: Array<{ 'export-size'?: unknown; is_read_only?: unknown }> };
    const entry = info.exports?.[0];
    const sizeBytes = entry?.['export-size'];
    if (typeof sizeBytes !== 'number' || !Number.isSafeInteger(sizeBytes)) throw new Error('no export-size');
    return { sizeBytes, readOnly: entry?.is_read_only === true };
  } catch (err) {
    log.debug({ err, stdout: result.stdout }, 'nbdinfo output not understood');
    throw new ExportUnavailableError(`cannot read the size of ${uri} from nbdinfo: ${(err as Error).message}`);
  }
}

interface FioRun {
  exitCode: number | null;
  exitSignal: NodeJS.Signals | null;
  finalReport: FioReport | null;
  messages: string[];
  interruptedBy: NodeJS.Signals | null;
  overran: boolean;
}

/**
 * Runs fio on `jobText` in a scratch directory, calls `onReport` with each report, and
 * bounds the run: SIGINT at the bound (or at our own SIGINT/SIGTERM), SIGKILL if fio does
 * not stop within fioKillGraceMs or at a second signal.
 */
async function runFio(jobText: string, job: FioJob, log: Logger, onReport: (report: FioReport) => void): Promise<FioRun> {
  const scratchDir = await fs.promises.mkdtemp(path.join(tmpdir(), 'meshblock-loadtest-'));
  try {
    const jobPath = path.join(scratchDir, 'loadtest.fio');
    await fs.promises.writeFile(jobPath, jobText);
    const fioArgs = ['--output-format=json', `--status-interval=${fioStatusIntervalS}`, jobPath];
    log.debug({ fioArgs, scratchDir }, 'starting fio');
    let finalReport: FioReport | null = null;
    const parser = new FioOutputParser((report) => {
      finalReport = report;
      onReport(report);
    }, log);
    // Its own process group: a terminal's Ctrl-C reaches us alone, and we pass it on once.
    const child = spawn('fio', fioArgs, { cwd: scratchDir, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let running = true;
    const signalFio = (signal: NodeJS.Signals): void => {
      if (!running || child.pid === undefined) return;
      try {
        process.kill(-child.pid, signal);
      } catch (err) {
        log.debug({ err, signal }, 'fio already gone');
      }
    };
    let interruptedBy: NodeJS.Signals | null = null;
    let overran = false;
    let killTimer: NodeJS.Timeout | undefined;
    const stop = (): void => {
      signalFio('SIGINT');
      killTimer ??= setTimeout(() => {
        log.warn({ graceMs: fioKillGraceMs }, 'fio did not stop: killing it');
        signalFio('SIGKILL');
      }, fioKillGraceMs);
    };
    const onSignal = (signal: NodeJS.Signals): void => {
      if (interruptedBy !== null) {
        log.warn({ signal }, 'second signal: killing fio');
        signalFio('SIGKILL');
        return;
      }
      interruptedBy = signal;
      log.info({ signal }, 'stopping fio');
      stop();
    };
    const killOnExit = (): void => signalFio('SIGKILL');
    const boundMs = (job.runtimeS + job.rampTimeS) * 1000 * (job.verify === undefined ? 1 : 2) + fioOverrunMarginMs;
    const boundTimer = setTimeout(() => {
      overran = true;
      log.warn({ boundMs }, 'fio overran its time bound: stopping it');
      stop();
    }, boundMs);
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    process.on('exit', killOnExit);
    try {
      child.stdout.setEncoding('utf8').on('data', (text: string) => parser.push(text));
      let stderrPartial = '';
      child.stderr.setEncoding('utf8').on('data', (text: string) => {
        const lines = (stderrPartial + text).split('\n');
        stderrPartial = lines.pop() ?? '';
        for (const line of lines) parser.addMessage(line);
      });
      const [exitCode, exitSignal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
        child.on('error', (err: NodeJS.ErrnoException) => {
          running = false;
          reject(err.code === 'ENOENT' ? new FioFailedError('fio not found: install fio (apt install fio, dnf install fio)') : err);
        });
        child.on('exit', () => {
          running = false;
          // Whatever fio left holding its pipes must not keep us waiting for them to close.
          setTimeout(() => {
            child.stdout.destroy();
            child.stderr.destroy();
          }, fioPipesDrainMs).unref();
        });
        child.on('close', (code, signal) => resolve([code, signal]));
      });
      parser.end();
      parser.addMessage(stderrPartial);
      log.debug({ exitCode, exitSignal, messages: parser.messages }, 'fio exited');
      return { exitCode, exitSignal, finalReport, messages: parser.messages, interruptedBy, overran };
    } finally {
      clearTimeout(boundTimer);
      clearTimeout(killTimer);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      process.off('exit', killOnExit);
    }
  } finally {
    await fs.promises.rm(scratchDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------
// The command

export async function loadtest(args: LoadtestArgs): Promise<void> {
  const log = createRootLogger(args['log-level'], 'loadtest');
  const uri = volumeUri(args);
  const workload = loadtestJob(args);
  const exportInfo = await probeExport(uri, log);
  const writes = workload.rw !== 'read' && workload.rw !== 'randread';
  if (writes && exportInfo.readOnly) throw new ExportReadOnlyError(`${uri} is read-only and the workload (${workload.rw}) writes`);
  const regionField = args.diskspd === undefined ? '--size' : '--diskspd (-B, -c, -f, -T)';
  const job = fitJobToExport(workload, uri, exportInfo.sizeBytes, regionField);
  const jobText = fioJobText(job);
  log.info({ uri, exportSizeBytes: exportInfo.sizeBytes, job }, 'running fio');
  if (!args.json) process.stdout.write(`${jobText}\n`);

  const progress = new ProgressLine(process.stderr);
  let previous: FioReport | null = null;
  const run = await runFio(jobText, job, log, (report) => {
    if (previous !== null && report.timestamp_ms - previous.timestamp_ms < progressSampleMsMin) return;
    progress.update(formatProgress(progressSample(previous, report, job)));
    previous = report;
  });
  progress.clear();

  const fioMessage = run.messages[0]?.replace(/^fio: /, '') ?? '';
  if (run.finalReport === null) {
    if (run.interruptedBy !== null) throw new LoadtestInterruptedError(`interrupted by ${run.interruptedBy} before fio reported anything`);
    if (run.overran) throw new FioFailedError(`fio did not finish within runtime plus ${fioOverrunMarginMs / 1000} s and was killed before it reported`);
    throw new FioFailedError(`fio exited ${run.exitCode ?? run.exitSignal} without a report${fioMessage === '' ? '' : `: ${fioMessage}`}`);
  }
  const summary = summarize(run.finalReport, { volume: args.volume, uri, fioJob: jobText, interrupted: run.interruptedBy !== null, messages: run.messages });
  process.stdout.write(args.json ? `${JSON.stringify(summary, null, 2)}\n` : formatSummary(summary, job));

  if (run.interruptedBy !== null) {
    throw new LoadtestInterruptedError(`interrupted by ${run.interruptedBy}: the summary covers the first ${(summary.measuredMs / 1000).toFixed(1)} s`);
  }
  if (run.overran) throw new FioFailedError(`fio ran past runtime plus ${fioOverrunMarginMs / 1000} s and was stopped: the summary is partial`);
  if (summary.errno !== 0) {
    throw new FioFailedError(`fio stopped on ${formatErrno(summary.errno, summary.errnoName)}${summary.error === null ? '' : `: ${summary.error}`}`);
  }
  if (run.exitCode !== 0) {
    throw new FioFailedError(`fio exited ${run.exitCode ?? run.exitSignal}${fioMessage === '' ? '' : `: ${fioMessage}`}`);
  }
}
