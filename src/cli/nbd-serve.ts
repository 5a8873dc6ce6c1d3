// meshblock nbd serve: one file or block device as an NBD export. Useful on its own, and
// the way to measure the protocol core against nbdkit with the storage held equal.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { createSecureContext } from 'node:tls';
import type { Level } from 'pino';
import type { Argv } from 'yargs';
import { formatHostPort, parseHostPort } from '../common/address.js';
import { InvalidArgumentError } from '../common/errors.js';
import { nbdStringBytesMax } from '../common/limits.js';
import { formatBytes } from '../common/units.js';
import { StaticExports } from '../nbd/exports.js';
import { FileBackend } from '../nbd/file-backend.js';
import type { TlsMode, TlsPolicy } from '../nbd/handshake-newstyle.js';
import { NbdServer } from '../nbd/server.js';
import { createRootLogger, logLevels } from './log.js';
import { runUntilSignal } from './signals.js';

export interface NbdServeArgs {
  file: string;
  name: string;
  description: string | undefined;
  listen: string | undefined;
  socket: string | undefined;
  'read-only': boolean;
  'tls-cert': string | undefined;
  'tls-key': string | undefined;
  tls: TlsMode | undefined;
  'log-level': Level;
}

export const defaultNbdPort = 10809;

export function nbdServeOptions(yargs: Argv): Argv<NbdServeArgs> {
  return yargs
    .option('file', { type: 'string', demandOption: true, describe: 'regular file or block device to export', requiresArg: true })
    .option('name', { type: 'string', default: '', describe: 'export name (the empty name is the default export)' })
    .option('description', { type: 'string', describe: 'export description shown to clients' })
    .option('listen', { type: 'string', describe: `TCP HOST:PORT to listen on [default: 127.0.0.1:${defaultNbdPort}]`, requiresArg: true })
    .option('socket', { type: 'string', describe: 'Unix socket path to listen on instead of TCP', requiresArg: true })
    .option('read-only', { type: 'boolean', default: false, describe: 'refuse writes (EPERM)' })
    .option('tls-cert', { type: 'string', describe: 'PEM certificate: enables STARTTLS', requiresArg: true })
    .option('tls-key', { type: 'string', describe: 'PEM private key for --tls-cert', requiresArg: true })
    .option('tls', { choices: ['off', 'on', 'require'] as const, describe: 'TLS mode [default: on with --tls-cert, else off]' })
    .option('log-level', { choices: logLevels, default: 'info' as Level, describe: 'log level (logs go to stderr)' })
    .conflicts('listen', 'socket')
    .check((argv) => {
      if (argv.file.trim() === '') throw new InvalidArgumentError('--file', 'must not be empty');
      if (Buffer.byteLength(argv.name) > nbdStringBytesMax) {
        throw new InvalidArgumentError('--name', `longer than ${nbdStringBytesMax} bytes`);
      }
      if ((argv['tls-cert'] === undefined) !== (argv['tls-key'] === undefined)) {
        throw new InvalidArgumentError('--tls-cert/--tls-key', 'give both or neither');
      }
      if (argv.tls !== undefined && argv.tls !== 'off' && argv['tls-cert'] === undefined) {
        throw new InvalidArgumentError('--tls', `'${argv.tls}' needs --tls-cert and --tls-key`);
      }
      if (argv.listen !== undefined) parseHostPort('--listen', argv.listen);
      return true;
    }) as unknown as Argv<NbdServeArgs>;
}

function loadTlsPolicy(args: NbdServeArgs): TlsPolicy {
  const certPath = args['tls-cert'];
  const keyPath = args['tls-key'];
  if (certPath === undefined || keyPath === undefined || args.tls === 'off') return { mode: 'off', secureContext: null };
  const read = (field: string, file: string): Buffer => {
    try {
      return fs.readFileSync(file);
    } catch (err) {
      throw new InvalidArgumentError(field, `cannot read ${file}: ${(err as Error).message}`);
    }
  };
  try {
    const secureContext = createSecureContext({ cert: read('--tls-cert', certPath), key: read('--tls-key', keyPath), minVersion: 'TLSv1.2' });
    return { mode: args.tls ?? 'on', secureContext };
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw err;
    throw new InvalidArgumentError('--tls-cert/--tls-key', `not a usable certificate and key: ${(err as Error).message}`);
  }
}

export async function nbdServe(args: NbdServeArgs): Promise<void> {
  const log = createRootLogger(args['log-level'], 'nbd-serve');
  const tls = loadTlsPolicy(args);
  const backend = await FileBackend.open(args.file, { readOnly: args['read-only'], log: log.child({ component: 'file-backend' }) });
  const description = args.description ?? `${path.basename(args.file)} (${formatBytes(backend.sizeBytes)})`;
  const server = new NbdServer({
    exports: new StaticExports([{ name: args.name, description, backend }]),
    tls,
    log,
  });
  let uri: string;
  try {
    if (args.socket !== undefined) {
      await server.listenUnix(args.socket);
      const scheme = tls.mode === 'require' ? 'nbds+unix' : 'nbd+unix';
      uri = `${scheme}:///${encodeURIComponent(args.name)}?socket=${args.socket}`;
    } else {
      const wanted = parseHostPort('--listen', args.listen ?? `127.0.0.1:${defaultNbdPort}`);
      const bound = await server.listenTcp(wanted.host, wanted.port);
      const scheme = tls.mode === 'require' ? 'nbds' : 'nbd';
      uri = `${scheme}://${formatHostPort({ host: bound.address, port: bound.port })}/${encodeURIComponent(args.name)}`;
    }
  } catch (err) {
    await backend.close();
    throw err;
  }
  log.info({ file: args.file, sizeBytes: backend.sizeBytes, readOnly: args['read-only'], tls: tls.mode, uri }, 'nbd export ready');
  process.stdout.write(`serving ${args.file} (${formatBytes(backend.sizeBytes)}) at ${uri}\n`);

  await runUntilSignal(log, async () => {
    await server.close();
    await backend.close();
  }, () => server.destroy());
}
