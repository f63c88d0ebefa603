//! The DCS on Kubernetes: the leader Lease `<c>-leader`, the state ConfigMap `<c>-state`, and the
//! member annotations on the cluster's pods. Every write to the Lease or the ConfigMap is a
//! compare-and-swap on `resourceVersion` (PUT; 409 = lost). Lease expiry is judged on this
//! process's monotonic clock: `ttl` since it last saw the Lease change, never by comparing wall
//! clocks across pods.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tracing::warn;

use crate::agent::ha::{DcsView, Initialize, LeaseView, MemberView, SwitchoverRequest};
use crate::api::member::MemberStatus;
use crate::api::names::{
    self, ANNOTATION_STATUS, LABEL_CLUSTER, LABEL_ROLE, ObjectNames, ROLE_PRIMARY,
};

/// Lease annotation with the primary's last WAL position (Patroni's `optime`).
pub const ANNOTATION_OPTIME: &str = "pgwarden.io/optime";

use crate::api::cluster::owner_reference;
use crate::api::state::DynamicConfig;
pub use crate::api::state::keys;
use crate::common::lease::{self, LeaseClock, is_conflict};
use crate::common::throttle::Throttle;

#[derive(Debug, thiserror::Error)]
pub enum DcsError {
    #[error("apiserver request timed out")]
    Timeout,
    #[error("apiserver: {0}")]
    Kube(#[from] kube::Error),
    #[error("lost the compare-and-swap on {0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

pub use crate::api::state::{HistoryEntry, SwitchoverKey, SyncState};

/// What one read of the DCS returns.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub lease: LeaseView,
    pub lease_object: Option<Lease>,
    pub state: Option<ConfigMap>,
    pub initialize: Initialize,
    pub history: Vec<HistoryEntry>,
    pub sync: SyncState,
    pub switchover: Option<SwitchoverRequest>,
    /// When the switchover request is scheduled for, if it is.
    pub switchover_scheduled_at: Option<jiff::Timestamp>,
    pub paused: bool,
    /// The operator's dynamic configuration; `None` when absent or corrupt.
    pub config: Option<DynamicConfig>,
    pub leader_optime: Option<u64>,
    pub members: Vec<(String, MemberStatus)>,
    /// Every pod of the cluster, with or without a status annotation.
    pub pod_names: Vec<String>,
    /// The other pods that carry the `primary` role label (as read this cycle).
    pub labelled_primary: Vec<String>,
}

impl Snapshot {
    /// `cluster.timeline` in Patroni: last history timeline + 1, or 1.
    pub fn cluster_timeline(&self) -> u32 {
        self.history.last().map(|h| h.timeline + 1).unwrap_or(1)
    }

    pub fn member_views(&self) -> Vec<MemberView> {
        self.members
            .iter()
            .map(|(name, s)| MemberView {
                name: name.clone(),
                running: s.state == crate::api::member::MemberState::Running,
                nofailover: s.tags.nofailover,
                lsn: s.xlog_location,
                timeline: s.timeline,
            })
            .collect()
    }

    /// What `ha::decide` sees of this snapshot at `now`.
    pub fn view(&self, now: jiff::Timestamp) -> DcsView {
        DcsView {
            lease: self.lease.clone(),
            initialize: self.initialize.clone(),
            leader_optime: self.leader_optime,
            cluster_timeline: self.cluster_timeline(),
            members: self.member_views(),
            // A scheduled switchover is invisible to the HA rules until its time comes.
            switchover: self.switchover.clone().filter(|_| self.switchover_due(now)),
            sync_standbys: self.sync.sync_standby.clone(),
            sync_leader: self.sync.leader.clone(),
        }
    }

    /// Whether the switchover request is due: unscheduled ones at once, scheduled ones from
    /// their time.
    fn switchover_due(&self, now: jiff::Timestamp) -> bool {
        self.switchover_scheduled_at.is_none_or(|t| t <= now)
    }

    /// A scheduled switchover the leader missed by more than this is dropped, not run late
    /// (Patroni: 1.5 x loop_wait; never less than 10 s here, as our loop_wait is short).
    pub fn switchover_stale(&self, now: jiff::Timestamp, loop_wait: Duration) -> bool {
        let window = loop_wait.mul_f64(1.5).max(Duration::from_secs(10));
        self.switchover_scheduled_at
            .is_some_and(|t| now.duration_since(t).as_secs_f64() > window.as_secs_f64())
    }

    /// The operator's latest backup request and the result the agents last wrote (`None` for
    /// an absent or corrupt key: logged, and then nothing runs until the key is rewritten).
    pub fn backup_keys(
        &self,
        cluster: &str,
    ) -> (
        Option<crate::api::state::BackupRequest>,
        Option<crate::api::state::BackupResult>,
    ) {
        let Some(data) = self.state.as_ref().and_then(|c| c.data.as_ref()) else {
            return (None, None);
        };
        (
            parse_key(data, keys::BACKUP, cluster),
            parse_key(data, keys::BACKUP_RESULT, cluster),
        )
    }

    pub fn holder(&self) -> Option<&str> {
        match &self.lease {
            LeaseView::Held { holder, .. } => Some(holder),
            LeaseView::Free => None,
        }
    }
}

pub struct Dcs {
    leases: Api<Lease>,
    config_maps: Api<ConfigMap>,
    pods: Api<Pod>,
    endpoint_slices: Api<EndpointSlice>,
    names: ObjectNames,
    me: String,
    ttl: Duration,
    timeout: Duration,
    clock: LeaseClock,
    published_status: Option<String>,
    published_role: Option<Option<String>>,
    /// Other pods whose `primary` label this agent removed since the last read (the snapshot
    /// still lists them until the next one).
    unlabelled: std::collections::BTreeSet<String>,
    /// This member took the Lease since the last read (the snapshot still names the one before).
    acquired: bool,
    /// The last Lease this member took was free (released by a primary that stopped cleanly),
    /// not expired: a handover, whose former primary is alive and refuses every client.
    acquired_free: bool,
    /// The PostgresCluster's uid, when an operator runs the cluster: a Lease this member has to
    /// create carries the cluster's owner reference, so deleting the cluster deletes it.
    owner_uid: Option<String>,
    /// The Lease watch's sightings, once the loop runs one.
    sightings: Option<std::sync::Arc<LeaseSightings>>,
}

impl Dcs {
    pub fn new(
        client: Client,
        namespace: &str,
        cluster: &str,
        me: &str,
        ttl: Duration,
        timeout: Duration,
    ) -> Self {
        Self {
            leases: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client.clone(), namespace),
            endpoint_slices: Api::namespaced(client, namespace),
            names: ObjectNames::new(cluster),
            me: me.to_string(),
            ttl,
            timeout,
            // A restarted member waits a full ttl before it trusts an unchanged lease is dead.
            clock: LeaseClock::new(),
            published_status: None,
            published_role: None,
            unlabelled: Default::default(),
            acquired: false,
            acquired_free: false,
            owner_uid: None,
            sightings: None,
        }
    }

    /// Count the Lease's age from the watch's sightings (see [`LeaseSightings`]).
    pub fn use_sightings(&mut self, sightings: std::sync::Arc<LeaseSightings>) {
        self.sightings = Some(sightings);
    }

    /// What an object this member creates carries: the cluster's owner reference, if known.
    fn owner_references(&self) -> Option<Vec<OwnerReference>> {
        self.owner_uid
            .as_deref()
            .map(|uid| vec![owner_reference(self.names.cluster(), uid)])
    }

    /// Owned by the PostgresCluster with this uid (see `owner_uid`).
    pub fn owned_by(mut self, uid: Option<&str>) -> Self {
        self.owner_uid = uid.map(str::to_string);
        self
    }

    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, DcsError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(DcsError::Timeout),
        }
    }

    /// Read the Lease, the state ConfigMap and the members.
    pub async fn read(&mut self) -> Result<Snapshot, DcsError> {
        self.unlabelled.clear();
        self.acquired = false;
        let lease_name = self.names.lease();
        let state_name = self.names.state_config_map();
        let selector =
            ListParams::default().labels(&format!("{LABEL_CLUSTER}={}", self.names.cluster()));
        let (lease, state, pods) = tokio::join!(
            self.bounded(self.leases.get_opt(&lease_name)),
            self.bounded(self.config_maps.get_opt(&state_name)),
            // Metadata only (names, labels, the status annotation): a fraction of the bytes of
            // whole pods to send, parse and allocate every loop.
            self.bounded(self.pods.list_metadata(&selector)),
        );
        let lease = lease?;
        let state = state?;
        let pods = pods?;

        let lease_view = self.observe_lease(lease.as_ref());
        let leader_optime = lease
            .as_ref()
            .and_then(|l| l.metadata.annotations.as_ref())
            .and_then(|a| a.get(ANNOTATION_OPTIME))
            .and_then(|v| v.parse().ok());

        let data = state
            .as_ref()
            .and_then(|c| c.data.clone())
            .unwrap_or_default();
        let initialize = match (data.get(keys::INITIALIZE), data.get(keys::BOOTSTRAPPING)) {
            (Some(sysid), _) if !sysid.is_empty() => Initialize::Done {
                sysid: sysid.clone(),
            },
            (_, Some(member)) if !member.is_empty() => Initialize::Claimed {
                member: member.clone(),
            },
            _ => Initialize::Absent,
        };
        let history = parse_key(&data, keys::HISTORY, self.names.cluster()).unwrap_or_default();
        let sync = parse_key(&data, keys::SYNC, self.names.cluster()).unwrap_or_default();
        let switchover_key =
            parse_key::<SwitchoverKey>(&data, keys::SWITCHOVER, self.names.cluster());
        let switchover_scheduled_at = switchover_key
            .as_ref()
            .and_then(|s| s.scheduled_at.as_deref())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let switchover = switchover_key.map(|s| SwitchoverRequest {
            leader: s.leader,
            candidate: s.candidate,
        });
        let paused = data.get(keys::PAUSE).is_some_and(|v| v == "true");
        let config = data
            .get(keys::CONFIG)
            .and_then(|raw| match DynamicConfig::parse(raw) {
                Ok(c) => Some(c),
                Err(e) => {
                    warn!(cluster = %self.names.cluster(), error = %e, "ignoring a corrupt config key in the state ConfigMap");
                    None
                }
            });

        // What is on our own pod now, as read this cycle, not what we last wrote: a fresh start
        // or an outage forgot that, and someone else (the operator's label updater, a person)
        // may have changed it since; the next publish repairs whatever differs from our role.
        if let Some(me) = pods
            .items
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(self.me.as_str()))
        {
            self.published_role = Some(role_label_of(&me.metadata).cloned());
        }
        let labelled_primary = pods
            .items
            .iter()
            .filter(|p| p.metadata.name.as_deref() != Some(self.me.as_str()))
            .filter(|p| role_label_of(&p.metadata).is_some_and(|r| r == ROLE_PRIMARY))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let mut members = Vec::new();
        let pod_names: Vec<String> = pods
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        for pod in pods.items {
            let Some(name) = pod.metadata.name.clone() else {
                continue;
            };
            let Some(raw) = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_STATUS))
            else {
                continue;
            };
            match MemberStatus::parse(raw) {
                Ok(s) => members.push((name, s)),
                Err(e) => {
                    warn!(cluster = %self.names.cluster(), member = %name, error = %e, "ignoring member with a corrupt status annotation")
                }
            }
        }

        Ok(Snapshot {
            lease: lease_view,
            lease_object: lease,
            state,
            initialize,
            history,
            sync,
            switchover,
            switchover_scheduled_at,
            paused,
            config,
            leader_optime,
            members,
            pod_names,
            labelled_primary,
        })
    }

    fn observe_lease(&mut self, lease: Option<&Lease>) -> LeaseView {
        let seen_at = first_seen(lease, self.sightings.as_deref(), Instant::now());
        self.clock.observe(lease, seen_at);
        let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
            return LeaseView::Free;
        };
        match spec.holder_identity.as_deref() {
            None | Some("") => LeaseView::Free,
            Some(holder) => {
                // The holder's own duration, as Patroni reads the ttl from the leader object; never
                // less than ours, so a foreign holder cannot shorten the wait.
                let duration = spec
                    .lease_duration_seconds
                    .map(|s| Duration::from_secs(s.max(1) as u64))
                    .unwrap_or(self.ttl)
                    .max(self.ttl);
                LeaseView::Held {
                    holder: holder.to_string(),
                    expired: self.clock.expired(duration, Instant::now()),
                }
            }
        }
    }

    /// Whether this member took the Lease after the last read: the snapshot of this cycle still
    /// names the holder before, and the role label published at the end of the cycle must not
    /// undo the `primary` label the promotion set.
    pub fn acquired_since_read(&self) -> bool {
        self.acquired
    }

    /// Whether the last Lease this member took had been released (a handover), not expired.
    pub fn acquired_free(&self) -> bool {
        self.acquired_free
    }

    /// Whether our own pod carries the `primary` label as last read or written.
    pub fn carries_primary_label(&self) -> bool {
        matches!(&self.published_role, Some(Some(role)) if role == ROLE_PRIMARY)
    }

    /// How long until the Lease we saw expires on our clock (for scheduling the next cycle).
    pub fn lease_expires_in(&self) -> Duration {
        self.clock.expires_in(self.ttl, Instant::now())
    }

    fn lease_for(
        &self,
        previous: Option<&Lease>,
        holder: Option<&str>,
        optime: Option<u64>,
        acquire: bool,
    ) -> Lease {
        let mut lease = previous.cloned().unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(self.names.lease()),
                labels: Some(names::cluster_labels(self.names.cluster())),
                owner_references: self.owner_references(),
                ..Default::default()
            },
            spec: Some(LeaseSpec::default()),
        });
        lease::stamp(&mut lease, holder, self.ttl, acquire);
        if let Some(optime) = optime {
            lease
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(ANNOTATION_OPTIME.to_string(), optime.to_string());
        }
        lease
    }

    /// Take the lease. Re-reads it first (Patroni #3718) and refuses unless it is still free or
    /// expired on our clock with the same resourceVersion we judged; the PUT carries that version.
    pub async fn acquire(&mut self, optime: Option<u64>) -> Result<(), DcsError> {
        let current = self
            .bounded(self.leases.get_opt(&self.names.lease()))
            .await?;
        let view = self.observe_lease(current.as_ref());
        match &view {
            LeaseView::Held {
                holder,
                expired: false,
            } if *holder != self.me => {
                return Err(DcsError::Conflict(format!(
                    "lease {} (held by {holder})",
                    self.names.lease()
                )));
            }
            _ => {}
        }
        let lease = self.lease_for(current.as_ref(), Some(&self.me.clone()), optime, true);
        let name = self.names.lease();
        let result = self
            .bounded(lease::write(&self.leases, &name, current.is_some(), &lease))
            .await;
        match result {
            Ok(written) => {
                self.acquired_free = view == LeaseView::Free;
                self.observe_lease(Some(&written));
                self.acquired = true;
                Ok(())
            }
            Err(DcsError::Kube(e)) if is_conflict(&e) => {
                Err(DcsError::Conflict(format!("lease {}", self.names.lease())))
            }
            Err(e) => Err(e),
        }
    }

    /// Renew the lease we hold, compare-and-swap on the version read this cycle. On a conflict,
    /// re-read once: if we still hold it (someone else touched the object), renew on the fresh
    /// version; otherwise the lease is lost.
    pub async fn renew(
        &mut self,
        seen: Option<&Lease>,
        optime: Option<u64>,
    ) -> Result<(), DcsError> {
        let mut base = seen.cloned();
        for _ in 0..2 {
            let holder = base
                .as_ref()
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.holder_identity.clone());
            if holder.as_deref() != Some(self.me.as_str()) {
                return Err(DcsError::Conflict(format!(
                    "lease {} is held by {}",
                    self.names.lease(),
                    holder.unwrap_or_else(|| "nobody".into())
                )));
            }
            let lease = self.lease_for(base.as_ref(), Some(&self.me.clone()), optime, false);
            let name = self.names.lease();
            match self
                .bounded(lease::write(&self.leases, &name, true, &lease))
                .await
            {
                Ok(written) => {
                    self.observe_lease(Some(&written));
                    return Ok(());
                }
                Err(DcsError::Kube(e)) if is_conflict(&e) => {
                    base = self
                        .bounded(self.leases.get_opt(&self.names.lease()))
                        .await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(DcsError::Conflict(format!("lease {}", self.names.lease())))
    }

    /// Give the lease up (clean shutdown, switchover) so a replica can take over at once.
    pub async fn release(&mut self, optime: Option<u64>) -> Result<(), DcsError> {
        let current = self
            .bounded(self.leases.get_opt(&self.names.lease()))
            .await?;
        let holder = current
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.clone());
        if holder.as_deref() != Some(self.me.as_str()) {
            return Ok(());
        }
        let mut lease = self.lease_for(current.as_ref(), None, optime, false);
        if let Some(spec) = lease.spec.as_mut() {
            spec.acquire_time = None;
        }
        let name = self.names.lease();
        match self
            .bounded(lease::write(&self.leases, &name, true, &lease))
            .await
        {
            Ok(_) => Ok(()),
            Err(DcsError::Kube(e)) if is_conflict(&e) => {
                Err(DcsError::Conflict(format!("lease {}", self.names.lease())))
            }
            Err(e) => Err(e),
        }
    }

    /// Compare-and-swap edit of the state ConfigMap's data; creates the ConfigMap when missing.
    /// `edit` returns `false` to abort without writing.
    pub async fn update_state(
        &self,
        mut edit: impl FnMut(&mut BTreeMap<String, String>) -> bool,
    ) -> Result<bool, DcsError> {
        let name = self.names.state_config_map();
        let current = self.bounded(self.config_maps.get_opt(&name)).await?;
        let mut cm = current.clone().unwrap_or_else(|| ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(names::cluster_labels(self.names.cluster())),
                owner_references: self.owner_references(),
                ..Default::default()
            },
            ..Default::default()
        });
        let data = cm.data.get_or_insert_with(BTreeMap::new);
        if !edit(data) {
            return Ok(false);
        }
        let result = match current {
            Some(_) => {
                self.bounded(self.config_maps.replace(&name, &PostParams::default(), &cm))
                    .await
            }
            None => {
                self.bounded(self.config_maps.create(&PostParams::default(), &cm))
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(DcsError::Kube(e)) if is_conflict(&e) => Err(DcsError::Conflict(name)),
            Err(e) => Err(e),
        }
    }

    /// Claim the bootstrap: succeeds for exactly one member.
    pub async fn claim_initialize(&self) -> Result<bool, DcsError> {
        let me = self.me.clone();
        match self
            .update_state(|data| {
                if data.get(keys::INITIALIZE).is_some_and(|v| !v.is_empty())
                    || data.get(keys::BOOTSTRAPPING).is_some_and(|v| !v.is_empty())
                {
                    return false;
                }
                data.insert(keys::BOOTSTRAPPING.into(), me.clone());
                true
            })
            .await
        {
            Err(DcsError::Conflict(_)) => Ok(false),
            other => other,
        }
    }

    /// Record the new cluster's system identifier and drop the bootstrap claim.
    pub async fn record_initialize(&self, sysid: &str) -> Result<(), DcsError> {
        self.update_state(|data| {
            data.insert(keys::INITIALIZE.into(), sysid.to_string());
            data.remove(keys::BOOTSTRAPPING);
            data.entry(keys::HISTORY.into())
                .or_insert_with(|| "[]".into());
            true
        })
        .await
        .map(|_| ())
    }

    /// Give up a failed bootstrap so another member (or a retry) can claim it.
    pub async fn cancel_initialize(&self) -> Result<(), DcsError> {
        let me = self.me.clone();
        self.update_state(|data| {
            if data.get(keys::BOOTSTRAPPING) != Some(&me) {
                return false;
            }
            data.remove(keys::BOOTSTRAPPING);
            true
        })
        .await
        .map(|_| ())
    }

    /// Append a timeline switch to the history and clear a finished switchover request.
    pub async fn record_promotion(&self, entry: HistoryEntry) -> Result<(), DcsError> {
        let cluster = self.names.cluster().to_string();
        self.update_state(|data| {
            let mut history: Vec<HistoryEntry> =
                parse_key(data, keys::HISTORY, &cluster).unwrap_or_default();
            if history.iter().any(|h| h.timeline == entry.timeline) {
                data.remove(keys::SWITCHOVER);
                return true;
            }
            history.push(entry.clone());
            data.insert(
                keys::HISTORY.into(),
                serde_json::to_string(&history).unwrap_or_else(|_| "[]".into()),
            );
            data.remove(keys::SWITCHOVER);
            true
        })
        .await
        .map(|_| ())
    }

    pub async fn clear_switchover(&self) -> Result<(), DcsError> {
        self.update_state(|data| data.remove(keys::SWITCHOVER).is_some())
            .await
            .map(|_| ())
    }

    /// Publish the synchronous set (`sync` key) with ourselves as its leader.
    /// Write the `sync` key naming this member its leader, with `standbys`. `read`: the key as
    /// this cycle read it; the write happens only while the key is still that (a compare-and-
    /// swap on the key, as Patroni writes it with the version it read), so a member that
    /// stalled (a deposed primary, a winner of the Lease about to promote) cannot overwrite
    /// what a successor wrote.
    pub async fn publish_sync(
        &self,
        standbys: &[String],
        read: &SyncState,
    ) -> Result<(), DcsError> {
        let mine = SyncState {
            leader: Some(self.me.clone()),
            sync_standby: standbys.to_vec(),
        };
        let value = serde_json::to_string(&mine).map_err(|e| DcsError::Invalid(e.to_string()))?;
        let mut moved = false;
        self.update_state(|data| {
            // Parsed as the snapshot parses it, so an unchanged key compares equal.
            let current: SyncState =
                parse_key(data, keys::SYNC, self.names.cluster()).unwrap_or_default();
            if *read != current {
                moved = true;
                return false;
            }
            if current == mine {
                return false;
            }
            data.insert(keys::SYNC.into(), value.clone());
            true
        })
        .await?;
        if moved {
            return Err(DcsError::Conflict(format!(
                "{}: the sync key changed since this cycle read it",
                self.names.state_config_map()
            )));
        }
        Ok(())
    }

    /// Write the `backup-result` key when `write_over` accepts the result there now (a
    /// compare-and-swap on the key: a run reported by a newer primary is not overwritten);
    /// `Ok(false)` when it declined.
    pub async fn write_backup_result(
        &self,
        result: &crate::api::state::BackupResult,
        write_over: impl Fn(Option<&crate::api::state::BackupResult>) -> bool,
    ) -> Result<bool, DcsError> {
        let value = serde_json::to_string(result).map_err(|e| DcsError::Invalid(e.to_string()))?;
        let cluster = self.names.cluster().to_string();
        self.update_state(|data| {
            let current = parse_key(data, keys::BACKUP_RESULT, &cluster);
            if !write_over(current.as_ref()) {
                return false;
            }
            data.insert(keys::BACKUP_RESULT.into(), value.clone());
            true
        })
        .await
    }

    pub async fn request_switchover(&self, request: &SwitchoverKey) -> Result<(), DcsError> {
        let value = serde_json::to_string(request).map_err(|e| DcsError::Invalid(e.to_string()))?;
        self.update_state(|data| {
            data.insert(keys::SWITCHOVER.into(), value.clone());
            true
        })
        .await
        .map(|_| ())
    }

    /// Publish our member status on our pod, only when it changed.
    pub async fn publish_status(&mut self, status: &MemberStatus) -> Result<(), DcsError> {
        let value = status.to_annotation();
        if self.published_status.as_deref() == Some(value.as_str()) {
            return Ok(());
        }
        let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_STATUS: value}}});
        self.bounded(
            self.pods
                .patch(&self.me, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await?;
        self.published_status = Some(value);
        Ok(())
    }

    /// Set (or with `None` remove) the role label on our own pod; the fast path for routing.
    pub async fn publish_role(&mut self, role: Option<&str>) -> Result<(), DcsError> {
        let want = role.map(str::to_string);
        if self.published_role.as_ref() == Some(&want) {
            return Ok(());
        }
        let patch = serde_json::json!({"metadata": {"labels": {LABEL_ROLE: want}}});
        self.bounded(
            self.pods
                .patch(&self.me, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await?;
        self.published_role = Some(want);
        Ok(())
    }

    /// Remove the role label of another member's pod (a former primary's `primary` label that
    /// its own agent cannot remove: its node is dead, frozen or cut off).
    /// Returns whether it wrote (not when it already did since the last read).
    pub async fn unlabel(&mut self, pod: &str) -> Result<bool, DcsError> {
        if self.unlabelled.contains(pod) {
            return Ok(false);
        }
        let patch = serde_json::json!({"metadata": {"labels": {LABEL_ROLE: null}}});
        self.bounded(
            self.pods
                .patch(pod, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await?;
        self.unlabelled.insert(pod.to_string());
        Ok(true)
    }

    /// Make sure our pod carries no `primary` role label before PostgreSQL answers as anything
    /// else: the `-rw` Service must never route writes to a read-only member. Writes only when
    /// the label may be there (last written as primary, or unknown since an outage or a restart).
    /// Returns whether it had to write (the label may have been there until now).
    pub async fn unroute_primary(&mut self) -> Result<bool, DcsError> {
        if may_carry_primary(self.published_role.as_ref()) {
            self.publish_role(None).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether the cluster's `-rw` Service still lists `address` as an endpoint (its
    /// EndpointSlices, which kube-proxy programs from); `None` when it has no EndpointSlice at
    /// all (no such Service, as in the integration tier: nothing routes through it).
    pub async fn rw_routes_to(&self, address: &str) -> Result<Option<bool>, DcsError> {
        let selector = format!("kubernetes.io/service-name={}", self.names.service_rw());
        let slices = self
            .bounded(
                self.endpoint_slices
                    .list(&ListParams::default().labels(&selector)),
            )
            .await?;
        if slices.items.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            slices
                .items
                .iter()
                .flat_map(|s| &s.endpoints)
                .any(|e| e.addresses.iter().any(|a| a == address)),
        ))
    }

    /// Forget what we published, so the next publish writes again (after an apiserver outage).
    pub fn forget_published(&mut self) {
        self.published_status = None;
        self.published_role = None;
    }

    pub fn not_found(e: &DcsError) -> bool {
        matches!(e, DcsError::Kube(k) if is_not_found(k))
    }
}

/// Whether our pod may still carry the `primary` role label, from what this agent last wrote on
/// it: `None` (nothing since it started or since an outage made it forget) may be anything.
fn may_carry_primary(published: Option<&Option<String>>) -> bool {
    match published {
        Some(Some(role)) => role == ROLE_PRIMARY,
        Some(None) => false,
        None => true,
    }
}

/// The newest version of the Lease the watch delivered, and when it arrived on this process's
/// clock. A follower's loop reads the Lease only once per `loopWait`; counting a renew's age from
/// that read made it look up to a whole loop younger than it is, and every takeover waited that
/// much longer than `ttl`. The watch sees each renew within milliseconds, and never before the
/// holder sent it (its fence counts from the sending), so counting from the sighting keeps the
/// rule "ttl after the Lease was last seen to change" and its safety argument as they were.
#[derive(Debug, Default)]
pub struct LeaseSightings(std::sync::Mutex<Option<(String, Instant)>>);

impl LeaseSightings {
    pub fn record(&self, resource_version: String, at: Instant) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some((resource_version, at));
        }
    }

    /// When the watch saw `resource_version`, if it is the newest one it saw.
    pub fn seen_at(&self, resource_version: &str) -> Option<Instant> {
        let last = self.0.lock().ok()?;
        last.as_ref()
            .filter(|(rv, _)| rv == resource_version)
            .map(|(_, at)| *at)
    }
}

/// When this process first saw the version of `lease` it has just read (`now`): earlier, if the
/// watch delivered that version first.
pub fn first_seen(
    lease: Option<&Lease>,
    sightings: Option<&LeaseSightings>,
    now: Instant,
) -> Instant {
    lease
        .and_then(|l| l.metadata.resource_version.as_deref())
        .zip(sightings)
        .and_then(|(rv, s)| s.seen_at(rv))
        .map_or(now, |at| at.min(now))
}

/// What [`watch_lease`] delivers.
pub struct LeaseWatch {
    /// Notified the moment the Lease changes hands (released, taken, or deleted), so the HA loop
    /// picks up a graceful release at once instead of up to a whole loop later. Renewals by the
    /// same holder do not wake anyone.
    pub holder_changed: std::sync::Arc<tokio::sync::Notify>,
    /// Every version seen, renewals included: the follower's clock counts from these.
    pub sightings: std::sync::Arc<LeaseSightings>,
}

/// Watch the cluster's Lease (see [`LeaseWatch`]).
pub fn watch_lease(client: Client, namespace: &str, cluster: &str) -> LeaseWatch {
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    use kube::runtime::watcher::{self, Event};
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    let sightings = std::sync::Arc::new(LeaseSightings::default());
    let (wake, seen) = (notify.clone(), sightings.clone());
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!(
        "metadata.name={}",
        ObjectNames::new(cluster).lease()
    ));
    tokio::spawn(async move {
        let mut holder: Option<Option<String>> = None;
        let mut errors = Throttle::new(Duration::from_secs(30));
        // The watcher does not back off by itself: without this it retries a failed connection
        // at once, forever (tens of thousands of attempts a minute while the apiserver is away).
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            let now = match event {
                Ok(Event::Apply(l) | Event::InitApply(l)) => {
                    errors.reset();
                    if let Some(rv) = l.metadata.resource_version.clone() {
                        seen.record(rv, Instant::now());
                    }
                    l.spec
                        .and_then(|s| s.holder_identity)
                        .filter(|h| !h.is_empty())
                }
                Ok(Event::Delete(_)) => None,
                Ok(_) => continue,
                Err(e) => {
                    if let Some(n) = errors.hit(Instant::now()) {
                        warn!(error = %e, failures = n, "the Lease watch failed; retrying with backoff");
                    }
                    continue;
                }
            };
            if holder.as_ref() != Some(&now) {
                if holder.is_some() {
                    wake.notify_one();
                }
                holder = Some(now);
            }
        }
    });
    LeaseWatch {
        holder_changed: notify,
        sightings,
    }
}

fn parse_key<T: serde::de::DeserializeOwned>(
    data: &BTreeMap<String, String>,
    key: &str,
    cluster: &str,
) -> Option<T> {
    let raw = data.get(key)?;
    if raw.is_empty() {
        return None;
    }
    match serde_json::from_str(raw) {
        Ok(v) => Some(v),
        Err(e) => {
            warn!(cluster = %cluster, key, error = %e, "ignoring a corrupt key in the state ConfigMap");
            None
        }
    }
}

/// The `pgwarden.io/role` label on a pod's metadata, if it has one.
fn role_label_of(meta: &ObjectMeta) -> Option<&String> {
    meta.labels.as_ref().and_then(|l| l.get(LABEL_ROLE))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_version_counts_from_whichever_saw_it_first() {
        let lease = |rv: &str| Lease {
            metadata: ObjectMeta {
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let t0 = Instant::now();
        let now = t0 + Duration::from_millis(1500);
        let sightings = LeaseSightings::default();
        sightings.record("7".into(), t0);
        assert_eq!(first_seen(Some(&lease("7")), Some(&sightings), now), t0);
        assert_eq!(
            first_seen(Some(&lease("6")), Some(&sightings), now),
            now,
            "a version the watch did not deliver last counts from the read"
        );
        assert_eq!(first_seen(Some(&lease("7")), None, now), now, "no watch");
        assert_eq!(first_seen(None, Some(&sightings), now), now, "no Lease");
        sightings.record("8".into(), now + Duration::from_secs(1));
        assert_eq!(
            first_seen(Some(&lease("8")), Some(&sightings), now),
            now,
            "never later than the read"
        );
        assert_eq!(first_seen(Some(&lease("7")), Some(&sightings), now), now);
    }

    #[test]
    fn the_primary_label_is_assumed_until_this_agent_wrote_another() {
        let primary = Some(ROLE_PRIMARY.to_string());
        let replica = Some("replica".to_string());
        assert!(
            may_carry_primary(None),
            "unknown: after a start or an outage"
        );
        assert!(may_carry_primary(Some(&primary)));
        assert!(!may_carry_primary(Some(&replica)));
        assert!(!may_carry_primary(Some(&None)), "removed");
    }
}
