//! Rendering of the files the agent owns in the data directory: `pgwarden.conf` (included from
//! postgresql.conf; rewritten before every start), `pg_hba.conf`, and the passfile. Pure.

use std::collections::BTreeMap;

/// Replication source of a replica: what `primary_conninfo` and `primary_slot_name` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryConninfo {
    pub host: String,
    pub port: u16,
    /// This member's name: `application_name`, so the primary can list it in
    /// synchronous_standby_names.
    pub application_name: String,
    pub slot: String,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen_address: String,
    pub port: u16,
    pub socket_dir: String,
    pub passfile: String,
    pub replication_user: String,
    pub primary_conninfo: Option<PrimaryConninfo>,
    pub synchronous_standby_names: Option<String>,
    pub parameters: BTreeMap<String, String>,
    /// Extra pg_hba.conf lines (the user's), before pgwarden's own.
    pub pg_hba: Vec<String>,
    /// Refuse every client connection over TCP (replication and the local socket stay open):
    /// a member that may still be behind `-rw` must not answer read-only there.
    pub clients_fenced: bool,
    pub initdb: InitdbOptions,
}

/// How a new cluster is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitdbOptions {
    pub encoding: String,
    pub locale: String,
    pub data_checksums: bool,
}

impl Default for InitdbOptions {
    fn default() -> Self {
        Self {
            encoding: "UTF8".into(),
            locale: "C".into(),
            data_checksums: true,
        }
    }
}

/// A postgresql.conf string literal.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// A double-quoted identifier, as synchronous_standby_names needs for names with `-`.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A libpq connection-string value.
fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Parameters pgwarden needs for replication and failover; user parameters may not override the
/// ones that would break them (listen address, port, socket, wal_level, hot_standby).
pub fn render_pgwarden_conf(s: &ServerSettings) -> String {
    let mut out = String::from(
        "# Written by pgwarden before every start. Do not edit: use spec.postgresql.parameters.\n",
    );
    let mut set = |k: &str, v: String| out.push_str(&format!("{k} = {v}\n"));
    for (k, v) in &s.parameters {
        if !PROTECTED.contains(&k.as_str()) {
            set(k, quote(v));
        }
    }
    set("listen_addresses", quote(&s.listen_address));
    set("port", s.port.to_string());
    set("unix_socket_directories", quote(&s.socket_dir));
    set("unix_socket_permissions", "0700".into());
    set("wal_level", quote("replica"));
    set("hot_standby", quote("on"));
    set("wal_log_hints", quote("on"));
    // A slot and a sender per replica: a cluster has at most 16 instances, plus room for
    // basebackups and tools.
    if !s.parameters.contains_key("max_wal_senders") {
        set("max_wal_senders", "20".into());
    }
    if !s.parameters.contains_key("max_replication_slots") {
        set("max_replication_slots", "20".into());
    }
    // After a failover or switchover a replica re-points at the new primary; PostgreSQL's default
    // 5 s between streaming attempts would leave it unready (and out of `-ro`) that long.
    if !s.parameters.contains_key("wal_retrieve_retry_interval") {
        set("wal_retrieve_retry_interval", quote("1s"));
    }
    if !s.parameters.contains_key("wal_keep_size") {
        set("wal_keep_size", quote("128MB"));
    }
    set("recovery_target_timeline", quote("latest"));
    match &s.primary_conninfo {
        Some(u) => {
            let conninfo = format!(
                "host={} port={} user={} passfile={} application_name={} sslmode=prefer connect_timeout=3",
                conninfo_value(&u.host),
                u.port,
                conninfo_value(&s.replication_user),
                conninfo_value(&s.passfile),
                conninfo_value(&u.application_name),
            );
            set("primary_conninfo", quote(&conninfo));
            set("primary_slot_name", quote(&u.slot));
        }
        None => {
            set("primary_conninfo", quote(""));
            set("primary_slot_name", quote(""));
        }
    }
    set(
        "synchronous_standby_names",
        quote(s.synchronous_standby_names.as_deref().unwrap_or("")),
    );
    out
}

const PROTECTED: &[&str] = &[
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "unix_socket_permissions",
    "wal_level",
    "hot_standby",
    "wal_log_hints",
    "primary_conninfo",
    "primary_slot_name",
    "recovery_target_timeline",
    "synchronous_standby_names",
];

/// pg_hba.conf: the local socket (0700, so only this pod's postgres user reaches it), then the
/// user's lines, then password authentication for replication and clients.
/// With `clients_fenced`, the user's lines are left out and every other TCP connection is
/// rejected: clients get an error at once, never a read-only answer.
pub fn render_pg_hba(extra: &[String], replication_user: &str, clients_fenced: bool) -> String {
    let mut out = String::from("# Written by pgwarden. Add lines with spec.postgresql.pgHba.\n");
    out.push_str("local   all          all                       trust\n");
    if !clients_fenced {
        for line in extra {
            out.push_str(line);
            out.push('\n');
        }
    }
    for net in ["0.0.0.0/0", "::/0     "] {
        out.push_str(&format!(
            "host    replication  {replication_user}  {net}  scram-sha-256\n"
        ));
    }
    let clients = if clients_fenced {
        out.push_str("# Clients fenced: this member may still be behind the -rw Service.\n");
        "reject"
    } else {
        "scram-sha-256"
    };
    for net in ["0.0.0.0/0", "::/0     "] {
        out.push_str(&format!(
            "host    all          all        {net}  {clients}\n"
        ));
    }
    out
}

/// A libpq passfile line: `*:*:*:user:password` with `:` and `\` escaped.
pub fn render_passfile(entries: &[(&str, &str)]) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    entries
        .iter()
        .map(|(user, password)| format!("*:*:*:{}:{}\n", esc(user), esc(password)))
        .collect()
}

/// Patroni's slot name for a member: lower case, `-` and `.` become `_`.
pub fn slot_name(member: &str) -> String {
    member
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ServerSettings {
        ServerSettings {
            listen_address: "127.0.0.2".into(),
            port: 5432,
            socket_dir: "/run/pg".into(),
            passfile: "/run/pg/pgpass".into(),
            replication_user: "replicator".into(),
            primary_conninfo: None,
            synchronous_standby_names: None,
            parameters: BTreeMap::new(),
            pg_hba: vec![],
            clients_fenced: false,
            initdb: InitdbOptions::default(),
        }
    }

    #[test]
    fn replica_conf_points_at_the_leader_through_its_slot() {
        let mut s = settings();
        s.primary_conninfo = Some(PrimaryConninfo {
            host: "127.0.0.1".into(),
            port: 5432,
            application_name: "pg-1".into(),
            slot: slot_name("pg-1"),
        });
        let conf = render_pgwarden_conf(&s);
        assert!(conf.contains("primary_conninfo = 'host=''127.0.0.1'' port=5432 user=''replicator'' passfile=''/run/pg/pgpass'' application_name=''pg-1'' sslmode=prefer connect_timeout=3'"), "{conf}");
        assert!(conf.contains("primary_slot_name = 'pg_1'"));
        assert!(conf.contains("recovery_target_timeline = 'latest'"));
    }

    #[test]
    fn user_parameters_cannot_break_replication() {
        let mut s = settings();
        s.parameters.insert("wal_level".into(), "minimal".into());
        s.parameters.insert("work_mem".into(), "8MB".into());
        let conf = render_pgwarden_conf(&s);
        assert!(!conf.contains("minimal"));
        assert!(conf.contains("work_mem = '8MB'"));
    }

    #[test]
    fn quoting_escapes_single_quotes() {
        assert_eq!(quote("it's"), "'it''s'");
    }

    #[test]
    fn passfile_escapes_separators() {
        assert_eq!(render_passfile(&[("u", "a:b\\c")]), "*:*:*:u:a\\:b\\\\c\n");
    }

    #[test]
    fn slot_names_follow_patroni() {
        assert_eq!(slot_name("Main-0.x"), "main_0_x");
    }

    #[test]
    fn fenced_clients_are_rejected_and_replication_stays_open() {
        let extra = vec!["host all all 10.0.0.0/8 trust".to_string()];
        let open = render_pg_hba(&extra, "replicator", false);
        assert!(open.contains("10.0.0.0/8 trust"));
        assert!(!open.contains("reject"));
        let fenced = render_pg_hba(&extra, "replicator", true);
        assert!(
            !fenced.contains("10.0.0.0/8"),
            "the user's lines could let clients in"
        );
        let lines: Vec<&str> = fenced.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["local", "all", "all", "trust"]
        );
        assert!(lines[1].contains("replication  replicator  0.0.0.0/0  scram-sha-256"));
        assert!(lines.last().unwrap().ends_with("reject"));
        assert!(
            lines.iter().all(|l| l.starts_with("local")
                || l.contains("replication")
                || l.ends_with("reject"))
        );
    }
}
