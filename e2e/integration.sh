#!/usr/bin/env bash
# The integration tier: `e2e/cluster up --control-plane`, then the agents' scenarios in tests/ha.rs,
# tests/ha_api.rs, tests/control_plane.rs (kills and restarts the kube-apiserver) and
# tests/safety.rs (three agents as processes on 127.0.0.1-3, real PostgreSQL 15), then `down`.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
# The trap only once this script brought the test bed up: when `up` refuses (a test bed, the
# demo's perhaps, is already running) nothing of the user's is torn down.
testbed_up --control-plane
trap '"$CLUSTER" down' EXIT
phase "integration: cargo test --test ha --test ha_api --test control_plane --test safety -- --ignored"
cd "$REPO_DIR"
# One scenario at a time: they share the loopback addresses and ports. --no-fail-fast: a failure
# in tests/ha.rs still lets tests/ha_api.rs run, as when they were one file.
cargo test --locked --no-fail-fast --test ha --test ha_api --test control_plane --test safety -- --ignored --test-threads=1 ${IT_FILTER:-}
phase_end
