#!/usr/bin/env bash
# A/B (or A/B/C...) of commits with the bench, interleaved in the same hour, as docs/performance.md asks:
#   bash bench/ab.sh OUTDIR RUNS name=commit [name=commit ...]
# Each commit is checked out in a worktree beside this checkout (/work-tree-parent/ab-<name>) sharing this
# checkout's node_modules; the runs go A B C, A B C, ... so drift of the machine hits every side alike. Env:
# REDIS_URL (default redis://127.0.0.1:6390, a private `redis-server --port 6390 --hz 50 --save '' --appendonly no`),
# MSGS (10000), CONVS (1000), WORKERS (1), ARGS_<name> (more bench options for that side only, e.g.
# ARGS_B='--numbers 1' to run a newer bench as an older one ran). Then: npx tsx bench/ab-report.ts OUTDIR name,name,...
set -euo pipefail
OUT=$1; RUNS=$2; shift 2
ROOT=$(git rev-parse --show-toplevel)
mkdir -p "$OUT"
for spec in "$@"; do
  n=${spec%%=*}; c=${spec#*=}; d="$(dirname "$ROOT")/ab-$n"
  if [ ! -d "$d" ]; then git -C "$ROOT" worktree add -q --detach "$d" "$c"; else git -C "$d" checkout -q --detach "$c"; fi
  rm -rf "$d/node_modules"; ln -s "$ROOT/node_modules" "$d/node_modules"
done
for i in $(seq 1 "$RUNS"); do
  for spec in "$@"; do
    n=${spec%%=*}; d="$(dirname "$ROOT")/ab-$n"
    (cd "$d" && timeout 900 node --import tsx src/cli.ts bench --redis-url "${REDIS_URL:-redis://127.0.0.1:6390}" \
      --messages "${MSGS:-10000}" --conversations "${CONVS:-1000}" --workers "${WORKERS:-1}" --json $(eval echo "\${ARGS_$n:-}") \
      > "$OUT/$n-$i.json" 2> "$OUT/$n-$i.err") || echo "run $n $i failed (see $OUT/$n-$i.err)"
    echo "$(date +%T) $n run $i done"
  done
done
