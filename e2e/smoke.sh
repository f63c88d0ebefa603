#!/usr/bin/env bash
# Test-bed smoke test: bring the node up, run PostgreSQL from the local image in a pod with a TCP
# readiness probe, put a ClusterIP Service in front of it, query it with psql from the host through
# the Service IP (kube-proxy's iptables rules); initialise PostgreSQL as uid 999 on a PVC of the
# default StorageClass and check the volume goes away with its claim; delete, bring the node down.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
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
        kubectl -n $NS describe pod pg-volume >&2 2>/dev/null | tail -n 30 || true
        kubectl get pv >&2 2>/dev/null || true
        kubectl -n $NS get pvc >&2 2>/dev/null || true
    fi
    "$CLUSTER" down
    exit $rc
}
trap cleanup EXIT

# The pgwarden image comes from the static release binary (make release); up imports it.
"$CLUSTER" image build pgwarden
testbed_up

phase "smoke: node"
kubectl get nodes -o wide
[ "$(kubectl version -o json | jq -r .serverVersion.gitVersion)" = "$K8S_VERSION" ] ||
    die "server version is not $K8S_VERSION"
[ "$(kubectl get --raw /readyz)" = ok ] || die "/readyz is not ok"

phase "smoke: postgres pod behind a Service"
kubectl create namespace $NS
# PostgreSQL on a PVC of the default StorageClass, run as the operator's StatefulSet will run it:
# uid 999, fsGroup 999, restricted security context, the volume at /var/lib/postgresql/data and
# PGDATA a subdirectory the non-root process creates itself. Started here so that it runs while
# the first pod starts; checked below.
kubectl -n $NS apply -f - <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: pg-volume}
spec:
  restartPolicy: Never
  dnsPolicy: Default
  automountServiceAccountToken: false
  securityContext:
    runAsUser: 999
    runAsGroup: 999
    fsGroup: 999
    runAsNonRoot: true
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: postgres
    image: pgwarden.local/postgres:$PG_MAJOR
    imagePullPolicy: Never
    command: ["sh", "-ec"]
    args:
    - |
      D=/var/lib/postgresql/data/pgdata
      mkdir \$D
      chmod 700 \$D
      initdb -D \$D -U postgres --auth=trust >/dev/null
      pg_ctl -D \$D -l /tmp/pg.log -o "-c listen_addresses='' -c unix_socket_directories=/tmp" -w start >/dev/null
      psql -h /tmp -U postgres -qAtc "create table t (x int); insert into t values (42); select 'volume-ok', x, current_user from t"
      pg_ctl -D \$D -m fast -w stop >/dev/null
    volumeMounts: [{name: data, mountPath: /var/lib/postgresql/data}]
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
YAML
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

phase "smoke: PostgreSQL as uid 999 on a PVC of the default StorageClass"
pod_phase() { kubectl -n $NS get pod "$1" -o jsonpath='{.status.phase}'; }
pod_finished() { case $(pod_phase "$1") in Succeeded | Failed) true ;; *) false ;; esac }
wait_for 120 "pod pg-volume to finish" pod_finished pg-volume
[ "$(pod_phase pg-volume)" = Succeeded ] ||
    die "pod pg-volume failed: $(kubectl -n $NS logs pg-volume 2>&1 | tail -n 10)"
[ "$(kubectl -n $NS logs pg-volume)" = "volume-ok|42|postgres" ] ||
    die "pod pg-volume printed '$(kubectl -n $NS logs pg-volume)' (wanted volume-ok|42|postgres)"
PV=$(kubectl -n $NS get pvc data -o jsonpath='{.spec.volumeName}')
[ "$PV" = "pvc-$(kubectl -n $NS get pvc data -o jsonpath='{.metadata.uid}')" ] || die "PVC data is bound to '$PV'"
PV_DIR=$(kubectl get pv "$PV" -o jsonpath='{.spec.hostPath.path}')
[ "$PV_DIR" = "$PGWARDEN_STATE/volumes/$PV" ] || die "PV $PV is at '$PV_DIR'"
[ "$(kubectl get pv "$PV" -o jsonpath='{.spec.storageClassName} {.spec.persistentVolumeReclaimPolicy}')" = "standard Delete" ] ||
    die "PV $PV is not of class standard with reclaim policy Delete"
[ "$(stat -c '%a %u' "$PV_DIR")" = "777 0" ] || die "$PV_DIR: $(stat -c '%a %u' "$PV_DIR") (wanted 777 0)"
[ "$(stat -c '%a %u %g' "$PV_DIR/pgdata")" = "700 999 999" ] || die "$PV_DIR/pgdata: $(stat -c '%a %u %g' "$PV_DIR/pgdata")"
[ "$(cat "$PV_DIR/pgdata/PG_VERSION")" = "$PG_MAJOR" ] || die "no PostgreSQL $PG_MAJOR data directory in $PV_DIR/pgdata"
log "initdb, a write and a clean stop as uid 999 on $PV ($PV_DIR)"
kubectl -n $NS delete pod pg-volume --wait=true --timeout=60s >/dev/null
kubectl -n $NS delete pvc data --wait=true --timeout=60s >/dev/null
volume_gone() { ! kubectl get pv "$PV" >/dev/null 2>&1 && [ ! -e "$PV_DIR" ]; }
wait_for 60 "PV $PV and $PV_DIR to be deleted" volume_gone
log "claim deleted: PV $PV and its directory are gone"

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
crd_pod_succeeded() { [ "$(pod_phase pgwarden-crd)" = Succeeded ]; }
wait_for 120 "pod pgwarden-crd to succeed" crd_pod_succeeded
CRD_OUT=$(kubectl -n $NS logs pgwarden-crd)
grep -q '^kind: CustomResourceDefinition' <<<"$CRD_OUT" ||
    die "the pgwarden image did not print the CRD"
log "pgwarden crd ran in a pod as uid 65532"

phase "smoke: pgBackRest archives and backs up to the object store"
# What backups will rest on: the PostgreSQL image's pgBackRest talks S3 over HTTPS to the test
# bed's object store (path-style, the test bed's CA), from a pod as uid 999. stanza-create,
# check (which archives a segment through archive_command), a full backup, then info.
kubectl -n $NS create configmap testbed-ca --from-file=ca.crt="$PGWARDEN_TESTBED_CA" >/dev/null
kubectl -n $NS create secret generic s3 --from-literal=key="$S3_ACCESS_KEY" \
    --from-literal=secret="$S3_SECRET_KEY" >/dev/null
kubectl -n $NS apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata: {name: pg-backup}
spec:
  restartPolicy: Never
  dnsPolicy: Default
  automountServiceAccountToken: false
  securityContext: {runAsUser: 999, runAsGroup: 999, runAsNonRoot: true}
  containers:
  - name: postgres
    image: pgwarden.local/postgres:$PG_MAJOR
    imagePullPolicy: Never
    env:
    - {name: PGBACKREST_STANZA, value: smoke}
    - {name: PGBACKREST_PG1_PATH, value: /tmp/pgdata}
    - {name: PGBACKREST_PG1_SOCKET_PATH, value: /tmp}
    - {name: PGBACKREST_REPO1_TYPE, value: s3}
    - {name: PGBACKREST_REPO1_PATH, value: /smoke}
    - {name: PGBACKREST_REPO1_RETENTION_FULL, value: "2"}
    - {name: PGBACKREST_REPO1_S3_ENDPOINT, value: "$NODE_IP"}
    - {name: PGBACKREST_REPO1_STORAGE_PORT, value: "$S3_PORT"}
    - {name: PGBACKREST_REPO1_S3_BUCKET, value: "$S3_BUCKET"}
    - {name: PGBACKREST_REPO1_S3_REGION, value: "$S3_REGION"}
    - {name: PGBACKREST_REPO1_S3_URI_STYLE, value: path}
    - {name: PGBACKREST_REPO1_STORAGE_CA_FILE, value: /ca/ca.crt}
    - {name: PGBACKREST_REPO1_S3_KEY, valueFrom: {secretKeyRef: {name: s3, key: key}}}
    - {name: PGBACKREST_REPO1_S3_KEY_SECRET, valueFrom: {secretKeyRef: {name: s3, key: secret}}}
    - {name: PGBACKREST_LOG_PATH, value: /tmp}
    - {name: PGBACKREST_LOCK_PATH, value: /tmp/pgbackrest-lock}
    - {name: PGBACKREST_LOG_LEVEL_CONSOLE, value: warn}
    command: ["sh", "-ec"]
    args:
    - |
      touch /tmp/pgbackrest.conf
      export PGBACKREST_CONFIG=/tmp/pgbackrest.conf
      initdb -D /tmp/pgdata -U postgres --auth=trust >/dev/null
      pg_ctl -D /tmp/pgdata -l /tmp/pg.log -w start -o "-c listen_addresses='' -c unix_socket_directories=/tmp -c archive_mode=on -c archive_command='pgbackrest archive-push %p'" >/dev/null
      pgbackrest stanza-create
      pgbackrest check
      pgbackrest backup --type=full
      pgbackrest info --output=json > /tmp/info.json
      psql -h /tmp -U postgres -qAtc "select 'archived', archived_count > 0, failed_count from pg_stat_archiver"
      grep -o '"type":"full"' /tmp/info.json
      pg_ctl -D /tmp/pgdata -m fast -w stop >/dev/null
    volumeMounts: [{name: ca, mountPath: /ca}]
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
  volumes: [{name: ca, configMap: {name: testbed-ca}}]
YAML
wait_for 180 "pod pg-backup to finish" pod_finished pg-backup
BACKUP_OUT=$(kubectl -n $NS logs pg-backup 2>&1)
[ "$(pod_phase pg-backup)" = Succeeded ] || die "pod pg-backup failed: $(tail -n 20 <<<"$BACKUP_OUT")"
[ "$BACKUP_OUT" = $'archived|t|0\n"type":"full"' ] ||
    die "pod pg-backup printed '$BACKUP_OUT' (wanted archived|t|0 and a full backup)"
# The objects are in the store's bucket directory, where pgBackRest put them.
ls "$OBJECTSTORE_DIR/$S3_BUCKET/smoke/backup/smoke/backup.info" "$OBJECTSTORE_DIR/$S3_BUCKET/smoke/archive/smoke/archive.info" >/dev/null ||
    die "no pgBackRest repository under $OBJECTSTORE_DIR/$S3_BUCKET/smoke"
log "stanza-create, check (a WAL segment archived), a full backup and info over HTTPS to the object store"

phase "smoke: delete"
kubectl delete namespace $NS --wait=true --timeout=120s
phase_end
echo "smoke: 1 passed, 0 failed"
