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
import { BodyReader, checkName } from './rest-body.js';
import { RestError } from './rest-errors.js';
import type { RestType } from './rest-objects.js';
import { MdmError, type Applied, type Command } from './state-machine.js';
import { ioPriorityBandwidthPerDeviceKbpsMax, ioPriorityConcurrentIosPerDeviceMax, pgCountMax, snapshotGroupVolumesMax, snapshotsPerVtreeMax } from '../common/limits.js';

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
      // Cinder's PowerFlex driver sends both with every volume: the pool's protection domain,
      // and no compression ('Invalid' is ScaleIO's word for "does not apply to this pool").
      const protectionDomainId = reader.id('protectionDomainId', false);
      reader.oneOf('compressionMethod', ['None', 'Invalid'] as const, false);
      reader.finish();
      const pool = Object.hasOwn(model.storagePools, storagePoolId) ? model.storagePools[storagePoolId] : undefined;
      if (protectionDomainId !== undefined && pool !== undefined && pool.protectionDomainId !== protectionDomainId) {
        throw invalidField('protectionDomainId', `is not storage pool '${pool.name}''s protection domain (${pool.protectionDomainId})`);
      }
      const command: Command = { type: 'addVolume', storagePoolId, name, sizeBytes: sizeInKb * KiB, volumeType, nowMs: context.nowMs() };
      return created(await execute(context, command, { sizeBytes: 'volumeSizeInKb' }));
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
  StoragePool: ['removeStoragePool', 'setStoragePoolName', 'setSparePercentage', 'setRebuildIoPriorityPolicy', 'setRebalanceIoPriorityPolicy'],
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
  const run = async (command: Command, fieldNames: FieldNames = {}): Promise<Record<string, never>> => {
    reader.finish();
    await execute(context, command, fieldNames);
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
      if (!Object.hasOwn(model.volumes, sourceVolumeId)) throw new MdmError('MB_ERR_NOT_FOUND', `srcVolumeId: no volume with id ${sourceVolumeId}`, 404);
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
      const sdcId = reader.id('sdcId');
      const allowMultipleMappings = reader.boolean('allowMultipleMappings', false) ?? false;
      const accessMode = reader.oneOf('accessMode', ['ReadWrite', 'ReadOnly'] as const, false) ?? 'ReadWrite';
      return run({ type: 'addMappedSdc', volumeId: id, sdcId, accessMode, allowMultipleMappings });
    }
    case 'removeMappedSdc': {
      // ScaleIO's {"allSdcs": ""} (its value means nothing) unmaps from every SDC; Cinder's
      // PowerFlex driver sends it before every removeVolume, mapped or not.
      if (!reader.present('allSdcs')) return run({ type: 'removeMappedSdc', volumeId: id, sdcId: reader.id('sdcId') });
      if (reader.has('sdcId')) throw invalidField('allSdcs', 'give sdcId or allSdcs, not both');
      reader.finish();
      // One command per mapping: an SDC refused half-way leaves the others unmapped, and the
      // error says which one stayed.
      for (const mapping of [...(model.volumes[id]?.mappings ?? [])]) await execute(context, { type: 'removeMappedSdc', volumeId: id, sdcId: mapping.sdcId });
      return {};
    }
    case 'setMappedSdcLimits':
      return run(mappedSdcLimits(model, id, reader), qosFieldNames);
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
  const sdcId = reader.id('sdcId');
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
    const name = def.name('snapshotName', false) ?? null;
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
    if (!Object.hasOwn(model.volumes, def.volumeId)) throw new MdmError('MB_ERR_NOT_FOUND', `${field}.volumeId: no volume with id ${def.volumeId}`, 404);
    const again = defs.findIndex((other) => other.volumeId === def.volumeId);
    if (again !== index) throw invalidField(`${field}.volumeId`, `names volume ${def.volumeId} again (as snapshotDefs[${again}] does); one snapshot of a volume per call`);
    if (def.name === null) return;
    const taken = volumeNamed(model, def.name);
    if (taken !== undefined) throw new MdmError('MB_ERR_NAME_TAKEN', `${field}.snapshotName: a volume named '${def.name}' already exists (id ${taken.id})`, 409);
    const twice = defs.findIndex((other) => other.name === def.name);
    if (twice !== index) throw invalidField(`${field}.snapshotName`, `'${def.name}' is given to snapshotDefs[${twice}] too`);
  });
  let made: SnapshotResult;
  try {
    made = await context.controller.snapshotVolumes(defs.map((def) => ({ ...def, readOnly: accessModeLimit === 'ReadOnly' })));
  } catch (err) {
    throw renameSnapshotDefField(err);
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
  checkName('name', name);
  const model = context.controller.state.model;
  // A V-Tree has no name of its own (it shows its base volume's): it is found by its volumes' vtreeId.
  if (type === 'VTree') throw new RestError('MB_ERR_NO_ROUTE', 'VTree instances have no names to query; read vtreeId from one of its volumes', 404);
  const tables: Record<Exclude<RestType, 'System' | 'VTree'>, Record<Id, { id: Id; name: string; protectionDomainId?: Id | null }>> = {
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
