// The MDM cluster's state in etcd: the cluster's identity, the Master's leased key, the
// command log and its compacted snapshot. etcd is the consensus (no home-made one): every
// append is a transaction conditioned on the Master key this MDM created still existing, so
// an MDM whose lease ran out (partitioned, paused, slow) cannot commit anything.
//
// Keys (all under `meshblock/`):
//
//   cluster                  { clusterId, name, secret, adminAuth }      made once, by the first MDM
//   master                   MasterRecord, leased by the Master           absent while there is none
//   handover                 { to, untilMs }                              a planned ownership switch
//   log-head                 the sequence of the last command             "0" before the first
//   log/<seq:16 digits>      LogRecord: { term, command }                 seq from 1, never reused
//   snapshot                 { seq, parts, bytes, sha256 }                the model after command seq
//   snapshot-part/<seq>/<i>  ≤ etcdValueBytesMax of the model's JSON      a snapshot's pieces
//   mdm/<name>               MdmRecord                                    every MDM that ever joined
//   mdm-live/<name>          MdmRecord, leased by that MDM                the MDMs running now
//
// No value is larger than etcdValueBytesMax: etcd refuses requests over 1.5 MiB by default, and
// a model with its placement is tens of MB at 1000+ SDSs, so snapshots are stored in parts.

import { createHash } from 'node:crypto';
import type * as Etcd3Package from 'etcd3';
import type { Etcd3, IOptions, Lease } from 'etcd3';
import type { Logger } from 'pino';
import { MeshblockError } from '../common/errors.js';
import { lazyModule } from '../common/lazy-module.js';
import { etcdCallTimeoutMs, etcdLogReadBatchMax, etcdValueBytesMax, journalCompactAfterRecords } from '../common/limits.js';
import type { CommandLog } from './command-log.js';
import type { SystemModel } from './model.js';
import type { Command } from './state-machine.js';

/** Loaded only by an MDM of an etcd cluster (src/common/lazy-module.ts). */
const etcd3 = lazyModule<typeof Etcd3Package>('etcd3');

const prefix = 'meshblock/';
export const etcdKeys = {
  cluster: `${prefix}cluster`,
  master: `${prefix}master`,
  handover: `${prefix}handover`,
  head: `${prefix}log-head`,
  logPrefix: `${prefix}log/`,
  log: (seq: number): string => `${prefix}log/${String(seq).padStart(16, '0')}`,
  snapshot: `${prefix}snapshot`,
  snapshotPartsPrefix: `${prefix}snapshot-part/`,
  snapshotPart: (seq: number, part: number): string => `${prefix}snapshot-part/${String(seq).padStart(16, '0')}/${String(part).padStart(6, '0')}`,
  rosterPrefix: `${prefix}mdm/`,
  roster: (name: string): string => `${prefix}mdm/${name}`,
  livePrefix: `${prefix}mdm-live/`,
  live: (name: string): string => `${prefix}mdm-live/${name}`,
} as const;

/** What every MDM of the cluster shares, kept in etcd (readable only with a client certificate). */
export interface ClusterRecord {
  clusterId: string;
  name: string;
  /** The cluster secret SDSs and SDCs prove they know (hex). */
  secret: string;
  /** The REST admin's password hash file (src/mdm/auth.ts), as JSON text. */
  adminAuth: string;
}

/** An MDM as the others see it. */
export interface MdmRecord {
  name: string;
  /** HOST:PORT of its wire listener (SDSs and SDCs), served while it is Master. */
  wireAddress: string;
  /** HOST:PORT of its REST API. */
  apiAddress: string;
  /** The REST API's certificate (PEM), pinned when a Slave forwards to it. */
  apiCertificate: string;
  startedAtMs: number;
}

export interface MasterRecord extends MdmRecord {
  /** The hex lease id the key is held with. */
  lease: string;
}

/** A committed command and the mastership that committed it (the Master key's create revision). */
export interface LogRecord {
  term: string;
  command: Command;
}

export interface SnapshotRecord {
  seq: number;
  parts: number;
  bytes: number;
  sha256: string;
}

/** The state at one etcd revision: the snapshot's model (or null before the first) and the commands after it. */
export interface LoadedState {
  model: SystemModel | null;
  snapshotSeq: number;
  commands: Command[];
  /** The sequence of the last command in `commands` (or of the snapshot). */
  seq: number;
}

export interface EtcdTls {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** An etcd call failed: unreachable members, no quorum, a deadline. */
export class EtcdUnavailableError extends MeshblockError {
  constructor(what: string, cause: unknown) {
    super('MB_ERR_NO_QUORUM', `etcd did not answer (${what}): ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

export class EtcdStore {
  readonly client: Etcd3;

  private constructor(
    private readonly clientOptions: IOptions,
    private readonly log: Logger,
  ) {
    this.client = new (etcd3().Etcd3)(clientOptions);
  }

  static connect(options: { endpoints: readonly string[]; tls: EtcdTls | null; log: Logger }): EtcdStore {
    const clientOptions: IOptions = {
      hosts: [...options.endpoints],
      dialTimeout: etcdCallTimeoutMs,
      // Unary calls get a deadline: a partitioned member must not hold a call for minutes.
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + etcdCallTimeoutMs }),
    };
    if (options.tls !== null) clientOptions.credentials = { rootCertificate: options.tls.ca, certChain: options.tls.cert, privateKey: options.tls.key };
    return new EtcdStore(clientOptions, options.log);
  }

  close(): void {
    this.client.close();
  }

  private async call<T>(what: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (err instanceof MeshblockError) throw err;
      throw new EtcdUnavailableError(what, err);
    }
  }

  // --- the cluster's identity ------------------------------------------------------------

  async readCluster(): Promise<ClusterRecord | null> {
    const text = await this.call('read the cluster identity', () => this.client.get(etcdKeys.cluster).string());
    return text === null ? null : parseJson<ClusterRecord>(text, etcdKeys.cluster);
  }

  /** Stores `record` unless another MDM stored one first; returns the one that is stored. */
  async createCluster(record: ClusterRecord): Promise<ClusterRecord> {
    const result = await this.call('create the cluster identity', () =>
      this.client
        .if(etcdKeys.cluster, 'Create', '==', 0)
        .then(this.client.put(etcdKeys.cluster).value(JSON.stringify(record)), this.client.put(etcdKeys.head).value('0'))
        .commit(),
    );
    if (result.succeeded) return record;
    const stored = await this.readCluster();
    if (stored === null) throw new MeshblockError('MB_ERR_ETCD', `${etcdKeys.cluster} vanished while it was being created`);
    return stored;
  }

  // --- MDMs and the Master --------------------------------------------------------------

  /** This MDM, in the roster (durable) and among the live ones (leased). */
  async announce(record: MdmRecord, lease: Lease): Promise<void> {
    const value = JSON.stringify(record);
    await this.call('announce this MDM', async () => {
      await this.client.put(etcdKeys.roster(record.name)).value(value);
      await lease.put(etcdKeys.live(record.name)).value(value);
    });
  }

  async roster(): Promise<{ all: MdmRecord[]; live: Set<string> }> {
    return this.call('read the MDMs', async () => {
      const all = await this.client.getAll().prefix(etcdKeys.rosterPrefix).strings();
      const live = await this.client.getAll().prefix(etcdKeys.livePrefix).keys();
      return {
        all: Object.entries(all).map(([key, value]) => parseJson<MdmRecord>(value, key)),
        live: new Set(live.map((key) => key.slice(etcdKeys.livePrefix.length))),
      };
    });
  }

  async removeFromRoster(name: string): Promise<void> {
    await this.call('remove an MDM', () => this.client.delete().key(etcdKeys.roster(name)).exec());
  }

  /** The Master now, with the revision its key was created at (the mastership's identity), or null. */
  async readMaster(): Promise<{ record: MasterRecord; createRevision: string } | null> {
    const response = await this.call('read the Master', () => this.client.get(etcdKeys.master).exec());
    const kv = response.kvs[0];
    if (kv === undefined) return null;
    return { record: parseJson<MasterRecord>(kv.value.toString(), etcdKeys.master), createRevision: kv.create_revision };
  }

  /**
   * Becomes the Master if there is none: the key is created with `lease` only if absent.
   * Returns the key's create revision (every commit is conditioned on it), or null.
   */
  async campaign(record: MasterRecord, lease: Lease): Promise<string | null> {
    const leaseId = await this.call('grant a lease', () => lease.grant());
    const result = await this.call('campaign', () =>
      this.client
        .if(etcdKeys.master, 'Create', '==', 0)
        .then(this.client.put(etcdKeys.master).value(JSON.stringify(record)).lease(leaseId))
        .commit(),
    );
    if (!result.succeeded) return null;
    return result.header.revision;
  }

  /** Gives up the mastership now (a planned switch or a clean stop), if this mastership still holds it. */
  async resign(masterRevision: string): Promise<void> {
    await this.call('resign', () =>
      this.client
        .if(etcdKeys.master, 'Create', '==', masterRevision)
        .then(this.client.delete().key(etcdKeys.master))
        .commit(),
    );
  }

  async readHandover(): Promise<{ to: string; untilMs: number } | null> {
    const text = await this.call('read the handover', () => this.client.get(etcdKeys.handover).string());
    return text === null ? null : parseJson<{ to: string; untilMs: number }>(text, etcdKeys.handover);
  }

  /** Names the MDM that takes over next and gives up the mastership, in one transaction. */
  async handOver(masterRevision: string, to: string, untilMs: number): Promise<boolean> {
    const result = await this.call('hand over', () =>
      this.client
        .if(etcdKeys.master, 'Create', '==', masterRevision)
        .then(this.client.put(etcdKeys.handover).value(JSON.stringify({ to, untilMs })), this.client.delete().key(etcdKeys.master))
        .commit(),
    );
    return result.succeeded;
  }

  // --- the command log --------------------------------------------------------------------

  /**
   * The whole state at one revision: the snapshot (if any), then every command after it.
   * Read at one revision so that a compaction running meanwhile cannot tear it.
   */
  async load(): Promise<LoadedState> {
    return this.call('load the state', async () => {
      const headResponse = await this.client.get(etcdKeys.head).exec();
      const revision = headResponse.header.revision;
      const headKv = headResponse.kvs[0];
      const head = headKv === undefined ? 0 : parseSeq(headKv.value.toString(), etcdKeys.head);
      const snapshotText = await this.client.get(etcdKeys.snapshot).revision(revision).string();
      let model: SystemModel | null = null;
      let snapshotSeq = 0;
      if (snapshotText !== null) {
        const snapshot = parseJson<SnapshotRecord>(snapshotText, etcdKeys.snapshot);
        const parts: Buffer[] = [];
        for (let part = 0; part < snapshot.parts; part += 1) {
          const bytes = await this.client.get(etcdKeys.snapshotPart(snapshot.seq, part)).revision(revision).buffer();
          if (bytes === null) throw new MeshblockError('MB_ERR_ETCD', `snapshot ${snapshot.seq}: part ${part} of ${snapshot.parts} is missing`);
          parts.push(bytes);
        }
        const whole = Buffer.concat(parts);
        const sha256 = createHash('sha256').update(whole).digest('hex');
        if (whole.length !== snapshot.bytes || sha256 !== snapshot.sha256) throw new MeshblockError('MB_ERR_ETCD', `snapshot ${snapshot.seq} is damaged (${whole.length} bytes, sha256 ${sha256}; expected ${snapshot.bytes}, ${snapshot.sha256})`);
        model = parseJson<SystemModel>(whole.toString('utf8'), etcdKeys.snapshot);
        snapshotSeq = snapshot.seq;
      }
      const commands: Command[] = [];
      let seq = snapshotSeq;
      while (seq < head) {
        const batch = await this.readRange(seq, revision);
        if (batch.length === 0) throw new MeshblockError('MB_ERR_ETCD', `the log ends at ${seq} but its head says ${head}`);
        for (const command of batch) commands.push(command);
        seq += batch.length;
      }
      return { model, snapshotSeq, commands, seq };
    });
  }

  /**
   * The commands after `seq` (at most etcdLogReadBatchMax), or 'compacted' when they are
   * gone into a snapshot (the follower must load again).
   */
  async readAfter(seq: number): Promise<Command[] | 'compacted'> {
    return this.call('read the log', async () => {
      const batch = await this.readRange(seq, null);
      if (batch.length > 0) return batch;
      const snapshotText = await this.client.get(etcdKeys.snapshot).string();
      if (snapshotText !== null && parseJson<SnapshotRecord>(snapshotText, etcdKeys.snapshot).seq > seq) return 'compacted';
      return batch;
    });
  }

  private async readRange(seq: number, revision: string | null): Promise<Command[]> {
    let builder = this.client
      .getAll()
      .inRange(new (etcd3().Range)(etcdKeys.log(seq + 1), etcd3().Range.prefix(etcdKeys.logPrefix).end))
      .sort('Key', 'Ascend')
      .limit(etcdLogReadBatchMax);
    if (revision !== null) builder = builder.revision(revision);
    const response = await builder.exec();
    const commands: Command[] = [];
    for (const [index, kv] of response.kvs.entries()) {
      const key = kv.key.toString();
      if (key !== etcdKeys.log(seq + 1 + index)) {
        // A gap: the first is a compaction under us (the caller reloads); later ones are damage.
        if (index === 0) return [];
        throw new MeshblockError('MB_ERR_ETCD', `the log jumps from ${etcdKeys.log(seq + index)} to ${key}`);
      }
      commands.push(parseJson<LogRecord>(kv.value.toString(), key).command);
    }
    return commands;
  }

  /**
   * Appends `commands` after `seq`, if the mastership created at `masterRevision` still holds
   * the Master key and nobody appended since. False: not committed (the caller is no Master).
   */
  async append(masterRevision: string, seq: number, commands: readonly Command[]): Promise<boolean> {
    const puts = commands.map((command, index) => {
      const record: LogRecord = { term: masterRevision, command };
      const value = JSON.stringify(record);
      if (Buffer.byteLength(value) > etcdValueBytesMax) throw new MeshblockError('MB_ERR_ETCD', `a ${command.type} command is ${Buffer.byteLength(value)} bytes, over ${etcdValueBytesMax}`);
      return this.client.put(etcdKeys.log(seq + 1 + index)).value(value);
    });
    const result = await this.call('commit', () =>
      this.client
        .if(etcdKeys.master, 'Create', '==', masterRevision)
        .and(etcdKeys.head, 'Value', '==', String(seq))
        .then(...puts, this.client.put(etcdKeys.head).value(String(seq + commands.length)))
        .commit(),
    );
    return result.succeeded;
  }

  /**
   * Stores `model` (the state after command `seq`) as the snapshot and drops the commands it
   * covers and the snapshot before it, if still Master. The parts go first, one request
   * each; only the last transaction makes them the snapshot.
   */
  async writeSnapshot(masterRevision: string, seq: number, model: SystemModel): Promise<boolean> {
    const whole = Buffer.from(JSON.stringify(model));
    const parts = Math.max(1, Math.ceil(whole.length / etcdValueBytesMax));
    for (let part = 0; part < parts; part += 1) {
      const bytes = whole.subarray(part * etcdValueBytesMax, (part + 1) * etcdValueBytesMax);
      await this.call('write a snapshot part', () => this.client.put(etcdKeys.snapshotPart(seq, part)).value(bytes).exec());
    }
    const previous = await this.call('read the snapshot', () => this.client.get(etcdKeys.snapshot).string());
    const previousSeq = previous === null ? null : parseJson<SnapshotRecord>(previous, etcdKeys.snapshot).seq;
    const record: SnapshotRecord = { seq, parts, bytes: whole.length, sha256: createHash('sha256').update(whole).digest('hex') };
    const operations = [
      this.client.put(etcdKeys.snapshot).value(JSON.stringify(record)),
      this.client.delete().inRange(new (etcd3().Range)(etcdKeys.log(1), etcdKeys.log(seq + 1))),
    ];
    if (previousSeq !== null && previousSeq !== seq) operations.push(this.client.delete().prefix(`${etcdKeys.snapshotPartsPrefix}${String(previousSeq).padStart(16, '0')}/`));
    const result = await this.call('commit a snapshot', () =>
      this.client
        .if(etcdKeys.master, 'Create', '==', masterRevision)
        .then(...operations)
        .commit(),
    );
    if (!result.succeeded) await this.call('drop an uncommitted snapshot', () => this.client.delete().prefix(`${etcdKeys.snapshotPartsPrefix}${String(seq).padStart(16, '0')}/`).exec());
    this.log.info({ seq, parts, bytes: whole.length, committed: result.succeeded }, 'snapshot written to etcd');
    return result.succeeded;
  }

  // --- the etcd members ---------------------------------------------------------------------

  /** The etcd members and, for each, whether its own status call answers. */
  async members(): Promise<Array<{ name: string; clientUrls: string[]; healthy: boolean; isLeader: boolean }>> {
    const list = await this.call('list the etcd members', () => this.client.cluster.memberList({}));
    const statuses = await Promise.all(
      list.members.map(async (member) => {
        const url = member.clientURLs[0];
        if (url === undefined) return { healthy: false, leader: null };
        // One client per member: the shared one would ask whichever member it likes.
        const single = new (etcd3().Etcd3)({ ...this.clientOptions, hosts: [url] });
        try {
          const status = await single.maintenance.status({ deadline: Date.now() + etcdCallTimeoutMs });
          return { healthy: true, leader: status.leader };
        } catch {
          return { healthy: false, leader: null };
        } finally {
          single.close();
        }
      }),
    );
    return list.members.map((member, index) => ({
      name: member.name,
      clientUrls: member.clientURLs,
      healthy: statuses[index]?.healthy ?? false,
      isLeader: statuses[index]?.leader === member.ID,
    }));
  }
}

/**
 * The Master's command log: appends go to etcd conditioned on this mastership, in the
 * order given; a refused or failed commit rejects (the Master then steps down).
 */
export class EtcdCommandLog implements CommandLog {
  private sinceSnapshot = 0;
  private compacting = false;

  constructor(
    private readonly store: EtcdStore,
    private readonly masterRevision: string,
    /** The sequence of the last command committed (the state given to the service is after it). */
    private seq: number,
    private readonly log: Logger,
    private readonly onCommitted: (seq: number) => void = () => undefined,
  ) {}

  get lastSeq(): number {
    return this.seq;
  }

  async append(command: Command): Promise<void> {
    const committed = await this.store.append(this.masterRevision, this.seq, [command]);
    if (!committed) throw new MeshblockError('MB_ERR_MDM_NOT_MASTER', 'the commit was refused: this MDM no longer holds the mastership (or another appended meanwhile)');
    this.seq += 1;
    this.sinceSnapshot += 1;
    this.onCommitted(this.seq);
  }

  async compactIfDue(model: SystemModel): Promise<void> {
    if (this.sinceSnapshot < journalCompactAfterRecords || this.compacting) return;
    this.compacting = true;
    const seq = this.seq;
    // The model is serialized now (writeSnapshot stringifies before its first await).
    this.store
      .writeSnapshot(this.masterRevision, seq, model)
      .then((committed) => {
        if (committed) this.sinceSnapshot = this.seq - seq;
      })
      .catch((err: unknown) => this.log.error({ err }, 'snapshot to etcd failed; will retry'))
      .finally(() => {
        this.compacting = false;
      });
    await Promise.resolve();
  }

  async close(): Promise<void> {
    // The etcd client belongs to the cluster member, which closes it.
  }
}

function parseJson<T>(text: string, key: string): T {
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw new MeshblockError('MB_ERR_ETCD', `${key} holds no JSON: ${(err as Error).message}`, { cause: err });
  }
}

function parseSeq(text: string, key: string): number {
  const seq = Number(text);
  if (!Number.isSafeInteger(seq) || seq < 0) throw new MeshblockError('MB_ERR_ETCD', `${key} holds '${text.slice(0, 40)}', not a sequence number`);
  return seq;
}

