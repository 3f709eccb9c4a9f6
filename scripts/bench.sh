#!/usr/bin/env bash
# Benchmark: the whole stack on this machine (Postgres, Kafka, the mock agent
# with LATENCY_MS per call, `agentflow serve` in release mode) and the load
# driver: N content-pipeline workflows at concurrency C.
#
#   scripts/bench.sh [N] [C] [LATENCY_MS]     defaults: 1000 32 0
#   POLL_MS=25 ...   poll each workflow every 25 ms instead of waiting for it
#                    with GET ...?wait=finished, a long poll (the default, 0)
#   AGENTFLOW_BIN=path  run this build of `agentflow` instead (A/B comparisons)
#   WARMUP=10000     workflows run first and not measured (0: none)
#   AGENTFLOW_* (any setting) passes through; unset, the shipped defaults
#       of config/agentflow.toml are measured (8 partitions, default fetch wait).
#   Prints workflows/s, create→completed p50/p99 and the CPU time each part
#   of the stack spent per workflow.
#   SLEEPING=10000   first park that many workflows in an hour-long sleep
#                    (each holds a timer, no actor), then measure beside them
#   MODE=memory scripts/bench.sh 10000 64 2000
#       start N workflows (C requests at a time) against LATENCY_MS agents and
#       report peak running workflows and the server's peak resident memory
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000} c=${2:-32} latency=${3:-0}

scripts/stack.sh install
cargo build --release --quiet --bin agentflow --bin agentflow-mock-agent --bin agentflow-bench

# shellcheck source=scripts/bench-env.sh
source scripts/bench-env.sh
bench_stack bench
mock_port=$(free_port)
target/release/agentflow-mock-agent --addr "127.0.0.1:$mock_port" --latency-ms "$latency" >"$dir/mock.log" 2>&1 &
pids+=($!)
export AGENTFLOW_AGENT_URL_TEMPLATE="http://127.0.0.1:$mock_port/agents/{agent}"
"${AGENTFLOW_BIN:-target/release/agentflow}" serve >"$dir/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$api_port/readyz" >/dev/null && break
  sleep 0.1
done
echo "== $n workflows, concurrency $c, agent latency ${latency} ms;" \
  "topic partitions ${AGENTFLOW_PARTITIONS:-default}, fetch wait ${AGENTFLOW_KAFKA_FETCH_WAIT_MS:-default} ms"
if [ "${MODE:-}" = memory ]; then
  target/release/agentflow-bench --url "http://127.0.0.1:$api_port" -n "$n" -c "$c" --hold-pid "${pids[1]}"
  exit 0
fi
if [ "${SLEEPING:-0}" -gt 0 ]; then
  echo "== parking $SLEEPING sleeping workflows"
  target/release/agentflow-bench --url "http://127.0.0.1:$api_port" -n "$SLEEPING" -c "$c" --park
  echo "== agentflow serve resident memory with them parked: $(ps -o rss= -p "${pids[1]}" | awk '{printf "%.0f MiB", $1/1024}')"
fi
# Warm-up, not measured: a production broker and server have run for days;
# a JVM started seconds ago still interprets and compiles Kafka's hot paths
# (measured: Kafka's CPU per workflow is 1.5 ms after 3,000 and 0.6 ms
# after 10,000).
warmup=${WARMUP:-10000}
if [ "$warmup" -gt 0 ]; then
  echo "== warm-up: $warmup workflows (not measured)"
  target/release/agentflow-bench --url "http://127.0.0.1:$api_port" -n "$warmup" -c "$c" --poll-ms "${POLL_MS:-0}" >/dev/null
fi
before=$(cpu_snapshot "${pids[1]}" "${pids[0]}")
target/release/agentflow-bench --url "http://127.0.0.1:$api_port" -n "$n" -c "$c" --poll-ms "${POLL_MS:-0}"
cpu_report "$before" "$(cpu_snapshot "${pids[1]}" "${pids[0]}")" "$n"
echo "== agentflow serve resident memory: $(ps -o rss= -p "${pids[1]}" | awk '{printf "%.0f MiB", $1/1024}')"
