//! Synchronous replication in Patroni's order, as a pure plan: a standby goes into
//! `synchronous_standby_names` first and into the published `sync` key only once PostgreSQL
//! reports it synchronous; it leaves the key first and the setting after. So every member in the
//! key has every acknowledged commit, and only members in the key may be promoted.

use super::ReplicationRow;
use super::conf::quote_identifier;
use crate::api::cluster::SynchronousMode;

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
/// primary's `pg_stat_replication`; `nosync`: members tagged never to be synchronous.
pub fn plan(
    mode: SynchronousMode,
    published: &[String],
    rows: &[ReplicationRow],
    nosync: &[&str],
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
    // Keep the current synchronous standby while it streams; otherwise the best candidate.
    let desired = published
        .first()
        .filter(|p| still_streaming(p))
        .cloned()
        .or_else(|| {
            let mut c: Vec<&&ReplicationRow> = streaming.iter().collect();
            c.sort_by_key(|r| (r.sync_state != "sync", r.application_name.clone()));
            c.first().map(|r| r.application_name.clone())
        });
    // Out of the key first: from then on it may not be promoted.
    let unpublish = published.first() != desired.as_ref() && !published.is_empty();
    match desired {
        Some(name) => {
            let confirmed = rows
                .iter()
                .any(|r| r.application_name == name && r.sync_state == "sync");
            SyncPlan {
                unpublish,
                synchronous_standby_names: Some(quote_identifier(&name)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, state: &str, sync_state: &str) -> ReplicationRow {
        ReplicationRow {
            application_name: name.into(),
            state: state.into(),
            sync_state: sync_state.into(),
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
        );
        assert_eq!(p.publish.as_deref(), Some("b"));
    }

    #[test]
    fn the_current_standby_is_kept_while_it_streams() {
        let rows = [
            row("a", "streaming", "sync"),
            row("c", "streaming", "potential"),
        ];
        let p = plan(SynchronousMode::On, &names(&["c"]), &rows, &[]);
        assert!(!p.unpublish);
        assert_eq!(p.synchronous_standby_names.as_deref(), Some("\"c\""));
        assert_eq!(p.publish, None, "already published, not confirmed sync yet");
    }

    #[test]
    fn a_standby_that_stops_streaming_leaves_the_key_first() {
        let rows = [row("b", "catchup", "async"), row("c", "streaming", "async")];
        let p = plan(SynchronousMode::On, &names(&["b"]), &rows, &[]);
        assert!(p.unpublish);
        assert_eq!(p.synchronous_standby_names.as_deref(), Some("\"c\""));
    }

    #[test]
    fn nosync_members_are_never_chosen() {
        let rows = [row("b", "streaming", "sync")];
        let p = plan(SynchronousMode::On, &[], &rows, &["b"]);
        assert_eq!(p.synchronous_standby_names, None);
    }

    #[test]
    fn strict_blocks_commits_without_a_standby_and_off_clears_everything() {
        let p = plan(SynchronousMode::Strict, &names(&["b"]), &[], &[]);
        assert!(p.unpublish);
        assert_eq!(p.synchronous_standby_names.as_deref(), Some("*"));
        let p = plan(
            SynchronousMode::Off,
            &names(&["b"]),
            &[row("b", "streaming", "sync")],
            &[],
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
}
