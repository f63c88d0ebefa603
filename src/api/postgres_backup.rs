//! `PostgresBackup`: one on-demand base backup of a `PostgresCluster` in the same namespace
//! (`kubectl apply`, or `kubectl pgwarden backup <cluster>`). The operator queues them per
//! cluster, oldest first, and asks the primary for one at a time (src/operator/backups.rs);
//! the status follows what the primary's agent reports. Deleting the object does not delete the
//! backup from the repository: retention (`spec.backup.retention`) does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A base backup asked for once.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "pgwarden.io",
    version = "v1alpha1",
    kind = "PostgresBackup",
    plural = "postgresbackups",
    shortname = "pgb",
    namespaced,
    status = "PostgresBackupStatus",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.cluster"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Label","type":"string","jsonPath":".status.label"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackupSpec {
    /// The `PostgresCluster` (same namespace) whose primary takes the backup.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.cluster is immutable"))]
    pub cluster: String,
    /// pgBackRest's backup type: `full`, `diff` (changes since the last full) or `incr` (since
    /// the last backup of any type). A `diff` or `incr` without a full backup before it becomes
    /// a full one.
    #[serde(default, rename = "type")]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.type is immutable"))]
    pub type_: BackupType,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    #[default]
    Full,
    Diff,
    Incr,
}

impl BackupType {
    pub fn as_pgbackrest(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Diff => "diff",
            Self::Incr => "incr",
        }
    }
}

/// Where the backup stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackupStatus {
    /// `Pending` (queued, or waiting for a primary whose repository is ready), `Running`,
    /// `Completed` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The member that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Time>,
    /// pgBackRest's label of the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Why it failed, or why it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl PostgresBackupStatus {
    pub const PENDING: &'static str = "Pending";
    pub const RUNNING: &'static str = "Running";
    pub const COMPLETED: &'static str = "Completed";
    pub const FAILED: &'static str = "Failed";

    /// Completed or failed: the operator leaves it alone from then on.
    pub fn finished(&self) -> bool {
        matches!(
            self.phase.as_deref(),
            Some(Self::COMPLETED) | Some(Self::FAILED)
        )
    }
}
