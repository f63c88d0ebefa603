//! Errors a person can act on: one sentence each, printed as `error: ...` on stderr, with the
//! exit code that says what kind of failure it was. Never a stack trace.

use std::fmt;

/// Exit status of `kubectl pgwarden`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Refused or failed: by a check, by the agent, by the apiserver, or by the person.
    Failed = 1,
    /// The command line itself is wrong.
    Usage = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub message: String,
    pub exit: Exit,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl CliError {
    /// Refused or failed (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit: Exit::Failed,
        }
    }

    /// A wrong command line (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit: Exit::Usage,
        }
    }

    pub fn cluster_not_found(cluster: &str, namespace: &str) -> Self {
        Self::failed(format!(
            "cluster \"{cluster}\" not found in namespace \"{namespace}\""
        ))
    }

    pub fn crd_missing() -> Self {
        Self::failed(
            "the PostgresCluster API (postgresclusters.pgwarden.io) is not installed in this \
             Kubernetes cluster: install the pgwarden chart first",
        )
    }

    pub fn unreachable(url: &str, reason: &str) -> Self {
        Self::failed(format!(
            "cannot reach the Kubernetes API at {url}: {reason}"
        ))
    }

    /// Patroni's wording (`patronictl switchover`).
    pub fn no_leader() -> Self {
        Self::failed("This cluster has no leader")
    }

    /// Patroni's wording: one message for a name that is not a member and for a member tagged
    /// `nofailover`.
    pub fn not_a_candidate(candidate: &str, cluster: &str) -> Self {
        Self::failed(format!(
            "Member {candidate} does not exist in cluster {cluster} or is tagged as nofailover"
        ))
    }

    pub fn already_leader(candidate: &str, cluster: &str) -> Self {
        Self::failed(format!(
            "Member {candidate} is already the leader of cluster {cluster}"
        ))
    }

    pub fn not_the_leader(member: &str, cluster: &str) -> Self {
        Self::failed(format!(
            "Member {member} is not the leader of cluster {cluster}"
        ))
    }

    pub fn no_candidates(action: &str) -> Self {
        Self::failed(format!("No candidates found to {action} to"))
    }

    pub fn not_a_member(member: &str, cluster: &str) -> Self {
        Self::failed(format!("{member} is not a member of cluster {cluster}"))
    }

    pub fn token_secret_missing(secret: &str, namespace: &str) -> Self {
        Self::failed(format!(
            "Secret \"{secret}\" (key \"token\") not found in namespace \"{namespace}\": the agents' \
             write endpoints need the cluster's API token from it"
        ))
    }

    pub fn aborted(action: &str) -> Self {
        Self::failed(format!("Aborting {action}"))
    }

    /// The agent refused: Patroni's message as the agent wrote it, with its status code.
    pub fn agent_refused(action: &str, code: u16, body: &str) -> Self {
        Self::failed(format!(
            "{} failed, details: {code}, {}",
            capitalize(action),
            body.trim()
        ))
    }
}

pub fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;
