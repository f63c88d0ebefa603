//! `pgwarden agent`: supervises PostgreSQL in one pod (or, in the integration tests, as a plain
//! process on its own address) and keeps it in the role the leader Lease says. One loop, Patroni's
//! shape: observe (DCS, local postgres, peers when racing) → `ha::decide` (pure) → act → publish
//! (pod annotation, role label, REST snapshot). An independent fencing task kills postgres when a
//! primary has not renewed for `retryTimeout`, even if the loop itself is stuck in I/O.

pub mod config;
pub mod dcs;
pub mod events;
pub mod ha;
pub mod metrics;
pub mod peers;
pub mod postgres;
pub mod rest;
pub mod softdog;
pub mod watchdog;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use kube::Client;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Mutex, RwLock};
use tracing::{Instrument, error, info, info_span, warn};

use crate::api::cluster::{SynchronousMode, WatchdogMode};
use crate::api::member::{
    MemberRole, MemberState, MemberStatus, MemberTags, api_url, conn_url, url_host_port,
};
use crate::api::names::{ROLE_PRIMARY, ROLE_REPLICA};
use config::{AgentArgs, ConfigError, read_secret};
use dcs::{Dcs, DcsError, HistoryEntry, Snapshot};
use ha::{
    Action, DataDir, DcsView, Decision, HaConfig, LeaseView, LocalPostgres, Observation, StartAs,
    StopMode,
};
use postgres::conf::{ServerSettings, Upstream, render_passfile, slot_name};

use crate::api::state::DynamicConfig;
use postgres::{LiveState, PgError, Postgres};
use rest::{RestContext, RestView};
use watchdog::{Device, Watchdog};

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
    #[error("{0}")]
    Action(String),
}

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

async fn kube_client(args: &AgentArgs) -> Result<Client, AgentError> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| AgentError::Kubeconfig(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| AgentError::Kubeconfig(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| AgentError::Kubeconfig(e.to_string()))?,
    };
    Ok(Client::try_from(config)?)
}

struct Agent {
    args: AgentArgs,
    ha: HaConfig,
    dcs: Dcs,
    pg: Postgres,
    watchdog: Watchdog,
    rest: Arc<RestContext>,
    peers: peers::PeerClient,
    passfile: PathBuf,
    superuser_password: String,
    replication_password: String,
    app_password: Option<String>,
    /// Parameters from the flags; the operator's dynamic `config` key overrides them.
    base_parameters: BTreeMap<String, String>,
    /// What postgres runs with now: the flags' parameters overlaid with the dynamic config.
    parameters: BTreeMap<String, String>,
    /// Extra pg_hba.conf lines from the dynamic config.
    hba_extra: Vec<String>,
    /// Fingerprint of the dynamic configuration taken up (published in the member status).
    applied_config: Option<String>,
    /// A configuration reloaded but not yet published, and when: `pending_restart` is read
    /// from PostgreSQL before the reload is processed, so the fingerprint waits for a later
    /// cycle's reading.
    reloaded_config: Option<(String, Instant)>,
    tags: MemberTags,
    bootstrap_roles: Vec<crate::api::cluster::RoleSpec>,
    bootstrap_databases: Vec<crate::api::cluster::DatabaseSpec>,
    /// When this primary last renewed the lease; the fencing task reads it.
    last_renew: Arc<StdMutex<Option<Instant>>>,
    /// Counters for `/metrics` (lease renews, fencing), shared with the REST view.
    telemetry: Arc<metrics::Telemetry>,
    /// Events on the PostgresCluster (promotions, demotions, fencing).
    events: events::Events,
    following: Option<Option<String>>,
    /// Members as last read from the DCS: the failsafe topology.
    known_members: Vec<(String, MemberStatus)>,
    client: Client,
    commands: tokio::sync::mpsc::Receiver<rest::Command>,
    /// Slots of members whose pods are gone, and since when (dropped after a grace period, so
    /// a pod being recreated keeps its slot).
    slot_orphans: std::collections::HashMap<String, Instant>,
    /// What this primary last wrote into synchronous_standby_names.
    synchronous_standby_names: Option<String>,
    softdog: Option<tokio::process::Child>,
}

impl Agent {
    async fn start(args: AgentArgs) -> Result<Self, AgentError> {
        let client = kube_client(&args).await?;
        let superuser_password = read_secret(&args.superuser_password_file)?;
        let replication_password = read_secret(&args.replication_password_file)?;
        let app_password = args
            .app_password_file
            .as_deref()
            .map(read_secret)
            .transpose()?;
        let token = args
            .api_token_file
            .as_deref()
            .map(read_secret)
            .transpose()?;
        let parameters: BTreeMap<String, String> =
            serde_json::from_str(&args.parameters).map_err(ConfigError::Parameters)?;
        let tags = args.tags()?;
        let (bootstrap_roles, bootstrap_databases) = args.bootstrap_objects()?;

        std::fs::create_dir_all(&args.run_dir)?;
        postgres::set_mode(&args.run_dir, 0o700)?;
        let passfile = args.run_dir.join("pgpass");
        std::fs::write(
            &passfile,
            render_passfile(&[
                ("postgres", &superuser_password),
                (&args.replication_user, &replication_password),
            ]),
        )?;
        postgres::set_mode(&passfile, 0o600)?;

        let mode: WatchdogMode = args.watchdog_mode.into();
        let (device, softdog) = match (&args.watchdog_device, mode) {
            (Some(dev), _) => (Device::Host(dev.clone()), None),
            (None, WatchdogMode::Off) => (Device::Softdog(args.run_dir.join("watchdog")), None),
            (None, _) => {
                let fifo = args.run_dir.join("watchdog");
                let child = spawn_softdog(
                    &fifo,
                    &args.data_dir.join("postmaster.pid"),
                    args.watchdog_timeout(),
                )?;
                (Device::Softdog(fifo), Some(child))
            }
        };
        let watchdog = Watchdog::new(mode, device, args.watchdog_timeout());

        let ha = HaConfig {
            ttl: args.ttl(),
            loop_wait: args.loop_wait(),
            retry_timeout: args.retry_timeout(),
            maximum_lag_on_failover: args.maximum_lag_on_failover,
            synchronous_mode: args.synchronous_mode.into(),
            nofailover: tags.nofailover,
            failsafe_mode: args.failsafe_mode,
            watchdog_blocks_promotion: false,
        };
        let client_for_watch = client.clone();
        let events = events::Events::spawn(
            client.clone(),
            &args.namespace,
            &args.cluster,
            args.cluster_uid.as_deref(),
            &args.name,
        );
        let dcs = Dcs::new(
            client.clone(),
            &args.namespace,
            &args.cluster,
            &args.name,
            args.ttl(),
            args.retry_timeout(),
        );
        let rest_dcs = Dcs::new(
            client,
            &args.namespace,
            &args.cluster,
            &args.name,
            args.ttl(),
            args.retry_timeout(),
        );
        let mut view = RestView::new(
            &args.cluster,
            &args.name,
            args.ttl(),
            args.loop_wait(),
            args.maximum_lag_on_failover,
        );
        view.tags = tags.clone();
        view.failsafe_mode = args.failsafe_mode;
        let last_renew = Arc::new(StdMutex::new(None));
        let telemetry = Arc::new(metrics::Telemetry::new(last_renew.clone(), mode));
        view.telemetry = telemetry.clone();
        let (commands, command_rx) = tokio::sync::mpsc::channel(4);
        let rest = Arc::new(RestContext {
            view: RwLock::new(view),
            dcs: Mutex::new(rest_dcs),
            token,
            commands,
            config: serde_json::json!({
                "ttl": args.ttl,
                "loop_wait": args.loop_wait,
                "retry_timeout": args.retry_timeout,
                "maximum_lag_on_failover": args.maximum_lag_on_failover,
                "synchronous_mode": format!("{:?}", args.synchronous_mode).to_lowercase(),
                "watchdog": {"mode": format!("{:?}", args.watchdog_mode).to_lowercase(), "safety_margin": args.watchdog_safety_margin},
                "postgresql": {"parameters": parameters.clone()},
            }),
            scheduled_restart: Default::default(),
        });
        let listener =
            tokio::net::TcpListener::bind((args.address.as_str(), args.api_port)).await?;
        let app = rest::router(rest.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                error!(error = %e, "REST API server stopped");
            }
        });
        info!(address = %args.address, api_port = args.api_port, "REST API listening");

        let pg = Postgres::new(
            args.bin_dir.clone(),
            args.data_dir.clone(),
            args.run_dir.clone(),
            args.pg_port,
        );
        Ok(Self {
            ha,
            dcs,
            pg,
            watchdog,
            rest,
            peers: peers::PeerClient::new(Duration::from_secs(2)),
            passfile,
            superuser_password,
            replication_password,
            app_password,
            base_parameters: parameters.clone(),
            parameters,
            hba_extra: vec![],
            applied_config: None,
            reloaded_config: None,
            tags,
            bootstrap_roles,
            bootstrap_databases,
            last_renew,
            telemetry,
            events,
            following: None,
            known_members: vec![],
            slot_orphans: Default::default(),
            client: client_for_watch,
            commands: command_rx,
            synchronous_standby_names: None,
            softdog,
            args,
        })
    }

    async fn run(mut self) -> Result<(), AgentError> {
        let lease_changed = dcs::watch_lease_holder(
            self.client.clone(),
            &self.args.namespace,
            &self.args.cluster,
        );
        // Failsafe mode needs time to notice the apiserver is gone (a read times out after
        // retryTimeout) and to ask every member; its fence is the watchdog's deadline instead,
        // still short of ttl, and members that confirmed it do not race for ttl after.
        let fence_after = if self.ha.failsafe_mode {
            self.args.watchdog_timeout()
        } else {
            self.ha.retry_timeout
        };
        spawn_fencing_task(
            self.last_renew.clone(),
            fence_after,
            self.args.data_dir.join("postmaster.pid"),
            self.telemetry.clone(),
            (self.events.clone(), self.args.name.clone()),
        )?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        loop {
            let started = Instant::now();
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

    /// Stop postgres cleanly and run a cycle, which starts it again in the role the lease says.
    async fn restart_postgres(&mut self) -> (u16, String) {
        let primary = self.last_renew.lock().map(|g| g.is_some()).unwrap_or(false);
        self.set_primary(None);
        let stopped = self.pg.stop(StopMode::Fast).await;
        self.following = None;
        let started = match stopped {
            Ok(()) => self.cycle().await.map(|_| ()),
            Err(e) => Err(e.into()),
        };
        if primary {
            info!("restarted the primary");
        }
        match (started, self.pg.running()) {
            (Ok(()), true) => (200, "restarted successfully".into()),
            (Err(e), _) => (503, format!("restart failed: {e}")),
            (Ok(()), false) => (503, "restart failed".into()),
        }
    }

    /// Run a restart scheduled with `POST /restart {"schedule": ...}` once its time has come and
    /// its conditions (role, pending restart) still hold, as Patroni does.
    async fn scheduled_restart_step(&mut self) {
        let due = {
            let Ok(mut slot) = self.rest.scheduled_restart.lock() else {
                return;
            };
            match slot.as_ref() {
                Some(r) if r.at <= jiff::Timestamp::now() => slot.take(),
                _ => None,
            }
        };
        let Some(r) = due else { return };
        let (role_ok, pending_ok) = {
            let v = self.rest.view.read().await;
            (
                r.role.is_none_or(|want| want == v.role),
                !r.restart_pending || v.pending_restart,
            )
        };
        if !role_ok || !pending_ok {
            info!(at = %r.at, "skipping the scheduled restart: its conditions no longer hold");
            return;
        }
        let (code, message) = self.restart_postgres().await;
        info!(at = %r.at, code, message, "scheduled restart");
    }

    /// A write request from the REST API.
    async fn command(&mut self, cmd: rest::Command) {
        match cmd {
            rest::Command::Reload { reply } => {
                let r = self.reload().await;
                let _ = reply.send(match r {
                    Ok(()) => (202, "Reload scheduled".into()),
                    Err(e) => (503, format!("reload failed: {e}")),
                });
            }
            rest::Command::Restart { reply } => {
                let answer = self.restart_postgres().await;
                let _ = reply.send(answer);
            }
            rest::Command::Reinitialize { reply } => {
                let _ = self.pg.stop(StopMode::Immediate).await;
                self.following = None;
                let r = self.pg.wipe().await;
                {
                    let mut v = self.rest.view.write().await;
                    v.state = MemberState::Stopped;
                    v.role = MemberRole::Uninitialized;
                    v.streaming = false;
                }
                let _ = reply.send(match r {
                    Ok(()) => (200, "reinitialize started".into()),
                    Err(e) => (503, format!("reinitialize failed: {e}")),
                });
            }
        }
    }

    async fn reload(&mut self) -> Result<(), AgentError> {
        let upstream = match &self.following {
            Some(Some(leader)) => {
                let snap = self.dcs.read().await.ok();
                self.upstream_for(snap.as_ref(), leader)
            }
            _ => None,
        };
        let settings = self.settings(upstream);
        self.pg.reconfigure(&settings).await?;
        Ok(())
    }

    /// One observe → decide → act → publish cycle; returns how long until the next one.
    async fn cycle(&mut self) -> Result<Duration, AgentError> {
        let snap = match self.dcs.read().await {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "cannot read the DCS");
                self.dcs.forget_published();
                None
            }
        };
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
        let local = LocalPostgres {
            data: data.clone(),
            running,
            in_recovery: live.as_ref().map(|l| l.in_recovery),
            timeline: live.as_ref().and_then(|l| l.timeline),
            lsn: live.as_ref().and_then(|l| l.lsn),
            following: self.following.clone().flatten(),
        };
        let racing = snap
            .as_ref()
            .is_some_and(|s| !matches!(s.lease, LeaseView::Held { expired: false, .. }))
            && local.in_recovery == Some(true);
        let peers = match (&snap, racing) {
            (Some(s), true) => self.peers.ask_all(&s.members, &self.args.name).await,
            _ => vec![],
        };
        let is_primary = live.as_ref().is_some_and(|l| !l.in_recovery);
        let failsafe_confirmed = match (&snap, self.ha.failsafe_mode && is_primary) {
            (None, true) => {
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
            self.apply_dynamic_config(&config).await;
        }
        if let Some(s) = &snap
            && s.holder() == Some(self.args.name.as_str())
            && switchover_stale(s, jiff::Timestamp::now(), self.ha.loop_wait)
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
        self.ha.watchdog_blocks_promotion =
            self.watchdog.mode() == WatchdogMode::Required && !self.watchdog.is_available();
        let mut obs = Observation {
            me: self.args.name.clone(),
            paused: snap.as_ref().is_some_and(|s| s.paused),
            dcs: snap.as_ref().map(dcs_view),
            local,
            peers,
            renew_failed: false,
            failsafe_confirmed,
            failsafe_leader,
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
                let second = ha::decide(&obs, &self.ha);
                self.act(&second, snap.as_ref(), live.as_ref())
                    .await
                    .map_err(ActError::into_agent)?;
                (second, true)
            }
            Err(e) => {
                let e = e.into_agent();
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
        self.publish(snap.as_ref(), &decision).await;

        // A follower wakes as soon as the lease could have expired, not a whole loop later.
        let next = match &snap {
            Some(s) if s.holder() != Some(self.args.name.as_str()) && s.holder().is_some() => self
                .ha
                .loop_wait
                .min(self.dcs.lease_expires_in() + Duration::from_millis(100)),
            _ => self.ha.loop_wait,
        };
        Ok(next.max(Duration::from_millis(200)))
    }

    fn settings(&self, upstream: Option<Upstream>) -> ServerSettings {
        ServerSettings {
            listen_address: self.args.address.clone(),
            port: self.args.pg_port,
            socket_dir: self.args.run_dir.to_string_lossy().into_owned(),
            passfile: self.passfile.to_string_lossy().into_owned(),
            replication_user: self.args.replication_user.clone(),
            upstream,
            synchronous_standby_names: self.synchronous_standby_names.clone(),
            parameters: self.parameters.clone(),
            pg_hba: self.hba_extra.clone(),
            initdb: postgres::conf::InitdbOptions {
                encoding: self.args.initdb_encoding.clone(),
                locale: self.args.initdb_locale.clone(),
                data_checksums: self.args.initdb_data_checksums,
            },
        }
    }

    /// Drop the slots of members whose pods have been gone for 2 x ttl (a scaled-down replica),
    /// as Patroni drops the slots of members that left, so they do not hold WAL forever.
    async fn drop_orphan_slots(&mut self, snap: &Snapshot) {
        let present: Vec<String> = snap.pod_names.iter().map(|p| slot_name(p)).collect();
        let candidates = match self.pg.member_slots(&self.args.cluster).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot list replication slots");
                return;
            }
        };
        let grace = self.ha.ttl * 2;
        self.slot_orphans
            .retain(|s, _| candidates.contains(s) && !present.contains(s));
        for slot in candidates.into_iter().filter(|s| !present.contains(s)) {
            let since = *self
                .slot_orphans
                .entry(slot.clone())
                .or_insert_with(Instant::now);
            if since.elapsed() < grace {
                continue;
            }
            match self.pg.drop_slot(&slot).await {
                Ok(()) => {
                    info!(slot, "dropped the replication slot of a member that left");
                    self.slot_orphans.remove(&slot);
                }
                Err(e) => warn!(slot, error = %e, "cannot drop a replication slot"),
            }
        }
    }

    /// Take up the operator's dynamic configuration: new parameters and pg_hba lines are written
    /// and reloaded at once; restart-only parameters then show as `pending_restart`.
    async fn apply_dynamic_config(&mut self, config: &DynamicConfig) {
        let mut parameters = self.base_parameters.clone();
        parameters.extend(config.parameters.clone());
        let fingerprint = config.fingerprint();
        if parameters == self.parameters && config.pg_hba == self.hba_extra {
            // This cycle's reading of PostgreSQL (taken before this call) is at least a second
            // younger than the reload: its pending_restart describes the new configuration.
            match &self.reloaded_config {
                Some((fp, at)) if *fp == fingerprint && at.elapsed() < Duration::from_secs(1) => {}
                _ => {
                    self.reloaded_config = None;
                    self.applied_config = Some(fingerprint);
                }
            }
            return;
        }
        self.parameters = parameters;
        self.hba_extra = config.pg_hba.clone();
        info!(parameters = ?self.parameters, pg_hba = ?self.hba_extra, "dynamic configuration changed");
        if self.pg.running()
            && let Err(e) = self.reload().await
        {
            warn!(error = %e, "cannot apply the dynamic configuration");
            return;
        }
        if self.pg.running() {
            self.reloaded_config = Some((fingerprint, Instant::now()));
        } else {
            // Not running: it starts with this configuration.
            self.applied_config = Some(fingerprint);
        }
    }

    fn upstream_for(&self, snap: Option<&Snapshot>, leader: &str) -> Option<Upstream> {
        let status = snap?
            .members
            .iter()
            .find(|(n, _)| n == leader)
            .map(|(_, s)| s)?;
        let (host, port) = url_host_port(&status.conn_url)?;
        Some(Upstream {
            host,
            port,
            application_name: self.args.name.clone(),
            slot: slot_name(&self.args.name),
        })
    }

    fn set_primary(&self, renewed: Option<Instant>) {
        if let Ok(mut g) = self.last_renew.lock() {
            *g = renewed;
        }
    }

    async fn act(
        &mut self,
        decision: &Decision,
        snap: Option<&Snapshot>,
        live: Option<&LiveState>,
    ) -> Result<(), ActError> {
        let lsn = live.and_then(|l| l.lsn);
        match &decision.action {
            Action::Nothing => {
                if snap.is_some_and(|s| s.paused) {
                    self.watchdog.disable();
                    self.set_primary(None);
                }
            }
            Action::RenewLease => {
                let lease = snap.and_then(|s| s.lease_object.as_ref());
                let started = Instant::now();
                let renewed = self.dcs.renew(lease, lsn).await;
                self.telemetry
                    .lease_renewed(started.elapsed(), renewed.is_ok());
                renewed.map_err(ActError::RenewFailed)?;
                // The watchdog is fed only after a successful renew.
                if let Err(e) = self.watchdog.activate() {
                    warn!(error = %e, "watchdog keepalive failed");
                }
                self.set_primary(Some(Instant::now()));
                let slots: Vec<String> = snap
                    .map(|s| {
                        s.members
                            .iter()
                            .filter(|(n, _)| *n != self.args.name)
                            .map(|(n, _)| slot_name(n))
                            .collect()
                    })
                    .unwrap_or_default();
                if live.is_some_and(|l| !l.in_recovery) {
                    if let Err(e) = self.pg.ensure_slots(&slots).await {
                        warn!(error = %e, "cannot create replication slots");
                    }
                    if let Some(s) = snap {
                        self.drop_orphan_slots(s).await;
                    }
                    if let Some(s) = snap
                        && let Err(e) = self.synchronous_step(s).await
                    {
                        warn!(error = %e, "cannot maintain the synchronous standby");
                    }
                }
            }
            Action::AcquireLease => {
                self.arm_watchdog()?;
                if let Err(e) = self.dcs.acquire(lsn).await {
                    self.watchdog.disable();
                    return Err(ActError::Dcs(e));
                }
                self.set_primary(Some(Instant::now()));
                if live.is_some_and(|l| l.in_recovery) {
                    self.promote(snap, live).await?;
                }
            }
            Action::Promote => {
                self.arm_watchdog()?;
                self.set_primary(Some(Instant::now()));
                self.promote(snap, live).await?;
            }
            Action::Demote { mode, release } => {
                // Routing first: the role label leaves before postgres stops answering.
                self.set_primary(None);
                if let Err(e) = self.dcs.publish_role(None).await {
                    warn!(error = %e, "cannot remove the role label");
                }
                self.pg.stop(*mode).await?;
                self.watchdog.disable();
                self.following = None;
                self.synchronous_standby_names = None;
                if *release {
                    let optime = self.checkpoint_lsn().await;
                    self.dcs.release(optime).await.map_err(ActError::Dcs)?;
                }
            }
            Action::StartPostgres(StartAs::Primary) => {
                // Only with a lease renewed just now: never start a primary on a stale lease.
                let lease = snap.and_then(|s| s.lease_object.as_ref());
                let started = Instant::now();
                let renewed = self.dcs.renew(lease, None).await;
                self.telemetry
                    .lease_renewed(started.elapsed(), renewed.is_ok());
                renewed.map_err(ActError::RenewFailed)?;
                self.arm_watchdog()?;
                self.set_primary(Some(Instant::now()));
                self.pg.start(&self.settings(None), false).await?;
                self.following = Some(None);
            }
            Action::StartPostgres(StartAs::Replica { leader, rewind }) => {
                let upstream = leader.as_deref().and_then(|l| self.upstream_for(snap, l));
                if *rewind
                    && let Some(u) = &upstream
                    && let Err(e) = self.pg.rewind(&u.host, u.port, &self.passfile).await
                {
                    // Rewind impossible: start over from a fresh basebackup next cycle.
                    warn!(error = %e, "pg_rewind failed; reinitialising from the leader");
                    self.events.report(events::rewind_failed(
                        &self.args.name,
                        leader.as_deref().unwrap_or("the leader"),
                        &e.to_string(),
                    ));
                    self.pg.wipe().await?;
                    return Ok(());
                }
                if *rewind && let Some(u) = &upstream {
                    if let Err(e) =
                        Postgres::checkpoint_source(&u.host, u.port, &self.superuser_password).await
                    {
                        warn!(error = %e, "cannot CHECKPOINT the leader after pg_rewind; this replica may wait for its next write to become consistent");
                    }
                    self.events.report(events::rewound(
                        &self.args.name,
                        leader.as_deref().unwrap_or("the leader"),
                    ));
                }
                self.watchdog.disable();
                self.set_primary(None);
                self.synchronous_standby_names = None;
                self.pg.start(&self.settings(upstream), true).await?;
                self.following = Some(leader.clone());
            }
            Action::Follow { leader } => {
                self.set_primary(None);
                if self.following.as_ref() != Some(leader) {
                    let upstream = leader.as_deref().and_then(|l| self.upstream_for(snap, l));
                    if leader.is_some() && upstream.is_none() {
                        return Ok(());
                    }
                    let settings = self.settings(upstream);
                    self.pg.reconfigure(&settings).await?;
                    info!(leader = ?leader, "now following");
                    self.following = Some(leader.clone());
                }
            }
            Action::ClaimInitialize => {
                let won = self.dcs.claim_initialize().await.map_err(ActError::Dcs)?;
                info!(won, "raced for the initialize key");
            }
            Action::Bootstrap => {
                if let Err(e) = self.bootstrap().await {
                    error!(error = %e, "bootstrap failed; giving up the initialize key");
                    let _ = self.pg.stop(StopMode::Immediate).await;
                    self.watchdog.disable();
                    self.set_primary(None);
                    let _ = self.pg.wipe().await;
                    let _ = self.dcs.release(None).await;
                    let _ = self.dcs.cancel_initialize().await;
                    return Err(e);
                }
            }
            Action::CloneFrom { leader } => {
                let Some(u) = self.upstream_for(snap, leader) else {
                    return Ok(());
                };
                self.rest.view.write().await.state = MemberState::CreatingReplica;
                self.pg
                    .basebackup(&u.host, u.port, &self.args.replication_user, &self.passfile)
                    .await?;
                info!(leader, "created replica with pg_basebackup");
            }
            Action::RecordInitialize { sysid } => {
                self.dcs
                    .record_initialize(sysid)
                    .await
                    .map_err(ActError::Dcs)?;
            }
            Action::KeepPrimary => {
                // Confirmed by every member this cycle: as good as a renew for the fences.
                if let Err(e) = self.watchdog.keepalive() {
                    warn!(error = %e, "watchdog keepalive failed");
                }
                self.set_primary(Some(Instant::now()));
            }
            Action::Halt => {
                let _ = self.pg.stop(StopMode::Immediate).await;
                return Err(ActError::Halt(decision.reason.clone()));
            }
        }
        Ok(())
    }

    fn arm_watchdog(&mut self) -> Result<(), ActError> {
        match self.watchdog.activate() {
            Ok(()) => Ok(()),
            Err(e) if self.watchdog.mode() == WatchdogMode::Required => {
                Err(ActError::Watchdog(e.to_string()))
            }
            Err(e) => {
                warn!(error = %e, "watchdog unavailable; continuing without it (mode automatic)");
                Ok(())
            }
        }
    }

    async fn promote(
        &mut self,
        snap: Option<&Snapshot>,
        live: Option<&LiveState>,
    ) -> Result<(), ActError> {
        let old_tl = live.and_then(|l| l.timeline).unwrap_or(1);
        let switch_lsn = live.and_then(|l| l.lsn).unwrap_or(0);
        if let Err(e) = self.dcs.publish_role(None).await {
            warn!(error = %e, "cannot update the role label");
        }
        if self.ha.synchronous_mode == SynchronousMode::Strict {
            // Strict: not one commit may be acknowledged asynchronously, even right after promotion.
            self.set_synchronous_standby_names(Some("*".into())).await?;
        }
        self.pg.promote().await?;
        self.following = Some(None);
        info!(timeline = old_tl + 1, "promoted");
        let reason = match snap.and_then(|s| s.switchover.as_ref()) {
            Some(_) => "switchover",
            None => "no recovery target specified",
        };
        let entry = HistoryEntry(
            old_tl,
            switch_lsn,
            reason.into(),
            jiff::Timestamp::now().to_string(),
            self.args.name.clone(),
        );
        self.dcs
            .record_promotion(entry)
            .await
            .map_err(ActError::Dcs)?;
        if self.ha.synchronous_mode != SynchronousMode::Off {
            // A new leader starts with an empty synchronous set and grows it as standbys confirm.
            self.dcs.publish_sync(&[]).await.map_err(ActError::Dcs)?;
        }
        if let Err(e) = self.dcs.publish_role(Some(ROLE_PRIMARY)).await {
            warn!(error = %e, "cannot set the primary role label");
        }
        Ok(())
    }

    /// The winner of the initialize key creates the cluster.
    async fn bootstrap(&mut self) -> Result<(), ActError> {
        self.rest.view.write().await.state = MemberState::Initializing;
        let _ = self.pg.stop(StopMode::Immediate).await;
        self.pg.initdb(&self.settings(None).initdb).await?;
        self.dcs.acquire(None).await.map_err(ActError::Dcs)?;
        self.arm_watchdog()?;
        self.set_primary(Some(Instant::now()));
        self.pg.start(&self.settings(None), false).await?;
        self.following = Some(None);
        let mut statements = vec![
            format!(
                "ALTER ROLE postgres PASSWORD {}",
                scram_literal(&self.superuser_password)
            ),
            format!(
                "CREATE ROLE {} WITH REPLICATION LOGIN PASSWORD {}",
                ident(&self.args.replication_user),
                scram_literal(&self.replication_password)
            ),
        ];
        if let Some(app) = &self.app_password {
            statements.push(format!(
                "CREATE ROLE {} WITH LOGIN PASSWORD {}",
                ident(&self.args.app_user),
                scram_literal(app)
            ));
            // CREATE DATABASE cannot run inside the implicit transaction of a multi-statement batch.
            statements.push(format!(
                "CREATE DATABASE {} OWNER {}",
                ident(&self.args.app_database),
                ident(&self.args.app_user)
            ));
        }
        for role in &self.bootstrap_roles {
            statements.push(format!(
                "CREATE ROLE {} WITH {} {}",
                ident(&role.name),
                if role.login { "LOGIN" } else { "NOLOGIN" },
                if role.createdb {
                    "CREATEDB"
                } else {
                    "NOCREATEDB"
                },
            ));
        }
        for db in &self.bootstrap_databases {
            statements.push(format!(
                "CREATE DATABASE {} OWNER {}",
                ident(&db.name),
                ident(&db.owner)
            ));
        }
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
        info!(sysid, "bootstrapped a new cluster");
        Ok(())
    }

    /// Patroni's synchronous replication order: a standby goes into synchronous_standby_names
    /// first and into the published `sync` key only once PostgreSQL reports it synchronous; it
    /// leaves the key first and the setting after. So every member in the key has every
    /// acknowledged commit, and only members in the key may be promoted.
    async fn synchronous_step(&mut self, snap: &Snapshot) -> Result<(), ActError> {
        let mode = self.ha.synchronous_mode;
        let published: Vec<String> = match &snap.sync.leader {
            Some(l) if *l == self.args.name => snap.sync.sync_standby.clone(),
            _ => vec![],
        };
        if mode == SynchronousMode::Off {
            if !published.is_empty() {
                self.dcs.publish_sync(&[]).await.map_err(ActError::Dcs)?;
            }
            return self.set_synchronous_standby_names(None).await;
        }
        let nosync: Vec<&str> = snap
            .members
            .iter()
            .filter(|(_, s)| s.tags.nosync)
            .map(|(n, _)| n.as_str())
            .collect();
        let rows = self.pg.replication().await?;
        let streaming: Vec<&postgres::ReplicationRow> = rows
            .iter()
            .filter(|r| r.state == "streaming" && !nosync.contains(&r.application_name.as_str()))
            .collect();
        let still_streaming = |name: &str| streaming.iter().any(|r| r.application_name == name);
        // Keep the current synchronous standby while it streams; otherwise the best candidate.
        let desired = published
            .first()
            .filter(|p| still_streaming(p))
            .cloned()
            .or_else(|| {
                let mut c: Vec<&&postgres::ReplicationRow> = streaming.iter().collect();
                c.sort_by_key(|r| (r.sync_state != "sync", r.application_name.clone()));
                c.first().map(|r| r.application_name.clone())
            });
        if published.first() != desired.as_ref() && !published.is_empty() {
            // Out of the key first: from now on it may not be promoted.
            self.dcs.publish_sync(&[]).await.map_err(ActError::Dcs)?;
        }
        match &desired {
            Some(name) => {
                self.set_synchronous_standby_names(Some(postgres::conf::quote_identifier(name)))
                    .await?;
                let confirmed = rows
                    .iter()
                    .any(|r| r.application_name == *name && r.sync_state == "sync");
                if confirmed && published.first() != Some(name) {
                    self.dcs
                        .publish_sync(std::slice::from_ref(name))
                        .await
                        .map_err(ActError::Dcs)?;
                    info!(standby = %name, "synchronous standby published");
                }
            }
            None if mode == SynchronousMode::Strict => {
                // Never fall back to asynchronous commits: block them until a standby returns.
                self.set_synchronous_standby_names(Some("*".into())).await?;
            }
            None => self.set_synchronous_standby_names(None).await?,
        }
        Ok(())
    }

    async fn set_synchronous_standby_names(
        &mut self,
        value: Option<String>,
    ) -> Result<(), ActError> {
        if self.synchronous_standby_names == value {
            return Ok(());
        }
        self.synchronous_standby_names = value.clone();
        let settings = self.settings(None);
        self.pg.reconfigure(&settings).await?;
        info!(synchronous_standby_names = ?value, "synchronous_standby_names changed");
        Ok(())
    }

    async fn checkpoint_lsn(&self) -> Option<u64> {
        let out = tokio::process::Command::new(self.args.bin_dir.join("pg_controldata"))
            .arg(&self.args.data_dir)
            .env("LC_ALL", "C")
            .output()
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let loc = text
            .lines()
            .find_map(|l| l.strip_prefix("Latest checkpoint location:"))?
            .trim()
            .to_string();
        parse_lsn(&loc)
    }

    /// Publish the member annotation, the role label and the REST snapshot.
    async fn publish(&mut self, snap: Option<&Snapshot>, decision: &Decision) {
        let running = self.pg.running();
        let live = if running {
            self.pg.live_state().await.ok()
        } else {
            None
        };
        let data = self.pg.data_state().await.ok();
        let role = match (&live, &data) {
            (Some(l), _) if !l.in_recovery => MemberRole::Primary,
            (Some(_), _) => MemberRole::Replica,
            (None, Some(DataDir::Empty)) | (None, None) => MemberRole::Uninitialized,
            (None, Some(_)) => MemberRole::Replica,
        };
        let state = {
            let current = self.rest.view.read().await.state;
            match (&live, running) {
                (Some(_), _) => MemberState::Running,
                (None, true) => MemberState::Starting,
                (None, false) if matches!(decision.action, Action::CloneFrom { .. }) => current,
                (None, false) => MemberState::Stopped,
            }
        };
        // Without the apiserver only a failsafe-confirmed primary still counts as the leader.
        let holds = match snap {
            Some(s) => s.holder() == Some(self.args.name.as_str()),
            None => decision.action == Action::KeepPrimary,
        };
        let status = MemberStatus {
            conn_url: conn_url(&self.args.address, self.args.pg_port),
            api_url: api_url(&self.args.address, self.args.api_port),
            state,
            role,
            xlog_location: live.as_ref().and_then(|l| l.lsn),
            replication_state: live
                .as_ref()
                .filter(|l| l.in_recovery && l.streaming)
                .map(|_| "streaming".to_string()),
            timeline: live.as_ref().and_then(|l| l.timeline),
            tags: self.tags.clone(),
            pending_restart: live.as_ref().is_some_and(|l| l.pending_restart),
            version: env!("CARGO_PKG_VERSION").to_string(),
            config: self.applied_config.clone(),
        };
        if snap.is_some() {
            if let Err(e) = self.dcs.publish_status(&status).await {
                warn!(error = %e, "cannot publish the member status");
            }
            // Both writers of the role label follow one rule: primary only with the lease.
            let label = match role {
                MemberRole::Primary if holds && state == MemberState::Running => Some(ROLE_PRIMARY),
                MemberRole::Replica if state == MemberState::Running => Some(ROLE_REPLICA),
                _ => None,
            };
            if let Err(e) = self.dcs.publish_role(label).await {
                warn!(error = %e, "cannot update the role label");
            }
        }
        let replication = if role == MemberRole::Primary {
            self.pg.replication().await.unwrap_or_default()
        } else {
            vec![]
        };
        let sysid = match data {
            Some(DataDir::Initialized { sysid, .. }) => Some(sysid),
            _ => None,
        };
        let pidfile = self.args.data_dir.join("postmaster.pid");
        self.telemetry.cycle(
            self.watchdog.is_armed(),
            running
                .then(|| metrics::postmaster_start_time(&pidfile))
                .flatten(),
            snap.is_none() && decision.action == Action::KeepPrimary,
        );
        let mut v = self.rest.view.write().await;
        v.role = role;
        v.state = state;
        v.holds_lease = holds;
        v.timeline = status.timeline;
        v.lsn = status.xlog_location;
        v.received_lsn = live.as_ref().and_then(|l| l.received_lsn);
        v.replayed_lsn = live.as_ref().and_then(|l| l.replayed_lsn);
        v.streaming = live.as_ref().is_some_and(|l| l.streaming);
        v.replay_paused = live.as_ref().is_some_and(|l| l.replay_paused);
        v.replayed_timestamp = live.as_ref().and_then(|l| l.replayed_timestamp);
        v.archive_recovery = live.as_ref().is_some_and(|l| l.archive_recovery);
        if let Some(sv) = live.as_ref().and_then(|l| l.server_version) {
            v.server_version = Some(sv);
        }
        v.pending_restart = status.pending_restart;
        v.sysid = sysid;
        v.replication = replication;
        v.last_cycle = Instant::now();
        if let Some(s) = snap {
            v.lease_holder = s.holder().map(str::to_string);
            v.leader_optime = s.leader_optime;
            v.paused = s.paused;
            v.members = s.members.clone();
            v.history = s.history.clone();
            v.sync_standbys = s.sync.sync_standby.clone();
            v.scheduled_switchover = s.switchover_scheduled_at.and_then(|at| {
                s.switchover
                    .as_ref()
                    .map(|sw| (at.to_string(), sw.leader.clone(), sw.candidate.clone()))
            });
            v.dcs_last_seen = jiff::Timestamp::now().as_second();
        }
    }

    /// Clean shutdown: a primary checkpoints, stops, then releases the lease so a replica can
    /// take over at once instead of waiting out the ttl.
    async fn shutdown(&mut self, release: bool) {
        let was_primary = self.last_renew.lock().map(|g| g.is_some()).unwrap_or(false);
        self.set_primary(None);
        if was_primary {
            let _ = self.dcs.publish_role(None).await;
            let _ = self.pg.checkpoint().await;
        }
        if let Err(e) = self.pg.stop(StopMode::Fast).await {
            warn!(error = %e, "stopping postgres");
        }
        self.watchdog.disable();
        if release && was_primary {
            let optime = self.checkpoint_lsn().await;
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

#[derive(Debug, thiserror::Error)]
enum ActError {
    #[error("renew failed: {0}")]
    RenewFailed(DcsError),
    #[error(transparent)]
    Dcs(DcsError),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error("watchdog required but unavailable: {0}")]
    Watchdog(String),
    #[error("{0}")]
    Halt(String),
}

impl ActError {
    fn into_agent(self) -> AgentError {
        match self {
            ActError::Halt(why) => AgentError::Halted(why),
            ActError::Pg(e) => AgentError::Postgres(e),
            other => AgentError::Action(other.to_string()),
        }
    }
}

/// Whether a switchover request is due: unscheduled ones at once, scheduled ones from their time.
fn switchover_due(s: &Snapshot, now: jiff::Timestamp) -> bool {
    s.switchover_scheduled_at.is_none_or(|t| t <= now)
}

/// A scheduled switchover the leader missed by more than this is dropped, not run late
/// (Patroni: 1.5 x loop_wait; never less than 10 s here, as our loop_wait is short).
fn switchover_stale(s: &Snapshot, now: jiff::Timestamp, loop_wait: Duration) -> bool {
    let window = loop_wait.mul_f64(1.5).max(Duration::from_secs(10));
    s.switchover_scheduled_at
        .is_some_and(|t| now.duration_since(t).as_secs_f64() > window.as_secs_f64())
}

fn dcs_view(s: &Snapshot) -> DcsView {
    DcsView {
        lease: s.lease.clone(),
        initialize: s.initialize.clone(),
        leader_optime: s.leader_optime,
        cluster_timeline: s.cluster_timeline(),
        members: s.member_views(),
        // A scheduled switchover is invisible to the HA rules until its time comes.
        switchover: s
            .switchover
            .clone()
            .filter(|_| switchover_due(s, jiff::Timestamp::now())),
        sync_standbys: s.sync.sync_standby.clone(),
    }
}

fn ident(name: &str) -> String {
    postgres_protocol::escape::escape_identifier(name)
}

/// A password as a SCRAM verifier literal: the plain text never reaches the server's logs.
fn scram_literal(password: &str) -> String {
    postgres_protocol::escape::escape_literal(&postgres_protocol::password::scram_sha_256(
        password.as_bytes(),
    ))
}

/// `16/B374D848` → bytes.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

fn spawn_softdog(
    fifo: &std::path::Path,
    pidfile: &std::path::Path,
    timeout: Duration,
) -> Result<tokio::process::Child, AgentError> {
    let exe = std::env::current_exe()?;
    let child = tokio::process::Command::new(exe)
        .arg("softdog")
        .arg("--fifo")
        .arg(fifo)
        .arg("--pidfile")
        .arg(pidfile)
        .arg("--timeout")
        .arg(timeout.as_secs().to_string())
        // Its own process group: signals aimed at the agent's group do not reach it.
        .process_group(0)
        .kill_on_drop(false)
        .spawn()?;
    // Wait for the FIFO so the first arming does not race the softdog's start.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fifo.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

/// Fencing independent of the loop: a primary that has not renewed within `retry_timeout`
/// loses postgres at once (SIGKILL of the postmaster's group), before any follower's ttl can
/// run out, even when the loop is blocked in a hung request. It is a thread of its own, not a
/// task: nothing the runtime runs (a busy or blocked task) can delay it.
fn spawn_fencing_task(
    last_renew: Arc<StdMutex<Option<Instant>>>,
    retry_timeout: Duration,
    pidfile: PathBuf,
    telemetry: Arc<metrics::Telemetry>,
    (events, me): (events::Events, String),
) -> Result<(), AgentError> {
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("fencing".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let _entered = span.enter();
            loop {
                std::thread::sleep(Duration::from_millis(100));
                let overdue = last_renew
                    .lock()
                    .ok()
                    .and_then(|g| g.map(|t| t.elapsed()))
                    .filter(|e| *e > retry_timeout);
                if let Some(overdue) = overdue {
                    error!("no lease renew for retryTimeout: fencing postgres");
                    softdog::fire(&pidfile);
                    if let Ok(mut g) = last_renew.lock() {
                        *g = None;
                    }
                    telemetry.fenced(metrics::FencingReason::RetryTimeout);
                    events.report(events::fenced_by_timeout(&me, overdue, retry_timeout));
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_parses_to_bytes() {
        assert_eq!(parse_lsn("0/3000028"), Some(0x3000028));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("junk"), None);
    }
}
