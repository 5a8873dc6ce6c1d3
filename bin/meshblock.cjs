#!/usr/bin/env node
// The meshblock command. libuv's thread pool serves file IO, and its size is read once,
// when the pool starts. This entry point is CommonJS on purpose: an ES-module entry has
// already started the pool (the module loader reads files through it) before its first
// line runs, so the setting below would come too late.
'use strict';
const ioThreadsDefault = 16; // src/common/limits.ts ioThreadsDefault; checked by test/cli/usage.test.ts
if (process.env.UV_THREADPOOL_SIZE === undefined) process.env.UV_THREADPOOL_SIZE = String(ioThreadsDefault);
import('../dist/cli/main.js').then(
  ({ main }) => main(process.argv.slice(2)),
  (err) => {
    process.stderr.write(`meshblock: cannot load dist/ (run npm run build): ${err.message}\n`);
    process.exitCode = 1;
  },
);
