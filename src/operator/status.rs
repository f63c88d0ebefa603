//! Reconcile step 6, status (pure, no client; `apply::status` writes it): the cluster's status
//! from what the operator observed (pods, their member annotations, the Lease holder, the
//! timeline history). Conditions keep their `lastTransitionTime` unless their status flips.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::observe::Observed;
use crate::api::PostgresCluster;
use crate::api::cluster::{InstanceStatus, PostgresClusterStatus, PrimaryChange};
use crate::api::member::{MemberRole, MemberStatus};
use crate::api::names::{ANNOTATION_STATUS, LABEL_CLUSTER};
use crate::api::state::HistoryEntry;

/// Condition types.
pub const READY: &str = "Ready";
pub const PRIMARY_AVAILABLE: &str = "PrimaryAvailable";
pub const SPEC_VALID: &str = "SpecValid";
pub const PROGRESSING: &str = "Progressing";
/// `spec.backup.walArchiving`: is the primary's `archive_command` succeeding?
pub const CONTINUOUS_ARCHIVING: &str = "ContinuousArchiving";
/// With `spec.bootstrap.recovery`: whether the restore that creates the cluster succeeded.
pub const RESTORED: &str = "Restored";

/// A pod's member status, if its annotation parses.
pub fn member_status(pod: &Pod) -> Option<MemberStatus> {
    let raw = pod.metadata.annotations.as_ref()?.get(ANNOTATION_STATUS)?;
    MemberStatus::parse(raw).ok()
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the pod runs the StatefulSet's newest template.
pub fn pod_updated(pod: &Pod, update_revision: Option<&str>) -> bool {
    let revision = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("controller-revision-hash"));
    match (revision, update_revision) {
        (Some(r), Some(u)) => r == u,
        _ => true,
    }
}

/// The primary: the Lease holder, if its pod exists and its agent reports itself primary.
pub fn primary(observed: &Observed) -> Option<String> {
    let holder = observed.lease_holder.as_deref()?;
    observed
        .pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(holder))
        .and_then(member_status)
        .filter(|s| s.role == MemberRole::Primary)
        .map(|_| holder.to_string())
}

fn primary_change(history: &[HistoryEntry], switchover: bool) -> Option<PrimaryChange> {
    let index = history
        .iter()
        .rposition(|h| h.is_switchover() == switchover)?;
    let entry = &history[index];
    let from = index
        .checked_sub(1)
        .map(|i| history[i].new_leader.clone())
        .filter(|s| !s.is_empty());
    let time = entry.time.parse::<jiff::Timestamp>().ok()?;
    Some(PrimaryChange {
        from,
        to: entry.new_leader.clone(),
        timeline: i64::from(entry.timeline) + 1,
        time: Time(time),
    })
}

/// A condition's type, status (`True`, `False`, `Unknown`), reason and message.
type ConditionValue = (String, &'static str, String, String);

fn condition(type_: &str, ok: bool, reason: &str, message: String) -> ConditionValue {
    (
        type_.into(),
        if ok { "True" } else { "False" },
        reason.into(),
        message,
    )
}

/// `ContinuousArchiving`, when the spec archives WAL: from the primary's `pg_stat_archiver`.
fn archiving_condition(primary: Option<&MemberStatus>) -> ConditionValue {
    // The repository itself refuses (credentials, bucket, certificate): pgBackRest's words.
    if let Some(e) = primary.and_then(|p| p.stanza_error.as_ref()) {
        return (
            CONTINUOUS_ARCHIVING.into(),
            "False",
            "RepositoryUnavailable".into(),
            format!(
                "the backup repository refuses: {e}; WAL accumulates in pg_wal until it answers"
            ),
        );
    }
    match primary.and_then(|p| p.archiver.as_ref()) {
        Some(stats) => {
            let h = stats.health();
            (
                CONTINUOUS_ARCHIVING.into(),
                h.status,
                h.reason.into(),
                h.message,
            )
        }
        None => (
            CONTINUOUS_ARCHIVING.into(),
            "Unknown",
            "NoArchiverStatus".into(),
            "no primary has reported pg_stat_archiver yet".into(),
        ),
    }
}

/// `Restored`: True once the cluster has a system identifier (the restore finished and a
/// primary recorded it), False with the last member's reason while restores fail, Unknown while
/// one runs.
fn restored_condition(observed: &Observed) -> ConditionValue {
    if observed.initialized {
        return (
            RESTORED.into(),
            "True",
            "Restored".into(),
            "the cluster was restored from its source's backup".into(),
        );
    }
    let failure = observed
        .pods
        .iter()
        .filter_map(|p| member_status(p).and_then(|s| s.bootstrap_error))
        .next();
    match failure {
        Some(e) => (
            RESTORED.into(),
            "False",
            "RestoreFailed".into(),
            format!("the restore failed and is tried again: {e}"),
        ),
        None => (
            RESTORED.into(),
            "Unknown",
            "Restoring".into(),
            "a member restores the source's backup".into(),
        ),
    }
}

/// Merge new condition values into the old list: `lastTransitionTime` moves only on a flip.
pub fn merge_conditions(
    old: &[Condition],
    new: Vec<ConditionValue>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    new.into_iter()
        .map(|(type_, status, reason, message)| {
            let status = status.to_string();
            let previous = old.iter().find(|c| c.type_ == type_);
            let last_transition_time = match previous {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_,
                status,
                reason,
                message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The status from what was observed, the spec's problems (`None` when it can be satisfied) and
/// what a rolling change is doing now (`None` when nothing rolls).
pub fn compute(
    cluster: &PostgresCluster,
    observed: &Observed,
    spec_problem: Option<&str>,
    rolling: Option<&str>,
    now: &Time,
) -> PostgresClusterStatus {
    let old = cluster.status.clone().unwrap_or_default();
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let primary = primary(observed);
    let primary_status = primary
        .as_deref()
        .and_then(|p| {
            observed
                .pods
                .iter()
                .find(|x| x.metadata.name.as_deref() == Some(p))
        })
        .and_then(member_status);
    let primary_lsn = primary_status.as_ref().and_then(|s| s.xlog_location);
    let mut instances: Vec<InstanceStatus> = observed
        .pods
        .iter()
        .map(|pod| {
            let status = member_status(pod);
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            let role = status.as_ref().and_then(|s| match s.role {
                MemberRole::Primary if primary.as_deref() == Some(pod_name.as_str()) => {
                    Some("primary".to_string())
                }
                MemberRole::Replica => Some("replica".to_string()),
                _ => None,
            });
            let lag = match (
                &role,
                primary_lsn,
                status.as_ref().and_then(|s| s.xlog_location),
            ) {
                (Some(r), Some(p), Some(mine)) if r == "replica" => {
                    Some(p.saturating_sub(mine) as i64)
                }
                _ => None,
            };
            InstanceStatus {
                name: pod_name,
                role,
                state: status
                    .as_ref()
                    .and_then(|s| serde_json::to_value(s.state).ok())
                    .and_then(|v| v.as_str().map(str::to_string)),
                timeline: status.as_ref().and_then(|s| s.timeline).map(i64::from),
                lag_bytes: lag,
                ready: pod_ready(pod),
                pending_restart: status.as_ref().is_some_and(|s| s.pending_restart),
                updated: pod_updated(pod, observed.update_revision.as_deref()),
            }
        })
        .collect();
    instances.sort_by_key(|i| ordinal(&i.name));
    let ready = instances.iter().filter(|i| i.ready).count() as i32;
    let desired = cluster.spec.instances;
    let timeline = primary
        .as_ref()
        .and_then(|p| instances.iter().find(|i| &i.name == p))
        .and_then(|i| i.timeline);

    let phase = if spec_problem.is_some() {
        "Invalid"
    } else if cluster.spec.pause {
        "Paused"
    } else if primary.is_none() {
        if observed.history.is_empty() && instances.iter().all(|i| i.role.is_none()) {
            "Creating"
        } else {
            "NoPrimary"
        }
    } else if rolling.is_some() {
        "Updating"
    } else if ready == desired && instances.len() as i32 == desired {
        "Healthy"
    } else {
        "Degraded"
    };

    let mut values = vec![
        condition(
            READY,
            ready == desired && instances.len() as i32 == desired,
            if ready == desired {
                "AllInstancesReady"
            } else {
                "InstancesNotReady"
            },
            format!("{ready} of {desired} instances are ready"),
        ),
        condition(
            PRIMARY_AVAILABLE,
            primary.is_some(),
            if primary.is_some() {
                "PrimaryRunning"
            } else {
                "NoPrimary"
            },
            match &primary {
                Some(p) => format!("{p} holds the leader lease and runs as primary"),
                None => "no instance holds the leader lease and runs as primary".into(),
            },
        ),
        condition(
            SPEC_VALID,
            spec_problem.is_none(),
            if spec_problem.is_none() {
                "Valid"
            } else {
                "Invalid"
            },
            spec_problem.map_or_else(|| "the spec can be satisfied".into(), str::to_string),
        ),
        condition(
            PROGRESSING,
            rolling.is_some(),
            if rolling.is_some() {
                "RollingUpdate"
            } else {
                "UpToDate"
            },
            rolling.map_or_else(
                || "every instance runs the current spec".into(),
                str::to_string,
            ),
        ),
    ];
    if cluster
        .spec
        .backup
        .as_ref()
        .is_some_and(|b| b.wal_archiving)
    {
        values.push(archiving_condition(primary_status.as_ref()));
    }
    if cluster.spec.bootstrap.recovery.is_some() {
        values.push(restored_condition(observed));
    }
    let conditions = merge_conditions(&old.conditions, values, cluster.metadata.generation, now);
    let with_backup = cluster.spec.backup.is_some();
    let repository = primary_status
        .as_ref()
        .and_then(|s| s.repository.as_ref())
        .filter(|_| with_backup);
    // Without spec.backup nothing of a former repository is shown.
    let old = match cluster.spec.backup {
        Some(_) => old,
        None => PostgresClusterStatus {
            conditions: old.conditions,
            last_failover: old.last_failover,
            last_switchover: old.last_switchover,
            ..Default::default()
        },
    };

    PostgresClusterStatus {
        observed_generation: cluster.metadata.generation,
        instances: instances.len() as i32,
        ready_instances: ready,
        current_primary: primary,
        timeline,
        phase: Some(phase.into()),
        selector: Some(format!("{LABEL_CLUSTER}={name}")),
        instances_status: instances,
        last_failover: primary_change(&observed.history, false).or(old.last_failover),
        last_switchover: primary_change(&observed.history, true).or(old.last_switchover),
        next_scheduled_backup: cluster
            .spec
            .backup
            .as_ref()
            .and_then(|b| b.schedule.parse::<crate::common::cron::Schedule>().ok())
            .and_then(|s| s.next_after(now.0))
            .map(Time),
        last_scheduled_backup: old.last_scheduled_backup.clone(),
        // A run lost with its ConfigMap key (the key rewritten by hand) keeps the last one seen.
        last_backup: cluster
            .spec
            .backup
            .as_ref()
            .and(observed.backup_result.clone())
            .or(old.last_backup.clone()),
        // What the primary last read of the repository; kept while no primary publishes one
        // (during a failover, before the new primary's first read).
        last_successful_backup: repository
            .map(|r| r.backups.first().cloned())
            .unwrap_or(old.last_successful_backup.clone()),
        first_recoverability_point: repository
            .map(|r| r.first_recoverability_point.clone())
            .unwrap_or(old.first_recoverability_point.clone()),
        backups: repository
            .map(|r| r.backups.clone())
            .unwrap_or(old.backups.clone()),
        last_archived_wal: primary_status
            .as_ref()
            .filter(|_| with_backup)
            .and_then(|s| s.archiver.as_ref())
            .and_then(|a| a.last_archived_wal.as_deref().and_then(archived_segment))
            .or(old.last_archived_wal.clone()),
        conditions,
    }
}

/// The ordinal of a StatefulSet pod name (`main-2` → 2); unknown names sort last.
pub fn ordinal(pod: &str) -> u32 {
    pod.rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(u32::MAX)
}

/// What a change of the `ContinuousArchiving` condition is worth an Event for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchivingFlip {
    /// It turned False, or its reason changed while False (a Warning with the reason).
    Failing,
    /// It turned True after False.
    Resumed,
}

/// `old` and `new`: the condition's (status, reason) in the stored status and in the one being
/// written. A condition that appears False (the first status after `spec.backup` was set may
/// already be False) counts as turning False; so does a new reason while False (the store
/// refusing, after the archive command merely failing).
pub fn archiving_flip(old: Option<(&str, &str)>, new: (&str, &str)) -> Option<ArchivingFlip> {
    match (old, new) {
        (Some(o), ("False", _)) if o == new => None,
        (_, ("False", _)) => Some(ArchivingFlip::Failing),
        (Some(("False", _)), ("True", _)) => Some(ArchivingFlip::Resumed),
        _ => None,
    }
}

/// The WAL segment an archived file vouches for: a segment itself, or the segment of a backup
/// history file (`<segment>.<offset>.backup`; the archiver sends a segment before its backup
/// file, as it takes the lowest name first). A timeline history file or a `.partial` segment
/// says nothing about complete segments: `None`, and the status keeps what it had.
fn archived_segment(file: &str) -> Option<String> {
    let segment = file.get(..24)?;
    let whole = file.len() == 24 || file.ends_with(".backup");
    (whole && segment.chars().all(|c| c.is_ascii_hexdigit())).then(|| segment.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::build::fixtures::cluster;

    fn pod(name: &str, role: &str, lsn: u64, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"controller-revision-hash": "r1"}, "annotations": {
                ANNOTATION_STATUS: serde_json::json!({
                    "conn_url": "postgres://10.0.0.1:5432/postgres", "api_url": "http://10.0.0.1:8008/patroni",
                    "state": "running", "role": role, "xlog_location": lsn, "timeline": 2, "version": "0.1.0"
                }).to_string()
            }},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    fn now() -> Time {
        Time("2026-11-26T03:00:00Z".parse().unwrap())
    }

    #[test]
    fn archiving_events_come_on_each_turn_to_false_and_back() {
        use ArchivingFlip::*;
        let f = |o: Option<(&str, &str)>, n| archiving_flip(o, n);
        let failing = ("False", "ArchiveCommandFailing");
        let refused = ("False", "RepositoryUnavailable");
        let ok = ("True", "Archiving");
        assert_eq!(f(None, refused), Some(Failing), "appears False");
        assert_eq!(f(Some(ok), failing), Some(Failing));
        assert_eq!(f(Some(("Unknown", "Waiting")), refused), Some(Failing));
        assert_eq!(f(Some(failing), refused), Some(Failing), "a new reason");
        assert_eq!(f(Some(refused), refused), None, "no news");
        assert_eq!(f(Some(refused), ok), Some(Resumed));
        assert_eq!(f(Some(ok), ok), None);
        assert_eq!(f(None, ok), None);
    }

    #[test]
    fn the_last_archived_wal_is_a_segment_never_a_history_or_partial_file() {
        let seg = "000000010000000000000004";
        assert_eq!(archived_segment(seg).as_deref(), Some(seg));
        assert_eq!(
            archived_segment("000000010000000000000004.00000028.backup").as_deref(),
            Some(seg)
        );
        assert_eq!(archived_segment("00000002.history"), None);
        assert_eq!(archived_segment("000000010000000000000005.partial"), None);
        assert_eq!(archived_segment("zzzzzzzzzzzzzzzzzzzzzzzz"), None);
        assert_eq!(archived_segment(""), None);
    }

    #[test]
    fn a_healthy_cluster_reports_its_primary_lag_and_ready_count() {
        let c = cluster(serde_json::json!({"instances": 3}));
        let observed = Observed {
            pods: vec![
                pod("main-1", "replica", 900, true),
                pod("main-0", "primary", 1000, true),
                pod("main-2", "replica", 1000, true),
            ],
            lease_holder: Some("main-0".into()),
            history: vec![HistoryEntry {
                timeline: 1,
                switch_lsn: 100,
                reason: "no recovery target specified".into(),
                time: "2026-11-26T02:00:00Z".into(),
                new_leader: "main-0".into(),
            }],
            update_revision: Some("r1".into()),
            ..Default::default()
        };
        let s = compute(&c, &observed, None, None, &now());
        assert_eq!(s.phase.as_deref(), Some("Healthy"));
        assert_eq!(s.current_primary.as_deref(), Some("main-0"));
        assert_eq!(s.ready_instances, 3);
        assert_eq!(s.timeline, Some(2));
        let names: Vec<_> = s.instances_status.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["main-0", "main-1", "main-2"]);
        assert_eq!(s.instances_status[1].lag_bytes, Some(100));
        assert_eq!(s.instances_status[1].role.as_deref(), Some("replica"));
        assert!(s.instances_status.iter().all(|i| i.updated));
        let f = s.last_failover.unwrap();
        assert_eq!((f.to.as_str(), f.timeline), ("main-0", 2));
        assert!(s.last_switchover.is_none());
        assert!(
            s.conditions
                .iter()
                .any(|c| c.type_ == READY && c.status == "True")
        );
    }

    #[test]
    fn continuous_archiving_follows_the_primarys_archiver() {
        let with_backup = cluster(
            serde_json::json!({"instances": 1, "backup": {"repository": {
            "s3": {"endpoint": "s3.example.com", "bucket": "b", "credentialsSecret": "c"}}}}),
        );
        let archiving = |stats: Option<serde_json::Value>| {
            let mut p = pod("main-0", "primary", 1000, true);
            if let Some(stats) = stats {
                let annotations = p.metadata.annotations.as_mut().unwrap();
                let mut status: serde_json::Value =
                    serde_json::from_str(&annotations[ANNOTATION_STATUS]).unwrap();
                status["archiver"] = stats;
                annotations.insert(ANNOTATION_STATUS.into(), status.to_string());
            }
            let observed = Observed {
                pods: vec![p],
                lease_holder: Some("main-0".into()),
                ..Default::default()
            };
            let s = compute(&with_backup, &observed, None, None, &now());
            s.conditions
                .into_iter()
                .find(|c| c.type_ == CONTINUOUS_ARCHIVING)
                .map(|c| (c.status, c.reason))
        };
        assert_eq!(
            archiving(None),
            Some(("Unknown".into(), "NoArchiverStatus".into()))
        );
        assert_eq!(
            archiving(Some(
                serde_json::json!({"archivedCount": 4, "failedCount": 0,
                "lastArchivedWal": "000000010000000000000004", "lastArchivedTime": 1764000000})
            )),
            Some(("True".into(), "Archiving".into()))
        );
        assert_eq!(
            archiving(Some(
                serde_json::json!({"archivedCount": 4, "failedCount": 9,
                "lastArchivedWal": "000000010000000000000004", "lastArchivedTime": 1764000000,
                "lastFailedWal": "000000010000000000000005", "lastFailedTime": 1764000060})
            )),
            Some(("False".into(), "ArchiveCommandFailing".into()))
        );
        let without = cluster(serde_json::json!({"instances": 1}));
        let observed = Observed {
            pods: vec![pod("main-0", "primary", 1000, true)],
            lease_holder: Some("main-0".into()),
            ..Default::default()
        };
        let s = compute(&without, &observed, None, None, &now());
        assert!(s.conditions.iter().all(|c| c.type_ != CONTINUOUS_ARCHIVING));
        assert_eq!(s.next_scheduled_backup, None);
        let s = compute(&with_backup, &observed, None, None, &now());
        assert_eq!(
            s.next_scheduled_backup.map(|t| t.0.to_string()).as_deref(),
            Some("2026-11-27T00:00:00Z"),
            "the default schedule: daily at midnight UTC"
        );
    }

    #[test]
    fn the_repository_the_primary_read_is_shown_and_kept_across_a_failover() {
        let mut c = cluster(
            serde_json::json!({"instances": 1, "backup": {"repository": {
            "s3": {"endpoint": "s3.example.com", "bucket": "b", "credentialsSecret": "c"}}}}),
        );
        let mut p = pod("main-0", "primary", 1000, true);
        let annotations = p.metadata.annotations.as_mut().unwrap();
        let mut status: serde_json::Value =
            serde_json::from_str(&annotations[ANNOTATION_STATUS]).unwrap();
        status["repository"] = serde_json::json!({"backups": [
            {"label": "20261202-080100F_20261202-090000I", "type": "incr",
             "started": "2026-12-02T09:00:00Z", "finished": "2026-12-02T09:00:05Z"},
            {"label": "20261202-080100F", "type": "full",
             "started": "2026-12-02T08:01:00Z", "finished": "2026-12-02T08:01:10Z"}],
            "firstRecoverabilityPoint": "2026-12-02T08:01:10Z"});
        status["archiver"] = serde_json::json!({"archivedCount": 4, "failedCount": 0,
            "lastArchivedWal": "000000010000000000000004"});
        annotations.insert(ANNOTATION_STATUS.into(), status.to_string());
        let result = crate::api::state::BackupResult {
            name: "scheduled-20261202T090000Z".into(),
            phase: "completed".into(),
            member: "main-0".into(),
            started: "2026-12-02T09:00:00Z".into(),
            finished: Some("2026-12-02T09:00:06Z".into()),
            label: Some("20261202-080100F_20261202-090000I".into()),
            error: None,
        };
        let observed = Observed {
            pods: vec![p],
            lease_holder: Some("main-0".into()),
            backup_result: Some(result.clone()),
            ..Default::default()
        };
        let s = compute(&c, &observed, None, None, &now());
        assert_eq!(
            s.last_successful_backup.as_ref().map(|b| b.label.as_str()),
            Some("20261202-080100F_20261202-090000I")
        );
        assert_eq!(s.backups.len(), 2);
        assert_eq!(
            s.first_recoverability_point.as_deref(),
            Some("2026-12-02T08:01:10Z")
        );
        assert_eq!(
            s.last_archived_wal.as_deref(),
            Some("000000010000000000000004")
        );
        assert_eq!(s.last_backup.as_ref(), Some(&result));
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("lastArchivedWAL").is_some(), "{json}");
        // No primary (a failover under way): everything is kept.
        c.status = Some(s.clone());
        let leaderless = Observed {
            pods: vec![pod("main-0", "replica", 1000, false)],
            ..Default::default()
        };
        let kept = compute(&c, &leaderless, None, None, &now());
        assert_eq!(kept.backups, s.backups);
        assert_eq!(kept.last_successful_backup, s.last_successful_backup);
        assert_eq!(kept.last_backup, s.last_backup);
        // The repository removed from the spec: none of it is shown.
        c.spec.backup = None;
        let gone = compute(&c, &observed, None, None, &now());
        assert!(gone.backups.is_empty() && gone.last_backup.is_none());
        assert_eq!(gone.last_successful_backup, None);
    }

    #[test]
    fn a_restore_is_unknown_while_it_runs_false_when_it_fails_true_once_done() {
        let c = cluster(serde_json::json!({"instances": 1,
            "backup": {"repository": {"s3": {"endpoint": "s3.example.com", "bucket": "bkt",
                "credentialsSecret": "c"}}},
            "bootstrap": {"recovery": {"source": {"cluster": "old"}}}}));
        let restored = |observed: &Observed| {
            compute(&c, observed, None, None, &now())
                .conditions
                .into_iter()
                .find(|c| c.type_ == RESTORED)
                .map(|c| (c.status, c.reason))
        };
        let mut p = pod("main-0", "uninitialized", 0, false);
        let running = Observed {
            pods: vec![p.clone()],
            ..Default::default()
        };
        assert_eq!(
            restored(&running),
            Some(("Unknown".into(), "Restoring".into()))
        );
        let annotations = p.metadata.annotations.as_mut().unwrap();
        let mut status: serde_json::Value =
            serde_json::from_str(&annotations[ANNOTATION_STATUS]).unwrap();
        status["bootstrap_error"] = "pgbackrest restore failed: no backup set".into();
        annotations.insert(ANNOTATION_STATUS.into(), status.to_string());
        let failed = Observed {
            pods: vec![p],
            ..Default::default()
        };
        assert_eq!(
            restored(&failed),
            Some(("False".into(), "RestoreFailed".into()))
        );
        let done = Observed {
            initialized: true,
            ..failed
        };
        assert_eq!(restored(&done), Some(("True".into(), "Restored".into())));
        let plain = cluster(serde_json::json!({"instances": 1}));
        assert!(
            compute(&plain, &done, None, None, &now())
                .conditions
                .iter()
                .all(|c| c.type_ != RESTORED)
        );
    }

    #[test]
    fn a_primary_pod_without_the_lease_is_not_the_primary() {
        let c = cluster(serde_json::json!({"instances": 2}));
        let observed = Observed {
            pods: vec![
                pod("main-0", "primary", 1000, true),
                pod("main-1", "replica", 1000, true),
            ],
            lease_holder: Some("main-1".into()),
            history: vec![HistoryEntry {
                timeline: 1,
                switch_lsn: 1,
                reason: "x".into(),
                time: "2026-11-26T02:00:00Z".into(),
                new_leader: "main-0".into(),
            }],
            ..Default::default()
        };
        let s = compute(&c, &observed, None, None, &now());
        assert_eq!(s.current_primary, None);
        assert_eq!(s.phase.as_deref(), Some("NoPrimary"));
        assert_eq!(s.instances_status[0].role, None);
    }

    #[test]
    fn a_spec_problem_and_a_roll_show_in_phase_and_conditions() {
        let c = cluster(serde_json::json!({"instances": 1}));
        let observed = Observed {
            pods: vec![pod("main-0", "primary", 1000, true)],
            lease_holder: Some("main-0".into()),
            ..Default::default()
        };
        let condition = |s: &PostgresClusterStatus, t: &str| {
            let c = s.conditions.iter().find(|c| c.type_ == t).unwrap();
            (c.status.clone(), c.reason.clone(), c.message.clone())
        };
        let invalid = compute(&c, &observed, Some("spec.ha: x"), None, &now());
        assert_eq!(invalid.phase.as_deref(), Some("Invalid"));
        assert_eq!(
            condition(&invalid, SPEC_VALID),
            ("False".into(), "Invalid".into(), "spec.ha: x".into())
        );
        let rolling = compute(&c, &observed, None, Some("restarting main-0: r"), &now());
        assert_eq!(rolling.phase.as_deref(), Some("Updating"));
        assert_eq!(
            condition(&rolling, PROGRESSING),
            (
                "True".into(),
                "RollingUpdate".into(),
                "restarting main-0: r".into()
            )
        );
        let healthy = compute(&c, &observed, None, None, &now());
        assert_eq!(healthy.phase.as_deref(), Some("Healthy"));
        assert_eq!(
            condition(&healthy, SPEC_VALID),
            (
                "True".into(),
                "Valid".into(),
                "the spec can be satisfied".into()
            )
        );
        assert_eq!(
            condition(&healthy, PROGRESSING).2,
            "every instance runs the current spec"
        );
    }

    #[test]
    fn transition_time_moves_only_on_a_flip() {
        let t0 = Time("2026-11-26T01:00:00Z".parse().unwrap());
        let first = merge_conditions(
            &[],
            vec![condition(READY, true, "A", "m".into())],
            Some(1),
            &t0,
        );
        let same = merge_conditions(
            &first,
            vec![condition(READY, true, "B", "n".into())],
            Some(2),
            &now(),
        );
        assert_eq!(same[0].last_transition_time, t0);
        assert_eq!(same[0].reason, "B");
        let flipped = merge_conditions(
            &same,
            vec![condition(READY, false, "C", "o".into())],
            Some(2),
            &now(),
        );
        assert_eq!(flipped[0].last_transition_time, now());
    }

    #[test]
    fn switchovers_and_failovers_are_told_apart() {
        let h = vec![
            HistoryEntry {
                timeline: 1,
                switch_lsn: 1,
                reason: "no recovery target specified".into(),
                time: "2026-11-26T01:00:00Z".into(),
                new_leader: "main-1".into(),
            },
            HistoryEntry {
                timeline: 2,
                switch_lsn: 2,
                reason: "switchover".into(),
                time: "2026-11-26T02:00:00Z".into(),
                new_leader: "main-2".into(),
            },
        ];
        let s = primary_change(&h, true).unwrap();
        assert_eq!(
            (s.from.as_deref(), s.to.as_str(), s.timeline),
            (Some("main-1"), "main-2", 3)
        );
        let f = primary_change(&h, false).unwrap();
        assert_eq!((f.from, f.to.as_str()), (None, "main-1"));
    }
}
