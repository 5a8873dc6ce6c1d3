// The lab's SDC: how it is started, how its ready line reads, and how the lab sees its
// exports (NBD_OPT_LIST, as `nbdinfo --list` asks). Kept apart so that the rest of the lab
// does not depend on how the SDC is run.
//
// `meshblock sdc start` registers with the MDM under its --name and exports every volume
// mapped to it as an NBD export named after the volume, picking up new mappings within about a
// second. Until a build has it (dist/cli/sdc-start.js), the lab runs without an SDC: the
// volumes are created but not exported, and `lab up` says so.

import * as fs from 'node:fs';
import * as net from 'node:net';
import { fileURLToPath } from 'node:url';
import { formatHostPort, type HostPort } from '../common/address.js';
import {
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_IHAVEOPT,
  NBD_MAGIC,
  NBD_OPT_ABORT,
  NBD_OPT_LIST,
  NBD_REP_ACK,
  NBD_REP_MAGIC,
  NBD_REP_SERVER,
  OPTION_REPLY_HEADER_BYTES,
} from '../nbd/protocol.js';
import { LabError } from './lab-state.js';

export const labSdcName = 'sdc1';
/** The NBD port of the lab's SDC at the first up unless --nbd-port says otherwise: NBD's own. */
export const nbdPortDefault = 10809;
/** One NBD_OPT_LIST exchange gets this long. */
export const exportListTimeoutMs = 5_000;
/** An export list longer than this is refused (it is a lab: a few volumes). */
const exportListBytesMax = 1024 * 1024;

/** Whether this build has `meshblock sdc start` (its module sits next to this one). */
export function sdcAvailable(): boolean {
  return fs.existsSync(fileURLToPath(new URL('./sdc-start.js', import.meta.url)));
}

export function sdcStartArgs(options: { name: string; mdmAddress: string; listen: string; dataDir: string; clusterId: string; secretFile: string; logLevel: string }): string[] {
  return [
    'sdc', 'start',
    '--mdm', options.mdmAddress,
    '--name', options.name,
    '--listen', options.listen,
    '--data-dir', options.dataDir,
    '--cluster-id', options.clusterId,
    '--secret-file', options.secretFile,
    '--log-level', options.logLevel,
  ];
}

/** `sdc NAME (GUID) of cluster ID serving NBD on HOST:PORT`; group 4 is the address. */
export const sdcReadyPattern = /^sdc (\S+) \((\S+)\) of cluster ([0-9a-f]{16}) serving NBD on (\S+)$/m;

export function nbdUri(address: string, exportName: string): string {
  return `nbd://${address}/${encodeURIComponent(exportName)}`;
}

/**
 * The export names an NBD server lists (NBD_OPT_LIST over fixed newstyle), then
 * NBD_OPT_ABORT. Throws LabError if the server cannot be reached or does not speak NBD.
 */
export async function listNbdExports(target: HostPort, timeoutMs = exportListTimeoutMs): Promise<string[]> {
  const socket = net.connect({ host: target.host, port: target.port });
  const reader = new SocketReader(socket);
  const timer = setTimeout(() => socket.destroy(new LabError('MB_ERR_LAB_NBD', `no NBD export list from ${formatHostPort(target)} within ${timeoutMs / 1000} s`)), timeoutMs);
  try {
    const greeting = await reader.read(18);
    if (greeting.readBigUInt64BE(0) !== NBD_MAGIC || greeting.readBigUInt64BE(8) !== NBD_IHAVEOPT) throw new LabError('MB_ERR_LAB_NBD', `${formatHostPort(target)} is not a newstyle NBD server`);
    const serverFlags = greeting.readUInt16BE(16);
    if ((serverFlags & NBD_FLAG_FIXED_NEWSTYLE) === 0) throw new LabError('MB_ERR_LAB_NBD', `${formatHostPort(target)} does not speak fixed newstyle NBD`);
    const clientFlags = Buffer.alloc(4);
    clientFlags.writeUInt32BE(NBD_FLAG_C_FIXED_NEWSTYLE | (serverFlags & NBD_FLAG_NO_ZEROES ? NBD_FLAG_C_NO_ZEROES : 0));
    socket.write(Buffer.concat([clientFlags, option(NBD_OPT_LIST)]));
    const names: string[] = [];
    let listedBytes = 0;
    for (;;) {
      const header = await reader.read(OPTION_REPLY_HEADER_BYTES);
      const lengthBytes = header.readUInt32BE(16);
      listedBytes += OPTION_REPLY_HEADER_BYTES + lengthBytes;
      if (header.readBigUInt64BE(0) !== NBD_REP_MAGIC || header.readUInt32BE(8) !== NBD_OPT_LIST || listedBytes > exportListBytesMax) {
        throw new LabError('MB_ERR_LAB_NBD', `${formatHostPort(target)} answered NBD_OPT_LIST with a malformed reply`);
      }
      const type = header.readUInt32BE(12);
      const data = await reader.read(lengthBytes);
      if (type === NBD_REP_ACK) break;
      if (type !== NBD_REP_SERVER) throw new LabError('MB_ERR_LAB_NBD', `${formatHostPort(target)} refused NBD_OPT_LIST (reply type 0x${type.toString(16)})`);
      const nameBytes = data.length >= 4 ? data.readUInt32BE(0) : Number.MAX_SAFE_INTEGER;
      if (nameBytes > data.length - 4) throw new LabError('MB_ERR_LAB_NBD', `${formatHostPort(target)} listed an export with a malformed name`);
      names.push(data.subarray(4, 4 + nameBytes).toString('utf8'));
    }
    socket.end(option(NBD_OPT_ABORT));
    return names;
  } catch (err) {
    if (err instanceof LabError) throw err;
    throw new LabError('MB_ERR_LAB_NBD', `cannot list the NBD exports at ${formatHostPort(target)}: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
    socket.destroySoon();
  }
}

function option(code: number): Buffer {
  const buffer = Buffer.alloc(16);
  buffer.writeBigUInt64BE(NBD_IHAVEOPT, 0);
  buffer.writeUInt32BE(code, 8);
  buffer.writeUInt32BE(0, 12);
  return buffer;
}

/** Reads exact byte counts from a socket; rejects when it ends or fails first. */
class SocketReader {
  private chunks: Buffer[] = [];
  private bufferedBytes = 0;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;

  constructor(socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.bufferedBytes += chunk.length;
      this.notify();
    });
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('the server closed the connection')));
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  async read(byteCount: number): Promise<Buffer> {
    while (this.bufferedBytes < byteCount) {
      if (this.failure !== null) throw this.failure;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    // Handshake replies are small: joining the chunks once per read costs nothing here.
    const joined = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks);
    const result = joined.subarray(0, byteCount);
    const rest = joined.subarray(byteCount);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.bufferedBytes = rest.length;
    return result;
  }
}
