#!/usr/bin/env node
// Benchmark: how an SDS should submit direct device IO (docs/direct-io.md, "Choosing the
// engine"). The same load — 4k random reads and writes at QD32 on one O_DIRECT file or
// device, one event loop — through DirectIo (src/sds/device-io.ts) with each engine:
//
//   aio          Linux AIO (io_submit, RWF_NOWAIT), completions on the event loop (the default);
//   threads      libuv's thread pool (fs.read / fs.write), the fallback;
//   io_uring     the thread-pool calls with UV_USE_IO_URING=1, which libuv (Node 20) then
//                runs through its io_uring instead (a kernel SQPOLL thread);
//
// and fio (ioengine=libaio, direct=1) on the same file as the reference: what the device
// does for a client that costs almost nothing. Each engine runs in its own process (libuv
// reads UV_USE_IO_URING once, at start); CPU is that process's (utime + stime, kernel
// threads it owns included) per IO. Rounds alternate the engines; results are medians.
//
// Usage: node scripts/bench-direct-io.mjs [--dir DIR] [--runtime SECONDS] [--rounds N]
//   --dir      where the 1 GiB test file goes (a disk filesystem, not tmpfs) [default: /var/tmp]
//   --runtime  seconds per run [default: 4]
//   --rounds   alternations [default: 3]

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const fileBytes = 1024 * 1024 * 1024;
const blockBytes = 4096;
const depth = 32;
const engines = ['aio', 'threads', 'io_uring'];
const kinds = ['read', 'write'];

async function child(engine, kind, file, seconds) {
  const { DirectIo } = await import('../dist/sds/device-io.js');
  const { alignedBuffer } = await import('../dist/common/aligned-buffers.js');
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_DIRECT);
  const io = new DirectIo(fd, file, 512, { engine: engine === 'aio' ? 'aio' : 'threads' });
  const blocks = fileBytes / blockBytes;
  let done = 0;
  const end = Date.now() + seconds * 1000;
  const before = process.cpuUsage();
  await Promise.all(
    Array.from({ length: depth }, async () => {
      const buffer = alignedBuffer(blockBytes);
      while (Date.now() < end) {
        const at = Math.floor(Math.random() * blocks) * blockBytes;
        await (kind === 'write' ? io.write(buffer, at) : io.read(buffer, at));
        done += 1;
      }
    }),
  );
  const cpu = process.cpuUsage(before);
  io.close();
  fs.closeSync(fd);
  process.stdout.write(JSON.stringify({ iops: done / seconds, cpuUsPerIo: (cpu.user + cpu.system) / done, fallbacks: io.fallbacks, engine: io.engine }) + '\n');
}

function runEngine(engine, kind, file, seconds) {
  const env = { ...process.env, MESHBLOCK_DIRECT_IO_ENGINE: engine === 'aio' ? 'aio' : 'threads', UV_THREADPOOL_SIZE: '16' };
  if (engine === 'io_uring') env.UV_USE_IO_URING = '1';
  else delete env.UV_USE_IO_URING;
  const result = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', engine, kind, file, String(seconds)], { env, encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${engine} ${kind}: ${result.stderr}`);
  return JSON.parse(result.stdout.trim().split('\n').pop());
}

function runFio(kind, file, seconds) {
  const args = ['--name=ref', `--filename=${file}`, '--ioengine=libaio', '--direct=1', `--rw=rand${kind}`, `--bs=${blockBytes}`, `--iodepth=${depth}`, '--numjobs=1', '--time_based', `--runtime=${seconds}`, '--norandommap', '--randrepeat=0', '--output-format=json'];
  const result = spawnSync('fio', args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`fio: ${result.stderr}`);
  const job = JSON.parse(result.stdout).jobs[0];
  const side = kind === 'write' ? job.write : job.read;
  return { iops: side.iops, cpuUsPerIo: ((job.usr_cpu + job.sys_cpu) / 100) * 1e6 / side.iops };
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

async function main() {
  if (process.argv[2] === '--child') return child(process.argv[3], process.argv[4], process.argv[5], Number(process.argv[6]));
  const { values } = parseArgs({ options: { dir: { type: 'string', default: '/var/tmp' }, runtime: { type: 'string', default: '4' }, rounds: { type: 'string', default: '3' } } });
  const seconds = Number(values.runtime);
  const rounds = Number(values.rounds);
  if (!(seconds > 0) || !(rounds >= 1)) throw new Error('--runtime and --rounds must be positive');
  const dir = fs.mkdtempSync(path.join(values.dir, 'meshblock-bench-direct-io-'));
  const file = path.join(dir, 'device.img');
  try {
    // Written whole, so that no write allocates (an SDS's device is a disk, not a sparse file).
    const fd = fs.openSync(file, 'w');
    const chunk = Buffer.alloc(16 * 1024 * 1024, 0x5a);
    for (let at = 0; at < fileBytes; at += chunk.length) fs.writeSync(fd, chunk, 0, chunk.length, at);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    const results = {};
    for (let round = 1; round <= rounds; round++) {
      for (const kind of kinds) {
        for (const side of ['fio', ...engines]) {
          const result = side === 'fio' ? runFio(kind, file, seconds) : runEngine(side, kind, file, seconds);
          ((results[kind] ??= {})[side] ??= []).push(result);
          process.stderr.write(`round ${round}/${rounds} ${kind.padEnd(5)} ${side.padEnd(8)} ${Math.round(result.iops).toLocaleString('en-US').padStart(8)} IOPS  ${result.cpuUsPerIo.toFixed(1).padStart(6)} CPU µs/IO${result.fallbacks ? `  (${result.fallbacks} to the thread pool)` : ''}\n`);
        }
      }
    }
    const lines = [
      `4k random IO at QD32 through DirectIo, one process per engine; fio (libaio, direct=1) as the reference. ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? 'unknown'}), ${os.release()}; medians of ${rounds} round(s) of ${seconds} s.`,
      '',
      '| Pattern | Engine | IOPS | of fio | CPU µs per IO |',
      '| --- | --- | ---: | ---: | ---: |',
    ];
    for (const kind of kinds) {
      const fioIops = median(results[kind].fio.map((r) => r.iops));
      for (const side of ['fio', ...engines]) {
        const iops = median(results[kind][side].map((r) => r.iops));
        const cpu = median(results[kind][side].map((r) => r.cpuUsPerIo));
        lines.push(`| 4k random ${kind} | ${side} | ${Math.round(iops).toLocaleString('en-US')} | ${(iops / fioIops).toFixed(2)} | ${cpu.toFixed(1)} |`);
      }
    }
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`bench-direct-io: ${err.message}\n`);
  process.exitCode = 1;
});
