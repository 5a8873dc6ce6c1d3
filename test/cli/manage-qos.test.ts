// Proves the QoS management commands against the real REST API over HTTPS (in-process, the
// in-test controller of test/helpers/rest.ts, whose `qos` stands in for an SDC's heartbeat):
// `volume set-limits` with limits and bursts reaches the model in KiB/s, a flag left out keeps
// its value; bandwidths not in whole MiB/s and bad numbers are usage errors (exit 2, one line,
// before any request: the model is unchanged); what the MDM refuses (5 IOPS, a burst below
// its limit) exits 1 with its message; `volume show`, `volume list` and the dashboard print
// limits, bursts and the SDC's throttle counters.

import t, { type Test } from 'tap';
import type { Id } from '../../src/mdm/model.js';
import type { RestDashboard, RestVolume } from '../../src/mdm/rest-objects.js';
import { GiB, startTestApi, type TestApi } from '../helpers/rest.js';
import { manageRunner, oneLine } from '../helpers/manage.js';

/** A pool on three SDSs, volumes vol1 (mapped to host1) and vol2 (mapped, unlimited). */
async function mapped(t: Test): Promise<{ api: TestApi; volume: Id; sdc: Id }> {
  const api = await startTestApi(t);
  const state = api.controller.state;
  const pd = state.apply({ type: 'addProtectionDomain', name: 'pd1' }).id as Id;
  const pool = state.apply({ type: 'addStoragePool', protectionDomainId: pd, name: 'pool1', volumeGranularityBytes: GiB, pgCount: 16 }).id as Id;
  for (const [index, name] of ['sds1', 'sds2', 'sds3'].entries()) {
    const sdsId = api.controller.registerSds(name, 7200 + index);
    state.apply({ type: 'addSds', sdsId, protectionDomainId: pd, faultSetId: null });
    await api.controller.addDevice({ sdsId, storagePoolId: pool, path: '/dev/sdb', name: null, force: false });
  }
  const volume = state.apply({ type: 'addVolume', storagePoolId: pool, name: 'vol1', sizeBytes: GiB, volumeType: 'ThinProvisioned', nowMs: 1 }).id as Id;
  const other = state.apply({ type: 'addVolume', storagePoolId: pool, name: 'vol2', sizeBytes: GiB, volumeType: 'ThinProvisioned', nowMs: 1 }).id as Id;
  const sdc = api.controller.registerSdc('guid-0001-host1', 'host1');
  for (const id of [volume, other]) state.apply({ type: 'addMappedSdc', volumeId: id, sdcId: sdc, accessMode: 'ReadWrite', allowMultipleMappings: false });
  return { api, volume, sdc };
}

t.test('set-limits with bursts, and what show, list and the dashboard print', async (t) => {
  const { api, volume, sdc } = await mapped(t);
  const run = manageRunner(api);
  const mapping = () => api.controller.state.model.volumes[volume]?.mappings[0];

  const set = await run(['volume', 'set-limits', '--volume', 'vol1', '--sdc', 'host1', '--iops', '2000', '--bandwidth', '10MiB', '--iops-burst', '8000', '--bandwidth-burst', '40MiB', '--burst-seconds', '30']);
  t.equal(set.code, 0, set.stderr);
  t.equal(set.stdout, "volume 'vol1' on SDC 'host1': IOPS 2000 (burst 8000), bandwidth 10 MiB/s (burst 40 MiB/s), bursts up to 30 s\n");
  t.match(mapping(), { iopsLimit: 2000, bandwidthLimitKbps: 10240, iopsBurst: 8000, bandwidthBurstKbps: 40960, burstSeconds: 30 }, 'in the model in KiB/s');
  const iopsOnly = await run(['volume', 'set-limits', '--volume', 'vol1', '--sdc', sdc, '--iops', '3000']);
  t.match(iopsOnly.stdout, /IOPS 3000 \(burst 8000\), bandwidth 10 MiB\/s \(burst 40 MiB\/s\)/, 'flags left out keep their values');

  // The SDC's heartbeat, as the MDM keeps it.
  api.controller.qos.set(sdc, [{ volumeId: volume, iopsLimit: 3000, bandwidthLimitKbps: 10240, requests: 120000, bytes: 120000 * 4096, throttledRequests: 4500, throttledMs: 81234.6, waiting: 3 }]);
  const show = await run(['volume', 'show', '--volume', 'vol1']);
  t.equal(show.code, 0, show.stderr);
  t.match(show.stdout, /^volume 'vol1' \(id [0-9a-f]{16}\): 1 GiB thin in storage pool 'pool1'\n/);
  t.match(show.stdout, /\nSDC\s+ACCESS\s+IOPS\s+BANDWIDTH\s+IOPS BURST\s+BW BURST\s+BURST S\s+REQUESTS\s+THROTTLED\s+THROTTLED MS\s+WAITING\n/, 'a header row');
  t.match(show.stdout, /\nhost1\s+rw\s+3000\s+10 MiB\/s\s+8000\s+40 MiB\/s\s+30\s+120000\s+4500\s+81235\s+3\n/, 'limits, burst and throttle counters');
  const shown = JSON.parse((await run(['volume', 'show', '--volume', 'vol1', '--json'])).stdout) as RestVolume;
  t.match(shown.mappedSdcInfo?.[0], { limitIopsBurst: 8000, qosThrottledRequests: 4500 }, 'show --json: the API object');

  const list = await run(['volume', 'list']);
  t.match(list.stdout, /vol1\s.*host1\(3000 IOPS 10 MiB\/s burst 4500 throttled\)/, 'list: limits, burst, throttled');
  t.match(list.stdout, /vol2\s.*host1\n/, 'list: an unlimited mapping shows the SDC alone');

  const dashboard = await run(['dashboard']);
  t.match(dashboard.stdout, /\nQoS \(limits enforced by each SDC; throttled = requests held back since the SDC started\)\nVOLUME\s+SDC\s+ACCESS/, 'the dashboard has a QoS section');
  t.match(dashboard.stdout, /\nvol1\s+host1\s+rw\s+3000\s+10 MiB\/s/);
  t.notMatch(dashboard.stdout, /\nvol2\s+host1/, 'only limited mappings');
  const view = JSON.parse((await run(['dashboard', '--json'])).stdout) as RestDashboard;
  t.equal(view.qos.length, 1);

  const removed = await run(['volume', 'set-limits', '--volume', 'vol1', '--sdc', 'host1', '--iops', '0', '--bandwidth', '0']);
  t.equal(removed.stdout, "volume 'vol1' on SDC 'host1': IOPS unlimited, bandwidth unlimited\n", 'removing the limits removes their bursts');
  t.match(mapping(), { iopsLimit: 0, bandwidthLimitKbps: 0, iopsBurst: 0, bandwidthBurstKbps: 0 });
});

t.test('bad flags are usage errors before any request; what the MDM refuses exits 1 with its message', async (t) => {
  const { api, volume } = await mapped(t);
  const run = manageRunner(api);
  api.controller.registerSdc('guid-0002-host2', 'host2');
  const before = JSON.stringify(api.controller.state.model);
  const usage: Array<[string[], RegExp, string]> = [
    [[], /--iops: give --iops, --bandwidth or both/, 'no limit'],
    [['--bandwidth', '1000KiB'], /--bandwidth: must be a whole number of MiB per second/, 'a bandwidth of 1000 KB/s'],
    [['--bandwidth', '1.5MiB'], /--bandwidth: /, 'a bandwidth of 1.5 MiB/s'],
    [['--bandwidth', 'fast'], /--bandwidth/, 'a non-numeric bandwidth'],
    [['--bandwidth', '10MiB', '--bandwidth-burst', '10000KiB'], /--bandwidth-burst: must be a whole number of MiB per second/, 'a burst not in whole MiB/s'],
    [['--iops', '-5'], /--iops/, 'negative IOPS'],
    [['--iops', 'many'], /--iops/, 'non-numeric IOPS'],
    [['--iops', '100', '--iops-burst', '1e3'], /--iops-burst/, 'an IOPS burst in exponent form'],
    [['--iops', '100', '--iops-burst', '400', '--burst-seconds', '7200'], /--burst-seconds: .*0 to 3600/, 'a burst of two hours'],
  ];
  for (const [flags, pattern, what] of usage) oneLine(t, await run(['volume', 'set-limits', '--volume', 'vol1', '--sdc', 'host1', ...flags]), pattern, 2, what);
  const refused: Array<[string[], RegExp, string]> = [
    [['--iops', '5'], /iopsLimit: must be 0 \(unlimited\) or at least 11/, '5 IOPS'],
    [['--iops', '100', '--iops-burst', '50'], /iopsBurst: must be 0 \(no burst\) or at least the IOPS limit, 100/, 'a burst below its limit'],
    [['--bandwidth-burst', '40MiB'], /bandwidthBurstInKbps: needs a bandwidth limit/, 'a burst without a limit'],
  ];
  for (const [flags, pattern, what] of refused) oneLine(t, await run(['volume', 'set-limits', '--volume', 'vol1', '--sdc', 'host1', ...flags]), pattern, 1, what);
  oneLine(t, await run(['volume', 'set-limits', '--volume', 'vol1', '--sdc', 'host2', '--iops', '100']), /volume 'vol1' is not mapped to SDC/, 1, 'an SDC the volume is not mapped to');
  t.equal(JSON.stringify(api.controller.state.model), before, 'nothing changed');
  t.match(api.controller.state.model.volumes[volume]?.mappings[0], { iopsLimit: 0, bandwidthLimitKbps: 0, iopsBurst: 0 });
});
