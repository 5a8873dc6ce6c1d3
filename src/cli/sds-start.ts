// meshblock sds start: one SDS process over its devices. With --mdm it registers with the
// MDM, which sends it placement maps and more devices; without, the placement map is
// given over the wire (SdsOp.SetMap) by whoever holds the cluster secret with role 'mdm'
// or 'test'. Either way the map is kept in the data directory across restarts.

import { mdmAddressesMax, nameBytesMax, sdsMemoryBudgetBytesDefault, sdsMemoryBudgetBytesMin, sdsShardsMax } from '../common/limits.js';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Level } from 'pino';
import type { Argv } from 'yargs';
import { formatHostPort, parseHostPort, parseHostPortList } from '../common/address.js';
import { InvalidArgumentError } from '../common/errors.js';
import { isName, nameRule } from '../common/names.js';
import { formatBytes, parseSizeBytes } from '../common/units.js';
import { ChunkStore } from '../sds/chunk-store.js';
import { deviceIoRequests, type DeviceIoRequest } from '../sds/device.js';
import { MdmLink } from '../sds/mdm-link.js';
import { SdsService } from '../sds/service.js';
import { loadState, saveState, type SdsState } from '../sds/state.js';
import { idPattern } from '../wire/placement.js';
import { createRootLogger, logLevels } from './log.js';
import { lockDataDir } from './pid-lock.js';
import { readSecretFile } from './secret.js';
import { parseShardCount } from '../common/sds-shards.js';
import { resolveShardCount, runShards, shardEnvVar, type ShardReady } from './sds-shards.js';
import { runUntilSignal } from './signals.js';
import { MetricsEndpoint, metricsAddressOf, metricsOption, parseMetricsAddress, setIoTiming } from '../common/metrics.js';
import { sdsMetrics } from '../sds/metrics.js';

export interface SdsStartArgs {
  name: string;
  device: string[] | undefined;
  listen: string;
  'data-dir': string | undefined;
  mdm: string | undefined;
  'cluster-id': string | undefined;
  'secret-file': string | undefined;
  'chunk-size': string;
  force: boolean;
  'payload-checksums': boolean;
  io: DeviceIoRequest;
  host: string | undefined;
  shards: string | undefined;
  'memory-budget': string | undefined;
  metrics: string | undefined;
  'log-level': Level;
}

/** ScaleIO's SDS port. */
export const defaultSdsPort = 7072;

export function sdsStartOptions(yargs: Argv): Argv<SdsStartArgs> {
  return yargs
    .option('name', { type: 'string', demandOption: true, describe: `SDS name (up to ${nameBytesMax} characters)`, requiresArg: true })
    .option('device', { type: 'string', array: true, describe: 'block device or file: PATH[,PATH...] (repeatable; optional with --mdm, which can add devices)', requiresArg: true })
    .option('listen', { type: 'string', default: `127.0.0.1:${defaultSdsPort}`, describe: 'HOST:PORT for SDC, SDS and MDM connections', requiresArg: true })
    .option('data-dir', { type: 'string', describe: 'identity, placement map and rebuild state [default: /var/lib/meshblock/sds-NAME]', requiresArg: true })
    .option('mdm', { type: 'string', describe: `every MDM's HOST:PORT[,HOST:PORT...] (up to ${mdmAddressesMax}): the SDS registers with the Master, which sends maps and devices`, requiresArg: true })
    .option('cluster-id', { type: 'string', describe: 'cluster id (16 hex digits); needed at first start, remembered after', requiresArg: true })
    .option('secret-file', { type: 'string', describe: 'file holding the cluster secret [default: DATA-DIR/cluster.secret]', requiresArg: true })
    .option('chunk-size', { type: 'string', default: '1MiB', describe: 'chunk size of the pool this SDS serves (a power of two, 64KiB..64MiB)' })
    .option('force', { type: 'boolean', default: false, describe: 'format devices even if they hold a filesystem, partition table, LVM label or another cluster' })
    .option('payload-checksums', { type: 'boolean', default: false, describe: 'CRC-32C every payload this SDS sends (received ones are always checked)' })
    .option('io', {
      choices: deviceIoRequests,
      default: 'auto' as DeviceIoRequest,
      describe: 'device IO: direct (O_DIRECT, no page cache), buffered (page cache), or auto: direct where the device allows it, else buffered with a warning saying why (docs/direct-io.md)',
    })
    .option('host', {
      type: 'string',
      describe: "host label: SDSs with one label never hold both copies of a chunk [default: none; the machine's hostname with --shards over 1]",
      requiresArg: true,
    })
    .option('shards', {
      type: 'string',
      describe: `run as N shard processes, one core each, with the devices spread over them: 1 to ${sdsShardsMax}, or auto (half the cores, at most one per device) [default: 1, or the count this data directory was started with] (docs/cores.md)`,
      requiresArg: true,
    })
    .option('memory-budget', {
      type: 'string',
      describe: `bytes of client IO held at once across all client connections (payloads, replies being prepared); with --shards, of all shards together [default: ${formatBytes(sdsMemoryBudgetBytesDefault)} per process] (docs/operations.md)`,
      requiresArg: true,
    })
    .option('metrics', metricsOption('sds'))
    .option('log-level', { choices: logLevels, default: 'info' as Level, describe: 'log level (logs go to stderr)' })
    .check((argv) => {
      if (argv.metrics !== undefined) parseMetricsAddress('--metrics', argv.metrics);
      if (argv['memory-budget'] !== undefined) parseMemoryBudget(argv['memory-budget'], 1);
      checkLabel('--name', argv.name);
      if (argv.host !== undefined) checkLabel('--host', argv.host);
      if (argv.shards !== undefined) parseShardCount('--shards', argv.shards);
      parseHostPort('--listen', argv.listen);
      const chunkBytes = parseSizeBytes('--chunk-size', argv['chunk-size']);
      if (chunkBytes < 65536 || chunkBytes > 64 * 1024 * 1024 || (chunkBytes & (chunkBytes - 1)) !== 0) {
        throw new InvalidArgumentError('--chunk-size', 'must be a power of two from 64KiB to 64MiB');
      }
      if (argv['cluster-id'] !== undefined && !idPattern.test(argv['cluster-id'])) throw new InvalidArgumentError('--cluster-id', 'must be 16 lowercase hex digits');
      if (argv.mdm !== undefined) parseHostPortList('--mdm', argv.mdm, mdmAddressesMax);
      else if (devicePaths(argv.device ?? []).length === 0) throw new InvalidArgumentError('--device', 'name at least one device (or register with an MDM: --mdm)');
      return true;
    }) as unknown as Argv<SdsStartArgs>;
}

/** --memory-budget, and each shard's part of it (at least sdsMemoryBudgetBytesMin). */
function parseMemoryBudget(value: string, shards: number): number {
  const bytes = parseSizeBytes('--memory-budget', value);
  if (Math.floor(bytes / shards) < sdsMemoryBudgetBytesMin) {
    throw new InvalidArgumentError('--memory-budget', `must give each of ${shards} process(es) at least ${formatBytes(sdsMemoryBudgetBytesMin)}, not ${value}`);
  }
  return Math.floor(bytes / shards);
}

/** Names and host labels follow the MDM's rule (common/names.ts). */
function checkLabel(flag: string, value: string): void {
  if (!isName(value)) throw new InvalidArgumentError(flag, `must be ${nameRule}, not '${value}'`);
}

function devicePaths(values: readonly (string | number)[]): string[] {
  return values.flatMap((value) => String(value).split(',')).map((entry) => entry.trim()).filter((entry) => entry !== '');
}

export async function sdsStart(args: SdsStartArgs): Promise<void> {
  const log = createRootLogger(args['log-level'], 'sds');
  const dataDir = path.resolve(args['data-dir'] ?? `/var/lib/meshblock/sds-${args.name}`);
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  lockDataDir(dataDir, 'sds');
  const secretFile = args['secret-file'] ?? path.join(dataDir, 'cluster.secret');
  const secret = readSecretFile('--secret-file', secretFile);
  const chunkBytes = parseSizeBytes('--chunk-size', args['chunk-size']);
  const loaded = loadState(dataDir);
  const named = [...new Set(devicePaths(args.device ?? []).map((device) => path.resolve(device)))];
  const { shards, remembered } = resolveShardCount(dataDir, args.shards === undefined ? undefined : parseShardCount('--shards', args.shards), named.length, loaded !== null);
  if (shards > 1) {
    const host = args.host ?? os.hostname();
    checkLabel('--host (the hostname, its default with shards)', host);
    await runShards({ name: args.name, dataDir, shards, devices: named, listen: args.listen, metrics: args.metrics, secretFile: path.resolve(secretFile), host, remembered, passOn: shardPassOn(args, shards), log });
    return;
  }
  // A shard stops when its supervisor closes the IPC channel or is gone, however that went
  // (sds-shards.ts); before it serves, that is a plain SIGTERM.
  const supervised = process.env[shardEnvVar] !== undefined && process.send !== undefined;
  let requestStop: ((reason: string) => void) | null = null;
  if (supervised) {
    const supervisorGone = (): void => {
      if (requestStop === null) process.kill(process.pid, 'SIGTERM');
      else requestStop('supervisor gone');
    };
    process.on('disconnect', supervisorGone);
    // Defensive: a channel already closed when this runs (its supervisor gone while the shard
    // loaded) would otherwise depend on a 'disconnect' emitted before the listener existed.
    // Not seen to happen here (test/cli/sds-shards.test.ts kills a supervisor that early).
    if (!process.connected) supervisorGone();
    // The channel alone must not keep a shard alive that failed to start.
    process.channel?.unref();
  }
  let state: SdsState;
  if (loaded === null) {
    const clusterId = args['cluster-id'];
    if (clusterId === undefined) throw new InvalidArgumentError('--cluster-id', `needed at the first start (no state in ${dataDir})`);
    state = { clusterId, sdsId: randomBytes(8).toString('hex'), name: args.name, chunkBytes, map: null, reservations: {}, rebuildCursors: {}, devicePaths: [] };
  } else {
    state = loaded;
    if (args['cluster-id'] !== undefined && args['cluster-id'] !== state.clusterId) {
      throw new InvalidArgumentError('--cluster-id', `${dataDir} belongs to cluster ${state.clusterId}, not ${args['cluster-id']}`);
    }
    if (state.name !== args.name) throw new InvalidArgumentError('--name', `${dataDir} belongs to SDS '${state.name}'`);
    if (state.chunkBytes !== chunkBytes) throw new InvalidArgumentError('--chunk-size', `this SDS was created with ${state.chunkBytes}-byte chunks`);
  }
  const identity = { clusterId: state.clusterId, sdsId: state.sdsId, name: state.name };
  // Devices named here and devices the MDM added earlier.
  const devices = [...new Set([...named, ...state.devicePaths])];

  const benchWithout = benchWithoutFromEnv(process.env['MESHBLOCK_SDS_BENCH_WITHOUT']);
  if (benchWithout !== undefined) {
    log.warn({ benchWithout }, 'MESHBLOCK_SDS_BENCH_WITHOUT is set: this SDS runs without checksums or without power-safe allocation, for a benchmark only; its data is not safe');
  }
  const store = await ChunkStore.open(devices, {
    owner: { clusterId: identity.clusterId, sdsId: identity.sdsId, sdsName: identity.name },
    chunkBytes,
    force: args.force,
    log: log.child({ component: 'chunk-store' }),
    reservations: new Map(Object.entries(state.reservations)),
    io: args.io,
    ...(benchWithout !== undefined ? { benchWithout } : {}),
  });
  saveState(dataDir, state);
  let link: MdmLink | null = null;
  const service = new SdsService({
    identity,
    secret,
    store,
    state,
    dataDir,
    log: log.child({ component: 'sds-service' }),
    payloadChecksums: args['payload-checksums'],
    ...(args['memory-budget'] === undefined ? {} : { memoryBudgetBytes: parseMemoryBudget(args['memory-budget'], 1) }),
    onRebuildDone: (done) => link?.reportRebuildDone(done),
  });
  const wanted = parseHostPort('--listen', args.listen);
  let address: string;
  try {
    const bound = await service.listen(wanted.host, wanted.port);
    address = formatHostPort({ host: bound.address, port: bound.port });
  } catch (err) {
    await store.close();
    throw err;
  }
  let metrics: MetricsEndpoint | null;
  const metricsWanted = metricsAddressOf('sds', args.metrics, Number(process.env[shardEnvVar] ?? 1));
  // --metrics off: nothing would read IO times, so the data path reads no clock for them.
  if (metricsWanted.address === null) setIoTiming(false);
  try {
    metrics = await MetricsEndpoint.start(sdsMetrics(service, identity, store), metricsWanted, log);
  } catch (err) {
    await service.close();
    await store.close();
    throw err;
  }
  const mdmAddresses = args.mdm === undefined ? [] : parseHostPortList('--mdm', args.mdm, mdmAddressesMax);
  if (mdmAddresses.length > 0) {
    link = new MdmLink({ mdmAddresses, identity, secret, service, address, ...(args.host === undefined ? {} : { host: args.host }), log: log.child({ component: 'mdm-link' }) });
    link.start();
  }
  for (const device of store.devices) {
    if (device.opened.io === 'buffered' && args.io === 'auto') log.warn({ path: device.path, reason: device.opened.ioReason }, 'device IO goes through the page cache, not direct');
  }
  const deviceIo = store.devices.map((device) => ({ path: device.path, io: device.opened.io, ...(device.opened.ioReason === null ? {} : { ioReason: device.opened.ioReason }) }));
  log.info({ sdsId: identity.sdsId, address, devices: deviceIo, epoch: service.epoch, mdms: mdmAddresses }, 'sds ready');
  if (metrics !== null) process.stdout.write(`metrics at ${metrics.url}\n`);
  process.stdout.write(`sds ${identity.name} (${identity.sdsId}) of cluster ${identity.clusterId} listening on ${address} with ${devices.length} device(s)\n`);
  if (supervised) {
    const ready: ShardReady = { type: 'ready', name: identity.name, sdsId: identity.sdsId, address };
    process.send?.(ready);
  }

  await runUntilSignal(
    log,
    async () => {
      link?.close();
      await service.close();
      await store.close();
      await metrics?.close();
    },
    () => {
      link?.close();
      service.destroy();
      void metrics?.close();
    },
    (request) => {
      requestStop = request;
    },
  );
}

/** The flags every shard gets as the supervisor was given them. */
function shardPassOn(args: SdsStartArgs, shards: number): string[] {
  return [
    ...(args['memory-budget'] === undefined ? [] : ['--memory-budget', String(parseMemoryBudget(args['memory-budget'], shards))]),
    ...(args.mdm === undefined ? [] : ['--mdm', args.mdm]),
    ...(args['cluster-id'] === undefined ? [] : ['--cluster-id', args['cluster-id']]),
    '--chunk-size', args['chunk-size'],
    ...(args.force ? ['--force'] : []),
    ...(args['payload-checksums'] ? ['--payload-checksums'] : []),
    '--io', args.io,
    '--log-level', args['log-level'],
  ];
}

/**
 * MESHBLOCK_SDS_BENCH_WITHOUT=checksums,safe-allocation: what a benchmark turns off to
 * measure its cost (scripts/bench-integrity.mjs). Anything else in it is refused.
 */
export function benchWithoutFromEnv(value: string | undefined): { checksums?: boolean; safeAllocation?: boolean } | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  const without: { checksums?: boolean; safeAllocation?: boolean } = {};
  for (const word of value.split(',').map((part) => part.trim())) {
    if (word === 'checksums') without.checksums = true;
    else if (word === 'safe-allocation') without.safeAllocation = true;
    else throw new InvalidArgumentError('MESHBLOCK_SDS_BENCH_WITHOUT', `'${word}' is not one of checksums, safe-allocation`);
  }
  return without;
}
