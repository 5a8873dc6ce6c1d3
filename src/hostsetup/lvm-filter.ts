// The lvm-filter module: /etc/lvm/lvm.conf accepts NBD devices, so that LVM (and XenServer's
// LVM SR) can use a meshblock volume attached as /dev/nbdN. The text work is lvm-conf.ts;
// this file reads and writes the host's file through the transport.

import { checkLvmConf, editLvmConf } from './lvm-conf.js';
import { applySteps, fileStep, type Finding, type Host, type HostModule, type Step } from './host-module.js';

export const lvmConfPath = '/etc/lvm/lvm.conf';

const missingSummary = `no ${lvmConfPath}: LVM is not installed (install lvm2)`;

export const lvmFilterModule: HostModule = {
  name: 'lvm-filter',
  description: 'LVM accepts NBD devices (/etc/lvm/lvm.conf: devices/types, filter, global_filter)',

  async check(host: Host): Promise<Finding> {
    const text = await host.transport.readFile(lvmConfPath);
    if (text === null) return { module: 'lvm-filter', applicable: true, ok: false, summary: missingSummary, details: [] };
    const check = checkLvmConf(text);
    const rejecting = check.filters.filter((filter) => !filter.acceptsNbd).map((filter) => `devices/${filter.name}`);
    const missing = [...rejecting, ...(check.typesListNbd ? [] : ['"nbd" in devices/types'])];
    return {
      module: 'lvm-filter',
      applicable: true,
      ok: check.ok,
      summary: check.ok ? 'LVM accepts NBD devices' : `LVM does not accept NBD devices yet: ${missing.join(', ')}`,
      details: check.findings,
    };
  },

  async plan(host: Host): Promise<Step[]> {
    const text = await host.transport.readFile(lvmConfPath);
    if (text === null) return [];
    const edit = editLvmConf(text);
    if (!edit.changed) return [];
    return [fileStep(lvmConfPath, text, edit.text, [...edit.changes, ...edit.warnings].join('; '))];
  },

  async apply(host: Host, steps: readonly Step[]) {
    return applySteps(host, lvmFilterModule, steps);
  },
};
