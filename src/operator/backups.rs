//! On-demand backups (`PostgresBackup`), pure: which one the primary is asked for next, and the
//! status each should show. One request at a time per cluster, the oldest `PostgresBackup`
//! first, ahead of the schedule (a scheduled firing that meets an unfinished request is skipped;
//! src/operator/schedule.rs). The request is named after the object and the start of its uid,
//! so a deleted and re-created object of the same name is a new request. The reconcile writes
//! the statuses before it applies a new request, so no result goes unrecorded.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::backup::BackupSpec;
use crate::api::postgres_backup::{PostgresBackup, PostgresBackupStatus};
use crate::api::state::{BackupRequest, BackupResult};

/// The `backup` key's name for a `PostgresBackup`.
pub fn request_name(b: &PostgresBackup) -> String {
    let name = b.metadata.name.clone().unwrap_or_default();
    let uid: String = b
        .metadata
        .uid
        .as_deref()
        .unwrap_or_default()
        .chars()
        .take(8)
        .collect();
    format!("{name}-{uid}")
}

/// What the queue decided.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Queue {
    /// A new request to write, replacing the finished current one.
    pub request: Option<BackupRequest>,
    /// Objects whose status changes: (name, new status).
    pub statuses: Vec<(String, PostgresBackupStatus)>,
}

fn time(rfc3339: Option<&str>) -> Option<Time> {
    rfc3339.and_then(|t| t.parse::<Timestamp>().ok()).map(Time)
}

/// The status of a `PostgresBackup` whose cluster does not exist: Failed, naming it (as
/// CloudNativePG fails a Backup of an unknown cluster). `None` when it has finished already.
pub fn orphaned(b: &PostgresBackup) -> Option<PostgresBackupStatus> {
    if b.status
        .as_ref()
        .is_some_and(PostgresBackupStatus::finished)
    {
        return None;
    }
    Some(PostgresBackupStatus {
        phase: Some(PostgresBackupStatus::FAILED.into()),
        message: Some(format!(
            "spec.cluster: cluster {} does not exist in namespace {}",
            b.spec.cluster,
            b.metadata.namespace.as_deref().unwrap_or_default()
        )),
        ..Default::default()
    })
}

/// Why `spec` cannot take a backup, or `None` when it can: a backup needs a repository, and
/// the WAL archived beside it (pgBackRest checks that the backup's WAL reached the archive;
/// without it the backup could not be restored).
pub fn unusable(cluster: &str, spec: Option<&BackupSpec>) -> Option<String> {
    match spec {
        None => Some(format!(
            "cluster {cluster} has no backup repository (spec.backup)"
        )),
        Some(b) if !b.wal_archiving => Some(format!(
            "cluster {cluster} does not archive WAL (spec.backup.walArchiving is false): a \
             backup without its WAL cannot be restored"
        )),
        Some(_) => None,
    }
}

/// `backups`: this cluster's objects; `unusable`: why the cluster cannot take backups
/// ([`unusable`]), which fails every unfinished one; `immediate`:
/// `spec.backup.immediateCheckpoint`.
pub fn plan(
    backups: &[PostgresBackup],
    unusable: Option<&str>,
    immediate: bool,
    current: Option<&BackupRequest>,
    result: Option<&BackupResult>,
) -> Queue {
    let mut queue = Queue::default();
    let mut ordered: Vec<&PostgresBackup> = backups.iter().collect();
    ordered.sort_by_key(|b| {
        (
            b.metadata.creation_timestamp.as_ref().map(|t| t.0),
            b.metadata.name.clone(),
        )
    });
    let mut busy =
        current.is_some_and(|c| !result.is_some_and(|r| r.name == c.name && r.finished()));
    for b in ordered {
        let old = b.status.clone().unwrap_or_default();
        if old.finished() {
            continue;
        }
        let name = b.metadata.name.clone().unwrap_or_default();
        let rn = request_name(b);
        let new = if let Some(why) = unusable {
            PostgresBackupStatus {
                phase: Some(PostgresBackupStatus::FAILED.into()),
                message: Some(why.to_string()),
                ..Default::default()
            }
        } else if current.is_some_and(|c| c.name == rn) {
            match result.filter(|r| r.name == rn) {
                Some(r) => PostgresBackupStatus {
                    phase: Some(
                        match r.phase.as_str() {
                            BackupResult::COMPLETED => PostgresBackupStatus::COMPLETED,
                            BackupResult::FAILED => PostgresBackupStatus::FAILED,
                            _ => PostgresBackupStatus::RUNNING,
                        }
                        .into(),
                    ),
                    member: Some(r.member.clone()),
                    started: time(Some(&r.started)),
                    finished: time(r.finished.as_deref()),
                    label: r.label.clone(),
                    message: r.error.clone(),
                },
                None => PostgresBackupStatus {
                    phase: Some(PostgresBackupStatus::PENDING.into()),
                    message: Some(
                        "asked the primary; it starts once its repository is ready".into(),
                    ),
                    ..Default::default()
                },
            }
        } else if old.phase.as_deref() == Some(PostgresBackupStatus::RUNNING) {
            // Its request was replaced before its end was seen (the key rewritten by hand).
            PostgresBackupStatus {
                phase: Some(PostgresBackupStatus::FAILED.into()),
                message: Some("its result was lost: another backup request replaced it".into()),
                ..old.clone()
            }
        } else if !busy {
            busy = true;
            queue.request = Some(BackupRequest {
                name: rn.clone(),
                type_: b.spec.type_.as_pgbackrest().into(),
                immediate,
            });
            PostgresBackupStatus {
                phase: Some(PostgresBackupStatus::PENDING.into()),
                message: Some("asked the primary; it starts once its repository is ready".into()),
                ..Default::default()
            }
        } else {
            PostgresBackupStatus {
                phase: Some(PostgresBackupStatus::PENDING.into()),
                message: Some(format!(
                    "queued behind backup {}",
                    queue
                        .request
                        .as_ref()
                        .or(current)
                        .map_or("?", |r| r.name.as_str())
                )),
                ..Default::default()
            }
        };
        if new != old {
            queue.statuses.push((name, new));
        }
    }
    queue
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::build::fixtures::backup_result as result;

    fn backup(name: &str, uid: &str, created: &str, type_: &str) -> PostgresBackup {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pgwarden.io/v1alpha1", "kind": "PostgresBackup",
            "metadata": {"name": name, "namespace": "db", "uid": uid,
                "creationTimestamp": created},
            "spec": {"cluster": "main", "type": type_}
        }))
        .expect("parses")
    }

    /// The first status the queue changed is Failed, saying `why`.
    fn assert_failed(q: &Queue, why: &str) {
        let status = &q.statuses[0].1;
        assert_eq!(status.phase.as_deref(), Some("Failed"), "{status:?}");
        let message = status.message.as_deref().unwrap_or_default();
        assert!(message.contains(why), "{message:?} does not say {why:?}");
    }

    fn with(mut b: PostgresBackup, s: &PostgresBackupStatus) -> PostgresBackup {
        b.status = Some(s.clone());
        b
    }

    #[test]
    fn backups_run_one_at_a_time_oldest_first_and_follow_the_primarys_result() {
        let a = backup(
            "before-migration",
            "aaaaaaaa-1111",
            "2026-12-02T08:00:00Z",
            "full",
        );
        let b = backup(
            "nightly-extra",
            "bbbbbbbb-2222",
            "2026-12-02T08:00:05Z",
            "incr",
        );
        // Nothing outstanding: the oldest is asked for, the other queued.
        let q = plan(&[b.clone(), a.clone()], None, false, None, None);
        let req = q.request.clone().expect("a request");
        assert_eq!(req.name, "before-migration-aaaaaaaa");
        assert_eq!(req.type_, "full");
        assert_eq!(q.statuses.len(), 2);
        let (sa, sb) = (&q.statuses[0].1, &q.statuses[1].1);
        assert_eq!(sa.phase.as_deref(), Some("Pending"));
        assert!(
            sb.message
                .as_deref()
                .unwrap()
                .contains("before-migration-aaaaaaaa")
        );
        let (a, b) = (with(a, sa), with(b, sb));
        // Running: the status follows; nothing new is asked.
        let q = plan(
            &[a.clone(), b.clone()],
            None,
            false,
            Some(&req),
            Some(&result(&req.name, "running")),
        );
        assert_eq!(q.request, None);
        assert_eq!(q.statuses.len(), 1);
        let running = &q.statuses[0].1;
        assert_eq!(running.phase.as_deref(), Some("Running"));
        assert_eq!(running.member.as_deref(), Some("main-0"));
        let a = with(a, running);
        // Completed: recorded, and the next one asked for in the same step.
        let q = plan(
            &[a.clone(), b.clone()],
            None,
            false,
            Some(&req),
            Some(&result(&req.name, "completed")),
        );
        assert_eq!(q.request.as_ref().map(|r| r.type_.as_str()), Some("incr"));
        assert_eq!(q.statuses[0].1.phase.as_deref(), Some("Completed"));
        assert_eq!(q.statuses[0].1.label.as_deref(), Some("20261202-080001F"));
        let a = with(a, &q.statuses[0].1);
        // Finished objects are left alone.
        let next = q.request.clone().unwrap();
        let q = plan(
            &[a, b],
            None,
            false,
            Some(&next),
            Some(&result(&next.name, "failed")),
        );
        assert_eq!(q.statuses.len(), 1);
        assert_failed(&q, "no bucket");
    }

    #[test]
    fn a_scheduled_request_in_flight_queues_them_and_no_repository_fails_them() {
        let a = backup("adhoc", "cccccccc-3333", "2026-12-02T08:00:00Z", "full");
        let sched = BackupRequest {
            name: "scheduled-20261202T080000Z".into(),
            type_: "full".into(),
            immediate: false,
        };
        let q = plan(std::slice::from_ref(&a), None, false, Some(&sched), None);
        assert_eq!(q.request, None);
        assert!(
            q.statuses[0]
                .1
                .message
                .as_deref()
                .unwrap()
                .contains("scheduled-")
        );
        let none = unusable("main", None);
        let q = plan(std::slice::from_ref(&a), none.as_deref(), false, None, None);
        assert_eq!(q.request, None);
        assert_failed(&q, "no backup repository (spec.backup)");
        // A repository without WAL archiving cannot take a restorable backup: failed, with
        // the field to change, rather than pending forever.
        let mut spec: BackupSpec = serde_json::from_value(serde_json::json!({
            "repository": {"s3": {"endpoint": "s3.example.com", "bucket": "b",
                "credentialsSecret": "s3"}}
        }))
        .expect("parses");
        assert_eq!(unusable("main", Some(&spec)), None);
        spec.wal_archiving = false;
        let off = unusable("main", Some(&spec));
        let q = plan(std::slice::from_ref(&a), off.as_deref(), false, None, None);
        assert_failed(&q, "spec.backup.walArchiving is false");
        // A backup of a cluster that does not exist fails, naming it; a finished one stays.
        let lost = orphaned(&a).expect("a new backup of a missing cluster fails");
        assert_eq!(lost.phase.as_deref(), Some("Failed"));
        assert_eq!(
            lost.message.as_deref(),
            Some("spec.cluster: cluster main does not exist in namespace db")
        );
        assert_eq!(orphaned(&with(a.clone(), &lost)), None);
        // Re-created under the same name: a new request name.
        let again = backup("adhoc", "dddddddd-4444", "2026-12-02T09:00:00Z", "full");
        assert_ne!(request_name(&a), request_name(&again));
    }
}
