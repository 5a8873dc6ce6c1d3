// Proves the REST API's credentials at rest and in memory: the admin password file holds only
// a scrypt hash (with its salt and parameters), is mode 0600, is set once and read back;
// tokens expire after 8 idle hours on an injected clock, each use restarts the idle time,
// and logout ends them. And the API certificate: made by the openssl command at first use
// (key 0600), reused afterwards, half a pair refused.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { AdminAuth, adminPasswordFile, loadAdminAuth } from '../../src/mdm/auth.js';
import { ensureSelfSignedCertificate, loadCertificate } from '../../src/mdm/tls.js';
import { adminTokenIdleMs, adminTokensMax } from '../../src/common/limits.js';

const password = 'a long enough password';
const fast = { scryptCost: 1024 };

t.test('the password file: a scrypt hash, 0600, set once, read back', async (t) => {
  const dir = t.testdir();
  const auth = await AdminAuth.initialize(dir, password, fast);
  const file = adminPasswordFile(dir);
  t.equal(fs.statSync(file).mode & 0o777, 0o600, 'mode 0600');
  const text = fs.readFileSync(file, 'utf8');
  t.notMatch(text, password, 'the password is not in the file');
  const record = JSON.parse(text) as Record<string, unknown>;
  t.match(record, { version: 1, username: 'admin', kdf: 'scrypt', cost: 1024, blockSize: 8, parallelization: 1, saltHex: /^[0-9a-f]{32}$/, hashHex: /^[0-9a-f]{64}$/ });
  const expected = crypto.scryptSync(password, Buffer.from(record['saltHex'] as string, 'hex'), 32, { N: 1024, r: 8, p: 1 }).toString('hex');
  t.equal(record['hashHex'], expected, 'the hash is scrypt(password, salt) with the recorded parameters');
  t.equal(fs.readdirSync(dir).length, 1, 'no temporary file left behind');

  t.equal(await auth.verifyPassword('admin', password), true);
  t.equal(await auth.verifyPassword('admin', `${password}x`), false);
  t.equal(await auth.verifyPassword('root', password), false);
  t.equal(AdminAuth.isInitialized(dir), true);

  const loaded = loadAdminAuth(dir);
  t.equal(await loaded.verifyPassword('admin', password), true, 'read back from the file');
  await t.rejects(AdminAuth.initialize(dir, 'another password', fast), { code: 'MB_ERR_AUTH_FILE', message: /already exists/ }, 'set once');
  t.equal(await AdminAuth.loadFromDataDir(dir).verifyPassword('admin', password), true, 'the first password stands');

  await t.rejects(AdminAuth.initialize(path.join(dir, 'elsewhere'), 'short', fast), { code: 'MB_ERR_INVALID_ARGUMENT', message: /^password: must be 8 to/ });
  t.throws(() => AdminAuth.load(path.join(dir, 'missing.json')), { code: 'MB_ERR_AUTH_FILE', message: /cannot read/ });
  const garbage = path.join(dir, 'garbage.json');
  fs.writeFileSync(garbage, '{"version": 2}');
  t.throws(() => AdminAuth.load(garbage), { code: 'MB_ERR_AUTH_FILE', message: /not a version 1 scrypt password file/ });
  fs.writeFileSync(garbage, 'not json');
  t.throws(() => AdminAuth.load(garbage), { code: 'MB_ERR_AUTH_FILE', message: /is not JSON/ });
  fs.writeFileSync(garbage, JSON.stringify({ ...record, saltHex: 'zz' }));
  t.throws(() => AdminAuth.load(garbage), { code: 'MB_ERR_AUTH_FILE', message: /bad salt or hash/ });
});

t.test('tokens: 8 idle hours on an injected clock, refreshed by use, ended by logout, bounded', async (t) => {
  let nowMs = 1_000_000;
  const auth = await AdminAuth.create(path.join(t.testdir(), 'admin.json'), password, { ...fast, nowMs: () => nowMs });
  const token = auth.issueToken();
  t.match(token, /^[0-9a-f]{64}$/);
  t.not(auth.issueToken(), token, 'every login gets its own token');
  nowMs += adminTokenIdleMs - 1;
  t.equal(auth.checkToken(token), true, 'alive just before 8 idle hours');
  nowMs += adminTokenIdleMs - 1;
  t.equal(auth.checkToken(token), true, 'the use above restarted the idle time');
  nowMs += adminTokenIdleMs;
  t.equal(auth.checkToken(token), false, 'expired after 8 idle hours');
  t.equal(auth.checkToken(token), false, 'and stays expired');

  const other = auth.issueToken();
  t.equal(auth.revokeToken(other), true);
  t.equal(auth.checkToken(other), false, 'logged out');
  t.equal(auth.revokeToken(other), false, 'logging out twice is harmless');
  t.equal(auth.checkToken('not a token'), false);

  const first = auth.issueToken();
  for (let index = 1; index < adminTokensMax; index += 1) auth.issueToken();
  t.equal(auth.sessionCount, adminTokensMax);
  auth.issueToken();
  t.equal(auth.sessionCount, adminTokensMax, 'sessions are bounded');
  t.equal(auth.checkToken(first), false, 'the least recently used one went');
});

t.test('the API certificate: made once by openssl, reused, checked', async (t) => {
  // t.testdir() empties the test's directory on every call: one call, subdirectories.
  const root = t.testdir({ first: {}, second: {}, third: {} });
  const dir = path.join(root, 'first');
  const made = ensureSelfSignedCertificate(dir);
  t.equal(made.created, true);
  t.equal(fs.statSync(made.keyPath).mode & 0o777, 0o600, 'the key is 0600');
  const certificate = new crypto.X509Certificate(made.cert);
  t.match(certificate.subject, /CN=meshblock-mdm/);
  t.match(certificate.subjectAltName, /IP Address:127\.0\.0\.1/);
  t.match(certificate.subjectAltName, /DNS:localhost/);
  t.equal(certificate.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1', 'P-256');
  t.ok(new Date(certificate.validTo).getTime() - Date.now() > 3000 * 24 * 3600 * 1000, 'valid for about ten years');

  const again = ensureSelfSignedCertificate(dir);
  t.equal(again.created, false, 'reused');
  t.same(again.cert, made.cert);

  fs.rmSync(made.keyPath);
  t.throws(() => ensureSelfSignedCertificate(dir), { code: 'MB_ERR_TLS_SETUP', message: /api\.key is missing while .*api\.crt exists/ }, 'half a pair is refused');

  const other = ensureSelfSignedCertificate(path.join(root, 'second'), { subjectAltNames: ['IP:127.0.0.1', 'DNS:mdm1.example'] });
  t.match(new crypto.X509Certificate(other.cert).subjectAltName, /DNS:mdm1\.example/);
  t.throws(() => loadCertificate(made.certPath, other.keyPath), { code: 'MB_ERR_TLS_SETUP', message: /is not the key of/ });
  t.throws(() => ensureSelfSignedCertificate(path.join(root, 'third'), { subjectAltNames: ['IP:1.2.3.4,DNS:evil'] }), { code: 'MB_ERR_TLS_SETUP' });
});
