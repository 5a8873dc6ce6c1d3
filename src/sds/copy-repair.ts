// Repairing one copy of a chunk from the other. The chunk store finds bad bytes (a block
// that fails its checksum, a copy lost to a damaged entry) and names the range; this module
// fetches that range from the group's other copy (SdsOp.ReadCopy, verified there against
// its own checksums) and rewrites it here. When the other copy is bad too, or there is no
// other copy, the range is unrepairable: remembered, reported, and the request fails with
// Corrupt (EIO at the SDC) — never wrong bytes, never zeros.
//
// Deadlock rule: an SDS never holds a range lock of its own while it waits for a peer that
// may wait for one of its locks. A primary may (its peers answer ReadCopy and Digest and
// apply Put without calling back); a secondary fetching from its primary does not, since
// the primary may be holding a lock of the same range while its mirror write waits here.

import type { Logger } from 'pino';
import { placementGroupOf, type PlacementGroup, type PlacementMap } from '../wire/placement.js';
import type { WirePeer, WireReply, WireRequest, WireResponse } from '../wire/peer.js';
import { IoFlag, SdsOp, SdsStatus, decodeIo, encodeEpoch, encodeIo, type IoArgs } from '../wire/sds-ops.js';
import { mirrorTimeoutMs } from '../common/limits.js';
import { ChecksumError, checksumBlockBytes, keyName, type ChunkKey, type ChunkStore } from './chunk-store.js';
import type { RangeLocks } from './range-locks.js';
import { ReplyError } from './reply-error.js';

export interface CopyRepairHost {
  sdsId: string;
  store: ChunkStore;
  locks: RangeLocks;
  log: Logger;
  map(): PlacementMap | null;
  epoch(): number;
  peerFor(sdsId: string): Promise<WirePeer>;
}

/** The lock range of whole checksum blocks covering [offsetBytes, +lengthBytes). */
export function blockAligned(offsetBytes: number, lengthBytes: number): { startBytes: number; endBytes: number } {
  return {
    startBytes: Math.floor(offsetBytes / checksumBlockBytes) * checksumBlockBytes,
    endBytes: Math.ceil((offsetBytes + lengthBytes) / checksumBlockBytes) * checksumBlockBytes,
  };
}

export class CopyRepair {
  constructor(private readonly host: CopyRepairHost) {}

  /** The group of a key in the current map, and this SDS's role in it (null when it holds none). */
  groupOf(key: ChunkKey): { group: PlacementGroup; pgIndex: number; role: 'primary' | 'secondary' } | null {
    const pool = this.host.map()?.pools[key.poolId];
    if (pool === undefined) return null;
    const pgIndex = placementGroupOf(key.vtreeId, key.chunkIndex, pool.groups.length);
    const group = pool.groups[pgIndex];
    if (group === undefined || group.lost === true) return null;
    if (group.primary === this.host.sdsId) return { group, pgIndex, role: 'primary' };
    if (group.secondary === this.host.sdsId) return { group, pgIndex, role: 'secondary' };
    return null;
  }

  /**
   * Runs `attempt`; when it finds bad bytes here, repairs them from the other copy and runs
   * it once more per bad range. `lockedExclusive`: the caller holds an exclusive lock of
   * the key over the bad range already (a write's read-modify-write); otherwise the repair
   * takes one.
   */
  async withRepair<T>(attempt: () => Promise<T>, options: { lockedExclusive: boolean }): Promise<T> {
    const repaired = new Set<string>();
    for (;;) {
      try {
        return await attempt();
      } catch (err) {
        if (!(err instanceof ChecksumError)) throw err;
        const range = `${keyName(err.key)}@${err.offsetBytes}+${err.lengthBytes}`;
        if (repaired.has(range)) throw this.corrupt(err.key, err.offsetBytes, err.lengthBytes, 'the range failed again after its repair');
        repaired.add(range);
        await this.repair(err, options);
      }
    }
  }

  /** Fetches the range of `err` from the other copy and rewrites it here; Corrupt when it cannot. */
  async repair(err: ChecksumError, options: { lockedExclusive: boolean }): Promise<void> {
    const { key, offsetBytes, lengthBytes } = err;
    const placed = this.groupOf(key);
    const other = placed === null ? null : placed.role === 'primary' ? placed.group.secondary : placed.group.primary;
    if (placed === null || other === null) throw this.corrupt(key, offsetBytes, lengthBytes, `${err.message}; no other copy to repair it from`);
    const args: IoArgs = { ...key, pgIndex: placed.pgIndex, offsetBytes, lengthBytes, flags: 0 };
    const fetch = async (): Promise<Buffer> => {
      let reply: WireResponse;
      try {
        const peer = await this.host.peerFor(other);
        reply = await peer.request(SdsOp.ReadCopy, encodeIo(args), { epoch: this.host.epoch(), timeoutMs: mirrorTimeoutMs });
      } catch (cause) {
        // Unreachable is not "bad": the request fails (IoError), nothing is marked.
        throw new ReplyError(SdsStatus.IoError, `${err.message}; its other copy on SDS ${other} is unreachable: ${(cause as Error).message}`);
      }
      if (reply.status === SdsStatus.Ok && reply.payload.length === lengthBytes) return reply.payload;
      if (reply.status === SdsStatus.Corrupt) throw this.corrupt(key, offsetBytes, lengthBytes, `${err.message}; and on SDS ${other}: ${reply.payload.toString()}`);
      throw new ReplyError(SdsStatus.IoError, `${err.message}; SDS ${other} did not give its copy (status ${reply.status}): ${reply.payload.toString()}`);
    };
    if (options.lockedExclusive) {
      await this.host.store.repair(key, offsetBytes, await fetch());
      return;
    }
    if (placed.role === 'primary') {
      const release = await this.host.locks.acquire(keyName(key), offsetBytes, offsetBytes + lengthBytes, true);
      try {
        await this.host.store.repair(key, offsetBytes, await fetch());
      } finally {
        release();
      }
      return;
    }
    // A secondary fetches first (deadlock rule), then rewrites only what is still bad: a
    // write that came meanwhile made its blocks good and newer than the fetched bytes.
    const good = await fetch();
    const release = await this.host.locks.acquire(keyName(key), offsetBytes, offsetBytes + lengthBytes, true);
    try {
      const still = await this.host.store.read(key, offsetBytes, Buffer.allocUnsafe(lengthBytes)).then(
        () => false,
        (cause: unknown) => cause instanceof ChecksumError,
      );
      if (still) await this.host.store.repair(key, offsetBytes, good);
    } finally {
      release();
    }
  }

  /** Remembers the range as bad on both copies and makes the error the client gets. */
  corrupt(key: ChunkKey, offsetBytes: number, lengthBytes: number, message: string): ReplyError {
    this.host.store.markUnrepairable(key, offsetBytes, lengthBytes);
    return new ReplyError(SdsStatus.Corrupt, message);
  }

  // --- what this SDS answers for its peers ------------------------------------------------

  /** SdsOp.ReadCopy: this copy's bytes of an exact key, verified; Corrupt when they are bad. */
  async onReadCopy(request: WireRequest): Promise<WireReply> {
    const { args } = decodeIo(request.payload);
    const key = this.admitPeer(args);
    const { startBytes, endBytes } = blockAligned(args.offsetBytes, args.lengthBytes);
    const release = await this.host.locks.acquire(keyName(key), startBytes, endBytes, false);
    try {
      if (!this.host.store.has(key)) return { status: SdsStatus.Corrupt, payload: Buffer.from(`chunk ${keyName(key)} is not held on SDS ${this.host.sdsId}`) };
      const data = Buffer.allocUnsafe(args.lengthBytes);
      await this.host.store.read(key, args.offsetBytes, data);
      return { status: SdsStatus.Ok, payload: data };
    } catch (err) {
      if (err instanceof ChecksumError) return { status: SdsStatus.Corrupt, payload: Buffer.from(err.message) };
      throw err;
    } finally {
      release();
    }
  }

  /** SdsOp.Digest: the stored CRC of every block of this copy of an exact key, verified first. */
  async onDigest(request: WireRequest): Promise<WireReply> {
    const { args } = decodeIo(request.payload);
    const key = this.admitPeer(args);
    const release = await this.host.locks.acquire(keyName(key), 0, this.host.store.chunkBytes, true);
    try {
      const scrub = await this.host.store.scrubChunk(key);
      if (scrub.badRanges.length > 0) {
        return { status: SdsStatus.Corrupt, payload: Buffer.from(`chunk ${keyName(key)} on SDS ${this.host.sdsId}: bad ranges ${scrub.badRanges.map((range) => `${range.offsetBytes}+${range.lengthBytes}`).join(', ')}`) };
      }
      const payload = Buffer.allocUnsafe(scrub.digests.length * 4);
      scrub.digests.forEach((digest, index) => payload.writeUInt32BE(digest, index * 4));
      return { status: SdsStatus.Ok, payload };
    } finally {
      release();
    }
  }

  /** A peer's ReadCopy or Digest names a key of a group this SDS holds a copy of at its epoch. */
  private admitPeer(args: IoArgs): ChunkKey {
    if ((args.flags & ~IoFlag.Fua) !== 0) throw new ReplyError(SdsStatus.InvalidArgument, 'ReadCopy and Digest take no flags');
    if (args.offsetBytes % checksumBlockBytes !== 0 || args.lengthBytes % checksumBlockBytes !== 0) {
      throw new ReplyError(SdsStatus.InvalidArgument, `a copy is read in whole ${checksumBlockBytes}-byte blocks`);
    }
    const key: ChunkKey = { poolId: args.poolId, vtreeId: args.vtreeId, chunkIndex: args.chunkIndex, generation: args.generation };
    if (this.groupOf(key) === null) throw new ReplyError(SdsStatus.StaleEpoch, `SDS ${this.host.sdsId} holds no copy of chunk ${keyName(key)} at epoch ${this.host.epoch()}`, encodeEpoch(this.host.epoch()));
    return key;
  }
}
