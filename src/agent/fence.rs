//! The fencing invariant, in one place: a member that may be primary either renews the leader
//! Lease in time or loses PostgreSQL before any other member may take the Lease. Two clocks
//! enforce it, and every arm, feed and disarm in the agent goes through [`Fence`]:
//! - the fencing thread: postgres is killed once the last acknowledged renew was SENT longer ago
//!   than the fence deadline `ttl - safetyMargin`. The apiserver accepted that renew no earlier
//!   than it was sent, and no other member may take the Lease before `ttl` has passed on its own
//!   clock since it saw that renew: so the kill comes at least `safetyMargin` before any takeover,
//!   however late the answer arrived.
//! - the watchdog (in-pod softdog or host device), armed from before postgres can be primary until
//!   after it stopped, with timeout `ttl - safetyMargin`, fires even when the whole agent is
//!   frozen. It can only count from when it is fed, so it is fed only after a renew answered
//!   within half the safety margin: its expiry then also comes before any takeover.
//!
//! docs/architecture.md ("Fencing") has the timing arithmetic.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{error, warn};

use super::events::{self, Events};
use super::metrics::{FencingReason, Telemetry};
use super::softdog;
use super::watchdog::Watchdog;
use crate::api::cluster::WatchdogMode;

/// When this member last renewed (or, in failsafe mode, was confirmed by every member) while it
/// may be primary; `None` while it is not primary. Read by the fencing thread and `/metrics`.
pub type RenewClock = Arc<Mutex<Option<Instant>>>;

#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("watchdog required but unavailable: {0}")]
    WatchdogRequired(String),
    #[error(
        "a fence counted {age_s:.1}s since this cycle's Lease write or watchdog feed, past its deadline of {deadline_s:.1}s: not starting or promoting a primary on it"
    )]
    Overdue { age_s: f64, deadline_s: f64 },
}

pub struct Fence {
    watchdog: Watchdog,
    clock: RenewClock,
    /// A renew answered later than this after it was sent does not feed the watchdog.
    feed_within: Duration,
    /// When the watchdog was last armed or fed, while it is armed.
    fed: Option<Instant>,
}

impl Fence {
    /// `safety_margin`: how long before the earliest takeover the fences must have fired.
    pub fn new(watchdog: Watchdog, safety_margin: Duration) -> Self {
        Self {
            watchdog,
            clock: Arc::new(Mutex::new(None)),
            feed_within: safety_margin / 2,
            fed: None,
        }
    }

    /// The renew clock, for `/metrics` (seconds since the last renew).
    pub fn clock(&self) -> RenewClock {
        self.clock.clone()
    }

    pub fn mode(&self) -> WatchdogMode {
        self.watchdog.mode()
    }

    pub fn is_armed(&self) -> bool {
        self.watchdog.is_armed()
    }

    /// Watchdog mode `required` without a working device: this member must not become primary.
    pub fn blocks_promotion(&self) -> bool {
        self.watchdog.mode() == WatchdogMode::Required && !self.watchdog.is_available()
    }

    /// Whether the fencing clock runs, i.e. this member acts as primary.
    pub fn is_primary(&self) -> bool {
        self.clock.lock().map(|g| g.is_some()).unwrap_or(false)
    }

    /// How long ago the last acknowledged renew was sent, while this member acts as primary.
    pub fn since_renew(&self) -> Option<Duration> {
        self.clock.lock().ok().and_then(|g| g.map(|t| t.elapsed()))
    }

    /// Arm the watchdog before postgres may become primary. In mode `required` a watchdog that
    /// cannot be armed refuses the promotion; in `automatic` it is logged and the promotion goes on.
    pub fn arm(&mut self) -> Result<(), FenceError> {
        match self.watchdog.activate() {
            Ok(()) => {
                self.note_fed();
                Ok(())
            }
            Err(e) if self.watchdog.mode() == WatchdogMode::Required => {
                Err(FenceError::WatchdogRequired(e.to_string()))
            }
            Err(e) => {
                warn!(error = %e, "watchdog unavailable; continuing without it (mode automatic)");
                Ok(())
            }
        }
    }

    /// The Lease was just taken (acquired, or renewed right before starting or promoting a
    /// primary) by a write sent at `sent`: start the fencing clock there. Call [`Fence::arm`]
    /// first.
    pub fn holding(&mut self, sent: Instant) {
        self.set(Some(sent));
    }

    /// The apiserver acknowledged a renew sent at `sent`: restart the clock from then, and feed
    /// the watchdog (only now) if the answer came in time.
    pub fn renewed(&mut self, sent: Instant) {
        let took = sent.elapsed();
        if took <= self.feed_within {
            match self.watchdog.activate() {
                Ok(()) => self.note_fed(),
                Err(e) => warn!(error = %e, "watchdog keepalive failed"),
            }
        } else {
            warn!(
                took_s = took.as_secs_f64(),
                "the renew was answered late: the watchdog is not fed this time"
            );
        }
        self.set(Some(sent));
    }

    /// Failsafe: every member confirmed this primary in a round started at `asked`, as good as a
    /// renew sent then (members honour a confirmation for ttl from when they received it).
    pub fn confirmed(&mut self, asked: Instant) {
        if asked.elapsed() <= self.feed_within {
            match self.watchdog.keepalive() {
                Ok(()) => self.note_fed(),
                Err(e) => warn!(error = %e, "watchdog keepalive failed"),
            }
        }
        self.set(Some(asked));
    }

    /// Right before postgres is started or promoted as primary: both fences must still be
    /// ahead of their deadline. An agent that stalled since the Lease write (SIGSTOP, CPU
    /// starvation) finds its fencing clock overdue, or its watchdog fired already (into no
    /// primary, and disarmed itself): another member may hold the Lease by now.
    pub fn in_time(&self, deadline: Duration) -> Result<(), FenceError> {
        let late = |age: Duration| FenceError::Overdue {
            age_s: age.as_secs_f64(),
            deadline_s: deadline.as_secs_f64(),
        };
        if let Some(age) = self.since_renew()
            && age >= deadline
        {
            return Err(late(age));
        }
        if let Some(age) = self.fed.map(|fed| fed.elapsed())
            && age >= deadline
        {
            return Err(late(age));
        }
        Ok(())
    }

    fn note_fed(&mut self) {
        if self.watchdog.is_armed() {
            self.fed = Some(Instant::now());
        }
    }

    /// This member stops acting as primary: the fencing thread stands down so a clean stop is
    /// not killed halfway. The watchdog stays armed until [`Fence::stopped`]: if the stop hangs,
    /// it still fires before the ttl runs out.
    pub fn leaving(&mut self) {
        self.set(None);
    }

    /// PostgreSQL is down (or a replica): disarm the watchdog with the magic close.
    pub fn stopped(&mut self) {
        self.watchdog.disable();
        self.fed = None;
    }

    /// Not primary and nothing to guard (pause, a replica start, shutdown): both at once.
    pub fn stand_down(&mut self) {
        self.leaving();
        self.stopped();
    }

    fn set(&self, renewed: Option<Instant>) {
        if let Ok(mut g) = self.clock.lock() {
            *g = renewed;
        }
    }

    /// Start the fencing thread: a primary whose last renew is older than `deadline` loses
    /// postgres at once (the postmaster and each child by pid, see `softdog::fire`), even when
    /// the loop is blocked in a hung request. A thread, not a task: nothing the runtime runs
    /// can delay it.
    ///
    /// The clock stays overdue after it fired, until the agent renews or stands down: a loop
    /// that stalled between its Lease write and starting or promoting postgres (SIGSTOP, a
    /// hung call) and then carries on finds any postmaster it starts killed within 100 ms.
    pub fn spawn_thread(
        &self,
        deadline: Duration,
        pidfile: PathBuf,
        telemetry: Arc<Telemetry>,
        (events, me): (Events, String),
    ) -> std::io::Result<()> {
        let clock = self.clock.clone();
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("fencing".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _entered = span.enter();
                // Whether this overdue stretch was reported already.
                let mut reported = false;
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    let Some(overdue) = overdue(&clock, deadline) else {
                        reported = false;
                        continue;
                    };
                    if !reported {
                        error!(
                            deadline_s = deadline.as_secs_f64(),
                            "no lease renew within the fence deadline: fencing postgres"
                        );
                        telemetry.fenced(FencingReason::RetryTimeout);
                        events.report(events::fenced_by_timeout(&me, overdue, deadline));
                        reported = true;
                    }
                    if let Some(pid) = softdog::postmaster_from_pidfile(&pidfile)
                        .filter(|pid| softdog::is_postgres(*pid))
                    {
                        let backends = softdog::kill_postmaster(pid);
                        error!(
                            pid,
                            backends, "fenced: killed the postmaster and its backends"
                        );
                    }
                }
            })?;
        Ok(())
    }
}

/// How long since the last renew, when that is past the deadline.
fn overdue(clock: &RenewClock, deadline: Duration) -> Option<Duration> {
    clock
        .lock()
        .ok()
        .and_then(|g| g.map(|t| t.elapsed()))
        .filter(|e| *e > deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::watchdog::Device;

    fn fence() -> Fence {
        let dir = std::env::temp_dir().join("pgwarden-fence-test-absent");
        Fence::new(
            Watchdog::new(
                WatchdogMode::Automatic,
                Device::Softdog(dir.join("watchdog")),
                Duration::from_secs(5),
            ),
            Duration::from_secs(2),
        )
    }

    #[test]
    fn the_clock_runs_only_while_primary() {
        let mut f = fence();
        assert!(!f.is_primary());
        f.holding(Instant::now());
        assert!(f.is_primary());
        f.leaving();
        assert!(!f.is_primary());
        f.renewed(Instant::now());
        assert!(f.is_primary());
        f.stand_down();
        assert!(!f.is_primary());
    }

    #[test]
    fn the_clock_counts_from_when_the_renew_was_sent_not_answered() {
        let mut f = fence();
        let sent = Instant::now() - Duration::from_millis(2500);
        f.renewed(sent);
        assert!(f.since_renew().unwrap() >= Duration::from_millis(2500));
        assert!(overdue(&f.clock(), Duration::from_secs(2)).is_some());
        f.confirmed(sent);
        assert!(f.since_renew().unwrap() >= Duration::from_millis(2500));
    }

    #[test]
    fn overdue_only_past_the_deadline_and_only_while_primary() {
        let f = fence();
        let clock = f.clock();
        assert_eq!(overdue(&clock, Duration::from_millis(10)), None);
        *clock.lock().unwrap() = Some(Instant::now() - Duration::from_secs(4));
        assert!(overdue(&clock, Duration::from_secs(3)).is_some());
        assert_eq!(overdue(&clock, Duration::from_secs(5)), None);
    }

    /// A stand-in postmaster: a copy of `sleep` named `postgres` (what `softdog::is_postgres`
    /// looks for), written to `pidfile`.
    fn fake_postmaster(dir: &std::path::Path, pidfile: &std::path::Path) -> std::process::Child {
        let exe = dir.join("postgres");
        if !exe.exists() {
            std::fs::copy("/bin/sleep", &exe).unwrap();
        }
        let child = std::process::Command::new(&exe).arg("60").spawn().unwrap();
        std::fs::write(pidfile, format!("{}\n", child.id())).unwrap();
        child
    }

    fn killed_within(child: &mut std::process::Child, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn an_overdue_fence_keeps_killing_any_postmaster_until_renewed() {
        let dir = std::env::temp_dir().join(format!("pgwarden-fence-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("postmaster.pid");
        let f = fence();
        f.spawn_thread(
            Duration::from_millis(300),
            pidfile.clone(),
            Arc::new(Telemetry::default()),
            (Events::disabled(), "m".into()),
        )
        .unwrap();
        // Overdue: the first postmaster is killed...
        *f.clock().lock().unwrap() = Some(Instant::now() - Duration::from_secs(1));
        let mut first = fake_postmaster(&dir, &pidfile);
        assert!(killed_within(&mut first, Duration::from_secs(2)));
        // ...and so is one started after the fence fired (a stalled loop that resumes and
        // starts a primary on its stale Lease), until the clock moves.
        let mut second = fake_postmaster(&dir, &pidfile);
        assert!(killed_within(&mut second, Duration::from_secs(2)));
        // Renewed: postgres runs.
        *f.clock().lock().unwrap() = Some(Instant::now() + Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(150));
        let mut third = fake_postmaster(&dir, &pidfile);
        assert!(!killed_within(&mut third, Duration::from_millis(500)));
        let _ = third.kill();
        let _ = third.wait();
        // A pidfile naming a process that is not postgres is left alone.
        *f.clock().lock().unwrap() = Some(Instant::now() - Duration::from_secs(1));
        let mut other = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        std::fs::write(&pidfile, format!("{}\n", other.id())).unwrap();
        assert!(!killed_within(&mut other, Duration::from_millis(500)));
        let _ = other.kill();
        let _ = other.wait();
        *f.clock().lock().unwrap() = None;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn automatic_mode_promotes_without_a_device_and_required_refuses() {
        let mut f = fence();
        assert!(f.arm().is_ok());
        assert!(!f.is_armed());
        let dir = std::env::temp_dir().join("pgwarden-fence-test-absent");
        let mut required = Fence::new(
            Watchdog::new(
                WatchdogMode::Required,
                Device::Softdog(dir.join("watchdog")),
                Duration::from_secs(5),
            ),
            Duration::from_secs(2),
        );
        assert!(required.blocks_promotion());
        assert!(matches!(
            required.arm(),
            Err(FenceError::WatchdogRequired(_))
        ));
    }
}
