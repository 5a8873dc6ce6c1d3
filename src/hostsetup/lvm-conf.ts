// The LVM filter module's text work: read `/etc/lvm/lvm.conf` and make LVM accept NBD
// devices (`/dev/nbdN`), which is what an LVM storage repository on a meshblock volume needs.
// Pure functions over the file's text: no I/O here; the module that reads and writes the file
// (locally or over SSH) calls them.
//
// What "accept" takes, by LVM's rules (lvm.conf(5)):
//   - `devices/types`: block device types LVM uses besides its built-in list. lvm2 2.03 knows
//     "nbd"; older releases may not, and the LVM SR must work on both, so "nbd" is listed
//     (ScaleIO's XenServer guide does the same for its "scini" devices). Listing a type LVM
//     already knows is harmless (the VM test runs LVM with it).
//   - `devices/filter` and `devices/global_filter`: lists of "a|regex|" (accept) and
//     "r|regex|" (reject) patterns, tried in order against each device path; the first that
//     matches decides; a path no pattern matches is accepted. A filter that would reject
//     /dev/nbd0 gets an accept pattern for NBD devices in front; one that accepts it already
//     (XenServer's own: it rejects only /dev/xvd. and VG_Xen LVs) is left as it is.
//   - `devices/use_devicesfile = 1` (RHEL 9's default): only devices listed in
//     /etc/lvm/devices/system.devices are used, whatever the filters say. That is reported;
//     the device must be added with `lvmdevices --adddev` once attached.
//
// The edit keeps every other byte of the file: comments, ordering, indentation, and every
// existing rule. Applying it to its own output changes nothing.

import { MeshblockError } from '../common/errors.js';

/** The accept pattern put in front of a filter that would reject NBD devices. */
export const nbdAcceptPattern = 'a|^/dev/nbd[0-9]+(p[0-9]+)?$|';
/** The path a filter is tried against to decide whether it accepts NBD devices. */
export const nbdProbePath = '/dev/nbd0';
export const nbdTypeName = 'nbd';
/** Partitions per NBD device, as the kernel's nbd module allows by default (max_part). */
export const nbdTypePartitionsMax = 16;

export type LvmFilterName = 'filter' | 'global_filter';

/** A setting found (not commented out) in the `devices { }` section. */
export interface LvmSetting {
  name: string;
  /** Raw text of the value, from after `=` to the end of its last line (without newline). */
  valueText: string;
  /** Line indexes (0-based) the setting spans, inclusive. */
  firstLine: number;
  lastLine: number;
  indent: string;
}

export interface LvmFilterState {
  name: LvmFilterName;
  /** Null when the setting is absent (LVM's default accepts every device). */
  patterns: string[] | null;
  acceptsNbd: boolean;
  /** The pattern that decided for /dev/nbd0, if any matched. */
  decidedBy: string | null;
}

export interface LvmConfCheck {
  filters: LvmFilterState[];
  types: Array<string | number> | null;
  typesListNbd: boolean;
  useDevicesFile: boolean;
  /** True when nothing needs changing in the file. */
  ok: boolean;
  /** One line per finding, for `host check`. */
  findings: string[];
}

export interface LvmConfEdit {
  text: string;
  changed: boolean;
  /** One line per change made, for `host plan` / `apply`. */
  changes: string[];
  /** Things the edit cannot fix in the file (the devices file), for the administrator. */
  warnings: string[];
}

export class LvmConfError extends MeshblockError {}

interface DevicesSection {
  lines: string[];
  /** Index of the `devices {` line and of its closing `}` line. */
  openLine: number;
  closeLine: number;
  settings: Map<string, LvmSetting>;
}

/** Strips a `#` comment that is not inside a string. */
function uncommented(line: string): string {
  let inString = false;
  for (let index = 0; index < line.length; index += 1) {
    const char = line[index];
    if (char === '\\' && inString) {
      index += 1;
    } else if (char === '"') {
      inString = !inString;
    } else if (char === '#' && !inString) {
      return line.slice(0, index);
    }
  }
  return line;
}

/** Opening minus closing characters outside strings: `{`/`}` for sections, `[`/`]` for lists. */
function nestingDelta(code: string, open: string, close: string): number {
  let delta = 0;
  let inString = false;
  for (let index = 0; index < code.length; index += 1) {
    const char = code[index];
    if (char === '\\' && inString) index += 1;
    else if (char === '"') inString = !inString;
    else if (!inString && char === open) delta += 1;
    else if (!inString && char === close) delta -= 1;
  }
  return delta;
}

const braceDelta = (code: string): number => nestingDelta(code, '{', '}');
const bracketDelta = (code: string): number => nestingDelta(code, '[', ']');

function findDevicesSection(text: string): DevicesSection {
  const lines = text.split('\n');
  let depth = 0;
  for (let index = 0; index < lines.length; index += 1) {
    const code = uncommented(lines[index] as string);
    if (depth === 0 && /^\s*devices\s*\{/.test(code)) {
      let inner = braceDelta(code);
      let close = index;
      const settings = new Map<string, LvmSetting>();
      for (let cursor = index + 1; cursor < lines.length && inner > 0; cursor += 1) {
        const line = lines[cursor] as string;
        const lineCode = uncommented(line);
        const match = inner === 1 ? /^(\s*)([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(lineCode) : null;
        if (match !== null) {
          let last = cursor;
          let open = bracketDelta(lineCode);
          while (open > 0 && last + 1 < lines.length) {
            last += 1;
            open += bracketDelta(uncommented(lines[last] as string));
          }
          if (open !== 0) throw new LvmConfError('MB_ERR_LVM_CONF_SYNTAX', `lvm.conf line ${cursor + 1}: '${(match[2] as string)}' has an unclosed '['`);
          const valueLines = [match[3] as string, ...lines.slice(cursor + 1, last + 1).map(uncommented)];
          settings.set(match[2] as string, { name: match[2] as string, valueText: valueLines.join('\n').trimEnd(), firstLine: cursor, lastLine: last, indent: match[1] as string });
          inner += braceDelta(valueLines.join('\n'));
          cursor = last;
          close = last;
          continue;
        }
        inner += braceDelta(lineCode);
        close = cursor;
      }
      if (inner !== 0) throw new LvmConfError('MB_ERR_LVM_CONF_SYNTAX', `lvm.conf line ${index + 1}: the devices section is not closed`);
      return { lines, openLine: index, closeLine: close, settings };
    }
    depth += braceDelta(code);
  }
  throw new LvmConfError('MB_ERR_LVM_CONF_SYNTAX', 'lvm.conf has no devices { } section');
}

/** Parses an LVM array value: `[ "a|x|", "r|y|" ]` or `[ "fd", 16 ]`. */
export function parseLvmArray(valueText: string, what: string): Array<string | number> {
  const items: Array<string | number> = [];
  const body = valueText.trim();
  if (!body.startsWith('[') || !body.endsWith(']')) {
    // A single string is allowed where a list is expected.
    const single = /^"((?:[^"\\]|\\.)*)"$/.exec(body);
    if (single !== null) return [(single[1] as string).replace(/\\(.)/g, '$1')];
    throw new LvmConfError('MB_ERR_LVM_CONF_SYNTAX', `lvm.conf: ${what} is not a list: ${body}`);
  }
  const token = /\s*(?:"((?:[^"\\]|\\.)*)"|(-?[0-9]+))\s*(,|$)/y;
  const inner = body.slice(1, -1);
  token.lastIndex = 0;
  while (token.lastIndex < inner.length) {
    if (/^\s*$/.test(inner.slice(token.lastIndex))) break;
    const start = token.lastIndex;
    const match = token.exec(inner);
    if (match === null) throw new LvmConfError('MB_ERR_LVM_CONF_SYNTAX', `lvm.conf: cannot read ${what} at '${inner.slice(start).trim()}'`);
    items.push(match[1] !== undefined ? match[1].replace(/\\(.)/g, '$1') : Number(match[2]));
  }
  return items;
}

function formatLvmArray(items: Array<string | number>): string {
  return `[ ${items.map((item) => (typeof item === 'number' ? String(item) : `"${item.replace(/["\\]/g, '\\$&')}"`)).join(', ')} ]`;
}

/**
 * Tries LVM filter patterns against a path: the first match decides, no match accepts.
 * Throws on a pattern LVM would refuse too (no a/r prefix, no delimiters).
 */
export function filterDecision(patterns: readonly string[], devicePath: string): { accepted: boolean; decidedBy: string | null } {
  for (const pattern of patterns) {
    const kind = pattern[0];
    const delimiter = pattern[1];
    if ((kind !== 'a' && kind !== 'r') || delimiter === undefined || pattern.length < 3 || pattern[pattern.length - 1] !== delimiter) {
      throw new LvmConfError('MB_ERR_LVM_CONF_SYNTAX', `lvm.conf: filter pattern "${pattern}" is not "a|regex|" or "r|regex|"`);
    }
    let regex: RegExp;
    try {
      regex = new RegExp(pattern.slice(2, -1));
    } catch (error) {
      throw new LvmConfError('MB_ERR_LVM_CONF_SYNTAX', `lvm.conf: filter pattern "${pattern}" is not a regular expression: ${(error as Error).message}`);
    }
    if (regex.test(devicePath)) return { accepted: kind === 'a', decidedBy: pattern };
  }
  return { accepted: true, decidedBy: null };
}

function asPatterns(items: Array<string | number>, name: string): string[] {
  return items.map((item) => {
    if (typeof item !== 'string') throw new LvmConfError('MB_ERR_LVM_CONF_SYNTAX', `lvm.conf: ${name} holds a number (${item}), not a pattern`);
    return item;
  });
}

function isTrue(setting: LvmSetting | undefined): boolean {
  return setting !== undefined && /^1\b/.test(setting.valueText.trim());
}

/** What the file says about NBD devices, and whether it needs an edit. */
export function checkLvmConf(text: string): LvmConfCheck {
  const section = findDevicesSection(text);
  const findings: string[] = [];
  const filters: LvmFilterState[] = [];
  for (const name of ['filter', 'global_filter'] as const) {
    const setting = section.settings.get(name);
    if (setting === undefined) {
      filters.push({ name, patterns: null, acceptsNbd: true, decidedBy: null });
      findings.push(`devices/${name} is not set: every device is accepted`);
      continue;
    }
    const patterns = asPatterns(parseLvmArray(setting.valueText, `devices/${name}`), `devices/${name}`);
    const { accepted, decidedBy } = filterDecision(patterns, nbdProbePath);
    filters.push({ name, patterns, acceptsNbd: accepted, decidedBy });
    findings.push(
      accepted
        ? `devices/${name} accepts ${nbdProbePath} (${decidedBy === null ? 'no pattern matches it' : `"${decidedBy}"`})`
        : `devices/${name} rejects ${nbdProbePath} ("${decidedBy ?? ''}")`,
    );
  }
  const typesSetting = section.settings.get('types');
  const types = typesSetting === undefined ? null : parseLvmArray(typesSetting.valueText, 'devices/types');
  const typesListNbd = types !== null && types.includes(nbdTypeName);
  findings.push(typesListNbd ? 'devices/types lists "nbd"' : 'devices/types does not list "nbd" (older lvm2 releases do not know the type)');
  const useDevicesFile = isTrue(section.settings.get('use_devicesfile'));
  if (useDevicesFile) findings.push('devices/use_devicesfile = 1: an attached NBD device must be added with lvmdevices --adddev');
  return { filters, types, typesListNbd, useDevicesFile, ok: typesListNbd && filters.every((filter) => filter.acceptsNbd), findings };
}

/**
 * Makes the file accept NBD devices: "nbd" in devices/types, and an accept pattern in front of
 * any filter that would reject them. Returns the new text (equal to the old when nothing was
 * needed) and what changed.
 */
export function editLvmConf(text: string): LvmConfEdit {
  const check = checkLvmConf(text);
  const section = findDevicesSection(text);
  const lines = [...section.lines];
  const changes: string[] = [];
  const warnings: string[] = [];
  // Replacements from the bottom up, so earlier line numbers stay valid.
  const replacements: Array<{ first: number; last: number; with: string[] }> = [];

  for (const filter of check.filters) {
    if (filter.acceptsNbd || filter.patterns === null) continue;
    const setting = section.settings.get(filter.name) as LvmSetting;
    const patterns = [nbdAcceptPattern, ...filter.patterns];
    replacements.push({ first: setting.firstLine, last: setting.lastLine, with: [`${setting.indent}${filter.name} = ${formatLvmArray(patterns)}`] });
    changes.push(`devices/${filter.name}: accept NBD devices first ("${nbdAcceptPattern}"), keeping ${filter.patterns.length} existing pattern(s)`);
  }

  if (!check.typesListNbd) {
    const setting = section.settings.get('types');
    if (setting !== undefined && check.types !== null) {
      const value = formatLvmArray([...check.types, nbdTypeName, nbdTypePartitionsMax]);
      replacements.push({ first: setting.firstLine, last: setting.lastLine, with: [`${setting.indent}types = ${value}`] });
    } else {
      // After the commented-out example of the option where the file has one, so the setting
      // sits with its documentation; else at the end of the section.
      let anchor = -1;
      for (let index = section.openLine + 1; index < section.closeLine; index += 1) {
        if (/^\s*#\s*types\s*=/.test(lines[index] as string)) anchor = index;
      }
      const indent = anchor >= 0 ? (/^(\s*)/.exec(lines[anchor] as string)?.[1] ?? '\t') : '\t';
      const inserted = `${indent}types = ${formatLvmArray([nbdTypeName, nbdTypePartitionsMax])}`;
      if (anchor >= 0) replacements.push({ first: anchor + 1, last: anchor, with: [inserted] });
      else replacements.push({ first: section.closeLine, last: section.closeLine - 1, with: [inserted] });
    }
    changes.push(`devices/types: list "nbd" with ${nbdTypePartitionsMax} partitions`);
  }

  if (check.useDevicesFile) warnings.push('devices/use_devicesfile = 1: after attaching, run lvmdevices --adddev /dev/nbdN for LVM to use the device');

  replacements.sort((left, right) => right.first - left.first);
  for (const replacement of replacements) {
    lines.splice(replacement.first, replacement.last - replacement.first + 1, ...replacement.with);
  }
  const edited = lines.join('\n');
  return { text: edited, changed: edited !== text, changes, warnings };
}
