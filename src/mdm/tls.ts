// The REST API's TLS certificate. Unless the administrator gives one, the MDM makes a
// self-signed P-256 certificate with the openssl command at its first start
// (DATA-DIR/api.crt, DATA-DIR/api.key) and reuses it afterwards, so that clients can pin it
// once (meshblock --ca-cert DATA-DIR/api.crt). The key is mode 0600; the certificate is
// public and stays readable (0644) so that local users can hand it to the CLI.

import { execFileSync } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MeshblockError } from '../common/errors.js';
import { opensslTimeoutMs } from '../common/limits.js';

export const apiCertificateFileName = 'api.crt';
export const apiKeyFileName = 'api.key';
/** ScaleIO's self-signed certificates last ten years too; nobody renews a lab's. */
export const apiCertificateDays = 3650;
export const apiCertificateSubjectAltNamesDefault: readonly string[] = ['IP:127.0.0.1', 'IP:::1', 'DNS:localhost'];

export class TlsSetupError extends MeshblockError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('MB_ERR_TLS_SETUP', message, options);
  }
}

export interface ApiCertificate {
  cert: Buffer;
  key: Buffer;
  certPath: string;
  keyPath: string;
  /** True if this call made it. */
  created: boolean;
}

/**
 * Returns DATA-DIR/api.crt and api.key, making them first if neither exists.
 * `subjectAltNames` (openssl syntax: `IP:10.0.0.5`, `DNS:mdm1`) are used only when the
 * certificate is made; add the addresses the API will listen on beyond loopback.
 */
export function ensureSelfSignedCertificate(dataDir: string, options: { subjectAltNames?: readonly string[] } = {}): ApiCertificate {
  const certPath = path.join(dataDir, apiCertificateFileName);
  const keyPath = path.join(dataDir, apiKeyFileName);
  const certExists = fs.existsSync(certPath);
  const keyExists = fs.existsSync(keyPath);
  if (certExists && keyExists) return { ...loadCertificate(certPath, keyPath), created: false };
  if (certExists !== keyExists) {
    // Half a pair is damage, not a first start: making a new pair would silently change the
    // certificate that clients pinned.
    throw new TlsSetupError(`${certExists ? keyPath : certPath} is missing while ${certExists ? certPath : keyPath} exists; restore it or remove both to make a new certificate`);
  }
  const subjectAltNames = options.subjectAltNames ?? apiCertificateSubjectAltNamesDefault;
  for (const name of subjectAltNames) {
    if (!/^(IP:[0-9A-Fa-f.:]+|DNS:[A-Za-z0-9.*-]+)$/.test(name)) throw new TlsSetupError(`subjectAltName '${name}' is not IP:ADDRESS or DNS:NAME`);
  }
  const temporaryCert = `${certPath}.tmp-${process.pid}`;
  const temporaryKey = `${keyPath}.tmp-${process.pid}`;
  try {
    // The key file is made empty with 0600 first: openssl would create it with the umask's mode.
    fs.writeFileSync(temporaryKey, '', { mode: 0o600 });
    execFileSync(
      'openssl',
      [
        'req', '-x509',
        '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
        '-nodes', '-days', String(apiCertificateDays),
        '-subj', '/CN=meshblock-mdm',
        '-addext', `subjectAltName=${subjectAltNames.join(',')}`,
        '-keyout', temporaryKey, '-out', temporaryCert,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'], timeout: opensslTimeoutMs },
    );
    fs.chmodSync(temporaryKey, 0o600);
    fs.chmodSync(temporaryCert, 0o644);
    // The key goes into place first: a crash in between leaves a key without a certificate,
    // which the next start reports instead of pairing the wrong halves.
    fs.renameSync(temporaryKey, keyPath);
    fs.renameSync(temporaryCert, certPath);
  } catch (err) {
    fs.rmSync(temporaryKey, { force: true });
    fs.rmSync(temporaryCert, { force: true });
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    throw new TlsSetupError(`cannot make a certificate with openssl: ${stderr || (err as Error).message}`, { cause: err });
  }
  return { ...loadCertificate(certPath, keyPath), created: true };
}

/** Reads a certificate and its key, checking that they parse and belong together. */
export function loadCertificate(certPath: string, keyPath: string): { cert: Buffer; key: Buffer; certPath: string; keyPath: string } {
  let cert: Buffer;
  let key: Buffer;
  try {
    cert = fs.readFileSync(certPath);
    key = fs.readFileSync(keyPath);
  } catch (err) {
    throw new TlsSetupError(`cannot read the API certificate: ${(err as Error).message}`, { cause: err });
  }
  try {
    const certificate = new X509Certificate(cert);
    if (!certificate.checkPrivateKey(createPrivateKey(key))) throw new TlsSetupError(`${keyPath} is not the key of ${certPath}`);
  } catch (err) {
    if (err instanceof TlsSetupError) throw err;
    throw new TlsSetupError(`${certPath} / ${keyPath}: not a PEM certificate and key: ${(err as Error).message}`, { cause: err });
  }
  return { cert, key, certPath, keyPath };
}
