//! The operator talks to the agents with the shared client (`common::agent_client`); this name
//! stays so the controller's `super::agent_client::AgentClient` keeps working.

pub use crate::common::agent_client::AgentClient;
