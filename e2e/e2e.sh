#!/usr/bin/env bash
# The end-to-end tier: the full single-node Kubernetes (e2e/cluster up) with the pgwarden image
# imported, the chart installed with `helm install`, then the scenarios in tests/e2e.rs (real
# pods, kube-proxy routing through the -rw/-ro Services), then `down`.
#   E2E_FILTER=name   run only the scenarios whose name contains it
#   E2E_TESTS="--test bench_backups"   other test targets on the same bed (make bench-backups)
#   PGWARDEN_E2E_KEEP=1   leave the test bed and the namespaces up for a look
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

trap 'tier_exit e2e' EXIT

"$CLUSTER" image build pgwarden
testbed_up
# A second tag of the PostgreSQL image, so an image change can roll (same bits, new reference).
ctr -a "$CONTAINERD_SOCK" -n k8s.io images tag --force "pgwarden.local/postgres:$PG_MAJOR" \
    "pgwarden.local/postgres:$PG_MAJOR-b" >/dev/null

phase "e2e: helm install"
helm install pgwarden "$REPO_DIR/charts/pgwarden" --namespace pgwarden-system --create-namespace \
    --set image.pullPolicy=Never --wait --timeout 3m
kubectl -n pgwarden-system get pods -o wide

phase "e2e: cargo test --test e2e --test e2e_cli --test e2e_monitoring -- --ignored"
cd "$REPO_DIR"
# One scenario at a time: two cores, one node.
# shellcheck disable=SC2086 # E2E_TESTS is a list of cargo arguments
cargo test --locked ${E2E_TESTS:---test e2e --test e2e_cli --test e2e_monitoring} -- --ignored --test-threads=1 --nocapture ${E2E_FILTER:-}
phase_end
