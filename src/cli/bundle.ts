// `meshblock bundle --out FILE.tar.gz`: this meshblock and this machine's Node, with the
// dynamic loader and shared libraries they need, as one tarball that runs on any x86-64 Linux
// whatever its C library (src/hostsetup/runtime-bundle.ts), and this machine's etcd (for the
// MDM cluster's members) run the same way. Unpacked anywhere, its bin/meshblock is the whole
// CLI. Nothing is downloaded: every file is this machine's.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Argv } from 'yargs';
import { InvalidArgumentError } from '../common/errors.js';
import { buildRuntimeBundle, bundleCommandPath, bundleEtcdCommandPath, etcdSourcePath } from '../hostsetup/runtime-bundle.js';

const appRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface BundleArgs {
  out: string;
}

export function bundleOptions(yargs: Argv): Argv<BundleArgs> {
  return yargs
    .option('out', { type: 'string', demandOption: true, describe: 'the tarball to write (FILE.tar.gz; replaced if it exists)', requiresArg: true })
    .check((argv) => {
      const out = argv.out as string;
      if (!out.endsWith('.tar.gz')) throw new InvalidArgumentError('--out', `must name a .tar.gz file, not '${out}'`);
      const dir = path.dirname(path.resolve(out));
      if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new InvalidArgumentError('--out', `'${dir}' is not a directory`);
      return true;
    })
    .strict() as unknown as Argv<BundleArgs>;
}

export async function bundleCommand(args: BundleArgs): Promise<void> {
  const out = path.resolve(args.out);
  // Built beside the target, so the last step is a rename within one file system.
  const workDir = fs.mkdtempSync(path.join(path.dirname(out), '.meshblock-bundle-'));
  try {
    const bundle = await buildRuntimeBundle(appRoot, workDir);
    fs.renameSync(bundle.file, out);
    const sizeMiB = (fs.statSync(out).size / 1048576).toFixed(1);
    process.stdout.write(
      `${out}: bundle ${bundle.hash}, ${sizeMiB} MiB: meshblock, Node ${process.version} with ${bundle.libraryCount} shared libraries and its loader ${bundle.loaderName}; ${
        bundle.etcdSource === null ? `no etcd (this machine has no ${etcdSourcePath}: hosts with an etcd member, an MDM cluster's Master, Slave and TB, cannot use this bundle)` : `etcd from ${bundle.etcdSource} (${bundleEtcdCommandPath})`
      }; unpack it anywhere and run its ${bundleCommandPath}\n`,
    );
  } finally {
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}
