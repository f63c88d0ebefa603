//! Talking to the agents' REST API from the operator: health probes for the label updater and
//! the write endpoints (switchover, restart) with the cluster's API token. Short timeouts, no
//! retries: the callers run again on their next round.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::api::names::REST_PORT;

#[derive(Clone)]
pub struct AgentClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl AgentClient {
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    fn url(ip: &str, path: &str) -> String {
        if ip.contains(':') {
            format!("http://[{ip}]:{REST_PORT}{path}")
        } else {
            format!("http://{ip}:{REST_PORT}{path}")
        }
    }

    /// `GET path` on the pod's agent → the status code, `None` when it does not answer in time.
    pub async fn probe(&self, ip: &str, path: &str) -> Option<u16> {
        let uri: hyper::Uri = Self::url(ip, path).parse().ok()?;
        let fut = async {
            let resp = self.client.get(uri).await.ok()?;
            // Drain the body so the connection can be reused.
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            Some(status)
        };
        tokio::time::timeout(self.timeout, fut).await.ok().flatten()
    }

    /// `POST path` with a JSON body and the API token → (status, body), `None` on no answer.
    pub async fn post(
        &self,
        ip: &str,
        path: &str,
        body: &serde_json::Value,
        token: &str,
        timeout: Duration,
    ) -> Option<(u16, String)> {
        let req = hyper::Request::post(Self::url(ip, path))
            .header("Content-Type", "application/json")
            .header("Authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .ok()?;
        let fut = async {
            let resp = self.client.request(req).await.ok()?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            Some((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(timeout, fut).await.ok().flatten()
    }
}
