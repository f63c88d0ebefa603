//! Waiting for a condition with a deadline: the one polling loop of both tiers, and the
//! end-to-end tier's logged `wait_until`.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

/// Call `attempt` every `every` until it gives `Ok`; once `limit` has passed since the start, the
/// next failed attempt is the last and its `Err` is returned. (The attempt that starts after the
/// limit still counts: a condition met at the deadline is met.)
pub async fn retry<T, E, F, Fut>(limit: Duration, every: Duration, mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match attempt().await {
            Ok(t) => return Ok(t),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// A line on stderr with the wall-clock time, to read a scenario's progress against the logs.
pub fn log(msg: impl AsRef<str>) {
    eprintln!(
        "[{}] {}",
        jiff::Timestamp::now().strftime("%H:%M:%S%.3f"),
        msg.as_ref()
    );
}

/// Wait up to `limit` for `f` to hold, checking every 500 ms (no check once `limit` has passed),
/// log how long it took, and fail the test if it never did.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            log(format!(
                "ok: {what} ({:.1}s)",
                start.elapsed().as_secs_f64()
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}");
}
