//! `pgwarden agent`: supervises PostgreSQL in one pod (or, in the integration tests, as a plain
//! process on its own address) and keeps it in the role the leader Lease says. This file is the
//! loop, Patroni's shape: observe (DCS, local postgres, peers when racing) → `ha::decide` (pure)
//! → `act` → `publish`. The components beside it: `fence` (the fencing invariant: watchdog and
//! fencing thread), `act` (the executor of `ha::Action`s), `publish` (status, label, REST view),
//! `commands` (REST write requests), `reconfigure` (PostgreSQL's settings), `routing` (no
//! read-only answers behind `-rw`), `start` (wiring).
//! docs/architecture.md tells the story.

pub mod act;
pub mod backup;
pub mod commands;
pub mod config;
pub mod dcs;
pub mod events;
pub mod fence;
pub mod ha;
pub mod metrics;
pub mod peers;
pub mod postgres;
pub mod publish;
pub mod reconfigure;
pub mod rest;
pub mod routing;
pub mod softdog;
mod start;
pub mod steps;
pub mod watchdog;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{Instrument, error, info, info_span, warn};

use crate::api::cluster::SynchronousMode;
use crate::api::state::BackupResult;
use act::{ActError, Cloning, Upstream};
use config::{AgentArgs, ConfigError};
use dcs::{Dcs, Snapshot};
use fence::Fence;
use ha::{Action, Decision, HaConfig, LeaseView, LocalPostgres, Observation, StopMode};
use postgres::{PgError, Postgres};
use reconfigure::Reconfigure;
use rest::RestContext;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error("refusing to run: {0}")]
    Halted(String),
    #[error(transparent)]
    Action(ActError),
}

impl From<ActError> for AgentError {
    fn from(e: ActError) -> Self {
        match e {
            ActError::Halt(why) => AgentError::Halted(why),
            ActError::Pg(e) => AgentError::Postgres(e),
            other => AgentError::Action(other),
        }
    }
}

/// How long a primary's shutdown waits for the CHECKPOINT it asks for before stopping: the
/// watchdog (fed at the last renew, at most loop_wait ago) must not fire meanwhile.
const PRE_STOP_CHECKPOINT: Duration = Duration::from_secs(2);

/// How often a stopping synchronous standby looks whether the primary has let it go.
const LEAVE_SYNC_POLL: Duration = Duration::from_millis(200);

/// Entry point of `pgwarden agent`.
pub async fn run(args: AgentArgs) -> Result<(), AgentError> {
    args.validate()?;
    let span = info_span!("agent", cluster = %args.cluster, member = %args.name);
    Agent::start(args)
        .instrument(span.clone())
        .await?
        .run()
        .instrument(span)
        .await
}

/// The passwords the agent was given (from the cluster's Secrets).
struct Secrets {
    superuser: String,
    replication: String,
    app: Option<String>,
}

struct Agent {
    args: AgentArgs,
    ha: HaConfig,
    dcs: Dcs,
    pg: Postgres,
    /// The fencing invariant: watchdog, renew clock, fencing thread.
    fence: Fence,
    rest: Arc<RestContext>,
    peers: peers::PeerClient,
    secrets: Secrets,
    tags: crate::api::member::MemberTags,
    /// PostgreSQL's settings: parameters, pg_hba lines, synchronous_standby_names.
    conf: Reconfigure,
    bootstrap_roles: Vec<crate::api::cluster::RoleSpec>,
    /// `spec.bootstrap.recovery`: the bootstrap restores this instead of running initdb.
    recovery: Option<crate::api::backup::Recovery>,
    bootstrap_databases: Vec<crate::api::cluster::DatabaseSpec>,
    /// Counters for `/metrics` (lease renews, fencing), shared with the REST view.
    telemetry: Arc<metrics::Telemetry>,
    /// Events on the PostgresCluster (promotions, demotions, fencing).
    events: events::Events,
    /// What the running PostgreSQL streams from, as last configured.
    upstream: Upstream,
    /// Failed DCS reads, logged once per interval with a count.
    dcs_errors: crate::common::throttle::Throttle,
    /// When this cycle's failsafe round began (a confirmation counts from then).
    failsafe_asked: Option<Instant>,
    /// Members as last read from the DCS: the failsafe topology.
    known_members: Vec<(String, crate::api::member::MemberStatus)>,
    client: Client,
    commands: tokio::sync::mpsc::Receiver<rest::Command>,
    /// Fences this member's clients while `-rw` may still route to it (see `routing`).
    route_gate: routing::RouteGate,
    /// A primary handing the Lease over keeps its label until its successor has one.
    handover: routing::Handover,
    /// When a DCS read last failed: kube-proxy's watch may be backing off since.
    apiserver_away_at: Option<Instant>,
    /// Since when this replica's WAL receiver has not been streaming from the leader it follows.
    not_streaming_since: Option<Instant>,
    /// Slots of members whose pods are gone, and since when.
    slot_orphans: postgres::slots::Orphans,
    softdog: Option<tokio::process::Child>,
    /// A promotion signalled and not yet recorded (see `act::Agent::promote`).
    promotion: Option<act::Promotion>,
    /// A basebackup running beside the loop (`Action::CloneFrom`).
    cloning: Option<act::Cloning>,
    /// Since when this Lease holder's PostgreSQL has been down or not answering (see
    /// `HaConfig::primary_start_timeout`).
    primary_down_since: Option<Instant>,
    /// Maintenance mode as last read: kept while the apiserver cannot be read (Patroni keeps
    /// the cluster it last read), or a paused primary would be demoted by an apiserver restart.
    paused: bool,
    /// pgBackRest's stanza for this term as primary (`spec.backup`).
    stanza: backup::Stanza,
    /// Base backups run here, and the repository as last read.
    backups: backup::Runner,
    /// After a failed bootstrap: not before this does this member claim it again.
    bootstrap_retry_at: Option<Instant>,
    /// Failed bootstraps in a row (the wait before the next one doubles with each).
    bootstrap_failures: u32,
    /// Why the last bootstrap failed (published until one succeeds).
    bootstrap_error: Option<String>,
}

impl Agent {
    async fn run(mut self) -> Result<(), AgentError> {
        let watch = dcs::watch_lease(
            self.client.clone(),
            &self.args.namespace,
            &self.args.cluster,
        );
        self.dcs.use_sightings(watch.sightings.clone());
        let lease_changed = watch.holder_changed;
        // The fence deadline counts from when the last acknowledged renew was sent: ttl minus
        // the safety margin, so postgres is gone before any other member may take the Lease.
        self.fence.spawn_thread(
            self.ha.fence_after,
            self.args.data_dir.join("postmaster.pid"),
            self.telemetry.clone(),
            (self.events.clone(), self.args.name.clone()),
        )?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        loop {
            let started = Instant::now();
            self.softdog_step();
            let next = match self.cycle().await {
                Ok(next) => next,
                Err(AgentError::Halted(why)) => {
                    self.shutdown(false).await;
                    return Err(AgentError::Halted(why));
                }
                Err(e) => {
                    warn!(error = %e, "HA cycle failed");
                    self.ha.loop_wait
                }
            };
            self.scheduled_restart_step().await;
            let sleep = next.saturating_sub(started.elapsed());
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                Some(cmd) = self.commands.recv() => self.command(cmd).await,
                _ = lease_changed.notified() => {}
                _ = term.recv() => { info!("SIGTERM: shutting down"); self.shutdown(true).await; return Ok(()); }
                _ = int.recv() => { info!("SIGINT: shutting down"); self.shutdown(true).await; return Ok(()); }
            }
        }
    }

    /// One observe → decide → act → publish cycle; returns how long until the next one.
    async fn cycle(&mut self) -> Result<Duration, AgentError> {
        if let Some(wait) = self.clone_step().await {
            return Ok(wait);
        }
        let snap = match self.dcs.read().await {
            Ok(s) => Some(s),
            Err(e) => {
                if let Some(n) = self.dcs_errors.hit(Instant::now()) {
                    warn!(error = %e, failures = n, "cannot read the DCS");
                }
                self.dcs.forget_published();
                self.apiserver_away_at = Some(Instant::now());
                None
            }
        };
        if let Some(s) = &snap {
            self.dcs_errors.reset();
            self.paused = s.paused;
            let label_on = self.dcs.carries_primary_label();
            let successor = !s.labelled_primary.is_empty();
            if self
                .handover
                .observe(Instant::now(), label_on, successor, self.ha.ttl)
            {
                // From here the routing gate takes over: the label goes (if the successor did not
                // take it off already) and clients stay fenced until -rw no longer routes here.
                self.route_gate.label_removed(Instant::now());
                info!(
                    successor_labelled = successor,
                    label_on, "handover over: the primary role label goes"
                );
            }
        }
        self.telemetry.apiserver_reachable(snap.is_some());
        let running = self.pg.running();
        let data = self.pg.data_state().await?;
        let live = if running {
            match self.pg.live_state().await {
                Ok(l) => Some(l),
                Err(e) => {
                    warn!(error = %e, "postgres is running but does not answer");
                    None
                }
            }
        } else {
            None
        };
        // A replica following a leader whose WAL receiver does not stream: since when.
        let following_without_stream = self.upstream.member().is_some()
            && live.as_ref().is_some_and(|l| l.in_recovery && !l.streaming);
        self.not_streaming_since = if following_without_stream {
            Some(self.not_streaming_since.unwrap_or_else(Instant::now))
        } else {
            None
        };
        let local = LocalPostgres {
            data: data.clone(),
            running,
            in_recovery: live.as_ref().map(|l| l.in_recovery),
            timeline: live.as_ref().and_then(|l| l.timeline),
            lsn: live.as_ref().and_then(|l| l.lsn),
            following: self.upstream.member().map(str::to_string),
            promoting: running
                && self.promotion.as_ref().is_some_and(|p| !p.done)
                && live.as_ref().is_none_or(|l| l.in_recovery),
        };
        if let Some(s) = &snap {
            // Without a read the holder is unknown: the count goes on as it was.
            let holds = s.holder() == Some(self.args.name.as_str());
            let down = !running || live.as_ref().is_none();
            self.primary_down_since =
                (holds && down).then(|| self.primary_down_since.unwrap_or_else(Instant::now));
        }
        let racing = snap
            .as_ref()
            .is_some_and(|s| !matches!(s.lease, LeaseView::Held { expired: false, .. }))
            && local.in_recovery == Some(true);
        let peers = match (&snap, racing) {
            (Some(s), true) => self.peers.ask_all(&s.members, &self.args.name).await,
            _ => vec![],
        };
        let is_primary = live.as_ref().is_some_and(|l| !l.in_recovery);
        self.failsafe_asked = None;
        let failsafe_confirmed = match (&snap, self.ha.failsafe_mode && is_primary) {
            (None, true) => {
                self.failsafe_asked = Some(Instant::now());
                let token = self.rest.token.clone();
                Some(
                    self.peers
                        .confirm_failsafe(&self.known_members, &self.args.name, token.as_deref())
                        .await,
                )
            }
            _ => None,
        };
        if let Some(s) = &snap {
            self.known_members = s.members.clone();
        }
        if let Some(config) = snap.as_ref().and_then(|s| s.config.clone()) {
            self.apply_failsafe_mode(config.failsafe_mode).await;
            self.apply_dynamic_config(&config).await;
        }
        if let Some(s) = &snap
            && s.holder() == Some(self.args.name.as_str())
            && s.switchover_stale(jiff::Timestamp::now(), self.ha.loop_wait)
        {
            warn!(scheduled_at = ?s.switchover_scheduled_at, "found a stale scheduled switchover, cleaning up");
            if let Err(e) = self.dcs.clear_switchover().await {
                warn!(error = %e, "cannot clear the stale switchover");
            }
        }
        let failsafe_leader = {
            let v = self.rest.view.read().await;
            v.failsafe_ping
                .as_ref()
                .filter(|(_, at)| at.elapsed() < self.ha.ttl)
                .map(|(n, _)| n.clone())
        };
        self.ha.watchdog_blocks_promotion = self.fence.blocks_promotion();
        let mut obs = Observation {
            me: self.args.name.clone(),
            paused: self.paused,
            dcs: snap.as_ref().map(|s| s.view(jiff::Timestamp::now())),
            local,
            peers,
            renew_failed: false,
            lease_lost: false,
            since_renew: self.fence.since_renew(),
            failsafe_confirmed,
            failsafe_leader,
            not_streaming_for: self.not_streaming_since.map(|t| t.elapsed()),
            primary_start_for: self.primary_down_since.map(|t| t.elapsed()),
        };
        let before = events::Before {
            in_recovery: obs.local.in_recovery == Some(true),
            timeline: obs.local.timeline,
        };
        let decision = ha::decide(&obs, &self.ha);
        let (decision, done) = match self.act(&decision, snap.as_ref(), live.as_ref()).await {
            Ok(()) => (decision, true),
            Err(ActError::RenewFailed(e)) => {
                warn!(error = %e, "failed to renew the leader lease");
                obs.renew_failed = true;
                obs.lease_lost = matches!(e, dcs::DcsError::Conflict(_));
                obs.since_renew = self.fence.since_renew();
                let second = ha::decide(&obs, &self.ha);
                self.act(&second, snap.as_ref(), live.as_ref()).await?;
                (second, true)
            }
            Err(e) => {
                let e = AgentError::from(e);
                if let AgentError::Halted(_) = &e {
                    if let Some(n) = events::for_decision(&self.args.name, &decision, before, None)
                    {
                        self.events.report(n);
                    }
                    return Err(e);
                }
                warn!(action = ?decision.action, error = %e, "action failed");
                (decision, false)
            }
        };
        let fencing = metrics::fencing_reason(&decision.action, snap.is_some(), obs.renew_failed);
        if let Some(reason) = fencing {
            self.telemetry.fenced(reason);
        }
        if done && let Some(n) = events::for_decision(&self.args.name, &decision, before, fencing) {
            self.events.report(n);
        }
        info!(action = ?decision.action, "{}", decision.reason);
        if snap.is_some() {
            self.route_step().await;
        }
        self.publish(snap.as_ref(), &decision).await;

        let others_lease_expires_in = match &snap {
            Some(s) if s.holder() != Some(self.args.name.as_str()) && s.holder().is_some() => {
                Some(self.dcs.lease_expires_in())
            }
            _ => None,
        };
        Ok(steps::next_wait(
            self.ha.loop_wait,
            self.fence.is_primary(),
            snap.is_some(),
            obs.renew_failed,
            obs.local.promoting,
            &decision.action,
            others_lease_expires_in,
        ))
    }

    /// While a basebackup runs, a cycle only reads the DCS and publishes (the REST API, the
    /// liveness probe and the member annotation stay current: Patroni's "long action in
    /// progress"); returns the wait until the next one. Once it ended, its outcome is logged and
    /// the cycle goes on (`None`): the next decision starts the replica, or clones again.
    async fn clone_step(&mut self) -> Option<Duration> {
        let cloning = self.cloning.as_ref()?;
        if !cloning.task.is_finished() {
            let decision = Decision {
                action: Action::CloneFrom {
                    leader: cloning.leader.clone(),
                },
                reason: format!(
                    "creating a replica from leader {}: pg_basebackup in progress",
                    cloning.leader
                ),
            };
            let snap = self.dcs.read().await.ok();
            self.telemetry.apiserver_reachable(snap.is_some());
            info!(action = ?decision.action, "{}", decision.reason);
            self.publish(snap.as_ref(), &decision).await;
            return Some(self.ha.loop_wait);
        }
        let Cloning { leader, task } = self.cloning.take()?;
        match task.await {
            Ok(Ok(())) => {
                info!(leader, "created replica with pg_basebackup");
                self.events
                    .report(events::replica_created(&self.args.name, &leader));
            }
            Ok(Err(e)) => warn!(leader, error = %e, "pg_basebackup failed; deciding again"),
            Err(e) => {
                warn!(leader, error = %e, "the basebackup task ended abnormally; deciding again")
            }
        }
        None
    }

    /// Failsafe mode as the cluster's dynamic configuration says (no restart), when it says.
    async fn apply_failsafe_mode(&mut self, wanted: Option<bool>) {
        if let Some(on) = wanted
            && on != self.ha.failsafe_mode
        {
            info!(failsafe_mode = on, "failsafe mode changed");
            self.ha.failsafe_mode = on;
            self.rest.view.write().await.failsafe_mode = on;
        }
    }

    /// Publish the member annotation, the role label and the REST snapshot (`publish` decides
    /// what; this reads postgres and writes).
    async fn publish(&mut self, snap: Option<&Snapshot>, decision: &Decision) {
        let running = self.pg.running();
        let live = if running {
            self.pg.live_state().await.ok()
        } else {
            None
        };
        let data = self.pg.data_state().await.ok();
        // Only a primary archives, once its stanza exists (pgBackRest's stanza-create runs in
        // the background); a failed read leaves the field out until the next loop.
        let archiving_primary =
            self.args.wal_archiving && live.as_ref().is_some_and(|l| !l.in_recovery);
        let pg_wal = self.args.data_dir.join("pg_wal");
        let timeline = live.as_ref().and_then(|l| l.timeline);
        self.stanza.step(archiving_primary, Instant::now(), || {
            backup::spawn_stanza_create(pg_wal, timeline)
        });
        let archiver = match archiving_primary {
            true => self.pg.archiver().await.ok(),
            false => None,
        };
        let repository_ready = archiving_primary && self.stanza.ready();
        self.backup_step(snap, repository_ready).await;
        let repository = self.backups.repository.clone().filter(|_| repository_ready);
        let stanza_error = self
            .stanza
            .error()
            .filter(|_| archiving_primary)
            .map(str::to_string);
        let bootstrap_error = self.bootstrap_error.clone();
        let seen = publish::Seen {
            running,
            live: live.as_ref(),
            data: data.as_ref(),
            previous_state: self.rest.view.read().await.state,
            cloning: matches!(decision.action, Action::CloneFrom { .. }),
            // Without the apiserver a primary still counts as the leader while its fence clock
            // runs (no one else can have taken the Lease) or every member confirmed it.
            holds_lease: match snap {
                Some(s) => {
                    s.holder() == Some(self.args.name.as_str()) || self.dcs.acquired_since_read()
                }
                None => decision.action == Action::KeepPrimary || self.fence.is_primary(),
            },
            clients_fenced: self.conf.clients_fenced,
            archiver: archiver.as_ref(),
            repository: repository.as_ref(),
            stanza_error: stanza_error.as_deref(),
            bootstrap_error: bootstrap_error.as_deref(),
        };
        let identity = publish::Identity {
            address: &self.args.address,
            pg_port: self.args.pg_port,
            api_port: self.args.api_port,
            tags: &self.tags,
            config: self.conf.applied_config.clone(),
        };
        let status = publish::member_status(&identity, &seen);
        if snap.is_some() {
            if let Err(e) = self.dcs.publish_status(&status).await {
                warn!(error = %e, "cannot publish the member status");
            }
            let label = publish::label(&status, &seen);
            // A handover keeps the primary label until the successor has its own.
            if !self.handover.active()
                && let Err(e) = self.dcs.publish_role(label).await
            {
                warn!(error = %e, "cannot update the role label");
            }
            if let Some(s) = snap {
                let others = publish::stale_primary_labels(label, &s.labelled_primary);
                self.unlabel_former_primaries(others).await;
            }
        }
        let replication = if status.role == crate::api::member::MemberRole::Primary {
            self.pg.replication().await.unwrap_or_default()
        } else {
            vec![]
        };
        let pidfile = self.args.data_dir.join("postmaster.pid");
        self.telemetry.cycle(
            self.fence.is_armed(),
            running
                .then(|| metrics::postmaster_start_time(&pidfile))
                .flatten(),
            snap.is_none() && decision.action == Action::KeepPrimary,
        );
        let mut v = self.rest.view.write().await;
        publish::update_view(&mut v, &status, &seen, replication, snap, Instant::now());
    }

    /// Base backups on a primary whose stanza is ready (`ready`): collect a finished run, start
    /// or abort as [`backup::plan_backup`] says, write results, refresh the repository's list.
    /// Never waits for pgBackRest; a failed write is tried again next loop.
    async fn backup_step(&mut self, snap: Option<&Snapshot>, ready: bool) {
        let me = self.args.name.clone();
        let now = || jiff::Timestamp::now().to_string();
        if let Some(done) = self.backups.collect(&me, now()) {
            match &done.error {
                None => info!(backup = %done.name, label = ?done.label, "base backup completed"),
                Some(e) => warn!(backup = %done.name, error = %e, "base backup failed"),
            }
            self.backups.unwritten = Some(done);
        }
        if let Some(result) = self.backups.unwritten.clone() {
            // Over our own `running` only: a newer request's result stays.
            let name = result.name.clone();
            match self
                .dcs
                .write_backup_result(&result, |cur| cur.is_none_or(|c| c.name == name))
                .await
            {
                Ok(_) => self.backups.unwritten = None,
                Err(e) => {
                    warn!(backup = %name, error = %e, "cannot record the backup's result; retrying")
                }
            }
        }
        if let Some(snap) = snap {
            let (request, result) = snap.backup_keys(&self.args.cluster);
            let step = backup::plan_backup(
                request.as_ref(),
                result.as_ref(),
                self.backups.running(),
                ready,
            );
            match step {
                backup::BackupStep::Nothing => {}
                backup::BackupStep::Start(req) => {
                    let running = BackupResult {
                        name: req.name.clone(),
                        phase: BackupResult::RUNNING.into(),
                        member: me.clone(),
                        started: now(),
                        finished: None,
                        label: None,
                        error: None,
                    };
                    let name = req.name.clone();
                    match self
                        .dcs
                        .write_backup_result(&running, |cur| cur.is_none_or(|c| c.name != name))
                        .await
                    {
                        Ok(true) => {
                            info!(backup = %req.name, r#type = %req.type_, "starting a base backup");
                            self.backups
                                .start(req, running.started, backup::spawn_backup);
                        }
                        Ok(false) => {}
                        Err(e) => {
                            warn!(backup = %req.name, error = %e, "cannot record the backup's start; not starting it")
                        }
                    }
                }
                backup::BackupStep::Abort => {
                    warn!("no longer the primary: killing the running base backup");
                    self.backups.abort(&me, now());
                }
                backup::BackupStep::Orphaned { member } => {
                    if let Some(mut r) = result.filter(|r| !r.finished()) {
                        warn!(backup = %r.name, member = %member, "a base backup was interrupted: its member stopped being the primary or its agent restarted");
                        r.phase = BackupResult::FAILED.into();
                        r.finished = Some(now());
                        r.error = Some(format!(
                            "interrupted: {member} stopped being the primary or its agent restarted during the backup"
                        ));
                        let name = r.name.clone();
                        if let Err(e) = self
                            .dcs
                            .write_backup_result(&r, |cur| {
                                cur.is_some_and(|c| c.name == name && !c.finished())
                            })
                            .await
                        {
                            warn!(backup = %name, error = %e, "cannot record the interrupted backup; retrying");
                        }
                    }
                }
            }
        } else if !ready && self.backups.running().is_some() {
            // Demoted without the apiserver: stop anyway, report when it answers.
            self.backups.abort(&me, now());
        }
        self.backups.refresh_info(ready, Instant::now(), || {
            tokio::spawn(backup::repository_info())
        });
    }

    /// Clean shutdown: a primary checkpoints, stops, then releases the lease so a replica can
    /// take over at once instead of waiting out the ttl.
    /// The softdog is what fences a frozen agent: if it died (killed, crashed), start another
    /// at once. It starts disarmed; the next acknowledged renew arms it again, so a primary is
    /// unguarded against a freeze for at most one loop.
    fn softdog_step(&mut self) {
        let Some(child) = self.softdog.as_mut() else {
            return;
        };
        let Ok(Some(status)) = child.try_wait() else {
            return;
        };
        warn!(%status, "the softdog exited; starting it again");
        match start::spawn_softdog(
            &self.args.run_dir.join("watchdog"),
            &self.args.data_dir.join("postmaster.pid"),
            self.args.watchdog_timeout(),
        ) {
            Ok(child) => self.softdog = Some(child),
            Err(e) => error!(error = %e, "cannot start the softdog again; trying next loop"),
        }
    }

    /// Stop a basebackup running beside the loop, if one runs: its pg_basebackup dies with the
    /// task (kill_on_drop), and the half-filled directory is recognised as unfinished and
    /// cloned again from empty.
    async fn abort_clone(&mut self) {
        if let Some(c) = self.cloning.take() {
            c.task.abort();
            let _ = c.task.await;
        }
    }

    /// Patroni's `while_not_sync_standby`: a synchronous standby about to stop (a drain, a
    /// rolling restart) first tags itself `nosync` and waits up to 2 x loop_wait for the primary
    /// to name another standby, so commits do not wait on a standby that is going away (they
    /// would stall until the primary's next loop). A standby counts as synchronous when the
    /// `sync` key names it or when the primary's PostgreSQL already does (it is named in
    /// `synchronous_standby_names` a loop before the key: Patroni's known window, seen in a
    /// drain). A hint only: any failure stops at once.
    async fn leave_synchronous_set(&mut self) {
        if self.ha.synchronous_mode == SynchronousMode::Off || self.tags.nosync {
            return;
        }
        let me = self.args.name.clone();
        let Ok(snap) = self.dcs.read().await else {
            return;
        };
        if !self.synchronous_on(&snap).await {
            return;
        }
        let Some(mut status) = snap
            .members
            .iter()
            .find(|(n, _)| *n == me)
            .map(|(_, s)| s.clone())
        else {
            return;
        };
        status.tags.nosync = true;
        self.tags.nosync = true;
        if let Err(e) = self.dcs.publish_status(&status).await {
            warn!(error = %e, "cannot tag this member nosync; stopping as a synchronous standby");
            return;
        }
        info!("stopping: waiting for the primary to choose another synchronous standby");
        let deadline = Instant::now() + self.ha.loop_wait * 2;
        while Instant::now() < deadline {
            tokio::time::sleep(LEAVE_SYNC_POLL).await;
            match self.dcs.read().await {
                Ok(s) if !self.synchronous_on(&s).await => {
                    info!(now = ?s.sync.sync_standby, "no longer a synchronous standby");
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "cannot read the DCS; stopping as a synchronous standby");
                    return;
                }
            }
        }
        warn!("the primary kept this member a synchronous standby; stopping anyway");
    }

    /// Whether this member is a synchronous standby: named in the `sync` key, or counted `sync`
    /// by the leader's PostgreSQL (asked over its REST API; no answer counts as not).
    async fn synchronous_on(&self, snap: &Snapshot) -> bool {
        let me = self.args.name.as_str();
        if snap.sync.sync_standby.iter().any(|s| s == me) {
            return true;
        }
        let Some(leader) = snap
            .holder()
            .and_then(|h| snap.members.iter().find(|(n, _)| n == h))
        else {
            return false;
        };
        matches!(
            self.peers.sync_state_on(&leader.1, me).await.as_deref(),
            Some("sync" | "quorum")
        )
    }

    async fn shutdown(&mut self, release: bool) {
        self.abort_clone().await;
        let was_primary = self.fence.is_primary();
        if !was_primary {
            self.leave_synchronous_set().await;
        }
        self.fence.leaving();
        if was_primary {
            let _ = self.dcs.publish_role(None).await;
            // A checkpoint first makes the shutdown checkpoint short; bounded, as the watchdog
            // is armed and unfed until the safe point below.
            let _ = tokio::time::timeout(PRE_STOP_CHECKPOINT, self.pg.checkpoint()).await;
        }
        let fence = &mut self.fence;
        if let Err(e) = self.pg.stop_with(StopMode::Fast, || fence.stopped()).await {
            warn!(error = %e, "stopping postgres");
        }
        self.fence.stopped();
        if release && was_primary {
            let optime = self.pg.checkpoint_location().await;
            match self.dcs.release(optime).await {
                Ok(()) => info!("released the leader lease"),
                Err(e) => {
                    warn!(error = %e, "cannot release the leader lease; replicas will wait out the ttl")
                }
            }
        }
        if let Some(mut child) = self.softdog.take() {
            let _ = child.start_kill();
        }
    }
}
