// REST bodies to state-machine commands: POST /api/types/{Type}/instances and
// POST /api/instances/{Type}::{id}/action/{action} (and /api/instances/System/action/{action},
// as ScaleIO clients call the System's actions). Every body is read in full and checked
// (types, units, unknown fields) before the controller is called, and the state machine
// checks the rest before its first change, so a refused request changes nothing.
//
// The state machine names fields in its own terms (sizeBytes, sparePercent); each command
// here says how those map to the REST field the client sent, so that every 400 names a
// field of the request.

import { GiB, KiB, MiB } from '../common/units.js';
import type { MdmController, SnapshotResult } from './controller.js';
import { ioPriorityPolicyNames, removeModes, type Id, type SystemModel, type Volume } from './model.js';
import { BodyReader, checkName, checkVolumeName } from './rest-body.js';
import { RestError, notFoundErrorCode, scaleIoErrorCodes, withErrorCode } from './rest-errors.js';
import { instanceTables, type RestType } from './rest-objects.js';
import { MdmError, type Applied, type Command } from './state-machine.js';
import { ioPriorityBandwidthPerDeviceKbpsMax, ioPriorityConcurrentIosPerDeviceMax, pgCountMax, scrubRateKBpsMax, scrubRateKBpsMin, snapshotGroupVolumesMax, snapshotsPerVtreeMax } from '../common/limits.js';

/** enableBackgroundDeviceScanner's scannerMode, as ScaleIO spells it (off is the disable action). */
export const restScannerModes = ['DeviceOnly', 'DataComparison'] as const;

const sizeInKbMax = Math.floor(Number.MAX_SAFE_INTEGER / KiB);
const countMax = Number.MAX_SAFE_INTEGER;

export interface CommandContext {
  controller: MdmController;
  nowMs: () => number;
}

/** Field names of the state machine → the REST field they came from. */
type FieldNames = Readonly<Record<string, string>>;

/** ScaleIO's errorCode for a refusal's code, where a command's situation has one. */
type ErrorCodes = Readonly<Partial<Record<string, number>>>;

/** A volume's name taken: ScaleIO's VOLUME_ALREADY_EXISTS. */
const volumeErrorCodes: ErrorCodes = { MB_ERR_NAME_TAKEN: scaleIoErrorCodes.volumeNameTaken };

async function execute(context: CommandContext, command: Command, fieldNames: FieldNames = {}, errorCodes: ErrorCodes = {}): Promise<Applied> {
  try {
    return await context.controller.execute(command);
  } catch (err) {
    throw scaleIoCode(renameField(err, fieldNames), errorCodes);
  }
}

function scaleIoCode(err: unknown, errorCodes: ErrorCodes): unknown {
  const errorCode = err instanceof MdmError || err instanceof RestError ? errorCodes[err.code] : undefined;
  return errorCode === undefined ? err : withErrorCode(err, errorCode);
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
      const name = reader.volumeName('name');
      // ScaleIO's volumeSizeInKb, or volumeSizeInGb (one of the two).
      const sizeInKbGiven = reader.integer('volumeSizeInKb', { min: 1, max: sizeInKbMax }, false);
      const sizeInGb = reader.integer('volumeSizeInGb', { min: 1, max: Math.floor(sizeInKbMax / (GiB / KiB)) }, false);
      // ScaleIO's default when a client leaves it out.
      const volumeType = reader.oneOf('volumeType', ['ThinProvisioned', 'ThickProvisioned'] as const, false) ?? 'ThickProvisioned';
      // Cinder's PowerFlex driver sends both with every volume: the pool's protection domain,
      // and no compression ('Invalid' is ScaleIO's word for "does not apply to this pool").
      // meshblock compresses nothing: 'Normal' is refused rather than silently not done.
      const protectionDomainId = reader.id('protectionDomainId', false);
      reader.oneOf('compressionMethod', ['None', 'Invalid'] as const, false);
      // Read and ignored (docs/rest-api.md): ScaleIO's read cache (RAM on the SDS; meshblock's
      // SDSs read through the page cache) and volume class (meshblock has only one).
      reader.boolean('useRmcache', false);
      reader.string('volumeClass', false);
      reader.finish();
      if (sizeInKbGiven === undefined && sizeInGb === undefined) throw invalidField('volumeSizeInKb', 'is required (or give the size as volumeSizeInGb)');
      if (sizeInKbGiven !== undefined && sizeInGb !== undefined) throw invalidField('volumeSizeInGb', 'give the size as volumeSizeInKb or volumeSizeInGb, not both');
      const sizeInKb = sizeInKbGiven ?? (sizeInGb as number) * (GiB / KiB);
      const sizeField = sizeInKbGiven !== undefined ? 'volumeSizeInKb' : 'volumeSizeInGb';
      const pool = Object.hasOwn(model.storagePools, storagePoolId) ? model.storagePools[storagePoolId] : undefined;
      if (protectionDomainId !== undefined && pool !== undefined && pool.protectionDomainId !== protectionDomainId) {
        throw invalidField('protectionDomainId', `is not storage pool '${pool.name}''s protection domain (${pool.protectionDomainId})`);
      }
      const command: Command = { type: 'addVolume', storagePoolId, name, sizeBytes: sizeInKb * KiB, volumeType, nowMs: context.nowMs() };
      return created(await execute(context, command, { sizeBytes: sizeField }, volumeErrorCodes));
    }
    case 'System':
    case 'Sdc':
    case 'VTree': {
      const why = type === 'Sdc' ? ' (an SDC registers itself when it starts)' : type === 'VTree' ? ' (each new volume starts one; its snapshots join it)' : '';
      throw new RestError('MB_ERR_METHOD_NOT_ALLOWED', `${type} instances are not created over the API${why}`, 405, { allow: 'GET' });
    }
  }
}

/** The actions of each type (POST /api/instances/{Type}::{id}/action/{action}). */
export const restActions: Readonly<Record<RestType, readonly string[]>> = {
  // queryMdmCluster and changeMdmOwnership are the System's too, served by rest-api.ts.
  System: ['snapshotVolumes', 'removeConsistencyGroupSnapshots', 'setSnapshotsPerVtree'],
  ProtectionDomain: ['removeProtectionDomain', 'setProtectionDomainName'],
  StoragePool: ['removeStoragePool', 'setStoragePoolName', 'setSparePercentage', 'setRebuildIoPriorityPolicy', 'setRebalanceIoPriorityPolicy', 'enableBackgroundDeviceScanner', 'disableBackgroundDeviceScanner'],
  FaultSet: ['removeFaultSet'],
  Sds: ['removeSds', 'setSdsName'],
  Device: ['removeDevice'],
  Sdc: ['removeSdc', 'setSdcName'],
  Volume: ['addMappedSdc', 'removeMappedSdc', 'setMappedSdcLimits', 'removeVolume', 'setVolumeSize', 'setVolumeName', 'overwriteVolumeContent', 'setVolumeAccessModeLimit'],
  VTree: [],
};

/** What snapshotVolumes answers, as ScaleIO. */
export interface SnapshotVolumesReply {
  /** The new snapshots' ids, in the order of snapshotDefs. */
  volumeIdList: Id[];
  snapshotGroupId: Id;
}

/** What removeConsistencyGroupSnapshots answers, as ScaleIO. */
export interface RemoveGroupReply {
  numberOfVolumes: number;
}

/**
 * Runs an action on an existing instance (the caller checked it exists); resolves with the
 * reply's body ({} for most actions, ScaleIO's shapes for snapshotVolumes and
 * removeConsistencyGroupSnapshots).
 */
export async function performAction(context: CommandContext, type: RestType, id: Id, action: string, body: unknown): Promise<unknown> {
  if (!restActions[type].includes(action)) {
    const known = restActions[type];
    throw new RestError('MB_ERR_NO_ROUTE', `${type} has no action '${action}'${known.length > 0 ? ` (actions: ${known.join(', ')})` : ''}`, 404);
  }
  const reader = new BodyReader(body ?? {});
  const model = context.controller.state.model;
  const run = async (command: Command, fieldNames: FieldNames = {}, errorCodes: ErrorCodes = {}): Promise<Record<string, never>> => {
    reader.finish();
    await execute(context, command, fieldNames, errorCodes);
    return {};
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
    case 'setRebuildIoPriorityPolicy':
    case 'setRebalanceIoPriorityPolicy': {
      // ScaleIO's body; a number left out keeps the pool's. The state machine checks the
      // multiple of 1024 (so that a replayed command is checked alike); named here as sent.
      const kind = action === 'setRebuildIoPriorityPolicy' ? 'rebuild' : 'rebalance';
      const policy = reader.oneOf('policy', ioPriorityPolicyNames);
      const concurrentIosPerDevice = reader.integer('numOfConcurrentIosPerDevice', { min: 1, max: ioPriorityConcurrentIosPerDeviceMax }, false);
      const bandwidthPerDeviceKbps = reader.integer('bwLimitPerDeviceInKbps', { min: 1024, max: ioPriorityBandwidthPerDeviceKbpsMax }, false);
      return run(
        { type: 'setIoPriorityPolicy', poolId: id, kind, policy, ...(concurrentIosPerDevice !== undefined ? { concurrentIosPerDevice } : {}), ...(bandwidthPerDeviceKbps !== undefined ? { bandwidthPerDeviceKbps } : {}) },
        { concurrentIosPerDevice: 'numOfConcurrentIosPerDevice', bandwidthPerDeviceKbps: 'bwLimitPerDeviceInKbps' },
      );
    }
    case 'enableBackgroundDeviceScanner': {
      // ScaleIO's body: scannerMode DeviceOnly | DataComparison, bandwidthLimitKBps optional
      // (left out: the pool's rate, or the default on a pool never set). Enabling again with
      // another rate is how a rate is changed, as with scli --enable_background_device_scanner.
      const scannerMode = reader.oneOf('scannerMode', restScannerModes);
      const rateKBps = reader.integer('bandwidthLimitKBps', { min: scrubRateKBpsMin, max: scrubRateKBpsMax }, false);
      return run({ type: 'setScrubPolicy', poolId: id, mode: scannerMode === 'DeviceOnly' ? 'deviceOnly' : 'dataComparison', ...(rateKBps !== undefined ? { rateKBps } : {}) }, { rateKBps: 'bandwidthLimitKBps', mode: 'scannerMode' });
    }
    case 'disableBackgroundDeviceScanner':
      return run({ type: 'setScrubPolicy', poolId: id, mode: 'off' });
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
      return run({ type: 'renameVolume', id, name: reader.volumeName('newName') }, { name: 'newName' }, volumeErrorCodes);
    case 'removeVolume': {
      // ScaleIO's default is ONLY_ME: the volume alone; its snapshots stay, whole.
      const removeMode = reader.oneOf('removeMode', removeModes, false) ?? 'ONLY_ME';
      ignoreExternallyManaged(reader);
      return run({ type: 'removeVolume', id, removeMode });
    }
    case 'overwriteVolumeContent': {
      const sourceVolumeId = reader.id('srcVolumeId');
      ignoreExternallyManaged(reader);
      reader.finish();
      if (sourceVolumeId === id) throw invalidField('srcVolumeId', `is the volume being overwritten (${id}); name a snapshot of its V-Tree`);
      if (!Object.hasOwn(model.volumes, sourceVolumeId)) throw new RestError('MB_ERR_NOT_FOUND', `srcVolumeId: no volume with id ${sourceVolumeId}`, 404, {}, scaleIoErrorCodes.volumeNotFound);
      try {
        await context.controller.overwriteVolumeContent(id, sourceVolumeId);
      } catch (err) {
        throw renameField(err, { sourceVolumeId: 'srcVolumeId' });
      }
      return {};
    }
    case 'setVolumeAccessModeLimit':
      return run({ type: 'setVolumeAccessModeLimit', id, accessModeLimit: reader.oneOf('accessModeLimit', ['ReadWrite', 'ReadOnly'] as const) });
    case 'snapshotVolumes':
      return snapshotVolumes(context, reader);
    case 'removeConsistencyGroupSnapshots': {
      const groupId = reader.id('snapGroupId');
      ignoreExternallyManaged(reader);
      reader.finish();
      if (!Object.values(model.volumes).some((volume) => volume.snapshotGroupId === groupId)) {
        throw new MdmError('MB_ERR_NOT_FOUND', `snapGroupId: no snapshot group with id ${groupId} (none of the volumes left was made by it)`, 404);
      }
      const before = Object.keys(model.volumes).length;
      await execute(context, { type: 'removeSnapshotGroup', groupId });
      const reply: RemoveGroupReply = { numberOfVolumes: before - Object.keys(context.controller.state.model.volumes).length };
      return reply;
    }
    case 'setSnapshotsPerVtree':
      return run({ type: 'setSnapshotsPerVtree', limit: reader.integer('snapshotsPerVtree', { min: 1, max: snapshotsPerVtreeMax }) }, { limit: 'snapshotsPerVtree' });
    case 'setVolumeSize': {
      const sizeInGb = reader.integer('sizeInGB', { min: 1, max: Math.floor(Number.MAX_SAFE_INTEGER / GiB) }, false);
      const sizeInKb = reader.integer('sizeInKb', { min: 1, max: sizeInKbMax }, false);
      if ((sizeInGb === undefined) === (sizeInKb === undefined)) throw invalidField('sizeInGB', 'give the new size as sizeInGB or sizeInKb (one of the two)');
      const field = sizeInGb !== undefined ? 'sizeInGB' : 'sizeInKb';
      const sizeBytes = sizeInGb !== undefined ? sizeInGb * GiB : (sizeInKb as number) * KiB;
      return run({ type: 'setVolumeSize', id, sizeBytes }, { sizeBytes: field });
    }
    case 'addMappedSdc': {
      const sdcId = mappedSdcId(model, reader);
      const allowMultipleMappings = reader.boolean('allowMultipleMappings', false) ?? false;
      const accessMode = reader.oneOf('accessMode', ['ReadWrite', 'ReadOnly'] as const, false) ?? 'ReadWrite';
      ignoreExternallyManaged(reader);
      return run({ type: 'addMappedSdc', volumeId: id, sdcId, accessMode, allowMultipleMappings });
    }
    case 'removeMappedSdc': {
      // Read and ignored: ScaleIO's iSCSI initiators and appliance checks (meshblock has neither).
      reader.boolean('ignoreScsiInitiators', false);
      reader.boolean('skipApplianceValidation', false);
      ignoreExternallyManaged(reader);
      // ScaleIO's {"allSdcs": ""} (its value means nothing) unmaps from every SDC; Cinder's
      // PowerFlex driver sends it before every removeVolume, mapped or not.
      if (!reader.present('allSdcs')) {
        const sdcId = mappedSdcId(model, reader);
        checkMapped(model, id, sdcId);
        return run({ type: 'removeMappedSdc', volumeId: id, sdcId });
      }
      if (reader.has('sdcId') || reader.has('guid')) throw invalidField('allSdcs', `give ${reader.has('sdcId') ? 'sdcId' : 'guid'} or allSdcs, not both`);
      reader.finish();
      // One command per mapping: an SDC refused half-way leaves the others unmapped, and the
      // error says which one stayed.
      for (const mapping of [...(model.volumes[id]?.mappings ?? [])]) await execute(context, { type: 'removeMappedSdc', volumeId: id, sdcId: mapping.sdcId });
      return {};
    }
    case 'setMappedSdcLimits': {
      const command = mappedSdcLimits(model, id, reader);
      reader.finish();
      checkMapped(model, id, (command as { sdcId: Id }).sdcId);
      return run(command, qosFieldNames);
    }
  }
  throw new RestError('MB_ERR_INTERNAL', `action '${action}' is listed but not handled`, 500);
}

/** The state machine's QoS fields → setMappedSdcLimits' (ScaleIO's names; the bursts are meshblock's). */
const qosFieldNames: FieldNames = { bandwidthLimitKbps: 'bandwidthLimitInKbps', bandwidthBurstKbps: 'bandwidthBurstInKbps' };

/**
 * setMappedSdcLimits {sdcId, iopsLimit?, bandwidthLimitInKbps?, iopsBurst?, bandwidthBurstInKbps?,
 * burstSeconds?}: ScaleIO's two limits and meshblock's burst (docs/qos.md). A field left out
 * keeps its value, as ScaleIO does for the limits, with one exception: a limit removed (0)
 * takes its burst with it unless the request names the burst too, since a burst only rises
 * above a limit, and an administrator lifting a limit should not have to know it had one.
 * The rules themselves are the state machine's (checkQosLimits).
 */
function mappedSdcLimits(model: SystemModel, volumeId: Id, reader: BodyReader): Command {
  const sdcId = mappedSdcId(model, reader);
  const range = { min: 0, max: countMax };
  const iopsLimit = reader.integer('iopsLimit', range, false);
  const bandwidthLimitKbps = reader.integer('bandwidthLimitInKbps', range, false);
  const iopsBurst = reader.integer('iopsBurst', range, false);
  const bandwidthBurstKbps = reader.integer('bandwidthBurstInKbps', range, false);
  const burstSeconds = reader.integer('burstSeconds', range, false);
  if ([iopsLimit, bandwidthLimitKbps, iopsBurst, bandwidthBurstKbps, burstSeconds].every((value) => value === undefined)) {
    throw invalidField('iopsLimit', 'give iopsLimit, bandwidthLimitInKbps or both (and optionally iopsBurst, bandwidthBurstInKbps, burstSeconds)');
  }
  // Not mapped: the state machine says so (404); the kept values do not matter then.
  const kept = model.volumes[volumeId]?.mappings.find((entry) => entry.sdcId === sdcId);
  return {
    type: 'setMappedSdcLimits',
    volumeId,
    sdcId,
    iopsLimit: iopsLimit ?? kept?.iopsLimit ?? 0,
    bandwidthLimitKbps: bandwidthLimitKbps ?? kept?.bandwidthLimitKbps ?? 0,
    iopsBurst: iopsBurst ?? (iopsLimit === 0 ? 0 : (kept?.iopsBurst ?? 0)),
    bandwidthBurstKbps: bandwidthBurstKbps ?? (bandwidthLimitKbps === 0 ? 0 : (kept?.bandwidthBurstKbps ?? 0)),
    burstSeconds: burstSeconds ?? kept?.burstSeconds ?? 0,
  };
}

/**
 * The SDC a mapping action names: by sdcId (meshblock's CLI, ScaleIO) or by guid (os-brick,
 * which knows only its host's SDC guid), one of the two. An unknown SDC is refused here, so
 * that the error says which field named it.
 */
function mappedSdcId(model: SystemModel, reader: BodyReader): Id {
  const sdcId = reader.id('sdcId', false);
  const guid = reader.string('guid', false);
  if (sdcId === undefined && guid === undefined) throw invalidField('sdcId', 'is required (or name the SDC by its guid)');
  if (sdcId !== undefined && guid !== undefined) throw invalidField('guid', 'name the SDC by sdcId or by guid, not both');
  if (sdcId !== undefined) {
    if (!Object.hasOwn(model.sdcs, sdcId)) throw new RestError('MB_ERR_NOT_FOUND', `sdcId: no SDC with id ${sdcId}`, 404, {}, scaleIoErrorCodes.resourceNotFound);
    return sdcId;
  }
  // ScaleIO's guids are UUIDs, written in either case.
  const wanted = (guid as string).toLowerCase();
  const found = Object.values(model.sdcs).find((sdc) => sdc.guid.toLowerCase() === wanted);
  if (found === undefined) throw new RestError('MB_ERR_NOT_FOUND', `guid: no SDC with guid '${truncateText(guid as string)}' (an SDC registers itself, with its guid, when it starts)`, 404, {}, scaleIoErrorCodes.resourceNotFound);
  return found.id;
}

/** Not mapped there: ScaleIO's 84, which os-brick takes as "already unmapped". */
function checkMapped(model: SystemModel, volumeId: Id, sdcId: Id): void {
  const volume = model.volumes[volumeId];
  if (volume === undefined || volume.mappings.some((mapping) => mapping.sdcId === sdcId)) return;
  throw new RestError('MB_ERR_NOT_FOUND', `volume '${volume.name}' is not mapped to SDC '${model.sdcs[sdcId]?.name ?? sdcId}'`, 404, {}, scaleIoErrorCodes.volumeNotMapped);
}

function truncateText(text: string): string {
  return JSON.stringify(text.length > 64 ? `${text.slice(0, 64)}...` : text).slice(1, -1);
}

/**
 * ScaleIO's allowOnExtManagedVol lets a call touch volumes another product manages (vVols);
 * meshblock has no such volumes, so it is read (clients send it) and changes nothing.
 */
function ignoreExternallyManaged(reader: BodyReader): void {
  reader.boolean('allowOnExtManagedVol', false);
}

/**
 * POST /api/instances/System/action/snapshotVolumes {snapshotDefs: [{volumeId, snapshotName?}],
 * accessModeLimit?} → {volumeIdList, snapshotGroupId}: one snapshot of each volume, all of
 * them at one crash point (docs/snapshots.md, "The barrier"). Each def is checked here so
 * that the error names it (snapshotDefs[1].volumeId); the core checks again.
 */
async function snapshotVolumes(context: CommandContext, reader: BodyReader): Promise<SnapshotVolumesReply> {
  const model = context.controller.state.model;
  const defs = reader.objects('snapshotDefs', { min: 1, max: snapshotGroupVolumesMax }).map((def) => {
    const volumeId = def.id('volumeId');
    const name = def.volumeName('snapshotName', false) ?? null;
    def.finish();
    return { volumeId, name };
  });
  // ScaleIO's default: a writable snapshot.
  const accessModeLimit = reader.oneOf('accessModeLimit', ['ReadWrite', 'ReadOnly'] as const, false) ?? 'ReadWrite';
  ignoreExternallyManaged(reader);
  // Read (so that it is named among the fields this request takes), and refused unless null.
  if (reader.present('retentionPeriodInMin') && !reader.isNull('retentionPeriodInMin')) throw invalidField('retentionPeriodInMin', 'snapshots that expire by themselves are not supported; leave it out and remove the snapshot when it is no longer needed');
  reader.finish();
  defs.forEach((def, index) => {
    const field = `snapshotDefs[${index}]`;
    if (!Object.hasOwn(model.volumes, def.volumeId)) throw new RestError('MB_ERR_NOT_FOUND', `${field}.volumeId: no volume with id ${def.volumeId}`, 404, {}, scaleIoErrorCodes.volumeNotFound);
    const again = defs.findIndex((other) => other.volumeId === def.volumeId);
    if (again !== index) throw invalidField(`${field}.volumeId`, `names volume ${def.volumeId} again (as snapshotDefs[${again}] does); one snapshot of a volume per call`);
    if (def.name === null) return;
    const taken = volumeNamed(model, def.name);
    if (taken !== undefined) throw new RestError('MB_ERR_NAME_TAKEN', `${field}.snapshotName: a volume named '${def.name}' already exists (id ${taken.id})`, 409, {}, scaleIoErrorCodes.volumeNameTaken);
    const twice = defs.findIndex((other) => other.name === def.name);
    if (twice !== index) throw invalidField(`${field}.snapshotName`, `'${def.name}' is given to snapshotDefs[${twice}] too`);
  });
  let made: SnapshotResult;
  try {
    made = await context.controller.snapshotVolumes(defs.map((def) => ({ ...def, readOnly: accessModeLimit === 'ReadOnly' })));
  } catch (err) {
    throw scaleIoCode(renameSnapshotDefField(err), volumeErrorCodes);
  }
  return { volumeIdList: made.volumeIds, snapshotGroupId: made.snapshotGroupId };
}

/**
 * The core names a def's fields `defs[1].name`; the client sent `snapshotDefs[1].snapshotName`.
 * (Checked here first, so this only shows when the model changed in between.)
 */
export function renameSnapshotDefField(err: unknown): unknown {
  if (!(err instanceof MdmError) || err.code !== 'MB_ERR_INVALID_ARGUMENT') return err;
  const match = /^defs(\[\d+\])?(?:\.([A-Za-z]+))?: /.exec(err.message);
  if (match === null) return err;
  const [, index = '', field] = match;
  const restField = field === 'readOnly' ? 'accessModeLimit' : field === 'name' ? `snapshotDefs${index}.snapshotName` : field === undefined ? `snapshotDefs${index}` : `snapshotDefs${index}.${field}`;
  return new MdmError(err.code, `${restField}: ${err.message.slice(match[0].length)}`, err.httpStatus);
}

function volumeNamed(model: SystemModel, name: string): Volume | undefined {
  return Object.values(model.volumes).find((volume) => volume.name === name);
}

/** POST /api/types/{Type}/instances/action/queryIdByKey {name[, protectionDomainId]} → the id. */
export function queryIdByKey(context: CommandContext, type: RestType, body: unknown): Id {
  const reader = new BodyReader(body);
  const name = reader.string('name');
  const scoped = type === 'StoragePool' || type === 'FaultSet';
  const protectionDomainId = scoped ? reader.id('protectionDomainId', false) : undefined;
  reader.finish();
  return idByName(context.controller.state.model, type, name, protectionDomainId, 'name');
}

/**
 * The type names ScaleIO's getByName knows besides the REST types: Cinder's PowerFlex driver
 * asks for 'Domain' and 'Pool' (GET /api/types/Domain/instances/getByName::NAME).
 */
export const getByNameTypeAliases: Readonly<Record<string, RestType>> = { Domain: 'ProtectionDomain', Pool: 'StoragePool' };

/**
 * GET /api/types/{Type}/instances/getByName::KEY → the id, a JSON string as ScaleIO answers.
 * KEY is the name, percent-encoded once (Cinder) or twice (os-brick: ScaleIO decodes twice);
 * a storage pool's is `PROTECTION_DOMAIN_ID,NAME` as Cinder sends it (or the name alone,
 * when it is unique). `key` arrives decoded once.
 */
export function getIdByName(context: CommandContext, type: RestType, key: string): Id {
  // Names never hold '%' (their rules say so): what still looks percent-encoded was encoded twice.
  let name = key;
  if (/%[0-9A-Fa-f]{2}/.test(name)) {
    try {
      name = decodeURIComponent(name);
    } catch {
      throw new RestError('MB_ERR_INVALID_ARGUMENT', `getByName: '${truncateText(key)}' is not a name, nor one percent-encoded twice`, 400);
    }
  }
  let protectionDomainId: Id | undefined;
  if (type === 'StoragePool' && name.includes(',')) {
    protectionDomainId = name.slice(0, name.indexOf(','));
    name = name.slice(name.indexOf(',') + 1);
    if (!Object.hasOwn(context.controller.state.model.protectionDomains, protectionDomainId)) {
      throw new RestError('MB_ERR_NOT_FOUND', `getByName: no protection domain with id '${truncateText(protectionDomainId)}' (a storage pool is named PROTECTION_DOMAIN_ID,NAME)`, 404, {}, scaleIoErrorCodes.resourceNotFound);
    }
  }
  return idByName(context.controller.state.model, type, name, protectionDomainId, 'getByName');
}

/**
 * GET /api/types/Sdc/instances/getByIp::IP (os-brick writes the type 'Client' and a trailing
 * '/') → the id of the SDC that last registered from that address.
 */
export function getSdcIdByIp(context: CommandContext, ip: string): Id {
  if (!/^[0-9A-Fa-f.:]{2,45}$/.test(ip)) throw new RestError('MB_ERR_INVALID_ARGUMENT', `getByIp: '${truncateText(ip)}' is not an IP address`, 400);
  const found = Object.values(context.controller.state.model.sdcs).filter((sdc) => context.controller.sdcAddress?.(sdc.id) === ip);
  if (found.length === 0) throw new RestError('MB_ERR_NOT_FOUND', `no Sdc registered from ${ip} since this MDM started`, 404, {}, scaleIoErrorCodes.resourceNotFound);
  if (found.length > 1) throw new MdmError('MB_ERR_AMBIGUOUS', `${found.length} SDCs registered from ${ip}: ${found.map((sdc) => sdc.name).join(', ')}; look them up by name or guid`, 409);
  return (found[0] as { id: Id }).id;
}

function idByName(model: SystemModel, type: RestType, name: string, protectionDomainId: Id | undefined, field: string): Id {
  if (type === 'Volume') checkVolumeName(field, name);
  else checkName(field, name);
  // A V-Tree has no name of its own (it shows its base volume's): it is found by its volumes' vtreeId.
  if (type === 'VTree') throw new RestError('MB_ERR_NO_ROUTE', 'VTree instances have no names to query; read vtreeId from one of its volumes', 404);
  if (type === 'System') {
    if (name !== model.name) throw new RestError('MB_ERR_NOT_FOUND', `the system is not named '${name}'`, 404, {}, scaleIoErrorCodes.resourceNotFound);
    return model.clusterId;
  }
  const matches = Object.values(instanceTables(model)[type]).filter((entry) => entry.name === name && (protectionDomainId === undefined || entry.protectionDomainId === protectionDomainId));
  if (matches.length === 0) throw new RestError('MB_ERR_NOT_FOUND', `no ${type} named '${name}'${protectionDomainId === undefined ? '' : ` in protection domain ${protectionDomainId}`}`, 404, {}, notFoundErrorCode(type));
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
