// The fleet simulator (issue 23): one process that behaves as many SDSs and SDCs towards one
// real MDM, over real wire connections made by the real session code (wire/mdm-session.ts,
// as src/sds/mdm-link.ts and src/sdc/sdc.ts use it). A simulated SDS registers, heartbeats
// its statistics every second, takes maps (SetMap), devices (AddDevice) and rebuild orders
// (Rebuild, acknowledged and reported done at once: it holds no data), and serves nothing
// else; a simulated SDC registers, heartbeats and takes its view updates (SdcOp.Update).
// By default both take binary maps (SdsOp.SetMapBinary, SdcOp.SetMap, MdmOp.GetMapBinary;
// docs/map-encoding.md) and say which map they hold, as the real ones do; they follow an
// update's epochs and digests from its frames' headers without decoding it (they route
// nothing). `binaryMaps: false` makes them an older build's: JSON maps and views.
// Every map or view a peer receives is recorded with its size, epoch and arrival time, which
// is what the scale test and `npm run bench:scale` measure.
//
// Building the topology. Adding devices through the REST API one by one re-plans the pool
// and pushes the map to every connected SDS each time (O(N²) map pushes: at 1,024 SDSs × 4
// devices, four million). So preloadDataDir() writes the MDM's data directory before the MDM
// first starts: the cluster identity and a journal snapshot built by the real state machine
// (protection domain, pool, every SDS registered and added), with every device but one
// written into the model; the last device is then added through the REST API by the caller,
// which makes the MDM plan the pool once, with the real planner, and push the map to every
// peer connected by then. Everything after that is the MDM's own doing.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { assert } from '../common/assert.js';
import { InvalidArgumentError } from '../common/errors.js';
import { Journal } from '../mdm/journal.js';
import type { JournalRecord } from '../mdm/command-log.js';
import { emptyModel, type SystemModel } from '../mdm/model.js';
import { StateMachine } from '../mdm/state-machine.js';
import { MapCodecError, decodeMapUpdate, encodeDelta, encodeMap, updateResult, type MapHeld } from '../wire/map-codec.js';
import { MdmOp, SdcOp, type MapRefusal, type RebuildDone, type RegisteredDevice, type SdcHeartbeat, type SdsRegistration } from '../wire/mdm-ops.js';
import { MdmSession } from '../wire/mdm-session.js';
import type { WireReply, WireRequest } from '../wire/peer.js';
import { SdsOp, SdsStatus, encodeEpoch, type RebuildArgs, type RebuildProgress, type SdsStats } from '../wire/sds-ops.js';

/** The largest fleet one simulator process runs (file descriptors, and what one MDM is claimed to manage). */
export const fleetPeersMax = 4096;
/** Devices a simulated SDS may claim (ScaleIO allows 64 per SDS). */
export const fleetDevicesPerSdsMax = 64;
/** Fault sets a fleet with racks has at least: one rack lost leaves two, so every group keeps a copy and gets a new one elsewhere. */
export const fleetFaultSetsMin = 3;

export interface FleetPlan {
  sdsCount: number;
  devicesPerSds: number;
  sdcCount: number;
  deviceCapacityBytes: number;
  /** The pool's placement groups (a power of two, at least pgCountMin); default the MDM's. */
  pgCount?: number;
  /**
   * SDSs per fault set (a rack): SDS `index` goes into fault set `floor(index / n)`, so the
   * planner never puts a group's two copies in one rack and a whole rack can fail with no
   * group left without a copy. At least three fault sets (two survive a rack's loss). Absent:
   * no fault sets, every SDS a failure domain of its own.
   */
  sdssPerFaultSet?: number;
}

export interface SimSdsSpec {
  index: number;
  sdsId: string;
  name: string;
  address: string;
  devices: RegisteredDevice[];
  /** Its fault set (its rack), null without FleetPlan.sdssPerFaultSet. */
  faultSetId: string | null;
}

/** One fault set of the preload: a rack of SDSs that fail together in the rack-failure measure. */
export interface SimFaultSet {
  faultSetId: string;
  name: string;
  /** Indexes into PreloadedCluster.sdss (and Fleet.sdss, which keeps that order). */
  sdsIndexes: number[];
}

export interface PreloadedCluster {
  clusterId: string;
  secret: Buffer;
  protectionDomainId: string;
  storagePoolId: string;
  sdss: SimSdsSpec[];
  /** The racks, in index order (SDSs 0..n-1 are the first); empty without FleetPlan.sdssPerFaultSet. */
  faultSets: SimFaultSet[];
  /** The device left out of the model: the caller adds it through the REST API (the first full plan). */
  lastDevice: { sdsId: string; path: string };
}

function checkCount(name: string, value: number, min: number, max: number): void {
  if (!Number.isSafeInteger(value) || value < min || value > max) throw new InvalidArgumentError(name, `must be an integer from ${min} to ${max}, got ${value}`);
}

function hexId(prefix: number, index: number): string {
  return `${prefix.toString(16).padStart(4, '0')}${index.toString(16).padStart(12, '0')}`;
}

/** The model of a fleet before its first plan, and where everything in it is. */
interface FleetModel {
  state: StateMachine;
  protectionDomainId: string;
  storagePoolId: string;
  sdss: SimSdsSpec[];
  faultSets: SimFaultSet[];
  lastDevice: { sdsId: string; path: string; deviceId: string; capacityBytes: number };
}

function checkPlan(plan: FleetPlan): void {
  checkCount('sdsCount', plan.sdsCount, 2, fleetPeersMax);
  checkCount('sdcCount', plan.sdcCount, 0, fleetPeersMax);
  checkCount('devicesPerSds', plan.devicesPerSds, 1, fleetDevicesPerSdsMax);
  if (!Number.isSafeInteger(plan.deviceCapacityBytes) || plan.deviceCapacityBytes <= 0) throw new InvalidArgumentError('deviceCapacityBytes', 'must be a positive integer');
  if (plan.sdssPerFaultSet !== undefined) {
    if (plan.sdsCount < fleetFaultSetsMin) throw new InvalidArgumentError('sdsCount', `must be at least ${fleetFaultSetsMin} with fault sets, got ${plan.sdsCount}`);
    checkCount('sdssPerFaultSet', plan.sdssPerFaultSet, 1, Math.floor(plan.sdsCount / fleetFaultSetsMin));
  }
}

/**
 * The cluster with the plan's SDSs (in their fault sets) and all their devices but one, built
 * by the real state machine, not planned yet: what preloadDataDir writes and what
 * measurePlannedMaps plans in-process.
 */
function buildFleetModel(clusterId: string, plan: FleetPlan): FleetModel {
  const nowMs = Date.now();
  const state = new StateMachine(emptyModel(clusterId, 'fleet'));
  const protectionDomainId = state.apply({ type: 'addProtectionDomain', name: 'pd1' }).id as string;
  const storagePoolId = state.apply({ type: 'addStoragePool', protectionDomainId, name: 'pool1', ...(plan.pgCount === undefined ? {} : { pgCount: plan.pgCount }) }).id as string;
  const faultSets: SimFaultSet[] = [];
  const sdss: SimSdsSpec[] = [];
  for (let index = 0; index < plan.sdsCount; index += 1) {
    let faultSet: SimFaultSet | null = null;
    if (plan.sdssPerFaultSet !== undefined) {
      const rack = Math.floor(index / plan.sdssPerFaultSet);
      if (faultSets[rack] === undefined) {
        const name = `sim-rack-${rack}`;
        faultSets[rack] = { faultSetId: state.apply({ type: 'addFaultSet', protectionDomainId, name }).id as string, name, sdsIndexes: [] };
      }
      faultSet = faultSets[rack] as SimFaultSet;
      faultSet.sdsIndexes.push(index);
    }
    const sdsId = hexId(0x5d5, index);
    // Never connected to: a simulated SDS serves no chunk IO. Unique, so no two SDSs look alike.
    const address = `127.0.0.1:${10_000 + (index % 50_000)}`;
    const name = `sim-sds-${index}`;
    state.apply({ type: 'registerSds', sdsId, name, address, nowMs, host: null });
    state.apply({ type: 'addSds', sdsId, protectionDomainId, faultSetId: faultSet?.faultSetId ?? null });
    const devices: RegisteredDevice[] = [];
    for (let deviceIndex = 0; deviceIndex < plan.devicesPerSds; deviceIndex += 1) {
      devices.push({ deviceId: hexId(0xde5, index * fleetDevicesPerSdsMax + deviceIndex), path: `/dev/sim${deviceIndex}`, capacityBytes: plan.deviceCapacityBytes });
    }
    sdss.push({ index, sdsId, name, address, devices, faultSetId: faultSet?.faultSetId ?? null });
  }
  const last = sdss[sdss.length - 1] as SimSdsSpec;
  const lastDevice = last.devices[last.devices.length - 1] as RegisteredDevice;
  for (const sds of sdss) {
    for (const [deviceIndex, device] of sds.devices.entries()) {
      if (device === lastDevice) continue;
      state.model.devices[device.deviceId] = {
        id: device.deviceId,
        name: `${sds.name}-d${deviceIndex + 1}`,
        sdsId: sds.sdsId,
        storagePoolId,
        path: device.path,
        capacityBytes: device.capacityBytes,
        state: 'normal',
        usedBytes: 0,
      };
    }
  }
  return { state, protectionDomainId, storagePoolId, sdss, faultSets, lastDevice: { sdsId: last.sdsId, path: lastDevice.path, deviceId: lastDevice.deviceId, capacityBytes: lastDevice.capacityBytes } };
}

/**
 * Writes an MDM data directory (which must not hold a cluster yet) holding a cluster with
 * the plan's SDSs and all their devices but one. Start `meshblock mdm start --data-dir` on it.
 */
export async function preloadDataDir(dataDir: string, plan: FleetPlan, log: Logger): Promise<PreloadedCluster> {
  checkPlan(plan);
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  if (fs.existsSync(path.join(dataDir, 'cluster.json'))) throw new InvalidArgumentError('dataDir', `${dataDir} already holds a cluster`);
  const clusterId = randomBytes(8).toString('hex');
  const secretText = randomBytes(32).toString('hex');
  // As `mdm start` writes them at a first start (ensureCluster in src/cli/mdm-start.ts).
  fs.writeFileSync(path.join(dataDir, 'cluster.secret'), `${secretText}\n`, { mode: 0o600 });
  fs.writeFileSync(path.join(dataDir, 'cluster.json'), `${JSON.stringify({ clusterId, name: 'fleet' }, null, 1)}\n`);
  const { state, protectionDomainId, storagePoolId, sdss, faultSets, lastDevice } = buildFleetModel(clusterId, plan);
  // The SDSs are not connected until they call (as after any MDM restart).
  state.observe({ type: 'connectionsLost' });
  const { journal } = await Journal.open<JournalRecord, SystemModel>(dataDir, { log, initialSnapshot: emptyModel(clusterId, 'fleet') });
  await journal.compact(state.model);
  await journal.close();
  return { clusterId, secret: Buffer.from(secretText), protectionDomainId, storagePoolId, sdss, faultSets, lastDevice: { sdsId: lastDevice.sdsId, path: lastDevice.path } };
}

/** A fleet's map planned in-process, its encodings, and what one SDS's and one rack's failure change. */
export interface PlannedMapSizes {
  sds: number;
  devicesPerSds: number;
  pgCount: number;
  /** The SDSs a rack holds (FleetPlan.sdssPerFaultSet), null without racks. */
  rackSdsCount: number | null;
  /** The whole map as the MDM sends it in JSON (SetMap), and in the binary encoding (map-codec.ts). */
  mapJsonBytes: number;
  mapBinaryBytes: number;
  /** The delta from the planned map to the map once the last SDS is declared down. */
  mapDeltaBytesPerFailure: number;
  /**
   * Rack 0's SDSs declared down one after another from the planned map (one epoch each, as
   * the MDM's health tick declares them): the deltas of every step summed (what a peer that follows every epoch
   * gets), and the one delta from before the rack's loss to after it (what a peer that was
   * one map behind gets). Null without racks.
   */
  rackDeltaBytesSum: number | null;
  rackDeltaBytesDirect: number | null;
  rackEpochs: number | null;
  /** Groups with no readable copy once the rack is down (0 with fault sets: the planner's promise). */
  rackFailedGroups: number | null;
  /** Wall time of the first plan (the state machine's addDevice with the real planner). */
  planMs: number;
}

/**
 * Plans the fleet's pool in-process with the real state machine and planner (what the MDM
 * does when the last device is added), then declares the last SDS down, and (apart, from the
 * planned map) rack 0's SDSs down, and encodes each map with the codec: the map sizes of a fleet without running one
 * (1,024 SDSs x 4 devices at the default 262,144 groups takes some seconds and ~1 GB of heap).
 */
export function measurePlannedMaps(plan: FleetPlan): PlannedMapSizes {
  checkPlan(plan);
  const fleet = buildFleetModel(randomBytes(8).toString('hex'), plan);
  const { state } = fleet;
  const startedMs = performance.now();
  state.apply({ type: 'addDevice', deviceId: fleet.lastDevice.deviceId, sdsId: fleet.lastDevice.sdsId, storagePoolId: fleet.storagePoolId, path: fleet.lastDevice.path, name: null, capacityBytes: fleet.lastDevice.capacityBytes });
  const planMs = performance.now() - startedMs;
  const planned = state.placementMap();
  const pool = state.model.storagePools[fleet.storagePoolId];
  assert(pool !== undefined, 'the fleet has its pool');
  const mapJsonBytes = Buffer.byteLength(JSON.stringify(planned));
  const mapBinaryBytes = encodeMap(planned).length;
  // Maps are compared by value: the state machine may hand out one object while nothing changed.
  const plannedCopy = structuredClone(planned);
  // The rack fails on the healthy planned cluster (a copy of it), not after the single failure:
  // two failures before a rebuild are a different question (groups on both lose their data).
  const healthy = new StateMachine(structuredClone(state.model));
  const nowMs = Date.now();
  const victim = fleet.sdss[fleet.sdss.length - 1] as SimSdsSpec;
  state.apply({ type: 'sdsDown', sdsId: victim.sdsId, nowMs, reason: 'measurePlannedMaps: one SDS' });
  const mapDeltaBytesPerFailure = encodeDelta(plannedCopy, state.placementMap()).length;
  let rack: { sum: number; direct: number; epochs: number; failed: number } | null = null;
  const rackSdss = fleet.faultSets[0]?.sdsIndexes ?? null;
  if (rackSdss !== null) {
    let previous = plannedCopy;
    let sum = 0;
    for (const index of rackSdss) {
      healthy.apply({ type: 'sdsDown', sdsId: (fleet.sdss[index] as SimSdsSpec).sdsId, nowMs, reason: 'measurePlannedMaps: rack' });
      const next = structuredClone(healthy.placementMap());
      sum += encodeDelta(previous, next).length;
      previous = next;
    }
    const healthyPool = healthy.model.storagePools[fleet.storagePoolId];
    assert(healthyPool !== undefined, 'the copy has the pool');
    rack = { sum, direct: encodeDelta(plannedCopy, previous).length, epochs: previous.epoch - plannedCopy.epoch, failed: healthy.poolHealth(healthyPool).failedGroups };
  }
  return {
    sds: plan.sdsCount,
    devicesPerSds: plan.devicesPerSds,
    pgCount: pool.groups.length,
    rackSdsCount: rackSdss?.length ?? null,
    mapJsonBytes,
    mapBinaryBytes,
    mapDeltaBytesPerFailure,
    rackDeltaBytesSum: rack?.sum ?? null,
    rackDeltaBytesDirect: rack?.direct ?? null,
    rackEpochs: rack?.epochs ?? null,
    rackFailedGroups: rack?.failed ?? null,
    planMs: Math.round(planMs),
  };
}

/** One map or view a simulated peer received. */
export interface MapReceipt {
  atMs: number;
  epoch: number;
  bytes: number;
}

interface SimPeer {
  kind: 'sds' | 'sdc';
  name: string;
  session: MdmSession;
  registered: Promise<void>;
  epoch: number;
  receipts: MapReceipt[];
  killed: boolean;
  /** The binary map it holds (binaryMaps), as it tells the MDM. */
  held: MapHeld | null;
}

export interface FleetOptions {
  mdmAddress: string;
  cluster: PreloadedCluster;
  sdcCount: number;
  log: Logger;
  /** The peers take binary maps (default), or JSON ones as an older build. */
  binaryMaps?: boolean;
}

/** `{"epoch":N,` opens every PlacementMap as the MDM writes it; a full parse only when it does not. */
function mapEpochOf(payload: Buffer, field: 'epoch' | 'map'): number {
  const head = payload.subarray(0, 96).toString('latin1');
  if (field === 'map') {
    // A view without its map (binary maps) names the map it was made with.
    const mapless = /"mapHeld":\{"epoch":(\d+)/.exec(payload.subarray(0, 256).toString('latin1'));
    if (mapless !== null) return Number(mapless[1]);
  }
  const match = (field === 'epoch' ? /^\{"epoch":(\d+)/ : /"map":\{"epoch":(\d+)/).exec(head);
  if (match !== null) return Number(match[1]);
  const value = JSON.parse(payload.toString('utf8')) as { epoch?: unknown; map?: { epoch?: unknown } };
  const epoch = field === 'epoch' ? value.epoch : value.map?.epoch;
  if (typeof epoch !== 'number') throw new InvalidArgumentError('map', 'carries no epoch');
  return epoch;
}

export class Fleet {
  readonly sdss: SimPeer[] = [];
  readonly sdcs: SimPeer[] = [];
  /** Bytes of MDM → peer payloads: maps (JSON SetMap, and binary updates to SDSs and SDCs), views, orders. */
  readonly counters = { mapBytes: 0, viewBytes: 0, orderBytes: 0, rebuildOrders: 0, addDeviceOrders: 0 };
  private readonly sdsSpecs: SimSdsSpec[];

  constructor(private readonly options: FleetOptions) {
    this.sdsSpecs = options.cluster.sdss;
    checkCount('sdcCount', options.sdcCount, 0, fleetPeersMax);
  }

  /** Connects and registers every SDS, `concurrency` at a time; resolves when all are registered. */
  async connectSdss(concurrency = 64): Promise<void> {
    await this.inWaves(this.sdsSpecs.length, concurrency, (index) => this.startSds(this.sdsSpecs[index] as SimSdsSpec));
  }

  /** Connects and registers every SDC, `concurrency` at a time. */
  async connectSdcs(concurrency = 64): Promise<void> {
    await this.inWaves(this.options.sdcCount, concurrency, (index) => this.startSdc(index));
  }

  private async inWaves(count: number, concurrency: number, start: (index: number) => SimPeer): Promise<void> {
    for (let first = 0; first < count; first += concurrency) {
      const wave: Promise<void>[] = [];
      for (let index = first; index < Math.min(count, first + concurrency); index += 1) wave.push(start(index).registered);
      await Promise.all(wave);
    }
  }

  private startSds(spec: SimSdsSpec): SimPeer {
    const log = this.options.log.child({ sim: spec.name });
    let registeredResolve: () => void = () => undefined;
    const registered = new Promise<void>((resolve) => (registeredResolve = resolve));
    const rebuilds: RebuildProgress[] = [];
    let jobCounter = 0;
    const peer: SimPeer = { kind: 'sds', name: spec.name, session: null as unknown as MdmSession, registered, epoch: 0, receipts: [], killed: false, held: null };
    const stats = (): SdsStats => ({
      sdsId: spec.sdsId,
      name: spec.name,
      epoch: peer.epoch,
      chunkBytes: 1024 * 1024,
      devices: spec.devices.map((device) => ({
        deviceId: device.deviceId,
        path: device.path,
        state: 'normal',
        error: null,
        totalBytes: device.capacityBytes,
        usedBytes: 0,
        freeBytes: device.capacityBytes,
        reads: 0,
        writes: 0,
        readBytes: 0,
        writeBytes: 0,
        readIops: 0,
        writeIops: 0,
        readBytesPerSecond: 0,
        writeBytesPerSecond: 0,
      })),
      reservedBytes: 0,
      // Finished jobs stay listed for a few heartbeats, as a real SDS keeps them.
      rebuilds: rebuilds.slice(-64),
    });
    const onRequest = async (request: WireRequest): Promise<WireReply> => {
      switch (request.op) {
        case SdsOp.SetMap: {
          const epoch = mapEpochOf(request.payload, 'epoch');
          this.counters.mapBytes += request.payload.length;
          peer.receipts.push({ atMs: Date.now(), epoch, bytes: request.payload.length });
          if (epoch < peer.epoch) return { status: SdsStatus.StaleEpoch, payload: encodeEpoch(peer.epoch) };
          peer.epoch = epoch;
          return { status: SdsStatus.Ok };
        }
        case SdsOp.SetMapBinary:
          return this.onMapUpdate(peer, request.payload);
        case SdsOp.AddDevice: {
          this.counters.addDeviceOrders += 1;
          this.counters.orderBytes += request.payload.length;
          const order = JSON.parse(request.payload.toString('utf8')) as { path?: unknown };
          const device = spec.devices.find((entry) => entry.path === order.path);
          if (device === undefined) return { status: SdsStatus.DeviceRefused, payload: Buffer.from(JSON.stringify({ code: 'MB_ERR_INVALID_ARGUMENT', message: `no simulated device at ${String(order.path)}` })) };
          return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify(device)) };
        }
        case SdsOp.Rebuild: {
          this.counters.rebuildOrders += 1;
          this.counters.orderBytes += request.payload.length;
          const args = JSON.parse(request.payload.toString('utf8')) as RebuildArgs;
          jobCounter += 1;
          const job: RebuildProgress = { jobId: `${spec.sdsId}-${jobCounter}`, poolId: args.poolId, pgIndex: args.pgIndex, targetSdsId: args.targetSdsId, state: 'done', mode: args.mode ?? 'full', epoch: args.epoch ?? peer.epoch, chunksDone: 0, chunksTotal: 0, bytesDone: 0, error: null };
          rebuilds.push(job);
          if (rebuilds.length > 256) rebuilds.splice(0, rebuilds.length - 256);
          // Nothing to copy: the order is complete as soon as it is acknowledged.
          setImmediate(() => {
            const done: RebuildDone = { jobId: job.jobId, poolId: job.poolId, pgIndex: job.pgIndex, targetSdsId: job.targetSdsId, epoch: job.epoch, mode: job.mode, chunksDone: 0, bytesDone: 0 };
            peer.session.peer?.request(MdmOp.RebuildDone, Buffer.from(JSON.stringify(done))).catch((err: unknown) => log.debug({ err }, 'rebuild report not delivered'));
          });
          return { status: SdsStatus.Ok };
        }
        case SdsOp.Stats:
          return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify(stats())) };
        default:
          // Freeze maps come as SetMap; chunk IO never reaches a simulated SDS.
          return { status: SdsStatus.UnknownOp, payload: Buffer.from(`op ${request.op} is not simulated`) };
      }
    };
    peer.session = new MdmSession({
      mdmAddresses: [this.options.mdmAddress],
      clusterId: this.options.cluster.clusterId,
      secret: this.options.cluster.secret,
      role: 'sds',
      name: spec.name,
      log,
      onRequest,
      heartbeat: () => Buffer.from(JSON.stringify(stats())),
      register: async (wire) => {
        const registration: SdsRegistration = { sdsId: spec.sdsId, name: spec.name, address: spec.address, devices: spec.devices, ...this.mapOptions(peer) };
        const reply = await wire.request(MdmOp.RegisterSds, Buffer.from(JSON.stringify(registration)));
        if (reply.status !== SdsStatus.Ok) throw new Error(`the MDM refused the registration of ${spec.name}: ${reply.payload.toString()}`);
        registeredResolve();
      },
    });
    peer.session.start();
    this.sdss.push(peer);
    return peer;
  }

  private startSdc(index: number): SimPeer {
    const name = `sim-sdc-${index}`;
    const guid = `5dc00000-0000-0000-0000-${index.toString(16).padStart(12, '0')}`;
    const log = this.options.log.child({ sim: name });
    let registeredResolve: () => void = () => undefined;
    const registered = new Promise<void>((resolve) => (registeredResolve = resolve));
    const peer: SimPeer = { kind: 'sdc', name, session: null as unknown as MdmSession, registered, epoch: 0, receipts: [], killed: false, held: null };
    const onView = (payload: Buffer): void => {
      const epoch = mapEpochOf(payload, 'map');
      this.counters.viewBytes += payload.length;
      peer.receipts.push({ atMs: Date.now(), epoch, bytes: payload.length });
      // A view without its map says nothing of the map held (that comes by SdcOp.SetMap).
      if (!this.binaryMaps) peer.epoch = Math.max(peer.epoch, epoch);
    };
    const heartbeat: SdcHeartbeat = { openVolumes: [], qos: [] };
    const heartbeatBytes = Buffer.from(JSON.stringify(heartbeat));
    peer.session = new MdmSession({
      mdmAddresses: [this.options.mdmAddress],
      clusterId: this.options.cluster.clusterId,
      secret: this.options.cluster.secret,
      role: 'sdc',
      name,
      log,
      onRequest: async (request) => {
        if (request.op === SdcOp.SetMap) return this.onMapUpdate(peer, request.payload);
        if (request.op !== SdcOp.Update) return { status: SdsStatus.UnknownOp, payload: Buffer.from(`op ${request.op} is not simulated`) };
        onView(request.payload);
        return { status: SdsStatus.Ok };
      },
      heartbeat: () => heartbeatBytes,
      register: async (wire) => {
        const reply = await wire.request(MdmOp.RegisterSdc, Buffer.from(JSON.stringify({ guid, name, ...this.mapOptions(peer) })));
        if (reply.status !== SdsStatus.Ok) throw new Error(`the MDM refused the registration of ${name}: ${reply.payload.toString()}`);
        onView(reply.payload);
        if (this.binaryMaps) {
          // As a real SDC: the view names its map; the map comes from what it holds.
          const response = await wire.request(MdmOp.GetMapBinary, peer.held === null ? Buffer.alloc(0) : Buffer.from(JSON.stringify(peer.held)));
          if (response.status !== SdsStatus.Ok) throw new Error(`the MDM did not give ${name} the map: ${response.payload.toString()}`);
          const refused = this.onMapUpdate(peer, response.payload);
          if (refused.status !== SdsStatus.Ok) throw new Error(`${name} could not follow the map the MDM gave: ${String(refused.payload)}`);
        }
        registeredResolve();
      },
    });
    peer.session.start();
    this.sdcs.push(peer);
    return peer;
  }

  private get binaryMaps(): boolean {
    return this.options.binaryMaps ?? true;
  }

  /** What a simulated peer's registration says of maps. */
  private mapOptions(peer: SimPeer): { mapBinary?: boolean; mapHeld?: MapHeld | null } {
    return this.binaryMaps ? { mapBinary: true, mapHeld: peer.held } : {};
  }

  /**
   * A binary map update (SdsOp.SetMapBinary, SdcOp.SetMap, GetMapBinary's reply): followed by
   * its frames' epochs and digests, refused as a real peer refuses one not from its map.
   */
  private onMapUpdate(peer: SimPeer, payload: Buffer): WireReply {
    let held: MapHeld;
    try {
      held = updateResult(peer.held, decodeMapUpdate(payload));
    } catch (err) {
      if (!(err instanceof MapCodecError)) throw err;
      const refusal: MapRefusal = { code: err.code as MapRefusal['code'], message: err.message, held: peer.held };
      return { status: SdsStatus.Failed, payload: Buffer.from(JSON.stringify(refusal)) };
    }
    this.counters.mapBytes += payload.length;
    if (payload.length > 0) peer.receipts.push({ atMs: Date.now(), epoch: held.epoch, bytes: payload.length });
    if (held.epoch < peer.epoch) return { status: SdsStatus.StaleEpoch, payload: encodeEpoch(peer.epoch) };
    peer.held = held;
    peer.epoch = held.epoch;
    return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify(held)) };
  }

  /** Drops every connection of SDS `index` and stops it calling back (a crashed host). */
  killSds(index: number): number {
    const peer = this.sdss[index];
    assert(peer !== undefined, `SDS ${index} is in the fleet`);
    peer.killed = true;
    peer.session.close();
    return Date.now();
  }

  /** The peers still alive that hold a map of at least `epoch` (SDSs: installed; SDCs: in their view). */
  holding(epoch: number): { sds: number; sdc: number } {
    const count = (peers: SimPeer[]): number => peers.filter((peer) => !peer.killed && peer.epoch >= epoch).length;
    return { sds: count(this.sdss), sdc: count(this.sdcs) };
  }

  /** Every receipt since `sinceMs` by live peers, for the bytes a change cost. */
  receiptsSince(sinceMs: number): { kind: 'sds' | 'sdc'; receipt: MapReceipt }[] {
    const found: { kind: 'sds' | 'sdc'; receipt: MapReceipt }[] = [];
    for (const peer of [...this.sdss, ...this.sdcs]) {
      if (peer.killed) continue;
      for (const receipt of peer.receipts) if (receipt.atMs >= sinceMs) found.push({ kind: peer.kind, receipt });
    }
    return found;
  }

  /** The highest epoch any live peer holds. */
  get epochMax(): number {
    let max = 0;
    for (const peer of [...this.sdss, ...this.sdcs]) if (!peer.killed) max = Math.max(max, peer.epoch);
    return max;
  }

  close(): void {
    for (const peer of [...this.sdss, ...this.sdcs]) peer.session.close();
  }

  // Failures at scale (issue 23): a rack lost at once, and what a measure that did not settle got.

  /**
   * Drops every connection of the SDSs at `indexes` in the same turn (a rack losing power or
   * its top-of-rack switch) and stops them calling back; returns when it happened.
   */
  killSdss(indexes: readonly number[]): number {
    assert(new Set(indexes).size === indexes.length, 'each SDS is killed once');
    for (const index of indexes) {
      const peer = this.sdss[index];
      assert(peer !== undefined, `SDS ${index} is in the fleet`);
      assert(!peer.killed, `SDS ${index} is alive`);
    }
    const atMs = Date.now();
    for (const index of indexes) this.killSds(index);
    return atMs;
  }

  /** The SDS indexes of rack (fault set) `rack` of the preload. */
  rackSdsIndexes(rack: number): number[] {
    const faultSet = this.options.cluster.faultSets[rack];
    if (faultSet === undefined) throw new InvalidArgumentError('rack', `must be from 0 to ${this.options.cluster.faultSets.length - 1}, got ${rack}`);
    return [...faultSet.sdsIndexes];
  }

  /**
   * The live peers that do not hold `epoch` yet, by name (the first `shownMax`), how many in
   * all, and how many of them have no MDM connection now: what a measure that timed out reports.
   */
  lagging(epoch: number, shownMax = 16): { count: number; disconnected: number; names: string[] } {
    const names: string[] = [];
    let count = 0;
    let disconnected = 0;
    for (const peer of [...this.sdss, ...this.sdcs]) {
      if (peer.killed || peer.epoch >= epoch) continue;
      count += 1;
      if (peer.session.peer === null) disconnected += 1;
      if (names.length < shownMax) names.push(`${peer.name}@${peer.epoch}`);
    }
    return { count, disconnected, names };
  }

  /**
   * When live peers first received a map of at least `epoch` after `sinceMs`: the earliest
   * such arrival at any peer, the latest of each peer's first (when the last one got there),
   * and how many live peers have none yet. Null times where no peer has one.
   */
  arrivals(epoch: number, sinceMs: number): { firstAtMs: number | null; lastAtMs: number | null; missing: number } {
    let firstAtMs: number | null = null;
    let lastAtMs: number | null = null;
    let missing = 0;
    for (const peer of [...this.sdss, ...this.sdcs]) {
      if (peer.killed) continue;
      const arrival = peer.receipts.find((receipt) => receipt.atMs >= sinceMs && receipt.epoch >= epoch);
      if (arrival === undefined) {
        missing += 1;
        continue;
      }
      if (firstAtMs === null || arrival.atMs < firstAtMs) firstAtMs = arrival.atMs;
      if (lastAtMs === null || arrival.atMs > lastAtMs) lastAtMs = arrival.atMs;
    }
    return { firstAtMs, lastAtMs, missing };
  }

  /** Live peers of each kind with an MDM connection now (registered or registering), for a connect phase that timed out. */
  connected(): { sds: number; sdc: number } {
    const count = (peers: SimPeer[]): number => peers.filter((peer) => !peer.killed && peer.session.peer !== null).length;
    return { sds: count(this.sdss), sdc: count(this.sdcs) };
  }
}

/** User and system CPU seconds a process has used (/proc/PID/stat), for the MDM's cost. */
export function processCpuSeconds(pid: number): number {
  const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces), from the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; in clock ticks (100 a second on Linux).
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks / 100;
}
