//! Integration tier: the safety core under faults found by reading the code or by measuring
//! (issue "Prove the safety core"). Each scenario is the test that failed before its fix. Three
//! agents as processes against a real kube-apiserver and real PostgreSQL 15, faults from outside
//! (kill -9, SIGSTOP). Run by `make integration` with `--ignored`, like tests/ha.rs.

mod support;

use std::time::Duration;

use support::agents;
use support::traffic::Writer;

const SLOW: Duration = Duration::from_secs(90);

/// An agent killed with -9 while primary leaves its armed softdog behind wherever nothing kills
/// the process tree with it (outside a pod, or a pod sharing its process namespace). The agent
/// started again at once still holds the Lease and starts PostgreSQL as primary, with a softdog
/// of its own on the same FIFO. The one left behind must never kill that new postmaster: not at
/// its own deadline (the postmaster it guarded is gone), and not by taking the keepalives meant
/// for the new one. Found by the benchmark's apiserver-restart column: the orphan fired 12 s
/// into a failsafe-confirmed outage and cost 30 s of writes.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn a_restarted_primary_is_not_fenced_by_the_softdog_its_predecessor_left() {
    let (mut c, p) = agents::three("orphan", SLOW).await;
    c.kill9(p);
    c.start(p);
    c.wait_until(SLOW, "the restarted member to lead again", |c| {
        c.answering("/primary") == vec![p]
    })
    .await;
    let postmaster = c.members[p].postmaster_pid();
    let writer = Writer::start(&c.members[p].ip, "w", Duration::from_millis(20)).await;
    // Longer than the softdog's timeout, several times over.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (acked, errors) = writer.stop().await;
    assert!(
        errors.is_empty(),
        "{} writes failed on the restarted primary, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    assert_eq!(
        c.members[p].postmaster_pid(),
        postmaster,
        "the restarted primary's postmaster was replaced"
    );
}
