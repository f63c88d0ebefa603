//! Reconcile step 1, validate (pure, no client): what admission cannot check (the CRD's schema
//! and CEL rules catch the rest); a problem becomes a `SpecValid=False` condition and a Warning
//! Event, never a crash loop. See docs/architecture.md.

use super::build::Cluster;
use crate::api::PostgresCluster;
use crate::api::backup::ARCHIVE_PARAMETERS;
use crate::api::cluster::{RESERVED_PARAMETERS, SynchronousMode};
use crate::api::names::ObjectNames;
use crate::api::timing::{HaTiming, TimingError};
use crate::common::cron::Schedule;

/// One thing wrong with a spec; its text starts with the field it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("spec.postgresql.parameters.{0} is managed by pgwarden")]
    ReservedParameter(String),
    #[error("spec.postgresql.parameters.{0} is managed by pgwarden while spec.backup is set")]
    ArchiveParameter(String),
    #[error("spec.backup.schedule: {0}")]
    Schedule(String),
    #[error("{0}")]
    RecoveryTarget(String),
    #[error("spec.backup.repository.s3.{field}: {why}")]
    BackupSecret { field: &'static str, why: String },
    #[error(
        "spec.bootstrap.recovery.source: the source's repository path {0} is this cluster's own; \
         the new cluster must archive to a path of its own (set spec.backup.repository.s3.path)"
    )]
    RecoverySamePath(String),
    #[error(
        "spec.instanceTags.{pod}: not an instance of cluster {cluster} (expected {cluster}-<ordinal>)"
    )]
    UnknownInstance { pod: String, cluster: String },
    #[error(
        "spec.ha.synchronousNodeCount ({count}) must be less than spec.instances ({instances})"
    )]
    SynchronousNodeCount { count: i32, instances: i32 },
    #[error("spec.ha: loopWait + 2*retryTimeout must not exceed ttl")]
    Renew,
    #[error("spec.ha.watchdog.safetyMargin leaves the watchdog less than a loopWait")]
    WatchdogMargin,
}

impl Problem {
    /// The field the problem is about, as the spec spells it.
    pub fn field(&self) -> String {
        match self {
            Problem::ReservedParameter(key) | Problem::ArchiveParameter(key) => {
                format!("spec.postgresql.parameters.{key}")
            }
            Problem::Schedule(_) => "spec.backup.schedule".into(),
            Problem::RecoveryTarget(_) => "spec.bootstrap.recovery.target.time".into(),
            Problem::BackupSecret { field, .. } => format!("spec.backup.repository.s3.{field}"),
            Problem::RecoverySamePath(_) => "spec.bootstrap.recovery.source".into(),
            Problem::UnknownInstance { pod, .. } => format!("spec.instanceTags.{pod}"),
            Problem::SynchronousNodeCount { .. } => "spec.ha.synchronousNodeCount".into(),
            Problem::Renew => "spec.ha".into(),
            Problem::WatchdogMargin => "spec.ha.watchdog.safetyMargin".into(),
        }
    }
}

impl From<TimingError> for Problem {
    fn from(e: TimingError) -> Self {
        match e {
            TimingError::Renew { .. } => Problem::Renew,
            TimingError::Watchdog { .. } => Problem::WatchdogMargin,
        }
    }
}

/// The cluster as the builders see it, with every problem of its spec.
pub struct ValidatedCluster<'a> {
    cluster: Cluster<'a>,
    pub problems: Vec<Problem>,
}

impl<'a> ValidatedCluster<'a> {
    /// The builders' view, only when the spec can be satisfied.
    pub fn buildable(&self) -> Option<&Cluster<'a>> {
        self.problems.is_empty().then_some(&self.cluster)
    }

    /// Names and namespace, valid or not (what the operator reads and reports on).
    pub fn identity(&self) -> &Cluster<'a> {
        &self.cluster
    }

    /// The problems as one message (status condition, Event), `None` when there are none.
    pub fn spec_problem(&self) -> Option<String> {
        (!self.problems.is_empty()).then(|| {
            self.problems
                .iter()
                .map(Problem::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// The Secrets `spec.backup` names, as observed: name → its keys, or `None` when it does not
/// exist. A missing Secret or key would leave every restarted pod unable to start
/// (CreateContainerConfigError), so it is a problem of the spec: nothing is applied until it is
/// there.
pub fn secret_problems(
    backup: Option<&crate::api::backup::BackupSpec>,
    secrets: &std::collections::BTreeMap<String, Option<Vec<String>>>,
) -> Vec<Problem> {
    use crate::api::backup::{ACCESS_KEY_ID, CA_KEY, SECRET_ACCESS_KEY};
    let Some(s3) = backup.map(|b| &b.repository.s3) else {
        return vec![];
    };
    let mut wanted = vec![(
        "credentialsSecret",
        s3.credentials_secret.as_str(),
        &[ACCESS_KEY_ID, SECRET_ACCESS_KEY][..],
    )];
    if let Some(ca) = &s3.ca_secret {
        wanted.push(("caSecret", ca.as_str(), &[CA_KEY][..]));
    }
    let mut out = vec![];
    for (field, name, keys) in wanted {
        match secrets.get(name) {
            Some(Some(present)) => {
                let missing: Vec<&str> = keys
                    .iter()
                    .filter(|k| !present.iter().any(|p| p == *k))
                    .copied()
                    .collect();
                if !missing.is_empty() {
                    out.push(Problem::BackupSecret {
                        field,
                        why: format!("Secret {name} has no key {}", missing.join(", ")),
                    });
                }
            }
            _ => out.push(Problem::BackupSecret {
                field,
                why: format!("Secret {name} does not exist in the cluster's namespace"),
            }),
        }
    }
    out
}

/// `None` when the cluster has no name, namespace or uid yet (never for an object read from the
/// apiserver).
pub fn validate<'a>(
    cluster: &'a PostgresCluster,
    agent_image: &str,
    agent_image_pull_policy: &str,
) -> Option<ValidatedCluster<'a>> {
    Some(ValidatedCluster {
        cluster: Cluster::new(cluster, agent_image, agent_image_pull_policy)?,
        problems: problems(cluster),
    })
}

/// Every problem found, each naming its field; empty when the spec can be satisfied.
pub fn problems(cluster: &PostgresCluster) -> Vec<Problem> {
    let spec = &cluster.spec;
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let names = ObjectNames::new(&name);
    let mut out = vec![];
    for key in spec.postgresql.parameters.keys() {
        if RESERVED_PARAMETERS.contains(&key.as_str()) {
            out.push(Problem::ReservedParameter(key.clone()));
        } else if spec.backup.is_some() && ARCHIVE_PARAMETERS.contains(&key.as_str()) {
            out.push(Problem::ArchiveParameter(key.clone()));
        }
    }
    if let Some(backup) = &spec.backup
        && let Err(e) = backup.schedule.parse::<Schedule>()
    {
        out.push(Problem::Schedule(e.to_string()));
    }
    if let Some(recovery) = &spec.bootstrap.recovery {
        let ns = cluster.metadata.namespace.clone().unwrap_or_default();
        if let Err(e) = recovery.recovery(&ns) {
            out.push(Problem::RecoveryTarget(e));
        }
        if let Some(backup) = &spec.backup {
            let own = backup
                .repository
                .s3
                .path
                .clone()
                .unwrap_or_else(|| format!("/{ns}/{name}"));
            let source = recovery.source_path(&ns);
            if own.trim_end_matches('/') == source.trim_end_matches('/') {
                out.push(Problem::RecoverySamePath(source));
            }
        }
    }
    for pod in spec.instance_tags.keys() {
        let known = (0..16u32).any(|i| names.pod(i) == *pod);
        if !known {
            out.push(Problem::UnknownInstance {
                pod: pod.clone(),
                cluster: name.clone(),
            });
        }
    }
    if spec.ha.synchronous_mode != SynchronousMode::Off
        && spec.ha.synchronous_node_count >= spec.instances
    {
        out.push(Problem::SynchronousNodeCount {
            count: spec.ha.synchronous_node_count,
            instances: spec.instances,
        });
    }
    let ha = &spec.ha;
    let timing = HaTiming {
        ttl: ha.ttl.into(),
        loop_wait: ha.loop_wait.into(),
        retry_timeout: ha.retry_timeout.into(),
        safety_margin: ha.watchdog.safety_margin.into(),
    };
    out.extend(timing.problems().into_iter().map(Problem::from));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::build::fixtures::cluster;

    #[test]
    fn a_default_spec_has_no_problems() {
        assert!(problems(&cluster(serde_json::json!({}))).is_empty());
    }

    #[test]
    fn each_problem_names_its_field() {
        let c = cluster(serde_json::json!({
            "instances": 2,
            "postgresql": {"parameters": {"port": "5433"}},
            "instanceTags": {"other-0": {"nofailover": true}},
            "ha": {"synchronousMode": "on", "synchronousNodeCount": 2, "ttl": 8, "watchdog": {"safetyMargin": 7}}
        }));
        let p: Vec<String> = problems(&c).iter().map(Problem::to_string).collect();
        assert!(
            p.iter()
                .any(|m| m.starts_with("spec.postgresql.parameters.port")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.starts_with("spec.instanceTags.other-0")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("spec.ha.synchronousNodeCount")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("spec.ha.watchdog.safetyMargin")),
            "{p:?}"
        );
        for problem in problems(&c) {
            assert!(
                problem.to_string().starts_with(&problem.field()),
                "{problem}"
            );
        }
    }

    #[test]
    fn archiving_parameters_are_the_users_only_without_a_repository() {
        let params = serde_json::json!({"parameters": {"archive_mode": "on", "archive_command": "cp %p /x"}});
        assert!(problems(&cluster(serde_json::json!({"postgresql": params.clone()}))).is_empty());
        let c = cluster(
            serde_json::json!({"postgresql": params, "backup": {"repository": {"s3": {
            "endpoint": "s3.example.com", "bucket": "b", "credentialsSecret": "c"}}}}),
        );
        let p: Vec<String> = problems(&c).iter().map(Problem::to_string).collect();
        assert_eq!(
            p,
            [
                "spec.postgresql.parameters.archive_command is managed by pgwarden while spec.backup is set",
                "spec.postgresql.parameters.archive_mode is managed by pgwarden while spec.backup is set"
            ]
        );
    }

    #[test]
    fn a_backup_schedule_that_is_not_cron_names_the_field() {
        let c = cluster(
            serde_json::json!({"backup": {"schedule": "0 25 * * *", "repository": {
            "s3": {"endpoint": "s3.example.com", "bucket": "b", "credentialsSecret": "c"}}}}),
        );
        let p: Vec<String> = problems(&c).iter().map(Problem::to_string).collect();
        assert_eq!(
            p,
            ["spec.backup.schedule: hour field \"25\": 25 is outside 0-23"]
        );
    }

    #[test]
    fn a_recovery_must_not_archive_into_its_source_and_needs_a_real_time() {
        let backup = serde_json::json!({"repository": {
            "s3": {"endpoint": "s3.example.com", "bucket": "b", "credentialsSecret": "c"}}});
        // The fixture cluster is db/main: restoring "main" from /db/main onto itself.
        let c = cluster(serde_json::json!({"backup": backup,
            "bootstrap": {"recovery": {"source": {"cluster": "main"},
                "target": {"time": "2026-02-30T00:00:00Z"}}}}));
        let p = problems(&c);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].field(), "spec.bootstrap.recovery.target.time");
        assert!(p[1].to_string().contains("/db/main"), "{}", p[1]);
        let ok = cluster(serde_json::json!({"backup": backup,
            "bootstrap": {"recovery": {"source": {"cluster": "orders"},
                "target": {"time": "2026-12-02T08:00:00Z"}}}}));
        assert!(problems(&ok).is_empty());
    }

    #[test]
    fn a_missing_secret_or_key_of_the_repository_is_a_problem_of_the_spec() {
        let c = cluster(serde_json::json!({"backup": {"repository": {"s3": {
            "endpoint": "s3.example.com", "bucket": "b", "credentialsSecret": "keys",
            "caSecret": "ca"}}}}));
        let b = c.spec.backup.as_ref();
        let mut secrets = std::collections::BTreeMap::new();
        let p: Vec<String> = secret_problems(b, &secrets)
            .iter()
            .map(Problem::to_string)
            .collect();
        assert_eq!(
            p,
            [
                "spec.backup.repository.s3.credentialsSecret: Secret keys does not exist in the cluster's namespace",
                "spec.backup.repository.s3.caSecret: Secret ca does not exist in the cluster's namespace"
            ]
        );
        secrets.insert(
            "keys".to_string(),
            Some(vec!["AWS_ACCESS_KEY_ID".to_string()]),
        );
        secrets.insert("ca".to_string(), Some(vec!["ca.crt".to_string()]));
        let p = secret_problems(b, &secrets);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].field(), "spec.backup.repository.s3.credentialsSecret");
        assert!(p[0].to_string().contains("no key AWS_SECRET_ACCESS_KEY"));
        assert!(secret_problems(None, &secrets).is_empty());
    }

    #[test]
    fn the_messages_are_the_ones_status_and_events_carry() {
        let c = cluster(serde_json::json!({
            "instances": 2,
            "postgresql": {"parameters": {"port": "5433"}},
            "instanceTags": {"other-0": {}},
            "ha": {"synchronousMode": "on", "synchronousNodeCount": 2, "ttl": 8, "loopWait": 4, "watchdog": {"safetyMargin": 7}}
        }));
        let v = validate(&c, "img", "IfNotPresent").expect("fixture has name, namespace, uid");
        assert!(v.buildable().is_none());
        assert_eq!(
            v.spec_problem().as_deref(),
            Some(
                "spec.postgresql.parameters.port is managed by pgwarden; \
                 spec.instanceTags.other-0: not an instance of cluster main (expected main-<ordinal>); \
                 spec.ha.synchronousNodeCount (2) must be less than spec.instances (2); \
                 spec.ha: loopWait + 2*retryTimeout must not exceed ttl; \
                 spec.ha.watchdog.safetyMargin leaves the watchdog less than a loopWait"
            )
        );
        let ok = cluster(serde_json::json!({}));
        let v = validate(&ok, "img", "IfNotPresent").expect("fixture has name, namespace, uid");
        assert!(v.buildable().is_some());
        assert_eq!(v.spec_problem(), None);
    }
}
