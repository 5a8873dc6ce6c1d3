// Proves the import rule of DESIGN.md: common ← wire ← {sdc, sds, mdm, hostsetup} ← cli, and
// common ← nbd ← sdc: the NBD protocol core imports nothing of the cluster (not even src/wire).
// src/sim (the fleet simulator of bench:scale and the scale test) stands beside cli: it plays
// SDSs and SDCs against a real MDM and may reach the layers below; nothing imports it.
// Every relative import under src/ is read and checked against the layer it may reach; a
// forbidden edge (say, src/nbd importing src/cli, or src/nbd importing src/wire) fails.

import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { typescriptFiles } from '../helpers/files.js';
import { repoRoot } from '../helpers/processes.js';

const allowed: Record<string, readonly string[]> = {
  common: ['common'],
  wire: ['common', 'wire'],
  nbd: ['common', 'nbd'],
  sdc: ['common', 'wire', 'nbd', 'sdc'],
  sds: ['common', 'wire', 'sds'],
  mdm: ['common', 'wire', 'mdm'],
  hostsetup: ['common', 'wire', 'hostsetup'],
  cli: ['common', 'wire', 'nbd', 'sdc', 'sds', 'mdm', 'hostsetup', 'cli'],
  sim: ['common', 'wire', 'mdm', 'sim'],
};

export function importViolations(srcDir: string): string[] {
  const violations: string[] = [];
  for (const file of typescriptFiles(srcDir)) {
    const layer = path.relative(srcDir, file).split(path.sep)[0] as string;
    const reachable = allowed[layer];
    if (reachable === undefined) {
      violations.push(`${file}: src/${layer} is not a layer of DESIGN.md`);
      continue;
    }
    const text = fs.readFileSync(file, 'utf8');
    for (const match of text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+['"](\.[^'"]+)['"]/gm)) {
      const target = path.resolve(path.dirname(file), match[1] as string);
      const targetLayer = path.relative(srcDir, target).split(path.sep)[0] as string;
      if (!reachable.includes(targetLayer)) {
        violations.push(`${path.relative(srcDir, file)} imports ${match[1]} (src/${layer} may not reach src/${targetLayer})`);
      }
    }
  }
  return violations;
}

t.test('src/ imports flow one way', async (t) => {
  t.same(importViolations(path.join(repoRoot, 'src')), []);
});

t.test('the check catches a forbidden import', async (t) => {
  const dir = t.testdir({
    common: { 'a.ts': "import { x } from '../nbd/b.js';\n" },
    nbd: { 'b.ts': "export const x = 1;\nimport { y } from '../cli/c.js';\nimport { z } from '../wire/d.js';\n" },
    wire: { 'd.ts': "export const z = 3;\n" },
    cli: { 'c.ts': "export { x } from '../nbd/b.js';\nexport const y = 2;\n" },
  });
  const violations = importViolations(dir);
  t.equal(violations.length, 3);
  t.match(violations.join('\n'), /common\/a.ts imports \.\.\/nbd\/b.js/);
  t.match(violations.join('\n'), /nbd\/b.ts imports \.\.\/cli\/c.js/);
  t.match(violations.join('\n'), /nbd\/b.ts imports \.\.\/wire\/d.js \(src\/nbd may not reach src\/wire\)/);
});
