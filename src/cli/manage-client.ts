// The management commands' connection to the MDM's REST API: flags, login, calls, logout.
// One session per invocation, as scli does: log in with the password, call with the token,
// log out. node:https with a private agent, so that --ca-cert and --insecure apply to this
// connection only.
//
// Following the Master. --api (or MESHBLOCK_API, or the lab) may name every MDM's API,
// `URL[,URL...]`. A call goes to the MDM that answered last (the first, at login) and moves
// on to the next address, each at most once per call, when that one cannot be reached
// (refused, no route, reset, timed out) or answers 503 MB_ERR_MDM_NOT_MASTER,
// MB_ERR_NO_QUORUM or MB_ERR_SHUTTING_DOWN; when every address failed, the call fails with
// the last error and the addresses it tried. A session belongs to the MDM that made it, so
// a 401 (the call landed on another MDM, or this one restarted) logs in again, once.
//
// A refusal with 503 was not applied. A reset or a timeout may come after the MDM applied a
// POST: the call is then repeated on the next MDM, which answers as to a repeat (say,
// MB_ERR_NAME_TAKEN for an add) — an honest answer, if not the first one's.

import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { Argv } from 'yargs';
import { InvalidArgumentError, MeshblockError, isMeshblockCode, type MeshblockCode } from '../common/errors.js';
import { TLSSocket } from 'node:tls';
import { apiConnectTimeoutMs, mdmAddressesMax } from '../common/limits.js';
import type { RestErrorBody } from '../mdm/rest-errors.js';
import { applyLabConnectionDefaults } from './lab-state.js';

export const apiUrlDefault = 'https://127.0.0.1:8443';
/** A call gets this long; adding a device waits for the SDS to format it. */
export const apiRequestTimeoutMs = 120_000;
/** Replies larger than this are refused (a listing of 100k volumes is ~100 MiB). */
export const apiReplyBytesMax = 512 * 1024 * 1024;

export interface ConnectionArgs {
  /** One API URL or several, comma-separated (every MDM's). */
  api: string | undefined;
  dir: string | undefined;
  username: string;
  'password-file': string | undefined;
  'ca-cert': string | undefined;
  insecure: boolean;
}

/** The API answered with an error: its message, status and codes. */
export class ApiError extends MeshblockError {
  constructor(
    readonly httpStatus: number,
    readonly errorCode: number,
    code: MeshblockCode,
    message: string,
  ) {
    super(code, message);
  }
}

/** The API could not be reached, or answered something that is not the API. */
export class ApiConnectionError extends MeshblockError {
  /**
   * True when the address could not be reached at all (refused, no route, reset, timed out),
   * so another MDM's address may answer; false when what answered is not a meshblock MDM
   * (or its certificate is not trusted), which another address would not change.
   */
  readonly unreachable: boolean;

  constructor(message: string, options?: { cause?: unknown; unreachable?: boolean }) {
    super('MB_ERR_API_UNREACHABLE', message, options);
    this.unreachable = options?.unreachable ?? false;
  }
}

/** Socket errors that say an address cannot be reached now, where another MDM's may be. */
const unreachableErrnos: ReadonlySet<string> = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'EHOSTDOWN', 'ENETUNREACH', 'EPIPE']);

/** REST refusals (all 503) that say "not here": the request was not applied, another MDM may take it. */
const notHereCodes: ReadonlySet<string> = new Set(['MB_ERR_MDM_NOT_MASTER', 'MB_ERR_NO_QUORUM', 'MB_ERR_SHUTTING_DOWN']);

/** True when `err` from one API address is a reason to try the next. */
function triesNext(err: unknown): boolean {
  if (err instanceof ApiConnectionError) return err.unreachable;
  return err instanceof ApiError && err.httpStatus === 503 && notHereCodes.has(err.code);
}

/** Where the commands write; process streams unless a test captures them. */
export interface ManageIo {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
  env: NodeJS.ProcessEnv;
}

export const processIo: ManageIo = { stdout: process.stdout, stderr: process.stderr, env: process.env };

export function connectionOptions<T>(yargs: Argv<T>, _io: ManageIo): Argv<T & ConnectionArgs> {
  return yargs
    .option('api', { type: 'string', describe: `the MDM REST API, URL[,URL...] (every MDM's: calls go to the one that answers) [default: $MESHBLOCK_API, else the lab's (see --dir), else ${apiUrlDefault}]`, requiresArg: true, group: 'Connection:' })
    .option('dir', { type: 'string', describe: "a lab directory (meshblock lab up): use its API, certificate and password [default: $MESHBLOCK_LAB_DIR, else the current directory or ./meshblock-lab when they hold a lab]", requiresArg: true, group: 'Connection:' })
    .option('username', { type: 'string', default: 'admin', describe: 'API user', requiresArg: true, group: 'Connection:' })
    .option('password-file', { type: 'string', describe: 'file holding the API password (or env MESHBLOCK_PASSWORD)', requiresArg: true, group: 'Connection:' })
    .option('ca-cert', { type: 'string', describe: "trust this certificate, e.g. the MDM's DATA-DIR/api.crt (env MESHBLOCK_CA_CERT)", requiresArg: true, group: 'Connection:' })
    .option('insecure', { type: 'boolean', default: false, describe: "do not verify the MDM's certificate", group: 'Connection:' }) as unknown as Argv<T & ConnectionArgs>;
}

export class ApiClient {
  private token: string | null = null;
  /** The index in `bases` of the MDM that answered last: calls start there. */
  private current = 0;

  private constructor(
    private readonly bases: readonly URL[],
    private readonly agent: http.Agent,
    private readonly username: string,
    /** Kept for logging in again after a 401 (another MDM, or a restarted one). */
    private readonly password: string,
  ) {}

  /** The API base the client talks to now (the one that answered last). */
  get origin(): string {
    return (this.bases[this.current] as URL).origin;
  }

  /** Checks the connection flags, logs in and returns a client holding the session. */
  static async connect(given: ConnectionArgs, io: ManageIo): Promise<ApiClient> {
    const args = applyLabConnectionDefaults(given, io.env, process.cwd());
    // --api given more than once arrives as an array (yargs): its values are the list too.
    const flag: unknown = args.api;
    const api = Array.isArray(flag) ? flag.map(String).join(',') : (args.api ?? (io.env['MESHBLOCK_API'] || apiUrlDefault));
    const bases = parseApiUrls(api);
    const protocol = (bases[0] as URL).protocol;
    const password = readPassword(args, io);
    let agent: http.Agent;
    if (protocol === 'https:') {
      if (args.insecure && args['ca-cert'] !== undefined) throw new InvalidArgumentError('--insecure', 'and --ca-cert contradict each other; give one');
      // The flags say what this invocation wants; MESHBLOCK_CA_CERT is only the default.
      const caFile = args['ca-cert'] ?? (args.insecure ? undefined : io.env['MESHBLOCK_CA_CERT'] || undefined);
      let ca: Buffer | undefined;
      if (caFile !== undefined) {
        try {
          ca = fs.readFileSync(caFile);
        } catch (err) {
          throw new InvalidArgumentError('--ca-cert', `cannot read ${caFile}: ${(err as Error).message}`);
        }
      }
      if (args.insecure) io.stderr.write(`meshblock: warning: --insecure: the MDM's certificate is not verified\n`);
      agent = new https.Agent({ keepAlive: true, maxSockets: 1, rejectUnauthorized: !args.insecure, ...(ca !== undefined ? { ca } : {}) });
    } else {
      if (args.insecure || args['ca-cert'] !== undefined) throw new InvalidArgumentError(args.insecure ? '--insecure' : '--ca-cert', `has no meaning for ${api} (plain HTTP)`);
      agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    }
    const client = new ApiClient(bases, agent, args.username, password);
    try {
      await client.login();
    } catch (err) {
      agent.destroy();
      throw err;
    }
    return client;
  }

  get<T>(path: string): Promise<T> {
    return this.call('GET', path, undefined) as Promise<T>;
  }

  post<T>(path: string, body: unknown): Promise<T> {
    return this.call('POST', path, body) as Promise<T>;
  }

  private async login(): Promise<void> {
    this.token = null;
    const token = await this.request('GET', '/api/login', undefined, () => basic(this.username, this.password));
    if (typeof token !== 'string' || token === '') throw new ApiConnectionError(`${this.origin} answered the login without a token: is it a meshblock MDM?`);
    this.token = token;
  }

  /** A call with the session; a 401 logs in again (on whichever MDM answers) and repeats it, once. */
  private async call(method: 'GET' | 'POST', path: string, body: unknown): Promise<unknown> {
    try {
      return await this.request(method, path, body, () => this.authorization());
    } catch (err) {
      if (!(err instanceof ApiError) || err.httpStatus !== 401) throw err;
    }
    await this.login();
    return this.request(method, path, body, () => this.authorization());
  }

  /** Logs out (best effort: the session expires anyway) and closes the connection. */
  async close(): Promise<void> {
    try {
      if (this.token !== null) await this.request('GET', '/api/logout', undefined, () => this.authorization());
    } catch {
      // Logging out is a courtesy; the command's own result stands.
    } finally {
      this.token = null;
      this.agent.destroy();
    }
  }

  private authorization(): string {
    if (this.token === null) throw new ApiConnectionError('not logged in');
    // ScaleIO's way: the token in place of the password.
    return basic(this.username, this.token);
  }

  /**
   * Sends the request to the MDM that answered last, then to each other address in turn
   * while they fail in a way another MDM may not (triesNext); `authorization` is read for
   * each, as a login on the way may change it.
   */
  private async request(method: 'GET' | 'POST', path: string, body: unknown, authorization: () => string): Promise<unknown> {
    const tried: string[] = [];
    let lastError: unknown;
    for (let attempt = 0; attempt < this.bases.length; attempt += 1) {
      const index = (this.current + attempt) % this.bases.length;
      const base = this.bases[index] as URL;
      try {
        const result = await this.send(base, method, path, body, authorization());
        this.current = index;
        return result;
      } catch (err) {
        if (!triesNext(err)) {
          // It answered: the next call starts with it.
          if (!(err instanceof ApiConnectionError)) this.current = index;
          throw err;
        }
        tried.push(base.origin);
        // An MDM's own answer (no quorum, not the Master) says more than another's silence.
        if (lastError === undefined || !(lastError instanceof ApiError) || err instanceof ApiError) lastError = err;
      }
    }
    throw this.bases.length === 1 ? lastError : withAddressesTried(lastError, tried);
  }

  /** One attempt at one MDM. */
  private send(base: URL, method: 'GET' | 'POST', path: string, body: unknown, authorization: string): Promise<unknown> {
    const url = new URL(path, base);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const transport = url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const req = transport.request(
        url,
        {
          method,
          agent: this.agent,
          timeout: apiRequestTimeoutMs,
          headers: {
            authorization,
            accept: 'application/json',
            ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let receivedBytes = 0;
          res.on('data', (chunk: Buffer) => {
            receivedBytes += chunk.length;
            if (receivedBytes > apiReplyBytesMax) {
              req.destroy(new ApiConnectionError(`${method} ${path}: reply larger than ${apiReplyBytesMax} bytes`));
              return;
            }
            chunks.push(chunk);
          });
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = text === '' ? undefined : JSON.parse(text);
            } catch {
              reject(new ApiConnectionError(`${method} ${path}: HTTP ${res.statusCode} with a body that is not JSON: is ${base.origin} a meshblock MDM?`));
              return;
            }
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) {
              resolve(parsed);
              return;
            }
            const error = parsed as Partial<Record<keyof RestErrorBody, unknown>> | null | undefined;
            if (typeof error === 'object' && error !== null && typeof error.message === 'string') {
              // The code comes from another process (perhaps a newer MDM): one this CLI
              // does not know is MB_ERR_API, with the original kept in the message.
              const sent = error.code;
              const code = isMeshblockCode(sent) ? sent : 'MB_ERR_API';
              const message = code === sent || sent === undefined ? error.message : `${error.message} (code ${JSON.stringify(sent)})`;
              reject(new ApiError(status, typeof error.errorCode === 'number' ? error.errorCode : 0, code, message));
            } else {
              reject(new ApiError(status, 0, 'MB_ERR_API', `${method} ${path}: HTTP ${status}`));
            }
          });
        },
      );
      req.on('socket', (socket) => {
        // A kept-alive socket is connected already; a new one gets apiConnectTimeoutMs.
        if (!socket.connecting) return;
        const timer = setTimeout(
          () => req.destroy(new ApiConnectionError(`cannot reach the MDM at ${base.origin}: no connection within ${apiConnectTimeoutMs / 1000} s`, { unreachable: true })),
          apiConnectTimeoutMs,
        );
        const clear = (): void => clearTimeout(timer);
        // Over TLS, until the handshake is done: a paused MDM's kernel still accepts the
        // TCP connection, and only the handshake shows that nobody is there.
        socket.once(socket instanceof TLSSocket ? 'secureConnect' : 'connect', clear);
        socket.once('close', clear);
      });
      req.on('timeout', () => req.destroy(new ApiConnectionError(`${method} ${path}: no answer from ${base.origin} within ${apiRequestTimeoutMs / 1000} s`, { unreachable: true })));
      req.on('error', (err: NodeJS.ErrnoException) => reject(err instanceof MeshblockError ? err : connectionError(base, err)));
      req.end(payload);
    });
  }
}

function basic(username: string, secret: string): string {
  return `Basic ${Buffer.from(`${username}:${secret}`).toString('base64')}`;
}

function readPassword(args: ConnectionArgs, io: ManageIo): string {
  const file = args['password-file'];
  if (file !== undefined) {
    try {
      // One line: a trailing newline is not part of the password.
      return fs.readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new InvalidArgumentError('--password-file', `cannot read ${file}: ${(err as Error).message}`);
    }
  }
  const fromEnv = io.env['MESHBLOCK_PASSWORD'];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  throw new InvalidArgumentError('--password-file', 'give the API password in a file (--password-file) or in MESHBLOCK_PASSWORD');
}

function connectionError(base: URL, err: NodeJS.ErrnoException): ApiConnectionError {
  const code = err.code ?? '';
  const hint = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code)
    ? " (pass the MDM's certificate with --ca-cert DATA-DIR/api.crt, or --insecure)"
    : code === 'ECONNREFUSED'
      ? ' (is the MDM running? see --api)'
      : code === 'EPROTO' || /wrong version number|packet length too long/i.test(err.message)
        ? ' (is the API plain HTTP? see --api)'
        : '';
  return new ApiConnectionError(`cannot reach the MDM at ${base.origin}: ${err.message}${hint}`, { cause: err, unreachable: unreachableErrnos.has(code) });
}

/**
 * The API addresses of --api (or MESHBLOCK_API, or the lab): `URL[,URL...]`, each
 * https://HOST:PORT or http://HOST:PORT, all of one scheme (one agent serves them), distinct,
 * at most mdmAddressesMax (the MDMs of a five-node cluster).
 */
export function parseApiUrls(text: string): URL[] {
  const entries = text.split(',').map((entry) => entry.trim());
  if (entries.length > mdmAddressesMax) throw new InvalidArgumentError('--api', `at most ${mdmAddressesMax} addresses, got ${entries.length}`);
  const bases: URL[] = [];
  entries.forEach((entry, index) => {
    const which = entries.length > 1 ? `entry ${index + 1} ('${entry}')` : `'${entry}'`;
    const ofList = entries.length > 1 ? ` (entry ${index + 1})` : '';
    let base: URL;
    try {
      base = new URL(entry);
    } catch {
      throw new InvalidArgumentError('--api', `not a URL: '${entry}'${ofList} (example: ${apiUrlDefault})`);
    }
    if ((base.protocol !== 'https:' && base.protocol !== 'http:') || base.pathname !== '/' || base.search !== '' || base.username !== '') {
      throw new InvalidArgumentError('--api', `must be https://HOST:PORT or http://HOST:PORT, got '${entry}'${ofList}`);
    }
    if (bases.some((other) => other.origin === base.origin)) throw new InvalidArgumentError('--api', `${which} is given twice (${base.origin})`);
    if (bases.length > 0 && base.protocol !== (bases[0] as URL).protocol) throw new InvalidArgumentError('--api', `${which}: every address must be ${(bases[0] as URL).protocol}// as the first is`);
    bases.push(base);
  });
  return bases;
}

/** The last error of a call that every address failed, naming the addresses tried. */
function withAddressesTried(err: unknown, tried: readonly string[]): unknown {
  const suffix = ` (tried ${tried.join(', ')})`;
  if (err instanceof ApiError) return new ApiError(err.httpStatus, err.errorCode, err.code, `${err.message}${suffix}`);
  if (err instanceof ApiConnectionError) return new ApiConnectionError(`${err.message}${suffix}`, { cause: err, unreachable: true });
  return err;
}
