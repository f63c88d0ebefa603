//! Physical replication slots on the primary, one per other member (Patroni's names), and the
//! slots of members whose pods are gone, dropped after a grace period so a recreated pod keeps
//! its slot but a scaled-down replica does not hold WAL forever. Pure: the agent lists, creates
//! and drops.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::conf::slot_name;

/// The slots the primary keeps: one for every member but itself.
pub fn wanted<'a>(members: impl IntoIterator<Item = &'a str>, me: &str) -> Vec<String> {
    members
        .into_iter()
        .filter(|n| *n != me)
        .map(slot_name)
        .collect()
}

/// Slots of members without a pod, and since when this primary has seen them so.
#[derive(Debug, Default)]
pub struct Orphans {
    since: HashMap<String, Instant>,
}

impl Orphans {
    /// `existing`: this cluster's member slots on the server; `pods`: the cluster's pods now.
    /// Returns the slots orphaned for at least `grace`, to drop now.
    pub fn due(
        &mut self,
        existing: &[String],
        pods: &[String],
        now: Instant,
        grace: Duration,
    ) -> Vec<String> {
        let present: Vec<String> = pods.iter().map(|p| slot_name(p)).collect();
        self.since
            .retain(|s, _| existing.contains(s) && !present.contains(s));
        existing
            .iter()
            .filter(|s| !present.contains(s))
            .filter(|s| {
                let since = *self.since.entry((*s).clone()).or_insert(now);
                now.duration_since(since) >= grace
            })
            .cloned()
            .collect()
    }

    /// The slot was dropped: forget it.
    pub fn dropped(&mut self, slot: &str) {
        self.since.remove(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn one_slot_for_every_other_member_in_patronis_names() {
        assert_eq!(
            wanted(["demo-0", "demo-1", "demo.2"], "demo-0"),
            s(&["demo_1", "demo_2"])
        );
    }

    #[test]
    fn an_orphan_is_dropped_only_after_the_grace_period() {
        let mut o = Orphans::default();
        let t0 = Instant::now();
        let grace = Duration::from_secs(16);
        let existing = s(&["demo_1", "demo_2"]);
        let pods = s(&["demo-0", "demo-1"]);
        assert!(o.due(&existing, &pods, t0, grace).is_empty());
        assert!(
            o.due(&existing, &pods, t0 + Duration::from_secs(15), grace)
                .is_empty()
        );
        assert_eq!(
            o.due(&existing, &pods, t0 + Duration::from_secs(16), grace),
            s(&["demo_2"])
        );
        o.dropped("demo_2");
        assert!(
            o.due(&s(&["demo_1"]), &pods, t0 + Duration::from_secs(17), grace)
                .is_empty()
        );
    }

    #[test]
    fn a_pod_that_comes_back_restarts_the_grace_period() {
        let mut o = Orphans::default();
        let t0 = Instant::now();
        let grace = Duration::from_secs(16);
        let existing = s(&["demo_2"]);
        assert!(o.due(&existing, &[], t0, grace).is_empty());
        assert!(
            o.due(
                &existing,
                &s(&["demo-2"]),
                t0 + Duration::from_secs(10),
                grace
            )
            .is_empty()
        );
        assert!(
            o.due(&existing, &[], t0 + Duration::from_secs(20), grace)
                .is_empty()
        );
        assert_eq!(
            o.due(&existing, &[], t0 + Duration::from_secs(36), grace),
            existing
        );
    }
}
