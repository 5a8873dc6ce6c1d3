// The nbd-module module: the kernel's NBD client loaded now and at every boot, with enough
// devices for meshblock volumes. `meshblock attach` loads the module itself when it must;
// this makes it part of the host's setup, with the same parameters at boot as now:
//   /etc/modules-load.d/meshblock-nbd.conf   nbd                         (systemd loads it at boot)
//   /etc/modprobe.d/meshblock-nbd.conf       options nbd nbds_max=16 max_part=16
//   modprobe nbd nbds_max=16 max_part=16                                  (now, if not loaded)
// The files are meshblock's own; an existing one keeps its other lines.

import { applySteps, commandStep, fileStep, lastLine, resolveTool, type ApplyResult, type CommandStep, type Finding, type Host, type HostModule, type Step } from './host-module.js';
import { modprobeCommand, nbdPartitionsMax } from './nbd-attach.js';
import type { RunResult } from './host-transport.js';

export const modulesLoadPath = '/etc/modules-load.d/meshblock-nbd.conf';
export const modprobeConfPath = '/etc/modprobe.d/meshblock-nbd.conf';
export const nbdSysModulePath = '/sys/module/nbd';

const header = '# Written by meshblock host apply (nbd-module): the kernel NBD client for meshblock volumes.\n';

function optionsLine(nbdsMax: number): string {
  return `options nbd nbds_max=${nbdsMax} max_part=${nbdPartitionsMax}`;
}

function codeLines(text: string): string[] {
  return text.split('\n').map((line) => line.replace(/#.*$/, '').trim()).filter((line) => line !== '');
}

/** The text with `line` added (after the existing lines), or a new file with a header. */
function withLine(text: string | null, line: string): string {
  if (text === null || text === '') return `${header}${line}\n`;
  return `${text}${text.endsWith('\n') ? '' : '\n'}${line}\n`;
}

interface NbdState {
  loaded: boolean;
  nbdsMaxLoaded: number | null;
  modulesLoad: string | null;
  modprobeConf: string | null;
  bootOk: boolean;
  optionsOk: boolean;
}

async function nbdState(host: Host): Promise<NbdState> {
  const loaded = await host.transport.exists(nbdSysModulePath);
  const nbdsMaxText = loaded ? await host.transport.readFile(`${nbdSysModulePath}/parameters/nbds_max`) : null;
  const modulesLoad = await host.transport.readFile(modulesLoadPath);
  const modprobeConf = await host.transport.readFile(modprobeConfPath);
  const wanted = optionsLine(host.options.nbdsMax).split(/\s+/).join(' ');
  return {
    loaded,
    nbdsMaxLoaded: nbdsMaxText === null || !/^\d+$/.test(nbdsMaxText.trim()) ? null : Number(nbdsMaxText.trim()),
    modulesLoad,
    modprobeConf,
    bootOk: modulesLoad !== null && codeLines(modulesLoad).includes('nbd'),
    optionsOk: modprobeConf !== null && codeLines(modprobeConf).some((line) => line.split(/\s+/).join(' ') === wanted),
  };
}

export const nbdModuleModule: HostModule = {
  name: 'nbd-module',
  description: 'the nbd kernel module loaded now and at boot (modprobe, /etc/modules-load.d, /etc/modprobe.d)',

  async check(host: Host): Promise<Finding> {
    const state = await nbdState(host);
    const details = [
      state.loaded ? `loaded${state.nbdsMaxLoaded === null ? '' : ` with nbds_max=${state.nbdsMaxLoaded}`}` : `not loaded (no ${nbdSysModulePath})`,
      state.bootOk ? `${modulesLoadPath} loads it at boot` : `not loaded at boot: ${modulesLoadPath} ${state.modulesLoad === null ? 'is missing' : 'does not list nbd'}`,
      state.optionsOk ? `${modprobeConfPath} sets ${optionsLine(host.options.nbdsMax)}` : `${modprobeConfPath} ${state.modprobeConf === null ? 'is missing' : `lacks '${optionsLine(host.options.nbdsMax)}'`}`,
    ];
    if (state.loaded && state.nbdsMaxLoaded !== null && state.nbdsMaxLoaded < host.options.nbdsMax) {
      details.push(`the loaded module has ${state.nbdsMaxLoaded} devices, fewer than ${host.options.nbdsMax}: the options take effect when it is next loaded (rmmod nbd with no device in use, or a reboot)`);
    }
    const ok = state.loaded && state.bootOk && state.optionsOk;
    const missing = [state.loaded ? null : 'not loaded', state.bootOk ? null : 'not loaded at boot', state.optionsOk ? null : 'no options file'].filter((entry) => entry !== null);
    return { module: 'nbd-module', applicable: true, ok, summary: ok ? 'nbd is loaded and loads at boot' : `nbd module: ${missing.join(', ')}`, details };
  },

  async plan(host: Host): Promise<Step[]> {
    const state = await nbdState(host);
    const steps: Step[] = [];
    // The files first: a modprobe after them loads with the same options as the next boot.
    if (!state.optionsOk) {
      const line = optionsLine(host.options.nbdsMax);
      const existing = state.modprobeConf;
      // An `options nbd` line of ours with other values is replaced, not left to contradict.
      const replaced = existing !== null && /^options\s+nbd\b.*$/m.test(existing) ? existing.replace(/^options\s+nbd\b.*$/m, line) : withLine(existing, line);
      steps.push(fileStep(modprobeConfPath, existing, replaced, `nbd module options: ${host.options.nbdsMax} devices of ${nbdPartitionsMax} partitions`, 0o644));
    }
    if (!state.bootOk) steps.push(fileStep(modulesLoadPath, state.modulesLoad, withLine(state.modulesLoad, 'nbd'), 'load nbd at boot', 0o644));
    if (!state.loaded) {
      const modprobe = await resolveTool(host, 'modprobe');
      const line = modprobeCommand(host.options.nbdsMax);
      steps.push(commandStep([modprobe.command, ...line.args], 'load nbd now'));
    }
    return steps;
  },

  async apply(host: Host, steps: readonly Step[]): Promise<ApplyResult> {
    return applySteps(host, nbdModuleModule, steps, {
      async explainFailure(step: CommandStep, result: RunResult) {
        const said = lastLine(result.stderr) || `exit ${result.code}`;
        return `cannot load the nbd kernel module (${step.argv.join(' ')}): ${said}; this kernel may not ship it (check: modinfo nbd)`;
      },
    });
  },
};
