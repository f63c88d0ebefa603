//! Integration tier: three agents against a real kube-apiserver and real PostgreSQL 15.
//! Needs `e2e/cluster up --control-plane`, root, and KUBECONFIG; `make integration` provides all
//! three and runs these with `--ignored`. In the plain unit run they are listed as ignored. The
//! REST API and routing scenarios are in tests/ha_api.rs.

mod support;

use std::time::{Duration, Instant};

use support::agents::{self, Cluster};

const SLOW: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn bootstrap_one_initdb_two_streaming_replicas() {
    let (c, p) = agents::three("boot", SLOW).await;
    // Exactly one initdb: one system identifier, recorded under `initialize`, on every member.
    let state = c.state().await;
    let sysid = state
        .data
        .as_ref()
        .and_then(|d| d.get("initialize"))
        .cloned()
        .expect("initialize key");
    for i in 0..3 {
        let (code, v) = c.get_json(i, "/patroni");
        assert_eq!(code, 200);
        assert_eq!(
            v["database_system_identifier"],
            sysid.as_str(),
            "member {i}"
        );
    }
    // /primary on one member and /replica on the others.
    assert_eq!(c.answering("/primary"), vec![p]);
    let replicas = c.answering("/replica");
    assert_eq!(replicas.len(), 2);
    assert!(!replicas.contains(&p));
    for r in &replicas {
        assert_eq!(c.http(*r, "GET", "/primary", &[], None).0, 503);
    }
    // Each replica streams through its own slot.
    let primary = c.connect(p).await.unwrap();
    let slots = primary
        .query(
            "SELECT slot_name FROM pg_replication_slots WHERE active ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let mut want: Vec<String> = replicas
        .iter()
        .map(|r| c.members[*r].name.replace('-', "_"))
        .collect();
    want.sort();
    let got: Vec<String> = slots.iter().map(|r| r.get(0)).collect();
    assert_eq!(got, want);
    // Rows written on the primary reach both replicas.
    primary
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1), (2), (3)")
        .await
        .unwrap();
    for r in replicas {
        let client = c.connect(r).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(rows) = client.query("SELECT v FROM t ORDER BY v", &[]).await
                && agents::rows_on(&rows) == vec![1, 2, 3]
            {
                break;
            }
            assert!(Instant::now() < deadline, "rows did not reach replica {r}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Watch the Lease from the test: the instant (test clock) of the last renew seen before `since`,
/// and the instant a new holder appeared.
/// Start watching the Lease from the test, before the fault. Returns once the watcher has seen
/// a renew happen (so its clock of the last renew is a real renew, not its own first look); the
/// handle yields the instant (test clock) of the last renew seen, the instant a new holder
/// appeared, and that holder.
async fn start_watch(
    c: &Cluster,
    old: &str,
) -> tokio::task::JoinHandle<(Instant, Instant, String)> {
    let api: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(c.client.clone(), &c.ns);
    let name = format!("{}-leader", c.name);
    let old = old.to_string();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(async move {
        let deadline = Instant::now() + SLOW;
        let mut last_rv = None;
        let mut last_change = Instant::now();
        let mut ready = Some(ready_tx);
        loop {
            let lease = api.get(&name).await.expect("lease");
            let rv = lease.metadata.resource_version.clone();
            let holder = lease
                .spec
                .and_then(|s| s.holder_identity)
                .unwrap_or_default();
            if !holder.is_empty() && holder != old {
                return (last_change, Instant::now(), holder);
            }
            if rv != last_rv {
                if last_rv.is_some()
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
                last_rv = rv;
                last_change = Instant::now();
            }
            assert!(Instant::now() < deadline, "no takeover within {SLOW:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    ready_rx
        .await
        .expect("the lease was never renewed while watched");
    handle
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn hard_failover_after_kill_9() {
    let (mut c, p) = agents::three("hard", SLOW).await;
    let old = c.members[p].name.clone();
    let primary = c.connect(p).await.unwrap();
    primary
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let watch = start_watch(&c, &old).await;
    c.kill9(p);
    let (last_renew, taken, new) = watch.await.unwrap();
    // Nobody took the lease before ttl had passed since the last renew anyone could have seen.
    let waited = taken.duration_since(last_renew);
    assert!(
        waited >= Duration::from_secs(c.ttl) - Duration::from_millis(100),
        "lease taken {waited:?} after the last renew; ttl is {}s",
        c.ttl
    );
    let n = c.index_of(&new);
    assert_eq!(c.wait_primary(SLOW).await, n);
    // The history records the new timeline, and writes succeed on the new primary.
    let history = c
        .state()
        .await
        .data
        .unwrap_or_default()
        .get("history")
        .cloned()
        .unwrap_or_default();
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history[0][0], 1, "history: {history}");
    assert_eq!(history[0][4], new.as_str());
    let (_, v) = c.get_json(n, "/patroni");
    assert_eq!(v["timeline"], 2);
    let client = c.connect(n).await.unwrap();
    client
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    let rows = client
        .query("SELECT v FROM t ORDER BY v", &[])
        .await
        .unwrap();
    assert_eq!(agents::rows_on(&rows), vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn graceful_shutdown_releases_the_lease() {
    let (mut c, p) = agents::three("graceful", SLOW).await;
    let old = c.members[p].name.clone();
    let watch = start_watch(&c, &old).await;
    let stopped = Instant::now();
    c.signal_agent(p, libc::SIGTERM);
    assert!(
        c.wait_exit(p, Duration::from_secs(60)),
        "agent did not exit after SIGTERM"
    );
    // Released, not left to expire: a replica takes over well before ttl.
    let (_, taken, new) = watch.await.unwrap();
    assert!(
        taken.duration_since(stopped) < Duration::from_secs(c.ttl),
        "takeover took {:?}, not faster than ttl",
        taken.duration_since(stopped)
    );
    let n = c.index_of(&new);
    assert_eq!(c.wait_primary(SLOW).await, n);
    assert!(
        c.members[p].postmaster_pid().is_none(),
        "old postmaster still running"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn frozen_primary_is_fenced_by_the_softdog_before_promotion() {
    let (c, p) = agents::three("freeze", SLOW).await;
    let old = c.members[p].name.clone();
    let ip = c.members[p].ip.clone();
    let primary = c.connect(p).await.unwrap();
    primary
        .batch_execute("CREATE TABLE w (at timestamptz)")
        .await
        .unwrap();
    // A writer on the old primary records when its last write was acknowledged.
    let writer = tokio::spawn(async move {
        let mut last_ok: Option<jiff::Timestamp> = None;
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut client = agents::connect(&ip).await.ok();
        while Instant::now() < deadline {
            if let Some(cl) = &client {
                match tokio::time::timeout(
                    Duration::from_secs(1),
                    cl.batch_execute("INSERT INTO w VALUES (now())"),
                )
                .await
                {
                    Ok(Ok(())) => last_ok = Some(jiff::Timestamp::now()),
                    _ => client = agents::connect(&ip).await.ok(),
                }
            } else {
                client = agents::connect(&ip).await.ok();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        last_ok
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let watch = start_watch(&c, &old).await;
    c.signal_agent(p, libc::SIGSTOP);
    let (_, _, new) = watch.await.unwrap();
    let acquired = c
        .lease()
        .await
        .and_then(|l| l.spec)
        .and_then(|s| s.acquire_time)
        .map(|t| t.0)
        .expect("acquireTime");
    let last_write = writer
        .await
        .unwrap()
        .expect("the writer wrote before the freeze");
    // The old primary stopped accepting writes strictly before anyone took the lease.
    assert!(
        last_write < acquired,
        "old primary acknowledged a write at {last_write}, after {new} acquired the lease at {acquired}"
    );
    assert!(
        c.members[p].postmaster_pid().is_none(),
        "the softdog did not kill the frozen primary's postgres"
    );
    // After SIGCONT the old agent sees it lost the lease and rejoins as a replica.
    c.signal_agent(p, libc::SIGCONT);
    c.wait_until(SLOW, "the frozen member to rejoin as a replica", |c| {
        c.answering("/replica").contains(&p)
    })
    .await;
    assert_eq!(c.answering("/primary"), vec![c.index_of(&new)]);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn nofailover_member_is_never_promoted() {
    let mut c = Cluster::new("nofail", 2).await;
    c.members[1].extra = vec!["--nofailover".into()];
    c.start(0);
    assert_eq!(c.wait_primary(SLOW).await, 0);
    c.start(1);
    c.wait_until(SLOW, "the nofailover replica streaming", |c| {
        c.answering("/replica") == vec![1]
    })
    .await;
    c.kill9(0);
    // Well past ttl: still no primary, and the lease stays with the dead member.
    tokio::time::sleep(Duration::from_secs(c.ttl * 2 + 4)).await;
    assert!(c.answering("/primary").is_empty());
    assert_eq!(c.holder().await.as_deref(), Some("pg-0"));
    let (_, v) = c.get_json(1, "/patroni");
    assert_eq!(v["role"], "replica");
}

/// Freeze the primary's WAL senders so the next commits stay on it alone, then kill it: the
/// replicas never see those commits, and the old primary's WAL diverges from the new timeline.
async fn diverge_and_kill(c: &mut Cluster, p: usize) {
    let primary = c.connect(p).await.unwrap();
    primary
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    // Both replicas have row 1 before the senders stop.
    for r in (0..3).filter(|i| *i != p) {
        let client = c.connect(r).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client
            .query("SELECT 1 FROM t WHERE v = 1", &[])
            .await
            .map(|r| r.len())
            .unwrap_or(0)
            != 1
        {
            assert!(Instant::now() < deadline, "row 1 never reached replica {r}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let senders = primary
        .query("SELECT pid FROM pg_stat_replication", &[])
        .await
        .unwrap();
    assert_eq!(senders.len(), 2);
    for s in &senders {
        let pid: i32 = s.get(0);
        unsafe { libc::kill(pid, libc::SIGSTOP) };
    }
    primary
        .batch_execute("INSERT INTO t VALUES (99)")
        .await
        .unwrap();
    c.kill9(p);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn former_primary_with_diverged_wal_rejoins_through_pg_rewind() {
    let (mut c, p) = agents::three("rewind", SLOW).await;
    diverge_and_kill(&mut c, p).await;
    let n = c.wait_primary(SLOW).await;
    assert_ne!(n, p);
    let new_primary = c.connect(n).await.unwrap();
    new_primary
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    c.start(p);
    c.wait_until(SLOW, "the former primary streaming from the new one", |c| {
        c.answering("/replica").contains(&p)
    })
    .await;
    let old = c.connect(p).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = old.query("SELECT v FROM t ORDER BY v", &[]).await.unwrap();
        // Row 99 existed only on the old timeline: rewind removed it; row 2 came from the new one.
        if agents::rows_on(&rows) == vec![1, 2] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old primary has {:?}",
            agents::rows_on(&rows)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = std::fs::read_to_string(c.dir.join(format!("{}.log", c.members[p].name))).unwrap();
    assert!(
        log.contains("pg_rewind finished"),
        "no pg_rewind in the log"
    );
    let name = c.members[p].name.clone();
    c.wait_event("Rewound", &format!("{name} was rewound with pg_rewind"))
        .await;
    assert!(
        !log.contains("created replica with pg_basebackup\n")
            || log.matches("pg_basebackup").count() <= 1
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn former_primary_is_reinitialised_when_rewind_is_impossible() {
    let (mut c, p) = agents::three("reinit", SLOW).await;
    diverge_and_kill(&mut c, p).await;
    let n = c.wait_primary(SLOW).await;
    assert_ne!(n, p);
    // Its WAL is gone (as when segments were recycled): pg_rewind cannot find the divergence.
    let wal = c.members[p].data_dir().join("pg_wal");
    for entry in std::fs::read_dir(&wal).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    c.start(p);
    c.wait_until(SLOW, "the former primary back as a replica", |c| {
        c.answering("/replica").contains(&p)
    })
    .await;
    let log = std::fs::read_to_string(c.dir.join(format!("{}.log", c.members[p].name))).unwrap();
    assert!(
        log.contains("pg_rewind failed; reinitialising from the leader"),
        "rewind did not fail as planned"
    );
    assert!(
        log.contains("created replica with pg_basebackup"),
        "no fresh basebackup"
    );
    let name = c.members[p].name.clone();
    c.wait_event(
        "ReinitializingReplica",
        &format!("{name} could not be rewound"),
    )
    .await;
    let rows = c
        .connect(p)
        .await
        .unwrap()
        .query("SELECT v FROM t ORDER BY v", &[])
        .await
        .unwrap();
    assert_eq!(agents::rows_on(&rows), vec![1]);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn partitioned_primary_demotes_before_anyone_takes_over_and_rejoins() {
    let mut c = Cluster::new("partition", 3).await;
    let mut proxies = Vec::new();
    for i in 0..3 {
        proxies.push(c.proxy_apiserver(i).await);
    }
    c.start_all();
    let p = c.wait_primary(SLOW).await;
    c.wait_until(SLOW, "two streaming replicas", |c| {
        c.answering("/replica").len() == 2
    })
    .await;
    let old = c.members[p].name.clone();
    let ip = c.members[p].ip.clone();
    c.connect(p)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE w (at timestamptz)")
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        let mut last_ok: Option<jiff::Timestamp> = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut client = agents::connect(&ip).await.ok();
        while Instant::now() < deadline {
            match &client {
                Some(cl) => match tokio::time::timeout(
                    Duration::from_secs(1),
                    cl.batch_execute("INSERT INTO w VALUES (now())"),
                )
                .await
                {
                    Ok(Ok(())) => last_ok = Some(jiff::Timestamp::now()),
                    _ => client = agents::connect(&ip).await.ok(),
                },
                None => client = agents::connect(&ip).await.ok(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        last_ok
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let watch = start_watch(&c, &old).await;
    proxies[p].cut();
    let (_, _, new) = watch.await.unwrap();
    let acquired = c
        .lease()
        .await
        .and_then(|l| l.spec)
        .and_then(|s| s.acquire_time)
        .map(|t| t.0)
        .unwrap();
    let last_write = writer.await.unwrap().expect("writes before the partition");
    assert!(
        last_write < acquired,
        "the partitioned primary acknowledged a write at {last_write}, after {new} took the lease at {acquired}"
    );
    let n = c.index_of(&new);
    assert_eq!(c.wait_primary(SLOW).await, n);
    // Heal: the old primary sees it lost the lease and comes back as a replica.
    proxies[p].heal();
    c.wait_until(SLOW, "the partitioned member to rejoin as a replica", |c| {
        c.answering("/replica").contains(&p)
    })
    .await;
    assert_eq!(c.answering("/primary"), vec![n]);
    // The fence (by the loop or the fencing task) happened while the apiserver was out of
    // reach: its Event arrives after the heal, saying when it happened.
    let note = c.wait_event("Fenced", &format!("{old} ")).await;
    assert!(note.contains("(at "), "a late Event says when: {note}");
    c.wait_event("Promoted", &format!("{new} was promoted to primary"))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn replica_lagging_beyond_maximum_lag_is_never_promoted() {
    let mut c = Cluster::new("lag", 2).await;
    c.start(0);
    assert_eq!(c.wait_primary(SLOW).await, 0);
    c.start(1);
    c.wait_until(SLOW, "the replica streaming", |c| {
        c.answering("/replica?replication_state=streaming") == vec![1]
    })
    .await;
    // Stop the replica's WAL receiver, then write 8 MB it will never receive. (Streaming a
    // moment ago, the receiver may be reconnecting right now: ask until it is there.)
    let replica = c.connect(1).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid: i32 = loop {
        if let Some(row) = replica
            .query_opt("SELECT pid FROM pg_stat_wal_receiver", &[])
            .await
            .unwrap()
        {
            break row.get(0);
        }
        assert!(Instant::now() < deadline, "no WAL receiver on the replica");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let primary = c.connect(0).await.unwrap();
    primary
        .batch_execute("CREATE TABLE big AS SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 8000) g")
        .await
        .unwrap();
    // Let a renew publish the primary's position, then kill it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.kill9(0);
    tokio::time::sleep(Duration::from_secs(c.ttl * 2 + 4)).await;
    assert!(
        c.answering("/primary").is_empty(),
        "the lagging replica was promoted"
    );
    assert_eq!(c.holder().await.as_deref(), Some("pg-0"));
    let log = std::fs::read_to_string(c.dir.join("pg-1.log")).unwrap();
    assert!(
        log.contains("exceeds maximumLagOnFailover"),
        "no lag reason in the replica's log"
    );
    unsafe { libc::kill(pid, libc::SIGCONT) };
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn synchronous_mode_loses_no_acknowledged_commit_on_failover() {
    // A synchronous standby is published, and /sync answers on exactly that member.
    let (mut c, p) = agents::three_synchronous("sync", "on", SLOW).await;
    let sync_member = c.answering("/sync")[0];
    let ip = c.members[p].ip.clone();
    c.connect(p)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE acked (id int primary key)")
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        let client = agents::connect(&ip).await.unwrap();
        let mut acked = Vec::new();
        for id in 0.. {
            match tokio::time::timeout(
                Duration::from_secs(2),
                client.execute("INSERT INTO acked VALUES ($1)", &[&id]),
            )
            .await
            {
                Ok(Ok(_)) => acked.push(id),
                _ => break,
            }
        }
        acked
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.kill9(p);
    let acked = writer.await.unwrap();
    assert!(
        acked.len() > 10,
        "the writer barely wrote ({} rows)",
        acked.len()
    );
    let n = c.wait_primary(SLOW).await;
    assert_eq!(
        n, sync_member,
        "a member outside the synchronous set was promoted"
    );
    let rows = c
        .connect(n)
        .await
        .unwrap()
        .query("SELECT id FROM acked", &[])
        .await
        .unwrap();
    let have: std::collections::BTreeSet<i32> = rows.iter().map(|r| r.get(0)).collect();
    let lost: Vec<&i32> = acked.iter().filter(|id| !have.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged commits lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn failsafe_keeps_the_primary_while_every_member_confirms_it() {
    let mut c = Cluster::new("failsafe", 3).await;
    let mut proxies = Vec::new();
    for i in 0..3 {
        proxies.push(c.proxy_apiserver(i).await);
        c.members[i].extra = vec!["--failsafe-mode".into()];
    }
    c.start_all();
    let p = c.wait_primary(SLOW).await;
    c.wait_until(SLOW, "two streaming replicas", |c| {
        c.answering("/replica").len() == 2
    })
    .await;
    let old = c.members[p].name.clone();
    let client = c.connect(p).await.unwrap();
    client
        .batch_execute("CREATE TABLE f (v int)")
        .await
        .unwrap();
    // The whole apiserver goes away for every member: the primary keeps serving writes, well
    // past ttl, because both replicas confirm it over REST.
    for px in &proxies {
        px.cut();
    }
    let until = Instant::now() + Duration::from_secs(c.ttl * 2 + 4);
    while Instant::now() < until {
        client
            .batch_execute("INSERT INTO f VALUES (1)")
            .await
            .expect("the confirmed primary refused a write");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(c.answering("/primary"), vec![p]);
    // A replica disappears: the primary can no longer be confirmed by everyone and demotes.
    let r = (0..3).find(|i| *i != p).unwrap();
    c.kill9(r);
    c.wait_until(SLOW, "the unconfirmed primary to stop serving", |c| {
        c.answering("/primary").is_empty()
    })
    .await;
    assert!(
        c.connect(p).await.is_err()
            || client
                .batch_execute("INSERT INTO f VALUES (2)")
                .await
                .is_err()
    );
    // The apiserver comes back: the cluster elects a primary again and the member returns.
    for px in &proxies {
        px.heal();
    }
    c.start(r);
    let n = c.wait_primary(SLOW).await;
    c.wait_until(SLOW, "all members back", |c| {
        c.answering("/replica").len() == 2
    })
    .await;
    assert_eq!(
        c.holder().await.as_deref(),
        Some(c.members[n].name.as_str())
    );
    let _ = old;
}

/// The control plane is a fault domain: the kube-apiserver frozen for 2.5 s (SIGSTOP, then
/// SIGCONT) costs no demotion. The primary keeps the same postmaster and accepts every write
/// meanwhile, and still holds the Lease afterwards.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn a_frozen_apiserver_costs_no_demotion() {
    let (c, p) = agents::three("apifreeze", SLOW).await;
    let old = c.members[p].name.clone();
    let postmaster = c.members[p]
        .postmaster_pid()
        .expect("the primary's postmaster");
    c.connect(p)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE f (at timestamptz)")
        .await
        .unwrap();
    let ip = c.members[p].ip.clone();
    let writer = tokio::spawn(async move {
        let client = agents::connect(&ip).await.expect("connect to the primary");
        let (mut ok, mut failed) = (0u32, 0u32);
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            match tokio::time::timeout(
                Duration::from_secs(1),
                client.batch_execute("INSERT INTO f VALUES (now())"),
            )
            .await
            {
                Ok(Ok(())) => ok += 1,
                _ => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (ok, failed)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let frozen = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/cluster"))
        .args(["apiserver", "freeze", "2.5"])
        .output()
        .expect("e2e/cluster apiserver freeze");
    assert!(
        frozen.status.success(),
        "e2e/cluster apiserver freeze: {}",
        String::from_utf8_lossy(&frozen.stderr)
    );
    let (ok, failed) = writer.await.unwrap();
    assert_eq!(
        failed, 0,
        "writes failed on the primary during the stall ({ok} succeeded)"
    );
    assert!(ok > 50, "only {ok} writes in 8 s");
    assert_eq!(
        c.members[p].postmaster_pid(),
        Some(postmaster),
        "the primary's PostgreSQL was stopped or restarted"
    );
    assert_eq!(c.wait_primary(SLOW).await, p);
    assert_eq!(c.holder().await.as_deref(), Some(old.as_str()));
}
