// A device that loses power on command, for the chunk store's DeviceIo seam
// (src/sds/device-io.ts), in the spirit of TigerBeetle's simulated storage
// (src/testing/storage.zig) and of Linux's dm-log-writes with replay.
//
// Fault model. The bytes live in a real (sparse) file, but nothing reaches the file until it
// is made durable:
//   - write, zero and discard append to a pending list (discard is a zero, as a punched hole
//     in a file is; a block device's discard may keep old bytes, which is no more dangerous
//     to a store that never counts on it);
//   - a read sees the file with every pending change overlaid in issue order, as the page
//     cache would show it;
//   - sync() makes durable everything issued before the call: when it resolves, that prefix
//     of the pending list is written to the file (a real fdatasync may carry more; the
//     later writes stay at risk here, the harsher choice);
//   - cut(random) is the power cut: a random subset of the pending changes, in random order,
//     each torn at 512-byte sectors (every sector of it independently kept or dropped), is
//     written to the file; then every call on the device, and every call still in flight,
//     rejects with an EIO-coded error, which the chunk store takes as a failed device.
// A change is torn only at sector boundaries, never inside a sector: disks promise atomic
// sector writes, and the store's 64-byte slot entries count on it. Sectors are 512 bytes of
// the device (aligned to its offsets), so a 64-byte entry is kept or dropped whole.
//
// Calls complete after a random number of event-loop turns (0 to latencyTurnsMax), so that
// operations in flight interleave, and all file IO is synchronous: given the same random
// stream the same calls complete in the same order, and a seeded test replays exactly.

import * as fs from 'node:fs';
import { ShortReadError } from '../../src/common/positional-io.js';
import type { DeviceIo, DeviceIoFactory } from '../../src/sds/device-io.js';

export const sectorBytes = 512;

type Change = { kind: 'write'; sequence: number; positionBytes: number; data: Buffer } | { kind: 'zero'; sequence: number; positionBytes: number; lengthBytes: number };

export interface CutSummary {
  /** Changes that were pending (issued and not covered by a completed sync) at the cut. */
  pendingCount: number;
  /** Of them, the ones that left at least one sector on the device. */
  landedCount: number;
  sectorsPending: number;
  sectorsLanded: number;
}

export interface PowerLossOptions {
  /** Uniform in [0, 1): latencies (and nothing else; cut() takes its own). */
  random: () => number;
  /** Each call completes after 0 to this many event-loop turns. */
  latencyTurnsMax?: number;
}

function powerCutError(what: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`simulated power cut: ${what} on a device that lost power`), { code: 'EIO', errno: -5 });
}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** One device's state: the file, the pending changes, and whether the power is off. */
class SimulatedDevice {
  private readonly pending: Change[] = [];
  private nextSequence = 1;
  dead = false;

  constructor(
    readonly fd: number,
    private readonly storage: PowerLossStorage,
  ) {}

  io(): DeviceIo {
    return {
      read: (target, positionBytes) => this.call('read', () => this.read(target, positionBytes)),
      write: (source, positionBytes) => this.issue('write', { kind: 'write', sequence: this.nextSequence++, positionBytes, data: Buffer.from(source) }),
      zero: (positionBytes, lengthBytes) => this.issue('zero', { kind: 'zero', sequence: this.nextSequence++, positionBytes, lengthBytes }),
      discard: (positionBytes, lengthBytes) => this.issue('discard', { kind: 'zero', sequence: this.nextSequence++, positionBytes, lengthBytes }),
      sync: () => {
        if (this.dead) return Promise.reject(powerCutError('sync'));
        // Everything issued before the call, and nothing after it.
        const coveredSequence = this.nextSequence - 1;
        return this.call('sync', () => this.applyDurable(coveredSequence));
      },
    };
  }

  /** Adds a change to the pending list at issue, so that reads see it at once; completes later. */
  private issue(what: string, change: Change): Promise<void> {
    if (this.dead) return Promise.reject(powerCutError(what));
    this.pending.push(change);
    return this.call(what, () => undefined);
  }

  private async call(what: string, body: () => void): Promise<void> {
    if (this.dead) throw powerCutError(what);
    const turns = Math.floor(this.storage.random() * (this.storage.latencyTurnsMax + 1));
    for (let turn = 0; turn < turns; turn++) await nextTurn();
    if (this.dead) throw powerCutError(what);
    body();
  }

  private read(target: Buffer, positionBytes: number): void {
    const bytesRead = fs.readSync(this.fd, target, 0, target.length, positionBytes);
    if (bytesRead < target.length) throw new ShortReadError(`simulated device: short read at ${positionBytes + bytesRead}: end of file`);
    const end = positionBytes + target.length;
    for (const change of this.pending) {
      const length = change.kind === 'write' ? change.data.length : change.lengthBytes;
      const from = Math.max(positionBytes, change.positionBytes);
      const to = Math.min(end, change.positionBytes + length);
      if (from >= to) continue;
      if (change.kind === 'write') change.data.copy(target, from - positionBytes, from - change.positionBytes, to - change.positionBytes);
      else target.fill(0, from - positionBytes, to - positionBytes);
    }
  }

  /** Writes the pending changes up to `coveredSequence` to the file, in order. */
  private applyDurable(coveredSequence: number): void {
    let count = 0;
    while (count < this.pending.length && (this.pending[count] as Change).sequence <= coveredSequence) count += 1;
    for (const change of this.pending.splice(0, count)) this.applyWhole(change);
  }

  private applyWhole(change: Change): void {
    if (change.kind === 'write') writeAll(this.fd, change.data, change.positionBytes);
    else writeAll(this.fd, this.storage.zeros(change.lengthBytes), change.positionBytes);
  }

  cut(random: () => number, summary: CutSummary): void {
    this.dead = true;
    const changes = this.pending.splice(0);
    // Fisher-Yates: the order the disk happened to write them in.
    for (let index = changes.length - 1; index > 0; index--) {
      const other = Math.floor(random() * (index + 1));
      [changes[index], changes[other]] = [changes[other] as Change, changes[index] as Change];
    }
    summary.pendingCount += changes.length;
    for (const change of changes) {
      const lengthBytes = change.kind === 'write' ? change.data.length : change.lengthBytes;
      const end = change.positionBytes + lengthBytes;
      let landed = false;
      // Each device sector the change touches, clipped to the change.
      for (let sectorStart = Math.floor(change.positionBytes / sectorBytes) * sectorBytes; sectorStart < end; sectorStart += sectorBytes) {
        const from = Math.max(sectorStart, change.positionBytes);
        const to = Math.min(end, sectorStart + sectorBytes);
        summary.sectorsPending += 1;
        if (random() < 0.5) continue;
        landed = true;
        summary.sectorsLanded += 1;
        const bytes = change.kind === 'write' ? change.data.subarray(from - change.positionBytes, to - change.positionBytes) : this.storage.zeros(to - from);
        writeAll(this.fd, bytes, from);
      }
      if (landed) summary.landedCount += 1;
    }
  }
}

function writeAll(fd: number, data: Buffer, positionBytes: number): void {
  let done = 0;
  while (done < data.length) done += fs.writeSync(fd, data, done, data.length - done, positionBytes + done);
}

/**
 * The simulated storage under one chunk store: `factory` goes into ChunkStoreOptions.deviceIo,
 * `cut()` pulls the plug on every device it made. One instance per power-on: after a cut,
 * a reopened store gets a new one over the same files.
 */
export class PowerLossStorage {
  readonly random: () => number;
  readonly latencyTurnsMax: number;
  private readonly devices: SimulatedDevice[] = [];
  private zeroBuffer = Buffer.alloc(0);

  constructor(options: PowerLossOptions) {
    this.random = options.random;
    this.latencyTurnsMax = options.latencyTurnsMax ?? 3;
  }

  readonly factory: DeviceIoFactory = (opened) => this.open(opened.fd);

  /** The simulated device over an open file descriptor (what the factory gives the store). */
  open(fd: number): DeviceIo {
    const device = new SimulatedDevice(fd, this);
    this.devices.push(device);
    return device.io();
  }

  get isCut(): boolean {
    return this.devices.some((device) => device.dead);
  }

  /** The power cut (header): some of what was pending lands, torn; the devices are gone. */
  cut(random: () => number): CutSummary {
    const summary: CutSummary = { pendingCount: 0, landedCount: 0, sectorsPending: 0, sectorsLanded: 0 };
    for (const device of this.devices) device.cut(random, summary);
    return summary;
  }

  /** A read-only all-zero view of at least `lengthBytes`. */
  zeros(lengthBytes: number): Buffer {
    if (this.zeroBuffer.length < lengthBytes) this.zeroBuffer = Buffer.alloc(lengthBytes);
    return this.zeroBuffer.subarray(0, lengthBytes);
  }
}
