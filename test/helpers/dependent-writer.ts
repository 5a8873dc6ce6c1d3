// Dependent writes across volumes, to check that a group snapshot is one crash point
// (docs/snapshots.md, "The barrier"): every write names, for each volume of the group, how
// many of that volume's writes had completed (the completed prefix) when it was issued. A
// set of snapshots is a prefix-consistent cut if, for every write it holds, it also holds
// every write that write depended on; writes completed before the snapshot call began are
// all in it, and writes issued after it returned are not.
//
// Each volume has its own log of records, 1, 2, 3, ... (seq), written `depth` at a time
// over one NBD connection. Record seq of volume v lands in block perm_v(seq - 1) of the
// region, a seeded permutation, so that a run spreads over every chunk and so over every
// SDS: a barrier that missed one primary shows up. A record is one block:
//
//   +0   magic 'MBDEPW01' (u64)
//   +8   seed (u32)          another run's record is recognised as such
//   +12  volume index (u32)  its volume in the group
//   +16  seq (u32)           1 for the volume's first write
//   +20  volume count (u32)
//   +24  crc32c (u32)        of the block with this field zero: a torn record is caught
//   +28  reserved, zero (u32)
//   +32  deps: u32 per volume, that volume's completed prefix when this record was issued
//   ...  filler: mulberry32 words seeded from (seed, volume, seq)
//
// Blocks never written read as zeros: no record.

import { crc32c } from '../../src/common/crc32c.js';
import { mulberry32Uint32 } from '../../src/common/seeded-random.js';
import * as P from '../../src/nbd/protocol.js';
import { RawNbd } from './raw-nbd.js';

const recordMagic = 0x4d42444550573031n; // 'MBDEPW01'
const crcOffsetBytes = 24;
const depsOffsetBytes = 32;
export const recordBlockBytes = 4096;

export interface DependentWriterOptions {
  host: string;
  port: number;
  /** The volumes' export names, in group order. */
  volumes: readonly string[];
  /** Records each volume's log may hold (its region is this many blocks). */
  recordCountMax: number;
  /** Where the region starts in each volume (a multiple of the block size): runs on one volume use distinct regions. */
  regionOffsetBytes?: number;
  /** Writes in flight per volume. */
  depth: number;
  seed: number;
}

/** Where the writers were at a moment: per volume, the completed prefix and the records issued. */
export interface WriterMark {
  completedPrefix: number[];
  issued: number[];
}

export interface WriterStats {
  /** Records acknowledged, per volume. */
  acked: number[];
  /** NBD error replies (the SDC must hide a barrier from clients: expected zero). */
  ioErrors: number;
  firstError: string | null;
}

/** The permutation of a volume's region: record seq lands in block blockOf[seq - 1]. */
export function recordBlocks(seed: number, volumeIndex: number, recordCountMax: number): Uint32Array {
  const blocks = new Uint32Array(recordCountMax);
  for (let index = 0; index < recordCountMax; index++) blocks[index] = index;
  const next = mulberry32Uint32((seed ^ Math.imul(volumeIndex + 1, 0x9e3779b9)) >>> 0);
  for (let index = recordCountMax - 1; index > 0; index--) {
    const other = next() % (index + 1);
    const swap = blocks[index] as number;
    blocks[index] = blocks[other] as number;
    blocks[other] = swap;
  }
  return blocks;
}

/** The bytes of one record. */
export function encodeRecord(seed: number, volumeIndex: number, seq: number, deps: readonly number[]): Buffer {
  const block = Buffer.alloc(recordBlockBytes);
  block.writeBigUInt64BE(recordMagic, 0);
  block.writeUInt32BE(seed >>> 0, 8);
  block.writeUInt32BE(volumeIndex, 12);
  block.writeUInt32BE(seq, 16);
  block.writeUInt32BE(deps.length, 20);
  deps.forEach((dep, index) => block.writeUInt32BE(dep, depsOffsetBytes + 4 * index));
  const next = mulberry32Uint32((seed ^ Math.imul(volumeIndex + 1, 0x85ebca6b) ^ Math.imul(seq, 0xc2b2ae35)) >>> 0);
  for (let at = depsOffsetBytes + 4 * deps.length; at + 4 <= recordBlockBytes; at += 4) block.writeUInt32BE(next(), at);
  block.writeUInt32BE(crc32c(block), crcOffsetBytes);
  return block;
}

export interface LogRecord {
  seq: number;
  deps: number[];
}

/** A block read back: a record of this run and volume, nothing (zeros), or why it is neither. */
export function decodeRecord(block: Buffer, seed: number, volumeIndex: number, volumeCount: number): LogRecord | null | string {
  if (block.every((byte) => byte === 0)) return null;
  if (block.readBigUInt64BE(0) !== recordMagic) return 'not a record (bad magic)';
  if (block.readUInt32BE(8) !== seed >>> 0) return `a record of another run (seed ${block.readUInt32BE(8)})`;
  if (block.readUInt32BE(12) !== volumeIndex) return `a record of volume ${block.readUInt32BE(12)}`;
  if (block.readUInt32BE(20) !== volumeCount) return `a record naming ${block.readUInt32BE(20)} volumes`;
  const crc = block.readUInt32BE(crcOffsetBytes);
  const copy = Buffer.from(block);
  copy.writeUInt32BE(0, crcOffsetBytes);
  if (crc32c(copy) !== crc) return `a torn record (seq ${block.readUInt32BE(16)}, crc mismatch)`;
  const deps: number[] = [];
  for (let index = 0; index < volumeCount; index++) deps.push(block.readUInt32BE(depsOffsetBytes + 4 * index));
  return { seq: block.readUInt32BE(16), deps };
}

/** One volume's writers: `depth` requests in flight on one connection. */
class VolumeLog {
  private readonly ackedSeqs = new Set<number>();
  completedPrefix = 0;
  issued = 0;
  ackedCount = 0;
  private readonly pending = new Map<bigint, (error: number) => void>();
  private nextCookie = 1n;

  constructor(
    readonly nbd: RawNbd,
    readonly volumeIndex: number,
    private readonly blocks: Uint32Array,
    private readonly regionOffsetBytes: number,
  ) {
    void this.readReplies();
  }

  private async readReplies(): Promise<void> {
    for (;;) {
      let reply: { error: number; cookie: bigint };
      try {
        reply = await this.nbd.readSimpleReply(0);
      } catch {
        for (const resolve of this.pending.values()) resolve(-1);
        this.pending.clear();
        return;
      }
      const resolve = this.pending.get(reply.cookie);
      this.pending.delete(reply.cookie);
      resolve?.(reply.error);
    }
  }

  /** Writes record `seq`; resolves with the NBD error (0: done, -1: connection lost). */
  write(seq: number, record: Buffer): Promise<number> {
    const cookie = this.nextCookie++;
    const offset = this.regionOffsetBytes + (this.blocks[seq - 1] as number) * recordBlockBytes;
    return new Promise((resolve) => {
      this.pending.set(cookie, resolve);
      this.nbd.request(P.NBD_CMD_WRITE, { cookie, offset, payload: record });
    });
  }

  acked(seq: number): void {
    this.ackedSeqs.add(seq);
    this.ackedCount += 1;
    while (this.ackedSeqs.has(this.completedPrefix + 1)) {
      this.ackedSeqs.delete(this.completedPrefix + 1);
      this.completedPrefix += 1;
    }
  }
}

export class DependentWriter {
  private readonly logs: VolumeLog[] = [];
  private stopping = false;
  private running: Promise<void> = Promise.resolve();
  private ioErrors = 0;
  private firstError: string | null = null;

  private constructor(private readonly options: DependentWriterOptions) {}

  static async start(options: DependentWriterOptions): Promise<DependentWriter> {
    const writer = new DependentWriter(options);
    for (const [volumeIndex, name] of options.volumes.entries()) {
      const nbd = await RawNbd.connect({ host: options.host, port: options.port });
      const { sizeBytes } = await nbd.go(name);
      const regionOffsetBytes = options.regionOffsetBytes ?? 0;
      const endBytes = regionOffsetBytes + options.recordCountMax * recordBlockBytes;
      if (sizeBytes < endBytes) throw new Error(`export ${name} has ${sizeBytes} bytes, the log needs ${endBytes}`);
      writer.logs.push(new VolumeLog(nbd, volumeIndex, recordBlocks(options.seed, volumeIndex, options.recordCountMax), regionOffsetBytes));
    }
    writer.running = Promise.all(writer.logs.flatMap((log) => Array.from({ length: options.depth }, () => writer.lane(log)))).then(() => undefined);
    return writer;
  }

  /** One of a volume's `depth` lanes: issue the next record, wait for it, again. */
  private async lane(log: VolumeLog): Promise<void> {
    while (!this.stopping && log.issued < this.options.recordCountMax) {
      const seq = ++log.issued;
      const deps = this.logs.map((entry) => entry.completedPrefix);
      const error = await log.write(seq, encodeRecord(this.options.seed, log.volumeIndex, seq, deps));
      if (error === 0) {
        log.acked(seq);
        continue;
      }
      this.ioErrors += 1;
      this.firstError ??= `volume ${this.options.volumes[log.volumeIndex]} record ${seq}: ${error === -1 ? 'connection lost' : `NBD error ${error}`}`;
      if (error === -1) return;
    }
  }

  mark(): WriterMark {
    return { completedPrefix: this.logs.map((log) => log.completedPrefix), issued: this.logs.map((log) => log.issued) };
  }

  stats(): WriterStats {
    return { acked: this.logs.map((log) => log.ackedCount), ioErrors: this.ioErrors, firstError: this.firstError };
  }

  /** Stops issuing, waits for what is in flight, and closes the connections. */
  async stop(): Promise<WriterStats> {
    this.stopping = true;
    await this.running;
    for (const log of this.logs) {
      log.nbd.request(P.NBD_CMD_DISC, { cookie: 0n });
      log.nbd.socket.end();
    }
    // The server hangs up after DISC; a bound, then the sockets go anyway.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(this.logs.map((log) => log.nbd.closed)), new Promise((resolve) => (timer = setTimeout(resolve, 5000)))]);
    clearTimeout(timer);
    for (const log of this.logs) log.nbd.destroy();
    return this.stats();
  }

  /** Drops the connections (teardown): what is in flight ends as lost. */
  destroy(): void {
    this.stopping = true;
    for (const log of this.logs) log.nbd.destroy();
  }
}

/** Reads byteCount bytes at offsetBytes of an export, over one connection. */
export async function readExport(host: string, port: number, name: string, byteCount: number, offsetBytes = 0): Promise<Buffer> {
  const nbd = await RawNbd.connect({ host, port });
  try {
    await nbd.go(name);
    const data = Buffer.alloc(byteCount);
    const stepBytes = 1024 * 1024;
    for (let offset = 0; offset < byteCount; offset += stepBytes) {
      const length = Math.min(stepBytes, byteCount - offset);
      nbd.request(P.NBD_CMD_READ, { cookie: BigInt(offset + 1), offset: offsetBytes + offset, length });
      const reply = await nbd.readSimpleReply(length);
      if (reply.error !== 0) throw new Error(`read of ${name} at ${offsetBytes + offset}: NBD error ${reply.error}`);
      reply.data.copy(data, offset);
    }
    return data;
  } finally {
    nbd.destroy();
  }
}

export interface CutReport {
  /** Records found per volume. */
  found: number[];
  /** Everything wrong, the first few of each kind. */
  violations: string[];
}

/**
 * Checks that `regions` (each volume's log region, read from its snapshot) hold a
 * prefix-consistent cut: every record's dependencies are there, the writes completed before
 * `before` (the call began) are there, and no record issued after `after` (the call
 * returned) is.
 */
export function checkCut(regions: readonly Buffer[], seed: number, recordCountMax: number, before: WriterMark, after: WriterMark): CutReport {
  const violations: string[] = [];
  const note = (text: string): void => {
    if (violations.length < 20) violations.push(text);
  };
  const volumeCount = regions.length;
  const present = regions.map(() => new Set<number>());
  const records: LogRecord[][] = regions.map(() => []);
  regions.forEach((region, volumeIndex) => {
    const blocks = recordBlocks(seed, volumeIndex, recordCountMax);
    const seqOfBlock = new Map<number, number>();
    blocks.forEach((block, index) => seqOfBlock.set(block, index + 1));
    for (let block = 0; block < recordCountMax; block++) {
      const decoded = decodeRecord(region.subarray(block * recordBlockBytes, (block + 1) * recordBlockBytes), seed, volumeIndex, volumeCount);
      if (decoded === null) continue;
      if (typeof decoded === 'string') {
        note(`volume ${volumeIndex} block ${block}: ${decoded}`);
        continue;
      }
      if (seqOfBlock.get(block) !== decoded.seq) {
        note(`volume ${volumeIndex} block ${block}: record ${decoded.seq} belongs in block ${blocks[decoded.seq - 1]}`);
        continue;
      }
      present[volumeIndex]?.add(decoded.seq);
      records[volumeIndex]?.push(decoded);
    }
  });
  const has = (volumeIndex: number, seq: number): boolean => present[volumeIndex]?.has(seq) === true;
  /** The first of 1..upTo missing on a volume, or 0. */
  const firstMissing = (volumeIndex: number, upTo: number): number => {
    for (let seq = 1; seq <= upTo; seq++) if (!has(volumeIndex, seq)) return seq;
    return 0;
  };
  for (let volumeIndex = 0; volumeIndex < volumeCount; volumeIndex++) {
    const missing = firstMissing(volumeIndex, before.completedPrefix[volumeIndex] ?? 0);
    if (missing !== 0) note(`volume ${volumeIndex}: record ${missing} completed before the snapshot began, and is not in it`);
    const issuedAfter = after.issued[volumeIndex] ?? 0;
    const late = [...(present[volumeIndex] ?? [])].filter((seq) => seq > issuedAfter);
    if (late.length > 0) note(`volume ${volumeIndex}: records ${late.slice(0, 5).join(', ')} were issued after the snapshot returned, and are in it`);
  }
  // The closure: checked per volume against the largest dependency, which covers the smaller.
  for (const [volumeIndex, list] of records.entries()) {
    const needed = regions.map(() => ({ upTo: 0, by: 0 }));
    for (const record of list) {
      record.deps.forEach((dep, other) => {
        const entry = needed[other];
        if (entry !== undefined && dep > entry.upTo) {
          entry.upTo = dep;
          entry.by = record.seq;
        }
      });
    }
    needed.forEach(({ upTo, by }, other) => {
      const missing = firstMissing(other, upTo);
      if (missing !== 0) note(`volume ${volumeIndex} record ${by} was issued after volume ${other}'s record ${missing} completed, and is in the snapshots without it`);
    });
  }
  return { found: present.map((set) => set.size), violations };
}
