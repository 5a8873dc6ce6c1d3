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
