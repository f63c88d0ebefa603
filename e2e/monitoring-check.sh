#!/usr/bin/env bash
# `make monitoring-check`: static checks of monitoring/ and its copies in the chart, no cluster needed.
#   - promtool check rules monitoring/alerts.yaml, and promtool test rules monitoring/alerts_test.yaml
#     (every alert firing and not firing);
#   - monitoring/grafana-dashboard.json is valid JSON with the expected shape (uid, variables,
#     unique panel ids, every query on the ${datasource} variable) and every query parses as PromQL;
#   - charts/pgwarden/files/ holds byte-identical copies of alerts.yaml and grafana-dashboard.json;
#   - helm lint --strict with prometheusRule and grafanaDashboard enabled, and the rendered
#     PrometheusRule and ConfigMap carry exactly those files.
# Needs promtool (Debian's `prometheus` package, in DEBIAN_PACKAGES: `e2e/cluster` installs it),
# jq, and the test bed's helm ($HELM_BIN from e2e/lib/common.sh).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

MON=$REPO_DIR/monitoring
CHART=$REPO_DIR/charts/pgwarden
PROMTOOL=${PROMTOOL:-promtool}
checks_begin monitoring-check

command -v "$PROMTOOL" >/dev/null ||
    die "promtool not found; install Debian's prometheus package (apt-get install --no-install-recommends prometheus, with a policy-rc.d that keeps its daemon from starting; e2e/cluster does this)"
command -v jq >/dev/null || die "jq not found"
need_testbed_helm

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. The rules, and their unit tests.
if "$PROMTOOL" check rules "$MON/alerts.yaml" >"$work/check" 2>&1; then
    ok "promtool check rules monitoring/alerts.yaml ($(grep -o '[0-9]* rules found' "$work/check"))"
else
    cat "$work/check" >&2
    fail "promtool check rules monitoring/alerts.yaml"
fi
if (cd "$MON" && "$PROMTOOL" test rules alerts_test.yaml) >"$work/test" 2>&1; then
    ok "promtool test rules monitoring/alerts_test.yaml"
else
    cat "$work/test" >&2
    fail "promtool test rules monitoring/alerts_test.yaml"
fi
# Every alert has a test that shows it firing.
untested=$(comm -23 \
    <(grep -o '^ *- alert: [A-Za-z]*' "$MON/alerts.yaml" | awk '{ print $3 }' | sort -u) \
    <(grep -B1 -A0 '^ *exp_alerts:$' "$MON/alerts_test.yaml" | awk '/alertname:/ { print $2 }' | sort -u))
[ -z "$untested" ] && ok "every alert has a firing test" || fail "alerts never shown firing in alerts_test.yaml: $untested"

# 2. The dashboard.
dash=$MON/grafana-dashboard.json
if jq empty "$dash" 2>"$work/jq"; then
    ok "grafana-dashboard.json is valid JSON"
    problems=$(jq -r '
        [ (if (.uid // "") == "" then "no uid" else empty end),
          (if (.title // "") == "" then "no title" else empty end),
          (["datasource", "namespace", "scope"] - [.templating.list[].name] | map("no variable " + .) | .[]),
          ([.panels[].id] | if length != (unique | length) then "panel ids are not unique" else empty end),
          (.panels[] | select(.gridPos == null) | "panel \(.title) has no gridPos"),
          (.panels[] | select(.type != "row") | select(.datasource.uid != "${datasource}") | "panel \(.title) does not use ${datasource}"),
          (.panels[] | select(.type != "row") | select((.targets // []) | length == 0) | "panel \(.title) has no query"),
          (.panels[] | .targets[]? | select(.datasource.uid != "${datasource}") | "a query of a panel does not use ${datasource}")
        ] | .[]' "$dash")
    [ -z "$problems" ] && ok "dashboard: uid, title, variables datasource/namespace/scope, panel ids unique, every query on \${datasource}" ||
        fail "dashboard: $problems"
    # Every query must parse: Grafana's variables replaced, each query a recording rule for promtool.
    {
        echo "groups:"
        echo "  - name: dashboard-queries"
        echo "    rules:"
        jq -r '.. | objects | select(has("expr")) | .expr
            | gsub("\\$__rate_interval"; "1m") | gsub("\\$__range"; "1h") | gsub("\\$__interval"; "1m")
            | gsub("\\$(namespace|scope)"; ".*")
            | "      - record: dashboard:query\n        expr: \(@json)"' "$dash"
    } >"$work/queries.yaml"
    n=$(grep -c 'record:' "$work/queries.yaml" || true)
    if [ "$n" -gt 0 ] && "$PROMTOOL" check rules "$work/queries.yaml" >"$work/qcheck" 2>&1; then
        ok "dashboard: all $n queries parse as PromQL"
    else
        cat "$work/qcheck" >&2 2>/dev/null || true
        fail "dashboard: a query does not parse as PromQL (or there are none)"
    fi
else
    cat "$work/jq" >&2
    fail "monitoring/grafana-dashboard.json is not valid JSON"
fi

# 3. The chart ships the same files.
for f in alerts.yaml grafana-dashboard.json; do
    if cmp -s "$MON/$f" "$CHART/files/$f"; then
        ok "charts/pgwarden/files/$f is byte-identical to monitoring/$f"
    else
        fail "charts/pgwarden/files/$f differs from monitoring/$f (or is missing); cp monitoring/$f charts/pgwarden/files/$f"
    fi
done

# 4. The chart with both enabled: lint, render, and the rendered objects carry those files.
enable=(--set prometheusRule.enabled=true --set grafanaDashboard.enabled=true
    --set prometheusRule.labels.release=kube-prometheus-stack --set grafanaDashboard.annotations.grafana_folder=PostgreSQL)
if "$HELM" lint --strict --kube-version "$KUBE_VERSION" "$CHART" "${enable[@]}" >"$work/lint" 2>&1; then
    ok "helm lint --strict with prometheusRule and grafanaDashboard enabled"
else
    cat "$work/lint" >&2
    fail "helm lint --strict with prometheusRule and grafanaDashboard enabled"
fi
if "$HELM" template t "$CHART" --namespace monitoring --kube-version "$KUBE_VERSION" "${enable[@]}" >"$work/on.yaml" 2>"$work/on.err"; then
    if [ "$(grep -c '^kind: PrometheusRule$' "$work/on.yaml")" = 1 ] &&
        [ "$(grep -c '^kind: ConfigMap$' "$work/on.yaml")" = 1 ] &&
        grep -q '^    grafana_dashboard: "1"$' "$work/on.yaml" &&
        grep -q '^    release: kube-prometheus-stack$' "$work/on.yaml"; then
        ok "enabled: one PrometheusRule (with prometheusRule.labels) and one ConfigMap labelled grafana_dashboard: \"1\""
    else
        fail "enabled: expected one PrometheusRule and one ConfigMap labelled grafana_dashboard; got: $(grep '^kind:' "$work/on.yaml" | tr '\n' ' ')"
    fi
else
    cat "$work/on.err" >&2
    fail "helm template with prometheusRule and grafanaDashboard enabled failed"
fi
if "$HELM" template t "$CHART" --kube-version "$KUBE_VERSION" >"$work/off.yaml" 2>&1 &&
    ! grep -q '^kind: PrometheusRule$\|grafana_dashboard' "$work/off.yaml"; then
    ok "default values: no PrometheusRule, no dashboard ConfigMap"
else
    fail "default values render a PrometheusRule or a dashboard ConfigMap (both must be opt-in)"
fi
if "$HELM" template t "$CHART" --kube-version "$KUBE_VERSION" --set grafanaDashboard.enabled=true \
    --set grafanaDashboard.labels.grafana_dashboard=x >/dev/null 2>&1; then
    fail "grafanaDashboard.labels.grafana_dashboard was accepted (it would duplicate the label)"
fi
if command -v python3 >/dev/null && python3 -c 'import yaml' 2>/dev/null; then
    if python3 - "$work/on.yaml" "$MON/alerts.yaml" "$MON/grafana-dashboard.json" "$work/rendered-rules.yaml" <<'EOF'; then
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rule = next(d for d in docs if d["kind"] == "PrometheusRule")
cm = next(d for d in docs if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"])
assert rule["apiVersion"] == "monitoring.coreos.com/v1", rule["apiVersion"]
assert rule["spec"] == yaml.safe_load(open(sys.argv[2])), "PrometheusRule spec != monitoring/alerts.yaml"
(name, text), = cm["data"].items()
assert name.endswith(".json"), name
assert json.loads(text) == json.load(open(sys.argv[3])), "ConfigMap JSON != monitoring/grafana-dashboard.json"
yaml.safe_dump(rule["spec"], open(sys.argv[4], "w"))
EOF
        if "$PROMTOOL" check rules "$work/rendered-rules.yaml" >/dev/null 2>&1; then
            ok "rendered PrometheusRule spec = monitoring/alerts.yaml (and promtool accepts it); ConfigMap = the dashboard"
        else
            fail "the rendered PrometheusRule's rules do not pass promtool check rules"
        fi
    else
        fail "the rendered PrometheusRule or dashboard ConfigMap do not carry monitoring/'s files (see above)"
    fi
else
    echo "    skip: comparing the rendered PrometheusRule and ConfigMap with monitoring/ (python3 without PyYAML)"
fi

checks_end
