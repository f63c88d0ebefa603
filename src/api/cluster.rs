//! The `PostgresCluster` custom resource (`pgwarden.io/v1alpha1`): its spec with defaults, the
//! admission rules (OpenAPI bounds and CEL rules that name the offending field), and its status.
//! `pgwarden crd` prints the CRD generated from these types; `crds/` holds that output and a test
//! fails when it drifts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
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
pub struct PostgresClusterSpec {
    /// Number of PostgreSQL instances (one primary, the rest replicas).
    #[serde(default = "default_instances")]
    #[schemars(range(min = 1, max = 16))]
    pub instances: i32,

    /// Container image with the PostgreSQL server binaries (any image works: the agent binary is
    /// copied in by an init container).
    #[x_kube(validation = Rule::new("self != ''").message("spec.image must not be empty"))]
    pub image: String,

    /// Image pull policy for `spec.image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,

    /// Directory holding `postgres`, `initdb`, `pg_ctl`, `pg_basebackup`, `pg_rewind` in the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_bin_dir: Option<String>,

    #[serde(default)]
    pub postgresql: PostgresqlSpec,

    #[serde(default)]
    pub bootstrap: BootstrapSpec,

    pub storage: StorageSpec,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    #[serde(default)]
    pub ha: HaSpec,

    /// Maintenance mode: the agents manage nothing and fence nothing (Patroni's pause).
    #[serde(default)]
    pub paused: bool,
}

fn default_instances() -> i32 {
    3
}

/// PostgreSQL configuration.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresqlSpec {
    /// postgresql.conf parameters; reloadable ones apply without a restart.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Extra pg_hba.conf lines, placed before pgwarden's own.
    #[serde(default)]
    pub pg_hba: Vec<String>,
}

/// What the member that wins the `initialize` key creates after initdb.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Application database.
    #[serde(default = "default_app")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z_][a-z0-9_]{0,62}$')").message("spec.bootstrap.database must be a lower-case PostgreSQL identifier"))]
    pub database: String,
    /// Owner of the application database (credentials in Secret `<cluster>-app`).
    #[serde(default = "default_app")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z_][a-z0-9_]{0,62}$')").message("spec.bootstrap.owner must be a lower-case PostgreSQL identifier"))]
    pub owner: String,
}

impl Default for BootstrapSpec {
    fn default() -> Self {
        Self {
            database: default_app(),
            owner: default_app(),
        }
    }
}

fn default_app() -> String {
    "app".to_string()
}

/// The data volume of each instance.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each instance's `pgdata` volume, e.g. `1Gi`.
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(\\\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$')").message("spec.storage.size must be a quantity such as 1Gi"))]
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Keep the volumes when the cluster is deleted.
    #[serde(default)]
    pub retain_on_delete: bool,
}

/// Timing and failover behaviour of the agents (Patroni's dynamic configuration).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.loopWait + 2 * self.retryTimeout <= self.ttl").message("spec.ha: loopWait + 2*retryTimeout must not exceed ttl"))]
pub struct HaSpec {
    /// Seconds a leader lease is valid without renewal.
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 4, max = 3600))]
    pub ttl: i32,
    /// Seconds between two runs of the HA loop.
    #[serde(default = "default_loop_wait")]
    #[schemars(range(min = 1, max = 600))]
    pub loop_wait: i32,
    /// Seconds a primary keeps trying to renew before it demotes itself.
    #[serde(default = "default_retry_timeout")]
    #[schemars(range(min = 1, max = 600))]
    pub retry_timeout: i32,
    /// A replica further behind than this (bytes) is never promoted.
    #[serde(default = "default_maximum_lag_on_failover")]
    #[schemars(range(min = 0))]
    pub maximum_lag_on_failover: i64,
    #[serde(default)]
    pub synchronous_mode: SynchronousMode,
    /// Keep a primary running while the apiserver is unreachable if every member confirms it.
    #[serde(default)]
    pub failsafe_mode: bool,
    #[serde(default)]
    pub watchdog: WatchdogSpec,
}

// Faster than Patroni's 30/10/10, and still `loopWait + 2*retryTimeout <= ttl`: a primary that
// cannot renew for `retryTimeout` demotes itself (3 s) long before a follower may take over (8 s).
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

impl Default for HaSpec {
    fn default() -> Self {
        Self {
            ttl: default_ttl(),
            loop_wait: default_loop_wait(),
            retry_timeout: default_retry_timeout(),
            maximum_lag_on_failover: default_maximum_lag_on_failover(),
            synchronous_mode: SynchronousMode::default(),
            failsafe_mode: false,
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
    #[serde(default)]
    pub conditions: Vec<Condition>,
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
        assert!(!c.spec.paused);
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
