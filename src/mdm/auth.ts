// The REST API's administrator: one user whose password is kept only as a scrypt hash, and
// the session tokens handed out at login (ScaleIO's model: GET /api/login with the
// password, then the token in place of the password on every other call).
//
// The password file (DATA-DIR/admin-password.json, mode 0600) is JSON:
//
//   {
//     "version": 1,
//     "username": "admin",
//     "kdf": "scrypt",
//     "cost": 32768,        scrypt N: CPU/memory cost, a power of two
//     "blockSize": 8,       scrypt r
//     "parallelization": 1, scrypt p
//     "saltHex": "...",     16 random bytes
//     "hashHex": "..."      32 bytes of scrypt(password, salt, N, r, p)
//   }
//
// The parameters travel with the hash so that raising the cost later keeps old files valid.
// Tokens live only in memory (a restarted MDM asks clients to log in again), are 32 random
// bytes as hex, and expire after adminTokenIdleMs without use. They are kept as SHA-256
// digests, so that neither a heap dump nor a lookup's timing gives one away.

import { createHash, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { assert } from '../common/assert.js';
import { InvalidArgumentError, MeshblockError } from '../common/errors.js';
import { adminPasswordBytesMax, adminPasswordBytesMin, adminTokenIdleMs, adminTokensMax } from '../common/limits.js';

export const adminPasswordFileName = 'admin-password.json';
export const adminUsernameDefault = 'admin';
export const adminTokenBytes = 32;
const scryptCostDefault = 1 << 15;
const scryptBlockSizeDefault = 8;
const scryptParallelizationDefault = 1;
const scryptSaltBytes = 16;
const scryptHashBytes = 32;
/** The hash's memory is 128 * N * r bytes (32 MiB by default): give scrypt room above it. */
const scryptMemoryBytesMax = 256 * 1024 * 1024;

assert(128 * scryptCostDefault * scryptBlockSizeDefault * 2 <= scryptMemoryBytesMax, 'scrypt must fit its memory bound');
assert(adminPasswordBytesMin <= adminPasswordBytesMax, 'password bounds');

/** The password file is missing, unreadable or not one of ours. */
export class AdminAuthFileError extends MeshblockError {
  constructor(file: string, message: string) {
    super('MB_ERR_AUTH_FILE', `${file}: ${message}`);
  }
}

interface PasswordFile {
  version: 1;
  username: string;
  kdf: 'scrypt';
  cost: number;
  blockSize: number;
  parallelization: number;
  saltHex: string;
  hashHex: string;
}

export interface AdminAuthOptions {
  /** The clock for token expiry; Date.now unless a test drives time. */
  nowMs?: () => number;
  /** scrypt N; lower only in tests that make many files. */
  scryptCost?: number;
}

interface Session {
  lastUsedMs: number;
}

export class AdminAuth {
  /** Keyed by SHA-256 of the token, in least-recently-used order (Map keeps insertion order). */
  private readonly sessions = new Map<string, Session>();
  private readonly nowMs: () => number;

  private constructor(
    private readonly record: PasswordFile,
    readonly passwordFile: string,
    options: AdminAuthOptions,
  ) {
    this.nowMs = options.nowMs ?? Date.now;
  }

  get username(): string {
    return this.record.username;
  }

  /** Writes a new password file (refusing to replace one) and returns its AdminAuth. */
  static async create(passwordFile: string, password: string, options: AdminAuthOptions & { username?: string } = {}): Promise<AdminAuth> {
    checkPassword(password);
    const username = options.username ?? adminUsernameDefault;
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(username)) throw new InvalidArgumentError('username', "must be 1 to 64 letters, digits, '_', '.' or '-'");
    const cost = options.scryptCost ?? scryptCostDefault;
    if (!Number.isSafeInteger(cost) || cost < 2 || (cost & (cost - 1)) !== 0) throw new InvalidArgumentError('scryptCost', 'must be a power of two');
    const salt = randomBytes(scryptSaltBytes);
    const hash = await scryptAsync(password, salt, { N: cost, r: scryptBlockSizeDefault, p: scryptParallelizationDefault });
    const record: PasswordFile = {
      version: 1,
      username,
      kdf: 'scrypt',
      cost,
      blockSize: scryptBlockSizeDefault,
      parallelization: scryptParallelizationDefault,
      saltHex: salt.toString('hex'),
      hashHex: hash.toString('hex'),
    };
    // Written in full under a temporary name, then linked into place: link() fails if the
    // final name exists, so a crash leaves no half-written file and an existing password
    // is never replaced.
    const temporary = `${passwordFile}.tmp-${process.pid}`;
    const fd = fs.openSync(temporary, 'w', 0o600);
    try {
      fs.writeFileSync(fd, `${JSON.stringify(record, null, 2)}\n`);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    try {
      fs.linkSync(temporary, passwordFile);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new AdminAuthFileError(passwordFile, code === 'EEXIST' ? 'already exists; the admin password is set once' : `cannot write: ${(err as Error).message}`);
    } finally {
      fs.unlinkSync(temporary);
    }
    syncDirectory(path.dirname(passwordFile));
    return new AdminAuth(record, passwordFile, options);
  }

  /** Reads a password file made by create(). */
  static load(passwordFile: string, options: AdminAuthOptions = {}): AdminAuth {
    let text: string;
    try {
      text = fs.readFileSync(passwordFile, 'utf8');
    } catch (err) {
      throw new AdminAuthFileError(passwordFile, `cannot read: ${(err as Error).message}`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new AdminAuthFileError(passwordFile, 'is not JSON');
    }
    return new AdminAuth(validateRecord(passwordFile, parsed), passwordFile, options);
  }

  /** First start of an MDM: sets the admin password in DATA-DIR/admin-password.json. */
  static async initialize(dataDir: string, password: string, options: AdminAuthOptions & { username?: string } = {}): Promise<AdminAuth> {
    return AdminAuth.create(adminPasswordFile(dataDir), password, options);
  }

  /** Later starts: reads DATA-DIR/admin-password.json. */
  static loadFromDataDir(dataDir: string, options: AdminAuthOptions = {}): AdminAuth {
    return AdminAuth.load(adminPasswordFile(dataDir), options);
  }

  /** Whether an MDM data directory has its admin password yet. */
  static isInitialized(dataDir: string): boolean {
    return fs.existsSync(adminPasswordFile(dataDir));
  }

  /** True if both match. Runs scrypt off the event loop; compares in constant time. */
  async verifyPassword(username: string, password: string): Promise<boolean> {
    const record = this.record;
    if (typeof password !== 'string' || Buffer.byteLength(password) > adminPasswordBytesMax) return false;
    const expected = Buffer.from(record.hashHex, 'hex');
    const actual = await scryptAsync(password, Buffer.from(record.saltHex, 'hex'), { N: record.cost, r: record.blockSize, p: record.parallelization }, expected.length);
    // The hash is computed even for a wrong user name, so both take the same time.
    return timingSafeEqual(actual, expected) && username === record.username;
  }

  /** A new session token (64 hex digits). */
  issueToken(): string {
    const token = randomBytes(adminTokenBytes).toString('hex');
    const nowMs = this.nowMs();
    this.expire(nowMs);
    while (this.sessions.size >= adminTokensMax) {
      const oldest = this.sessions.keys().next().value as string;
      this.sessions.delete(oldest);
    }
    this.sessions.set(digest(token), { lastUsedMs: nowMs });
    return token;
  }

  /** True if the token is live; each use restarts its idle time. */
  checkToken(token: string): boolean {
    if (typeof token !== 'string' || token.length !== 2 * adminTokenBytes) return false;
    const key = digest(token);
    const session = this.sessions.get(key);
    if (session === undefined) return false;
    const nowMs = this.nowMs();
    this.sessions.delete(key);
    if (nowMs - session.lastUsedMs >= adminTokenIdleMs) return false;
    session.lastUsedMs = nowMs;
    this.sessions.set(key, session); // to the back: most recently used
    return true;
  }

  /** Ends a session; false if the token was not live. */
  revokeToken(token: string): boolean {
    return typeof token === 'string' && this.sessions.delete(digest(token));
  }

  /** Live sessions (expired ones are dropped first). */
  get sessionCount(): number {
    this.expire(this.nowMs());
    return this.sessions.size;
  }

  private expire(nowMs: number): void {
    // Oldest first: stop at the first session still live.
    for (const [key, session] of this.sessions) {
      if (nowMs - session.lastUsedMs < adminTokenIdleMs) break;
      this.sessions.delete(key);
    }
  }
}

export function adminPasswordFile(dataDir: string): string {
  return path.join(dataDir, adminPasswordFileName);
}

/** Same as AdminAuth.initialize, for callers that prefer functions. */
export function initializeAdminAuth(dataDir: string, password: string, options: AdminAuthOptions & { username?: string } = {}): Promise<AdminAuth> {
  return AdminAuth.initialize(dataDir, password, options);
}

/** Same as AdminAuth.loadFromDataDir. */
export function loadAdminAuth(dataDir: string, options: AdminAuthOptions = {}): AdminAuth {
  return AdminAuth.loadFromDataDir(dataDir, options);
}

function checkPassword(password: string): void {
  if (typeof password !== 'string') throw new InvalidArgumentError('password', 'must be a string');
  const bytes = Buffer.byteLength(password);
  if (bytes < adminPasswordBytesMin || bytes > adminPasswordBytesMax) {
    throw new InvalidArgumentError('password', `must be ${adminPasswordBytesMin} to ${adminPasswordBytesMax} bytes long`);
  }
}

function validateRecord(file: string, parsed: unknown): PasswordFile {
  const record = parsed as Partial<PasswordFile> | null;
  const isInt = (value: unknown): value is number => typeof value === 'number' && Number.isSafeInteger(value) && value > 0;
  const isHex = (value: unknown, bytes: number): value is string => typeof value === 'string' && value.length === 2 * bytes && /^[0-9a-f]+$/.test(value);
  if (record === null || typeof record !== 'object' || record.version !== 1 || record.kdf !== 'scrypt') {
    throw new AdminAuthFileError(file, 'is not a version 1 scrypt password file');
  }
  if (typeof record.username !== 'string' || record.username === '') throw new AdminAuthFileError(file, 'has no username');
  if (!isInt(record.cost) || (record.cost & (record.cost - 1)) !== 0 || !isInt(record.blockSize) || !isInt(record.parallelization)) {
    throw new AdminAuthFileError(file, 'has bad scrypt parameters');
  }
  if (128 * record.cost * record.blockSize > scryptMemoryBytesMax / 2) throw new AdminAuthFileError(file, 'asks scrypt for more memory than allowed');
  if (!isHex(record.saltHex, scryptSaltBytes) || !isHex(record.hashHex, scryptHashBytes)) throw new AdminAuthFileError(file, 'has a bad salt or hash');
  return record as PasswordFile;
}

function scryptAsync(password: string, salt: Buffer, params: { N: number; r: number; p: number }, keyBytes = scryptHashBytes): Promise<Buffer> {
  const options: ScryptOptions = { ...params, maxmem: scryptMemoryBytesMax };
  return new Promise((resolve, reject) => {
    scrypt(password, salt, keyBytes, options, (err, key) => (err === null ? resolve(key) : reject(err)));
  });
}

/** Makes a new directory entry durable. */
function syncDirectory(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function digest(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}
