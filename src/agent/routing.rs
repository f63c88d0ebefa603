//! The routing gate: PostgreSQL never answers behind the `-rw` Service as anything but the
//! primary. A member that stopped being primary (a demotion, or a restarted agent whose pod may
//! still carry the `primary` role label) runs as a replica with its clients fenced (pg_hba.conf
//! rejects every client over TCP; replication stays open) until (1) the label is gone, (2) the
//! `-rw` EndpointSlices no longer list its address, and (3) kube-proxy had time to follow them:
//! [`KUBE_PROXY_ALLOWANCE`] normally, [`KUBE_PROXY_RELIST`] when the apiserver was away lately
//! (kube-proxy's watch then retries with client-go's backoff, 30 s with up to 100 % jitter, and
//! its rules lag that long: the end-to-end test saw -rw route to a demoted member for 80 s after
//! two apiserver restarts in a row).
//! Clients meanwhile get an error at connect, never a read-only answer or a stale read.
//! Pure: the agent feeds it what it observed and opens pg_hba.conf when it says `Open`.

use std::time::{Duration, Instant};

/// How long after the EndpointSlices stopped listing this member kube-proxy may still route to
/// it while its watch is healthy (its rules follow the slices within about a second).
pub const KUBE_PROXY_ALLOWANCE: Duration = Duration::from_secs(2);

/// The same after an apiserver outage: client-go's watch retry backs off up to 30 s with up to
/// 100 % jitter, and an outage that recurs before it relists starts it over, so kube-proxy may
/// relist more than a minute late (80 s measured).
pub const KUBE_PROXY_RELIST: Duration = Duration::from_secs(120);

/// How long after this agent last saw the apiserver fail kube-proxy may still be backing off.
pub const APISERVER_AWAY_MEMORY: Duration = Duration::from_secs(300);

/// How long to wait after the label's removal when the EndpointSlices cannot be read (no
/// permission, an apiserver error), at least: the endpoint controller follows within this.
pub const BLIND_ALLOWANCE: Duration = Duration::from_secs(5);

/// kube-proxy's allowance, given whether the apiserver was away within
/// [`APISERVER_AWAY_MEMORY`].
pub fn allowance(apiserver_away_lately: bool) -> Duration {
    if apiserver_away_lately {
        KUBE_PROXY_RELIST
    } else {
        KUBE_PROXY_ALLOWANCE
    }
}

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
    /// The label is gone and the cluster has no `-rw` EndpointSlice at all: nothing routes
    /// through it (no such Service).
    NoService,
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

    /// Decide, from what was seen this cycle, with kube-proxy's `allowance`; `Open` resets the
    /// gate.
    pub fn decide(&mut self, seen: Seen, now: Instant, allowance: Duration) -> Gate {
        let Some(gone) = self.gone_since else {
            return match seen {
                Seen::LabelStays => Gate::Closed("the primary role label cannot be removed"),
                Seen::LabelGone { .. } | Seen::NoService => Gate::Open,
            };
        };
        let gate = match seen {
            Seen::LabelStays => Gate::Closed("the primary role label cannot be removed"),
            Seen::NoService => Gate::Open,
            Seen::LabelGone { listed: Some(true) } => {
                self.unlisted_since = None;
                Gate::Closed("the -rw Service still routes to this member")
            }
            Seen::LabelGone {
                listed: Some(false),
            } => {
                let since = *self.unlisted_since.get_or_insert(now);
                if now.duration_since(since) >= allowance {
                    Gate::Open
                } else {
                    Gate::Closed("giving kube-proxy a moment to stop routing -rw here")
                }
            }
            Seen::LabelGone { listed: None } => {
                if now.duration_since(gone) >= allowance.max(BLIND_ALLOWANCE) {
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

/// A primary that hands the Lease over (a switchover: the Lease is released after a clean stop)
/// keeps its `primary` label until its successor has one, so `-rw` is never without an
/// endpoint: kube-proxy turns an empty Service into a REJECT rule in its filter table and the
/// new endpoint into a DNAT in its nat table, and a client connecting between the two updates
/// sends its SYN nowhere and hangs until its connect timeout. Meanwhile this member refuses
/// every client (PostgreSQL stopping, then started with its clients fenced), so `-rw` still
/// never gets a read-only answer. It lets go when another pod carries the label (the successor
/// labels itself first, then takes this label off), when the label is gone, or after `limit`
/// (nobody took over).
#[derive(Debug, Default)]
pub struct Handover {
    since: Option<Instant>,
}

impl Handover {
    /// The stop of a handover begins: the label stays.
    pub fn start(&mut self, now: Instant) {
        self.since = Some(now);
    }

    /// This member leads again (or starts afresh): nothing to hand over.
    pub fn clear(&mut self) {
        self.since = None;
    }

    /// Whether the label stays for now.
    pub fn active(&self) -> bool {
        self.since.is_some()
    }

    /// Judge this cycle's read: `label_on` our pod carries `primary`; `successor_labelled`
    /// another pod does. Returns whether the handover just ended (the label is to go, or went).
    pub fn observe(
        &mut self,
        now: Instant,
        label_on: bool,
        successor_labelled: bool,
        limit: Duration,
    ) -> bool {
        let Some(since) = self.since else {
            return false;
        };
        if !label_on || successor_labelled || now.duration_since(since) >= limit {
            self.since = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Duration = KUBE_PROXY_ALLOWANCE;

    #[test]
    fn a_member_never_labelled_primary_starts_at_once() {
        let mut g = RouteGate::default();
        let now = Instant::now();
        assert_eq!(
            g.decide(Seen::LabelGone { listed: None }, now, A),
            Gate::Open
        );
        assert!(matches!(
            g.decide(Seen::LabelStays, now, A),
            Gate::Closed(_)
        ));
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
        assert!(matches!(g.decide(listed, t0, A), Gate::Closed(_)));
        let t1 = t0 + Duration::from_secs(3);
        assert!(
            matches!(g.decide(listed, t1, A), Gate::Closed(_)),
            "still listed"
        );
        let t2 = t1 + Duration::from_millis(500);
        assert!(
            matches!(g.decide(unlisted, t2, A), Gate::Closed(_)),
            "kube-proxy's moment"
        );
        assert!(matches!(
            g.decide(unlisted, t2 + KUBE_PROXY_ALLOWANCE / 2, A),
            Gate::Closed(_)
        ));
        assert_eq!(g.decide(unlisted, t2 + KUBE_PROXY_ALLOWANCE, A), Gate::Open);
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
        assert!(matches!(g.decide(unlisted, t0, A), Gate::Closed(_)));
        let t1 = t0 + Duration::from_millis(900);
        assert!(matches!(
            g.decide(Seen::LabelGone { listed: Some(true) }, t1, A),
            Gate::Closed(_)
        ));
        assert!(matches!(
            g.decide(unlisted, t1 + Duration::from_millis(200), A),
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
            g.decide(blind, t0 + BLIND_ALLOWANCE / 2, A),
            Gate::Closed(_)
        ));
        assert_eq!(g.decide(blind, t0 + BLIND_ALLOWANCE, A), Gate::Open);
    }

    #[test]
    fn after_an_apiserver_outage_kube_proxy_gets_its_relist_time() {
        let mut g = RouteGate::default();
        let t0 = Instant::now();
        g.label_removed(t0);
        let unlisted = Seen::LabelGone {
            listed: Some(false),
        };
        let late = allowance(true);
        assert_eq!(late, KUBE_PROXY_RELIST);
        assert_eq!(allowance(false), KUBE_PROXY_ALLOWANCE);
        assert!(matches!(g.decide(unlisted, t0, late), Gate::Closed(_)));
        assert!(matches!(
            g.decide(unlisted, t0 + Duration::from_secs(90), late),
            Gate::Closed(_)
        ));
        assert_eq!(g.decide(unlisted, t0 + KUBE_PROXY_RELIST, late), Gate::Open);
    }

    #[test]
    fn without_a_service_nothing_routes_here() {
        let mut g = RouteGate::default();
        let t0 = Instant::now();
        g.label_removed(t0);
        assert_eq!(g.decide(Seen::NoService, t0, allowance(true)), Gate::Open);
    }

    #[test]
    fn a_label_that_stays_keeps_it_closed() {
        let mut g = RouteGate::default();
        let t0 = Instant::now();
        g.label_removed(t0);
        assert!(matches!(
            g.decide(Seen::LabelStays, t0 + Duration::from_secs(60), A),
            Gate::Closed(_)
        ));
    }

    #[test]
    fn a_handover_keeps_the_label_until_the_successor_has_one() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(30);
        let mut h = Handover::default();
        assert!(!h.active());
        assert!(!h.observe(t0, true, false, limit), "nothing to end");
        h.start(t0);
        assert!(h.active());
        assert!(!h.observe(t0 + Duration::from_secs(1), true, false, limit));
        assert!(h.active(), "nobody else is labelled: the label stays");
        assert!(h.observe(t0 + Duration::from_secs(2), true, true, limit));
        assert!(!h.active(), "the successor is labelled: it ends");
    }

    #[test]
    fn a_handover_ends_when_the_label_went_or_nobody_took_over() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(30);
        let mut h = Handover::default();
        h.start(t0);
        assert!(
            h.observe(t0, false, false, limit),
            "the successor took the label off"
        );
        h.start(t0);
        assert!(!h.observe(t0 + Duration::from_secs(29), true, false, limit));
        assert!(
            h.observe(t0 + limit, true, false, limit),
            "nobody took over"
        );
        h.start(t0);
        h.clear();
        assert!(!h.active());
    }
}
