// The MDM's placement planner: given a storage pool's devices and its current map, it assigns
// every placement group of the pool a primary and a secondary device. It is a pure function of
// its input — no clock, no I/O, no Math.random (a fixed-seed generator spreads the choices) —
// because it runs inside the MDM's state machine, which seeded simulations drive and replay.
//
// A "domain" below is what two copies of a group must not share, an SDS's failure domain
// (failureDomainOf): the fault set where the pool defines fault sets (an SDS lies in one fault
// set, so this implies different SDSs), else the host where the SDS has a host label (the
// shards of one machine, `sds start --shards`), else the SDS.
//
// What a plan guarantees, most important first:
//   1. Safety. A group's two copies are in different domains. New copies go to `normal` devices
//      only. A group's last readable copy is never given up: a `removing` device keeps (and
//      serves) the copies no other device has until the new ones are in sync, and only then
//      drains them. A newly placed copy is never primary (it is empty until rebuilt), so where a
//      group lost its primary the surviving secondary is promoted, not copied.
//   2. Balance. Every group carries about the same data (chunks hash evenly onto groups), so
//      copies in proportion to capacity means the same fill, hence free space, on every device.
//      Each device holds its capacity share of the 2 × pgCount copies in whole copies (rounded
//      per domain, then per device: off by less than two), at least one each; a domain holds at
//      most one copy per group, so a domain of more than half the pool's capacity is capped at
//      one copy of every group and the others share the rest. Safety comes first: a device
//      holding more groups' only copies than its share keeps them until they have partners in
//      sync, and the re-plan after that rebalances. Reads are
//      served by primaries, so each device is primary for half its copies, give or take
//      `primaryImbalanceMax`, wherever a group may swap roles (both copies in sync).
//   3. Stability. Copies stay where they are unless their device must give them up (it failed,
//      is being removed, or holds more than its new share): `moved` is then the least that any
//      plan meeting (2) needs — except when a domain grows to its cap (see openGroupsForDomains).
//   4. Spread. New copies go to devices drawn at random in proportion to the copies they still
//      lack, so each device shares groups with many others, and a failed device is rebuilt
//      from and onto the whole pool at once (ScaleIO's many-to-many rebuild).
//
// Roles after a move. A plan that moves copies makes every moved copy a secondary, so devices
// that just received copies serve no reads yet. Once rebuild/rebalance has filled them, the MDM
// plans again with the same devices: nothing moves, and roles are swapped to rebalance primaries.
// `previous` is taken to describe copies that are in sync; a copy still being rebuilt must not
// be passed as a group's only survivor.
//
// One-domain pools: a pool whose devices (in any state) all lie in one SDS, host or fault set,
// could never hold two copies apart, so the planner refuses it (PlacementError, code
// MB_ERR_PLACEMENT_ONE_DOMAIN); the MDM should refuse such pools at creation (ScaleIO wants three
// SDSs). When failures leave normal devices in only one domain of a pool that has several,
// every group runs degraded on one copy (`secondaryDevice: null`) until the others return; a
// removing device then keeps the groups whose one copy it holds (the MDM should not start a
// removal in a degraded pool).

import { AssertionError, InvalidArgumentError, MeshblockError, OutOfRangeError } from '../common/errors.js';
import { mulberry32Uint32 as mulberry32 } from '../common/seeded-random.js';
import { type PlacementGroup } from '../wire/placement.js';
import { pgCountMax, pgCountMin, pgPerDeviceMin, primaryImbalanceMax } from '../common/limits.js';


if ((pgCountMin & (pgCountMin - 1)) !== 0 || (pgCountMax & (pgCountMax - 1)) !== 0 || pgCountMin > pgCountMax) {
  throw new AssertionError('pgCountMin and pgCountMax must be powers of two, pgCountMin ≤ pgCountMax');
}

export type DeviceState = 'normal' | 'failed' | 'removing';

/** What an SDS's failure domain is made of (an SDS of the model, or a PlannerDevice). */
export interface DomainMember {
  sdsId: string;
  faultSetId: string | null;
  /** The SDS's host label; absent or null: none. */
  host?: string | null;
}

/**
 * An SDS's failure domain, what two copies of a group never share: its fault set if it has one,
 * else `host:<label>` if it has a host label, else its own id. (Ids are hex, so a host key never
 * equals one.) The one place this rule is written: the planner and the state machine use it.
 */
export function failureDomainOf(member: DomainMember): string {
  if (member.faultSetId !== null) return member.faultSetId;
  const host = member.host ?? null;
  return host !== null ? `host:${host}` : member.sdsId;
}

/** What the domains of these members are, for messages: 'fault sets', 'hosts' or 'SDSs'. */
export function failureDomainsNoun(members: readonly DomainMember[]): 'fault sets' | 'hosts' | 'SDSs' {
  if (members.some((member) => member.faultSetId !== null)) return 'fault sets';
  return members.some((member) => (member.host ?? null) !== null) ? 'hosts' : 'SDSs';
}

export interface PlannerDevice extends DomainMember {
  deviceId: string;
  sdsId: string;
  /** Null when the pool defines no fault sets; if one device of the pool has one, all must. */
  faultSetId: string | null;
  /** Its SDS's host label: SDSs of one label are one domain where there are no fault sets. Absent: none. */
  host?: string | null;
  /** Total capacity: copies are balanced by it, so free capacity stays even too. */
  capacityBytes: number;
  /**
   * Only `normal` devices receive copies. A `failed` device's copies are gone; a `removing` one
   * gives its copies up, keeping those that are a group's last readable copy until the next plan.
   */
  state: DeviceState;
}

export interface GroupAssignment {
  primaryDevice: string;
  /** Null while the group runs on one copy (only one domain has normal devices). */
  secondaryDevice: string | null;
}

export interface PlanInput {
  /** The pool's group count, fixed at creation: see pgCountFor. */
  pgCount: number;
  /** Every device of the pool, in any order; ids unique. */
  devices: readonly PlannerDevice[];
  /** The current assignment (pgCount entries, copies in sync), or null for a new pool. */
  previous: readonly GroupAssignment[] | null;
}

export interface Plan {
  groups: GroupAssignment[];
  /** Copies placed on a device that did not hold them before: what rebuild/rebalance copies. */
  moved: number;
  /** Groups whose primary role went to the device that was their secondary; moves no data. */
  promoted: number;
  /** Groups of `previous` none of whose copies survived: their new copies start empty. */
  lost: number;
}

export type PlacementErrorCode = 'MB_ERR_PLACEMENT_NO_DEVICES' | 'MB_ERR_PLACEMENT_ONE_DOMAIN' | 'MB_ERR_PLACEMENT_FAULT_SETS';

/** The pool cannot be placed as configured; `code` says why. */
export class PlacementError extends MeshblockError {
  constructor(code: PlacementErrorCode, message: string) {
    super(code, message);
  }
}

/** The group count for a new pool of `deviceCount` devices (the count it is expected to grow to). */
export function pgCountFor(deviceCount: number): number {
  if (!Number.isSafeInteger(deviceCount) || deviceCount < 1) throw new OutOfRangeError('deviceCount', 'a positive integer', deviceCount);
  let pgCount = pgCountMin;
  while (pgCount < deviceCount * pgPerDeviceMin && pgCount < pgCountMax) pgCount *= 2;
  return pgCount;
}

/** The wire form of a plan's groups (src/wire/placement.ts): the SDS of each copy added. */
export function toPlacementGroups(groups: readonly GroupAssignment[], devices: readonly PlannerDevice[]): PlacementGroup[] {
  const sdsOf = new Map(devices.map((device) => [device.deviceId, device.sdsId]));
  const sds = (deviceId: string): string => {
    const sdsId = sdsOf.get(deviceId);
    if (sdsId === undefined) throw new InvalidArgumentError('groups', `device ${deviceId} is not among the devices`);
    return sdsId;
  };
  return groups.map((group) => {
    const wire: PlacementGroup = { primary: sds(group.primaryDevice), secondary: null, primaryDevice: group.primaryDevice };
    if (group.secondaryDevice !== null) {
      wire.secondary = sds(group.secondaryDevice);
      wire.secondaryDevice = group.secondaryDevice;
    }
    return wire;
  });
}

/**
 * Plans the pool. Steps: keep what `previous` may keep (promoting survivors); set each device's
 * target copy count from capacity; shed copies from devices over target (removing devices shed
 * all but groups' last copies); open groups wherever a domain could otherwise not reach its
 * target; fill every missing copy by a weighted draw; choose roles; check the invariants.
 * O(pgCount × log devices), plus role hand-over paths when primaries are far off balance.
 */
export function planPlacement(input: PlanInput): Plan {
  const pool = describePool(input);
  const copies = keepPrevious(pool, input.previous);
  const targets = settleTargets(pool, copies);
  const keptCopies = new Uint8Array(pool.pgCount);
  for (let group = 0; group < pool.pgCount; group++) keptCopies[group] = copyCount(copies, group);
  openGroupsForDomains(pool, copies, targets, keptCopies);
  fill(pool, copies, targets);
  orient(pool, copies, targets, keptCopies);
  verify(pool, copies, targets);

  const groups: GroupAssignment[] = [];
  let moved = 0;
  let promoted = 0;
  for (let group = 0; group < pool.pgCount; group++) {
    const primaryDevice = pool.ids[copies.primary[group] as number] as string;
    const secondary = copies.secondary[group] as number;
    const secondaryDevice = secondary >= 0 ? (pool.ids[secondary] as string) : null;
    groups.push({ primaryDevice, secondaryDevice });
    const before = input.previous?.[group];
    const heldBefore = (deviceId: string): boolean => before !== undefined && (before.primaryDevice === deviceId || before.secondaryDevice === deviceId);
    if (!heldBefore(primaryDevice)) moved++;
    if (secondaryDevice !== null && !heldBefore(secondaryDevice)) moved++;
    if (before !== undefined && before.primaryDevice !== primaryDevice && before.secondaryDevice === primaryDevice) promoted++;
  }
  return { groups, moved, promoted, lost: copies.lost };
}

// ---------------------------------------------------------------------------------------------
// The pool, validated: readable (normal and removing) devices indexed 0..n-1, sorted by (domain,
// id) so that a domain's devices are contiguous (one range of the weighted draw) and every tie
// breaks by id.

interface Pool {
  pgCount: number;
  /** Two, or one when normal devices lie in one domain only (degraded). */
  copiesPerGroup: 1 | 2;
  /** Normal and removing devices: those whose copies can be read. */
  ids: string[];
  /** Capacity for a normal device; 0 for a removing one, which takes no copies. */
  weight: number[];
  removing: boolean[];
  domainOf: Int32Array;
  /** Domain j's devices are [domainStart[j], domainStart[j + 1]). */
  domainStart: number[];
  indexById: Map<string, number>;
}

const deviceStates: readonly string[] = ['normal', 'failed', 'removing'];

function describePool(input: PlanInput): Pool {
  const { pgCount, devices, previous } = input;
  if (!Number.isSafeInteger(pgCount) || pgCount < 1 || pgCount > pgCountMax) throw new OutOfRangeError('pgCount', `an integer from 1 to ${pgCountMax}`, pgCount);
  if (previous !== null && previous.length !== pgCount) {
    throw new InvalidArgumentError('previous', `has ${previous.length} groups, the pool ${pgCount} (a pool's group count never changes)`);
  }
  const seen = new Set<string>();
  const faultSetOfSds = new Map<string, string | null>();
  const hostOfSds = new Map<string, string | null>();
  const withFaultSet = devices.filter((device) => device.faultSetId !== null).length;
  devices.forEach((device, index) => {
    const field = `devices[${index}]`;
    if (typeof device.deviceId !== 'string' || device.deviceId === '') throw new InvalidArgumentError(`${field}.deviceId`, 'must be a non-empty string');
    if (seen.has(device.deviceId)) throw new InvalidArgumentError(`${field}.deviceId`, `${device.deviceId} appears twice`);
    seen.add(device.deviceId);
    if (typeof device.sdsId !== 'string' || device.sdsId === '') throw new InvalidArgumentError(`${field}.sdsId`, 'must be a non-empty string');
    if (!Number.isSafeInteger(device.capacityBytes) || device.capacityBytes < 1) throw new OutOfRangeError(`${field}.capacityBytes`, 'a positive integer', device.capacityBytes);
    if (!deviceStates.includes(device.state)) throw new InvalidArgumentError(`${field}.state`, `must be one of ${deviceStates.join(', ')}`);
    if (withFaultSet > 0 && device.faultSetId === null) {
      throw new PlacementError('MB_ERR_PLACEMENT_FAULT_SETS', `${field} (${device.deviceId}) has no fault set, but other devices of the pool have one`);
    }
    const faultSetOfItsSds = faultSetOfSds.get(device.sdsId);
    if (faultSetOfItsSds !== undefined && faultSetOfItsSds !== device.faultSetId) {
      throw new PlacementError('MB_ERR_PLACEMENT_FAULT_SETS', `SDS ${device.sdsId} has devices in fault sets ${faultSetOfItsSds} and ${device.faultSetId}`);
    }
    faultSetOfSds.set(device.sdsId, device.faultSetId);
    const host = device.host ?? null;
    if (host !== null && (typeof host !== 'string' || host === '')) throw new InvalidArgumentError(`${field}.host`, 'must be a non-empty string or null');
    const hostOfItsSds = hostOfSds.get(device.sdsId);
    if (hostOfItsSds !== undefined && hostOfItsSds !== host) throw new InvalidArgumentError(`${field}.host`, `SDS ${device.sdsId} has devices on hosts ${String(hostOfItsSds)} and ${String(host)}`);
    hostOfSds.set(device.sdsId, host);
  });
  const domainKey = failureDomainOf;
  const what = failureDomainsNoun(devices);
  if (new Set(devices.map(domainKey)).size < 2) {
    throw new PlacementError('MB_ERR_PLACEMENT_ONE_DOMAIN', `the pool's devices must span at least two ${what}, for two copies apart`);
  }

  // Plain comparison, not localeCompare: the order must not depend on the host's locale.
  const compare = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
  const readable = devices
    .filter((device) => device.state !== 'failed')
    .sort((a, b) => compare(domainKey(a), domainKey(b)) || compare(a.deviceId, b.deviceId));
  const normal = readable.filter((device) => device.state === 'normal');
  if (normal.length === 0) throw new PlacementError('MB_ERR_PLACEMENT_NO_DEVICES', 'the pool has no normal device to hold copies');
  const domainOf = new Int32Array(readable.length);
  const domainStart: number[] = [];
  readable.forEach((device, index) => {
    if (index === 0 || domainKey(device) !== domainKey(readable[index - 1] as PlannerDevice)) domainStart.push(index);
    domainOf[index] = domainStart.length - 1;
  });
  domainStart.push(readable.length);
  return {
    pgCount,
    copiesPerGroup: new Set(normal.map(domainKey)).size >= 2 ? 2 : 1,
    ids: readable.map((device) => device.deviceId),
    weight: readable.map((device) => (device.state === 'normal' ? device.capacityBytes : 0)),
    removing: readable.map((device) => device.state === 'removing'),
    domainOf,
    domainStart,
    indexById: new Map(readable.map((device, index) => [device.deviceId, index])),
  };
}

// ---------------------------------------------------------------------------------------------
// The assignment being built: device indexes per group, -1 for no copy. Whenever a group holds
// one copy, it is in `primary`.

interface Copies {
  primary: Int32Array;
  secondary: Int32Array;
  lost: number;
}

function copyCount(copies: Copies, group: number): number {
  return ((copies.primary[group] as number) >= 0 ? 1 : 0) + ((copies.secondary[group] as number) >= 0 ? 1 : 0);
}

/**
 * Keeps the copies of `previous` on readable devices that are still in different domains. (Those
 * on removing devices are kept for now: shedding drains all but the groups' last ones.)
 */
function keepPrevious(pool: Pool, previous: readonly GroupAssignment[] | null): Copies {
  const copies: Copies = { primary: new Int32Array(pool.pgCount).fill(-1), secondary: new Int32Array(pool.pgCount).fill(-1), lost: 0 };
  if (previous === null) return copies;
  const indexOf = (deviceId: string | null): number => (deviceId === null ? -1 : (pool.indexById.get(deviceId) ?? -1));
  for (let group = 0; group < pool.pgCount; group++) {
    const before = previous[group] as GroupAssignment;
    let primary = indexOf(before.primaryDevice);
    let secondary = indexOf(before.secondaryDevice);
    // Two copies in one domain (fault sets were introduced, say): the secondary must go.
    if (primary >= 0 && secondary >= 0 && pool.domainOf[primary] === pool.domainOf[secondary]) secondary = -1;
    // The primary is gone: the in-sync secondary serves (promote, don't copy).
    if (primary < 0) [primary, secondary] = [secondary, -1];
    if (primary < 0) copies.lost++;
    copies.primary[group] = primary;
    copies.secondary[group] = secondary;
  }
  return copies;
}

// ---------------------------------------------------------------------------------------------
// Targets: how many copies each device should hold.

/**
 * Sets every device's target and sheds copies from devices above theirs. A group's last copy
 * is never shed, so a device may be unable to come down to its target; it then keeps what it
 * has (its minimum is raised) and the targets are set again. Each round raises a minimum, so
 * the loop ends; in practice the first round settles.
 */
function settleTargets(pool: Pool, copies: Copies): Int32Array {
  const deviceCount = pool.ids.length;
  const mins = new Int32Array(deviceCount);
  const sole = new Int32Array(deviceCount);
  for (let round = 0; round <= pool.copiesPerGroup * pool.pgCount; round++) {
    const held = new Int32Array(deviceCount);
    for (let group = 0; group < pool.pgCount; group++) {
      const primary = copies.primary[group] as number;
      const secondary = copies.secondary[group] as number;
      if (primary >= 0) held[primary]++;
      if (secondary >= 0) held[secondary]++;
      else if (primary >= 0) sole[primary]++;
    }
    // A sole survivor cannot move (there is nothing to copy it from): its device keeps it.
    for (let device = 0; device < deviceCount; device++) mins[device] = Math.max(mins[device] as number, sole[device] as number);
    sole.fill(0);
    const targets = computeTargets(pool, mins, held);
    const stuck = shed(pool, copies, targets, held);
    if (stuck.length === 0) return targets;
    for (const device of stuck) mins[device] = held[device] as number;
  }
  throw new AssertionError('placement targets did not settle');
}

/**
 * Apportions the pool's copies (copiesPerGroup × pgCount) to domains by capacity, each domain
 * at most one copy per group, then each domain's copies to its devices by capacity. Every
 * normal device gets at least one copy when the group count allows, every device at least
 * `mins`, and a removing device no more.
 */
function computeTargets(pool: Pool, mins: Int32Array, held: Int32Array): Int32Array {
  const domainCount = pool.domainStart.length - 1;
  const copyTotal = pool.copiesPerGroup * pool.pgCount;
  const range = (domain: number): number[] => [pool.domainStart[domain] as number, pool.domainStart[domain + 1] as number];
  const sumOver = (values: ArrayLike<number>, domain: number): number => {
    const [start, end] = range(domain);
    let sum = 0;
    for (let device = start; device < end; device++) sum += values[device] as number;
    return sum;
  };
  let deviceMins = Int32Array.from(mins, (min, device) => (pool.removing[device] ? min : Math.max(min, 1)));
  const fits = (): boolean =>
    deviceMins.reduce((sum, min) => sum + min, 0) <= copyTotal && Array.from({ length: domainCount }, (_, domain) => sumOver(deviceMins, domain)).every((min) => min <= pool.pgCount);
  if (!fits()) deviceMins = Int32Array.from(mins);
  if (!fits()) throw new AssertionError('device minimums exceed the pool');

  const domains = Array.from({ length: domainCount }, (_, domain) => domain);
  const domainWeights = domains.map((domain) => sumOver(pool.weight, domain));
  const domainMins = domains.map((domain) => sumOver(deviceMins, domain));
  const domainTargets = apportion(
    copyTotal,
    domainWeights,
    domainMins,
    domains.map((domain) => ((domainWeights[domain] as number) > 0 ? pool.pgCount : (domainMins[domain] as number))),
    domains.map((domain) => sumOver(held, domain)),
  );
  const targets = new Int32Array(pool.ids.length);
  for (const domain of domains) {
    const [start, end] = range(domain);
    const slice = <T>(values: ArrayLike<T>): T[] => Array.from({ length: end - start }, (_, offset) => values[start + offset] as T);
    const domainTarget = domainTargets[domain] as number;
    const maxes = slice(pool.removing).map((removing, offset) => (removing ? (deviceMins[start + offset] as number) : domainTarget));
    const split = apportion(domainTarget, slice(pool.weight), slice(deviceMins), maxes, slice(held));
    split.forEach((target, offset) => (targets[start + offset] = target));
  }
  return targets;
}

/**
 * Splits `total` into whole numbers in proportion to `weights`, entry i within [mins[i], maxes[i]].
 * Water-filling: bisection finds the factor λ with Σ clamp(λ × weight) = total (the sum grows
 * with λ), so an entry held at a bound passes its share on to the others. The fractions left
 * over go one each to the largest; entries already holding more than their floor (`current`)
 * come first, so that a re-plan rounds the way the map already does instead of moving a copy
 * over a rounding. Remaining ties go to the lower index (the lower id).
 */
function apportion(total: number, weights: number[], mins: number[], maxes: number[], current: number[]): number[] {
  // All weights zero (a domain of removing devices): every entry stays at its minimum.
  const weightSum = Math.max(1, weights.reduce((sum, weight) => sum + weight, 0));
  const share = (index: number, factor: number): number =>
    Math.min(maxes[index] as number, Math.max(mins[index] as number, (factor * (weights[index] as number)) / weightSum));
  const filled = (factor: number): number => weights.reduce((sum, _, index) => sum + share(index, factor), 0);
  let low = 0;
  let high = Math.max(total, 1);
  for (let doubling = 0; doubling < 1100 && filled(high) < total; doubling++) high *= 2;
  for (let halving = 0; halving < 100; halving++) {
    const middle = (low + high) / 2;
    if (filled(middle) < total) low = middle;
    else high = middle;
  }
  const counts = weights.map((_, index) => Math.floor(share(index, high)));
  const fraction = counts.map((count, index) => share(index, high) - count);
  let rest = total - counts.reduce((sum, count) => sum + count, 0);
  const fractional = (index: number): number => ((fraction[index] as number) > 1e-9 ? 0 : 1);
  const holding = (index: number): number => ((current[index] as number) > (counts[index] as number) ? 0 : 1);
  const order = counts
    .map((_, index) => index)
    .sort((a, b) => fractional(a) - fractional(b) || holding(a) - holding(b) || (fraction[b] as number) - (fraction[a] as number) || a - b);
  for (const index of order) {
    if (rest <= 0) break;
    if ((counts[index] as number) < (maxes[index] as number)) {
      counts[index] = (counts[index] as number) + 1;
      rest--;
    }
  }
  if (rest !== 0) throw new AssertionError(`cannot apportion ${total} within the bounds`);
  return counts;
}

/**
 * Takes copies away from devices above target, from groups that keep their other copy: first
 * where the device is secondary (no role changes), and first where the other copy's device is
 * not shedding itself. A shed leaves the partner's copy alone in its group, where the partner can
 * no longer shed it; a partner that must shed too is only so used while it has groups to spare.
 * Removing devices go first in every pass, so that no other device sheds a copy whose only
 * partner is on a removing device. Returns the devices still above target.
 */
function shed(pool: Pool, copies: Copies, targets: Int32Array, held: Int32Array): number[] {
  const excess = Int32Array.from(held, (count, device) => count - (targets[device] as number));
  const spare = Int32Array.from(excess, (count) => -count);
  for (let group = 0; group < pool.pgCount; group++) {
    const secondary = copies.secondary[group] as number;
    if (secondary < 0) continue;
    spare[copies.primary[group] as number]++;
    spare[secondary]++;
  }
  const byDevice = groupsByDevice(pool, copies);
  // Passes, most careful first; the last one takes whatever is left.
  const passes = [
    { role: 'secondary', partner: 'keeps' },
    { role: 'secondary', partner: 'spares' },
    { role: 'primary', partner: 'keeps' },
    { role: 'primary', partner: 'spares' },
    { role: 'either', partner: 'any' },
  ] as const;
  const order = Array.from(excess.keys()).sort((a, b) => Number(pool.removing[b]) - Number(pool.removing[a]) || a - b);
  for (const pass of passes) {
    for (const device of order) {
      for (let at = byDevice.offsets[device] as number; at < (byDevice.offsets[device + 1] as number) && (excess[device] as number) > 0; at++) {
        const group = byDevice.groups[at] as number;
        const primary = copies.primary[group] as number;
        const secondary = copies.secondary[group] as number;
        if (primary < 0 || secondary < 0) continue;
        if ((pass.role === 'secondary' && secondary !== device) || (pass.role === 'primary' && primary !== device)) continue;
        const partner = primary === device ? secondary : primary;
        const partnerSheds = (excess[partner] as number) > 0;
        if (partnerSheds && pass.partner === 'keeps') continue;
        if (partnerSheds && pass.partner === 'spares' && (spare[partner] as number) <= 0) continue;
        if (partnerSheds) spare[partner]--;
        copies.primary[group] = partner;
        copies.secondary[group] = -1;
        excess[device]--;
        held[device]--;
      }
    }
  }
  return Array.from(excess.keys()).filter((device) => (excess[device] as number) > 0);
}

/** The groups each device holds a copy of, as one array sliced by offsets (CSR). */
function groupsByDevice(pool: Pool, copies: Copies): { offsets: Int32Array; groups: Int32Array } {
  const offsets = new Int32Array(pool.ids.length + 1);
  for (const slot of [copies.primary, copies.secondary]) for (const device of slot) if (device >= 0) offsets[device + 1]++;
  for (let device = 0; device < pool.ids.length; device++) offsets[device + 1] += offsets[device] as number;
  const next = offsets.slice(0, pool.ids.length);
  const groups = new Int32Array(offsets[pool.ids.length] as number);
  for (let group = 0; group < pool.pgCount; group++) {
    for (const slot of [copies.primary, copies.secondary]) {
      const device = slot[group] as number;
      if (device >= 0) groups[next[device]++] = group;
    }
  }
  return { offsets, groups };
}

// ---------------------------------------------------------------------------------------------
// Filling the missing copies.
//
// Domain j still needs need[j] copies, each in a different group that has none in j. Groups
// lack one or two copies; one that holds a copy excludes that copy's domain. Hall's condition
// for such a fill reduces to one inequality per domain: need[j] ≤ open − excluding[j], where
// `open` counts groups lacking copies and excluding[j] those among them that hold a copy in j
// (for two or more domains together every open group can take all its missing copies). So:
//   - before filling, wherever a domain's inequality fails, a full group without that domain
//     gives up its secondary (openGroupsForDomains; needed only when a domain nears its cap);
//   - while filling, completing a group lowers `open` by one, and a domain whose inequality is
//     tight (excluding + need = open) and that the group may take must get that copy. At most
//     one such domain can exist per group. Placing the first copy of an empty group loosens
//     nothing, so it is free.

function domainNeeds(pool: Pool, copies: Copies, targets: Int32Array): { need: Int32Array; excluding: Int32Array; open: number } {
  const domainCount = pool.domainStart.length - 1;
  const need = new Int32Array(domainCount);
  const excluding = new Int32Array(domainCount);
  const held = new Int32Array(pool.ids.length);
  let open = 0;
  for (let group = 0; group < pool.pgCount; group++) {
    const primary = copies.primary[group] as number;
    const secondary = copies.secondary[group] as number;
    if (primary >= 0) held[primary]++;
    if (secondary >= 0) held[secondary]++;
    if (copyCount(copies, group) < pool.copiesPerGroup) {
      open++;
      if (primary >= 0) excluding[pool.domainOf[primary] as number]++;
    }
  }
  for (let device = 0; device < pool.ids.length; device++) need[pool.domainOf[device] as number] += (targets[device] as number) - (held[device] as number);
  return { need, excluding, open };
}

/**
 * Opens full groups (the secondary gives way) until every domain can reach its target. Each
 * opened group costs a move beyond the minimum; it happens only when a domain grows toward
 * holding a copy of every group while full groups lack it.
 */
function openGroupsForDomains(pool: Pool, copies: Copies, targets: Int32Array, keptCopies: Uint8Array): void {
  if (pool.copiesPerGroup === 1) return; // one domain: no exclusions
  const needs = domainNeeds(pool, copies, targets);
  const { need, excluding } = needs;
  let open = needs.open;
  const short = (domain: number): number => (need[domain] as number) - (open - (excluding[domain] as number));
  let shortDomains = Array.from(need.keys()).filter((domain) => short(domain) > 0);
  for (let group = 0; group < pool.pgCount && shortDomains.length > 0; group++) {
    const primary = copies.primary[group] as number;
    const secondary = copies.secondary[group] as number;
    if (primary < 0 || secondary < 0) continue;
    const held = [pool.domainOf[primary], pool.domainOf[secondary]];
    if (!shortDomains.some((domain) => !held.includes(domain))) continue;
    copies.secondary[group] = -1;
    keptCopies[group] = 1;
    need[pool.domainOf[secondary] as number]++;
    excluding[pool.domainOf[primary] as number]++;
    open++;
    shortDomains = shortDomains.filter((domain) => short(domain) > 0);
  }
  if (shortDomains.length > 0) throw new AssertionError('no full group left to open for a domain');
}

function fill(pool: Pool, copies: Copies, targets: Int32Array): void {
  const needs = domainNeeds(pool, copies, targets);
  const { need, excluding } = needs;
  let open = needs.open;
  const lacking = Int32Array.from(targets);
  for (const slot of [copies.primary, copies.secondary]) for (const device of slot) if (device >= 0) lacking[device]--;
  const draw = new WeightedDraw(lacking);
  const tight = new DomainHeap(Int32Array.from(need, (count, domain) => count + (excluding[domain] as number)));
  const random = mulberry32(0x6d657368 ^ pool.pgCount);

  for (let group = 0; group < pool.pgCount; group++) {
    for (let copy = copyCount(copies, group); copy < pool.copiesPerGroup; copy++) {
      const primary = copies.primary[group] as number;
      const excluded = primary >= 0 ? (pool.domainOf[primary] as number) : -1;
      const completes = copy === pool.copiesPerGroup - 1;
      const forced = completes ? tight.find(open, (domain) => domain !== excluded && (need[domain] as number) > 0) : -1;
      const start = (domain: number): number => pool.domainStart[domain] as number;
      let device: number;
      if (forced >= 0) device = draw.within(start(forced), start(forced + 1), random);
      else if (excluded >= 0) device = draw.outside(start(excluded), start(excluded + 1), random);
      else device = draw.any(random);
      const domain = pool.domainOf[device] as number;
      if (primary < 0) copies.primary[group] = device;
      else copies.secondary[group] = device;
      draw.take(device);
      need[domain]--;
      if (completes) {
        open--;
        if (excluded >= 0) excluding[excluded]--;
      } else {
        excluding[domain]++;
      }
      tight.lower(domain, (need[domain] as number) + (excluding[domain] as number));
      if (excluded >= 0) tight.lower(excluded, (need[excluded] as number) + (excluding[excluded] as number));
    }
  }
}

/** Draws a device with probability proportional to the copies it lacks (a Fenwick tree). */
class WeightedDraw {
  private readonly tree: Float64Array;
  private readonly size: number;

  constructor(weights: Int32Array) {
    this.size = weights.length;
    this.tree = new Float64Array(this.size + 1);
    for (let index = 0; index < this.size; index++) this.add(index, weights[index] as number);
  }

  take(index: number): void {
    this.add(index, -1);
  }

  any(random: () => number): number {
    return this.at(this.unit(this.prefix(this.size), random));
  }

  within(start: number, end: number, random: () => number): number {
    return this.at(this.prefix(start) + this.unit(this.prefix(end) - this.prefix(start), random));
  }

  outside(start: number, end: number, random: () => number): number {
    const excluded = this.prefix(end) - this.prefix(start);
    const unit = this.unit(this.prefix(this.size) - excluded, random);
    return this.at(unit < this.prefix(start) ? unit : unit + excluded);
  }

  private unit(total: number, random: () => number): number {
    if (total < 1) throw new AssertionError('no device lacks a copy where one is needed');
    return Math.floor((random() / 2 ** 32) * total);
  }

  private add(index: number, delta: number): void {
    for (let node = index + 1; node <= this.size; node += node & -node) this.tree[node] += delta;
  }

  /** The sum of weights [0, end). */
  private prefix(end: number): number {
    let sum = 0;
    for (let node = end; node > 0; node -= node & -node) sum += this.tree[node] as number;
    return sum;
  }

  /** The index whose weight covers unit `unit` (0 ≤ unit < total). */
  private at(unit: number): number {
    let node = 0;
    let rest = unit;
    for (let step = 2 ** Math.floor(Math.log2(Math.max(this.size, 1))); step > 0; step = Math.floor(step / 2)) {
      if (node + step <= this.size && (this.tree[node + step] as number) <= rest) {
        node += step;
        rest -= this.tree[node] as number;
      }
    }
    return node;
  }
}

/** A max-heap of domains by need + excluding, to find the domains whose inequality is tight. */
class DomainHeap {
  private readonly heap: Int32Array;
  private readonly position: Int32Array;

  constructor(private readonly keys: Int32Array) {
    this.heap = Int32Array.from(keys.keys());
    this.position = Int32Array.from(keys.keys());
    for (let at = (keys.length >> 1) - 1; at >= 0; at--) this.down(at);
  }

  /** Keys only ever go down (see fill): a placement lowers need, or trades need for excluding. */
  lower(domain: number, key: number): void {
    if (key > (this.keys[domain] as number)) throw new AssertionError(`domain ${domain}'s key rose`);
    this.keys[domain] = key;
    this.down(this.position[domain] as number);
  }

  /** A domain with key `open` that passes `accept`, or -1. Keys never exceed `open`. */
  find(open: number, accept: (domain: number) => boolean): number {
    const stack = [0];
    for (let at = stack.pop(); at !== undefined; at = stack.pop()) {
      if (at >= this.heap.length) continue;
      const domain = this.heap[at] as number;
      if ((this.keys[domain] as number) < open) continue;
      if (accept(domain)) return domain;
      stack.push(2 * at + 1, 2 * at + 2);
    }
    return -1;
  }

  private down(at: number): void {
    for (;;) {
      let top = at;
      for (const child of [2 * at + 1, 2 * at + 2]) if (child < this.heap.length && this.before(child, top)) top = child;
      if (top === at) return;
      this.swap(at, top);
      at = top;
    }
  }

  private before(a: number, b: number): boolean {
    const keyA = this.keys[this.heap[a] as number] as number;
    const keyB = this.keys[this.heap[b] as number] as number;
    return keyA > keyB || (keyA === keyB && (this.heap[a] as number) < (this.heap[b] as number));
  }

  private swap(a: number, b: number): void {
    const domainA = this.heap[a] as number;
    const domainB = this.heap[b] as number;
    this.heap[a] = domainB;
    this.heap[b] = domainA;
    this.position[domainB] = a;
    this.position[domainA] = b;
  }
}


// ---------------------------------------------------------------------------------------------
// Roles. A group with one kept and one new copy is fixed: the kept copy is primary. A group
// whose copies are both kept (in sync) or both new (empty) may take either order. Work in
// doubled units, imbalance[d] = 2 × primaries − copies, so that a device "within k primaries
// of half its copies" has |imbalance| ≤ 2k.
//
// Hysteresis: a device is only repaired once it strays past primaryImbalanceMax, and then it is
// brought back within one (a new pool starts within one). So the promotions of a failure, +1 on
// a few devices, swap no roles elsewhere, and a settled pool plans to itself.

function orient(pool: Pool, copies: Copies, targets: Int32Array, keptCopies: Uint8Array): void {
  const imbalance = Int32Array.from(targets, (target) => -target);
  const free = (group: number): boolean => (copies.secondary[group] as number) >= 0 && keptCopies[group] !== 1;
  for (let group = 0; group < pool.pgCount; group++) {
    if (free(group) && keptCopies[group] === 0) continue;
    imbalance[copies.primary[group] as number] += 2;
  }
  // New groups: the device further below half its copies leads.
  for (let group = 0; group < pool.pgCount; group++) {
    if (!free(group) || keptCopies[group] !== 0) continue;
    const primary = copies.primary[group] as number;
    const secondary = copies.secondary[group] as number;
    if ((imbalance[secondary] as number) < (imbalance[primary] as number)) swapRoles(copies, group);
    imbalance[copies.primary[group] as number] += 2;
  }
  // A new pool has no roles to keep: every device is settled within one.
  const settled = 2;
  const trigger = keptCopies.some((kept) => kept > 0) ? 2 * primaryImbalanceMax : settled;
  const paths = new RolePaths(pool, copies, free);
  for (let device = 0; device < pool.ids.length; device++) {
    for (const sign of [1, -1]) {
      if (sign * (imbalance[device] as number) <= trigger) continue;
      // Hand a role along a path of free groups to a device that ends within one of half.
      const accepts = (other: number): boolean => sign * (imbalance[other] as number) + 2 <= settled;
      while (sign * (imbalance[device] as number) > settled) {
        const sink = paths.handOver(device, sign > 0, accepts);
        if (sink < 0) break;
        imbalance[device] -= 2 * sign;
        imbalance[sink] += 2 * sign;
      }
    }
  }
}

/**
 * Role hand-over along paths (breadth-first): giving up a primary role (`give`), device d swaps
 * roles in a free group it leads with partner e; if e may not take one more, e passes one of
 * its own on, and so on. Every device on the path but the two ends keeps its count.
 */
class RolePaths {
  private readonly byDevice: { offsets: Int32Array; groups: Int32Array };
  private readonly seen: Int32Array;
  private readonly via: Int32Array;
  private readonly from: Int32Array;
  private readonly queue: Int32Array;
  private search = 0;

  constructor(
    pool: Pool,
    private readonly copies: Copies,
    private readonly free: (group: number) => boolean,
  ) {
    this.byDevice = groupsByDevice(pool, copies);
    this.seen = new Int32Array(pool.ids.length);
    this.via = new Int32Array(pool.ids.length);
    this.from = new Int32Array(pool.ids.length);
    this.queue = new Int32Array(pool.ids.length);
  }

  /** Swaps roles along a shortest path from `source` to a device that `accepts`; returns it, or -1. */
  handOver(source: number, give: boolean, accepts: (device: number) => boolean): number {
    this.search++;
    this.seen[source] = this.search;
    let head = 0;
    let tail = 0;
    this.queue[tail++] = source;
    while (head < tail) {
      const device = this.queue[head++] as number;
      for (let at = this.byDevice.offsets[device] as number; at < (this.byDevice.offsets[device + 1] as number); at++) {
        const group = this.byDevice.groups[at] as number;
        if (!this.free(group)) continue;
        const leads = this.copies.primary[group] === device;
        if (leads !== give) continue;
        const partner = (leads ? this.copies.secondary[group] : this.copies.primary[group]) as number;
        if (this.seen[partner] === this.search) continue;
        this.seen[partner] = this.search;
        this.via[partner] = group;
        this.from[partner] = device;
        if (accepts(partner)) {
          for (let node = partner; node !== source; node = this.from[node] as number) swapRoles(this.copies, this.via[node] as number);
          return partner;
        }
        this.queue[tail++] = partner;
      }
    }
    return -1;
  }
}

function swapRoles(copies: Copies, group: number): void {
  const primary = copies.primary[group] as number;
  copies.primary[group] = copies.secondary[group] as number;
  copies.secondary[group] = primary;
}

/** Our own invariants, checked on every plan (O(pgCount)): a broken one is a bug. */
function verify(pool: Pool, copies: Copies, targets: Int32Array): void {
  const held = new Int32Array(pool.ids.length);
  for (let group = 0; group < pool.pgCount; group++) {
    const primary = copies.primary[group] as number;
    const secondary = copies.secondary[group] as number;
    if (primary < 0 || (pool.copiesPerGroup === 2) !== secondary >= 0) throw new AssertionError(`group ${group} has the wrong number of copies`);
    if (secondary >= 0 && pool.domainOf[primary] === pool.domainOf[secondary]) throw new AssertionError(`group ${group} has both copies in one domain`);
    held[primary]++;
    if (secondary >= 0) held[secondary]++;
  }
  held.forEach((count, device) => {
    if (count !== targets[device]) throw new AssertionError(`device ${pool.ids[device]} holds ${count} copies, its target is ${targets[device]}`);
  });
}
