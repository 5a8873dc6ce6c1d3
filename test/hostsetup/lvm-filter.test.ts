// The lvm-filter module on each fixture's real lvm.conf, copied into a test root: plan shows
// the edit as a diff without writing, apply backs the file up and adds exactly the types
// line (XenServer's filter stays as it is), a second plan is empty; a host without lvm.conf
// or with a damaged one gets a finding that says so, and nothing is written.

import * as fs from 'node:fs';
import t from 'tap';
import { checkModule } from '../../src/hostsetup/host-modules.js';
import { lvmConfPath, lvmFilterModule } from '../../src/hostsetup/lvm-filter.js';
import { backupsOf, copyFixture, fixtureNames, lineChanges, makeHost, putFile, readHostFile } from '../helpers/host-root.js';

for (const name of fixtureNames) {
  t.test(`${name}: types gains nbd, nothing else changes, the second run does nothing`, async (t) => {
    const testRoot = copyFixture(t.testdir(), name);
    const host = makeHost(testRoot);
    const before = readHostFile(testRoot, lvmConfPath) as string;
    const finding = await lvmFilterModule.check(host);
    t.equal(finding.ok, false);
    t.equal(finding.summary, 'LVM does not accept NBD devices yet: "nbd" in devices/types');
    const steps = await lvmFilterModule.plan(host);
    t.equal(steps.length, 1);
    const step = steps[0];
    if (step?.kind !== 'file') throw new Error('expected a file step');
    t.match(step.diff, /\n\+\ttypes = \[ "nbd", 16 \]\n/);
    t.equal(step.diff.split('\n').filter((line) => /^[-+][^-+]/.test(line)).length, 1, 'the diff adds one line');
    t.equal(readHostFile(testRoot, lvmConfPath), before, 'plan writes nothing');

    const result = await lvmFilterModule.apply(host, steps);
    const after = readHostFile(testRoot, lvmConfPath) as string;
    t.same(lineChanges(before, after), { added: ['\ttypes = [ "nbd", 16 ]'], removed: [] });
    if (name === 'xenserver') t.ok(after.includes('\tfilter = [ "r|/dev/xvd.|", "r|/dev/VG_Xen.*/*|"]'), "XenServer's filter is kept");
    const backups = backupsOf(testRoot, lvmConfPath);
    t.equal(backups.length, 1);
    t.equal(fs.readFileSync(backups[0] as string, 'utf8'), before);
    t.match(result.done[0], /^edited \/etc\/lvm\/lvm.conf \(backup \/etc\/lvm\/lvm.conf.meshblock-\d{8}T\d{6}.bak\)/);

    t.equal((await lvmFilterModule.check(host)).ok, true);
    t.same(await lvmFilterModule.plan(host), [], 'second plan is empty');
  });
}

t.test('a host without lvm.conf: not ok, says to install lvm2, plans nothing', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'debian12');
  fs.rmSync(`${testRoot.root}${lvmConfPath}`);
  const finding = await lvmFilterModule.check(makeHost(testRoot));
  t.same([finding.ok, finding.summary], [false, 'no /etc/lvm/lvm.conf: LVM is not installed (install lvm2)']);
  t.same(await lvmFilterModule.plan(makeHost(testRoot)), []);
});

t.test('a damaged lvm.conf: cannot check, cannot plan, nothing written', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'xenserver');
  const damaged = (readHostFile(testRoot, lvmConfPath) as string).replace('"r|/dev/VG_Xen.*/*|"]', '"r|/dev/VG_Xen.*/*|"');
  putFile(testRoot, lvmConfPath, damaged);
  const finding = await checkModule(lvmFilterModule, makeHost(testRoot));
  t.equal(finding.ok, false);
  t.match(finding.summary, /^cannot check: lvm.conf line \d+: 'filter' has an unclosed '\['/);
  await t.rejects(lvmFilterModule.plan(makeHost(testRoot)), { code: 'MB_ERR_LVM_CONF_SYNTAX' });
  t.equal(readHostFile(testRoot, lvmConfPath), damaged);
});

t.test('apply refuses a plan whose file changed since, and writes nothing', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'centos7');
  const host = makeHost(testRoot);
  const steps = await lvmFilterModule.plan(host);
  const changed = `${readHostFile(testRoot, lvmConfPath) as string}# edited by hand meanwhile\n`;
  putFile(testRoot, lvmConfPath, changed);
  await t.rejects(lvmFilterModule.apply(host, steps), { code: 'MB_ERR_HOST_CHANGED', message: /changed since the plan was made/ });
  t.equal(readHostFile(testRoot, lvmConfPath), changed);
  t.same(backupsOf(testRoot, lvmConfPath), []);
});
