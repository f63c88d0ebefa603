//! Reconcile one `PostgresCluster`, one module per step: validate (pure) → observe → build
//! (pure) → server-side apply in dependency order → one rolling, scaling or switchover step →
//! status. Children carry a controller owner reference, so deleting the cluster deletes them;
//! PVCs follow `retainOnDelete` through the StatefulSet's retention policy. See
//! docs/architecture.md.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use super::build::{self, Cluster, state};
use super::metrics::Metrics;
use super::observe::{self, Observed};
use super::remembered::{self, Remembered};
use super::rolling::{self, Step};
use super::validate::{self, ValidatedCluster};
use super::{apply, backups, schedule, status, step};
use crate::api::cluster::SynchronousMode;
use crate::api::postgres_backup::PostgresBackupStatus;
use crate::api::{PostgresBackup, PostgresCluster};
use crate::common::agent_client::AgentClient;

/// The one field manager for everything the operator applies.
pub const MANAGER: &str = "pgwarden-operator";

/// A failed reconcile: the step and the object it failed on.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("validate: object has no {0}")]
    Incomplete(&'static str),
    #[error("observe: cannot read {kind} {name}: {source}")]
    Observe {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("apply: cannot apply {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        source: kube::Error,
    },
    #[error("apply: cannot generate a secret value: {0}")]
    Random(std::io::Error),
    #[error("step: cannot {action} {kind} {name}: {source}")]
    Step {
        action: &'static str,
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("status: cannot write the status of PostgresCluster {name}: {source}")]
    Status { name: String, source: kube::Error },
}

pub struct Context {
    pub client: Client,
    pub agent_image: String,
    pub agent_image_pull_policy: String,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub agents: AgentClient,
    /// What the operator remembers of each cluster (failures, settle gate), by `namespace/name`.
    pub remembered: Mutex<HashMap<String, Remembered>>,
    /// Failed reads of Nodes (a missing ClusterRole), logged once per interval with a count.
    pub node_errors: Mutex<crate::common::throttle::Throttle>,
}

impl Context {
    /// Read or update what is remembered of `cluster`.
    pub fn remember<T>(
        &self,
        cluster: &PostgresCluster,
        f: impl FnOnce(&mut Remembered) -> T,
    ) -> T {
        let key = format!(
            "{}/{}",
            cluster.namespace().unwrap_or_default(),
            cluster.name_any()
        );
        // A poisoned lock only means another reconcile panicked; its data is still whole.
        let mut map = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(key).or_default())
    }
}

pub async fn reconcile(
    cluster: Arc<PostgresCluster>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let result = reconcile_inner(&cluster, &ctx).await;
    ctx.metrics.reconciled(started.elapsed(), result.is_ok());
    if result.is_ok() {
        ctx.remember(&cluster, |r| r.failures = 0);
    }
    result
}

/// Exponential backoff per cluster (see [`remembered::backoff`]).
pub fn error_policy(
    cluster: Arc<PostgresCluster>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    let delay = remembered::backoff(ctx.remember(&cluster, Remembered::failed));
    warn!(namespace = ?cluster.namespace(), cluster = %cluster.name_any(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// A `PostgresBackup` naming a cluster that does not exist: the cluster controller never
/// reconciles a missing cluster, so this one fails the backup (src/operator/backups.rs decides
/// the status). It reads the cluster with a GET, not from a cache: a backup created right after
/// its cluster must not fail because a cache lags.
pub async fn reconcile_backup(
    backup: Arc<PostgresBackup>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let Some(status) = backups::orphaned(&backup) else {
        return Ok(Action::await_change());
    };
    let ns = backup
        .namespace()
        .ok_or(ReconcileError::Incomplete("namespace"))?;
    let cluster = &backup.spec.cluster;
    let exists = Api::<PostgresCluster>::namespaced(ctx.client.clone(), &ns)
        .get_opt(cluster)
        .await
        .map_err(|source| ReconcileError::Observe {
            kind: "PostgresCluster",
            name: cluster.clone(),
            source,
        })?
        .is_some();
    if exists {
        return Ok(Action::await_change());
    }
    let name = backup.name_any();
    warn!(namespace = %ns, backup = %name, cluster = %cluster, "a backup of a cluster that does not exist fails");
    write_backup_status(&ctx, &ns, &name, &status).await?;
    Ok(Action::await_change())
}

/// Replace the status of `PostgresBackup` `name` (every field: see `merge_patch`).
async fn write_backup_status(
    ctx: &Context,
    ns: &str,
    name: &str,
    status: &PostgresBackupStatus,
) -> Result<(), ReconcileError> {
    Api::<PostgresBackup>::namespaced(ctx.client.clone(), ns)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&status.merge_patch()),
        )
        .await
        .map_err(|source| ReconcileError::Step {
            action: "write the status of",
            kind: "PostgresBackup",
            name: name.to_string(),
            source,
        })?;
    Ok(())
}

/// Retry a `PostgresBackup` pass that could not reach the apiserver.
pub fn backup_error_policy(
    backup: Arc<PostgresBackup>,
    error: &ReconcileError,
    _ctx: Arc<Context>,
) -> Action {
    let retry = Duration::from_secs(30);
    warn!(namespace = ?backup.namespace(), backup = %backup.name_any(), error = %error, retry_in = ?retry, "backup pass failed");
    Action::requeue(retry)
}

/// Publish an Event on the cluster; a failure is logged, never fatal.
pub(super) async fn event(
    rec: &Recorder,
    cluster: &PostgresCluster,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = crate::common::events::event(type_, reason, note);
    if let Err(e) = rec.publish(&ev, &cluster.object_ref(&())).await {
        warn!(cluster = %cluster.name_any(), error = %e, "cannot publish an event");
    }
}

/// A Warning Event when the spec turns invalid (not on every reconcile while it stays so).
async fn report_invalid(
    ctx: &Context,
    cluster: &PostgresCluster,
    validated: &ValidatedCluster<'_>,
) {
    let Some(problem) = validated.spec_problem() else {
        return;
    };
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
            problem,
        )
        .await;
    }
}

/// The StatefulSet's replicas and the step this reconcile would take (pure).
fn decide(cluster: &PostgresCluster, c: &Cluster, observed: &Observed) -> (i32, Step) {
    let config = state::dynamic_config(c).fingerprint();
    // In synchronous mode only a published synchronous standby can be switched over to.
    let sync = (cluster.spec.ha.synchronous_mode != SynchronousMode::Off)
        .then_some(observed.sync.sync_standby.as_slice());
    let members = rolling::members(
        &observed.pods,
        observed.update_revision.as_deref(),
        &config,
        sync,
        &observed.cordoned_nodes,
    );
    let primary = status::primary(observed);
    rolling::plan(
        cluster.spec.instances,
        observed.replicas,
        members,
        primary.as_deref(),
    )
}

/// The backup request this reconcile applies: the oldest unfinished `PostgresBackup` first,
/// then the schedule (src/operator/backups.rs, src/operator/schedule.rs; both pure). The
/// `PostgresBackup` statuses are written first, so a result is recorded before a new request
/// replaces it.
async fn plan_backups(
    ctx: &Context,
    cluster: &PostgresCluster,
    observed: &Observed,
    now: jiff::Timestamp,
) -> Result<schedule::Plan, ReconcileError> {
    let unusable = backups::unusable(&cluster.name_any(), cluster.spec.backup.as_ref());
    let queue = backups::plan(
        &observed.backups,
        unusable.as_deref(),
        cluster
            .spec
            .backup
            .as_ref()
            .is_some_and(|b| b.immediate_checkpoint),
        observed.backup_request.as_ref(),
        observed.backup_result.as_ref(),
    );
    if !queue.statuses.is_empty() {
        let ns = cluster.namespace().unwrap_or_default();
        for (name, status) in &queue.statuses {
            write_backup_status(ctx, &ns, name, status).await?;
        }
    }
    if let Some(r) = &queue.request {
        info!(cluster = %cluster.name_any(), backup = %r.name, "on-demand backup requested");
    }
    let current = queue.request.as_ref().or(observed.backup_request.as_ref());
    // A new on-demand request has no result yet: the schedule sees it outstanding.
    let result = match &queue.request {
        Some(_) => None,
        None => observed.backup_result.as_ref(),
    };
    let status = cluster.status.as_ref();
    Ok(schedule::plan(
        // Without WAL archiving no backup could be restored: the schedule rests (and any
        // request it left is withdrawn) until archiving is on again.
        cluster.spec.backup.as_ref().filter(|b| b.wal_archiving),
        status
            .and_then(|s| s.last_scheduled_backup.as_ref())
            .map(|t| t.0),
        cluster
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(now, |t| t.0),
        current,
        result,
        now,
    ))
}

/// An Event when `ContinuousArchiving` turns False (with the reason) or True again.
async fn report_archiving(
    ctx: &Context,
    cluster: &PostgresCluster,
    new: &crate::api::PostgresClusterStatus,
) {
    let find = |conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| {
        conditions
            .iter()
            .find(|c| c.type_ == status::CONTINUOUS_ARCHIVING)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let old = cluster
        .status
        .as_ref()
        .and_then(|s| find(&s.conditions))
        .map(|(s, r, _)| (s, r));
    let Some((now, reason, message)) = find(&new.conditions) else {
        return;
    };
    match status::archiving_flip(
        old.as_ref().map(|(s, r)| (s.as_str(), r.as_str())),
        (&now, &reason),
    ) {
        Some(status::ArchivingFlip::Failing) => {
            event(&ctx.recorder, cluster, EventType::Warning, &reason, message).await
        }
        Some(status::ArchivingFlip::Resumed) => {
            event(
                &ctx.recorder,
                cluster,
                EventType::Normal,
                "ArchivingResumed",
                message,
            )
            .await
        }
        None => {}
    }
}

/// Events for the backups: asked for, skipped, and a result that changed since the status.
async fn report_backups(
    ctx: &Context,
    cluster: &PostgresCluster,
    observed: &Observed,
    plan: &schedule::Plan,
) {
    if let Some(why) = &plan.skipped {
        event(
            &ctx.recorder,
            cluster,
            EventType::Warning,
            "BackupSkipped",
            why.clone(),
        )
        .await;
    } else if let (Some(_), Some(r)) = (plan.fired, &plan.request) {
        info!(cluster = %cluster.name_any(), backup = %r.name, "scheduled backup requested");
        event(
            &ctx.recorder,
            cluster,
            EventType::Normal,
            "BackupScheduled",
            format!("asked the primary for a {} backup ({})", r.type_, r.name),
        )
        .await;
    }
    let Some(result) = observed.backup_result.as_ref().filter(|r| r.finished()) else {
        return;
    };
    let known = cluster.status.as_ref().and_then(|s| s.last_backup.as_ref());
    if known == Some(result) {
        return;
    }
    let (type_, reason, note) = match &result.error {
        None => (
            EventType::Normal,
            "BackupCompleted",
            format!(
                "backup {} completed on {}: {}",
                result.name,
                result.member,
                result.label.as_deref().unwrap_or("no label")
            ),
        ),
        Some(e) => (
            EventType::Warning,
            "BackupFailed",
            format!("backup {} failed on {}: {e}", result.name, result.member),
        ),
    };
    event(&ctx.recorder, cluster, type_, reason, note).await;
}

async fn reconcile_inner(
    cluster: &PostgresCluster,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    if cluster.metadata.deletion_timestamp.is_some() {
        // Owner references take the children with it.
        return Ok(Action::await_change());
    }
    // 1. validate (pure); an invalid spec is reported, observed and shown in the status only.
    let mut validated = validate::validate(cluster, &ctx.agent_image, &ctx.agent_image_pull_policy)
        .ok_or(ReconcileError::Incomplete("name, namespace or uid"))?;
    // 2. observe; the Secrets spec.backup names are checked like the spec.
    let mut observed = observe::observe(&ctx.client, validated.identity()).await?;
    if let Some(s3) = cluster.spec.backup.as_ref().map(|b| &b.repository.s3) {
        let mut names = vec![s3.credentials_secret.as_str()];
        names.extend(s3.ca_secret.as_deref());
        observed.backup_secrets =
            observe::secrets(&ctx.client, &validated.identity().namespace, &names).await?;
        validated.problems.extend(validate::secret_problems(
            cluster.spec.backup.as_ref(),
            &observed.backup_secrets,
        ));
    }
    report_invalid(ctx, cluster, &validated).await;
    observed.cordoned_nodes = observe::cordoned_nodes(&ctx.client, &observed.pods, |e| {
        let hit = ctx.node_errors.lock().map(|mut t| t.hit(Instant::now()));
        if let Ok(Some(n)) = hit {
            warn!(error = %e, failures = n, "cannot read the nodes of the cluster's pods; a drain of the primary's node waits until the primary moves by other means");
        }
    })
    .await;
    let mut step = Step::Idle;
    let mut backup_plan = None;
    if let Some(c) = validated.buildable() {
        let (replicas, planned) = decide(cluster, c, &observed);
        let plan = plan_backups(ctx, cluster, &observed, jiff::Timestamp::now()).await?;
        // 3. build (pure) and 4. apply.
        apply::children(
            ctx,
            cluster,
            c,
            &build::children(c, replicas, plan.request.as_ref()),
        )
        .await?;
        report_backups(ctx, cluster, &observed, &plan).await;
        backup_plan = Some(plan);
        // 5. step, unless the cluster is paused.
        if !cluster.spec.pause {
            step = step::run(ctx, cluster, c, &observed, planned).await?;
        }
    }
    // 6. status.
    let mut new_status = status::compute(
        cluster,
        &observed,
        validated.spec_problem().as_deref(),
        step.describe().as_deref(),
        &Time(jiff::Timestamp::now()),
    );
    if let Some(fired) = backup_plan.and_then(|p| p.fired) {
        new_status.last_scheduled_backup = Some(Time(fired));
    }
    report_archiving(ctx, cluster, &new_status).await;
    apply::status(&ctx.client, cluster, validated.identity(), new_status).await?;
    // Status follows the members even when no watched object changes (lag, timelines).
    let again = if matches!(step, Step::Idle) { 15 } else { 3 };
    Ok(Action::requeue(Duration::from_secs(again)))
}
