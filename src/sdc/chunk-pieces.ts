// How a volume request is cut into chunk pieces, and which placement group (and so which
// SDS) each piece goes to. The one place this is done: the SDC's volume backend and the
// tests that talk to SDSs directly both use it.
//
//   volume bytes  |---- chunk 0 ----|---- chunk 1 ----|---- chunk 2 ----|
//   request             [=========================]
//   pieces              [ piece 0  ][    piece 1    ][p2]
//                        atBytes 0   atBytes a1       atBytes a2
//
// A piece never crosses a chunk boundary; its offset is within its chunk.

import { placementGroupOf, type PlacementMap } from '../wire/placement.js';
import type { IoArgs } from '../wire/sds-ops.js';

/** What the splitting needs to know of a volume. */
export interface ChunkedVolume {
  poolId: string;
  vtreeId: string;
  chunkBytes: number;
  /** The head generation its IO names (docs/snapshots.md); 0, the base, when absent. */
  generation?: number;
}

export interface Piece {
  /** Addresses the piece on an SDS; pgIndex is 0 until routed. */
  args: IoArgs;
  /** Offset of the piece in the request. */
  atBytes: number;
}

/** The chunk pieces of `lengthBytes` at `offsetBytes` of a volume, in order. */
export function chunkPieces(volume: ChunkedVolume, offsetBytes: number, lengthBytes: number, flags = 0): Piece[] {
  const chunkBytes = volume.chunkBytes;
  const pieces: Piece[] = [];
  for (let atBytes = 0; atBytes < lengthBytes; ) {
    const volumeOffsetBytes = offsetBytes + atBytes;
    const chunkIndex = Math.floor(volumeOffsetBytes / chunkBytes);
    const inChunkBytes = volumeOffsetBytes - chunkIndex * chunkBytes;
    const pieceBytes = Math.min(chunkBytes - inChunkBytes, lengthBytes - atBytes);
    pieces.push({
      args: { poolId: volume.poolId, vtreeId: volume.vtreeId, pgIndex: 0, chunkIndex, generation: volume.generation ?? 0, offsetBytes: inChunkBytes, lengthBytes: pieceBytes, flags },
      atBytes,
    });
    atBytes += pieceBytes;
  }
  return pieces;
}

export type RouteResult =
  | { ok: true; pgIndex: number; primary: string; group: PlacementMap['pools'][string]['groups'][number] }
  | { ok: false; problem: string };

/** The placement group of a piece in `map`, and the SDS that is its primary there. */
export function routePiece(map: PlacementMap, args: Pick<IoArgs, 'poolId' | 'vtreeId' | 'chunkIndex'>): RouteResult {
  const pool = map.pools[args.poolId];
  if (pool === undefined) return { ok: false, problem: `pool ${args.poolId} is not in map epoch ${map.epoch}` };
  const pgIndex = placementGroupOf(args.vtreeId, args.chunkIndex, pool.groups.length);
  const group = pool.groups[pgIndex];
  if (group === undefined) return { ok: false, problem: `group ${pgIndex} is missing` };
  return { ok: true, pgIndex, primary: group.primary, group };
}
