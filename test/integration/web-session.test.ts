// The web dashboard's server side over a real HTTPS socket, without a browser (quick; the
// browser's own view is web-dashboard.test.ts): the REST API (in this process, a test
// controller behind it: test/helpers/rest.ts) serving the page, its files and the session.
// Proves: the login sets an HttpOnly, Secure, SameSite=Strict __Host- cookie and answers a
// wrong password late and without WWW-Authenticate (no browser prompt); the cookie
// authenticates API reads; a change needs the CSRF token (none, a wrong one and another
// session's are refused, 403 MB_ERR_CSRF, and nothing is made); a login from another site is
// refused; logout ends the session; the page, its scripts and the vendored modules are served
// under a Content-Security-Policy without unsafe-inline whose hash matches the page's import
// map; nothing outside the listed files is served.

import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import t from 'tap';
import { call, populatedApi, testPassword, type Response } from '../helpers/rest.js';

const cookieName = '__Host-meshblock-session';

function sessionCookie(reply: Response): string {
  const header = reply.headers['set-cookie'];
  const line = (Array.isArray(header) ? header : [header ?? '']).find((entry) => entry.startsWith(`${cookieName}=`));
  if (line === undefined) throw new Error(`no session cookie in ${JSON.stringify(reply.headers)}`);
  return line;
}

t.test('the dashboard\'s session: cookie, CSRF, logout', async (t) => {
  const { api, pool } = await populatedApi(t);
  const loginAs = (password: string, headers: Record<string, string> = {}): Promise<Response> => call(api, 'POST', '/ui/login', { body: { username: 'admin', password }, headers });

  const startMs = performance.now();
  const wrong = await loginAs('not the password');
  const elapsedMs = performance.now() - startMs;
  t.match(wrong, { status: 401, body: { code: 'MB_ERR_UNAUTHORIZED' } }, 'a wrong password: 401');
  t.ok(elapsedMs >= 900, `answered after ${Math.round(elapsedMs)} ms (the REST login's delay)`);
  t.equal(wrong.headers['www-authenticate'], undefined, 'without WWW-Authenticate (a browser would prompt)');
  t.equal(wrong.headers['set-cookie'], undefined, 'and no cookie');

  t.match(await loginAs(testPassword, { origin: 'https://evil.example' }), { status: 403, body: { code: 'MB_ERR_CSRF' } }, 'a login from another origin: 403');
  t.match(await loginAs(testPassword, { 'sec-fetch-site': 'cross-site' }), { status: 403, body: { code: 'MB_ERR_CSRF' } }, 'a login another site started: 403');

  const good = await loginAs(testPassword);
  t.equal(good.status, 200, 'the right password: 200');
  const cookieLine = sessionCookie(good);
  t.match(cookieLine, /; Path=\/; HttpOnly; Secure; SameSite=Strict$/, `the cookie: ${cookieLine.replace(/=[0-9a-f]+;/, '=…;')}`);
  const cookie = cookieLine.split(';', 1)[0] as string;
  const csrfToken = (good.body as { csrfToken: string }).csrfToken;
  t.match(csrfToken, /^[0-9a-f]{64}$/, 'the reply carries the CSRF token');
  t.same(await call(api, 'GET', '/ui/session', { headers: { cookie } }).then((reply) => reply.body), { username: 'admin', csrfToken }, 'GET /ui/session gives the same token back');

  t.equal((await call(api, 'GET', '/api/dashboard', { headers: { cookie } })).status, 200, 'the cookie authenticates a read');
  const page = { cookie, 'x-meshblock-client': 'web' };
  const noCookie = await call(api, 'GET', '/api/dashboard', { headers: { 'x-meshblock-client': 'web' } });
  t.match(noCookie, { status: 401 }, 'no cookie: 401');
  t.equal(noCookie.headers['www-authenticate'], undefined, '... without WWW-Authenticate for the page\'s own requests');
  t.ok((await call(api, 'GET', '/api/dashboard')).headers['www-authenticate'], 'other clients still get WWW-Authenticate');

  const volume = { name: 'web1', volumeSizeInKb: 64 * 1024, storagePoolId: pool };
  t.match(await call(api, 'POST', '/api/types/Volume/instances', { body: volume, headers: page }), { status: 403, body: { code: 'MB_ERR_CSRF' } }, 'a change without the CSRF token: 403');
  t.match(await call(api, 'POST', '/api/types/Volume/instances', { body: volume, headers: { ...page, 'x-csrf-token': '0'.repeat(64) } }), { status: 403, body: { code: 'MB_ERR_CSRF' } }, 'with a wrong one: 403');
  const other = (await loginAs(testPassword)).body as { csrfToken: string };
  t.match(await call(api, 'POST', '/api/types/Volume/instances', { body: volume, headers: { ...page, 'x-csrf-token': other.csrfToken } }), { status: 403, body: { code: 'MB_ERR_CSRF' } }, 'with another session\'s: 403');
  t.same(Object.values(api.controller.state.model.volumes).map((entry) => entry.name), [], 'no volume was made');
  t.match(await call(api, 'POST', '/api/types/Volume/instances', { body: volume, headers: { ...page, 'x-csrf-token': csrfToken } }), { status: 200, body: { id: /^[0-9a-f]+$/ } }, 'with the token: made');

  t.match(await call(api, 'POST', '/ui/logout', { body: {}, headers: page }), { status: 403, body: { code: 'MB_ERR_CSRF' } }, 'logout without the token: 403');
  const out = await call(api, 'POST', '/ui/logout', { body: {}, headers: { ...page, 'x-csrf-token': csrfToken } });
  t.equal(out.status, 200, 'logout with the token');
  t.match(sessionCookie(out), /Max-Age=0/, '... clears the cookie');
  t.equal((await call(api, 'GET', '/api/dashboard', { headers: page })).status, 401, 'the session is over');
});

t.test('the page and its files, under a strict Content-Security-Policy', async (t) => {
  const { api } = await populatedApi(t);
  t.match(await call(api, 'GET', '/'), { status: 302, headers: { location: '/ui/' } }, '/ → /ui/');
  const page = await call(api, 'GET', '/ui/');
  t.equal(page.status, 200, 'the page');
  t.match(page.headers['content-type'], /^text\/html/, 'as HTML');
  const policy = page.headers['content-security-policy'] as string;
  t.notMatch(policy, /unsafe/, 'no unsafe-inline or unsafe-eval');
  t.match(policy, /default-src 'none'/, 'default-src none');
  t.match(policy, /frame-ancestors 'none'/, 'not framed');
  const importMap = /<script type="importmap">([\s\S]*?)<\/script>/.exec(page.text)?.[1] ?? '';
  const hash = createHash('sha256').update(importMap).digest('base64');
  t.ok(policy.includes(`'sha256-${hash}'`), 'the policy allows the import map by its hash');
  t.equal([...page.text.matchAll(/<script(?![^>]*\bsrc=)(?![^>]*type="importmap")[^>]*>/g)].length, 0, 'no other inline script');
  for (const file of ['/ui/static/app.js', '/ui/static/style.css', '/ui/vendor/preact.mjs', '/ui/vendor/hooks.mjs', '/ui/vendor/htm.mjs', '/ui/vendor/uPlot.esm.js', '/ui/vendor/uPlot.min.css']) {
    const reply = await call(api, 'GET', file);
    t.match(reply, { status: 200, headers: { 'content-type': /^text\/(javascript|css)/, 'x-content-type-options': 'nosniff' } }, `${file}: served`);
  }
  for (const path of ['/ui/static/../../package.json', '/ui/static/%2e%2e%2fpackage.json', '/ui/vendor/preact', '/ui/vendor/..%2f..%2fpackage.json', '/ui/static/Missing.js', '/ui/other']) {
    // (A client may resolve the dot segments itself: then it is a path outside /ui, and the API's 401.)
    const reply = await call(api, 'GET', path);
    t.ok(reply.status === 404 || reply.status === 401, `${path}: ${reply.status}, nothing served`);
    t.notMatch(reply.text, /"name": "meshblock"/, '... not the package.json');
  }
  t.match(await call(api, 'POST', '/ui/', {}), { status: 405 }, 'POST on the page: 405');
});
