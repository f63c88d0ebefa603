//! `spec.backup` of a `PostgresCluster`: where pgBackRest keeps the cluster's base backups and
//! archived WAL (an S3-compatible object store), how long it keeps them, and when it takes them.
//! The operator turns it into the `PGBACKREST_*` environment of every instance (pgBackRest reads
//! no configuration file) and into `archive_mode`/`archive_command` (so admission refuses user
//! values for those while a repository is set). Pure types and their derivations; no I/O.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Backups and continuous WAL archiving with pgBackRest.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    pub repository: RepositorySpec,
    /// How many backups to keep.
    #[serde(default)]
    pub retention: RetentionSpec,
    /// Compression of backups and archived WAL.
    #[serde(default)]
    pub compression: Compression,
    /// When the operator takes a full backup, in cron syntax (minute hour day-of-month month
    /// day-of-week, UTC). Default: daily at midnight.
    #[serde(default = "default_schedule")]
    // Each field `*`, `n` or `a-b`, with an optional `/step`, comma-separated; the operator
    // checks the numbers' ranges (SpecValid names the field).
    #[schemars(
        regex(
            pattern = r"^\s*(\*|[0-9]+(-[0-9]+)?)(/[0-9]+)?(,(\*|[0-9]+(-[0-9]+)?)(/[0-9]+)?)*(\s+(\*|[0-9]+(-[0-9]+)?)(/[0-9]+)?(,(\*|[0-9]+(-[0-9]+)?)(/[0-9]+)?)*){4}\s*$"
        ),
        length(max = 128)
    )]
    pub schedule: String,
    /// Archive every WAL segment to the repository (`archive_mode = on`): the recovery point of
    /// a restore is then the last archived segment, not the last backup. Backups need it: while
    /// it is off the schedule rests and a `PostgresBackup` fails.
    #[serde(default = "default_true")]
    pub wal_archiving: bool,
    /// Start each backup with an immediate checkpoint (pgBackRest's `--start-fast`). Off, a
    /// backup first waits for the next scheduled checkpoint (up to `checkpoint_timeout`, 5
    /// minutes by default) and adds no I/O burst; on, it starts at once (CloudNativePG's
    /// `immediateCheckpoint`).
    #[serde(default)]
    pub immediate_checkpoint: bool,
}

fn default_schedule() -> String {
    "0 0 * * *".into()
}

fn default_true() -> bool {
    true
}

/// The repository: an S3-compatible object store.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RepositorySpec {
    pub s3: S3Spec,
}

/// An S3-compatible bucket (AWS S3, GCS's S3 API, MinIO, ...). pgBackRest speaks HTTPS only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    /// The endpoint, `host` or `host:port` (HTTPS; port 443 when not given), e.g.
    /// `s3.eu-west-1.amazonaws.com`.
    #[schemars(
        regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$"),
        length(max = 261)
    )]
    pub endpoint: String,
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))]
    pub bucket: String,
    /// Where in the bucket (default: `/<namespace>/<cluster>`). Two clusters must not share it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/[A-Za-z0-9._/-]*$"), length(max = 512))]
    pub path: Option<String>,
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// `host`: the bucket in the host name (AWS); `path`: in the path (most other stores, and
    /// any store addressed by IP).
    #[serde(default)]
    pub uri_style: UriStyle,
    /// Secret (same namespace) with the access key: keys `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`.
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: String,
    /// Secret (same namespace) with the CA bundle that signed the endpoint's certificate, under
    /// key `ca.crt`; without it the system's CAs are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub ca_secret: Option<String>,
}

fn default_region() -> String {
    "us-east-1".into()
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum UriStyle {
    #[default]
    Host,
    Path,
}

/// pgBackRest's retention of full backups (and the WAL they need): a count, or days.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.fullBackups) && has(self.days))").message("spec.backup.retention: give fullBackups or days, not both"))]
pub struct RetentionSpec {
    /// Full backups to keep (default 2 when days is not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 9999))]
    pub full_backups: Option<i32>,
    /// Keep full backups younger than this many days (and the newest one older).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 9999))]
    pub days: Option<i32>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Compression {
    None,
    Gz,
    #[default]
    Lz4,
    Zst,
}

impl Compression {
    /// pgBackRest's `compress-type`.
    pub fn as_pgbackrest(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gz => "gz",
            Compression::Lz4 => "lz4",
            Compression::Zst => "zst",
        }
    }
}

/// Where pgBackRest finds the instance inside the pod, and the cluster's identity.
#[derive(Debug, Clone)]
pub struct Instance<'a> {
    pub namespace: &'a str,
    pub cluster: &'a str,
    pub pgdata: &'a str,
    pub socket_dir: &'a str,
    pub port: u16,
    /// A directory the postgres user may write (logs, locks, the async archive spool).
    pub scratch_dir: &'a str,
    /// Where the CA Secret is mounted, when there is one.
    pub ca_dir: &'a str,
    /// An empty file: pgBackRest reads its configuration from `PGBACKREST_CONFIG`, and the
    /// image's own `/etc/pgbackrest.conf` may be unreadable or name other stanzas.
    pub empty_config: &'a str,
}

/// One `PGBACKREST_*` variable: a literal value, or a key of the credentials Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Literal(String),
    SecretKey { secret: String, key: String },
}

/// The key of the credentials Secret that holds the access key id.
pub const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
/// The key of the credentials Secret that holds the secret access key.
pub const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// The key of the CA Secret.
pub const CA_KEY: &str = "ca.crt";

impl BackupSpec {
    /// The stanza: the cluster's name (one cluster per repository path).
    pub fn stanza(instance: &Instance<'_>) -> String {
        instance.cluster.to_string()
    }

    /// The repository path: `spec.backup.repository.s3.path`, or `/<namespace>/<cluster>`.
    pub fn repository_path(&self, instance: &Instance<'_>) -> String {
        self.repository
            .s3
            .path
            .clone()
            .unwrap_or_else(|| format!("/{}/{}", instance.namespace, instance.cluster))
    }

    /// pgBackRest's whole configuration, as environment variables, in a stable order.
    pub fn pgbackrest_env(&self, instance: &Instance<'_>) -> Vec<(String, EnvValue)> {
        let s3 = &self.repository.s3;
        let lit = |v: &str| EnvValue::Literal(v.to_string());
        let (host, port) = match s3.endpoint.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.to_string())),
            None => (s3.endpoint.clone(), None),
        };
        let mut env = vec![
            ("PGBACKREST_CONFIG", lit(instance.empty_config)),
            (
                "PGBACKREST_STANZA",
                EnvValue::Literal(Self::stanza(instance)),
            ),
            ("PGBACKREST_PG1_PATH", lit(instance.pgdata)),
            ("PGBACKREST_PG1_SOCKET_PATH", lit(instance.socket_dir)),
            (
                "PGBACKREST_PG1_PORT",
                EnvValue::Literal(instance.port.to_string()),
            ),
            ("PGBACKREST_REPO1_TYPE", lit("s3")),
            (
                "PGBACKREST_REPO1_PATH",
                EnvValue::Literal(self.repository_path(instance)),
            ),
            ("PGBACKREST_REPO1_S3_ENDPOINT", EnvValue::Literal(host)),
            ("PGBACKREST_REPO1_S3_BUCKET", lit(&s3.bucket)),
            ("PGBACKREST_REPO1_S3_REGION", lit(&s3.region)),
            (
                "PGBACKREST_REPO1_S3_URI_STYLE",
                lit(match s3.uri_style {
                    UriStyle::Host => "host",
                    UriStyle::Path => "path",
                }),
            ),
            (
                "PGBACKREST_REPO1_S3_KEY",
                EnvValue::SecretKey {
                    secret: s3.credentials_secret.clone(),
                    key: ACCESS_KEY_ID.into(),
                },
            ),
            (
                "PGBACKREST_REPO1_S3_KEY_SECRET",
                EnvValue::SecretKey {
                    secret: s3.credentials_secret.clone(),
                    key: SECRET_ACCESS_KEY.into(),
                },
            ),
            (
                "PGBACKREST_COMPRESS_TYPE",
                lit(self.compression.as_pgbackrest()),
            ),
            // Archive-push returns as soon as the segment is queued in the spool; a separate
            // process ships segments in parallel, so a slow store does not hold up the
            // archiver for every segment in turn.
            ("PGBACKREST_ARCHIVE_ASYNC", lit("y")),
            (
                "PGBACKREST_SPOOL_PATH",
                EnvValue::Literal(format!("{}/spool", instance.scratch_dir)),
            ),
            (
                "PGBACKREST_LOG_PATH",
                EnvValue::Literal(format!("{}/log", instance.scratch_dir)),
            ),
            (
                "PGBACKREST_LOCK_PATH",
                EnvValue::Literal(format!("{}/lock", instance.scratch_dir)),
            ),
            ("PGBACKREST_LOG_LEVEL_FILE", lit("off")),
            ("PGBACKREST_LOG_LEVEL_STDERR", lit("warn")),
        ];
        if let Some(port) = port {
            env.push(("PGBACKREST_REPO1_STORAGE_PORT", EnvValue::Literal(port)));
        }
        if s3.ca_secret.is_some() {
            env.push((
                "PGBACKREST_REPO1_STORAGE_CA_FILE",
                EnvValue::Literal(format!("{}/{CA_KEY}", instance.ca_dir)),
            ));
        }
        match (self.retention.full_backups, self.retention.days) {
            (_, Some(days)) => {
                env.push(("PGBACKREST_REPO1_RETENTION_FULL_TYPE", lit("time")));
                env.push((
                    "PGBACKREST_REPO1_RETENTION_FULL",
                    EnvValue::Literal(days.to_string()),
                ));
            }
            (full, None) => {
                env.push(("PGBACKREST_REPO1_RETENTION_FULL_TYPE", lit("count")));
                env.push((
                    "PGBACKREST_REPO1_RETENTION_FULL",
                    EnvValue::Literal(full.unwrap_or(2).to_string()),
                ));
            }
        }
        env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// The PostgreSQL parameters archiving needs (none when `walArchiving` is off).
    pub fn archive_parameters(&self) -> Vec<(&'static str, String)> {
        if !self.wal_archiving {
            return vec![];
        }
        vec![
            ("archive_mode", "on".into()),
            // The stanza and repository come from the environment PostgreSQL inherits.
            ("archive_command", "pgbackrest archive-push %p".into()),
        ]
    }
}

/// Parameters admission refuses while `spec.backup` is set (pgwarden sets them).
pub const ARCHIVE_PARAMETERS: &[&str] = &["archive_command", "archive_mode"];

#[cfg(test)]
mod tests {
    use super::*;

    fn instance() -> Instance<'static> {
        Instance {
            namespace: "shop",
            cluster: "orders",
            pgdata: "/var/lib/postgresql/data/pgdata",
            socket_dir: "/run/pgwarden/agent",
            port: 5432,
            scratch_dir: "/run/pgwarden/pgbackrest",
            ca_dir: "/etc/pgwarden/backup-ca",
            empty_config: "/run/pgwarden/pgbackrest.conf",
        }
    }

    fn spec(v: serde_json::Value) -> BackupSpec {
        serde_json::from_value(v).expect("a backup spec")
    }

    fn env_map(b: &BackupSpec) -> std::collections::BTreeMap<String, EnvValue> {
        b.pgbackrest_env(&instance()).into_iter().collect()
    }

    fn lit(v: &str) -> EnvValue {
        EnvValue::Literal(v.into())
    }

    #[test]
    fn a_minimal_repository_gets_the_documented_defaults() {
        let b = spec(serde_json::json!({"repository": {"s3": {
            "endpoint": "s3.eu-west-1.amazonaws.com", "bucket": "backups",
            "credentialsSecret": "s3-creds"}}}));
        assert_eq!(b.schedule, "0 0 * * *");
        assert!(b.wal_archiving);
        let env = env_map(&b);
        assert_eq!(env["PGBACKREST_STANZA"], lit("orders"));
        assert_eq!(env["PGBACKREST_REPO1_PATH"], lit("/shop/orders"));
        assert_eq!(
            env["PGBACKREST_REPO1_S3_ENDPOINT"],
            lit("s3.eu-west-1.amazonaws.com")
        );
        assert_eq!(env["PGBACKREST_REPO1_S3_REGION"], lit("us-east-1"));
        assert_eq!(env["PGBACKREST_REPO1_S3_URI_STYLE"], lit("host"));
        assert_eq!(env["PGBACKREST_REPO1_RETENTION_FULL"], lit("2"));
        assert_eq!(env["PGBACKREST_REPO1_RETENTION_FULL_TYPE"], lit("count"));
        assert_eq!(env["PGBACKREST_COMPRESS_TYPE"], lit("lz4"));
        assert_eq!(
            env["PGBACKREST_REPO1_S3_KEY"],
            EnvValue::SecretKey {
                secret: "s3-creds".into(),
                key: ACCESS_KEY_ID.into()
            }
        );
        assert!(!env.contains_key("PGBACKREST_REPO1_STORAGE_PORT"));
        assert!(!env.contains_key("PGBACKREST_REPO1_STORAGE_CA_FILE"));
        assert_eq!(
            b.archive_parameters(),
            vec![
                ("archive_mode", "on".to_string()),
                ("archive_command", "pgbackrest archive-push %p".to_string())
            ]
        );
    }

    #[test]
    fn a_private_store_gets_its_port_ca_path_style_and_retention_in_days() {
        let b = spec(serde_json::json!({
            "repository": {"s3": {"endpoint": "10.213.0.1:9000", "bucket": "pgwarden",
                "uriStyle": "path", "path": "/team/orders", "credentialsSecret": "c",
                "caSecret": "store-ca"}},
            "retention": {"days": 14}, "compression": "zst", "walArchiving": false}));
        let env = env_map(&b);
        assert_eq!(env["PGBACKREST_REPO1_S3_ENDPOINT"], lit("10.213.0.1"));
        assert_eq!(env["PGBACKREST_REPO1_STORAGE_PORT"], lit("9000"));
        assert_eq!(
            env["PGBACKREST_REPO1_STORAGE_CA_FILE"],
            lit("/etc/pgwarden/backup-ca/ca.crt")
        );
        assert_eq!(env["PGBACKREST_REPO1_S3_URI_STYLE"], lit("path"));
        assert_eq!(env["PGBACKREST_REPO1_PATH"], lit("/team/orders"));
        assert_eq!(env["PGBACKREST_REPO1_RETENTION_FULL_TYPE"], lit("time"));
        assert_eq!(env["PGBACKREST_REPO1_RETENTION_FULL"], lit("14"));
        assert_eq!(env["PGBACKREST_COMPRESS_TYPE"], lit("zst"));
        assert!(b.archive_parameters().is_empty(), "archiving off");
    }
}

/// `pg_stat_archiver` of the primary, as its agent reads it (times in Unix seconds).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArchiverStats {
    pub archived_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_wal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_time: Option<i64>,
    pub failed_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_wal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_time: Option<i64>,
}

/// The `ContinuousArchiving` condition's status, reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivingHealth {
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl ArchiverStats {
    /// Failing while the last failure is newer than the last success (PostgreSQL retries the
    /// same segment until it is archived, so a later success means it caught up).
    pub fn health(&self) -> ArchivingHealth {
        let failing = match (self.last_failed_time, self.last_archived_time) {
            (Some(f), Some(a)) => f >= a,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if failing {
            return ArchivingHealth {
                status: "False",
                reason: "ArchiveCommandFailing",
                message: format!(
                    "archive_command fails: segment {} last failed at {} ({} failures since the \
                     server started); WAL accumulates in pg_wal until it succeeds",
                    self.last_failed_wal.as_deref().unwrap_or("?"),
                    unix_time(self.last_failed_time),
                    self.failed_count
                ),
            };
        }
        match &self.last_archived_wal {
            Some(wal) => ArchivingHealth {
                status: "True",
                reason: "Archiving",
                message: format!(
                    "segment {wal} archived at {}",
                    unix_time(self.last_archived_time)
                ),
            },
            None => ArchivingHealth {
                status: "Unknown",
                reason: "NothingArchivedYet",
                message: "no WAL segment has been archived since the server started".into(),
            },
        }
    }
}

fn unix_time(t: Option<i64>) -> String {
    t.and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(|| "an unknown time".into(), |ts| ts.to_string())
}

#[cfg(test)]
mod archiver_tests {
    use super::*;

    #[test]
    fn archiving_fails_while_the_last_failure_is_newer_than_the_last_success() {
        let ok = ArchiverStats {
            archived_count: 3,
            last_archived_wal: Some("000000010000000000000003".into()),
            last_archived_time: Some(1_764_000_100),
            failed_count: 2,
            last_failed_wal: Some("000000010000000000000003".into()),
            last_failed_time: Some(1_764_000_050),
        };
        let h = ok.health();
        assert_eq!((h.status, h.reason), ("True", "Archiving"));
        assert!(
            h.message.contains("000000010000000000000003"),
            "{}",
            h.message
        );

        let failing = ArchiverStats {
            last_failed_wal: Some("000000010000000000000004".into()),
            last_failed_time: Some(1_764_000_160),
            failed_count: 3,
            ..ok.clone()
        };
        let h = failing.health();
        assert_eq!((h.status, h.reason), ("False", "ArchiveCommandFailing"));
        assert!(
            h.message.contains("000000010000000000000004"),
            "{}",
            h.message
        );
        assert!(h.message.contains("2025-11-24T"), "{}", h.message);

        let never = ArchiverStats::default();
        assert_eq!(never.health().status, "Unknown");
        let never_ok = ArchiverStats {
            failed_count: 1,
            last_failed_wal: Some("000000010000000000000001".into()),
            last_failed_time: Some(1_764_000_000),
            ..Default::default()
        };
        assert_eq!(never_ok.health().status, "False");
    }
}

/// One backup the repository holds, as `pgbackrest info --output=json` describes it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryBackup {
    /// pgBackRest's label, e.g. `20261202-080100F` (`F` full, `D` differential, `I` incremental).
    pub label: String,
    /// `full`, `diff` or `incr`.
    #[serde(rename = "type")]
    pub type_: String,
    /// When it started and finished (RFC 3339, UTC).
    pub started: String,
    pub finished: String,
    /// The database's size in bytes, and what this backup added to the repository.
    #[serde(default)]
    pub database_bytes: i64,
    #[serde(default)]
    pub repository_bytes: i64,
    /// The WAL segments a restore from it needs at least (`walStart` up to `walStop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_stop: Option<String>,
}

/// What the repository holds for the cluster's stanza, newest backup first.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryInfo {
    /// At most [`MAX_LISTED_BACKUPS`], newest first.
    #[serde(default)]
    pub backups: Vec<RepositoryBackup>,
    /// The earliest time a restore can reach: the end of the oldest backup (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverability_point: Option<String>,
    /// The oldest and newest WAL segment in the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_min: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_max: Option<String>,
}

/// The member status and the cluster status list this many backups at most (the newest).
pub const MAX_LISTED_BACKUPS: usize = 30;

/// The parts of pgBackRest's `info` JSON read here (it has many more; unknown ones are ignored).
#[derive(Deserialize)]
struct InfoStanza {
    name: String,
    #[serde(default)]
    archive: Vec<InfoArchive>,
    #[serde(default)]
    backup: Vec<InfoBackup>,
    status: InfoStatus,
}

#[derive(Deserialize)]
struct InfoArchive {
    min: Option<String>,
    max: Option<String>,
}

#[derive(Deserialize)]
struct InfoBackup {
    label: String,
    #[serde(rename = "type")]
    type_: String,
    timestamp: InfoTimes,
    #[serde(default)]
    info: Option<InfoSizes>,
    #[serde(default)]
    archive: Option<InfoWal>,
    #[serde(default)]
    error: Option<bool>,
}

#[derive(Deserialize)]
struct InfoTimes {
    start: i64,
    stop: i64,
}

#[derive(Deserialize)]
struct InfoSizes {
    #[serde(default)]
    size: i64,
    #[serde(default)]
    repository: Option<InfoRepoSize>,
}

#[derive(Deserialize)]
struct InfoRepoSize {
    #[serde(default)]
    delta: i64,
}

#[derive(Deserialize)]
struct InfoWal {
    start: Option<String>,
    stop: Option<String>,
}

#[derive(Deserialize)]
struct InfoStatus {
    code: i64,
    message: String,
}

fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Read `pgbackrest info --output=json` for `stanza`. A stanza without backups yet (pgBackRest's
/// status 2, "no valid backups") is an empty repository, not an error; any other non-zero
/// status is pgBackRest's message. Backups pgBackRest marks as erroneous are left out.
pub fn parse_info(json: &str, stanza: &str) -> Result<RepositoryInfo, String> {
    let stanzas: Vec<InfoStanza> =
        serde_json::from_str(json).map_err(|e| format!("unreadable pgbackrest info: {e}"))?;
    let s = stanzas
        .into_iter()
        .find(|s| s.name == stanza)
        .ok_or_else(|| format!("pgbackrest info does not list stanza {stanza}"))?;
    if s.status.code != 0 && s.status.code != 2 {
        return Err(format!(
            "stanza {stanza}: {} (code {})",
            s.status.message, s.status.code
        ));
    }
    let mut backups: Vec<RepositoryBackup> = s
        .backup
        .iter()
        .filter(|b| b.error != Some(true))
        .map(|b| RepositoryBackup {
            label: b.label.clone(),
            type_: b.type_.clone(),
            started: rfc3339(b.timestamp.start),
            finished: rfc3339(b.timestamp.stop),
            database_bytes: b.info.as_ref().map_or(0, |i| i.size),
            repository_bytes: b
                .info
                .as_ref()
                .and_then(|i| i.repository.as_ref())
                .map_or(0, |r| r.delta),
            wal_start: b.archive.as_ref().and_then(|a| a.start.clone()),
            wal_stop: b.archive.as_ref().and_then(|a| a.stop.clone()),
        })
        .collect();
    // pgBackRest lists oldest first.
    let first = s
        .backup
        .iter()
        .filter(|b| b.error != Some(true))
        .map(|b| b.timestamp.stop)
        .min()
        .map(rfc3339);
    backups.reverse();
    backups.truncate(MAX_LISTED_BACKUPS);
    let current = s.archive.last();
    Ok(RepositoryInfo {
        backups,
        first_recoverability_point: first,
        archive_min: current.and_then(|a| a.min.clone()),
        archive_max: current.and_then(|a| a.max.clone()),
    })
}

#[cfg(test)]
mod info_tests {
    use super::*;

    /// The shape pgBackRest 2.45 prints (trimmed of fields not read here).
    const INFO: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1",
        "max":"000000010000000000000007","min":"000000010000000000000001"}],
      "backup":[
        {"archive":{"start":"000000010000000000000003","stop":"000000010000000000000003"},
         "error":false,"info":{"delta":23000000,"repository":{"delta":3100000,"size":3100000},
         "size":23000000},"label":"20261202-080100F","lsn":{"start":"0/3000028","stop":"0/3000100"},
         "timestamp":{"start":1764662460,"stop":1764662470},"type":"full"},
        {"archive":{"start":"000000010000000000000005","stop":"000000010000000000000005"},
         "error":false,"info":{"delta":500000,"repository":{"delta":90000,"size":3200000},
         "size":23100000},"label":"20261202-080100F_20261202-080200I",
         "timestamp":{"start":1764662520,"stop":1764662525},"type":"incr"}],
      "cipher":"none","name":"main","status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]"#;

    #[test]
    fn info_lists_the_newest_backup_first_and_the_oldest_end_as_the_first_point() {
        let info = parse_info(INFO, "main").expect("parses");
        assert_eq!(info.backups.len(), 2);
        assert_eq!(info.backups[0].label, "20261202-080100F_20261202-080200I");
        assert_eq!(info.backups[0].type_, "incr");
        assert_eq!(info.backups[1].database_bytes, 23_000_000);
        assert_eq!(info.backups[1].repository_bytes, 3_100_000);
        assert_eq!(info.backups[1].finished, "2025-12-02T08:01:10Z");
        assert_eq!(
            info.backups[1].wal_start.as_deref(),
            Some("000000010000000000000003")
        );
        assert_eq!(
            info.first_recoverability_point.as_deref(),
            Some("2025-12-02T08:01:10Z")
        );
        assert_eq!(
            info.archive_max.as_deref(),
            Some("000000010000000000000007")
        );
    }

    #[test]
    fn an_empty_stanza_is_no_error_and_a_broken_one_says_why() {
        let empty = r#"[{"archive":[],"backup":[],"name":"main",
            "status":{"code":2,"message":"no valid backups"}}]"#;
        let info = parse_info(empty, "main").expect("no backups yet");
        assert!(info.backups.is_empty());
        assert_eq!(info.first_recoverability_point, None);
        let missing = r#"[{"archive":[],"backup":[],"name":"main",
            "status":{"code":1,"message":"missing stanza path"}}]"#;
        let e = parse_info(missing, "main").unwrap_err();
        assert!(e.contains("missing stanza path"), "{e}");
        assert!(parse_info(INFO, "other").is_err());
        assert!(parse_info("garbage", "main").is_err());
    }
}

/// `spec.bootstrap.recovery`: the new cluster starts from another cluster's backups and WAL
/// (point-in-time recovery) instead of initdb. The source is read, never written: the new
/// cluster archives to its own path (`spec.backup`, required with a recovery).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySpec {
    pub source: RecoverySource,
    /// Where recovery stops; absent: at the end of the archived WAL (the latest state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RecoveryTarget>,
}

/// The cluster whose repository is restored: in the same object store, bucket and credentials
/// as `spec.backup.repository`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySource {
    /// The source cluster's name (pgBackRest's stanza).
    #[schemars(length(min = 1, max = 63))]
    pub cluster: String,
    /// Its repository path (default `/<namespace>/<cluster>`, the default of its `spec.backup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/[A-Za-z0-9._/-]*$"))]
    pub path: Option<String>,
}

/// At most one of `time`, `lsn`, `name`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("[has(self.time), has(self.lsn), has(self.name)].filter(x, x).size() <= 1").message("spec.bootstrap.recovery.target: set at most one of time, lsn, name"))]
pub struct RecoveryTarget {
    /// RFC 3339 (`2026-12-02T08:30:00Z`): every transaction committed up to this time, none
    /// after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
    ))]
    pub time: Option<String>,
    /// A WAL position (`0/3000100`): recovery stops after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"))]
    pub lsn: Option<String>,
    /// A restore point made with `pg_create_restore_point(name)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub name: Option<String>,
}

/// What the bootstrapping agent restores (the operator passes it as `PGWARDEN_RECOVERY`, JSON).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The source's stanza and repository path.
    pub stanza: String,
    pub path: String,
    /// pgBackRest's `--type`: `default` (to the end of the WAL), `time`, `lsn` or `name`.
    #[serde(rename = "type")]
    pub type_: String,
    /// pgBackRest's `--target` (a time in PostgreSQL's `YYYY-MM-DD HH:MM:SS+00` form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl RecoverySpec {
    /// The source's repository path.
    pub fn source_path(&self, namespace: &str) -> String {
        self.source
            .path
            .clone()
            .unwrap_or_else(|| format!("/{namespace}/{}", self.source.cluster))
    }

    /// What the agent restores; an unparseable time is an error naming the field (admission's
    /// pattern lets through what jiff may still refuse, such as month 13).
    pub fn recovery(&self, namespace: &str) -> Result<Recovery, String> {
        let (type_, target) = match &self.target {
            Some(RecoveryTarget { time: Some(t), .. }) => {
                let ts: jiff::Timestamp = t
                    .parse()
                    .map_err(|e| format!("spec.bootstrap.recovery.target.time {t:?}: {e}"))?;
                // pgBackRest parses at most microseconds (PostgreSQL's precision too).
                let micros = jiff::Timestamp::from_microsecond(ts.as_microsecond())
                    .map_err(|e| format!("spec.bootstrap.recovery.target.time {t:?}: {e}"))?;
                (
                    "time",
                    Some(micros.strftime("%Y-%m-%d %H:%M:%S%.f+00").to_string()),
                )
            }
            Some(RecoveryTarget { lsn: Some(l), .. }) => ("lsn", Some(l.clone())),
            Some(RecoveryTarget { name: Some(n), .. }) => ("name", Some(n.clone())),
            _ => ("default", None),
        };
        Ok(Recovery {
            stanza: self.source.cluster.clone(),
            path: self.source_path(namespace),
            type_: type_.into(),
            target,
        })
    }
}

impl Recovery {
    /// `pgbackrest restore`'s arguments: the source's stanza and path on the command line (they
    /// override the new cluster's own in the environment), the target, promotion at the
    /// target, and a `restore_command` that reads the source's archive (the one pgBackRest
    /// would write names the environment's repository, the new cluster's).
    pub fn restore_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--stanza={}", self.stanza),
            format!("--repo1-path={}", self.path),
            format!("--type={}", self.type_),
        ];
        if let Some(t) = &self.target {
            args.push(format!("--target={t}"));
            args.push("--target-action=promote".into());
        }
        args.push(format!(
            "--recovery-option=restore_command=pgbackrest --stanza={} --repo1-path={} archive-get %f \"%p\"",
            self.stanza, self.path
        ));
        args.push("restore".into());
        args
    }
}

/// The settings `pgbackrest restore` writes into `postgresql.auto.conf`; reset once recovery has
/// ended, or a replica cloned from this primary would copy them and stop (and promote) at the
/// old target.
pub const RECOVERY_SETTINGS: &[&str] = &[
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_xid",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_timeline",
];

#[cfg(test)]
mod recovery_tests {
    use super::*;

    fn spec(target: serde_json::Value) -> RecoverySpec {
        serde_json::from_value(
            serde_json::json!({"source": {"cluster": "orders"}, "target": target}),
        )
        .expect("parses")
    }

    #[test]
    fn a_time_target_becomes_pgbackrests_form_and_the_source_is_on_the_command_line() {
        // Nanoseconds (what a client's clock gives) are cut to PostgreSQL's microseconds.
        let r = spec(serde_json::json!({"time": "2026-12-02T08:19:56.83967571Z"}))
            .recovery("shop")
            .unwrap();
        assert_eq!(r.target.as_deref(), Some("2026-12-02 08:19:56.839675+00"));
        let r = spec(serde_json::json!({"time": "2026-12-02T09:30:15.25+01:00"}))
            .recovery("shop")
            .unwrap();
        assert_eq!(r.path, "/shop/orders");
        assert_eq!(r.type_, "time");
        assert_eq!(r.target.as_deref(), Some("2026-12-02 08:30:15.25+00"));
        let args = r.restore_args();
        assert_eq!(args[0], "--stanza=orders");
        assert_eq!(args[1], "--repo1-path=/shop/orders");
        assert!(args.contains(&"--target=2026-12-02 08:30:15.25+00".to_string()));
        assert!(args.contains(&"--target-action=promote".to_string()));
        assert!(args.iter().any(|a| a
            == "--recovery-option=restore_command=pgbackrest --stanza=orders --repo1-path=/shop/orders archive-get %f \"%p\""));
        assert_eq!(args.last().map(String::as_str), Some("restore"));
    }

    #[test]
    fn no_target_restores_to_the_end_and_a_bad_time_names_the_field() {
        let r = spec(serde_json::Value::Null).recovery("shop").unwrap();
        assert_eq!((r.type_.as_str(), r.target.as_deref()), ("default", None));
        assert!(!r.restore_args().iter().any(|a| a.starts_with("--target")));
        let r = spec(serde_json::json!({"lsn": "0/3000100"}))
            .recovery("shop")
            .unwrap();
        assert_eq!(
            (r.type_.as_str(), r.target.as_deref()),
            ("lsn", Some("0/3000100"))
        );
        let e = spec(serde_json::json!({"time": "2026-13-02T09:30:15Z"}))
            .recovery("shop")
            .unwrap_err();
        assert!(e.contains("spec.bootstrap.recovery.target.time"), "{e}");
    }
}
