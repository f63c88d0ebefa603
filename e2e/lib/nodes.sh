# Several nodes on one machine (sourced by e2e/cluster; used only by `up --nodes N`, N > 1, and
# `node ...`): each node is a network namespace, a set of cgroups, and its own containerd,
# kubelet and kube-proxy, with the one-node functions of e2e/lib/node.sh run in a subshell that
# points them at the node's files (NODE_DIR, NODE_RUN, NODE_TAG, NODE_CERT, NODE_EXEC).
#
# Network: a bridge on the host (NODES_BRIDGE, NODES_GATEWAY) joins one veth per node; node i
# has NODES_NET.i on its eth0 and the pod range 10.213.(16+i).0/24 behind its own CNI bridge.
# The host routes each pod range to its node, so every pod reaches every other pod, the host
# and the kube-apiserver (10.213.0.1 on the host) by its own address: no masquerading anywhere.
# A kube-proxy on the host gives the host (the tests, `make demo`) the Service addresses.
#
# Cgroups: /NAME in every hierarchy holds the node's daemons (they move themselves there before
# they exec) and, as the kubelet's cgroupRoot, its pods. Two kubelets sharing /kubepods would
# kill each other's pods. The freezer of /NAME freezes the whole node at once.
#
# Faults (`e2e/cluster node ...`): freeze|thaw (freezer), partition|heal (the host end of the
# node's link down/up: every process alive, cut off), kill (every process of the node SIGKILLed
# at once and its link down, its files as a crashed machine leaves them), restart (link up,
# containerd, kubelet and kube-proxy started again).

NODES_BRIDGE=pgw-nodes
NODES_NET=10.213.32
NODES_GATEWAY=$NODES_NET.254
NODES_POD_CIDR=10.213.16.0/20
# The kubeconfigs of daemons inside a node: 127.0.0.1 there is the node's own loopback.
NODES_APISERVER=https://$NODE_IP:$APISERVER_PORT
NODES_FILE=$PGWARDEN_STATE/nodes/names

# Run "$@" inside node $1: its cgroups first (before anything forks), then its network namespace.
# nsenter --net only: `ip netns exec` would also make a new mount namespace and hide the
# kubelet's mounts from runc.
INNODE='n=$1; shift
for c in /sys/fs/cgroup/*/"$n"; do echo $$ >"$c/cgroup.procs"; done
exec nsenter --net=/run/netns/"$n" "$@"'

node_index() { echo "${1##*node}"; }

# node_env NAME: the one-node variables, for node NAME (call in a subshell).
node_env() {
    local i
    i=$(node_index "$1")
    NODE_NAME=$1
    NODE_IP=$NODES_NET.$i
    POD_CIDR=10.213.$((16 + i)).0/24
    CLUSTER_CIDR=$NODES_POD_CIDR
    NODE_DIR=$PGWARDEN_STATE/nodes/$NODE_NAME
    NODE_RUN=$RUN_DIR/$NODE_NAME
    NODE_TAG=-$NODE_NAME
    NODE_CERT=kubelet-$NODE_NAME
    CONTAINERD_ROOT=$NODE_DIR/containerd
    CONTAINERD_SOCK=$NODE_RUN/containerd.sock
    CNI_MASQ=false
    KUBELET_EXTRA="cgroupRoot: /$NODE_NAME
podLogsDir: $NODE_DIR/pod-logs"
    NODE_EXEC=(bash -c "$INNODE" innode "$NODE_NAME")
}

node_names() { [ -f "$NODES_FILE" ] && cat "$NODES_FILE"; }

node_cgroups_create() {
    local n=$1 c
    for c in /sys/fs/cgroup/*/; do
        mkdir -p "$c$n"
        # A new cpuset has no CPUs and no memory nodes until given its parent's.
        if [ -f "$c$n/cpuset.cpus" ]; then
            cat "${c}cpuset.cpus" >"$c$n/cpuset.cpus"
            cat "${c}cpuset.mems" >"$c$n/cpuset.mems"
        fi
    done
}

# Every PID in the node's cgroups (the freezer hierarchy has them all).
node_pids() {
    local d=/sys/fs/cgroup/freezer/$1
    [ -d "$d" ] || return 0
    find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
}

node_freezer() {
    local d=/sys/fs/cgroup/freezer/$1/freezer.state want=$2
    [ -f "$d" ] || die "node $1 has no freezer cgroup"
    echo "$want" >"$d"
    local i
    for i in $(seq 1 100); do
        [ "$(cat "$d")" = "$want" ] && return 0
        sleep 0.05
    done
    die "node $1 did not become $want"
}

node_cgroups_remove() {
    local n=$1 c
    [ -f "/sys/fs/cgroup/freezer/$n/freezer.state" ] && echo THAWED >"/sys/fs/cgroup/freezer/$n/freezer.state"
    for c in /sys/fs/cgroup/*/; do
        [ -d "$c$n" ] && find "$c$n" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    return 0
}

node_network_create() {
    local n=$1 i
    i=$(node_index "$n")
    ip netns add "$n"
    ip link add "pgwv$i" type veth peer name eth0 netns "$n"
    ip link set "pgwv$i" master "$NODES_BRIDGE" up
    ip -n "$n" link set lo up
    ip -n "$n" addr add "$NODES_NET.$i/24" dev eth0
    ip -n "$n" link set eth0 up
    ip -n "$n" route add default via "$NODES_GATEWAY"
    nsenter --net="/run/netns/$n" sysctl -qw net.ipv4.ip_forward=1
    nsenter --net="/run/netns/$n" sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
    ip route replace "10.213.$((16 + i)).0/24" via "$NODES_NET.$i"
}

node_link() { ip link set "pgwv$(node_index "$1")" "$2"; }

# The daemons of node $1 (containerd, images unless $2 is "restart": a restarted machine still
# has them, kubelet, kube-proxy), in a subshell.
node_start() {
    (
        node_env "$1"
        start_containerd
        local img
        for img in pause postgres pgwarden; do
            [ "${2:-}" != restart ] && [ -e "$IMAGE_CACHE/$img.tar" ] && image_import "$img"
        done
        start_kubelet
        start_kube_proxy
    )
}

# Import image $1 into the one node's containerd, or into every node's.
image_import_everywhere() {
    local n
    if [ -z "$(node_names)" ]; then
        image_import "$1"
        return
    fi
    for n in $(node_names); do
        (
            node_env "$n"
            image_import "$1"
        )
    done
}

node_ready_named() {
    [ "$(kubectl_admin get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# After the control plane (up to the scheduler and provisioner) is running: N nodes.
nodes_up() {
    local count=$1 i n
    ip link show "$NODES_BRIDGE" >/dev/null 2>&1 || ip link add "$NODES_BRIDGE" type bridge
    ip addr replace "$NODES_GATEWAY/24" dev "$NODES_BRIDGE"
    ip link set "$NODES_BRIDGE" up
    mkdir -p "$PGWARDEN_STATE/nodes"
    : >"$NODES_FILE"
    for i in $(seq 1 "$count"); do
        n=pgwarden-node$i
        echo "$n" >>"$NODES_FILE"
        cert "kubelet-$n" "system:node:$n" system:nodes
        cert "kubelet-$n-serving" "system:node:$n" system:nodes "IP:$NODES_NET.$i,DNS:$n"
        kubeconfig "kubelet-$n" "kubelet-$n" "$NODES_APISERVER"
        kubeconfig "kube-proxy-$n" kube-proxy "$NODES_APISERVER"
        node_cgroups_create "$n"
        node_network_create "$n"
    done
    # The host's own kube-proxy: Service addresses for the tests and `make demo`.
    (
        NODE_NAME=pgwarden-host CLUSTER_CIDR=$NODES_POD_CIDR
        start_kube_proxy
    )
    for n in $(node_names); do
        phase "node $n"
        node_start "$n"
    done
    phase "nodes Ready"
    for n in $(node_names); do
        wait_for 180 "node $n to be Ready" node_ready_named "$n"
    done
}

# Remove every node: processes (thawed first: a frozen process cannot die), mounts are left to
# cluster_down_quiet, namespaces, links, routes and cgroups here.
nodes_down_quiet() {
    local n i pid
    for n in $(node_names) $(ls /sys/fs/cgroup/freezer 2>/dev/null | grep '^pgwarden-node'); do
        [ -f "/sys/fs/cgroup/freezer/$n/freezer.state" ] && echo THAWED >"/sys/fs/cgroup/freezer/$n/freezer.state"
        (
            node_env "$n"
            if running "containerd$NODE_TAG"; then
                stop "kubelet$NODE_TAG"
                for t in $(ctr_k8s tasks ls -q 2>/dev/null); do
                    ctr_k8s tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
                done
            fi
            for d in kube-proxy kubelet containerd; do stop "$d$NODE_TAG"; done
        )
        for pid in $(node_pids "$n"); do kill -KILL "$pid" 2>/dev/null || true; done
    done
    stop kube-proxy
    sleep 0.5
    for n in $(node_names) $(ls /sys/fs/cgroup/freezer 2>/dev/null | grep '^pgwarden-node'); do
        i=$(node_index "$n")
        ip route delete "10.213.$((16 + i)).0/24" 2>/dev/null || true
        ip link delete "pgwv$i" 2>/dev/null || true
        ip netns delete "$n" 2>/dev/null || true
        node_cgroups_remove "$n"
    done
    for n in $(ip netns list 2>/dev/null | awk '/^pgwarden-node/ {print $1}'); do
        ip netns delete "$n" 2>/dev/null || true
    done
    ip link delete "$NODES_BRIDGE" 2>/dev/null || true
}

node_cmd() {
    local action=${1:-} n=${2:-}
    [ -n "$n" ] || die "usage: e2e/cluster node freeze|thaw|partition|heal|kill|restart NAME"
    node_names | grep -qx "$n" || die "no node $n (nodes: $(node_names | tr '\n' ' '))"
    case "$action" in
    freeze)
        node_freezer "$n" FROZEN
        log "node $n frozen"
        ;;
    thaw)
        node_freezer "$n" THAWED
        log "node $n thawed"
        ;;
    partition)
        node_link "$n" down
        log "node $n partitioned (link down)"
        ;;
    heal)
        node_link "$n" up
        log "node $n healed (link up)"
        ;;
    kill)
        # Frozen first so that nothing of the node runs between the first and the last kill.
        node_link "$n" down
        node_freezer "$n" FROZEN
        local pid
        for pid in $(node_pids "$n"); do kill -KILL "$pid" 2>/dev/null || true; done
        node_freezer "$n" THAWED
        local i
        for i in $(seq 1 100); do
            [ -z "$(node_pids "$n")" ] && break
            sleep 0.1
        done
        log "node $n killed"
        ;;
    restart)
        [ -z "$(node_pids "$n")" ] || die "node $n is running (e2e/cluster node kill $n first)"
        node_link "$n" up
        node_start "$n" restart
        wait_for 180 "node $n to be Ready" node_ready_named "$n"
        log "node $n restarted"
        ;;
    *) die "usage: e2e/cluster node freeze|thaw|partition|heal|kill|restart NAME" ;;
    esac
}
