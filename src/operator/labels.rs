//! The label updater: polls every pod's `/primary` and `/replica` and keeps `pgwarden.io/role`
//! right, so the `-rw` and `-ro` Services route to the right pods (HAProxy's job in the seed).
//! A pod is labelled primary only if it answers 200 on `/primary` AND holds the Lease, read fresh
//! each round (a watch cache may predate an apiserver restart); a pod that does not answer loses
//! its label before a new one is set; a former primary that answers but refuses every client (a
//! primary handing over) keeps its label until the new primary has one, so `-rw` is not left
//! empty (see `plan`); without a fresh Lease nothing changes. The agents label themselves on
//! promotion and demotion by the same rule (fast path).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use tracing::{debug, info, warn};

use super::metrics::{MemberProbe, Metrics};
use crate::api::member::{MemberState, MemberStatus, role_label};
use crate::api::names::{ANNOTATION_STATUS, LABEL_CLUSTER, LABEL_ROLE, ROLE_PRIMARY};
use crate::api::patroni::paths;
use crate::common::agent_client::AgentClient;
use crate::common::throttle::Throttle;

/// What one round of probing found for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub pod: String,
    /// `Some(true)` 200, `Some(false)` another answer, `None` no answer.
    pub primary: Option<bool>,
    pub replica: Option<bool>,
    /// The role label it has now.
    pub current: Option<String>,
}

impl Probe {
    /// Whether its agent answered this round at all (on either path).
    pub fn answered(&self) -> bool {
        self.primary.is_some() || self.replica.is_some()
    }
}

/// The label changes for one cluster, in the order to apply them. `-rw` may list only the
/// primary or pods that refuse every client, and should never be empty while a primary is
/// there to list (kube-proxy's switch from "no endpoints" to an endpoint makes a client that
/// connects meanwhile hang until its connect timeout):
/// 1. the `primary` label of a pod that did not answer goes first (clients sent there would
///    wait for nothing), and so does every other change that does not set `primary`, and the
///    `primary` label of a pod that serves reads (a read-only answer must never come from `-rw`);
/// 2. then the new primary's label;
/// 3. then the `primary` label of a pod that answered but neither as primary nor as a replica
///    (a primary handing over, stopping or fenced: it refuses every client). While no pod
///    qualifies as primary that label stays: the agent handing over takes it off itself once
///    its successor is labelled, or after ttl.
pub fn plan(probes: &[Probe], holder: Option<&str>) -> Vec<(String, Option<&'static str>)> {
    let wanted: Vec<Option<&'static str>> = probes
        .iter()
        // The rule the agents follow for their own pods too.
        .map(|p| {
            role_label(
                p.primary == Some(true),
                holder == Some(p.pod.as_str()),
                p.replica == Some(true),
            )
        })
        .collect();
    let a_primary = wanted.contains(&Some(ROLE_PRIMARY));
    let mut first = vec![];
    let mut new_primary = vec![];
    let mut last = vec![];
    for (p, want) in probes.iter().zip(wanted) {
        if p.current.as_deref() == want {
            continue;
        }
        let refuses_clients = p.answered() && p.replica != Some(true);
        if want == Some(ROLE_PRIMARY) {
            new_primary.push((p.pod.clone(), want));
        } else if p.current.as_deref() == Some(ROLE_PRIMARY) && refuses_clients {
            if a_primary {
                last.push((p.pod.clone(), want));
            }
        } else {
            first.push((p.pod.clone(), want));
        }
    }
    first.extend(new_primary);
    first.extend(last);
    first
}

/// Drop the changes that would take a label from the pod a Lease read after the probes names
/// holder, when that pod answered them: the holder's agent labels itself (on promotion, before
/// its REST view follows), so what this round saw of it may be older than its label; the next
/// round sees it answer as primary. A holder that did not answer still loses its label.
pub fn spare_the_holder(
    changes: Vec<(String, Option<&'static str>)>,
    probes: &[Probe],
    holder_after: Option<&str>,
) -> Vec<(String, Option<&'static str>)> {
    changes
        .into_iter()
        .filter(|(pod, want)| {
            let answered = probes.iter().any(|p| p.pod == *pod && p.answered());
            !(*want != Some(ROLE_PRIMARY) && holder_after == Some(pod.as_str()) && answered)
        })
        .collect()
}

/// Whether the member status the agent last published on its pod says PostgreSQL is running.
fn postgres_running(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_STATUS))
        .and_then(|s| MemberStatus::parse(s).ok())
        .is_some_and(|s| s.state == MemberState::Running)
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .pod_ip
        .clone()
        .filter(|ip| !ip.is_empty())
}

async fn probe(agents: &AgentClient, pod: &Pod) -> Probe {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let current = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_ROLE))
        .cloned();
    let (primary, replica) = match pod_ip(pod) {
        Some(ip) if pod.metadata.deletion_timestamp.is_none() => {
            let (p, r) = tokio::join!(
                agents.probe(&ip, paths::PRIMARY),
                agents.probe(&ip, paths::REPLICA)
            );
            (p.map(|c| c == 200), r.map(|c| c == 200))
        }
        _ => (None, None),
    };
    Probe {
        pod: name,
        primary,
        replica,
        current,
    }
}

/// The holder of a cluster's leader Lease, read fresh from the apiserver: a cache may predate an
/// apiserver restart and name a member that lost the Lease since. `Err` when it cannot be read.
async fn holder(client: &Client, ns: &str, cluster: &str) -> Result<Option<String>, kube::Error> {
    let name = crate::api::names::ObjectNames::new(cluster).lease();
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let lease = tokio::time::timeout(LEASE_READ_TIMEOUT, leases.get_opt(&name))
        .await
        .map_err(|_| {
            kube::Error::Service(
                format!("reading Lease {ns}/{name} took more than {LEASE_READ_TIMEOUT:?}").into(),
            )
        })??;
    Ok(lease
        .and_then(|l| l.spec.and_then(|s| s.holder_identity))
        .filter(|h| !h.is_empty()))
}

/// How long one fresh Lease read may take before the round leaves that cluster's labels alone.
const LEASE_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Probe and relabel every cluster's pods once.
pub async fn round(
    client: &Client,
    pods: &Store<Pod>,
    agents: &AgentClient,
    metrics: &Metrics,
    lease_errors: &mut Throttle,
) {
    // (namespace, cluster) → pods
    let mut clusters: BTreeMap<(String, String), Vec<Arc<Pod>>> = BTreeMap::new();
    for pod in pods.state() {
        let (Some(ns), Some(cluster)) = (
            pod.metadata.namespace.clone(),
            pod.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_CLUSTER))
                .cloned(),
        ) else {
            continue;
        };
        clusters.entry((ns, cluster)).or_default().push(pod);
    }
    let mut seen = vec![];
    let mut failed = None;
    for ((ns, cluster), members) in clusters {
        // Read before probing: a member answering 200 on /primary after this read held the
        // Lease at least as late as this read says.
        let holder = holder(client, &ns, &cluster).await;
        let probes = join_all(members.iter().map(|p| probe(agents, p))).await;
        for (pod, p) in members.iter().zip(&probes) {
            metrics.label_probe(p.primary.is_some());
            let up = p.answered();
            seen.push(MemberProbe {
                namespace: ns.clone(),
                cluster: cluster.clone(),
                member: p.pod.clone(),
                up,
                running: up && postgres_running(pod),
            });
        }
        let holder = match holder {
            Ok(h) => h,
            Err(e) => {
                // Without a fresh Lease no label changes: not a primary label set on an old
                // view, and not a holder's label taken away.
                failed = Some((ns.clone(), cluster.clone(), e));
                continue;
            }
        };
        let mut changes = plan(&probes, holder.as_deref());
        if !changes.is_empty() {
            // Read again after the probes: see spare_the_holder.
            match self::holder(client, &ns, &cluster).await {
                Ok(after) => changes = spare_the_holder(changes, &probes, after.as_deref()),
                Err(e) => {
                    failed = Some((ns.clone(), cluster.clone(), e));
                    continue;
                }
            }
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        for (pod, role) in changes {
            let seen = probes.iter().find(|p| p.pod == pod);
            let (answered_primary, answered_replica) =
                seen.map_or((None, None), |p| (p.primary, p.replica));
            let patch = serde_json::json!({"metadata": {"labels": {LABEL_ROLE: role}}});
            match api
                .patch(&pod, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    info!(namespace = %ns, cluster = %cluster, member = %pod, role = ?role, holder = ?holder, ?answered_primary, ?answered_replica, "role label updated");
                    metrics.label_change();
                }
                Err(e) => {
                    // The old primary's label must be gone before a new one goes on: stop here.
                    warn!(namespace = %ns, cluster = %cluster, member = %pod, error = %e, "cannot update the role label");
                    break;
                }
            }
        }
        debug!(namespace = %ns, cluster = %cluster, holder = ?holder, "label round done");
    }
    metrics.member_probes(seen);
    match failed {
        Some((ns, cluster, e)) => {
            if let Some(n) = lease_errors.hit(std::time::Instant::now()) {
                warn!(namespace = %ns, cluster = %cluster, error = %e, failures = n, "cannot read the leader Lease; leaving role labels as they are");
            }
        }
        None => lease_errors.reset(),
    }
}

/// Run rounds every `period` until the task is dropped.
pub async fn run(client: Client, pods: Store<Pod>, metrics: Arc<Metrics>, period: Duration) {
    let agents = AgentClient::new(Duration::from_millis(800));
    let mut lease_errors = Throttle::new(Duration::from_secs(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        round(&client, &pods, &agents, &metrics, &mut lease_errors).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pod: &str, primary: Option<bool>, replica: Option<bool>, current: Option<&str>) -> Probe {
        Probe {
            pod: pod.into(),
            primary,
            replica,
            current: current.map(str::to_string),
        }
    }

    #[test]
    fn the_old_primary_label_goes_before_the_new_one_comes() {
        let probes = [
            p("c-1", Some(true), Some(false), Some("replica")),
            p("c-0", Some(false), Some(true), Some("primary")),
        ];
        let changes = plan(&probes, Some("c-1"));
        assert_eq!(
            changes,
            [
                ("c-0".to_string(), Some("replica")),
                ("c-1".to_string(), Some("primary"))
            ]
        );
    }

    #[test]
    fn primary_needs_both_the_answer_and_the_lease() {
        let probes = [p("c-0", Some(true), Some(false), None)];
        assert_eq!(plan(&probes, Some("c-1")), []);
        assert_eq!(plan(&probes, None), []);
        assert_eq!(
            plan(&probes, Some("c-0")),
            [("c-0".to_string(), Some("primary"))]
        );
    }

    #[test]
    fn running_is_read_from_the_status_annotation() {
        let pod = |annotation: Option<&str>| -> Pod {
            let mut meta = serde_json::json!({"name": "c-0"});
            if let Some(a) = annotation {
                meta["annotations"] = serde_json::json!({ANNOTATION_STATUS: a});
            }
            serde_json::from_value(serde_json::json!({"metadata": meta})).unwrap()
        };
        let status = |state: &str| {
            format!(
                r#"{{"conn_url":"postgres://10.0.0.1:5432/postgres","api_url":"http://10.0.0.1:8008/patroni","state":"{state}","role":"replica","version":"0.1.0"}}"#
            )
        };
        assert!(postgres_running(&pod(Some(&status("running")))));
        assert!(!postgres_running(&pod(Some(&status("stopped")))));
        assert!(!postgres_running(&pod(Some("not json"))));
        assert!(!postgres_running(&pod(None)));
    }

    #[test]
    fn a_pod_that_does_not_answer_loses_its_label() {
        let probes = [
            p("c-0", None, None, Some("primary")),
            p("c-2", None, None, None),
        ];
        assert_eq!(plan(&probes, Some("c-0")), [("c-0".to_string(), None)]);
    }

    /// Seen in a drain: the new primary labelled itself between this round's probes (its REST
    /// view still said replica) and the patch; the label must stay.
    #[test]
    fn a_holder_that_labelled_itself_after_the_probes_keeps_its_label() {
        let probes = [
            p("c-2", Some(false), Some(true), Some("primary")),
            p("c-1", Some(false), Some(false), Some("replica")),
        ];
        let changes = plan(&probes, Some("c-1"));
        assert_eq!(
            spare_the_holder(changes.clone(), &probes, Some("c-2")),
            [("c-1".to_string(), None)]
        );
        // The Lease moved on meanwhile: the label goes; the new holder's label is its own.
        assert_eq!(
            spare_the_holder(changes.clone(), &probes, Some("c-1")),
            [("c-2".to_string(), Some("replica"))]
        );
        // A holder that does not answer loses it all the same.
        let silent = [p("c-2", None, None, Some("primary"))];
        let changes = plan(&silent, Some("c-2"));
        assert_eq!(
            spare_the_holder(changes.clone(), &silent, Some("c-2")),
            changes
        );
    }

    /// In a switchover the old primary keeps its label while it stops (it refuses every
    /// client): `-rw` is never empty. The new primary's label comes first, then the old goes.
    #[test]
    fn a_primary_handing_over_keeps_its_label_until_the_new_one_has_one() {
        let stopping = p("c-0", Some(false), Some(false), Some("primary"));
        let replica = p("c-1", Some(false), Some(true), Some("replica"));
        assert_eq!(plan(&[stopping.clone(), replica], None), []);
        let promoted = p("c-1", Some(true), Some(false), Some("replica"));
        assert_eq!(
            plan(&[stopping.clone(), promoted], Some("c-1")),
            [
                ("c-1".to_string(), Some("primary")),
                ("c-0".to_string(), None)
            ]
        );
        let labelled = p("c-1", Some(true), Some(false), Some("primary"));
        assert_eq!(
            plan(&[stopping, labelled], Some("c-1")),
            [("c-0".to_string(), None)]
        );
    }

    /// A former primary that does not answer (dead, frozen, cut off) would make `-rw` clients
    /// wait for nothing; one that serves reads must never be behind `-rw`: both go first.
    #[test]
    fn a_silent_or_read_serving_former_primary_loses_its_label_first() {
        let promoted = p("c-1", Some(true), Some(false), Some("replica"));
        for old in [
            p("c-0", None, None, Some("primary")),
            p("c-0", Some(false), Some(true), Some("primary")),
        ] {
            let want = if old.replica == Some(true) {
                Some("replica")
            } else {
                None
            };
            assert_eq!(
                plan(&[promoted.clone(), old.clone()], Some("c-1")),
                [
                    ("c-0".to_string(), want),
                    ("c-1".to_string(), Some("primary"))
                ]
            );
            assert_eq!(plan(&[old], None), [("c-0".to_string(), want)]);
        }
    }
}
