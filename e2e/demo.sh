#!/usr/bin/env bash
# `make demo`: a cluster to look at. Uses $KUBECONFIG when it names a reachable cluster, otherwise
# brings up the local single-node Kubernetes (e2e/cluster up) and leaves it running.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
if [ -n "${KUBECONFIG:-}" ] && kubectl get --raw /readyz >/dev/null 2>&1; then
    echo "using the cluster in KUBECONFIG=$KUBECONFIG"
else
    if ! "$E2E_DIR/cluster" status | grep -q '^api: ready'; then
        "$E2E_DIR/cluster" up
    fi
    eval "$("$E2E_DIR/cluster" env)"
fi
kubectl get nodes -o wide
# The operator, its chart and the PostgresCluster example land with the operator issue; until
# then the demo stops at a working Kubernetes.
if [ -d "$REPO_DIR/charts/pgwarden" ]; then
    helm upgrade --install pgwarden "$REPO_DIR/charts/pgwarden" --namespace pgwarden-system --create-namespace --wait
    kubectl apply -f "$REPO_DIR/examples/demo.yaml"
    kubectl get postgresclusters
else
    echo "demo: the pgwarden chart is not in this checkout yet; the local Kubernetes is up."
fi
echo "shell: eval \"\$(e2e/cluster env)\"   stop: e2e/cluster down"
