// The SDC following a volume's head as snapshots move it (docs/snapshots.md, "On the SDC"):
// a real Sdc, in process, registered over real sockets with a stand-in MDM (it answers
// RegisterSdc with a view, GetMap with a map, and pushes SdcOp.Update when told) and one
// stand-in SDS that takes writes only at the epoch and head the test says.
// - The MDM has moved the head (a snapshot) but its update has not come: the SDS refuses
//   the old head, the SDC asks for the map, sees its head is gone from it, asks for its
//   volumes, and the write is sent again to the new head. The NBD client sees no error.
// - A map change that moves no head (a failover) does not make the SDC ask for its volumes.
// - The MDM's update moves the head of a volume a client has open: the export and its
//   backend stay (not replaced, so the client's connection goes on) and name the new head;
//   an update that replaces the export (a resize) still moves the head of the backend the
//   open connection holds.

import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { Sdc, type VolumeExport } from '../../src/sdc/sdc.js';
import type { VolumeBackend } from '../../src/sdc/volume-backend.js';
import { MdmOp, SdcOp, type SdcView, type SdcVolume } from '../../src/wire/mdm-ops.js';
import type { WirePeer } from '../../src/wire/peer.js';
import type { PlacementMap } from '../../src/wire/placement.js';
import { SdsOp, SdsStatus, decodeIo, encodeEpoch } from '../../src/wire/sds-ops.js';
import { MiB, listenWire, makeMap, testClusterId, testPoolId, testSecret } from '../helpers/sds.js';

const log = pino({ level: process.env['TEST_LOG_LEVEL'] ?? 'silent' });
const sdsId = '5d50000000000001';
const vtreeId = '00000000000000c1';
const volume: SdcVolume = { id: '00000000000000b1', name: 'vol1', vtreeId, generation: 0, poolId: testPoolId, sizeBytes: 4 * MiB, chunkBytes: MiB, accessMode: 'ReadWrite', exclusive: false, iopsLimit: 0, bandwidthLimitKbps: 0 };


interface World {
  sdc: Sdc;
  /** What the stand-in MDM answers now; a test changes it to play a snapshot. */
  mdm: { map: PlacementMap; volumes: SdcVolume[]; registrations: number; mapRequests: number; peer: WirePeer | null };
  /** Writes the SDS took or refused: [epoch, generation, accepted]. */
  writes: Array<[number, number, boolean]>;
  /** Which (epoch, generation) the SDS takes writes at. */
  accept: { epoch: number; generation: number };
  /** Sends the SDC its view now, as the MDM does when it changes. */
  push(): Promise<void>;
  backendOf(name: string): VolumeBackend;
}

async function world(t: Test): Promise<World> {
  const writes: Array<[number, number, boolean]> = [];
  const accept = { epoch: 1, generation: 0 };
  const sdsAddress = await listenWire(t, 'sds', () => undefined, (op, epoch, payload) => {
    if (op !== SdsOp.Write && op !== SdsOp.Read) return { status: SdsStatus.Ok };
    const { args } = decodeIo(payload);
    const taken = epoch === accept.epoch && args.generation === accept.generation;
    if (op === SdsOp.Write) writes.push([epoch, args.generation, taken]);
    if (!taken) return { status: SdsStatus.StaleEpoch, payload: encodeEpoch(accept.epoch) };
    return op === SdsOp.Read ? { status: SdsStatus.Ok, payload: Buffer.alloc(args.lengthBytes) } : { status: SdsStatus.Ok };
  });
  const mdm: World['mdm'] = { map: makeMap(1, [{ sdsId, address: sdsAddress }], { pgCount: 4, mirrored: false }), volumes: [volume], registrations: 0, mapRequests: 0, peer: null };
  const view = (): SdcView => ({ sdcId: '5dc0000000000001', name: 'sdc1', map: mdm.map, volumes: mdm.volumes });
  const mdmAddress = await listenWire(
    t,
    'mdm',
    (peer) => (mdm.peer = peer),
    (op) => {
      if (op === MdmOp.RegisterSdc) {
        mdm.registrations += 1;
        return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify(view())) };
      }
      if (op === MdmOp.GetMap) {
        mdm.mapRequests += 1;
        return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify(mdm.map)) };
      }
      return { status: SdsStatus.Ok };
    },
  );
  const sdc = new Sdc({ clusterId: testClusterId, secret: Buffer.from(testSecret), guid: '0123456789abcdef', name: 'sdc1', mdmAddresses: [mdmAddress], log });
  t.teardown(() => sdc.close());
  sdc.start();
  await sdc.ready;
  return {
    sdc,
    mdm,
    writes,
    accept,
    push: async () => {
      const response = await (mdm.peer as WirePeer).request(SdcOp.Update, Buffer.from(JSON.stringify(view())));
      if (response.status !== SdsStatus.Ok) throw new Error(`the SDC refused its view: ${response.payload.toString()}`);
    },
    backendOf: (name) => {
      const entry = sdc.find(name);
      if (entry === undefined) throw new Error(`no export ${name}`);
      return (entry as VolumeExport).volumeBackend;
    },
  };
}

/** The map after a snapshot of vol1 (head 0 → volume 1, snapshot 2), at `epoch`. */
function snapshotMap(base: PlacementMap, epoch: number): PlacementMap {
  return { ...base, epoch, vtrees: { [vtreeId]: { generations: { '0': null, '1': 0, '2': 0 }, heads: [{ generation: 1, snapshot: false }, { generation: 2, snapshot: true }] } } };
}

t.test('a write to a head that moved before the MDM said so asks for the view and goes to the new head', async (t) => {
  const w = await world(t);
  await w.backendOf('vol1').write(0, randomBytes(4096), { fua: false });
  t.same(w.writes, [[1, 0, true]], 'before: written at epoch 1 to head 0');
  t.equal(w.mdm.registrations, 1, 'registered once');

  // The snapshot: the MDM's model and the SDS moved on; no update is pushed to the SDC.
  w.mdm.map = snapshotMap(w.mdm.map, 3);
  w.mdm.volumes = [{ ...volume, generation: 1 }];
  w.accept.epoch = 3;
  w.accept.generation = 1;
  w.writes.length = 0;
  await t.resolves(w.backendOf('vol1').write(MiB, randomBytes(2 * MiB), { fua: false }), 'the write succeeds');
  t.same(
    w.writes.filter(([, , taken]) => taken).map(([epoch, generation]) => [epoch, generation]),
    [
      [3, 1],
      [3, 1],
    ],
    'both pieces were taken at epoch 3 by the new head 1',
  );
  t.ok(
    w.writes.filter(([, , taken]) => !taken).every(([epoch, generation]) => epoch === 1 && generation === 0),
    'what was refused was sent to the old head on the old map',
  );
  t.equal(w.mdm.registrations, 2, 'the SDC asked for its view once more (not once per piece)');
  t.equal(w.backendOf('vol1').volume.generation, 1, 'the export now names head 1');
});

t.test('a map change that moves no head does not make the SDC ask for its volumes', async (t) => {
  const w = await world(t);
  w.mdm.map = { ...w.mdm.map, epoch: 2 };
  w.accept.epoch = 2;
  await t.resolves(w.backendOf('vol1').write(0, randomBytes(4096), { fua: false }), 'the write succeeds');
  t.ok(w.mdm.mapRequests >= 1, 'after asking for the map');
  t.equal(w.mdm.registrations, 1, 'and nothing more');
});

t.test("the MDM's update moves the head of an open volume in place; a replaced export's open backend follows too", async (t) => {
  const w = await world(t);
  const entry = w.sdc.find('vol1');
  if (entry === undefined) throw new Error('vol1 is not exported');
  w.sdc.attached(entry);
  const opened = (entry as VolumeExport).volumeBackend;

  w.mdm.map = snapshotMap(w.mdm.map, 3);
  w.mdm.volumes = [{ ...volume, generation: 1 }];
  w.accept.epoch = 3;
  w.accept.generation = 1;
  await w.push();
  t.equal((w.sdc.find('vol1') as VolumeExport | undefined)?.volumeBackend, opened, 'the export keeps its backend (open connections go on)');
  t.equal(opened.volume.generation, 1, 'which names the new head');
  w.writes.length = 0;
  await opened.write(0, randomBytes(4096), { fua: false });
  t.same(w.writes, [[3, 1, true]], 'and writes to it at once, without a refusal');

  // A resize replaces the export; the connection still holds the old backend. A second
  // snapshot moves the head again (1 → 3, snapshot 4).
  w.mdm.map = { ...w.mdm.map, epoch: 4, vtrees: { [vtreeId]: { generations: { '0': null, '1': 0, '2': 0, '3': 1, '4': 1 }, heads: [{ generation: 3, snapshot: false }, { generation: 2, snapshot: true }, { generation: 4, snapshot: true }] } } };
  w.mdm.volumes = [{ ...volume, generation: 3, sizeBytes: 8 * MiB }];
  w.accept.epoch = 4;
  w.accept.generation = 3;
  await w.push();
  const replaced = w.backendOf('vol1');
  t.not(replaced, opened, 'the resized volume is a new export');
  t.equal(replaced.sizeBytes, 8 * MiB, 'of the new size');
  t.equal(opened.volume.generation, 3, "the open connection's backend follows the new head");
  w.writes.length = 0;
  await opened.write(0, randomBytes(4096), { fua: false });
  t.same(w.writes, [[4, 3, true]], 'and writes there at once');
  w.sdc.detached(entry);
});
