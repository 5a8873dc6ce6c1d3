// The module list and the shared apply logic: --only selects by name in apply order and
// refuses unknown names; a module that throws gives a finding saying it cannot check; apply
// skips a command the host no longer needs (re-checked just before) and stops at a failing
// one, reporting what it had done; every module's plan is empty after applying it on each
// fixture (with the stubs the modules need).

import t from 'tap';
import { MeshblockError } from '../../src/common/errors.js';
import { checkModule, hostModules, planModule, selectModules } from '../../src/hostsetup/host-modules.js';
import { applySteps, commandStep, fileStep, moduleNames, type HostModule } from '../../src/hostsetup/host-module.js';
import { calls, copyFixture, fixtureNames, makeHost, putFile, readHostFile, stub, type TestRoot } from '../helpers/host-root.js';

t.test('--only: names, commas, apply order; unknown names refused', async (t) => {
  t.same(hostModules.map((module) => module.name), [...moduleNames]);
  t.same(selectModules(undefined).map((module) => module.name), [...moduleNames]);
  t.same(selectModules(['xen-sr,yum-repos', 'lvm-filter']).map((module) => module.name), ['yum-repos', 'lvm-filter', 'xen-sr']);
  t.throws(() => selectModules(['lvm-filter,lvm']), { code: 'MB_ERR_INVALID_ARGUMENT', message: /^--only: unknown module 'lvm' \(modules: yum-repos, packages/ });
  t.throws(() => selectModules([',']), { code: 'MB_ERR_INVALID_ARGUMENT', message: /name at least one module/ });
});

/** A module over one file and one command, for the shared apply logic. */
function fakeModule(testRoot: TestRoot): HostModule {
  const module: HostModule = {
    name: 'prereqs',
    description: 'test',
    async check() {
      throw new MeshblockError('MB_ERR_HOST_QUERY', 'the tool said no');
    },
    async plan(host) {
      const text = await host.transport.readFile('/etc/fake.conf');
      const steps = [];
      if (text !== 'done\n') steps.push(fileStep('/etc/fake.conf', text, 'done\n', 'mark done'));
      if (readHostFile(testRoot, '/ran') === null) steps.push(commandStep(['/usr/bin/fake'], 'run once'));
      return steps;
    },
    async apply(host, steps) {
      return applySteps(host, module, steps, { notesWhenChanged: ['note'] });
    },
  };
  return module;
}

t.test('apply: commands no longer needed are skipped; a failure reports what was done', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'centos7');
  putFile(testRoot, '/etc/fake.conf', 'start\n');
  stub(testRoot, '/usr/bin/fake', 'echo x > "$ROOT/ran"');
  const module = fakeModule(testRoot);
  const host = makeHost(testRoot);
  const finding = await checkModule(module, host);
  t.same([finding.ok, finding.summary], [false, 'cannot check: the tool said no']);
  const steps = await module.plan(host);
  t.equal(steps.length, 2);
  putFile(testRoot, '/ran', 'someone else ran it\n');
  const result = await module.apply(host, steps);
  t.same(result.done.map((line) => line.replace(/\(backup [^)]*\)/, '(backup)')), ['edited /etc/fake.conf (backup): mark done', '/usr/bin/fake: no longer needed']);
  t.same(result.notes, ['note']);
  t.same(calls(testRoot), [], 'the command did not run');

  const failing = copyFixture(t.testdir(), 'centos7');
  putFile(failing, '/etc/fake.conf', 'start\n');
  stub(failing, '/usr/bin/fake', 'echo "fake: disk on fire" >&2; exit 4');
  const failingModule = fakeModule(failing);
  const error = await failingModule.apply(makeHost(failing), await failingModule.plan(makeHost(failing))).catch((err: unknown) => err);
  t.match(error, { code: 'MB_ERR_HOST_STEP', message: '/usr/bin/fake failed (exit 4): fake: disk on fire', result: { done: [/^edited \/etc\/fake.conf/] } });
  const plan = await planModule(failingModule, makeHost(failing));
  t.same([plan.error, plan.steps.length], [null, 1]);
});

/** The programs the modules query, as stubs that make every module's apply succeed. */
function stubEverything(testRoot: TestRoot): void {
  stub(testRoot, '/opt/xensource/libexec/xen-cmdline', '[ "$1" = --set-xen ] && echo "$2" > "$ROOT/dom0" ; [ "$1" = --get-xen ] && cat "$ROOT/dom0" 2>/dev/null; exit 0');
  stub(testRoot, '/usr/sbin/modprobe', 'mkdir -p "$ROOT/sys/module/nbd"');
  stub(testRoot, '/usr/bin/rpm', 'shift; for p in "$@"; do [ -f "$ROOT/pkg-$p" ] && echo "$p-1" || echo "package $p is not installed"; done');
  stub(testRoot, '/usr/bin/yum', 'shift; shift; for p in "$@"; do touch "$ROOT/pkg-$p"; done');
  stub(testRoot, '/usr/bin/dpkg-query', 'shift; shift; for p in "$@"; do [ -f "$ROOT/pkg-$p" ] && printf "%s\\tinstall ok installed\\n" "$p"; done; exit 0');
  stub(testRoot, '/usr/bin/apt-get', '[ "$1" = update ] && exit 0; shift; shift; for p in "$@"; do touch "$ROOT/pkg-$p"; done');
}

for (const name of fixtureNames) {
  t.test(`${name}: after applying every module, every plan is empty`, async (t) => {
    const testRoot = copyFixture(t.testdir(), name);
    if (name === 'debian12') putFile(testRoot, '/etc/debian_version', '12.8\n');
    stubEverything(testRoot);
    const host = makeHost(testRoot);
    const modules = selectModules(['yum-repos,packages,lvm-filter,nbd-module,dom0-memory,xen-sr']);
    for (const module of modules) {
      const plan = await planModule(module, host);
      t.equal(plan.error, null, `${module.name} plans`);
      await module.apply(host, plan.steps);
    }
    for (const module of modules) {
      t.same(await module.plan(host), [], `${module.name}: nothing left to do`);
      t.equal((await module.check(host)).ok, true, `${module.name}: ok`);
    }
  });
}
