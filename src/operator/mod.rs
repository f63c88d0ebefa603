//! The operator (`pgwarden operator`): a kube-runtime Controller on `PostgresCluster` that owns
//! each cluster's children, the label updater that points the Services at the right pods, and
//! `/healthz`, `/readyz`, `/metrics` on one port. Two replicas are safe: only the holder of the
//! Lease `pgwarden-operator` reconciles and relabels; the other waits, ready to take over.

pub mod apply;
pub mod backups;
pub mod build;
pub mod controller;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod remembered;
pub mod rolling;
pub mod schedule;
pub mod status;
pub mod step;
pub mod validate;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client};
use tracing::{error, info, warn};

use crate::api::names::{APP_NAME, LABEL_CLUSTER, LABEL_NAME};
use crate::api::{PostgresBackup, PostgresCluster};
use controller::Context;
use metrics::Metrics;

#[derive(clap::Args, Debug, Clone)]
pub struct OperatorArgs {
    /// Namespace of the operator's own leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// This replica's identity in leader election.
    #[arg(long, env = "POD_NAME", default_value = "pgwarden-operator")]
    pub pod_name: String,
    /// Namespaces to watch, comma-separated; empty watches all.
    #[arg(long, env = "PGWARDEN_WATCH_NAMESPACES", default_value = "")]
    pub watch_namespaces: String,
    /// Image the PostgreSQL pods' init container copies the `pgwarden` binary from.
    #[arg(
        long,
        env = "PGWARDEN_AGENT_IMAGE",
        default_value = "pgwarden.local/pgwarden:dev"
    )]
    pub agent_image: String,
    #[arg(
        long,
        env = "PGWARDEN_AGENT_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    pub agent_image_pull_policy: String,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "PGWARDEN_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Seconds between two label updater rounds.
    #[arg(long, env = "PGWARDEN_LABEL_PERIOD", default_value_t = 1)]
    pub label_period: u64,
}

impl OperatorArgs {
    fn namespaces(&self) -> Vec<String> {
        self.watch_namespaces
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

fn apis<K>(client: &Client, namespaces: &[String]) -> Vec<Api<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    }
}

fn cluster_of<K: kube::Resource<DynamicType = ()>>(obj: &K) -> Option<ObjectRef<PostgresCluster>> {
    let name = obj.meta().labels.as_ref()?.get(LABEL_CLUSTER)?;
    let ns = obj.meta().namespace.as_deref()?;
    Some(ObjectRef::new(name).within(ns))
}

async fn serve(addr: String, metrics: Arc<Metrics>) -> Result<(), OperatorError> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| OperatorError::Listen {
            addr: addr.clone(),
            source,
        })?;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        // Both replicas are ready: the standby serves metrics and waits for the lease.
        .route("/readyz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        );
    info!(%addr, "serving /healthz, /readyz, /metrics");
    axum::serve(listener, app)
        .await
        .map_err(|source| OperatorError::Listen { addr, source })
}

/// Everything the leader runs: one controller per watched namespace (or one for all) and the
/// label updater (pods from a cache, Leases read fresh).
async fn lead(client: Client, args: &OperatorArgs, metrics: Arc<Metrics>) {
    let namespaces = args.namespaces();
    let ctx = Arc::new(Context {
        client: client.clone(),
        agent_image: args.agent_image.clone(),
        agent_image_pull_policy: args.agent_image_pull_policy.clone(),
        metrics: metrics.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "pgwarden-operator".into(),
                instance: Some(args.pod_name.clone()),
            },
        ),
        agents: crate::common::agent_client::AgentClient::new(Duration::from_secs(2)),
        node_errors: Mutex::new(crate::common::throttle::Throttle::new(Duration::from_secs(
            60,
        ))),
        remembered: Mutex::new(Default::default()),
    });
    let ours = watcher::Config::default().labels(&format!("{LABEL_NAME}={APP_NAME}"));
    let mut tasks = vec![];

    for (i, clusters) in apis::<PostgresCluster>(&client, &namespaces)
        .into_iter()
        .enumerate()
    {
        let ns = namespaces.get(i).cloned();
        let api_for = |c: &Client| -> (Api<StatefulSet>, Api<Service>, Api<Pod>) {
            match &ns {
                Some(n) => (
                    Api::namespaced(c.clone(), n),
                    Api::namespaced(c.clone(), n),
                    Api::namespaced(c.clone(), n),
                ),
                None => (
                    Api::all(c.clone()),
                    Api::all(c.clone()),
                    Api::all(c.clone()),
                ),
            }
        };
        let (sts, svc, pods) = api_for(&client);
        let backups: Api<PostgresBackup> = match &ns {
            Some(n) => Api::namespaced(client.clone(), n),
            None => Api::all(client.clone()),
        };
        // Backups of a cluster that does not exist: the cluster controller never sees them.
        let orphans = Controller::new(backups.clone(), watcher::Config::default())
            .shutdown_on_signal()
            .run(
                controller::reconcile_backup,
                controller::backup_error_policy,
                ctx.clone(),
            )
            .for_each(|_| async {});
        tasks.push(tokio::spawn(orphans));
        let ctx = ctx.clone();
        let controller = Controller::new(clusters, watcher::Config::default());
        let store = controller.store();
        let controller = controller
            .owns(sts, ours.clone())
            .owns(svc, ours.clone())
            // Member annotations and readiness change on pods the StatefulSet owns.
            .watches(pods, ours.clone(), |p| cluster_of(&p))
            // A new PostgresBackup is queued at once, not at the cluster's next periodic pass.
            .watches(backups, watcher::Config::default(), |b| {
                let ns = b.metadata.namespace.clone()?;
                Some(ObjectRef::<PostgresCluster>::new(&b.spec.cluster).within(&ns))
            })
            // A cordoned node may carry a primary a drain is waiting for (rolling::drain_step):
            // every cluster looks at once rather than at its next periodic reconcile.
            .watches(
                Api::<Node>::all(client.clone()),
                watcher::Config::default(),
                move |node| {
                    let cordoned = node.spec.and_then(|s| s.unschedulable) == Some(true);
                    let refs: Vec<ObjectRef<PostgresCluster>> = if cordoned {
                        store
                            .state()
                            .iter()
                            .map(|c| ObjectRef::from_obj(c.as_ref()))
                            .collect()
                    } else {
                        vec![]
                    };
                    refs
                },
            )
            .shutdown_on_signal()
            .run(controller::reconcile, controller::error_policy, ctx)
            .for_each(|r| async move {
                if let Err(e) = r {
                    warn!(error = %e, "controller");
                }
            });
        tasks.push(tokio::spawn(controller));
    }

    // The label updater reads pods from a cache, not one list per second; each cluster's Lease it
    // reads fresh every round (a cache may predate an apiserver restart).
    for pods_api in apis::<Pod>(&client, &namespaces) {
        let (pods, pods_writer) = reflector::store();
        tasks.push(tokio::spawn(
            reflector::reflector(pods_writer, watcher(pods_api, ours.clone()))
                .default_backoff()
                .for_each(|_| async {}),
        ));
        let (c, m) = (client.clone(), metrics.clone());
        let period = Duration::from_secs(args.label_period.max(1));
        tasks.push(tokio::spawn(async move {
            let _ = pods.wait_until_ready().await;
            labels::run(c, pods, m, period).await;
        }));
    }
    futures::future::join_all(tasks).await;
}

pub async fn run(args: OperatorArgs) -> Result<(), OperatorError> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let server = tokio::spawn(serve(args.listen.clone(), metrics.clone()));
    let mut elector = leader::Elector::new(client.clone(), &args.namespace, &args.pod_name);
    info!(identity = %args.pod_name, namespace = %args.namespace, "waiting for the operator leader lease");
    tokio::select! {
        _ = elector.acquire() => {}
        r = server => {
            return match r {
                Ok(r) => r,
                Err(e) => { error!(error = %e, "server task"); Ok(()) }
            };
        }
        _ = tokio::signal::ctrl_c() => return Ok(()),
    }
    metrics.set_leader(true);
    tokio::select! {
        _ = lead(client, &args, metrics.clone()) => {
            info!("controllers stopped");
        }
        _ = elector.keep() => {
            // Another replica may lead now: stop at once rather than act beside it.
            error!("lost the operator leader lease; exiting");
            std::process::exit(1);
        }
    }
    Ok(())
}
