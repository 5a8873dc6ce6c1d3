// Where the MDM's commands are kept: the seam between the service (which applies commands to
// the state machine) and the store that makes them durable. Two stores implement it: the
// embedded journal in the MDM's data directory (one MDM, the default) and etcd (an MDM
// cluster, src/mdm/etcd-store.ts), where an append is also a proof that this MDM is still
// the Master.

import { journalCompactAfterRecords } from '../common/limits.js';
import type { Logger } from 'pino';
import { Journal } from './journal.js';
import type { SystemModel } from './model.js';
import type { Command } from './state-machine.js';

export interface JournalRecord {
  command: Command;
}

export interface CommandLog {
  /**
   * Resolves once `command` is durable: after any crash, the state is rebuilt with it.
   * Rejects when that cannot be said; the caller then no longer knows whether the command
   * is in the log, and must stop acting on its in-memory state (the journal: the MDM exits;
   * etcd: the Master steps down and reloads what etcd holds).
   */
  append(command: Command): Promise<void>;
  /** Called after each append with the model that includes it: compacts when due. */
  compactIfDue(model: SystemModel): Promise<void>;
  close(): Promise<void>;
}

/** The embedded journal (src/mdm/journal.ts) as a CommandLog. */
export class JournalCommandLog implements CommandLog {
  constructor(
    private readonly journal: Journal<JournalRecord, SystemModel>,
    private readonly log: Logger,
  ) {}

  append(command: Command): Promise<void> {
    return this.journal.append({ command });
  }

  async compactIfDue(model: SystemModel): Promise<void> {
    if (this.journal.recordCount < journalCompactAfterRecords) return;
    await this.journal.compact(model).catch((err: unknown) => this.log.error({ err }, 'journal compaction failed; will retry'));
  }

  close(): Promise<void> {
    return this.journal.close();
  }
}
