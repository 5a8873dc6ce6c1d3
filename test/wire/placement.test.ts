// Proves the placement map contract shared by MDM, SDC and SDS: maps are validated at the
// edge with the wrong field named, and placementGroupOf spreads a volume's consecutive
// chunks evenly over the groups (the parallelism the design promises), identically in
// every process (pinned values).

import t from 'tap';
import { parsePlacementMap, placementGroupOf, type PlacementMap, type PoolPlacement } from '../../src/wire/placement.js';

const a = 'aaaaaaaaaaaaaaaa';
const b = 'bbbbbbbbbbbbbbbb';
const pool = '000000000000000f';

function good(): PlacementMap {
  return {
    epoch: 3,
    sds: { [a]: { address: '127.0.0.1:7072' }, [b]: { address: '[::1]:7073' } },
    pools: { [pool]: { chunkBytes: 1048576, groups: [{ primary: a, secondary: b }, { primary: b, secondary: null, primaryDevice: '0123456789abcdef' }] } },
  };
}

t.test('a good map parses to itself', async (t) => {
  t.same(parsePlacementMap(JSON.parse(JSON.stringify(good()))), good());
});

t.test('a pool scrub policy round-trips, at both ends of the rate range and in every mode', async (t) => {
  for (const scrub of [
    { mode: 'off', rateKBps: 64 },
    { mode: 'deviceOnly', rateKBps: 1024 },
    { mode: 'dataComparison', rateKBps: 1024 * 1024 },
  ] as const) {
    const map = good();
    (map.pools[pool] as PoolPlacement).scrub = { ...scrub };
    const parsed = parsePlacementMap(JSON.parse(JSON.stringify(map)));
    t.same(parsed, map, `${scrub.mode} at ${scrub.rateKBps} KB/s`);
    t.same(parsed.pools[pool]?.scrub, scrub);
  }
  // Absent stays absent (the SDS applies the default), never invented by the parser.
  t.equal(parsePlacementMap(JSON.parse(JSON.stringify(good()))).pools[pool]?.scrub, undefined);
  // Unknown extra fields of the policy are dropped, not carried.
  const extra = JSON.parse(JSON.stringify(good())) as { pools: Record<string, Record<string, unknown>> };
  (extra.pools[pool] as Record<string, unknown>)['scrub'] = { mode: 'deviceOnly', rateKBps: 128, colour: 'red' };
  t.same(parsePlacementMap(extra).pools[pool]?.scrub, { mode: 'deviceOnly', rateKBps: 128 });
});

t.test('bad maps name the field', async (t) => {
  // The spoilers write values of the wrong type into a JSON copy on purpose: no type but
  // `any` describes what they make of it.
  /* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-member-access */
  const cases: Array<[string, (map: Record<string, any>) => void, RegExp]> = [
    ['epoch zero', (map) => (map['epoch'] = 0), /map\.epoch/],
    ['epoch a string', (map) => (map['epoch'] = '3'), /map\.epoch/],
    ['an SDS id that is not hex', (map) => (map['sds'] = { xyz: { address: '1.2.3.4:5' } }), /map\.sds\.xyz/],
    ['an address without a port', (map) => (map['sds'][a].address = 'localhost'), /address/],
    ['chunkBytes not a power of two', (map) => (map['pools'][pool].chunkBytes = 3 * 1048576), /chunkBytes/],
    ['no groups', (map) => (map['pools'][pool].groups = []), /groups/],
    ['a primary not in map.sds', (map) => (map['pools'][pool].groups[0].primary = 'cccccccccccccccc'), /groups\[0\]\.primary/],
    ['both copies on one SDS', (map) => (map['pools'][pool].groups[0].secondary = a), /different SDSs/],
    ['a device id that is not hex', (map) => (map['pools'][pool].groups[1].primaryDevice = 'nope'), /groups\[1\]\.primaryDevice/],
    ['pools an array', (map) => (map['pools'] = []), /map\.pools/],
    ['a scrub policy that is not an object', (map) => (map['pools'][pool].scrub = 'on'), /map\.pools\.000000000000000f\.scrub: must be an object/],
    ['a scrub mode unknown', (map) => (map['pools'][pool].scrub = { mode: 'DeviceOnly', rateKBps: 1024 }), /scrub\.mode: must be 'off', 'deviceOnly', 'dataComparison'/],
    ['a scrub mode missing', (map) => (map['pools'][pool].scrub = { rateKBps: 1024 }), /scrub\.mode/],
    ['a scrub rate below the minimum', (map) => (map['pools'][pool].scrub = { mode: 'deviceOnly', rateKBps: 63 }), /scrub\.rateKBps: must be an integer from 64 to 1048576/],
    ['a scrub rate above the maximum', (map) => (map['pools'][pool].scrub = { mode: 'deviceOnly', rateKBps: 1024 * 1024 + 1 }), /scrub\.rateKBps/],
    ['a scrub rate not whole', (map) => (map['pools'][pool].scrub = { mode: 'deviceOnly', rateKBps: 100.5 }), /scrub\.rateKBps/],
    ['a scrub rate a string', (map) => (map['pools'][pool].scrub = { mode: 'off', rateKBps: '1024' }), /scrub\.rateKBps/],
  ];
  for (const [what, spoil, field] of cases) {
    const map = JSON.parse(JSON.stringify(good())) as Record<string, any>;
    /* eslint-enable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-member-access */
    spoil(map);
    t.throws(() => parsePlacementMap(map), { code: 'MB_ERR_INVALID_ARGUMENT', message: field }, what);
  }
});

t.test('placementGroupOf: pinned, in range, and even', async (t) => {
  // Pinned: every process (and every version) must agree, or data is looked for elsewhere.
  t.same([0, 1, 2, 3].map((chunk) => placementGroupOf('0123456789abcdef', chunk, 4096)), [1214, 1945, 837, 3426]);
  const pgCount = 256;
  const counts = new Array<number>(pgCount).fill(0);
  const chunkCount = 256 * 400;
  for (let chunk = 0; chunk < chunkCount; chunk++) {
    const group = placementGroupOf('00000000deadbeef', chunk, pgCount);
    if (Number.isInteger(group) && group >= 0 && group < pgCount) counts[group] = (counts[group] as number) + 1;
  }
  t.equal(counts.reduce((sum, count) => sum + count, 0), chunkCount, 'every group index is in range');
  const min = Math.min(...counts);
  const max = Math.max(...counts);
  t.comment(`400 chunks per group expected: min ${min}, max ${max}`);
  t.ok(min > 300 && max < 500, 'no group gets far more or fewer chunks than its share');
  const firstGroups = new Set(Array.from({ length: 64 }, (_, chunk) => placementGroupOf('00000000deadbeef', chunk, pgCount)));
  t.ok(firstGroups.size > 50, `64 consecutive chunks land on ${firstGroups.size} different groups`);
});
