//! Synchronous replication in Patroni's order, as a pure plan: a standby goes into
//! `synchronous_standby_names` first and into the published `sync` key only once PostgreSQL
//! reports it synchronous; it leaves the key first and the setting after. So every member in the
//! key has every acknowledged commit, and only members in the key may be promoted.

use super::ReplicationRow;
use super::conf::quote_identifier;
use crate::api::cluster::SynchronousMode;

/// A standby connected for less than this is chosen only when no other streams.
const SETTLED_MS: i64 = 5_000;

/// What the primary does this cycle, in this order: unpublish, set, publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPlan {
    /// Empty the `sync` key before anything else (its standby is leaving the synchronous set).
    pub unpublish: bool,
    /// The value for `synchronous_standby_names` (`None`: asynchronous).
    pub synchronous_standby_names: Option<String>,
    /// Publish this member as the synchronous standby (it is confirmed `sync` now).
    pub publish: Option<String>,
}

/// `published`: the `sync` key's standbys when this member is its leader; `rows`: this
/// primary's `pg_stat_replication`; `nosync`: members tagged never to be synchronous;
/// `in_force`: `synchronous_standby_names` as PostgreSQL runs with it; `switched_at`: this
/// primary's flush position when that last changed (`None`: not known yet). PostgreSQL calls a
/// listed standby `sync` at once, however far behind it is; commits acknowledged before the
/// switch are on it only once it has flushed that far, so only then is it published (Patroni's
/// `_primary_flush_lsn`). And only while the setting names it alone: under `*` PostgreSQL calls
/// `sync` whichever streaming standby holds the lowest walsender slot, and a standby that
/// connects into a lower slot takes that over from the one that acknowledged the commits so far,
/// without the setting (or `switched_at`) changing. Naming it first restarts the count.
pub fn plan(
    mode: SynchronousMode,
    published: &[String],
    rows: &[ReplicationRow],
    nosync: &[&str],
    in_force: Option<&str>,
    switched_at: Option<u64>,
) -> SyncPlan {
    if mode == SynchronousMode::Off {
        return SyncPlan {
            unpublish: !published.is_empty(),
            synchronous_standby_names: None,
            publish: None,
        };
    }
    let streaming: Vec<&ReplicationRow> = rows
        .iter()
        .filter(|r| r.state == "streaming" && !nosync.contains(&r.application_name.as_str()))
        .collect();
    let still_streaming = |name: &str| streaming.iter().any(|r| r.application_name == name);
    // Keep the current synchronous standby while it streams; otherwise the best candidate:
    // one PostgreSQL already calls sync, then one connected for a while (a standby that has
    // just connected, such as a former primary rejoining after a switchover, may still cross a
    // timeline switch or be stopped next, as in a drain), then the furthest ahead (Patroni
    // sorts by LSN), then the longest connected.
    let desired = published
        .first()
        .filter(|p| still_streaming(p))
        .cloned()
        .or_else(|| {
            let mut c: Vec<&&ReplicationRow> = streaming.iter().collect();
            c.sort_by_key(|r| {
                let connected = r.connected_ms.unwrap_or(0);
                (
                    r.sync_state != "sync",
                    connected < SETTLED_MS,
                    std::cmp::Reverse(r.flush_lsn),
                    std::cmp::Reverse(connected),
                    r.application_name.clone(),
                )
            });
            c.first().map(|r| r.application_name.clone())
        });
    // Out of the key first: from then on it may not be promoted.
    let unpublish = published.first() != desired.as_ref() && !published.is_empty();
    match desired {
        Some(name) => {
            let quoted = quote_identifier(&name);
            let confirmed = in_force == Some(quoted.as_str())
                && rows.iter().any(|r| {
                    r.application_name == name
                        && r.sync_state == "sync"
                        && switched_at.is_some_and(|at| r.flush_lsn.is_some_and(|f| f >= at))
                });
            SyncPlan {
                unpublish,
                synchronous_standby_names: Some(quoted),
                publish: (confirmed && published.first() != Some(&name)).then_some(name),
            }
        }
        // Strict: never fall back to asynchronous commits; block them until a standby returns.
        None if mode == SynchronousMode::Strict => SyncPlan {
            unpublish,
            synchronous_standby_names: Some("*".into()),
            publish: None,
        },
        None => SyncPlan {
            unpublish,
            synchronous_standby_names: None,
            publish: None,
        },
    }
}

/// The rows of `pg_stat_replication` that are the cluster's members (`members`: its pod
/// names; a replica's application_name is its member name). Anything else that streams WAL (a
/// replica's `pg_basebackup` while it clones, `pg_receivewal`, a tool) is never a synchronous
/// standby: commits would wait on something that cannot be promoted, and the `sync` key would
/// name no member.
pub fn members_only(rows: Vec<ReplicationRow>, members: &[String]) -> Vec<ReplicationRow> {
    rows.into_iter()
        .filter(|r| members.contains(&r.application_name))
        .collect()
}

/// What a primary starts with (after a crash, a restarted agent): the standbys the `sync` key
/// names may be promoted, so from the first commit on they must have every one acknowledged;
/// with none named, strict mode blocks commits (`*`) until a standby is confirmed. The next
/// synchronous step goes on from there with [`plan`].
pub fn at_start(mode: SynchronousMode, published: &[String]) -> Option<String> {
    match (mode, published.first()) {
        (SynchronousMode::Off, _) => None,
        (_, Some(name)) => Some(quote_identifier(name)),
        (SynchronousMode::Strict, None) => Some("*".into()),
        (_, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_starting_primary_waits_for_the_published_standby() {
        let b = vec!["b".to_string()];
        assert_eq!(at_start(SynchronousMode::Off, &b), None);
        assert_eq!(at_start(SynchronousMode::On, &b), Some("\"b\"".into()));
        assert_eq!(at_start(SynchronousMode::Strict, &b), Some("\"b\"".into()));
        assert_eq!(at_start(SynchronousMode::Strict, &[]), Some("*".into()));
        assert_eq!(at_start(SynchronousMode::On, &[]), None);
    }

    fn row(name: &str, state: &str, sync_state: &str) -> ReplicationRow {
        ReplicationRow {
            application_name: name.into(),
            state: state.into(),
            sync_state: sync_state.into(),
            flush_lsn: Some(100),
            ..Default::default()
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_new_standby_goes_into_the_setting_before_the_key() {
        let p = plan(
            SynchronousMode::On,
            &[],
            &[row("b", "streaming", "async")],
            &[],
            None,
            Some(100),
        );
        assert_eq!(
            p,
            SyncPlan {
                unpublish: false,
                synchronous_standby_names: Some("\"b\"".into()),
                publish: None,
            }
        );
        let p = plan(
            SynchronousMode::On,
            &[],
            &[row("b", "streaming", "sync")],
            &[],
            Some("\"b\""),
            Some(100),
        );
        assert_eq!(p.publish.as_deref(), Some("b"));
    }

    /// Found by the simulation (a strict-mode primary promoted with `*`): the standby that had
    /// acknowledged every commit streamed alone, then another connected into a lower walsender
    /// slot and PostgreSQL called that one `sync`. It had flushed past the position where `*`
    /// took effect, but not the commits the first one acknowledged since; published at once, it
    /// was promoted without them.
    #[test]
    fn a_standby_postgres_calls_sync_under_a_wildcard_is_named_before_it_is_published() {
        let ahead = ReplicationRow {
            flush_lsn: Some(150),
            ..row("c", "streaming", "potential")
        };
        let rows = [row("b", "streaming", "sync"), ahead];
        let p = plan(
            SynchronousMode::Strict,
            &[],
            &rows,
            &[],
            Some("*"),
            Some(50),
        );
        assert_eq!(p.synchronous_standby_names.as_deref(), Some("\"b\""));
        assert_eq!(
            p.publish, None,
            "named first; published once past the new switch"
        );
        let p = plan(
            SynchronousMode::Strict,
            &[],
            &rows,
            &[],
            Some("\"b\""),
            Some(150),
        );
        assert_eq!(p.publish, None, "100 < 150: not yet");
        let caught_up = [
            ReplicationRow {
                flush_lsn: Some(150),
                ..row("b", "streaming", "sync")
            },
            row("c", "streaming", "async"),
        ];
        let p = plan(
            SynchronousMode::Strict,
            &[],
            &caught_up,
            &[],
            Some("\"b\""),
            Some(150),
        );
        assert_eq!(p.publish.as_deref(), Some("b"));
    }

    #[test]
    fn a_sync_standby_is_published_only_once_it_flushed_past_the_switch() {
        let behind = ReplicationRow {
            flush_lsn: Some(99),
            ..row("c", "streaming", "sync")
        };
        // PostgreSQL already calls it sync; commits acknowledged before the switch (up to 100)
        // are not all on it yet.
        let p = plan(
            SynchronousMode::On,
            &[],
            std::slice::from_ref(&behind),
            &[],
            Some("\"c\""),
            Some(100),
        );
        assert_eq!(p.synchronous_standby_names.as_deref(), Some("\"c\""));
        assert_eq!(p.publish, None);
        let p = plan(
            SynchronousMode::On,
            &[],
            &[behind],
            &[],
            Some("\"c\""),
            None,
        );
        assert_eq!(p.publish, None, "no switch position known: not published");
        let p = plan(
            SynchronousMode::On,
            &[],
            &[row("c", "streaming", "sync")],
            &[],
            Some("\"c\""),
            Some(100),
        );
        assert_eq!(p.publish.as_deref(), Some("c"));
    }

    #[test]
    fn the_current_standby_is_kept_while_it_streams() {
        let rows = [
            row("a", "streaming", "sync"),
            row("c", "streaming", "potential"),
        ];
        let p = plan(
            SynchronousMode::On,
            &names(&["c"]),
            &rows,
            &[],
            None,
            Some(100),
        );
        assert!(!p.unpublish);
        assert_eq!(p.synchronous_standby_names.as_deref(), Some("\"c\""));
        assert_eq!(p.publish, None, "already published, not confirmed sync yet");
    }

    #[test]
    fn a_standby_that_stops_streaming_leaves_the_key_first() {
        let rows = [row("b", "catchup", "async"), row("c", "streaming", "async")];
        let p = plan(
            SynchronousMode::On,
            &names(&["b"]),
            &rows,
            &[],
            None,
            Some(100),
        );
        assert!(p.unpublish);
        assert_eq!(p.synchronous_standby_names.as_deref(), Some("\"c\""));
    }

    /// Seen in a drain: the old primary, rejoining as a replica after the switchover, was
    /// chosen over a replica that had streamed all along (by name, or by a few bytes of LSN) and
    /// was stopped a second later with commits waiting on it.
    #[test]
    fn a_settled_standby_then_the_furthest_ahead_is_chosen() {
        let at = |name: &str, lsn: u64, connected_ms: i64| ReplicationRow {
            flush_lsn: Some(lsn),
            connected_ms: Some(connected_ms),
            ..row(name, "streaming", "async")
        };
        let chosen = |rows: &[ReplicationRow]| {
            plan(SynchronousMode::On, &[], rows, &[], None, Some(100)).synchronous_standby_names
        };
        let quoted = |s: &str| Some(format!("\"{s}\""));
        // Just connected, even a little ahead: the settled one.
        assert_eq!(
            chosen(&[at("a", 101, 900), at("c", 100, 60_000)]),
            quoted("c")
        );
        // Both settled (or both new): the furthest ahead, then the longest connected.
        assert_eq!(
            chosen(&[at("a", 101, 6_000), at("c", 100, 60_000)]),
            quoted("a")
        );
        assert_eq!(
            chosen(&[at("a", 100, 6_000), at("c", 100, 60_000)]),
            quoted("c")
        );
        assert_eq!(chosen(&[at("a", 100, 900), at("c", 100, 800)]), quoted("a"));
        // Only a new one: it.
        assert_eq!(chosen(&[at("a", 100, 900)]), quoted("a"));
    }

    #[test]
    fn nosync_members_are_never_chosen() {
        let rows = [row("b", "streaming", "sync")];
        let p = plan(SynchronousMode::On, &[], &rows, &["b"], None, Some(100));
        assert_eq!(p.synchronous_standby_names, None);
    }

    #[test]
    fn strict_blocks_commits_without_a_standby_and_off_clears_everything() {
        let p = plan(
            SynchronousMode::Strict,
            &names(&["b"]),
            &[],
            &[],
            None,
            Some(100),
        );
        assert!(p.unpublish);
        assert_eq!(p.synchronous_standby_names.as_deref(), Some("*"));
        let p = plan(
            SynchronousMode::Off,
            &names(&["b"]),
            &[row("b", "streaming", "sync")],
            &[],
            None,
            Some(100),
        );
        assert_eq!(
            p,
            SyncPlan {
                unpublish: true,
                synchronous_standby_names: None,
                publish: None,
            }
        );
    }

    /// Seen on three nodes: while a replica cloned, its `pg_basebackup` (streaming WAL, the
    /// furthest ahead) was chosen as the synchronous standby for two seconds.
    #[test]
    fn only_members_are_synchronous_candidates() {
        let mut clone = row("pg_basebackup", "streaming", "async");
        clone.flush_lsn = Some(200);
        clone.connected_ms = Some(60_000);
        let member = row("pg-0", "streaming", "async");
        let members = ["pg-0".to_string(), "pg-1".to_string()];
        let rows = members_only(vec![clone, member], &members);
        assert_eq!(rows.len(), 1);
        let p = plan(SynchronousMode::On, &[], &rows, &[], None, Some(100));
        assert_eq!(p.synchronous_standby_names.as_deref(), Some("\"pg-0\""));
    }
}
