import type { Logger } from 'pino';

/** How long a daemon drains on SIGTERM/SIGINT before it aborts what is left. */
export const shutdownDrainMs = 10_000;

/**
 * Waits for SIGTERM or SIGINT, then drains (`close`) within shutdownDrainMs, else aborts
 * (`destroy`). A second signal aborts at once. `onStopRequest` receives a function that
 * starts the same drain without being a signal: called during a drain it does nothing, so a
 * request and a signal arriving together (a shard's supervisor leaving while systemd or a
 * terminal signals the whole group) drain once rather than abort.
 */
export function runUntilSignal(log: Logger, close: () => Promise<void>, destroy: () => void, onStopRequest?: (request: (reason: string) => void) => void): Promise<void> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (signal: string, counts = true): void => {
      if (stopping) {
        if (!counts) return;
        log.warn({ signal }, 'second signal: aborting');
        destroy();
        return;
      }
      stopping = true;
      log.info({ signal }, 'shutting down');
      const timer = setTimeout(() => {
        log.warn({ drainMs: shutdownDrainMs }, 'drain took too long: aborting');
        destroy();
        resolve();
      }, shutdownDrainMs);
      close().then(
        () => {
          clearTimeout(timer);
          resolve();
        },
        (err: unknown) => {
          log.error({ err }, 'error while shutting down');
          clearTimeout(timer);
          destroy();
          resolve();
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    onStopRequest?.((reason) => onSignal(reason, false));
  });
}
