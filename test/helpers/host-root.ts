// Helpers for the host module tests, no tests of their own (tap lists this file as skipped):
// a writable copy of a fixture tree from ../shared/fixtures as a host root, stub programs
// under that root that append their calls to a log, and a Host over the root.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { diffLines } from 'diff';
import type { Host, HostOptions } from '../../src/hostsetup/host-module.js';
import { LocalTransport } from '../../src/hostsetup/host-transport.js';
import { repoRoot } from './processes.js';

export const fixturesDir = path.resolve(repoRoot, '../shared/fixtures');
export const fixtureNames = ['centos7', 'xenserver', 'debian12'] as const;
export type FixtureName = (typeof fixtureNames)[number];

export interface TestRoot {
  /** The host's `/`. */
  root: string;
  /** Every stub's calls, one line each: the host path of the program, then its arguments. */
  callLog: string;
}

function makeWritable(dir: string): void {
  fs.chmodSync(dir, 0o755);
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) makeWritable(full);
    else fs.chmodSync(full, 0o644);
  }
}

/** A copy of fixture `name` (read-only in ../shared) in `dir`/root, writable. */
export function copyFixture(dir: string, name: FixtureName): TestRoot {
  const root = path.join(dir, 'root');
  fs.cpSync(path.join(fixturesDir, name), root, { recursive: true });
  makeWritable(root);
  return { root, callLog: path.join(dir, 'calls.log') };
}

/** A file in the root (`hostPath` absolute), with its directories. */
export function putFile(testRoot: TestRoot, hostPath: string, text: string, mode = 0o644): string {
  const full = path.join(testRoot.root, hostPath);
  fs.mkdirSync(path.dirname(full), { recursive: true });
  fs.writeFileSync(full, text, { mode });
  fs.chmodSync(full, mode);
  return full;
}

export function readHostFile(testRoot: TestRoot, hostPath: string): string | null {
  const full = path.join(testRoot.root, hostPath);
  return fs.existsSync(full) ? fs.readFileSync(full, 'utf8') : null;
}

function shellQuote(text: string): string {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

/**
 * An executable stub at `hostPath` under the root. It appends `hostPath ARGS...` to the call
 * log, then runs `body` (sh) with ROOT set to the root directory.
 */
export function stub(testRoot: TestRoot, hostPath: string, body = 'exit 0'): void {
  const script = [
    '#!/bin/sh',
    `ROOT=${shellQuote(testRoot.root)}`,
    `printf '%s\\n' "${hostPath}${'$'}{*:+ $*}" >> ${shellQuote(testRoot.callLog)}`,
    body,
    '',
  ].join('\n');
  putFile(testRoot, hostPath, script, 0o755);
}

export function calls(testRoot: TestRoot): string[] {
  if (!fs.existsSync(testRoot.callLog)) return [];
  return fs.readFileSync(testRoot.callLog, 'utf8').split('\n').filter((line) => line !== '');
}

export function clearCalls(testRoot: TestRoot): void {
  fs.rmSync(testRoot.callLog, { force: true });
}

export const defaultOptions: HostOptions = { dom0Mem: '4096M', nbdsMax: 16 };

export function makeHost(testRoot: TestRoot, options: Partial<HostOptions> = {}, now?: () => Date): Host {
  return { transport: new LocalTransport({ root: testRoot.root, ...(now !== undefined ? { now } : {}) }), options: { ...defaultOptions, ...options } };
}

/** Lines added and removed between two texts (a real line diff: every hunk is seen). */
export function lineChanges(before: string, after: string): { added: string[]; removed: string[] } {
  const added: string[] = [];
  const removed: string[] = [];
  for (const part of diffLines(before, after)) {
    const lines = part.value.replace(/\n$/, '').split('\n');
    if (part.added) added.push(...lines);
    else if (part.removed) removed.push(...lines);
  }
  return { added, removed };
}

/** Backups of `hostPath` made by apply: PATH.meshblock-STAMP.bak next to it. */
export function backupsOf(testRoot: TestRoot, hostPath: string): string[] {
  const full = path.join(testRoot.root, hostPath);
  const dir = path.dirname(full);
  const prefix = `${path.basename(full)}.meshblock-`;
  return fs.readdirSync(dir).filter((name) => name.startsWith(prefix) && name.endsWith('.bak')).map((name) => path.join(dir, name));
}
