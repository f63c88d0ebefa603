//! Who may write: the cluster's API token as a bearer token, as the password of Basic auth
//! (Patroni tooling), or in `X-Pgwarden-Token` (through the apiserver's pod proxy). Applied once,
//! as a layer on the write routes; compared in constant time.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::RestContext;
use crate::api::patroni::TOKEN_HEADER;

/// The layer on every write route: 401 unless the request carries the token.
pub(super) async fn require_token(
    State(ctx): State<Arc<RestContext>>,
    req: Request,
    next: Next,
) -> Response {
    if !authorized(ctx.token.as_deref(), req.headers()) {
        return unauthorized();
    }
    next.run(req).await
}

/// Does a request with `headers` carry `token`? Without a configured token nobody writes.
fn authorized(token: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::rest::fixtures::{basic, call, ctx, headers};

    #[test]
    fn bearer_and_basic_carry_the_token() {
        let c = Some("s3cret");
        assert!(authorized(
            c,
            &headers(&[("authorization", "Bearer s3cret")])
        ));
        assert!(authorized(
            c,
            &headers(&[("authorization", &basic("s3cret"))])
        ));
        assert!(!authorized(
            c,
            &headers(&[("authorization", "Bearer wrong")])
        ));
        assert!(!authorized(
            c,
            &headers(&[("authorization", &basic("wrong"))])
        ));
        assert!(!authorized(c, &headers(&[])));
    }

    /// Through the apiserver's pod proxy `Authorization` never reaches the pod (the apiserver
    /// consumes it), so `kubectl pgwarden` sends the token as `X-Pgwarden-Token`.
    #[test]
    fn the_token_header_is_a_third_accepted_form() {
        let c = Some("s3cret");
        assert!(authorized(c, &headers(&[("X-Pgwarden-Token", "s3cret")])));
        assert!(authorized(c, &headers(&[("x-pgwarden-token", " s3cret ")])));
        assert!(!authorized(c, &headers(&[("X-Pgwarden-Token", "wrong")])));
        assert!(!authorized(c, &headers(&[("X-Pgwarden-Token", "")])));
        // A wrong header token is not rescued by a right Authorization, nor the reverse: the
        // header, when present, decides.
        assert!(!authorized(
            c,
            &headers(&[
                ("X-Pgwarden-Token", "wrong"),
                ("authorization", "Bearer s3cret")
            ])
        ));
        // Without a configured token nothing is authorised, whatever the header says.
        assert!(!authorized(None, &headers(&[("X-Pgwarden-Token", "")])));
        assert!(!authorized(Some(""), &headers(&[("X-Pgwarden-Token", "")])));
    }

    /// The layer guards every write route and nothing else: a read route needs no token, and a
    /// write route asked with a method it does not serve still says 405, not 401.
    #[tokio::test]
    async fn the_layer_guards_exactly_the_write_routes() {
        let c = ctx(Some("s3cret"));
        for (method, path) in [
            ("POST", "/switchover"),
            ("DELETE", "/switchover"),
            ("POST", "/failover"),
            ("POST", "/restart"),
            ("DELETE", "/restart"),
            ("POST", "/reload"),
            ("POST", "/reinitialize"),
            ("POST", "/failsafe"),
        ] {
            let (code, hdrs, body) =
                call(&c, method, path, &[("authorization", "Bearer no")], "").await;
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(hdrs[header::WWW_AUTHENTICATE], "Bearer realm=\"pgwarden\"");
            assert!(body.contains("authentication required"), "{body}");
        }
        let (code, _, _) = call(&c, "GET", "/patroni", &[], "").await;
        assert_eq!(code, StatusCode::OK);
        let (code, _, _) = call(&c, "GET", "/switchover", &[], "").await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
        // With the token the request reaches the handler (here: its body check).
        let (code, _, body) = call(
            &c,
            "POST",
            "/failsafe",
            &[("x-pgwarden-token", "s3cret")],
            "[1]",
        )
        .await;
        assert_eq!(
            (code, body.as_str()),
            (StatusCode::BAD_REQUEST, "the body must be a JSON object")
        );
    }
}
