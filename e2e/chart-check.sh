#!/usr/bin/env bash
# `make chart-check`: static checks of the Helm chart, no cluster needed.
#   - helm lint --strict, with the default values and with watchNamespaces set;
#   - both value sets render (ClusterRole cluster-wide, Roles per namespace otherwise, Nodes
#     read-only in both); the
#     operator replicas prefer different nodes unless `affinity` is given;
#   - values.schema.json rejects bad values;
#   - the chart's version equals the crate's version in Cargo.toml;
#   - charts/pgwarden/crds/ is byte-identical to crds/ (`make crds` writes both), file by file;
#   - examples/demo.yaml only uses fields the CRD has (when python3 has PyYAML).
# Uses the test bed's helm ($HELM_BIN from e2e/lib/common.sh; `e2e/cluster build` builds it).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

CHART=$REPO_DIR/charts/pgwarden
CRD_NAME=pgwarden.io_postgresclusters.yaml
CRD_FILES=("$CRD_NAME" pgwarden.io_postgresbackups.yaml)
checks_begin chart-check
need_testbed_helm
[ -d "$CHART" ] || die "no chart at $CHART"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. Lint, strict, both shapes of RBAC.
if "$HELM" lint --strict --kube-version "$KUBE_VERSION" "$CHART" >"$work/lint1" 2>&1 &&
    "$HELM" lint --strict --kube-version "$KUBE_VERSION" "$CHART" --set 'watchNamespaces={a,b}' >"$work/lint2" 2>&1; then
    ok "helm lint --strict"
else
    cat "$work/lint1" "$work/lint2" >&2 2>/dev/null || true
    fail "helm lint --strict reports errors or warnings (output above)"
fi

# 2. Render both value sets and look at what came out.
render() { # render OUT [helm template args...]
    local out=$1
    shift
    "$HELM" template t "$CHART" --namespace pgwarden-system --kube-version "$KUBE_VERSION" "$@" >"$out"
}
count() { grep -c -- "$1" "$2" || true; }
if render "$work/all.yaml"; then
    if [ "$(count '^kind: ClusterRole$' "$work/all.yaml")" = 1 ] && grep -q 'resources: \["nodes"\]' "$work/all.yaml" &&
        [ "$(count '^kind: ClusterRoleBinding$' "$work/all.yaml")" = 1 ] &&
        [ "$(count '^kind: Role$' "$work/all.yaml")" = 0 ] &&
        [ "$(count '^kind: Deployment$' "$work/all.yaml")" = 1 ] &&
        [ "$(count '^kind: Service$' "$work/all.yaml")" = 1 ] &&
        [ "$(count '^kind: ServiceAccount$' "$work/all.yaml")" = 1 ]; then
        ok "default values render: Deployment, Service, ServiceAccount, ClusterRole(+Binding)"
    else
        fail "default values: expected one each of Deployment, Service, ServiceAccount, ClusterRole, ClusterRoleBinding and no Role; got: $(grep '^kind:' "$work/all.yaml" | tr '\n' ' ')"
    fi
    grep -q 'image: "pgwarden.local/pgwarden:dev"' "$work/all.yaml" ||
        fail "default values: the operator image is not pgwarden.local/pgwarden:<appVersion dev>"
    if grep -q 'podAntiAffinity:' "$work/all.yaml" && grep -q 'topologyKey: kubernetes.io/hostname' "$work/all.yaml"; then
        ok "default values: the operator replicas prefer different nodes"
    else
        fail "default values: no preferred podAntiAffinity on kubernetes.io/hostname for the operator"
    fi
else
    fail "helm template with the default values failed"
fi
if render "$work/aff.yaml" --set 'affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=zone' \
    --set 'affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists' &&
    grep -q 'nodeAffinity:' "$work/aff.yaml" && ! grep -q 'podAntiAffinity:' "$work/aff.yaml"; then
    ok "a given affinity replaces the default one"
else
    fail "a given affinity does not replace the default podAntiAffinity"
fi
if render "$work/ns.yaml" --set 'watchNamespaces={a,b}'; then
    # One ClusterRole even so: Nodes (cluster-scoped), read-only, for drains of a primary's node.
    nodes_only=$(awk '/^kind: ClusterRole$/{c=1} c&&/^  - apiGroups/{n++} c&&/^---/{c=0} END{print n+0}' "$work/ns.yaml")
    if [ "$(count '^kind: ClusterRole$' "$work/ns.yaml")" = 1 ] &&
        [ "$(count '^kind: ClusterRoleBinding$' "$work/ns.yaml")" = 1 ] && [ "$nodes_only" = 1 ] &&
        grep -q 'resources: \["nodes"\]' "$work/ns.yaml" &&
        [ "$(count '^kind: Role$' "$work/ns.yaml")" = 3 ] &&
        [ "$(count '^kind: RoleBinding$' "$work/ns.yaml")" = 3 ] &&
        grep -q '^  namespace: a$' "$work/ns.yaml" && grep -q '^  namespace: b$' "$work/ns.yaml" &&
        grep -q 'value: "a,b"' "$work/ns.yaml"; then
        ok "watchNamespaces={a,b} renders: Role+RoleBinding in a, b and the release namespace; one ClusterRole, nodes only"
    else
        fail "watchNamespaces={a,b}: expected Roles/RoleBindings in a, b, pgwarden-system, one ClusterRole (nodes only), PGWARDEN_WATCH_NAMESPACES=a,b; got: $(grep '^kind:' "$work/ns.yaml" | tr '\n' ' ')"
    fi
else
    fail "helm template --set watchNamespaces={a,b} failed"
fi
if command -v python3 >/dev/null && python3 -c 'import yaml' 2>/dev/null; then
    if python3 -c 'import sys, yaml
for f in sys.argv[1:]:
    docs = [d for d in yaml.safe_load_all(open(f)) if d]
    assert docs and all("kind" in d and "metadata" in d for d in docs), f' "$work/all.yaml" "$work/ns.yaml"; then
        ok "rendered manifests parse as YAML"
    else
        fail "rendered manifests do not parse as YAML"
    fi
fi

# 3. The schema (and the template's own guard) refuse bad values with a message.
for bad in logFormat=xml image.pullPolicy=Sometimes image.tag=latest replicaCount=0 'watchNamespaces={Not_A_Namespace}' typoKey=1; do
    if render "$work/bad.yaml" --set "$bad" 2>"$work/bad.err"; then
        fail "--set $bad was accepted; the chart must refuse it"
    elif ! grep -qi 'schema\|not allowed' "$work/bad.err"; then
        fail "--set $bad failed without a schema message: $(cat "$work/bad.err")"
    fi
done
ok "bad values are refused (logFormat, pullPolicy, tag latest, replicaCount, namespace names, unknown keys)"

# 4. Chart version == crate version.
chart_version=$(awk '/^version:/ { gsub(/"/, "", $2); print $2; exit }' "$CHART/Chart.yaml")
crate_version=$(awk -F'"' '/^\[package\]/ { p = 1; next } /^\[/ { p = 0 } p && /^version *=/ { print $2; exit }' "$REPO_DIR/Cargo.toml")
if [ -n "$crate_version" ] && [ "$chart_version" = "$crate_version" ]; then
    ok "chart version $chart_version = Cargo.toml version"
else
    fail "charts/pgwarden/Chart.yaml version '$chart_version' differs from Cargo.toml version '$crate_version'; set Chart.yaml's version to the crate's"
fi

# 5. The chart's CRDs are the generated ones.
for crd in "${CRD_FILES[@]}"; do
    if cmp -s "$REPO_DIR/crds/$crd" "$CHART/crds/$crd"; then
        ok "charts/pgwarden/crds/$crd is byte-identical to crds/$crd"
    else
        fail "charts/pgwarden/crds/$crd differs from crds/$crd (or is missing); run \`make crds\`"
    fi
done
extra=$(find "$CHART/crds" -type f ! -name "${CRD_FILES[0]}" ! -name "${CRD_FILES[1]}")
[ -z "$extra" ] || fail "unexpected files in charts/pgwarden/crds/: $extra"

# 6. The example uses only fields the CRD defines (needs PyYAML; skipped without it).
if command -v python3 >/dev/null && python3 -c 'import yaml' 2>/dev/null; then
    if python3 - "$REPO_DIR/crds/$CRD_NAME" "$REPO_DIR/examples/demo.yaml" <<'EOF'; then
import sys, yaml
crd = yaml.safe_load(open(sys.argv[1]))
schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
doc = yaml.safe_load(open(sys.argv[2]))
assert doc["apiVersion"] == "pgwarden.io/v1alpha1" and doc["kind"] == "PostgresCluster", "wrong kind"
errors = []
def walk(value, schema, path):
    if isinstance(value, dict) and "properties" in schema:
        for k, v in value.items():
            if k not in schema["properties"]:
                errors.append(f"{path}.{k}: not a field of the CRD")
            else:
                walk(v, schema["properties"][k], f"{path}.{k}")
        for k in schema.get("required", []):
            if k not in value:
                errors.append(f"{path}.{k}: required by the CRD")
    elif "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not one of {schema['enum']}")
walk(doc["spec"], schema, "spec")
for e in errors:
    print("    " + e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
        ok "examples/demo.yaml uses only fields the CRD defines"
    else
        fail "examples/demo.yaml does not match the CRD (see above)"
    fi
else
    echo "    skip: examples/demo.yaml field check (python3 without PyYAML)"
fi

checks_end
