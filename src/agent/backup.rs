//! pgBackRest on the primary (`spec.backup`). The operator puts the whole configuration in the
//! pod's environment (`PGBACKREST_*`), which PostgreSQL's `archive_command` and every
//! `pgbackrest` this module runs inherit. A primary makes sure the stanza exists before WAL can
//! be archived: `pgbackrest stanza-create` once per term as primary, in the background (the HA
//! loop never waits for the object store), retried every [`RETRY`] while it fails. It is
//! idempotent: on a repository that already holds the stanza for this system it only checks it.
//! Until it succeeds `archive_command` fails, WAL stays in `pg_wal`, and the cluster's
//! `ContinuousArchiving` condition says so.

use std::time::{Duration, Instant};

use futures::FutureExt;

use tokio::process::Command;
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
            running: None,
            not_before: None,
            failures: 0,
        }
    }

    /// Whether the stanza was created (or found valid) during this term as primary.
    pub fn ready(&self) -> bool {
        self.ready
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
                    self.failures = 0;
                }
                Err(e) => {
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

/// Run `pgbackrest stanza-create` (the stanza, repository and instance from the environment).
pub fn spawn_stanza_create() -> JoinHandle<Result<(), String>> {
    tokio::spawn(run(&["stanza-create"]))
}

async fn run(args: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new("pgbackrest");
    cmd.args(args).kill_on_drop(true);
    let out = tokio::time::timeout(TIMEOUT, cmd.output())
        .await
        .map_err(|_| format!("pgbackrest {} took more than {TIMEOUT:?}", args.join(" ")))?
        .map_err(|e| format!("cannot run pgbackrest: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // pgBackRest prints its ERROR line on stdout as well as stderr, depending on the log
    // settings; keep the first one found.
    let line = stderr
        .lines()
        .chain(stdout.lines())
        .find(|l| l.contains("ERROR"))
        .unwrap_or("no error message")
        .trim()
        .to_string();
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

    #[tokio::test]
    async fn a_primary_creates_the_stanza_once_and_retries_a_failure_later() {
        let t0 = Instant::now();
        let mut s = Stanza::new();
        s.step(true, t0, || done(Err("no bucket".into())));
        settle(&s).await;
        s.step(true, t0, || panic!("still collecting"));
        assert!(!s.ready());
        s.step(true, t0 + Duration::from_secs(5), || {
            panic!("retried before RETRY")
        });
        s.step(true, t0 + RETRY, || done(Ok(())));
        settle(&s).await;
        s.step(true, t0 + RETRY, || panic!("still collecting"));
        assert!(s.ready());
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
    Start(crate::api::state::BackupRequest),
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
    request: Option<&crate::api::state::BackupRequest>,
    result: Option<&crate::api::state::BackupResult>,
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
        Some(r) if r.phase == "running" => BackupStep::Orphaned {
            member: r.member.clone(),
        },
        Some(_) => BackupStep::Nothing,
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;
    use crate::api::state::{BackupRequest, BackupResult};

    fn req(name: &str) -> BackupRequest {
        BackupRequest {
            name: name.into(),
            type_: "full".into(),
        }
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
