//! The CLI's only I/O: the apiserver, and the agents through the apiserver's pod proxy
//! (`/api/v1/namespaces/{ns}/pods/{pod}:8008/proxy/{path}`), so everything works from wherever
//! the kubeconfig works. Every failure becomes a [`CliError`] a person can act on.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use http::Method;
use http_body_util::BodyExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::Value;

use crate::api::PostgresCluster;
use crate::api::names::{LABEL_CLUSTER, ObjectNames, REST_PORT};
use crate::api::patroni::TOKEN_HEADER;

use super::error::{CliError, Result};
use super::model::Snapshot;

/// How long one request to an agent may take (a switchover answers after up to ~20 s, a
/// restart after up to 120 s).
const AGENT_TIMEOUT: Duration = Duration::from_secs(150);

pub struct Session {
    pub client: Client,
    pub namespace: String,
    /// The apiserver's URL, for error messages.
    pub url: String,
}

/// What an agent answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentReply {
    pub code: u16,
    pub body: String,
}

impl AgentReply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// The innermost cause of an error: "Connection refused (os error 111)" rather than "client
/// error (Connect)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

impl Session {
    /// The client for `--kubeconfig` (else `$KUBECONFIG`, else `~/.kube/config`, else the
    /// in-cluster service account) and `--context`; the namespace from `-n`, else the
    /// context's, else `default`.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Session> {
        let options = KubeConfigOptions {
            context: context.map(str::to_string),
            ..Default::default()
        };
        let mut config = match kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| {
                    CliError::failed(format!(
                        "cannot read the kubeconfig {}: {}",
                        path.display(),
                        root_cause(&e)
                    ))
                })?;
                Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| CliError::failed(format!("invalid kubeconfig: {e}")))?
            }
            None => match Kubeconfig::read() {
                Ok(kc) => Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| CliError::failed(format!("invalid kubeconfig: {e}")))?,
                Err(read_err) => {
                    if context.is_some() {
                        return Err(CliError::failed(format!(
                            "cannot read a kubeconfig for --context: {}",
                            root_cause(&read_err)
                        )));
                    }
                    Config::incluster().map_err(|_| {
                        CliError::failed(format!(
                            "no usable kubeconfig ({read_err}) and not running in a pod: set \
                             KUBECONFIG or pass --kubeconfig"
                        ))
                    })?
                }
            },
        };
        // The CLI decides itself what to retry: the client's automatic retry of 503 answers
        // would repeat a refused restart or switchover.
        config.default_retry = false;
        let url = config.cluster_url.to_string();
        let url = url.trim_end_matches('/').to_string();
        let namespace = namespace
            .map(str::to_string)
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)
            .map_err(|e| CliError::failed(format!("cannot build a Kubernetes client: {e}")))?;
        Ok(Session {
            client,
            namespace,
            url,
        })
    }

    /// Turn a client error into a sentence: unreachable apiserver, or the apiserver's message.
    pub fn error(&self, e: kube::Error, doing: &str) -> CliError {
        match e {
            kube::Error::Api(status) => {
                let msg = if status.message.is_empty() {
                    format!("{} {}", status.code, status.reason)
                } else {
                    status.message.clone()
                };
                CliError::failed(format!("{doing}: {msg}"))
            }
            kube::Error::HyperError(_) | kube::Error::Service(_) => {
                CliError::unreachable(&self.url, &root_cause(&e))
            }
            other => CliError::failed(format!("{doing}: {}", root_cause(&other))),
        }
    }

    fn clusters(&self) -> Api<PostgresCluster> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Names of every PostgresCluster in the namespace.
    pub async fn cluster_names(&self) -> Result<Vec<String>> {
        match self.clusters().list(&ListParams::default()).await {
            Ok(l) => {
                let mut names: Vec<String> = l
                    .items
                    .into_iter()
                    .filter_map(|c| c.metadata.name)
                    .collect();
                names.sort();
                Ok(names)
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Err(CliError::crd_missing()),
            Err(e) => Err(self.error(e, "cannot list PostgresClusters")),
        }
    }

    pub async fn cluster(&self, name: &str) -> Result<PostgresCluster> {
        match self.clusters().get_opt(name).await {
            Ok(Some(c)) => Ok(c),
            Ok(None) => Err(CliError::cluster_not_found(name, &self.namespace)),
            Err(e) => Err(self.error(e, &format!("cannot read PostgresCluster {name}"))),
        }
    }

    /// The cluster, its pods, the Lease holder and the `<c>-state` data, read at once.
    pub async fn snapshot(&self, name: &str) -> Result<Snapshot> {
        let names = ObjectNames::new(name);
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("{LABEL_CLUSTER}={name}");
        let lp = ListParams::default().labels(&selector);
        let lease_name = names.lease();
        let cm_name = names.state_config_map();
        let (cluster, pods, lease, cm) = tokio::join!(
            self.cluster(name),
            pods_api.list(&lp),
            leases.get_opt(&lease_name),
            cms.get_opt(&cm_name),
        );
        let cluster = cluster?;
        let pods = pods
            .map_err(|e| self.error(e, &format!("cannot list the pods of {name}")))?
            .items;
        let lease_holder = lease
            .map_err(|e| self.error(e, &format!("cannot read Lease {lease_name}")))?
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty());
        let state: BTreeMap<String, String> = cm
            .map_err(|e| self.error(e, &format!("cannot read ConfigMap {cm_name}")))?
            .and_then(|c| c.data)
            .unwrap_or_default();
        Ok(Snapshot {
            namespace: self.namespace.clone(),
            cluster,
            pods,
            lease_holder,
            state,
        })
    }

    /// The cluster's API token (Secret `<c>-api`, key `token`).
    pub async fn token(&self, cluster: &str) -> Result<String> {
        let secret_name = ObjectNames::new(cluster).secret_api();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = secrets.get_opt(&secret_name).await.map_err(|e| {
            self.error(
                e,
                &format!("cannot read Secret {secret_name} (the cluster's API token)"),
            )
        })?;
        secret
            .and_then(|s| s.data)
            .and_then(|d| d.get("token").cloned())
            .and_then(|t| String::from_utf8(t.0).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| CliError::token_secret_missing(&secret_name, &self.namespace))
    }

    /// One request to a member's agent through the apiserver's pod proxy. `Ok` is whatever the
    /// agent answered (any status); `Err` means the agent could not be reached.
    pub async fn agent(
        &self,
        pod: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Result<AgentReply> {
        let uri = format!(
            "/api/v1/namespaces/{}/pods/{pod}:{REST_PORT}/proxy/{}",
            self.namespace,
            path.trim_start_matches('/')
        );
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(http::header::ACCEPT, "application/json, text/plain");
        if let Some(t) = token {
            req = req.header(TOKEN_HEADER, t);
        }
        let bytes = match body {
            Some(b) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                serde_json::to_vec(b).unwrap_or_default()
            }
            None => vec![],
        };
        let req = req
            .body(kube::client::Body::from(bytes))
            .map_err(|e| CliError::failed(format!("cannot build the request {uri}: {e}")))?;
        let unreachable = |why: String| agent_unreachable(pod, &method, path, &why);
        let res = match tokio::time::timeout(AGENT_TIMEOUT, self.client.send(req)).await {
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {} s",
                    AGENT_TIMEOUT.as_secs()
                )));
            }
            Ok(Err(e)) => return Err(self.error(e, &format!("cannot call pod {pod}"))),
            Ok(Ok(r)) => r,
        };
        let code = res.status().as_u16();
        let body = res
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .map_err(|e| unreachable(root_cause(&e)))?;
        if let Some(msg) = proxy_failure(code, &body) {
            return Err(unreachable(msg));
        }
        Ok(AgentReply { code, body })
    }

    /// Merge-patch `spec.pause`.
    pub async fn set_pause(&self, cluster: &str, pause: bool) -> Result<()> {
        let patch = serde_json::json!({"spec": {"pause": pause}});
        self.clusters()
            .patch(cluster, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| self.error(e, &format!("cannot update PostgresCluster {cluster}")))
    }

    /// events.k8s.io/v1 Events regarding an object named `cluster`.
    pub async fn events(&self, cluster: &str) -> Result<Vec<Event>> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let events = api
            .list(&ListParams::default())
            .await
            .map_err(|e| self.error(e, "cannot list Events"))?;
        Ok(events
            .items
            .into_iter()
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .and_then(|r| r.name.as_deref())
                    .is_some_and(|n| n == cluster)
            })
            .collect())
    }
}

/// An agent that could not be asked.
pub fn agent_unreachable(pod: &str, method: &Method, path: &str, why: &str) -> CliError {
    CliError::failed(format!(
        "cannot reach the agent of pod {pod} ({method} /{}): {why}",
        path.trim_start_matches('/')
    ))
}

/// The apiserver's own answer (a `v1` `Status`) instead of the agent's: the pod could not be
/// reached, or the caller may not use the pod proxy. Agents never answer with a `Status`.
pub fn proxy_failure(code: u16, body: &str) -> Option<String> {
    if code < 400 {
        return None;
    }
    let v: Value = serde_json::from_str(body).ok()?;
    if v.get("kind").and_then(Value::as_str) != Some("Status")
        || v.get("apiVersion").and_then(Value::as_str) != Some("v1")
    {
        return None;
    }
    Some(
        v.get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("the apiserver answered {code}")),
    )
}
