#!/usr/bin/env bash
# The real parts agentflow needs, on this machine, with no Docker:
# a Postgres cluster and a Kafka-API broker (Tansu, SQLite storage), each on a
# free loopback port under one directory.
#
#   scripts/stack.sh install          install what is missing: Postgres, promtool,
#                                     docker-compose, kcat (Debian), Tansu (cargo)
#   scripts/stack.sh start DIR [PG_PORT KAFKA_PORT]
#                                     start both under DIR; writes DIR/env
#   scripts/stack.sh stop DIR         stop both
#   scripts/stack.sh pg-start DIR [PORT]   only Postgres (again, same port)
#   scripts/stack.sh pg-stop DIR           only Postgres (outage tests)
#
# DIR/env holds AGENTFLOW_DATABASE_URL, AGENTFLOW_KAFKA_BROKERS and
# AGENTFLOW_TEST_ADMIN_URL (a superuser URL tests use to make databases).
set -euo pipefail

TANSU_VERSION=0.6.0

log() { printf '[stack] %s\n' "$*" >&2; }

pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

install() {
  # Postgres; promtool (checks and unit-tests the alert rules); docker-compose
  # (validates docker-compose.yml, no Docker engine needed for that); kcat
  # (the README's command-line subscriber, tested).
  local missing=()
  [ -n "$(pg_bindir)" ] || missing+=(postgresql)
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  command -v kcat >/dev/null 2>&1 || missing+=(kcat)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if ! command -v tansu >/dev/null 2>&1; then
    log "building the Tansu broker (once, several minutes)"
    cargo install --locked tansu --version "$TANSU_VERSION" --features dynostore,libsql,postgres
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
  local port=$1 what=$2
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  log "$what did not start on port $port"; return 1
}

as_pg() {
  # postgres refuses to run as root.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Tansu 0.6's SQLite schema has no index on `header (topition, offset_id)`,
# which every fetch looks up: each fetch then scans every header ever written,
# and the broker slows down as the log grows (measured: 2,300 → 1,100
# records/s over 15k records; with the index a steady 3,100). Add the index
# once Tansu has created its schema.
index_tansu() {
  python3 - "$1" <<'PY'
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=30)
for _ in range(200):
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'header'").fetchone():
        break
    time.sleep(0.05)
else:
    sys.exit("tansu did not create its schema")
db.execute("CREATE INDEX IF NOT EXISTS agentflow_header_record ON header (topition, offset_id)")
db.execute("CREATE INDEX IF NOT EXISTS agentflow_watermark_topition ON watermark (topition)")
db.commit()
PY
}

# Starts (or restarts) the Postgres cluster under DIR/pg; the port is kept in
# DIR/pg.port so a restart after an outage comes back where it was.
pg_start() {
  local dir=$1 pg_port=${2:-}
  local bin; bin=$(pg_bindir) || { log "Postgres missing: run scripts/stack.sh install"; exit 1; }
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  chmod 755 "$dir"
  if [ -z "$pg_port" ]; then
    if [ -f "$dir/pg.port" ]; then pg_port=$(cat "$dir/pg.port"); else pg_port=$(free_port); fi
  fi
  echo "$pg_port" >"$dir/pg.port"
  if [ ! -f "$dir/pg/PG_VERSION" ]; then
    mkdir -p "$dir/pg"
    [ "$(id -u)" = 0 ] && chown postgres "$dir/pg"
    as_pg "$bin/initdb" -D "$dir/pg" -A trust -U postgres --no-sync >/dev/null
  fi
  # fsync off: these clusters are for development and tests, rebuilt from the log at will.
  as_pg "$bin/pg_ctl" -D "$dir/pg" -l "$dir/pg/server.log" -w -o \
    "-p $pg_port -k $dir/pg -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null
  local admin="postgres://postgres@127.0.0.1:$pg_port/postgres"
  psql -q "$admin" -tc "SELECT 1 FROM pg_roles WHERE rolname='agentflow'" | grep -q 1 \
    || psql -q "$admin" -c "CREATE ROLE agentflow LOGIN CREATEDB" >/dev/null
  psql -q "$admin" -tc "SELECT 1 FROM pg_database WHERE datname='agentflow'" | grep -q 1 \
    || psql -q "$admin" -c "CREATE DATABASE agentflow OWNER agentflow" >/dev/null
}

pg_stop() {
  local dir=$1
  bin=$(pg_bindir) || return 0
  if [ -f "$dir/pg/postmaster.pid" ]; then
    as_pg "$bin/pg_ctl" -D "$dir/pg" -m fast -w stop >/dev/null || true
  fi
}

start() {
  local dir=$1 pg_port=${2:-} kafka_port=${3:-$(free_port)}
  command -v tansu >/dev/null || { log "tansu missing: run scripts/stack.sh install"; exit 1; }
  mkdir -p "$dir/tansu"
  dir=$(cd "$dir" && pwd)
  pg_start "$dir" "$pg_port"
  pg_port=$(cat "$dir/pg.port")
  local admin="postgres://postgres@127.0.0.1:$pg_port/postgres"

  # Tansu resolves the SQLite path against its working directory. `exec` so
  # that $! is the broker itself, not a subshell.
  (cd "$dir/tansu" && exec tansu broker \
      --listener-url "tcp://127.0.0.1:$kafka_port" \
      --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
      --storage-engine "sqlite://tansu.db" >"$dir/tansu/broker.log" 2>&1 </dev/null) &
  echo $! >"$dir/tansu/broker.pid"
  wait_port "$kafka_port" tansu
  index_tansu "$dir/tansu/tansu.db"

  cat >"$dir/env" <<ENV
export AGENTFLOW_DATABASE_URL=postgres://agentflow@127.0.0.1:$pg_port/agentflow
export AGENTFLOW_KAFKA_BROKERS=127.0.0.1:$kafka_port
export AGENTFLOW_TEST_ADMIN_URL=$admin
ENV
  log "Postgres on 127.0.0.1:$pg_port, Tansu on 127.0.0.1:$kafka_port (env in $dir/env)"
}

stop() {
  local dir=$1
  if [ -f "$dir/tansu/broker.pid" ]; then
    local pid; pid=$(cat "$dir/tansu/broker.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/tansu/broker.pid"
  fi
  pg_stop "$dir"
}

case "${1:-}" in
  install) install ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  pg-start) shift; pg_start "$@" ;;
  pg-stop) shift; pg_stop "$@" ;;
  *) echo "usage: $0 install | start DIR [PG_PORT KAFKA_PORT] | stop DIR | pg-start DIR [PORT] | pg-stop DIR" >&2; exit 2 ;;
esac
