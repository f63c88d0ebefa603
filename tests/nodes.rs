//! Node faults on three nodes (`e2e/cluster up --nodes 3`, the chart installed; run by
//! e2e/nodes.sh: `make nodes`). Each scenario runs a synchronous three-instance cluster, one
//! instance per node, a writer through `-rw` recording every acknowledged commit, and a prober
//! asking every member from inside its node whether it accepts writes; then it takes the
//! primary's node away (killed, frozen, cut off) for 30 s and gives it back. Each asserts: never
//! two writable members, no acknowledged commit lost, the old primary never writable again after
//! the takeover, writes through `-rw` back within 15 s, the cluster Healthy again with the old
//! primary a replica. Every test is `#[ignore]`: it needs the three-node test bed.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::cluster::*;
use support::nodes::{NodeProber, describe_gap, longest_gap, node};
use support::traffic::{self, Answer};
use support::wait::{log, wait_until};

const MIN: Duration = Duration::from_secs(60);
/// How long the primary's node stays away.
const AWAY: Duration = Duration::from_secs(30);
/// The write downtime through `-rw` the issue allows for a lost, frozen or cut-off node.
const MAX_DOWNTIME: Duration = Duration::from_secs(15);

/// What a node scenario measured, for its log line (and the benchmark's table).
struct Outcome {
    downtime: Duration,
    takeover: Duration,
    rejoined: Duration,
}

/// A synchronous three-instance cluster in `ns`, Healthy, one instance per node (asserted), a
/// writer on `-rw` that has committed, and the prober: (cluster, primary, writer, prober).
async fn running(ns: &str) -> (Pg, String, Writer, NodeProber) {
    let pg = Pg::create(ns, "pg", &spec(3, "  ha: {synchronousMode: 'on'}\n")).await;
    let primary = pg.wait_healthy(3, 5 * MIN).await;
    let mut nodes = BTreeSet::new();
    for p in pg.pods().await {
        nodes.insert(pg.node_of(p.metadata.name.as_deref().unwrap()).await);
    }
    assert_eq!(nodes.len(), 3, "one instance per node (anti-affinity)");
    let writer = Writer::start(&pg, "w").await;
    wait_until(MIN, "the writer to commit", || async {
        writer.count() > 100
    })
    .await;
    let prober = NodeProber::start(&pg).await;
    (pg, primary, writer, prober)
}

/// Stop the prober and the writer, log how the longest write gap looked to the client, and
/// assert what every scenario promises: never two writable members, no acknowledged commit
/// lost. Returns the samples, the number of acknowledged commits and the write downtime.
async fn stop_and_check(
    pg: &Pg,
    writer: Writer,
    prober: NodeProber,
    t0: Instant,
) -> (Vec<traffic::Sample>, usize, Duration) {
    let samples = prober.stop().await;
    let acked_at = writer.acked_at.lock().unwrap().clone();
    let errors = writer.errors.lock().unwrap().clone();
    let acked = writer.stop().await;
    log(describe_gap(&acked_at, &errors, t0));
    traffic::assert_never_two_writable(&samples);
    let lost = lost_commits(pg, "w", &acked).await;
    assert!(lost.is_empty(), "acknowledged commits lost: {lost:?}");
    (samples, acked.len(), longest_gap(&acked_at))
}

/// The scenario all three faults share: `fault` on the primary's node, `recover` after AWAY.
async fn primary_node_away(ns: &str, fault: &str, recover: &str) -> Outcome {
    let (pg, old, writer, prober) = running(ns).await;
    let node_name = pg.node_of(&old).await;
    let o = prober
        .names
        .iter()
        .position(|n| *n == old)
        .expect("the old primary is probed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = Instant::now();
    node(fault, &node_name);
    wait_until(MIN, "another member to hold the Lease", || async {
        pg.lease_holder().await.is_some_and(|h| h != old)
    })
    .await;
    let before = writer.count();
    wait_until(MIN, "writes through -rw on the new primary", || async {
        writer.count() > before + 50
    })
    .await;
    let takeover = t0.elapsed();
    tokio::time::sleep(AWAY.saturating_sub(t0.elapsed())).await;
    let back = Instant::now();
    node(recover, &node_name);
    pg.wait_healthy(3, 5 * MIN).await;
    wait_until(
        2 * MIN,
        "the old primary to rejoin as a replica",
        || async { pg.labelled("replica").await.contains(&old) },
    )
    .await;
    let rejoined = back.elapsed();
    let (samples, acked, downtime) = stop_and_check(&pg, writer, prober, t0).await;
    // After the takeover the old primary must never answer as writable again, whatever it
    // thought when it was thawed, healed or restarted.
    let new_writable = samples
        .iter()
        .position(|s| {
            s.answers
                .iter()
                .enumerate()
                .any(|(i, a)| i != o && *a == Answer::Writable)
        })
        .expect("the prober saw the new primary writable");
    let late: Vec<_> = samples[new_writable..]
        .iter()
        .filter(|s| s.answers[o] == Answer::Writable)
        .collect();
    assert!(
        late.is_empty(),
        "{old} answered writable {} times after the takeover, first {:?} after the fault",
        late.len(),
        late.first().map(|s| s.at.saturating_duration_since(t0))
    );
    // The margin: from the old primary's last writable answer to the new one's first.
    let margin = samples[..new_writable]
        .iter()
        .rev()
        .find(|s| s.answers[o] == Answer::Writable)
        .map(|s| samples[new_writable].at - s.at);
    log(format!(
        "{fault} of {node_name} ({old}): write downtime {downtime:.1?}, takeover {takeover:.1?}, \
         old primary last writable {margin:.1?} before the new one, {recover} to rejoined \
         {rejoined:.1?}, {acked} commits acknowledged, none lost"
    ));
    assert!(
        downtime < MAX_DOWNTIME,
        "writes through -rw stopped for {downtime:.1?}"
    );
    pg.delete().await;
    Outcome {
        downtime,
        takeover,
        rejoined,
    }
}

/// Acknowledged ids missing from the primary (read through `-rw`).
async fn lost_commits(pg: &Pg, table: &str, acked: &[i64]) -> Vec<i64> {
    let c = pg.connect_service("rw").await.expect("connect through -rw");
    let rows = c
        .query(&format!("SELECT id FROM {table}"), &[])
        .await
        .expect("read the writer's table");
    let present: BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    acked
        .iter()
        .copied()
        .filter(|id| !present.contains(id))
        .collect()
}

/// Every process of the primary's node SIGKILLed and its link down (a machine that died), then
/// the node restarted: a replica takes over within ttl, the old primary rejoins as a replica.
#[tokio::test]
#[ignore = "three nodes: run by `make nodes`"]
async fn a_killed_primary_node_is_replaced_within_ttl() {
    let o = primary_node_away("nodes-kill", "kill", "restart").await;
    log(format!("kill: {:.1?} downtime", o.downtime));
}

/// The primary's whole node frozen (kubelet, containerd, pods, the in-pod softdog with them)
/// for 30 s: a replica takes over, and on thaw the old primary never answers a write.
#[tokio::test]
#[ignore = "three nodes: run by `make nodes`"]
async fn a_frozen_primary_node_is_replaced_and_fenced_on_thaw() {
    let o = primary_node_away("nodes-freeze", "freeze", "thaw").await;
    log(format!(
        "freeze: {:.1?} downtime, takeover {:.1?}",
        o.downtime, o.takeover
    ));
}

/// The primary's node cut off (its link down, every process alive) for 30 s: it stops accepting
/// writes before anyone else can take the Lease, and rejoins as a replica when healed.
#[tokio::test]
#[ignore = "three nodes: run by `make nodes`"]
async fn a_partitioned_primary_node_stops_writing_and_rejoins() {
    let o = primary_node_away("nodes-partition", "partition", "heal").await;
    log(format!(
        "partition: {:.1?} downtime, rejoined {:.1?} after heal",
        o.downtime, o.rejoined
    ));
}

/// `kubectl drain` of `node` (blocking; the PodDisruptionBudget decides what may go), asserting
/// it succeeded.
async fn drain(node: &str) {
    let n = node.to_string();
    let out = tokio::task::spawn_blocking(move || {
        support::k8s::kubectl(
            &[
                "drain",
                &n,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=180s",
            ],
            None,
        )
    })
    .await
    .expect("kubectl drain");
    assert!(out.is_ok(), "kubectl drain {node}: {out:?}");
    log(format!("drained {node}"));
}

fn uncordon(node: &str) {
    support::k8s::kubectl(&["uncordon", node], None).expect("kubectl uncordon");
}

/// A drain of the node under `which` member (the primary, or a replica), then uncordon: returns
/// the write downtime through `-rw` and whether the primary changed.
async fn drain_under(ns: &str, primary: bool) -> (Duration, bool) {
    let (pg, old, writer, prober) = running(ns).await;
    let target = if primary {
        old.clone()
    } else {
        pg.labelled("replica")
            .await
            .into_iter()
            .next()
            .expect("a replica")
    };
    let node_name = pg.node_of(&target).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = Instant::now();
    drain(&node_name).await;
    let before = writer.count();
    wait_until(MIN, "writes through -rw after the drain", || async {
        writer.count() > before + 50
    })
    .await;
    let holder = pg.lease_holder().await;
    uncordon(&node_name);
    pg.wait_healthy(3, 5 * MIN).await;
    let (_, _, downtime) = stop_and_check(&pg, writer, prober, t0).await;
    let moved = holder.as_deref() != Some(old.as_str());
    if primary {
        // Moved by the operator's switchover, not by a failover after an eviction (the
        // primary's PodDisruptionBudget refuses that).
        pg.wait_event("Switchover", "is cordoned (a drain)").await;
    }
    log(format!(
        "drain of {node_name} under {target} ({}): write downtime {downtime:.1?}, primary {}",
        if primary { "the primary" } else { "a replica" },
        if moved { "moved" } else { "stayed" }
    ));
    pg.delete().await;
    (downtime, moved)
}

/// `kubectl drain` of the primary's node: the primary moves to a replica on another node before
/// its pod goes, writes through `-rw` stop for less than 2 s, nothing is lost, and after the
/// uncordon the cluster is whole again.
#[tokio::test]
#[ignore = "three nodes: run by `make nodes`"]
async fn draining_the_primarys_node_moves_the_primary_first() {
    let (downtime, moved) = drain_under("nodes-drain-primary", true).await;
    assert!(moved, "the primary moved off the drained node");
    assert!(
        downtime < Duration::from_secs(2),
        "writes through -rw stopped for {downtime:.1?}"
    );
}

/// `kubectl drain` of a replica's node: no switchover, writes never stop for more than 2 s.
#[tokio::test]
#[ignore = "three nodes: run by `make nodes`"]
async fn draining_a_replicas_node_keeps_the_primary() {
    let (downtime, moved) = drain_under("nodes-drain-replica", false).await;
    assert!(!moved, "the primary stayed where it was");
    assert!(
        downtime < Duration::from_secs(2),
        "writes through -rw stopped for {downtime:.1?}"
    );
}
