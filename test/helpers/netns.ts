// Simulated hosts for fault tests: each one a Linux network namespace with its own IPv4
// address, reachable from the root namespace (where the MDM, the SDC and the test run) and
// from the other simulated hosts, and able to be cut off from the network and healed
// without its processes noticing anything but silence.
//
// Topology 'bridge' (the default, when the kernel has bridges): a bridge mbsimX in the root
// namespace holding hostAddress 10.231.X.1/24; host k is namespace mbsimX-hK with loopback
// up and eth0 at 10.231.X.(k+2)/24, the peer of veth mbsimXvK, a port of the bridge.
// Topology 'mesh' (the fallback without bridges): host k's eth0 is a veth to mbsimXvK in the
// root namespace, which holds 10.231.X.1/32 on each of them with a /32 route to each host;
// every pair of hosts has its own veth pair (pJ in host k leads to host j). No forwarding
// anywhere, so net.ipv4.ip_forward is left alone.
//
// X is picked per network (so that tests running in parallel never share a subnet or a
// name): creating the veth mbsimXv0 is the atomic claim, and its alias records the owning
// pid. Leftovers of a run whose owner is gone are deleted before a new network is built.
//
// cut(k), bridge: `ip link set mbsimXvK down`, the bridge port of host k. The bridge drops
// every frame to and from host k (from the root namespace and from the other hosts); host
// k's eth0 loses carrier, so what it sends is dropped too. No routes change, no RST, no ICMP
// from the peer: established TCP connections just hang (the sender retransmits with backoff
// and carries on once healed). A new connect() times out; after ARP for the host fails
// (about 3 s) the kernel of the sender may report EHOSTUNREACH for it instead, while
// established connections only record that as a soft error and keep retrying.
// cut(k), mesh: every link of host k is taken down from inside host k (eth0 and each pJ).
// The far ends lose carrier and silently drop, as above; inside host k the routes go away,
// so host k's own sends fail with ENETUNREACH at once. (Taking the root end down instead
// would delete the root namespace's /32 route and let traffic fall to the default route.)
// heal(k) brings the links back up (and, for mesh, restores host k's routes) and returns
// once the kernel reports them up.

import { run, type RunResult, type TeardownHost } from './processes.js';

export interface SimHost {
  /** A label: host0, host1, ... unless names were given. */
  name: string;
  /** The network namespace: `ip netns exec NETNS ...`, or startMeshblock(..., { netns }). */
  netns: string;
  /** Its IPv4 address, reachable from the root namespace and from every other host. */
  address: string;
  /** The root namespace's end of its link (veth). */
  link: string;
}

export type SimTopology = 'bridge' | 'mesh';

export interface SimNetwork {
  topology: SimTopology;
  /** The root namespace's own address on the simulated network. */
  hostAddress: string;
  /** e.g. 10.231.7.0/24: every address of this network lies in it. */
  subnet: string;
  hosts: SimHost[];
  /** Makes host `index` unreachable both ways, leaving its processes running. */
  cut(index: number): Promise<void>;
  /** Undoes cut(index). */
  heal(index: number): Promise<void>;
  isCut(index: number): boolean;
  /** Runs a program inside host `index`'s namespace to completion. */
  exec(index: number, command: string, args: string[], options?: { timeoutMs?: number; input?: string }): Promise<RunResult>;
  /**
   * Deletes the namespaces, the veths and the bridge (idempotent; also done at teardown).
   * Processes still running in a namespace keep it alive, unnamed and without links, until
   * they exit; their own teardown ends them.
   */
  destroy(): Promise<void>;
}

export interface SimNetworkOptions {
  /** Forces a topology; by default 'bridge' when the kernel can make one, else 'mesh'. */
  topology?: SimTopology;
  /** Host labels, one per host. */
  names?: string[];
}

const namePrefix = 'mbsim';
const subnetPrefix = '10.231';
const ownerTag = 'meshblock-test-simnet pid=';
const ipTimeoutMs = 20_000;
const linkUpTimeoutMs = 10_000;

function ip(args: string[], netns?: string): Promise<RunResult> {
  return run('ip', netns === undefined ? args : ['-n', netns, ...args], { timeoutMs: ipTimeoutMs });
}

async function mustIp(args: string[], netns?: string): Promise<string> {
  const result = await ip(args, netns);
  if (result.code !== 0) {
    throw new Error(`ip ${netns === undefined ? '' : `-n ${netns} `}${args.join(' ')} failed (${result.code}): ${result.stderr.trim()}`);
  }
  return result.stdout;
}

interface LinkInfo {
  ifname: string;
  ifalias?: string;
  operstate?: string;
}

async function listLinks(netns?: string): Promise<LinkInfo[]> {
  const result = await ip(['-j', 'link', 'show'], netns);
  if (result.code !== 0 || result.stdout.trim() === '') return [];
  return JSON.parse(result.stdout) as LinkInfo[];
}

async function listNetns(): Promise<string[]> {
  const result = await ip(['-j', 'netns', 'list']);
  if (result.code !== 0 || result.stdout.trim() === '') return [];
  return (JSON.parse(result.stdout) as Array<{ name: string }>).map((entry) => entry.name);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const linkPattern = new RegExp(`^${namePrefix}(\\d+)(?:v(\\d+))?$`);
const netnsPattern = new RegExp(`^${namePrefix}(\\d+)-h\\d+$`);

/** Deletes everything of network X except its claim mbsimXv0, which goes last. */
async function deleteNetwork(x: number, links: LinkInfo[], namespaces: string[], keepClaim: boolean): Promise<void> {
  for (const netns of namespaces) {
    if (netnsPattern.exec(netns)?.[1] === String(x)) await ip(['netns', 'delete', netns]);
  }
  const claim = `${namePrefix}${x}v0`;
  for (const link of links) {
    if (link.ifname !== claim && linkPattern.exec(link.ifname)?.[1] === String(x)) await ip(['link', 'delete', link.ifname]);
  }
  if (!keepClaim) await ip(['link', 'delete', claim]);
}

/** Removes networks left behind by runs that died before their teardown. */
async function sweepLeftovers(): Promise<void> {
  const links = await listLinks();
  const namespaces = await listNetns();
  const xs = new Set<number>();
  for (const link of links) {
    const match = linkPattern.exec(link.ifname);
    if (match) xs.add(Number(match[1]));
  }
  for (const netns of namespaces) {
    const match = netnsPattern.exec(netns);
    if (match) xs.add(Number(match[1]));
  }
  for (const x of xs) {
    const claim = links.find((link) => link.ifname === `${namePrefix}${x}v0`);
    if (claim !== undefined) {
      // No alias yet: another run is creating it right now.
      if (claim.ifalias === undefined || !claim.ifalias.startsWith(ownerTag)) continue;
      if (pidAlive(Number(claim.ifalias.slice(ownerTag.length)))) continue;
    }
    await deleteNetwork(x, links, namespaces, false);
  }
}

/** True if anything in the root namespace already uses addresses of 10.231.X.0/24. */
async function subnetInUse(x: number): Promise<boolean> {
  const subnet = `${subnetPrefix}.${x}.0/24`;
  const addresses = await ip(['-4', '-o', 'addr', 'show', 'to', subnet]);
  const inside = await ip(['-4', '-o', 'route', 'show', 'root', subnet]);
  const covering = await ip(['-4', '-o', 'route', 'show', 'match', subnet]);
  const coveringRoutes = covering.stdout.split('\n').filter((line) => line.trim() !== '' && !line.startsWith('default'));
  return addresses.stdout.trim() !== '' || inside.stdout.trim() !== '' || coveringRoutes.length > 0;
}

async function waitForOperstate(what: string, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + linkUpTimeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function operstate(name: string, netns?: string): Promise<string | undefined> {
  const result = await ip(['-j', 'link', 'show', 'dev', name], netns);
  if (result.code !== 0) return undefined;
  return (JSON.parse(result.stdout) as LinkInfo[])[0]?.operstate;
}

/**
 * Builds a simulated network of `count` hosts, torn down with the test. Returns
 * `{ unavailable }` with the reason when this machine cannot (not root, no namespaces).
 */
export async function createSimNetwork(
  t: TeardownHost,
  count: number,
  options: SimNetworkOptions = {},
): Promise<SimNetwork | { unavailable: string }> {
  if (!Number.isInteger(count) || count < 1 || count > 250) throw new RangeError(`host count ${count} is not 1..250`);
  if (options.names !== undefined && options.names.length !== count) throw new RangeError('one name per host');
  if (process.platform !== 'linux') return { unavailable: `network namespaces need Linux, not ${process.platform}` };
  if (process.getuid?.() !== 0) return { unavailable: 'network namespaces need root' };
  const probe = await run('ip', ['-V'], { timeoutMs: ipTimeoutMs }).catch((err: Error) => ({ code: -1, stdout: '', stderr: err.message }));
  if (probe.code !== 0) return { unavailable: `no iproute2 (ip): ${probe.stderr.trim()}` };

  await sweepLeftovers();

  // Claim a subnet number X by creating the veth mbsimXv0 (fails if another run has it).
  let x = -1;
  const existing = new Set((await listLinks()).map((link) => link.ifname));
  const start = process.pid % 255;
  for (let i = 0; i < 255 && x < 0; i++) {
    const candidate = (start + i) % 255;
    if (existing.has(`${namePrefix}${candidate}v0`) || (await subnetInUse(candidate))) continue;
    const created = await ip(['link', 'add', `${namePrefix}${candidate}v0`, 'type', 'veth', 'peer', 'name', `${namePrefix}${candidate}p0`]);
    if (created.code === 0) {
      x = candidate;
    } else if (!/exists/i.test(created.stderr)) {
      return { unavailable: `cannot create a veth pair: ${created.stderr.trim()}` };
    }
  }
  if (x < 0) return { unavailable: `no free subnet in ${subnetPrefix}.0.0/16` };

  const claim = `${namePrefix}${x}v0`;
  const bridge = `${namePrefix}${x}`;
  const hostAddress = `${subnetPrefix}.${x}.1`;
  const hosts: SimHost[] = Array.from({ length: count }, (_, k) => ({
    name: options.names?.[k] ?? `host${k}`,
    netns: `${namePrefix}${x}-h${k}`,
    address: `${subnetPrefix}.${x}.${k + 2}`,
    link: `${namePrefix}${x}v${k}`,
  }));
  const cutState = hosts.map(() => false);
  let destroyed = false;

  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    // Mesh links between hosts first, so that nothing survives in a namespace kept alive by
    // a process that is still running.
    for (const host of hosts) {
      for (const link of await listLinks(host.netns)) {
        if (/^p\d+$/.test(link.ifname) || link.ifname === 'eth0') await ip(['link', 'delete', link.ifname], host.netns);
      }
    }
    await deleteNetwork(x, await listLinks(), await listNetns(), false);
  };
  // Never throws: a throwing teardown would skip the ones registered before it.
  t.teardown(() => destroy().catch(() => undefined));

  try {
    await mustIp(['link', 'set', 'dev', claim, 'alias', `${ownerTag}${process.pid}`]);
    // Anything else named for X is a leftover: X was free until the claim.
    await deleteNetwork(x, await listLinks(), await listNetns(), true);

    let topology: SimTopology = options.topology ?? 'bridge';
    if (topology === 'bridge') {
      const made = await ip(['link', 'add', bridge, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
      if (made.code !== 0) {
        if (options.topology === 'bridge') throw new Error(`cannot create a bridge: ${made.stderr.trim()}`);
        topology = 'mesh';
      } else {
        await mustIp(['addr', 'add', `${hostAddress}/24`, 'dev', bridge]);
        await mustIp(['link', 'set', 'dev', bridge, 'up']);
      }
    }

    for (const [k, host] of hosts.entries()) {
      const peer = `${namePrefix}${x}p${k}`;
      const made = await ip(['netns', 'add', host.netns]);
      if (made.code !== 0) {
        await destroy();
        return { unavailable: `cannot create a network namespace: ${made.stderr.trim()}` };
      }
      if (k > 0) await mustIp(['link', 'add', host.link, 'type', 'veth', 'peer', 'name', peer]);
      await mustIp(['link', 'set', 'dev', peer, 'netns', host.netns, 'name', 'eth0']);
      await mustIp(['link', 'set', 'dev', 'lo', 'up'], host.netns);
      if (topology === 'bridge') {
        await mustIp(['addr', 'add', `${host.address}/24`, 'dev', 'eth0'], host.netns);
        await mustIp(['link', 'set', 'dev', host.link, 'master', bridge]);
      } else {
        await mustIp(['addr', 'add', `${hostAddress}/32`, 'dev', host.link]);
        await mustIp(['addr', 'add', `${host.address}/32`, 'dev', 'eth0'], host.netns);
      }
      await mustIp(['link', 'set', 'dev', 'eth0', 'up'], host.netns);
      await mustIp(['link', 'set', 'dev', host.link, 'up']);
      if (topology === 'mesh') {
        await mustIp(['route', 'replace', `${host.address}/32`, 'dev', host.link, 'src', hostAddress]);
        await mustIp(['route', 'replace', `${hostAddress}/32`, 'dev', 'eth0', 'src', host.address], host.netns);
      }
    }
    if (topology === 'mesh') {
      for (let i = 0; i < count; i++) {
        for (let j = i + 1; j < count; j++) {
          const a = hosts[i] as SimHost;
          const b = hosts[j] as SimHost;
          await mustIp(['link', 'add', 'name', `p${j}`, 'netns', a.netns, 'type', 'veth', 'peer', 'name', `p${i}`, 'netns', b.netns]);
          for (const [self, other, dev] of [[a, b, `p${j}`], [b, a, `p${i}`]] as const) {
            await mustIp(['addr', 'add', `${self.address}/32`, 'dev', dev], self.netns);
            await mustIp(['link', 'set', 'dev', dev, 'up'], self.netns);
            await mustIp(['route', 'replace', `${other.address}/32`, 'dev', dev, 'src', self.address], self.netns);
          }
        }
      }
    }

    /** Host k's links: [name, netns] pairs, the ns side first. */
    const meshLinks = (k: number): Array<[string, string]> =>
      hosts.flatMap((_, j) => (j === k ? [] : [[`p${j}`, (hosts[k] as SimHost).netns] as [string, string]]));
    const allUp = async (k: number): Promise<boolean> => {
      const host = hosts[k] as SimHost;
      const names: Array<[string, string | undefined]> = [[host.link, undefined], ['eth0', host.netns]];
      if (topology === 'mesh') {
        for (const [dev, netns] of meshLinks(k)) names.push([dev, netns]);
        for (const [j, other] of hosts.entries()) if (j !== k) names.push([`p${k}`, other.netns]);
      }
      for (const [dev, netns] of names) if ((await operstate(dev, netns)) !== 'UP') return false;
      return true;
    };
    for (let k = 0; k < count; k++) await waitForOperstate(`the links of ${hosts[k]?.name} to come up`, () => allUp(k));
    if (topology === 'bridge') await waitForOperstate(`bridge ${bridge} to come up`, async () => (await operstate(bridge)) === 'UP');

    const hostAt = (index: number): SimHost => {
      const host = hosts[index];
      if (host === undefined) throw new RangeError(`no host ${index} (of ${count})`);
      return host;
    };

    const network: SimNetwork = {
      topology,
      hostAddress,
      subnet: `${subnetPrefix}.${x}.0/24`,
      hosts,
      cut: async (index) => {
        const host = hostAt(index);
        cutState[index] = true;
        if (topology === 'bridge') {
          await mustIp(['link', 'set', 'dev', host.link, 'down']);
          await waitForOperstate(`${host.name}'s eth0 to lose carrier`, async () => (await operstate('eth0', host.netns)) !== 'UP');
        } else {
          for (const [dev, netns] of [['eth0', host.netns] as [string, string], ...meshLinks(index)]) await mustIp(['link', 'set', 'dev', dev, 'down'], netns);
          await waitForOperstate(`${host.name}'s peers to lose carrier`, async () => (await operstate(host.link)) !== 'UP');
        }
      },
      heal: async (index) => {
        const host = hostAt(index);
        if (topology === 'bridge') {
          await mustIp(['link', 'set', 'dev', host.link, 'up']);
        } else {
          await mustIp(['link', 'set', 'dev', 'eth0', 'up'], host.netns);
          await mustIp(['route', 'replace', `${hostAddress}/32`, 'dev', 'eth0', 'src', host.address], host.netns);
          for (const [j, other] of hosts.entries()) {
            if (j === index) continue;
            await mustIp(['link', 'set', 'dev', `p${j}`, 'up'], host.netns);
            await mustIp(['route', 'replace', `${other.address}/32`, 'dev', `p${j}`, 'src', host.address], host.netns);
          }
        }
        await waitForOperstate(`the links of ${host.name} to come back up`, () => allUp(index));
        // Neighbour entries that failed during the cut answer EHOSTUNREACH for a while
        // after it: forget them on both sides so the next packet resolves afresh.
        await ip(['neigh', 'flush', 'to', host.address]);
        await ip(['neigh', 'flush', 'all'], host.netns);
        cutState[index] = false;
      },
      isCut: (index) => {
        hostAt(index);
        return cutState[index] as boolean;
      },
      exec: (index, command, args, execOptions = {}) => run('ip', ['netns', 'exec', hostAt(index).netns, command, ...args], execOptions),
      destroy,
    };
    return network;
  } catch (err) {
    await destroy().catch(() => undefined);
    throw err;
  }
}
