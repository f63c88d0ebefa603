//! What the HA loop publishes for the API after each cycle, and the JSON of `GET /patroni`
//! (typed: `api::patroni::PatroniStatus`) and `GET /cluster` built from it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::agent::dcs::HistoryEntry;
use crate::agent::postgres::ReplicationRow;
use crate::api::member::{MemberRole, MemberState, MemberStatus, MemberTags};
use crate::api::patroni::{PatroniInfo, PatroniStatus, Xlog};

/// What the HA loop publishes for the API after each cycle.
#[derive(Debug, Clone)]
pub struct RestView {
    pub cluster: String,
    pub me: String,
    pub role: MemberRole,
    pub state: MemberState,
    pub holds_lease: bool,
    pub lease_holder: Option<String>,
    pub timeline: Option<u32>,
    pub lsn: Option<u64>,
    pub received_lsn: Option<u64>,
    pub replayed_lsn: Option<u64>,
    pub streaming: bool,
    /// WAL replay paused (`pg_wal_replay_pause()`).
    pub replay_paused: bool,
    /// Commit time of the last transaction replayed, epoch seconds.
    pub replayed_timestamp: Option<f64>,
    /// Restoring from the archive instead of streaming.
    pub archive_recovery: bool,
    pub leader_optime: Option<u64>,
    pub tags: MemberTags,
    pub paused: bool,
    pub pending_restart: bool,
    pub sysid: Option<String>,
    pub members: Vec<(String, MemberStatus)>,
    pub history: Vec<HistoryEntry>,
    pub sync_standbys: Vec<String>,
    pub replication: Vec<ReplicationRow>,
    pub ttl: Duration,
    pub loop_wait: Duration,
    pub maximum_lag_on_failover: u64,
    pub last_cycle: Instant,
    pub dcs_last_seen: i64,
    pub server_version: Option<i64>,
    pub failsafe_mode: bool,
    /// Synchronous replication is on (`on` or `strict`): switchovers go to published standbys.
    pub synchronous_mode: bool,
    /// pg_hba.conf rejects clients (the routing gate): not a replica to send reads to.
    pub clients_fenced: bool,
    /// The leader that last pinged `POST /failsafe`, and when.
    pub failsafe_ping: Option<(String, Instant)>,
    /// A scheduled switchover: (at, from, to).
    pub scheduled_switchover: Option<(String, Option<String>, Option<String>)>,
    /// Counters and clocks for `/metrics`, shared with the HA loop and the fencing task.
    pub telemetry: Arc<crate::agent::metrics::Telemetry>,
    /// `pg_stat_archiver` and the repository, published by a primary with `spec.backup`.
    pub archiver: Option<crate::api::backup::ArchiverStats>,
    pub repository: Option<crate::api::backup::RepositoryInfo>,
}

/// Epoch seconds as Patroni prints `replayed_timestamp` (RFC 3339, microseconds).
fn epoch_to_text(secs: f64) -> Option<String> {
    let ts = jiff::Timestamp::from_microsecond((secs * 1e6).round() as i64).ok()?;
    Some(ts.to_string())
}

impl RestView {
    pub fn new(
        cluster: &str,
        me: &str,
        ttl: Duration,
        loop_wait: Duration,
        maximum_lag_on_failover: u64,
    ) -> Self {
        Self {
            cluster: cluster.into(),
            me: me.into(),
            role: MemberRole::Uninitialized,
            state: MemberState::Stopped,
            holds_lease: false,
            lease_holder: None,
            timeline: None,
            lsn: None,
            received_lsn: None,
            replayed_lsn: None,
            streaming: false,
            replay_paused: false,
            replayed_timestamp: None,
            archive_recovery: false,
            leader_optime: None,
            tags: MemberTags::default(),
            paused: false,
            pending_restart: false,
            sysid: None,
            members: vec![],
            history: vec![],
            sync_standbys: vec![],
            replication: vec![],
            ttl,
            loop_wait,
            maximum_lag_on_failover,
            last_cycle: Instant::now(),
            dcs_last_seen: 0,
            server_version: None,
            failsafe_mode: false,
            synchronous_mode: false,
            clients_fenced: false,
            scheduled_switchover: None,
            failsafe_ping: None,
            telemetry: Default::default(),
            archiver: None,
            repository: None,
        }
    }

    pub(crate) fn is_primary(&self) -> bool {
        self.role == MemberRole::Primary && self.holds_lease && self.state == MemberState::Running
    }

    pub(crate) fn is_running_replica(&self) -> bool {
        self.role == MemberRole::Replica && self.state == MemberState::Running
    }

    /// Bytes this replica is behind the primary's last published position.
    pub(crate) fn lag(&self) -> Option<u64> {
        let last = self.leader_optime.max(self.received_lsn)?;
        Some(last.saturating_sub(self.replayed_lsn.unwrap_or(0)))
    }

    /// `GET /patroni` and the body of every health endpoint, typed.
    pub fn status(&self) -> PatroniStatus {
        let primary = self.role == MemberRole::Primary;
        let xlog = if primary {
            Xlog::Primary { location: self.lsn }
        } else {
            Xlog::Replica {
                received_location: self.received_lsn,
                replayed_location: self.replayed_lsn,
                replayed_timestamp: self.replayed_timestamp.and_then(epoch_to_text),
                paused: self.replay_paused,
            }
        };
        let replication_state = if primary {
            None
        } else if self.streaming {
            Some("streaming".to_string())
        } else if self.archive_recovery {
            Some("in archive recovery".to_string())
        } else {
            None
        };
        PatroniStatus {
            state: self.state,
            role: self.role,
            patroni: PatroniInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
                scope: self.cluster.clone(),
                name: self.me.clone(),
            },
            dcs_last_seen: self.dcs_last_seen,
            server_version: self.server_version,
            timeline: self.timeline,
            database_system_identifier: self.sysid.clone(),
            xlog,
            replication: primary.then(|| self.replication.clone()),
            replication_state,
            cluster_unlocked: self.lease_holder.is_none(),
            pause: self.paused,
            pending_restart: self.pending_restart,
            tags: self.tags.clone(),
            sync_standby: (!self.sync_standbys.is_empty())
                .then(|| self.sync_standbys.contains(&self.me)),
        }
    }

    /// [`RestView::status`] as JSON (keys in `serde_json`'s order, as always served).
    pub fn status_json(&self) -> Value {
        serde_json::to_value(self.status()).unwrap_or(Value::Null)
    }

    /// `GET /cluster`.
    pub fn cluster_json(&self) -> Value {
        let members: Vec<Value> = self
            .members
            .iter()
            .map(|(name, s)| {
                let role = if self.lease_holder.as_deref() == Some(name) {
                    "leader"
                } else if self.sync_standbys.contains(name) {
                    "sync_standby"
                } else {
                    "replica"
                };
                let (host, port) = crate::api::member::url_host_port(&s.conn_url).unwrap_or_default();
                let mut m = json!({
                    "name": name, "role": role, "state": match (role, &s.replication_state) {
                        ("leader", _) | (_, None) => serde_json::to_value(s.state).unwrap_or(Value::Null),
                        (_, Some(rs)) => json!(rs),
                    },
                    "api_url": s.api_url, "host": host, "port": port,
                });
                let o = m.as_object_mut().expect("object");
                if let Some(tl) = s.timeline {
                    o.insert("timeline".into(), json!(tl));
                }
                if s.tags != MemberTags::default() {
                    o.insert("tags".into(), json!(s.tags));
                }
                if s.pending_restart {
                    o.insert("pending_restart".into(), json!(true));
                }
                if role == "leader" {
                    o.insert("lsn".into(), json!(s.xlog_location));
                } else if let (Some(leader), Some(lsn)) = (self.leader_optime, s.xlog_location) {
                    o.insert("lsn".into(), json!(lsn));
                    o.insert("lag".into(), json!(leader.saturating_sub(lsn)));
                }
                m
            })
            .collect();
        let mut v = json!({"members": members, "scope": self.cluster});
        if let Some((at, from, to)) = &self.scheduled_switchover {
            v["scheduled_switchover"] = json!({"at": at, "from": from, "to": to});
        }
        if self.paused {
            v["pause"] = json!(true);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::rest::fixtures;

    /// The `/patroni` document as it was written by hand before it was typed: the typed one
    /// must keep every field name, shape, and omission.
    fn hand_written_status_json(view: &RestView) -> Value {
        let mut v = json!({
            "state": view.state,
            "role": view.role,
            "patroni": {"version": env!("CARGO_PKG_VERSION"), "scope": view.cluster, "name": view.me},
            "dcs_last_seen": view.dcs_last_seen,
        });
        let o = v.as_object_mut().expect("object");
        if let Some(sv) = view.server_version {
            o.insert("server_version".into(), json!(sv));
        }
        if let Some(tl) = view.timeline {
            o.insert("timeline".into(), json!(tl));
        }
        if let Some(sysid) = &view.sysid {
            o.insert("database_system_identifier".into(), json!(sysid));
        }
        match view.role {
            MemberRole::Primary => {
                o.insert("xlog".into(), json!({"location": view.lsn}));
                o.insert("replication".into(), json!(view.replication));
            }
            _ => {
                o.insert(
                    "xlog".into(),
                    json!({
                        "received_location": view.received_lsn,
                        "replayed_location": view.replayed_lsn,
                        "replayed_timestamp": view.replayed_timestamp.and_then(epoch_to_text),
                        "paused": view.replay_paused,
                    }),
                );
                if view.streaming {
                    o.insert("replication_state".into(), json!("streaming"));
                } else if view.archive_recovery {
                    o.insert("replication_state".into(), json!("in archive recovery"));
                }
            }
        }
        if view.lease_holder.is_none() {
            o.insert("cluster_unlocked".into(), json!(true));
        }
        if view.paused {
            o.insert("pause".into(), json!(true));
        }
        if view.pending_restart {
            o.insert("pending_restart".into(), json!(true));
        }
        if view.tags != MemberTags::default() {
            o.insert("tags".into(), json!(view.tags));
        }
        if !view.sync_standbys.is_empty() {
            o.insert(
                "sync_standby".into(),
                json!(view.sync_standbys.contains(&view.me)),
            );
        }
        v
    }

    fn primary_view() -> RestView {
        let mut v = fixtures::view();
        v.role = MemberRole::Primary;
        v.state = MemberState::Running;
        v.holds_lease = true;
        v.lease_holder = Some("c-0".into());
        v.lsn = Some(4242);
        v.timeline = Some(3);
        v.server_version = Some(170002);
        v.sysid = Some("7300000000000000001".into());
        v.dcs_last_seen = 1_700_000_000;
        v.replication = vec![ReplicationRow {
            usename: "replicator".into(),
            application_name: "c-1".into(),
            client_addr: Some("10.0.0.2".into()),
            state: "streaming".into(),
            sync_state: "sync".into(),
            sync_priority: 1,
            // The agent's own fields: not in the document.
            flush_lsn: None,
            connected_ms: None,
        }];
        v
    }

    #[test]
    fn the_typed_status_is_the_hand_written_document() {
        type Tweak = fn(&mut RestView);
        let tweaks: &[(&str, Tweak)] = &[
            ("as built", |_| {}),
            ("no lease holder, nothing optional", |v| {
                v.lease_holder = None;
                v.lsn = None;
                v.timeline = None;
                v.server_version = None;
                v.sysid = None;
                v.replication.clear();
            }),
            ("paused, pending restart, tagged", |v| {
                v.paused = true;
                v.pending_restart = true;
                v.tags.nofailover = true;
                v.tags.other.insert("zone".into(), json!("a"));
            }),
            ("synchronous, in sync", |v| {
                v.sync_standbys = vec![v.me.clone()];
            }),
            ("synchronous, not in sync", |v| {
                v.sync_standbys = vec!["someone-else".into()];
            }),
            ("replay paused with a replay time", |v| {
                v.replay_paused = true;
                v.replayed_timestamp = Some(1_700_000_000.123_456);
            }),
            ("archive recovery", |v| {
                v.streaming = false;
                v.archive_recovery = true;
            }),
            ("neither streaming nor archive", |v| {
                v.streaming = false;
                v.archive_recovery = false;
            }),
        ];
        for base in [primary_view(), fixtures::replica_view()] {
            for (what, tweak) in tweaks {
                let mut v = base.clone();
                tweak(&mut v);
                let typed = v.status_json();
                assert_eq!(typed, hand_written_status_json(&v), "{:?}: {what}", v.role);
                // Same text, not just the same value: key order and number forms too.
                assert_eq!(
                    typed.to_string(),
                    hand_written_status_json(&v).to_string(),
                    "{what}"
                );
                // And what is served reads back as what was meant.
                let back: PatroniStatus = serde_json::from_value(typed).expect("reads back");
                assert_eq!(back, v.status(), "{what}");
            }
        }
    }
}
