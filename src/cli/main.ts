// The meshblock command line: the only place that wires components together.

import yargs from 'yargs';
import { InvalidArgumentError, MeshblockError, OutOfRangeError } from '../common/errors.js';
import { tuneMalloc } from '../common/native.js';
import { MiB } from '../common/units.js';
import { nbdServe, nbdServeOptions, type NbdServeArgs } from './nbd-serve.js';
import { registerManagementCommands, registerMdmManagementCommands, registerSdcManagementCommands, registerSdsManagementCommands } from './manage.js';
import { sdcStart, sdcStartOptions, type SdcStartArgs } from './sdc-start.js';
import { drvCfgCommand, drvCfgOptions, installDrvCfgCommand, installDrvCfgOptions, type DrvCfgArgs, type InstallDrvCfgArgs } from './drv-cfg.js';
import { attachCommand, attachOptions, detachCommand, detachOptions, type AttachArgs, type DetachArgs } from './attach.js';
import { installCommand, installOptions, type InstallArgs } from './install.js';
import { bundleCommand, bundleOptions, type BundleArgs } from './bundle.js';
import { registerLabCommands } from './lab.js';
import { registerHostCommands } from './host.js';
import { loadtest, loadtestCommand, loadtestDescription, loadtestOptions, type LoadtestArgs } from './loadtest.js';
import { etcdStart, etcdStartOptions, type EtcdStartArgs } from './etcd-start.js';
import { mdmStart, mdmStartOptions, type MdmStartArgs } from './mdm-start.js';
import { sdsStart, sdsStartOptions, type SdsStartArgs } from './sds-start.js';
import { eventsCommand, eventsOptions, type EventsArgs } from './events.js';

// Memory for IO, set before anything allocates (measured in docs/benchmarks.md):
// - Buffer.allocUnsafe takes sizes below half of poolSize from a shared slab. At Node's
//   8 KiB every 4 KiB block, with its header or IO arguments, was an ArrayBuffer of its
//   own: a malloc, external memory that V8 answers with full mark-compact collections, and
//   a free. With 128 KiB slabs, the daemons' per-IO buffers under 64 KiB cost none of that.
// - glibc keeps freed blocks up to 4 MiB, and up to 128 MiB of free heap, mapped: every
//   64 KiB socket read was otherwise a fresh mapping, faulted in page by page (see
//   tuneMalloc in native/meshblock_native.c). 1 MiB reads through the lab: 342 -> 692 MB/s.
Buffer.poolSize = 128 * 1024;
tuneMalloc(4 * MiB, 128 * MiB);

export class UsageError extends MeshblockError {
  constructor(message: string) {
    super('MB_ERR_USAGE', message);
  }
}

/** Exit codes: 0 done, 1 failed at run time, 2 bad usage (flags, values). */
export const exitRuntimeError = 1;
export const exitUsageError = 2;

export async function main(argv: string[]): Promise<void> {
  const cli = yargs(argv)
    .scriptName('meshblock')
    .usage('$0 <command>\n\nSoftware-defined block storage: pooled disks, two-copy volumes, served over NBD.')
    .command('nbd', 'NBD tools', (nbd) =>
      nbd
        .command(
          'serve',
          'export a file or block device over NBD',
          (y) => nbdServeOptions(y),
          async (args) => nbdServe(args as unknown as NbdServeArgs),
        )
        .demandCommand(1, 'nbd: name a subcommand (serve)')
        .strict(),
    )
    .command('sds', 'SDS: the data server on this host\'s devices', (sds) =>
      registerSdsManagementCommands(sds)
        .command(
          'start',
          'serve chunk IO from devices (raw block devices or files)',
          (y) => sdsStartOptions(y),
          async (args) => sdsStart(args as unknown as SdsStartArgs),
        )
        .demandCommand(1, 'sds: name a subcommand (start, add, list, remove, rename)')
        .strict(),
    )
    .command('sdc', 'SDC: serves mapped volumes over NBD on this host', (sdc) =>
      registerSdcManagementCommands(sdc)
        .command(
          'start',
          'register with the MDM and export every volume mapped to this SDC over NBD',
          (y) => sdcStartOptions(y),
          async (args) => sdcStart(args as unknown as SdcStartArgs),
        )
        .command('install-drv-cfg', "write ScaleIO's drv_cfg (/opt/emc/scaleio/sdc/bin/drv_cfg) answered by meshblock drv-cfg", (y) => installDrvCfgOptions(y), (args) => installDrvCfgCommand(args as unknown as InstallDrvCfgArgs))
        .demandCommand(1, 'sdc: name a subcommand (start, list, remove, rename)')
        .strict(),
    )
    .command('mdm', 'MDM: the metadata manager (control plane and REST API)', (mdm) =>
      registerMdmManagementCommands(mdm)
        .command(
          'start',
          'run the MDM over its data directory (creating the cluster at the first start)',
          (y) => mdmStartOptions(y),
          async (args) => mdmStart(args as unknown as MdmStartArgs),
        )
        .demandCommand(1, 'mdm: name a subcommand (start, cluster, switch-ownership)')
        .strict(),
    )
    .command('etcd', 'etcd: a member of the MDM cluster\'s consensus store (Master, Slave and Tie-Breaker hosts)', (etcd) =>
      etcd
        .command(
          'start',
          'run an etcd member in the foreground, TLS with client certificates on both listeners',
          (y) => etcdStartOptions(y),
          async (args) => etcdStart(args as unknown as EtcdStartArgs),
        )
        .demandCommand(1, 'etcd: name a subcommand (start)')
        .strict(),
    );
  registerManagementCommands(cli);
  registerLabCommands(cli);
  registerHostCommands(cli);
  cli.command('drv-cfg', "answer as ScaleIO's drv_cfg: --query_guid, --query_mdms, --query_vols, --rescan", (y) => drvCfgOptions(y), (args) => drvCfgCommand(args as unknown as DrvCfgArgs));
  cli.command('attach [volume]', 'attach a volume as a kernel block device (/dev/nbdN) through the SDC', (y) => attachOptions(y), async (args) => attachCommand(args as unknown as AttachArgs));
  cli.command('detach <target>', 'detach a volume attached with attach (by /dev/nbdN or volume name)', (y) => detachOptions(y), async (args) => detachCommand(args as unknown as DetachArgs));
  cli.command('install', 'install and configure a whole cluster over SSH from a ScaleIO-style CSV (or print a --template)', (y) => installOptions(y), async (args) => installCommand(args as unknown as InstallArgs));
  cli.command('bundle', "write a runtime bundle: this meshblock and this machine's Node with its own loader and libraries, runnable on any x86-64 Linux whatever its C library", (y) => bundleOptions(y), async (args) => bundleCommand(args as unknown as BundleArgs));
  cli.command('events', "the MDM's event log: SDSs down and up, failed devices, rebuilds, capacity, refused logins, changes and who made them", (y) => eventsOptions(y), async (args) => eventsCommand(args as unknown as EventsArgs));
  cli.command(loadtestCommand, loadtestDescription, (y) => loadtestOptions(y), async (args) => loadtest(args as unknown as LoadtestArgs));
  cli
    .demandCommand(1, 'name a command (see meshblock --help)')
    .strict()
    .help()
    .alias('h', 'help')
    .version()
    .wrap(Math.min(110, process.stdout.columns || 110))
    .fail((message, err) => {
      // One clear line and a non-zero exit; the details are in --help.
      if (err instanceof MeshblockError) throw err;
      throw new UsageError(message ?? (err?.message || 'invalid usage'));
    });

  try {
    await cli.parseAsync();
  } catch (err) {
    if (err instanceof MeshblockError) {
      const usage = err instanceof UsageError || err instanceof InvalidArgumentError || err instanceof OutOfRangeError;
      process.stderr.write(`meshblock: ${oneLine(err.message)}\n`);
      process.exitCode = usage ? exitUsageError : exitRuntimeError;
      return;
    }
    process.stderr.write(`meshblock: ${oneLine(err instanceof Error ? err.message : String(err))}\n`);
    process.exitCode = exitRuntimeError;
  }
}

/** yargs writes some messages over several lines; the contract is one line. */
function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
