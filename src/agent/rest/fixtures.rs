//! One way to build views, contexts and requests for the REST tests.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::json;
use tokio::sync::{Mutex, RwLock};
use tower::ServiceExt;

use super::{RestContext, RestView, router};
use crate::agent::dcs::Dcs;
use crate::api::member::{MemberRole, MemberState};

/// A fresh view of member `c-0` in cluster `c`: ttl 8 s, loop_wait 2 s, 1 MiB lag allowed.
pub fn view() -> RestView {
    RestView::new(
        "c",
        "c-0",
        Duration::from_secs(8),
        Duration::from_secs(2),
        1 << 20,
    )
}

/// `main-1`, a running replica streaming from `main-0`, 100 bytes behind.
pub fn replica_view() -> RestView {
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

/// A context around [`view`] whose DCS points nowhere and whose commands go nowhere.
pub fn ctx(token: Option<&str>) -> Arc<RestContext> {
    let client =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let (commands, _rx) = tokio::sync::mpsc::channel(1);
    Arc::new(RestContext {
        view: RwLock::new(view()),
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
    })
}

pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

/// `Authorization: Basic` with Patroni's user name and `password`.
pub fn basic(password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("patroni:{password}"))
    )
}

/// One request through the router → (status, headers, body text).
pub async fn call(
    ctx: &Arc<RestContext>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Body::from(body.to_string())).unwrap();
    let resp = router(ctx.clone()).oneshot(req).await.unwrap();
    let (status, hdrs) = (resp.status(), resp.headers().clone());
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, hdrs, String::from_utf8(body.to_vec()).unwrap())
}
