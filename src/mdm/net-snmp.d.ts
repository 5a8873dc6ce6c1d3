// The part of net-snmp (npm, no types of its own) that src/mdm/snmp-traps.ts uses: a v1/v2c
// session that sends traps. Written after net-snmp's index.js (Session.create, Session.trap,
// ObjectType, Version2c); widen it when more is used.

declare module 'net-snmp' {
  import type { EventEmitter } from 'node:events';

  export const Version1: 0;
  export const Version2c: 1;

  export const ObjectType: {
    readonly Integer: 2;
    readonly OctetString: 4;
    readonly OID: 6;
    readonly Gauge: 66;
    readonly TimeTicks: 67;
  };

  export interface Varbind {
    oid: string;
    type: number;
    value: string | number | Buffer;
  }

  export interface SessionOptions {
    version?: 0 | 1;
    /** The receiver's port for traps (default 162). */
    trapPort?: number;
    transport?: 'udp4' | 'udp6';
  }

  export interface Session extends EventEmitter {
    /** A v2c trap: snmpTrapOID `oid`, then `varbinds`; the callback has the send's error, if any. */
    trap(oid: string, varbinds: Varbind[], callback: (error: Error | null) => void): Session;
    close(): Session;
  }

  export function createSession(target: string, community: string, options?: SessionOptions): Session;
}
