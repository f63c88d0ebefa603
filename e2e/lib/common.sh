# Shared settings and helpers for e2e/cluster and the test scripts. Sourced, never run.
# Everything downloaded or built lives under $PGWARDEN_CACHE (outside the clone); everything a
# running test bed creates lives under $PGWARDEN_STATE so that `down` can remove it whole.

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(cd "$E2E_DIR/.." && pwd)
# shellcheck source=../versions.env
source "$E2E_DIR/versions.env"

PGWARDEN_CACHE=${PGWARDEN_CACHE:-/var/cache/pgwarden}
PGWARDEN_STATE=${PGWARDEN_STATE:-/var/lib/pgwarden-testbed}

export GOTOOLCHAIN=local
export GOMODCACHE=$PGWARDEN_CACHE/go/mod
export GOCACHE=$PGWARDEN_CACHE/go/build
export GOFLAGS=-mod=readonly
export CGO_ENABLED=0

K8S_BIN=$PGWARDEN_CACHE/bin/kubernetes-$K8S_VERSION
ETCD_BIN=$PGWARDEN_CACHE/bin/etcd-$ETCD_VERSION
HELM_BIN=$PGWARDEN_CACHE/bin/helm-$HELM_VERSION
VERSITYGW_BIN=$PGWARDEN_CACHE/bin/versitygw-$VERSITYGW_VERSION
IMAGE_CACHE=$PGWARDEN_CACHE/images

# The test bed's own addresses: an interface of ours (a port-less bridge) carries the node address (Endpoints reject
# loopback), the CNI bridge carries the pod range, kube-proxy owns the service range. None of them
# route off this machine.
NODE_NAME=pgwarden-node
NODE_IF=pgw-node0
NODE_IP=10.213.0.1
POD_CIDR=10.213.1.0/24
SERVICE_CIDR=10.213.128.0/20
FIRST_SERVICE_IP=10.213.128.1
CNI_BRIDGE=pgw-cni0
APISERVER_PORT=6443
ETCD_CLIENT_PORT=2379
ETCD_PEER_PORT=2380
# The object store: HTTPS (pgBackRest speaks S3 only over TLS) with a certificate from the test
# bed's CA, path-style, one bucket; the keys are the test bed's own, printed by `env`.
S3_PORT=9000
S3_BUCKET=pgwarden
S3_REGION=us-east-1
S3_ACCESS_KEY=pgwarden-testbed
S3_SECRET_KEY=pgwarden-testbed-secret
# Its buckets, one directory each.
OBJECTSTORE_DIR=$PGWARDEN_STATE/objectstore

CONTAINERD_ROOT=$PGWARDEN_STATE/containerd
CONTAINERD_SOCK=/run/pgwarden-testbed/containerd.sock
KUBECONFIG_ADMIN=$PGWARDEN_STATE/admin.kubeconfig

# Phase timing: `phase NAME` starts a phase and ends the previous one; `phase_end` closes the last.
_phase_name=""
_phase_start=0
phase() {
    phase_end
    _phase_name=$1
    _phase_start=$(date +%s.%N)
    echo "==> $1"
}
phase_end() {
    if [ -n "$_phase_name" ]; then
        local now
        now=$(date +%s.%N)
        awk -v n="$_phase_name" -v a="$_phase_start" -v b="$now" 'BEGIN { printf "==> %s: done in %.1fs\n", n, b - a }'
        _phase_name=""
    fi
}

log() { echo "    $*"; }
die() {
    echo "error: $*" >&2
    exit 1
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.5 s until it succeeds.
wait_for() {
    local timeout=$1 what=$2
    shift 2
    local deadline=$(($(date +%s) + timeout))
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "error: timed out after ${timeout}s waiting for $what" >&2
            return 1
        fi
        sleep 0.5
    done
}

# The test bed's command, and `testbed_up [up's options]`: bring it up and take its environment
# (KUBECONFIG, PATH) into this shell.
CLUSTER=$E2E_DIR/cluster
testbed_up() {
    "$CLUSTER" up "$@"
    eval "$("$CLUSTER" env)"
}

# tier_exit NAME: the EXIT trap of a tier on the full test bed (`trap 'tier_exit NAME' EXIT`):
# when the tier failed, the operator's last log lines, the nodes, pods and clusters; then `down`,
# unless PGWARDEN_E2E_KEEP is set.
tier_exit() {
    local rc=$? name=$1
    if [ $rc -ne 0 ]; then
        echo "$name: FAILED (rc=$rc); operator and pod logs follow" >&2
        kubectl -n pgwarden-system logs deploy/pgwarden-operator --tail=80 >&2 2>/dev/null || true
        kubectl get nodes -o wide >&2 2>/dev/null || true
        kubectl get pods -A -o wide >&2 2>/dev/null || true
        kubectl get pgc -A >&2 2>/dev/null || true
    fi
    if [ -z "${PGWARDEN_E2E_KEEP:-}" ]; then "$CLUSTER" down; fi
    exit $rc
}

# Static checks (chart-check.sh, monitoring-check.sh): `checks_begin NAME`, then `ok WHAT` for
# each check that passes and `fail WHAT` for each that does not (the script goes on), and
# `checks_end` last: it reports and exits 1 if any failed.
checks_begin() {
    _checks_name=$1
    failures=0
}
fail() {
    echo "$_checks_name: FAIL: $*" >&2
    failures=$((failures + 1))
}
ok() { echo "    ok: $*"; }
checks_end() {
    if [ "$failures" -ne 0 ]; then
        echo "$_checks_name: $failures check(s) failed" >&2
        exit 1
    fi
    echo "$_checks_name: all checks passed"
}

# need_testbed_helm: the test bed's helm as $HELM (unless set) or die, and $KUBE_VERSION for
# `--kube-version`: that helm is built without Helm's k8sVersion link flags, so its default
# Kubernetes version is v1.20.0, below the chart's kubeVersion; check against the version the
# test bed runs.
need_testbed_helm() {
    HELM=${HELM:-$HELM_BIN/helm}
    KUBE_VERSION=${K8S_VERSION#v}
    [ -x "$HELM" ] || die "helm not found at $HELM (helm $HELM_VERSION); build it with: e2e/cluster build"
}
