//! What both test tiers share: kubectl and temporary namespaces (`k8s`), waiting (`wait`),
//! PostgreSQL connections (`postgres`), host processes (`process`), plus each tier's harness:
//! `agents` (integration tier and benchmark: agents as host processes on a bare apiserver) and
//! `cluster` (end-to-end tier: the chart on a full single-node Kubernetes), and `fault_proxy` (an
//! HTTP proxy that answers an agent's apiserver calls with 500s on demand), `iptables` (a port cut with iptables), `testbed` (`e2e/cluster apiserver stop|start`), `traffic` (a writer
//! recording acknowledged writes, a prober asking every member whether it is writable), `nodes`
//! (the three-node tier: node faults, a prober that asks from inside each node), `report` (what
//! the benchmarks print).
//!
//! Every test binary compiles the whole tree and uses a part of it, so the modules allow dead
//! code: what one tier leaves unused, the other uses.

pub mod agents;
pub mod cluster;
pub mod fault_proxy;
pub mod iptables;
pub mod k8s;
pub mod nodes;
pub mod postgres;
pub mod process;
pub mod report;
pub mod testbed;
pub mod traffic;
pub mod wait;
