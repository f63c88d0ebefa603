//! The one HTTP client for the agents' REST API (port 8008), used by agents asking their peers
//! and by the operator: GET JSON, probe a health endpoint, POST with the API token. Short
//! timeouts, no retries, every failure is `None`: the callers ask again on their next round.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::api::names::REST_PORT;

#[derive(Clone)]
pub struct AgentClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

/// The URL of `path` on the agent at `ip` (IPv6 addresses in brackets).
pub fn agent_url(ip: &str, path: &str) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]:{REST_PORT}{path}")
    } else {
        format!("http://{ip}:{REST_PORT}{path}")
    }
}

impl AgentClient {
    /// `timeout` bounds connecting, and each request unless it is given its own.
    pub fn new(timeout: Duration) -> Self {
        Self::with_connect_timeout(timeout, timeout)
    }

    /// `connect` bounds connecting (a shorter bound tells a dead host from a slow agent: the
    /// kernel of a live host answers a connect at once), `timeout` each request.
    pub fn with_connect_timeout(timeout: Duration, connect: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect.min(timeout)));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// Send `req` and read the whole answer (reading it lets the connection be reused) →
    /// (status, body; `None` when the body broke off), `None` when there is no answer within
    /// `timeout`.
    async fn exchange(
        &self,
        req: hyper::Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Option<(u16, Option<Bytes>)> {
        let fut = async {
            let resp = self.client.request(req).await.ok()?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.ok().map(|b| b.to_bytes());
            Some((status, body))
        };
        tokio::time::timeout(timeout, fut).await.ok().flatten()
    }

    fn get(url: &str) -> Option<hyper::Request<Full<Bytes>>> {
        hyper::Request::get(url).body(Full::default()).ok()
    }

    /// `GET url` → its JSON body read as `T`, whatever the status; `None` on any failure.
    pub async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Option<T> {
        let (_, body) = self.exchange(Self::get(url)?, self.timeout).await?;
        serde_json::from_slice(&body?).ok()
    }

    /// `GET path` on the agent at `ip` → the status code, `None` when it does not answer in time.
    pub async fn probe(&self, ip: &str, path: &str) -> Option<u16> {
        let req = Self::get(&agent_url(ip, path))?;
        self.exchange(req, self.timeout).await.map(|(code, _)| code)
    }

    /// `POST url` with a JSON body and, when given, the API token as a bearer token →
    /// (status, body; `None` when the body broke off), `None` when there is no answer within
    /// `timeout`.
    pub async fn post_url(
        &self,
        url: &str,
        body: &serde_json::Value,
        token: Option<&str>,
        timeout: Duration,
    ) -> Option<(u16, Option<String>)> {
        let mut req = hyper::Request::post(url).header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).ok()?;
        let (code, body) = self.exchange(req, timeout).await?;
        Some((code, body.map(|b| String::from_utf8_lossy(&b).into_owned())))
    }

    /// `POST path` on the agent at `ip` with the API token → (status, body), `None` without a
    /// whole answer.
    pub async fn post(
        &self,
        ip: &str,
        path: &str,
        body: &serde_json::Value,
        token: &str,
        timeout: Duration,
    ) -> Option<(u16, String)> {
        match self
            .post_url(&agent_url(ip, path), body, Some(token), timeout)
            .await?
        {
            (code, Some(text)) => Some((code, text)),
            (_, None) => None,
        }
    }

    /// The timeout given to [`AgentClient::new`].
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_bracket_ipv6_addresses() {
        for (ip, url) in [
            ("10.0.0.7", "http://10.0.0.7:8008/patroni"),
            ("fd00::7", "http://[fd00::7]:8008/patroni"),
        ] {
            assert_eq!(agent_url(ip, "/patroni"), url);
        }
    }
}
