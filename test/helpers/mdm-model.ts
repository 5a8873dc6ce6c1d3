// State-machine and journal scaffolding the MDM's model tests share.

import type { Logger } from 'pino';
import type { JournalRecord } from '../../src/mdm/command-log.js';
import { Journal } from '../../src/mdm/journal.js';
import { emptyModel, type SystemModel } from '../../src/mdm/model.js';
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
