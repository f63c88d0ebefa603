//! Wiring of one agent: the kube client, the secrets and the passfile, the softdog process, the
//! fence, the Events publisher, the DCS and the REST API server. Runs once, before the loop.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use tokio::sync::{Mutex, RwLock};
use tracing::{error, info};

use super::config::{AgentArgs, ConfigError, read_secret};
use super::dcs::Dcs;
use super::fence::Fence;
use super::ha::HaConfig;
use super::postgres::{self, Postgres, conf::render_passfile};
use super::reconfigure::Reconfigure;
use super::rest::{self, RestContext, RestView};
use super::watchdog::{Device, Watchdog};
use super::{Agent, AgentError, Secrets, Upstream, events, metrics, peers};
use crate::api::cluster::{SynchronousMode, WatchdogMode};

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

impl Agent {
    pub(super) async fn start(args: AgentArgs) -> Result<Self, AgentError> {
        let client = kube_client(&args).await?;
        let secrets = Secrets {
            superuser: read_secret(&args.superuser_password_file)?,
            replication: read_secret(&args.replication_password_file)?,
            app: args
                .app_password_file
                .as_deref()
                .map(read_secret)
                .transpose()?,
        };
        let token = args
            .api_token_file
            .as_deref()
            .map(read_secret)
            .transpose()?;
        let parameters: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&args.parameters).map_err(ConfigError::Parameters)?;
        let tags = args.tags()?;
        let (bootstrap_roles, bootstrap_databases) = args.bootstrap_objects()?;
        let recovery = args.recovery()?;

        std::fs::create_dir_all(&args.run_dir)?;
        postgres::set_mode(&args.run_dir, 0o700)?;
        let passfile = args.run_dir.join("pgpass");
        std::fs::write(
            &passfile,
            render_passfile(&[
                ("postgres", &secrets.superuser),
                (&args.replication_user, &secrets.replication),
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
        let fence = Fence::new(
            Watchdog::new(mode, device, args.watchdog_timeout()),
            Duration::from_secs(args.watchdog_safety_margin),
        );

        let ha = HaConfig {
            ttl: args.ttl(),
            loop_wait: args.loop_wait(),
            retry_timeout: args.retry_timeout(),
            maximum_lag_on_failover: args.maximum_lag_on_failover,
            synchronous_mode: args.synchronous_mode.into(),
            nofailover: tags.nofailover,
            failsafe_mode: args.failsafe_mode,
            watchdog_blocks_promotion: false,
            fence_after: args.watchdog_timeout(),
            primary_start_timeout: Duration::from_secs(args.primary_start_timeout),
        };
        let events = events::Events::spawn(
            client.clone(),
            &args.namespace,
            &args.cluster,
            args.cluster_uid.as_deref(),
            &args.name,
        );
        let dcs = |client: Client| {
            Dcs::new(
                client,
                &args.namespace,
                &args.cluster,
                &args.name,
                args.ttl(),
                args.retry_timeout(),
            )
            .owned_by(args.cluster_uid.as_deref())
        };
        let mut view = RestView::new(
            &args.cluster,
            &args.name,
            args.ttl(),
            args.loop_wait(),
            args.maximum_lag_on_failover,
        );
        view.tags = tags.clone();
        view.failsafe_mode = args.failsafe_mode;
        view.synchronous_mode =
            SynchronousMode::from(args.synchronous_mode) != SynchronousMode::Off;
        let telemetry = Arc::new(metrics::Telemetry::new(fence.clock(), mode));
        view.telemetry = telemetry.clone();
        let (commands, command_rx) = tokio::sync::mpsc::channel(4);
        let rest = Arc::new(RestContext {
            view: RwLock::new(view),
            dcs: Mutex::new(dcs(client.clone())),
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
            dcs: dcs(client.clone()),
            pg,
            fence,
            rest,
            peers: peers::PeerClient::new(Duration::from_secs(2)),
            secrets,
            tags,
            conf: Reconfigure::new(parameters, passfile),
            bootstrap_roles,
            recovery,
            bootstrap_databases,
            telemetry,
            events,
            upstream: Upstream::Unknown,
            failsafe_asked: None,
            dcs_errors: crate::common::throttle::Throttle::new(Duration::from_secs(10)),
            known_members: vec![],
            slot_orphans: Default::default(),
            route_gate: Default::default(),
            handover: Default::default(),
            apiserver_away_at: None,
            not_streaming_since: None,
            client,
            commands: command_rx,
            softdog,
            promotion: None,
            cloning: None,
            paused: false,
            stanza: super::backup::Stanza::new(),
            backups: super::backup::Runner::default(),
            bootstrap_retry_at: None,
            bootstrap_failures: 0,
            bootstrap_error: None,
            primary_down_since: None,
            args,
        })
    }
}

pub(super) fn spawn_softdog(
    fifo: &Path,
    pidfile: &Path,
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
