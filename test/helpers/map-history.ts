// Seeded random histories of placement maps for the map codec's tests: the real planner
// (src/mdm/placement-planner.ts) places the groups, and each step changes what an MDM changes
// between epochs (an SDS fails or comes back, an SDS joins or leaves, an address moves, a pool
// is added or removed or gets a scrub policy, V-Trees get snapshots, are frozen or dropped),
// plus what the planner only makes in rare states or never, but the map format allows (a lost
// group, a degraded group on one copy, a group with no device ids), so the codec sees every field.

import { mulberry32Uint32 } from '../../src/common/seeded-random.js';
import { planPlacement, toPlacementGroups, type GroupAssignment, type PlannerDevice } from '../../src/mdm/placement-planner.js';
import { type PlacementMap, type PoolPlacement, type VTreeMap } from '../../src/wire/placement.js';

export interface HistoryOptions {
  seed: number;
  sdsCount: number;
  devicesPerSds: number;
  pgCount: number;
}

interface PoolState {
  pgCount: number;
  chunkBytes: number;
  assignment: GroupAssignment[] | null;
  scrub?: PoolPlacement['scrub'];
}

/** A map generator: `next()` gives the map of the next epoch. */
export class MapHistory {
  readonly random: () => number;
  private epoch = 1;
  private readonly devices: PlannerDevice[] = [];
  private readonly addresses = new Map<string, string>();
  private readonly pools = new Map<string, PoolState>();
  private readonly vtrees = new Map<string, VTreeMap>();
  private sdsSerial = 0;
  private idSerial = 0;
  /** Mutations of the wire form the planner never makes: re-applied to every later map. */
  private readonly lost = new Set<string>();
  private readonly deviceless = new Set<string>();
  /** Groups running on one copy (what a pool whose normal devices lie in one domain gets). */
  private readonly degraded = new Set<string>();

  constructor(private readonly options: HistoryOptions) {
    this.random = mulberry32Uint32(options.seed);
    for (let index = 0; index < options.sdsCount; index++) this.addSds();
    this.addPool(options.pgCount);
    this.replan();
  }

  /** A uniform integer in [0, bound). */
  below(bound: number): number {
    return this.random() % bound;
  }

  private newId(): string {
    this.idSerial += 1;
    return (this.idSerial * 0x9e3779b1 + this.options.seed).toString(16).padStart(16, '0').slice(-16);
  }

  private addSds(): void {
    this.sdsSerial += 1;
    const sdsId = this.newId();
    this.addresses.set(sdsId, `10.${this.sdsSerial >> 8}.${this.sdsSerial & 0xff}.1:7072`);
    for (let device = 0; device < this.options.devicesPerSds; device++) {
      this.devices.push({ deviceId: this.newId(), sdsId, faultSetId: null, capacityBytes: 1 << 30, state: 'normal' });
    }
  }

  private addPool(pgCount: number): void {
    this.pools.set(this.newId(), { pgCount, chunkBytes: 1 << (16 + this.below(11)), assignment: null });
  }

  private sdsIds(): string[] {
    return [...new Set(this.devices.map((device) => device.sdsId))];
  }

  /** Plans every pool again (all pools span all devices here), as the MDM does after a change. */
  private replan(): void {
    for (const pool of this.pools.values()) {
      pool.assignment = planPlacement({ pgCount: pool.pgCount, devices: this.devices, previous: pool.assignment }).groups;
    }
  }

  /** Fails every device of one SDS (what a kill -9 of it leads to), and plans. */
  failSds(sdsId?: string): string {
    const normal = this.sdsIds().filter((id) => this.devices.some((device) => device.sdsId === id && device.state === 'normal'));
    const victim = sdsId ?? (normal[this.below(normal.length)] as string);
    for (const device of this.devices) if (device.sdsId === victim) device.state = 'failed';
    this.replan();
    return victim;
  }

  /** One random step; the map of the next epoch. */
  next(): PlacementMap {
    const step = this.below(12);
    const sdsIds = this.sdsIds();
    const failed = sdsIds.filter((id) => this.devices.every((device) => device.sdsId !== id || device.state === 'failed'));
    const normalCount = sdsIds.length - failed.length;
    if (step === 0 && normalCount > 3) {
      this.failSds();
    } else if (step === 1 && failed.length > 0) {
      const back = failed[this.below(failed.length)] as string;
      for (const device of this.devices) if (device.sdsId === back) device.state = 'normal';
      this.replan();
    } else if (step === 2 && failed.length > 0) {
      // A failed SDS holds no copies after the re-plan: it can leave the system.
      const gone = failed[this.below(failed.length)] as string;
      this.devices.splice(0, this.devices.length, ...this.devices.filter((device) => device.sdsId !== gone));
      this.addresses.delete(gone);
    } else if (step === 3) {
      this.addSds();
      this.replan();
    } else if (step === 4) {
      const moved = sdsIds[this.below(sdsIds.length)] as string;
      this.addresses.set(moved, `[fd00::${this.below(0xffff).toString(16)}]:${1024 + this.below(60000)}`);
    } else if (step === 5 && this.pools.size < 3) {
      this.addPool(1 + this.below(this.options.pgCount));
      this.replan();
    } else if (step === 6 && this.pools.size > 1) {
      const poolIds = [...this.pools.keys()];
      this.pools.delete(poolIds[this.below(poolIds.length)] as string);
    } else if (step === 7) {
      const pool = [...this.pools.values()][this.below(this.pools.size)] as PoolState;
      const modes = ['off', 'deviceOnly', 'dataComparison'] as const;
      if (this.below(4) === 0) delete pool.scrub;
      else pool.scrub = { mode: modes[this.below(3)] as 'off', rateKBps: 64 + this.below(1024 * 1024 - 64) };
    } else if (step === 8) {
      this.changeVTrees();
    } else if (step === 9) {
      const poolIds = [...this.pools.keys()];
      const poolId = poolIds[this.below(poolIds.length)] as string;
      const pgCount = (this.pools.get(poolId) as PoolState).pgCount;
      const key = `${poolId}/${this.below(pgCount)}`;
      const kind = this.below(3);
      if (kind === 0) this.lost.add(key);
      else if (kind === 1) this.deviceless.add(key);
      else this.degraded.add(key);
    } else if (step === 10) {
      this.lost.clear();
      this.deviceless.clear();
      this.degraded.clear();
    } else {
      // A re-plan with nothing changed: role swaps once copies are in sync, or nothing.
      this.replan();
    }
    return this.map();
  }

  private changeVTrees(): void {
    const ids = [...this.vtrees.keys()];
    const choice = this.below(4);
    if (choice === 0 || ids.length === 0) {
      const tree: VTreeMap = { generations: { '0': null, '1': 0, '2': 0 }, heads: [{ generation: 1, snapshot: false }, { generation: 2, snapshot: true }] };
      this.vtrees.set(this.newId(), tree);
    } else if (choice === 1) {
      this.vtrees.delete(ids[this.below(ids.length)] as string);
    } else if (choice === 2) {
      const tree = this.vtrees.get(ids[this.below(ids.length)] as string) as VTreeMap;
      if (tree.frozen === true) delete tree.frozen;
      else tree.frozen = true;
    } else {
      // A snapshot of the tree's first head: the head gets two children.
      const tree = this.vtrees.get(ids[this.below(ids.length)] as string) as VTreeMap;
      const head = tree.heads[0] as { generation: number; snapshot: boolean };
      const top = Math.max(...Object.keys(tree.generations).map(Number));
      tree.generations[String(top + 1)] = head.generation;
      tree.generations[String(top + 2)] = head.generation;
      tree.heads[0] = { generation: top + 1, snapshot: head.snapshot };
      tree.heads.push({ generation: top + 2, snapshot: true });
    }
  }

  /** The current state as the MDM's state machine shapes the map (placementMap()). */
  map(): PlacementMap {
    this.epoch += 1;
    const sds: PlacementMap['sds'] = {};
    const pools: PlacementMap['pools'] = {};
    for (const [poolId, pool] of this.pools) {
      if (pool.assignment === null) continue;
      const groups = toPlacementGroups(pool.assignment, this.devices);
      groups.forEach((group, index) => {
        const key = `${poolId}/${index}`;
        if (this.lost.has(key)) group.lost = true;
        if (this.degraded.has(key)) {
          group.secondary = null;
          delete group.secondaryDevice;
        }
        if (this.deviceless.has(key)) {
          delete group.primaryDevice;
          delete group.secondaryDevice;
        }
        sds[group.primary] = { address: this.addresses.get(group.primary) as string };
        if (group.secondary !== null) sds[group.secondary] = { address: this.addresses.get(group.secondary) as string };
      });
      pools[poolId] = { chunkBytes: pool.chunkBytes, ...(pool.scrub !== undefined ? { scrub: { ...pool.scrub } } : {}), groups };
    }
    // Sometimes an SDS that holds nothing is in the map too (the format allows it).
    const idle = [...this.addresses.keys()].find((sdsId) => sds[sdsId] === undefined);
    if (idle !== undefined && this.below(2) === 0) sds[idle] = { address: this.addresses.get(idle) as string };
    const map: PlacementMap = { epoch: this.epoch, sds, pools };
    if (this.vtrees.size > 0 || this.below(8) === 0) map.vtrees = structuredClone(Object.fromEntries(this.vtrees));
    return map;
  }
}
