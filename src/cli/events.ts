// meshblock events: the MDM's event log (docs/events.md) over the REST API (GET /api/events).
//
//   meshblock events                  the last --limit events (default 50), oldest first
//   meshblock events --since ID       the events after ID
//   meshblock events --follow         ... then every new one as it comes (long polls of
//                                     eventsWaitMsMax; through an MDM failover, the client
//                                     moves to the new Master and goes on after the last id)
//   --json                            one JSON object per event, a line each (jq-friendly,
//                                     and what a follower writes as it goes)

import type { Argv } from 'yargs';
import { OutOfRangeError } from '../common/errors.js';
import { eventsPageMax, eventsWaitMsMax } from '../common/limits.js';
import type { MdmEvent } from '../mdm/events.js';
import { ApiClient, connectionOptions, processIo, type ConnectionArgs, type ManageIo } from './manage-client.js';

export interface EventsArgs extends ConnectionArgs {
  since: string | undefined;
  limit: string;
  follow: boolean;
  json: boolean;
}

export const eventsLimitDefault = 50;

export function eventsOptions(yargs: Argv, io: ManageIo = processIo): Argv<EventsArgs> {
  return connectionOptions(yargs, io)
    .option('since', { type: 'string', describe: 'show the events after this id (without it: the last --limit)', requiresArg: true })
    .option('limit', { type: 'string', default: String(eventsLimitDefault), describe: `events per call, 1 to ${eventsPageMax}`, requiresArg: true })
    .option('follow', { alias: 'f', type: 'boolean', default: false, describe: 'keep printing new events as they come (Ctrl-C ends)' })
    .option('json', { type: 'boolean', default: false, describe: 'one JSON object per event, a line each' })
    .check((argv) => {
      if (argv.since !== undefined) wholeNumber('--since', argv.since, 0, Number.MAX_SAFE_INTEGER);
      wholeNumber('--limit', argv.limit, 1, eventsPageMax);
      return true;
    }) as unknown as Argv<EventsArgs>;
}

function wholeNumber(flag: string, value: unknown, min: number, max: number): number {
  const text = String(value);
  const number = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(number) || number < min || number > max) throw new OutOfRangeError(flag, `a whole number from ${min} to ${max}`, text);
  return number;
}

interface EventsPage {
  events: MdmEvent[];
  lastId: number;
}

/** One line of text per event: id, time, severity, type, object (and name), message, [user]. */
export function formatEvent(event: MdmEvent): string {
  const object = event.objectName !== null && event.objectName !== '' ? `${event.object} (${event.objectName})` : event.object;
  return `${String(event.id).padStart(6)}  ${event.time}  ${event.severity.padEnd(8)}  ${event.type.padEnd(16)}  ${object}  ${event.message}${event.user !== null ? `  [${event.user}]` : ''}`;
}

export async function eventsCommand(args: EventsArgs, io: ManageIo = processIo): Promise<void> {
  const limit = wholeNumber('--limit', args.limit, 1, eventsPageMax);
  const sinceGiven = args.since === undefined ? null : wholeNumber('--since', args.since, 0, Number.MAX_SAFE_INTEGER);
  const print = (event: MdmEvent): void => {
    io.stdout.write(`${args.json ? JSON.stringify(event) : formatEvent(event)}\n`);
  };
  const client = await ApiClient.connect(args, io);
  // --follow ends as `tail -f` does: by the signal's default action (Ctrl-C), mid-poll.
  try {
    // Without --since: the last `limit`, then (following) everything after them.
    const first = await client.get<EventsPage>(`/api/events?${sinceGiven === null ? '' : `since=${sinceGiven}&`}limit=${limit}`);
    first.events.forEach(print);
    let since: number = first.events.at(-1)?.id ?? sinceGiven ?? first.lastId;
    // A page full: more may follow at once.
    let full = first.events.length === limit && args.since !== undefined;
    while (args.follow || full) {
      const page: EventsPage = await client.get<EventsPage>(`/api/events?since=${since}&limit=${limit}${full ? '' : `&wait=${eventsWaitMsMax / 1000}`}`);
      page.events.forEach(print);
      // A log that went back (another cluster's, or wiped): start over from its end.
      since = page.events.at(-1)?.id ?? (page.lastId < since ? page.lastId : since);
      full = page.events.length === limit;
    }
  } finally {
    await client.close();
  }
}
