// The rules of SDS shards (docs/cores.md) that both `sds start --shards` (cli/sds-shards.ts)
// and the installer (hostsetup/installer.ts, `install --sds-shards`) follow: the counts asked
// for, how many by default, and their names.

import { InvalidArgumentError } from './errors.js';
import { nameBytesMax, sdsShardsMax } from './limits.js';

/** A shard count as asked for: a count, or `auto` (autoShardCount decides). */
export type ShardCountRequest = number | 'auto';

/** Reads `flag`'s value: `auto`, or a count from 1 to sdsShardsMax. */
export function parseShardCount(flag: string, text: string): ShardCountRequest {
  if (text === 'auto') return 'auto';
  if (!/^[0-9]+$/.test(text) || Number(text) < 1 || Number(text) > sdsShardsMax) {
    throw new InvalidArgumentError(flag, `must be auto or a count from 1 to ${sdsShardsMax}, not '${text}'`);
  }
  return Number(text);
}

/**
 * `--shards auto`: half the host's cores for storage (the rest for VMs and the SDC), at most
 * one shard per device when the devices are known (`devices` null: the MDM adds them later),
 * at least one, at most sdsShardsMax.
 */
export function autoShardCount(cores: number, devices: number | null): number {
  const byCores = Math.floor(cores / 2);
  return Math.max(1, Math.min(byCores, devices ?? byCores, sdsShardsMax));
}

/** Shard k (1..N) of SDS `name` registers as NAME.k. */
export function shardName(name: string, shard: number): string {
  return `${name}.${shard}`;
}

/** The last shard's name when it is longer than a name may be (nameBytesMax), else null. */
export function shardNameTooLong(name: string, shards: number): string | null {
  const longest = shardName(name, shards);
  return Buffer.byteLength(longest) > nameBytesMax ? longest : null;
}
