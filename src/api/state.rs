//! The `<cluster>-state` ConfigMap shared by the agents and the operator: its key names and the
//! dynamic configuration the operator publishes there (Patroni's `/config` key). The agents
//! write their keys with compare-and-swap and keep every key they do not know; the operator
//! owns only `config`, `pause` and `backup`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Keys of the `<c>-state` ConfigMap.
pub mod keys {
    /// System identifier of the bootstrapped cluster.
    pub const INITIALIZE: &str = "initialize";
    /// Member running initdb right now.
    pub const BOOTSTRAPPING: &str = "bootstrapping";
    /// Timeline history (JSON rows).
    pub const HISTORY: &str = "history";
    /// Synchronous standbys the primary waits for.
    pub const SYNC: &str = "sync";
    /// A pending switchover request.
    pub const SWITCHOVER: &str = "switchover";
    /// `"true"` while the cluster is in maintenance mode (owned by the operator when one runs).
    pub const PAUSE: &str = "pause";
    /// [`DynamicConfig`] as JSON (owned by the operator).
    pub const CONFIG: &str = "config";
    /// [`BackupRequest`] as JSON: the latest backup the operator asked the primary to take
    /// (owned by the operator; it stays after the result names it, and a new request replaces
    /// it).
    pub const BACKUP: &str = "backup";
    /// [`BackupResult`] as JSON: what the primary's agent did with the request (owned by the
    /// agents).
    pub const BACKUP_RESULT: &str = "backup-result";
}

/// A backup the operator asks for (`spec.backup.schedule` or a `PostgresBackup`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BackupRequest {
    /// Unique per request: the result names it, so a result is never taken for another request.
    pub name: String,
    /// pgBackRest's `--type`: `full`, `diff` or `incr`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Start with an immediate checkpoint (`--start-fast`) rather than waiting for the next
    /// scheduled one (`spec.backup.immediateCheckpoint`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub immediate: bool,
}

impl BackupRequest {
    /// The arguments of the `pgbackrest` run this request asks for.
    pub fn pgbackrest_args(&self) -> Vec<String> {
        let mut args = vec!["backup".to_string(), format!("--type={}", self.type_)];
        if self.immediate {
            args.push("--start-fast".into());
        }
        args
    }
}

/// Where a requested backup stands, as the member that runs it reports (also the cluster
/// status's `lastBackup`).
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BackupResult {
    /// The request's name.
    pub name: String,
    /// `running`, `completed` or `failed`.
    pub phase: String,
    /// The member that ran it (the primary when it started).
    pub member: String,
    /// RFC 3339.
    pub started: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// pgBackRest's backup label (`20261202-053000F`), once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Why it failed (pgBackRest's error line; "interrupted: this member stopped being the
    /// primary" after a switchover or failover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl BackupResult {
    pub const RUNNING: &'static str = "running";
    pub const COMPLETED: &'static str = "completed";
    pub const FAILED: &'static str = "failed";

    /// Completed or failed: nothing more will happen to this request.
    pub fn finished(&self) -> bool {
        self.phase != Self::RUNNING
    }
}

/// Settings every member applies while running, without a restart where PostgreSQL allows.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct DynamicConfig {
    /// postgresql.conf parameters (reserved ones are ignored by the agent).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Extra pg_hba.conf lines, before pgwarden's own.
    #[serde(default)]
    pub pg_hba: Vec<String>,
    /// Failsafe mode (`spec.ha.failsafeMode`), changed without a restart as Patroni's dynamic
    /// `failsafe_mode`; absent: each agent keeps what its command line says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failsafe_mode: Option<bool>,
}

impl DynamicConfig {
    /// Parse the `config` key; `None` for a corrupt value (callers log it and keep what they had).
    pub fn parse(raw: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(raw)
    }

    /// A short stable fingerprint (FNV-1a 64 of the JSON form), published by each member for
    /// the configuration it applied.
    pub fn fingerprint(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.to_json().bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    pub fn to_json(&self) -> String {
        // A struct of maps and strings always serialises.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// The `sync` key: the synchronous standbys the primary `leader` waits for. Only its members
/// may be promoted in synchronous mode; the primary adds a standby here only after PostgreSQL
/// reports it synchronous, and removes it here before it leaves `synchronous_standby_names`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct SyncState {
    pub leader: Option<String>,
    #[serde(default)]
    pub sync_standby: Vec<String>,
}

/// The `switchover` key: a switchover (`leader` set) or manual failover request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SwitchoverKey {
    #[serde(default)]
    pub leader: Option<String>,
    /// Patroni's own key calls it `member`; both are read.
    #[serde(default, alias = "member")]
    pub candidate: Option<String>,
    /// RFC 3339 time of a scheduled switchover (Patroni's `scheduled_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
}

/// One row of the timeline history (the `history` key): the timeline that ended, the LSN where
/// it ended, why, when, and the member promoted onto the next timeline. Stored as Patroni's row
/// `[timeline, switch LSN, reason, timestamp, new leader]`; the reason is `switchover` for a
/// planned change.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(from = "HistoryRow", into = "HistoryRow")]
pub struct HistoryEntry {
    pub timeline: u32,
    pub switch_lsn: u64,
    pub reason: String,
    /// RFC 3339.
    pub time: String,
    pub new_leader: String,
}

/// The stored shape of a [`HistoryEntry`].
#[derive(Serialize, Deserialize, Clone)]
struct HistoryRow(u32, u64, String, String, String);

impl From<HistoryRow> for HistoryEntry {
    fn from(HistoryRow(timeline, switch_lsn, reason, time, new_leader): HistoryRow) -> Self {
        Self {
            timeline,
            switch_lsn,
            reason,
            time,
            new_leader,
        }
    }
}

impl From<HistoryEntry> for HistoryRow {
    fn from(e: HistoryEntry) -> Self {
        HistoryRow(e.timeline, e.switch_lsn, e.reason, e.time, e.new_leader)
    }
}

impl HistoryEntry {
    pub fn is_switchover(&self) -> bool {
        self.reason == "switchover"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_tolerates_missing_fields() {
        let c = DynamicConfig {
            parameters: BTreeMap::from([("work_mem".into(), "8MB".into())]),
            pg_hba: vec!["host all all 10.0.0.0/8 scram-sha-256".into()],
            failsafe_mode: Some(true),
        };
        assert_eq!(DynamicConfig::parse(&c.to_json()).unwrap(), c);
        assert_eq!(
            DynamicConfig::parse("{}").unwrap(),
            DynamicConfig::default()
        );
        assert!(DynamicConfig::parse("not json").is_err());
        assert_eq!(c.fingerprint(), c.clone().fingerprint());
        assert_ne!(c.fingerprint(), DynamicConfig::default().fingerprint());
        assert_eq!(c.fingerprint().len(), 16);
    }

    #[test]
    fn history_rows_keep_patronis_array_shape() {
        let raw =
            r#"[[1,25165984,"no recovery target specified","2026-11-26T01:00:00Z","demo-1"]]"#;
        let rows: Vec<HistoryEntry> = serde_json::from_str(raw).unwrap();
        assert_eq!(rows[0].timeline, 1);
        assert_eq!(rows[0].switch_lsn, 25165984);
        assert_eq!(rows[0].new_leader, "demo-1");
        assert!(!rows[0].is_switchover());
        assert_eq!(serde_json::to_string(&rows).unwrap(), raw);
    }
}
