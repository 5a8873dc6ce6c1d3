// An SDS's connection to the MDM (wire/mdm-session.ts does the connecting, heartbeats,
// reconnecting and following the Master): it registers with its address and devices,
// reports its statistics in every heartbeat, and serves the MDM's orders (placement maps,
// devices, rebuilds) as from role 'mdm'. It registers as taking binary maps, saying which
// map it holds (the state file keeps it): the MDM sends only the deltas it lacks.

import type { Logger } from 'pino';
import { MdmOp, type RebuildDone, type SdsRegistration } from '../wire/mdm-ops.js';
import { MdmSession } from '../wire/mdm-session.js';
import { SdsStatus } from '../wire/sds-ops.js';
import type { SdsIdentity, SdsService } from './service.js';

export class MdmLink {
  private readonly session: MdmSession;
  private readonly log: Logger;

  constructor(options: {
    /** Every MDM's wire address, HOST:PORT (see MdmSession): the link follows the Master. */
    mdmAddresses: readonly string[];
    identity: SdsIdentity;
    secret: Buffer;
    service: SdsService;
    /** HOST:PORT the SDS serves on, as the MDM should tell others. */
    address: string;
    /** Host label (sds start --host): the MDM never puts both copies of a chunk on one host. */
    host?: string;
    log: Logger;
  }) {
    this.log = options.log;
    const served = { role: 'mdm' as const, name: 'mdm' };
    this.session = new MdmSession({
      mdmAddresses: options.mdmAddresses,
      clusterId: options.identity.clusterId,
      secret: options.secret,
      role: 'sds',
      name: options.identity.name,
      log: options.log,
      onRequest: (request) => options.service.handle(served, request),
      heartbeat: () => Buffer.from(JSON.stringify(options.service.stats())),
      register: async (peer, mdm) => {
        const registration: SdsRegistration = {
          sdsId: options.identity.sdsId,
          name: options.identity.name,
          address: options.address,
          devices: options.service.registeredDevices(),
          ...(options.host === undefined ? {} : { host: options.host }),
          // Binary maps (SdsOp.SetMapBinary), from the map it kept across restarts.
          mapBinary: true,
          mapHeld: options.service.mapHeld(),
        };
        const reply = await peer.request(MdmOp.RegisterSds, Buffer.from(JSON.stringify(registration)));
        if (reply.status !== SdsStatus.Ok) throw new Error(`the MDM refused the registration: ${reply.payload.toString()}`);
        options.log.info({ mdm, mdmEpoch: (JSON.parse(reply.payload.toString()) as { epoch: number }).epoch }, 'registered with the MDM');
      },
    });
  }

  start(): void {
    this.session.start();
  }

  /**
   * Tells the MDM a rebuild is complete. A report lost with the connection is not repeated:
   * the finished job stays in the stats every heartbeat carries, where the MDM finds it too.
   */
  reportRebuildDone(done: RebuildDone): void {
    const peer = this.session.peer;
    if (peer === null) return;
    peer.request(MdmOp.RebuildDone, Buffer.from(JSON.stringify(done))).catch((err: unknown) => this.log.debug({ err }, 'rebuild report not delivered; the next heartbeat carries it'));
  }

  close(): void {
    this.session.close();
  }
}
