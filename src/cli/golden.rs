//! Golden tests: typed fixtures rendered to text and compared with `tests/golden/cli/*.txt`.
//! `UPDATE_GOLDEN=1 cargo test --lib cli::` rewrites the files (then read the diff!).

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use serde_json::{Value, json};

use crate::api::PostgresCluster;

use super::error::CliError;
use super::k8s::proxy_failure;
use super::model::{self, Action, Snapshot, Topology};
use super::render;

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/cli")
        .join(name);
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing golden file {}: run with UPDATE_GOLDEN=1",
            path.display()
        )
    });
    assert!(
        actual == expected,
        "{name} differs from its golden file (UPDATE_GOLDEN=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

fn cluster(name: &str, extra_spec: Value, status: Value) -> PostgresCluster {
    let mut spec = json!({"image": "pgwarden.local/postgres:15", "storage": {"size": "1Gi"}});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "pgwarden.io/v1alpha1",
        "kind": "PostgresCluster",
        "metadata": {"name": name, "namespace": "default", "generation": 4},
        "spec": spec,
        "status": status,
    }))
    .expect("fixture cluster")
}

/// A pod with an IP and, optionally, a raw `pgwarden.io/status` annotation.
fn pod(name: &str, ip: Option<&str>, annotation: Option<String>) -> Pod {
    let mut annotations = serde_json::Map::new();
    if let Some(a) = annotation {
        annotations.insert("pgwarden.io/status".into(), Value::String(a));
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "status": {"podIP": ip},
    }))
    .expect("fixture pod")
}

#[allow(clippy::too_many_arguments)]
fn status(
    ip: &str,
    role: &str,
    state: &str,
    tl: u32,
    lsn: u64,
    streaming: bool,
    pending_restart: bool,
    tags: Value,
) -> String {
    let mut v = json!({
        "conn_url": format!("postgres://{ip}:5432/postgres"),
        "api_url": format!("http://{ip}:8008/patroni"),
        "state": state, "role": role, "xlog_location": lsn, "timeline": tl,
        "version": "0.1.0", "tags": tags,
    });
    if streaming {
        v["replication_state"] = json!("streaming");
    }
    if pending_restart {
        v["pending_restart"] = json!(true);
    }
    v.to_string()
}

const MB: u64 = 1 << 20;

/// `demo`: a healthy three-member cluster, one replica 3.6 MB behind.
fn healthy() -> Snapshot {
    let base = 48 * MB + 1234;
    Snapshot {
        namespace: "default".into(),
        cluster: cluster("demo", json!({}), json!({})),
        pods: vec![
            // Out of order on purpose: the table sorts by ordinal.
            pod(
                "demo-2",
                Some("10.244.0.17"),
                Some(status(
                    "10.244.0.17",
                    "replica",
                    "running",
                    2,
                    base - 3 * MB - 600 * 1024,
                    true,
                    false,
                    json!({}),
                )),
            ),
            pod(
                "demo-0",
                Some("10.244.0.15"),
                Some(status(
                    "10.244.0.15",
                    "primary",
                    "running",
                    2,
                    base,
                    false,
                    false,
                    json!({}),
                )),
            ),
            pod(
                "demo-1",
                Some("10.244.0.16"),
                Some(status(
                    "10.244.0.16",
                    "replica",
                    "running",
                    2,
                    base,
                    true,
                    false,
                    json!({}),
                )),
            ),
        ],
        lease_holder: Some("demo-0".into()),
        state: BTreeMap::from([
            ("initialize".into(), "7412345678901234567".into()),
            (
                "history".into(),
                r#"[[1,50331808,"no recovery target specified","2025-01-01T10:00:00+00:00","demo-0"]]"#
                    .into(),
            ),
        ]),
    }
}

/// `pg`: synchronous mode, paused, a pending switchover, a leader with a pending restart, one
/// member with a corrupt annotation, one not started yet (no annotation, no IP) and tagged
/// nofailover in the spec.
fn eventful() -> Snapshot {
    Snapshot {
        namespace: "prod".into(),
        cluster: cluster(
            "pg",
            json!({"instances": 4, "pause": true, "ha": {"synchronousMode": "on"},
                   "instanceTags": {"pg-3": {"nofailover": true}}}),
            json!({}),
        ),
        pods: vec![
            pod(
                "pg-0",
                Some("10.244.1.5"),
                Some(status(
                    "10.244.1.5",
                    "replica",
                    "running",
                    3,
                    90 * MB,
                    true,
                    false,
                    json!({}),
                )),
            ),
            pod(
                "pg-1",
                Some("10.244.1.6"),
                Some(status(
                    "10.244.1.6",
                    "primary",
                    "running",
                    3,
                    100 * MB,
                    false,
                    true,
                    json!({}),
                )),
            ),
            pod(
                "pg-2",
                Some("10.244.1.7"),
                Some("{\"role\": \"king\"".into()),
            ),
            pod("pg-3", None, None),
        ],
        lease_holder: Some("pg-1".into()),
        state: BTreeMap::from([
            ("initialize".into(), "7498765432109876543".into()),
            (
                "sync".into(),
                r#"{"leader":"pg-1","sync_standby":["pg-0"]}"#.into(),
            ),
            (
                "switchover".into(),
                r#"{"leader":"pg-1","candidate":"pg-0"}"#.into(),
            ),
            ("pause".into(), "true".into()),
        ]),
    }
}

/// `fresh`: just created, nobody has bootstrapped, no leader.
fn fresh() -> Snapshot {
    Snapshot {
        namespace: "default".into(),
        cluster: cluster("fresh", json!({"instances": 2}), json!({})),
        pods: vec![
            pod("fresh-0", Some("10.244.0.30"), None),
            pod("fresh-1", None, None),
        ],
        lease_holder: None,
        state: BTreeMap::new(),
    }
}

fn topo(s: &Snapshot) -> Topology {
    model::topology(s)
}

#[test]
fn list_of_a_healthy_cluster() {
    let t = topo(&healthy());
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    golden("list_healthy.txt", &render::list_table(&t));
}

#[test]
fn list_with_sync_pause_switchover_and_a_corrupt_annotation() {
    let t = topo(&eventful());
    let mut text = render::list_table(&t);
    text.push_str("\n# warnings (stderr)\n");
    for w in &t.warnings {
        text.push_str(&format!("warning: {w}\n"));
    }
    golden("list_eventful.txt", &text);
}

#[test]
fn list_of_a_cluster_that_has_not_bootstrapped() {
    golden("list_fresh.txt", &render::list_table(&topo(&fresh())));
}

#[test]
fn list_of_several_clusters_as_json_and_yaml() {
    let all = [topo(&healthy()), topo(&eventful())];
    let json = render::list_json(&all);
    let parsed: Vec<Value> = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(parsed.len(), 7);
    golden("list.json", &json);
    let yaml = render::list_yaml(&all);
    let back: Value = serde_saphyr::from_str(&yaml).expect("valid YAML");
    assert_eq!(back, serde_json::from_str::<Value>(&json).unwrap());
    golden("list.yaml", &yaml);
    assert_eq!(render::list_json(&[]), "[]\n");
    assert_eq!(render::list_yaml(&[]), "[]\n");
}

#[test]
fn the_leader_row_is_the_lease_holder_and_lag_is_in_mb() {
    let t = topo(&healthy());
    let roles: Vec<(&str, &str, String)> = t
        .members
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.role.title(),
                m.lag.mb().map(|l| l.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("demo-0", "Leader", String::new()),
            ("demo-1", "Replica", "0".into()),
            ("demo-2", "Replica", "4".into())
        ]
    );
    let e = topo(&eventful());
    assert_eq!(e.member("pg-0").unwrap().role, model::Role::SyncStandby);
    assert_eq!(e.member("pg-2").unwrap().state, "unknown");
    assert!(
        e.member("pg-3").unwrap().nofailover(),
        "the spec's tags count"
    );
}

fn history_rows() -> Vec<[String; 5]> {
    let state = BTreeMap::from([(
        "history".to_string(),
        json!([
            [
                1,
                50331808,
                "no recovery target specified",
                "2025-01-01T10:00:00+00:00",
                "demo-1"
            ],
            [
                2,
                83886240,
                "switchover",
                "2025-01-02T08:30:12.345+00:00",
                "demo-2"
            ],
            [
                3,
                100663456,
                "demo-2 stopped renewing the leader lease",
                "2025-01-03T23:59:59+00:00",
                "demo-0"
            ],
            [4, 117440672, "an old three-field row"]
        ])
        .to_string(),
    )]);
    model::history_rows(&state, "demo").unwrap()
}

#[test]
fn history_table_and_json() {
    let rows = history_rows();
    golden("history.txt", &render::history_table(&rows));
    golden(
        "history.json",
        &(serde_json::to_string_pretty(&render::history_records(&rows)).unwrap() + "\n"),
    );
    golden("history_empty.txt", &render::history_table(&[]));
}

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

fn event(
    name: &str,
    when: &str,
    type_: &str,
    reason: &str,
    note: &str,
    series: Option<i32>,
) -> Event {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": when},
        "eventTime": when.replace('Z', ".000000Z"),
        "reportingController": "pgwarden.io/operator",
        "reportingInstance": "pgwarden-operator-0",
        "action": reason,
        "reason": reason,
        "type": type_,
        "note": note,
        "regarding": {"apiVersion": "pgwarden.io/v1alpha1", "kind": "PostgresCluster", "name": "demo", "namespace": "default"},
    });
    if let Some(n) = series {
        v["series"] = json!({"count": n, "lastObservedTime": when.replace('Z', ".000000Z")});
        v["eventTime"] = json!("2025-01-01T09:00:00.000000Z");
    }
    serde_json::from_value(v).expect("fixture event")
}

#[test]
fn status_of_a_cluster() {
    let c = cluster(
        "demo",
        json!({"instances": 3}),
        json!({
            "observedGeneration": 4, "instances": 3, "readyInstances": 2,
            "currentPrimary": "demo-1", "timeline": 3, "phase": "Degraded",
            "lastFailover": {"from": "demo-0", "to": "demo-2", "timeline": 2, "time": "2025-01-01T06:00:00Z"},
            "lastSwitchover": {"from": "demo-2", "to": "demo-1", "timeline": 3, "time": "2025-01-01T11:57:30Z"},
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "InstancesNotReady", "message": "2 of 3 instances are ready", "lastTransitionTime": "2025-01-01T11:59:15Z", "observedGeneration": 4},
                {"type": "PrimaryAvailable", "status": "True", "reason": "PrimaryRunning", "message": "demo-1 holds the leader lease and runs as primary", "lastTransitionTime": "2025-01-01T11:57:31Z", "observedGeneration": 4},
                {"type": "SpecValid", "status": "True", "reason": "Valid", "message": "the spec can be satisfied", "lastTransitionTime": "2024-12-20T12:00:00Z", "observedGeneration": 4},
            ]
        }),
    );
    let events = vec![
        event(
            "demo.3",
            "2025-01-01T11:57:31Z",
            "Normal",
            "Switchover",
            "switched over from demo-2 to demo-1 as the annotation asked",
            None,
        ),
        event(
            "demo.1",
            "2025-01-01T06:00:02Z",
            "Warning",
            "Failover",
            "demo-0 stopped renewing the leader lease;\ndemo-2 took over",
            None,
        ),
        event(
            "demo.4",
            "2025-01-01T11:59:15Z",
            "Warning",
            "InstanceNotReady",
            "demo-0 is not ready",
            Some(4),
        ),
    ];
    let now = ts("2025-01-01T12:00:00Z");
    golden("status.txt", &render::status(&c, "default", &events, now));
    let bare = cluster("new", json!({"instances": 3}), Value::Null);
    golden(
        "status_new.txt",
        &render::status(&bare, "default", &[], now),
    );
}

#[test]
fn ages_read_like_kubectls() {
    let d = |s: i64| render::human_duration(jiff::SignedDuration::from_secs(s));
    assert_eq!(d(-5), "<invalid>");
    assert_eq!(d(0), "0s");
    assert_eq!(d(119), "119s");
    assert_eq!(d(150), "2m30s");
    assert_eq!(d(600), "10m");
    assert_eq!(d(3 * 3600 + 5 * 60), "3h5m");
    assert_eq!(d(30 * 3600), "30h");
    assert_eq!(d(3 * 86400 + 7200), "3d2h");
    assert_eq!(d(100 * 86400), "100d");
    assert_eq!(d(3 * 365 * 86400 + 10 * 86400), "3y10d");
}

/// The checks of switchover/failover, and what is asked and sent, for a person to read.
#[test]
fn switchover_and_failover_plans() {
    let t = topo(&healthy());
    let mut text = String::from("Current cluster topology\n");
    text.push_str(&render::list_table(&t));
    let show = |text: &mut String, what: &str, p: Result<model::Plan, CliError>| {
        text.push_str(&format!("\n## {what}\n"));
        match p {
            Ok(p) => {
                text.push_str(&format!("{} [y/N]: \n", p.question(&t.cluster)));
                text.push_str(&format!(
                    "POST /{} to {:?}\n",
                    p.action.as_str(),
                    p.targets(&t)
                ));
                text.push_str(&format!("{}\n", p.body()));
            }
            Err(e) => text.push_str(&format!("error: {e} (exit {})\n", e.exit as i32)),
        }
    };
    show(
        &mut text,
        "switchover demo",
        model::plan(&t, Action::Switchover, None, None, None),
    );
    show(
        &mut text,
        "switchover demo --candidate demo-2 --leader demo-0",
        model::plan(&t, Action::Switchover, Some("demo-0"), Some("demo-2"), None),
    );
    show(
        &mut text,
        "switchover demo --candidate demo-1 --scheduled 2030-01-01T03:00:00Z",
        model::plan(
            &t,
            Action::Switchover,
            None,
            Some("demo-1"),
            model::parse_scheduled(Some("2030-01-01T03:00:00Z"), &jiff::tz::TimeZone::UTC).unwrap(),
        ),
    );
    show(
        &mut text,
        "failover demo --candidate demo-2",
        model::plan(&t, Action::Failover, None, Some("demo-2"), None),
    );
    golden("plans.txt", &text);
}

/// Every error a person can meet, as printed (`error: ...` on stderr).
#[test]
fn error_messages() {
    let healthy = topo(&healthy());
    let eventful = topo(&eventful());
    let fresh = topo(&fresh());
    let one_member = {
        let mut s = self::healthy();
        s.pods
            .retain(|p| p.metadata.name.as_deref() == Some("demo-0"));
        topo(&s)
    };
    let utc = jiff::tz::TimeZone::UTC;
    let cases: Vec<(&str, CliError)> = vec![
        ("list x", CliError::cluster_not_found("x", "default")),
        ("list (no CRD)", CliError::crd_missing()),
        (
            "any command, apiserver down",
            CliError::unreachable(
                "https://127.0.0.1:6443",
                "Connection refused (os error 111)",
            ),
        ),
        (
            "switchover fresh",
            model::plan(&fresh, Action::Switchover, None, None, None).unwrap_err(),
        ),
        (
            "switchover demo --leader demo-1",
            model::plan(&healthy, Action::Switchover, Some("demo-1"), None, None).unwrap_err(),
        ),
        (
            "switchover demo --candidate demo-7",
            model::plan(&healthy, Action::Switchover, None, Some("demo-7"), None).unwrap_err(),
        ),
        (
            "switchover demo --candidate demo-0",
            model::plan(&healthy, Action::Switchover, None, Some("demo-0"), None).unwrap_err(),
        ),
        (
            "failover pg --candidate pg-3 (tagged nofailover)",
            model::plan(&eventful, Action::Failover, None, Some("pg-3"), None).unwrap_err(),
        ),
        (
            "switchover demo (one member)",
            model::plan(&one_member, Action::Switchover, None, None, None).unwrap_err(),
        ),
        (
            "failover demo (no candidate)",
            model::plan(&healthy, Action::Failover, None, None, None).unwrap_err(),
        ),
        (
            "switchover pg --scheduled ... (paused)",
            model::plan(
                &eventful,
                Action::Switchover,
                None,
                Some("pg-0"),
                Some("2030-01-01T03:00:00+00:00".into()),
            )
            .unwrap_err(),
        ),
        (
            "switchover demo --scheduled tomorrow",
            model::parse_scheduled(Some("tomorrow"), &utc).unwrap_err(),
        ),
        (
            "switchover demo (Secret demo-api missing)",
            CliError::token_secret_missing("demo-api", "default"),
        ),
        (
            "switchover demo (agent: sync standby)",
            CliError::agent_refused(
                "switchover",
                412,
                "candidate name does not match with sync_standby\n",
            ),
        ),
        (
            "failover demo (agent: no good candidates)",
            CliError::agent_refused(
                "failover",
                412,
                "failover is not possible: no good candidates have been found",
            ),
        ),
        (
            "switchover demo --scheduled (agent: in the past)",
            CliError::agent_refused("switchover", 422, "Cannot schedule switchover in the past"),
        ),
        (
            "switchover demo, answered n",
            CliError::aborted("switchover"),
        ),
        (
            "restart demo demo-9",
            CliError::not_a_member("demo-9", "demo"),
        ),
        (
            "history demo (corrupt key)",
            model::history_rows(
                &BTreeMap::from([("history".to_string(), "[[1,2".to_string())]),
                "demo",
            )
            .unwrap_err(),
        ),
    ];
    let mut text = String::new();
    for (what, e) in cases {
        text.push_str(&format!("# {what}\nerror: {e}\nexit {}\n\n", e.exit as i32));
    }
    // The apiserver's answer when the pod proxy cannot reach an agent.
    let proxied = proxy_failure(
        503,
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"error trying to reach service: dial tcp 10.244.0.16:8008: connect: connection refused","reason":"ServiceUnavailable","code":503}"#,
    )
    .unwrap();
    let e = super::k8s::agent_unreachable("demo-1", &http::Method::POST, "restart", &proxied);
    text.push_str(&format!(
        "# restart demo demo-1 (agent down)\n{}\n",
        super::commands::unanswered("restart", "demo-1", &e)
    ));
    golden("errors.txt", &text);
}

#[test]
fn agent_answers_are_not_mistaken_for_proxy_failures() {
    assert_eq!(proxy_failure(412, "candidate does not exists"), None);
    assert_eq!(
        proxy_failure(503, r#"{"state":"running","role":"replica"}"#),
        None
    );
    assert_eq!(
        proxy_failure(200, r#"{"kind":"Status","apiVersion":"v1","message":"x"}"#),
        None
    );
    assert!(
        proxy_failure(
            403,
            r#"{"kind":"Status","apiVersion":"v1","message":"pods \"demo-0\" is forbidden"}"#
        )
        .unwrap()
        .contains("forbidden")
    );
}

#[test]
fn scheduled_times_become_iso_8601_with_an_offset() {
    let utc = jiff::tz::TimeZone::UTC;
    let p = |s: Option<&str>| model::parse_scheduled(s, &utc).unwrap();
    assert_eq!(p(None), None);
    assert_eq!(p(Some("now")), None);
    assert_eq!(
        p(Some("2030-01-01T03:00")).as_deref(),
        Some("2030-01-01T03:00:00+00:00")
    );
    assert_eq!(
        p(Some("2030-01-01T03:00:00Z")).as_deref(),
        Some("2030-01-01T03:00:00+00:00")
    );
    // The same instant, written in the local time zone.
    assert_eq!(
        p(Some("2030-01-01T03:00:00-03:00")).as_deref(),
        Some("2030-01-01T06:00:00+00:00")
    );
    let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
    assert_eq!(
        model::parse_scheduled(Some("2030-07-01 03:00"), &berlin)
            .unwrap()
            .as_deref(),
        Some("2030-07-01T03:00:00+02:00")
    );
}

#[test]
fn the_command_line_parses_and_usage_errors_exit_2() {
    use clap::{CommandFactory, Parser};
    super::Cli::command().debug_assert();
    let parse = |args: &[&str]| super::Cli::try_parse_from(args);
    let c = parse(&[
        "kubectl-pgwarden",
        "-n",
        "prod",
        "list",
        "demo",
        "-o",
        "json",
        "-w",
    ])
    .unwrap();
    assert_eq!(c.global.namespace.as_deref(), Some("prod"));
    assert!(matches!(
        c.command,
        super::Command::List {
            output: super::Output::Json,
            watch: true,
            ..
        }
    ));
    // Global flags after the command, patronictl's --master alias.
    let c = parse(&[
        "kubectl-pgwarden",
        "switchover",
        "demo",
        "--master",
        "demo-0",
        "--candidate",
        "demo-1",
        "--force",
        "--context",
        "kind",
    ])
    .unwrap();
    assert_eq!(c.global.context.as_deref(), Some("kind"));
    assert!(matches!(
        c.command,
        super::Command::Switchover {
            leader: Some(_),
            force: true,
            ..
        }
    ));
    for bad in [
        &["kubectl-pgwarden", "failover", "demo"][..],
        &["kubectl-pgwarden", "list", "-o", "xml"],
        &["kubectl-pgwarden", "reinit", "demo"],
        &["kubectl-pgwarden", "frobnicate"],
        &["kubectl-pgwarden", "completion", "tcsh"],
    ] {
        let e = parse(bad).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
    }
    assert_eq!(
        parse(&["kubectl-pgwarden", "--help"])
            .unwrap_err()
            .exit_code(),
        0
    );
}

#[test]
fn completion_scripts_name_every_command() {
    for shell in [super::Shell::Bash, super::Shell::Zsh, super::Shell::Fish] {
        let script = super::completion(shell);
        for cmd in [
            "list",
            "switchover",
            "failover",
            "restart",
            "reinit",
            "reload",
            "pause",
            "resume",
            "history",
            "status",
        ] {
            assert!(script.contains(cmd), "{shell:?} completion lacks {cmd}");
        }
        assert!(script.contains("kubectl-pgwarden"));
    }
}

/// The CLI is a wing over the contract: it imports `crate::api` and never the agent or the
/// operator.
#[test]
fn the_cli_imports_only_the_contract() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/cli");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for root in ["crate", "pgwarden", "super::super"] {
            for wing in ["agent", "operator"] {
                // Built here so this file does not match itself.
                let forbidden = format!("{root}::{wing}");
                let hits = text.lines().filter(|l| l.contains(&forbidden)).count();
                assert_eq!(hits, 0, "{} uses {forbidden}", path.display());
            }
        }
    }
}

#[test]
fn backups_of_a_cluster_with_a_repository() {
    let c = cluster(
        "demo",
        json!({}),
        json!({
            "firstRecoverabilityPoint": "2026-12-01T00:01:10Z",
            "lastArchivedWAL": "00000002000000000000001C",
            "nextScheduledBackup": "2026-12-03T00:00:00Z",
            "lastBackup": {"name": "scheduled-20261202T000000Z", "phase": "completed",
                "member": "demo-0", "started": "2026-12-02T00:00:01Z",
                "finished": "2026-12-02T00:01:12Z", "label": "20261202-000001F"},
            "backups": [
                {"label": "20261202-000001F", "type": "full", "started": "2026-12-02T00:00:01Z",
                 "finished": "2026-12-02T00:01:12Z", "databaseBytes": 1073741824,
                 "repositoryBytes": 157286400, "walStart": "00000002000000000000001A",
                 "walStop": "00000002000000000000001A"},
                {"label": "20261201-000002F", "type": "full", "started": "2026-12-01T00:00:02Z",
                 "finished": "2026-12-01T00:01:10Z", "databaseBytes": 1048576000,
                 "repositoryBytes": 152043520}
            ]
        }),
    );
    golden(
        "backups.txt",
        &render::backups(&c.status.clone().unwrap_or_default()),
    );
    let failed = cluster(
        "demo",
        json!({}),
        json!({"lastBackup": {"name": "before-migration-0c1d2e3f", "phase": "failed",
            "member": "demo-1", "started": "2026-12-02T00:00:01Z",
            "error": "interrupted: demo-1 stopped being the primary"}}),
    );
    golden(
        "backups_none.txt",
        &render::backups(&failed.status.clone().unwrap_or_default()),
    );
}
