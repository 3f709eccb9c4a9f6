# Sourced by the benchmark scripts: a stack of their own (Postgres + Kafka in
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

# CPU time used so far, in clock ticks, by each part of the stack, one
# "name ticks" line each: agentflow (pid $1), mock agent (pid $2), kafka,
# postgres (the postmaster and all its backends) and the whole machine
# (busy time from /proc/stat). Two snapshots give CPU per workflow.
cpu_snapshot() {
  python3 - "$1" "$2" "$(cat "$dir/kafka/1/pid")" "$(head -1 "$dir/pg/postmaster.pid")" <<'PY'
import os, sys
serve, mock, kafka, pg = (int(a) for a in sys.argv[1:5])
def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[1]), int(rest[11]) + int(rest[12])  # ppid, utime + stime
    except OSError:
        return None, 0
pg_ticks = stat(pg)[1] + sum(
    stat(p)[1] for p in os.listdir("/proc") if p.isdigit() and stat(p)[0] == pg)
with open("/proc/stat") as f:
    cpu = [int(x) for x in f.readline().split()[1:]]
busy = sum(cpu) - cpu[3] - cpu[4]  # all but idle and iowait
print(f"agentflow {stat(serve)[1]}\nmock-agent {stat(mock)[1]}\nkafka {stat(kafka)[1]}\npostgres {pg_ticks}\nmachine {busy}")
PY
}

# Prints CPU milliseconds per workflow for each part between two snapshots.
cpu_report() {
  local before=$1 after=$2 n=$3
  python3 - "$before" "$after" "$n" "$(getconf CLK_TCK)" <<'PY'
import sys
parse = lambda s: dict((k, int(v)) for k, v in (l.split() for l in s.strip().splitlines()))
b, a, n, hz = parse(sys.argv[1]), parse(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ms = {k: (a[k] - b[k]) * 1000 / hz / n for k in a}
known = sum(v for k, v in ms.items() if k != "machine")
parts = ", ".join(f"{k} {v:.2f}" for k, v in ms.items() if k != "machine")
print(f"== CPU ms per workflow: {parts}, driver and rest {ms['machine'] - known:.2f}; total {ms['machine']:.2f}")
PY
}
