//! The order in which each `ha::Action` is carried out, as data: which Lease write comes first,
//! when the fence (fencing thread and watchdog) is armed, started, fed and stood down, and when
//! PostgreSQL is stopped, started or promoted. `act.rs` executes these steps with real I/O; the
//! simulation (tests/simulate.rs) executes the same steps against its model apiserver and model
//! PostgreSQL, so the order it checks is the order the agent runs, not a copy of it.
//!
//! The contract every plan keeps (the fencing invariant, see `fence.rs`):
//! - a step that may make PostgreSQL primary ([`Step::Promote`], [`Step::StartPrimary`]) comes
//!   after a Lease write of this cycle ([`Step::Renew`] or [`Step::Acquire`]) that succeeded,
//!   after [`Step::Arm`], and after [`Step::Holding`] started the fencing clock at that write's
//!   send time, and right after [`Step::InTime`] (an agent that stalled since the write must
//!   not start or promote a primary on it);
//! - a failed Lease write ends the plan (the rest never runs); what then runs is
//!   [`on_lease_write_failure`];
//! - the fencing clock stops ([`Step::Leaving`]) before a stop that may take long, and the
//!   watchdog is disarmed only once PostgreSQL takes no more writes (the stop's safe point, or
//!   after it).

use std::time::Duration;

use super::ha::{Action, StartAs, StopMode};

/// How soon a primary that could not renew (or read) tries again: it holds on only until its
/// fence.
pub const RETRY_SOON: Duration = Duration::from_millis(500);
/// The shortest wait between two cycles (also the cadence while a promotion replays).
pub const MIN_WAIT: Duration = Duration::from_millis(200);
/// How long a promotion's step waits for postgres to leave recovery before the cycle ends and
/// the promotion goes on in the background (most end well within it).
pub const PROMOTE_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Renew the Lease by compare-and-swap on the version read this cycle; remember when it was
    /// sent. A failure ends the plan.
    Renew,
    /// Take the free or expired Lease by compare-and-swap; remember when it was sent. A failure
    /// ends the plan.
    Acquire,
    /// Arm the watchdog (in mode `required`, an unavailable one ends the plan).
    Arm,
    /// Start the fencing clock at the send time of this cycle's Lease write.
    Holding,
    /// Fail the plan when the fencing clock is past its deadline: the agent stalled (SIGSTOP,
    /// CPU starvation, a hung call) since this cycle's Lease write, and another member may
    /// hold the Lease by now.
    InTime,
    /// An acknowledged renew: restart the fencing clock at its send time, and feed the watchdog
    /// if the answer came within half the safety margin.
    Renewed,
    /// Stop the fencing clock (this member stops acting as primary); the watchdog stays armed.
    Leaving,
    /// Disarm the watchdog.
    Disarm,
    /// [`Step::Leaving`] and [`Step::Disarm`] at once: nothing to guard.
    StandDown,
    /// Failsafe: every member confirmed this primary; as good as a renew sent when it asked.
    Confirmed,
    /// Stop routing here first: `/primary` answers 503, and the role label leaves, except in a
    /// handover (`handover`: the Lease is released after the stop, someone takes over at once):
    /// there the label stays until the successor has its own, so `-rw` always lists a member
    /// (this one refuses every client meanwhile: stopping, then fenced).
    Unroute { handover: bool },
    /// Stop PostgreSQL; the watchdog is disarmed at the stop's safe point (no client left).
    Stop(StopMode),
    /// Release the Lease after a clean stop, with the checkpoint location.
    Release,
    /// Start PostgreSQL as primary (synchronous_standby_names from the `sync` key).
    StartPrimary,
    /// Start PostgreSQL as a replica of `leader` (rewinding first when asked).
    StartReplica {
        leader: Option<String>,
        rewind: bool,
    },
    /// Promote the running replica: signal it (once), wait up to [`PROMOTE_WAIT`] for it to
    /// leave recovery, and if it did, finish (clients, label, history). A longer replay goes on
    /// after the plan, fenced as a primary.
    Promote,
    /// A renewed primary's housekeeping: finishing a promotion that outlasted its step,
    /// replication slots, the synchronous standby.
    Upkeep,
    /// Point the running replica at `leader`.
    Follow { leader: Option<String> },
    /// Actions with no fencing or Lease step of their own (bootstrap, clone, the initialize
    /// key, halting), executed as a whole by `act.rs`.
    Other,
}

/// The steps of `action`, in order. `in_recovery`: whether the running PostgreSQL is a replica
/// (`None` when it is not running or did not answer); `paused`: maintenance mode.
pub fn plan(action: &Action, in_recovery: Option<bool>, paused: bool) -> Vec<Step> {
    use Step::*;
    match action {
        Action::Nothing if paused => vec![StandDown],
        Action::Nothing => vec![],
        // Pause manages nothing: the Lease is kept valid for the resume, nothing is fenced.
        Action::HoldLease => vec![Renew, StandDown],
        Action::RenewLease => {
            let mut steps = vec![Renew, Renewed];
            if in_recovery == Some(false) {
                steps.push(Upkeep);
            }
            steps
        }
        // Armed before the write: once the apiserver accepts it, this member may be primary.
        Action::AcquireLease => {
            let mut steps = vec![Arm, Acquire, Holding];
            if in_recovery == Some(true) {
                steps.extend([InTime, Promote]);
            }
            steps
        }
        // The fence counts from a renew of this cycle, never from an older one. The watchdog is
        // armed (which feeds it) before the renew is sent, never after its answer: a renew
        // answered late would otherwise start the watchdog's count after the apiserver
        // accepted it, and it would fire after another member may have taken over.
        Action::Promote => vec![Arm, Renew, Holding, InTime, Promote],
        // Only with a Lease renewed just now: never start a primary on a stale one.
        Action::StartPostgres(StartAs::Primary) => {
            vec![Arm, Renew, Holding, InTime, StartPrimary]
        }
        Action::StartPostgres(StartAs::Replica { leader, rewind }) => vec![
            StandDown,
            StartReplica {
                leader: leader.clone(),
                rewind: *rewind,
            },
        ],
        Action::Demote { mode, release } => {
            let mut steps = vec![Unroute { handover: *release }, Leaving, Stop(*mode), Disarm];
            if *release {
                steps.push(Release);
            }
            steps
        }
        Action::Follow { leader } => vec![
            Leaving,
            Follow {
                leader: leader.clone(),
            },
        ],
        Action::KeepPrimary => vec![Confirmed],
        Action::ClaimInitialize
        | Action::Halt
        | Action::Bootstrap
        | Action::CloneFrom { .. }
        | Action::RecordInitialize { .. } => vec![Other],
    }
}

/// What runs when a Lease write of the plan fails, `done` being the steps before it: a plan
/// that armed the watchdog for a primary to come disarms it (postgres is not primary: it was
/// a replica or stopped); a failed renew of a running primary changes nothing, so the fencing
/// clock keeps counting from the last acknowledged renew and fires on time.
pub fn on_lease_write_failure(done: &[Step]) -> Vec<Step> {
    if done.contains(&Step::Arm) {
        vec![Step::Disarm]
    } else {
        vec![]
    }
}

/// How long the agent sleeps after a cycle. `fencing`: the fencing clock runs (this member acts
/// as primary); `read`: the apiserver answered this cycle's read; `renew_failed`: a renew of
/// this cycle failed; `promoting`: a signalled promotion has not ended yet;
/// `others_lease_expires_in`: when another member holds the Lease, how long until it expires on
/// this member's clock.
pub fn next_wait(
    loop_wait: Duration,
    fencing: bool,
    read: bool,
    renew_failed: bool,
    promoting: bool,
    action: &Action,
    others_lease_expires_in: Option<Duration>,
) -> Duration {
    // A promotion ends when its replay does: look often, so -rw follows at once.
    if promoting {
        return MIN_WAIT;
    }
    // A failsafe-confirmed primary keeps the normal cadence: each confirmation moves its fence
    // as a renew would, and a loop every 500 ms through a long outage would double its CPU.
    if fencing && (!read || renew_failed) && *action != Action::KeepPrimary {
        return RETRY_SOON;
    }
    // A follower wakes as soon as the lease could have expired, not a whole loop later.
    let next = match others_lease_expires_in {
        Some(expires_in) => loop_wait.min(expires_in + Duration::from_millis(100)),
        None => loop_wait,
    };
    next.max(MIN_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_action() -> Vec<Action> {
        let mut actions = vec![
            Action::Nothing,
            Action::ClaimInitialize,
            Action::Bootstrap,
            Action::CloneFrom { leader: "a".into() },
            Action::StartPostgres(StartAs::Primary),
            Action::StartPostgres(StartAs::Replica {
                leader: Some("a".into()),
                rewind: true,
            }),
            Action::StartPostgres(StartAs::Replica {
                leader: None,
                rewind: false,
            }),
            Action::RenewLease,
            Action::AcquireLease,
            Action::Promote,
            Action::Follow {
                leader: Some("a".into()),
            },
            Action::RecordInitialize { sysid: "1".into() },
            Action::Halt,
            Action::KeepPrimary,
            Action::HoldLease,
        ];
        for mode in [StopMode::Fast, StopMode::Immediate] {
            for release in [false, true] {
                actions.push(Action::Demote { mode, release });
            }
        }
        actions
    }

    #[test]
    fn nothing_becomes_primary_before_a_lease_write_the_arming_and_the_fencing_clock() {
        for action in every_action() {
            for in_recovery in [None, Some(true), Some(false)] {
                for paused in [false, true] {
                    let steps = plan(&action, in_recovery, paused);
                    for (i, s) in steps.iter().enumerate() {
                        if !matches!(s, Step::Promote | Step::StartPrimary) {
                            continue;
                        }
                        let before = &steps[..i];
                        let write = before
                            .iter()
                            .position(|s| matches!(s, Step::Renew | Step::Acquire));
                        let holding = before.iter().position(|s| *s == Step::Holding);
                        let arm = before.iter().position(|s| *s == Step::Arm);
                        assert!(
                            write.is_some() && arm.is_some() && holding > write,
                            "{action:?}: {steps:?}"
                        );
                        assert_eq!(before.last(), Some(&Step::InTime), "{action:?}: {steps:?}");
                        assert!(
                            !before[holding.unwrap_or(0)..]
                                .iter()
                                .any(|s| matches!(s, Step::Leaving | Step::StandDown)),
                            "{action:?}: {steps:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_stop_disarms_the_watchdog_only_after_the_fencing_clock_stopped() {
        for action in every_action() {
            let steps = plan(&action, Some(false), false);
            if let Some(stop) = steps.iter().position(|s| matches!(s, Step::Stop(_))) {
                let disarm = steps.iter().position(|s| *s == Step::Disarm);
                assert!(disarm.is_none_or(|d| d > stop), "{action:?}: {steps:?}");
            }
        }
    }

    #[test]
    fn a_failed_write_disarms_only_what_its_plan_armed() {
        let acquire = plan(&Action::AcquireLease, Some(true), false);
        assert_eq!(on_lease_write_failure(&acquire[..1]), vec![Step::Disarm]);
        let promote = plan(&Action::Promote, Some(true), false);
        assert_eq!(on_lease_write_failure(&promote[..1]), vec![Step::Disarm]);
        let renew = plan(&Action::RenewLease, Some(false), false);
        assert!(on_lease_write_failure(&renew[..0]).is_empty());
    }

    #[test]
    fn the_watchdog_is_armed_before_a_lease_write_that_makes_a_primary() {
        for action in every_action() {
            let steps = plan(&action, Some(true), false);
            if steps
                .iter()
                .any(|s| matches!(s, Step::Promote | Step::StartPrimary))
            {
                let arm = steps.iter().position(|s| *s == Step::Arm);
                let write = steps
                    .iter()
                    .position(|s| matches!(s, Step::Renew | Step::Acquire));
                assert!(arm < write, "{action:?}: {steps:?}");
            }
        }
    }
}
