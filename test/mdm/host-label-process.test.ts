// Proves host labels end to end through a real MDM process: wire clients playing SDSs register
// with `host` (as `sds start --host` / `--shards` will), take their devices when the real CLI
// adds them, and receive the placement maps the MDM pushes. Checked there:
//   - no group of the pool is ever mirrored between the two shards of hostA, in every map
//     pushed, also after another SDS re-registers onto hostA (the epoch moves, the map changes);
//   - `meshblock sds list` shows the HOST column, `--json` the REST hostLabel;
//   - `meshblock sds add` refuses a shard of a host into another fault set than its sibling
//     (exit 1, MB_ERR_HOST_FAULT_SET's message naming both SDSs, the host and both fault sets);
//   - a registration that changes a label into such a clash is taken and logged at error level.
// The SDSs are wire clients rather than `sds start` processes until `sds start --host` exists:
// what is proved is the MDM's side (service.ts passing the label on, the plan, the REST view).

import * as fs from 'node:fs';
import * as net from 'node:net';
import pino from 'pino';
import t from 'tap';
import type { RestSds } from '../../src/mdm/rest-objects.js';
import { MdmOp, type SdsRegistration } from '../../src/wire/mdm-ops.js';
import { WirePeer, type WireReply, type WireRequest } from '../../src/wire/peer.js';
import type { PlacementMap } from '../../src/wire/placement.js';
import { SdsOp, SdsStatus } from '../../src/wire/sds-ops.js';
import { cli, startMdm, until, type Mdm } from '../helpers/cluster.js';
import type { TeardownHost } from '../helpers/processes.js';

const GiB = 2 ** 30;

interface FakeSds {
  id: string;
  name: string;
  host: string | undefined;
  peer: WirePeer;
  maps: PlacementMap[];
  register(host: string | undefined): Promise<void>;
}

/** A wire client that registers as an SDS, takes every device it is given, and keeps the maps. */
async function fakeSds(t: TeardownHost, mdm: Mdm, index: number, name: string, host: string | undefined): Promise<FakeSds> {
  const id = (0x5d5000000000 + index).toString(16).padStart(16, '0');
  const maps: PlacementMap[] = [];
  let devices = 0;
  const onRequest = async (request: WireRequest): Promise<WireReply> => {
    if (request.op === SdsOp.SetMap) {
      maps.push(JSON.parse(request.payload.toString()) as PlacementMap);
      return { status: SdsStatus.Ok };
    }
    if (request.op === SdsOp.AddDevice) {
      const order = JSON.parse(request.payload.toString()) as { path: string };
      devices += 1;
      const deviceId = (0xde7000000000 + index * 16 + devices).toString(16).padStart(16, '0');
      return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify({ deviceId, path: order.path, capacityBytes: 64 * GiB })) };
    }
    return { status: SdsStatus.Ok };
  };
  const [address, port] = mdm.address.split(/:(?=\d+$)/) as [string, string];
  const socket = net.connect({ host: address, port: Number(port) });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const peer = await WirePeer.connect(socket, { clusterId: mdm.clusterId, secret: Buffer.from(fs.readFileSync(mdm.secretFile, 'utf8').trim()), role: 'sds', name, log: pino({ level: 'silent' }), onRequest });
  t.teardown(() => peer.destroy());
  const sds: FakeSds = {
    id,
    name,
    host,
    peer,
    maps,
    async register(label: string | undefined) {
      const registration: SdsRegistration = { sdsId: id, name, address: `127.0.0.1:${7000 + index}`, devices: [] };
      if (label !== undefined) registration.host = label;
      const reply = await peer.request(MdmOp.RegisterSds, Buffer.from(JSON.stringify(registration)));
      if (reply.status !== SdsStatus.Ok) throw new Error(`registration refused: ${reply.payload.toString()}`);
      sds.host = label;
    },
  };
  await sds.register(host);
  // Heartbeats, or the MDM declares it down.
  let epoch = 0;
  const beat = setInterval(() => {
    epoch = maps.at(-1)?.epoch ?? epoch;
    const stats = { sdsId: id, name, epoch, chunkBytes: 2 ** 20, devices: [], reservedBytes: 0, rebuilds: [] };
    peer.request(MdmOp.Heartbeat, Buffer.from(JSON.stringify(stats))).catch(() => undefined);
  }, 300);
  t.teardown(() => clearInterval(beat));
  return sds;
}

/** Groups of a map whose two copies are both on SDSs of `ids`. */
function mirroredWithin(map: PlacementMap, ids: readonly string[]): number {
  let count = 0;
  for (const pool of Object.values(map.pools)) {
    for (const group of pool.groups) if (group.secondary !== null && ids.includes(group.primary) && ids.includes(group.secondary)) count++;
  }
  return count;
}

t.test('a real MDM never mirrors a group between two SDSs of one host', async (t) => {
  const dir = t.testdir();
  const mdm = await startMdm(t, dir);
  const meshblock = cli(mdm, dir);
  const ok = async (args: string[]): Promise<string> => {
    const result = await meshblock(args);
    t.equal(result.code, 0, `${args.slice(0, 2).join(' ')} succeeds${result.stderr === '' ? '' : `: ${result.stderr}`}`);
    return result.stdout;
  };
  const sdss = [
    await fakeSds(t, mdm, 1, 'hostA.1', 'hostA'),
    await fakeSds(t, mdm, 2, 'hostA.2', 'hostA'),
    await fakeSds(t, mdm, 3, 'sdsB', 'hostB'),
    await fakeSds(t, mdm, 4, 'sdsC', undefined),
    await fakeSds(t, mdm, 5, 'sdsD', undefined),
  ];
  await ok(['pd', 'add', '--name', 'pd1']);
  await ok(['pool', 'add', '--pd', 'pd1', '--name', 'pool1', '--pg-count', '256', '--volume-granularity', '1GiB']);
  for (const sds of sdss) {
    await ok(['sds', 'add', '--sds', sds.name, '--pd', 'pd1']);
    await ok(['device', 'add', '--sds', sds.name, '--pool', 'pool1', '--path', `/dev/fake-${sds.name}`]);
  }
  await ok(['volume', 'add', '--pool', 'pool1', '--name', 'vol1', '--size', '4GiB']);
  const hostA = [sdss[0]?.id as string, sdss[1]?.id as string];
  const latest = async (): Promise<PlacementMap> => {
    const reply = await (sdss[0] as FakeSds).peer.request(MdmOp.GetMap, Buffer.alloc(0));
    return JSON.parse(reply.payload?.toString() ?? '{}') as PlacementMap;
  };
  const first = await latest();
  t.equal(first.pools[Object.keys(first.pools)[0] as string]?.groups.length, 256, 'the pool is placed');
  t.equal(mirroredWithin(first, hostA), 0, "no group on both of hostA's shards");

  const table = await ok(['sds', 'list']);
  t.match(table, /^NAME\s+ID\s+ADDRESS\s+HOST\s+STATE/m, 'a HOST column');
  t.match(table, /hostA\.2\s+[0-9a-f]{16}\s+127\.0\.0\.1:7002\s+hostA\s+Normal/);
  t.match(table, /sdsC\s+[0-9a-f]{16}\s+127\.0\.0\.1:7004\s+-\s+Normal/, 'no label: -');
  const listed = JSON.parse(await ok(['sds', 'list', '--json'])) as RestSds[];
  t.same(Object.fromEntries(listed.map((sds) => [sds.name, sds.hostLabel])), { 'hostA.1': 'hostA', 'hostA.2': 'hostA', sdsB: 'hostB', sdsC: null, sdsD: null });

  // sdsC restarts as a third shard of hostA: the pool is planned again around it.
  const epoch = first.epoch;
  await (sdss[3] as FakeSds).register('hostA');
  const after = await until('a new map', async () => {
    const map = await latest();
    return map.epoch > epoch ? map : undefined;
  });
  const hostANow = [...hostA, sdss[3]?.id as string];
  t.equal(mirroredWithin(after, hostANow), 0, "no group on two of hostA's three shards after the relabel");
  await until('the map pushed to the SDSs', async () => ((sdss[4] as FakeSds).maps.some((map) => map.epoch === after.epoch) ? true : undefined));
  const pushed = sdss.flatMap((sds) => sds.maps);
  t.ok(pushed.length > 0, `${pushed.length} maps pushed`);
  t.equal(pushed.filter((map) => map.epoch >= after.epoch && mirroredWithin(map, hostANow) > 0).length, 0, 'nor in any map pushed since');

  // Fault sets in a second protection domain: two shards of hostE must share one.
  await ok(['pd', 'add', '--name', 'pd2']);
  await ok(['fault-set', 'add', '--pd', 'pd2', '--name', 'rack1']);
  await ok(['fault-set', 'add', '--pd', 'pd2', '--name', 'rack2']);
  await fakeSds(t, mdm, 6, 'hostE.1', 'hostE');
  await fakeSds(t, mdm, 7, 'hostE.2', 'hostE');
  const sdsF = await fakeSds(t, mdm, 8, 'sdsF', 'hostF');
  await ok(['sds', 'add', '--sds', 'hostE.1', '--pd', 'pd2', '--fault-set', 'rack1']);
  const refusedAdd = await meshblock(['sds', 'add', '--sds', 'hostE.2', '--pd', 'pd2', '--fault-set', 'rack2']);
  t.equal(refusedAdd.code, 1, 'sds add into the other fault set fails');
  t.match(refusedAdd.stderr, /SDS 'hostE\.2' cannot go to fault set 'rack2': SDS 'hostE\.1' of the same host 'hostE' is in fault set 'rack1'/);
  await ok(['sds', 'add', '--sds', 'hostE.2', '--pd', 'pd2', '--fault-set', 'rack1']);
  await ok(['sds', 'add', '--sds', 'sdsF', '--pd', 'pd2', '--fault-set', 'rack2']);
  await sdsF.register('hostE');
  const logged = await until('the clash logged', async () => mdm.stderr().split('\n').find((line) => line.includes("SDS 'sdsF' is in fault set 'rack2'")));
  t.match(JSON.parse(logged) as object, { level: 50, host: 'hostE' }, 'at error level, with the host');
});
