// Management commands over the MDM's REST API, in meshblock's `<noun> <verb>` form (ScaleIO's
// scli, reorganised): pd, pool, fault-set, sds, device, sdc, volume, snapshot, dashboard.
//
//   meshblock pd add --name pd1
//   meshblock pool add --pd pd1 --name pool1 --volume-granularity 1GiB
//   meshblock sds add --sds sds1 --pd pd1
//   meshblock device add --sds sds1 --pool pool1 --path /dev/sdb
//   meshblock volume add --pool pool1 --name vol1 --size 16GiB
//   meshblock volume map --volume vol1 --sdc host1
//   meshblock snapshot create --volume vol1 --volume vol2 --read-only
//   meshblock snapshot restore --volume vol1 --from vol1-snap-1
//   meshblock dashboard
//
// Objects are named by id or by name (resolved through the listings; an ambiguous name is an
// error that says how to disambiguate). Flags are checked before connecting: a bad flag is a
// usage error (exit 2) whether or not an MDM is running; the API's refusals exit 1 with its
// message. Listings take --json (the API's objects, unchanged).
//
// `sds start` lives in sds-start.ts; the sds management verbs are registered separately
// (registerSdsManagementCommands) so that main.ts can put both under one `sds` command.

import yargs, { type Argv } from 'yargs';
import { InvalidArgumentError, MeshblockError, OutOfRangeError } from '../common/errors.js';
import { GiB, KiB, MiB, parseSizeBytes } from '../common/units.js';
import { ioPriorityBandwidthPerDeviceKbpsMax, ioPriorityConcurrentIosPerDeviceMax, scrubRateKBpsMax, scrubRateKBpsMin, qosBurstSecondsMax, qosIopsLimitMin, snapshotGroupVolumesMax, snapshotsPerVtreeDefault, snapshotsPerVtreeMax } from '../common/limits.js';
import { idPattern } from '../wire/placement.js';
import type { RemoveGroupReply, SnapshotVolumesReply } from '../mdm/rest-commands.js';
import type {
  RestDashboard,
  RestDevice,
  RestFaultSet,
  RestMappedSdcInfo,
  RestProtectionDomain,
  RestSdc,
  RestSds,
  RestStoragePool,
  RestSystem,
  RestType,
  RestVolume,
} from '../mdm/rest-objects.js';
import type { MdmClusterView, MdmView } from '../mdm/cluster-member.js';
import { ApiClient, connectionOptions, processIo, type ConnectionArgs, type ManageIo } from './manage-client.js';
import { describeScrubPolicy, kbToText, renderDashboard, renderPoolIoPriority, renderQosTable, renderTable } from './manage-format.js';
import { ioPriorityPolicyNames } from '../mdm/model.js';

/** Exit codes, as main.ts: 1 failed at run time (the API refused), 2 bad usage. */
const exitRuntimeError = 1;
const exitUsageError = 2;

class ManageUsageError extends MeshblockError {
  constructor(message: string) {
    super('MB_ERR_USAGE', message);
  }
}

type Named = { id: string; name: string };

const typeWords: Record<Exclude<RestType, 'System'>, string> = {
  ProtectionDomain: 'protection domain',
  StoragePool: 'storage pool',
  FaultSet: 'fault set',
  Sds: 'SDS',
  Device: 'device',
  Sdc: 'SDC',
  Volume: 'volume',
  VTree: 'V-Tree',
};

/** One invocation's view of the API: listings fetched once, names resolved against them. */
class Session {
  private readonly cache = new Map<RestType, Promise<unknown[]>>();

  constructor(
    readonly client: ApiClient,
    readonly io: ManageIo,
  ) {}

  list<T>(type: RestType): Promise<T[]> {
    let listing = this.cache.get(type);
    if (listing === undefined) {
      listing = this.client.get<unknown[]>(`/api/types/${type}/instances`);
      this.cache.set(type, listing);
    }
    return listing as Promise<T[]>;
  }

  /** Forgets listings after a change. */
  changed(): void {
    this.cache.clear();
  }

  /**
   * The object of `type` whose id or name is `value`; `scope` narrows the candidates (a
   * storage pool name is unique only within its protection domain).
   */
  async resolve<T extends Named>(type: Exclude<RestType, 'System'>, flag: string, value: string, scope?: { field: keyof T; id: string; what: string }): Promise<T> {
    const all = await this.list<T>(type);
    const byId = all.find((entry) => entry.id === value);
    if (byId !== undefined) return byId;
    const named = all.filter((entry) => entry.name === value && (scope === undefined || entry[scope.field] === scope.id));
    const what = typeWords[type];
    if (named.length === 1) return named[0] as T;
    if (named.length === 0) throw new MeshblockError('MB_ERR_NOT_FOUND', `${flag}: no ${what} with id or name '${value}'${scope !== undefined ? ` in ${scope.what}` : ''}`);
    throw new MeshblockError('MB_ERR_AMBIGUOUS', `${flag}: ${named.length} ${what}s are named '${value}' (ids ${named.map((entry) => entry.id).join(', ')}); give the id${type === 'StoragePool' || type === 'FaultSet' ? ' or --pd' : ''}`);
  }

  print(text: string): void {
    this.io.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  printJson(value: unknown): void {
    this.io.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }
}

async function withSession(args: ConnectionArgs, io: ManageIo, work: (session: Session) => Promise<void>): Promise<void> {
  const client = await ApiClient.connect(args, io);
  try {
    await work(new Session(client, io));
  } finally {
    await client.close();
  }
}

// --- flag parsing (before connecting: a bad flag is a usage error) ---------------------------

function integerFlag(flag: string, value: unknown, min: number, max: number): number {
  const text = String(value);
  const number = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(number) || number < min || number > max) throw new OutOfRangeError(flag, `a whole number from ${min} to ${max}`, text);
  return number;
}

function sizeFlag(flag: string, value: string, unitBytes: number, unitName: string): number {
  const bytes = parseSizeBytes(flag, value);
  if (bytes % unitBytes !== 0) throw new InvalidArgumentError(flag, `must be a whole number of ${unitName}, got '${value}'`);
  return bytes;
}

function nonEmpty(flag: string, value: unknown): string {
  const text = typeof value === 'string' ? value : String(value ?? '');
  if (text === '') throw new InvalidArgumentError(flag, 'must not be empty');
  return text;
}

// --- building blocks ------------------------------------------------------------------------

type Builder = (y: Argv) => Argv;
type Handler = (args: Record<string, unknown>, session: Session) => Promise<void>;
/** Checks flags before connecting; returns the work to do once connected. */
type Command = { name: string; describe: string; builder: Builder; check?: (args: Record<string, unknown>) => void; run: Handler };

function register(yargs: Argv, io: ManageIo, commands: readonly Command[]): Argv {
  for (const command of commands) {
    yargs.command(
      command.name,
      command.describe,
      (y) => connectionOptions(command.builder(y), io).strict(),
      async (args) => {
        const record = args as unknown as Record<string, unknown>;
        command.check?.(record);
        await withSession(args as unknown as ConnectionArgs, io, (session) => command.run(record, session));
      },
    );
  }
  return yargs;
}

function noun(yargs: Argv, io: ManageIo, name: string, describe: string, commands: readonly Command[]): Argv {
  // The connection flags are declared on the noun too, so that a mistyped verb followed by
  // them is reported as the one unknown word it is.
  return yargs.command(name, describe, (y) =>
    register(connectionOptions(y, io), io, commands)
      .demandCommand(1, `${name}: name a subcommand (${commands.map((command) => command.name.split(' ')[0]).join(', ')})`)
      .strict(),
  );
}

const jsonOption: Builder = (y) => y.option('json', { type: 'boolean', default: false, describe: 'print the API objects as JSON' });
const str = (describe: string, demandOption = true) => ({ type: 'string' as const, describe, demandOption, requiresArg: true });

async function created(session: Session, what: string, type: RestType, body: unknown): Promise<string> {
  const { id } = await session.client.post<{ id: string }>(`/api/types/${type}/instances`, body);
  session.changed();
  session.print(`${what} created: id ${id}`);
  return id;
}

async function action(session: Session, type: RestType, id: string, name: string, body: unknown, done: string): Promise<void> {
  await session.client.post(`/api/instances/${type}::${id}/action/${name}`, body);
  session.changed();
  session.print(done);
}

async function pdScope(session: Session, args: Record<string, unknown>): Promise<{ field: 'protectionDomainId'; id: string; what: string } | undefined> {
  if (args['pd'] === undefined) return undefined;
  const domain = await session.resolve<RestProtectionDomain>('ProtectionDomain', '--pd', String(args['pd']));
  return { field: 'protectionDomainId', id: domain.id, what: `protection domain '${domain.name}'` };
}

async function resolvePool(session: Session, args: Record<string, unknown>): Promise<RestStoragePool> {
  return session.resolve<RestStoragePool>('StoragePool', '--pool', String(args['pool']), await pdScope(session, args));
}

const pdFilter: Builder = (y) => y.option('pd', str('protection domain (id or name) the pool belongs to, when names repeat', false));

// --- protection domains ---------------------------------------------------------------------

const pdCommands: Command[] = [
  {
    name: 'add',
    describe: 'create a protection domain',
    builder: (y) => y.option('name', str('name of the new protection domain')),
    run: async (args, session) => {
      await created(session, `protection domain '${String(args['name'])}'`, 'ProtectionDomain', { name: String(args['name']) });
    },
  },
  {
    name: 'list',
    describe: 'list protection domains',
    builder: jsonOption,
    run: async (args, session) => {
      const domains = await session.list<RestProtectionDomain>('ProtectionDomain');
      if (args['json'] === true) return session.printJson(domains);
      const [pools, sdss, sets] = await Promise.all([session.list<RestStoragePool>('StoragePool'), session.list<RestSds>('Sds'), session.list<RestFaultSet>('FaultSet')]);
      const count = (rows: ReadonlyArray<{ protectionDomainId: string | null }>, id: string): string => String(rows.filter((row) => row.protectionDomainId === id).length);
      session.print(
        renderTable<RestProtectionDomain>(
          [
            { header: 'NAME', value: (pd) => pd.name },
            { header: 'ID', value: (pd) => pd.id },
            { header: 'POOLS', value: (pd) => count(pools, pd.id), align: 'right' },
            { header: 'SDSS', value: (pd) => count(sdss, pd.id), align: 'right' },
            { header: 'FAULT SETS', value: (pd) => count(sets, pd.id), align: 'right' },
          ],
          domains,
        ),
      );
    },
  },
  {
    name: 'remove',
    describe: 'remove an empty protection domain',
    builder: (y) => y.option('pd', str('protection domain (id or name)')),
    run: async (args, session) => {
      const domain = await session.resolve<RestProtectionDomain>('ProtectionDomain', '--pd', String(args['pd']));
      await action(session, 'ProtectionDomain', domain.id, 'removeProtectionDomain', {}, `protection domain '${domain.name}' removed`);
    },
  },
  {
    name: 'rename',
    describe: 'rename a protection domain',
    builder: (y) => y.option('pd', str('protection domain (id or name)')).option('new-name', str('its new name')),
    run: async (args, session) => {
      const domain = await session.resolve<RestProtectionDomain>('ProtectionDomain', '--pd', String(args['pd']));
      const name = String(args['new-name']);
      await action(session, 'ProtectionDomain', domain.id, 'setProtectionDomainName', { name }, `protection domain '${domain.name}' renamed to '${name}'`);
    },
  },
];

// --- storage pools --------------------------------------------------------------------------

const poolCommands: Command[] = [
  {
    name: 'add',
    describe: 'create a storage pool in a protection domain',
    builder: (y) =>
      y
        .option('pd', str('protection domain (id or name)'))
        .option('name', str('name of the new pool'))
        .option('spare-percent', { type: 'string', describe: 'capacity held back for rebuilds, percent of raw [default: 10]', requiresArg: true })
        .option('chunk-size', { type: 'string', describe: 'chunk size, a power of two from 64KiB to 64MiB [default: 1MiB]', requiresArg: true })
        .option('volume-granularity', { type: 'string', describe: 'volume sizes round up to this, whole MiB (e.g. 1GiB, 64MiB) [default: 8GiB]', requiresArg: true })
        .option('pg-count', { type: 'string', describe: 'placement groups, a power of two [default: 4096]', requiresArg: true })
        .option('zero-padding', { type: 'boolean', describe: 'guarantee zeros for never-written ranges [default: true]' }),
    check: (args) => {
      if (args['spare-percent'] !== undefined) integerFlag('--spare-percent', args['spare-percent'], 0, 100);
      if (args['chunk-size'] !== undefined) sizeFlag('--chunk-size', String(args['chunk-size']), KiB, 'KiB');
      if (args['volume-granularity'] !== undefined) sizeFlag('--volume-granularity', String(args['volume-granularity']), MiB, 'MiB');
      if (args['pg-count'] !== undefined) integerFlag('--pg-count', args['pg-count'], 1, 2 ** 31);
    },
    run: async (args, session) => {
      const domain = await session.resolve<RestProtectionDomain>('ProtectionDomain', '--pd', String(args['pd']));
      const granularityBytes = args['volume-granularity'] === undefined ? undefined : sizeFlag('--volume-granularity', String(args['volume-granularity']), MiB, 'MiB');
      const body = {
        protectionDomainId: domain.id,
        name: String(args['name']),
        ...(args['spare-percent'] !== undefined ? { sparePercentage: integerFlag('--spare-percent', args['spare-percent'], 0, 100) } : {}),
        ...(args['chunk-size'] !== undefined ? { chunkSizeInKb: sizeFlag('--chunk-size', String(args['chunk-size']), KiB, 'KiB') / KiB } : {}),
        ...(granularityBytes === undefined ? {} : granularityBytes % GiB === 0 ? { volumeGranularityInGb: granularityBytes / GiB } : { volumeGranularityInMb: granularityBytes / MiB }),
        ...(args['pg-count'] !== undefined ? { pgCount: integerFlag('--pg-count', args['pg-count'], 1, 2 ** 31) } : {}),
        ...(typeof args['zero-padding'] === 'boolean' ? { zeroPaddingEnabled: args['zero-padding'] } : {}),
      };
      await created(session, `storage pool '${body.name}' in protection domain '${domain.name}'`, 'StoragePool', body);
    },
  },
  {
    name: 'list',
    describe: 'list storage pools with their capacity',
    builder: (y) => jsonOption(y).option('pd', str('only this protection domain (id or name)', false)),
    run: async (args, session) => {
      const scope = await pdScope(session, args);
      const pools = (await session.list<RestStoragePool>('StoragePool')).filter((pool) => scope === undefined || pool.protectionDomainId === scope.id);
      if (args['json'] === true) return session.printJson(pools);
      const view = await session.client.get<RestDashboard>('/api/dashboard');
      const stats = new Map(view.storagePools.map((pool) => [pool.id, pool]));
      const domains = await session.list<RestProtectionDomain>('ProtectionDomain');
      const pdName = (id: string): string => domains.find((domain) => domain.id === id)?.name ?? id;
      const stat = (pool: RestStoragePool, field: 'maxCapacityInKb' | 'usableCapacityInKb' | 'capacityAvailableForVolumeAllocationInKb'): string => kbToText(stats.get(pool.id)?.[field] ?? 0);
      session.print(
        renderTable<RestStoragePool>(
          [
            { header: 'NAME', value: (pool) => pool.name },
            { header: 'ID', value: (pool) => pool.id },
            { header: 'PD', value: (pool) => pdName(pool.protectionDomainId) },
            { header: 'SPARE', value: (pool) => `${pool.sparePercentage}%`, align: 'right' },
            { header: 'CHUNK', value: (pool) => kbToText(pool.chunkSizeInKb), align: 'right' },
            { header: 'GRANULARITY', value: (pool) => kbToText(pool.volumeGranularityInKb), align: 'right' },
            { header: 'DEVICES', value: (pool) => String(stats.get(pool.id)?.numOfDevices ?? 0), align: 'right' },
            { header: 'VOLUMES', value: (pool) => String(stats.get(pool.id)?.numOfVolumes ?? 0), align: 'right' },
            { header: 'RAW', value: (pool) => stat(pool, 'maxCapacityInKb'), align: 'right' },
            { header: 'USABLE', value: (pool) => stat(pool, 'usableCapacityInKb'), align: 'right' },
            { header: 'AVAILABLE', value: (pool) => stat(pool, 'capacityAvailableForVolumeAllocationInKb'), align: 'right' },
          ],
          pools,
        ),
      );
    },
  },
  {
    name: 'remove',
    describe: 'remove a storage pool without devices or volumes',
    builder: (y) => pdFilter(y.option('pool', str('storage pool (id or name)'))),
    run: async (args, session) => {
      const pool = await resolvePool(session, args);
      await action(session, 'StoragePool', pool.id, 'removeStoragePool', {}, `storage pool '${pool.name}' removed`);
    },
  },
  {
    name: 'rename',
    describe: 'rename a storage pool',
    builder: (y) => pdFilter(y.option('pool', str('storage pool (id or name)')).option('new-name', str('its new name'))),
    run: async (args, session) => {
      const pool = await resolvePool(session, args);
      const name = String(args['new-name']);
      await action(session, 'StoragePool', pool.id, 'setStoragePoolName', { name }, `storage pool '${pool.name}' renamed to '${name}'`);
    },
  },
  {
    name: 'set-spare',
    describe: 'change the capacity a storage pool holds back for rebuilds',
    builder: (y) => pdFilter(y.option('pool', str('storage pool (id or name)')).option('spare-percent', str('percent of raw capacity'))),
    check: (args) => void integerFlag('--spare-percent', args['spare-percent'], 0, 100),
    run: async (args, session) => {
      const pool = await resolvePool(session, args);
      const sparePercentage = integerFlag('--spare-percent', args['spare-percent'], 0, 100);
      await action(session, 'StoragePool', pool.id, 'setSparePercentage', { sparePercentage }, `storage pool '${pool.name}' spare set to ${sparePercentage}%`);
    },
  },
  // --- rebuild and rebalance IO priority (docs/rebuild-policy.md) ---
  {
    name: 'set-io-priority [pool]',
    describe: "set how a storage pool's rebuilds (--rebuild) or rebalances (--rebalance) are throttled on each source SDS, per device of it in the pool; applied to running ones within a second",
    builder: (y) =>
      pdFilter(
        y
          .positional('pool', { type: 'string', describe: 'storage pool (id or name)' })
          .option('pool', str('storage pool (id or name), instead of the positional', false))
          .option('rebuild', { type: 'boolean', describe: 'the policy of rebuilds (a copy a group lost)' })
          .option('rebalance', { type: 'boolean', describe: 'the policy of rebalances (a healthy copy moving to another device)' })
          .option('policy', { type: 'string', choices: ioPriorityPolicyNames, demandOption: true, requiresArg: true, describe: 'unlimited | limitNumOfConcurrentIos | favorAppIos (the bandwidth only while clients do IO) | limitBandwidth (always)' })
          .option('concurrent-ios', str(`chunk copies in flight per device, 1 to ${ioPriorityConcurrentIosPerDeviceMax} [left out: unchanged; ScaleIO's default 1]`, false))
          .option('bandwidth', str("bytes per second per device, whole MiB, e.g. 10MiB [left out: unchanged; ScaleIO's default 10MiB]", false)),
      ),
    check: (args) => void ioPriorityBody(args),
    run: async (args, session) => {
      const pool = await resolvePool(session, { ...args, pool: poolArgument(args) });
      const { kind, body } = ioPriorityBody(args);
      await action(session, 'StoragePool', pool.id, kind === 'rebuild' ? 'setRebuildIoPriorityPolicy' : 'setRebalanceIoPriorityPolicy', body, `storage pool '${pool.name}' ${kind} IO priority set to ${body.policy}`);
      session.print(renderPoolIoPriority(await session.client.get<RestStoragePool>(`/api/instances/StoragePool::${pool.id}`)));
    },
  },
  // --- the background scrub (docs/integrity.md) ---
  {
    name: 'set-scrub [pool]',
    describe:
      "set a storage pool's background scrub (ScaleIO's background device scanner): off, device-only (each copy's checksums) or data-comparison (also compares the two copies), at a rate per device; applied by the SDSs with the next map",
    builder: (y) =>
      pdFilter(
        y
          .positional('pool', { type: 'string', describe: 'storage pool (id or name)' })
          .option('pool', str('storage pool (id or name), instead of the positional', false))
          .option('mode', { type: 'string', choices: scrubCliModes, demandOption: true, requiresArg: true, describe: 'off | device-only | data-comparison' })
          .option('rate-kbps', str(`KB/s (1 KB = 1024 bytes) read per device, ${scrubRateKBpsMin} to ${scrubRateKBpsMax} [left out: unchanged; default 1024]`, false)),
      ),
    check: (args) => void scrubBody(args),
    run: async (args, session) => {
      const pool = await resolvePool(session, { ...args, pool: poolArgument(args) });
      const { action: name, body } = scrubBody(args);
      await action(session, 'StoragePool', pool.id, name, body, `storage pool '${pool.name}' scrub set to ${String(args['mode'])}`);
      session.print(`  scrub                 ${describeScrubPolicy(await session.client.get<RestStoragePool>(`/api/instances/StoragePool::${pool.id}`))}`);
    },
  },
  {
    name: 'show [pool]',
    describe: 'show a storage pool: its settings, its rebuild and rebalance IO priority and its scrub',
    builder: (y) => jsonOption(pdFilter(y.positional('pool', { type: 'string', describe: 'storage pool (id or name)' }).option('pool', str('storage pool (id or name), instead of the positional', false)))),
    check: (args) => void poolArgument(args),
    run: async (args, session) => {
      const pool = await resolvePool(session, { ...args, pool: poolArgument(args) });
      if (args['json'] === true) return session.printJson(pool);
      session.print(
        [
          `storage pool '${pool.name}' (id ${pool.id})`,
          `  protection domain   ${pool.protectionDomainId}`,
          `  spare               ${pool.sparePercentage}%`,
          `  chunk size          ${kbToText(pool.chunkSizeInKb)}`,
          `  volume granularity  ${kbToText(pool.volumeGranularityInKb)}`,
          `  placement groups    ${pool.pgCount}`,
          renderPoolIoPriority(pool),
          `  scrub                 ${describeScrubPolicy(pool)}${pool.backgroundScannerFromDefault ? ' (not set: the default)' : ''}`,
        ].join('\n'),
      );
    },
  },
];

/** The pool a command names, positional or --pool (one of the two). */
function poolArgument(args: Record<string, unknown>): string {
  const positional = args['pool'];
  // yargs gives the positional and the flag the same key: given both, it is an array.
  if (Array.isArray(positional)) throw new InvalidArgumentError('--pool', 'give the pool once, as the positional or as --pool');
  return nonEmpty('pool', positional);
}

/** set-scrub's --mode, in the CLI's spelling; the REST action takes ScaleIO's. */
const scrubCliModes = ['off', 'device-only', 'data-comparison'] as const;

/** The REST action and body of set-scrub, checked before connecting. */
function scrubBody(args: Record<string, unknown>): { action: 'enableBackgroundDeviceScanner' | 'disableBackgroundDeviceScanner'; body: { scannerMode?: 'DeviceOnly' | 'DataComparison'; bandwidthLimitKBps?: number } } {
  poolArgument(args);
  const mode = String(args['mode']);
  if (!(scrubCliModes as readonly string[]).includes(mode)) throw new InvalidArgumentError('--mode', `must be ${scrubCliModes.join(', ')}, got '${mode}'`);
  const rate = args['rate-kbps'] === undefined ? undefined : integerFlag('--rate-kbps', args['rate-kbps'], scrubRateKBpsMin, scrubRateKBpsMax);
  if (mode === 'off') {
    if (rate !== undefined) throw new InvalidArgumentError('--rate-kbps', 'give it with device-only or data-comparison (off keeps the pool’s rate for when the scrub is on again)');
    return { action: 'disableBackgroundDeviceScanner', body: {} };
  }
  return { action: 'enableBackgroundDeviceScanner', body: { scannerMode: mode === 'device-only' ? 'DeviceOnly' : 'DataComparison', ...(rate !== undefined ? { bandwidthLimitKBps: rate } : {}) } };
}

/** The REST body of set-io-priority, checked before connecting. */
function ioPriorityBody(args: Record<string, unknown>): { kind: 'rebuild' | 'rebalance'; body: { policy: string; numOfConcurrentIosPerDevice?: number; bwLimitPerDeviceInKbps?: number } } {
  poolArgument(args);
  const rebuild = args['rebuild'] === true;
  if (rebuild === (args['rebalance'] === true)) throw new InvalidArgumentError('--rebuild/--rebalance', 'give one of the two: which policy of the pool to set');
  const body: { policy: string; numOfConcurrentIosPerDevice?: number; bwLimitPerDeviceInKbps?: number } = { policy: String(args['policy']) };
  if (args['concurrent-ios'] !== undefined) body.numOfConcurrentIosPerDevice = integerFlag('--concurrent-ios', args['concurrent-ios'], 1, ioPriorityConcurrentIosPerDeviceMax);
  if (args['bandwidth'] !== undefined) {
    const bytes = sizeFlag('--bandwidth', String(args['bandwidth']), MiB, 'MiB (per second)');
    if (bytes === 0 || bytes / KiB > ioPriorityBandwidthPerDeviceKbpsMax) throw new OutOfRangeError('--bandwidth', `1MiB to ${ioPriorityBandwidthPerDeviceKbpsMax / 1024}MiB per second`, String(args['bandwidth']));
    body.bwLimitPerDeviceInKbps = bytes / KiB;
  }
  return { kind: rebuild ? 'rebuild' : 'rebalance', body };
}

// --- fault sets -----------------------------------------------------------------------------

const faultSetCommands: Command[] = [
  {
    name: 'add',
    describe: 'create a fault set (SDSs that may fail together: a rack, a power feed)',
    builder: (y) => y.option('pd', str('protection domain (id or name)')).option('name', str('name of the new fault set')),
    run: async (args, session) => {
      const domain = await session.resolve<RestProtectionDomain>('ProtectionDomain', '--pd', String(args['pd']));
      await created(session, `fault set '${String(args['name'])}' in protection domain '${domain.name}'`, 'FaultSet', { protectionDomainId: domain.id, name: String(args['name']) });
    },
  },
  {
    name: 'list',
    describe: 'list fault sets',
    builder: (y) => jsonOption(y).option('pd', str('only this protection domain (id or name)', false)),
    run: async (args, session) => {
      const scope = await pdScope(session, args);
      const sets = (await session.list<RestFaultSet>('FaultSet')).filter((set) => scope === undefined || set.protectionDomainId === scope.id);
      if (args['json'] === true) return session.printJson(sets);
      const sdss = await session.list<RestSds>('Sds');
      const domains = await session.list<RestProtectionDomain>('ProtectionDomain');
      session.print(
        renderTable<RestFaultSet>(
          [
            { header: 'NAME', value: (set) => set.name },
            { header: 'ID', value: (set) => set.id },
            { header: 'PD', value: (set) => domains.find((domain) => domain.id === set.protectionDomainId)?.name ?? set.protectionDomainId },
            { header: 'SDSS', value: (set) => sdss.filter((sds) => sds.faultSetId === set.id).map((sds) => sds.name).join(',') || '-' },
          ],
          sets,
        ),
      );
    },
  },
  {
    name: 'remove',
    describe: 'remove an empty fault set',
    builder: (y) => pdFilter(y.option('fault-set', str('fault set (id or name)'))),
    run: async (args, session) => {
      const set = await session.resolve<RestFaultSet>('FaultSet', '--fault-set', String(args['fault-set']), await pdScope(session, args));
      await action(session, 'FaultSet', set.id, 'removeFaultSet', {}, `fault set '${set.name}' removed`);
    },
  },
];

// --- SDSs -----------------------------------------------------------------------------------

const sdsCommands: Command[] = [
  {
    name: 'add',
    describe: 'add a registered SDS (one started with sds start) to a protection domain',
    builder: (y) => y.option('sds', str('SDS (id or name)')).option('pd', str('protection domain (id or name)')).option('fault-set', str('fault set (id or name) in that protection domain', false)),
    run: async (args, session) => {
      const sds = await session.resolve<RestSds>('Sds', '--sds', String(args['sds']));
      const domain = await session.resolve<RestProtectionDomain>('ProtectionDomain', '--pd', String(args['pd']));
      const set = args['fault-set'] === undefined ? null : await session.resolve<RestFaultSet>('FaultSet', '--fault-set', String(args['fault-set']), { field: 'protectionDomainId', id: domain.id, what: `protection domain '${domain.name}'` });
      await session.client.post('/api/types/Sds/instances', { sdsId: sds.id, protectionDomainId: domain.id, faultSetId: set?.id ?? null });
      session.changed();
      session.print(`SDS '${sds.name}' added to protection domain '${domain.name}'${set !== null ? ` in fault set '${set.name}'` : ''}`);
    },
  },
  {
    name: 'list',
    describe: 'list SDSs',
    builder: jsonOption,
    run: async (args, session) => {
      const sdss = await session.list<RestSds>('Sds');
      if (args['json'] === true) return session.printJson(sdss);
      const devices = await session.list<RestDevice>('Device');
      const domains = await session.list<RestProtectionDomain>('ProtectionDomain');
      const sets = await session.list<RestFaultSet>('FaultSet');
      session.print(
        renderTable<RestSds>(
          [
            { header: 'NAME', value: (sds) => sds.name },
            { header: 'ID', value: (sds) => sds.id },
            { header: 'ADDRESS', value: (sds) => sds.address },
            // An MDM from before host labels sends no hostLabel.
            { header: 'HOST', value: (sds) => sds.hostLabel ?? '-' },
            { header: 'STATE', value: (sds) => sds.sdsState },
            { header: 'PD', value: (sds) => (sds.protectionDomainId === null ? '(not added)' : (domains.find((domain) => domain.id === sds.protectionDomainId)?.name ?? sds.protectionDomainId)) },
            { header: 'FAULT SET', value: (sds) => (sds.faultSetId === null ? '-' : (sets.find((set) => set.id === sds.faultSetId)?.name ?? sds.faultSetId)) },
            { header: 'DEVICES', value: (sds) => String(devices.filter((device) => device.sdsId === sds.id).length), align: 'right' },
          ],
          sdss,
        ),
      );
    },
  },
  {
    name: 'remove',
    describe: 'remove an SDS: its data moves to the other SDSs first (online), then it goes',
    builder: (y) => y.option('sds', str('SDS (id or name)')),
    run: async (args, session) => {
      const sds = await session.resolve<RestSds>('Sds', '--sds', String(args['sds']));
      await session.client.post(`/api/instances/Sds::${sds.id}/action/removeSds`, {});
      session.changed();
      const left = (await session.list<RestSds>('Sds')).some((entry) => entry.id === sds.id);
      session.print(left ? `SDS '${sds.name}' is being removed: its data moves to the other SDSs first (see the dashboard), then it goes` : `SDS '${sds.name}' removed`);
    },
  },
  {
    name: 'rename',
    describe: 'rename an SDS',
    builder: (y) => y.option('sds', str('SDS (id or name)')).option('new-name', str('its new name')),
    run: async (args, session) => {
      const sds = await session.resolve<RestSds>('Sds', '--sds', String(args['sds']));
      const name = String(args['new-name']);
      await action(session, 'Sds', sds.id, 'setSdsName', { name }, `SDS '${sds.name}' renamed to '${name}'`);
    },
  },
];

// --- devices --------------------------------------------------------------------------------

const deviceCommands: Command[] = [
  {
    name: 'add',
    describe: "add a device of an SDS to a storage pool (the SDS formats it; one that holds data is refused unless --force)",
    builder: (y) =>
      y
        .option('sds', str('SDS (id or name)'))
        .option('pool', str("storage pool (id or name), in the SDS's protection domain"))
        .option('path', str('device path on the SDS host, e.g. /dev/sdb, or a file'))
        .option('name', str('device name [default: SDS:PATH]', false))
        .option('force', { type: 'boolean', default: false, describe: 'take the device even if it holds a filesystem, partition table, LVM label or another cluster' }),
    check: (args) => {
      if (!String(args['path']).startsWith('/')) throw new InvalidArgumentError('--path', `must be an absolute path, got '${String(args['path'])}'`);
    },
    run: async (args, session) => {
      const sds = await session.resolve<RestSds>('Sds', '--sds', String(args['sds']));
      // A pool name repeats across protection domains; the SDS's own domain settles it.
      const scope = sds.protectionDomainId === null ? undefined : { field: 'protectionDomainId' as const, id: sds.protectionDomainId, what: "the SDS's protection domain" };
      const pool = await session.resolve<RestStoragePool>('StoragePool', '--pool', String(args['pool']), scope);
      const body = {
        sdsId: sds.id,
        storagePoolId: pool.id,
        deviceCurrentPathName: String(args['path']),
        ...(args['name'] !== undefined ? { name: nonEmpty('--name', args['name']) } : {}),
        ...(args['force'] === true ? { forceDeviceTakeover: true } : {}),
      };
      await created(session, `device ${body.deviceCurrentPathName} of SDS '${sds.name}' in storage pool '${pool.name}'`, 'Device', body);
    },
  },
  {
    name: 'list',
    describe: 'list devices',
    builder: (y) => jsonOption(y).option('sds', str('only this SDS (id or name)', false)).option('pool', str('only this storage pool (id or name)', false)),
    run: async (args, session) => {
      const sds = args['sds'] === undefined ? undefined : await session.resolve<RestSds>('Sds', '--sds', String(args['sds']));
      const pool = args['pool'] === undefined ? undefined : await session.resolve<RestStoragePool>('StoragePool', '--pool', String(args['pool']));
      const devices = (await session.list<RestDevice>('Device')).filter((device) => (sds === undefined || device.sdsId === sds.id) && (pool === undefined || device.storagePoolId === pool.id));
      if (args['json'] === true) return session.printJson(devices);
      const sdss = await session.list<RestSds>('Sds');
      const pools = await session.list<RestStoragePool>('StoragePool');
      session.print(
        renderTable<RestDevice>(
          [
            { header: 'NAME', value: (device) => device.name },
            { header: 'ID', value: (device) => device.id },
            { header: 'SDS', value: (device) => sdss.find((entry) => entry.id === device.sdsId)?.name ?? device.sdsId },
            { header: 'POOL', value: (device) => pools.find((entry) => entry.id === device.storagePoolId)?.name ?? device.storagePoolId },
            { header: 'PATH', value: (device) => device.deviceCurrentPathName },
            { header: 'CAPACITY', value: (device) => kbToText(device.maxCapacityInKb), align: 'right' },
            { header: 'IN USE', value: (device) => kbToText(device.capacityInUseInKb), align: 'right' },
            { header: 'STATE', value: (device) => device.deviceState },
          ],
          devices,
        ),
      );
    },
  },
  {
    name: 'remove',
    describe: 'remove a device: its data moves to the other devices first (online), then it goes',
    builder: (y) => y.option('device', str('device (id or name)')),
    run: async (args, session) => {
      const device = await session.resolve<RestDevice>('Device', '--device', String(args['device']));
      await session.client.post(`/api/instances/Device::${device.id}/action/removeDevice`, {});
      session.changed();
      const left = (await session.list<RestDevice>('Device')).some((entry) => entry.id === device.id);
      session.print(left ? `device '${device.name}' is being removed: its data moves to the other devices first (see the dashboard), then it goes` : `device '${device.name}' removed`);
    },
  },
];

// --- SDCs -----------------------------------------------------------------------------------

const sdcCommands: Command[] = [
  {
    name: 'list',
    describe: 'list SDCs (they register when sdc start runs)',
    builder: jsonOption,
    run: async (args, session) => {
      const sdcs = await session.list<RestSdc>('Sdc');
      if (args['json'] === true) return session.printJson(sdcs);
      const volumes = await session.list<RestVolume>('Volume');
      session.print(
        renderTable<RestSdc>(
          [
            { header: 'NAME', value: (sdc) => sdc.name },
            { header: 'ID', value: (sdc) => sdc.id },
            { header: 'GUID', value: (sdc) => sdc.sdcGuid },
            { header: 'STATE', value: (sdc) => sdc.mdmConnectionState },
            { header: 'VOLUMES', value: (sdc) => volumes.filter((volume) => (volume.mappedSdcInfo ?? []).some((info) => info.sdcId === sdc.id)).map((volume) => volume.name).join(',') || '-' },
          ],
          sdcs,
        ),
      );
    },
  },
  {
    name: 'remove',
    describe: 'remove an SDC that has no volumes mapped',
    builder: (y) => y.option('sdc', str('SDC (id or name)')),
    run: async (args, session) => {
      const sdc = await session.resolve<RestSdc>('Sdc', '--sdc', String(args['sdc']));
      await action(session, 'Sdc', sdc.id, 'removeSdc', {}, `SDC '${sdc.name}' removed`);
    },
  },
  {
    name: 'rename',
    describe: 'rename an SDC',
    builder: (y) => y.option('sdc', str('SDC (id or name)')).option('new-name', str('its new name')),
    run: async (args, session) => {
      const sdc = await session.resolve<RestSdc>('Sdc', '--sdc', String(args['sdc']));
      const name = String(args['new-name']);
      await action(session, 'Sdc', sdc.id, 'setSdcName', { sdcName: name }, `SDC '${sdc.name}' renamed to '${name}'`);
    },
  },
];

// --- volumes --------------------------------------------------------------------------------

const volumeFlag: Builder = (y) => y.option('volume', str('volume (id or name)'));
const volumeSdcFlags: Builder = (y) => volumeFlag(y).option('sdc', str('SDC (id or name)'));

/**
 * setMappedSdcLimits' body from set-limits' flags, checked before any request: bandwidths in
 * whole MiB/s (ScaleIO's rule, which the MDM enforces too), counts as whole numbers. The
 * rules between fields (a burst at least its limit) are the MDM's to say.
 */
function limitsBody(args: Record<string, unknown>): Record<string, string> {
  const flags = ['iops', 'bandwidth', 'iops-burst', 'bandwidth-burst', 'burst-seconds'];
  if (flags.every((flag) => args[flag] === undefined)) throw new InvalidArgumentError('--iops', 'give --iops, --bandwidth or both (and optionally --iops-burst, --bandwidth-burst, --burst-seconds)');
  const count = (flag: string, max = Number.MAX_SAFE_INTEGER): string | undefined => (args[flag] === undefined ? undefined : String(integerFlag(`--${flag}`, args[flag], 0, max)));
  const perSecond = (flag: string): string | undefined => (args[flag] === undefined ? undefined : String(sizeFlag(`--${flag}`, String(args[flag]), MiB, 'MiB per second (e.g. 10MiB; bandwidth limits are set in whole MiB/s)') / KiB));
  const body: Record<string, string | undefined> = {
    iopsLimit: count('iops'),
    bandwidthLimitInKbps: perSecond('bandwidth'),
    iopsBurst: count('iops-burst'),
    bandwidthBurstInKbps: perSecond('bandwidth-burst'),
    burstSeconds: count('burst-seconds', qosBurstSecondsMax),
  };
  return Object.fromEntries(Object.entries(body).filter((entry): entry is [string, string] => entry[1] !== undefined));
}

/** "IOPS 100 (burst 400), bandwidth 10 MiB/s (burst 40 MiB/s), bursts up to 60 s" */
function describeLimits(info: RestMappedSdcInfo): string {
  const iops = info.limitIops === 0 ? 'unlimited' : `${info.limitIops}${info.limitIopsBurst > 0 ? ` (burst ${info.limitIopsBurst})` : ''}`;
  const bandwidth = info.limitBwInKbps === 0 ? 'unlimited' : `${kbToText(info.limitBwInKbps)}/s${info.limitBwBurstInKbps > 0 ? ` (burst ${kbToText(info.limitBwBurstInKbps)}/s)` : ''}`;
  const bursting = info.limitIopsBurst > 0 || info.limitBwBurstInKbps > 0 ? `, bursts up to ${Math.max(1, info.limitBurstSeconds)} s` : '';
  return `IOPS ${iops}, bandwidth ${bandwidth}${bursting}`;
}

function describeMapping(volume: RestVolume): string {
  // ScaleIO's null for a volume mapped nowhere.
  if (volume.mappedSdcInfo === null) return '-';
  return volume.mappedSdcInfo
    .map((info) => {
      const limits = [
        info.accessMode === 'ReadOnly' ? 'ro' : '',
        info.limitIops > 0 ? `${info.limitIops} IOPS` : '',
        info.limitBwInKbps > 0 ? `${kbToText(info.limitBwInKbps)}/s` : '',
        info.limitIopsBurst > 0 || info.limitBwBurstInKbps > 0 ? 'burst' : '',
        info.qosThrottledRequests > 0 ? `${info.qosThrottledRequests} throttled` : '',
      ].filter((part) => part !== '');
      return limits.length > 0 ? `${info.sdcName || info.sdcId}(${limits.join(' ')})` : info.sdcName || info.sdcId;
    })
    .join(',');
}

const volumeCommands: Command[] = [
  {
    name: 'add',
    describe: "create a volume (thin unless --thick; the size rounds up to the pool's granularity)",
    builder: (y) =>
      pdFilter(
        y
          .option('pool', str('storage pool (id or name)'))
          .option('name', str('name of the new volume'))
          .option('size', str('size, e.g. 16GiB, 512MiB'))
          .option('thick', { type: 'boolean', default: false, describe: 'reserve the whole size now (thick provisioning)' }),
      ),
    check: (args) => void sizeFlag('--size', String(args['size']), KiB, 'KiB'),
    run: async (args, session) => {
      const pool = await resolvePool(session, args);
      const sizeBytes = sizeFlag('--size', String(args['size']), KiB, 'KiB');
      const name = String(args['name']);
      const volumeType = args['thick'] === true ? 'ThickProvisioned' : 'ThinProvisioned';
      const { id } = await session.client.post<{ id: string }>('/api/types/Volume/instances', { storagePoolId: pool.id, name, volumeSizeInKb: String(sizeBytes / KiB), volumeType });
      session.changed();
      const volume = await session.client.get<RestVolume>(`/api/instances/Volume::${id}`);
      session.print(`volume '${name}' created: id ${id}, ${kbToText(volume.sizeInKb)} ${volumeType === 'ThickProvisioned' ? 'thick' : 'thin'} in storage pool '${pool.name}'`);
    },
  },
  {
    name: 'list',
    describe: 'list volumes',
    builder: (y) => pdFilter(jsonOption(y).option('pool', str('only this storage pool (id or name)', false))),
    run: async (args, session) => {
      const pool = args['pool'] === undefined ? undefined : await resolvePool(session, args);
      const volumes = (await session.list<RestVolume>('Volume')).filter((volume) => pool === undefined || volume.storagePoolId === pool.id);
      if (args['json'] === true) return session.printJson(volumes);
      const pools = await session.list<RestStoragePool>('StoragePool');
      session.print(
        renderTable<RestVolume>(
          [
            { header: 'NAME', value: (volume) => volume.name },
            { header: 'ID', value: (volume) => volume.id },
            { header: 'POOL', value: (volume) => pools.find((entry) => entry.id === volume.storagePoolId)?.name ?? volume.storagePoolId },
            { header: 'SIZE', value: (volume) => kbToText(volume.sizeInKb), align: 'right' },
            { header: 'TYPE', value: volumeTypeWord },
            { header: 'MAPPED TO', value: describeMapping },
          ],
          volumes,
        ),
      );
    },
  },
  {
    name: 'remove',
    describe: 'remove a volume that is mapped to no SDC (its data is gone; its snapshots stay unless --mode says otherwise)',
    builder: (y) => modeFlag(volumeFlag(y)),
    run: async (args, session) => {
      const volume = await session.resolve<RestVolume>('Volume', '--volume', String(args['volume']));
      await removeVolume(session, volume, args, 'volume');
    },
  },
  {
    name: 'resize',
    describe: "grow a volume (it never shrinks; the size rounds up to the pool's granularity)",
    builder: (y) => volumeFlag(y).option('size', str('new size, e.g. 32GiB')),
    check: (args) => void sizeFlag('--size', String(args['size']), KiB, 'KiB'),
    run: async (args, session) => {
      const volume = await session.resolve<RestVolume>('Volume', '--volume', String(args['volume']));
      const sizeBytes = sizeFlag('--size', String(args['size']), KiB, 'KiB');
      const body = sizeBytes % GiB === 0 ? { sizeInGB: sizeBytes / GiB } : { sizeInKb: sizeBytes / KiB };
      await session.client.post(`/api/instances/Volume::${volume.id}/action/setVolumeSize`, body);
      session.changed();
      const resized = await session.client.get<RestVolume>(`/api/instances/Volume::${volume.id}`);
      session.print(`volume '${volume.name}' resized to ${kbToText(resized.sizeInKb)}`);
    },
  },
  {
    name: 'rename',
    describe: 'rename a volume',
    builder: (y) => volumeFlag(y).option('new-name', str('its new name')),
    run: async (args, session) => {
      const volume = await session.resolve<RestVolume>('Volume', '--volume', String(args['volume']));
      const newName = String(args['new-name']);
      await action(session, 'Volume', volume.id, 'setVolumeName', { newName }, `volume '${volume.name}' renamed to '${newName}'`);
    },
  },
  {
    name: 'map',
    describe: 'map a volume to an SDC (it appears there as an NBD export named after the volume)',
    builder: (y) =>
      volumeSdcFlags(y)
        .option('read-only', { type: 'boolean', describe: 'the SDC may only read [default: only for a read-only snapshot]' })
        .option('allow-multiple', { type: 'boolean', default: false, describe: 'allow mapping to more than one SDC (shared volume: the users must coordinate)' }),
    run: async (args, session) => {
      const volume = await session.resolve<RestVolume>('Volume', '--volume', String(args['volume']));
      const sdc = await session.resolve<RestSdc>('Sdc', '--sdc', String(args['sdc']));
      // A read-only snapshot maps only read-only: that is the default for it, not an error
      // (--no-read-only asks otherwise, and the API refuses it, saying why).
      const limited = args['read-only'] === undefined && volume.accessModeLimit === 'ReadOnly';
      const readOnly = args['read-only'] === true || limited;
      const body = { sdcId: sdc.id, accessMode: readOnly ? 'ReadOnly' : 'ReadWrite', allowMultipleMappings: args['allow-multiple'] === true };
      const how = limited ? ' read-only (a read-only snapshot)' : readOnly ? ' read-only' : '';
      await action(session, 'Volume', volume.id, 'addMappedSdc', body, `volume '${volume.name}' mapped to SDC '${sdc.name}'${how}`);
    },
  },
  {
    name: 'unmap',
    describe: 'unmap a volume from an SDC',
    builder: volumeSdcFlags,
    run: async (args, session) => {
      const volume = await session.resolve<RestVolume>('Volume', '--volume', String(args['volume']));
      const sdc = await session.resolve<RestSdc>('Sdc', '--sdc', String(args['sdc']));
      await action(session, 'Volume', volume.id, 'removeMappedSdc', { sdcId: sdc.id }, `volume '${volume.name}' unmapped from SDC '${sdc.name}'`);
    },
  },
  {
    name: 'set-limits',
    describe: 'set QoS limits of a volume on one SDC, enforced by that SDC (0 = unlimited; a flag left out keeps its value)',
    builder: (y) =>
      volumeSdcFlags(y)
        .option('iops', { type: 'string', describe: `IO operations per second (0, or at least ${qosIopsLimitMin})`, requiresArg: true })
        .option('bandwidth', { type: 'string', describe: 'bytes per second in whole MiB, e.g. 100MiB (0 = unlimited)', requiresArg: true })
        .option('iops-burst', { type: 'string', describe: 'IOPS while an idle volume spends what it saved (0 = no burst; at least --iops)', requiresArg: true })
        .option('bandwidth-burst', { type: 'string', describe: 'bandwidth while bursting, whole MiB, e.g. 40MiB (0 = no burst; at least --bandwidth)', requiresArg: true })
        .option('burst-seconds', { type: 'string', describe: `how long a burst may last: an idle volume saves burst × seconds (0..${qosBurstSecondsMax})`, requiresArg: true }),
    check: (args) => void limitsBody(args),
    run: async (args, session) => {
      const volume = await session.resolve<RestVolume>('Volume', '--volume', String(args['volume']));
      const sdc = await session.resolve<RestSdc>('Sdc', '--sdc', String(args['sdc']));
      await session.client.post(`/api/instances/Volume::${volume.id}/action/setMappedSdcLimits`, { sdcId: sdc.id, ...limitsBody(args) });
      session.changed();
      const updated = await session.client.get<RestVolume>(`/api/instances/Volume::${volume.id}`);
      const info = (updated.mappedSdcInfo ?? []).find((entry) => entry.sdcId === sdc.id);
      session.print(`volume '${volume.name}' on SDC '${sdc.name}': ${info === undefined ? 'no longer mapped' : describeLimits(info)}`);
    },
  },
  {
    name: 'show',
    describe: 'show a volume: its size, its mappings with their QoS limits, and what each SDC held back',
    builder: (y) => jsonOption(volumeFlag(y)),
    run: async (args, session) => {
      const named = await session.resolve<RestVolume>('Volume', '--volume', String(args['volume']));
      const volume = await session.client.get<RestVolume>(`/api/instances/Volume::${named.id}`);
      if (args['json'] === true) return session.printJson(volume);
      const pools = await session.list<RestStoragePool>('StoragePool');
      const lines = [
        `volume '${volume.name}' (id ${volume.id}): ${kbToText(volume.sizeInKb)} ${volumeTypeWord(volume)} in storage pool '${pools.find((pool) => pool.id === volume.storagePoolId)?.name ?? volume.storagePoolId}'`,
      ];
      if (volume.mappedSdcInfo === null) lines.push('mapped to no SDC');
      session.print(`${lines.join('\n')}\n${volume.mappedSdcInfo === null ? '' : renderQosTable(volume.mappedSdcInfo)}`);
    },
  },
];

// --- snapshots ------------------------------------------------------------------------------

/** `volume list`'s TYPE: how the volume's space is provisioned, or that it is a snapshot. */
function volumeTypeWord(volume: RestVolume): string {
  if (volume.volumeType === 'Snapshot') return volume.accessModeLimit === 'ReadOnly' ? 'snapshot(ro)' : 'snapshot';
  return volume.volumeType === 'ThickProvisioned' ? 'thick' : 'thin';
}

/** --mode words → ScaleIO's removeMode. */
const removeModeWords = {
  'only-me': 'ONLY_ME',
  'including-descendants': 'INCLUDING_DESCENDANTS',
  'descendants-only': 'DESCENDANTS_ONLY',
  'whole-vtree': 'WHOLE_VTREE',
} as const;
type RemoveModeWord = keyof typeof removeModeWords;

const modeFlag: Builder = (y) =>
  y.option('mode', {
    type: 'string',
    choices: Object.keys(removeModeWords),
    requiresArg: true,
    describe: 'what goes: only-me (its snapshots stay), including-descendants (and every snapshot taken from it, and from those), descendants-only (those, not it), whole-vtree (its base volume and every snapshot of the tree) [default: only-me]',
  });

/** Removes `volume` (and what --mode adds) and says what went, by name. */
async function removeVolume(session: Session, volume: RestVolume, args: Record<string, unknown>, what: string): Promise<void> {
  const mode = removeModeWords[(args['mode'] as RemoveModeWord | undefined) ?? 'only-me'];
  const before = await session.list<RestVolume>('Volume');
  await session.client.post(`/api/instances/Volume::${volume.id}/action/removeVolume`, { removeMode: mode });
  session.changed();
  const left = new Set((await session.list<RestVolume>('Volume')).map((entry) => entry.id));
  const gone = before.filter((entry) => !left.has(entry.id));
  if (gone.length === 1 && gone[0]?.id === volume.id) return session.print(`${what} '${volume.name}' removed`);
  session.print(`${gone.length} removed (${mode}${mode === 'DESCENDANTS_ONLY' ? `, '${volume.name}' stays` : ''}): ${gone.map((entry) => `'${entry.name}'`).join(', ') || 'nothing'}`);
}

/** Repeatable flags arrive as a string, or an array when repeated: always a list here. */
function listFlag(value: unknown): string[] {
  if (value === undefined) return [];
  return (Array.isArray(value) ? value : [value]).map((entry) => String(entry));
}

/** Every volume descending from `root` (snapshots of it, of those, ...), not `root` itself. */
function descendantsOf(volumes: readonly RestVolume[], rootId: string): RestVolume[] {
  const inTree = new Set([rootId]);
  const found: RestVolume[] = [];
  // Ancestors may come after their descendants in the listing (it is by name): repeat until stable.
  for (let grew = true; grew; ) {
    grew = false;
    for (const volume of volumes) {
      if (volume.ancestorVolumeId !== null && inTree.has(volume.ancestorVolumeId) && !inTree.has(volume.id)) {
        inTree.add(volume.id);
        found.push(volume);
        grew = true;
      }
    }
  }
  return found;
}

function creationText(volume: RestVolume): string {
  return new Date(volume.creationTime * 1000).toISOString().replace(/\.000Z$/, 'Z');
}

const snapshotCommands: Command[] = [
  {
    name: 'create',
    describe: 'snapshot one volume, or several at one crash point (a consistency group): instant, thin, sharing the volume\'s data',
    builder: (y) =>
      jsonOption(y)
        .option('volume', { type: 'string', array: true, demandOption: true, requiresArg: true, describe: 'volume (id or name) to snapshot; repeat for a consistency group' })
        .option('name', { type: 'string', array: true, requiresArg: true, describe: 'name of each snapshot, in the order of --volume [default: VOLUME-snap-N]' })
        .option('read-only', { type: 'boolean', default: false, describe: 'the snapshots can only be mapped read-only' }),
    check: (args) => {
      const volumes = listFlag(args['volume']);
      const names = listFlag(args['name']);
      if (volumes.length > snapshotGroupVolumesMax) throw new InvalidArgumentError('--volume', `at most ${snapshotGroupVolumesMax} volumes in one snapshot, got ${volumes.length}`);
      const twice = volumes.find((volume, index) => volumes.indexOf(volume) !== index);
      if (twice !== undefined) throw new InvalidArgumentError('--volume', `'${twice}' is given twice`);
      if (names.length > 0 && names.length !== volumes.length) throw new InvalidArgumentError('--name', `give one --name per --volume (${volumes.length} volumes, ${names.length} names), or none`);
      for (const name of names) nonEmpty('--name', name);
    },
    run: async (args, session) => {
      const names = listFlag(args['name']);
      const volumes: RestVolume[] = [];
      for (const value of listFlag(args['volume'])) volumes.push(await session.resolve<RestVolume>('Volume', '--volume', value));
      const body = {
        snapshotDefs: volumes.map((volume, index) => ({ volumeId: volume.id, ...(names[index] !== undefined ? { snapshotName: names[index] } : {}) })),
        ...(args['read-only'] === true ? { accessModeLimit: 'ReadOnly' } : {}),
      };
      const reply = await session.client.post<SnapshotVolumesReply>('/api/instances/System/action/snapshotVolumes', body);
      session.changed();
      if (args['json'] === true) return session.printJson(reply);
      const all = await session.list<RestVolume>('Volume');
      const lines = reply.volumeIdList.map((id, index) => {
        const snapshot = all.find((entry) => entry.id === id);
        return `snapshot '${snapshot?.name ?? id}' of volume '${volumes[index]?.name ?? '?'}' created: id ${id}${args['read-only'] === true ? ', read-only' : ''}`;
      });
      lines.push(`snapshot group ${reply.snapshotGroupId}${volumes.length > 1 ? `: ${volumes.length} snapshots at one crash point` : ''}`);
      session.print(lines.join('\n'));
    },
  },
  {
    name: 'list',
    describe: 'list snapshots',
    builder: (y) => jsonOption(y).option('volume', str('only snapshots taken from this volume (id or name), and from those', false)),
    run: async (args, session) => {
      const all = await session.list<RestVolume>('Volume');
      const root = args['volume'] === undefined ? undefined : await session.resolve<RestVolume>('Volume', '--volume', String(args['volume']));
      const snapshots = (root === undefined ? all : descendantsOf(all, root.id)).filter((volume) => volume.volumeType === 'Snapshot');
      if (args['json'] === true) return session.printJson(snapshots);
      const nameOf = (id: string | null): string => (id === null ? '-' : (all.find((entry) => entry.id === id)?.name ?? `${id} (removed)`));
      session.print(
        renderTable<RestVolume>(
          [
            { header: 'NAME', value: (volume) => volume.name },
            { header: 'ID', value: (volume) => volume.id },
            { header: 'OF', value: (volume) => nameOf(volume.ancestorVolumeId) },
            { header: 'SIZE', value: (volume) => kbToText(volume.sizeInKb), align: 'right' },
            { header: 'ACCESS', value: (volume) => (volume.accessModeLimit === 'ReadOnly' ? 'read-only' : 'read-write') },
            { header: 'GROUP', value: (volume) => volume.consistencyGroupId ?? '-' },
            { header: 'CREATED', value: creationText },
            { header: 'MAPPED TO', value: describeMapping },
          ],
          snapshots,
        ),
      );
    },
  },
  {
    name: 'remove [snapshot]',
    describe: 'remove a snapshot (id or name; its own snapshots stay unless --mode says otherwise), or with --group every snapshot one create made',
    builder: (y) =>
      modeFlag(
        y
          .positional('snapshot', { type: 'string', describe: 'snapshot (id or name)' })
          .option('group', str('snapshot group id (as snapshot create printed it): remove all its snapshots', false)),
      ),
    check: (args) => {
      const named = args['snapshot'] !== undefined;
      if (named === (args['group'] !== undefined)) throw new InvalidArgumentError('--group', 'give a snapshot, or --group with a snapshot group id (one of the two)');
      if (!named && args['mode'] !== undefined) throw new InvalidArgumentError('--mode', 'applies to one snapshot, not to --group');
      if (!named && !idPattern.test(String(args['group']))) throw new InvalidArgumentError('--group', `must be a snapshot group id of 16 lowercase hex digits, got '${String(args['group'])}'`);
      if (named) nonEmpty('snapshot', args['snapshot']);
    },
    run: async (args, session) => {
      if (args['group'] !== undefined) {
        const groupId = String(args['group']);
        const { numberOfVolumes } = await session.client.post<RemoveGroupReply>('/api/instances/System/action/removeConsistencyGroupSnapshots', { snapGroupId: groupId });
        session.changed();
        return session.print(`snapshot group ${groupId} removed: ${numberOfVolumes} snapshot${numberOfVolumes === 1 ? '' : 's'}`);
      }
      const snapshot = await session.resolve<RestVolume>('Volume', 'snapshot', String(args['snapshot']));
      if (snapshot.volumeType !== 'Snapshot') throw new MeshblockError('MB_ERR_INVALID_ARGUMENT', `snapshot: '${snapshot.name}' is a volume, not a snapshot (remove volumes with volume remove)`);
      await removeVolume(session, snapshot, args, 'snapshot');
    },
  },
  {
    name: 'restore',
    describe: "give a volume the content of a snapshot of it (same V-Tree): instant, keeps the volume's id and mappings; refused while the volume is open",
    builder: (y) => volumeFlag(y).option('from', str('the snapshot (id or name) whose content the volume takes')),
    run: async (args, session) => {
      const volume = await session.resolve<RestVolume>('Volume', '--volume', String(args['volume']));
      const source = await session.resolve<RestVolume>('Volume', '--from', String(args['from']));
      await action(session, 'Volume', volume.id, 'overwriteVolumeContent', { srcVolumeId: source.id }, `volume '${volume.name}' restored from snapshot '${source.name}'`);
    },
  },
  {
    name: 'set-access <snapshot>',
    describe: 'make a snapshot read-only (every mapping of it then read-only; refused while it is mapped read-write) or writable again',
    builder: (y) =>
      y
        .positional('snapshot', { type: 'string', describe: 'snapshot (id or name)' })
        .option('access', { type: 'string', choices: ['read-only', 'read-write'], demandOption: true, requiresArg: true, describe: 'its access mode limit' }),
    run: async (args, session) => {
      const snapshot = await session.resolve<RestVolume>('Volume', 'snapshot', String(args['snapshot']));
      if (snapshot.volumeType !== 'Snapshot') throw new MeshblockError('MB_ERR_INVALID_ARGUMENT', `snapshot: '${snapshot.name}' is a volume, not a snapshot`);
      const access = String(args['access']);
      await action(session, 'Volume', snapshot.id, 'setVolumeAccessModeLimit', { accessModeLimit: access === 'read-only' ? 'ReadOnly' : 'ReadWrite' }, `snapshot '${snapshot.name}' is now ${access}`);
    },
  },
  {
    name: 'set-limit',
    describe: `set how many snapshots one V-Tree (a volume and its snapshots) may hold, 1 to ${snapshotsPerVtreeMax}; V-Trees above a lowered limit keep theirs`,
    builder: (y) => y.option('per-vtree', str(`snapshots per V-Tree [ScaleIO's default: ${snapshotsPerVtreeDefault}]`)),
    check: (args) => void integerFlag('--per-vtree', args['per-vtree'], 1, snapshotsPerVtreeMax),
    run: async (args, session) => {
      const limit = integerFlag('--per-vtree', args['per-vtree'], 1, snapshotsPerVtreeMax);
      const [system] = await session.client.get<RestSystem[]>('/api/types/System/instances');
      await action(session, 'System', system?.id ?? '', 'setSnapshotsPerVtree', { snapshotsPerVtree: limit }, `snapshots per V-Tree: ${limit}${system === undefined ? '' : ` (was ${system.snapshotsPerVtree})`}`);
    },
  },
];

// --- the MDM cluster --------------------------------------------------------------------------

function renderMdmCluster(cluster: MdmClusterView): string {
  const lines = [`cluster ${cluster.name} (${cluster.id}): ${cluster.clusterMode}, ${cluster.clusterState}; ${cluster.goodNodesNum} good node(s), ${cluster.goodReplicasNum} good MDM(s)`];
  const rows: Array<{ role: string; mdm: MdmView }> = [
    ...(cluster.master === null ? [] : [{ role: 'Master', mdm: cluster.master }]),
    ...cluster.slaves.map((mdm) => ({ role: 'Slave', mdm })),
    ...cluster.tieBreakers.map((mdm) => ({ role: 'Tie-Breaker', mdm })),
    ...cluster.standbyMDMs.map((mdm) => ({ role: 'Standby', mdm })),
  ];
  if (cluster.master === null) lines.push('no Master: management waits for one (IO goes on)');
  lines.push(
    renderTable(
      [
        { header: 'ROLE', value: (row: { role: string; mdm: MdmView }) => row.role },
        { header: 'NAME', value: (row) => row.mdm.name },
        { header: 'ADDRESS', value: (row) => `${row.mdm.ips.join(',')}:${row.mdm.port}` },
        { header: 'REST API', value: (row) => row.mdm.apiAddress ?? '-' },
        { header: 'STATUS', value: (row) => row.mdm.status },
      ],
      rows,
    ).trimEnd(),
  );
  return `${lines.join('\n')}\n`;
}

const mdmCommands: Command[] = [
  {
    name: 'cluster',
    describe: 'the MDM cluster: mode, state, Master, Slaves, Tie-Breakers (ScaleIO query_cluster)',
    builder: jsonOption,
    run: async (args, session) => {
      const cluster = await session.client.post<MdmClusterView>('/api/instances/System/action/queryMdmCluster', {});
      if (args['json'] === true) session.printJson(cluster);
      else session.print(renderMdmCluster(cluster).trimEnd());
    },
  },
  {
    name: 'switch-ownership',
    describe: 'a planned switch: another MDM becomes the Master (ScaleIO --switch_mdm_ownership)',
    builder: (y) => y.option('to', str('the MDM to become Master [default: a running Slave]', false)),
    check: (args) => {
      if (args['to'] !== undefined && !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}$/.test(String(args['to']))) throw new InvalidArgumentError('--to', 'must be the name of an MDM');
    },
    run: async (args, session) => {
      const { master } = await session.client.post<{ master: string }>('/api/instances/System/action/changeMdmOwnership', args['to'] === undefined ? {} : { id: String(args['to']) });
      session.changed();
      session.print(`the Master is now ${master}`);
    },
  },
];

// --- registration ---------------------------------------------------------------------------

/**
 * Adds pd, pool, fault-set, device, volume, snapshot and dashboard. `io` is where output goes
 * (the process's streams unless a test captures them).
 */
export function registerManagementCommands(yargs: Argv, io: ManageIo = processIo): Argv {
  noun(yargs, io, 'pd', 'protection domains: groups of SDSs that hold each other\'s copies', pdCommands);
  noun(yargs, io, 'pool', 'storage pools: devices of a protection domain that volumes are carved from', poolCommands);
  noun(yargs, io, 'fault-set', 'fault sets: SDSs that may fail together, never holding both copies', faultSetCommands);
  noun(yargs, io, 'device', 'devices of SDSs in storage pools', deviceCommands);
  noun(yargs, io, 'volume', 'volumes: create, resize, map to SDCs, QoS limits', volumeCommands);
  noun(yargs, io, 'snapshot', 'snapshots of volumes: create (one or a consistency group), list, remove, restore, set-access, set-limit', snapshotCommands);
  register(yargs, io, [
    {
      name: 'dashboard',
      describe: 'capacity and health at a glance',
      builder: jsonOption,
      run: async (args, session) => {
        const view = await session.client.get<RestDashboard>('/api/dashboard');
        if (args['json'] === true) session.printJson(view);
        else session.print(renderDashboard(view));
      },
    },
  ]);
  return yargs;
}

/** Adds list, remove and rename under an existing `sdc` command (next to `sdc start`). */
export function registerSdcManagementCommands(sdcYargs: Argv, io: ManageIo = processIo): Argv {
  return register(sdcYargs, io, sdcCommands);
}

/** Adds cluster and switch-ownership under an existing `mdm` command (next to `mdm start`). */
export function registerMdmManagementCommands(mdmYargs: Argv, io: ManageIo = processIo): Argv {
  return register(mdmYargs, io, mdmCommands);
}

/** Adds add, list, remove and rename under an existing `sds` command (next to `sds start`). */
export function registerSdsManagementCommands(sdsYargs: Argv, io: ManageIo = processIo): Argv {
  return register(sdsYargs, io, sdsCommands);
}

/**
 * Runs the management commands alone (for tests, in-process): the exit code, with output
 * and one-line errors written to `io`.
 */
export async function manageMain(argv: string[], io: ManageIo = processIo): Promise<number> {
  const cli = yargs()
    .scriptName('meshblock')
    .usage('$0 <command>')
    .exitProcess(false)
    .command('sds', 'SDS management', (sds) => registerSdsManagementCommands(sds, io).demandCommand(1, 'sds: name a subcommand (add, list, remove, rename)').strict())
    .command('sdc', 'SDC management', (sdc) => registerSdcManagementCommands(sdc, io).demandCommand(1, 'sdc: name a subcommand (list, remove, rename)').strict())
    .command('mdm', 'the MDM cluster', (mdm) => registerMdmManagementCommands(mdm, io).demandCommand(1, 'mdm: name a subcommand (cluster, switch-ownership)').strict());
  registerManagementCommands(cli, io)
    .demandCommand(1, 'name a command (see meshblock --help)')
    .strict()
    .help()
    .alias('h', 'help')
    .wrap(110)
    .fail((message, err) => {
      if (err instanceof MeshblockError) throw err;
      throw new ManageUsageError(message ?? (err?.message || 'invalid usage'));
    });
  try {
    let helpText = '';
    await cli.parseAsync(argv, {}, (_err, _args, output) => {
      helpText = output;
    });
    if (helpText !== '') io.stdout.write(helpText.endsWith('\n') ? helpText : `${helpText}\n`);
    return 0;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    io.stderr.write(`meshblock: ${message.replace(/\s*\n\s*/g, ' ').trim()}\n`);
    const usage = err instanceof ManageUsageError || err instanceof InvalidArgumentError || err instanceof OutOfRangeError;
    return usage ? exitUsageError : exitRuntimeError;
  }
}
