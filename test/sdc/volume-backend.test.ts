// The SDC's volume backend, in process, against one wire peer that plays the SDS: a request
// cut into two pieces, one of which fails at once, is failed only once the other piece is
// done. Until then the other piece still reads into, or sends from, the request's buffer,
// which the NBD server reuses as soon as the request is answered.
// A read the SDS answers Corrupt (every copy failed its checksums) is EIO at once, naming
// the SDS and its message: sent once, no map refresh, no retry (docs/integrity.md).
// And a flush: an SDS's answer that no new map can cure fails it at once with EIO, sent
// once; one that a new map can cure (a failed mirror) is sent again until it succeeds.

import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { VolumeBackend } from '../../src/sdc/volume-backend.js';
import type { SdcVolume } from '../../src/wire/mdm-ops.js';
import { WirePeer, type WireReply } from '../../src/wire/peer.js';
import { SdsOp, SdsStatus, decodeIo, encodeEpoch } from '../../src/wire/sds-ops.js';
import { MiB, makeMap, testClusterId, testPoolId, testSecret } from '../helpers/sds.js';

const log = pino({ level: 'silent' });
const sdsId = '5d50000000000001';

/** A backend for a 4 MiB volume of 1 MiB chunks whose one SDS answers with `serve` (chunkIndex -1: a flush, which names no chunk). */
async function backendWith(t: Test, serve: (op: number, chunkIndex: number) => Promise<WireReply>): Promise<{ backend: VolumeBackend; requestsAfter: (atMs: number) => number; refreshes: () => number }> {
  const arrivals: number[] = [];
  let refreshes = 0;
  const server = net.createServer((socket) => {
    WirePeer.accept(socket, {
      clusterId: testClusterId,
      secret: Buffer.from(testSecret),
      role: 'sds',
      name: 'sds1',
      log,
      onRequest: (request) => {
        arrivals.push(Date.now());
        return serve(request.op, request.op === SdsOp.Flush ? -1 : decodeIo(request.payload).args.chunkIndex);
      },
    }).catch(() => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  const peer = await WirePeer.connect(socket, { clusterId: testClusterId, secret: Buffer.from(testSecret), role: 'sdc', name: 'sdc1', log });
  t.teardown(() => peer.destroy());
  const map = makeMap(5, [{ sdsId, address: '127.0.0.1:1' }], { pgCount: 1, mirrored: false });
  const volume: SdcVolume = { id: '00000000000000b1', name: 'vol1', vtreeId: '00000000000000c1', generation: 0, poolId: testPoolId, sizeBytes: 4 * MiB, chunkBytes: MiB, accessMode: 'ReadWrite', exclusive: false, iopsLimit: 0, bandwidthLimitKbps: 0 };
  const backend = await VolumeBackend.open(volume, { map: () => map, refreshView: async () => void (refreshes += 1), peer: async () => peer }, log);
  return { backend, requestsAfter: (atMs) => arrivals.filter((at) => at > atMs).length, refreshes: () => refreshes };
}

const later = <T>(ms: number, value: T): Promise<T> => new Promise((resolve) => setTimeout(() => resolve(value), ms));

t.test('a read with a failed piece fails after its other piece has landed, not before', async (t) => {
  const { backend } = await backendWith(t, (_op, chunkIndex) =>
    chunkIndex === 0 ? Promise.resolve({ status: SdsStatus.Failed, payload: Buffer.from('broken') }) : later(300, { status: SdsStatus.Ok, payload: Buffer.alloc(MiB, 0xbb) }),
  );
  const target = Buffer.alloc(2 * MiB);
  let secondHalfAtFailure: Buffer | null = null;
  await t.rejects(
    backend.read(0, target).catch((err: unknown) => {
      secondHalfAtFailure = Buffer.from(target.subarray(MiB));
      throw err;
    }),
    { code: 'EIO' },
    'the read fails',
  );
  t.ok((secondHalfAtFailure as Buffer | null)?.every((byte) => byte === 0xbb), 'and the other piece had landed before it said so');
});

t.test('a write with a failed piece sends nothing more once it has failed', async (t) => {
  let staleOnce = true;
  const { backend, requestsAfter } = await backendWith(t, (_op, chunkIndex) => {
    if (chunkIndex === 0) return Promise.resolve({ status: SdsStatus.Failed, payload: Buffer.from('broken') });
    // The other piece is refused once (a stale map) after a while, and sent again.
    if (staleOnce) {
      staleOnce = false;
      return later(200, { status: SdsStatus.StaleEpoch, payload: encodeEpoch(6) });
    }
    return later(50, { status: SdsStatus.Ok });
  });
  let failedAtMs = 0;
  await t.rejects(
    backend.write(0, randomBytes(2 * MiB), { fua: false }).catch((err: unknown) => {
      failedAtMs = Date.now();
      throw err;
    }),
    { code: 'EIO' },
    'the write fails',
  );
  await later(500, null);
  t.equal(requestsAfter(failedAtMs), 0, 'no piece was sent (from a buffer the server may have reused) after the failure');
});

/** Writes one chunk (so the flush has an SDS to reach), then flushes; counts the flushes the SDS saw. */
async function flushAnswered(t: Test, answers: WireReply[]): Promise<{ flushed: Promise<void>; flushCount: () => number }> {
  let flushCount = 0;
  const { backend } = await backendWith(t, (op) => {
    if (op !== SdsOp.Flush) return Promise.resolve({ status: SdsStatus.Ok });
    flushCount += 1;
    return Promise.resolve(answers.shift() ?? { status: SdsStatus.Ok });
  });
  await backend.write(0, randomBytes(4096), { fua: false });
  return { flushed: backend.flush(), flushCount: () => flushCount };
}

t.test('a flush the SDS fails for good fails at once with EIO, without a retry', async (t) => {
  const { flushed, flushCount } = await flushAnswered(t, [{ status: SdsStatus.Failed, payload: Buffer.from('fsync: EIO') }]);
  await t.rejects(flushed, { code: 'EIO', message: /fsync: EIO/ }, 'the flush fails, saying why');
  t.equal(flushCount(), 1, 'the SDS was asked once');
});

t.test('a flush the SDS fails for now (a failed mirror) is sent again, and succeeds', async (t) => {
  const { flushed, flushCount } = await flushAnswered(t, [
    { status: SdsStatus.MirrorFailed, payload: Buffer.from('mirror sds2 unreachable') },
    { status: SdsStatus.MirrorFailed, payload: Buffer.from('mirror sds2 unreachable') },
  ]);
  await t.resolves(flushed, 'the flush succeeds');
  t.equal(flushCount(), 3, 'after two retries');
});

t.test('a read answered Corrupt is EIO at once, naming the SDS and its message: never retried, no map refresh', async (t) => {
  let reads = 0;
  const { backend, refreshes } = await backendWith(t, (op, chunkIndex) => {
    if (op === SdsOp.Read) reads += 1;
    if (chunkIndex === 1) return Promise.resolve({ status: SdsStatus.Corrupt, payload: Buffer.from('chunk 1 bytes 4096..8192 failed their checksums on both copies') });
    return Promise.resolve({ status: SdsStatus.Ok, payload: Buffer.alloc(4096) });
  });
  const startedMs = Date.now();
  await t.rejects(backend.read(MiB + 4096, Buffer.alloc(4096)), { code: 'EIO', message: new RegExp(`^read of chunk 1 of vol1: SDS ${sdsId} reports the data corrupt on every copy: chunk 1 bytes 4096\\.\\.8192 failed their checksums on both copies$`) });
  t.equal(reads, 1, 'the SDS was asked once');
  t.equal(refreshes(), 0, 'no new map was asked for');
  t.ok(Date.now() - startedMs < 1000, 'at once');
  await t.resolves(backend.read(0, Buffer.alloc(4096)), 'the other blocks still read');
  t.equal(reads, 2);
});

t.test('a write answered Corrupt (a read-modify of a bad range) is EIO at once as well', async (t) => {
  let writes = 0;
  const { backend, refreshes } = await backendWith(t, (op) => {
    if (op === SdsOp.Write) writes += 1;
    return Promise.resolve(op === SdsOp.Write ? { status: SdsStatus.Corrupt, payload: Buffer.from('bad on both copies') } : { status: SdsStatus.Ok });
  });
  await t.rejects(backend.write(0, randomBytes(4096), { fua: false }), { code: 'EIO', message: /^write of chunk 0 of vol1: SDS 5d50000000000001 reports the data corrupt on every copy: bad on both copies$/ });
  t.equal(writes, 1, 'sent once');
  t.equal(refreshes(), 0);
});
