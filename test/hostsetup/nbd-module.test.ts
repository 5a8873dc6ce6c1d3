// The nbd-module module on each fixture root, with a stub modprobe under the root that
// "loads" the module by creating ROOT/sys/module/nbd (this machine's kernel has no nbd
// module): the two boot files are created, modprobe runs once with the options, a second
// plan is empty; an existing file of ours keeps its other lines; a failing modprobe says why.

import * as fs from 'node:fs';
import t from 'tap';
import { modprobeConfPath, modulesLoadPath, nbdModuleModule } from '../../src/hostsetup/nbd-module.js';
import { calls, clearCalls, copyFixture, fixtureNames, lineChanges, makeHost, putFile, readHostFile, stub, type TestRoot } from '../helpers/host-root.js';

function stubModprobe(testRoot: TestRoot): void {
  stub(testRoot, '/usr/sbin/modprobe', 'mkdir -p "$ROOT/sys/module/nbd/parameters" && echo 16 > "$ROOT/sys/module/nbd/parameters/nbds_max"');
}

for (const name of fixtureNames) {
  t.test(`${name}: loaded now and at boot, once`, async (t) => {
    const testRoot = copyFixture(t.testdir(), name);
    stubModprobe(testRoot);
    const host = makeHost(testRoot);
    const finding = await nbdModuleModule.check(host);
    t.same([finding.ok, finding.summary], [false, 'nbd module: not loaded, not loaded at boot, no options file']);
    const steps = await nbdModuleModule.plan(host);
    t.same(steps.map((step) => (step.kind === 'file' ? `file ${step.path}` : step.argv.join(' '))), [
      `file ${modprobeConfPath}`,
      `file ${modulesLoadPath}`,
      '/usr/sbin/modprobe nbd nbds_max=16 max_part=16',
    ]);
    const result = await nbdModuleModule.apply(host, steps);
    t.same(calls(testRoot), ['/usr/sbin/modprobe nbd nbds_max=16 max_part=16']);
    t.same(result.backups, [], 'new files: nothing to back up');
    t.match(readHostFile(testRoot, modulesLoadPath), /^# .*\nnbd\n$/);
    t.match(readHostFile(testRoot, modprobeConfPath), /\noptions nbd nbds_max=16 max_part=16\n$/);
    t.equal(fs.statSync(`${testRoot.root}${modulesLoadPath}`).mode & 0o777, 0o644);
    const after = await nbdModuleModule.check(host);
    t.same([after.ok, after.details[0]], [true, 'loaded with nbds_max=16']);
    clearCalls(testRoot);
    t.same(await nbdModuleModule.plan(host), []);
    t.same(calls(testRoot), [], 'the second run runs nothing');
  });
}

t.test('existing files of ours keep their other lines; a stale options line is replaced', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'debian12');
  stubModprobe(testRoot);
  const modulesBefore = '# local additions\nloop\n';
  const optionsBefore = '# tuned by hand\noptions nbd nbds_max=4 max_part=16\n';
  putFile(testRoot, modulesLoadPath, modulesBefore);
  putFile(testRoot, modprobeConfPath, optionsBefore);
  const host = makeHost(testRoot);
  await nbdModuleModule.apply(host, await nbdModuleModule.plan(host));
  t.same(lineChanges(modulesBefore, readHostFile(testRoot, modulesLoadPath) as string), { added: ['nbd'], removed: [] });
  t.same(lineChanges(optionsBefore, readHostFile(testRoot, modprobeConfPath) as string), { added: ['options nbd nbds_max=16 max_part=16'], removed: ['options nbd nbds_max=4 max_part=16'] });
  t.equal(fs.readdirSync(`${testRoot.root}/etc/modules-load.d`).filter((entry) => entry.endsWith('.bak')).length, 1, 'backed up before the edit');
  t.same(await nbdModuleModule.plan(host), []);
});

t.test('a loaded module with fewer devices is reported, not reloaded', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'centos7');
  putFile(testRoot, '/sys/module/nbd/parameters/nbds_max', '2\n');
  const finding = await nbdModuleModule.check(makeHost(testRoot));
  t.match(finding.details.join('\n'), /the loaded module has 2 devices, fewer than 16/);
  const steps = await nbdModuleModule.plan(makeHost(testRoot));
  t.equal(steps.filter((step) => step.kind === 'command').length, 0, 'no modprobe: it is loaded');
});

t.test('modprobe failing: the error says the kernel may lack the module, files stay written', async (t) => {
  const testRoot = copyFixture(t.testdir(), 'centos7');
  stub(testRoot, '/usr/sbin/modprobe', 'echo "modprobe: FATAL: Module nbd not found in directory /lib/modules/3.10.0" >&2; exit 1');
  const host = makeHost(testRoot);
  await t.rejects(nbdModuleModule.apply(host, await nbdModuleModule.plan(host)), {
    code: 'MB_ERR_HOST_STEP',
    message: /cannot load the nbd kernel module .*: modprobe: FATAL: Module nbd not found .*modinfo nbd/,
  });
  t.not(readHostFile(testRoot, modulesLoadPath), null, 'the boot files were written before');
});
