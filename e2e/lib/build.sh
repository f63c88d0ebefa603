# Building the test bed's binaries from Go modules (sourced by e2e/cluster).
# Each set of binaries is keyed by version under $PGWARDEN_CACHE/bin and built only when missing.

# Build stamps: without them the components report v0.0.0 and Helm's kubeVersion checks fail.
k8s_ldflags() {
    local v=$K8S_VERSION major minor
    major=$(echo "${v#v}" | cut -d. -f1)
    minor=$(echo "${v#v}" | cut -d. -f2)
    local x=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        x+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        x+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    echo "-s -w$x"
}

K8S_COMMANDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"

build_kubernetes() {
    local missing=""
    for c in $K8S_COMMANDS; do [ -x "$K8S_BIN/$c" ] || missing+=" k8s.io/kubernetes/cmd/$c"; done
    if [ -z "$missing" ]; then
        log "kubernetes $K8S_VERSION: cached in $K8S_BIN"
        return 0
    fi
    log "building$missing (cold: 25-40 min on 2 cores)"
    mkdir -p "$K8S_BIN.tmp"
    (cd "$E2E_DIR/gomod/kubernetes" &&
        go build -trimpath -tags selinux,notest,grpcnotrace -ldflags "$(k8s_ldflags)" \
            -o "$K8S_BIN.tmp/" $missing)
    mkdir -p "$K8S_BIN"
    mv "$K8S_BIN.tmp"/* "$K8S_BIN/"
    rmdir "$K8S_BIN.tmp"
}

build_etcd() {
    if [ -x "$ETCD_BIN/etcd" ]; then
        log "etcd $ETCD_VERSION: cached"
        return 0
    fi
    log "building etcd $ETCD_VERSION"
    mkdir -p "$ETCD_BIN"
    (cd "$E2E_DIR/gomod/etcd" && go build -trimpath -ldflags "-s -w" -o "$ETCD_BIN/etcd.tmp" go.etcd.io/etcd/server/v3)
    mv "$ETCD_BIN/etcd.tmp" "$ETCD_BIN/etcd"
}

build_helm() {
    if [ -x "$HELM_BIN/helm" ]; then
        log "helm $HELM_VERSION: cached"
        return 0
    fi
    log "building helm $HELM_VERSION"
    mkdir -p "$HELM_BIN"
    (cd "$E2E_DIR/gomod/helm" &&
        go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
            -o "$HELM_BIN/helm.tmp" helm.sh/helm/v3/cmd/helm)
    mv "$HELM_BIN/helm.tmp" "$HELM_BIN/helm"
}

build_versitygw() {
    if [ -x "$VERSITYGW_BIN/versitygw" ]; then
        log "versitygw $VERSITYGW_VERSION: cached"
        return 0
    fi
    log "building versitygw $VERSITYGW_VERSION"
    mkdir -p "$VERSITYGW_BIN"
    (cd "$E2E_DIR/gomod/versitygw" &&
        go build -trimpath -ldflags "-s -w" -o "$VERSITYGW_BIN/versitygw.tmp" \
            github.com/versity/versitygw/cmd/versitygw)
    mv "$VERSITYGW_BIN/versitygw.tmp" "$VERSITYGW_BIN/versitygw"
}

build_all() {
    phase "build etcd $ETCD_VERSION"
    build_etcd
    phase "build kubernetes $K8S_VERSION"
    build_kubernetes
    phase "build helm $HELM_VERSION"
    build_helm
    phase "build versitygw $VERSITYGW_VERSION"
    build_versitygw
    phase_end
}
