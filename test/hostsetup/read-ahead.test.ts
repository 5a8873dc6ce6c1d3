// ReadAheadTransport (src/hostsetup/host-transport.ts): the reads the host modules make,
// answered from one command that read them ahead. Run on this machine's real files through
// LocalTransport (real `sh`, `cat`), the inner transport counted: after readAhead, readFile,
// exists and firstExisting give what the host itself gives (a text without a last newline,
// an empty file, a directory, a missing path, a name with a quote), without asking it again;
// a write keeps the cache right; a command that may change the host drops it, unless the
// caller said only read-only commands run.

import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { LocalTransport, ReadAheadTransport, type HostTransport } from '../../src/hostsetup/host-transport.js';

/** A transport with each call counted. */
function counted(inner: HostTransport): { transport: HostTransport; calls: string[] } {
  const calls: string[] = [];
  const transport: HostTransport = {
    label: inner.label,
    readFile: (file) => (calls.push(`readFile ${file}`), inner.readFile(file)),
    writeFile: (file, text, options) => (calls.push(`writeFile ${file}`), inner.writeFile(file, text, options)),
    exists: (file) => (calls.push(`exists ${file}`), inner.exists(file)),
    run: (command, args, options) => (calls.push(`run ${command}`), inner.run(command, args, options)),
    backup: (file) => (calls.push(`backup ${file}`), inner.backup(file)),
  };
  return { transport, calls };
}

t.test('reads answered from one command, as the host answers them', async (t) => {
  const dir = t.testdir({ 'lvm.conf': 'devices {\n\ttypes = [ "nbd", 16 ]\n}\n', 'no-newline': 'PRETTY_NAME="X"', empty: '', "it's": 'quoted\n', sub: {} });
  const paths = ['lvm.conf', 'no-newline', 'empty', "it's", 'sub', 'missing'].map((name) => path.join(dir, name));
  const local = new LocalTransport();
  const { transport, calls } = counted(local);
  const cached = new ReadAheadTransport(transport);
  await cached.readAhead(paths);
  t.same(calls, ['run sh'], 'one command');
  for (const file of paths) {
    t.equal(await cached.readFile(file).catch(() => 'unreadable'), await local.readFile(file).catch(() => 'unreadable'), `readFile ${path.basename(file)}`);
    t.equal(await cached.exists(file), await local.exists(file), `exists ${path.basename(file)}`);
  }
  t.equal(await cached.firstExisting([paths[5] as string, paths[1] as string]), paths[1], 'firstExisting skips the missing path');
  t.equal(await cached.firstExisting([paths[5] as string]), null);
  // Tools: whether they exist, never their (binary, maybe large) text.
  const node = process.execPath;
  const tools = new ReadAheadTransport(transport);
  await tools.readAhead([], [node, path.join(dir, 'no-such-tool')]);
  t.equal(await tools.firstExisting([path.join(dir, 'no-such-tool'), node]), node);
  t.equal(calls.filter((call) => call === 'run sh').length, 2, 'one command each');
  // The directory is known to exist but has no text: readFile asks the host (which refuses a directory).
  t.same(calls.filter((call) => call !== `readFile ${paths[4]}`), ['run sh', 'run sh'], 'nothing else asked of the host');

  await cached.writeFile(paths[0] as string, 'new\n');
  t.equal(await cached.readFile(paths[0] as string), 'new\n', 'a write: the cache has the new text');
  t.equal(fs.readFileSync(paths[0] as string, 'utf8'), 'new\n');

  cached.readOnly = true;
  await cached.run('true', []);
  const before = calls.length;
  t.equal(await cached.readFile(paths[1] as string), 'PRETTY_NAME="X"');
  t.equal(calls.length, before, 'read-only commands keep what was read ahead');
  cached.readOnly = false;
  fs.writeFileSync(paths[1] as string, 'changed');
  await cached.run('true', []);
  t.equal(await cached.readFile(paths[1] as string), 'changed', 'any other command drops it: the host is asked again');
  t.equal(calls.at(-1), `readFile ${paths[1]}`);
});

t.test('a read-ahead that fails teaches nothing: the reads go to the host', async (t) => {
  const dir = t.testdir({ file: 'text\n' });
  const local = new LocalTransport();
  // This machine's files, but a shell that fails every command.
  const failing: HostTransport = {
    label: local.label,
    readFile: (file) => local.readFile(file),
    exists: (file) => local.exists(file),
    writeFile: () => Promise.resolve(),
    backup: () => Promise.resolve(null),
    run: () => Promise.resolve({ code: 1, stdout: '', stderr: 'no sh' }),
  };
  const { transport, calls } = counted(failing);
  const cached = new ReadAheadTransport(transport);
  await cached.readAhead([path.join(dir, 'file')]);
  t.equal(await cached.readFile(path.join(dir, 'file')), 'text\n');
  t.same(calls, ['run sh', `readFile ${path.join(dir, 'file')}`]);
});
