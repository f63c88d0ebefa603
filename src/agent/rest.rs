//! The Patroni-compatible REST API on port 8008: health probes (GET/HEAD/OPTIONS → 200 or 503
//! with the status JSON), read endpoints, and token-protected write endpoints with Patroni's
//! status codes and messages. Handlers read a snapshot the HA loop publishes after every cycle;
//! the only writes go to the DCS (the switchover key), never to PostgreSQL directly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, RwLock};

use crate::agent::dcs::{Dcs, HistoryEntry, SwitchoverKey};
use crate::agent::postgres::ReplicationRow;
use crate::api::member::{MemberRole, MemberState, MemberStatus, MemberTags};

/// What the HA loop publishes for the API after each cycle.
#[derive(Debug, Clone)]
pub struct RestView {
    pub cluster: String,
    pub me: String,
    pub role: MemberRole,
    pub state: MemberState,
    pub holds_lease: bool,
    pub lease_holder: Option<String>,
    pub timeline: Option<u32>,
    pub lsn: Option<u64>,
    pub received_lsn: Option<u64>,
    pub replayed_lsn: Option<u64>,
    pub streaming: bool,
    /// WAL replay paused (`pg_wal_replay_pause()`).
    pub replay_paused: bool,
    /// Commit time of the last transaction replayed, epoch seconds.
    pub replayed_timestamp: Option<f64>,
    /// Restoring from the archive instead of streaming.
    pub archive_recovery: bool,
    pub leader_optime: Option<u64>,
    pub tags: MemberTags,
    pub paused: bool,
    pub pending_restart: bool,
    pub sysid: Option<String>,
    pub members: Vec<(String, MemberStatus)>,
    pub history: Vec<HistoryEntry>,
    pub sync_standbys: Vec<String>,
    pub replication: Vec<ReplicationRow>,
    pub ttl: Duration,
    pub loop_wait: Duration,
    pub maximum_lag_on_failover: u64,
    pub last_cycle: Instant,
    pub dcs_last_seen: i64,
    pub server_version: Option<i64>,
    pub failsafe_mode: bool,
    /// The leader that last pinged `POST /failsafe`, and when.
    pub failsafe_ping: Option<(String, Instant)>,
    /// A scheduled switchover: (at, from, to).
    pub scheduled_switchover: Option<(String, Option<String>, Option<String>)>,
    /// Counters and clocks for `/metrics`, shared with the HA loop and the fencing task.
    pub telemetry: Arc<crate::agent::metrics::Telemetry>,
}

/// Epoch seconds as Patroni prints `replayed_timestamp` (RFC 3339, microseconds).
fn epoch_to_text(secs: f64) -> Option<String> {
    let ts = jiff::Timestamp::from_microsecond((secs * 1e6).round() as i64).ok()?;
    Some(ts.to_string())
}

impl RestView {
    pub fn new(
        cluster: &str,
        me: &str,
        ttl: Duration,
        loop_wait: Duration,
        maximum_lag_on_failover: u64,
    ) -> Self {
        Self {
            cluster: cluster.into(),
            me: me.into(),
            role: MemberRole::Uninitialized,
            state: MemberState::Stopped,
            holds_lease: false,
            lease_holder: None,
            timeline: None,
            lsn: None,
            received_lsn: None,
            replayed_lsn: None,
            streaming: false,
            replay_paused: false,
            replayed_timestamp: None,
            archive_recovery: false,
            leader_optime: None,
            tags: MemberTags::default(),
            paused: false,
            pending_restart: false,
            sysid: None,
            members: vec![],
            history: vec![],
            sync_standbys: vec![],
            replication: vec![],
            ttl,
            loop_wait,
            maximum_lag_on_failover,
            last_cycle: Instant::now(),
            dcs_last_seen: 0,
            server_version: None,
            failsafe_mode: false,
            scheduled_switchover: None,
            failsafe_ping: None,
            telemetry: Default::default(),
        }
    }

    pub(crate) fn is_primary(&self) -> bool {
        self.role == MemberRole::Primary && self.holds_lease && self.state == MemberState::Running
    }

    pub(crate) fn is_running_replica(&self) -> bool {
        self.role == MemberRole::Replica && self.state == MemberState::Running
    }

    /// Bytes this replica is behind the primary's last published position.
    pub(crate) fn lag(&self) -> Option<u64> {
        let last = self.leader_optime.max(self.received_lsn)?;
        Some(last.saturating_sub(self.replayed_lsn.unwrap_or(0)))
    }

    /// `GET /patroni` and the body of every health endpoint.
    pub fn status_json(&self) -> Value {
        let mut v = json!({
            "state": self.state,
            "role": self.role,
            "patroni": {"version": env!("CARGO_PKG_VERSION"), "scope": self.cluster, "name": self.me},
            "dcs_last_seen": self.dcs_last_seen,
        });
        let o = v.as_object_mut().expect("object");
        if let Some(sv) = self.server_version {
            o.insert("server_version".into(), json!(sv));
        }
        if let Some(tl) = self.timeline {
            o.insert("timeline".into(), json!(tl));
        }
        if let Some(sysid) = &self.sysid {
            o.insert("database_system_identifier".into(), json!(sysid));
        }
        match self.role {
            MemberRole::Primary => {
                o.insert("xlog".into(), json!({"location": self.lsn}));
                o.insert("replication".into(), json!(self.replication));
            }
            _ => {
                o.insert(
                    "xlog".into(),
                    json!({
                        "received_location": self.received_lsn,
                        "replayed_location": self.replayed_lsn,
                        "replayed_timestamp": self.replayed_timestamp.and_then(epoch_to_text),
                        "paused": self.replay_paused,
                    }),
                );
                if self.streaming {
                    o.insert("replication_state".into(), json!("streaming"));
                } else if self.archive_recovery {
                    o.insert("replication_state".into(), json!("in archive recovery"));
                }
            }
        }
        if self.lease_holder.is_none() {
            o.insert("cluster_unlocked".into(), json!(true));
        }
        if self.paused {
            o.insert("pause".into(), json!(true));
        }
        if self.pending_restart {
            o.insert("pending_restart".into(), json!(true));
        }
        if self.tags != MemberTags::default() {
            o.insert("tags".into(), json!(self.tags));
        }
        if !self.sync_standbys.is_empty() {
            o.insert(
                "sync_standby".into(),
                json!(self.sync_standbys.contains(&self.me)),
            );
        }
        v
    }

    /// `GET /cluster`.
    pub fn cluster_json(&self) -> Value {
        let members: Vec<Value> = self
            .members
            .iter()
            .map(|(name, s)| {
                let role = if self.lease_holder.as_deref() == Some(name) {
                    "leader"
                } else if self.sync_standbys.contains(name) {
                    "sync_standby"
                } else {
                    "replica"
                };
                let (host, port) = crate::api::member::url_host_port(&s.conn_url).unwrap_or_default();
                let mut m = json!({
                    "name": name, "role": role, "state": match (role, &s.replication_state) {
                        ("leader", _) | (_, None) => serde_json::to_value(s.state).unwrap_or(Value::Null),
                        (_, Some(rs)) => json!(rs),
                    },
                    "api_url": s.api_url, "host": host, "port": port,
                });
                let o = m.as_object_mut().expect("object");
                if let Some(tl) = s.timeline {
                    o.insert("timeline".into(), json!(tl));
                }
                if s.tags != MemberTags::default() {
                    o.insert("tags".into(), json!(s.tags));
                }
                if s.pending_restart {
                    o.insert("pending_restart".into(), json!(true));
                }
                if role == "leader" {
                    o.insert("lsn".into(), json!(s.xlog_location));
                } else if let (Some(leader), Some(lsn)) = (self.leader_optime, s.xlog_location) {
                    o.insert("lsn".into(), json!(lsn));
                    o.insert("lag".into(), json!(leader.saturating_sub(lsn)));
                }
                m
            })
            .collect();
        let mut v = json!({"members": members, "scope": self.cluster});
        if let Some((at, from, to)) = &self.scheduled_switchover {
            v["scheduled_switchover"] = json!({"at": at, "from": from, "to": to});
        }
        if self.paused {
            v["pause"] = json!(true);
        }
        v
    }
}

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

/// Patroni's parsing of a schedule: a timestamp with a timezone, in the future; the refusal is
/// the status and message to answer.
fn parse_schedule(raw: &str, what: &str) -> Result<jiff::Timestamp, (StatusCode, String)> {
    match raw.parse::<jiff::Timestamp>() {
        Ok(t) if t <= jiff::Timestamp::now() => Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Cannot schedule {what} in the past"),
        )),
        Ok(t) => Ok(t),
        Err(_) if raw.parse::<jiff::civil::DateTime>().is_ok() => Err((
            StatusCode::BAD_REQUEST,
            format!("Timezone information is mandatory for the scheduled {what}"),
        )),
        Err(e) => Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "Unable to parse scheduled timestamp ({e}). It should be in an unambiguous format, e.g. ISO 8601"
            ),
        )),
    }
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

/// Health endpoints: GET, HEAD and OPTIONS, 200 or 503.
pub const HEALTH_PATHS: &[&str] = &[
    "/",
    "/primary",
    "/master",
    "/leader",
    "/read-write",
    "/replica",
    "/read-only",
    "/health",
    "/liveness",
    "/readiness",
    "/sync",
    "/synchronous",
    "/async",
    "/asynchronous",
];

/// Every other route and its methods; `openapi/agent.yaml` must describe exactly these.
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/patroni", &["get"]),
    ("/cluster", &["get"]),
    ("/history", &["get"]),
    ("/metrics", &["get"]),
    ("/config", &["get"]),
    ("/switchover", &["post", "delete"]),
    ("/failover", &["post"]),
    ("/restart", &["post", "delete"]),
    ("/reload", &["post"]),
    ("/reinitialize", &["post"]),
    ("/failsafe", &["post"]),
];

pub fn router(ctx: Arc<RestContext>) -> Router {
    let mut r = Router::new();
    for path in HEALTH_PATHS {
        r = r.route(path, any(health_check));
    }
    r.route("/patroni", get(patroni))
        .route("/cluster", get(cluster))
        .route("/history", get(history))
        .route("/metrics", get(metrics))
        .route("/config", get(config))
        .route("/switchover", post(switchover).delete(delete_switchover))
        .route("/failover", post(failover))
        .route("/restart", post(restart).delete(delete_restart))
        .route("/reload", post(reload))
        .route("/reinitialize", post(reinitialize))
        .route("/failsafe", post(failsafe))
        .fallback(not_found)
        .with_state(ctx)
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "no such endpoint"})),
    )
        .into_response()
}

/// Query parameters of the health endpoints.
#[derive(Debug, Deserialize, Default)]
pub struct HealthQuery {
    lag: Option<String>,
    replication_state: Option<String>,
    #[serde(flatten)]
    rest: BTreeMap<String, String>,
}

/// Patroni's lag syntax: bytes, or a number with kB/MB/GB.
pub fn parse_lag(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "tb" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The health rule for `path`: 200 when this member fits.
pub fn health_ok(
    view: &RestView,
    path: &str,
    q: &HealthQuery,
    now: Instant,
) -> Result<bool, String> {
    // Bad parameters are the caller's error, whatever this member's role.
    let max_lag = match &q.lag {
        Some(lag) => Some(parse_lag(lag).ok_or_else(|| {
            format!("invalid lag value {lag:?}: use bytes, or a number with kB, MB or GB")
        })?),
        None => None,
    };
    let replica_ok = |view: &RestView| -> Result<bool, String> {
        if !view.is_running_replica() || view.tags.noloadbalance {
            return Ok(false);
        }
        if let Some(max) = max_lag
            && view.lag().is_some_and(|l| l > max)
        {
            return Ok(false);
        }
        if let Some(rs) = &q.replication_state
            && (rs != "streaming" || !view.streaming)
        {
            return Ok(false);
        }
        // ?tag_key=value filters on tags.
        for (k, v) in &q.rest {
            if let Some(tag) = k.strip_prefix("tag_") {
                let have = match tag {
                    "nofailover" => Some(view.tags.nofailover.to_string()),
                    "nosync" => Some(view.tags.nosync.to_string()),
                    "noloadbalance" => Some(view.tags.noloadbalance.to_string()),
                    other => view.tags.other.get(other).map(|x| match x {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }),
                };
                if have.as_deref() != Some(v.as_str()) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    };
    let in_sync = view.sync_standbys.contains(&view.me);
    Ok(match path {
        "/" | "/primary" | "/master" | "/read-write" => view.is_primary(),
        "/leader" => view.holds_lease,
        "/replica" => replica_ok(view)?,
        "/read-only" => view.is_primary() || replica_ok(view)?,
        "/sync" | "/synchronous" => in_sync && replica_ok(view)?,
        "/async" | "/asynchronous" => !in_sync && replica_ok(view)?,
        "/health" => view.state == MemberState::Running,
        "/liveness" => {
            let limit = if view.role == MemberRole::Primary {
                view.ttl
            } else {
                view.ttl * 2
            };
            view.paused || now.duration_since(view.last_cycle) < limit
        }
        "/readiness" => {
            view.is_primary()
                || (view.is_running_replica()
                    && view.streaming
                    && view
                        .lag()
                        .is_none_or(|l| l <= max_lag.unwrap_or(view.maximum_lag_on_failover)))
        }
        _ => false,
    })
}

async fn health_check(
    State(ctx): State<Arc<RestContext>>,
    method: Method,
    uri: axum::http::Uri,
    query: Result<Query<HealthQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": e.body_text()})),
            )
                .into_response();
        }
    };
    let view = ctx.view.read().await;
    let code = match health_ok(&view, uri.path(), &q, Instant::now()) {
        Ok(true) => StatusCode::OK,
        Ok(false) => StatusCode::SERVICE_UNAVAILABLE,
        Err(msg) => return (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response(),
    };
    if method == Method::HEAD || method == Method::OPTIONS {
        return code.into_response();
    }
    if method != Method::GET {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            Json(json!({"error": "health endpoints answer GET, HEAD and OPTIONS"})),
        )
            .into_response();
    }
    (code, Json(view.status_json())).into_response()
}

async fn patroni(State(ctx): State<Arc<RestContext>>) -> Response {
    Json(ctx.view.read().await.status_json()).into_response()
}

async fn cluster(State(ctx): State<Arc<RestContext>>) -> Response {
    Json(ctx.view.read().await.cluster_json()).into_response()
}

async fn history(State(ctx): State<Arc<RestContext>>) -> Response {
    Json(json!(ctx.view.read().await.history)).into_response()
}

async fn metrics(State(ctx): State<Arc<RestContext>>) -> Response {
    let v = ctx.view.read().await;
    let body = crate::agent::metrics::render(&v, &v.telemetry.sample(&v));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Header carrying the token when the caller comes through the apiserver's pod proxy
/// (`kubectl pgwarden`): the apiserver authenticates the caller with `Authorization` and strips
/// that header before proxying, so the token needs a header of its own.
pub const TOKEN_HEADER: &str = "x-pgwarden-token";

fn authorized(ctx: &RestContext, headers: &HeaderMap) -> bool {
    let Some(token) = ctx.token.as_deref().filter(|t| !t.is_empty()) else {
        return false;
    };
    if let Some(value) = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) {
        return constant_time_eq(value.trim().as_bytes(), token.as_bytes());
    }
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    if let Some(bearer) = value.strip_prefix("Bearer ") {
        return constant_time_eq(bearer.trim().as_bytes(), token.as_bytes());
    }
    if let Some(basic) = value.strip_prefix("Basic ") {
        use base64::Engine;
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
            return false;
        };
        let decoded = String::from_utf8_lossy(&decoded);
        let password = decoded.split_once(':').map(|(_, p)| p).unwrap_or("");
        return constant_time_eq(password.as_bytes(), token.as_bytes());
    }
    false
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"pgwarden\"")],
        Json(json!({"error": "authentication required: send the token of Secret <cluster>-api as a Bearer token (or in the X-Pgwarden-Token header)"})),
    )
        .into_response()
}

fn text(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, msg.into()).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchoverBody {
    #[serde(default)]
    leader: Option<String>,
    #[serde(default)]
    candidate: Option<String>,
    /// Patroni's alias for `candidate` on /failover.
    #[serde(default)]
    member: Option<String>,
    #[serde(default)]
    scheduled_at: Option<String>,
}

fn parse_body(body: &Bytes) -> Result<SwitchoverBody, String> {
    if body.is_empty() {
        return Err("a JSON body is required".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

async fn switchover(
    State(ctx): State<Arc<RestContext>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    manual_failover(ctx, headers, body, false).await
}

async fn failover(
    State(ctx): State<Arc<RestContext>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    manual_failover(ctx, headers, body, true).await
}

/// Patroni's `do_POST_failover`: validate, write the switchover key, wait for the outcome.
async fn manual_failover(
    ctx: Arc<RestContext>,
    headers: HeaderMap,
    body: Bytes,
    failover: bool,
) -> Response {
    if !authorized(&ctx, &headers) {
        return unauthorized();
    }
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let candidate = b.candidate.or(b.member).filter(|c| !c.is_empty());
    let leader = b.leader.filter(|l| !l.is_empty());
    // A failover that names a leader is a switchover (Patroni).
    let failover = failover && leader.is_none();
    let mut scheduled_at = None;
    if let Some(raw) = b.scheduled_at.as_deref().filter(|s| !s.is_empty()) {
        if failover {
            return text(StatusCode::BAD_REQUEST, "Failover can't be scheduled");
        }
        if ctx.view.read().await.paused {
            return text(
                StatusCode::BAD_REQUEST,
                "Can't schedule switchover in the paused state",
            );
        }
        match parse_schedule(raw, "switchover") {
            Ok(t) => scheduled_at = Some(t),
            Err((code, message)) => return text(code, message),
        }
    }
    if failover && candidate.is_none() {
        return text(
            StatusCode::BAD_REQUEST,
            "Failover could be performed only to a specific candidate",
        );
    }
    if !failover && leader.is_none() {
        return text(
            StatusCode::BAD_REQUEST,
            "Switchover could be performed only from a specific leader",
        );
    }
    if leader.is_some() && leader == candidate {
        return text(
            StatusCode::BAD_REQUEST,
            "Switchover target and source are the same",
        );
    }
    // Validate against the DCS as it is now, not the last cycle's snapshot.
    let loop_wait = ctx.view.read().await.loop_wait;
    let (members, holder) = match ctx.dcs.lock().await.read().await {
        Ok(snap) => (snap.members.clone(), snap.holder().map(str::to_string)),
        Err(_) => return text(StatusCode::SERVICE_UNAVAILABLE, "the DCS cannot be read"),
    };
    if let Some(l) = &leader
        && holder.as_deref() != Some(l.as_str())
    {
        return text(
            StatusCode::PRECONDITION_FAILED,
            "leader name does not match",
        );
    }
    let action = if failover { "failover" } else { "switchover" };
    if let Some(c) = &candidate {
        match members.iter().find(|(n, _)| n == c) {
            None => return text(StatusCode::PRECONDITION_FAILED, "candidate does not exists"),
            Some((_, s)) if s.tags.nofailover || s.state != MemberState::Running => {
                return text(
                    StatusCode::PRECONDITION_FAILED,
                    format!("{action} is not possible: no good candidates have been found"),
                );
            }
            _ => {}
        }
    } else if !members.iter().any(|(n, s)| {
        Some(n) != leader.as_ref() && s.state == MemberState::Running && !s.tags.nofailover
    }) {
        return text(
            StatusCode::PRECONDITION_FAILED,
            format!("{action} is not possible: cluster does not have members except leader"),
        );
    }
    let key = SwitchoverKey {
        leader: leader.clone(),
        candidate: candidate.clone(),
        scheduled_at: scheduled_at.map(|t| t.to_string()),
    };
    if ctx.dcs.lock().await.request_switchover(&key).await.is_err() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "failed to write failover key into DCS",
        );
    }
    if scheduled_at.is_some() {
        return text(StatusCode::ACCEPTED, "Switchover scheduled");
    }
    let wait = 2 * loop_wait.max(Duration::from_secs(10));
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let snap = match ctx.dcs.lock().await.read().await {
            Ok(s) => s,
            Err(_) => continue,
        };
        let new_holder = snap.holder().map(str::to_string);
        if let Some(h) = new_holder
            && Some(&h) != leader.as_ref()
            && candidate.as_ref().is_none_or(|c| *c == h)
            && matches!(
                snap.lease,
                crate::agent::ha::LeaseView::Held { expired: false, .. }
            )
        {
            let verb = if failover {
                "failed over"
            } else {
                "switched over"
            };
            return text(StatusCode::OK, format!("Successfully {verb} to \"{h}\""));
        }
        if snap.switchover.is_none() && snap.holder().is_none() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{} failed", capitalize(action)),
            );
        }
    }
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "{} status unknown after {} seconds",
            capitalize(action),
            wait.as_secs()
        ),
    )
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

async fn config(State(ctx): State<Arc<RestContext>>) -> Response {
    Json(ctx.config.clone()).into_response()
}

/// An optional JSON object body: empty is `{}`; anything else must parse.
fn object_body(body: &Bytes) -> Result<serde_json::Map<String, Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Default::default());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("invalid JSON body: {e}")),
    }
}

async fn send(
    ctx: &RestContext,
    make: impl FnOnce(tokio::sync::oneshot::Sender<(u16, String)>) -> Command,
) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if ctx.commands.send(make(tx)).await.is_err() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is shutting down",
        );
    }
    match tokio::time::timeout(Duration::from_secs(120), rx).await {
        Ok(Ok((code, msg))) => text(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            msg,
        ),
        _ => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no answer from the agent in time",
        ),
    }
}

/// `POST /restart`: `role` and `restart_pending` are conditions, as in Patroni; scheduling is
/// not supported yet and says so.
async fn restart(State(ctx): State<Arc<RestContext>>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&ctx, &headers) {
        return unauthorized();
    }
    let b = match object_body(&body) {
        Ok(b) => b,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    for key in b.keys() {
        if ![
            "schedule",
            "role",
            "postgres_version",
            "timeout",
            "restart_pending",
        ]
        .contains(&key.as_str())
        {
            return text(
                StatusCode::BAD_REQUEST,
                format!("unknown filter for the restart: {key}"),
            );
        }
    }
    if let Some(raw) = b.get("schedule").filter(|v| !v.is_null()) {
        let Some(raw) = raw.as_str() else {
            return text(StatusCode::BAD_REQUEST, "schedule must be a string");
        };
        let at = match parse_schedule(raw, "restart") {
            Ok(t) => t,
            Err((code, message)) => return text(code, message),
        };
        if ctx.view.read().await.paused {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Can't schedule restart in the paused state",
            );
        }
        let role = match b.get("role").and_then(Value::as_str) {
            None => None,
            Some("primary" | "master" | "leader") => Some(MemberRole::Primary),
            Some("replica") => Some(MemberRole::Replica),
            Some(other) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("PostgreSQL role should be either primary or replica, not {other}"),
                );
            }
        };
        let restart_pending = b
            .get("restart_pending")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let Ok(mut slot) = ctx.scheduled_restart.lock() else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "restart state unavailable");
        };
        if slot.is_some() {
            return text(StatusCode::CONFLICT, "Another restart is already scheduled");
        }
        *slot = Some(ScheduledRestart {
            at,
            role,
            restart_pending,
        });
        return text(StatusCode::ACCEPTED, "Restart scheduled");
    }
    {
        let v = ctx.view.read().await;
        let role_ok = match b.get("role").and_then(Value::as_str) {
            None => true,
            Some("primary" | "master" | "leader") => v.role == MemberRole::Primary,
            Some("replica") => v.role == MemberRole::Replica,
            Some(other) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("PostgreSQL role should be either primary or replica, not {other}"),
                );
            }
        };
        let pending_ok = !b
            .get("restart_pending")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            || v.pending_restart;
        if !role_ok || !pending_ok {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "restart conditions are not satisfied",
            );
        }
    }
    send(&ctx, |reply| Command::Restart { reply }).await
}

async fn delete_restart(State(ctx): State<Arc<RestContext>>, headers: HeaderMap) -> Response {
    if !authorized(&ctx, &headers) {
        return unauthorized();
    }
    let removed = ctx
        .scheduled_restart
        .lock()
        .map(|mut s| s.take().is_some())
        .unwrap_or(false);
    if removed {
        text(StatusCode::OK, "scheduled restart deleted")
    } else {
        text(StatusCode::NOT_FOUND, "no restarts are scheduled")
    }
}

async fn reload(State(ctx): State<Arc<RestContext>>, headers: HeaderMap) -> Response {
    if !authorized(&ctx, &headers) {
        return unauthorized();
    }
    send(&ctx, |reply| Command::Reload { reply }).await
}

async fn reinitialize(
    State(ctx): State<Arc<RestContext>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&ctx, &headers) {
        return unauthorized();
    }
    if let Err(msg) = object_body(&body) {
        return text(StatusCode::BAD_REQUEST, msg);
    }
    {
        let v = ctx.view.read().await;
        if v.lease_holder.is_none() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "Cluster has no leader, can not reinitialize",
            );
        }
        if v.holds_lease {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "I am the leader, can not reinitialize",
            );
        }
    }
    send(&ctx, |reply| Command::Reinitialize { reply }).await
}

/// `POST /failsafe`: the primary, cut off from the apiserver, asks whether it may stay primary.
async fn failsafe(
    State(ctx): State<Arc<RestContext>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&ctx, &headers) {
        return unauthorized();
    }
    let b = match object_body(&body) {
        Ok(b) => b,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let Some(name) = b
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return text(
            StatusCode::BAD_REQUEST,
            "the body must name the leader: {\"name\": ...}",
        );
    };
    let mut v = ctx.view.write().await;
    if !v.failsafe_mode {
        return text(StatusCode::BAD_GATEWAY, "failsafe mode is not enabled");
    }
    if v.role == MemberRole::Primary {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "Running as a leader");
    }
    v.failsafe_ping = Some((name.to_string(), Instant::now()));
    text(StatusCode::OK, "Accepted")
}

async fn delete_switchover(State(ctx): State<Arc<RestContext>>, headers: HeaderMap) -> Response {
    if !authorized(&ctx, &headers) {
        return unauthorized();
    }
    let dcs = ctx.dcs.lock().await;
    match dcs
        .update_state(|d| d.remove(crate::agent::dcs::keys::SWITCHOVER).is_some())
        .await
    {
        Ok(true) => text(StatusCode::OK, "scheduled switchover deleted"),
        Ok(false) => text(StatusCode::NOT_FOUND, "no switchover is scheduled"),
        Err(_) => text(StatusCode::CONFLICT, "failed to delete the switchover key"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> RestView {
        let mut v = RestView::new(
            "main",
            "main-1",
            Duration::from_secs(8),
            Duration::from_secs(2),
            1 << 20,
        );
        v.role = MemberRole::Replica;
        v.state = MemberState::Running;
        v.streaming = true;
        v.lease_holder = Some("main-0".into());
        v.leader_optime = Some(1000);
        v.received_lsn = Some(1000);
        v.replayed_lsn = Some(900);
        v
    }

    fn q(lag: Option<&str>) -> HealthQuery {
        HealthQuery {
            lag: lag.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn replica_answers_replica_not_primary() {
        let v = view();
        let now = Instant::now();
        assert_eq!(health_ok(&v, "/replica", &q(None), now), Ok(true));
        assert_eq!(health_ok(&v, "/primary", &q(None), now), Ok(false));
        assert_eq!(health_ok(&v, "/master", &q(None), now), Ok(false));
        assert_eq!(health_ok(&v, "/read-only", &q(None), now), Ok(true));
        assert_eq!(health_ok(&v, "/readiness", &q(None), now), Ok(true));
    }

    #[test]
    fn primary_needs_the_lease() {
        let mut v = view();
        v.role = MemberRole::Primary;
        let now = Instant::now();
        assert_eq!(
            health_ok(&v, "/primary", &q(None), now),
            Ok(false),
            "no lease, no /primary"
        );
        v.holds_lease = true;
        assert_eq!(health_ok(&v, "/primary", &q(None), now), Ok(true));
        assert_eq!(health_ok(&v, "/replica", &q(None), now), Ok(false));
    }

    #[test]
    fn lag_filter_uses_patronis_units() {
        let v = view();
        let now = Instant::now();
        assert_eq!(health_ok(&v, "/replica", &q(Some("50")), now), Ok(false));
        assert_eq!(health_ok(&v, "/replica", &q(Some("1kB")), now), Ok(true));
        assert!(health_ok(&v, "/replica", &q(Some("lots")), now).is_err());
        assert_eq!(parse_lag("16MB"), Some(16 << 20));
    }

    #[test]
    fn noloadbalance_keeps_a_replica_out() {
        let mut v = view();
        v.tags.noloadbalance = true;
        assert_eq!(
            health_ok(&v, "/replica", &q(None), Instant::now()),
            Ok(false)
        );
    }

    #[test]
    fn liveness_fails_when_the_loop_is_stuck() {
        let v = view();
        assert_eq!(
            health_ok(
                &v,
                "/liveness",
                &q(None),
                v.last_cycle + Duration::from_secs(1)
            ),
            Ok(true)
        );
        assert_eq!(
            health_ok(
                &v,
                "/liveness",
                &q(None),
                v.last_cycle + Duration::from_secs(17)
            ),
            Ok(false)
        );
    }
}

#[cfg(test)]
mod auth_tests {
    use super::*;

    fn ctx(token: Option<&str>) -> RestContext {
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let (commands, _rx) = tokio::sync::mpsc::channel(1);
        RestContext {
            view: RwLock::new(RestView::new(
                "c",
                "c-0",
                Duration::from_secs(8),
                Duration::from_secs(2),
                1 << 20,
            )),
            dcs: Mutex::new(Dcs::new(
                client,
                "ns",
                "c",
                "c-0",
                Duration::from_secs(8),
                Duration::from_secs(1),
            )),
            token: token.map(str::to_string),
            commands,
            config: json!({}),
            scheduled_restart: Default::default(),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn basic(password: &str) -> String {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("patroni:{password}"))
        )
    }

    /// `GET /metrics` renders the view and the telemetry the HA loop shares with it.
    #[tokio::test]
    async fn metrics_are_prometheus_text_from_the_view() {
        use axum::body::Body;
        use axum::http::Request;
        use tower::ServiceExt;

        let c = Arc::new(ctx(None));
        {
            let mut v = c.view.write().await;
            v.role = MemberRole::Primary;
            v.state = MemberState::Running;
            v.holds_lease = true;
            v.lease_holder = Some("c-0".into());
            v.telemetry
                .fenced(crate::agent::metrics::FencingReason::RenewFailed);
        }
        let req = Request::builder()
            .uri("/metrics")
            .body(Body::empty())
            .unwrap();
        let resp = router(c).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/plain; version=0.0.4"
        );
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains("\npatroni_primary{scope=\"c\",name=\"c-0\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "\npgwarden_fencing_total{scope=\"c\",name=\"c-0\",reason=\"renew_failed\"} 1\n"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn bearer_and_basic_carry_the_token() {
        let c = ctx(Some("s3cret"));
        assert!(authorized(
            &c,
            &headers(&[("authorization", "Bearer s3cret")])
        ));
        assert!(authorized(
            &c,
            &headers(&[("authorization", &basic("s3cret"))])
        ));
        assert!(!authorized(
            &c,
            &headers(&[("authorization", "Bearer wrong")])
        ));
        assert!(!authorized(
            &c,
            &headers(&[("authorization", &basic("wrong"))])
        ));
        assert!(!authorized(&c, &headers(&[])));
    }

    /// Through the apiserver's pod proxy `Authorization` never reaches the pod (the apiserver
    /// consumes it), so `kubectl pgwarden` sends the token as `X-Pgwarden-Token`.
    #[tokio::test]
    async fn the_token_header_is_a_third_accepted_form() {
        let c = ctx(Some("s3cret"));
        assert!(authorized(&c, &headers(&[("X-Pgwarden-Token", "s3cret")])));
        assert!(authorized(
            &c,
            &headers(&[("x-pgwarden-token", " s3cret ")])
        ));
        assert!(!authorized(&c, &headers(&[("X-Pgwarden-Token", "wrong")])));
        assert!(!authorized(&c, &headers(&[("X-Pgwarden-Token", "")])));
        // A wrong header token is not rescued by a right Authorization, nor the reverse: the
        // header, when present, decides.
        assert!(!authorized(
            &c,
            &headers(&[
                ("X-Pgwarden-Token", "wrong"),
                ("authorization", "Bearer s3cret")
            ])
        ));
        // Without a configured token nothing is authorised, whatever the header says.
        assert!(!authorized(
            &ctx(None),
            &headers(&[("X-Pgwarden-Token", "")])
        ));
        assert!(!authorized(
            &ctx(Some("")),
            &headers(&[("X-Pgwarden-Token", "")])
        ));
    }
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[test]
    fn health_query_parses_lag_and_tags() {
        let uri: axum::http::Uri = "/replica?lag=lots&tag_zone=a".parse().unwrap();
        let Query(q) = Query::<HealthQuery>::try_from_uri(&uri).unwrap();
        assert_eq!(q.lag.as_deref(), Some("lots"));
        assert_eq!(q.rest.get("tag_zone").map(String::as_str), Some("a"));
    }
}

#[cfg(test)]
mod openapi_tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    fn documented() -> BTreeSet<(String, String)> {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/agent.yaml"))
                .unwrap();
        let doc: Value = serde_saphyr::from_str(&text).expect("openapi/agent.yaml parses");
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                out.insert((path.clone(), method.clone()));
            }
        }
        out
    }

    fn served() -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for p in HEALTH_PATHS {
            for m in ["get", "head", "options"] {
                out.insert((p.to_string(), m.to_string()));
            }
        }
        for (p, methods) in ROUTES {
            for m in *methods {
                out.insert((p.to_string(), m.to_string()));
            }
        }
        out
    }

    #[test]
    fn the_openapi_document_describes_exactly_the_served_routes() {
        assert_eq!(documented(), served());
    }

    /// Every documented route is really routed: no 404 or 405 from the server itself. Write
    /// routes are asked without a token, so they answer 401 before touching anything.
    #[tokio::test]
    async fn every_documented_route_is_served() {
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let (commands, _rx) = tokio::sync::mpsc::channel(1);
        let ctx = Arc::new(RestContext {
            view: RwLock::new(RestView::new(
                "c",
                "c-0",
                Duration::from_secs(8),
                Duration::from_secs(2),
                1 << 20,
            )),
            dcs: Mutex::new(Dcs::new(
                client,
                "ns",
                "c",
                "c-0",
                Duration::from_secs(8),
                Duration::from_secs(1),
            )),
            token: Some("t".into()),
            commands,
            config: json!({}),
            scheduled_restart: Default::default(),
        });
        for (path, method) in documented() {
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&path)
                .body(Body::empty())
                .unwrap();
            let code = router(ctx.clone()).oneshot(req).await.unwrap().status();
            assert!(
                code != StatusCode::NOT_FOUND && code != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} answered {code}"
            );
            let documented_codes: Vec<u16> = match method.as_str() {
                "get" | "head" | "options" if HEALTH_PATHS.contains(&path.as_str()) => {
                    vec![200, 503]
                }
                "get" => vec![200],
                _ => vec![401],
            };
            assert!(
                documented_codes.contains(&code.as_u16()),
                "{method} {path} answered {code}"
            );
        }
    }
}
