// Operations between the MDM and the processes it manages. An SDS (and later an SDC)
// connects to the MDM, proves the cluster secret (peer.ts), registers, and keeps the
// connection: it sends heartbeats on it, and the MDM sends its orders back on the same
// connection (SdsOp.SetMap, SdsOp.AddDevice, SdsOp.Rebuild, ...), which the SDS serves as
// from role 'mdm'. Payloads are JSON: these messages are rare and small.
//
//   op               from   request payload          reply payload (status Ok)
//   ---------------  -----  -----------------------  ------------------------------------
//   RegisterSds  40  SDS    SdsRegistration          { epoch } the MDM's map epoch; the
//                                                    map follows as SetMap if it holds any
//   Heartbeat    41  SDS    SdsStats (sds-ops.ts)    empty
//   GetMap       42  any    empty                    the current PlacementMap
//
// The MDM answers RegisterSds from an SDS whose name is taken by another SDS id with
// Failed and a message naming the clash.

import { InvalidArgumentError } from '../common/errors.js';
import { idPattern } from './placement.js';

export const MdmOp = {
  RegisterSds: 40,
  Heartbeat: 41,
  GetMap: 42,
} as const;

/** How often an SDS reports; the MDM calls it disconnected after a few missed reports. */
export const heartbeatIntervalMs = 1000;

export interface RegisteredDevice {
  deviceId: string;
  path: string;
  capacityBytes: number;
}

export interface SdsRegistration {
  sdsId: string;
  name: string;
  /** HOST:PORT where it serves chunk IO. */
  address: string;
  devices: RegisteredDevice[];
}

export function parseSdsRegistration(payload: Buffer): SdsRegistration {
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new InvalidArgumentError('registration', 'is not JSON');
  }
  const entry = value as Partial<SdsRegistration> | null;
  if (entry === null || typeof entry !== 'object') throw new InvalidArgumentError('registration', 'must be an object');
  if (typeof entry.sdsId !== 'string' || !idPattern.test(entry.sdsId)) throw new InvalidArgumentError('registration.sdsId', 'must be 16 hex digits');
  if (typeof entry.name !== 'string') throw new InvalidArgumentError('registration.name', 'must be a string');
  if (typeof entry.address !== 'string' || !/^.+:\d{1,5}$/.test(entry.address)) throw new InvalidArgumentError('registration.address', 'must be HOST:PORT');
  if (!Array.isArray(entry.devices)) throw new InvalidArgumentError('registration.devices', 'must be an array');
  const devices = entry.devices.map((device: Partial<RegisteredDevice>, index) => {
    if (typeof device.deviceId !== 'string' || !idPattern.test(device.deviceId)) throw new InvalidArgumentError(`registration.devices[${index}].deviceId`, 'must be 16 hex digits');
    if (typeof device.path !== 'string') throw new InvalidArgumentError(`registration.devices[${index}].path`, 'must be a string');
    if (!Number.isSafeInteger(device.capacityBytes) || (device.capacityBytes as number) <= 0) throw new InvalidArgumentError(`registration.devices[${index}].capacityBytes`, 'must be a positive integer');
    return { deviceId: device.deviceId, path: device.path, capacityBytes: device.capacityBytes as number };
  });
  return { sdsId: entry.sdsId, name: entry.name, address: entry.address, devices };
}

/** SdsOp.AddDevice: the MDM asks an SDS to take a device. */
export interface AddDeviceOrder {
  path: string;
  /** Format even if the device holds a filesystem, partition table or LVM label. */
  force: boolean;
}

/** A refusal that the MDM passes on to the administrator as it is. */
export interface DeviceRefusal {
  code: string;
  message: string;
}
