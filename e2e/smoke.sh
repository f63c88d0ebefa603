#!/usr/bin/env bash
# Test-bed smoke test: bring the node up, run PostgreSQL from the local image in a pod with a TCP
# readiness probe, put a ClusterIP Service in front of it, query it with psql from the host through
# the Service IP (kube-proxy's iptables rules), delete it, bring the node down.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
CLUSTER=$E2E_DIR/cluster
NS=smoke

cleanup() {
    local rc=$?
    if [ $rc -ne 0 ]; then
        echo "smoke: FAILED (rc=$rc); component logs follow" >&2
        for f in "$PGWARDEN_STATE"/logs/*.log; do
            [ -f "$f" ] && { echo "--- $f (tail)" >&2; tail -n 25 "$f" >&2; }
        done
        kubectl get pods -A -o wide >&2 2>/dev/null || true
        kubectl -n $NS describe pod pg >&2 2>/dev/null | tail -n 30 || true
    fi
    "$CLUSTER" down
    exit $rc
}
trap cleanup EXIT

# The pgwarden image comes from the static release binary (make release); up imports it.
"$CLUSTER" image build pgwarden
"$CLUSTER" up
eval "$("$CLUSTER" env)"

phase "smoke: node"
kubectl get nodes -o wide
[ "$(kubectl version -o json | jq -r .serverVersion.gitVersion)" = "$K8S_VERSION" ] ||
    die "server version is not $K8S_VERSION"
[ "$(kubectl get --raw /readyz)" = ok ] || die "/readyz is not ok"

phase "smoke: postgres pod behind a Service"
kubectl create namespace $NS
PASSWORD=smoke-$RANDOM$RANDOM
kubectl -n $NS apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: pg
  labels: {app: smoke-pg}
spec:
  dnsPolicy: Default
  automountServiceAccountToken: false
  securityContext: {runAsUser: 999, runAsGroup: 999, runAsNonRoot: true}
  containers:
  - name: postgres
    image: pgwarden.local/postgres:$PG_MAJOR
    imagePullPolicy: Never
    env: [{name: PGPASSWORD_INIT, value: "$PASSWORD"}]
    command: ["sh", "-ec"]
    args:
    - |
      echo "\$PGPASSWORD_INIT" > /tmp/pw
      initdb -D /tmp/pgdata -U postgres --auth-local=trust --auth-host=scram-sha-256 --pwfile=/tmp/pw >/dev/null
      echo "host all all 0.0.0.0/0 scram-sha-256" >> /tmp/pgdata/pg_hba.conf
      exec postgres -D /tmp/pgdata -c listen_addresses='*' -c unix_socket_directories=/tmp
    ports: [{containerPort: 5432}]
    readinessProbe:
      tcpSocket: {port: 5432}
      periodSeconds: 1
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
YAML
kubectl -n $NS expose pod pg --name pg --port 5432 --target-port 5432
kubectl -n $NS wait --for=condition=Ready pod/pg --timeout=180s
POD_IP=$(kubectl -n $NS get pod pg -o jsonpath='{.status.podIP}')
SVC_IP=$(kubectl -n $NS get service pg -o jsonpath='{.spec.clusterIP}')
log "pod $POD_IP behind service $SVC_IP"

phase "smoke: psql through the Service IP"
# kube-proxy may need a moment to program the Service's rules after the endpoint turns ready.
wait_for 60 "psql through $SVC_IP" env PGPASSWORD="$PASSWORD" PGCONNECT_TIMEOUT=3 \
    psql "host=$SVC_IP port=5432 user=postgres dbname=postgres" -c 'select 1'
OUT=$(PGPASSWORD="$PASSWORD" psql "host=$SVC_IP port=5432 user=postgres dbname=postgres" -Atc \
    "select 'smoke-ok', host(inet_server_addr()), current_setting('server_version_num')::int / 10000")
echo "    psql answered: $OUT"
[ "$OUT" = "smoke-ok|$POD_IP|$PG_MAJOR" ] || die "unexpected answer '$OUT' (wanted smoke-ok|$POD_IP|$PG_MAJOR)"
# A wrong password must be refused: the Service reaches a real, authenticating server.
if PGPASSWORD=wrong psql "host=$SVC_IP port=5432 user=postgres dbname=postgres" -c 'select 1' 2>/dev/null; then
    die "a wrong password was accepted"
fi

phase "smoke: the pgwarden image runs (no libc in it)"
kubectl -n $NS apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata: {name: pgwarden-crd}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  securityContext: {runAsNonRoot: true}
  containers:
  - name: pgwarden
    image: pgwarden.local/pgwarden:dev
    imagePullPolicy: Never
    args: [crd]
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
YAML
crd_pod_succeeded() { [ "$(kubectl -n $NS get pod pgwarden-crd -o jsonpath='{.status.phase}')" = Succeeded ]; }
wait_for 120 "pod pgwarden-crd to succeed" crd_pod_succeeded
CRD_OUT=$(kubectl -n $NS logs pgwarden-crd)
grep -q '^kind: CustomResourceDefinition' <<<"$CRD_OUT" ||
    die "the pgwarden image did not print the CRD"
log "pgwarden crd ran in a pod as uid 65532"

phase "smoke: delete"
kubectl delete namespace $NS --wait=true --timeout=120s
phase_end
echo "smoke: 1 passed, 0 failed"
