//! Integration tier: the safety core under faults found by reading the code or by measuring
//! (issue "Prove the safety core"). Each scenario is the test that failed before its fix. Three
//! agents as processes against a real kube-apiserver and real PostgreSQL 15, faults from outside
//! (kill -9, SIGSTOP). Run by `make integration` with `--ignored`, like tests/ha.rs.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;

use pgwarden::agent::softdog::{children_of, kill_postmaster};
use support::agents::{self, Cluster};
use support::iptables::Cut;
use support::process::signal;
use support::testbed::ApiserverDown;
use support::traffic::{self, Prober, Writer};
use support::wait::retry;

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

/// The children of process `parent` whose command line (a PostgreSQL process title, or the
/// agent's `softdog` subcommand) contains `what`.
fn children_titled(parent: i32, what: &str) -> Vec<i32> {
    children_of(parent)
        .into_iter()
        .filter(|child| {
            std::fs::read(format!("/proc/{child}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(what))
        })
        .collect()
}

/// A child of `parent` whose command line contains `what` ("checkpointer").
fn child_titled(parent: i32, what: &str) -> Option<i32> {
    children_titled(parent, what).into_iter().next()
}

/// The startup process (crash recovery or WAL replay) of postmaster `pm`, if it runs now.
fn startup_process(pm: i32) -> Option<i32> {
    child_titled(pm, "startup")
}

/// Hole 1: a primary's crash recovery longer than the fence deadline. The postmaster is killed
/// (-9, the agent lives); the agent starts it again as primary, and its startup process is
/// frozen (SIGSTOP) for longer than ttl, as slow storage would make a long replay. The fence
/// counted the start against the last renew and killed the recovering postmaster, again and
/// again, while each start renewed the Lease: no primary and no failover. Now the agent keeps
/// renewing while PostgreSQL is starting, the recovering postmaster survives, and the same
/// member leads when the replay ends.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn a_primary_in_slow_crash_recovery_keeps_its_lease_and_its_postmaster() {
    let (c, p) = agents::three("recovery", SLOW).await;
    let old = c.members[p].name.clone();
    // WAL after the last checkpoint, for the restart to replay.
    c.connect(p)
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE big (id int, pad text);
             INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 1000000) g",
        )
        .await
        .unwrap();
    let pm = c.members[p]
        .postmaster_pid()
        .expect("the primary's postmaster");
    kill_postmaster(pm);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (restarted, startup) = loop {
        if let Some(new) = c.members[p].postmaster_pid().filter(|n| *n != pm)
            && let Some(s) = startup_process(new)
        {
            break (new, s);
        }
        assert!(
            Instant::now() < deadline,
            "no crash recovery of a restarted postmaster seen"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    signal(startup, libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(c.ttl + 4)).await;
    signal(startup, libc::SIGCONT);
    c.wait_until(SLOW, "the recovered member to lead", |c| {
        c.answering("/primary") == vec![p]
    })
    .await;
    assert_eq!(
        c.members[p].postmaster_pid(),
        Some(restarted),
        "the postmaster in crash recovery was killed"
    );
    assert_eq!(c.holder().await.as_deref(), Some(old.as_str()));
    let rows: i64 = c
        .connect(p)
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM big", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1_000_000);
}

/// Hole 1, the promotion: a replica that wins the Lease promotes through its replay backlog.
/// `pg_promote(true, 60)` waited for the replay inside one cycle, with the fencing clock running
/// from the renew before it: a replay longer than the fence deadline got the new primary killed
/// halfway, restarted, and the failover took that much longer. Here every replica's startup
/// process is frozen (SIGSTOP, as slow storage makes a long replay) before the primary dies
/// (kill -9); the winner's promotion then cannot end until the startup process thaws, ttl + 4 s
/// later. Now the promotion is signalled and the loop renews the Lease while it runs: the
/// promoting postmaster survives, the Lease stays with it all along (nobody else races), no two
/// members are ever writable, and it leads with every acknowledged write once the replay ends.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn a_promotion_through_a_long_replay_keeps_its_lease_and_its_postmaster() {
    let (mut c, p) = agents::three("promoting", SLOW).await;
    let old = c.members[p].name.clone();
    let replicas: Vec<usize> = (0..3).filter(|i| *i != p).collect();
    let mut frozen = vec![];
    for r in &replicas {
        let pm = c.members[*r]
            .postmaster_pid()
            .expect("a replica's postmaster");
        let startup = startup_process(pm).expect("a replica's startup process");
        signal(startup, libc::SIGSTOP);
        frozen.push((*r, pm, startup));
    }
    // WAL the replicas receive (asynchronously: the writer stops a second before the kill, so
    // every acknowledged write reached them) but cannot replay.
    let writer = Writer::start(&c.members[p].ip, "w", Duration::from_millis(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (acked, _) = writer.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let prober = Prober::start(&c);
    c.kill9(p);
    let winner = retry(SLOW, Duration::from_millis(100), || async {
        c.holder().await.filter(|h| *h != old).ok_or(())
    })
    .await
    .expect("no replica took the Lease");
    let w = c.index_of(&winner);
    // Longer than the fence deadline and the ttl: the promotion hangs in the frozen replay.
    let deadline = Instant::now() + Duration::from_secs(c.ttl + 4);
    while Instant::now() < deadline {
        assert_eq!(
            c.holder().await.as_deref(),
            Some(winner.as_str()),
            "the Lease moved away from the promoting member"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (_, _, startup) in &frozen {
        signal(*startup, libc::SIGCONT);
    }
    c.wait_until(SLOW, "the promoted member to lead", |c| {
        c.answering("/primary") == vec![w]
    })
    .await;
    let samples = prober.stop().await;
    traffic::assert_never_two_writable(&samples);
    let (_, pm, _) = frozen.iter().find(|(r, _, _)| *r == w).expect("the winner");
    assert_eq!(
        c.members[w].postmaster_pid(),
        Some(*pm),
        "the promoting postmaster was killed"
    );
    assert_eq!(c.holder().await.as_deref(), Some(winner.as_str()));
    let lost = traffic::lost_writes(&c.members[w].ip, "w", &acked).await;
    assert!(lost.is_empty(), "{} acknowledged writes lost", lost.len());
}

/// Hole 11, the clone: a basebackup ran inside the loop, so for as long as it took the agent
/// published nothing and `/liveness` failed after 2 x ttl; in a pod the kubelet then killed a
/// reinitialisation of any large database halfway, again and again. Here a replica is
/// reinitialised and its pg_basebackup frozen (SIGSTOP, as a slow network makes a long copy) for
/// 2 x ttl + 6 s: `/liveness` answers 200 all along and the member says it is creating a
/// replica; once the copy goes on, the member streams again with the primary's data.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn a_long_basebackup_keeps_the_agent_live() {
    let (c, p) = agents::three("clone", SLOW).await;
    let r = (0..3).find(|i| *i != p).unwrap();
    let auth = format!("Bearer {}", agents::TOKEN);
    let h = [("Authorization", auth.as_str())];
    let (code, msg) = c.http(r, "POST", "/reinitialize", &h, Some(r#"{"force": true}"#));
    assert_eq!((code, msg.as_str()), (200, "reinitialize started"));
    let agent = c.members[r].agent_pid().expect("the replica's agent");
    let basebackup = retry(
        Duration::from_secs(30),
        Duration::from_millis(2),
        || async { child_titled(agent, "pg_basebackup").ok_or(()) },
    )
    .await
    .expect("no pg_basebackup seen");
    signal(basebackup, libc::SIGSTOP);
    let until = Instant::now() + Duration::from_secs(2 * c.ttl + 6);
    let mut states = std::collections::BTreeSet::new();
    while Instant::now() < until {
        let (code, _) = c.http(r, "GET", "/liveness", &[], None);
        assert_eq!(code, 200, "/liveness failed during the basebackup");
        let (_, v) = c.get_json(r, "/patroni");
        states.insert(v["state"].as_str().unwrap_or("").to_string());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    signal(basebackup, libc::SIGCONT);
    assert!(
        states.contains("creating replica"),
        "the member did not say it was creating a replica: {states:?}"
    );
    c.wait_until(SLOW, "the reinitialised replica streaming", |c| {
        c.http(r, "GET", "/replica?replication_state=streaming", &[], None)
            .0
            == 200
    })
    .await;
    let name = c.members[r].name.clone();
    c.wait_event(
        "ReplicaCreated",
        &format!("{name} was created as a replica"),
    )
    .await;
}

/// The cluster's history as the state ConfigMap holds it: `(timeline, switch LSN)` per row.
async fn recorded_history(c: &Cluster) -> Vec<(u64, u64)> {
    let text = c
        .state()
        .await
        .data
        .unwrap_or_default()
        .get("history")
        .cloned()
        .unwrap_or_else(|| "[]".into());
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
    rows.iter()
        .filter_map(|r| Some((r[0].as_u64()?, r[1].as_u64()?)))
        .collect()
}

/// Hole 8, the history: the promotion's entry named the timeline the replica believed it was
/// on, which after a failover is the last restartpoint's when nothing streams (the primary just
/// died): the second of two failovers within checkpoint_timeout was recorded as the first one's
/// timeline and dropped as a duplicate (seen on the demo cluster: PostgreSQL on timeline 4, the
/// history one switch short). Rewind decisions read this history. Here two failovers (kill -9
/// of the primary) follow each other; the history must hold each switch PostgreSQL made, with
/// PostgreSQL's own switch points (its newest `.history` file on the last primary).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn the_history_holds_every_timeline_switch_of_consecutive_failovers() {
    let (mut c, p0) = agents::three("history", SLOW).await;
    c.kill9(p0);
    c.wait_until(SLOW, "a new primary", |c| {
        let a = c.answering("/primary");
        a.len() == 1 && a[0] != p0
    })
    .await;
    let p1 = c.answering("/primary")[0];
    c.start(p0);
    c.wait_until(SLOW, "two streaming replicas again", |c| {
        c.answering("/replica").len() == 2
    })
    .await;
    c.kill9(p1);
    c.wait_until(SLOW, "a third primary", |c| {
        let a = c.answering("/primary");
        a.len() == 1 && a[0] != p1
    })
    .await;
    let p2 = c.answering("/primary")[0];
    let client = c.connect(p2).await.unwrap();
    let file: String = client
        .query_one(
            "SELECT pg_read_file('pg_wal/' || name) FROM pg_ls_waldir()
              WHERE name ~ '^[0-9A-F]{8}[.]history$' ORDER BY name DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let switches: Vec<(u64, u64)> = file
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let tli = f.next()?.parse().ok()?;
            let lsn = pgwarden::agent::postgres::parse_lsn(f.next()?)?;
            Some((tli, lsn))
        })
        .collect();
    assert_eq!(switches.len(), 2, "PostgreSQL's history: {file}");
    retry(
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let recorded = recorded_history(&c).await;
            if recorded == switches {
                Ok(())
            } else {
                Err(recorded)
            }
        },
    )
    .await
    .unwrap_or_else(|recorded| {
        panic!("the history holds {recorded:?}; PostgreSQL switched at {switches:?}")
    });
}

/// Patroni's primary_start_timeout: a Lease holder whose PostgreSQL cannot start held the Lease
/// forever, renewing it before every failed start: the cluster stayed without a primary while
/// healthy replicas waited. Here the primary's postmaster is killed and its address taken by
/// another process (its port bound first, as a stray process would), so every start fails;
/// with primaryStartTimeout 10 s it releases the Lease and a replica takes over, and once the
/// port is free again the old primary rejoins as a replica.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn a_primary_that_cannot_start_hands_over_after_primary_start_timeout() {
    let mut c = Cluster::new("pstart", 3).await;
    for m in &mut c.members {
        m.extra = vec!["--primary-start-timeout".into(), "10".into()];
    }
    c.start_all();
    let p = c.wait_primary(SLOW).await;
    c.wait_until(SLOW, "two streaming replicas", |c| {
        c.answering("/replica").len() == 2
    })
    .await;
    let old = c.members[p].name.clone();
    let pm = c.members[p]
        .postmaster_pid()
        .expect("the primary's postmaster");
    kill_postmaster(pm);
    let addr = format!("{}:5432", c.members[p].ip);
    let deadline = Instant::now() + Duration::from_secs(5);
    let squatter = loop {
        match std::net::TcpListener::bind(&addr) {
            Ok(l) => break l,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot take {addr}: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    c.wait_until(SLOW, "a replica to take over", |c| {
        let a = c.answering("/primary");
        a.len() == 1 && a[0] != p
    })
    .await;
    assert_ne!(c.holder().await.as_deref(), Some(old.as_str()));
    let log = std::fs::read_to_string(c.dir.join(format!("{old}.log"))).unwrap();
    assert!(
        log.contains("primary start timed out"),
        "the old primary did not say why it let go"
    );
    drop(squatter);
    c.wait_until(SLOW, "the old primary back as a replica", |c| {
        c.answering("/replica").contains(&p)
    })
    .await;
}

/// Hole 9: a clean stop of a busy primary turned into a crash by its own watchdog. The
/// watchdog stayed armed and unfed through the CHECKPOINT before the stop and the whole fast
/// shutdown; a shutdown checkpoint longer than its timeout got the postmaster killed, and WAL
/// the replicas never received with it. Here the primary's checkpointer is frozen (SIGSTOP, as
/// slow storage makes a checkpoint long) while a writer writes, its agent gets SIGTERM (a pod
/// deletion), and the checkpointer thaws after longer than the watchdog's timeout. Now the
/// checkpoint asked for before the stop is bounded and the watchdog is disarmed once no client
/// is left: the stop is clean, nothing is fenced, and every acknowledged write is on the new
/// primary.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn a_slow_clean_stop_of_the_primary_is_not_fenced() {
    let (mut c, p) = agents::three("cleanstop", SLOW).await;
    let writer = Writer::start(&c.members[p].ip, "w", Duration::from_millis(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pm = c.members[p]
        .postmaster_pid()
        .expect("the primary's postmaster");
    let checkpointer = child_titled(pm, "checkpointer").expect("the checkpointer");
    signal(checkpointer, libc::SIGSTOP);
    c.signal_agent(p, libc::SIGTERM);
    tokio::time::sleep(Duration::from_secs(c.ttl + 4)).await;
    signal(checkpointer, libc::SIGCONT);
    assert!(c.wait_exit(p, SLOW), "the agent did not exit after SIGTERM");
    let (acked, _) = writer.stop().await;
    let log = std::fs::read_to_string(c.dir.join(format!("{}.log", c.members[p].name)))
        .unwrap_or_default();
    assert!(
        !log.contains("fenced") && !log.contains("fencing"),
        "the clean stop was fenced: {}",
        log.lines()
            .filter(|l| l.contains("fenc"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let n = c.wait_primary(SLOW).await;
    assert_ne!(n, p);
    let lost = traffic::lost_writes(&c.members[n].ip, "w", &acked).await;
    assert!(
        lost.is_empty(),
        "{} acknowledged writes missing on the new primary, first: {:?}",
        lost.len(),
        lost.first()
    );
}

/// Hole 4: a primary started again (its agent and PostgreSQL killed, the agent restarted while
/// it still holds the Lease) ran with an empty `synchronous_standby_names` until its next
/// synchronous step, acknowledging commits locally while the `sync` key still named a standby
/// that may be promoted. Strict mode; the published synchronous standby B stops receiving (its
/// walreceiver frozen), the primary is killed and restarted, and its agent is frozen the moment
/// PostgreSQL takes connections (so no synchronous step comes); a writer writes to it for a
/// second, then it is killed again. B, the only member allowed to take over, must hold every
/// write the restarted primary acknowledged. Now a primary starts with the standbys the `sync`
/// key names (or `*` in strict mode), so those writes wait for B instead.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn a_restarted_primary_acknowledges_nothing_its_synchronous_standby_lacks() {
    let (mut c, p) = agents::three_synchronous("syncstart", "strict", SLOW).await;
    let b = c.answering("/sync")[0];
    c.connect(p)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE acked (id bigint PRIMARY KEY)")
        .await
        .unwrap();
    let b_pm = c.members[b].postmaster_pid().expect("B's postmaster");
    let receiver = child_titled(b_pm, "walreceiver").expect("B's walreceiver");
    signal(receiver, libc::SIGSTOP);
    c.kill9(p);
    c.start(p);
    let ip = c.members[p].ip.clone();
    let deadline = Instant::now() + SLOW;
    let client = loop {
        if let Ok(Ok(cl)) =
            tokio::time::timeout(Duration::from_millis(500), agents::connect(&ip)).await
        {
            break cl;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted primary never took connections"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    c.signal_agent(p, libc::SIGSTOP);
    let open = Instant::now();
    let mut acked = vec![];
    let mut id = 0i64;
    while open.elapsed() < Duration::from_secs(1) {
        id += 1;
        if let Ok(Ok(_)) = tokio::time::timeout(
            Duration::from_millis(300),
            client.execute("INSERT INTO acked VALUES ($1)", &[&id]),
        )
        .await
        {
            acked.push(id);
        }
    }
    c.kill9(p);
    signal(receiver, libc::SIGCONT);
    let n = c.wait_primary(SLOW).await;
    assert_eq!(n, b, "a member outside the synchronous set was promoted");
    let lost = traffic::lost_writes(&c.members[n].ip, "acked", &acked).await;
    assert!(
        lost.is_empty(),
        "{} of {} writes acknowledged by the restarted primary are missing on its synchronous standby, first: {:?}",
        lost.len(),
        acked.len(),
        lost.first()
    );
}

/// Hole 10: nothing watched the softdog. Killed once, it was never started again, keepalives
/// failed with a warning, and a primary whose agent then froze kept PostgreSQL accepting writes
/// while another member took over. Now the agent starts a dead softdog again on its next loop
/// and the next renew arms it: the softdog is killed (-9), and a few seconds later the
/// primary's agent is frozen (SIGSTOP) for longer than ttl. A prober asks every member ten times
/// a second whether it accepts writes: never two at once, and the frozen primary's PostgreSQL
/// is killed.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn a_killed_softdog_is_replaced_before_it_is_needed() {
    let (c, p) = agents::three("softdog", SLOW).await;
    let agent = c.members[p].agent_pid().expect("the primary's agent");
    let softdog = child_titled(agent, "softdog").expect("the primary's softdog");
    let prober = Prober::start(&c);
    signal(softdog, libc::SIGKILL);
    // One loop to start it again, one renew to arm it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.signal_agent(p, libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(c.ttl + 12)).await;
    let samples = prober.stop().await;
    c.signal_agent(p, libc::SIGCONT);
    traffic::assert_never_two_writable(&samples);
    assert!(
        c.members[p].postmaster_pid().is_none(),
        "the frozen primary's postgres was not fenced"
    );
    let n = c.wait_primary(SLOW).await;
    assert_ne!(n, p, "nobody took over from the frozen primary");
}

/// Every process of member `i`'s "pod" (its agent and everything the agent started: the
/// softdog, the postmaster and its children), as a cgroup freezer sees it.
fn pod_processes(c: &Cluster, i: usize) -> Vec<i32> {
    let mut all = vec![];
    let mut next: Vec<i32> = c.members[i].agent_pid().into_iter().collect();
    next.extend(c.members[i].postmaster_pid());
    while let Some(pid) = next.pop() {
        if !all.contains(&pid) {
            all.push(pid);
            next.extend(children_of(pid));
        }
    }
    all
}

/// Hole 10, the frozen pod: every process of the primary's pod frozen at once (as the cgroup
/// freezer or a paused VM does: agent, softdog, PostgreSQL), a replica takes over, and the pod
/// thaws, PostgreSQL first (the worst order). Nothing in the pod counted while it was frozen,
/// so the old primary's backends run again before anything can kill them: a client whose
/// INSERT was in flight gets it acknowledged by the old primary after a new one exists. This
/// measures that window and bounds it: the softdog and the fencing thread find their deadline
/// long past on their first tick and kill the postmaster within a second of the thaw (in
/// practice a few milliseconds: the numbers are printed, and in docs/architecture.md). Only a
/// watchdog outside the pod (the host's `/dev/watchdog`, which resets the node while it is
/// frozen) closes it; in synchronous mode such a commit is never acknowledged.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn a_thawed_primary_pod_is_fenced_within_a_second() {
    let (c, p) = agents::three("thaw", SLOW).await;
    let client = c.connect(p).await.expect("connect to the primary");
    client
        .batch_execute("CREATE TABLE thaw (id bigint PRIMARY KEY)")
        .await
        .unwrap();
    // A client writing as fast as the old primary answers, with no timeout: its INSERT in
    // flight at the freeze completes at the thaw.
    let writer = tokio::spawn(async move {
        let mut acked = vec![];
        for id in 1i64.. {
            match client.execute("INSERT INTO thaw VALUES ($1)", &[&id]).await {
                Ok(_) => acked.push(Instant::now()),
                Err(_) => break,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        acked
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let postmaster = c.members[p]
        .postmaster_pid()
        .expect("the primary's postmaster");
    let pod = pod_processes(&c, p);
    for pid in &pod {
        signal(*pid, libc::SIGSTOP);
    }
    let old = c.members[p].name.clone();
    let n = retry(SLOW, Duration::from_millis(100), || async {
        let h = c.holder().await.filter(|h| *h != old).ok_or(())?;
        let n = c.index_of(&h);
        (c.http(n, "GET", "/primary", &[], None).0 == 200)
            .then_some(n)
            .ok_or(())
    })
    .await
    .expect("nobody took over from the frozen pod");
    // PostgreSQL thaws first, then the agent and its softdog.
    let (mut first, mut rest): (Vec<i32>, Vec<i32>) = pod.iter().partition(|pid| {
        std::fs::read(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| String::from_utf8_lossy(&comm).trim() == "postgres")
    });
    first.append(&mut rest);
    let thawed = Instant::now();
    for pid in &first {
        signal(*pid, libc::SIGCONT);
    }
    let mut killed_after = None;
    while thawed.elapsed() < Duration::from_secs(5) {
        if !std::path::Path::new(&format!("/proc/{postmaster}")).exists()
            || std::fs::read_to_string(format!("/proc/{postmaster}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
        {
            killed_after = Some(thawed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let acked = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("the old primary's client ends")
        .expect("the writer");
    let after: Vec<Duration> = acked
        .iter()
        .filter(|t| **t >= thawed)
        .map(|t| t.duration_since(thawed))
        .collect();
    eprintln!(
        "thaw of the frozen primary pod: postmaster killed {killed_after:?} after the thaw; {} write(s) acknowledged by the old primary after the thaw, the last {:?} after it",
        after.len(),
        after.last()
    );
    let killed_after = killed_after.expect("the thawed postmaster was not killed within 5 s");
    assert!(
        killed_after < Duration::from_secs(1),
        "the thawed postmaster lived {killed_after:?}"
    );
    assert!(
        after.iter().all(|d| *d < Duration::from_secs(1)),
        "the old primary acknowledged writes until {:?} after the thaw",
        after.last()
    );
    assert_eq!(c.wait_primary(SLOW).await, n);
}

/// Set or clear the state ConfigMap's `pause` key, as `kubectl pgwarden pause|resume` does.
async fn set_pause(c: &Cluster, on: bool) {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams};
    let patch = serde_json::json!({"data": {"pause": if on { "true" } else { "false" }}});
    Api::<ConfigMap>::namespaced(c.client.clone(), &c.ns)
        .patch(
            &format!("{}-state", c.name),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("patch the state ConfigMap");
}

/// Hole 12: pause stopped the Lease renewal, so on resume the Lease had expired on every clock
/// and only the replicas' peer probe kept them from racing the running primary. With that probe
/// cut (the primary's REST port dropped by iptables) a replica promoted while the old primary
/// still took writes. Now a paused primary keeps renewing (as Patroni does): the cluster is
/// paused for longer than ttl, the primary's REST port is cut, the cluster resumes while the
/// primary's agent is frozen for 3 s, and for ttl + 4 s after nobody else becomes writable and
/// the Lease stays with the primary.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn a_paused_primary_keeps_its_lease_so_nobody_races_on_resume() {
    let (c, p) = agents::three("pause", SLOW).await;
    let old = c.members[p].name.clone();
    set_pause(&c, true).await;
    c.wait_until(SLOW, "every member to report the pause", |c| {
        (0..3).all(|i| c.get_json(i, "/patroni").1["pause"] == true)
    })
    .await;
    // Longer than ttl: a Lease nobody renews has expired on every member's clock by now.
    tokio::time::sleep(Duration::from_secs(c.ttl + 4)).await;
    let cut = Cut::port(&c.members[p].ip, 8008);
    let prober = Prober::start(&c);
    // The primary's agent is slow to notice the resume (frozen for 3 s, less than any ttl).
    c.signal_agent(p, libc::SIGSTOP);
    set_pause(&c, false).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.signal_agent(p, libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(c.ttl + 4)).await;
    let samples = prober.stop().await;
    drop(cut);
    let two = traffic::two_writable(&samples);
    assert!(
        two.is_empty(),
        "{} samples saw two writable members after the resume, first: {:?}",
        two.len(),
        two.first()
    );
    assert_eq!(c.holder().await.as_deref(), Some(old.as_str()));
}

/// Pause survives the control plane: with the apiserver away, an agent could not read the
/// `pause` key and forgot it, so the paused primary was demoted at its first failed read (its
/// fence had stood down for the pause, so it had no grace either): a maintenance window ended
/// by an apiserver restart. Patroni keeps the cluster it last read. Here the paused cluster
/// (failsafe off) loses its apiserver for ttl + 7 s: the primary keeps its postmaster and every
/// write, and after the resume it still leads and nobody else became writable.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn a_paused_cluster_rides_out_an_apiserver_outage() {
    let (c, p) = agents::three("pauseout", SLOW).await;
    let old = c.members[p].name.clone();
    set_pause(&c, true).await;
    c.wait_until(SLOW, "every member to report the pause", |c| {
        (0..3).all(|i| c.get_json(i, "/patroni").1["pause"] == true)
    })
    .await;
    let postmaster = c.members[p].postmaster_pid();
    let prober = Prober::start(&c);
    let writer = Writer::start(&c.members[p].ip, "w", Duration::from_millis(20)).await;
    let down = ApiserverDown::now();
    tokio::time::sleep(Duration::from_secs(c.ttl + 7)).await;
    down.start();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (acked, errors) = writer.stop().await;
    let refused = traffic::refused(&errors);
    assert!(
        refused.is_empty(),
        "{} writes refused by the paused primary, first: {:?}",
        refused.len(),
        refused.first()
    );
    support::wait::log(format!("{} writes answered later than 1 s", errors.len()));
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    assert_eq!(
        c.members[p].postmaster_pid(),
        postmaster,
        "the paused primary's postmaster was stopped"
    );
    set_pause(&c, false).await;
    tokio::time::sleep(Duration::from_secs(c.ttl + 2)).await;
    let samples = prober.stop().await;
    traffic::assert_never_two_writable(&samples);
    assert_eq!(c.holder().await.as_deref(), Some(old.as_str()));
    assert_eq!(c.wait_primary(SLOW).await, p);
}

/// Three members, the primary `p` and a replica `r`, both replicas labelled.
async fn three_labelled(tag: &str) -> (Cluster, usize, usize) {
    let (c, p) = agents::three(tag, SLOW).await;
    let r = (0..3).find(|i| *i != p).unwrap();
    c.wait_until(SLOW, "the replicas to be labelled", |c| {
        c.answering("/replica").len() == 2
    })
    .await;
    (c, p, r)
}

/// `POST /switchover` from member `p` to member `r`, answered in the background: `(status,
/// message)`.
fn switchover_in_background(
    c: &Cluster,
    p: usize,
    r: usize,
) -> tokio::task::JoinHandle<(u16, String)> {
    let body = format!(
        r#"{{"leader": "{}", "candidate": "{}"}}"#,
        c.members[p].name, c.members[r].name
    );
    let ip = c.members[p].ip.clone();
    tokio::task::spawn_blocking(move || {
        let auth = format!("Bearer {}", agents::TOKEN);
        let h = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        agents::http(&ip, 8008, "POST", "/switchover", &h, Some(&body))
    })
}

/// Follow every change of the role label on the pods `config` selects, from a watch (polling
/// could miss a flap of a few ms): `changed(labels, pod)` is called with every pod's label seen
/// so far after `pod`'s changed, says whether the awaited labels hold, and panics on what must
/// never be seen. Returns `true` once they held and 6 more seconds passed, `false` when they
/// never held within `SLOW`.
async fn follow_role_labels(
    c: &Cluster,
    config: watcher::Config,
    mut changed: impl FnMut(&std::collections::BTreeMap<String, Option<String>>, &str) -> bool,
) -> bool {
    let mut labels = std::collections::BTreeMap::new();
    let mut pods = std::pin::pin!(watcher::watcher(
        kube::Api::<Pod>::namespaced(c.client.clone(), &c.ns),
        config,
    ));
    let deadline = Instant::now() + SLOW;
    let mut held: Option<Instant> = None;
    while held.is_none_or(|t| t.elapsed() < Duration::from_secs(6)) {
        let wait = match held {
            Some(t) => Duration::from_secs(6).saturating_sub(t.elapsed()),
            None => deadline.saturating_duration_since(Instant::now()),
        };
        let pod = match tokio::time::timeout(wait, pods.next()).await {
            Ok(Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)))) => pod,
            Ok(_) => continue,
            Err(_) if held.is_some() => break,
            Err(_) => return false,
        };
        let Some(name) = pod.metadata.name.clone() else {
            continue;
        };
        let label = pod
            .metadata
            .labels
            .and_then(|l| l.get("pgwarden.io/role").cloned());
        if labels.get(&name) == Some(&label) {
            continue;
        }
        labels.insert(name.clone(), label);
        if changed(&labels, &name) && held.is_none() {
            held = Some(Instant::now());
        }
    }
    true
}

/// The role label on member `i`'s pod.
async fn role_label(c: &Cluster, i: usize) -> Option<String> {
    use k8s_openapi::api::core::v1::Pod;
    kube::Api::<Pod>::namespaced(c.client.clone(), &c.ns)
        .get(&c.members[i].name)
        .await
        .ok()?
        .metadata
        .labels?
        .get("pgwarden.io/role")
        .cloned()
}

/// Set (or with `None` remove) the role label on member `i`'s pod, as someone else would.
async fn set_role_label(c: &Cluster, i: usize, role: Option<&str>) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Patch, PatchParams};
    let patch = serde_json::json!({"metadata": {"labels": {"pgwarden.io/role": role}}});
    kube::Api::<Pod>::namespaced(c.client.clone(), &c.ns)
        .patch(
            &c.members[i].name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("patch the pod's labels");
}

/// Hole 13: an agent wrote its role label only when its own idea of what it had written
/// changed, so a label someone else changed (a person, a stale label updater) stayed wrong:
/// `-rw` without its primary, or routed to a replica. Now each agent compares with the label
/// read every loop: the primary's label removed and `primary` put on a replica are both
/// repaired within a few loops.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn a_role_label_someone_else_changed_is_repaired() {
    let (c, p, r) = three_labelled("label").await;
    set_role_label(&c, p, None).await;
    set_role_label(&c, r, Some("primary")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (lp, lr) = (role_label(&c, p).await, role_label(&c, r).await);
        if lp.as_deref() == Some("primary") && lr.as_deref() == Some("replica") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "labels not repaired in 30 s: primary {lp:?}, replica {lr:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Seen in a drain: the new primary's agent set its `primary` label as the promotion ended and
/// took it off again at the end of the same loop (that loop's Lease read predated its own
/// acquire, so its publish step thought another member held the Lease): `-rw` had no endpoint
/// until the next loop (or a label updater round). Here every change of the candidate's pod is
/// watched through a switchover: once `primary`, the label stays.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn a_new_primary_keeps_the_primary_label_it_set_at_its_promotion() {
    let (c, p, r) = three_labelled("keeplabel").await;
    let switchover = switchover_in_background(&c, p, r);
    let candidate =
        watcher::Config::default().fields(&format!("metadata.name={}", c.members[r].name));
    let mut since: Option<Instant> = None;
    let held = follow_role_labels(&c, candidate, |labels, pod| {
        match (since, labels[pod].as_deref()) {
            (None, Some("primary")) => since = Some(Instant::now()),
            (Some(t), other) if other != Some("primary") => panic!(
                "the new primary's label went from primary to {other:?} {:?} later",
                t.elapsed()
            ),
            _ => {}
        }
        since.is_some()
    })
    .await;
    assert!(held, "the candidate was not labelled primary");
    let (code, msg) = switchover.await.expect("the switchover request");
    assert_eq!(code, 200, "switchover: {msg}");
}

/// Seen in a drain: in a switchover the old primary took its `primary` label off before it
/// stopped, and the new primary set its own only after its promotion, so `-rw` had no endpoint
/// for the whole handover: kube-proxy swaps a "no endpoints" REJECT rule for the new DNAT in two
/// tables, and a client connecting in between hung until its connect timeout (3.2-3.8 s of
/// writes lost in one drain out of three). Now the old primary keeps its label through the
/// handover (it refuses every client: stopping, then fenced), the new primary labels itself
/// before it takes the old label off. Every change of the cluster's pods is watched through a
/// switchover: some pod is labelled `primary` at every moment, the candidate alone in the end,
/// and the old primary never answers a client as a read-only server while it is labelled.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn a_switchover_never_leaves_rw_without_a_primary_label() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (c, p, r) = three_labelled("handover").await;
    assert_eq!(role_label(&c, p).await.as_deref(), Some("primary"));
    let (old, new) = (c.members[p].name.clone(), c.members[r].name.clone());

    // While the old primary carries the label, nothing it answers may be read-only.
    let done = Arc::new(AtomicBool::new(false));
    let checker = {
        let (done, api) = (
            done.clone(),
            kube::Api::<Pod>::namespaced(c.client.clone(), &c.ns),
        );
        let (old, ip) = (old.clone(), c.members[p].ip.clone());
        tokio::spawn(async move {
            let mut read_only = vec![];
            let mut checked = 0;
            let label = || async {
                api.get(&old).await.ok().and_then(|pod| {
                    pod.metadata
                        .labels
                        .and_then(|l| l.get("pgwarden.io/role").cloned())
                })
            };
            while !done.load(Ordering::Relaxed) {
                if label().await.as_deref() == Some("primary") {
                    let connected =
                        tokio::time::timeout(Duration::from_secs(2), agents::connect(&ip)).await;
                    if let Ok(Ok(client)) = connected {
                        checked += 1;
                        // Labelled before and after the answer: it answered while labelled.
                        if let Ok(row) = client.query_one("SELECT pg_is_in_recovery()", &[]).await
                            && row.get::<_, bool>(0)
                            && label().await.as_deref() == Some("primary")
                        {
                            read_only.push(Instant::now());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (read_only, checked)
        })
    };

    let switchover = switchover_in_background(&c, p, r);
    let mut settled = false;
    let mut history = vec![];
    let started = Instant::now();
    let held = follow_role_labels(&c, watcher::Config::default(), |labels, pod| {
        history.push(format!("{:?} {pod} {:?}", started.elapsed(), labels[pod]));
        let primaries: Vec<&String> = labels
            .iter()
            .filter(|(_, l)| l.as_deref() == Some("primary"))
            .map(|(n, _)| n)
            .collect();
        // The initial listing arrives pod by pod: judge once the old primary was seen.
        if labels.contains_key(&old) {
            assert!(
                !primaries.is_empty(),
                "no pod was labelled primary (-rw without an endpoint): {history:?}"
            );
        }
        match (settled, primaries.as_slice()) {
            (false, [only]) if **only == new => settled = true,
            (true, [only]) if **only == new => {}
            (true, _) => panic!("the labels changed after the handover: {history:?}"),
            _ => {}
        }
        settled
    })
    .await;
    assert!(
        held,
        "the candidate was not the only pod labelled primary: {history:?}"
    );
    let (code, msg) = switchover.await.expect("the switchover request");
    assert_eq!(code, 200, "switchover: {msg}");
    done.store(true, Ordering::Relaxed);
    let (read_only, checked) = checker.await.expect("the checker");
    println!(
        "label changes: {history:?}; the old primary answered {checked} connections while labelled"
    );
    assert!(
        read_only.is_empty(),
        "the old primary answered {} queries read-only while labelled primary",
        read_only.len()
    );
    assert_eq!(c.holder().await.as_deref(), Some(new.as_str()));
}

/// Hole 8: a former primary that started read-only and then followed a new leader, holding WAL
/// that leader never had (its PostgreSQL port cut meanwhile, so no replica fetches that WAL from
/// it), never streamed again ("not a child of this server's history"): its
/// control file no longer said it had been primary, and the rewind decision was only taken for a
/// stopped member. Here the primary's WAL senders are frozen while it takes writes (so only it
/// has them), the kube-apiserver is killed for longer than ttl (its fence stops it), and when
/// the apiserver returns it starts read-only and its agent is frozen until another member
/// leads; then it follows. Now a replica on an older timeline that cannot stream for
/// `REWIND_AFTER` is rewound; every member streams from the new leader in the end.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn a_former_primary_that_started_read_only_is_rewound_when_it_cannot_stream() {
    let (c, a) = agents::three("diverge", SLOW).await;
    let old = c.members[a].name.clone();
    let writer = Writer::start(&c.members[a].ip, "w", Duration::from_millis(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pm = c.members[a]
        .postmaster_pid()
        .expect("the primary's postmaster");
    let senders = children_titled(pm, "walsender");
    assert_eq!(senders.len(), 2, "two WAL senders");
    for s in &senders {
        signal(*s, libc::SIGSTOP);
    }
    // Writes only the old primary has; and no replica may fetch them later from it either (a
    // standby serves WAL to a replica still pointed at it).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cut = Cut::port(&c.members[a].ip, 5432);
    let down = ApiserverDown::now();
    tokio::time::sleep(Duration::from_secs(c.ttl + 4)).await;
    let (acked, _) = writer.stop().await;
    assert!(!acked.is_empty(), "the old primary took no write");
    assert!(
        c.members[a].postmaster_pid().is_none(),
        "the fence did not stop the old primary"
    );
    let log = c.dir.join(format!("{old}.log"));
    let read_only_starts = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("starting postgres read-only")
            .count()
    };
    let before = read_only_starts();
    // The other agents are frozen while the apiserver comes back, so that no one leads before
    // the old primary has started read-only (otherwise it starts as a replica of the winner,
    // the path hole 8 is not about); then its agent is frozen at once and theirs thawed, so
    // that another member leads (the old primary would otherwise take its own expired Lease
    // back).
    let others: Vec<usize> = (0..3).filter(|i| *i != a).collect();
    for &i in &others {
        c.signal_agent(i, libc::SIGSTOP);
    }
    down.start();
    let deadline = Instant::now() + SLOW;
    while read_only_starts() == before {
        assert!(
            Instant::now() < deadline,
            "the old primary never started read-only"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    c.signal_agent(a, libc::SIGSTOP);
    for &i in &others {
        c.signal_agent(i, libc::SIGCONT);
    }
    c.wait_until(SLOW, "another member to lead", |c| {
        let p = c.answering("/primary");
        p.len() == 1 && p[0] != a
    })
    .await;
    drop(cut);
    c.signal_agent(a, libc::SIGCONT);
    let new = c.answering("/primary")[0];
    assert_ne!(c.holder().await.as_deref(), Some(old.as_str()));
    c.wait_until(
        Duration::from_secs(120),
        "every replica streaming from the new leader",
        |c| {
            (0..3).filter(|i| *i != new).all(|i| {
                c.http(i, "GET", "/replica?replication_state=streaming", &[], None)
                    .0
                    == 200
            })
        },
    )
    .await;
}

/// Holes 6 and 7: in synchronous mode a switchover goes only to the published synchronous
/// standby (412 for any other, as Patroni answers), and a candidate that dies as the switchover
/// starts does not leave the cluster without a primary: the former sync leader (the old
/// primary, in the `sync` key as its leader) may race again, and the dead candidate, which no
/// longer answers the peer probe, no longer holds the race for itself. No acknowledged write
/// is lost on the way.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn a_synchronous_switchover_goes_only_to_the_sync_standby_and_survives_its_death() {
    let (mut c, p) = agents::three_synchronous("swsync", "on", SLOW).await;
    let sync = c.answering("/sync")[0];
    let other = (0..3).find(|i| *i != p && *i != sync).unwrap();
    let writer = Writer::start(&c.members[p].ip, "w", Duration::from_millis(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let auth = format!("Bearer {}", agents::TOKEN);
    let h = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let leader = c.members[p].name.clone();
    let body = |cand: &str| format!(r#"{{"leader": "{leader}", "candidate": "{cand}"}}"#);
    // Not to the asynchronous replica: it may lack acknowledged commits.
    let (code, msg) = c.http(
        p,
        "POST",
        "/switchover",
        &h,
        Some(&body(&c.members[other].name)),
    );
    assert_eq!(
        (code, msg.as_str()),
        (412, "candidate name does not match with sync_standby")
    );
    assert_eq!(
        c.answering("/primary"),
        vec![p],
        "a refused switchover moved nothing"
    );

    // To the synchronous standby, which is killed (agent and postgres) just before.
    c.kill9(sync);
    let (code, msg) = c.http(
        p,
        "POST",
        "/switchover",
        &h,
        Some(&body(&c.members[sync].name)),
    );
    println!("switchover to the dead candidate: {code} {msg}");
    c.wait_until(SLOW, "a primary that is not the dead candidate", |c| {
        let answering = c.answering("/primary");
        answering.len() == 1 && answering[0] != sync
    })
    .await;
    let primary = c.wait_primary(SLOW).await;
    assert_ne!(primary, other, "the asynchronous replica was promoted");
    let (acked, _) = writer.stop().await;
    assert!(
        acked.len() > 10,
        "the writer barely wrote ({})",
        acked.len()
    );
    let client = c.connect(primary).await.expect("connect to the primary");
    let rows = client
        .query("SELECT id FROM w", &[])
        .await
        .expect("read the rows");
    let have: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !have.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

/// A dead node takes the old primary's agent with it, and the operator too when it ran there:
/// nobody removed the old pod's `primary` label, so `-rw` listed the new primary and the dead
/// one until the node controller marked the pod not ready (40 s and more), and half the new
/// connections went nowhere. The new primary now removes every other `primary` label once its
/// own is set. Here the primary's processes are frozen (no operator runs in this tier): within
/// a few loops after the takeover, the new primary is the only pod labelled primary.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn the_new_primary_takes_the_primary_label_off_a_frozen_former_primary() {
    let (c, p) = agents::three("unlabel", SLOW).await;
    let old = c.members[p].name.clone();
    retry(SLOW, Duration::from_millis(200), || async {
        (role_label(&c, p).await.as_deref() == Some("primary"))
            .then_some(())
            .ok_or(())
    })
    .await
    .expect("the primary's pod is labelled primary");
    let pod = pod_processes(&c, p);
    for pid in &pod {
        signal(*pid, libc::SIGSTOP);
    }
    let n = retry(SLOW, Duration::from_millis(100), || async {
        let h = c.holder().await.filter(|h| *h != old).ok_or(())?;
        Ok::<_, ()>(c.index_of(&h))
    })
    .await
    .expect("nobody took over from the frozen primary");
    let only_new = retry(
        Duration::from_secs(c.ttl),
        Duration::from_millis(200),
        || async {
            let mut labels = vec![];
            for i in 0..3 {
                labels.push(role_label(&c, i).await);
            }
            let primaries: Vec<usize> = (0..3)
                .filter(|i| labels[*i].as_deref() == Some("primary"))
                .collect();
            (primaries == [n]).then_some(()).ok_or(labels)
        },
    )
    .await;
    for pid in &pod {
        signal(*pid, libc::SIGCONT);
    }
    only_new.unwrap_or_else(|labels| {
        panic!("after the takeover by {n} the role labels stayed {labels:?} for ttl")
    });
}
