// Proves the buffer pool's contract: sizes map to power-of-two classes from 64 KiB up to
// the largest request plus its reply header, released buffers come back, and a buffer
// the pool did not make is refused with an assertion rather than corrupting a free list;
// a buffer a socket still holds is not handed out again until the last hold ends.

import t from 'tap';
import { nbdRequestBytesMax, pooledBytesMin } from '../../src/common/limits.js';
import { BufferPool } from '../../src/common/buffer-pool.js';

t.test('acquire, release, reuse', async (t) => {
  const pool = new BufferPool();
  const first = pool.acquire(100_000);
  t.equal(first.length, 100_000);
  t.equal(first.buffer.byteLength, 128 * 1024, 'rounded up to its class');
  pool.release(first);
  const second = pool.acquire(70_000);
  t.equal(second.buffer, first.buffer, 'the released store is reused');

  const largest = pool.acquire(nbdRequestBytesMax + 28);
  t.equal(largest.length, nbdRequestBytesMax + 28, 'a full-size read reply with its header fits');
  pool.release(largest);
  t.equal(pool.acquire(nbdRequestBytesMax + 28).buffer, largest.buffer);
});

t.test('what is not pooled', async (t) => {
  t.equal(BufferPool.pooled(pooledBytesMin - 1), false);
  t.equal(BufferPool.pooled(pooledBytesMin), true);
  const pool = new BufferPool();
  t.throws(() => pool.acquire(1024), { code: 'MB_ERR_ASSERTION' });
  t.throws(() => pool.acquire(nbdRequestBytesMax * 2), { code: 'MB_ERR_ASSERTION' });
  t.throws(() => pool.release(Buffer.alloc(pooledBytesMin * 3)), { code: 'MB_ERR_ASSERTION' }, 'not a pool size');
  t.throws(() => pool.release(pool.acquire(pooledBytesMin * 2).subarray(1)), { code: 'MB_ERR_ASSERTION' }, 'a view into the middle');
});

t.test('a held buffer goes back only when the last hold ends', async (t) => {
  const pool = new BufferPool();
  const buffer = pool.acquire(pooledBytesMin);
  t.ok(pool.owns(buffer));
  t.equal(pool.hold(buffer.subarray(100)), true, 'a socket writing part of it');
  pool.hold(buffer);
  pool.release(buffer);
  t.notOk(pool.owns(buffer), 'released: the owner may not release it again');
  t.not(pool.acquire(pooledBytesMin).buffer, buffer.buffer, 'still held: not handed out again');
  pool.unhold(buffer);
  t.not(pool.acquire(pooledBytesMin).buffer, buffer.buffer, 'one hold left');
  pool.unhold(buffer.subarray(100));
  t.equal(pool.acquire(pooledBytesMin).buffer, buffer.buffer, 'the last hold ended: reused');
});

t.test('misuse is loud', async (t) => {
  const pool = new BufferPool();
  const buffer = pool.acquire(pooledBytesMin);
  pool.release(buffer);
  t.throws(() => pool.release(buffer), { code: 'MB_ERR_ASSERTION' }, 'a double release');
  const other = pool.acquire(pooledBytesMin);
  t.throws(() => pool.unhold(other), { code: 'MB_ERR_ASSERTION' }, 'an unhold without a hold');
  const plain = Buffer.alloc(pooledBytesMin);
  t.notOk(pool.owns(plain), 'a buffer it did not make');
  t.equal(pool.hold(plain), false, 'a hold on a buffer it did not make is refused');
  pool.unhold(plain);
  t.pass('and so is the unhold');
});
