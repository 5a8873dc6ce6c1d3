// The dom0-memory module against a stub xen-cmdline at /opt/xensource/libexec/xen-cmdline
// under the XenServer fixture's root. The stub keeps the Xen command line in a file and logs
// its calls, so the test asserts the exact --get-xen/--set-xen calls, that apply reports the
// reboot, and that a second plan is empty. Elsewhere the module does not apply.

import t from 'tap';
import { dom0MemDefault, dom0MemoryModule, parseDom0Mem, rebootNote } from '../../src/hostsetup/dom0-memory.js';
import { checkModule } from '../../src/hostsetup/host-modules.js';
import { calls, clearCalls, copyFixture, makeHost, putFile, stub, type TestRoot } from '../helpers/host-root.js';

const xenCmdline = '/opt/xensource/libexec/xen-cmdline';

/** A xen-cmdline that reads and writes dom0_mem in ROOT/xen-cmdline.state. */
function stubXenCmdline(testRoot: TestRoot, initial: string | null): void {
  if (initial !== null) putFile(testRoot, '/xen-cmdline.state', `${initial}\n`);
  stub(testRoot, xenCmdline, [
    'state="$ROOT/xen-cmdline.state"',
    'case "$1" in',
    '  --get-xen) [ -f "$state" ] && cat "$state"; exit 0 ;;',
    '  --set-xen) printf "%s\\n" "$2" > "$state"; exit 0 ;;',
    '  *) echo "usage" >&2; exit 1 ;;',
    'esac',
  ].join('\n'));
}

t.test('XenServer: dom0_mem 752M is set to 4096M,max:4096M with --set-xen; reboot reported', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'xenserver');
  stubXenCmdline(testRoot, 'dom0_mem=752M,max:752M');
  const host = makeHost(testRoot);
  const finding = await dom0MemoryModule.check(host);
  t.same([finding.applicable, finding.ok, finding.summary], [true, false, 'dom0_mem is 752M,max:752M, wanted 4096M,max:4096M']);
  const steps = await dom0MemoryModule.plan(host);
  t.same(steps.map((step) => (step.kind === 'command' ? step.argv : null)), [[xenCmdline, '--set-xen', 'dom0_mem=4096M,max:4096M']]);
  clearCalls(testRoot);
  const result = await dom0MemoryModule.apply(host, steps);
  t.same(calls(testRoot), [`${xenCmdline} --get-xen dom0_mem`, `${xenCmdline} --set-xen dom0_mem=4096M,max:4096M`], 'apply re-checks, then sets');
  t.same(result.notes, [rebootNote]);
  clearCalls(testRoot);
  t.same(await dom0MemoryModule.plan(host), []);
  t.equal((await dom0MemoryModule.check(host)).ok, true);
  t.same(calls(testRoot), [`${xenCmdline} --get-xen dom0_mem`, `${xenCmdline} --get-xen dom0_mem`], 'the second run only reads');
  const again = await dom0MemoryModule.apply(host, []);
  t.same(again.notes, [], 'nothing changed: no reboot');
});

t.test('--dom0-mem 8G, and a Xen command line without dom0_mem', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'xenserver');
  stubXenCmdline(testRoot, null);
  putFile(testRoot, '/etc/xensource-inventory', "INSTALLATION_UUID='0b4ab7a4-5d1f-4b8e-9d3c-6f2a3f1e9a10'\n");
  const host = makeHost(testRoot, { dom0Mem: '8G' });
  t.equal((await dom0MemoryModule.check(host)).summary, 'dom0_mem is not set, wanted 8G,max:8G');
  await dom0MemoryModule.apply(host, await dom0MemoryModule.plan(host));
  t.match(calls(testRoot).join('\n'), `${xenCmdline} --set-xen dom0_mem=8G,max:8G`);
  t.same(await dom0MemoryModule.plan(host), []);
});

t.test('not a XenServer host: centos7, debian12 and the bare xenserver fixture', async (t) => {
  for (const name of ['centos7', 'debian12', 'xenserver'] as const) {
    const testRoot = copyFixture(t.testdir(), name);
    const finding = await dom0MemoryModule.check(makeHost(testRoot));
    t.same([finding.applicable, finding.ok, finding.summary], [false, true, 'not a XenServer host'], name);
    t.same(await dom0MemoryModule.plan(makeHost(testRoot)), [], name);
  }
});

t.test('a XenServer inventory without xen-cmdline: says what to do by hand', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'xenserver');
  putFile(testRoot, '/etc/xensource-inventory', "PRODUCT_BRAND='XenServer'\n");
  const finding = await dom0MemoryModule.check(makeHost(testRoot));
  t.same([finding.applicable, finding.ok], [true, false]);
  t.match(finding.details.join('\n'), /set dom0_mem=4096M,max:4096M .* by hand, then reboot/);
  t.same(await dom0MemoryModule.plan(makeHost(testRoot)), []);
});

t.test('xen-cmdline failing: cannot check, with what it said', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'xenserver');
  stub(testRoot, xenCmdline, 'echo "cannot open /boot/extlinux.conf" >&2; exit 1');
  const finding = await checkModule(dom0MemoryModule, makeHost(testRoot));
  t.match(finding.summary, /cannot check: .*xen-cmdline --get-xen dom0_mem failed \(exit 1\): cannot open \/boot\/extlinux.conf/);
});

t.test('dom0 sizes: as Xen writes them, within range', async (t) => {
  t.equal(parseDom0Mem('--dom0-mem', dom0MemDefault), 4096);
  t.equal(parseDom0Mem('--dom0-mem', '4G'), 4096);
  for (const bad of ['4096', '4096MB', '512M', '0M', '300G', 'lots', '4.5G']) {
    t.throws(() => parseDom0Mem('--dom0-mem', bad), { code: 'MB_ERR_OUT_OF_RANGE', message: /^--dom0-mem: / }, bad);
  }
});
