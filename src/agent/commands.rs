//! The REST API's write requests that the loop carries out between two cycles (the handlers
//! only check and queue them): reload, restart (now or scheduled), reinitialize.

use tracing::info;

use super::ha::StopMode;
use super::rest;
use super::{Agent, Upstream};
use crate::api::member::{MemberRole, MemberState};

impl Agent {
    /// A write request from the REST API.
    pub(super) async fn command(&mut self, cmd: rest::Command) {
        match cmd {
            rest::Command::Reload { reply } => {
                let r = self.reload().await;
                let _ = reply.send(match r {
                    Ok(()) => (202, "Reload scheduled".into()),
                    Err(e) => (503, format!("reload failed: {e}")),
                });
            }
            rest::Command::Restart { reply } => {
                let answer = self.restart_postgres().await;
                let _ = reply.send(answer);
            }
            rest::Command::Reinitialize { reply } => {
                // A basebackup already running is started over from empty.
                self.abort_clone().await;
                let _ = self.pg.stop(StopMode::Immediate).await;
                self.upstream = Upstream::Unknown;
                let r = self.pg.wipe().await;
                {
                    let mut v = self.rest.view.write().await;
                    v.state = MemberState::Stopped;
                    v.role = MemberRole::Uninitialized;
                    v.streaming = false;
                }
                let _ = reply.send(match r {
                    Ok(()) => (200, "reinitialize started".into()),
                    Err(e) => (503, format!("reinitialize failed: {e}")),
                });
            }
        }
    }

    /// Stop postgres cleanly and run a cycle, which starts it again in the role the lease says.
    pub(super) async fn restart_postgres(&mut self) -> (u16, String) {
        let primary = self.fence.is_primary();
        self.fence.leaving();
        let stopped = self.pg.stop(StopMode::Fast).await;
        self.upstream = Upstream::Unknown;
        let started = match stopped {
            Ok(()) => self.cycle().await.map(|_| ()),
            Err(e) => Err(e.into()),
        };
        if primary {
            info!("restarted the primary");
        }
        match (started, self.pg.running()) {
            (Ok(()), true) => (200, "restarted successfully".into()),
            (Err(e), _) => (503, format!("restart failed: {e}")),
            (Ok(()), false) => (503, "restart failed".into()),
        }
    }

    /// Run a restart scheduled with `POST /restart {"schedule": ...}` once its time has come and
    /// its conditions (role, pending restart) still hold, as Patroni does.
    pub(super) async fn scheduled_restart_step(&mut self) {
        let due = {
            let Ok(mut slot) = self.rest.scheduled_restart.lock() else {
                return;
            };
            match slot.as_ref() {
                Some(r) if r.at <= jiff::Timestamp::now() => slot.take(),
                _ => None,
            }
        };
        let Some(r) = due else { return };
        let (role_ok, pending_ok) = {
            let v = self.rest.view.read().await;
            (
                r.role.is_none_or(|want| want == v.role),
                !r.restart_pending || v.pending_restart,
            )
        };
        if !role_ok || !pending_ok {
            info!(at = %r.at, "skipping the scheduled restart: its conditions no longer hold");
            return;
        }
        let (code, message) = self.restart_postgres().await;
        info!(at = %r.at, code, message, "scheduled restart");
    }
}
