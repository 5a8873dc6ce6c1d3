// meshblock etcd start: one member of the MDM cluster's etcd (ScaleIO's Master, Slave and
// Tie-Breaker hosts each run one). It runs etcd in the foreground as a child (from a runtime
// bundle the bundle's own, through the bundle's loader; else Debian's /usr/bin/etcd), with
// TLS and client-certificate auth on both listeners (the PKI of src/mdm/etcd-pki.ts), and
// stays its parent: it holds the data directory's pid lock as the other daemons do,
// forwards SIGTERM/SIGINT, and exits with etcd's code. All of etcd's configuration is on
// its command line, built here from a handful of flags, so that every member of every
// cluster runs alike:
//
//   --client HOST:PORT   listen-client-urls = advertise-client-urls = https://HOST:PORT
//   --peer HOST:PORT     listen-peer-urls = initial-advertise-peer-urls = https://HOST:PORT
//   --initial-cluster    N1=https://H:P,... (every member's peer URL, this one's included)
//   --existing           initial-cluster-state existing (joining after `member add`);
//                        a data directory that holds a member ignores both
//   --pki DIR            ca.crt, member-NAME.crt/.key
//
// Files in the data directory:
//   etcd.lock    the pid lock (src/cli/pid-lock.ts)
//   etcd/        etcd's --data-dir (member/wal, member/snap): a directory of its own, since
//                etcd warns at every start about any file beside member/ in its data dir

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { isIP } from 'node:net';
import { constants as osConstants } from 'node:os';
import * as path from 'node:path';
import type { Level } from 'pino';
import type { Argv } from 'yargs';
import { formatHostPort, parseHostPort } from '../common/address.js';
import { InvalidArgumentError, MeshblockError } from '../common/errors.js';
import {
  etcdBackendBytesMax,
  etcdCompactionRevisionsKeptMin,
  etcdElectionTimeoutMs,
  etcdHeartbeatIntervalMs,
  etcdRequestBytesMax,
  etcdStopTimeoutMs,
} from '../common/limits.js';
import { bundledEtcdCommand, etcdSourcePath } from '../hostsetup/runtime-bundle.js';
import { etcdMemberTlsFiles, etcdNamePattern } from '../mdm/etcd-pki.js';
import { createRootLogger, logLevels } from './log.js';
import { lockDataDir } from './pid-lock.js';

export interface EtcdStartArgs {
  'data-dir': string;
  name: string;
  client: string;
  peer: string;
  'initial-cluster': string;
  existing: boolean;
  pki: string;
  'log-level': Level;
}

/** etcd's registered ports. */
export const defaultEtcdClientPort = 2379;
export const defaultEtcdPeerPort = 2380;
/**
 * Debian's etcd-server, outside a runtime bundle; MESHBLOCK_ETCD_BIN overrides it and the
 * bundle's etcd (another build, a test stand-in).
 */
export const etcdBinDefault = etcdSourcePath;
/** etcd's own --data-dir, inside ours. */
export const etcdDataSubdirectory = 'etcd';
/** Every member of a meshblock cluster uses this token; the cluster's identity is its CA. */
export const etcdInitialClusterToken = 'meshblock';

export interface EtcdClusterMember {
  name: string;
  /** https://HOST:PORT, canonical (as the WHATWG URL parser writes it). */
  peerUrl: string;
}

export function etcdStartOptions(yargs: Argv): Argv<EtcdStartArgs> {
  return yargs
    .option('data-dir', { type: 'string', demandOption: true, describe: "the member's etcd data (made 0700 if missing)", requiresArg: true })
    .option('name', { type: 'string', demandOption: true, describe: "the member's name: its host's name in the cluster (e.g. mdm1, tb1)", requiresArg: true })
    .option('client', { type: 'string', default: `127.0.0.1:${defaultEtcdClientPort}`, describe: 'IP:PORT for clients (the MDMs), HTTPS with client certificates', requiresArg: true })
    .option('peer', { type: 'string', default: `127.0.0.1:${defaultEtcdPeerPort}`, describe: 'IP:PORT for the other members, HTTPS with client certificates', requiresArg: true })
    .option('initial-cluster', { type: 'string', demandOption: true, describe: "every member's peer URL, this one's included: NAME=https://IP:PORT[,...]", requiresArg: true })
    .option('existing', { type: 'boolean', default: false, describe: 'join a running cluster (after `etcdctl member add`) instead of forming a new one' })
    .option('pki', { type: 'string', demandOption: true, describe: 'directory with ca.crt and member-NAME.crt/.key (src/mdm/etcd-pki.ts)', requiresArg: true })
    .option('log-level', { choices: logLevels, default: 'info' as Level, describe: "log level of this command and etcd's (logs go to stderr)" })
    .check((argv) => {
      checkEtcdStartArgs(argv as unknown as EtcdStartArgs);
      return true;
    }) as unknown as Argv<EtcdStartArgs>;
}

/** Flag checks that need no files: names, addresses, and this member's place in --initial-cluster. */
export function checkEtcdStartArgs(args: EtcdStartArgs): { clientUrl: string; peerUrl: string; cluster: EtcdClusterMember[] } {
  if (!etcdNamePattern.test(args.name)) throw new InvalidArgumentError('--name', `'${args.name}' must be 1 to 31 letters, digits, _ . - (starting with a letter or digit)`);
  const clientUrl = listenUrl('--client', args.client);
  const peerUrl = listenUrl('--peer', args.peer);
  if (clientUrl === peerUrl) throw new InvalidArgumentError('--client/--peer', `both are ${args.client}; they need a port each`);
  const cluster = parseInitialCluster('--initial-cluster', args['initial-cluster']);
  const self = cluster.find((member) => member.name === args.name);
  if (self === undefined) throw new InvalidArgumentError('--initial-cluster', `names no member '${args.name}' (--name); it lists ${cluster.map((member) => member.name).join(', ')}`);
  if (self.peerUrl !== peerUrl) throw new InvalidArgumentError('--initial-cluster', `gives ${args.name}=${self.peerUrl}, but --peer is ${peerUrl}`);
  return { clientUrl, peerUrl, cluster };
}

/**
 * `https://IP:PORT` of a listener given as IP:PORT. An IP literal, not a host name (etcd binds
 * to it, and the certificates name IPs), and not 0.0.0.0 or :: (the same URL is advertised
 * to the other members and clients, who cannot dial "any address").
 */
function listenUrl(field: string, text: string): string {
  if (text.trim().startsWith(':')) throw new InvalidArgumentError(field, `expected IP:PORT, got '${text}' (give the address the other hosts reach)`);
  const { host, port } = parseHostPort(field, text);
  if (isIP(host) === 0) throw new InvalidArgumentError(field, `'${host}' is not an IP address (etcd binds to it, and the member certificates name IPs)`);
  if (port === 0) throw new InvalidArgumentError(field, 'port 0: give the port, the other members and clients dial it');
  return checkedPeerUrl(field, `https://${formatHostPort({ host, port })}`);
}

/** Canonical https://IP:PORT (IPv6 as the URL parser writes it), or InvalidArgumentError naming `field`. */
function checkedPeerUrl(field: string, text: string): string {
  const match = /^https:\/\/(?:\[([^\]]+)\]|([^:/[\]]+)):(\d+)\/?$/.exec(text);
  if (match === null) throw new InvalidArgumentError(field, `'${text}' must be https://IP:PORT (TLS is required, the port explicit, nothing after it)`);
  const host = (match[1] ?? match[2]) as string;
  const port = Number(match[3]);
  if (isIP(host) === 0) throw new InvalidArgumentError(field, `'${text}': '${host}' is not an IP address`);
  if (port < 1 || port > 65535) throw new InvalidArgumentError(field, `'${text}': the port must be from 1 to 65535`);
  const canonicalHost = new URL(`https://${formatHostPort({ host, port })}/`).hostname.replace(/^\[(.*)\]$/, '$1');
  if (canonicalHost === '0.0.0.0' || canonicalHost === '::') throw new InvalidArgumentError(field, `'${text}': ${host} is "any address"; give the address the other hosts reach`);
  return `https://${formatHostPort({ host: canonicalHost, port })}`;
}

/** Parses NAME=https://IP:PORT[,NAME=https://IP:PORT...] (etcd's --initial-cluster), refusing duplicates. */
export function parseInitialCluster(field: string, text: string): EtcdClusterMember[] {
  const members: EtcdClusterMember[] = [];
  for (const entry of text.split(',')) {
    const match = /^\s*([^=\s]+)=(\S+)\s*$/.exec(entry);
    if (match === null) throw new InvalidArgumentError(field, `'${entry}' is not NAME=https://IP:PORT`);
    const name = match[1] as string;
    if (!etcdNamePattern.test(name)) throw new InvalidArgumentError(field, `member name '${name}' must be 1 to 31 letters, digits, _ . - (starting with a letter or digit)`);
    const peerUrl = checkedPeerUrl(field, match[2] as string);
    // etcd allows several URLs per member (NAME=URL1,NAME=URL2); meshblock gives each one.
    if (members.some((member) => member.name === name)) throw new InvalidArgumentError(field, `member '${name}' is listed twice`);
    const other = members.find((member) => member.peerUrl === peerUrl);
    if (other !== undefined) throw new InvalidArgumentError(field, `${name} and ${other.name} have the same peer URL ${peerUrl}`);
    members.push({ name, peerUrl });
  }
  return members;
}

/** etcd's --log-level for ours: etcd has no trace. */
function etcdLogLevel(level: Level): string {
  return level === 'trace' ? 'debug' : level;
}

/** etcd's command line for a member (everything but the binary). */
export function etcdArgs(member: {
  name: string;
  dataDir: string;
  clientUrl: string;
  peerUrl: string;
  cluster: readonly EtcdClusterMember[];
  existing: boolean;
  tls: { caPath: string; certPath: string; keyPath: string };
  logLevel: Level;
}): string[] {
  return [
    '--name', member.name,
    '--data-dir', member.dataDir,
    '--listen-client-urls', member.clientUrl,
    '--advertise-client-urls', member.clientUrl,
    '--listen-peer-urls', member.peerUrl,
    '--initial-advertise-peer-urls', member.peerUrl,
    '--initial-cluster', member.cluster.map((entry) => `${entry.name}=${entry.peerUrl}`).join(','),
    '--initial-cluster-state', member.existing ? 'existing' : 'new',
    '--initial-cluster-token', etcdInitialClusterToken,
    // Clients (the MDMs) and peers both present a certificate of the cluster's CA: without
    // one, nothing can read the MDM's state or join as a member.
    '--cert-file', member.tls.certPath,
    '--key-file', member.tls.keyPath,
    '--client-cert-auth',
    '--trusted-ca-file', member.tls.caPath,
    '--peer-cert-file', member.tls.certPath,
    '--peer-key-file', member.tls.keyPath,
    '--peer-client-cert-auth',
    '--peer-trusted-ca-file', member.tls.caPath,
    '--auto-compaction-mode', 'revision',
    '--auto-compaction-retention', String(etcdCompactionRevisionsKeptMin),
    '--quota-backend-bytes', String(etcdBackendBytesMax),
    '--max-request-bytes', String(etcdRequestBytesMax),
    '--heartbeat-interval', String(etcdHeartbeatIntervalMs),
    '--election-timeout', String(etcdElectionTimeoutMs),
    // A member cut off from the others keeps starting elections, and without pre-vote each
    // one raises its Raft term (etcd 3.4's default): when it comes back, its higher term
    // deposes the leader and the cluster has no leader for seconds, longer than the Master's
    // lease, so healing a partition would depose a healthy MDM Master. With pre-vote a
    // member raises its term only after a majority would vote for it.
    '--pre-vote',
    '--logger', 'zap',
    '--log-outputs', 'stderr',
    '--log-level', etcdLogLevel(member.logLevel),
  ];
}

/**
 * etcd reads ETCD_* variables as flags. Our command line is the whole configuration, so
 * they are dropped (a sourced /etc/default/etcd must not change a member), except
 * ETCD_UNSUPPORTED_ARCH, which etcd 3.4 needs on arm64 and which changes no behaviour.
 */
function etcdEnvironment(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('ETCD_') || key === 'ETCD_UNSUPPORTED_ARCH') env[key] = value;
  }
  return env;
}

/**
 * etcd runs under `setpriv --pdeathsig KILL` (util-linux, execs etcd, so the pid stays
 * etcd's) where available: if this process dies without stopping it (kill -9), the member
 * must not outlive it, or a restarted `etcd start` would run a second etcd on the same data
 * directory beside an orphan that nobody stops.
 */
const setprivPath = '/usr/bin/setpriv';

export async function etcdStart(args: EtcdStartArgs): Promise<void> {
  const { clientUrl, peerUrl, cluster } = checkEtcdStartArgs(args);
  const log = createRootLogger(args['log-level'], 'etcd');
  const tls = etcdMemberTlsFiles(path.resolve(args.pki), args.name);
  const override = process.env['MESHBLOCK_ETCD_BIN'];
  const bundled = override === undefined ? bundledEtcdCommand() : null;
  const etcd = bundled ?? { command: override ?? etcdBinDefault, args: [] };
  // What is checked and named in messages: the etcd binary itself, not the bundle's loader.
  const etcdBin = bundled === null ? etcd.command : (bundled.args[bundled.args.length - 1] as string);
  try {
    fs.accessSync(etcdBin, fs.constants.X_OK);
  } catch {
    throw new MeshblockError('MB_ERR_ETCD_START', `${etcdBin} is missing or not executable (install Debian's etcd-server, or set MESHBLOCK_ETCD_BIN)`);
  }
  const dataDir = path.resolve(args['data-dir']);
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  lockDataDir(dataDir, 'etcd');
  const etcdDataDir = path.join(dataDir, etcdDataSubdirectory);
  fs.mkdirSync(etcdDataDir, { recursive: true, mode: 0o700 });
  const etcdArguments = etcdArgs({ name: args.name, dataDir: etcdDataDir, clientUrl, peerUrl, cluster, existing: args.existing, tls, logLevel: args['log-level'] });
  const etcdArgv = [etcd.command, ...etcd.args, ...etcdArguments];
  const [command, ...commandArgs] = (fs.existsSync(setprivPath) ? [setprivPath, '--pdeathsig', 'KILL', ...etcdArgv] : etcdArgv) as [string, ...string[]];
  const child = spawn(command, commandArgs, { stdio: ['ignore', 'inherit', 'inherit'], env: etcdEnvironment() });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  try {
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
  } catch (err) {
    throw new MeshblockError('MB_ERR_ETCD_START', `cannot run ${etcdBin}: ${(err as Error).message}`, { cause: err });
  }
  // After the spawn, 'error' only reports a signal that could not be sent; the exit still comes.
  child.on('error', (err) => log.error({ err }, 'cannot signal etcd'));
  log.info({ name: args.name, etcdPid: child.pid, etcdBin, bundled: bundled !== null, clientUrl, peerUrl, state: args.existing ? 'existing' : 'new', dataDir }, 'etcd started');
  // "started", not "ready": a member of a new cluster serves only once a quorum has started.
  process.stdout.write(`etcd member ${args.name} (etcd pid ${child.pid}) started: clients ${clientUrl}, peers ${peerUrl}, data in ${dataDir}\n`);

  let stopSignal: NodeJS.Signals | null = null;
  let killTimer: NodeJS.Timeout | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopSignal !== null) {
      log.warn({ signal }, 'second signal: killing etcd');
      child.kill('SIGKILL');
      return;
    }
    stopSignal = signal;
    log.info({ signal }, 'stopping etcd');
    child.kill(signal);
    killTimer = setTimeout(() => {
      log.warn({ stopTimeoutMs: etcdStopTimeoutMs }, 'etcd did not stop in time: killing it');
      child.kill('SIGKILL');
    }, etcdStopTimeoutMs);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  const { code, signal } = await exited;
  clearTimeout(killTimer);
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  if (code !== null) {
    // etcd's own exit: 0 after a clean stop, non-zero when it failed (its log says why).
    if (code !== 0 || stopSignal === null) log.warn({ code }, 'etcd exited');
    process.exitCode = code;
    return;
  }
  // etcd 3.4 stops on SIGTERM/SIGINT and then re-raises the signal at itself, so a clean
  // stop we asked for ends with that signal: that is success.
  if (signal === stopSignal) {
    log.info({ signal }, 'etcd stopped');
    process.exitCode = 0;
    return;
  }
  log.error({ signal }, 'etcd was killed');
  process.exitCode = 128 + (signal !== null ? (osConstants.signals[signal] ?? 0) : 0);
}
