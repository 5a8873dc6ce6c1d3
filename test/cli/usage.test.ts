// Proves the command line's contract: --help everywhere, and bad flags or values give one
// clear line on stderr and a non-zero exit (2 for usage, 1 for run-time failures).

import t from 'tap';
import { runMeshblock } from '../helpers/processes.js';

t.test('--help on every command', async (t) => {
  for (const args of [['--help'], ['nbd', '--help'], ['nbd', 'serve', '--help'], ['sds', '--help'], ['sds', 'start', '--help'], ['sdc', 'start', '--help'], ['mdm', 'start', '--help'], ['lab', '--help'], ['lab', 'up', '--help'], ['loadtest', '--help'], ['volume', '--help'], ['dashboard', '--help'], ['attach', '--help'], ['detach', '--help']]) {
    const result = await runMeshblock(args);
    t.equal(result.code, 0, `${args.join(' ')} exits 0`);
    t.match(result.stdout, /meshblock/, `${args.join(' ')} prints usage`);
  }
  const serveHelp = await runMeshblock(['nbd', 'serve', '--help']);
  for (const flag of ['--file', '--name', '--listen', '--socket', '--read-only', '--tls-cert']) {
    t.match(serveHelp.stdout, flag, `nbd serve --help mentions ${flag}`);
  }
  const sdsHelp = await runMeshblock(['sds', 'start', '--help']);
  for (const flag of ['--name', '--device', '--listen', '--data-dir', '--mdm', '--cluster-id', '--secret-file', '--chunk-size', '--force']) {
    t.match(sdsHelp.stdout, flag, `sds start --help mentions ${flag}`);
  }
});

t.test('bad usage: one line, exit 2', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [[], /name a command/],
    [['bogus'], /Unknown argument|bogus/],
    [['nbd'], /nbd: name a subcommand/],
    [['sds'], /sds: name a subcommand/],
    [['sds', 'start', '--name', 'a', '--device', 'x', '--cluster-id', 'XYZ'], /--cluster-id: must be 16 lowercase hex digits/],
    [['nbd', 'serve'], /Missing required argument: file/],
    [['nbd', 'serve', '--file', 'x', '--bogus'], /Unknown argument/],
    [['nbd', 'serve', '--file', 'x', '--listen', 'nonsense'], /--listen: expected HOST:PORT/],
    [['nbd', 'serve', '--file', 'x', '--listen', '127.0.0.1:70000'], /--listen: must be a port from 0 to 65535/],
    [['nbd', 'serve', '--file', 'x', '--listen', ':1', '--socket', '/tmp/s'], /mutually exclusive/],
    [['nbd', 'serve', '--file', 'x', '--tls-cert', 'c.pem'], /--tls-cert\/--tls-key: give both or neither/],
    [['nbd', 'serve', '--file', 'x', '--tls', 'require'], /--tls: 'require' needs --tls-cert/],
    [['nbd', 'serve', '--file', 'x', '--log-level', 'loud'], /Invalid values/],
    [['mdm', 'start', '--data-dir', '/tmp/x', '--sds-down-after', '0'], /--sds-down-after: must be a number of seconds above 0/],
    [['mdm', 'start', '--data-dir', '/tmp/x', '--rebuild-after', 'soon'], /--rebuild-after: must be a number of seconds/],
    [['mdm', 'start', '--data-dir', '/tmp/x', '--rebuild-rate', 'fast'], /--rebuild-rate/],
    [['mdm', 'start', '--data-dir', '/tmp/x', '--rebuild-rate-under-load', '-5'], /--rebuild-rate-under-load/],
    [['mdm', 'start', '--data-dir', '/tmp/x', '--rebuild-inflight', '0'], /--rebuild-inflight: must be an integer from 1 to 64/],
    [['lab', 'up', '--dir', '/tmp/x', '--rebuild-after', '0'], /--rebuild-after/],
    [['attach'], /VOLUME: name the volume/],
    [['attach', 'vol1', '--device', '/dev/sda'], /--device: must be an NBD device/],
    [['attach', 'vol1', '--connections', '0'], /--connections: must be an integer from 1 to 16/],
    [['attach', 'vol1', '--timeout', '1.5'], /--timeout/],
    [['attach', 'vol1', '--sdc', 'nowhere'], /--sdc: expected HOST:PORT/],
    [['detach'], /Not enough non-option arguments/],
    [['lab', 'up', '--dir', '/tmp/x', '--rebuild-rate', 'fast'], /--rebuild-rate/],
  ];
  for (const [args, pattern] of cases) {
    const result = await runMeshblock(args);
    t.equal(result.code, 2, `meshblock ${args.join(' ')} exits 2`);
    t.match(result.stderr, pattern, `meshblock ${args.join(' ')} says why`);
    t.equal(result.stderr.trim().split('\n').length, 1, `meshblock ${args.join(' ')} says it in one line`);
  }
});

t.test('run-time failures: one line, exit 1', async (t) => {
  // This machine's kernel has no nbd module: attach must say so (the VM test attaches for real).
  const attach = await runMeshblock(['attach', 'vol1', '--sdc', '127.0.0.1:1']);
  t.equal(attach.code, 1);
  t.match(attach.stderr, /modprobe is not installed|cannot load the nbd kernel module/);
  t.equal(attach.stderr.trim().split('\n').length, 1);
  const detach = await runMeshblock(['detach', 'no-such-volume']);
  t.equal(detach.code, 1);
  t.match(detach.stderr, /volume 'no-such-volume' is not attached here/);
  const dryRun = await runMeshblock(['attach', 'vol1', '--sdc', '10.0.2.100:10809', '--connections', '2', '--dry-run']);
  t.equal(dryRun.code, 0);
  t.match(dryRun.stdout, /^(modprobe nbd nbds_max=16 max_part=16\n)?nbd-client 10\.0\.2\.100 10809 \/dev\/nbd\d+ -N vol1 -b 4096 -t 30 -C 2\n$/);
  const persist = await runMeshblock(['attach', 'vol1', '--persist', '--dry-run']);
  t.match(persist.stdout, /nbd-client 127\.0\.0\.1 10809 \/dev\/nbd\d+ -N vol1 -b 4096 -t 30 -persist -nonetlink\n$/, '--persist: a resident, reconnecting nbd-client (ioctl interface)');

  const missing = await runMeshblock(['nbd', 'serve', '--file', '/nonexistent/disk.img', '--listen', '127.0.0.1:0']);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /\/nonexistent\/disk.img: no such file or device/);
  t.equal(missing.stderr.trim().split('\n').length, 1);

  const directory = await runMeshblock(['nbd', 'serve', '--file', '/tmp', '--listen', '127.0.0.1:0']);
  t.equal(directory.code, 1);
  t.match(directory.stderr, /is a directory/);
});

t.test('the I/O thread pool gets its size before it starts', async (t) => {
  // bin/meshblock.cjs must set UV_THREADPOOL_SIZE before libuv's pool starts; a process
  // with the default pool of 4 would have far fewer threads than the size we ask for.
  const { ioThreadsDefault } = await import('../../src/common/limits.js');
  const { readFileSync } = await import('node:fs');
  const { meshblockBin, startNbdServe } = await import('../helpers/processes.js');
  t.match(readFileSync(meshblockBin, 'utf8'), new RegExp(`const ioThreadsDefault = ${ioThreadsDefault};`), 'bin and limits agree');
  const dir = t.testdir({ 'disk.img': Buffer.alloc(65536) });
  // Through env(1) and without NODE_OPTIONS, so that tap's process tracking preloads no
  // ES module into the server: that would start the pool before bin/meshblock.cjs runs.
  const server = await startNbdServe(t, ['--file', `${dir}/disk.img`], { prefix: ['env', '-u', 'NODE_OPTIONS', '-u', 'UV_THREADPOOL_SIZE'] });
  const status = readFileSync(`/proc/${server.process.pid}/status`, 'utf8');
  const threads = Number(/^Threads:\s+(\d+)/m.exec(status)?.[1]);
  t.ok(threads >= ioThreadsDefault, `${threads} threads, at least the ${ioThreadsDefault} of the pool`);
});
