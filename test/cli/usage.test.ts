// Proves the command line's contract: --help everywhere, and bad flags or values give one
// clear line on stderr and a non-zero exit (2 for usage, 1 for run-time failures).

import t from 'tap';
import { runMeshblock } from '../helpers/processes.js';

t.test('--help on every command', async (t) => {
  for (const args of [['--help'], ['nbd', '--help'], ['nbd', 'serve', '--help']]) {
    const result = await runMeshblock(args);
    t.equal(result.code, 0, `${args.join(' ')} exits 0`);
    t.match(result.stdout, /meshblock/, `${args.join(' ')} prints usage`);
  }
  const serveHelp = await runMeshblock(['nbd', 'serve', '--help']);
  for (const flag of ['--file', '--name', '--listen', '--socket', '--read-only', '--tls-cert']) {
    t.match(serveHelp.stdout, flag, `nbd serve --help mentions ${flag}`);
  }
});

t.test('bad usage: one line, exit 2', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [[], /name a command/],
    [['bogus'], /Unknown argument|bogus/],
    [['nbd'], /nbd: name a subcommand/],
    [['nbd', 'serve'], /Missing required argument: file/],
    [['nbd', 'serve', '--file', 'x', '--bogus'], /Unknown argument/],
    [['nbd', 'serve', '--file', 'x', '--listen', 'nonsense'], /--listen: expected HOST:PORT/],
    [['nbd', 'serve', '--file', 'x', '--listen', '127.0.0.1:70000'], /--listen: must be a port from 0 to 65535/],
    [['nbd', 'serve', '--file', 'x', '--listen', ':1', '--socket', '/tmp/s'], /mutually exclusive/],
    [['nbd', 'serve', '--file', 'x', '--tls-cert', 'c.pem'], /--tls-cert\/--tls-key: give both or neither/],
    [['nbd', 'serve', '--file', 'x', '--tls', 'require'], /--tls: 'require' needs --tls-cert/],
    [['nbd', 'serve', '--file', 'x', '--log-level', 'loud'], /Invalid values/],
  ];
  for (const [args, pattern] of cases) {
    const result = await runMeshblock(args);
    t.equal(result.code, 2, `meshblock ${args.join(' ')} exits 2`);
    t.match(result.stderr, pattern, `meshblock ${args.join(' ')} says why`);
    t.equal(result.stderr.trim().split('\n').length, 1, `meshblock ${args.join(' ')} says it in one line`);
  }
});

t.test('run-time failures: one line, exit 1', async (t) => {
  const missing = await runMeshblock(['nbd', 'serve', '--file', '/nonexistent/disk.img', '--listen', '127.0.0.1:0']);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /\/nonexistent\/disk.img: no such file or device/);
  t.equal(missing.stderr.trim().split('\n').length, 1);

  const directory = await runMeshblock(['nbd', 'serve', '--file', '/tmp', '--listen', '127.0.0.1:0']);
  t.equal(directory.code, 1);
  t.match(directory.stderr, /is a directory/);
});
