// The xen-sr module against a stub xe at /opt/xensource/bin/xe under the XenServer fixture's
// root, which keeps its SRs in a file and logs every call. Asserted: the exact sr-list and
// sr-create calls (with this host's uuid from xensource-inventory), that a second run finds
// its own SR and does nothing, that a name-label already used elsewhere is refused before
// anything is created, and that an unattached device is refused.

import t from 'tap';
import { checkModule } from '../../src/hostsetup/host-modules.js';
import { parseInstallationUuid, xenSrModule } from '../../src/hostsetup/xen-sr.js';
import { calls, clearCalls, copyFixture, makeHost, putFile, stub, type TestRoot } from '../helpers/host-root.js';

const xe = '/opt/xensource/bin/xe';
const hostUuid = '0b4ab7a4-5d1f-4b8e-9d3c-6f2a3f1e9a10';

/** ROOT/xe-srs holds "uuid name device" lines. */
function xenRoot(dir: string, srs: string[] = []): TestRoot {
  const testRoot = copyFixture(dir, 'xenserver');
  putFile(testRoot, '/etc/xensource-inventory', `PRODUCT_BRAND='XenServer'\nINSTALLATION_UUID='${hostUuid}'\n`);
  putFile(testRoot, '/xe-srs', srs.map((line) => `${line}\n`).join(''));
  putFile(testRoot, '/sys/block/nbd0/size', '2097152\n');
  stub(testRoot, xe, [
    'srs="$ROOT/xe-srs"',
    'arg() { for word in "$@"; do case "$word" in "$key"=*) echo "${word#*=}";; esac; done; }',
    'case "$1" in',
    '  sr-list) key=name-label; name=$(arg "$@"); awk -v n="$name" \'$2 == n { printf "%s%s", sep, $1; sep="," } END { print "" }\' "$srs" ;;',
    '  pbd-list) key=sr-uuid; uuid=$(arg "$@"); awk -v u="$uuid" \'$1 == u { print "device: " $3 }\' "$srs" ;;',
    '  sr-create) key=name-label; name=$(arg "$@"); key=device-config:device; device=$(arg "$@");',
    '    echo "c0ffee00-0000-0000-0000-00000000000$(wc -l < "$srs") $name $device" >> "$srs"; tail -1 "$srs" | cut -d" " -f1 ;;',
    '  *) echo "unknown command $1" >&2; exit 1 ;;',
    'esac',
  ].join('\n'));
  return testRoot;
}

t.test('creates the SR once, with sr-list first, and finds it the second time', async (t) => {
  const testRoot = xenRoot(t.testdir());
  const host = makeHost(testRoot, { srName: 'meshblock-sr', srDevice: '/dev/nbd0' });
  const finding = await xenSrModule.check(host);
  t.same([finding.ok, finding.summary, finding.details], [false, "no SR named 'meshblock-sr' yet", ['/dev/nbd0 is attached (1073741824 bytes)']]);
  const steps = await xenSrModule.plan(host);
  const createArgv = [xe, 'sr-create', 'type=lvm', 'content-type=user', 'shared=true', 'name-label=meshblock-sr', 'device-config:device=/dev/nbd0', `host-uuid=${hostUuid}`];
  t.same(steps.map((step) => (step.kind === 'command' ? step.argv : null)), [createArgv]);
  clearCalls(testRoot);
  await xenSrModule.apply(host, steps);
  t.same(calls(testRoot), [`${xe} sr-list name-label=meshblock-sr --minimal`, createArgv.join(' ')]);
  clearCalls(testRoot);
  t.same(await xenSrModule.plan(host), []);
  t.same(calls(testRoot), [
    `${xe} sr-list name-label=meshblock-sr --minimal`,
    `${xe} pbd-list sr-uuid=c0ffee00-0000-0000-0000-000000000000 params=device-config --minimal`,
  ]);
  const after = await xenSrModule.check(host);
  t.same([after.ok, after.summary], [true, "SR 'meshblock-sr' exists on /dev/nbd0"]);
});

t.test('a name-label already used on another device is refused before sr-create', async (t) => {
  const testRoot = xenRoot(t.testdir(), ['5a5a5a5a-1111-2222-3333-444444444444 meshblock-sr /dev/sdb']);
  const host = makeHost(testRoot, { srName: 'meshblock-sr', srDevice: '/dev/nbd0' });
  await t.rejects(xenSrModule.plan(host), { code: 'MB_ERR_SR_EXISTS', message: /an SR named 'meshblock-sr' already exists \(5a5a5a5a-1111-2222-3333-444444444444 on \/dev\/sdb\)/ });
  const finding = await checkModule(xenSrModule, host);
  t.same([finding.ok, /already exists/.test(finding.summary)], [false, true]);
  // A plan made before someone else took the name: apply re-checks and refuses too.
  const fresh = xenRoot(t.testdir());
  const freshHost = makeHost(fresh, { srName: 'meshblock-sr', srDevice: '/dev/nbd0' });
  const steps = await xenSrModule.plan(freshHost);
  putFile(fresh, '/xe-srs', '5a5a5a5a-1111-2222-3333-444444444444 meshblock-sr /dev/sdb\n');
  await t.rejects(xenSrModule.apply(freshHost, steps), { code: 'MB_ERR_SR_EXISTS' });
  t.notMatch(calls(testRoot).join('\n') + calls(fresh).join('\n'), /sr-create/, 'sr-create never ran');
});

t.test('the device must be attached', async (t) => {
  const testRoot = xenRoot(t.testdir());
  putFile(testRoot, '/sys/block/nbd0/size', '0\n');
  const host = makeHost(testRoot, { srName: 'sr1', srDevice: '/dev/nbd0' });
  t.match((await xenSrModule.check(host)).details, ['/dev/nbd0 is not attached: meshblock attach VOLUME --device /dev/nbd0']);
  await t.rejects(xenSrModule.plan(host), { code: 'MB_ERR_SR_DEVICE' });
  await t.rejects(xenSrModule.plan(makeHost(testRoot, { srName: 'sr1', srDevice: '/dev/nbd7' })), { code: 'MB_ERR_SR_DEVICE', message: /\/dev\/nbd7 does not exist/ });
  await t.rejects(xenSrModule.plan(makeHost(testRoot, { srName: 'sr1', srDevice: '/dev/sdb' })), { code: 'MB_ERR_INVALID_ARGUMENT' });
});

t.test('without an SR asked for: ok; without xe: not applicable', async (t) => {
  const testRoot = xenRoot(t.testdir());
  const finding = await xenSrModule.check(makeHost(testRoot));
  t.same([finding.ok, finding.summary], [true, `xe present (${xe}); no SR asked for`]);
  t.same(await xenSrModule.plan(makeHost(testRoot)), []);
  for (const name of ['centos7', 'xenserver', 'debian12'] as const) {
    const plain = copyFixture(t.testdir(), name);
    const host = makeHost(plain, { srName: 'sr1', srDevice: '/dev/nbd0' });
    t.same([(await xenSrModule.check(host)).applicable, await xenSrModule.plan(host)], [false, []], name);
  }
});

t.test('the host uuid from xensource-inventory', async (t) => {
  t.equal(parseInstallationUuid(`PRODUCT_BRAND='XenServer'\nINSTALLATION_UUID='${hostUuid}'\nCONTROL_DOMAIN_UUID='x'\n`), hostUuid);
  t.equal(parseInstallationUuid('PRODUCT_BRAND=x\n'), null);
});
