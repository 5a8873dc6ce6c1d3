// The prereqs module with stub openssl and node programs under a fixture root (what an old
// XenServer or CentOS has), and against this machine's own programs: too old or missing is
// a failed finding that says what to do; the module never plans a change.

import t from 'tap';
import { parseOpensslVersion, prereqsModule, versionAtLeast } from '../../src/hostsetup/prereqs.js';
import { calls, copyFixture, makeHost, putFile, stub } from '../helpers/host-root.js';

t.test('XenServer 7 (OpenSSL 1.0.2k, no Node): OpenSSL passes with the MDM note, Node fails', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'xenserver');
  stub(testRoot, '/usr/bin/openssl', 'echo "OpenSSL 1.0.2k-fips  26 Jan 2017"');
  stub(testRoot, '/usr/bin/node', 'echo v10.24.1');
  stub(testRoot, '/usr/sbin/nbd-client', 'echo "This is nbd-client, from nbd 3.14" >&2; exit 1');
  const finding = await prereqsModule.check(makeHost(testRoot));
  t.equal(finding.ok, false);
  t.equal(finding.summary, 'node: not as needed (see below)');
  t.same(finding.details, [
    'openssl: OpenSSL 1.0.2k (/usr/bin/openssl); older than 1.1.1: an MDM here cannot make its own certificate (openssl req -addext), give mdm start --tls-cert/--tls-key',
    'node: v10.24.1 is older than 20: install Node.js 20 or later (https://nodejs.org; meshblock install uploads one)',
    'nbd-client: nbd 3.14 (/usr/sbin/nbd-client)',
  ]);
  t.same(calls(testRoot), ['/usr/bin/openssl version', '/usr/bin/node --version', '/usr/sbin/nbd-client -V']);
  t.same(await prereqsModule.plan(makeHost(testRoot)), [], 'nothing it can do');
});

t.test('with the runtime bundle (install, host check by default) no Node or an old one is said, not failed', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'xenserver');
  stub(testRoot, '/usr/bin/openssl', 'echo "OpenSSL 1.0.2k-fips  26 Jan 2017"');
  stub(testRoot, '/usr/sbin/nbd-client', 'echo "This is nbd-client, from nbd 3.14" >&2; exit 1');
  putFile(testRoot, '/usr/bin/node', '', 0o644);
  const finding = await prereqsModule.check(makeHost(testRoot, { nodeRuntime: 'bundled' }));
  t.equal(finding.ok, true, finding.summary);
  t.equal(finding.details[1], 'node: not installed (not needed: meshblock install ships its runtime bundle)');
  stub(testRoot, '/usr/bin/node', 'echo v10.24.1');
  const old = await prereqsModule.check(makeHost(testRoot, { nodeRuntime: 'bundled' }));
  t.equal(old.ok, true);
  t.equal(old.details[1], 'node: v10.24.1 is older than 20 (not needed: meshblock install ships its runtime bundle)');
  t.equal((await prereqsModule.check(makeHost(testRoot))).ok, false, "with the host's Node (the default of the module) it fails as before");
});

t.test('OpenSSL older than 1.0.2 fails early and says why', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'centos7');
  stub(testRoot, '/usr/bin/openssl', 'echo "OpenSSL 1.0.1e-fips 11 Feb 2013"');
  const finding = await prereqsModule.check(makeHost(testRoot));
  t.equal(finding.ok, false);
  t.equal(finding.details[0], "openssl: OpenSSL 1.0.1e is older than 1.0.2, which meshblock's TLS needs: update it (yum update openssl / apt-get install openssl)");
});

t.test('missing or unreadable programs', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'debian12');
  putFile(testRoot, '/usr/bin/openssl', '', 0o644); // there, but not a program: as good as absent
  putFile(testRoot, '/usr/bin/node', '', 0o644);
  putFile(testRoot, '/usr/sbin/nbd-client', '', 0o644);
  const finding = await prereqsModule.check(makeHost(testRoot));
  t.same(finding.details, [
    'openssl: not installed: install the openssl package (yum install openssl / apt-get install openssl)',
    'node: not installed: install Node.js 20 or later (https://nodejs.org; meshblock install uploads one)',
    'nbd-client: not installed: meshblock host apply --only packages',
  ]);
  stub(testRoot, '/usr/bin/openssl', 'echo "LibreSSL 2.8.3"');
  t.match((await prereqsModule.check(makeHost(testRoot))).details[0], /cannot read its version from 'LibreSSL 2.8.3'/);
});

t.test("this machine's own programs (the root's absent ones come from PATH)", async (t) => {
  const testRoot = copyFixture(t.testdir(), 'debian12');
  const finding = await prereqsModule.check(makeHost(testRoot));
  t.match(finding.details[0], /^openssl: OpenSSL \d+\.\d+\.\d+\S* \(openssl from PATH\)/);
  t.match(finding.details[1], new RegExp(`^node: ${process.version.replace(/\./g, '\\.')} \\(node from PATH\\)`));
});

t.test('versions', async (t) => {
  t.same(parseOpensslVersion('OpenSSL 3.0.19 27 Jan 2026 (Library: OpenSSL 3.0.19 27 Jan 2026)')?.numbers, [3, 0, 19]);
  t.same(parseOpensslVersion('OpenSSL 1.0.2k-fips  26 Jan 2017'), { numbers: [1, 0, 2], letter: 'k', text: '1.0.2k' });
  t.equal(parseOpensslVersion('LibreSSL 3.3.6'), null);
  t.equal(versionAtLeast([1, 0, 2], [1, 0, 2]), true);
  t.equal(versionAtLeast([1, 0, 1], [1, 0, 2]), false);
  t.equal(versionAtLeast([3, 0, 0], [1, 1, 1]), true);
});
