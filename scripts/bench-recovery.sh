#!/usr/bin/env bash
# Recovery benchmark: how long `agentflow serve` takes from start to ready
# (/readyz 200: every owned partition replayed and live) with an empty log,
# and with N finished workflows of history in the log.
#
#   scripts/bench-recovery.sh [N]        default 100000
#
# Steps: ready time on an empty log; seed N finished workflows straight into
# the log; first start (projects the history, replaying it whole); restart
# (starts from the projection's checkpoint); restart with checkpoints off
# (AGENTFLOW_ENGINE_CHECKPOINTS=false: the whole log is replayed).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}

scripts/stack.sh install
cargo build --release --quiet --bin agentflow --bin agentflow-seed

dir=$(mktemp -d /tmp/agentflow-recovery.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  scripts/stack.sh stop "$dir" || true
  rm -rf "$dir"
}
trap cleanup EXIT
scripts/stack.sh start "$dir"
# shellcheck disable=SC1091
source "$dir/env"

api_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export AGENTFLOW_JWT_SECRET=bench-secret
export AGENTFLOW_HTTP_ADDR=127.0.0.1:$api_port
export AGENTFLOW_AGENTS_FILE=/dev/null
export AGENTFLOW_LOG=warn
export AGENTFLOW_TOPIC=recovery-bench

# Starts serve; sets $ready to the seconds from exec to /readyz 200.
ready=
time_to_ready() {
  local t0 t1
  t0=$(date +%s.%N)
  target/release/agentflow serve >>"$dir/serve.log" 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$api_port/readyz" >/dev/null; do sleep 0.02; done
  t1=$(date +%s.%N)
  ready=$(echo "$t1 - $t0" | bc)
}

stop_serve() {
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
}

projected() {
  psql -tA "$AGENTFLOW_DATABASE_URL" -c "SELECT count(*) FROM workflows WHERE status = 'completed'"
}

time_to_ready; empty=$ready; stop_serve
echo "== empty log: ready in ${empty} s"

target/release/agentflow-seed -n "$n"
time_to_ready; first=$ready
echo "== first start over $n finished workflows (no checkpoint yet, whole log replayed): ready in ${first} s"
until [ "$(projected)" -ge "$n" ]; do sleep 0.5; done
echo "   projection caught up: $(projected) completed workflows in Postgres"
stop_serve

time_to_ready; checkpointed=$ready; stop_serve
echo "== restart with $n finished workflows, from the checkpoint: ready in ${checkpointed} s"

AGENTFLOW_ENGINE_CHECKPOINTS=false time_to_ready; full=$ready; stop_serve
echo "== restart with $n finished workflows, checkpoints off (whole log replayed): ready in ${full} s"
echo "== ratio checkpointed / empty: $(echo "scale=2; $checkpointed / $empty" | bc)"
