// Proves the control plane end to end on real processes: an MDM (`meshblock mdm start`) and
// three SDSs (`meshblock sds start --mdm`) on sparse files, set up, inspected and changed
// entirely with the `meshblock` management CLI over the MDM's HTTPS REST API:
// - the SDSs register (proving the cluster secret) and get the placement map the MDM
//   computes as devices join the pool; chunk IO routed by that map reaches real SDSs and
//   reads back; the formatted-device refusal travels from the SDS through the MDM to the CLI;
// - listings, --json, the dashboard's capacity, and wrong credentials;
// - the MDM restarts (SIGTERM) with everything, and the SDSs reconnect;
// - kill -9 during a burst of concurrent changes through the REST API: after a restart every
//   acknowledged change is there, and nothing else but changes that were in flight.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import type { PlacementMap } from '../../src/wire/placement.js';
import { MdmOp } from '../../src/wire/mdm-ops.js';
import { SdsOp, encodeListGroup } from '../../src/wire/sds-ops.js';
import { sparseFile } from '../helpers/files.js';
import { startMdm, cli, until, adminPassword as password } from '../helpers/cluster.js';
import { run, runMeshblock } from '../helpers/processes.js';
import { basic, call } from '../helpers/rest.js';
import { MiB, TestVolumeClient, connectWire, getStats, startSds, type SdsHandle } from '../helpers/sds.js';

const GiB = 1024 * MiB;

t.test('an MDM and three SDSs, set up and changed from the CLI', async (t) => {
  const dir = t.testdir();
  let mdm = await startMdm(t, dir);
  let meshblock = cli(mdm, dir);
  const sds: SdsHandle[] = [];
  for (const name of ['sds1', 'sds2', 'sds3']) {
    const device = sparseFile(dir, `${name}.img`, 2 * GiB);
    sds.push(await startSds(t, { dir, name, devices: [device], clusterId: mdm.clusterId, secretFile: mdm.secretFile, extraArgs: ['--mdm', mdm.address] }));
  }
  const ok = async (args: string[]): Promise<string> => {
    const result = await meshblock(args);
    t.equal(result.code, 0, `meshblock ${args.join(' ')}${result.code === 0 ? '' : `: ${result.stderr.trim()}`}`);
    return result.stdout;
  };

  await ok(['pd', 'add', '--name', 'pd1']);
  await ok(['pool', 'add', '--pd', 'pd1', '--name', 'sp1', '--volume-granularity', '1GiB']);
  const registered = await until('three registered SDSs', async () => {
    const list = JSON.parse((await meshblock(['sds', 'list', '--json'])).stdout) as Array<{ name: string; id: string }>;
    return list.length === 3 ? list : undefined;
  });
  t.same(registered.map((entry) => entry.name).sort(), ['sds1', 'sds2', 'sds3'], 'the SDSs registered themselves');
  for (const entry of sds) await ok(['sds', 'add', '--sds', entry.name, '--pd', 'pd1']);
  for (const entry of sds) await ok(['device', 'add', '--sds', entry.name, '--pool', 'sp1', '--path', path.join(dir, `${entry.name}.img`)]);

  // The formatted-device refusal, from the SDS through the MDM to the administrator.
  const formatted = sparseFile(dir, 'ext4.img', 256 * MiB);
  t.equal((await run('mkfs.ext4', ['-q', '-F', formatted])).code, 0);
  const refused = await meshblock(['device', 'add', '--sds', 'sds1', '--pool', 'sp1', '--path', formatted]);
  t.equal(refused.code, 1, 'adding a device that holds ext4 fails');
  t.match(refused.stderr, /an ext4 filesystem.*previous formatting must be removed first/, 'with what the SDS found');
  t.equal(refused.stderr.trim().split('\n').length, 1, 'on one line');
  await ok(['device', 'add', '--sds', 'sds1', '--pool', 'sp1', '--path', formatted, '--force']);
  const devices = JSON.parse(await ok(['device', 'list', '--json'])) as unknown[];
  t.equal(devices.length, 4, 'four devices in the pool');

  await ok(['volume', 'add', '--pool', 'sp1', '--name', 'vol1', '--size', '4GiB']);
  await ok(['volume', 'add', '--pool', 'sp1', '--name', 'thick1', '--size', '1GiB', '--thick']);
  const tooBig = await meshblock(['volume', 'add', '--pool', 'sp1', '--name', 'huge', '--size', '100GiB', '--thick']);
  t.equal(tooBig.code, 1, 'a thick volume past the pool fails');
  t.match(tooBig.stderr, /does not fit/);
  await ok(['volume', 'resize', '--volume', 'vol1', '--size', '5GiB']);
  await ok(['volume', 'rename', '--volume', 'thick1', '--new-name', 'thick-a']);
  const volumes = JSON.parse(await ok(['volume', 'list', '--json'])) as Array<{ name: string; sizeInKb: number; vtreeId: string; id: string }>;
  t.same(volumes.map((volume) => volume.name).sort(), ['thick-a', 'vol1']);
  const vol1 = volumes.find((volume) => volume.name === 'vol1');
  t.equal(vol1?.sizeInKb, 5 * 1024 * 1024, 'resized to 5 GiB');

  // Every SDS has the MDM's map; IO routed by it reaches the SDSs and reads back.
  const wire = await connectWire(t, mdm.address, { clusterId: mdm.clusterId, secret: fs.readFileSync(mdm.secretFile, 'utf8').trim() });
  const map = JSON.parse((await wire.request(MdmOp.GetMap, Buffer.alloc(0))).payload.toString()) as PlacementMap;
  const [poolId, pool] = Object.entries(map.pools)[0] ?? [];
  t.ok(poolId !== undefined && pool !== undefined && pool.groups.length >= 4096, 'the map has the pool with its groups');
  t.same(new Set(pool?.groups.flatMap((group) => [group.primary, group.secondary])), new Set(sds.map((entry) => entry.sdsId)), 'every SDS holds copies');
  const peers = new Map<string, Awaited<ReturnType<typeof connectWire>>>();
  for (const entry of sds) {
    const peer = await connectWire(t, entry.address, { clusterId: mdm.clusterId, secret: fs.readFileSync(mdm.secretFile, 'utf8').trim() });
    await until(`map epoch ${map.epoch} on ${entry.name}`, async () => ((await getStats(peer)).epoch === map.epoch ? true : undefined));
    peers.set(entry.sdsId, peer);
  }
  t.pass('every SDS runs at the MDM\'s epoch');
  const volume = new TestVolumeClient(map, peers, vol1?.vtreeId as string, poolId as string);
  const data = randomBytes(8 * MiB);
  await volume.write(3 * MiB + 4096, data);
  await volume.flush();
  t.ok((await volume.read(3 * MiB + 4096, data.length)).equals(data), 'IO placed by the MDM\'s map reads back');

  // A fourth SDS joins: groups re-placed onto it are filled from their primaries.
  const sds4 = await startSds(t, { dir, name: 'sds4', devices: [sparseFile(dir, 'sds4.img', 2 * GiB)], clusterId: mdm.clusterId, secretFile: mdm.secretFile, extraArgs: ['--mdm', mdm.address] });
  await until('sds4 to register', async () => ((await meshblock(['sds', 'list', '--json'])).stdout.includes('"sds4"') ? true : undefined));
  await ok(['sds', 'add', '--sds', 'sds4', '--pd', 'pd1']);
  await ok(['device', 'add', '--sds', 'sds4', '--pool', 'sp1', '--path', path.join(dir, 'sds4.img')]);
  const grown = JSON.parse((await wire.request(MdmOp.GetMap, Buffer.alloc(0))).payload.toString()) as PlacementMap;
  const movedGroups = (grown.pools[poolId as string]?.groups ?? []).map((group, pgIndex) => ({ group, pgIndex })).filter(({ group }) => group.secondary === sds4.sdsId);
  t.ok(movedGroups.length > 0, `${movedGroups.length} groups got their second copy on sds4`);
  const peer4 = await connectWire(t, sds4.address, { clusterId: mdm.clusterId, secret: fs.readFileSync(mdm.secretFile, 'utf8').trim() });
  const listed = async (peer: Awaited<ReturnType<typeof connectWire>>, pgIndex: number): Promise<string> =>
    (await peer.request(SdsOp.ListGroup, encodeListGroup({ poolId: poolId as string, pgIndex }))).payload.toString('hex');
  let copiedChunks = 0;
  for (const { group, pgIndex } of movedGroups) {
    const primary = peers.get(group.primary);
    if (primary === undefined) continue;
    const expected = await listed(primary, pgIndex);
    await until(`group ${pgIndex} copied to sds4`, async () => ((await listed(peer4, pgIndex)) === expected ? true : undefined), 60_000).catch((err: Error) => {
      const failures = [mdm, ...sds, sds4].flatMap((daemon) => daemon.stderr().split('\n').filter((line) => /"level":(40|50|60)/.test(line)).slice(0, 3));
      throw new Error(`${err.message}; warnings and errors logged:\n${failures.join('\n')}`);
    });
    copiedChunks += expected.length / 32;
  }
  t.ok(copiedChunks > 0, `sds4 holds the same chunks as the primaries of its new groups (${copiedChunks} chunks copied)`);
  peers.set(sds4.sdsId, peer4);
  // Once the new copies are in sync, the MDM plans again to hand primaries to sds4 (a new
  // epoch): read with the map of the moment, again if it moved meanwhile.
  await until('the new copies to be recorded in sync', async () => ((JSON.parse((await meshblock(['dashboard', '--json'])).stdout) as { health: { rebuild: { state: string } } }).health.rebuild.state === 'idle' ? true : undefined), 60_000);
  let volumeNow: TestVolumeClient | null = null;
  const readBack = await until('the data to read back at the current epoch', async () => {
    const current = JSON.parse((await wire.request(MdmOp.GetMap, Buffer.alloc(0))).payload.toString()) as PlacementMap;
    volumeNow = new TestVolumeClient(current, peers, vol1?.vtreeId as string, poolId as string);
    return volumeNow.read(3 * MiB + 4096, data.length).catch(() => undefined);
  }, 60_000);
  t.ok(readBack.equals(data), 'the data reads back at the new epoch');

  const dashboard = JSON.parse(await until('in-use bytes in the dashboard', async () => {
    const text = (await meshblock(['dashboard', '--json'])).stdout;
    return JSON.stringify(JSON.parse(text)).includes('"capacityInUseInKb":0') ? undefined : text;
  })) as Record<string, unknown>;
  t.match(JSON.stringify(dashboard), /maxCapacityInKb/, 'the dashboard reports capacity');
  const text = await ok(['dashboard']);
  t.match(text, /spare/i, 'the dashboard text shows the spare');
  t.match(text, /protected/i, 'and protected capacity');

  const wrong = await runMeshblock(['pd', 'list', '--api', mdm.apiUrl, '--ca-cert', mdm.certPath], { env: { MESHBLOCK_PASSWORD: 'wrong password!' } });
  t.equal(wrong.code, 1, 'a wrong password fails');
  t.match(wrong.stderr, /401|password|credentials|unauthori/i);

  // Restart: everything is still there, and the SDSs come back.
  const before = await ok(['volume', 'list', '--json']);
  t.equal(await mdm.stop(), 0, 'the MDM stops on SIGTERM');
  mdm = await startMdm(t, dir, { listen: mdm.address, api: mdm.apiUrl.replace('https://', '') });
  meshblock = cli(mdm, dir);
  t.equal(await ok(['volume', 'list', '--json']), before, 'volumes are restored from the journal');
  await until('the SDSs to reconnect', async () => {
    const list = JSON.parse((await meshblock(['sds', 'list', '--json'])).stdout) as Array<Record<string, unknown>>;
    return list.every((entry) => JSON.stringify(entry).includes('"Connected"') || JSON.stringify(entry).includes('"connected"')) ? true : undefined;
  });
  t.pass('the SDSs reconnected after the restart');
  // With the map from before the MDM was killed: data IO never depended on it.
  t.ok((await (volumeNow as unknown as TestVolumeClient).read(3 * MiB + 4096, data.length)).equals(data), 'data IO never depended on the MDM');

  // kill -9 during a burst of changes through the REST API.
  const api = { url: mdm.apiUrl, ca: fs.readFileSync(mdm.certPath) };
  const login = await call(api, 'GET', '/api/login', { authorization: basic('admin', password) });
  const token = login.body as string;
  const poolList = (await call(api, 'GET', '/api/types/StoragePool/instances', { token })).body as Array<{ id: string }>;
  const acknowledged: string[] = [];
  const attempted: string[] = [];
  const burst = Array.from({ length: 60 }, async (_, index) => {
    await new Promise((resolve) => setTimeout(resolve, index * 5));
    const name = `burst${index}`;
    attempted.push(name);
    const reply = await call(api, 'POST', '/api/types/Volume/instances', { token, body: { storagePoolId: poolList[0]?.id, name, volumeSizeInKb: String(1024 * 1024), volumeType: 'ThinProvisioned' } }).catch(() => null);
    if (reply?.status === 200) acknowledged.push(name);
  });
  await new Promise((resolve) => setTimeout(resolve, 150));
  await mdm.kill();
  await Promise.all(burst);
  t.comment(`${acknowledged.length} of ${attempted.length} volume creations acknowledged before the kill`);
  mdm = await startMdm(t, dir, { listen: mdm.address, api: mdm.apiUrl.replace('https://', '') });
  meshblock = cli(mdm, dir);
  const after = (JSON.parse(await ok(['volume', 'list', '--json'])) as Array<{ name: string }>).map((entry) => entry.name);
  const missing = acknowledged.filter((name) => !after.includes(name));
  t.same(missing, [], 'every acknowledged change survived the kill');
  const unexpected = after.filter((name) => name.startsWith('burst') && !attempted.includes(name));
  t.same(unexpected, [], 'and nothing appeared that was never asked for');
  t.ok(after.includes('vol1') && after.includes('thick-a'), 'older state is intact');
  t.match(mdm.stderr(), /state restored from the journal/);
});
