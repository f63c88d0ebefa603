//! Table tests of `checks`: each of Patroni's refusals alone, with its status and message.
//! (`tests/ha.rs` sends several of the same bodies to a live cluster.)

use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::checks::*;
use super::fixtures;
use crate::api::member::{MemberRole, MemberState, MemberStatus, MemberTags};

const BAD: StatusCode = StatusCode::BAD_REQUEST;
const UNPROCESSABLE: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;
const PRECONDITION: StatusCode = StatusCode::PRECONDITION_FAILED;
const UNAVAILABLE: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

fn now() -> jiff::Timestamp {
    "2030-01-01T10:00:00Z".parse().unwrap()
}

/// The refusal a case expects, `None` for none.
type Want = Option<(StatusCode, String)>;

fn refused(code: StatusCode, message: &str) -> Want {
    Some((code, message.to_string()))
}

fn refusal<T>(r: Result<T, Refusal>) -> Want {
    r.err().map(|e| (e.code, e.message))
}

/// `tests/ha.rs` sends these bodies to a live cluster too; here each refusal is checked
/// alone, with the exact message where Patroni's is fixed.
#[test]
fn switchover_and_failover_bodies() {
    let cases: &[(&str, bool, bool, &str, Want)] = &[
        // (what, /failover?, paused, body, refusal)
        (
            "empty body",
            false,
            false,
            "",
            refused(BAD, "a JSON body is required"),
        ),
        (
            "failover without a candidate",
            true,
            false,
            "{}",
            refused(
                BAD,
                "Failover could be performed only to a specific candidate",
            ),
        ),
        (
            "switchover without a leader",
            false,
            false,
            r#"{"candidate": "b"}"#,
            refused(
                BAD,
                "Switchover could be performed only from a specific leader",
            ),
        ),
        (
            "empty leader is no leader",
            false,
            false,
            r#"{"leader": "", "candidate": "b"}"#,
            refused(
                BAD,
                "Switchover could be performed only from a specific leader",
            ),
        ),
        (
            "same source and target",
            false,
            false,
            r#"{"leader": "a", "candidate": "a"}"#,
            refused(BAD, "Switchover target and source are the same"),
        ),
        (
            "scheduled failover",
            true,
            false,
            r#"{"candidate": "b", "scheduled_at": "2030-01-01T10:01:00Z"}"#,
            refused(BAD, "Failover can't be scheduled"),
        ),
        (
            "scheduled while paused",
            false,
            true,
            r#"{"leader": "a", "scheduled_at": "2030-01-01T10:01:00Z"}"#,
            refused(BAD, "Can't schedule switchover in the paused state"),
        ),
        (
            "schedule without a timezone",
            false,
            false,
            r#"{"leader": "a", "scheduled_at": "2030-01-01T10:00:00"}"#,
            refused(
                BAD,
                "Timezone information is mandatory for the scheduled switchover",
            ),
        ),
        (
            "schedule in the past",
            false,
            false,
            r#"{"leader": "a", "scheduled_at": "2030-01-01T09:59:00Z"}"#,
            refused(UNPROCESSABLE, "Cannot schedule switchover in the past"),
        ),
        (
            "a switchover",
            false,
            false,
            r#"{"leader": "a", "candidate": "b"}"#,
            None,
        ),
        ("a failover", true, false, r#"{"candidate": "b"}"#, None),
        (
            "a failover by member",
            true,
            false,
            r#"{"member": "b"}"#,
            None,
        ),
        (
            "a failover naming the leader",
            true,
            false,
            r#"{"leader": "a"}"#,
            None,
        ),
        (
            "a scheduled switchover",
            false,
            false,
            r#"{"leader": "a", "scheduled_at": "2030-01-01T10:01:00Z"}"#,
            None,
        ),
        (
            "empty schedule is no schedule",
            true,
            true,
            r#"{"candidate": "b", "scheduled_at": ""}"#,
            None,
        ),
    ];
    for (what, failover, paused, body, want) in cases {
        let got = manual_failover_request(body.as_bytes(), *failover, *paused, now());
        assert_eq!(refusal(got), *want, "{what}");
    }
}

/// Bodies that are not what Patroni takes: 400 with a message, whatever the message says.
#[test]
fn malformed_switchover_bodies_are_400() {
    for body in [
        "",
        "[",
        "{not json",
        r#"{"leader": 5}"#,
        r#"{"leader": ["x"]}"#,
        r#"{"unknown_field": 1}"#,
        "\u{0}",
    ] {
        let Err(r) = manual_failover_request(body.as_bytes(), false, false, now()) else {
            panic!("{body:?} was accepted");
        };
        assert_eq!(r.code, BAD, "{body:?}");
        assert!(!r.message.is_empty(), "{body:?}");
    }
    let r = manual_failover_request(
        b"{\"leader\": \"a\", \"scheduled_at\": \"next tuesday\"}",
        false,
        false,
        now(),
    );
    assert_eq!(r.map_err(|e| e.code), Err(UNPROCESSABLE));
}

/// What a request becomes: who, to whom, when, and which word the messages use.
#[test]
fn accepted_requests_carry_their_names() {
    let cases = [
        (
            "{\"leader\": \"a\", \"candidate\": \"b\"}",
            true,
            false,
            Some("a"),
            Some("b"),
            "switchover",
        ),
        (
            "{\"member\": \"b\"}",
            true,
            true,
            None,
            Some("b"),
            "failover",
        ),
        (
            "{\"candidate\": \"\", \"member\": \"b\", \"leader\": \"a\"}",
            false,
            false,
            Some("a"),
            None,
            "switchover",
        ),
    ];
    for (body, on_failover, failover, leader, candidate, action) in cases {
        let req = manual_failover_request(body.as_bytes(), on_failover, false, now()).expect(body);
        assert_eq!(req.failover, failover, "{body}");
        assert_eq!(req.leader.as_deref(), leader, "{body}");
        assert_eq!(req.candidate.as_deref(), candidate, "{body}");
        assert_eq!(req.action(), action, "{body}");
    }
    let req = manual_failover_request(
        br#"{"leader": "a", "scheduled_at": "2030-01-01T12:00:00+01:00"}"#,
        false,
        false,
        now(),
    )
    .unwrap();
    let eleven_utc: jiff::Timestamp = "2030-01-01T11:00:00Z".parse().unwrap();
    assert_eq!(req.scheduled_at, Some(eleven_utc));
    // Exactly `now` is not in the future.
    let at_now = manual_failover_request(
        br#"{"leader": "a", "scheduled_at": "2030-01-01T11:00:00+01:00"}"#,
        false,
        false,
        now(),
    );
    assert_eq!(
        refusal(at_now),
        refused(UNPROCESSABLE, "Cannot schedule switchover in the past")
    );
}

fn member(state: MemberState, nofailover: bool) -> MemberStatus {
    MemberStatus {
        conn_url: String::new(),
        api_url: String::new(),
        state,
        role: MemberRole::Replica,
        xlog_location: None,
        replication_state: None,
        timeline: None,
        tags: MemberTags {
            nofailover,
            ..Default::default()
        },
        pending_restart: false,
        version: String::new(),
        config: None,
        archiver: None,
        bootstrap_error: None,
        stanza_error: None,
        repository: None,
    }
}

#[test]
fn requests_against_the_members_and_the_lease() {
    use MemberState::{Running, Stopped};
    let members = |list: &[(&str, MemberState, bool)]| -> Vec<(String, MemberStatus)> {
        list.iter()
            .map(|(n, s, nf)| (n.to_string(), member(*s, *nf)))
            .collect()
    };
    let three = members(&[
        ("a", Running, false),
        ("b", Running, false),
        ("c", Stopped, false),
    ]);
    let req = |leader: Option<&str>, candidate: Option<&str>, failover: bool| ManualFailover {
        failover,
        leader: leader.map(str::to_string),
        candidate: candidate.map(str::to_string),
        scheduled_at: None,
    };
    type Members = Vec<(String, MemberStatus)>;
    let cases: Vec<(&str, ManualFailover, Members, Option<&str>, Want)> = vec![
        (
            "leader does not hold the lease",
            req(Some("b"), None, false),
            three.clone(),
            Some("a"),
            refused(PRECONDITION, "leader name does not match"),
        ),
        (
            "nobody holds the lease",
            req(Some("a"), Some("b"), false),
            three.clone(),
            None,
            refused(PRECONDITION, "leader name does not match"),
        ),
        (
            "unknown candidate",
            req(Some("a"), Some("nobody"), false),
            three.clone(),
            Some("a"),
            refused(PRECONDITION, "candidate does not exists"),
        ),
        (
            "stopped candidate",
            req(Some("a"), Some("c"), false),
            three.clone(),
            Some("a"),
            refused(
                PRECONDITION,
                "switchover is not possible: no good candidates have been found",
            ),
        ),
        (
            "nofailover candidate",
            req(None, Some("b"), true),
            members(&[("a", Running, false), ("b", Running, true)]),
            Some("a"),
            refused(
                PRECONDITION,
                "failover is not possible: no good candidates have been found",
            ),
        ),
        (
            "no other running member",
            req(Some("a"), None, false),
            members(&[
                ("a", Running, false),
                ("b", Running, true),
                ("c", Stopped, false),
            ]),
            Some("a"),
            refused(
                PRECONDITION,
                "switchover is not possible: cluster does not have members except leader",
            ),
        ),
        (
            "to a named candidate",
            req(Some("a"), Some("b"), false),
            three.clone(),
            Some("a"),
            None,
        ),
        (
            "to anyone",
            req(Some("a"), None, false),
            three.clone(),
            Some("a"),
            None,
        ),
        (
            "failover with no leader",
            req(None, Some("b"), true),
            three.clone(),
            None,
            None,
        ),
    ];
    for (what, r, members, holder, want) in cases {
        assert_eq!(
            refusal(check_against_members(&r, &members, holder, None)),
            want,
            "{what}"
        );
    }
    // Synchronous mode (safety hole 6): only a published standby may be switched over to.
    let sync = vec!["c".to_string()];
    let all_running = members(&[
        ("a", Running, false),
        ("b", Running, false),
        ("c", Running, false),
    ]);
    assert_eq!(
        refusal(check_against_members(
            &req(Some("a"), Some("b"), false),
            &all_running,
            Some("a"),
            Some(&sync)
        )),
        refused(
            PRECONDITION,
            "candidate name does not match with sync_standby"
        )
    );
    assert_eq!(
        refusal(check_against_members(
            &req(Some("a"), Some("c"), false),
            &all_running,
            Some("a"),
            Some(&sync)
        )),
        None
    );
    assert_eq!(
        refusal(check_against_members(
            &req(Some("a"), None, false),
            &all_running,
            Some("a"),
            Some(&[])
        )),
        refused(
            PRECONDITION,
            "switchover is not possible: can not find sync_standby"
        )
    );
}

fn object(body: &str) -> Map<String, Value> {
    object_body(body.as_bytes()).expect(body)
}

#[test]
fn bodies_of_the_other_writes_must_be_objects() {
    assert_eq!(object_body(b"  \n"), Ok(Map::new()));
    assert_eq!(object_body(br#"{"force": true}"#).map(|m| m.len()), Ok(1));
    assert_eq!(
        refusal(object_body(b"[1]")),
        refused(BAD, "the body must be a JSON object")
    );
    let r = object_body(b"{").unwrap_err();
    assert!(
        r.code == BAD && r.message.starts_with("invalid JSON body: "),
        "{r:?}"
    );
}

#[test]
fn restart_bodies() {
    let cases: &[(&str, bool, &str, Want)] = &[
        (
            "unknown filter",
            false,
            r#"{"bogus": 1}"#,
            refused(BAD, "unknown filter for the restart: bogus"),
        ),
        (
            "unknown role",
            false,
            r#"{"role": "king"}"#,
            refused(
                BAD,
                "PostgreSQL role should be either primary or replica, not king",
            ),
        ),
        (
            "schedule not a string",
            false,
            r#"{"schedule": 5}"#,
            refused(BAD, "schedule must be a string"),
        ),
        (
            "schedule in the past",
            false,
            r#"{"schedule": "2030-01-01T09:00:00Z"}"#,
            refused(UNPROCESSABLE, "Cannot schedule restart in the past"),
        ),
        (
            "schedule without a timezone",
            false,
            r#"{"schedule": "2030-01-01T11:00:00"}"#,
            refused(
                BAD,
                "Timezone information is mandatory for the scheduled restart",
            ),
        ),
        (
            "scheduled while paused",
            true,
            r#"{"schedule": "2030-01-01T11:00:00Z", "role": "king"}"#,
            refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Can't schedule restart in the paused state",
            ),
        ),
        (
            "scheduled, unknown role",
            false,
            r#"{"schedule": "2030-01-01T11:00:00Z", "role": "king"}"#,
            refused(
                BAD,
                "PostgreSQL role should be either primary or replica, not king",
            ),
        ),
        (
            "immediate while paused",
            true,
            r#"{"role": "primary"}"#,
            None,
        ),
        ("null schedule is now", true, r#"{"schedule": null}"#, None),
        (
            "all filters",
            false,
            r#"{"schedule": "2030-01-01T11:00:00Z", "role": "master", "postgres_version": "17", "timeout": 5, "restart_pending": true}"#,
            None,
        ),
    ];
    for (what, paused, body, want) in cases {
        let got = restart_request(&object(body), *paused, now());
        assert_eq!(refusal(got), *want, "{what}");
    }
    let req = restart_request(
        &object(
            r#"{"schedule": "2030-01-01T11:00:00Z", "role": "leader", "restart_pending": true}"#,
        ),
        false,
        now(),
    )
    .unwrap();
    assert_eq!(
        req,
        RestartRequest {
            schedule: Some("2030-01-01T11:00:00Z".parse().unwrap()),
            role: Some(MemberRole::Primary),
            restart_pending: true,
        }
    );
}

#[test]
fn restart_conditions_against_the_member() {
    let mut primary = fixtures::view();
    primary.role = MemberRole::Primary;
    let mut pending_replica = fixtures::replica_view();
    pending_replica.pending_restart = true;
    let cases = [
        ("{}", &primary, true),
        (r#"{"role": "primary"}"#, &primary, true),
        (r#"{"role": "replica"}"#, &primary, false),
        (r#"{"role": "replica"}"#, &pending_replica, true),
        (r#"{"restart_pending": true}"#, &primary, false),
        (r#"{"restart_pending": true}"#, &pending_replica, true),
        (
            r#"{"role": "primary", "restart_pending": true}"#,
            &pending_replica,
            false,
        ),
    ];
    for (body, view, ok) in cases {
        let req = restart_request(&object(body), false, now()).expect(body);
        let want = (!ok).then(|| {
            (
                UNAVAILABLE,
                "restart conditions are not satisfied".to_string(),
            )
        });
        assert_eq!(
            refusal(req.check_conditions(view)),
            want,
            "{body} on {:?}",
            view.role
        );
    }
}

#[test]
fn reinitialize_needs_a_leader_other_than_me() {
    let mut leader = fixtures::view();
    leader.lease_holder = Some("c-0".into());
    leader.holds_lease = true;
    let cases = [
        (
            fixtures::view(),
            refused(UNAVAILABLE, "Cluster has no leader, can not reinitialize"),
        ),
        (
            leader,
            refused(UNAVAILABLE, "I am the leader, can not reinitialize"),
        ),
        (fixtures::replica_view(), None),
    ];
    for (view, want) in cases {
        assert_eq!(
            refusal(check_reinitialize(&view)),
            want,
            "{:?}",
            view.lease_holder
        );
    }
}

#[test]
fn failsafe_pings() {
    let no_name = refused(BAD, "the body must name the leader: {\"name\": ...}");
    for (body, want) in [
        ("{}", no_name.clone()),
        (r#"{"name": ""}"#, no_name.clone()),
        (r#"{"name": 5}"#, no_name),
        (r#"{"name": "c-0"}"#, None),
    ] {
        assert_eq!(refusal(failsafe_leader(&object(body))), want, "{body}");
    }
    let mut off = fixtures::replica_view();
    off.failsafe_mode = false;
    let mut primary = fixtures::view();
    primary.failsafe_mode = true;
    primary.role = MemberRole::Primary;
    let mut replica = fixtures::replica_view();
    replica.failsafe_mode = true;
    for (what, view, want) in [
        (
            "off",
            off,
            refused(StatusCode::BAD_GATEWAY, "failsafe mode is not enabled"),
        ),
        (
            "primary",
            primary,
            refused(StatusCode::INTERNAL_SERVER_ERROR, "Running as a leader"),
        ),
        ("replica", replica, None),
    ] {
        assert_eq!(refusal(check_failsafe(&view)), want, "{what}");
    }
}
