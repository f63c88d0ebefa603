//! End-to-end scenarios on the full single-node Kubernetes, with the chart installed by
//! `helm install` (run by e2e/e2e.sh: `make e2e`). Every test is `#[ignore]` so `cargo test`
//! alone does not need a cluster; the e2e tier runs them all with `--ignored`.

mod e2e_support;

use std::collections::BTreeSet;
use std::time::Duration;

use e2e_support::*;

const MIN: Duration = Duration::from_secs(60);

fn spec(instances: i32, extra: &str) -> String {
    format!("  instances: {instances}\n  image: {IMAGE}\n  imagePullPolicy: Never\n  storage: {{size: 100Mi}}\n{extra}")
}

/// Write a row through `-rw`, read it back through `-ro` once replicated.
async fn write_and_read_back(pg: &Pg, table: &str) {
    let rw = pg.connect_service("rw").await.expect("connect through -rw");
    rw.batch_execute(&format!("CREATE TABLE IF NOT EXISTS {table} (v text); INSERT INTO {table} VALUES ('hello')"))
        .await
        .expect("write through -rw");
    wait_until(MIN, "the row through -ro", || async {
        let Ok(ro) = pg.connect_service("ro").await else { return false };
        let Ok(rows) = ro.query(&format!("SELECT v FROM {table}"), &[]).await else { return false };
        let in_recovery: bool = ro.query_one("SELECT pg_is_in_recovery()", &[]).await.map(|r| r.get(0)).unwrap_or(false);
        in_recovery && rows.len() == 1
    })
    .await;
}

/// 1. The demo from examples/demo.yaml: Ready 3/3, the printer columns, -rw = primary only,
/// -ro = the two replicas, psql through the ClusterIPs.
#[tokio::test]
#[ignore]
async fn demo_is_ready_and_the_services_route_by_role() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.yaml")).unwrap();
    kubectl(&["apply", "-f", "-"], Some(&manifest)).expect("examples/demo.yaml applies");
    let pg = Pg::existing("default", "demo").await;
    let primary = pg.wait_healthy(3, 5 * MIN).await;
    let table = kubectl(&["get", "pgc", "demo", "-n", "default"], None).unwrap();
    log(format!("kubectl get pgc:\n{table}"));
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "INSTANCES", "READY", "PRIMARY", "PHASE", "AGE"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..5], ["demo", "3", "3", primary.as_str(), "Healthy"]);
    assert_eq!(pg.endpoints("demo-rw").await, BTreeSet::from([primary.clone()]));
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
    pg.kubectl(&["delete", "pod", &old, "--wait=false"]).unwrap();
    wait_until(2 * MIN, "a new primary", || async { pg.primary().await.is_some_and(|p| p != old) }).await;
    let new = pg.primary().await.unwrap();
    let before = writer.count();
    wait_until(MIN, "writes through -rw on the new primary", || async { writer.count() > before + 20 }).await;
    let primary = pg.wait_healthy(3, 5 * MIN).await;
    assert_eq!(primary, new, "the returning pod did not take the primary back");
    assert!(pg.labelled("replica").await.contains(&old), "{old} is back as a replica");
    let acked = writer.stop().await;
    let c = pg.connect_service("rw").await.unwrap();
    let n: i64 = c.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    log(format!("{} writes acknowledged, {n} rows on the new primary", acked.len()));
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
    pg.kubectl(&["annotate", "pgc", "pg", &format!("pgwarden.io/switchover-to={target}")]).unwrap();
    wait_until(2 * MIN, "the annotated replica to be primary", || async { pg.primary().await.as_deref() == Some(target.as_str()) }).await;
    let c = pg.cluster().await;
    assert!(
        !c.metadata.annotations.unwrap_or_default().contains_key("pgwarden.io/switchover-to"),
        "the annotation is consumed"
    );
    pg.wait_healthy(3, 3 * MIN).await;
    wait_until(MIN, "status.lastSwitchover", || async {
        pg.cluster().await.status.and_then(|s| s.last_switchover).is_some_and(|s| s.to == target)
    })
    .await;
    let events = pg.kubectl(&["get", "events", "-o", "json"]).unwrap();
    assert!(events.contains(&format!("to {target} as the annotation asked")), "an Event records the switchover");
    pg.delete().await;
}

/// 8. Invalid specs are refused by `kubectl apply` with a message naming the field.
#[tokio::test]
#[ignore]
async fn invalid_specs_are_refused_with_the_field_named() {
    let pg = Pg::create("e2e-invalid", "pg", &spec(1, "")).await;
    let cases: &[(&str, &str)] = &[
        ("  instances: 0\n  image: x\n  storage: {size: 1Gi}", "spec.instances"),
        ("  instances: 17\n  image: x\n  storage: {size: 1Gi}", "spec.instances"),
        ("  image: ''\n  storage: {size: 1Gi}", "spec.image"),
        ("  image: x\n  storage: {size: lots}", "spec.storage.size"),
        ("  image: x\n  storage: {size: 1Gi}\n  ha: {ttl: 8, loopWait: 4, retryTimeout: 3}", "loopWait + 2*retryTimeout"),
        ("  image: x\n  storage: {size: 1Gi}\n  ha: {ttl: 3}", "spec.ha.ttl"),
        ("  image: x\n  storage: {size: 1Gi}\n  ha: {synchronousMode: sometimes}", "spec.ha.synchronousMode"),
        ("  image: x\n  storage: {size: 1Gi}\n  ha: {synchronousMode: 'on', synchronousNodeCount: 3}\n  instances: 3", "spec.ha.synchronousNodeCount"),
        ("  image: x\n  storage: {size: 1Gi}\n  ha: {watchdog: {mode: always}}", "spec.ha.watchdog.mode"),
        ("  image: x\n  storage: {size: 1Gi}\n  ha: {watchdog: {device: /tmp/wd}}", "spec.ha.watchdog.device"),
        ("  image: x\n  storage: {size: 1Gi}\n  ha: {ttl: 8, watchdog: {safetyMargin: 7}}", "spec.ha.watchdog.safetyMargin"),
        ("  image: x\n  storage: {size: 1Gi}\n  postgresql: {parameters: {port: '5433'}}", "spec.postgresql.parameters"),
        ("  image: x\n  storage: {size: 1Gi}\n  postgresql: {parameters: {data_directory: /x}}", "spec.postgresql.parameters"),
        ("  image: x\n  storage: {size: 1Gi}\n  bootstrap: {database: Bad-Name}", "spec.bootstrap.database"),
        ("  image: x\n  storage: {size: 1Gi}\n  bootstrap: {roles: [{name: 'x y'}]}", "spec.bootstrap.roles[0].name"),
        ("  image: x\n  storage: {size: 1Gi}\n  services: {rw: {type: External}}", "spec.services.rw.type"),
    ];
    let probe = Pg::existing("e2e-invalid", "bad").await;
    for (body, field) in cases {
        let err = probe.apply(body).expect_err(&format!("refused: {body}"));
        assert!(err.contains(field), "the error for\n{body}\nnames {field}: {err}");
        log(format!("refused, naming {field}"));
    }
    // Immutable fields: a change to an existing cluster is refused.
    let immutable: &[(&str, &str)] = &[
        ("  instances: 1\n  image: pgwarden.local/postgres:15\n  storage: {size: 200Mi}", "spec.storage.size is immutable"),
        ("  instances: 1\n  image: pgwarden.local/postgres:15\n  storage: {size: 100Mi}\n  bootstrap: {database: other}", "spec.bootstrap is immutable"),
        ("  instances: 1\n  image: pgwarden.local/postgres:15\n  storage: {size: 100Mi}\n  postgresUID: 26", "spec.postgresUID is immutable"),
    ];
    for (body, message) in immutable {
        let err = pg.apply(body).expect_err(&format!("refused: {body}"));
        assert!(err.contains(message), "the error for\n{body}\nsays {message}: {err}");
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
        let pg = Pg::create(ns, "pg", &spec(2, &format!("  storage: {{size: 100Mi, retainOnDelete: {retain}}}\n"))).await;
        pg.wait_healthy(2, 5 * MIN).await;
        pg.kubectl(&["delete", "pgc", "pg", "--wait=true", "--timeout=120s"]).unwrap();
        let kinds = "statefulsets,services,secrets,configmaps,leases.coordination.k8s.io,serviceaccounts,roles,rolebindings,poddisruptionbudgets,pods";
        wait_until(2 * MIN, &format!("every child of the cluster to be gone ({ns})"), || async {
            let left = pg.kubectl(&["get", kinds, "-l", "pgwarden.io/cluster=pg", "-o", "name"]).unwrap_or_default();
            left.trim().is_empty()
        })
        .await;
        let pvcs = || pg.kubectl(&["get", "pvc", "-o", "name"]).unwrap_or_default();
        if retain {
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert_eq!(pvcs().lines().count(), 2, "retainOnDelete keeps both volumes");
        } else {
            wait_until(MIN, "the volumes to be deleted", || async { pvcs().trim().is_empty() }).await;
        }
        pg.delete().await;
    }
}
