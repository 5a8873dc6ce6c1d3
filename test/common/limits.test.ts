// Proves that limits have one home: every top-level constant under src/ of the processes'
// folders whose name says it is a limit or a default (…Ms, …Max, …Min, …Default) is defined
// in src/common/limits.ts, where the relations between them are asserted, unless it is
// listed below with the reason it belongs where it is. A timeout added in, say,
// src/sds/service.ts fails here, so its relation to the SDC's and the MDM's cannot be
// forgotten. Also checks that the relations asserted at load hold for the values shipped,
// by loading the module in a fresh process.

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { typescriptFiles } from '../helpers/files.js';
import { repoRoot } from '../helpers/processes.js';

const layers = ['common', 'wire', 'nbd', 'sdc', 'sds', 'mdm'];
const limitName = /^(?:export\s+)?const\s+([A-Za-z0-9]+(?:Ms|Max|Min|Default))\s*=/gm;

/** Constants that look like limits but belong where they are, with why. */
const elsewhere: Record<string, string> = {
  'common/buffer-pool.ts:pooledBytesMax': 'derived: nbdRequestBytesMax plus the pool’s own header room',
  'common/crc32c.ts:nativeBytesMin': 'a crossover of one function’s two implementations, not a limit of the system',
  'wire/handshake.ts:wireServiceOpMin': 'protocol numbering: ops below it are the handshake’s',
  'nbd/transmission.ts:offsetHighMax': 'what a JavaScript number can carry',
  'mdm/rest-commands.ts:sizeInKbMax': 'what a JavaScript number can carry',
  'mdm/rest-commands.ts:countMax': 'what a JavaScript number can carry',
  'mdm/auth.ts:adminUsernameDefault': 'a name, not a limit',
  'mdm/snmp-traps.ts:trapPortDefault': 'SNMP’s well-known trap port (162), a protocol number, not a limit',
  'mdm/snmp-traps.ts:trapCommunityDefault': 'a name (SNMPv2c’s community “public”), not a limit',
  'mdm/auth.ts:scryptCostDefault': 'the password hash’s parameters, stored with every hash',
  'mdm/auth.ts:scryptBlockSizeDefault': 'the password hash’s parameters, stored with every hash',
  'mdm/auth.ts:scryptParallelizationDefault': 'the password hash’s parameters, stored with every hash',
  'mdm/auth.ts:scryptMemoryBytesMax': 'the password hash’s parameters, stored with every hash',
  'sds/device.ts:sectorBytesMin': 'the smallest sector there is (512 bytes), part of the on-device format',
  'sds/superblock.ts:superblockVersionMin': 'the oldest on-device format still read, not a limit',
};

/** `layer/file.ts:name` of every limit-like constant defined outside src/common/limits.ts. */
export function limitsOutside(srcDir: string): string[] {
  const found: string[] = [];
  for (const layer of layers) {
    const dir = path.join(srcDir, layer);
    if (!fs.existsSync(dir)) continue;
    for (const file of typescriptFiles(dir)) {
      const relative = path.relative(srcDir, file);
      if (relative === path.join('common', 'limits.ts')) continue;
      for (const match of fs.readFileSync(file, 'utf8').matchAll(limitName)) found.push(`${relative}:${match[1]}`);
    }
  }
  return found;
}

t.test('every limit of the processes is in src/common/limits.ts or says why not', async (t) => {
  const outside = limitsOutside(path.join(repoRoot, 'src'));
  t.same(outside.filter((entry) => elsewhere[entry] === undefined), [], 'no unlisted limit outside limits.ts');
  t.same(Object.keys(elsewhere).filter((entry) => !outside.includes(entry)), [], 'every listed exception still exists');
});

t.test('the check finds a limit defined outside limits.ts', async (t) => {
  const dir = t.testdir({
    common: { 'limits.ts': 'export const fooMs = 1;\n', 'units.ts': 'export const KiB = 1024;\n' },
    sds: { 'service.ts': 'const mirrorTimeoutMs = 10_000;\nexport const rebuildsMax = 8;\nconst name = 1;\n' },
  });
  t.same(limitsOutside(dir), ['sds/service.ts:mirrorTimeoutMs', 'sds/service.ts:rebuildsMax']);
});

t.test('the shipped limits satisfy the relations asserted at load', async (t) => {
  const output = execFileSync(process.execPath, ['--input-type=module', '-e', "await import('./dist/common/limits.js'); console.log('loaded')"], { cwd: repoRoot, encoding: 'utf8' });
  t.equal(output.trim(), 'loaded');
});
