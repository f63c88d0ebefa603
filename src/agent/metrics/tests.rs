//! Table tests of `metrics`.

use super::*;
use crate::agent::ha::StopMode;

fn replica() -> RestView {
    let mut v = crate::agent::rest::fixtures::replica_view();
    v.timeline = Some(3);
    v.leader_optime = Some(50_000_000);
    v.received_lsn = Some(50_000_000);
    v.replayed_lsn = Some(49_000_000);
    v.replayed_timestamp = Some(1_724_874_230.25);
    v.server_version = Some(150_004);
    v.sync_standbys = vec!["main-1".into()];
    v.dcs_last_seen = 1_724_874_235;
    v
}

fn sample() -> Sample {
    Sample {
        renew_last: None,
        apiserver_reachable: Some(true),
        watchdog_mode: WatchdogMode::Automatic,
        postmaster_start_time: Some(1_724_873_966),
        fencing: [0, 0, 0, 1],
        ..Default::default()
    }
}

const V: &str = env!("CARGO_PKG_VERSION");

#[test]
fn a_replica_renders_patronis_metrics_and_ours() {
    let text = render(&replica(), &sample());
    let version = padded_version(V);
    let expected = format!(
        r#"# HELP patroni_version Patroni semver without periods.
# TYPE patroni_version gauge
patroni_version{{scope="main",name="main-1"}} {version}
# HELP patroni_postgres_running Value is 1 if Postgres is running, 0 otherwise.
# TYPE patroni_postgres_running gauge
patroni_postgres_running{{scope="main",name="main-1"}} 1
# HELP patroni_postmaster_start_time Epoch seconds since Postgres started.
# TYPE patroni_postmaster_start_time gauge
patroni_postmaster_start_time{{scope="main",name="main-1"}} 1724873966
# HELP patroni_primary Value is 1 if this node is the leader, 0 otherwise.
# TYPE patroni_primary gauge
patroni_primary{{scope="main",name="main-1"}} 0
# HELP patroni_xlog_location Current location of the Postgres transaction log, 0 if this node is not the leader.
# TYPE patroni_xlog_location counter
patroni_xlog_location{{scope="main",name="main-1"}} 0
# HELP patroni_standby_leader Value is 1 if this node is the standby_leader, 0 otherwise.
# TYPE patroni_standby_leader gauge
patroni_standby_leader{{scope="main",name="main-1"}} 0
# HELP patroni_replica Value is 1 if this node is a replica, 0 otherwise.
# TYPE patroni_replica gauge
patroni_replica{{scope="main",name="main-1"}} 1
# HELP patroni_sync_standby Value is 1 if this node is a sync standby, 0 otherwise.
# TYPE patroni_sync_standby gauge
patroni_sync_standby{{scope="main",name="main-1"}} 1
# HELP patroni_quorum_standby Value is 1 if this node is a quorum standby, 0 otherwise.
# TYPE patroni_quorum_standby gauge
patroni_quorum_standby{{scope="main",name="main-1"}} 0
# HELP patroni_xlog_received_location Current location of the received Postgres transaction log, 0 if this node is not a replica.
# TYPE patroni_xlog_received_location counter
patroni_xlog_received_location{{scope="main",name="main-1"}} 50000000
# HELP patroni_xlog_replayed_location Current location of the replayed Postgres transaction log, 0 if this node is not a replica.
# TYPE patroni_xlog_replayed_location counter
patroni_xlog_replayed_location{{scope="main",name="main-1"}} 49000000
# HELP patroni_xlog_replayed_timestamp Current timestamp of the replayed Postgres transaction log, 0 if null.
# TYPE patroni_xlog_replayed_timestamp gauge
patroni_xlog_replayed_timestamp{{scope="main",name="main-1"}} 1724874230.25
# HELP patroni_xlog_paused Value is 1 if the Postgres xlog is paused, 0 otherwise.
# TYPE patroni_xlog_paused gauge
patroni_xlog_paused{{scope="main",name="main-1"}} 0
# HELP patroni_postgres_streaming Value is 1 if Postgres is streaming, 0 otherwise.
# TYPE patroni_postgres_streaming gauge
patroni_postgres_streaming{{scope="main",name="main-1"}} 1
# HELP patroni_postgres_in_archive_recovery Value is 1 if Postgres is replicating from archive, 0 otherwise.
# TYPE patroni_postgres_in_archive_recovery gauge
patroni_postgres_in_archive_recovery{{scope="main",name="main-1"}} 0
# HELP patroni_postgres_server_version Version of Postgres (if running), 0 otherwise.
# TYPE patroni_postgres_server_version gauge
patroni_postgres_server_version{{scope="main",name="main-1"}} 150004
# HELP patroni_cluster_unlocked Value is 1 if the cluster is unlocked, 0 if locked.
# TYPE patroni_cluster_unlocked gauge
patroni_cluster_unlocked{{scope="main",name="main-1"}} 0
# HELP patroni_failsafe_mode_is_active Value is 1 if failsafe mode is active, 0 if inactive.
# TYPE patroni_failsafe_mode_is_active gauge
patroni_failsafe_mode_is_active{{scope="main",name="main-1"}} 0
# HELP patroni_postgres_timeline Postgres timeline of this node (if running), 0 otherwise.
# TYPE patroni_postgres_timeline counter
patroni_postgres_timeline{{scope="main",name="main-1"}} 3
# HELP patroni_dcs_last_seen Epoch timestamp when DCS was last contacted successfully by Patroni.
# TYPE patroni_dcs_last_seen gauge
patroni_dcs_last_seen{{scope="main",name="main-1"}} 1724874235
# HELP patroni_pending_restart Value is 1 if the node needs a restart, 0 otherwise.
# TYPE patroni_pending_restart gauge
patroni_pending_restart{{scope="main",name="main-1"}} 0
# HELP patroni_is_paused Value is 1 if auto failover is disabled, 0 otherwise.
# TYPE patroni_is_paused gauge
patroni_is_paused{{scope="main",name="main-1"}} 0
# HELP patroni_postgres_state Numeric representation of Postgres state.
# Values: 0=initdb, 1=initdb_failed, 2=custom_bootstrap, 3=custom_bootstrap_failed, 4=creating_replica, 5=running, 6=starting, 7=bootstrap_starting, 8=start_failed, 9=restarting, 10=restart_failed, 11=stopping, 12=stopped, 13=stop_failed, 14=crashed
# TYPE patroni_postgres_state gauge
patroni_postgres_state{{scope="main",name="main-1"}} 5
# HELP pgwarden_lease_renew_duration_seconds Leader lease renews by this member, by duration.
# TYPE pgwarden_lease_renew_duration_seconds histogram
pgwarden_lease_renew_duration_seconds_bucket{{scope="main",name="main-1",le="0.005"}} 0
pgwarden_lease_renew_duration_seconds_bucket{{scope="main",name="main-1",le="0.01"}} 0
pgwarden_lease_renew_duration_seconds_bucket{{scope="main",name="main-1",le="0.025"}} 0
pgwarden_lease_renew_duration_seconds_bucket{{scope="main",name="main-1",le="0.05"}} 0
pgwarden_lease_renew_duration_seconds_bucket{{scope="main",name="main-1",le="0.1"}} 0
pgwarden_lease_renew_duration_seconds_bucket{{scope="main",name="main-1",le="0.25"}} 0
pgwarden_lease_renew_duration_seconds_bucket{{scope="main",name="main-1",le="0.5"}} 0
pgwarden_lease_renew_duration_seconds_bucket{{scope="main",name="main-1",le="1"}} 0
pgwarden_lease_renew_duration_seconds_bucket{{scope="main",name="main-1",le="2.5"}} 0
pgwarden_lease_renew_duration_seconds_bucket{{scope="main",name="main-1",le="5"}} 0
pgwarden_lease_renew_duration_seconds_bucket{{scope="main",name="main-1",le="10"}} 0
pgwarden_lease_renew_duration_seconds_bucket{{scope="main",name="main-1",le="+Inf"}} 0
pgwarden_lease_renew_duration_seconds_sum{{scope="main",name="main-1"}} 0
pgwarden_lease_renew_duration_seconds_count{{scope="main",name="main-1"}} 0
# HELP pgwarden_lease_renews_total Leader lease renews by this member, by result.
# TYPE pgwarden_lease_renews_total counter
pgwarden_lease_renews_total{{scope="main",name="main-1",result="success"}} 0
pgwarden_lease_renews_total{{scope="main",name="main-1",result="failure"}} 0
# HELP pgwarden_apiserver_reachable Value is 1 if this agent's last read of the apiserver (Lease, state ConfigMap, pods) succeeded, 0 otherwise.
# TYPE pgwarden_apiserver_reachable gauge
pgwarden_apiserver_reachable{{scope="main",name="main-1"}} 1
# HELP pgwarden_watchdog_active Value is 1 while the watchdog is armed (this member is primary), 0 otherwise; mode is spec.ha.watchdog.mode.
# TYPE pgwarden_watchdog_active gauge
pgwarden_watchdog_active{{scope="main",name="main-1",mode="automatic"}} 0
# HELP pgwarden_fencing_total Times this agent fenced its own postgres, by reason (retry_timeout: killed by the fencing task at the fence deadline; renew_failed, apiserver_unreachable: demoted before it; lease_lost: demoted at once).
# TYPE pgwarden_fencing_total counter
pgwarden_fencing_total{{scope="main",name="main-1",reason="retry_timeout"}} 0
pgwarden_fencing_total{{scope="main",name="main-1",reason="renew_failed"}} 0
pgwarden_fencing_total{{scope="main",name="main-1",reason="apiserver_unreachable"}} 0
pgwarden_fencing_total{{scope="main",name="main-1",reason="lease_lost"}} 1
# HELP pgwarden_replication_lag_bytes Bytes this replica's replay position is behind the primary's last published position (or what it received, if further).
# TYPE pgwarden_replication_lag_bytes gauge
pgwarden_replication_lag_bytes{{scope="main",name="main-1"}} 1000000
# HELP pgwarden_maximum_lag_on_failover_bytes spec.ha.maximumLagOnFailover: a replica further behind than this does not race for the leader lease.
# TYPE pgwarden_maximum_lag_on_failover_bytes gauge
pgwarden_maximum_lag_on_failover_bytes{{scope="main",name="main-1"}} 1048576
"#
    );
    assert_eq!(text, expected);
}

#[test]
fn a_primary_shows_its_position_renews_and_the_fencing_clock() {
    let mut v = replica();
    v.me = "main-0".into();
    v.role = MemberRole::Primary;
    v.holds_lease = true;
    v.lease_holder = Some("main-0".into());
    v.lsn = Some(50_000_000);
    v.received_lsn = Some(40_000_000); // left over from before the promotion
    v.sync_standbys = vec!["main-1".into()];
    let t = Telemetry::new(
        Arc::new(Mutex::new(Some(Instant::now()))),
        WatchdogMode::Required,
    );
    t.lease_renewed(Duration::from_micros(15_625), true);
    t.lease_renewed(Duration::from_millis(500), true);
    t.lease_renewed(Duration::from_secs(30), false);
    t.cycle(true, Some(1_724_873_966), false);
    t.apiserver_reachable(true);
    t.fenced(FencingReason::RetryTimeout);
    let mut s = t.sample(&v);
    assert!(s.since_renew.is_some());
    s.since_renew = Some(Duration::from_millis(1500));
    let text = render(&v, &s);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    for want in [
        r#"patroni_primary{scope="main",name="main-0"} 1"#,
        r#"patroni_replica{scope="main",name="main-0"} 0"#,
        r#"patroni_xlog_location{scope="main",name="main-0"} 50000000"#,
        r#"patroni_xlog_received_location{scope="main",name="main-0"} 0"#,
        r#"patroni_xlog_replayed_location{scope="main",name="main-0"} 0"#,
        r#"patroni_sync_standby{scope="main",name="main-0"} 0"#,
        r#"patroni_postgres_streaming{scope="main",name="main-0"} 0"#,
        r#"pgwarden_lease_renew_seconds{scope="main",name="main-0"} 30"#,
        r#"pgwarden_lease_renew_duration_seconds_bucket{scope="main",name="main-0",le="0.01"} 0"#,
        r#"pgwarden_lease_renew_duration_seconds_bucket{scope="main",name="main-0",le="0.025"} 1"#,
        r#"pgwarden_lease_renew_duration_seconds_bucket{scope="main",name="main-0",le="0.25"} 1"#,
        r#"pgwarden_lease_renew_duration_seconds_bucket{scope="main",name="main-0",le="0.5"} 2"#,
        r#"pgwarden_lease_renew_duration_seconds_bucket{scope="main",name="main-0",le="1"} 2"#,
        r#"pgwarden_lease_renew_duration_seconds_bucket{scope="main",name="main-0",le="10"} 2"#,
        r#"pgwarden_lease_renew_duration_seconds_bucket{scope="main",name="main-0",le="+Inf"} 3"#,
        r#"pgwarden_lease_renew_duration_seconds_sum{scope="main",name="main-0"} 30.515625"#,
        r#"pgwarden_lease_renew_duration_seconds_count{scope="main",name="main-0"} 3"#,
        r#"pgwarden_lease_renews_total{scope="main",name="main-0",result="success"} 2"#,
        r#"pgwarden_lease_renews_total{scope="main",name="main-0",result="failure"} 1"#,
        r#"pgwarden_lease_seconds_since_renew{scope="main",name="main-0"} 1.5"#,
        r#"pgwarden_watchdog_active{scope="main",name="main-0",mode="required"} 1"#,
        r#"pgwarden_fencing_total{scope="main",name="main-0",reason="retry_timeout"} 1"#,
    ] {
        assert!(lines.contains(&want), "missing {want}\n{text}");
    }
    assert!(!text.contains("pgwarden_replication_lag_bytes"), "{text}");
}

#[test]
fn a_stopped_member_reports_zeros_and_no_clocks() {
    let mut v = replica();
    v.state = MemberState::Stopped;
    v.role = MemberRole::Uninitialized;
    v.lease_holder = None;
    let s = Telemetry::default().sample(&v);
    let text = render(&v, &s);
    for want in [
        r#"patroni_postgres_running{scope="main",name="main-1"} 0"#,
        r#"patroni_postmaster_start_time{scope="main",name="main-1"} 0"#,
        r#"patroni_postgres_timeline{scope="main",name="main-1"} 0"#,
        r#"patroni_cluster_unlocked{scope="main",name="main-1"} 1"#,
        r#"patroni_postgres_state{scope="main",name="main-1"} 12"#,
        r#"pgwarden_watchdog_active{scope="main",name="main-1",mode="off"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == want), "missing {want}\n{text}");
    }
    for absent in [
        "pgwarden_lease_renew_seconds{",
        "pgwarden_lease_seconds_since_renew",
        "pgwarden_apiserver_reachable{",
        "pgwarden_replication_lag_bytes",
    ] {
        assert!(!text.contains(absent), "{absent} present\n{text}");
    }
}

#[test]
fn every_metric_has_help_and_type_and_well_formed_samples() {
    let text = render(&replica(), &sample());
    let mut typed = std::collections::BTreeSet::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["gauge", "counter", "histogram"].contains(&kind), "{l}");
            assert!(typed.insert(name.to_string()), "TYPE twice: {name}");
        } else if !l.starts_with('#') {
            let (series, value) = l.rsplit_once(' ').unwrap();
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value: {l}"));
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            assert!(typed.contains(family), "sample before its TYPE: {l}");
            assert!(series.contains(r#"{scope="main",name="main-1""#), "{l}");
        }
    }
}

#[test]
fn the_failsafe_flag_needs_failsafe_mode_and_a_recent_confirmation() {
    let mut v = replica();
    let t = Telemetry::default();
    v.failsafe_ping = Some(("main-0".into(), Instant::now()));
    assert!(!t.sample(&v).failsafe_active, "failsafe mode is off");
    v.failsafe_mode = true;
    assert!(t.sample(&v).failsafe_active);
    v.failsafe_ping = None;
    assert!(!t.sample(&v).failsafe_active);
    t.cycle(true, None, true);
    assert!(t.sample(&v).failsafe_active, "a primary kept by failsafe");
}

#[test]
fn only_demotions_that_keep_the_lease_are_fencing() {
    let fence = Action::Demote {
        mode: StopMode::Immediate,
        release: false,
    };
    let switchover = Action::Demote {
        mode: StopMode::Fast,
        release: true,
    };
    assert_eq!(
        fencing_reason(&fence, false, false),
        Some(FencingReason::ApiserverUnreachable)
    );
    assert_eq!(
        fencing_reason(&fence, true, true),
        Some(FencingReason::RenewFailed)
    );
    assert_eq!(
        fencing_reason(&fence, true, false),
        Some(FencingReason::LeaseLost)
    );
    assert_eq!(fencing_reason(&switchover, true, false), None);
    assert_eq!(fencing_reason(&Action::RenewLease, true, true), None);
}

#[test]
fn versions_are_padded_like_patronis() {
    assert_eq!(padded_version("4.0.0"), "040000");
    assert_eq!(padded_version("0.1.0"), "000100");
    assert_eq!(padded_version("1.12.3-rc1"), "011203");
}

#[test]
fn the_postmaster_start_time_is_line_three_of_the_pid_file() {
    let dir = std::env::temp_dir().join(format!("pgwarden-pm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pidfile = dir.join("postmaster.pid");
    std::fs::write(
        &pidfile,
        "4242\n/var/lib/postgresql/data\n1724873966\n5432\n/run/pgwarden\n*\n",
    )
    .unwrap();
    assert_eq!(postmaster_start_time(&pidfile), Some(1_724_873_966));
    assert_eq!(postmaster_start_time(&dir.join("absent")), None);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_primary_with_a_repository_reports_archiving_and_its_newest_backup() {
    let mut v = replica();
    v.role = MemberRole::Primary;
    v.archiver = Some(crate::api::backup::ArchiverStats {
        archived_count: 12,
        last_archived_wal: Some("00000001000000000000000C".into()),
        last_archived_time: Some(1_764_662_000),
        failed_count: 3,
        last_failed_wal: Some("00000001000000000000000D".into()),
        last_failed_time: Some(1_764_662_060),
    });
    v.repository = Some(crate::api::backup::RepositoryInfo {
        backups: vec![crate::api::backup::RepositoryBackup {
            label: "20261202-080100F".into(),
            type_: "full".into(),
            started: "2025-12-02T08:01:00Z".into(),
            finished: "2025-12-02T08:01:10Z".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let text = render(&v, &sample());
    for want in [
        "pgwarden_wal_archived_total{scope=\"main\",name=\"main-1\"} 12",
        "pgwarden_wal_archive_failures_total{scope=\"main\",name=\"main-1\"} 3",
        "pgwarden_wal_last_archived_timestamp_seconds{scope=\"main\",name=\"main-1\"} 1764662000",
        "pgwarden_wal_last_archive_failure_timestamp_seconds{scope=\"main\",name=\"main-1\"} 1764662060",
        "pgwarden_backup_last_success_timestamp_seconds{scope=\"main\",name=\"main-1\"} 1764662470",
        "pgwarden_backup_duration_seconds{scope=\"main\",name=\"main-1\"} 10",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
    // A replica publishes none of it.
    v.role = MemberRole::Replica;
    let text = render(&v, &sample());
    assert!(!text.contains("pgwarden_wal_") && !text.contains("pgwarden_backup_"));
}
