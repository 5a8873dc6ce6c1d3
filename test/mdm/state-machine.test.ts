// Proves the MDM state machine's contract: it is deterministic (a seeded simulation of
// thousands of random commands, good and bad, gives the same model on a second run and on
// a replay of the accepted commands alone, which is how the journal restores it); a
// refused command changes nothing (the model is compared before and after every
// refusal); names, uniqueness, references and sizes are checked with stable codes; and
// capacity is accounted in ScaleIO's vocabulary, refusing thick volumes and spare changes
// that do not fit. SEED=n replays a simulation.

import t, { type Test } from 'tap';
import { mulberry32 } from '../../src/common/seeded-random.js';
import { GiB, MiB } from '../../src/common/units.js';
import type { Id } from '../../src/mdm/model.js';
import { MdmError, StateMachine, type Command } from '../../src/mdm/state-machine.js';

const clusterId = '0123456789abcdef';


function sdsId(index: number): Id {
  return (0x5d5000000000 + index).toString(16).padStart(16, '0');
}

function deviceId(index: number): Id {
  return (0xde7000000000 + index).toString(16).padStart(16, '0');
}

/** A small system: one PD, one pool, `sdsCount` SDSs with one device each. */
function smallSystem(sdsCount: number, deviceBytes: number, pool: Partial<Extract<Command, { type: 'addStoragePool' }>> = {}): { machine: StateMachine; pd: Id; pool: Id } {
  const machine = StateMachine.create(clusterId, 'test');
  const pd = machine.apply({ type: 'addProtectionDomain', name: 'pd1' }).id as Id;
  const poolId = machine.apply({ type: 'addStoragePool', protectionDomainId: pd, name: 'sp1', volumeGranularityBytes: GiB, pgCount: 4096, ...pool }).id as Id;
  for (let index = 0; index < sdsCount; index++) {
    machine.apply({ type: 'registerSds', sdsId: sdsId(index), name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, nowMs: 1000 });
    machine.apply({ type: 'addSds', sdsId: sdsId(index), protectionDomainId: pd, faultSetId: null });
    machine.apply({ type: 'addDevice', deviceId: deviceId(index), sdsId: sdsId(index), storagePoolId: poolId, path: '/dev/sdb', name: null, capacityBytes: deviceBytes });
  }
  return { machine, pd, pool: poolId };
}

function refused(t: Test, machine: StateMachine, command: Command, code: string, what: string): void {
  const before = JSON.stringify(machine.model);
  t.throws(() => machine.apply(command), { code }, what);
  t.equal(JSON.stringify(machine.model), before, `${what}: nothing changed`);
}

t.test('names, uniqueness and references', async (t) => {
  const { machine, pd, pool } = smallSystem(3, 100 * GiB);
  refused(t, machine, { type: 'addProtectionDomain', name: 'pd1' }, 'MB_ERR_NAME_TAKEN', 'a second PD named pd1');
  refused(t, machine, { type: 'addProtectionDomain', name: 'x'.repeat(32) }, 'MB_ERR_INVALID_ARGUMENT', 'a 32-character name');
  refused(t, machine, { type: 'addProtectionDomain', name: 'bad name' }, 'MB_ERR_INVALID_ARGUMENT', 'a name with a space');
  refused(t, machine, { type: 'addStoragePool', protectionDomainId: 'ffffffffffffffff', name: 'p' }, 'MB_ERR_NOT_FOUND', 'a pool in a missing PD');
  refused(t, machine, { type: 'addStoragePool', protectionDomainId: pd, name: 'sp1' }, 'MB_ERR_NAME_TAKEN', 'a second sp1 in pd1');
  refused(t, machine, { type: 'addStoragePool', protectionDomainId: pd, name: 'sp2', chunkBytes: 3 * MiB }, 'MB_ERR_INVALID_ARGUMENT', 'a chunk size that is not a power of two');
  refused(t, machine, { type: 'addStoragePool', protectionDomainId: pd, name: 'sp2', sparePercent: 95 }, 'MB_ERR_INVALID_ARGUMENT', 'a 95% spare');
  const pd2 = machine.apply({ type: 'addProtectionDomain', name: 'pd2' }).id as Id;
  t.ok(machine.apply({ type: 'addStoragePool', protectionDomainId: pd2, name: 'sp1', volumeGranularityBytes: GiB, pgCount: 16 }).id, 'sp1 again in another PD is fine (unique per PD)');
  const volume = machine.apply({ type: 'addVolume', storagePoolId: pool, name: 'vol1', sizeBytes: 1, volumeType: 'ThinProvisioned', nowMs: 5 }).id as Id;
  t.equal(machine.model.volumes[volume]?.sizeBytes, GiB, 'sizes round up to the pool granularity');
  refused(t, machine, { type: 'addVolume', storagePoolId: pool, name: 'vol1', sizeBytes: GiB, volumeType: 'ThinProvisioned', nowMs: 5 }, 'MB_ERR_NAME_TAKEN', 'a second vol1');
  refused(t, machine, { type: 'addVolume', storagePoolId: pool, name: 'v', sizeBytes: -5, volumeType: 'ThinProvisioned', nowMs: 5 }, 'MB_ERR_INVALID_ARGUMENT', 'a negative size');
  machine.apply({ type: 'setVolumeSize', id: volume, sizeBytes: 3 * GiB });
  t.equal(machine.model.volumes[volume]?.sizeBytes, 3 * GiB, 'a volume grows');
  refused(t, machine, { type: 'setVolumeSize', id: volume, sizeBytes: GiB }, 'MB_ERR_INVALID_ARGUMENT', 'shrinking');
  const sdc = machine.apply({ type: 'registerSdc', guid: 'guid-0000-1111', name: 'sdc1', nowMs: 9 }).id as Id;
  t.equal(machine.apply({ type: 'registerSdc', guid: 'guid-0000-1111', name: null, nowMs: 10 }).id, sdc, 'an SDC keeps its id across registrations (GUID)');
  machine.apply({ type: 'addMappedSdc', volumeId: volume, sdcId: sdc, accessMode: 'ReadWrite', allowMultipleMappings: false });
  const sdc2 = machine.apply({ type: 'registerSdc', guid: 'guid-2222-3333', name: 'sdc2', nowMs: 9 }).id as Id;
  refused(t, machine, { type: 'addMappedSdc', volumeId: volume, sdcId: sdc2, accessMode: 'ReadWrite', allowMultipleMappings: false }, 'MB_ERR_MULTIPLE_MAPPINGS', 'a second SDC without allowMultipleMappings');
  refused(t, machine, { type: 'removeVolume', id: volume }, 'MB_ERR_VOLUME_MAPPED', 'removing a mapped volume');
  refused(t, machine, { type: 'removeSdc', id: sdc }, 'MB_ERR_SDC_MAPPED', 'removing an SDC with mappings');
  refused(t, machine, { type: 'setMappedSdcLimits', volumeId: volume, sdcId: sdc, iopsLimit: 5, bandwidthLimitKbps: 0 }, 'MB_ERR_INVALID_ARGUMENT', 'an IOPS limit below 11');
  machine.apply({ type: 'setMappedSdcLimits', volumeId: volume, sdcId: sdc, iopsLimit: 1000, bandwidthLimitKbps: 10240 });
  t.same(machine.model.volumes[volume]?.mappings[0], { sdcId: sdc, accessMode: 'ReadWrite', iopsLimit: 1000, bandwidthLimitKbps: 10240, iopsBurst: 0, bandwidthBurstKbps: 0, burstSeconds: 0 });
  machine.apply({ type: 'removeMappedSdc', volumeId: volume, sdcId: sdc });
  machine.apply({ type: 'removeVolume', id: volume });
  refused(t, machine, { type: 'removeProtectionDomain', id: pd }, 'MB_ERR_NOT_EMPTY', 'removing a PD that holds a pool and SDSs');
  refused(t, machine, { type: 'registerSds', sdsId: 'aaaaaaaaaaaaaaaa', name: 'sds0', address: '127.0.0.1:1', nowMs: 1 }, 'MB_ERR_NAME_TAKEN', 'another SDS taking a registered name');
});

t.test('placement: every group on two SDSs, the epoch moves with it', async (t) => {
  const { machine, pool } = smallSystem(3, 100 * GiB);
  const groups = machine.model.storagePools[pool]?.groups ?? [];
  t.equal(groups.length, 4096, 'every group placed');
  for (const group of groups) {
    const primary = machine.model.devices[group.primaryDevice];
    const secondary = group.secondaryDevice === null ? undefined : machine.model.devices[group.secondaryDevice];
    if (primary === undefined || secondary === undefined || primary.sdsId === secondary.sdsId) t.fail('a group without two copies on two SDSs');
  }
  const primaries = new Set(groups.map((group) => machine.model.devices[group.primaryDevice]?.sdsId));
  t.equal(primaries.size, 3, 'devices added one by one to an empty pool: every SDS is primary of some groups (reads spread)');
  const epoch = machine.model.epoch;
  machine.apply({ type: 'registerSds', sdsId: sdsId(9), name: 'sds9', address: '127.0.0.1:7009', nowMs: 1 });
  t.equal(machine.model.epoch, epoch, 'registering an SDS that holds nothing does not move the epoch');
  const map = machine.placementMap();
  t.equal(map.epoch, epoch);
  t.same(Object.keys(map.sds).sort(), [sdsId(0), sdsId(1), sdsId(2)].sort(), 'the map names the SDSs that hold groups, with their addresses');
  t.equal(map.pools[pool]?.groups.length, 4096);
});

t.test('capacity: ScaleIO vocabulary, thick reservations and the spare', async (t) => {
  const { machine, pool } = smallSystem(4, 100 * GiB);
  let capacity = machine.poolCapacity(pool);
  t.equal(capacity.rawBytes, 400 * GiB, 'raw: every device');
  t.equal(capacity.spareBytes, 40 * GiB, 'spare: 10% by default');
  t.equal(capacity.usableBytes, 180 * GiB, 'usable: (raw - spare) / 2 copies');
  machine.apply({ type: 'addVolume', storagePoolId: pool, name: 'thick1', sizeBytes: 100 * GiB, volumeType: 'ThickProvisioned', nowMs: 1 });
  machine.apply({ type: 'addVolume', storagePoolId: pool, name: 'thin1', sizeBytes: 500 * GiB, volumeType: 'ThinProvisioned', nowMs: 1 });
  capacity = machine.poolCapacity(pool);
  t.equal(capacity.thickReservedBytes, 100 * GiB);
  t.equal(capacity.thinProvisionedBytes, 500 * GiB, 'thin volumes may overprovision');
  t.equal(capacity.unusedBytes, 400 * GiB - 40 * GiB - 200 * GiB, 'unused: raw minus spare minus both copies of the thick reservation');
  refused(t, machine, { type: 'addVolume', storagePoolId: pool, name: 'thick2', sizeBytes: 81 * GiB, volumeType: 'ThickProvisioned', nowMs: 1 }, 'MB_ERR_INSUFFICIENT_CAPACITY', 'a thick volume past the usable capacity');
  t.ok(machine.apply({ type: 'addVolume', storagePoolId: pool, name: 'thick2', sizeBytes: 80 * GiB, volumeType: 'ThickProvisioned', nowMs: 1 }).id, 'one that just fits is made');
  refused(t, machine, { type: 'setStoragePoolSpare', id: pool, sparePercent: 20 }, 'MB_ERR_INSUFFICIENT_CAPACITY', 'raising the spare into the reservations');
  refused(t, machine, { type: 'removeDevice', id: deviceId(3) }, 'MB_ERR_INSUFFICIENT_CAPACITY', 'removing a device the reservations need');
  // Heartbeats report bytes in use (volatile, set directly as the MDM service does).
  for (const index of [0, 1, 2, 3]) (machine.model.devices[deviceId(index)] as { usedBytes: number }).usedBytes = 10 * GiB;
  capacity = machine.poolCapacity(pool);
  t.equal(capacity.inUseBytes, 20 * GiB, 'in use: half the raw bytes written (two copies)');
  t.equal(capacity.protectedBytes, 40 * GiB, 'protected: raw bytes with both copies');
  t.equal(capacity.degradedBytes, 0);
  t.equal(capacity.failedBytes, 0);
});

t.test('seeded simulation: deterministic, replayable, refusals change nothing', async (t) => {
  const seed = process.env['SEED'] !== undefined ? Number(process.env['SEED']) : Math.floor(Math.random() * 2 ** 31);
  t.comment(`seed ${seed}`);

  function simulate(): { machine: StateMachine; accepted: Command[]; refusals: number; badRefusals: number } {
    const random = mulberry32(seed);
    const pick = <T>(items: T[]): T | undefined => items[Math.floor(random() * items.length)];
    const machine = StateMachine.create(clusterId, 'sim');
    const accepted: Command[] = [];
    let refusals = 0;
    let badRefusals = 0;
    let nowMs = 0;
    for (let step = 0; step < 3000; step++) {
      nowMs += Math.floor(random() * 1000);
      const model = machine.model;
      const pds = Object.keys(model.protectionDomains);
      const pools = Object.keys(model.storagePools);
      const sdss = Object.keys(model.sdss);
      const volumes = Object.keys(model.volumes);
      const sdcs = Object.keys(model.sdcs);
      const name = `n${Math.floor(random() * 40)}`;
      const choices: Array<() => Command> = [
        () => ({ type: 'addProtectionDomain', name: `pd${Math.floor(random() * 3)}` }),
        () => ({ type: 'addStoragePool', protectionDomainId: pick(pds) ?? 'ffffffffffffffff', name: `sp${Math.floor(random() * 3)}`, volumeGranularityBytes: GiB, pgCount: 16 }),
        () => ({ type: 'registerSds', sdsId: sdsId(Math.floor(random() * 12)), name: `sds${Math.floor(random() * 14)}`, address: `127.0.0.1:${7000 + Math.floor(random() * 12)}`, nowMs }),
        () => ({ type: 'addSds', sdsId: pick(sdss) ?? sdsId(0), protectionDomainId: pds[0] ?? 'ffffffffffffffff', faultSetId: null }),
        () => ({ type: 'addDevice', deviceId: deviceId(Math.floor(random() * 40)), sdsId: pick(sdss) ?? sdsId(0), storagePoolId: pick(pools) ?? 'ffffffffffffffff', path: `/dev/sd${'bcdef'[Math.floor(random() * 5)]}`, name: null, capacityBytes: (1 + Math.floor(random() * 8)) * 64 * GiB }),
        () => ({ type: 'addVolume', storagePoolId: pick(pools) ?? 'ffffffffffffffff', name, sizeBytes: Math.floor(random() * 200 * GiB), volumeType: random() < 0.3 ? 'ThickProvisioned' : 'ThinProvisioned', nowMs }),
        () => ({ type: 'setVolumeSize', id: pick(volumes) ?? 'x', sizeBytes: Math.floor(random() * 300 * GiB) }),
        () => ({ type: 'renameVolume', id: pick(volumes) ?? 'x', name }),
        () => ({ type: 'registerSdc', guid: `guid-${Math.floor(random() * 6)}-abcdef`, name: null, nowMs }),
        () => ({ type: 'addMappedSdc', volumeId: pick(volumes) ?? 'x', sdcId: pick(sdcs) ?? 'x', accessMode: random() < 0.5 ? 'ReadWrite' : 'ReadOnly', allowMultipleMappings: random() < 0.3 }),
        () => ({ type: 'removeMappedSdc', volumeId: pick(volumes) ?? 'x', sdcId: pick(sdcs) ?? 'x' }),
        () => ({ type: 'removeVolume', id: pick(volumes) ?? 'x' }),
        () => ({ type: 'removeDevice', id: pick(Object.keys(model.devices)) ?? 'x' }),
        () => ({ type: 'removeSds', id: pick(sdss) ?? 'x' }),
        () => ({ type: 'removeStoragePool', id: pick(pools) ?? 'x' }),
        () => ({ type: 'setStoragePoolSpare', id: pick(pools) ?? 'x', sparePercent: Math.floor(random() * 60) }),
        // Snapshots: both phases as snapshotVolumes() gives them, restores, removal modes.
        () => ({ type: 'beginSnapshot', defs: [{ volumeId: pick(volumes) ?? 'x', name, readOnly: random() < 0.3 }], nowMs }),
        () => ({ type: 'commitSnapshot', groupId: model.snapshotBarrier?.groupId ?? 'x', nowMs }),
        () => ({ type: 'abortSnapshot', groupId: model.snapshotBarrier?.groupId ?? 'x', reason: 'sim' }),
        // Mostly a source of the same V-Tree (the only kind taken), so that every seed reaches a restore.
        () => {
          const volumeId = pick(volumes) ?? 'x';
          const kin = volumes.filter((id) => id !== volumeId && model.volumes[id]?.vtreeId === model.volumes[volumeId]?.vtreeId);
          return { type: 'overwriteVolumeContent', volumeId, sourceVolumeId: (random() < 0.8 ? pick(kin) : undefined) ?? pick(volumes) ?? 'x' };
        },
        () => ({ type: 'removeVolume', id: pick(volumes) ?? 'x', removeMode: pick(['ONLY_ME', 'INCLUDING_DESCENDANTS', 'DESCENDANTS_ONLY', 'WHOLE_VTREE'] as const) ?? 'ONLY_ME' }),
        () => ({ type: 'removeSnapshotGroup', groupId: pick(volumes.map((id) => model.volumes[id]?.snapshotGroupId ?? 'x')) ?? 'x' }),
        () => ({ type: 'setVolumeAccessModeLimit', id: pick(volumes) ?? 'x', accessModeLimit: random() < 0.5 ? 'ReadOnly' : 'ReadWrite' }),
      ];
      // Growth outweighs removal, so the system gets big enough to exercise volumes and mappings.
      const weights = [1, 1, 3, 3, 4, 6, 1, 1, 1, 4, 1, 1, 0.3, 0.3, 0.3, 1, 2, 1.5, 0.5, 1, 0.5, 0.3, 0.5];
      let roll = random() * weights.reduce((sum, weight) => sum + weight, 0);
      let chosen = 0;
      while (roll >= (weights[chosen] as number) && chosen < choices.length - 1) roll -= weights[chosen++] as number;
      const command = (choices[chosen] as () => Command)();
      const before = JSON.stringify(model);
      try {
        machine.apply(command);
        accepted.push(command);
      } catch (err) {
        if (!(err instanceof MdmError)) throw err;
        refusals += 1;
        if (JSON.stringify(machine.model) !== before) badRefusals += 1;
      }
    }
    return { machine, accepted, refusals, badRefusals };
  }

  const first = simulate();
  const second = simulate();
  t.comment(`${first.accepted.length} commands accepted, ${first.refusals} refused; ${Object.keys(first.machine.model.volumes).length} volumes, ${Object.keys(first.machine.model.devices).length} devices, epoch ${first.machine.model.epoch}`);
  t.ok(first.accepted.length > 300 && first.refusals > 300, 'the simulation exercised both paths');
  const kinds = new Set(first.accepted.map((command) => command.type));
  t.ok(['addDevice', 'addVolume', 'addMappedSdc', 'removeDevice', 'removeVolume', 'setVolumeSize', 'commitSnapshot', 'overwriteVolumeContent'].every((kind) => kinds.has(kind as Command['type'])), `it reached devices, volumes, mappings and snapshots (${[...kinds].join(', ')})`);
  t.equal(first.badRefusals, 0, 'no refused command changed the model');
  t.equal(JSON.stringify(second.machine.model), JSON.stringify(first.machine.model), 'the same seed gives the same model');
  const replay = StateMachine.create(clusterId, 'sim');
  for (const command of first.accepted) replay.apply(command);
  t.equal(JSON.stringify(replay.model), JSON.stringify(first.machine.model), 'replaying the accepted commands alone rebuilds it (the journal)');
});
