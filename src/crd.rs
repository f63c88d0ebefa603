//! The CRD documents generated from the types in [`crate::api`]; `pgwarden crd` prints them
//! and `crds/` holds a copy of each (one file per CRD) that a test keeps in step.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::{PostgresBackup, PostgresCluster};

/// A CRD's generator.
pub type Definition = fn() -> CustomResourceDefinition;

/// Every CRD: its plural (`pgwarden crd <plural>` prints one) and its definition.
pub const CRDS: [(&str, Definition); 2] = [
    ("postgresclusters", PostgresCluster::crd),
    ("postgresbackups", PostgresBackup::crd),
];

/// The file of `crds/` (and of the chart's `crds/`) that holds the CRD of `plural`.
pub fn file_name(plural: &str) -> String {
    format!("pgwarden.io_{plural}.yaml")
}

/// The `PostgresCluster` CustomResourceDefinition as YAML.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string(&PostgresCluster::crd())
}

/// The CRD of `plural` as YAML; `None` for a plural pgwarden does not define.
pub fn crd_yaml_of(plural: &str) -> Option<Result<String, serde_saphyr::ser::Error>> {
    CRDS.iter()
        .find(|(p, _)| *p == plural)
        .map(|(_, crd)| serde_saphyr::to_string(&crd()))
}

/// Every CRD as one multi-document YAML stream.
pub fn all_yaml() -> Result<String, serde_saphyr::ser::Error> {
    let mut out = String::new();
    for (_, crd) in CRDS {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds/` is what users and the chart install; it must be exactly what the types generate.
    #[test]
    fn crds_directory_matches_the_types() {
        for (plural, _) in CRDS {
            let file = file_name(plural);
            let path = format!("{}/crds/{file}", env!("CARGO_MANIFEST_DIR"));
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("crds/{file} cannot be read: {e}"));
            let generated = crd_yaml_of(plural).unwrap().expect("the CRD renders");
            assert!(
                committed == generated,
                "crds/{file} drifted from the Rust types; run `make crds`"
            );
        }
    }

    /// Helm installs the chart's copy; it must be the same bytes as `crds/`.
    #[test]
    fn the_charts_crd_matches_the_types() {
        for (plural, _) in CRDS {
            let file = file_name(plural);
            let path = format!("{}/charts/pgwarden/crds/{file}", env!("CARGO_MANIFEST_DIR"));
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("the chart carries no {file}: {e}"));
            let generated = crd_yaml_of(plural).unwrap().expect("the CRD renders");
            assert!(
                committed == generated,
                "charts/pgwarden/crds/{file} drifted from the Rust types; run `make crds`"
            );
        }
    }

    #[test]
    fn every_crd_is_printed_and_an_unknown_plural_is_none() {
        let all = all_yaml().expect("renders");
        assert!(all.contains("kind: PostgresCluster\n") && all.contains("kind: PostgresBackup\n"));
        assert_eq!(all.matches("---\n").count(), 2);
        assert!(crd_yaml_of("postgresqls").is_none());
        assert_eq!(
            crd_yaml_of("postgresclusters").unwrap().unwrap(),
            crd_yaml().unwrap()
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
