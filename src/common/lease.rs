//! Leases as locks, for the agents' leader Lease and the operator's own leader election: expiry
//! judged on this process's monotonic clock (the time since it last saw the Lease change, never a
//! comparison of wall clocks across machines), and every write a compare-and-swap on
//! `resourceVersion` (PUT; a 409 means someone else wrote first).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::PostParams;

/// When this process last saw a Lease change (its `resourceVersion`), on its own clock.
#[derive(Debug)]
pub struct LeaseClock {
    seen: Option<String>,
    changed_at: Instant,
}

impl LeaseClock {
    /// A new clock starts now: a restarted process waits a full duration before it trusts that
    /// an unchanged Lease is dead.
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    pub fn starting_at(now: Instant) -> Self {
        Self {
            seen: None,
            changed_at: now,
        }
    }

    /// Record what was read (`None`: no Lease object); the clock restarts when it changed.
    pub fn observe(&mut self, lease: Option<&Lease>, now: Instant) {
        let key = lease.map(|l| l.metadata.resource_version.clone().unwrap_or_default());
        if key != self.seen {
            self.seen = key;
            self.changed_at = now;
        }
    }

    /// Unchanged for longer than `duration`.
    pub fn expired(&self, duration: Duration, now: Instant) -> bool {
        now.saturating_duration_since(self.changed_at) > duration
    }

    /// How long until it would expire.
    pub fn expires_in(&self, duration: Duration, now: Instant) -> Duration {
        duration.saturating_sub(now.saturating_duration_since(self.changed_at))
    }
}

impl Default for LeaseClock {
    fn default() -> Self {
        Self::new()
    }
}

/// The holder, if any (an empty `holderIdentity` is no holder).
pub fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// Stamp a Lease for writing: `holder` (or none, to release), `duration`, `renewTime` now; when
/// `acquire`, also `acquireTime`, and one more `leaseTransitions` if the holder changes.
pub fn stamp(lease: &mut Lease, holder: Option<&str>, duration: Duration, acquire: bool) {
    let now = MicroTime(jiff::Timestamp::now());
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let previous = spec.holder_identity.clone().filter(|h| !h.is_empty());
    if acquire {
        spec.acquire_time = Some(now.clone());
        if previous.as_deref() != holder {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
    }
    spec.holder_identity = holder.map(str::to_string);
    spec.lease_duration_seconds = Some(duration.as_secs() as i32);
    spec.renew_time = Some(now);
}

/// Write `lease` by compare-and-swap: a PUT carrying the `resourceVersion` it was read with
/// when it `exists`, else a create (which fails if someone else created it first).
pub async fn write(
    api: &Api<Lease>,
    name: &str,
    exists: bool,
    lease: &Lease,
) -> Result<Lease, kube::Error> {
    if exists {
        api.replace(name, &PostParams::default(), lease).await
    } else {
        api.create(&PostParams::default(), lease).await
    }
}

/// A 409: the compare-and-swap was lost.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn lease(rv: &str, holder: Option<&str>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn expiry_runs_from_the_last_change_seen_on_our_clock() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(8);
        let mut c = LeaseClock::starting_at(t0);
        c.observe(Some(&lease("1", Some("a"))), t0);
        assert!(!c.expired(ttl, t0 + Duration::from_secs(8)));
        assert!(c.expired(ttl, t0 + Duration::from_millis(8001)));
        // The same version read again does not restart the clock; a new one does.
        c.observe(Some(&lease("1", Some("a"))), t0 + Duration::from_secs(5));
        assert_eq!(
            c.expires_in(ttl, t0 + Duration::from_secs(5)),
            Duration::from_secs(3)
        );
        c.observe(Some(&lease("2", Some("a"))), t0 + Duration::from_secs(6));
        assert!(!c.expired(ttl, t0 + Duration::from_secs(13)));
    }

    #[test]
    fn a_new_clock_waits_a_full_duration() {
        let t0 = Instant::now();
        let c = LeaseClock::starting_at(t0);
        assert!(!c.expired(Duration::from_secs(8), t0 + Duration::from_secs(7)));
    }

    #[test]
    fn stamping_counts_transitions_only_when_the_holder_changes() {
        let mut l = lease("1", Some("a"));
        stamp(&mut l, Some("a"), Duration::from_secs(8), true);
        assert_eq!(l.spec.as_ref().unwrap().lease_transitions, None);
        stamp(&mut l, Some("b"), Duration::from_secs(8), true);
        let s = l.spec.as_ref().unwrap();
        assert_eq!(s.lease_transitions, Some(1));
        assert_eq!(s.lease_duration_seconds, Some(8));
        assert!(s.acquire_time.is_some() && s.renew_time.is_some());
        stamp(&mut l, None, Duration::from_secs(8), false);
        assert_eq!(holder(&l), None);
        assert_eq!(l.spec.as_ref().unwrap().lease_transitions, Some(1));
    }

    #[test]
    fn an_empty_holder_is_no_holder() {
        assert_eq!(holder(&lease("1", Some(""))), None);
        assert_eq!(holder(&lease("1", Some("a"))), Some("a"));
    }
}
