// The event log and its SNMP traps on real processes. Debian's snmptrapd listens on its own
// UDP port on loopback (a community, the repo's MIB and the SNMPv2 base MIBs net-snmp ships
// loaded); an MDM started with --snmp-trap at it runs a cluster of real SDSs. A kill -9 of
// an SDS must reach snmptrapd as MESHBLOCK-MIB::mbSdsDown naming that SDS, and its restart
// as mbSdsUp; a wrong password as mbLoginRefused. `meshblock events` shows the same events
// (ids in order, configuration changes with the user who made them), and after the MDM is
// stopped and started again on its data directory they are all still there, and numbering
// goes on after them (the log is in DATA-DIR/events.jsonl).

import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import t from 'tap';
import { cli, restartSds, startCluster, startMdm, until } from '../helpers/cluster.js';
import { meshblockBin, nodeCommand, repoRoot, runMeshblock, type TeardownHost } from '../helpers/processes.js';
import type { MdmEvent } from '../../src/mdm/events.js';

const GiB = 1024 * 1024 * 1024;
const community = 'meshblock-test';

/** A UDP port free a moment ago on loopback (snmptrapd binds it right after). */
async function freeUdpPort(): Promise<number> {
  const socket = dgram.createSocket('udp4');
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  const port = socket.address().port;
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

/** snmptrapd in the foreground, printing every trap it accepts to stdout, resolved by the MIBs. */
async function startSnmptrapd(t: TeardownHost, dir: string): Promise<{ port: number; output: () => string }> {
  const port = await freeUdpPort();
  const config = path.join(dir, 'snmptrapd.conf');
  // Only traps with our community are logged (a wrong one is dropped), as a site would set it up.
  fs.writeFileSync(config, `authCommunity log ${community}\n`);
  const mibDirs = [path.join(repoRoot, 'mibs'), path.join(repoRoot, 'node_modules/net-snmp/lib/mibs')].join(':');
  const child = spawn('snmptrapd', ['-f', '-Lo', '-C', '-c', config, '-M', mibDirs, '-m', 'MESHBLOCK-MIB:SNMPv2-MIB', `udp:127.0.0.1:${port}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, SNMP_PERSISTENT_DIR: dir },
  });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (output += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (output += text));
  const exited = once(child, 'exit');
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  await until('snmptrapd to start', async () => (/NET-SNMP version/.test(output) ? true : undefined), 30_000);
  return { port, output: () => output };
}

/** The traps snmptrapd printed: one entry per trap, its varbinds on the line after the header. */
function traps(output: string, notification: string): string[] {
  return output.split('\n').filter((line) => line.includes(`snmpTrapOID.0 = OID: MESHBLOCK-MIB::${notification}\t`) || line.endsWith(`snmpTrapOID.0 = OID: MESHBLOCK-MIB::${notification}`));
}

/** A varbind's value as snmptrapd printed it (DisplayString values unquoted). */
function varbind(trap: string, name: string): string | undefined {
  return new RegExp(`MESHBLOCK-MIB::${name}\\.0 = [A-Za-z0-9]+: ([^\\t]*)`).exec(trap)?.[1];
}

function parseEvents(stdout: string): MdmEvent[] {
  return stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as MdmEvent);
}

t.test('kill -9 of an SDS reaches snmptrapd as mbSdsDown, its restart as mbSdsUp; the event log has them and survives an MDM restart', async (t) => {
  const dir = t.testdir();
  const trapd = await startSnmptrapd(t, dir);
  const cluster = await startCluster(t, dir, {
    // Two SDSs are enough for one to go down (its groups fail over to the other).
    sdsCount: 2,
    deviceBytes: 2 * GiB,
    // No volume: the test is about the control plane's events, and it keeps the test short.
    volumes: [],
    mdmArgs: ['--sds-down-after', '2', '--rebuild-after', '600', '--snmp-trap', `127.0.0.1:${trapd.port},community=${community}`],
  });
  const sds1 = cluster.sds[0] as (typeof cluster.sds)[number];
  // A follower from now on (meshblock events --follow): it must print what comes next.
  const follower = spawn(...nodeCommand([meshblockBin, 'events', '--follow', '--json', '--api', cluster.mdm.apiUrl, '--ca-cert', cluster.mdm.certPath, '--password-file', path.join(dir, 'admin-password.txt')]), { stdio: ['ignore', 'pipe', 'pipe'] });
  let followed = '';
  follower.stdout.setEncoding('utf8').on('data', (text: string) => (followed += text));
  const followerExited = once(follower, 'exit');
  t.teardown(async () => {
    if (follower.exitCode === null && follower.signalCode === null) {
      follower.kill('SIGKILL');
      await followerExited;
    }
  });

  await sds1.kill();
  const down = await until('snmptrapd to receive mbSdsDown', async () => traps(trapd.output(), 'mbSdsDown')[0], 60_000);
  t.equal(varbind(down, 'mbEventObject'), `Sds::${sds1.sdsId}`, 'the trap names the SDS killed');
  t.equal(varbind(down, 'mbEventSeverity'), 'error(3)', '... as an error');
  t.equal(varbind(down, 'mbEventObjectName'), 'sds1', '... with its name');

  await restartSds(t, dir, cluster, 0);
  const up = await until('snmptrapd to receive mbSdsUp', async () => traps(trapd.output(), 'mbSdsUp')[0], 60_000);
  t.equal(varbind(up, 'mbEventObject'), `Sds::${sds1.sdsId}`, 'the up trap names the same SDS');
  t.ok(Number(varbind(up, 'mbEventId')) > Number(varbind(down, 'mbEventId')), 'with a later event id');

  const seen = await until('the follower to print sdsDown and sdsUp', async () => {
    const types = parseEvents(followed).filter((event) => event.object === `Sds::${sds1.sdsId}`).map((event) => event.type);
    return types.includes('sdsUp') ? types : undefined;
  });
  t.same(seen.filter((type) => type !== 'configChanged'), ['sdsDown', 'sdsUp'], 'meshblock events --follow printed them as they came');
  follower.kill('SIGINT');
  await followerExited;

  // A wrong password: refused, recorded with the user name tried, and trapped.
  const wrongPasswordFile = path.join(dir, 'wrong-password.txt');
  fs.writeFileSync(wrongPasswordFile, 'not the admin password\n', { mode: 0o600 });
  const refused = await runMeshblock(['events', '--api', cluster.mdm.apiUrl, '--ca-cert', cluster.mdm.certPath, '--password-file', wrongPasswordFile, '--username', 'mallory']);
  t.not(refused.code, 0, 'a wrong password is refused');
  const loginTrap = await until('snmptrapd to receive mbLoginRefused', async () => traps(trapd.output(), 'mbLoginRefused')[0], 30_000);
  t.equal(varbind(loginTrap, 'mbEventUser'), 'mallory', 'the login trap names the user tried');

  const listed = await cluster.meshblock(['events', '--json', '--limit', '1000']);
  t.equal(listed.code, 0, `meshblock events: ${listed.stderr}`);
  const events = parseEvents(listed.stdout);
  t.ok(
    events.every((event, index) => index === 0 || event.id > (events[index - 1] as MdmEvent).id),
    'ids increase',
  );
  const sdsEvents = events.filter((event) => event.object === `Sds::${sds1.sdsId}` && event.type !== 'configChanged').map((event) => event.type);
  t.same(sdsEvents, ['sdsDown', 'sdsUp'], 'sds1 went down, then up: once each');
  const poolAdded = events.find((event) => event.type === 'configChanged' && event.objectName === 'sp1' && event.message.startsWith('add StoragePool'));
  t.ok(poolAdded, 'adding the pool is a configuration change');
  t.equal(poolAdded?.user, 'admin', '... made by admin');
  t.ok(
    events.some((event) => event.type === 'configChanged' && event.object === `Sds::${sds1.sdsId}` && event.user === 'admin'),
    'adding sds1 to pd1 is one too',
  );
  t.ok(
    events.some((event) => event.type === 'loginRefused' && event.user === 'mallory'),
    'the refused login is in the log',
  );
  const text = await cluster.meshblock(['events', '--limit', '3']);
  t.equal(text.stdout.trim().split('\n').length, 3, '--limit 3 prints three lines');

  // The MDM restarts on its data directory (same ports, so the SDSs call back): nothing lost,
  // nothing repeated, numbering goes on.
  const lastId = (events.at(-1) as MdmEvent).id;
  await cluster.mdm.stop();
  const apiPort = new URL(cluster.mdm.apiUrl).port;
  const mdm = await startMdm(t, dir, { listen: cluster.mdm.address, api: `127.0.0.1:${apiPort}` }, ['--sds-down-after', '2', '--rebuild-after', '600', '--snmp-trap', `127.0.0.1:${trapd.port},community=${community}`]);
  const again = cli(mdm, dir);
  const afterRestart = parseEvents((await again(['events', '--json', '--since', '0', '--limit', '1000'])).stdout);
  t.same(
    afterRestart.filter((event) => event.id <= lastId),
    events,
    'every event is still there after the restart',
  );
  t.equal((await again(['volume', 'add', '--pool', 'sp1', '--name', 'vol2', '--size', String(GiB)])).code, 0, 'a change after the restart');
  const newest = parseEvents((await again(['events', '--json', '--since', String(lastId)])).stdout);
  const vol2 = newest.find((event) => event.objectName === 'vol2');
  t.ok(vol2 !== undefined && vol2.id > lastId, `numbering goes on after ${lastId}`);
  t.notOk(
    newest.some((event) => event.type === 'sdsDown' || event.type === 'sdsUp'),
    'the restart reported no SDS event again',
  );
});
