// Proves the placement planner's host rule (src/mdm/placement-planner.ts, failureDomainOf): an
// SDS's failure domain is its fault set, else `host:<label>` where it has a host label (the
// shards of one machine, `sds start --shards`), else itself. Checked here with a rule of the
// test's own (copies on different SDSs, different fault sets where there are some, and, where
// there are none, on SDSs whose host labels differ):
//   - seeded random pools of 2–8 hosts of 1–4 shards each, some SDSs without a label, through
//     a failure, a rebuild, an added shard, a removal: no group ever has both copies on one host;
//   - labels where the pool has fault sets change nothing (the fault set is the domain);
//   - no labels (absent or null) plans exactly as before labels, and the plan is deterministic;
//   - a label that regroups SDSs moves the copies that now share a host, and only those;
//   - one host's shards alone cannot hold a pool (MB_ERR_PLACEMENT_ONE_DOMAIN, "hosts").

import t from 'tap';
import { mulberry32 } from '../../src/common/seeded-random.js';
import { failureDomainOf, failureDomainsNoun, planPlacement, type GroupAssignment, type PlannerDevice } from '../../src/mdm/placement-planner.js';

const tib = 2 ** 40;

interface HostShape {
  /** Shards (SDSs) on each host; a host named null has SDSs without a label, one per entry. */
  hosts: Array<{ label: string | null; shards: number }>;
  devicesPerSds: number;
  /** Fault sets round robin over hosts (every SDS of a host in its host's fault set); 0: none. */
  faultSetCount?: number;
  capacityBytes?: () => number;
}

/** SDSs named after their host (hostA.1, hostA.2, ... as `--shards` names them), devices -d0, -d1. */
function makeHostDevices(shape: HostShape): PlannerDevice[] {
  const devices: PlannerDevice[] = [];
  let unlabelled = 0;
  shape.hosts.forEach((host, hostIndex) => {
    for (let shard = 1; shard <= host.shards; shard++) {
      const sdsId = host.label === null ? `solo${unlabelled++}` : `${host.label}.${shard}`;
      for (let device = 0; device < shape.devicesPerSds; device++) {
        devices.push({
          deviceId: `${sdsId}-d${device}`,
          sdsId,
          faultSetId: (shape.faultSetCount ?? 0) > 0 ? `fs${hostIndex % (shape.faultSetCount as number)}` : null,
          host: host.label,
          capacityBytes: shape.capacityBytes?.() ?? tib,
          state: 'normal',
        });
      }
    }
  });
  return devices;
}

/** The broken rules, by the test's own reading of them (not the planner's helper). */
function hostViolations(devices: PlannerDevice[], groups: GroupAssignment[]): string[] {
  const byId = new Map(devices.map((device) => [device.deviceId, device]));
  const problems: string[] = [];
  groups.forEach((group, index) => {
    if (group.secondaryDevice === null) return;
    const primary = byId.get(group.primaryDevice) as PlannerDevice;
    const secondary = byId.get(group.secondaryDevice) as PlannerDevice;
    if (primary.sdsId === secondary.sdsId) problems.push(`group ${index}: both copies on SDS ${primary.sdsId}`);
    if (primary.faultSetId !== null) {
      if (primary.faultSetId === secondary.faultSetId) problems.push(`group ${index}: both copies in fault set ${primary.faultSetId}`);
    } else if (primary.host !== null && primary.host !== undefined && primary.host === secondary.host) {
      problems.push(`group ${index}: both copies on host ${primary.host} (${primary.sdsId}, ${secondary.sdsId})`);
    }
  });
  return problems;
}

function copiesOn(groups: GroupAssignment[], predicate: (deviceId: string) => boolean): number {
  return groups.reduce((count, group) => count + [group.primaryDevice, group.secondaryDevice].filter((device) => device !== null && predicate(device)).length, 0);
}

t.test('failureDomainOf: fault set, else host:<label>, else the SDS', async (t) => {
  t.equal(failureDomainOf({ sdsId: 'a1', faultSetId: 'fs1', host: 'hostA' }), 'fs1');
  t.equal(failureDomainOf({ sdsId: 'a1', faultSetId: null, host: 'hostA' }), 'host:hostA');
  t.equal(failureDomainOf({ sdsId: 'a1', faultSetId: null, host: null }), 'a1');
  t.equal(failureDomainOf({ sdsId: 'a1', faultSetId: null }), 'a1', 'absent label: none');
  t.equal(failureDomainsNoun([{ sdsId: 'a', faultSetId: null, host: 'h' }, { sdsId: 'b', faultSetId: null }]), 'hosts');
  t.equal(failureDomainsNoun([{ sdsId: 'a', faultSetId: 'fs', host: 'h' }]), 'fault sets');
  t.equal(failureDomainsNoun([{ sdsId: 'a', faultSetId: null, host: null }]), 'SDSs');
});

t.test('two SDSs with one host label never hold both copies of a group, through a pool\'s life', async (t) => {
  const given = process.env['PLANNER_SEED'];
  const seed = given !== undefined ? Number(given) : (Date.now() ^ (process.pid << 8)) >>> 0;
  t.comment(`seed ${seed} (replay with PLANNER_SEED=${seed})`);
  const random = mulberry32(seed);
  for (let pool = 0; pool < 20; pool++) {
    const hostCount = 2 + Math.floor(random() * 7);
    const hosts = Array.from({ length: hostCount }, (_, index) => ({ label: random() < 0.15 ? null : `host${index}`, shards: 1 + Math.floor(random() * 4) }));
    // At least two labelled hosts with two shards or more: the rule must have something to refuse.
    hosts[0] = { label: 'host0', shards: 2 + Math.floor(random() * 3) };
    hosts[1] = { label: 'host1', shards: 2 + Math.floor(random() * 3) };
    let devices = makeHostDevices({ hosts, devicesPerSds: 1 + Math.floor(random() * 3), capacityBytes: () => (1 + Math.floor(random() * 8)) * (tib / 4) });
    const pgCount = 1024;
    const problems: string[] = [];
    const step = (label: string, previous: GroupAssignment[] | null): GroupAssignment[] => {
      const plan = planPlacement({ pgCount, devices, previous });
      problems.push(...hostViolations(devices, plan.groups).map((problem) => `${label}: ${problem}`));
      if (plan.groups.some((group) => group.secondaryDevice === null)) problems.push(`${label}: a group without a second copy`);
      return plan.groups;
    };
    const pick = (): string => {
      const normal = devices.filter((device) => device.state === 'normal');
      return (normal[Math.floor(random() * normal.length)] as PlannerDevice).deviceId;
    };
    let groups = step('new', null);
    const failed = pick();
    devices = devices.map((device) => (device.deviceId === failed ? { ...device, state: 'failed' as const } : device));
    groups = step('failed', groups);
    groups = step('rebuilt', groups);
    // A shard added to host0 (a new process on the same machine).
    devices = [...devices, { deviceId: 'host0.9-d0', sdsId: 'host0.9', faultSetId: null, host: 'host0', capacityBytes: 2 * tib, state: 'normal' as const }];
    groups = step('added', groups);
    groups = step('rebalanced', groups);
    const removing = pick();
    devices = devices.map((device) => (device.deviceId === removing ? { ...device, state: 'removing' as const } : device));
    groups = step('removing', groups);
    step('removed', groups);
    t.same(problems.slice(0, 10), [], `pool ${pool}: ${hosts.map((host) => `${host.label ?? 'unlabelled'}×${host.shards}`).join(' ')}`);
  }
});

t.test('two hosts of several shards: every group has one copy on each host', async (t) => {
  const devices = makeHostDevices({ hosts: [{ label: 'hostA', shards: 3 }, { label: 'hostB', shards: 2 }], devicesPerSds: 2 });
  const plan = planPlacement({ pgCount: 1024, devices, previous: null });
  t.same(hostViolations(devices, plan.groups), []);
  t.ok(plan.groups.every((group) => group.primaryDevice.startsWith('hostA') !== (group.secondaryDevice as string).startsWith('hostA')), 'one copy on hostA, one on hostB');
  // Without labels the same five SDSs are five domains: copies pair shards of one host.
  const unlabelled = devices.map((device) => ({ ...device, host: null }));
  const free = planPlacement({ pgCount: 1024, devices: unlabelled, previous: null });
  t.ok(hostViolations(devices, free.groups).length > 0, 'without labels the planner does pair shards of one host (what the label prevents)');
});

t.test('labels change nothing where the pool has fault sets: the fault set is the domain', async (t) => {
  const hosts = [{ label: 'hostA', shards: 2 }, { label: 'hostB', shards: 2 }, { label: 'hostC', shards: 1 }, { label: 'hostD', shards: 3 }];
  const labelled = makeHostDevices({ hosts, devicesPerSds: 2, faultSetCount: 3 });
  const plain = labelled.map(({ host: _host, ...device }) => device);
  const withLabels = planPlacement({ pgCount: 1024, devices: labelled, previous: null });
  t.same(withLabels, planPlacement({ pgCount: 1024, devices: plain, previous: null }), 'the same plan with or without labels');
  t.same(hostViolations(labelled, withLabels.groups), []);
  // Two hosts in one fault set (hostA and hostD, fs0): their shards share a domain either way.
  t.notOk(withLabels.groups.some((group) => group.primaryDevice.slice(0, 5) !== (group.secondaryDevice as string).slice(0, 5) && ['hostA', 'hostD'].includes(group.primaryDevice.slice(0, 5)) && ['hostA', 'hostD'].includes((group.secondaryDevice as string).slice(0, 5))), 'nor across two hosts of one fault set');
  t.throws(() => planPlacement({ pgCount: 256, devices: makeHostDevices({ hosts: [{ label: 'hostA', shards: 2 }, { label: 'hostB', shards: 2 }], devicesPerSds: 1, faultSetCount: 1 }), previous: null }), { code: 'MB_ERR_PLACEMENT_ONE_DOMAIN', message: /two fault sets/ }, 'two hosts in one fault set are one domain');
});

t.test('no labels plans as before labels, deterministically', async (t) => {
  const random = mulberry32(7);
  const base: PlannerDevice[] = [];
  for (let sds = 0; sds < 9; sds++) {
    for (let device = 0; device < 2; device++) base.push({ deviceId: `sds${sds}-d${device}`, sdsId: `sds${sds}`, faultSetId: null, capacityBytes: (1 + Math.floor(random() * 8)) * tib, state: 'normal' });
  }
  const before = planPlacement({ pgCount: 2048, devices: base, previous: null });
  t.same(planPlacement({ pgCount: 2048, devices: base.map((device) => ({ ...device, host: null })), previous: null }), before, 'host null is no label');
  const hosts = base.map((device) => ({ ...device, host: `h${device.sdsId.slice(3)}` }));
  const oneEach = planPlacement({ pgCount: 2048, devices: hosts, previous: before.groups });
  t.equal(oneEach.moved, 0, 'a label of its own on every SDS groups nothing: nothing moves');
  const labelled = base.map((device) => ({ ...device, host: Number(device.sdsId.slice(3)) < 3 ? 'hostA' : null }));
  const first = planPlacement({ pgCount: 2048, devices: labelled, previous: null });
  t.same(planPlacement({ pgCount: 2048, devices: [...labelled].reverse(), previous: null }), first, 'the same plan whatever the device order');
  t.same(hostViolations(labelled, first.groups), []);
});

t.test('a label that puts two SDSs on one host moves the copies they share, and only those', async (t) => {
  const base = makeHostDevices({ hosts: Array.from({ length: 6 }, () => ({ label: null, shards: 1 })), devicesPerSds: 1 });
  const before = planPlacement({ pgCount: 1024, devices: base, previous: null });
  const shared = before.groups.filter((group) => [group.primaryDevice, group.secondaryDevice].sort().join() === 'solo0-d0,solo1-d0').length;
  t.ok(shared > 0, `${shared} groups have copies on solo0 and solo1`);
  const relabelled = base.map((device) => (device.sdsId === 'solo0' || device.sdsId === 'solo1' ? { ...device, host: 'hostA' } : device));
  const after = planPlacement({ pgCount: 1024, devices: relabelled, previous: before.groups });
  t.same(hostViolations(relabelled, after.groups), [], 'now on one host: never both copies');
  t.ok(after.moved >= shared, `the ${shared} shared groups moved a copy (moved ${after.moved}, rebalancing included)`);
  t.equal(after.lost, 0);
  const changed = after.groups.filter((group, index) => {
    const old = before.groups[index] as GroupAssignment;
    return [group.primaryDevice, group.secondaryDevice].sort().join() !== [old.primaryDevice, old.secondaryDevice].sort().join();
  });
  t.ok(changed.length <= after.moved, 'no group changed without a move');
  t.ok(after.groups.every((group, index) => {
    const old = before.groups[index] as GroupAssignment;
    return [group.primaryDevice, group.secondaryDevice].includes(old.primaryDevice) || [group.primaryDevice, group.secondaryDevice].includes(old.secondaryDevice);
  }), 'every group keeps a copy it had');
  // hostA (two SDSs of the six) is one domain now: it holds about a third of the copies, each group at most one.
  t.ok(copiesOn(after.groups, (device) => device.startsWith('solo0') || device.startsWith('solo1')) <= 1024, 'hostA holds at most one copy of each group');
});

t.test('refusals: one host cannot hold a pool; an SDS has one label', async (t) => {
  const oneHost = makeHostDevices({ hosts: [{ label: 'hostA', shards: 4 }], devicesPerSds: 2 });
  t.throws(() => planPlacement({ pgCount: 256, devices: oneHost, previous: null }), { code: 'MB_ERR_PLACEMENT_ONE_DOMAIN', message: /two hosts/ });
  const twoHosts = makeHostDevices({ hosts: [{ label: 'hostA', shards: 2 }, { label: 'hostB', shards: 1 }], devicesPerSds: 2 });
  const split = twoHosts.map((device) => (device.deviceId === 'hostA.1-d1' ? { ...device, host: 'hostZ' } : device));
  t.throws(() => planPlacement({ pgCount: 256, devices: split, previous: null }), { code: 'MB_ERR_INVALID_ARGUMENT', message: /hostA\.1 has devices on hosts hostA and hostZ/ });
  // Degraded: every shard of hostB failed, hostA's shards cannot pair with each other.
  const plan = planPlacement({ pgCount: 256, devices: twoHosts, previous: null });
  const hostBDown = twoHosts.map((device) => (device.host === 'hostB' ? { ...device, state: 'failed' as const } : device));
  const degraded = planPlacement({ pgCount: 256, devices: hostBDown, previous: plan.groups });
  t.ok(degraded.groups.every((group) => group.secondaryDevice === null), 'with one host left, groups run on one copy, not two on one host');
});
