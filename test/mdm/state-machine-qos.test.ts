// Proves the state machine's half of QoS (docs/qos.md): setMappedSdcLimits keeps ScaleIO's
// rules for the limits (IOPS 0 or at least 11, bandwidth in whole MiB/s) and librbd's for the
// burst (a rate at least its limit, which must exist; whole MiB/s; 0..3600 seconds), each
// refusal naming its field and changing nothing (the model is compared before and after);
// a limit on an SDC the volume is not mapped to is a not-found. Older state still loads: a
// journaled command without the burst fields replays as no burst, a bandwidth accepted
// before the whole-MiB rule replays as it was (while a new one is refused), and a model
// snapshot whose mappings have no burst fields (journal or etcd) is upgraded to 0s.

import t, { type Test } from 'tap';
import { GiB } from '../../src/common/units.js';
import { durableJson, type Id, type SystemModel } from '../../src/mdm/model.js';
import { StateMachine, type Command } from '../../src/mdm/state-machine.js';

const clusterId = '0123456789abcdef';

/** One pool on three SDSs, a volume mapped to sdc1; sdc2 registered, not mapped. */
function mappedVolume(): { machine: StateMachine; volume: Id; sdc: Id; unmapped: Id } {
  const machine = StateMachine.create(clusterId, 'test');
  const pd = machine.apply({ type: 'addProtectionDomain', name: 'pd1' }).id as Id;
  const pool = machine.apply({ type: 'addStoragePool', protectionDomainId: pd, name: 'sp1', volumeGranularityBytes: GiB, pgCount: 16 }).id as Id;
  for (let index = 0; index < 3; index++) {
    const sdsId = (0x5d5000000000 + index).toString(16).padStart(16, '0');
    machine.apply({ type: 'registerSds', sdsId, name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, nowMs: 1000 });
    machine.apply({ type: 'addSds', sdsId, protectionDomainId: pd, faultSetId: null });
    machine.apply({ type: 'addDevice', deviceId: (0xde7000000000 + index).toString(16).padStart(16, '0'), sdsId, storagePoolId: pool, path: '/dev/sdb', name: null, capacityBytes: 100 * GiB });
  }
  const volume = machine.apply({ type: 'addVolume', storagePoolId: pool, name: 'vol1', sizeBytes: GiB, volumeType: 'ThinProvisioned', nowMs: 5 }).id as Id;
  const sdc = machine.apply({ type: 'registerSdc', guid: 'guid-0000-1111', name: 'sdc1', nowMs: 9 }).id as Id;
  const unmapped = machine.apply({ type: 'registerSdc', guid: 'guid-2222-3333', name: 'sdc2', nowMs: 9 }).id as Id;
  machine.apply({ type: 'addMappedSdc', volumeId: volume, sdcId: sdc, accessMode: 'ReadWrite', allowMultipleMappings: false });
  return { machine, volume, sdc, unmapped };
}

type Limits = Omit<Extract<Command, { type: 'setMappedSdcLimits' }>, 'type' | 'volumeId' | 'sdcId'>;

function refused(t: Test, machine: StateMachine, command: Command, code: string, message: RegExp, what: string): void {
  const before = JSON.stringify(machine.model);
  t.throws(() => machine.apply(command), { code, message }, what);
  t.equal(JSON.stringify(machine.model), before, `${what}: nothing changed`);
}

t.test('every rule, each refusal naming its field and changing nothing', async (t) => {
  const { machine, volume, sdc, unmapped } = mappedVolume();
  const limits = (values: Partial<Limits>): Extract<Command, { type: 'setMappedSdcLimits' }> => ({ type: 'setMappedSdcLimits', volumeId: volume, sdcId: sdc, iopsLimit: 0, bandwidthLimitKbps: 0, ...values });
  const cases: Array<[Partial<Limits>, RegExp, string]> = [
    [{ iopsLimit: 5 }, /^iopsLimit: must be 0 \(unlimited\) or at least 11/, 'IOPS 5'],
    [{ iopsLimit: 10 }, /^iopsLimit: /, 'IOPS 10, just below the floor'],
    [{ iopsLimit: -1 }, /^iopsLimit: must be a non-negative integer/, 'negative IOPS'],
    [{ iopsLimit: 11.5 }, /^iopsLimit: must be a non-negative integer/, 'fractional IOPS'],
    [{ iopsLimit: '100' as unknown as number }, /^iopsLimit: must be a non-negative integer/, 'IOPS as a string (the REST layer converts)'],
    [{ bandwidthLimitKbps: 1000 }, /^bandwidthLimitKbps: must be a multiple of 1024 KiB\/s/, 'a bandwidth of 1000 KB/s'],
    [{ bandwidthLimitKbps: 1536 }, /^bandwidthLimitKbps: must be a multiple of 1024/, 'a bandwidth of 1.5 MiB/s'],
    [{ bandwidthLimitKbps: -1024 }, /^bandwidthLimitKbps: must be a non-negative integer/, 'a negative bandwidth'],
    [{ iopsBurst: 400 }, /^iopsBurst: needs an IOPS limit/, 'an IOPS burst without a limit'],
    [{ iopsLimit: 100, iopsBurst: 50 }, /^iopsBurst: must be 0 \(no burst\) or at least the IOPS limit, 100; got 50/, 'an IOPS burst below its limit'],
    [{ iopsLimit: 100, iopsBurst: -1 }, /^iopsBurst: must be a non-negative integer/, 'a negative IOPS burst'],
    [{ bandwidthBurstKbps: 4096 }, /^bandwidthBurstKbps: needs a bandwidth limit/, 'a bandwidth burst without a limit'],
    [{ bandwidthLimitKbps: 10240, bandwidthBurstKbps: 5120 }, /^bandwidthBurstKbps: must be 0 \(no burst\) or at least the bandwidth limit/, 'a bandwidth burst below its limit'],
    [{ bandwidthLimitKbps: 10240, bandwidthBurstKbps: 20000 }, /^bandwidthBurstKbps: must be a multiple of 1024/, 'a bandwidth burst not in whole MiB/s'],
    [{ iopsLimit: 100, iopsBurst: 400, burstSeconds: 3601 }, /^burstSeconds: must be from 0 to 3600, got 3601/, 'a burst of more than an hour'],
    [{ iopsLimit: 100, iopsBurst: 400, burstSeconds: -1 }, /^burstSeconds: must be a non-negative integer/, 'negative seconds'],
    [{ iopsLimit: 100, iopsBurst: 400, burstSeconds: 1.5 }, /^burstSeconds: must be a non-negative integer/, 'fractional seconds'],
  ];
  machine.apply(limits({ iopsLimit: 200, bandwidthLimitKbps: 2048 }));
  for (const [values, message, what] of cases) refused(t, machine, limits(values), 'MB_ERR_INVALID_ARGUMENT', message, what);
  refused(t, machine, { ...limits({ iopsLimit: 100 }), sdcId: unmapped }, 'MB_ERR_NOT_FOUND', /volume 'vol1' is not mapped to SDC/, 'a limit on an SDC the volume is not mapped to');
  refused(t, machine, { ...limits({ iopsLimit: 100 }), volumeId: 'ffffffffffffffff' }, 'MB_ERR_NOT_FOUND', /volume/, 'a limit on a missing volume');

  const accepted: Array<[Partial<Limits>, string]> = [
    [{ iopsLimit: 11 }, 'IOPS 11, the floor'],
    [{ bandwidthLimitKbps: 1024 }, 'bandwidth 1 MiB/s'],
    [{ iopsLimit: 100, iopsBurst: 100 }, 'a burst equal to its limit'],
    [{ iopsLimit: 2000, bandwidthLimitKbps: 10240, iopsBurst: 8000, bandwidthBurstKbps: 40960, burstSeconds: 3600 }, 'both bursts for an hour'],
    [{ iopsLimit: 100, iopsBurst: 400, burstSeconds: 0 }, 'a burst with 0 seconds (the SDC reads it as 1 s)'],
    [{ iopsLimit: 0, burstSeconds: 60 }, 'seconds without a burst are kept, and mean nothing'],
    [{}, 'everything unlimited again'],
  ];
  for (const [values, what] of accepted) {
    machine.apply(limits(values));
    t.same(machine.model.volumes[volume]?.mappings[0], { sdcId: sdc, accessMode: 'ReadWrite', iopsLimit: 0, bandwidthLimitKbps: 0, iopsBurst: 0, bandwidthBurstKbps: 0, burstSeconds: 0, ...values }, what);
  }
});

t.test('a new mapping has no limit and no burst; unmapping and mapping again starts over', async (t) => {
  const { machine, volume, sdc } = mappedVolume();
  machine.apply({ type: 'setMappedSdcLimits', volumeId: volume, sdcId: sdc, iopsLimit: 100, bandwidthLimitKbps: 1024, iopsBurst: 200, bandwidthBurstKbps: 2048, burstSeconds: 10 });
  machine.apply({ type: 'removeMappedSdc', volumeId: volume, sdcId: sdc });
  machine.apply({ type: 'addMappedSdc', volumeId: volume, sdcId: sdc, accessMode: 'ReadOnly', allowMultipleMappings: false });
  t.same(machine.model.volumes[volume]?.mappings, [{ sdcId: sdc, accessMode: 'ReadOnly', iopsLimit: 0, bandwidthLimitKbps: 0, iopsBurst: 0, bandwidthBurstKbps: 0, burstSeconds: 0 }]);
});

t.test('older state loads: commands without bursts replay as none, old bandwidths replay as they were, old snapshots upgrade', async (t) => {
  const { machine, volume, sdc } = mappedVolume();
  machine.apply({ type: 'setMappedSdcLimits', volumeId: volume, sdcId: sdc, iopsLimit: 100, bandwidthLimitKbps: 1024, iopsBurst: 400, bandwidthBurstKbps: 4096, burstSeconds: 30 });

  // A command journaled before bursts (no burst fields) means no burst: it clears them.
  const old = { type: 'setMappedSdcLimits', volumeId: volume, sdcId: sdc, iopsLimit: 500, bandwidthLimitKbps: 2048 } as Command;
  machine.replay(old);
  t.same(machine.model.volumes[volume]?.mappings[0], { sdcId: sdc, accessMode: 'ReadWrite', iopsLimit: 500, bandwidthLimitKbps: 2048, iopsBurst: 0, bandwidthBurstKbps: 0, burstSeconds: 0 }, 'an old command replays as no burst');

  // Before issue 17 any whole KiB/s was accepted: the journal holds such limits, and must open.
  const oldBandwidth: Command = { type: 'setMappedSdcLimits', volumeId: volume, sdcId: sdc, iopsLimit: 0, bandwidthLimitKbps: 1000 };
  refused(t, machine, oldBandwidth, 'MB_ERR_INVALID_ARGUMENT', /^bandwidthLimitKbps: must be a multiple of 1024/, 'a new 1000 KB/s limit');
  machine.replay(oldBandwidth);
  t.equal(machine.model.volumes[volume]?.mappings[0]?.bandwidthLimitKbps, 1000, 'an old 1000 KB/s limit replays as it was');
  t.throws(() => machine.replay({ ...oldBandwidth, iopsLimit: 5 }), { code: 'MB_ERR_INVALID_ARGUMENT' }, 'the rules that held then still hold on replay');

  // A model snapshot (journal or etcd) from before bursts: its mappings have only the limits.
  const snapshot = JSON.parse(durableJson(machine.model)) as SystemModel;
  const mapping = snapshot.volumes[volume]?.mappings[0] as unknown as Record<string, unknown>;
  delete mapping['iopsBurst'];
  delete mapping['bandwidthBurstKbps'];
  delete mapping['burstSeconds'];
  const loaded = new StateMachine(snapshot);
  t.same(loaded.model.volumes[volume]?.mappings[0], { sdcId: sdc, accessMode: 'ReadWrite', iopsLimit: 0, bandwidthLimitKbps: 1000, iopsBurst: 0, bandwidthBurstKbps: 0, burstSeconds: 0 }, 'an old snapshot loads with no burst');
  loaded.apply({ type: 'setMappedSdcLimits', volumeId: volume, sdcId: sdc, iopsLimit: 100, bandwidthLimitKbps: 1024, iopsBurst: 200 });
  t.equal(loaded.model.volumes[volume]?.mappings[0]?.iopsBurst, 200, 'and takes new limits');
});
