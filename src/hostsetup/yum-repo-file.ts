// The text work of the yum-repos module: read a yum .repo file and set `enabled=` in chosen
// sections. Pure functions over the file's text, like lvm-conf.ts.
//
// A .repo file is read by yum with Python's ConfigParser: `[section]` headers, `key=value`
// (or `key: value`) lines, comment lines starting with `#` or `;`, and continuation lines
// that start with whitespace. Keys are case-insensitive. A repository without an `enabled`
// key is enabled (yum's default is 1), so CentOS's stock file enables base and updates by
// saying nothing; XenServer ships the same file with `enabled=0` in each.
//
// The edit changes only the value of each `enabled` line of the chosen sections (the key,
// its spacing and the line ending stay), or adds `enabled=N` right below the section header
// when the key is absent. Every other byte stays, so the file diffs to those lines only.

import { MeshblockError } from '../common/errors.js';

export class RepoFileError extends MeshblockError {}

export interface RepoKey {
  /** Lower case, as ConfigParser keeps it. */
  name: string;
  value: string;
  line: number;
}

export interface RepoSection {
  name: string;
  headerLine: number;
  keys: RepoKey[];
}

const trueWords = new Set(['1', 'yes', 'true', 'on']);
const falseWords = new Set(['0', 'no', 'false', 'off']);

function stripCr(line: string): string {
  return line.endsWith('\r') ? line.slice(0, -1) : line;
}

/** The sections of a .repo file; throws RepoFileError naming the line yum would refuse. */
export function parseRepoFile(text: string, fileName = 'the .repo file'): RepoSection[] {
  const sections: RepoSection[] = [];
  const lines = text.split('\n');
  let current: RepoSection | null = null;
  let lastKey: RepoKey | null = null;
  lines.forEach((raw, index) => {
    const line = stripCr(raw);
    const where = `${fileName} line ${index + 1}`;
    if (line.trim() === '' || /^[#;]/.test(line)) {
      lastKey = null;
      return;
    }
    if (/^\s/.test(line)) {
      // A continuation of the previous value (ConfigParser joins them with newlines).
      if (lastKey === null) throw new RepoFileError('MB_ERR_REPO_SYNTAX', `${where}: indented line '${line.trim()}' continues no key`);
      lastKey.value = `${lastKey.value}\n${line.trim()}`;
      return;
    }
    if (line.startsWith('[')) {
      const header = /^\[([^\]]+)\]/.exec(line);
      if (header === null) throw new RepoFileError('MB_ERR_REPO_SYNTAX', `${where}: '${line}' is not a [section] header`);
      const name = (header[1] as string).trim();
      if (sections.some((section) => section.name === name)) throw new RepoFileError('MB_ERR_REPO_SYNTAX', `${where}: section [${name}] appears twice`);
      current = { name, headerLine: index, keys: [] };
      sections.push(current);
      lastKey = null;
      return;
    }
    const pair = /^([^=:\s][^=:]*?)\s*[=:]\s*(.*)$/.exec(line);
    if (pair === null) throw new RepoFileError('MB_ERR_REPO_SYNTAX', `${where}: '${line}' is neither a [section], a key=value nor a comment`);
    if (current === null) throw new RepoFileError('MB_ERR_REPO_SYNTAX', `${where}: '${line}' comes before any [section]`);
    const key: RepoKey = { name: (pair[1] as string).toLowerCase(), value: (pair[2] as string).trim(), line: index };
    (current as RepoSection).keys.push(key);
    lastKey = key;
  });
  return sections;
}

/** Whether yum uses the repository: the last `enabled` wins, absent means enabled. */
export function sectionEnabled(section: RepoSection, fileName = 'the .repo file'): boolean {
  const keys = section.keys.filter((key) => key.name === 'enabled');
  const last = keys[keys.length - 1];
  if (last === undefined) return true;
  const word = last.value.toLowerCase();
  if (trueWords.has(word)) return true;
  if (falseWords.has(word)) return false;
  throw new RepoFileError('MB_ERR_REPO_SYNTAX', `${fileName} line ${last.line + 1}: [${section.name}] enabled=${last.value} is not 0 or 1`);
}

export interface RepoEdit {
  text: string;
  changed: boolean;
  /** One line per change: `[base] enabled=0 -> enabled=1`. */
  changes: string[];
}

/**
 * Sets `enabled` in each named section to `enabled`; every section must exist. A section
 * already so is left alone, byte for byte.
 */
export function setReposEnabled(text: string, names: readonly string[], enabled: boolean, fileName = 'the .repo file'): RepoEdit {
  const sections = parseRepoFile(text, fileName);
  const lines = text.split('\n');
  const value = enabled ? '1' : '0';
  const changes: string[] = [];
  const inserts: Array<{ after: number; line: string }> = [];
  for (const name of names) {
    const section = sections.find((entry) => entry.name === name);
    if (section === undefined) throw new RepoFileError('MB_ERR_REPO_SECTION_MISSING', `${fileName} has no [${name}] section (sections: ${sections.map((entry) => entry.name).join(', ') || 'none'})`);
    if (sectionEnabled(section, fileName) === enabled) continue;
    const keys = section.keys.filter((key) => key.name === 'enabled');
    if (keys.length === 0) {
      const header = lines[section.headerLine] as string;
      inserts.push({ after: section.headerLine, line: `enabled=${value}${header.endsWith('\r') ? '\r' : ''}` });
      changes.push(`[${name}] add enabled=${value}`);
      continue;
    }
    for (const key of keys) {
      // Keep the key as written and its separator; only the value changes.
      const line = lines[key.line] as string;
      const ending = line.endsWith('\r') ? '\r' : '';
      const prefix = /^[^=:]*[=:]\s*/.exec(stripCr(line))?.[0] ?? 'enabled=';
      lines[key.line] = `${prefix}${value}${ending}`;
      changes.push(`[${name}] enabled=${key.value} -> enabled=${value}`);
    }
  }
  inserts.sort((left, right) => right.after - left.after);
  for (const insert of inserts) lines.splice(insert.after + 1, 0, insert.line);
  const edited = lines.join('\n');
  return { text: edited, changed: edited !== text, changes };
}
