//! The health endpoints (GET, HEAD, OPTIONS → 200 or 503 with the status JSON) and their rule,
//! `health_ok`, with Patroni's query parameters: `lag`, `replication_state`, `tag_*`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{RestContext, RestView};
use crate::api::member::{MemberRole, MemberState};

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
        // A replica whose clients are fenced (it may still be behind -rw) serves no reads yet.
        if !view.is_running_replica() || view.tags.noloadbalance || view.clients_fenced {
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

pub(super) async fn health_check(
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::agent::rest::fixtures::replica_view as view;

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
    fn a_replica_with_fenced_clients_takes_no_reads() {
        let mut v = view();
        v.clients_fenced = true;
        let now = Instant::now();
        assert_eq!(health_ok(&v, "/replica", &q(None), now), Ok(false));
        assert_eq!(health_ok(&v, "/read-only", &q(None), now), Ok(false));
        assert_eq!(health_ok(&v, "/health", &q(None), now), Ok(true), "it runs");
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
