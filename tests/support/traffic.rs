//! What the control-plane scenarios measure from outside (integration tier): a `Writer` that
//! inserts increasing ids into the primary and records every acknowledged one and every error,
//! and a `Prober` that asks every member directly, ten times a second, whether it accepts writes,
//! beside the role label its pod carries.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use super::agents::{Cluster, connect};

/// One write that did not succeed: when, and what the client saw.
#[derive(Debug, Clone)]
pub struct WriteError {
    pub at: Instant,
    pub error: String,
}

pub struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Vec<i64>, Vec<WriteError>)>,
}

impl Writer {
    /// Insert 1, 2, 3, … into `table` (created here) on the member at `ip`, every `period`, each
    /// write given one second; reconnect after an error.
    pub async fn start(ip: &str, table: &str, period: Duration) -> Writer {
        let client = connect(ip).await.expect("connect to the primary");
        client
            .batch_execute(&format!("CREATE TABLE {table} (id bigint PRIMARY KEY)"))
            .await
            .expect("create the writer's table");
        let stop = Arc::new(AtomicBool::new(false));
        let (ip, table, flag) = (ip.to_string(), table.to_string(), stop.clone());
        let task = tokio::spawn(async move {
            let (mut acked, mut errors) = (vec![], vec![]);
            let mut client = Some(client);
            let mut id = 0i64;
            while !flag.load(Ordering::SeqCst) {
                id += 1;
                let outcome = match &client {
                    Some(c) => tokio::time::timeout(
                        Duration::from_secs(1),
                        c.execute(&format!("INSERT INTO {table} VALUES ($1)"), &[&id]),
                    )
                    .await
                    .map_err(|_| NO_ANSWER.to_string())
                    .and_then(|r| r.map_err(|e| super::postgres::message(&e))),
                    None => Err("not connected".into()),
                };
                match outcome {
                    Ok(_) => acked.push(id),
                    Err(error) => {
                        errors.push(WriteError {
                            at: Instant::now(),
                            error,
                        });
                        client = match tokio::time::timeout(Duration::from_secs(1), connect(&ip))
                            .await
                        {
                            Ok(Ok(c)) => Some(c),
                            Ok(Err(e)) => {
                                errors.push(WriteError {
                                    at: Instant::now(),
                                    error: format!("connect: {e}"),
                                });
                                None
                            }
                            Err(_) => None,
                        };
                    }
                }
                tokio::time::sleep(period).await;
            }
            (acked, errors)
        });
        Writer { stop, task }
    }

    /// Stop writing; every acknowledged id and every error.
    pub async fn stop(self) -> (Vec<i64>, Vec<WriteError>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the writer")
    }
}

/// What the client saw when a write got no answer in time (the write, or the reconnect after
/// it): the member was slow, not refusing.
pub const NO_ANSWER: &str = "no answer within 1 s";

/// The errors that were refusals (a read-only transaction, a closed connection, a refused
/// connect): everything but slow answers. A loaded machine (a kube-apiserver starting on two
/// cores) can hold a commit past the writer's second without anything having gone wrong, while a
/// demoted or stopped primary refuses.
pub fn refused(errors: &[WriteError]) -> Vec<&WriteError> {
    errors
        .iter()
        .filter(|e| e.error != NO_ANSWER && e.error != "not connected")
        .collect()
}

/// Ids in `acked` that `table` on the member at `ip` does not hold.
pub async fn lost_writes(ip: &str, table: &str, acked: &[i64]) -> Vec<i64> {
    let client = connect(ip).await.expect("connect to read back");
    let rows = client
        .query(&format!("SELECT id FROM {table}"), &[])
        .await
        .expect("read the writer's table");
    let have: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    acked
        .iter()
        .copied()
        .filter(|id| !have.contains(id))
        .collect()
}

/// What one member said when probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Accepts connections and is not in recovery.
    Writable,
    /// Accepts connections, in recovery: a read-only answer.
    ReadOnly,
    /// No connection within the probe's time.
    Down,
}

/// One round of probes: each member's answer and its pod's role label (the last one read: labels
/// cannot change while the apiserver is away).
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub answers: Vec<Answer>,
    pub labels: Vec<Option<String>>,
}

pub struct Prober {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

/// Ask one member over `client` (connected first if need be, and dropped when it fails).
async fn answer(ip: &str, client: &mut Option<tokio_postgres::Client>) -> Answer {
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        *client = match tokio::time::timeout(Duration::from_millis(500), connect(ip)).await {
            Ok(Ok(c)) => Some(c),
            _ => None,
        };
    }
    ask(client).await
}

/// Ask over `client` whether its member accepts writes (the client is dropped when it fails).
pub async fn ask(client: &mut Option<tokio_postgres::Client>) -> Answer {
    let Some(c) = client.as_ref() else {
        return Answer::Down;
    };
    match tokio::time::timeout(
        Duration::from_millis(500),
        c.query_one("SELECT pg_is_in_recovery()", &[]),
    )
    .await
    {
        Ok(Ok(row)) if row.get::<_, bool>(0) => Answer::ReadOnly,
        Ok(Ok(_)) => Answer::Writable,
        _ => {
            *client = None;
            Answer::Down
        }
    }
}

impl Prober {
    pub fn start(c: &Cluster) -> Prober {
        let ips: Vec<String> = c.members.iter().map(|m| m.ip.clone()).collect();
        let names: Vec<String> = c.members.iter().map(|m| m.name.clone()).collect();
        let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.ns);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = vec![];
            let mut labels: Vec<Option<String>> = vec![None; names.len()];
            let mut clients: Vec<Option<tokio_postgres::Client>> =
                ips.iter().map(|_| None).collect();
            while !flag.load(Ordering::SeqCst) {
                let at = Instant::now();
                let answers = futures::future::join_all(
                    ips.iter()
                        .zip(clients.iter_mut())
                        .map(|(ip, client)| answer(ip.as_str(), client)),
                )
                .await;
                let listed = tokio::time::timeout(
                    Duration::from_millis(300),
                    pods.list(&Default::default()),
                )
                .await;
                if let Ok(Ok(list)) = listed {
                    for pod in list {
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        if let Some(i) = names.iter().position(|n| *n == name) {
                            labels[i] = pod
                                .metadata
                                .labels
                                .as_ref()
                                .and_then(|l| l.get("pgwarden.io/role"))
                                .cloned();
                        }
                    }
                }
                samples.push(Sample {
                    at,
                    answers,
                    labels: labels.clone(),
                });
                tokio::time::sleep(Duration::from_millis(100).saturating_sub(at.elapsed())).await;
            }
            samples
        });
        Prober { stop, task }
    }

    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the prober")
    }
}

/// Samples in which more than one member accepted writes.
pub fn two_writable(samples: &[Sample]) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| s.answers.iter().filter(|a| **a == Answer::Writable).count() > 1)
        .collect()
}

/// Fail the test when any sample saw two members writable at once.
pub fn assert_never_two_writable(samples: &[Sample]) {
    let two = two_writable(samples);
    assert!(
        two.is_empty(),
        "{} samples saw two writable members, first: {:?}",
        two.len(),
        two.first()
    );
}

/// Samples in which a member labelled primary (what `-rw` routes to) answered read-only.
pub fn read_only_behind_rw(samples: &[Sample]) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| {
            s.answers
                .iter()
                .zip(&s.labels)
                .any(|(a, l)| *a == Answer::ReadOnly && l.as_deref() == Some("primary"))
        })
        .collect()
}
