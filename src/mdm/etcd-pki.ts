// The etcd cluster's PKI: one CA of its own, a certificate per member and one per client.
// etcd runs with client-certificate auth on both listeners (`meshblock etcd start`), so a
// process that is not given a pair signed by this CA can neither join as a member nor read
// or write the MDM's state. Made with the openssl command, as the REST API's certificate is
// (src/mdm/tls.ts), on the installing machine, then copied to the hosts.
//
// Files in the directory (keys 0600, certificates 0644):
//
//   ca.crt ca.key                   the cluster CA (ca.key only needed to add pairs later)
//   member-<name>.crt/.key          a member's pair for its client and peer listeners:
//                                   serverAuth + clientAuth (peers dial each other with it),
//                                   SAN = the member's IPs, 127.0.0.1 and localhost
//   client-<name>.crt/.key          a client's pair (clientAuth); an MDM presents
//                                   client-<its name>, the tests client-etcdctl
//
// Idempotent: what exists is kept (and checked against the CA), what is missing is made,
// so adding a member later adds its pair, signed by the same CA.

import { execFileSync } from 'node:child_process';
import { X509Certificate, createPrivateKey, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { isIP } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { MeshblockError } from '../common/errors.js';
import { opensslTimeoutMs } from '../common/limits.js';

export const etcdCaCertificateFileName = 'ca.crt';
export const etcdCaKeyFileName = 'ca.key';
/** Ten years, as the REST API's certificate (apiCertificateDays): nobody renews a lab's. */
export const etcdCertificateDays = 3650;
/** A member's or client's name: a host name in the cluster (ScaleIO's 31-character names). */
export const etcdNamePattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}$/;

export class EtcdPkiError extends MeshblockError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('MB_ERR_ETCD_PKI', message, options);
  }
}

export interface EtcdPkiMember {
  /** The member's name (`--name` of `meshblock etcd start`). */
  name: string;
  /** The addresses it listens on and peers and clients dial (IP literals). */
  ips: readonly string[];
}

export interface EtcdPkiRequest {
  members: readonly EtcdPkiMember[];
  /** Names of the clients to make pairs for (an MDM's name, `etcdctl`, ...). */
  clients: readonly string[];
}

export interface EtcdPkiResult {
  dir: string;
  /** Files this call made, relative to `dir`, in the order made. */
  created: string[];
}

export interface EtcdClientTls {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

export interface EtcdPairPaths {
  certPath: string;
  keyPath: string;
}

export function memberPairPaths(dir: string, name: string): EtcdPairPaths {
  return { certPath: path.join(dir, `member-${name}.crt`), keyPath: path.join(dir, `member-${name}.key`) };
}

export function clientPairPaths(dir: string, name: string): EtcdPairPaths {
  return { certPath: path.join(dir, `client-${name}.crt`), keyPath: path.join(dir, `client-${name}.key`) };
}

export function caPaths(dir: string): EtcdPairPaths {
  return { certPath: path.join(dir, etcdCaCertificateFileName), keyPath: path.join(dir, etcdCaKeyFileName) };
}

/** Throws EtcdPkiError unless `name` can name a member or client (it becomes part of a file name). */
export function checkEtcdName(field: string, name: string): void {
  if (!etcdNamePattern.test(name)) throw new EtcdPkiError(`${field} '${name}' must be 1 to 31 letters, digits, _ . - (starting with a letter or digit)`);
}

interface PairToMake {
  kind: 'member' | 'client';
  name: string;
  paths: EtcdPairPaths;
  /** openssl x509v3 extension lines for the certificate. */
  extensions: string[];
  /** The IPs a member's certificate must name (none for a client). */
  ips: string[];
}

/**
 * Makes whatever of the PKI in `dir` is missing for `request` (see the top of this file) and
 * keeps what exists, after checking that each existing pair parses, belongs together and
 * is signed by the directory's CA. Throws EtcdPkiError on bad names or addresses, half a
 * pair, a pair of another CA, or an openssl failure.
 */
export function createEtcdPki(dir: string, request: EtcdPkiRequest): EtcdPkiResult {
  const pairs = planPairs(dir, request);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const created: string[] = [];
  const ca = caPaths(dir);
  const missing = pairs.filter((pair) => !pairExists(pair.paths));
  const caState = pairState(ca);
  if (caState === 'half' && !fs.existsSync(ca.certPath)) {
    // The key without its certificate signs pairs that nobody's ca.crt trusts. The reverse,
    // ca.crt alone, is what a host is given: enough to check, not to sign (below).
    throw new EtcdPkiError(`${ca.certPath} is missing while ${ca.keyPath} exists; restore it`);
  }
  if (caState === 'none') {
    const existing = fs.readdirSync(dir).find((file) => /^(?:member|client)-.+\.(?:crt|key)$/.test(file));
    if (existing !== undefined) {
      // A new CA would leave the pairs already handed out trusted by nobody: the CA was
      // lost, not never made.
      throw new EtcdPkiError(`${ca.certPath} and ${ca.keyPath} are missing but ${path.join(dir, existing)} exists; restore the CA (a new one would not trust the existing pairs)`);
    }
    makeCa(ca);
    created.push(etcdCaCertificateFileName, etcdCaKeyFileName);
  }
  const caCertificate = readCertificate(ca.certPath);
  for (const pair of pairs) {
    if (!pairExists(pair.paths)) continue;
    checkPair(pair.paths, caCertificate);
    // A member whose addresses changed keeps a certificate its peers would refuse (they
    // check the IP they dialed against its SANs): say so, rather than keep it silently.
    const certificate = readCertificate(pair.paths.certPath);
    const unnamed = pair.ips.filter((ip) => certificate.checkIP(ip) === undefined);
    if (unnamed.length > 0) throw new EtcdPkiError(`${pair.paths.certPath} does not name ${unnamed.join(', ')}; remove ${path.basename(pair.paths.certPath)} and ${path.basename(pair.paths.keyPath)} to make a pair for the new addresses`);
  }
  if (missing.length > 0 && !fs.existsSync(ca.keyPath)) throw new EtcdPkiError(`${ca.keyPath} is needed to sign the new pairs (${missing.map((pair) => path.basename(pair.paths.certPath)).join(', ')})`);
  for (const pair of missing) {
    makeSignedPair(ca, pair);
    created.push(path.basename(pair.paths.certPath), path.basename(pair.paths.keyPath));
  }
  return { dir, created };
}

/** Reads `ca.crt` and `client-<name>.crt/.key` for an etcd client (an MDM presents its own name). */
export function loadEtcdClientTls(dir: string, name: string): EtcdClientTls {
  checkEtcdName('client name', name);
  const ca = caPaths(dir);
  const client = clientPairPaths(dir, name);
  const caCertificate = readCertificate(ca.certPath);
  checkPair(client, caCertificate);
  return { ca: fs.readFileSync(ca.certPath), cert: fs.readFileSync(client.certPath), key: fs.readFileSync(client.keyPath) };
}

/**
 * The files `etcd` needs for member `name`: the CA certificate and the member's pair,
 * checked as loadEtcdClientTls checks a client's (present, matching, signed by the CA).
 */
export function etcdMemberTlsFiles(dir: string, name: string): { caPath: string } & EtcdPairPaths {
  checkEtcdName('member name', name);
  const ca = caPaths(dir);
  const member = memberPairPaths(dir, name);
  checkPair(member, readCertificate(ca.certPath));
  return { caPath: ca.certPath, ...member };
}

function planPairs(dir: string, request: EtcdPkiRequest): PairToMake[] {
  const pairs: PairToMake[] = [];
  const memberNames = new Set<string>();
  for (const member of request.members) {
    checkEtcdName('member name', member.name);
    if (memberNames.has(member.name)) throw new EtcdPkiError(`member name '${member.name}' is given twice`);
    memberNames.add(member.name);
    const ips = new Set<string>();
    for (const ip of member.ips) {
      if (isIP(ip) === 0) throw new EtcdPkiError(`member '${member.name}': '${ip}' is not an IP address`);
      ips.add(ip);
    }
    ips.add('127.0.0.1');
    const subjectAltNames = [...[...ips].map((ip) => `IP:${ip}`), 'DNS:localhost'];
    pairs.push({
      kind: 'member',
      name: member.name,
      paths: memberPairPaths(dir, member.name),
      ips: [...ips],
      extensions: ['basicConstraints = critical, CA:FALSE', 'keyUsage = critical, digitalSignature, keyAgreement', 'extendedKeyUsage = serverAuth, clientAuth', `subjectAltName = ${subjectAltNames.join(', ')}`],
    });
  }
  const clientNames = new Set<string>();
  for (const name of request.clients) {
    checkEtcdName('client name', name);
    if (clientNames.has(name)) throw new EtcdPkiError(`client name '${name}' is given twice`);
    clientNames.add(name);
    pairs.push({
      kind: 'client',
      name,
      paths: clientPairPaths(dir, name),
      ips: [],
      extensions: ['basicConstraints = critical, CA:FALSE', 'keyUsage = critical, digitalSignature, keyAgreement', 'extendedKeyUsage = clientAuth'],
    });
  }
  return pairs;
}

function pairState(paths: EtcdPairPaths): 'both' | 'half' | 'none' {
  const certExists = fs.existsSync(paths.certPath);
  const keyExists = fs.existsSync(paths.keyPath);
  if (certExists && keyExists) return 'both';
  return certExists || keyExists ? 'half' : 'none';
}

function pairExists(paths: EtcdPairPaths): boolean {
  const state = pairState(paths);
  if (state === 'half') {
    // Half a pair is damage (a copy that went wrong), not a pair to make: a new key would
    // silently replace a certificate someone may already hold.
    const missing = fs.existsSync(paths.certPath) ? paths.keyPath : paths.certPath;
    throw new EtcdPkiError(`${missing} is missing while its other half exists; restore it or remove both to make a new pair`);
  }
  return state === 'both';
}

function readCertificate(certPath: string): X509Certificate {
  if (!fs.existsSync(certPath)) throw new EtcdPkiError(`${certPath} is missing`);
  try {
    return new X509Certificate(fs.readFileSync(certPath));
  } catch (err) {
    throw new EtcdPkiError(`${certPath}: cannot read a PEM certificate: ${(err as Error).message}`, { cause: err });
  }
}

/** Throws EtcdPkiError unless the pair exists, belongs together and is signed by `ca`. */
function checkPair(paths: EtcdPairPaths, ca: X509Certificate): void {
  const certificate = readCertificate(paths.certPath);
  if (!fs.existsSync(paths.keyPath)) throw new EtcdPkiError(`${paths.keyPath} is missing`);
  let matches: boolean;
  try {
    matches = certificate.checkPrivateKey(createPrivateKey(fs.readFileSync(paths.keyPath)));
  } catch (err) {
    throw new EtcdPkiError(`${paths.keyPath}: cannot read a PEM private key: ${(err as Error).message}`, { cause: err });
  }
  if (!matches) throw new EtcdPkiError(`${paths.keyPath} is not the key of ${paths.certPath}`);
  if (certificate.checkIssued(ca) === false || !certificate.verify(ca.publicKey)) throw new EtcdPkiError(`${paths.certPath} is not signed by the CA in ${path.dirname(paths.certPath)}`);
}

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: opensslTimeoutMs });
}

/** A P-256 key in `keyPath`, made 0600 before openssl writes it (openssl would use the umask). */
function makeKey(keyPath: string): void {
  fs.writeFileSync(keyPath, '', { mode: 0o600 });
  fs.chmodSync(keyPath, 0o600);
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', keyPath]);
  fs.chmodSync(keyPath, 0o600);
}

/**
 * openssl reads extensions from a config file; one is written per certificate, so that the
 * distribution's openssl.cnf (whose defaults differ between distributions) plays no part.
 */
function withConfig<T>(lines: string[], use: (configPath: string) => T): T {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'meshblock-etcd-pki-'));
  try {
    const configPath = path.join(scratch, 'openssl.cnf');
    fs.writeFileSync(configPath, `${lines.join('\n')}\n`);
    return use(configPath);
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

/** A random positive 127-bit serial: unique without a serial file to keep beside the CA. */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] as number) & 0x7f;
  return `0x${bytes.toString('hex')}`;
}

/** Runs `make` on temporary names, then renames key first, certificate last (as tls.ts). */
function atomically(paths: EtcdPairPaths, what: string, make: (temporary: EtcdPairPaths) => void): void {
  const temporary = { certPath: `${paths.certPath}.tmp-${process.pid}`, keyPath: `${paths.keyPath}.tmp-${process.pid}` };
  try {
    make(temporary);
    fs.chmodSync(temporary.certPath, 0o644);
    // A crash in between leaves a key without its certificate, which the next call reports
    // instead of pairing the wrong halves.
    fs.renameSync(temporary.keyPath, paths.keyPath);
    fs.renameSync(temporary.certPath, paths.certPath);
  } catch (err) {
    fs.rmSync(temporary.keyPath, { force: true });
    fs.rmSync(temporary.certPath, { force: true });
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    throw new EtcdPkiError(`cannot make ${what} with openssl: ${stderr || (err as Error).message}`, { cause: err });
  }
}

function makeCa(ca: EtcdPairPaths): void {
  atomically(ca, 'the etcd CA', (temporary) => {
    makeKey(temporary.keyPath);
    withConfig(
      ['[req]', 'distinguished_name = dn', 'prompt = no', '[dn]', 'CN = meshblock-etcd-ca', '[ca]', 'basicConstraints = critical, CA:TRUE, pathlen:0', 'keyUsage = critical, keyCertSign, cRLSign', 'subjectKeyIdentifier = hash'],
      (configPath) =>
        openssl(['req', '-x509', '-new', '-config', configPath, '-extensions', 'ca', '-key', temporary.keyPath, '-sha256', '-days', String(etcdCertificateDays), '-set_serial', randomSerial(), '-out', temporary.certPath]),
    );
  });
}

function makeSignedPair(ca: EtcdPairPaths, pair: PairToMake): void {
  atomically(pair.paths, `the ${pair.kind} pair of '${pair.name}'`, (temporary) => {
    makeKey(temporary.keyPath);
    const csrPath = `${temporary.certPath}.csr`;
    try {
      withConfig(['[req]', 'distinguished_name = dn', 'prompt = no', '[dn]', `CN = ${pair.name}`, '[ext]', ...pair.extensions, 'subjectKeyIdentifier = hash', 'authorityKeyIdentifier = keyid'], (configPath) => {
        openssl(['req', '-new', '-config', configPath, '-key', temporary.keyPath, '-sha256', '-out', csrPath]);
        openssl(['x509', '-req', '-in', csrPath, '-CA', ca.certPath, '-CAkey', ca.keyPath, '-set_serial', randomSerial(), '-sha256', '-days', String(etcdCertificateDays), '-extfile', configPath, '-extensions', 'ext', '-out', temporary.certPath]);
      });
    } finally {
      fs.rmSync(csrPath, { force: true });
    }
  });
}
