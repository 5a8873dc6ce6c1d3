// meshblock attach VOLUME / meshblock detach DEVICE|VOLUME: a mapped volume as a kernel
// block device on this host, through the SDC's NBD export and the kernel NBD client.
// The work is in hostsetup/nbd-attach.ts; this file is the command line.

import type { Argv } from 'yargs';
import { parseHostPort } from '../common/address.js';
import { InvalidArgumentError, OutOfRangeError } from '../common/errors.js';
import {
  attach,
  attachConnectionsMax,
  attachPlan,
  attachTimeoutSDefault,
  detach,
  formatCommand,
  nbdsMaxDefault,
  readAttachments,
  systemAttachPaths,
  validateDevice,
  type AttachRequest,
} from '../hostsetup/nbd-attach.js';
import { defaultNbdPort } from './nbd-serve.js';

export interface AttachArgs {
  volume: string | undefined;
  sdc: string;
  socket: string | undefined;
  device: string | undefined;
  connections: number;
  timeout: number;
  persist: boolean;
  'read-only': boolean;
  'nbds-max': number;
  'dry-run': boolean;
  list: boolean;
  json: boolean;
}

export interface DetachArgs {
  target: string;
  json: boolean;
}

export function attachOptions(yargs: Argv): Argv<AttachArgs> {
  return yargs
    .positional('volume', { type: 'string', describe: 'the volume (its NBD export name on the SDC)' })
    .option('sdc', { type: 'string', default: `127.0.0.1:${defaultNbdPort}`, describe: 'the SDC serving the volume, HOST:PORT', requiresArg: true })
    .option('socket', { type: 'string', describe: "the SDC's Unix socket instead of TCP", requiresArg: true })
    .option('device', { type: 'string', describe: 'the NBD device to use [default: the first free /dev/nbdN]', requiresArg: true })
    .option('connections', { type: 'number', default: 1, describe: `TCP connections (1 to ${attachConnectionsMax})`, requiresArg: true })
    .option('timeout', { type: 'number', default: attachTimeoutSDefault, describe: 'seconds before an unanswered request fails', requiresArg: true })
    .option('persist', { type: 'boolean', default: false, describe: 'nbd-client stays resident (ioctl interface) and reconnects when the SDC connection drops [default: netlink, no resident process]' })
    .option('read-only', { type: 'boolean', default: false, describe: 'attach read-only' })
    .option('nbds-max', { type: 'number', default: nbdsMaxDefault, describe: 'devices to create when loading the nbd module', requiresArg: true })
    .option('dry-run', { type: 'boolean', default: false, describe: 'print the commands, change nothing' })
    .option('list', { type: 'boolean', default: false, describe: 'list the volumes attached on this host' })
    .option('json', { type: 'boolean', default: false, describe: 'print JSON' })
    .check((argv) => {
      if (argv.list !== true && (argv.volume === undefined || argv.volume === '')) throw new InvalidArgumentError('VOLUME', 'name the volume to attach (or --list)');
      if (argv.socket === undefined) parseHostPort('--sdc', argv.sdc as string);
      if (argv.device !== undefined) validateDevice('--device', argv.device);
      const connections = argv.connections as number;
      if (!Number.isInteger(connections) || connections < 1 || connections > attachConnectionsMax) throw new OutOfRangeError('--connections', `an integer from 1 to ${attachConnectionsMax}`, argv.connections);
      const timeout = argv.timeout as number;
      if (!Number.isInteger(timeout) || timeout < 1 || timeout > 3600) throw new OutOfRangeError('--timeout', 'a number of seconds from 1 to 3600', argv.timeout);
      const nbdsMax = argv['nbds-max'] as number;
      if (!Number.isInteger(nbdsMax) || nbdsMax < 1 || nbdsMax > 1024) throw new OutOfRangeError('--nbds-max', 'an integer from 1 to 1024', argv['nbds-max']);
      return true;
    }) as unknown as Argv<AttachArgs>;
}

export function detachOptions(yargs: Argv): Argv<DetachArgs> {
  return yargs
    .positional('target', { type: 'string', describe: 'the device (/dev/nbdN) or the volume name' })
    .option('json', { type: 'boolean', default: false, describe: 'print JSON' }) as unknown as Argv<DetachArgs>;
}

function request(args: AttachArgs): AttachRequest {
  return {
    volume: args.volume as string,
    sdc: args.socket !== undefined ? { socket: args.socket } : parseHostPort('--sdc', args.sdc),
    device: args.device,
    connections: args.connections,
    timeoutS: args.timeout,
    persist: args.persist,
    readOnly: args['read-only'],
    nbdsMax: args['nbds-max'],
  };
}

export async function attachCommand(args: AttachArgs): Promise<void> {
  if (args.list) {
    const attachments = readAttachments(systemAttachPaths);
    if (args.json) process.stdout.write(`${JSON.stringify(attachments, null, 1)}\n`);
    else for (const entry of attachments) process.stdout.write(`${entry.device}\t${entry.volume}\t${entry.sdc}\n`);
    return;
  }
  if (args['dry-run']) {
    for (const line of attachPlan(request(args))) process.stdout.write(`${formatCommand(line)}\n`);
    return;
  }
  const attachment = await attach(request(args));
  process.stdout.write(args.json ? `${JSON.stringify(attachment, null, 1)}\n` : `${attachment.device}\n`);
}

export async function detachCommand(args: DetachArgs): Promise<void> {
  const result = await detach(args.target);
  process.stdout.write(args.json ? `${JSON.stringify(result)}\n` : `${result.device} detached${result.volume === null ? '' : ` (volume ${result.volume})`}\n`);
}
