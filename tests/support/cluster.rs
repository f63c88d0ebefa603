//! End-to-end harness: a full single-node Kubernetes (`e2e/cluster up`), the chart installed
//! with `helm install` (e2e/e2e.sh does both), and `PostgresCluster` objects applied with
//! kubectl like a user would. Each test gets a fresh namespace, deleted when it ends, also when
//! it fails (kept with `PGWARDEN_E2E_KEEP=1`). Faults are real: pod deletion, kill -9 and
//! SIGSTOP of the pod's processes from the host (they are host processes, found by the pod
//! identity in their environment).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};
use pgwarden::api::PostgresCluster;
use pgwarden::api::state::SyncState;
use serde_json::Value;

use super::k8s::{self, TempNamespace, delete_leftover_namespace, kubectl};
use super::postgres::{connect, connect_retry, message};
use super::process::{parent_pid, pids_with_env, signal};
use super::wait::wait_until;

pub const IMAGE: &str = "pgwarden.local/postgres:15";

/// Set, it leaves each scenario's namespace up for a look.
const KEEP: &str = "PGWARDEN_E2E_KEEP";

/// The spec of a scenario's cluster: `instances` on the test image with 100Mi volumes, then
/// `extra` (indented two spaces).
pub fn spec(instances: i32, extra: &str) -> String {
    format!(
        "  instances: {instances}\n  image: {IMAGE}\n  imagePullPolicy: Never\n  storage: {{size: 100Mi}}\n{extra}"
    )
}

/// The test bed's object store (`e2e/cluster env`), as a `spec.backup` with `schedule`
/// (indented two spaces), after creating the two Secrets it names in `ns` (which must exist).
pub fn backup_spec(ns: &str, schedule: &str) -> String {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} (e2e/cluster env)"));
    let ca = std::fs::read_to_string(var("PGWARDEN_TESTBED_CA")).expect("the test bed's CA");
    let secrets = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "store-keys", "namespace": ns},
         "stringData": {"AWS_ACCESS_KEY_ID": var("PGWARDEN_S3_ACCESS_KEY"),
                        "AWS_SECRET_ACCESS_KEY": var("PGWARDEN_S3_SECRET_KEY")}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "store-ca", "namespace": ns},
         "stringData": {"ca.crt": ca}}
    ]});
    kubectl(&["apply", "-f", "-"], Some(&secrets.to_string())).expect("the store's Secrets");
    format!(
        "  backup:\n    repository:\n      s3:\n        endpoint: \"{}\"\n        bucket: {}\n        \
         region: {}\n        uriStyle: path\n        credentialsSecret: store-keys\n        \
         caSecret: store-ca\n    schedule: \"{schedule}\"\n",
        var("PGWARDEN_S3_ENDPOINT"),
        var("PGWARDEN_S3_BUCKET"),
        var("PGWARDEN_S3_REGION"),
    )
}

/// A `spec.backup` of [`backup_spec`] whose backups start with an immediate checkpoint.
pub fn with_immediate_checkpoint(backup: &str) -> String {
    backup.replace(
        "    schedule:",
        "    immediateCheckpoint: true\n    schedule:",
    )
}

/// `spec.bootstrap.recovery` (indented two spaces) from cluster `source`'s repository, to
/// `time` (RFC 3339) or, with `None`, to the end of its archive.
pub fn recovery_spec(source: &str, time: Option<&str>) -> String {
    let target = time
        .map(|t| format!("      target: {{time: \"{t}\"}}\n"))
        .unwrap_or_default();
    format!("  bootstrap:\n    recovery:\n      source: {{cluster: {source}}}\n{target}")
}

/// The host pid of the test bed's object store (`PGWARDEN_S3_PID_FILE`), to SIGSTOP it.
pub fn object_store_pid() -> i32 {
    let file =
        std::env::var("PGWARDEN_S3_PID_FILE").expect("PGWARDEN_S3_PID_FILE (e2e/cluster env)");
    std::fs::read_to_string(&file)
        .expect("the store's pid file")
        .trim()
        .parse()
        .expect("a pid")
}

/// The `ContinuousArchiving` condition's status and reason, when there is one.
pub async fn archiving_condition(pg: &Pg) -> Option<(String, String)> {
    condition(pg, "ContinuousArchiving").await
}

/// The status and reason of the cluster's condition `type_`, when there is one.
pub async fn condition(pg: &Pg, type_: &str) -> Option<(String, String)> {
    let status = pg.status().await;
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// One `PostgresCluster` in its own namespace.
pub struct Pg {
    pub client: Client,
    pub ns: String,
    pub name: String,
    /// `ns` when this handle created it (deleted by `delete` or on drop).
    namespace: Option<TempNamespace>,
}

impl Pg {
    /// Create namespace `ns` (unless it is `default`) and apply a cluster with `spec_yaml`
    /// (indented two spaces, under `spec:`).
    pub async fn create(ns: &str, name: &str, spec_yaml: &str) -> Pg {
        let client = Client::try_default()
            .await
            .expect("KUBECONFIG names the test bed");
        let namespace = (ns != "default").then(|| {
            delete_leftover_namespace(ns);
            TempNamespace::create(ns, Some(KEEP))
        });
        let pg = Pg {
            client,
            ns: ns.into(),
            name: name.into(),
            namespace,
        };
        pg.apply(spec_yaml).expect("the cluster is accepted");
        pg
    }

    pub fn existing_with(client: Client, ns: &str, name: &str) -> Pg {
        Pg {
            client,
            ns: ns.into(),
            name: name.into(),
            namespace: None,
        }
    }

    /// A handle on a cluster that exists (or will be applied by the caller) in `ns`.
    pub async fn existing(ns: &str, name: &str) -> Pg {
        let client = Client::try_default()
            .await
            .expect("KUBECONFIG names the test bed");
        Pg {
            client,
            ns: ns.into(),
            name: name.into(),
            namespace: None,
        }
    }

    pub fn manifest(&self, spec_yaml: &str) -> String {
        format!(
            "apiVersion: pgwarden.io/v1alpha1\nkind: PostgresCluster\nmetadata:\n  name: {}\n  namespace: {}\nspec:\n{}\n",
            self.name, self.ns, spec_yaml
        )
    }

    pub fn apply(&self, spec_yaml: &str) -> Result<String, String> {
        kubectl(&["apply", "-f", "-"], Some(&self.manifest(spec_yaml)))
    }

    /// `psql -Atc sql` as the superuser over `pod`'s socket (the superuser may not connect over
    /// TCP); the trimmed output.
    pub fn superuser_sql(&self, pod: &str, sql: &str) -> Result<String, String> {
        self.kubectl(&[
            "exec",
            pod,
            "-c",
            "postgres",
            "--",
            "psql",
            "-h",
            "/run/pgwarden/agent",
            "-U",
            "postgres",
            "-Atc",
            sql,
        ])
        .map(|out| out.trim().to_string())
    }

    /// `pgbackrest info --output=json` in `pod` (its stanza and repository), parsed.
    pub fn pgbackrest_info(&self, pod: &str) -> Value {
        let out = self
            .kubectl(&[
                "exec",
                pod,
                "-c",
                "postgres",
                "--",
                "pgbackrest",
                "info",
                "--output=json",
            ])
            .expect("pgbackrest info in the pod");
        serde_json::from_str(&out).expect("pgbackrest info is JSON")
    }

    /// Whether `pod`'s pg_stat_archiver has archived `segment` or a later one.
    pub fn archived_past(&self, pod: &str, segment: &str) -> bool {
        self.superuser_sql(
            pod,
            &format!(
                "SELECT coalesce(last_archived_wal >= '{segment}', false) FROM pg_stat_archiver"
            ),
        )
        .is_ok_and(|out| out == "t")
    }

    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        kubectl(&all, None)
    }

    /// Wait until an Event with `reason` whose message contains `text` regards this cluster by
    /// its uid (what `kubectl describe postgrescluster` shows).
    pub async fn wait_event(&self, reason: &str, text: &str) {
        let uid = self.cluster().await.metadata.uid.unwrap_or_default();
        let what = format!(
            "an Event {reason} saying '{text}' on {}/{}",
            self.ns, self.name
        );
        wait_until(Duration::from_secs(90), &what, || async {
            let selector = format!("involvedObject.kind=PostgresCluster,involvedObject.uid={uid}");
            let Ok(out) =
                self.kubectl(&["get", "events", "--field-selector", &selector, "-o", "json"])
            else {
                return false;
            };
            let Ok(list) = serde_json::from_str::<serde_json::Value>(&out) else {
                return false;
            };
            list["items"].as_array().is_some_and(|items| {
                items.iter().any(|e| {
                    e["reason"] == reason && e["message"].as_str().is_some_and(|m| m.contains(text))
                })
            })
        })
        .await;
    }

    pub async fn cluster(&self) -> PostgresCluster {
        Api::<PostgresCluster>::namespaced(self.client.clone(), &self.ns)
            .get(&self.name)
            .await
            .expect("cluster exists")
    }

    pub async fn pods(&self) -> Vec<Pod> {
        let mut pods = Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default().labels(&format!("pgwarden.io/cluster={}", self.name)))
            .await
            .expect("list pods")
            .items;
        pods.sort_by_key(|p| p.metadata.name.clone());
        pods
    }

    pub async fn pod_ip(&self, pod: &str) -> String {
        let p = Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .get(pod)
            .await
            .expect("pod");
        p.status.and_then(|s| s.pod_ip).expect("pod has an IP")
    }

    /// Pods labelled with `role`.
    pub async fn labelled(&self, role: &str) -> BTreeSet<String> {
        self.pods()
            .await
            .into_iter()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("pgwarden.io/role"))
                    .map(String::as_str)
                    == Some(role)
            })
            .filter_map(|p| p.metadata.name)
            .collect()
    }

    /// Ready endpoints of a Service, by pod name.
    pub async fn endpoints(&self, service: &str) -> BTreeSet<String> {
        let slices = Api::<EndpointSlice>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
            .await
            .expect("list endpointslices");
        slices
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
            .filter_map(|e| e.target_ref.as_ref().and_then(|t| t.name.clone()))
            .collect()
    }

    pub async fn service_ip(&self, service: &str) -> String {
        Api::<Service>::namespaced(self.client.clone(), &self.ns)
            .get(service)
            .await
            .expect("service")
            .spec
            .and_then(|s| s.cluster_ip)
            .expect("cluster ip")
    }

    pub async fn secret(&self, name: &str, key: &str) -> String {
        let s = Api::<Secret>::namespaced(self.client.clone(), &self.ns)
            .get(name)
            .await
            .expect("secret");
        String::from_utf8(s.data.expect("data")[key].0.clone()).expect("utf8")
    }

    pub async fn status(&self) -> Value {
        serde_json::to_value(self.cluster().await.status).unwrap_or(Value::Null)
    }

    /// The uid of pod `name` (a new uid: the pod was re-created).
    pub async fn pod_uid(&self, name: &str) -> Option<String> {
        Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|p| p.metadata.uid)
    }

    pub async fn primary(&self) -> Option<String> {
        self.cluster().await.status.and_then(|s| s.current_primary)
    }

    /// Wait for `n` ready instances, a primary, the Services routing to exactly the labelled pods.
    pub async fn wait_healthy(&self, n: i32, limit: Duration) -> String {
        let what = format!("{}/{} healthy with {n} instances", self.ns, self.name);
        wait_until(limit, &what, || async {
            let Some(s) = self.cluster().await.status else {
                return false;
            };
            let Some(primary) = s.current_primary.clone() else {
                return false;
            };
            if s.ready_instances != n || s.instances != n {
                return false;
            }
            let rw = self.endpoints(&format!("{}-rw", self.name)).await;
            let ro = self.endpoints(&format!("{}-ro", self.name)).await;
            rw == BTreeSet::from([primary.clone()])
                && ro.len() as i32 == n - 1
                && !ro.contains(&primary)
        })
        .await;
        self.primary().await.expect("primary")
    }

    /// Connect as the app user through a Service IP.
    pub async fn connect_service(
        &self,
        service: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let ip = self.service_ip(&format!("{}-{service}", self.name)).await;
        let pw = self.secret(&format!("{}-app", self.name), "password").await;
        connect_retry(&ip, "app", &pw, "app", Duration::from_secs(30)).await
    }

    /// Connect as the superuser to one pod.
    pub async fn connect_pod(
        &self,
        pod: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let ip = self.pod_ip(pod).await;
        let pw = self
            .secret(&format!("{}-superuser", self.name), "password")
            .await;
        connect(&ip, "postgres", &pw, "postgres").await
    }

    /// Host PIDs of the pod's container processes found by their environment: the agent (the
    /// container's PID 1: when it dies the kernel kills the rest of the container) and the
    /// softdog. PostgreSQL's processes may not be among them: they overwrite their environment
    /// with the process title.
    pub fn pod_pids(&self, pod: &str) -> Vec<i32> {
        pids_with_env(&[("POD_NAMESPACE", &self.ns), ("POD_NAME", pod)])
    }

    /// Host PID of the pod's agent.
    pub fn agent_pid(&self, pod: &str) -> Option<i32> {
        self.pod_pids(pod).into_iter().find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                    args.len() >= 2 && args[0].ends_with(b"pgwarden") && args[1] == b"agent"
                })
                .unwrap_or(false)
        })
    }

    /// Delete the cluster and wait for it, then its namespace (if this handle created it).
    pub async fn delete(self) {
        if std::env::var(KEEP).is_ok() {
            return;
        }
        let _ = kubectl(
            &[
                "-n",
                &self.ns,
                "delete",
                "postgrescluster",
                &self.name,
                "--wait=true",
                "--timeout=120s",
            ],
            None,
        );
        if let Some(namespace) = self.namespace {
            namespace.delete_and_wait("180s");
        }
    }
}

/// A writer through the `-rw` Service: inserts increasing ids every 10 ms, reconnecting after
/// errors, and remembers every id whose commit was acknowledged (and when), and every error (when,
/// and what the server or the client said: `postgres::message`).
pub struct Writer {
    pub acked: std::sync::Arc<std::sync::Mutex<Vec<i64>>>,
    pub acked_at: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
    pub errors: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    pub async fn start(pg: &Pg, table: &str) -> Writer {
        let ip = pg.service_ip(&format!("{}-rw", pg.name)).await;
        let pw = pg.secret(&format!("{}-app", pg.name), "password").await;
        let c = connect_retry(&ip, "app", &pw, "app", Duration::from_secs(30))
            .await
            .expect("connect through -rw");
        c.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id bigint PRIMARY KEY)"
        ))
        .await
        .expect("create table");
        let acked = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let acked_at = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let errors = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, at, e, s, table) = (
            acked.clone(),
            acked_at.clone(),
            errors.clone(),
            stop.clone(),
            table.to_string(),
        );
        let task = tokio::spawn(async move {
            let mut client: Option<tokio_postgres::Client> = Some(c);
            let mut id = 0i64;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                if client.is_none() {
                    // A deadline on the whole connect, as libpq's connect_timeout (2) has:
                    // tokio-postgres times only the TCP connect, and a frozen server's kernel
                    // still completes that handshake, then nothing answers the startup packet.
                    client = match tokio::time::timeout(
                        Duration::from_secs(2),
                        connect(&ip, "app", &pw, "app"),
                    )
                    .await
                    {
                        Ok(Ok(c)) => Some(c),
                        Ok(Err(err)) => {
                            e.lock().unwrap().push((Instant::now(), message(&err)));
                            None
                        }
                        Err(_) => {
                            e.lock()
                                .unwrap()
                                .push((Instant::now(), "connect: no answer in 2 s".into()));
                            None
                        }
                    };
                }
                if let Some(c) = &client {
                    id += 1;
                    let r = tokio::time::timeout(
                        Duration::from_secs(3),
                        c.execute(&format!("INSERT INTO {table} VALUES ($1)"), &[&id]),
                    )
                    .await;
                    match r {
                        Ok(Ok(_)) => {
                            a.lock().unwrap().push(id);
                            at.lock().unwrap().push(Instant::now());
                        }
                        Ok(Err(err)) => {
                            e.lock().unwrap().push((Instant::now(), message(&err)));
                            client = None;
                        }
                        Err(_) => {
                            e.lock()
                                .unwrap()
                                .push((Instant::now(), "no answer in 3 s".into()));
                            client = None;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Writer {
            acked,
            acked_at,
            errors,
            stop,
            task,
        }
    }

    pub fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    pub async fn stop(self) -> Vec<i64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.task.await;
        self.acked.lock().unwrap().clone()
    }
}

/// kill -9 every process of the pod, again and again for `period`: a pod whose processes die
/// as soon as they start (a failing node), so its Lease runs out and a replica takes over.
pub async fn kill_pod_processes_for(pg: &Pg, pod: &str, period: Duration) -> usize {
    let start = Instant::now();
    let mut killed = 0;
    while start.elapsed() < period {
        for pid in pg.pod_pids(pod) {
            signal(pid, libc::SIGKILL);
            killed += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    killed
}

/// When the sampled writable pod changed, and to which (none: no pod accepted writes).
pub type WritableChange = (Duration, Option<String>);

/// Samples every pod's `pg_is_in_recovery()` in rounds (all pods at once, every ~100 ms) and
/// remembers every round in which more than one pod accepted writes.
pub struct WritableSampler {
    pub rounds: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub violations: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// (time since start, pod) of each round's writable pod, when it changes.
    pub changes: std::sync::Arc<std::sync::Mutex<Vec<WritableChange>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl WritableSampler {
    pub async fn start(pg: &Pg) -> WritableSampler {
        let mut targets = vec![];
        for p in pg.pods().await {
            let name = p.metadata.name.clone().unwrap();
            targets.push((name.clone(), pg.pod_ip(&name).await));
        }
        let pw = pg
            .secret(&format!("{}-superuser", pg.name), "password")
            .await;
        let rounds = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let violations = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let changes = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, v, c, s) = (
            rounds.clone(),
            violations.clone(),
            changes.clone(),
            stop.clone(),
        );
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut clients: Vec<Option<tokio_postgres::Client>> =
                targets.iter().map(|_| None).collect();
            let mut last: Option<Option<String>> = None;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let mut writable = vec![];
                for (i, (name, ip)) in targets.iter().enumerate() {
                    if clients[i].as_ref().is_none_or(|c| c.is_closed()) {
                        clients[i] = tokio::time::timeout(
                            Duration::from_millis(500),
                            connect(ip, "postgres", &pw, "postgres"),
                        )
                        .await
                        .ok()
                        .and_then(Result::ok);
                    }
                    let Some(client) = &clients[i] else { continue };
                    let answer = tokio::time::timeout(
                        Duration::from_millis(500),
                        client.query_one("SELECT pg_is_in_recovery()", &[]),
                    )
                    .await;
                    match answer {
                        Ok(Ok(row)) => {
                            if !row.get::<_, bool>(0) {
                                writable.push(name.clone());
                            }
                        }
                        _ => clients[i] = None,
                    }
                }
                r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if writable.len() > 1 {
                    v.lock()
                        .unwrap()
                        .push(format!("{:?}: {writable:?}", start.elapsed()));
                }
                let now = writable.first().cloned();
                if last.as_ref() != Some(&now) {
                    c.lock().unwrap().push((start.elapsed(), now.clone()));
                    last = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        WritableSampler {
            rounds,
            violations,
            changes,
            stop,
            task,
        }
    }

    pub async fn stop(self) -> (usize, Vec<String>, Vec<WritableChange>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.task.await;
        (
            self.rounds.load(std::sync::atomic::Ordering::Relaxed),
            self.violations.lock().unwrap().clone(),
            self.changes.lock().unwrap().clone(),
        )
    }
}

/// Helpers for the `kubectl pgwarden` scenarios (tests/e2e_cli.rs).
impl Pg {
    /// `holderIdentity` of the Lease `<c>-leader` (`None` when empty or absent).
    pub async fn lease_holder(&self) -> Option<String> {
        k8s::lease_holder(&self.client, &self.ns, &self.name).await
    }

    /// A key of the ConfigMap `<c>-state`.
    pub async fn state_key(&self, key: &str) -> Option<String> {
        use k8s_openapi::api::core::v1::ConfigMap;
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.ns)
            .get_opt(&format!("{}-state", self.name))
            .await
            .ok()
            .flatten()
            .and_then(|c| c.data)
            .and_then(|d| d.get(key).cloned())
    }

    /// Wait until the `sync` key names a synchronous standby of the current primary, and return
    /// it. In synchronous mode only a member the key names may be promoted: until one is
    /// published (a few loops after the replicas first stream), a failed primary is not
    /// replaced, so a scenario that kills one must wait for this first.
    pub async fn wait_synchronous_standby(&self, limit: Duration) -> String {
        let what = format!("{}/{}: a published synchronous standby", self.ns, self.name);
        wait_until(limit, &what, || async {
            self.synchronous_standby().await.is_some()
        })
        .await;
        self.synchronous_standby().await.expect("published")
    }

    /// The first standby of the `sync` key when the key's leader is the current primary.
    async fn synchronous_standby(&self) -> Option<String> {
        let primary = self.primary().await?;
        let key: SyncState = serde_json::from_str(&self.state_key("sync").await?).ok()?;
        if key.leader? != primary {
            return None;
        }
        key.sync_standby.into_iter().next()
    }

    /// The member status annotation of a pod (raw JSON), if it has one.
    pub async fn member_status(&self, pod: &str) -> Option<Value> {
        let p = Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .get_opt(pod)
            .await
            .ok()
            .flatten()?;
        let raw = p.metadata.annotations?.get("pgwarden.io/status")?.clone();
        serde_json::from_str(&raw).ok()
    }

    /// Host PID of the pod's postmaster: the pod's process whose program is `.../postgres` and
    /// whose parent is the agent (the postgres backends are the postmaster's children).
    pub fn postmaster_pid(&self, pod: &str) -> Option<i32> {
        let agent = self.agent_pid(pod)?;
        self.pod_pids(pod).into_iter().find(|pid| {
            let is_postgres = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let prog = c.split(|b| *b == 0).next().unwrap_or_default();
                    prog == b"postgres" || prog.ends_with(b"/postgres")
                })
                .unwrap_or(false);
            is_postgres && parent_pid(*pid) == Some(agent)
        })
    }
}
