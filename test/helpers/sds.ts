// Real SDS processes for tests, and a small client that speaks the SDS wire ops to them
// with an explicit placement map (the MDM's job once it exists).

import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { pino } from 'pino';
import { WirePeer, type PeerRole, type WireReply, type WireResponse } from '../../src/wire/peer.js';
import type { PlacementMap } from '../../src/wire/placement.js';
import { SdsOp, SdsStatus, encodeIo, type IoArgs, type SdsStats } from '../../src/wire/sds-ops.js';
import { startMeshblock, type DaemonHandle, type TeardownHost } from './processes.js';
import { chunkPieces, routePiece } from '../../src/sdc/chunk-pieces.js';

export const testClusterId = 'c0ffee00c0ffee00';
export const testSecret = 'a test cluster secret, long enough';
export const testPoolId = '00000000000000a1';
export const MiB = 1024 * 1024;

/** `meshblock sds start --io` (docs/direct-io.md): O_DIRECT, the page cache, or direct where the device allows. */
export type SdsIoMode = 'auto' | 'direct' | 'buffered';

export interface SdsHandle extends DaemonHandle {
  name: string;
  sdsId: string;
  address: string;
  dataDir: string;
  /** The devices it was started on, and the --io it was given (none: the SDS's default): a restart reuses both. */
  devices: string[];
  io?: SdsIoMode;
}

export function writeSecret(dir: string, secret = testSecret): string {
  const file = path.join(dir, 'cluster.secret');
  fs.writeFileSync(file, `${secret}\n`, { mode: 0o600 });
  return file;
}

/**
 * Starts `meshblock sds start` on 127.0.0.1 (port 0 unless `listen` is given), with
 * `--io` when `io` is given (without it the SDS picks its default).
 */
export async function startSds(
  t: TeardownHost,
  options: { dir: string; name: string; devices: string[]; listen?: string; extraArgs?: string[]; clusterId?: string; secretFile?: string; netns?: string; io?: SdsIoMode },
): Promise<SdsHandle> {
  const dataDir = path.join(options.dir, `${options.name}-data`);
  const args = [
    'sds', 'start',
    '--name', options.name,
    '--device', options.devices.join(','),
    '--listen', options.listen ?? '127.0.0.1:0',
    '--data-dir', dataDir,
    '--cluster-id', options.clusterId ?? testClusterId,
    '--secret-file', options.secretFile ?? writeSecret(options.dir),
    ...(options.io !== undefined ? ['--io', options.io] : []),
    ...(options.extraArgs ?? []),
  ];
  const daemon = await startMeshblock(t, args, { ready: /^sds (\S+) \(([0-9a-f]{16})\) of cluster [0-9a-f]{16} listening on (\S+) with/m, ...(options.netns !== undefined ? { netns: options.netns } : {}) });
  return { ...daemon, name: options.name, sdsId: daemon.ready[2] as string, address: daemon.ready[3] as string, dataDir, devices: options.devices, ...(options.io !== undefined ? { io: options.io } : {}) };
}

const quietLog = pino({ level: 'silent' });

/** A plain TCP connection to `address` (HOST:PORT), destroyed in teardown. */
export async function connectSocket(t: TeardownHost, address: string): Promise<net.Socket> {
  const [host, port] = address.split(/:(?=\d+$)/) as [string, string];
  const socket = net.connect({ host, port: Number(port) });
  t.teardown(() => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return socket;
}

/** An authenticated wire connection to `address`, closed in teardown. */
export async function connectWire(
  t: TeardownHost,
  address: string,
  options: { role?: PeerRole; secret?: string; clusterId?: string; socket?: net.Socket } = {},
): Promise<WirePeer> {
  const socket = options.socket ?? (await connectSocket(t, address));
  const peer = await WirePeer.connect(socket, {
    clusterId: options.clusterId ?? testClusterId,
    secret: Buffer.from(options.secret ?? testSecret),
    role: options.role ?? 'test',
    name: 'tap',
    log: quietLog,
  });
  t.teardown(() => peer.destroy());
  return peer;
}

/**
 * A map with one pool of `pgCount` groups over `sds`: group i has primary sds[i % n] and
 * secondary sds[(i + 1) % n] (none with one SDS, or when `mirrored` is false).
 */
export function makeMap(epoch: number, sds: Array<Pick<SdsHandle, 'sdsId' | 'address'>>, options: { pgCount?: number; chunkBytes?: number; mirrored?: boolean } = {}): PlacementMap {
  const pgCount = options.pgCount ?? 64;
  const mirrored = (options.mirrored ?? true) && sds.length > 1;
  return {
    epoch,
    sds: Object.fromEntries(sds.map((entry) => [entry.sdsId, { address: entry.address }])),
    pools: {
      [testPoolId]: {
        chunkBytes: options.chunkBytes ?? MiB,
        groups: Array.from({ length: pgCount }, (_, index) => ({
          primary: (sds[index % sds.length] as SdsHandle).sdsId,
          secondary: mirrored ? (sds[(index + 1) % sds.length] as SdsHandle).sdsId : null,
        })),
      },
    },
  };
}

export async function setMap(peer: WirePeer, map: PlacementMap): Promise<WireResponse> {
  return peer.request(SdsOp.SetMap, Buffer.from(JSON.stringify(map)));
}

export async function getStats(peer: WirePeer): Promise<SdsStats> {
  const response = await peer.request(SdsOp.Stats, Buffer.alloc(0));
  if (response.status !== SdsStatus.Ok) throw new Error(`stats failed: ${response.status}`);
  return JSON.parse(response.payload.toString()) as SdsStats;
}

/**
 * Routes volume IO to the primaries of a map, one connection per SDS: the essentials of
 * what the SDC will do (split at chunk boundaries, stamp the epoch, fan out).
 */
export class TestVolumeClient {
  constructor(
    readonly map: PlacementMap,
    readonly peers: Map<string, WirePeer>,
    readonly vtreeId: string,
    readonly poolId = testPoolId,
  ) {}

  private get pool(): PlacementMap['pools'][string] {
    const pool = this.map.pools[this.poolId];
    if (pool === undefined) throw new Error('pool not in map');
    return pool;
  }

  /** Chunk-sized pieces of a volume range (the SDC's own splitting), each with its primary. */
  pieces(offsetBytes: number, lengthBytes: number, flags = 0): Array<{ args: IoArgs; primary: string; at: number }> {
    const volume = { poolId: this.poolId, vtreeId: this.vtreeId, chunkBytes: this.pool.chunkBytes };
    return chunkPieces(volume, offsetBytes, lengthBytes, flags).map((piece) => {
      const route = routePiece(this.map, piece.args);
      if (!route.ok) throw new Error(route.problem);
      return { args: { ...piece.args, pgIndex: route.pgIndex }, primary: route.primary, at: piece.atBytes };
    });
  }

  private peer(sdsId: string): WirePeer {
    const peer = this.peers.get(sdsId);
    if (peer === undefined) throw new Error(`no connection to ${sdsId}`);
    return peer;
  }

  async write(offsetBytes: number, data: Buffer, flags = 0): Promise<void> {
    await Promise.all(
      this.pieces(offsetBytes, data.length, flags).map(async (piece) => {
        const response = await this.peer(piece.primary).request(SdsOp.Write, encodeIo(piece.args, data.subarray(piece.at, piece.at + piece.args.lengthBytes)), { epoch: this.map.epoch });
        expectOk(response, 'write');
      }),
    );
  }

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    const target = Buffer.alloc(lengthBytes);
    await Promise.all(
      this.pieces(offsetBytes, lengthBytes).map(async (piece) => {
        const response = await this.peer(piece.primary).request(SdsOp.Read, encodeIo(piece.args), { epoch: this.map.epoch });
        expectOk(response, 'read');
        response.payload.copy(target, piece.at);
      }),
    );
    return target;
  }

  async trim(offsetBytes: number, lengthBytes: number): Promise<void> {
    await Promise.all(
      this.pieces(offsetBytes, lengthBytes).map(async (piece) => expectOk(await this.peer(piece.primary).request(SdsOp.Trim, encodeIo(piece.args), { epoch: this.map.epoch }), 'trim')),
    );
  }

  async flush(): Promise<void> {
    await Promise.all([...this.peers.values()].map(async (peer) => expectOk(await peer.request(SdsOp.Flush, Buffer.alloc(0)), 'flush')));
  }
}

export class SdsReplyError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function expectOk(response: WireResponse, what: string): void {
  if (response.status !== SdsStatus.Ok) throw new SdsReplyError(response.status, `${what} failed with status ${response.status}: ${response.payload.toString()}`);
}

/**
 * Listens on 127.0.0.1 as a wire peer of `role` (a stand-in MDM or SDS for an SDC under
 * test); every peer and socket is closed at teardown. Returns HOST:PORT.
 */
export async function listenWire(
  t: TeardownHost,
  role: 'mdm' | 'sds',
  onPeer: (peer: WirePeer) => void,
  onRequest: (op: number, epoch: number, payload: Buffer) => WireReply | Promise<WireReply>,
): Promise<string> {
  const peers: WirePeer[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    WirePeer.accept(socket, { clusterId: testClusterId, secret: Buffer.from(testSecret), role, name: role, log: quietLog, onRequest: async (request) => onRequest(request.op, request.epoch, request.payload) }).then(
      (peer) => {
        peers.push(peer);
        onPeer(peer);
      },
      () => undefined,
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    // Whatever the order of teardowns, a reconnecting SDC must not keep the server open.
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const peer of peers) peer.destroy();
    for (const socket of sockets) socket.destroy();
    return closed;
  });
  return `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}
