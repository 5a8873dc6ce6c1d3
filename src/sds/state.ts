// What an SDS keeps in its data directory besides the devices: its identity, the last
// placement map it was given (so it serves from it after a restart, before the MDM is back),
// thick reservations and the devices the MDM added. (Rebuild cursors have a file of their
// own, rebuild-cursors.ts: they change every few chunks.) One JSON file, replaced
// atomically (write a temporary file, fsync, rename, fsync the directory), so a crash leaves
// either the old state or the new one.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { replaceFileDurably } from '../common/durable-file.js';
import { MeshblockError } from '../common/errors.js';
import { parsePlacementMap, type PlacementMap } from '../wire/placement.js';

export interface SdsState {
  clusterId: string;
  sdsId: string;
  name: string;
  chunkBytes: number;
  map: PlacementMap | null;
  reservations: Record<string, number>;
  /**
   * Rebuild cursors as data dirs written before rebuild-cursors.json held them: read at
   * start when that file is absent, never written again (the service drops the field).
   */
  rebuildCursors?: Record<string, string>;
  /** Devices added by the MDM at run time, opened again at every start. */
  devicePaths: string[];
}

export class StateError extends MeshblockError {}

const stateFileName = 'sds-state.json';

export function loadState(dataDir: string): SdsState | null {
  return readStateFile(path.join(dataDir, stateFileName), (parsed) => {
    const state = parsed as SdsState;
    return { ...state, map: state.map === null ? null : parsePlacementMap(state.map), rebuildCursors: state.rebuildCursors ?? {}, devicePaths: state.devicePaths ?? [] };
  });
}

/**
 * A JSON file of a data directory, checked by `parse`: null if there is none; a file that
 * cannot be read is MB_ERR_STATE_READ, one that is not JSON or that `parse` throws on is
 * MB_ERR_STATE_DAMAGED, both naming the file.
 */
export function readStateFile<T>(file: string, parse: (parsed: unknown) => T): T | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new StateError('MB_ERR_STATE_READ', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return parse(JSON.parse(text));
  } catch (err) {
    throw new StateError('MB_ERR_STATE_DAMAGED', `${file} is damaged: ${(err as Error).message}`, { cause: err });
  }
}

export function saveState(dataDir: string, state: SdsState): void {
  replaceFileDurably(path.join(dataDir, stateFileName), JSON.stringify(state, null, 1));
}
