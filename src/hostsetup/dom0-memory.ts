// The dom0-memory module: Xen's dom0_mem boot option on a XenServer host. Dom0 runs the SDS
// and SDC next to XenServer's own services; XenServer sizes Dom0 for itself (a few hundred
// MiB on small hosts), and an SDS short of memory stalls every volume it serves. Xen reads
// dom0_mem only at boot, so a change needs a reboot, which apply reports.
//
// The setting is read and written with XenServer's own tool, which edits the boot loader's
// configuration for every boot entry:
//   /opt/xensource/libexec/xen-cmdline --get-xen dom0_mem   -> dom0_mem=752M,max:752M
//   /opt/xensource/libexec/xen-cmdline --set-xen dom0_mem=4096M,max:4096M

import { OutOfRangeError } from '../common/errors.js';
import { detectOs, xenCmdlinePath, xensourceInventoryPath } from './host-os.js';
import { applySteps, commandStep, notApplicable, runQuery, type ApplyResult, type Finding, type Host, type HostModule, type Step } from './host-module.js';

export const dom0MemDefault = '4096M';
export const dom0MemMiBMin = 1024;
export const dom0MemMiBMax = 256 * 1024;
export const rebootNote = 'reboot needed: Xen reads dom0_mem only at boot';

/** Validates a Dom0 size as Xen writes it (`4096M`, `4G`) and returns it in MiB. */
export function parseDom0Mem(field: string, text: string): number {
  const match = /^([1-9][0-9]*)([MG])$/.exec(text);
  if (match === null) throw new OutOfRangeError(field, 'a size in M or G as Xen writes it (4096M, 4G)', `'${text}'`);
  const mib = Number(match[1]) * (match[2] === 'G' ? 1024 : 1);
  if (mib < dom0MemMiBMin || mib > dom0MemMiBMax) throw new OutOfRangeError(field, `from ${dom0MemMiBMin}M to ${dom0MemMiBMax / 1024}G`, text);
  return mib;
}

/** The dom0_mem value meshblock sets: a fixed size (min = max), so Dom0 never balloons. */
export function dom0MemValue(size: string): string {
  return `${size},max:${size}`;
}

interface Dom0State {
  current: string | null;
  wanted: string;
}

async function dom0State(host: Host): Promise<Dom0State | Finding> {
  const os = await detectOs(host.transport);
  if (!os.xenServer) return notApplicable('dom0-memory', 'not a XenServer host', [`no ${xensourceInventoryPath}, no ${xenCmdlinePath}`]);
  parseDom0Mem('--dom0-mem', host.options.dom0Mem);
  const wanted = dom0MemValue(host.options.dom0Mem);
  if (!(await host.transport.exists(xenCmdlinePath))) {
    return {
      module: 'dom0-memory',
      applicable: true,
      ok: false,
      summary: `XenServer host without ${xenCmdlinePath}: cannot read or set dom0_mem`,
      details: [`set dom0_mem=${wanted} on Xen's command line in the boot loader configuration by hand, then reboot`],
    };
  }
  const result = await runQuery(host, [xenCmdlinePath, '--get-xen', 'dom0_mem']);
  const said = result.stdout.trim();
  const match = /^dom0_mem=(\S*)$/.exec(said);
  return { current: match === null ? null : (match[1] as string), wanted };
}

export const dom0MemoryModule: HostModule = {
  name: 'dom0-memory',
  description: 'XenServer Dom0 memory (dom0_mem on the Xen command line)',

  async check(host: Host): Promise<Finding> {
    const state = await dom0State(host);
    if ('module' in state) return state;
    const ok = state.current === state.wanted;
    return {
      module: 'dom0-memory',
      applicable: true,
      ok,
      summary: ok ? `dom0_mem=${state.wanted}` : `dom0_mem is ${state.current === null ? 'not set' : state.current}, wanted ${state.wanted}`,
      details: ok ? ['Xen applies dom0_mem at boot: if it was set since the last boot, the host needs a reboot'] : [],
    };
  },

  async plan(host: Host): Promise<Step[]> {
    const state = await dom0State(host);
    if ('module' in state || state.current === state.wanted) return [];
    return [commandStep([xenCmdlinePath, '--set-xen', `dom0_mem=${state.wanted}`], `give Dom0 a fixed ${host.options.dom0Mem} (now ${state.current ?? 'not set'}); takes effect at the next boot`)];
  },

  async apply(host: Host, steps: readonly Step[]): Promise<ApplyResult> {
    return applySteps(host, dom0MemoryModule, steps, { notesWhenChanged: [rebootNote] });
  },
};
