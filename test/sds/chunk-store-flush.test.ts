// Proves that a chunk store flush never answers before the writes acknowledged ahead of it
// are covered by an fdatasync, in the two interleavings where the "dirty" mark alone got
// it wrong (a rebuild source counts on this before it saves a cursor, and a client's FLUSH
// always did): a flush that finds the device clean while another flush's fdatasync is in
// flight waits for that fdatasync; and a write that was in flight while a flush began
// leaves the device marked dirty, so the next flush syncs it. Real store on a sparse file;
// microtask turns only (no event-loop turn) are used to observe what is still pending,
// since an fdatasync or a device write always needs one.

import { pino } from 'pino';
import t from 'tap';
import { ChunkStore, type ChunkKey } from '../../src/sds/chunk-store.js';
import { sparseFile } from '../helpers/files.js';

const MiB = 1024 * 1024;
const key: ChunkKey = { poolId: '00000000000000a1', vtreeId: '7777000011112222', chunkIndex: 0, generation: 0 };

async function microtasks(count: number): Promise<void> {
  for (let turn = 0; turn < count; turn++) await Promise.resolve();
}

async function openStore(t: { testdir: () => string; teardown: (fn: () => unknown) => void }): Promise<ChunkStore> {
  const dir = t.testdir();
  const store = await ChunkStore.open([sparseFile(dir, 'device.img', 64 * MiB)], {
    owner: { clusterId: 'c0ffee00c0ffee00', sdsId: '0a0b0c0d0e0f1011', sdsName: 'sds-1' },
    chunkBytes: MiB,
    force: false,
    log: pino({ level: 'silent' }),
    // No zeroed pool: its background zeroing marks the device dirty, which these tests watch.
    zeroedSlotsReady: 0,
  });
  t.teardown(() => store.close());
  return store;
}

t.test('a flush that finds the device clean waits for the fdatasync in flight', async (t) => {
  const store = await openStore(t);
  await store.write(key, 0, Buffer.alloc(4096, 1), { fua: false });
  const first = store.flush();
  let secondDone = false;
  const second = store.flush().then(() => {
    secondDone = true;
  });
  await microtasks(50);
  t.notOk(secondDone, 'the second flush has not answered while the first one is still syncing');
  await Promise.all([first, second]);
  t.ok(secondDone, 'both answer once the fdatasync is done');
});

t.test('a write in flight while a flush begins leaves the device dirty for the next flush', async (t) => {
  const store = await openStore(t);
  await store.write(key, 0, Buffer.alloc(4096, 1), { fua: false });
  await store.flush();
  const device = store.devices[0];
  if (device === undefined) throw new Error('the store has no device');
  t.notOk(device.dirty, 'clean after a flush');
  const write = store.write(key, 4096, Buffer.alloc(4096, 2), { fua: false });
  // Until the write reaches the device (marked dirty as it is issued); no event-loop turn,
  // so the device write cannot have completed yet.
  for (let turn = 0; turn < 100 && !device.dirty; turn++) await microtasks(1);
  t.ok(device.dirty, 'the write was issued');
  const flush = store.flush();
  t.notOk(device.dirty, 'the flush took the mark while the write was still in flight');
  await write;
  t.ok(device.dirty, 'the completed write marked the device again: the next flush will sync it');
  await flush;
  await store.flush();
  t.notOk(device.dirty, 'and that flush did');
});
