#!/usr/bin/env node
// Boots the VM harness's guest (build-guest.sh) under QEMU against an NBD server on this
// host, and reports each step of the scenario that scripts/vm/guest-init.sh runs in it.
//
//   node scripts/vm/run-guest.mjs --nbd 127.0.0.1:PORT --export NAME [--scenario chain|fio-long|boot]
//        [--fio-seconds N] [--lvm-conf FILE] [--connections N] [--timeout SECONDS]
//        [--memory MIB] [--set MBVM_NAME=VALUE]... [--pcap FILE] [--quiet]
//
// Exits 0 only when every step passed and the guest said `MBVM done ok`; 1 otherwise; 2 on
// a bad flag. Also a module: `runGuest(options)` (below).
//
// The guest reaches the host only through QEMU's user networking with restrict=on, which
// refuses every guest connection except those a forwarding rule covers. One rule covers
// 10.0.2.100:10809 and runs scripts/vm/relay.pl per connection (`guestfwd=...-cmd:`; the
// per-connection form is what lets the guest reconnect), which connects to the server on
// 127.0.0.1 without the delayed-ACK stall that relay.pl explains. Nothing else leaves the
// guest.
//
// Per-run settings (scenario, export, fio duration, the lvm.conf) go into a small cpio
// appended to the cached base initramfs: kernel command-line parameters with dots never reach
// init's environment, and the base stays cached whatever the run asks.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));
export const buildGuestScript = path.join(here, 'build-guest.sh');
export const relayScript = path.join(here, 'relay.pl');
export const scenarios = ['chain', 'fio-long', 'attach-mapped', 'boot'];
/** Where the guest connects; the forwarding rule maps it to the host's server. */
export const guestNbdAddress = { host: '10.0.2.100', port: 10809 };
export const hostLvmConfPath = '/etc/lvm/lvm.conf';
const defaults = { scenario: 'chain', fioSeconds: 40, timeoutS: 600, memoryMiB: 1024, connections: 1 };

/** Runs build-guest.sh; resolves with the kernel and base initramfs paths. */
export async function buildGuest(onLog = () => {}) {
  const { code, stdout, stderr } = await new Promise((resolve, reject) => {
    const child = spawn('bash', [buildGuestScript], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (text) => (out += text));
    child.stderr.setEncoding('utf8').on('data', (text) => {
      err += text;
      for (const line of text.split('\n')) if (line !== '') onLog(line);
    });
    child.on('error', reject);
    child.on('close', (exitCode) => resolve({ code: exitCode, stdout: out, stderr: err }));
  });
  const kernel = /^kernel=(.+)$/m.exec(stdout)?.[1];
  const initrd = /^initrd=(.+)$/m.exec(stdout)?.[1];
  if (code !== 0 || kernel === undefined || initrd === undefined) {
    throw new Error(stderr.trim().split('\n').pop() || `build-guest.sh exited ${code}`);
  }
  return { kernel, initrd };
}

/**
 * The guest has no udev: LVM must neither wait for it nor ask it for devices, and makes its
 * own device nodes. Sets these three settings in `text` (an lvm.conf), replacing an
 * uncommented value or adding the setting at the top of its section; everything else is
 * kept byte for byte. Applying it twice changes nothing more.
 */
export function withoutUdev(text) {
  const settings = [
    ['devices', 'obtain_device_list_from_udev', '0'],
    ['activation', 'udev_sync', '0'],
    ['activation', 'udev_rules', '0'],
  ];
  const lines = text.split('\n');
  for (const [section, key, value] of settings) {
    const start = lines.findIndex((line) => new RegExp(`^\\s*${section}\\s*\\{`).test(line));
    if (start === -1) {
      if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
      lines.push(`${section} {`, `\t${key} = ${value}`, '}', '');
      continue;
    }
    let end = lines.findIndex((line, index) => index > start && /^\s*\}/.test(line));
    if (end === -1) end = lines.length;
    const keyPattern = new RegExp(`^(\\s*)${key}\\s*=`);
    let found = false;
    for (let index = start + 1; index < end; index++) {
      const match = keyPattern.exec(lines[index]);
      if (match !== null) {
        lines[index] = `${match[1]}${key} = ${value}`;
        found = true;
      }
    }
    if (!found) lines.splice(start + 1, 0, `\t${key} = ${value}`);
  }
  return lines.join('\n');
}

/** The host's lvm.conf (Debian's, from its lvm2 package) with the udev settings applied. */
export function defaultLvmConf() {
  return withoutUdev(fs.readFileSync(hostLvmConfPath, 'utf8'));
}

/**
 * A cpio archive (newc, as the kernel's initramfs unpacker reads) of `entries`:
 * directories (no data) and regular files, owned by root.
 */
export function cpioArchive(entries) {
  const parts = [];
  let inode = 1;
  const pad = (length) => Buffer.alloc((4 - (length % 4)) % 4);
  const add = (name, mode, data) => {
    const nameBytes = Buffer.from(`${name}\0`);
    const fields = [inode++, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, nameBytes.length, 0];
    const header = Buffer.from(`070701${fields.map((field) => field.toString(16).padStart(8, '0')).join('')}`);
    parts.push(header, nameBytes, pad(header.length + nameBytes.length), data, pad(data.length));
  };
  for (const entry of entries) {
    if (entry.data === undefined) add(entry.name, 0o040755, Buffer.alloc(0));
    else add(entry.name, 0o100000 | (entry.mode ?? 0o644), Buffer.from(entry.data));
  }
  add('TRAILER!!!', 0, Buffer.alloc(0));
  return Buffer.concat(parts);
}

/**
 * cpio entries for the directory `source` at `target` in the guest (the directories leading
 * to it included): directories, regular files with their modes, symlinks followed.
 */
export function treeEntries(source, target) {
  const entries = [];
  const parts = target.split('/');
  for (let index = 1; index < parts.length; index++) entries.push({ name: parts.slice(0, index).join('/') });
  const walk = (directory, name) => {
    entries.push({ name });
    for (const entry of fs.readdirSync(directory, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const file = path.join(directory, entry.name);
      const stat = fs.statSync(file);
      if (stat.isDirectory()) walk(file, `${name}/${entry.name}`);
      else if (stat.isFile()) entries.push({ name: `${name}/${entry.name}`, data: fs.readFileSync(file), mode: stat.mode & 0o7777 });
    }
  };
  walk(source, target);
  return entries;
}

const shellQuote = (value) => `'${String(value).replaceAll("'", "'\\''")}'`;

/** Parses `MBVM <name> [ok|fail [detail]]` anywhere in a console line (a kernel message may precede it). */
export function parseMbvmLine(line) {
  const match = /MBVM (\S+)(?: (ok|fail)(?: (.*))?)?$/.exec(line.replace(/\r$/, ''));
  if (match === null) return null;
  const [, name, verdict, detail] = match;
  if (verdict === undefined) return { event: name, text: match[0] };
  return { step: name, ok: verdict === 'ok', detail: detail ?? '', text: match[0] };
}

/** Checks the options; `label` names an option in messages (the CLI's flags). */
function validate(options, label = (name) => name) {
  const problems = [];
  const nbd = /^(127\.\d+\.\d+\.\d+|localhost):(\d+)$/.exec(options.nbd ?? '');
  if (nbd === null || Number(nbd[2]) < 1 || Number(nbd[2]) > 65535) problems.push(`${label('nbd')} must be 127.0.0.1:PORT (loopback only), got ${JSON.stringify(options.nbd)}`);
  if (typeof options.export !== 'string' || !/^[A-Za-z0-9._:-]{1,128}$/.test(options.export)) problems.push(`${label('export')} must be a volume name, got ${JSON.stringify(options.export)}`);
  const checks = [
    ['scenario', (value) => scenarios.includes(value), `one of ${scenarios.join(', ')}`],
    ['fioSeconds', (value) => Number.isInteger(value) && value >= 5 && value <= 3600, 'an integer from 5 to 3600'],
    ['timeoutS', (value) => Number.isInteger(value) && value >= 10 && value <= 7200, 'an integer from 10 to 7200'],
    ['memoryMiB', (value) => Number.isInteger(value) && value >= 512 && value <= 16384, 'an integer from 512 to 16384'],
    ['connections', (value) => Number.isInteger(value) && value >= 1 && value <= 8, 'an integer from 1 to 8'],
  ];
  for (const [name, ok, range] of checks) {
    if (options[name] !== undefined && !ok(options[name])) problems.push(`${label(name)} must be ${range}, got ${JSON.stringify(options[name])}`);
  }
  for (const name of Object.keys(options.settings ?? {})) {
    if (!/^MBVM_[A-Z0-9_]+$/.test(name)) problems.push(`${label('settings')} names are MBVM_*, got ${JSON.stringify(name)}`);
  }
  if (options.netns !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(options.netns)) problems.push(`${label('netns')} must be a network namespace name, got ${JSON.stringify(options.netns)}`);
  for (const tree of options.trees ?? []) {
    if (!fs.existsSync(tree.source) || !/^[A-Za-z0-9_./-]+$/.test(tree.target) || tree.target.startsWith('/')) problems.push(`${label('trees')}: ${JSON.stringify(tree)} must be an existing directory and a relative guest path`);
  }
  if (problems.length > 0) throw new RangeError(problems.join('; '));
  return { host: nbd[1] === 'localhost' ? '127.0.0.1' : nbd[1], port: Number(nbd[2]) };
}

/**
 * Boots the guest and runs one scenario against the NBD server at `options.nbd`.
 *
 * options: nbd ('127.0.0.1:PORT'), export (name), scenario ('chain' | 'fio-long' | 'boot'),
 * fioSeconds, lvmConf (the lvm.conf text for the guest; default: the host's; the udev
 * settings are applied to it either way), connections (nbd-client -C), timeoutS (the whole
 * run, build included; QEMU is killed then), memoryMiB, pcap (a file: QEMU writes the
 * guest's packets there), settings ({ MBVM_NAME: value }: more guest settings, see
 * guest-init.sh; for tuning), netns (run QEMU in this network namespace, with the guest's
 * network unrestricted inside it), files ([{ name, data, mode }]: more files in the guest,
 * paths relative to its root), trees ([{ source, target }]: host directories copied into the
 * guest, e.g. an unpacked runtime bundle), onLine(text, parsed) for each MBVM line as it arrives,
 * onOutput(line) for every console line, onLog(line) for build messages.
 *
 * Resolves with { ok, steps: [{ step, ok, detail, elapsedMs }], events, done, timedOut,
 * exitCode, output, durationMs }: ok only if the guest said `MBVM done ok`, no step failed, and it
 * finished in time; elapsedMs counts from the start of runGuest. Rejects only when the guest
 * cannot be built or QEMU cannot start.
 */
export async function runGuest(options) {
  const server = validate(options);
  const scenario = options.scenario ?? defaults.scenario;
  const startedMs = Date.now();
  const deadlineMs = startedMs + 1000 * (options.timeoutS ?? defaults.timeoutS);
  const { kernel, initrd } = await buildGuest(options.onLog);

  const lvmConf = options.lvmConf !== undefined ? withoutUdev(options.lvmConf) : defaultLvmConf();
  const settings = {
    MBVM_HOST: guestNbdAddress.host,
    MBVM_PORT: guestNbdAddress.port,
    MBVM_EXPORT: options.export,
    MBVM_SCENARIO: scenario,
    MBVM_CONNECTIONS: options.connections ?? defaults.connections,
    MBVM_FIO_SECONDS: options.fioSeconds ?? defaults.fioSeconds,
    MBVM_LVM_CONF_SHA256: createHash('sha256').update(lvmConf).digest('hex'),
    ...options.settings,
  };
  const settingsText = Object.entries(settings).map(([name, value]) => `${name}=${shellQuote(value)}\n`).join('');
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshblock-vm-'));
  try {
    const runInitrd = path.join(runDir, 'initrd.cpio');
    fs.copyFileSync(initrd, runInitrd);
    fs.appendFileSync(
      runInitrd,
      cpioArchive([
        { name: 'etc/meshblock-run.conf', data: settingsText },
        { name: 'etc/lvm/lvm.conf', data: lvmConf },
        ...(options.files ?? []),
        ...(options.trees ?? []).flatMap((tree) => treeEntries(tree.source, tree.target)),
      ]),
    );
    return await boot({ ...options, scenario }, server, kernel, runInitrd, deadlineMs, startedMs);
  } finally {
    fs.rmSync(runDir, { recursive: true, force: true });
  }
}

function relayCommand(server) {
  // libslirp splits the command like a shell (g_shell_parse_argv) and runs it with no shell;
  // QEMU's option parser needs commas doubled.
  return ['perl', relayScript, server.host, String(server.port)].map(shellQuote).join(' ').replaceAll(',', ',,');
}

async function boot(options, server, kernel, initrd, deadlineMs, startedMs) {
  const args = [
    '-accel', 'tcg',
    '-cpu', 'max',
    '-smp', '2',
    '-m', String(options.memoryMiB ?? defaults.memoryMiB),
    '-nodefaults',
    '-display', 'none',
    '-no-reboot',
    '-serial', 'stdio',
    '-kernel', kernel,
    '-initrd', initrd,
    '-append', 'console=ttyS0 quiet panic=-1',
    // restrict=on: nothing leaves the guest but the forwarded NBD address. In a network
    // namespace of the caller's (options.netns), the guest may reach whatever that namespace
    // reaches (a test's simulated network, no route elsewhere): the cluster's own addresses.
    '-netdev', `user,id=n0,restrict=${options.netns !== undefined ? 'off' : 'on'},guestfwd=tcp:${guestNbdAddress.host}:${guestNbdAddress.port}-cmd:${relayCommand(server)}`,
    '-device', 'virtio-net-pci,netdev=n0,romfile=',
    // The guest's packets, as QEMU's user network sees them, for diagnosing the NBD traffic.
    ...(options.pcap !== undefined ? ['-object', `filter-dump,id=dump0,netdev=n0,file=${options.pcap}`] : []),
  ];
  // `ip netns exec` execs QEMU: the pid (and so the kill below) is QEMU's.
  const [command, ...commandArgs] = options.netns !== undefined ? ['ip', 'netns', 'exec', options.netns, 'qemu-system-x86_64', ...args] : ['qemu-system-x86_64', ...args];
  const child = spawn(command, commandArgs, {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const steps = [];
  const events = [];
  const outputLines = [];
  let done = null;
  let timedOut = false;
  let pending = '';
  const onConsoleLine = (raw) => {
    const line = raw.replace(/\r$/, '');
    outputLines.push(line);
    options.onOutput?.(line);
    const parsed = parseMbvmLine(line);
    if (parsed === null) return;
    if (parsed.step === 'done') done = parsed.ok;
    else if (parsed.step !== undefined) steps.push({ step: parsed.step, ok: parsed.ok, detail: parsed.detail, elapsedMs: Date.now() - startedMs });
    else events.push(parsed.event);
    options.onLine?.(parsed.text, parsed);
  };
  child.stdout.setEncoding('utf8').on('data', (text) => {
    const lines = (pending + text).split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) onConsoleLine(line);
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text) => (stderr += text));
  // QEMU must not outlive this process (a test runner's timeout, Ctrl-C of the CLI).
  const killQemu = () => child.kill('SIGKILL');
  process.once('exit', killQemu);
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, Math.max(0, deadlineMs - Date.now()));
  const exitCode = await new Promise((resolve, reject) => {
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start qemu-system-x86_64: ${err.message}`));
    });
    child.on('close', (code) => resolve(code));
  });
  clearTimeout(timer);
  process.off('exit', killQemu);
  if (pending !== '') onConsoleLine(pending);
  if (stderr.trim() !== '') outputLines.push(...stderr.trim().split('\n').map((line) => `qemu: ${line}`));
  if (timedOut) outputLines.push(`run-guest: timed out; QEMU killed after ${Math.round((Date.now() - startedMs) / 1000)} s`);
  const ok = done === true && !timedOut && steps.length > 0 && steps.every((entry) => entry.ok);
  return { ok, steps, events, done, timedOut, exitCode, output: outputLines.join('\n'), durationMs: Date.now() - startedMs };
}

async function main() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        nbd: { type: 'string' },
        export: { type: 'string' },
        scenario: { type: 'string', default: defaults.scenario },
        'fio-seconds': { type: 'string' },
        'lvm-conf': { type: 'string' },
        connections: { type: 'string' },
        timeout: { type: 'string' },
        memory: { type: 'string' },
        set: { type: 'string', multiple: true },
        pcap: { type: 'string' },
        quiet: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`run-guest: ${err.message}\n`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1, 10).map((line) => line.replace(/^\/\/ ?/, '')).join('\n') + '\n');
    return;
  }
  const integer = (text) => (text === undefined ? undefined : /^\d+$/.test(text) ? Number(text) : NaN);
  const options = {
    nbd: values.nbd,
    export: values.export,
    scenario: values.scenario,
    fioSeconds: integer(values['fio-seconds']),
    connections: integer(values.connections),
    timeoutS: integer(values.timeout),
    memoryMiB: integer(values.memory),
    pcap: values.pcap,
    settings: Object.fromEntries((values.set ?? []).map((pair) => [pair.split('=')[0], pair.slice(pair.indexOf('=') + 1)])),
    onLog: (line) => process.stderr.write(`${line}\n`),
    onOutput: values.quiet ? undefined : (line) => process.stdout.write(`${line}\n`),
    onLine: values.quiet ? (text) => process.stdout.write(`${text}\n`) : undefined,
  };
  for (const key of Object.keys(options)) if (options[key] === undefined) delete options[key];
  try {
    const flags = { fioSeconds: '--fio-seconds', timeoutS: '--timeout', memoryMiB: '--memory', settings: '--set' };
    validate(options, (name) => flags[name] ?? `--${name}`);
    if (values['lvm-conf'] !== undefined) options.lvmConf = fs.readFileSync(values['lvm-conf'], 'utf8');
  } catch (err) {
    process.stderr.write(`run-guest: ${err.message}\n`);
    process.exit(2);
  }
  for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => process.exit(130));
  let result;
  try {
    result = await runGuest(options);
  } catch (err) {
    process.stderr.write(`run-guest: ${err.message}\n`);
    process.exit(1);
  }
  const failed = result.steps.filter((entry) => !entry.ok).map((entry) => entry.step);
  const verdict = result.ok
    ? `all ${result.steps.length} steps passed`
    : result.timedOut
      ? 'timed out'
      : failed.length > 0
        ? `failed: ${failed.join(', ')}`
        : `no "MBVM done ok" (QEMU exit ${result.exitCode})`;
  process.stderr.write(`run-guest: ${options.scenario}: ${verdict} in ${(result.durationMs / 1000).toFixed(1)} s\n`);
  process.exit(result.ok ? 0 : 1);
}

if (process.argv[1] !== undefined && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main();
}
