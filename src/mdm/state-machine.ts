// The MDM's state machine: every change to the system is a command applied here, and
// nothing else changes the model. It reads no clock and opens no socket: time comes in on
// the command (`nowMs`), ids are derived from the cluster id and a counter, and placement
// is a pure function, so replaying the journal's commands rebuilds the same state, and a
// seeded simulation can drive it (TigerBeetle's rule: state machines do no I/O).
//
// Commands are validated here (names, ranges, references, capacity); a refused command
// throws MdmError and changes nothing: validation happens before the first mutation.

import { createHash } from 'node:crypto';
import { MeshblockError } from '../common/errors.js';
import { GiB, MiB, formatBytes } from '../common/units.js';
import { pgCountMax, type PlacementMap } from '../wire/placement.js';
import { emptyModel, type AccessMode, type Device, type Id, type Mapping, type StoragePool, type SystemModel, type Volume, type VolumeType } from './model.js';
import { planPlacement, type PlannerDevice } from './placement-planner.js';

/** A refused command: `code` is stable, `httpStatus` is what the REST API answers. */
export class MdmError extends MeshblockError {
  constructor(
    code: string,
    message: string,
    readonly httpStatus: number,
  ) {
    super(code, message);
  }
}

export const nameBytesMax = 31;
const namePattern = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
export const sparePercentDefault = 10;
export const volumeGranularityBytesDefault = 8 * GiB;
export const pgCountDefault = 4096;

export type Command =
  | { type: 'addProtectionDomain'; name: string }
  | { type: 'renameProtectionDomain'; id: Id; name: string }
  | { type: 'removeProtectionDomain'; id: Id }
  | { type: 'addStoragePool'; protectionDomainId: Id; name: string; chunkBytes?: number; sparePercent?: number; zeroPadding?: boolean; volumeGranularityBytes?: number; pgCount?: number }
  | { type: 'renameStoragePool'; id: Id; name: string }
  | { type: 'setStoragePoolSpare'; id: Id; sparePercent: number }
  | { type: 'removeStoragePool'; id: Id }
  | { type: 'addFaultSet'; protectionDomainId: Id; name: string }
  | { type: 'removeFaultSet'; id: Id }
  | { type: 'registerSds'; sdsId: Id; name: string; address: string; nowMs: number }
  | { type: 'addSds'; sdsId: Id; protectionDomainId: Id; faultSetId: Id | null }
  | { type: 'renameSds'; id: Id; name: string }
  | { type: 'removeSds'; id: Id }
  | { type: 'addDevice'; deviceId: Id; sdsId: Id; storagePoolId: Id; path: string; name: string | null; capacityBytes: number }
  | { type: 'removeDevice'; id: Id }
  | { type: 'registerSdc'; guid: string; name: string | null; nowMs: number }
  | { type: 'renameSdc'; id: Id; name: string }
  | { type: 'removeSdc'; id: Id }
  | { type: 'addVolume'; storagePoolId: Id; name: string; sizeBytes: number; volumeType: VolumeType; nowMs: number }
  | { type: 'renameVolume'; id: Id; name: string }
  | { type: 'setVolumeSize'; id: Id; sizeBytes: number }
  | { type: 'removeVolume'; id: Id }
  | { type: 'addMappedSdc'; volumeId: Id; sdcId: Id; accessMode: AccessMode; allowMultipleMappings: boolean }
  | { type: 'removeMappedSdc'; volumeId: Id; sdcId: Id }
  | { type: 'setMappedSdcLimits'; volumeId: Id; sdcId: Id; iopsLimit: number; bandwidthLimitKbps: number };

/** What a command created, when it created something. */
export interface Applied {
  id?: Id;
  epochChanged: boolean;
  /** Copies placed on a device that did not hold them: the primary must copy them there. */
  moves?: CopyMove[];
}

export interface CopyMove {
  poolId: Id;
  pgIndex: number;
  /** The SDS holding the group's data (its primary), and the one receiving a copy. */
  sourceSdsId: Id;
  targetSdsId: Id;
}

export interface PoolCapacity {
  rawBytes: number;
  spareBytes: number;
  /** Net capacity for volume data (two copies): (raw - spare) / 2. */
  usableBytes: number;
  thickReservedBytes: number;
  thinProvisionedBytes: number;
  /** Net bytes of chunks written, from the SDSs' reports (half the raw bytes in use). */
  inUseBytes: number;
  /** Raw bytes in use in groups that have both copies. */
  protectedBytes: number;
  /** Raw bytes in use in groups running on one copy. */
  degradedBytes: number;
  /** Raw bytes on failed devices (no copy readable there). */
  failedBytes: number;
  /** Raw bytes neither spare, in use, nor reserved for thick volumes. */
  unusedBytes: number;
}

export class StateMachine {
  constructor(readonly model: SystemModel) {}

  static create(clusterId: Id, name: string): StateMachine {
    return new StateMachine(emptyModel(clusterId, name));
  }

  apply(command: Command): Applied {
    const model = this.model;
    switch (command.type) {
      case 'addProtectionDomain': {
        this.checkName('name', command.name);
        this.unique(Object.values(model.protectionDomains), command.name, 'protection domain');
        const id = this.newId();
        model.protectionDomains[id] = { id, name: command.name };
        return { id, epochChanged: false };
      }
      case 'renameProtectionDomain': {
        const domain = this.get(model.protectionDomains, command.id, 'protection domain');
        this.checkName('name', command.name);
        this.unique(Object.values(model.protectionDomains).filter((entry) => entry.id !== domain.id), command.name, 'protection domain');
        domain.name = command.name;
        return { epochChanged: false };
      }
      case 'removeProtectionDomain': {
        this.get(model.protectionDomains, command.id, 'protection domain');
        const inUse = [
          ...Object.values(model.storagePools).filter((pool) => pool.protectionDomainId === command.id).map((pool) => `storage pool '${pool.name}'`),
          ...Object.values(model.sdss).filter((sds) => sds.protectionDomainId === command.id).map((sds) => `SDS '${sds.name}'`),
          ...Object.values(model.faultSets).filter((set) => set.protectionDomainId === command.id).map((set) => `fault set '${set.name}'`),
        ];
        if (inUse.length > 0) throw conflict('MB_ERR_NOT_EMPTY', `the protection domain still holds ${inUse.join(', ')}`);
        delete model.protectionDomains[command.id];
        return { epochChanged: false };
      }
      case 'addStoragePool': {
        this.get(model.protectionDomains, command.protectionDomainId, 'protection domain');
        this.checkName('name', command.name);
        this.unique(Object.values(model.storagePools).filter((pool) => pool.protectionDomainId === command.protectionDomainId), command.name, 'storage pool in this protection domain');
        const chunkBytes = command.chunkBytes ?? MiB;
        if (!isPowerOfTwo(chunkBytes) || chunkBytes < 64 * 1024 || chunkBytes > 64 * MiB) throw invalid('chunkBytes', 'must be a power of two from 64 KiB to 64 MiB');
        const sparePercent = command.sparePercent ?? sparePercentDefault;
        if (!Number.isInteger(sparePercent) || sparePercent < 0 || sparePercent > 90) throw invalid('sparePercent', 'must be an integer from 0 to 90');
        const volumeGranularityBytes = command.volumeGranularityBytes ?? volumeGranularityBytesDefault;
        if (!Number.isSafeInteger(volumeGranularityBytes) || volumeGranularityBytes < chunkBytes || volumeGranularityBytes % chunkBytes !== 0) {
          throw invalid('volumeGranularityBytes', `must be a multiple of the chunk size (${chunkBytes})`);
        }
        const pgCount = command.pgCount ?? pgCountDefault;
        if (!isPowerOfTwo(pgCount) || pgCount < 16 || pgCount > pgCountMax) throw invalid('pgCount', `must be a power of two from 16 to ${pgCountMax}`);
        const id = this.newId();
        model.storagePools[id] = {
          id,
          name: command.name,
          protectionDomainId: command.protectionDomainId,
          chunkBytes,
          sparePercent,
          zeroPadding: command.zeroPadding ?? true,
          volumeGranularityBytes,
          pgCount,
          groups: [],
        };
        return { id, epochChanged: false };
      }
      case 'renameStoragePool': {
        const pool = this.get(model.storagePools, command.id, 'storage pool');
        this.checkName('name', command.name);
        this.unique(Object.values(model.storagePools).filter((entry) => entry.protectionDomainId === pool.protectionDomainId && entry.id !== pool.id), command.name, 'storage pool in this protection domain');
        pool.name = command.name;
        return { epochChanged: false };
      }
      case 'setStoragePoolSpare': {
        const pool = this.get(model.storagePools, command.id, 'storage pool');
        if (!Number.isInteger(command.sparePercent) || command.sparePercent < 0 || command.sparePercent > 90) throw invalid('sparePercent', 'must be an integer from 0 to 90');
        const capacity = this.poolCapacity(pool.id, { sparePercent: command.sparePercent });
        this.checkFits(capacity, 0, 'raising the spare');
        pool.sparePercent = command.sparePercent;
        return { epochChanged: false };
      }
      case 'removeStoragePool': {
        const pool = this.get(model.storagePools, command.id, 'storage pool');
        const devices = this.poolDevices(pool.id);
        const volumes = Object.values(model.volumes).filter((volume) => volume.storagePoolId === pool.id);
        if (devices.length > 0 || volumes.length > 0) throw conflict('MB_ERR_NOT_EMPTY', `storage pool '${pool.name}' still has ${devices.length} device(s) and ${volumes.length} volume(s)`);
        delete model.storagePools[pool.id];
        return { epochChanged: false };
      }
      case 'addFaultSet': {
        this.get(model.protectionDomains, command.protectionDomainId, 'protection domain');
        this.checkName('name', command.name);
        this.unique(Object.values(model.faultSets).filter((set) => set.protectionDomainId === command.protectionDomainId), command.name, 'fault set in this protection domain');
        const id = this.newId();
        model.faultSets[id] = { id, name: command.name, protectionDomainId: command.protectionDomainId };
        return { id, epochChanged: false };
      }
      case 'removeFaultSet': {
        const set = this.get(model.faultSets, command.id, 'fault set');
        const members = Object.values(model.sdss).filter((sds) => sds.faultSetId === set.id);
        if (members.length > 0) throw conflict('MB_ERR_NOT_EMPTY', `fault set '${set.name}' still holds SDS ${members.map((sds) => `'${sds.name}'`).join(', ')}`);
        delete model.faultSets[set.id];
        return { epochChanged: false };
      }
      case 'registerSds': {
        this.checkName('name', command.name);
        const existing = model.sdss[command.sdsId];
        const clash = Object.values(model.sdss).find((sds) => sds.name === command.name && sds.id !== command.sdsId);
        if (clash !== undefined) throw conflict('MB_ERR_NAME_TAKEN', `an SDS named '${command.name}' is already registered (id ${clash.id})`);
        if (existing === undefined) {
          model.sdss[command.sdsId] = { id: command.sdsId, name: command.name, protectionDomainId: null, faultSetId: null, address: command.address, state: 'connected', lastHeartbeatMs: command.nowMs };
          return { id: command.sdsId, epochChanged: false };
        }
        const moved = existing.address !== command.address;
        existing.name = command.name;
        existing.address = command.address;
        existing.state = 'connected';
        existing.lastHeartbeatMs = command.nowMs;
        if (moved && this.sdsInUse(existing.id)) model.epoch += 1;
        return { id: existing.id, epochChanged: moved };
      }
      case 'addSds': {
        const sds = this.get(model.sdss, command.sdsId, 'SDS');
        this.get(model.protectionDomains, command.protectionDomainId, 'protection domain');
        if (sds.protectionDomainId !== null && sds.protectionDomainId !== command.protectionDomainId) {
          throw conflict('MB_ERR_SDS_ASSIGNED', `SDS '${sds.name}' already belongs to another protection domain`);
        }
        if (command.faultSetId !== null) {
          const set = this.get(model.faultSets, command.faultSetId, 'fault set');
          if (set.protectionDomainId !== command.protectionDomainId) throw invalid('faultSetId', `fault set '${set.name}' is in another protection domain`);
          if (this.sdsDevices(sds.id).length > 0 && sds.faultSetId !== command.faultSetId) throw conflict('MB_ERR_SDS_IN_USE', `SDS '${sds.name}' has devices; remove them before changing its fault set`);
        }
        sds.protectionDomainId = command.protectionDomainId;
        sds.faultSetId = command.faultSetId;
        return { id: sds.id, epochChanged: false };
      }
      case 'renameSds': {
        const sds = this.get(model.sdss, command.id, 'SDS');
        this.checkName('name', command.name);
        this.unique(Object.values(model.sdss).filter((entry) => entry.id !== sds.id), command.name, 'SDS');
        sds.name = command.name;
        return { epochChanged: false };
      }
      case 'removeSds': {
        const sds = this.get(model.sdss, command.id, 'SDS');
        const devices = this.sdsDevices(sds.id);
        if (devices.length > 0) throw conflict('MB_ERR_SDS_IN_USE', `SDS '${sds.name}' still has ${devices.length} device(s); remove them first`);
        delete model.sdss[sds.id];
        return { epochChanged: false };
      }
      case 'addDevice': {
        const sds = this.get(model.sdss, command.sdsId, 'SDS');
        const pool = this.get(model.storagePools, command.storagePoolId, 'storage pool');
        if (sds.protectionDomainId !== pool.protectionDomainId) throw invalid('storagePoolId', `SDS '${sds.name}' is not in the storage pool's protection domain`);
        if (model.devices[command.deviceId] !== undefined) throw conflict('MB_ERR_DEVICE_EXISTS', `device ${command.deviceId} is already in the system`);
        if (this.sdsDevices(sds.id).some((device) => device.path === command.path)) throw conflict('MB_ERR_DEVICE_EXISTS', `SDS '${sds.name}' already has a device at ${command.path}`);
        if (!Number.isSafeInteger(command.capacityBytes) || command.capacityBytes < pool.chunkBytes) throw invalid('capacityBytes', 'must hold at least one chunk');
        const taken = new Set(this.sdsDevices(sds.id).map((device) => device.name));
        let name = command.name;
        if (name === null) {
          // ScaleIO device names are optional; ours default to '<sds>-d<n>', unique on the SDS.
          let index = 1;
          while (taken.has(`${sds.name.slice(0, nameBytesMax - 6)}-d${index}`)) index += 1;
          name = `${sds.name.slice(0, nameBytesMax - 6)}-d${index}`;
        } else {
          this.checkName('name', name);
          if (taken.has(name)) throw conflict('MB_ERR_NAME_TAKEN', `SDS '${sds.name}' already has a device named '${name}'`);
        }
        const device: Device = { id: command.deviceId, name, sdsId: sds.id, storagePoolId: pool.id, path: command.path, capacityBytes: command.capacityBytes, state: 'normal', usedBytes: 0 };
        const moves = this.replan(pool, [...this.poolDevices(pool.id), device], device);
        model.devices[device.id] = device;
        return { id: device.id, epochChanged: true, moves };
      }
      case 'removeDevice': {
        const device = this.get(model.devices, command.id, 'device');
        const pool = this.get(model.storagePools, device.storagePoolId, 'storage pool');
        if (device.usedBytes > 0) {
          throw conflict('MB_ERR_DEVICE_IN_USE', `device '${device.name}' holds ${formatBytes(device.usedBytes)} of data; moving it away first comes with rebalance`);
        }
        const remaining = this.poolDevices(pool.id).filter((entry) => entry.id !== device.id);
        const capacity = this.poolCapacity(pool.id, { devices: remaining });
        this.checkFits(capacity, 0, `removing device '${device.name}'`);
        if (remaining.length === 0 && Object.values(model.volumes).some((volume) => volume.storagePoolId === pool.id)) {
          throw conflict('MB_ERR_POOL_IN_USE', `device '${device.name}' is the last one of a pool that has volumes`);
        }
        const moves = this.replan(pool, remaining, null);
        delete model.devices[device.id];
        return { epochChanged: true, moves };
      }
      case 'registerSdc': {
        if (typeof command.guid !== 'string' || command.guid.length < 8 || command.guid.length > 64) throw invalid('guid', 'must be 8 to 64 characters');
        const existing = Object.values(model.sdcs).find((sdc) => sdc.guid === command.guid);
        const name = command.name ?? existing?.name ?? `sdc-${command.guid.slice(0, 8)}`;
        this.checkName('name', name);
        this.unique(Object.values(model.sdcs).filter((sdc) => sdc.guid !== command.guid), name, 'SDC');
        if (existing !== undefined) {
          existing.name = name;
          existing.state = 'connected';
          existing.lastSeenMs = command.nowMs;
          return { id: existing.id, epochChanged: false };
        }
        const id = this.newId();
        model.sdcs[id] = { id, guid: command.guid, name, state: 'connected', lastSeenMs: command.nowMs };
        return { id, epochChanged: false };
      }
      case 'renameSdc': {
        const sdc = this.get(model.sdcs, command.id, 'SDC');
        this.checkName('name', command.name);
        this.unique(Object.values(model.sdcs).filter((entry) => entry.id !== sdc.id), command.name, 'SDC');
        sdc.name = command.name;
        return { epochChanged: false };
      }
      case 'removeSdc': {
        const sdc = this.get(model.sdcs, command.id, 'SDC');
        const mapped = Object.values(model.volumes).filter((volume) => volume.mappings.some((mapping) => mapping.sdcId === sdc.id));
        if (mapped.length > 0) throw conflict('MB_ERR_SDC_MAPPED', `SDC '${sdc.name}' still has volume(s) ${mapped.map((volume) => `'${volume.name}'`).join(', ')} mapped`);
        delete model.sdcs[sdc.id];
        return { epochChanged: false };
      }
      case 'addVolume': {
        const pool = this.get(model.storagePools, command.storagePoolId, 'storage pool');
        this.checkName('name', command.name);
        this.unique(Object.values(model.volumes), command.name, 'volume');
        if (command.volumeType !== 'ThinProvisioned' && command.volumeType !== 'ThickProvisioned') throw invalid('volumeType', "must be 'ThinProvisioned' or 'ThickProvisioned'");
        const sizeBytes = this.roundVolumeSize(pool, command.sizeBytes);
        if (command.volumeType === 'ThickProvisioned') this.checkFits(this.poolCapacity(pool.id), sizeBytes, `a ${formatBytes(sizeBytes)} thick volume`);
        if (pool.groups.length === 0) throw conflict('MB_ERR_POOL_NOT_READY', `storage pool '${pool.name}' needs devices on at least two SDSs (fault sets) before it can hold volumes`);
        const id = this.newId();
        const volume: Volume = { id, name: command.name, storagePoolId: pool.id, vtreeId: this.newId(), sizeBytes, volumeType: command.volumeType, mappings: [], creationTimeMs: command.nowMs };
        model.volumes[id] = volume;
        return { id, epochChanged: false };
      }
      case 'renameVolume': {
        const volume = this.get(model.volumes, command.id, 'volume');
        this.checkName('name', command.name);
        this.unique(Object.values(model.volumes).filter((entry) => entry.id !== volume.id), command.name, 'volume');
        volume.name = command.name;
        return { epochChanged: false };
      }
      case 'setVolumeSize': {
        const volume = this.get(model.volumes, command.id, 'volume');
        const pool = this.get(model.storagePools, volume.storagePoolId, 'storage pool');
        const sizeBytes = this.roundVolumeSize(pool, command.sizeBytes);
        if (sizeBytes < volume.sizeBytes) throw invalid('sizeBytes', `volumes only grow (from ${formatBytes(volume.sizeBytes)}); shrinking would destroy data`);
        if (volume.volumeType === 'ThickProvisioned') this.checkFits(this.poolCapacity(pool.id), sizeBytes - volume.sizeBytes, `growing thick volume '${volume.name}'`);
        volume.sizeBytes = sizeBytes;
        return { epochChanged: false };
      }
      case 'removeVolume': {
        const volume = this.get(model.volumes, command.id, 'volume');
        if (volume.mappings.length > 0) {
          throw conflict('MB_ERR_VOLUME_MAPPED', `volume '${volume.name}' is mapped to ${volume.mappings.length} SDC(s); unmap it first`);
        }
        delete model.volumes[volume.id];
        return { epochChanged: false };
      }
      case 'addMappedSdc': {
        const volume = this.get(model.volumes, command.volumeId, 'volume');
        const sdc = this.get(model.sdcs, command.sdcId, 'SDC');
        if (command.accessMode !== 'ReadWrite' && command.accessMode !== 'ReadOnly') throw invalid('accessMode', "must be 'ReadWrite' or 'ReadOnly'");
        if (volume.mappings.some((mapping) => mapping.sdcId === sdc.id)) throw conflict('MB_ERR_ALREADY_MAPPED', `volume '${volume.name}' is already mapped to SDC '${sdc.name}'`);
        if (volume.mappings.length > 0 && !command.allowMultipleMappings) {
          throw conflict('MB_ERR_MULTIPLE_MAPPINGS', `volume '${volume.name}' is already mapped to another SDC; pass allowMultipleMappings to share it`);
        }
        volume.mappings.push({ sdcId: sdc.id, accessMode: command.accessMode, iopsLimit: 0, bandwidthLimitKbps: 0 });
        return { epochChanged: false };
      }
      case 'removeMappedSdc': {
        const volume = this.get(model.volumes, command.volumeId, 'volume');
        const at = volume.mappings.findIndex((mapping) => mapping.sdcId === command.sdcId);
        if (at === -1) throw notFound(`volume '${volume.name}' is not mapped to SDC ${command.sdcId}`);
        volume.mappings.splice(at, 1);
        return { epochChanged: false };
      }
      case 'setMappedSdcLimits': {
        const volume = this.get(model.volumes, command.volumeId, 'volume');
        const mapping: Mapping | undefined = volume.mappings.find((entry) => entry.sdcId === command.sdcId);
        if (mapping === undefined) throw notFound(`volume '${volume.name}' is not mapped to SDC ${command.sdcId}`);
        for (const [field, value] of [['iopsLimit', command.iopsLimit], ['bandwidthLimitKbps', command.bandwidthLimitKbps]] as const) {
          if (!Number.isSafeInteger(value) || value < 0) throw invalid(field, 'must be a non-negative integer (0 = unlimited)');
        }
        if (command.iopsLimit > 0 && command.iopsLimit < 11) throw invalid('iopsLimit', 'must be 0 (unlimited) or at least 11, as in ScaleIO');
        mapping.iopsLimit = command.iopsLimit;
        mapping.bandwidthLimitKbps = command.bandwidthLimitKbps;
        return { epochChanged: false };
      }
    }
  }

  // --- queries -------------------------------------------------------------------------

  poolDevices(poolId: Id): Device[] {
    return Object.values(this.model.devices).filter((device) => device.storagePoolId === poolId);
  }

  sdsDevices(sdsId: Id): Device[] {
    return Object.values(this.model.devices).filter((device) => device.sdsId === sdsId);
  }

  private sdsInUse(sdsId: Id): boolean {
    return this.sdsDevices(sdsId).length > 0;
  }

  /** Capacity of a pool, optionally as it would be with other devices or another spare. */
  poolCapacity(poolId: Id, what: { devices?: Device[]; sparePercent?: number } = {}): PoolCapacity {
    const pool = this.get(this.model.storagePools, poolId, 'storage pool');
    const devices = what.devices ?? this.poolDevices(poolId);
    const healthy = devices.filter((device) => device.state === 'normal');
    const rawBytes = healthy.reduce((sum, device) => sum + device.capacityBytes, 0);
    const spareBytes = Math.ceil((rawBytes * (what.sparePercent ?? pool.sparePercent)) / 100);
    const volumes = Object.values(this.model.volumes).filter((volume) => volume.storagePoolId === poolId);
    const thickReservedBytes = volumes.filter((volume) => volume.volumeType === 'ThickProvisioned').reduce((sum, volume) => sum + volume.sizeBytes, 0);
    const thinProvisionedBytes = volumes.filter((volume) => volume.volumeType === 'ThinProvisioned').reduce((sum, volume) => sum + volume.sizeBytes, 0);
    const usedRawBytes = healthy.reduce((sum, device) => sum + device.usedBytes, 0);
    const degradedGroups = new Map<Id, number>();
    for (const group of pool.groups) {
      if (group.secondaryDevice === null) degradedGroups.set(group.primaryDevice, (degradedGroups.get(group.primaryDevice) ?? 0) + 1);
    }
    const copiesPerDevice = new Map<Id, number>();
    for (const group of pool.groups) {
      copiesPerDevice.set(group.primaryDevice, (copiesPerDevice.get(group.primaryDevice) ?? 0) + 1);
      if (group.secondaryDevice !== null) copiesPerDevice.set(group.secondaryDevice, (copiesPerDevice.get(group.secondaryDevice) ?? 0) + 1);
    }
    // Per-group usage is not reported yet: a device's bytes are split evenly over its groups.
    let degradedBytes = 0;
    for (const device of healthy) {
      const degraded = degradedGroups.get(device.id) ?? 0;
      const copies = copiesPerDevice.get(device.id) ?? 0;
      if (degraded > 0 && copies > 0) degradedBytes += Math.round((device.usedBytes * degraded) / copies);
    }
    const failedBytes = devices.filter((device) => device.state === 'failed').reduce((sum, device) => sum + device.usedBytes, 0);
    const usableBytes = Math.floor((rawBytes - spareBytes) / 2);
    return {
      rawBytes,
      spareBytes,
      usableBytes,
      thickReservedBytes,
      thinProvisionedBytes,
      inUseBytes: Math.floor(usedRawBytes / 2),
      protectedBytes: usedRawBytes - degradedBytes,
      degradedBytes,
      failedBytes,
      unusedBytes: Math.max(0, rawBytes - spareBytes - usedRawBytes - 2 * thickReservedBytes),
    };
  }

  /** The placement map every SDS and SDC works from. */
  placementMap(): PlacementMap {
    const sds: PlacementMap['sds'] = {};
    const pools: PlacementMap['pools'] = {};
    for (const pool of Object.values(this.model.storagePools)) {
      if (pool.groups.length === 0) continue;
      pools[pool.id] = {
        chunkBytes: pool.chunkBytes,
        groups: pool.groups.map((group) => {
          const primary = this.model.devices[group.primaryDevice] as Device;
          const secondary = group.secondaryDevice === null ? null : (this.model.devices[group.secondaryDevice] as Device);
          for (const device of [primary, secondary]) {
            if (device !== null) sds[device.sdsId] = { address: (this.model.sdss[device.sdsId] as { address: string }).address };
          }
          return {
            primary: primary.sdsId,
            secondary: secondary?.sdsId ?? null,
            primaryDevice: primary.id,
            ...(secondary !== null ? { secondaryDevice: secondary.id } : {}),
          };
        }),
      };
    }
    return { epoch: this.model.epoch, sds, pools };
  }

  // --- helpers -------------------------------------------------------------------------

  /** Plans the pool again; returns the copies that must be filled from their primaries. */
  private replan(pool: StoragePool, devices: Device[], added: Device | null): CopyMove[] {
    const plannerDevices: PlannerDevice[] = devices.map((device) => {
      const sds = this.model.sdss[device.sdsId];
      return { deviceId: device.id, sdsId: device.sdsId, faultSetId: sds?.faultSetId ?? null, capacityBytes: device.capacityBytes, state: device.state };
    });
    // Two copies need two SDSs (two fault sets where the pool has them): until the pool's
    // devices span two, it holds no groups and takes no volumes.
    const domains = new Set(plannerDevices.map((device) => device.faultSetId ?? device.sdsId));
    if (domains.size < 2) {
      if (pool.groups.length > 0 && Object.values(this.model.volumes).some((volume) => volume.storagePoolId === pool.id)) {
        throw conflict('MB_ERR_POOL_IN_USE', `storage pool '${pool.name}' has volumes; its devices must stay on at least two SDSs (fault sets)`);
      }
      pool.groups = [];
      this.model.epoch += 1;
      return [];
    }
    let planned;
    try {
      // A pool without volumes holds no data, so nothing is worth keeping in place: plan it
      // afresh, which also spreads primaries (reads) over every device, new ones included.
      const holdsData = Object.values(this.model.volumes).some((volume) => volume.storagePoolId === pool.id);
      planned = planPlacement({ pgCount: pool.pgCount, devices: plannerDevices, previous: pool.groups.length > 0 && holdsData ? pool.groups : null });
    } catch (err) {
      throw conflict('MB_ERR_PLACEMENT', `cannot place storage pool '${pool.name}': ${(err as Error).message}`);
    }
    const previous = pool.groups;
    pool.groups = planned.groups.map((group) => ({ primaryDevice: group.primaryDevice, secondaryDevice: group.secondaryDevice }));
    this.model.epoch += 1;
    // A copy new to its device starts empty; where the pool has volumes, it must be filled.
    const sdsOf = (deviceId: Id): Id | undefined => (deviceId === added?.id ? added.sdsId : this.model.devices[deviceId]?.sdsId);
    const moves: CopyMove[] = [];
    if (previous.length === 0 || !Object.values(this.model.volumes).some((volume) => volume.storagePoolId === pool.id)) return moves;
    pool.groups.forEach((group, pgIndex) => {
      const before = previous[pgIndex];
      if (before === undefined || group.secondaryDevice === null) return;
      if (group.secondaryDevice === before.primaryDevice || group.secondaryDevice === before.secondaryDevice) return;
      const sourceSdsId = sdsOf(group.primaryDevice);
      const targetSdsId = sdsOf(group.secondaryDevice);
      if (sourceSdsId !== undefined && targetSdsId !== undefined) moves.push({ poolId: pool.id, pgIndex, sourceSdsId, targetSdsId });
    });
    return moves;
  }

  private roundVolumeSize(pool: StoragePool, sizeBytes: number): number {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw invalid('sizeBytes', 'must be a positive whole number of bytes');
    const rounded = Math.ceil(sizeBytes / pool.volumeGranularityBytes) * pool.volumeGranularityBytes;
    if (rounded / pool.chunkBytes > 0xffffffff) throw invalid('sizeBytes', 'too many chunks for one volume');
    return rounded;
  }

  private checkFits(capacity: PoolCapacity, extraThickBytes: number, what: string): void {
    const needed = capacity.thickReservedBytes + extraThickBytes + Math.max(0, capacity.inUseBytes - capacity.thickReservedBytes);
    if (needed > capacity.usableBytes) {
      throw new MdmError(
        'MB_ERR_INSUFFICIENT_CAPACITY',
        `${what} does not fit: ${formatBytes(needed)} needed, ${formatBytes(capacity.usableBytes)} usable after the ${formatBytes(capacity.spareBytes)} spare`,
        409,
      );
    }
  }

  private newId(): Id {
    this.model.idCounter += 1;
    return createHash('sha256').update(`${this.model.clusterId}/${this.model.idCounter}`).digest('hex').slice(0, 16);
  }

  private get<T>(table: Record<Id, T>, id: Id, what: string): T {
    const entry = typeof id === 'string' ? table[id] : undefined;
    if (entry === undefined) throw notFound(`no ${what} with id ${String(id)}`);
    return entry;
  }

  private checkName(field: string, name: string): void {
    if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) > nameBytesMax || !namePattern.test(name)) {
      throw invalid(field, `must be 1 to ${nameBytesMax} letters, digits, '_', '.' or '-', starting with a letter or digit`);
    }
  }

  private unique(entries: Array<{ name: string }>, name: string, what: string): void {
    if (entries.some((entry) => entry.name === name)) throw conflict('MB_ERR_NAME_TAKEN', `a ${what} named '${name}' already exists`);
  }

  /** Finds an object by id or by name, the way the CLI lets users name things. */
  find<T extends { id: Id; name: string }>(table: Record<Id, T>, idOrName: string, what: string): T {
    const byId = table[idOrName];
    if (byId !== undefined) return byId;
    const byName = Object.values(table).filter((entry) => entry.name === idOrName);
    if (byName.length === 1) return byName[0] as T;
    if (byName.length > 1) throw conflict('MB_ERR_AMBIGUOUS', `${byName.length} ${what}s are named '${idOrName}'; use the id`);
    throw notFound(`no ${what} with id or name '${idOrName}'`);
  }
}

function isPowerOfTwo(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0 && (value & (value - 1)) === 0;
}

export function invalid(field: string, message: string): MdmError {
  return new MdmError('MB_ERR_INVALID_ARGUMENT', `${field}: ${message}`, 400);
}

export function notFound(message: string): MdmError {
  return new MdmError('MB_ERR_NOT_FOUND', message, 404);
}

export function conflict(code: string, message: string): MdmError {
  return new MdmError(code, message, 409);
}

export type { PoolGroup } from './model.js';
