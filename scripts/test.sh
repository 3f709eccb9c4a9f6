#!/usr/bin/env bash
# Runs every check and test against real Postgres and a real broker, started
# here on free ports and stopped on exit. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/stack.sh install

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

dir=$(mktemp -d /tmp/agentflow-test.XXXXXX)
cleanup() { scripts/stack.sh stop "$dir" || true; rm -rf "$dir"; }
trap cleanup EXIT
scripts/stack.sh start "$dir"
# shellcheck disable=SC1091
source "$dir/env"

echo "== cargo nextest"
cargo nextest run --workspace --no-fail-fast "$@"
