#!/usr/bin/env bash
# Runs agentflow locally with everything it needs: installs Postgres and Apache
# Kafka (jars from Maven Central) if missing, builds agentflow, and runs `agentflow dev`, which
# starts them (data in .dev/), the mock agents for the guide's example agents
# on :9100 and the API on :8080, and prints a dev token and curl lines.
# Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/stack.sh install
cargo build --release --quiet --bin agentflow
exec target/release/agentflow dev "$@"
