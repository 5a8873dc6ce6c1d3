// The browser's side of the REST API: the session cookie authenticates (the browser sends it),
// and every request that changes something carries the CSRF token the login gave
// (src/mdm/web/web-session.ts). Errors keep the API's shape: {message, code, httpStatusCode}.

let csrfToken = null;

export class ApiError extends Error {
  constructor(status, body) {
    super(body && typeof body.message === 'string' ? body.message : `HTTP ${status}`);
    this.status = status;
    this.code = body && typeof body.code === 'string' ? body.code : null;
  }
}

/** The MDM did not answer at all (down, network gone): not the same as a refusal. */
export class UnreachableError extends Error {}

async function request(method, path, body, signal) {
  // x-meshblock-client: a 401 then comes without WWW-Authenticate (no browser password prompt).
  const headers = { accept: 'application/json', 'x-meshblock-client': 'web' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrfToken !== null) headers['x-csrf-token'] = csrfToken;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin', cache: 'no-store', signal });
  } catch (err) {
    throw new UnreachableError(`the MDM does not answer (${err.message})`);
  }
  let parsed = null;
  const text = await response.text();
  if (text !== '') {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = { message: text.slice(0, 200) };
    }
  }
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}

/** `signal`: an AbortSignal that ends a long poll early (its promise then rejects). */
export const get = (path, signal) => request('GET', path, undefined, signal);
export const post = (path, body = {}) => request('POST', path, body);

export async function login(username, password) {
  const reply = await request('POST', '/ui/login', { username, password });
  csrfToken = reply.csrfToken;
  return reply;
}

/** The session the cookie holds, or null (not logged in, or it ended). */
export async function resume() {
  try {
    const reply = await get('/ui/session');
    csrfToken = reply.csrfToken;
    return reply;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return null;
    throw err;
  }
}

export async function logout() {
  try {
    await request('POST', '/ui/logout', {});
  } finally {
    csrfToken = null;
  }
}
