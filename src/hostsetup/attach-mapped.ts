// `meshblock sdc start --attach-mapped`: every volume mapped to this SDC becomes a kernel block
// device on this host, as ScaleIO's SDC makes /dev/scini* appear, and goes away when it is
// unmapped. The SDC tells this module its mapped volumes after every view it applies
// (setMapped); a reconcile loop, one pass at a time, makes the host match:
//
//   mapped, not attached      attach (hostsetup/nbd-attach.ts: the same nbd-client line as
//                             `meshblock attach`) to this SDC's own NBD export, then the
//                             stable names below
//   attached, not mapped      detach, unless the device is in use (mounted, held by
//                             device-mapper/LVM, or open by a process): then it stays, the log
//                             says so, and the next pass (every attachRetryMs) tries again
//   attached, renamed         only the meshblock-<name> link changes (the kernel connection
//                             keeps the export it opened)
//
// Stable names, made here and not by a udev rule (a XenServer Dom0 or a minimal guest may
// have no udev rule for them, or no udev), relative symlinks as udev makes them:
//
//   /dev/disk/by-id/emc-vol-<system id>-<volume id>        os-brick's ScaleIO connector looks
//                                                          for a name starting "emc-vol" and
//                                                          ending with the volume id
//   /dev/disk/by-id/scsi-emc-vol-<system id>-<volume id>   ScaleIO's XenServer guide's
//                                                          device-config:device=
//   /dev/disk/by-id/meshblock-<volume name>
//
// The ids are the REST API's: the System id is the cluster id, the Volume id the volume's.
//
// Open or not: the MDM refuses an unmap while the SDC reports the volume open. The kernel
// client's own connection does not make a volume open; the device in use on this host does
// (openVolumes below, which the SDC's heartbeat asks). What is in use is found from /proc and
// /sys off the event loop's critical path: refreshed once per pass, read from a cache.
//
// A restart of the SDC: the attachment records (/run/meshblock/attachments) of this SDC's
// address name the devices attached before. A device whose connection died with the old SDC
// cannot take a new connection (netlink nbd-client has no reconfigure), so the pass
// disconnects it and attaches the volume afresh; one still in use stays as it is, logged,
// until its users let go.
//
// A host that cannot attach at all (no nbd kernel module, no /dev/nbdN, no nbd-client: a Dom0
// without the module, a container) loses nothing but the disks: the SDC serves its volumes
// over NBD as without --attach-mapped, one warning says why nothing is attached (again only
// when the reason changes), and attaching is tried again every attachUnavailableRetryMs (each
// try runs modprobe, so not every pass); the first attach that works says so.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { attachRetryMs, attachUnavailableRetryMs } from '../common/limits.js';
import { attach, AttachError, deviceState, nbdDeviceIndexes, readAttachments, sdcLabel, systemAttachPaths, deviceIndexOf, type AttachPaths, type AttachRequest, type Attachment } from './nbd-attach.js';
import { LocalTransport } from './host-transport.js';

/** What the attacher needs of a mapped volume. */
export interface MappedVolume {
  id: string;
  name: string;
}

export interface AttachMappedOptions {
  /** The System id (the cluster id): part of the by-id names. */
  systemId: string;
  /** This SDC's NBD address, as a local client reaches it. */
  sdc: AttachRequest['sdc'];
  paths: AttachPaths;
  /** Where the stable names go: /dev/disk/by-id. */
  byIdDir: string;
  /** Where processes' open files are read from: /proc. */
  procRoot: string;
  timeoutS: number;
  nbdsMax: number;
  log: Logger;
  /** The clock (tests step it); Date.now by default. */
  nowMs?: () => number;
}

export const systemByIdDir = '/dev/disk/by-id';

/** The by-id names of a volume attached here, file names in the by-id directory. */
export function byIdNames(systemId: string, volume: MappedVolume): string[] {
  return [`emc-vol-${systemId}-${volume.id}`, `scsi-emc-vol-${systemId}-${volume.id}`, `meshblock-${volume.name.replaceAll('/', '_')}`];
}

interface Attached {
  volume: MappedVolume;
  device: string;
  index: number;
  /** The by-id names that point at it now. */
  links: string[];
}

export class MappedAttacher {
  private wanted = new Map<string, MappedVolume>();
  private readonly attached = new Map<string, Attached>();
  /** Devices (by index) left by an earlier SDC process, not yet reattached. */
  private readonly stale = new Map<string, Attachment>();
  /** Device indexes found in use by the last pass. */
  private busy = new Set<number>();
  /** Volume ids whose detach was refused (in use): logged once per refusal streak. */
  private readonly refused = new Set<string>();
  private pass: Promise<void> | null = null;
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  /** Why this host cannot attach any volume now, and when to try again; null while it can. */
  private unavailable: { reason: string; retryAtMs: number } | null = null;

  constructor(private readonly options: AttachMappedOptions) {}

  /** Reads what an earlier SDC process on this address left attached, and starts the retry timer. */
  start(): void {
    const label = sdcLabel(this.options.sdc);
    for (const record of readAttachments(this.options.paths)) {
      if (record.sdc !== label) continue;
      this.stale.set(record.volumeId ?? record.volume, record);
    }
    if (this.stale.size > 0) this.options.log.info({ devices: [...this.stale.values()].map((entry) => entry.device) }, 'attachments of an earlier SDC process found');
    this.timer = setInterval(() => this.kick(), attachRetryMs);
    this.timer.unref();
  }

  /** The volumes mapped to this SDC now (after each view). */
  setMapped(volumes: readonly MappedVolume[]): void {
    this.wanted = new Map(volumes.map((volume) => [volume.id, { id: volume.id, name: volume.name }]));
    this.kick();
  }

  /**
   * Which of `connections` (NBD connections per volume id on this SDC) make a volume open, for
   * the heartbeat: any but the kernel client's own, and an attached device in use.
   */
  openVolumes(connections: ReadonlyMap<string, number>): string[] {
    const open = new Set<string>();
    for (const [volumeId, count] of connections) {
      if (count > (this.attached.has(volumeId) ? 1 : 0)) open.add(volumeId);
    }
    for (const [volumeId, entry] of this.attached) if (this.busy.has(entry.index)) open.add(volumeId);
    return [...open];
  }

  /** The volumes attached now: device and by-id names. */
  list(): Array<{ volume: MappedVolume; device: string; links: string[] }> {
    return [...this.attached.values()].map((entry) => ({ volume: entry.volume, device: entry.device, links: entry.links.map((name) => path.join(this.options.byIdDir, name)) }));
  }

  /** Stops reconciling; attached devices stay (a restart reattaches them). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== null) clearInterval(this.timer);
    await this.pass;
  }

  /** Runs a pass now, or one more after the running one. */
  kick(): void {
    if (this.closed) return;
    if (this.pass !== null) {
      this.again = true;
      return;
    }
    this.pass = this.reconcile()
      .catch((err: unknown) => this.options.log.error({ err }, 'attach-mapped pass failed; retrying'))
      .finally(() => {
        this.pass = null;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  /** Resolves once no pass is running or queued (for tests and an orderly stop). */
  async settled(): Promise<void> {
    while (this.pass !== null) await this.pass;
  }

  private async reconcile(): Promise<void> {
    this.busy = await devicesInUse(this.options.paths, this.options.procRoot, [...this.attached.values(), ...this.stale.values()].map((entry) => indexOf(entry.device)));
    for (const [volumeId, entry] of [...this.attached]) {
      if (this.closed) return;
      const next = this.wanted.get(volumeId);
      if (next !== undefined) {
        if (next.name !== entry.volume.name) this.relink(entry, next);
        continue;
      }
      if (this.busy.has(entry.index)) {
        if (!this.refused.has(volumeId)) this.options.log.warn({ volume: entry.volume.name, device: entry.device }, 'volume unmapped but its device is in use here; not detached, retrying until it is released');
        this.refused.add(volumeId);
        continue;
      }
      await this.detach(entry);
      this.refused.delete(volumeId);
      this.attached.delete(volumeId);
    }
    for (const volume of this.wanted.values()) {
      if (this.closed) return;
      if (this.attached.has(volume.id)) continue;
      // Nothing attaches on this host now: the volumes stay served over NBD, tried again later.
      if (this.unavailable !== null && this.now() < this.unavailable.retryAtMs) break;
      const stale = this.stale.get(volume.id) ?? this.stale.get(volume.name);
      if (stale !== undefined) {
        const index = indexOf(stale.device);
        if (this.busy.has(index)) {
          if (!this.refused.has(volume.id)) this.options.log.error({ volume: volume.name, device: stale.device }, 'device of an earlier SDC process is in use; it is reattached once its users let go');
          this.refused.add(volume.id);
          continue;
        }
        this.refused.delete(volume.id);
        await this.disconnect(stale.device);
        this.stale.delete(volume.id);
        this.stale.delete(volume.name);
      }
      if ((await this.attachOne(volume)) === 'unavailable') break;
    }
    // Attached before for a volume no longer mapped: gone once not in use.
    for (const [key, stale] of [...this.stale]) {
      if (this.wanted.has(key) || this.busy.has(indexOf(stale.device))) continue;
      await this.disconnect(stale.device);
      this.stale.delete(key);
    }
  }

  /** Whether attaching is on hold because this host cannot attach (for tests and status). */
  get unavailableReason(): string | null {
    return this.unavailable?.reason ?? null;
  }

  private now(): number {
    return (this.options.nowMs ?? Date.now)();
  }

  private async attachOne(volume: MappedVolume): Promise<'attached' | 'failed' | 'unavailable'> {
    const log = this.options.log.child({ volume: volume.name });
    // Counted as attached from the start: the kernel's connection arrives while nbd-client runs.
    const placeholder: Attached = { volume, device: '', index: -1, links: [] };
    this.attached.set(volume.id, placeholder);
    let attachment: Attachment;
    try {
      attachment = await attach(
        { volume: volume.name, sdc: this.options.sdc, device: undefined, connections: 1, timeoutS: this.options.timeoutS, persist: false, readOnly: false, nbdsMax: this.options.nbdsMax },
        this.options.paths,
        { volumeId: volume.id },
      );
    } catch (err) {
      this.attached.delete(volume.id);
      const reason = hostUnavailableReason(err, this.options.paths);
      if (reason === null) {
        log.error({ err }, 'could not attach the mapped volume; retrying');
        return 'failed';
      }
      const served = `the SDC goes on serving the mapped volumes over NBD at ${sdcLabel(this.options.sdc)}`;
      const message = `this host cannot attach mapped volumes as disks: ${reason}; ${served}; trying again every ${attachUnavailableRetryMs / 1000} s`;
      if (this.unavailable?.reason !== reason) this.options.log.warn({ code: (err as AttachError).code, volumes: [...this.wanted.values()].map((entry) => entry.name) }, message);
      else this.options.log.debug({ code: (err as AttachError).code }, message);
      this.unavailable = { reason, retryAtMs: this.now() + attachUnavailableRetryMs };
      return 'unavailable';
    }
    if (this.unavailable !== null) {
      this.options.log.info({ was: this.unavailable.reason }, 'this host can attach mapped volumes again');
      this.unavailable = null;
    }
    const entry: Attached = { volume, device: attachment.device, index: indexOf(attachment.device), links: [] };
    this.attached.set(volume.id, entry);
    this.link(entry, byIdNames(this.options.systemId, volume));
    log.info({ device: entry.device, links: entry.links }, 'mapped volume attached');
    return 'attached';
  }

  private link(entry: Attached, names: string[]): void {
    fs.mkdirSync(this.options.byIdDir, { recursive: true });
    const target = path.relative(this.options.byIdDir, entry.device);
    for (const name of names) {
      const file = path.join(this.options.byIdDir, name);
      // Replaced atomically: a link left by an earlier process may point at another device.
      const temporary = `${file}.meshblock-tmp`;
      fs.rmSync(temporary, { force: true });
      fs.symlinkSync(target, temporary);
      fs.renameSync(temporary, file);
    }
    entry.links = names;
  }

  private unlink(entry: Attached, names: string[]): void {
    for (const name of names) {
      const file = path.join(this.options.byIdDir, name);
      // Only our own link to this device: never one another attachment made since.
      try {
        if (path.resolve(this.options.byIdDir, fs.readlinkSync(file)) === entry.device) fs.rmSync(file);
      } catch {
        // Gone already.
      }
    }
  }

  private relink(entry: Attached, volume: MappedVolume): void {
    const before = entry.links;
    const after = byIdNames(this.options.systemId, volume);
    this.unlink(entry, before.filter((name) => !after.includes(name)));
    entry.volume = volume;
    this.link(entry, after);
    this.options.log.info({ volume: volume.name, device: entry.device }, 'attached volume renamed: names updated');
  }

  private async detach(entry: Attached): Promise<void> {
    this.unlink(entry, entry.links);
    await this.disconnect(entry.device);
    this.options.log.info({ volume: entry.volume.name, device: entry.device }, 'unmapped volume detached');
  }

  /** nbd-client -d (when the device is still configured) and the attachment record removed. */
  private async disconnect(device: string): Promise<void> {
    const index = indexOf(device);
    const state = deviceState(this.options.paths, index);
    if (state !== null && (state.sizeBytes > 0 || state.pid !== null)) {
      const result = await localHost.run('nbd-client', ['-d', device]);
      if (result.code !== 0) this.options.log.error({ device, stderr: result.stderr.trim() }, 'nbd-client -d failed');
    }
    fs.rmSync(path.join(this.options.paths.stateDir, `nbd${index}.json`), { force: true });
  }
}

const localHost = new LocalTransport();

/**
 * Why no volume can be attached on this host, from an attach's error: no nbd module, no
 * /dev/nbdN at all, no nbd-client or modprobe; null when the error is this volume's own (or
 * every device is taken, which a detach may end).
 */
export function hostUnavailableReason(err: unknown, paths: AttachPaths): string | null {
  if (!(err instanceof AttachError)) return null;
  switch (err.code) {
    case 'MB_ERR_NBD_MODULE':
    case 'MB_ERR_ATTACH_TOOL':
      return err.message;
    case 'MB_ERR_NO_DEVICE':
      if (nbdDeviceIndexes(paths).length > 0) return null;
      return fs.existsSync(path.join(paths.sysRoot, 'module', 'nbd'))
        ? `the nbd kernel module is loaded but made no /dev/nbdN (${path.join(paths.sysRoot, 'block')} has no nbd devices: nbds_max=0?)`
        : `the nbd kernel module is not loaded and there is no /dev/nbdN (modprobe nbd returned, yet ${path.join(paths.sysRoot, 'module', 'nbd')} is absent: no such module for this kernel?)`;
    default:
      return null;
  }
}

function indexOf(device: string): number {
  return deviceIndexOf(device);
}

/**
 * Which of the NBD devices `indexes` are in use on this host: a holder in /sys (device-mapper,
 * LVM, md) on the device or a partition of it, a mount of it (/proc/self/mountinfo's
 * major:minor), or a process with it open (/proc/PID/fd, as fuser looks).
 */
export async function devicesInUse(paths: AttachPaths, procRoot: string, indexes: readonly number[]): Promise<Set<number>> {
  const busy = new Set<number>();
  const wanted = indexes.filter((index) => index >= 0);
  if (wanted.length === 0) return busy;
  const names = new Map<string, number>();
  for (const index of wanted) {
    const base = `nbd${index}`;
    names.set(path.join(paths.devRoot, base), index);
    const sysDir = path.join(paths.sysRoot, 'block', base);
    let entries: string[] = [];
    try {
      entries = await fs.promises.readdir(sysDir);
    } catch {
      continue;
    }
    for (const part of [base, ...entries.filter((name) => name.startsWith(`${base}p`))]) {
      names.set(path.join(paths.devRoot, part), index);
      const holders = path.join(part === base ? sysDir : path.join(sysDir, part), 'holders');
      try {
        if ((await fs.promises.readdir(holders)).length > 0) busy.add(index);
      } catch {
        // No holders directory: none.
      }
      try {
        const dev = (await fs.promises.readFile(path.join(part === base ? sysDir : path.join(sysDir, part), 'dev'), 'utf8')).trim();
        const mountinfo = await fs.promises.readFile(path.join(procRoot, 'self', 'mountinfo'), 'utf8');
        if (mountinfo.split('\n').some((line) => line.split(' ')[2] === dev)) busy.add(index);
      } catch {
        // No dev number (a test's fake /sys) or no mountinfo: the other checks decide.
      }
    }
  }
  let pids: string[] = [];
  try {
    pids = (await fs.promises.readdir(procRoot)).filter((name) => /^[0-9]+$/.test(name));
  } catch {
    return busy;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = await fs.promises.readdir(path.join(procRoot, pid, 'fd'));
    } catch {
      continue;
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = await fs.promises.readlink(path.join(procRoot, pid, 'fd', fd));
      } catch {
        continue;
      }
      const index = names.get(target);
      if (index !== undefined) busy.add(index);
    }
  }
  return busy;
}

export const systemAttachMapped = { paths: systemAttachPaths, byIdDir: systemByIdDir, procRoot: '/proc' };
