//! The fencing invariant, in one place: a member that may be primary either renews the leader
//! Lease in time or loses PostgreSQL before any other member may take the Lease. Two clocks
//! enforce it, and every arm, feed and disarm in the agent goes through [`Fence`]:
//! - the fencing thread: postgres is killed once the last acknowledged renew is older than the
//!   fence deadline (`retryTimeout`, or the watchdog timeout in failsafe mode);
//! - the watchdog (in-pod softdog or host device), armed from before postgres can be primary until
//!   after it stopped, fed only after a renew, with timeout `ttl - safetyMargin`; it fires even when
//!   the whole agent is frozen.
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
}

pub struct Fence {
    watchdog: Watchdog,
    clock: RenewClock,
}

impl Fence {
    pub fn new(watchdog: Watchdog) -> Self {
        Self {
            watchdog,
            clock: Arc::new(Mutex::new(None)),
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

    /// Arm the watchdog before postgres may become primary. In mode `required` a watchdog that
    /// cannot be armed refuses the promotion; in `automatic` it is logged and the promotion goes on.
    pub fn arm(&mut self) -> Result<(), FenceError> {
        match self.watchdog.activate() {
            Ok(()) => Ok(()),
            Err(e) if self.watchdog.mode() == WatchdogMode::Required => {
                Err(FenceError::WatchdogRequired(e.to_string()))
            }
            Err(e) => {
                warn!(error = %e, "watchdog unavailable; continuing without it (mode automatic)");
                Ok(())
            }
        }
    }

    /// The Lease was just taken (acquired, or renewed right before starting a primary): start
    /// the fencing clock. Call [`Fence::arm`] first.
    pub fn holding(&mut self) {
        self.set(Some(Instant::now()));
    }

    /// The apiserver acknowledged a renew: feed the watchdog (only now) and restart the clock.
    pub fn renewed(&mut self) {
        if let Err(e) = self.watchdog.activate() {
            warn!(error = %e, "watchdog keepalive failed");
        }
        self.set(Some(Instant::now()));
    }

    /// Failsafe: every member confirmed this primary this cycle, as good as a renew.
    pub fn confirmed(&mut self) {
        if let Err(e) = self.watchdog.keepalive() {
            warn!(error = %e, "watchdog keepalive failed");
        }
        self.set(Some(Instant::now()));
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
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    let Some(overdue) = overdue(&clock, deadline) else {
                        continue;
                    };
                    error!("no lease renew for retryTimeout: fencing postgres");
                    softdog::fire(&pidfile);
                    if let Ok(mut g) = clock.lock() {
                        *g = None;
                    }
                    telemetry.fenced(FencingReason::RetryTimeout);
                    events.report(events::fenced_by_timeout(&me, overdue, deadline));
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
        Fence::new(Watchdog::new(
            WatchdogMode::Automatic,
            Device::Softdog(dir.join("watchdog")),
            Duration::from_secs(5),
        ))
    }

    #[test]
    fn the_clock_runs_only_while_primary() {
        let mut f = fence();
        assert!(!f.is_primary());
        f.holding();
        assert!(f.is_primary());
        f.leaving();
        assert!(!f.is_primary());
        f.renewed();
        assert!(f.is_primary());
        f.stand_down();
        assert!(!f.is_primary());
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

    #[test]
    fn automatic_mode_promotes_without_a_device_and_required_refuses() {
        let mut f = fence();
        assert!(f.arm().is_ok());
        assert!(!f.is_armed());
        let dir = std::env::temp_dir().join("pgwarden-fence-test-absent");
        let mut required = Fence::new(Watchdog::new(
            WatchdogMode::Required,
            Device::Softdog(dir.join("watchdog")),
            Duration::from_secs(5),
        ));
        assert!(required.blocks_promotion());
        assert!(matches!(
            required.arm(),
            Err(FenceError::WatchdogRequired(_))
        ));
    }
}
