#!/usr/bin/env bash
# The test command: installs what the tests need, builds, type-checks, lints and runs every test
# (tap) against the real programs. Prints "N passed, N failed, N skipped" last.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
npm ci --no-audit --no-fund
npm run build
npm run typecheck
npm run lint

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
npx tap --reporter=tap 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# tap's last summary line looks like "# { total: 62, pass: 60, fail: 1, skip: 1 }".
summary=$(grep -E '^# \{ total: ' "$log" | tail -n 1 || true)
count() { sed -nE "s/.*[ {]$1: ([0-9]+).*/\1/p" <<<"$summary"; }
passed=$(count pass); failed=$(count fail); skipped=$(count skip)
echo
echo "${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped"
if [[ -z "$summary" ]]; then
  echo "test.sh: tap printed no summary" >&2
  exit 1
fi
exit "$status"
