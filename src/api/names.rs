//! The stable names of pgwarden's contract: API group, labels, annotations, ports and the names
//! of the objects that belong to a cluster. Users, tests and all three wings (operator, agent,
//! CLI) rely on these; changing one is a breaking change (docs/architecture.md, "The contract").

use std::collections::BTreeMap;

pub const API_GROUP: &str = "pgwarden.io";
pub const API_VERSION: &str = "v1alpha1";

/// Label keys set on every child object of a cluster.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_CLUSTER: &str = "pgwarden.io/cluster";
/// Role label on pods: `primary` | `replica`, absent when neither.
pub const LABEL_ROLE: &str = "pgwarden.io/role";
pub const ROLE_PRIMARY: &str = "primary";
pub const ROLE_REPLICA: &str = "replica";

/// Value of [`LABEL_NAME`] on everything pgwarden creates.
pub const APP_NAME: &str = "pgwarden";

/// Member status annotation on each pod (JSON with Patroni's member fields).
pub const ANNOTATION_STATUS: &str = "pgwarden.io/status";
/// Switchover request on the `PostgresCluster`, consumed once by the operator.
pub const ANNOTATION_SWITCHOVER_TO: &str = "pgwarden.io/switchover-to";

/// Patroni's default ports, so the seed's HAProxy configuration works unchanged.
pub const POSTGRES_PORT: u16 = 5432;
pub const REST_PORT: u16 = 8008;

/// The labels every child of `cluster` carries.
pub fn cluster_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP_NAME.to_string()),
        (LABEL_INSTANCE.to_string(), cluster.to_string()),
        (LABEL_CLUSTER.to_string(), cluster.to_string()),
    ])
}

/// Names of the objects that belong to one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectNames {
    cluster: String,
}

impl ObjectNames {
    pub fn new(cluster: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
        }
    }
    pub fn cluster(&self) -> &str {
        &self.cluster
    }
    pub fn statefulset(&self) -> String {
        self.cluster.clone()
    }
    /// PodDisruptionBudget of the replicas (`pgwarden.io/role=replica`).
    pub fn pod_disruption_budget(&self) -> String {
        self.cluster.clone()
    }
    /// PodDisruptionBudget of the primary: never evicted, switched over first.
    pub fn pod_disruption_budget_primary(&self) -> String {
        format!("{}-primary", self.cluster)
    }
    /// Service selecting `pgwarden.io/role=primary`.
    pub fn service_rw(&self) -> String {
        format!("{}-rw", self.cluster)
    }
    /// Service selecting `pgwarden.io/role=replica`.
    pub fn service_ro(&self) -> String {
        format!("{}-ro", self.cluster)
    }
    /// Service selecting any ready instance.
    pub fn service_r(&self) -> String {
        format!("{}-r", self.cluster)
    }
    /// Headless service that gives pods stable DNS names.
    pub fn service_pods(&self) -> String {
        format!("{}-pods", self.cluster)
    }
    /// The leader key.
    pub fn lease(&self) -> String {
        format!("{}-leader", self.cluster)
    }
    /// initialize, history, sync and switchover keys.
    pub fn state_config_map(&self) -> String {
        format!("{}-state", self.cluster)
    }
    pub fn secret_superuser(&self) -> String {
        format!("{}-superuser", self.cluster)
    }
    pub fn secret_replication(&self) -> String {
        format!("{}-replication", self.cluster)
    }
    pub fn secret_app(&self) -> String {
        format!("{}-app", self.cluster)
    }
    pub fn secret_api(&self) -> String {
        format!("{}-api", self.cluster)
    }
    /// ServiceAccount, Role and RoleBinding of the agents.
    pub fn agent_rbac(&self) -> String {
        format!("{}-agent", self.cluster)
    }
    /// Pod `ordinal` of the StatefulSet.
    pub fn pod(&self, ordinal: u32) -> String {
        format!("{}-{}", self.cluster, ordinal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_follow_the_contract() {
        let n = ObjectNames::new("main");
        assert_eq!(n.statefulset(), "main");
        assert_eq!(n.service_rw(), "main-rw");
        assert_eq!(n.service_ro(), "main-ro");
        assert_eq!(n.service_r(), "main-r");
        assert_eq!(n.service_pods(), "main-pods");
        assert_eq!(n.lease(), "main-leader");
        assert_eq!(n.state_config_map(), "main-state");
        assert_eq!(n.secret_superuser(), "main-superuser");
        assert_eq!(n.secret_replication(), "main-replication");
        assert_eq!(n.secret_app(), "main-app");
        assert_eq!(n.secret_api(), "main-api");
        assert_eq!(n.agent_rbac(), "main-agent");
        assert_eq!(n.pod(2), "main-2");
    }

    #[test]
    fn every_child_carries_the_three_cluster_labels() {
        let l = cluster_labels("main");
        assert_eq!(
            l.get("app.kubernetes.io/name").map(String::as_str),
            Some("pgwarden")
        );
        assert_eq!(
            l.get("app.kubernetes.io/instance").map(String::as_str),
            Some("main")
        );
        assert_eq!(
            l.get("pgwarden.io/cluster").map(String::as_str),
            Some("main")
        );
        assert_eq!(l.len(), 3);
    }
}
