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

    /// The body of a JSON merge patch that replaces the whole status: a merge patch keeps
    /// the fields it leaves out, so every absent field goes as `null` (a message of an
    /// earlier phase must not linger). The destructuring names every field, so a new one
    /// cannot be forgotten here.
    pub fn merge_patch(&self) -> serde_json::Value {
        let Self {
            phase,
            member,
            started,
            finished,
            label,
            message,
        } = self;
        serde_json::json!({ "status": {
            "phase": phase,
            "member": member,
            "started": started,
            "finished": finished,
            "label": label,
            "message": message,
        }})
    }

    /// Completed or failed: the operator leaves it alone from then on.
    pub fn finished(&self) -> bool {
        matches!(
            self.phase.as_deref(),
            Some(Self::COMPLETED) | Some(Self::FAILED)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_patch_clears_every_field_it_does_not_set() {
        let status = PostgresBackupStatus {
            phase: Some(PostgresBackupStatus::RUNNING.into()),
            member: Some("demo-0".into()),
            ..Default::default()
        };
        let patch = status.merge_patch();
        let fields = patch["status"].as_object().expect("an object");
        assert_eq!(fields["phase"], "Running");
        assert_eq!(fields["member"], "demo-0");
        for cleared in ["started", "finished", "label", "message"] {
            assert!(fields[cleared].is_null(), "{cleared} not cleared: {patch}");
        }
        // Every field of the status is in the patch, so none can linger.
        let all = serde_json::to_value(PostgresBackupStatus {
            phase: Some("p".into()),
            member: Some("m".into()),
            started: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            finished: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            label: Some("l".into()),
            message: Some("x".into()),
        })
        .expect("serializes");
        let named: Vec<_> = all.as_object().expect("an object").keys().collect();
        let patched: Vec<_> = fields.keys().collect();
        assert_eq!(named, patched);
    }
}
