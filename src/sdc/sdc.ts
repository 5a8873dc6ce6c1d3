// The SDC's control side: its link to the MDM and the exports it derives from it. The SDC
// registers (by the GUID it keeps across restarts), receives its view — the placement map
// and the volumes mapped to it — at registration and whenever it changes (SdcOp.Update),
// heartbeats with the volumes its NBD clients have open, and fetches the map again on
// demand when an SDS says its epoch is stale. Each mapped volume is an NBD export named
// after it; an unmapped volume disappears from the list and new connections to it are
// refused, while connections already open keep their backend until they close.
//
// When the MDM is away, IO goes on from the cached map; the link reconnects, to whichever
// of the MDM addresses is the Master (wire/mdm-session.ts).

import type { Logger } from 'pino';
import { sdcMapRequestTimeoutMs } from '../common/limits.js';
import { MdmOp, SdcOp, type SdcView, type SdcVolume } from '../wire/mdm-ops.js';
import { MdmSession } from '../wire/mdm-session.js';
import type { WirePeer, WireReply, WireRequest } from '../wire/peer.js';
import { PeerPool } from '../wire/peer-pool.js';
import { parsePlacementMap, type PlacementMap } from '../wire/placement.js';
import { SdsStatus } from '../wire/sds-ops.js';
import type { ExportRegistry, NbdExport } from '../nbd/exports.js';
import { VolumeBackend, type VolumeRouter } from './volume-backend.js';

export interface SdcOptions {
  clusterId: string;
  secret: Buffer;
  guid: string;
  name: string | null;
  /** Every MDM's wire address, HOST:PORT (see MdmSession): the SDC follows the Master. */
  mdmAddresses: readonly string[];
  log: Logger;
}

interface VolumeExport extends NbdExport {
  readonly volume: SdcVolume;
  readonly backend: VolumeBackend;
}

export class Sdc implements ExportRegistry, VolumeRouter {
  private currentMap: PlacementMap = { epoch: 0, sds: {}, pools: {} };
  private readonly exports = new Map<string, VolumeExport>();
  private readonly sdsPeers: PeerPool;
  private readonly mdm: MdmSession;
  private refreshing: Promise<void> | null = null;
  /** Applying views one at a time keeps the export list consistent. */
  private applying: Promise<void> = Promise.resolve();
  private onFirstView: () => void = () => undefined;
  /** Resolves once the first view from the MDM is applied (exports are ready). */
  readonly ready: Promise<void>;
  sdcId: string | null = null;
  /** Counts NBD connections per volume id, for the heartbeat. */
  private readonly openCounts = new Map<string, number>();

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
      heartbeat: () => Buffer.from(JSON.stringify({ openVolumes: [...this.openCounts.keys()] })),
      register: async (peer, mdm) => {
        const reply = await peer.request(MdmOp.RegisterSdc, Buffer.from(JSON.stringify({ guid: options.guid, name: options.name })));
        if (reply.status !== SdsStatus.Ok) throw new Error(`the MDM refused the registration: ${reply.payload.toString()}`);
        await this.applyView(JSON.parse(reply.payload.toString()) as SdcView);
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
    const volume = (entry as Partial<VolumeExport>).volume;
    if (volume !== undefined) this.openCounts.set(volume.id, (this.openCounts.get(volume.id) ?? 0) + 1);
  }

  detached(entry: NbdExport): void {
    const volume = (entry as Partial<VolumeExport>).volume;
    if (volume === undefined) return;
    const count = (this.openCounts.get(volume.id) ?? 1) - 1;
    if (count <= 0) this.openCounts.delete(volume.id);
    else this.openCounts.set(volume.id, count);
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

  refreshMap(): Promise<void> {
    this.refreshing ??= this.fetchMap().finally(() => (this.refreshing = null));
    return this.refreshing;
  }

  private async fetchMap(): Promise<void> {
    const mdm = this.mdm.peer;
    if (mdm === null) return;
    try {
      const response = await mdm.request(MdmOp.GetMap, Buffer.alloc(0), { timeoutMs: sdcMapRequestTimeoutMs });
      if (response.status === SdsStatus.Ok) this.installMap(parsePlacementMap(JSON.parse(response.payload.toString())));
    } catch (err) {
      this.options.log.warn({ err }, 'could not fetch the map from the MDM; using the cached one');
    }
  }

  private installMap(map: PlacementMap): void {
    if (map.epoch < this.currentMap.epoch) return;
    if (map.epoch > this.currentMap.epoch) this.options.log.info({ epoch: map.epoch }, 'placement map installed');
    this.currentMap = map;
    this.sdsPeers.retain((sdsId) => map.sds[sdsId]?.address);
  }

  private async onMdmRequest(request: WireRequest): Promise<WireReply> {
    if (request.op !== SdcOp.Update) return { status: SdsStatus.UnknownOp, payload: Buffer.from(`op ${request.op} is not an SDC operation`) };
    try {
      await this.applyView(JSON.parse(request.payload.toString()) as SdcView);
      return { status: SdsStatus.Ok };
    } catch (err) {
      this.options.log.error({ err }, 'could not apply the view the MDM sent');
      return { status: SdsStatus.Failed, payload: Buffer.from((err as Error).message) };
    }
  }

  private applyView(view: SdcView): Promise<void> {
    const run = this.applying.then(() => this.applyViewNow(view));
    this.applying = run.catch(() => undefined);
    return run;
  }

  private async applyViewNow(view: SdcView): Promise<void> {
    this.sdcId = view.sdcId;
    this.installMap(parsePlacementMap(view.map));
    const wanted = new Map(view.volumes.map((volume) => [volume.name, volume]));
    for (const [name, entry] of this.exports) {
      const next = wanted.get(name);
      if (next === undefined || JSON.stringify(next) !== JSON.stringify(entry.volume)) {
        this.exports.delete(name);
        if (next === undefined) this.options.log.info({ volume: name }, 'volume unmapped: export removed');
      }
    }
    for (const volume of view.volumes) {
      if (this.exports.has(volume.name)) continue;
      try {
        const backend = await VolumeBackend.open(volume, this, this.options.log.child({ volume: volume.name }));
        this.exports.set(volume.name, { name: volume.name, description: backend.description, backend, volume });
        this.options.log.info({ volume: volume.name, sizeBytes: volume.sizeBytes, accessMode: volume.accessMode }, 'volume exported');
      } catch (err) {
        this.options.log.error({ err, volume: volume.name }, 'could not open the volume; it is not exported until the next update');
      }
    }
    this.onFirstView();
  }

  close(): void {
    this.mdm.close();
    this.sdsPeers.dropAll();
  }
}
