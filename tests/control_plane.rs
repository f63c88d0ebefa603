//! Integration tier: the control plane as a fault domain. Three agents against a real
//! kube-apiserver and real PostgreSQL 15; the apiserver is killed (SIGKILL) and started again
//! with `e2e/cluster apiserver`, or one agent's calls are answered with 500s by a fault proxy,
//! or a replica's REST port is cut with iptables. A writer records every acknowledged write and a
//! prober asks every member ten times a second whether it accepts writes. Run by
//! `make integration` with `--ignored`, like tests/ha.rs.

mod support;

use std::time::{Duration, Instant};

use support::agents::{self, Cluster};
use support::iptables::Cut;
use support::process::cpu_seconds;
use support::testbed::ApiserverDown;
use support::traffic::{self, Prober, Writer};
use support::wait::log;

const SLOW: Duration = Duration::from_secs(90);

/// Lines in member `i`'s log so far.
fn log_lines(c: &Cluster, i: usize) -> usize {
    std::fs::read_to_string(c.dir.join(format!("{}.log", c.members[i].name)))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Three members with failsafe mode (as the operator's default) and the primary's index.
async fn three_with_failsafe(tag: &str) -> (Cluster, usize) {
    let mut c = Cluster::new(tag, 3).await;
    for m in &mut c.members {
        m.extra = vec!["--failsafe-mode".into()];
    }
    c.start_all();
    let p = c.wait_primary(SLOW).await;
    c.wait_until(SLOW, "two streaming replicas", |c| {
        c.answering("/replica").len() == 2
    })
    .await;
    (c, p)
}

/// The kube-apiserver killed for ttl + 7 s; `then` runs as soon as it is back. Returns once a
/// single primary leads two streaming replicas (and 3 s more, for the labels to settle): its
/// index, and when the apiserver was killed and when its start was asked for. Nobody can reach
/// it before that moment, so that is where the outage the fence is judged in ends: once it
/// answers, the old primary may rightly take its own expired Lease back and promote, before the
/// start command returns (it restarts the controllers too; a run saw the promotion 40 ms
/// before the command returned).
async fn outage_longer_than_ttl(c: &Cluster, then: impl FnOnce()) -> (usize, (Instant, Instant)) {
    let down = ApiserverDown::now();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(c.ttl + 7)).await;
    let back = Instant::now();
    down.start();
    then();
    let n = c.wait_primary(SLOW).await;
    c.wait_until(SLOW, "two streaming replicas", |c| {
        c.answering("/replica").len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    (n, (killed, back))
}

/// The primary `p` accepted no write later than its fence deadline (ttl - safetyMargin) into
/// the outage from `killed` to `back`.
fn assert_stopped_by_the_fence(
    c: &Cluster,
    samples: &[traffic::Sample],
    p: usize,
    (killed, back): (Instant, Instant),
) {
    let last = samples
        .iter()
        .filter(|s| s.at > killed && s.at < back && s.answers[p] == traffic::Answer::Writable)
        .map(|s| s.at)
        .max();
    if let Some(at) = last {
        let after = at - killed;
        log(format!(
            "{} was writable {after:?} into the outage",
            c.members[p].name
        ));
        assert!(
            after < Duration::from_secs(c.ttl - 2),
            "{} still accepted writes {after:?} into the outage (fence deadline: ttl - safetyMargin)",
            c.members[p].name
        );
    }
}

fn assert_safe(samples: &[traffic::Sample]) {
    traffic::assert_never_two_writable(samples);
    let ro = traffic::read_only_behind_rw(samples);
    assert!(
        ro.is_empty(),
        "{} samples saw a member labelled primary answer read-only, first: {:?}",
        ro.len(),
        ro.first()
    );
}

/// Failsafe on (the default): apiserver outages of 5, 20 and 60 s cost no write, lose none and
/// never make two members writable; the primary keeps its Lease. During the 60 s outage each
/// agent's CPU stays within twice its CPU at rest and its log grows by fewer than 100 lines a
/// minute.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn apiserver_outages_cost_no_write_with_failsafe() {
    let (c, p) = three_with_failsafe("outage").await;
    let old = c.members[p].name.clone();
    let postmaster = c.members[p].postmaster_pid();
    let writer = Writer::start(&c.members[p].ip, "w", Duration::from_millis(20)).await;
    let prober = Prober::start(&c);

    // At rest: each agent's CPU and log growth over 30 s.
    let pids: Vec<i32> = (0..3)
        .map(|i| c.members[i].agent_pid().expect("agent"))
        .collect();
    let rest = Duration::from_secs(30);
    let cpu0: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
    tokio::time::sleep(rest).await;
    let cpu_rest: Vec<f64> = pids
        .iter()
        .zip(&cpu0)
        .map(|(p, c0)| (cpu_seconds(*p) - c0) / rest.as_secs_f64() * 60.0)
        .collect();

    for secs in [5u64, 20, 60] {
        let lines0: Vec<usize> = (0..3).map(|i| log_lines(&c, i)).collect();
        let cpu0: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
        let down = ApiserverDown::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        if secs == 60 {
            for i in 0..3 {
                let cpu = (cpu_seconds(pids[i]) - cpu0[i]) / secs as f64 * 60.0;
                let lines = log_lines(&c, i) - lines0[i];
                log(format!(
                    "{}: {cpu:.3} CPU s/min during the outage, {:.3} at rest; {lines} log lines in {secs} s",
                    c.members[i].name, cpu_rest[i]
                ));
                assert!(
                    lines < 100,
                    "{} logged {lines} lines in a {secs} s outage",
                    c.members[i].name
                );
                // Twice the rest, plus one clock tick a second of slack: at rest an agent uses
                // a few ticks a minute, below what /proc measures reliably.
                assert!(
                    cpu <= 2.0 * cpu_rest[i] + 0.6,
                    "{} used {cpu:.3} CPU s/min during the outage, {:.3} at rest",
                    c.members[i].name,
                    cpu_rest[i]
                );
            }
        }
        down.start();
        support::wait::wait_until(SLOW, "the primary to hold the Lease again", || async {
            c.holder().await.as_deref() == Some(old.as_str())
        })
        .await;
        log(format!("{secs} s outage survived"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let samples = prober.stop().await;
    let (acked, errors) = writer.stop().await;
    let refused = traffic::refused(&errors);
    assert!(
        refused.is_empty(),
        "{} writes refused, first: {:?}",
        refused.len(),
        refused.first()
    );
    log(format!("{} writes answered later than 1 s", errors.len()));
    assert!(
        acked.len() > 1000,
        "only {} writes acknowledged",
        acked.len()
    );
    assert_safe(&samples);
    assert_eq!(c.wait_primary(SLOW).await, p);
    assert_eq!(
        c.members[p].postmaster_pid(),
        postmaster,
        "the primary's PostgreSQL was restarted"
    );
    let lost = traffic::lost_writes(&c.members[p].ip, "w", &acked).await;
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

/// Failsafe off, an outage longer than ttl: the primary stops accepting writes by its fence
/// deadline (ttl - safetyMargin after its last renew, before anyone could take the Lease), no
/// member labelled primary ever answers read-only, and when the apiserver returns exactly one
/// member becomes primary, the others follow it, and no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn without_failsafe_a_long_outage_stops_the_primary_in_time() {
    let (c, p) = agents::three("outage-nofs", SLOW).await;
    let writer = Writer::start(&c.members[p].ip, "w", Duration::from_millis(20)).await;
    let prober = Prober::start(&c);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (n, outage) = outage_longer_than_ttl(&c, || ()).await;
    let killed = outage.0;
    let samples = prober.stop().await;
    let (acked, errors) = writer.stop().await;
    assert_safe(&samples);
    assert_stopped_by_the_fence(&c, &samples, p, outage);
    let first_error = errors.first().map(|e| e.at - killed);
    log(format!(
        "first failed write {first_error:?} into the outage; {} acknowledged, {} failed",
        acked.len(),
        errors.len()
    ));
    // Asynchronous replication: writes the old primary acknowledged in its last moments may not
    // have reached the member that took over (synchronous mode is the guarantee for that).
    let lost = traffic::lost_writes(&c.members[n].ip, "w", &acked).await;
    log(format!(
        "{} of {} acknowledged writes are not on the new primary {}",
        lost.len(),
        acked.len(),
        c.members[n].name
    ));
}

/// 500s for 2 s on every apiserver call of the primary: no demotion, no failed write, the same
/// postmaster, the same Lease holder.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn apiserver_500s_on_the_primarys_calls_cost_no_demotion() {
    let mut c = Cluster::new("errors", 3).await;
    let mut proxies = vec![];
    for i in 0..3 {
        proxies.push(c.fault_proxy_apiserver(i).await);
    }
    c.start_all();
    let p = c.wait_primary(SLOW).await;
    c.wait_until(SLOW, "two streaming replicas", |c| {
        c.answering("/replica").len() == 2
    })
    .await;
    let old = c.members[p].name.clone();
    let postmaster = c.members[p].postmaster_pid();
    let writer = Writer::start(&c.members[p].ip, "w", Duration::from_millis(20)).await;
    let prober = Prober::start(&c);
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxies[p].errors();
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxies[p].pass();
    let injected = proxies[p].injected();
    assert!(injected > 0, "the primary made no apiserver call in 2 s");
    log(format!("{injected} of the primary's calls got a 500"));
    tokio::time::sleep(Duration::from_secs(c.ttl)).await;
    let samples = prober.stop().await;
    let (acked, errors) = writer.stop().await;
    let refused = traffic::refused(&errors);
    assert!(
        refused.is_empty(),
        "{} writes refused, first: {:?}",
        refused.len(),
        refused.first()
    );
    log(format!("{} writes answered later than 1 s", errors.len()));
    assert_safe(&samples);
    assert_eq!(c.wait_primary(SLOW).await, p);
    assert_eq!(c.holder().await.as_deref(), Some(old.as_str()));
    assert_eq!(
        c.members[p].postmaster_pid(),
        postmaster,
        "the primary's PostgreSQL was stopped or restarted"
    );
    let lost = traffic::lost_writes(&c.members[p].ip, "w", &acked).await;
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

/// Failsafe on, one replica's REST port cut, then the apiserver away for longer than ttl: the
/// primary cannot be confirmed by every member and stops accepting writes by its fence deadline;
/// when the apiserver returns exactly one member becomes primary and the others follow it.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn failsafe_primary_demotes_when_a_member_cannot_confirm_it() {
    let (c, p) = three_with_failsafe("fs-cut").await;
    let r = (0..3).find(|i| *i != p).unwrap();
    let writer = Writer::start(&c.members[p].ip, "w", Duration::from_millis(20)).await;
    let prober = Prober::start(&c);
    let cut = Cut::port(&c.members[r].ip, 8008);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (n, (killed, back)) = outage_longer_than_ttl(&c, move || drop(cut)).await;
    let samples = prober.stop().await;
    let (acked, _errors) = writer.stop().await;
    assert_safe(&samples);
    assert_stopped_by_the_fence(&c, &samples, p, (killed, back));
    assert!(
        samples
            .iter()
            .any(|s| s.at > killed && s.at < back && s.answers[p] != traffic::Answer::Writable),
        "the unconfirmed primary never stopped accepting writes"
    );
    log(format!(
        "{} is primary after the outage; {} writes acknowledged",
        c.members[n].name,
        acked.len()
    ));
}
