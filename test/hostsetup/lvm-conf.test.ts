// The LVM filter edit on the real lvm.conf files of CentOS 7, XenServer and Debian 12
// (../shared/fixtures): what it changes, that it changes nothing else, that a second run
// changes nothing, and that LVM's own parser reads the result (lvmconfig, on this machine).

import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { checkLvmConf, editLvmConf, filterDecision, nbdAcceptPattern, parseLvmArray } from '../../src/hostsetup/lvm-conf.js';
import { lineChanges } from '../helpers/host-root.js';
import { repoRoot, run } from '../helpers/processes.js';

const fixtures = path.resolve(repoRoot, '../shared/fixtures');

function fixture(name: string): string {
  return fs.readFileSync(path.join(fixtures, name, 'etc/lvm/lvm.conf'), 'utf8');
}

async function lvmconfig(t: Test, text: string, key: string): Promise<string> {
  const dir = t.testdir();
  fs.writeFileSync(path.join(dir, 'lvm.conf'), text);
  const result = await run('lvmconfig', ['--type', 'current', key], { env: { LVM_SYSTEM_DIR: dir } });
  t.equal(result.code, 0, `lvmconfig reads ${key}: ${result.stderr.trim()}`);
  return result.stdout.trim();
}

t.test('CentOS 7 (no filter, no types): adds types = [ "nbd", 16 ] below its documentation, nothing else', async (t) => {
  const before = fixture('centos7');
  const check = checkLvmConf(before);
  t.equal(check.ok, false);
  t.same(check.filters.map((filter) => [filter.name, filter.patterns, filter.acceptsNbd]), [['filter', null, true], ['global_filter', null, true]]);
  t.equal(check.typesListNbd, false);
  const edit = editLvmConf(before);
  t.equal(edit.changed, true);
  t.same(edit.changes, ['devices/types: list "nbd" with 16 partitions']);
  const { added, removed } = lineChanges(before, edit.text);
  t.same(removed, []);
  t.same(added, ['\ttypes = [ "nbd", 16 ]']);
  const index = edit.text.split('\n').indexOf('\ttypes = [ "nbd", 16 ]');
  t.match(edit.text.split('\n')[index - 1], /^\s*#\s*types = \[ "fd", 16 \]/, 'right after the commented example');
  t.equal(await lvmconfig(t, edit.text, 'devices/types'), 'types=["nbd",16]');
});

t.test("XenServer: its filter already accepts /dev/nbd0 and stays as it is; types gets nbd", async (t) => {
  const before = fixture('xenserver');
  const check = checkLvmConf(before);
  const filter = check.filters.find((entry) => entry.name === 'filter');
  t.same(filter?.patterns, ['r|/dev/xvd.|', 'r|/dev/VG_Xen.*/*|']);
  t.equal(filter?.acceptsNbd, true, 'no pattern matches /dev/nbd0');
  const edit = editLvmConf(before);
  const { added, removed } = lineChanges(before, edit.text);
  t.same(removed, []);
  t.same(added, ['\ttypes = [ "nbd", 16 ]']);
  t.ok(edit.text.includes('\tfilter = [ "r|/dev/xvd.|", "r|/dev/VG_Xen.*/*|"]'), "XenServer's filter line is untouched");
  t.equal(await lvmconfig(t, edit.text, 'devices/filter'), 'filter=["r|/dev/xvd.|","r|/dev/VG_Xen.*/*|"]');
});

t.test('Debian 12: types added, the rest of its 111 KB kept byte for byte', async (t) => {
  const before = fixture('debian12');
  const edit = editLvmConf(before);
  const { added, removed } = lineChanges(before, edit.text);
  t.same(removed, []);
  t.same(added, ['\ttypes = [ "nbd", 16 ]']);
  t.equal(edit.text.length, before.length + '\ttypes = [ "nbd", 16 ]\n'.length);
});

t.test('applying the edit to its own output changes nothing (every fixture)', async (t) => {
  for (const name of ['centos7', 'xenserver', 'debian12']) {
    const once = editLvmConf(fixture(name));
    const twice = editLvmConf(once.text);
    t.equal(twice.changed, false, name);
    t.same(twice.changes, [], name);
    t.equal(checkLvmConf(once.text).ok, true, `${name}: check passes after the edit`);
  }
});

t.test('a filter that rejects NBD devices gets an accept pattern in front, every rule kept', async (t) => {
  // The RHEL-style whitelist: only the system disk, everything else rejected.
  const before = fixture('xenserver').replace(
    '\tfilter = [ "r|/dev/xvd.|", "r|/dev/VG_Xen.*/*|"]',
    '\tfilter = [ "a|^/dev/sda[0-9]*$|",\n\t\t"r|.*|" ]\n\tglobal_filter = [ "r|/dev/nbd|" ]',
  );
  const check = checkLvmConf(before);
  t.same(check.filters.map((filter) => [filter.name, filter.acceptsNbd, filter.decidedBy]), [['filter', false, 'r|.*|'], ['global_filter', false, 'r|/dev/nbd|']]);
  const edit = editLvmConf(before);
  t.equal(edit.changes.length, 3);
  const { removed, added } = lineChanges(before, edit.text);
  t.same(removed, ['\tfilter = [ "a|^/dev/sda[0-9]*$|",', '\t\t"r|.*|" ]', '\tglobal_filter = [ "r|/dev/nbd|" ]']);
  t.same(added, [`\tfilter = [ "${nbdAcceptPattern}", "a|^/dev/sda[0-9]*$|", "r|.*|" ]`, `\tglobal_filter = [ "${nbdAcceptPattern}", "r|/dev/nbd|" ]`, '\ttypes = [ "nbd", 16 ]']);
  const after = checkLvmConf(edit.text);
  t.equal(after.ok, true);
  const patterns = after.filters[0]?.patterns ?? [];
  t.equal(filterDecision(patterns, '/dev/sda1').accepted, true, 'the system disk is still accepted');
  t.equal(filterDecision(patterns, '/dev/sdb').accepted, false, 'other disks are still rejected');
  t.equal(filterDecision(patterns, '/dev/nbd3p1').accepted, true, 'an NBD partition is accepted');
  t.equal(await lvmconfig(t, edit.text, 'devices/global_filter'), `global_filter=["${nbdAcceptPattern}","r|/dev/nbd|"]`);
});

t.test('an existing types list keeps its entries and gains nbd', async (t) => {
  const before = fixture('debian12').replace('\t# types = [ "fd", 16 ]', '\t# types = [ "fd", 16 ]\n\ttypes = [ "fd", 16, "drbd", 8 ]');
  const edit = editLvmConf(before);
  const { removed, added } = lineChanges(before, edit.text);
  t.same(removed, ['\ttypes = [ "fd", 16, "drbd", 8 ]']);
  t.same(added, ['\ttypes = [ "fd", 16, "drbd", 8, "nbd", 16 ]']);
});

t.test('use_devicesfile = 1 is reported: the filter alone does not make LVM use the device', async (t) => {
  const before = fixture('debian12').replace('\t# use_devicesfile = 0', '\tuse_devicesfile = 1');
  t.match(checkLvmConf(before).findings.join('\n'), /use_devicesfile = 1/);
  t.match(editLvmConf(before).warnings.join('\n'), /lvmdevices --adddev/);
});

t.test('bad input is refused with what is wrong, and nothing is produced', async (t) => {
  t.throws(() => checkLvmConf('global {\n}\n'), { code: 'MB_ERR_LVM_CONF_SYNTAX', message: /no devices/ });
  t.throws(() => checkLvmConf('devices {\n\tfilter = [ "a|x|",\n'), { code: 'MB_ERR_LVM_CONF_SYNTAX', message: /unclosed/ });
  t.throws(() => checkLvmConf('devices {\n\tfilter = [ "x|y|" ]\n}\n'), { code: 'MB_ERR_LVM_CONF_SYNTAX', message: /"x\|y\|"/ });
  t.throws(() => checkLvmConf('devices {\n\tfilter = [ "a|(|" ]\n}\n'), { code: 'MB_ERR_LVM_CONF_SYNTAX', message: /not a regular expression/ });
  t.throws(() => checkLvmConf('devices {\n\tfilter = [ 7 ]\n}\n'), { code: 'MB_ERR_LVM_CONF_SYNTAX', message: /number/ });
  t.throws(() => parseLvmArray('[ "a", ]x', 'x'), { code: 'MB_ERR_LVM_CONF_SYNTAX' });
});

t.test('a nested section named devices is not the devices section', async (t) => {
  const text = 'activation {\n\tdevices {\n\t\tfilter = [ "r|.*|" ]\n\t}\n}\ndevices {\n\t# types = [ "fd", 16 ]\n}\n';
  const check = checkLvmConf(text);
  t.equal(check.filters[0]?.patterns, null);
  t.equal(editLvmConf(text).text, 'activation {\n\tdevices {\n\t\tfilter = [ "r|.*|" ]\n\t}\n}\ndevices {\n\t# types = [ "fd", 16 ]\n\ttypes = [ "nbd", 16 ]\n}\n');
});
