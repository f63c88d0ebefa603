//! Monitoring end to end: Debian's real Prometheus (a host process) scrapes the agents of a
//! 3-instance cluster and the operator on the test bed, with `monitoring/alerts.yaml` loaded
//! (every `for:` cut to 1 s and 1 s scrape/evaluation intervals, so the test does not wait
//! minutes). A forced failover (the primary's processes killed for 15 s, a failing node) makes
//! `PgwardenNoPrimary` and `PgwardenFewerMembersThanInstances` fire, and both clear once the new
//! primary leads and the old one is back; a replica whose replay is frozen (SIGSTOP of its
//! startup process) while the primary writes makes `PgwardenReplicationLagHigh` fire, and it
//! clears once replay resumes.
//!
//! Targets come from file_sd files the test rewrites every second from the pod lists (Debian
//! builds its Prometheus 2.42 without kubernetes_sd): the agents with the `namespace` label a
//! PodMonitor would set, the operator with `honor_labels` as the rules file asks.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::{Value, json};
use support::cluster::*;
use support::process::signal;
use support::wait::{log, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIN: Duration = Duration::from_secs(60);
const OPERATOR_NAMESPACE: &str = "pgwarden-system";

fn spec(instances: i32) -> String {
    format!(
        "  instances: {instances}\n  image: {IMAGE}\n  imagePullPolicy: Never\n  storage: {{size: 200Mi}}\n"
    )
}

/// Percent-encode a query-string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The shipped rules with every `for:` cut to 1 s.
fn fast_rules(text: &str) -> String {
    text.lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("for: ") {
                format!("{}for: 1s", &l[..l.len() - t.len()])
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write a file_sd file atomically (Prometheus must never read half of it).
fn write_targets(path: &Path, targets: &[String], labels: Value) {
    let tmp = path.with_extension("tmp");
    let body = json!([{ "targets": targets, "labels": labels }]);
    std::fs::write(&tmp, body.to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn pod_ips(client: &kube::Client, ns: &str, selector: &str) -> Vec<String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let Ok(list) = api
        .list(&kube::api::ListParams::default().labels(selector))
        .await
    else {
        return vec![];
    };
    list.items
        .into_iter()
        .filter_map(|p| p.status.and_then(|s| s.pod_ip))
        .collect()
}

impl Prometheus {
    async fn start(pg: &Pg) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("pgwarden-e2e-prometheus-{}", pg.ns));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let rules = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring/alerts.yaml"),
        )
        .unwrap();
        std::fs::write(dir.join("rules.yaml"), fast_rules(&rules)).unwrap();
        let config = r#"
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [rules.yaml]
scrape_configs:
  - job_name: pgwarden-agents
    file_sd_configs: [{files: [agents.json], refresh_interval: 1s}]
  - job_name: pgwarden-operator
    honor_labels: true
    file_sd_configs: [{files: [operator.json], refresh_interval: 1s}]
"#;
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        // Targets before the start, so the first scrape already has them.
        refresh_targets(pg, &dir).await;
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .current_dir(&dir)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus on PATH (Debian's prometheus package; e2e/cluster install-deps)");
        let p = Prometheus { child, port, dir };
        wait_until(MIN, "Prometheus ready", || async {
            p.get("/-/ready").await.is_some()
        })
        .await;
        p
    }

    /// Rewrite the targets from the pod lists every second until the task is aborted.
    fn keep_targets_fresh(&self, pg: &Pg) -> tokio::task::JoinHandle<()> {
        let (ns, name, dir) = (pg.ns.clone(), pg.name.clone(), self.dir.clone());
        tokio::spawn(async move {
            let pg = Pg::existing(&ns, &name).await;
            loop {
                refresh_targets(&pg, &dir).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    /// GET a path on the Prometheus HTTP API; `None` unless it answered 200.
    async fn get(&self, path: &str) -> Option<String> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = vec![];
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200")
            .then(|| body.to_string())
            .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_string()))
    }

    /// An instant query's result vector (empty when the query fails).
    async fn query(&self, q: &str) -> Vec<Value> {
        let Some(body) = self
            .get(&format!("/api/v1/query?query={}", encode(q)))
            .await
        else {
            return vec![];
        };
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The single value of an instant query, if it returned exactly one series.
    async fn scalar(&self, q: &str) -> Option<f64> {
        let r = self.query(q).await;
        if r.len() != 1 {
            return None;
        }
        r[0]["value"][1].as_str()?.parse().ok()
    }

    /// Alerts of `ns` in state `firing`, as (alertname, labels).
    async fn firing(&self, ns: &str) -> Vec<(String, Value)> {
        let Some(body) = self.get("/api/v1/alerts").await else {
            return vec![];
        };
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["state"] == "firing" && a["labels"]["namespace"] == ns)
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                    a["labels"].clone(),
                )
            })
            .collect()
    }

    /// Whether `alert` was firing for `ns` at any evaluation since `since` (from the ALERTS
    /// series Prometheus keeps), so a short episode is not missed between two polls.
    async fn fired_since(&self, alert: &str, ns: &str, since: jiff::Timestamp) -> bool {
        let q = format!(r#"ALERTS{{alertname="{alert}",alertstate="firing",namespace="{ns}"}}"#);
        let now = jiff::Timestamp::now();
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=1",
            encode(&q),
            since.as_second(),
            now.as_second() + 1
        );
        let Some(body) = self.get(&path).await else {
            return false;
        };
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["data"]["result"].as_array().map(|r| !r.is_empty()))
            .unwrap_or(false)
    }
}

/// Point the file_sd files at the cluster's pods and the operator's pods as they are now.
async fn refresh_targets(pg: &Pg, dir: &Path) {
    let agents: Vec<String> = pod_ips(
        &pg.client,
        &pg.ns,
        &format!("pgwarden.io/cluster={}", pg.name),
    )
    .await
    .into_iter()
    .map(|ip| format!("{ip}:8008"))
    .collect();
    write_targets(
        &dir.join("agents.json"),
        &agents,
        json!({ "namespace": pg.ns }),
    );
    let operators: Vec<String> = pod_ips(&pg.client, OPERATOR_NAMESPACE, "")
        .await
        .into_iter()
        .map(|ip| format!("{ip}:8080"))
        .collect();
    write_targets(&dir.join("operator.json"), &operators, json!({}));
}

/// The host PID of a pod's startup (WAL replay) process: a descendant of the pod's processes
/// titled `postgres: … startup …`. PostgreSQL's processes overwrite their environment with the
/// process title, so they cannot be found by `POD_NAME` themselves; the agent can.
fn startup_pid(pg: &Pg, pod: &str) -> Option<i32> {
    let procs: Vec<(i32, i32, String)> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter_map(|pid| {
            let ppid = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))?
                .trim()
                .parse::<i32>()
                .ok()?;
            let title = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).into_owned())
                .unwrap_or_default();
            Some((pid, ppid, title))
        })
        .collect();
    let mut family: Vec<i32> = pg.pod_pids(pod);
    loop {
        let more: Vec<i32> = procs
            .iter()
            .filter(|(pid, ppid, _)| family.contains(ppid) && !family.contains(pid))
            .map(|(pid, _, _)| *pid)
            .collect();
        if more.is_empty() {
            break;
        }
        family.extend(more);
    }
    procs
        .iter()
        .find(|(pid, _, title)| {
            family.contains(pid) && title.starts_with("postgres:") && title.contains("startup")
        })
        .map(|(pid, _, _)| *pid)
}

/// The scenario of the issue: scraping works, then a forced failover and a lagging replica make
/// their alerts fire and clear.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn prometheus_scrapes_agents_and_operator_and_alerts_fire_and_clear() {
    let pg = Pg::create("e2e-monitoring", "demo", &spec(3)).await;
    let old = pg.wait_healthy(3, 5 * MIN).await;
    let prom = Prometheus::start(&pg).await;
    log(format!("Prometheus on 127.0.0.1:{}", prom.port));
    let refresher = prom.keep_targets_fresh(&pg);
    let ns = pg.ns.clone();

    // 1. Scraping: three agents, the operator's probes of the three members (with the cluster's
    // namespace kept by honor_labels), one primary under Patroni's metric name.
    wait_until(MIN, "three agents scraped", || async {
        prom.scalar(&format!(
            r#"count(up{{job="pgwarden-agents",namespace="{ns}"}} == 1)"#
        ))
        .await
            == Some(3.0)
    })
    .await;
    wait_until(
        MIN,
        "the operator's probes of three running members",
        || async {
            prom.scalar(&format!(
                r#"sum(pgwarden_operator_member_running{{namespace="{ns}",cluster="demo"}})"#
            ))
            .await
                == Some(3.0)
        },
    )
    .await;
    wait_until(MIN, "one primary by patroni_primary", || async {
        prom.scalar(&format!(
            r#"sum(patroni_primary{{namespace="{ns}",scope="demo"}})"#
        ))
        .await
            == Some(1.0)
    })
    .await;
    wait_until(MIN, "no alert firing for a healthy cluster", || async {
        prom.firing(&ns).await.is_empty()
    })
    .await;

    // 2. A forced failover: the primary's node fails (its processes die as they start).
    let t0 = jiff::Timestamp::now();
    log(format!("killing every process of {old} for 15 s"));
    kill_pod_processes_for(&pg, &old, Duration::from_secs(15)).await;
    wait_until(2 * MIN, "a new primary", || async {
        pg.primary().await.is_some_and(|p| p != old)
    })
    .await;
    wait_until(
        MIN,
        "PgwardenNoPrimary fired during the failover",
        || async { prom.fired_since("PgwardenNoPrimary", &ns, t0).await },
    )
    .await;
    wait_until(
        MIN,
        "PgwardenFewerMembersThanInstances fired while the old primary was down",
        || async {
            prom.fired_since("PgwardenFewerMembersThanInstances", &ns, t0)
                .await
        },
    )
    .await;
    pg.wait_healthy(3, 5 * MIN).await;
    wait_until(2 * MIN, "the failover's alerts cleared", || async {
        let firing = prom.firing(&ns).await;
        !firing
            .iter()
            .any(|(a, _)| a == "PgwardenNoPrimary" || a == "PgwardenFewerMembersThanInstances")
    })
    .await;

    // 3. Lag: a replica stops replaying while the primary writes ~10 MB of WAL.
    let replica = pg.labelled("replica").await.into_iter().next().unwrap();
    let startup = startup_pid(&pg, &replica).expect("the replica's startup process");
    log(format!(
        "SIGSTOP startup process of {replica} (host pid {startup})"
    ));
    signal(startup, libc::SIGSTOP);
    let rw = pg.connect_service("rw").await.expect("connect through -rw");
    rw.batch_execute(
        "CREATE TABLE lag_t AS SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 10000) g",
    )
    .await
    .expect("write through -rw");
    let fired = tokio::time::timeout(2 * MIN, async {
        loop {
            let firing = prom.firing(&ns).await;
            if firing
                .iter()
                .any(|(a, l)| a == "PgwardenReplicationLagHigh" && l["name"] == replica.as_str())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let lag = prom
        .scalar(&format!(
            r#"pgwarden_replication_lag_bytes{{namespace="{ns}",name="{replica}"}}"#
        ))
        .await;
    log(format!(
        "SIGCONT startup process of {replica}; lag was {lag:?} bytes"
    ));
    signal(startup, libc::SIGCONT);
    assert!(
        fired.is_ok(),
        "PgwardenReplicationLagHigh did not fire for {replica} (lag {lag:?}); Prometheus in {}",
        prom.dir.display()
    );
    log("ok: PgwardenReplicationLagHigh fired for the frozen replica");
    wait_until(2 * MIN, "the lag alert cleared", || async {
        !prom
            .firing(&ns)
            .await
            .iter()
            .any(|(a, _)| a == "PgwardenReplicationLagHigh")
    })
    .await;
    refresher.abort();
    drop(prom);
    pg.delete().await;
}

/// Resumes a stopped process when dropped, so a failing test never leaves the store frozen.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

/// Issue 13, test 4: the object store stops answering (its process SIGSTOPped) for over a
/// minute. The primary keeps taking writes while the segments it cannot archive stay in
/// pg_wal; `ContinuousArchiving` turns False with the reason and `PgwardenWalArchivingFailing`
/// fires; when the store comes back every segment reaches it, the condition turns True and the
/// alert clears.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn an_unreachable_object_store_fails_archiving_loudly_and_it_catches_up() {
    let pg = Pg::create("e2e-store-outage", "pg", &spec(1)).await;
    pg.wait_healthy(1, 5 * MIN).await;
    pg.apply(&format!("{}{}", spec(1), backup_spec(&pg.ns, "0 0 * * *")))
        .expect("spec.backup is accepted");
    let ns = pg.ns.clone();
    wait_until(5 * MIN, "ContinuousArchiving True", || async {
        archiving_condition(&pg).await == Some(("True".into(), "Archiving".into()))
    })
    .await;
    let primary = pg.primary().await.expect("a primary");
    let prom = Prometheus::start(&pg).await;
    let refresher = prom.keep_targets_fresh(&pg);
    wait_until(MIN, "the primary's archiver scraped", || async {
        prom.scalar(&format!(
            r#"pgwarden_wal_archived_total{{namespace="{ns}",scope="pg"}}"#
        ))
        .await
        .is_some()
    })
    .await;
    let rw = pg.connect_service("rw").await.expect("connect through -rw");
    rw.batch_execute("CREATE TABLE outage (v int)")
        .await
        .expect("a table");

    let store = object_store_pid();
    log(format!("SIGSTOP the object store (host pid {store})"));
    signal(store, libc::SIGSTOP);
    let resume = Resume(store);
    let stopped = std::time::Instant::now();
    let mut last_segment = String::new();
    let mut n = 0;
    // Writes and segment switches go on through the outage.
    let deadline = stopped + 4 * MIN;
    loop {
        n += 1;
        rw.execute("INSERT INTO outage VALUES ($1)", &[&n])
            .await
            .expect("the primary keeps taking writes while the store is away");
        if let Ok(seg) = pg.superuser_sql(&primary, "SELECT pg_walfile_name(pg_switch_wal())") {
            last_segment = seg;
        }
        if archiving_condition(&pg).await == Some(("False".into(), "ArchiveCommandFailing".into()))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ContinuousArchiving did not turn False: ArchiveCommandFailing within 4 minutes"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    log(format!(
        "ok: ContinuousArchiving False (ArchiveCommandFailing) {:?} after the store stopped",
        stopped.elapsed()
    ));
    wait_until(MIN, "PgwardenWalArchivingFailing firing", || async {
        prom.firing(&ns)
            .await
            .iter()
            .any(|(a, l)| a == "PgwardenWalArchivingFailing" && l["name"] == primary.as_str())
    })
    .await;
    let ready = pg
        .superuser_sql(
            &primary,
            "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'",
        )
        .expect("the archive status directory");
    log(format!("{ready} segments wait in pg_wal for the store"));
    assert!(ready.parse::<i64>().unwrap_or(0) > 0, "WAL accumulates");
    // At least a minute away in all.
    if let Some(rest) = MIN.checked_sub(stopped.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    log(format!(
        "SIGCONT the object store after {:?}",
        stopped.elapsed()
    ));
    drop(resume);
    let rows = rw
        .query_one("SELECT count(*) FROM outage", &[])
        .await
        .expect("count")
        .get::<_, i64>(0);
    assert_eq!(rows, i64::from(n), "every write of the outage is there");
    let segment = pg
        .superuser_sql(&primary, "SELECT pg_walfile_name(pg_switch_wal())")
        .expect("a switch after the outage");
    log(format!(
        "last segment switched during the outage: {last_segment}; after: {segment}"
    ));
    wait_until(5 * MIN, "every segment archived, none waiting", || async {
        pg.superuser_sql(
            &primary,
            &format!(
                "SELECT coalesce(last_archived_wal >= '{segment}', false) \
                 AND (SELECT count(*) = 0 FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready') \
                 FROM pg_stat_archiver"
            ),
        )
        .is_ok_and(|out| out == "t")
    })
    .await;
    wait_until(2 * MIN, "ContinuousArchiving True again", || async {
        archiving_condition(&pg).await == Some(("True".into(), "Archiving".into()))
    })
    .await;
    wait_until(2 * MIN, "the alert cleared", || async {
        !prom
            .firing(&ns)
            .await
            .iter()
            .any(|(a, _)| a == "PgwardenWalArchivingFailing")
    })
    .await;
    refresher.abort();
    drop(prom);
    pg.delete().await;
}

#[test]
fn the_test_rules_keep_everything_but_the_durations() {
    let rules = "groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 30m\n        labels: {}\n";
    assert_eq!(
        fast_rules(rules),
        "groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 1s\n        labels: {}"
    );
    assert_eq!(encode("a b{c=\"d\"}"), "a%20b%7Bc%3D%22d%22%7D");
}
