//! The operator's own leader election on Lease `pgwarden-operator` in its namespace, so two
//! replicas run safely: compare-and-swap on resourceVersion (a 409 means someone else won),
//! expiry judged on our own monotonic clock since we last saw the Lease change. A leader that
//! cannot renew within the renew deadline stops the process rather than risk two leaders.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tracing::{info, warn};

pub const LEASE_NAME: &str = "pgwarden-operator";
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

pub struct Elector {
    api: Api<Lease>,
    me: String,
    seen: Option<String>,
    seen_at: Instant,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, me: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            me: me.to_string(),
            seen: None,
            seen_at: Instant::now(),
        }
    }

    /// One attempt to take or keep the lease; `Ok(true)` while we hold it.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(LEASE_NAME).await?;
        let rv = current
            .as_ref()
            .and_then(|l| l.metadata.resource_version.clone());
        if rv != self.seen {
            self.seen = rv;
            self.seen_at = Instant::now();
        }
        let holder = current
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.me.as_str());
        let expired = self.seen_at.elapsed() > LEASE_DURATION;
        if holder.is_some() && !mine && !expired {
            return Ok(false);
        }
        let now = MicroTime(jiff::Timestamp::now());
        let mut lease = current.clone().unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                ..Default::default()
            },
            spec: None,
        });
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if !mine {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.me.clone());
        spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
        spec.renew_time = Some(now);
        let written = match current {
            Some(_) => {
                self.api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
            }
            None => self.api.create(&PostParams::default(), &lease).await,
        };
        match written {
            Ok(l) => {
                if !mine {
                    info!(holder = %self.me, "became the operator leader");
                }
                self.seen = l.metadata.resource_version;
                self.seen_at = Instant::now();
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Block until we hold the lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "operator leader election"),
            }
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    }

    /// Renew until a renew fails for longer than the deadline; returns when leadership is lost.
    pub async fn keep(&mut self) {
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(RETRY_PERIOD).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = Instant::now(),
                Ok(false) => {
                    warn!("another operator replica took the leader lease");
                    return;
                }
                Err(e) => warn!(error = %e, "cannot renew the operator leader lease"),
            }
            if last_ok.elapsed() > RENEW_DEADLINE {
                warn!("could not renew the operator leader lease in time");
                return;
            }
        }
    }
}
