#!/usr/bin/env bash
# `make demo`: a cluster to look at. Uses $KUBECONFIG when it names a reachable cluster, otherwise
# brings up the local Kubernetes (e2e/cluster up; DEMO_NODES=3 for three nodes, one instance on
# each) and leaves it running.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
if [ -n "${KUBECONFIG:-}" ] && kubectl get --raw /readyz >/dev/null 2>&1; then
    echo "using the cluster in KUBECONFIG=$KUBECONFIG"
    # The test bed itself: its node takes the locally built image.
    [ "$KUBECONFIG" = "$KUBECONFIG_ADMIN" ] && DEMO_LOCAL=1
else
    DEMO_LOCAL=1
    if ! "$E2E_DIR/cluster" status | grep -q '^api: ready'; then
        "$E2E_DIR/cluster" up ${DEMO_NODES:+--nodes "$DEMO_NODES"}
    fi
    eval "$("$E2E_DIR/cluster" env)"
fi
kubectl get nodes -o wide
# The image the chart runs: the static release binary in a libc-free image, imported into the
# local node (on another cluster, push pgwarden.local/pgwarden:dev somewhere it can pull from).
if [ "${DEMO_LOCAL:-}" = 1 ]; then
    "$E2E_DIR/cluster" image build pgwarden
    "$E2E_DIR/cluster" image import pgwarden
fi
helm upgrade --install pgwarden "$REPO_DIR/charts/pgwarden" --namespace pgwarden-system \
    --create-namespace --wait --timeout 5m
kubectl apply -f "$REPO_DIR/examples/demo.yaml"
echo "waiting for the demo cluster to be Ready 3/3 ..."
healthy() { [ "$(kubectl -n default get pgc demo -o jsonpath='{.status.phase}/{.status.readyInstances}' 2>/dev/null)" = "Healthy/3" ]; }
wait_for 600 "PostgresCluster demo Healthy with 3 ready instances" healthy
kubectl get pgc demo -n default
kubectl get pods -n default -l pgwarden.io/cluster=demo -L pgwarden.io/role -o wide
kubectl get pgc demo -n default -o jsonpath='{range .status.instancesStatus[*]}{.name}{"\t"}{.role}{"\t"}{.state}{"\ttimeline "}{.timeline}{"\tlag "}{.lagBytes}{"\n"}{end}'
echo
echo "connect: kubectl -n default get secret demo-app -o jsonpath='{.data.password}' | base64 -d"
echo "         psql \"host=\$(kubectl -n default get svc demo-rw -o jsonpath='{.spec.clusterIP}') user=app dbname=app\""
echo "shell: eval \"\$(e2e/cluster env)\"   stop: e2e/cluster down"
