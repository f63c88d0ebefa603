//! Reconcile one `PostgresCluster`: validate (pure) → build (pure) → server-side apply under one
//! field manager in dependency order (RBAC, Secrets, Services, PDB, Lease, state ConfigMap,
//! StatefulSet last) → one rolling or switchover step → status. Children carry a controller
//! owner reference, so deleting the cluster deletes them; PVCs follow `retainOnDelete` through
//! the StatefulSet's retention policy.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use super::agent_client::AgentClient;
use super::build::{Ctx, rbac, secrets, services, state, statefulset};
use super::metrics::Metrics;
use super::rolling::{self, Member, Step};
use super::status::{self, Observed};
use super::validate;
use crate::api::PostgresCluster;
use crate::api::member::MemberRole;
use crate::api::names::{ANNOTATION_SWITCHOVER_TO, LABEL_CLUSTER};
use crate::api::state::{HistoryEntry, keys};

/// The one field manager for everything the operator applies.
pub const MANAGER: &str = "pgwarden-operator";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("apiserver: {0}")]
    Kube(#[from] kube::Error),
    #[error("object has no {0}")]
    Incomplete(&'static str),
    #[error("cannot generate a secret value: {0}")]
    Random(std::io::Error),
}

pub struct Context {
    pub client: Client,
    pub agent_image: String,
    pub agent_image_pull_policy: String,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub agents: AgentClient,
    /// Consecutive failures per cluster, for the error policy's backoff; reset on success.
    pub failures: Mutex<HashMap<String, u32>>,
    /// When each cluster's last disruptive rolling step ran (see [`SETTLE`]); a change of the
    /// dynamic configuration counts as one, so members can reload and report before a roll.
    pub last_step: Mutex<HashMap<String, Instant>>,
    /// The dynamic configuration fingerprint each cluster was last reconciled with.
    pub last_config: Mutex<HashMap<String, String>>,
}

/// Time between two disruptive steps of a roll. A pod's readiness and its agent's status
/// annotation trail the change by a few seconds (two failed probes 2 s apart, one loop to
/// publish); without the pause the next step could start while the last member still looks
/// healthy, and two instances would be down at once.
pub const SETTLE: Duration = Duration::from_secs(10);

fn key(c: &PostgresCluster) -> String {
    format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any())
}

pub async fn reconcile(
    cluster: Arc<PostgresCluster>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let result = reconcile_inner(&cluster, &ctx).await;
    ctx.metrics.reconciled(started.elapsed(), result.is_ok());
    if result.is_ok()
        && let Ok(mut f) = ctx.failures.lock()
    {
        f.remove(&key(&cluster));
    }
    result
}

/// Exponential backoff per cluster: 2 s, 4 s, ... up to 5 minutes.
pub fn error_policy(
    cluster: Arc<PostgresCluster>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    let n = ctx
        .failures
        .lock()
        .map(|mut f| {
            let e = f.entry(key(&cluster)).or_insert(0);
            *e = e.saturating_add(1);
            *e
        })
        .unwrap_or(1);
    let delay = Duration::from_secs((1u64 << n.min(8)).min(300));
    warn!(namespace = ?cluster.namespace(), cluster = %cluster.name_any(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn apply<K>(client: &Client, ns: &str, obj: &K) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map(|_| ())
}

fn random_secret() -> Result<String, std::io::Error> {
    let mut buf = [0u8; 24];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(secrets::password_from(&buf))
}

/// Create the Secrets that do not exist yet; never touch one that does.
async fn ensure_secrets(
    client: &Client,
    b: &Ctx<'_>,
    rec: &Recorder,
    cluster: &PostgresCluster,
) -> Result<(), ReconcileError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &b.namespace);
    let mut values = Vec::with_capacity(4);
    for _ in 0..4 {
        values.push(random_secret().map_err(ReconcileError::Random)?);
    }
    let wanted = secrets::secrets(b, [&values[0], &values[1], &values[2], &values[3]]);
    for secret in wanted {
        let name = secret.metadata.name.clone().unwrap_or_default();
        if api.get_opt(&name).await?.is_some() {
            continue;
        }
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                info!(namespace = %b.namespace, cluster = %b.names.cluster(), secret = %name, "created secret");
                event(
                    rec,
                    cluster,
                    EventType::Normal,
                    "SecretCreated",
                    format!("Generated Secret {name}"),
                )
                .await;
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn event(
    rec: &Recorder,
    cluster: &PostgresCluster,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = crate::events::event(type_, reason, note);
    if let Err(e) = rec.publish(&ev, &cluster.object_ref(&())).await {
        warn!(cluster = %cluster.name_any(), error = %e, "cannot publish an event");
    }
}

fn members(pods: &[Pod], update_revision: Option<&str>, config: &str) -> Vec<Member> {
    pods.iter()
        .map(|p| {
            let s = status::member_status(p);
            Member {
                name: p.name_any(),
                ready: status::pod_ready(p),
                streaming: s.as_ref().is_some_and(|s| {
                    s.role == MemberRole::Primary
                        || s.replication_state.as_deref() == Some("streaming")
                }),
                updated: status::pod_updated(p, update_revision),
                pending_restart: s.as_ref().is_some_and(|s| s.pending_restart),
                nofailover: s.as_ref().is_some_and(|s| s.tags.nofailover),
                config_current: s
                    .as_ref()
                    .is_some_and(|s| s.config.as_deref() == Some(config)),
            }
        })
        .collect()
}

fn pod_ip(pods: &[Pod], name: &str) -> Option<String> {
    pods.iter()
        .find(|p| p.name_any() == name)
        .and_then(|p| p.status.as_ref()?.pod_ip.clone())
}

async fn api_token(client: &Client, b: &Ctx<'_>) -> Result<Option<String>, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &b.namespace);
    Ok(api
        .get_opt(&b.names.secret_api())
        .await?
        .and_then(|s| s.data)
        .and_then(|d| {
            d.get("token")
                .map(|t| String::from_utf8_lossy(&t.0).into_owned())
        }))
}

/// Ask the primary's agent for a switchover; `Err(message)` when refused or unreachable.
async fn switchover(
    ctx: &Context,
    b: &Ctx<'_>,
    pods: &[Pod],
    from: &str,
    to: &str,
) -> Result<(), String> {
    let token = api_token(&ctx.client, b)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("Secret with the API token is missing")?;
    let ip = pod_ip(pods, from).ok_or(format!("{from} has no address"))?;
    let body = serde_json::json!({"leader": from, "candidate": to});
    match ctx
        .agents
        .post(&ip, "/switchover", &body, &token, Duration::from_secs(30))
        .await
    {
        Some((200, _)) => Ok(()),
        Some((code, text)) => Err(format!("agent answered {code}: {}", text.trim())),
        None => Err(format!("the agent of {from} did not answer")),
    }
}

async fn restart(ctx: &Context, b: &Ctx<'_>, pods: &[Pod], pod: &str) -> Result<(), String> {
    let token = api_token(&ctx.client, b)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("Secret with the API token is missing")?;
    let ip = pod_ip(pods, pod).ok_or(format!("{pod} has no address"))?;
    match ctx
        .agents
        .post(
            &ip,
            "/restart",
            &serde_json::json!({}),
            &token,
            Duration::from_secs(120),
        )
        .await
    {
        Some((200, _)) => Ok(()),
        Some((code, text)) => Err(format!("agent answered {code}: {}", text.trim())),
        None => Err(format!("the agent of {pod} did not answer")),
    }
}

async fn execute(
    ctx: &Context,
    b: &Ctx<'_>,
    cluster: &PostgresCluster,
    pods: &[Pod],
    step: &Step,
) -> Result<(), ReconcileError> {
    let rec = &ctx.recorder;
    match step {
        Step::Idle | Step::Wait(_) => {}
        Step::DeletePod { pod, reason } => {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &b.namespace);
            info!(namespace = %b.namespace, cluster = %b.names.cluster(), member = %pod, reason, "recreating pod");
            match api.delete(pod, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            event(
                rec,
                cluster,
                EventType::Normal,
                "RollingUpdate",
                format!("Recreating {pod}: {reason}"),
            )
            .await;
        }
        Step::Restart { pod, reason } => {
            info!(namespace = %b.namespace, cluster = %b.names.cluster(), member = %pod, reason, "restarting postgres");
            match restart(ctx, b, pods, pod).await {
                Ok(()) => {
                    event(
                        rec,
                        cluster,
                        EventType::Normal,
                        "RollingRestart",
                        format!("Restarted PostgreSQL on {pod}: {reason}"),
                    )
                    .await
                }
                Err(e) => {
                    event(
                        rec,
                        cluster,
                        EventType::Warning,
                        "RestartFailed",
                        format!("Restart of {pod} failed: {e}"),
                    )
                    .await
                }
            }
        }
        Step::Switchover { from, to, reason } => {
            info!(namespace = %b.namespace, cluster = %b.names.cluster(), from, to, reason, "switching over");
            match switchover(ctx, b, pods, from, to).await {
                Ok(()) => {
                    event(
                        rec,
                        cluster,
                        EventType::Normal,
                        "Switchover",
                        format!("Switched over from {from} to {to}: {reason}"),
                    )
                    .await
                }
                Err(e) => {
                    event(
                        rec,
                        cluster,
                        EventType::Warning,
                        "SwitchoverFailed",
                        format!("Switchover from {from} to {to} failed: {e}"),
                    )
                    .await
                }
            }
        }
    }
    Ok(())
}

/// `pgwarden.io/switchover-to=<pod>`: ask for it once, record the outcome as an Event, remove
/// the annotation whatever the outcome (a refused request is not retried behind the user's back).
async fn switchover_annotation(
    ctx: &Context,
    b: &Ctx<'_>,
    cluster: &PostgresCluster,
    pods: &[Pod],
    primary: Option<&str>,
) -> Result<(), ReconcileError> {
    let Some(target) = cluster.annotations().get(ANNOTATION_SWITCHOVER_TO).cloned() else {
        return Ok(());
    };
    let rec = &ctx.recorder;
    match primary {
        None => {
            event(
                rec,
                cluster,
                EventType::Warning,
                "SwitchoverRefused",
                format!("Switchover to {target} refused: the cluster has no primary"),
            )
            .await
        }
        Some(p) if p == target => {
            event(
                rec,
                cluster,
                EventType::Normal,
                "SwitchoverSkipped",
                format!("{target} is already the primary"),
            )
            .await
        }
        Some(p) => match switchover(ctx, b, pods, p, &target).await {
            Ok(()) => {
                event(
                    rec,
                    cluster,
                    EventType::Normal,
                    "Switchover",
                    format!("Switched over from {p} to {target} as the annotation asked"),
                )
                .await
            }
            Err(e) => {
                event(
                    rec,
                    cluster,
                    EventType::Warning,
                    "SwitchoverRefused",
                    format!("Switchover from {p} to {target} refused: {e}"),
                )
                .await
            }
        },
    }
    let api: Api<PostgresCluster> = Api::namespaced(ctx.client.clone(), &b.namespace);
    let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_SWITCHOVER_TO: null}}});
    api.patch(
        b.names.cluster(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

async fn reconcile_inner(
    cluster: &PostgresCluster,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    if cluster.metadata.deletion_timestamp.is_some() {
        // Owner references take the children with it.
        return Ok(Action::await_change());
    }
    let b = Ctx::new(cluster, &ctx.agent_image, &ctx.agent_image_pull_policy)
        .ok_or(ReconcileError::Incomplete("name, namespace or uid"))?;
    let client = &ctx.client;
    let ns = b.namespace.clone();
    let problems = validate::problems(cluster);
    let spec_problem = (!problems.is_empty()).then(|| problems.join("; "));
    if let Some(p) = &spec_problem {
        let was_valid = cluster
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == status::SPEC_VALID))
            .is_none_or(|c| c.status == "True");
        if was_valid {
            event(
                &ctx.recorder,
                cluster,
                EventType::Warning,
                "InvalidSpec",
                p.clone(),
            )
            .await;
        }
    }

    if spec_problem.is_none() {
        apply(client, &ns, &rbac::service_account(&b)).await?;
        apply(client, &ns, &rbac::role(&b)).await?;
        apply(client, &ns, &rbac::role_binding(&b)).await?;
        ensure_secrets(client, &b, &ctx.recorder, cluster).await?;
        for svc in services::services(&b) {
            apply(client, &ns, &svc).await?;
        }
        apply(client, &ns, &statefulset::pod_disruption_budget(&b)).await?;
        apply(client, &ns, &state::lease(&b)).await?;
        apply(client, &ns, &state::state_config_map(&b)).await?;
    }

    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pods = pods_api
        .list(&ListParams::default().labels(&format!("{LABEL_CLUSTER}={}", b.names.cluster())))
        .await?
        .items;
    // Terminating pods stay in view: they count as not ready, so no second pod goes down.
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let sts = sts_api.get_opt(&b.names.statefulset()).await?;
    let lease = Api::<Lease>::namespaced(client.clone(), &ns)
        .get_opt(&b.names.lease())
        .await?;
    let state_cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get_opt(&b.names.state_config_map())
        .await?;
    let history: Vec<HistoryEntry> = state_cm
        .as_ref()
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get(keys::HISTORY))
        .and_then(|h| serde_json::from_str(h).ok())
        .unwrap_or_default();
    let update_revision = sts
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.update_revision.clone());
    let mut observed = Observed {
        pods,
        lease_holder: lease
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty()),
        history,
        update_revision: update_revision.clone(),
        spec_problem,
        rolling: None,
    };
    let primary = status::primary(&observed);
    let members = members(
        &observed.pods,
        update_revision.as_deref(),
        &state::dynamic_config(&b).fingerprint(),
    );

    let mut step = Step::Idle;
    if observed.spec_problem.is_none() {
        let current = sts
            .as_ref()
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.replicas)
            .unwrap_or(0);
        let (replicas, scale_step) = rolling::replicas_and_step(
            cluster.spec.instances,
            current,
            &members,
            primary.as_deref(),
        );
        apply(client, &ns, &statefulset::statefulset(&b, replicas)).await?;
        if !cluster.spec.pause {
            switchover_annotation(ctx, &b, cluster, &observed.pods, primary.as_deref()).await?;
            step = match scale_step {
                Some(s) => s,
                // Pods the StatefulSet is about to remove do not hold a roll up.
                None => {
                    let staying: Vec<Member> = members
                        .into_iter()
                        .filter(|m| (status::ordinal(&m.name) as i64) < replicas as i64)
                        .collect();
                    rolling::next_step(&staying, primary.as_deref())
                }
            };
            let key = key(cluster);
            let fingerprint = state::dynamic_config(&b).fingerprint();
            let config_changed = ctx
                .last_config
                .lock()
                .map(|mut m| {
                    m.insert(key.clone(), fingerprint.clone())
                        .is_some_and(|old| old != fingerprint)
                })
                .unwrap_or(false);
            if config_changed && let Ok(mut m) = ctx.last_step.lock() {
                m.insert(key.clone(), Instant::now());
            }
            let settling = ctx
                .last_step
                .lock()
                .ok()
                .and_then(|m| m.get(&key).copied())
                .is_some_and(|t| t.elapsed() < SETTLE);
            let disruptive = !matches!(step, Step::Idle | Step::Wait(_));
            if disruptive && settling {
                step = Step::Wait(format!(
                    "letting the last step settle before: {}",
                    step.describe().unwrap_or_default()
                ));
            }
            execute(ctx, &b, cluster, &observed.pods, &step).await?;
            if disruptive
                && !settling
                && let Ok(mut m) = ctx.last_step.lock()
            {
                m.insert(key, Instant::now());
            }
        }
    }
    observed.rolling = step.describe();

    let now = Time(jiff::Timestamp::now());
    let new_status = status::compute(cluster, &observed, &now);
    if cluster.status.as_ref() != Some(&new_status) {
        let api: Api<PostgresCluster> = Api::namespaced(client.clone(), &ns);
        let patch = serde_json::json!({
            "apiVersion": "pgwarden.io/v1alpha1",
            "kind": "PostgresCluster",
            "status": new_status,
        });
        api.patch_status(
            b.names.cluster(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    // Status follows the members even when no watched object changes (lag, timelines).
    let again = if matches!(step, Step::Idle) { 15 } else { 3 };
    Ok(Action::requeue(Duration::from_secs(again)))
}
