//! The executor of `ha::Action`s: each action's I/O (the DCS, PostgreSQL, the role label) in the
//! order that keeps the fencing invariant — the fence is armed before postgres may be primary
//! and stands down only once it is not — and routing safe: a primary's role label leaves before
//! it stops answering and comes only after promotion.

use std::time::Instant;

use tracing::{error, info, warn};

use super::dcs::{DcsError, HistoryEntry, Snapshot};
use super::fence::FenceError;
use super::ha::{Action, DataDir, Decision, StartAs, StopMode};
use super::postgres::bootstrap::{self, AppObjects, BootstrapObjects};
use super::postgres::{self, LiveState, PgError, Postgres, slots};
use super::routing::{Gate, Seen};
use super::steps::{self, Step};
use super::{Agent, events};
use crate::api::cluster::SynchronousMode;
use crate::api::member::MemberState;
use crate::api::names::ROLE_PRIMARY;
use crate::api::state::SyncState;

/// How long a member waits after its first failed bootstrap before it claims the bootstrap
/// again; each further failure doubles the wait, up to [`BOOTSTRAP_RETRY_MAX`].
pub const BOOTSTRAP_RETRY: std::time::Duration = std::time::Duration::from_secs(30);
/// The longest wait between two bootstraps: a restore that cannot succeed until the spec is
/// fixed reads the store ten times an hour, not a hundred and twenty.
pub const BOOTSTRAP_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(600);

/// The wait after the `failures`th failed bootstrap in a row (1 for the first).
pub fn bootstrap_retry(failures: u32) -> std::time::Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BOOTSTRAP_RETRY
        .saturating_mul(1 << doublings)
        .min(BOOTSTRAP_RETRY_MAX)
}

#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("renew failed: {0}")]
    RenewFailed(DcsError),
    #[error(transparent)]
    Dcs(DcsError),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Fence(#[from] FenceError),
    #[error("{0}")]
    Halt(String),
}

/// What the running PostgreSQL streams from, as this agent last configured it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// Not configured since postgres last started or stopped: the next `Follow` rewrites it.
    Unknown,
    /// Configured without a source: a primary, or a replica with no leader to follow.
    Nobody,
    /// Streaming from this member.
    Member(String),
}

/// A basebackup running beside the loop.
pub struct Cloning {
    pub leader: String,
    pub task: tokio::task::JoinHandle<Result<(), PgError>>,
}

/// A promotion this agent signalled: the history entry it writes once postgres left recovery.
#[derive(Debug, Clone)]
pub struct Promotion {
    pub entry: HistoryEntry,
    /// Postgres left recovery (clients opened, checkpoint asked); only the history write may
    /// be left.
    pub done: bool,
}

impl Upstream {
    pub fn of(leader: Option<&str>) -> Self {
        match leader {
            Some(l) => Upstream::Member(l.to_string()),
            None => Upstream::Nobody,
        }
    }

    pub fn member(&self) -> Option<&str> {
        match self {
            Upstream::Member(l) => Some(l),
            _ => None,
        }
    }
}

impl Agent {
    /// Carry out `decision` step by step, in the order `steps::plan` gives (the simulation in
    /// tests/simulate.rs runs the same plan against its models).
    pub(super) async fn act(
        &mut self,
        decision: &Decision,
        snap: Option<&Snapshot>,
        live: Option<&LiveState>,
    ) -> Result<(), ActError> {
        let in_recovery = live.map(|l| l.in_recovery);
        let paused = self.paused;
        // When this cycle's Lease write was sent: where the fencing clock counts from.
        let mut sent: Option<Instant> = None;
        let plan = steps::plan(&decision.action, in_recovery, paused);
        for (i, step) in plan.iter().enumerate() {
            match self.step(step, decision, snap, live, sent).await {
                Ok(Some(t)) => sent = Some(t),
                Ok(None) => {}
                Err(e) => {
                    if matches!(step, Step::Renew | Step::Acquire) {
                        for undo in steps::on_lease_write_failure(&plan[..i]) {
                            let _ = self.step(&undo, decision, snap, live, sent).await;
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// One step of a plan; a Lease write returns when it was sent.
    async fn step(
        &mut self,
        step: &Step,
        decision: &Decision,
        snap: Option<&Snapshot>,
        live: Option<&LiveState>,
        sent: Option<Instant>,
    ) -> Result<Option<Instant>, ActError> {
        let lsn = live.and_then(|l| l.lsn);
        match step {
            Step::Renew => {
                // A primary start writes no position: postgres has not said where it stands.
                let lsn = if decision.action == Action::StartPostgres(StartAs::Primary) {
                    None
                } else {
                    lsn
                };
                return self.renew(snap, lsn).await.map(Some);
            }
            Step::Acquire => {
                let t = Instant::now();
                self.dcs.acquire(lsn).await.map_err(ActError::Dcs)?;
                return Ok(Some(t));
            }
            Step::Arm => self.fence.arm()?,
            Step::Holding => {
                // Every plan puts a Lease write before this step; without one nothing is held.
                let Some(t) = sent else {
                    return Err(ActError::Halt(
                        "internal: the fencing clock was to start without a Lease write".into(),
                    ));
                };
                self.fence.holding(t);
            }
            Step::InTime => self.fence.in_time(self.ha.fence_after)?,
            Step::Renewed => {
                if let Some(t) = sent {
                    // The watchdog is fed only after an acknowledged renew.
                    self.fence.renewed(t);
                }
            }
            Step::Leaving => self.fence.leaving(),
            Step::Disarm => self.fence.stopped(),
            Step::StandDown => self.fence.stand_down(),
            // Confirmed by every member this cycle: as good as a renew for the fences.
            Step::Confirmed => self
                .fence
                .confirmed(self.failsafe_asked.unwrap_or_else(Instant::now)),
            Step::Unroute { handover } => {
                // Not primary from now on for anyone who asks (`/primary` answers 503): the
                // operator's label updater must not put back the label removed below while a
                // long stop runs. Routing first: the role label leaves before postgres stops
                // answering; it starts again only once `-rw` no longer routes here (the routing
                // gate). In a handover the label stays until the successor has its own
                // (`routing::Handover`): -rw is never empty, and this member refuses every
                // client meanwhile (stopping, then fenced).
                self.rest.view.write().await.state = MemberState::Stopping;
                if *handover {
                    self.handover.start(Instant::now());
                } else {
                    self.handover.clear();
                    self.route_gate.label_removed(Instant::now());
                    if let Err(e) = self.dcs.publish_role(None).await {
                        warn!(error = %e, "cannot remove the role label");
                    }
                }
            }
            Step::Stop(mode) => {
                // The watchdog stays armed until no client is left (a hung stop still fires
                // before the ttl), not until the shutdown checkpoint ends: on a busy primary
                // that can take longer than the watchdog allows, and a fired watchdog would
                // turn a clean switchover into a crash.
                let fence = &mut self.fence;
                self.pg.stop_with(*mode, || fence.stopped()).await?;
                self.upstream = Upstream::Unknown;
                self.promotion = None;
                self.conf.synchronous_standby_names = None;
                self.conf.synchronous_since = None;
            }
            Step::Release => {
                let optime = self.pg.checkpoint_location().await;
                self.dcs.release(optime).await.map_err(ActError::Dcs)?;
            }
            Step::StartPrimary => {
                self.routes_here();
                self.conf.clients_fenced = false;
                // The standbys the `sync` key names may be promoted: not one commit may be
                // acknowledged without them, from the first.
                let published = snap
                    .map(|s| s.sync.sync_standby.clone())
                    .unwrap_or_default();
                self.conf.synchronous_standby_names =
                    postgres::sync::at_start(self.ha.synchronous_mode, &published);
                self.conf.synchronous_since = None;
                self.pg.start(&self.settings(None), false).await?;
                self.upstream = Upstream::Nobody;
            }
            Step::StartReplica { leader, rewind } => {
                self.start_replica(snap, leader.as_deref(), *rewind).await?;
            }
            Step::Promote => self.promote(snap, live).await?,
            Step::Upkeep => {
                // Out of recovery: a promotion left pending by an earlier cycle ends here.
                if self.promotion.is_some() {
                    self.promoted(snap).await;
                }
                if let Some(s) = snap {
                    self.primary_upkeep(s).await;
                }
            }
            Step::Follow { leader } => {
                let wanted = Upstream::of(leader.as_deref());
                if self.upstream != wanted {
                    let conninfo = leader.as_deref().and_then(|l| self.conninfo_for(snap, l));
                    if leader.is_some() && conninfo.is_none() {
                        return Ok(None);
                    }
                    let settings = self.settings(conninfo);
                    self.pg.reconfigure(&settings).await?;
                    info!(leader = ?leader, "now following");
                    self.upstream = wanted;
                }
            }
            Step::Other => self.act_whole(decision, snap).await?,
        }
        Ok(None)
    }

    /// The actions with no Lease or fencing step of their own.
    async fn act_whole(
        &mut self,
        decision: &Decision,
        snap: Option<&Snapshot>,
    ) -> Result<(), ActError> {
        match &decision.action {
            Action::ClaimInitialize => {
                // After a failed bootstrap this member waits before it tries again: a restore
                // that cannot succeed (a target before the backups) must not loop at full speed.
                if self.bootstrap_retry_at.is_some_and(|t| Instant::now() < t) {
                    return Ok(());
                }
                let won = self.dcs.claim_initialize().await.map_err(ActError::Dcs)?;
                info!(won, "raced for the initialize key");
            }
            Action::Bootstrap => {
                if let Err(e) = self.bootstrap().await {
                    self.bootstrap_failures += 1;
                    let wait = bootstrap_retry(self.bootstrap_failures);
                    error!(error = %e, failures = self.bootstrap_failures, retry_in = ?wait, "bootstrap failed; giving up the initialize key");
                    self.bootstrap_retry_at = Some(Instant::now() + wait);
                    self.bootstrap_error = Some(e.to_string());
                    self.events.report(events::bootstrap_failed(
                        &self.args.name,
                        &e.to_string(),
                        wait,
                    ));
                    let _ = self.pg.stop(StopMode::Immediate).await;
                    self.fence.stand_down();
                    let _ = self.pg.wipe().await;
                    let _ = self.dcs.release(None).await;
                    let _ = self.dcs.cancel_initialize().await;
                    return Err(e);
                }
            }
            Action::CloneFrom { leader } => {
                let Some(u) = self.conninfo_for(snap, leader) else {
                    return Ok(());
                };
                self.rest.view.write().await.state = MemberState::CreatingReplica;
                // Beside the loop, not in it: a basebackup of a large database takes longer
                // than the liveness probe allows a loop that stopped, and the kubelet would
                // kill it halfway, again and again (safety hole 11). `cycle` waits for it.
                let mut pg = self.pg.detached();
                let user = self.args.replication_user.clone();
                let passfile = self.conf.passfile.clone();
                let task =
                    tokio::spawn(
                        async move { pg.basebackup(&u.host, u.port, &user, &passfile).await },
                    );
                info!(leader, "creating a replica with pg_basebackup");
                self.cloning = Some(Cloning {
                    leader: leader.clone(),
                    task,
                });
            }
            Action::RecordInitialize { sysid } => {
                self.dcs
                    .record_initialize(sysid)
                    .await
                    .map_err(ActError::Dcs)?;
            }
            Action::Halt => {
                let _ = self.pg.stop(StopMode::Immediate).await;
                return Err(ActError::Halt(decision.reason.clone()));
            }
            other => {
                return Err(ActError::Halt(format!(
                    "internal: {other:?} has steps of its own"
                )));
            }
        }
        Ok(())
    }

    /// Renew the held Lease (compare-and-swap on the version read this cycle), timed for
    /// `/metrics`; returns when the renew was sent, where the fence counts from.
    async fn renew(
        &mut self,
        snap: Option<&Snapshot>,
        lsn: Option<u64>,
    ) -> Result<Instant, ActError> {
        let lease = snap.and_then(|s| s.lease_object.as_ref());
        let sent = Instant::now();
        let renewed = self.dcs.renew(lease, lsn).await;
        self.telemetry
            .lease_renewed(sent.elapsed(), renewed.is_ok());
        renewed.map_err(ActError::RenewFailed)?;
        Ok(sent)
    }

    /// A renewed primary's housekeeping: replication slots and the synchronous standby.
    async fn primary_upkeep(&mut self, snap: &Snapshot) {
        let wanted = slots::wanted(
            snap.members.iter().map(|(n, _)| n.as_str()),
            &self.args.name,
        );
        if let Err(e) = self.pg.ensure_slots(&wanted).await {
            warn!(error = %e, "cannot create replication slots");
        }
        self.drop_orphan_slots(snap).await;
        if let Err(e) = self.synchronous_step(snap).await {
            warn!(error = %e, "cannot maintain the synchronous standby");
        }
    }

    /// Start as a replica of `leader`, rewinding first when the timelines diverged; a failed
    /// rewind wipes the data directory so the next cycle clones afresh.
    async fn start_replica(
        &mut self,
        snap: Option<&Snapshot>,
        leader: Option<&str>,
        rewind: bool,
    ) -> Result<(), ActError> {
        let conninfo = leader.and_then(|l| self.conninfo_for(snap, l));
        let source = leader.unwrap_or("the leader");
        if rewind && conninfo.is_some() && self.pg.running() {
            // A running replica that cannot stream (see ha::REWIND_AFTER): pg_rewind needs it
            // stopped cleanly.
            self.pg.stop(StopMode::Fast).await?;
            self.not_streaming_since = None;
        }
        if rewind && let Some(u) = &conninfo {
            // The leader's control file must name its new timeline before pg_rewind reads it
            // (its own checkpoint after the promotion runs in the background): ask for one.
            if let Err(e) =
                Postgres::checkpoint_source(&u.host, u.port, &self.secrets.superuser).await
            {
                warn!(error = %e, "cannot CHECKPOINT the leader before pg_rewind; trying again next cycle");
                return Ok(());
            }
            if let Err(e) = self.pg.rewind(&u.host, u.port, &self.conf.passfile).await {
                // Patroni's rule: a rewind that failed against a leader still answering as a
                // healthy primary is this data directory's fault (its WAL is gone, its control
                // file damaged): start over from a fresh basebackup next cycle. One that failed
                // because the leader went away (a restart, a failover, a cut) before it changed
                // anything is nobody's: the data directory stays, postgres stays down, and the
                // next cycle rewinds again from whoever leads then. Wiping on any error threw
                // away a data directory, and a copy of the cluster, for a moment's fault.
                //
                // pg_rewind changes the data directory only after it said where it rewinds
                // from; a failure after that leaves it unusable whatever the leader does.
                let intact = postgres::rewind_left_data_intact(&e.to_string());
                let leader_fine =
                    Postgres::source_is_primary(&u.host, u.port, &self.secrets.superuser).await;
                if intact && !leader_fine {
                    warn!(error = %e, "pg_rewind failed before changing anything and {source} no longer answers as a primary; keeping the data directory and trying again next cycle");
                    return Ok(());
                }
                warn!(error = %e, "pg_rewind failed; reinitialising from the leader");
                self.events.report(events::rewind_failed(
                    &self.args.name,
                    source,
                    &e.to_string(),
                ));
                self.pg.wipe().await?;
                return Ok(());
            }
            if let Err(e) =
                Postgres::checkpoint_source(&u.host, u.port, &self.secrets.superuser).await
            {
                warn!(error = %e, "cannot CHECKPOINT the leader after pg_rewind; this replica may wait for its next write to become consistent");
            }
            self.events.report(events::rewound(&self.args.name, source));
        }
        // Routing: a pod that may still be behind `-rw` (a demotion, a restarted agent) must not
        // answer read-only there. Until the routing gate opens, pg_hba.conf rejects every client
        // over TCP (replication stays open): writes get an error at connect meanwhile.
        let gate = self.routing_gate().await;
        self.conf.clients_fenced = gate != Gate::Open;
        if let Gate::Closed(why) = &gate {
            info!("starting with clients fenced: {why}");
        }
        self.conf.synchronous_standby_names = None;
        self.conf.synchronous_since = None;
        self.promotion = None;
        let known = leader.is_none() || conninfo.is_some();
        self.pg.start(&self.settings(conninfo), true).await?;
        // Without the leader's address nothing streams yet: record no upstream, so the next
        // Follow writes primary_conninfo once the address is known (safety hole 11).
        self.upstream = if known {
            Upstream::of(leader)
        } else {
            Upstream::Unknown
        };
        Ok(())
    }

    /// A replica with its clients fenced: ask the routing gate again, and open pg_hba.conf once
    /// `-rw` no longer routes here.
    pub(super) async fn route_step(&mut self) {
        if !self.conf.clients_fenced || !self.pg.running() {
            return;
        }
        if let Gate::Open = self.routing_gate().await {
            self.conf.clients_fenced = false;
            match self.reload().await {
                Ok(()) => info!("-rw no longer routes here: serving clients again"),
                Err(e) => {
                    warn!(error = %e, "cannot reopen pg_hba.conf; clients stay fenced");
                    self.conf.clients_fenced = true;
                }
            }
        }
    }

    /// Remove a `primary` label that may be there, look at the `-rw` endpoints when that was
    /// needed, and ask the gate (see `routing`).
    async fn routing_gate(&mut self) -> Gate {
        if self.handover.active() {
            return Gate::Closed(
                "handing over: the primary role label stays until the new primary has its own",
            );
        }
        let now = Instant::now();
        let seen = match self.dcs.unroute_primary().await {
            Err(e) => {
                warn!(error = %e, "cannot remove the primary role label");
                Seen::LabelStays
            }
            Ok(removed) => {
                if removed {
                    self.route_gate.label_removed(now);
                }
                if !self.route_gate.pending() {
                    Seen::LabelGone { listed: None }
                } else {
                    match self.dcs.rw_routes_to(&self.args.address).await {
                        Ok(None) => Seen::NoService,
                        Ok(Some(listed)) => Seen::LabelGone {
                            listed: Some(listed),
                        },
                        Err(e) => {
                            warn!(error = %e, "cannot read the -rw endpoints");
                            Seen::LabelGone { listed: None }
                        }
                    }
                }
            }
        };
        let away_lately = self
            .apiserver_away_at
            .is_some_and(|t| now.duration_since(t) < super::routing::APISERVER_AWAY_MEMORY);
        self.route_gate
            .decide(seen, now, super::routing::allowance(away_lately))
    }

    /// Promote the running replica: take the `sync` key over, signal the promotion, and wait up
    /// to `steps::PROMOTE_WAIT` for it to end. A longer replay goes on after the cycle: the
    /// loop renews the Lease meanwhile (`ha::decide` with `promoting`), and the first cycle that
    /// finds postgres out of recovery finishes the promotion (`Step::Upkeep`). Waiting for the
    /// whole replay inside one cycle let the fence, counting from the renew before it, kill a
    /// new primary whose replay took longer than the fence deadline.
    async fn promote(
        &mut self,
        snap: Option<&Snapshot>,
        live: Option<&LiveState>,
    ) -> Result<(), ActError> {
        if self.promotion.is_none() {
            if let Err(e) = self.dcs.publish_role(None).await {
                warn!(error = %e, "cannot update the role label");
            }
            if self.ha.synchronous_mode != SynchronousMode::Off {
                // Before the first commit it may acknowledge: the `sync` key names this member
                // alone (an empty synchronous set it grows as standbys confirm), so no other
                // member may be promoted over commits only it has. Written after the promotion,
                // a window was left where the old key still named the former primary and its
                // standby (Patroni writes it first too). Only while the key is what this cycle
                // read: an agent that stalled after its Lease write must not overwrite the key
                // of a member that took over meanwhile (which made itself promotable over that
                // member's acknowledged commits; found by the simulation, seed 1639).
                let Some(read) = snap.map(|s| &s.sync) else {
                    return Err(ActError::Halt(
                        "internal: a promotion without this cycle's read of the DCS".into(),
                    ));
                };
                self.dcs
                    .publish_sync(&[], read)
                    .await
                    .map_err(ActError::Dcs)?;
            }
            if self.ha.synchronous_mode == SynchronousMode::Strict {
                // Strict: not one commit may be acknowledged asynchronously, even right after
                // promotion.
                self.set_synchronous_standby_names(Some("*".into())).await?;
            }
            // The calls above may have taken long, or the agent stalled: the fences must still
            // be ahead of their deadline when the promotion is signalled.
            self.fence.in_time(self.ha.fence_after)?;
            let reason = match snap.and_then(|s| s.switchover.as_ref()) {
                Some(_) => "switchover",
                None => "no recovery target specified",
            };
            let entry = HistoryEntry {
                timeline: live.and_then(|l| l.timeline).unwrap_or(1),
                switch_lsn: live.and_then(|l| l.lsn).unwrap_or(0),
                reason: reason.into(),
                time: jiff::Timestamp::now().to_string(),
                new_leader: self.args.name.clone(),
            };
            self.pg.signal_promote().await?;
            info!(from_timeline = entry.timeline, "promotion signalled");
            self.promotion = Some(Promotion { entry, done: false });
        }
        if self.pg.promoted(steps::PROMOTE_WAIT).await? {
            self.promoted(snap).await;
        } else {
            info!(
                "postgres is still replaying WAL: the promotion goes on while the lease is renewed"
            );
        }
        Ok(())
    }

    /// Postgres left recovery after a promotion this agent signalled: route clients here (the
    /// former primary's label off first, then ours on: `-rw` never lists both, so no client is
    /// sent to a dead node half the time), checkpoint, and record the promotion in the cluster's
    /// history.
    async fn promoted(&mut self, snap: Option<&Snapshot>) {
        let Some(p) = self.promotion.as_mut() else {
            return;
        };
        if !p.done {
            p.done = true;
            self.upstream = Upstream::Nobody;
            match self.pg.last_switch().await {
                // What PostgreSQL recorded; the guess made at the signal is only a fallback.
                Ok(Some((parent, at))) if parent >= p.entry.timeline => {
                    p.entry.timeline = parent;
                    p.entry.switch_lsn = at;
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "cannot read the timeline history; recording the promotion as seen before it")
                }
            }
            let timeline = p.entry.timeline + 1;
            info!(timeline, "promoted");
            self.pg.checkpoint_in_background();
            // The replicas ask for their slots as soon as they see the new timeline; without
            // them they retry only after wal_retrieve_retry_interval (5 s), so create them now
            // rather than at the next loop's upkeep.
            if let Some(s) = snap {
                let wanted =
                    slots::wanted(s.members.iter().map(|(n, _)| n.as_str()), &self.args.name);
                if let Err(e) = self.pg.ensure_slots(&wanted).await {
                    warn!(error = %e, "cannot create replication slots after the promotion");
                }
            }
            // The primary is where -rw should route: open its clients before the label says so.
            self.routes_here();
            if self.conf.clients_fenced {
                self.conf.clients_fenced = false;
                if let Err(e) = self.reload().await {
                    warn!(error = %e, "cannot reopen pg_hba.conf after the promotion");
                }
            }
        }
        self.record_promotion().await;
        // A former primary that released the Lease (a handover) stopped cleanly and refuses
        // every client while it keeps its label: label this pod first, so -rw is never empty
        // (see `routing::Handover`). One whose Lease expired may be dead, frozen or cut off:
        // -rw would send clients to a pod that never answers, so its label goes first.
        let handed_over = self.dcs.acquired_free();
        if let Some(s) = snap
            && !handed_over
        {
            self.unlabel_former_primaries(&s.labelled_primary).await;
        }
        if let Err(e) = self.dcs.publish_role(Some(ROLE_PRIMARY)).await {
            warn!(error = %e, "cannot set the primary role label");
        }
        if let Some(s) = snap
            && handed_over
        {
            self.unlabel_former_primaries(&s.labelled_primary).await;
        }
    }

    /// This member is (again) where `-rw` should route: no routing gate to wait for, nothing to
    /// hand over.
    fn routes_here(&mut self) {
        self.route_gate = Default::default();
        self.handover.clear();
    }

    /// Remove the `primary` label of each pod in `others` (see `publish::stale_primary_labels`).
    pub(super) async fn unlabel_former_primaries(&mut self, others: &[String]) {
        for other in others {
            match self.dcs.unlabel(other).await {
                Ok(false) => {}
                Ok(true) => {
                    info!(member = %other, "removed the primary role label of a former primary: -rw routes only here")
                }
                Err(e) => {
                    warn!(member = %other, error = %e, "cannot remove a former primary's role label")
                }
            }
        }
    }

    /// Write the finished promotion's entry into the cluster's history (which tells former
    /// primaries they must rewind); a failed write is tried again every cycle while this member
    /// is primary, never dropped.
    async fn record_promotion(&mut self) {
        let Some(p) = self.promotion.as_ref().filter(|p| p.done) else {
            return;
        };
        match self.dcs.record_promotion(p.entry.clone()).await {
            Ok(()) => self.promotion = None,
            Err(e) => {
                warn!(error = %e, "cannot record the promotion in the history; trying again next cycle")
            }
        }
    }

    /// The winner of the initialize key creates the cluster.
    async fn bootstrap(&mut self) -> Result<(), ActError> {
        self.rest.view.write().await.state = MemberState::Initializing;
        let _ = self.pg.stop(StopMode::Immediate).await;
        let recovered = match self.recovery.clone() {
            Some(r) => {
                self.restore(&r).await?;
                true
            }
            None => {
                self.pg.initdb(&self.settings(None).initdb).await?;
                false
            }
        };
        // Armed before the write, as every plan that makes a primary (steps.rs).
        self.fence.arm()?;
        let sent = Instant::now();
        if let Err(e) = self.dcs.acquire(None).await {
            self.fence.stopped();
            return Err(ActError::Dcs(e));
        }
        self.fence.holding(sent);
        self.pg.start(&self.settings(None), false).await?;
        self.upstream = Upstream::Nobody;
        let objects = BootstrapObjects {
            superuser_password: &self.secrets.superuser,
            replication_user: &self.args.replication_user,
            replication_password: &self.secrets.replication,
            app: self.secrets.app.as_deref().map(|password| AppObjects {
                user: &self.args.app_user,
                database: &self.args.app_database,
                password,
            }),
            roles: &self.bootstrap_roles,
            databases: &self.bootstrap_databases,
        };
        let statements = match recovered {
            true => bootstrap::recovered_statements(&objects),
            false => bootstrap::statements(&objects),
        };
        for sql in &statements {
            self.pg.execute_batch(sql).await?;
        }
        let DataDir::Initialized { sysid, .. } = self.pg.data_state().await? else {
            return Err(ActError::Pg(PgError::Program {
                program: "initdb".into(),
                detail: "no cluster after initdb".into(),
            }));
        };
        self.dcs
            .record_initialize(&sysid)
            .await
            .map_err(ActError::Dcs)?;
        if let Err(e) = self.dcs.publish_role(Some(ROLE_PRIMARY)).await {
            warn!(error = %e, "cannot set the primary role label");
        }
        self.bootstrap_error = None;
        self.bootstrap_failures = 0;
        info!(sysid, "bootstrapped a new cluster");
        Ok(())
    }

    /// `spec.bootstrap.recovery`: restore the source's backup, then run PostgreSQL's recovery to
    /// its end (the target, or the end of the archived WAL) and promotion, with no TCP listener
    /// and before the Lease is taken: until then nothing may route to it, and the HA loop must
    /// not promote it early. The settings pgBackRest wrote for the recovery are reset after it,
    /// or a replica cloned from here would copy them and stop at the old target. Blocks the
    /// loop (no other member has data; the pod's startup probe allows an hour).
    async fn restore(&mut self, recovery: &crate::api::backup::Recovery) -> Result<(), ActError> {
        info!(
            source = %recovery.stanza,
            path = %recovery.path,
            r#type = %recovery.type_,
            target = ?recovery.target,
            "restoring the source cluster's backup (pgbackrest restore)"
        );
        self.pg.restore(&recovery.restore_args()).await?;
        let mut settings = self.settings(None);
        settings.listen_address = String::new();
        self.pg.start(&settings, false).await?;
        info!("restored; PostgreSQL replays the archived WAL up to the target");
        let started = Instant::now();
        let mut next_note = started + std::time::Duration::from_secs(60);
        loop {
            if !self.pg.running() {
                return Err(ActError::Pg(PgError::Program {
                    program: "postgres".into(),
                    detail: "recovery failed: PostgreSQL exited before reaching the recovery target (its log above says why: a target before the backup's end or past the archived WAL)".into(),
                }));
            }
            match self.pg.live_state().await {
                Ok(l) if !l.in_recovery => break,
                Ok(_) | Err(_) => {}
            }
            if Instant::now() >= next_note {
                info!(elapsed = ?started.elapsed(), "still recovering");
                next_note += std::time::Duration::from_secs(60);
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        info!(elapsed = ?started.elapsed(), "recovery reached its target and promoted");
        for setting in crate::api::backup::RECOVERY_SETTINGS {
            self.pg
                .execute_batch(&format!("ALTER SYSTEM RESET {setting}"))
                .await?;
        }
        self.pg.stop(StopMode::Fast).await?;
        Ok(())
    }

    /// Drop the slots of members whose pods have been gone for 2 x ttl (a scaled-down replica),
    /// as Patroni drops the slots of members that left, so they do not hold WAL forever.
    async fn drop_orphan_slots(&mut self, snap: &Snapshot) {
        let existing = match self.pg.member_slots(&self.args.cluster).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot list replication slots");
                return;
            }
        };
        let due =
            self.slot_orphans
                .due(&existing, &snap.pod_names, Instant::now(), self.ha.ttl * 2);
        for slot in due {
            match self.pg.drop_slot(&slot).await {
                Ok(()) => {
                    info!(slot, "dropped the replication slot of a member that left");
                    self.slot_orphans.dropped(&slot);
                }
                Err(e) => warn!(slot, error = %e, "cannot drop a replication slot"),
            }
        }
    }

    /// Carry out `postgres::sync::plan` in Patroni's order: unpublish, set, publish.
    async fn synchronous_step(&mut self, snap: &Snapshot) -> Result<(), ActError> {
        let published: Vec<String> = match &snap.sync.leader {
            Some(l) if *l == self.args.name => snap.sync.sync_standby.clone(),
            _ => vec![],
        };
        let nosync: Vec<&str> = snap
            .members
            .iter()
            .filter(|(_, s)| s.tags.nosync)
            .map(|(n, _)| n.as_str())
            .collect();
        let rows = if self.ha.synchronous_mode == SynchronousMode::Off {
            vec![]
        } else {
            postgres::sync::members_only(self.pg.replication().await?, &snap.pod_names)
        };
        if self.conf.synchronous_since.is_none() && self.conf.synchronous_standby_names.is_some() {
            // Set before this agent knew where WAL stood (a start, a restarted agent): count
            // from now, which is no earlier than any commit acknowledged so far.
            self.conf.synchronous_since = Some(self.pg.flush_lsn().await?);
        }
        let plan = postgres::sync::plan(
            self.ha.synchronous_mode,
            &published,
            &rows,
            &nosync,
            self.conf.synchronous_standby_names.as_deref(),
            self.conf.synchronous_since,
        );
        // Each write only while the key is what this cycle read (or just wrote).
        let mut key = snap.sync.clone();
        if plan.unpublish {
            self.dcs
                .publish_sync(&[], &key)
                .await
                .map_err(ActError::Dcs)?;
            key = SyncState {
                leader: Some(self.args.name.clone()),
                sync_standby: vec![],
            };
        }
        self.set_synchronous_standby_names(plan.synchronous_standby_names)
            .await?;
        if let Some(name) = plan.publish {
            self.dcs
                .publish_sync(std::slice::from_ref(&name), &key)
                .await
                .map_err(ActError::Dcs)?;
            info!(standby = %name, "synchronous standby published");
        }
        Ok(())
    }

    async fn set_synchronous_standby_names(
        &mut self,
        value: Option<String>,
    ) -> Result<(), ActError> {
        if self.conf.synchronous_standby_names == value {
            return Ok(());
        }
        self.conf.synchronous_standby_names = value.clone();
        self.conf.synchronous_since = None;
        let settings = self.settings(None);
        self.pg.reconfigure(&settings).await?;
        // Once the new setting is in force: every commit acknowledged before lies behind this.
        if value.is_some() {
            self.conf.synchronous_since = Some(self.pg.flush_lsn().await?);
        }
        info!(synchronous_standby_names = ?value, "synchronous_standby_names changed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_failing_bootstrap_waits_longer_each_time_up_to_ten_minutes() {
        let waits: Vec<u64> = (1..=7).map(|n| bootstrap_retry(n).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 600, 600]);
        assert_eq!(bootstrap_retry(0), Duration::from_secs(30));
        assert_eq!(bootstrap_retry(u32::MAX), BOOTSTRAP_RETRY_MAX);
    }
}
