// Histories of REST changes against an MDM cluster, and the check that no Master but the
// one in office acknowledged anything (the partition tests; usable by the soak too).
//
// A history client (rest-history-client.mjs, a process of its own so that it can run in a
// simulated host's namespace) records every change it sent: when, to which MDM, the answer's
// status and the x-meshblock-mdm / x-meshblock-term headers. Afterwards the test reads what
// etcd holds, which is the only truth about what was committed:
//
//   - the command log (`meshblock/log/<seq>` = { term, command }) with each record's
//     mod revision, the revision it was committed at;
//   - every mastership, from the history of `meshblock/master` (a watch from revision 1):
//     a term is the revision the key was created at, and it ends where the key was deleted.
//
// checkHistory() then proves, for the recorded history:
//
//   1. masterships never overlap: the key is deleted before it is created again;
//   2. every record was committed inside its term's mastership (term < revision < end), and
//      terms never go backwards along the log: a deposed Master committed nothing;
//   3. every acknowledged change (HTTP 200) is in the final state and in exactly one log
//      record, whose term is the one the answer named, held by the MDM the answer named;
//   4. in real time, no acknowledgement of an older term is entirely later than one of a
//      newer term (for terms T1 < T2, every T1 ack started before every T2 ack ended): a
//      Master acknowledges nothing once another one has acknowledged anything.
//
// Refusals and timeouts are not required to be absent from the log (a commit that timed out
// may have happened); they are counted.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { etcdKeys, type LogRecord, type SnapshotRecord } from '../../src/mdm/etcd-store.js';
import { nodeArgv, orphanKill, repoRoot, type TeardownHost } from './processes.js';

/** One change the history client sent (or tried to). */
export interface HistoryEntry {
  kind: 'change';
  /** The protection domain's name: unique in the test. */
  name: string;
  /** The MDM the client sent it to. */
  target: string;
  /** CLOCK_MONOTONIC ms (monotonicNowMs()), from just before the request to its answer. */
  startMs: number;
  endMs: number;
  /** The HTTP status; 0 without an answer (a timeout, a refused connection: see `error`). */
  status: number;
  /** x-meshblock-mdm: the MDM that served it (a Slave forwards, so: the Master). */
  mdm: string | null;
  /** x-meshblock-term: the create revision of that MDM's mastership ('0' if it had none). */
  term: string | null;
  /** The meshblock error code of a refusal (MB_ERR_...). */
  code: string | null;
  error: string | null;
  /** False when nothing was sent (the login before it failed). */
  sent: boolean;
}

export interface HistoryClientOptions {
  /** A label for messages. */
  label: string;
  /** Runs the client in this network namespace (a simulated host). */
  netns?: string;
  targets: Array<{ name: string; url: string }>;
  caPath: string;
  password: string;
  /** Names are h-PREFIX-N: unique per client. */
  prefix: string;
  intervalMs: number;
  requestTimeoutMs: number;
  inflightMax: number;
  /** The client stops by itself after this long, whatever happens to the test. */
  durationMsMax: number;
}

export interface HistoryClient {
  label: string;
  /** What was recorded so far. */
  entries(): HistoryEntry[];
  /** Stops sending, waits for the answers in flight, and returns the whole history. */
  stop(): Promise<{ entries: HistoryEntry[]; skipped: number; logins: number }>;
}

/** The clock the history clients record with (shared by every process on the machine). */
export function monotonicNowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

const clientScript = path.join(repoRoot, 'test/helpers/rest-history-client.mjs');

export async function startHistoryClient(t: TeardownHost, options: HistoryClientOptions): Promise<HistoryClient> {
  const config = {
    targets: options.targets,
    caPath: options.caPath,
    password: options.password,
    prefix: options.prefix,
    intervalMs: options.intervalMs,
    requestTimeoutMs: options.requestTimeoutMs,
    inflightMax: options.inflightMax,
    durationMsMax: options.durationMsMax,
  };
  const netnsPrefix = options.netns !== undefined ? ['ip', 'netns', 'exec', options.netns] : [];
  const [command, ...args] = [...orphanKill, ...netnsPrefix, ...nodeArgv, clientScript, JSON.stringify(config)] as string[] as [string, ...string[]];
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  let exitedAlready = false;
  void exited.then(() => (exitedAlready = true));
  t.teardown(async () => {
    try {
      process.kill(-(child.pid as number), 'SIGKILL');
    } catch {
      // Gone already.
    }
    if (!exitedAlready) await exited;
  });
  const entries: HistoryEntry[] = [];
  let done: { skipped: number; logins: number } | null = null;
  let stdout = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  child.stdout.setEncoding('utf8').on('data', (text: string) => {
    stdout += text;
    let newline = stdout.indexOf('\n');
    while (newline >= 0) {
      const line = stdout.slice(0, newline);
      stdout = stdout.slice(newline + 1);
      newline = stdout.indexOf('\n');
      const parsed = JSON.parse(line) as HistoryEntry | { kind: 'done'; skipped: number; logins: number };
      if (parsed.kind === 'done') done = { skipped: parsed.skipped, logins: parsed.logins };
      else entries.push(parsed);
    }
  });
  await once(child, 'spawn');
  return {
    label: options.label,
    entries: () => entries,
    stop: async () => {
      if (!exitedAlready) process.kill(child.pid as number, 'SIGTERM');
      // Everything in flight ends within its request timeout.
      const bound = setTimeout(() => child.kill('SIGKILL'), options.requestTimeoutMs + 10_000);
      const code = await exited;
      clearTimeout(bound);
      const finished = done as { skipped: number; logins: number } | null;
      if (code !== 0 || finished === null) throw new Error(`history client ${options.label} exited ${code} without finishing: ${stderr}`);
      return { entries, ...finished };
    },
  };
}

/** A record of the command log, as etcd holds it. */
export interface CommittedRecord {
  seq: number;
  term: string;
  /** The etcd revision it was committed at. */
  modRevision: string;
  record: LogRecord;
}

/** The command log in etcd (every record after the snapshot, if there is one). */
export async function readEtcdLog(client: Etcd3): Promise<{ snapshotSeq: number; records: CommittedRecord[] }> {
  const snapshotText = await client.get(etcdKeys.snapshot).string();
  const snapshotSeq = snapshotText === null ? 0 : (JSON.parse(snapshotText) as SnapshotRecord).seq;
  const response = await client.getAll().prefix(etcdKeys.logPrefix).sort('Key', 'Ascend').exec();
  const records = response.kvs.map((kv) => {
    const key = kv.key.toString();
    const record = JSON.parse(kv.value.toString()) as LogRecord;
    return { seq: Number(key.slice(etcdKeys.logPrefix.length)), term: record.term, modRevision: kv.mod_revision, record };
  });
  return { snapshotSeq, records };
}

/** A mastership: held by `name` from revision `term` (the key's creation) to `endRevision` (its deletion; null: still held). */
export interface Mastership {
  term: string;
  name: string;
  endRevision: string | null;
}

/** Every event of the Master key, in revision order, from etcd's history. */
export interface MasterKeyEvent {
  type: 'put' | 'delete';
  revision: string;
  createRevision: string;
  name: string | null;
}

/**
 * The history of the Master key from revision 1, by a watch (etcd keeps the history until
 * it compacts; the test is far shorter than that). Complete once the watch has delivered
 * the key's current version, which is read first.
 */
export async function readMasterKeyHistory(client: Etcd3, timeoutMs = 10_000): Promise<MasterKeyEvent[]> {
  const current = await client.get(etcdKeys.master).exec();
  const last = current.kvs[0];
  if (last === undefined) throw new Error('there is no Master now: the history has no known end to wait for');
  const events: MasterKeyEvent[] = [];
  const watcher = await client.watch().key(etcdKeys.master).startRevision('1').create();
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the Master key's history did not reach revision ${last.mod_revision} within ${timeoutMs} ms`)), timeoutMs);
      const seen = (revision: string): void => {
        if (revision === last.mod_revision) {
          clearTimeout(timer);
          resolve();
        }
      };
      watcher.on('put', (kv) => {
        let name: string | null = null;
        try {
          name = (JSON.parse(kv.value.toString()) as { name: string }).name;
        } catch {
          // Recorded without a name; the checks say so.
        }
        events.push({ type: 'put', revision: kv.mod_revision, createRevision: kv.create_revision, name });
        seen(kv.mod_revision);
      });
      watcher.on('delete', (kv) => {
        events.push({ type: 'delete', revision: kv.mod_revision, createRevision: kv.create_revision, name: null });
        seen(kv.mod_revision);
      });
      watcher.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  } finally {
    await watcher.cancel();
  }
  return events;
}

export interface HistoryReport {
  /** Every way the history breaks the rules; empty when it holds. */
  violations: string[];
  masterships: Mastership[];
  acknowledged: number;
  /** Non-200 answers, by "STATUS CODE" (status 0: no answer). */
  refused: Map<string, number>;
  /** Refused or unanswered changes that were committed all the same. */
  refusedButCommitted: HistoryEntry[];
  /** Acknowledged changes per term. */
  acknowledgedPerTerm: Map<string, number>;
}

const rev = (value: string): bigint => BigInt(value);

/**
 * Checks a history against etcd's log and Master key history and the final list of
 * protection domain names (see the file's comment for the rules).
 */
export function checkHistory(entries: readonly HistoryEntry[], log: { snapshotSeq: number; records: readonly CommittedRecord[] }, masterKey: readonly MasterKeyEvent[], finalNames: ReadonlySet<string>): HistoryReport {
  const violations: string[] = [];
  const violate = (text: string): void => {
    // A broken run would otherwise print thousands of lines; the first ones tell.
    if (violations.length < 50) violations.push(text);
  };

  // 1. Masterships from the key's history: put, delete, put, delete, ...
  const masterships: Mastership[] = [];
  for (const event of masterKey) {
    const open = masterships[masterships.length - 1];
    if (event.type === 'put') {
      if (open !== undefined && open.endRevision === null) {
        if (open.term === event.createRevision) violate(`the Master key of term ${open.term} was written again at revision ${event.revision}`);
        else violate(`two masterships at once: term ${event.createRevision} (${event.name}) began while term ${open.term} (${open.name}) still held the key`);
        continue;
      }
      if (event.name === null) violate(`the Master key created at ${event.createRevision} names no MDM`);
      masterships.push({ term: event.createRevision, name: event.name ?? '?', endRevision: null });
    } else if (open === undefined || open.endRevision !== null) {
      violate(`the Master key was deleted at ${event.revision} with no mastership open`);
    } else {
      open.endRevision = event.revision;
    }
  }
  const byTerm = new Map(masterships.map((mastership) => [mastership.term, mastership]));

  // 2. Every record inside its term's mastership; terms never go backwards.
  if (log.records.length > 0 && log.records[0]?.seq !== log.snapshotSeq + 1) violate(`the log starts at ${log.records[0]?.seq}, not after the snapshot's ${log.snapshotSeq}`);
  let previous: CommittedRecord | undefined;
  for (const record of log.records) {
    if (previous !== undefined) {
      if (record.seq !== previous.seq + 1) violate(`the log jumps from ${previous.seq} to ${record.seq}`);
      if (rev(record.term) < rev(previous.term)) violate(`record ${record.seq} has term ${record.term}, older than record ${previous.seq}'s ${previous.term}: a deposed Master committed`);
    }
    previous = record;
    const mastership = byTerm.get(record.term);
    if (mastership === undefined) {
      violate(`record ${record.seq} (${record.record.command.type}) has term ${record.term}, which no mastership had`);
      continue;
    }
    if (rev(record.modRevision) <= rev(mastership.term)) violate(`record ${record.seq} was committed at ${record.modRevision}, before its term ${mastership.term} began`);
    if (mastership.endRevision !== null && rev(record.modRevision) >= rev(mastership.endRevision)) {
      violate(`record ${record.seq} of term ${record.term} (${mastership.name}) was committed at ${record.modRevision}, after that mastership ended at ${mastership.endRevision}`);
    }
  }

  // 3. Acknowledged changes: in the final state, in one record of the term named, by the MDM named.
  const recordsByName = new Map<string, CommittedRecord[]>();
  for (const record of log.records) {
    const command = record.record.command;
    if (command.type !== 'addProtectionDomain') continue;
    const found = recordsByName.get(command.name) ?? [];
    found.push(record);
    recordsByName.set(command.name, found);
  }
  const acks = entries.filter((entry) => entry.status === 200);
  const acknowledgedPerTerm = new Map<string, number>();
  const termHolder = new Map<string, string>();
  for (const ack of acks) {
    const what = `${ack.name} (sent to ${ack.target}, acknowledged by ${ack.mdm} in term ${ack.term})`;
    if (!finalNames.has(ack.name)) violate(`${what} is not in the final state`);
    const records = recordsByName.get(ack.name) ?? [];
    if (records.length !== 1) {
      violate(`${what} is in ${records.length} log records, not 1`);
      continue;
    }
    const record = records[0] as CommittedRecord;
    if (ack.term === null || ack.mdm === null) {
      violate(`${what} came without x-meshblock-term or x-meshblock-mdm`);
      continue;
    }
    acknowledgedPerTerm.set(ack.term, (acknowledgedPerTerm.get(ack.term) ?? 0) + 1);
    if (record.term !== ack.term) violate(`${what} was committed in record ${record.seq} under term ${record.term}, not the term it was acknowledged in`);
    const holder = termHolder.get(ack.term);
    if (holder !== undefined && holder !== ack.mdm) violate(`term ${ack.term} was named by two MDMs: ${holder} and ${ack.mdm}`);
    termHolder.set(ack.term, ack.mdm);
    const mastership = byTerm.get(ack.term);
    if (mastership !== undefined && mastership.name !== ack.mdm) violate(`${what}: etcd says term ${ack.term} was ${mastership.name}'s`);
  }

  // 4. Real time: for terms T1 < T2, every T1 ack started before every T2 ack ended.
  const spans = [...acknowledgedPerTerm.keys()]
    .sort((a, b) => (rev(a) < rev(b) ? -1 : rev(a) > rev(b) ? 1 : 0))
    .map((term) => {
      const inTerm = acks.filter((ack) => ack.term === term);
      const latestStart = inTerm.reduce((latest, ack) => (ack.startMs > latest.startMs ? ack : latest));
      const earliestEnd = inTerm.reduce((earliest, ack) => (ack.endMs < earliest.endMs ? ack : earliest));
      return { term, latestStart, earliestEnd };
    });
  for (let older = 0; older < spans.length; older++) {
    for (let newer = older + 1; newer < spans.length; newer++) {
      const a = spans[older] as (typeof spans)[number];
      const b = spans[newer] as (typeof spans)[number];
      if (a.latestStart.startMs >= b.earliestEnd.endMs) {
        violate(
          `${a.latestStart.name} was acknowledged by ${a.latestStart.mdm} in term ${a.term} in a request started ${(a.latestStart.startMs - b.earliestEnd.endMs).toFixed(1)} ms after ` +
            `${b.earliestEnd.name} had been acknowledged by ${b.earliestEnd.mdm} in the newer term ${b.term}: two Masters acknowledging`,
        );
      }
    }
  }

  const refused = new Map<string, number>();
  const refusedButCommitted: HistoryEntry[] = [];
  for (const entry of entries) {
    if (entry.status === 200) continue;
    const key = `${entry.status} ${entry.code ?? (entry.sent ? (entry.error ?? '') : 'not sent (login failed)')}`.replace(/ within \d+ ms/, '');
    refused.set(key, (refused.get(key) ?? 0) + 1);
    if (recordsByName.has(entry.name)) refusedButCommitted.push(entry);
  }
  return { violations, masterships, acknowledged: acks.length, refused, refusedButCommitted, acknowledgedPerTerm };
}
