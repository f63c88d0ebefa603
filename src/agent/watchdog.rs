//! The watchdog a primary arms: it fires `ttl - safetyMargin` seconds after the last keepalive,
//! and the agent feeds it only after a successful lease renew. Two devices speak the Linux
//! watchdog protocol (a byte = keepalive, `V` then close = disarm): the in-pod softdog's FIFO
//! (see `softdog`), or a host device such as `/dev/watchdog`, driven with the real ioctls.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use tracing::{info, warn};

use crate::api::cluster::WatchdogMode;

// <linux/watchdog.h>: libc and nix define none of these.
const WATCHDOG_IOCTL_BASE: u8 = b'W';
#[repr(C)]
#[derive(Default)]
pub struct WatchdogInfo {
    pub options: u32,
    pub firmware_version: u32,
    pub identity: [u8; 32],
}
pub const WDIOF_SETTIMEOUT: u32 = 0x0080;
pub const WDIOF_MAGICCLOSE: u32 = 0x0100;
nix::ioctl_read!(wdioc_getsupport, WATCHDOG_IOCTL_BASE, 0, WatchdogInfo);
nix::ioctl_read!(wdioc_keepalive, WATCHDOG_IOCTL_BASE, 5, libc::c_int);
nix::ioctl_readwrite!(wdioc_settimeout, WATCHDOG_IOCTL_BASE, 6, libc::c_int);
nix::ioctl_read!(wdioc_gettimeout, WATCHDOG_IOCTL_BASE, 7, libc::c_int);

#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    #[error("cannot open watchdog {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("watchdog {path}: {what}")]
    Device { path: String, what: String },
    #[error("watchdog write failed: {0}")]
    Write(std::io::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// The in-pod softdog's FIFO.
    Softdog(PathBuf),
    /// A kernel watchdog device (`/dev/watchdog`); its expiry reboots the node.
    Host(PathBuf),
}

pub struct Watchdog {
    mode: WatchdogMode,
    device: Device,
    timeout: Duration,
    file: Option<File>,
}

impl Watchdog {
    pub fn new(mode: WatchdogMode, device: Device, timeout: Duration) -> Self {
        Self {
            mode,
            device,
            timeout,
            file: None,
        }
    }

    pub fn mode(&self) -> WatchdogMode {
        self.mode
    }

    pub fn is_armed(&self) -> bool {
        self.file.is_some()
    }

    fn path(&self) -> &PathBuf {
        match &self.device {
            Device::Softdog(p) | Device::Host(p) => p,
        }
    }

    /// Could it be armed? `required` mode refuses promotion when not.
    pub fn is_available(&self) -> bool {
        match &self.device {
            Device::Softdog(p) => p.exists(),
            Device::Host(p) => p.exists(),
        }
    }

    /// Arm before promotion and keep it alive; a no-op when off or already armed.
    pub fn activate(&mut self) -> Result<(), WatchdogError> {
        if self.mode == WatchdogMode::Off || self.file.is_some() {
            return self.keepalive();
        }
        let path = self.path().clone();
        let open_err = |source| WatchdogError::Open {
            path: path.display().to_string(),
            source,
        };
        let file = match &self.device {
            // Non-blocking: with no softdog reading, open fails at once instead of hanging.
            Device::Softdog(_) => OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
                .map_err(open_err)?,
            Device::Host(_) => {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(open_err)?;
                configure_device(&f, &path, self.timeout)?;
                f
            }
        };
        info!(device = %path.display(), timeout_s = self.timeout.as_secs(), "watchdog armed");
        self.file = Some(file);
        self.keepalive()
    }

    /// Feed it: only after a successful lease renew.
    pub fn keepalive(&mut self) -> Result<(), WatchdogError> {
        if let Some(f) = self.file.as_mut() {
            f.write_all(b"1").map_err(WatchdogError::Write)?;
        }
        Ok(())
    }

    /// Disarm with the magic close (demotion, pause, clean shutdown).
    pub fn disable(&mut self) {
        if let Some(mut f) = self.file.take() {
            if let Err(e) = f.write_all(b"V") {
                warn!(error = %e, "watchdog magic close failed; it will fire");
            } else {
                info!("watchdog disarmed");
            }
        }
    }
}

/// `WDIOC_GETSUPPORT`, `WDIOC_SETTIMEOUT`, `WDIOC_GETTIMEOUT` as Patroni does: the device must
/// support setting the timeout and the magic close, and not fire later than we asked.
fn configure_device(
    f: &File,
    path: &std::path::Path,
    timeout: Duration,
) -> Result<(), WatchdogError> {
    let fd = f.as_raw_fd();
    let dev = |what: String| WatchdogError::Device {
        path: path.display().to_string(),
        what,
    };
    let mut info = WatchdogInfo::default();
    // SAFETY: fd is an open watchdog device; info is a properly sized, writable struct.
    unsafe { wdioc_getsupport(fd, &mut info) }
        .map_err(|e| dev(format!("WDIOC_GETSUPPORT: {e}")))?;
    if info.options & WDIOF_SETTIMEOUT == 0 {
        return Err(dev("cannot set a timeout".into()));
    }
    if info.options & WDIOF_MAGICCLOSE == 0 {
        return Err(dev("has no magic close".into()));
    }
    let mut secs: libc::c_int = timeout.as_secs().clamp(1, 65535) as libc::c_int;
    // SAFETY: fd is open; secs is a valid c_int the kernel reads and writes.
    unsafe { wdioc_settimeout(fd, &mut secs) }
        .map_err(|e| dev(format!("WDIOC_SETTIMEOUT: {e}")))?;
    let mut actual: libc::c_int = 0;
    // SAFETY: as above.
    unsafe { wdioc_gettimeout(fd, &mut actual) }
        .map_err(|e| dev(format!("WDIOC_GETTIMEOUT: {e}")))?;
    if actual as u64 > timeout.as_secs() {
        return Err(dev(format!(
            "timeout is {actual}s, more than the {}s asked",
            timeout.as_secs()
        )));
    }
    Ok(())
}

/// Feed a host device with the ioctl instead of a write (kept for devices that need it).
pub fn ioctl_keepalive(f: &File) -> nix::Result<()> {
    let mut dummy: libc::c_int = 0;
    // SAFETY: fd is an open watchdog device.
    unsafe { wdioc_keepalive(f.as_raw_fd(), &mut dummy) }.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request numbers must be the kernel's (include/uapi/linux/watchdog.h on x86_64).
    #[test]
    fn ioctl_numbers_match_the_kernel_header() {
        assert_eq!(
            nix::request_code_read!(b'W', 0, std::mem::size_of::<WatchdogInfo>()),
            0x8028_5700
        );
        assert_eq!(
            nix::request_code_read!(b'W', 5, std::mem::size_of::<libc::c_int>()),
            0x8004_5705
        );
        assert_eq!(
            nix::request_code_readwrite!(b'W', 6, std::mem::size_of::<libc::c_int>()),
            0xC004_5706
        );
        assert_eq!(
            nix::request_code_read!(b'W', 7, std::mem::size_of::<libc::c_int>()),
            0x8004_5707
        );
    }

    #[test]
    fn a_host_device_that_is_not_a_watchdog_is_refused() {
        let dir = std::env::temp_dir().join(format!("pgwarden-wd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not-a-watchdog");
        std::fs::write(&path, b"").unwrap();
        let mut w = Watchdog::new(
            WatchdogMode::Required,
            Device::Host(path),
            Duration::from_secs(6),
        );
        let err = w.activate().unwrap_err();
        assert!(err.to_string().contains("WDIOC_GETSUPPORT"), "{err}");
        assert!(!w.is_armed());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn softdog_fifo_gets_keepalives_and_the_magic_close() {
        let dir = std::env::temp_dir().join(format!("pgwarden-wdf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Without a reader the non-blocking open fails at once: no softdog, no arming.
        let mut w = Watchdog::new(
            WatchdogMode::Automatic,
            Device::Softdog(path.clone()),
            Duration::from_secs(6),
        );
        assert!(w.activate().is_err());
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        w.activate().unwrap();
        w.keepalive().unwrap();
        w.disable();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut &reader, &mut got).unwrap();
        assert_eq!(got, b"11V");
        assert!(!w.is_armed());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn mode_off_never_arms() {
        let mut w = Watchdog::new(
            WatchdogMode::Off,
            Device::Softdog("/nonexistent".into()),
            Duration::from_secs(6),
        );
        assert!(w.activate().is_ok());
        assert!(!w.is_armed());
    }
}
