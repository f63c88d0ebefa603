//! The three-node tier's harness (tests/nodes.rs, on `e2e/cluster up --nodes 3`): which node a
//! pod runs on, node faults through `e2e/cluster node ...`, and a prober that asks every member
//! whether it accepts writes from inside the member's node network namespace, so that a node cut
//! off from the host (a partition) is still observed: a socket keeps the namespace it was made
//! in, so the connect runs on a blocking thread that enters the node's namespace and comes back.

#![allow(dead_code)]

use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::cluster::Pg;
use super::traffic::{Answer, Sample};

/// `e2e/cluster node ACTION NODE`; panics with its output when it fails.
pub fn node(action: &str, node: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/cluster");
    let out = std::process::Command::new(script)
        .args(["node", action, node])
        .output()
        .expect("run e2e/cluster");
    assert!(
        out.status.success(),
        "e2e/cluster node {action} {node}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    super::wait::log(format!("node {action} {node}"));
}

/// Wait until every node is Ready, schedulable and untainted: after a fault the node controller
/// keeps its `unreachable`/`not-ready` taints a while after the kubelet is back, and a cluster
/// created meanwhile gets two instances on one node (the anti-affinity is only preferred).
pub async fn wait_nodes_schedulable(limit: Duration) {
    use k8s_openapi::api::core::v1::Node;
    let client = kube::Client::try_default()
        .await
        .expect("KUBECONFIG names the test bed");
    let nodes = kube::Api::<Node>::all(client);
    super::wait::wait_until(
        limit,
        "every node Ready, schedulable and untainted",
        || async {
            let Ok(list) = nodes.list(&Default::default()).await else {
                return false;
            };
            !list.items.is_empty()
                && list.items.iter().all(|n| {
                    let spec = n.spec.clone().unwrap_or_default();
                    let ready = n
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    ready
                        && spec.unschedulable != Some(true)
                        && spec.taints.unwrap_or_default().is_empty()
                })
        },
    )
    .await;
}

impl Pg {
    /// The node pod `pod` is scheduled to.
    pub async fn node_of(&self, pod: &str) -> String {
        self.pods()
            .await
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some(pod))
            .and_then(|p| p.spec?.node_name)
            .unwrap_or_else(|| panic!("pod {pod} is not scheduled"))
    }
}

fn setns(file: &File) -> std::io::Result<()> {
    // SAFETY: setns on a namespace file descriptor we own; it changes only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A TCP connection to `addr` made inside network namespace `netns` (`/run/netns/NAME`).
fn connect_in(netns: &str, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let target = File::open(format!("/run/netns/{netns}"))?;
    let home = File::open("/proc/thread-self/ns/net")?;
    setns(&target)?;
    let stream = TcpStream::connect_timeout(&addr, timeout);
    // A blocking-pool thread left in the node's namespace would make every later connection of
    // the test there: fail loudly instead.
    setns(&home).expect("return to the host's network namespace");
    stream
}

/// A PostgreSQL connection to `ip`:5432 from inside node `netns`.
pub async fn connect_in_node(
    netns: &str,
    ip: &str,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, String> {
    let addr = SocketAddr::new(ip.parse::<IpAddr>().map_err(|e| e.to_string())?, 5432);
    let ns = netns.to_string();
    let stream =
        tokio::task::spawn_blocking(move || connect_in(&ns, addr, Duration::from_millis(500)))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    let stream = tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())?;
    let mut cfg = tokio_postgres::Config::new();
    cfg.user(user).password(password).dbname("postgres");
    let (client, conn) = tokio::time::timeout(
        Duration::from_millis(500),
        cfg.connect_raw(stream, tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| "no answer within 500 ms".to_string())?
    .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Asks every member, ten times a second, whether it accepts writes, each from inside its own
/// node's network namespace; the samples work with `traffic::two_writable`. Labels are not read
/// (the role label is the operator's and the agents' business, checked elsewhere).
pub struct NodeProber {
    pub names: Vec<String>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl NodeProber {
    pub async fn start(pg: &Pg) -> NodeProber {
        let mut targets = vec![];
        for p in pg.pods().await {
            let name = p.metadata.name.clone().unwrap();
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .expect("scheduled pod");
            targets.push((name.clone(), node, pg.pod_ip(&name).await));
        }
        let pw = pg
            .secret(&format!("{}-superuser", pg.name), "password")
            .await;
        let names = targets.iter().map(|t| t.0.clone()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = vec![];
            let mut clients: Vec<Option<tokio_postgres::Client>> =
                targets.iter().map(|_| None).collect();
            while !flag.load(Ordering::SeqCst) {
                let at = Instant::now();
                let answers = futures::future::join_all(
                    targets
                        .iter()
                        .zip(clients.iter_mut())
                        .map(|((_, node, ip), client)| answer(node, ip, &pw, client)),
                )
                .await;
                samples.push(Sample {
                    at,
                    labels: vec![None; answers.len()],
                    answers,
                });
                tokio::time::sleep(Duration::from_millis(100).saturating_sub(at.elapsed())).await;
            }
            samples
        });
        NodeProber { names, stop, task }
    }

    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the prober")
    }
}

async fn answer(
    node: &str,
    ip: &str,
    pw: &str,
    client: &mut Option<tokio_postgres::Client>,
) -> Answer {
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        *client = connect_in_node(node, ip, "postgres", pw).await.ok();
    }
    super::traffic::ask(client).await
}

/// The longest time between two acknowledged writes (the write downtime a client saw).
pub fn longest_gap(acked_at: &[Instant]) -> Duration {
    acked_at
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// The longest gap between acknowledged writes as (start, end), and the writer's errors inside
/// it, each as (seconds after `t0`, message): what a client saw while writes were down.
pub fn describe_gap(acked_at: &[Instant], errors: &[(Instant, String)], t0: Instant) -> String {
    let Some(w) = acked_at.windows(2).max_by_key(|w| w[1] - w[0]) else {
        return "no gap".into();
    };
    let rel = |t: Instant| t.saturating_duration_since(t0).as_secs_f64();
    let inside: Vec<String> = errors
        .iter()
        .filter(|(at, _)| *at >= w[0] && *at <= w[1])
        .map(|(at, e)| format!("{:.2}s {e}", rel(*at)))
        .collect();
    // The first and the last few: how it began, and what held it up at the end.
    let seen: Vec<&String> = if inside.len() <= 8 {
        inside.iter().collect()
    } else {
        inside[..4]
            .iter()
            .chain(&inside[inside.len() - 4..])
            .collect()
    };
    format!(
        "writes stopped {:.2}s..{:.2}s after the fault; errors: {seen:?}",
        rel(w[0]),
        rel(w[1])
    )
}
