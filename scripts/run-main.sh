#!/usr/bin/env bash
# The main job, for now: install, build, and serve a 4 GiB sparse disk image over NBD on
# 127.0.0.1:10809 with meshblock's protocol core. (It becomes `meshblock lab up`, the
# all-in-one cluster, when the SDS, MDM and SDC land.) Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
npm ci --no-audit --no-fund
npm run build

dir=${MESHBLOCK_DIR:-./lab-data}
mkdir -p "$dir"
image="$dir/disk0.img"
[[ -e $image ]] || truncate -s "${MESHBLOCK_SIZE:-4G}" "$image"
echo "attach with: nbdinfo nbd://127.0.0.1:10809/   or   nbd-client 127.0.0.1 10809 /dev/nbd0 -N disk0"
exec node bin/meshblock.cjs nbd serve --file "$image" --name disk0 --listen "${MESHBLOCK_LISTEN:-127.0.0.1:10809}"
