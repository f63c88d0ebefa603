//! The `PostgresCluster` custom resource (`pgwarden.io/v1alpha1`): its spec with defaults, the
//! admission rules (OpenAPI bounds and CEL rules that name the offending field), and its status.
//! `pgwarden crd` prints the CRD generated from these types; `crds/` holds that output and a test
//! fails when it drifts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a highly available PostgreSQL cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "pgwarden.io",
    version = "v1alpha1",
    kind = "PostgresCluster",
    plural = "postgresclusters",
    shortname = "pgc",
    namespaced,
    status = "PostgresClusterStatus",
    scale = r#"{"specReplicasPath":".spec.instances","statusReplicasPath":".status.instances","labelSelectorPath":".status.selector"}"#,
    printcolumn = r#"{"name":"Instances","type":"integer","jsonPath":".spec.instances"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyInstances"}"#,
    printcolumn = r#"{"name":"Primary","type":"string","jsonPath":".status.currentPrimary"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.ha.synchronousMode == 'off' || self.ha.synchronousNodeCount < self.instances").message("spec.ha.synchronousNodeCount must be less than spec.instances"))]
#[x_kube(validation = Rule::new("!has(self.backup) || (!('archive_command' in self.postgresql.parameters) && !('archive_mode' in self.postgresql.parameters))").message("spec.postgresql.parameters: archive_command and archive_mode are managed by pgwarden while spec.backup is set"))]
#[x_kube(validation = Rule::new("!has(self.bootstrap) || !has(self.bootstrap.recovery) || has(self.backup)").message("spec.bootstrap.recovery needs spec.backup: the source is read from its object store, and the new cluster archives to a path of its own"))]
pub struct PostgresClusterSpec {
    /// Number of PostgreSQL instances (one primary, the rest replicas).
    #[serde(default = "default_instances")]
    #[schemars(range(min = 1, max = 16))]
    pub instances: i32,

    /// Container image with the PostgreSQL server binaries (any image works: the agent binary is
    /// copied in by an init container).
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// Image pull policy for `spec.image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,

    /// Directory holding `postgres`, `initdb`, `pg_ctl`, `pg_basebackup`, `pg_rewind` in the image
    /// (default: Debian's `/usr/lib/postgresql/15/bin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_bin_dir: Option<String>,

    /// User id PostgreSQL runs as in the image (Debian's and the official image's `postgres` is 999).
    #[serde(default = "default_postgres_id", rename = "postgresUID")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.postgresUID is immutable"))]
    pub postgres_uid: i64,

    /// Group id of the PostgreSQL user; also the pods' fsGroup, so volumes are writable.
    #[serde(default = "default_postgres_id", rename = "postgresGID")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.postgresGID is immutable"))]
    pub postgres_gid: i64,

    #[serde(default)]
    pub postgresql: PostgresqlSpec,

    #[serde(default)]
    pub bootstrap: BootstrapSpec,

    pub storage: StorageSpec,

    /// Resources of the PostgreSQL container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Where the instances may run. Unset (and without topologySpreadConstraints): a preferred
    /// pod anti-affinity on kubernetes.io/hostname spreads the instances over nodes, one per node
    /// where there are enough. Set: used as given, in place of that default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    #[serde(default)]
    pub ha: HaSpec,

    /// Tags of single instances, by pod name (`<cluster>-<ordinal>`): Patroni's `nofailover`,
    /// `noloadbalance` and `nosync`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instance_tags: BTreeMap<String, InstanceTags>,

    /// The Services in front of the instances.
    #[serde(default)]
    pub services: ServicesSpec,

    /// Maintenance mode: the agents manage nothing and fence nothing (Patroni's pause).
    #[serde(default)]
    pub pause: bool,

    /// Seconds a member may take to become ready the first time after its container starts: a
    /// restore (`spec.bootstrap.recovery`), a basebackup of a large database, a replica replaying
    /// a long backlog. Past it the kubelet restarts the container, and the work starts over, so
    /// raise it for large databases (CloudNativePG's `startDelay`; the default is an hour).
    #[serde(default = "default_start_delay")]
    #[schemars(range(min = 60, max = 604800))]
    pub start_delay: i32,

    /// Base backups and continuous WAL archiving with pgBackRest to an S3-compatible store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::api::backup::BackupSpec>,
}

fn default_start_delay() -> i32 {
    3600
}

fn default_instances() -> i32 {
    3
}

fn default_postgres_id() -> i64 {
    999
}

/// Parameters pgwarden sets itself: a user value would break replication, failover or the pod's
/// wiring, so admission refuses them.
pub const RESERVED_PARAMETERS: &[&str] = &[
    "archive_cleanup_command",
    "config_file",
    "data_directory",
    "hba_file",
    "hot_standby",
    "ident_file",
    "listen_addresses",
    "port",
    "primary_conninfo",
    "primary_slot_name",
    "promote_trigger_file",
    "recovery_target_timeline",
    "restore_command",
    "synchronous_standby_names",
    "unix_socket_directories",
    "unix_socket_group",
    "unix_socket_permissions",
    "wal_level",
    "wal_log_hints",
];

/// Patroni's member tags for one instance.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceTags {
    /// Never promote this instance.
    #[serde(default)]
    pub nofailover: bool,
    /// Keep this instance out of the `-ro` Service (and `/replica` answers 503).
    #[serde(default)]
    pub noloadbalance: bool,
    /// Never make this instance a synchronous standby.
    #[serde(default)]
    pub nosync: bool,
}

/// The `-rw`, `-ro` and `-r` Services.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicesSpec {
    /// `<cluster>-rw`: the primary.
    #[serde(default)]
    pub rw: ServiceTemplate,
    /// `<cluster>-ro`: the replicas.
    #[serde(default)]
    pub ro: ServiceTemplate,
    /// `<cluster>-r`: any ready instance.
    #[serde(default)]
    pub r: ServiceTemplate,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTemplate {
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Annotations for the Service (load-balancer settings, for example).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// PostgreSQL configuration.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresqlSpec {
    /// postgresql.conf parameters; reloadable ones apply without a restart, the others roll
    /// through the instances (replicas first, then a switchover, then the old primary).
    #[serde(default)]
    // One map lookup per reserved name: constant CEL cost, whatever the user sends.
    #[x_kube(validation = Rule::new("!('archive_cleanup_command' in self) && !('config_file' in self) && !('data_directory' in self) && !('hba_file' in self) && !('hot_standby' in self) && !('ident_file' in self) && !('listen_addresses' in self) && !('port' in self) && !('primary_conninfo' in self) && !('primary_slot_name' in self) && !('promote_trigger_file' in self) && !('recovery_target_timeline' in self) && !('restore_command' in self) && !('synchronous_standby_names' in self) && !('unix_socket_directories' in self) && !('unix_socket_group' in self) && !('unix_socket_permissions' in self) && !('wal_level' in self) && !('wal_log_hints' in self)").message("spec.postgresql.parameters: archive_cleanup_command, config_file, data_directory, hba_file, hot_standby, ident_file, listen_addresses, port, primary_conninfo, primary_slot_name, promote_trigger_file, recovery_target_timeline, restore_command, synchronous_standby_names, unix_socket_*, wal_level and wal_log_hints are managed by pgwarden"))]
    pub parameters: BTreeMap<String, String>,
    /// Extra pg_hba.conf lines, placed before pgwarden's own.
    #[serde(default)]
    pub pg_hba: Vec<String>,
}

/// What the member that wins the `initialize` key creates. Immutable: it happened once.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec.bootstrap is immutable: the cluster was bootstrapped with it"))]
pub struct BootstrapSpec {
    #[serde(default)]
    pub initdb: InitdbSpec,
    /// Application database.
    #[serde(default = "default_app")]
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_]{0,62}$"))]
    pub database: String,
    /// Owner of the application database (credentials in Secret `<cluster>-app`).
    #[serde(default = "default_app")]
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_]{0,62}$"))]
    pub owner: String,
    /// More roles to create (without passwords; grant them to the app user or set one later).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub roles: Vec<RoleSpec>,
    /// More databases to create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub databases: Vec<DatabaseSpec>,
    /// Start from another cluster's backups (point-in-time recovery) instead of initdb; needs
    /// `spec.backup` (the new cluster archives to its own path). `initdb`, `database`, `roles`
    /// and `databases` then do not apply: the data is the source's, and only the passwords of
    /// the superuser, the replication role and the application role are set to this cluster's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<crate::api::backup::RecoverySpec>,
}

impl Default for BootstrapSpec {
    fn default() -> Self {
        Self {
            initdb: InitdbSpec::default(),
            database: default_app(),
            owner: default_app(),
            roles: vec![],
            databases: vec![],
            recovery: None,
        }
    }
}

/// initdb options.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InitdbSpec {
    #[serde(default = "default_encoding")]
    #[schemars(length(min = 1, max = 64))]
    pub encoding: String,
    /// Locale of the new cluster (`C` needs nothing from the image; others must exist in it).
    #[serde(default = "default_locale")]
    #[schemars(length(min = 1, max = 64))]
    pub locale: String,
    #[serde(default = "default_true")]
    pub data_checksums: bool,
}

impl Default for InitdbSpec {
    fn default() -> Self {
        Self {
            encoding: default_encoding(),
            locale: default_locale(),
            data_checksums: true,
        }
    }
}

fn default_encoding() -> String {
    "UTF8".into()
}
fn default_locale() -> String {
    "C".into()
}
fn default_true() -> bool {
    true
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoleSpec {
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_]{0,62}$"))]
    pub name: String,
    #[serde(default)]
    pub login: bool,
    #[serde(default)]
    pub createdb: bool,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_]{0,62}$"))]
    pub name: String,
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_]{0,62}$"))]
    pub owner: String,
}

fn default_app() -> String {
    "app".to_string()
}

/// The data volume of each instance.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each instance's `pgdata` volume, e.g. `1Gi`. Immutable (volume claim templates are).
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.storage.size is immutable"))]
    #[schemars(
        regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"),
        length(max = 32)
    )]
    pub size: String,
    /// StorageClass of the volumes (default: the cluster's default class). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.storage.storageClassName is immutable"))]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,
    /// Keep the volumes when the cluster is deleted.
    #[serde(default)]
    pub retain_on_delete: bool,
}

/// Timing and failover behaviour of the agents (Patroni's dynamic configuration).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.loopWait + 2 * self.retryTimeout <= self.ttl").message("spec.ha: loopWait + 2*retryTimeout must not exceed ttl"))]
#[x_kube(validation = Rule::new("self.ttl - self.watchdog.safetyMargin >= self.loopWait").message("spec.ha.watchdog.safetyMargin: ttl - safetyMargin must be at least loopWait"))]
pub struct HaSpec {
    /// Seconds a leader lease is valid without renewal.
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 4, max = 3600))]
    pub ttl: i32,
    /// Seconds between two runs of the HA loop.
    #[serde(default = "default_loop_wait")]
    #[schemars(range(min = 1, max = 600))]
    pub loop_wait: i32,
    /// Seconds one apiserver call may take before it counts as failed. A failed call is retried;
    /// a primary that cannot renew keeps running until ttl - watchdog.safetyMargin after its last
    /// acknowledged renew, when no other member can have taken the Lease yet.
    #[serde(default = "default_retry_timeout")]
    #[schemars(range(min = 1, max = 600))]
    pub retry_timeout: i32,
    /// A replica further behind than this (bytes) is never promoted.
    #[serde(default = "default_maximum_lag_on_failover")]
    #[schemars(range(min = 0))]
    pub maximum_lag_on_failover: i64,
    /// Patroni's synchronous replication. "off": commits are acknowledged by the primary alone;
    /// a failover may lose the last ones. "on": the primary waits for a synchronous standby while
    /// one is streaming, and only that standby (or the primary) may be promoted, so no
    /// acknowledged commit is lost; without a standby it acknowledges alone. "strict": as "on",
    /// but without a standby no commit is acknowledged at all.
    #[serde(default)]
    pub synchronous_mode: SynchronousMode,
    /// How many synchronous standbys the primary waits for (synchronous mode on/strict).
    #[serde(default = "default_synchronous_node_count")]
    #[schemars(range(min = 1, max = 15))]
    pub synchronous_node_count: i32,
    /// Keep a primary running while the apiserver is unreachable, as long as every member
    /// confirms it over REST (Patroni's failsafe_mode). On by default: an apiserver outage of any
    /// length costs no write downtime while the members can reach each other.
    #[serde(default = "default_failsafe_mode")]
    pub failsafe_mode: bool,
    #[serde(default)]
    pub watchdog: WatchdogSpec,
}

// Faster than Patroni's 30/10/10, and still `loopWait + 2*retryTimeout <= ttl`: a primary that
// cannot renew keeps running until ttl - safetyMargin (6 s), before a follower may take over (8 s).
fn default_failsafe_mode() -> bool {
    true
}
fn default_ttl() -> i32 {
    8
}
fn default_loop_wait() -> i32 {
    2
}
fn default_retry_timeout() -> i32 {
    3
}
fn default_maximum_lag_on_failover() -> i64 {
    1_048_576
}
fn default_synchronous_node_count() -> i32 {
    1
}

impl Default for HaSpec {
    fn default() -> Self {
        Self {
            ttl: default_ttl(),
            loop_wait: default_loop_wait(),
            retry_timeout: default_retry_timeout(),
            maximum_lag_on_failover: default_maximum_lag_on_failover(),
            synchronous_mode: SynchronousMode::default(),
            synchronous_node_count: default_synchronous_node_count(),
            failsafe_mode: default_failsafe_mode(),
            watchdog: WatchdogSpec::default(),
        }
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum SynchronousMode {
    #[default]
    Off,
    On,
    Strict,
}

/// Fencing of a primary that stops renewing its lease.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.device) || self.device.startsWith('/dev/')").message("spec.ha.watchdog.device must be a path under /dev/"))]
pub struct WatchdogSpec {
    #[serde(default)]
    pub mode: WatchdogMode,
    /// A host watchdog device (e.g. `/dev/watchdog`) to mount and drive instead of the in-pod
    /// softdog; its expiry reboots the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub device: Option<String>,
    /// The watchdog fires `ttl - safetyMargin` seconds after the last successful renew.
    #[serde(default = "default_safety_margin")]
    #[schemars(range(min = 1, max = 3600))]
    pub safety_margin: i32,
}

fn default_safety_margin() -> i32 {
    2
}

impl Default for WatchdogSpec {
    fn default() -> Self {
        Self {
            mode: WatchdogMode::default(),
            device: None,
            safety_margin: default_safety_margin(),
        }
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum WatchdogMode {
    Off,
    #[default]
    Automatic,
    Required,
}

/// Observed state, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods that exist.
    #[serde(default)]
    pub instances: i32,
    /// Pods that are Ready.
    #[serde(default)]
    pub ready_instances: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Label selector of the cluster's pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// One entry per pod, as its agent reports it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances_status: Vec<InstanceStatus>,
    /// The last unplanned change of primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<PrimaryChange>,
    /// The last planned change of primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_switchover: Option<PrimaryChange>,
    /// When `spec.backup.schedule` next names (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scheduled_backup: Option<Time>,
    /// When the operator last asked for a scheduled backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled_backup: Option<Time>,
    /// The latest backup asked of the primary, scheduled or on demand, and how it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<crate::api::state::BackupResult>,
    /// The newest backup the repository holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<crate::api::backup::RepositoryBackup>,
    /// The earliest point a restore can reach (RFC 3339): the end of the oldest backup held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverability_point: Option<String>,
    /// The newest WAL segment archived, as `pg_stat_archiver` on the primary says.
    #[serde(
        default,
        rename = "lastArchivedWAL",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_archived_wal: Option<String>,
    /// The backups the repository holds, newest first (30 at most), as the primary last read
    /// them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<crate::api::backup::RepositoryBackup>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// One instance as the operator saw it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    pub name: String,
    /// `primary`, `replica`, or empty while neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Patroni's member state (`running`, `starting`, `creating replica`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,
    /// Bytes behind the primary (replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub pending_restart: bool,
    /// Runs the StatefulSet's current revision.
    #[serde(default)]
    pub updated: bool,
}

/// A change of primary: who, when, onto which timeline.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrimaryChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: String,
    pub timeline: i64,
    pub time: Time,
}

/// The controller owner reference of every child of the cluster `name` with `uid`: what the
/// operator's builders set, and what an agent sets on a Lease it has to create itself, so that
/// deleting the cluster deletes it too.
pub fn owner_reference(
    name: &str,
    uid: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    use kube::Resource;
    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: PostgresCluster::api_version(&()).into_owned(),
        kind: PostgresCluster::kind(&()).into_owned(),
        name: name.to_string(),
        uid: uid.to_string(),
        controller: Some(true),
        // As kube's controller_owner_ref: blocking would need the right to update the
        // cluster's finalizers, which the agents' Role does not grant.
        block_owner_deletion: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "pgwarden.io/v1alpha1",
            "kind": "PostgresCluster",
            "metadata": {"name": "main"},
            "spec": {"image": "pgwarden-postgres:15", "storage": {"size": "1Gi"}}
        })
    }

    #[test]
    fn an_agent_made_lease_has_the_operators_owner_reference() {
        let mut c: PostgresCluster = serde_json::from_value(minimal()).expect("valid spec");
        c.metadata.uid = Some("u-1".into());
        assert_eq!(
            Some(owner_reference("main", "u-1")),
            kube::Resource::controller_owner_ref(&c, &())
        );
    }

    #[test]
    fn a_minimal_spec_gets_the_documented_defaults() {
        let c: PostgresCluster = serde_json::from_value(minimal()).expect("valid spec");
        assert_eq!(c.spec.instances, 3);
        assert_eq!(c.spec.ha.ttl, 8);
        assert_eq!(c.spec.ha.loop_wait, 2);
        assert_eq!(c.spec.ha.retry_timeout, 3);
        assert_eq!(c.spec.ha.maximum_lag_on_failover, 1_048_576);
        assert_eq!(c.spec.ha.synchronous_mode, SynchronousMode::Off);
        assert_eq!(c.spec.ha.watchdog.mode, WatchdogMode::Automatic);
        assert_eq!(c.spec.bootstrap.database, "app");
        assert!(!c.spec.pause);
        assert_eq!(c.spec.postgres_uid, 999);
        assert!(c.spec.bootstrap.initdb.data_checksums);
        assert_eq!(c.spec.ha.synchronous_node_count, 1);
        assert!(
            c.spec.ha.failsafe_mode,
            "failsafe is on unless the spec turns it off"
        );
        let mut off = minimal();
        off["spec"]["ha"] = serde_json::json!({"failsafeMode": false});
        let c: PostgresCluster = serde_json::from_value(off).expect("valid spec");
        assert!(!c.spec.ha.failsafe_mode);
    }

    #[test]
    fn default_timing_keeps_patronis_rule() {
        let ha = HaSpec::default();
        assert!(ha.loop_wait + 2 * ha.retry_timeout <= ha.ttl);
        // The watchdog must fire after a full loop has had the chance to renew.
        assert!(ha.ttl - ha.watchdog.safety_margin >= ha.loop_wait);
    }

    #[test]
    fn enums_use_the_documented_spelling() {
        let mut v = minimal();
        v["spec"]["ha"] =
            serde_json::json!({"synchronousMode": "strict", "watchdog": {"mode": "required"}});
        let c: PostgresCluster = serde_json::from_value(v).expect("valid spec");
        assert_eq!(c.spec.ha.synchronous_mode, SynchronousMode::Strict);
        assert_eq!(c.spec.ha.watchdog.mode, WatchdogMode::Required);
    }
}
