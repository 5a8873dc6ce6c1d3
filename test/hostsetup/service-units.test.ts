// The services meshblock install writes (src/hostsetup/service-units.ts): the systemd unit's
// text, and the SysV init script run for real. The script is generated as the installer
// generates it (only the meshblock command, its pid and log directories and its stop wait are
// this test's), then run with Debian's /bin/sh (dash) and with busybox's sh (ash, what a
// busybox host has; CentOS 5's bash 3.2 is not here) against a real MDM: start, status, a
// second start that starts no second copy, stop that returns only once the MDM has drained
// and exited (its SIGTERM log line, and its data directory's lock file removed: a killed MDM
// leaves it), status saying stopped. A stand-in daemon that ignores SIGTERM (a sh loop, since
// every meshblock daemon drains) shows stop killing what does not stop within its wait.
// Enabling at boot runs for real in a private mount namespace whose /etc/init.d and
// /etc/rcN.d are this test's directories: S/K links where there is no chkconfig (Debian has
// none), and a chkconfig (a stub recording its arguments, on PATH) used where there is one.

import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { meshblockBin, run } from '../helpers/processes.js';
import { enableInitScriptLines, initScriptText, installedCommandLine, systemdUnitText } from '../../src/hostsetup/service-units.js';

const shells: Array<{ name: string; argv: string[] }> = [
  { name: '/bin/sh', argv: ['/bin/sh'] },
  { name: 'busybox sh', argv: ['/usr/bin/busybox', 'sh'] },
];

/**
 * Kills whatever runs with DIR on its command line (the daemons of a test whose script went
 * wrong and lost their pid: the pid file alone would leave them running).
 */
function killUnder(dir: string): void {
  for (const name of fs.readdirSync('/proc').filter((entry) => /^\d+$/.test(entry))) {
    try {
      if (Number(name) !== process.pid && fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(dir)) process.kill(Number(name), 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie waiting for init to reap it has exited.
  return !/^\d+ \(.*\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

t.test('the systemd unit and the init script carry the command line the installer reads back', async (t) => {
  const args = ['sds', 'start', '--name', 'sds 1', '--shards', '2', '--host', 'sds1'];
  const unit = systemdUnitText('sds', args);
  t.match(unit, "\nExecStart=/usr/local/bin/meshblock sds start --name 'sds 1' --shards 2 --host sds1\n");
  t.notMatch(unit, 'Conflicts=');
  t.match(systemdUnitText('etcd', ['etcd', 'start']), '\nConflicts=etcd.service\n');
  const script = initScriptText('sds', args);
  t.equal(installedCommandLine(unit), "sds start --name 'sds 1' --shards 2 --host sds1");
  t.equal(installedCommandLine(script), "sds start --name 'sds 1' --shards 2 --host sds1");
  t.equal(installedCommandLine('#!/bin/sh\necho hello\n'), null);
  t.equal(installedCommandLine(null), null);
  t.match(script, /^#!\/bin\/sh\n/);
  t.match(script, '\n# chkconfig: 2345 84 16\n');
  t.match(script, '\n### BEGIN INIT INFO\n# Provides: meshblock-sds\n');
  t.match(script, '\n# Should-Start: meshblock-etcd meshblock-mdm\n');
  t.match(script, '\n# Default-Start: 2 3 4 5\n# Default-Stop: 0 1 6\n');
  t.match(script, '\nPIDFILE="$RUNDIR/$ROLE.pid"\n');
  t.match(script, "\nRUNDIR=/var/run/meshblock\n");
  // Boot order: etcd, MDM, SDS, SDC up; the reverse down.
  const priorities = (['etcd', 'mdm', 'sds', 'sdc'] as const).map((role) => /# chkconfig: 2345 (\d+) (\d+)/.exec(initScriptText(role, []))?.slice(1).map(Number) as [number, number]);
  t.same(priorities.map(([start]) => start), [...priorities.map(([start]) => start)].sort((a, b) => a - b), 'started in role order');
  t.same(priorities.map(([, stop]) => stop), [...priorities.map(([, stop]) => stop)].sort((a, b) => b - a), 'stopped in the reverse order');
});

for (const shell of shells) {
  t.test(`the init script under ${shell.name}: a real MDM started, found, not started twice, drained on stop`, { timeout: 240_000 }, async (t) => {
    const dir = t.testdir();
    const command = path.join(dir, 'meshblock');
    // What /usr/local/bin/meshblock is on a host (an exec wrapper), for this checkout.
    fs.writeFileSync(command, `#!/bin/sh\nexec ${process.execPath} ${meshblockBin} "$@"\n`, { mode: 0o755 });
    const dataDir = path.join(dir, 'mdm');
    const runDir = path.join(dir, 'run');
    const logDir = path.join(dir, 'log');
    const script = path.join(dir, 'meshblock-mdm');
    fs.writeFileSync(script, initScriptText('mdm', ['mdm', 'start', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--api', '127.0.0.1:0'], { command, runDir, logDir }), { mode: 0o755 });
    const pidFile = path.join(runDir, 'mdm.pid');
    t.teardown(() => killUnder(dir));
    const initd = (action: string): ReturnType<typeof run> => run(shell.argv[0] as string, [...shell.argv.slice(1), script, action], { timeoutMs: 120_000 });

    const before = await initd('status');
    t.equal(before.code, 3, 'status before the first start: 3, not running');
    t.match(before.stdout, 'meshblock-mdm is stopped');

    const started = await initd('start');
    t.equal(started.code, 0, started.stderr);
    t.match(started.stdout, /meshblock-mdm: started \(pid \d+, log /);
    const pid = Number(fs.readFileSync(pidFile, 'utf8'));
    t.ok(alive(pid), `the MDM runs as pid ${pid}`);
    t.match(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'), `${meshblockBin}\0mdm\0start\0`, 'the pid file names the MDM itself (the wrappers exec it)');
    const log = path.join(logDir, 'mdm.log');
    for (const deadline = Date.now() + 60_000; !fs.readFileSync(log, 'utf8').includes('"msg":"mdm ready"') && Date.now() < deadline; ) {
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    t.match(fs.readFileSync(log, 'utf8'), '"msg":"mdm ready"', "the MDM's output goes to its log");

    const status = await initd('status');
    t.equal(status.code, 0);
    t.equal(status.stdout.trim(), `meshblock-mdm is running (pid ${pid})`);

    const again = await initd('start');
    t.equal(again.code, 0, 'a second start succeeds, as LSB asks...');
    t.match(again.stdout, `already running (pid ${pid}): no second copy started`);
    t.equal(Number(fs.readFileSync(pidFile, 'utf8')), pid, '...and starts nothing');
    t.equal(fs.readFileSync(log, 'utf8').split('"msg":"mdm ready"').length, 2, 'one MDM ever became ready');

    t.ok(fs.existsSync(path.join(dataDir, 'mdm.lock')), 'the MDM holds its data directory');
    const stopped = await initd('stop');
    t.equal(stopped.code, 0, stopped.stderr);
    t.match(stopped.stdout, /stopping pid \d+ \(it drains first[^\n]*\nmeshblock-mdm: stopped\n$/);
    t.notOk(alive(pid), 'stop returned once the MDM had exited');
    t.match(fs.readFileSync(log, 'utf8'), '"signal":"SIGTERM","msg":"shutting down"', 'the MDM was asked to stop, not killed');
    t.notOk(fs.existsSync(path.join(dataDir, 'mdm.lock')), 'it exited cleanly: its lock file removed on exit (SIGKILL leaves it)');
    t.notOk(fs.existsSync(pidFile), 'the pid file is gone');

    const after = await initd('status');
    t.equal(after.code, 3);
    t.equal(after.stdout.trim(), 'meshblock-mdm is stopped');
    const stopAgain = await initd('stop');
    t.equal(stopAgain.code, 0, 'stopping a stopped service succeeds');
    t.match(stopAgain.stdout, 'meshblock-mdm: not running');

    // A pid file left by a process that is not the MDM (a reboot, a recycled pid) is stale.
    fs.writeFileSync(pidFile, `${process.pid}\n`);
    const stale = await initd('status');
    t.equal(stale.code, 1, 'a pid file naming another process: 1, dead with a pid file left');
    t.match(stale.stdout, 'is stopped (dead, but');

    const usage = await initd('reload-everything');
    t.equal(usage.code, 2);
    t.match(usage.stderr, 'usage: ');
  });
}

t.test('the init script kills a daemon that does not stop within its wait', { timeout: 120_000 }, async (t) => {
  const dir = t.testdir();
  // Stand-in for a daemon that ignores SIGTERM (no meshblock daemon does: each drains).
  const command = path.join(dir, 'stubborn');
  fs.writeFileSync(command, "#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 1; done\n", { mode: 0o755 });
  const runDir = path.join(dir, 'run');
  const script = path.join(dir, 'meshblock-sdc');
  fs.writeFileSync(script, initScriptText('sdc', ['sdc', 'start'], { command, runDir, logDir: path.join(dir, 'log'), stopWaitSeconds: 2 }), { mode: 0o755 });
  const pidFile = path.join(runDir, 'sdc.pid');
  t.teardown(() => killUnder(dir));
  const started = await run('/bin/sh', [script, 'start']);
  t.equal(started.code, 0, started.stderr);
  const pid = Number(fs.readFileSync(pidFile, 'utf8'));
  const stopped = await run('/bin/sh', [script, 'stop']);
  t.equal(stopped.code, 0);
  t.match(stopped.stderr, `pid ${pid} still running after 2 s: killing it`);
  t.notOk(alive(pid));
});

t.test('a daemon that exits at once is a failed start, with the end of its log', { timeout: 120_000 }, async (t) => {
  const dir = t.testdir();
  const script = path.join(dir, 'meshblock-sds');
  // Stand-in for a daemon refusing its data directory: exits at once (a real one takes a
  // second or more to load here, longer under coverage, and start's grace is timing).
  const command = path.join(dir, 'refusing');
  fs.writeFileSync(command, '#!/bin/sh\necho "sds: /var/lib/meshblock/sds is locked by pid 1234" >&2\nexit 1\n', { mode: 0o755 });
  fs.writeFileSync(script, initScriptText('sds', ['sds', 'start'], { command, runDir: path.join(dir, 'run'), logDir: path.join(dir, 'log') }), { mode: 0o755 });
  const result = await run('/bin/sh', [script, 'start'], { timeoutMs: 60_000 });
  t.equal(result.code, 1);
  t.match(result.stderr, 'meshblock-sds: failed to start; the end of');
  t.match(result.stderr, 'is locked by pid 1234', "the daemon's own complaint");
});

t.test('enabled at boot: rc links without chkconfig, chkconfig where there is one (in a mount namespace of its own)', { timeout: 120_000 }, async (t) => {
  const dir = t.testdir();
  const levels = ['0', '1', '2', '3', '4', '5', '6'];
  for (const sub of ['init.d', ...levels.map((level) => `rc${level}.d`), 'bin']) fs.mkdirSync(path.join(dir, sub));
  fs.writeFileSync(path.join(dir, 'bin/chkconfig'), `#!/bin/sh\necho "$*" >> ${dir}/chkconfig.calls\n`, { mode: 0o755 });
  const binds = ['init.d', ...levels.map((level) => `rc${level}.d`)].map((sub) => `mount --bind ${dir}/${sub} /etc/${sub}`).join(' && ');
  const enable = (pathPrefix: string): ReturnType<typeof run> =>
    run('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', `${binds} && PATH=${pathPrefix}/usr/sbin:/usr/bin:/sbin:/bin sh -e -c "$1"`, 'sh', ['set -e', ...enableInitScriptLines('sds')].join('\n')]);
  t.notOk(fs.existsSync('/usr/sbin/chkconfig') || fs.existsSync('/sbin/chkconfig') || fs.existsSync('/usr/bin/chkconfig'), 'this machine has no chkconfig');
  const linked = await enable('');
  t.equal(linked.code, 0, linked.stderr);
  t.equal(linked.stdout.trim(), 'boot: links S84meshblock-sds and K16meshblock-sds in /etc/rcN.d (no chkconfig)');
  for (const level of ['2', '3', '4', '5']) t.equal(fs.readlinkSync(path.join(dir, `rc${level}.d/S84meshblock-sds`)), '../init.d/meshblock-sds', `runlevel ${level}: started`);
  for (const level of ['0', '1', '6']) t.equal(fs.readlinkSync(path.join(dir, `rc${level}.d/K16meshblock-sds`)), '../init.d/meshblock-sds', `runlevel ${level}: stopped`);
  t.notOk(fs.existsSync('/etc/rc3.d/S84meshblock-sds'), "nothing in this machine's rc3.d");
  const again = await enable('');
  t.equal(again.code, 0, 'linking again is no error');
  const registered = await enable(`${dir}/bin:`);
  t.equal(registered.code, 0, registered.stderr);
  t.equal(registered.stdout.trim(), 'boot: chkconfig --add meshblock-sds');
  t.equal(fs.readFileSync(path.join(dir, 'chkconfig.calls'), 'utf8'), '--add meshblock-sds\nmeshblock-sds on\n');
});
