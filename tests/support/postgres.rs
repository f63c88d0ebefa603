//! Connections to PostgreSQL as a client would make them, with a short connect timeout.

#![allow(dead_code)]

use std::time::Duration;

use super::wait::retry;

pub async fn connect(
    host: &str,
    user: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(host)
        .port(5432)
        .user(user)
        .password(password)
        .dbname(db)
        .connect_timeout(Duration::from_secs(2));
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// `connect`, retried every 500 ms for up to `limit` as a client behind a Service would: the
/// Endpoints can list a ready pod a moment before kube-proxy has replaced the Service's "no
/// endpoints" REJECT rule, and that moment answers "connection refused".
pub async fn connect_retry(
    host: &str,
    user: &str,
    password: &str,
    db: &str,
    limit: Duration,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    retry(limit, Duration::from_millis(500), || {
        connect(host, user, password, db)
    })
    .await
}

/// What the server said (`cannot execute INSERT in a read-only transaction`), or the client's
/// error when the server said nothing (a refused or broken connection).
pub fn message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Whether an error message (from `message`) is a read-only answer: SQLSTATE 25006.
pub fn is_read_only(message: &str) -> bool {
    message.starts_with("25006")
}
