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

# shellcheck source=scripts/bench-env.sh
source scripts/bench-env.sh
bench_stack recovery
export AGENTFLOW_TOPIC=recovery-bench

# Starts serve; sets $ready to the seconds from exec to /readyz 200.
ready=
time_to_ready() {
  local t0 t1
  t0=$(date +%s.%N)
  target/release/agentflow serve >>"$dir/serve.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  until curl -sf "http://127.0.0.1:$api_port/readyz" >/dev/null; do sleep 0.02; done
  t1=$(date +%s.%N)
  ready=$(echo "$t1 - $t0" | bc)
}

stop_serve() {
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
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
