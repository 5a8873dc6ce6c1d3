import { pino, type Logger, type Level } from 'pino';

export const logLevels: readonly Level[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'];

/** The one root logger: JSON lines on stderr, so stdout stays for what the user asked for. */
export function createRootLogger(level: Level, daemon: string): Logger {
  return pino(
    {
      level,
      // 'daemon', not 'component': child loggers name their component without a duplicate key.
      base: { daemon, pid: process.pid },
      redact: ['*.password', '*.secret', '*.token', '*.key', 'password', 'secret', 'token'],
    },
    // Synchronous: with an asynchronous destination pino flushes at exit with sonic-boom's
    // flushSync, which (sonic-boom 4) retries a failed write every 100 ms forever, so a
    // process.exit or a fatal error with stderr's reader gone (EPIPE) hung the daemon for good
    // (test/cli/log-broken-pipe.test.ts). Written at once, a broken pipe is seen on the first
    // line and logging stops; daemons log events, not requests, so the cost is small.
    pino.destination({ dest: 2, sync: true }),
  );
}
