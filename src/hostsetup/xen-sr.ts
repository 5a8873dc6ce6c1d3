// The xen-sr module: a shared LVM storage repository on an attached meshblock volume, so
// XenServer puts VM disks on it:
//   xe sr-list name-label=NAME --minimal          (XenServer creates duplicates happily: refuse)
//   xe sr-create type=lvm content-type=user shared=true name-label=NAME
//                device-config:device=/dev/nbdN host-uuid=THIS-HOST
// The volume must be attached first (`meshblock attach VOLUME --device /dev/nbdN`, the kernel
// must show the device with a size), and LVM must accept NBD devices (the lvm-filter module).
// Without --sr-name/--sr-device the module only says whether xe is there.
//
// Re-running is safe: an SR of that name on that device is the one made before, and nothing
// is done; one of that name anywhere else is refused.

import { validateDevice } from './nbd-attach.js';
import { xensourceInventoryPath } from './host-os.js';
import {
  applySteps,
  commandStep,
  HostModuleError,
  notApplicable,
  resolveTool,
  runQuery,
  type ApplyResult,
  type Finding,
  type Host,
  type HostModule,
  type ResolvedTool,
  type Step,
} from './host-module.js';

/** Where XenServer keeps xe; /usr/bin/xe is a link to it on most releases. */
export const xeDirs: readonly string[] = ['/opt/xensource/bin', '/usr/bin', '/usr/sbin'];
/** sr-create formats the device with LVM; a minute is plenty, a hung xapi is not. */
export const srCreateTimeoutMs = 5 * 60_000;

/** INSTALLATION_UUID='...' in /etc/xensource-inventory: this host's uuid for xe. */
export function parseInstallationUuid(inventory: string): string | null {
  const match = /^INSTALLATION_UUID=['"]?([0-9a-fA-F-]+)['"]?\s*$/m.exec(inventory);
  return match === null ? null : (match[1] as string);
}

/** `--minimal` lists uuids separated by commas; nothing when there are none. */
function minimalList(stdout: string): string[] {
  return stdout.trim().split(',').map((entry) => entry.trim()).filter((entry) => entry !== '');
}

interface SrState {
  xe: ResolvedTool;
  name: string;
  device: string;
  /** SRs of that name, with the device of their PBDs. */
  existing: Array<{ uuid: string; devices: string[] }>;
  attached: boolean;
  attachDetail: string;
}

async function xeTool(host: Host): Promise<ResolvedTool | null> {
  const xe = await resolveTool(host, 'xe', xeDirs);
  // xe only counts on the host itself: a bare name from PATH is not a XenServer.
  return xe.foundAt === null ? null : xe;
}

async function srState(host: Host, xe: ResolvedTool): Promise<SrState | null> {
  const { srName, srDevice } = host.options;
  if (srName === undefined || srDevice === undefined) return null;
  const index = validateDevice('--sr-device', srDevice);
  const listed = await runQuery(host, [xe.command, 'sr-list', `name-label=${srName}`, '--minimal']);
  const existing: SrState['existing'] = [];
  for (const uuid of minimalList(listed.stdout)) {
    const pbds = await runQuery(host, [xe.command, 'pbd-list', `sr-uuid=${uuid}`, 'params=device-config', '--minimal']);
    // device-config of each PBD: "device: /dev/nbd0" (several keys are separated by "; ").
    const devices = [...pbds.stdout.matchAll(/device: ([^;,\s]+)/g)].map((match) => match[1] as string);
    existing.push({ uuid, devices });
  }
  const sizeText = await host.transport.readFile(`/sys/block/nbd${index}/size`);
  const sectors = sizeText === null ? 0 : Number(sizeText.trim());
  const attached = Number.isFinite(sectors) && sectors > 0;
  const attachDetail = sizeText === null
    ? `${srDevice} does not exist (is the nbd module loaded?)`
    : attached ? `${srDevice} is attached (${sectors * 512} bytes)` : `${srDevice} is not attached: meshblock attach VOLUME --device ${srDevice}`;
  return { xe, name: srName, device: srDevice, existing, attached, attachDetail };
}

function ours(state: SrState): boolean {
  return state.existing.length === 1 && (state.existing[0]?.devices ?? []).includes(state.device);
}

function duplicateError(state: SrState): HostModuleError {
  const where = state.existing.map((sr) => `${sr.uuid} on ${sr.devices.join(', ') || 'no device'}`).join('; ');
  return new HostModuleError('MB_ERR_SR_EXISTS', `an SR named '${state.name}' already exists (${where}): XenServer would create a second one; choose another --sr-name`);
}

export const xenSrModule: HostModule = {
  name: 'xen-sr',
  description: 'XenServer shared LVM SR on an attached volume (--sr-name NAME --sr-device /dev/nbdN)',

  async check(host: Host): Promise<Finding> {
    const xe = await xeTool(host);
    if (xe === null) return notApplicable('xen-sr', 'no xe: not a XenServer host', [`no xe in ${xeDirs.join(', ')}`]);
    const state = await srState(host, xe);
    if (state === null) return { module: 'xen-sr', applicable: true, ok: true, summary: `xe present (${xe.command}); no SR asked for`, details: ['to create one: --sr-name NAME --sr-device /dev/nbdN'] };
    if (ours(state)) return { module: 'xen-sr', applicable: true, ok: true, summary: `SR '${state.name}' exists on ${state.device}`, details: [`uuid ${state.existing[0]?.uuid ?? ''}`] };
    if (state.existing.length > 0) throw duplicateError(state);
    return {
      module: 'xen-sr',
      applicable: true,
      ok: false,
      summary: `no SR named '${state.name}' yet`,
      details: [state.attachDetail],
    };
  },

  async plan(host: Host): Promise<Step[]> {
    const xe = await xeTool(host);
    if (xe === null) return [];
    const state = await srState(host, xe);
    if (state === null || ours(state)) return [];
    if (state.existing.length > 0) throw duplicateError(state);
    if (!state.attached) throw new HostModuleError('MB_ERR_SR_DEVICE', state.attachDetail);
    const inventory = await host.transport.readFile(xensourceInventoryPath);
    const hostUuid = inventory === null ? null : parseInstallationUuid(inventory);
    const argv: [string, ...string[]] = [
      xe.command,
      'sr-create',
      'type=lvm',
      'content-type=user',
      'shared=true',
      `name-label=${state.name}`,
      `device-config:device=${state.device}`,
      ...(hostUuid === null ? [] : [`host-uuid=${hostUuid}`]),
    ];
    return [commandStep(argv, `create the shared LVM SR '${state.name}' on ${state.device}`, srCreateTimeoutMs)];
  },

  async apply(host: Host, steps: readonly Step[]): Promise<ApplyResult> {
    return applySteps(host, xenSrModule, steps);
  },
};
