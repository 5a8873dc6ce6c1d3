// Proves the etcd cluster's PKI (src/mdm/etcd-pki.ts), made by the real openssl command:
// the files and their modes (keys 0600); a member certificate for TLS servers and clients
// with the member's IPs, 127.0.0.1 and localhost as SANs, a client certificate for clients
// only, both P-256 and ten years; a second call keeps every file; a member added later gets
// a pair signed by the same CA (checked with node:crypto's X509Certificate); and refusals,
// by code: bad names and addresses, half a pair, a lost CA, a pair of another CA, a member
// pair that does not name the member's (changed) IPs.

import { X509Certificate, createPrivateKey } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { createEtcdPki, etcdMemberTlsFiles, loadEtcdClientTls } from '../../src/mdm/etcd-pki.js';

const dayMs = 24 * 60 * 60 * 1000;

function certificate(dir: string, file: string): X509Certificate {
  return new X509Certificate(fs.readFileSync(path.join(dir, file)));
}

function modeOf(dir: string, file: string): number {
  return fs.statSync(path.join(dir, file)).mode & 0o777;
}

t.test('files, modes and certificate contents', async (t) => {
  const dir = path.join(t.testdir(), 'pki');
  const result = createEtcdPki(dir, { members: [{ name: 'mdm1', ips: ['10.0.0.5', 'fd00::5'] }], clients: ['mdm1', 'etcdctl'] });
  t.same(result.created.sort(), ['ca.crt', 'ca.key', 'client-etcdctl.crt', 'client-etcdctl.key', 'client-mdm1.crt', 'client-mdm1.key', 'member-mdm1.crt', 'member-mdm1.key'].sort());
  t.same(fs.readdirSync(dir).sort(), result.created.sort(), 'nothing else left in the directory (no serial file, CSR or temporary)');
  for (const file of result.created) t.equal(modeOf(dir, file), file.endsWith('.key') ? 0o600 : 0o644, `${file} mode`);

  const ca = certificate(dir, 'ca.crt');
  t.ok(ca.ca, 'ca.crt is a CA');
  t.equal(ca.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1', 'P-256');
  t.ok(ca.verify(ca.publicKey), 'self-signed');

  const member = certificate(dir, 'member-mdm1.crt');
  t.notOk(member.ca, 'a member certificate is no CA');
  t.ok(member.checkIssued(ca) && member.verify(ca.publicKey), 'the member pair is signed by the CA');
  t.equal(member.subject, 'CN=mdm1');
  t.equal(member.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1', 'P-256');
  t.same(member.keyUsage?.sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2'], 'serverAuth and clientAuth (peers dial each other with it)');
  for (const name of ['10.0.0.5', 'FD00:0:0:0:0:0:0:5', '127.0.0.1']) t.match(member.subjectAltName, `IP Address:${name}`, `SAN ${name}`);
  t.match(member.subjectAltName, 'DNS:localhost');
  t.ok(member.checkIP('127.0.0.1') && member.checkIP('10.0.0.5') && member.checkHost('localhost'), 'valid for its IPs, loopback and localhost');
  t.notOk(member.checkIP('10.0.0.6'), 'not for another IP');
  t.ok(member.checkPrivateKey(createPrivateKey(fs.readFileSync(path.join(dir, 'member-mdm1.key')))), 'the key is the certificate’s');
  const validMs = Date.parse(member.validTo) - Date.parse(member.validFrom);
  t.ok(Math.abs(validMs - 3650 * dayMs) <= dayMs, `ten years (${validMs / dayMs} days)`);

  const client = certificate(dir, 'client-etcdctl.crt');
  t.ok(client.checkIssued(ca) && client.verify(ca.publicKey), 'the client pair is signed by the CA');
  t.same(client.keyUsage, ['1.3.6.1.5.5.7.3.2'], 'clientAuth only: a client pair cannot serve as a member');
  t.equal(client.subject, 'CN=etcdctl');
  t.not(client.serialNumber, member.serialNumber, 'serials differ');

  const tls = loadEtcdClientTls(dir, 'mdm1');
  t.same(tls.ca, fs.readFileSync(path.join(dir, 'ca.crt')));
  t.same(tls.cert, fs.readFileSync(path.join(dir, 'client-mdm1.crt')));
  t.same(tls.key, fs.readFileSync(path.join(dir, 'client-mdm1.key')));
  t.same(etcdMemberTlsFiles(dir, 'mdm1'), { caPath: path.join(dir, 'ca.crt'), certPath: path.join(dir, 'member-mdm1.crt'), keyPath: path.join(dir, 'member-mdm1.key') });
});

t.test('idempotent; a member and a client added later are signed by the same CA', async (t) => {
  const dir = t.testdir();
  const request = { members: [{ name: 'mdm1', ips: ['127.0.0.1'] }, { name: 'mdm2', ips: [] }], clients: ['mdm1'] };
  createEtcdPki(dir, request);
  const before = new Map(fs.readdirSync(dir).map((file) => [file, fs.readFileSync(path.join(dir, file))]));
  t.same(createEtcdPki(dir, request).created, [], 'a second call makes nothing');
  for (const [file, bytes] of before) t.same(fs.readFileSync(path.join(dir, file)), bytes, `${file} kept`);

  const added = createEtcdPki(dir, { members: [...request.members, { name: 'tb1', ips: ['192.168.7.3'] }], clients: ['mdm1', 'mdm3'] });
  t.same(added.created, ['member-tb1.crt', 'member-tb1.key', 'client-mdm3.crt', 'client-mdm3.key'], 'only the new pairs are made');
  for (const [file, bytes] of before) t.same(fs.readFileSync(path.join(dir, file)), bytes, `${file} still kept`);
  const ca = certificate(dir, 'ca.crt');
  for (const file of ['member-tb1.crt', 'client-mdm3.crt', 'member-mdm1.crt']) {
    const signed = certificate(dir, file);
    t.ok(signed.checkIssued(ca), `${file}: issued by the CA`);
    t.ok(signed.verify(ca.publicKey), `${file}: signature verifies with the CA's key`);
  }
  t.ok(certificate(dir, 'member-tb1.crt').checkIP('192.168.7.3'));
  t.same(createEtcdPki(dir, { members: [{ name: 'tb1', ips: ['192.168.7.3'] }], clients: [] }).created, [], 'a member listed again with its IPs: kept');
  t.throws(() => createEtcdPki(dir, { members: [{ name: 'tb1', ips: ['192.168.7.4'] }], clients: [] }), { code: 'MB_ERR_ETCD_PKI', message: /member-tb1\.crt does not name 192\.168\.7\.4; remove member-tb1\.crt and member-tb1\.key/ }, 'a member whose address changed is not kept silently');
  t.equal(modeOf(dir, 'member-tb1.key'), 0o600);
  t.equal(modeOf(dir, 'ca.key'), 0o600);
});

t.test('without ca.key, existing pairs still load; new ones are refused', async (t) => {
  const dir = t.testdir();
  createEtcdPki(dir, { members: [{ name: 'mdm1', ips: [] }], clients: ['mdm1'] });
  // What a host receives: everything but the CA's key.
  fs.rmSync(path.join(dir, 'ca.key'));
  t.same(createEtcdPki(dir, { members: [{ name: 'mdm1', ips: [] }], clients: ['mdm1'] }).created, []);
  t.ok(loadEtcdClientTls(dir, 'mdm1').cert.length > 0);
  t.throws(() => createEtcdPki(dir, { members: [{ name: 'mdm2', ips: [] }], clients: [] }), { code: 'MB_ERR_ETCD_PKI', message: /ca\.key is needed/ });
  t.notOk(fs.existsSync(path.join(dir, 'member-mdm2.key')), 'nothing half made');
});

t.test('refusals', async (t) => {
  const dir = t.testdir();
  for (const name of ['', '-mdm', 'a b', 'x'.repeat(32), '../etc', 'mdm/1', 'é']) {
    t.throws(() => createEtcdPki(dir, { members: [{ name, ips: [] }], clients: [] }), { code: 'MB_ERR_ETCD_PKI' }, `member name '${name}'`);
    t.throws(() => createEtcdPki(dir, { members: [], clients: [name] }), { code: 'MB_ERR_ETCD_PKI' }, `client name '${name}'`);
  }
  t.ok(createEtcdPki(dir, { members: [{ name: 'a'.repeat(31), ips: [] }], clients: ['A_b.c-1'] }).created.length > 0, '31 characters and _ . - are fine');
  for (const ip of ['10.0.0', 'host.example', '10.0.0.5/24', '']) {
    t.throws(() => createEtcdPki(dir, { members: [{ name: 'mdm9', ips: [ip] }], clients: [] }), { code: 'MB_ERR_ETCD_PKI', message: /not an IP address/ }, `ip '${ip}'`);
  }
  t.throws(() => createEtcdPki(dir, { members: [{ name: 'mdm9', ips: [] }, { name: 'mdm9', ips: [] }], clients: [] }), { code: 'MB_ERR_ETCD_PKI', message: /twice/ });
  t.throws(() => createEtcdPki(dir, { members: [], clients: ['c1', 'c1'] }), { code: 'MB_ERR_ETCD_PKI', message: /twice/ });
  t.throws(() => loadEtcdClientTls(dir, 'nobody'), { code: 'MB_ERR_ETCD_PKI', message: /client-nobody\.crt is missing/ });
  t.throws(() => etcdMemberTlsFiles(dir, 'nobody'), { code: 'MB_ERR_ETCD_PKI', message: /member-nobody\.crt is missing/ });
  t.notOk(fs.existsSync(path.join(dir, 'member-mdm9.crt')), 'a refused request makes nothing');
});

t.test('damage is reported, not papered over', async (t) => {
  // One testdir per test: a second t.testdir() call would be the same directory.
  const base = t.testdir();
  const dir = path.join(base, 'pki');
  createEtcdPki(dir, { members: [{ name: 'mdm1', ips: [] }], clients: ['mdm1'] });

  fs.rmSync(path.join(dir, 'member-mdm1.key'));
  t.throws(() => createEtcdPki(dir, { members: [{ name: 'mdm1', ips: [] }], clients: [] }), { code: 'MB_ERR_ETCD_PKI', message: /member-mdm1\.key is missing/ }, 'half a pair');
  t.throws(() => etcdMemberTlsFiles(dir, 'mdm1'), { code: 'MB_ERR_ETCD_PKI', message: /member-mdm1\.key is missing/ });

  fs.copyFileSync(path.join(dir, 'client-mdm1.key'), path.join(dir, 'member-mdm1.key'));
  t.throws(() => etcdMemberTlsFiles(dir, 'mdm1'), { code: 'MB_ERR_ETCD_PKI', message: /is not the key of/ }, 'the wrong key');

  const other = path.join(base, 'another-pki');
  createEtcdPki(other, { members: [{ name: 'mdm1', ips: [] }], clients: [] });
  for (const ext of ['crt', 'key']) fs.copyFileSync(path.join(other, `member-mdm1.${ext}`), path.join(dir, `member-mdm1.${ext}`));
  t.throws(() => createEtcdPki(dir, { members: [{ name: 'mdm1', ips: [] }], clients: [] }), { code: 'MB_ERR_ETCD_PKI', message: /not signed by the CA/ }, 'a pair of another CA');

  fs.rmSync(path.join(dir, 'ca.crt'));
  fs.rmSync(path.join(dir, 'ca.key'));
  t.throws(() => createEtcdPki(dir, { members: [{ name: 'mdm2', ips: [] }], clients: [] }), { code: 'MB_ERR_ETCD_PKI', message: /restore the CA/ }, 'a lost CA is not silently replaced');
  t.notOk(fs.existsSync(path.join(dir, 'ca.crt')));

  const garbage = path.join(base, 'garbage');
  fs.mkdirSync(garbage);
  fs.writeFileSync(path.join(garbage, 'ca.crt'), 'not a certificate\n');
  fs.writeFileSync(path.join(garbage, 'ca.key'), 'not a key\n');
  t.throws(() => createEtcdPki(garbage, { members: [], clients: ['c1'] }), { code: 'MB_ERR_ETCD_PKI', message: /cannot read a PEM certificate/ });
});
