//! Reconcile step 3, build (pure, no client): one function per Kubernetes object of a cluster,
//! each returning the k8s-openapi object to server-side apply. Labels and the controller owner
//! reference are set here, in one place.

pub mod rbac;
pub mod secrets;
pub mod services;
pub mod state;
pub mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::api::names::{ObjectNames, cluster_labels};
use crate::api::{PostgresCluster, PostgresClusterSpec};

/// What every builder needs: the cluster's spec, its names, its owner reference. The reconciler
/// builds only from a spec that passed validation (see `validate::ValidatedCluster`).
pub struct Cluster<'a> {
    pub spec: &'a PostgresClusterSpec,
    pub names: ObjectNames,
    pub namespace: String,
    pub owner: OwnerReference,
    /// Image the init container copies the `pgwarden` binary from.
    pub agent_image: String,
    pub agent_image_pull_policy: String,
}

impl<'a> Cluster<'a> {
    /// `None` when the cluster has no name, namespace or uid yet (never for an object read from
    /// the apiserver).
    pub fn new(
        cluster: &'a PostgresCluster,
        agent_image: &str,
        agent_image_pull_policy: &str,
    ) -> Option<Self> {
        let name = cluster.metadata.name.clone()?;
        let namespace = cluster.metadata.namespace.clone()?;
        let owner = cluster.controller_owner_ref(&())?;
        Some(Self {
            spec: &cluster.spec,
            names: ObjectNames::new(name),
            namespace,
            owner,
            agent_image: agent_image.to_string(),
            agent_image_pull_policy: agent_image_pull_policy.to_string(),
        })
    }

    /// Metadata of a child: name, namespace, the cluster labels, the owner reference.
    pub fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels()),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        cluster_labels(self.names.cluster())
    }
}

/// The children the operator server-side applies, but the Secrets (created once, with random
/// values, by the apply step).
pub struct Children {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub services: Vec<Service>,
    pub pod_disruption_budgets: [PodDisruptionBudget; 2],
    pub lease: Lease,
    pub state_config_map: ConfigMap,
    pub statefulset: StatefulSet,
}

/// Reconcile step 3, build (pure, no client): every child for a valid spec and `replicas` pods.
/// `backup`: the backup request the `backup` key carries (src/operator/schedule.rs).
pub fn children(
    cluster: &Cluster,
    replicas: i32,
    backup: Option<&crate::api::state::BackupRequest>,
) -> Children {
    Children {
        service_account: rbac::service_account(cluster),
        role: rbac::role(cluster),
        role_binding: rbac::role_binding(cluster),
        services: services::services(cluster),
        pod_disruption_budgets: [
            statefulset::pod_disruption_budget(cluster),
            statefulset::primary_disruption_budget(cluster),
        ],
        lease: state::lease(cluster),
        state_config_map: state::state_config_map(cluster, backup),
        statefulset: statefulset::statefulset(cluster, replicas),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::api::PostgresCluster;
    use crate::api::state::BackupResult;

    /// What member `main-0` reports of backup request `name` in `phase` (`running`,
    /// `completed` or `failed`), with the fields that phase has.
    pub fn backup_result(name: &str, phase: &str) -> BackupResult {
        BackupResult {
            name: name.into(),
            phase: phase.into(),
            member: "main-0".into(),
            started: "2026-12-02T08:00:01Z".into(),
            finished: (phase != "running").then(|| "2026-12-02T08:01:00Z".into()),
            label: (phase == "completed").then(|| "20261202-080001F".into()),
            error: (phase == "failed").then(|| "ERROR: [039]: no bucket".into()),
        }
    }

    /// A cluster as the apiserver would return it (defaults applied, uid set).
    pub fn cluster(spec: serde_json::Value) -> PostgresCluster {
        let mut c: PostgresCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "pgwarden.io/v1alpha1",
            "kind": "PostgresCluster",
            "metadata": {"name": "main", "namespace": "db", "uid": "0c1d2e3f", "generation": 1},
            "spec": {"image": "pgwarden.local/postgres:15", "storage": {"size": "1Gi"}}
        }))
        .expect("fixture parses");
        if let serde_json::Value::Object(extra) = spec {
            let mut base = serde_json::to_value(&c.spec).expect("spec serialises");
            for (k, v) in extra {
                base[k] = v;
            }
            c.spec = serde_json::from_value(base).expect("fixture spec parses");
        }
        c
    }
}
