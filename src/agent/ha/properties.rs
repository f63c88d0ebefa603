//! Property tests of `decide`: thousands of random observations (a seeded generator, so a
//! failure prints its seed and replays exactly), each checked against the rules no cycle may
//! break, whatever the table tests forgot. The safety argument rests on them: PostgreSQL is made
//! writable only by an action whose execution begins with a compare-and-swap on the Lease
//! (`act.rs`: `Promote` and `StartPostgres(Primary)` renew first, `AcquireLease` acquires
//! first), and `decide` orders those only when the Lease read this cycle allows it.

use super::*;

use crate::common::rng::SplitMix64 as Rng;

const NAMES: &[&str] = &["a", "b", "c"];

fn config(r: &mut Rng) -> HaConfig {
    HaConfig {
        ttl: Duration::from_secs(8),
        loop_wait: Duration::from_secs(2),
        retry_timeout: Duration::from_secs(3),
        maximum_lag_on_failover: 1 << r.below(24),
        synchronous_mode: match r.below(3) {
            0 => SynchronousMode::Off,
            1 => SynchronousMode::On,
            _ => SynchronousMode::Strict,
        },
        nofailover: r.below(4) == 0,
        failsafe_mode: r.flip(),
        watchdog_blocks_promotion: r.below(4) == 0,
        fence_after: Duration::from_secs(6),
        primary_start_timeout: Duration::from_secs(300),
    }
}

fn names(r: &mut Rng) -> Vec<String> {
    NAMES
        .iter()
        .filter(|_| r.flip())
        .map(|s| s.to_string())
        .collect()
}

fn dcs_view(r: &mut Rng) -> DcsView {
    DcsView {
        lease: match r.below(3) {
            0 => LeaseView::Free,
            _ => LeaseView::Held {
                holder: r.pick(NAMES).into(),
                expired: r.flip(),
            },
        },
        initialize: match r.below(4) {
            0 => Initialize::Absent,
            1 => Initialize::Claimed {
                member: r.pick(NAMES).into(),
            },
            _ => Initialize::Done {
                sysid: r.pick(&["7", "8"]).into(),
            },
        },
        leader_optime: r.maybe(|r| r.below(1 << 26)),
        cluster_timeline: 1 + r.below(3) as u32,
        members: {
            let mut v = vec![];
            for n in NAMES {
                if r.below(4) != 0 {
                    v.push(MemberView {
                        name: n.to_string(),
                        running: r.flip(),
                        nofailover: r.below(4) == 0,
                        lsn: r.maybe(|r| r.below(1 << 26)),
                        timeline: r.maybe(|r| 1 + r.below(3) as u32),
                    });
                }
            }
            v
        },
        switchover: r.maybe(|r| SwitchoverRequest {
            leader: r.maybe(|r| r.pick(NAMES).to_string()),
            candidate: r.maybe(|r| r.pick(NAMES).to_string()),
        }),
        sync_standbys: names(r),
        sync_leader: r.maybe(|r| r.pick(NAMES).to_string()),
    }
}

fn local(r: &mut Rng) -> LocalPostgres {
    let data = if r.below(5) == 0 {
        DataDir::Empty
    } else {
        DataDir::Initialized {
            sysid: r.pick(&["7", "8"]).into(),
            was_primary: r.flip(),
            timeline: 1 + r.below(3) as u32,
        }
    };
    // Nothing runs without a data directory.
    let running = data != DataDir::Empty && r.flip();
    LocalPostgres {
        data,
        running,
        in_recovery: if running { r.maybe(|r| r.flip()) } else { None },
        timeline: r.maybe(|r| 1 + r.below(3) as u32),
        lsn: r.maybe(|r| r.below(1 << 26)),
        following: r.maybe(|r| r.pick(NAMES).to_string()),
        promoting: running && r.below(4) == 0,
    }
}

fn observation(r: &mut Rng) -> Observation {
    let me = r.pick(NAMES).to_string();
    Observation {
        paused: r.below(5) == 0,
        dcs: if r.below(5) == 0 {
            None
        } else {
            Some(dcs_view(r))
        },
        local: local(r),
        peers: {
            let mut v = vec![];
            for n in NAMES {
                if r.flip() {
                    v.push(PeerAnswer {
                        name: n.to_string(),
                        is_primary: r.below(4) == 0,
                        lsn: r.maybe(|r| r.below(1 << 26)),
                        nofailover: r.below(4) == 0,
                    });
                }
            }
            v
        },
        renew_failed: r.below(4) == 0,
        lease_lost: r.below(4) == 0,
        since_renew: r.maybe(|r| Duration::from_millis(r.below(10_000))),
        failsafe_confirmed: r.maybe(|r| r.flip()),
        failsafe_leader: r.maybe(|r| r.pick(NAMES).to_string()),
        not_streaming_for: r.maybe(|r| Duration::from_millis(r.below(30_000))),
        primary_start_for: r.maybe(|r| Duration::from_millis(r.below(600_000))),
        me,
    }
}

/// The Lease as this cycle read it names this member (valid or expired: the compare-and-swap
/// renew decides).
fn names_me(o: &Observation) -> bool {
    matches!(&o.dcs, Some(d) if matches!(&d.lease, LeaseView::Held { holder, .. } if *holder == o.me))
}

/// Someone else holds a Lease this member must respect.
fn valid_for_another(o: &Observation) -> bool {
    matches!(&o.dcs, Some(d) if match &d.lease {
        LeaseView::Held { holder, expired } => {
            *holder != o.me && (!expired || o.failsafe_leader.as_deref() == Some(holder.as_str()))
        }
        LeaseView::Free => false,
    })
}

/// Every rule, for one observation; `Err` says which broke.
fn check(o: &Observation, c: &HaConfig) -> Result<(), String> {
    let action = decide(o, c).action;
    let is_primary = o.local.running && o.local.in_recovery == Some(false);
    // A replica told to promote becomes writable when its replay ends: fenced like a primary.
    let may_be_primary = is_primary || (o.local.running && o.local.promoting);
    let rule = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!("{what}: {action:?}"))
        }
    };
    if o.paused {
        rule(
            matches!(action, Action::Nothing | Action::HoldLease),
            "paused, yet managing",
        )?;
    }
    if matches!(action, Action::HoldLease) {
        rule(
            o.paused && is_primary && names_me(o),
            "HoldLease outside pause",
        )?;
    }
    if o.local.running && o.local.promoting {
        rule(action != Action::Promote, "a promotion signalled twice")?;
    }
    match &action {
        Action::Promote | Action::StartPostgres(StartAs::Primary) => {
            // Executed as: renew by compare-and-swap, then promote or start.
            rule(names_me(o), "made writable without the Lease naming it")?;
            rule(!o.renew_failed, "made writable right after a failed renew")?;
        }
        Action::AcquireLease => {
            // Executed as: re-read, compare-and-swap, then promote.
            rule(o.dcs.is_some(), "acquiring without the apiserver")?;
            rule(
                !valid_for_another(o),
                "acquiring a Lease another validly holds",
            )?;
            if !is_primary {
                rule(!c.nofailover, "a nofailover member races")?;
                rule(
                    !c.watchdog_blocks_promotion,
                    "racing without a required watchdog",
                )?;
                if c.synchronous_mode != SynchronousMode::Off {
                    let d = o.dcs.as_ref().expect("checked above");
                    rule(
                        d.sync_standbys.contains(&o.me) || d.sync_leader.as_ref() == Some(&o.me),
                        "racing outside the synchronous set",
                    )?;
                }
                rule(
                    !o.peers
                        .iter()
                        .any(|p| p.name != o.me && p.is_primary && !p.nofailover),
                    "racing while a peer answers as primary",
                )?;
            }
        }
        Action::KeepPrimary => {
            rule(
                o.dcs.is_none()
                    && c.failsafe_mode
                    && is_primary
                    && o.failsafe_confirmed == Some(true),
                "failsafe without every member's confirmation",
            )?;
        }
        Action::Bootstrap => rule(
            matches!(&o.dcs, Some(d) if matches!(&d.initialize, Initialize::Claimed { member } if *member == o.me)),
            "bootstrapping without the initialize claim",
        )?,
        _ => {}
    }
    // A primary that sees another valid holder never stays primary (a bootstrap, too, stops
    // PostgreSQL first).
    if may_be_primary && !o.paused && valid_for_another(o) {
        rule(
            matches!(
                action,
                Action::Demote { .. } | Action::Halt | Action::Bootstrap
            ),
            "a primary ignores another holder",
        )?;
    }
    // Without the apiserver a primary keeps running only within its grace or confirmed.
    if o.dcs.is_none() && may_be_primary && !o.paused {
        let in_grace = o
            .since_renew
            .is_some_and(|a| a < c.fence_after.saturating_sub(STOP_ALLOWANCE));
        let confirmed = c.failsafe_mode && o.failsafe_confirmed == Some(true);
        if !in_grace && (!confirmed || !is_primary) {
            rule(
                matches!(action, Action::Demote { .. }),
                "a primary without the apiserver outlives its grace",
            )?;
        }
    }
    Ok(())
}

#[test]
fn decide_keeps_its_safety_rules_on_random_observations() {
    let seeds: u64 = std::env::var("PGWARDEN_DECIDE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    for seed in 0..seeds {
        let mut r = Rng(seed);
        let c = config(&mut r);
        let o = observation(&mut r);
        if let Err(why) = check(&o, &c) {
            panic!("seed {seed}: {why}\nobservation: {o:#?}\nconfig: {c:#?}");
        }
    }
}
