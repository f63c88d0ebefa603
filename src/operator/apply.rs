//! Reconcile steps 4 and 6, apply (needs the client): server-side apply of the children under one
//! field manager in dependency order (RBAC, Secrets, Services, PDB, Lease, state ConfigMap,
//! StatefulSet last), Secrets created once and never touched again, and the status write.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::info;

use super::build::{Children, Cluster, secrets};
use super::controller::{Context, MANAGER, ReconcileError, event};
use crate::api::{PostgresCluster, PostgresClusterStatus};

async fn apply<K>(client: &Client, ns: &str, obj: &K) -> Result<(), ReconcileError>
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
    .map_err(|source| ReconcileError::Apply {
        kind: K::kind(&()).into_owned(),
        name,
        source,
    })
}

/// Apply every child, in the documented order.
pub async fn children(
    ctx: &Context,
    cluster: &PostgresCluster,
    c: &Cluster<'_>,
    children: &Children,
) -> Result<(), ReconcileError> {
    let (client, ns) = (&ctx.client, c.namespace.as_str());
    apply(client, ns, &children.service_account).await?;
    apply(client, ns, &children.role).await?;
    apply(client, ns, &children.role_binding).await?;
    ensure_secrets(ctx, cluster, c).await?;
    for svc in &children.services {
        apply(client, ns, svc).await?;
    }
    for pdb in &children.pod_disruption_budgets {
        apply(client, ns, pdb).await?;
    }
    apply(client, ns, &children.lease).await?;
    apply(client, ns, &children.state_config_map).await?;
    apply(client, ns, &children.statefulset).await
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
    ctx: &Context,
    cluster: &PostgresCluster,
    c: &Cluster<'_>,
) -> Result<(), ReconcileError> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &c.namespace);
    let mut values = Vec::with_capacity(4);
    for _ in 0..4 {
        values.push(random_secret().map_err(ReconcileError::Random)?);
    }
    let wanted = secrets::secrets(c, [&values[0], &values[1], &values[2], &values[3]]);
    for secret in wanted {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let failed = |source| ReconcileError::Apply {
            kind: "Secret".into(),
            name: name.clone(),
            source,
        };
        if api.get_opt(&name).await.map_err(failed)?.is_some() {
            continue;
        }
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                info!(namespace = %c.namespace, cluster = %c.names.cluster(), secret = %name, "created secret");
                event(
                    &ctx.recorder,
                    cluster,
                    EventType::Normal,
                    "SecretCreated",
                    format!("Generated Secret {name}"),
                )
                .await;
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(())
}

/// Write the status when it differs from what the cluster shows.
pub async fn status(
    client: &Client,
    cluster: &PostgresCluster,
    c: &Cluster<'_>,
    new_status: PostgresClusterStatus,
) -> Result<(), ReconcileError> {
    if cluster.status.as_ref() == Some(&new_status) {
        return Ok(());
    }
    let api: Api<PostgresCluster> = Api::namespaced(client.clone(), &c.namespace);
    let patch = serde_json::json!({
        "apiVersion": "pgwarden.io/v1alpha1",
        "kind": "PostgresCluster",
        "status": new_status,
    });
    api.patch_status(
        c.names.cluster(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|source| ReconcileError::Status {
        name: c.names.cluster().to_string(),
        source,
    })
}
