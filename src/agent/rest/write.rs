//! The write endpoints (the token is checked by the layer in `auth` before they run): the
//! switchover key in the DCS for switchover/failover, the HA loop for restart, reload and
//! reinitialize, and the view for scheduled restarts and failsafe pings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::checks::{self, ManualFailover};
use super::{Command, RestContext, ScheduledRestart, text};
use crate::agent::dcs::SwitchoverKey;

pub(super) async fn switchover(State(ctx): State<Arc<RestContext>>, body: Bytes) -> Response {
    manual_failover(ctx, body, false).await
}

pub(super) async fn failover(State(ctx): State<Arc<RestContext>>, body: Bytes) -> Response {
    manual_failover(ctx, body, true).await
}

/// Patroni's `do_POST_failover`: validate, write the switchover key, wait for the outcome.
async fn manual_failover(ctx: Arc<RestContext>, body: Bytes, failover: bool) -> Response {
    let (paused, loop_wait, synchronous) = {
        let v = ctx.view.read().await;
        (v.paused, v.loop_wait, v.synchronous_mode)
    };
    let req = match checks::manual_failover_request(&body, failover, paused, jiff::Timestamp::now())
    {
        Ok(req) => req,
        Err(refusal) => return refusal.into_response(),
    };
    // Validate against the DCS as it is now, not the last cycle's snapshot.
    let (members, holder, sync) = match ctx.dcs.lock().await.read().await {
        Ok(snap) => (
            snap.members.clone(),
            snap.holder().map(str::to_string),
            snap.sync.sync_standby.clone(),
        ),
        Err(_) => return text(StatusCode::SERVICE_UNAVAILABLE, "the DCS cannot be read"),
    };
    let sync = synchronous.then_some(sync.as_slice());
    if let Err(refusal) = checks::check_against_members(&req, &members, holder.as_deref(), sync) {
        return refusal.into_response();
    }
    let key = SwitchoverKey {
        leader: req.leader.clone(),
        candidate: req.candidate.clone(),
        scheduled_at: req.scheduled_at.map(|t| t.to_string()),
    };
    if ctx.dcs.lock().await.request_switchover(&key).await.is_err() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "failed to write failover key into DCS",
        );
    }
    if req.scheduled_at.is_some() {
        return text(StatusCode::ACCEPTED, "Switchover scheduled");
    }
    wait_for_new_leader(&ctx, &req, 2 * loop_wait.max(Duration::from_secs(10))).await
}

/// Watch the DCS until the lease moves as asked (200), the request is dropped with no leader
/// left (503), or `wait` runs out (503).
async fn wait_for_new_leader(ctx: &RestContext, req: &ManualFailover, wait: Duration) -> Response {
    let action = req.action();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let snap = match ctx.dcs.lock().await.read().await {
            Ok(s) => s,
            Err(_) => continue,
        };
        let new_holder = snap.holder().map(str::to_string);
        if let Some(h) = new_holder
            && Some(&h) != req.leader.as_ref()
            && req.candidate.as_ref().is_none_or(|c| *c == h)
            && matches!(
                snap.lease,
                crate::agent::ha::LeaseView::Held { expired: false, .. }
            )
        {
            let verb = if req.failover {
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

/// Hand `make`'s command to the HA loop and answer what it answers (within 120 s).
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

/// `POST /restart`: `role` and `restart_pending` are conditions, as in Patroni; with
/// `schedule` the restart is kept (one per member) and the HA loop runs it at its time.
pub(super) async fn restart(State(ctx): State<Arc<RestContext>>, body: Bytes) -> Response {
    let checked = match checks::object_body(&body) {
        Ok(b) => {
            let paused = ctx.view.read().await.paused;
            checks::restart_request(&b, paused, jiff::Timestamp::now())
        }
        Err(refusal) => Err(refusal),
    };
    let req = match checked {
        Ok(req) => req,
        Err(refusal) => return refusal.into_response(),
    };
    if let Some(at) = req.schedule {
        let Ok(mut slot) = ctx.scheduled_restart.lock() else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "restart state unavailable");
        };
        if slot.is_some() {
            return text(StatusCode::CONFLICT, "Another restart is already scheduled");
        }
        *slot = Some(ScheduledRestart {
            at,
            role: req.role,
            restart_pending: req.restart_pending,
        });
        return text(StatusCode::ACCEPTED, "Restart scheduled");
    }
    if let Err(refusal) = req.check_conditions(&*ctx.view.read().await) {
        return refusal.into_response();
    }
    send(&ctx, |reply| Command::Restart { reply }).await
}

pub(super) async fn delete_restart(State(ctx): State<Arc<RestContext>>) -> Response {
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

pub(super) async fn reload(State(ctx): State<Arc<RestContext>>) -> Response {
    send(&ctx, |reply| Command::Reload { reply }).await
}

pub(super) async fn reinitialize(State(ctx): State<Arc<RestContext>>, body: Bytes) -> Response {
    let checked = match checks::object_body(&body) {
        Ok(_) => checks::check_reinitialize(&*ctx.view.read().await),
        Err(refusal) => Err(refusal),
    };
    if let Err(refusal) = checked {
        return refusal.into_response();
    }
    send(&ctx, |reply| Command::Reinitialize { reply }).await
}

/// `POST /failsafe`: the primary, cut off from the apiserver, asks whether it may stay primary.
pub(super) async fn failsafe(State(ctx): State<Arc<RestContext>>, body: Bytes) -> Response {
    let name = match checks::object_body(&body).and_then(|b| checks::failsafe_leader(&b)) {
        Ok(name) => name,
        Err(refusal) => return refusal.into_response(),
    };
    let mut v = ctx.view.write().await;
    if let Err(refusal) = checks::check_failsafe(&v) {
        return refusal.into_response();
    }
    v.failsafe_ping = Some((name, Instant::now()));
    text(StatusCode::OK, "Accepted")
}

pub(super) async fn delete_switchover(State(ctx): State<Arc<RestContext>>) -> Response {
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
    use crate::agent::rest::fixtures::{call, ctx};

    /// A scheduled restart is kept, one at a time, and can be deleted (no DCS, no HA loop).
    #[tokio::test]
    async fn scheduled_restarts_one_at_a_time() {
        let c = ctx(Some("t"));
        let auth = [("authorization", "Bearer t")];
        let at = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(3600))
            .unwrap();
        let body = format!(r#"{{"schedule": "{at}", "role": "replica"}}"#);
        let nothing = (
            "DELETE",
            "",
            StatusCode::NOT_FOUND,
            "no restarts are scheduled",
        );
        let schedule = (
            "POST",
            body.as_str(),
            StatusCode::ACCEPTED,
            "Restart scheduled",
        );
        let again = (
            "POST",
            body.as_str(),
            StatusCode::CONFLICT,
            "Another restart is already scheduled",
        );
        let delete = ("DELETE", "", StatusCode::OK, "scheduled restart deleted");
        let cases = [nothing, schedule, again, delete, nothing, schedule];
        for (method, body, code, msg) in cases {
            let (got, _, text) = call(&c, method, "/restart", &auth, body).await;
            assert_eq!((got, text.as_str()), (code, msg), "{method} {body}");
        }
        let kept = c.scheduled_restart.lock().unwrap().clone();
        assert_eq!(
            kept,
            Some(ScheduledRestart {
                at,
                role: Some(crate::api::member::MemberRole::Replica),
                restart_pending: false,
            })
        );
    }

    /// Refusals come before anything is handed to the HA loop (nobody listens here).
    #[tokio::test]
    async fn refusals_answer_without_the_ha_loop() {
        let c = ctx(Some("t"));
        let auth = [("authorization", "Bearer t")];
        let cases = [
            ("/restart", r#"{"role": "king"}"#, StatusCode::BAD_REQUEST),
            ("/restart", r#"{"bogus": 1}"#, StatusCode::BAD_REQUEST),
            ("/restart", "[1]", StatusCode::BAD_REQUEST),
            (
                "/restart",
                r#"{"role": "primary"}"#,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            ("/reinitialize", "", StatusCode::SERVICE_UNAVAILABLE),
            ("/failsafe", r#"{"name": "c-1"}"#, StatusCode::BAD_GATEWAY),
            ("/switchover", "{not json", StatusCode::BAD_REQUEST),
            ("/failover", "{}", StatusCode::BAD_REQUEST),
        ];
        for (path, body, code) in cases {
            let (got, _, text) = call(&c, "POST", path, &auth, body).await;
            assert_eq!(got, code, "{path} {body}: {text}");
        }
    }
}
