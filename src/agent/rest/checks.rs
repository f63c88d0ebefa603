//! Patroni's checks of write requests, as pure functions: a request body, the member's view and
//! the DCS as read now go in; the request to carry out, or the refusal (status and Patroni's
//! message, word for word) comes out. The handlers in `write` do the I/O around them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::RestView;
use crate::api::member::{MemberRole, MemberState, MemberStatus};

/// A request refused: the status and the message to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub code: StatusCode,
    pub message: String,
}

impl Refusal {
    fn new(code: StatusCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        super::text(self.code, self.message)
    }
}

/// Patroni's parsing of a schedule: a timestamp with a timezone, after `now`.
pub(super) fn parse_schedule(
    raw: &str,
    what: &str,
    now: jiff::Timestamp,
) -> Result<jiff::Timestamp, Refusal> {
    match raw.parse::<jiff::Timestamp>() {
        Ok(t) if t <= now => Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Cannot schedule {what} in the past"),
        )),
        Ok(t) => Ok(t),
        Err(_) if raw.parse::<jiff::civil::DateTime>().is_ok() => Err(Refusal::bad_request(
            format!("Timezone information is mandatory for the scheduled {what}"),
        )),
        Err(e) => Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "Unable to parse scheduled timestamp ({e}). It should be in an unambiguous format, e.g. ISO 8601"
            ),
        )),
    }
}

/// An optional JSON object body: empty is `{}`; anything else must parse.
pub(super) fn object_body(body: &[u8]) -> Result<Map<String, Value>, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Default::default());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Refusal::bad_request("the body must be a JSON object")),
        Err(e) => Err(Refusal::bad_request(format!("invalid JSON body: {e}"))),
    }
}

/// The body of `POST /switchover` and `POST /failover`.
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

/// A switchover or failover request that passed the checks of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ManualFailover {
    /// A failover (no leader named); a failover that names a leader is a switchover.
    pub failover: bool,
    pub leader: Option<String>,
    pub candidate: Option<String>,
    pub scheduled_at: Option<jiff::Timestamp>,
}

impl ManualFailover {
    /// Patroni's word for it in messages.
    pub fn action(&self) -> &'static str {
        if self.failover {
            "failover"
        } else {
            "switchover"
        }
    }
}

/// Patroni's `do_POST_failover` checks of the body (`failover`: asked on `/failover`; `paused`:
/// maintenance mode), in Patroni's order.
pub(super) fn manual_failover_request(
    body: &[u8],
    failover: bool,
    paused: bool,
    now: jiff::Timestamp,
) -> Result<ManualFailover, Refusal> {
    if body.is_empty() {
        return Err(Refusal::bad_request("a JSON body is required"));
    }
    let b: SwitchoverBody = serde_json::from_slice(body)
        .map_err(|e| Refusal::bad_request(format!("invalid JSON body: {e}")))?;
    let candidate = b.candidate.or(b.member).filter(|c| !c.is_empty());
    let leader = b.leader.filter(|l| !l.is_empty());
    let failover = failover && leader.is_none();
    let mut scheduled_at = None;
    if let Some(raw) = b.scheduled_at.as_deref().filter(|s| !s.is_empty()) {
        if failover {
            return Err(Refusal::bad_request("Failover can't be scheduled"));
        }
        if paused {
            return Err(Refusal::bad_request(
                "Can't schedule switchover in the paused state",
            ));
        }
        scheduled_at = Some(parse_schedule(raw, "switchover", now)?);
    }
    if failover && candidate.is_none() {
        return Err(Refusal::bad_request(
            "Failover could be performed only to a specific candidate",
        ));
    }
    if !failover && leader.is_none() {
        return Err(Refusal::bad_request(
            "Switchover could be performed only from a specific leader",
        ));
    }
    if leader.is_some() && leader == candidate {
        return Err(Refusal::bad_request(
            "Switchover target and source are the same",
        ));
    }
    Ok(ManualFailover {
        failover,
        leader,
        candidate,
        scheduled_at,
    })
}

/// The request against the DCS as read now: the named leader must hold the lease, the
/// candidate (or, unnamed, some member other than the leader) must be running and may fail over.
/// In synchronous mode (`sync_standbys`: the `sync` key's standbys) only a published standby
/// may be switched over to, as in Patroni: any other may lack acknowledged commits.
pub(super) fn check_against_members(
    req: &ManualFailover,
    members: &[(String, MemberStatus)],
    holder: Option<&str>,
    sync_standbys: Option<&[String]>,
) -> Result<(), Refusal> {
    let precondition = |msg: String| Err(Refusal::new(StatusCode::PRECONDITION_FAILED, msg));
    if let Some(l) = &req.leader
        && holder != Some(l.as_str())
    {
        return precondition("leader name does not match".into());
    }
    let action = req.action();
    let fit = |s: &MemberStatus| s.state == MemberState::Running && !s.tags.nofailover;
    if let Some(c) = &req.candidate {
        if !req.failover
            && let Some(sync) = sync_standbys
            && !sync.contains(c)
        {
            return precondition("candidate name does not match with sync_standby".into());
        }
        match members.iter().find(|(n, _)| n == c) {
            None => precondition("candidate does not exists".into()),
            Some((_, s)) if s.tags.nofailover || s.state != MemberState::Running => precondition(
                format!("{action} is not possible: no good candidates have been found"),
            ),
            _ => Ok(()),
        }
    } else if let Some(sync) = sync_standbys {
        if members.iter().any(|(n, s)| sync.contains(n) && fit(s)) {
            Ok(())
        } else {
            precondition(format!(
                "{action} is not possible: can not find sync_standby"
            ))
        }
    } else if !members.iter().any(|(n, s)| {
        Some(n) != req.leader.as_ref() && s.state == MemberState::Running && !s.tags.nofailover
    }) {
        precondition(format!(
            "{action} is not possible: cluster does not have members except leader"
        ))
    } else {
        Ok(())
    }
}

/// A `POST /restart` that passed the checks of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RestartRequest {
    /// Restart then rather than now.
    pub schedule: Option<jiff::Timestamp>,
    /// Only if the member has this role.
    pub role: Option<MemberRole>,
    /// Only if the member has a pending restart.
    pub restart_pending: bool,
}

impl RestartRequest {
    /// An immediate restart's conditions against the member as it is now.
    pub fn check_conditions(&self, view: &RestView) -> Result<(), Refusal> {
        let role_ok = self.role.is_none_or(|r| r == view.role);
        let pending_ok = !self.restart_pending || view.pending_restart;
        if role_ok && pending_ok {
            Ok(())
        } else {
            Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "restart conditions are not satisfied",
            ))
        }
    }
}

/// Patroni's checks of a `POST /restart` body, in Patroni's order (`paused`: maintenance mode,
/// which only refuses a scheduled restart).
pub(super) fn restart_request(
    b: &Map<String, Value>,
    paused: bool,
    now: jiff::Timestamp,
) -> Result<RestartRequest, Refusal> {
    const FILTERS: [&str; 5] = [
        "schedule",
        "role",
        "postgres_version",
        "timeout",
        "restart_pending",
    ];
    if let Some(key) = b.keys().find(|k| !FILTERS.contains(&k.as_str())) {
        return Err(Refusal::bad_request(format!(
            "unknown filter for the restart: {key}"
        )));
    }
    let mut schedule = None;
    if let Some(raw) = b.get("schedule").filter(|v| !v.is_null()) {
        let Some(raw) = raw.as_str() else {
            return Err(Refusal::bad_request("schedule must be a string"));
        };
        schedule = Some(parse_schedule(raw, "restart", now)?);
        if paused {
            return Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Can't schedule restart in the paused state",
            ));
        }
    }
    let role = match b.get("role").and_then(Value::as_str) {
        None => None,
        Some("primary" | "master" | "leader") => Some(MemberRole::Primary),
        Some("replica") => Some(MemberRole::Replica),
        Some(other) => {
            return Err(Refusal::bad_request(format!(
                "PostgreSQL role should be either primary or replica, not {other}"
            )));
        }
    };
    let restart_pending = b
        .get("restart_pending")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(RestartRequest {
        schedule,
        role,
        restart_pending,
    })
}

/// `POST /reinitialize` needs a leader, and not to be it.
pub(super) fn check_reinitialize(view: &RestView) -> Result<(), Refusal> {
    if view.lease_holder.is_none() {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Cluster has no leader, can not reinitialize",
        ));
    }
    if view.holds_lease {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "I am the leader, can not reinitialize",
        ));
    }
    Ok(())
}

/// The leader a `POST /failsafe` body names.
pub(super) fn failsafe_leader(b: &Map<String, Value>) -> Result<String, Refusal> {
    b.get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Refusal::bad_request("the body must name the leader: {\"name\": ...}"))
}

/// Whether this member takes failsafe pings: failsafe mode on, and not a primary itself.
pub(super) fn check_failsafe(view: &RestView) -> Result<(), Refusal> {
    if !view.failsafe_mode {
        return Err(Refusal::new(
            StatusCode::BAD_GATEWAY,
            "failsafe mode is not enabled",
        ));
    }
    if view.role == MemberRole::Primary {
        return Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Running as a leader",
        ));
    }
    Ok(())
}
