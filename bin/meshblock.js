#!/usr/bin/env node
// The meshblock command. libuv's thread pool serves all file IO, and its size must be set
// before the pool starts, so it is set here, before anything else is loaded.
const { ioThreadsDefault } = await import('../dist/common/limits.js');
if (process.env.UV_THREADPOOL_SIZE === undefined) process.env.UV_THREADPOOL_SIZE = String(ioThreadsDefault);
const { main } = await import('../dist/cli/main.js');
await main(process.argv.slice(2));
