// State-machine and journal scaffolding the MDM's model tests share.

import type { Logger } from 'pino';
import { GiB } from '../../src/common/units.js';
import type { JournalRecord } from '../../src/mdm/command-log.js';
import { Journal } from '../../src/mdm/journal.js';
import { emptyModel, type Id, type SystemModel } from '../../src/mdm/model.js';
import { StateMachine, type Command } from '../../src/mdm/state-machine.js';

export interface RecordingMachine {
  machine: StateMachine;
  /** Every command applied, in order, for a replay. */
  commands: Command[];
  run: (command: Command) => ReturnType<StateMachine['apply']>;
}

/** A fresh state machine that keeps the commands it applies, so a test can replay the run. */
export function recordingMachine(clusterId: string, name = 'test'): RecordingMachine {
  const machine = StateMachine.create(clusterId, name);
  const commands: Command[] = [];
  const run = (command: Command): ReturnType<StateMachine['apply']> => {
    const applied = machine.apply(command);
    commands.push(command);
    return applied;
  };
  return { machine, commands, run };
}

/** Leaves the MDM journal in `dir` compacted to `model`: what a compaction (or an old MDM's snapshot) would leave. */
export async function compactJournal(dir: string, model: SystemModel, clusterId: string, log: Logger): Promise<void> {
  const { journal } = await Journal.open<JournalRecord, SystemModel>(dir, { log, initialSnapshot: emptyModel(clusterId, 'test') });
  await journal.compact(model);
  await journal.close();
}

/** The SDS ids and device ids of healthCluster(), by index. */
export const healthSdsId = (index: number): Id => (0x5d5000000000 + index).toString(16).padStart(16, '0');
export const healthDeviceId = (index: number): Id => (0xde7000000000 + index).toString(16).padStart(16, '0');
/** The time healthCluster()'s SDSs registered at. */
export const healthT0 = 1_000_000;

/**
 * The health tests' cluster: one pool of 64 groups over `sdsCount` SDSs with one 100 GiB
 * device each (ids healthSdsId/healthDeviceId), registered at healthT0, and a 16 GiB volume.
 */
export function healthCluster(clusterId: string, sdsCount: number): { machine: StateMachine; pool: Id } {
  const machine = StateMachine.create(clusterId, 'test');
  const pd = machine.apply({ type: 'addProtectionDomain', name: 'pd1' }).id as Id;
  const pool = machine.apply({ type: 'addStoragePool', protectionDomainId: pd, name: 'sp1', volumeGranularityBytes: GiB, pgCount: 64 }).id as Id;
  for (let index = 0; index < sdsCount; index++) {
    machine.apply({ type: 'registerSds', sdsId: healthSdsId(index), name: `sds${index}`, address: `127.0.0.1:${7000 + index}`, nowMs: healthT0 });
    machine.apply({ type: 'addSds', sdsId: healthSdsId(index), protectionDomainId: pd, faultSetId: null });
    machine.apply({ type: 'addDevice', deviceId: healthDeviceId(index), sdsId: healthSdsId(index), storagePoolId: pool, path: '/dev/sdb', name: null, capacityBytes: 100 * GiB });
  }
  machine.apply({ type: 'addVolume', storagePoolId: pool, name: 'vol1', sizeBytes: 16 * GiB, volumeType: 'ThinProvisioned', nowMs: healthT0 });
  return { machine, pool };
}
