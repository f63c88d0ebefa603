//! The agent's `GET /metrics` (Prometheus text format). Patroni's metric names, HELP texts, types
//! and labels (`scope`, `name`) where Patroni has the metric, so dashboards and alerts written for
//! Patroni keep working; `pgwarden_*` for what Patroni lacks: lease renew latency and results,
//! the age of the last renew (the fencing clock), the watchdog, fencing events, whether the
//! apiserver answers, and replication lag in bytes.
//!
//! The HA loop and the fencing task record events in a [`Telemetry`] shared with the REST view;
//! [`render`] is a pure function of the view and a [`Sample`] taken at scrape time.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agent::ha::Action;
use crate::agent::rest::RestView;
use crate::api::cluster::WatchdogMode;
use crate::api::member::{MemberRole, MemberState};

/// Upper bounds (seconds) of the lease renew histogram's buckets. A renew is one PUT to the
/// apiserver (two on a conflict), bounded by retryTimeout.
pub const RENEW_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why the agent fenced its own postgres (stopped it at once, or killed it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FencingReason {
    /// The fencing task: no lease renew for retryTimeout (in failsafe mode, the watchdog's
    /// timeout), so postgres was SIGKILLed even if the loop itself was stuck.
    RetryTimeout,
    /// A renew failed (conflict or error): the primary demoted at once.
    RenewFailed,
    /// The apiserver could not be read while primary: demoted at once.
    ApiserverUnreachable,
    /// Another member holds the lease while this one runs as primary.
    LeaseLost,
}

impl FencingReason {
    pub const ALL: [FencingReason; 4] = [
        FencingReason::RetryTimeout,
        FencingReason::RenewFailed,
        FencingReason::ApiserverUnreachable,
        FencingReason::LeaseLost,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FencingReason::RetryTimeout => "retry_timeout",
            FencingReason::RenewFailed => "renew_failed",
            FencingReason::ApiserverUnreachable => "apiserver_unreachable",
            FencingReason::LeaseLost => "lease_lost",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The fencing a decision carries out, if any. Every `Demote` that keeps the lease (no clean
/// release, which only a switchover does) is a fence; the cause is read off the observation.
pub fn fencing_reason(
    action: &Action,
    apiserver_reachable: bool,
    renew_failed: bool,
) -> Option<FencingReason> {
    match action {
        Action::Demote { release: false, .. } => Some(if !apiserver_reachable {
            FencingReason::ApiserverUnreachable
        } else if renew_failed {
            FencingReason::RenewFailed
        } else {
            FencingReason::LeaseLost
        }),
        _ => None,
    }
}

/// The postmaster's start time (epoch seconds): line 3 of `postmaster.pid`.
pub fn postmaster_start_time(pidfile: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(pidfile).ok()?;
    text.lines().nth(2)?.trim().parse().ok()
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Counters {
    renew_last: Option<Duration>,
    /// Renews per bucket of [`RENEW_BUCKETS`] (not cumulative), the last one is +Inf.
    renew_buckets: [u64; RENEW_BUCKETS.len() + 1],
    renew_sum: f64,
    renews_ok: u64,
    renews_failed: u64,
    fencing: [u64; FencingReason::ALL.len()],
    apiserver_reachable: Option<bool>,
    watchdog_armed: bool,
    postmaster_start_time: Option<i64>,
    failsafe_keeping: bool,
}

/// What the HA loop and the fencing task record for `/metrics`. Cheap to update (a short,
/// never-awaited lock), so the fencing path can count without waiting on anything.
#[derive(Debug)]
pub struct Telemetry {
    watchdog_mode: WatchdogMode,
    /// The agent's fencing clock: when this primary last renewed (or took) the lease; `None`
    /// when not primary.
    last_renew: Arc<Mutex<Option<Instant>>>,
    counters: Mutex<Counters>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new(Arc::default(), WatchdogMode::Off)
    }
}

impl Telemetry {
    pub fn new(last_renew: Arc<Mutex<Option<Instant>>>, watchdog_mode: WatchdogMode) -> Self {
        Self {
            watchdog_mode,
            last_renew,
            counters: Mutex::default(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Counters)) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut c);
    }

    /// One lease renew, successful or not, and how long it took.
    pub fn lease_renewed(&self, took: Duration, ok: bool) {
        self.update(|c| {
            let secs = took.as_secs_f64();
            let bucket = RENEW_BUCKETS
                .iter()
                .position(|le| secs <= *le)
                .unwrap_or(RENEW_BUCKETS.len());
            c.renew_buckets[bucket] += 1;
            c.renew_sum += secs;
            c.renew_last = Some(took);
            if ok {
                c.renews_ok += 1;
            } else {
                c.renews_failed += 1;
            }
        });
    }

    pub fn fenced(&self, reason: FencingReason) {
        self.update(|c| c.fencing[reason.index()] += 1);
    }

    /// Whether this cycle's read of the apiserver succeeded.
    pub fn apiserver_reachable(&self, reachable: bool) {
        self.update(|c| c.apiserver_reachable = Some(reachable));
    }

    /// What the loop publishes with every cycle.
    pub fn cycle(&self, watchdog_armed: bool, postmaster_start_time: Option<i64>, failsafe: bool) {
        self.update(|c| {
            c.watchdog_armed = watchdog_armed;
            c.postmaster_start_time = postmaster_start_time;
            c.failsafe_keeping = failsafe;
        });
    }

    /// Everything [`render`] needs beyond the view, as of now.
    pub fn sample(&self, view: &RestView) -> Sample {
        let c = self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let since_renew = self
            .last_renew
            .lock()
            .map(|g| g.map(|t| t.elapsed()))
            .unwrap_or(None);
        let pinged = view
            .failsafe_ping
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < view.ttl);
        let mut renew_buckets = [0; RENEW_BUCKETS.len()];
        let mut cumulative = 0;
        for (i, b) in renew_buckets.iter_mut().enumerate() {
            cumulative += c.renew_buckets[i];
            *b = cumulative;
        }
        Sample {
            renew_last: c.renew_last,
            renew_buckets,
            renew_count: cumulative + c.renew_buckets[RENEW_BUCKETS.len()],
            renew_sum: c.renew_sum,
            renews_ok: c.renews_ok,
            renews_failed: c.renews_failed,
            since_renew,
            fencing: c.fencing,
            apiserver_reachable: c.apiserver_reachable,
            watchdog_mode: self.watchdog_mode,
            watchdog_armed: c.watchdog_armed,
            postmaster_start_time: c.postmaster_start_time,
            failsafe_active: view.failsafe_mode && (c.failsafe_keeping || pinged),
        }
    }
}

/// The telemetry at scrape time, with clocks already read (so [`render`] is deterministic).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub renew_last: Option<Duration>,
    /// Cumulative counts per bucket of [`RENEW_BUCKETS`].
    pub renew_buckets: [u64; RENEW_BUCKETS.len()],
    pub renew_count: u64,
    pub renew_sum: f64,
    pub renews_ok: u64,
    pub renews_failed: u64,
    pub since_renew: Option<Duration>,
    pub fencing: [u64; FencingReason::ALL.len()],
    pub apiserver_reachable: Option<bool>,
    pub watchdog_mode: WatchdogMode,
    pub watchdog_armed: bool,
    pub postmaster_start_time: Option<i64>,
    pub failsafe_active: bool,
}

/// Patroni's `patroni_postgres_state` numbering (`PostgresqlState`), fixed for compatibility.
const POSTGRES_STATES: &str = "0=initdb, 1=initdb_failed, 2=custom_bootstrap, 3=custom_bootstrap_failed, 4=creating_replica, 5=running, 6=starting, 7=bootstrap_starting, 8=start_failed, 9=restarting, 10=restart_failed, 11=stopping, 12=stopped, 13=stop_failed, 14=crashed";

fn postgres_state(s: MemberState) -> u8 {
    match s {
        MemberState::Initializing => 0,
        MemberState::CustomBootstrap => 2,
        MemberState::CreatingReplica => 4,
        MemberState::Running => 5,
        MemberState::Starting => 6,
        MemberState::Restarting => 9,
        MemberState::Stopping => 11,
        MemberState::Stopped => 12,
        MemberState::Crashed => 14,
    }
}

fn watchdog_mode(m: WatchdogMode) -> &'static str {
    match m {
        WatchdogMode::Off => "off",
        WatchdogMode::Automatic => "automatic",
        WatchdogMode::Required => "required",
    }
}

/// `0.1.0` → `000100`, as Patroni pads its own version.
fn padded_version(v: &str) -> String {
    v.split('.')
        .map(|p| format!("{:0>2}", p.split(['-', '+']).next().unwrap_or(p)))
        .collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A float as Prometheus writes it: integers without a fraction.
fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

struct Out {
    text: String,
    labels: String,
}

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = write!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    /// One sample with the member's labels and `extra` ones (`k="v"` pairs, already escaped).
    fn line(&mut self, name: &str, extra: &str, value: impl std::fmt::Display) {
        let sep = if extra.is_empty() { "" } else { "," };
        let _ = writeln!(self.text, "{name}{{{}{sep}{extra}}} {value}", self.labels);
    }

    fn metric(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.head(name, kind, help);
        self.line(name, "", value);
    }

    fn flag(&mut self, name: &str, help: &str, value: bool) {
        self.metric(name, "gauge", help, u8::from(value));
    }
}

/// The body of `GET /metrics`.
pub fn render(v: &RestView, s: &Sample) -> String {
    let mut o = Out {
        text: String::new(),
        labels: format!(
            "scope=\"{}\",name=\"{}\"",
            escape(&v.cluster),
            escape(&v.me)
        ),
    };
    let primary_role = v.role == MemberRole::Primary;
    let replica_role = v.role == MemberRole::Replica;
    let running = v.state == MemberState::Running;

    // Patroni's metrics, in Patroni's order, with its HELP texts and types.
    o.metric(
        "patroni_version",
        "gauge",
        "Patroni semver without periods.",
        padded_version(env!("CARGO_PKG_VERSION")),
    );
    o.flag(
        "patroni_postgres_running",
        "Value is 1 if Postgres is running, 0 otherwise.",
        running,
    );
    o.metric(
        "patroni_postmaster_start_time",
        "gauge",
        "Epoch seconds since Postgres started.",
        s.postmaster_start_time.filter(|_| running).unwrap_or(0),
    );
    o.flag(
        "patroni_primary",
        "Value is 1 if this node is the leader, 0 otherwise.",
        v.is_primary(),
    );
    o.metric(
        "patroni_xlog_location",
        "counter",
        "Current location of the Postgres transaction log, 0 if this node is not the leader.",
        if primary_role { v.lsn.unwrap_or(0) } else { 0 },
    );
    o.flag(
        "patroni_standby_leader",
        "Value is 1 if this node is the standby_leader, 0 otherwise.",
        false,
    );
    o.flag(
        "patroni_replica",
        "Value is 1 if this node is a replica, 0 otherwise.",
        v.is_running_replica(),
    );
    o.flag(
        "patroni_sync_standby",
        "Value is 1 if this node is a sync standby, 0 otherwise.",
        !primary_role && v.sync_standbys.contains(&v.me),
    );
    o.flag(
        "patroni_quorum_standby",
        "Value is 1 if this node is a quorum standby, 0 otherwise.",
        false,
    );
    o.metric(
        "patroni_xlog_received_location",
        "counter",
        "Current location of the received Postgres transaction log, 0 if this node is not a replica.",
        if primary_role {
            0
        } else {
            v.received_lsn.unwrap_or(0)
        },
    );
    o.metric(
        "patroni_xlog_replayed_location",
        "counter",
        "Current location of the replayed Postgres transaction log, 0 if this node is not a replica.",
        if primary_role {
            0
        } else {
            v.replayed_lsn.unwrap_or(0)
        },
    );
    o.metric(
        "patroni_xlog_replayed_timestamp",
        "gauge",
        "Current timestamp of the replayed Postgres transaction log, 0 if null.",
        if primary_role {
            "0".to_string()
        } else {
            num(v.replayed_timestamp.unwrap_or(0.0))
        },
    );
    o.flag(
        "patroni_xlog_paused",
        "Value is 1 if the Postgres xlog is paused, 0 otherwise.",
        !primary_role && v.replay_paused,
    );
    o.flag(
        "patroni_postgres_streaming",
        "Value is 1 if Postgres is streaming, 0 otherwise.",
        !primary_role && v.streaming,
    );
    o.flag(
        "patroni_postgres_in_archive_recovery",
        "Value is 1 if Postgres is replicating from archive, 0 otherwise.",
        !primary_role && v.archive_recovery,
    );
    o.metric(
        "patroni_postgres_server_version",
        "gauge",
        "Version of Postgres (if running), 0 otherwise.",
        v.server_version.filter(|_| running).unwrap_or(0),
    );
    o.flag(
        "patroni_cluster_unlocked",
        "Value is 1 if the cluster is unlocked, 0 if locked.",
        v.lease_holder.is_none(),
    );
    o.flag(
        "patroni_failsafe_mode_is_active",
        "Value is 1 if failsafe mode is active, 0 if inactive.",
        s.failsafe_active,
    );
    o.metric(
        "patroni_postgres_timeline",
        "counter",
        "Postgres timeline of this node (if running), 0 otherwise.",
        v.timeline.filter(|_| running).unwrap_or(0),
    );
    o.metric(
        "patroni_dcs_last_seen",
        "gauge",
        "Epoch timestamp when DCS was last contacted successfully by Patroni.",
        v.dcs_last_seen,
    );
    o.flag(
        "patroni_pending_restart",
        "Value is 1 if the node needs a restart, 0 otherwise.",
        v.pending_restart,
    );
    o.flag(
        "patroni_is_paused",
        "Value is 1 if auto failover is disabled, 0 otherwise.",
        v.paused,
    );
    let _ = writeln!(
        o.text,
        "# HELP patroni_postgres_state Numeric representation of Postgres state.\n# Values: {POSTGRES_STATES}\n# TYPE patroni_postgres_state gauge"
    );
    o.line("patroni_postgres_state", "", postgres_state(v.state));

    // What Patroni lacks.
    if let Some(last) = s.renew_last {
        o.metric(
            "pgwarden_lease_renew_seconds",
            "gauge",
            "Duration of this member's last leader lease renew (a compare-and-swap PUT of the Lease).",
            num(last.as_secs_f64()),
        );
    }
    o.head(
        "pgwarden_lease_renew_duration_seconds",
        "histogram",
        "Leader lease renews by this member, by duration.",
    );
    for (le, n) in RENEW_BUCKETS.iter().zip(s.renew_buckets) {
        o.line(
            "pgwarden_lease_renew_duration_seconds_bucket",
            &format!("le=\"{le}\""),
            n,
        );
    }
    o.line(
        "pgwarden_lease_renew_duration_seconds_bucket",
        "le=\"+Inf\"",
        s.renew_count,
    );
    o.line(
        "pgwarden_lease_renew_duration_seconds_sum",
        "",
        num(s.renew_sum),
    );
    o.line(
        "pgwarden_lease_renew_duration_seconds_count",
        "",
        s.renew_count,
    );
    o.head(
        "pgwarden_lease_renews_total",
        "counter",
        "Leader lease renews by this member, by result.",
    );
    o.line(
        "pgwarden_lease_renews_total",
        "result=\"success\"",
        s.renews_ok,
    );
    o.line(
        "pgwarden_lease_renews_total",
        "result=\"failure\"",
        s.renews_failed,
    );
    if let Some(age) = s.since_renew {
        o.metric(
            "pgwarden_lease_seconds_since_renew",
            "gauge",
            "Seconds since this primary last renewed (or took) the leader lease, present only while primary: the agent kills postgres when it exceeds retryTimeout.",
            num(age.as_secs_f64()),
        );
    }
    if let Some(reachable) = s.apiserver_reachable {
        o.flag(
            "pgwarden_apiserver_reachable",
            "Value is 1 if this agent's last read of the apiserver (Lease, state ConfigMap, pods) succeeded, 0 otherwise.",
            reachable,
        );
    }
    o.head(
        "pgwarden_watchdog_active",
        "gauge",
        "Value is 1 while the watchdog is armed (this member is primary), 0 otherwise; mode is spec.ha.watchdog.mode.",
    );
    o.line(
        "pgwarden_watchdog_active",
        &format!("mode=\"{}\"", watchdog_mode(s.watchdog_mode)),
        u8::from(s.watchdog_armed),
    );
    o.head(
        "pgwarden_fencing_total",
        "counter",
        "Times this agent fenced its own postgres, by reason (retry_timeout: killed by the fencing task; renew_failed, apiserver_unreachable, lease_lost: demoted at once).",
    );
    for r in FencingReason::ALL {
        o.line(
            "pgwarden_fencing_total",
            &format!("reason=\"{}\"", r.label()),
            s.fencing[r.index()],
        );
    }
    if replica_role && let Some(lag) = v.lag() {
        o.metric(
            "pgwarden_replication_lag_bytes",
            "gauge",
            "Bytes this replica's replay position is behind the primary's last published position (or what it received, if further).",
            lag,
        );
    }
    o.metric(
        "pgwarden_maximum_lag_on_failover_bytes",
        "gauge",
        "spec.ha.maximumLagOnFailover: a replica further behind than this does not race for the leader lease.",
        v.maximum_lag_on_failover,
    );
    o.text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::ha::StopMode;

    fn replica() -> RestView {
        let mut v = RestView::new(
            "main",
            "main-1",
            Duration::from_secs(8),
            Duration::from_secs(2),
            1 << 20,
        );
        v.role = MemberRole::Replica;
        v.state = MemberState::Running;
        v.streaming = true;
        v.holds_lease = false;
        v.lease_holder = Some("main-0".into());
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
# HELP pgwarden_fencing_total Times this agent fenced its own postgres, by reason (retry_timeout: killed by the fencing task; renew_failed, apiserver_unreachable, lease_lost: demoted at once).
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
}
