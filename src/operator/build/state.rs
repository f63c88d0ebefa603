//! The cluster's coordination objects, pre-created with the cluster's labels and owner reference
//! so they go when it goes: the Lease `<c>-leader` (metadata only: its spec belongs to the
//! agents) and the ConfigMap `<c>-state`, where the operator owns exactly the `config`, `pause` and
//! `backup` keys and the agents keep theirs.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;

use super::Cluster;
use crate::api::state::{BackupRequest, DynamicConfig, keys};

pub fn lease(cluster: &Cluster) -> Lease {
    Lease {
        metadata: cluster.meta(cluster.names.lease()),
        spec: None,
    }
}

pub fn dynamic_config(cluster: &Cluster) -> DynamicConfig {
    let pg = &cluster.spec.postgresql;
    let mut parameters = pg.parameters.clone();
    // Admission refuses user values for these while spec.backup is set.
    if let Some(backup) = &cluster.spec.backup {
        for (k, v) in backup.archive_parameters() {
            parameters.insert(k.to_string(), v);
        }
    }
    DynamicConfig {
        parameters,
        pg_hba: pg.pg_hba.clone(),
        failsafe_mode: Some(cluster.spec.ha.failsafe_mode),
    }
}

/// `backup`: the latest backup request (kept on every apply: server-side apply removes an
/// owned key that is left out).
pub fn state_config_map(cluster: &Cluster, backup: Option<&BackupRequest>) -> ConfigMap {
    let mut data = BTreeMap::from([
        (keys::CONFIG.to_string(), dynamic_config(cluster).to_json()),
        (keys::PAUSE.to_string(), cluster.spec.pause.to_string()),
    ]);
    if let Some(request) = backup.and_then(|r| serde_json::to_string(r).ok()) {
        data.insert(keys::BACKUP.to_string(), request);
    }
    ConfigMap {
        metadata: cluster.meta(cluster.names.state_config_map()),
        data: Some(data),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::build::fixtures::cluster;

    #[test]
    fn the_state_config_map_carries_only_the_operators_keys() {
        let c = cluster(serde_json::json!({
            "pause": true,
            "postgresql": {"parameters": {"work_mem": "8MB"}, "pgHba": ["host all all 10.0.0.0/8 scram-sha-256"]}
        }));
        let cluster = Cluster::new(&c, "img", "IfNotPresent").unwrap();
        let cm = state_config_map(&cluster, None);
        let data = cm.data.unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["config", "pause"]);
        assert_eq!(data["pause"], "true");
        let config = DynamicConfig::parse(&data["config"]).unwrap();
        assert_eq!(config.parameters["work_mem"], "8MB");
        assert_eq!(config.pg_hba.len(), 1);
        assert!(
            lease(&cluster).spec.is_none(),
            "the Lease spec belongs to the agents"
        );
    }

    #[test]
    fn a_backup_repository_turns_wal_archiving_on() {
        let c = cluster(serde_json::json!({
            "postgresql": {"parameters": {"work_mem": "8MB"}},
            "backup": {"repository": {"s3": {"endpoint": "s3.example.com", "bucket": "b",
                "credentialsSecret": "c"}}}
        }));
        let cluster = Cluster::new(&c, "img", "IfNotPresent").unwrap();
        let p = dynamic_config(&cluster).parameters;
        assert_eq!(p["archive_mode"], "on");
        assert_eq!(p["archive_command"], "pgbackrest archive-push %p");
        assert_eq!(p["work_mem"], "8MB");
        let c = cluster_with_archiving_off();
        let cluster = Cluster::new(&c, "img", "IfNotPresent").unwrap();
        assert!(
            !dynamic_config(&cluster)
                .parameters
                .contains_key("archive_mode")
        );
    }

    fn cluster_with_archiving_off() -> crate::api::PostgresCluster {
        cluster(
            serde_json::json!({"backup": {"walArchiving": false, "repository": {"s3": {
            "endpoint": "s3.example.com", "bucket": "b", "credentialsSecret": "c"}}}}),
        )
    }
}
