#!/usr/bin/env bash
# Measures how long the console's runs list takes to open with N workflows
# (default 10000) of one user in the database: seeds N finished workflows
# into a fresh topic (agentflow-seed), serves them with a fresh database,
# waits until all are projected, then opens /ui in headless Chromium RUNS
# times (default 5) and prints the times (navigation to rows on screen).
#
#   scripts/stack.sh start /tmp/s && source /tmp/s/env
#   scripts/bench-console.sh [N]
#
# Needs what `scripts/stack.sh install test` installs (chromium, the npm
# packages) and a release build is not required (the list is one query).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
: "${AGENTFLOW_TEST_ADMIN_URL:?source the env file of scripts/stack.sh start}"
TARGET=${CARGO_TARGET_DIR:-target}
CACHE=${AGENTFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentflow}
cargo build --quiet -p agentflow -p agentflow-bench
db=console_bench_$RANDOM$RANDOM
topic=console-bench-$db
psql -q "$AGENTFLOW_TEST_ADMIN_URL" -c "CREATE DATABASE $db OWNER agentflow"
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  psql -q "$AGENTFLOW_TEST_ADMIN_URL" -c "DROP DATABASE IF EXISTS $db" || true
}
trap cleanup EXIT
export AGENTFLOW_DATABASE_URL=${AGENTFLOW_TEST_ADMIN_URL%/*}/$db
AGENTFLOW_DATABASE_URL=${AGENTFLOW_DATABASE_URL/postgres@/agentflow@}
export AGENTFLOW_TOPIC=$topic AGENTFLOW_JWT_SECRET=bench-secret AGENTFLOW_HTTP_ADDR=127.0.0.1:0
"$TARGET/debug/agentflow-seed" --topic "$topic" -n "$N" >&2
"$TARGET/debug/agentflow" serve > "/tmp/$db.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  base=$(sed -n 's/^agentflow listening on \(http[^ ]*\).*/\1/p' "/tmp/$db.log")
  [ -n "$base" ] && break
  sleep 0.2
done
[ -n "$base" ] || { cat "/tmp/$db.log"; exit 1; }
token=$("$TARGET/debug/agentflow" token --sub 1)
echo "waiting for $N workflows in the projection..." >&2
for _ in $(seq 1 600); do
  n=$(psql -tA "$AGENTFLOW_DATABASE_URL" -c "SELECT count(*) FROM workflows" 2>/dev/null || echo 0)
  [ "$n" -ge "$N" ] && break
  sleep 0.5
done
echo "projected: $n workflows" >&2
BASE=$base TOKEN_A=$token MEASURE_LIST=1 RUNS=${RUNS:-5} \
  SCREENSHOTS=${CONSOLE_SCREENSHOTS:-$TARGET/console-screenshots} \
  NODE_PATH=$CACHE/console-npm/node_modules node crates/api/ui-tests/console.cjs
