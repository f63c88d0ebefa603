//! `pgwarden softdog`: a userspace watchdog in the pod, for kernels without the softdog module.
//! It offers the Linux watchdog protocol on a FIFO (any byte = keepalive and arms it, `V` =
//! disarm) and, when armed and not fed for `timeout`, SIGKILLs the postmaster's process group,
//! so a frozen or hung agent loses PostgreSQL before its lease can expire. It is a separate
//! process: a SIGSTOP of the agent does not stop it.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, getppid};
use tracing::{error, info, warn};

#[derive(Args, Debug, Clone)]
pub struct SoftdogArgs {
    /// The FIFO the agent writes to.
    #[arg(
        long,
        env = "PGWARDEN_SOFTDOG_FIFO",
        default_value = "/run/pgwarden/watchdog"
    )]
    pub fifo: PathBuf,
    /// postmaster.pid of the PostgreSQL to kill on expiry.
    #[arg(long)]
    pub pidfile: PathBuf,
    /// Seconds without a keepalive before it fires.
    #[arg(long)]
    pub timeout: u64,
}

/// The pure state machine: fed bytes and time, it says when to fire.
#[derive(Debug, Default)]
pub struct Timer {
    deadline: Option<Instant>,
}

impl Timer {
    pub fn feed(&mut self, bytes: &[u8], now: Instant, timeout: Duration) {
        for b in bytes {
            self.deadline = if *b == b'V' {
                None
            } else {
                Some(now + timeout)
            };
        }
    }
    pub fn armed(&self) -> bool {
        self.deadline.is_some()
    }
    /// True once, at expiry; the timer disarms itself after firing.
    pub fn expired(&mut self, now: Instant) -> bool {
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            return true;
        }
        false
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SoftdogError {
    #[error("softdog FIFO {path}: {source}")]
    Fifo {
        path: String,
        source: std::io::Error,
    },
}

/// Kill the postmaster named in `pidfile` and its process group (all backends).
pub fn fire(pidfile: &Path) {
    let pid = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        .filter(|p| *p > 1);
    match pid {
        Some(pid) => {
            // The agent starts the postmaster as a process-group leader.
            let group = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            let single = kill(Pid::from_raw(pid), Signal::SIGKILL);
            error!(
                pid,
                ?group,
                ?single,
                "softdog expired: killed the postmaster and its backends"
            );
        }
        None => {
            warn!(pidfile = %pidfile.display(), "softdog expired, but no postmaster is running")
        }
    }
}

pub fn run(args: &SoftdogArgs) -> Result<(), SoftdogError> {
    let fifo_err = |source| SoftdogError::Fifo {
        path: args.fifo.display().to_string(),
        source,
    };
    if !args.fifo.exists() {
        if let Some(dir) = args.fifo.parent() {
            std::fs::create_dir_all(dir).map_err(fifo_err)?;
        }
        nix::unistd::mkfifo(&args.fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| fifo_err(std::io::Error::from(e)))?;
    }
    let mut reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&args.fifo)
        .map_err(fifo_err)?;
    // Hold a writer of our own so the FIFO never reports end-of-file between agent writers.
    let _keep_open = OpenOptions::new()
        .write(true)
        .open(&args.fifo)
        .map_err(fifo_err)?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let parent = getppid();
    let mut timer = Timer::default();
    info!(fifo = %args.fifo.display(), timeout_s = timeout.as_secs(), "softdog ready");
    let mut buf = [0u8; 256];
    loop {
        let ready = {
            let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0)
        };
        if ready > 0 {
            match reader.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let was_armed = timer.armed();
                    timer.feed(&buf[..n], Instant::now(), timeout);
                    if timer.armed() != was_armed {
                        info!(
                            armed = timer.armed(),
                            "softdog {}",
                            if timer.armed() { "armed" } else { "disarmed" }
                        );
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(fifo_err(e)),
            }
        }
        if timer.expired(Instant::now()) {
            fire(&args.pidfile);
        }
        // The agent is gone: nothing more will feed us. Stay only while a fire is still due.
        if getppid() != parent && !timer.armed() {
            info!("softdog: the agent exited; exiting");
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalives_push_the_deadline_and_v_disarms() {
        let t0 = Instant::now();
        let to = Duration::from_secs(6);
        let mut t = Timer::default();
        assert!(
            !t.expired(t0 + Duration::from_secs(100)),
            "never armed, never fires"
        );
        t.feed(b"1", t0, to);
        assert!(!t.expired(t0 + Duration::from_secs(5)));
        t.feed(b"1", t0 + Duration::from_secs(5), to);
        assert!(!t.expired(t0 + Duration::from_secs(10)));
        assert!(t.expired(t0 + Duration::from_secs(11)));
        assert!(!t.expired(t0 + Duration::from_secs(12)), "fires once");
        t.feed(b"11V", t0, to);
        assert!(!t.armed());
        assert!(!t.expired(t0 + Duration::from_secs(100)));
    }

    #[test]
    fn expiry_kills_the_postmasters_process_group() {
        use std::os::unix::process::CommandExt;
        let dir = std::env::temp_dir().join(format!("pgwarden-sd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A stand-in postmaster: a process-group leader with a child, like postgres and a backend.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 300 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pidfile = dir.join("postmaster.pid");
        std::fs::write(&pidfile, format!("{}\n/data\n", child.id())).unwrap();
        fire(&pidfile);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
