// MESHBLOCK-MIB checked with the real tools, and what the MDM sends matched against it:
// smilint (libsmi, strictest level) finds nothing in mibs/MESHBLOCK-MIB.txt; snmptranslate
// (net-snmp) resolves every notification and object OID that src/mdm/snmp-traps.ts sends to
// the name of the same meaning, so the code and the MIB cannot drift apart. The SNMPv2 base
// MIBs come from the net-snmp npm package (Debian ships them only in non-free
// snmp-mibs-downloader). Also --snmp-trap's parsing: defaults, IPv6, bad values refused.

import * as path from 'node:path';
import t from 'tap';
import { eventTypes } from '../../src/mdm/events.js';
import { eventObjectOids, notificationOids, parseTrapReceiver, parseTrapReceivers } from '../../src/mdm/snmp-traps.js';
import { repoRoot, run } from '../helpers/processes.js';

const mibFile = path.join(repoRoot, 'mibs/MESHBLOCK-MIB.txt');
const mibDirs = [path.join(repoRoot, 'mibs'), path.join(repoRoot, 'node_modules/net-snmp/lib/mibs')];

t.test('smilint finds nothing to say about the MIB, at its strictest level', async (t) => {
  const result = await run('smilint', ['-s', '-l', '6', mibFile], { env: { SMIPATH: mibDirs.join(':') } });
  t.equal(result.code, 0, 'smilint exits 0');
  t.equal(result.stdout + result.stderr, '', 'no error, warning or note');
});

t.test('snmptranslate resolves every OID the MDM sends to its name in the MIB', async (t) => {
  const names: Record<string, string> = {
    sdsDown: 'mbSdsDown',
    sdsUp: 'mbSdsUp',
    deviceFailed: 'mbDeviceFailed',
    rebuildStarted: 'mbRebuildStarted',
    rebuildFinished: 'mbRebuildFinished',
    capacityHigh: 'mbCapacityHigh',
    capacityCritical: 'mbCapacityCritical',
    capacityNormal: 'mbCapacityNormal',
    loginRefused: 'mbLoginRefused',
  };
  const objects: Record<keyof typeof eventObjectOids, string> = {
    id: 'mbEventId',
    time: 'mbEventTime',
    severity: 'mbEventSeverity',
    type: 'mbEventType',
    object: 'mbEventObject',
    objectName: 'mbEventObjectName',
    message: 'mbEventMessage',
    user: 'mbEventUser',
    system: 'mbEventSystem',
  };
  const pairs: Array<[string, string]> = [
    ...eventTypes.filter((type) => type !== 'configChanged').map((type): [string, string] => [notificationOids[type] as string, names[type] as string]),
    ...Object.entries(eventObjectOids).map(([key, oid]): [string, string] => [oid, objects[key as keyof typeof eventObjectOids]]),
  ];
  t.equal(Object.keys(notificationOids).length, eventTypes.length - 1, 'every event type but configChanged has a notification');
  const result = await run('snmptranslate', ['-M', mibDirs.join(':'), '-m', 'MESHBLOCK-MIB', ...pairs.map(([oid]) => `.${oid}`)]);
  t.equal(result.code, 0, `snmptranslate exits 0: ${result.stderr}`);
  t.same(
    result.stdout.split('\n').filter((line) => line !== ''),
    pairs.map(([, name]) => `MESHBLOCK-MIB::${name}`),
    'each OID is the name of the same meaning',
  );
});

t.test('--snmp-trap: HOST[:PORT][,community=NAME]', async (t) => {
  t.same(parseTrapReceiver('--snmp-trap', 'nms.example.com'), { host: 'nms.example.com', port: 162, community: 'public' }, 'port 162 and community public by default');
  t.same(parseTrapReceiver('--snmp-trap', '10.0.0.5:1162,community=s3cret'), { host: '10.0.0.5', port: 1162, community: 's3cret' });
  t.same(parseTrapReceiver('--snmp-trap', '[::1]:1162'), { host: '::1', port: 1162, community: 'public' }, 'IPv6 in brackets');
  for (const bad of ['', 'host:0', 'host:70000', 'host,comunity=x', 'host,community=', '[nothost]:5', 'a b']) {
    t.throws(() => parseTrapReceiver('--snmp-trap', bad), { code: 'MB_ERR_INVALID_ARGUMENT' }, `'${bad}' is refused`);
  }
  t.throws(() => parseTrapReceivers('--snmp-trap', ['h:1', 'h:1,community=x']), { code: 'MB_ERR_INVALID_ARGUMENT', message: /given twice/ }, 'a receiver twice');
});
