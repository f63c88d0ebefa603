//! pgBackRest on the primary (`spec.backup`). The operator puts the whole configuration in the
//! pod's environment (`PGBACKREST_*`), which PostgreSQL's `archive_command` and every
//! `pgbackrest` this module runs inherit. A primary makes sure the stanza exists before WAL can
//! be archived: `pgbackrest stanza-create` once per term as primary, in the background (the HA
//! loop never waits for the object store), retried every [`RETRY`] while it fails. It is
//! idempotent: on a repository that already holds the stanza for this system it only checks it.
//! Until it succeeds `archive_command` fails, WAL stays in `pg_wal`, and the cluster's
//! `ContinuousArchiving` condition says so.
//!
//! Base backups: the operator writes a request (`backup` key of the state ConfigMap, a unique
//! name); the primary whose stanza is ready runs it once ([`plan_backup`], pure), reporting in the
//! `backup-result` key: `running` before it starts (so a request is never run twice), then
//! `completed` with pgBackRest's label or `failed` with its error. A primary that is demoted
//! kills its run and reports it failed; a new primary reports a run its predecessor never
//! finished as failed. The operator, not the agent, decides whether to ask again. Each backup
//! and every [`INFO_EVERY`] the primary reads `pgbackrest info` and publishes what the repository
//! holds in its member status.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::FutureExt;

use tokio::process::Command;

use crate::api::backup::RepositoryInfo;
use crate::api::state::{BackupRequest, BackupResult};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How long one `pgbackrest` call may take before it counts as failed.
pub const TIMEOUT: Duration = Duration::from_secs(120);
/// The wait before a failed stanza-create is tried again.
pub const RETRY: Duration = Duration::from_secs(30);

/// Where the stanza stands for this member's current term as primary.
#[derive(Debug)]
pub struct Stanza {
    ready: bool,
    /// The last failure's message, until a success.
    error: Option<String>,
    running: Option<JoinHandle<Result<(), String>>>,
    not_before: Option<Instant>,
    failures: u32,
}

impl Default for Stanza {
    fn default() -> Self {
        Self::new()
    }
}

impl Stanza {
    pub fn new() -> Self {
        Self {
            ready: false,
            error: None,
            running: None,
            not_before: None,
            failures: 0,
        }
    }

    /// Whether the stanza was created (or found valid) during this term as primary.
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// Why the last attempt failed, while none has succeeded this term.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// One step per loop: `primary` is whether this member runs as primary now. Starts the
    /// command through `start` when it is due, collects a finished one, and forgets everything
    /// when the member is no longer primary (the next term checks again: a restore or a new
    /// repository may have happened meanwhile).
    pub fn step<F>(&mut self, primary: bool, now: Instant, start: F)
    where
        F: FnOnce() -> JoinHandle<Result<(), String>>,
    {
        if !primary {
            if let Some(task) = self.running.take() {
                task.abort();
            }
            *self = Self::new();
            return;
        }
        if let Some(task) = &self.running {
            if !task.is_finished() {
                return;
            }
            let task = self.running.take();
            let result = task
                .and_then(|t| t.now_or_never())
                .map(|r| r.unwrap_or_else(|e| Err(format!("the task failed: {e}"))))
                .unwrap_or_else(|| Err("the task vanished".into()));
            match result {
                Ok(()) => {
                    info!("pgBackRest stanza ready: WAL archiving can start");
                    self.ready = true;
                    self.error = None;
                    self.failures = 0;
                }
                Err(e) => {
                    self.error = Some(e.clone());
                    self.failures += 1;
                    // Once, then every tenth failure: the condition carries the rest.
                    if self.failures == 1 || self.failures.is_multiple_of(10) {
                        warn!(error = %e, failures = self.failures, "pgbackrest stanza-create failed; retrying");
                    }
                    self.not_before = Some(now + RETRY);
                }
            }
            return;
        }
        if self.ready || self.not_before.is_some_and(|t| now < t) {
            return;
        }
        self.running = Some(start());
    }
}

/// Run `pgbackrest stanza-create` (the stanza, repository and instance from the environment),
/// then push the earlier timelines' segments in `pg_wal` ([`earlier_segments`]): a primary
/// that was a replica until this term never archived what it streamed (PostgreSQL marks
/// streamed segments archived), and its predecessor may have died before pushing them, which
/// would leave a hole before the timeline switch that no restore could cross. pgBackRest takes
/// a segment it already holds with the same checksum as success.
pub fn spawn_stanza_create(
    pg_wal: PathBuf,
    timeline: Option<u32>,
) -> JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        run(&["stanza-create"], TIMEOUT).await?;
        let Some(timeline) = timeline.filter(|t| *t > 1) else {
            return Ok(());
        };
        let names = std::fs::read_dir(&pg_wal)
            .map_err(|e| format!("cannot list {}: {e}", pg_wal.display()))?
            .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
            .collect::<Vec<_>>();
        let segments = earlier_segments(&names, timeline);
        for name in &segments {
            let path = pg_wal.join(name);
            // Not through the asynchronous queue: it only takes segments PostgreSQL marked
            // ready, and these are marked done.
            run(
                &[
                    "archive-push",
                    "--no-archive-async",
                    &path.to_string_lossy(),
                ],
                TIMEOUT,
            )
            .await?;
        }
        if !segments.is_empty() {
            info!(
                count = segments.len(),
                "pushed the earlier timelines' WAL segments found in pg_wal"
            );
        }
        Ok(())
    })
}

/// The complete WAL segments of timelines before `timeline` among `names` (files of `pg_wal`),
/// sorted.
pub fn earlier_segments(names: &[String], timeline: u32) -> Vec<String> {
    let mut out: Vec<String> = names
        .iter()
        .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .filter(|n| u32::from_str_radix(&n[..8], 16).is_ok_and(|t| t < timeline))
        .cloned()
        .collect();
    out.sort();
    out
}

/// How often a primary reads what the repository holds (besides after each backup).
pub const INFO_EVERY: Duration = Duration::from_secs(300);
/// A base backup may take this long before it is killed and reported failed.
pub const BACKUP_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// `pgbackrest info` for the stanza (`PGBACKREST_STANZA`), parsed.
pub async fn repository_info() -> Result<RepositoryInfo, String> {
    let stanza = std::env::var("PGBACKREST_STANZA").unwrap_or_default();
    let json = run(&["info", "--output=json"], TIMEOUT).await?;
    crate::api::backup::parse_info(&json, &stanza)
}

/// Run `pgbackrest <args>` (a backup, `BackupRequest::pgbackrest_args`, which also expires
/// what the retention no longer keeps), then read the repository: the newest backup is the one
/// just taken.
pub fn spawn_backup(args: Vec<String>) -> InfoTask {
    tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args, BACKUP_TIMEOUT).await?;
        repository_info().await
    })
}

/// A pgBackRest run that ends in a read of the repository.
pub type InfoTask = JoinHandle<Result<RepositoryInfo, String>>;

/// A backup running on this primary, and the repository as this member last read it.
#[derive(Debug, Default)]
pub struct Runner {
    /// The request, when it started, the task.
    running: Option<(BackupRequest, String, InfoTask)>,
    info: Option<InfoTask>,
    info_due: Option<Instant>,
    /// What the repository holds (published by a primary).
    pub repository: Option<RepositoryInfo>,
    /// A result not yet written to the state ConfigMap (the apiserver failed); retried each loop.
    pub unwritten: Option<BackupResult>,
}

impl Runner {
    /// The request running here.
    pub fn running(&self) -> Option<&str> {
        self.running.as_ref().map(|(r, _, _)| r.name.as_str())
    }

    /// Start `request` (`started`: RFC 3339 now) with `spawn`.
    pub fn start(
        &mut self,
        request: BackupRequest,
        started: String,
        spawn: impl FnOnce(Vec<String>) -> InfoTask,
    ) {
        let task = spawn(request.pgbackrest_args());
        self.running = Some((request, started, task));
    }

    /// Kill the running backup; its result says why.
    pub fn abort(&mut self, me: &str, finished: String) {
        if let Some((req, started, task)) = self.running.take() {
            task.abort();
            self.unwritten = Some(BackupResult {
                name: req.name,
                phase: BackupResult::FAILED.into(),
                member: me.into(),
                started,
                finished: Some(finished),
                label: None,
                error: Some(format!("interrupted: {me} stopped being the primary")),
            });
        }
    }

    /// The result of a backup that finished since the last call (and the repository it read).
    pub fn collect(&mut self, me: &str, finished: String) -> Option<BackupResult> {
        if !self
            .running
            .as_ref()
            .is_some_and(|(_, _, t)| t.is_finished())
        {
            return None;
        }
        let (req, started, task) = self.running.take()?;
        let outcome = task
            .now_or_never()
            .map(|r| r.unwrap_or_else(|e| Err(format!("the backup task failed: {e}"))))
            .unwrap_or_else(|| Err("the backup task vanished".into()));
        let mut result = BackupResult {
            name: req.name,
            phase: BackupResult::COMPLETED.into(),
            member: me.into(),
            started,
            finished: Some(finished),
            label: None,
            error: None,
        };
        match outcome {
            Ok(info) => {
                result.label = info.backups.first().map(|b| b.label.clone());
                self.repository = Some(info);
                self.info_due = Some(Instant::now() + INFO_EVERY);
            }
            Err(e) => {
                result.phase = BackupResult::FAILED.into();
                result.error = Some(e);
            }
        }
        Some(result)
    }

    /// Read the repository now and then while `ready` (a primary whose stanza exists); forget
    /// it otherwise.
    pub fn refresh_info(&mut self, ready: bool, now: Instant, spawn: impl FnOnce() -> InfoTask) {
        if !ready {
            if let Some(t) = self.info.take() {
                t.abort();
            }
            self.repository = None;
            self.info_due = None;
            return;
        }
        if let Some(t) = &self.info {
            if !t.is_finished() {
                return;
            }
            match self.info.take().and_then(|t| t.now_or_never()) {
                Some(Ok(Ok(info))) => self.repository = Some(info),
                Some(Ok(Err(e))) => warn!(error = %e, "cannot read the backup repository"),
                _ => warn!("the repository read ended abnormally"),
            }
            self.info_due = Some(now + INFO_EVERY);
            return;
        }
        if self.info_due.is_none_or(|t| now >= t) && self.running.is_none() {
            self.info = Some(spawn());
        }
    }
}

/// Run `pgbackrest <args>`; its standard output, or the ERROR line it printed.
async fn run(args: &[&str], timeout: Duration) -> Result<String, String> {
    let mut cmd = Command::new("pgbackrest");
    cmd.args(args).kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .map_err(|_| format!("pgbackrest {} took more than {timeout:?}", args.join(" ")))?
        .map_err(|e| format!("cannot run pgbackrest: {e}"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // pgBackRest prints its ERROR line on stdout as well as stderr, depending on the log
    // settings; keep the first one found and the two lines after it (an HTTP error's status
    // and path), at most 400 characters.
    let lines: Vec<&str> = stderr.lines().chain(stdout.lines()).collect();
    let line = match lines.iter().position(|l| l.contains("ERROR")) {
        Some(i) => lines[i..lines.len().min(i + 3)]
            .iter()
            .map(|l| l.trim())
            .collect::<Vec<_>>()
            .join(" "),
        None => "no error message".to_string(),
    };
    let line: String = line.chars().take(400).collect();
    Err(format!(
        "pgbackrest {} exited with {}: {line}",
        args.join(" "),
        out.status
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(result: Result<(), String>) -> JoinHandle<Result<(), String>> {
        tokio::spawn(async move { result })
    }

    async fn settle(s: &Stanza) {
        while s.running.as_ref().is_some_and(|t| !t.is_finished()) {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn only_complete_segments_of_earlier_timelines_are_pushed_again() {
        let names: Vec<String> = [
            "000000010000000000000003",
            "000000010000000000000004.partial",
            "000000020000000000000004",
            "00000002.history",
            "000000010000000000000002",
            "archive_status",
            "000000030000000000000005",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            earlier_segments(&names, 3),
            [
                "000000010000000000000002",
                "000000010000000000000003",
                "000000020000000000000004"
            ]
        );
        assert!(earlier_segments(&names, 1).is_empty());
    }

    #[tokio::test]
    async fn a_primary_creates_the_stanza_once_and_retries_a_failure_later() {
        let t0 = Instant::now();
        let mut s = Stanza::new();
        s.step(true, t0, || done(Err("no bucket".into())));
        settle(&s).await;
        s.step(true, t0, || panic!("still collecting"));
        assert!(!s.ready());
        assert_eq!(s.error(), Some("no bucket"));
        s.step(true, t0 + Duration::from_secs(5), || {
            panic!("retried before RETRY")
        });
        s.step(true, t0 + RETRY, || done(Ok(())));
        settle(&s).await;
        s.step(true, t0 + RETRY, || panic!("still collecting"));
        assert!(s.ready());
        assert_eq!(s.error(), None);
        s.step(true, t0 + RETRY * 3, || panic!("created again"));
        // A new term as primary checks again.
        s.step(false, t0 + RETRY * 4, || panic!("a replica runs nothing"));
        assert!(!s.ready());
        let mut started = false;
        s.step(true, t0 + RETRY * 4, || {
            started = true;
            done(Ok(()))
        });
        assert!(started);
    }
}

/// What the primary's agent does about the operator's backup request this loop (pure; the loop
/// runs `pgbackrest backup` and writes the `backup-result` key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupStep {
    Nothing,
    /// Start the request here (and report it `running`).
    Start(BackupRequest),
    /// Kill the backup running here: this member is no longer the primary.
    Abort,
    /// Report the request failed: the member that ran it stopped being the primary, so it
    /// will never report (a failover or switchover during the backup).
    Orphaned {
        member: String,
    },
}

/// `running`: the request running here, if any.
pub fn plan_backup(
    request: Option<&BackupRequest>,
    result: Option<&BackupResult>,
    running: Option<&str>,
    primary: bool,
) -> BackupStep {
    if running.is_some() {
        return if primary {
            BackupStep::Nothing
        } else {
            BackupStep::Abort
        };
    }
    let Some(req) = request.filter(|_| primary) else {
        return BackupStep::Nothing;
    };
    match result.filter(|r| r.name == req.name) {
        None => BackupStep::Start(req.clone()),
        // Running elsewhere (a former primary), or here before this agent restarted (it died
        // with the agent): nobody will report it.
        Some(r) if !r.finished() => BackupStep::Orphaned {
            member: r.member.clone(),
        },
        Some(_) => BackupStep::Nothing,
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;

    fn req(name: &str) -> BackupRequest {
        BackupRequest {
            name: name.into(),
            type_: "full".into(),
            immediate: false,
        }
    }

    #[test]
    fn an_immediate_request_starts_with_a_checkpoint_at_once() {
        assert_eq!(req("a").pgbackrest_args(), ["backup", "--type=full"]);
        let fast = BackupRequest {
            type_: "incr".into(),
            immediate: true,
            ..req("b")
        };
        assert_eq!(
            fast.pgbackrest_args(),
            ["backup", "--type=incr", "--start-fast"]
        );
        // The key an older operator wrote (no `immediate`) still reads, and a request that
        // is not immediate is written as before.
        let old: BackupRequest =
            serde_json::from_str(r#"{"name":"a","type":"full"}"#).expect("parses");
        assert_eq!(old, req("a"));
        assert_eq!(
            serde_json::to_string(&req("a")).unwrap(),
            r#"{"name":"a","type":"full"}"#
        );
    }

    fn result(name: &str, phase: &str, member: &str) -> BackupResult {
        BackupResult {
            name: name.into(),
            phase: phase.into(),
            member: member.into(),
            started: "2026-12-02T07:00:00Z".into(),
            finished: None,
            label: None,
            error: None,
        }
    }

    #[test]
    fn the_primary_runs_each_request_once_and_a_lost_run_is_reported_failed() {
        let r = req("nightly-1");
        assert_eq!(
            plan_backup(Some(&r), None, None, true),
            BackupStep::Start(r.clone())
        );
        assert_eq!(
            plan_backup(Some(&r), None, None, false),
            BackupStep::Nothing
        );
        let older = result("nightly-0", "completed", "pg-0");
        assert_eq!(
            plan_backup(Some(&r), Some(&older), None, true),
            BackupStep::Start(r.clone()),
            "the result of an older request"
        );
        let mine = result("nightly-1", "running", "pg-0");
        assert_eq!(
            plan_backup(Some(&r), Some(&mine), Some("nightly-1"), true),
            BackupStep::Nothing
        );
        assert_eq!(
            plan_backup(Some(&r), Some(&mine), Some("nightly-1"), false),
            BackupStep::Abort,
            "demoted while running"
        );
        assert_eq!(
            plan_backup(Some(&r), Some(&mine), None, true),
            BackupStep::Orphaned {
                member: "pg-0".into()
            },
            "the new primary reports the old one's run failed"
        );
        let done = result("nightly-1", "completed", "pg-0");
        assert_eq!(
            plan_backup(Some(&r), Some(&done), None, true),
            BackupStep::Nothing
        );
        let failed = result("nightly-1", "failed", "pg-0");
        assert_eq!(
            plan_backup(Some(&r), Some(&failed), None, true),
            BackupStep::Nothing,
            "a failed request is not retried by the agent: the operator decides"
        );
        assert_eq!(
            plan_backup(None, Some(&done), None, true),
            BackupStep::Nothing
        );
    }
}
