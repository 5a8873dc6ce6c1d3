// Lint for src/, test/ and the scripts (`npm run lint`, part of scripts/test.sh). TypeScript
// files get typescript-eslint's recommended-type-checked set, which reads the type checker:
// that is what lets no-floating-promises and no-misused-promises see that a call returns a
// promise (STYLE.md: "No floating promises. Every background task has its failure handled.").
// A rule of the set is turned off below only where it fights how the code is meant to read,
// each with the reason; none is off because it found a bug.
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    // Build output, the native addon's build, dependencies and tap's coverage and run output.
    ignores: ['dist/**', 'build/**', 'node_modules/**', 'coverage/**', '.tap/**', 'bench-out/**'],
  },
  {
    files: ['**/*.ts'],
    extends: [js.configs.recommended, ...tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: {
        // tsconfig.test.json covers src/ and test/ together, as `npm run typecheck` does.
        project: './tsconfig.test.json',
        tsconfigRootDir: import.meta.dirname,
      },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          // tap queues a subtest and awaits it itself: the promise t.test() returns settles
          // when the subtest ends, and a failure inside it is reported as a failed test, not
          // lost. Awaiting every t.test() would only serialize what tap already serializes.
          allowForKnownSafeCalls: [
            { from: 'package', package: '@tapjs/test', name: ['test', 'skip', 'todo', 'only'] },
            { from: 'package', package: '@tapjs/core', name: ['test', 'skip', 'todo', 'only'] },
          ],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      // About 250 of its 340 findings are `as T` on index reads (`match[1] as string`), written
      // on purpose: without noUncheckedIndexedAccess the checker calls them unnecessary, but
      // they mark where a value is taken on trust, and are the assertions that option needs.
      // The rest pin a type that inference happens to reach too (yargs builders cast to the
      // Argv their handler reads, `'info' as Level`): removing them saves nothing.
      '@typescript-eslint/no-unnecessary-type-assertion': 'off',
      // An async function without await is how this code implements a promise-returning
      // interface (BlockBackend.extents, host modules' plan() and check(), tap callbacks):
      // `async` turns a throw into a rejection, which callers rely on. Dropping it would not.
      '@typescript-eslint/require-await': 'off',
      // Parameters that a signature needs but the body does not use start with `_`, as tsc's
      // noUnusedParameters already accepts.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  {
    // Every value these two files stringify is an `unknown` narrowed to `{}` by a check for
    // undefined: yargs' flag values (strings or numbers at run time) and a bad JSON value
    // described in an error message, where String() prints what was sent, as meant. The rule
    // cannot tell `{}` from a real object; it stays on everywhere else.
    files: ['src/cli/manage.ts', 'src/mdm/rest-body.ts'],
    rules: { '@typescript-eslint/no-base-to-string': 'off' },
  },
  {
    // Tests match column-aligned output literally (`/FAIL  packages     not installed/`):
    // `/ {5}/` would hide the layout that the assertion is about.
    files: ['test/**/*.ts'],
    rules: { 'no-regex-spaces': 'off' },
  },
  {
    // The bench scripts, the VM harness, the CLI's launcher and a test helper written in plain
    // JavaScript: no tsconfig covers them, so they get the JavaScript rules only.
    files: ['**/*.mjs', '**/*.cjs', '**/*.js'],
    extends: [js.configs.recommended],
    languageOptions: {
      globals: { ...globals.node },
    },
  },
  {
    // The web dashboard's client (served as ES modules to the browser, no build step).
    files: ['web/**/*.js'],
    languageOptions: { globals: { ...globals.browser } },
  },
  {
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs' },
  },
);
