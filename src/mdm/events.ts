// The MDM's event log (docs/events.md): what happened to the system, for people and for
// monitoring — SDSs down and back up, devices failed, rebuilds started and finished, pools
// crossing their capacity thresholds, refused logins, and every configuration change with
// the user who made it. Each event has an id (1, 2, ... never reused in a log), a time, a
// severity, a type, the object it is about and a message; the REST API serves it
// (GET /api/events, long-polled for `meshblock events --follow`), and the alerting events
// go out as SNMP traps (snmp-traps.ts).
//
// Where it lives. With one MDM, in its data directory beside the journal (FileEventStore):
// two JSON-lines files of eventFileEventsMax events each, the older replaced when the newer
// is full, so the log is bounded and survives restarts. In an MDM cluster, in etcd beside
// the command log (EtcdEventStore): the Master appends, numbering after etcd's head with a
// compare-and-swap, so a Master that takes over reads the same log and goes on numbering
// it, and `--follow` through a failover sees neither a gap nor a repeat. Events are not
// commands: they are not in the state machine, not replayed, and a lost append (etcd away)
// costs one event, never the cluster's state.
//
// Where events come from. Refused logins and configuration changes are recorded by the REST
// API, which knows the user. The rest is not recorded where it is decided: the Master's
// EventWatch compares, every eventWatchIntervalMs, what the model says now (SDS down or not,
// devices failed, a fill running, each pool's capacity level) with what the event log last
// said (watchedFromEvents), and records the differences. Decisions stay pure (health.ts is
// untouched), every path to a change is covered (a command, a heartbeat, an administrator),
// and an MDM that restarts or takes over reports what changed while nobody watched, once,
// because its baseline is the log itself rather than its memory.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import { assert } from '../common/assert.js';
import { MeshblockError } from '../common/errors.js';
import { capacityCriticalPercent, capacityHighPercent, eventFileEventsMax, eventLogMax, eventMessageCharsMax, eventWatchIntervalMs } from '../common/limits.js';
import type { MdmController, RebuildStatus } from './controller.js';
import type { Id, SystemModel } from './model.js';
import { isDown, type StateMachine } from './state-machine.js';

export const eventSeverities = ['info', 'warning', 'error', 'critical'] as const;
export type EventSeverity = (typeof eventSeverities)[number];

/**
 * Every event type. The SNMP notifications of MESHBLOCK-MIB are named after them (mbSdsDown,
 * ...); configChanged alone sends no trap (it is an audit record, not an alert).
 */
export const eventTypes = ['sdsDown', 'sdsUp', 'deviceFailed', 'rebuildStarted', 'rebuildFinished', 'capacityNormal', 'capacityHigh', 'capacityCritical', 'loginRefused', 'configChanged'] as const;
export type EventType = (typeof eventTypes)[number];

export interface MdmEvent {
  /** 1, 2, ...: never reused within a log, so `since` is a cursor. */
  id: number;
  /** When it was recorded, ISO 8601 UTC. */
  time: string;
  severity: EventSeverity;
  type: EventType;
  /** The object, ScaleIO's way: `Sds::<id>`, `Device::<id>`, `StoragePool::<id>`, `System::<id>`, `User::<name>`. */
  object: string;
  /** The object's name when it has one (null for the System or a deleted object). */
  objectName: string | null;
  message: string;
  /** Who did it: the REST user for changes and refused logins; null for what the system saw. */
  user: string | null;
}

/** An event before the log numbers and dates it. */
export type EventInput = Omit<MdmEvent, 'id' | 'time'>;

/** Where the log is kept: a data directory (one MDM) or etcd (an MDM cluster). */
export interface EventStore {
  /** For messages: where it is, e.g. the directory or 'etcd'. */
  readonly where: string;
  /** The kept events, oldest first, at most eventLogMax; the last one has the highest id. */
  load(): Promise<MdmEvent[]>;
  /**
   * Makes `event` durable. Rejects with MB_ERR_EVENT_ID_TAKEN when another writer took its
   * id (etcd: another Master): the caller reloads and numbers it again.
   */
  append(event: MdmEvent): Promise<void>;
  close(): Promise<void>;
}

/** Reads an event that came from a file or etcd: null when it is not one (a torn line, a foreign value). */
export function readEvent(value: unknown): MdmEvent | null {
  if (value === null || typeof value !== 'object') return null;
  const event = value as Record<keyof MdmEvent, unknown>;
  if (!Number.isSafeInteger(event.id) || (event.id as number) < 1 || typeof event.time !== 'string') return null;
  if (!(eventSeverities as readonly unknown[]).includes(event.severity) || !(eventTypes as readonly unknown[]).includes(event.type)) return null;
  if (typeof event.object !== 'string' || typeof event.message !== 'string') return null;
  if (event.objectName !== null && typeof event.objectName !== 'string') return null;
  if (event.user !== null && typeof event.user !== 'string') return null;
  return event as MdmEvent;
}

/** Cuts what came from outside (a user name at login) to one printable line of bounded length. */
export function eventText(text: string, charsMax = eventMessageCharsMax): string {
  // eslint-disable-next-line no-control-regex
  const line = text.replace(/[\u0000-\u001f\u007f]+/g, ' ');
  return line.length <= charsMax ? line : `${line.slice(0, charsMax - 1)}…`;
}

// --- the log ------------------------------------------------------------------------------

export class EventLog {
  /** The last eventLogMax events, oldest first (ids increasing). */
  private events: MdmEvent[] = [];
  private lastId = 0;
  /** Appends one at a time: ids are given in the order events become durable. */
  private appending: Promise<unknown> = Promise.resolve();
  private readonly waiters = new Set<() => void>();
  private readonly listeners: Array<(event: MdmEvent) => void> = [];

  private constructor(
    private readonly store: EventStore,
    private readonly log: Logger,
    private readonly nowMs: () => number,
  ) {}

  /** A log over `store`, not read yet: reload() reads it. */
  static create(store: EventStore, log: Logger, nowMs: () => number = Date.now): EventLog {
    return new EventLog(store, log, nowMs);
  }

  /** A log over `store`, read. */
  static async open(store: EventStore, log: Logger, nowMs: () => number = Date.now): Promise<EventLog> {
    const eventLog = new EventLog(store, log, nowMs);
    await eventLog.reload();
    return eventLog;
  }

  get where(): string {
    return this.store.where;
  }

  /** The highest id given (0 before the first event). */
  get lastEventId(): number {
    return this.lastId;
  }

  /** Reads the store again: an MDM that becomes Master takes the log as the last Master left it. */
  async reload(): Promise<void> {
    const loaded = await this.store.load();
    this.events = loaded.slice(-eventLogMax);
    this.lastId = Math.max(this.lastId, this.events.at(-1)?.id ?? 0);
    this.log.info({ events: this.events.length, lastId: this.lastId, where: this.store.where }, 'event log loaded');
  }

  /** Called with every event this MDM records (not with those loaded): the SNMP traps. */
  onEvent(listener: (event: MdmEvent) => void): void {
    this.listeners.push(listener);
  }

  /**
   * Numbers, dates and keeps an event, then tells the listeners. A store that fails (a disk
   * error, etcd without quorum) is logged and the event kept in memory and sent all the
   * same: an alert matters most when something is broken. Never rejects.
   */
  record(input: EventInput): Promise<MdmEvent> {
    const run = this.appending.then(() => this.recordNow(input));
    this.appending = run.catch(() => undefined);
    return run;
  }

  private async recordNow(input: EventInput): Promise<MdmEvent> {
    let event = this.numbered(input);
    try {
      try {
        await this.store.append(event);
      } catch (err) {
        if (!(err instanceof MeshblockError) || err.code !== 'MB_ERR_EVENT_ID_TAKEN') throw err;
        // Another Master wrote after our last read: take its events, then number after them.
        await this.reload();
        event = this.numbered(input);
        await this.store.append(event);
      }
    } catch (err) {
      this.log.error({ err, eventId: event.id, type: event.type, where: this.store.where }, 'could not store an event; it is kept in memory only');
    }
    this.keep(event);
    this.log.info({ eventId: event.id, severity: event.severity, type: event.type, object: event.object, user: event.user }, event.message);
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.log.error({ err, eventId: event.id }, 'an event listener failed');
      }
    }
    return event;
  }

  private numbered(input: EventInput): MdmEvent {
    return { id: this.lastId + 1, time: new Date(this.nowMs()).toISOString(), ...input, message: eventText(input.message) };
  }

  private keep(event: MdmEvent): void {
    assert(event.id > this.lastId, 'event ids increase');
    this.lastId = event.id;
    this.events.push(event);
    // Trimmed in batches: one copy per eventLogMax / 10 events, not one per event.
    if (this.events.length > eventLogMax + eventLogMax / 10) this.events = this.events.slice(-eventLogMax);
    for (const wake of this.waiters) wake();
    this.waiters.clear();
  }

  /** Events after `sinceId`, the first `limit` of them; without `sinceId`, the last `limit`. */
  list(sinceId: number | null, limit: number): MdmEvent[] {
    const kept = this.events.length > eventLogMax ? this.events.slice(-eventLogMax) : this.events;
    if (sinceId === null) return kept.slice(-limit);
    // Ids increase: a binary search finds the first one after sinceId.
    let low = 0;
    let high = kept.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if ((kept[middle] as MdmEvent).id <= sinceId) low = middle + 1;
      else high = middle;
    }
    return kept.slice(low, low + limit);
  }

  /** Every kept event, oldest first (the watch's baseline). */
  all(): readonly MdmEvent[] {
    return this.list(null, eventLogMax);
  }

  /** Resolves when an event after `sinceId` is kept, after `timeoutMs`, or when `signal` aborts. */
  waitFor(sinceId: number, timeoutMs: number, signal: AbortSignal): Promise<void> {
    if (this.lastId > sinceId || timeoutMs <= 0 || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      signal.addEventListener('abort', done, { once: true });
      this.waiters.add(done);
    });
  }

  /** Waits for appends in flight, then closes the store. */
  async close(): Promise<void> {
    await this.appending;
    for (const wake of [...this.waiters]) wake();
    await this.store.close();
  }
}

// --- the embedded store: two files in the MDM's data directory -------------------------------

export const eventFileNames = { current: 'events.jsonl', previous: 'events.1.jsonl' } as const;

/**
 * DATA-DIR/events.jsonl holds the newest events, one JSON object a line; when it reaches
 * eventFileEventsMax lines it becomes events.1.jsonl (replacing the one before) and a new
 * events.jsonl begins. Each append is written and fdatasync'd before the event is served: a
 * crash loses at most a torn last line, which load() skips.
 */
export class FileEventStore implements EventStore {
  readonly where: string;
  private fd: number | null = null;
  private linesInCurrent = 0;

  constructor(
    private readonly dir: string,
    private readonly log: Logger,
    /** Events per file; smaller only in tests. */
    private readonly fileEventsMax = eventFileEventsMax,
  ) {
    assert(Number.isSafeInteger(fileEventsMax) && fileEventsMax >= 1 && fileEventsMax <= eventFileEventsMax, 'events per file within the bound');
    this.where = path.join(dir, eventFileNames.current);
  }

  async load(): Promise<MdmEvent[]> {
    const events: MdmEvent[] = [];
    for (const name of [eventFileNames.previous, eventFileNames.current]) {
      const file = path.join(this.dir, name);
      let text: string;
      try {
        text = await fs.promises.readFile(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw new MeshblockError('MB_ERR_EVENT_LOG', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
      }
      const lines = text.split('\n').filter((line) => line !== '');
      if (name === eventFileNames.current) this.linesInCurrent = lines.length;
      let skipped = 0;
      for (const line of lines) {
        let event: MdmEvent | null = null;
        try {
          event = readEvent(JSON.parse(line));
        } catch {
          // A torn line (a crash mid-write): skipped below.
        }
        // Ids only increase; anything else is not this log's (or is torn).
        if (event === null || event.id <= (events.at(-1)?.id ?? 0)) skipped += 1;
        else events.push(event);
      }
      if (skipped > 0) this.log.warn({ file, skipped }, 'event log lines skipped (torn by a crash, or not events)');
    }
    return events.slice(-eventLogMax);
  }

  async append(event: MdmEvent): Promise<void> {
    try {
      if (this.linesInCurrent >= this.fileEventsMax) await this.rotate();
      if (this.fd === null) this.fd = fs.openSync(path.join(this.dir, eventFileNames.current), 'a', 0o600);
      const fd = this.fd;
      await new Promise<void>((resolve, reject) => fs.write(fd, `${JSON.stringify(event)}\n`, (err) => (err === null ? resolve() : reject(err))));
      await new Promise<void>((resolve, reject) => fs.fdatasync(fd, (err) => (err === null ? resolve() : reject(err))));
      this.linesInCurrent += 1;
    } catch (err) {
      throw new MeshblockError('MB_ERR_EVENT_LOG', `cannot write ${this.where}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** The full file becomes the previous one; the rename is made durable before the next append. */
  private async rotate(): Promise<void> {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
    await fs.promises.rename(path.join(this.dir, eventFileNames.current), path.join(this.dir, eventFileNames.previous));
    const dirFd = fs.openSync(this.dir, 'r');
    try {
      fs.fsyncSync(dirFd);
    } finally {
      fs.closeSync(dirFd);
    }
    this.linesInCurrent = 0;
  }

  close(): Promise<void> {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
    return Promise.resolve();
  }
}

// --- the cluster's store: etcd ----------------------------------------------------------------

/** Keys beside the command log's (etcd-store.ts): `meshblock/event-head` and `meshblock/event/<id:16 digits>`. */
export const eventEtcdKeys = {
  head: 'meshblock/event-head',
  prefix: 'meshblock/event/',
  event: (id: number): string => `meshblock/event/${String(id).padStart(16, '0')}`,
} as const;

/**
 * The event log in etcd. An append is one transaction: if the head is still the id before
 * this one, write the event and move the head; else MB_ERR_EVENT_ID_TAKEN. The event
 * eventLogMax before it is deleted after, best effort: a delete that fails leaves one key
 * behind, which load() never reads (it takes the last eventLogMax) and which costs etcd a
 * few hundred bytes. Not conditioned on the Master key: events are not state, and two MDMs
 * that both believe they are Master for a moment both get their events numbered, in one order.
 */
export class EtcdEventStore implements EventStore {
  readonly where = 'etcd';

  constructor(
    private readonly client: Etcd3,
    private readonly log: Logger,
  ) {}

  async load(): Promise<MdmEvent[]> {
    try {
      const values = await this.client.getAll().prefix(eventEtcdKeys.prefix).sort('Key', 'Descend').limit(eventLogMax).strings();
      const events: MdmEvent[] = [];
      for (const text of Object.values(values)) {
        let event: MdmEvent | null = null;
        try {
          event = readEvent(JSON.parse(text));
        } catch {
          // Not an event: skipped.
        }
        if (event !== null) events.push(event);
      }
      events.sort((a, b) => a.id - b.id);
      return events;
    } catch (err) {
      throw new MeshblockError('MB_ERR_EVENT_LOG', `cannot read the event log from etcd: ${(err as Error).message}`, { cause: err });
    }
  }

  async append(event: MdmEvent): Promise<void> {
    const previous = event.id - 1;
    let succeeded: boolean;
    try {
      const condition = previous === 0 ? this.client.if(eventEtcdKeys.head, 'Create', '==', 0) : this.client.if(eventEtcdKeys.head, 'Value', '==', String(previous));
      const result = await condition.then(this.client.put(eventEtcdKeys.head).value(String(event.id)), this.client.put(eventEtcdKeys.event(event.id)).value(JSON.stringify(event))).commit();
      succeeded = result.succeeded;
    } catch (err) {
      throw new MeshblockError('MB_ERR_EVENT_LOG', `cannot append event ${event.id} to etcd: ${(err as Error).message}`, { cause: err });
    }
    if (!succeeded) throw new MeshblockError('MB_ERR_EVENT_ID_TAKEN', `event ${event.id} was taken in etcd by another MDM`);
    if (event.id > eventLogMax) {
      await this.client
        .delete()
        .key(eventEtcdKeys.event(event.id - eventLogMax))
        .exec()
        .catch((err: unknown) => this.log.warn({ err, eventId: event.id - eventLogMax }, 'could not trim the event log in etcd'));
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

// --- the watch: model changes become events ---------------------------------------------------

export type CapacityLevel = 'normal' | 'high' | 'critical';

/** What the watch compares: the part of the system's state that has events. */
export interface WatchedState {
  /** By SDS: declared down (true) or not. */
  sdsDown: Map<Id, boolean>;
  /** Devices failed. */
  devicesFailed: Set<Id>;
  /** A rebuild or rebalance is copying. */
  filling: boolean;
  /** By pool: where its used share of usable capacity stands against the thresholds. */
  capacity: Map<Id, CapacityLevel>;
}

export function capacityLevel(usedPercent: number): CapacityLevel {
  return usedPercent >= capacityCriticalPercent ? 'critical' : usedPercent >= capacityHighPercent ? 'high' : 'normal';
}

/** A pool's used share of what it can hold (thick reservations count as used, as ScaleIO counts them). */
export function poolUsedPercent(state: Pick<StateMachine, 'poolCapacity'>, poolId: Id): number {
  const capacity = state.poolCapacity(poolId);
  const holdable = capacity.rawBytes - capacity.spareBytes;
  if (holdable <= 0) return 0;
  return (100 * (holdable - capacity.unusedBytes)) / holdable;
}

/** The watched state as the model has it now. */
export function watchedNow(state: Pick<StateMachine, 'model' | 'poolCapacity'>, rebuild: Pick<RebuildStatus, 'state'>): WatchedState {
  const model = state.model;
  const watched: WatchedState = { sdsDown: new Map(), devicesFailed: new Set(), filling: rebuild.state === 'running', capacity: new Map() };
  for (const sds of Object.values(model.sdss)) watched.sdsDown.set(sds.id, isDown(sds));
  for (const device of Object.values(model.devices)) if (device.state === 'failed') watched.devicesFailed.add(device.id);
  for (const pool of Object.values(model.storagePools)) watched.capacity.set(pool.id, capacityLevel(poolUsedPercent(state, pool.id)));
  return watched;
}

/**
 * The watched state as the event log last said it: the latest event about each object.
 * What the log does not mention is taken as all well (up, not failed, idle, normal), so a
 * problem the log never reported is reported once.
 */
export function watchedFromEvents(events: readonly MdmEvent[]): WatchedState {
  const watched: WatchedState = { sdsDown: new Map(), devicesFailed: new Set(), filling: false, capacity: new Map() };
  for (const event of events) {
    const id = event.object.slice(event.object.indexOf('::') + 2);
    switch (event.type) {
      case 'sdsDown':
      case 'sdsUp':
        watched.sdsDown.set(id, event.type === 'sdsDown');
        break;
      case 'deviceFailed':
        watched.devicesFailed.add(id);
        break;
      case 'rebuildStarted':
      case 'rebuildFinished':
        watched.filling = event.type === 'rebuildStarted';
        break;
      case 'capacityNormal':
      case 'capacityHigh':
      case 'capacityCritical':
        watched.capacity.set(id, event.type === 'capacityNormal' ? 'normal' : event.type === 'capacityHigh' ? 'high' : 'critical');
        break;
      case 'loginRefused':
      case 'configChanged':
        break;
    }
  }
  return watched;
}

/** The events that take `before` to `now` (objects gone from the model say nothing). */
export function watchedChanges(before: WatchedState, now: WatchedState, model: SystemModel, rebuild: RebuildStatus | null, usedPercent: (poolId: Id) => number): EventInput[] {
  const events: EventInput[] = [];
  const system = `System::${model.clusterId}`;
  for (const [sdsId, down] of now.sdsDown) {
    if (down === (before.sdsDown.get(sdsId) ?? false)) continue;
    const sds = model.sdss[sdsId];
    const name = sds?.name ?? null;
    events.push(
      down
        ? { severity: 'error', type: 'sdsDown', object: `Sds::${sdsId}`, objectName: name, message: `SDS '${name ?? sdsId}' (${sds?.address ?? '?'}) is down: its copies fail over to their peers`, user: null }
        : { severity: 'info', type: 'sdsUp', object: `Sds::${sdsId}`, objectName: name, message: `SDS '${name ?? sdsId}' (${sds?.address ?? '?'}) is up again`, user: null },
    );
  }
  for (const deviceId of now.devicesFailed) {
    if (before.devicesFailed.has(deviceId)) continue;
    const device = model.devices[deviceId];
    const sds = device === undefined ? undefined : model.sdss[device.sdsId];
    events.push({ severity: 'error', type: 'deviceFailed', object: `Device::${deviceId}`, objectName: device?.name ?? null, message: `device ${device?.path ?? deviceId} of SDS '${sds?.name ?? '?'}' failed: its copies are rebuilt elsewhere`, user: null });
  }
  if (now.filling !== before.filling) {
    events.push(
      now.filling
        ? { severity: 'warning', type: 'rebuildStarted', object: system, objectName: model.name, message: `rebuild started: ${rebuild?.groupsSyncing ?? '?'} of ${rebuild?.groupsTotal ?? '?'} groups are copying their second copy`, user: null }
        : { severity: 'info', type: 'rebuildFinished', object: system, objectName: model.name, message: `rebuild finished${rebuild !== null && rebuild.bytesDone > 0 ? `: ${rebuild.bytesDone} bytes copied since the MDM started` : ''}`, user: null },
    );
  }
  for (const [poolId, level] of now.capacity) {
    const was = before.capacity.get(poolId) ?? 'normal';
    if (level === was) continue;
    const pool = model.storagePools[poolId];
    const percent = usedPercent(poolId).toFixed(1);
    const name = pool?.name ?? poolId;
    const input: EventInput =
      level === 'critical'
        ? { severity: 'critical', type: 'capacityCritical', object: `StoragePool::${poolId}`, objectName: pool?.name ?? null, message: `storage pool '${name}' is ${percent}% used, over the critical threshold (${capacityCriticalPercent}%)`, user: null }
        : level === 'high'
          ? { severity: 'warning', type: 'capacityHigh', object: `StoragePool::${poolId}`, objectName: pool?.name ?? null, message: `storage pool '${name}' is ${percent}% used, over the high threshold (${capacityHighPercent}%)`, user: null }
          : { severity: 'info', type: 'capacityNormal', object: `StoragePool::${poolId}`, objectName: pool?.name ?? null, message: `storage pool '${name}' is ${percent}% used, below the high threshold (${capacityHighPercent}%) again`, user: null };
    events.push(input);
  }
  return events;
}

export interface EventWatchOptions {
  events: EventLog;
  /** The controller to read from (in a cluster, the member's: it throws while not Master). */
  controller: () => MdmController;
  /** True while this MDM is the one acting (always for one MDM; the Master of a cluster). */
  active: () => boolean;
  log: Logger;
}

/**
 * Runs the comparison every eventWatchIntervalMs while this MDM is active. On becoming active
 * (at start, or a takeover) the log is read again and its last word is the baseline.
 */
export class EventWatch {
  private timer: NodeJS.Timeout | null = null;
  private baseline: WatchedState | null = null;
  private running = false;

  constructor(private readonly options: EventWatchOptions) {}

  start(): void {
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = true;
      this.tick()
        .catch((err: unknown) => this.options.log.warn({ err }, 'event watch tick failed'))
        .finally(() => {
          this.running = false;
        });
    }, eventWatchIntervalMs).unref();
  }

  /** One comparison; exported for tests that drive it without the timer. */
  async tick(): Promise<void> {
    if (!this.options.active()) {
      // A Slave (or a Master that may have lost its lease) watches nothing: it reads the
      // log again when it becomes Master.
      this.baseline = null;
      return;
    }
    if (this.baseline === null) {
      await this.options.events.reload();
      this.baseline = watchedFromEvents(this.options.events.all());
    }
    const controller = this.options.controller();
    const state = controller.state;
    const rebuild = controller.rebuildStatus();
    const now = watchedNow(state, rebuild);
    const changes = watchedChanges(this.baseline, now, state.model, rebuild, (poolId) => poolUsedPercent(state, poolId));
    this.baseline = now;
    for (const change of changes) await this.options.events.record(change);
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}
