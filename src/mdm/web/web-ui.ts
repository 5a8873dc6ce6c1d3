// The web dashboard's server side, on the REST API's port (rest-api.ts hands it every path
// under /ui, and / itself):
//
//   GET  /                 → 302 /ui/
//   GET  /ui/              the page (web/index.html); everything else is drawn by web/app.js
//   GET  /ui/static/FILE   the client's own files (web/*.js, web/*.css)
//   GET  /ui/vendor/FILE   preact, preact/hooks, htm and uPlot, from node_modules (no CDN, no build)
//   POST /ui/login         {"username", "password"} → sets the session cookie, {"username", "csrfToken"}
//   GET  /ui/session       the live session → {"username", "csrfToken"}, else 401
//   POST /ui/logout        ends the session (needs the CSRF token) and clears the cookie
//
// The data comes from the REST API itself (/api/dashboard, /api/types/..., querySelectedStatistics),
// authenticated by the cookie instead of a token header (web-session.ts): nothing here renders
// cluster state, so the page and the API cannot disagree.
//
// Every reply carries a strict Content-Security-Policy: scripts only from this origin plus the
// page's one inline import map, allowed by its SHA-256 (no 'unsafe-inline'), no frames, no
// plugins, no other origin to connect to.
//
// On a Slave MDM the browser is sent to the Master (307 to the Master's published API address),
// so that the page it then loads talks to the MDM that decides; the session cookie is per host,
// so the user logs in there.

import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import type * as http from 'node:http';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { webLoginBodyBytesMax, webStaticFileBytesMax } from '../../common/limits.js';
import type { AdminAuth } from '../auth.js';
import { RestError, errorBody, httpStatusOf } from '../rest-errors.js';
import { WebSessions, cookieValue, sessionCookieName } from './web-session.js';

/** The package's root: dist/mdm/web/web-ui.js is three levels down (src/ under tap's loader alike). */
/** Sent by the dashboard's script on every API call (web/api.js). */
export const webClientHeader = 'x-meshblock-client';

const packageRoot = fileURLToPath(new URL('../../../', import.meta.url));

/** What /ui/vendor/ serves: the browser's module name → the file in node_modules. */
export const vendorFiles: Readonly<Record<string, string>> = {
  'preact.mjs': 'preact/dist/preact.mjs',
  'hooks.mjs': 'preact/hooks/dist/hooks.mjs',
  'htm.mjs': 'htm/dist/htm.module.js',
  'uPlot.esm.js': 'uplot/dist/uPlot.esm.js',
  'uPlot.min.css': 'uplot/dist/uPlot.min.css',
};

const contentTypes: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

/** Where a Slave sends the browser: the Master's API address. */
export interface WebMasterAddress {
  host: string;
  port: number;
}

export interface WebUiOptions {
  auth: AdminAuth;
  log: Logger;
  /**
   * Checks a password as GET /api/login does (the same delay when wrong, the same bound on
   * logins in progress, the same log lines) and returns the new session token, or throws its
   * RestError.
   */
  login: (req: http.IncomingMessage, username: string, password: string) => Promise<string>;
  /** The client's files; default: web/ of this package. */
  webRoot?: string;
  /** node_modules holding preact, htm and uplot; default: this package's. */
  modulesRoot?: string;
}

interface StaticFile {
  body: Buffer;
  contentType: string;
}

export class WebUi {
  readonly sessions = new WebSessions();
  private readonly auth: AdminAuth;
  private readonly log: Logger;
  private readonly login: WebUiOptions['login'];
  private readonly webRoot: string;
  private readonly modulesRoot: string;
  /** Files read once, on first use: they are part of the installed package and do not change under it. */
  private readonly files = new Map<string, StaticFile>();
  private contentSecurityPolicy: string | null = null;

  constructor(options: WebUiOptions) {
    this.auth = options.auth;
    this.log = options.log;
    this.login = options.login;
    this.webRoot = options.webRoot ?? path.join(packageRoot, 'web');
    this.modulesRoot = options.modulesRoot ?? path.join(packageRoot, 'node_modules');
  }

  /** Whether a path is the dashboard's (the rest is the REST API's). */
  static handles(urlPath: string): boolean {
    return urlPath === '/' || urlPath === '/ui' || urlPath.startsWith('/ui/');
  }

  /**
   * Whether a request is the dashboard's own script (it says so in webClientHeader): its 401s
   * carry no WWW-Authenticate, which would make the browser open its password prompt.
   */
  static isPageRequest(req: http.IncomingMessage): boolean {
    return req.headers[webClientHeader] === 'web';
  }

  /** The session token of a request that authenticates by cookie (CSRF checked when it may change something). */
  sessionToken(req: http.IncomingMessage, urlPath: string): string | null {
    return this.sessions.tokenOf(req, urlPath);
  }

  /** Serves one request under / or /ui; `master` non-null on a Slave: the browser goes there. */
  serve(req: http.IncomingMessage, res: http.ServerResponse, urlPath: string, master: WebMasterAddress | null): void {
    this.route(req, res, urlPath, master).catch((err: unknown) => {
      const status = httpStatusOf(err);
      if (status >= 500) this.log.error({ err, path: urlPath }, 'dashboard request failed');
      else this.log.warn({ err, path: urlPath, statusCode: status }, 'dashboard request refused');
      // Never WWW-Authenticate: a browser would answer it with its own password prompt.
      const headers = Object.fromEntries(Object.entries(err instanceof RestError ? err.headers : {}).filter(([name]) => name !== 'www-authenticate'));
      this.sendJson(res, status, errorBody(err), headers);
    });
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse, urlPath: string, master: WebMasterAddress | null): Promise<void> {
    const method = req.method ?? 'GET';
    if (master !== null) {
      const host = master.host.includes(':') ? `[${master.host}]` : master.host;
      this.send(res, 307, Buffer.from(`this MDM is a Slave: the dashboard is on the Master, https://${host}:${master.port}/ui/\n`), 'text/plain; charset=utf-8', { location: `https://${host}:${master.port}${urlPath === '/' ? '/ui/' : (req.url ?? '/ui/')}` });
      return;
    }
    if (urlPath === '/' || urlPath === '/ui') {
      this.send(res, 302, Buffer.from('/ui/\n'), 'text/plain; charset=utf-8', { location: '/ui/' });
      return;
    }
    if (urlPath === '/ui/login') {
      allow(method, 'POST');
      await this.onLogin(req, res);
      return;
    }
    if (urlPath === '/ui/session') {
      allow(method, 'GET');
      const token = cookieValue(req.headers.cookie, sessionCookieName);
      if (token === null || !this.auth.checkToken(token)) throw new RestError('MB_ERR_UNAUTHORIZED', 'no session: log in', 401);
      this.sendJson(res, 200, { username: this.auth.username, csrfToken: this.sessions.csrfTokenOf(token) });
      return;
    }
    if (urlPath === '/ui/logout') {
      allow(method, 'POST');
      const token = cookieValue(req.headers.cookie, sessionCookieName);
      if (token !== null) {
        this.sessions.checkCsrf(req, token);
        this.auth.revokeToken(token);
      }
      this.sendJson(res, 200, {}, { 'set-cookie': this.sessions.clearingCookie() });
      return;
    }
    allow(method, 'GET', 'HEAD');
    if (urlPath === '/ui/') {
      const page = this.file('index.html', path.join(this.webRoot, 'index.html'));
      this.send(res, 200, page.body, page.contentType, {}, method === 'HEAD');
      return;
    }
    const own = /^\/ui\/static\/([a-z0-9][a-z0-9-]*\.(?:js|css|svg|png))$/.exec(urlPath);
    if (own !== null) {
      const name = own[1] as string;
      const found = this.file(`static/${name}`, path.join(this.webRoot, name));
      this.send(res, 200, found.body, found.contentType, {}, method === 'HEAD');
      return;
    }
    const vendorName = /^\/ui\/vendor\/([A-Za-z0-9.-]+)$/.exec(urlPath)?.[1];
    if (vendorName !== undefined && Object.hasOwn(vendorFiles, vendorName)) {
      const vendorPath = vendorFiles[vendorName] as string;
      const found = this.file(`vendor/${vendorPath}`, path.join(this.modulesRoot, vendorPath));
      this.send(res, 200, found.body, found.contentType, {}, method === 'HEAD');
      return;
    }
    throw new RestError('MB_ERR_NO_ROUTE', `no such page: ${urlPath}`, 404);
  }

  private async onLogin(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    // A login is state-changing too: another site must not log a browser into its own session
    // (login CSRF). Browsers say where a request comes from; a request from elsewhere is refused.
    const site = req.headers['sec-fetch-site'];
    if (typeof site === 'string' && site !== 'same-origin' && site !== 'none') throw new RestError('MB_ERR_CSRF', `a login from another site (Sec-Fetch-Site: ${site}) is refused`, 403);
    const origin = req.headers.origin;
    if (typeof origin === 'string' && origin !== 'null' && new URL(origin).host !== req.headers.host) throw new RestError('MB_ERR_CSRF', `a login from another origin (${origin}) is refused`, 403);
    const body = await readLoginBody(req);
    const token = await this.login(req, body.username, body.password);
    this.sendJson(res, 200, { username: body.username, csrfToken: this.sessions.csrfTokenOf(token) }, { 'set-cookie': this.sessions.cookieFor(token) });
  }

  /** A file of the package, read once; a missing one is the installation's fault and says which. */
  private file(key: string, filePath: string): StaticFile {
    const cached = this.files.get(key);
    if (cached !== undefined) return cached;
    let body: Buffer;
    try {
      const stat = fs.statSync(filePath);
      if (!stat.isFile() || stat.size > webStaticFileBytesMax) throw new Error(stat.isFile() ? `larger than ${webStaticFileBytesMax} bytes` : 'not a file');
      body = fs.readFileSync(filePath);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' && key.startsWith('static/')) throw new RestError('MB_ERR_NO_ROUTE', `no such file: ${key}`, 404);
      // index.html and the vendored modules must be there: the package is incomplete.
      throw new RestError('MB_ERR_INTERNAL', `the dashboard's file ${filePath} cannot be read (${(err as Error).message}): is the package (web/, node_modules/) complete?`, 500);
    }
    const found = { body, contentType: contentTypes[path.extname(filePath)] ?? 'application/octet-stream' };
    if (key === 'index.html') this.contentSecurityPolicy = policyFor(body.toString('utf8'));
    this.files.set(key, found);
    return found;
  }

  private policy(): string {
    if (this.contentSecurityPolicy === null) this.file('index.html', path.join(this.webRoot, 'index.html'));
    return this.contentSecurityPolicy as string;
  }

  private send(res: http.ServerResponse, status: number, body: Buffer, contentType: string, headers: Readonly<Record<string, string>> = {}, headOnly = false): void {
    if (res.headersSent || res.destroyed) return;
    let policy: string;
    try {
      policy = this.policy();
    } catch {
      // Without the page nothing is served that a policy would guard; refuse everything.
      policy = "default-src 'none'";
    }
    res.writeHead(status, {
      'content-type': contentType,
      'content-length': body.length,
      'cache-control': 'no-cache',
      'content-security-policy': policy,
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'DENY',
      'referrer-policy': 'no-referrer',
      'cross-origin-opener-policy': 'same-origin',
      'strict-transport-security': 'max-age=31536000',
      ...headers,
    });
    res.end(headOnly ? undefined : body);
  }

  private sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Readonly<Record<string, string>> = {}): void {
    this.send(res, status, Buffer.from(JSON.stringify(body)), 'application/json; charset=utf-8', { 'cache-control': 'no-store', ...headers });
  }
}

/**
 * The page's policy: its one inline script (the import map, which browsers do not load from a
 * file) allowed by hash, everything else from this origin only.
 */
export function policyFor(page: string): string {
  const inline = [...page.matchAll(/<script type="importmap">([\s\S]*?)<\/script>/g)].map((match) => `'sha256-${createHash('sha256').update(match[1] as string).digest('base64')}'`);
  return [
    "default-src 'none'",
    `script-src 'self' ${inline.join(' ')}`.trim(),
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join('; ');
}

function allow(method: string, ...allowed: string[]): void {
  if (!allowed.includes(method)) throw new RestError('MB_ERR_METHOD_NOT_ALLOWED', `${method} is not allowed here (allowed: ${allowed.join(', ')})`, 405, { allow: allowed.join(', ') });
}

/** {"username": "...", "password": "..."}, at most webLoginBodyBytesMax bytes. */
async function readLoginBody(req: http.IncomingMessage): Promise<{ username: string; password: string }> {
  const chunks: Buffer[] = [];
  let receivedBytes = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    receivedBytes += chunk.length;
    if (receivedBytes > webLoginBodyBytesMax) throw new RestError('MB_ERR_BODY_TOO_LARGE', `body: larger than ${webLoginBodyBytesMax} bytes`, 413, { connection: 'close' });
    chunks.push(chunk);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks, receivedBytes).toString('utf8'));
  } catch (err) {
    throw new RestError('MB_ERR_MALFORMED_JSON', `body: malformed JSON (${(err as Error).message})`, 400);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new RestError('MB_ERR_INVALID_ARGUMENT', 'body: must be a JSON object {"username", "password"}', 400);
  const { username, password } = parsed as Record<string, unknown>;
  if (typeof username !== 'string' || username === '') throw new RestError('MB_ERR_INVALID_ARGUMENT', 'username: must be a non-empty string', 400);
  if (typeof password !== 'string') throw new RestError('MB_ERR_INVALID_ARGUMENT', 'password: must be a string', 400);
  return { username, password };
}
