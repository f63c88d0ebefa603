//! Table tests of `ha`.

use super::*;

fn cfg() -> HaConfig {
    HaConfig {
        ttl: Duration::from_secs(8),
        loop_wait: Duration::from_secs(2),
        retry_timeout: Duration::from_secs(3),
        maximum_lag_on_failover: 1_048_576,
        synchronous_mode: SynchronousMode::Off,
        nofailover: false,
        failsafe_mode: false,
        watchdog_blocks_promotion: false,
        fence_after: Duration::from_secs(6),
        primary_start_timeout: Duration::from_secs(300),
    }
}

fn replica(lsn: u64) -> LocalPostgres {
    LocalPostgres {
        data: DataDir::Initialized {
            sysid: "7".into(),
            was_primary: false,
            timeline: 1,
        },
        running: true,
        in_recovery: Some(true),
        timeline: Some(1),
        lsn: Some(lsn),
        following: Some("a".into()),
        promoting: false,
    }
}

fn primary() -> LocalPostgres {
    LocalPostgres {
        in_recovery: Some(false),
        following: None,
        ..replica(100)
    }
}

fn member(name: &str) -> MemberView {
    MemberView {
        name: name.into(),
        running: true,
        nofailover: false,
        lsn: Some(100),
        timeline: Some(1),
    }
}

fn dcs(lease: LeaseView) -> DcsView {
    DcsView {
        lease,
        initialize: Initialize::Done { sysid: "7".into() },
        leader_optime: Some(100),
        cluster_timeline: 1,
        members: vec![member("a"), member("b"), member("c")],
        switchover: None,
        sync_standbys: vec![],
        sync_leader: None,
    }
}

fn held(holder: &str) -> LeaseView {
    LeaseView::Held {
        holder: holder.into(),
        expired: false,
    }
}

fn expired(holder: &str) -> LeaseView {
    LeaseView::Held {
        holder: holder.into(),
        expired: true,
    }
}

fn obs(me: &str, local: LocalPostgres, dcs: Option<DcsView>) -> Observation {
    Observation {
        me: me.into(),
        paused: false,
        dcs,
        local,
        peers: vec![],
        renew_failed: false,
        lease_lost: false,
        since_renew: None,
        failsafe_confirmed: None,
        failsafe_leader: None,
        not_streaming_for: None,
        primary_start_for: None,
    }
}

fn peer(name: &str, lsn: u64) -> PeerAnswer {
    PeerAnswer {
        name: name.into(),
        is_primary: false,
        lsn: Some(lsn),
        nofailover: false,
    }
}

#[test]
fn primary_holding_the_lease_renews_it() {
    let r = decide(&obs("a", primary(), Some(dcs(held("a")))), &cfg());
    assert_eq!(r.action, Action::RenewLease);
    assert_eq!(r.reason, "renewed the leader lease as primary");
}

#[test]
fn primary_that_fails_to_renew_demotes_immediately_without_release() {
    let mut o = obs("a", primary(), Some(dcs(held("a"))));
    o.renew_failed = true;
    let r = decide(&o, &cfg());
    assert_eq!(
        r.action,
        Action::Demote {
            mode: StopMode::Immediate,
            release: false
        }
    );
    assert_eq!(r.reason, "demoting: failed to renew the leader lease");
}

#[test]
fn primary_that_cannot_reach_the_apiserver_demotes() {
    let r = decide(&obs("a", primary(), None), &cfg());
    assert!(matches!(
        r.action,
        Action::Demote {
            mode: StopMode::Immediate,
            ..
        }
    ));
    assert!(
        r.reason.contains("apiserver cannot be reached"),
        "{}",
        r.reason
    );
}

#[test]
fn a_failed_call_costs_no_demotion_while_no_one_can_take_the_lease() {
    // Last renew sent 2 s ago: the fence comes at 6 s, no one may take the lease before 8 s.
    let mut o = obs("a", primary(), None);
    o.since_renew = Some(Duration::from_secs(2));
    let r = decide(&o, &cfg());
    assert_eq!(r.action, Action::Nothing);
    assert_eq!(
        r.reason,
        "cannot renew the leader lease now; staying primary: the last renew was sent 2.0s ago, no one can take the lease before 8s, the fence comes at 6s"
    );
    // The same for a renew that did not get through (a 5xx, a timeout).
    let mut o = obs("a", primary(), Some(dcs(held("a"))));
    o.renew_failed = true;
    o.since_renew = Some(Duration::from_millis(4900));
    assert_eq!(decide(&o, &cfg()).action, Action::Nothing);
}

#[test]
fn the_primary_stops_itself_one_allowance_before_the_fence() {
    let demote = Action::Demote {
        mode: StopMode::Immediate,
        release: false,
    };
    let mut o = obs("a", primary(), None);
    o.since_renew = Some(Duration::from_secs(5));
    assert_eq!(decide(&o, &cfg()).action, demote);
    let mut o = obs("a", primary(), Some(dcs(held("a"))));
    o.renew_failed = true;
    o.since_renew = Some(Duration::from_secs(5));
    assert_eq!(decide(&o, &cfg()).action, demote);
}

#[test]
fn a_lost_lease_gets_no_grace() {
    let mut o = obs("a", primary(), Some(dcs(held("a"))));
    o.renew_failed = true;
    o.lease_lost = true;
    o.since_renew = Some(Duration::from_millis(100));
    let r = decide(&o, &cfg());
    assert_eq!(r.reason, "demoting: failed to renew the leader lease");
}

#[test]
fn replica_that_cannot_reach_the_apiserver_waits() {
    let r = decide(&obs("b", replica(100), None), &cfg());
    assert_eq!(r.action, Action::Nothing);
}

#[test]
fn primary_that_sees_another_holder_demotes() {
    let r = decide(&obs("a", primary(), Some(dcs(held("b")))), &cfg());
    assert!(matches!(
        r.action,
        Action::Demote {
            mode: StopMode::Immediate,
            release: false
        }
    ));
    assert_eq!(r.reason, "demoting: b holds the leader lease");
}

#[test]
fn replica_follows_the_valid_leader() {
    let r = decide(&obs("b", replica(100), Some(dcs(held("a")))), &cfg());
    assert_eq!(
        r.action,
        Action::Follow {
            leader: Some("a".into())
        }
    );
    assert_eq!(r.reason, "following leader a");
}

#[test]
fn healthiest_replica_races_for_an_expired_lease() {
    let mut o = obs("b", replica(100), Some(dcs(expired("a"))));
    o.peers = vec![peer("c", 90)];
    let r = decide(&o, &cfg());
    assert_eq!(r.action, Action::AcquireLease);
    assert_eq!(
        r.reason,
        "promoting: the leader lease is free and this member is the healthiest"
    );
}

#[test]
fn replica_behind_a_peer_does_not_race() {
    let mut o = obs("b", replica(100), Some(dcs(LeaseView::Free)));
    o.peers = vec![peer("c", 200)];
    let r = decide(&o, &cfg());
    assert_eq!(r.action, Action::Follow { leader: None });
    assert_eq!(r.reason, "not racing for the lease: c is ahead (200 > 100)");
}

#[test]
fn a_peer_that_is_still_primary_stops_the_race() {
    let mut o = obs("b", replica(100), Some(dcs(LeaseView::Free)));
    o.peers = vec![PeerAnswer {
        is_primary: true,
        ..peer("a", 100)
    }];
    let r = decide(&o, &cfg());
    assert_eq!(
        r.reason,
        "not racing for the lease: a is still running as primary"
    );
}

#[test]
fn a_nofailover_peer_ahead_does_not_block() {
    let mut o = obs("b", replica(100), Some(dcs(LeaseView::Free)));
    o.peers = vec![PeerAnswer {
        nofailover: true,
        ..peer("c", 500)
    }];
    assert_eq!(decide(&o, &cfg()).action, Action::AcquireLease);
}

#[test]
fn lagging_replica_is_never_promoted() {
    let mut d = dcs(expired("a"));
    d.leader_optime = Some(100 + 2_000_000);
    let r = decide(&obs("b", replica(100), Some(d)), &cfg());
    assert_eq!(r.action, Action::Follow { leader: None });
    assert!(
        r.reason.contains("exceeds maximumLagOnFailover"),
        "{}",
        r.reason
    );
}

#[test]
fn nofailover_member_is_never_promoted() {
    let mut c = cfg();
    c.nofailover = true;
    let r = decide(&obs("b", replica(100), Some(dcs(LeaseView::Free))), &c);
    assert_eq!(
        r.reason,
        "not racing for the lease: this member is tagged nofailover"
    );
}

#[test]
fn required_watchdog_that_does_not_work_blocks_promotion() {
    let mut c = cfg();
    c.watchdog_blocks_promotion = true;
    let r = decide(&obs("b", replica(100), Some(dcs(LeaseView::Free))), &c);
    assert_eq!(
        r.reason,
        "not racing for the lease: the watchdog is required but not working"
    );
}

#[test]
fn synchronous_mode_only_lets_sync_standbys_race() {
    let mut c = cfg();
    c.synchronous_mode = SynchronousMode::On;
    let mut d = dcs(LeaseView::Free);
    d.sync_standbys = vec!["c".into()];
    let r = decide(&obs("b", replica(100), Some(d.clone())), &c);
    assert!(
        r.reason.contains("not a synchronous standby"),
        "{}",
        r.reason
    );
    d.sync_standbys = vec!["b".into()];
    assert_eq!(
        decide(&obs("b", replica(100), Some(d)), &c).action,
        Action::AcquireLease
    );
}

/// Safety hole 7: the primary that published the `sync` key has every commit it acknowledged;
/// with its standby gone (the key {a, []}) it must still be allowed to take over, or nobody can.
#[test]
fn the_former_synchronous_leader_may_race() {
    let mut c = cfg();
    c.synchronous_mode = SynchronousMode::Strict;
    let mut d = dcs(LeaseView::Free);
    d.sync_leader = Some("a".into());
    assert_eq!(
        decide(&obs("a", replica(100), Some(d.clone())), &c).action,
        Action::AcquireLease
    );
    let r = decide(&obs("b", replica(100), Some(d)), &c);
    assert!(
        r.reason.contains("not a synchronous standby"),
        "{}",
        r.reason
    );
}

/// Safety hole 8: a former primary that started read-only and then followed a new leader with
/// WAL the leader never had streams nothing, forever; it is rewound.
#[test]
fn a_replica_that_cannot_stream_on_an_older_timeline_is_rewound() {
    let mut d = dcs(held("a"));
    d.cluster_timeline = 2;
    let mut o = obs("b", replica(100), Some(d));
    o.local.following = Some("a".into());
    o.not_streaming_for = Some(REWIND_AFTER);
    assert_eq!(
        decide(&o, &cfg()).action,
        Action::StartPostgres(StartAs::Replica {
            leader: Some("a".into()),
            rewind: true
        })
    );
    // Streaming again, or on the cluster's timeline, or not long enough: just follow.
    for change in [
        |o: &mut Observation| o.not_streaming_for = None,
        |o: &mut Observation| o.local.timeline = Some(2),
        |o: &mut Observation| o.not_streaming_for = Some(Duration::from_secs(5)),
    ] {
        let mut o = o.clone();
        change(&mut o);
        assert!(matches!(decide(&o, &cfg()).action, Action::Follow { .. }));
    }
}

#[test]
fn holding_the_lease_in_recovery_promotes() {
    let r = decide(&obs("b", replica(100), Some(dcs(held("b")))), &cfg());
    assert_eq!(r.action, Action::Promote);
}

#[test]
fn stopped_postgres_with_the_lease_restarts_as_primary() {
    let mut l = primary();
    l.running = false;
    l.in_recovery = None;
    let r = decide(&obs("a", l, Some(dcs(held("a")))), &cfg());
    assert_eq!(r.action, Action::StartPostgres(StartAs::Primary));
}

#[test]
fn former_primary_on_an_old_timeline_rewinds_before_following() {
    let l = LocalPostgres {
        data: DataDir::Initialized {
            sysid: "7".into(),
            was_primary: true,
            timeline: 1,
        },
        running: false,
        in_recovery: None,
        timeline: None,
        lsn: None,
        following: None,
        promoting: false,
    };
    let mut d = dcs(held("b"));
    d.cluster_timeline = 2;
    let r = decide(&obs("a", l, Some(d)), &cfg());
    assert_eq!(
        r.action,
        Action::StartPostgres(StartAs::Replica {
            leader: Some("b".into()),
            rewind: true
        })
    );
}

#[test]
fn stopped_replica_without_leader_starts_read_only() {
    let mut l = replica(100);
    l.running = false;
    let r = decide(&obs("b", l, Some(dcs(LeaseView::Free))), &cfg());
    assert_eq!(
        r.action,
        Action::StartPostgres(StartAs::Replica {
            leader: None,
            rewind: false
        })
    );
}

#[test]
fn empty_member_races_for_initialize_when_no_cluster_exists() {
    let l = LocalPostgres {
        data: DataDir::Empty,
        running: false,
        in_recovery: None,
        timeline: None,
        lsn: None,
        following: None,
        promoting: false,
    };
    let mut d = dcs(LeaseView::Free);
    d.initialize = Initialize::Absent;
    let r = decide(&obs("a", l.clone(), Some(d.clone())), &cfg());
    assert_eq!(r.action, Action::ClaimInitialize);

    d.initialize = Initialize::Claimed { member: "a".into() };
    assert_eq!(
        decide(&obs("a", l.clone(), Some(d.clone())), &cfg()).action,
        Action::Bootstrap
    );
    let r = decide(&obs("b", l.clone(), Some(d.clone())), &cfg());
    assert_eq!(r.reason, "waiting for a to bootstrap the cluster");

    d.initialize = Initialize::Done { sysid: "7".into() };
    d.lease = held("a");
    assert_eq!(
        decide(&obs("b", l, Some(d)), &cfg()).action,
        Action::CloneFrom { leader: "a".into() }
    );
}

#[test]
fn foreign_system_identifier_is_never_joined() {
    let mut d = dcs(held("a"));
    d.initialize = Initialize::Done { sysid: "8".into() };
    let r = decide(&obs("b", replica(1), Some(d)), &cfg());
    assert_eq!(r.action, Action::Halt);
}

#[test]
fn switchover_to_a_running_candidate_demotes_gracefully_and_releases() {
    let mut d = dcs(held("a"));
    d.switchover = Some(SwitchoverRequest {
        leader: Some("a".into()),
        candidate: Some("c".into()),
    });
    let r = decide(&obs("a", primary(), Some(d)), &cfg());
    assert_eq!(
        r.action,
        Action::Demote {
            mode: StopMode::Fast,
            release: true
        }
    );
}

#[test]
fn during_a_switchover_only_the_candidate_races() {
    let mut d = dcs(LeaseView::Free);
    d.switchover = Some(SwitchoverRequest {
        leader: Some("a".into()),
        candidate: Some("c".into()),
    });
    let mut o = obs("b", replica(100), Some(d.clone()));
    o.peers = vec![peer("c", 100)];
    let r = decide(&o, &cfg());
    assert_eq!(
        r.reason,
        "not racing for the lease: a switchover to c is in progress"
    );
    assert_eq!(
        decide(&obs("c", replica(100), Some(d)), &cfg()).action,
        Action::AcquireLease
    );
}

/// Safety hole 6: a candidate that died after the old primary released the Lease must not
/// leave the cluster without a primary for good.
#[test]
fn a_switchover_candidate_that_does_not_answer_leaves_the_race_to_everyone() {
    let mut d = dcs(LeaseView::Free);
    d.switchover = Some(SwitchoverRequest {
        leader: Some("a".into()),
        candidate: Some("c".into()),
    });
    let mut o = obs("b", replica(100), Some(d));
    o.peers = vec![peer("a", 90)];
    assert_eq!(decide(&o, &cfg()).action, Action::AcquireLease);
}

/// Safety hole 6: the candidate still obeys the synchronous set and a member that runs as
/// primary.
#[test]
fn a_switchover_candidate_still_needs_the_synchronous_set_and_no_other_primary() {
    let mut d = dcs(LeaseView::Free);
    d.switchover = Some(SwitchoverRequest {
        leader: Some("a".into()),
        candidate: Some("c".into()),
    });
    let mut o = obs("c", replica(100), Some(d.clone()));
    o.peers = vec![PeerAnswer {
        is_primary: true,
        ..peer("a", 100)
    }];
    assert_eq!(
        decide(&o, &cfg()).reason,
        "not racing for the lease: a is still running as primary"
    );
    let mut c = cfg();
    c.synchronous_mode = SynchronousMode::On;
    d.sync_standbys = vec!["b".into()];
    let r = decide(&obs("c", replica(100), Some(d)), &c);
    assert!(
        r.reason.contains("not a synchronous standby"),
        "{}",
        r.reason
    );
}

/// Safety hole 6: the primary honours a switchover only to a member that can take over.
#[test]
fn a_switchover_to_a_lagging_or_unsynchronised_candidate_is_ignored() {
    let mut d = dcs(held("a"));
    d.switchover = Some(SwitchoverRequest {
        leader: Some("a".into()),
        candidate: Some("c".into()),
    });
    let mut behind = d.clone();
    behind.members[2].lsn = Some(0);
    let mut p = primary();
    p.lsn = Some(10_000_000);
    let r = decide(&obs("a", p, Some(behind)), &cfg());
    assert_eq!(r.action, Action::RenewLease);
    assert!(r.reason.contains("lags more than"), "{}", r.reason);
    let mut c = cfg();
    c.synchronous_mode = SynchronousMode::On;
    d.sync_standbys = vec!["b".into()];
    let r = decide(&obs("a", primary(), Some(d)), &c);
    assert_eq!(r.action, Action::RenewLease);
    assert!(
        r.reason.contains("not a synchronous standby"),
        "{}",
        r.reason
    );
}

#[test]
fn the_old_primary_does_not_race_after_a_switchover_without_candidate() {
    let mut d = dcs(LeaseView::Free);
    d.switchover = Some(SwitchoverRequest {
        leader: Some("a".into()),
        candidate: None,
    });
    let r = decide(&obs("a", replica(100), Some(d)), &cfg());
    assert_eq!(
        r.reason,
        "not racing for the lease: this member is the one being switched away from"
    );
}

#[test]
fn failsafe_keeps_a_confirmed_primary_without_the_apiserver() {
    let mut c = cfg();
    c.failsafe_mode = true;
    let mut o = obs("a", primary(), None);
    o.failsafe_confirmed = Some(true);
    assert_eq!(decide(&o, &c).action, Action::KeepPrimary);
    // One member did not confirm: demote.
    o.failsafe_confirmed = Some(false);
    assert!(matches!(
        decide(&o, &c).action,
        Action::Demote {
            mode: StopMode::Immediate,
            ..
        }
    ));
    // Failsafe off: confirmations do not matter.
    o.failsafe_confirmed = Some(true);
    assert!(matches!(decide(&o, &cfg()).action, Action::Demote { .. }));
}

#[test]
fn a_leader_that_pinged_failsafe_keeps_its_expired_lease() {
    let mut o = obs("b", replica(100), Some(dcs(expired("a"))));
    o.failsafe_leader = Some("a".into());
    assert_eq!(
        decide(&o, &cfg()).action,
        Action::Follow {
            leader: Some("a".into())
        }
    );
}

#[test]
fn paused_manages_nothing() {
    let mut o = obs("a", primary(), None);
    o.paused = true;
    assert_eq!(decide(&o, &cfg()).action, Action::Nothing);
    // A replica, or a primary whose Lease is someone else's, does nothing either.
    let mut o = obs("b", replica(100), Some(dcs(held("a"))));
    o.paused = true;
    assert_eq!(decide(&o, &cfg()).action, Action::Nothing);
    let mut o = obs("a", primary(), Some(dcs(held("b"))));
    o.paused = true;
    assert_eq!(decide(&o, &cfg()).action, Action::Nothing);
}

/// Safety hole 12: pause stopped the Lease renewal, so on resume the Lease had expired
/// everywhere and only the peer probe stood between the replicas and a second promotion.
#[test]
fn a_paused_primary_keeps_renewing_its_lease() {
    let mut o = obs("a", primary(), Some(dcs(held("a"))));
    o.paused = true;
    assert_eq!(decide(&o, &cfg()).action, Action::HoldLease);
}

fn promoting() -> LocalPostgres {
    LocalPostgres {
        promoting: true,
        ..replica(100)
    }
}

#[test]
fn a_promotion_in_progress_is_never_signalled_again_and_renews_once_per_loop() {
    let mut o = obs("a", promoting(), Some(dcs(held("a"))));
    o.since_renew = Some(Duration::from_millis(500));
    assert_eq!(decide(&o, &cfg()).action, Action::Nothing);
    o.since_renew = Some(Duration::from_secs(2));
    assert_eq!(decide(&o, &cfg()).action, Action::RenewLease);
    o.since_renew = None;
    assert_eq!(decide(&o, &cfg()).action, Action::RenewLease);
}

#[test]
fn a_promoting_member_is_stopped_like_a_primary() {
    let stop = Action::Demote {
        mode: StopMode::Immediate,
        release: false,
    };
    // Another member holds the Lease: the replay would end in a second writable member.
    let o = obs("a", promoting(), Some(dcs(held("b"))));
    assert_eq!(decide(&o, &cfg()).action, stop);
    // Its own renew lost the compare-and-swap.
    let mut o = obs("a", promoting(), Some(dcs(held("a"))));
    o.renew_failed = true;
    o.lease_lost = true;
    o.since_renew = Some(Duration::from_secs(1));
    assert_eq!(decide(&o, &cfg()).action, stop);
    // No apiserver past the grace.
    let mut o = obs("a", promoting(), None);
    o.since_renew = Some(Duration::from_secs(1));
    assert_eq!(decide(&o, &cfg()).action, Action::Nothing);
    o.since_renew = Some(Duration::from_secs(5));
    assert_eq!(decide(&o, &cfg()).action, stop);
}

fn down() -> LocalPostgres {
    LocalPostgres {
        running: false,
        in_recovery: None,
        timeline: None,
        lsn: None,
        following: None,
        ..primary()
    }
}

#[test]
fn a_primary_that_cannot_start_for_primary_start_timeout_releases_the_lease() {
    let release = Action::Demote {
        mode: StopMode::Immediate,
        release: true,
    };
    let mut o = obs("a", down(), Some(dcs(held("a"))));
    o.primary_start_for = Some(Duration::from_secs(299));
    assert_eq!(
        decide(&o, &cfg()).action,
        Action::StartPostgres(StartAs::Primary)
    );
    o.primary_start_for = Some(Duration::from_secs(300));
    let r = decide(&o, &cfg());
    assert_eq!(r.action, release, "{}", r.reason);
    assert!(
        r.reason.starts_with("primary start timed out"),
        "{}",
        r.reason
    );
    // A crash recovery that does not end counts the same.
    let mut o = obs(
        "a",
        LocalPostgres {
            in_recovery: None,
            ..primary()
        },
        Some(dcs(held("a"))),
    );
    o.primary_start_for = Some(Duration::from_secs(301));
    assert_eq!(decide(&o, &cfg()).action, release);
}

#[test]
fn a_primary_that_cannot_start_keeps_the_lease_when_nobody_can_take_over() {
    // Nobody else runs.
    let mut d = dcs(held("a"));
    for m in d.members.iter_mut().filter(|m| m.name != "a") {
        m.running = false;
    }
    let mut o = obs("a", down(), Some(d));
    o.primary_start_for = Some(Duration::from_secs(600));
    assert_eq!(
        decide(&o, &cfg()).action,
        Action::StartPostgres(StartAs::Primary)
    );
    // Synchronous mode: the others are not in the synchronous set.
    let mut c = cfg();
    c.synchronous_mode = SynchronousMode::On;
    let mut d = dcs(held("a"));
    d.sync_leader = Some("a".into());
    let mut o = obs("a", down(), Some(d.clone()));
    o.primary_start_for = Some(Duration::from_secs(600));
    assert_eq!(
        decide(&o, &c).action,
        Action::StartPostgres(StartAs::Primary)
    );
    // ... and with a synchronous standby it goes to it.
    d.sync_standbys = vec!["b".into()];
    let mut o = obs("a", down(), Some(d));
    o.primary_start_for = Some(Duration::from_secs(600));
    assert!(matches!(
        decide(&o, &c).action,
        Action::Demote { release: true, .. }
    ));
}
