//! Asking peers over their REST API (`GET /patroni`, 2 s, no retries) before racing for a free
//! lease, as Patroni's `_is_healthiest_node` does. Unreachable peers simply do not answer.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::agent::ha::PeerAnswer;
use crate::api::member::MemberStatus;

pub struct PeerClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl PeerClient {
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// `GET url` → JSON, or `None` on any failure within the timeout.
    pub async fn get_json(&self, url: &str) -> Option<Value> {
        let uri: hyper::Uri = url.parse().ok()?;
        let fut = async {
            let resp = self.client.get(uri).await.ok()?;
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            serde_json::from_slice(&body).ok()
        };
        tokio::time::timeout(self.timeout, fut).await.ok().flatten()
    }

    /// `POST url` with a JSON body and a bearer token → the status code, or `None`.
    pub async fn post(
        &self,
        url: &str,
        body: &serde_json::Value,
        token: Option<&str>,
    ) -> Option<u16> {
        let mut req = hyper::Request::post(url).header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).ok()?;
        let fut = async {
            self.client
                .request(req)
                .await
                .ok()
                .map(|r| r.status().as_u16())
        };
        tokio::time::timeout(self.timeout, fut).await.ok().flatten()
    }

    /// Failsafe: do all `members` accept this primary? Each `POST /failsafe` must answer 200.
    pub async fn confirm_failsafe(
        &self,
        members: &[(String, MemberStatus)],
        me: &str,
        token: Option<&str>,
    ) -> bool {
        let body = serde_json::json!({ "name": me });
        let asks = members.iter().filter(|(n, _)| n != me).map(|(_, s)| {
            let url = s.api_url.replace("/patroni", "/failsafe");
            let body = body.clone();
            async move { self.post(&url, &body, token).await == Some(200) }
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .all(|ok| ok)
    }

    /// Ask every other member in parallel.
    pub async fn ask_all(&self, members: &[(String, MemberStatus)], me: &str) -> Vec<PeerAnswer> {
        let asks =
            members
                .iter()
                .filter(|(name, _)| name != me)
                .map(|(name, s)| async move {
                    self.get_json(&s.api_url).await.map(|v| answer(name, &v))
                });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// A peer's `/patroni` document as a `PeerAnswer`.
pub fn answer(name: &str, v: &Value) -> PeerAnswer {
    let xlog = &v["xlog"];
    let lsn = xlog["location"].as_u64().or_else(|| {
        xlog["received_location"]
            .as_u64()
            .max(xlog["replayed_location"].as_u64())
    });
    PeerAnswer {
        name: name.to_string(),
        is_primary: v["role"] == "primary" && v["state"] == "running",
        lsn,
        nofailover: v["tags"]["nofailover"].as_bool().unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_answer_takes_the_furthest_position() {
        let v = serde_json::json!({"role": "replica", "state": "running",
            "xlog": {"received_location": 200, "replayed_location": 150}});
        let a = answer("b", &v);
        assert_eq!(a.lsn, Some(200));
        assert!(!a.is_primary);
    }

    #[test]
    fn primary_answer_is_recognised() {
        let v = serde_json::json!({"role": "primary", "state": "running", "xlog": {"location": 7},
            "tags": {"nofailover": true}});
        let a = answer("a", &v);
        assert!(a.is_primary && a.nofailover);
        assert_eq!(a.lsn, Some(7));
    }
}
