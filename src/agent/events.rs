//! The agent's Kubernetes Events: every promotion, demotion and fencing action of a member is an
//! Event on its `PostgresCluster` (reporting controller `pgwarden-agent`, instance = the pod).
//!
//! Contract: reporting never blocks or fails the HA loop. Notices go into a bounded queue; one
//! task publishes them in order and retries while the apiserver is away (a fenced primary has
//! usually lost it), so the Event arrives late rather than never; one published more than a few
//! seconds late says when it happened. What to say is decided by pure functions here.

use std::time::Duration;

use kube::Client;
use kube::runtime::events::{EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::ha::{Action, Decision};
use super::metrics::FencingReason;

/// Queue length: a loop produces at most a few notices per failover.
const QUEUE: usize = 64;
/// How long one notice is retried before it is given up (logged).
const GIVE_UP_AFTER: Duration = Duration::from_secs(600);
/// One publishing attempt.
const ATTEMPT: Duration = Duration::from_secs(10);
/// A notice published later than this says when it happened.
const LATE: Duration = Duration::from_secs(5);

/// Something a person should see in `kubectl describe postgrescluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

impl Notice {
    fn normal(reason: &'static str, note: String) -> Self {
        Self {
            warning: false,
            reason,
            note,
        }
    }
    fn warning(reason: &'static str, note: String) -> Self {
        Self {
            warning: true,
            reason,
            note,
        }
    }
}

/// What the loop knew when it acted, beyond the decision itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Before {
    /// postgres was running as a replica (so a lease acquisition promoted it).
    pub in_recovery: bool,
    /// Its timeline before acting.
    pub timeline: Option<u32>,
}

fn without_prefix<'a>(reason: &'a str, prefix: &str) -> &'a str {
    reason.strip_prefix(prefix).unwrap_or(reason)
}

/// The notice for a decision that was carried out, if it is one a person should see.
pub fn for_decision(
    me: &str,
    decision: &Decision,
    before: Before,
    fencing: Option<FencingReason>,
) -> Option<Notice> {
    let reason = decision.reason.as_str();
    match &decision.action {
        Action::Promote | Action::AcquireLease if before.in_recovery => {
            let timeline = before
                .timeline
                .map(|t| format!(" on timeline {}", t + 1))
                .unwrap_or_default();
            Some(Notice::normal(
                "Promoted",
                format!(
                    "{me} was promoted to primary{timeline}: {}",
                    without_prefix(reason, "promoting: ")
                ),
            ))
        }
        Action::Demote { release: true, .. } => Some(Notice::normal(
            "Demoted",
            format!("{me} stepped down as primary and released the leader lease ({reason})"),
        )),
        Action::Demote { release: false, .. } => {
            let cause = match fencing {
                Some(FencingReason::ApiserverUnreachable) => " (apiserver unreachable)",
                Some(FencingReason::RenewFailed) => " (lease renew failed)",
                Some(FencingReason::LeaseLost) => " (lease held by another member)",
                _ => "",
            };
            Some(Notice::warning(
                "Fenced",
                format!(
                    "{me} stopped its PostgreSQL at once so that it cannot accept writes{cause}: {}",
                    without_prefix(reason, "demoting: ")
                ),
            ))
        }
        Action::Bootstrap => Some(Notice::normal(
            "Bootstrapped",
            format!("{me} initialized the database cluster and is its first primary"),
        )),
        Action::Halt => Some(Notice::warning(
            "Halted",
            format!("{me} stopped managing PostgreSQL: {reason}"),
        )),
        _ => None,
    }
}

/// The fencing task killed postgres: the primary went `overdue` without a renew.
pub fn fenced_by_timeout(me: &str, overdue: Duration, deadline: Duration) -> Notice {
    Notice::warning(
        "Fenced",
        format!(
            "{me} killed its PostgreSQL: no leader lease renew for {:.1}s, more than the fence deadline ({}s)",
            overdue.as_secs_f64(),
            deadline.as_secs()
        ),
    )
}

/// pg_rewind could not bring the old primary back: it is recloned.
pub fn rewind_failed(me: &str, leader: &str, error: &str) -> Notice {
    Notice::warning(
        "ReinitializingReplica",
        format!(
            "{me} could not be rewound to follow {leader} ({error}); its data is removed and recloned"
        ),
    )
}

/// A basebackup (`Action::CloneFrom`, which runs beside the loop) finished.
pub fn replica_created(me: &str, leader: &str) -> Notice {
    Notice::normal(
        "ReplicaCreated",
        format!("{me} was created as a replica of {leader} with pg_basebackup"),
    )
}

/// The bootstrap (initdb, or the restore of `spec.bootstrap.recovery`) failed; it is tried again.
pub fn bootstrap_failed(me: &str, error: &str, retry_in: Duration) -> Notice {
    Notice::warning(
        "BootstrapFailed",
        format!(
            "{me} could not bootstrap the cluster: {error}; it tries again in {} s",
            retry_in.as_secs()
        ),
    )
}

/// pg_rewind brought a diverged member back on the leader's timeline.
pub fn rewound(me: &str, leader: &str) -> Notice {
    Notice::normal(
        "Rewound",
        format!("{me} was rewound with pg_rewind and rejoins as a replica of {leader}"),
    )
}

/// The sending half; cheap to clone. A disabled one drops everything.
#[derive(Clone)]
pub struct Events {
    tx: Option<mpsc::Sender<(Notice, jiff::Timestamp)>>,
}

impl Events {
    pub fn disabled() -> Self {
        Self { tx: None }
    }

    /// Start the publishing task for events regarding `cluster` (uid when known).
    pub fn spawn(
        client: Client,
        namespace: &str,
        cluster: &str,
        cluster_uid: Option<&str>,
        member: &str,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: "pgwarden-agent".into(),
                instance: Some(member.into()),
            },
        );
        let reference = crate::common::events::cluster_reference(namespace, cluster, cluster_uid);
        tokio::spawn(publish(recorder, reference, rx));
        Self { tx: Some(tx) }
    }

    /// Queue a notice; never waits. A full queue drops it with a log line.
    pub fn report(&self, notice: Notice) {
        let Some(tx) = &self.tx else { return };
        if let Err(e) = tx.try_send((notice, jiff::Timestamp::now())) {
            warn!(error = %e, "event queue full; dropping an event");
        }
    }
}

async fn publish(
    recorder: Recorder,
    reference: k8s_openapi::api::core::v1::ObjectReference,
    mut rx: mpsc::Receiver<(Notice, jiff::Timestamp)>,
) {
    while let Some((notice, at)) = rx.recv().await {
        let started = std::time::Instant::now();
        let mut backoff = Duration::from_millis(500);
        loop {
            let late = jiff::Timestamp::now()
                .duration_since(at)
                .unsigned_abs()
                .gt(&LATE);
            let note = if late {
                format!(
                    "{} (at {})",
                    notice.note,
                    at.round(jiff::Unit::Second).unwrap_or(at)
                )
            } else {
                notice.note.clone()
            };
            let type_ = if notice.warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            let ev = crate::common::events::event(type_, notice.reason, note);
            // A black-holed apiserver must not hold the queue for the client's long timeout.
            let sent = tokio::time::timeout(ATTEMPT, recorder.publish(&ev, &reference))
                .await
                .map_err(|_| format!("no answer within {ATTEMPT:?}"))
                .and_then(|r| r.map_err(|e| e.to_string()));
            match sent {
                Ok(()) => {
                    debug!(reason = notice.reason, "published an event");
                    break;
                }
                Err(e) if started.elapsed() > GIVE_UP_AFTER => {
                    warn!(reason = notice.reason, note = %notice.note, error = %e, "giving up on an event");
                    break;
                }
                Err(e) => {
                    debug!(error = %e, "cannot publish an event yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::ha::{StartAs, StopMode};

    fn dec(action: Action, reason: &str) -> Decision {
        Decision {
            action,
            reason: reason.into(),
        }
    }

    #[test]
    fn a_replica_taking_the_lease_is_a_promotion_with_its_new_timeline() {
        let d = dec(
            Action::AcquireLease,
            "promoting: the leader lease is free and this member is the healthiest",
        );
        let before = Before {
            in_recovery: true,
            timeline: Some(2),
        };
        let n = for_decision("pg-1", &d, before, None).unwrap();
        assert_eq!(n.reason, "Promoted");
        assert!(!n.warning);
        assert_eq!(
            n.note,
            "pg-1 was promoted to primary on timeline 3: the leader lease is free and this member is the healthiest"
        );
        // A running primary re-taking the lease after a restart promotes nothing.
        let again = Before {
            in_recovery: false,
            timeline: Some(3),
        };
        assert_eq!(for_decision("pg-1", &d, again, None), None);
    }

    #[test]
    fn demotions_are_step_downs_or_fences() {
        let sw = dec(
            Action::Demote {
                mode: StopMode::Fast,
                release: true,
            },
            "switchover to pg-2: demoting with a checkpoint, then releasing the lease",
        );
        let n = for_decision("pg-0", &sw, Before::default(), None).unwrap();
        assert_eq!((n.reason, n.warning), ("Demoted", false));
        assert!(n.note.contains("switchover to pg-2"), "{}", n.note);

        let fence = dec(
            Action::Demote {
                mode: StopMode::Immediate,
                release: false,
            },
            "demoting: the apiserver cannot be reached, so the leader lease cannot be renewed",
        );
        let n = for_decision(
            "pg-0",
            &fence,
            Before::default(),
            Some(FencingReason::ApiserverUnreachable),
        )
        .unwrap();
        assert_eq!((n.reason, n.warning), ("Fenced", true));
        assert_eq!(
            n.note,
            "pg-0 stopped its PostgreSQL at once so that it cannot accept writes (apiserver unreachable): the apiserver cannot be reached, so the leader lease cannot be renewed"
        );
    }

    #[test]
    fn routine_decisions_say_nothing() {
        for action in [
            Action::Nothing,
            Action::RenewLease,
            Action::HoldLease,
            Action::KeepPrimary,
            Action::Follow {
                leader: Some("pg-0".into()),
            },
            Action::StartPostgres(StartAs::Primary),
        ] {
            assert_eq!(
                for_decision("pg-1", &dec(action, "x"), Before::default(), None),
                None
            );
        }
    }

    #[test]
    fn the_fencing_task_says_how_long_it_waited() {
        let n = fenced_by_timeout("pg-0", Duration::from_millis(6100), Duration::from_secs(6));
        assert_eq!(
            n.note,
            "pg-0 killed its PostgreSQL: no leader lease renew for 6.1s, more than the fence deadline (6s)"
        );
        assert!(n.warning);
    }
}
