// The fleet simulator at CI size (issue 23): 256 simulated SDSs (4 devices each) and 256
// simulated SDCs (src/sim/fleet.ts) against one real `meshblock mdm start`, over real wire
// connections. All register and the MDM's REST views count them; the pool's last device,
// added through the REST API, makes the MDM plan the pool and push the map to every peer;
// dropping one simulated SDS's connections gets it declared down and a new map to every
// other peer; once its copies are re-created elsewhere (out after --rebuild-after), a whole
// rack (fault set 0: 16 SDSs) is dropped in the same turn: all 16 declared down, every
// other peer gets the map with all of them down, and no group is left without a readable
// copy (the MDM's meshblock_pool_placement_groups{health="failed"} is 0: what fault sets
// promise, and what fails if the planner put both copies of a group in one rack). What is
// simulated: the SDSs serve no data (rebuild orders are acknowledged done at once) and the
// SDCs do no IO. `npm run bench:scale` runs the same at full size and measures it.

import * as net from 'node:net';
import t from 'tap';
import { pino } from 'pino';
import { until } from '../helpers/cluster.js';
import { startFleetCluster } from '../helpers/fleet.js';

const sdsCount = 256;
const sdcCount = 256;
/**
 * The pool's groups. 256, not the MDM's default 4096: at 4096 (a 550 KB JSON map) the MDM,
 * unchanged, blocks for longer than the peers' heartbeat timeout while it pushes the map to
 * 512 peers one JSON.stringify after another, every peer drops and reconnects, and SDSs are
 * declared down in a cascade (seen here; issue 23's first finding, in the report). The test
 * covers the fleet and the failure path at a size the MDM survives today.
 */
const pgCount = 256;
/**
 * Seconds a down SDS stays away before its copies are re-created elsewhere: long enough that
 * the rack's 16 SDSs are all declared down (one health tick, a few under load) before the first
 * is out, so their groups are seen degraded; short enough to re-protect the single failure
 * before the rack goes in a test of under a minute.
 */
const rebuildAfterSeconds = 8;
/** A rack: the SDSs of one fault set, lost together. */
const rackSize = 16;
const GiB = 1024 ** 3;

interface SdsObject {
  id: string;
  sdsState: string;
  mdmConnectionState: string;
}
interface SystemObject {
  mapEpoch: number;
}
interface SdcObject {
  id: string;
  mdmConnectionState: string;
}

/** A loopback port free a moment ago, for the MDM's metrics (its group counts by health). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return address.port;
}

/** The pool's groups by health (total, degraded, failed) from the MDM's Prometheus text. */
async function groupsByHealth(metricsUrl: string): Promise<{ total: number; degraded: number; failed: number }> {
  const text = await (await fetch(metricsUrl)).text();
  const groups = { total: Number.NaN, degraded: Number.NaN, failed: Number.NaN };
  for (const match of text.matchAll(/^meshblock_pool_placement_groups\{[^}]*health="(total|degraded|failed)"[^}]*\} (\S+)$/gm)) groups[match[1] as keyof typeof groups] = Number(match[2]);
  return groups;
}

t.test(`${sdsCount} simulated SDSs and ${sdcCount} SDCs against one MDM: registered, counted, mapped; one SDS dropped, then a rack of ${rackSize}, are declared down and their peers get the new map`, async (t) => {
  const dir = t.testdir();
  const log = pino({ level: 'warn' }, pino.destination(2));
  const metricsUrl = `http://127.0.0.1:${await freePort()}/metrics`;
  const { cluster, fleet, api } = await startFleetCluster(t, dir, { sdsCount, devicesPerSds: 4, sdcCount, deviceCapacityBytes: 64 * GiB, pgCount, sdssPerFaultSet: rackSize }, ['--sds-down-after', '2', '--rebuild-after', String(rebuildAfterSeconds), '--metrics', new URL(metricsUrl).host, '--log-level', 'warn'], log);
  t.equal(cluster.faultSets.length, sdsCount / rackSize, `the preload put the SDSs in ${sdsCount / rackSize} fault sets of ${rackSize}`);

  const sdss = await until('every SDS connected in the MDM view', async () => {
    const list = await api.get<SdsObject[]>('/api/types/Sds/instances');
    return list.filter((sds) => sds.mdmConnectionState === 'Connected').length === sdsCount ? list : undefined;
  }, 60_000);
  t.equal(sdss.length, sdsCount, `the MDM lists ${sdsCount} SDSs, all connected`);
  const sdcs = await until('every SDC connected in the MDM view', async () => {
    const list = await api.get<SdcObject[]>('/api/types/Sdc/instances');
    return list.filter((sdc) => sdc.mdmConnectionState === 'Connected').length === sdcCount ? list : undefined;
  }, 60_000);
  t.equal(sdcs.length, sdcCount, `the MDM lists ${sdcCount} SDCs, all connected`);

  // The first full plan: every peer gets a map with groups.
  const epochBefore = fleet.epochMax;
  await api.post('/api/types/Device/instances', { sdsId: cluster.lastDevice.sdsId, storagePoolId: cluster.storagePoolId, deviceCurrentPathName: cluster.lastDevice.path });
  const planned = await until('every peer holding the planned map', async () => {
    const epoch = fleet.epochMax;
    const holding = fleet.holding(epoch);
    return epoch > epochBefore && holding.sds === sdsCount && holding.sdc === sdcCount ? epoch : undefined;
  }, 120_000);
  const mapBytes = Math.max(...fleet.receiptsSince(0).filter((entry) => entry.kind === 'sds' && entry.receipt.epoch === planned).map((entry) => entry.receipt.bytes));
  // 40,658 B of JSON, 9,156 B binary (map-codec.ts, once the peers take binary maps): either way far above an empty map.
  t.ok(mapBytes > 2_000, `the planned map reached all ${sdsCount + sdcCount} peers (epoch ${planned}, ${mapBytes} bytes each)`);

  // One SDS's connections dropped (a crashed host): declared down, a new map to everyone else.
  const victim = sdss.find((sds) => sds.id === cluster.sdss[sdsCount - 1]?.sdsId);
  if (victim === undefined) throw new Error('the MDM does not list the fleet’s last SDS');
  const killedAtMs = fleet.killSds(sdsCount - 1);
  await until('the dropped SDS declared down', async () => {
    const sds = await api.get<SdsObject>(`/api/instances/Sds::${victim.id}`);
    return sds.sdsState === 'Down' ? sds : undefined;
  }, 60_000);
  t.pass('the MDM declared the dropped SDS down');
  const failedOver = await until('every live peer holding a map newer than the planned one', async () => {
    const epoch = fleet.epochMax;
    const holding = fleet.holding(epoch);
    return epoch > planned && holding.sds === sdsCount - 1 && holding.sdc === sdcCount ? epoch : undefined;
  }, 120_000);
  const lastAtMs = Math.max(...fleet.receiptsSince(killedAtMs).filter((entry) => entry.receipt.epoch === failedOver).map((entry) => entry.receipt.atMs));
  t.pass(`all ${sdsCount - 1} live SDSs and ${sdcCount} SDCs hold epoch ${failedOver}, the last ${lastAtMs - killedAtMs} ms after the drop (disturbed timing: not asserted)`);
  t.equal(fleet.sdss[sdsCount - 1]?.epoch, planned, 'the dropped SDS got nothing after its drop');

  // Out after --rebuild-after, its copies re-created on the others: nothing degraded before the rack goes.
  await until('no degraded group after the single failure', async () => {
    const groups = await groupsByHealth(metricsUrl);
    return groups.total === pgCount && groups.degraded === 0 && groups.failed === 0 ? groups : undefined;
  }, 60_000);
  // At 256 groups over 1,024 devices an SDS may hold no copy at all; then this holds at once.
  t.pass('no group degraded before the rack goes: the dropped SDS’s copies, if it held any, were re-created');

  // A rack lost at once: fault set 0's SDSs, none of them the SDS dropped above.
  const rack = fleet.rackSdsIndexes(0);
  t.equal(rack.length, rackSize, `rack 0 holds ${rackSize} SDSs`);
  const rackIds = rack.map((index) => cluster.sdss[index]?.sdsId as string);
  const epochBeforeRack = fleet.epochMax;
  const rackKilledAtMs = fleet.killSdss(rack);
  const rackDownAtMs = await until(`all ${rackSize} SDSs of the rack declared down`, async () => {
    const states = await Promise.all(rackIds.map((sdsId) => api.get<SdsObject>(`/api/instances/Sds::${sdsId}`)));
    return states.every((sds) => sds.sdsState === 'Down') ? Date.now() : undefined;
  }, 60_000);
  const [system] = await api.get<SystemObject[]>('/api/types/System/instances');
  const epochRackDown = system?.mapEpoch ?? 0;
  t.ok(epochRackDown > epochBeforeRack, `the MDM declared all ${rackSize} down, ${rackDownAtMs - rackKilledAtMs} ms after the drop (epoch ${epochBeforeRack} → ${epochRackDown})`);
  const failedGroups = await groupsByHealth(metricsUrl);
  t.equal(failedGroups.failed, 0, `no group lost its last readable copy with the rack (degraded: ${failedGroups.degraded} of ${failedGroups.total})`);
  t.ok(failedGroups.degraded > 0, 'the rack held copies: groups are degraded');
  await until('every live peer holding the map with the rack down', async () => (fleet.lagging(epochRackDown).count === 0 ? true : undefined), 120_000);
  const arrivals = fleet.arrivals(epochRackDown, rackKilledAtMs);
  t.equal(arrivals.missing, 0, `all ${sdsCount - 1 - rackSize} live SDSs and ${sdcCount} SDCs hold epoch ${epochRackDown}, the last ${(arrivals.lastAtMs ?? 0) - rackKilledAtMs} ms after the drop (disturbed timing: not asserted)`);
  t.ok(
    rack.every((index) => (fleet.sdss[index]?.epoch ?? Infinity) <= epochBeforeRack),
    'the rack’s SDSs got nothing after their drop',
  );
  // The rack is journaled one sdsDown each, but the SDSs found down in one health tick get their
  // map out once, after the last: a peer takes one update (two if the drops straddle a tick).
  // Before, one per SDS, which the MDM's per-peer queue merged into 3 (at 256 + 256) to 9 (at
  // 1,024 + 1,024) updates.
  const updatesPerPeer = largest([...fleet.sdss, ...fleet.sdcs].filter((peer) => !peer.killed).map((peer) => peer.receipts.filter((receipt) => receipt.atMs >= rackKilledAtMs && receipt.epoch > epochBeforeRack).length));
  t.ok(updatesPerPeer > 0 && updatesPerPeer <= 2, `a live peer took at most ${updatesPerPeer} map updates for the ${rackSize} SDSs of the rack (epochs ${epochBeforeRack} → ${epochRackDown})`);
});

/** The largest of numbers (0 for none), without spreading thousands of them as arguments. */
function largest(numbers: readonly number[]): number {
  let most = 0;
  for (const value of numbers) if (value > most) most = value;
  return most;
}
