// Proves the rebuild simulator (src/sim/rebuild-sim.ts) keeps its model's invariants at
// small sizes: every copy the failed SDS held is rebuilt exactly once and nothing else is,
// no device reads or writes above its rate and no NIC above its own, the rebuild starts
// only after the MDM's --rebuild-after, and the time to re-protect falls as the cluster
// grows from 8 to 128 SDSs with the data per SDS fixed. Data is 100 GB per SDS to keep
// it to a few seconds; the model is linear in the bytes, so the invariants hold alike at 4 TB.

import t, { type Test } from 'tap';
import { MeshblockError } from '../../src/common/errors.js';
import { reprotectSecondsBySize, simulateReprotect, type ReprotectResult } from '../../src/sim/rebuild-sim.js';

const dataBytesPerSds = 100e9;
const rateSlack = 1e-6;

function checkInvariants(t: Test, result: ReprotectResult, what: string): void {
  t.ok(result.protected, `${what}: every group is on two copies in sync again`);
  t.ok(result.copiesLost > 0, `${what}: the failed SDS held copies`);
  t.equal(result.jobsDone, result.copiesLost, `${what}: one job per copy lost`);
  t.equal(result.copiesRebuiltTwice, 0, `${what}: no copy rebuilt twice`);
  t.equal(result.copiesNeverRebuilt, 0, `${what}: no copy left out`);
  t.ok(Math.abs(result.bytesRebuilt - result.bytesToRebuild) <= 1, `${what}: the bytes rebuilt are the bytes lost`);
  // The failed SDS held its share of the data: within the planner's rounding of whole copies.
  t.ok(Math.abs(result.bytesToRebuild - dataBytesPerSds) / dataBytesPerSds < 0.05, `${what}: the bytes lost are the SDS's data (${result.bytesToRebuild})`);
  t.ok(result.deviceReadUtilizationMax <= 1 + rateSlack, `${what}: no device reads above its rate (${result.deviceReadUtilizationMax})`);
  t.ok(result.deviceWriteUtilizationMax <= 1 + rateSlack, `${what}: no device writes above its rate (${result.deviceWriteUtilizationMax})`);
  t.ok(result.nicUtilizationMax <= 1 + rateSlack, `${what}: no NIC above its rate (${result.nicUtilizationMax})`);
  t.ok(result.seconds > 0 && result.secondsFromFailure >= result.seconds + 60, `${what}: the rebuild begins after the default 60 s rebuild-after`);
  t.equal(result.targetSdsCount, result.sdsCount - 1, `${what}: every surviving SDS receives copies (many-to-many)`);
  t.ok(result.bytesPerSecond <= result.bytesToRebuild / result.seconds + 1, `${what}: the average rate is the bytes over the time`);
}

// The default throttle at 8 SDSs, which two tests compare against.
const throttled8 = simulateReprotect({ sdsCount: 8, dataBytesPerSds });

t.test('re-protect time falls from 8 to 32 to 128 SDSs, every invariant kept', async (t) => {
  const results = [throttled8, ...[32, 128].map((sdsCount) => simulateReprotect({ sdsCount, dataBytesPerSds }))];
  for (const result of results) checkInvariants(t, result, `${result.sdsCount} SDSs`);
  const [small, middle, large] = results as [ReprotectResult, ReprotectResult, ReprotectResult];
  t.ok(middle.seconds < small.seconds, `32 SDSs (${middle.seconds.toFixed(1)} s) faster than 8 (${small.seconds.toFixed(1)} s)`);
  t.ok(large.seconds < middle.seconds, `128 SDSs (${large.seconds.toFixed(1)} s) faster than 32 (${middle.seconds.toFixed(1)} s)`);
  // The MDM's default throttle (64 MiB/s per source SDS) is what bounds a quiet cluster of fast disks.
  t.ok(small.boundBy.budget > 0.9, 'the default throttle bounds the rebuild');
});

t.test('an unlimited pool is bounded by the disks, or the NICs, never above their rates', async (t) => {
  const options = { sdsCount: 8, dataBytesPerSds, rebuildPolicy: { policy: 'unlimited' as const } };
  const base = simulateReprotect(options);
  checkInvariants(t, base, 'unlimited, 8 SDSs');
  t.ok(base.deviceReadUtilizationMax > 0.99 || base.deviceWriteUtilizationMax > 0.99, 'some device runs at its full rate');
  t.ok(base.boundBy.deviceRead + base.boundBy.deviceWrite > 0.9, 'the disks bound the rebuild');
  t.ok(base.seconds < throttled8.seconds / 2, `unlimited (${base.seconds.toFixed(1)} s) well faster than the default throttle (${throttled8.seconds.toFixed(1)} s)`);
  const slowDisks = simulateReprotect({ ...options, deviceReadBytesPerSecond: 100e6, deviceWriteBytesPerSecond: 100e6 });
  t.ok(slowDisks.seconds > base.seconds * 1.8, `half-speed disks take about twice as long (${base.seconds.toFixed(1)} → ${slowDisks.seconds.toFixed(1)} s)`);
  const slowNic = simulateReprotect({ ...options, nicBytesPerSecond: 100e6 });
  checkInvariants(t, slowNic, 'a 100 MB/s NIC');
  t.ok(slowNic.boundBy.nicSend + slowNic.boundBy.nicReceive > 0.9, 'the NICs bound it');
  t.ok(slowNic.seconds > base.seconds, 'and it takes longer');
});

t.test('a run that gives up says so, and the summary for the bench shows null for it', async (t) => {
  // The rebuild cannot even begin within 30 simulated seconds (the SDS is out after 60).
  const result = simulateReprotect({ sdsCount: 8, dataBytesPerSds, simulatedSecondsMax: 30 });
  t.equal(result.protected, false);
  t.equal(result.jobsDone, 0);
  t.same(reprotectSecondsBySize([8], { dataBytesPerSds, simulatedSecondsMax: 30 }), { 8: null });
  const summary = reprotectSecondsBySize([8], { dataBytesPerSds: 1e9 });
  t.ok((summary['8'] ?? 0) > 0, `a finished run shows its seconds (${summary['8']})`);
});

t.test('bad options are refused by name', async (t) => {
  for (const [options, field] of [
    [{ sdsCount: 2 }, 'sdsCount'],
    [{ sdsCount: 8, devicesPerSds: 0 }, 'devicesPerSds'],
    [{ sdsCount: 8, nicBytesPerSecond: 0 }, 'nicBytesPerSecond'],
    [{ sdsCount: 8, deviceFillRatio: 1 }, 'deviceFillRatio'],
  ] as const) {
    let caught: unknown = null;
    try {
      simulateReprotect(options);
    } catch (err) {
      caught = err;
    }
    t.ok(caught instanceof MeshblockError && caught.code === 'MB_ERR_INVALID_ARGUMENT' && caught.message.startsWith(`${field}:`), `${field} refused: ${String(caught)}`);
  }
});
