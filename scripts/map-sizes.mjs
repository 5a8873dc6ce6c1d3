#!/usr/bin/env node
// The placement map's sizes (issue 23, docs/map-encoding.md): JSON as the MDM sends it today,
// the compact encoding (src/wire/map-codec.ts), and the delta one SDS failure makes, at 4 SDSs
// and at 1,024 SDSs × 4 devices, with the real planner (src/mdm/placement-planner.ts) and the
// group count a pool of that many devices gets (pgCountFor).
//
// For each size: the pool is planned, then planned again with nothing changed (the re-plan the
// MDM makes once copies are in sync, which balances primaries): that map is epoch E. One SDS's
// devices fail and the pool is re-planned (epoch E+1: survivors promoted, new copies placed),
// then planned again once the rebuild is done (E+2: roles rebalanced, if anything changes).
// Bytes sent per failure count the failure's epoch sent to every peer, N SDSs + N SDCs (the
// issue's 1,000 + 1,000): the whole map as JSON today, the delta with the codec. Times are
// wall-clock on this machine, the fastest of three runs (still disturbed by whatever else
// runs); decode and apply include parsePlacementMap's validation, the JSON parse time does not.
//
// Usage: npm run build && node scripts/map-sizes.mjs [--sds N --devices-per-sds D]...
// Prints a table, then one JSON line with every row.

import { gzipSync } from 'node:zlib';
import { parseArgs } from 'node:util';
import { planPlacement, pgCountFor, toPlacementGroups } from '../dist/mdm/placement-planner.js';
import { applyDelta, decodeMap, encodeDelta, encodeMap } from '../dist/wire/map-codec.js';

const { values } = parseArgs({ options: { sds: { type: 'string', multiple: true }, 'devices-per-sds': { type: 'string', multiple: true } } });
const sizes =
  values.sds === undefined
    ? [
        { sdsCount: 4, devicesPerSds: 1 },
        { sdsCount: 4, devicesPerSds: 4 },
        { sdsCount: 1024, devicesPerSds: 4 },
      ]
    : values.sds.map((sds, index) => ({ sdsCount: Number(sds), devicesPerSds: Number(values['devices-per-sds']?.[index] ?? 4) }));
for (const { sdsCount, devicesPerSds } of sizes) {
  if (!Number.isSafeInteger(sdsCount) || sdsCount < 3 || !Number.isSafeInteger(devicesPerSds) || devicesPerSds < 1) {
    process.stderr.write('map-sizes: --sds must be an integer of at least 3, --devices-per-sds a positive integer\n');
    process.exit(2);
  }
}

const hex = (value) => value.toString(16).padStart(16, '0');
const poolId = hex(0xf00d);

/** The map as the MDM's state machine shapes it (StateMachine.placementMap()). */
function mapOf(epoch, groups, devices, addresses) {
  const wire = toPlacementGroups(groups, devices);
  const sds = {};
  for (const group of wire) {
    sds[group.primary] = { address: addresses.get(group.primary) };
    if (group.secondary !== null) sds[group.secondary] = { address: addresses.get(group.secondary) };
  }
  return { epoch, sds, pools: { [poolId]: { chunkBytes: 1 << 20, groups: wire } } };
}

/** The fastest of three runs (the first pays for compiling; others' load disturbs single runs). */
function timeMs(fn) {
  let result;
  let bestMs = Infinity;
  for (let run = 0; run < 3; run++) {
    const started = performance.now();
    result = fn();
    bestMs = Math.min(bestMs, performance.now() - started);
  }
  return [result, bestMs];
}

const rows = [];
for (const { sdsCount, devicesPerSds } of sizes) {
  const devices = [];
  const addresses = new Map();
  for (let sds = 0; sds < sdsCount; sds++) {
    const sdsId = hex(0x5d5000000 + sds);
    addresses.set(sdsId, `10.${(sds >> 8) & 0xff}.${sds & 0xff}.1:7072`);
    for (let device = 0; device < devicesPerSds; device++) {
      devices.push({ deviceId: hex(0xde0000000 + sds * 64 + device), sdsId, faultSetId: null, capacityBytes: 4 * 2 ** 40, state: 'normal' });
    }
  }
  const pgCount = pgCountFor(devices.length);
  const first = planPlacement({ pgCount, devices, previous: null });
  const settled = planPlacement({ pgCount, devices, previous: first.groups });
  const before = mapOf(10, settled.groups, devices, addresses);

  const victim = devices[0].sdsId;
  for (const device of devices) if (device.sdsId === victim) device.state = 'failed';
  const failedPlan = planPlacement({ pgCount, devices, previous: settled.groups });
  const afterFailure = mapOf(11, failedPlan.groups, devices, addresses);
  const rebuiltPlan = planPlacement({ pgCount, devices, previous: failedPlan.groups });
  const afterRebuild = mapOf(12, rebuiltPlan.groups, devices, addresses);

  const [json, jsonMs] = timeMs(() => Buffer.from(JSON.stringify(before)));
  const [full, encodeMs] = timeMs(() => encodeMap(before));
  const [, decodeMs] = timeMs(() => decodeMap(full));
  const [, parseJsonMs] = timeMs(() => JSON.parse(json.toString()));
  const [deltaFailure, deltaMs] = timeMs(() => encodeDelta(before, afterFailure));
  const [, applyMs] = timeMs(() => applyDelta(before, deltaFailure));
  const deltaRebuild = encodeDelta(afterFailure, afterRebuild);
  const changed = (a, b) => a.pools[poolId].groups.filter((group, index) => JSON.stringify(group) !== JSON.stringify(b.pools[poolId].groups[index])).length;
  const peers = 2 * sdsCount;
  rows.push({
    sds: sdsCount,
    devicesPerSds,
    pgCount,
    mapJsonBytes: json.length,
    mapJsonGzipBytes: gzipSync(json).length,
    mapFullBytes: full.length,
    mapDeltaBytesPerFailure: deltaFailure.length,
    mapDeltaBytesAfterRebuild: deltaRebuild.length,
    groupsChangedByFailure: changed(before, afterFailure),
    groupsChangedByRebuild: changed(afterFailure, afterRebuild),
    peers,
    bytesSentPerFailureJson: peers * json.length,
    bytesSentPerFailureDelta: peers * deltaFailure.length,
    jsonStringifyMs: Math.round(jsonMs * 10) / 10,
    jsonParseMs: Math.round(parseJsonMs * 10) / 10,
    encodeMs: Math.round(encodeMs * 10) / 10,
    decodeMs: Math.round(decodeMs * 10) / 10,
    encodeDeltaMs: Math.round(deltaMs * 10) / 10,
    applyDeltaMs: Math.round(applyMs * 10) / 10,
  });
}

const bytes = (value) => (value >= 2 ** 30 ? `${(value / 2 ** 30).toFixed(2)} GiB` : value >= 2 ** 20 ? `${(value / 2 ** 20).toFixed(2)} MiB` : value >= 1024 ? `${(value / 1024).toFixed(1)} KiB` : `${value} B`);
const lines = [
  ['SDSs × devices', 'groups', 'JSON', 'JSON gzip', 'binary', 'delta (failure)', 'delta (rebuilt)', 'groups changed', 'sent/failure JSON', 'sent/failure delta', 'encode/decode/apply ms'],
  ...rows.map((row) => [
    `${row.sds} × ${row.devicesPerSds}`,
    String(row.pgCount),
    bytes(row.mapJsonBytes),
    bytes(row.mapJsonGzipBytes),
    bytes(row.mapFullBytes),
    bytes(row.mapDeltaBytesPerFailure),
    bytes(row.mapDeltaBytesAfterRebuild),
    `${row.groupsChangedByFailure} + ${row.groupsChangedByRebuild}`,
    bytes(row.bytesSentPerFailureJson),
    bytes(row.bytesSentPerFailureDelta),
    `${row.encodeMs} / ${row.decodeMs} / ${row.applyDeltaMs}`,
  ]),
];
const widths = lines[0].map((_, column) => Math.max(...lines.map((line) => line[column].length)));
for (const line of lines) process.stdout.write(`${line.map((cell, column) => cell.padEnd(widths[column])).join('  ')}\n`);
process.stdout.write(`${JSON.stringify({ rows })}\n`);
