//! The operator's own leader election on Lease `pgwarden-operator` in its namespace, so two
//! replicas run safely: compare-and-swap on resourceVersion (a 409 means someone else won),
//! expiry judged on our own monotonic clock since we last saw the Lease change. A leader that
//! cannot renew within the renew deadline stops the process rather than risk two leaders.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, Client};
use tracing::{info, warn};

use crate::common::lease::{self, LeaseClock};

pub const LEASE_NAME: &str = "pgwarden-operator";
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

pub struct Elector {
    api: Api<Lease>,
    me: String,
    clock: LeaseClock,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, me: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            me: me.to_string(),
            clock: LeaseClock::new(),
        }
    }

    /// One attempt to take or keep the lease; `Ok(true)` while we hold it.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(LEASE_NAME).await?;
        self.clock.observe(current.as_ref(), Instant::now());
        let holder = current.as_ref().and_then(lease::holder);
        let mine = holder == Some(self.me.as_str());
        let expired = self.clock.expired(LEASE_DURATION, Instant::now());
        if holder.is_some() && !mine && !expired {
            return Ok(false);
        }
        let mut lease = current.clone().unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                ..Default::default()
            },
            spec: None,
        });
        lease::stamp(&mut lease, Some(&self.me), LEASE_DURATION, !mine);
        match lease::write(&self.api, LEASE_NAME, current.is_some(), &lease).await {
            Ok(written) => {
                if !mine {
                    info!(holder = %self.me, "became the operator leader");
                }
                self.clock.observe(Some(&written), Instant::now());
                Ok(true)
            }
            Err(e) if lease::is_conflict(&e) => Ok(false),
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
