// Proves that error codes are one typed list, and that what carries them obeys it:
// - every MB_ERR_* code the sources raise or compare is in `errorCodes` (read from src/ as
//   text, so a code added without an entry fails here), each entry has a doc comment, and
//   none is stale (unused, and not a reserved REST errorCode);
// - BackendError, ShortReadError and SystemCallError are MeshblockErrors with errno codes,
//   and nbdErrnoOf maps them (and MB_ERR_* codes) to the NBD error the protocol carries;
// - codes that come from another process are checked at the edge: an SDS's device refusal
//   (parseDeviceRefusal) and the REST API's error body (ApiClient) keep a known code, and
//   turn an unknown one into a known one with the original in the message.

import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import t from 'tap';
import { ApiClient, ApiError } from '../../src/cli/manage-client.js';
import { AssertionError, MeshblockError, SystemCallError, errorCodes, isErrnoCode, isErrorCode, isMeshblockCode } from '../../src/common/errors.js';
import { ShortReadError } from '../../src/common/positional-io.js';
import { restErrorCodes } from '../../src/mdm/rest-errors.js';
import { BackendError } from '../../src/nbd/backend.js';
import { nbdErrnoOf } from '../../src/nbd/errno.js';
import * as P from '../../src/nbd/protocol.js';
import { parseDeviceRefusal } from '../../src/wire/mdm-ops.js';
import { typescriptFiles } from '../helpers/files.js';
import { repoRoot } from '../helpers/processes.js';

const srcDir = path.join(repoRoot, 'src');
const errorsFile = path.join(srcDir, 'common', 'errors.ts');

/** Every quoted MB_ERR_* code in src/, outside the list itself (errors.ts's classes count). */
function codesInSources(): Set<string> {
  const codes = new Set<string>();
  for (const file of typescriptFiles(srcDir)) {
    let text = fs.readFileSync(file, 'utf8');
    if (file === errorsFile) text = text.slice(text.indexOf('} as const;'));
    for (const match of text.matchAll(/'(MB_ERR_[A-Z0-9_]+)'/g)) codes.add(match[1] as string);
  }
  return codes;
}

t.test('every MB_ERR_* code in src/ is in the list, and every entry is used', async (t) => {
  const used = codesInSources();
  t.ok(used.size > 100, `the scan finds the codes (${used.size})`);
  t.same([...used].filter((code) => !isErrorCode(code)).sort(), [], 'no code is raised or compared without an entry');
  const stale = Object.keys(errorCodes).filter((code) => !used.has(code) && restErrorCodes[code] === undefined);
  t.same(stale, [], 'no entry is unused (codes reserved in the REST errorCode table excepted)');
  t.same(Object.keys(restErrorCodes).filter((code) => !isErrorCode(code)), [], 'the REST errorCode table names only listed codes');
  for (const [key, value] of Object.entries(errorCodes)) if (key !== value) t.fail(`${key} maps to ${value}`);
});

t.test('every entry of the list has a doc comment saying what it means', async (t) => {
  const lines = fs.readFileSync(errorsFile, 'utf8').split('\n');
  const undocumented: string[] = [];
  let entries = 0;
  lines.forEach((line, index) => {
    const entry = /^\s+(MB_ERR_[A-Z0-9_]+): '/.exec(line);
    if (entry === null) return;
    entries += 1;
    if (!/^\s+\/\*\* .+ \*\/$/.test(lines[index - 1] ?? '')) undocumented.push(entry[1] as string);
  });
  t.equal(entries, Object.keys(errorCodes).length, 'every entry was seen');
  t.same(undocumented, []);
});

t.test('the guards accept listed codes and errno names, and nothing else', async (t) => {
  t.ok(isErrorCode('MB_ERR_NOT_FOUND'));
  t.notOk(isErrorCode('MB_ERR_NOT_A_CODE'));
  t.notOk(isErrorCode('EIO'), 'an errno name is not an MB_ERR_* code');
  for (const inherited of ['toString', '__proto__', 'constructor', 'hasOwnProperty']) {
    t.notOk(isMeshblockCode(inherited), `'${inherited}' (inherited, not listed) is refused`);
  }
  for (const value of [undefined, null, 5, {}, ['MB_ERR_NOT_FOUND']]) t.notOk(isMeshblockCode(value), `${JSON.stringify(value)} is refused`);
  t.ok(isErrnoCode('EIO'));
  t.ok(isErrnoCode('EOPNOTSUPP'));
  t.ok(isErrnoCode('ESHUTDOWN'), 'not in Node’s table, but an NBD error');
  t.ok(isErrnoCode('E#4242'), 'an errno Node cannot name');
  t.notOk(isErrnoCode('E#'));
  t.notOk(isErrnoCode('EWHATEVER'));
  t.ok(isMeshblockCode('MB_ERR_SDS_FAILED'));
  t.ok(isMeshblockCode('ENOSPC'));
});

t.test('BackendError, ShortReadError and SystemCallError are MeshblockErrors with errno codes', async (t) => {
  const cases: Array<{ err: MeshblockError; name: string; code: string; nbd: number }> = [
    { err: new BackendError('ENOSPC', 'full'), name: 'BackendError', code: 'ENOSPC', nbd: P.NBD_ENOSPC },
    { err: new BackendError('ENOTSUP', 'not fast'), name: 'BackendError', code: 'ENOTSUP', nbd: P.NBD_ENOTSUP },
    { err: new BackendError('EINVAL', 'bad'), name: 'BackendError', code: 'EINVAL', nbd: P.NBD_EINVAL },
    { err: new ShortReadError('short'), name: 'ShortReadError', code: 'EIO', nbd: P.NBD_EIO },
    { err: new SystemCallError('EOPNOTSUPP', 'fallocate failed'), name: 'SystemCallError', code: 'EOPNOTSUPP', nbd: P.NBD_ENOTSUP },
    { err: new SystemCallError('EDQUOT', 'quota'), name: 'SystemCallError', code: 'EDQUOT', nbd: P.NBD_ENOSPC },
    { err: new SystemCallError('E#4242', 'strange'), name: 'SystemCallError', code: 'E#4242', nbd: P.NBD_EIO },
    { err: new MeshblockError('MB_ERR_DEVICE_FAILED', 'gone'), name: 'MeshblockError', code: 'MB_ERR_DEVICE_FAILED', nbd: P.NBD_EIO },
    { err: new AssertionError('bug'), name: 'AssertionError', code: 'MB_ERR_ASSERTION', nbd: P.NBD_EIO },
  ];
  for (const { err, name, code, nbd } of cases) {
    t.ok(err instanceof MeshblockError, `${name} is a MeshblockError`);
    t.equal(err.name, name);
    t.equal(err.code, code);
    t.equal(nbdErrnoOf(err), nbd, `${name} ${code} → NBD ${nbd}`);
  }
  const cause = new Error('underneath');
  t.equal(new BackendError('EIO', 'with a cause', { cause }).cause, cause, 'the cause is kept');
  t.equal(nbdErrnoOf(Object.assign(new Error('from fs'), { code: 'EROFS' })), P.NBD_EPERM, 'Node’s own errno errors map too');
  t.equal(nbdErrnoOf('a string'), P.NBD_EIO);
});

t.test("an SDS's device refusal keeps a known code and replaces an unknown one", async (t) => {
  const refusal = (value: unknown): Buffer => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value));
  t.same(parseDeviceRefusal(refusal({ code: 'MB_ERR_DEVICE_FORMATTED', message: 'holds ext4' })), { code: 'MB_ERR_DEVICE_FORMATTED', message: 'holds ext4' });
  t.same(parseDeviceRefusal(refusal({ code: 'EACCES', message: 'no' })), { code: 'EACCES', message: 'no' }, 'an errno name is a known code');
  const future = parseDeviceRefusal(refusal({ code: 'MB_ERR_FROM_A_NEWER_SDS', message: 'something new' }));
  t.equal(future.code, 'MB_ERR_SDS_FAILED');
  t.match(future.message, /something new/);
  t.match(future.message, /MB_ERR_FROM_A_NEWER_SDS/, 'the original code is in the message');
  for (const bad of ['not json', 'null', '{"code":"MB_ERR_NOT_FOUND"}', '{"code":"toString","message":"x"}', '[]']) {
    t.equal(parseDeviceRefusal(refusal(bad)).code, 'MB_ERR_SDS_FAILED', `${bad}: MB_ERR_SDS_FAILED`);
  }
});

t.test("the REST API's error code is checked by the CLI", async (t) => {
  let body: unknown = null;
  const server = http.createServer((req, res) => {
    req.resume();
    res.writeHead(409, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const api = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const connect = (): Promise<ApiClient> =>
    ApiClient.connect(
      { api, dir: undefined, username: 'admin', 'password-file': undefined, 'ca-cert': undefined, insecure: false },
      { stdout: { write: () => true }, stderr: { write: () => true }, env: { MESHBLOCK_PASSWORD: 'pw' } },
    );

  body = { message: 'taken', httpStatusCode: 409, errorCode: 3, code: 'MB_ERR_NAME_TAKEN' };
  await t.rejects(connect(), { constructor: ApiError, code: 'MB_ERR_NAME_TAKEN', errorCode: 3, httpStatus: 409, message: 'taken' }, 'a known code is kept');
  body = { message: 'new refusal', httpStatusCode: 409, errorCode: 0, code: 'MB_ERR_FROM_A_NEWER_MDM' };
  const unknown = await connect().then(
    () => null,
    (err: unknown) => err,
  );
  t.ok(unknown instanceof ApiError);
  t.equal((unknown as ApiError).code, 'MB_ERR_API', 'an unknown code becomes MB_ERR_API');
  t.match((unknown as ApiError).message, /new refusal.*MB_ERR_FROM_A_NEWER_MDM/, 'with the original in the message');
  body = { message: 'odd', code: 42, errorCode: 'x' };
  await t.rejects(connect(), { code: 'MB_ERR_API', errorCode: 0 }, 'a code that is not a string is no code');
  body = null;
  await t.rejects(connect(), { code: 'MB_ERR_API', message: /HTTP 409/ }, 'a null body is no error body');
});
