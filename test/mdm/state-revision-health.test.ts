// Proves that the health loop decides an sdsDown or sdsOut once while it may still be queued
// (healthCommandRepeatMs), not at every tick: the MDM's command queue can lag far behind the
// health ticks (a storm of registrations at 1,024 SDSs), and before this every tick queued
// another copy of each (thousands at scale, each a journal record and a copy of the pools), and
// an sdsDown decided again on stale news could take down an SDS that had registered since.
// Driven with the pure decisions of src/mdm/health.ts and injected time.

import t from 'tap';
import { healthCommandRepeatMs } from '../../src/common/limits.js';
import { decideFailures, emptyObservations, healthOptions, noteDecisions, noteSdsDisconnected, type HealthInput, type HealthObservations } from '../../src/mdm/health.js';
import type { StateMachine } from '../../src/mdm/state-machine.js';
import { healthCluster, healthSdsId, healthT0 } from '../helpers/mdm-model.js';

const clusterId = '0123456789abcdef';
const sdsId = healthSdsId;
const options = healthOptions({});
const t0 = healthT0;
const cluster = (sdsCount: number): StateMachine => healthCluster(clusterId, sdsCount).machine;

/** SDSs 0 and 1 connected and heartbeating at `nowMs`; SDS 2 is the one that fails. */
function input(machine: StateMachine, nowMs: number, observations: HealthObservations): HealthInput {
  for (const index of [0, 1]) machine.observe({ type: 'sdsHeartbeat', sdsId: sdsId(index), nowMs, devices: [] });
  return { machine, nowMs, connected: new Set([sdsId(0), sdsId(1)]), observations, options };
}

t.test('sdsDown: decided once while it waits in the queue, again once the wait is over', async (t) => {
  const machine = cluster(3);
  const observations = emptyObservations();
  noteSdsDisconnected(observations, sdsId(2), t0);
  const first = decideFailures(input(machine, t0 + 1000, observations));
  t.same(first.commands.map((command) => command.type), ['sdsDown'], 'past the grace: down');
  t.same(first.fence, [sdsId(2)], 'and fenced');
  noteDecisions(observations, first, t0 + 1000);
  // The command is not applied: it waits behind others.
  for (const afterMs of [1000, 2000, healthCommandRepeatMs - 1]) {
    const again = decideFailures(input(machine, t0 + 1000 + afterMs, observations));
    t.same(again.commands, [], `${afterMs} ms later: not decided again`);
    t.same(again.fence, [], `${afterMs} ms later: not fenced again`);
  }
  const retry = decideFailures(input(machine, t0 + 1000 + healthCommandRepeatMs, observations));
  t.same(retry.commands.map((command) => command.type), ['sdsDown'], 'once the wait is over (it was refused, or lost): decided again');
});

t.test('sdsOut: decided once while it waits in the queue', async (t) => {
  const machine = cluster(3);
  const observations = emptyObservations();
  machine.apply({ type: 'sdsDown', sdsId: sdsId(2), nowMs: t0, reason: 'test' });
  const outAtMs = t0 + options.rebuildAfterMs;
  const first = decideFailures(input(machine, outAtMs, observations));
  t.same(first.commands, [{ type: 'sdsOut', sdsId: sdsId(2) }], 'down for rebuildAfterMs: out');
  noteDecisions(observations, first, outAtMs);
  t.same(decideFailures(input(machine, outAtMs + 1000, observations)).commands, [], 'not decided again a tick later');
  t.same(decideFailures(input(machine, outAtMs + healthCommandRepeatMs, observations)).commands, [{ type: 'sdsOut', sdsId: sdsId(2) }], 'again once the wait is over');
  machine.apply({ type: 'sdsOut', sdsId: sdsId(2) });
  t.same(decideFailures(input(machine, outAtMs + 2 * healthCommandRepeatMs, observations)).commands, [], 'applied: never again');
  noteDecisions(observations, decideFailures(input(machine, outAtMs + 3 * healthCommandRepeatMs, observations)), outAtMs + 3 * healthCommandRepeatMs);
  t.equal(observations.commandsGiven.size, 0, 'what was remembered is forgotten once old');
});

t.test('sdsDown: an SDS heard from after the decision is declared down again at once', async (t) => {
  const machine = cluster(3);
  const observations = emptyObservations();
  noteSdsDisconnected(observations, sdsId(2), t0);
  const first = decideFailures(input(machine, t0 + 1000, observations));
  noteDecisions(observations, first, t0 + 1000);
  machine.apply(first.commands[0] as Extract<(typeof first.commands)[number], { type: 'sdsDown' }>);
  // It registers again (2 s later), then drops again.
  machine.apply({ type: 'registerSds', sdsId: sdsId(2), name: 'sds2', address: '127.0.0.1:7002', nowMs: t0 + 3000 });
  noteSdsDisconnected(observations, sdsId(2), t0 + 4000);
  t.same(
    decideFailures(input(machine, t0 + 5000, observations)).commands.map((command) => command.type),
    ['sdsDown'],
    'down again after the grace, not after healthCommandRepeatMs',
  );
});
