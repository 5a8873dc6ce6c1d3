// The yum-repos module on the real CentOS-Base.repo files of XenServer (base and updates
// shipped enabled=0) and CentOS 7 (enabled by leaving the key out), copied into a test root:
// the edit touches exactly the two enabled= lines, the file is backed up first, a second run
// changes nothing, disableAfter puts the file back byte for byte, and a damaged file, a
// missing file or a non-yum host give a finding that says so.

import * as fs from 'node:fs';
import t from 'tap';
import { checkModule } from '../../src/hostsetup/host-modules.js';
import { parseRepoFile, sectionEnabled, setReposEnabled } from '../../src/hostsetup/yum-repo-file.js';
import { centosBaseRepoPath, disableAfter, yumReposModule } from '../../src/hostsetup/yum-repos.js';
import { backupsOf, copyFixture, fixturesDir, lineChanges, makeHost, putFile, readHostFile } from '../helpers/host-root.js';

function fixtureRepo(name: 'centos7' | 'xenserver'): string {
  return fs.readFileSync(`${fixturesDir}/${name}/etc/yum.repos.d/CentOS-Base.repo`, 'utf8');
}

t.test('the parser reads both fixtures as yum does', async (t) => {
  const xen = parseRepoFile(fixtureRepo('xenserver'));
  t.same(xen.map((section) => [section.name, sectionEnabled(section)]), [['base', false], ['updates', false], ['extras', false], ['centosplus', false]]);
  const centos = parseRepoFile(fixtureRepo('centos7'));
  t.same(centos.map((section) => [section.name, sectionEnabled(section)]), [['base', true], ['updates', true], ['extras', true], ['centosplus', false]], 'no enabled= line: enabled');
});

t.test('XenServer: enabling base and updates changes those two lines only; a second run nothing', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'xenserver');
  const host = makeHost(testRoot);
  const before = readHostFile(testRoot, centosBaseRepoPath) as string;
  const finding = await yumReposModule.check(host);
  t.equal(finding.ok, false);
  t.match(finding.summary, /\[base\] and \[updates\] are not enabled/);
  t.match(finding.details.join('\n'), /no \/etc\/os-release.*\/etc\/yum.repos.d exists: taken as a yum host/, 'says how it decided without os-release');
  const steps = await yumReposModule.plan(host);
  t.equal(steps.length, 1);
  const step = steps[0];
  if (step?.kind !== 'file') throw new Error('expected a file step');
  t.match(step.diff, /^--- a\/etc\/yum.repos.d\/CentOS-Base.repo\n\+\+\+ b\/etc\/yum.repos.d\/CentOS-Base.repo\n/);
  t.equal(readHostFile(testRoot, centosBaseRepoPath), before, 'plan changes nothing');
  const result = await yumReposModule.apply(host, steps);
  const after = readHostFile(testRoot, centosBaseRepoPath) as string;
  t.same(lineChanges(before, after), { added: ['enabled=1', 'enabled=1'], removed: ['enabled=0', 'enabled=0'] });
  t.same(parseRepoFile(after).map((section) => [section.name, sectionEnabled(section)]), [['base', true], ['updates', true], ['extras', false], ['centosplus', false]], 'extras and centosplus stay off');
  const backups = backupsOf(testRoot, centosBaseRepoPath);
  t.equal(backups.length, 1);
  t.equal(fs.readFileSync(backups[0] as string, 'utf8'), before, 'the backup is the file as it was');
  t.same(result.backups.length, 1);
  t.equal((await yumReposModule.check(host)).ok, true);
  t.same(await yumReposModule.plan(host), [], 'a second plan is empty');
  const again = await yumReposModule.apply(makeHost(testRoot), await yumReposModule.plan(host));
  t.same(again.done, [], 'a second apply does nothing');
  t.equal(backupsOf(testRoot, centosBaseRepoPath).length, 1, 'and makes no backup');

  // The installer turns them off again once the packages are in: the original, byte for byte.
  const disabled = await disableAfter(makeHost(testRoot));
  t.equal(disabled.done.length, 1);
  t.equal(readHostFile(testRoot, centosBaseRepoPath), before);
  t.same((await disableAfter(makeHost(testRoot))).done, [], 'disabling twice changes nothing');
});

t.test('CentOS 7: already enabled (yum default), nothing to plan', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'centos7');
  const host = makeHost(testRoot);
  const finding = await yumReposModule.check(host);
  t.equal(finding.ok, true);
  t.match(finding.details.join('\n'), /\[base\] enabled \(no enabled= line: yum's default is 1\)/);
  t.same(await yumReposModule.plan(host), []);
  // Disabling where the key is absent adds it below the header, and nothing else.
  const before = readHostFile(testRoot, centosBaseRepoPath) as string;
  await disableAfter(host);
  const after = readHostFile(testRoot, centosBaseRepoPath) as string;
  t.same(lineChanges(before, after), { added: ['enabled=0', 'enabled=0'], removed: [] });
  t.match(after, /\[base\]\nenabled=0\nname=CentOS-\$releasever - Base\n/);
  t.equal((await yumReposModule.check(host)).ok, false);
  await yumReposModule.apply(host, await yumReposModule.plan(host));
  t.same(lineChanges(before, readHostFile(testRoot, centosBaseRepoPath) as string), { added: ['enabled=1', 'enabled=1'], removed: [] });
});

t.test('Debian 12: not a yum host', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'debian12');
  putFile(testRoot, '/etc/os-release', 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n');
  const finding = await yumReposModule.check(makeHost(testRoot));
  t.same([finding.applicable, finding.ok], [false, true]);
  t.match(finding.summary, /not a yum host \(Debian GNU\/Linux 12/);
  t.same(await yumReposModule.plan(makeHost(testRoot)), []);
  // The bare fixture has nothing that says which family it is: still not a yum host.
  const bare = copyFixture(t.testdir(), 'debian12');
  t.equal((await yumReposModule.check(makeHost(bare))).applicable, false);
});

t.test('os-release decides over the files present', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'xenserver');
  putFile(testRoot, '/etc/os-release', 'NAME="XenServer"\nID="xenenterprise"\nVERSION_ID="8.4.0"\n');
  const finding = await yumReposModule.check(makeHost(testRoot));
  t.match(finding.details[0], /\/etc\/os-release says ID=xenenterprise/);
  t.equal(finding.ok, false);
});

t.test('other line endings, spacing and the key case are kept', async (t) => {
  const text = '[base]\r\nname=x\r\nEnabled = 0\r\n\r\n[updates]\r\nenabled: no\r\n';
  const edit = setReposEnabled(text, ['base', 'updates'], true);
  t.equal(edit.text, '[base]\r\nname=x\r\nEnabled = 1\r\n\r\n[updates]\r\nenabled: 1\r\n');
  t.same(edit.changes, ['[base] enabled=0 -> enabled=1', '[updates] enabled=no -> enabled=1']);
  t.equal(setReposEnabled(edit.text, ['base', 'updates'], true).changed, false);
  // A repeated key: yum takes the last; every one is set, so none contradicts.
  t.equal(setReposEnabled('[base]\nenabled=1\nenabled=0\n', ['base'], true).text, '[base]\nenabled=1\nenabled=1\n');
  // Continuation lines belong to their key.
  t.same(parseRepoFile('[base]\nbaseurl=http://a/\n  http://b/\nenabled=0\n')[0]?.keys.map((key) => [key.name, key.value]), [['baseurl', 'http://a/\nhttp://b/'], ['enabled', '0']]);
});

t.test('a damaged repo file is refused with the line; the module says it cannot check', async (t) => {
  const damaged: Array<[string, RegExp]> = [
    ['[base\nenabled=0\n', /line 1: '\[base' is not a \[section\] header/],
    ['enabled=0\n[base]\n', /line 1: 'enabled=0' comes before any \[section\]/],
    ['[base]\nthis is not a key\n', /line 2: 'this is not a key' is neither/],
    ['[base]\nenabled=0\n[base]\n', /line 3: section \[base\] appears twice/],
    ['  indented\n[base]\n', /line 1: indented line/],
  ];
  for (const [text, message] of damaged) t.throws(() => parseRepoFile(text), { code: 'MB_ERR_REPO_SYNTAX', message }, message.source);
  t.throws(() => sectionEnabled(parseRepoFile('[base]\nenabled=maybe\n')[0] as never), { code: 'MB_ERR_REPO_SYNTAX', message: /enabled=maybe is not 0 or 1/ });
  t.throws(() => setReposEnabled('[base]\nenabled=0\n', ['base', 'updates'], true), { code: 'MB_ERR_REPO_SECTION_MISSING', message: /no \[updates\] section/ });

  const testRoot = copyFixture(t.testdir(), 'xenserver');
  const original = readHostFile(testRoot, centosBaseRepoPath) as string;
  putFile(testRoot, centosBaseRepoPath, original.replace('[updates]', '[updates'));
  const finding = await checkModule(yumReposModule, makeHost(testRoot));
  t.equal(finding.ok, false);
  t.match(finding.summary, /cannot check: \/etc\/yum.repos.d\/CentOS-Base.repo line 23: '\[updates' is not a \[section\] header/);
  await t.rejects(yumReposModule.plan(makeHost(testRoot)), { code: 'MB_ERR_REPO_SYNTAX' });

  putFile(testRoot, centosBaseRepoPath, original.replace(/\[updates\][^[]*/, ''));
  const noUpdates = await yumReposModule.check(makeHost(testRoot));
  t.equal(noUpdates.ok, false);
  t.match(noUpdates.details.join('\n'), /\[updates\] is missing/);
  await t.rejects(yumReposModule.plan(makeHost(testRoot)), { code: 'MB_ERR_REPO_SECTION_MISSING' });
});

t.test('a yum host without CentOS-Base.repo has nothing to enable', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'xenserver');
  fs.rmSync(`${testRoot.root}${centosBaseRepoPath}`);
  const finding = await yumReposModule.check(makeHost(testRoot));
  t.same([finding.applicable, finding.ok], [false, true]);
  t.match(finding.summary, /no \/etc\/yum.repos.d\/CentOS-Base.repo: nothing to enable/);
  t.same(await yumReposModule.plan(makeHost(testRoot)), []);
});
