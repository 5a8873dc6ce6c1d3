// meshblock sdc start: the data client on a consuming host. It registers with the MDM and
// serves every volume mapped to it as an NBD export named after the volume, routing IO to
// the SDSs. Its GUID is created at the first start and kept in the data directory, so the
// MDM knows it as the same SDC across restarts (and keeps its mappings).

import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Level } from 'pino';
import type { Argv } from 'yargs';
import { formatHostPort, parseHostPort, parseHostPortList } from '../common/address.js';
import { mdmAddressesMax } from '../common/limits.js';
import { InvalidArgumentError, MeshblockError } from '../common/errors.js';
import { Sdc, type SdcOptions } from '../sdc/sdc.js';
import { MetricsEndpoint, metricsAddressOf, metricsOption, parseMetricsAddress, setIoTiming } from '../common/metrics.js';
import { sdcMetrics } from '../sdc/metrics.js';
import type { SdcVolume } from '../wire/mdm-ops.js';
import { writeDrvCfgState } from './drv-cfg.js';
import { MappedAttacher, systemAttachMapped } from '../hostsetup/attach-mapped.js';
import { attachTimeoutSDefault, nbdsMaxDefault, type AttachRequest } from '../hostsetup/nbd-attach.js';
import { NbdServer } from '../nbd/server.js';
import { idPattern } from '../wire/placement.js';
import { createRootLogger, logLevels } from './log.js';
import { defaultNbdPort } from './nbd-serve.js';
import { lockDataDir } from './pid-lock.js';
import { readSecretFile } from './secret.js';
import { runUntilSignal } from './signals.js';

export interface SdcStartArgs {
  mdm: string;
  name: string | undefined;
  listen: string | undefined;
  socket: string | undefined;
  'data-dir': string | undefined;
  'cluster-id': string | undefined;
  'secret-file': string | undefined;
  metrics: string | undefined;
  'log-level': Level;
  'attach-mapped': boolean;
  'attach-root': string | undefined;
}

/** How long the SDC waits for its first view before it says it is ready anyway. */
const firstViewWaitMs = 15_000;

interface SdcIdentity {
  guid: string;
  clusterId: string;
}

export function sdcStartOptions(yargs: Argv): Argv<SdcStartArgs> {
  return yargs
    .option('mdm', { type: 'string', demandOption: true, describe: `every MDM's HOST:PORT[,HOST:PORT...] (up to ${mdmAddressesMax}): the SDC registers with the Master`, requiresArg: true })
    .option('name', { type: 'string', describe: 'SDC name (up to 31 characters) [default: from the GUID]', requiresArg: true })
    .option('listen', { type: 'string', describe: `NBD on TCP HOST:PORT [default: 127.0.0.1:${defaultNbdPort}]`, requiresArg: true })
    .option('socket', { type: 'string', describe: 'NBD on a Unix socket instead of TCP', requiresArg: true })
    .option('data-dir', { type: 'string', describe: 'where the GUID is kept [default: /var/lib/meshblock/sdc]', requiresArg: true })
    .option('cluster-id', { type: 'string', describe: 'cluster id (16 hex digits); needed at first start, remembered after', requiresArg: true })
    .option('secret-file', { type: 'string', describe: 'file holding the cluster secret [default: DATA-DIR/cluster.secret]', requiresArg: true })
    .option('metrics', metricsOption('sdc'))
    .option('log-level', { choices: logLevels, default: 'info' as Level, describe: 'log level (logs go to stderr)' })
    .option('attach-mapped', { type: 'boolean', default: false, describe: 'attach every mapped volume as /dev/nbdN with /dev/disk/by-id names (needs the nbd kernel module and nbd-client); detach at unmap' })
    // Test hook: the attacher's /sys, /dev, /proc and /run under DIR (a fake kernel's files).
    .option('attach-root', { type: 'string', hidden: true, requiresArg: true })
    .conflicts('listen', 'socket')
    .check((argv) => {
      parseHostPortList('--mdm', argv.mdm, mdmAddressesMax);
      if (argv.listen !== undefined) parseHostPort('--listen', argv.listen);
      if (argv.metrics !== undefined) parseMetricsAddress('--metrics', argv.metrics);
      if (argv.name !== undefined && !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}$/.test(argv.name)) throw new InvalidArgumentError('--name', 'must be 1 to 31 letters, digits, _ . -');
      if (argv['cluster-id'] !== undefined && !idPattern.test(argv['cluster-id'])) throw new InvalidArgumentError('--cluster-id', 'must be 16 lowercase hex digits');
      return true;
    }) as unknown as Argv<SdcStartArgs>;
}

function ensureIdentity(dataDir: string, clusterId: string | undefined): SdcIdentity {
  const file = path.join(dataDir, 'sdc.json');
  if (!fs.existsSync(file)) {
    if (clusterId === undefined) throw new InvalidArgumentError('--cluster-id', `needed at the first start (no ${file})`);
    const identity: SdcIdentity = { guid: randomUUID(), clusterId };
    fs.writeFileSync(file, `${JSON.stringify(identity, null, 1)}\n`);
    return identity;
  }
  let identity: SdcIdentity;
  try {
    identity = JSON.parse(fs.readFileSync(file, 'utf8')) as SdcIdentity;
  } catch (err) {
    throw new MeshblockError('MB_ERR_SDC_IDENTITY', `${file} is damaged: ${(err as Error).message}`);
  }
  if (clusterId !== undefined && clusterId !== identity.clusterId) throw new InvalidArgumentError('--cluster-id', `${dataDir} belongs to cluster ${identity.clusterId}`);
  return identity;
}

export async function sdcStart(args: SdcStartArgs): Promise<void> {
  const log = createRootLogger(args['log-level'], 'sdc');
  const dataDir = path.resolve(args['data-dir'] ?? '/var/lib/meshblock/sdc');
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  lockDataDir(dataDir, 'sdc');
  const identity = ensureIdentity(dataDir, args['cluster-id']);
  const secret = readSecretFile('--secret-file', args['secret-file'] ?? path.join(dataDir, 'cluster.secret'));
  // Created once the NBD address is known; the SDC calls it only after start().
  let attacher: MappedAttacher | null = null;
  const mdmAddresses = parseHostPortList('--mdm', args.mdm, mdmAddressesMax);
  // What `meshblock drv-cfg` answers (ScaleIO's drv_cfg), after each view.
  const recordState = (volumes: readonly SdcVolume[]): void => {
    try {
      writeDrvCfgState(dataDir, { guid: identity.guid, systemId: identity.clusterId, sdcId: sdc.sdcId, mdmAddresses, volumes: volumes.map((volume) => ({ id: volume.id, name: volume.name })), pid: process.pid });
    } catch (err) {
      log.warn({ err }, 'cannot record the SDC state for drv-cfg');
    }
  };
  const sdc = new Sdc({
    clusterId: identity.clusterId,
    secret,
    guid: identity.guid,
    name: args.name ?? null,
    mdmAddresses,
    log: log.child({ component: 'sdc' }),
    onVolumes: (volumes) => {
      attacher?.setMapped(volumes);
      recordState(volumes);
    },
    ...(args['attach-mapped'] ? { openVolumes: (connections) => attacher?.openVolumes(connections) ?? [...connections.keys()] } : {}),
  } satisfies SdcOptions);
  // Before the NBD server: a metrics address that cannot be bound leaves nothing open.
  const metricsWanted = metricsAddressOf('sdc', args.metrics);
  // --metrics off: nothing would read IO times, so the data path reads no clock for them.
  if (metricsWanted.address === null) setIoTiming(false);
  const metrics = await MetricsEndpoint.start(sdcMetrics(sdc, args.name ?? identity.guid), metricsWanted, log);
  const server = new NbdServer({ exports: sdc, tls: { mode: 'off', secureContext: null }, log });
  let where: string;
  let local: AttachRequest['sdc'];
  try {
    if (args.socket !== undefined) {
      await server.listenUnix(args.socket);
      where = args.socket;
      local = { socket: path.resolve(args.socket) };
    } else {
      const wanted = parseHostPort('--listen', args.listen ?? `127.0.0.1:${defaultNbdPort}`);
      const bound = await server.listenTcp(wanted.host, wanted.port);
      where = formatHostPort({ host: bound.address, port: bound.port });
      // A wildcard listener is reached on loopback.
      local = { host: bound.address === '0.0.0.0' ? '127.0.0.1' : bound.address === '::' ? '::1' : bound.address, port: bound.port };
    }
  } catch (err) {
    await metrics?.close();
    throw err;
  }
  if (args['attach-mapped']) {
    const root = args['attach-root'];
    const under = (file: string): string => (root === undefined ? file : path.join(root, file));
    attacher = new MappedAttacher({
      systemId: identity.clusterId,
      sdc: local,
      paths: { sysRoot: under(systemAttachMapped.paths.sysRoot), devRoot: under(systemAttachMapped.paths.devRoot), stateDir: under(systemAttachMapped.paths.stateDir) },
      byIdDir: under(systemAttachMapped.byIdDir),
      procRoot: systemAttachMapped.procRoot,
      timeoutS: attachTimeoutSDefault,
      nbdsMax: nbdsMaxDefault,
      log: log.child({ component: 'attach-mapped' }),
    });
    attacher.start();
  }
  sdc.start();
  const timer = setTimeout(() => log.warn({ waitedMs: firstViewWaitMs }, 'no word from the MDM yet; serving no volumes until it answers'), firstViewWaitMs);
  await Promise.race([sdc.ready, new Promise((resolve) => setTimeout(resolve, firstViewWaitMs).unref())]);
  clearTimeout(timer);
  log.info({ guid: identity.guid, nbd: where, volumes: sdc.list().map((entry) => entry.name) }, 'sdc ready');
  if (metrics !== null) process.stdout.write(`metrics at ${metrics.url}\n`);
  process.stdout.write(`sdc ${args.name ?? identity.guid} (${identity.guid}) of cluster ${identity.clusterId} serving NBD on ${where}\n`);
  await runUntilSignal(
    log,
    async () => {
      // Attached devices stay (their connections end with this process; IO fails after the
      // kernel client's timeout): a restart disconnects and attaches them again.
      await attacher?.close();
      await server.close();
      sdc.close();
      await metrics?.close();
    },
    () => {
      void attacher?.close();
      server.destroy();
      sdc.close();
      void metrics?.close();
    },
  );
}
