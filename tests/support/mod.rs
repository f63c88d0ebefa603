//! What both test tiers share: kubectl and temporary namespaces (`k8s`), waiting (`wait`),
//! PostgreSQL connections (`postgres`), host processes (`process`), plus each tier's harness:
//! `agents` (integration tier and benchmark: agents as host processes on a bare apiserver) and
//! `cluster` (end-to-end tier: the chart on a full single-node Kubernetes).
//!
//! Every test binary compiles the whole tree and uses a part of it, so the modules allow dead
//! code: what one tier leaves unused, the other uses.

pub mod agents;
pub mod cluster;
pub mod k8s;
pub mod postgres;
pub mod process;
pub mod wait;
