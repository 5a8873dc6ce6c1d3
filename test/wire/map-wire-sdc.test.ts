// Proves the SDC's side of binary maps (src/sdc/sdc.ts) against a stand-in MDM on a real
// wire listener (test/helpers/sds.ts listenWire), whose maps come from the real planner:
// - the SDC registers saying it takes binary maps; given a view without the map, it asks for
//   the map (GetMapBinary) before applying the view, and holds exactly the MDM's map;
// - a corrupt update is refused whole (Failed with a MapRefusal naming the map held), the map
//   held stays, and the SDC asks for the map again, which brings it to the MDM's map;
// - a view made with a map it does not hold makes it ask first; a view whose map the MDM
//   cannot give yet is refused and applied once that map arrives (never before);
// - against an older MDM (views with the map, as JSON) it takes the JSON maps and never asks
//   GetMapBinary.

import { pino } from 'pino';
import t from 'tap';
import { Sdc } from '../../src/sdc/sdc.js';
import { MapUpdates, encodeMapUpdate, mapDigest, parseMapHeld, type MapHeld } from '../../src/wire/map-codec.js';
import { MdmOp, SdcOp, parseMapRefusal, type SdcMaplessView, type SdcView } from '../../src/wire/mdm-ops.js';
import type { WirePeer } from '../../src/wire/peer.js';
import type { PlacementMap } from '../../src/wire/placement.js';
import { SdsStatus } from '../../src/wire/sds-ops.js';
import { until } from '../helpers/cluster.js';
import { MapHistory } from '../helpers/map-history.js';
import { listenWire, testClusterId, testSecret } from '../helpers/sds.js';

const log = pino({ level: 'silent' });
const seed = Number(process.env['MAP_WIRE_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
t.comment(`seed ${seed} (MAP_WIRE_SEED=${seed} replays it)`);

function heldOf(map: PlacementMap): MapHeld {
  return { epoch: map.epoch, digest: mapDigest(map) };
}

function mapless(map: PlacementMap): SdcMaplessView {
  return { sdcId: '00000000000000c1', name: 'sdc1', mapHeld: heldOf(map), volumes: [] };
}

t.test('an SDC that takes binary maps: asks before applying a view, refuses a corrupt update whole and asks again', async (t) => {
  const history = new MapHistory({ seed, sdsCount: 16, devicesPerSds: 2, pgCount: 1024 });
  const updates = new MapUpdates(8);
  const maps: PlacementMap[] = [];
  const publish = (): PlacementMap => {
    history.failSds();
    const map = history.map();
    maps.push(map);
    updates.publish(map);
    return map;
  };
  const first = history.map();
  updates.publish(first);
  const asked: Array<MapHeld | null> = [];
  let registration: { mapBinary?: unknown; mapHeld?: unknown } = {};
  let mdmPeer: WirePeer | null = null;
  const address = await listenWire(
    t,
    'mdm',
    (peer) => (mdmPeer = peer),
    (op, _epoch, payload) => {
      if (op === MdmOp.RegisterSdc) {
        registration = JSON.parse(payload.toString()) as typeof registration;
        return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify(mapless(first))) };
      }
      if (op === MdmOp.GetMapBinary) {
        const held = parseMapHeld(payload.length === 0 ? null : JSON.parse(payload.toString()), 'held');
        asked.push(held);
        return { status: SdsStatus.Ok, payload: encodeMapUpdate(updates.updateFor(held)) };
      }
      return { status: SdsStatus.Ok };
    },
  );
  const sdc = new Sdc({ clusterId: testClusterId, secret: Buffer.from(testSecret), guid: '0123abcd-0000', name: 'sdc1', mdmAddresses: [address], log });
  sdc.start();
  t.teardown(() => sdc.close());
  await sdc.ready;
  t.same(registration, { guid: '0123abcd-0000', name: 'sdc1', mapBinary: true, mapHeld: null }, 'it registered taking binary maps, holding none');
  t.same(asked, [null], 'given a view without the map, it asked for the map');
  t.same(sdc.map(), first, 'and holds the MDM map');
  const mdm = mdmPeer as unknown as WirePeer;

  // A corrupt delta: refused whole, then asked for again.
  const second = publish();
  const update = updates.updateFor(heldOf(first));
  t.equal(update.kind, 'deltas');
  const damaged = Buffer.from(encodeMapUpdate(update));
  damaged[damaged.length - 2] = (damaged[damaged.length - 2] as number) ^ 0x04;
  const refusedReply = await mdm.request(SdcOp.SetMap, damaged);
  t.equal(refusedReply.status, SdsStatus.Failed, 'a corrupt update is refused');
  t.same(parseMapRefusal(refusedReply.payload)?.held, heldOf(first), 'naming the map it holds');
  t.equal(parseMapRefusal(refusedReply.payload)?.code, 'MB_ERR_MAP_CORRUPT');
  await until('the SDC asking for the map again', async () => (asked.length === 2 && sdc.map().epoch === second.epoch ? true : undefined));
  t.same(asked[1], heldOf(first), 'it asked from the map it held (nothing of the corrupt one was applied)');
  t.same(sdc.map(), second, 'and now holds the MDM map');

  // A good delta, pushed: applied, and its answer says what the SDC holds.
  const third = publish();
  const reply = await mdm.request(SdcOp.SetMap, encodeMapUpdate(updates.updateFor(heldOf(second))));
  t.equal(reply.status, SdsStatus.Ok);
  t.same(JSON.parse(reply.payload.toString()), heldOf(third), 'the answer names the map now held');
  t.same(sdc.map(), third);

  // A view made with a map it lacks: it asks first.
  const fourth = publish();
  const viewsBefore = sdc.viewCount;
  const viewReply = await mdm.request(SdcOp.Update, Buffer.from(JSON.stringify(mapless(fourth))));
  t.equal(viewReply.status, SdsStatus.Ok, 'a view made with a newer map is applied');
  t.same(asked[asked.length - 1], heldOf(third), 'after asking for that map');
  t.same(sdc.map(), fourth);

  // A view whose map the MDM cannot give yet: refused, applied once the map arrives.
  history.failSds();
  const fifth = history.map();
  const early = await mdm.request(SdcOp.Update, Buffer.from(JSON.stringify(mapless(fifth))));
  t.equal(early.status, SdsStatus.Failed, 'a view newer than any map the SDC can get is refused');
  t.same(sdc.map(), fourth, 'the map held stays');
  const appliedBefore = sdc.viewCount;
  updates.publish(fifth);
  const late = await mdm.request(SdcOp.SetMap, encodeMapUpdate(updates.updateFor(heldOf(fourth))));
  t.equal(late.status, SdsStatus.Ok);
  await until('the waiting view applied', async () => (sdc.viewCount > appliedBefore ? true : undefined));
  t.same(sdc.map(), fifth, 'the view waited for its map');
  t.ok(sdc.viewCount > viewsBefore);
});

t.test('an SDC against an older MDM (views with the map, as JSON) takes JSON maps', async (t) => {
  const history = new MapHistory({ seed: seed + 1, sdsCount: 8, devicesPerSds: 1, pgCount: 256 });
  const first = history.map();
  let askedBinary = 0;
  let mdmPeer: WirePeer | null = null;
  const address = await listenWire(
    t,
    'mdm',
    (peer) => (mdmPeer = peer),
    (op) => {
      if (op === MdmOp.RegisterSdc) {
        const view: SdcView = { sdcId: '00000000000000c2', name: 'sdc2', map: first, volumes: [] };
        return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify(view)) };
      }
      if (op === MdmOp.GetMapBinary) askedBinary += 1;
      // An older MDM knows no such op.
      return op === MdmOp.GetMapBinary ? { status: SdsStatus.UnknownOp } : { status: SdsStatus.Ok };
    },
  );
  const sdc = new Sdc({ clusterId: testClusterId, secret: Buffer.from(testSecret), guid: '0123abcd-0001', name: 'sdc2', mdmAddresses: [address], log });
  sdc.start();
  t.teardown(() => sdc.close());
  await sdc.ready;
  t.same(sdc.map(), first, 'the map from the JSON view');
  history.failSds();
  const second = history.map();
  const view: SdcView = { sdcId: '00000000000000c2', name: 'sdc2', map: second, volumes: [] };
  const reply = await (mdmPeer as unknown as WirePeer).request(SdcOp.Update, Buffer.from(JSON.stringify(view)));
  t.equal(reply.status, SdsStatus.Ok);
  t.same(sdc.map(), second, 'a JSON update installs its map');
  t.equal(askedBinary, 0, 'it never asked an older MDM for a binary map');
});
