// Proves the MDM's placement planner (src/mdm/placement-planner.ts) on generated pools, as the
// pure function it is (no processes needed: it is the core of the MDM's state machine):
//   - invariants over 40 seeded random pools (3–40 SDSs, 1–4 devices of 1/64–8 TiB each, half
//     with 3–6 fault sets), each through a life of a failure, a rebuild, an added SDS, a
//     rebalance and a removal: copies on different SDSs and fault sets, only on normal devices,
//     every device used, copies per device fewer than 2 from its capacity share (a domain
//     capped at one copy per group), primaries within primaryImbalanceMax (2) of half a
//     device's copies once all copies are in sync, no readable copy dropped, no new copy
//     primary. The seed is printed; PLANNER_SEED=<seed> replays it.
//   - the scale case: 1024 SDSs × 4 devices of 1–8 TiB and 100,000 volumes of 8 GiB – 2 TiB.
//     Every volume's chunks are hashed to groups with placementGroupOf, as SDCs do, but counted
//     in 1 GiB chunks (37 M of them) rather than 1 MiB ones (38 G, too many to enumerate): the
//     coarse chunks add sampling noise, so the fill spread measured is an upper bound; the
//     planner's own spread (copies per byte of capacity) is printed beside it. Spread, time and
//     rebuild fan-out are printed; time is not asserted (shared machines).
//   - stability: an added SDS takes its fair share and no other copy moves; a failed or
//     removing device's copies move and nothing else does, surviving secondaries promoted; a
//     re-plan once copies are in sync moves nothing; a removing device keeps the copies no one
//     else has until their new partners are in sync.
//   - determinism, degraded pools, capped domains, and refusals by stable code.

import t, { type Test } from 'tap';
import { mulberry32 } from '../../src/common/seeded-random.js';
import { pgCountFor, planPlacement, toPlacementGroups, type GroupAssignment, type Plan, type PlannerDevice } from '../../src/mdm/placement-planner.js';
import { placementGroupOf } from '../../src/wire/placement.js';
import { pgCountMax, pgCountMin, primaryImbalanceMax } from '../../src/common/limits.js';

const gib = 2 ** 30;
const tib = 2 ** 40;


function hexId(random: () => number): string {
  return Array.from({ length: 2 }, () => Math.floor(random() * 2 ** 32).toString(16).padStart(8, '0')).join('');
}

interface PoolShape {
  sdsCount: number;
  devicesPerSds: number;
  faultSetCount: number; // 0: no fault sets
  capacityBytes: () => number;
  firstSds?: number;
}

/** Devices named sds007-d2 and so on (readable in failures); fault sets round robin. */
function makeDevices(shape: PoolShape): PlannerDevice[] {
  const devices: PlannerDevice[] = [];
  const first = shape.firstSds ?? 0;
  for (let sds = first; sds < first + shape.sdsCount; sds++) {
    for (let device = 0; device < shape.devicesPerSds; device++) {
      devices.push({
        deviceId: `sds${String(sds).padStart(4, '0')}-d${device}`,
        sdsId: `sds${String(sds).padStart(4, '0')}`,
        faultSetId: shape.faultSetCount > 0 ? `fs${sds % shape.faultSetCount}` : null,
        capacityBytes: shape.capacityBytes(),
        state: 'normal',
      });
    }
  }
  return devices;
}

function withState(devices: PlannerDevice[], deviceId: string, state: PlannerDevice['state']): PlannerDevice[] {
  return devices.map((device) => (device.deviceId === deviceId ? { ...device, state } : device));
}

/**
 * Each normal device's share of the 2 × pgCount copies, computed independently of the planner:
 * proportional to capacity, a domain (fault set, else SDS) capped at pgCount copies by repeated
 * capping, then split among the domain's devices by capacity.
 */
function idealCopies(devices: PlannerDevice[], pgCount: number): Map<string, number> {
  const normal = devices.filter((device) => device.state === 'normal');
  const domainOf = (device: PlannerDevice): string => device.faultSetId ?? device.sdsId;
  const domainCapacity = new Map<string, number>();
  for (const device of normal) domainCapacity.set(domainOf(device), (domainCapacity.get(domainOf(device)) ?? 0) + device.capacityBytes);
  const copyTotal = (domainCapacity.size >= 2 ? 2 : 1) * pgCount;
  const capped = new Set<string>();
  let share = new Map<string, number>();
  for (;;) {
    const freeCapacity = [...domainCapacity].filter(([domain]) => !capped.has(domain)).reduce((sum, [, capacity]) => sum + capacity, 0);
    const freeCopies = copyTotal - capped.size * pgCount;
    share = new Map([...domainCapacity].map(([domain, capacity]) => [domain, capped.has(domain) ? pgCount : (freeCopies * capacity) / freeCapacity]));
    const over = [...share].filter(([domain, copies]) => !capped.has(domain) && copies > pgCount);
    if (over.length === 0) break;
    for (const [domain] of over) capped.add(domain);
  }
  return new Map(normal.map((device) => [device.deviceId, ((share.get(domainOf(device)) as number) * device.capacityBytes) / (domainCapacity.get(domainOf(device)) as number)]));
}

interface Tally {
  copies: Map<string, number>;
  primaries: Map<string, number>;
}

function tally(groups: GroupAssignment[]): Tally {
  const copies = new Map<string, number>();
  const primaries = new Map<string, number>();
  for (const group of groups) {
    primaries.set(group.primaryDevice, (primaries.get(group.primaryDevice) ?? 0) + 1);
    for (const device of [group.primaryDevice, group.secondaryDevice]) if (device !== null) copies.set(device, (copies.get(device) ?? 0) + 1);
  }
  return { copies, primaries };
}

/**
 * The placement rules, as a list of broken ones (empty when all hold), so that thousands of
 * groups make one assertion. Levels: 'safe' (copies apart, on normal devices), 'balanced' (and
 * every device used, copies fewer than 2 from its share), 'settled' (and, every copy being in
 * sync so that any group may swap roles, primaries within primaryImbalanceMax of half).
 */
type Level = 'safe' | 'balanced' | 'settled';

function violations(devices: PlannerDevice[], pgCount: number, groups: GroupAssignment[], level: Level): string[] {
  const problems: string[] = [];
  const byId = new Map(devices.map((device) => [device.deviceId, device]));
  const normal = devices.filter((device) => device.state === 'normal');
  const normalDomains = new Set(normal.map((device) => device.faultSetId ?? device.sdsId));
  if (groups.length !== pgCount) problems.push(`${groups.length} groups, not ${pgCount}`);
  groups.forEach((group, index) => {
    const primary = byId.get(group.primaryDevice);
    const secondary = group.secondaryDevice === null ? null : byId.get(group.secondaryDevice);
    // A removing device may still lead a group whose other copy is new (see the test below).
    const primaryOk = primary?.state === 'normal' || (primary?.state === 'removing' && secondary?.state === 'normal');
    if (!primaryOk) problems.push(`group ${index}: primary ${group.primaryDevice} is not a normal device`);
    if (secondary === null) {
      if (normalDomains.size >= 2) problems.push(`group ${index}: no secondary though ${normalDomains.size} domains have normal devices`);
    } else if (secondary?.state !== 'normal') {
      problems.push(`group ${index}: secondary ${group.secondaryDevice} is not a normal device`);
    } else if (primary !== undefined) {
      if (primary.sdsId === secondary.sdsId) problems.push(`group ${index}: both copies on SDS ${primary.sdsId}`);
      if (primary.faultSetId !== null && primary.faultSetId === secondary.faultSetId) problems.push(`group ${index}: both copies in fault set ${primary.faultSetId}`);
    }
  });
  if (level === 'safe') return problems;
  const { copies, primaries } = tally(groups);
  const ideal = idealCopies(devices, pgCount);
  for (const device of normal) {
    const held = copies.get(device.deviceId) ?? 0;
    const share = ideal.get(device.deviceId) as number;
    if (held === 0 && normal.length <= 2 * pgCount) problems.push(`${device.deviceId} holds no copy`);
    if (Math.abs(held - share) >= 2) problems.push(`${device.deviceId} holds ${held} copies, its share is ${share.toFixed(2)}`);
    const led = primaries.get(device.deviceId) ?? 0;
    if (level === 'settled' && normalDomains.size >= 2 && Math.abs(2 * led - held) > 2 * primaryImbalanceMax) problems.push(`${device.deviceId} leads ${led} of its ${held} groups`);
  }
  return problems;
}

/**
 * What a plan after a change must respect, given the map before it: a group keeps a readable
 * (normal or removing) copy wherever it had one; a moved (new) copy is never primary while a
 * readable one exists.
 */
function transitionViolations(devices: PlannerDevice[], before: GroupAssignment[], after: GroupAssignment[]): string[] {
  const problems: string[] = [];
  const readable = new Set(devices.filter((device) => device.state !== 'failed').map((device) => device.deviceId));
  after.forEach((group, index) => {
    const old = before[index] as GroupAssignment;
    const oldCopies = [old.primaryDevice, old.secondaryDevice].filter((device): device is string => device !== null);
    const survivors = oldCopies.filter((device) => readable.has(device));
    const now = [group.primaryDevice, group.secondaryDevice];
    if (survivors.length > 0 && !survivors.some((device) => now.includes(device))) problems.push(`group ${index}: its surviving copy was dropped`);
    if (survivors.length > 0 && !oldCopies.includes(group.primaryDevice)) problems.push(`group ${index}: new copy ${group.primaryDevice} made primary`);
  });
  return problems;
}

function seedOf(t: Test, name: string): number {
  const given = process.env['PLANNER_SEED'];
  const seed = given !== undefined ? Number(given) : (Date.now() ^ (process.pid << 8)) >>> 0;
  t.comment(`${name}: seed ${seed} (replay with PLANNER_SEED=${seed})`);
  return seed;
}

t.test('pgCountFor: a power of two with ≥ 64 groups per device, from pgCountMin to pgCountMax', async (t) => {
  t.equal(pgCountFor(1), pgCountMin);
  t.equal(pgCountFor(64), 4096);
  t.equal(pgCountFor(65), 8192);
  t.equal(pgCountFor(4096), 262144);
  t.equal(pgCountFor(1_000_000), pgCountMax);
  for (const count of [3, 100, 1000, 5000]) {
    const pgCount = pgCountFor(count);
    t.ok((pgCount & (pgCount - 1)) === 0 && pgCount >= 64 * count && pgCount < 128 * count + pgCountMin, `${count} devices: ${pgCount} groups`);
  }
  for (const bad of [0, -1, 1.5, Number.NaN]) t.throws(() => pgCountFor(bad), { code: 'MB_ERR_OUT_OF_RANGE' }, String(bad));
});

t.test('invariants hold over seeded random pools through failures, additions and removals', async (t) => {
  const seed = seedOf(t, 'random pools');
  const random = mulberry32(seed);
  const poolCount = 40;
  let planCount = 0;
  for (let pool = 0; pool < poolCount; pool++) {
    const sdsCount = 3 + Math.floor(random() * 38);
    const faultSetCount = random() < 0.5 ? 0 : 3 + Math.floor(random() * 4);
    let devices = makeDevices({
      sdsCount,
      devicesPerSds: 1 + Math.floor(random() * 4),
      faultSetCount,
      capacityBytes: () => (1 + Math.floor(random() * 8 * 64)) * (tib / 64),
    });
    const pgCount = random() < 0.5 ? 1024 : pgCountFor(devices.length);
    const what = `pool ${pool}: ${sdsCount} SDSs, ${devices.length} devices, ${faultSetCount} fault sets, ${pgCount} groups`;
    const problems: string[] = [];
    const step = (label: string, previous: GroupAssignment[] | null, level: Level): Plan => {
      const plan = planPlacement({ pgCount, devices, previous });
      planCount++;
      problems.push(...violations(devices, pgCount, plan.groups, level).map((problem) => `${label}: ${problem}`));
      if (previous !== null) problems.push(...transitionViolations(devices, previous, plan.groups).map((problem) => `${label}: ${problem}`));
      return plan;
    };
    let plan = step('new', null, 'settled');
    const pick = (): PlannerDevice => {
      const normal = devices.filter((device) => device.state === 'normal');
      return normal[Math.floor(random() * normal.length)] as PlannerDevice;
    };
    devices = withState(devices, pick().deviceId, 'failed');
    plan = step('failed', plan.groups, 'balanced');
    plan = step('rebuilt', plan.groups, 'settled');
    if (plan.moved !== 0) problems.push(`re-plan after rebuild moved ${plan.moved}`);
    devices = [...devices, ...makeDevices({ sdsCount: 1, devicesPerSds: 2, faultSetCount, capacityBytes: () => 4 * tib, firstSds: 9000 + pool })];
    plan = step('added', plan.groups, 'balanced');
    plan = step('rebalanced', plan.groups, 'settled');
    devices = withState(devices, pick().deviceId, 'removing');
    plan = step('removing', plan.groups, 'balanced');
    plan = step('removed', plan.groups, 'settled');
    t.same(problems.slice(0, 10), [], what);
  }
  t.comment(`${poolCount} pools, ${planCount} plans checked`);
});

t.test('scale: 1024 SDSs × 4 devices, 100,000 volumes place quickly and evenly', async (t) => {
  const random = mulberry32(20240601);
  const sizesTib = [1, 2, 3, 4, 6, 8];
  const devices = makeDevices({ sdsCount: 1024, devicesPerSds: 4, faultSetCount: 0, capacityBytes: () => (sizesTib[Math.floor(random() * sizesTib.length)] as number) * tib });
  const pgCount = pgCountFor(devices.length);
  const started = process.hrtime.bigint();
  const plan = planPlacement({ pgCount, devices, previous: null });
  const planMs = Number(process.hrtime.bigint() - started) / 1e6;
  t.same(violations(devices, pgCount, plan.groups, 'settled').slice(0, 10), [], 'every rule holds');

  // Volumes: sizes log-uniform from 8 GiB to 2 TiB, counted in 1 GiB chunks (see the top).
  const chunkBytes = gib;
  const chunksPerGroup = new Float64Array(pgCount);
  let volumeBytes = 0;
  const hashStarted = process.hrtime.bigint();
  for (let volume = 0; volume < 100_000; volume++) {
    const vtreeId = hexId(random);
    const chunkCount = Math.round(8 * 256 ** random());
    volumeBytes += chunkCount * chunkBytes;
    for (let chunk = 0; chunk < chunkCount; chunk++) chunksPerGroup[placementGroupOf(vtreeId, chunk, pgCount)]++;
  }
  const hashMs = Number(process.hrtime.bigint() - hashStarted) / 1e6;
  const bytesOn = new Map<string, number>();
  plan.groups.forEach((group, index) => {
    for (const device of [group.primaryDevice, group.secondaryDevice]) {
      if (device !== null) bytesOn.set(device, (bytesOn.get(device) ?? 0) + (chunksPerGroup[index] as number) * chunkBytes);
    }
  });
  const fills = devices.map((device) => (bytesOn.get(device.deviceId) ?? 0) / device.capacityBytes);
  const mean = fills.reduce((sum, fill) => sum + fill, 0) / fills.length;
  const deviation = Math.sqrt(fills.reduce((sum, fill) => sum + (fill - mean) ** 2, 0) / fills.length);
  const min = Math.min(...fills);
  const max = Math.max(...fills);
  const percent = (fill: number): string => `${((fill / mean - 1) * 100).toFixed(2)}%`;
  t.comment(`${devices.length} devices, ${pgCount} groups: planned in ${planMs.toFixed(0)} ms (hashing ${Math.round(volumeBytes / chunkBytes)} chunks took ${hashMs.toFixed(0)} ms)`);
  t.comment(`volumes ${(volumeBytes / 2 ** 50).toFixed(1)} PiB × 2 copies on ${(devices.reduce((sum, device) => sum + device.capacityBytes, 0) / 2 ** 50).toFixed(1)} PiB raw (thin, overcommitted: only the spread matters)`);
  t.comment(`fill ratio per device: min ${min.toFixed(4)} (${percent(min)}), mean ${mean.toFixed(4)}, max ${max.toFixed(4)} (+${percent(max)}), standard deviation ${deviation.toFixed(4)} (${((deviation / mean) * 100).toFixed(2)}% of mean)`);
  t.ok(min > 0.94 * mean && max < 1.06 * mean, 'every device within ±6% of the mean fill');
  t.ok(deviation < 0.015 * mean, 'standard deviation under 1.5% of the mean fill');
  // Most of that is the 1 GiB accounting: a 1 TiB device holds ~32 groups of ~140 such chunks,
  // ±1.5% by chance alone. With 1 MiB chunks the fill converges to the copies per byte of
  // capacity, which is the planner's own spread:
  const { copies, primaries } = tally(plan.groups);
  const ideal = idealCopies(devices, pgCount);
  const placed = devices.map((device) => (copies.get(device.deviceId) as number) / (ideal.get(device.deviceId) as number));
  const placedMean = placed.reduce((sum, ratio) => sum + ratio, 0) / placed.length;
  const placedDeviation = Math.sqrt(placed.reduce((sum, ratio) => sum + (ratio - placedMean) ** 2, 0) / placed.length);
  t.comment(`copies / capacity share per device: min ${Math.min(...placed).toFixed(4)}, max ${Math.max(...placed).toFixed(4)}, standard deviation ${placedDeviation.toFixed(4)}`);

  const readShare = devices.map((device) => (primaries.get(device.deviceId) ?? 0) / (copies.get(device.deviceId) ?? 1));
  t.comment(`primaries / copies per device: min ${Math.min(...readShare).toFixed(3)}, max ${Math.max(...readShare).toFixed(3)}`);

  const peers = new Map<string, Set<string>>();
  for (const group of plan.groups) {
    const [a, b] = [group.primaryDevice, group.secondaryDevice as string];
    peers.set(a, (peers.get(a) ?? new Set()).add(b));
    peers.set(b, (peers.get(b) ?? new Set()).add(a));
  }
  const spread = devices.map((device) => (peers.get(device.deviceId)?.size ?? 0) / (copies.get(device.deviceId) as number));
  const peerCounts = devices.map((device) => peers.get(device.deviceId)?.size ?? 0);
  t.comment(`devices sharing groups with each device (its rebuild's fan-out): min ${Math.min(...peerCounts)}, max ${Math.max(...peerCounts)}; distinct partners per copy: min ${Math.min(...spread).toFixed(3)}`);
  t.ok(Math.min(...spread) >= 0.9, "at least 90% of each device's copies have partners of their own");

  const failed = withState(devices, 'sds0517-d2', 'failed');
  const failStarted = process.hrtime.bigint();
  const afterFailure = planPlacement({ pgCount, devices: failed, previous: plan.groups });
  const failMs = Number(process.hrtime.bigint() - failStarted) / 1e6;
  t.comment(`re-plan after a device failure: ${failMs.toFixed(0)} ms, moved ${afterFailure.moved} (its copies: ${copies.get('sds0517-d2')}), promoted ${afterFailure.promoted}`);
  t.equal(afterFailure.moved, copies.get('sds0517-d2'), 'only its copies move');
});

/** A 64-SDS pool of four 1–8 TiB devices each, planned and in sync. */
function settledPool(random: () => number): { devices: PlannerDevice[]; pgCount: number; groups: GroupAssignment[] } {
  const devices = makeDevices({ sdsCount: 64, devicesPerSds: 4, faultSetCount: 0, capacityBytes: () => (1 + Math.floor(random() * 8)) * tib });
  const pgCount = pgCountFor(devices.length);
  return { devices, pgCount, groups: planPlacement({ pgCount, devices, previous: null }).groups };
}

function diff(before: GroupAssignment[], after: GroupAssignment[]): { changedGroups: number[]; roleSwaps: number } {
  const changedGroups: number[] = [];
  let roleSwaps = 0;
  after.forEach((group, index) => {
    const old = before[index] as GroupAssignment;
    const same = new Set([old.primaryDevice, old.secondaryDevice]);
    if (!same.has(group.primaryDevice) || !same.has(group.secondaryDevice)) changedGroups.push(index);
    else if (old.primaryDevice !== group.primaryDevice) roleSwaps++;
  });
  return { changedGroups, roleSwaps };
}

t.test('stability: an added SDS takes its fair share and nothing else moves', async (t) => {
  const pool = settledPool(mulberry32(7));
  const added = makeDevices({ sdsCount: 1, devicesPerSds: 4, faultSetCount: 0, capacityBytes: () => 4 * tib, firstSds: 64 });
  const devices = [...pool.devices, ...added];
  const plan = planPlacement({ pgCount: pool.pgCount, devices, previous: pool.groups });
  const ideal = idealCopies(devices, pool.pgCount);
  const fairShare = added.reduce((sum, device) => sum + (ideal.get(device.deviceId) as number), 0);
  t.comment(`moved ${plan.moved} copies; the new SDS's fair share is ${fairShare.toFixed(1)} of ${2 * pool.pgCount}`);
  t.ok(plan.moved >= Math.floor(fairShare) && plan.moved <= Math.ceil(fairShare) + 4, 'moved is the fair share (within rounding)');
  const { changedGroups, roleSwaps } = diff(pool.groups, plan.groups);
  const newIds = new Set(added.map((device) => device.deviceId));
  t.equal(changedGroups.length, plan.moved, 'each changed group moved one copy');
  t.ok(
    changedGroups.every((index) => newIds.has(plan.groups[index]?.secondaryDevice as string)),
    'every moved copy went to the new SDS, as a secondary',
  );
  // Devices that gave up secondaries lead a larger part of what they keep; a few past the band
  // hand a role on. Roles move no data.
  t.comment(`roles swapped in ${roleSwaps} unchanged groups, promotions in changed ones: ${plan.promoted - roleSwaps}`);
  t.ok(roleSwaps <= plan.moved / 20, 'few roles change elsewhere (at most 1 per 20 moved copies)');
  t.same(violations(devices, pool.pgCount, plan.groups, 'balanced'), []);

  const rebalanced = planPlacement({ pgCount: pool.pgCount, devices, previous: plan.groups });
  t.equal(rebalanced.moved, 0, 'once the copies are in sync, re-planning moves nothing');
  t.comment(`re-plan swapped roles in ${rebalanced.promoted} groups so the new devices serve reads`);
  t.same(violations(devices, pool.pgCount, rebalanced.groups, 'settled'), [], 'and primaries are balanced again');
  const again = planPlacement({ pgCount: pool.pgCount, devices, previous: rebalanced.groups });
  t.same([again.moved, again.promoted], [0, 0], 'a settled pool plans to itself');
  t.same(again.groups, rebalanced.groups);
});

for (const state of ['failed', 'removing'] as const) {
  t.test(`stability: a ${state} device's copies move, its groups' survivors lead, nothing else changes`, async (t) => {
    const pool = settledPool(mulberry32(state === 'failed' ? 11 : 13));
    const gone = pool.devices[37] as PlannerDevice;
    const devices = withState(pool.devices, gone.deviceId, state);
    const plan = planPlacement({ pgCount: pool.pgCount, devices, previous: pool.groups });
    const held = pool.groups.filter((group) => group.primaryDevice === gone.deviceId || group.secondaryDevice === gone.deviceId);
    const led = pool.groups.filter((group) => group.primaryDevice === gone.deviceId).length;
    t.comment(`${gone.deviceId} held ${held.length} copies (${led} primaries): moved ${plan.moved}, promoted ${plan.promoted}`);
    t.equal(plan.moved, held.length, 'exactly its copies moved');
    const ledGroups = pool.groups.flatMap((group, index) => (group.primaryDevice === gone.deviceId ? [index] : []));
    t.ok(
      ledGroups.every((index) => plan.groups[index]?.primaryDevice === pool.groups[index]?.secondaryDevice),
      'every group it led is now led by its surviving secondary',
    );
    t.equal(plan.lost, 0);
    const { changedGroups, roleSwaps } = diff(pool.groups, plan.groups);
    t.ok(
      changedGroups.every((index) => [pool.groups[index]?.primaryDevice, pool.groups[index]?.secondaryDevice].includes(gone.deviceId)),
      'only its groups changed',
    );
    // Devices that took several of its copies may pass the primary band and hand a role on.
    t.comment(`roles swapped in ${roleSwaps} other groups`);
    t.ok(roleSwaps <= plan.moved / 10, 'few roles change elsewhere (at most 1 per 10 moved copies)');
    const targets = new Set(changedGroups.map((index) => plan.groups[index]?.secondaryDevice));
    t.comment(`its copies went to ${targets.size} different devices (many-to-many rebuild)`);
    t.ok(targets.size >= held.length / 2, 'spread over many devices');
    t.same(violations(devices, pool.pgCount, plan.groups, 'balanced'), []);
    t.same(transitionViolations(devices, pool.groups, plan.groups), []);
  });
}

t.test('determinism: the same input gives the same plan, whatever the device order', async (t) => {
  const random = mulberry32(99);
  const devices = makeDevices({ sdsCount: 12, devicesPerSds: 3, faultSetCount: 4, capacityBytes: () => (1 + Math.floor(random() * 8)) * tib });
  const pgCount = 2048;
  const first = planPlacement({ pgCount, devices, previous: null });
  t.same(planPlacement({ pgCount, devices, previous: null }), first);
  const shuffled = [...devices].sort((a, b) => (a.capacityBytes - b.capacityBytes) || (a.deviceId < b.deviceId ? 1 : -1));
  t.same(planPlacement({ pgCount, devices: shuffled, previous: null }), first);
  const failed = withState(devices, 'sds0003-d1', 'failed');
  t.same(planPlacement({ pgCount, devices: failed, previous: first.groups }), planPlacement({ pgCount, devices: failed, previous: first.groups }));
});

t.test('degraded: when only one SDS has normal devices, groups run on one copy', async (t) => {
  const devices = makeDevices({ sdsCount: 3, devicesPerSds: 2, faultSetCount: 0, capacityBytes: () => tib });
  const pgCount = 1024;
  const healthy = planPlacement({ pgCount, devices, previous: null });
  const down = devices.map((device) => (device.sdsId === 'sds0000' ? device : { ...device, state: 'failed' as const }));
  const plan = planPlacement({ pgCount, devices: down, previous: healthy.groups });
  t.ok(plan.groups.every((group) => group.secondaryDevice === null && group.primaryDevice.startsWith('sds0000')), 'one copy each, on the survivor');
  const onSurvivor = healthy.groups.filter((group) => group.primaryDevice.startsWith('sds0000') || group.secondaryDevice?.startsWith('sds0000'));
  t.equal(plan.lost, pgCount - onSurvivor.length, 'groups that had no copy on the survivor are reported lost');
  t.equal(plan.moved, plan.lost, 'only lost groups get a (new, empty) copy');
  t.equal(plan.promoted, onSurvivor.filter((group) => !group.primaryDevice.startsWith('sds0000')).length, 'survivors promoted');
  t.same(violations(down, pgCount, plan.groups, 'balanced'), []);

  const back = planPlacement({ pgCount, devices, previous: plan.groups });
  t.equal(back.moved, pgCount, 'when the others return, every group gets its second copy back');
  t.same(violations(devices, pgCount, back.groups, 'safe'), []);
  t.same(transitionViolations(devices, plan.groups, back.groups), []);
  t.equal(tally(back.groups).copies.get('sds0000-d0'), pgCount / 2, "the survivor keeps its copies: each is some group's only in-sync one");
  const rebalanced = planPlacement({ pgCount, devices, previous: back.groups });
  t.comment(`once those are in sync, rebalancing moves ${rebalanced.moved} copies off the survivor`);
  t.same(violations(devices, pgCount, rebalanced.groups, 'balanced'), []);
  t.same(violations(devices, pgCount, planPlacement({ pgCount, devices, previous: rebalanced.groups }).groups, 'settled'), []);
});

t.test('a domain with more than half the capacity holds one copy of every group', async (t) => {
  const sizes = [20, 1, 2, 3];
  const devices = makeDevices({ sdsCount: 4, devicesPerSds: 1, faultSetCount: 0, capacityBytes: () => (sizes.shift() as number) * tib });
  const plan = planPlacement({ pgCount: 1024, devices, previous: null });
  t.equal(tally(plan.groups).copies.get('sds0000-d0'), 1024);
  t.same(violations(devices, 1024, plan.groups, 'settled'), []);

  // Growing one of three equal SDSs past half the pool: groups between the other two must open.
  const three = makeDevices({ sdsCount: 3, devicesPerSds: 1, faultSetCount: 0, capacityBytes: () => tib });
  const before = planPlacement({ pgCount: 1024, devices: three, previous: null });
  const grown = [...three, { deviceId: 'sds0000-d9', sdsId: 'sds0000', faultSetId: null, capacityBytes: 10 * tib, state: 'normal' as const }];
  const after = planPlacement({ pgCount: 1024, devices: grown, previous: before.groups });
  t.same(violations(grown, 1024, after.groups, 'balanced'), []);
  t.same(transitionViolations(grown, before.groups, after.groups), []);
  t.ok(after.groups.every((group) => [group.primaryDevice, group.secondaryDevice].some((device) => device?.startsWith('sds0000'))), 'the grown SDS is in every group');
  const newShare = idealCopies(grown, 1024).get('sds0000-d9') as number;
  t.comment(`moved ${after.moved}; the new device's share, all of which must move, is ${newShare.toFixed(1)}`);
  t.ok(after.moved <= Math.ceil(newShare) + 8, 'moves stay near that minimum');
});

t.test('a device left holding more sole survivors than its new share keeps them', async (t) => {
  // sds0002 fails while two large SDSs join: sds0000 and sds0001 now deserve far fewer copies
  // than the groups in which they hold the only copy; those copies cannot move.
  const three = makeDevices({ sdsCount: 3, devicesPerSds: 1, faultSetCount: 0, capacityBytes: () => tib });
  const before = planPlacement({ pgCount: 1024, devices: three, previous: null });
  const after3 = [...withState(three, 'sds0002-d0', 'failed'), ...makeDevices({ sdsCount: 2, devicesPerSds: 1, faultSetCount: 0, capacityBytes: () => 10 * tib, firstSds: 3 })];
  const plan = planPlacement({ pgCount: 1024, devices: after3, previous: before.groups });
  t.same(transitionViolations(after3, before.groups, plan.groups), [], 'no survivor dropped');
  t.equal(plan.lost, 0);
  const sole = before.groups.filter((group) => [group.primaryDevice, group.secondaryDevice].includes('sds0002-d0')).length;
  t.comment(`${sole} groups kept their only copy; sds0000-d0 holds ${tally(plan.groups).copies.get('sds0000-d0')}, its share ${idealCopies(after3, 1024).get('sds0000-d0')?.toFixed(1)}`);
});

t.test("a removing device keeps and serves the copies no one else has, then drains", async (t) => {
  const devices = makeDevices({ sdsCount: 4, devicesPerSds: 1, faultSetCount: 0, capacityBytes: () => tib });
  const before = planPlacement({ pgCount: 1024, devices, previous: null });
  // sds0000 is being removed when sds0001 dies: groups on those two have one readable copy left.
  const both = withState(withState(devices, 'sds0000-d0', 'removing'), 'sds0001-d0', 'failed');
  const shared = before.groups.flatMap((group, index) => ([group.primaryDevice, group.secondaryDevice].sort().join() === 'sds0000-d0,sds0001-d0' ? [index] : []));
  const plan = planPlacement({ pgCount: 1024, devices: both, previous: before.groups });
  t.ok(shared.length > 0, `${shared.length} groups had copies on just those two`);
  t.equal(plan.lost, 0, 'nothing is lost');
  t.ok(shared.every((index) => plan.groups[index]?.primaryDevice === 'sds0000-d0'), 'the removing device leads them while their new copies are rebuilt');
  t.equal(tally(plan.groups).copies.get('sds0000-d0'), shared.length, 'and holds nothing else');
  t.same(violations(both, 1024, plan.groups, 'safe'), []);
  t.same(transitionViolations(both, before.groups, plan.groups), []);
  const drained = planPlacement({ pgCount: 1024, devices: both, previous: plan.groups });
  t.notOk(tally(drained.groups).copies.has('sds0000-d0'), 'once those are in sync, it drains');
  t.equal(drained.moved, shared.length, 'those groups take their second copy elsewhere');
  t.ok(shared.every((index) => drained.groups[index]?.primaryDevice === plan.groups[index]?.secondaryDevice), 'led by the copy rebuilt meanwhile');
  t.same(violations(both, 1024, drained.groups, 'balanced'), []);
});

t.test('toPlacementGroups: the wire form names the SDS of each copy', async (t) => {
  const devices = makeDevices({ sdsCount: 3, devicesPerSds: 1, faultSetCount: 0, capacityBytes: () => tib });
  const degraded = [{ primaryDevice: 'sds0001-d0', secondaryDevice: null }];
  t.same(toPlacementGroups([{ primaryDevice: 'sds0000-d0', secondaryDevice: 'sds0002-d0' }, ...degraded], devices), [
    { primary: 'sds0000', secondary: 'sds0002', primaryDevice: 'sds0000-d0', secondaryDevice: 'sds0002-d0' },
    { primary: 'sds0001', secondary: null, primaryDevice: 'sds0001-d0' },
  ]);
  t.throws(() => toPlacementGroups([{ primaryDevice: 'nope', secondaryDevice: null }], devices), { code: 'MB_ERR_INVALID_ARGUMENT' });
});

t.test('refusals carry stable codes', async (t) => {
  const good = makeDevices({ sdsCount: 3, devicesPerSds: 2, faultSetCount: 3, capacityBytes: () => tib });
  const plan = (devices: PlannerDevice[], pgCount = 256, previous: GroupAssignment[] | null = null): Plan => planPlacement({ pgCount, devices, previous });
  const cases: Array<[string, () => unknown, string]> = [
    ['one SDS', () => plan(makeDevices({ sdsCount: 1, devicesPerSds: 4, faultSetCount: 0, capacityBytes: () => tib })), 'MB_ERR_PLACEMENT_ONE_DOMAIN'],
    ['one fault set', () => plan(makeDevices({ sdsCount: 5, devicesPerSds: 1, faultSetCount: 1, capacityBytes: () => tib })), 'MB_ERR_PLACEMENT_ONE_DOMAIN'],
    ['fault sets on some devices only', () => plan(good.map((device, index) => (index === 2 ? { ...device, faultSetId: null } : device))), 'MB_ERR_PLACEMENT_FAULT_SETS'],
    ['an SDS in two fault sets', () => plan(good.map((device, index) => (index === 1 ? { ...device, faultSetId: 'fs2' } : device))), 'MB_ERR_PLACEMENT_FAULT_SETS'],
    ['no normal device', () => plan(good.map((device) => ({ ...device, state: 'failed' as const }))), 'MB_ERR_PLACEMENT_NO_DEVICES'],
    ['a duplicate device id', () => plan([...good, good[0] as PlannerDevice]), 'MB_ERR_INVALID_ARGUMENT'],
    ['zero capacity', () => plan(good.map((device, index) => (index === 0 ? { ...device, capacityBytes: 0 } : device))), 'MB_ERR_OUT_OF_RANGE'],
    ['an unknown state', () => plan(good.map((device, index) => (index === 0 ? { ...device, state: 'gone' as 'failed' } : device))), 'MB_ERR_INVALID_ARGUMENT'],
    ['pgCount zero', () => plan(good, 0), 'MB_ERR_OUT_OF_RANGE'],
    ['pgCount above pgCountMax', () => plan(good, pgCountMax + 1), 'MB_ERR_OUT_OF_RANGE'],
    ['previous of another size', () => plan(good, 256, plan(good, 128).groups), 'MB_ERR_INVALID_ARGUMENT'],
  ];
  for (const [what, run, code] of cases) t.throws(run, { code }, what);
});
