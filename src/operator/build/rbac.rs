//! The agents' identity: ServiceAccount, Role and RoleBinding `<c>-agent`. The Role is limited to
//! the cluster's own Lease, state ConfigMap and pods (by name), plus Events.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use super::Cluster;

/// Highest ordinal a cluster can have (`spec.instances` is at most 16).
const MAX_INSTANCES: u32 = 16;

pub fn service_account(cluster: &Cluster) -> ServiceAccount {
    ServiceAccount {
        metadata: cluster.meta(cluster.names.agent_rbac()),
        automount_service_account_token: Some(true),
        ..Default::default()
    }
}

fn rule(group: &str, resource: &str, verbs: &[&str], names: Option<Vec<String>>) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(vec![resource.to_string()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        resource_names: names,
        ..Default::default()
    }
}

pub fn role(cluster: &Cluster) -> Role {
    let n = &cluster.names;
    let pods: Vec<String> = (0..MAX_INSTANCES).map(|i| n.pod(i)).collect();
    Role {
        metadata: cluster.meta(n.agent_rbac()),
        rules: Some(vec![
            // `create` cannot be limited by name; everything else is.
            rule("coordination.k8s.io", "leases", &["create"], None),
            rule(
                "coordination.k8s.io",
                "leases",
                &["get", "list", "watch", "update", "patch"],
                Some(vec![n.lease()]),
            ),
            rule("", "configmaps", &["create"], None),
            rule(
                "",
                "configmaps",
                &["get", "list", "watch", "update", "patch"],
                Some(vec![n.state_config_map()]),
            ),
            // Members find each other by listing the cluster's pods by label.
            rule("", "pods", &["get", "list", "watch"], None),
            rule("", "pods", &["patch"], Some(pods)),
            // A member that stopped being primary starts again only once `-rw` no longer lists
            // it (the role label's removal takes a moment to reach kube-proxy).
            rule(
                "discovery.k8s.io",
                "endpointslices",
                &["get", "list", "watch"],
                None,
            ),
            // Promotions, demotions and fencing as Events on the PostgresCluster.
            rule("events.k8s.io", "events", &["create", "patch"], None),
        ]),
    }
}

pub fn role_binding(cluster: &Cluster) -> RoleBinding {
    let name = cluster.names.agent_rbac();
    RoleBinding {
        metadata: cluster.meta(name.clone()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name,
            namespace: Some(cluster.namespace.clone()),
            ..Default::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::build::fixtures::cluster;

    #[test]
    fn the_agent_role_names_only_its_own_cluster_objects() {
        let c = cluster(serde_json::json!({}));
        let cluster = Cluster::new(&c, "img", "IfNotPresent").unwrap();
        let r = role(&cluster);
        let rules = r.rules.unwrap();
        let lease = rules
            .iter()
            .find(|r| {
                r.resources.as_deref() == Some(&["leases".to_string()][..])
                    && r.resource_names.is_some()
            })
            .unwrap();
        assert_eq!(
            lease.resource_names.as_deref(),
            Some(&["main-leader".to_string()][..])
        );
        let patch_pods = rules
            .iter()
            .find(|r| {
                r.verbs == ["patch"] && r.resources.as_deref() == Some(&["pods".to_string()][..])
            })
            .unwrap();
        let names = patch_pods.resource_names.as_ref().unwrap();
        assert_eq!(names.first().map(String::as_str), Some("main-0"));
        assert_eq!(names.len(), 16);
        assert!(
            rules
                .iter()
                .all(|r| !r.verbs.contains(&"delete".to_string()))
        );
    }
}
