// SNMP traps for the alerting events of the event log (docs/events.md): SNMPv2c
// notifications, sent with net-snmp to every receiver given to the MDM (`mdm start
// --snmp-trap HOST[:PORT][,community=NAME]`). What they mean is defined by
// mibs/MESHBLOCK-MIB.txt:
//
//   enterprises.32473            meshblockMIB (RFC 5612's documentation enterprise number:
//                                 meshblock has no IANA Private Enterprise Number; a deployment
//                                 that has its own changes the MIB's one line and mibEnterprise)
//     .0.<n>                     the notifications, one per event type (mbSdsDown = .0.1, ...)
//     .1.1.<n>                   the event's objects, sent with every notification:
//                                 mbEventId, Time, Severity, Type, Object, ObjectName, Message, User, System
//
// Traps are datagrams: a receiver that is down misses them (SNMP's own rule; the event log
// keeps them, and `meshblock events --since ID` reads what a monitoring system missed). The
// Master sends them, for the events it records; a Slave sends none.

import type * as snmp from 'net-snmp';
import * as net from 'node:net';
import type { Logger } from 'pino';
import { InvalidArgumentError } from '../common/errors.js';
import { lazyModule } from '../common/lazy-module.js';
import { snmpTrapReceiversMax } from '../common/limits.js';
import type { EventSeverity, EventType, MdmEvent } from './events.js';

/** Loaded when the first trap receiver is set up (src/common/lazy-module.ts). */
const netSnmp = lazyModule<typeof snmp>('net-snmp');

/** The enterprise arc of MESHBLOCK-MIB (RFC 5612's example number; not registered to meshblock). */
export const mibEnterprise = '1.3.6.1.4.1.32473';
export const trapPortDefault = 162;
export const trapCommunityDefault = 'public';

/** The notification of each alerting event type (meshblockMIB.0.n); configChanged has none. */
export const notificationOids: Readonly<Partial<Record<EventType, string>>> = {
  sdsDown: `${mibEnterprise}.0.1`,
  sdsUp: `${mibEnterprise}.0.2`,
  deviceFailed: `${mibEnterprise}.0.3`,
  rebuildStarted: `${mibEnterprise}.0.4`,
  rebuildFinished: `${mibEnterprise}.0.5`,
  capacityHigh: `${mibEnterprise}.0.6`,
  capacityCritical: `${mibEnterprise}.0.7`,
  capacityNormal: `${mibEnterprise}.0.8`,
  loginRefused: `${mibEnterprise}.0.9`,
};

/** The varbinds' objects (meshblockMIB.1.1.n, accessible-for-notify scalars: sent with instance .0). */
export const eventObjectOids = {
  id: `${mibEnterprise}.1.1.1`,
  time: `${mibEnterprise}.1.1.2`,
  severity: `${mibEnterprise}.1.1.3`,
  type: `${mibEnterprise}.1.1.4`,
  object: `${mibEnterprise}.1.1.5`,
  objectName: `${mibEnterprise}.1.1.6`,
  message: `${mibEnterprise}.1.1.7`,
  user: `${mibEnterprise}.1.1.8`,
  system: `${mibEnterprise}.1.1.9`,
} as const;

/** MbEventSeverity's values in the MIB. */
export const severityValues: Readonly<Record<EventSeverity, number>> = { info: 1, warning: 2, error: 3, critical: 4 };

export interface TrapReceiver {
  host: string;
  port: number;
  community: string;
}

/**
 * `HOST[:PORT][,community=NAME]`: an IPv4 or IPv6 address ([::1]:1162) or a host name, port
 * 162 by default, community `public` by default (1 to 64 printable characters, no comma).
 */
export function parseTrapReceiver(field: string, text: string): TrapReceiver {
  const [address = '', ...options] = text.split(',');
  let community = trapCommunityDefault;
  for (const option of options) {
    const match = /^community=([\x21-\x7e]{1,64})$/.exec(option.trim());
    if (match === null) throw new InvalidArgumentError(field, `'${option}' in '${text}' is not community=NAME (1 to 64 printable characters)`);
    community = match[1] as string;
  }
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(address.trim());
  const plain = /^([A-Za-z0-9.-]+)(?::(\d+))?$/.exec(address.trim());
  const match = bracketed ?? plain;
  if (match === null || (bracketed !== null && net.isIPv6(match[1] as string) === false)) {
    throw new InvalidArgumentError(field, `'${text}' is not HOST[:PORT][,community=NAME]`);
  }
  const port = match[2] === undefined ? trapPortDefault : Number(match[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new InvalidArgumentError(field, `port of '${text}' must be 1 to 65535`);
  return { host: match[1] as string, port, community };
}

/** `--snmp-trap`, given once or repeated. */
export function parseTrapReceivers(field: string, given: readonly string[]): TrapReceiver[] {
  if (given.length > snmpTrapReceiversMax) throw new InvalidArgumentError(field, `at most ${snmpTrapReceiversMax} receivers, got ${given.length}`);
  const receivers = given.map((text) => parseTrapReceiver(field, text));
  const seen = new Set<string>();
  for (const receiver of receivers) {
    const key = `${receiver.host}:${receiver.port}`;
    if (seen.has(key)) throw new InvalidArgumentError(field, `${key} is given twice`);
    seen.add(key);
  }
  return receivers;
}

/** The varbinds of an event's notification (after sysUpTime and snmpTrapOID, which net-snmp adds). */
export function eventVarbinds(event: MdmEvent, systemId: string): snmp.Varbind[] {
  const { ObjectType } = netSnmp();
  // DisplayString: printable ASCII within the MIB's SIZE (the event log keeps the full text).
  const text = (oid: string, value: string, bytesMax = 255): snmp.Varbind => ({ oid: `${oid}.0`, type: ObjectType.OctetString, value: Buffer.from(value.replace(/[^\x20-\x7e]/g, '?').slice(0, bytesMax), 'ascii') });
  return [
    // Unsigned32: ids past 2^32 - 1 wrap in the trap (the log's own id is exact).
    { oid: `${eventObjectOids.id}.0`, type: ObjectType.Gauge, value: event.id % 2 ** 32 },
    text(eventObjectOids.time, event.time, 64),
    { oid: `${eventObjectOids.severity}.0`, type: ObjectType.Integer, value: severityValues[event.severity] },
    text(eventObjectOids.type, event.type, 64),
    text(eventObjectOids.object, event.object),
    text(eventObjectOids.objectName, event.objectName ?? ''),
    text(eventObjectOids.message, event.message),
    text(eventObjectOids.user, event.user ?? '', 64),
    text(eventObjectOids.system, systemId, 64),
  ];
}

export class SnmpTrapSender {
  private readonly sessions: Array<{ receiver: TrapReceiver; session: snmp.Session }>;

  constructor(
    receivers: readonly TrapReceiver[],
    private readonly systemId: string,
    private readonly log: Logger,
  ) {
    const { createSession, Version2c } = netSnmp();
    this.sessions = receivers.map((receiver) => {
      const session = createSession(receiver.host, receiver.community, { version: Version2c, trapPort: receiver.port, transport: net.isIPv6(receiver.host) ? 'udp6' : 'udp4' });
      // A socket error (e.g. an ICMP unreachable reported back) must not end the MDM.
      session.on('error', (err: unknown) => this.log.warn({ err, receiver: `${receiver.host}:${receiver.port}` }, 'SNMP session error'));
      return { receiver, session };
    });
  }

  /** Sends the event's notification to every receiver; events without one (configChanged) are not sent. */
  send(event: MdmEvent): void {
    const oid = notificationOids[event.type];
    if (oid === undefined) return;
    const varbinds = eventVarbinds(event, this.systemId);
    for (const { receiver, session } of this.sessions) {
      try {
        session.trap(oid, varbinds, (error) => {
          if (error !== null) this.log.warn({ err: error, receiver: `${receiver.host}:${receiver.port}`, eventId: event.id }, 'SNMP trap not sent');
          else if (this.log.isLevelEnabled('debug')) this.log.debug({ receiver: `${receiver.host}:${receiver.port}`, eventId: event.id, type: event.type }, 'SNMP trap sent');
        });
      } catch (err) {
        // net-snmp throws synchronously on a value it cannot encode: a bug of ours, logged.
        this.log.error({ err, eventId: event.id }, 'SNMP trap could not be encoded');
      }
    }
  }

  close(): void {
    for (const { session } of this.sessions) session.close();
  }
}
