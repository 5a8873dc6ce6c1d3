// The web dashboard's session: the REST API's own token (AdminAuth), carried in a cookie
// instead of an Authorization header, and a CSRF token bound to it.
//
//   Set-Cookie: __Host-meshblock-session=TOKEN; Path=/; HttpOnly; Secure; SameSite=Strict
//
// The cookie's value is the very token GET /api/login hands out, so a browser session is a REST
// session: it idles out, is revoked by logout and is forgotten by an MDM restart the same way.
// `__Host-` makes the browser refuse the cookie unless it is Secure, for Path=/ and without a
// Domain (no sibling host can plant one). HttpOnly keeps it from the page's scripts.
//
// CSRF: SameSite=Strict already keeps the cookie off requests other sites start; as a second
// line (older browsers, a same-site subdomain) every state-changing request authenticated by
// the cookie must carry `X-CSRF-Token: HMAC-SHA256(key, session token)`. The key is random per
// MDM process, so nothing is stored per session, and the token is useless once the session ends.
// The page gets it from the login reply or GET /ui/session (JavaScript can read a reply but not
// the cookie; another origin can read neither).

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type * as http from 'node:http';
import { RestError } from '../rest-errors.js';

export const sessionCookieName = '__Host-meshblock-session';
export const csrfHeader = 'x-csrf-token';
const csrfKeyBytes = 32;

/** Methods that change nothing: GET and HEAD need no CSRF token (and GET /api/logout is refused by cookie). */
const safeMethods: ReadonlySet<string> = new Set(['GET', 'HEAD']);

export class WebSessions {
  private readonly csrfKey = randomBytes(csrfKeyBytes);

  /** The CSRF token of a session token: 64 hex digits. */
  csrfTokenOf(sessionToken: string): string {
    return createHmac('sha256', this.csrfKey).update(sessionToken).digest('hex');
  }

  /** The Set-Cookie value that starts a session. A session cookie: gone when the browser closes. */
  cookieFor(sessionToken: string): string {
    return `${sessionCookieName}=${sessionToken}; Path=/; HttpOnly; Secure; SameSite=Strict`;
  }

  /** The Set-Cookie value that ends one. */
  clearingCookie(): string {
    return `${sessionCookieName}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0`;
  }

  /**
   * The session token a request carries in its cookie, or null without one. For a request that
   * may change something (any method but GET and HEAD, and GET /api/logout), the CSRF token must
   * come with it: without it, or with a wrong one, the request is refused (403 MB_ERR_CSRF)
   * before anything is read or done. Whether the token is live is the caller's check (AdminAuth).
   */
  tokenOf(req: http.IncomingMessage, path: string): string | null {
    const token = cookieValue(req.headers.cookie, sessionCookieName);
    if (token === null) return null;
    if (safeMethods.has(req.method ?? 'GET') && path !== '/api/logout') return token;
    this.checkCsrf(req, token);
    return token;
  }

  /** Refuses a state-changing request whose CSRF token is missing or not this session's. */
  checkCsrf(req: http.IncomingMessage, sessionToken: string): void {
    const given = req.headers[csrfHeader];
    if (typeof given !== 'string' || given === '') {
      throw new RestError('MB_ERR_CSRF', `a request that changes something needs the ${csrfHeader} header (the dashboard sends it; other clients log in with GET /api/login instead of the cookie)`, 403);
    }
    const expected = Buffer.from(this.csrfTokenOf(sessionToken), 'utf8');
    const actual = Buffer.from(given, 'utf8');
    if (actual.length !== expected.length || !timingSafeEqual(actual, expected)) throw new RestError('MB_ERR_CSRF', `the ${csrfHeader} header is not this session's (log in again)`, 403);
  }
}

/** One cookie's value from a Cookie header (RFC 6265: `a=1; b=2`), null if absent or empty. */
export function cookieValue(header: string | undefined, name: string): string | null {
  if (header === undefined) return null;
  for (const part of header.split(';')) {
    const equals = part.indexOf('=');
    if (equals === -1) continue;
    if (part.slice(0, equals).trim() !== name) continue;
    const value = part.slice(equals + 1).trim();
    return value === '' ? null : value;
  }
  return null;
}
