// Proves crash consistency of the SDS chunk store: a write storm (writes of 4 KiB blocks,
// whole-chunk trims, flushes and FUA writes, 32 in flight) runs against a real SDS, which
// is killed with SIGKILL at a random moment; it must restart cleanly (no damaged slot
// entries) and every block must hold exactly what the storm left there: the last
// acknowledged write or trim, or one of the operations still in flight at the kill.
//
// A process crash keeps what reached the kernel, so this asserts more than NBD's promise
// (only writes acknowledged before a completed flush must survive): an acknowledged write
// that is missing after a kill is a bug in the store's ordering or its index. Three rounds
// on one device, each with its own seed (printed; SEED=n replays the first round).
//
// Then the same on a loop device with the loop driver's direct IO on and 4096-byte sectors,
// the SDS running `--io direct` (docs/direct-io.md): O_DIRECT writes still in the thread
// pool at the kill must leave the store as consistent as page-cache writes do. Two rounds.

import t, { type Test } from 'tap';
import { mulberry32 } from '../../src/common/seeded-random.js';
import { sparseFile } from '../helpers/files.js';
import { loopDevices, loopDevicesUnavailable } from '../helpers/loop-devices.js';
import { MiB, TestVolumeClient, connectWire, getStats, makeMap, setMap, startSds, type SdsIoMode } from '../helpers/sds.js';

const blockBytes = 4096;
const regionBytes = 64 * MiB;
const blockCount = regionBytes / blockBytes;
const blocksPerChunk = MiB / blockBytes;
const inflightMax = 32;
const vtreeId = '00000000c0a5c0a5';
/** A block's value: 0 never written, -1 trimmed, else the version that wrote it. */
type Value = number;


function blockContent(block: number, version: number): Buffer {
  const content = Buffer.alloc(blockBytes, (block * 7 + version * 13) & 0xff);
  content.writeUInt32BE(block, 0);
  content.writeUInt32BE(version, 4);
  return content;
}

interface Storm {
  acked: Value[];
  inflight: Array<Set<Value>>;
}

async function runStorm(volume: TestVolumeClient, random: () => number, durationMs: number, storm: Storm, firstVersion: number): Promise<number> {
  let version = firstVersion;
  const busy = new Set<number>();
  const deadline = Date.now() + durationMs;
  let stopped = false;
  const worker = async (): Promise<void> => {
    while (!stopped && Date.now() < deadline) {
      const dice = random();
      if (dice < 0.03) {
        await volume.flush();
        continue;
      }
      if (dice < 0.06) {
        const chunk = Math.floor(random() * (blockCount / blocksPerChunk));
        const blocks = Array.from({ length: blocksPerChunk }, (_, index) => chunk * blocksPerChunk + index);
        if (blocks.some((block) => busy.has(block))) continue;
        for (const block of blocks) {
          busy.add(block);
          storm.inflight[block]?.add(-1);
        }
        await volume.trim(chunk * MiB, MiB);
        for (const block of blocks) {
          storm.acked[block] = -1;
          storm.inflight[block]?.delete(-1);
          busy.delete(block);
        }
        continue;
      }
      const count = 1 + Math.floor(random() * 4);
      const first = Math.floor(random() * (blockCount - count));
      const blocks = Array.from({ length: count }, (_, index) => first + index);
      if (blocks.some((block) => busy.has(block))) continue;
      const mine = ++version;
      for (const block of blocks) {
        busy.add(block);
        storm.inflight[block]?.add(mine);
      }
      await volume.write(first * blockBytes, Buffer.concat(blocks.map((block) => blockContent(block, mine))), random() < 0.05 ? 1 : 0);
      for (const block of blocks) {
        storm.acked[block] = mine;
        storm.inflight[block]?.delete(mine);
        busy.delete(block);
      }
    }
  };
  // Workers stop at the first failure (the kill); the rest keep their ops "in flight".
  await Promise.allSettled(Array.from({ length: inflightMax }, () => worker().catch((err: unknown) => {
    stopped = true;
    throw err;
  })));
  return version;
}

function check(fail: (message: string) => void, image: Buffer, storm: Storm): number {
  let wrong = 0;
  for (let block = 0; block < blockCount; block++) {
    const bytes = image.subarray(block * blockBytes, (block + 1) * blockBytes);
    const acked = storm.acked[block] as Value;
    const inflight = storm.inflight[block] as Set<Value>;
    let ok: boolean;
    if (bytes.every((byte) => byte === 0)) {
      ok = acked <= 0 || inflight.has(-1);
    } else {
      const version = bytes.readUInt32BE(4);
      ok = bytes.readUInt32BE(0) === block && (version === acked || inflight.has(version)) && bytes.equals(blockContent(block, version));
    }
    if (!ok && wrong++ < 5) fail(`block ${block}: acked ${acked}, in flight [${[...inflight].join(',')}], found version ${bytes.readUInt32BE(4)}`);
  }
  return wrong;
}

function settle(image: Buffer, storm: Storm): void {
  // After a check, what is on disk is the truth the next round builds on.
  for (let block = 0; block < blockCount; block++) {
    const bytes = image.subarray(block * blockBytes, (block + 1) * blockBytes);
    const inflight = storm.inflight[block] as Set<Value>;
    if (inflight.size === 0) continue;
    storm.acked[block] = bytes.every((byte) => byte === 0) ? -1 : bytes.readUInt32BE(4);
    inflight.clear();
  }
}

/** `rounds` kills of an SDS on `device` (run with `--io io` when given), each checked after its restart. */
async function crashRounds(t: Test, dir: string, device: string, rounds: number, io?: SdsIoMode): Promise<void> {
  const storm: Storm = { acked: new Array<Value>(blockCount).fill(0), inflight: Array.from({ length: blockCount }, () => new Set<Value>()) };
  const firstSeed = process.env['SEED'] !== undefined ? Number(process.env['SEED']) : Math.floor(Math.random() * 2 ** 31);
  let version = 0;
  for (let round = 0; round <= rounds; round++) {
    const sds = await startSds(t, { dir, name: 'sds-crash', devices: [device], ...(io !== undefined ? { io } : {}) });
    const peer = await connectWire(t, sds.address);
    const map = makeMap(1, [sds], { pgCount: 32 });
    if (round === 0) await setMap(peer, map);
    if (io === 'direct') t.equal((await getStats(peer)).devices[0]?.io, 'direct', `round ${round}: the device runs in direct IO`);
    const volume = new TestVolumeClient(map, new Map([[sds.sdsId, peer]]), vtreeId);
    if (round > 0) {
      const image = await volume.read(0, regionBytes);
      t.equal(check((message) => t.fail(message), image, storm), 0, `after kill ${round}: every block holds its last acknowledged value or one in flight`);
      t.notMatch(sds.stderr(), /damaged slot-table entry|two slots held one chunk/, `after kill ${round}: the store opened cleanly`);
      settle(image, storm);
    }
    if (round === rounds) {
      t.equal(await sds.stop(), 0, 'and stops cleanly');
      break;
    }
    const seed = firstSeed + round;
    const random = mulberry32(seed);
    const killAfterMs = 400 + Math.floor(random() * 1200);
    const killer = new Promise<void>((resolve) => setTimeout(resolve, killAfterMs)).then(() => sds.kill());
    version = await runStorm(volume, random, 30_000, storm, version);
    await killer;
    const inflightOps = storm.inflight.reduce((sum, set) => sum + set.size, 0);
    t.comment(`round ${round}: seed ${seed}, killed after ${killAfterMs} ms at version ${version}; ${inflightOps} block operations in flight`);
    t.ok(version > 50 * (round + 1), `round ${round}: the storm got going before the kill`);
  }
}

t.test('kill -9 during a write storm loses nothing acknowledged', async (t) => {
  const dir = t.testdir();
  await crashRounds(t, dir, sparseFile(dir, 'crash.img', 256 * MiB), 3);
});

t.test('kill -9 during a write storm on a direct loop device (4096-byte sectors) loses nothing acknowledged', async (t) => {
  const unavailable = loopDevicesUnavailable();
  if (unavailable !== null) {
    t.skip(unavailable, () => undefined);
    return;
  }
  const dir = t.testdir();
  const [loop] = await loopDevices(t, dir, { count: 1, sizeBytes: 256 * MiB, namePrefix: 'crash', sectorBytes: [4096] });
  await crashRounds(t, dir, (loop as { device: string }).device, 2, 'direct');
});
