// The MDM's REST API: HTTPS (or plain HTTP when the MDM is told so) with JSON bodies, shaped
// after the ScaleIO REST API so that ScaleIO clients can be pointed at it:
//
//   GET  /api/login                                       Basic admin:PASSWORD → "TOKEN"
//   GET  /api/logout                                      ends the session of the token used
//   GET  /api/version                                     "3.6": the ScaleIO API version we follow
//   GET  /api/types/{Type}/instances                      every instance, ScaleIO's fields
//   POST /api/types/{Type}/instances                      creates one → {"id": "..."}
//   POST /api/types/{Type}/instances/action/queryIdByKey  {"name"} → "id"
//   GET  /api/types/{Type}/instances/getByName::NAME      → "id" (ScaleIO's encodings; Domain and
//                                                         Pool as Cinder names them; Pool's NAME is PDID,NAME)
//   GET  /api/types/Sdc/instances/getByIp::IP             → "id" of the SDC registered from IP (Client too)
//   GET  /api/instances/{Type}::{id}                      one instance
//   POST /api/instances/{Type}::{id}/action/{action}      → {} (snapshotVolumes and
//                                                         removeConsistencyGroupSnapshots: ScaleIO's replies)
//   POST /api/instances/System/action/{action}            the System's actions, without its id
//   GET  /api/instances/{Type}::{id}/relationships/{Other}       children (e.g. StoragePool → Volume)
//   GET  /api/instances/{Type}::{id}/relationships/Statistics    every type: ScaleIO's properties and
//                                                         meshblock's (rest-statistics.ts, docs/rest-statistics.md)
//   POST /api/types/{Type}/instances/action/querySelectedStatistics   {properties, ids | allIds} → {id: {property: value}}
//   POST /api/instances/System/action/querySelectedStatistics   {properties} → {property: value}
//   POST /api/instances/querySelectedStatistics           {selectedStatisticsList: [{type, properties, ids | allIds}]}
//   GET  /api/dashboard                                   meshblock: capacity and health at a glance
//   POST /api/instances/System/action/queryMdmCluster     the MDM cluster (ScaleIO's MdmCluster)
//   POST /api/instances/System/action/changeMdmOwnership  {"id"?: MDM name}: a planned switch
//   GET  /api/events?since=ID&limit=N&wait=S               meshblock: the event log (events.ts,
//                                                         docs/events.md), long-polled for --follow
//
// In an MDM cluster every MDM answers: a Slave forwards each request, whole, to the Master
// (pinning the certificate the Master published in etcd), so that one address in a client's
// configuration keeps working through failovers. With no Master reachable, a Slave still
// answers logins and queryMdmCluster itself and refuses the rest with 503 (MB_ERR_NO_QUORUM
// or MB_ERR_MDM_NOT_MASTER); clients try again or move on.
//
// Types: System, ProtectionDomain, StoragePool, FaultSet, Sds, Device, Sdc, Volume, VTree
// (snapshots are Volumes of volumeType 'Snapshot'; docs/snapshots.md).
// Every call but login authenticates with the token, as ScaleIO clients do: HTTP Basic with
// the token as the password (any user name), or `Authorization: Bearer TOKEN`.
//
// This layer only validates and translates (rest-commands.ts) and renders (rest-objects.ts);
// changes go through MdmController.execute, which the state machine validates again.
// Errors have one shape: rest-errors.ts.

import { once } from 'node:events';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { assert } from '../common/assert.js';
import type { AdminAuth } from './auth.js';
import { noQuorumMessage, type RestCluster, type RestRoute } from './cluster-member.js';
import type { MdmController } from './controller.js';
import { eventText, type EventLog } from './events.js';
import { createInstance, getByNameTypeAliases, getIdByName, getSdcIdByIp, performAction, queryIdByKey, type CommandContext } from './rest-commands.js';
import { RestError, errorBody, httpStatusOf, notFoundErrorCode } from './rest-errors.js';
import { dashboard, getInstance, listInstances, relatedInstances, restRelationships, restTypes, type RestType, type SdcAddressLookup, type SdcQosLookup } from './rest-objects.js';
import { objectStatistics, querySelectedStatistics, readStatisticsList, readStatisticsQuery, systemSelectedStatistics, type StatisticsSources } from './rest-statistics.js';
import { WebUi } from './web/web-ui.js';
import { eventsPageMax, eventsWaitMsMax, loginFailureDelayMs, loginsInflightMax, restBodyBytesMax, restForwardRecheckMs, restDiscardBytesMax, restHeadersTimeoutMs, restRequestTimeoutMs } from '../common/limits.js';

/** The ScaleIO REST API version whose shapes this API follows. */
export const scaleIoApiVersion = '3.6';

assert(restDiscardBytesMax >= restBodyBytesMax, 'the discard bound is above the body bound');
assert(restHeadersTimeoutMs <= restRequestTimeoutMs, 'headers arrive within the request timeout');

export interface RestApiOptions {
  controller: MdmController;
  /** A child logger naming the component, e.g. root.child({ component: 'rest-api' }). */
  log: Logger;
  auth: AdminAuth;
  /** Null: plain HTTP (only sensible on loopback, or behind a TLS proxy). */
  tls: { cert: Buffer; key: Buffer } | null;
  /** The clock for creation times; Date.now unless a test drives time. */
  nowMs?: () => number;
  /** The MDM cluster this MDM belongs to (where requests go; queryMdmCluster). Default: served here. */
  cluster?: RestCluster;
  /** The event log: GET /api/events, and where refused logins and changes are recorded. Absent: neither. */
  events?: EventLog;
}

/** Marks a request a Slave forwarded, so that two Slaves never forward it in a loop. */
const forwardedHeader = 'x-meshblock-forwarded-by';
/** The MDM that served a request, and the term (etcd revision of its mastership) it served it in. */
export const answeredByHeader = 'x-meshblock-mdm';
export const termHeader = 'x-meshblock-term';

interface Reply {
  status: number;
  body: unknown;
}

interface RequestContext {
  req: http.IncomingMessage;
  log: Logger;
  /** The token the request authenticated with (for logout). */
  token: string;
  params: string[];
  body: unknown;
}

interface Route {
  pattern: RegExp;
  methods: Partial<Record<'GET' | 'POST', (context: RequestContext) => Promise<Reply> | Reply>>;
}

type Credentials = { scheme: 'basic'; username: string; password: string } | { scheme: 'bearer'; token: string };

export class RestApi {
  private readonly controller: MdmController;
  private readonly cluster: RestCluster | null;
  private readonly log: Logger;
  private readonly auth: AdminAuth;
  private readonly server: http.Server;
  private readonly commandContext: CommandContext;
  private readonly routes: Route[];
  /** The web dashboard (/ and /ui/...; src/mdm/web/), behind the same login. */
  private readonly web: WebUi;
  /** Aborts failed-login delays when the API is destroyed. */
  private readonly lifetime = new AbortController();
  /** Ends the long polls of GET /api/events when the API closes (they would hold close() up). */
  private readonly polls = new AbortController();
  private readonly events: EventLog | null;
  private loginsInflight = 0;
  private requestCount = 0;
  private closing = false;

  constructor(options: RestApiOptions) {
    this.controller = options.controller;
    this.cluster = options.cluster ?? null;
    this.events = options.events ?? null;
    // Credentials are never logged on purpose; the redaction is a second line of defence
    // for an `err` or object that happens to carry one.
    this.log = options.log.child({}, { redact: ['password', 'token', 'authorization', '*.password', '*.token', '*.authorization', '*.headers.authorization'] });
    this.auth = options.auth;
    this.commandContext = { controller: options.controller, nowMs: options.nowMs ?? Date.now };
    const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => this.onRequest(req, res);
    const serverOptions = { requestTimeout: restRequestTimeoutMs, headersTimeout: restHeadersTimeoutMs };
    this.server = options.tls === null ? http.createServer(serverOptions, onRequest) : https.createServer({ ...serverOptions, cert: options.tls.cert, key: options.tls.key }, onRequest);
    this.server.on('tlsClientError', (err: Error) => this.log.debug({ err }, 'TLS handshake failed'));
    this.server.on('clientError', (err: Error, socket) => {
      this.log.debug({ err }, 'malformed HTTP request');
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      else socket.destroy();
    });
    this.routes = this.makeRoutes();
    this.web = new WebUi({ auth: this.auth, log: this.log.child({ component: 'web-ui' }), login: async (req, username, password) => (await this.onLogin(req, { scheme: 'basic', username, password }, this.log, performance.now())).body as string });
  }

  /** Listens; resolves with the bound address (port 0 picks a free one). */
  async listen(host: string, port: number): Promise<AddressInfo> {
    const listening = once(this.server, 'listening');
    this.server.listen(port, host);
    await listening;
    const address = this.server.address() as AddressInfo;
    this.log.info({ address: address.address, port: address.port, tls: this.server instanceof https.Server }, 'REST API listening');
    return address;
  }

  /** Stops accepting, lets requests in progress finish, then closes every connection. */
  async close(): Promise<void> {
    if (!this.server.listening) return;
    this.closing = true;
    this.polls.abort();
    const closed = new Promise<void>((resolve, reject) => this.server.close((err) => (err === undefined ? resolve() : reject(err))));
    this.server.closeIdleConnections();
    await closed;
  }

  /** Cuts every connection now. */
  destroy(): void {
    this.closing = true;
    this.lifetime.abort();
    this.polls.abort();
    this.server.close();
    this.server.closeAllConnections();
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const startMs = performance.now();
    this.requestCount += 1;
    const path = (req.url ?? '/').split('?', 1)[0] as string;
    const log = this.log.child({ requestId: this.requestCount, method: req.method, path });
    res.on('finish', () => {
      if (log.isLevelEnabled('debug')) log.debug({ statusCode: res.statusCode, durationMs: Math.round(performance.now() - startMs) }, 'request');
      // Connections kept alive after a response are closed once the API is closing.
      if (this.closing) this.server.closeIdleConnections();
    });
    const route = this.cluster?.route() ?? { kind: 'local' as const };
    if (WebUi.handles(path)) {
      this.web.serve(req, res, path, route.kind === 'forward' ? route : null);
      return;
    }
    if (route.kind === 'forward' && req.headers[forwardedHeader] === undefined && !this.closing) {
      this.forward(req, res, route, log);
      return;
    }
    const refusal = route.kind === 'local' ? null : route.kind === 'refuse' ? route : { code: 'MB_ERR_MDM_NOT_MASTER' as const, message: `this MDM is not the Master (${route.name} is; the request was forwarded once already)` };
    // Which MDM answered, and under which mastership: clients (and the tests' history
    // checks) can tell who acknowledged what.
    const identity = this.cluster?.identity();
    if (identity !== undefined) {
      res.setHeader(answeredByHeader, identity.name);
      res.setHeader(termHeader, identity.term);
    }
    this.handle(req, path, log, startMs, refusal)
      .then(
        (reply) => this.send(res, reply.status, reply.body),
        (err: unknown) => {
          const status = httpStatusOf(err);
          if (status >= 500) log.error({ err }, 'request failed');
          else log.warn({ err, statusCode: status }, 'request refused');
          const headers = err instanceof RestError ? err.headers : {};
          this.send(res, status, errorBody(err), headers);
        },
      )
      .catch((err: unknown) => {
        // Only a bug gets here (send() itself threw): this connection goes, the API stays.
        log.error({ err }, 'could not send a reply');
        res.destroy();
      });
  }

  private send(res: http.ServerResponse, status: number, body: unknown, headers: Readonly<Record<string, string>> = {}): void {
    if (res.headersSent || res.destroyed) return;
    const text = JSON.stringify(body ?? {});
    res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(text),
      'cache-control': 'no-store',
      ...(this.closing ? { connection: 'close' } : {}),
      ...headers,
    });
    res.end(text);
  }

  /**
   * Sends the request to the Master as it came and its answer back as it comes. The Master's
   * certificate is the one it published in etcd (pinned: no name check, the exact key).
   */
  private forward(req: http.IncomingMessage, res: http.ServerResponse, target: Extract<RestRoute, { kind: 'forward' }>, log: Logger): void {
    const headers = { ...req.headers, [forwardedHeader]: 'slave' };
    delete headers.host;
    const upstream = https.request(
      {
        host: target.host,
        port: target.port,
        method: req.method,
        path: req.url,
        headers,
        ca: target.certificate,
        checkServerIdentity: () => undefined,
        timeout: restRequestTimeoutMs,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
        answer.on('error', () => res.destroy());
      },
    );
    upstream.on('timeout', () => upstream.destroy(new Error(`no answer within ${restRequestTimeoutMs} ms`)));
    // A Master that stops answering (paused, cut off) is replaced within a lease: once this
    // MDM sees another Master (or becomes it), the request waiting on the old one is given
    // up with a 503 the client retries, instead of waiting out the timeout.
    const watch = setInterval(() => {
      const now = this.cluster?.route();
      if (now?.kind !== 'forward' || now.host !== target.host || now.port !== target.port) upstream.destroy(new Error('the Master changed while the request waited for it'));
    }, restForwardRecheckMs);
    upstream.on('close', () => clearInterval(watch));
    upstream.on('error', (err) => {
      log.warn({ err, master: target.name }, 'could not forward to the Master');
      const unreachable = `the last known Master (${target.name}, ${target.host}:${target.port}) did not answer: ${err.message}`;
      // With etcd silent too, the Master this MDM knows of may be long gone: say why nothing can change.
      const refusal = target.etcdError === null ? new RestError('MB_ERR_MDM_NOT_MASTER', `this MDM is a Slave and ${unreachable}; try again`, 503) : new RestError('MB_ERR_NO_QUORUM', `${noQuorumMessage(target.etcdError)}; ${unreachable}`, 503);
      this.send(res, 503, errorBody(refusal));
    });
    req.pipe(upstream);
  }

  private async handle(req: http.IncomingMessage, path: string, log: Logger, startMs: number, refusal: { code: 'MB_ERR_NO_QUORUM' | 'MB_ERR_MDM_NOT_MASTER'; message: string } | null): Promise<Reply> {
    if (this.closing) throw new RestError('MB_ERR_SHUTTING_DOWN', 'the MDM is shutting down', 503, { connection: 'close' });
    // Without a Master this MDM answers only logins and the cluster query (its own view).
    if (refusal !== null && path !== '/api/login' && path !== queryMdmClusterPath) throw new RestError(refusal.code, refusal.message, 503, { 'retry-after': '1' });
    const credentials = parseAuthorization(req.headers.authorization);
    if (path === '/api/login') {
      // Before reading any body: nothing is read from a client that has not logged in.
      if (req.method !== 'GET') throw new RestError('MB_ERR_METHOD_NOT_ALLOWED', `${req.method} is not allowed on /api/login (use GET)`, 405, { allow: 'GET' });
      return this.onLogin(req, credentials, log, startMs);
    }
    // Without an Authorization header, the dashboard's session cookie (CSRF-checked: web-session.ts).
    const token = credentials === null ? this.web.sessionToken(req, path) : credentials.scheme === 'bearer' ? credentials.token : credentials.password;
    if (token === null || !this.auth.checkToken(token)) {
      throw new RestError('MB_ERR_UNAUTHORIZED', token === null ? 'log in first: GET /api/login with Basic credentials, then send the token' : 'the token is not valid (expired, logged out, or from before an MDM restart); log in again', 401, WebUi.isPageRequest(req) ? {} : {
        'www-authenticate': 'Basic realm="meshblock"',
      });
    }
    const { route, params } = this.match(path);
    const handler = route.methods[req.method as 'GET' | 'POST'];
    if (handler === undefined) {
      const allow = Object.keys(route.methods).join(', ');
      throw new RestError('MB_ERR_METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${path} (allowed: ${allow})`, 405, { allow });
    }
    const body = await readJsonBody(req);
    if (req.method !== 'POST' || this.events === null || !isChange(path)) return handler({ req, log, token, params, body });
    // The event says what changed and who changed it; the name is read before (a removal takes it).
    const subject = changeSubject(path, params, (typeName, id) => {
      const found = (restTypes as readonly string[]).includes(typeName) ? getInstance(this.controller.state, typeName as RestType, id) : null;
      const name = (found as { name?: unknown } | null)?.name;
      return typeof name === 'string' ? name : null;
    });
    const reply = await handler({ req, log, token, params, body });
    const id = subject.id ?? (reply.body as { id?: unknown } | null)?.id;
    await this.events.record({
      severity: 'info',
      type: 'configChanged',
      object: `${subject.type}::${typeof id === 'string' ? id : ''}`,
      objectName: subject.name ?? (typeof (body as { name?: unknown } | null)?.name === 'string' ? ((body as { name: string }).name) : null),
      message: `${subject.action}${subject.name !== null ? ` '${subject.name}'` : ''}${changeDetails(body)} from ${req.socket.remoteAddress ?? '?'}`,
      user: this.auth.username,
    });
    return reply;
  }

  private match(path: string): { route: Route; params: string[] } {
    for (const route of this.routes) {
      const match = route.pattern.exec(path);
      if (match === null) continue;
      try {
        return { route, params: match.slice(1).map((param) => decodeURIComponent(param)) };
      } catch {
        throw new RestError('MB_ERR_NO_ROUTE', `no such resource: ${path} (bad percent-encoding)`, 404);
      }
    }
    throw new RestError('MB_ERR_NO_ROUTE', `no such resource: ${path}`, 404);
  }

  private async onLogin(req: http.IncomingMessage, credentials: Credentials | null, log: Logger, startMs: number): Promise<Reply> {
    if (credentials === null || credentials.scheme !== 'basic') {
      throw new RestError('MB_ERR_UNAUTHORIZED', 'log in with HTTP Basic credentials (user name and password)', 401, { 'www-authenticate': 'Basic realm="meshblock"' });
    }
    if (this.loginsInflight >= loginsInflightMax) {
      throw new RestError('MB_ERR_TOO_MANY_LOGINS', `${loginsInflightMax} logins are already in progress; try again`, 429, { 'retry-after': '1' });
    }
    this.loginsInflight += 1;
    try {
      if (await this.auth.verifyPassword(credentials.username, credentials.password)) {
        log.info({ username: credentials.username, remoteAddress: req.socket.remoteAddress }, 'login');
        return { status: 200, body: this.auth.issueToken() };
      }
      // Never the password: only who tried, from where.
      log.warn({ username: credentials.username, remoteAddress: req.socket.remoteAddress }, 'login refused: wrong user name or password');
      // Recorded while the delay runs: a refused login costs its caller the delay either way.
      const username = eventText(credentials.username, 64);
      await this.events?.record({ severity: 'warning', type: 'loginRefused', object: `User::${username}`, objectName: username, message: `login refused for user '${username}' from ${req.socket.remoteAddress ?? '?'}: wrong user name or password`, user: username });
      const remainingMs = loginFailureDelayMs - (performance.now() - startMs);
      if (remainingMs > 0) {
        try {
          await sleep(remainingMs, undefined, { signal: this.lifetime.signal });
        } catch {
          // Destroyed while waiting: the connection is gone anyway.
        }
      }
      throw new RestError('MB_ERR_UNAUTHORIZED', 'wrong user name or password', 401, { 'www-authenticate': 'Basic realm="meshblock"' });
    } finally {
      this.loginsInflight -= 1;
    }
  }

  /**
   * GET /api/events: `since` (an id: the events after it; else the last `limit`), `limit`
   * (1 to eventsPageMax), `wait` (seconds, at most eventsWaitMsMax: with nothing after
   * `since`, answer when something comes). → { events: [...], lastId } — lastId is the log's
   * last id, so a follower goes on from there even when `events` is empty.
   */
  private async listEvents(req: http.IncomingMessage): Promise<{ events: unknown[]; lastId: number }> {
    const events = this.events;
    if (events === null) throw new RestError('MB_ERR_NO_ROUTE', 'this MDM keeps no event log', 404);
    const query = new URL(req.url ?? '/', 'http://localhost').searchParams;
    for (const name of query.keys()) if (!['since', 'limit', 'wait'].includes(name)) throw new RestError('MB_ERR_INVALID_ARGUMENT', `${eventText(name, 32)}: unknown parameter (since, limit, wait)`, 400);
    const since = integerParameter(query, 'since', 0, Number.MAX_SAFE_INTEGER);
    const limit = integerParameter(query, 'limit', 1, eventsPageMax) ?? eventsPageMax;
    const waitSeconds = integerParameter(query, 'wait', 0, eventsWaitMsMax / 1000) ?? 0;
    if (since !== null && waitSeconds > 0) await events.waitFor(since, waitSeconds * 1000, this.polls.signal);
    return { events: events.list(since, limit), lastId: events.lastEventId };
  }

  private makeRoutes(): Route[] {
    const state = (): MdmController['state'] => this.controller.state;
    const sdcQos: SdcQosLookup = (sdcId) => this.controller.sdcQosStats(sdcId);
    const sdcAddress: SdcAddressLookup = (sdcId) => this.controller.sdcAddress?.(sdcId) ?? null;
    const type = (name: string): RestType => {
      if (!(restTypes as readonly string[]).includes(name)) throw new RestError('MB_ERR_NO_ROUTE', `no type '${name}' (types: ${restTypes.join(', ')})`, 404);
      return name as RestType;
    };
    const existing = (typeName: string, id: string): RestType => {
      const found = type(typeName);
      // ScaleIO's number for what is missing: Cinder deletes a volume already gone by its 79.
      if (getInstance(state(), found, id) === null) throw new RestError('MB_ERR_NOT_FOUND', `no ${found} with id ${id}`, 404, {}, notFoundErrorCode(found));
      return found;
    };
    const ok = (body: unknown): Reply => ({ status: 200, body });
    const instance = '/api/instances/([A-Za-z]+)::([^/]+)';
    const statisticsSources = (): StatisticsSources => ({ state: state(), sdsStats: (sdsId) => this.controller.sdsStats(sdsId), sdcQos, rebuildStatus: () => this.controller.rebuildStatus(), sdcLatency: (sdcId, volumeId) => this.controller.sdcLatencyWindow?.(sdcId, volumeId) });
    const cluster = (): Promise<unknown> => (this.cluster === null ? Promise.reject(new RestError('MB_ERR_NO_ROUTE', 'this MDM has no cluster view', 404)) : this.cluster.query());
    return [
      { pattern: new RegExp(`^${queryMdmClusterPath}$`), methods: { GET: async () => ok(await cluster()), POST: async () => ok(await cluster()) } },
      {
        pattern: /^\/api\/instances\/System(?:::[^/]+)?\/action\/changeMdmOwnership$/,
        methods: {
          POST: async ({ body }) => {
            if (this.cluster === null) throw new RestError('MB_ERR_NO_ROUTE', 'this MDM has no cluster', 404);
            const to = readOwnershipTarget(body);
            return ok({ master: await this.cluster.switchOwnership(to) });
          },
        },
      },
      {
        pattern: /^\/api\/logout$/,
        methods: {
          GET: ({ token }) => {
            this.auth.revokeToken(token);
            return ok({});
          },
        },
      },
      { pattern: /^\/api\/version$/, methods: { GET: () => ok(scaleIoApiVersion) } },
      { pattern: /^\/api\/events$/, methods: { GET: async ({ req }) => ok(await this.listEvents(req)) } },
      { pattern: /^\/api\/dashboard$/, methods: { GET: () => ok(dashboard(state(), (sdsId) => this.controller.sdsStats(sdsId), this.controller.rebuildStatus(), sdcQos)) } },
      {
        pattern: /^\/api\/types\/([A-Za-z]+)\/instances$/,
        methods: {
          GET: ({ params }) => ok(listInstances(state(), type(params[0] as string), sdcQos, this.controller.fillDefaults?.(), sdcAddress)),
          POST: async ({ params, body }) => ok(await createInstance(this.commandContext, type(params[0] as string), body ?? {})),
        },
      },
      // Statistics (rest-statistics.ts): by type, the System's own, and ScaleIO's several-types form.
      {
        pattern: /^\/api\/types\/([A-Za-z]+)\/instances\/action\/querySelectedStatistics$/,
        methods: { POST: ({ params, body }) => ok(querySelectedStatistics(statisticsSources(), type(params[0] as string), readStatisticsQuery(body, params[0] === 'System'))) },
      },
      {
        pattern: /^\/api\/instances\/System(::[^/]+|)\/action\/querySelectedStatistics$/,
        methods: { POST: ({ params, body }) => ok(systemSelectedStatistics(statisticsSources(), params[0], body)) },
      },
      { pattern: /^\/api\/instances\/querySelectedStatistics$/, methods: { POST: ({ body }) => ok(readStatisticsList(statisticsSources(), body, type)) } },
      {
        pattern: /^\/api\/types\/([A-Za-z]+)\/instances\/action\/queryIdByKey$/,
        methods: { POST: ({ params, body }) => ok(queryIdByKey(this.commandContext, type(params[0] as string), body ?? {})) },
      },
      {
        // ScaleIO's lookup by name; a trailing '/' as os-brick writes its other lookups.
        pattern: /^\/api\/types\/([A-Za-z]+)\/instances\/getByName::([^/]+)\/?$/,
        methods: { GET: ({ params }) => ok(getIdByName(this.commandContext, type(Object.hasOwn(getByNameTypeAliases, params[0] as string) ? (getByNameTypeAliases[params[0] as string] as string) : (params[0] as string)), params[1] as string)) },
      },
      {
        pattern: /^\/api\/types\/(?:Sdc|Client)\/instances\/getByIp::([^/]+)\/?$/,
        methods: { GET: ({ params }) => ok(getSdcIdByIp(this.commandContext, params[0] as string)) },
      },
      {
        pattern: new RegExp(`^${instance}$`),
        methods: {
          GET: ({ params }) => ok(getInstance(state(), existing(params[0] as string, params[1] as string), params[1] as string, sdcQos, this.controller.fillDefaults?.(), sdcAddress)),
        },
      },
      {
        pattern: new RegExp(`^${instance}/action/([A-Za-z]+)$`),
        methods: {
          POST: async ({ params, body }) => {
            const [typeName, id, action] = params as [string, string, string];
            return ok(await performAction(this.commandContext, existing(typeName, id), id, action, body ?? {}));
          },
        },
      },
      {
        // The System's actions without its id, as Cinder's PowerFlex driver calls snapshotVolumes.
        pattern: /^\/api\/instances\/System\/action\/([A-Za-z]+)$/,
        methods: { POST: async ({ params, body }) => ok(await performAction(this.commandContext, 'System', state().model.clusterId, params[0] as string, body ?? {})) },
      },
      {
        pattern: new RegExp(`^${instance}/relationships/([A-Za-z]+)$`),
        methods: {
          GET: ({ params }) => {
            const [typeName, id, other] = params as [string, string, string];
            const found = existing(typeName, id);
            if (other === 'Statistics') return ok(objectStatistics(statisticsSources(), found, id));
            const children = restRelationships[found];
            if (children === undefined || !Object.hasOwn(children, other)) {
              const known = [...Object.keys(children ?? {}), 'Statistics'];
              throw new RestError('MB_ERR_NO_ROUTE', `${found} has no relationship '${other}'${known.length > 0 ? ` (relationships: ${known.join(', ')})` : ''}`, 404);
            }
            return ok(relatedInstances(state(), found, id, other as RestType, sdcQos, this.controller.fillDefaults?.(), sdcAddress));
          },
        },
      },
    ];
  }
}

const queryMdmClusterPath = '/api/instances/System/action/queryMdmCluster';

/** A POST that changes something (everything but the query actions: statistics, ids, the MDM cluster). */
function isChange(path: string): boolean {
  return !/\/action\/query[A-Za-z]*$/.test(path) && !/\/querySelectedStatistics$/.test(path);
}

/** What a changing POST is about: its type, id (when in the path), action and the object's name now. */
function changeSubject(path: string, params: readonly string[], nameOf: (type: string, id: string) => string | null): { type: string; id: string | null; action: string; name: string | null } {
  const created = /^\/api\/types\/([A-Za-z]+)\/instances$/.exec(path);
  if (created !== null) return { type: created[1] as string, id: null, action: `add ${created[1] as string}`, name: null };
  const onInstance = /^\/api\/instances\/([A-Za-z]+)::[^/]+\/action\/([A-Za-z]+)$/.exec(path);
  if (onInstance !== null) {
    const type = onInstance[1] as string;
    const id = params[1] ?? '';
    return { type, id, action: `${onInstance[2] as string} on ${type}`, name: nameOf(type, id) };
  }
  const action = /\/action\/([A-Za-z]+)$/.exec(path)?.[1] ?? path;
  return { type: 'System', id: null, action: `${action} on System`, name: null };
}

/** The body's plain fields, for the event's message; none that could hold a secret. */
function changeDetails(body: unknown): string {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return '';
  const shown = Object.entries(body as Record<string, unknown>)
    .filter(([key, value]) => !/pass|secret|key|token|cert/i.test(key) && (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean'))
    .map(([key, value]) => `${key}=${JSON.stringify(value)}`);
  return shown.length === 0 ? '' : ` (${shown.join(', ')})`;
}

/** A query parameter that must be a whole number in [min, max] when given. */
function integerParameter(query: URLSearchParams, name: string, min: number, max: number): number | null {
  const text = query.get(name);
  if (text === null) return null;
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new RestError('MB_ERR_INVALID_ARGUMENT', `${name}: must be a whole number from ${min} to ${max}, got '${eventText(text, 32)}'`, 400);
  }
  return value;
}

/** changeMdmOwnership's body: ScaleIO's {"id": ...} (our MDM ids are their names), or none for any Slave. */
function readOwnershipTarget(body: unknown): string | null {
  if (body === undefined || body === null) return null;
  if (typeof body !== 'object' || Array.isArray(body)) throw new RestError('MB_ERR_INVALID_ARGUMENT', 'body: must be a JSON object like {"id": "mdm2"}', 400);
  const id = (body as Record<string, unknown>)['id'] ?? (body as Record<string, unknown>)['name'];
  if (id === undefined) return null;
  if (typeof id !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}$/.test(id)) throw new RestError('MB_ERR_INVALID_ARGUMENT', 'id: must be the name of an MDM', 400);
  return id;
}

/** Basic USER:PASSWORD or Bearer TOKEN; null when absent or unreadable. */
function parseAuthorization(header: string | undefined): Credentials | null {
  if (header === undefined) return null;
  const match = /^(\S+)\s+(\S+)$/.exec(header.trim());
  if (match === null) return null;
  const scheme = (match[1] as string).toLowerCase();
  const value = match[2] as string;
  if (scheme === 'bearer') return { scheme: 'bearer', token: value };
  if (scheme !== 'basic') return null;
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon === -1) return null;
  return { scheme: 'basic', username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/**
 * Reads the body within restBodyBytesMax and parses it as JSON; undefined when empty. A body
 * over the limit is dropped as it arrives (up to restDiscardBytesMax) and answered 413.
 */
async function readJsonBody(req: http.IncomingMessage): Promise<unknown> {
  const declared = req.headers['content-length'];
  const tooLarge = (): RestError => new RestError('MB_ERR_BODY_TOO_LARGE', `body: larger than ${restBodyBytesMax} bytes`, 413, { connection: 'close' });
  if (declared !== undefined && Number(declared) > restDiscardBytesMax) {
    req.pause();
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let receivedBytes = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      receivedBytes += chunk.length;
      if (receivedBytes > restDiscardBytesMax) throw tooLarge();
      if (receivedBytes <= restBodyBytesMax) chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof RestError) throw err;
    // The client went away mid-body: nobody will read the reply, but say what happened.
    throw new RestError('MB_ERR_BODY_INCOMPLETE', `body: the connection ended after ${receivedBytes} bytes (${(err as Error).message})`, 400);
  }
  if (receivedBytes > restBodyBytesMax) throw tooLarge();
  if (receivedBytes === 0) return undefined;
  const text = Buffer.concat(chunks, receivedBytes).toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new RestError('MB_ERR_MALFORMED_JSON', `body: malformed JSON (${(err as Error).message})`, 400);
  }
}
