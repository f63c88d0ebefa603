//! The local PostgreSQL: its data directory, the postmaster as the agent's child (in its own
//! process group, so the softdog can kill it with all its backends), and the queries the HA loop
//! needs. Everything that runs a PostgreSQL program is here; the decisions are in `ha`.

pub mod bootstrap;
pub mod conf;
pub mod slots;
pub mod sync;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use tracing::{info, warn};

use crate::agent::ha::{DataDir, StopMode};
use conf::ServerSettings;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{program} failed: {detail}")]
    Program { program: String, detail: String },
    #[error("io on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A query or connection failed; `sqlstate` is the server's code when the server answered.
    #[error("query failed: {}", query_detail(.sqlstate.as_ref(), .message))]
    Query {
        sqlstate: Option<SqlState>,
        message: String,
    },
    #[error("postgres did not {0} in time")]
    Timeout(&'static str),
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's own message says what went wrong; "db error" alone does not.
        match e.as_db_error() {
            Some(db) => PgError::Query {
                sqlstate: Some(db.code().clone()),
                message: db.message().to_string(),
            },
            None => PgError::Query {
                sqlstate: None,
                message: e.to_string(),
            },
        }
    }
}

fn query_detail(sqlstate: Option<&SqlState>, message: &str) -> String {
    match sqlstate {
        Some(code) => format!("{}: {message}", code.code()),
        None => message.to_string(),
    }
}

/// How long starting a standby waits for it to accept connections before the loop carries on.
const STANDBY_START_WAIT: Duration = Duration::from_secs(10);

/// How long a start as primary waits for connections before the HA loop carries on: crash
/// recovery may replay for as long as there is WAL, and the Lease must be renewed meanwhile
/// (the fence counts from the renew before the start). A primary in recovery accepts no write,
/// so carrying on is safe; the loop renews while it "answers no queries".
const PRIMARY_START_WAIT: Duration = Duration::from_secs(1);

/// A data directory with `PG_VERSION` but no `global/pg_control`: what a pg_basebackup killed
/// halfway leaves (PostgreSQL sends pg_control last), or an initdb killed early.
pub fn unfinished(data_dir: &Path) -> bool {
    data_dir.join("PG_VERSION").exists() && !data_dir.join("global/pg_control").exists()
}

/// Whether a child's process title (`/proc/<pid>/cmdline`) is a client backend: anything but
/// PostgreSQL's auxiliary processes (Patroni's `aux_proc_re`, checked against 9.1-17). A title
/// not yet set (a child just forked) counts as a client: the safe point waits for it.
pub fn is_client_backend(cmdline: &str) -> bool {
    const AUX: &[&str] = &[
        "archiver",
        "startup",
        "autovacuum launcher",
        "autovacuum worker",
        "checkpointer",
        "logger",
        "stats collector",
        "wal receiver",
        "walreceiver",
        "wal sender",
        "walsender",
        "wal writer",
        "walwriter",
        "walsummarizer",
        "writer",
        "background writer",
        "logical replication launcher",
        "logical replication worker",
        "logical replication apply worker",
        "bgworker:",
    ];
    let Some(title) = cmdline.trim().strip_prefix("postgres: ") else {
        return true;
    };
    // `postgres: <cluster_name>: checkpointer` when cluster_name is set.
    let title = match title.split_once(' ') {
        Some((first, rest)) if first.ends_with(':') && first != "bgworker:" => rest,
        _ => title,
    };
    !AUX.iter().any(|aux| {
        title
            .strip_prefix(aux)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
    })
}

/// Whether the postmaster `pm` still has a client backend.
fn has_client_backends(pm: i32) -> bool {
    crate::agent::softdog::children_of(pm)
        .into_iter()
        .any(|child| {
            std::fs::read(format!("/proc/{child}/cmdline")).is_ok_and(|raw| {
                let title: String = String::from_utf8_lossy(&raw).replace('\0', " ");
                is_client_backend(&title)
            })
        })
}

/// SQLSTATE 57P03 (cannot_connect_now): the server is starting up or recovering.
fn cannot_connect_now(e: &PgError) -> bool {
    matches!(e, PgError::Query { sqlstate: Some(code), .. } if *code == SqlState::CANNOT_CONNECT_NOW)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PgError + '_ {
    move |source| PgError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Live facts from a running server.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveState {
    pub in_recovery: bool,
    pub timeline: Option<u32>,
    pub lsn: Option<u64>,
    pub streaming: bool,
    pub received_lsn: Option<u64>,
    pub replayed_lsn: Option<u64>,
    pub pending_restart: bool,
    /// `server_version_num`, e.g. 150004.
    pub server_version: Option<i64>,
    /// `pg_is_wal_replay_paused()` (false on a primary).
    pub replay_paused: bool,
    /// `pg_last_xact_replay_timestamp()` as epoch seconds.
    pub replayed_timestamp: Option<f64>,
    /// A replica restoring from the archive rather than streaming (Patroni's
    /// `replication_state: in archive recovery`): in recovery, not streaming, restore_command set.
    pub archive_recovery: bool,
}

/// A standby's row in `pg_stat_replication`: part of the `/patroni` contract.
pub use crate::api::patroni::ReplicationRow;

pub struct Postgres {
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    client: Option<Client>,
}

impl Postgres {
    pub fn new(bin_dir: PathBuf, data_dir: PathBuf, socket_dir: PathBuf, port: u16) -> Self {
        Self {
            bin_dir,
            data_dir,
            socket_dir,
            port,
            child: None,
            client: None,
        }
    }

    fn program(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// A handle on the same data directory with no server of its own, for work that runs
    /// beside the loop (a basebackup).
    pub fn detached(&self) -> Self {
        Self::new(
            self.bin_dir.clone(),
            self.data_dir.clone(),
            self.socket_dir.clone(),
            self.port,
        )
    }

    async fn run(
        &self,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<String, PgError> {
        let mut cmd = Command::new(self.program(name));
        // A tool whose caller gave up (a shutdown during a basebackup) must not outlive it.
        cmd.kill_on_drop(true)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().await.map_err(|e| PgError::Program {
            program: name.into(),
            detail: e.to_string(),
        })?;
        if !out.status.success() {
            return Err(PgError::Program {
                program: name.into(),
                detail: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        // Most PostgreSQL tools report progress on stderr; keep both.
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// The postmaster's pid from `postmaster.pid`, if that process still exists.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        (pid > 0 && kill(Pid::from_raw(pid), None).is_ok()).then_some(pid)
    }

    /// Is our postmaster alive? Reaps it when it exited.
    pub fn running(&mut self) -> bool {
        if let Some(child) = self.child.as_mut() {
            match child.try_wait() {
                Ok(None) => return true,
                Ok(Some(status)) => {
                    warn!(%status, "postgres exited");
                    self.child = None;
                    self.client = None;
                }
                Err(_) => return true,
            }
        }
        false
    }

    /// The data directory's state from `pg_controldata`; `Empty` when there is no cluster.
    pub async fn data_state(&self) -> Result<DataDir, PgError> {
        if !self.data_dir.join("PG_VERSION").exists() {
            return Ok(DataDir::Empty);
        }
        if unfinished(&self.data_dir) {
            // A pg_basebackup or initdb killed halfway: nothing here can ever start, and
            // pg_controldata would fail every cycle. Cloned (or bootstrapped) again from scratch.
            warn!(data_dir = %self.data_dir.display(), "the data directory has no pg_control (an interrupted clone or initdb): treating it as empty");
            return Ok(DataDir::Empty);
        }
        let out = self
            .run(
                "pg_controldata",
                &[&self.data_dir.to_string_lossy()],
                &[("LC_ALL", "C")],
            )
            .await?;
        let field = |name: &str| {
            out.lines().find_map(|l| {
                l.strip_prefix(name)
                    .map(|v| v.trim_start_matches(':').trim().to_string())
            })
        };
        let sysid = field("Database system identifier").unwrap_or_default();
        let state = field("Database cluster state").unwrap_or_default();
        let timeline = field("Latest checkpoint's TimeLineID")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        // "in production" / "shut down" mean it last ran as a primary; "... in recovery" a replica.
        let was_primary = state == "in production" || state == "shut down";
        Ok(DataDir::Initialized {
            sysid,
            was_primary,
            timeline,
        })
    }

    /// Write our configuration files and start the postmaster; wait until it accepts connections.
    pub async fn start(&mut self, settings: &ServerSettings, standby: bool) -> Result<(), PgError> {
        self.write_conf(settings).await?;
        let signal = self.data_dir.join("standby.signal");
        if standby {
            tokio::fs::write(&signal, b"")
                .await
                .map_err(io_err(&signal))?;
        } else if signal.exists() {
            tokio::fs::remove_file(&signal)
                .await
                .map_err(io_err(&signal))?;
        }
        if let Some(pid) = self.postmaster_pid() {
            // A postmaster from a previous agent run: it is not our child, stop it first.
            warn!(pid, "stopping a postmaster this agent did not start");
            let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
            self.wait_gone(pid, Duration::from_secs(30)).await?;
        }
        let mut cmd = Command::new(self.program("postgres"));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .process_group(0);
        let child = cmd.spawn().map_err(|e| PgError::Program {
            program: "postgres".into(),
            detail: e.to_string(),
        })?;
        info!(pid = child.id(), standby, "started postgres");
        self.child = Some(child);
        let started = tokio::time::Instant::now();
        let deadline = started + Duration::from_secs(120);
        loop {
            if !self.running() {
                return Err(PgError::Program {
                    program: "postgres".into(),
                    detail: "exited during startup (see its log above)".into(),
                });
            }
            match self.connect().await {
                Ok(_) => return Ok(()),
                // A standby refuses connections until its replay is consistent, and a primary
                // until its crash recovery ends; either can take as long as the WAL it must
                // replay (or wait for). The loop must not stop for that: it goes on (a primary
                // renewing the Lease), and the member counts as running once postgres answers.
                Err(e)
                    if cannot_connect_now(&e)
                        && started.elapsed()
                            > if standby {
                                STANDBY_START_WAIT
                            } else {
                                PRIMARY_START_WAIT
                            } =>
                {
                    info!(
                        "postgres is recovering and does not accept connections yet; carrying on"
                    );
                    return Ok(());
                }
                Err(_) => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(PgError::Timeout("accept connections"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_gone(&self, pid: i32, limit: Duration) -> Result<(), PgError> {
        let deadline = tokio::time::Instant::now() + limit;
        while kill(Pid::from_raw(pid), None).is_ok() {
            if tokio::time::Instant::now() > deadline {
                return Err(PgError::Timeout("stop"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Stop the postmaster: fast (SIGINT, a shutdown checkpoint) or immediate (SIGQUIT).
    pub async fn stop(&mut self, mode: StopMode) -> Result<(), PgError> {
        self.stop_with(mode, || {}).await
    }

    /// Stop PostgreSQL; `on_safepoint` runs once no client backend is left (the postmaster
    /// accepts no new connection once it has the signal): from then on nothing is written for
    /// a client, however long the shutdown checkpoint takes (Patroni's `on_safepoint`, where it
    /// disarms the watchdog). It runs at the latest when postgres is gone.
    pub async fn stop_with(
        &mut self,
        mode: StopMode,
        on_safepoint: impl FnOnce(),
    ) -> Result<(), PgError> {
        self.client = None;
        let signal = match mode {
            StopMode::Fast => Signal::SIGINT,
            StopMode::Immediate => Signal::SIGQUIT,
        };
        let mut on_safepoint = Some(on_safepoint);
        let mut safepoint = |pid: Option<i32>| {
            if pid.is_none_or(|pm| !has_client_backends(pm))
                && let Some(f) = on_safepoint.take()
            {
                if pid.is_some() {
                    info!("no client backend left: the stop is past its safe point");
                }
                f();
            }
        };
        if let Some(mut child) = self.child.take() {
            let pid = child.id().map(|p| p as i32);
            if let Some(pid) = pid {
                let _ = kill(Pid::from_raw(pid), signal);
            }
            let limit = match mode {
                StopMode::Fast => Duration::from_secs(60),
                StopMode::Immediate => Duration::from_secs(10),
            };
            let deadline = tokio::time::Instant::now() + limit;
            loop {
                match tokio::time::timeout(Duration::from_millis(50), child.wait()).await {
                    Ok(_) => break,
                    Err(_) if tokio::time::Instant::now() < deadline => safepoint(pid),
                    Err(_) => {
                        warn!("postgres did not stop in time; killing it and its backends");
                        if let Some(pid) = pid {
                            crate::agent::softdog::kill_postmaster(pid);
                        }
                        let _ = child.wait().await;
                        break;
                    }
                }
            }
        } else if let Some(pid) = self.postmaster_pid() {
            let _ = kill(Pid::from_raw(pid), signal);
            self.wait_gone(pid, Duration::from_secs(60)).await?;
        }
        safepoint(None);
        info!(?mode, "postgres stopped");
        Ok(())
    }

    /// The process group id of the postmaster (for the softdog).
    pub fn postmaster_pgid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| c.id()).map(|p| p as i32)
    }

    /// The agent's connection to its own server, over the local socket.
    fn local_config(&self) -> tokio_postgres::Config {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(&self.socket_dir)
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .application_name("pgwarden")
            .connect_timeout(Duration::from_secs(3));
        cfg
    }

    async fn connect(&mut self) -> Result<&Client, PgError> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            let (client, connection) = self.local_config().connect(NoTls).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("just connected"))
    }

    /// Ask the running server for its role and WAL position.
    pub async fn live_state(&mut self) -> Result<LiveState, PgError> {
        let client = self.connect().await?;
        let row = client
            .query_one(
                "SELECT pg_is_in_recovery(),
                        CASE WHEN pg_is_in_recovery() THEN NULL
                             ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
                        CASE WHEN pg_is_in_recovery() THEN NULL
                             ELSE (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint END,
                        (pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint,
                        (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint,
                        (SELECT received_tli FROM pg_stat_wal_receiver),
                        (SELECT status = 'streaming' FROM pg_stat_wal_receiver),
                        (SELECT timeline_id FROM pg_control_checkpoint()),
                        EXISTS (SELECT 1 FROM pg_settings WHERE pending_restart),
                        current_setting('server_version_num')::int8,
                        CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END,
                        extract(epoch FROM pg_last_xact_replay_timestamp())::float8,
                        current_setting('restore_command') <> ''",
                &[],
            )
            .await?;
        let in_recovery: bool = row.get(0);
        let primary_tl: Option<i32> = row.get(1);
        let primary_lsn: Option<i64> = row.get(2);
        let received: Option<i64> = row.get(3);
        let replayed: Option<i64> = row.get(4);
        let received_tli: Option<i32> = row.get(5);
        let streaming: Option<bool> = row.get(6);
        let checkpoint_tl: Option<i32> = row.get(7);
        let pending_restart: bool = row.get(8);
        let server_version: Option<i64> = row.get(9);
        let replay_paused: Option<bool> = row.get(10);
        let replayed_timestamp: Option<f64> = row.get(11);
        let restore_command: Option<bool> = row.get(12);
        let to_u64 = |v: Option<i64>| v.map(|x| x.max(0) as u64);
        let (timeline, lsn) = if in_recovery {
            (
                received_tli.or(checkpoint_tl),
                to_u64(received).max(to_u64(replayed)),
            )
        } else {
            (primary_tl, to_u64(primary_lsn))
        };
        Ok(LiveState {
            in_recovery,
            timeline: timeline.map(|t| t.max(0) as u32),
            lsn,
            streaming: streaming.unwrap_or(false),
            received_lsn: to_u64(received),
            replayed_lsn: to_u64(replayed),
            pending_restart,
            server_version,
            replay_paused: replay_paused.unwrap_or(false),
            replayed_timestamp: replayed_timestamp.filter(|_| in_recovery),
            archive_recovery: in_recovery
                && !streaming.unwrap_or(false)
                && restore_command.unwrap_or(false),
        })
    }

    pub async fn replication(&mut self) -> Result<Vec<ReplicationRow>, PgError> {
        let client = self.connect().await?;
        let rows = client
            .query(
                "SELECT usename::text, application_name, host(client_addr), state, sync_state, sync_priority,
                        (flush_lsn - '0/0'::pg_lsn)::bigint,
                        (extract(epoch FROM now() - backend_start) * 1000)::int8
                   FROM pg_stat_replication ORDER BY application_name",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ReplicationRow {
                usename: r.get::<_, Option<String>>(0).unwrap_or_default(),
                application_name: r.get(1),
                client_addr: r.get(2),
                state: r.get::<_, Option<String>>(3).unwrap_or_default(),
                sync_state: r.get::<_, Option<String>>(4).unwrap_or_default(),
                sync_priority: r.get(5),
                flush_lsn: r.get::<_, Option<i64>>(6).map(|v| v.max(0) as u64),
                connected_ms: r.get(7),
            })
            .collect())
    }

    /// `pg_stat_archiver` (what `spec.backup`'s `ContinuousArchiving` condition is made of).
    pub async fn archiver(&mut self) -> Result<crate::api::backup::ArchiverStats, PgError> {
        let client = self.connect().await?;
        let r = client
            .query_one(
                "SELECT archived_count, last_archived_wal,
                        extract(epoch FROM last_archived_time)::int8,
                        failed_count, last_failed_wal,
                        extract(epoch FROM last_failed_time)::int8
                   FROM pg_stat_archiver",
                &[],
            )
            .await?;
        Ok(crate::api::backup::ArchiverStats {
            archived_count: r.get(0),
            last_archived_wal: r.get(1),
            last_archived_time: r.get(2),
            failed_count: r.get(3),
            last_failed_wal: r.get(4),
            last_failed_time: r.get(5),
        })
    }

    /// The primary's WAL flush position (bytes): every commit acknowledged so far lies before it.
    pub async fn flush_lsn(&mut self) -> Result<u64, PgError> {
        let client = self.connect().await?;
        let lsn: i64 = client
            .query_one(
                "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint",
                &[],
            )
            .await?
            .get(0);
        Ok(lsn.max(0) as u64)
    }

    /// Tell the startup process to promote, without waiting for it: the replay of what was
    /// received goes on first, for as long as it takes, while the agent keeps renewing the
    /// Lease (see [`Postgres::promoted`]).
    pub async fn signal_promote(&mut self) -> Result<(), PgError> {
        let client = self.connect().await?;
        let signalled: bool = client
            .query_one("SELECT pg_promote(false)", &[])
            .await?
            .get(0);
        if !signalled {
            return Err(PgError::Program {
                program: "pg_promote".into(),
                detail: "the promotion could not be signalled".into(),
            });
        }
        Ok(())
    }

    /// Whether the server left recovery, asking every 50 ms for up to `limit`.
    pub async fn promoted(&mut self, limit: Duration) -> Result<bool, PgError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let client = self.connect().await?;
            let in_recovery: bool = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await?
                .get(0);
            if !in_recovery {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The timeline switch this primary made last, from PostgreSQL itself: the parent timeline
    /// and the switch point the newest `.history` file in pg_wal records. Only PostgreSQL knows
    /// them for sure: a replica's own idea of its timeline before it promoted (the WAL
    /// receiver's, or the last restartpoint's when nothing streamed) can be one behind, and a
    /// history entry written from it named the wrong timeline and was dropped as a duplicate.
    pub async fn last_switch(&mut self) -> Result<Option<(u32, u64)>, PgError> {
        let client = self.connect().await?;
        let row = client
            .query_opt(
                "SELECT h.name, pg_read_file('pg_wal/' || h.name)
                   FROM pg_ls_waldir() h
                  WHERE h.name ~ '^[0-9A-F]{8}[.]history$'
                  ORDER BY h.name DESC LIMIT 1",
                &[],
            )
            .await?;
        // No history file: the cluster never switched timelines.
        Ok(row.and_then(|row| parse_last_switch(&row.get::<_, String>(1))))
    }

    /// After a promotion: a CHECKPOINT, in the background. Until one records the new timeline in
    /// the control file, pg_rewind against this server sees the old timeline and wrongly finds
    /// nothing to rewind (Patroni's checkpoint_after_promote). In the background because under
    /// write load it can take longer than the fence allows between renews; a rewinding member
    /// asks for a CHECKPOINT of its own before pg_rewind reads the control file.
    pub fn checkpoint_in_background(&self) {
        let cfg = self.local_config();
        tokio::spawn(async move {
            let checkpoint = async {
                let (client, connection) = cfg.connect(NoTls).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                client.batch_execute("CHECKPOINT").await
            };
            if let Err(e) = checkpoint.await {
                warn!(error = %e, "the checkpoint after the promotion failed");
            }
        });
    }

    /// The latest checkpoint's location from `pg_controldata` (the optime a stopped primary
    /// publishes when it releases the Lease); `None` when it cannot be read.
    pub async fn checkpoint_location(&self) -> Option<u64> {
        let out = Command::new(self.bin_dir.join("pg_controldata"))
            .arg(&self.data_dir)
            .env("LC_ALL", "C")
            .output()
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let loc = text
            .lines()
            .find_map(|l| l.strip_prefix("Latest checkpoint location:"))?
            .trim()
            .to_string();
        parse_lsn(&loc)
    }

    pub async fn checkpoint(&mut self) -> Result<(), PgError> {
        let client = self.connect().await?;
        client.batch_execute("CHECKPOINT").await?;
        Ok(())
    }

    /// Make sure every other member has a physical replication slot on this primary.
    pub async fn ensure_slots(&mut self, slots: &[String]) -> Result<(), PgError> {
        let client = self.connect().await?;
        for slot in slots {
            client
                .execute(
                    "SELECT pg_create_physical_replication_slot($1, true)
                      WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                    &[slot],
                )
                .await?;
        }
        Ok(())
    }

    /// Inactive physical slots whose names look like members of `cluster` (`<cluster>_<n>`).
    pub async fn member_slots(&mut self, cluster: &str) -> Result<Vec<String>, PgError> {
        let prefix = format!("{}_", conf::slot_name(cluster));
        let client = self.connect().await?;
        let rows = client
            .query(
                "SELECT slot_name::text FROM pg_replication_slots
                  WHERE slot_type = 'physical' AND NOT active",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.get::<_, String>(0))
            .filter(|s| {
                s.strip_prefix(&prefix)
                    .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            })
            .collect())
    }

    /// Drop a slot if it is still inactive.
    pub async fn drop_slot(&mut self, slot: &str) -> Result<(), PgError> {
        let client = self.connect().await?;
        client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                  WHERE slot_name = $1 AND NOT active",
                &[&slot],
            )
            .await?;
        Ok(())
    }

    pub async fn execute_batch(&mut self, sql: &str) -> Result<(), PgError> {
        let client = self.connect().await?;
        client.batch_execute(sql).await?;
        Ok(())
    }

    /// Remove the data directory's contents (not the directory: it may be a mount point).
    pub async fn wipe(&mut self) -> Result<(), PgError> {
        self.client = None;
        let dir = &self.data_dir;
        let mut entries = match tokio::fs::read_dir(dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(dir)(e)),
        };
        while let Some(entry) = entries.next_entry().await.map_err(io_err(dir))? {
            let path = entry.path();
            let result = if entry.file_type().await.map_err(io_err(&path))?.is_dir() {
                tokio::fs::remove_dir_all(&path).await
            } else {
                tokio::fs::remove_file(&path).await
            };
            result.map_err(io_err(&path))?;
        }
        Ok(())
    }

    /// An empty data directory with the mode PostgreSQL insists on.
    async fn fresh_data_dir(&mut self) -> Result<(), PgError> {
        self.wipe().await?;
        tokio::fs::create_dir_all(&self.data_dir)
            .await
            .map_err(io_err(&self.data_dir))?;
        set_mode(&self.data_dir, 0o700)
    }

    /// Rewrite pgwarden.conf and reload: for the parameters that change without a restart
    /// (primary_conninfo, primary_slot_name, synchronous_standby_names on PostgreSQL 13+).
    pub async fn reconfigure(&mut self, settings: &ServerSettings) -> Result<(), PgError> {
        self.write_conf(settings).await?;
        self.execute_batch("SELECT pg_reload_conf()").await
    }

    /// pgwarden.conf and pg_hba.conf, both ours: rewritten before every start and reload.
    async fn write_conf(&self, settings: &ServerSettings) -> Result<(), PgError> {
        let path = self.data_dir.join("pgwarden.conf");
        tokio::fs::write(&path, conf::render_pgwarden_conf(settings))
            .await
            .map_err(io_err(&path))?;
        let hba = self.data_dir.join("pg_hba.conf");
        tokio::fs::write(
            &hba,
            conf::render_pg_hba(
                &settings.pg_hba,
                &settings.replication_user,
                settings.clients_fenced,
            ),
        )
        .await
        .map_err(io_err(&hba))
    }

    /// initdb (data checksums unless turned off); our configuration is included from
    /// postgresql.conf.
    pub async fn initdb(&mut self, options: &conf::InitdbOptions) -> Result<(), PgError> {
        self.fresh_data_dir().await?;
        let data = self.data_dir.to_string_lossy().into_owned();
        let locale = format!("--locale={}", options.locale);
        let mut args = vec![
            "-D",
            &data,
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            &options.encoding,
            &locale,
        ];
        if options.data_checksums {
            args.push("--data-checksums");
        }
        self.run("initdb", &args, &[("LC_ALL", "C")]).await?;
        self.include_pgwarden_conf().await
    }

    /// Restore another cluster's backup into an empty data directory with `pgbackrest restore`
    /// (`args` from `api::backup::Recovery::restore_args`); recovery itself happens at the next
    /// start (pgBackRest leaves `recovery.signal`).
    pub async fn restore(&mut self, args: &[String]) -> Result<(), PgError> {
        self.fresh_data_dir().await?;
        let mut cmd = Command::new("pgbackrest");
        cmd.kill_on_drop(true)
            .arg(format!("--pg1-path={}", self.data_dir.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = cmd.output().await.map_err(|e| PgError::Program {
            program: "pgbackrest".into(),
            detail: e.to_string(),
        })?;
        if !out.status.success() {
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let line = text
                .lines()
                .find(|l| l.contains("ERROR"))
                .unwrap_or(text.trim())
                .trim()
                .to_string();
            return Err(PgError::Program {
                program: "pgbackrest restore".into(),
                detail: format!("{}: {line}", out.status),
            });
        }
        self.include_pgwarden_conf().await
    }

    async fn include_pgwarden_conf(&self) -> Result<(), PgError> {
        let path = self.data_dir.join("postgresql.conf");
        let mut conf = tokio::fs::read_to_string(&path)
            .await
            .map_err(io_err(&path))?;
        if !conf.contains("include_if_exists = 'pgwarden.conf'") {
            conf.push_str("\ninclude_if_exists = 'pgwarden.conf'\n");
            tokio::fs::write(&path, conf).await.map_err(io_err(&path))?;
        }
        Ok(())
    }

    /// Clone the leader with pg_basebackup (streaming the WAL alongside).
    pub async fn basebackup(
        &mut self,
        host: &str,
        port: u16,
        user: &str,
        passfile: &Path,
    ) -> Result<(), PgError> {
        self.fresh_data_dir().await?;
        let data = self.data_dir.to_string_lossy().into_owned();
        let port = port.to_string();
        let result = self
            .run(
                "pg_basebackup",
                &[
                    "-D",
                    &data,
                    "-h",
                    host,
                    "-p",
                    &port,
                    "-U",
                    user,
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "--no-password",
                ],
                &[
                    ("PGPASSFILE", &passfile.to_string_lossy()),
                    ("PGCONNECT_TIMEOUT", "5"),
                ],
            )
            .await;
        if let Err(e) = result {
            // Never leave half a cluster behind: the next attempt must start from empty.
            let _ = self.wipe().await;
            return Err(e);
        }
        self.include_pgwarden_conf().await
    }

    /// pg_rewind this (stopped) data directory onto the leader's timeline. PostgreSQL 13+ runs
    /// crash recovery on the target first when it was not shut down cleanly.
    pub async fn rewind(&mut self, host: &str, port: u16, passfile: &Path) -> Result<(), PgError> {
        let data = self.data_dir.to_string_lossy().into_owned();
        let source =
            format!("host={host} port={port} user=postgres dbname=postgres connect_timeout=5");
        self.run(
            "pg_rewind",
            &["-D", &data, "--source-server", &source],
            &[("PGPASSFILE", &passfile.to_string_lossy())],
        )
        .await
        .map(|out| info!(output = %out.trim(), "pg_rewind finished"))
    }

    /// `CHECKPOINT` on the rewind source, right after pg_rewind. pg_rewind sets the target's
    /// minRecoveryPoint to the source's WAL *insert* position; when the source's last record
    /// ends on a page boundary that position lies a page header beyond anything flushed, and
    /// on an idle primary no record comes to fill it: the rewound replica never becomes
    /// consistent. An explicit CHECKPOINT always writes a record.
    pub async fn checkpoint_source(host: &str, port: u16, password: &str) -> Result<(), PgError> {
        let client = Self::connect_source(host, port, password).await?;
        client.batch_execute("CHECKPOINT").await?;
        Ok(())
    }

    /// Whether the server at `host:port` answers, as a primary (Patroni's
    /// `check_leader_is_not_in_recovery`): after a failed pg_rewind it tells a failure of this
    /// data directory (the leader is fine) from one of the moment (the leader went away).
    pub async fn source_is_primary(host: &str, port: u16, password: &str) -> bool {
        let ask = async {
            let client = Self::connect_source(host, port, password).await?;
            let in_recovery: bool = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await?
                .get(0);
            Ok::<bool, PgError>(!in_recovery)
        };
        matches!(ask.await, Ok(true))
    }

    async fn connect_source(host: &str, port: u16, password: &str) -> Result<Client, PgError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(host)
            .port(port)
            .user("postgres")
            .password(password)
            .dbname("postgres")
            .application_name("pgwarden")
            .connect_timeout(Duration::from_secs(5));
        let (client, connection) = cfg.connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

/// The last switch a timeline history file records: `(parent timeline, switch point)`. Lines are
/// `parentTLI <tab> switchpoint <tab> reason`; blank lines and `#` comments are skipped.
pub fn parse_last_switch(history: &str) -> Option<(u32, u64)> {
    history
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let tli = fields.next()?.parse().ok()?;
            let lsn = parse_lsn(fields.next()?)?;
            Some((tli, lsn))
        })
        .next_back()
}

/// What pg_rewind prints once it has found where to rewind from and before it changes the
/// target: everything it writes comes after.
const REWIND_STARTED: &str = "rewinding from last common checkpoint";

/// Whether a failed pg_rewind (its error output, `detail`) failed before changing the target
/// data directory. After it began copying, the directory is neither the old one nor the
/// leader's (PostgreSQL's documentation: take a fresh backup).
pub fn rewind_left_data_intact(detail: &str) -> bool {
    !detail.contains(REWIND_STARTED)
}

pub fn set_mode(path: &Path, mode: u32) -> Result<(), PgError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

/// `16/B374D848` → bytes.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod lsn_tests {
    use super::{parse_last_switch, parse_lsn, rewind_left_data_intact};

    #[test]
    fn the_last_timeline_switch_is_read_from_the_history_file() {
        let history = "1\t0/3000158\tno recovery target specified\n\n2\t0/224B3718\tno recovery target specified\n";
        assert_eq!(parse_last_switch(history), Some((2, 0x224B_3718)));
        assert_eq!(parse_last_switch("# a comment\n"), None);
        assert_eq!(parse_last_switch("garbage\n1\t0/10\tx\n"), Some((1, 0x10)));
    }

    #[test]
    fn a_rewind_that_failed_before_copying_left_the_data_directory_intact() {
        // Cannot connect: nothing was read or written.
        assert!(rewind_left_data_intact(
            "pg_rewind: error: could not connect to server: Connection refused"
        ));
        // The target's WAL is gone: found before anything is written.
        assert!(rewind_left_data_intact(
            "exit status: 1: pg_rewind: servers diverged at WAL location 0/4023550 on timeline 1\npg_rewind: error: could not find previous WAL record at 0/4023528"
        ));
        // The source went away while copying.
        assert!(!rewind_left_data_intact(
            "exit status: 1: pg_rewind: servers diverged at WAL location 0/4023550 on timeline 1\npg_rewind: rewinding from last common checkpoint at 0/2000110 on timeline 1\npg_rewind: error: could not fetch remote file \"base/5/1259\": server closed the connection unexpectedly"
        ));
    }

    #[test]
    fn lsn_text_parses_to_bytes() {
        assert_eq!(parse_lsn("0/3000028"), Some(0x3000028));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("junk"), None);
    }
}

#[cfg(test)]
mod tests {
    use super::{is_client_backend, unfinished};

    #[test]
    fn a_data_directory_without_pg_control_is_unfinished() {
        let dir = std::env::temp_dir().join(format!("pgwarden-unfinished-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("global")).unwrap();
        assert!(!unfinished(&dir), "empty");
        std::fs::write(dir.join("PG_VERSION"), "15\n").unwrap();
        assert!(unfinished(&dir), "PG_VERSION alone");
        std::fs::write(dir.join("global/pg_control"), [0u8; 8]).unwrap();
        assert!(!unfinished(&dir), "complete");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn client_backends_are_told_from_auxiliary_processes_by_title() {
        for aux in [
            "postgres: checkpointer ",
            "postgres: background writer ",
            "postgres: walwriter ",
            "postgres: autovacuum launcher ",
            "postgres: autovacuum worker postgres",
            "postgres: logical replication launcher ",
            "postgres: walsender replicator 127.0.0.2(40112) streaming 0/3000148",
            "postgres: archiver last was 000000010000000000000002",
            "postgres: startup recovering 000000010000000000000003",
            "postgres: walreceiver streaming 0/3000148",
            "postgres: demo: checkpointer ",
            "postgres: bgworker: logical replication launcher ",
        ] {
            assert!(!is_client_backend(aux), "{aux}");
        }
        for client in [
            "postgres: postgres postgres [local] idle",
            "postgres: app app 10.0.0.7(51234) INSERT",
            "postgres: demo: app app 10.0.0.7(51234) idle in transaction",
            "postgres: parallel worker for PID 1234 ",
            "/usr/lib/postgresql/15/bin/postgres -D /data",
            "",
        ] {
            assert!(is_client_backend(client), "{client}");
        }
    }
}
