#!/usr/bin/env bash
# Runs every check and test against real Postgres and a real broker, started
# here on free ports and stopped on exit. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each phase's start time, so a slow run shows where its time went.
phase() { echo "== $(date -u +%T) $*"; }

phase "installing what is missing"
scripts/stack.sh install test

phase "cargo fmt --check"
cargo fmt --all -- --check
phase "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
phase "promtool: alert rules and their unit tests, Prometheus config"
promtool check rules config/prometheus/alerts.yml
promtool test rules config/prometheus/alerts_test.yml
promtool check config config/prometheus/prometheus.yml
phase "docker-compose config"
AGENTFLOW_JWT_SECRET=ci docker-compose -f docker-compose.yml config -q

# Bounded here so the whole command stays short: 10 s per Rust target and at
# most 60 s of schemathesis (every operation, all checks). The longer
# campaign is `scripts/fuzz.sh` on its own (60 s per target, 240 s of
# schemathesis; see Fuzzing in the README).
phase "fuzzing: the Rust targets (FUZZ_SECONDS each) and schemathesis (FUZZ_API_SECONDS)"
FUZZ_SECONDS=${FUZZ_SECONDS:-10} FUZZ_API_SECONDS=${FUZZ_API_SECONDS:-60} scripts/fuzz.sh

dir=$(mktemp -d /tmp/agentflow-test.XXXXXX)
cleanup() { scripts/stack.sh stop "$dir" || true; rm -rf "$dir"; }
trap cleanup EXIT
phase "starting Postgres and Kafka"
scripts/stack.sh start "$dir"
# shellcheck disable=SC1091
source "$dir/env"

phase "cargo nextest"
cargo nextest run --workspace --no-fail-fast "$@"
phase "done"
