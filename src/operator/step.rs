//! Reconcile step 5, step (needs the client and the agents' REST API): the switchover the
//! `pgwarden.io/switchover-to` annotation asks for, then at most one rolling or scaling step
//! through the settle gate, each outcome an Event. See docs/architecture.md.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::info;

use super::build::{Cluster, state};
use super::controller::{Context, ReconcileError, event};
use super::observe::Observed;
use super::remembered::{self, Gate};
use super::rolling::Step;
use super::status;
use crate::api::PostgresCluster;
use crate::api::names::ANNOTATION_SWITCHOVER_TO;
use crate::api::patroni::paths;

/// Why an agent did not do what it was asked; the text goes into a Warning Event.
#[derive(Debug, thiserror::Error)]
pub enum AgentCallError {
    #[error("{0}")]
    Token(kube::Error),
    #[error("Secret with the API token is missing")]
    NoToken,
    #[error("{0} has no address")]
    NoAddress(String),
    #[error("agent answered {code}: {text}")]
    Refused { code: u16, text: String },
    #[error("the agent of {0} did not answer")]
    NoAnswer(String),
}

/// Run the step `planned` (the annotation's switchover first), held back by the settle gate;
/// the step that ran, for the status.
pub async fn run(
    ctx: &Context,
    cluster: &PostgresCluster,
    c: &Cluster<'_>,
    observed: &Observed,
    planned: Step,
) -> Result<Step, ReconcileError> {
    let primary = status::primary(observed);
    switchover_annotation(ctx, cluster, c, &observed.pods, primary.as_deref()).await?;
    let now = Instant::now();
    let fingerprint = state::dynamic_config(c).fingerprint();
    let gate = ctx.remember(cluster, |r| {
        r.saw_config(&fingerprint, now);
        remembered::gate(r, now)
    });
    let step = remembered::through(gate, planned);
    execute(ctx, cluster, c, &observed.pods, &step).await?;
    if gate == Gate::Open && step.is_disruptive() {
        ctx.remember(cluster, |r| r.last_step = Some(Instant::now()));
    }
    Ok(step)
}

async fn api_token(ctx: &Context, c: &Cluster<'_>) -> Result<String, AgentCallError> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &c.namespace);
    api.get_opt(&c.names.secret_api())
        .await
        .map_err(AgentCallError::Token)?
        .and_then(|s| s.data)
        .and_then(|d| {
            d.get("token")
                .map(|t| String::from_utf8_lossy(&t.0).into_owned())
        })
        .ok_or(AgentCallError::NoToken)
}

/// `POST path` to the agent of `pod`; `Ok` on its 200.
async fn call_agent(
    ctx: &Context,
    c: &Cluster<'_>,
    pods: &[Pod],
    pod: &str,
    path: &str,
    body: serde_json::Value,
    timeout: Duration,
) -> Result<(), AgentCallError> {
    let token = api_token(ctx, c).await?;
    let ip = pods
        .iter()
        .find(|p| p.name_any() == pod)
        .and_then(|p| p.status.as_ref()?.pod_ip.clone())
        .ok_or_else(|| AgentCallError::NoAddress(pod.to_string()))?;
    match ctx.agents.post(&ip, path, &body, &token, timeout).await {
        Some((200, _)) => Ok(()),
        Some((code, text)) => Err(AgentCallError::Refused {
            code,
            text: text.trim().to_string(),
        }),
        None => Err(AgentCallError::NoAnswer(pod.to_string())),
    }
}

/// Ask the primary's agent to hand over to `to`.
async fn switchover(
    ctx: &Context,
    c: &Cluster<'_>,
    pods: &[Pod],
    from: &str,
    to: &str,
) -> Result<(), AgentCallError> {
    let body = serde_json::json!({"leader": from, "candidate": to});
    call_agent(
        ctx,
        c,
        pods,
        from,
        paths::SWITCHOVER,
        body,
        Duration::from_secs(30),
    )
    .await
}

async fn execute(
    ctx: &Context,
    cluster: &PostgresCluster,
    c: &Cluster<'_>,
    pods: &[Pod],
    step: &Step,
) -> Result<(), ReconcileError> {
    let (type_, reason, note) = match step {
        Step::Idle | Step::Wait(_) => return Ok(()),
        Step::DeletePod { pod, reason } => {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &c.namespace);
            info!(namespace = %c.namespace, cluster = %c.names.cluster(), member = %pod, reason, "recreating pod");
            match api.delete(pod, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => {
                    return Err(ReconcileError::Step {
                        action: "delete",
                        kind: "Pod",
                        name: pod.clone(),
                        source,
                    });
                }
            }
            let note = format!("Recreating {pod}: {reason}");
            (EventType::Normal, "RollingUpdate", note)
        }
        Step::Restart { pod, reason } => {
            info!(namespace = %c.namespace, cluster = %c.names.cluster(), member = %pod, reason, "restarting postgres");
            let body = serde_json::json!({});
            match call_agent(
                ctx,
                c,
                pods,
                pod,
                paths::RESTART,
                body,
                Duration::from_secs(120),
            )
            .await
            {
                Ok(()) => (
                    EventType::Normal,
                    "RollingRestart",
                    format!("Restarted PostgreSQL on {pod}: {reason}"),
                ),
                Err(e) => (
                    EventType::Warning,
                    "RestartFailed",
                    format!("Restart of {pod} failed: {e}"),
                ),
            }
        }
        Step::Switchover { from, to, reason } => {
            info!(namespace = %c.namespace, cluster = %c.names.cluster(), from, to, reason, "switching over");
            match switchover(ctx, c, pods, from, to).await {
                Ok(()) => (
                    EventType::Normal,
                    "Switchover",
                    format!("Switched over from {from} to {to}: {reason}"),
                ),
                Err(e) => (
                    EventType::Warning,
                    "SwitchoverFailed",
                    format!("Switchover from {from} to {to} failed: {e}"),
                ),
            }
        }
    };
    event(&ctx.recorder, cluster, type_, reason, note).await;
    Ok(())
}

/// `pgwarden.io/switchover-to=<pod>`: ask for it once, record the outcome as an Event, remove
/// the annotation whatever the outcome (a refused request is not retried behind the user's back).
async fn switchover_annotation(
    ctx: &Context,
    cluster: &PostgresCluster,
    c: &Cluster<'_>,
    pods: &[Pod],
    primary: Option<&str>,
) -> Result<(), ReconcileError> {
    let Some(target) = cluster.annotations().get(ANNOTATION_SWITCHOVER_TO).cloned() else {
        return Ok(());
    };
    let (type_, reason, note) = match primary {
        None => (
            EventType::Warning,
            "SwitchoverRefused",
            format!("Switchover to {target} refused: the cluster has no primary"),
        ),
        Some(p) if p == target => (
            EventType::Normal,
            "SwitchoverSkipped",
            format!("{target} is already the primary"),
        ),
        Some(p) => match switchover(ctx, c, pods, p, &target).await {
            Ok(()) => (
                EventType::Normal,
                "Switchover",
                format!("Switched over from {p} to {target} as the annotation asked"),
            ),
            Err(e) => (
                EventType::Warning,
                "SwitchoverRefused",
                format!("Switchover from {p} to {target} refused: {e}"),
            ),
        },
    };
    event(&ctx.recorder, cluster, type_, reason, note).await;
    let api: Api<PostgresCluster> = Api::namespaced(ctx.client.clone(), &c.namespace);
    let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_SWITCHOVER_TO: null}}});
    api.patch(
        c.names.cluster(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| ReconcileError::Step {
        action: "remove the switchover annotation from",
        kind: "PostgresCluster",
        name: c.names.cluster().to_string(),
        source,
    })?;
    Ok(())
}
