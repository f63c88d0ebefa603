//! Asking peers over their REST API (`GET /patroni`, 2 s, connecting 0.5 s, no retries) before
//! racing for a free lease, as Patroni's `_is_healthiest_node` does, and asking them to confirm a
//! failsafe primary. Unreachable peers simply do not answer; once one peer has answered, the
//! others get [`STRAGGLER_GRACE`] more and then count as not answering. The HTTP is
//! `common::agent_client`'s.

use std::time::Duration;

use crate::agent::ha::PeerAnswer;
use crate::api::member::MemberStatus;
use crate::api::patroni::{PatroniStatus, paths};
use crate::common::agent_client::AgentClient;

/// How long connecting to a peer may take. A peer whose node died, froze or was cut off never
/// answers the connect; waiting the whole 2 s for it delayed every failover after a lost node by
/// that much, while the kernel of a live peer, however busy its agent, accepts within
/// milliseconds (its answer still gets the whole timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// How long the race's peer check waits for the other peers once one has answered. A peer on a
/// frozen node never answers, yet its kernel completes the TCP handshake, so the connect timeout
/// does not help: without the grace every takeover after a node freeze waited the whole 2 s for
/// it. Live peers answer within milliseconds of each other (the same request to the same kind of
/// agent); one that is half a second behind the first is treated as one that did not answer,
/// which the decision already handles (it cannot veto, as Patroni's unreachable members cannot).
/// The Lease stays the only lock: who may race is unchanged, only how long the race waits.
pub const STRAGGLER_GRACE: Duration = Duration::from_millis(500);

pub struct PeerClient {
    agents: AgentClient,
}

impl PeerClient {
    /// `timeout` for each answer; connecting gets at most [`CONNECT_TIMEOUT`].
    pub fn new(timeout: Duration) -> Self {
        Self {
            agents: AgentClient::with_connect_timeout(timeout, CONNECT_TIMEOUT),
        }
    }

    /// Failsafe: do all `members` accept this primary? Each `POST /failsafe` must answer 200.
    /// A topology that does not name this member (never read, or read before it joined) confirms
    /// nothing; one that names only this member confirms it, as Patroni's single-node case.
    pub async fn confirm_failsafe(
        &self,
        members: &[(String, MemberStatus)],
        me: &str,
        token: Option<&str>,
    ) -> bool {
        if !knows_me(members, me) {
            return false;
        }
        let body = serde_json::json!({ "name": me });
        let asks = members.iter().filter(|(n, _)| n != me).map(|(_, s)| {
            let url = s.api_url.replace(paths::PATRONI, paths::FAILSAFE);
            let body = body.clone();
            async move {
                let answer = self
                    .agents
                    .post_url(&url, &body, token, self.agents.timeout())
                    .await;
                matches!(answer, Some((200, _)))
            }
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .all(|ok| ok)
    }

    /// Ask every other member in parallel; stragglers get [`STRAGGLER_GRACE`] after the first
    /// answer.
    pub async fn ask_all(&self, members: &[(String, MemberStatus)], me: &str) -> Vec<PeerAnswer> {
        let asks = members
            .iter()
            .filter(|(name, _)| name != me)
            .map(|(name, s)| async move {
                let status = self.agents.get_json::<PatroniStatus>(&s.api_url).await;
                status.map(|st| answer(name, &st))
            });
        gather_with_grace(asks, STRAGGLER_GRACE).await
    }

    /// How `leader`'s PostgreSQL counts `me` among its standbys (`pg_stat_replication`'s
    /// `sync_state`: `sync`, `potential`, `async`...), from its `/patroni`; `None` when it does
    /// not answer or does not list `me`.
    pub async fn sync_state_on(&self, leader: &MemberStatus, me: &str) -> Option<String> {
        let status = self
            .agents
            .get_json::<PatroniStatus>(&leader.api_url)
            .await?;
        status
            .replication?
            .into_iter()
            .find(|r| r.application_name == me)
            .map(|r| r.sync_state)
    }
}

/// Every answer (`Some`) of `asks`, run in parallel, waiting for the rest at most `grace` after the
/// first answer; each ask bounds its own time. Dropping the unfinished asks cancels them.
async fn gather_with_grace<T, F>(asks: impl IntoIterator<Item = F>, grace: Duration) -> Vec<T>
where
    F: std::future::Future<Output = Option<T>>,
{
    use futures::StreamExt;
    let mut pending: futures::stream::FuturesUnordered<F> = asks.into_iter().collect();
    let mut answers = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let next = match deadline {
            None => pending.next().await,
            Some(d) => match tokio::time::timeout_at(d, pending.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
        };
        match next {
            None => break,
            Some(Some(a)) => {
                answers.push(a);
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + grace);
            }
            Some(None) => {}
        }
    }
    answers
}

/// Whether a failsafe topology can confirm anything: it must name this member.
fn knows_me(members: &[(String, MemberStatus)], me: &str) -> bool {
    members.iter().any(|(n, _)| n == me)
}

/// A peer's `/patroni` document as a `PeerAnswer`.
pub fn answer(name: &str, status: &PatroniStatus) -> PeerAnswer {
    PeerAnswer {
        name: name.to_string(),
        is_primary: status.is_running_primary(),
        lsn: status.wal_position(),
        nofailover: status.tags.nofailover,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(v: serde_json::Value) -> PatroniStatus {
        let mut doc = serde_json::json!({"dcs_last_seen": 0,
            "patroni": {"version": "1", "scope": "c", "name": "n"}});
        if let (Some(d), serde_json::Value::Object(extra)) = (doc.as_object_mut(), v) {
            d.extend(extra);
        }
        serde_json::from_value(doc).expect("a /patroni document")
    }

    #[tokio::test]
    async fn a_topology_without_this_member_confirms_nothing() {
        let client = PeerClient::new(Duration::from_millis(100));
        let member = |name: &str| {
            let status = MemberStatus::parse(&format!(
                r#"{{"conn_url":"postgres://127.0.0.9:1/postgres","api_url":"http://127.0.0.9:1/patroni","state":"running","role":"replica","version":"0.1.0","name":"{name}"}}"#
            ))
            .expect("a member status");
            (name.to_string(), status)
        };
        assert!(!client.confirm_failsafe(&[], "a", None).await, "empty");
        assert!(
            !client.confirm_failsafe(&[member("b")], "a", None).await,
            "a topology without this member"
        );
        assert!(
            client.confirm_failsafe(&[member("a")], "a", None).await,
            "a single-member cluster"
        );
        assert!(
            !client
                .confirm_failsafe(&[member("a"), member("b")], "a", None)
                .await,
            "a member that does not answer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_straggler_gets_the_grace_after_the_first_answer_and_no_more() {
        let after = |ms: u64, v: Option<u32>| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            v
        };
        let t0 = tokio::time::Instant::now();
        // A frozen peer (answers after 2 s) behind a live one (10 ms): counted absent at 510 ms.
        let got = gather_with_grace(
            vec![after(2000, Some(1)), after(10, Some(2))],
            Duration::from_millis(500),
        )
        .await;
        assert_eq!(got, vec![2]);
        assert_eq!(t0.elapsed(), Duration::from_millis(510));

        // Peers that answer within the grace all count; the wait ends with the last.
        let t0 = tokio::time::Instant::now();
        let mut got = gather_with_grace(
            vec![after(10, Some(1)), after(300, Some(2)), after(50, None)],
            Duration::from_millis(500),
        )
        .await;
        got.sort();
        assert_eq!(got, vec![1, 2]);
        assert_eq!(t0.elapsed(), Duration::from_millis(300));

        // Failures do not start the grace: a lone slow answer still counts.
        let t0 = tokio::time::Instant::now();
        let got = gather_with_grace(
            vec![after(5, None), after(1900, Some(3))],
            Duration::from_millis(500),
        )
        .await;
        assert_eq!(got, vec![3]);
        assert_eq!(t0.elapsed(), Duration::from_millis(1900));
    }

    #[test]
    fn replica_answer_takes_the_furthest_position() {
        let v = status(serde_json::json!({"role": "replica", "state": "running",
            "xlog": {"received_location": 200, "replayed_location": 150,
                     "replayed_timestamp": null, "paused": false}}));
        let a = answer("b", &v);
        assert_eq!(a.lsn, Some(200));
        assert!(!a.is_primary);
    }

    #[test]
    fn primary_answer_is_recognised() {
        let v = status(serde_json::json!({"role": "primary", "state": "running",
            "xlog": {"location": 7}, "tags": {"nofailover": true}}));
        let a = answer("a", &v);
        assert!(a.is_primary && a.nofailover);
        assert_eq!(a.lsn, Some(7));
    }
}
