// The MDM's event log, its watch and its SNMP traps, wired for `mdm start` (docs/events.md):
// one MDM keeps the log in its data directory; an MDM of a cluster keeps it in etcd, and only
// the Master watches and sends traps. mdm-start.ts calls startMdmEvents once and closes what
// it returns at shutdown.

import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import type { MdmController } from '../mdm/controller.js';
import { EtcdEventStore, EventLog, EventWatch, FileEventStore } from '../mdm/events.js';
import { SnmpTrapSender, parseTrapReceivers } from '../mdm/snmp-traps.js';

export interface MdmEvents {
  events: EventLog;
  close(): Promise<void>;
}

export interface MdmEventsOptions {
  /** The data directory (one MDM) or the cluster's etcd client (an MDM cluster). */
  where: { dataDir: string } | { etcd: Etcd3 };
  /** `--snmp-trap` values, as given. */
  snmpTrap: readonly string[];
  systemId: string;
  controller: () => MdmController;
  /** True while this MDM acts (one MDM: always; a cluster's: while Master). */
  active: () => boolean;
  log: Logger;
}

export async function startMdmEvents(options: MdmEventsOptions): Promise<MdmEvents> {
  const receivers = parseTrapReceivers('--snmp-trap', options.snmpTrap);
  const log = options.log.child({ component: 'events' });
  const store = 'dataDir' in options.where ? new FileEventStore(options.where.dataDir, log) : new EtcdEventStore(options.where.etcd, log);
  const events = EventLog.create(store, log);
  if ('dataDir' in options.where) {
    await events.reload();
  } else {
    // etcd may not answer yet (members start after the MDMs): the watch reads the log again
    // when this MDM becomes Master, which needs etcd anyway.
    await events.reload().catch((err: unknown) => log.warn({ err }, 'the event log could not be read from etcd yet; read again on becoming Master'));
  }
  const traps = receivers.length > 0 ? new SnmpTrapSender(receivers, options.systemId, log.child({ component: 'snmp-traps' })) : null;
  if (traps !== null) {
    events.onEvent((event) => traps.send(event));
    log.info({ receivers: receivers.map((receiver) => `${receiver.host}:${receiver.port}`) }, 'SNMP traps go to these receivers');
  }
  const watch = new EventWatch({ events, controller: options.controller, active: options.active, log });
  watch.start();
  return {
    events,
    close: async () => {
      watch.stop();
      await events.close();
      traps?.close();
    },
  };
}
