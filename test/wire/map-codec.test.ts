// Proves the placement map's compact encoding and its deltas (src/wire/map-codec.ts): over
// seeded random histories of epochs made by the real planner (test/helpers/map-history.ts),
// every map decodes to itself and every delta applied to the map it was made from gives the
// new map exactly (deep-equal), also across several epochs at once; a delta is refused by a
// map of another epoch (too old, too new) or of the same epoch with other content; and an
// encoded map or delta cut at any byte, with any bit flipped, or crafted with a valid checksum
// around bad counts is refused whole, the map it was applied to left as it was. The sender's
// side (MapUpdates) gives a peer nothing, the chain of deltas from its epoch, or the whole map
// when it is too far behind, new, or at an epoch never published.
// The seed is printed; MESHBLOCK_SEED=<n> replays a run.

import { isDeepStrictEqual } from 'node:util';
import t from 'tap';
import { crc32c } from '../../src/common/crc32c.js';
import { MeshblockError } from '../../src/common/errors.js';
import {
  applyDelta,
  applyUpdate,
  decodeMap,
  encodeDelta,
  encodedEpoch,
  encodeMap,
  mapDigest,
  mapHeaderBytes,
  MapKind,
  MapUpdates,
} from '../../src/wire/map-codec.js';
import { parsePlacementMap, type PlacementMap } from '../../src/wire/placement.js';
import { MapHistory } from '../helpers/map-history.js';

const seed = Number(process.env['MESHBLOCK_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
t.comment(`seed ${seed} (MESHBLOCK_SEED=${seed} replays it)`);

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return err instanceof MeshblockError ? err.code : `not a MeshblockError: ${String(err)}`;
  }
  return 'accepted';
}

/** A frame with this body and a valid checksum: what a buggy or hostile encoder could send. */
function framed(kind: number, body: Buffer): Buffer {
  const encoded = Buffer.alloc(mapHeaderBytes + body.length);
  encoded.writeUInt32LE(0x4d50424d, 0);
  encoded.writeUInt8(1, 4);
  encoded.writeUInt8(kind, 5);
  encoded.writeUInt32LE(body.length, 8);
  body.copy(encoded, mapHeaderBytes);
  encoded.writeUInt32LE(crc32c(body, crc32c(encoded.subarray(0, 12))), 12);
  return encoded;
}

t.test('random histories: every map round-trips, every delta gives the next map exactly', async (t) => {
  const historyCount = 6;
  const epochsPerHistory = 40;
  let deltas = 0;
  let chained = 0;
  for (let run = 0; run < historyCount; run++) {
    const history = new MapHistory({ seed: seed + run, sdsCount: 4 + (run % 4) * 3, devicesPerSds: 1 + (run % 3), pgCount: 64 << (run % 3) });
    const maps: PlacementMap[] = [history.map()];
    for (let step = 0; step < epochsPerHistory; step++) {
      const next = history.next();
      // The generator makes valid maps: what the JSON path accepts.
      parsePlacementMap(JSON.parse(JSON.stringify(next)));
      const decoded = decodeMap(encodeMap(next));
      if (!isDeepStrictEqual(decoded, next)) {
        t.same(decoded, next, `run ${run} epoch ${next.epoch}: decodeMap(encodeMap(map))`);
        return;
      }
      for (const back of [1, 2, 7]) {
        const base = maps[maps.length - back];
        if (base === undefined) continue;
        const baseCopy = structuredClone(base);
        const applied = applyDelta(base, encodeDelta(base, next));
        if (!isDeepStrictEqual(applied, next) || !isDeepStrictEqual(base, baseCopy)) {
          t.same(applied, next, `run ${run}: the delta from epoch ${base.epoch} to ${next.epoch}`);
          t.same(base, baseCopy, 'the base map is left as it was');
          return;
        }
        if (back === 1) deltas++;
        else chained++;
      }
      maps.push(next);
    }
  }
  t.equal(deltas, historyCount * epochsPerHistory, `${deltas} one-epoch deltas and ${chained} deltas over several epochs applied exactly`);
});

t.test('a delta is refused by a map of another epoch or other content, and passes through nothing', async (t) => {
  const history = new MapHistory({ seed, sdsCount: 6, devicesPerSds: 2, pgCount: 128 });
  const old = history.map();
  const base = history.next();
  const next = history.next();
  const delta = encodeDelta(base, next);
  t.equal(codeOf(() => applyDelta(old, delta)), 'MB_ERR_MAP_BASE', 'too old a base (the peer missed an epoch): refused, it needs the whole map');
  t.equal(codeOf(() => applyDelta(next, delta)), 'MB_ERR_MAP_BASE', 'a base newer than the delta: refused');
  const forged = structuredClone(base);
  const sdsId = Object.keys(forged.sds)[0] as string;
  forged.sds[sdsId] = { address: '192.0.2.1:1' };
  t.equal(codeOf(() => applyDelta(forged, delta)), 'MB_ERR_MAP_BASE', 'same epoch, other content: refused by the base digest');
  t.equal(codeOf(() => encodeDelta(next, base)), 'MB_ERR_MAP_BASE', 'a delta backwards is not made');
  t.equal(codeOf(() => decodeMap(delta)), 'MB_ERR_MAP_CORRUPT', 'a delta is not a map');
  t.equal(codeOf(() => applyDelta(base, encodeMap(next))), 'MB_ERR_MAP_CORRUPT', 'a map is not a delta');
  t.same(encodedEpoch(delta), { kind: MapKind.Delta, epoch: next.epoch, baseEpoch: base.epoch }, 'the epochs of a delta are read from its frame');
  t.same(encodedEpoch(encodeMap(next)), { kind: MapKind.Full, epoch: next.epoch, baseEpoch: null });
});

t.test('equal maps encode to equal bytes whatever the order of their keys', async (t) => {
  const history = new MapHistory({ seed, sdsCount: 5, devicesPerSds: 2, pgCount: 64 });
  const map = history.next();
  const reversed: PlacementMap = {
    epoch: map.epoch,
    sds: Object.fromEntries(Object.entries(map.sds).reverse()),
    pools: Object.fromEntries(Object.entries(map.pools).reverse()),
    ...(map.vtrees !== undefined ? { vtrees: Object.fromEntries(Object.entries(map.vtrees).reverse()) } : {}),
  };
  t.ok(encodeMap(map).equals(encodeMap(reversed)), 'same bytes');
  t.equal(mapDigest(map), mapDigest(reversed), 'same digest');
  // Smaller than its JSON by far: a group is two small varints instead of ~140 characters.
  t.ok(encodeMap(map).length * 5 < JSON.stringify(map).length, `${encodeMap(map).length} bytes encoded, ${JSON.stringify(map).length} as JSON`);
});

t.test('cut at any byte, or with any bit flipped: refused whole, the map left as it was', async (t) => {
  const history = new MapHistory({ seed: seed ^ 0x5a5a, sdsCount: 5, devicesPerSds: 2, pgCount: 16 });
  history.next();
  const base = history.next();
  history.failSds();
  const next = history.next();
  const baseCopy = structuredClone(base);
  const cases: Array<[string, Buffer, (input: Buffer) => unknown]> = [
    ['map', encodeMap(next), (input) => decodeMap(input)],
    ['delta', encodeDelta(base, next), (input) => applyDelta(base, input)],
  ];
  for (const [what, encoded, take] of cases) {
    t.same(take(encoded), next, `the ${what} itself is taken`);
    const codes = new Set<string>();
    for (let length = 0; length < encoded.length; length++) codes.add(codeOf(() => take(encoded.subarray(0, length))));
    t.same([...codes], ['MB_ERR_MAP_CORRUPT'], `the ${what} (${encoded.length} bytes) cut at each of its bytes: refused as corrupt`);
    t.same([...new Set([codeOf(() => take(Buffer.concat([encoded, Buffer.of(0)])))])], ['MB_ERR_MAP_CORRUPT'], `the ${what} with a byte more: refused`);
    codes.clear();
    for (let bit = 0; bit < encoded.length * 8; bit++) {
      const flipped = Buffer.from(encoded);
      flipped[bit >> 3] = (flipped[bit >> 3] as number) ^ (1 << (bit & 7));
      codes.add(codeOf(() => take(flipped)));
    }
    t.same([...codes], ['MB_ERR_MAP_CORRUPT'], `each of the ${encoded.length * 8} bits of the ${what} flipped: refused as corrupt`);
  }
  t.same(base, baseCopy, 'the base map was never touched');
});

t.test('a valid checksum around bad content is refused too (bounds before allocation)', async (t) => {
  const history = new MapHistory({ seed, sdsCount: 4, devicesPerSds: 1, pgCount: 8 });
  const map = history.next();
  const body = encodeMap(map).subarray(mapHeaderBytes);
  t.same(decodeMap(framed(MapKind.Full, body)), map, 'the helper frames a good body as the codec does');
  const varint = (value: number): number[] => {
    const bytes: number[] = [];
    let rest = value;
    while (rest >= 0x80) {
      bytes.push((rest % 0x80) | 0x80);
      rest = Math.floor(rest / 0x80);
    }
    bytes.push(rest);
    return bytes;
  };
  const epoch = varint(map.epoch);
  const bad: Array<[string, Buffer]> = [
    ['an SDS count in the billions', Buffer.from([...epoch, ...varint(2 ** 40)])],
    ['a varint of nine bytes', Buffer.from([...epoch, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])],
    ['a varint with a zero last byte (a second spelling)', Buffer.from([...epoch, 0x80, 0x00])],
    ['an epoch of 0 (the JSON path refuses it too)', Buffer.from([0, 0, 0, 0, 0])],
    // epoch, one SDS (id, address 'a:1'), one copy naming SDS number 5, no pools, no V-Trees.
    ['a copy naming an SDS past the table', Buffer.from([...epoch, 1, ...Buffer.alloc(8, 0xaa), 3, ...Buffer.from('a:1'), 1, 5, 0, 0, 0])],
    ['trailing bytes inside the checksum', Buffer.concat([body, Buffer.of(0)])],
  ];
  const inRange = decodeMap(framed(MapKind.Full, Buffer.from([...epoch, 1, ...Buffer.alloc(8, 0xaa), 3, ...Buffer.from('a:1'), 1, 0, 0, 0, 0])));
  t.same(inRange, { epoch: map.epoch, sds: { aaaaaaaaaaaaaaaa: { address: 'a:1' } }, pools: {} }, 'the crafted body with SDS number 0 is a good map');
  for (const [what, crafted] of bad) t.equal(codeOf(() => decodeMap(framed(MapKind.Full, crafted))), 'MB_ERR_MAP_CORRUPT', what);
  // A delta whose result digest does not match what it makes (an encoder bug): refused.
  const next = history.next();
  const deltaBody = Buffer.from(encodeDelta(map, next).subarray(mapHeaderBytes));
  const digestOffset = varint(map.epoch).length + varint(next.epoch).length + 4;
  t.equal(deltaBody.readUInt32LE(digestOffset), mapDigest(next), 'the result digest sits after the epochs and the base digest');
  t.same(applyDelta(map, framed(MapKind.Delta, deltaBody)), next, 'the delta reframed is taken');
  deltaBody.writeUInt32LE((mapDigest(next) + 1) >>> 0, digestOffset);
  t.equal(codeOf(() => applyDelta(map, framed(MapKind.Delta, deltaBody))), 'MB_ERR_MAP_CORRUPT', 'a delta that makes another map than it says: refused');
  const header = encodeMap(map);
  header.writeUInt8(2, 4);
  header.writeUInt32LE(crc32c(header.subarray(mapHeaderBytes), crc32c(header.subarray(0, 12))), 12);
  t.equal(codeOf(() => decodeMap(header)), 'MB_ERR_MAP_CORRUPT', 'another version, checksummed: refused');
});

t.test('what the encoder refuses to write', async (t) => {
  const map: PlacementMap = {
    epoch: 2,
    sds: { aaaaaaaaaaaaaaaa: { address: '127.0.0.1:7072' } },
    pools: { '000000000000000f': { chunkBytes: 1 << 20, groups: [{ primary: 'bbbbbbbbbbbbbbbb', secondary: null }] } },
  };
  t.equal(codeOf(() => encodeMap(map)), 'MB_ERR_MAP_CORRUPT', 'a group naming an SDS the map lacks');
  const odd: PlacementMap = { epoch: 2, sds: { aaaaaaaaaaaaaaaa: { address: '127.0.0.1:7072' } }, pools: {} };
  t.same(decodeMap(encodeMap(odd)), odd, 'a map with no pools round-trips');
  odd.epoch = 1.5;
  t.equal(codeOf(() => encodeMap(odd)), 'MB_ERR_MAP_CORRUPT', 'an epoch that is not a whole number');
});

t.test('what a peer gets: nothing when current, the chain of deltas from its epoch, or the whole map when too far behind', async (t) => {
  const kept = 4;
  const updates = new MapUpdates(kept);
  // 32 SDSs: a failure changes about a sixteenth of the groups, so a few deltas stay smaller
  // than the whole map. Every third epoch an SDS fails; the others change little.
  const history = new MapHistory({ seed: seed + 99, sdsCount: 32, devicesPerSds: 1, pgCount: 4096 });
  const maps: PlacementMap[] = [];
  for (let step = 0; step < 10; step++) {
    if (step % 3 === 1) history.failSds();
    const map = history.map();
    maps.push(map);
    updates.publish(map);
  }
  const current = maps[maps.length - 1] as PlacementMap;
  t.same(updates.updateFor(current.epoch), { kind: 'current' }, 'a peer at the current epoch gets nothing');
  for (let back = 1; back <= kept; back++) {
    const held = maps[maps.length - 1 - back] as PlacementMap;
    const update = updates.updateFor(held.epoch);
    t.equal(update.kind, 'deltas', `a peer ${back} epoch(s) behind gets deltas`);
    if (update.kind === 'deltas') t.equal(update.deltas.length, back, `${back} of them`);
    t.same(applyUpdate(held, update), current, 'which bring it to the current map exactly');
  }
  const tooOld = maps[maps.length - 2 - kept] as PlacementMap;
  t.equal(updates.updateFor(tooOld.epoch).kind, 'full', `a peer ${kept + 1} epochs behind gets the whole map`);
  t.same(applyUpdate(tooOld, updates.updateFor(tooOld.epoch)), current);
  t.equal(updates.updateFor(null).kind, 'full', 'a new peer gets the whole map');
  t.equal(updates.updateFor(current.epoch + 5).kind, 'full', 'a peer at an epoch never published gets the whole map');
  // A chain given to the wrong map (the peer's map moved on meanwhile) is refused, never half-applied.
  const chain = updates.updateFor((maps[maps.length - 3] as PlacementMap).epoch);
  const wrong = maps[maps.length - 4] as PlacementMap;
  const wrongCopy = structuredClone(wrong);
  t.equal(codeOf(() => applyUpdate(wrong, chain)), 'MB_ERR_MAP_BASE', 'deltas for another epoch: refused');
  t.same(wrong, wrongCopy, 'the map held is left as it was');
  t.equal(codeOf(() => applyUpdate(null, chain)), 'MB_ERR_MAP_BASE', 'deltas to a peer with no map: refused');
});

t.test('a chain of deltas longer than the whole map is not sent', async (t) => {
  // 4 SDSs: each failure changes about half the groups, so two deltas outweigh the map.
  const updates = new MapUpdates(8);
  const history = new MapHistory({ seed: seed + 7, sdsCount: 6, devicesPerSds: 1, pgCount: 4096 });
  const first = history.map();
  updates.publish(first);
  history.failSds();
  updates.publish(history.map());
  history.failSds();
  const current = history.map();
  updates.publish(current);
  const update = updates.updateFor(first.epoch);
  t.equal(update.kind, 'full', 'two failures behind: the whole map');
  t.same(applyUpdate(first, update), current);
});

t.test('the layout is pinned (a change to it is a new version)', async (t) => {
  const a = 'aaaaaaaaaaaaaaaa';
  const b = 'bbbbbbbbbbbbbbbb';
  const map: PlacementMap = {
    epoch: 300,
    sds: { [b]: { address: '[::1]:7073' }, [a]: { address: '127.0.0.1:7072' } },
    pools: {
      '000000000000000f': {
        chunkBytes: 1048576,
        scrub: { mode: 'deviceOnly', rateKBps: 1024 },
        groups: [
          { primary: a, secondary: b, primaryDevice: '0123456789abcdef', secondaryDevice: 'fedcba9876543210' },
          { primary: b, secondary: null, lost: true },
        ],
      },
    },
  };
  const expected = [
    '4d42504d 01 01 0000 57000000 5573e470', // magic MBPM, version 1, kind full, reserved, 87 body bytes, crc32c
    'ac02', // epoch 300
    '02 aaaaaaaaaaaaaaaa 0e 3132372e302e302e313a37303732 bbbbbbbbbbbbbbbb 0a 5b3a3a315d3a37303733', // SDSs in id order
    '03 00 01 0123456789abcdef 01 01 fedcba9876543210 01 00', // copies: (a, dev), (b, dev), (b, none)
    '01 000000000000000f 14 02 8008 02', // one pool: 2^20-byte chunks, deviceOnly at 1024 KB/s, 2 groups
    '00 02', // copy 0 primary, copy 1 secondary
    '05 00', // copy 2 primary, lost; no secondary
    '00', // no `vtrees` key
  ].join('').replaceAll(' ', '');
  t.equal(encodeMap(map).toString('hex'), expected);
  t.same(decodeMap(Buffer.from(expected, 'hex')), map);
  const odd = structuredClone(map);
  (odd.pools['000000000000000f'] as { groups: PlacementMap['pools'][string]['groups'] }).groups[1] = { primary: b, secondary: null, secondaryDevice: '0123456789abcdef' };
  t.equal(codeOf(() => encodeMap(odd)), 'MB_ERR_MAP_CORRUPT', 'a group with no secondary but a secondary device is not encoded (it could not come back the same)');
});
