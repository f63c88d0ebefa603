//! What the benchmarks print and read: seconds to one decimal, a median with its range, and
//! the number of trials from the environment.

#![allow(dead_code)]

use std::time::Duration;

pub fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

/// "median s (median of n; min–max)"; `v` must not be empty.
pub fn summary(v: &[Duration]) -> String {
    let mut v = v.to_vec();
    v.sort();
    let median = v[v.len() / 2];
    format!(
        "{} s (median of {}; {}–{})",
        secs(median),
        v.len(),
        secs(v[0]),
        secs(*v.last().unwrap())
    )
}

/// The count in environment variable `name`, or `default` when it is unset or not a number.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
