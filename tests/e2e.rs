//! End-to-end scenarios on the full single-node Kubernetes, with the chart installed by
//! `helm install` (run by e2e/e2e.sh: `make e2e`). Every test is `#[ignore]` so `cargo test`
//! alone does not need a cluster; the e2e tier runs them all with `--ignored`.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::cluster::*;
use support::k8s::kubectl;
use support::process::signal;
use support::wait::{log, wait_until};

const MIN: Duration = Duration::from_secs(60);

/// Write a row through `-rw`, read it back through `-ro` once replicated.
async fn write_and_read_back(pg: &Pg, table: &str) {
    let rw = pg.connect_service("rw").await.expect("connect through -rw");
    rw.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (v text); INSERT INTO {table} VALUES ('hello')"
    ))
    .await
    .expect("write through -rw");
    wait_until(MIN, "the row through -ro", || async {
        let Ok(ro) = pg.connect_service("ro").await else {
            return false;
        };
        let Ok(rows) = ro.query(&format!("SELECT v FROM {table}"), &[]).await else {
            return false;
        };
        let in_recovery: bool = ro
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(false);
        in_recovery && rows.len() == 1
    })
    .await;
}

/// 1. The demo from examples/demo.yaml: Ready 3/3, the printer columns, -rw = primary only,
/// -ro = the two replicas, psql through the ClusterIPs.
#[tokio::test]
#[ignore]
async fn demo_is_ready_and_the_services_route_by_role() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.yaml"))
            .unwrap();
    kubectl(&["apply", "-f", "-"], Some(&manifest)).expect("examples/demo.yaml applies");
    let pg = Pg::existing("default", "demo").await;
    let primary = pg.wait_healthy(3, 5 * MIN).await;
    let table = kubectl(&["get", "pgc", "demo", "-n", "default"], None).unwrap();
    log(format!("kubectl get pgc:\n{table}"));
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "INSTANCES", "READY", "PRIMARY", "PHASE", "AGE"]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..5], ["demo", "3", "3", primary.as_str(), "Healthy"]);
    // The EndpointSlice controller follows pod readiness a moment later than the status does
    // (seen: demo-r with 2 of 3 right after Healthy); a client sees the Services once it did.
    wait_until(
        MIN,
        "the Services' endpoints follow the ready pods",
        || async {
            pg.endpoints("demo-r").await.len() == 3 && pg.endpoints("demo-ro").await.len() == 2
        },
    )
    .await;
    assert_eq!(
        pg.endpoints("demo-rw").await,
        BTreeSet::from([primary.clone()])
    );
    let ro = pg.endpoints("demo-ro").await;
    assert_eq!(ro.len(), 2);
    assert!(!ro.contains(&primary));
    assert_eq!(pg.endpoints("demo-r").await.len(), 3);
    write_and_read_back(&pg, "demo_e2e").await;
    // The generated Secrets follow the contract.
    for s in ["demo-superuser", "demo-replication", "demo-app"] {
        assert!(!pg.secret(s, "password").await.is_empty());
        assert!(!pg.secret(s, "username").await.is_empty());
    }
    assert!(!pg.secret("demo-api", "token").await.is_empty());
    pg.delete().await;
}

/// 2. `kubectl delete pod` of the primary: a replica takes over, -rw follows, writes resume, the
/// deleted pod comes back as a replica.
#[tokio::test]
#[ignore]
async fn deleting_the_primary_pod_fails_over_and_it_returns_as_a_replica() {
    let pg = Pg::create("e2e-delete", "pg", &spec(3, "")).await;
    let old = pg.wait_healthy(3, 5 * MIN).await;
    let writer = Writer::start(&pg, "t").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    log(format!("deleting primary pod {old}"));
    pg.kubectl(&["delete", "pod", &old, "--wait=false"])
        .unwrap();
    wait_until(2 * MIN, "a new primary", || async {
        pg.primary().await.is_some_and(|p| p != old)
    })
    .await;
    let new = pg.primary().await.unwrap();
    pg.wait_event("Promoted", &format!("{new} was promoted to primary"))
        .await;
    let before = writer.count();
    wait_until(MIN, "writes through -rw on the new primary", || async {
        writer.count() > before + 20
    })
    .await;
    let primary = pg.wait_healthy(3, 5 * MIN).await;
    assert_eq!(
        primary, new,
        "the returning pod did not take the primary back"
    );
    assert!(
        pg.labelled("replica").await.contains(&old),
        "{old} is back as a replica"
    );
    let acked = writer.stop().await;
    let c = pg.connect_service("rw").await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    log(format!(
        "{} writes acknowledged, {n} rows on the new primary",
        acked.len()
    ));
    pg.delete().await;
}

/// 7. `pgwarden.io/switchover-to=<pod>`: consumed once, the primary moves, an Event says so.
#[tokio::test]
#[ignore]
async fn switchover_by_annotation() {
    let pg = Pg::create("e2e-annotation", "pg", &spec(3, "")).await;
    let old = pg.wait_healthy(3, 5 * MIN).await;
    let target = pg.labelled("replica").await.into_iter().next().unwrap();
    log(format!("annotating: switchover {old} -> {target}"));
    pg.kubectl(&[
        "annotate",
        "pgc",
        "pg",
        &format!("pgwarden.io/switchover-to={target}"),
    ])
    .unwrap();
    wait_until(2 * MIN, "the annotated replica to be primary", || async {
        pg.primary().await.as_deref() == Some(target.as_str())
    })
    .await;
    let c = pg.cluster().await;
    assert!(
        !c.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("pgwarden.io/switchover-to"),
        "the annotation is consumed"
    );
    pg.wait_healthy(3, 3 * MIN).await;
    wait_until(MIN, "status.lastSwitchover", || async {
        pg.cluster()
            .await
            .status
            .and_then(|s| s.last_switchover)
            .is_some_and(|s| s.to == target)
    })
    .await;
    let events = pg.kubectl(&["get", "events", "-o", "json"]).unwrap();
    assert!(
        events.contains(&format!("to {target} as the annotation asked")),
        "an Event records the switchover"
    );
    // The members' own account of it.
    pg.wait_event("Demoted", &format!("{old} stepped down as primary"))
        .await;
    pg.wait_event("Promoted", &format!("{target} was promoted to primary"))
        .await;
    pg.delete().await;
}

/// 8. Invalid specs are refused by `kubectl apply` with a message naming the field.
#[tokio::test]
#[ignore]
async fn invalid_specs_are_refused_with_the_field_named() {
    let pg = Pg::create("e2e-invalid", "pg", &spec(1, "")).await;
    let cases: &[(&str, &str)] = &[
        (
            "  instances: 0\n  image: x\n  storage: {size: 1Gi}",
            "spec.instances",
        ),
        (
            "  instances: 17\n  image: x\n  storage: {size: 1Gi}",
            "spec.instances",
        ),
        ("  image: ''\n  storage: {size: 1Gi}", "spec.image"),
        ("  image: x\n  storage: {size: lots}", "spec.storage.size"),
        (
            "  image: x\n  storage: {size: 1Gi}\n  ha: {ttl: 8, loopWait: 4, retryTimeout: 3}",
            "loopWait + 2*retryTimeout",
        ),
        (
            "  image: x\n  storage: {size: 1Gi}\n  ha: {ttl: 3}",
            "spec.ha.ttl",
        ),
        (
            "  image: x\n  storage: {size: 1Gi}\n  ha: {synchronousMode: sometimes}",
            "spec.ha.synchronousMode",
        ),
        (
            "  image: x\n  storage: {size: 1Gi}\n  ha: {synchronousMode: 'on', synchronousNodeCount: 3}\n  instances: 3",
            "spec.ha.synchronousNodeCount",
        ),
        (
            "  image: x\n  storage: {size: 1Gi}\n  ha: {watchdog: {mode: always}}",
            "spec.ha.watchdog.mode",
        ),
        (
            "  image: x\n  storage: {size: 1Gi}\n  ha: {watchdog: {device: /tmp/wd}}",
            "spec.ha.watchdog.device",
        ),
        (
            "  image: x\n  storage: {size: 1Gi}\n  ha: {ttl: 8, watchdog: {safetyMargin: 7}}",
            "spec.ha.watchdog.safetyMargin",
        ),
        (
            "  image: x\n  storage: {size: 1Gi}\n  postgresql: {parameters: {port: '5433'}}",
            "spec.postgresql.parameters",
        ),
        (
            "  image: x\n  storage: {size: 1Gi}\n  postgresql: {parameters: {data_directory: /x}}",
            "spec.postgresql.parameters",
        ),
        (
            "  image: x\n  storage: {size: 1Gi}\n  backup: {schedule: '0 0 * * mon', repository: {s3: {endpoint: s3.example.com, bucket: b, credentialsSecret: c}}}",
            "spec.backup.schedule",
        ),
        (
            "  image: x\n  storage: {size: 1Gi}\n  backup: {repository: {s3: {endpoint: s3.example.com, bucket: b, credentialsSecret: c}}}\n  postgresql: {parameters: {archive_command: 'cp %p /x'}}",
            "archive_command and archive_mode are managed by pgwarden while spec.backup is set",
        ),
        (
            "  image: x\n  storage: {size: 1Gi}\n  backup: {repository: {s3: {endpoint: 'https://s3.example.com', bucket: b, credentialsSecret: c}}}",
            "spec.backup.repository.s3.endpoint",
        ),
        (
            "  image: x\n  storage: {size: 1Gi}\n  bootstrap: {recovery: {source: {cluster: old}}}",
            "spec.bootstrap.recovery needs spec.backup",
        ),
        (
            "  image: x\n  storage: {size: 1Gi}\n  backup: {repository: {s3: {endpoint: s3.example.com, bucket: bkt, credentialsSecret: c}}}\n  bootstrap: {recovery: {source: {cluster: old}, target: {lsn: '0/1', name: before}}}",
            "spec.bootstrap.recovery.target: set at most one of time, lsn, name",
        ),
        (
            "  image: x\n  storage: {size: 1Gi}\n  backup: {repository: {s3: {endpoint: s3.example.com, bucket: bkt, credentialsSecret: c}}}\n  bootstrap: {recovery: {source: {cluster: old}, target: {time: 'yesterday'}}}",
            "spec.bootstrap.recovery.target.time",
        ),
        (
            "  image: x\n  storage: {size: 1Gi}\n  startDelay: 10",
            "spec.startDelay",
        ),
        (
            "  image: x\n  storage: {size: 1Gi}\n  bootstrap: {database: Bad-Name}",
            "spec.bootstrap.database",
        ),
        (
            "  image: x\n  storage: {size: 1Gi}\n  bootstrap: {roles: [{name: 'x y'}]}",
            "spec.bootstrap.roles[0].name",
        ),
        (
            "  image: x\n  storage: {size: 1Gi}\n  services: {rw: {type: External}}",
            "spec.services.rw.type",
        ),
    ];
    let probe = Pg::existing("e2e-invalid", "bad").await;
    for (body, field) in cases {
        let err = probe.apply(body).expect_err(&format!("refused: {body}"));
        assert!(
            err.contains(field),
            "the error for\n{body}\nnames {field}: {err}"
        );
        log(format!("refused, naming {field}"));
    }
    // A PostgresBackup of a type pgBackRest does not have.
    let err = kubectl(
        &["apply", "-f", "-"],
        Some(
            "apiVersion: pgwarden.io/v1alpha1\nkind: PostgresBackup\nmetadata: {name: weekly, namespace: e2e-invalid}\nspec: {cluster: pg, type: weekly}\n",
        ),
    )
    .expect_err("a PostgresBackup of type weekly is refused");
    assert!(err.contains("spec.type"), "names spec.type: {err}");
    log("refused, naming spec.type of a PostgresBackup");
    // Immutable fields: a change to an existing cluster is refused.
    let immutable: &[(&str, &str)] = &[
        (
            "  instances: 1\n  image: pgwarden.local/postgres:15\n  storage: {size: 200Mi}",
            "spec.storage.size is immutable",
        ),
        (
            "  instances: 1\n  image: pgwarden.local/postgres:15\n  storage: {size: 100Mi}\n  bootstrap: {database: other}",
            "spec.bootstrap is immutable",
        ),
        (
            "  instances: 1\n  image: pgwarden.local/postgres:15\n  storage: {size: 100Mi}\n  postgresUID: 26",
            "spec.postgresUID is immutable",
        ),
    ];
    for (body, message) in immutable {
        let err = pg.apply(body).expect_err(&format!("refused: {body}"));
        assert!(
            err.contains(message),
            "the error for\n{body}\nsays {message}: {err}"
        );
        log(format!("refused: {message}"));
    }
    pg.delete().await;
}

/// 10. Deleting the cluster removes every child; PVCs stay or go per `retainOnDelete`.
#[tokio::test]
#[ignore]
async fn deleting_the_cluster_removes_its_children_and_keeps_volumes_on_request() {
    for retain in [false, true] {
        let ns = if retain { "e2e-retain" } else { "e2e-remove" };
        let pg = Pg::create(
            ns,
            "pg",
            &spec(
                2,
                &format!("  storage: {{size: 100Mi, retainOnDelete: {retain}}}\n"),
            ),
        )
        .await;
        pg.wait_healthy(2, 5 * MIN).await;
        pg.kubectl(&["delete", "pgc", "pg", "--wait=true", "--timeout=120s"])
            .unwrap();
        let kinds = "statefulsets,services,secrets,configmaps,leases.coordination.k8s.io,serviceaccounts,roles,rolebindings,poddisruptionbudgets,pods";
        wait_until(
            2 * MIN,
            &format!("every child of the cluster to be gone ({ns})"),
            || async {
                let left = pg
                    .kubectl(&["get", kinds, "-l", "pgwarden.io/cluster=pg", "-o", "name"])
                    .unwrap_or_default();
                if !left.trim().is_empty() {
                    log(format!(
                        "still there: {}",
                        left.split_whitespace().collect::<Vec<_>>().join(" ")
                    ));
                }
                left.trim().is_empty()
            },
        )
        .await;
        let pvcs = || {
            pg.kubectl(&["get", "pvc", "-o", "name"])
                .unwrap_or_default()
        };
        if retain {
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert_eq!(
                pvcs().lines().count(),
                2,
                "retainOnDelete keeps both volumes"
            );
        } else {
            wait_until(MIN, "the volumes to be deleted", || async {
                pvcs().trim().is_empty()
            })
            .await;
        }
        pg.delete().await;
    }
}

/// Every acknowledged id is on the (new) primary.
async fn assert_no_acknowledged_commit_lost(pg: &Pg, table: &str, acked: &[i64]) {
    let c = pg.connect_service("rw").await.expect("connect through -rw");
    let rows = c
        .query(&format!("SELECT id FROM {table}"), &[])
        .await
        .unwrap();
    let present: BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    let lost: Vec<i64> = acked
        .iter()
        .filter(|id| !present.contains(id))
        .copied()
        .collect();
    log(format!(
        "{} acknowledged commits, {} rows present, {} lost",
        acked.len(),
        present.len(),
        lost.len()
    ));
    assert!(lost.is_empty(), "acknowledged commits lost: {lost:?}");
}

/// With a writer committing into `table` through `-rw`, kill -9 every process of the primary
/// `old` for 15 s (a replica takes over) and keep writing on the new primary; the ids of every
/// acknowledged commit.
async fn kill_primary_under_writes(pg: &Pg, old: &str, table: &str) -> Vec<i64> {
    let writer = Writer::start(pg, table).await;
    wait_until(MIN, "the writer to commit", || async {
        writer.count() > 100
    })
    .await;
    log(format!("kill -9 of every process of {old}, for 15 s"));
    let killed = kill_pod_processes_for(pg, old, Duration::from_secs(15)).await;
    assert!(killed > 0, "found the pod's processes on the host");
    wait_until(2 * MIN, "a new primary", || async {
        pg.primary().await.is_some_and(|p| p != old)
    })
    .await;
    let before = writer.count();
    wait_until(MIN, "writes on the new primary", || async {
        writer.count() > before + 50
    })
    .await;
    writer.stop().await
}

/// 3. kill -9 of the primary's processes inside its pod (kept dying past ttl): a replica takes
/// over; in synchronous mode no acknowledged commit is lost; the old pod rejoins as a replica.
#[tokio::test]
#[ignore]
async fn killing_the_primary_hard_loses_no_acknowledged_commit_in_synchronous_mode() {
    let pg = Pg::create(
        "e2e-kill",
        "pg",
        &spec(3, "  ha: {synchronousMode: 'on'}\n"),
    )
    .await;
    let old = pg.wait_healthy(3, 5 * MIN).await;
    let standby = pg.wait_synchronous_standby(MIN).await;
    log(format!("{standby} is the synchronous standby of {old}"));
    let acked = kill_primary_under_writes(&pg, &old, "acks").await;
    assert_no_acknowledged_commit_lost(&pg, "acks", &acked).await;
    pg.wait_healthy(3, 5 * MIN).await;
    assert!(
        pg.labelled("replica").await.contains(&old),
        "{old} rejoined as a replica"
    );
    pg.delete().await;
}

/// 4. SIGSTOP of the primary's agent from the host: the softdog in the pod kills postgres before
/// the Lease expires, a replica takes over, and no sampling round ever sees two writable pods.
#[tokio::test]
#[ignore]
async fn a_frozen_primary_agent_is_fenced_by_the_softdog_before_a_replica_takes_over() {
    let pg = Pg::create("e2e-freeze", "pg", &spec(3, "")).await;
    let old = pg.wait_healthy(3, 5 * MIN).await;
    let sampler = WritableSampler::start(&pg).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let agent = pg.agent_pid(&old).expect("the agent's host pid");
    log(format!("SIGSTOP agent of {old} (host pid {agent})"));
    signal(agent, libc::SIGSTOP);
    wait_until(2 * MIN, "a new primary", || async {
        pg.primary().await.is_some_and(|p| p != old)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    log(format!("SIGCONT agent of {old}"));
    signal(agent, libc::SIGCONT);
    let (rounds, violations, changes) = sampler.stop().await;
    log(format!(
        "{rounds} sampling rounds; writable pod over time: {changes:?}"
    ));
    assert!(rounds > 50, "the sampler ran");
    assert!(
        violations.is_empty(),
        "two pods accepted writes at once: {violations:?}"
    );
    // The old primary went read-only (or away) strictly before the new one became writable.
    let new = pg.primary().await.unwrap();
    pg.wait_event("Promoted", &format!("{new} was promoted to primary"))
        .await;
    // Once thawed, the old primary's agent reports the fence (the softdog cannot: it has no
    // apiserver client).
    pg.wait_event("Fenced", &format!("{old} ")).await;
    let old_last = changes
        .iter()
        .rposition(|(_, p)| p.as_deref() == Some(old.as_str()));
    let new_first = changes
        .iter()
        .position(|(_, p)| p.as_deref() == Some(new.as_str()));
    let (Some(o), Some(n)) = (old_last, new_first) else {
        panic!("sampled both primaries: {changes:?}")
    };
    assert!(
        o < n,
        "the old primary stopped accepting writes before the promotion: {changes:?}"
    );
    let gap = changes[o + 1].0.saturating_sub(Duration::ZERO);
    log(format!(
        "old primary fenced at {gap:?}, new primary writable at {:?}",
        changes[n].0
    ));
    pg.wait_healthy(3, 5 * MIN).await;
    assert!(
        pg.labelled("replica").await.contains(&old),
        "{old} rejoined as a replica"
    );
    pg.delete().await;
}

/// 5. Scale 3 → 5 → 2: status and Services follow; scaling down switches over first when the
/// primary would be removed.
#[tokio::test]
#[ignore]
async fn scaling_up_and_down_keeps_the_primary() {
    let pg = Pg::create("e2e-scale", "pg", &spec(3, "")).await;
    pg.wait_healthy(3, 5 * MIN).await;
    write_and_read_back(&pg, "scale_t").await;
    pg.kubectl(&["scale", "pgc", "pg", "--replicas=5"])
        .expect("the scale subresource");
    pg.wait_healthy(5, 5 * MIN).await;
    // Put the primary on an ordinal that scaling to 2 removes.
    pg.kubectl(&["annotate", "pgc", "pg", "pgwarden.io/switchover-to=pg-4"])
        .unwrap();
    wait_until(2 * MIN, "pg-4 to be primary", || async {
        pg.primary().await.as_deref() == Some("pg-4")
    })
    .await;
    pg.wait_healthy(5, 3 * MIN).await;
    pg.kubectl(&["scale", "pgc", "pg", "--replicas=2"]).unwrap();
    let primary = pg.wait_healthy(2, 5 * MIN).await;
    assert!(
        ["pg-0", "pg-1"].contains(&primary.as_str()),
        "the primary moved to a surviving instance: {primary}"
    );
    let pods: Vec<String> = pg
        .pods()
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(pods, ["pg-0", "pg-1"]);
    let c = pg.connect_service("rw").await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM scale_t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "data survived the scaling");
    // The slots of the removed replicas go too (after a grace period), or they would hold WAL
    // forever; the surviving replica keeps its own.
    let other = if primary == "pg-0" { "pg_1" } else { "pg_0" };
    wait_until(
        2 * MIN,
        "only the surviving replica's slot on the primary",
        || async {
            let Ok(c) = pg.connect_pod(&primary).await else {
                return false;
            };
            let Ok(rows) = c
                .query(
                    "SELECT slot_name::text FROM pg_replication_slots ORDER BY 1",
                    &[],
                )
                .await
            else {
                return false;
            };
            let slots: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            slots == [other]
        },
    )
    .await;
    let events = pg.kubectl(&["get", "events", "-o", "json"]).unwrap();
    assert!(
        events.contains("removes the primary"),
        "the switchover before scaling down is an Event"
    );
    pg.delete().await;
}

/// 9. With the operator scaled to 0, a primary failure still fails over and -rw follows (the
/// agents label themselves; readiness drops the dead pod).
#[tokio::test]
#[ignore]
async fn failover_and_routing_work_while_the_operator_is_down() {
    let pg = Pg::create("e2e-nooperator", "pg", &spec(3, "")).await;
    let old = pg.wait_healthy(3, 5 * MIN).await;
    let scale = |n: &str| {
        kubectl(
            &[
                "-n",
                "pgwarden-system",
                "scale",
                "deployment/pgwarden-operator",
                &format!("--replicas={n}"),
            ],
            None,
        )
    };
    scale("0").expect("scale the operator down");
    wait_until(MIN, "the operator pods to be gone", || async {
        kubectl(
            &[
                "-n",
                "pgwarden-system",
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/component=operator",
                "-o",
                "name",
            ],
            None,
        )
        .is_ok_and(|o| o.trim().is_empty())
    })
    .await;
    let writer = Writer::start(&pg, "t").await;
    log(format!(
        "kill -9 of every process of {old}, for 15 s, operator down"
    ));
    kill_pod_processes_for(&pg, &old, Duration::from_secs(15)).await;
    wait_until(2 * MIN, "-rw to route to a new primary", || async {
        let rw = pg.endpoints("pg-rw").await;
        rw.len() == 1 && !rw.contains(&old)
    })
    .await;
    let before = writer.count();
    wait_until(MIN, "writes through -rw", || async {
        writer.count() > before + 50
    })
    .await;
    writer.stop().await;
    scale("2").expect("scale the operator up again");
    pg.wait_healthy(3, 5 * MIN).await;
    pg.delete().await;
}

/// 6. A reloadable parameter applies without restarts; a restart-only parameter and an image
/// change roll replicas first, then a switchover, then the old primary, never more than one
/// instance down; pending_restart clears.
#[tokio::test]
#[ignore]
async fn parameters_and_image_changes_roll_one_instance_at_a_time() {
    let pg = Pg::create("e2e-roll", "pg", &spec(3, "")).await;
    let first = pg.wait_healthy(3, 5 * MIN).await;
    let start_times = || async {
        let mut out = vec![];
        for p in ["pg-0", "pg-1", "pg-2"] {
            let c = pg.connect_pod(p).await.expect("connect to pod");
            let t: String = c
                .query_one("SELECT pg_postmaster_start_time()::text", &[])
                .await
                .unwrap()
                .get(0);
            out.push(t);
        }
        out
    };
    let setting = |pod: &'static str, name: &'static str| {
        let pg = &pg;
        async move {
            let c = pg.connect_pod(pod).await.ok()?;
            c.query_one(&format!("SHOW {name}"), &[])
                .await
                .ok()
                .map(|r| r.get::<_, String>(0))
        }
    };
    // Reloadable.
    let before = start_times().await;
    pg.apply(&spec(
        3,
        "  postgresql: {parameters: {log_min_duration_statement: '250'}}\n",
    ))
    .unwrap();
    wait_until(
        MIN,
        "log_min_duration_statement = 250ms everywhere",
        || async {
            for p in ["pg-0", "pg-1", "pg-2"] {
                if setting(p, "log_min_duration_statement").await.as_deref() != Some("250ms") {
                    return false;
                }
            }
            true
        },
    )
    .await;
    assert_eq!(
        start_times().await,
        before,
        "a reloadable parameter restarted nothing"
    );

    // Restart-only, with a watcher that never sees two instances down.
    let writer = Writer::start(&pg, "roll_t").await;
    let watch = {
        let (client, ns) = (pg.client.clone(), pg.ns.clone());
        tokio::spawn(async move {
            let pg = Pg::existing_with(client, &ns, "pg");
            let mut min_ready = 3;
            for _ in 0..2400 {
                let pods = pg.pods().await;
                let unready: Vec<String> = pods
                    .iter()
                    .filter(|p| {
                        !p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .filter_map(|p| p.metadata.name.clone())
                    .collect();
                let ready = 3usize.saturating_sub(unready.len()).min(pods.len());
                if ready < 3 {
                    log(format!("not ready: {unready:?} ({} pods)", pods.len()));
                }
                min_ready = min_ready.min(ready);
                tokio::time::sleep(Duration::from_millis(250)).await;
                if std::path::Path::new(&format!("/tmp/pgwarden-e2e-stop-{ns}")).exists() {
                    break;
                }
            }
            min_ready
        })
    };
    pg.apply(&spec(
        3,
        "  postgresql: {parameters: {log_min_duration_statement: '250', max_connections: '150'}}\n",
    ))
    .unwrap();
    wait_until(
        5 * MIN,
        "max_connections = 150 everywhere and no restart pending",
        || async {
            for p in ["pg-0", "pg-1", "pg-2"] {
                if setting(p, "max_connections").await.as_deref() != Some("150") {
                    return false;
                }
            }
            pg.cluster()
                .await
                .status
                .is_some_and(|s| s.instances_status.iter().all(|i| !i.pending_restart))
        },
    )
    .await;
    let after_params = pg.wait_healthy(3, 3 * MIN).await;
    assert_ne!(
        after_params, first,
        "the primary was switched over, not restarted in place"
    );

    // Image change: pods are recreated, the primary last.
    pg.apply(&spec(3, "  postgresql: {parameters: {log_min_duration_statement: '250', max_connections: '150'}}\n").replace(IMAGE, &format!("{IMAGE}-b"))).unwrap();
    wait_until(8 * MIN, "every pod on the new image", || async {
        let pods = pg.pods().await;
        pods.len() == 3
            && pods.iter().all(|p| {
                p.spec.as_ref().is_some_and(|s| {
                    s.containers[0].image.as_deref() == Some("pgwarden.local/postgres:15-b")
                })
            })
    })
    .await;
    let last = pg.wait_healthy(3, 5 * MIN).await;
    assert_ne!(
        last, after_params,
        "the image change switched over before recreating the primary"
    );
    std::fs::write(format!("/tmp/pgwarden-e2e-stop-{}", pg.ns), "").unwrap();
    let min_ready = watch.await.unwrap();
    let _ = std::fs::remove_file(format!("/tmp/pgwarden-e2e-stop-{}", pg.ns));
    assert!(
        min_ready >= 2,
        "never more than one instance down (min ready {min_ready})"
    );
    let acked = writer.stop().await;
    assert_no_acknowledged_commit_lost(&pg, "roll_t", &acked).await;
    let events = pg.kubectl(&["get", "events", "-o", "json"]).unwrap();
    assert!(
        events.contains("RollingRestart")
            && events.contains("RollingUpdate")
            && events.contains("Switchover")
    );
    pg.delete().await;
}

/// Wait (two minutes at most) for a write through `-rw` acknowledged after `t`.
async fn writes_after(writer: &Writer, t: Instant, what: &str) {
    wait_until(2 * MIN, what, || async {
        writer
            .acked_at
            .lock()
            .unwrap()
            .last()
            .is_some_and(|at| *at > t)
    })
    .await;
}

/// The members' applied-configuration fingerprints all equal the cluster's dynamic configuration
/// (the `config` key of the state ConfigMap): every agent has read and applied it.
async fn every_member_applied_the_config(pg: &Pg) -> bool {
    let Some(config) = pg.state_key("config").await else {
        return false;
    };
    let Ok(config) = pgwarden::api::state::DynamicConfig::parse(&config) else {
        return false;
    };
    let want = config.fingerprint();
    for pod in pg.pods().await {
        let name = pod.metadata.name.unwrap_or_default();
        let applied = pg.member_status(&name).await;
        if applied.as_ref().and_then(|s| s["config"].as_str()) != Some(want.as_str()) {
            return false;
        }
    }
    true
}

/// 9. The control plane is a fault domain. With failsafe on (the default), the kube-apiserver
/// killed for 20 s costs no write through `-rw`. With failsafe off (changed without a restart)
/// and an outage longer than ttl, the primary stops in time and `-rw` never answers read-only:
/// writes get connection errors, then go through again once a primary is elected.
#[tokio::test]
#[ignore]
async fn apiserver_outages_cost_no_write_with_failsafe_and_no_read_only_answer_without() {
    let pg = Pg::create("e2e-apiserver", "pg", &spec(3, "")).await;
    let old = pg.wait_healthy(3, 5 * MIN).await;
    assert!(
        pg.cluster().await.spec.ha.failsafe_mode,
        "failsafe is on by default"
    );
    wait_until(MIN, "every member to apply the configuration", || async {
        every_member_applied_the_config(&pg).await
    })
    .await;
    let writer = Writer::start(&pg, "w").await;
    let t0 = Instant::now();
    log("the writer on -rw started");
    let sampler = WritableSampler::start(&pg).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let down = support::testbed::ApiserverDown::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    down.start();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let errors = writer.errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} writes through -rw failed during a 20 s outage with failsafe on; first: {:?}",
        errors.len(),
        errors.first()
    );
    assert_eq!(pg.primary().await.as_deref(), Some(old.as_str()));

    // Failsafe on, one replica's REST port cut (iptables in its pod's network namespace), an
    // outage longer than ttl: the primary cannot be confirmed by everyone and stops; when the
    // apiserver returns exactly one member becomes primary and -rw reaches it.
    let cut_pod = pg
        .pods()
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .find(|n| *n != old)
        .expect("a replica");
    let netns = format!(
        "--net=/proc/{}/ns/net",
        pg.agent_pid(&cut_pod)
            .expect("the replica's agent on the host")
    );
    let rule = ["INPUT", "-p", "tcp", "--dport", "8008", "-j", "DROP"];
    let iptables = |op: &str| {
        std::process::Command::new("nsenter")
            .arg(&netns)
            .arg("iptables")
            .arg(op)
            .args(rule)
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(iptables("-I"), "cut {cut_pod}'s REST port");
    log(format!("{cut_pod}'s REST port cut"));
    let down = support::testbed::ApiserverDown::now();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let back = down.start();
    assert!(iptables("-D"), "heal {cut_pod}'s REST port");
    writes_after(
        &writer,
        back,
        "writes through -rw after the unconfirmed outage",
    )
    .await;
    let stopped_at = writer
        .acked_at
        .lock()
        .unwrap()
        .iter()
        .rfind(|t| **t < back)
        .map(|t| t.saturating_duration_since(killed));
    log(format!(
        "unconfirmed primary: last write {stopped_at:?} into the outage; now primary: {:?}",
        pg.primary().await
    ));
    assert!(
        stopped_at.is_some_and(|d| d < Duration::from_secs(6)),
        "the unconfirmed primary acknowledged a write {stopped_at:?} into the outage"
    );
    pg.wait_healthy(3, 5 * MIN).await;

    // Failsafe off, without a restart: the agents take it from the dynamic configuration.
    kubectl(
        &[
            "-n",
            &pg.ns,
            "patch",
            "pgc",
            "pg",
            "--type=merge",
            "-p",
            r#"{"spec":{"ha":{"failsafeMode":false}}}"#,
        ],
        None,
    )
    .expect("turn failsafe off");
    wait_until(MIN, "every member to apply failsafe off", || async {
        pg.state_key("config")
            .await
            .is_some_and(|c| c.contains(r#""failsafe_mode":false"#))
            && every_member_applied_the_config(&pg).await
    })
    .await;
    let before = writer.count();
    let demoted = pg.primary().await.expect("a primary before the outage");
    let down = support::testbed::ApiserverDown::now();
    let killed = Instant::now();
    // The primary stops by its fence (ttl - safetyMargin); then its agent is frozen until
    // another member has taken over, so the demoted member, still labelled primary, always
    // comes back to a new primary: the path where -rw could answer read-only.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let frozen = pg
        .agent_pid(&demoted)
        .expect("the primary's agent on the host");
    signal(frozen, libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let back = down.start();
    wait_until(2 * MIN, "another member to take the Lease", || async {
        pg.lease_holder().await.is_some_and(|h| h != demoted)
    })
    .await;
    signal(frozen, libc::SIGCONT);
    log(format!(
        "{demoted}'s agent thawed after another member took over"
    ));
    writes_after(&writer, back, "writes through -rw again").await;
    let resumed = *writer
        .acked_at
        .lock()
        .unwrap()
        .iter()
        .find(|t| **t > back)
        .unwrap();
    let last_before = writer
        .acked_at
        .lock()
        .unwrap()
        .iter()
        .rfind(|t| **t < back)
        .copied();
    log(format!(
        "failsafe off: last write {:?} into the outage, writes again {:?} after the apiserver was ready",
        last_before.map(|t| t.saturating_duration_since(killed)),
        resumed - back
    ));
    if let Some(t) = last_before {
        assert!(
            t.saturating_duration_since(killed) < Duration::from_secs(6),
            "a write was acknowledged {:?} into the outage, past the fence deadline",
            t.saturating_duration_since(killed)
        );
    }
    let errors = writer.errors.lock().unwrap().clone();
    let acked = writer.stop().await;
    let (rounds, violations, changes) = sampler.stop().await;
    log(format!(
        "{rounds} sampling rounds; writable pod over time: {changes:?}"
    ));
    assert!(acked.len() > before, "writes went through after the outage");
    assert!(
        violations.is_empty(),
        "two pods accepted writes at once: {violations:?}"
    );
    let read_only: Vec<_> = errors
        .iter()
        .filter(|(_, m)| support::postgres::is_read_only(m))
        .collect();
    log(format!(
        "{} failed writes through -rw, {} of them read-only answers; first: {:?}",
        errors.len(),
        read_only.len(),
        errors.first().map(|(t, m)| (*t - t0, m))
    ));
    let when: Vec<Duration> = read_only.iter().map(|(t, _)| *t - t0).collect();
    assert!(
        read_only.is_empty(),
        "-rw answered read-only {} times, at {:?} after the writer started",
        read_only.len(),
        when
    );
    pg.wait_healthy(3, 5 * MIN).await;
    pg.delete().await;
}

/// Synchronous mode for the backup scenario: the failover in it loses no acknowledged commit.
const SYNC: &str = "  ha: {synchronousMode: 'on'}\n";

/// Issue 13, test 1: a cluster with a repository creates its stanza, archives its WAL (a forced
/// segment switch reaches the repository, as pg_stat_archiver and `pgbackrest info` on the
/// primary both say) and reports `ContinuousArchiving` True; its schedule's full backup
/// completes and shows in the status, the plugin's `backups` and an Event; an on-demand
/// incremental backup (`kubectl pgwarden backup --wait`, a PostgresBackup) completes too.
/// Test 3: the primary is killed while a writer commits and WAL is archived. Test 2: then rows
/// written, time T noted, more rows, the table dropped; a new cluster restored to T (replaying
/// across the failover's timeline switch) holds exactly the rows committed before T and every
/// commit acknowledged across the failover, its replica streams past the old target, it
/// archives to its own path and the source's repository gets nothing of it.
#[tokio::test]
#[ignore]
async fn backups_and_point_in_time_recovery() {
    let ns = "e2e-archive";
    let pg = Pg::create(ns, "pg", &spec(2, SYNC)).await;
    // The Secrets go in once the namespace exists; then the cluster gets its repository.
    // Backups start with a checkpoint of their own (--start-fast), not at the next one.
    let backup = with_immediate_checkpoint(&backup_spec(ns, "* * * * *"));
    pg.apply(&spec(2, &format!("{SYNC}{backup}")))
        .expect("spec.backup is accepted");
    pg.wait_healthy(2, 5 * MIN).await;
    // archive_mode needs a restart: the repository rolls through the instances (replicas, a
    // switchover, the old primary).
    wait_until(
        5 * MIN,
        "the roll done and ContinuousArchiving True",
        || async {
            let status = pg.status().await;
            let rolled = status["phase"] == "Healthy"
                && status["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Progressing" && c["status"] == "False")
                })
                && status["instancesStatus"].as_array().is_some_and(|i| {
                    i.iter()
                        .all(|i| i["pendingRestart"] != true && i["updated"] == true)
                });
            rolled && archiving_condition(&pg).await == Some(("True".into(), "Archiving".into()))
        },
    )
    .await;
    let primary = pg.primary().await.expect("a primary");
    let c = pg.connect_service("rw").await.expect("connect through -rw");
    c.batch_execute("CREATE TABLE archived (v int); INSERT INTO archived VALUES (1)")
        .await
        .expect("a write");
    // pg_switch_wal() needs the superuser, who may connect only over the pod's socket.
    let segment = pg
        .superuser_sql(&primary, "SELECT pg_walfile_name(pg_switch_wal())")
        .expect("a segment switch");
    log(format!("switched out of segment {segment}"));
    wait_until(2 * MIN, "the segment archived", || async {
        pg.archived_past(&primary, &segment)
    })
    .await;
    let info = pg.pgbackrest_info(&primary);
    let max = info[0]["archive"][0]["max"].as_str().unwrap_or_default();
    log(format!("pgbackrest info: archive max {max}"));
    assert!(
        max >= segment.as_str(),
        "the repository's newest archived segment {max} is not past {segment}"
    );
    // Test 1, second part: the schedule (every minute here) asks the primary for a full backup;
    // it completes, and the status, the plugin and the repository agree on it.
    wait_until(6 * MIN, "a scheduled backup completed", || async {
        let st = pg.status().await;
        st["lastBackup"]["phase"] == "completed"
            && st["lastSuccessfulBackup"]["label"].as_str().is_some()
            && st["backups"].as_array().is_some_and(|b| !b.is_empty())
    })
    .await;
    let st = pg.status().await;
    let label = st["lastSuccessfulBackup"]["label"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    log(format!(
        "last backup {}; first recoverability point {}",
        st["lastBackup"], st["firstRecoverabilityPoint"]
    ));
    assert!(label.ends_with('F'), "a full backup's label: {label}");
    assert!(
        st["lastBackup"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("scheduled-")),
        "{}",
        st["lastBackup"]
    );
    assert!(st["firstRecoverabilityPoint"].as_str().is_some());
    let info = pg.pgbackrest_info(&primary);
    let labels: Vec<&str> = info[0]["backup"]
        .as_array()
        .map(|b| b.iter().filter_map(|b| b["label"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        labels.contains(&label.as_str()),
        "the repository holds {labels:?}, not {label}"
    );
    let plugin = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-pgwarden"))
        .args(["-n", ns, "backups", "pg"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run kubectl-pgwarden");
    let table = String::from_utf8_lossy(&plugin.stdout);
    log(format!("kubectl pgwarden backups pg:\n{table}"));
    assert!(
        plugin.status.success(),
        "{}",
        String::from_utf8_lossy(&plugin.stderr)
    );
    assert!(table.contains(&label), "the plugin lists {label}");
    let events = pg.kubectl(&["get", "events", "-o", "json"]).unwrap();
    assert!(
        events.contains("BackupCompleted") && events.contains(&label),
        "a BackupCompleted Event names {label}"
    );
    // On demand: `kubectl pgwarden backup --wait` creates a PostgresBackup, the operator queues
    // it (ahead of the next scheduled one) and the command returns when it completed.
    let run = tokio::time::timeout(
        8 * MIN,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-pgwarden"))
            .args([
                "-n",
                ns,
                "backup",
                "pg",
                "--type",
                "incr",
                "--name",
                "before-migration",
                "--wait",
            ])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("kubectl pgwarden backup --wait returns within 8 minutes")
    .expect("run kubectl-pgwarden");
    let said = String::from_utf8_lossy(&run.stdout);
    log(format!("kubectl pgwarden backup --wait:\n{said}"));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let object: serde_json::Value = serde_json::from_str(
        &pg.kubectl(&["get", "postgresbackup", "before-migration", "-o", "json"])
            .expect("the PostgresBackup exists"),
    )
    .expect("JSON");
    let st = &object["status"];
    assert_eq!(st["phase"], "Completed", "{st}");
    let incr = st["label"].as_str().unwrap_or_default();
    assert!(incr.ends_with('I'), "an incremental backup's label: {st}");
    assert!(said.contains(incr), "the command printed the label {incr}");

    // Test 2: point-in-time recovery into a new cluster. The schedule stops first (a change of
    // schedule restarts nothing), so retention does not expire the backups the restore needs.
    let quiet = backup_spec(ns, "0 0 1 1 *");
    pg.apply(&spec(2, &format!("{SYNC}{quiet}")))
        .expect("a yearly schedule");
    // Test 3: a failover while WAL is archived leaves no segment missing: the restore below
    // replays across the timeline switch, and every commit acknowledged before it is there.
    let old = pg.primary().await.expect("a primary");
    let acked = kill_primary_under_writes(&pg, &old, "acks").await;
    log(format!(
        "{} commits acknowledged across the failover",
        acked.len()
    ));
    let c = pg.connect_service("rw").await.expect("connect through -rw");
    c.batch_execute("CREATE TABLE pitr (v int)")
        .await
        .expect("a table");
    for v in 1..=3 {
        c.execute("INSERT INTO pitr VALUES ($1)", &[&v])
            .await
            .expect("a row before T");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let target = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for v in 4..=6 {
        c.execute("INSERT INTO pitr VALUES ($1)", &[&v])
            .await
            .expect("a row after T");
    }
    c.batch_execute("DROP TABLE pitr")
        .await
        .expect("the mistake to undo");
    let primary = pg.primary().await.expect("a primary");
    let segment = pg
        .superuser_sql(&primary, "SELECT pg_walfile_name(pg_switch_wal())")
        .expect("a segment switch");
    wait_until(2 * MIN, "the WAL past T archived", || async {
        pg.archived_past(&primary, &segment)
    })
    .await;
    let target = target.to_string();
    log(format!("restoring pg as of {target} into pg-restored"));
    let restored = Pg::existing(ns, "pg-restored").await;
    restored
        .apply(&spec(
            2,
            &format!(
                "{}{}",
                backup_spec(ns, "* * * * *"),
                recovery_spec("pg", Some(&target))
            ),
        ))
        .expect("a cluster restored from pg's repository is accepted");
    restored.wait_healthy(2, 10 * MIN).await;
    let r = restored
        .connect_service("rw")
        .await
        .expect("the restored cluster's -rw, with its own app password");
    let rows: Vec<i32> = r
        .query("SELECT v FROM pitr ORDER BY v", &[])
        .await
        .expect("the table dropped after T is back")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(rows, [1, 2, 3], "exactly the rows committed before T");
    assert_no_acknowledged_commit_lost(&restored, "acks", &acked).await;
    assert_eq!(
        condition(&restored, "Restored").await,
        Some(("True".into(), "Restored".into()))
    );
    // Its replica streams, and did not stop at the old target: a write reaches it.
    r.batch_execute("INSERT INTO pitr VALUES (7)")
        .await
        .expect("the restored cluster takes writes");
    let ro = restored.connect_service("ro").await.expect("-ro");
    wait_until(MIN, "the replica has the new row", || async {
        ro.query_one("SELECT count(*) FROM pitr WHERE v = 7", &[])
            .await
            .is_ok_and(|row| row.get::<_, i64>(0) == 1)
    })
    .await;
    // It archives to its own path; the source's repository got nothing of it.
    wait_until(
        3 * MIN,
        "ContinuousArchiving True on pg-restored",
        || async {
            archiving_condition(&restored).await == Some(("True".into(), "Archiving".into()))
        },
    )
    .await;
    let restored_primary = restored.primary().await.expect("a primary");
    let own = restored.pgbackrest_info(&restored_primary);
    assert_eq!(own[0]["name"], "pg-restored", "{own}");
    assert!(
        own[0]["archive"][0]["max"].as_str().is_some(),
        "pg-restored's own repository has WAL: {own}"
    );
    let source_timeline = pg.status().await["timeline"].as_i64().unwrap_or(0);
    let source = pg.pgbackrest_info(&primary);
    let max = source[0]["archive"][0]["max"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        max.starts_with(&format!("{source_timeline:08X}")),
        "pg's archive ends on its own timeline {source_timeline}, not a restored cluster's: {max}"
    );
    restored.delete().await;
    // Test 5, last case: a target before the first backup. The restore fails with pgBackRest's
    // reason in an Event, the cluster gets no primary, and the source is untouched.
    let early = Pg::existing(ns, "pg-early").await;
    early
        .apply(&spec(
            1,
            &format!(
                "{}{}",
                backup_spec(ns, "0 0 1 1 *"),
                recovery_spec("pg", Some("2020-01-01T00:00:00Z"))
            ),
        ))
        .expect("a restore to 2020 is accepted: admission cannot know the backups");
    early
        .wait_event("BootstrapFailed", "could not bootstrap the cluster")
        .await;
    wait_until(MIN, "Restored False: RestoreFailed", || async {
        condition(&early, "Restored").await == Some(("False".into(), "RestoreFailed".into()))
    })
    .await;
    assert_eq!(
        early.primary().await,
        None,
        "no primary from a failed restore"
    );
    early.delete().await;
    pg.wait_healthy(2, 2 * MIN).await;
    pg.delete().await;
}

/// Issue 13, test 5: bad backup input is reported where the user looks and touches nothing else.
/// A missing credentials Secret holds the whole change back (SpecValid False naming the field,
/// an InvalidSpec Event, the pods untouched); a bucket that does not exist turns
/// `ContinuousArchiving` False with the store's reason and an Event while the primary keeps
/// taking writes.
#[tokio::test]
#[ignore]
async fn bad_backup_input_is_reported_and_touches_nothing_else() {
    let ns = "e2e-backup-bad";
    let pg = Pg::create(ns, "pg", &spec(1, "")).await;
    let primary = pg.wait_healthy(1, 5 * MIN).await;
    let uid_before = pg.pod_uid(&primary).await;
    let good = backup_spec(ns, "0 0 * * *");
    pg.apply(&spec(
        1,
        &good.replace("credentialsSecret: store-keys", "credentialsSecret: nosuch"),
    ))
    .expect("admission cannot know the Secret");
    pg.wait_event(
        "InvalidSpec",
        "spec.backup.repository.s3.credentialsSecret: Secret nosuch does not exist",
    )
    .await;
    let status = pg.status().await;
    assert_eq!(status["phase"], "Invalid", "{status}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        pg.pod_uid(&primary).await,
        uid_before,
        "the pod was not restarted for a spec that cannot work"
    );
    let sts = pg
        .kubectl(&["get", "statefulset", "pg", "-o", "json"])
        .expect("the StatefulSet");
    assert!(
        !sts.contains("PGBACKREST_"),
        "the StatefulSet did not take the repository"
    );
    // The Secret is right, the bucket is not: archiving fails loudly, writes go on.
    pg.apply(&spec(
        1,
        &good.replace(
            &format!("bucket: {}", std::env::var("PGWARDEN_S3_BUCKET").unwrap()),
            "bucket: no-such-bucket",
        ),
    ))
    .expect("the bucket is the store's business");
    wait_until(
        5 * MIN,
        "ContinuousArchiving False: RepositoryUnavailable",
        || async {
            archiving_condition(&pg).await == Some(("False".into(), "RepositoryUnavailable".into()))
        },
    )
    .await;
    pg.wait_event("RepositoryUnavailable", "the backup repository refuses")
        .await;
    let reason = pg.status().await["conditions"].to_string();
    log(format!("conditions with a wrong bucket: {reason}"));
    let c = pg.connect_service("rw").await.expect("connect through -rw");
    c.batch_execute("CREATE TABLE still_serving (v int); INSERT INTO still_serving VALUES (1)")
        .await
        .expect("the primary keeps taking writes");
    // Without WAL archiving a backup could not be restored: a PostgresBackup fails at once,
    // naming the field, rather than waiting forever.
    pg.apply(&spec(
        1,
        &good.replace("    schedule:", "    walArchiving: false\n    schedule:"),
    ))
    .expect("a repository without archiving is accepted");
    kubectl(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: pgwarden.io/v1alpha1\nkind: PostgresBackup\nmetadata: {{name: no-wal, \
             namespace: {ns}}}\nspec: {{cluster: pg}}\n"
        )),
    )
    .expect("a PostgresBackup");
    let fails_saying = |name: &'static str, why: &'static str| {
        let pg = &pg;
        async move {
            let status = || {
                let json = pg
                    .kubectl(&["get", "postgresbackup", name, "-o", "json"])
                    .unwrap_or_default();
                serde_json::from_str::<serde_json::Value>(&json).unwrap_or_default()["status"]
                    .clone()
            };
            wait_until(
                2 * MIN,
                &format!("PostgresBackup {name} Failed"),
                || async { status()["phase"] == "Failed" },
            )
            .await;
            let message = status()["message"].to_string();
            assert!(
                message.contains(why),
                "{name}: {message} does not say {why}"
            );
        }
    };
    fails_saying("no-wal", "spec.backup.walArchiving is false").await;
    // A backup of a cluster that does not exist fails, naming it.
    kubectl(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: pgwarden.io/v1alpha1\nkind: PostgresBackup\nmetadata: {{name: astray, \
             namespace: {ns}}}\nspec: {{cluster: nosuch}}\n"
        )),
    )
    .expect("a PostgresBackup of a missing cluster is accepted");
    fails_saying("astray", "cluster nosuch does not exist").await;
    pg.delete().await;
}
