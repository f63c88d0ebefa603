//! Which rolling or scaling step comes next (pure, no client; `step` runs it), decided from the
//! members' state: replicas first, one at a time, each back to Ready and streaming before the
//! next; then a switchover to an up-to-date replica; the old primary last. Never more than one
//! instance down, and the primary is never removed by a scale-down without a switchover first.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::status::{self, ordinal};
use crate::api::member::MemberRole;

/// One member as the rolling logic needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub ready: bool,
    /// Reported by its agent as a replica that streams from the primary.
    pub streaming: bool,
    /// Runs the StatefulSet's current revision.
    pub updated: bool,
    pub pending_restart: bool,
    /// Tagged `nofailover`: never a switchover target.
    pub nofailover: bool,
    /// Runs with the current dynamic configuration (so its `pending_restart` is up to date).
    pub config_current: bool,
    /// May take over in synchronous mode (a published synchronous standby; everyone when the
    /// mode is off): the primary refuses a switchover to any other.
    pub sync_eligible: bool,
    /// Its pod's node is cordoned (`spec.unschedulable`: a drain has begun or is coming).
    pub node_cordoned: bool,
}

/// The next thing to do; at most one per reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to roll.
    Idle,
    /// Something is under way or not healthy; try again later.
    Wait(String),
    /// Recreate this pod from the current template.
    DeletePod { pod: String, reason: String },
    /// Restart PostgreSQL in place (its agent's `POST /restart`).
    Restart { pod: String, reason: String },
    /// Ask the primary's agent to hand over.
    Switchover {
        from: String,
        to: String,
        reason: String,
    },
}

impl Step {
    /// Whether the step takes an instance down (and so must wait for the last one to settle).
    pub fn is_disruptive(&self) -> bool {
        !matches!(self, Step::Idle | Step::Wait(_))
    }

    /// A sentence for status and Events while a change rolls.
    pub fn describe(&self) -> Option<String> {
        match self {
            Step::Idle => None,
            Step::Wait(r) => Some(r.clone()),
            Step::DeletePod { pod, reason } => Some(format!("recreating {pod}: {reason}")),
            Step::Restart { pod, reason } => Some(format!("restarting {pod}: {reason}")),
            Step::Switchover { from, to, reason } => {
                Some(format!("switching over from {from} to {to}: {reason}"))
            }
        }
    }
}

/// The members as the pods and their agents' status annotations show them; `config` is the
/// fingerprint of the dynamic configuration the spec asks for; `sync_standbys`: the published
/// synchronous standbys when synchronous mode is on; `cordoned`: the names of cordoned nodes.
pub fn members(
    pods: &[Pod],
    update_revision: Option<&str>,
    config: &str,
    sync_standbys: Option<&[String]>,
    cordoned: &BTreeSet<String>,
) -> Vec<Member> {
    pods.iter()
        .map(|p| {
            let s = status::member_status(p);
            Member {
                name: p.name_any(),
                ready: status::pod_ready(p),
                streaming: s.as_ref().is_some_and(|s| {
                    s.role == MemberRole::Primary
                        || s.replication_state.as_deref() == Some("streaming")
                }),
                updated: status::pod_updated(p, update_revision),
                pending_restart: s.as_ref().is_some_and(|s| s.pending_restart),
                nofailover: s.as_ref().is_some_and(|s| s.tags.nofailover),
                config_current: s
                    .as_ref()
                    .is_some_and(|s| s.config.as_deref() == Some(config)),
                sync_eligible: sync_standbys.is_none_or(|sync| sync.contains(&p.name_any())),
                node_cordoned: p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some_and(|n| cordoned.contains(n)),
            }
        })
        .collect()
}

/// The best switchover target: ready, streaming, eligible; up to date and without a pending
/// restart when possible; the lowest ordinal among equals (stable, predictable).
fn target<'a>(
    members: &'a [Member],
    primary: &str,
    allowed: impl Fn(&Member) -> bool,
) -> Option<&'a Member> {
    members
        .iter()
        .filter(|m| {
            m.name != primary
                && m.ready
                && m.streaming
                && !m.nofailover
                && m.sync_eligible
                && allowed(m)
        })
        .min_by_key(|m| (!m.updated, m.pending_restart, ordinal(&m.name)))
}

/// The next rolling step for `members` (every pod of the cluster) with `primary` in charge.
pub fn next_step(members: &[Member], primary: Option<&str>) -> Step {
    let outdated = members.iter().any(|m| !m.updated);
    let pending = members.iter().any(|m| m.pending_restart);
    if !outdated && !pending {
        return Step::Idle;
    }
    let Some(primary) = primary else {
        return Step::Wait("waiting for a primary before rolling".into());
    };
    // Which members need a restart is only known once all of them have taken the change up;
    // deciding earlier could switch over to a replica that needs a restart a moment later.
    if pending && let Some(m) = members.iter().find(|m| !m.config_current) {
        return Step::Wait(format!(
            "waiting for {} to take up the new configuration",
            m.name
        ));
    }
    if let Some(m) = members
        .iter()
        .find(|m| !m.ready || (m.name != primary && !m.streaming))
    {
        return Step::Wait(format!("waiting for {} to be ready and streaming", m.name));
    }
    let mut replicas: Vec<&Member> = members.iter().filter(|m| m.name != primary).collect();
    // Highest ordinal first, like a StatefulSet's own rolling update.
    replicas.sort_by_key(|m| std::cmp::Reverse(ordinal(&m.name)));
    if let Some(m) = replicas.iter().find(|m| !m.updated) {
        return Step::DeletePod {
            pod: m.name.clone(),
            reason: "replica runs an old pod template".into(),
        };
    }
    if let Some(m) = replicas.iter().find(|m| m.pending_restart) {
        return Step::Restart {
            pod: m.name.clone(),
            reason: "replica has parameters pending a restart".into(),
        };
    }
    let Some(me) = members.iter().find(|m| m.name == primary) else {
        return Step::Wait(format!("primary {primary} has no pod"));
    };
    if !me.updated || me.pending_restart {
        let why = if !me.updated {
            "primary runs an old pod template"
        } else {
            "primary has parameters pending a restart"
        };
        if members.len() == 1 {
            // No one to hand over to: the single instance goes down either way.
            return if me.updated {
                Step::Restart {
                    pod: me.name.clone(),
                    reason: why.into(),
                }
            } else {
                Step::DeletePod {
                    pod: me.name.clone(),
                    reason: why.into(),
                }
            };
        }
        return match target(members, primary, |m| m.updated && !m.pending_restart) {
            Some(t) => Step::Switchover {
                from: primary.into(),
                to: t.name.clone(),
                reason: why.into(),
            },
            None => Step::Wait(format!(
                "{why}; waiting for an up-to-date replica to take over"
            )),
        };
    }
    Step::Idle
}

/// How many pods the StatefulSet may have now: `instances`, unless that would remove the
/// primary; then the current count stays and a switchover to a surviving replica comes first.
pub fn replicas_and_step(
    instances: i32,
    current: i32,
    members: &[Member],
    primary: Option<&str>,
) -> (i32, Option<Step>) {
    let Some(primary) = primary else {
        return (instances.max(current.min(instances)), None);
    };
    let p = ordinal(primary);
    if (p as i64) < instances as i64 {
        return (instances, None);
    }
    let keep = current.max(p as i32 + 1);
    let step = match target(members, primary, |m| {
        (ordinal(&m.name) as i64) < instances as i64
    }) {
        Some(t) => Step::Switchover {
            from: primary.into(),
            to: t.name.clone(),
            reason: format!("scaling to {instances} instances removes the primary"),
        },
        None => Step::Wait(format!(
            "scaling to {instances} would remove primary {primary}; waiting for a replica to take over"
        )),
    };
    (keep, Some(step))
}

/// A drain of the primary's node: `kubectl drain` cordons the node, then evicts its pods, and
/// the primary's PodDisruptionBudget refuses to evict the primary. So the primary moves first,
/// to a replica on a node that is not cordoned; the drain's next retry then evicts the old
/// primary as a replica. `None` when the primary's node is not cordoned.
pub fn drain_step(members: &[Member], primary: Option<&str>) -> Option<Step> {
    let primary = primary?;
    let me = members.iter().find(|m| m.name == primary)?;
    if !me.node_cordoned || members.len() == 1 {
        return None;
    }
    let why = format!("the node of primary {primary} is cordoned (a drain)");
    Some(match target(members, primary, |m| !m.node_cordoned) {
        Some(t) => Step::Switchover {
            from: primary.into(),
            to: t.name.clone(),
            reason: why,
        },
        None => Step::Wait(format!(
            "{why}; waiting for a ready, streaming replica on another node to take over"
        )),
    })
}

/// The StatefulSet's replicas and the one step of this reconcile: the switchover away from a
/// cordoned node first (a drain is waiting for it), then a scaling step if scaling must wait
/// for a switchover, else the rolling step among the pods that stay (pods the StatefulSet is
/// about to remove do not hold a roll up).
pub fn plan(
    instances: i32,
    current: i32,
    members: Vec<Member>,
    primary: Option<&str>,
) -> (i32, Step) {
    let (replicas, scale_step) = replicas_and_step(instances, current, &members, primary);
    let step = match drain_step(&members, primary).or(scale_step) {
        Some(s) => s,
        None => {
            let staying: Vec<Member> = members
                .into_iter()
                .filter(|m| (ordinal(&m.name) as i64) < replicas as i64)
                .collect();
            next_step(&staying, primary)
        }
    };
    (replicas, step)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str) -> Member {
        Member {
            name: name.into(),
            ready: true,
            streaming: true,
            updated: true,
            pending_restart: false,
            nofailover: false,
            config_current: true,
            sync_eligible: true,
            node_cordoned: false,
        }
    }

    /// Safety hole 6: in synchronous mode the primary refuses a switchover to anyone but a
    /// published synchronous standby, so the rolling update picks one.
    #[test]
    fn in_synchronous_mode_the_switchover_goes_to_the_synchronous_standby() {
        let mut ms = vec![m("c-0"), m("c-1"), m("c-2")];
        ms[0].updated = false;
        ms[1].sync_eligible = false;
        assert!(matches!(
            next_step(&ms, Some("c-0")),
            Step::Switchover { to, .. } if to == "c-2"
        ));
        ms[2].sync_eligible = false;
        assert!(matches!(next_step(&ms, Some("c-0")), Step::Wait(_)));
    }

    #[test]
    fn nothing_to_do_when_everyone_is_current() {
        assert_eq!(next_step(&[m("c-0"), m("c-1")], Some("c-0")), Step::Idle);
    }

    #[test]
    fn replicas_roll_first_highest_ordinal_first() {
        let mut ms = vec![m("c-0"), m("c-1"), m("c-2")];
        for x in &mut ms {
            x.updated = false;
        }
        assert_eq!(
            next_step(&ms, Some("c-1")),
            Step::DeletePod {
                pod: "c-2".into(),
                reason: "replica runs an old pod template".into()
            }
        );
        ms[2].updated = true;
        assert!(matches!(next_step(&ms, Some("c-1")), Step::DeletePod { pod, .. } if pod == "c-0"));
    }

    #[test]
    fn one_down_at_a_time() {
        let mut ms = vec![m("c-0"), m("c-1"), m("c-2")];
        ms[1].updated = false;
        ms[2].ready = false;
        assert!(matches!(next_step(&ms, Some("c-0")), Step::Wait(r) if r.contains("c-2")));
        ms[2].ready = true;
        ms[2].streaming = false;
        assert!(matches!(next_step(&ms, Some("c-0")), Step::Wait(_)));
    }

    #[test]
    fn the_primary_goes_last_after_a_switchover_to_an_updated_replica() {
        let mut ms = vec![m("c-0"), m("c-1"), m("c-2")];
        ms[0].updated = false;
        ms[2].nofailover = true;
        assert_eq!(
            next_step(&ms, Some("c-0")),
            Step::Switchover {
                from: "c-0".into(),
                to: "c-1".into(),
                reason: "primary runs an old pod template".into()
            }
        );
        // After the switchover the old primary is an outdated replica: recreated next.
        assert!(matches!(next_step(&ms, Some("c-1")), Step::DeletePod { pod, .. } if pod == "c-0"));
    }

    #[test]
    fn pending_restarts_restart_replicas_then_switch_over() {
        let mut ms = vec![m("c-0"), m("c-1")];
        ms[0].pending_restart = true;
        ms[1].pending_restart = true;
        assert!(matches!(next_step(&ms, Some("c-0")), Step::Restart { pod, .. } if pod == "c-1"));
        ms[1].pending_restart = false;
        assert!(matches!(next_step(&ms, Some("c-0")), Step::Switchover { to, .. } if to == "c-1"));
    }

    #[test]
    fn restarts_wait_until_every_member_has_the_new_configuration() {
        let mut ms = vec![m("c-0"), m("c-1")];
        ms[0].pending_restart = true;
        ms[1].config_current = false;
        assert!(matches!(next_step(&ms, Some("c-0")), Step::Wait(r) if r.contains("c-1")));
        ms[1].config_current = true;
        assert!(matches!(
            next_step(&ms, Some("c-0")),
            Step::Switchover { .. }
        ));
    }

    #[test]
    fn no_eligible_target_means_waiting_not_an_outage() {
        let mut ms = vec![m("c-0"), m("c-1")];
        ms[0].updated = false;
        ms[1].nofailover = true;
        assert!(matches!(next_step(&ms, Some("c-0")), Step::Wait(_)));
    }

    #[test]
    fn scaling_down_switches_over_before_removing_the_primary() {
        let ms: Vec<Member> = (0..5).map(|i| m(&format!("c-{i}"))).collect();
        let (n, step) = replicas_and_step(2, 5, &ms, Some("c-3"));
        assert_eq!(n, 5);
        assert!(matches!(step, Some(Step::Switchover { to, .. }) if to == "c-0"));
        assert_eq!(replicas_and_step(2, 5, &ms, Some("c-1")), (2, None));
        assert_eq!(replicas_and_step(5, 3, &ms, Some("c-0")), (5, None));
    }

    #[test]
    fn plan_chooses_the_step_for_the_observed_state() {
        let five: Vec<Member> = (0..5).map(|i| m(&format!("c-{i}"))).collect();
        let mut old_c4 = five.clone();
        old_c4[4].updated = false;
        let mut old_c1 = five.clone();
        old_c1[1].updated = false;
        let mut old_primary = five[..3].to_vec();
        old_primary[0].updated = false;
        let delete = |pod: &str| Step::DeletePod {
            pod: pod.into(),
            reason: "replica runs an old pod template".into(),
        };
        // (case, instances, current replicas, members, primary, (replicas, step))
        type Case = (
            &'static str,
            i32,
            i32,
            Vec<Member>,
            Option<&'static str>,
            (i32, Step),
        );
        let table: Vec<Case> = vec![
            ("steady", 5, 5, five.clone(), Some("c-0"), (5, Step::Idle)),
            (
                "scale up",
                5,
                3,
                five[..3].to_vec(),
                Some("c-0"),
                (5, Step::Idle),
            ),
            (
                "scale down",
                3,
                5,
                five.clone(),
                Some("c-0"),
                (3, Step::Idle),
            ),
            (
                "scale down away from the primary first",
                2,
                5,
                five.clone(),
                Some("c-3"),
                (
                    5,
                    Step::Switchover {
                        from: "c-3".into(),
                        to: "c-0".into(),
                        reason: "scaling to 2 instances removes the primary".into(),
                    },
                ),
            ),
            (
                "an old pod that goes away holds nothing up",
                4,
                5,
                old_c4.clone(),
                Some("c-0"),
                (4, Step::Idle),
            ),
            (
                "an old pod that stays rolls",
                5,
                5,
                old_c4,
                Some("c-0"),
                (5, delete("c-4")),
            ),
            (
                "roll while scaling down",
                3,
                5,
                old_c1,
                Some("c-0"),
                (3, delete("c-1")),
            ),
            (
                "the primary last",
                3,
                3,
                old_primary,
                Some("c-0"),
                (
                    3,
                    Step::Switchover {
                        from: "c-0".into(),
                        to: "c-1".into(),
                        reason: "primary runs an old pod template".into(),
                    },
                ),
            ),
            (
                "no primary: create what the spec asks",
                3,
                0,
                vec![],
                None,
                (3, Step::Idle),
            ),
        ];
        for (case, instances, current, members, primary, want) in table {
            assert_eq!(plan(instances, current, members, primary), want, "{case}");
        }
    }

    #[test]
    fn members_read_the_pods_and_their_agents() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c-1", "labels": {"controller-revision-hash": "r0"}, "annotations": {
                crate::api::names::ANNOTATION_STATUS: serde_json::json!({
                    "conn_url": "postgres://10.0.0.2:5432/postgres", "api_url": "http://10.0.0.2:8008/patroni",
                    "state": "running", "role": "replica", "replication_state": "streaming",
                    "pending_restart": true, "config": "f1", "tags": {"nofailover": true}, "version": "0.1.0"
                }).to_string()
            }},
            "spec": {"nodeName": "n2", "containers": []},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("pod parses");
        let cordoned = BTreeSet::from(["n2".to_string()]);
        let got = members(
            std::slice::from_ref(&pod),
            Some("r1"),
            "f1",
            None,
            &cordoned,
        );
        assert_eq!(
            got,
            [Member {
                name: "c-1".into(),
                ready: true,
                streaming: true,
                updated: false,
                pending_restart: true,
                nofailover: true,
                config_current: true,
                sync_eligible: true,
                node_cordoned: true,
            }]
        );
        assert!(
            !members(
                std::slice::from_ref(&pod),
                Some("r0"),
                "f2",
                None,
                &cordoned
            )[0]
            .config_current
        );
        assert!(!members(&[pod], Some("r0"), "f1", None, &BTreeSet::new())[0].node_cordoned);
    }

    #[test]
    fn a_cordoned_primary_node_moves_the_primary_to_a_replica_on_another_node() {
        let cordon = |mut m: Member| {
            m.node_cordoned = true;
            m
        };
        // c-1 shares the cordoned node: c-2 takes over, whatever the ordinals say.
        let members = vec![cordon(m("c-0")), cordon(m("c-1")), m("c-2")];
        assert_eq!(
            plan(3, 3, members, Some("c-0")).1,
            Step::Switchover {
                from: "c-0".into(),
                to: "c-2".into(),
                reason: "the node of primary c-0 is cordoned (a drain)".into(),
            }
        );
        // Before a roll: the drain is waiting.
        let mut outdated = m("c-2");
        outdated.updated = false;
        let members = vec![cordon(m("c-0")), m("c-1"), outdated];
        assert!(matches!(
            plan(3, 3, members, Some("c-0")).1,
            Step::Switchover { to, .. } if to == "c-1"
        ));
        // No replica elsewhere that may take over (in synchronous mode only the standby may).
        let mut not_sync = m("c-1");
        not_sync.sync_eligible = false;
        let members = vec![cordon(m("c-0")), not_sync];
        assert!(matches!(plan(2, 2, members, Some("c-0")).1, Step::Wait(_)));
        // A cordoned replica's node, or a single instance: nothing to do here.
        assert_eq!(drain_step(&[m("c-0"), cordon(m("c-1"))], Some("c-0")), None);
        assert_eq!(drain_step(&[cordon(m("c-0"))], Some("c-0")), None);
    }
}
