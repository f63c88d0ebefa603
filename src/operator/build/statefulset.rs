//! The pods: StatefulSet `<c>` (Parallel pod management, OnDelete updates so the operator picks
//! the order, a `pgdata` claim per pod) and PodDisruptionBudgets `<c>` (replicas) and `<c>-primary`. An init container copies
//! the static `pgwarden` binary from the operator's image into an emptyDir, so any image with
//! PostgreSQL server binaries can be `spec.image`; the agent is the container's entrypoint.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, HostPathVolumeSource, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Cluster;
use crate::api::backup::{self, BackupSpec, EnvValue};
use crate::api::cluster::WatchdogMode;
use crate::api::names::{LABEL_ROLE, POSTGRES_PORT, REST_PORT, ROLE_PRIMARY, ROLE_REPLICA};

/// Where things live inside the PostgreSQL container.
pub mod paths {
    pub const BIN_DIR: &str = "/pgwarden/bin";
    pub const BINARY: &str = "/pgwarden/bin/pgwarden";
    pub const DATA_MOUNT: &str = "/var/lib/postgresql/data";
    /// PGDATA is a subdirectory: volume roots may hold `lost+found` or be owned by root.
    pub const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
    pub const RUN_MOUNT: &str = "/run/pgwarden";
    /// The agent's run dir (sockets, passfile, softdog FIFO): a directory the agent creates and
    /// owns inside the emptyDir, whose root belongs to root and cannot be chmod-ed to 0700.
    pub const RUN_DIR: &str = "/run/pgwarden/agent";
    pub const SECRETS: &str = "/etc/pgwarden/secrets";
    pub const DEFAULT_PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
    /// Where the operator image keeps the binary the init container copies.
    pub const IMAGE_BINARY: &str = "/usr/local/bin/pgwarden";
    /// pgBackRest's spool, locks and logs (in the run emptyDir).
    pub const PGBACKREST_SCRATCH: &str = "/run/pgwarden/pgbackrest";
    /// The repository's CA bundle (`spec.backup.repository.s3.caSecret`).
    pub const BACKUP_CA: &str = "/etc/pgwarden/backup-ca";
    /// pgBackRest's configuration file: none; everything is in the environment. An image's own
    /// `/etc/pgbackrest.conf` may name other stanzas or be unreadable by the postgres user.
    pub const PGBACKREST_CONFIG: &str = "/dev/null";
}

/// Name of the replication user (Secret `<c>-replication`).
pub const REPLICATION_USER: &str = "replicator";

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn secret_volume(name: &str, secret: String) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            // Owner root, group fsGroup: readable by the postgres user, nobody else.
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn restricted(privileged_device: bool) -> SecurityContext {
    if privileged_device {
        // Opening a host watchdog device needs it in the container's device cgroup.
        return SecurityContext {
            privileged: Some(true),
            ..Default::default()
        };
    }
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        run_as_non_root: Some(true),
        ..Default::default()
    }
}

/// Seconds between two startup probes.
const STARTUP_PERIOD: i32 = 5;

/// The startup probe's failure threshold for `start_delay` seconds (rounded up).
fn startup_failures(start_delay: i32) -> i32 {
    (start_delay.max(1) + STARTUP_PERIOD - 1) / STARTUP_PERIOD
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(REST_PORT.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn lower<T: std::fmt::Debug>(v: T) -> String {
    format!("{v:?}").to_lowercase()
}

/// The agent's environment: identity from the downward API, everything else from the spec.
fn agent_env(cluster: &Cluster) -> Vec<EnvVar> {
    let spec = cluster.spec;
    let ha = &spec.ha;
    let s = paths::SECRETS;
    let mut env = vec![
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_IP", "status.podIP"),
        env("PGWARDEN_CLUSTER", cluster.names.cluster()),
        env("PGWARDEN_CLUSTER_UID", cluster.owner.uid.clone()),
        env("PGDATA", paths::PGDATA),
        env(
            "PGWARDEN_PG_BIN_DIR",
            spec.postgres_bin_dir
                .clone()
                .unwrap_or_else(|| paths::DEFAULT_PG_BIN_DIR.into()),
        ),
        env("PGWARDEN_RUN_DIR", paths::RUN_DIR),
        env(
            "PGWARDEN_SUPERUSER_PASSWORD_FILE",
            format!("{s}/superuser/password"),
        ),
        env("PGWARDEN_REPLICATION_USER", REPLICATION_USER),
        env(
            "PGWARDEN_REPLICATION_PASSWORD_FILE",
            format!("{s}/replication/password"),
        ),
        env("PGWARDEN_APP_USER", spec.bootstrap.owner.clone()),
        env("PGWARDEN_APP_DATABASE", spec.bootstrap.database.clone()),
        env("PGWARDEN_APP_PASSWORD_FILE", format!("{s}/app/password")),
        env("PGWARDEN_API_TOKEN_FILE", format!("{s}/api/token")),
        env("PGWARDEN_TTL", ha.ttl.to_string()),
        env("PGWARDEN_LOOP_WAIT", ha.loop_wait.to_string()),
        env("PGWARDEN_RETRY_TIMEOUT", ha.retry_timeout.to_string()),
        env(
            "PGWARDEN_MAXIMUM_LAG_ON_FAILOVER",
            ha.maximum_lag_on_failover.to_string(),
        ),
        env("PGWARDEN_SYNCHRONOUS_MODE", lower(ha.synchronous_mode)),
        env("PGWARDEN_WATCHDOG_MODE", lower(ha.watchdog.mode)),
        env(
            "PGWARDEN_WATCHDOG_SAFETY_MARGIN",
            ha.watchdog.safety_margin.to_string(),
        ),
        env(
            "PGWARDEN_INITDB_ENCODING",
            spec.bootstrap.initdb.encoding.clone(),
        ),
        env(
            "PGWARDEN_INITDB_LOCALE",
            spec.bootstrap.initdb.locale.clone(),
        ),
        env(
            "PGWARDEN_INITDB_DATA_CHECKSUMS",
            spec.bootstrap.initdb.data_checksums.to_string(),
        ),
    ];
    if let Some(device) = &ha.watchdog.device {
        env.push(self::env("PGWARDEN_WATCHDOG_DEVICE", device.clone()));
    }
    if !spec.instance_tags.is_empty() {
        env.push(self::env(
            "PGWARDEN_INSTANCE_TAGS",
            serde_json::to_string(&spec.instance_tags).unwrap_or_else(|_| "{}".into()),
        ));
    }
    if !spec.bootstrap.roles.is_empty() {
        env.push(self::env(
            "PGWARDEN_BOOTSTRAP_ROLES",
            serde_json::to_string(&spec.bootstrap.roles).unwrap_or_else(|_| "[]".into()),
        ));
    }
    if let Some(backup) = &spec.backup {
        env.extend(pgbackrest_env(cluster, backup));
        if backup.wal_archiving {
            env.push(self::env("PGWARDEN_WAL_ARCHIVING", "true"));
        }
        // Validation refuses a recovery it cannot turn into this (src/operator/validate.rs).
        if let Some(recovery) = spec
            .bootstrap
            .recovery
            .as_ref()
            .and_then(|r| r.recovery(&cluster.namespace).ok())
        {
            env.push(self::env(
                "PGWARDEN_RECOVERY",
                serde_json::to_string(&recovery).unwrap_or_default(),
            ));
        }
    }
    if !spec.bootstrap.databases.is_empty() {
        env.push(self::env(
            "PGWARDEN_BOOTSTRAP_DATABASES",
            serde_json::to_string(&spec.bootstrap.databases).unwrap_or_else(|_| "[]".into()),
        ));
    }
    env
}

/// pgBackRest's configuration (`spec.backup`), inherited by PostgreSQL's `archive_command` and
/// by every `pgbackrest` the agent runs.
fn pgbackrest_env(cluster: &Cluster, backup: &BackupSpec) -> Vec<EnvVar> {
    let instance = backup::Instance {
        namespace: &cluster.namespace,
        cluster: cluster.names.cluster(),
        pgdata: paths::PGDATA,
        socket_dir: paths::RUN_DIR,
        port: POSTGRES_PORT,
        scratch_dir: paths::PGBACKREST_SCRATCH,
        ca_dir: paths::BACKUP_CA,
        empty_config: paths::PGBACKREST_CONFIG,
    };
    backup
        .pgbackrest_env(&instance)
        .into_iter()
        .map(|(name, value)| match value {
            EnvValue::Literal(v) => env(&name, v),
            EnvValue::SecretKey { secret, key } => EnvVar {
                name,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret,
                        key,
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        })
        .collect()
}

fn pod_spec(cluster: &Cluster) -> PodSpec {
    let spec = cluster.spec;
    let n = &cluster.names;
    let host_device = spec
        .ha
        .watchdog
        .device
        .clone()
        .filter(|_| spec.ha.watchdog.mode != WatchdogMode::Off);
    let mut volumes = vec![
        Volume {
            name: "pgwarden-bin".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        Volume {
            name: "run".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        secret_volume("superuser", n.secret_superuser()),
        secret_volume("replication", n.secret_replication()),
        secret_volume("app", n.secret_app()),
        secret_volume("api", n.secret_api()),
    ];
    let s = paths::SECRETS;
    let mut mounts = vec![
        mount("pgdata", paths::DATA_MOUNT, false),
        mount("pgwarden-bin", paths::BIN_DIR, true),
        mount("run", paths::RUN_MOUNT, false),
        mount("superuser", &format!("{s}/superuser"), true),
        mount("replication", &format!("{s}/replication"), true),
        mount("app", &format!("{s}/app"), true),
        mount("api", &format!("{s}/api"), true),
    ];
    if let Some(ca) = spec
        .backup
        .as_ref()
        .and_then(|b| b.repository.s3.ca_secret.clone())
    {
        volumes.push(secret_volume("backup-ca", ca));
        mounts.push(mount("backup-ca", paths::BACKUP_CA, true));
    }
    if let Some(device) = &host_device {
        volumes.push(Volume {
            name: "watchdog".into(),
            host_path: Some(HostPathVolumeSource {
                path: device.clone(),
                type_: Some("CharDevice".into()),
            }),
            ..Default::default()
        });
        mounts.push(mount("watchdog", device, false));
    }
    let install = Container {
        name: "install-pgwarden".into(),
        image: Some(cluster.agent_image.clone()),
        image_pull_policy: Some(cluster.agent_image_pull_policy.clone()),
        command: Some(vec![
            paths::IMAGE_BINARY.into(),
            "install".into(),
            paths::BINARY.into(),
        ]),
        volume_mounts: Some(vec![mount("pgwarden-bin", paths::BIN_DIR, false)]),
        security_context: Some(restricted(false)),
        ..Default::default()
    };
    let postgres = Container {
        name: "postgres".into(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.clone(),
        command: Some(vec![paths::BINARY.into(), "agent".into()]),
        env: Some(agent_env(cluster)),
        ports: Some(vec![
            ContainerPort {
                name: Some("postgresql".into()),
                container_port: POSTGRES_PORT.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("api".into()),
                container_port: REST_PORT.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        // Ready once it is the primary or a streaming replica within the lag limit; the startup
        // probe waits for that too (up to spec.startDelay), so a restore, which holds the HA
        // loop, or a long basebackup is not killed by the liveness probe.
        readiness_probe: Some(http_probe("/readiness", 2, 2)),
        liveness_probe: Some(http_probe("/liveness", 10, 3)),
        startup_probe: Some(http_probe(
            "/readiness",
            STARTUP_PERIOD,
            startup_failures(spec.start_delay),
        )),
        resources: spec.resources.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(restricted(host_device.is_some())),
        ..Default::default()
    };
    PodSpec {
        service_account_name: Some(n.agent_rbac()),
        automount_service_account_token: Some(true),
        enable_service_links: Some(false),
        // A clean stop checkpoints and hands the Lease over; give it the time.
        termination_grace_period_seconds: Some(30),
        security_context: Some(PodSecurityContext {
            run_as_user: Some(spec.postgres_uid),
            run_as_group: Some(spec.postgres_gid),
            fs_group: Some(spec.postgres_gid),
            fs_group_change_policy: Some("OnRootMismatch".into()),
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        init_containers: Some(vec![install]),
        containers: vec![postgres],
        volumes: Some(volumes),
        affinity: affinity(cluster),
        tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
        node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
        topology_spread_constraints: (!spec.topology_spread_constraints.is_empty())
            .then(|| spec.topology_spread_constraints.clone()),
        ..Default::default()
    }
}

/// Where the pods may run: the spec's affinity when it gives one; otherwise, unless the spec
/// spreads the pods itself (topologySpreadConstraints), a preferred anti-affinity between the
/// cluster's pods on `kubernetes.io/hostname`, so that one node's loss takes one instance, not the
/// primary and its replicas together. Preferred, not required: a cluster with more instances
/// than nodes (a one-node test bed) still schedules every pod.
fn affinity(cluster: &Cluster) -> Option<Affinity> {
    let spec = cluster.spec;
    if spec.affinity.is_some() || !spec.topology_spread_constraints.is_empty() {
        return spec.affinity.clone();
    }
    Some(Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(cluster.labels()),
                            ..Default::default()
                        }),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..Default::default()
                    },
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The StatefulSet with `replicas` pods (the caller decides: scaling down waits for a switchover
/// when the primary would be removed).
pub fn statefulset(cluster: &Cluster, replicas: i32) -> StatefulSet {
    let spec = cluster.spec;
    let labels = cluster.labels();
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("pgdata".into()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(spec.storage.size.clone()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    StatefulSet {
        metadata: cluster.meta(cluster.names.statefulset()),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(cluster.names.service_pods()),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..Default::default()
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(
                        if spec.storage.retain_on_delete {
                            "Retain"
                        } else {
                            "Delete"
                        }
                        .into(),
                    ),
                    // A removed replica's data is stale; a new one starts from a basebackup.
                    when_scaled: Some("Delete".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(pod_spec(cluster)),
            },
            volume_claim_templates: Some(vec![claim]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Voluntary disruptions (drains) of the replicas: at most one replica down, written as
/// `minAvailable` of the others because a `maxUnavailable` budget over part of a StatefulSet's
/// pods counts the StatefulSet's whole scale as expected and would allow nothing. The
/// operator's own rolling steps keep to the same rule. Pods without a role label (starting,
/// not streaming) are in neither budget.
pub fn pod_disruption_budget(cluster: &Cluster) -> PodDisruptionBudget {
    budget(
        cluster,
        cluster.names.pod_disruption_budget(),
        ROLE_REPLICA,
        (cluster.spec.instances - 2).max(0),
    )
}

/// The primary is never evicted: a drain of its node waits until the operator has switched
/// over to a replica on another node (the old primary is then a replica, in the budget above).
/// A single instance has no one to hand over to, so its budget allows the eviction.
pub fn primary_disruption_budget(cluster: &Cluster) -> PodDisruptionBudget {
    budget(
        cluster,
        cluster.names.pod_disruption_budget_primary(),
        ROLE_PRIMARY,
        i32::from(cluster.spec.instances > 1),
    )
}

fn budget(cluster: &Cluster, name: String, role: &str, min_available: i32) -> PodDisruptionBudget {
    let mut selector = cluster.labels();
    selector.insert(LABEL_ROLE.into(), role.into());
    PodDisruptionBudget {
        metadata: cluster.meta(name),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(min_available)),
            selector: Some(LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::names;
    use crate::operator::build::fixtures::cluster;

    fn env_of(sts: &StatefulSet) -> BTreeMap<String, String> {
        let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        pod.containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
            .collect()
    }

    #[test]
    fn a_longer_start_delay_gives_the_startup_probe_more_failures() {
        assert_eq!(startup_failures(3600), 720);
        assert_eq!(startup_failures(60), 12);
        assert_eq!(startup_failures(86401), 17281);
        let c = cluster(serde_json::json!({"startDelay": 86400}));
        let cluster = Cluster::new(&c, "img", "IfNotPresent").unwrap();
        let sts = statefulset(&cluster, 3);
        let pod = sts.spec.unwrap().template.spec.unwrap();
        let pg = &pod.containers[0];
        let startup = pg.startup_probe.as_ref().unwrap();
        assert_eq!(startup.failure_threshold, Some(17280));
    }

    #[test]
    fn the_statefulset_follows_the_design() {
        let c = cluster(serde_json::json!({"instances": 3}));
        let cluster = Cluster::new(&c, "pgwarden.local/pgwarden:dev", "IfNotPresent").unwrap();
        let sts = statefulset(&cluster, 3);
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(
            spec.update_strategy.as_ref().unwrap().type_.as_deref(),
            Some("OnDelete")
        );
        assert_eq!(spec.service_name.as_deref(), Some("main-pods"));
        let policy = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap();
        assert_eq!(policy.when_deleted.as_deref(), Some("Delete"));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("main-agent"));
        let init = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.image.as_deref(), Some("pgwarden.local/pgwarden:dev"));
        let pg = &pod.containers[0];
        assert_eq!(
            pg.command.as_ref().unwrap(),
            &["/pgwarden/bin/pgwarden", "agent"]
        );
        assert_eq!(
            pg.readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/readiness")
        );
        assert_eq!(
            pg.liveness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/liveness")
        );
        // The default spec.startDelay: an hour of startup probes, 5 s apart.
        let startup = pg.startup_probe.as_ref().unwrap();
        assert_eq!(startup.period_seconds, Some(5));
        assert_eq!(startup.failure_threshold, Some(720));
        let sc = pg.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.privileged, None);
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_user, Some(999));
        assert_eq!(psc.fs_group, Some(999));
        let env = env_of(&sts);
        assert_eq!(env["PGWARDEN_CLUSTER"], "main");
        assert_eq!(env["PGDATA"], "/var/lib/postgresql/data/pgdata");
        assert_eq!(env["PGWARDEN_TTL"], "8");
        assert_eq!(env["PGWARDEN_SYNCHRONOUS_MODE"], "off");
        assert_eq!(env["PGWARDEN_WATCHDOG_MODE"], "automatic");
        assert!(!env.contains_key("PGWARDEN_WATCHDOG_DEVICE"));
        assert!(
            pod.volumes
                .as_ref()
                .unwrap()
                .iter()
                .all(|v| v.host_path.is_none()),
            "no host path without a watchdog device"
        );
    }

    #[test]
    fn instances_spread_over_nodes_unless_the_spec_places_them() {
        let pod_affinity = |spec: serde_json::Value| {
            let c = cluster(spec);
            let cluster = Cluster::new(&c, "img", "IfNotPresent").unwrap();
            let sts = statefulset(&cluster, 3);
            sts.spec.unwrap().template.spec.unwrap().affinity
        };
        let default = pod_affinity(serde_json::json!({"instances": 3}))
            .and_then(|a| a.pod_anti_affinity)
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
            .expect("a preferred anti-affinity by default");
        assert_eq!(default.len(), 1);
        let term = &default[0].pod_affinity_term;
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        let labels = term
            .label_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .unwrap();
        assert_eq!(
            labels.get(names::LABEL_CLUSTER).map(String::as_str),
            Some("main")
        );
        // The spec's own placement wins, whole.
        let own = pod_affinity(serde_json::json!({
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "disk", "operator": "In", "values": ["ssd"]}]}]}}}
        }))
        .unwrap();
        assert!(own.node_affinity.is_some() && own.pod_anti_affinity.is_none());
        let spread = pod_affinity(serde_json::json!({
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule"}]
        }));
        assert!(spread.is_none());
    }

    #[test]
    fn a_host_watchdog_device_is_mounted_and_driven() {
        let c = cluster(serde_json::json!({
            "ha": {"watchdog": {"mode": "required", "device": "/dev/watchdog"}},
            "storage": {"size": "1Gi", "retainOnDelete": true},
            "instanceTags": {"main-2": {"nofailover": true}}
        }));
        let cluster = Cluster::new(&c, "img", "IfNotPresent").unwrap();
        let sts = statefulset(&cluster, 3);
        let env = env_of(&sts);
        assert_eq!(env["PGWARDEN_WATCHDOG_DEVICE"], "/dev/watchdog");
        assert_eq!(env["PGWARDEN_WATCHDOG_MODE"], "required");
        assert_eq!(
            env["PGWARDEN_INSTANCE_TAGS"],
            r#"{"main-2":{"nofailover":true,"noloadbalance":false,"nosync":false}}"#
        );
        let spec = sts.spec.as_ref().unwrap();
        let pod = spec.template.spec.as_ref().unwrap();
        let dev = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "watchdog")
            .unwrap();
        assert_eq!(dev.host_path.as_ref().unwrap().path, "/dev/watchdog");
        assert_eq!(
            pod.containers[0]
                .security_context
                .as_ref()
                .unwrap()
                .privileged,
            Some(true)
        );
        assert_eq!(
            spec.persistent_volume_claim_retention_policy
                .as_ref()
                .unwrap()
                .when_deleted
                .as_deref(),
            Some("Retain")
        );
    }

    #[test]
    fn a_backup_repository_configures_pgbackrest_in_the_environment() {
        let c = cluster(serde_json::json!({"backup": {"repository": {"s3": {
            "endpoint": "10.213.0.1:9000", "bucket": "pgwarden", "uriStyle": "path",
            "credentialsSecret": "store-keys", "caSecret": "store-ca"}}}}));
        let built = Cluster::new(&c, "img", "IfNotPresent").unwrap();
        let sts = statefulset(&built, 3);
        let env = env_of(&sts);
        assert_eq!(env["PGBACKREST_STANZA"], "main");
        assert_eq!(env["PGBACKREST_PG1_PATH"], paths::PGDATA);
        assert_eq!(env["PGBACKREST_PG1_SOCKET_PATH"], paths::RUN_DIR);
        assert_eq!(env["PGBACKREST_REPO1_STORAGE_PORT"], "9000");
        assert_eq!(
            env["PGBACKREST_REPO1_STORAGE_CA_FILE"],
            "/etc/pgwarden/backup-ca/ca.crt"
        );
        assert_eq!(env["PGBACKREST_CONFIG"], "/dev/null");
        let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let key = pod.containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "PGBACKREST_REPO1_S3_KEY_SECRET")
            .and_then(|e| e.value_from.as_ref()?.secret_key_ref.clone())
            .expect("the secret key comes from the Secret");
        assert_eq!(
            (key.name.as_str(), key.key.as_str()),
            ("store-keys", "AWS_SECRET_ACCESS_KEY")
        );
        let ca = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "backup-ca")
            .and_then(|v| v.secret.as_ref()?.secret_name.clone());
        assert_eq!(ca.as_deref(), Some("store-ca"));
        let without = cluster(serde_json::json!({}));
        let without = Cluster::new(&without, "img", "IfNotPresent").unwrap();
        assert!(
            !env_of(&statefulset(&without, 3))
                .keys()
                .any(|k| k.starts_with("PGBACKREST_")),
            "no repository, no pgBackRest"
        );
    }

    /// A drain may take one replica at a time and never the primary (the operator switches
    /// over first); a single instance may be evicted (no one to hand over to).
    #[test]
    fn the_budgets_let_one_replica_go_and_never_the_primary() {
        let budget = |instances: i32| {
            let c = cluster(serde_json::json!({"instances": instances}));
            let cluster = Cluster::new(&c, "pgwarden.local/pgwarden:dev", "IfNotPresent").unwrap();
            let spec = |b: PodDisruptionBudget| {
                let s = b.spec.unwrap();
                let role = s.selector.unwrap().match_labels.unwrap()[LABEL_ROLE].clone();
                assert!(s.max_unavailable.is_none());
                (b.metadata.name.unwrap(), role, s.min_available.unwrap())
            };
            (
                spec(pod_disruption_budget(&cluster)),
                spec(primary_disruption_budget(&cluster)),
            )
        };
        let (replicas, primary) = budget(3);
        assert_eq!(
            replicas,
            ("main".into(), "replica".into(), IntOrString::Int(1))
        );
        assert_eq!(
            primary,
            ("main-primary".into(), "primary".into(), IntOrString::Int(1))
        );
        assert_eq!(budget(2).0.2, IntOrString::Int(0));
        assert_eq!(budget(1).1.2, IntOrString::Int(0));
    }
}
