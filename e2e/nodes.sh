#!/usr/bin/env bash
# The node tier: three nodes on this machine (e2e/cluster up --nodes 3) with the pgwarden image
# imported into each, the chart installed with `helm install`, then the scenarios in
# tests/nodes.rs (a node killed, frozen, cut off, drained), then `down`.
#   NODES_FILTER=name   run only the scenarios whose name contains it (e.g. draining); the
#                       benchmark (`make bench-nodes`) runs only when named
#   NODE_TRIALS=N       trials per fault in the benchmark (5)
#   PGWARDEN_E2E_KEEP=1   leave the test bed up for a look
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

"$CLUSTER" image build pgwarden
testbed_up --nodes 3
# The trap only once this script brought the test bed up: when `up` refuses (a test bed is
# running already), that one is not this script's to take down.
trap 'tier_exit nodes' EXIT

phase "nodes: helm install"
helm install pgwarden "$REPO_DIR/charts/pgwarden" --namespace pgwarden-system --create-namespace \
    --set image.pullPolicy=Never --wait --timeout 3m
kubectl -n pgwarden-system get pods -o wide

phase "nodes: cargo test --test nodes -- --ignored"
cd "$REPO_DIR"
# One scenario at a time: the faults take whole nodes away.
if [ -n "${NODES_FILTER:-}" ]; then
    cargo test --locked --test nodes -- --ignored --test-threads=1 --nocapture "$NODES_FILTER"
else
    cargo test --locked --test nodes -- --ignored --test-threads=1 --nocapture --skip benchmark
fi
phase_end
