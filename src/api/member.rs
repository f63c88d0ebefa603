//! The member status each agent publishes in its pod's `pgwarden.io/status` annotation, with
//! Patroni's member field names. The operator's label updater and the CLI read it through this
//! type; a corrupt annotation parses to an error that callers log and skip, never a panic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Patroni's member `role` values that pgwarden uses.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    Primary,
    Replica,
    Demoted,
    Uninitialized,
    Promoted,
}

/// Patroni's member `state` values.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    Running,
    Starting,
    Stopping,
    Stopped,
    Crashed,
    #[serde(rename = "creating replica")]
    CreatingReplica,
    #[serde(rename = "initializing new cluster")]
    Initializing,
    #[serde(rename = "running custom bootstrap script")]
    CustomBootstrap,
    #[serde(rename = "restarting after failure")]
    Restarting,
}

/// Tags that change how a member takes part in failover (Patroni's `tags`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberTags {
    /// Never promote this member.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nofailover: bool,
    /// Never make this member a synchronous standby.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nosync: bool,
    /// Keep this member out of the replica load balancer (`/replica` answers 503).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub noloadbalance: bool,
    /// Any other tags, kept as given.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// The `pgwarden.io/status` annotation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MemberStatus {
    /// `postgres://host:port/postgres`
    pub conn_url: String,
    /// `http://host:8008/patroni`
    pub api_url: String,
    pub state: MemberState,
    pub role: MemberRole,
    /// WAL position in bytes: write LSN on a primary, replayed (or received) on a replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xlog_location: Option<u64>,
    /// `streaming` or `in archive recovery` on a replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    #[serde(default, skip_serializing_if = "is_default_tags")]
    pub tags: MemberTags,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending_restart: bool,
    /// pgwarden's version.
    pub version: String,
    /// Fingerprint of the dynamic configuration this member runs with (pgwarden's addition): the
    /// operator rolls restart-only changes only once every member has taken the change up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// `pg_stat_archiver` of a primary that archives WAL (`spec.backup`; pgwarden's addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archiver: Option<crate::api::backup::ArchiverStats>,
    /// Why this member's last bootstrap (initdb, or the restore of `spec.bootstrap.recovery`)
    /// failed, until one succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_error: Option<String>,
    /// Why the primary cannot prepare the backup repository (`pgbackrest stanza-create`'s error),
    /// while it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stanza_error: Option<String>,
    /// What the repository holds, as the primary last read it (`spec.backup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<crate::api::backup::RepositoryInfo>,
}

fn is_default_tags(t: &MemberTags) -> bool {
    *t == MemberTags::default()
}

/// Why an annotation could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid {annotation} annotation: {source}", annotation = crate::api::names::ANNOTATION_STATUS)]
pub struct StatusParseError {
    #[from]
    source: serde_json::Error,
}

impl MemberStatus {
    pub fn parse(annotation: &str) -> Result<Self, StatusParseError> {
        Ok(serde_json::from_str(annotation)?)
    }

    pub fn to_annotation(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The `pgwarden.io/role` rule both of its writers follow (the agent on its own pod, the
/// operator's label updater on every pod): `primary` only for a member that runs as primary AND
/// holds the leader Lease, `replica` for a running replica, no label otherwise.
pub fn role_label(primary: bool, holds_lease: bool, replica: bool) -> Option<&'static str> {
    if primary && holds_lease {
        Some(crate::api::names::ROLE_PRIMARY)
    } else if replica {
        Some(crate::api::names::ROLE_REPLICA)
    } else {
        None
    }
}

/// Host and port of a `postgres://host:port/...` URL, as the agents publish them.
pub fn conn_url(host: &str, port: u16) -> String {
    format!("postgres://{}:{port}/postgres", host_for_url(host))
}

/// `http://host:port/patroni`, Patroni's `api_url`.
pub fn api_url(host: &str, port: u16) -> String {
    format!("http://{}:{port}/patroni", host_for_url(host))
}

fn host_for_url(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// `(host, port)` from a URL such as `http://10.0.0.5:8008/patroni`; `None` when malformed.
pub fn url_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        let (h, p) = stripped.split_once("]:")?;
        (h, p)
    } else {
        authority.rsplit_once(':')?
    };
    Some((host.to_string(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MemberStatus {
        MemberStatus {
            conn_url: conn_url("10.0.0.5", 5432),
            api_url: api_url("10.0.0.5", 8008),
            state: MemberState::Running,
            role: MemberRole::Replica,
            xlog_location: Some(50331808),
            replication_state: Some("streaming".into()),
            timeline: Some(2),
            tags: MemberTags {
                nofailover: true,
                ..Default::default()
            },
            pending_restart: false,
            version: "0.1.0".into(),
            config: None,
            archiver: None,
            bootstrap_error: None,
            stanza_error: None,
            repository: None,
        }
    }

    #[test]
    fn annotation_uses_patronis_field_names() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_annotation()).unwrap();
        assert_eq!(v["conn_url"], "postgres://10.0.0.5:5432/postgres");
        assert_eq!(v["api_url"], "http://10.0.0.5:8008/patroni");
        assert_eq!(v["state"], "running");
        assert_eq!(v["role"], "replica");
        assert_eq!(v["xlog_location"], 50331808);
        assert_eq!(v["replication_state"], "streaming");
        assert_eq!(v["timeline"], 2);
        assert_eq!(v["tags"]["nofailover"], true);
        assert!(v.get("pending_restart").is_none());
    }

    #[test]
    fn round_trips() {
        let s = sample();
        assert_eq!(MemberStatus::parse(&s.to_annotation()).unwrap(), s);
    }

    #[test]
    fn corrupt_annotations_are_errors_not_panics() {
        for bad in [
            "",
            "{",
            "null",
            "[]",
            r#"{"role":"king"}"#,
            r#"{"conn_url":1}"#,
        ] {
            let err = MemberStatus::parse(bad).unwrap_err();
            assert!(err.to_string().contains("pgwarden.io/status"), "{err}");
        }
    }

    #[test]
    fn urls_parse_back_to_host_and_port() {
        assert_eq!(
            url_host_port("http://10.0.0.5:8008/patroni"),
            Some(("10.0.0.5".into(), 8008))
        );
        assert_eq!(
            url_host_port("postgres://[::1]:5432/postgres"),
            Some(("::1".into(), 5432))
        );
        assert_eq!(url_host_port("nonsense"), None);
        assert_eq!(url_host_port("http://host:notaport/"), None);
    }
}
