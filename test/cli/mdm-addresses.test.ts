// Proves `--mdm H:P[,H:P...]` of `sds start` and `sdc start` (ScaleIO's "MDM IPs"):
//   - a bad list is refused before anything starts, in one line that names the bad entry:
//     a malformed entry, a port out of range, an empty entry, a duplicate (also one spelled
//     differently: ':P' is 127.0.0.1:P), more than mdmAddressesMax entries;
//   - real daemons given a list whose first address is closed (a Slave's wire port, or a dead
//     MDM) register with the real MDM behind it, and log which address they registered with.
// The parsing itself (parseHostPortList) is checked directly as well.

import * as net from 'node:net';
import * as path from 'node:path';
import t from 'tap';
import { parseHostPortList } from '../../src/common/address.js';
import { mdmAddressesMax } from '../../src/common/limits.js';
import { cli, startMdm, until } from '../helpers/cluster.js';
import { sparseFile } from '../helpers/files.js';
import { runMeshblock, startMeshblock } from '../helpers/processes.js';
import { MiB, startSds } from '../helpers/sds.js';

const sdsStart = ['sds', 'start', '--name', 'sds1', '--device', '/tmp/none'];
const sdcStart = ['sdc', 'start'];

t.test('parseHostPortList: each entry checked, normalized, duplicates and excess refused', async (t) => {
  const parse = (text: string): string[] => parseHostPortList('--mdm', text, mdmAddressesMax);
  t.same(parse('10.0.0.1:9011'), ['10.0.0.1:9011']);
  t.same(parse(' 10.0.0.1:9011 , [fd00::2]:9011,:9011'), ['10.0.0.1:9011', '[fd00::2]:9011', '127.0.0.1:9011'], 'trimmed, IPv6 bracketed, default host filled in');
  t.throws(() => parse('a:1,b'), { code: 'MB_ERR_INVALID_ARGUMENT', field: '--mdm', message: "--mdm: entry 2 ('b'): expected HOST:PORT or [IPv6]:PORT, got 'b'" });
  t.throws(() => parse('a:1,a:99999'), { code: 'MB_ERR_INVALID_ARGUMENT', message: "--mdm: entry 2 ('a:99999'): must be a port from 0 to 65535, got 99999" });
  t.throws(() => parse('b'), { code: 'MB_ERR_INVALID_ARGUMENT', message: "--mdm: expected HOST:PORT or [IPv6]:PORT, got 'b'" }, 'one entry: as parseHostPort says it');
  t.throws(() => parse('a:1,,b:2'), { message: '--mdm: entry 2 is empty: expected HOST:PORT[,HOST:PORT...]' });
  t.throws(() => parse('a:1,'), { message: /entry 2 is empty/ });
  t.throws(() => parse('a:1,b:2,a:1'), { message: "--mdm: entry 3 ('a:1') is given twice (a:1)" });
  t.throws(() => parse('127.0.0.1:7,:7'), { message: /entry 2 \(':7'\) is given twice \(127\.0\.0\.1:7\)/ });
  const many = Array.from({ length: mdmAddressesMax + 1 }, (_, index) => `h${index}:1`).join(',');
  t.throws(() => parse(many), { message: `--mdm: at most ${mdmAddressesMax} addresses, got ${mdmAddressesMax + 1}` });
  t.equal(parse(many.split(',').slice(0, mdmAddressesMax).join(',')).length, mdmAddressesMax, `${mdmAddressesMax} are accepted`);
});

t.test('a bad --mdm list: one line naming the entry, exit 2', async (t) => {
  const many = Array.from({ length: mdmAddressesMax + 1 }, (_, index) => `10.0.0.${index + 1}:9011`).join(',');
  const cases: Array<[string[], RegExp]> = [
    [[...sdsStart, '--mdm', '10.0.0.1:9011,nonsense'], /--mdm: entry 2 \('nonsense'\): expected HOST:PORT/],
    [[...sdsStart, '--mdm', '10.0.0.1:9011,10.0.0.2:9011,10.0.0.1:9011'], /--mdm: entry 3 \('10\.0\.0\.1:9011'\) is given twice/],
    [[...sdsStart, '--mdm', '10.0.0.1:9011,,10.0.0.2:9011'], /--mdm: entry 2 is empty/],
    [[...sdsStart, '--mdm', many], new RegExp(`--mdm: at most ${mdmAddressesMax} addresses`)],
    [[...sdcStart, '--mdm', '10.0.0.1:9011,10.0.0.2:70000'], /--mdm: entry 2 \('10\.0\.0\.2:70000'\): must be a port from 0 to 65535/],
    [[...sdcStart, '--mdm', '10.0.0.1:9011,10.0.0.1:9011'], /--mdm: entry 2 \('10\.0\.0\.1:9011'\) is given twice/],
    // A good list passes: the next check (--cluster-id) is the one that speaks.
    [[...sdcStart, '--mdm', '10.0.0.1:9011,10.0.0.2:9011,[fd00::3]:9011', '--cluster-id', 'XYZ'], /--cluster-id: must be 16 lowercase hex digits/],
  ];
  for (const [args, pattern] of cases) {
    const result = await runMeshblock(args);
    t.equal(result.code, 2, `meshblock ${args.join(' ')} exits 2`);
    t.match(result.stderr, pattern, 'says why');
    t.equal(result.stderr.trim().split('\n').length, 1, 'in one line');
  }
});

t.test('an SDS and an SDC given a closed address first register with the MDM behind it', async (t) => {
  const dir = t.testdir();
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const closed = `127.0.0.1:${(probe.address() as net.AddressInfo).port}`;
  await new Promise<void>((resolve) => probe.close(() => resolve()));

  const mdm = await startMdm(t, dir);
  const mdms = `${closed},${mdm.address}`;
  const sds = await startSds(t, { dir, name: 'sds1', devices: [sparseFile(dir, 'sds1.img', 256 * MiB)], clusterId: mdm.clusterId, secretFile: mdm.secretFile, extraArgs: ['--mdm', mdms] });
  const sdc = await startMeshblock(t, ['sdc', 'start', '--mdm', mdms, '--name', 'sdc1', '--listen', '127.0.0.1:0', '--data-dir', path.join(dir, 'sdc1-data'), '--cluster-id', mdm.clusterId, '--secret-file', mdm.secretFile], {
    ready: /^sdc \S+ \(\S+\) of cluster [0-9a-f]{16} serving NBD on (\S+)$/m,
  });
  const meshblock = cli(mdm, dir);
  await until('the SDS and the SDC to register', async () => {
    const sdsList = JSON.parse((await meshblock(['sds', 'list', '--json'])).stdout) as Array<{ name: string }>;
    const sdcList = JSON.parse((await meshblock(['sdc', 'list', '--json'])).stdout) as Array<{ name: string; mdmConnectionState: string }>;
    return sdsList.some((entry) => entry.name === 'sds1') && sdcList.some((entry) => entry.name === 'sdc1' && entry.mdmConnectionState === 'Connected') ? true : undefined;
  });
  for (const [what, daemon] of [['SDS', sds], ['SDC', sdc]] as const) {
    const registered = daemon
      .stderr()
      .split('\n')
      .filter((line) => line.includes('registered with the MDM'))
      .map((line) => JSON.parse(line) as { mdm: string });
    t.same(
      registered.map((line) => line.mdm),
      [mdm.address],
      `the ${what} logs the address it registered with`,
    );
    t.match(daemon.stderr(), new RegExp(`"mdm":"${closed}".*trying the next`), `the ${what} logs the closed address it passed over`);
    t.notMatch(daemon.stderr(), /no MDM reachable/, `the ${what} did not back off`);
  }
});
