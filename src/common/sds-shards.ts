// The two rules of SDS shards (docs/cores.md) that both `sds start --shards` (cli/sds-shards.ts)
// and the installer (hostsetup/installer.ts) follow: how many by default, and their names.

import { sdsShardsMax } from './limits.js';

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
