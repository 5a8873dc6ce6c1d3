// The parts of the runtime bundle that need no bundle built: ldd's output read into the
// libraries to ship, a bundle recognised from the executable path alone (the loader with the
// bundle's Node beside it) and the Node command a child gets in and out of one, the bundle's
// bin/meshblock accepted by POSIX shells (dash and busybox's ash, not bash), and `bundle`'s
// bad flags refused with one line and exit 2. test/integration/runtime-bundle.test.ts builds
// and runs a real bundle.

import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { bundleRootOf, nodeBinaryPath, nodeCommand } from '../../src/common/node-command.js';
import { bundleCommandScript, parseLdd } from '../../src/hostsetup/runtime-bundle.js';
import { run, runMeshblock } from '../helpers/processes.js';

t.test('ldd output: libraries by soname, the loader, the missing; the vDSO skipped', async (t) => {
  const text = [
    '\tlinux-vdso.so.1 (0x00007ffd8a1f2000)',
    '\tlibdl.so.2 => /lib/x86_64-linux-gnu/libdl.so.2 (0x00007f4a00a07000)',
    '\tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f4a00600000)',
    '\tlibfoo.so.1 => not found',
    '\t/lib64/ld-linux-x86-64.so.2 (0x00007f4a00a20000)',
    '',
  ].join('\n');
  t.same(parseLdd(text), {
    libraries: [
      { soname: 'libdl.so.2', path: '/lib/x86_64-linux-gnu/libdl.so.2' },
      { soname: 'libstdc++.so.6', path: '/lib/x86_64-linux-gnu/libstdc++.so.6' },
    ],
    loader: '/lib64/ld-linux-x86-64.so.2',
    missing: ['libfoo.so.1'],
  });
  t.same(parseLdd('\tstatically linked\n'), { libraries: [], loader: null, missing: [] });
  // This machine's real ldd on its own Node: a C library and a loader at least.
  const real = await run('ldd', [process.execPath]);
  const parsed = parseLdd(real.stdout);
  t.ok(parsed.libraries.some((library) => library.soname === 'libc.so.6'), 'libc.so.6');
  t.match(parsed.loader, /\/ld-linux-x86-64\.so\.2$/);
});

t.test('a bundle is recognised from the executable path; outside one nothing changes', async (t) => {
  t.same(nodeCommand(), { command: process.execPath, args: [] }, "outside a bundle: process.execPath, as before");
  t.equal(nodeBinaryPath(), process.execPath);
  const root = t.testdir({ lib: { 'ld-linux-x86-64.so.2': '', node: '' } });
  const loader = path.join(root, 'lib', 'ld-linux-x86-64.so.2');
  t.equal(bundleRootOf(loader), root);
  t.same(nodeCommand(loader), { command: loader, args: ['--library-path', path.join(root, 'lib'), path.join(root, 'lib', 'node')] });
  t.equal(nodeBinaryPath(loader), path.join(root, 'lib', 'node'));
  // A loader run by hand from the system's directory is no bundle (no lib/node beside it).
  t.equal(bundleRootOf('/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2'), null);
  fs.rmSync(path.join(root, 'lib', 'node'));
  t.equal(bundleRootOf(loader), null, 'without its Node, not a bundle');
  t.equal(bundleRootOf(path.join(root, 'lib', 'node')), null, 'Node started directly');
});

t.test("the bundle's bin/meshblock is POSIX sh: dash and busybox parse it, and it finds its root through a symlink", async (t) => {
  const dir = t.testdir({ real: { bin: {}, lib: {} } });
  const script = path.join(dir, 'real', 'bin', 'meshblock');
  // A stand-in loader that prints what it was given: the script's exec line is what is tested.
  fs.writeFileSync(script, bundleCommandScript('ld-linux-x86-64.so.2'), { mode: 0o755 });
  fs.writeFileSync(path.join(dir, 'real', 'lib', 'ld-linux-x86-64.so.2'), '#!/bin/sh\nfor arg in "$@"; do echo "$arg"; done\nenv\n', { mode: 0o755 });
  for (const shell of ['/bin/dash', '/bin/busybox']) {
    if (!fs.existsSync(shell)) continue;
    const parsed = await run(shell, shell.endsWith('busybox') ? ['sh', '-n', script] : ['-n', script]);
    t.equal(parsed.code, 0, `${shell} parses it: ${parsed.stderr}`);
  }
  fs.symlinkSync(script, path.join(dir, 'meshblock'));
  const result = await run(path.join(dir, 'meshblock'), ['--version', 'a b'], { env: { LD_LIBRARY_PATH: '' } });
  t.equal(result.code, 0, result.stderr);
  const real = fs.realpathSync(path.join(dir, 'real'));
  const lines = result.stdout.split('\n');
  t.same(lines.slice(0, 6), ['--library-path', `${real}/lib`, `${real}/lib/node`, `${real}/bin/meshblock.cjs`, '--version', 'a b']);
  t.notOk(lines.some((line) => /^LD_LIBRARY_PATH=./.test(line)), 'the script puts no library path in the environment');
});

t.test('bundle: bad flags are one line and exit 2', async (t) => {
  const missing = await runMeshblock(['bundle']);
  t.equal(missing.code, 2);
  t.match(missing.stderr, /Missing required argument: out/);
  const zip = await runMeshblock(['bundle', '--out', path.join(t.testdir(), 'x.zip')]);
  t.equal(zip.code, 2);
  t.match(zip.stderr, /--out: must name a \.tar\.gz file/);
  const nowhere = await runMeshblock(['bundle', '--out', '/nonexistent-dir/x.tar.gz']);
  t.equal(nowhere.code, 2);
  t.match(nowhere.stderr, /--out: '\/nonexistent-dir' is not a directory/);
});
