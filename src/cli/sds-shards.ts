// meshblock sds start --shards N: one SDS over several cores, as N shard processes.
//
// One SDS process is one event loop, so one core. With --shards N the command starts no SDS
// itself: it runs N shard processes (`meshblock sds start` again), each a whole SDS with its
// own id, name (NAME.k), port (PORT+k-1), data directory (DATA-DIR/shard-k) and some of the
// host's devices, and watches them. The MDM sees N SDSs with one host label; a label is a
// failure domain, so the two copies of a chunk never sit on two shards of one host. This is
// Ceph's and Vitastor's model (an OSD per disk) rather than worker threads: every SDS path
// (rebuild, scrub, crash recovery, the MDM link) stays what is tested; docs/cores.md says why.
//
// The supervisor:
// - spreads the devices named on the command line over the shards round-robin at the first
//   start and keeps the assignment and N in DATA-DIR/shards.json (a later start with another
//   N is refused: each device holds its shard's data); a device new on the command line goes
//   to the shard with the fewest;
// - restarts a shard that dies after it was ready (1 s, doubling to 30 s; back to 1 s once it
//   stayed up a minute), and stops everything with exit 1 when a shard fails before its first
//   ready (a wrong device or flag would fail again and again);
// - stops every shard on SIGTERM/SIGINT by closing its IPC channel (each drains as a lone SDS
//   does), kills them on a second signal. A shard drains when the channel closes, so also
//   when its supervisor is gone, even by kill -9 (sds-start.ts).

import { spawn, type ChildProcess } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { replaceFileDurably } from '../common/durable-file.js';
import { autoShardCount, shardName, shardNameTooLong, type ShardCountRequest } from '../common/sds-shards.js';
import { InvalidArgumentError, MeshblockError } from '../common/errors.js';
import { nameBytesMax, sdsShardRestartDelayMsMax, sdsShardRestartDelayMsMin, sdsShardStableMs, sdsShardsMax } from '../common/limits.js';
import { formatHostPort, parseHostPort } from '../common/address.js';
import { metricsAddressOf } from '../common/metrics.js';
import { nodeCommand } from '../common/node-command.js';
import { readStateFile } from '../sds/state.js';
import { meshblockEntry } from './lab-processes.js';
import { runUntilSignal, shutdownDrainMs } from './signals.js';

/** The environment variable that tells `sds start` it is shard k of a supervisor (its value). */
export const shardEnvVar = 'MESHBLOCK_SDS_SHARD';

const shardsFileName = 'shards.json';

/** What a shard tells its supervisor over IPC once it serves. */
export interface ShardReady {
  type: 'ready';
  name: string;
  sdsId: string;
  address: string;
}

/** DATA-DIR/shards.json. */
export interface ShardsFile {
  shards: number;
  /** Device path -> shard (1..shards), for the devices named on the command line. */
  devices: Record<string, number>;
}

export function readShardsFile(dataDir: string): ShardsFile | null {
  return readStateFile(path.join(dataDir, shardsFileName), (parsed) => {
    const entry = parsed as Partial<ShardsFile> | null;
    if (entry === null || typeof entry !== 'object' || !Number.isSafeInteger(entry.shards) || (entry.shards as number) < 2 || (entry.shards as number) > sdsShardsMax) {
      throw new Error(`shards must be a count from 2 to ${sdsShardsMax}`);
    }
    const shards = entry.shards as number;
    if (entry.devices === null || typeof entry.devices !== 'object' || Array.isArray(entry.devices)) throw new Error('devices must be an object');
    for (const [device, shard] of Object.entries(entry.devices)) {
      if (!Number.isSafeInteger(shard) || shard < 1 || shard > shards) throw new Error(`device ${device} is on shard ${String(shard)}, not 1 to ${shards}`);
    }
    return { shards, devices: entry.devices };
  });
}

/**
 * The shard of every device named: the one it had, or, for a device new here, the shard with
 * the fewest devices (the lowest of those), so that a first start goes round-robin.
 */
export function assignDevices(file: ShardsFile, named: readonly string[]): ShardsFile {
  const devices = { ...file.devices };
  const counts = new Array<number>(file.shards + 1).fill(0);
  for (const shard of Object.values(devices)) counts[shard] = (counts[shard] ?? 0) + 1;
  for (const device of named) {
    if (devices[device] !== undefined) continue;
    let fewest = 1;
    for (let shard = 2; shard <= file.shards; shard++) if ((counts[shard] ?? 0) < (counts[fewest] ?? 0)) fewest = shard;
    devices[device] = fewest;
    counts[fewest] = (counts[fewest] ?? 0) + 1;
  }
  return { shards: file.shards, devices };
}

export interface ShardedStart {
  name: string;
  dataDir: string;
  shards: number;
  /** Devices named on this command line, resolved. */
  devices: string[];
  listen: string;
  /** --metrics as given (undefined: the role's default port): shard k serves on its port + k - 1, as the data port. */
  metrics: string | undefined;
  secretFile: string;
  host: string;
  /** DATA-DIR/shards.json as resolveShardCount read it: null at the first start. */
  remembered: ShardsFile | null;
  /** Arguments every shard gets as they are (--mdm, --cluster-id, --io, ...). */
  passOn: string[];
  log: Logger;
}

/**
 * The shard count this start runs with: the one remembered in DATA-DIR (a different --shards
 * is refused), else --shards (auto resolved). 1 means one plain SDS process. With what was
 * remembered, which runShards goes on from.
 */
export function resolveShardCount(dataDir: string, requested: ShardCountRequest | undefined, devicesNamed: number, singleProcessState: boolean): { shards: number; remembered: ShardsFile | null } {
  const remembered = readShardsFile(dataDir);
  if (remembered !== null) {
    const wanted = requested === 'auto' || requested === undefined ? remembered.shards : requested;
    if (wanted !== remembered.shards) {
      throw new InvalidArgumentError('--shards', `${dataDir} holds an SDS of ${remembered.shards} shards, each with its own devices and data; it cannot become ${wanted} (start it with --shards ${remembered.shards}, or remove it from the cluster and start a new one)`);
    }
    return { shards: remembered.shards, remembered };
  }
  const count = requested === undefined ? 1 : requested === 'auto' ? autoShardCount(os.availableParallelism(), devicesNamed > 0 ? devicesNamed : null) : requested;
  if (count > 1 && singleProcessState) {
    throw new InvalidArgumentError('--shards', `${dataDir} holds a one-process SDS whose devices hold its data; it cannot be split into shards (start it without --shards, or remove it from the cluster and start a new one in another data directory)`);
  }
  return { shards: count, remembered: null };
}

interface Shard {
  index: number;
  name: string;
  args: string[];
  child: ChildProcess | null;
  ready: ShardReady | null;
  everReady: boolean;
  startedAtMs: number;
  restartDelayMs: number;
  restartTimer: NodeJS.Timeout | null;
}

/** Runs the shards until SIGTERM/SIGINT; rejects if a shard fails before its first ready. */
export async function runShards(start: ShardedStart): Promise<void> {
  const { log } = start;
  const longest = shardNameTooLong(start.name, start.shards);
  if (longest !== null) {
    throw new InvalidArgumentError('--name', `with ${start.shards} shards the shard names (up to '${longest}') must fit ${nameBytesMax} characters`);
  }
  const listen = parseHostPort('--listen', start.listen);
  if (listen.port !== 0 && listen.port + start.shards - 1 > 65535) {
    throw new InvalidArgumentError('--listen', `shard ports ${listen.port} to ${listen.port + start.shards - 1} go past 65535`);
  }
  const file = assignDevices(start.remembered ?? { shards: start.shards, devices: {} }, start.devices);
  replaceFileDurably(path.join(start.dataDir, shardsFileName), JSON.stringify(file, null, 1));

  const shards: Shard[] = [];
  for (let index = 1; index <= start.shards; index++) {
    const devices = start.devices.filter((device) => file.devices[device] === index);
    const address = formatHostPort({ host: listen.host, port: listen.port === 0 ? 0 : listen.port + index - 1 });
    const metricsWanted = metricsAddressOf('sds', start.metrics);
    const metrics = metricsWanted.address === null ? 'off' : formatHostPort({ host: metricsWanted.address.host, port: metricsWanted.address.port === 0 ? 0 : metricsWanted.address.port + index - 1 });
    const args = [
      'sds', 'start',
      '--name', shardName(start.name, index),
      '--data-dir', path.join(start.dataDir, `shard-${index}`),
      '--listen', address,
      // Given: each shard its port. Not given: each shard takes the default + k - 1 itself (sds-start.ts).
      ...(metricsWanted.given ? ['--metrics', metrics] : []),
      '--secret-file', start.secretFile,
      '--host', start.host,
      '--shards', '1',
      ...devices.flatMap((device) => ['--device', device]),
      ...start.passOn,
    ];
    shards.push({ index, name: shardName(start.name, index), args, child: null, ready: null, everReady: false, startedAtMs: 0, restartDelayMs: sdsShardRestartDelayMsMin, restartTimer: null });
  }

  let stopping = false;
  let failStartup: (err: Error) => void = () => {};
  const startupFailed = new Promise<never>((_resolve, reject) => {
    failStartup = reject;
  });
  let allReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    allReady = resolve;
  });
  const exits = new Set<Promise<void>>();

  const launch = (shard: Shard): void => {
    shard.restartTimer = null;
    shard.startedAtMs = Date.now();
    const node = nodeCommand();
    const child = spawn(node.command, [...node.args, meshblockEntry, ...shard.args], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, [shardEnvVar]: String(shard.index) },
    });
    shard.child = child;
    log.info({ shard: shard.name, pid: child.pid }, 'shard started');
    child.on('message', (message: unknown) => {
      const entry = message as Partial<ShardReady> | null;
      if (entry === null || typeof entry !== 'object' || entry.type !== 'ready') return;
      shard.ready = entry as ShardReady;
      shard.everReady = true;
      log.info({ shard: shard.name, sdsId: shard.ready.sdsId, address: shard.ready.address }, 'shard ready');
      if (shards.every((each) => each.ready !== null)) allReady();
    });
    const exited = new Promise<void>((resolve) => {
      child.on('exit', (code, signal) => {
        shard.child = null;
        shard.ready = null;
        exits.delete(exited);
        resolve();
        if (stopping) return;
        if (!shard.everReady) {
          failStartup(new MeshblockError('MB_ERR_SDS_SHARD_FAILED', `shard ${shard.name} ${describeExit(code, signal)} before it was ready (its message is above)`));
          return;
        }
        if (Date.now() - shard.startedAtMs >= sdsShardStableMs) shard.restartDelayMs = sdsShardRestartDelayMsMin;
        log.error({ shard: shard.name, code, signal, restartInMs: shard.restartDelayMs }, `shard ${describeExit(code, signal)}; restarting it`);
        shard.restartTimer = setTimeout(() => launch(shard), shard.restartDelayMs);
        shard.restartDelayMs = Math.min(shard.restartDelayMs * 2, sdsShardRestartDelayMsMax);
      });
    });
    exits.add(exited);
    child.on('error', (err) => log.error({ err, shard: shard.name }, 'shard process error'));
  };

  // Closing the IPC channel asks a shard to drain; unlike a second SIGTERM it never aborts
  // one that the terminal's or systemd's signal to the whole group already reached.
  const stopAll = async (): Promise<void> => {
    stopping = true;
    for (const shard of shards) {
      if (shard.restartTimer !== null) clearTimeout(shard.restartTimer);
      shard.restartTimer = null;
      if (shard.child?.connected === true) shard.child.disconnect();
      else shard.child?.kill('SIGTERM');
    }
    await Promise.all([...exits]);
  };

  for (const shard of shards) launch(shard);
  try {
    await Promise.race([ready, startupFailed]);
  } catch (err) {
    await stopAll();
    throw err;
  }
  log.info({ shards: shards.map((shard) => ({ name: shard.name, sdsId: shard.ready?.sdsId, address: shard.ready?.address })), host: start.host }, 'sds shards ready');
  process.stdout.write(`sds ${start.name}: ${start.shards} shards ready\n`);

  await runUntilSignal(
    log,
    // Each shard drains within its own shutdownDrainMs; past that and a margin, it is killed.
    async () => {
      const killTimer = setTimeout(() => {
        for (const shard of shards) shard.child?.kill('SIGKILL');
      }, shutdownDrainMs + 5_000);
      try {
        await stopAll();
      } finally {
        clearTimeout(killTimer);
      }
    },
    () => {
      stopping = true;
      for (const shard of shards) shard.child?.kill('SIGKILL');
    },
  );
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal !== null ? `was killed by ${signal}` : `exited with code ${String(code)}`;
}
