//! Scheduled backups (`spec.backup.schedule`), pure: whether this reconcile asks the primary for
//! a backup. The operator keeps when it last asked in `status.lastScheduledBackup`; a firing
//! that came while the operator was down is taken once, late, not once per missed time (as a
//! CronJob with one missed start). A firing while the previous request is still unanswered or
//! running is skipped (a CronJob's `concurrencyPolicy: Forbid`): backups never pile up behind a
//! slow store. The request goes into the `backup` key of the state ConfigMap, where the primary's
//! agent picks it up (src/agent/backup.rs).

use jiff::Timestamp;

use crate::api::backup::BackupSpec;
use crate::api::state::{BackupRequest, BackupResult};
use crate::common::cron::Schedule;

/// What this reconcile does about the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The `backup` key to apply (the current request, a new one, or none).
    pub request: Option<BackupRequest>,
    /// Set when the schedule fired now: the new `status.lastScheduledBackup`.
    pub fired: Option<Timestamp>,
    /// Set when it fired but the previous request is not finished.
    pub skipped: Option<String>,
}

/// `last`: `status.lastScheduledBackup`; `created`: the cluster's creation (the first firing
/// comes after it).
pub fn plan(
    spec: Option<&BackupSpec>,
    last: Option<Timestamp>,
    created: Timestamp,
    current: Option<&BackupRequest>,
    result: Option<&BackupResult>,
    now: Timestamp,
) -> Plan {
    let keep = Plan {
        request: current.cloned(),
        fired: None,
        skipped: None,
    };
    let Some(spec) = spec else {
        return Plan {
            request: None,
            ..keep
        };
    };
    // Admission checks the schedule; one that does not parse never fires.
    let Ok(schedule) = spec.schedule.parse::<Schedule>() else {
        return keep;
    };
    let due = schedule
        .next_after(last.unwrap_or(created))
        .is_some_and(|t| t <= now);
    if !due {
        return keep;
    }
    if let Some(cur) = current {
        let finished = result.is_some_and(|r| r.name == cur.name && r.finished());
        if !finished {
            return Plan {
                fired: Some(now),
                skipped: Some(format!(
                    "backup {} has not finished: the scheduled backup at {} is skipped",
                    cur.name,
                    now.strftime("%Y-%m-%dT%H:%M:%SZ")
                )),
                ..keep
            };
        }
    }
    Plan {
        request: Some(BackupRequest {
            name: format!("scheduled-{}", now.strftime("%Y%m%dT%H%M%SZ")),
            type_: "full".into(),
            immediate: spec.immediate_checkpoint,
        }),
        fired: Some(now),
        skipped: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::build::fixtures::backup_result as result;

    fn spec(schedule: &str) -> BackupSpec {
        let mut b: BackupSpec = serde_json::from_value(serde_json::json!({
            "repository": {"s3": {"endpoint": "s3.example.com", "bucket": "b",
                "credentialsSecret": "s3"}}
        }))
        .expect("parses");
        b.schedule = schedule.into();
        b
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_scheduled_request_carries_immediate_checkpoint() {
        let mut s = spec("* * * * *");
        let created: Timestamp = "2026-12-02T08:00:00Z".parse().unwrap();
        let now: Timestamp = "2026-12-02T08:01:00Z".parse().unwrap();
        let p = plan(Some(&s), None, created, None, None, now);
        assert!(!p.request.expect("fired").immediate);
        s.immediate_checkpoint = true;
        let p = plan(Some(&s), None, created, None, None, now);
        assert!(p.request.expect("fired").immediate);
    }

    #[test]
    fn the_schedule_fires_once_per_named_minute_and_never_over_an_unfinished_backup() {
        let s = spec("*/5 * * * *");
        let created = t("2026-12-02T07:58:30Z");
        // Before the first named time: nothing.
        let p = plan(
            Some(&s),
            None,
            created,
            None,
            None,
            t("2026-12-02T07:59:59Z"),
        );
        assert_eq!((p.request.clone(), p.fired), (None, None));
        // At 08:00 a full backup is asked for.
        let now = t("2026-12-02T08:00:02Z");
        let p = plan(Some(&s), None, created, None, None, now);
        let first = p.request.clone().expect("fired");
        assert_eq!(first.name, "scheduled-20261202T080002Z");
        assert_eq!(first.type_, "full");
        assert_eq!(p.fired, Some(now));
        // The next reconcile, with lastScheduledBackup = 08:00:02: the request stays, no new one.
        let p = plan(
            Some(&s),
            Some(now),
            created,
            Some(&first),
            None,
            t("2026-12-02T08:04:00Z"),
        );
        assert_eq!((p.request.as_ref(), p.fired), (Some(&first), None));
        // 08:05 while it still runs: skipped, the running request kept.
        let running = result(&first.name, "running");
        let p = plan(
            Some(&s),
            Some(now),
            created,
            Some(&first),
            Some(&running),
            t("2026-12-02T08:05:00Z"),
        );
        assert_eq!(p.request.as_ref(), Some(&first));
        assert!(p.skipped.as_deref().unwrap().contains(&first.name));
        // 08:10 after it completed: a new request.
        let done = result(&first.name, "completed");
        let p = plan(
            Some(&s),
            Some(t("2026-12-02T08:05:00Z")),
            created,
            Some(&first),
            Some(&done),
            t("2026-12-02T08:10:00Z"),
        );
        assert_eq!(
            p.request.map(|r| r.name).as_deref(),
            Some("scheduled-20261202T081000Z")
        );
        // A result for another request does not finish this one.
        let other = result("ondemand-1", "completed");
        let p = plan(
            Some(&s),
            Some(t("2026-12-02T08:05:00Z")),
            created,
            Some(&first),
            Some(&other),
            t("2026-12-02T08:10:00Z"),
        );
        assert!(p.skipped.is_some());
    }

    #[test]
    fn missed_firings_are_taken_once_and_no_repository_means_no_request() {
        let s = spec("0 * * * *");
        let created = t("2026-12-01T00:00:00Z");
        // The operator was down from 01:00 to 05:30: one backup, now.
        let p = plan(
            Some(&s),
            Some(t("2026-12-01T00:59:00Z")),
            created,
            None,
            None,
            t("2026-12-01T05:30:00Z"),
        );
        assert_eq!(p.fired, Some(t("2026-12-01T05:30:00Z")));
        let p2 = plan(
            Some(&s),
            p.fired,
            created,
            p.request.as_ref(),
            Some(&result(&p.request.as_ref().unwrap().name, "completed")),
            t("2026-12-01T05:45:00Z"),
        );
        assert_eq!(p2.fired, None, "the next one is at 06:00");
        let p = plan(
            None,
            None,
            created,
            p.request.as_ref(),
            None,
            t("2026-12-01T05:45:00Z"),
        );
        assert_eq!(p.request, None);
    }
}
