//! The agent's settings, from flags or the environment the operator sets in the pod. The same
//! binary runs as a plain process in the integration tests, each agent on its own address.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::api::cluster::{SynchronousMode, WatchdogMode};

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Namespace of the cluster's objects.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// This member's name: the pod name.
    #[arg(long, env = "POD_NAME")]
    pub name: String,
    /// The PostgresCluster's name.
    #[arg(long, env = "PGWARDEN_CLUSTER")]
    pub cluster: String,
    /// The PostgresCluster's uid, so its Events show in `kubectl describe` (set by the operator).
    #[arg(long, env = "PGWARDEN_CLUSTER_UID")]
    pub cluster_uid: Option<String>,
    /// The address PostgreSQL and the REST API listen on and advertise (the pod IP).
    #[arg(long, env = "POD_IP")]
    pub address: String,
    #[arg(
        long,
        env = "PGDATA",
        default_value = "/var/lib/postgresql/data/pgdata"
    )]
    pub data_dir: PathBuf,
    /// Directory with postgres, initdb, pg_ctl, pg_basebackup, pg_rewind, pg_controldata.
    #[arg(
        long,
        env = "PGWARDEN_PG_BIN_DIR",
        default_value = "/usr/lib/postgresql/15/bin"
    )]
    pub bin_dir: PathBuf,
    /// Socket directory and private runtime files (passfile, softdog FIFO).
    #[arg(long, env = "PGWARDEN_RUN_DIR", default_value = "/run/pgwarden")]
    pub run_dir: PathBuf,
    #[arg(long, env = "PGWARDEN_PG_PORT", default_value_t = crate::api::names::POSTGRES_PORT)]
    pub pg_port: u16,
    #[arg(long, env = "PGWARDEN_API_PORT", default_value_t = crate::api::names::REST_PORT)]
    pub api_port: u16,
    /// Kubeconfig file; in a pod the service account is used.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    #[arg(long, env = "PGWARDEN_TTL", default_value_t = 8)]
    pub ttl: u64,
    #[arg(long, env = "PGWARDEN_LOOP_WAIT", default_value_t = 2)]
    pub loop_wait: u64,
    #[arg(long, env = "PGWARDEN_RETRY_TIMEOUT", default_value_t = 3)]
    pub retry_timeout: u64,
    /// Patroni's primary_start_timeout (seconds): how long a primary whose PostgreSQL is down or
    /// in crash recovery keeps the Lease before it releases it to a healthy replica.
    #[arg(long, env = "PGWARDEN_PRIMARY_START_TIMEOUT", default_value_t = 300)]
    pub primary_start_timeout: u64,
    #[arg(
        long,
        env = "PGWARDEN_MAXIMUM_LAG_ON_FAILOVER",
        default_value_t = 1_048_576
    )]
    pub maximum_lag_on_failover: u64,
    #[arg(
        long,
        env = "PGWARDEN_SYNCHRONOUS_MODE",
        value_enum,
        default_value = "off"
    )]
    pub synchronous_mode: SyncArg,
    #[arg(
        long,
        env = "PGWARDEN_WATCHDOG_MODE",
        value_enum,
        default_value = "automatic"
    )]
    pub watchdog_mode: WatchdogArg,
    /// A host watchdog device (real ioctls); without it the in-pod softdog FIFO is used.
    #[arg(long, env = "PGWARDEN_WATCHDOG_DEVICE")]
    pub watchdog_device: Option<PathBuf>,
    #[arg(long, env = "PGWARDEN_WATCHDOG_SAFETY_MARGIN", default_value_t = 2)]
    pub watchdog_safety_margin: u64,
    /// Keep a primary running while the apiserver is unreachable, if every member confirms it
    /// over REST (Patroni's failsafe_mode).
    #[arg(long, env = "PGWARDEN_FAILSAFE_MODE")]
    pub failsafe_mode: bool,
    /// Never promote this member (Patroni's `nofailover` tag).
    #[arg(long, env = "PGWARDEN_NOFAILOVER")]
    pub nofailover: bool,
    /// Keep this member out of the replica load balancer (Patroni's `noloadbalance` tag).
    #[arg(long, env = "PGWARDEN_NOLOADBALANCE")]
    pub noloadbalance: bool,
    /// Never make this member a synchronous standby (Patroni's `nosync` tag).
    #[arg(long, env = "PGWARDEN_NOSYNC")]
    pub nosync: bool,
    /// Tags by member name as JSON (`{"main-2": {"nofailover": true}}`), so one pod template
    /// can tag single members; an entry for this member adds to the flags above.
    #[arg(long, env = "PGWARDEN_INSTANCE_TAGS", default_value = "{}")]
    pub instance_tags: String,
    /// initdb `--encoding` for a new cluster.
    #[arg(long, env = "PGWARDEN_INITDB_ENCODING", default_value = "UTF8")]
    pub initdb_encoding: String,
    /// initdb `--locale` for a new cluster.
    #[arg(long, env = "PGWARDEN_INITDB_LOCALE", default_value = "C")]
    pub initdb_locale: String,
    /// initdb `--data-checksums` for a new cluster.
    #[arg(long, env = "PGWARDEN_INITDB_DATA_CHECKSUMS", default_value_t = true, action = clap::ArgAction::Set)]
    pub initdb_data_checksums: bool,
    /// More roles to create at bootstrap, JSON: `[{"name": "reporting", "login": true}]`.
    #[arg(long, env = "PGWARDEN_BOOTSTRAP_ROLES", default_value = "[]")]
    pub bootstrap_roles: String,
    /// More databases to create at bootstrap, JSON: `[{"name": "db", "owner": "app"}]`.
    #[arg(long, env = "PGWARDEN_BOOTSTRAP_DATABASES", default_value = "[]")]
    pub bootstrap_databases: String,
    #[arg(long, env = "PGWARDEN_SUPERUSER_PASSWORD_FILE")]
    pub superuser_password_file: PathBuf,
    #[arg(long, env = "PGWARDEN_REPLICATION_USER", default_value = "replicator")]
    pub replication_user: String,
    #[arg(long, env = "PGWARDEN_REPLICATION_PASSWORD_FILE")]
    pub replication_password_file: PathBuf,
    #[arg(long, env = "PGWARDEN_APP_DATABASE", default_value = "app")]
    pub app_database: String,
    #[arg(long, env = "PGWARDEN_APP_USER", default_value = "app")]
    pub app_user: String,
    #[arg(long, env = "PGWARDEN_APP_PASSWORD_FILE")]
    pub app_password_file: Option<PathBuf>,
    /// File holding the REST API token (Secret `<cluster>-api`); write endpoints need it.
    #[arg(long, env = "PGWARDEN_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Extra postgresql.conf parameters as JSON object.
    #[arg(long, env = "PGWARDEN_PARAMETERS", default_value = "{}")]
    pub parameters: String,
    /// WAL is archived (`spec.backup.walArchiving`): a primary publishes `pg_stat_archiver`.
    #[arg(long, env = "PGWARDEN_WAL_ARCHIVING")]
    pub wal_archiving: bool,
    /// Bootstrap by restoring another cluster's backup (`spec.bootstrap.recovery`), as JSON
    /// (`api::backup::Recovery`).
    #[arg(long, env = "PGWARDEN_RECOVERY")]
    pub recovery: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum SyncArg {
    Off,
    On,
    Strict,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum WatchdogArg {
    Off,
    Automatic,
    Required,
}

impl From<SyncArg> for SynchronousMode {
    fn from(v: SyncArg) -> Self {
        match v {
            SyncArg::Off => SynchronousMode::Off,
            SyncArg::On => SynchronousMode::On,
            SyncArg::Strict => SynchronousMode::Strict,
        }
    }
}

impl From<WatchdogArg> for WatchdogMode {
    fn from(v: WatchdogArg) -> Self {
        match v {
            WatchdogArg::Off => WatchdogMode::Off,
            WatchdogArg::Automatic => WatchdogMode::Automatic,
            WatchdogArg::Required => WatchdogMode::Required,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Timing(#[from] crate::api::timing::TimingError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("--parameters is not a JSON object of strings: {0}")]
    Parameters(serde_json::Error),
    #[error("--{flag} is not valid JSON of the documented shape: {source}")]
    Json {
        flag: &'static str,
        source: serde_json::Error,
    },
}

impl AgentArgs {
    /// Patroni's timing rule, enforced at start as at admission.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Ok(crate::api::timing::HaTiming {
            ttl: seconds(self.ttl),
            loop_wait: seconds(self.loop_wait),
            retry_timeout: seconds(self.retry_timeout),
            safety_margin: seconds(self.watchdog_safety_margin),
        }
        .check()?)
    }

    /// This member's tags: the flags, plus its entry in `--instance-tags`.
    pub fn tags(&self) -> Result<crate::api::member::MemberTags, ConfigError> {
        let by_member: std::collections::BTreeMap<String, crate::api::cluster::InstanceTags> =
            serde_json::from_str(&self.instance_tags).map_err(|source| ConfigError::Json {
                flag: "instance-tags",
                source,
            })?;
        let mine = by_member.get(&self.name).cloned().unwrap_or_default();
        Ok(crate::api::member::MemberTags {
            nofailover: self.nofailover || mine.nofailover,
            noloadbalance: self.noloadbalance || mine.noloadbalance,
            nosync: self.nosync || mine.nosync,
            other: Default::default(),
        })
    }

    /// Roles and databases to create at bootstrap.
    pub fn bootstrap_objects(
        &self,
    ) -> Result<
        (
            Vec<crate::api::cluster::RoleSpec>,
            Vec<crate::api::cluster::DatabaseSpec>,
        ),
        ConfigError,
    > {
        let roles =
            serde_json::from_str(&self.bootstrap_roles).map_err(|source| ConfigError::Json {
                flag: "bootstrap-roles",
                source,
            })?;
        let databases = serde_json::from_str(&self.bootstrap_databases).map_err(|source| {
            ConfigError::Json {
                flag: "bootstrap-databases",
                source,
            }
        })?;
        Ok((roles, databases))
    }

    /// `--recovery`, parsed.
    pub fn recovery(&self) -> Result<Option<crate::api::backup::Recovery>, ConfigError> {
        self.recovery
            .as_deref()
            .filter(|r| !r.is_empty())
            .map(|r| {
                serde_json::from_str(r).map_err(|source| ConfigError::Json {
                    flag: "recovery",
                    source,
                })
            })
            .transpose()
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl)
    }
    pub fn loop_wait(&self) -> Duration {
        Duration::from_secs(self.loop_wait)
    }
    pub fn retry_timeout(&self) -> Duration {
        Duration::from_secs(self.retry_timeout)
    }
    /// The watchdog fires this long after the last keepalive.
    pub fn watchdog_timeout(&self) -> Duration {
        Duration::from_secs(self.ttl - self.watchdog_safety_margin)
    }
}

/// A flag's seconds as the timing rules count them (no real flag comes near `i64::MAX`).
fn seconds(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A secret from a file: the first line, without the newline.
pub fn read_secret(path: &std::path::Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().next().unwrap_or("").to_string())
        .map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })
}
