// Proves STARTTLS: with a certificate and --tls require, libnbd's clients (nbdinfo, nbdcopy)
// negotiate TLS and move real data over it, while a client that will not use TLS is
// refused; with --tls on, both kinds of client work. The certificate is made by openssl
// for 127.0.0.1 in the test's scratch directory.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { sparseFile } from '../helpers/files.js';
import { run, runMeshblock, startNbdServe } from '../helpers/processes.js';

const MiB = 1024 * 1024;

async function makeCertificate(dir: string): Promise<{ cert: string; key: string }> {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  const made = await run('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
    '-keyout', key, '-out', cert, '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ]);
  if (made.code !== 0) throw new Error(`openssl failed: ${made.stderr}`);
  // libnbd looks for the CA that signed the server's certificate under this name.
  fs.copyFileSync(cert, path.join(dir, 'ca-cert.pem'));
  return { cert, key };
}

t.test('--tls require: TLS clients work, plain clients are refused', async (t) => {
  const dir = t.testdir();
  const { cert, key } = await makeCertificate(dir);
  const file = sparseFile(dir, 'tls.img', 8 * MiB);
  const server = await startNbdServe(t, ['--file', file, '--tls-cert', cert, '--tls-key', key, '--tls', 'require']);
  t.match(server.uri, /^nbds:\/\//, 'the printed URI says TLS');
  const tlsUri = `${server.uri}?tls-certificates=${dir}`;

  const info = await run('nbdinfo', [tlsUri]);
  t.equal(info.code, 0, info.stderr);
  t.match(info.stdout, /newstyle-fixed with TLS/);

  const source = path.join(dir, 'source.img');
  fs.writeFileSync(source, crypto.randomBytes(4 * MiB));
  const copy = await run('nbdcopy', [source, tlsUri]);
  t.equal(copy.code, 0, copy.stderr);
  t.same(fs.readFileSync(file).subarray(0, 4 * MiB), fs.readFileSync(source), 'bytes sent over TLS reached the file');

  const plain = await run('nbdinfo', [server.uri.replace(/^nbds:/, 'nbd:')]);
  t.not(plain.code, 0, 'a client without TLS gets no export');

  const wrongCa = t.testdir();
  await makeCertificate(wrongCa);
  const untrusted = await run('nbdinfo', [`${server.uri}?tls-certificates=${wrongCa}`]);
  t.not(untrusted.code, 0, 'a client that does not trust the certificate fails');
});

t.test('--tls on: TLS is optional', async (t) => {
  const dir = t.testdir();
  const { cert, key } = await makeCertificate(dir);
  const file = sparseFile(dir, 'tls.img', 8 * MiB);
  const server = await startNbdServe(t, ['--file', file, '--tls-cert', cert, '--tls-key', key]);
  const withTls = await run('nbdinfo', [`${server.uri.replace(/^nbd:/, 'nbds:')}?tls-certificates=${dir}`]);
  t.match(withTls.stdout, /with TLS/);
  const withoutTls = await run('nbdinfo', [server.uri]);
  t.match(withoutTls.stdout, /without TLS/);
});

t.test('bad certificate files are refused at start', async (t) => {
  const dir = t.testdir({ 'junk.pem': 'not a certificate' });
  const file = path.join(dir, 'x.img');
  fs.writeFileSync(file, Buffer.alloc(4096));
  const junk = path.join(dir, 'junk.pem');
  const result = await runMeshblock(['nbd', 'serve', '--file', file, '--listen', '127.0.0.1:0', '--tls-cert', junk, '--tls-key', junk]);
  t.equal(result.code, 2);
  t.match(result.stderr, /--tls-cert\/--tls-key: not a usable certificate and key/);
  const missing = await runMeshblock(['nbd', 'serve', '--file', file, '--listen', '127.0.0.1:0', '--tls-cert', path.join(dir, 'nope.pem'), '--tls-key', junk]);
  t.equal(missing.code, 2);
  t.match(missing.stderr, /--tls-cert: cannot read/);
});
