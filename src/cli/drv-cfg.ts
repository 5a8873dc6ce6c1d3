// meshblock drv-cfg: what ScaleIO's /opt/emc/scaleio/sdc/bin/drv_cfg answers about the SDC on
// this host, in its output format, for the tools that run it (older os-brick, the PowerFlex
// CSI driver's node plugin, Puppet modules, operators' scripts):
//
//   --query_guid    B0E3BFB8-C20B-43BF-93C8-13339E85AA50          (upper case, as drv_cfg prints)
//   --query_mdms    Retrieved 1 mdm(s)
//                   MDM-ID <system id> SDC ID <sdc id> INSTALLATION ID <system id> IPs [0]-IP [1]-IP
//   --query_vols    Retrieved N volume(s)
//                   VOL-ID <volume id> MDM-ID <system id>
//   --rescan        ScaleIO's SDC asks its MDM for new mappings; meshblock's MDM pushes every
//                   change to the SDC, so there is nothing to ask: it checks the SDC runs.
//
// The SDC (`sdc start`) keeps what these answer in DATA-DIR/drv_cfg.json, rewritten after each
// view from the MDM. `meshblock sdc install-drv-cfg` writes /opt/emc/scaleio/sdc/bin/drv_cfg, a
// sh script running this command (only when asked: the path is ScaleIO's).
//
// Not answered (an error naming them): --add_mdm, --mod_mdm_ip, --remove_mdm and the rest of
// drv_cfg's configuration options: the SDC's MDMs are its --mdm flag.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Argv } from 'yargs';
import { InvalidArgumentError, MeshblockError } from '../common/errors.js';
import { nodeCommand } from '../common/node-command.js';

export const drvCfgStateFile = 'drv_cfg.json';
export const drvCfgPathDefault = '/opt/emc/scaleio/sdc/bin/drv_cfg';
const sdcDataDirDefault = '/var/lib/meshblock/sdc';

/** What `sdc start` records for drv-cfg. */
export interface DrvCfgState {
  guid: string;
  systemId: string;
  sdcId: string | null;
  /** The MDM wire addresses, HOST:PORT. */
  mdmAddresses: string[];
  volumes: Array<{ id: string; name: string }>;
  pid: number;
}

export function writeDrvCfgState(dataDir: string, state: DrvCfgState): void {
  const file = path.join(dataDir, drvCfgStateFile);
  fs.writeFileSync(`${file}.tmp`, `${JSON.stringify(state, null, 1)}\n`);
  fs.renameSync(`${file}.tmp`, file);
}

export interface DrvCfgArgs {
  query_guid: boolean;
  query_mdms: boolean;
  query_vols: boolean;
  rescan: boolean;
  'data-dir': string;
}

export function drvCfgOptions(yargs: Argv): Argv<DrvCfgArgs> {
  return yargs
    .option('query_guid', { type: 'boolean', default: false, describe: "print the SDC's GUID" })
    .option('query_mdms', { type: 'boolean', default: false, describe: 'print the MDMs the SDC knows, with the system and SDC ids' })
    .option('query_vols', { type: 'boolean', default: false, describe: 'print the volumes mapped to the SDC' })
    .option('rescan', { type: 'boolean', default: false, describe: 'check the SDC runs (it learns of mappings from the MDM unasked)' })
    .option('data-dir', { type: 'string', default: sdcDataDirDefault, describe: "the SDC's data directory", requiresArg: true })
    .parserConfiguration({ 'camel-case-expansion': false })
    .check((argv) => {
      const chosen = (['query_guid', 'query_mdms', 'query_vols', 'rescan'] as const).filter((name) => argv[name] === true);
      if (chosen.length !== 1) throw new InvalidArgumentError('drv-cfg', 'give exactly one of --query_guid, --query_mdms, --query_vols, --rescan');
      return true;
    }) as unknown as Argv<DrvCfgArgs>;
}

function readState(dataDir: string): DrvCfgState {
  const file = path.join(dataDir, drvCfgStateFile);
  let state: DrvCfgState;
  try {
    state = JSON.parse(fs.readFileSync(file, 'utf8')) as DrvCfgState;
  } catch (err) {
    throw new MeshblockError('MB_ERR_SDC_NOT_RUNNING', `no SDC state in ${file} (has \`meshblock sdc start --data-dir ${dataDir}\` run?): ${(err as Error).message}`);
  }
  return state;
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The host of HOST:PORT or [V6]:PORT. */
function hostOf(address: string): string {
  const v6 = /^\[(.+)\]:\d+$/.exec(address);
  if (v6 !== null) return v6[1] as string;
  return address.replace(/:\d+$/, '');
}

export function drvCfgOutput(args: DrvCfgArgs, state: DrvCfgState): string {
  if (args.query_guid) return `${state.guid.toUpperCase()}\n`;
  if (args.query_mdms) {
    const ips = state.mdmAddresses.map((address, index) => `[${index}]-${hostOf(address)}`).join(' ');
    return `Retrieved 1 mdm(s)\nMDM-ID ${state.systemId} SDC ID ${state.sdcId ?? '0000000000000000'} INSTALLATION ID ${state.systemId} IPs ${ips}\n`;
  }
  if (args.query_vols) return `Retrieved ${state.volumes.length} volume(s)\n${state.volumes.map((volume) => `VOL-ID ${volume.id} MDM-ID ${state.systemId}\n`).join('')}`;
  return '';
}

export function drvCfgCommand(args: DrvCfgArgs): void {
  const state = readState(args['data-dir']);
  if (!running(state.pid)) throw new MeshblockError('MB_ERR_SDC_NOT_RUNNING', `the SDC of ${args['data-dir']} (pid ${state.pid}) is not running`);
  process.stdout.write(drvCfgOutput(args, state));
}

export interface InstallDrvCfgArgs {
  path: string;
  'data-dir': string;
}

export function installDrvCfgOptions(yargs: Argv): Argv<InstallDrvCfgArgs> {
  return yargs
    .option('path', { type: 'string', default: drvCfgPathDefault, describe: 'where to write the drv_cfg script', requiresArg: true })
    .option('data-dir', { type: 'string', default: sdcDataDirDefault, describe: "the SDC's data directory", requiresArg: true }) as unknown as Argv<InstallDrvCfgArgs>;
}

const shellQuote = (value: string): string => `'${value.replaceAll("'", "'\\''")}'`;

/** The drv_cfg script: this meshblock, started as this process was (a bundle's loader included). */
export function drvCfgScript(dataDir: string): string {
  const node = nodeCommand();
  const script = path.resolve(process.argv[1] ?? 'meshblock');
  const argv = [node.command, ...node.args, script, 'drv-cfg', '--data-dir', path.resolve(dataDir)];
  return `#!/bin/sh\n# ScaleIO's drv_cfg, answered by meshblock (meshblock sdc install-drv-cfg).\nexec ${argv.map(shellQuote).join(' ')} "$@"\n`;
}

export function installDrvCfgCommand(args: InstallDrvCfgArgs): void {
  fs.mkdirSync(path.dirname(args.path), { recursive: true });
  fs.writeFileSync(args.path, drvCfgScript(args['data-dir']), { mode: 0o755 });
  fs.chmodSync(args.path, 0o755);
  process.stdout.write(`${args.path}\n`);
}
