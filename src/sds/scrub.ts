// The background scrub (ScaleIO's background device scanner, Ceph's deep scrub): every
// chunk copy this SDS holds is read whole, at the pool policy's rate per device, and its
// blocks verified against their checksums (chunk-store.ts scrubChunk); a bad range is
// fetched from the other copy and rewritten (copy-repair.ts). In `dataComparison` mode the
// primary of each group also compares its copy with the secondary's, block by block
// (SdsOp.Digest, which verifies the secondary's own checksums first): a secondary copy
// that is bad or differs is replaced whole from the primary (SdsOp.Put), the primary being
// the copy that orders writes. A pass ends with the slot tables checked against memory.
//
// The scrub gives way: it waits while client IO or a rebuild runs on this SDS (as rebuild
// waits for clients under favorAppIos), and holds one chunk's lock at a time.

import type { Logger } from 'pino';
import { SdsOp, SdsStatus, encodeIo, type ScrubMode, type ScrubProgress } from '../wire/sds-ops.js';
import type { PlacementMap, ScrubPolicy } from '../wire/placement.js';
import type { WirePeer } from '../wire/peer.js';
import { mirrorTimeoutMs, scrubIdleRecheckMs, scrubModeDefault, scrubPassGapMs, scrubRateKBpsDefault } from '../common/limits.js';
import { ChecksumError, keyName, type ChunkKey, type ChunkStore } from './chunk-store.js';
import type { CopyRepair } from './copy-repair.js';
import type { RangeLocks } from './range-locks.js';

export interface ScrubHost {
  store: ChunkStore;
  locks: RangeLocks;
  log: Logger;
  repair: CopyRepair;
  map(): PlacementMap | null;
  epoch(): number;
  peerFor(sdsId: string): Promise<WirePeer>;
  /** Client IO or a rebuild is running here: the scrub waits. */
  isBusy(): boolean;
  isClosing(): boolean;
}

export function scrubPolicyOf(map: PlacementMap | null, poolId: string): ScrubPolicy {
  return map?.pools[poolId]?.scrub ?? { mode: scrubModeDefault, rateKBps: scrubRateKBpsDefault };
}

export class Scrubber {
  private readonly state: ScrubProgress = {
    state: 'idle',
    mode: scrubModeDefault,
    rateKBps: scrubRateKBpsDefault,
    passesCompleted: 0,
    passStartedAtMs: null,
    lastPassCompletedAtMs: null,
    chunksScanned: 0,
    chunksTotal: 0,
    bytesScanned: 0,
  };
  /** When each device may be read again, at its pool's rate. */
  private readonly nextReadAtMs = new Map<string, number>();
  private running: Promise<void> | null = null;
  private wake: (() => void) | null = null;

  constructor(private readonly host: ScrubHost) {}

  progress(): ScrubProgress {
    return { ...this.state };
  }

  start(): void {
    if (this.running !== null) return;
    this.running = this.run().catch((err: unknown) => this.host.log.error({ err }, 'the scrub stopped on an error'));
  }

  /** Ends the wait between passes (a test, or a policy that changed). */
  poke(): void {
    this.wake?.();
  }

  async close(): Promise<void> {
    this.poke();
    await this.running;
  }

  private async run(): Promise<void> {
    while (!this.host.isClosing()) {
      const started = Date.now();
      await this.pass();
      if (this.host.isClosing()) return;
      await this.sleep(Math.max(0, scrubPassGapMs - (Date.now() - started)));
    }
  }

  /** One pass over every chunk copy held here (in key order) and the slot tables. */
  private async pass(): Promise<void> {
    const map = this.host.map();
    const keys = this.host.store.keys((key) => scrubPolicyOf(map, key.poolId).mode !== 'off' && this.host.repair.groupOf(key) !== null);
    const modes = new Set(Object.keys(map?.pools ?? {}).map((poolId) => scrubPolicyOf(map, poolId).mode));
    if (keys.length === 0) {
      this.state.state = modes.size > 0 && [...modes].every((mode) => mode === 'off') ? 'off' : 'idle';
      return;
    }
    this.state.passStartedAtMs = Date.now();
    this.state.chunksScanned = 0;
    this.state.chunksTotal = keys.length;
    for (const key of keys) {
      if (this.host.isClosing()) return;
      const policy = scrubPolicyOf(this.host.map(), key.poolId);
      this.state.mode = policy.mode;
      this.state.rateKBps = policy.rateKBps;
      if (policy.mode === 'off') continue;
      await this.pace(key, policy.rateKBps);
      if (this.host.isClosing()) return;
      this.state.state = 'running';
      try {
        await this.scrubKey(key, policy.mode);
      } catch (err) {
        this.host.log.warn({ err, key }, 'scrubbing a chunk copy failed; the next pass tries again');
      }
      this.state.chunksScanned += 1;
      this.state.bytesScanned += this.host.store.chunkBytes;
    }
    for (const device of this.host.store.devices) {
      if (device.state !== 'normal' || this.host.isClosing()) continue;
      await this.host.store.scrubSlotTable(device).catch((err: unknown) => this.host.log.warn({ err, deviceId: device.deviceId }, 'checking the slot table failed'));
    }
    this.state.passesCompleted += 1;
    this.state.lastPassCompletedAtMs = Date.now();
    this.state.state = 'idle';
    this.host.log.info({ chunks: keys.length, passes: this.state.passesCompleted }, 'scrub pass complete');
  }

  /** Waits for the device's turn at the pool's rate, and while clients or a rebuild keep the SDS busy. */
  private async pace(key: ChunkKey, rateKBps: number): Promise<void> {
    const device = this.host.store.deviceOf(key);
    const deviceId = device?.deviceId ?? '';
    for (;;) {
      if (this.host.isClosing()) return;
      if (this.host.isBusy()) {
        this.state.state = 'paused';
        await this.sleep(scrubIdleRecheckMs);
        continue;
      }
      const waitMs = (this.nextReadAtMs.get(deviceId) ?? 0) - Date.now();
      if (waitMs <= 0) break;
      await this.sleep(Math.min(waitMs, scrubIdleRecheckMs));
    }
    const chunkMs = (this.host.store.chunkBytes / (rateKBps * 1024)) * 1000;
    this.nextReadAtMs.set(deviceId, Math.max(Date.now(), this.nextReadAtMs.get(deviceId) ?? 0) + chunkMs);
  }

  private async scrubKey(key: ChunkKey, mode: ScrubMode): Promise<void> {
    const placed = this.host.repair.groupOf(key);
    if (placed === null) return;
    const compare = mode === 'dataComparison' && placed.role === 'primary' && placed.group.secondary !== null;
    const secondary = placed.group.secondary;
    const release = await this.host.locks.acquire(keyName(key), 0, this.host.store.chunkBytes, true);
    let bad: Array<{ offsetBytes: number; lengthBytes: number }>;
    try {
      const mine = await this.host.store.scrubChunk(key);
      bad = mine.badRanges;
      // A primary may hold its lock while it asks its secondary (copy-repair.ts's rule).
      if (bad.length === 0 && compare && secondary !== null) await this.compare(key, placed.pgIndex, secondary, mine.digests);
    } finally {
      release();
    }
    for (const range of bad) {
      const found = new ChecksumError(key, range.offsetBytes, range.lengthBytes, 'found by the scrub');
      await this.host.repair.repair(found, { lockedExclusive: false }).catch((err: unknown) => this.host.log.error({ err, key, range }, 'the scrub could not repair a bad range'));
    }
  }

  /** Compares this (primary) copy with the secondary's; a secondary copy that is bad or differs is replaced whole. */
  private async compare(key: ChunkKey, pgIndex: number, secondary: string, digests: Uint32Array): Promise<void> {
    const args = { ...key, pgIndex, offsetBytes: 0, lengthBytes: this.host.store.chunkBytes, flags: 0 };
    const peer = await this.host.peerFor(secondary);
    const epoch = this.host.epoch();
    const reply = await peer.request(SdsOp.Digest, encodeIo(args), { epoch, timeoutMs: mirrorTimeoutMs });
    let differing: number;
    if (reply.status === SdsStatus.Corrupt) {
      differing = digests.length;
      this.host.log.warn({ key, secondary, problem: reply.payload.toString() }, 'the secondary copy of a chunk is bad: replacing it from the primary');
    } else if (reply.status === SdsStatus.Ok && reply.payload.length === digests.length * 4) {
      differing = 0;
      for (let block = 0; block < digests.length; block++) if (reply.payload.readUInt32BE(block * 4) !== digests[block]) differing += 1;
      if (differing === 0) return;
      this.host.store.integrity.mismatchedBlocks += differing;
      this.host.log.error({ key, secondary, blocks: differing }, 'the two copies of a chunk differ though both verify: replacing the secondary copy from the primary');
    } else {
      // StaleEpoch (a map moving) and the like: the next pass looks again.
      this.host.log.debug({ key, secondary, status: reply.status }, 'the secondary did not give its digest');
      return;
    }
    const chunk = Buffer.allocUnsafe(this.host.store.chunkBytes);
    await this.host.store.read(key, 0, chunk);
    const put = await peer.request(SdsOp.Put, encodeIo(args, chunk), { epoch, timeoutMs: mirrorTimeoutMs });
    if (put.status !== SdsStatus.Ok) {
      this.host.log.warn({ key, secondary, status: put.status, problem: put.payload.toString() }, 'replacing the secondary copy failed; the next pass tries again');
      return;
    }
    // A bad secondary copy is rewritten whole: every block of it counts as repaired.
    if (reply.status === SdsStatus.Corrupt) this.host.store.integrity.repairedBlocks += digests.length;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      timer.unref();
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = () => {
        this.wake = null;
        done();
      };
    });
  }
}
