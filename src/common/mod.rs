//! Small utilities the three wings share beside the contract in `crate::api`: things that do
//! I/O or keep state (an HTTP client for the agent API, the Lease clock and compare-and-swap,
//! the Prometheus text writer, cron schedules). Wings import `api` and `common`, never each other.

pub mod agent_client;
pub mod cron;
pub mod events;
pub mod lease;
pub mod prom;
pub mod rng;
pub mod throttle;
