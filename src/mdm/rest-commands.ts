// REST bodies to state-machine commands: POST /api/types/{Type}/instances and
// POST /api/instances/{Type}::{id}/action/{action}. Every body is read in full and checked
// (types, units, unknown fields) before the controller is called, and the state machine
// checks the rest before its first change, so a refused request changes nothing.
//
// The state machine names fields in its own terms (sizeBytes, sparePercent); each command
// here says how those map to the REST field the client sent, so that every 400 names a
// field of the request.

import { GiB, KiB, MiB } from '../common/units.js';
import type { MdmController } from './controller.js';
import type { Id } from './model.js';
import { BodyReader, checkName } from './rest-body.js';
import { RestError } from './rest-errors.js';
import type { RestType } from './rest-objects.js';
import { MdmError, type Applied, type Command } from './state-machine.js';
import { pgCountMax } from '../common/limits.js';

const sizeInKbMax = Math.floor(Number.MAX_SAFE_INTEGER / KiB);
const countMax = Number.MAX_SAFE_INTEGER;

export interface CommandContext {
  controller: MdmController;
  nowMs: () => number;
}

/** Field names of the state machine → the REST field they came from. */
type FieldNames = Readonly<Record<string, string>>;

async function execute(context: CommandContext, command: Command, fieldNames: FieldNames = {}): Promise<Applied> {
  try {
    return await context.controller.execute(command);
  } catch (err) {
    throw renameField(err, fieldNames);
  }
}

function renameField(err: unknown, fieldNames: FieldNames): unknown {
  if (!(err instanceof MdmError) || err.code !== 'MB_ERR_INVALID_ARGUMENT') return err;
  const match = /^([A-Za-z]+): /.exec(err.message);
  const restField = match === null ? undefined : fieldNames[match[1] as string];
  if (match === null || restField === undefined) return err;
  return new MdmError(err.code, `${restField}: ${err.message.slice(match[0].length)}`, err.httpStatus);
}

/** POST /api/types/{Type}/instances → the new object's id. */
export async function createInstance(context: CommandContext, type: RestType, body: unknown): Promise<{ id: Id }> {
  const reader = new BodyReader(body);
  const model = context.controller.state.model;
  switch (type) {
    case 'ProtectionDomain': {
      const name = reader.name('name');
      reader.finish();
      return created(await execute(context, { type: 'addProtectionDomain', name }));
    }
    case 'StoragePool': {
      const protectionDomainId = reader.id('protectionDomainId');
      const name = reader.name('name');
      const sparePercent = reader.integer('sparePercentage', { min: 0, max: 100 }, false);
      const zeroPadding = reader.boolean('zeroPaddingEnabled', false);
      const chunkSizeInKb = reader.integer('chunkSizeInKb', { min: 1, max: sizeInKbMax }, false);
      const granularityInGb = reader.integer('volumeGranularityInGb', { min: 1, max: Math.floor(Number.MAX_SAFE_INTEGER / GiB) }, false);
      const granularityInMb = reader.integer('volumeGranularityInMb', { min: 1, max: Math.floor(Number.MAX_SAFE_INTEGER / MiB) }, false);
      const pgCount = reader.integer('pgCount', { min: 1, max: pgCountMax }, false);
      reader.finish();
      if (granularityInGb !== undefined && granularityInMb !== undefined) {
        throw invalidField('volumeGranularityInMb', 'give volumeGranularityInGb or volumeGranularityInMb, not both');
      }
      const granularityField = granularityInMb !== undefined ? 'volumeGranularityInMb' : 'volumeGranularityInGb';
      const command: Command = {
        type: 'addStoragePool',
        protectionDomainId,
        name,
        ...(sparePercent !== undefined ? { sparePercent } : {}),
        ...(zeroPadding !== undefined ? { zeroPadding } : {}),
        ...(chunkSizeInKb !== undefined ? { chunkBytes: chunkSizeInKb * KiB } : {}),
        ...(granularityInGb !== undefined ? { volumeGranularityBytes: granularityInGb * GiB } : {}),
        ...(granularityInMb !== undefined ? { volumeGranularityBytes: granularityInMb * MiB } : {}),
        ...(pgCount !== undefined ? { pgCount } : {}),
      };
      return created(await execute(context, command, { sparePercent: 'sparePercentage', chunkBytes: 'chunkSizeInKb', volumeGranularityBytes: granularityField }));
    }
    case 'FaultSet': {
      const protectionDomainId = reader.id('protectionDomainId');
      const name = reader.name('name');
      reader.finish();
      return created(await execute(context, { type: 'addFaultSet', protectionDomainId, name }));
    }
    case 'Sds': {
      // The SDS registered itself when it started; this adds it to a protection domain.
      const sdsIdGiven = reader.id('sdsId', false);
      const nameGiven = reader.string('name', false);
      const protectionDomainId = reader.id('protectionDomainId');
      const faultSetId = reader.isNull('faultSetId') ? null : (reader.id('faultSetId', false) ?? null);
      reader.finish();
      if ((sdsIdGiven === undefined) === (nameGiven === undefined)) throw invalidField('sdsId', 'give the registered SDS by sdsId or by name (one of the two)');
      let sdsId = sdsIdGiven;
      if (nameGiven !== undefined) {
        const named = Object.values(model.sdss).filter((sds) => sds.name === nameGiven);
        if (named.length === 0) throw new MdmError('MB_ERR_NOT_FOUND', `no registered SDS named '${nameGiven}'`, 404);
        sdsId = (named[0] as { id: Id }).id;
      }
      return created(await execute(context, { type: 'addSds', sdsId: sdsId as Id, protectionDomainId, faultSetId }));
    }
    case 'Device': {
      const sdsId = reader.id('sdsId');
      const storagePoolId = reader.id('storagePoolId');
      const path = reader.path('deviceCurrentPathName');
      const name = reader.name('name', false);
      const force = reader.boolean('forceDeviceTakeover', false) ?? false;
      reader.finish();
      // Checked before the SDS is asked: taking a device formats it, and a device formatted
      // for a request the state machine then refuses would be a half-applied change.
      // (Ids passed the id pattern: no '__proto__' can reach these lookups.)
      const sds = model.sdss[sdsId];
      if (sds === undefined) throw new MdmError('MB_ERR_NOT_FOUND', `no SDS with id ${sdsId}`, 404);
      const pool = model.storagePools[storagePoolId];
      if (pool === undefined) throw new MdmError('MB_ERR_NOT_FOUND', `no storage pool with id ${storagePoolId}`, 404);
      if (sds.protectionDomainId !== pool.protectionDomainId) {
        throw invalidField('storagePoolId', `SDS '${sds.name}' is ${sds.protectionDomainId === null ? 'in no protection domain yet (add it first)' : "not in the storage pool's protection domain"}`);
      }
      if (context.controller.state.sdsDevices(sdsId).some((device) => device.path === path)) {
        throw new MdmError('MB_ERR_DEVICE_EXISTS', `SDS '${sds.name}' already has a device at ${path}`, 409);
      }
      try {
        return created(await context.controller.addDevice({ sdsId, storagePoolId, path, name: name ?? null, force }));
      } catch (err) {
        throw renameField(err, { path: 'deviceCurrentPathName' });
      }
    }
    case 'Volume': {
      const storagePoolId = reader.id('storagePoolId');
      const name = reader.name('name');
      const sizeInKb = reader.integer('volumeSizeInKb', { min: 1, max: sizeInKbMax });
      // ScaleIO's default when a client leaves it out.
      const volumeType = reader.oneOf('volumeType', ['ThinProvisioned', 'ThickProvisioned'] as const, false) ?? 'ThickProvisioned';
      reader.finish();
      const command: Command = { type: 'addVolume', storagePoolId, name, sizeBytes: sizeInKb * KiB, volumeType, nowMs: context.nowMs() };
      return created(await execute(context, command, { sizeBytes: 'volumeSizeInKb' }));
    }
    case 'System':
    case 'Sdc':
      throw new RestError('MB_ERR_METHOD_NOT_ALLOWED', `${type} instances are not created over the API${type === 'Sdc' ? ' (an SDC registers itself when it starts)' : ''}`, 405, { allow: 'GET' });
  }
}

/** The actions of each type (POST /api/instances/{Type}::{id}/action/{action}). */
export const restActions: Readonly<Record<RestType, readonly string[]>> = {
  System: [],
  ProtectionDomain: ['removeProtectionDomain', 'setProtectionDomainName'],
  StoragePool: ['removeStoragePool', 'setStoragePoolName', 'setSparePercentage'],
  FaultSet: ['removeFaultSet'],
  Sds: ['removeSds', 'setSdsName'],
  Device: ['removeDevice'],
  Sdc: ['removeSdc', 'setSdcName'],
  Volume: ['addMappedSdc', 'removeMappedSdc', 'setMappedSdcLimits', 'removeVolume', 'setVolumeSize', 'setVolumeName'],
};

/** Runs an action on an existing instance (the caller checked it exists). */
export async function performAction(context: CommandContext, type: RestType, id: Id, action: string, body: unknown): Promise<void> {
  if (!restActions[type].includes(action)) {
    const known = restActions[type];
    throw new RestError('MB_ERR_NO_ROUTE', `${type} has no action '${action}'${known.length > 0 ? ` (actions: ${known.join(', ')})` : ''}`, 404);
  }
  const reader = new BodyReader(body ?? {});
  const model = context.controller.state.model;
  const run = async (command: Command, fieldNames: FieldNames = {}): Promise<void> => {
    reader.finish();
    await execute(context, command, fieldNames);
  };
  switch (action) {
    case 'removeProtectionDomain':
      return run({ type: 'removeProtectionDomain', id });
    case 'setProtectionDomainName':
      return run({ type: 'renameProtectionDomain', id, name: reader.name('name') });
    case 'removeStoragePool':
      return run({ type: 'removeStoragePool', id });
    case 'setStoragePoolName':
      return run({ type: 'renameStoragePool', id, name: reader.name('name') });
    case 'setSparePercentage':
      return run({ type: 'setStoragePoolSpare', id, sparePercent: reader.integer('sparePercentage', { min: 0, max: 100 }) }, { sparePercent: 'sparePercentage' });
    case 'removeFaultSet':
      return run({ type: 'removeFaultSet', id });
    case 'removeSds':
      return run({ type: 'removeSds', id });
    case 'setSdsName':
      return run({ type: 'renameSds', id, name: reader.name('name') });
    case 'removeDevice':
      return run({ type: 'removeDevice', id });
    case 'removeSdc':
      return run({ type: 'removeSdc', id });
    case 'setSdcName':
      return run({ type: 'renameSdc', id, name: reader.name('sdcName') }, { name: 'sdcName' });
    case 'setVolumeName':
      return run({ type: 'renameVolume', id, name: reader.name('newName') }, { name: 'newName' });
    case 'removeVolume':
      // ScaleIO clients say which part of a V-Tree goes; without snapshots that is the volume.
      reader.oneOf('removeMode', ['ONLY_ME'] as const, false);
      return run({ type: 'removeVolume', id });
    case 'setVolumeSize': {
      const sizeInGb = reader.integer('sizeInGB', { min: 1, max: Math.floor(Number.MAX_SAFE_INTEGER / GiB) }, false);
      const sizeInKb = reader.integer('sizeInKb', { min: 1, max: sizeInKbMax }, false);
      if ((sizeInGb === undefined) === (sizeInKb === undefined)) throw invalidField('sizeInGB', 'give the new size as sizeInGB or sizeInKb (one of the two)');
      const field = sizeInGb !== undefined ? 'sizeInGB' : 'sizeInKb';
      const sizeBytes = sizeInGb !== undefined ? sizeInGb * GiB : (sizeInKb as number) * KiB;
      return run({ type: 'setVolumeSize', id, sizeBytes }, { sizeBytes: field });
    }
    case 'addMappedSdc': {
      const sdcId = reader.id('sdcId');
      const allowMultipleMappings = reader.boolean('allowMultipleMappings', false) ?? false;
      const accessMode = reader.oneOf('accessMode', ['ReadWrite', 'ReadOnly'] as const, false) ?? 'ReadWrite';
      return run({ type: 'addMappedSdc', volumeId: id, sdcId, accessMode, allowMultipleMappings });
    }
    case 'removeMappedSdc':
      return run({ type: 'removeMappedSdc', volumeId: id, sdcId: reader.id('sdcId') });
    case 'setMappedSdcLimits': {
      const sdcId = reader.id('sdcId');
      const bandwidthLimitKbps = reader.integer('bandwidthLimitInKbps', { min: 0, max: countMax }, false);
      const iopsLimit = reader.integer('iopsLimit', { min: 0, max: countMax }, false);
      if (bandwidthLimitKbps === undefined && iopsLimit === undefined) throw invalidField('iopsLimit', 'give iopsLimit, bandwidthLimitInKbps or both');
      // A limit left out keeps its value, as in ScaleIO.
      const mapping = model.volumes[id]?.mappings.find((entry) => entry.sdcId === sdcId);
      return run(
        { type: 'setMappedSdcLimits', volumeId: id, sdcId, iopsLimit: iopsLimit ?? mapping?.iopsLimit ?? 0, bandwidthLimitKbps: bandwidthLimitKbps ?? mapping?.bandwidthLimitKbps ?? 0 },
        { bandwidthLimitKbps: 'bandwidthLimitInKbps' },
      );
    }
  }
  throw new RestError('MB_ERR_INTERNAL', `action '${action}' is listed but not handled`, 500);
}

/** POST /api/types/{Type}/instances/action/queryIdByKey {name[, protectionDomainId]} → the id. */
export function queryIdByKey(context: CommandContext, type: RestType, body: unknown): Id {
  const reader = new BodyReader(body);
  const name = reader.string('name');
  const scoped = type === 'StoragePool' || type === 'FaultSet';
  const protectionDomainId = scoped ? reader.id('protectionDomainId', false) : undefined;
  reader.finish();
  checkName('name', name);
  const model = context.controller.state.model;
  const tables: Record<Exclude<RestType, 'System'>, Record<Id, { id: Id; name: string; protectionDomainId?: Id | null }>> = {
    ProtectionDomain: model.protectionDomains,
    StoragePool: model.storagePools,
    FaultSet: model.faultSets,
    Sds: model.sdss,
    Device: model.devices,
    Sdc: model.sdcs,
    Volume: model.volumes,
  };
  if (type === 'System') {
    if (name !== model.name) throw new MdmError('MB_ERR_NOT_FOUND', `the system is not named '${name}'`, 404);
    return model.clusterId;
  }
  const matches = Object.values(tables[type]).filter((entry) => entry.name === name && (protectionDomainId === undefined || entry.protectionDomainId === protectionDomainId));
  if (matches.length === 0) throw new MdmError('MB_ERR_NOT_FOUND', `no ${type} named '${name}'`, 404);
  if (matches.length > 1) throw new MdmError('MB_ERR_AMBIGUOUS', `${matches.length} ${type} instances are named '${name}'; give protectionDomainId`, 409);
  return (matches[0] as { id: Id }).id;
}

function created(applied: Applied): { id: Id } {
  if (applied.id === undefined) throw new RestError('MB_ERR_INTERNAL', 'the command created nothing', 500);
  return { id: applied.id };
}

function invalidField(field: string, message: string): MdmError {
  return new MdmError('MB_ERR_INVALID_ARGUMENT', `${field}: ${message}`, 400);
}
