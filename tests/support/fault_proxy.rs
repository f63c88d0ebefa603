//! An HTTP fault proxy between one agent and the kube-apiserver (integration tier): the agent's
//! kubeconfig points at `http://127.0.0.1:<port>`, the proxy forwards every request to the real
//! apiserver over TLS with the test's own credentials, and the test switches what new requests
//! get: the apiserver's answer (`pass`), an HTTP 500 with a Kubernetes `Status` body as an
//! apiserver whose etcd fails would send (`errors`), or the answer after a delay (`slow`).
//! Streams already open (the agent's Lease watch) keep flowing, as they do on a real apiserver
//! answering 500 to new requests.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

const PASS: u8 = 0;
const ERRORS: u8 = 1;
const SLOW: u8 = 2;

struct Shared {
    client: kube::Client,
    mode: AtomicU8,
    delay_ms: AtomicU64,
    /// Requests answered with an injected 500.
    injected: AtomicU64,
}

pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// A proxy to the apiserver the test's KUBECONFIG names.
    pub async fn start() -> FaultProxy {
        let config = kube::Config::infer().await.expect("KUBECONFIG");
        let shared = Arc::new(Shared {
            client: kube::Client::try_from(config).expect("a client"),
            mode: AtomicU8::new(PASS),
            delay_ms: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultProxy { port, shared }
    }

    /// The kubeconfig server address agents use to go through this proxy.
    pub fn server(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Answer every new request with HTTP 500.
    pub fn errors(&self) {
        self.shared.mode.store(ERRORS, Ordering::SeqCst);
    }

    /// Answer every new request only after `delay`.
    pub fn slow(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        self.shared.mode.store(SLOW, Ordering::SeqCst);
    }

    /// Forward every new request again.
    pub fn pass(&self) {
        self.shared.mode.store(PASS, Ordering::SeqCst);
    }

    /// How many requests got an injected 500 so far.
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::SeqCst)
    }
}

/// Headers that belong to one hop, or that the proxy's own client sets.
const HOP: [HeaderName; 5] = [
    header::HOST,
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::AUTHORIZATION,
];

async fn forward(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    match shared.mode.load(Ordering::SeqCst) {
        ERRORS => {
            shared.injected.fetch_add(1, Ordering::SeqCst);
            let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": "injected by the test's fault proxy",
                "reason": "InternalError", "code": 500});
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "application/json")],
                status.to_string(),
            )
                .into_response();
        }
        SLOW => {
            let ms = shared.delay_ms.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        _ => {}
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = body.collect().await.map(|c| c.to_bytes()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut upstream = http::Request::builder().method(parts.method).uri(path);
    for (k, v) in &parts.headers {
        if !HOP.contains(k) {
            upstream = upstream.header(k, v);
        }
    }
    let Ok(upstream) = upstream.body(kube::client::Body::from(bytes)) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match shared.client.send(upstream).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            parts.headers.remove(header::CONNECTION);
            parts.headers.remove(header::TRANSFER_ENCODING);
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
