// Packages that only some commands need, loaded the first time they are used. Loading every
// package at start cost each `meshblock` run about 0.9 s of CPU here, 0.6 s of it etcd3's gRPC
// stack, though only an MDM in an etcd cluster talks to etcd: every CLI call, every daemon start
// and every test that spawns one paid it. These packages are CommonJS, so `require` loads them
// synchronously and their callers stay synchronous.
//
//   import type * as Etcd3 from 'etcd3';
//   const etcd3 = lazyModule<typeof Etcd3>('etcd3');
//   ... new (etcd3().Etcd3)(options)

import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** A function that returns the package `specifier`, loading it on the first call. */
export function lazyModule<Module>(specifier: string): () => Module {
  let loaded: Module | undefined;
  return () => {
    loaded ??= require(specifier) as Module;
    return loaded;
  };
}
