// Proves how the MDM reads and reports what SDSs say about checksums at rest and the scrub
// (src/mdm/integrity.ts, docs/integrity.md), with a real state machine holding volumes and
// snapshots and fake SdsStats:
// - a report from an SDS before checksums (no fields) reads as zeros and null; malformed
//   counters, progress and ranges are dropped, never shown as numbers they are not;
// - a range bad on both copies is mapped to the volume whose head is its generation, at
//   volume offset chunkIndex * chunkBytes + offsetBytes; an older generation is "shared" with
//   the base volume or "snapshot data" when only snapshots read it; a removed tree "removed";
//   two SDSs reporting the same range give one entry naming both;
// - IntegrityWatch logs each rise of a counter once (warn; error when blocks became
//   unrepairable) naming the SDS and the increase, a restart of the SDS (counters falling)
//   as a new baseline, and each new unrepairable range once at error level with the volume
//   and its offsets, however many heartbeats (and SDSs) repeat it.

import { Writable } from 'node:stream';
import { pino } from 'pino';
import t from 'tap';
import { GiB, MiB } from '../../src/common/units.js';
import { IntegrityWatch, describeRangeText, integrityOf, scrubOf, scrubPercent, unrepairableOf, unrepairableRanges } from '../../src/mdm/integrity.js';
import type { Id } from '../../src/mdm/model.js';
import { StateMachine } from '../../src/mdm/state-machine.js';
import type { IntegrityCounters, ScrubProgress, SdsStats, UnrepairableRange } from '../../src/wire/sds-ops.js';

const clusterId = '0123456789abcdef';
const sdsId = (index: number): Id => (0x5d5000000000 + index).toString(16).padStart(16, '0');
const deviceId = (index: number): Id => (0xde7000000000 + index).toString(16).padStart(16, '0');

/** A pool (1 MiB chunks) over three SDSs; vol1 with a snapshot snap1 of it, and vol2 alone. */
function cluster(): { machine: StateMachine; pool: Id; vol1: Id; vol2: Id; snap1: Id } {
  const machine = StateMachine.create(clusterId, 'test');
  const pd = machine.apply({ type: 'addProtectionDomain', name: 'pd1' }).id as Id;
  const pool = machine.apply({ type: 'addStoragePool', protectionDomainId: pd, name: 'sp1', volumeGranularityBytes: GiB, pgCount: 16 }).id as Id;
  for (const index of [0, 1, 2]) {
    machine.apply({ type: 'registerSds', sdsId: sdsId(index), name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, nowMs: 1 });
    machine.apply({ type: 'addSds', sdsId: sdsId(index), protectionDomainId: pd, faultSetId: null });
    machine.apply({ type: 'addDevice', deviceId: deviceId(index), sdsId: sdsId(index), storagePoolId: pool, path: '/dev/sdb', name: null, capacityBytes: 100 * GiB });
  }
  const vol1 = machine.apply({ type: 'addVolume', storagePoolId: pool, name: 'vol1', sizeBytes: 4 * GiB, volumeType: 'ThinProvisioned', nowMs: 1 }).id as Id;
  const vol2 = machine.apply({ type: 'addVolume', storagePoolId: pool, name: 'vol2', sizeBytes: 4 * GiB, volumeType: 'ThinProvisioned', nowMs: 1 }).id as Id;
  const groupId = machine.apply({ type: 'beginSnapshot', defs: [{ volumeId: vol1, name: 'snap1', readOnly: true }], nowMs: 2 }).id as Id;
  const snap1 = (machine.apply({ type: 'commitSnapshot', groupId, nowMs: 3 }).ids as Id[])[0] as Id;
  return { machine, pool, vol1, vol2, snap1 };
}

function stats(fields: Partial<SdsStats>): SdsStats {
  return { sdsId: sdsId(0), epoch: 1, devices: [], reservedBytes: 0, rebuilds: [], ...fields } as SdsStats;
}

const counters = (fields: Partial<IntegrityCounters>): IntegrityCounters => ({ checksumErrors: 0, repairedBlocks: 0, unrepairableBlocks: 0, tornBlocksAccepted: 0, damagedEntries: 0, mismatchedBlocks: 0, ...fields });

t.test('reports read defensively: missing is zero and null, malformed is dropped', async (t) => {
  t.same(integrityOf(stats({})), counters({}), 'an SDS from before checksums: zeros');
  t.same(integrityOf(null), counters({}), 'no report at all: zeros');
  t.equal(scrubOf(stats({})), null, 'no scrub report: null');
  t.same(unrepairableOf(stats({})), []);
  const bad = stats({ integrity: { checksumErrors: -1, repairedBlocks: 2.5, unrepairableBlocks: 3, tornBlocksAccepted: '4', damagedEntries: 5, mismatchedBlocks: 6 } as unknown as IntegrityCounters });
  t.same(integrityOf(bad), counters({ unrepairableBlocks: 3, damagedEntries: 5, mismatchedBlocks: 6 }), 'bad counters read 0');
  t.equal(scrubOf(stats({ scrub: { state: 'scanning', mode: 'deviceOnly' } as unknown as ScrubProgress })), null, 'an unknown state: null');
  const scrub: ScrubProgress = { state: 'running', mode: 'dataComparison', rateKBps: 1024, passesCompleted: 2, passStartedAtMs: 5, lastPassCompletedAtMs: 4, chunksScanned: 1, chunksTotal: 3, bytesScanned: 3 * MiB };
  t.same(scrubOf(stats({ scrub })), scrub);
  t.equal(scrubPercent(scrub), 33.3);
  t.equal(scrubPercent({ ...scrub, chunksTotal: 0, chunksScanned: 0 }), 100, 'nothing to scan: done');
  const good: UnrepairableRange = { poolId: 'aaaaaaaaaaaaaaaa', vtreeId: 'bbbbbbbbbbbbbbbb', generation: 0, chunkIndex: 1, offsetBytes: 4096, lengthBytes: 4096, detectedAtMs: 7 };
  const ranges = [good, { ...good, poolId: 'nope' }, { ...good, lengthBytes: 0 }, { ...good, chunkIndex: -1 }, null, 'x'] as unknown as UnrepairableRange[];
  t.same(unrepairableOf(stats({ unrepairable: ranges })), [good], 'only the well-formed range');
});

t.test('a bad range is mapped to its volume and the volume byte range', async (t) => {
  const { machine, pool, vol1, vol2, snap1 } = cluster();
  const model = machine.model;
  const v1 = model.volumes[vol1];
  const v2 = model.volumes[vol2];
  const s1 = model.volumes[snap1];
  if (v1 === undefined || v2 === undefined || s1 === undefined) throw new Error('volumes missing');
  const parent = model.vtrees[v1.vtreeId]?.generations[String(v1.generation)];
  if (typeof parent !== 'number') throw new Error('vol1 has no parent generation after a snapshot');
  const at = (vtreeId: string, generation: number, chunkIndex: number, offsetBytes: number, detectedAtMs: number): UnrepairableRange => ({ poolId: pool, vtreeId, generation, chunkIndex, offsetBytes, lengthBytes: 8192, detectedAtMs });
  const reports = new Map<Id, SdsStats>([
    // vol1's own head: reported by both copies' SDSs.
    [sdsId(0), stats({ unrepairable: [at(v1.vtreeId, v1.generation, 3, 12288, 10), at(v1.vtreeId, parent, 0, 0, 11)] })],
    [sdsId(1), stats({ unrepairable: [at(v1.vtreeId, v1.generation, 3, 12288, 9), at(v2.vtreeId, v2.generation, 2, 4096, 12)] })],
    [sdsId(2), stats({ unrepairable: [at(v1.vtreeId, s1.generation, 1, 0, 13), at('cccccccccccccccc', 0, 0, 0, 14)] })],
  ]);
  const list = unrepairableRanges(model, (id) => reports.get(id) ?? null);
  t.equal(list.length, 5, 'the range two SDSs report is one entry');
  const [own, shared, other, snapshot, removed] = list;
  t.match(own, { reaches: 'volume', volumeId: vol1, volumeName: 'vol1', chunkIndex: 3, offsetInChunkBytes: 12288, volumeOffsetBytes: 3 * MiB + 12288, volumeEndBytes: 3 * MiB + 12288 + 8192, detectedAtMs: 9 });
  t.same(own?.reportedBy, [sdsId(0), sdsId(1)], 'both reporters named, the earliest detection kept');
  t.match(shared, { reaches: 'sharedData', volumeId: vol1, volumeName: 'vol1', volumeOffsetBytes: 0 });
  t.same(shared?.readBy, ['vol1', 'snap1'], 'the base volume and its snapshot read the older generation');
  t.match(other, { reaches: 'volume', volumeId: vol2, volumeName: 'vol2', volumeOffsetBytes: 2 * MiB + 4096 });
  t.match(snapshot, { reaches: 'volume', volumeId: snap1, volumeName: 'snap1', volumeOffsetBytes: MiB }, "a snapshot's own head names the snapshot");
  t.match(removed, { reaches: 'removed', volumeId: null, volumeName: null });
  t.equal(describeRangeText(removed as NonNullable<typeof removed>), 'data no volume reads any more (V-Tree cccccccccccccccc generation 0, chunk 0 bytes 0..8192)');
  t.match(describeRangeText(own as NonNullable<typeof own>), /^volume 'vol1' bytes 3158016\.\.3166208 \(8192 bytes\)$/);
  t.match(describeRangeText(shared as NonNullable<typeof shared>), /shared with its snapshots 'snap1'/);
  t.same(unrepairableRanges(model, (id) => reports.get(id) ?? null, 'ffffffffffffffff'), [], 'another pool: none');

  // Only snapshots left reading the older generation: snapshot data.
  machine.apply({ type: 'removeVolume', id: vol1 });
  const after = unrepairableRanges(machine.model, (id) => reports.get(id) ?? null).find((entry) => entry.generation === parent);
  t.match(after, { reaches: 'snapshotData', volumeId: null, readBy: ['snap1'] });
  t.match(describeRangeText(after as NonNullable<typeof after>), /^snapshot data \(read by 'snap1'\) at bytes 0\.\.8192/);
});

function capture(): { log: pino.Logger; lines: () => Array<Record<string, unknown>> } {
  const lines: string[] = [];
  const stream = new Writable({ write: (chunk, _encoding, done) => (lines.push(String(chunk)), done()) });
  return { log: pino({ level: 'info' }, stream), lines: () => lines.map((line) => JSON.parse(line) as Record<string, unknown>) };
}

t.test('IntegrityWatch: each rise logged once, naming the SDS and the increase; each new bad range once', async (t) => {
  const { machine, pool, vol1 } = cluster();
  const v1 = machine.model.volumes[vol1];
  if (v1 === undefined) throw new Error('vol1 missing');
  const { log, lines } = capture();
  const watch = new IntegrityWatch(log);
  watch.onStats(machine.model, sdsId(0), 'sds0', stats({}));
  t.same(lines(), [], 'an SDS reporting nothing: silence');

  watch.onStats(machine.model, sdsId(0), 'sds0', stats({ integrity: counters({ checksumErrors: 3, repairedBlocks: 3 }) }));
  t.equal(lines().length, 1);
  t.match(lines()[0], { level: 40, sdsId: sdsId(0), sdsName: 'sds0', checksumErrorsIncrease: 3, repairedBlocksIncrease: 3, msg: "SDS 'sds0' integrity: checksumErrors +3 (3 since it started), repairedBlocks +3 (3 since it started)" });

  watch.onStats(machine.model, sdsId(0), 'sds0', stats({ integrity: counters({ checksumErrors: 3, repairedBlocks: 3 }) }));
  t.equal(lines().length, 1, 'the same counters again: nothing more');

  const range: UnrepairableRange = { poolId: pool, vtreeId: v1.vtreeId, generation: v1.generation, chunkIndex: 2, offsetBytes: 0, lengthBytes: 4096, detectedAtMs: 20 };
  const withRange = stats({ integrity: counters({ checksumErrors: 5, repairedBlocks: 3, unrepairableBlocks: 1 }), unrepairable: [range] });
  watch.onStats(machine.model, sdsId(0), 'sds0', withRange);
  const [, rise, bad] = lines();
  t.match(rise, { level: 50, checksumErrorsIncrease: 2, unrepairableBlocksIncrease: 1, msg: /unrepairableBlocks \+1/ }, 'blocks became unrepairable: an error');
  t.match(bad, { level: 50, sdsId: sdsId(0), volumeId: vol1, volumeName: 'vol1', volumeOffsetBytes: 2 * MiB, lengthBytes: 4096, msg: /^unrepairable: both copies bad, volume 'vol1' bytes 2097152\.\.2101248 \(4096 bytes\); IO to it fails with EIO/ });
  watch.onStats(machine.model, sdsId(0), 'sds0', withRange);
  watch.onStats(machine.model, sdsId(1), 'sds1', stats({ unrepairable: [range] }));
  t.equal(lines().length, 3, "the same range again, and from the other copy's SDS: logged once");

  // The SDS restarted: its counters count from zero again; a new rise is a rise from there.
  watch.onStats(machine.model, sdsId(0), 'sds0', stats({ integrity: counters({ tornBlocksAccepted: 2 }) }));
  t.match(lines()[3], { level: 40, tornBlocksAcceptedIncrease: 2, msg: "SDS 'sds0' integrity: tornBlocksAccepted +2 (2 since it started)" });
  t.equal(lines().length, 4);
});
