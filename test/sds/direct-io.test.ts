// DirectIo (src/sds/device-io.ts): positional IO on an O_DIRECT descriptor. What is read
// and written must be exactly what a plain file would give, whatever the alignment of the
// memory, the position and the length; part-sector writes on one sector at once must not
// lose each other's bytes (the read-modify-write holds its sectors); and nothing it does
// may leave the file's data in the page cache. Checked against the file read back through
// an ordinary descriptor, on a file of this machine's disk and on a loop device, through
// both engines: Linux AIO completed on the event loop, and libuv's thread pool.

import * as fs from 'node:fs';
import t from 'tap';
import { alignedBuffer, isAligned } from '../../src/common/aligned-buffers.js';
import { ShortReadError } from '../../src/common/positional-io.js';
import { mulberry32Uint32 } from '../../src/common/seeded-random.js';
import { DirectIo } from '../../src/sds/device-io.js';
import { loopDevice, sparseFile } from '../helpers/files.js';
import { run } from '../helpers/processes.js';

const MiB = 1024 * 1024;
const sizeBytes = 4 * MiB;

function openDirect(path: string): number {
  return fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_DIRECT);
}

/** What an ordinary (buffered) read of the range gives. */
function plainRead(path: string, positionBytes: number, lengthBytes: number): Buffer {
  const fd = fs.openSync(path, 'r');
  try {
    const bytes = Buffer.alloc(lengthBytes);
    fs.readSync(fd, bytes, 0, lengthBytes, positionBytes);
    return bytes;
  } finally {
    fs.closeSync(fd);
  }
}

/** Pages of `path` in the page cache, as fincore counts them. */
async function cachedPages(path: string): Promise<number> {
  const result = await run('fincore', ['--noheadings', '--bytes', '--output', 'PAGES', path]);
  if (result.code !== 0) throw new Error(`fincore ${path}: ${result.stderr}`);
  return Number(result.stdout.trim());
}

async function dropCache(path: string): Promise<void> {
  // POSIX_FADV_DONTNEED via dd: the page cache of the file, written back and dropped.
  await run('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);
}

for (const engine of ['aio', 'threads'] as const) {
  t.test(`${engine}: aligned and unaligned memory, positions and lengths read and write like a plain file`, async (t) => {
    const file = sparseFile(t.testdir(), 'device.img', sizeBytes);
    const fd = openDirect(file);
    t.teardown(() => fs.closeSync(fd));
    const io = new DirectIo(fd, file, 512, { engine });
    t.teardown(() => io.close());
    t.equal(io.engine, engine, `the ${engine} engine is used`);
    const model = Buffer.alloc(sizeBytes);
    const next = mulberry32Uint32(22);
    const random = { int: (below: number): number => next() % below };
    const cases: Array<{ position: number; length: number; memoryOffset: number }> = [
      { position: 0, length: 4096, memoryOffset: 0 },
      { position: 4096, length: 8192, memoryOffset: 1 },
      { position: 512, length: 512, memoryOffset: 0 },
      { position: 100, length: 30, memoryOffset: 3 },
      { position: 511, length: 2, memoryOffset: 0 },
      { position: 3584 + 512 * 7, length: 3584, memoryOffset: 7 },
      { position: MiB - 10, length: 20 + MiB, memoryOffset: 5 },
    ];
    for (let extra = 0; extra < 40; extra++) {
      cases.push({ position: random.int(sizeBytes - 70_000), length: 1 + random.int(70_000), memoryOffset: random.int(64) });
    }
    for (const { position, length, memoryOffset } of cases) {
      const backing = Buffer.alloc(length + 64);
      const source = backing.subarray(memoryOffset, memoryOffset + length);
      for (let index = 0; index < length; index++) source[index] = random.int(256);
      await io.write(source, position);
      source.copy(model, position);
    }
    t.ok(plainRead(file, 0, sizeBytes).equals(model), `${cases.length} writes: the file holds exactly what was written, nothing around them changed`);
    let readsRight = 0;
    for (const { position, length, memoryOffset } of cases) {
      const backing = Buffer.alloc(length + 64);
      const target = backing.subarray(memoryOffset, memoryOffset + length);
      await io.read(target, position);
      if (target.equals(model.subarray(position, position + length))) readsRight += 1;
    }
    t.equal(readsRight, cases.length, 'every read returns the bytes of its range');
    const aligned = alignedBuffer(8192);
    t.ok(isAligned(aligned), 'alignedBuffer is page-aligned');
    await io.read(aligned, 8192);
    t.ok(aligned.equals(model.subarray(8192, 16384)), 'an aligned read goes straight into the caller buffer');
    await t.rejects(io.read(Buffer.alloc(4096), sizeBytes), ShortReadError, 'a read past the end is a short read, never stale bytes');
  });

  t.test(`${engine}: part-sector writes into one sector at once keep each other's bytes`, async (t) => {
    const file = sparseFile(t.testdir(), 'device.img', sizeBytes);
    const fd = openDirect(file);
    t.teardown(() => fs.closeSync(fd));
    const io = new DirectIo(fd, file, 512, { engine });
    t.teardown(() => io.close());
    // 64 writes of 64 bytes, 8 to each of 8 sectors spread over two 4 KiB pages, all at once.
    const writes: Array<Promise<void>> = [];
    const model = Buffer.alloc(8192);
    for (let index = 0; index < 64; index++) {
      const bytes = Buffer.alloc(64, index + 1);
      const position = (index % 8) * 1024 + Math.floor(index / 8) * 64;
      bytes.copy(model, position);
      writes.push(io.write(bytes, position));
    }
    await Promise.all(writes);
    t.ok(plainRead(file, 0, 8192).equals(model), 'every 64-byte piece is on the device');
  });

  t.test(`${engine}: direct IO leaves nothing of the data in the page cache`, async (t) => {
    const file = sparseFile(t.testdir(), 'device.img', sizeBytes);
    await dropCache(file);
    const fd = openDirect(file);
    t.teardown(() => fs.closeSync(fd));
    const io = new DirectIo(fd, file, 512, { engine });
    t.teardown(() => io.close());
    for (let position = 0; position < sizeBytes; position += 64 * 1024) await io.write(Buffer.alloc(64 * 1024, 7), position);
    for (let position = 0; position < sizeBytes; position += 4096) await io.read(Buffer.alloc(4096), position);
    t.equal(await cachedPages(file), 0, `${sizeBytes / MiB} MiB written and read: no page of the file cached`);
  });

  t.test(`${engine}: on a loop device with direct IO`, async (t) => {
    const file = sparseFile(t.testdir(), 'loop.img', sizeBytes);
    const loop = await loopDevice(t, file);
    if ('unavailable' in loop) {
      t.skip(loop.unavailable, () => undefined);
      return;
    }
    const fd = openDirect(loop.device);
    t.teardown(() => fs.closeSync(fd));
    const io = new DirectIo(fd, loop.device, 512, { engine });
    t.teardown(() => io.close());
    const bytes = Buffer.alloc(10_000);
    for (let index = 0; index < bytes.length; index++) bytes[index] = index % 251;
    await io.write(bytes, 777);
    await new Promise<void>((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
    const back = Buffer.alloc(bytes.length);
    await io.read(back, 777);
    t.ok(back.equals(bytes), 'an unaligned write reads back through the device');
    t.ok(plainRead(loop.device, 777, bytes.length).equals(bytes), 'and through an ordinary descriptor');
  });
}
