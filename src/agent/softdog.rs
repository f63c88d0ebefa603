//! `pgwarden softdog`: a userspace watchdog in the pod, for kernels without the softdog module.
//! It offers the Linux watchdog protocol on a FIFO (any byte = keepalive and arms it, `V` =
//! disarm) and, when armed and not fed for `timeout`, SIGKILLs the postmaster's process group,
//! so a frozen or hung agent loses PostgreSQL before its lease can expire. It is a separate
//! process: a SIGSTOP of the agent does not stop it.
//!
//! An agent that dies while the softdog is armed (kill -9, a crash) leaves it an orphan, and an
//! orphan guards only what its agent left: the postmaster running when it noticed, pinned by pid
//! and start time. It reads the FIFO no more (a restarted agent's own softdog listens on the same
//! path: keepalives taken there would keep the orphan alive and starve the new one), fires at
//! its deadline at the pinned postmaster only if it still runs, never at a postmaster started
//! after it (the restarted agent's), and exits once nothing it guards is left.

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

/// Processes whose parent is `pid`, from /proc.
pub fn children_of(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    // Fields after the command name: state, ppid, ...
                    let rest = stat.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// SIGKILL the postmaster and every backend it forked. Backends call setsid(), so they are not
/// in the postmaster's process group, and an orphaned backend can still commit for a client it
/// already serves: each one is killed by pid. The postmaster is stopped first so it forks no
/// new backend while they are collected.
pub fn kill_postmaster(pid: i32) -> usize {
    let pm = Pid::from_raw(pid);
    let _ = kill(pm, Signal::SIGSTOP);
    let mut killed = 0;
    for _ in 0..2 {
        for child in children_of(pid) {
            if kill(Pid::from_raw(child), Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
    }
    let _ = kill(pm, Signal::SIGKILL);
    killed
}

/// The postmaster named in `pidfile` (first line), if it names a plausible pid.
pub fn postmaster_from_pidfile(pidfile: &Path) -> Option<i32> {
    std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        .filter(|p| *p > 1)
}

/// Whether `pid` is a running PostgreSQL process (not a pid a stale pidfile names that the
/// kernel has given to something else since).
pub fn is_postgres(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "postgres")
}

/// Fence: kill the postmaster named in `pidfile` and all its backends.
pub fn fire(pidfile: &Path) {
    match postmaster_from_pidfile(pidfile).filter(|pid| is_postgres(*pid)) {
        Some(pid) => {
            let backends = kill_postmaster(pid);
            error!(
                pid,
                backends, "fenced: killed the postmaster and its backends"
            );
        }
        None => warn!(pidfile = %pidfile.display(), "fence fired, but no postmaster is running"),
    }
}

/// A process named by pid and its start time (clock ticks after boot, field 22 of
/// `/proc/<pid>/stat`), so a recycled pid is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinned {
    pid: i32,
    start: u64,
}

/// The start time of process `pid`, if it exists.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name start at field 3 (state); starttime is field 22.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

impl Pinned {
    /// The postmaster `pidfile` names now, if it runs.
    pub fn from_pidfile(pidfile: &Path) -> Option<Pinned> {
        let pid = postmaster_from_pidfile(pidfile)?;
        Some(Pinned {
            pid,
            start: start_time(pid)?,
        })
    }

    /// Still the same process (not exited, its pid not reused).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }

    /// Fence it and its backends, if it is still the same process.
    pub fn fire(&self) {
        if self.alive() {
            let backends = kill_postmaster(self.pid);
            error!(
                pid = self.pid,
                backends,
                "fenced: killed the postmaster its dead agent left running, and its backends"
            );
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
    // Set when the agent died while armed: what it left running (None: nothing).
    let mut orphan: Option<Option<Pinned>> = None;
    info!(fifo = %args.fifo.display(), timeout_s = timeout.as_secs(), "softdog ready");
    let mut buf = [0u8; 256];
    loop {
        if orphan.is_some() {
            std::thread::sleep(Duration::from_millis(100));
        } else {
            let ready = {
                let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
                poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0)
            };
            // Checked right before reading: once the agent is gone, every byte on the FIFO is
            // a successor's.
            if getppid() != parent {
                let pinned = Pinned::from_pidfile(&args.pidfile);
                if timer.armed() {
                    warn!(
                        postmaster = pinned.map(|p| p.pid),
                        "softdog: the agent died while armed; guarding only the postmaster it left, until the deadline"
                    );
                }
                orphan = Some(pinned);
                continue;
            }
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
        }
        if timer.expired(Instant::now()) {
            match &orphan {
                None => fire(&args.pidfile),
                Some(Some(pinned)) => pinned.fire(),
                Some(None) => {}
            }
        }
        // The agent is gone: nothing more will feed us. Stay only while a fire is still due at
        // a postmaster it left running.
        if let Some(pinned) = &orphan
            && (!timer.armed() || !pinned.is_some_and(|p| p.alive()))
        {
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
    fn a_pinned_postmaster_is_fired_at_only_while_it_is_the_same_process() {
        use std::os::unix::process::ExitStatusExt;
        let dir = std::env::temp_dir().join(format!("pgwarden-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("postmaster.pid");
        let mut old = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        std::fs::write(&pidfile, format!("{}\n/data\n", old.id())).unwrap();
        let pinned = Pinned::from_pidfile(&pidfile).expect("a running process");
        assert!(pinned.alive());
        // A successor's postmaster now owns the pidfile; the pin still names the old one.
        let mut new = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        std::fs::write(&pidfile, format!("{}\n/data\n", new.id())).unwrap();
        old.kill().unwrap();
        old.wait().unwrap();
        assert!(!pinned.alive(), "an exited process is not alive");
        pinned.fire();
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            new.try_wait().unwrap().is_none(),
            "fired at a postmaster it did not pin"
        );
        let pinned_new = Pinned::from_pidfile(&pidfile).unwrap();
        pinned_new.fire();
        assert_eq!(new.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert!(Pinned::from_pidfile(&dir.join("missing")).is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn expiry_kills_the_postmaster_and_backends_outside_its_group() {
        use std::os::unix::process::{CommandExt, ExitStatusExt};
        let dir = std::env::temp_dir().join(format!("pgwarden-sd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A stand-in postmaster whose "backend" left its process group with setsid, as
        // PostgreSQL's backends do.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "setsid sleep 300 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pm = child.id() as i32;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let backend = loop {
            if let Some(b) = children_of(pm).first() {
                break *b;
            }
            assert!(std::time::Instant::now() < deadline, "no backend appeared");
            std::thread::sleep(Duration::from_millis(20));
        };
        let pidfile = dir.join("postmaster.pid");
        std::fs::write(&pidfile, format!("{pm}\n/data\n")).unwrap();
        // Not a postgres process: a stale pidfile naming a recycled pid is left alone.
        fire(&pidfile);
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            child.try_wait().unwrap().is_none(),
            "fired at a non-postgres pid"
        );
        kill_postmaster(pm);
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::fs::read_to_string(format!("/proc/{backend}/stat"))
                .map(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.trim_start().starts_with('Z'))
                        .unwrap_or(true)
                })
                .unwrap_or(true)
        });
        assert!(gone, "the backend outside the process group survived");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
