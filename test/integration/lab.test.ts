// Proves `meshblock lab` on real processes: `lab up --detach` starts an MDM, three SDSs on
// sparse files and an SDC, lays out pd1/sp1 with two thin volumes and exports them over NBD
// (nbdinfo --list sees them; a block written with nbdcopy is there after a restart);
// `lab status --json` keeps its contract; the management commands reach the lab's MDM with
// --dir alone or when run in the lab directory; `lab down` stops every daemon (and status
// still answers), `lab up` resumes the same cluster with its volumes and addresses, `lab up`
// in the foreground stops the lab on Ctrl-C, bad flags exit 2 in one line, and
// `lab down --purge` deletes the directory.
//
// In process, it also pins which lab (if any) a management command takes its API,
// certificate and password from: --dir, $MESHBLOCK_LAB_DIR, the current directory, and what
// --api and MESHBLOCK_API override.
//
// The NBD parts need `meshblock sdc start` (dist/cli/sdc-start.js); without it they are
// skipped with that reason, and the rest runs against a lab without an SDC.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { applyLabConnectionDefaults, labConnectionDefaults, writeLabFile, type LabFile } from '../../src/cli/lab-state.js';
import { meshblockBin, nodeCommand, repoRoot, run, runMeshblock, squat, startMeshblock, type RunResult, freePort } from '../helpers/processes.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const sdcBuilt = fs.existsSync(path.join(repoRoot, 'dist/cli/sdc-start.js'));
const needsSdc = sdcBuilt ? false : 'needs meshblock sdc start (dist/cli/sdc-start.js is not built)';
/** `lab up` starts five daemons and waits for their exports. */
const labUpTimeoutMs = 90_000;

interface StatusJson {
  lab: { dir: string; clusterId: string | null; apiUrl: string; mdmReachable: boolean; mdmError: string | null };
  processes: Array<{ role: string; name: string; pid: number | null; address: string; state: string; clusterState: string | null; devicePath?: string; io?: string | null }>;
  volumes: Array<{ name: string; sizeBytes: number; nbdUri: string | null; mappedSdcs: string[] }>;
  capacity: Record<string, number> | null;
  health: { degradedBytes: number; failedBytes: number; rebuild: { state: string; percent: number } } | null;
}

/** The meshblock command run in `cwd`, with no lab or API named by the environment. */
async function runMeshblockIn(cwd: string, args: string[]): Promise<RunResult> {
  const env = { ...process.env };
  for (const name of ['MESHBLOCK_LAB_DIR', 'MESHBLOCK_API', 'MESHBLOCK_CA_CERT', 'MESHBLOCK_PASSWORD']) delete env[name];
  const child = spawn(...nodeCommand([meshblockBin, ...args]), { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  // events.once() resolves with the listener's arguments as any[]: 'exit' gives (code, signal).
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stdout, stderr };
}

/** Alive and not a zombie: an orphaned daemon is reaped by init, which may take a moment. */
function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // The state follows the parenthesised command name: "PID (comm) S ...".
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

t.test('lab up, status, management, down, resume, purge', async (t) => {
  // Whatever happens, no daemon outlives the test. Registered before t.testdir(), so that it
  // runs before tap deletes the directory with the lab.json that `lab down` needs.
  const cleanup: { dir: string | null } = { dir: null };
  t.teardown(async () => {
    if (cleanup.dir !== null && fs.existsSync(path.join(cleanup.dir, 'lab.json'))) await runMeshblock(['lab', 'down', '--dir', cleanup.dir]);
  });
  // One t.testdir() call: each call makes the directory afresh.
  const scratch = t.testdir();
  const dir = path.join(scratch, 'lab');
  cleanup.dir = dir;
  const nbdPort = await freePort();
  const lab = async (args: string[], timeoutMs = labUpTimeoutMs): Promise<RunResult> => runMeshblock(['lab', ...args], { timeoutMs });
  const status = async (): Promise<StatusJson> => {
    const result = await lab(['status', '--dir', dir, '--json']);
    t.equal(result.code, 0, `lab status --json${result.code === 0 ? '' : `: ${result.stderr.trim()}`}`);
    return JSON.parse(result.stdout) as StatusJson;
  };

  const up = await lab(['up', '--detach', '--dir', dir, '--sds', '3', '--device-size', '1GiB', '--volume', 'vol1:2GiB', '--volume', 'vol2:1GiB', '--nbd-port', String(nbdPort)]);
  t.equal(up.code, 0, `lab up --detach${up.code === 0 ? '' : `: ${up.stderr.trim()}`}`);
  if (up.code !== 0) return;
  if (sdcBuilt) {
    t.match(up.stdout, `nbd://127.0.0.1:${nbdPort}/vol1`, 'prints the NBD URI of vol1');
    t.match(up.stdout, `nbd://127.0.0.1:${nbdPort}/vol2`, 'and of vol2');
    t.match(up.stdout, `nbd-client 127.0.0.1 ${nbdPort} /dev/nbd0 -N vol1`, 'and how to attach them');
  }
  const passwordMode = fs.statSync(path.join(dir, 'admin.password')).mode & 0o777;
  t.equal(passwordMode, 0o600, 'the generated admin password is private');

  // The JSON contract.
  const first = await status();
  t.match(first.lab, { dir, clusterId: /^[0-9a-f]{16}$/, apiUrl: /^https:\/\/127\.0\.0\.1:\d+$/, mdmReachable: true, mdmError: null });
  t.same(
    first.processes.map((entry) => [entry.role, entry.name]),
    [['mdm', 'mdm'], ['sds', 'sds1'], ['sds', 'sds2'], ['sds', 'sds3'], ...(sdcBuilt ? [['sdc', 'sdc1']] : [])],
    'every process with its role and name',
  );
  for (const entry of first.processes) {
    t.match(entry, { pid: Number, address: /^127\.0\.0\.1:\d+$/, state: 'running', metricsUrl: /^http:\/\/127\.0\.0\.1:\d+\/metrics$/ }, `${entry.name} is running`);
    // SDSs also carry their checksum-at-rest counters and scrub progress (docs/integrity.md).
    // And their device with its IO mode (issue 22): the lab's sparse file, buffered by default.
    // And where Prometheus scrapes it (issue 19, docs/metrics.md).
    const fields = ['address', 'clusterState', 'metricsUrl', 'name', 'pid', 'role', 'state', ...(entry.role === 'sds' ? ['integrity', 'scrub', 'devicePath', 'io', 'ioReason'] : [])].sort();
    t.same(Object.keys(entry).sort(), fields, `${entry.name} has exactly the contract's fields`);
    t.equal(entry.clusterState, entry.role === 'mdm' ? null : entry.role === 'sds' ? 'Normal' : 'Connected', `${entry.name} as the MDM sees it`);
    if (entry.role === 'sds') {
      t.equal(entry.devicePath, path.join(dir, 'devices', `${entry.name}.img`), `${entry.name} runs on the lab's sparse file`);
      t.equal(entry.io, 'buffered', `${entry.name} does buffered IO on it (the lab's default on sparse files)`);
    }
  }
  if (sdcBuilt) t.equal(first.processes.find((entry) => entry.role === 'sdc')?.address, `127.0.0.1:${nbdPort}`, 'the SDC serves NBD on --nbd-port');
  t.same(
    first.volumes.map((volume) => ({ name: volume.name, sizeBytes: volume.sizeBytes })).sort((a, b) => a.name.localeCompare(b.name)),
    [{ name: 'vol1', sizeBytes: 2 * GiB }, { name: 'vol2', sizeBytes: 1 * GiB }],
    'both volumes with their sizes',
  );
  for (const volume of first.volumes) {
    t.equal(volume.nbdUri, sdcBuilt ? `nbd://127.0.0.1:${nbdPort}/${volume.name}` : null, `${volume.name}'s NBD URI`);
    t.same(volume.mappedSdcs, sdcBuilt ? ['sdc1'] : [], `${volume.name} is mapped to the lab's SDC`);
  }
  t.ok(first.capacity !== null && first.capacity['rawBytes'] !== undefined && first.capacity['rawBytes'] > 2.5 * GiB, 'capacity: three 1 GiB devices');
  t.match(first.health, { degradedBytes: 0, failedBytes: 0, rebuild: { state: 'idle', percent: 100 } }, 'health: nothing degraded, no rebuild');
  const text = await lab(['status', '--dir', dir]);
  t.equal(text.code, 0);
  t.match(text.stdout, /sds2\s+\d+\s+127\.0\.0\.1:\d+\s+running/, 'the text status lists the processes');

  await t.test('NBD exports', { skip: needsSdc }, async (t) => {
    const listed = await run('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${nbdPort}`]);
    t.equal(listed.code, 0, `nbdinfo --list${listed.code === 0 ? '' : `: ${listed.stderr}`}`);
    const exports = (JSON.parse(listed.stdout) as { exports: Array<{ 'export-name': string; 'export-size': number }> }).exports;
    t.same(exports.map((entry) => [entry['export-name'], entry['export-size']]).sort(), [['vol1', 2 * GiB], ['vol2', 1 * GiB]], 'nbdinfo --list sees both volumes');
  });

  // Management commands find the lab's API, certificate and password by themselves.
  const byDir = await runMeshblock(['volume', 'list', '--json', '--dir', dir]);
  t.equal(byDir.code, 0, `volume list --dir${byDir.code === 0 ? '' : `: ${byDir.stderr.trim()}`}`);
  if (byDir.code === 0) t.same((JSON.parse(byDir.stdout) as Array<{ name: string }>).map((volume) => volume.name).sort(), ['vol1', 'vol2']);
  const dirFirst = await runMeshblock(['--dir', dir, 'pool', 'list']);
  t.equal(dirFirst.code, 0, `meshblock --dir DIR pool list${dirFirst.code === 0 ? '' : `: ${dirFirst.stderr.trim()}`}`);
  t.match(dirFirst.stdout, /^sp1\s/m, 'lists the lab pool sp1');
  const inDir = await runMeshblockIn(dir, ['sds', 'list', '--json']);
  t.equal(inDir.code, 0, `sds list run in the lab directory${inDir.code === 0 ? '' : `: ${inDir.stderr.trim()}`}`);
  if (inDir.code === 0) t.same((JSON.parse(inDir.stdout) as Array<{ name: string }>).map((sds) => sds.name).sort(), ['sds1', 'sds2', 'sds3']);
  const noLab = await runMeshblock(['volume', 'list', '--dir', path.join(dir, 'nothing-here')]);
  t.equal(noLab.code, 2, '--dir naming no lab is a usage error');
  t.match(noLab.stderr, /--dir: no lab in/);

  // A block written now must be there after the restart.
  const block = randomBytes(1 * MiB);
  const blockFile = path.join(scratch, 'block.bin');
  fs.writeFileSync(blockFile, block);
  if (sdcBuilt) {
    const written = await run('nbdcopy', [blockFile, `nbd://127.0.0.1:${nbdPort}/vol1`]);
    t.equal(written.code, 0, `nbdcopy wrote 1 MiB to vol1${written.code === 0 ? '' : `: ${written.stderr}`}`);
  }

  // Bad flags: one line, exit 2; nothing starts.
  for (const [args, pattern] of [
    [['up', '--dir', dir, '--sds', '1'], /--sds: must be a whole number from 2 to 16, got 1/],
    [['up', '--dir', dir, '--sds', '2'], /--sds: this lab has 3 SDSs/],
    [['up', '--dir', dir, '--device-size', '2GiB'], /--device-size: this lab's devices are 1 GiB/],
    [['up', '--dir', dir, '--volume', 'vol3'], /--volume: expected NAME:SIZE/],
    [['up', '--dir', dir, '--volume', 'a:1GiB', '--volume', 'a:2GiB'], /--volume: volume 'a' is named twice/],
    [['up', '--dir', dir, '--nbd-port', '70000'], /--nbd-port: must be a whole number from 1 to 65535/],
    [['status', '--dir', dir, '--bogus'], /Unknown argument/],
  ] as Array<[string[], RegExp]>) {
    const result = await lab(args);
    t.equal(result.code, 2, `lab ${args.join(' ')} exits 2`);
    t.match(result.stderr, pattern, `lab ${args.join(' ')} says why`);
    t.equal(result.stderr.trim().split('\n').length, 1, `lab ${args.join(' ')} says it in one line`);
  }
  const missing = await lab(['status', '--dir', path.join(dir, 'nothing-here')]);
  t.equal(missing.code, 1, 'status of no lab fails at run time');
  t.match(missing.stderr, /no lab in/);

  // Down: every daemon stops, status still answers.
  const down = await lab(['down', '--dir', dir]);
  t.equal(down.code, 0, `lab down${down.code === 0 ? '' : `: ${down.stderr.trim()}`}`);
  for (const entry of first.processes) t.notOk(pidAlive(entry.pid as number), `${entry.name} (pid ${entry.pid}) is gone`);
  const stopped = await status();
  t.ok(stopped.processes.every((entry) => entry.state === 'stopped' && entry.pid === null), 'status: every process stopped');
  t.match(stopped, { lab: { mdmReachable: false, mdmError: /not running/ }, volumes: [], capacity: null, health: null }, 'status without an MDM');
  const downAgain = await lab(['down', '--dir', dir]);
  t.equal(downAgain.code, 0, 'lab down on a stopped lab is fine');

  // Resume: the same cluster, volumes and addresses, but for an SDS whose port another
  // program took while the lab was down: it moves, and the MDM takes its new address.
  // (Another test's lab may take a port of ours while this one is down, too: only sds2's
  // move is certain, and only while this test holds its port.)
  const squatted = first.processes.find((entry) => entry.name === 'sds2')?.address as string;
  const squatter = await squat(Number(squatted.split(':')[1]));
  const again = await lab(['up', '--detach', '--dir', dir]);
  squatter?.close();
  t.equal(again.code, 0, `lab up again${again.code === 0 ? '' : `: ${again.stderr.trim()}`}`);
  if (squatter !== null) t.match(again.stderr, new RegExp(`sds2: ${squatted} was taken meanwhile; moving to`), 'the SDS whose port was taken moved');
  const resumed = await status();
  t.equal(resumed.lab.clusterId, first.lab.clusterId, 'the same cluster');
  const moved = new Set([...again.stderr.matchAll(/^lab: (\S+?): .* was taken meanwhile; moving to/gm)].map((match) => match[1]));
  if (!moved.has('mdm')) t.equal(resumed.lab.apiUrl, first.lab.apiUrl, 'the same REST API address');
  const addresses = (processes: StatusJson['processes']): string[] => processes.filter((entry) => !moved.has(entry.name)).map((entry) => entry.address);
  t.same(addresses(resumed.processes), addresses(first.processes), 'the same addresses for those that did not move');
  if (squatter !== null) t.not(resumed.processes.find((entry) => entry.name === 'sds2')?.address, squatted, 'sds2 on another port');
  const sdsList = JSON.parse((await runMeshblock(['sds', 'list', '--json', '--dir', dir])).stdout) as Array<{ name: string; address?: string; state?: string }>;
  t.match(JSON.stringify(sdsList.find((sds) => sds.name === 'sds2')), resumed.processes.find((entry) => entry.name === 'sds2')?.address as string, 'the MDM knows the moved address');
  t.ok(resumed.processes.every((entry) => entry.state === 'running'), 'everything runs again');
  t.same(resumed.volumes.map((volume) => [volume.name, volume.sizeBytes, volume.nbdUri]).sort(), first.volumes.map((volume) => [volume.name, volume.sizeBytes, volume.nbdUri]).sort(), 'the same volumes');
  t.notMatch(again.stderr, /created/, 'nothing was created again');

  await t.test('data kept across down and up', { skip: needsSdc }, async (t) => {
    const readBack = path.join(scratch, 'read.bin');
    // Unwritten ranges are holes (BLOCK_STATUS): the copy stays small.
    const read = await run('nbdcopy', [`nbd://127.0.0.1:${nbdPort}/vol1`, readBack], { timeoutMs: 60_000 });
    t.equal(read.code, 0, `nbdcopy read vol1 back${read.code === 0 ? '' : `: ${read.stderr}`}`);
    const fd = fs.openSync(readBack, 'r');
    const head = Buffer.alloc(block.length);
    fs.readSync(fd, head, 0, head.length, 0);
    fs.closeSync(fd);
    t.ok(head.equals(block), 'the block written before lab down reads back');
  });

  // In the foreground, `up` takes the running lab over, shows the dashboard, and stops the
  // lab on Ctrl-C.
  const foreground = await startMeshblock(t, ['lab', 'up', '--dir', dir], { ready: /^Ctrl-C stops the lab$/m });
  foreground.process.kill('SIGINT');
  t.equal(await foreground.exited, 0, 'lab up in the foreground exits 0 on SIGINT');
  for (const entry of resumed.processes) t.notOk(pidAlive(entry.pid as number), `${entry.name} stopped on Ctrl-C`);
  t.ok((await status()).processes.every((entry) => entry.state === 'stopped'), 'status: every process stopped');

  const purge = await lab(['down', '--purge', '--dir', dir]);
  t.equal(purge.code, 0, `lab down --purge${purge.code === 0 ? '' : `: ${purge.stderr.trim()}`}`);
  t.notOk(fs.existsSync(dir), 'the lab directory is gone');
});

t.test('which lab the management commands use', async (t) => {
  const scratch = t.testdir();
  const dir = path.join(scratch, 'meshblock-lab');
  fs.mkdirSync(dir);
  const lab: LabFile = {
    formatVersion: 1,
    clusterId: '0123456789abcdef',
    apiUrl: 'https://127.0.0.1:18443',
    caCert: path.join(dir, 'mdm/api.crt'),
    passwordFile: path.join(dir, 'admin.password'),
    secretFile: path.join(dir, 'mdm/cluster.secret'),
    deviceSizeBytes: GiB,
    volumes: [],
    processes: [],
  };
  writeLabFile(dir, lab);
  const fromLab = { api: lab.apiUrl, caCert: lab.caCert, passwordFile: lab.passwordFile };
  t.same(labConnectionDefaults(dir), fromLab, 'the lab directory itself');
  t.same(labConnectionDefaults(scratch), fromLab, 'its parent, which holds ./meshblock-lab');
  t.equal(labConnectionDefaults(path.join(scratch, 'elsewhere')), null, 'no lab elsewhere');

  const none = { api: undefined, 'ca-cert': undefined, 'password-file': undefined, insecure: false, dir: undefined };
  const filled = { api: lab.apiUrl, 'ca-cert': lab.caCert, 'password-file': lab.passwordFile };
  t.match(applyLabConnectionDefaults({ ...none, dir }, {}, '/'), filled, '--dir fills every flag');
  t.match(applyLabConnectionDefaults({ ...none, dir }, { MESHBLOCK_API: 'https://10.0.0.1:8443', MESHBLOCK_PASSWORD: 'x' }, '/'), filled, '--dir wins over the environment');
  t.match(applyLabConnectionDefaults({ ...none, dir, 'password-file': '/p' }, {}, '/'), { ...filled, 'password-file': '/p' }, 'a flag given wins over --dir');
  t.match(applyLabConnectionDefaults({ ...none, dir, insecure: true }, {}, '/'), { ...filled, 'ca-cert': undefined }, '--insecure takes no certificate');
  t.match(applyLabConnectionDefaults(none, {}, dir), filled, 'run in the lab directory');
  t.match(applyLabConnectionDefaults(none, { MESHBLOCK_LAB_DIR: dir }, '/'), filled, '$MESHBLOCK_LAB_DIR');
  t.same(applyLabConnectionDefaults(none, { MESHBLOCK_API: 'https://10.0.0.1:8443' }, dir), none, 'MESHBLOCK_API names another MDM: no lab');
  t.same(applyLabConnectionDefaults({ ...none, api: 'https://10.0.0.1:8443' }, {}, dir), { ...none, api: 'https://10.0.0.1:8443' }, '--api names another MDM: no lab');
  t.same(applyLabConnectionDefaults(none, {}, path.join(scratch, 'elsewhere')), none, 'no lab: nothing changes');
  t.throws(() => applyLabConnectionDefaults({ ...none, dir: path.join(scratch, 'elsewhere') }, {}, '/'), { code: 'MB_ERR_INVALID_ARGUMENT', field: '--dir' }, '--dir naming no lab');
});
