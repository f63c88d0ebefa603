//! pgwarden: Patroni-style high availability for PostgreSQL on Kubernetes, as one binary with
//! several roles (`operator`, `agent`, `softdog`, `crd`) and the `kubectl-pgwarden` plugin.

pub mod agent;
pub mod api;
pub mod cli;
pub mod common;
pub mod crd;
pub mod operator;
