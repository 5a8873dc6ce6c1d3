// Proves the wire side of binary maps (map-codec.ts, "what to send a peer" and "a MapUpdate on
// the wire"), on maps from the real planner (test/helpers/map-history.ts), seeded:
// - MapUpdates tracks peers by (epoch, digest): the same epoch with another digest gets the
//   whole map, a map published again unchanged changes nothing, a same-epoch change drops the
//   chain (every peer not holding it gets the whole map), maps never go back;
// - an update's frames tile its payload (encodeMapUpdate/decodeMapUpdate round-trip every
//   kind); a payload that is not whole frames, mixes kinds, or has too many frames is refused;
// - applyUpdateHeld gives the digest the MDM computes for the same map, and updateResult
//   (what the fleet simulator follows) agrees with it without decoding;
// - an update whose bytes are damaged anywhere is refused whole (every single-byte flip of a
//   delta chain, on a sample of offsets) and the map held is untouched;
// - registrations carry mapBinary and mapHeld, checked; an older build's carry neither.

import t from 'tap';
import { mapUpdateDeltasMax } from '../../src/common/limits.js';
import {
  MapUpdates,
  applyUpdateHeld,
  decodeMapUpdate,
  encodeMap,
  encodeMapUpdate,
  mapDigest,
  parseMapHeld,
  updateResult,
  type MapUpdate,
} from '../../src/wire/map-codec.js';
import { parseSdcRegistration, parseSdsRegistration } from '../../src/wire/mdm-ops.js';
import type { PlacementMap } from '../../src/wire/placement.js';
import { MapHistory } from '../helpers/map-history.js';

const seed = Number(process.env['MAP_WIRE_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
t.comment(`seed ${seed} (MAP_WIRE_SEED=${seed} replays it)`);

function codeOf(run: () => unknown): string | undefined {
  try {
    run();
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  }
}

function historyOf(steps: number): { updates: MapUpdates; maps: PlacementMap[] } {
  const updates = new MapUpdates(8);
  const history = new MapHistory({ seed, sdsCount: 32, devicesPerSds: 2, pgCount: 2048 });
  const maps: PlacementMap[] = [];
  for (let step = 0; step < steps; step++) {
    if (step % 2 === 1) history.failSds();
    const map = history.map();
    maps.push(map);
    updates.publish(map);
  }
  return { updates, maps };
}

t.test('peers are tracked by epoch and digest', async (t) => {
  const { updates, maps } = historyOf(5);
  const current = maps[maps.length - 1] as PlacementMap;
  const previous = maps[maps.length - 2] as PlacementMap;
  t.same(updates.held, { epoch: current.epoch, digest: mapDigest(current) }, 'held: the current map and its digest');
  t.equal(updates.updateFor({ epoch: current.epoch, digest: mapDigest(current) }).kind, 'current');
  t.equal(updates.updateFor({ epoch: current.epoch, digest: (mapDigest(current) + 1) >>> 0 }).kind, 'full', 'the current epoch with another digest: the whole map');
  t.equal(updates.updateFor({ epoch: previous.epoch, digest: mapDigest(previous) }).kind, 'deltas', 'the previous map: deltas');
  t.equal(updates.updateFor({ epoch: previous.epoch, digest: (mapDigest(previous) + 1) >>> 0 }).kind, 'full', 'the previous epoch with another digest: the whole map');
  t.equal(updates.publish(structuredClone(current)), false, 'the same map again: nothing published');
  t.equal(updates.updateFor({ epoch: previous.epoch, digest: mapDigest(previous) }).kind, 'deltas', 'and the chain is kept');

  // A change without the epoch moving: no delta reaches it, the chain is dropped.
  const sameEpoch: PlacementMap = { ...structuredClone(current), vtrees: { '00000000000000f1': { frozen: true, generations: { '0': null }, heads: [{ generation: 0, snapshot: false }] } } };
  t.equal(updates.publish(sameEpoch), true, 'a same-epoch change is published');
  t.equal(updates.updateFor({ epoch: current.epoch, digest: mapDigest(current) }).kind, 'full', 'a peer holding the map before it gets the whole map');
  t.equal(updates.updateFor({ epoch: previous.epoch, digest: mapDigest(previous) }).kind, 'full', 'so does one further behind');
  const full = updates.updateFor(null);
  t.same(applyUpdateHeld(null, full), { map: sameEpoch, digest: mapDigest(sameEpoch) });
  t.equal(codeOf(() => updates.publish(previous)), 'MB_ERR_MAP_BASE', 'a map of an older epoch is refused');
});

t.test('an update on the wire: its frames one after another', async (t) => {
  const { updates, maps } = historyOf(7);
  const current = maps[maps.length - 1] as PlacementMap;
  const digest = mapDigest(current);
  for (const back of [1, 2, 3]) {
    const held = maps[maps.length - 1 - back] as PlacementMap;
    const heldDigest = mapDigest(held);
    const update = updates.updateFor({ epoch: held.epoch, digest: heldDigest });
    t.equal(update.kind, 'deltas', `${back} behind: deltas`);
    const decoded = decodeMapUpdate(encodeMapUpdate(update));
    t.same(decoded, update, 'the payload gives the same frames back');
    const result = applyUpdateHeld({ map: held, digest: heldDigest }, decoded);
    t.same(result, { map: current, digest }, 'which bring the peer to the current map, with its digest');
    t.same(updateResult({ epoch: held.epoch, digest: heldDigest }, decoded), { epoch: current.epoch, digest }, 'updateResult agrees without decoding');
    t.equal(codeOf(() => updateResult({ epoch: held.epoch, digest: (heldDigest + 1) >>> 0 }, decoded)), 'MB_ERR_MAP_BASE', 'and refuses a chain from another map');
  }
  t.same(decodeMapUpdate(Buffer.alloc(0)), { kind: 'current' }, 'nothing: current');
  const full: MapUpdate = { kind: 'full', encoded: encodeMap(current) };
  t.same(decodeMapUpdate(encodeMapUpdate(full)), full, 'one full map');
  t.same(updateResult(null, full), { epoch: current.epoch, digest });

  const chain = updates.updateFor({ epoch: (maps[maps.length - 3] as PlacementMap).epoch, digest: mapDigest(maps[maps.length - 3] as PlacementMap) });
  const chainBytes = encodeMapUpdate(chain);
  t.equal(codeOf(() => decodeMapUpdate(chainBytes.subarray(0, chainBytes.length - 1))), 'MB_ERR_MAP_CORRUPT', 'a cut frame');
  t.equal(codeOf(() => decodeMapUpdate(Buffer.concat([chainBytes, Buffer.alloc(3)]))), 'MB_ERR_MAP_CORRUPT', 'bytes after the last frame');
  t.equal(codeOf(() => decodeMapUpdate(Buffer.concat([full.encoded, chainBytes]))), 'MB_ERR_MAP_CORRUPT', 'a full map and deltas mixed');
  t.equal(codeOf(() => decodeMapUpdate(Buffer.concat([full.encoded, full.encoded]))), 'MB_ERR_MAP_CORRUPT', 'two full maps');
  const delta = (chain.kind === 'deltas' ? chain.deltas[0] : undefined) as Buffer;
  t.equal(codeOf(() => decodeMapUpdate(Buffer.concat(Array.from({ length: mapUpdateDeltasMax + 1 }, () => delta)))), 'MB_ERR_MAP_CORRUPT', `more than ${mapUpdateDeltasMax} frames`);

  t.same(parseMapHeld({ epoch: 3, digest: 0xffffffff }, 'held'), { epoch: 3, digest: 0xffffffff });
  t.equal(parseMapHeld(undefined, 'held'), null);
  for (const bad of [{ epoch: -1, digest: 1 }, { epoch: 1, digest: 2 ** 32 }, { epoch: 1.5, digest: 1 }, { epoch: 1 }, 'x']) {
    t.equal(codeOf(() => parseMapHeld(bad, 'held')), 'MB_ERR_MAP_CORRUPT', `held ${JSON.stringify(bad)} refused`);
  }
});

t.test('a damaged update is refused whole, the map held untouched', async (t) => {
  const { updates, maps } = historyOf(5);
  const held = maps[maps.length - 3] as PlacementMap;
  const heldCopy = structuredClone(held);
  const heldDigest = mapDigest(held);
  const payload = encodeMapUpdate(updates.updateFor({ epoch: held.epoch, digest: heldDigest }));
  let refused = 0;
  const offsets = Array.from({ length: 64 }, (_, index) => Math.floor((index * payload.length) / 64));
  for (const offset of offsets) {
    const damaged = Buffer.from(payload);
    damaged[offset] = (damaged[offset] as number) ^ (1 << (offset % 8));
    const code = codeOf(() => applyUpdateHeld({ map: held, digest: heldDigest }, decodeMapUpdate(damaged)));
    if (code === 'MB_ERR_MAP_CORRUPT') refused += 1;
    else t.fail(`a flip at byte ${offset} of ${payload.length} gave ${String(code)}`);
  }
  t.equal(refused, offsets.length, `every one of ${offsets.length} single-bit flips refused as corrupt`);
  t.same(held, heldCopy, 'the map held is as it was');
});

t.test('registrations say whether the peer takes binary maps, and what it holds', async (t) => {
  const sds = { sdsId: '00000000000000a1', name: 'sds1', address: '127.0.0.1:7072', devices: [] };
  t.same(parseSdsRegistration(Buffer.from(JSON.stringify(sds))), sds, 'an older build: neither field');
  t.same(parseSdsRegistration(Buffer.from(JSON.stringify({ ...sds, mapBinary: true, mapHeld: { epoch: 4, digest: 99 } }))), { ...sds, mapBinary: true, mapHeld: { epoch: 4, digest: 99 } });
  t.same(parseSdsRegistration(Buffer.from(JSON.stringify({ ...sds, mapBinary: true, mapHeld: null }))), { ...sds, mapBinary: true, mapHeld: null }, 'holding no map');
  t.equal(codeOf(() => parseSdsRegistration(Buffer.from(JSON.stringify({ ...sds, mapBinary: 'yes' })))), 'MB_ERR_INVALID_ARGUMENT');
  t.equal(codeOf(() => parseSdsRegistration(Buffer.from(JSON.stringify({ ...sds, mapBinary: true, mapHeld: { epoch: 4 } })))), 'MB_ERR_INVALID_ARGUMENT');
  const sdc = { guid: '0123abcd-0000', name: null };
  t.same(parseSdcRegistration(Buffer.from(JSON.stringify(sdc))), sdc);
  t.same(parseSdcRegistration(Buffer.from(JSON.stringify({ ...sdc, mapBinary: true, mapHeld: { epoch: 1, digest: 2 } }))), { ...sdc, mapBinary: true, mapHeld: { epoch: 1, digest: 2 } });
  t.equal(codeOf(() => parseSdcRegistration(Buffer.from(JSON.stringify({ ...sdc, mapBinary: true, mapHeld: { epoch: 1, digest: -2 } })))), 'MB_ERR_INVALID_ARGUMENT');
});
