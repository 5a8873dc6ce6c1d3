// How to start another Node process running meshblock: the same way this one was started.
//
// Outside a runtime bundle that is process.execPath, as always. Inside one (`meshblock bundle`,
// src/hostsetup/runtime-bundle.ts), Node runs through the bundle's own dynamic loader:
//
//   ROOT/lib/ld-linux-x86-64.so.2 --library-path ROOT/lib ROOT/lib/node ROOT/bin/meshblock.cjs ...
//
// so that it finds the bundle's C library whatever the host's is, without LD_LIBRARY_PATH
// (which every program meshblock runs on the host would inherit, and load the bundle's
// libraries instead of its own). The kernel's /proc/self/exe is then the loader, and Node's
// process.execPath with it: that is how a bundle is recognised, with no variable in the
// environment. Started as process.execPath alone, a child would be the loader trying to run
// meshblock.cjs as a program.

import * as fs from 'node:fs';
import * as path from 'node:path';

/** A program and the arguments that come before the script's. */
export interface NodeCommand {
  command: string;
  args: string[];
}

/** The name of the bundle's Node binary, beside its loader in ROOT/lib. */
export const bundleNodeName = 'node';
/** The bundle's library directory, under its root. */
export const bundleLibDir = 'lib';

/** A glibc dynamic loader's file name (`ld-linux-x86-64.so.2`, `ld-linux-aarch64.so.1`). */
export function isLoaderName(name: string): boolean {
  return /^ld-linux[-.\w]*\.so\.\d+$/.test(name);
}

/**
 * The root of the runtime bundle this process runs from, or null when it does not: the
 * executable is a loader named as glibc names it, with the bundle's Node beside it.
 */
export function bundleRootOf(execPath: string): string | null {
  if (!isLoaderName(path.basename(execPath))) return null;
  const libDir = path.dirname(execPath);
  if (path.basename(libDir) !== bundleLibDir || !fs.existsSync(path.join(libDir, bundleNodeName))) return null;
  return path.dirname(libDir);
}

/** The loader invocation of a bundle's Node (what ROOT/bin/meshblock runs). */
export function bundleNodeCommand(root: string, loaderName: string): NodeCommand {
  const libDir = path.join(root, bundleLibDir);
  return { command: path.join(libDir, loaderName), args: ['--library-path', libDir, path.join(libDir, bundleNodeName)] };
}

/** How to start Node as this process was started: through the bundle's loader, or process.execPath. */
export function nodeCommand(execPath: string = process.execPath): NodeCommand {
  const root = bundleRootOf(execPath);
  return root === null ? { command: execPath, args: [] } : bundleNodeCommand(root, path.basename(execPath));
}

/** The Node binary itself (not the loader that runs it): what a new bundle copies. */
export function nodeBinaryPath(execPath: string = process.execPath): string {
  const root = bundleRootOf(execPath);
  return root === null ? execPath : path.join(root, bundleLibDir, bundleNodeName);
}
