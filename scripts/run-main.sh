#!/usr/bin/env bash
# The main job: install, build, and run the lab — an all-in-one meshblock cluster on this
# machine (an MDM, three SDSs on sparse-file devices, one SDC), with a mirrored 8 GiB thin
# volume vol1 served over NBD on nbd://127.0.0.1:10809/vol1. It stays in the foreground with
# a dashboard; Ctrl-C stops it, and running this again resumes the same cluster and data.
# Extra arguments go to `meshblock lab up` (e.g. --sds 4 --volume vol2:4GiB --detach).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
npm ci --no-audit --no-fund
npm run build

exec node bin/meshblock.cjs lab up --dir "${MESHBLOCK_LAB_DIR:-./meshblock-lab}" "$@"
