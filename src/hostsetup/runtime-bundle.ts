// The runtime bundle (`meshblock bundle`, and what `meshblock install` uploads): meshblock and
// a Node that runs on any x86-64 Linux whatever its C library, made from this machine's files
// only. XenServer Dom0s have glibc 2.5 to 2.17; this machine's Node needs 2.28. So Node goes
// with the C library, the C++ runtime and the dynamic loader it was linked against (found
// with ldd), and is started through that loader, which is told where the libraries are on
// its command line:
//
//   ROOT/
//     bin/meshblock           POSIX sh: exec ROOT/lib/LOADER --library-path ROOT/lib \
//                                            ROOT/lib/node ROOT/bin/meshblock.cjs "$@"
//     bin/meshblock.cjs       meshblock's entry point, as in the package
//     dist/ package.json      meshblock
//     build/Release/*.node    the native addon
//     node_modules/           the production dependencies only
//     lib/node                this machine's Node binary
//     lib/LOADER              its dynamic loader (ld-linux-x86-64.so.2)
//     lib/lib*.so*            every shared library Node, etcd and the native addons need, by soname
//     lib/etcd                this machine's etcd (Debian's etcd-server: Go, linked to libc),
//                             when it has one: the MDM cluster's members run it
//     bin/etcd                POSIX sh: exec ROOT/lib/LOADER --library-path ROOT/lib ROOT/lib/etcd "$@"
//
// Not LD_LIBRARY_PATH: every program meshblock runs on the host (nbd-client, lvm, blkid,
// modprobe, xe) would inherit it and load the bundle's C library instead of its own. A Node
// child meshblock starts goes through the same loader (src/common/node-command.ts), and so
// does the etcd `meshblock etcd start` runs from a bundle (bundledEtcdCommand): a Master,
// Slave or TB host needs no etcd package of its own.
//
// The tarball's name carries a hash of its contents (paths and bytes), so the installer
// uploads it only to hosts that do not have that bundle yet.

import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MeshblockError } from '../common/errors.js';
import { bundleTarTimeoutMs } from '../common/limits.js';
import { bundleLibDir, bundleNodeName, bundleRootOf, isLoaderName, type NodeCommand } from '../common/node-command.js';
import { LocalTransport } from './host-transport.js';

export class RuntimeBundleError extends MeshblockError {}

/** The bundle's command, a shell script at ROOT/bin/meshblock. */
export const bundleCommandPath = 'bin/meshblock';
/** The bundle's etcd, a shell script at ROOT/bin/etcd running ROOT/lib/etcd through the loader. */
export const bundleEtcdCommandPath = 'bin/etcd';
/** The etcd binary in the bundle's lib/. */
export const bundleEtcdName = 'etcd';
/** The etcd a bundle built outside a bundle ships: Debian's etcd-server. */
export const etcdSourcePath = '/usr/bin/etcd';

/** One shared library ldd names: its soname (the name the loader looks for) and the file. */
export interface LddLibrary {
  soname: string;
  path: string;
}

export interface LddResult {
  libraries: LddLibrary[];
  /** The dynamic loader (the program interpreter), null for a static executable. */
  loader: string | null;
  /** Sonames ldd could not find. */
  missing: string[];
}

/**
 * Reads ldd's output:
 *
 *   \tlinux-vdso.so.1 (0x00007ffd...)                          the kernel's: skipped
 *   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)     a library
 *   \tlibfoo.so.1 => not found                                 missing
 *   \t/lib64/ld-linux-x86-64.so.2 (0x...)                      the loader
 *   \tstatically linked / not a dynamic executable             nothing
 */
export function parseLdd(text: string): LddResult {
  const result: LddResult = { libraries: [], loader: null, missing: [] };
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const arrow = /^(\S+) => (.*?)(?: \(0x[0-9a-f]+\))?$/.exec(line);
    if (arrow !== null) {
      const [, soname, target] = arrow as unknown as [string, string, string];
      if (target === 'not found') result.missing.push(soname);
      else if (target !== '' && path.isAbsolute(target)) result.libraries.push({ soname, path: target });
      continue;
    }
    const bare = /^(\/\S+) \(0x[0-9a-f]+\)$/.exec(line);
    if (bare !== null && isLoaderName(path.basename(bare[1] as string))) result.loader = bare[1] as string;
  }
  return result;
}

/** The production dependencies' directories, found from package.json files (no npm needed). */
export function productionPackages(appRoot: string): string[] {
  const found = new Set<string>();
  const queue: Array<{ name: string; from: string }> = [];
  const rootManifest = JSON.parse(fs.readFileSync(path.join(appRoot, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
  for (const name of Object.keys(rootManifest.dependencies ?? {})) queue.push({ name, from: appRoot });
  while (queue.length > 0) {
    const { name, from } = queue.shift() as { name: string; from: string };
    // Node's resolution: the nearest node_modules up from the requiring package.
    let dir = from;
    let location: string | null = null;
    for (;;) {
      const candidate = path.join(dir, 'node_modules', name);
      if (fs.existsSync(path.join(candidate, 'package.json'))) {
        location = candidate;
        break;
      }
      if (dir === appRoot || path.dirname(dir) === dir) break;
      dir = path.dirname(dir);
    }
    if (location === null) continue; // an optional dependency not installed here
    if (found.has(location)) continue;
    found.add(location);
    const manifest = JSON.parse(fs.readFileSync(path.join(location, 'package.json'), 'utf8')) as { dependencies?: Record<string, string>; optionalDependencies?: Record<string, string> };
    for (const dependency of Object.keys({ ...manifest.dependencies, ...manifest.optionalDependencies })) queue.push({ name: dependency, from: location });
  }
  return [...found].map((location) => path.relative(appRoot, location)).sort();
}

const thisMachine = new LocalTransport();

/** Runs a program of this machine (through the host transport's run), its stdout if it exits 0. */
async function runLocal(command: string, args: string[], timeoutMs?: number): Promise<string> {
  const result = await thisMachine.run(command, args, timeoutMs === undefined ? {} : { timeoutMs });
  if (result.code !== 0) throw new RuntimeBundleError('MB_ERR_INSTALL_BUNDLE', `${command} ${args.slice(0, 3).join(' ')} failed (exit ${result.code}): ${result.stderr.trim()}`);
  return result.stdout;
}

/** The lines of a bundle's bin/ script that find ROOT (through symlinks to the script, as /usr/local/bin may hold). */
const findRootLines = [
  'self=$0',
  'while [ -h "$self" ]; do',
  '  link=$(readlink "$self")',
  '  case $link in',
  '    /*) self=$link ;;',
  '    *) self=$(dirname "$self")/$link ;;',
  '  esac',
  'done',
  'ROOT=$(cd "$(dirname "$self")/.." && pwd -P) || exit 1',
];

/** The bundle's bin/meshblock: POSIX sh (a CentOS 5 Dom0's /bin/sh is bash 3, busybox's is ash). */
export function bundleCommandScript(loaderName: string): string {
  return [
    '#!/bin/sh',
    '# meshblock from its runtime bundle (meshblock bundle). Node runs through the bundle\'s own',
    '# dynamic loader, told on its command line where the bundle\'s libraries are: nothing is',
    '# put in the environment (no LD_LIBRARY_PATH), so the programs meshblock runs on this host',
    '# use the host\'s own libraries.',
    ...findRootLines,
    `exec "$ROOT/${bundleLibDir}/${loaderName}" --library-path "$ROOT/${bundleLibDir}" "$ROOT/${bundleLibDir}/${bundleNodeName}" "$ROOT/bin/meshblock.cjs" "$@"`,
    '',
  ].join('\n');
}

/** The bundle's bin/etcd: the bundle's etcd through the bundle's loader, as bin/meshblock runs Node. */
export function bundleEtcdScript(loaderName: string): string {
  return [
    '#!/bin/sh',
    '# etcd from the meshblock runtime bundle, on the bundle\'s C library (through its loader).',
    ...findRootLines,
    `exec "$ROOT/${bundleLibDir}/${loaderName}" --library-path "$ROOT/${bundleLibDir}" "$ROOT/${bundleLibDir}/${bundleEtcdName}" "$@"`,
    '',
  ].join('\n');
}

/**
 * The etcd a new bundle ships: a running bundle's own (its lib/etcd), else this machine's
 * etcdSourcePath; null when there is none (the bundle is then made without etcd, and serves
 * hosts without an etcd member only).
 */
export function etcdToBundle(execPath: string = process.execPath): string | null {
  const runningRoot = bundleRootOf(execPath);
  const candidate = runningRoot === null ? etcdSourcePath : path.join(runningRoot, bundleLibDir, bundleEtcdName);
  return fs.existsSync(candidate) ? candidate : null;
}

/**
 * How to run the etcd of the bundle this process runs from (the loader, its library path and
 * lib/etcd, before etcd's own arguments), or null outside a bundle or in one without etcd.
 */
export function bundledEtcdCommand(execPath: string = process.execPath): NodeCommand | null {
  const root = bundleRootOf(execPath);
  if (root === null) return null;
  const libDir = path.join(root, bundleLibDir);
  const etcd = path.join(libDir, bundleEtcdName);
  if (!fs.existsSync(etcd)) return null;
  return { command: execPath, args: ['--library-path', libDir, etcd] };
}

/** Every native addon (*.node) under a directory. */
function nativeAddons(dir: string): string[] {
  const found: string[] = [];
  const walk = (at: string): void => {
    for (const entry of fs.readdirSync(at, { withFileTypes: true })) {
      const full = path.join(at, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.isFile() && entry.name.endsWith('.node')) found.push(full);
    }
  };
  walk(dir);
  return found.sort();
}

/**
 * Fills STAGING/lib with Node, its loader, etcd (`etcd`, when there is one) and the libraries
 * they and the addons need, and returns the loader's file name. From a bundle, its own lib/ is
 * all of that already (and this machine's ldd would not see it).
 */
async function stageRuntime(staging: string, addons: readonly string[], etcd: string | null): Promise<{ loaderName: string; libraryCount: number }> {
  const libDir = path.join(staging, bundleLibDir);
  fs.mkdirSync(libDir, { recursive: true });
  const runningRoot = bundleRootOf(process.execPath);
  if (runningRoot !== null) {
    fs.cpSync(path.join(runningRoot, bundleLibDir), libDir, { recursive: true, dereference: true });
    const programs = [bundleNodeName, path.basename(process.execPath), ...(fs.existsSync(path.join(libDir, bundleEtcdName)) ? [bundleEtcdName] : [])];
    return { loaderName: path.basename(process.execPath), libraryCount: fs.readdirSync(libDir).length - programs.length };
  }
  const libraries = new Map<string, string>();
  let loader: string | null = null;
  for (const elf of [process.execPath, ...addons, ...(etcd === null ? [] : [etcd])]) {
    let text: string;
    try {
      text = await runLocal('ldd', [elf]);
    } catch (err) {
      throw new RuntimeBundleError('MB_ERR_BUNDLE_LIBRARIES', `cannot list the shared libraries of ${elf} (ldd): ${(err as Error).message}`, { cause: err });
    }
    const found = parseLdd(text);
    if (found.missing.length > 0) throw new RuntimeBundleError('MB_ERR_BUNDLE_LIBRARIES', `${elf} needs ${found.missing.join(', ')}, which ldd cannot find on this machine`);
    for (const library of found.libraries) libraries.set(library.soname, library.path);
    loader ??= found.loader;
  }
  if (loader === null) throw new RuntimeBundleError('MB_ERR_BUNDLE_LIBRARIES', `ldd names no dynamic loader for ${process.execPath}: a bundle needs a dynamically linked Node`);
  const loaderName = path.basename(loader);
  fs.copyFileSync(process.execPath, path.join(libDir, bundleNodeName));
  fs.copyFileSync(loader, path.join(libDir, loaderName));
  if (etcd !== null) fs.copyFileSync(etcd, path.join(libDir, bundleEtcdName));
  for (const [soname, file] of libraries) fs.copyFileSync(file, path.join(libDir, soname));
  for (const name of fs.readdirSync(libDir)) fs.chmodSync(path.join(libDir, name), 0o755);
  return { loaderName, libraryCount: libraries.size };
}

/** Paths and bytes of a tree, in order: two stagings of the same files hash alike. */
function hashTree(root: string): string {
  const hash = createHash('sha256');
  const walk = (dir: string): void => {
    for (const name of fs.readdirSync(dir).sort()) {
      const full = path.join(dir, name);
      const stat = fs.statSync(full);
      hash.update(path.relative(root, full));
      if (stat.isDirectory()) walk(full);
      else hash.update(fs.readFileSync(full));
    }
  };
  walk(root);
  return hash.digest('hex').slice(0, 16);
}

export interface RuntimeBundle {
  file: string;
  /** 16 hex digits of the contents' hash: the installer's PREFIX/BUNDLE. */
  hash: string;
  /** Shared libraries shipped beside Node (the loader not counted). */
  libraryCount: number;
  loaderName: string;
  /** Where the bundle's etcd came from; null: the bundle has none. */
  etcdSource: string | null;
}

/**
 * Builds the bundle of the meshblock at appRoot and the Node running this, as
 * WORKDIR/meshblock-bundle-HASH.tar.gz (kept when already there).
 */
export async function buildRuntimeBundle(appRoot: string, workDir: string): Promise<RuntimeBundle> {
  const staging = fs.mkdtempSync(path.join(workDir, 'bundle-'));
  try {
    const appEntries = ['package.json', 'bin/meshblock.cjs', 'dist', 'web', 'build/Release/meshblock_native.node', ...productionPackages(appRoot)];
    for (const entry of appEntries) {
      if (!fs.existsSync(path.join(appRoot, entry))) throw new RuntimeBundleError('MB_ERR_INSTALL_BUNDLE', `${path.join(appRoot, entry)} is missing: build meshblock first (npm ci && npm run build)`);
      fs.cpSync(path.join(appRoot, entry), path.join(staging, entry), { recursive: true, dereference: true });
    }
    const etcdSource = etcdToBundle();
    const { loaderName, libraryCount } = await stageRuntime(staging, nativeAddons(staging).map((addon) => path.join(appRoot, path.relative(staging, addon))), etcdSource);
    fs.writeFileSync(path.join(staging, bundleCommandPath), bundleCommandScript(loaderName), { mode: 0o755 });
    if (etcdSource !== null) fs.writeFileSync(path.join(staging, bundleEtcdCommandPath), bundleEtcdScript(loaderName), { mode: 0o755 });
    const hash = hashTree(staging);
    const file = path.join(workDir, `meshblock-bundle-${hash}.tar.gz`);
    if (!fs.existsSync(file)) {
      // Two installs at once (the work dir is shared) build the same bundle: each writes its
      // own partial file, and the renames, atomic, leave one whole bundle whichever is last.
      const partial = `${file}.${process.pid}-${randomBytes(4).toString('hex')}.partial`;
      try {
        await runLocal('tar', ['-czf', partial, '-C', staging, ...fs.readdirSync(staging).sort()], bundleTarTimeoutMs);
        fs.renameSync(partial, file);
      } finally {
        fs.rmSync(partial, { force: true });
      }
    }
    return { file, hash, libraryCount, loaderName, etcdSource };
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
}
