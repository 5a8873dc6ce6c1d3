// meshblock mdm start: the metadata manager. At its first start in a data directory it
// creates the cluster (id, secret) and the REST API's admin password and certificate;
// afterwards it restores everything from its journal.
//
// Files in the data directory:
//   cluster.json     { clusterId, name }          who this cluster is
//   cluster.secret   the cluster secret (0600)     SDSs and SDCs prove they know it
//   admin-password.json  the REST admin's scrypt hash (src/mdm/auth.ts)
//   admin.password   the first admin password (0600), only when meshblock generated it
//   journal-*, snapshot-*                          the state (src/mdm/journal.ts)
//   api.crt, api.key                               the REST API's self-signed certificate
//   events.jsonl, events.1.jsonl                   the event log (src/mdm/events.ts; in etcd for a cluster)

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Level, Logger } from 'pino';
import type { Argv } from 'yargs';
import { formatHostPort, parseHostPort } from '../common/address.js';
import { InvalidArgumentError, MeshblockError } from '../common/errors.js';
import { parseSizeBytes } from '../common/units.js';
import { AdminAuth, adminPasswordFileName } from '../mdm/auth.js';
import { MdmClusterMember, singleMdmCluster, type RestCluster } from '../mdm/cluster-member.js';
import { loadEtcdClientTls } from '../mdm/etcd-pki.js';
import { EtcdStore, type ClusterRecord } from '../mdm/etcd-store.js';
import { RestApi } from '../mdm/rest-api.js';
import { etcdCallTimeoutMs, rebuildAfterMsDefault, rebuildChunksInflightMaxDefault, sdsDownAfterMsDefault } from '../common/limits.js';
import { MdmService, type MdmServiceOptions } from '../mdm/service.js';
import { apiCertificateSubjectAltNamesDefault, ensureSelfSignedCertificate, loadCertificate } from '../mdm/tls.js';
import { idPattern } from '../wire/placement.js';
import { createRootLogger, logLevels } from './log.js';
import { startMdmEvents } from './mdm-events.js';
import { parseTrapReceivers } from '../mdm/snmp-traps.js';
import { lockDataDir } from './pid-lock.js';
import { runUntilSignal } from './signals.js';
import { MetricsEndpoint, metricsAddressOf, metricsOption, parseMetricsAddress } from '../common/metrics.js';
import { mdmMetrics } from '../mdm/metrics.js';

export interface MdmStartArgs {
  'data-dir': string;
  listen: string;
  api: string;
  name: string | undefined;
  'admin-password-file': string | undefined;
  'tls-cert': string | undefined;
  'tls-key': string | undefined;
  'log-level': Level;
  'sds-down-after': number;
  'rebuild-after': number;
  'rebuild-rate': string;
  'rebuild-rate-under-load': string;
  'rebuild-inflight': number;
  etcd: string | undefined;
  'etcd-pki': string | undefined;
  'mdm-name': string | undefined;
  metrics: string | undefined;
  'snmp-trap': string[];
}

/** ScaleIO's MDM port. */
export const defaultMdmPort = 6611;
export const defaultApiPort = 8443;

export function mdmStartOptions(yargs: Argv): Argv<MdmStartArgs> {
  return yargs
    .option('data-dir', { type: 'string', demandOption: true, describe: 'where the cluster identity, journal and certificate live', requiresArg: true })
    .option('listen', { type: 'string', default: `127.0.0.1:${defaultMdmPort}`, describe: 'HOST:PORT for SDS and SDC connections', requiresArg: true })
    .option('api', { type: 'string', default: `127.0.0.1:${defaultApiPort}`, describe: 'HOST:PORT of the REST API (HTTPS)', requiresArg: true })
    .option('name', { type: 'string', describe: 'system name, at the first start [default: meshblock]', requiresArg: true })
    .option('admin-password-file', { type: 'string', describe: 'the REST admin password, at the first start [default: $MESHBLOCK_ADMIN_PASSWORD, else generated into DATA-DIR/admin.password]', requiresArg: true })
    .option('tls-cert', { type: 'string', describe: 'PEM certificate for the REST API [default: self-signed, made at the first start]', requiresArg: true })
    .option('tls-key', { type: 'string', describe: 'PEM private key for --tls-cert', requiresArg: true })
    .option('sds-down-after', { type: 'number', default: sdsDownAfterMsDefault / 1000, describe: 'seconds without a heartbeat before an SDS is declared down and its groups fail over', requiresArg: true })
    .option('rebuild-after', { type: 'number', default: rebuildAfterMsDefault / 1000, describe: 'seconds a down SDS may stay away before its copies are rebuilt elsewhere (back sooner, it gets only what changed)', requiresArg: true })
    .option('rebuild-rate', { type: 'string', default: '64MiB', describe: 'rebuild bandwidth per source SDS, bytes per second (e.g. 32MiB; 0 = unlimited)', requiresArg: true })
    .option('rebuild-rate-under-load', { type: 'string', default: '16MiB', describe: 'the rebuild bandwidth of a source SDS while clients do IO on it (favor application IO; 0 = no difference)', requiresArg: true })
    .option('rebuild-inflight', { type: 'number', default: rebuildChunksInflightMaxDefault, describe: 'chunk copies each source SDS has in flight for rebuilds', requiresArg: true })
    .option('etcd', { type: 'string', describe: 'an MDM cluster: the client URLs of its etcd members, https://HOST:PORT[,...] (without it: one MDM with its own journal)', requiresArg: true })
    .option('etcd-pki', { type: 'string', describe: "with --etcd: the cluster's PKI directory (ca.crt, client-MDM-NAME.crt/.key)", requiresArg: true })
    .option('mdm-name', { type: 'string', describe: "with --etcd: this MDM's name in the cluster (its host's etcd member name)", requiresArg: true })
    .option('metrics', metricsOption('mdm'))
    .option('snmp-trap', { type: 'string', array: true, default: [] as string[], describe: 'send SNMPv2c traps of the alerting events to HOST[:PORT][,community=NAME] (port 162, community public by default; repeatable; mibs/MESHBLOCK-MIB.txt)', requiresArg: true })
    .option('log-level', { choices: logLevels, default: 'info' as Level, describe: 'log level (logs go to stderr)' })
    .check((argv) => {
      parseTrapReceivers('--snmp-trap', argv['snmp-trap']);
      if (argv.etcd !== undefined) {
        parseEtcdEndpoints(argv.etcd);
        if (argv['etcd-pki'] === undefined) throw new InvalidArgumentError('--etcd-pki', 'required with --etcd (etcd is reached over TLS with a client certificate)');
        if (argv['mdm-name'] === undefined || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}$/.test(argv['mdm-name'])) throw new InvalidArgumentError('--mdm-name', 'required with --etcd: 1 to 31 letters, digits, _ . -');
        if (parseHostPort('--listen', argv.listen).port === 0 || parseHostPort('--api', argv.api).port === 0) throw new InvalidArgumentError('--listen/--api', 'an MDM of a cluster needs fixed ports (the others publish and follow them)');
      } else if (argv['etcd-pki'] !== undefined || argv['mdm-name'] !== undefined) {
        throw new InvalidArgumentError('--etcd', '--etcd-pki and --mdm-name belong to an MDM cluster; give --etcd too');
      }
      parseHostPort('--listen', argv.listen);
      if (argv.metrics !== undefined) parseMetricsAddress('--metrics', argv.metrics);
      parseHostPort('--api', argv.api);
      if ((argv['tls-cert'] === undefined) !== (argv['tls-key'] === undefined)) throw new InvalidArgumentError('--tls-cert/--tls-key', 'give both or neither');
      for (const field of ['sds-down-after', 'rebuild-after'] as const) {
        const value = argv[field];
        if (!Number.isFinite(value) || value <= 0 || value > 86_400) throw new InvalidArgumentError(`--${field}`, 'must be a number of seconds above 0 (at most a day)');
      }
      parseSizeBytes('--rebuild-rate', argv['rebuild-rate']);
      parseSizeBytes('--rebuild-rate-under-load', argv['rebuild-rate-under-load']);
      if (!Number.isInteger(argv['rebuild-inflight']) || argv['rebuild-inflight'] < 1 || argv['rebuild-inflight'] > 64) throw new InvalidArgumentError('--rebuild-inflight', 'must be an integer from 1 to 64');
      if (argv.name !== undefined && !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}$/.test(argv.name)) throw new InvalidArgumentError('--name', 'must be 1 to 31 letters, digits, _ . -');
      return true;
    }) as unknown as Argv<MdmStartArgs>;
}

export interface ClusterIdentity {
  clusterId: string;
  name: string;
}

/** Reads the cluster identity, creating it (and the secret) at the first start. */
export function ensureCluster(dataDir: string, name: string | undefined): { identity: ClusterIdentity; secret: Buffer; created: boolean } {
  const identityFile = path.join(dataDir, 'cluster.json');
  const secretFile = path.join(dataDir, 'cluster.secret');
  if (!fs.existsSync(identityFile)) {
    const identity: ClusterIdentity = { clusterId: randomBytes(8).toString('hex'), name: name ?? 'meshblock' };
    fs.writeFileSync(secretFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    fs.writeFileSync(identityFile, `${JSON.stringify(identity, null, 1)}\n`);
    return { identity, secret: readSecret(secretFile), created: true };
  }
  let identity: ClusterIdentity;
  try {
    identity = JSON.parse(fs.readFileSync(identityFile, 'utf8')) as ClusterIdentity;
  } catch (err) {
    throw new MeshblockError('MB_ERR_MDM_IDENTITY', `${identityFile} is damaged: ${(err as Error).message}`);
  }
  if (typeof identity.clusterId !== 'string' || !idPattern.test(identity.clusterId)) throw new MeshblockError('MB_ERR_MDM_IDENTITY', `${identityFile} holds no valid clusterId`);
  if (name !== undefined && name !== identity.name) throw new InvalidArgumentError('--name', `this cluster is named '${identity.name}' (renaming is not supported)`);
  return { identity, secret: readSecret(secretFile), created: false };
}

function readSecret(file: string): Buffer {
  try {
    return Buffer.from(fs.readFileSync(file, 'utf8').trim());
  } catch (err) {
    throw new MeshblockError('MB_ERR_MDM_IDENTITY', `cannot read the cluster secret ${file}: ${(err as Error).message}`);
  }
}

/** The admin password's hash, set at the first start from a file, the environment or a generated one. */
async function ensureAdmin(dataDir: string, args: MdmStartArgs): Promise<{ auth: AdminAuth; generatedFile: string | null }> {
  if (AdminAuth.isInitialized(dataDir)) {
    if (args['admin-password-file'] !== undefined) throw new InvalidArgumentError('--admin-password-file', 'the admin password was set at the first start; it is not changed here');
    return { auth: AdminAuth.loadFromDataDir(dataDir), generatedFile: null };
  }
  let password: string;
  let generatedFile: string | null = null;
  if (args['admin-password-file'] !== undefined) {
    try {
      password = fs.readFileSync(args['admin-password-file'], 'utf8').trim();
    } catch (err) {
      throw new InvalidArgumentError('--admin-password-file', `cannot read it: ${(err as Error).message}`);
    }
  } else if (process.env['MESHBLOCK_ADMIN_PASSWORD'] !== undefined) {
    password = process.env['MESHBLOCK_ADMIN_PASSWORD'];
  } else {
    password = randomBytes(18).toString('base64url');
    generatedFile = path.join(dataDir, 'admin.password');
    fs.writeFileSync(generatedFile, `${password}\n`, { mode: 0o600 });
  }
  return { auth: await AdminAuth.initialize(dataDir, password), generatedFile };
}

/** --etcd's URLs: https only (etcd members require client certificates), 1 to 7 of them. */
export function parseEtcdEndpoints(text: string): string[] {
  const endpoints = text.split(',').map((entry) => entry.trim()).filter((entry) => entry !== '');
  if (endpoints.length === 0 || endpoints.length > 7) throw new InvalidArgumentError('--etcd', `give 1 to 7 etcd client URLs, got ${endpoints.length}`);
  for (const endpoint of endpoints) {
    const match = /^https:\/\/(.+)$/.exec(endpoint);
    if (match === null) throw new InvalidArgumentError('--etcd', `'${endpoint}' is not https://HOST:PORT (etcd is reached over TLS only)`);
    parseHostPort('--etcd', match[1] as string);
  }
  if (new Set(endpoints).size !== endpoints.length) throw new InvalidArgumentError('--etcd', 'an endpoint is given twice');
  return endpoints;
}

function serviceTuning(args: MdmStartArgs): Pick<MdmServiceOptions, 'sdsDownAfterMs' | 'rebuildAfterMs' | 'rebuildBytesPerSecondMax' | 'rebuildBytesPerSecondUnderLoad' | 'rebuildChunksInflightMax'> {
  return {
    sdsDownAfterMs: Math.round(args['sds-down-after'] * 1000),
    rebuildAfterMs: Math.round(args['rebuild-after'] * 1000),
    rebuildBytesPerSecondMax: parseSizeBytes('--rebuild-rate', args['rebuild-rate']),
    rebuildBytesPerSecondUnderLoad: parseSizeBytes('--rebuild-rate-under-load', args['rebuild-rate-under-load']),
    rebuildChunksInflightMax: args['rebuild-inflight'],
  };
}

export async function mdmStart(args: MdmStartArgs): Promise<void> {
  const log = createRootLogger(args['log-level'], 'mdm');
  const dataDir = path.resolve(args['data-dir']);
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  lockDataDir(dataDir, 'mdm');
  if (args.etcd !== undefined) return mdmStartClustered(args, log, dataDir);
  const { identity, secret, created } = ensureCluster(dataDir, args.name);
  const { auth, generatedFile } = await ensureAdmin(dataDir, args);
  const certificate = args['tls-cert'] !== undefined && args['tls-key'] !== undefined ? loadCertificate(args['tls-cert'], args['tls-key']) : ensureSelfSignedCertificate(dataDir);
  const service = await MdmService.open({
    dataDir,
    clusterId: identity.clusterId,
    systemName: identity.name,
    secret,
    log: log.child({ component: 'mdm-service' }),
    ...serviceTuning(args),
  });
  const wanted = parseHostPort('--listen', args.listen);
  let cluster: RestCluster | undefined;
  const events = await startMdmEvents({ where: { dataDir }, snmpTrap: args['snmp-trap'], systemId: identity.clusterId, controller: () => service, active: () => true, log });
  const api = new RestApi({ controller: service, events: events.events, log: log.child({ component: 'rest-api' }), auth, tls: { cert: certificate.cert, key: certificate.key }, cluster: { route: () => ({ kind: 'local' }), identity: () => ({ name: identity.name, term: '0' }), query: () => (cluster as RestCluster).query(), switchOwnership: (to) => (cluster as RestCluster).switchOwnership(to) } });
  let address: string;
  let apiUrl: string;
  try {
    const bound = await service.listen(wanted.host, wanted.port);
    address = formatHostPort({ host: bound.address, port: bound.port });
    const apiWanted = parseHostPort('--api', args.api);
    const apiBound = await api.listen(apiWanted.host, apiWanted.port);
    apiUrl = `https://${formatHostPort({ host: apiBound.address, port: apiBound.port })}`;
    cluster = singleMdmCluster({ clusterId: identity.clusterId, systemName: identity.name, name: identity.name, wireAddress: address, apiAddress: formatHostPort({ host: apiBound.address, port: apiBound.port }) });
  } catch (err) {
    await api.close().catch(() => undefined);
    await events.close();
    await service.close();
    throw err;
  }
  let metrics: MetricsEndpoint | null;
  try {
    metrics = await MetricsEndpoint.start(mdmMetrics({ name: identity.name, controller: service, isMaster: () => true, cluster: () => cluster }), metricsAddressOf('mdm', args.metrics), log);
  } catch (err) {
    await api.close().catch(() => undefined);
    await events.close();
    await service.close();
    throw err;
  }
  if (metrics !== null) process.stdout.write(`metrics at ${metrics.url}\n`);
  log.info({ clusterId: identity.clusterId, address, api: apiUrl, created }, 'mdm ready');
  if (generatedFile !== null) process.stdout.write(`generated the admin password: ${generatedFile}\n`);
  process.stdout.write(`mdm of cluster ${identity.clusterId} (${identity.name}) listening on ${address}, REST API at ${apiUrl} (certificate ${certificate.certPath}); cluster secret in ${path.join(dataDir, 'cluster.secret')}\n`);
  await runUntilSignal(
    log,
    async () => {
      await api.close();
      await events.close();
      await service.close();
      await metrics?.close();
    },
    () => {
      api.destroy();
      service.destroy();
      void metrics?.close();
    },
  );
}

/**
 * An MDM of an MDM cluster: identity, secret and admin password from etcd (made by the first
 * MDM to start), then a Slave that follows the Master and takes over when it goes.
 */
async function mdmStartClustered(args: MdmStartArgs, log: Logger, dataDir: string): Promise<void> {
  const name = args['mdm-name'] as string;
  const endpoints = parseEtcdEndpoints(args.etcd as string);
  const tls = loadEtcdClientTls(path.resolve(args['etcd-pki'] as string), name);
  const store = EtcdStore.connect({ endpoints, tls, log: log.child({ component: 'etcd' }) });
  try {
    const record = await clusterRecord(store, dataDir, args, log);
    // Beside the MDM, as with one MDM: the SDSs and SDCs started on this host read them.
    writePrivate(path.join(dataDir, 'cluster.secret'), `${record.secret}\n`);
    fs.writeFileSync(path.join(dataDir, 'cluster.json'), `${JSON.stringify({ clusterId: record.clusterId, name: record.name }, null, 1)}\n`);
    writePrivate(path.join(dataDir, adminPasswordFileName), record.adminAuth);
    const auth = AdminAuth.loadFromDataDir(dataDir);
    const wire = parseHostPort('--listen', args.listen);
    const apiWanted = parseHostPort('--api', args.api);
    // Made here, the certificate names the API's own address too: clients reach MDMs of a
    // cluster on their hosts' addresses, not on loopback.
    const apiNames = net.isIP(apiWanted.host) !== 0 && !apiCertificateSubjectAltNamesDefault.includes(`IP:${apiWanted.host}`) ? [...apiCertificateSubjectAltNamesDefault, `IP:${apiWanted.host}`] : apiCertificateSubjectAltNamesDefault;
    const certificate = args['tls-cert'] !== undefined && args['tls-key'] !== undefined ? loadCertificate(args['tls-cert'], args['tls-key']) : ensureSelfSignedCertificate(dataDir, { subjectAltNames: apiNames });
    const member = new MdmClusterMember({
      store,
      name,
      wire,
      apiAddress: formatHostPort(apiWanted),
      apiCertificate: certificate.cert.toString(),
      clusterId: record.clusterId,
      systemName: record.name,
      service: { dataDir, clusterId: record.clusterId, systemName: record.name, secret: Buffer.from(record.secret), log: log.child({ component: 'mdm-service' }), ...serviceTuning(args) },
      log: log.child({ component: 'mdm-cluster' }),
    });
    const controller = member.controller();
    const events = await startMdmEvents({ where: { etcd: store.client }, snmpTrap: args['snmp-trap'], systemId: record.clusterId, controller: () => controller, active: () => member.route().kind === 'local', log });
    const api = new RestApi({ controller, events: events.events, cluster: member, log: log.child({ component: 'rest-api' }), auth, tls: { cert: certificate.cert, key: certificate.key } });
    await api.listen(apiWanted.host, apiWanted.port);
    // Before joining: an MDM waiting for etcd exports NoQuorum.
    const metrics = await MetricsEndpoint.start(mdmMetrics({ name, controller: member.controller(), isMaster: () => member.role === 'master', cluster: () => member }), metricsAddressOf('mdm', args.metrics), log);
    if (metrics !== null) process.stdout.write(`metrics at ${metrics.url}\n`);
    await startMember(member, log);
    log.info({ clusterId: record.clusterId, name, etcd: endpoints, api: args.api, listen: args.listen, role: member.role }, 'mdm ready');
    process.stdout.write(`mdm ${name} of cluster ${record.clusterId} (${record.name}): REST API at https://${args.api}, SDSs and SDCs on ${args.listen} while Master; etcd ${endpoints.join(',')}\n`);
    await runUntilSignal(
      log,
      async () => {
        await api.close();
        await events.close();
        await member.close();
        store.close();
        await metrics?.close();
      },
      () => {
        api.destroy();
        member.service?.destroy();
        store.close();
        void metrics?.close();
      },
    );
  } catch (err) {
    store.close();
    throw err;
  }
}

/** Joins the cluster, waiting for etcd as long as it takes (members may start after the MDMs). */
async function startMember(member: MdmClusterMember, log: Logger): Promise<void> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      await member.start();
      return;
    } catch (err) {
      if (!(err instanceof MeshblockError) || err.code !== 'MB_ERR_NO_QUORUM') throw err;
      if (attempt === 1 || attempt % 10 === 0) log.warn({ err, attempt }, 'etcd is not answering yet; waiting');
      await sleep(etcdCallTimeoutMs / 2);
    }
  }
}

/** The cluster's identity from etcd; the first MDM makes it (with the admin password rules of one MDM). */
async function clusterRecord(store: EtcdStore, dataDir: string, args: MdmStartArgs, log: Logger): Promise<ClusterRecord> {
  let existing: ClusterRecord | null = null;
  for (let attempt = 1; ; attempt += 1) {
    try {
      existing = await store.readCluster();
      break;
    } catch (err) {
      if (!(err instanceof MeshblockError) || err.code !== 'MB_ERR_NO_QUORUM') throw err;
      if (attempt === 1 || attempt % 10 === 0) log.warn({ err, attempt }, 'etcd is not answering yet; waiting');
      await sleep(etcdCallTimeoutMs / 2);
    }
  }
  if (existing !== null) {
    if (args.name !== undefined && args.name !== existing.name) throw new InvalidArgumentError('--name', `this cluster is named '${existing.name}' (renaming is not supported)`);
    if (args['admin-password-file'] !== undefined) {
      // Given to every MDM by an installer: it must be the cluster's password, not another.
      const probe = path.join(dataDir, `${adminPasswordFileName}.etcd`);
      writePrivate(probe, existing.adminAuth);
      try {
        const password = fs.readFileSync(args['admin-password-file'], 'utf8').trim();
        if (!(await AdminAuth.load(probe).verifyPassword(AdminAuth.load(probe).username, password))) {
          throw new InvalidArgumentError('--admin-password-file', 'holds another password than the one the cluster was created with');
        }
      } finally {
        fs.rmSync(probe, { force: true });
      }
    }
    return existing;
  }
  const made = path.join(dataDir, `new-cluster-${process.pid}`);
  fs.rmSync(made, { recursive: true, force: true });
  fs.mkdirSync(made, { mode: 0o700 });
  try {
    const { auth, generatedFile } = await ensureAdmin(made, args);
    if (generatedFile !== null) {
      fs.renameSync(generatedFile, path.join(dataDir, 'admin.password'));
      process.stdout.write(`generated the admin password: ${path.join(dataDir, 'admin.password')}\n`);
    }
    const candidate: ClusterRecord = {
      clusterId: randomBytes(8).toString('hex'),
      name: args.name ?? 'meshblock',
      secret: randomBytes(32).toString('hex'),
      adminAuth: fs.readFileSync(auth.passwordFile, 'utf8'),
    };
    const stored = await store.createCluster(candidate);
    if (stored.clusterId === candidate.clusterId) log.info({ clusterId: stored.clusterId }, 'created the cluster in etcd');
    else fs.rmSync(path.join(dataDir, 'admin.password'), { force: true });
    return stored;
  } finally {
    fs.rmSync(made, { recursive: true, force: true });
  }
}

function writePrivate(file: string, text: string): void {
  const temporary = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(temporary, text, { mode: 0o600 });
  fs.renameSync(temporary, file);
}
