// The management CLI run in-process (manageMain) against a test REST API
// (test/helpers/rest.ts), with what it printed captured: what the CLI tests share.

import type { Test } from 'tap';
import { manageMain } from '../../src/cli/manage.js';
import type { TestApi } from './rest.js';

export interface ManageRun {
  code: number;
  stdout: string;
  stderr: string;
}

export type ManageRunner = (args: string[], options?: { connection?: boolean; env?: NodeJS.ProcessEnv }) => Promise<ManageRun>;

/** Runs `meshblock ARGS` against `api` (its URL, password file and certificate added unless `connection: false`). */
export function manageRunner(api: TestApi, env: NodeJS.ProcessEnv = {}): ManageRunner {
  return async (args, options = {}) => {
    let stdout = '';
    let stderr = '';
    const io = { stdout: { write: (text: string) => (stdout += text) }, stderr: { write: (text: string) => (stderr += text) }, env: { ...env, ...options.env } };
    const connection = options.connection === false ? [] : ['--api', api.url, '--password-file', api.passwordFile, '--ca-cert', api.certPath];
    const code = await manageMain([...args, ...connection], io);
    return { code, stdout, stderr };
  };
}

/** A refusal as the CLI must give it: exit `code`, one line on stderr, prefixed, saying why. */
export function oneLine(t: Test, result: ManageRun, pattern: RegExp, code: number, what: string): void {
  t.equal(result.code, code, `${what}: exit ${code}`);
  t.match(result.stderr, pattern, `${what}: says why`);
  t.match(result.stderr, /^meshblock: /, `${what}: prefixed`);
  t.equal(result.stderr.trim().split('\n').length, 1, `${what}: one line`);
}
