// The real consumer, in a VM: Debian's kernel under QEMU (TCG; this machine's own kernel has
// no nbd module and no device-mapper) attaches a mirrored meshblock volume with the kernel NBD
// client and runs what a XenServer host would on it, through scripts/vm/run-guest.mjs:
//
//   chain     nbd-client; pvcreate, vgcreate, two LVs, with the lvm.conf this test hands the
//             guest proven to be the one in force; ext4 with checksummed files; unmount,
//             deactivate, disconnect, reconnect, activate, e2fsck, every checksum again; fio
//             with crc32c verify on an LV (libaio, direct: random 4k at depth 8, sequential 1M);
//             a VG named as XenServer names an LVM SR (VG_XenStorage-<uuid>) with LVs in it.
//   fio-long  fio with continuous verify on the device for 40 s while this test kill -9s one
//             SDS; fio sees no error, a final read-back verifies every block, and the guest's
//             kernel logged no NBD error.
//
// A real cluster serves the volume: an MDM, three SDSs and the SDC, as in the other
// integration tests. The guest reaches the SDC only through QEMU's user network, forwarded to
// the SDC's loopback address. One tap assertion per step the guest reports, with its console
// output in the diagnostics of a failure.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import t, { type Test } from 'tap';
import { editLvmConf } from '../../src/hostsetup/lvm-conf.js';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { dashboard } from '../helpers/fault-load.js';
import { repoRoot, runMeshblock } from '../helpers/processes.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

// --- scripts/vm/run-guest.mjs, typed for this test -----------------------------------------

interface GuestStep {
  step: string;
  ok: boolean;
  detail: string;
  elapsedMs: number;
}

interface GuestParsedLine {
  step?: string;
  ok?: boolean;
  detail?: string;
  event?: string;
  text: string;
}

interface GuestResult {
  ok: boolean;
  steps: GuestStep[];
  events: string[];
  done: boolean | null;
  timedOut: boolean;
  exitCode: number | null;
  output: string;
  durationMs: number;
}

interface RunGuestOptions {
  nbd: string;
  export: string;
  scenario: 'chain' | 'fio-long';
  fioSeconds?: number;
  lvmConf?: string;
  timeoutS?: number;
  onLine?: (text: string, parsed: GuestParsedLine) => void;
  onLog?: (line: string) => void;
}

interface Harness {
  buildGuest(onLog?: (line: string) => void): Promise<{ kernel: string; initrd: string }>;
  runGuest(options: RunGuestOptions): Promise<GuestResult>;
}

// A plain .mjs script (users run it by hand too): imported by URL, its shape declared above.
const harness = (await import(pathToFileURL(path.join(repoRoot, 'scripts/vm/run-guest.mjs')).href)) as Harness;

// --- the guest's lvm.conf ------------------------------------------------------------------

/**
 * THE LVM CONFIGURATION THE GUEST RUNS WITH — one function, to be switched over to the
 * host-setup LVM-filter module's edit (src/hostsetup) applied to Debian's lvm.conf.
 * For now: $MESHBLOCK_VM_LVM_CONF if set, else Debian's /etc/lvm/lvm.conf as the lvm2
 * package installs it. (run-guest.mjs adds the no-udev settings either way; the guest checks
 * that the file in force is byte for byte this text plus those.)
 */
/**
 * The guest's lvm.conf, as meshblock's host setup leaves a XenServer host's: the guest's own
 * lvm2 configuration (Debian 12's, the lvm2 in the guest) with XenServer's filter in it (it
 * rejects /dev/xvd. and the LVs of VG_Xen VGs), then the lvm-filter module's edit
 * (src/hostsetup/lvm-conf.ts): "nbd" in devices/types, XenServer's filter kept as it is.
 * $MESHBLOCK_VM_LVM_CONF overrides it (to try another file by hand).
 */
function guestLvmConf(): string {
  const override = process.env['MESHBLOCK_VM_LVM_CONF'];
  if (override !== undefined) return fs.readFileSync(override, 'utf8');
  const debian = fs.readFileSync(path.join(repoRoot, '../shared/fixtures/debian12/etc/lvm/lvm.conf'), 'utf8');
  const xenFilter = '\tfilter = [ "r|/dev/xvd.|", "r|/dev/VG_Xen.*/*|"]';
  const anchor = '\t# filter = [ "a|.*|" ]\n';
  if (!debian.includes(anchor)) throw new Error("Debian's lvm.conf fixture changed: no commented default filter to put XenServer's after");
  const edit = editLvmConf(debian.replace(anchor, `${anchor}${xenFilter}\n`));
  if (!edit.text.includes(xenFilter) || !edit.text.includes('\ttypes = [ "nbd", 16 ]')) throw new Error(`the lvm-filter edit did not do what this test expects: ${edit.changes.join('; ')}`);
  return edit.text;
}

// --- helpers -------------------------------------------------------------------------------

/** QEMU can run unless it is missing and cannot be installed (build-guest.sh installs it as root). */
function qemuUnavailable(): string | null {
  const probe = spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' });
  if (probe.error === undefined && probe.status === 0) return null;
  if (process.getuid?.() === 0) return null;
  return 'qemu-system-x86_64 is not installed and this is not root (apt-get install qemu-system-x86)';
}

const outputTailChars = 12_000;

/** One assertion per step the guest reported, then that it finished, with its output on failure. */
function assertSteps(t: Test, result: GuestResult, required: string[]): void {
  const diagnostics = { guestOutput: result.output.slice(-outputTailChars) };
  for (const step of result.steps) {
    t.ok(step.ok, `guest step ${step.step}: ${step.detail}`, step.ok ? {} : diagnostics);
  }
  const reported = new Set(result.steps.map((step) => step.step));
  const missing = required.filter((name) => !reported.has(name));
  t.same(missing, [], 'the guest ran every step of the scenario', missing.length === 0 ? {} : diagnostics);
  t.equal(result.timedOut, false, 'the guest finished in time', result.timedOut ? diagnostics : {});
  t.equal(result.done, true, 'the guest said MBVM done ok', result.done === true ? {} : diagnostics);
  t.comment(`guest run: ${result.steps.length} steps in ${(result.durationMs / 1000).toFixed(1)} s`);
}

async function clusterWithVolume(t: Test, mdmArgs: string[] = []): Promise<Cluster> {
  return startCluster(t, t.testdir(), {
    sdsCount: 3,
    deviceBytes: 2 * GiB,
    volumes: [{ name: 'vol1', sizeBytes: GiB }],
    mdmArgs,
  });
}

// --- the tests -----------------------------------------------------------------------------

const unavailable = qemuUnavailable();
// A cold build downloads the kernel (~70 MB) and assembles the initramfs; each boot is about
// a minute or two of TCG. Tells tap's runner too (its default, package.json's, is 300 s).
t.setTimeout(40 * 60 * 1000);

if (unavailable !== null) {
  t.skip(`QEMU cannot run here: ${unavailable}`, () => undefined);
} else {
  // Built once, before any cluster waits on it; later runs find it cached.
  await t.test('the guest kernel and initramfs build (or come from the cache)', { timeout: 20 * 60 * 1000 }, async (t) => {
    const startedMs = Date.now();
    const guest = await harness.buildGuest((line) => t.comment(line));
    t.ok(fs.existsSync(guest.kernel), `kernel ${guest.kernel}`);
    t.ok(fs.existsSync(guest.initrd), `initramfs ${guest.initrd}`);
    t.comment(`build-guest.sh took ${((Date.now() - startedMs) / 1000).toFixed(1)} s`);
  });

  await t.test('kernel NBD client, LVM, ext4, fio and a XenServer-named VG on a mirrored volume', { timeout: 15 * 60 * 1000 }, async (t) => {
    const cluster = await clusterWithVolume(t);
    const lvmConf = guestLvmConf();
    const result = await harness.runGuest({
      nbd: cluster.sdc.nbdAddress,
      export: 'vol1',
      scenario: 'chain',
      lvmConf,
      timeoutS: 12 * 60,
      onLine: (text) => t.comment(text),
    });
    assertSteps(t, result, [
      'connect', 'pvcreate', 'vgcreate', 'lvcreate', 'lvmconfig', 'mkfs', 'mount', 'write', 'umount',
      'deactivate', 'disconnect', 'reconnect', 'activate', 'fsck', 'remount', 'verify', 'umount-verified',
      'fio-rand4k', 'fio-seq1m', 'xen-vgremove', 'xen-vgcreate', 'xen-lvcreate', 'xen-vgs', 'cleanup', 'kernel-log',
    ]);
    const lvmconfig = result.steps.find((step) => step.step === 'lvmconfig');
    t.match(lvmconfig?.detail ?? '', /\bfilter=/, 'the guest showed the LVM filter in force');
    t.match(lvmconfig?.detail ?? '', /r\|\/dev\/xvd\.\|/, "XenServer's filter is the one in force");
    t.match(lvmconfig?.detail ?? '', /types=\["nbd",16\]/, 'with the lvm-filter edit: nbd in devices/types');
    // The guest has no Node.js: it runs the very nbd-client line `meshblock attach` would run.
    const attach = await runMeshblock(['attach', 'vol1', '--sdc', '10.0.2.100:10809', '--device', '/dev/nbd0', '--dry-run']);
    const attachLine = attach.stdout.trim().split('\n').pop() ?? '';
    t.match(attachLine, /^nbd-client 10\.0\.2\.100 10809 \/dev\/nbd0 -N vol1 /);
    const connect = result.steps.find((step) => step.step === 'connect');
    t.equal(connect?.detail.split(' by: ')[1], attachLine, "the guest attached with meshblock attach's nbd-client line");
    const xen = result.steps.find((step) => step.step === 'xen-vgs');
    t.match(xen?.detail ?? '', /^VG_XenStorage-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12},\/dev\/nbd0,2$/, 'vgs lists the SR-named VG on /dev/nbd0 with its two LVs');
  });

  await t.test('kill -9 an SDS while the guest runs fio with verify: no kernel IO error, every block verifies', { timeout: 15 * 60 * 1000 }, async (t) => {
    const cluster = await clusterWithVolume(t, ['--sds-down-after', '2']);
    const victim = cluster.sds[1];
    if (victim === undefined) throw new Error('the cluster has no second SDS');
    // Set from the console callback (an object: TypeScript does not see closures assign).
    const fault: { kill: Promise<void> | null; killedAtMs: number | null } = { kill: null, killedAtMs: null };
    const startedMs = Date.now();
    const result = await harness.runGuest({
      nbd: cluster.sdc.nbdAddress,
      export: 'vol1',
      scenario: 'fio-long',
      fioSeconds: 40,
      lvmConf: guestLvmConf(),
      timeoutS: 10 * 60,
      onLine: (text, parsed) => {
        t.comment(text);
        if (parsed.event !== 'fio-started' || fault.kill !== null) return;
        // A few seconds into the load, so that IO is in flight on every SDS when it dies.
        fault.kill = new Promise<void>((resolve) => setTimeout(resolve, 3000)).then(async () => {
          await victim.kill();
          fault.killedAtMs = Date.now() - startedMs;
          t.comment(`killed ${victim.name} (kill -9) ${(fault.killedAtMs / 1000).toFixed(1)} s into the run`);
        });
      },
    });
    if (fault.kill !== null) await fault.kill;
    t.ok(fault.killedAtMs !== null, `${victim.name} was killed while fio ran`);
    const fioLong = result.steps.find((step) => step.step === 'fio-long');
    if (fault.killedAtMs !== null && fioLong !== undefined) t.ok(fault.killedAtMs < fioLong.elapsedMs, 'fio was still running when the SDS died');
    const view = await dashboard(cluster);
    t.equal(view.health.sdsDown, 1, 'the MDM declared it down: the IO of the guest went on through failover');
    assertSteps(t, result, ['connect', 'fio-prefill', 'fio-long', 'fio-final-verify', 'kernel-log', 'disconnect']);
  });
}
