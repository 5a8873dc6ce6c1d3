// The services a host's meshblock daemons run as: `meshblock-ROLE` for the roles etcd, mdm,
// sds and sdc, under whichever init system the host has.
//
//   systemd   (/run/systemd/system exists: CentOS 7, XenServer 7.x and 8.x Dom0s, Debian)
//             /etc/systemd/system/meshblock-ROLE.service, `systemctl enable --now`
//   SysV init (anything else: XenServer 6.5's CentOS 5 Dom0, containers, busybox hosts)
//             /etc/init.d/meshblock-ROLE, a POSIX sh script (CentOS 5's sh is bash 3.2,
//             busybox's is ash) with chkconfig and LSB headers; enabled at boot with
//             `chkconfig --add` where chkconfig exists, else by S/K links in the rc
//             directories (/etc/rc.d/rcN.d or /etc/rcN.d) where those exist; then started.
//
// The init script is the whole service: start detaches the daemon (setsid where there is
// one) with its output appended to /var/log/meshblock/ROLE.log and its pid in
// /var/run/meshblock/ROLE.pid (the same file as /run/meshblock/ROLE.pid where /var/run is a
// link to /run, as the installer's earlier "detached with a pid file" fallback wrote, so a
// daemon started that way is found running); a second start finds the daemon running and
// starts no second copy (exit 0, as LSB asks of start); stop sends SIGTERM and waits for the
// daemon to exit (every meshblock daemon drains on SIGTERM: in-flight IO answered, state
// saved) for initScriptStopWaitSeconds, then SIGKILL; status answers LSB's codes (0
// running, 1 dead with a pid file left, 3 stopped). A pid is only taken for the daemon's if
// /proc/PID/cmdline says `ROLE start`: a pid file that outlived a reboot (CentOS 5's
// /var/run is on disk) and names some other process now is stale.
//
// Both forms carry the daemon's command line on one line the installer reads back
// (installedCommandLine): `ExecStart=/usr/local/bin/meshblock ARGS` in the unit,
// `\texec /usr/local/bin/meshblock ARGS` in the script.

import { initScriptStopWaitSeconds } from '../common/limits.js';
import { shellQuote as quote, type HostTransport } from './host-transport.js';

export const serviceRoles = ['etcd', 'mdm', 'sds', 'sdc'] as const;
export type ServiceRole = (typeof serviceRoles)[number];
export type InitSystem = 'systemd' | 'sysv';

/** The command the services run: the installer's wrapper around the runtime bundle's bin/meshblock. */
export const meshblockCommandPath = '/usr/local/bin/meshblock';
/** Exists while systemd runs as init (sd_booted(3)'s test). */
export const systemdRunningPath = '/run/systemd/system';
/** Debian's etcd-server enables this unit (a member of its own on localhost:2379). */
export const debianEtcdUnit = 'etcd.service';
/** The init scripts' pid and log directories (/var/run: CentOS 5 has no /run). */
export const initScriptRunDir = '/var/run/meshblock';
export const initScriptLogDir = '/var/log/meshblock';

/**
 * chkconfig start and stop priorities (S and K link numbers): etcd before the MDM (a
 * clustered MDM waits for a quorum of members), the MDM before the SDSs and the SDC; stopped
 * in the reverse order, the SDC first (its NBD clients, then the SDSs they write to).
 */
const bootOrder: Record<ServiceRole, { start: number; stop: number }> = {
  etcd: { start: 80, stop: 20 },
  mdm: { start: 82, stop: 18 },
  sds: { start: 84, stop: 16 },
  sdc: { start: 86, stop: 14 },
};

export function serviceName(role: ServiceRole): string {
  return `meshblock-${role}`;
}

function description(role: ServiceRole): string {
  return `meshblock ${role === 'etcd' ? 'etcd member' : role.toUpperCase()}`;
}

export function systemdUnitPath(role: ServiceRole): string {
  return `/etc/systemd/system/${serviceName(role)}.service`;
}

export function initScriptPath(role: ServiceRole): string {
  return `/etc/init.d/${serviceName(role)}`;
}

export function systemdUnitText(role: ServiceRole, args: readonly string[]): string {
  return [
    '[Unit]',
    `Description=${description(role)}`,
    'After=network-online.target',
    'Wants=network-online.target',
    // Debian's etcd-server enables its own member (plain HTTP on localhost:2379): configure
    // disables it, and this keeps it from running beside ours should it be started again.
    ...(role === 'etcd' ? [`Conflicts=${debianEtcdUnit}`] : []),
    '',
    '[Service]',
    `ExecStart=${meshblockCommandPath} ${args.map(quote).join(' ')}`,
    'Restart=on-failure',
    'RestartSec=2',
    'LimitNOFILE=65536',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

export interface InitScriptOptions {
  /** The meshblock command (default meshblockCommandPath; tests run a checkout's). */
  command?: string;
  runDir?: string;
  logDir?: string;
  stopWaitSeconds?: number;
}

/** /etc/init.d/meshblock-ROLE: POSIX sh, no bashisms, nothing busybox lacks (setsid optional). */
export function initScriptText(role: ServiceRole, args: readonly string[], options: InitScriptOptions = {}): string {
  const name = serviceName(role);
  const runDir = options.runDir ?? initScriptRunDir;
  const logDir = options.logDir ?? initScriptLogDir;
  const order = bootOrder[role];
  const after = serviceRoles.slice(0, serviceRoles.indexOf(role)).map(serviceName).join(' ');
  return [
    '#!/bin/sh',
    '#',
    `# ${name}: ${description(role)}. Written by meshblock install (src/hostsetup/service-units.ts),`,
    '# rewritten by every run: change the cluster with meshblock install, not here.',
    '#',
    `# chkconfig: 2345 ${order.start} ${order.stop}`,
    `# description: ${description(role)} of a meshblock cluster (software-defined block storage)`,
    `# processname: ${name}`,
    `# pidfile: ${runDir}/${role}.pid`,
    '#',
    '### BEGIN INIT INFO',
    `# Provides: ${name}`,
    '# Required-Start: $local_fs $network $remote_fs',
    '# Required-Stop: $local_fs $network $remote_fs',
    ...(after === '' ? [] : [`# Should-Start: ${after}`, `# Should-Stop: ${after}`]),
    '# Default-Start: 2 3 4 5',
    '# Default-Stop: 0 1 6',
    `# Short-Description: ${description(role)}`,
    '### END INIT INFO',
    '',
    // Init starts scripts with next to no environment (CentOS's `service` runs env -i).
    'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    'export PATH',
    `NAME=${name}`,
    `ROLE=${role}`,
    `RUNDIR=${quote(runDir)}`,
    `LOGDIR=${quote(logDir)}`,
    'PIDFILE="$RUNDIR/$ROLE.pid"',
    'LOGFILE="$LOGDIR/$ROLE.log"',
    `STOP_WAIT=${options.stopWaitSeconds ?? initScriptStopWaitSeconds}`,
    'case $0 in',
    '  /*) SELF=$0 ;;',
    '  *) SELF=$(pwd)/$0 ;;',
    'esac',
    '',
    '# The daemon, in the foreground (start runs it detached, through this script).',
    'daemon() {',
    `\texec ${options.command ?? meshblockCommandPath} ${args.map(quote).join(' ')}`,
    '}',
    '',
    '# True if PID is a live (not zombie) process running this service\'s daemon.',
    'is_ours() {',
    '  kill -0 "$1" 2>/dev/null || return 1',
    '  [ -r "/proc/$1/cmdline" ] || return 0',
    '  case $(cat "/proc/$1/stat" 2>/dev/null) in',
    '    *") Z "*) return 1 ;;',
    '  esac',
    '  case " $(tr \'\\000\' \' \' < "/proc/$1/cmdline" 2>/dev/null) " in',
    '    *" $ROLE start "*|*" $SELF _run "*) return 0 ;;',
    '  esac',
    '  return 1',
    '}',
    '',
    '# Prints the running daemon\'s pid; false if it is not running.',
    'running_pid() {',
    '  [ -s "$PIDFILE" ] || return 1',
    '  pid=$(cat "$PIDFILE" 2>/dev/null)',
    '  case $pid in',
    '    ""|*[!0-9]*) return 1 ;;',
    '  esac',
    '  is_ours "$pid" || return 1',
    '  echo "$pid"',
    '}',
    '',
    'start() {',
    '  if pid=$(running_pid); then',
    '    echo "$NAME: already running (pid $pid): no second copy started"',
    '    return 0',
    '  fi',
    '  mkdir -p "$RUNDIR" "$LOGDIR" || return 1',
    '  rm -f "$PIDFILE"',
    '  if command -v setsid >/dev/null 2>&1; then',
    '    setsid /bin/sh "$SELF" _run </dev/null >>"$LOGFILE" 2>&1 &',
    '  else',
    '    /bin/sh "$SELF" _run </dev/null >>"$LOGFILE" 2>&1 &',
    '  fi',
    '  n=0',
    '  while [ ! -s "$PIDFILE" ] && [ $n -lt 10 ]; do',
    '    sleep 1',
    '    n=$((n + 1))',
    '  done',
    // A daemon that refuses its command line or its data directory exits within a moment.
    '  sleep 2',
    '  if pid=$(running_pid); then',
    '    echo "$NAME: started (pid $pid, log $LOGFILE)"',
    '    return 0',
    '  fi',
    '  echo "$NAME: failed to start; the end of $LOGFILE:" >&2',
    '  tail -n 5 "$LOGFILE" >&2 2>/dev/null',
    '  return 1',
    '}',
    '',
    'stop() {',
    '  if ! pid=$(running_pid); then',
    '    rm -f "$PIDFILE"',
    '    echo "$NAME: not running"',
    '    return 0',
    '  fi',
    '  echo "$NAME: stopping pid $pid (it drains first; up to $STOP_WAIT s)"',
    '  kill -TERM "$pid" 2>/dev/null',
    '  n=0',
    '  while is_ours "$pid"; do',
    '    if [ $n -ge "$STOP_WAIT" ]; then',
    '      echo "$NAME: pid $pid still running after $STOP_WAIT s: killing it" >&2',
    '      kill -KILL "$pid" 2>/dev/null',
    '      sleep 1',
    '      break',
    '    fi',
    '    sleep 1',
    '    n=$((n + 1))',
    '  done',
    '  rm -f "$PIDFILE"',
    '  echo "$NAME: stopped"',
    '}',
    '',
    'status() {',
    '  if pid=$(running_pid); then',
    '    echo "$NAME is running (pid $pid)"',
    '    return 0',
    '  fi',
    '  if [ -s "$PIDFILE" ]; then',
    '    echo "$NAME is stopped (dead, but $PIDFILE is left)"',
    '    return 1',
    '  fi',
    '  echo "$NAME is stopped"',
    '  return 3',
    '}',
    '',
    'case $1 in',
    '  start) start ;;',
    '  stop) stop ;;',
    '  restart|force-reload) stop && start ;;',
    '  condrestart|try-restart) if running_pid >/dev/null; then stop && start; fi ;;',
    '  status) status ;;',
    '  _run)',
    '    echo $$ > "$PIDFILE" || exit 1',
    '    daemon',
    '    ;;',
    '  *)',
    '    echo "usage: $0 {start|stop|restart|status}" >&2',
    '    exit 2',
    '    ;;',
    'esac',
    '',
  ].join('\n');
}

/**
 * The daemon's command line in an installed unit or init script (what follows the meshblock
 * command, shell-quoted as written), or null when the text is neither.
 */
export function installedCommandLine(text: string | null): string | null {
  return /^(?:ExecStart=|\texec )\S+ (.*)$/m.exec(text ?? '')?.[1] ?? null;
}

export async function initSystemOf(transport: HostTransport): Promise<InitSystem> {
  return (await transport.exists(systemdRunningPath)) ? 'systemd' : 'sysv';
}

export interface InstalledService {
  path: string;
  text: string;
}

/** The role's installed unit (systemd) or init script (SysV), whichever the host has; null if neither. */
export async function readInstalledService(transport: HostTransport, role: ServiceRole): Promise<InstalledService | null> {
  for (const candidate of [systemdUnitPath(role), initScriptPath(role)]) {
    const text = await transport.readFile(candidate);
    if (text !== null) return { path: candidate, text };
  }
  return null;
}

/** The shell lines that enable an init script at boot, printing `boot: HOW`. */
export function enableInitScriptLines(role: ServiceRole): string[] {
  const name = serviceName(role);
  const order = bootOrder[role];
  return [
    'if command -v chkconfig >/dev/null 2>&1; then',
    `  chkconfig --add ${name} && chkconfig ${name} on && echo 'boot: chkconfig --add ${name}'`,
    'else',
    '  linked=',
    '  for base in /etc/rc.d /etc; do',
    '    [ -d "$base/rc3.d" ] || continue',
    `    for level in 2 3 4 5; do if [ -d "$base/rc$level.d" ]; then ln -sf ../init.d/${name} "$base/rc$level.d/S${order.start}${name}"; fi; done`,
    `    for level in 0 1 6; do if [ -d "$base/rc$level.d" ]; then ln -sf ../init.d/${name} "$base/rc$level.d/K${order.stop}${name}"; fi; done`,
    '    linked=$base',
    '    break',
    '  done',
    `  if [ -n "$linked" ]; then echo "boot: links S${order.start}${name} and K${order.stop}${name} in $linked/rcN.d (no chkconfig)"; else echo 'boot: none (no chkconfig and no rc directories: started now only)'; fi`,
    'fi',
  ];
}

export interface ServiceStart {
  initSystem: InitSystem;
  /** False when the daemon was running already (a SysV start that found it). */
  started: boolean;
  /** For the installer's progress line: where the service is and how it starts at boot. */
  how: string;
}

/**
 * Writes the role's service for the host's init system (only if its text changed), enables
 * it at boot and starts it unless it runs. `sh` runs one script on the host and returns its
 * stdout (the installer's, which names the host when a script fails). One command per start
 * either way.
 */
export async function installService(transport: HostTransport, role: ServiceRole, args: readonly string[], sh: (script: string) => Promise<string>): Promise<ServiceStart> {
  const initSystem = await initSystemOf(transport);
  const name = serviceName(role);
  if (initSystem === 'systemd') {
    const text = systemdUnitText(role, args);
    if ((await transport.readFile(systemdUnitPath(role))) !== text) await transport.writeFile(systemdUnitPath(role), text);
    await sh(`systemctl daemon-reload && systemctl enable --now ${name}.service`);
    return { initSystem, started: true, how: 'systemd' };
  }
  const scriptPath = initScriptPath(role);
  const text = initScriptText(role, args);
  if ((await transport.readFile(scriptPath)) !== text) await transport.writeFile(scriptPath, text, { mode: 0o755 });
  const said = await sh(['set -e', `chmod 755 ${scriptPath}`, ...enableInitScriptLines(role), `${scriptPath} start`].join('\n'));
  const boot = /^boot: (.*)$/m.exec(said)?.[1] ?? 'not said';
  return { initSystem, started: !/already running/.test(said), how: `SysV init: ${scriptPath}; at boot: ${boot}` };
}
