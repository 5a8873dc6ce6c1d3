// Operations between the MDM and the processes it manages. An SDS (and later an SDC)
// connects to the MDM, proves the cluster secret (peer.ts), registers, and keeps the
// connection: it sends heartbeats on it, and the MDM sends its orders back on the same
// connection (SdsOp.SetMap, SdsOp.AddDevice, SdsOp.Rebuild, ...), which the SDS serves as
// from role 'mdm'. Payloads are JSON: these messages are rare and small.
//
//   op               from   request payload          reply payload (status Ok)
//   ---------------  -----  -----------------------  ------------------------------------
//   RegisterSds  40  SDS    SdsRegistration          { epoch } the MDM's map epoch; the
//                                                    map follows as SetMap if it holds any
//   Heartbeat    41  SDS    SdsStats (sds-ops.ts)    empty
//   GetMap       42  any    empty                    the current PlacementMap
//   RegisterSdc  43  SDC    SdcRegistration          SdcView: its id, the map, its volumes
//                                                    (mapBinary: SdcMaplessView, no map)
//   Heartbeat    41  SDC    SdcHeartbeat             empty
//   GetMapBinary 45  any    MapHeld JSON, or empty   MapUpdate frames (map-codec.ts) from
//                           (holds no map)           what it holds to the current map
//
// and the ones the SDC serves, sent by the MDM whenever what the SDC should know changed:
//
//   SdcUpdate    50  MDM    SdcView                  empty (mapBinary: SdcMaplessView)
//   SdcSetMap    51  MDM    MapUpdate frames         MapHeld JSON; refused whole: Failed with
//                                                    MapRefusal JSON (then it asks GetMapBinary)
//
// Binary maps (docs/map-encoding.md): a peer that says `mapBinary: true` in its registration
// (and, if it holds a map, `mapHeld`) gets the map as MapUpdates (SdsOp.SetMapBinary,
// SdcOp.SetMap): nothing, the deltas from what it holds, or the whole map; an SDC's views
// then come without the map, naming the map they were made with (mapHeld). A peer that does
// not say so (an older build) gets JSON maps as before.
//
// The MDM answers RegisterSds from an SDS whose name is taken by another SDS id with
// Failed and a message naming the clash.

import { parseJsonObject } from './json-payload.js';
import { InvalidArgumentError, isMeshblockCode, type MeshblockCode } from '../common/errors.js';
import { isName, nameRule } from '../common/names.js';
import { idPattern, type PlacementMap } from './placement.js';
import { parseMapHeld, type MapHeld } from './map-codec.js';
import { refusalQuoteCharsMax, sdsDevicesMax } from '../common/limits.js';

export const MdmOp = {
  RegisterSds: 40,
  Heartbeat: 41,
  GetMap: 42,
  RegisterSdc: 43,
  /** SDS → MDM: a rebuild order finished; the target's copy is in sync (RebuildDone JSON). */
  RebuildDone: 44,
  /** Any → MDM: the map as a binary MapUpdate from what the asker holds (MapHeld JSON; empty: nothing). */
  GetMapBinary: 45,
} as const;

/**
 * A peer's refusal of a binary map update (status Failed): why, and what it holds now (the
 * MDM sends it what it needs from there: the whole map for MB_ERR_MAP_BASE from a peer that
 * holds a map the MDM has no delta from).
 */
export interface MapRefusal {
  code: 'MB_ERR_MAP_BASE' | 'MB_ERR_MAP_CORRUPT';
  message: string;
  held: MapHeld | null;
}

/** A MapRefusal from a reply's payload; null when it is none (an older peer, a plain message). */
export function parseMapRefusal(payload: Buffer): MapRefusal | null {
  try {
    const entry = JSON.parse(payload.toString('utf8')) as Partial<MapRefusal> | null;
    if (entry === null || typeof entry !== 'object' || (entry.code !== 'MB_ERR_MAP_BASE' && entry.code !== 'MB_ERR_MAP_CORRUPT') || typeof entry.message !== 'string') return null;
    return { code: entry.code, message: entry.message, held: parseMapHeld(entry.held, 'refusal.held') };
  } catch {
    return null;
  }
}

/** What an SDS reports when a rebuild order is complete. */
export interface RebuildDone {
  /** The job's id, as in the SDS's stats: the MDM counts a job's bytes once, however often it hears of it. */
  jobId?: string;
  poolId: string;
  pgIndex: number;
  targetSdsId: string;
  /** The map epoch the order was given at. */
  epoch: number;
  mode: 'full' | 'delta';
  chunksDone: number;
  bytesDone: number;
}

/**
 * Why a rebuild job failed on a chunk: carried as `failure` in the failed job's entry of the
 * source SDS's stats (SdsStats.rebuilds, sent with every heartbeat). The MDM orders the group
 * again after a backoff and shows the failure (RebuildStatus.failing); the group stays
 * syncing, never counted in sync, until a job of it finishes.
 */
export interface RebuildFailure {
  /** The chunk's key name (chunk-store.ts keyName(): pool and V-Tree ids, chunk index, generation). */
  chunk: string;
  /**
   * 'source': reading the copy on the source SDS failed (a bad range, a device error);
   * 'target': sending it failed (the target answered with an error, or was not reached:
   * the message says which).
   */
  side: 'source' | 'target';
  /** A stable code: an MB_ERR_* code or errno name (source), or the SdsStatus name of the failed send (target). */
  code: string;
  /** The source SDS's device that holds the chunk (side 'source'), when known. */
  deviceId: string | null;
  /** The error as the SDS saw it (for logs and the dashboard; never parsed). */
  message: string;
  /** Chunks of the job that failed, this one (the first) included. */
  chunksFailed: number;
}

export const SdcOp = {
  Update: 50,
  /** MDM → SDC: a binary MapUpdate (map-codec.ts) for an SDC that registered with mapBinary. */
  SetMap: 51,
} as const;

/** How often an SDS reports (defined with the other limits). */
export { heartbeatIntervalMs } from '../common/limits.js';

export interface RegisteredDevice {
  deviceId: string;
  path: string;
  capacityBytes: number;
}

export interface SdsRegistration {
  sdsId: string;
  name: string;
  /** HOST:PORT where it serves chunk IO. */
  address: string;
  devices: RegisteredDevice[];
  /**
   * The host this SDS runs on, as the administrator (or `sds start --shards`) names it: SDSs
   * with one label are one failure domain where there are no fault sets, so the MDM never puts
   * two copies of a group on them. Absent: no label (the SDS is a host of its own). Same rule
   * as names: 1 to nameBytesMax letters, digits, '_', '.' or '-', starting with a letter or digit.
   */
  host?: string;
  /** It takes binary maps (SdsOp.SetMapBinary). Absent (an older build): JSON SetMap. */
  mapBinary?: boolean;
  /** The map it holds (persisted across its restarts): the MDM sends only what it lacks. */
  mapHeld?: MapHeld | null;
}

export function parseSdsRegistration(payload: Buffer): SdsRegistration {
  const entry = parseJsonObject<SdsRegistration>(payload, 'registration');
  if (typeof entry.sdsId !== 'string' || !idPattern.test(entry.sdsId)) throw new InvalidArgumentError('registration.sdsId', 'must be 16 hex digits');
  if (typeof entry.name !== 'string') throw new InvalidArgumentError('registration.name', 'must be a string');
  if (typeof entry.address !== 'string' || !/^.+:\d{1,5}$/.test(entry.address)) throw new InvalidArgumentError('registration.address', 'must be HOST:PORT');
  if (!Array.isArray(entry.devices)) throw new InvalidArgumentError('registration.devices', 'must be an array');
  // ScaleIO's bound: the MDM plans, shows and watches each device; a peer claiming thousands is refused, not believed.
  if (entry.devices.length > sdsDevicesMax) throw new InvalidArgumentError('registration.devices', `must list at most ${sdsDevicesMax} devices (sdsDevicesMax), got ${entry.devices.length}`);
  const devices = entry.devices.map((device: Partial<RegisteredDevice>, index) => {
    if (typeof device.deviceId !== 'string' || !idPattern.test(device.deviceId)) throw new InvalidArgumentError(`registration.devices[${index}].deviceId`, 'must be 16 hex digits');
    if (typeof device.path !== 'string') throw new InvalidArgumentError(`registration.devices[${index}].path`, 'must be a string');
    if (!Number.isSafeInteger(device.capacityBytes) || (device.capacityBytes as number) <= 0) throw new InvalidArgumentError(`registration.devices[${index}].capacityBytes`, 'must be a positive integer');
    return { deviceId: device.deviceId, path: device.path, capacityBytes: device.capacityBytes as number };
  });
  const maps = parseMapOptions(entry);
  if (entry.host === undefined) return { sdsId: entry.sdsId, name: entry.name, address: entry.address, devices, ...maps };
  if (typeof entry.host !== 'string' || !isName(entry.host)) {
    throw new InvalidArgumentError('registration.host', `must be ${nameRule}, got ${JSON.stringify(entry.host).slice(0, refusalQuoteCharsMax)}`);
  }
  return { sdsId: entry.sdsId, name: entry.name, address: entry.address, devices, host: entry.host, ...maps };
}

/** A registration's mapBinary and mapHeld, checked (absent from an older build: JSON maps). */
function parseMapOptions(entry: { mapBinary?: unknown; mapHeld?: unknown }): { mapBinary?: boolean; mapHeld?: MapHeld | null } {
  if (entry.mapBinary === undefined) return {};
  if (typeof entry.mapBinary !== 'boolean') throw new InvalidArgumentError('registration.mapBinary', 'must be true or false');
  let mapHeld: MapHeld | null;
  try {
    mapHeld = parseMapHeld(entry.mapHeld, 'registration.mapHeld');
  } catch (err) {
    throw new InvalidArgumentError('registration.mapHeld', (err as Error).message);
  }
  return { mapBinary: entry.mapBinary, mapHeld };
}

/** SdsOp.AddDevice: the MDM asks an SDS to take a device. */
export interface AddDeviceOrder {
  path: string;
  /** Format even if the device holds a filesystem, partition table or LVM label. */
  force: boolean;
}

/** A refusal that the MDM passes on to the administrator as it is. */
export interface DeviceRefusal {
  code: MeshblockCode;
  message: string;
}


/**
 * Reads an SDS's DeviceRefusal at the MDM. The code came from another process (perhaps a
 * newer build): one this build does not know, or a payload that is no refusal, becomes
 * MB_ERR_SDS_FAILED with the original in the message, so what the MDM passes on always
 * carries a code of the list in src/common/errors.ts.
 */
export function parseDeviceRefusal(payload: Buffer): DeviceRefusal {
  const text = payload.toString('utf8');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { code: 'MB_ERR_SDS_FAILED', message: `refused, with a reply that is not JSON: ${text.slice(0, refusalQuoteCharsMax)}` };
  }
  const entry = value as { code?: unknown; message?: unknown } | null;
  if (entry === null || typeof entry !== 'object' || typeof entry.message !== 'string') {
    return { code: 'MB_ERR_SDS_FAILED', message: `refused, with a malformed refusal: ${text.slice(0, refusalQuoteCharsMax)}` };
  }
  if (!isMeshblockCode(entry.code)) return { code: 'MB_ERR_SDS_FAILED', message: `${entry.message} (code ${String(JSON.stringify(entry.code)).slice(0, refusalQuoteCharsMax)}, unknown to this MDM)` };
  return { code: entry.code, message: entry.message };
}

export interface SdcRegistration {
  /** Chosen by the SDC at its first start and kept: the MDM knows it by this. */
  guid: string;
  name: string | null;
  /** It takes binary maps (SdcOp.SetMap) and views without the map (SdcMaplessView). Absent: an older build. */
  mapBinary?: boolean;
  /** The map it holds (from before a reconnection): the MDM sends only what it lacks. */
  mapHeld?: MapHeld | null;
}

/** A volume mapped to an SDC, with what the SDC needs to route its IO. */
export interface SdcVolume {
  id: string;
  name: string;
  vtreeId: string;
  /** The volume's head generation in its V-Tree: every Read, Write, Trim and Allocation names it. */
  generation: number;
  poolId: string;
  sizeBytes: number;
  chunkBytes: number;
  accessMode: 'ReadWrite' | 'ReadOnly';
  /** No other SDC has it mapped: this SDC's record of which chunks hold data is the truth. */
  exclusive: boolean;
  /** QoS of this mapping, enforced by this SDC (docs/qos.md): requests and KiB per second, 0 = unlimited. */
  iopsLimit: number;
  bandwidthLimitKbps: number;
  /**
   * Burst, as librbd's `_burst` options: the rate allowed while an idle volume spends what it
   * saved, and for how long at most (0 = no burst; the limits above hold at all times).
   * Absent from an older MDM: no burst.
   */
  iopsBurst?: number;
  bandwidthBurstKbps?: number;
  burstSeconds?: number;
}

/** One mapped volume's QoS on an SDC: the limits it applies and what they held back, since the SDC started. */
export interface VolumeQosStats {
  volumeId: string;
  iopsLimit: number;
  bandwidthLimitKbps: number;
  /** Reads and writes counted (trims, zeroes and flushes move no data and are not limited). */
  requests: number;
  bytes: number;
  /** Requests that had to wait for tokens, and their waits summed. */
  throttledRequests: number;
  throttledMs: number;
  /** Requests waiting now. */
  waiting: number;
  /**
   * Client latency, for ScaleIO's userDataSdcReadLatency/userDataSdcWriteLatency: reads and
   * writes completed (below QoS, as the SDC's metrics count them) and their latencies summed,
   * in whole microseconds, since the SDC started. The MDM turns the difference between two
   * heartbeats into a rate (src/mdm/sdc-latency.ts). Absent from an older SDC, or from one
   * that does not time its IO (`--metrics off`); then the MDM reports no latency for it.
   */
  readsDone?: number;
  readLatencyUsSum?: number;
  writesDone?: number;
  writeLatencyUsSum?: number;
}

export interface SdcView {
  sdcId: string;
  name: string;
  map: PlacementMap;
  volumes: SdcVolume[];
}

/**
 * An SDC's view for an SDC that takes binary maps: no map (it comes by SdcOp.SetMap), but the
 * map it was made with. The SDC applies it only once it holds that map or a newer one (it asks
 * GetMapBinary first if not): the volumes' heads must be in its map before it routes IO to them.
 */
export interface SdcMaplessView extends Omit<SdcView, 'map'> {
  mapHeld: MapHeld;
}

export interface SdcHeartbeat {
  /** Volumes with NBD connections open on this SDC. */
  openVolumes: string[];
  /** Per volume mapped here (absent from an older SDC). */
  qos?: VolumeQosStats[];
}

export function parseSdcRegistration(payload: Buffer): SdcRegistration {
  const entry = parseJsonObject<SdcRegistration>(payload, 'registration');
  if (typeof entry.guid !== 'string' || !/^[0-9a-f-]{8,64}$/.test(entry.guid)) throw new InvalidArgumentError('registration.guid', 'must be 8 to 64 hex digits or dashes');
  if (entry.name !== null && entry.name !== undefined && typeof entry.name !== 'string') throw new InvalidArgumentError('registration.name', 'must be a string or null');
  return { guid: entry.guid, name: entry.name ?? null, ...parseMapOptions(entry) };
}
