# The node's lifecycle (sourced by e2e/cluster): PKI, configuration, start in dependency order,
# stop by PID, and a `down` that removes everything `up` created, even after a crashed run.

RUN_DIR=/run/pgwarden-testbed
PKI=$PGWARDEN_STATE/pki
PIDS=$PGWARDEN_STATE/pids
LOGS=$PGWARDEN_STATE/logs
CNI_NETWORK=pgwarden
# One node's own files, names and command prefix. The one-node test bed uses these defaults; the
# three-node one (e2e/lib/nodes.sh) sets them in a subshell per node.
NODE_DIR=$PGWARDEN_STATE # containerd.toml, kubelet/, cni/, kube-proxy.yaml
NODE_RUN=$RUN_DIR        # containerd's state
NODE_TAG=""              # suffix of the daemons' PID and log names
NODE_CERT=kubelet        # the kubelet's certificates and kubeconfig
NODE_EXEC=()             # command prefix: into the node's network namespace and cgroups
CNI_MASQ=true            # nodes route to each other's pod ranges: no masquerading there
CLUSTER_CIDR=$POD_CIDR   # every node's pod range (kube-proxy's clusterCIDR)
KUBELET_EXTRA=""         # more KubeletConfiguration lines (cgroupRoot, podLogsDir)
# Dynamic volumes (e2e/lib/provisioner.py, like kind's local-path-provisioner): one directory per
# claim, mode 0777, under the state directory so that `down` removes them.
VOLUMES_DIR=$PGWARDEN_STATE/volumes
PROVISIONER_NAME=pgwarden.local/local-path
STORAGE_CLASS=standard

kubectl_admin() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# ---------------------------------------------------------------------------------------------
# PKI

# ECDSA P-256 keys: Kubernetes accepts them everywhere and they take milliseconds, not seconds.
genkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# cert NAME CN [O] [SAN]: a key and a certificate signed by the test bed's CA.
cert() {
    local name=$1 cn=$2 o=${3:-} san=${4:-}
    local subj="/CN=$cn"
    [ -n "$o" ] && subj="/O=$o$subj"
    genkey "$PKI/$name.key"
    openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
    local ext=$PKI/$name.ext
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature"
        echo "extendedKeyUsage=serverAuth,clientAuth"
        [ -n "$san" ] && echo "subjectAltName=$san"
    } >"$ext"
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
        -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
    rm -f "$PKI/$name.csr" "$ext"
}

# kubeconfig NAME CERT [SERVER]: a kubeconfig for the client certificate CERT.
kubeconfig() {
    local name=$1 crt=$2 server=${3:-https://127.0.0.1:$APISERVER_PORT}
    cat >"$PGWARDEN_STATE/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pgwarden-testbed
  cluster:
    certificate-authority: $PKI/ca.crt
    server: $server
users:
- name: $name
  user:
    client-certificate: $PKI/$crt.crt
    client-key: $PKI/$crt.key
contexts:
- name: pgwarden-testbed
  context: {cluster: pgwarden-testbed, user: $name}
current-context: pgwarden-testbed
EOF
}

make_pki() {
    mkdir -p "$PKI"
    genkey "$PKI/ca.key"
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=pgwarden-testbed-ca" -days 3650 -sha256 \
        -out "$PKI/ca.crt" 2>/dev/null
    cert apiserver kube-apiserver "" \
        "IP:127.0.0.1,IP:$NODE_IP,IP:$FIRST_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
    cert admin admin system:masters
    cert controller-manager system:kube-controller-manager
    cert scheduler system:kube-scheduler
    cert kube-proxy system:kube-proxy
    cert kubelet "system:node:$NODE_NAME" system:nodes
    cert kubelet-serving "system:node:$NODE_NAME" system:nodes "IP:$NODE_IP,DNS:$NODE_NAME"
    # pgBackRest 2.45 matches the endpoint only against DNS names, so the address is one too.
    cert objectstore objectstore "" "IP:$NODE_IP,IP:127.0.0.1,DNS:localhost,DNS:$NODE_IP"
    genkey "$PKI/sa.key"
    openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    kubeconfig admin admin
    kubeconfig controller-manager controller-manager
    kubeconfig scheduler scheduler
    kubeconfig kube-proxy kube-proxy
    kubeconfig kubelet kubelet
}

# ---------------------------------------------------------------------------------------------
# Processes

# start NAME BINARY ARGS...: run a daemon in its own session, log to $LOGS/NAME.log, record its PID.
start() {
    local name=$1
    shift
    setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$PIDS/$name.pid"
    log "$name started (pid $!, log $LOGS/$name.log)"
}

# alive PID: the process exists and is not a zombie. Our daemons' parent is PID 1, which on this
# machine reaps orphans only every second or two; `kill -0` alone would wait for that.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

running() { [ -f "$PIDS/$1.pid" ] && alive "$(cat "$PIDS/$1.pid")"; }

# stop NAME: SIGTERM, then SIGKILL after 10 s; the whole session (process group) goes.
stop() {
    local name=$1 pid
    [ -f "$PIDS/$name.pid" ] || return 0
    pid=$(cat "$PIDS/$name.pid")
    if alive "$pid"; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        local i
        for i in $(seq 1 40); do
            alive "$pid" || break
            sleep 0.25
        done
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        log "$name stopped (pid $pid)"
    fi
    rm -f "$PIDS/$name.pid"
}

# ---------------------------------------------------------------------------------------------
# Host network: an interface of our own for the node address and a local route for the service
# range, so that nothing addressed to the test bed can ever leave through the default route. The
# kernel has no dummy driver; a bridge without ports serves the same purpose.

setup_host_network() {
    sysctl -qw net.ipv4.ip_forward=1
    sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
    ip link show "$NODE_IF" >/dev/null 2>&1 || ip link add "$NODE_IF" type bridge
    ip addr replace "$NODE_IP/32" dev "$NODE_IF"
    ip link set "$NODE_IF" up
    ip route replace "$SERVICE_CIDR" dev "$NODE_IF"
}

# ---------------------------------------------------------------------------------------------
# Components

start_etcd() {
    mkdir -p -m 0700 "$PGWARDEN_STATE/etcd"
    start etcd "$ETCD_BIN/etcd" --name pgwarden-testbed --data-dir "$PGWARDEN_STATE/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "pgwarden-testbed=http://127.0.0.1:$ETCD_PEER_PORT" \
        --listen-metrics-urls "" --log-level warn --unsafe-no-fsync
    wait_for 30 "etcd" curl -sf "http://127.0.0.1:$ETCD_CLIENT_PORT/health"
}

start_apiserver() {
    start kube-apiserver "$K8S_BIN/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --bind-address 0.0.0.0 --secure-port "$APISERVER_PORT" --advertise-address "$NODE_IP" \
        --service-cluster-ip-range "$SERVICE_CIDR" \
        --authorization-mode Node,RBAC --allow-privileged=true \
        --enable-admission-plugins NodeRestriction \
        --client-ca-file "$PKI/ca.crt" \
        --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
        --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types InternalIP \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
        --profiling=false --v=1
    wait_for 60 "kube-apiserver /readyz" kubectl_admin get --raw /readyz
}

# supervise CMD...: run CMD, and again 1 s after each exit, as systemd's Restart=always or the
# kubelet for a static pod would: a controller-manager started while the kube-apiserver is away
# (an `apiserver stop` right after a `start`) exits at once.
SUPERVISE='while :; do "$@"; echo "exited ($?); restarting in 1 s"; sleep 1; done'

start_controller_manager() {
    start kube-controller-manager bash -c "$SUPERVISE" supervise "$K8S_BIN/kube-controller-manager" \
        --kubeconfig "$PGWARDEN_STATE/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$PGWARDEN_STATE/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$PGWARDEN_STATE/controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --leader-elect=false \
        --use-service-account-credentials=true \
        --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
        --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
        --profiling=false --v=1
}

start_scheduler() {
    start kube-scheduler bash -c "$SUPERVISE" supervise "$K8S_BIN/kube-scheduler" \
        --kubeconfig "$PGWARDEN_STATE/scheduler.kubeconfig" \
        --authentication-kubeconfig "$PGWARDEN_STATE/scheduler.kubeconfig" \
        --authorization-kubeconfig "$PGWARDEN_STATE/scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --leader-elect=false --profiling=false --v=1
}

# The volume provisioner: Python 3 standard library, the admin client certificate, polls every 1 s.
start_provisioner() {
    mkdir -p "$VOLUMES_DIR"
    start local-path-provisioner python3 -u "$E2E_DIR/lib/provisioner.py" \
        --server "https://127.0.0.1:$APISERVER_PORT" --ca "$PKI/ca.crt" \
        --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
        --volumes-dir "$VOLUMES_DIR" --provisioner "$PROVISIONER_NAME" \
        --storage-class "$STORAGE_CLASS" --interval 1
}

# The S3-compatible object store backups go to: versitygw serving the directory
# $OBJECTSTORE_DIR over HTTPS on the node address (pods reach it as they reach the apiserver),
# each top-level directory a bucket. Path-style only: the test bed has no DNS for bucket hosts.
start_object_store() {
    mkdir -p "$OBJECTSTORE_DIR/$S3_BUCKET"
    start objectstore env ROOT_ACCESS_KEY_ID="$S3_ACCESS_KEY" ROOT_SECRET_ACCESS_KEY="$S3_SECRET_KEY" \
        "$VERSITYGW_BIN/versitygw" --port "$NODE_IP:$S3_PORT" --cert "$PKI/objectstore.crt" \
        --key "$PKI/objectstore.key" --region "$S3_REGION" --health /health posix "$OBJECTSTORE_DIR"
    wait_for 30 "the object store" curl -sf --cacert "$PKI/ca.crt" "https://$NODE_IP:$S3_PORT/health"
}

start_containerd() {
    local cni_conf_dir=$NODE_DIR/cni/net.d
    mkdir -p "$CONTAINERD_ROOT" "$NODE_RUN/containerd" "$cni_conf_dir" "$NODE_DIR/cni/ipam"
    cat >"$NODE_DIR/containerd.toml" <<EOF
version = 2
root = "$CONTAINERD_ROOT"
state = "$NODE_RUN/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_DIR/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # CAP_SYS_RESOURCE is missing here: nothing may lower oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$cni_conf_dir"
EOF
    cat >"$cni_conf_dir/10-$CNI_NETWORK.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": $CNI_MASQ,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$NODE_DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
    start "containerd$NODE_TAG" "${NODE_EXEC[@]}" containerd --config "$NODE_DIR/containerd.toml"
    wait_for 30 "containerd$NODE_TAG" ctr --address "$CONTAINERD_SOCK" version
}

start_kubelet() {
    mkdir -p "$NODE_DIR/kubelet"
    # The root mount is private; give the kubelet's directory shared propagation of its own.
    if ! mountpoint -q "$NODE_DIR/kubelet"; then
        mount --bind "$NODE_DIR/kubelet" "$NODE_DIR/kubelet"
        mount --make-rshared "$NODE_DIR/kubelet"
    fi
    cat >"$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
# The kubelet cannot lower its own oom_score_adj here (no CAP_SYS_RESOURCE).
oomScoreAdj: 0
protectKernelDefaults: false
failSwapOn: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
tlsCertFile: $PKI/$NODE_CERT-serving.crt
tlsPrivateKeyFile: $PKI/$NODE_CERT-serving.key
# Locally imported images can never be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
resolvConf: /etc/resolv.conf
serializeImagePulls: false
podPidsLimit: -1
$KUBELET_EXTRA
EOF
    start "kubelet$NODE_TAG" "${NODE_EXEC[@]}" "$K8S_BIN/kubelet" --config "$NODE_DIR/kubelet.yaml" \
        --kubeconfig "$PGWARDEN_STATE/$NODE_CERT.kubeconfig" --root-dir "$NODE_DIR/kubelet" \
        --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1
}

start_kube_proxy() {
    cat >"$NODE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $PGWARDEN_STATE/kube-proxy$NODE_TAG.kubeconfig
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE_NAME
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack:
  # Leave the host's conntrack table size alone.
  maxPerCore: 0
EOF
    start "kube-proxy$NODE_TAG" "${NODE_EXEC[@]}" "$K8S_BIN/kube-proxy" --config "$NODE_DIR/kube-proxy.yaml" --v=1
}

node_ready() {
    [ "$(kubectl_admin get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# Like kind's: the default class, provisioned on the node the first consumer is scheduled to.
default_storage_class() {
    kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $STORAGE_CLASS
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: $PROVISIONER_NAME
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
EOF
}

# ---------------------------------------------------------------------------------------------
# Commands

cluster_up() {
    local control_plane_only=false nodes=1
    case "${1:-}" in
    --control-plane) control_plane_only=true ;;
    --nodes)
        nodes=${2:-}
        [[ "$nodes" =~ ^[1-9]$ ]] || die "--nodes needs a count from 1 to 9"
        ;;
    "") ;;
    *) die "usage: e2e/cluster up [--control-plane | --nodes N]" ;;
    esac
    if running kube-apiserver; then
        die "the test bed is already up (e2e/cluster status; e2e/cluster down)"
    fi
    [ "$(id -u)" = 0 ] || die "the test bed needs root"
    local t0=$SECONDS
    if $control_plane_only; then
        phase "binaries"
        build_etcd
        build_kubernetes
        build_versitygw
    else
        install_deps
        build_all
        phase "images"
        image_build_pause
        image_build_postgres
    fi
    phase "state and PKI"
    # Leftovers of a crashed run would make the new one fail in confusing ways.
    [ -d "$PGWARDEN_STATE" ] && cluster_down_quiet
    mkdir -p "$PGWARDEN_STATE" "$PIDS" "$LOGS" "$RUN_DIR"
    make_pki
    setup_host_network
    phase "etcd"
    start_etcd
    phase "object store"
    start_object_store
    phase "kube-apiserver"
    start_apiserver
    phase "controller-manager"
    start_controller_manager
    if $control_plane_only; then
        phase "default service account"
        wait_for 60 "the default ServiceAccount" kubectl_admin get serviceaccount default
        phase_end
        echo "control plane up in $((SECONDS - t0))s (etcd, kube-apiserver, kube-controller-manager; no node)"
        cluster_env_hint
        return 0
    fi
    start_scheduler
    start_provisioner
    if [ "$nodes" -gt 1 ]; then
        nodes_up "$nodes"
        wait_for 60 "the default ServiceAccount" kubectl_admin get serviceaccount default
        default_storage_class
        phase_end
        echo "$nodes nodes up in $((SECONDS - t0))s: $(node_names | tr '\n' ' ')(nodes $NODES_NET.0/24, pods $NODES_POD_CIDR, services $SERVICE_CIDR)"
        cluster_env_hint
        return 0
    fi
    phase "containerd and images"
    start_containerd
    for n in pause postgres pgwarden; do
        [ -e "$IMAGE_CACHE/$n.tar" ] && image_import "$n"
    done
    phase "kubelet and kube-proxy"
    start_kubelet
    start_kube_proxy
    phase "node Ready"
    wait_for 180 "node $NODE_NAME to be Ready" node_ready
    wait_for 60 "the default ServiceAccount" kubectl_admin get serviceaccount default
    default_storage_class
    phase_end
    echo "node up in $((SECONDS - t0))s: $NODE_NAME ($NODE_IP), pods $POD_CIDR, services $SERVICE_CIDR"
    cluster_env_hint
}

cluster_env_hint() {
    echo "use it:  eval \"\$(e2e/cluster env)\"; kubectl get nodes"
}

cluster_env() {
    echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
    echo "export PATH=$K8S_BIN:$HELM_BIN:$ETCD_BIN:\$PATH"
    echo "export PGWARDEN_TESTBED_NODE_IP=$NODE_IP"
    echo "export PGWARDEN_TESTBED_CA=$PKI/ca.crt"
    echo "export PGWARDEN_S3_ENDPOINT=$NODE_IP:$S3_PORT"
    echo "export PGWARDEN_S3_BUCKET=$S3_BUCKET"
    echo "export PGWARDEN_S3_REGION=$S3_REGION"
    echo "export PGWARDEN_S3_ACCESS_KEY=$S3_ACCESS_KEY"
    echo "export PGWARDEN_S3_SECRET_KEY=$S3_SECRET_KEY"
    # The store's process, for tests that make it unreachable (SIGSTOP) and bring it back.
    echo "export PGWARDEN_S3_PID_FILE=$PIDS/objectstore.pid"
}

cluster_status() {
    local any=false
    local nodes
    nodes=$(node_names | sed 's/^/containerd-/; p; s/^containerd-/kubelet-/; p; s/^kubelet-/kube-proxy-/')
    for n in etcd objectstore kube-apiserver kube-controller-manager kube-scheduler local-path-provisioner containerd kubelet kube-proxy $nodes; do
        if running "$n"; then
            echo "$n: running (pid $(cat "$PIDS/$n.pid"))"
            any=true
        else
            echo "$n: not running"
        fi
    done
    if $any && kubectl_admin get --raw /readyz >/dev/null 2>&1; then
        echo "api: ready at https://127.0.0.1:$APISERVER_PORT (KUBECONFIG=$KUBECONFIG_ADMIN)"
        kubectl_admin get nodes 2>/dev/null || true
    else
        echo "api: not answering"
    fi
}

cluster_down() {
    phase "down"
    cluster_down_quiet
    phase_end
}

# Remove everything `up` creates. Each step tolerates its object being gone already, so this is
# safe to run twice and after a crashed run whose PID files were lost.
cluster_down_quiet() {
    # 0. The nodes of a several-node test bed (e2e/lib/nodes.sh), thawed and killed.
    nodes_down_quiet
    # 1. Containers first, while containerd can still tear down their sandboxes.
    if running containerd; then
        stop kubelet
        local t
        for t in $(ctr_k8s tasks ls -q 2>/dev/null); do
            ctr_k8s tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
        done
    fi
    # 2. Daemons, in reverse start order.
    for n in kube-proxy kubelet local-path-provisioner kube-scheduler kube-controller-manager kube-apiserver objectstore etcd containerd; do
        stop "$n"
    done
    # 3. Anything of ours still running (lost PID files): our binaries, the shims of our
    #    containerd, which name its socket on their command line, and our volume provisioner.
    pkill -KILL -f "supervise $K8S_BIN/" 2>/dev/null || true
    local dir
    for dir in "$K8S_BIN" "$ETCD_BIN" "$VERSITYGW_BIN"; do
        pkill -KILL -f "^$dir/" 2>/dev/null || true
    done
    pkill -KILL -f "containerd --config $PGWARDEN_STATE/" 2>/dev/null || true
    pkill -KILL -f "lib/provisioner.py .*--volumes-dir $VOLUMES_DIR " 2>/dev/null || true
    pkill -KILL -f "containerd-shim-runc-v2 .*-address $RUN_DIR/" 2>/dev/null || true
    sleep 0.5
    # 4. Mounts under our directories (overlay rootfs, volumes, shm, netns), deepest first.
    local m
    for m in $(awk '{print $2}' /proc/mounts | grep -E "^($PGWARDEN_STATE|$RUN_DIR|/run/netns/cni-|/var/run/netns/cni-)" | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    # 5. Network: pod namespaces, our interfaces, our iptables chains.
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do
        ip netns delete "$ns" 2>/dev/null || true
    done
    ip link delete "$CNI_BRIDGE" 2>/dev/null || true
    ip route delete "$SERVICE_CIDR" dev "$NODE_IF" 2>/dev/null || true
    ip link delete "$NODE_IF" 2>/dev/null || true
    remove_iptables_chains
    # 6. cgroups the kubelet and containerd created (cgroup v1: one tree per controller).
    local c
    for c in /sys/fs/cgroup/*/; do
        [ -d "$c/kubepods" ] && find "$c/kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    # 7. Files.
    rm -rf "$PGWARDEN_STATE" "$RUN_DIR"
    rm -f /var/lib/cni/results/"$CNI_NETWORK"-* 2>/dev/null || true
}

# kube-proxy's KUBE-* chains, the kubelet's KUBE-* chains and the CNI plugins' CNI-* chains, with
# every rule that jumps to them; all other rules stay as they were.
remove_iptables_chains() {
    local save
    for save in iptables-save ip6tables-save; do
        command -v "$save" >/dev/null || continue
        local restore=${save%-save}-restore dump
        dump=$($save 2>/dev/null) || continue
        grep -qE 'KUBE-|CNI-' <<<"$dump" || continue
        grep -vE '^:(KUBE-|CNI-)|^-A .*(KUBE-|CNI-)' <<<"$dump" | $restore 2>/dev/null || true
    done
}

# ---------------------------------------------------------------------------------------------
# Control-plane faults, for the tests that check pgwarden survives them: the kube-apiserver
# killed (SIGKILL, as a crash or an OOM kill), started again with the same flags, or frozen.

apiserver_kill() {
    running kube-apiserver || die "kube-apiserver is not running"
    local pid
    pid=$(cat "$PIDS/kube-apiserver.pid")
    kill -KILL "$pid"
    while alive "$pid"; do sleep 0.05; done
    rm -f "$PIDS/kube-apiserver.pid"
    log "kube-apiserver killed (pid $pid)"
}

# After the kube-apiserver comes back, restart the controller-manager and the scheduler that were
# running, as a control-plane restart does (static pods restarted together, or a lost leader
# election): their informers, refused by an apiserver still loading its RBAC rules, can stay stuck
# for minutes, and then no ServiceAccount, EndpointSlice or pod would follow the cluster.
restart_controllers() {
    if running kube-controller-manager; then
        stop kube-controller-manager
        start_controller_manager
    fi
    if running kube-scheduler; then
        stop kube-scheduler
        start_scheduler
    fi
}

apiserver_cmd() {
    local cmd=${1:-} after=0
    shift || true
    case "$cmd" in
    stop) apiserver_kill ;;
    start)
        running kube-apiserver && die "kube-apiserver is already running"
        start_apiserver
        restart_controllers
        ;;
    restart)
        if [ "${1:-}" = --after ]; then after=${2:?--after needs seconds}; fi
        apiserver_kill
        sleep "$after"
        start_apiserver
        restart_controllers
        ;;
    freeze)
        local secs=${1:?freeze needs seconds} pid
        running kube-apiserver || die "kube-apiserver is not running"
        pid=$(cat "$PIDS/kube-apiserver.pid")
        kill -STOP "$pid"
        log "kube-apiserver frozen for ${secs}s (pid $pid)"
        sleep "$secs"
        kill -CONT "$pid"
        log "kube-apiserver thawed"
        ;;
    *) die "usage: e2e/cluster apiserver stop | start | restart [--after N] | freeze N" ;;
    esac
}
