//! What the operator remembers of each cluster between two reconciles, and the decisions made
//! from it (pure, no client): the error policy's backoff and the settle gate between two
//! disruptive rolling steps. See docs/architecture.md.

use std::time::{Duration, Instant};

use super::rolling::Step;

/// Time between two disruptive steps of a roll. A pod's readiness and its agent's status
/// annotation trail the change by a few seconds (two failed probes 2 s apart, one loop to
/// publish); without the pause the next step could start while the last member still looks
/// healthy, and two instances would be down at once.
pub const SETTLE: Duration = Duration::from_secs(10);

/// One cluster's memory; it lives only in this operator process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remembered {
    /// Consecutive failed reconciles, for the error policy's backoff; reset on success.
    pub failures: u32,
    /// When the last disruptive rolling step ran; a change of the dynamic configuration counts
    /// as one, so members can reload and report before a roll.
    pub last_step: Option<Instant>,
    /// The dynamic configuration fingerprint the cluster was last reconciled with.
    pub config: Option<String>,
}

/// Whether a disruptive step may run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// The last step (or configuration change) is younger than [`SETTLE`].
    Settling,
}

impl Remembered {
    /// Note the dynamic configuration reconciled now; a change restarts the settle time.
    pub fn saw_config(&mut self, fingerprint: &str, now: Instant) {
        let changed = self.config.as_deref().is_some_and(|old| old != fingerprint);
        self.config = Some(fingerprint.to_string());
        if changed {
            self.last_step = Some(now);
        }
    }

    /// Count one more failed reconcile; the new count.
    pub fn failed(&mut self) -> u32 {
        self.failures = self.failures.saturating_add(1);
        self.failures
    }
}

/// The settle gate: closed while the last disruptive step is younger than [`SETTLE`].
pub fn gate(remembered: &Remembered, now: Instant) -> Gate {
    match remembered.last_step {
        Some(t) if now.saturating_duration_since(t) < SETTLE => Gate::Settling,
        _ => Gate::Open,
    }
}

/// The step to take through the gate: a disruptive step waits while the gate is settling.
pub fn through(gate: Gate, step: Step) -> Step {
    if gate == Gate::Settling && step.is_disruptive() {
        Step::Wait(format!(
            "letting the last step settle before: {}",
            step.describe().unwrap_or_default()
        ))
    } else {
        step
    }
}

/// Exponential backoff after `failures` consecutive failures: 2 s, 4 s, ... 256 s from the
/// eighth on (the 300 s cap is never reached).
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs((1u64 << failures.min(8)).min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delete(pod: &str) -> Step {
        Step::DeletePod {
            pod: pod.into(),
            reason: "replica runs an old pod template".into(),
        }
    }

    #[test]
    fn the_gate_is_open_without_a_step_and_after_settle() {
        let t0 = Instant::now();
        assert_eq!(gate(&Remembered::default(), t0), Gate::Open);
        let r = Remembered {
            last_step: Some(t0),
            ..Default::default()
        };
        let table = [
            (Duration::ZERO, Gate::Settling),
            (SETTLE - Duration::from_millis(1), Gate::Settling),
            (SETTLE, Gate::Open),
            (SETTLE + Duration::from_secs(60), Gate::Open),
        ];
        for (after, want) in table {
            assert_eq!(gate(&r, t0 + after), want, "{after:?}");
        }
    }

    #[test]
    fn a_config_change_closes_the_gate_the_first_sighting_does_not() {
        let t0 = Instant::now();
        let mut r = Remembered::default();
        r.saw_config("a", t0);
        assert_eq!((r.last_step, gate(&r, t0)), (None, Gate::Open));
        r.saw_config("a", t0 + SETTLE);
        assert_eq!(r.last_step, None);
        let t1 = t0 + 2 * SETTLE;
        r.saw_config("b", t1);
        assert_eq!(r.last_step, Some(t1));
        assert_eq!(r.config.as_deref(), Some("b"));
        assert_eq!(gate(&r, t1 + Duration::from_secs(1)), Gate::Settling);
        assert_eq!(gate(&r, t1 + SETTLE), Gate::Open);
    }

    #[test]
    fn only_disruptive_steps_wait_for_the_gate() {
        let table = [
            (Gate::Open, delete("c-2"), delete("c-2")),
            (
                Gate::Settling,
                delete("c-2"),
                Step::Wait(
                    "letting the last step settle before: recreating c-2: replica runs an old pod template"
                        .into(),
                ),
            ),
            (
                Gate::Settling,
                Step::Restart {
                    pod: "c-1".into(),
                    reason: "r".into(),
                },
                Step::Wait("letting the last step settle before: restarting c-1: r".into()),
            ),
            (
                Gate::Settling,
                Step::Switchover {
                    from: "c-0".into(),
                    to: "c-1".into(),
                    reason: "r".into(),
                },
                Step::Wait(
                    "letting the last step settle before: switching over from c-0 to c-1: r"
                        .into(),
                ),
            ),
            (Gate::Settling, Step::Idle, Step::Idle),
            (Gate::Settling, Step::Wait("x".into()), Step::Wait("x".into())),
        ];
        for (g, step, want) in table {
            assert_eq!(through(g, step.clone()), want, "{g:?} {step:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_256_seconds() {
        let table = [(1, 2), (2, 4), (5, 32), (8, 256), (9, 256), (u32::MAX, 256)];
        for (failures, secs) in table {
            assert_eq!(backoff(failures), Duration::from_secs(secs), "{failures}");
        }
        let mut r = Remembered::default();
        assert_eq!((r.failed(), r.failed()), (1, 2));
    }
}
