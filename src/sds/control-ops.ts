// The SDS's control operations, the MDM's side of it (service.ts checks the sender's role
// before it hands an order here): installing a placement map, as JSON or as a binary
// MapUpdate from the map held (map-codec.ts), and later freeing the chunks it makes stale;
// thick reservations, adding a device, and the stats the MDM reads
// in every heartbeat. None of these are on the data path; each change that must outlive
// the process is written to the state file (state.ts) before the order is answered.

import { parseJsonObject, parseJsonPayload } from '../wire/json-payload.js';
import { sdsFreezeWarnMs, staleCollectDelayMs } from '../common/limits.js';
import type { Logger } from 'pino';
import { AssertionError, InvalidArgumentError, MeshblockError } from '../common/errors.js';
import type { AddDeviceOrder, DeviceRefusal, MapRefusal, RegisteredDevice } from '../wire/mdm-ops.js';
import { MapCodecError, applyUpdateHeld, decodeMapUpdate, mapDigest, type MapHeld } from '../wire/map-codec.js';
import type { WireReply } from '../wire/peer.js';
import { parsePlacementMap, placementGroupOf, type PlacementMap } from '../wire/placement.js';
import { type SdsMemory, SdsStatus, decodeReserve, encodeEpoch, type RebuildProgress, type ScrubProgress, type SdsStats } from '../wire/sds-ops.js';
import { keyName, type ChunkStore } from './chunk-store.js';
import type { RangeLocks } from './range-locks.js';
import { ReplyError } from './reply-error.js';
import { saveState, type SdsState } from './state.js';


export interface SdsIdentity {
  clusterId: string;
  sdsId: string;
  name: string;
}

/** What the control operations need of the SDS they run in. */
export interface ControlHost {
  readonly identity: SdsIdentity;
  readonly store: ChunkStore;
  /** Loaded at start; changed here and saved whole (state.ts). */
  readonly state: SdsState;
  readonly dataDir: string;
  readonly log: Logger;
  /** The chunk range locks client writes take: freeing a stale chunk holds the whole chunk's. */
  readonly locks: RangeLocks;
  isClosing(): boolean;
  /** Registers background work, so that a clean stop waits for it. */
  track<T>(work: Promise<T>): Promise<T>;
  /** A new map is about to be installed (the service drops connections to SDSs not in it). */
  onMapAccepted(map: PlacementMap): void;
  rebuildProgress(): RebuildProgress[];
  /** Frees the keys no head reaches any more (generation-gc.ts), after the stale groups. */
  collectGenerations(epoch: number): Promise<void>;
  /** Bytes only snapshots reach, by device id (generation-gc.ts). */
  snapshotBytesByDevice(): ReadonlyMap<string, number>;
  /** The background scrub's progress (scrub.ts). */
  scrubProgress(): ScrubProgress;
  /** What the client connections hold of the memory budget (sds start --memory-budget). */
  memoryProgress(): SdsMemory;
}

export class SdsControl {
  private current: PlacementMap | null;
  /** mapDigest(current), once known (MapHeld). */
  private currentDigest: number | null = null;
  /** The map before the current one (a mirror write may still carry its epoch). */
  private previous: PlacementMap | null = null;
  private collectTimer: NodeJS.Timeout | null = null;
  /**
   * When each tree the map freezes was first seen frozen (by this process, in a run of maps
   * that all freeze it). A freeze holds until a map lifts it, however long: only the Master
   * knows whether the group was committed, and a write into a committed snapshot's
   * generation would change the snapshot (docs/snapshots.md). A long one is logged once.
   */
  private readonly frozenSinceMs = new Map<string, number>();
  private readonly freezesLogged = new Set<string>();

  constructor(private readonly host: ControlHost) {
    this.current = host.state.map;
    // A map kept across a restart: its freezes count from now (nothing was in flight).
    this.noteFreezes(this.current);
  }

  /** The placement map in force (null before the first one). */
  get map(): PlacementMap | null {
    return this.current;
  }

  get epoch(): number {
    return this.current?.epoch ?? 0;
  }

  onSetMap(payload: Buffer): void {
    this.install(parsePlacementMap(parseJsonPayload(payload, 'map')), null);
  }

  /**
   * SdsOp.SetMapBinary: a MapUpdate from what this SDS holds. Refused whole (nothing
   * installed, the map held unchanged): a corrupt update or one for another base is answered
   * Failed with a MapRefusal naming what this SDS holds, so the MDM sends what it needs from
   * there; an older map is StaleEpoch, as SetMap. Returns what the SDS holds now.
   */
  onSetMapBinary(payload: Buffer): MapHeld | null {
    const current = this.current;
    let next;
    let update;
    try {
      update = decodeMapUpdate(payload);
      if (update.kind === 'current') return this.held();
      const held = current === null ? null : { map: current, digest: (this.held() as MapHeld).digest };
      next = applyUpdateHeld(held, update);
    } catch (err) {
      if (!(err instanceof MapCodecError)) throw err;
      const refusal: MapRefusal = { code: err.code as MapRefusal['code'], message: err.message, held: this.held() };
      this.host.log.warn({ err, held: refusal.held }, 'binary map update refused; the map held stays');
      throw new ReplyError(SdsStatus.Failed, err.message, Buffer.from(JSON.stringify(refusal)));
    }
    if (next.map !== current) this.install(next.map, next.digest);
    this.host.log.debug({ update: update.kind, epoch: next.map.epoch, bytes: payload.length }, 'binary map update applied');
    return this.held();
  }

  /** What this SDS holds, as it tells the MDM (registration, SetMapBinary's reply); null without a map. */
  held(): MapHeld | null {
    if (this.current === null) return null;
    // Computed once per map installed from JSON (or kept from the state file), never per update.
    this.currentDigest ??= mapDigest(this.current);
    return { epoch: this.current.epoch, digest: this.currentDigest };
  }

  /** Installs a map (its digest when known: null, computed when asked). */
  private install(map: PlacementMap, digest: number | null): void {
    if (map.epoch < this.epoch) throw new ReplyError(SdsStatus.StaleEpoch, `map epoch ${map.epoch} is older than this SDS's ${this.epoch}`, encodeEpoch(this.epoch));
    const { store, identity } = this.host;
    for (const [poolId, pool] of Object.entries(map.pools)) {
      const holds = pool.groups.some((group) => group.primary === identity.sdsId || group.secondary === identity.sdsId);
      if (holds && pool.chunkBytes !== store.chunkBytes) {
        throw new InvalidArgumentError(`map.pools.${poolId}.chunkBytes`, `${pool.chunkBytes} differs from this SDS's ${store.chunkBytes}-byte chunks`);
      }
    }
    this.host.onMapAccepted(map);
    if (map.epoch > this.epoch) this.previous = this.current;
    this.current = map;
    this.currentDigest = digest;
    this.noteFreezes(map);
    this.host.state.map = map;
    this.persist();
    this.scheduleCollect();
    this.host.log.info({ epoch: map.epoch, pools: Object.keys(map.pools).length }, 'placement map installed');
  }

  /** The map before the current one, or null. */
  get previousMap(): PlacementMap | null {
    return this.previous;
  }

  /** The map freezes the tree. */
  isFrozen(vtreeId: string, nowMs = Date.now()): boolean {
    const since = this.frozenSinceMs.get(vtreeId);
    if (since === undefined) return false;
    if (nowMs - since >= sdsFreezeWarnMs && !this.freezesLogged.has(vtreeId)) {
      this.freezesLogged.add(vtreeId);
      this.host.log.warn({ vtreeId, frozenMs: nowMs - since, epoch: this.epoch }, 'a snapshot freeze holds without a map lifting it (an MDM lost in the middle of a barrier?): writes to the V-Tree wait for the Master');
    }
    return true;
  }

  /** The trees frozen now. */
  frozenVtrees(nowMs = Date.now()): string[] {
    return [...this.frozenSinceMs.keys()].filter((vtreeId) => this.isFrozen(vtreeId, nowMs));
  }

  private noteFreezes(map: PlacementMap | null): void {
    const nowMs = Date.now();
    const frozen = new Set(Object.entries(map?.vtrees ?? {}).flatMap(([vtreeId, tree]) => (tree.frozen === true ? [vtreeId] : [])));
    for (const vtreeId of [...this.frozenSinceMs.keys()]) {
      if (frozen.has(vtreeId)) continue;
      this.frozenSinceMs.delete(vtreeId);
      this.freezesLogged.delete(vtreeId);
    }
    for (const vtreeId of frozen) if (!this.frozenSinceMs.has(vtreeId)) this.frozenSinceMs.set(vtreeId, nowMs);
  }

  onReserve(payload: Buffer): void {
    const args = decodeReserve(payload);
    this.host.store.setReservation(args.vtreeId, args.chunkCount);
    this.host.state.reservations = this.host.store.reservationsSnapshot();
    this.persist();
  }

  async onAddDevice(payload: Buffer): Promise<WireReply> {
    const order = parseAddDeviceOrder(payload);
    const { store, state, log } = this.host;
    let device;
    try {
      device = await store.addDevice(order.path, { force: order.force });
    } catch (err) {
      if (!(err instanceof MeshblockError) || err instanceof AssertionError) throw err;
      log.warn({ err, path: order.path }, 'device refused');
      const refusal: DeviceRefusal = { code: err.code, message: err.message };
      return { status: SdsStatus.DeviceRefused, payload: Buffer.from(JSON.stringify(refusal)) };
    }
    if (!state.devicePaths.includes(device.path)) {
      state.devicePaths.push(device.path);
      this.persist();
    }
    log.info({ deviceId: device.deviceId, path: device.path, slots: device.slotCount }, 'device added');
    const registered: RegisteredDevice = { deviceId: device.deviceId, path: device.path, capacityBytes: device.slotCount * store.chunkBytes };
    return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify(registered)) };
  }

  /** The devices this SDS serves, as it registers them with the MDM. */
  registeredDevices(): RegisteredDevice[] {
    const store = this.host.store;
    return store.devices.map((device) => ({ deviceId: device.deviceId, path: device.path, capacityBytes: device.slotCount * store.chunkBytes }));
  }

  stats(): SdsStats {
    const store = this.host.store;
    const snapshotBytes = this.host.snapshotBytesByDevice();
    return {
      sdsId: this.host.identity.sdsId,
      name: this.host.identity.name,
      epoch: this.epoch,
      chunkBytes: store.chunkBytes,
      devices: store.devices.map((device) => ({
        deviceId: device.deviceId,
        path: device.path,
        state: device.state,
        error: device.error,
        totalBytes: device.slotCount * store.chunkBytes,
        usedBytes: device.usedSlotCount * store.chunkBytes,
        snapshotBytes: snapshotBytes.get(device.deviceId) ?? 0,
        freeBytes: device.state === 'normal' ? device.freeSlotCount * store.chunkBytes : 0,
        reads: device.counters.reads,
        writes: device.counters.writes,
        readBytes: device.counters.readBytes,
        writeBytes: device.counters.writeBytes,
        readIops: device.rates.reads,
        writeIops: device.rates.writes,
        readBytesPerSecond: device.rates.readBytes,
        writeBytesPerSecond: device.rates.writeBytes,
        checksumErrors: device.checksumErrors,
        scrubbedBytes: device.scrubbedBytes,
        io: device.opened.io,
        ...(device.opened.ioReason === null ? {} : { ioReason: device.opened.ioReason }),
      })),
      reservedBytes: store.reservedUnusedSlots() * store.chunkBytes,
      rebuilds: this.host.rebuildProgress(),
      integrity: { ...store.integrity },
      scrub: this.host.scrubProgress(),
      unrepairable: [...store.unrepairable],
      memory: this.host.memoryProgress(),
    };
  }

  /** Stops the stale-chunk collection timer (a collection in flight is tracked and ends on its own). */
  close(): void {
    if (this.collectTimer !== null) clearTimeout(this.collectTimer);
    this.collectTimer = null;
  }

  /**
   * The state file holds the whole map and is written synchronously: these orders are rare
   * (a map per cluster change), and the MDM's next order must find this one durable.
   */
  private persist(): void {
    saveState(this.host.dataDir, this.host.state);
  }

  /**
   * Chunks of groups this SDS no longer holds (it was out, or a rebalance moved the copy)
   * are stale: freed a while after a map says so, if no newer map came meanwhile.
   */
  private scheduleCollect(): void {
    if (this.collectTimer !== null) clearTimeout(this.collectTimer);
    const epoch = this.epoch;
    this.collectTimer = setTimeout(() => {
      this.collectTimer = null;
      if (this.epoch === epoch && !this.host.isClosing()) void this.host.track(this.collectStale(epoch)).catch((err: unknown) => this.host.log.error({ err }, 'freeing stale chunks failed'));
    }, staleCollectDelayMs);
    this.collectTimer.unref();
  }

  private async collectStale(epoch: number): Promise<void> {
    await this.collectStaleGroups(epoch);
    if (this.epoch === epoch && !this.host.isClosing()) await this.host.collectGenerations(epoch);
  }

  private async collectStaleGroups(epoch: number): Promise<void> {
    const map = this.current;
    if (map === null) return;
    const { store, locks, identity } = this.host;
    const me = identity.sdsId;
    const stale = store.keys((key) => {
      const pool = map.pools[key.poolId];
      if (pool === undefined) return false; // a pool not in the map is left alone
      const group = pool.groups[placementGroupOf(key.vtreeId, key.chunkIndex, pool.groups.length)];
      return group !== undefined && group.primary !== me && group.secondary !== me;
    });
    if (stale.length === 0) return;
    this.host.log.info({ chunks: stale.length, epoch }, 'freeing chunks of groups this SDS no longer holds');
    for (const key of stale) {
      if (this.epoch !== epoch || this.host.isClosing()) return;
      const release = await locks.acquire(keyName(key), 0, store.chunkBytes, true);
      try {
        // Not while a read through another generation resolves to it (the next map's pass frees it).
        await store.freeGarbage(key);
      } finally {
        release();
      }
    }
  }
}

function parseAddDeviceOrder(payload: Buffer): AddDeviceOrder {
  const order = parseJsonObject<AddDeviceOrder>(payload, 'addDevice');
  if (typeof order.path !== 'string' || !order.path.startsWith('/')) throw new InvalidArgumentError('addDevice.path', 'must be an absolute path');
  if (typeof order.force !== 'boolean') throw new InvalidArgumentError('addDevice.force', 'must be true or false');
  return { path: order.path, force: order.force };
}
