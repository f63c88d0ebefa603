//! Integration harness: a real kube-apiserver (`e2e/cluster up --control-plane`, KUBECONFIG set),
//! real PostgreSQL 15 from Debian, and agents as plain processes running as the `postgres` user,
//! each on its own loopback address 127.0.0.N (5432 and 8008). Each cluster lives in a fresh
//! namespace with the agents' real RBAC and a service-account token, and is torn down on drop.
//! Faults are real signals to real processes. The benchmark harness (tests/bench.rs) uses it too.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use serde_json::Value;

use super::k8s::{self, TempNamespace, kubectl_ok};
use super::process::{alive, signal};
use super::wait::retry;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
pub const SUPERUSER_PASSWORD: &str = "it-superuser-secret";
pub const TOKEN: &str = "it-api-token";

fn chown_postgres(path: &Path) {
    let st = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

pub struct Member {
    /// A kubeconfig of its own (e.g. through a proxy the test can cut).
    pub kubeconfig: Option<PathBuf>,
    pub name: String,
    pub ip: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
    pub extra: Vec<String>,
}

impl Member {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }
    pub fn agent_pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }
}

pub struct Cluster {
    pub ns: String,
    pub name: String,
    pub dir: PathBuf,
    pub members: Vec<Member>,
    pub client: Client,
    pub ttl: u64,
    kubeconfig: PathBuf,
    /// `ns`, deleted on drop after the agents are killed (`None` once deleted).
    namespace: Option<TempNamespace>,
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Cluster {
    /// A namespace with RBAC, a token kubeconfig, one bare Pod per member, and secret files.
    pub async fn new(tag: &str, n: usize) -> Self {
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let ns = format!("it-{tag}-{id}");
        let name = "pg".to_string();
        let dir = PathBuf::from(format!("/tmp/pgwarden-it/{ns}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let namespace = TempNamespace::create(&ns, None);
        // The agent's Role, as the operator will create it: its cluster's Lease, ConfigMap, pods.
        let rbac = format!(
            r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}-agent, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {name}-agent, namespace: {ns}}}
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, watch, create, update, patch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {name}-agent, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {name}-agent}}
subjects: [{{kind: ServiceAccount, name: {name}-agent, namespace: {ns}}}]
"#
        );
        kubectl_ok(&["apply", "-f", "-"], Some(&rbac));
        let token = kubectl_ok(
            &[
                "-n",
                &ns,
                "create",
                "token",
                &format!("{name}-agent"),
                "--duration",
                "24h",
            ],
            None,
        );
        let server = kubectl_ok(
            &[
                "config",
                "view",
                "--minify",
                "-o",
                "jsonpath={.clusters[0].cluster.server}",
            ],
            None,
        );
        let ca = kubectl_ok(
            &[
                "config",
                "view",
                "--minify",
                "--raw",
                "-o",
                "jsonpath={.clusters[0].cluster.certificate-authority}",
            ],
            None,
        );
        let ca_copy = dir.join("ca.crt");
        std::fs::copy(ca.trim(), &ca_copy).unwrap();
        let kubeconfig = dir.join("agent.kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: {server}, certificate-authority: {}}}\nusers:\n- name: u\n  user: {{token: {}}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u, namespace: {ns}}}\ncurrent-context: c\n",
                ca_copy.display(),
                token.trim()
            ),
        )
        .unwrap();
        std::fs::write(dir.join("superuser"), SUPERUSER_PASSWORD).unwrap();
        std::fs::write(dir.join("replication"), "it-replication-secret").unwrap();
        std::fs::write(dir.join("app"), "it-app-secret").unwrap();
        std::fs::write(dir.join("token"), TOKEN).unwrap();
        let mut members = Vec::new();
        for i in 0..n {
            let member = format!("{name}-{i}");
            let pod = format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {member}\n  namespace: {ns}\n  labels: {{pgwarden.io/cluster: {name}, app.kubernetes.io/name: pgwarden}}\nspec:\n  containers: [{{name: postgres, image: pgwarden.local/none:0}}]\n"
            );
            kubectl_ok(&["apply", "-f", "-"], Some(&pod));
            let mdir = dir.join(&member);
            std::fs::create_dir_all(mdir.join("data")).unwrap();
            members.push(Member {
                kubeconfig: None,
                name: member,
                ip: format!("127.0.0.{}", i + 1),
                dir: mdir,
                child: None,
                extra: vec![],
            });
        }
        chown_postgres(&dir);
        let config = kube::Config::infer().await.expect("KUBECONFIG");
        let client = Client::try_from(config).unwrap();
        Self {
            ns,
            name,
            dir,
            members,
            client,
            ttl: 8,
            kubeconfig,
            namespace: Some(namespace),
        }
    }

    /// Start member `i`'s agent as the postgres user.
    pub fn start(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))
            .unwrap();
        let exe = env!("CARGO_BIN_EXE_pgwarden");
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ])
        .arg(exe)
        .arg("agent")
        .args([
            "--namespace",
            &self.ns,
            "--name",
            &m.name,
            "--cluster",
            &self.name,
            "--address",
            &m.ip,
        ])
        .arg("--data-dir")
        .arg(m.data_dir())
        .arg("--run-dir")
        .arg(m.dir.join("run"))
        .args(["--bin-dir", PG_BIN])
        .arg("--kubeconfig")
        .arg(m.kubeconfig.as_ref().unwrap_or(&self.kubeconfig))
        .arg("--superuser-password-file")
        .arg(self.dir.join("superuser"))
        .arg("--replication-password-file")
        .arg(self.dir.join("replication"))
        .arg("--app-password-file")
        .arg(self.dir.join("app"))
        .arg("--api-token-file")
        .arg(self.dir.join("token"))
        .args(["--ttl", &self.ttl.to_string()])
        .args(&m.extra)
        .env_remove("KUBECONFIG")
        .env("PGWARDEN_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        let child = cmd.spawn().expect("start agent");
        self.members[i].child = Some(child);
    }

    pub fn start_all(&mut self) {
        for i in 0..self.members.len() {
            self.start(i);
        }
    }

    pub fn signal_agent(&self, i: usize, sig: i32) {
        if let Some(pid) = self.members[i].agent_pid() {
            signal(pid, sig);
        }
    }

    /// kill -9 the agent, its postmaster and every backend.
    pub fn kill9(&mut self, i: usize) {
        let pm = self.members[i].postmaster_pid();
        self.signal_agent(i, libc::SIGKILL);
        if let Some(pid) = pm {
            pgwarden::agent::softdog::kill_postmaster(pid);
        }
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.wait();
        }
    }

    /// Wait for the agent process to exit by itself.
    pub fn wait_exit(&mut self, i: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(c) = self.members[i].child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                self.members[i].child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub async fn lease(&self) -> Option<Lease> {
        k8s::lease(&self.client, &self.ns, &self.name).await
    }

    pub async fn holder(&self) -> Option<String> {
        k8s::lease_holder(&self.client, &self.ns, &self.name).await
    }

    pub async fn state(&self) -> ConfigMap {
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.ns)
            .get(&format!("{}-state", self.name))
            .await
            .expect("state ConfigMap")
    }

    pub fn index_of(&self, name: &str) -> usize {
        self.members
            .iter()
            .position(|m| m.name == name)
            .expect("member")
    }

    /// `(status, json)` of `method path` on member `i`'s REST API.
    pub fn http(
        &self,
        i: usize,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, String) {
        http(&self.members[i].ip, 8008, method, path, headers, body)
    }

    pub fn get_json(&self, i: usize, path: &str) -> (u16, Value) {
        let (code, body) = self.http(i, "GET", path, &[], None);
        (code, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// Members answering 200 on `path`.
    pub fn answering(&self, path: &str) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.http(i, "GET", path, &[], None).0 == 200)
            .collect()
    }

    /// Wait until exactly one member answers `/primary` and it holds the Lease.
    pub async fn wait_primary(&self, limit: Duration) -> usize {
        retry(limit, Duration::from_millis(200), || async {
            let p = self.answering("/primary");
            if p.len() == 1
                && self.holder().await.as_deref() == Some(self.members[p[0]].name.as_str())
            {
                Ok(p[0])
            } else {
                Err(p)
            }
        })
        .await
        .unwrap_or_else(|p| {
            panic!(
                "no single primary within {limit:?} (answering: {p:?}); logs in {}",
                self.dir.display()
            )
        })
    }

    pub async fn wait_until<F: Fn(&Cluster) -> bool>(&self, limit: Duration, what: &str, f: F) {
        retry(limit, Duration::from_millis(200), || async {
            if f(self) { Ok(()) } else { Err(()) }
        })
        .await
        .unwrap_or_else(|()| {
            panic!(
                "timed out after {limit:?} waiting for {what}; logs in {}",
                self.dir.display()
            )
        })
    }

    /// Wait until the agents published an Event with `reason` whose note contains `text`
    /// regarding this cluster's PostgresCluster.
    pub async fn wait_event(&self, reason: &str, text: &str) -> String {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), &self.ns);
        let found = retry(
            Duration::from_secs(90),
            Duration::from_millis(500),
            || async {
                api.list(&Default::default())
                    .await
                    .ok()
                    .and_then(|l| {
                        l.items.into_iter().find_map(|e| {
                            let regards = e.regarding.as_ref().is_some_and(|r| {
                                r.kind.as_deref() == Some("PostgresCluster")
                                    && r.name.as_deref() == Some(self.name.as_str())
                            });
                            let note = e.note.unwrap_or_default();
                            (regards && e.reason.as_deref() == Some(reason) && note.contains(text))
                                .then_some(note)
                        })
                    })
                    .ok_or(())
            },
        )
        .await;
        found.unwrap_or_else(|()| {
            panic!(
                "no Event {reason} saying '{text}'; logs in {}",
                self.dir.display()
            )
        })
    }

    /// Route member `i`'s apiserver traffic through a proxy the test can cut.
    pub async fn proxy_apiserver(&mut self, i: usize) -> Proxy {
        let text = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let server = text
            .lines()
            .find_map(|l| l.split("server: ").nth(1))
            .map(|s| s.split(',').next().unwrap().trim().to_string())
            .unwrap();
        let target = server.trim_start_matches("https://").to_string();
        let proxy = Proxy::start(&target).await;
        let path = self
            .dir
            .join(format!("{}.kubeconfig", self.members[i].name));
        std::fs::write(
            &path,
            text.replace(&server, &format!("https://127.0.0.1:{}", proxy.port)),
        )
        .unwrap();
        chown_postgres(&path);
        self.members[i].kubeconfig = Some(path);
        proxy
    }

    /// Route member `i`'s apiserver calls through an HTTP fault proxy (500s on demand).
    pub async fn fault_proxy_apiserver(&mut self, i: usize) -> super::fault_proxy::FaultProxy {
        let proxy = super::fault_proxy::FaultProxy::start().await;
        let path = self
            .dir
            .join(format!("{}.kubeconfig", self.members[i].name));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: '{}'}}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u, namespace: {}}}\ncurrent-context: c\n",
                proxy.server(),
                self.ns
            ),
        )
        .unwrap();
        chown_postgres(&path);
        self.members[i].kubeconfig = Some(path);
        proxy
    }

    pub async fn connect(&self, i: usize) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        connect(&self.members[i].ip).await
    }
}

/// Bootstrap three members, waiting up to `limit` for a primary and again for two streaming
/// replicas, and return the cluster and the primary's index.
pub async fn three(tag: &str, limit: Duration) -> (Cluster, usize) {
    let mut c = Cluster::new(tag, 3).await;
    c.start_all();
    let p = c.wait_primary(limit).await;
    c.wait_until(limit, "two streaming replicas", |c| {
        c.answering("/replica").len() == 2
    })
    .await;
    (c, p)
}

/// Like [`three`], in synchronous mode `mode` (`on` or `strict`), waiting also for a published
/// synchronous standby.
pub async fn three_synchronous(tag: &str, mode: &str, limit: Duration) -> (Cluster, usize) {
    let mut c = Cluster::new(tag, 3).await;
    for m in &mut c.members {
        m.extra = vec!["--synchronous-mode".into(), mode.into()];
    }
    c.start_all();
    let p = c.wait_primary(limit).await;
    c.wait_until(
        limit,
        "two streaming replicas and a published synchronous standby",
        |c| c.answering("/replica").len() == 2 && c.answering("/sync").len() == 1,
    )
    .await;
    (c, p)
}

/// The first column of each row, as `i32`.
pub fn rows_on(v: &[tokio_postgres::Row]) -> Vec<i32> {
    v.iter().map(|r| r.get(0)).collect()
}

/// Connect to member `ip` as the superuser.
pub async fn connect(ip: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    super::postgres::connect(ip, "postgres", SUPERUSER_PASSWORD, "postgres").await
}

/// A minimal HTTP/1.1 client: enough to probe the REST API like HAProxy or curl would.
pub fn http(
    ip: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().unwrap(),
        Duration::from_secs(2),
    ) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.signal_agent(i, libc::SIGCONT);
            self.kill9(i);
        }
        // Softdogs exit by themselves once their agent is gone; postmasters are killed above.
        drop(self.namespace.take());
        if std::env::var("PGWARDEN_IT_KEEP").is_err() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A TCP proxy in front of the apiserver. `cut()` turns it into a black hole: bytes in either
/// direction are swallowed and new connections are held without an upstream, as a partition
/// would; `heal()` lets new connections through again.
pub struct Proxy {
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    pub async fn start(target: &str) -> Proxy {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cut.clone();
        let target = target.to_string();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flag = flag.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    if flag.load(Ordering::SeqCst) {
                        // Held open, never answered.
                        let _keep = client;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    let Ok(upstream) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut ur, mut uw) = upstream.into_split();
                    let f1 = flag.clone();
                    let up = tokio::spawn(async move {
                        let mut buf = vec![0u8; 16384];
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            if !f1.load(Ordering::SeqCst) && uw.write_all(&buf[..n]).await.is_err()
                            {
                                break;
                            }
                        }
                    });
                    let mut buf = vec![0u8; 16384];
                    while let Ok(n) = ur.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if !flag.load(Ordering::SeqCst) && cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    up.abort();
                });
            }
        });
        Proxy { port, cut }
    }

    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
