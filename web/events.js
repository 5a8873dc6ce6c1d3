// The event log on the dashboard (docs/events.md): the last events, then every new one as it
// comes, by long-polling GET /api/events?since=ID&wait=S. One request is open at a time; it
// answers as soon as an event is recorded, or empty after `wait` seconds, and the next one
// goes on from the log's lastId, so nothing is missed or shown twice.

import { useEffect, useState } from 'preact/hooks';
import { ApiError, get } from './api.js';
import { clock } from './format.js';
import { html } from './widgets.js';

/** Events shown: the newest, as the log's first page. */
const eventsShownMax = 50;
/** Seconds a long poll waits for an event (the API allows 25). */
const waitSeconds = 20;
/** After a failure (MDM down, network), the next try. */
const retryMs = 3000;

/**
 * The event log as the page knows it: `{ state, events, message }`, state 'loading', 'live',
 * 'retrying' (the last request failed) or 'none' (this MDM keeps no log: 404). Stops when the
 * component using it goes (logout), aborting the poll in flight.
 */
export function useEventLog() {
  const [log, setLog] = useState({ state: 'loading', events: [], message: '' });
  useEffect(() => {
    const abort = new AbortController();
    let timer = null;
    let lastId = null;
    const poll = async () => {
      try {
        const path = lastId === null ? `/api/events?limit=${eventsShownMax}` : `/api/events?since=${lastId}&limit=${eventsShownMax}&wait=${waitSeconds}`;
        const reply = await get(path, abort.signal);
        if (abort.signal.aborted) return;
        lastId = reply.lastId;
        setLog((old) => ({ state: 'live', events: [...old.events, ...reply.events].slice(-eventsShownMax), message: '' }));
        timer = setTimeout(poll, 0);
      } catch (err) {
        if (abort.signal.aborted) return;
        if (err instanceof ApiError && err.status === 404) {
          setLog({ state: 'none', events: [], message: err.message });
          return;
        }
        // A 401 ends the session: the console's refresh sees it too and returns to the login form.
        setLog((old) => ({ ...old, state: 'retrying', message: err.message }));
        timer = setTimeout(poll, retryMs);
      }
    };
    poll();
    return () => {
      abort.abort();
      clearTimeout(timer);
    };
  }, []);
  return log;
}

const severityClass = { info: 'muted', warning: 'warn', error: 'bad', critical: 'bad' };

export function EventsPanel({ log }) {
  const newestFirst = [...log.events].reverse();
  return html`<section class="panel events" data-testid="events" data-state=${log.state} data-last-id=${log.events.length > 0 ? log.events[log.events.length - 1].id : ''}>
    <h2>Events <small>${log.state === 'live' ? 'live' : log.state === 'retrying' ? `retrying: ${log.message}` : log.state === 'none' ? '' : 'loading…'}</small></h2>
    ${log.state === 'none'
      ? html`<p class="muted">This MDM keeps no event log (${log.message}).</p>`
      : newestFirst.length === 0
        ? html`<p class="muted">No events yet.</p>`
        : html`<div class="events-list"><table>
            ${newestFirst.map(
              (event) => html`<tr key=${event.id} data-testid="event" data-event-type=${event.type} data-event-object=${event.objectName ?? ''} data-event-id=${event.id}>
                <td class="muted" title=${event.time}>${clock(Date.parse(event.time))}</td>
                <td class=${severityClass[event.severity] ?? ''}>${event.severity}</td>
                <td>${event.type}</td>
                <td>${event.objectName ?? event.object}</td>
                <td>${event.message}${event.user ? html` <small>(${event.user})</small>` : null}</td>
              </tr>`,
            )}
          </table></div>`}
  </section>`;
}
