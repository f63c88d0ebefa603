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
use support::nodes::{NodeProber, describe_gap, longest_gap, node, wait_nodes_schedulable};
use support::report::{NODE_ROWS, env_count, keep_section, summary};
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
    /// Fault to writes through `-rw` on the new primary (`None`: a drain).
    takeover: Option<Duration>,
    /// Thaw, heal, restart or uncordon to the old primary (or the drained member) serving as a
    /// replica again.
    rejoined: Duration,
    /// Writes answered read-only through `-rw`.
    read_only: usize,
    /// Commits the writer saw acknowledged.
    acked: usize,
}

/// What the writer and the prober saw: the longest write gap, writes answered read-only, and
/// how many commits were acknowledged (none lost: asserted).
struct Seen {
    downtime: Duration,
    read_only: usize,
    acked: usize,
}

/// A synchronous three-instance cluster in `ns`, Healthy, one instance per node (asserted), a
/// writer on `-rw` that has committed, and the prober: (cluster, primary, writer, prober).
async fn running(ns: &str) -> (Pg, String, Writer, NodeProber) {
    wait_nodes_schedulable(2 * MIN).await;
    let pg = Pg::create(ns, "pg", &spec(3, "  ha: {synchronousMode: 'on'}\n")).await;
    let primary = pg.wait_healthy(3, 5 * MIN).await;
    let mut nodes = BTreeSet::new();
    for p in pg.pods().await {
        nodes.insert(pg.node_of(p.metadata.name.as_deref().unwrap()).await);
    }
    assert_eq!(nodes.len(), 3, "one instance per node (anti-affinity)");
    // Only a published synchronous standby may take over: a fault before there is one would
    // (rightly) leave the cluster without a primary until the old one returns.
    pg.wait_synchronous_standby(MIN).await;
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
/// lost. Returns the samples and what the writer saw.
async fn stop_and_check(
    pg: &Pg,
    writer: Writer,
    prober: NodeProber,
    t0: Instant,
) -> (Vec<traffic::Sample>, Seen) {
    let samples = prober.stop().await;
    let acked_at = writer.acked_at.lock().unwrap().clone();
    let errors = writer.errors.lock().unwrap().clone();
    let acked = writer.stop().await;
    log(describe_gap(&acked_at, &errors, t0));
    traffic::assert_never_two_writable(&samples);
    let lost = lost_commits(pg, "w", &acked).await;
    assert!(lost.is_empty(), "acknowledged commits lost: {lost:?}");
    let read_only = errors
        .iter()
        .filter(|(_, e)| e.contains("read-only transaction"))
        .count();
    let seen = Seen {
        downtime: longest_gap(&acked_at),
        read_only,
        acked: acked.len(),
    };
    (samples, seen)
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
    if !writes_resume(&writer, before, MIN).await {
        dump(&pg, &writer, t0).await;
        panic!("no writes through -rw on the new primary within {MIN:?}");
    }
    let takeover = t0.elapsed();
    tokio::time::sleep(AWAY.saturating_sub(t0.elapsed())).await;
    let back = Instant::now();
    node(recover, &node_name);
    serving_as_replica(&pg, &old).await;
    let rejoined = back.elapsed();
    let (samples, seen) = stop_and_check(&pg, writer, prober, t0).await;
    let (downtime, acked) = (seen.downtime, seen.acked);
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
        takeover: Some(takeover),
        rejoined,
        read_only: seen.read_only,
        acked,
    }
}

/// Wait until the cluster is Healthy again with `member` (the old primary, or the drained
/// member) labelled replica: back in service after its node returned.
async fn serving_as_replica(pg: &Pg, member: &str) {
    pg.wait_healthy(3, 5 * MIN).await;
    wait_until(
        2 * MIN,
        &format!("{member} to serve as a replica again"),
        || async { pg.labelled("replica").await.contains(member) },
    )
    .await;
}

/// Whether the writer commits 50 more within `limit`.
async fn writes_resume(writer: &Writer, before: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if writer.count() > before + 50 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// What a failed scenario leaves for a look before its namespace goes: the writer's errors,
/// the pods with their role labels, the `-rw` endpoints, the Lease and the state, and every
/// member's last log lines.
async fn dump(pg: &Pg, writer: &Writer, t0: Instant) {
    let acked_at = writer.acked_at.lock().unwrap().clone();
    let errors = writer.errors.lock().unwrap().clone();
    log(describe_gap(&acked_at, &errors, t0));
    let last: Vec<String> = errors
        .iter()
        .rev()
        .take(10)
        .map(|(at, e)| format!("{:.2}s {e}", at.saturating_duration_since(t0).as_secs_f64()))
        .collect();
    log(format!("the writer's last errors: {last:?}"));
    for args in [
        vec!["get", "pods", "-o", "wide", "-L", "pgwarden.io/role"],
        vec!["get", "endpointslices", "-o", "wide"],
        vec!["get", "lease,configmap", "-o", "yaml"],
    ] {
        let out = pg.kubectl(&args).unwrap_or_else(|e| e);
        log(format!("kubectl {}:\n{out}", args.join(" ")));
    }
    for pod in pg.pods().await {
        let name = pod.metadata.name.unwrap_or_default();
        let out = pg.kubectl(&["logs", &name, "-c", "postgres", "--tail=150"]);
        log(format!("logs of {name}:\n{}", out.unwrap_or_else(|e| e)));
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
        o.downtime,
        o.takeover.unwrap_or_default()
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
/// what was measured and whether the primary changed.
async fn drain_under(ns: &str, primary: bool) -> (Outcome, bool) {
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
    let back = Instant::now();
    uncordon(&node_name);
    serving_as_replica(&pg, &target).await;
    let rejoined = back.elapsed();
    let (_, seen) = stop_and_check(&pg, writer, prober, t0).await;
    let downtime = seen.downtime;
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
    let outcome = Outcome {
        downtime,
        takeover: None,
        rejoined,
        read_only: seen.read_only,
        acked: seen.acked,
    };
    (outcome, moved)
}

/// `kubectl drain` of the primary's node: the primary moves to a replica on another node before
/// its pod goes, writes through `-rw` stop for less than 2 s, nothing is lost, and after the
/// uncordon the cluster is whole again.
#[tokio::test]
#[ignore = "three nodes: run by `make nodes`"]
async fn draining_the_primarys_node_moves_the_primary_first() {
    let (o, moved) = drain_under("nodes-drain-primary", true).await;
    let downtime = o.downtime;
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
    let (o, moved) = drain_under("nodes-drain-replica", false).await;
    let downtime = o.downtime;
    assert!(!moved, "the primary stayed where it was");
    assert!(
        downtime < Duration::from_secs(2),
        "writes through -rw stopped for {downtime:.1?}"
    );
}

/// The node rows of BENCHMARKS.md (`make bench-nodes`): every scenario above `NODE_TRIALS`
/// times (5 by default), each asserting what its test asserts; the table gives the median and
/// the range of each measure, and replaces the section between its markers in BENCHMARKS.md.
#[tokio::test]
#[ignore = "three nodes, many minutes: run by `make bench-nodes`"]
async fn benchmark_node_faults() {
    let trials = env_count("NODE_TRIALS", 5);
    let faults = [
        ("node kill (then restart)", "kill"),
        ("node freeze 30 s (then thaw)", "freeze"),
        ("node partition 30 s (then heal)", "partition"),
        ("drain of the primary's node", "drain-primary"),
        ("drain of a replica's node", "drain-replica"),
    ];
    let mut results: Vec<Vec<Outcome>> = faults.iter().map(|_| vec![]).collect();
    for t in 0..trials {
        for (i, (_, fault)) in faults.iter().enumerate() {
            let ns = format!("bench-{fault}-{t}");
            log(format!("trial {} of {trials}: {fault}", t + 1));
            let o = match *fault {
                "kill" => primary_node_away(&ns, "kill", "restart").await,
                "freeze" => primary_node_away(&ns, "freeze", "thaw").await,
                "partition" => primary_node_away(&ns, "partition", "heal").await,
                "drain-primary" => {
                    let (o, moved) = drain_under(&ns, true).await;
                    assert!(moved, "the primary moved off the drained node");
                    o
                }
                _ => {
                    let (o, moved) = drain_under(&ns, false).await;
                    assert!(!moved, "the primary stayed where it was");
                    o
                }
            };
            results[i].push(o);
        }
    }
    let mut md = format!(
        "## Node faults (three nodes, `make bench-nodes`)\n\n\
         Measured {} on `e2e/cluster up --nodes 3` on this machine: a synchronous three-instance \
         cluster (ttl 8, loop 2), one instance per node, installed by the chart; a writer INSERTs \
         through `-rw` (connect timeout 2 s, statement timeout 3 s) and records every acknowledged \
         commit; the primary's node stays away 30 s. Each cell: the median of {trials} trials and their range. Write \
         downtime: the longest gap between acknowledged writes. Back → rejoined: from the thaw, \
         heal, restart or uncordon to the old primary (or the drained member) labelled replica.\n\n\
         | fault | write downtime through `-rw` | read-only answers | acknowledged writes lost | \
         fault → writes on the new primary | back → rejoined as a replica |\n\
         |---|---|---|---|---|---|\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d"),
    );
    for ((label, _), outcomes) in faults.iter().zip(&results) {
        let column = |f: &dyn Fn(&Outcome) -> Option<Duration>| -> String {
            let v: Vec<Duration> = outcomes.iter().filter_map(f).collect();
            if v.is_empty() {
                "—".into()
            } else {
                summary(&v)
            }
        };
        let read_only: usize = outcomes.iter().map(|o| o.read_only).sum();
        let acked: usize = outcomes.iter().map(|o| o.acked).sum();
        md.push_str(&format!(
            "| {label} | {} | {read_only} | 0 of {acked} | {} | {} |\n",
            column(&|o| Some(o.downtime)),
            column(&|o| o.takeover),
            column(&|o| Some(o.rejoined)),
        ));
    }
    log(&md);
    keep_section(&NODE_ROWS, &md);
}
