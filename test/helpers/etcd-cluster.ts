// A real etcd cluster for tests: 1, 3 or 5 members on free loopback ports, each run by
// `node bin/meshblock.cjs etcd start` (which runs Debian's /usr/bin/etcd), with the PKI of
// src/mdm/etcd-pki.ts in the test's directory. Members are named mdm1..mdmN unless told;
// the PKI also has client pairs for every member name, mdm1..mdm5 and `etcdctl` (the pair
// the helper's own etcdctl calls present). Every process is killed in the test's teardown.
//
// Membership changes go through the real tool, etcdctl, against the live members, as an
// operator would do them (wipeAndReAdd: member remove, wipe, member add, join).
//
// With `hosts` (simulated hosts, test/helpers/netns.ts), member i runs inside host i's
// network namespace on etcd's registered ports of the host's address instead, so that
// cutting the host's link cuts the member off as it would a real host.

import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Etcd3 } from 'etcd3';
import { defaultEtcdClientPort, defaultEtcdPeerPort } from '../../src/cli/etcd-start.js';
import { createEtcdPki, loadEtcdClientTls } from '../../src/mdm/etcd-pki.js';
import { run, startMeshblock, type DaemonHandle, type RunResult, type TeardownHost } from './processes.js';

/** Client pairs every cluster's PKI holds, beyond one per member name. */
export const etcdTestClientNames: readonly string[] = ['mdm1', 'mdm2', 'mdm3', 'mdm4', 'mdm5', 'etcdctl'];
/** Members must answer `endpoint health` within this after they are started. */
export const etcdHealthyTimeoutMs = 30_000;
/** A membership change refused as "unhealthy cluster" is repeated for this long (etcd waits for 5 s of connectivity). */
export const etcdReconfigureTimeoutMs = 15_000;
/** etcdctl's own bounds per call, so that a dead endpoint costs a probe seconds, not minutes. */
const etcdctlDialTimeout = '1s';
const etcdctlCommandTimeout = '3s';

/** Where a member runs when not on loopback: a simulated host's namespace and address. */
export interface EtcdMemberHost {
  netns: string;
  address: string;
}

export interface EtcdMember {
  name: string;
  /** https://127.0.0.1:PORT (https://HOST-ADDRESS:2379 on a simulated host) */
  clientUrl: string;
  /** https://127.0.0.1:PORT (https://HOST-ADDRESS:2380 on a simulated host) */
  peerUrl: string;
  /** `--data-dir` of `meshblock etcd start` (etcd's own data is in DATA-DIR/etcd). */
  dataDir: string;
  /** The `meshblock etcd start` process; null while the member is stopped. */
  pid: number | null;
  /** etcd's own process (a child of `pid`); null while the member is stopped. */
  etcdPid: number | null;
}

export interface EtcdCluster {
  /** Every member's client URL, in member order. */
  endpoints: string[];
  pkiDir: string;
  members: EtcdMember[];
  /**
   * Signals member i (`meshblock etcd start` and etcd). SIGKILL kills both at once (a host
   * that dies); SIGTERM/SIGINT go to `meshblock etcd start`, which stops etcd. Both wait
   * for the exit and resolve with `meshblock etcd start`'s exit code (null if killed).
   * SIGSTOP/SIGCONT freeze and thaw both (a host that hangs) and resolve at once with null.
   */
  kill(i: number, signal?: NodeJS.Signals): Promise<number | null>;
  /**
   * Starts member i again from its data directory. Once a majority of the members runs, it
   * waits until every running member is healthy; a member started while fewer run (the
   * first ones after stopAll) cannot be, and it returns once etcd is started.
   */
  start(i: number): Promise<void>;
  /** SIGTERM to every running member, waiting for each to exit. */
  stopAll(): Promise<void>;
  /**
   * Replaces member i as an operator replaces a dead host's member: stops it if running,
   * `member remove` through a live member, deletes its data directory, `member add` with
   * the same name and peer URL, starts it with --existing and waits until it is healthy.
   */
  wipeAndReAdd(i: number): Promise<void>;
  /** Waits until every member in `indexes` (default: all) answers `endpoint health`. */
  waitHealthy(indexes?: readonly number[]): Promise<void>;
  /** Runs etcdctl (client-etcdctl pair) against `endpoints` (default: the running members). */
  etcdctl(args: string[], endpoints?: readonly string[]): Promise<RunResult>;
  /** What member i's `meshblock etcd start` and etcd logged in its latest run ('' before the first). */
  stderr(i: number): string;
  /** The test the cluster belongs to (etcdClient registers its close there). */
  t: TeardownHost;
}

/** Free loopback ports, distinct from each other (held together, then released). */
export async function freeLoopbackPorts(count: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let index = 0; index < count; index++) {
      const server = net.createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', resolve);
      });
    }
    return servers.map((server) => (server.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }
}

const readyPattern = /^etcd member (\S+) \(etcd pid (\d+)\) started: clients (\S+), peers (\S+), data in (.+)$/m;

export async function startEtcdCluster(t: TeardownHost, options: { members: 1 | 3 | 5; dir: string; names?: readonly string[]; hosts?: readonly EtcdMemberHost[] }): Promise<EtcdCluster> {
  const names = options.names ?? Array.from({ length: options.members }, (_, index) => `mdm${index + 1}`);
  if (names.length !== options.members) throw new Error(`startEtcdCluster: ${names.length} names for ${options.members} members`);
  const hosts = options.hosts;
  if (hosts !== undefined && hosts.length !== names.length) throw new Error(`startEtcdCluster: ${hosts.length} hosts for ${names.length} members`);
  const pkiDir = path.join(options.dir, 'etcd-pki');
  createEtcdPki(pkiDir, {
    members: names.map((name, index) => ({ name, ips: [hosts?.[index]?.address ?? '127.0.0.1'] })),
    clients: [...new Set([...names, ...etcdTestClientNames])],
  });
  // A namespace has ports of its own: etcd's registered ones are free there.
  const ports = hosts === undefined ? await freeLoopbackPorts(2 * names.length) : names.flatMap(() => [defaultEtcdClientPort, defaultEtcdPeerPort]);
  const members: EtcdMember[] = names.map((name, index) => ({
    name,
    clientUrl: `https://${hosts?.[index]?.address ?? '127.0.0.1'}:${ports[2 * index] as number}`,
    peerUrl: `https://${hosts?.[index]?.address ?? '127.0.0.1'}:${ports[2 * index + 1] as number}`,
    dataDir: path.join(options.dir, `etcd-${name}`),
    pid: null,
    etcdPid: null,
  }));
  const handles: Array<DaemonHandle | null> = members.map(() => null);
  /** Each member's latest run, kept after it exits (for its log). */
  const latest: Array<DaemonHandle | null> = members.map(() => null);
  const initialCluster = (): string => members.map((member) => `${member.name}=${member.peerUrl}`).join(',');
  const member = (i: number): EtcdMember => {
    const found = members[i];
    if (found === undefined) throw new Error(`no etcd member ${i} (the cluster has ${members.length})`);
    return found;
  };

  const launch = async (i: number, existing: boolean): Promise<void> => {
    const target = member(i);
    if (handles[i] !== null) throw new Error(`etcd member ${target.name} is already running`);
    const args = ['etcd', 'start', '--data-dir', target.dataDir, '--name', target.name, '--client', target.clientUrl.slice('https://'.length), '--peer', target.peerUrl.slice('https://'.length), '--initial-cluster', initialCluster(), '--pki', pkiDir];
    if (existing) args.push('--existing');
    const netns = hosts?.[i]?.netns;
    const handle = await startMeshblock(t, args, { ready: readyPattern, ...(netns !== undefined ? { netns } : {}) });
    handles[i] = handle;
    latest[i] = handle;
    target.pid = handle.process.pid ?? null;
    target.etcdPid = Number(handle.ready[2]);
    void handle.exited.then(() => {
      if (handles[i] === handle) {
        handles[i] = null;
        target.pid = null;
        target.etcdPid = null;
      }
    });
  };

  const etcdctl = (args: string[], endpoints?: readonly string[]): Promise<RunResult> => {
    const chosen = endpoints ?? members.filter((_, index) => handles[index] !== null).map((entry) => entry.clientUrl);
    return run(
      'etcdctl',
      [
        '--endpoints', chosen.join(','),
        '--cacert', path.join(pkiDir, 'ca.crt'),
        '--cert', path.join(pkiDir, 'client-etcdctl.crt'),
        '--key', path.join(pkiDir, 'client-etcdctl.key'),
        '--dial-timeout', etcdctlDialTimeout,
        '--command-timeout', etcdctlCommandTimeout,
        ...args,
      ],
      { env: { ETCDCTL_API: '3' }, timeoutMs: 30_000 },
    );
  };

  const waitHealthy = async (indexes: readonly number[] = members.map((_, index) => index)): Promise<void> => {
    const deadline = Date.now() + etcdHealthyTimeoutMs;
    let last = '';
    for (;;) {
      const stopped = indexes.filter((index) => handles[index] === null);
      if (stopped.length > 0) throw new Error(`etcd members ${stopped.map((index) => member(index).name).join(', ')} are not running; last health: ${last}`);
      const result = await etcdctl(['endpoint', 'health', '-w', 'json'], indexes.map((index) => member(index).clientUrl));
      last = `${result.stdout.trim()} ${result.stderr.trim().split('\n').pop() ?? ''}`;
      let healthy = 0;
      try {
        const reports = JSON.parse(result.stdout) as Array<{ endpoint: string; health: boolean }>;
        healthy = reports.filter((report) => report.health).length;
      } catch {
        // No JSON yet (etcdctl failed before probing): not healthy.
      }
      if (healthy === indexes.length) return;
      if (Date.now() > deadline) throw new Error(`etcd members not healthy after ${etcdHealthyTimeoutMs} ms: ${last}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  };

  const kill = async (i: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> => {
    const handle = handles[i];
    if (handle === null || handle === undefined) throw new Error(`etcd member ${member(i).name} is not running`);
    if (signal === 'SIGSTOP' || signal === 'SIGCONT') {
      process.kill(-(handle.process.pid as number), signal);
      return null;
    }
    if (signal === 'SIGKILL') await handle.kill();
    else handle.process.kill(signal);
    const code = await handle.exited;
    handles[i] = null;
    member(i).pid = null;
    member(i).etcdPid = null;
    return code;
  };

  const start = async (i: number): Promise<void> => {
    // A data directory that holds a member makes etcd ignore --existing/--initial-cluster;
    // --existing only matters for one wiped after `member add`.
    await launch(i, true);
    const running = members.map((_, index) => index).filter((index) => handles[index] !== null);
    if (running.length >= Math.floor(members.length / 2) + 1) await waitHealthy(running);
  };

  const stopAll = async (): Promise<void> => {
    await Promise.all(members.map(async (_, index) => (handles[index] !== null ? kill(index, 'SIGTERM') : undefined)));
  };

  /**
   * A membership change, repeated while etcd refuses it for now: with strict reconfiguration
   * checks (etcd's default) a member only accepts one once every voting member has been
   * connected to it for 5 s ("unhealthy cluster"), which a member restarted just before is not.
   */
  const reconfigure = async (args: string[], endpoints: readonly string[]): Promise<void> => {
    const deadline = Date.now() + etcdReconfigureTimeoutMs;
    for (;;) {
      const result = await etcdctl(args, endpoints);
      if (result.code === 0) return;
      if (!/unhealthy cluster|not enough started members/.test(result.stderr) || Date.now() > deadline) throw new Error(`etcdctl ${args.join(' ')} failed: ${result.stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  };

  const wipeAndReAdd = async (i: number): Promise<void> => {
    const target = member(i);
    if (handles[i] !== null) await kill(i, 'SIGTERM');
    const live = members.filter((_, index) => index !== i && handles[index] !== null).map((entry) => entry.clientUrl);
    const list = await etcdctl(['member', 'list', '-w', 'simple'], live);
    if (list.code !== 0) throw new Error(`etcdctl member list failed: ${list.stderr}`);
    // Lines: ID, status, name, peer URLs, client URLs, is learner. The ID is hex here (the
    // JSON output gives it as a decimal uint64, beyond what JSON.parse keeps exact).
    const line = list.stdout.split('\n').find((entry) => entry.split(', ')[3] === target.peerUrl);
    if (line !== undefined) await reconfigure(['member', 'remove', line.split(', ')[0] as string], live);
    fs.rmSync(target.dataDir, { recursive: true, force: true });
    await reconfigure(['member', 'add', target.name, `--peer-urls=${target.peerUrl}`], live);
    await start(i);
  };

  // Every launch registers its process's teardown (startMeshblock: SIGKILL to its group,
  // etcd included), restarts too, so nothing outlives the test.
  await Promise.all(members.map((_, index) => launch(index, false)));
  await waitHealthy();
  const stderr = (i: number): string => latest[i]?.stderr() ?? '';
  return { endpoints: members.map((entry) => entry.clientUrl), pkiDir, members, kill, start, stopAll, wipeAndReAdd, waitHealthy, etcdctl, stderr, t };
}

/**
 * An etcd3 client presenting client-<clientName> (from the cluster's PKI) to `endpoints`
 * (default: every member), with every unary call bounded by `callTimeoutMs`. Closed in the
 * cluster's test teardown.
 */
export function etcdClient(cluster: Pick<EtcdCluster, 'endpoints' | 'pkiDir' | 't'>, clientName: string, options: { endpoints?: readonly string[]; callTimeoutMs?: number } = {}): Etcd3 {
  const tls = loadEtcdClientTls(cluster.pkiDir, clientName);
  const callTimeoutMs = options.callTimeoutMs ?? 5000;
  const client = new Etcd3({
    hosts: [...(options.endpoints ?? cluster.endpoints)],
    credentials: { rootCertificate: tls.ca, certChain: tls.cert, privateKey: tls.key },
    dialTimeout: callTimeoutMs,
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
  });
  cluster.t.teardown(() => client.close());
  return client;
}
