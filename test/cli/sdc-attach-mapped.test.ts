// `meshblock sdc start --attach-mapped` on this machine, which has no nbd kernel module: what
// the SDC decides and does is real (a real MDM, three SDSs and the SDC process, mapping and
// unmapping through the real management CLI, a real NBD connection to the SDC's export for
// each attached volume, the by-id links on disk, in-use detection through this machine's
// /proc), and only the kernel is MOCKED: a fake /sys and /dev under a directory the SDC is
// pointed at (its hidden --attach-root), and an `nbd-client` on PATH that plays the kernel
// client: it writes the device's size and pid into the fake /sys and keeps a real NBD
// connection to the export open (qemu-io) until `nbd-client -d`. The real kernel path runs in
// the QEMU guest (test/integration/vm-attach.test.ts).
//
// Proves: a map attaches within the SDC's next pass and makes the three by-id names (ids as
// the REST API shows them); the kernel client's own connection does not make the volume open
// (the MDM accepts the unmap); a device open on this host keeps it attached (the MDM refuses
// the unmap, or the SDC refuses the detach and retries) until closed; unmap detaches and
// removes the names; an SDC restart reattaches what is mapped.

import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { startCluster, until } from '../helpers/cluster.js';
import { run, runMeshblock, startMeshblock, type DaemonHandle } from '../helpers/processes.js';

const GiB = 1024 * 1024 * 1024;
t.setTimeout(10 * 60 * 1000);

const dir = t.testdir();
const root = path.join(dir, 'fake-kernel');
// A failed run's directory may still be there.
fs.rmSync(root, { recursive: true, force: true });
const devicesCount = 4;
for (let index = 0; index < devicesCount; index++) {
  fs.mkdirSync(path.join(root, 'sys/block', `nbd${index}`), { recursive: true });
  fs.writeFileSync(path.join(root, 'sys/block', `nbd${index}`, 'size'), '0\n');
  fs.mkdirSync(path.join(root, 'dev'), { recursive: true });
  fs.writeFileSync(path.join(root, 'dev', `nbd${index}`), '');
}
fs.mkdirSync(path.join(root, 'sys/module/nbd'), { recursive: true });

// The mocked kernel client. Records every call in ROOT/calls.log.
const binDir = path.join(dir, 'bin');
fs.mkdirSync(binDir);
fs.writeFileSync(
  path.join(binDir, 'nbd-client'),
  `#!/bin/sh
root='${root}'
echo "$*" >>"$root/calls.log"
if [ "$1" = -d ]; then
  sys="$root/sys/block/$(basename "$2")"
  [ -f "$sys/pid" ] && kill -- "-$(cat "$sys/pid")" 2>/dev/null
  rm -f "$sys/pid"
  echo 0 >"$sys/size"
  exit 0
fi
host=$1 port=$2 device=$3
shift 3
[ "$1" = -N ] || { echo "fake nbd-client: expected -N NAME, got $*" >&2; exit 1; }
url="nbd://$host:$port/$2"
size=$(nbdinfo --size "$url") || { echo "fake nbd-client: cannot reach $url" >&2; exit 1; }
sys="$root/sys/block/$(basename "$device")"
# A real connection to the export, held until nbd-client -d kills its process group.
setsid sh -c 'echo $$ >"$0"; sleep 100000 | exec qemu-io -f raw "$1" >/dev/null 2>&1' "$sys/pid" "$url" </dev/null >/dev/null 2>&1 &
while [ ! -s "$sys/pid" ]; do sleep 0.1; done
echo $((size / 512)) >"$sys/size"
`,
  { mode: 0o755 },
);
process.env['PATH'] = `${binDir}:${process.env['PATH'] ?? ''}`;
// Whatever the fake kernel still holds at the end (a failed test) goes too.
t.teardown(() => {
  for (let index = 0; index < devicesCount; index++) {
    try {
      process.kill(-Number(fs.readFileSync(path.join(root, 'sys/block', `nbd${index}`, 'pid'), 'utf8')), 'SIGKILL');
    } catch {
      // Not attached.
    }
  }
});

const cluster = await startCluster(t, dir, { sdsCount: 3, deviceBytes: 4 * GiB, volumes: [] });
const must = async (args: string[]): Promise<string> => {
  const result = await cluster.meshblock(args);
  if (result.code !== 0) throw new Error(`meshblock ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
};

async function startAttachingSdc(listen = '127.0.0.1:0'): Promise<DaemonHandle> {
  return startMeshblock(
    t,
    ['sdc', 'start', '--mdm', cluster.mdm.address, '--name', 'sdc2', '--listen', listen, '--data-dir', path.join(dir, 'sdc2-data'), '--cluster-id', cluster.mdm.clusterId, '--secret-file', cluster.mdm.secretFile, '--attach-mapped', '--attach-root', root],
    { ready: /^sdc \S+ \(\S+\) of cluster [0-9a-f]{16} serving NBD on (\S+)$/m },
  );
}

const byId = path.join(root, 'dev/disk/by-id');
const link = (name: string): string | null => {
  try {
    return fs.readlinkSync(path.join(byId, name));
  } catch {
    return null;
  }
};
const sizeOf = (index: number): number => Number(fs.readFileSync(path.join(root, 'sys/block', `nbd${index}`, 'size'), 'utf8'));

let sdc = await startAttachingSdc();
// The SDC's log, when something failed.
t.teardown(() => {
  if (!t.passing()) t.comment(`sdc2 log, the attacher's first lines and the tail:\n${sdc.stderr().split('\n').filter((line) => line.includes('attach-mapped')).slice(0, 5).join('\n')}\n...\n${sdc.stderr().slice(-3000)}`);
});
await must(['volume', 'add', '--pool', 'sp1', '--name', 'vol1', '--size', String(GiB)]);
const volumes = JSON.parse(await must(['volume', 'list', '--json'])) as Array<{ id: string; name: string }>;
const volumeId = volumes.find((volume) => volume.name === 'vol1')?.id ?? '';
const systemId = cluster.mdm.clusterId;
const names = [`emc-vol-${systemId}-${volumeId}`, `scsi-emc-vol-${systemId}-${volumeId}`, 'meshblock-vol1'];

await t.test('a map attaches the volume and makes its by-id names', async (t) => {
  await must(['volume', 'map', '--volume', 'vol1', '--sdc', 'sdc2']);
  await until('the by-id names', async () => (names.every((name) => link(name) !== null) ? true : undefined), 60_000);
  for (const name of names) t.equal(link(name), '../../nbd0', `${name} -> ../../nbd0`);
  t.equal(sizeOf(0) * 512, GiB, 'the (fake) kernel device has the volume size, from the SDC export');
  const calls = fs.readFileSync(path.join(root, 'calls.log'), 'utf8').trim().split('\n');
  t.match(calls[0], new RegExp(`^127\\.0\\.0\\.1 \\d+ ${root}/dev/nbd0 -N vol1 -b 4096 -t 30$`), "meshblock attach's nbd-client line, to the SDC's own export");
  // os-brick's ScaleIO connector: a name in /dev/disk/by-id starting emc-vol, ending with the volume id.
  t.ok(fs.readdirSync(byId).some((name) => name.startsWith('emc-vol') && name.endsWith(volumeId)), "os-brick's glob finds it");
});

await t.test("drv-cfg answers as ScaleIO's drv_cfg, and install-drv-cfg writes a drv_cfg that runs it", async (t) => {
  const dataDir = path.join(dir, 'sdc2-data');
  const guid = (JSON.parse(fs.readFileSync(path.join(dataDir, 'sdc.json'), 'utf8')) as { guid: string }).guid;
  const sdcs = JSON.parse(await must(['sdc', 'list', '--json'])) as Array<{ id: string; name: string }>;
  const sdcId = sdcs.find((entry) => entry.name === 'sdc2')?.id ?? '';
  const drvCfg = path.join(dir, 'opt/emc/scaleio/sdc/bin/drv_cfg');
  const installed = await runMeshblock(['sdc', 'install-drv-cfg', '--path', drvCfg, '--data-dir', dataDir]);
  t.equal(installed.code, 0, `install-drv-cfg ${installed.stderr}`);
  const query = async (flag: string): Promise<string> => (await run(drvCfg, [flag])).stdout;
  t.equal(await query('--query_guid'), `${guid.toUpperCase()}\n`, '--query_guid: the GUID, upper case');
  const host = cluster.mdm.address.replace(/:\d+$/, '');
  t.equal(await query('--query_mdms'), `Retrieved 1 mdm(s)\nMDM-ID ${systemId} SDC ID ${sdcId} INSTALLATION ID ${systemId} IPs [0]-${host}\n`, '--query_mdms: system id, SDC id (as the REST API has them), MDM IPs');
  t.equal(await query('--query_vols'), `Retrieved 1 volume(s)\nVOL-ID ${volumeId} MDM-ID ${systemId}\n`, '--query_vols: the mapped volume');
  const rescan = await run(drvCfg, ['--rescan']);
  t.equal(rescan.code, 0, '--rescan: the SDC runs');
  const bad = await run(drvCfg, ['--add_mdm']);
  t.not(bad.code, 0, 'an option it does not answer is refused');
  const none = await runMeshblock(['drv-cfg', '--query_guid', '--data-dir', path.join(dir, 'nowhere')]);
  t.match(none.stderr, /no SDC state/, 'no SDC here: said so');
});

await t.test('open on this host: stays attached until closed, then the unmap detaches', async (t) => {
  const fd = fs.openSync(path.join(root, 'dev/nbd0'), 'r');
  // Two passes of the attacher and a heartbeat: the MDM has heard that it is open.
  await new Promise((resolve) => setTimeout(resolve, 8000));
  const refused = await cluster.meshblock(['volume', 'unmap', '--volume', 'vol1', '--sdc', 'sdc2']);
  if (refused.code !== 0) {
    t.match(refused.stderr, /is open on SDC 'sdc2'/, 'the MDM refused the unmap: the device is open here');
  } else {
    // The heartbeat was late (a loaded machine): the SDC itself must refuse to detach.
    t.comment('the MDM accepted the unmap before it heard the device is open; the SDC must hold the device');
    await until('the SDC to refuse the detach', async () => (sdc.stderr().includes('its device is in use here; not detached') ? true : undefined), 30_000);
    t.equal(link(names[0] as string), '../../nbd0', 'still attached while open');
  }
  fs.closeSync(fd);
  if (refused.code !== 0) {
    await until('the MDM to accept the unmap', async () => ((await cluster.meshblock(['volume', 'unmap', '--volume', 'vol1', '--sdc', 'sdc2'])).code === 0 ? true : undefined), 30_000);
  }
  await until('the detach', async () => (sizeOf(0) === 0 && names.every((name) => link(name) === null) ? true : undefined), 60_000);
  t.pass('detached: device disconnected, every by-id name removed');
  t.notOk(fs.existsSync(path.join(root, 'run/meshblock/attachments/nbd0.json')), 'the attachment record is gone');
});

await t.test('the kernel client alone does not make the volume open; a restart reattaches what is mapped', async (t) => {
  await must(['volume', 'map', '--volume', 'vol1', '--sdc', 'sdc2']);
  await until('attached again', async () => (link(names[0] as string) !== null ? true : undefined), 60_000);
  // Kill -9: the (fake) kernel device keeps its dead connection, as a real one would.
  await sdc.kill();
  t.ok(sizeOf(0) > 0, 'the device is still configured after the SDC died');
  // On its old address, as a restarted SDC is (its default port): the records name it.
  sdc = await startAttachingSdc(sdc.ready[1]);
  await until('reattached by the new SDC', async () => (sdc.stderr().includes('mapped volume attached') ? true : undefined), 60_000);
  const calls = fs.readFileSync(path.join(root, 'calls.log'), 'utf8').trim().split('\n');
  t.match(calls.slice(-2), [`-d ${root}/dev/nbd0`, /-N vol1 /], 'the dead device was disconnected, then attached afresh');
  t.equal(link(names[2] as string), '../../nbd0', 'the names point at it');
  // No process has it open: the MDM must accept the unmap although the kernel client is connected.
  // A few heartbeats of the new SDC.
  await new Promise((resolve) => setTimeout(resolve, 3000));
  const unmap = await cluster.meshblock(['volume', 'unmap', '--volume', 'vol1', '--sdc', 'sdc2']);
  t.equal(unmap.code, 0, `the unmap is accepted while only the kernel client is connected ${unmap.stderr}`);
  await until('the detach', async () => (sizeOf(0) === 0 && names.every((name) => link(name) === null) ? true : undefined), 60_000);
  t.pass('detached');
});
