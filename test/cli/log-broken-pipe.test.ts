// A process whose stderr reader is gone still exits. Every daemon logs to stderr through
// createRootLogger (src/cli/log.ts). With pino's asynchronous destination, pino flushes
// synchronously at exit, and sonic-boom 4's flushSync retries a failed write (EPIPE when the
// reader is gone) every 100 ms forever: a daemon that exited through process.exit or a fatal
// error while its log's reader was gone (its supervisor or test killed, its terminal closed)
// hung in its exit handler for good, holding its ports and data directory. Orphaned SDS
// shards were found so, still listening a quarter of an hour later.
//
// Real processes: a child that logs through the real createRootLogger (from dist/), with its
// stderr a pipe to this test whose end is closed first; it logs and calls process.exit at
// once, as the MDM does when its journal fails. Then the same with the reader alive, to show
// the lines are still written whole.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as path from 'node:path';
import t from 'tap';
import { orphanKill, repoRoot } from '../helpers/processes.js';

const script = `
  const { createRootLogger } = await import(${JSON.stringify(path.join(repoRoot, 'dist/cli/log.js'))});
  const log = createRootLogger('info', 'test');
  // Let the parent close its end first.
  setTimeout(() => {
    for (let index = 0; index < 100; index++) log.info({ index }, 'a line after the reader may have left');
    process.exit(3);
  }, 500);
`;

async function runChild(closeStderr: boolean): Promise<{ outcome: 'exited' | 'stuck'; code: number | null; stderr: string }> {
  const [command, ...args] = [...orphanKill, process.execPath, '--input-type=module', '-e', script] as [string, ...string[]];
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  if (closeStderr) child.stderr.destroy();
  else child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  const exited = once(child, 'exit');
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<'stuck'>((resolve) => (timer = setTimeout(() => resolve('stuck'), 20_000)));
  const outcome = await Promise.race([exited.then(() => 'exited' as const), bound]);
  clearTimeout(timer);
  if (outcome === 'stuck') {
    child.kill('SIGKILL');
    await exited;
  }
  return { outcome, code: child.exitCode, stderr };
}

t.test('process.exit with the stderr reader gone exits, and does not hang in the log flush', async (t) => {
  const gone = await runChild(true);
  t.equal(gone.outcome, 'exited', 'it exits within 20 s');
  t.equal(gone.code, 3, 'with its own exit code');
});

t.test('with the reader there, every line is written before the exit', async (t) => {
  const kept = await runChild(false);
  t.equal(kept.code, 3);
  const lines = kept.stderr.split('\n').filter((line) => line !== '');
  t.equal(lines.length, 100, 'all 100 lines');
  t.same(lines.map((line) => (JSON.parse(line) as { index: number }).index), [...Array(100).keys()], 'whole and in order');
});
