// The SDC's control side: its link to the MDM and the exports it derives from it. The SDC
// registers (by the GUID it keeps across restarts), receives its view — the placement map
// and the volumes mapped to it — at registration and whenever it changes (SdcOp.Update),
// heartbeats with the volumes its NBD clients have open, and fetches the map again on
// demand when an SDS says its epoch is stale. Each mapped volume is an NBD export named
// after it; an unmapped volume disappears from the list and new connections to it are
// refused, while connections already open keep their backend until they close.
//
// A volume's head generation moves when it is snapshotted or restored (docs/snapshots.md).
// That alone does not replace its export: every backend of the volume, the export's and
// those open connections still hold, follows the new head, so IO in flight goes on in the
// new head. The SDC learns of it from the MDM's update, or, when an SDS refused a piece
// first, by asking: a map in which a backend's head is no longer a head means the volumes
// changed too, and the SDC asks for its whole view again.
//
// Binary maps (docs/map-encoding.md): the SDC registers saying it takes them (and which map it
// holds, after a reconnection). An MDM that knows them sends the map as binary updates
// (SdcOp.SetMap: the deltas from the map held, or the whole map) and the views without the
// map, naming the map each was made with; the SDC applies a view only once it holds that map
// (asking GetMapBinary first if not), so it never routes IO to heads its map lacks. An update
// it cannot apply is refused whole (the map held stays), logged, and it asks for the map
// again. An older MDM answers with the map in the view, as JSON, and that path stays.
//
// When the MDM is away, IO goes on from the cached map; the link reconnects, to whichever
// of the MDM addresses is the Master (wire/mdm-session.ts).
//
// QoS (docs/qos.md): each mapped volume has one QosLimiter, keyed by volume id, shared by
// every NBD connection to it here (multi-conn clients get one limit, not one per
// connection), and each export's backend is a QosBackend over the VolumeBackend. A view
// that changes only a volume's limits keeps the export and sets the new limits on the
// limiter, so connections already open feel them at once; an unmap releases its waiters.
// Another SDC mapping the same volume has its own limiter: limits are per mapping.

import type { Logger } from 'pino';
import { sdcMapRequestTimeoutMs } from '../common/limits.js';
import { MdmOp, SdcOp, type MapRefusal, type SdcHeartbeat, type SdcMaplessView, type SdcRegistration, type SdcView, type SdcVolume, type VolumeQosStats } from '../wire/mdm-ops.js';
import { MapCodecError, applyUpdateHeld, decodeMapUpdate, mapDigest, parseMapHeld, type MapHeld } from '../wire/map-codec.js';
import { MdmSession } from '../wire/mdm-session.js';
import type { WirePeer, WireReply, WireRequest } from '../wire/peer.js';
import { PeerPool } from '../wire/peer-pool.js';
import { parsePlacementMap, vtreeOf, type PlacementMap } from '../wire/placement.js';
import { SdsStatus } from '../wire/sds-ops.js';
import type { ExportRegistry, NbdExport } from '../nbd/exports.js';
import { QosBackend, QosLimiter, type QosLimits } from '../nbd/qos.js';
import { IoStats } from '../common/metrics.js';
import { VolumeBackend, volumeIoOps, type VolumeIoStats, type VolumeRouter } from './volume-backend.js';

export interface SdcOptions {
  clusterId: string;
  secret: Buffer;
  guid: string;
  name: string | null;
  /** Every MDM's wire address, HOST:PORT (see MdmSession): the SDC follows the Master. */
  mdmAddresses: readonly string[];
  log: Logger;
  /** Called with the mapped volumes after each view is applied (sdc start --attach-mapped). */
  onVolumes?: (volumes: readonly SdcVolume[]) => void;
  /**
   * Which volumes the heartbeat reports open, given the NBD connections per volume id; by
   * default every volume with a connection (--attach-mapped discounts its own kernel client).
   */
  openVolumes?: (connections: ReadonlyMap<string, number>) => string[];
}

/** A mapped volume's export (what `find` returns for it). */
export interface VolumeExport extends NbdExport {
  readonly volume: SdcVolume;
  /** What NBD connections use: `volumeBackend` behind the volume's shared limiter. */
  readonly backend: QosBackend;
  readonly volumeBackend: VolumeBackend;
}

export class Sdc implements ExportRegistry, VolumeRouter {
  private currentMap: PlacementMap = { epoch: 0, sds: {}, pools: {} };
  /** Whether currentMap came from the MDM (before: a placeholder, no map held). */
  private mapReceived = false;
  /** mapDigest(currentMap), once known. */
  private currentDigest: number | null = null;
  /** A view refused because its map had not arrived: applied once the map has. */
  private pendingView: SdcMaplessView | null = null;
  private readonly exports = new Map<string, VolumeExport>();
  private readonly sdsPeers: PeerPool;
  private readonly mdm: MdmSession;
  private refreshing: Promise<void> | null = null;
  /** The MDM sends binary maps and views without the map (its last view said so). */
  private mdmBinary = false;
  /** The map epoch of the last view applied: the volumes are as the MDM had them then. */
  private viewEpoch = 0;
  /** Applying views one at a time keeps the export list consistent. */
  private applying: Promise<void> = Promise.resolve();
  private onFirstView: () => void = () => undefined;
  /** Resolves once the first view from the MDM is applied (exports are ready). */
  readonly ready: Promise<void>;
  sdcId: string | null = null;
  /** Counts NBD connections per volume id, for the heartbeat. */
  private readonly openCounts = new Map<string, number>();
  /**
   * Counts NBD connections per backend: a connection keeps the backend it opened even after
   * its export was replaced (a resize, a new access mode), and that backend must still
   * follow the volume's head.
   */
  private readonly attachedBackends = new Map<VolumeBackend, number>();
  /**
   * One limiter per volume id: of every mapped volume, and of an unmapped one while
   * connections to it are still open (released: they no longer wait), so that a volume
   * mapped again meets its open connections in the same limiter.
   */
  private readonly limiters = new Map<string, QosLimiter>();
  /** The volumes of the last view applied, by id (the heartbeat reports their QoS). */
  private mapped = new Map<string, SdcVolume>();
  /** What the metrics count of each volume's IO, by volume id: kept as long as its limiter. */
  private readonly volumeIo = new Map<string, VolumeIoStats>();
  /** Maps fetched from the MDM on demand (a stale epoch, an unreachable SDS), and views applied: for the metrics. */
  mapRefreshCount = 0;
  viewCount = 0;

  constructor(private readonly options: SdcOptions) {
    this.sdsPeers = new PeerPool({ clusterId: options.clusterId, secret: options.secret, role: 'sdc', name: options.name ?? options.guid, log: options.log });
    this.ready = new Promise((resolve) => (this.onFirstView = resolve));
    this.mdm = new MdmSession({
      mdmAddresses: options.mdmAddresses,
      clusterId: options.clusterId,
      secret: options.secret,
      role: 'sdc',
      name: options.name ?? options.guid,
      log: options.log,
      onRequest: (request) => this.onMdmRequest(request),
      heartbeat: () => {
        const openVolumes = options.openVolumes?.(this.openCounts) ?? [...this.openCounts.keys()];
        const heartbeat: SdcHeartbeat = { openVolumes, qos: this.qosStats() };
        return Buffer.from(JSON.stringify(heartbeat));
      },
      register: async (peer, mdm) => {
        const registration: SdcRegistration = { guid: options.guid, name: options.name, mapBinary: true, mapHeld: this.mapHeld() };
        const reply = await peer.request(MdmOp.RegisterSdc, Buffer.from(JSON.stringify(registration)));
        if (reply.status !== SdsStatus.Ok) throw new Error(`the MDM refused the registration: ${reply.payload.toString()}`);
        await this.applyView(JSON.parse(reply.payload.toString()) as SdcView | SdcMaplessView, peer);
        options.log.info({ mdm, sdcId: this.sdcId, volumes: this.exports.size }, 'registered with the MDM');
      },
    });
  }

  start(): void {
    this.mdm.start();
  }

  // --- ExportRegistry ------------------------------------------------------------------

  list(): readonly NbdExport[] {
    return [...this.exports.values()];
  }

  find(name: string): NbdExport | undefined {
    if (name === '') return this.exports.size === 1 ? [...this.exports.values()][0] : undefined;
    return this.exports.get(name);
  }

  attached(entry: NbdExport): void {
    const { volume, volumeBackend } = entry as Partial<VolumeExport>;
    if (volume === undefined || !(volumeBackend instanceof VolumeBackend)) return;
    const opened = (this.openCounts.get(volume.id) ?? 0) + 1;
    this.openCounts.set(volume.id, opened);
    // The MDM refuses to restore or unmap an open volume: tell it now, not up to a second later.
    if (opened === 1) this.mdm.heartbeatSoon();
    this.attachedBackends.set(volumeBackend, (this.attachedBackends.get(volumeBackend) ?? 0) + 1);
  }

  detached(entry: NbdExport): void {
    const { volume, volumeBackend } = entry as Partial<VolumeExport>;
    if (volume === undefined || !(volumeBackend instanceof VolumeBackend)) return;
    const count = (this.openCounts.get(volume.id) ?? 1) - 1;
    if (count <= 0) {
      this.openCounts.delete(volume.id);
      // The last connection to an unmapped volume is gone: so are its limiter and counters.
      if (!this.mapped.has(volume.id)) {
        this.limiters.delete(volume.id);
        this.volumeIo.delete(volume.id);
      }
    } else {
      this.openCounts.set(volume.id, count);
    }
    const backendCount = (this.attachedBackends.get(volumeBackend) ?? 1) - 1;
    if (backendCount <= 0) this.attachedBackends.delete(volumeBackend);
    else this.attachedBackends.set(volumeBackend, backendCount);
  }

  /** Every backend in use: the exports', and those connections hold. */
  private backends(): Set<VolumeBackend> {
    const all = new Set(this.attachedBackends.keys());
    for (const entry of this.exports.values()) all.add(entry.volumeBackend);
    return all;
  }

  // --- QoS -------------------------------------------------------------------------------

  /** The volume's limiter, shared by all its exports and connections here. */
  private limiterOf(volumeId: string): QosLimiter {
    let limiter = this.limiters.get(volumeId);
    if (limiter === undefined) {
      limiter = new QosLimiter();
      this.limiters.set(volumeId, limiter);
    }
    return limiter;
  }

  /**
   * Sets the view's limits of `volume` on its limiter, now: waiting requests follow them.
   * Limits the limiter refuses (an MDM that skipped its own checks) are logged and the
   * previous ones stay, rather than failing the whole view and every other volume in it.
   */
  private applyLimits(volume: SdcVolume): void {
    const limiter = this.limiterOf(volume.id);
    const limits = limitsOf(volume);
    if (sameLimits(limiter.limits, limits)) return;
    try {
      limiter.setLimits(limits);
      this.options.log.info({ volume: volume.name, ...limits }, 'QoS limits applied');
    } catch (err) {
      this.options.log.error({ err, volume: volume.name }, 'the MDM sent QoS limits this SDC cannot apply; the previous ones stay');
    }
  }

  /** What the heartbeat reports: every mapped volume's limits, QoS counters and client latency sums, since this SDC started. */
  qosStats(): VolumeQosStats[] {
    const all: VolumeQosStats[] = [];
    for (const volumeId of this.mapped.keys()) {
      const limiter = this.limiters.get(volumeId);
      if (limiter === undefined) continue;
      const stats = limiter.stats();
      // Latency as the metrics already measure it (volume-backend.ts): no second clock read.
      const io = this.ioOf(volumeId);
      const reads = io.op('read');
      const writes = io.op('write');
      // IO counted but never timed (`--metrics off` skips the clock): no latency to report,
      // rather than a mean of 0 µs. A timed request always takes some time.
      const timed = (reads.count === 0 || reads.sumSeconds > 0) && (writes.count === 0 || writes.sumSeconds > 0);
      const latency = timed ? { readsDone: reads.count, readLatencyUsSum: Math.round(reads.sumSeconds * 1e6), writesDone: writes.count, writeLatencyUsSum: Math.round(writes.sumSeconds * 1e6) } : {};
      all.push({
        volumeId,
        iopsLimit: limiter.limits.iopsLimit,
        bandwidthLimitKbps: limiter.limits.bandwidthLimitKbps,
        requests: stats.requests,
        bytes: stats.bytes,
        throttledRequests: stats.throttledRequests,
        throttledMs: Math.round(stats.throttledMs),
        waiting: stats.waiting,
        ...latency,
      });
    }
    return all;
  }

  // --- metrics (sdc/metrics.ts) ----------------------------------------------------------

  /** The volume's IO counters, shared by all its backends here. */
  private ioOf(volumeId: string): VolumeIoStats {
    let io = this.volumeIo.get(volumeId);
    if (io === undefined) {
      io = new IoStats(volumeIoOps);
      this.volumeIo.set(volumeId, io);
    }
    return io;
  }

  /** Every mapped volume with its IO counters and its limiter (for the metrics, at a scrape). */
  mappedVolumes(): Array<{ volume: SdcVolume; io: VolumeIoStats; limiter: QosLimiter | undefined }> {
    return [...this.mapped.values()].map((volume) => ({ volume, io: this.ioOf(volume.id), limiter: this.limiters.get(volume.id) }));
  }

  /** Whether the link to the MDM is up now. */
  get mdmConnected(): boolean {
    return this.mdm.peer !== null;
  }

  // --- VolumeRouter --------------------------------------------------------------------

  map(): PlacementMap {
    return this.currentMap;
  }

  peer(sdsId: string): Promise<WirePeer> {
    const address = this.currentMap.sds[sdsId]?.address;
    if (address === undefined) return Promise.reject(new Error(`SDS ${sdsId} is not in map epoch ${this.currentMap.epoch}`));
    return this.sdsPeers.get(sdsId, address);
  }

  connectedPeer(sdsId: string): WirePeer | null {
    const address = this.currentMap.sds[sdsId]?.address;
    return address === undefined ? null : this.sdsPeers.connected(sdsId, address);
  }

  refreshView(): Promise<void> {
    this.refreshing ??= this.fetchView().finally(() => (this.refreshing = null));
    return this.refreshing;
  }

  private async fetchView(): Promise<void> {
    const mdm = this.mdm.peer;
    if (mdm === null) return;
    this.mapRefreshCount += 1;
    try {
      if (this.mdmBinary) {
        await this.fetchMap(mdm);
      } else {
        const response = await mdm.request(MdmOp.GetMap, Buffer.alloc(0), { timeoutMs: sdcMapRequestTimeoutMs });
        if (response.status === SdsStatus.Ok) this.installMap(parsePlacementMap(JSON.parse(response.payload.toString())), null);
      }
      // Only a map newer than the last view can tell of heads the SDC has not heard of (a
      // removed volume's connection, still open, would otherwise ask at every refresh).
      const moved = [...this.backends()].filter((backend) => !isHead(this.currentMap, backend.volume));
      if (moved.length === 0 || this.currentMap.epoch <= this.viewEpoch) return;
      // The MDM's update with the new heads may be on its way, but a piece waits for it now.
      // The MDM answers a registration of a known GUID with the SDC's view (the id and the
      // name stay: a null name keeps the one the MDM has).
      this.options.log.info({ volumes: moved.map((backend) => backend.volume.name), epoch: this.currentMap.epoch }, 'volume heads moved; asking the MDM for the volumes');
      const registration: SdcRegistration = { guid: this.options.guid, name: null, mapBinary: true, mapHeld: this.mapHeld() };
      const reply = await mdm.request(MdmOp.RegisterSdc, Buffer.from(JSON.stringify(registration)), { timeoutMs: sdcMapRequestTimeoutMs });
      if (reply.status !== SdsStatus.Ok) throw new Error(`the MDM did not give the view: ${reply.payload.toString()}`);
      await this.applyView(JSON.parse(reply.payload.toString()) as SdcView | SdcMaplessView, mdm);
    } catch (err) {
      this.options.log.warn({ err }, 'could not fetch the view from the MDM; using the cached one');
    }
  }

  /** Installs a map (its digest when known: null, computed when asked); an older one is ignored. */
  private installMap(map: PlacementMap, digest: number | null): void {
    if (map.epoch < this.currentMap.epoch) return;
    if (map.epoch > this.currentMap.epoch) this.options.log.info({ epoch: map.epoch }, 'placement map installed');
    this.currentMap = map;
    this.currentDigest = digest;
    this.mapReceived = true;
    this.sdsPeers.retain((sdsId) => map.sds[sdsId]?.address);
  }

  /** The map this SDC holds, as it tells the MDM; null before the first. */
  mapHeld(): MapHeld | null {
    if (!this.mapReceived) return null;
    this.currentDigest ??= mapDigest(this.currentMap);
    return { epoch: this.currentMap.epoch, digest: this.currentDigest };
  }

  /** Whether the map held is `wanted` or newer (a view made with `wanted` may be applied). */
  private holdsMap(wanted: MapHeld): boolean {
    const held = this.mapHeld();
    return held !== null && (held.epoch > wanted.epoch || (held.epoch === wanted.epoch && held.digest === wanted.digest));
  }

  /** Applies a binary MapUpdate whole, or throws MapCodecError with the map held unchanged. */
  private applyMapUpdate(payload: Buffer): void {
    const update = decodeMapUpdate(payload);
    if (update.kind === 'current') return;
    const held = this.mapHeld();
    const next = applyUpdateHeld(held === null ? null : { map: this.currentMap, digest: held.digest }, update);
    this.installMap(next.map, next.digest);
    this.options.log.debug({ update: update.kind, epoch: next.map.epoch, bytes: payload.length }, 'binary map update applied');
    // A view that waited for this map.
    const pending = this.pendingView;
    if (pending !== null && this.holdsMap(pending.mapHeld)) {
      this.pendingView = null;
      this.applyView(pending, null).catch((err: unknown) => this.options.log.error({ err }, 'could not apply the view that waited for its map'));
    }
  }

  /** Asks the MDM for the map from what this SDC holds (GetMapBinary). */
  private async fetchMap(mdm: WirePeer): Promise<void> {
    const held = this.mapHeld();
    const response = await mdm.request(MdmOp.GetMapBinary, held === null ? Buffer.alloc(0) : Buffer.from(JSON.stringify(held)), { timeoutMs: sdcMapRequestTimeoutMs });
    if (response.status !== SdsStatus.Ok) throw new Error(`the MDM did not give the map: ${response.payload.toString().slice(0, 200)}`);
    this.applyMapUpdate(response.payload);
  }

  /** SdcOp.SetMap: applied whole, or refused whole (logged; the SDC asks for the map again). */
  private onSetMap(payload: Buffer): WireReply {
    try {
      this.applyMapUpdate(payload);
      return { status: SdsStatus.Ok, payload: Buffer.from(JSON.stringify(this.mapHeld())) };
    } catch (err) {
      if (!(err instanceof MapCodecError)) throw err;
      const refusal: MapRefusal = { code: err.code as MapRefusal['code'], message: err.message, held: this.mapHeld() };
      this.options.log.error({ err, held: refusal.held }, 'refused a map update from the MDM (the map held stays); asking for the map again');
      void this.refreshView();
      return { status: SdsStatus.Failed, payload: Buffer.from(JSON.stringify(refusal)) };
    }
  }

  private async onMdmRequest(request: WireRequest): Promise<WireReply> {
    if (request.op === SdcOp.SetMap) return this.onSetMap(request.payload);
    if (request.op !== SdcOp.Update) return { status: SdsStatus.UnknownOp, payload: Buffer.from(`op ${request.op} is not an SDC operation`) };
    try {
      await this.applyView(JSON.parse(request.payload.toString()) as SdcView | SdcMaplessView, this.mdm.peer);
      return { status: SdsStatus.Ok };
    } catch (err) {
      this.options.log.error({ err }, 'could not apply the view the MDM sent');
      return { status: SdsStatus.Failed, payload: Buffer.from((err as Error).message) };
    }
  }

  /** `mdm`: where to ask for a binary view's map if it has not arrived (null: wait for it). */
  private applyView(view: SdcView | SdcMaplessView, mdm: WirePeer | null): Promise<void> {
    const run = this.applying.then(() => this.applyViewNow(view, mdm));
    this.applying = run.catch(() => undefined);
    return run;
  }

  private async applyViewNow(view: SdcView | SdcMaplessView, mdm: WirePeer | null): Promise<void> {
    this.sdcId = view.sdcId;
    this.viewCount += 1;
    let viewEpoch: number;
    if ('map' in view) {
      // An MDM of an older build (or one that does not know this SDC takes binary maps).
      this.mdmBinary = false;
      const viewMap = parsePlacementMap(view.map);
      if (viewMap.epoch < this.viewEpoch) {
        // Overtaken (an update and the SDC's own request for its view crossed): applying it
        // would move heads back.
        this.options.log.debug({ epoch: viewMap.epoch, viewEpoch: this.viewEpoch }, 'older view ignored');
        return;
      }
      this.installMap(viewMap, null);
      viewEpoch = viewMap.epoch;
    } else {
      this.mdmBinary = true;
      const wanted = parseMapHeld(view.mapHeld, 'view.mapHeld');
      if (wanted === null) throw new MapCodecError('MB_ERR_MAP_CORRUPT', 'a view with neither map nor mapHeld');
      if (wanted.epoch < this.viewEpoch) {
        this.options.log.debug({ epoch: wanted.epoch, viewEpoch: this.viewEpoch }, 'older view ignored');
        return;
      }
      if (!this.holdsMap(wanted) && mdm !== null) await this.fetchMap(mdm);
      if (!this.holdsMap(wanted)) {
        // Never routed with a map older than its volumes: kept until that map is applied.
        this.pendingView = { ...view, mapHeld: wanted };
        throw new MapCodecError('MB_ERR_MAP_BASE', `the view was made with map epoch ${wanted.epoch} (digest ${wanted.digest}), this SDC holds ${JSON.stringify(this.mapHeld())}: applied once that map is here`);
      }
      if (this.pendingView !== null && this.pendingView.mapHeld.epoch <= wanted.epoch) this.pendingView = null;
      viewEpoch = wanted.epoch;
    }
    this.viewEpoch = Math.max(this.viewEpoch, viewEpoch);
    // First every backend in use takes the new head and access mode, so that no piece is
    // sent to a head the view says has moved.
    const byId = new Map(view.volumes.map((volume) => [volume.id, volume]));
    for (const backend of this.backends()) {
      const next = byId.get(backend.volume.id);
      if (next !== undefined && next.vtreeId === backend.volume.vtreeId) backend.follow(next);
    }
    // Limits next, on the limiters open connections share: a new limit holds for them at
    // once. An unmapped volume's waiters are let go (the connections that hold them see the
    // volume's IO fail or succeed as the SDSs decide, but never wait on a limit no one sets).
    this.mapped = byId;
    for (const volume of view.volumes) this.applyLimits(volume);
    for (const [volumeId, limiter] of this.limiters) {
      if (byId.has(volumeId)) continue;
      limiter.release();
      if (!this.openCounts.has(volumeId)) {
        this.limiters.delete(volumeId);
        this.volumeIo.delete(volumeId);
      }
    }
    const wanted = new Map(view.volumes.map((volume) => [volume.name, volume]));
    for (const [name, entry] of this.exports) {
      const next = wanted.get(name);
      if (next !== undefined && sameButHead(next, entry.volume)) {
        // Only the head moved (a snapshot, a restore) or the limits changed (applied above):
        // the export and its backend stay.
        this.exports.set(name, { ...entry, volume: next });
        continue;
      }
      this.exports.delete(name);
      if (next === undefined) this.options.log.info({ volume: name }, 'volume unmapped: export removed');
    }
    for (const volume of view.volumes) {
      if (this.exports.has(volume.name)) continue;
      try {
        const volumeBackend = await VolumeBackend.open(volume, this, this.options.log.child({ volume: volume.name }), this.ioOf(volume.id));
        const backend = new QosBackend(volumeBackend, this.limiterOf(volume.id));
        this.exports.set(volume.name, { name: volume.name, description: backend.description, backend, volumeBackend, volume });
        this.options.log.info({ volume: volume.name, sizeBytes: volume.sizeBytes, accessMode: volume.accessMode }, 'volume exported');
      } catch (err) {
        this.options.log.error({ err, volume: volume.name }, 'could not open the volume; it is not exported until the next update');
      }
    }
    this.onFirstView();
    // The volumes exported: one that could not be opened is offered again with the next view.
    this.options.onVolumes?.([...this.exports.values()].map((entry) => entry.volume));
  }

  close(): void {
    this.mdm.close();
    this.sdsPeers.dropAll();
    // Nothing may wait on a limit once the SDC stops (and no limiter's timer may keep the
    // process alive).
    for (const limiter of this.limiters.values()) limiter.release();
  }
}

/** Whether the volume's generation is still a head of its V-Tree in `map`. */
function isHead(map: PlacementMap, volume: SdcVolume): boolean {
  return vtreeOf(map, volume.vtreeId).heads.some((head) => head.generation === volume.generation);
}

/**
 * Two descriptions of a volume that differ at most in the head generation and the QoS
 * limits: neither needs a new export (limits live in the volume's limiter).
 */
function sameButHead(a: SdcVolume, b: SdcVolume): boolean {
  return JSON.stringify(withoutHeadOrLimits(a)) === JSON.stringify(withoutHeadOrLimits(b));
}

function withoutHeadOrLimits(volume: SdcVolume): SdcVolume {
  return { ...volume, generation: 0, iopsLimit: 0, bandwidthLimitKbps: 0, iopsBurst: 0, bandwidthBurstKbps: 0, burstSeconds: 0 };
}

/** The limits the view gives a mapping; burst fields an older MDM leaves out mean no burst. */
function limitsOf(volume: SdcVolume): QosLimits {
  return {
    iopsLimit: volume.iopsLimit,
    bandwidthLimitKbps: volume.bandwidthLimitKbps,
    iopsBurst: volume.iopsBurst ?? 0,
    bandwidthBurstKbps: volume.bandwidthBurstKbps ?? 0,
    burstSeconds: volume.burstSeconds ?? 0,
  };
}

function sameLimits(a: Readonly<QosLimits>, b: Readonly<QosLimits>): boolean {
  return a.iopsLimit === b.iopsLimit && a.bandwidthLimitKbps === b.bandwidthLimitKbps && a.iopsBurst === b.iopsBurst && a.bandwidthBurstKbps === b.bandwidthBurstKbps && a.burstSeconds === b.burstSeconds;
}
