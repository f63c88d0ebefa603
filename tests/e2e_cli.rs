//! End-to-end scenarios of `kubectl pgwarden` on the full single-node Kubernetes (the test bed
//! with the chart installed, as for tests/e2e.rs). The binary under test is the plugin built with
//! the tests; it finds the test bed through $KUBECONFIG like kubectl. Every test is `#[ignore]`
//! and has its own namespace.

mod support;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cluster::*;
use support::process::signal;
use support::wait::{log, wait_until};

const MIN: Duration = Duration::from_secs(60);

/// What one run of the plugin printed.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `kubectl-pgwarden -n <ns> <args>`, with no terminal input (so it never waits on a prompt).
async fn pgwarden(ns: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-pgwarden"))
        .arg("-n")
        .arg(ns)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run kubectl-pgwarden");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    log(format!(
        "kubectl pgwarden {} -> exit {}\n{}{}",
        args.join(" "),
        run.code,
        run.stdout,
        run.stderr
    ));
    run
}

/// The member rows of a `list` table: `[member, host, role, state, tl, lag]`.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| Member "))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// 1. `kubectl pgwarden list` shows the cluster as it is: the header carries the system
/// identifier of `<c>-state`, the Leader row is the Lease holder on its pod IP, the two others
/// are streaming Replicas, every TL is the primary's timeline. JSON output agrees; an unknown
/// cluster is a one-line error with exit code 1.
#[tokio::test]
#[ignore]
async fn list_shows_the_lease_holder_the_replicas_and_the_system_identifier() {
    let ns = "e2e-cli-list";
    let pg = Pg::create(ns, "pg", &spec(3, "")).await;
    let primary = pg.wait_healthy(3, 5 * MIN).await;
    let sysid = pg
        .state_key("initialize")
        .await
        .expect("the initialize key");
    assert!(!sysid.is_empty());

    // The agents publish their annotations every loop: wait until the table has settled.
    let start = Instant::now();
    let (run, holder, tl) = loop {
        let holder = pg.lease_holder().await;
        let tl = pg
            .cluster()
            .await
            .status
            .and_then(|s| s.timeline)
            .map(|t| t.to_string());
        let run = pgwarden(ns, &["list", "pg"]).await;
        let r = rows(&run.stdout);
        let settled = run.code == 0
            && r.len() == 3
            && r.iter().all(|row| Some(&row[4]) == tl.as_ref())
            && r.iter().filter(|row| row[2] == "Replica").count() == 2
            && r.iter()
                .filter(|row| row[2] == "Replica")
                .all(|row| row[3] == "streaming" && row[5].parse::<u64>().is_ok());
        if settled || start.elapsed() > MIN {
            break (run, holder, tl);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert_eq!(run.code, 0, "{}", run.stderr);
    let header = run.stdout.lines().next().unwrap_or_default();
    assert!(
        header.starts_with(&format!("+ Cluster: pg ({sysid}) ")),
        "header names the cluster and its system identifier: {header}"
    );
    let holder = holder.expect("a Lease holder");
    assert_eq!(holder, primary, "the Lease holder is the status' primary");
    let r = rows(&run.stdout);
    assert_eq!(r.len(), 3, "three members: {r:?}");
    let leaders: Vec<&Vec<String>> = r.iter().filter(|row| row[2] == "Leader").collect();
    assert_eq!(leaders.len(), 1, "one Leader row: {r:?}");
    assert_eq!(leaders[0][0], holder, "the Leader row is the Lease holder");
    assert_eq!(
        leaders[0][1],
        pg.pod_ip(&holder).await,
        "Host is the pod IP"
    );
    assert_eq!(leaders[0][3], "running");
    assert_eq!(leaders[0][5], "", "no lag shown for the leader");
    let replicas: Vec<&Vec<String>> = r.iter().filter(|row| row[2] == "Replica").collect();
    assert_eq!(replicas.len(), 2, "two Replica rows: {r:?}");
    for row in &replicas {
        assert_eq!(row[3], "streaming", "{row:?}");
        assert!(row[5].parse::<u64>().is_ok(), "lag in MB: {row:?}");
        assert_eq!(row[1], pg.pod_ip(&row[0]).await, "Host is the pod IP");
    }
    let tl = tl.expect("status.timeline");
    assert!(
        r.iter().all(|row| row[4] == tl),
        "TL {tl} everywhere: {r:?}"
    );
    assert!(!run.stdout.contains("Maintenance mode"));

    // Without a name: every cluster of the namespace.
    let all = pgwarden(ns, &["list"]).await;
    assert_eq!(all.code, 0);
    assert!(all.stdout.contains(&format!("+ Cluster: pg ({sysid}) ")));

    // JSON: patronictl's keys.
    let json = pgwarden(ns, &["list", "pg", "-o", "json"]).await;
    assert_eq!(json.code, 0);
    let members: Vec<Value> = serde_json::from_str(&json.stdout).expect("JSON output");
    assert_eq!(members.len(), 3);
    let leader: Vec<&Value> = members.iter().filter(|m| m["Role"] == "Leader").collect();
    assert_eq!(leader.len(), 1);
    assert_eq!(leader[0]["Member"], holder.as_str());
    assert!(members.iter().all(|m| m["Cluster"] == "pg"));

    // An unknown cluster: one line a person can act on, exit 1.
    let missing = pgwarden(ns, &["list", "nosuch"]).await;
    assert_eq!(missing.code, 1);
    assert_eq!(
        missing.stderr.trim(),
        format!("error: cluster \"nosuch\" not found in namespace \"{ns}\"")
    );
    // A usage error: exit 2.
    assert_eq!(pgwarden(ns, &["failover", "pg"]).await.code, 2);

    // The other read commands work on the same cluster.
    let status = pgwarden(ns, &["status", "pg"]).await;
    assert_eq!(status.code, 0);
    assert!(status.stdout.contains("Primary:") && status.stdout.contains(&holder));
    assert!(status.stdout.contains("Conditions:"));
    let history = pgwarden(ns, &["history", "pg"]).await;
    assert_eq!(history.code, 0);
    assert!(history.stdout.contains("| TL |"), "{}", history.stdout);
    pg.delete().await;
}

/// 2. `kubectl pgwarden switchover --force` through the apiserver's pod proxy (the token in
/// X-Pgwarden-Token): the Lease moves to the candidate, the `-rw` Service's endpoints follow, the
/// history records it. Refusals come back with Patroni's messages and exit 1, and without
/// --force (no terminal) nothing happens.
#[tokio::test]
#[ignore]
async fn switchover_moves_the_primary_and_the_rw_endpoints_follow() {
    let ns = "e2e-cli-switchover";
    let pg = Pg::create(ns, "pg", &spec(3, "")).await;
    let old = pg.wait_healthy(3, 5 * MIN).await;
    let target = pg
        .labelled("replica")
        .await
        .into_iter()
        .next()
        .expect("a replica");

    // Not confirmed: refused, nothing moves.
    let unconfirmed = pgwarden(ns, &["switchover", "pg", "--candidate", &target]).await;
    assert_eq!(unconfirmed.code, 1);
    assert!(
        unconfirmed.stderr.contains("Aborting switchover"),
        "{}",
        unconfirmed.stderr
    );
    assert_eq!(pg.lease_holder().await.as_deref(), Some(old.as_str()));

    // Client-side checks, Patroni's words.
    let unknown = pgwarden(ns, &["switchover", "pg", "--candidate", "pg-9", "--force"]).await;
    assert_eq!(unknown.code, 1);
    assert!(
        unknown
            .stderr
            .contains("Member pg-9 does not exist in cluster pg or is tagged as nofailover"),
        "{}",
        unknown.stderr
    );
    let itself = pgwarden(ns, &["failover", "pg", "--candidate", &old, "--force"]).await;
    assert_eq!(itself.code, 1);
    assert!(
        itself
            .stderr
            .contains(&format!("Member {old} is already the leader of cluster pg")),
        "{}",
        itself.stderr
    );
    let wrong_leader = pgwarden(
        ns,
        &[
            "switchover",
            "pg",
            "--leader",
            &target,
            "--candidate",
            &target,
            "--force",
        ],
    )
    .await;
    assert_eq!(wrong_leader.code, 1);
    assert!(
        wrong_leader
            .stderr
            .contains(&format!("Member {target} is not the leader of cluster pg")),
        "{}",
        wrong_leader.stderr
    );

    log(format!("switchover {old} -> {target}"));
    let run = pgwarden(ns, &["switchover", "pg", "--candidate", &target, "--force"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("Current cluster topology\n"));
    assert!(
        run.stdout
            .contains(&format!("Successfully switched over to \"{target}\"")),
        "the agent's answer is shown: {}",
        run.stdout
    );
    assert_eq!(
        pg.lease_holder().await.as_deref(),
        Some(target.as_str()),
        "the candidate holds the Lease when the command returns"
    );
    // The table after the switchover shows the candidate as Leader.
    let after = run
        .stdout
        .rsplit("+ Cluster: pg (")
        .next()
        .unwrap_or_default();
    assert!(
        rows(after)
            .iter()
            .any(|r| r[0] == target && r[2] == "Leader"),
        "the final table shows {target} as Leader: {}",
        run.stdout
    );
    wait_until(MIN, "-rw endpoints to be the new primary only", || async {
        pg.endpoints("pg-rw").await == BTreeSet::from([target.clone()])
    })
    .await;
    let primary = pg.wait_healthy(3, 3 * MIN).await;
    assert_eq!(primary, target);
    assert!(
        pg.endpoints("pg-ro").await.contains(&old),
        "the old primary serves as a replica"
    );
    let history = pgwarden(ns, &["history", "pg"]).await;
    assert_eq!(history.code, 0);
    assert!(
        history
            .stdout
            .lines()
            .any(|l| l.contains("| switchover ") && l.contains(&target)),
        "the history records the switchover to {target}: {}",
        history.stdout
    );
    pg.delete().await;
}

/// Every member other than `leader` is a replica: its annotation does not say primary and its
/// PostgreSQL (when it answers) is in recovery.
async fn nobody_else_is_primary(pg: &Pg, leader: &str) -> Result<(), String> {
    for p in pg.pods().await {
        let name = p.metadata.name.clone().unwrap_or_default();
        if name == leader {
            continue;
        }
        if let Some(s) = pg.member_status(&name).await
            && s["role"] == "primary"
        {
            return Err(format!("{name} publishes role primary: {s}"));
        }
        if let Ok(c) = pg.connect_pod(&name).await
            && let Ok(row) = c.query_one("SELECT pg_is_in_recovery()", &[]).await
            && !row.get::<_, bool>(0)
        {
            return Err(format!("{name} accepts writes"));
        }
    }
    Ok(())
}

/// 3. Maintenance mode: `pause --wait` returns once every agent reports it; then the primary's
/// postmaster is killed (kill -9, the agent stays) and for 30 s nobody is promoted: the Lease
/// holder does not change and no other member is primary. `resume --wait`, and the cluster heals
/// (the agent restarts postgres, or a replica takes over: either is fine).
#[tokio::test]
#[ignore]
async fn pause_prevents_failover_of_a_dead_primary_and_resume_heals() {
    let ns = "e2e-cli-pause";
    let pg = Pg::create(ns, "pg", &spec(3, "")).await;
    let primary = pg.wait_healthy(3, 5 * MIN).await;

    let paused = pgwarden(ns, &["pause", "pg", "--wait"]).await;
    assert_eq!(paused.code, 0, "{}", paused.stderr);
    assert!(
        paused
            .stdout
            .contains("Success: cluster management is paused"),
        "{}",
        paused.stdout
    );
    assert!(pg.cluster().await.spec.pause, "spec.pause is set");
    let again = pgwarden(ns, &["pause", "pg"]).await;
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("Cluster is already paused"));
    let list = pgwarden(ns, &["list", "pg"]).await;
    assert!(
        list.stdout.contains(" Maintenance mode: on"),
        "{}",
        list.stdout
    );

    let holder = pg.lease_holder().await.expect("a Lease holder");
    assert_eq!(holder, primary);
    wait_until(MIN, "the primary's postmaster on the host", || async {
        pg.postmaster_pid(&primary).is_some()
    })
    .await;
    let pid = pg
        .postmaster_pid(&primary)
        .expect("the postmaster's host pid");
    log(format!(
        "kill -9 of the postmaster of {primary} (host pid {pid})"
    ));
    signal(pid, libc::SIGKILL);

    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let h = pg.lease_holder().await;
        assert_eq!(
            h.as_deref(),
            Some(primary.as_str()),
            "the Lease holder changed while paused ({:?} in)",
            start.elapsed()
        );
        if let Err(e) = nobody_else_is_primary(&pg, &primary).await {
            panic!("a promotion while paused ({:?} in): {e}", start.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        pg.agent_pid(&primary).is_some(),
        "the agent survived the postmaster's death"
    );
    log("no promotion in 30 s while paused");

    let resumed = pgwarden(ns, &["resume", "pg", "--wait"]).await;
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(
        resumed
            .stdout
            .contains("Success: cluster management is resumed"),
        "{}",
        resumed.stdout
    );
    assert!(!pg.cluster().await.spec.pause);
    let healed = pg.wait_healthy(3, 5 * MIN).await;
    log(format!(
        "healthy again with {healed} as primary ({})",
        if healed == primary {
            "postgres restarted in place"
        } else {
            "a replica took over"
        }
    ));
    let list = pgwarden(ns, &["list", "pg"]).await;
    assert_eq!(list.code, 0);
    assert!(!list.stdout.contains("Maintenance mode"), "{}", list.stdout);
    pg.delete().await;
}
