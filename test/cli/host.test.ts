// `meshblock host check|plan|apply` as a user runs it: the real command against a copy of the
// XenServer fixture tree (--root), with stub rpm, yum, modprobe and xen-cmdline under the root
// recording their calls. check fails before and passes after `apply --yes`; plan prints
// unified diffs and the commands; apply backs up the files it edits; a second apply changes
// nothing. Without --yes and without a terminal, apply refuses. Bad flags: one line, exit 2.

import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { meshblockBin, run, runMeshblock } from '../helpers/processes.js';
import { backupsOf, calls, clearCalls, copyFixture, fixturesDir, lineChanges, putFile, readHostFile, stub, type TestRoot } from '../helpers/host-root.js';

const xenCmdline = '/opt/xensource/libexec/xen-cmdline';

function xenServerRoot(dir: string): TestRoot {
  const testRoot = copyFixture(dir, 'xenserver');
  putFile(testRoot, '/etc/xensource-inventory', "PRODUCT_BRAND='XenServer'\nINSTALLATION_UUID='0b4ab7a4-5d1f-4b8e-9d3c-6f2a3f1e9a10'\n");
  putFile(testRoot, '/xen-dom0', 'dom0_mem=752M,max:752M\n');
  stub(testRoot, xenCmdline, '[ "$1" = --set-xen ] && echo "$2" > "$ROOT/xen-dom0"; [ "$1" = --get-xen ] && cat "$ROOT/xen-dom0"; exit 0');
  stub(testRoot, '/usr/sbin/modprobe', 'mkdir -p "$ROOT/sys/module/nbd"');
  stub(testRoot, '/usr/bin/rpm', 'shift; n=0; for p in "$@"; do if [ -f "$ROOT/pkg-$p" ]; then echo "$p-1.0-1.el7"; else echo "package $p is not installed"; n=$((n+1)); fi; done; exit $n');
  stub(testRoot, '/usr/bin/yum', [
    `if ! sed -n '/^\\[base\\]/,/^\\[/p' "$ROOT/etc/yum.repos.d/CentOS-Base.repo" | grep -q '^enabled=1'; then`,
    '  shift; shift; for p in "$@"; do echo "No package $p available."; done; echo "Error: Nothing to do" >&2; exit 1',
    'fi',
    'shift; shift; for p in "$@"; do touch "$ROOT/pkg-$p"; done',
  ].join('\n'));
  return testRoot;
}

/** Every file under the root, with its text, to prove a run changed nothing. */
function snapshot(dir: string): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (current: string) => {
    for (const entry of fs.readdirSync(current, { withFileTypes: true })) {
      const full = path.join(current, entry.name);
      if (entry.isDirectory()) walk(full);
      else files.set(path.relative(dir, full), fs.readFileSync(full, 'utf8'));
    }
  };
  walk(dir);
  return files;
}

// disks lists this machine's devices and prereqs uses its openssl and node: both pass here and
// are tested on their own; left out so the run depends on the root only.
const only = ['--only', 'yum-repos,packages,lvm-filter,nbd-module,dom0-memory,xen-sr'];

t.test('check fails, plan shows diffs, apply --yes fixes, a second apply changes nothing', async (t) => {
  const testRoot = xenServerRoot(t.testdir());
  const root = ['--root', testRoot.root];
  const lvmBefore = readHostFile(testRoot, '/etc/lvm/lvm.conf') as string;
  const repoBefore = readHostFile(testRoot, '/etc/yum.repos.d/CentOS-Base.repo') as string;

  const check = await runMeshblock(['host', 'check', ...root, ...only]);
  t.equal(check.code, 1, check.stderr);
  t.match(check.stdout, /^meshblock host check: this machine, root .*\n/);
  t.match(check.stdout, /\nFAIL  yum-repos    \[base\] and \[updates\] are not enabled/);
  t.match(check.stdout, /\nFAIL  packages     not installed: numactl, libaio, nbd\n/);
  t.match(check.stdout, /\nFAIL  dom0-memory  dom0_mem is 752M,max:752M, wanted 4096M,max:4096M\n/);
  t.match(check.stdout, /\nn\/a   xen-sr       no xe: not a XenServer host\n/);
  t.match(check.stdout, /\n5 of 6 modules not ok: see meshblock host plan --root /);

  const snapshotBefore = snapshot(testRoot.root);
  const plan = await runMeshblock(['host', 'plan', ...root, ...only]);
  t.equal(plan.code, 0, plan.stderr);
  t.match(plan.stdout, /--- a\/etc\/lvm\/lvm.conf\n\+\+\+ b\/etc\/lvm\/lvm.conf\n@@ -\d+,\d+ \+\d+,\d+ @@\n/);
  t.match(plan.stdout, /\n-enabled=0\n\+enabled=1\n/);
  t.match(plan.stdout, /--- \/dev\/null\n\+\+\+ b\/etc\/modules-load.d\/meshblock-nbd.conf\n/);
  t.match(plan.stdout, `\n$ /usr/bin/yum install -y numactl libaio nbd\n`);
  t.match(plan.stdout, `\n$ ${xenCmdline} --set-xen dom0_mem=4096M,max:4096M\n`);
  t.match(plan.stdout, /\n7 change\(s\) in 5 module\(s\); apply with: meshblock host apply --root .* --only yum-repos,packages,lvm-filter,nbd-module,dom0-memory,xen-sr --yes\n$/);
  t.same(snapshot(testRoot.root), snapshotBefore, 'plan changes nothing');

  const refused = await runMeshblock(['host', 'apply', ...root, ...only]);
  t.equal(refused.code, 1);
  t.equal(refused.stderr, 'meshblock: no terminal to ask: pass --yes\n');
  t.same(snapshot(testRoot.root), snapshotBefore, 'refused: nothing changed');

  clearCalls(testRoot);
  const apply = await runMeshblock(['host', 'apply', ...root, ...only, '--yes']);
  t.equal(apply.code, 0, apply.stdout + apply.stderr);
  t.match(apply.stdout, /yum-repos: edited \/etc\/yum.repos.d\/CentOS-Base.repo \(backup \/etc\/yum.repos.d\/CentOS-Base.repo.meshblock-\d{8}T\d{6}.bak\)/);
  t.match(apply.stdout, /note: reboot needed: Xen reads dom0_mem only at boot\n/);
  t.match(apply.stdout, /all 6 modules ok\n$/);
  t.match(calls(testRoot).filter((line) => !/ -q | --get-xen /.test(line)), [
    '/usr/bin/yum install -y numactl libaio nbd',
    '/usr/sbin/modprobe nbd nbds_max=16 max_part=16',
    `${xenCmdline} --set-xen dom0_mem=4096M,max:4096M`,
  ]);
  t.same(lineChanges(lvmBefore, readHostFile(testRoot, '/etc/lvm/lvm.conf') as string), { added: ['\ttypes = [ "nbd", 16 ]'], removed: [] });
  t.same(lineChanges(repoBefore, readHostFile(testRoot, '/etc/yum.repos.d/CentOS-Base.repo') as string), { added: ['enabled=1', 'enabled=1'], removed: ['enabled=0', 'enabled=0'] });
  const lvmBackups = backupsOf(testRoot, '/etc/lvm/lvm.conf');
  t.equal(lvmBackups.length, 1);
  t.equal(fs.readFileSync(lvmBackups[0] as string, 'utf8'), lvmBefore);
  t.equal(backupsOf(testRoot, '/etc/yum.repos.d/CentOS-Base.repo').length, 1);

  const checkAfter = await runMeshblock(['host', 'check', ...root, ...only]);
  t.equal(checkAfter.code, 0, checkAfter.stdout);
  t.match(checkAfter.stdout, /all 6 modules ok\n$/);

  const snapshotAfter = snapshot(testRoot.root);
  clearCalls(testRoot);
  const again = await runMeshblock(['host', 'apply', ...root, ...only]);
  t.equal(again.code, 0, 'nothing to do: no question, no --yes needed');
  t.match(again.stdout, /nothing to change\n/);
  t.notMatch(calls(testRoot).join('\n'), /install|modprobe|--set-xen/, 'only queries ran');
  t.same(snapshot(testRoot.root), new Map([...snapshotAfter].filter(([name]) => name !== '../calls.log')), 'the second apply changed nothing');

  const json = await runMeshblock(['host', 'check', ...root, ...only, '--json']);
  const report = JSON.parse(json.stdout) as { ok: boolean; findings: Array<{ module: string; ok: boolean; applicable: boolean }> };
  t.equal(report.ok, true);
  t.same(report.findings.map((finding) => [finding.module, finding.ok, finding.applicable]), [
    ['yum-repos', true, true], ['packages', true, true], ['lvm-filter', true, true], ['nbd-module', true, true], ['dom0-memory', true, true], ['xen-sr', true, false],
  ]);
});

t.test('on a terminal, apply shows the plan and asks; only y applies', async (t) => {
  // util-linux's script(1) gives the command a terminal; its -e passes the exit code on.
  const probe = await run('script', ['-qec', 'true', '/dev/null']);
  if (probe.code !== 0) {
    t.skip(`no script(1) to make a terminal: ${probe.stderr.trim()}`, () => undefined);
    return;
  }
  const testRoot = copyFixture(t.testdir(), 'centos7');
  const before = readHostFile(testRoot, '/etc/lvm/lvm.conf');
  const command = `${process.execPath} ${meshblockBin} host apply --root '${testRoot.root}' --only lvm-filter`;
  const no = await run('script', ['-qec', command, '/dev/null'], { input: 'n\n' });
  t.equal(no.code, 1);
  t.match(no.stdout, /\+\ttypes = \[ "nbd", 16 \]\r?\n/, 'the plan is shown first');
  t.match(no.stdout, /apply 1 change\(s\) to this machine, root .*\? \[y\/N\]/);
  t.match(no.stdout, /not applied: nothing changed/);
  t.equal(readHostFile(testRoot, '/etc/lvm/lvm.conf'), before);
  const yes = await run('script', ['-qec', command, '/dev/null'], { input: 'y\n' });
  t.equal(yes.code, 0, yes.stdout);
  t.match(yes.stdout, /lvm-filter: edited \/etc\/lvm\/lvm.conf/);
  t.equal(backupsOf(testRoot, '/etc/lvm/lvm.conf').length, 1);
});

t.test('a step that fails stops apply with its reason, exit 1', async (t) => {
  const testRoot = xenServerRoot(t.testdir());
  const apply = await runMeshblock(['host', 'apply', '--root', testRoot.root, '--only', 'packages', '--yes']);
  t.equal(apply.code, 1);
  t.match(apply.stdout, 'packages: FAILED: /usr/bin/yum install -y numactl libaio nbd: no enabled repository has numactl, libaio, nbd: enable the CentOS base repository: meshblock host apply --only yum-repos\n');
  const plan = await runMeshblock(['host', 'plan', '--root', testRoot.root, '--only', 'prereqs,lvm-filter', '--json']);
  t.equal(plan.code, 0, plan.stderr);
  const parsed = JSON.parse(plan.stdout) as { steps: number; plans: Array<{ module: string; steps: Array<{ kind: string; path: string; diff: string }> }> };
  t.equal(parsed.steps, 1);
  t.same(parsed.plans.map((entry) => [entry.module, entry.steps.map((step) => step.path)]), [['prereqs', []], ['lvm-filter', ['/etc/lvm/lvm.conf']]]);
});

t.test('the whole host check runs against the read-only fixture and reports every module', async (t) => {
  const check = await runMeshblock(['host', 'check', '--root', path.join(fixturesDir, 'xenserver')]);
  // The fixture has no programs: packages cannot check. Not ok, and one line per module.
  t.equal(check.code, 1);
  for (const module of ['yum-repos', 'packages', 'prereqs', 'lvm-filter', 'nbd-module', 'dom0-memory', 'disks', 'xen-sr']) {
    t.match(check.stdout, new RegExp(`\\n(ok  |FAIL|n/a )  ${module} `), module);
  }
});

t.test('bad usage: one line, exit 2', async (t) => {
  const root = t.testdir();
  const cases: Array<[string[], RegExp]> = [
    [['host'], /host: name a subcommand \(check, plan, apply\)/],
    [['host', 'check', '--only', 'lvm-filter,nope'], /--only: unknown module 'nope'/],
    [['host', 'check', '--root', '/nonexistent/dir'], /--root: '\/nonexistent\/dir' is not a directory/],
    [['host', 'plan', '--dom0-mem', '4096'], /--dom0-mem: must be a size in M or G/],
    [['host', 'plan', '--sr-name', 'sr1'], /--sr-name\/--sr-device: give both or neither/],
    [['host', 'plan', '--sr-name', 'sr1', '--sr-device', '/dev/sda'], /--sr-device: must be an NBD device/],
    [['host', 'apply', '--yes-wipe', 'sdb'], /--yes-wipe: must be a device path/],
    [['host', 'check', '--yes'], /Unknown argument: yes/],
    [['host', 'check', '--bogus'], /Unknown argument: bogus/],
  ];
  for (const [args, pattern] of cases) {
    const result = await runMeshblock([...args, ...(args.includes('--root') ? [] : ['--root', root])]);
    t.equal(result.code, 2, `${args.join(' ')} exits 2`);
    t.match(result.stderr, pattern, `${args.join(' ')} says why`);
    t.equal(result.stderr.trim().split('\n').length, 1, `${args.join(' ')} in one line`);
  }
  // --host works on that host's / (test/hostsetup/ssh-transport.test.ts runs it for real).
  const ssh = await runMeshblock(['host', 'check', '--host', 'root@10.0.0.5', '--root', root]);
  t.equal(ssh.code, 2);
  t.match(ssh.stderr, /^meshblock: --root: a root directory is for this machine; with --host the modules work on that host's \/\n$/);
  const help = await runMeshblock(['host', 'apply', '--help']);
  t.equal(help.code, 0);
  for (const flag of ['--root', '--host', '--only', '--yes', '--json', '--dom0-mem', '--sr-name', '--sr-device', '--yes-wipe']) t.match(help.stdout, flag);
});
