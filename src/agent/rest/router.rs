//! The routes: the health endpoints, the read endpoints, and the write endpoints behind the
//! token layer. `HEALTH_PATHS` and `ROUTES` list them for `openapi/agent.yaml`'s test.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};
use axum::{Json, Router};
use serde_json::json;

use super::health::health_check;
use super::{RestContext, auth, write};
use crate::api::patroni::paths;

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
    (paths::PATRONI, &["get"]),
    (paths::CLUSTER, &["get"]),
    ("/history", &["get"]),
    ("/metrics", &["get"]),
    ("/config", &["get"]),
    (paths::SWITCHOVER, &["post", "delete"]),
    (paths::FAILOVER, &["post"]),
    (paths::RESTART, &["post", "delete"]),
    (paths::RELOAD, &["post"]),
    (paths::REINITIALIZE, &["post"]),
    (paths::FAILSAFE, &["post"]),
];

pub fn router(ctx: Arc<RestContext>) -> Router {
    let writes: [(&str, MethodRouter<Arc<RestContext>>); 6] = [
        (
            paths::SWITCHOVER,
            post(write::switchover).delete(write::delete_switchover),
        ),
        (paths::FAILOVER, post(write::failover)),
        (
            paths::RESTART,
            post(write::restart).delete(write::delete_restart),
        ),
        (paths::RELOAD, post(write::reload)),
        (paths::REINITIALIZE, post(write::reinitialize)),
        (paths::FAILSAFE, post(write::failsafe)),
    ];
    let mut r = Router::new();
    for path in HEALTH_PATHS {
        r = r.route(path, any(health_check));
    }
    // The token layer on each write route's methods only: a method the route does not serve
    // stays 405 (and an unknown path 404), not 401.
    let guard = from_fn_with_state(ctx.clone(), auth::require_token);
    for (path, methods) in writes {
        r = r.route(path, methods.route_layer(guard.clone()));
    }
    r.route(paths::PATRONI, get(patroni))
        .route(paths::CLUSTER, get(cluster))
        .route("/history", get(history))
        .route("/metrics", get(metrics))
        .route("/config", get(config))
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

async fn config(State(ctx): State<Arc<RestContext>>) -> Response {
    Json(ctx.config.clone()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::rest::fixtures::{call, ctx};
    use crate::api::member::{MemberRole, MemberState};

    /// `GET /metrics` renders the view and the telemetry the HA loop shares with it.
    #[tokio::test]
    async fn metrics_are_prometheus_text_from_the_view() {
        let c = ctx(None);
        {
            let mut v = c.view.write().await;
            v.role = MemberRole::Primary;
            v.state = MemberState::Running;
            v.holds_lease = true;
            v.lease_holder = Some("c-0".into());
            v.telemetry
                .fenced(crate::agent::metrics::FencingReason::RenewFailed);
        }
        let (code, headers, text) = call(&c, "GET", "/metrics", &[], "").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/plain; version=0.0.4");
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

    /// An unknown path is 404 with a JSON error, whatever the method and the token.
    #[tokio::test]
    async fn unknown_paths_are_404() {
        let c = ctx(Some("t"));
        for method in ["GET", "POST"] {
            let (code, _, body) = call(&c, method, "/no-such-endpoint", &[], "").await;
            assert_eq!(code, StatusCode::NOT_FOUND);
            assert_eq!(body, r#"{"error":"no such endpoint"}"#);
        }
    }

    /// `/patroni` and a health endpoint serve the view's status document.
    #[tokio::test]
    async fn patroni_and_health_serve_the_status_document() {
        let c = ctx(None);
        let want = c.view.read().await.status_json().to_string();
        let (code, _, body) = call(&c, "GET", "/patroni", &[], "").await;
        assert_eq!((code, body.as_str()), (StatusCode::OK, want.as_str()));
        let (code, _, body) = call(&c, "GET", "/replica", &[], "").await;
        assert_eq!(
            (code, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, want.as_str())
        );
        let (code, _, body) = call(&c, "GET", "/replica?lag=lots", &[], "").await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    }
}

#[cfg(test)]
mod openapi_tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::agent::rest::fixtures::{call, ctx};

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
        let ctx = ctx(Some("t"));
        for (path, method) in documented() {
            let (code, _, _) = call(&ctx, &method.to_uppercase(), &path, &[], "").await;
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
