//! Integration tier, the REST API and routing: switchover, failover, restart, reload and
//! reinitialize through the agents' Patroni-compatible API, bad input, scheduled actions, and
//! the seed's HAProxy configuration routing by the health checks. Same harness and needs as
//! tests/ha.rs: `make integration` runs both with `--ignored`.

mod support;

use std::time::{Duration, Instant};

use support::agents::{self, TOKEN};
use support::k8s;

const SLOW: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn switchover_through_the_rest_api() {
    let (c, p) = agents::three("switch", SLOW).await;
    let old = c.members[p].name.clone();
    let auth = format!("Bearer {TOKEN}");
    let h = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let replica = (0..3).find(|i| *i != p).unwrap();
    let cand = c.members[replica].name.clone();

    // Without the token: 401, nothing happens.
    let body = format!(r#"{{"leader": "{old}", "candidate": "{cand}"}}"#);
    assert_eq!(c.http(p, "POST", "/switchover", &[], Some(&body)).0, 401);
    assert_eq!(
        c.http(
            p,
            "POST",
            "/switchover",
            &[("Authorization", "Bearer wrong")],
            Some(&body)
        )
        .0,
        401
    );
    // Patroni's 412s against the real members and Lease holder. The body checks (its 400s)
    // are pure and table-tested with the handlers (src/agent/rest/checks_tests.rs).
    let (code, msg) = c.http(
        p,
        "POST",
        "/switchover",
        &h,
        Some(&format!(r#"{{"leader": "{cand}"}}"#)),
    );
    assert_eq!((code, msg.as_str()), (412, "leader name does not match"));
    let (code, msg) = c.http(
        p,
        "POST",
        "/switchover",
        &h,
        Some(&format!(r#"{{"leader": "{old}", "candidate": "nobody"}}"#)),
    );
    assert_eq!((code, msg.as_str()), (412, "candidate does not exists"));

    // To a named candidate.
    let (code, msg) = c.http(p, "POST", "/switchover", &h, Some(&body));
    assert_eq!(code, 200, "{msg}");
    assert_eq!(msg, format!("Successfully switched over to \"{cand}\""));
    assert_eq!(c.wait_primary(SLOW).await, replica);
    // The old primary comes back as a replica of the new one.
    c.wait_until(SLOW, "old primary streaming as a replica", |c| {
        c.answering("/replica").contains(&p)
    })
    .await;

    // Without a candidate: the healthiest other member takes over.
    let body = format!(r#"{{"leader": "{cand}"}}"#);
    let (code, msg) = c.http(replica, "POST", "/switchover", &h, Some(&body));
    assert_eq!(code, 200, "{msg}");
    let n = c.wait_primary(SLOW).await;
    assert_ne!(n, replica);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn bad_input_gets_4xx_and_corrupt_annotations_are_survived() {
    let (c, p) = agents::three("badinput", SLOW).await;
    let auth = format!("Bearer {TOKEN}");
    let h = [("Authorization", auth.as_str())];
    for body in [
        "",
        "[",
        r#"{"leader": ["x"]}"#,
        r#"{"unknown_field": 1}"#,
        "\u{0}",
    ] {
        let (code, msg) = c.http(p, "POST", "/switchover", &h, Some(body));
        assert_eq!(code, 400, "body {body:?}: {msg}");
        assert!(!msg.is_empty());
    }
    let (code, _) = c.http(p, "GET", "/replica?lag=lots", &[], None);
    assert_eq!(code, 400);
    assert_eq!(c.http(p, "GET", "/no-such-endpoint", &[], None).0, 404);
    // Corrupt a replica's status annotation: the others log it, skip it, and carry on.
    let r = (0..3).find(|i| *i != p).unwrap();
    k8s::kubectl_ok(
        &[
            "-n",
            &c.ns,
            "annotate",
            "--overwrite",
            "pod",
            &c.members[r].name,
            "pgwarden.io/status={not json",
        ],
        None,
    );
    // The owner notices and writes its own status again; meanwhile nobody fell over.
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(c.client.clone(), &c.ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pod = pods.get(&c.members[r].name).await.unwrap();
        let raw = pod
            .metadata
            .annotations
            .unwrap_or_default()
            .get("pgwarden.io/status")
            .cloned()
            .unwrap_or_default();
        if pgwarden::api::member::MemberStatus::parse(&raw).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "corrupt annotation was never repaired: {raw}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(c.answering("/primary"), vec![p]);
    assert_eq!(c.answering("/replica").len(), 2);
    c.wait_until(
        Duration::from_secs(10),
        "/cluster to list all three members again",
        |c| {
            let (code, v) = c.get_json(p, "/cluster");
            code == 200 && v["members"].as_array().map(Vec::len) == Some(3)
        },
    )
    .await;
    // Someone logged and skipped the corrupt annotation rather than failing.
    let logs: String = (0..3)
        .filter(|i| *i != r)
        .map(|i| {
            std::fs::read_to_string(c.dir.join(format!("{}.log", c.members[i].name)))
                .unwrap_or_default()
        })
        .collect();
    assert!(logs.contains("ignoring member with a corrupt status annotation"));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn seed_haproxy_routes_writes_to_the_primary_and_reads_to_replicas() {
    let (mut c, p) = agents::three("haproxy", SLOW).await;
    // The seed article's listeners, unchanged but for the addresses and the stats/log lines.
    let servers: String = c
        .members
        .iter()
        .map(|m| format!("    server {} {}:5432 check port 8008\n", m.name, m.ip))
        .collect();
    let cfg = format!(
        "global\n    maxconn 100\n\ndefaults\n    mode tcp\n    retries 2\n    timeout client 30m\n    timeout connect 4s\n    timeout server 30m\n    timeout check 5s\n\n\
listen pg_primary\n    bind 127.0.0.10:5000\n    option httpchk GET /master\n    http-check expect status 200\n    default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions\n{servers}\n\
listen pg_replicas\n    bind 127.0.0.10:5001\n    balance roundrobin\n    option httpchk GET /replica\n    http-check expect status 200\n    default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions\n{servers}"
    );
    let cfg_path = c.dir.join("haproxy.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut haproxy = std::process::Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("haproxy (Debian package)");
    let server_ip = |port: u16| async move {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.10")
            .port(port)
            .user("postgres")
            .password(agents::SUPERUSER_PASSWORD)
            .dbname("postgres");
        cfg.connect_timeout(Duration::from_secs(2));
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.ok()?;
        tokio::spawn(conn);
        let row = client
            .query_one("SELECT host(inet_server_addr()), pg_is_in_recovery()", &[])
            .await
            .ok()?;
        Some((row.get::<_, String>(0), row.get::<_, bool>(1)))
    };
    // Wait until HAProxy's write port lands on `ip`, a server out of recovery.
    let writes_reach = |ip: String| async move {
        let deadline = Instant::now() + SLOW;
        while server_ip(5000).await != Some((ip.clone(), false)) {
            assert!(Instant::now() < deadline, "port 5000 never reached {ip}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let primary_ip = c.members[p].ip.clone();
    writes_reach(primary_ip.clone()).await;
    // HAProxy starts with every server up; with the seed's `inter 3s fall 3` it takes up to
    // 9 s of failed checks to take the primary out of pg_replicas.
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Reads go to the replicas, round robin: both are reached, the primary never.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        if let Some((ip, in_recovery)) = server_ip(5001).await {
            assert!(in_recovery, "port 5001 reached a primary");
            seen.insert(ip);
        }
    }
    assert_eq!(seen.len(), 2, "reads reached {seen:?}");
    assert!(!seen.contains(&primary_ip));
    // After a failover HAProxy reroutes writes to the new primary.
    c.kill9(p);
    let n = c.wait_primary(SLOW).await;
    writes_reach(c.members[n].ip.clone()).await;
    let _ = haproxy.kill();
    let _ = haproxy.wait();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn rest_write_endpoints_restart_reload_reinitialize() {
    let (c, p) = agents::three("rest", SLOW).await;
    let r = (0..3).find(|i| *i != p).unwrap();
    let auth = format!("Bearer {TOKEN}");
    let h = [("Authorization", auth.as_str())];
    // Every write endpoint wants the token.
    for (method, path) in [
        ("POST", "/restart"),
        ("DELETE", "/restart"),
        ("POST", "/reload"),
        ("POST", "/reinitialize"),
    ] {
        assert_eq!(
            c.http(p, method, path, &[], Some("{}")).0,
            401,
            "{method} {path}"
        );
    }
    // Basic auth with the token as password works too, for Patroni tooling.
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("patroni:{TOKEN}"))
    );
    assert_eq!(
        c.http(
            p,
            "POST",
            "/reload",
            &[("Authorization", basic.as_str())],
            None
        )
        .0,
        202
    );

    let (code, v) = c.get_json(p, "/config");
    assert_eq!(code, 200);
    assert_eq!(v["ttl"], c.ttl);
    assert_eq!(c.http(p, "DELETE", "/restart", &h, None).0, 404);
    assert_eq!(
        c.http(p, "POST", "/restart", &h, Some(r#"{"role": "replica"}"#))
            .0,
        503
    );
    assert_eq!(
        c.http(p, "POST", "/restart", &h, Some(r#"{"role": "king"}"#))
            .0,
        400
    );
    assert_eq!(
        c.http(p, "POST", "/restart", &h, Some(r#"{"bogus": 1}"#)).0,
        400
    );
    assert_eq!(c.http(p, "POST", "/restart", &h, Some("[1]")).0, 400);

    // A restart of the primary keeps it primary (it holds the lease throughout).
    let before = c.members[p].postmaster_pid().unwrap();
    let (code, msg) = c.http(p, "POST", "/restart", &h, Some(r#"{"role": "primary"}"#));
    assert_eq!((code, msg.as_str()), (200, "restarted successfully"));
    assert_ne!(
        c.members[p].postmaster_pid(),
        Some(before),
        "postgres was not restarted"
    );
    assert_eq!(c.wait_primary(SLOW).await, p);

    // Reinitialize: refused on the leader, done on a replica, which streams again.
    let (code, msg) = c.http(p, "POST", "/reinitialize", &h, None);
    assert_eq!(
        (code, msg.as_str()),
        (503, "I am the leader, can not reinitialize")
    );
    let (code, msg) = c.http(r, "POST", "/reinitialize", &h, Some(r#"{"force": true}"#));
    assert_eq!((code, msg.as_str()), (200, "reinitialize started"));
    let log_path = c.dir.join(format!("{}.log", c.members[r].name));
    c.wait_until(SLOW, "a fresh basebackup", |_| {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .matches("created replica with pg_basebackup")
            .count()
            >= 2
    })
    .await;
    c.wait_until(SLOW, "the reinitialised replica streaming", |c| {
        c.http(r, "GET", "/replica?replication_state=streaming", &[], None)
            .0
            == 200
    })
    .await;
    let log = std::fs::read_to_string(c.dir.join(format!("{}.log", c.members[r].name))).unwrap();
    assert!(
        log.matches("created replica with pg_basebackup").count() >= 2,
        "no fresh basebackup"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "integration: run by `make integration` against e2e/cluster up --control-plane"]
async fn scheduled_switchover_and_restart_run_at_their_time() {
    let (c, p) = agents::three("sched", SLOW).await;
    let old = c.members[p].name.clone();
    let auth = format!("Bearer {TOKEN}");
    let h = [("Authorization", auth.as_str())];
    let replica = (0..3).find(|i| *i != p).unwrap();
    let cand = c.members[replica].name.clone();
    let at = |secs: i64| {
        jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(secs))
            .unwrap()
            .to_string()
    };

    // Patroni's refusals.
    let (code, msg) = c.http(
        p,
        "POST",
        "/failover",
        &h,
        Some(&format!(
            r#"{{"candidate": "{cand}", "scheduled_at": "{}"}}"#,
            at(60)
        )),
    );
    assert_eq!((code, msg.as_str()), (400, "Failover can't be scheduled"));
    let (code, msg) = c.http(
        p,
        "POST",
        "/switchover",
        &h,
        Some(&format!(
            r#"{{"leader": "{old}", "scheduled_at": "2030-01-01T10:00:00"}}"#
        )),
    );
    assert_eq!(
        (code, msg.as_str()),
        (
            400,
            "Timezone information is mandatory for the scheduled switchover"
        )
    );
    let (code, msg) = c.http(
        p,
        "POST",
        "/switchover",
        &h,
        Some(&format!(
            r#"{{"leader": "{old}", "scheduled_at": "{}"}}"#,
            at(-60)
        )),
    );
    assert_eq!(
        (code, msg.as_str()),
        (422, "Cannot schedule switchover in the past")
    );
    let (code, _) = c.http(
        p,
        "POST",
        "/switchover",
        &h,
        Some(&format!(
            r#"{{"leader": "{old}", "scheduled_at": "next tuesday"}}"#
        )),
    );
    assert_eq!(code, 422);

    // Scheduled 12 s ahead: accepted at once, shown by /cluster, nothing moves before its time.
    let when = at(12);
    let body = format!(r#"{{"leader": "{old}", "candidate": "{cand}", "scheduled_at": "{when}"}}"#);
    let (code, msg) = c.http(p, "POST", "/switchover", &h, Some(&body));
    assert_eq!((code, msg.as_str()), (202, "Switchover scheduled"));
    let accepted = std::time::Instant::now();
    c.wait_until(SLOW, "/cluster to show the scheduled switchover", |c| {
        let (_, v) = c.get_json(p, "/cluster");
        v["scheduled_switchover"]["to"] == cand.as_str()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        c.holder().await.as_deref(),
        Some(old.as_str()),
        "not before its time"
    );
    c.wait_until(SLOW, "the candidate to be primary", |c| {
        c.answering("/primary") == vec![replica]
    })
    .await;
    assert!(
        accepted.elapsed() >= Duration::from_secs(10),
        "the switchover ran at its time, not before"
    );
    // /cluster shows the snapshot of the member's last loop: the loop that promoted it read the
    // request before its promotion consumed it, and /primary answers 200 from the end of that
    // loop (the Lease it took counts), so the request shows until the next loop.
    c.wait_until(SLOW, "the request to be consumed", |c| {
        let (_, v) = c.get_json(replica, "/cluster");
        v.get("scheduled_switchover").is_none()
    })
    .await;

    // A scheduled restart: one at a time, deletable, run at its time.
    let new = replica;
    let before = c.members[new].postmaster_pid().unwrap();
    let body = format!(r#"{{"schedule": "{}"}}"#, at(6));
    let (code, msg) = c.http(new, "POST", "/restart", &h, Some(&body));
    assert_eq!((code, msg.as_str()), (202, "Restart scheduled"));
    let (code, msg) = c.http(new, "POST", "/restart", &h, Some(&body));
    assert_eq!(
        (code, msg.as_str()),
        (409, "Another restart is already scheduled")
    );
    assert_eq!(c.http(new, "DELETE", "/restart", &h, None).0, 200);
    assert_eq!(c.http(new, "DELETE", "/restart", &h, None).0, 404);
    let (code, _) = c.http(new, "POST", "/restart", &h, Some(&body));
    assert_eq!(code, 202);
    assert_eq!(
        c.members[new].postmaster_pid(),
        Some(before),
        "not restarted before its time"
    );
    c.wait_until(SLOW, "the scheduled restart", |c| {
        c.members[new]
            .postmaster_pid()
            .is_some_and(|pid| pid != before)
    })
    .await;
    assert_eq!(
        c.wait_primary(SLOW).await,
        new,
        "a restarted primary keeps the lease"
    );
}
