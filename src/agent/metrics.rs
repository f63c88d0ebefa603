//! The agent's `GET /metrics` (Prometheus text format). Patroni's metric names, HELP texts, types
//! and labels (`scope`, `name`) where Patroni has the metric, so dashboards and alerts written for
//! Patroni keep working; `pgwarden_*` for what Patroni lacks: lease renew latency and results,
//! the age of the last renew (the fencing clock), the watchdog, fencing events, whether the
//! apiserver answers, and replication lag in bytes.
//!
//! The HA loop and the fencing task record events in a [`Telemetry`] shared with the REST view;
//! [`render`] is a pure function of the view and a [`Sample`] taken at scrape time.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agent::ha::Action;
use crate::agent::rest::RestView;
use crate::api::cluster::WatchdogMode;
use crate::api::member::{MemberRole, MemberState};
use crate::common::prom::{Text, escape, num};

/// Upper bounds (seconds) of the lease renew histogram's buckets. A renew is one PUT to the
/// apiserver (two on a conflict), bounded by retryTimeout.
pub const RENEW_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why the agent fenced its own postgres (stopped it at once, or killed it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FencingReason {
    /// The fencing task: no lease renew within the fence deadline, ttl - safetyMargin, so
    /// postgres was SIGKILLed even if the loop itself was stuck. (The label keeps its old name.)
    RetryTimeout,
    /// A renew failed (conflict or error): the primary demoted (a lost Lease at once, an
    /// unanswered renew just before the fence deadline).
    RenewFailed,
    /// The apiserver could not be read while primary: demoted just before the fence deadline.
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

/// The agent's samples all carry the member's labels (`scope`, `name`).
struct Out {
    text: Text,
    labels: String,
}

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        self.text.head(name, kind, help);
    }

    /// One sample with the member's labels and `extra` ones (`k="v"` pairs, already escaped).
    fn line(&mut self, name: &str, extra: &str, value: impl std::fmt::Display) {
        let sep = if extra.is_empty() { "" } else { "," };
        self.text
            .sample(name, &format!("{}{sep}{extra}", self.labels), value);
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
        text: Text::new(),
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
    o.text.head_noted(
        "patroni_postgres_state",
        "gauge",
        "Numeric representation of Postgres state.",
        &format!("Values: {POSTGRES_STATES}"),
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
            "Seconds since this primary sent its last acknowledged renew of the leader lease, present only while primary: the agent kills postgres when it exceeds ttl - safetyMargin.",
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
        "Times this agent fenced its own postgres, by reason (retry_timeout: killed by the fencing task at the fence deadline; renew_failed, apiserver_unreachable: demoted before it; lease_lost: demoted at once).",
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
    // spec.backup, on the primary only (it alone archives and backs up).
    if let Some(a) = v.archiver.as_ref().filter(|_| primary_role) {
        o.metric(
            "pgwarden_wal_archived_total",
            "counter",
            "WAL segments archived since PostgreSQL started (pg_stat_archiver.archived_count).",
            a.archived_count,
        );
        o.metric(
            "pgwarden_wal_archive_failures_total",
            "counter",
            "Failed attempts to archive a WAL segment since PostgreSQL started (pg_stat_archiver.failed_count).",
            a.failed_count,
        );
        o.metric(
            "pgwarden_wal_last_archived_timestamp_seconds",
            "gauge",
            "When the last WAL segment was archived (epoch seconds), 0 if none since PostgreSQL started.",
            a.last_archived_time.unwrap_or(0),
        );
        o.metric(
            "pgwarden_wal_last_archive_failure_timestamp_seconds",
            "gauge",
            "When archiving last failed (epoch seconds), 0 if it has not since PostgreSQL started: archiving is failing while this is newer than the last success.",
            a.last_failed_time.unwrap_or(0),
        );
    }
    if let Some(newest) = v
        .repository
        .as_ref()
        .filter(|_| primary_role)
        .and_then(|r| r.backups.first())
    {
        let secs = |t: &str| t.parse::<jiff::Timestamp>().map_or(0, |t| t.as_second());
        let (started, finished) = (secs(&newest.started), secs(&newest.finished));
        o.metric(
            "pgwarden_backup_last_success_timestamp_seconds",
            "gauge",
            "When the newest backup in the repository finished (epoch seconds), as the primary last read it.",
            finished,
        );
        o.metric(
            "pgwarden_backup_duration_seconds",
            "gauge",
            "How long the newest backup in the repository took, in seconds.",
            (finished - started).max(0),
        );
    }
    o.metric(
        "pgwarden_maximum_lag_on_failover_bytes",
        "gauge",
        "spec.ha.maximumLagOnFailover: a replica further behind than this does not race for the leader lease.",
        v.maximum_lag_on_failover,
    );
    o.text.finish()
}

#[cfg(test)]
mod tests;
