//! The routing gate: PostgreSQL never answers behind the `-rw` Service as anything but the
//! primary. A member that stopped being primary while it could not remove its `primary` role
//! label (the apiserver was away), or a restarted agent that does not know its pod's label,
//! keeps PostgreSQL stopped until (1) the label is gone, (2) the `-rw` EndpointSlices no longer
//! list its address, and (3) kube-proxy had [`KUBE_PROXY_ALLOWANCE`] to reprogram its rules.
//! Clients meanwhile get a fast connection error, never a read-only answer or a stale read.
//! Pure: the agent feeds it what it observed and starts PostgreSQL when it says `Open`.

use std::time::{Duration, Instant};

/// How long after the EndpointSlices stopped listing this member kube-proxy may still route to
/// it (its rules follow the slices within about a second).
pub const KUBE_PROXY_ALLOWANCE: Duration = Duration::from_secs(1);

/// How long to wait when the EndpointSlices cannot be read (no permission, an apiserver error)
/// after the label was removed: the endpoint controllers and kube-proxy follow within this.
pub const BLIND_ALLOWANCE: Duration = Duration::from_secs(5);

/// What the gate says about starting PostgreSQL as anything but primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Not yet, and why (for the log).
    Closed(&'static str),
}

/// What the agent saw of its routing this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The `primary` label could not be removed.
    LabelStays,
    /// The label is gone; `-rw` lists this member (`Some(true)`), does not (`Some(false)`), or
    /// its EndpointSlices could not be read (`None`).
    LabelGone { listed: Option<bool> },
}

/// Remembers since when this member's `primary` label has been gone while it waits to start.
#[derive(Debug, Default)]
pub struct RouteGate {
    /// When the label was removed (or first known gone) while a start was pending.
    gone_since: Option<Instant>,
    /// When `-rw` was first seen not listing this member.
    unlisted_since: Option<Instant>,
}

impl RouteGate {
    /// Whether the label may have been on the pod: the gate has work to do.
    pub fn pending(&self) -> bool {
        self.gone_since.is_some()
    }

    /// The label had to be removed just now (or is being removed): the wait starts.
    pub fn label_removed(&mut self, now: Instant) {
        self.gone_since.get_or_insert(now);
        self.unlisted_since = None;
    }

    /// Decide, from what was seen this cycle; `Open` resets the gate.
    pub fn decide(&mut self, seen: Seen, now: Instant) -> Gate {
        let Some(gone) = self.gone_since else {
            return match seen {
                Seen::LabelStays => Gate::Closed("the primary role label cannot be removed"),
                Seen::LabelGone { .. } => Gate::Open,
            };
        };
        let gate = match seen {
            Seen::LabelStays => Gate::Closed("the primary role label cannot be removed"),
            Seen::LabelGone { listed: Some(true) } => {
                self.unlisted_since = None;
                Gate::Closed("the -rw Service still routes to this member")
            }
            Seen::LabelGone {
                listed: Some(false),
            } => {
                let since = *self.unlisted_since.get_or_insert(now);
                if now.duration_since(since) >= KUBE_PROXY_ALLOWANCE {
                    Gate::Open
                } else {
                    Gate::Closed("giving kube-proxy a moment to stop routing -rw here")
                }
            }
            Seen::LabelGone { listed: None } => {
                if now.duration_since(gone) >= BLIND_ALLOWANCE {
                    Gate::Open
                } else {
                    Gate::Closed(
                        "cannot read the -rw endpoints; waiting for them to follow the label",
                    )
                }
            }
        };
        if gate == Gate::Open {
            *self = RouteGate::default();
        }
        gate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_never_labelled_primary_starts_at_once() {
        let mut g = RouteGate::default();
        let now = Instant::now();
        assert_eq!(g.decide(Seen::LabelGone { listed: None }, now), Gate::Open);
        assert!(matches!(g.decide(Seen::LabelStays, now), Gate::Closed(_)));
    }

    #[test]
    fn after_removing_the_label_it_waits_for_the_endpoints_and_kube_proxy() {
        let mut g = RouteGate::default();
        let t0 = Instant::now();
        g.label_removed(t0);
        assert!(g.pending());
        let listed = Seen::LabelGone { listed: Some(true) };
        let unlisted = Seen::LabelGone {
            listed: Some(false),
        };
        assert!(matches!(g.decide(listed, t0), Gate::Closed(_)));
        let t1 = t0 + Duration::from_secs(3);
        assert!(
            matches!(g.decide(listed, t1), Gate::Closed(_)),
            "still listed"
        );
        let t2 = t1 + Duration::from_millis(500);
        assert!(
            matches!(g.decide(unlisted, t2), Gate::Closed(_)),
            "kube-proxy's moment"
        );
        assert!(matches!(
            g.decide(unlisted, t2 + KUBE_PROXY_ALLOWANCE / 2),
            Gate::Closed(_)
        ));
        assert_eq!(g.decide(unlisted, t2 + KUBE_PROXY_ALLOWANCE), Gate::Open);
        assert!(!g.pending(), "open resets the gate");
    }

    #[test]
    fn listed_again_restarts_the_kube_proxy_allowance() {
        let mut g = RouteGate::default();
        let t0 = Instant::now();
        g.label_removed(t0);
        let unlisted = Seen::LabelGone {
            listed: Some(false),
        };
        assert!(matches!(g.decide(unlisted, t0), Gate::Closed(_)));
        let t1 = t0 + Duration::from_millis(900);
        assert!(matches!(
            g.decide(Seen::LabelGone { listed: Some(true) }, t1),
            Gate::Closed(_)
        ));
        assert!(matches!(
            g.decide(unlisted, t1 + Duration::from_millis(200)),
            Gate::Closed(_)
        ));
    }

    #[test]
    fn blind_it_waits_the_longer_allowance_from_the_removal() {
        let mut g = RouteGate::default();
        let t0 = Instant::now();
        g.label_removed(t0);
        let blind = Seen::LabelGone { listed: None };
        assert!(matches!(
            g.decide(blind, t0 + BLIND_ALLOWANCE / 2),
            Gate::Closed(_)
        ));
        assert_eq!(g.decide(blind, t0 + BLIND_ALLOWANCE), Gate::Open);
    }

    #[test]
    fn a_label_that_stays_keeps_it_closed() {
        let mut g = RouteGate::default();
        let t0 = Instant::now();
        g.label_removed(t0);
        assert!(matches!(
            g.decide(Seen::LabelStays, t0 + Duration::from_secs(60)),
            Gate::Closed(_)
        ));
    }
}
