// The meshblock dashboard: log in, then refresh every few seconds from the REST API
// (src/mdm/web/web-ui.ts serves this file; docs/web-dashboard.md).

import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, UnreachableError, get, login, logout, post, resume } from './api.js';
import { BackendView } from './backend.js';
import { DashboardView } from './dashboard.js';
import { useEventLog } from './events.js';
import { FrontendView } from './frontend.js';
import { clock } from './format.js';
import { Dialog, html } from './widgets.js';

const refreshMs = 2000;
/** Chart points kept: ten minutes at one per refresh. */
const historyPointsMax = 300;
const busiestShownMax = 5;
const listTypes = ['ProtectionDomain', 'StoragePool', 'Sds', 'Device', 'Sdc', 'Volume'];

function emptyHistory() {
  return { time: [], readIops: [], writeIops: [], readMibps: [], writeMibps: [], readLatencyMs: [], writeLatencyMs: [] };
}

/** A Bwc ({numSeconds, numOccured, totalWeightInKb}) as per-second rates. */
function rates(bwc) {
  if (!bwc || !(bwc.numSeconds > 0)) return { iops: 0, kibps: 0 };
  return { iops: bwc.numOccured / bwc.numSeconds, kibps: bwc.totalWeightInKb / bwc.numSeconds };
}

function append(history, point) {
  const next = {};
  for (const key of Object.keys(history)) next[key] = [...history[key], point[key]].slice(-historyPointsMax);
  return next;
}

function Login({ onLogin, message }) {
  const [username, setUsername] = useState('admin');
  const [password, setPassword] = useState('');
  const [error, setError] = useState(message);
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      onLogin(await login(username, password));
    } catch (err) {
      setError(err.message);
      setBusy(false);
    }
  };
  return html`<form class="login" data-testid="login" onSubmit=${submit}>
    <h1>meshblock</h1>
    <label>User name <input name="username" autocomplete="username" value=${username} onInput=${(event) => setUsername(event.target.value)} /></label>
    <label>Password <input name="password" type="password" autocomplete="current-password" value=${password} onInput=${(event) => setPassword(event.target.value)} /></label>
    ${error ? html`<p class="error" data-testid="login-error" role="alert">${error}</p>` : null}
    <button class="primary" type="submit" disabled=${busy}>${busy ? 'Logging in…' : 'Log in'}</button>
  </form>`;
}

function currentView() {
  const view = location.hash.replace(/^#\/?/, '');
  return ['dashboard', 'backend', 'frontend'].includes(view) ? view : 'dashboard';
}

function Console({ session, onLoggedOut }) {
  const [view, setView] = useState(currentView());
  const [data, setData] = useState(null);
  const [history, setHistory] = useState(emptyHistory);
  const [busiest, setBusiest] = useState([]);
  const [mdmCluster, setMdmCluster] = useState(null);
  const [link, setLink] = useState({ ok: true, sinceMs: null, lastMs: null, message: '' });
  const [dialog, setDialog] = useState(null);
  const [notice, setNotice] = useState(null);
  const latency = useRef(null); // null: not probed yet; then true or false
  // Followed while logged in, whichever view shows: the dashboard opens on what already came.
  const eventLog = useEventLog();
  const volumeCounters = useRef(null);
  // False once this console is gone (logged out): a refresh still in flight then changes nothing,
  // and in particular its 401 does not end the session of a login made since.
  const alive = useRef(true);

  useEffect(() => {
    const onHash = () => setView(currentView());
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);

  const refresh = async () => {
    const nowMs = Date.now();
    try {
      if (latency.current === null) {
        try {
          await post('/api/instances/System/action/querySelectedStatistics', { properties: ['userDataSdcReadLatency', 'userDataSdcWriteLatency'] });
          latency.current = true;
        } catch (err) {
          if (!(err instanceof ApiError) || err.status !== 400) throw err;
          latency.current = false;
        }
      }
      const ioProperties = ['userDataReadBwc', 'userDataWriteBwc', ...(latency.current ? ['userDataSdcReadLatency', 'userDataSdcWriteLatency'] : [])];
      const [dashboard, io, volumeStats, ...lists] = await Promise.all([
        get('/api/dashboard'),
        post('/api/instances/System/action/querySelectedStatistics', { properties: ioProperties }),
        post('/api/types/Volume/instances/action/querySelectedStatistics', { allIds: '', properties: ['qosRequests', 'qosInKb'] }),
        ...listTypes.map((type) => get(`/api/types/${type}/instances`)),
      ]);
      const cluster = await post('/api/instances/System/action/queryMdmCluster').catch(() => null);
      if (!alive.current) return;
      const read = rates(io.userDataReadBwc);
      const write = rates(io.userDataWriteBwc);
      // ScaleIO's latency Bwc weighs in µs: the mean is weight / count. No IO: no latency (a gap, not 0).
      const latencyMs = (bwc) => (bwc && bwc.numOccured > 0 ? bwc.totalWeightInKb / bwc.numOccured / 1000 : null);
      setHistory((old) =>
        append(old, {
          time: nowMs / 1000,
          readIops: read.iops,
          writeIops: write.iops,
          readMibps: read.kibps / 1024,
          writeMibps: write.kibps / 1024,
          readLatencyMs: latencyMs(io.userDataSdcReadLatency),
          writeLatencyMs: latencyMs(io.userDataSdcWriteLatency),
        }),
      );
      // Busiest volumes: the SDCs' request and byte counters (summed over SDCs), as rates between refreshes.
      const previous = volumeCounters.current;
      volumeCounters.current = { atMs: nowMs, stats: volumeStats };
      if (previous !== null) {
        const seconds = (nowMs - previous.atMs) / 1000;
        const names = new Map(lists[listTypes.indexOf('Volume')].map((volume) => [volume.id, volume.name]));
        const ranked = Object.entries(volumeStats)
          .map(([id, stats]) => {
            const before = previous.stats[id];
            return { id, name: names.get(id) ?? id, iops: before ? Math.max(0, stats.qosRequests - before.qosRequests) / seconds : 0, kibps: before ? Math.max(0, stats.qosInKb - before.qosInKb) / seconds : 0 };
          })
          .filter((entry) => entry.iops > 0)
          .sort((a, b) => b.iops - a.iops)
          .slice(0, busiestShownMax);
        setBusiest(ranked);
      }
      setMdmCluster(cluster);
      setData({ dashboard, lists: Object.fromEntries(listTypes.map((type, index) => [type, lists[index]])) });
      setLink({ ok: true, sinceMs: null, lastMs: nowMs, message: '' });
    } catch (err) {
      if (!alive.current) return;
      if (err instanceof ApiError && err.status === 401) {
        onLoggedOut('Your session ended (expired, logged out elsewhere, or the MDM restarted): log in again.');
        return;
      }
      const message = err instanceof UnreachableError || err instanceof ApiError ? err.message : String(err);
      setLink((old) => ({ ok: false, sinceMs: old.ok ? nowMs : old.sinceMs, lastMs: old.lastMs, message }));
    }
  };

  useEffect(() => {
    let stopped = false;
    let timer = null;
    const loop = async () => {
      await refresh();
      if (!stopped) timer = setTimeout(loop, refreshMs);
    };
    loop();
    return () => {
      stopped = true;
      alive.current = false;
      clearTimeout(timer);
    };
  }, []);

  const ask = (next) => setDialog(next);
  const closeDialog = (done) => {
    if (done) {
      setNotice(`${dialog.title}: done`);
      refresh();
    }
    setDialog(null);
  };
  const doLogout = async () => {
    try {
      await logout();
    } finally {
      onLoggedOut('Logged out.');
    }
  };

  return html`<div class="console">
    <header>
      <b class="brand">meshblock</b>
      <nav>
        ${['dashboard', 'backend', 'frontend'].map((name) => html`<a key=${name} href=${`#/${name}`} class=${view === name ? 'active' : ''} data-testid=${`nav-${name}`}>${name[0].toUpperCase() + name.slice(1)}</a>`)}
      </nav>
      <span class="link ${link.ok ? 'ok' : 'bad'}" data-testid="link-state" data-ok=${String(link.ok)}>${link.ok ? (link.lastMs ? `live · ${clock(link.lastMs)}` : 'connecting…') : `MDM not answering since ${clock(link.sinceMs)}`}</span>
      <span class="user">${session.username} <button class="small" data-testid="logout" onClick=${doLogout}>Log out</button></span>
    </header>
    ${!link.ok ? html`<div class="banner bad" data-testid="mdm-dead" role="alert">The MDM does not answer: ${link.message}. ${link.lastMs ? `What is shown is from ${clock(link.lastMs)}.` : ''} Retrying every ${refreshMs / 1000} s.</div>` : null}
    ${notice ? html`<div class="banner ok" data-testid="notice" onClick=${() => setNotice(null)}>${notice}</div>` : null}
    <main class=${link.ok ? '' : 'stale'}>
      ${data === null
        ? html`<p class="muted">Loading…</p>`
        : view === 'backend'
          ? html`<${BackendView} data=${data} />`
          : view === 'frontend'
            ? html`<${FrontendView} data=${data} ask=${ask} />`
            : html`<${DashboardView} data=${data} history=${history} busiest=${busiest} mdmCluster=${mdmCluster} latencySupported=${latency.current === true} eventLog=${eventLog} />`}
    </main>
    ${dialog !== null ? html`<${Dialog} dialog=${dialog} onClose=${closeDialog} />` : null}
  </div>`;
}

function App() {
  const [session, setSession] = useState(undefined);
  const [message, setMessage] = useState(null);
  useEffect(() => {
    resume().then(setSession, (err) => {
      setMessage(err.message);
      setSession(null);
    });
  }, []);
  if (session === undefined) return html`<p class="muted">Connecting…</p>`;
  if (session === null) return html`<${Login} message=${message} onLogin=${(reply) => setSession(reply)} />`;
  return html`<${Console} session=${session} onLoggedOut=${(why) => {
    setMessage(why);
    setSession(null);
  }} />`;
}

render(html`<${App} />`, document.getElementById('app'));
