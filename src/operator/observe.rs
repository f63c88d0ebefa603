//! Reconcile step 2, observe (needs the client): read what the cluster looks like now, its pods,
//! StatefulSet, leader Lease and state ConfigMap, into an [`Observed`] the pure steps decide from.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::ListParams;
use kube::{Api, Client};

use super::build::Cluster;
use super::controller::ReconcileError;
use crate::api::PostgresBackup;
use crate::api::names::LABEL_CLUSTER;
use crate::api::state::{BackupRequest, BackupResult, HistoryEntry, SyncState, keys};

/// What the operator read of one cluster.
#[derive(Debug, Default)]
pub struct Observed {
    /// Every pod of the cluster; terminating pods stay in view: they count as not ready, so no
    /// second pod goes down.
    pub pods: Vec<Pod>,
    /// The StatefulSet's replicas now (0 before it exists).
    pub replicas: i32,
    pub update_revision: Option<String>,
    pub lease_holder: Option<String>,
    /// The timeline history the agents keep in the state ConfigMap.
    pub history: Vec<HistoryEntry>,
    /// The `sync` key: the synchronous standbys the primary published.
    pub sync: SyncState,
    /// The nodes of the cluster's pods that are cordoned (`spec.unschedulable`).
    pub cordoned_nodes: BTreeSet<String>,
    /// The `backup` key: the latest backup request.
    pub backup_request: Option<BackupRequest>,
    /// The `backup-result` key: what the primary did with a request.
    pub backup_result: Option<BackupResult>,
    /// The `PostgresBackup` objects naming this cluster.
    pub backups: Vec<PostgresBackup>,
    /// The state ConfigMap records a system identifier (`initialize`): the cluster exists.
    pub initialized: bool,
    /// The Secrets `spec.backup` names: their keys, or `None` when missing.
    pub backup_secrets: BTreeMap<String, Option<Vec<String>>>,
}

/// Read the Secrets `names` (their keys only).
pub async fn secrets(
    client: &Client,
    ns: &str,
    names: &[&str],
) -> Result<BTreeMap<String, Option<Vec<String>>>, ReconcileError> {
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    let mut out = BTreeMap::new();
    for name in names {
        let s = api
            .get_opt(name)
            .await
            .map_err(failed("Secret", name.to_string()))?;
        out.insert(
            name.to_string(),
            s.map(|s| {
                let mut keys: Vec<String> = s.data.unwrap_or_default().into_keys().collect();
                keys.extend(s.string_data.unwrap_or_default().into_keys());
                keys
            }),
        );
    }
    Ok(out)
}

fn failed(kind: &'static str, name: String) -> impl FnOnce(kube::Error) -> ReconcileError {
    move |source| ReconcileError::Observe { kind, name, source }
}

pub async fn observe(client: &Client, c: &Cluster<'_>) -> Result<Observed, ReconcileError> {
    let ns = &c.namespace;
    let selector = format!("{LABEL_CLUSTER}={}", c.names.cluster());
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(failed("Pod", selector.clone()))?
        .items;
    let sts = Api::<StatefulSet>::namespaced(client.clone(), ns)
        .get_opt(&c.names.statefulset())
        .await
        .map_err(failed("StatefulSet", c.names.statefulset()))?;
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(&c.names.lease())
        .await
        .map_err(failed("Lease", c.names.lease()))?;
    let state = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(&c.names.state_config_map())
        .await
        .map_err(failed("ConfigMap", c.names.state_config_map()))?;
    let backups = Api::<PostgresBackup>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(failed("PostgresBackup", ns.clone()))?
        .items
        .into_iter()
        .filter(|b| b.spec.cluster == c.names.cluster())
        .collect();
    let key = |k: &str| {
        state
            .as_ref()
            .and_then(|c| c.data.as_ref())
            .and_then(|d| d.get(k))
            .cloned()
    };
    Ok(Observed {
        pods,
        replicas: sts
            .as_ref()
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.replicas)
            .unwrap_or(0),
        update_revision: sts.and_then(|s| s.status).and_then(|s| s.update_revision),
        lease_holder: lease
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty()),
        history: parsed(key(keys::HISTORY)).unwrap_or_default(),
        sync: parsed(key(keys::SYNC)).unwrap_or_default(),
        cordoned_nodes: BTreeSet::new(),
        backup_request: parsed(key(keys::BACKUP)),
        backup_result: parsed(key(keys::BACKUP_RESULT)),
        backups,
        initialized: key(keys::INITIALIZE).is_some_and(|v| !v.is_empty()),
        backup_secrets: BTreeMap::new(),
    })
}

/// A state key's JSON value; a corrupt one reads as absent (the agents rewrite their keys, and
/// the operator must not stop reconciling over one bad annotation).
fn parsed<T: serde::de::DeserializeOwned>(value: Option<String>) -> Option<T> {
    value.and_then(|v| serde_json::from_str(&v).ok())
}

/// Which of the nodes the pods run on are cordoned: one GET per node. A node that cannot be
/// read counts as not cordoned (`failed` hears why): the drain it may be under then waits.
pub async fn cordoned_nodes(
    client: &Client,
    pods: &[Pod],
    failed: impl Fn(&kube::Error),
) -> BTreeSet<String> {
    let names: BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.as_deref())
        .collect();
    let api = Api::<Node>::all(client.clone());
    let mut cordoned = BTreeSet::new();
    for name in names {
        match api.get_opt(name).await {
            Ok(Some(n)) if n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) => {
                cordoned.insert(name.to_string());
            }
            Ok(_) => {}
            Err(e) => failed(&e),
        }
    }
    cordoned
}
