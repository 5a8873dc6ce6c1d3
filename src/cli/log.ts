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
    pino.destination({ dest: 2, sync: false }),
  );
}
