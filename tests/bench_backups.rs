//! Backup benchmark (not a test): `make bench-backups` runs it on the single-node test bed with
//! the chart installed (as the end-to-end tier does) and writes the backup rows of
//! BENCHMARKS.md: base backup throughput for a 1 GB database, WAL archiving lag under a steady
//! write load, the time to restore the latest state into a new cluster, and the time of a
//! point-in-time restore to a target 10 minutes back. Everything is measured from outside:
//! wall clocks around `kubectl` and the plugin, PostgreSQL's own views sampled once a second.

mod support;

use std::time::{Duration, Instant};

use support::cluster::*;
use support::k8s::kubectl;
use support::report::{BACKUP_ROWS, env_count, keep_section, secs};
use support::wait::{log, wait_until};

const MIN: Duration = Duration::from_secs(60);
const NS: &str = "bench-backups";
/// Never fires during the run: the benchmark asks for its backups itself.
const YEARLY: &str = "0 0 1 1 *";

/// pgbench's scale: 68 is about 1 GB.
fn scale() -> usize {
    env_count("BACKUP_BENCH_SCALE", 68)
}

/// Minutes of steady writes after the backup (the restore target is 10 minutes before the
/// end, so at least 11).
fn load_minutes() -> usize {
    env_count("BACKUP_BENCH_MINUTES", 11).max(11)
}

/// `pgbench <args>` as the superuser over the pod's socket, to the application database.
fn pgbench(pod: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec![
        "-n",
        NS,
        "exec",
        pod,
        "-c",
        "postgres",
        "--",
        "pgbench",
        "-h",
        "/run/pgwarden/agent",
        "-U",
        "postgres",
    ];
    all.extend_from_slice(args);
    all.push("app");
    kubectl(&all, None)
}

async fn archiving(pg: &Pg) -> bool {
    archiving_condition(pg).await == Some(("True".into(), "Archiving".into()))
}

/// A new cluster `name` restored from `src` (to `target`, or the latest state): the seconds
/// from `kubectl apply` to a healthy primary.
async fn restore(name: &str, target: Option<&str>) -> Duration {
    let pg = Pg::existing(NS, name).await;
    let t0 = Instant::now();
    pg.apply(&spec(
        1,
        &format!(
            "{}{}",
            backup_spec(NS, YEARLY),
            recovery_spec("src", target)
        ),
    ))
    .expect("the restored cluster is accepted");
    pg.wait_healthy(1, 60 * MIN).await;
    let took = t0.elapsed();
    log(format!("{name}: restored in {}", secs(took)));
    took
}

#[tokio::test]
#[ignore = "a 1 GB database and 11 minutes of writes: run by `make bench-backups`"]
async fn benchmark_backups() {
    let pg = Pg::create(NS, "src", &spec(1, "")).await;
    pg.wait_healthy(1, 5 * MIN).await;
    // The backup starts with its own checkpoint: its time is pgBackRest's copy, not a wait
    // for the next scheduled checkpoint.
    pg.apply(&spec(
        1,
        &with_immediate_checkpoint(&backup_spec(NS, YEARLY)),
    ))
    .expect("spec.backup is accepted");
    wait_until(5 * MIN, "ContinuousArchiving True", || archiving(&pg)).await;
    let primary = pg.primary().await.expect("a primary");

    // A 1 GB database.
    let t0 = Instant::now();
    pgbench(&primary, &["-i", "-q", "-s", &scale().to_string()]).expect("pgbench -i");
    let bytes: f64 = pg
        .superuser_sql(&primary, "SELECT pg_database_size('app')")
        .expect("the database's size")
        .parse()
        .expect("a number");
    let gib = bytes / f64::from(1u32 << 30);
    log(format!(
        "loaded {gib:.2} GiB (pgbench scale {}) in {}",
        scale(),
        secs(t0.elapsed())
    ));

    // A full base backup, asked for as a user would.
    let t0 = Instant::now();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-pgwarden"))
        .args(["-n", NS, "backup", "src", "--name", "bench-full", "--wait"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run kubectl-pgwarden");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let wall = t0.elapsed();
    wait_until(2 * MIN, "the backup in the status", || async {
        pg.status().await["lastSuccessfulBackup"]["label"]
            .as_str()
            .is_some()
    })
    .await;
    let last = pg.status().await["lastSuccessfulBackup"].clone();
    let stamp = |k: &str| {
        last[k]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second())
            .unwrap_or(0)
    };
    let pgbackrest_secs = (stamp("finished") - stamp("started")).max(1) as f64;
    let mb_s = bytes / 1e6 / pgbackrest_secs;
    log(format!(
        "backup {last}: {pgbackrest_secs} s by pgBackRest's clock ({mb_s:.1} MB/s), {} to Completed",
        secs(wall)
    ));

    // Steady writes; every second, which segment PostgreSQL writes and which it archived last.
    let minutes = load_minutes();
    let load = {
        let pod = primary.clone();
        let seconds = (minutes * 60).to_string();
        tokio::task::spawn_blocking(move || {
            pgbench(&pod, &["-n", "-c", "2", "-R", "200", "-T", &seconds])
        })
    };
    let load_started = Instant::now();
    let mut completed: Vec<(String, Instant)> = vec![];
    let mut lags: Vec<Duration> = vec![];
    let mut current = String::new();
    let mut target = None;
    while load_started.elapsed() < Duration::from_secs(minutes as u64 * 60) {
        let row = pg.superuser_sql(
            &primary,
            "SELECT pg_walfile_name(pg_current_wal_lsn()) || '|' || coalesce(last_archived_wal, '') \
             FROM pg_stat_archiver",
        );
        let now = Instant::now();
        if let Ok(row) = row
            && let Some((writing, archived)) = row.split_once('|')
        {
            if !current.is_empty() && writing != current {
                completed.push((current.clone(), now));
            }
            current = writing.to_string();
            completed.retain(|(segment, at)| {
                let done = archived.get(..24).is_some_and(|a| a >= segment.as_str());
                if done {
                    lags.push(now - *at);
                }
                !done
            });
        }
        // The restore target: 10 minutes before the end of the load.
        if target.is_none()
            && load_started.elapsed() >= Duration::from_secs((minutes as u64 - 10) * 60)
        {
            target = Some(jiff::Timestamp::now());
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(now.elapsed())).await;
    }
    let pgbench_out = load.await.expect("the load task").expect("pgbench");
    let tps = pgbench_out
        .lines()
        .find(|l| l.starts_with("tps"))
        .unwrap_or("")
        .to_string();
    lags.sort();
    assert!(!lags.is_empty(), "segments were archived during the load");
    let lag_median = lags[lags.len() / 2];
    let lag_max = *lags.last().unwrap();
    log(format!(
        "archiving lag over {} segments: median {}, max {}; pgbench {tps}",
        lags.len(),
        secs(lag_median),
        secs(lag_max)
    ));
    // Everything archived before the restores read it.
    let segment = pg
        .superuser_sql(&primary, "SELECT pg_walfile_name(pg_switch_wal())")
        .expect("a switch");
    wait_until(5 * MIN, "the last segment archived", || async {
        pg.archived_past(&primary, &segment)
    })
    .await;

    let latest = restore("latest", None).await;
    let target = target.expect("a target").to_string();
    let pitr = restore("pitr", Some(&target)).await;

    let md = format!(
        "## Backups (one node, `make bench-backups`)\n\n\
         Measured {} on `e2e/cluster up` on this machine: a one-instance cluster installed by the \
         chart, pgBackRest {} with lz4 to the test bed's object store (versitygw on the same \
         machine, HTTPS); each number is one run.\n\n\
         | measure | result |\n|---|---|\n\
         | database (pgbench scale {}) | {gib:.2} GiB |\n\
         | full backup (`immediateCheckpoint: true`), pgBackRest's start → stop | {pgbackrest_secs} s ({mb_s:.0} MB/s) |\n\
         | full backup, `kubectl pgwarden backup --wait` → Completed | {} s |\n\
         | WAL archiving lag under pgbench (2 clients, 200 tps) for {minutes} min: segment complete → archived (sampled every second) | median {} s, max {} s ({} segments) |\n\
         | restore of the latest state into a new cluster: `kubectl apply` → healthy primary | {} s |\n\
         | point-in-time restore to 10 minutes before the end of the load: `kubectl apply` → healthy primary | {} s |\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d"),
        pgbackrest_version(&pg, &primary),
        scale(),
        secs(wall),
        secs(lag_median),
        secs(lag_max),
        lags.len(),
        secs(latest),
        secs(pitr),
    );
    log(&md);
    keep_section(&BACKUP_ROWS, &md);
    for name in ["pitr", "latest"] {
        Pg::existing(NS, name).await.delete().await;
    }
    pg.delete().await;
}

fn pgbackrest_version(pg: &Pg, pod: &str) -> String {
    pg.kubectl(&["exec", pod, "-c", "postgres", "--", "pgbackrest", "version"])
        .map(|v| v.trim().trim_start_matches("pgBackRest ").to_string())
        .unwrap_or_else(|_| "?".into())
}
