// Proves the simulated-host network of test/helpers/netns.ts on real namespaces:
// - a TCP echo server inside host 0 answers the root namespace and host 1, on both
//   topologies (bridge, and the mesh fallback for kernels without bridges);
// - cut(0) makes host 0 unreachable both ways without resetting an established connection,
//   and nothing is routed out of the machine meanwhile; heal(0) brings it all back, the
//   established connection included;
// - a real meshblock daemon started in a namespace through startNbdServe(..., { netns })
//   answers nbdinfo from the root namespace, and the handle's pid is the node process
//   itself: SIGSTOP/SIGCONT and kill reach it;
// - destroy removes the namespaces and links, and leftovers of a dead run are swept.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import t, { type Test } from 'tap';
import { sparseFile } from '../helpers/files.js';
import { createSimNetwork, type SimNetwork, type SimNetworkOptions } from '../helpers/netns.js';
import { run, startNbdServe } from '../helpers/processes.js';

const MiB = 1024 * 1024;

async function simNetwork(t: Test, count: number, options: SimNetworkOptions = {}): Promise<SimNetwork | undefined> {
  const network = await createSimNetwork(t, count, options);
  if ('unavailable' in network) {
    t.skip(network.unavailable, () => undefined);
    return undefined;
  }
  return network;
}

const echoServer = `
const net = require('node:net');
const server = net.createServer((socket) => { socket.on('error', () => {}); socket.pipe(socket); });
server.listen(0, process.argv[1], () => console.log('listening ' + server.address().port));
`;

/** Runs the echo server inside `netns` on `address`, killed in teardown; resolves its port. */
async function startEchoServer(t: Test, netns: string, address: string): Promise<{ port: number; pid: number }> {
  const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', echoServer, address], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  const exited = once(child, 'exit');
  t.teardown(async () => {
    try {
      process.kill(-(child.pid as number), 'SIGKILL');
    } catch {
      // Already gone.
    }
    if (child.exitCode === null && child.signalCode === null) await exited;
  });
  let out = '';
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      out += text;
      const match = /listening (\d+)/.exec(out);
      if (match) resolve(Number(match[1]));
    });
    void exited.then(([code]) => reject(new Error(`echo server exited ${code}`)));
  });
  return { port, pid: child.pid as number };
}

/** Connects from this (the root) namespace, or rejects within `timeoutMs`. */
function connect(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connect to ${host}:${port} timed out`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    });
  });
}

/** Sends `message` and waits for it to come back. */
async function echoFromRoot(host: string, port: number, message: string, timeoutMs = 5000): Promise<string> {
  const socket = await connect(host, port, timeoutMs);
  try {
    return await readEcho(socket, message.length, timeoutMs, () => socket.write(message));
  } finally {
    socket.destroy();
  }
}

function readEcho(socket: net.Socket, length: number, timeoutMs: number, send?: () => void): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const timer = setTimeout(() => done(new Error(`no echo within ${timeoutMs} ms (got ${JSON.stringify(got)})`)), timeoutMs);
    const onData = (data: Buffer): void => {
      got += data.toString('utf8');
      if (got.length >= length) done(undefined, got);
    };
    const onError = (err: Error): void => done(err);
    const done = (err?: Error, value?: string): void => {
      clearTimeout(timer);
      socket.off('data', onData).off('error', onError);
      if (err) reject(err);
      else resolve(value as string);
    };
    socket.on('data', onData).on('error', onError);
    send?.();
  });
}

const echoClient = `
const net = require('node:net');
const [host, port, message] = process.argv.slice(1);
const socket = net.connect({ host, port: Number(port) });
const timer = setTimeout(() => { console.error('timed out'); process.exit(2); }, 3000);
let got = '';
socket.on('connect', () => socket.write(message));
socket.on('data', (data) => { got += data; if (got.length >= message.length) { clearTimeout(timer); console.log(got); socket.destroy(); } });
socket.on('error', (err) => { console.error(err.code || err.message); process.exit(1); });
`;

async function echoFromHost(network: SimNetwork, index: number, host: string, port: number, message: string) {
  return network.exec(index, process.execPath, ['-e', echoClient, host, String(port), message], { timeoutMs: 15_000 });
}

async function netnsNames(): Promise<string[]> {
  const listed = await run('ip', ['-j', 'netns', 'list']);
  return listed.stdout.trim() === '' ? [] : (JSON.parse(listed.stdout) as Array<{ name: string }>).map((entry) => entry.name);
}

async function rootLinkNames(): Promise<string[]> {
  const listed = await run('ip', ['-j', 'link', 'show']);
  return (JSON.parse(listed.stdout) as Array<{ ifname: string }>).map((entry) => entry.ifname);
}

for (const topology of ['bridge', 'mesh'] as const) {
  t.test(`${topology}: echo across namespaces, cut and heal`, async (t) => {
    const network = await simNetwork(t, 2, { topology });
    if (!network) return;
    t.equal(network.topology, topology);
    const [host0, host1] = network.hosts as [SimNetwork['hosts'][0], SimNetwork['hosts'][0]];
    t.not(host0.address, host1.address);
    t.ok(network.hostAddress.startsWith('10.231.') && host0.address.startsWith('10.231.'), 'private 10.231/16 addresses');
    const names = await netnsNames();
    t.ok(names.includes(host0.netns) && names.includes(host1.netns), 'the namespaces exist');

    const server = await startEchoServer(t, host0.netns, host0.address);
    t.equal(await echoFromRoot(host0.address, server.port, 'from root'), 'from root', 'root namespace reaches host 0');
    const fromHost1 = await echoFromHost(network, 1, host0.address, server.port, 'from host1');
    t.equal(fromHost1.stdout.trim(), 'from host1', `host 1 reaches host 0 ${fromHost1.stderr}`);
    // An echo server in the root namespace, on its address on the simulated network.
    const rootServer = net.createServer((socket) => {
      socket.on('error', () => undefined);
      socket.pipe(socket);
    });
    rootServer.listen(0, network.hostAddress);
    await once(rootServer, 'listening');
    t.teardown(() => rootServer.close());
    const rootPort = (rootServer.address() as net.AddressInfo).port;
    const toRoot = await echoFromHost(network, 0, network.hostAddress, rootPort, 'to root');
    t.equal(toRoot.stdout.trim(), 'to root', `host 0 reaches the root namespace ${toRoot.stderr}`);

    const established = await connect(host0.address, server.port, 5000);
    t.teardown(() => established.destroy());
    let closedEarly = false;
    established.on('close', () => (closedEarly = true)).on('error', () => undefined);
    t.equal(await readEcho(established, 6, 5000, () => established.write('before')), 'before');

    await network.cut(0);
    t.ok(network.isCut(0));
    const route = await run('ip', ['-o', 'route', 'get', host0.address]);
    t.notMatch(route.stdout, /dev eth0\b|via /, `no route out of the machine to a cut host: ${route.stdout.trim()}`);
    await t.rejects(connect(host0.address, server.port, 1500), 'the root namespace cannot connect to a cut host');
    const cutFromHost1 = await echoFromHost(network, 1, host0.address, server.port, 'cut');
    t.not(cutFromHost1.code, 0, `host 1 cannot reach a cut host either (${cutFromHost1.stderr.trim()})`);
    const cutToRoot = await echoFromHost(network, 0, network.hostAddress, rootPort, 'cut');
    t.not(cutToRoot.code, 0, `nor can the cut host reach the root namespace (${cutToRoot.stderr.trim()})`);
    // What was sent on the established connection waits: no reset, no echo.
    const during = readEcho(established, 6, 60_000, () => established.write('during'));
    await new Promise((resolve) => setTimeout(resolve, 700));
    t.notOk(closedEarly, 'the established connection is not reset by the cut');

    await network.heal(0);
    t.notOk(network.isCut(0));
    t.equal(await during, 'during', 'the established connection carries on once healed');
    t.equal(await echoFromRoot(host0.address, server.port, 'healed'), 'healed', 'the root namespace reaches host 0 again');
    const healedFromHost1 = await echoFromHost(network, 1, host0.address, server.port, 'healed1');
    t.equal(healedFromHost1.stdout.trim(), 'healed1', `host 1 reaches host 0 again ${healedFromHost1.stderr}`);
    const healedToRoot = await echoFromHost(network, 0, network.hostAddress, rootPort, 'healed0');
    t.equal(healedToRoot.stdout.trim(), 'healed0', `host 0 reaches the root namespace again ${healedToRoot.stderr}`);
    established.destroy();

    const prefix = host0.link.replace(/v\d+$/, '');
    await network.destroy();
    await network.destroy();
    const after = await netnsNames();
    t.notOk(after.includes(host0.netns) || after.includes(host1.netns), 'destroy removed the namespaces');
    const leftLinks = (await rootLinkNames()).filter((name) => name === prefix || name.startsWith(`${prefix}v`) || name.startsWith(`${prefix}p`));
    t.same(leftLinks, [], 'destroy removed the links and the bridge');
  });
}

t.test('a meshblock daemon runs inside a namespace and answers from the root one', async (t) => {
  const network = await simNetwork(t, 1);
  if (!network) return;
  const host = network.hosts[0] as SimNetwork['hosts'][0];
  const nbdinfo = await run('nbdinfo', ['--version']).catch(() => undefined);
  if (nbdinfo?.code !== 0) {
    t.skip('nbdinfo is not installed (apt-get install -y libnbd-bin)', () => undefined);
    return;
  }
  const dir = t.testdir();
  const file = sparseFile(dir, 'disk.img', 16 * MiB);
  const serve = await startNbdServe(t, ['--file', file, '--listen', `${host.address}:0`], { netns: host.netns });
  t.equal(serve.host, host.address, 'listening on the namespace address');
  const pid = serve.process.pid as number;

  // The handle's pid is the node process itself (ip netns exec execs), inside the namespace.
  t.match(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0'), [process.execPath, /meshblock\.cjs$/], 'the pid is node running meshblock');
  t.equal(fs.statSync(`/proc/${pid}/ns/net`).ino, fs.statSync(`/run/netns/${host.netns}`).ino, 'in the namespace');
  t.ok((await run('ip', ['netns', 'pids', host.netns])).stdout.split('\n').includes(String(pid)), 'ip netns pids lists it');

  const uri = `nbd://${host.address}:${serve.port}/`;
  const info = await run('nbdinfo', ['--size', uri], { timeoutMs: 15_000 });
  t.equal(info.code, 0, `nbdinfo answers from the root namespace ${info.stderr}`);
  t.equal(info.stdout.trim(), String(16 * MiB));

  const state = (): string => (/^\d+ \(.*\) (\S)/s.exec(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))?.[1] ?? '?');
  serve.process.kill('SIGSTOP');
  await waitFor(() => state() === 'T', 'SIGSTOP to stop it');
  t.equal(state(), 'T', 'SIGSTOP through the handle stops the node process');
  serve.process.kill('SIGCONT');
  await waitFor(() => state() !== 'T', 'SIGCONT to resume it');
  t.not(state(), 'T', 'SIGCONT resumes it');

  await network.cut(0);
  const whileCut = await run('nbdinfo', ['--size', uri], { timeoutMs: 3000 });
  t.not(whileCut.code, 0, 'nbdinfo gets nothing from a cut host');
  await network.heal(0);
  // A few tries: the first packets after a heal may still find the path settling.
  let healed = await run('nbdinfo', ['--size', uri], { timeoutMs: 15_000 });
  for (let attempt = 0; attempt < 5 && healed.code !== 0; attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    healed = await run('nbdinfo', ['--size', uri], { timeoutMs: 15_000 });
  }
  t.equal(healed.code, 0, `nbdinfo answers again once healed ${healed.stderr}`);
  t.equal(serve.process.exitCode, null, 'the daemon ran through the cut');

  await serve.kill();
  t.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, 'kill through the handle ends the node process');
  t.notOk((await run('ip', ['netns', 'pids', host.netns])).stdout.split('\n').includes(String(pid)), 'nothing left in the namespace');
  const gone = await run('nbdinfo', ['--size', uri], { timeoutMs: 15_000 });
  t.not(gone.code, 0, 'nbdinfo is refused once the daemon is gone');
});

t.test('leftovers of a dead run are swept', async (t) => {
  if (process.getuid?.() !== 0) {
    t.skip('needs root', () => undefined);
    return;
  }
  const dead = spawn(process.execPath, ['-e', '']);
  await once(dead, 'exit');
  const deadPid = dead.pid as number;
  // Fake a network X that a run with pid `deadPid` left behind: its claim and a namespace.
  const links = new Set(await rootLinkNames());
  let x = -1;
  for (let candidate = 254; candidate >= 0 && x < 0; candidate--) {
    if (links.has(`mbsim${candidate}v0`)) continue;
    if ((await run('ip', ['link', 'add', `mbsim${candidate}v0`, 'type', 'veth', 'peer', 'name', `mbsim${candidate}p0`])).code === 0) x = candidate;
  }
  t.ok(x >= 0, 'made a fake leftover claim');
  const claim = `mbsim${x}v0`;
  const leftoverNs = `mbsim${x}-h0`;
  t.teardown(async () => {
    await run('ip', ['link', 'delete', claim]);
    await run('ip', ['netns', 'delete', leftoverNs]);
  });
  t.equal((await run('ip', ['link', 'set', 'dev', claim, 'alias', `meshblock-test-simnet pid=${deadPid}`])).code, 0);
  t.equal((await run('ip', ['netns', 'add', leftoverNs])).code, 0);

  const network = await simNetwork(t, 1);
  if (!network) return;
  const reused = network.hosts[0]?.netns === leftoverNs;
  if (!reused) {
    t.notOk((await netnsNames()).includes(leftoverNs), 'the leftover namespace is gone');
    t.notOk((await rootLinkNames()).includes(claim), 'the leftover claim is gone');
  } else {
    const alias = JSON.parse((await run('ip', ['-j', 'link', 'show', 'dev', claim])).stdout) as Array<{ ifalias?: string }>;
    t.equal(alias[0]?.ifalias, `meshblock-test-simnet pid=${process.pid}`, 'the swept subnet was reclaimed by this run');
  }
});

async function waitFor(probe: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
