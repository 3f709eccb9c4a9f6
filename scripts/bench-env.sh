# Sourced by the benchmark scripts: a stack of their own (Postgres + Tansu in
# a temporary directory, stopped on exit with every process in $pids) and the
# environment `agentflow serve` needs there, API on $api_port.
#
#   bench_stack NAME

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pids=()
bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/stack.sh stop "$dir" || true
  rm -rf "$dir"
}

bench_stack() {
  dir=$(mktemp -d "/tmp/agentflow-$1.XXXXXX")
  trap bench_cleanup EXIT
  scripts/stack.sh start "$dir"
  # shellcheck disable=SC1091
  source "$dir/env"
  api_port=$(free_port)
  export AGENTFLOW_JWT_SECRET=bench-secret
  export AGENTFLOW_HTTP_ADDR=127.0.0.1:$api_port
  export AGENTFLOW_AGENTS_FILE=/dev/null
  export AGENTFLOW_LOG=warn
}
