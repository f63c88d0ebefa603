//! The agent's REST API as the other wings see it: the paths they call, the header carrying the
//! cluster's API token, and the typed `GET /patroni` document (Patroni's field names and shapes,
//! which Patroni tooling reads). The agent serves it; peers, the operator and the CLI read it.

use serde::{Deserialize, Serialize};

use crate::api::member::{MemberRole, MemberState, MemberTags};

/// Header carrying the token when the caller comes through the apiserver's pod proxy
/// (`kubectl pgwarden`): the apiserver authenticates the caller with `Authorization` and strips
/// that header before proxying, so the token needs a header of its own.
pub const TOKEN_HEADER: &str = "x-pgwarden-token";

/// The paths other wings call on an agent (the full list is `agent::rest::ROUTES`).
pub mod paths {
    pub const PATRONI: &str = "/patroni";
    pub const CLUSTER: &str = "/cluster";
    pub const PRIMARY: &str = "/primary";
    pub const REPLICA: &str = "/replica";
    pub const SWITCHOVER: &str = "/switchover";
    pub const FAILOVER: &str = "/failover";
    pub const RESTART: &str = "/restart";
    pub const RELOAD: &str = "/reload";
    pub const REINITIALIZE: &str = "/reinitialize";
    pub const FAILSAFE: &str = "/failsafe";
}

/// `GET /patroni` (and the body of every health endpoint). Optional facts are left out rather
/// than sent as `null`, except inside `xlog`, where Patroni sends them as `null`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PatroniStatus {
    pub state: MemberState,
    pub role: MemberRole,
    pub patroni: PatroniInfo,
    pub dcs_last_seen: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_system_identifier: Option<String>,
    pub xlog: Xlog,
    /// The primary's `pg_stat_replication`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Vec<ReplicationRow>>,
    /// A replica's `streaming` or `in archive recovery`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_unlocked: bool,
    /// Maintenance mode.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending_restart: bool,
    #[serde(default, skip_serializing_if = "is_default_tags")]
    pub tags: MemberTags,
    /// Present when the cluster is synchronous: whether this member is a synchronous standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_standby: Option<bool>,
}

fn is_default_tags(t: &MemberTags) -> bool {
    *t == MemberTags::default()
}

/// `patroni` in the status: the software's version and who answers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PatroniInfo {
    pub version: String,
    pub scope: String,
    pub name: String,
}

/// `xlog` in the status: a primary's write position, or a replica's receive/replay positions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum Xlog {
    // First: a primary's `{"location": ..}` has no `paused`, so it cannot be read as this.
    Replica {
        received_location: Option<u64>,
        replayed_location: Option<u64>,
        /// RFC 3339, as Patroni prints it.
        replayed_timestamp: Option<String>,
        paused: bool,
    },
    Primary {
        location: Option<u64>,
    },
}

/// A standby's row in the primary's `pg_stat_replication`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicationRow {
    pub usename: String,
    pub application_name: String,
    pub client_addr: Option<String>,
    pub state: String,
    pub sync_state: String,
    pub sync_priority: i32,
    /// How far the standby has flushed WAL (bytes); the agent's, not part of Patroni's API.
    #[serde(skip)]
    pub flush_lsn: Option<u64>,
    /// How long the standby's WAL sender has been connected (milliseconds); the agent's.
    #[serde(skip)]
    pub connected_ms: Option<i64>,
}

impl PatroniStatus {
    /// A running primary (the role alone is not enough: a stopped one is not).
    pub fn is_running_primary(&self) -> bool {
        self.role == MemberRole::Primary && self.state == MemberState::Running
    }

    /// How far this member's WAL goes: a primary's write position, else the further of a
    /// replica's received and replayed positions.
    pub fn wal_position(&self) -> Option<u64> {
        match &self.xlog {
            Xlog::Primary { location } => *location,
            Xlog::Replica {
                received_location,
                replayed_location,
                ..
            } => (*received_location).max(*replayed_location),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_read_back_as_their_role() {
        let primary = json!({"state": "running", "role": "primary", "dcs_last_seen": 1,
            "patroni": {"version": "1", "scope": "c", "name": "c-0"}, "xlog": {"location": 7},
            "tags": {"nofailover": true}});
        let replica = json!({"state": "running", "role": "replica", "dcs_last_seen": 1,
            "patroni": {"version": "1", "scope": "c", "name": "c-1"},
            "xlog": {"received_location": 200, "replayed_location": 150,
                     "replayed_timestamp": null, "paused": false}});
        let cases = [
            (primary, true, Some(7), true),
            (replica, false, Some(200), false),
        ];
        for (doc, is_primary, lsn, nofailover) in cases {
            let s: PatroniStatus = serde_json::from_value(doc.clone()).expect("parses");
            assert_eq!(s.is_running_primary(), is_primary, "{doc}");
            assert_eq!(s.wal_position(), lsn, "{doc}");
            assert_eq!(s.tags.nofailover, nofailover, "{doc}");
            assert_eq!(serde_json::to_value(&s).expect("serialises"), doc);
        }
    }
}
