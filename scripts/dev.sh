#!/usr/bin/env bash
# Runs agentflow locally with everything it needs: installs Postgres and the
# Tansu broker if missing, starts them (data kept in .dev/), starts the mock
# agents for the guide's example agents on :9100, and serves the API on
# :8080. Prints a dev token and curl lines. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/stack.sh install
cargo build --release --quiet --bin agentflow --bin agentflow-mock-agent

dir=.dev
mkdir -p "$dir"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/stack.sh stop "$dir" || true
}
trap cleanup EXIT INT TERM
scripts/stack.sh start "$dir"
# shellcheck disable=SC1091
source "$dir/env"

target/release/agentflow-mock-agent --addr 127.0.0.1:9100 --latency-ms "${MOCK_LATENCY_MS:-200}" >"$dir/mock-agent.log" 2>&1 &
pids+=($!)

export AGENTFLOW_JWT_SECRET=${AGENTFLOW_JWT_SECRET:-dev-secret-change-me}
token=$(target/release/agentflow token --sub 42 --ttl 7d)
addr=${AGENTFLOW_HTTP_ADDR:-127.0.0.1:8080}
cat <<TXT

agentflow dev stack
  API          http://$addr      (logs below)
  mock agents  http://127.0.0.1:9100/agents/{agent}   ($dir/mock-agent.log)
  Postgres     $AGENTFLOW_DATABASE_URL
  broker       $AGENTFLOW_KAFKA_BROKERS (topic workflow-events)

  export TOKEN=$token

  # create the guide's content pipeline
  curl -s -X POST http://$addr/workflows/create -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' -d '{
    "name": "Content Marketing Pipeline",
    "tasks": [
      {"agent": "marketing_content_agent_1_101", "input": {"topic": "AI in healthcare", "format": "blog_post"}},
      {"agent": "marketing_seo_agent_1_102", "input": {"content": "{{previous_output}}", "target_keywords": ["AI healthcare"]}},
      {"agent": "marketing_social_media_agent_1_103", "input": {"content": "{{previous_output}}", "platforms": ["twitter", "linkedin"]}}
    ]}'
  # execute it and read it (use the workflow_id printed above)
  curl -s -X POST http://$addr/workflows/\$ID/execute -H "Authorization: Bearer \$TOKEN"
  curl -s http://$addr/workflows/\$ID -H "Authorization: Bearer \$TOKEN"
  curl -s http://$addr/workflows/list -H "Authorization: Bearer \$TOKEN"

TXT
target/release/agentflow serve &
pids+=($!)
wait "${pids[-1]}"
