import { InvalidArgumentError, OutOfRangeError } from './errors.js';

export interface HostPort {
  host: string;
  port: number;
}

/**
 * Parses `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (host defaults to `defaultHost`, which is
 * loopback everywhere in meshblock: nothing listens beyond loopback unless told to).
 */
export function parseHostPort(field: string, text: string, defaultHost = '127.0.0.1'): HostPort {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d+)$/.exec(text.trim());
  if (match === null) {
    throw new InvalidArgumentError(field, `expected HOST:PORT or [IPv6]:PORT, got '${text}'`);
  }
  const host = match[1] ?? (match[2] === '' || match[2] === undefined ? defaultHost : match[2]);
  const port = Number(match[3]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new OutOfRangeError(field, 'a port from 0 to 65535', match[3]);
  }
  return { host, port };
}

export function formatHostPort(address: HostPort): string {
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/**
 * Parses a comma-separated list of HOST:PORT entries (`--mdm H:P[,H:P...]`, ScaleIO's "MDM
 * IPs") into their formatted forms, in the order given. Each entry is checked as by
 * parseHostPort and the error names the entry; empty entries, duplicates (after defaults:
 * `:7000` is `127.0.0.1:7000`) and more than `countMax` entries are refused.
 */
export function parseHostPortList(field: string, text: string, countMax: number, defaultHost = '127.0.0.1'): string[] {
  const entries = text.split(',').map((entry) => entry.trim());
  if (entries.length > countMax) throw new InvalidArgumentError(field, `at most ${countMax} addresses, got ${entries.length}`);
  const addresses: string[] = [];
  entries.forEach((entry, index) => {
    const which = entries.length > 1 ? `entry ${index + 1} ('${entry}')` : `'${entry}'`;
    if (entry === '') throw new InvalidArgumentError(field, `entry ${index + 1} is empty: expected HOST:PORT[,HOST:PORT...]`);
    let address: string;
    try {
      address = formatHostPort(parseHostPort(field, entry, defaultHost));
    } catch (err) {
      const prefix = `${field}: `;
      if (entries.length === 1 || !(err instanceof Error) || !err.message.startsWith(prefix)) throw err;
      // The same reason, naming the entry of the list it is about.
      throw new InvalidArgumentError(field, `${which}: ${err.message.slice(prefix.length)}`);
    }
    if (addresses.includes(address)) throw new InvalidArgumentError(field, `${which} is given twice (${address})`);
    addresses.push(address);
  });
  return addresses;
}
