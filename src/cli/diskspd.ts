// The fio job that `meshblock loadtest` runs, and the translation of Microsoft diskspd's
// flags into it, for people following Windows storage guides
// (`diskspd -b4k -d60 -L -o2 -t4 -r -w70 -c500M testfile.dat`).
//
// Everything here is pure: flags in, a job out, a job in, fio's ini text out. The volume
// (fio's nbd engine `uri=`) and its size are filled in later by loadtest.ts, which knows
// the server. diskspd's own meanings are taken from its usage text (CmdLineParser.cpp):
// sizes take K/M/G (binary) or `b` (blocks of the -b size); defaults are -b64K -o2 -t1 -d10
// -W5 -w0, sequential. A flag that would change what is measured and has no fio equivalent
// is refused, naming the flag; one that only concerns diskspd's own reporting or the Windows
// cache manager is accepted and explained in a comment of the printed job.

import { InvalidArgumentError, OutOfRangeError } from '../common/errors.js';
import { nbdRequestBytesMax } from '../common/limits.js';
import { GiB, KiB, MiB } from '../common/units.js';

export type FioRw = 'read' | 'write' | 'rw' | 'randread' | 'randwrite' | 'randrw';
export const fioRwChoices: readonly FioRw[] = ['randrw', 'randread', 'randwrite', 'read', 'write', 'rw'];

export type VerifyAlgorithm = 'crc32c' | 'md5' | 'sha256';
export const verifyChoices: readonly VerifyAlgorithm[] = ['crc32c', 'md5', 'sha256'];

/**
 * What fills write buffers: fio's default (random bytes, filled once per buffer and reused),
 * zeros (diskspd -Z, fio zero_buffers), or fresh random bytes for every I/O (diskspd -Zr,
 * fio refill_buffers).
 */
export type WriteBuffers = 'random-reused' | 'zero' | 'random-per-io';

/**
 * The random-offset generator's seed: fio's default fixed seed (the same offsets every run,
 * as diskspd without -z, whose seed is 0), a fresh seed each run (diskspd -z, fio
 * randrepeat=0), or a given seed (diskspd -z<seed>, fio randseed).
 */
export type RandomSeed = 'repeatable' | 'per-run' | number;

/** One fio job over one NBD export. Field comments name the fio option each one becomes. */
export interface FioJob {
  /** Printed as `# ` lines above the job: where it came from, and what was not translated. */
  comments: string[];
  /** `uri=`: the NBD URI for fio's nbd engine; undefined until loadtest resolves the volume. */
  uri: string | undefined;
  /** `rw=` */
  rw: FioRw;
  /** Sequential only: bytes skipped after each I/O (`rw=read:<skip>`), diskspd's stride minus the block size. */
  sequentialSkipBytes: number;
  /** `rwmixwrite=`: percentage of writes; mixed workloads (rw, randrw) only. */
  rwmixwrite: number | undefined;
  /** `percentage_random=`: the rest of the I/Os are sequential (diskspd -rs). */
  percentageRandom: number | undefined;
  /** `bs=` */
  blockSizeBytes: number;
  /** `blockalign=`: random offsets are multiples of this; undefined: the block size. */
  blockAlignBytes: number | undefined;
  /** `iodepth=`: I/Os in flight per job. */
  iodepth: number;
  /** `numjobs=`: jobs (each its own NBD connection) running the same workload. */
  numjobs: number;
  /** `runtime=` (with `time_based=1`): the measured time. */
  runtimeS: number;
  /** `ramp_time=`: I/O issued before measuring starts (diskspd -W). */
  rampTimeS: number;
  /** `offset=`: where each job's region starts. */
  offsetBytes: number;
  /** `offset_increment=`: job n starts n times this further in (diskspd -T). */
  offsetIncrementBytes: number;
  /** `size=`: each job's region; undefined: from the offset to the end of the export. */
  sizeBytes: number | undefined;
  /** `randrepeat=0` or `randseed=` */
  randomSeed: RandomSeed;
  /** `zero_buffers=1` or `refill_buffers=1` */
  writeBuffers: WriteBuffers;
  /**
   * `verify=` with `verify_fatal=1`, `verify_state_save=0` (no state file left behind) and
   * `verify_backlog=`: fio checks blocks as the run goes, not after it, because a time-based
   * run is cut off at its runtime before an end-of-run check would get far.
   */
  verify: VerifyAlgorithm | undefined;
}

/** Limits on what a job may ask for; flags outside them are refused, never clamped. */
export const iodepthMax = 4096;
/** Each fio job opens its own NBD connection. */
export const numjobsMax = 256;
export const runtimeSMax = 7 * 24 * 3600;
/** The largest request meshblock's NBD server takes. */
export const blockSizeBytesMax = nbdRequestBytesMax;

/** With --verify, fio reads back and checks the blocks it wrote after every this many writes. */
export const verifyBacklogBlocks = 1024;

/** The percentiles every summary reports, as fio's `percentile_list=`. */
export const latencyPercentiles = ['50', '99', '99.9'] as const;

/** The fio job's section name; the volume is in `uri=`, so no name from the user needs escaping here. */
export const fioJobName = 'loadtest';

// ---------------------------------------------------------------------------------------
// diskspd flags

/** diskspd's defaults (its usage text), applied when the flag is absent. */
export const diskspdDefaults = {
  blockSizeBytes: 64 * KiB,
  outstandingPerThread: 2,
  threadsPerTarget: 1,
  durationS: 10,
  warmupS: 5,
} as const;

/**
 * diskspd flags that are recognised and refused: each changes what is measured in a way
 * fio's nbd engine cannot reproduce, or only makes sense on Windows.
 */
const diskspdUnsupported: Record<string, string> = {
  '?': 'diskspd usage; see meshblock loadtest --help',
  a: 'CPU affinity is Windows scheduling, not part of the workload',
  e: 'ETW tracing exists only on Windows',
  g: 'a per-thread throughput cap has no exact fio equivalent (fio caps reads and writes separately)',
  i: 'I/O bursts (-i/-j) have no exact fio equivalent',
  j: 'I/O bursts (-i/-j) have no exact fio equivalent',
  I: 'I/O priority is a Windows kernel hint',
  l: 'large pages for I/O buffers are a Windows memory option',
  n: 'CPU affinity is Windows scheduling, not part of the workload',
  p: 'parallel I/Os at the same offset have no fio equivalent',
  R: 'the output format is chosen with --json',
  x: 'completion routines are a Windows I/O API choice',
  X: 'XML profiles are not translated; give the flags instead',
  y: 'named-event synchronisation exists only on Windows',
};

/** diskspd flags accepted without effect on the job: what they controlled does not exist here. */
const diskspdOutputOnly: Record<string, string> = {
  v: 'diskspd verbose output: not translated',
  P: 'diskspd progress dots: meshblock loadtest prints its own progress line',
  D: 'diskspd IOPS-interval statistics: not translated',
};

interface DiskspdFlag {
  /** The flag's name in errors, e.g. `-b` (also for `/b4k`). */
  name: string;
  /** The flag as the user wrote it, e.g. `-b4k`. */
  token: string;
  /** What follows the flag letter(s), e.g. `4k`. */
  value: string;
}

/**
 * Translates diskspd flags into a fio job. Each element of `argv` may hold several flags
 * separated by spaces (`--diskspd "-b4k -d60"`). Flags start with `-` or `/`, as diskspd
 * accepts both. A target (a file name, `#1`, `C:`) is refused: the volume is the target.
 * Throws InvalidArgumentError or OutOfRangeError whose `field` is the flag (`-b`, `-w`, ...).
 */
export function translateDiskspd(argv: readonly string[]): FioJob {
  const tokens = argv.flatMap((element) => element.split(/\s+/)).filter((token) => token !== '');
  if (tokens.length === 0) throw new InvalidArgumentError('--diskspd', 'give diskspd flags after it, e.g. --diskspd -b4k -d60 -o2 -t4 -r -w70');
  const flags = new Map<string, DiskspdFlag>();
  const comments = [`translated from diskspd: ${tokens.join(' ')}`];
  for (const token of tokens) {
    if (!/^[-/]./.test(token)) {
      throw new InvalidArgumentError('--diskspd', `'${token}' is not a flag; a diskspd target (file, #disk, drive) has no place here: VOLUME is the target`);
    }
    const body = token.slice(1);
    const letter = body[0] as string;
    // -rs<pct> is its own flag beside -r<align>; every other flag is one letter.
    const key = letter === 'r' && body[1] === 's' ? 'rs' : letter;
    const value = body.slice(key.length);
    const reason = diskspdUnsupported[letter];
    if (reason !== undefined) throw new InvalidArgumentError(`-${letter}`, `diskspd ${token} is not supported by meshblock loadtest: ${reason}`);
    if (!/^(?:[bBcCdDfFhLoOPrsStTvwWzZ]|rs)$/.test(key)) throw new InvalidArgumentError(`-${letter}`, `'${token}' is not a diskspd flag`);
    if (flags.has(key)) throw new InvalidArgumentError(`-${key}`, `given twice (${flags.get(key)?.token} and ${token})`);
    flags.set(key, { name: `-${key}`, token, value });
  }
  const flag = (key: string): DiskspdFlag | undefined => flags.get(key);

  const blockFlag = flag('b');
  const blockSizeBytes = blockFlag === undefined ? diskspdDefaults.blockSizeBytes : diskspdSizeBytes('-b', blockFlag, undefined);
  if (blockSizeBytes < 1 || blockSizeBytes > blockSizeBytesMax) {
    throw new OutOfRangeError('-b', `from 1 byte to ${blockSizeBytesMax / MiB} MiB`, blockFlag?.token);
  }
  const size = (key: string): number | undefined => {
    const given = flag(key);
    return given === undefined ? undefined : diskspdSizeBytes(`-${key}`, given, blockSizeBytes);
  };

  for (const [key, note] of Object.entries(diskspdOutputOnly)) {
    const given = flag(key);
    if (given === undefined) continue;
    // -P and -D take a count, which is checked although it changes nothing here.
    if (key === 'v' && given.value !== '') throw new InvalidArgumentError('-v', `'${given.token}' takes no value`);
    if (key !== 'v' && given.value !== '') diskspdCount(given.name, given, 1, Number.MAX_SAFE_INTEGER);
    comments.push(`${given.token}: ${note}`);
  }

  // Threads and outstanding I/Os: with one target, threads per target (-t) and total
  // threads (-F) are the same thing, and so are -o and -O.
  if (flag('t') !== undefined && flag('F') !== undefined) throw new InvalidArgumentError('-F', 'conflicts with -t (as in diskspd)');
  if (flag('o') !== undefined && flag('O') !== undefined) throw new InvalidArgumentError('-O', 'give -o or -O, not both');
  const threadsFlag = flag('t') ?? flag('F');
  const numjobs = threadsFlag === undefined ? diskspdDefaults.threadsPerTarget : diskspdCount(threadsFlag.name, threadsFlag, 1, numjobsMax);
  const depthFlag = flag('o') ?? flag('O');
  const iodepth = depthFlag === undefined ? diskspdDefaults.outstandingPerThread : diskspdCount(depthFlag.name, depthFlag, 1, iodepthMax);

  const durationFlag = flag('d');
  const runtimeS = durationFlag === undefined ? diskspdDefaults.durationS : diskspdCount('-d', durationFlag, 1, runtimeSMax);
  const warmupFlag = flag('W');
  const rampTimeS = warmupFlag === undefined ? diskspdDefaults.warmupS : diskspdCount('-W', warmupFlag, 0, runtimeSMax);
  const cooldownFlag = flag('C');
  if (cooldownFlag !== undefined) {
    diskspdCount('-C', cooldownFlag, 0, runtimeSMax);
    comments.push(`${cooldownFlag.token}: cool-down not translated: it only keeps I/O going after measuring ends, and fio has none`);
  }

  // Access pattern. -r (and -rs) make it random and override -s, as in diskspd.
  const random = flag('r') !== undefined || flag('rs') !== undefined;
  const alignBytes = flag('r')?.value === '' ? undefined : size('r');
  if (alignBytes !== undefined && alignBytes < 1) throw new OutOfRangeError('-r', 'an alignment of at least 1 byte', flag('r')?.token);
  const randomPercentFlag = flag('rs');
  const percentageRandom = randomPercentFlag === undefined ? undefined : diskspdCount('-rs', randomPercentFlag, 0, 100);
  let sequentialSkipBytes = 0;
  const strideFlag = flag('s');
  if (strideFlag !== undefined) {
    if (strideFlag.value.startsWith('i')) {
      throw new InvalidArgumentError('-s', `diskspd ${strideFlag.token} (interlocked: threads share one offset) is not supported: fio jobs keep their own offsets`);
    }
    const strideBytes = strideFlag.value === '' ? blockSizeBytes : (size('s') as number);
    if (random) {
      comments.push(`${strideFlag.token}: ignored: -r overrides -s (as in diskspd)`);
    } else if (strideBytes < blockSizeBytes) {
      throw new OutOfRangeError('-s', `a stride of at least the block size (${blockSizeBytes} bytes): shorter strides overlap I/Os, which fio cannot do`, strideFlag.token);
    } else {
      sequentialSkipBytes = strideBytes - blockSizeBytes;
    }
  }

  const writeFlag = flag('w');
  const writePercent = writeFlag === undefined || writeFlag.value === '' ? 0 : diskspdCount('-w', writeFlag, 0, 100);
  const rw: FioRw =
    writePercent === 0 ? (random ? 'randread' : 'read') : writePercent === 100 ? (random ? 'randwrite' : 'write') : random ? 'randrw' : 'rw';

  // The region: -B base offset, -c (the size diskspd would create the file at) and -f (use
  // only the first bytes of the target) both bound it; the smaller one wins.
  const offsetBytes = size('B') ?? 0;
  const createBytes = size('c');
  if (createBytes !== undefined) {
    if (createBytes < 1) throw new OutOfRangeError('-c', 'at least 1 byte', flag('c')?.token);
    comments.push(`${flag('c')?.token}: diskspd would create a file this size; here it bounds the region tested on the volume`);
  }
  let maxBytes: number | undefined;
  const targetFlag = flag('f');
  if (targetFlag !== undefined) {
    if (/^[rst]+$/.test(targetFlag.value)) {
      comments.push(`${targetFlag.token}: Windows cache-manager access hints: not translated (no page cache between fio's nbd engine and the server)`);
    } else {
      maxBytes = size('f');
      if (maxBytes !== undefined && maxBytes < 1) throw new OutOfRangeError('-f', 'at least 1 byte', targetFlag.token);
    }
  }
  const endBytes = createBytes === undefined ? maxBytes : maxBytes === undefined ? createBytes : Math.min(createBytes, maxBytes);
  let sizeBytes: number | undefined;
  if (endBytes !== undefined) {
    sizeBytes = endBytes - offsetBytes;
    if (sizeBytes < blockSizeBytes) {
      throw new OutOfRangeError('-B', `a base offset at least one block (-b) before the end of the region (${endBytes} bytes)`, flag('B')?.token ?? '0');
    }
  }
  const offsetIncrementBytes = size('T') ?? 0;
  if (flag('T') !== undefined && numjobs === 1) comments.push(`${flag('T')?.token}: thread stride has no effect with one thread`);

  // Latency and caching: what diskspd switches on or off here either always happens or has
  // no counterpart once fio speaks NBD to the server itself.
  if (flag('L') !== undefined) {
    if (flag('L')?.value !== '') throw new InvalidArgumentError('-L', `'${flag('L')?.token}' takes no value`);
    comments.push('-L: latency is always measured (lat_percentiles=1 below)');
  }
  const cacheFlags = [flag('S'), flag('h')].filter((given): given is DiskspdFlag => given !== undefined);
  for (const given of cacheFlags) {
    const modes = given.name === '-h' ? 'h' : given.value;
    if (given.name === '-h' && given.value !== '') throw new InvalidArgumentError('-h', `'${given.token}' takes no value`);
    if (!/^[bhruw]*$/.test(modes)) throw new InvalidArgumentError('-S', `'${given.token}': caching modes are b, h, r, u and w`);
    if (modes === 'b') {
      comments.push(`${given.token}: caching on, diskspd's default: nothing to translate`);
      continue;
    }
    const writeThrough = /[hw]/.test(modes);
    comments.push(
      `${given.token}: not translated: fio's nbd engine has no page cache to bypass (direct=1 means nothing to it)` +
        (writeThrough ? ` and cannot send write-through (FUA) writes` : ''),
    );
  }

  const seedFlag = flag('z');
  const randomSeed: RandomSeed = seedFlag === undefined ? 'repeatable' : seedFlag.value === '' ? 'per-run' : diskspdCount('-z', seedFlag, 0, Number.MAX_SAFE_INTEGER);

  let writeBuffers: WriteBuffers = 'random-reused';
  const bufferFlag = flag('Z');
  if (bufferFlag !== undefined) {
    if (bufferFlag.value === '') {
      writeBuffers = 'zero';
    } else if (bufferFlag.value === 'r') {
      writeBuffers = 'random-per-io';
    } else if (bufferFlag.value.includes(',')) {
      throw new InvalidArgumentError('-Z', `diskspd ${bufferFlag.token} (write data from a file) is not supported`);
    } else {
      size('Z');
      comments.push(`${bufferFlag.token}: a random write buffer reused for every write: fio's default`);
    }
  }

  const defaulted = [
    blockFlag === undefined ? `-b${diskspdDefaults.blockSizeBytes / KiB}K` : '',
    depthFlag === undefined ? `-o${diskspdDefaults.outstandingPerThread}` : '',
    threadsFlag === undefined ? `-t${diskspdDefaults.threadsPerTarget}` : '',
    durationFlag === undefined ? `-d${diskspdDefaults.durationS}` : '',
    warmupFlag === undefined ? `-W${diskspdDefaults.warmupS}` : '',
  ].filter((text) => text !== '');
  if (defaulted.length > 0) comments.splice(1, 0, `diskspd defaults for flags not given: ${defaulted.join(' ')}`);

  return {
    comments,
    uri: undefined,
    rw,
    sequentialSkipBytes,
    rwmixwrite: rw === 'rw' || rw === 'randrw' ? writePercent : undefined,
    percentageRandom: random ? percentageRandom : undefined,
    blockSizeBytes,
    blockAlignBytes: random && alignBytes !== undefined && alignBytes !== blockSizeBytes ? alignBytes : undefined,
    iodepth,
    numjobs,
    runtimeS,
    rampTimeS,
    offsetBytes,
    offsetIncrementBytes,
    sizeBytes,
    randomSeed,
    writeBuffers,
    verify: undefined,
  };
}

/**
 * A diskspd size: digits with an optional K, M or G (binary) or, where `blockBytes` is
 * given, b for blocks of the -b size. diskspd takes no decimals and no T.
 */
function diskspdSizeBytes(field: string, flag: DiskspdFlag, blockBytes: number | undefined): number {
  const match = /^(\d+)([kmgb]?)$/i.exec(flag.value);
  const unit = (match?.[2] ?? '').toLowerCase();
  if (match === null || (unit === 'b' && blockBytes === undefined)) {
    const units = blockBytes === undefined ? 'K, M or G' : 'K, M, G or b (blocks)';
    throw new InvalidArgumentError(field, `'${flag.token}': expected a size in bytes, optionally with ${units}`);
  }
  const multiplier = unit === 'k' ? KiB : unit === 'm' ? MiB : unit === 'g' ? GiB : unit === 'b' ? (blockBytes as number) : 1;
  const bytes = Number(match[1]) * multiplier;
  if (!Number.isSafeInteger(bytes)) throw new OutOfRangeError(field, 'below 2^53 bytes', flag.token);
  return bytes;
}

function diskspdCount(field: string, flag: DiskspdFlag, min: number, max: number): number {
  if (!/^\d+$/.test(flag.value)) throw new InvalidArgumentError(field, `'${flag.token}': expected a whole number after ${field}`);
  const count = Number(flag.value);
  if (count < min || count > max) throw new OutOfRangeError(field, `from ${min} to ${max}`, flag.token);
  return count;
}

// ---------------------------------------------------------------------------------------
// fio's job file

/** A size as fio reads it (its default kb_base=1024: 4k is 4096 bytes). */
export function fioSize(bytes: number): string {
  for (const [unit, multiplier] of [['g', GiB], ['m', MiB], ['k', KiB]] as const) {
    if (bytes >= multiplier && bytes % multiplier === 0) return `${bytes / multiplier}${unit}`;
  }
  return String(bytes);
}

/** The job as an ini-style fio job file: comments, a [global] section with every option, one job section. */
export function fioJobText(job: FioJob): string {
  const options: Array<[string, string | number]> = [['ioengine', 'nbd']];
  if (job.uri !== undefined) options.push(['uri', job.uri]);
  options.push(['rw', job.sequentialSkipBytes > 0 ? `${job.rw}:${fioSize(job.sequentialSkipBytes)}` : job.rw]);
  if (job.rwmixwrite !== undefined) options.push(['rwmixwrite', job.rwmixwrite]);
  if (job.percentageRandom !== undefined) options.push(['percentage_random', job.percentageRandom]);
  options.push(['bs', fioSize(job.blockSizeBytes)]);
  if (job.blockAlignBytes !== undefined) options.push(['blockalign', fioSize(job.blockAlignBytes)]);
  options.push(['iodepth', job.iodepth], ['numjobs', job.numjobs]);
  if (job.offsetBytes > 0) options.push(['offset', fioSize(job.offsetBytes)]);
  if (job.offsetIncrementBytes > 0) options.push(['offset_increment', fioSize(job.offsetIncrementBytes)]);
  if (job.sizeBytes !== undefined) options.push(['size', fioSize(job.sizeBytes)]);
  options.push(['time_based', 1], ['runtime', job.runtimeS]);
  if (job.rampTimeS > 0) options.push(['ramp_time', job.rampTimeS]);
  if (job.randomSeed === 'per-run') options.push(['randrepeat', 0]);
  if (typeof job.randomSeed === 'number') options.push(['randseed', job.randomSeed]);
  if (job.writeBuffers === 'zero') options.push(['zero_buffers', 1]);
  if (job.writeBuffers === 'random-per-io') options.push(['refill_buffers', 1]);
  if (job.verify !== undefined) options.push(['verify', job.verify], ['verify_fatal', 1], ['verify_state_save', 0], ['verify_backlog', verifyBacklogBlocks]);
  // thread: jobs as threads of the one fio process. Forked jobs start sessions of their own,
  // so a job stuck on a dead server would outlive a SIGKILL of fio and hold its pipes open.
  options.push(['thread', 1], ['group_reporting', 1], ['lat_percentiles', 1], ['percentile_list', latencyPercentiles.join(':')]);
  const lines = [
    ...job.comments.map((comment) => `# ${comment}`),
    '[global]',
    ...options.map(([name, value]) => `${name}=${value}`),
    '',
    `[${fioJobName}]`,
  ];
  return `${lines.join('\n')}\n`;
}
