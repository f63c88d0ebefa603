//! What `kubectl pgwarden` knows about a cluster, built without I/O from the objects it read:
//! the `PostgresCluster`, its pods with their `pgwarden.io/status` annotations, the Lease holder
//! and the `<c>-state` ConfigMap. Also the client-side checks of switchover and failover, with
//! Patroni's messages. Everything here is pure, so it is tested on fixtures.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::api::PostgresCluster;
use crate::api::member::{MemberRole, MemberStatus, MemberTags, url_host_port};
use crate::api::names::ANNOTATION_STATUS;
use crate::api::state::{SwitchoverKey, SyncState, keys};

use super::error::{CliError, Result};

/// The objects one cluster is made of, as read from the apiserver.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub namespace: String,
    pub cluster: PostgresCluster,
    /// Pods labelled `pgwarden.io/cluster=<c>`.
    pub pods: Vec<Pod>,
    /// `holderIdentity` of the Lease `<c>-leader` (empty means none).
    pub lease_holder: Option<String>,
    /// Data of the ConfigMap `<c>-state` (empty when it does not exist yet).
    pub state: BTreeMap<String, String>,
}

impl Snapshot {
    pub fn name(&self) -> String {
        self.cluster.metadata.name.clone().unwrap_or_default()
    }
}

/// The cluster's system identifier, from the `initialize` key (Patroni's header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemId {
    Uninitialized,
    Initializing,
    Known(String),
}

impl std::fmt::Display for SystemId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SystemId::Uninitialized => f.write_str("uninitialized"),
            SystemId::Initializing => f.write_str("initializing"),
            SystemId::Known(id) => f.write_str(id),
        }
    }
}

/// Patroni's `Role` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    SyncStandby,
    Replica,
}

impl Role {
    pub fn title(self) -> &'static str {
        match self {
            Role::Leader => "Leader",
            Role::SyncStandby => "Sync Standby",
            Role::Replica => "Replica",
        }
    }
}

/// How far a member is behind the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lag {
    /// The leader itself: nothing to show.
    Leader,
    Bytes(u64),
    /// No position published by this member or by the leader.
    Unknown,
}

impl Lag {
    /// Patroni's "Lag in MB": bytes / 1 MiB, rounded.
    pub fn mb(self) -> Option<u64> {
        match self {
            Lag::Bytes(b) => Some((b + (1 << 19)) >> 20),
            _ => None,
        }
    }
}

/// One row of the `list` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    /// The pod IP (else the host of the published `conn_url`).
    pub host: String,
    pub role: Role,
    /// Patroni's member state; `streaming` for a streaming replica; `unknown` when the pod has no
    /// readable status annotation.
    pub state: String,
    pub timeline: Option<u32>,
    pub lag: Lag,
    pub pending_restart: bool,
    pub tags: MemberTags,
    /// The parsed annotation (`None` when missing or corrupt).
    pub status: Option<MemberStatus>,
}

impl Member {
    pub fn nofailover(&self) -> bool {
        self.tags.nofailover
    }
}

/// A switchover request waiting in the `switchover` key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PendingSwitchover {
    pub from: Option<String>,
    pub to: Option<String>,
    pub scheduled_at: Option<String>,
}

/// Everything `list` shows about one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub cluster: String,
    pub system_id: SystemId,
    /// The Lease holder, whether or not it is among the pods.
    pub leader: Option<String>,
    pub members: Vec<Member>,
    pub paused: bool,
    pub switchover: Option<PendingSwitchover>,
    pub sync_standbys: Vec<String>,
    /// Things the reader should know that do not fit the table (a corrupt annotation, say).
    pub warnings: Vec<String>,
}

impl Topology {
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// Build the topology from what was read. Never fails: what cannot be read shows as unknown and
/// adds a warning.
pub fn topology(snap: &Snapshot) -> Topology {
    let cluster = snap.name();
    let mut warnings = vec![];
    let leader = snap.lease_holder.clone().filter(|h| !h.is_empty());

    let system_id = match snap.state.get(keys::INITIALIZE) {
        None => SystemId::Uninitialized,
        Some(s) if s.is_empty() => SystemId::Initializing,
        Some(s) => SystemId::Known(s.clone()),
    };

    let sync_standbys = match snap.state.get(keys::SYNC) {
        None => vec![],
        Some(raw) => match serde_json::from_str::<SyncState>(raw) {
            Ok(s) if s.leader.is_none() || s.leader == leader => s.sync_standby,
            Ok(_) => vec![],
            Err(e) => {
                warnings.push(format!(
                    "ignoring the corrupt sync key of {cluster}-state: {e}"
                ));
                vec![]
            }
        },
    };

    let switchover = snap.state.get(keys::SWITCHOVER).and_then(|raw| {
        match serde_json::from_str::<SwitchoverKey>(raw) {
            Ok(k) => Some(PendingSwitchover {
                from: k.leader,
                to: k.candidate,
                scheduled_at: k.scheduled_at,
            }),
            Err(_) => {
                warnings.push(format!(
                    "ignoring the corrupt switchover key of {cluster}-state"
                ));
                None
            }
        }
    });

    let paused =
        snap.cluster.spec.pause || snap.state.get(keys::PAUSE).is_some_and(|v| v == "true");

    let mut pods: Vec<&Pod> = snap.pods.iter().collect();
    pods.sort_by(|a, b| {
        let (a, b) = (
            a.metadata.name.as_deref().unwrap_or(""),
            b.metadata.name.as_deref().unwrap_or(""),
        );
        (ordinal(a), a).cmp(&(ordinal(b), b))
    });

    let statuses: Vec<(String, &Pod, Option<MemberStatus>)> = pods
        .into_iter()
        .map(|pod| {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let raw = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_STATUS));
            let status = match raw.map(|r| MemberStatus::parse(r)) {
                None => None,
                Some(Ok(s)) => Some(s),
                Some(Err(e)) => {
                    warnings.push(format!("{name}: {e}"));
                    None
                }
            };
            (name, pod, status)
        })
        .collect();

    let leader_lsn = statuses
        .iter()
        .find(|(n, _, _)| Some(n) == leader.as_ref())
        .and_then(|(_, _, s)| s.as_ref())
        .and_then(|s| s.xlog_location);

    let members = statuses
        .into_iter()
        .map(|(name, pod, status)| {
            let role = if leader.as_deref() == Some(name.as_str()) {
                Role::Leader
            } else if sync_standbys.contains(&name) {
                Role::SyncStandby
            } else {
                Role::Replica
            };
            let host = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty())
                .or_else(|| {
                    status
                        .as_ref()
                        .and_then(|s| url_host_port(&s.conn_url))
                        .map(|(h, _)| h)
                })
                .unwrap_or_default();
            let state = match &status {
                None => "unknown".to_string(),
                Some(s) => match (&s.replication_state, role) {
                    (Some(rs), Role::SyncStandby | Role::Replica)
                        if s.role == MemberRole::Replica =>
                    {
                        rs.clone()
                    }
                    _ => state_name(s),
                },
            };
            let lag = match role {
                Role::Leader => Lag::Leader,
                _ => match (leader_lsn, status.as_ref().and_then(|s| s.xlog_location)) {
                    (Some(l), Some(m)) => Lag::Bytes(l.saturating_sub(m)),
                    _ => Lag::Unknown,
                },
            };
            let mut tags = status.as_ref().map(|s| s.tags.clone()).unwrap_or_default();
            // The spec's tags count even before the agent has published them.
            if let Some(t) = snap.cluster.spec.instance_tags.get(&name) {
                tags.nofailover |= t.nofailover;
                tags.nosync |= t.nosync;
                tags.noloadbalance |= t.noloadbalance;
            }
            Member {
                host,
                role,
                state,
                timeline: status.as_ref().and_then(|s| s.timeline),
                lag,
                pending_restart: status.as_ref().is_some_and(|s| s.pending_restart),
                tags,
                status,
                name,
            }
        })
        .collect();

    Topology {
        cluster,
        system_id,
        leader,
        members,
        paused,
        switchover,
        sync_standbys,
        warnings,
    }
}

/// Patroni's spelling of a member state (`running`, `creating replica`, ...).
pub fn state_name(s: &MemberStatus) -> String {
    serde_json::to_value(s.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// The ordinal of a StatefulSet pod name (`main-2` → 2); other names sort last.
pub fn ordinal(pod: &str) -> u32 {
    pod.rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Switchover or failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Switchover,
    Failover,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Switchover => "switchover",
            Action::Failover => "failover",
        }
    }
}

/// A checked request: what to send, and to whom first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub action: Action,
    /// The current leader (always set for a switchover).
    pub leader: Option<String>,
    pub candidate: Option<String>,
    pub scheduled_at: Option<String>,
}

impl Plan {
    /// The JSON body for `POST /switchover` or `POST /failover`.
    pub fn body(&self) -> Value {
        let mut o = serde_json::Map::new();
        if self.action == Action::Switchover
            && let Some(l) = &self.leader
        {
            o.insert("leader".into(), Value::String(l.clone()));
        }
        if let Some(c) = &self.candidate {
            o.insert("candidate".into(), Value::String(c.clone()));
        }
        if let Some(s) = &self.scheduled_at {
            o.insert("scheduled_at".into(), Value::String(s.clone()));
        }
        Value::Object(o)
    }

    /// Members to send the request to, in order: the leader for a switchover; for a failover
    /// the candidate first (its agent is the one that must act, and the leader may be the
    /// reason for the failover), then the leader, then everyone else.
    pub fn targets(&self, topo: &Topology) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        let mut push = |n: &str| {
            if !out.iter().any(|o| o == n) && topo.member(n).is_some() {
                out.push(n.to_string());
            }
        };
        match self.action {
            Action::Switchover => {
                if let Some(l) = &self.leader {
                    push(l);
                }
            }
            Action::Failover => {
                if let Some(c) = &self.candidate {
                    push(c);
                }
                if let Some(l) = &self.leader {
                    push(l);
                }
                for m in &topo.members {
                    push(&m.name);
                }
            }
        }
        out
    }

    /// The confirmation question, in patronictl's words.
    pub fn question(&self, cluster: &str) -> String {
        let demote = self
            .leader
            .as_ref()
            .map(|l| format!(", demoting current leader {l}"))
            .unwrap_or_default();
        match &self.scheduled_at {
            Some(at) => format!(
                "Are you sure you want to schedule switchover of cluster {cluster} at {at}{demote}?"
            ),
            None => format!(
                "Are you sure you want to {} cluster {cluster}{demote}?",
                self.action.as_str()
            ),
        }
    }
}

/// patronictl's client-side checks, in its order and with its messages.
pub fn plan(
    topo: &Topology,
    action: Action,
    leader: Option<&str>,
    candidate: Option<&str>,
    scheduled_at: Option<String>,
) -> Result<Plan> {
    let cluster = topo.cluster.as_str();
    let current = topo.leader.clone();
    if action == Action::Switchover {
        let Some(current) = &current else {
            return Err(CliError::no_leader());
        };
        if let Some(l) = leader
            && l != current
        {
            return Err(CliError::not_the_leader(l, cluster));
        }
    }
    let mut candidates: Vec<&str> = topo
        .members
        .iter()
        .filter(|m| Some(&m.name) != current.as_ref() && !m.nofailover())
        .map(|m| m.name.as_str())
        .collect();
    candidates.sort();
    if candidates.is_empty() {
        return Err(CliError::no_candidates(action.as_str()));
    }
    if action == Action::Failover && candidate.is_none() {
        return Err(CliError::failed(
            "Failover could be performed only to a specific candidate",
        ));
    }
    if let Some(c) = candidate
        && !candidates.contains(&c)
    {
        if Some(c) == current.as_deref() {
            return Err(CliError::already_leader(c, cluster));
        }
        return Err(CliError::not_a_candidate(c, cluster));
    }
    if scheduled_at.is_some() && topo.paused {
        return Err(CliError::failed(
            "Can't schedule switchover in the paused state",
        ));
    }
    Ok(Plan {
        action,
        leader: current,
        candidate: candidate.map(str::to_string),
        scheduled_at,
    })
}

/// `--scheduled`: `now` (or empty) is immediate; otherwise an unambiguous timestamp, made
/// ISO 8601 with an offset (a time without an offset is in the local time zone), as patronictl
/// sends it.
pub fn parse_scheduled(raw: Option<&str>, tz: &jiff::tz::TimeZone) -> Result<Option<String>> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty() && *s != "now") else {
        return Ok(None);
    };
    let bad = || {
        CliError::failed(format!(
            "Unable to parse scheduled timestamp ({raw}). It should be in an unambiguous format \
             (e.g. ISO 8601)"
        ))
    };
    let zoned = if let Ok(z) = raw.parse::<jiff::Zoned>() {
        z
    } else if let Ok(ts) = raw.parse::<jiff::Timestamp>() {
        ts.to_zoned(tz.clone())
    } else {
        let dt: jiff::civil::DateTime = raw.parse().map_err(|_| bad())?;
        dt.to_zoned(tz.clone()).map_err(|_| bad())?
    };
    Ok(Some(zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()))
}

/// Rows of the `history` key: `[timeline, lsn, reason, timestamp, new_leader]`, short rows
/// padded (Patroni's older rows have three or four fields).
pub fn history_rows(state: &BTreeMap<String, String>, cluster: &str) -> Result<Vec<[String; 5]>> {
    let Some(raw) = state.get(keys::HISTORY) else {
        return Ok(vec![]);
    };
    let rows: Vec<Vec<Value>> = serde_json::from_str(raw).map_err(|e| {
        CliError::failed(format!(
            "the history key of ConfigMap {cluster}-state is not valid JSON rows: {e}"
        ))
    })?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let cell = |i: usize| match r.get(i) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            };
            [cell(0), cell(1), cell(2), cell(3), cell(4)]
        })
        .collect())
}
