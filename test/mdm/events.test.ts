// The event log's parts without a cluster: the file store (bounded by its two files, read
// back after a "restart", a torn last line skipped), the log's cursor and long poll, and the
// watch's comparison (what the log last said against what the model says: an SDS down and
// up, a failed device, a fill, a pool over its thresholds), including the baseline read from
// the log, which is what keeps a restarted or new Master from reporting anything twice.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import { eventLogMax } from '../../src/common/limits.js';
import { EventLog, FileEventStore, capacityLevel, eventFileNames, watchedChanges, watchedFromEvents, type EventInput, type MdmEvent, type WatchedState } from '../../src/mdm/events.js';
import type { SystemModel } from '../../src/mdm/model.js';

const log = pino({ level: 'silent' });

const sdsDown = (name: string): EventInput => ({ severity: 'error', type: 'sdsDown', object: `Sds::${name}`, objectName: name, message: `${name} down`, user: null });

t.test('the file store keeps two files of its bound, survives a reopen, skips a torn line', async (t) => {
  const dir = t.testdir();
  const store = new FileEventStore(dir, log, 3);
  const events = await EventLog.open(store, log, () => Date.UTC(2026, 11, 7));
  for (let index = 1; index <= 10; index++) await events.record(sdsDown(`s${index}`));
  t.equal(events.lastEventId, 10, 'ten events numbered 1..10');
  await events.close();
  // 10 events in files of 3: events.1.jsonl has 7..9, events.jsonl has 10.
  t.equal(fs.readFileSync(path.join(dir, eventFileNames.current), 'utf8').trim().split('\n').length, 1, 'the current file began after the last full one');
  t.equal(fs.readFileSync(path.join(dir, eventFileNames.previous), 'utf8').trim().split('\n').length, 3, 'the previous file is full');
  // A crash mid-write leaves half a line.
  fs.appendFileSync(path.join(dir, eventFileNames.current), '{"id": 11, "time": "2026');
  const reopened = await EventLog.open(new FileEventStore(dir, log, 3), log);
  t.same(
    reopened.all().map((event) => event.id),
    [7, 8, 9, 10],
    'reopened: the kept events, the torn line skipped',
  );
  const next = await reopened.record(sdsDown('s11'));
  t.equal(next.id, 11, 'numbering goes on after the last kept id');
  t.same(
    reopened.list(8, 2).map((event) => event.id),
    [9, 10],
    'list(since, limit) is a cursor',
  );
  t.same(
    reopened.list(null, 2).map((event) => event.id),
    [10, 11],
    'without since: the last ones',
  );
  await reopened.close();
});

t.test('a long poll wakes on the next event, and ends on its timeout or its signal', async (t) => {
  const dir = t.testdir();
  const events = await EventLog.open(new FileEventStore(dir, log), log);
  const controller = new AbortController();
  const waiting = events.waitFor(0, 60_000, controller.signal);
  await events.record(sdsDown('s1'));
  await waiting;
  t.pass('woken by the event');
  await events.waitFor(1, 10, controller.signal);
  t.pass('a timeout ends it');
  const aborted = events.waitFor(1, 60_000, controller.signal);
  controller.abort();
  await aborted;
  t.pass('the signal ends it');
  await events.close();
});

/** A model with what the watch reads: SDSs, devices, pools (their names), the system. */
function model(): SystemModel {
  return {
    clusterId: 'c1',
    name: 'sys',
    sdss: { a: { id: 'a', name: 'sds-a', address: '127.0.0.1:1' }, b: { id: 'b', name: 'sds-b', address: '127.0.0.1:2' } },
    devices: { d1: { id: 'd1', name: 'dev1', sdsId: 'a', path: '/dev/x' } },
    storagePools: { p1: { id: 'p1', name: 'sp1' } },
  } as unknown as SystemModel;
}

function state(overrides: Partial<WatchedState> = {}): WatchedState {
  return { sdsDown: new Map([['a', false], ['b', false]]), devicesFailed: new Set(), filling: false, capacity: new Map([['p1', 'normal']]), ...overrides };
}

t.test('the watch turns each change into one event, and the log is its baseline', async (t) => {
  const m = model();
  const used = (): number => 85;
  const none = watchedChanges(state(), state(), m, null, used);
  t.same(none, [], 'nothing changed: no event');
  const changes = watchedChanges(state(), state({ sdsDown: new Map([['a', true], ['b', false]]), devicesFailed: new Set(['d1']), filling: true, capacity: new Map([['p1', 'high']]) }), m, null, used);
  t.same(
    changes.map((change) => [change.type, change.object, change.severity]),
    [
      ['sdsDown', 'Sds::a', 'error'],
      ['deviceFailed', 'Device::d1', 'error'],
      ['rebuildStarted', 'System::c1', 'warning'],
      ['capacityHigh', 'StoragePool::p1', 'warning'],
    ],
    'an SDS down, a device failed, a fill, a pool over 80%',
  );
  t.match(changes[3]?.message, /85\.0% used/, 'the capacity message gives the share');
  // The log as it would be after those events (and sds a coming back):
  const logged: MdmEvent[] = [...changes, { ...sdsDown('x'), type: 'sdsUp' as const, object: 'Sds::a' }].map((change, index) => ({ ...change, id: index + 1, time: '' }));
  const baseline = watchedFromEvents(logged);
  t.equal(baseline.sdsDown.get('a'), false, 'the latest word on sds a: up');
  t.ok(baseline.devicesFailed.has('d1') && baseline.filling && baseline.capacity.get('p1') === 'high', 'the rest as the events said');
  const now = state({ devicesFailed: new Set(['d1']), filling: true, capacity: new Map([['p1', 'high']]) });
  t.same(watchedChanges(baseline, now, m, null, used), [], 'a Master reading that log reports nothing again');
  const back = watchedChanges(baseline, state({ devicesFailed: new Set(['d1']), capacity: new Map([['p1', 'critical']]) }), m, null, () => 95);
  t.same(
    back.map((change) => change.type),
    ['rebuildFinished', 'capacityCritical'],
    'the fill ends; the pool goes over 90%',
  );
  t.equal(capacityLevel(79.9), 'normal');
  t.equal(capacityLevel(80), 'high');
  t.equal(capacityLevel(90), 'critical');
  t.ok(eventLogMax >= 1000, 'the log keeps a useful history');
});
