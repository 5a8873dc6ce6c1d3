// Proves the REST side of checksums at rest and the scrub over real HTTPS (test/helpers/rest.ts:
// a real API and state machine; the SDSs' heartbeats are SdsStats the test sets by hand):
// - StoragePool actions enableBackgroundDeviceScanner (scannerMode DeviceOnly | DataComparison,
//   bandwidthLimitKBps optional, a JSON number or a string of digits) and
//   disableBackgroundDeviceScanner, as PowerFlex names them; the pool object shows
//   backgroundScannerMode and backgroundScannerBWLimitKBps (a pool never set: the default);
// - every bad body is a 400 with ScaleIO's error shape (errorCode 1001, code
//   MB_ERR_INVALID_ARGUMENT) naming the field, an unknown pool a 404; nothing changes;
// - Device, Sds, StoragePool and System statistics carry PowerFlex's scanner properties
//   (BackgroundScannedInMB, backgroundScan{,Fixed}{Read,Compare}ErrorCount) computed from the
//   SDSs' reports, and querySelectedStatistics picks them; an SDS that reports nothing reads 0;
// - the System's and the pool's unrepairableRanges map each range bad on both copies to its
//   volume and volume byte range.

import t, { type Test } from 'tap';
import type { RestStoragePool } from '../../src/mdm/rest-objects.js';
import type { DeviceStats, UnrepairableRange } from '../../src/wire/sds-ops.js';
import { MiB, call, populatedApi, testClusterId, type PopulatedApi, type TestApi } from '../helpers/rest.js';

async function poolShown(api: TestApi, token: string, pool: string): Promise<RestStoragePool> {
  const reply = await call(api, 'GET', `/api/instances/StoragePool::${pool}`, { token });
  if (reply.status !== 200) throw new Error(`GET pool: ${reply.status} ${reply.text}`);
  return reply.body as RestStoragePool;
}

const scannerFields = (pool: RestStoragePool): Record<string, unknown> =>
  Object.fromEntries(Object.entries(pool).filter(([key]) => /^(backgroundScanner|bgScanner)/.test(key)));

async function action(api: TestApi, token: string, pool: string, name: string, body: unknown): Promise<{ status: number; body: unknown; text: string }> {
  return call(api, 'POST', `/api/instances/StoragePool::${pool}/action/${name}`, { token, body });
}

t.test('a pool never set shows the default scanner: DataComparison at 1024 KB/s', async (t) => {
  const { api, token, pool } = await populatedApi(t);
  t.same(scannerFields(await poolShown(api, token, pool)), {
    backgroundScannerMode: 'DataComparison',
    backgroundScannerBWLimitKBps: 1024,
    bgScannerCompareErrorAction: 'ReportAndFix',
    bgScannerReadErrorAction: 'ReportAndFix',
    backgroundScannerFromDefault: true,
  });
});

t.test('enable and disable: the pool object and the map follow', async (t) => {
  const { api, token, pool } = await populatedApi(t);
  const epoch = api.controller.state.model.epoch;
  const enabled = await action(api, token, pool, 'enableBackgroundDeviceScanner', { scannerMode: 'DeviceOnly', bandwidthLimitKBps: '2048' });
  t.equal(enabled.status, 200, enabled.text);
  t.same(enabled.body, {}, 'an empty reply, as ScaleIO');
  t.match(scannerFields(await poolShown(api, token, pool)), { backgroundScannerMode: 'DeviceOnly', backgroundScannerBWLimitKBps: 2048, backgroundScannerFromDefault: false });
  t.same(api.controller.state.placementMap().pools[pool]?.scrub, { mode: 'deviceOnly', rateKBps: 2048 }, 'in the map the SDSs get');
  t.equal(api.controller.state.model.epoch, epoch + 1, 'a new map epoch');

  const disabled = await action(api, token, pool, 'disableBackgroundDeviceScanner', {});
  t.equal(disabled.status, 200, disabled.text);
  t.match(scannerFields(await poolShown(api, token, pool)), { backgroundScannerMode: 'Disabled', backgroundScannerBWLimitKBps: 2048 }, 'disabled keeps the limit');
  const noBody = await call(api, 'POST', `/api/instances/StoragePool::${pool}/action/disableBackgroundDeviceScanner`, { token });
  t.equal(noBody.status, 200, 'disable without a body, too');

  const again = await action(api, token, pool, 'enableBackgroundDeviceScanner', { scannerMode: 'DataComparison' });
  t.equal(again.status, 200, again.text);
  t.match(scannerFields(await poolShown(api, token, pool)), { backgroundScannerMode: 'DataComparison', backgroundScannerBWLimitKBps: 2048 }, 'enabled again without a limit: the one it had');
  const faster = await action(api, token, pool, 'enableBackgroundDeviceScanner', { scannerMode: 'DataComparison', bandwidthLimitKBps: 1024 * 1024 });
  t.equal(faster.status, 200, 'the largest limit');
  t.equal((await poolShown(api, token, pool)).backgroundScannerBWLimitKBps, 1024 * 1024);
});

t.test('bad input: ScaleIO-shaped 400 naming the field; an unknown pool 404; nothing changed', async (t) => {
  const { api, token, pool } = await populatedApi(t);
  const before = JSON.stringify(api.controller.state.model);
  const cases: Array<[unknown, string]> = [
    [{}, 'scannerMode'],
    [{ scannerMode: 'deviceOnly' }, 'scannerMode'],
    [{ scannerMode: 'Disabled' }, 'scannerMode'],
    [{ scannerMode: 1 }, 'scannerMode'],
    [{ scannerMode: 'DeviceOnly', bandwidthLimitKBps: 63 }, 'bandwidthLimitKBps'],
    [{ scannerMode: 'DeviceOnly', bandwidthLimitKBps: 1024 * 1024 + 1 }, 'bandwidthLimitKBps'],
    [{ scannerMode: 'DeviceOnly', bandwidthLimitKBps: '1 MB' }, 'bandwidthLimitKBps'],
    [{ scannerMode: 'DeviceOnly', bandwidthLimitKBps: 100.5 }, 'bandwidthLimitKBps'],
    [{ scannerMode: 'DeviceOnly', bandwidthLimitKBps: -1024 }, 'bandwidthLimitKBps'],
    [{ scannerMode: 'DeviceOnly', bandwidthLimitKbps: 1024 }, 'bandwidthLimitKbps'],
  ];
  for (const [body, field] of cases) {
    const reply = await action(api, token, pool, 'enableBackgroundDeviceScanner', body);
    t.equal(reply.status, 400, `${JSON.stringify(body)}: 400`);
    t.match(reply.body, { httpStatusCode: 400, errorCode: 1001, code: 'MB_ERR_INVALID_ARGUMENT', message: new RegExp(`^${field}\\b`) }, `... naming ${field}: ${(reply.body as { message?: string }).message}`);
  }
  const extra = await action(api, token, pool, 'disableBackgroundDeviceScanner', { scannerMode: 'DeviceOnly' });
  t.equal(extra.status, 400, 'disable takes no fields');
  t.match((extra.body as { message?: string }).message, /scannerMode/);
  for (const name of ['enableBackgroundDeviceScanner', 'disableBackgroundDeviceScanner']) {
    const missing = await call(api, 'POST', `/api/instances/StoragePool::ffffffffffffffff/action/${name}`, { token, body: { scannerMode: 'DeviceOnly' } });
    t.equal(missing.status, 404, `${name} on an unknown pool: 404`);
  }
  t.equal(JSON.stringify(api.controller.state.model), before, 'nothing changed');
});

/** Three SDSs reporting: sds1 scrubbed and repaired, sds2 compared, sds3 reports nothing (an old SDS). */
async function reporting(t: Test): Promise<PopulatedApi & { volume: string; range: UnrepairableRange }> {
  const populated = await populatedApi(t);
  const { api, token, pool, sds, devices } = populated;
  const created = await call(api, 'POST', '/api/types/Volume/instances', { token, body: { storagePoolId: pool, name: 'vol1', volumeSizeInKb: 1024 * 1024, volumeType: 'ThinProvisioned' } });
  const volume = (created.body as { id: string }).id;
  const vtreeId = api.controller.state.model.volumes[volume]?.vtreeId as string;
  const range: UnrepairableRange = { poolId: pool, vtreeId, generation: 0, chunkIndex: 5, offsetBytes: 8192, lengthBytes: 4096, detectedAtMs: 1_700_000_000_000 };
  const base = { name: 'sds', epoch: 1, chunkBytes: MiB, reservedBytes: 0, rebuilds: [] };
  const device = (deviceId: string, scrubbedBytes: number, checksumErrors: number): DeviceStats => ({
    deviceId,
    path: '/dev/sdb',
    state: 'normal',
    error: null,
    totalBytes: 1024 * MiB,
    usedBytes: 0,
    freeBytes: 1024 * MiB,
    reads: 0,
    writes: 0,
    readBytes: 0,
    writeBytes: 0,
    readIops: 0,
    writeIops: 0,
    readBytesPerSecond: 0,
    writeBytesPerSecond: 0,
    scrubbedBytes,
    checksumErrors,
  });
  api.controller.stats.set(sds[0] as string, {
    ...base,
    sdsId: sds[0] as string,
    devices: [device(devices[0] as string, 300 * MiB, 7)],
    integrity: { checksumErrors: 7, repairedBlocks: 6, unrepairableBlocks: 1, tornBlocksAccepted: 0, damagedEntries: 0, mismatchedBlocks: 0 },
    scrub: { state: 'running', mode: 'dataComparison', rateKBps: 1024, passesCompleted: 1, passStartedAtMs: 1, lastPassCompletedAtMs: 0, chunksScanned: 10, chunksTotal: 40, bytesScanned: 300 * MiB },
    unrepairable: [range],
  });
  api.controller.stats.set(sds[1] as string, {
    ...base,
    sdsId: sds[1] as string,
    devices: [device(devices[1] as string, 200 * MiB, 0)],
    integrity: { checksumErrors: 0, repairedBlocks: 0, unrepairableBlocks: 1, tornBlocksAccepted: 2, damagedEntries: 0, mismatchedBlocks: 3 },
    scrub: { state: 'paused', mode: 'dataComparison', rateKBps: 1024, passesCompleted: 0, passStartedAtMs: 1, lastPassCompletedAtMs: null, chunksScanned: 40, chunksTotal: 40, bytesScanned: 200 * MiB },
    unrepairable: [range],
  });
  return { ...populated, volume, range };
}

async function statistics(api: TestApi, token: string, path: string): Promise<Record<string, unknown>> {
  const reply = await call(api, 'GET', `${path}/relationships/Statistics`, { token });
  if (reply.status !== 200) throw new Error(`${path}: ${reply.status} ${reply.text}`);
  return reply.body as Record<string, unknown>;
}

t.test("statistics: PowerFlex's scanner properties from the SDSs' reports", async (t) => {
  const { api, token, pool, sds, devices } = await reporting(t);
  const scanner = ['BackgroundScannedInMB', 'backgroundScanReadErrorCount', 'backgroundScanFixedReadErrorCount', 'backgroundScanCompareErrorCount', 'backgroundScanFixedCompareErrorCount'];
  const pick = (stats: Record<string, unknown>): Record<string, unknown> => Object.fromEntries(scanner.filter((key) => key in stats).map((key) => [key, stats[key]]));

  t.same(pick(await statistics(api, token, `/api/instances/Device::${devices[0]}`)), { BackgroundScannedInMB: 300, backgroundScanReadErrorCount: 7 }, 'a device: what its SDS counts per device');
  t.match(await statistics(api, token, `/api/instances/Device::${devices[0]}`), { checksumErrors: 7, scrubbedInKb: 300 * 1024 });
  const sds1 = await statistics(api, token, `/api/instances/Sds::${sds[0]}`);
  t.same(pick(sds1), { BackgroundScannedInMB: 300, backgroundScanReadErrorCount: 7, backgroundScanFixedReadErrorCount: 6, backgroundScanCompareErrorCount: 0, backgroundScanFixedCompareErrorCount: 0 });
  t.match(sds1, { integrity: { checksumErrors: 7, repairedBlocks: 6, unrepairableBlocks: 1 }, scrub: { state: 'running', chunksScanned: 10, chunksTotal: 40 }, scrubPassPercent: 25 });
  const sds2 = await statistics(api, token, `/api/instances/Sds::${sds[1]}`);
  t.same(pick(sds2), { BackgroundScannedInMB: 200, backgroundScanReadErrorCount: 0, backgroundScanFixedReadErrorCount: 0, backgroundScanCompareErrorCount: 3, backgroundScanFixedCompareErrorCount: 3 });
  const sds3 = await statistics(api, token, `/api/instances/Sds::${sds[2]}`);
  t.same(pick(sds3), { BackgroundScannedInMB: 0, backgroundScanReadErrorCount: 0, backgroundScanFixedReadErrorCount: 0, backgroundScanCompareErrorCount: 0, backgroundScanFixedCompareErrorCount: 0 }, 'an SDS that reports nothing: zeros');
  t.match(sds3, { scrub: null, scrubPassPercent: null, integrity: { checksumErrors: 0 } });

  const totals = { BackgroundScannedInMB: 500, backgroundScanReadErrorCount: 7, backgroundScanFixedReadErrorCount: 6, backgroundScanCompareErrorCount: 3, backgroundScanFixedCompareErrorCount: 3 };
  t.same(pick(await statistics(api, token, `/api/instances/StoragePool::${pool}`)), totals, 'the pool: its SDSs summed');
  t.same(pick(await statistics(api, token, `/api/instances/System::${testClusterId}`)), totals, 'the system');

  const selected = await call(api, 'POST', '/api/types/Sds/instances/action/querySelectedStatistics', { token, body: { allIds: '', properties: ['backgroundScanCompareErrorCount', 'BackgroundScannedInMB'] } });
  t.equal(selected.status, 200, selected.text);
  t.same(selected.body, {
    [sds[0] as string]: { backgroundScanCompareErrorCount: 0, BackgroundScannedInMB: 300 },
    [sds[1] as string]: { backgroundScanCompareErrorCount: 3, BackgroundScannedInMB: 200 },
    [sds[2] as string]: { backgroundScanCompareErrorCount: 0, BackgroundScannedInMB: 0 },
  }, 'querySelectedStatistics picks them');
});

t.test('unrepairableRanges: each range once, with its volume and volume byte range', async (t) => {
  const { api, token, pool, sds, volume } = await reporting(t);
  const expected = [
    {
      poolId: pool,
      chunkIndex: 5,
      offsetInChunkBytes: 8192,
      lengthBytes: 4096,
      reaches: 'volume',
      volumeId: volume,
      volumeName: 'vol1',
      volumeOffsetBytes: 5 * MiB + 8192,
      volumeEndBytes: 5 * MiB + 8192 + 4096,
      reportedBy: [sds[0], sds[1]].sort(),
    },
  ];
  const system = await statistics(api, token, `/api/instances/System::${testClusterId}`);
  t.match(system['unrepairableRanges'], expected, 'in the System statistics');
  t.equal((system['unrepairableRanges'] as unknown[]).length, 1, 'both copies reporting it: one entry');
  t.match((await statistics(api, token, `/api/instances/StoragePool::${pool}`))['unrepairableRanges'], expected, "in the pool's");
  const selected = await call(api, 'POST', '/api/instances/System/action/querySelectedStatistics', { token, body: { properties: ['unrepairableRanges'] } });
  t.equal(selected.status, 200, selected.text);
  t.match((selected.body as Record<string, unknown>)['unrepairableRanges'], expected, 'and through querySelectedStatistics');
});
