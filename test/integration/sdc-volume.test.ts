// Proves the whole data path with the real clients: an MDM, three SDSs and an SDC (real
// processes, configured with the management CLI) serve two mirrored volumes over NBD, and
// nbdinfo, nbdcopy, qemu-img, qemu-io and fio (crc32c verify, random 4k at depth 32 and
// sequential 1M) read and write them, both volumes at once. Asked from the SDSs
// themselves: every written chunk is held by exactly two different SDSs, and a volume's
// chunks spread over all three. Thin allocation grows with writes and shrinks with TRIM,
// as the dashboard shows; BLOCK_STATUS reports the holes; an unmapped volume disappears.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { SdsOp, SdsStatus, encodeAllocation } from '../../src/wire/sds-ops.js';
import { startCluster, until, type Cluster } from '../helpers/cluster.js';
import { run } from '../helpers/processes.js';
import { RawNbd } from '../helpers/raw-nbd.js';
import { MiB, connectWire } from '../helpers/sds.js';

const GiB = 1024 * MiB;

interface VolumeInfo {
  name: string;
  id: string;
  vtreeId: string;
  storagePoolId: string;
}

async function volumeInfo(cluster: Cluster, name: string): Promise<VolumeInfo> {
  const list = JSON.parse((await cluster.meshblock(['volume', 'list', '--json'])).stdout) as VolumeInfo[];
  const found = list.find((volume) => volume.name === name);
  if (found === undefined) throw new Error(`no volume ${name}`);
  return found;
}

/** For each chunk of the first `chunkCount`, the SDSs that hold it. */
async function holders(cluster: Cluster, volume: VolumeInfo, chunkCount: number): Promise<string[][]> {
  const result: string[][] = Array.from({ length: chunkCount }, () => []);
  const secret = fs.readFileSync(cluster.mdm.secretFile, 'utf8').trim();
  for (const sds of cluster.sds) {
    const peer = await connectWire({ teardown: () => undefined }, sds.address, { clusterId: cluster.mdm.clusterId, secret });
    const response = await peer.request(SdsOp.Allocation, encodeAllocation({ poolId: volume.storagePoolId, vtreeId: volume.vtreeId, generation: 0, chunkIndexFirst: 0, chunkCount }));
    peer.destroy();
    if (response.status !== SdsStatus.Ok) throw new Error(`allocation from ${sds.name} failed`);
    for (let chunk = 0; chunk < chunkCount; chunk++) if (response.payload[chunk] === 1) result[chunk]?.push(sds.name);
  }
  return result;
}

async function inUseKb(cluster: Cluster): Promise<number> {
  const dashboard = JSON.parse((await cluster.meshblock(['dashboard', '--json'])).stdout) as unknown;
  const match = /"capacityInUseInKb":(\d+)/.exec(JSON.stringify(dashboard));
  return Number(match?.[1] ?? -1);
}

t.test('two mirrored volumes through the SDC, with the real clients', async (t) => {
  const dir = t.testdir();
  const cluster = await startCluster(t, dir, { sdsCount: 3, deviceBytes: 4 * GiB, volumes: [{ name: 'vol1', sizeBytes: 2 * GiB }, { name: 'vol2', sizeBytes: GiB }] });
  const vol1 = cluster.uri('vol1');
  const vol2 = cluster.uri('vol2');

  const info = JSON.parse((await run('nbdinfo', ['--json', vol1])).stdout) as { exports: Array<{ 'export-size': number; can_multi_conn: boolean; can_trim: boolean }> };
  t.equal(info.exports[0]?.['export-size'], 2 * GiB, 'nbdinfo sees the volume size');
  t.equal(info.exports[0]?.can_multi_conn, true, 'multi-conn: a flush on one connection covers all');
  const listed = await run('nbdinfo', ['--list', `nbd://${cluster.sdc.nbdAddress}`]);
  t.match(listed.stdout, /export="vol1"/, 'NBD_OPT_LIST lists vol1');
  t.match(listed.stdout, /export="vol2"/, 'and vol2');
  const baseline = await inUseKb(cluster);

  // nbdcopy round trips on vol1, with fio on vol2 at the same time.
  const source = path.join(dir, 'source.bin');
  fs.writeFileSync(source, randomBytes(64 * MiB));
  const fioCommon = ['--ioengine=nbd', `--uri=${vol2}`, '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json', '--size=64M'];
  const fioJobs = (async () => {
    const outcomes: Array<{ label: string; code: number | null; written: number; read: number; stderr: string }> = [];
    for (const [label, args] of [
      ['random 4k depth 32', ['--name=rand4k', '--rw=randwrite', '--bs=4k', '--iodepth=32', '--offset=0']],
      ['sequential 1M depth 8', ['--name=seq1m', '--rw=write', '--bs=1M', '--iodepth=8', '--offset=128M']],
    ] as const) {
      const result = await run('fio', [...args, ...fioCommon], { timeoutMs: 300_000 });
      const report = result.code === 0 ? (JSON.parse(result.stdout.slice(result.stdout.indexOf('{'))) as { jobs: Array<{ read: { io_bytes: number }; write: { io_bytes: number } }> }) : null;
      outcomes.push({ label, code: result.code, written: report?.jobs[0]?.write.io_bytes ?? 0, read: report?.jobs[0]?.read.io_bytes ?? 0, stderr: result.stderr });
    }
    return outcomes;
  })();
  for (const connections of ['4', '1']) {
    const copyIn = await run('nbdcopy', ['-C', connections, source, vol1]);
    t.equal(copyIn.code, 0, `nbdcopy in with ${connections} connection(s) ${copyIn.stderr}`);
    const back = path.join(dir, `back-${connections}.bin`);
    const copyOut = await run('nbdcopy', ['-C', connections, vol1, back]);
    t.equal(copyOut.code, 0, `nbdcopy out ${copyOut.stderr}`);
    const head = Buffer.alloc(64 * MiB);
    const fd = fs.openSync(back, 'r');
    fs.readSync(fd, head, 0, head.length, 0);
    fs.closeSync(fd);
    t.ok(head.equals(fs.readFileSync(source)), `round trip with ${connections} connection(s) is identical`);
    t.equal(fs.statSync(back).size, 2 * GiB, 'the whole volume came back');
    fs.rmSync(back);
  }
  for (const outcome of await fioJobs) {
    t.equal(outcome.code, 0, `fio ${outcome.label} on vol2 meanwhile: exits 0 ${outcome.stderr}`);
    t.equal(outcome.written, 64 * MiB, `${outcome.label}: wrote 64 MiB`);
    t.equal(outcome.read, 64 * MiB, `${outcome.label}: read back and verified 64 MiB`);
  }

  // qemu-img compare, including a difference it must find.
  const same = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, vol1]);
  t.equal(same.code, 0, `qemu-img compare: identical ${same.stdout}${same.stderr}`);
  const poke = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 4k', vol1]);
  t.equal(poke.code, 0, poke.stderr);
  const differs = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, vol1]);
  t.equal(differs.code, 1, 'qemu-img compare finds the changed block');

  // Two copies on two SDSs, and spread over all of them.
  const vol1Info = await volumeInfo(cluster, 'vol1');
  const copies = await holders(cluster, vol1Info, 64);
  t.ok(copies.every((sdsNames) => sdsNames.length === 2 && sdsNames[0] !== sdsNames[1]), 'each of the 64 written chunks is on exactly two different SDSs');
  const perSds = new Map<string, number>();
  for (const sdsNames of copies) for (const name of sdsNames) perSds.set(name, (perSds.get(name) ?? 0) + 1);
  t.comment(`copies per SDS: ${[...perSds].map(([name, count]) => `${name} ${count}`).join(', ')}`);
  t.equal(perSds.size, 3, 'vol1\'s chunks spread over all three SDSs');
  const untouched = await holders(cluster, vol1Info, 2048);
  t.ok(untouched.slice(64).every((sdsNames) => sdsNames.length === 0), 'chunks never written take no space anywhere (thin)');

  // Thin allocation in the dashboard: grows with writes, shrinks with TRIM; BLOCK_STATUS shows holes.
  const grown = await until('in-use capacity to grow', async () => {
    const value = await inUseKb(cluster);
    return value >= baseline + 64 * 1024 ? value : undefined;
  });
  t.ok(grown >= baseline + 64 * 1024, `in use grew to ${grown} KiB after 64 MiB on vol1 (+ fio's on vol2)`);
  const trim = await run('qemu-io', ['-f', 'raw', '-c', 'discard 0 32M', '-c', 'flush', vol1]);
  t.equal(trim.code, 0, trim.stderr);
  const shrunk = await until('in-use capacity to shrink', async () => {
    const value = await inUseKb(cluster);
    return value <= grown - 32 * 1024 ? value : undefined;
  });
  t.ok(shrunk <= grown - 32 * 1024, `and shrank to ${shrunk} KiB after trimming 32 MiB`);
  const map = await run('nbdinfo', ['--map', vol1]);
  t.match(map.stdout, /^\s*0\s+33554432\s+3\s+hole,zero$/m, 'BLOCK_STATUS: the trimmed 32 MiB is a hole');
  t.match(map.stdout, /^\s*33554432\s+33554432\s+0\s+data$/m, 'the next 32 MiB is data');
  const zeros = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0 0 32M', vol1]);
  t.match(zeros.stdout, /read 33554432\/33554432 bytes/, 'the trimmed range reads as zeros');
  t.notMatch(zeros.stdout, /Pattern verification failed/);

  // A volume with an NBD client attached is not unmapped; once the client leaves, it is.
  const attached = await RawNbd.connect({ port: cluster.sdc.nbdPort });
  await attached.go('vol2');
  // The SDC reports open volumes in its heartbeat, every second: give it two.
  await new Promise((resolve) => setTimeout(resolve, 2500));
  await until('the SDC to report vol2 open', async () => {
    const tried = await cluster.meshblock(['volume', 'unmap', '--volume', 'vol2', '--sdc', 'sdc1']);
    if (tried.code === 0) throw new Error('vol2 was unmapped while a client had it open');
    return /is open on SDC 'sdc1'/.test(tried.stderr) ? tried : undefined;
  }).then((tried) => t.match(tried.stderr, /detach them first/, 'unmapping a volume a client has open is refused'));
  attached.socket.destroy();
  await attached.closed;
  const unmap = await until('the unmap to succeed once the client left', async () => {
    const tried = await cluster.meshblock(['volume', 'unmap', '--volume', 'vol2', '--sdc', 'sdc1']);
    return tried.code === 0 ? tried : undefined;
  });
  t.equal(unmap.code, 0, 'unmapped after the client detached');
  await until('vol2 to disappear from the SDC', async () => (!(await run('nbdinfo', ['--list', `nbd://${cluster.sdc.nbdAddress}`])).stdout.includes('vol2') ? true : undefined));
  const refused = await run('nbdinfo', [vol2]);
  t.not(refused.code, 0, 'a connection to the unmapped volume is refused');
});
