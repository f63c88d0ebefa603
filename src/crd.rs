//! The CRD document generated from the types in [`crate::api`]; `pgwarden crd` prints it and
//! `crds/` holds a copy that a test keeps in step.

use kube::CustomResourceExt;

use crate::api::PostgresCluster;

/// The `PostgresCluster` CustomResourceDefinition as YAML.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    let crd = PostgresCluster::crd();
    serde_saphyr::to_string(&crd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds/` is what users and the chart install; it must be exactly what the types generate.
    #[test]
    fn crds_directory_matches_the_types() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/crds/pgwarden.io_postgresclusters.yaml"
        );
        let committed =
            std::fs::read_to_string(path).expect("crds/pgwarden.io_postgresclusters.yaml exists");
        let generated = crd_yaml().expect("the CRD renders");
        assert!(
            committed == generated,
            "crds/pgwarden.io_postgresclusters.yaml drifted from the Rust types; run `make crds`"
        );
    }

    /// Helm installs the chart's copy; it must be the same bytes as `crds/`.
    #[test]
    fn the_charts_crd_matches_the_types() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/charts/pgwarden/crds/pgwarden.io_postgresclusters.yaml"
        );
        let committed = std::fs::read_to_string(path).expect("the chart carries the CRD");
        let generated = crd_yaml().expect("the CRD renders");
        assert!(
            committed == generated,
            "charts/pgwarden/crds/ drifted from the Rust types; run `make crds`"
        );
    }

    #[test]
    fn crd_carries_the_contract() {
        let crd = PostgresCluster::crd();
        assert_eq!(crd.spec.group, "pgwarden.io");
        assert_eq!(crd.spec.names.kind, "PostgresCluster");
        assert_eq!(crd.spec.names.plural, "postgresclusters");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["pgc".to_string()][..])
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Instances", "Ready", "Primary", "Phase", "Age"]);
        let subresources = version.subresources.as_ref().expect("subresources");
        assert!(subresources.status.is_some(), "status subresource");
        let scale = subresources.scale.as_ref().expect("scale subresource");
        assert_eq!(scale.spec_replicas_path, ".spec.instances");
    }

    #[test]
    fn timing_rule_is_enforced_at_admission() {
        let yaml = crd_yaml().expect("the CRD renders");
        assert!(yaml.contains("self.loopWait + 2 * self.retryTimeout <= self.ttl"));
    }
}
