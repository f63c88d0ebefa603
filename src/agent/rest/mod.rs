//! The Patroni-compatible REST API on port 8008: health probes (GET/HEAD/OPTIONS → 200 or 503
//! with the status JSON), read endpoints, and token-protected write endpoints with Patroni's
//! status codes and messages. Handlers read a snapshot the HA loop publishes after every cycle;
//! the only writes go to the DCS (the switchover key), never to PostgreSQL directly.
//!
//! `router` wires the routes, `auth` guards the write routes, `view` is the published snapshot
//! and its JSON, `health` the probes, `checks` Patroni's refusals (pure), `write` the handlers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use crate::agent::dcs::Dcs;
use crate::api::member::MemberRole;

mod auth;
mod checks;
#[cfg(test)]
mod checks_tests;
#[cfg(test)]
pub(crate) mod fixtures;
mod health;
mod router;
mod view;
mod write;

pub use crate::api::patroni::TOKEN_HEADER;
pub use health::{HealthQuery, health_ok, parse_lag};
pub use router::{HEALTH_PATHS, ROUTES, router};
pub use view::RestView;

pub struct RestContext {
    pub view: RwLock<RestView>,
    /// A DCS handle of the API's own (the HA loop keeps its own), for the switchover key.
    pub dcs: Mutex<Dcs>,
    pub token: Option<String>,
    /// Requests the HA loop carries out (it owns PostgreSQL).
    pub commands: tokio::sync::mpsc::Sender<Command>,
    /// The effective dynamic configuration, for `GET /config`.
    pub config: Value,
    /// A restart scheduled with `POST /restart {"schedule": ...}` (Patroni keeps it per member).
    pub scheduled_restart: std::sync::Mutex<Option<ScheduledRestart>>,
}

/// A restart to run at `at`, if the member then still has `role` and (with `restart_pending`)
/// a pending restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledRestart {
    pub at: jiff::Timestamp,
    pub role: Option<MemberRole>,
    pub restart_pending: bool,
}

/// A write request for the HA loop; it answers `(status, message)` on `reply`.
#[derive(Debug)]
pub enum Command {
    Restart {
        reply: tokio::sync::oneshot::Sender<(u16, String)>,
    },
    Reload {
        reply: tokio::sync::oneshot::Sender<(u16, String)>,
    },
    Reinitialize {
        reply: tokio::sync::oneshot::Sender<(u16, String)>,
    },
}

/// Patroni answers write requests in plain text.
fn text(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, msg.into()).into_response()
}
