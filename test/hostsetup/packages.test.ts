// The packages module with stub rpm/yum (XenServer, CentOS 7) and dpkg-query/apt-get
// (Debian 12) under each fixture root. The stubs keep an installed-package list in the root
// and log their calls; the stub yum finds packages only when the root's CentOS-Base.repo
// enables [base], as XenServer's real yum does. So the test sees the exact query and install
// calls, the install refused on XenServer with the repository to enable named, the install
// going through after yum-repos, and a second plan empty.

import t from 'tap';
import { packagesModule, parseDpkgQuery, parseRpmQuery, unavailablePackages } from '../../src/hostsetup/packages.js';
import { checkModule } from '../../src/hostsetup/host-modules.js';
import { yumReposModule } from '../../src/hostsetup/yum-repos.js';
import { calls, clearCalls, copyFixture, makeHost, putFile, stub, type TestRoot } from '../helpers/host-root.js';

/** rpm -q against ROOT/var/lib/stub-packages/NAME; yum install creates them when [base] is on. */
function stubYumHost(testRoot: TestRoot, installed: string[], options: { withhold?: string } = {}): void {
  for (const name of installed) putFile(testRoot, `/var/lib/stub-packages/${name}`, `${name}-1.0-1.el7.x86_64\n`);
  stub(testRoot, '/usr/bin/rpm', [
    'missing=0',
    'shift',
    'for name in "$@"; do',
    '  if [ -f "$ROOT/var/lib/stub-packages/$name" ]; then cat "$ROOT/var/lib/stub-packages/$name"; else echo "package $name is not installed"; missing=$((missing+1)); fi',
    'done',
    'exit $missing',
  ].join('\n'));
  stub(testRoot, '/usr/bin/yum', [
    'shift; shift',
    `if ! sed -n '/^\\[base\\]/,/^\\[/p' "$ROOT/etc/yum.repos.d/CentOS-Base.repo" | grep -q '^enabled=1'; then`,
    '  for name in "$@"; do echo "No package $name available."; done',
    '  echo "Error: Nothing to do" >&2; exit 1',
    'fi',
    'mkdir -p "$ROOT/var/lib/stub-packages"',
    'for name in "$@"; do',
    `  if [ "$name" = "${options.withhold ?? ''}" ]; then echo "No package $name available."; continue; fi`,
    '  echo "$name-1.0-1.el7.x86_64" > "$ROOT/var/lib/stub-packages/$name"',
    'done',
    'exit 0',
  ].join('\n'));
}

t.test('XenServer: yum finds nothing until the base repository is enabled, and says so', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'xenserver');
  stubYumHost(testRoot, ['numactl']);
  const host = makeHost(testRoot);
  const finding = await packagesModule.check(host);
  t.same([finding.ok, finding.summary], [false, 'not installed: libaio, nbd']);
  t.match(finding.details.join('\n'), /queried with \/usr\/bin\/rpm\nnumactl: numactl-1.0-1.el7.x86_64\nlibaio: not installed \(package libaio is not installed\)/);
  const steps = await packagesModule.plan(host);
  t.same(steps.map((step) => (step.kind === 'command' ? step.argv : null)), [['/usr/bin/yum', 'install', '-y', 'libaio', 'nbd']]);
  clearCalls(testRoot);
  await t.rejects(packagesModule.apply(host, steps), {
    code: 'MB_ERR_HOST_STEP',
    message: '/usr/bin/yum install -y libaio nbd: no enabled repository has libaio, nbd: enable the CentOS base repository: meshblock host apply --only yum-repos',
  });
  t.same(calls(testRoot), ['/usr/bin/rpm -q numactl libaio nbd', '/usr/bin/yum install -y libaio nbd']);

  await yumReposModule.apply(host, await yumReposModule.plan(host));
  clearCalls(testRoot);
  const result = await packagesModule.apply(host, await packagesModule.plan(host));
  t.same(calls(testRoot), [
    '/usr/bin/rpm -q numactl libaio nbd', // plan
    '/usr/bin/rpm -q numactl libaio nbd', // apply's re-check
    '/usr/bin/yum install -y libaio nbd',
    '/usr/bin/rpm -q numactl libaio nbd', // verified installed
  ]);
  t.match(result.done, ['ran /usr/bin/yum install -y libaio nbd: install libaio, nbd']);
  t.equal((await packagesModule.check(host)).ok, true);
  t.same(await packagesModule.plan(host), []);
});

t.test('CentOS 7: yum exits 0 but leaves nbd out: the error points at EPEL', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'centos7');
  putFile(testRoot, '/etc/redhat-release', 'CentOS Linux release 7.9.2009 (Core)\n');
  // Stock CentOS enables base by saying nothing; the stub yum looks for enabled=1.
  putFile(testRoot, '/etc/yum.repos.d/CentOS-Base.repo', '[base]\nenabled=1\n[updates]\nenabled=1\n');
  stubYumHost(testRoot, [], { withhold: 'nbd' });
  const host = makeHost(testRoot);
  t.match((await packagesModule.check(host)).details[0], /\/etc\/redhat-release exists: RHEL family/);
  await t.rejects(packagesModule.apply(host, await packagesModule.plan(host)), {
    code: 'MB_ERR_HOST_STEP',
    message: /yum install -y numactl libaio nbd left nbd not installed \(no package nbd available\): .*CentOS 7 has nbd in EPEL only/,
  });
  t.same((await packagesModule.plan(host)).map((step) => (step.kind === 'command' ? step.argv.join(' ') : '')), ['/usr/bin/yum install -y nbd'], 'the rest was installed');
});

t.test('Debian 12: dpkg-query and apt-get', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'debian12');
  putFile(testRoot, '/etc/debian_version', '12.8\n');
  putFile(testRoot, '/var/lib/stub-dpkg/numactl', 'install ok installed\n');
  stub(testRoot, '/usr/bin/dpkg-query', [
    'shift; shift',
    'code=0',
    'for name in "$@"; do',
    '  if [ -f "$ROOT/var/lib/stub-dpkg/$name" ]; then printf "%s\\t%s\\n" "$name" "$(cat "$ROOT/var/lib/stub-dpkg/$name")";',
    '  else echo "dpkg-query: no packages found matching $name" >&2; code=1; fi',
    'done',
    'exit $code',
  ].join('\n'));
  stub(testRoot, '/usr/bin/apt-get', [
    '[ "$1" = update ] && exit 0',
    'shift; shift',
    'for name in "$@"; do echo "install ok installed" > "$ROOT/var/lib/stub-dpkg/$name"; done',
  ].join('\n'));
  const host = makeHost(testRoot);
  const finding = await packagesModule.check(host);
  t.same([finding.ok, finding.summary], [false, 'not installed: libaio1, nbd-client']);
  t.match(finding.details.join('\n'), /libaio1: not installed \(unknown to dpkg\)/);
  clearCalls(testRoot);
  await packagesModule.apply(host, await packagesModule.plan(host));
  t.same(calls(testRoot), [
    '/usr/bin/dpkg-query -W -f=${Package}\\t${Status}\\n numactl libaio1 nbd-client',
    '/usr/bin/dpkg-query -W -f=${Package}\\t${Status}\\n numactl libaio1 nbd-client',
    '/usr/bin/apt-get update',
    '/usr/bin/apt-get install -y libaio1 nbd-client',
    '/usr/bin/dpkg-query -W -f=${Package}\\t${Status}\\n numactl libaio1 nbd-client',
  ]);
  t.same(await packagesModule.plan(host), []);
});

t.test('apt-get cannot find a package: the error names the repository', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'debian12');
  putFile(testRoot, '/etc/os-release', 'ID=debian\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n');
  stub(testRoot, '/usr/bin/dpkg-query', 'exit 1');
  stub(testRoot, '/usr/bin/apt-get', '[ "$1" = update ] && exit 0\necho "E: Unable to locate package nbd-client" >&2; exit 100');
  const host = makeHost(testRoot);
  await t.rejects(packagesModule.apply(host, await packagesModule.plan(host)), {
    message: /apt-get install -y numactl libaio1 nbd-client: no enabled repository has nbd-client: enable Debian's main repository/,
  });
});

t.test('no package manager to be found, or no way to tell the OS: a finding that says so', async (t) => {
  const bare = copyFixture(t.testdir(), 'debian12');
  const unknown = await checkModule(packagesModule, makeHost(bare));
  t.match(unknown.summary, /cannot check: cannot tell which package manager this host uses: no \/etc\/os-release, .* the OS family is unknown/);
  const xen = copyFixture(t.testdir(), 'xenserver');
  stub(xen, '/usr/bin/rpm', 'exit 0');
  putFile(xen, '/usr/bin/rpm', '#!/bin/sh\n', 0o644); // not executable: as good as absent
  const noRpm = await checkModule(packagesModule, makeHost(xen));
  t.match(noRpm.summary, /cannot check: rpm is not installed on this yum host/);
});

t.test('the package managers\' words', async (t) => {
  t.same(parseRpmQuery(['a', 'b'], 'a-1.2-3.el7.x86_64\npackage b is not installed\n').map((entry) => entry.installed), [true, false]);
  t.same(parseDpkgQuery(['a', 'b', 'c'], 'a:amd64\tinstall ok installed\nb\tdeinstall ok config-files\n').map((entry) => entry.installed), [true, false, false]);
  t.same(unavailablePackages("No package numactl available.\nE: Unable to locate package nbd-client\nE: Package 'libaio1' has no installation candidate\n"), ['numactl', 'nbd-client', 'libaio1']);
});
