// `meshblock install` as a program, for the MDM cluster's CSV: `--template 3|5` print ScaleIO's
// 3- and 5-node clusters (Master, Slave(s), TB(s)), which read back; a CSV breaking a cluster
// rule is refused with its row and column on stderr, exit 1, before any host is contacted
// (the hosts' addresses are from TEST-NET, where nothing answers). A bad --sds-shards is
// refused as a usage error (exit 2), named, before the CSV is read.

import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { sdsShardsMax } from '../../src/common/limits.js';
import { parseInstallCsv } from '../../src/hostsetup/install-csv.js';
import { runMeshblock } from '../helpers/processes.js';

t.test('--template 3 and --template 5', async (t) => {
  for (const [nodes, roles] of [
    ['3', 'Master,Slave,TB'],
    ['5', 'Master,Slave,Slave,TB,TB'],
  ] as const) {
    const result = await runMeshblock(['install', '--template', nodes]);
    t.equal(result.code, 0, result.stderr);
    const rows = result.stdout.trim().split('\n').slice(1);
    t.equal(rows.map((row) => row.split(',')[4]).join(','), roles, `--template ${nodes}: ${roles}`);
    t.equal(parseInstallCsv(result.stdout).memberCount, Number(nodes));
  }
});

t.test('a cluster rule broken: row and column, nothing contacted', async (t) => {
  const template = (await runMeshblock(['install', '--template', '3'])).stdout;
  const csv = path.join(t.testdir(), 'cluster.csv');
  fs.writeFileSync(csv, template.replace(',TB,', ',Slave,'));
  const result = await runMeshblock(['install', '--csv', csv, '--dry-run']);
  t.equal(result.code, 1);
  t.match(result.stderr, /row 4, column 'Is MDM\/TB': a 3-member cluster is 1 Master, 1 Slave and 1 TB/);
  t.equal(result.stderr.trim().split('\n').length, 1, 'one line');
  t.equal(result.stdout, '', 'no phase started');
});

t.test('--sds-shards: a count from 1 to sdsShardsMax or auto, anything else refused before any host is contacted', async (t) => {
  const csv = path.join(t.testdir(), 'cluster.csv');
  fs.writeFileSync(csv, (await runMeshblock(['install', '--template', '3'])).stdout);
  for (const bad of ['0', String(sdsShardsMax + 1), 'all']) {
    const result = await runMeshblock(['install', '--csv', csv, '--dry-run', '--sds-shards', bad]);
    t.equal(result.code, 2, `--sds-shards ${bad}: a usage error`);
    t.match(result.stderr, `--sds-shards: must be auto or a count from 1 to ${sdsShardsMax}, not '${bad}'`);
    t.equal(result.stdout, '', 'no phase started');
  }
  const help = await runMeshblock(['install', '--help']);
  t.match(help.stdout, new RegExp(`--sds-shards +SDS processes per SDS host, 1 to ${sdsShardsMax}, [^]*\\(auto: half the host's cores`));
  t.match(help.stdout, /\[default: "auto"\]/);
});
