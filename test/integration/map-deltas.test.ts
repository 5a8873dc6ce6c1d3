// Proves that binary maps reach real peers as deltas (issue 23; docs/map-encoding.md), with
// every peer kind at once against one real MdmService (in this process, on a real socket):
// - a real SDS (SdsService over a sparse-file chunk store, registered through MdmLink) and a
//   real SDC (Sdc, registered through its MdmSession) take binary maps; 12 simulated SDSs
//   (src/sim/fleet.ts) take them too; 4 simulated SDSs and 1 simulated SDC are an older
//   build's (binaryMaps: false) and take JSON maps and views;
// - after the pool is planned, one simulated SDS is dropped and declared down: the real SDS
//   and the real SDC get that change as deltas (their debug logs say which kind each update
//   was), every binary update after the drop is smaller than the whole map, the JSON peers
//   get the JSON map of the same epoch, and both real peers end up holding exactly the MDM's
//   map (its digest; the SDC's map compared whole);
// - a peer that says it holds a map the MDM does not know (right epoch, wrong digest) gets
//   the whole map; one a few epochs behind gets the deltas;
// - a corrupt update, and a delta for another base, sent to the real SDS are refused whole
//   with a MapRefusal naming what it holds, and its map is unchanged;
// - the real SDS, reconnected, says which map it holds and is not sent the whole map again;
// - a peer that claims a map it does not hold refuses the deltas as not its base (a raw wire
//   peer standing in for an SDS that lost its state) and gets the whole map next, at once.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import t from 'tap';
import { MdmService } from '../../src/mdm/service.js';
import { Sdc } from '../../src/sdc/sdc.js';
import { ChunkStore } from '../../src/sds/chunk-store.js';
import { MdmLink } from '../../src/sds/mdm-link.js';
import { SdsService } from '../../src/sds/service.js';
import type { SdsState } from '../../src/sds/state.js';
import { Fleet, preloadDataDir } from '../../src/sim/fleet.js';
import { decodeMapUpdate, encodeDelta, encodeMap, mapDigest, updateResult, type MapHeld } from '../../src/wire/map-codec.js';
import { MdmOp, parseMapRefusal, type MapRefusal, type SdsRegistration } from '../../src/wire/mdm-ops.js';
import { WirePeer } from '../../src/wire/peer.js';
import type { PlacementMap } from '../../src/wire/placement.js';
import { SdsOp, SdsStatus } from '../../src/wire/sds-ops.js';
import { sparseFile } from '../helpers/files.js';
import { until } from '../helpers/cluster.js';
import { connectSocket, connectWire } from '../helpers/sds.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const binarySdsCount = 12;
const jsonSdsCount = 4;

/** A logger at debug whose records are kept, to read what a real peer did. */
function recordingLog(): { log: pino.Logger; records: Array<Record<string, unknown>> } {
  const records: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') records.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: 'debug' }, stream), records };
}

/** The kinds of the binary updates a real peer applied since record `from`, with their epochs. */
function updatesApplied(records: Array<Record<string, unknown>>, from: number): Array<{ update: string; epoch: number; bytes: number }> {
  return records.slice(from).filter((record) => record['msg'] === 'binary map update applied') as unknown as Array<{ update: string; epoch: number; bytes: number }>;
}

t.test('binary maps: deltas to real and simulated peers after an SDS failure, JSON to older ones, the whole map to a peer with an unknown map, corrupt updates refused whole', async (t) => {
  const dir = t.testdir();
  const quiet = pino({ level: 'error' }, pino.destination(2));
  const dataDir = path.join(dir, 'mdm');
  const cluster = await preloadDataDir(dataDir, { sdsCount: binarySdsCount + jsonSdsCount, devicesPerSds: 2, sdcCount: 1, deviceCapacityBytes: 64 * GiB, pgCount: 4096 }, quiet);
  const mdm = await MdmService.open({ dataDir, clusterId: cluster.clusterId, systemName: 'fleet', secret: cluster.secret, log: quiet, sdsDownAfterMs: 1500 });
  const bound = await mdm.listen('127.0.0.1', 0);
  t.teardown(() => mdm.close());
  const mdmAddress = `127.0.0.1:${bound.port}`;

  const binary = new Fleet({ mdmAddress, cluster: { ...cluster, sdss: cluster.sdss.slice(0, binarySdsCount) }, sdcCount: 0, log: quiet });
  const json = new Fleet({ mdmAddress, cluster: { ...cluster, sdss: cluster.sdss.slice(binarySdsCount) }, sdcCount: 1, log: quiet, binaryMaps: false });
  t.teardown(() => {
    binary.close();
    json.close();
  });
  await binary.connectSdss();
  await json.connectSdss();
  await json.connectSdcs();

  // A real SDS, registered but in no pool: it gets every map all the same.
  const sdsRecorded = recordingLog();
  const sdsId = randomBytes(8).toString('hex');
  const identity = { clusterId: cluster.clusterId, sdsId, name: 'real-sds' };
  const store = await ChunkStore.open([sparseFile(dir, 'real-sds.img', 64 * MiB)], { owner: { clusterId: cluster.clusterId, sdsId, sdsName: 'real-sds' }, chunkBytes: MiB, force: false, log: quiet });
  const sdsDataDir = path.join(dir, 'real-sds-data');
  fs.mkdirSync(sdsDataDir);
  const state: SdsState = { clusterId: cluster.clusterId, sdsId, name: 'real-sds', chunkBytes: MiB, map: null, reservations: {}, devicePaths: [] };
  const sds = new SdsService({ identity, secret: cluster.secret, store, state, dataDir: sdsDataDir, log: sdsRecorded.log, payloadChecksums: false });
  const sdsBound = await sds.listen('127.0.0.1', 0);
  const sdsAddress = `127.0.0.1:${sdsBound.port}`;
  const newLink = (): MdmLink => new MdmLink({ mdmAddresses: [mdmAddress], identity, secret: cluster.secret, service: sds, address: sdsAddress, log: sdsRecorded.log });
  let link = newLink();
  link.start();
  t.teardown(async () => {
    link.close();
    await sds.close();
    await store.close();
  });

  // A real SDC.
  const sdcRecorded = recordingLog();
  const sdc = new Sdc({ clusterId: cluster.clusterId, secret: cluster.secret, guid: 'abcdef00-0000-0000-0000-000000000001', name: 'real-sdc', mdmAddresses: [mdmAddress], log: sdcRecorded.log });
  sdc.start();
  t.teardown(() => sdc.close());
  await sdc.ready;

  const allHold = (epoch: number, binarySds: number): boolean => {
    const b = binary.holding(epoch);
    const j = json.holding(epoch);
    return b.sds === binarySds && j.sds === jsonSdsCount && j.sdc === 1 && sds.mapHeld()?.epoch === epoch && sdc.map().epoch === epoch;
  };

  // The first plan.
  await mdm.addDevice({ sdsId: cluster.lastDevice.sdsId, storagePoolId: cluster.storagePoolId, path: cluster.lastDevice.path, name: null, force: false });
  const planned = mdm.state.model.epoch;
  await until(`every peer holding the planned map (epoch ${planned})`, async () => (allHold(planned, binarySdsCount) ? true : undefined), 30_000);
  const plannedHeld: MapHeld = { epoch: planned, digest: mapDigest(mdm.state.placementMap()) };
  const fullBytes = encodeMap(mdm.state.placementMap()).length;
  const jsonBytes = Buffer.byteLength(JSON.stringify(mdm.state.placementMap()));
  t.ok(fullBytes * 10 < jsonBytes, `the whole map: ${fullBytes} bytes binary, ${jsonBytes} bytes JSON`);

  // One SDS dropped: declared down, the failover's map to everyone.
  const sdsRecordsBefore = sdsRecorded.records.length;
  const sdcRecordsBefore = sdcRecorded.records.length;
  const killedAtMs = binary.killSds(0);
  const failedOver = await until('every live peer holding a map after the drop', async () => {
    const epoch = mdm.state.model.epoch;
    return epoch > planned && mdm.state.model.sdss[cluster.sdss[0]?.sdsId ?? '']?.downSinceMs !== undefined && allHold(epoch, binarySdsCount - 1) ? epoch : undefined;
  }, 30_000);

  const sdsUpdates = updatesApplied(sdsRecorded.records, sdsRecordsBefore);
  const sdcUpdates = updatesApplied(sdcRecorded.records, sdcRecordsBefore);
  t.ok(sdsUpdates.length > 0 && sdsUpdates.every((entry) => entry.update === 'deltas' && entry.bytes < fullBytes), `the real SDS got the failover as deltas: ${JSON.stringify(sdsUpdates)}`);
  t.ok(sdcUpdates.length > 0 && sdcUpdates.every((entry) => entry.update === 'deltas' && entry.bytes < fullBytes), `the real SDC got the failover as deltas: ${JSON.stringify(sdcUpdates)}`);
  const binaryReceipts = binary.receiptsSince(killedAtMs);
  t.ok(binaryReceipts.length >= binarySdsCount - 1 && binaryReceipts.every((entry) => entry.receipt.bytes < fullBytes / 2), `every binary update to a simulated SDS after the drop was under half the map (${binaryReceipts.map((entry) => entry.receipt.bytes).join(', ')} bytes; the map ${fullBytes})`);
  const jsonReceipts = json.receiptsSince(killedAtMs).filter((entry) => entry.receipt.epoch === failedOver);
  t.ok(jsonReceipts.length === jsonSdsCount + 1 && jsonReceipts.every((entry) => entry.receipt.bytes >= jsonBytes / 2), `the older peers got the JSON map of epoch ${failedOver} (${jsonReceipts.map((entry) => entry.receipt.bytes).join(', ')} bytes)`);

  // The finished rebuilds (the simulated SDSs report them at once) may move the epoch again:
  // compared once every peer holds the MDM's epoch of the moment.
  const settled = await until('every live peer holding the MDM map', async () => {
    const map = mdm.state.placementMap();
    return allHold(map.epoch, binarySdsCount - 1) ? map : undefined;
  }, 30_000);
  const digest = mapDigest(settled);
  t.same(sds.mapHeld(), { epoch: settled.epoch, digest }, 'the real SDS holds exactly the MDM map');
  t.same(sdc.map(), settled, 'the real SDC holds exactly the MDM map');
  t.same(sdc.mapHeld(), { epoch: settled.epoch, digest });
  const mdmMap = settled;

  // What a peer gets for what it says it holds.
  const asker = await connectWire(t, mdmAddress, { role: 'sdc', clusterId: cluster.clusterId, secret: cluster.secret.toString() });
  const getMap = async (held: MapHeld | null): Promise<ReturnType<typeof decodeMapUpdate>> => {
    const response = await asker.request(MdmOp.GetMapBinary, held === null ? Buffer.alloc(0) : Buffer.from(JSON.stringify(held)));
    t.equal(response.status, SdsStatus.Ok);
    return decodeMapUpdate(response.payload);
  };
  const current = mdm.state.model.epoch === settled.epoch ? (await getMap({ epoch: settled.epoch, digest })).kind : 'the epoch moved';
  t.ok(current === 'current' || mdm.state.model.epoch !== settled.epoch, `a peer holding the map gets nothing (${current})`);
  t.equal((await getMap({ epoch: mdm.state.model.epoch, digest: (mapDigest(mdm.state.placementMap()) + 1) >>> 0 })).kind, 'full', 'a peer holding an unknown map of the current epoch gets the whole map');
  t.equal((await getMap({ epoch: planned, digest: 12345 })).kind, 'full', 'a peer holding an unknown map of an older epoch gets the whole map');
  t.equal((await getMap(null)).kind, 'full', 'a peer holding no map gets the whole map');

  // Refused whole: a corrupt update, and a delta for another base.
  const tester = await connectWire(t, sdsAddress, { clusterId: cluster.clusterId, secret: cluster.secret.toString() });
  const heldBefore = sds.mapHeld();
  const corrupt = Buffer.from(encodeMap(mdmMap));
  corrupt[corrupt.length - 3] = (corrupt[corrupt.length - 3] as number) ^ 0x10;
  const corruptReply = await tester.request(SdsOp.SetMapBinary, corrupt);
  t.equal(corruptReply.status, SdsStatus.Failed, 'a corrupt update is refused');
  t.same(parseMapRefusal(corruptReply.payload), { code: 'MB_ERR_MAP_CORRUPT', message: parseMapRefusal(corruptReply.payload)?.message, held: heldBefore }, 'with a refusal naming what it holds');
  const otherBase: PlacementMap = { ...structuredClone(mdmMap), sds: { ...mdmMap.sds, ffffffffffffffff: { address: '127.0.0.1:1' } } };
  const wrongBase = await tester.request(SdsOp.SetMapBinary, encodeDelta(otherBase, { ...mdmMap, epoch: mdmMap.epoch + 1 }));
  t.equal(parseMapRefusal(wrongBase.payload)?.code, 'MB_ERR_MAP_BASE', 'a delta for another map of the same epoch is refused as not its base');
  t.same(sds.mapHeld(), heldBefore, 'and nothing of either was applied');

  // Reconnected, the SDS says which map it holds: it is not sent the whole map again.
  const recordsBeforeReconnect = sdsRecorded.records.length;
  link.close();
  link = newLink();
  link.start();
  await until('the real SDS registered again', async () => (sdsRecorded.records.slice(recordsBeforeReconnect).some((record) => record['msg'] === 'registered with the MDM') ? true : undefined));
  await until('the real SDS holding the MDM epoch', async () => (sds.mapHeld()?.epoch === mdm.state.model.epoch ? true : undefined));
  await new Promise((resolve) => setTimeout(resolve, 500));
  const afterReconnect = updatesApplied(sdsRecorded.records, recordsBeforeReconnect);
  t.ok(afterReconnect.every((entry) => entry.update !== 'full'), `after reconnecting it got no whole map (${afterReconnect.map((entry) => entry.update).join(', ') || 'nothing'})`);

  // An SDS that says it holds the planned map but does not (its state lost): it refuses the
  // deltas as not its base, and the MDM sends it the whole map at once.
  const got: Array<{ kind: string; epoch: number }> = [];
  const socket = await connectSocket(t, mdmAddress);
  const liar = await WirePeer.connect(socket, {
    clusterId: cluster.clusterId,
    secret: cluster.secret,
    role: 'sds',
    name: 'liar',
    log: quiet,
    onRequest: async (request) => {
      if (request.op !== SdsOp.SetMapBinary) return { status: SdsStatus.Ok };
      const update = decodeMapUpdate(request.payload);
      if (update.kind !== 'full') {
        got.push({ kind: update.kind, epoch: 0 });
        const refusal: MapRefusal = { code: 'MB_ERR_MAP_BASE', message: 'not my base', held: null };
        return { status: SdsStatus.Failed, payload: Buffer.from(JSON.stringify(refusal)) };
      }
      const held = updateResult(null, update);
      got.push({ kind: update.kind, epoch: held.epoch });
      return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify(held)) };
    },
  });
  t.teardown(() => liar.destroy());
  const registration: SdsRegistration = { sdsId: randomBytes(8).toString('hex'), name: 'liar', address: '127.0.0.1:9', devices: [], mapBinary: true, mapHeld: plannedHeld };
  t.equal((await liar.request(MdmOp.RegisterSds, Buffer.from(JSON.stringify(registration)))).status, SdsStatus.Ok);
  await until('the whole map sent after the refusal', async () => (got.some((entry) => entry.kind === 'full') ? true : undefined));
  t.same(got.map((entry) => entry.kind), ['deltas', 'full'], 'deltas from the map it claimed, refused as not its base, then the whole map');
  t.equal(got[1]?.epoch, mdm.state.model.epoch, 'of the current epoch');
});
