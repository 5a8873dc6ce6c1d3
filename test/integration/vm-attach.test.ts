// Mapped volumes appear as disks, for real: the runtime bundle (`meshblock bundle`) goes into
// the QEMU guest of scripts/vm (Debian's kernel, with the nbd module this machine lacks), whose
// init runs the SDC from it with `sdc start --attach-mapped`; the MDM and three SDSs run on
// this machine. Mapping the volume from here makes /dev/nbd0 and its /dev/disk/by-id names
// (emc-vol-<system id>-<volume id>, scsi-emc-vol-..., meshblock-<name>: the ids the REST API
// shows) appear in the guest without any nbd-client run by hand; LVM (created on the emc-vol
// name) and ext4 work on it; fio with verify runs while this test kill -9s an SDS and sees
// nothing; unmapping from here detaches it in the guest (size 0, names gone). One boot.
//
// Network: the SDC in the guest must reach the MDM and SDSs at the addresses they registered,
// which are not this machine's loopback (the guest's 127.0.0.1 is its own). The SDSs run in
// simulated hosts (network namespaces, test/helpers/netns.ts), the MDM on the root
// namespace's address of that network, and QEMU in one more simulated host, with its user
// network unrestricted there: the guest reaches the cluster through slirp, and nothing else
// (the namespace has no other route).

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import { startCluster } from '../helpers/cluster.js';
import { dashboard } from '../helpers/fault-load.js';
import { createSimNetwork } from '../helpers/netns.js';
import { repoRoot, run, runMeshblock } from '../helpers/processes.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

interface GuestStep {
  step: string;
  ok: boolean;
  detail: string;
  elapsedMs: number;
}

interface GuestResult {
  ok: boolean;
  steps: GuestStep[];
  done: boolean | null;
  timedOut: boolean;
  output: string;
  durationMs: number;
}

interface Harness {
  runGuest(options: {
    nbd: string;
    export: string;
    scenario: 'attach-mapped';
    fioSeconds: number;
    timeoutS: number;
    memoryMiB: number;
    netns: string;
    settings: Record<string, string>;
    files: Array<{ name: string; data?: string; mode?: number }>;
    trees: Array<{ source: string; target: string }>;
    onLine: (text: string, parsed: { event?: string }) => void;
  }): Promise<GuestResult>;
}

const harness = (await import(pathToFileURL(path.join(repoRoot, 'scripts/vm/run-guest.mjs')).href)) as Harness;

t.setTimeout(40 * 60 * 1000);

const qemu = spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' });
if (qemu.error !== undefined || qemu.status !== 0) {
  t.skip('qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)', () => undefined);
} else {
  await t.test('sdc start --attach-mapped in the guest: map attaches with by-id names, LVM and ext4, an SDS killed under fio, unmap detaches', { timeout: 30 * 60 * 1000 }, async (t) => {
    const dir = t.testdir();
    fs.mkdirSync(dir, { recursive: true });
    // The runtime bundle, unpacked: it goes into the guest's initramfs as it is.
    const bundleFile = path.join(dir, 'meshblock.tar.gz');
    const bundled = await runMeshblock(['bundle', '--out', bundleFile], { timeoutMs: 15 * 60 * 1000 });
    t.equal(bundled.code, 0, `meshblock bundle ${bundled.stderr}`);
    const bundleDir = path.join(dir, 'bundle');
    fs.mkdirSync(bundleDir);
    const untar = await run('tar', ['-xzf', bundleFile, '-C', bundleDir]);
    t.equal(untar.code, 0, `tar -x ${untar.stderr}`);

    const network = await createSimNetwork(t, 4);
    if ('unavailable' in network) {
      t.fail(`network namespaces are unavailable: ${network.unavailable}`);
      return;
    }
    const sdsHosts = network.hosts.slice(0, 3).map((host) => ({ netns: host.netns, address: host.address }));
    const guestHost = network.hosts[3];
    if (guestHost === undefined) throw new Error('no fourth simulated host');
    const cluster = await startCluster(t, dir, { sdsCount: 3, deviceBytes: 2 * GiB, volumes: [], mdmHost: network.hostAddress, sdsHosts, mdmArgs: ['--sds-down-after', '2'] });
    const must = async (args: string[]): Promise<string> => {
      const result = await cluster.meshblock(args);
      if (result.code !== 0) throw new Error(`meshblock ${args.join(' ')}: ${result.stderr}`);
      return result.stdout;
    };
    await must(['volume', 'add', '--pool', 'sp1', '--name', 'vol1', '--size', String(GiB)]);
    const volumeId = (JSON.parse(await must(['volume', 'list', '--json'])) as Array<{ id: string; name: string }>).find((volume) => volume.name === 'vol1')?.id ?? '';
    const systemId = cluster.mdm.clusterId;

    // What the host does at the guest's cues, in order; each result asserted after the run.
    const actions: Array<{ what: string; done: Promise<string> }> = [];
    const victim = cluster.sds[1];
    if (victim === undefined) throw new Error('no second SDS');
    const result = await harness.runGuest({
      nbd: '127.0.0.1:9',
      export: 'vol1',
      scenario: 'attach-mapped',
      fioSeconds: 20,
      timeoutS: 25 * 60,
      memoryMiB: 2048,
      netns: guestHost.netns,
      settings: { MBVM_MDM: cluster.mdm.address, MBVM_CLUSTER_ID: systemId, MBVM_SDC_NAME: 'guest' },
      files: [{ name: 'etc/meshblock' }, { name: 'etc/meshblock/cluster.secret', data: fs.readFileSync(cluster.mdm.secretFile, 'utf8'), mode: 0o600 }],
      trees: [{ source: bundleDir, target: 'opt/meshblock' }],
      onLine: (text, parsed) => {
        t.comment(text);
        if (parsed.event === 'sdc-ready') actions.push({ what: 'map', done: must(['volume', 'map', '--volume', 'vol1', '--sdc', 'guest']) });
        if (parsed.event === 'unmap-now') actions.push({ what: 'unmap', done: must(['volume', 'unmap', '--volume', 'vol1', '--sdc', 'guest']) });
        if (parsed.event === 'fio-started') {
          actions.push({
            what: `kill -9 ${victim.name}`,
            done: new Promise<void>((resolve) => setTimeout(resolve, 3000)).then(async () => {
              await victim.kill();
              return 'killed';
            }),
          });
        }
      },
    });
    for (const action of actions) {
      const outcome = await action.done.then(
        () => null,
        (err: unknown) => (err as Error).message,
      );
      t.equal(outcome, null, `the host's ${action.what} at the guest's cue`);
    }
    t.same(actions.map((action) => action.what), ['map', `kill -9 ${victim.name}`, 'unmap'], 'the guest cued the map, the fault and the unmap');
    const diagnostics = { guestOutput: result.output.slice(-12_000) };
    for (const step of result.steps) t.ok(step.ok, `guest step ${step.step}: ${step.detail}`, step.ok ? {} : diagnostics);
    const required = ['bundle', 'sdc-start', 'attached', 'pvcreate', 'vgcreate', 'lvcreate', 'mkfs', 'mount', 'write', 'umount', 'deactivate', 'activate', 'fsck', 'remount', 'verify', 'umount-verified', 'vgremove', 'fio-prefill', 'fio-long', 'fio-final-verify', 'kernel-log', 'detached', 'sdc-stop'];
    const missing = required.filter((name) => !result.steps.some((step) => step.step === name));
    t.same(missing, [], 'the guest ran every step', missing.length === 0 ? {} : diagnostics);
    t.equal(result.done, true, 'the guest said MBVM done ok', result.done === true ? {} : diagnostics);
    const attached = result.steps.find((step) => step.step === 'attached')?.detail ?? '';
    for (const name of [`emc-vol-${systemId}-${volumeId}`, `scsi-emc-vol-${systemId}-${volumeId}`, 'meshblock-vol1']) {
      t.match(attached, ` ${name}=../../nbd0`, `${name} -> /dev/nbd0 in the guest`);
    }
    t.match(result.steps.find((step) => step.step === 'pvcreate')?.detail ?? '', `/dev/disk/by-id/emc-vol-${systemId}-${volumeId}`, 'the PV was created on the emc-vol name');
    const view = await dashboard(cluster);
    t.equal(view.health.sdsDown, 1, "the SDS died under the guest's fio (declared down), and fio saw nothing");
    t.comment(`guest run: ${result.steps.length} steps in ${(result.durationMs / 1000).toFixed(1)} s`);
  });
}
