// Proves the buffer pool's contract: sizes map to power-of-two classes from 64 KiB up to
// the largest request plus its reply header, released buffers come back, and a buffer
// the pool did not make is refused with an assertion rather than corrupting a free list.

import t from 'tap';
import { nbdRequestBytesMax } from '../../src/common/limits.js';
import { BufferPool, pooledBytesMin } from '../../src/nbd/buffer-pool.js';

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
